//! The worker entry point: `rst worker JOB.json` computes one stage instance into the
//! cache (lock, reuse if another process finished it, run, publish) and reports events as
//! JSON lines on stdout. The stage's log goes to stderr.
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Job, WorkerEvent};
use crate::cache::store::{RunFacts, Store};
use crate::stages::{self, InputArtifact, Inputs, Progress, StageCtx, StageError, StageKind};

fn emit(ev: &WorkerEvent) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{}",
        serde_json::to_string(ev).expect("event serialises")
    );
    let _ = out.flush();
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// Peak resident memory of this worker and of the programs it waited for (KiB).
fn peak_rss_kib() -> u64 {
    let max_rss = |who| {
        // SAFETY: getrusage only writes into the zeroed struct we pass.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(who, &mut u) } == 0 {
            u.ru_maxrss.max(0) as u64
        } else {
            0
        }
    };
    max_rss(libc::RUSAGE_SELF).max(max_rss(libc::RUSAGE_CHILDREN))
}

/// The device a torch stage runs on, as cache keys name it (`cpu`, `cuda:0`): `auto`
/// is what `rst-torch probe` picks on this machine. None for stages without torch.
fn resolved_device(job: &Job, kind: &dyn StageKind) -> Option<String> {
    if !kind.uses_torch() {
        return None;
    }
    let spec = job
        .params
        .get("device")
        .and_then(|d| d.as_str())
        .unwrap_or("auto");
    Some(match spec.trim() {
        "auto" => super::plan::probe().auto_device.clone(),
        "cuda" => "cuda:0".to_string(),
        other => other.to_string(),
    })
}

/// Runs the job; returns the process exit code (0 done, 1 failed). `kinds` supplies the
/// implementations this binary has beyond the engine's registry (`rst-torch` passes the
/// train and evaluate kinds).
pub fn run(job_file: &Path, kinds: &[&dyn StageKind]) -> i32 {
    let job: Job = match std::fs::read(job_file)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(j) => j,
        Err(e) => {
            emit(&WorkerEvent::Failed(StageError::internal(format!(
                "cannot read job {}: {e}",
                job_file.display()
            ))));
            return 1;
        }
    };
    match compute(&job, kinds) {
        Ok(ev) => {
            emit(&ev);
            0
        }
        Err(e) => {
            crate::elog!("error: {e}");
            emit(&WorkerEvent::Failed(e));
            1
        }
    }
}

fn compute(job: &Job, kinds: &[&dyn StageKind]) -> Result<WorkerEvent, StageError> {
    let kind = kinds
        .iter()
        .copied()
        .find(|k| k.name() == job.kind)
        .or_else(|| stages::lookup(&job.kind))
        .ok_or_else(|| StageError::internal(format!("unknown stage kind {}", job.kind)))?;
    let store = Store::open(&job.cache_dir).map_err(|e| StageError::internal(e.to_string()))?;
    let _lock = store
        .lock(&job.key, || emit(&WorkerEvent::LockWait))
        .map_err(|e| StageError::internal(e.to_string()))?;
    if let Some(entry) = store.entry(&job.key) {
        return Ok(WorkerEvent::Done {
            artifact: entry.artifact,
            reused: true,
            duration_s: 0.0,
        });
    }
    let mut inputs = Inputs::new();
    for (name, recs) in &job.inputs {
        let mut arts = Vec::new();
        for r in recs {
            let path = store.object_path(&r.digest);
            if !path.is_dir() {
                return Err(StageError::internal(format!(
                    "input {name} ({}) is missing from the cache (artifact {})",
                    r.instance, r.digest
                )));
            }
            arts.push(InputArtifact {
                instance: r.instance.clone(),
                digest: r.digest.clone(),
                path,
                matrix: r.matrix.clone(),
            });
        }
        inputs.insert(name.clone(), arts);
    }
    let staging = store
        .staging(&job.key)
        .map_err(|e| StageError::internal(e.to_string()))?;
    emit(&WorkerEvent::Started);
    crate::elog!(
        "rst worker: {} ({} v{}), key {}",
        job.instance,
        job.kind,
        kind.version(),
        job.key
    );
    // This process runs one stage: size the global thread pool to what it declared.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(job.threads.max(1))
        .build_global();
    let last = Mutex::new(Instant::now() - Duration::from_secs(1));
    let progress = |p: Progress| {
        let mut l = last.lock().unwrap();
        if l.elapsed() >= Duration::from_millis(100) || p.pos == p.len {
            *l = Instant::now();
            emit(&WorkerEvent::Progress(p));
        }
    };
    let store_for_resolve = store.clone();
    let resolve = move |digest: &str| {
        let p = store_for_resolve.object_path(digest);
        p.is_dir().then_some(p)
    };
    let downloads = store.downloads_dir();
    let ctx = StageCtx {
        instance: &job.instance,
        params: &job.params,
        inputs: &inputs,
        out: &staging.out,
        work: &staging.work,
        downloads: &downloads,
        project_dir: &job.project_dir,
        threads: job.threads.max(1),
        resolve: &resolve,
        progress: &progress,
    };
    let t0 = Instant::now();
    let started_unix = unix_now();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| kind.run(&ctx)))
        .unwrap_or_else(|panic| {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(StageError::internal(format!(
                "stage crashed (a bug in rst, please report it): {msg}"
            )))
        });
    let duration_s = t0.elapsed().as_secs_f64();
    match result {
        Ok(()) => {
            let entry = store
                .publish(
                    staging,
                    &job.key,
                    &job.pipeline,
                    &job.instance,
                    job.record.clone(),
                    RunFacts {
                        host: host_name(),
                        started_unix,
                        ended_unix: unix_now(),
                        duration_s,
                        threads: job.threads.max(1),
                        peak_rss_kib: peak_rss_kib(),
                        rst_version: env!("CARGO_PKG_VERSION").to_string(),
                        rst_git_commit: option_env!("RST_GIT_COMMIT").map(str::to_string),
                        libtorch: env!("RST_LIBTORCH_VERSION").to_string(),
                        device: resolved_device(job, kind),
                        log: format!("logs/{}.log", job.key),
                    },
                )
                .map_err(|e| StageError::internal(format!("cannot publish the artifact: {e}")))?;
            Ok(WorkerEvent::Done {
                artifact: entry.artifact,
                reused: false,
                duration_s,
            })
        }
        Err(e) => {
            store.discard(staging);
            Err(e)
        }
    }
}
