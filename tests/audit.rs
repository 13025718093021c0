//! Provenance end to end: `rst audit` (recompute and compare), `rst lineage`, run records
//! and `rst log`, and the Workflow Run RO-Crate export.
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;

#[cfg(feature = "torch")]
use crate::common::{with_band_stages, write_band_idx};
use crate::common::{TestDir, CLOCK_STAGE};
use serde_json::Value;

#[cfg(feature = "torch")]
/// download → split → (noise → train → evaluate → table), plus a command stage.
const ML: &str = r#"
name: tiny
params: {rate: 0.2}
stages:
  # BAND DATA STAGES (tests/common: `data` and `target`)
  noisy:
    kind: noise
    inputs: {data: target}
    params: {rate: "${rate}", mode: uniform}
  count:
    kind: command
    inputs: {in: target}
    params: {shell: 'wc -c < $RST_IN_IN/dataset.json > $RST_OUT/bytes'}
  train:
    kind: train
    matrix: {seed: [1]}
    inputs: {data: noisy}
    params: {model: resnet-mini, seed: "${seed}", epochs: 2, batch_size: 16, lr: 0.01, device: cpu}
  evaluate:
    kind: evaluate
    matrix: {seed: [1]}
    inputs: {model: "train[seed=${seed}]", data: noisy}
    params: {split: test, device: cpu}
  table:
    kind: aggregate
    inputs: {evals: [evaluate]}
    publish: "."
    params: {rows: stage, columns: seed}
"#;

#[cfg(feature = "torch")]
fn ml_project() -> TestDir {
    let t = TestDir::new();
    write_band_idx(&t);
    t.write("p.yaml", &with_band_stages(ML));
    t
}

/// Two raw downloads → a command stage → a published table; and a clock.
const SMALL: &str = r#"
name: small
stages:
  a:
    kind: download
    params:
      files: [{name: a.txt, mirrors: [src/a.txt]}]
  b:
    kind: download
    params:
      files: [{name: b.txt, mirrors: [src/b.txt]}]
  join:
    kind: command
    inputs: {x: a, y: b}
    params: {shell: 'cat $RST_IN_X/files/a.txt $RST_IN_Y/files/b.txt > $RST_OUT/joined'}
  table:
    kind: command
    inputs: {j: join}
    publish: "."
    params: {shell: 'sort $RST_IN_J/joined > $RST_OUT/table.md'}
"#;

fn small_project(extra: &str) -> TestDir {
    let t = TestDir::new();
    t.write("src/a.txt", "zeta\nalpha\n");
    t.write("src/b.txt", "beta\n");
    t.write("p.yaml", &format!("{SMALL}{extra}"));
    t
}

fn audit_json(t: &TestDir, stem: &str) -> Value {
    serde_json::from_str(&t.read(&format!("results/{stem}/audit.json"))).unwrap()
}

fn verdicts(report: &Value) -> BTreeMap<String, String> {
    report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["instance"].as_str().unwrap().to_string(),
                s["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn sha256_hex(path: &std::path::Path) -> String {
    // Only for checks: `sha256sum` is in coreutils.
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

#[test]
#[cfg(feature = "torch")]
fn audit_of_a_cached_pipeline_is_bit_identical_and_entries_record_the_device() {
    let t = ml_project();
    t.ok(&["run", "p.yaml"]);
    let train = t.entry_of("train[seed=1]").unwrap();
    assert_eq!(train["run"]["device"], "cpu", "{train}");
    assert_eq!(train["run"]["threads"], 1);
    assert_eq!(t.entry_of("count").unwrap()["run"]["device"], Value::Null);

    let out = t.rst(&["audit", "p.yaml"]);
    out.assert_code(0);
    out.assert_stdout_contains("**PASSED**");
    let report = audit_json(&t, "p");
    let v = verdicts(&report);
    assert_eq!(v.len(), 7, "{v:?}");
    assert!(v.values().all(|v| v == "bit-identical"), "{v:?}");
    assert!(t
        .read("results/p/audit.md")
        .contains("| train[seed=1] | train | 1 | bit-identical |"));
    // The scratch cache is gone; the main cache gained no entries.
    assert_eq!(t.entries().len(), 7);
    assert!(!std::fs::read_dir(t.join("cache/tmp"))
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("audit-")));

    // A pattern, then a seeded sample.
    t.rst(&["audit", "p.yaml", "--stage", "ev*"]).assert_code(0);
    assert_eq!(
        verdicts(&audit_json(&t, "p"))
            .into_keys()
            .collect::<Vec<_>>(),
        ["evaluate[seed=1]"]
    );
    t.rst(&["audit", "p.yaml", "--sample", "2", "--seed", "7"])
        .assert_code(0);
    let first = verdicts(&audit_json(&t, "p"));
    assert_eq!(first.len(), 2);
    t.rst(&["audit", "p.yaml", "--sample", "2", "--seed", "7"])
        .assert_code(0);
    assert_eq!(
        verdicts(&audit_json(&t, "p")),
        first,
        "same seed, same sample"
    );

    // The audit recomputes with the thread count the entry recorded. (On this machine
    // training with 2 threads instead of 1 moves weights by ~1e-6 and leaves accuracy
    // alone: within any tolerance, not bit-identical.)
    let path = t
        .entries()
        .into_iter()
        .find(|p| {
            let e: Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
            e["instance"] == "train[seed=1]"
        })
        .unwrap();
    let mut e: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    // The key record's thread count is what the audit follows (torch stages); the run
    // facts say the same.
    assert_eq!(e["record"]["env"]["threads"], "1", "{e}");
    e["record"]["env"]["threads"] = "2".into();
    e["run"]["threads"] = 2.into();
    std::fs::write(&path, serde_json::to_vec(&e).unwrap()).unwrap();
    t.rst(&["audit", "p.yaml", "--stage", "train*", "--tolerance", "100"])
        .assert_code(0);
    let report = audit_json(&t, "p");
    let train = &report["stages"][0];
    assert_eq!(train["threads"], 2);
    let v = train["verdict"].as_str().unwrap();
    assert!(v == "bit-identical" || v == "within tolerance", "{train}");
    if v == "within tolerance" {
        assert_eq!(train["comparison"]["accuracy_compared"], true, "{train}");
        assert!(
            train["comparison"]["weights"][0]["max_abs_diff"]
                .as_f64()
                .unwrap()
                > 0.0
        );
    }
}

#[test]
fn audit_needs_a_cached_pipeline_and_sane_flags() {
    let t = small_project("");
    let out = t.rst(&["audit", "p.yaml"]);
    out.assert_code(2);
    out.assert_stderr_contains("not cached");
    out.assert_stderr_contains("run `rst run p.yaml` first");
    t.ok(&["run", "p.yaml"]);
    t.rst(&["audit", "p.yaml", "--stage", "nope*"])
        .assert_code(2)
        .assert_stderr_contains("no stage or instance matches");
    t.rst(&["audit", "p.yaml", "--jobs", "0"]).assert_code(2);
    t.rst(&["audit", "p.yaml", "--tolerance", "-1"])
        .assert_code(2);
}

#[test]
fn a_stage_writing_the_time_differs() {
    let t = small_project(CLOCK_STAGE);
    t.ok(&["run", "p.yaml"]);
    let out = t.rst(&["audit", "p.yaml"]);
    out.assert_code(1);
    out.assert_stdout_contains("**FAILED**");
    let report = audit_json(&t, "p");
    let v = verdicts(&report);
    assert_eq!(v["clock"], "differs", "{v:?}");
    assert_eq!(v["table"], "bit-identical", "{v:?}");
    let clock = report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["instance"] == "clock")
        .unwrap();
    assert_eq!(clock["comparison"]["files"]["changed"][0], "now");
    // No accuracy to compare: a tolerance does not excuse it.
    t.rst(&["audit", "p.yaml", "--stage", "clock", "--tolerance", "5"])
        .assert_code(1);
}

/// Artifacts are read-only in the cache; someone makes one writable and edits it. The audit
/// calls this `cache corrupt` (the cached copy no longer matches its own digest), not
/// `differs` (a recomputation that gives other bytes), and says the stage itself
/// reproduces the recorded digest.
#[test]
fn a_tampered_cached_artifact_is_caught() {
    let t = small_project("");
    t.ok(&["run", "p.yaml"]);
    let join = t.entry_of("join").unwrap();
    let digest = join["artifact"].as_str().unwrap();
    let file = t
        .join("cache/objects")
        .join(&digest[..2])
        .join(digest)
        .join("joined");
    let mut perm = std::fs::metadata(&file).unwrap().permissions();
    perm.set_mode(0o644);
    std::fs::set_permissions(&file, perm).unwrap();
    std::fs::write(&file, "tampered\n").unwrap();

    let out = t.rst(&["audit", "p.yaml"]);
    out.assert_code(1);
    let report = audit_json(&t, "p");
    let v = verdicts(&report);
    assert_eq!(v["join"], "cache corrupt", "{v:?}");
    assert_eq!(v["a"], "bit-identical");
    let stages = report["stages"].as_array().unwrap();
    let j = stages.iter().find(|s| s["instance"] == "join").unwrap();
    assert_eq!(j["fresh_artifact"], j["cached_artifact"]);
    assert_eq!(j["comparison"]["files"]["changed"][0], "joined");
    assert!(t.read("results/p/audit.md").contains("rst verify"));
    // The consumer was fed the tampered copy, and the report says so.
    let table = stages.iter().find(|s| s["instance"] == "table").unwrap();
    assert!(
        table["notes"][0]
            .as_str()
            .unwrap()
            .contains("input j (join) is corrupt"),
        "{table}"
    );
}

fn downloads_in(node: &Value, out: &mut BTreeSet<(String, String)>) {
    for d in node["downloads"].as_array().into_iter().flatten() {
        out.insert((
            d["name"].as_str().unwrap().to_string(),
            d["sha256"].as_str().unwrap().to_string(),
        ));
    }
    for i in node["inputs"].as_array().into_iter().flatten() {
        downloads_in(&i["node"], out);
    }
}

#[test]
fn lineage_of_a_published_table_reaches_every_download() {
    let t = small_project("");
    t.ok(&["run", "p.yaml"]);
    let prov: Value = serde_json::from_str(&t.read("results/p/provenance.json")).unwrap();
    assert_eq!(prov["files"]["table.md"]["instance"], "table");
    let want: BTreeSet<(String, String)> = [
        ("a.txt".to_string(), sha256_hex(&t.join("src/a.txt"))),
        ("b.txt".to_string(), sha256_hex(&t.join("src/b.txt"))),
    ]
    .into();

    let out = t.ok(&["lineage", "results/p/table.md", "--json"]);
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    let mut got = BTreeSet::new();
    for root in doc["lineage"].as_array().unwrap() {
        downloads_in(root, &mut got);
    }
    assert_eq!(got, want);

    let text = t.ok(&["lineage", "results/p/table.md"]).stdout;
    for (name, sha) in &want {
        assert!(
            text.contains(&format!("file {name} sha256 {sha}")),
            "{text}"
        );
    }
    assert!(text.contains("j <- join (command v"), "{text}");
    assert!(text.contains("log cache/logs/"), "{text}");

    // Same tree from the pipeline and a stage name.
    let by_stage: Value =
        serde_json::from_str(&t.ok(&["lineage", "p.yaml", "table", "--json"]).stdout).unwrap();
    assert_eq!(by_stage["lineage"], doc["lineage"]);
    // A result edited after publishing is flagged.
    t.write("results/p/table.md", "edited\n");
    t.ok(&["lineage", "results/p/table.md"])
        .assert_stderr_contains("modified after rst published it");
    // User errors.
    t.rst(&["lineage", "p.yaml", "tabel"])
        .assert_code(2)
        .assert_stderr_contains("did you mean `table`?");
    t.rst(&["lineage", "src/a.txt"])
        .assert_code(2)
        .assert_stderr_contains("not a published result");
}

#[test]
fn run_records_are_listed_by_rst_log() {
    let t = small_project("");
    t.ok(&["log"]).assert_stdout_contains("no runs recorded");
    t.ok(&["run", "p.yaml"]);
    t.write("src/b.txt", "gamma\n");
    t.ok(&["run", "p.yaml"]);
    let runs: Vec<Value> = serde_json::from_str(&t.ok(&["log", "--json"]).stdout).unwrap();
    assert_eq!(runs.len(), 2);
    let (newest, oldest) = (&runs[0], &runs[1]);
    assert!(newest["started_unix"].as_f64() >= oldest["started_unix"].as_f64());
    let outcome = |r: &Value, inst: &str| {
        r["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["instance"] == inst)
            .unwrap()["outcome"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(outcome(oldest, "a"), "ran");
    assert_eq!(outcome(newest, "a"), "cached");
    assert_eq!(outcome(newest, "b"), "ran");
    assert_eq!(newest["status"], "ok");
    assert_eq!(newest["argv"][1], "run");
    assert!(t.exists(&format!(
        "cache/runs/{}.json",
        newest["id"].as_str().unwrap()
    )));
    let id = oldest["id"].as_str().unwrap();
    let one = t.ok(&["log", id]).stdout;
    assert!(one.contains(&format!("run {id}")), "{one}");
    assert!(one.contains("ran      a"), "{one}");
    t.rst(&["log", "no-such-run"])
        .assert_code(2)
        .assert_stderr_contains("rst log");
    // A failing run is recorded too.
    t.write(
        "p.yaml",
        &format!("{SMALL}  bad:\n    kind: command\n    params: {{shell: 'exit 3'}}\n"),
    );
    assert_eq!(t.rst(&["run", "p.yaml"]).code, 1);
    let runs: Vec<Value> = serde_json::from_str(&t.ok(&["log", "--json"]).stdout).unwrap();
    assert_eq!(runs[0]["status"], "failed");
    assert_eq!(outcome(&runs[0], "bad"), "failed");
}

fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) if m.len() == 1 && m.contains_key("@id") => {
            out.push(m["@id"].as_str().unwrap().to_string())
        }
        Value::Object(m) => m.values().for_each(|x| refs(x, out)),
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

fn types(e: &Value) -> Vec<String> {
    match &e["@type"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().map(|s| s.as_str().unwrap().to_string()).collect(),
        _ => vec![],
    }
}

fn id_list(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    refs(v, &mut out);
    out
}

#[test]
fn ro_crate_export_is_a_workflow_run_crate() {
    let t = small_project("");
    t.rst(&["export-crate", "p.yaml", "crate"])
        .assert_code(2)
        .assert_stderr_contains("run `rst run p.yaml` first");
    t.ok(&["run", "p.yaml"]);
    t.ok(&["export-crate", "p.yaml", "crate"]);
    let doc: Value = serde_json::from_str(&t.read("crate/ro-crate-metadata.json")).unwrap();
    assert_eq!(doc["@context"][0], "https://w3id.org/ro/crate/1.1/context");
    let graph = doc["@graph"].as_array().unwrap();
    let by_id: BTreeMap<String, &Value> = graph
        .iter()
        .map(|e| (e["@id"].as_str().unwrap().to_string(), e))
        .collect();
    assert_eq!(by_id.len(), graph.len(), "@ids are unique");
    // Every reference resolves (schema.org enumeration members are vocabulary, not entities).
    for e in graph {
        let mut r = Vec::new();
        for (k, v) in e.as_object().unwrap() {
            if k != "@id" {
                refs(v, &mut r);
            }
        }
        for id in r {
            assert!(
                by_id.contains_key(&id) || id.starts_with("http://schema.org/"),
                "{id} referenced by {} is not in the graph",
                e["@id"]
            );
        }
    }
    let desc = by_id["ro-crate-metadata.json"];
    assert_eq!(desc["about"]["@id"], "./");
    assert!(id_list(&desc["conformsTo"]).contains(&"https://w3id.org/ro/crate/1.1".into()));
    let root = by_id["./"];
    assert_eq!(types(root), ["Dataset"]);
    let conforms = id_list(&root["conformsTo"]);
    for profile in [
        "https://w3id.org/ro/wfrun/process/0.5",
        "https://w3id.org/ro/wfrun/workflow/0.5",
        "https://w3id.org/ro/wfrun/provenance/0.5",
        "https://w3id.org/workflowhub/workflow-ro-crate/1.0",
    ] {
        assert!(conforms.contains(&profile.to_string()), "{conforms:?}");
    }
    for key in ["name", "description", "datePublished"] {
        assert!(root[key].is_string(), "root lacks {key}");
    }
    let main = by_id[root["mainEntity"]["@id"].as_str().unwrap()];
    assert_eq!(main["@id"], "p.yaml");
    for ty in ["File", "SoftwareSourceCode", "ComputationalWorkflow"] {
        assert!(types(main).contains(&ty.to_string()), "{main}");
    }
    assert_eq!(t.read("crate/p.yaml"), t.read("p.yaml"));
    // The run.
    let run = by_id[root["mentions"]["@id"].as_str().unwrap()];
    assert_eq!(types(run), ["CreateAction"]);
    assert_eq!(run["instrument"]["@id"], "p.yaml");
    assert!(run["startTime"].is_string() && run["endTime"].is_string());
    let objects = id_list(&run["object"]);
    let inputs: Vec<&&Value> = objects.iter().map(|o| &by_id[o]).collect();
    let mut names: Vec<&str> = inputs
        .iter()
        .filter(|e| types(e) == ["File"])
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["a.txt", "b.txt"]);
    for i in inputs.iter().filter(|e| types(e) == ["File"]) {
        assert_eq!(i["sha256"].as_str().unwrap().len(), 64);
    }
    let results = id_list(&run["result"]);
    assert_eq!(results, ["results/table.md"]);
    let table = by_id["results/table.md"];
    assert_eq!(
        table["sha256"].as_str().unwrap(),
        sha256_hex(&t.join("results/p/table.md"))
    );
    assert_eq!(
        t.read("crate/results/table.md"),
        t.read("results/p/table.md")
    );
    // Provenance: steps, per-instance actions, the engine.
    let steps = id_list(&main["step"]);
    assert_eq!(steps.len(), 4);
    for s in &steps {
        assert_eq!(types(by_id[s]), ["HowToStep"]);
        assert!(by_id.contains_key(by_id[s]["workExample"]["@id"].as_str().unwrap()));
    }
    let controls: Vec<&&Value> = by_id
        .values()
        .filter(|e| types(e) == ["ControlAction"])
        .collect();
    assert_eq!(controls.len(), 4);
    for c in controls {
        assert_eq!(
            types(by_id[c["instrument"]["@id"].as_str().unwrap()]),
            ["HowToStep"]
        );
        let action = by_id[c["object"]["@id"].as_str().unwrap()];
        assert_eq!(types(action), ["CreateAction"]);
        assert!(action["instrument"].is_object() && action["result"].is_array());
    }
    let organize = by_id
        .values()
        .find(|e| types(e) == ["OrganizeAction"])
        .unwrap();
    assert_eq!(organize["result"]["@id"], run["@id"]);
    let engine = by_id[organize["instrument"]["@id"].as_str().unwrap()];
    assert_eq!(types(engine), ["SoftwareApplication"]);
    assert!(engine["version"].is_string());
    // Exporting again into the crate refreshes it; a foreign non-empty dir is refused.
    t.ok(&["export-crate", "p.yaml", "crate"]);
    t.rst(&["export-crate", "p.yaml", "src"]).assert_code(2);
}
