//! `rst audit`: recompute cached stages in a scratch cache and compare each fresh artifact
//! with the cached one.
//!
//! The phases, each in its own file, with what flows between them:
//! 1. [`plan`]: the options are checked and the instances chosen (`--stage`, `--sample`;
//!    all must be cached) → [`plan::Chosen`];
//! 2. [`recompute`]: per chosen instance a scratch cache whose inputs link to the main
//!    cache's objects (and the base datasets views name), and the cached entry's own job
//!    (same key record, same params, the thread count it recorded) → [`recompute::Planned`];
//!    the local executor runs them → [`recompute::Recomputed`];
//! 3. [`compare`]: fresh against cached artifact → a [`compare::Comparison`] and a
//!    [`Verdict`]: `bit-identical` (same digest), `within tolerance` (differs, but every
//!    accuracy compared moved by at most `--tolerance` points), `differs`, `cache corrupt`
//!    (the cached artifact no longer matches the digest it was stored under: modified after
//!    the fact; `rst verify` quarantines it), `failed` (the stage did not run);
//! 4. [`report`]: a [`report::StageAudit`] per stage, gathered into a [`Report`]
//!    (`audit.md`, `audit.json`).
pub mod compare;
pub mod plan;
pub mod recompute;
pub mod report;

use std::path::Path;

pub use compare::Verdict;
pub use report::{Report, StageAudit};

use crate::cache::store::Store;
use crate::error::{Error, Result};
use crate::exec::local::LocalExecutor;
use crate::exec::Cancel;
use crate::provenance::{iso_time, unix_now};
use crate::spec::Pipeline;
use recompute::{Planned, Recomputed};

/// `rst audit`'s flags.
#[derive(Debug, Clone, Default)]
pub struct AuditOptions {
    /// Only instances (or stages) matching this pattern (`*`, `?`).
    pub stage: Option<String>,
    /// A random sample of this many of the chosen instances.
    pub sample: Option<usize>,
    /// The seed of the sample.
    pub seed: u64,
    /// Thread budget [default: the machine's, see `project::thread_budget`].
    pub jobs: Option<usize>,
    /// Accuracy points a recomputation may move by and still pass.
    pub tolerance: Option<f64>,
}

/// Audits `p` (loaded from `file`, as the user named it) against `store`; the report says
/// whether every stage met its standard.
pub fn audit(p: &Pipeline, store: &Store, file: &Path, opts: &AuditOptions) -> Result<Report> {
    let started = unix_now();
    opts.validate()?;
    let lines = crate::status::status_lines(p, store)?;
    let chosen = plan::choose(p, &lines, opts, file)?;
    let jobs = opts.jobs.unwrap_or_else(crate::project::thread_budget);
    let work = recompute::prepare(p, store, &chosen, jobs)?;
    let executor =
        LocalExecutor::new().map_err(|e| Error::io("cannot find the rst executable", e))?;
    let cancel = Cancel::default();
    {
        let cancel = cancel.clone();
        let kill = executor.killer();
        let _ = ctrlc::set_handler(move || {
            cancel.cancel();
            kill();
        });
    }
    eprintln!(
        "auditing {} of {} stage instances of {} in a scratch cache",
        work.len(),
        p.instances.len(),
        p.name
    );
    let results = recompute::run_all(&work, jobs, |w| {
        let fresh = recompute::recompute(w, &executor, &cancel);
        judge(p, w, fresh, store, opts.tolerance)
    });
    if cancel.is_cancelled() {
        return Err(Error::Interrupted);
    }
    Ok(Report::new(p, file, started, opts, results))
}

/// Compares what `w`'s recomputation gave with its cache entry.
fn judge(
    p: &Pipeline,
    w: &Planned,
    r: Recomputed,
    main: &Store,
    tolerance: Option<f64>,
) -> StageAudit {
    let Recomputed {
        fresh,
        secs,
        mut notes,
    } = r;
    let cached_dir = main.object_path(&w.entry.artifact);
    let comparison = match &fresh {
        Some(f) if *f != w.entry.artifact || w.corrupt => {
            compare::compare(&cached_dir, &w.scratch.store.object_path(f))
        }
        _ => compare::Comparison::default(),
    };
    if w.corrupt {
        notes.push(format!(
            "the cached artifact no longer matches its digest {}: it was modified after rst stored it{}; `rst verify` quarantines it",
            &w.entry.artifact[..12.min(w.entry.artifact.len())],
            if fresh.as_deref() == Some(w.entry.artifact.as_str()) {
                " (the recomputation reproduces the recorded digest)"
            } else {
                ""
            }
        ));
    }
    let v = compare::verdict(
        &w.entry.artifact,
        fresh.as_deref(),
        w.corrupt,
        &comparison,
        tolerance,
    );
    let inst = &p.instances[w.instance];
    eprintln!("{:<8} {} ({secs:.2}s): {v}", "audited", inst.name);
    StageAudit {
        instance: inst.name.clone(),
        stage: p.stages[inst.stage].name.clone(),
        kind: w.entry.record.kind.clone(),
        key: w.job.key.clone(),
        cached_artifact: w.entry.artifact.clone(),
        fresh_artifact: fresh,
        verdict: v,
        threads: w.job.threads,
        secs,
        comparison,
        notes,
    }
}

impl Report {
    /// The report of an audit of `p` begun at `started` (seconds since the epoch).
    fn new(
        p: &Pipeline,
        file: &Path,
        started: f64,
        opts: &AuditOptions,
        results: Vec<StageAudit>,
    ) -> Report {
        Report {
            pipeline: p.name.clone(),
            file: file.to_path_buf(),
            started: iso_time(started),
            ended: iso_time(unix_now()),
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default(),
            rst_version: env!("CARGO_PKG_VERSION").to_string(),
            stage_pattern: opts.stage.clone(),
            sample: opts.sample,
            seed: opts.seed,
            tolerance_points: opts.tolerance,
            audited: results.len(),
            passed: results.iter().all(StageAudit::passed),
            counts: report::count(&results),
            stages: results,
        }
    }
}
