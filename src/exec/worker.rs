//! The worker entry point: `rst worker JOB.json` computes one stage instance into the
//! cache (lock, reuse if another process finished it, run, publish) and reports events as
//! JSON lines on stdout. The stage's log goes to stderr.
use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::integrity::{check_object, corrupt_input_message, short, ObjectState};
use super::{Job, WorkerEvent};
use crate::cache::store::{RunFacts, Store};
use crate::stages::{
    self, InputArtifact, Inputs, Progress, StageCtx, StageError, StageKind, StageRunner,
};

/// Where the code of a job's stage runs, and where its events and log lines go: in
/// `rst worker` ([`WorkerProcess`]: events as JSON lines on stdout, the log on stderr), or,
/// for `command` stages, in the local executor's own process (`exec::direct`: events to
/// the scheduler, the log to the log file, the program started by rst itself). The rest
/// of a job (lock, reuse, verified inputs, staging, publish) is the same code for both.
pub(crate) trait Host: Sync {
    fn emit(&self, ev: WorkerEvent);
    /// One line of the stage's log.
    fn log(&self, line: &str);
    /// Runs the stage's code on `ctx`.
    fn run(&self, runner: &dyn StageRunner, ctx: &StageCtx<'_>) -> Result<(), StageError>;
    /// Peak resident memory of what computed the stage (KiB), for the entry.
    fn peak_rss_kib(&self) -> u64;
    /// The GPUs the stage's programs see (`CUDA_VISIBLE_DEVICES`), for the entry.
    fn gpus(&self, job: &Job) -> Vec<String>;
}

/// The `rst worker` process itself.
pub(crate) struct WorkerProcess;

impl Host for WorkerProcess {
    fn emit(&self, ev: WorkerEvent) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string(&ev).expect("event serialises")
        );
        let _ = out.flush();
    }
    fn log(&self, line: &str) {
        crate::elog!("{line}");
    }
    fn run(&self, runner: &dyn StageRunner, ctx: &StageCtx<'_>) -> Result<(), StageError> {
        // This process runs one stage: size the global thread pool to what it declared.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(ctx.threads)
            .build_global();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runner.run(ctx)))
            .unwrap_or_else(|panic| Err(crashed("stage", panic.as_ref())))
    }
    fn peak_rss_kib(&self) -> u64 {
        peak_rss_kib()
    }
    /// This process's own variable: set by the executor to the lease, or by the cluster
    /// (a Slurm job's binding).
    fn gpus(&self, _job: &Job) -> Vec<String> {
        super::gpus::visible_devices()
    }
}

/// A panic caught in rst's own code as a stage error: `what` crashed, with the panic's
/// message (a bug in rst, never the stage program's fault).
pub(crate) fn crashed(what: &str, panic: &(dyn std::any::Any + Send)) -> StageError {
    let msg = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    StageError::internal(format!(
        "{what} crashed (a bug in rst, please report it): {msg}"
    ))
}

pub(crate) fn host_name() -> String {
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
/// runners this binary has beyond the engine's (`rst-torch` passes those of train and
/// evaluate).
pub fn run(job_file: &Path, kinds: &[&dyn StageRunner]) -> i32 {
    let host = WorkerProcess;
    let job: Job = match std::fs::read(job_file)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(j) => j,
        Err(e) => {
            host.emit(WorkerEvent::Failed(StageError::internal(format!(
                "cannot read job {}: {e}",
                job_file.display()
            ))));
            return 1;
        }
    };
    let runner = kinds
        .iter()
        .copied()
        .find(|r| r.kind().name() == job.kind)
        .or_else(|| stages::runner(&job.kind));
    let Some(runner) = runner else {
        host.emit(WorkerEvent::Failed(StageError::internal(format!(
            "no runner for stage kind {}",
            job.kind
        ))));
        return 1;
    };
    let result = compute(&job, runner, &host);
    crate::cache::store::release_work_dirs();
    finish(&host, result)
}

/// A job keyed as portable numerics runs only with the variables that pin its kernels
/// (the executor sets them on this process: libtorch reads them when it starts), so the
/// mode its key records is the mode it ran in. Logged, for the stage's log.
fn check_numerics(job: &Job, kind: &dyn StageKind, host: &dyn Host) -> Result<(), StageError> {
    let wanted = crate::numerics::worker_env(&job.record.env);
    if wanted.is_empty() {
        return Ok(());
    }
    let missing: Vec<String> = wanted
        .iter()
        .filter(|(k, v)| std::env::var(k).ok().as_deref() != Some(*v))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if !missing.is_empty() {
        return Err(StageError::internal(format!(
            "portable numerics: this worker was started without {}",
            missing.join(" ")
        )));
    }
    // What the variables pin exists only on x86-64 CPUs with AVX2 (ATen takes `avx2`
    // without asking the CPU: elsewhere it would crash), and only CPU kernels are pinned:
    // a GPU or another CPU would make bytes under a key that promises portable ones.
    let isa = crate::machine::isa_level();
    if !cfg!(target_arch = "x86_64") || !matches!(isa, "x86-64-v3" | "x86-64-v4") {
        return Err(StageError::user(format!(
            "numerics: portable pins CPU kernels to AVX2, which this machine does not have \
             ({}): run it on an x86-64 CPU with AVX2 (x86-64-v3), or set numerics: native",
            if isa.is_empty() {
                std::env::consts::ARCH
            } else {
                isa
            }
        )));
    }
    if let Some(device) = resolved_device(job, kind).filter(|d| d != "cpu") {
        return Err(StageError::user(format!(
            "numerics: portable pins CPU kernels, and this stage would run on {device}: set \
             device: cpu for a portable training, or numerics: native"
        )));
    }
    let set: Vec<String> = wanted.iter().map(|(k, v)| format!("{k}={v}")).collect();
    host.log(&format!(
        "numerics: {} ({})",
        crate::numerics::describe(&job.record.env),
        set.join(" ")
    ));
    Ok(())
}

/// Reports the result of [`compute`] as the job's last event; the exit code of a worker.
pub(crate) fn finish(host: &dyn Host, result: Result<WorkerEvent, StageError>) -> i32 {
    match result {
        Ok(ev) => {
            host.emit(ev);
            0
        }
        Err(e) => {
            host.log(&format!("error: {e}"));
            host.emit(WorkerEvent::Failed(e));
            1
        }
    }
}

/// Computes `job` into the cache: takes the key's lock, reuses what another process
/// finished meanwhile, verifies the inputs, runs the stage on `host` in a fresh staging
/// area and publishes it. Returns the `Done` event; the stage's error otherwise.
pub(crate) fn compute(
    job: &Job,
    runner: &dyn StageRunner,
    host: &dyn Host,
) -> Result<WorkerEvent, StageError> {
    let kind = runner.kind();
    let store =
        Store::open(&job.cache_dir).map_err(|e| StageError::internal(crate::error::chain(&e)))?;
    let _lock = store
        .lock(&job.key, || host.emit(WorkerEvent::LockWait))
        .map_err(|e| StageError::internal(crate::error::chain(&e)))?;
    if let Some(entry) = store.entry(&job.key) {
        return Ok(WorkerEvent::Done {
            artifact: entry.artifact,
            reused: true,
            duration_s: 0.0,
        });
    }
    check_numerics(job, kind, host)?;
    let inputs = verified_inputs(&store, job, host)?;
    let staging = store
        .staging(&job.key)
        .map_err(|e| StageError::internal(crate::error::chain(&e)))?;
    host.emit(WorkerEvent::Started);
    host.log(&format!(
        "rst worker: {} ({} v{}), key {}",
        job.instance,
        job.kind,
        kind.version(),
        job.key
    ));
    let last = Mutex::new(Instant::now() - Duration::from_secs(1));
    let progress = |p: Progress| {
        let mut l = last.lock().unwrap();
        if l.elapsed() >= Duration::from_millis(100) || p.pos == p.len {
            *l = Instant::now();
            host.emit(WorkerEvent::Progress(p));
        }
    };
    let resolved = Mutex::new(BTreeSet::new());
    let resolve = verified_resolver(&store, &resolved, host);
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
    let started_unix = crate::time::unix_now();
    let result = host.run(runner, &ctx);
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
                        ended_unix: crate::time::unix_now(),
                        duration_s,
                        threads: job.threads.max(1),
                        peak_rss_kib: host.peak_rss_kib(),
                        rst_version: env!("CARGO_PKG_VERSION").to_string(),
                        rst_git_commit: option_env!("RST_GIT_COMMIT").map(str::to_string),
                        libtorch: super::plan::LIBTORCH_VERSION.unwrap_or("none").to_string(),
                        device: resolved_device(job, kind),
                        cpu: crate::machine::cpu_model().to_string(),
                        isa: crate::machine::isa_level().to_string(),
                        gpus: host.gpus(job),
                        log: format!("logs/{}.log", job.key),
                        fetched: None,
                        reads: objects_read(&inputs, &resolved),
                        consumed: job.consumed.clone(),
                    },
                )
                .map_err(|e| {
                    StageError::internal(format!(
                        "cannot publish the artifact: {}",
                        crate::error::chain(&e)
                    ))
                })?;
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

/// The inputs of `job`, each re-hashed before the stage may read it: a missing input is an
/// error, a corrupt one is quarantined and the stage does not run (the scheduler has
/// checked them already; this is the final guard, right before the stage reads them, and
/// the only one when a worker runs without rst's scheduler).
fn verified_inputs(store: &Store, job: &Job, host: &dyn Host) -> Result<Inputs, StageError> {
    // Hash with the threads the stage declared, in a pool of its own: the global pool is
    // sized for the stage later and can be sized only once.
    match rayon::ThreadPoolBuilder::new()
        .num_threads(job.threads.max(1))
        .build()
    {
        Ok(pool) => pool.install(|| verify_each_input(store, job, host)),
        Err(_) => verify_each_input(store, job, host),
    }
}

fn verify_each_input(store: &Store, job: &Job, host: &dyn Host) -> Result<Inputs, StageError> {
    let mut inputs = Inputs::new();
    let mut checked: HashSet<&str> = HashSet::new();
    for (name, recs) in &job.inputs {
        let mut arts = Vec::new();
        for r in recs {
            let path = store.object_path(&r.digest);
            if checked.insert(&r.digest) {
                match check_object(store, &r.digest) {
                    ObjectState::Intact => {}
                    ObjectState::Missing => {
                        return Err(StageError::internal(format!(
                            "input {name} ({}) is missing from the cache (artifact {})",
                            r.instance, r.digest
                        )))
                    }
                    ObjectState::Corrupt { why } => {
                        let moved = store.quarantine(&r.digest).ok().flatten();
                        host.emit(WorkerEvent::Corrupt {
                            digest: r.digest.clone(),
                        });
                        return Err(StageError::internal(format!(
                            "{}; run again to recompute it",
                            corrupt_input_message(
                                &format!("input {name} (from {})", r.instance),
                                &r.digest,
                                &why,
                                moved.as_deref(),
                            )
                        )));
                    }
                }
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
    Ok(inputs)
}

/// The stage's `resolve` (an artifact digest to its directory, for dataset views): each
/// artifact is re-hashed the first time it is resolved and recorded in `resolved`; a
/// corrupt one is quarantined and resolves to nothing (the stage then fails saying the
/// artifact is not in the cache), with the reason in the stage's log.
fn verified_resolver<'a>(
    store: &'a Store,
    resolved: &'a Mutex<BTreeSet<String>>,
    host: &'a dyn Host,
) -> impl Fn(&str) -> Option<PathBuf> + Sync + 'a {
    let memo: Mutex<HashMap<String, bool>> = Mutex::new(HashMap::new());
    move |digest: &str| {
        let known = memo
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(digest)
            .copied();
        let ok = known.unwrap_or_else(|| {
            let ok = match check_object(store, digest) {
                ObjectState::Intact => true,
                ObjectState::Missing => false,
                ObjectState::Corrupt { why } => {
                    let moved = store.quarantine(digest).ok().flatten();
                    host.emit(WorkerEvent::Corrupt {
                        digest: digest.to_string(),
                    });
                    host.log(&format!(
                        "rst worker: {}; run again to recompute it",
                        corrupt_input_message(
                            &format!("resolved artifact {}", short(digest)),
                            digest,
                            &why,
                            moved.as_deref(),
                        )
                    ));
                    false
                }
            };
            memo.lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(digest.to_string(), ok);
            ok
        });
        if !ok {
            return None;
        }
        resolved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(digest.to_string());
        Some(store.object_path(digest))
    }
}

/// Every object the stage read (its inputs and what it resolved), sorted, for the entry.
fn objects_read(inputs: &Inputs, resolved: &Mutex<BTreeSet<String>>) -> Vec<String> {
    let mut all: BTreeSet<String> = resolved.lock().unwrap_or_else(|e| e.into_inner()).clone();
    all.extend(inputs.values().flatten().map(|a| a.digest.clone()));
    all.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::key::{InputRecord, KeyRecord, CACHE_VERSION};
    use crate::exec::integrity::tests::{stored, tamper};

    fn job(store: &Store, input: &str) -> Job {
        let inputs: std::collections::BTreeMap<String, Vec<InputRecord>> = [(
            "in".to_string(),
            vec![InputRecord {
                instance: "a".into(),
                digest: input.into(),
                matrix: Default::default(),
            }],
        )]
        .into();
        let params = serde_json::json!({"shell": "cat $RST_IN_IN/x > $RST_OUT/y"});
        let record = KeyRecord {
            cache_version: CACHE_VERSION,
            kind: "command".into(),
            kind_version: 1,
            params: params.clone(),
            inputs: inputs.clone(),
            local_deps: Default::default(),
            env: Default::default(),
        };
        Job {
            cache_dir: store.root().to_path_buf(),
            project_dir: store.root().to_path_buf(),
            pipeline: "p".into(),
            instance: "c".into(),
            key: record.key(),
            kind: "command".into(),
            params,
            inputs,
            record,
            threads: 1,
            resources: Default::default(),
            consumed: Default::default(),
            gpus: None,
        }
    }

    #[test]
    fn a_worker_refuses_a_corrupt_input_and_quarantines_it() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path()).unwrap();
        let a = stored(&store, "good");
        tamper(&store, &a, "evil");
        let err = compute(
            &job(&store, &a),
            &crate::stages::command::Command,
            &WorkerProcess,
        )
        .unwrap_err();
        assert!(
            err.message.contains("input in (from a)")
                && err.message.contains(&a)
                && err.message.contains("is corrupt")
                && err.message.contains("quarantined")
                && err.message.contains("run again to recompute it"),
            "{}",
            err.message
        );
        assert!(!store.object_path(&a).exists(), "moved to quarantine/");
        assert!(store.staging_dirs().is_empty(), "the stage never started");
    }

    #[test]
    fn the_resolver_verifies_and_records_what_it_resolves() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path()).unwrap();
        let good = stored(&store, "good");
        let bad = stored(&store, "bad");
        tamper(&store, &bad, "evil");
        let resolved = Mutex::new(BTreeSet::new());
        let resolve = verified_resolver(&store, &resolved, &WorkerProcess);
        assert_eq!(resolve(&good), Some(store.object_path(&good)));
        assert_eq!(resolve(&bad), None);
        assert!(!store.object_path(&bad).exists(), "quarantined");
        assert_eq!(resolve("0000"), None);
        assert_eq!(
            objects_read(&Inputs::new(), &resolved),
            vec![good.clone()],
            "only what was read intact"
        );
    }
}
