//! Execution: planning (keys, cache hits, reasons), the scheduler, executors and the
//! worker entry point (the `rst` binary re-invoked on one stage).
mod direct;
pub mod eta;
pub mod gpus;
mod guard;
pub mod integrity;
pub mod local;
pub mod plan;
pub mod progress;
pub mod scheduler;
pub mod slurm;
pub mod worker;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cache::key::{InputRecord, KeyRecord};
use crate::stages::{Progress, StageError};

/// Everything a worker needs to compute one stage instance (written as JSON; the same
/// file a cluster executor ships to a compute node).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub cache_dir: PathBuf,
    pub project_dir: PathBuf,
    pub pipeline: String,
    pub instance: String,
    pub key: String,
    pub kind: String,
    pub params: Value,
    pub inputs: BTreeMap<String, Vec<InputRecord>>,
    pub record: KeyRecord,
    pub threads: usize,
    /// What a cluster job asks for (not part of the key).
    #[serde(default)]
    pub resources: crate::spec::resources::Resources,
    /// Per input name, the keys of the entries whose artifacts the inputs are, in the order
    /// of `inputs` (provenance for `rst lineage`; not part of the key).
    #[serde(default)]
    pub consumed: BTreeMap<String, Vec<String>>,
    /// The GPUs leased to this job (`CUDA_VISIBLE_DEVICES`; empty: none); None where rst
    /// does not lease them (no devices, or a cluster that binds its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<Vec<String>>,
}

impl Job {
    /// `CUDA_VISIBLE_DEVICES` for the job's processes, when rst leases GPUs.
    pub fn visible_devices(&self) -> Option<String> {
        self.gpus.as_ref().map(|g| g.join(","))
    }
}

/// What a worker reports, one JSON object per line on its stdout.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum WorkerEvent {
    /// A cluster executor submitted the stage; `job` names it (`slurm 123`). Never sent
    /// by a worker.
    Queued {
        job: String,
    },
    /// Another process holds this stage's lock (it is computing the same key).
    LockWait,
    Started,
    Progress(Progress),
    Done {
        artifact: String,
        reused: bool,
        duration_s: f64,
    },
    Failed(StageError),
    /// The worker found an input or an artifact the stage resolved corrupt and quarantined
    /// it; the stage did not run on it (a `Failed` follows). The scheduler recomputes its
    /// producer and runs the stage again.
    Corrupt {
        digest: String,
    },
}

/// Cancellation shared by the scheduler, the executors and the Ctrl-C handler.
#[derive(Clone, Default)]
pub struct Cancel {
    flag: Arc<AtomicBool>,
}

impl Cancel {
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

/// Why an executor could not run a job or read its result. A stage that ran and failed
/// is not one of these: it is a [`WorkerEvent::Failed`] with the stage's own error.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The run was interrupted (Ctrl-C, SIGTERM, `scancel` of the whole run) before or
    /// while the job ran; `detail` says how, when known.
    #[error("interrupted{}", detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Interrupted { detail: Option<String> },
    /// The worker binary for the job's kind is not built.
    #[error(
        "{} not found: build it with `cargo build --release` (it is the worker for {kind} stages)",
        exe.display()
    )]
    WorkerMissing { exe: PathBuf, kind: String },
    #[error("cannot create log {}", path.display())]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start worker {}", exe.display())]
    Spawn {
        exe: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot wait for the worker")]
    Wait(#[source] std::io::Error),
    /// The worker exited (or was killed) without reporting `Done` or `Failed`.
    #[error("the worker process ended without a result ({status}); see {}", log.display())]
    NoResult {
        status: std::process::ExitStatus,
        log: PathBuf,
    },
    #[error("cannot write the job file {}", path.display())]
    JobFile {
        path: PathBuf,
        #[source]
        source: crate::cache::store::StoreError,
    },
    #[error("cannot open the run's durability journal")]
    Journal(#[source] crate::cache::store::StoreError),
    /// rst's own bookkeeping broke (a poisoned lock, a worker started without a pipe).
    #[error("{0}")]
    Internal(&'static str),
    /// A cluster job ended without reporting a result; the message is what the cluster
    /// said (state, exit code, reason, the last line of its log).
    #[error("{0}")]
    Cluster(String),
}

impl JobError {
    /// Whether the job ended because the run was interrupted (not a stage failure).
    pub fn is_interrupted(&self) -> bool {
        matches!(self, JobError::Interrupted { .. })
    }

    /// The message with every cause, `outer: cause: cause`, for a stage's failure line.
    pub fn report(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            text.push_str(": ");
            text.push_str(&c.to_string());
            cause = c.source();
        }
        text
    }
}

/// The file a worker process reads its job from (`rst worker FILE`), written on first
/// use: a job that needs no worker process (a `command` stage the local executor runs
/// itself) costs no file. Why: creating and removing a file per stage was a tenth of a
/// run of 1,000 small stages (inode churn on ext4).
pub struct JobFile<'j> {
    path: PathBuf,
    job: &'j Job,
    written: std::sync::OnceLock<Result<(), String>>,
}

impl<'j> JobFile<'j> {
    pub fn new(path: PathBuf, job: &'j Job) -> Self {
        JobFile {
            path,
            job,
            written: std::sync::OnceLock::new(),
        }
    }

    /// The file's path, written (atomically) on the first call.
    pub fn path(&self) -> Result<&Path, JobError> {
        let mut failure = None;
        let written = self.written.get_or_init(|| {
            let bytes = serde_json::to_vec_pretty(self.job).expect("job serialises");
            crate::cache::store::write_replace(&self.path, &bytes).map_err(|e| {
                let text = e.to_string();
                failure = Some(e);
                text
            })
        });
        match (written, failure) {
            (Ok(()), _) => Ok(&self.path),
            (Err(_), Some(source)) => Err(JobError::JobFile {
                path: self.path.clone(),
                source,
            }),
            (Err(_), None) => Err(JobError::Internal("the job file could not be written")),
        }
    }

    /// Removes the file if it was written.
    pub fn remove(&self) {
        if self.written.get().is_some_and(Result::is_ok) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Runs stage jobs somewhere: in a local worker process, or as a Slurm job.
pub trait Executor: Sync {
    /// Runs `job` (its worker reads `job_file`) to completion, forwarding worker events.
    /// Returns Err only when the job could not be run or its result not read.
    fn run_job(
        &self,
        job_file: &JobFile<'_>,
        job: &Job,
        cancel: &Cancel,
        on_event: &mut (dyn FnMut(WorkerEvent) + Send),
    ) -> Result<(), JobError>;
}

/// The program that computes `job`: `rst-torch` for torch stages (the engine binary does
/// not load libtorch), else `engine` (this `rst`); an error when it is not built.
pub fn worker_exe(engine: &Path, job: &Job) -> Result<PathBuf, JobError> {
    let torch = crate::stages::lookup(&job.kind).is_some_and(|k| k.uses_torch());
    let exe = if torch {
        plan::torch_exe()
    } else {
        engine.to_path_buf()
    };
    if !exe.is_file() {
        return Err(JobError::WorkerMissing {
            exe,
            kind: job.kind.clone(),
        });
    }
    Ok(exe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_error_reports_its_causes_and_says_whether_it_was_an_interruption() {
        let e = JobError::Spawn {
            exe: PathBuf::from("/x/rst"),
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        };
        assert!(!e.is_interrupted());
        let text = e.report();
        assert!(
            text.starts_with("cannot start worker /x/rst: ") && text.contains("No such file"),
            "{text}"
        );
        assert!(std::error::Error::source(&e).is_some(), "the cause is kept");
        let i = JobError::Interrupted {
            detail: Some("slurm job 7 cancelled".into()),
        };
        assert!(i.is_interrupted());
        assert_eq!(i.report(), "interrupted (slurm job 7 cancelled)");
        assert_eq!(
            JobError::Interrupted { detail: None }.report(),
            "interrupted"
        );
    }
}
