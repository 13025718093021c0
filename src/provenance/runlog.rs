//! Run records: every `rst run` writes `cache/runs/<id>.json` (atomically): the pipeline,
//! the command line, `--set` overrides, start and end, and per stage instance whether it
//! ran, came from the cache or failed, with its timing, key and artifact. `rst log` lists
//! them, newest first.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{iso_time, unix_now};
use crate::cache::store::{write_atomic, Store};
use crate::error::{Error, Result, UserError};
use crate::exec::scheduler::{Outcome, RunResult, Span};
use crate::spec::Pipeline;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRun {
    pub instance: String,
    pub stage: String,
    pub kind: String,
    /// ran | cached | reused | failed | skipped | not_run
    pub outcome: String,
    pub key: Option<String>,
    pub artifact: Option<String>,
    /// Wall time of a stage that ran.
    pub secs: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// The GPUs leased to it when it ran here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<String>,
    /// When it was answered from the cache or ran, and in which slot or cluster job
    /// (absent in records written before rst kept it, and for what never ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span: Option<Span>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counts {
    pub ran: usize,
    pub cached: usize,
    pub failed: usize,
    pub not_run: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub pipeline: String,
    /// The pipeline file as given.
    pub file: PathBuf,
    pub project_dir: PathBuf,
    pub argv: Vec<String>,
    pub set: Vec<String>,
    pub started_unix: f64,
    pub ended_unix: f64,
    pub host: String,
    pub rst_version: String,
    pub rst_git_commit: Option<String>,
    /// ok | failed | interrupted
    pub status: String,
    pub counts: Counts,
    pub stages: Vec<StageRun>,
    /// The pipeline parameters the run used (after `--set`); empty in records written
    /// before rst kept them.
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, serde_json::Value>,
}

impl RunRecord {
    /// Whether this is a run of `p`'s file: its `name:`, and the file stem its results go
    /// under (two copies of a file with one `name:` publish into two folders).
    pub fn is_of(&self, p: &Pipeline) -> bool {
        self.pipeline == p.name && self.file.file_stem() == p.file.file_stem()
    }
}

fn runs_dir(store: &Store) -> PathBuf {
    store.root().join("runs")
}

/// A new run id: the UTC start time (so ids sort by time), then a few random hex digits.
fn new_id(started: f64) -> String {
    let t = iso_time(started).replace(['-', ':'], "");
    let salt = blake3::hash(format!("{started}\0{}", std::process::id()).as_bytes()).to_hex();
    format!("{}-{}", t.trim_end_matches('Z'), &salt[..6])
}

/// Builds the record of a finished (or failed, or interrupted) run.
pub fn record(
    p: &Pipeline,
    set: &[String],
    started_unix: f64,
    r: &RunResult,
    log_of: &dyn Fn(&str) -> PathBuf,
) -> RunRecord {
    let mut counts = Counts::default();
    let stages = p
        .instances
        .iter()
        .zip(&r.outcomes)
        .zip(&r.keys)
        .zip(&r.gpus)
        .zip(&r.spans)
        .map(|((((inst, o), key), gpus), span)| {
            let (outcome, secs, error, log) = match o {
                Outcome::Ran { secs, .. } => ("ran", Some(*secs), None, None),
                Outcome::Cached { .. } => ("cached", None, None, None),
                Outcome::Fetched { .. } => ("fetched", None, None, None),
                Outcome::Reused { .. } => ("reused", None, None, None),
                Outcome::Failed { error, log } => {
                    ("failed", None, Some(error.message.clone()), log.clone())
                }
                Outcome::Skipped { cause } => {
                    ("skipped", None, Some(format!("input {cause} failed")), None)
                }
                Outcome::NotRun => ("not_run", None, None, None),
            };
            match outcome {
                "ran" => counts.ran += 1,
                "cached" | "reused" | "fetched" => counts.cached += 1,
                "failed" => counts.failed += 1,
                _ => counts.not_run += 1,
            }
            let log = log.or_else(|| {
                (outcome == "ran")
                    .then(|| key.as_deref().map(|k| log_of(k).display().to_string()))
                    .flatten()
            });
            StageRun {
                instance: inst.name.clone(),
                stage: p.stages[inst.stage].name.clone(),
                kind: p.stages[inst.stage].kind.name().to_string(),
                outcome: outcome.to_string(),
                key: key.clone(),
                artifact: o.artifact().map(str::to_string),
                secs,
                error,
                log,
                gpus: if matches!(outcome, "ran" | "failed") {
                    gpus.clone()
                } else {
                    Vec::new()
                },
                span: span.clone(),
            }
        })
        .collect();
    RunRecord {
        id: new_id(started_unix),
        pipeline: p.name.clone(),
        file: p.file.clone(),
        project_dir: p.project_dir.clone(),
        // args_os: `std::env::args` panics on an argument that is not UTF-8.
        argv: std::env::args_os()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        set: set.to_vec(),
        started_unix,
        ended_unix: unix_now(),
        host: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default(),
        rst_version: env!("CARGO_PKG_VERSION").to_string(),
        rst_git_commit: option_env!("RST_GIT_COMMIT").map(str::to_string),
        status: if r.interrupted {
            "interrupted"
        } else if counts.failed > 0 {
            "failed"
        } else {
            "ok"
        }
        .to_string(),
        counts,
        stages,
        params: p.params.clone(),
    }
}

/// Writes the record into `cache/runs/<id>.json`; returns the id. Durably (fsync), unless
/// the run changed nothing (every stage cached): losing that record in a machine crash
/// loses no result and no provenance of one, and its two fsyncs were a twentieth of a
/// no-op run of 1,013 stages.
pub fn write(store: &Store, rec: &RunRecord) -> Result<String> {
    let dir = runs_dir(store);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io_path("cannot create", &dir, e))?;
    let path = dir.join(format!("{}.json", rec.id));
    // Compact: a record has a line per instance's worth of fields, and a no-op run of a
    // large sweep writes one too (`rst log ID --json` shows it pretty).
    let bytes = serde_json::to_string(rec).expect("serialises") + "\n";
    let changed_nothing = rec.stages.iter().all(|s| s.outcome == "cached");
    if changed_nothing {
        crate::cache::store::write_replace(&path, bytes.as_bytes())?;
    } else {
        write_atomic(&path, bytes.as_bytes())?;
    }
    Ok(rec.id.clone())
}

/// All run records, newest first (unreadable files are skipped).
pub fn all(store: &Store) -> Vec<RunRecord> {
    let mut v: Vec<RunRecord> = std::fs::read_dir(runs_dir(store))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort_by(|a: &RunRecord, b| {
        b.started_unix
            .total_cmp(&a.started_unix)
            .then(b.id.cmp(&a.id))
    });
    v
}

/// One run in full (`rst log RUN_ID`).
pub fn show(r: &RunRecord) -> String {
    let mut out = format!(
        "run {}\n  pipeline  {} ({})\n  command   {}\n",
        r.id,
        r.pipeline,
        r.file.display(),
        r.argv.join(" ")
    );
    if !r.set.is_empty() {
        out.push_str(&format!("  set       {}\n", r.set.join(" ")));
    }
    out.push_str(&format!(
        "  started   {}\n  ended     {} ({:.2}s)\n  host      {}\n  rst       {}{}\n  status    {}: {} ran, {} cached, {} failed, {} not run\n\n",
        iso_time(r.started_unix),
        iso_time(r.ended_unix),
        r.ended_unix - r.started_unix,
        r.host,
        r.rst_version,
        r.rst_git_commit.as_deref().map(|c| format!(" ({c})")).unwrap_or_default(),
        r.status,
        r.counts.ran,
        r.counts.cached,
        r.counts.failed,
        r.counts.not_run
    ));
    let width = r.stages.iter().map(|s| s.instance.len()).max().unwrap_or(0);
    for s in &r.stages {
        out.push_str(&format!(
            "  {:<8} {:<width$}  {:>8}  key {}{}\n",
            s.outcome,
            s.instance,
            s.secs.map(|t| format!("{t:.2}s")).unwrap_or_default(),
            s.key
                .as_deref()
                .map(|k| &k[..12.min(k.len())])
                .unwrap_or("-"),
            s.error
                .as_deref()
                .map(|e| format!("  {e}"))
                .unwrap_or_default()
        ));
    }
    out
}

/// The one run among `runs` whose id starts with `id`.
pub fn find<'a>(runs: &'a [RunRecord], id: &str, dir: &Path) -> Result<&'a RunRecord> {
    let found: Vec<&RunRecord> = runs.iter().filter(|r| r.id.starts_with(id)).collect();
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(
            UserError::new(format!("no run `{id}` in {}", dir.display()))
                .help("`rst log` lists the runs and their ids")
                .into(),
        ),
        many => Err(UserError::new(format!(
            "`{id}` names {} runs: {}",
            many.len(),
            many.iter()
                .map(|r| r.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .help("give more of the id")
        .into()),
    }
}

/// One line of `rst log`'s list.
pub fn list_line(r: &RunRecord) -> String {
    format!(
        "{}  {}  {:<12} {:>8.2}s  {:<11} {} ran, {} cached, {} failed{}",
        r.id,
        iso_time(r.started_unix),
        r.pipeline,
        r.ended_unix - r.started_unix,
        r.status,
        r.counts.ran,
        r.counts.cached,
        r.counts.failed,
        if r.set.is_empty() {
            String::new()
        } else {
            format!("  --set {}", r.set.join(" --set "))
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_start_time() {
        let a = new_id(1_795_909_521.0);
        let b = new_id(1_795_909_522.0);
        assert!(a.starts_with("20261128T234521-"), "{a}");
        assert!(a < b);
    }
}
