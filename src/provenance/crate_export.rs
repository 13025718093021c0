//! `rst export-crate FILE DIR`: a Workflow Run RO-Crate (RO-Crate 1.1 with the Process,
//! Workflow and Provenance Run Crate 0.5 profiles) of the last successful run of a pipeline.
//!
//! - `ro-crate-metadata.json` (the descriptor, about `./`) and the root `Dataset`, which
//!   conforms to the profiles and has the pipeline file as `mainEntity`, typed
//!   `File, SoftwareSourceCode, ComputationalWorkflow`;
//! - a `CreateAction` for the run: `instrument` the workflow, `object` the pipeline
//!   parameters (`PropertyValue`s) and the downloaded files, `result` the published files;
//! - per stage a `HowToStep` (the workflow's `step`) whose `workExample` is the stage kind
//!   (`SoftwareApplication`), per stage instance a `CreateAction` (its input and output
//!   artifacts, times, the log) and a `ControlAction` tying it to its step, all gathered by
//!   an `OrganizeAction` whose `instrument` is rst itself;
//! - the published files (copied to `DIR/results/`) as `File`s with sha256, the pipeline
//!   file (copied to `DIR/`), the stage logs (`DIR/logs/`).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::lineage::{downloads_of, Published};
use super::{iso_time, runlog, sha256_file, unix_now};
use crate::cache::store::{Entry, Store};
use crate::error::{Error, Result, UserError};
use crate::spec::Pipeline;

pub const RO_CRATE: &str = "https://w3id.org/ro/crate/1.1";
pub const PROCESS_RUN: &str = "https://w3id.org/ro/wfrun/process/0.5";
pub const WORKFLOW_RUN: &str = "https://w3id.org/ro/wfrun/workflow/0.5";
pub const PROVENANCE_RUN: &str = "https://w3id.org/ro/wfrun/provenance/0.5";
pub const WORKFLOW_RO_CRATE: &str = "https://w3id.org/workflowhub/workflow-ro-crate/1.0";
const FORMAL_PARAMETER: &str = "https://bioschemas.org/profiles/FormalParameter/1.0-RELEASE";
const COMPUTATIONAL_WORKFLOW: &str =
    "https://bioschemas.org/profiles/ComputationalWorkflow/1.0-RELEASE";

fn id(s: impl Into<String>) -> Value {
    json!({"@id": s.into()})
}

fn ids<I: IntoIterator<Item = String>>(it: I) -> Value {
    Value::Array(it.into_iter().map(id).collect())
}

fn short(s: &str) -> &str {
    &s[..16.min(s.len())]
}

fn encoding(path: &str) -> &'static str {
    match Path::new(path).extension().and_then(|e| e.to_str()) {
        Some("md") => "text/markdown",
        Some("csv") => "text/csv",
        Some("json") => "application/json",
        Some("tex") => "application/x-tex",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        Some("yaml" | "yml") => "application/yaml",
        Some("txt" | "log") => "text/plain",
        _ => "application/octet-stream",
    }
}

fn copy_file(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io_path("cannot create", parent, e))?;
    }
    std::fs::copy(from, to).map_err(|e| Error::io_path("cannot copy to", to, e))?;
    let mut perm = std::fs::metadata(to)
        .map_err(|e| Error::io_path("stat", to, e))?
        .permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perm.set_readonly(false);
    let _ = std::fs::set_permissions(to, perm);
    Ok(())
}

fn json_value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Builds the crate's JSON-LD for `p` (every instance cached, `entries` in instance order)
/// and copies its files into `dir`.
pub fn build(
    p: &Pipeline,
    store: &Store,
    entries: &[Entry],
    run: Option<&runlog::RunRecord>,
    published: Option<&Published>,
    results_dir: &Path,
    dir: &Path,
) -> Result<Value> {
    let mut graph: Vec<Value> = Vec::new();
    let mut has_part: Vec<String> = Vec::new();

    // The workflow: the pipeline file.
    let wf_name = p
        .file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| format!("{}.yaml", p.name));
    copy_file(&p.file, &dir.join(&wf_name))?;
    has_part.push(wf_name.clone());

    // Profiles and other referenced documents.
    for (uri, name, version) in [
        (RO_CRATE, "RO-Crate", "1.1"),
        (PROCESS_RUN, "Process Run Crate", "0.5"),
        (WORKFLOW_RUN, "Workflow Run Crate", "0.5"),
        (PROVENANCE_RUN, "Provenance Run Crate", "0.5"),
        (WORKFLOW_RO_CRATE, "Workflow RO-Crate", "1.0"),
        (
            FORMAL_PARAMETER,
            "Bioschemas FormalParameter profile",
            "1.0-RELEASE",
        ),
        (
            COMPUTATIONAL_WORKFLOW,
            "Bioschemas ComputationalWorkflow profile",
            "1.0-RELEASE",
        ),
    ] {
        graph.push(json!({"@id": uri, "@type": "CreativeWork", "name": name, "version": version}));
    }
    graph.push(json!({
        "@id": "#rst-pipeline",
        "@type": "ComputerLanguage",
        "name": "rst pipeline (YAML)",
        "alternateName": "rst",
        "version": env!("CARGO_PKG_VERSION"),
    }));
    let mut rst = json!({
        "@id": "#rst",
        "@type": "SoftwareApplication",
        "name": "rst",
        "description": env!("CARGO_PKG_DESCRIPTION"),
        "version": env!("CARGO_PKG_VERSION"),
    });
    if let Some(c) = option_env!("RST_GIT_COMMIT") {
        rst["identifier"] = json!(format!("git:{c}"));
    }
    graph.push(rst);

    // Pipeline parameters: FormalParameter + the PropertyValue the run used.
    let mut wf_inputs = Vec::new();
    let mut run_objects = Vec::new();
    for (name, value) in &p.params {
        let fp = format!("#param-{name}");
        let pv = format!("#pv-{name}");
        graph.push(json!({
            "@id": fp, "@type": "FormalParameter", "name": name,
            "additionalType": match value {
                Value::Bool(_) => "Boolean",
                Value::Number(n) if n.is_i64() || n.is_u64() => "Integer",
                Value::Number(_) => "Float",
                Value::String(_) => "Text",
                _ => "PropertyValue",
            },
            "conformsTo": id(FORMAL_PARAMETER),
            "workExample": id(&pv),
        }));
        graph.push(json!({
            "@id": pv, "@type": "PropertyValue", "name": name,
            "value": json_value_text(value), "exampleOfWork": id(&fp),
        }));
        wf_inputs.push(fp);
        run_objects.push(pv);
    }

    // Downloads: the files the pipeline starts from.
    let mut download_ids: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in entries.iter().filter(|e| e.record.kind == "download") {
        for d in downloads_of(store, e) {
            let web = d
                .mirrors
                .iter()
                .find(|m| m.starts_with("http://") || m.starts_with("https://"));
            let did = web
                .cloned()
                .unwrap_or_else(|| format!("#download-{}-{}", e.instance, d.name));
            let fp = format!("#input-{}-{}", e.instance, d.name);
            graph.push(json!({
                "@id": fp, "@type": "FormalParameter", "name": format!("{}/{}", e.instance, d.name),
                "additionalType": "File", "conformsTo": id(FORMAL_PARAMETER), "workExample": id(&did),
            }));
            let mut f = json!({
                "@id": did, "@type": "File", "name": d.name,
                "description": format!("fetched by stage {}", e.instance),
                "contentUrl": d.mirrors, "exampleOfWork": id(&fp),
            });
            if let Some(sha) = &d.sha256 {
                f["sha256"] = json!(sha);
            }
            graph.push(f);
            wf_inputs.push(fp);
            run_objects.push(did.clone());
            download_ids.entry(e.key.clone()).or_default().push(did);
        }
    }

    // Published results: copied, described, with sha256.
    let mut wf_outputs = Vec::new();
    let mut run_results = Vec::new();
    let mut published_by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Some(pb) = published {
        for (rel, pf) in &pb.files {
            let src = results_dir.join(rel);
            if !src.is_file() {
                continue;
            }
            let fid = format!("results/{rel}");
            copy_file(&src, &dir.join(&fid))?;
            let sha = sha256_file(&src).map_err(|e| Error::io_path("cannot read", &src, e))?;
            let size = std::fs::metadata(&src).map(|m| m.len()).unwrap_or(0);
            let fp = format!("#output-{rel}");
            graph.push(json!({
                "@id": fp, "@type": "FormalParameter", "name": rel,
                "additionalType": "File", "conformsTo": id(FORMAL_PARAMETER), "workExample": id(&fid),
            }));
            graph.push(json!({
                "@id": fid, "@type": "File", "name": rel,
                "description": format!("published from stage {} (artifact {}, file {})", pf.instance, short(&pf.artifact), pf.path),
                "encodingFormat": encoding(rel), "contentSize": size.to_string(), "sha256": sha,
                "exampleOfWork": id(&fp),
            }));
            has_part.push(fid.clone());
            wf_outputs.push(fp);
            run_results.push(fid.clone());
            published_by_key
                .entry(pf.key.clone())
                .or_default()
                .push(fid);
        }
    }

    // Steps, tools, per-instance actions.
    let mut tools = Vec::new();
    let mut steps = Vec::new();
    for (pos, stage) in p.stages.iter().enumerate() {
        let tool = format!("#kind-{}", stage.kind.name());
        if !tools.contains(&tool) {
            graph.push(json!({
                "@id": tool, "@type": "SoftwareApplication",
                "name": format!("rst {} stage", stage.kind.name()),
                "version": stage.kind.version().to_string(),
            }));
            tools.push(tool.clone());
        }
        let step = format!("#step-{}", stage.name);
        graph.push(json!({
            "@id": step, "@type": "HowToStep", "name": stage.name,
            "position": pos.to_string(), "workExample": id(&tool),
        }));
        steps.push(step);
    }
    let artifact_entity = |graph: &mut Vec<Value>, digest: &str, instance: &str| {
        let aid = format!("#artifact-{digest}");
        if !graph.iter().any(|g| g["@id"] == aid) {
            graph.push(json!({
                "@id": aid, "@type": "Dataset",
                "name": format!("artifact of {instance}"),
                "identifier": format!("blake3:{digest}"),
                "description": "a content-addressed artifact in the rst cache",
            }));
        }
        aid
    };
    let mut controls = Vec::new();
    for (inst, e) in p.instances.iter().zip(entries) {
        let action = format!("#action-{}", short(&e.key));
        let mut objects: Vec<String> = Vec::new();
        for recs in e.record.inputs.values() {
            for r in recs {
                objects.push(artifact_entity(&mut graph, &r.digest, &r.instance));
            }
        }
        let mut results = vec![artifact_entity(&mut graph, &e.artifact, &inst.name)];
        results.extend(download_ids.get(&e.key).cloned().unwrap_or_default());
        results.extend(published_by_key.get(&e.key).cloned().unwrap_or_default());
        let mut a = json!({
            "@id": action, "@type": "CreateAction",
            "name": format!("Run of stage instance {}", inst.name),
            "instrument": id(format!("#kind-{}", e.record.kind)),
            "object": ids(objects),
            "result": ids(results),
            "actionStatus": id("http://schema.org/CompletedActionStatus"),
            "identifier": format!("rst-key:{}", e.key),
        });
        if e.run.started_unix > 0.0 {
            a["startTime"] = json!(iso_time(e.run.started_unix));
            a["endTime"] = json!(iso_time(e.run.ended_unix));
        }
        let log = store.root().join(&e.run.log);
        if !e.run.log.is_empty() && log.is_file() {
            let lid = format!("logs/{}.log", short(&e.key));
            copy_file(&log, &dir.join(&lid))?;
            graph.push(json!({
                "@id": lid, "@type": "File", "name": format!("log of {}", inst.name),
                "encodingFormat": "text/plain", "about": id(&action),
            }));
            has_part.push(lid);
        }
        graph.push(a);
        let control = format!("#control-{}", short(&e.key));
        graph.push(json!({
            "@id": control, "@type": "ControlAction",
            "name": format!("orchestrate {}", inst.name),
            "instrument": id(format!("#step-{}", p.stages[inst.stage].name)),
            "object": id(&action),
        }));
        controls.push(control);
    }

    // The workflow run.
    let (start, end, run_id, argv) = match run {
        Some(r) => (r.started_unix, r.ended_unix, r.id.clone(), r.argv.join(" ")),
        None => (
            entries
                .iter()
                .map(|e| e.run.started_unix)
                .filter(|t| *t > 0.0)
                .fold(f64::INFINITY, f64::min),
            entries.iter().map(|e| e.run.ended_unix).fold(0.0, f64::max),
            "cached".to_string(),
            String::new(),
        ),
    };
    let run_action = format!("#run-{run_id}");
    let mut ra = json!({
        "@id": run_action, "@type": "CreateAction",
        "name": format!("rst run of {} ({})", p.name, run_id),
        "instrument": id(&wf_name),
        "object": ids(run_objects),
        "result": ids(run_results),
        "actionStatus": id("http://schema.org/CompletedActionStatus"),
    });
    if start.is_finite() && start > 0.0 {
        ra["startTime"] = json!(iso_time(start));
        ra["endTime"] = json!(iso_time(end));
    }
    if !argv.is_empty() {
        ra["description"] = json!(argv);
    }
    graph.push(ra);
    graph.push(json!({
        "@id": format!("#organize-{run_id}"), "@type": "OrganizeAction",
        "name": format!("rst orchestration of {}", p.name),
        "instrument": id("#rst"),
        "object": ids(controls),
        "result": id(&run_action),
    }));
    graph.push(json!({
        "@id": wf_name, "@type": ["File", "SoftwareSourceCode", "ComputationalWorkflow"],
        "name": p.name,
        "programmingLanguage": id("#rst-pipeline"),
        "conformsTo": id(COMPUTATIONAL_WORKFLOW),
        "input": ids(wf_inputs),
        "output": ids(wf_outputs),
        "hasPart": ids(tools),
        "step": ids(steps),
        "encodingFormat": "application/yaml",
    }));
    graph.push(json!({
        "@id": "ro-crate-metadata.json", "@type": "CreativeWork",
        "about": id("./"),
        "conformsTo": [id(RO_CRATE), id(WORKFLOW_RO_CRATE)],
    }));
    graph.push(json!({
        "@id": "./", "@type": "Dataset",
        "name": format!("{}: workflow run of {}", p.name, wf_name),
        "description": format!("Workflow Run RO-Crate of the rst pipeline {} ({}), exported by rst {}", p.name, wf_name, env!("CARGO_PKG_VERSION")),
        "datePublished": iso_time(unix_now()),
        "conformsTo": [id(PROCESS_RUN), id(WORKFLOW_RUN), id(PROVENANCE_RUN), id(WORKFLOW_RO_CRATE)],
        "mainEntity": id(&wf_name),
        "hasPart": ids(has_part),
        "mentions": id(&run_action),
    }));
    Ok(json!({
        "@context": ["https://w3id.org/ro/crate/1.1/context", "https://w3id.org/ro/terms/workflow-run/context"],
        "@graph": graph,
    }))
}

/// `rst export-crate FILE DIR`.
pub fn command(args: &crate::cli::PipelineArgs, dir: &Path) -> Result<()> {
    let p = crate::project::load(&args.file, &args.set)?;
    let store = crate::project::open_store(&crate::project::cache_dir(&args.cache_dir))?;
    let lines = crate::status::status_lines(&p, &store)?;
    let stale = crate::status::uncached(&lines);
    if !stale.is_empty() {
        return Err(UserError::new(format!(
            "{} is not fully computed (not cached: {}); a crate describes a finished run",
            args.file.display(),
            stale.join(", ")
        ))
        .help(format!("run `rst run {}` first", args.file.display()))
        .into());
    }
    let entries: Vec<Entry> = lines
        .iter()
        .map(|l| {
            l.key
                .as_deref()
                .and_then(|k| store.entry(k))
                .ok_or_else(|| Error::Internal(format!("entry of {} vanished", l.instance)))
        })
        .collect::<Result<_>>()?;
    if dir.exists()
        && std::fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
        && !dir.join("ro-crate-metadata.json").is_file()
    {
        return Err(UserError::new(format!(
            "{} exists and is not empty (and is not an RO-Crate rst wrote)",
            dir.display()
        ))
        .help("give a new or empty directory")
        .into());
    }
    // A directory the user cannot write to is their error to fix (exit 2), found before
    // anything is written.
    let unwritable = |e: std::io::Error| {
        Error::User(
            UserError::new(format!(
                "cannot write the crate into {}: {e}",
                dir.display()
            ))
            .help("give a writable directory"),
        )
    };
    std::fs::create_dir_all(dir).map_err(unwritable)?;
    let probe = dir.join(format!(".rst-write-probe.{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(unwritable)?;
    let _ = std::fs::remove_file(&probe);
    let results_dir: PathBuf = p.project_dir.join("results").join(p.stem());
    let published = Published::read(&results_dir);
    if published.is_none() {
        crate::elog!(
            "warning: no published results in {} (no {}): the crate lists no result files",
            results_dir.display(),
            super::PUBLISHED_FILE
        );
    }
    // The newest successful run whose stages are the ones cached now.
    let keys: Vec<Option<String>> = lines.iter().map(|l| l.key.clone()).collect();
    let run = runlog::all(&store).into_iter().find(|r| {
        r.pipeline == p.name
            && r.status == "ok"
            && r.stages.iter().map(|s| s.key.clone()).collect::<Vec<_>>() == keys
    });
    let doc = build(
        &p,
        &store,
        &entries,
        run.as_ref(),
        published.as_ref(),
        &results_dir,
        dir,
    )?;
    crate::cache::store::write_atomic(
        &dir.join("ro-crate-metadata.json"),
        (serde_json::to_string_pretty(&doc).expect("serialises") + "\n").as_bytes(),
    )
    .map_err(|e| Error::Internal(e.to_string()))?;
    println!(
        "{}: Workflow Run RO-Crate of {}{} ({} entities)",
        dir.join("ro-crate-metadata.json").display(),
        p.name,
        run.map(|r| format!(", run {}", r.id)).unwrap_or_default(),
        doc["@graph"].as_array().map_or(0, Vec::len)
    );
    Ok(())
}
