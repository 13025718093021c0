//! Phase 1 of the report: everything it shows, read from one run record, the cache
//! entries and objects it names, and `results/<pipeline>/`. Nothing here fails: what
//! cannot be read (an object removed by `rst gc`, an unreadable audit) becomes a note
//! that the page prints where the section would be.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::cache::digest::read_regular;
use crate::cache::store::{Entry, Store};
use crate::provenance::lineage::{downloads_of, Downloaded, Published};
use crate::provenance::runlog::RunRecord;
use crate::spec::Pipeline;

/// What the page shows.
pub struct Report {
    pub pipeline: String,
    pub file: PathBuf,
    pub run: RunRecord,
    /// Each `aggregate` output: its table (Markdown, as published) and plots.
    pub tables: Vec<TableOutput>,
    /// The validation curves of training runs that no table's `trains` drew.
    pub curves: Vec<RunCurve>,
    pub studies: Vec<StudyOutput>,
    pub stages: Vec<StageNode>,
    /// Stage → stage (indices into `stages`): what the DAG draws.
    pub edges: Vec<(usize, usize)>,
    pub bars: Vec<Bar>,
    /// Instances of the run that have no timing (records from before rst kept it).
    pub untimed: usize,
    pub environment: Vec<(String, String)>,
    pub downloads: Vec<(String, Downloaded)>,
    /// `provenance.json`: each published file, its sha256 and the instance it came from.
    pub results: Vec<(String, String, String)>,
    pub audit: Option<AuditOutput>,
    pub notes: Vec<String>,
}

pub struct Figure {
    pub name: String,
    pub png: Vec<u8>,
}

pub struct TableOutput {
    pub instance: String,
    pub markdown: String,
    pub figures: Vec<Figure>,
    /// `curves.json`: each training run the table's curves drew.
    pub curves: Vec<RunCurve>,
}

/// One training run's validation accuracy per epoch.
pub struct RunCurve {
    pub instance: String,
    /// The legend entry (a table row's label, or the stage).
    pub group: String,
    /// `#rrggbb`, as in the table's plots.
    pub color: String,
    /// The panel (a table column's label), empty for none.
    pub panel: String,
    /// (epoch, validation accuracy in percent).
    pub points: Vec<(f64, f64)>,
}

/// The colour of training runs outside any table.
const OTHER_COLOR: &str = "#7f7f7f";

pub struct StudyOutput {
    pub instance: String,
    pub best: Option<Value>,
    pub trials: usize,
    pub figures: Vec<Figure>,
}

/// One stage of the DAG and what its instances did in the run.
pub struct StageNode {
    pub name: String,
    pub kind: String,
    pub instances: usize,
    pub ran: usize,
    pub cached: usize,
    pub failed: usize,
}

/// One stage instance on the timeline; times in seconds from the run's start.
pub struct Bar {
    pub instance: String,
    pub stage: String,
    /// ran | cached | reused | failed
    pub outcome: String,
    pub start: f64,
    pub end: f64,
    pub lane: Option<usize>,
    pub job: Option<String>,
    pub gpus: Vec<String>,
    /// For what came from the cache: how long it took when it was computed, and where.
    pub computed: Option<(f64, String)>,
}

pub struct AuditOutput {
    pub markdown: String,
    pub passed: Option<bool>,
    pub ended: String,
}

/// Entries read at most (each is a file to parse): a run of a million instances gets a
/// report in seconds, with the environment of the first ones and a note saying so.
pub const MAX_ENTRIES: usize = 10_000;

/// Reads what the report of `run` shows; `notes` go at the top of the page.
pub fn gather(p: &Pipeline, store: &Store, run: &RunRecord, notes: &[String]) -> Report {
    let mut notes = notes.to_vec();
    // Every download's (its files are the provenance), then the first MAX_ENTRIES others.
    let mut budget = MAX_ENTRIES;
    let entries: Vec<Option<Entry>> = run
        .stages
        .iter()
        .map(|s| {
            let wanted = s.kind == "download" || budget > 0;
            if s.kind != "download" {
                budget = budget.saturating_sub(1);
            }
            s.key
                .as_deref()
                .filter(|_| wanted)
                .and_then(|k| store.entry(k))
        })
        .collect();
    let others = run.stages.iter().filter(|s| s.kind != "download").count();
    if others > MAX_ENTRIES {
        notes.push(format!(
            "{others} stage instances: the provenance's hosts, versions and devices are those \
             of the first {MAX_ENTRIES}"
        ));
    }
    let (tables, curves, studies) = outputs(store, run, &mut notes);
    let (stages, edges) = dag(p, run);
    let (bars, untimed) = bars(run, &entries);
    let results_dir = p.results_dir();
    Report {
        pipeline: run.pipeline.clone(),
        file: run.file.clone(),
        tables,
        curves,
        studies,
        stages,
        edges,
        bars,
        untimed,
        environment: environment(run, &entries),
        downloads: entries
            .iter()
            .zip(&run.stages)
            .flat_map(|(e, s)| {
                e.iter()
                    .flat_map(|e| downloads_of(store, e))
                    .map(|d| (s.instance.clone(), d))
                    .collect::<Vec<_>>()
            })
            .collect(),
        results: published(&results_dir),
        audit: audit(&results_dir, &mut notes),
        notes,
        run: run.clone(),
    }
}

/// The tables, curves and studies among the run's artifacts.
fn outputs(
    store: &Store,
    run: &RunRecord,
    notes: &mut Vec<String>,
) -> (Vec<TableOutput>, Vec<RunCurve>, Vec<StudyOutput>) {
    let (mut tables, mut curves, mut studies) = (Vec::new(), Vec::new(), Vec::new());
    for s in &run.stages {
        let Some(artifact) = &s.artifact else {
            continue;
        };
        let dir = store.object_path(artifact);
        if !dir.is_dir() {
            if matches!(s.kind.as_str(), "aggregate" | "search" | "train") {
                notes.push(format!(
                    "the artifact of {} ({}) is no longer in the cache (removed by `rst gc`?): \
                     its outputs are left out",
                    s.instance,
                    crate::human::short(artifact)
                ));
            }
            continue;
        }
        match s.kind.as_str() {
            "aggregate" => tables.push(TableOutput {
                instance: s.instance.clone(),
                markdown: read_text(&dir.join("table.md")).unwrap_or_default(),
                figures: figures(&dir),
                curves: read_json(&dir.join("curves.json"))
                    .map(|v| table_curves(&v))
                    .unwrap_or_default(),
            }),
            "search" => studies.push(StudyOutput {
                instance: s.instance.clone(),
                best: read_json(&dir.join("best.json")),
                trials: read_json(&dir.join("trials.json"))
                    .and_then(|t| t.as_array().map(Vec::len))
                    .unwrap_or(0),
                figures: figures(&dir),
            }),
            _ => {}
        }
        if s.kind != "train" {
            continue;
        }
        if let Some(history) = read_json(&dir.join("history.json")) {
            let points = crate::report::validation_curve(&history).unwrap_or_default();
            if !points.is_empty() {
                curves.push(RunCurve {
                    instance: s.instance.clone(),
                    group: s.stage.clone(),
                    color: OTHER_COLOR.to_string(),
                    panel: String::new(),
                    points,
                });
            }
        }
    }
    let drawn: BTreeSet<&str> = tables
        .iter()
        .flat_map(|t| t.curves.iter().map(|c| c.instance.as_str()))
        .collect();
    curves.retain(|c| !drawn.contains(c.instance.as_str()));
    (tables, curves, studies)
}

/// The runs of a `curves.json`.
fn table_curves(doc: &Value) -> Vec<RunCurve> {
    doc.as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let text = |k: &str| c.get(k).and_then(Value::as_str).map(str::to_string);
            Some(RunCurve {
                instance: text("instance")?,
                group: text("group")?,
                color: text("color").unwrap_or_else(|| OTHER_COLOR.to_string()),
                panel: text("panel").unwrap_or_default(),
                points: c
                    .get("points")?
                    .as_array()?
                    .iter()
                    .filter_map(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_f64()?)))
                    .collect(),
            })
        })
        .collect()
}

/// The PNG plots of an artifact, by name.
fn figures(dir: &Path) -> Vec<Figure> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".png"))
        .collect();
    names.sort();
    names
        .into_iter()
        .filter_map(|name| {
            let png = read_regular(&dir.join(&name)).ok()?;
            Some(Figure { name, png })
        })
        .collect()
}

fn read_text(path: &Path) -> Option<String> {
    String::from_utf8(read_regular(path).ok()?).ok()
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_slice(&read_regular(path).ok()?).ok()
}

/// The stages, what their instances did in `run`, and the edges between stages.
fn dag(p: &Pipeline, run: &RunRecord) -> (Vec<StageNode>, Vec<(usize, usize)>) {
    let mut stages: Vec<StageNode> = p
        .stages
        .iter()
        .map(|s| StageNode {
            name: s.name.clone(),
            kind: s.kind.name().to_string(),
            instances: s.instances.len(),
            ran: 0,
            cached: 0,
            failed: 0,
        })
        .collect();
    for s in &run.stages {
        if let Some(node) = p.find_stage(&s.stage).map(|i| &mut stages[i]) {
            match s.outcome.as_str() {
                "ran" => node.ran += 1,
                "cached" | "reused" | "fetched" => node.cached += 1,
                "failed" => node.failed += 1,
                _ => {}
            }
        }
    }
    let mut edges = BTreeSet::new();
    for inst in &p.instances {
        for ups in inst.inputs.values() {
            for &u in ups {
                edges.insert((p.instances[u].stage, inst.stage));
            }
        }
    }
    (stages, edges.into_iter().collect())
}

/// A bar per instance that has a time, ordered by start.
fn bars(run: &RunRecord, entries: &[Option<Entry>]) -> (Vec<Bar>, usize) {
    let mut untimed = 0;
    let mut bars: Vec<Bar> = run
        .stages
        .iter()
        .zip(entries)
        .filter_map(|(s, e)| {
            if matches!(&*s.outcome, "not_run" | "skipped") {
                return None;
            }
            let Some(span) = &s.span else {
                untimed += 1;
                return None;
            };
            let computed = (s.outcome != "ran")
                .then(|| e.as_ref().map(|e| (e.run.duration_s, e.run.host.clone())))
                .flatten();
            Some(Bar {
                instance: s.instance.clone(),
                stage: s.stage.clone(),
                outcome: s.outcome.clone(),
                start: (span.start_unix - run.started_unix).max(0.0),
                end: (span.end_unix - run.started_unix).max(0.0),
                lane: span.lane,
                job: span.job.clone(),
                gpus: s.gpus.clone(),
                computed,
            })
        })
        .collect();
    bars.sort_by(|a, b| a.start.total_cmp(&b.start).then(a.end.total_cmp(&b.end)));
    (bars, untimed)
}

/// Facts of the entries: each distinct value with how many instances had it.
fn environment(run: &RunRecord, entries: &[Option<Entry>]) -> Vec<(String, String)> {
    let mut facts: BTreeMap<&str, BTreeMap<String, usize>> = BTreeMap::new();
    let mut add = |what: &'static str, value: String| {
        *facts.entry(what).or_default().entry(value).or_default() += 1;
    };
    for e in entries.iter().flatten() {
        let r = &e.run;
        add("host", r.host.clone());
        if !r.cpu.is_empty() || !r.isa.is_empty() {
            add("cpu", crate::machine::describe(&r.cpu, &r.isa));
        }
        let commit = r.rst_git_commit.as_deref().map(crate::human::short);
        add(
            "rst",
            match commit {
                Some(c) => format!("{} ({c})", r.rst_version),
                None => r.rst_version.clone(),
            },
        );
        if let Some(device) = &r.device {
            add("device", device.clone());
            add("libtorch", r.libtorch.clone());
        }
        add("threads", r.threads.to_string());
    }
    let mut rows = vec![
        ("run".to_string(), run.id.clone()),
        ("command".to_string(), crate::shell::words(&run.argv)),
        ("run on".to_string(), run.host.clone()),
        (
            "rst of the run".to_string(),
            match &run.rst_git_commit {
                Some(c) => format!("{} ({})", run.rst_version, crate::human::short(c)),
                None => run.rst_version.clone(),
            },
        ),
    ];
    for (what, values) in facts {
        let text = values
            .iter()
            .map(|(v, n)| format!("{v} ({n} instance{})", if *n == 1 { "" } else { "s" }))
            .collect::<Vec<_>>()
            .join(", ");
        rows.push((format!("{what} of the entries"), text));
    }
    rows
}

/// `provenance.json`'s files: (path, sha256, instance).
fn published(results_dir: &Path) -> Vec<(String, String, String)> {
    Published::read(results_dir)
        .map(|p| {
            p.files
                .into_iter()
                .map(|(path, f)| (path, f.sha256, f.instance))
                .collect()
        })
        .unwrap_or_default()
}

/// The latest audit (`audit.md` / `audit.json` in `results/<pipeline>/`), if any.
fn audit(results_dir: &Path, notes: &mut Vec<String>) -> Option<AuditOutput> {
    let json = results_dir.join("audit.json");
    if !json.exists() {
        return None;
    }
    let doc = read_json(&json);
    let markdown = read_text(&results_dir.join("audit.md"));
    if doc.is_none() || markdown.is_none() {
        notes.push(format!(
            "{} or audit.md could not be read: the audit is left out",
            json.display()
        ));
        return None;
    }
    let doc = doc.unwrap_or_default();
    Some(AuditOutput {
        markdown: markdown.unwrap_or_default(),
        passed: doc["passed"].as_bool(),
        ended: doc["ended"].as_str().unwrap_or_default().to_string(),
    })
}
