//! The scheduler: walks the DAG, answers cached stages at once, runs the rest on an
//! executor with at most `jobs` threads in use, and stops dependents of a failure.
use std::collections::VecDeque;
use std::sync::mpsc;
use std::time::Instant;

use super::plan::Planner;
use super::progress::{Report, Reporter};
use super::{Cancel, Executor, Job, WorkerEvent};
use crate::cache::key::KeyRecord;
use crate::cache::store::{write_atomic, Store};
use crate::error::{Error, UserError};
use crate::spec::Pipeline;
use crate::stages::StageError;

pub struct RunOptions {
    /// Thread budget (default: number of cores).
    pub jobs: usize,
    /// Stage or instance names to recompute even if cached.
    pub force: Vec<String>,
    pub keep_going: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Cached {
        artifact: String,
    },
    Ran {
        artifact: String,
        secs: f64,
    },
    /// Another rst process computed it while we waited for its lock.
    Reused {
        artifact: String,
    },
    Failed {
        error: StageError,
        log: Option<String>,
    },
    Skipped {
        cause: String,
    },
    NotRun,
}

impl Outcome {
    pub fn artifact(&self) -> Option<&str> {
        match self {
            Outcome::Cached { artifact }
            | Outcome::Ran { artifact, .. }
            | Outcome::Reused { artifact } => Some(artifact),
            _ => None,
        }
    }
}

pub struct RunResult {
    pub outcomes: Vec<Outcome>,
    pub keys: Vec<Option<String>>,
    pub interrupted: bool,
    pub wall_s: f64,
}

enum Msg {
    Event(usize, WorkerEvent),
    Exit(usize, Result<(), String>),
}

/// Checks `--force` names against the pipeline.
pub fn forced_set(p: &Pipeline, force: &[String]) -> Result<Vec<bool>, UserError> {
    let mut forced = vec![false; p.instances.len()];
    for f in force {
        let mut any = false;
        for inst in &p.instances {
            if inst.name == *f || p.stages[inst.stage].name == *f {
                forced[inst.id] = true;
                any = true;
            }
        }
        if !any {
            let names: Vec<&str> = p.stages.iter().map(|s| s.name.as_str()).collect();
            let mut u = UserError::new(format!(
                "--force {f}: no stage or instance of that name in {}",
                p.file.display()
            ));
            u.help = Some(match crate::error::did_you_mean(f, names.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("stages: {}", names.join(", ")),
            });
            return Err(u);
        }
    }
    Ok(forced)
}

pub fn run(
    p: &Pipeline,
    store: &Store,
    executor: &dyn Executor,
    opts: &RunOptions,
    reporter: &dyn Reporter,
    cancel: &Cancel,
) -> Result<RunResult, Error> {
    let t0 = Instant::now();
    let n = p.instances.len();
    let forced = forced_set(p, &opts.force)?;
    let planner = Planner::new(p);
    let jobs = opts.jobs.max(1);
    let mut outcomes: Vec<Option<Outcome>> = vec![None; n];
    let mut keys: Vec<Option<String>> = vec![None; n];
    let mut records: Vec<Option<KeyRecord>> = vec![None; n];
    let mut ready: VecDeque<usize> = VecDeque::new();
    let mut running = 0usize;
    let mut used_threads = 0usize;
    let mut stop_launching = false;
    let mut started = vec![Instant::now(); n];
    let jobs_dir = store.root().join("tmp").join("jobs");
    std::fs::create_dir_all(&jobs_dir)
        .map_err(|e| Error::io_path("cannot create", &jobs_dir, e))?;
    // Consumers of each instance, to find what becomes ready.
    let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut missing: Vec<usize> = vec![0; n];
    for inst in &p.instances {
        let mut ups: Vec<usize> = inst.inputs.values().flatten().copied().collect();
        ups.sort();
        ups.dedup();
        missing[inst.id] = ups.len();
        for u in ups {
            consumers[u].push(inst.id);
        }
    }
    let mut frontier: VecDeque<usize> = (0..n).filter(|&i| missing[i] == 0).collect();

    std::thread::scope(|scope| -> Result<(), Error> {
        let (tx, rx) = mpsc::channel::<Msg>();
        loop {
            // Resolve everything whose inputs are known: cache hit or ready to run.
            while let Some(i) = frontier.pop_front() {
                let inst = &p.instances[i];
                if let Some(cause) = inst
                    .inputs
                    .values()
                    .flatten()
                    .find(|&&u| outcomes[u].as_ref().and_then(Outcome::artifact).is_none())
                {
                    let cause_name = p.instances[*cause].name.clone();
                    reporter.report(Report::Skipped {
                        name: &inst.name,
                        cause: &cause_name,
                    });
                    outcomes[i] = Some(Outcome::Skipped { cause: cause_name });
                    release(i, &consumers, &mut missing, &mut frontier);
                    continue;
                }
                let record = planner.record(inst, &|u| {
                    outcomes[u]
                        .as_ref()
                        .and_then(Outcome::artifact)
                        .unwrap_or_default()
                        .to_string()
                })?;
                let key = record.key();
                if !forced[i] {
                    if let Some(entry) = store.entry(&key) {
                        let _ = store.set_ref(&p.name, &inst.name, &key);
                        reporter.report(Report::Cached(&inst.name));
                        outcomes[i] = Some(Outcome::Cached {
                            artifact: entry.artifact,
                        });
                        keys[i] = Some(key);
                        release(i, &consumers, &mut missing, &mut frontier);
                        continue;
                    }
                }
                keys[i] = Some(key);
                records[i] = Some(record);
                ready.push_back(i);
            }
            // Launch what fits in the thread budget.
            while !stop_launching && !cancel.is_cancelled() {
                let Some(pos) = ready.iter().position(|&i| {
                    running == 0 || used_threads + p.instances[i].threads.min(jobs) <= jobs
                }) else {
                    break;
                };
                let i = ready.remove(pos).unwrap();
                let inst = &p.instances[i];
                let key = keys[i].clone().unwrap();
                let record = records[i].take().unwrap();
                let job = Job {
                    cache_dir: store.root().to_path_buf(),
                    project_dir: p.project_dir.clone(),
                    pipeline: p.name.clone(),
                    instance: inst.name.clone(),
                    key: key.clone(),
                    kind: p.stages[inst.stage].kind.name().to_string(),
                    params: inst.params.clone(),
                    inputs: record.inputs.clone(),
                    record,
                    threads: inst.threads.min(jobs),
                    resources: inst.resources.clone(),
                };
                if forced[i] {
                    store.remove_entry(&key);
                }
                // Per instance: two instances may share a key (a cluster job reads its file later).
                let job_file = jobs_dir.join(format!("{key}.{}.{i}.json", std::process::id()));
                write_atomic(
                    &job_file,
                    &serde_json::to_vec_pretty(&job).expect("job serialises"),
                )
                .map_err(|e| Error::Internal(e.to_string()))?;
                running += 1;
                used_threads += job.threads;
                started[i] = Instant::now();
                let tx = tx.clone();
                scope.spawn(move || {
                    let tx2 = tx.clone();
                    let mut on_event = |ev: WorkerEvent| {
                        let _ = tx2.send(Msg::Event(i, ev));
                    };
                    let r = executor.run_job(&job_file, &job, cancel, &mut on_event);
                    let _ = std::fs::remove_file(&job_file);
                    let _ = tx.send(Msg::Exit(i, r));
                });
            }
            if running == 0 {
                break;
            }
            // Wait for events.
            let Ok(msg) = rx.recv() else { break };
            match msg {
                Msg::Event(i, ev) => {
                    let name = &p.instances[i].name;
                    match ev {
                        WorkerEvent::Queued { job } => reporter.report(Report::Queued(name, &job)),
                        WorkerEvent::LockWait => reporter.report(Report::LockWait(name)),
                        WorkerEvent::Started => reporter.report(Report::Started(name)),
                        WorkerEvent::Progress(pr) => reporter.report(Report::Progress(name, &pr)),
                        WorkerEvent::Done {
                            artifact, reused, ..
                        } => {
                            let secs = started[i].elapsed().as_secs_f64();
                            reporter.report(Report::Done { name, secs, reused });
                            outcomes[i] = Some(if reused {
                                Outcome::Reused { artifact }
                            } else {
                                Outcome::Ran { artifact, secs }
                            });
                        }
                        WorkerEvent::Failed(error) => {
                            reporter.report(Report::Failed {
                                name,
                                message: &error.message,
                            });
                            let log = keys[i]
                                .as_ref()
                                .map(|k| store.log_path(k).display().to_string());
                            outcomes[i] = Some(Outcome::Failed { error, log });
                        }
                    }
                }
                Msg::Exit(i, r) => {
                    running -= 1;
                    used_threads -= p.instances[i].threads.min(jobs);
                    if let Err(message) = r {
                        if outcomes[i].is_none() {
                            let error =
                                if cancel.is_cancelled() || message.starts_with("interrupted") {
                                    StageError::internal("interrupted")
                                } else {
                                    StageError::internal(message)
                                };
                            reporter.report(Report::Failed {
                                name: &p.instances[i].name,
                                message: &error.message,
                            });
                            outcomes[i] = Some(Outcome::Failed {
                                error,
                                log: keys[i]
                                    .as_ref()
                                    .map(|k| store.log_path(k).display().to_string()),
                            });
                        }
                    }
                    match &outcomes[i] {
                        Some(o) if o.artifact().is_some() => {
                            let _ = store.set_ref(
                                &p.name,
                                &p.instances[i].name,
                                keys[i].as_ref().unwrap(),
                            );
                        }
                        Some(_) => {
                            if !opts.keep_going {
                                stop_launching = true;
                            }
                        }
                        None => {
                            outcomes[i] = Some(Outcome::Failed {
                                error: StageError::internal("the worker reported no result"),
                                log: None,
                            });
                            stop_launching |= !opts.keep_going;
                        }
                    }
                    release(i, &consumers, &mut missing, &mut frontier);
                }
            }
        }
        Ok(())
    })?;
    let interrupted = cancel.is_cancelled();
    Ok(RunResult {
        outcomes: outcomes
            .into_iter()
            .map(|o| o.unwrap_or(Outcome::NotRun))
            .collect(),
        keys,
        interrupted,
        wall_s: t0.elapsed().as_secs_f64(),
    })
}

fn release(
    i: usize,
    consumers: &[Vec<usize>],
    missing: &mut [usize],
    frontier: &mut VecDeque<usize>,
) {
    for &c in &consumers[i] {
        missing[c] -= 1;
        if missing[c] == 0 {
            frontier.push_back(c);
        }
    }
}
