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
use super::{iso_time, runlog, unix_now};
use crate::cache::store::{Entry, Store};
use crate::data::fetch::sha256_file;
use crate::error::{Error, Result, UserError};
use crate::spec::Pipeline;
use crate::status::status_lines;

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

/// What a crate describes, gathered from the cache: the pipeline, its entries (every
/// instance cached, in instance order), the run that computed them (when recorded) and
/// the published results.
pub struct Sources<'a> {
    pub pipeline: &'a Pipeline,
    pub store: &'a Store,
    pub entries: Vec<Entry>,
    pub run: Option<runlog::RunRecord>,
    pub published: Option<Published>,
    /// `results/<pipeline>/`, where the published files are.
    pub results_dir: PathBuf,
}

/// What [`export`] wrote.
pub struct Exported {
    pub metadata: PathBuf,
    pub run_id: Option<String>,
    pub entities: usize,
}

/// Each file `p` includes and its path relative to `p`'s folder (where the crate puts it);
/// one outside that folder is the user's to move (the copied pipeline could not find it).
fn included_paths(p: &Pipeline) -> Result<Vec<(PathBuf, PathBuf)>> {
    let dir = p.file.parent().unwrap_or(Path::new(""));
    p.includes
        .iter()
        .map(|inc| {
            let rel = inc
                .strip_prefix(dir)
                .ok()
                .filter(|r| {
                    r.components()
                        .all(|c| matches!(c, std::path::Component::Normal(_)))
                })
                .ok_or_else(|| {
                    Error::User(
                        UserError::new(format!(
                            "{} includes {}, which is outside its folder: the crate keeps the \
                             pipeline's folder layout, so the copy could not find it",
                            p.file.display(),
                            inc.display()
                        ))
                        .help("move the included file into the pipeline's folder (or below it)"),
                    )
                })?;
            Ok((inc.clone(), rel.to_path_buf()))
        })
        .collect()
}

/// `rst export-crate`: checks that `p` is fully computed and `dir` usable, then writes the
/// crate there. `file` is the pipeline file as the user named it (for messages).
pub fn export(p: &Pipeline, store: &Store, file: &Path, dir: &Path) -> Result<Exported> {
    included_paths(p)?;
    let sources = gather(p, store, file)?;
    prepare_dir(dir)?;
    let doc = build(&sources, dir)?;
    let metadata = dir.join("ro-crate-metadata.json");
    crate::cache::store::write_atomic(
        &metadata,
        (serde_json::to_string_pretty(&doc).map_err(|source| Error::Encode {
            what: "the crate's metadata",
            source,
        })? + "\n")
            .as_bytes(),
    )?;
    Ok(Exported {
        metadata,
        run_id: sources.run.map(|r| r.id),
        entities: doc["@graph"].as_array().map_or(0, Vec::len),
    })
}

/// The entries, run record and published files of `p`; an instance not cached is the
/// user's to compute first.
fn gather<'a>(p: &'a Pipeline, store: &'a Store, file: &Path) -> Result<Sources<'a>> {
    let lines = status_lines(p, store)?;
    let stale = crate::status::uncached(&lines);
    if !stale.is_empty() {
        return Err(UserError::new(format!(
            "{} is not fully computed (not cached: {}); a crate describes a finished run",
            file.display(),
            stale.join(", ")
        ))
        .help(format!("run `rst run {}` first", file.display()))
        .into());
    }
    let entries: Vec<Entry> = lines
        .iter()
        .map(|l| {
            let key = l.key.clone().unwrap_or_default();
            store.entry(&key).ok_or_else(|| Error::EntryVanished {
                instance: l.instance.clone(),
                key,
            })
        })
        .collect::<Result<_>>()?;
    let results_dir: PathBuf = p.results_dir();
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
    let run = runlog::all(store).into_iter().find(|r| {
        r.is_of(p)
            && r.status == "ok"
            && r.stages.iter().map(|s| s.key.clone()).collect::<Vec<_>>() == keys
    });
    Ok(Sources {
        pipeline: p,
        store,
        entries,
        run,
        published,
        results_dir,
    })
}

/// Creates `dir`, new or empty (or a crate rst wrote before), and checks it is writable
/// before anything is written: a directory the user cannot write to is theirs to fix.
fn prepare_dir(dir: &Path) -> Result<()> {
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
    Ok(())
}

/// A workflow's formal parameters (`FormalParameter` ids) and what filled them in this
/// run (the ids of `PropertyValue`s or `File`s).
#[derive(Default)]
struct Bindings {
    formal: Vec<String>,
    actual: Vec<String>,
}

/// Per cache key, the ids of the files that stage instance fetched or published.
type ByKey = BTreeMap<String, Vec<String>>;

/// The crate's `@graph` being assembled, the files copied into its directory, and the
/// ids the root dataset lists as its parts.
struct Builder<'a> {
    graph: Vec<Value>,
    has_part: Vec<String>,
    dir: &'a Path,
}

/// Builds the crate's JSON-LD for `src` and copies its files into `dir`.
pub fn build(src: &Sources<'_>, dir: &Path) -> Result<Value> {
    let p = src.pipeline;
    let mut b = Builder {
        graph: Vec::new(),
        has_part: Vec::new(),
        dir,
    };
    let wf_name = b.workflow_file(p)?;
    let included = b.included_files(p)?;
    b.software();
    let params = b.parameters(p);
    let (downloads, fetched) = b.downloads(src.store, &src.entries);
    let (outputs, published) = b.published(src.published.as_ref(), &src.results_dir)?;
    let (tools, steps) = b.steps(p);
    let controls = b.stage_actions(src, &fetched, &published)?;
    let inputs = Bindings {
        formal: [params.formal, downloads.formal].concat(),
        actual: [params.actual, downloads.actual].concat(),
    };
    let run_action = b.run(src, &wf_name, &inputs.actual, &outputs.actual, controls);
    let parts = [included, tools].concat();
    b.workflow(p, &wf_name, &inputs.formal, &outputs.formal, parts, steps);
    b.root(p, &wf_name, &run_action);
    Ok(json!({
        "@context": ["https://w3id.org/ro/crate/1.1/context", "https://w3id.org/ro/terms/workflow-run/context"],
        "@graph": b.graph,
    }))
}

impl Builder<'_> {
    /// Copies the pipeline file into the crate; returns its id there.
    fn workflow_file(&mut self, p: &Pipeline) -> Result<String> {
        let wf_name = p
            .file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| format!("{}.yaml", p.name));
        copy_file(&p.file, &self.dir.join(&wf_name))?;
        self.has_part.push(wf_name.clone());
        Ok(wf_name)
    }

    /// Copies the files the pipeline includes beside it, at the same relative paths (so
    /// the copied pipeline finds them); returns their ids.
    fn included_files(&mut self, p: &Pipeline) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        for (inc, rel) in included_paths(p)? {
            let dest = self.dir.join(&rel);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| Error::io_path("cannot create", parent, e))?;
            }
            copy_file(&inc, &dest)?;
            let id = rel.to_string_lossy().into_owned();
            self.graph.push(json!({
                "@id": id, "@type": ["File", "SoftwareSourceCode"],
                "name": format!("stages included by {}", p.name),
                "programmingLanguage": self::id("#rst-pipeline"),
                "encodingFormat": "application/yaml",
            }));
            self.has_part.push(id.clone());
            ids.push(id);
        }
        Ok(ids)
    }

    /// The profiles the crate conforms to, the pipeline language and rst itself.
    fn software(&mut self) {
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
            self.graph.push(
                json!({"@id": uri, "@type": "CreativeWork", "name": name, "version": version}),
            );
        }
        self.graph.push(json!({
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
        self.graph.push(rst);
    }

    /// Pipeline parameters: a `FormalParameter` each and the `PropertyValue` the run used.
    fn parameters(&mut self, p: &Pipeline) -> Bindings {
        let mut out = Bindings::default();
        for (name, value) in &p.params {
            let fp = format!("#param-{name}");
            let pv = format!("#pv-{name}");
            self.graph.push(json!({
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
            self.graph.push(json!({
                "@id": pv, "@type": "PropertyValue", "name": name,
                "value": json_value_text(value), "exampleOfWork": id(&fp),
            }));
            out.formal.push(fp);
            out.actual.push(pv);
        }
        out
    }

    /// The downloaded files the pipeline starts from, and which stage fetched each.
    fn downloads(&mut self, store: &Store, entries: &[Entry]) -> (Bindings, ByKey) {
        let mut out = Bindings::default();
        let mut by_key = ByKey::new();
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
                self.graph.push(json!({
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
                self.graph.push(f);
                out.formal.push(fp);
                out.actual.push(did.clone());
                by_key.entry(e.key.clone()).or_default().push(did);
            }
        }
        (out, by_key)
    }

    /// The published results, copied into `results/`, described with their sha256, and
    /// which stage each came from.
    fn published(
        &mut self,
        published: Option<&Published>,
        results_dir: &Path,
    ) -> Result<(Bindings, ByKey)> {
        let mut out = Bindings::default();
        let mut by_key = ByKey::new();
        for (rel, pf) in published.iter().flat_map(|pb| &pb.files) {
            let src = results_dir.join(rel);
            if !src.is_file() {
                continue;
            }
            let fid = format!("results/{rel}");
            copy_file(&src, &self.dir.join(&fid))?;
            let sha =
                sha256_file(&src, &|_| {}).map_err(|e| Error::io_path("cannot read", &src, e))?;
            let size = std::fs::metadata(&src).map(|m| m.len()).unwrap_or(0);
            let fp = format!("#output-{rel}");
            self.graph.push(json!({
                "@id": fp, "@type": "FormalParameter", "name": rel,
                "additionalType": "File", "conformsTo": id(FORMAL_PARAMETER), "workExample": id(&fid),
            }));
            self.graph.push(json!({
                "@id": fid, "@type": "File", "name": rel,
                "description": format!("published from stage {} (artifact {}, file {})", pf.instance, short(&pf.artifact), pf.path),
                "encodingFormat": encoding(rel), "contentSize": size.to_string(), "sha256": sha,
                "exampleOfWork": id(&fp),
            }));
            self.has_part.push(fid.clone());
            out.formal.push(fp);
            out.actual.push(fid.clone());
            by_key.entry(pf.key.clone()).or_default().push(fid);
        }
        Ok((out, by_key))
    }

    /// Per stage a `HowToStep` and per stage kind a `SoftwareApplication`; returns the
    /// ids of both.
    fn steps(&mut self, p: &Pipeline) -> (Vec<String>, Vec<String>) {
        let mut tools = Vec::new();
        let mut steps = Vec::new();
        for (pos, stage) in p.stages.iter().enumerate() {
            let tool = format!("#kind-{}", stage.kind.name());
            if !tools.contains(&tool) {
                self.graph.push(json!({
                    "@id": tool, "@type": "SoftwareApplication",
                    "name": format!("rst {} stage", stage.kind.name()),
                    "version": stage.kind.version().to_string(),
                }));
                tools.push(tool.clone());
            }
            let step = format!("#step-{}", stage.name);
            self.graph.push(json!({
                "@id": step, "@type": "HowToStep", "name": stage.name,
                "position": pos.to_string(), "workExample": id(&tool),
            }));
            steps.push(step);
        }
        (tools, steps)
    }

    /// The `Dataset` of a cache artifact (once); returns its id.
    fn artifact(&mut self, digest: &str, instance: &str) -> String {
        let aid = format!("#artifact-{digest}");
        if !self.graph.iter().any(|g| g["@id"] == aid) {
            self.graph.push(json!({
                "@id": aid, "@type": "Dataset",
                "name": format!("artifact of {instance}"),
                "identifier": format!("blake3:{digest}"),
                "description": "a content-addressed artifact in the rst cache",
            }));
        }
        aid
    }

    /// Per stage instance a `CreateAction` (input and output artifacts, fetched and
    /// published files, times, the log copied into `logs/`) and a `ControlAction` tying it
    /// to its step; returns the control actions' ids.
    fn stage_actions(
        &mut self,
        src: &Sources<'_>,
        fetched: &ByKey,
        published: &ByKey,
    ) -> Result<Vec<String>> {
        let p = src.pipeline;
        let mut controls = Vec::new();
        for (inst, e) in p.instances.iter().zip(&src.entries) {
            let action = format!("#action-{}", short(&e.key));
            let mut objects: Vec<String> = Vec::new();
            for recs in e.record.inputs.values() {
                for r in recs {
                    objects.push(self.artifact(&r.digest, &r.instance));
                }
            }
            let mut results = vec![self.artifact(&e.artifact, &inst.name)];
            results.extend(fetched.get(&e.key).cloned().unwrap_or_default());
            results.extend(published.get(&e.key).cloned().unwrap_or_default());
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
            let log = src.store.root().join(&e.run.log);
            if !e.run.log.is_empty() && log.is_file() {
                let lid = format!("logs/{}.log", short(&e.key));
                copy_file(&log, &self.dir.join(&lid))?;
                self.graph.push(json!({
                    "@id": lid, "@type": "File", "name": format!("log of {}", inst.name),
                    "encodingFormat": "text/plain", "about": id(&action),
                }));
                self.has_part.push(lid);
            }
            self.graph.push(a);
            let control = format!("#control-{}", short(&e.key));
            self.graph.push(json!({
                "@id": control, "@type": "ControlAction",
                "name": format!("orchestrate {}", inst.name),
                "instrument": id(format!("#step-{}", p.stages[inst.stage].name)),
                "object": id(&action),
            }));
            controls.push(control);
        }
        Ok(controls)
    }

    /// The workflow run (`CreateAction`: the run record's times and command line, or the
    /// entries' when no run was recorded) and the `OrganizeAction` of rst orchestrating
    /// `controls`; returns the run action's id.
    fn run(
        &mut self,
        src: &Sources<'_>,
        wf_name: &str,
        objects: &[String],
        results: &[String],
        controls: Vec<String>,
    ) -> String {
        let (p, entries) = (src.pipeline, &src.entries);
        let (start, end, run_id, argv) = match &src.run {
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
            "instrument": id(wf_name),
            "object": ids(objects.iter().cloned()),
            "result": ids(results.iter().cloned()),
            "actionStatus": id("http://schema.org/CompletedActionStatus"),
        });
        if start.is_finite() && start > 0.0 {
            ra["startTime"] = json!(iso_time(start));
            ra["endTime"] = json!(iso_time(end));
        }
        if !argv.is_empty() {
            ra["description"] = json!(argv);
        }
        self.graph.push(ra);
        self.graph.push(json!({
            "@id": format!("#organize-{run_id}"), "@type": "OrganizeAction",
            "name": format!("rst orchestration of {}", p.name),
            "instrument": id("#rst"),
            "object": ids(controls),
            "result": id(&run_action),
        }));
        run_action
    }

    /// The pipeline file as a `ComputationalWorkflow`: its inputs, outputs, tools, steps.
    fn workflow(
        &mut self,
        p: &Pipeline,
        wf_name: &str,
        inputs: &[String],
        outputs: &[String],
        parts: Vec<String>,
        steps: Vec<String>,
    ) {
        self.graph.push(json!({
            "@id": wf_name, "@type": ["File", "SoftwareSourceCode", "ComputationalWorkflow"],
            "name": p.name,
            "programmingLanguage": id("#rst-pipeline"),
            "conformsTo": id(COMPUTATIONAL_WORKFLOW),
            "input": ids(inputs.iter().cloned()),
            "output": ids(outputs.iter().cloned()),
            "hasPart": ids(parts),
            "step": ids(steps),
            "encodingFormat": "application/yaml",
        }));
    }

    /// The metadata descriptor and the root `Dataset` (the profiles it conforms to, the
    /// workflow as its main entity, every file in it).
    fn root(&mut self, p: &Pipeline, wf_name: &str, run_action: &str) {
        self.graph.push(json!({
            "@id": "ro-crate-metadata.json", "@type": "CreativeWork",
            "about": id("./"),
            "conformsTo": [id(RO_CRATE), id(WORKFLOW_RO_CRATE)],
        }));
        self.graph.push(json!({
            "@id": "./", "@type": "Dataset",
            "name": format!("{}: workflow run of {}", p.name, wf_name),
            "description": format!("Workflow Run RO-Crate of the rst pipeline {} ({}), exported by rst {}", p.name, wf_name, env!("CARGO_PKG_VERSION")),
            "datePublished": iso_time(unix_now()),
            "conformsTo": [id(PROCESS_RUN), id(WORKFLOW_RUN), id(PROVENANCE_RUN), id(WORKFLOW_RO_CRATE)],
            "mainEntity": id(wf_name),
            "hasPart": ids(std::mem::take(&mut self.has_part)),
            "mentions": id(run_action),
        }));
    }
}
