//! `rst run FILE`: stages in dependency order, independent ones in parallel, cached ones
//! skipped; then the run record, publishing to `results/`, and the tables printed.
//!
//! Phases: [`prepare`] (pipeline, store, disk room, executor), [`execute`] (the scheduler
//! under a Ctrl-C handler), [`record`] (summary and run record), [`finish`] (failures to
//! an exit code, publishing, tables).
use std::process::ExitCode;

use crate::cache::durable::{recover_crashed, LazyBatch, DEFERRED_ENV};
use crate::cache::store::Store;
use crate::cli::{ExecArgs, ExecutorKind, PipelineArgs};
use crate::error::{Error, Result, UserError};
use crate::exec::gpus::GpuSource;
use crate::exec::local::LocalExecutor;
use crate::exec::progress;
use crate::exec::scheduler::{self, Outcome, RunOptions, RunResult};
use crate::exec::slurm::{self, SlurmExecutor, SlurmOptions};
use crate::exec::{Cancel, Executor, Job, JobError, JobFile, WorkerEvent};
use crate::project::{cache_dir, open_store};
use crate::provenance::runlog::RunRecord;
use crate::spec::Pipeline;

/// `run`'s own flags (besides the pipeline and the executor's).
pub struct RunFlags {
    /// Stages, instances or slices to run (with what they need); empty: all.
    pub targets: Vec<String>,
    pub jobs: Option<usize>,
    pub force: Vec<String>,
    pub keep_going: bool,
    pub accept_new_checksums: bool,
    /// Publish over results of a run with other `--set` overrides.
    pub replace_results: bool,
    /// The remote cache (`--remote`, `--remote-read-only`, `--no-remote`).
    pub remote: crate::remote::Flags,
}

pub fn run(args: &PipelineArgs, flags: &RunFlags, exec: &ExecArgs) -> Result<ExitCode> {
    let started_unix = crate::provenance::unix_now();
    let (prepared, backend) = prepare(args, flags, exec)?;
    let Prepared {
        mut pipeline,
        store,
    } = prepared;
    let Backend { executor, kill } = backend;
    // Checked before anything runs: a bad URL, bucket or credentials is exit 2 now.
    let remote = super::open_remote(&flags.remote)?.map(std::sync::Arc::new);
    let cancel = on_interrupt(kill);
    // Local stages publish without fsync; one syncfs at the commit makes them durable
    // before the run record says they ran (the rule: `cache::store`'s module doc). The
    // batch opens with the first job: a run where all is cached writes no journal.
    let batch = (exec.executor == ExecutorKind::Local).then(|| LazyBatch::new(&store));
    let batched = batch.as_ref().map(|batch| Batched {
        inner: executor.as_ref(),
        batch,
    });
    let executor_ref: &dyn Executor = match &batched {
        Some(b) => b,
        None => executor.as_ref(),
    };
    // The devices, found once when a stage first starts (a no-op run asks no driver).
    let gpus = (exec.executor == ExecutorKind::Local)
        .then(|| std::sync::Arc::new(GpuSource::new(exec.gpus.clone())));
    let on = On {
        store: &store,
        executor: executor_ref,
        flags,
        exec,
        cancel: &cancel,
        gpus: gpus.as_ref(),
        shared: remote
            .clone()
            .map(|r| r as std::sync::Arc<dyn crate::cache::shared::SharedCache>),
    };
    let result = if crate::study::has_studies(&pipeline) {
        drive_studies(args, &on, &mut pipeline)
    } else {
        execute_on(&pipeline, flags.force.clone(), &on)
    };
    // The executor ends here (a Slurm monitor is joined) before anything is published.
    drop(executor);
    let abandoned = remote
        .as_ref()
        .is_some_and(|remote| finish_remote(remote, &|| cancel.is_cancelled()));
    if let Some(batch) = batch {
        batch.commit()?;
    }
    let prepared = Prepared { pipeline, store };
    if result.as_ref().map_or(true, |r| {
        r.interrupted || !r.outcomes.iter().all(ended_well)
    }) {
        // A failed or interrupted stage may have left a staging dir or a temp file.
        crate::cache::leftovers::mark_sweep_due(prepared.store.root());
    }
    let result = result?;
    let rec = record(&prepared, &args.set, started_unix, &result);
    if abandoned {
        // Ctrl-C while uploading: the stages are done and recorded, the run is not.
        return Err(Error::Interrupted);
    }
    finish(&prepared, &result, &rec)
}

/// Where and how the stages of a run execute (every round of a study the same).
struct On<'a> {
    store: &'a Store,
    executor: &'a dyn Executor,
    flags: &'a RunFlags,
    exec: &'a ExecArgs,
    cancel: &'a Cancel,
    /// The local executor's GPUs; None on Slurm.
    gpus: Option<&'a std::sync::Arc<GpuSource>>,
    /// The remote cache, if one is set.
    shared: Option<std::sync::Arc<dyn crate::cache::shared::SharedCache>>,
}

/// Waits for the run's uploads (abandons them on Ctrl-C: what was not complete is not
/// visible on the remote) and says what moved; a failed upload is a warning, since the
/// results are in the local cache (`rst push FILE` sends them later). True when uploads
/// were abandoned.
fn finish_remote(remote: &crate::remote::Remote, cancelled: &dyn Fn() -> bool) -> bool {
    if !cancelled() && remote.uploads_in_flight() > 0 {
        eprintln!(
            "remote {}: finishing {} upload(s)…",
            remote.url(),
            remote.uploads_in_flight()
        );
    }
    let (failures, abandoned) = remote.finish_uploads(cancelled);
    if let Some(line) = remote.summary() {
        eprintln!("{line}");
    }
    if abandoned > 0 {
        eprintln!(
            "interrupted: {abandoned} upload(s) to {} abandoned (nothing partial is visible there; `rst push FILE` sends them)",
            remote.url()
        );
    }
    if !failures.is_empty() {
        eprintln!(
            "warning: {} upload{} to {} failed (the results are in the local cache; `rst push FILE` sends them later):",
            failures.len(),
            if failures.len() == 1 { "" } else { "s" },
            remote.url()
        );
        for f in failures.iter().take(10) {
            eprintln!("  {f}");
        }
        if failures.len() > 10 {
            eprintln!("  … and {} more", failures.len() - 10);
        }
    }
    abandoned > 0
}

/// Runs the studies round by round (`crate::study`), then the whole pipeline with every
/// trial; `pipeline` becomes the pipeline the result is of.
fn drive_studies(args: &PipelineArgs, on: &On<'_>, pipeline: &mut Pipeline) -> Result<RunResult> {
    let (store, flags) = (on.store, on.flags);
    let started = std::time::Instant::now();
    if let Some(gpus) = on.gpus {
        // A round runs only its trials and what they need: the stages after the study
        // are checked against the devices now, before the first round starts.
        gpus.check(pipeline)?;
    }
    crate::study::check_force(pipeline, &flags.force)?;
    let mut forced = crate::study::Forced::new(&flags.force);
    let first = pipeline.clone();
    let mut load = |known: &crate::study::Known| super::load_studied(args, known);
    let mut round = |p: &Pipeline| {
        let force = forced.round(p);
        execute_on(p, force, on)
    };
    let driven = crate::study::drive(&first, store, &mut load, &mut round)?;
    match driven {
        crate::study::Driven::Stopped {
            round, mut result, ..
        } => {
            result.wall_s = started.elapsed().as_secs_f64();
            *pipeline = *round;
            Ok(result)
        }
        crate::study::Driven::Done { known, ran } => {
            let p = super::load_studied(args, &known)?.select(&flags.targets)?;
            if let Some(i) = p.instances.iter().find(|i| i.best_pending) {
                return Err(crate::error::Error::Bug(format!(
                    "{} would run without its study's best values",
                    i.name
                )));
            }
            let force = forced.round(&p);
            let mut result = execute_on(&p, force, on)?;
            crate::study::merge_rounds(&p, &mut result, &ran);
            result.wall_s = started.elapsed().as_secs_f64();
            *pipeline = p;
            Ok(result)
        }
    }
}

fn ended_well(o: &Outcome) -> bool {
    matches!(
        o,
        Outcome::Cached { .. }
            | Outcome::Fetched { .. }
            | Outcome::Ran { .. }
            | Outcome::Reused { .. }
    )
}

/// What a run starts from: the loaded pipeline and the opened store.
struct Prepared {
    pipeline: Pipeline,
    store: Store,
}

/// Where the stages run, and what Ctrl-C calls to stop the running ones.
struct Backend {
    executor: Box<dyn Executor>,
    kill: Killer,
}

fn prepare(args: &PipelineArgs, flags: &RunFlags, exec: &ExecArgs) -> Result<(Prepared, Backend)> {
    let pipeline = super::load(args)?.select(&flags.targets)?;
    // Before anything runs: a one-off `--set` run must not silently replace the results.
    crate::publish::check_overrides(&pipeline, flags.replace_results)?;
    if flags.jobs == Some(0) {
        return Err(UserError::new("--jobs must be at least 1").into());
    }
    let store = open_store(&cache_dir(&args.cache_dir))?;
    // Before any lookup: after a power loss, entries whose objects were torn must miss.
    let killed = recover_crashed(&store)?;
    // What killed runs left behind (their pids are gone, their keys unlocked). A Slurm
    // run's workers leave no journal here: it sweeps every time.
    match exec.executor {
        ExecutorKind::Local => {
            crate::cache::leftovers::sweep_if_due(store.root(), killed);
        }
        ExecutorKind::Slurm => {
            crate::cache::leftovers::sweep(store.root(), false);
        }
    }
    check_room(&store)?;
    let backend = backend(exec, &store, &worker_env(flags))?;
    Ok((Prepared { pipeline, store }, backend))
}

/// Refuses to start on a disk with no room for even the job files (under 1 MiB free).
fn check_room(store: &Store) -> Result<()> {
    if let Some((free, _)) =
        crate::cache::space::free_space(store.root()).filter(|(free, _)| *free < 1 << 20)
    {
        return Err(UserError::new(format!(
            "the cache's file system ({}) is full: No space left on device ({free} bytes free)",
            store.root().display()
        ))
        .help("free space there (`rst gc FILE...` removes what no pipeline uses), or use --cache-dir on a larger disk")
        .into());
    }
    Ok(())
}

/// The environment the workers get on top of this process's: what `download` stages read
/// (set on each worker's command, so this process's environment is never changed; sbatch
/// passes it on to Slurm jobs).
fn worker_env(flags: &RunFlags) -> Vec<(String, String)> {
    if flags.accept_new_checksums {
        vec![(
            crate::stages::download::ACCEPT_NEW_CHECKSUMS_ENV.to_string(),
            "1".to_string(),
        )]
    } else {
        Vec::new()
    }
}

/// Ctrl-C cancels the run and stops the running stages (set once per process).
fn on_interrupt(kill: Killer) -> Cancel {
    let cancel = Cancel::default();
    let c = cancel.clone();
    let _ = ctrlc::set_handler(move || {
        if !c.is_cancelled() {
            eprintln!("\ninterrupted: stopping running stages (the cache stays consistent)");
        }
        c.cancel();
        kill();
    });
    cancel
}

/// Runs the scheduler on `p`, with a live view of its own.
fn execute_on(p: &Pipeline, force: Vec<String>, on: &On<'_>) -> Result<RunResult> {
    let (flags, exec) = (on.flags, on.exec);
    let opts = RunOptions {
        jobs: flags.jobs.unwrap_or_else(|| match exec.executor {
            // The cluster schedules: every ready stage is submitted.
            ExecutorKind::Slurm => 1 << 20,
            ExecutorKind::Local => crate::project::thread_budget(),
        }),
        force,
        keep_going: flags.keep_going,
        gpus: on.gpus.cloned(),
        shared: on.shared.clone(),
    };
    // The ETA's durations: each instance's last entry of this pipeline, read when it starts.
    let store = on.store;
    let earlier =
        Box::new(move |instance: &str| store.last_entry(&p.name, instance).map(|e| e.duration_s));
    let reporter = progress::reporter(p.instances.len(), earlier);
    let result = scheduler::run(
        p,
        on.store,
        on.executor,
        &opts,
        reporter.as_ref(),
        on.cancel,
    );
    reporter.finish();
    result
}

/// The executor with the run's [`LazyBatch`] opened before its first job starts.
struct Batched<'a> {
    inner: &'a dyn Executor,
    batch: &'a LazyBatch<'a>,
}

impl Executor for Batched<'_> {
    fn run_job(
        &self,
        job_file: &JobFile<'_>,
        job: &Job,
        cancel: &Cancel,
        on_event: &mut (dyn FnMut(WorkerEvent) + Send),
    ) -> std::result::Result<(), JobError> {
        self.batch.ensure().map_err(JobError::Journal)?;
        self.inner.run_job(job_file, job, cancel, on_event)
    }
}

/// Prints the summary and writes the run record (a failure to write it is a warning: the
/// stages' results are in the cache either way).
fn record(prepared: &Prepared, set: &[String], started_unix: f64, result: &RunResult) -> RunRecord {
    let (p, store) = (&prepared.pipeline, &prepared.store);
    print_summary(p, result);
    let rec =
        crate::provenance::runlog::record(p, set, started_unix, result, &|k| store.log_path(k));
    if let Err(e) = crate::provenance::runlog::write(store, &rec) {
        eprintln!(
            "warning: cannot write the run record: {}",
            crate::error::chain(&e)
        );
    }
    rec
}

/// Failed or interrupted: the error that says so; else publishes, writes the report and
/// prints the tables.
fn finish(prepared: &Prepared, result: &RunResult, rec: &RunRecord) -> Result<ExitCode> {
    let (p, store) = (&prepared.pipeline, &prepared.store);
    let failed: Vec<&Outcome> = result
        .outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Failed { .. }))
        .collect();
    if result.interrupted {
        return Err(Error::Interrupted);
    }
    if !failed.is_empty() {
        let user_caused = failed
            .iter()
            .all(|o| matches!(o, Outcome::Failed { error, .. } if error.user));
        return Err(Error::StagesFailed {
            failed: failed.len(),
            user_caused,
        });
    }
    let published = crate::publish::publish(p, store, result)?;
    write_report(p, store, result, rec, published);
    print_studies(p, store, result);
    print_tables(p, store, result);
    Ok(ExitCode::SUCCESS)
}

/// `results/<stem>/report.html`, from a run that published: rewritten unless the run
/// changed nothing (all cached, nothing published anew, the report there), so that the
/// report keeps describing the run that made the results. A failure is a warning: the
/// results are published either way.
fn write_report(
    p: &Pipeline,
    store: &Store,
    result: &RunResult,
    rec: &RunRecord,
    published: crate::publish::Outcome,
) {
    use crate::publish::Outcome as Published;
    let path = crate::html::default_path(p);
    let computed = result
        .outcomes
        .iter()
        .any(|o| matches!(o, Outcome::Ran { .. } | Outcome::Reused { .. }));
    match published {
        Published::Nothing => return,
        Published::Unchanged if !computed && path.is_file() => return,
        _ => {}
    }
    match crate::html::write(p, store, rec, &path, &[]) {
        Ok(_) => println!(
            "report: {}",
            path.strip_prefix(&p.project_dir).unwrap_or(&path).display()
        ),
        Err(e) => eprintln!(
            "warning: cannot write {}: {}",
            path.display(),
            crate::error::chain(&e)
        ),
    }
}

/// One line per study: its trials and the best one.
fn print_studies(p: &Pipeline, store: &Store, result: &RunResult) {
    for (inst, outcome) in p.instances.iter().zip(&result.outcomes) {
        if p.stages[inst.stage].kind.name() != "search" {
            continue;
        }
        let Some(dir) = outcome.artifact().map(|a| store.object_path(a)) else {
            continue;
        };
        let read = |f: &str| -> Option<serde_json::Value> {
            let bytes = crate::cache::digest::read_regular(&dir.join(f)).ok()?;
            serde_json::from_slice(&bytes).ok()
        };
        let (Some(best), Some(trials)) = (read("best.json"), read("trials.json")) else {
            continue;
        };
        let values: Vec<String> = best["params"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", crate::spec::interp::display(v)))
                    .collect()
            })
            .unwrap_or_default();
        println!(
            "{}: {} trials, best #{} = {} ({})",
            inst.name,
            trials.as_array().map_or(0, Vec::len),
            best["number"],
            best["value"],
            values.join(", ")
        );
    }
}

/// The tables aggregate stages rendered, as the last thing printed.
fn print_tables(p: &Pipeline, store: &Store, result: &RunResult) {
    for (inst, outcome) in p.instances.iter().zip(&result.outcomes) {
        // Only aggregate stages write tables: no probe of 1,000 command artifacts.
        if p.stages[inst.stage].kind.name() != "aggregate" {
            continue;
        }
        let table = outcome
            .artifact()
            .map(|a| store.object_path(a).join("table.md"));
        // Read only if a regular file: a FIFO planted in the cache must not hang the run.
        if let Some(text) = table
            .and_then(|t| crate::cache::digest::read_regular(&t).ok())
            .and_then(|b| String::from_utf8(b).ok())
        {
            println!("\n{}:\n\n{}", inst.name, text.trim_end());
        }
    }
}

type Killer = Box<dyn Fn() + Send + 'static>;

/// The executor `--executor` names (its workers get `env`), and its killer.
fn backend(exec: &ExecArgs, store: &Store, env: &[(String, String)]) -> Result<Backend> {
    if exec.executor == ExecutorKind::Local {
        if let Some(flag) = [
            exec.partition.as_ref().map(|_| "--partition"),
            exec.account.as_ref().map(|_| "--account"),
            exec.slurm_opt.first().map(|_| "--slurm-opt"),
            exec.slurm_bundle.map(|_| "--slurm-bundle"),
        ]
        .into_iter()
        .flatten()
        .next()
        {
            return Err(UserError::new(format!("{flag} needs --executor slurm")).into());
        }
        // The workers run on this host: this run's batch commit covers their publishes.
        let e = LocalExecutor::new()
            .map_err(|e| Error::io("cannot find the rst executable", e))?
            .with_env(env)
            .with_env(&[(DEFERRED_ENV.to_string(), "1".to_string())]);
        let kill = Box::new(e.killer());
        return Ok(Backend {
            executor: Box::new(e),
            kill,
        });
    }
    if exec.gpus.is_some() {
        return Err(UserError::new("--gpus needs --executor local")
            .help("on Slurm, a stage asks for GPUs with `resources: {gpus: N}` (--gres=gpu:N) and the cluster binds them")
            .into());
    }
    let opts = SlurmOptions {
        partition: exec.partition.clone(),
        account: exec.account.clone(),
        extra: exec
            .slurm_opt
            .iter()
            .map(|s| slurm::parse_slurm_opt(s))
            .collect::<std::result::Result<_, _>>()?,
        bundle: match exec.slurm_bundle {
            Some(0) => return Err(UserError::new("--slurm-bundle must be at least 1").into()),
            Some(n) => n,
            None => 1,
        },
        worker_env: env.to_vec(),
    };
    let e = SlurmExecutor::new(store.root(), opts)?;
    let kill = Box::new(e.killer());
    Ok(Backend {
        executor: Box::new(e),
        kill,
    })
}

fn print_summary(p: &Pipeline, r: &RunResult) {
    let count = |f: fn(&Outcome) -> bool| r.outcomes.iter().filter(|o| f(o)).count();
    let ran = count(|o| matches!(o, Outcome::Ran { .. }));
    let cached = count(|o| matches!(o, Outcome::Cached { .. } | Outcome::Reused { .. }));
    let fetched = count(|o| matches!(o, Outcome::Fetched { .. }));
    let failed = count(|o| matches!(o, Outcome::Failed { .. }));
    let skipped = count(|o| matches!(o, Outcome::Skipped { .. } | Outcome::NotRun));
    let mut ran_list: Vec<(f64, &str)> = r
        .outcomes
        .iter()
        .zip(&p.instances)
        .filter_map(|(o, i)| match o {
            Outcome::Ran { secs, .. } => Some((*secs, i.name.as_str())),
            _ => None,
        })
        .collect();
    ran_list.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (secs, name) in ran_list.iter().take(10) {
        eprintln!("  ran {name} in {secs:.2}s");
    }
    if ran_list.len() > 10 {
        eprintln!("  ... and {} more", ran_list.len() - 10);
    }
    for (o, i) in r.outcomes.iter().zip(&p.instances) {
        if let Outcome::Failed { error, log } = o {
            eprintln!("  FAILED {}: {}", i.name, error.message);
            if let Some(log) = log {
                eprintln!("         log: {log}");
            }
        }
    }
    let fetched = match fetched {
        0 => String::new(),
        n => format!(", {n} fetched from the remote"),
    };
    eprintln!(
        "{}: {} stages: {ran} ran, {cached} cached{fetched}, {failed} failed, {skipped} not run ({:.2}s)",
        p.name,
        p.instances.len(),
        r.wall_s
    );
}
