//! What each subcommand does (main.rs only parses and maps errors to exit codes).
use std::collections::HashSet;
use std::path::PathBuf;

use crate::cache::store::{self, remove_tree, Store};
use crate::cli::{ExecArgs, ExecutorKind, GraphFormat, PipelineArgs};
use crate::error::{Error, Result, UserError};
use crate::exec::local::LocalExecutor;
use crate::exec::progress;
use crate::exec::scheduler::{self, Outcome, RunOptions};
use crate::exec::slurm::{self, SlurmExecutor, SlurmOptions};
use crate::exec::{Cancel, Executor};
use crate::human::human_bytes;
use crate::project;
use crate::project::{cache_dir, open_store};
use crate::spec::Pipeline;
use crate::status::status_lines;

pub fn load(args: &PipelineArgs) -> Result<Pipeline> {
    let opts = crate::spec::Options {
        max_instances: args.max_instances,
    };
    project::load_with(&args.file, &args.set, &opts)
}

pub fn check(args: &PipelineArgs) -> Result<()> {
    let p = load(args)?;
    println!(
        "{}: ok ({} stages, {} instances)",
        args.file.display(),
        p.stages.len(),
        p.instances.len()
    );
    Ok(())
}

pub fn graph(args: &PipelineArgs, targets: &[String], format: GraphFormat) -> Result<()> {
    let p = load(args)?.select(targets)?;
    print!(
        "{}",
        match format {
            GraphFormat::Dot => crate::graph::to_dot(&p),
            GraphFormat::Mermaid => crate::graph::to_mermaid(&p),
        }
    );
    Ok(())
}

pub fn run(
    args: &PipelineArgs,
    targets: &[String],
    jobs: Option<usize>,
    force: Vec<String>,
    keep_going: bool,
    exec: &ExecArgs,
) -> Result<()> {
    let started_unix = crate::provenance::unix_now();
    let p = load(args)?.select(targets)?;
    if jobs == Some(0) {
        return Err(UserError::new("--jobs must be at least 1").into());
    }
    let store = open_store(&cache_dir(&args.cache_dir))?;
    // What killed runs left behind (their pids are gone, their keys unlocked).
    crate::cache::leftovers::sweep(store.root(), false);
    // Refuse to start on a disk with no room for even the job files (under 1 MiB free).
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
    let (executor, kill) = executor(exec, &store)?;
    let cancel = Cancel::default();
    {
        let cancel = cancel.clone();
        let _ = ctrlc::set_handler(move || {
            if !cancel.is_cancelled() {
                eprintln!("\ninterrupted: stopping running stages (the cache stays consistent)");
            }
            cancel.cancel();
            kill();
        });
    }
    let opts = RunOptions {
        jobs: jobs.unwrap_or_else(|| match exec.executor {
            // The cluster schedules: every ready stage is submitted.
            ExecutorKind::Slurm => 1 << 20,
            ExecutorKind::Local => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        }),
        force,
        keep_going,
    };
    let reporter = progress::reporter(p.instances.len());
    let result = scheduler::run(
        &p,
        &store,
        executor.as_ref(),
        &opts,
        reporter.as_ref(),
        &cancel,
    );
    drop(executor);
    reporter.finish();
    let result = result?;
    print_summary(&p, &result);
    let rec = crate::provenance::runlog::record(&p, &args.set, started_unix, &result, &|k| {
        store.log_path(k)
    });
    if let Err(e) = crate::provenance::runlog::write(&store, &rec) {
        eprintln!("warning: cannot write the run record: {e}");
    }
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
    crate::publish::publish(&p, &store, &result)?;
    // The tables aggregate stages rendered, as the last thing printed.
    for (inst, outcome) in p.instances.iter().zip(&result.outcomes) {
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
    Ok(())
}

type Killer = Box<dyn Fn() + Send + 'static>;

/// The executor `--executor` names, and what Ctrl-C calls to stop its running stages.
fn executor(exec: &ExecArgs, store: &Store) -> Result<(Box<dyn Executor>, Killer)> {
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
        let e = LocalExecutor::new().map_err(|e| Error::io("cannot find the rst executable", e))?;
        let kill = Box::new(e.killer());
        return Ok((Box::new(e), kill));
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
    };
    let e = SlurmExecutor::new(store.root(), opts)?;
    let kill = Box::new(e.killer());
    Ok((Box::new(e), kill))
}

fn print_summary(p: &Pipeline, r: &scheduler::RunResult) {
    let count = |f: fn(&Outcome) -> bool| r.outcomes.iter().filter(|o| f(o)).count();
    let ran = count(|o| matches!(o, Outcome::Ran { .. }));
    let cached = count(|o| matches!(o, Outcome::Cached { .. } | Outcome::Reused { .. }));
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
    eprintln!(
        "{}: {} stages: {ran} ran, {cached} cached, {failed} failed, {skipped} not run ({:.2}s)",
        p.name,
        p.instances.len(),
        r.wall_s
    );
}

pub fn status(args: &PipelineArgs, targets: &[String], json: bool) -> Result<()> {
    let p = load(args)?.select(targets)?;
    let store = open_store(&cache_dir(&args.cache_dir))?;
    let mut lines = status_lines(&p, &store)?;
    // Stages submitted to Slurm and still queued or running there.
    let jobs = slurm::outstanding(store.root());
    for l in lines.iter_mut().filter(|l| l.state != "cached") {
        if let Some((id, state)) = l.key.as_ref().and_then(|k| jobs.get(k)) {
            l.state = state.to_string();
            l.reasons.insert(0, format!("slurm {id}"));
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&lines).unwrap());
        return Ok(());
    }
    let width = lines.iter().map(|l| l.instance.len()).max().unwrap_or(0);
    for l in &lines {
        if l.reasons.is_empty() {
            println!("{:<6}  {:<width$}", l.state, l.instance);
        } else {
            println!(
                "{:<6}  {:<width$}  {}",
                l.state,
                l.instance,
                l.reasons.join("; ")
            );
        }
    }
    let stale = lines.iter().filter(|l| l.state != "cached").count();
    println!(
        "{} of {} stage instances cached, {stale} to run",
        lines.len() - stale,
        lines.len()
    );
    Ok(())
}

/// `rst verify` (see [`crate::verify`]).
pub fn verify(cache: &Option<PathBuf>) -> Result<bool> {
    crate::verify::verify(cache)
}

pub fn gc(files: &[PathBuf], set: &[String], cache: &Option<PathBuf>, dry_run: bool) -> Result<()> {
    let store = open_store(&cache_dir(cache))?;
    let mut keep_keys = HashSet::new();
    for f in files {
        let p = project::load(f, set)?;
        for l in status_lines(&p, &store)? {
            if l.state == "cached" {
                keep_keys.extend(l.key);
            }
        }
    }
    let (entries, bad) = store.all_entries();
    let mut keep_objects = HashSet::new();
    let mut freed = 0u64;
    let mut removed_entries = 0;
    for (path, e) in &entries {
        if keep_keys.contains(&e.key) {
            keep_objects.insert(e.artifact.clone());
            // Dataset views name their base artifact: keep it too.
            if let Ok(meta) = std::fs::read(
                store
                    .object_path(&e.artifact)
                    .join(crate::data::dataset::META_FILE),
            ) {
                if let Some(base) = serde_json::from_slice::<serde_json::Value>(&meta)
                    .ok()
                    .and_then(|m| m.get("base").and_then(|b| b.as_str()).map(str::to_string))
                {
                    keep_objects.insert(base);
                }
            }
        } else {
            removed_entries += 1;
            if !dry_run {
                let _ = std::fs::remove_file(path);
                let _ = std::fs::remove_file(store.log_path(&e.key));
            }
        }
    }
    for path in bad {
        if !dry_run {
            let _ = std::fs::remove_file(path);
        }
    }
    let mut removed_objects = 0;
    for (digest, path) in store.all_objects() {
        if !keep_objects.contains(&digest) {
            freed += store::dir_size(&path).0;
            removed_objects += 1;
            if !dry_run {
                let _ = remove_tree(&path);
            }
        }
    }
    // Leftovers of killed runs: staging dirs, job files, logs, temp files (see
    // cache::leftovers for what is safe to remove while other runs go on).
    let swept = crate::cache::leftovers::sweep(store.root(), dry_run);
    freed += swept.bytes;
    println!(
        "{}removed {removed_entries} entries and {removed_objects} artifacts{}, {} freed",
        if dry_run { "would have " } else { "" },
        match swept.items {
            0 => String::new(),
            n => format!(" (and {n} leftovers of killed runs)"),
        },
        human_bytes(freed)
    );
    Ok(())
}
