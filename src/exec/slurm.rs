//! The Slurm executor: the scheduler stays where `rst run` runs (the login node) and each
//! stage it finds ready becomes one `sbatch` job running the worker entry point
//! (`rst worker JOB` or `rst-torch worker JOB`) against the shared cache directory.
//!
//! One monitor thread owns every interaction with Slurm: it submits what the scheduler
//! hands it (`sbatch --parsable`, stdin script, no `--wait`; several at once, optionally
//! several stages per job with `--slurm-bundle`), polls all outstanding jobs
//! with one `squeue` call per interval, and tails each running job's events file (the
//! worker's JSON lines, written into the cache) to forward progress and the final
//! Done/Failed. A job that leaves the queue without a final event is asked about once
//! with `scontrol show job` (state, exit code, reason) and reported failed with its Slurm
//! log. Ctrl-C `scancel`s every job this process submitted.
//!
//! Dependencies are rst's own: a stage is submitted only once its inputs are published,
//! so a failure stops its dependents exactly as locally, `--keep-going` works, and no
//! chain of pending jobs is left behind when rst stops.
//!
//! Files, all under the cache (which compute nodes share):
//! ```text
//! cache/slurm/out/<jobid>.out               the job's own stdout/stderr (slurmstepd messages)
//! cache/slurm/events/<key>.<jobid>.<n>.jsonl the worker's events (n: the stage's place in
//!                                            its job, 0 unless `--slurm-bundle`)
//! cache/slurm/jobs/<key>.<jobid>.json       a submitted job, for `rst status` (removed at its end)
//! cache/logs/<key>.<jobid>.<n>.log          the stage's log, renamed to logs/<key>.log at its end
//! ```
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Cancel, Executor, Job, JobError, JobFile, WorkerEvent};
use crate::error::UserError;
use crate::spec::resources::slurm_time;
use crate::stages::StageError;

/// Settings from the command line (`--partition`, `--account`, `--slurm-opt`).
#[derive(Debug, Clone, Default)]
pub struct SlurmOptions {
    pub partition: Option<String>,
    pub account: Option<String>,
    /// `--slurm-opt KEY=VALUE` → `--KEY=VALUE` (or `--KEY`) on every `sbatch`.
    pub extra: Vec<(String, Option<String>)>,
    /// `--slurm-bundle N`: up to N ready stages that ask for the same resources run one
    /// after another in one job (0 and 1: one job per stage).
    pub bundle: usize,
    /// Set on `sbatch`'s environment, which it passes on to the job (as
    /// `LocalExecutor::with_env` does for local workers).
    pub worker_env: Vec<(String, String)>,
}

/// Parses `--slurm-opt KEY=VALUE` (or a bare `KEY` flag such as `exclusive`).
pub fn parse_slurm_opt(s: &str) -> Result<(String, Option<String>), UserError> {
    let (k, v) = match s.split_once('=') {
        Some((k, v)) => (k, Some(v.to_string())),
        None => (s, None),
    };
    let k = k.trim().trim_start_matches('-');
    if k.is_empty()
        || !k
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(UserError::new(format!(
            "--slurm-opt {s}: expected KEY=VALUE with an sbatch option name as KEY"
        ))
        .help("e.g. --slurm-opt qos=high --slurm-opt constraint=a100 (passed as --qos=high ...)"));
    }
    const OWN: [&str; 8] = [
        "parsable",
        "output",
        "error",
        "chdir",
        "wait",
        "array",
        "dependency",
        "job-name",
    ];
    if OWN.contains(&k) {
        return Err(UserError::new(format!(
            "--slurm-opt {s}: rst sets --{k} itself for every stage job"
        )));
    }
    Ok((k.to_string(), v))
}

/// Where the executor keeps one job's files.
#[derive(Debug, Clone)]
struct Paths {
    slurm_out: PathBuf,
    events: PathBuf,
    record: PathBuf,
    stage_log: PathBuf,
}

/// The files of the `n`th stage of job `id`.
fn paths(cache: &Path, key: &str, id: &str, n: usize) -> Paths {
    let s = cache.join("slurm");
    Paths {
        slurm_out: s.join("out").join(format!("{id}.out")),
        events: s.join("events").join(format!("{key}.{id}.{n}.jsonl")),
        record: s.join("jobs").join(format!("{key}.{id}.json")),
        stage_log: cache.join("logs").join(format!("{key}.{id}.{n}.log")),
    }
}

/// What `rst status` finds about a submitted job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub key: String,
    pub pipeline: String,
    pub instance: String,
    pub submitted_unix: f64,
}

/// The batch script (given to `sbatch` on stdin): the worker for each stage of the job
/// (one, or a bundle run one after another), its events and its log redirected into the
/// cache.
pub fn batch_script(exe: &Path, stages: &[(&Path, &Job)]) -> String {
    let threads = stages
        .iter()
        .map(|(_, j)| j.threads)
        .max()
        .unwrap_or(1)
        .max(1);
    let mut script =
        format!("#!/bin/sh\nexport RAYON_NUM_THREADS={threads} OMP_NUM_THREADS={threads}\n");
    for (n, (job_file, job)) in stages.iter().enumerate() {
        let s = job.cache_dir.join("slurm");
        script += &format!(
            "# rst stage {inst} (key {key})\n\
             {env}{exe} worker {jf} >{ev}/{key}.\"$SLURM_JOB_ID\".{n}.jsonl 2>{logs}/{key}.\"$SLURM_JOB_ID\".{n}.log\n",
            inst = job.instance.replace('\n', " "),
            env = crate::numerics::worker_env(&job.record.env)
                .iter()
                .map(|(k, v)| format!("{k}={} ", crate::shell::quote(v)))
                .collect::<String>(),
            key = job.key,
            exe = crate::shell::quote(&exe.display().to_string()),
            jf = crate::shell::quote(&job_file.display().to_string()),
            ev = crate::shell::quote(&s.join("events").display().to_string()),
            logs = crate::shell::quote(&job.cache_dir.join("logs").display().to_string()),
        );
    }
    script
}

/// `sbatch` arguments for one stage: resources from the pipeline, settings from the
/// command line.
pub fn sbatch_args(job: &Job, opts: &SlurmOptions) -> Vec<String> {
    let name: String = job
        .instance
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let mut a = vec![
        "--parsable".to_string(),
        format!("--job-name=rst:{name}"),
        format!(
            "--output={}",
            job.cache_dir.join("slurm/out/%j.out").display()
        ),
        format!("--chdir={}", job.project_dir.display()),
        "--nodes=1".to_string(),
        "--ntasks=1".to_string(),
        format!("--cpus-per-task={}", job.threads.max(1)),
    ];
    let r = &job.resources;
    if let Some(m) = r.memory_mib {
        a.push(format!("--mem={m}M"));
    }
    if let Some(g) = r.gpus.filter(|&g| g > 0) {
        a.push(format!("--gres=gpu:{g}"));
    }
    if let Some(t) = r.time_s {
        a.push(format!("--time={}", slurm_time(t)));
    }
    if let Some(p) = &opts.partition {
        a.push(format!("--partition={p}"));
    }
    if let Some(acc) = &opts.account {
        a.push(format!("--account={acc}"));
    }
    for (k, v) in &opts.extra {
        a.push(match v {
            Some(v) => format!("--{k}={v}"),
            None => format!("--{k}"),
        });
    }
    a
}

/// One `squeue` call for the jobs `ids`: id → (state, reason). Jobs Slurm no longer knows
/// are absent (every id purged already is not an error).
fn squeue(ids: &[&str]) -> Result<HashMap<String, (String, String)>, String> {
    let args = vec![
        "-h".to_string(),
        "-r".to_string(),
        "-j".to_string(),
        ids.join(","),
        "-o".to_string(),
        "%i|%T|%r".to_string(),
    ];
    match slurm_cmd("squeue", &args) {
        Ok(out) => Ok(parse_squeue(&out)),
        Err(e) if e.contains("Invalid job id") => Ok(HashMap::new()),
        Err(e) => Err(e),
    }
}

/// `squeue -h -r -o '%i|%T|%r'` → job id → (state, reason).
pub fn parse_squeue(out: &str) -> HashMap<String, (String, String)> {
    out.lines()
        .filter_map(|l| {
            let mut it = l.trim().splitn(3, '|');
            let id = it.next()?.trim();
            let state = it.next()?.trim();
            let reason = it.next().unwrap_or("").trim();
            (!id.is_empty()).then(|| (id.to_string(), (state.to_string(), reason.to_string())))
        })
        .collect()
}

/// The facts `scontrol show job -o ID` gives about an ended job.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JobInfo {
    pub state: String,
    pub exit_code: String,
    pub reason: String,
}

/// Parses `scontrol show job [-o] ID` (KEY=VALUE pairs, space or newline separated).
pub fn parse_scontrol(out: &str) -> Option<JobInfo> {
    let mut info = JobInfo::default();
    for tok in out.split_whitespace() {
        if let Some((k, v)) = tok.split_once('=') {
            match k {
                "JobState" => info.state = v.to_string(),
                "ExitCode" => info.exit_code = v.to_string(),
                "Reason" => info.reason = v.to_string(),
                _ => {}
            }
        }
    }
    (!info.state.is_empty()).then_some(info)
}

/// What the monitor sends a waiting `run_job`.
enum Update {
    Event(WorkerEvent),
    End(Result<(), JobError>),
}

struct Submission {
    job: Job,
    job_file: PathBuf,
    exe: PathBuf,
    tx: mpsc::Sender<Update>,
}

struct Active {
    id: String,
    key: String,
    paths: Paths,
    tx: mpsc::Sender<Update>,
    offset: u64,
    partial: Vec<u8>,
    running: bool,
    finished: bool,
    /// The only stage of its job (its Slurm log is its own).
    alone: bool,
}

#[derive(Default)]
struct State {
    queue: Vec<Submission>,
    cancelled: bool,
    shutdown: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

pub struct SlurmExecutor {
    exe: PathBuf,
    shared: Arc<Shared>,
    monitor: Option<std::thread::JoinHandle<()>>,
}

/// How many `sbatch` run at once when many stages become ready together.
const SUBMIT_PARALLEL: usize = 8;

/// How often all outstanding jobs are polled with one `squeue` (`RST_SLURM_POLL_MS`).
fn poll_interval() -> Duration {
    let ms = std::env::var("RST_SLURM_POLL_MS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(250)
        .clamp(20, 60_000);
    Duration::from_millis(ms)
}

fn slurm_cmd(cmd: &str, args: &[String]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {cmd}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

impl SlurmExecutor {
    /// Checks that Slurm's commands are there and the partition exists; starts the monitor.
    pub fn new(cache_dir: &Path, opts: SlurmOptions) -> Result<Self, UserError> {
        for cmd in ["sbatch", "squeue", "scontrol", "scancel"] {
            if Command::new(cmd)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_err()
            {
                return Err(UserError::new(format!(
                    "--executor slurm: `{cmd}` not found"
                ))
                .help("run rst on a Slurm login node (sbatch, squeue, scontrol and scancel on PATH); scripts/slurm-local up starts a one-node cluster here"));
            }
        }
        if let Some(p) = &opts.partition {
            if slurm_cmd("scontrol", &["show".into(), "partition".into(), p.clone()]).is_err() {
                let known = slurm_cmd("sinfo", &["-h".into(), "-o".into(), "%R".into()])
                    .unwrap_or_default();
                let known: Vec<&str> = known.split_whitespace().collect();
                let mut u = UserError::new(format!("--partition {p}: no such Slurm partition"));
                u.help = Some(match crate::hint::did_you_mean(p, known.iter().copied()) {
                    Some(h) => h,
                    None if known.is_empty() => {
                        "is the Slurm controller up? (`sinfo` lists partitions)".into()
                    }
                    None => format!("partitions: {}", known.join(", ")),
                });
                return Err(u);
            }
        }
        for sub in ["out", "events", "jobs"] {
            let d = cache_dir.join("slurm").join(sub);
            std::fs::create_dir_all(&d)
                .map_err(|e| UserError::new(format!("cannot create {}: {e}", d.display())))?;
        }
        let exe = std::env::current_exe()
            .map_err(|e| UserError::new(format!("cannot find the rst executable: {e}")))?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let monitor = {
            let shared = shared.clone();
            std::thread::spawn(move || Monitor::new(shared, opts).run())
        };
        Ok(SlurmExecutor {
            exe,
            shared,
            monitor: Some(monitor),
        })
    }

    /// What the Ctrl-C handler calls: the monitor `scancel`s every job it submitted.
    pub fn killer(&self) -> impl Fn() + Send + 'static {
        let shared = self.shared.clone();
        move || {
            shared.state.lock().unwrap().cancelled = true;
            shared.wake.notify_all();
        }
    }
}

impl Drop for SlurmExecutor {
    fn drop(&mut self) {
        self.shared.state.lock().unwrap().shutdown = true;
        self.shared.wake.notify_all();
        if let Some(m) = self.monitor.take() {
            let _ = m.join();
        }
    }
}

impl Executor for SlurmExecutor {
    fn run_job(
        &self,
        job_file: &JobFile<'_>,
        job: &Job,
        cancel: &Cancel,
        on_event: &mut (dyn FnMut(WorkerEvent) + Send),
    ) -> Result<(), JobError> {
        if cancel.is_cancelled() {
            return Err(JobError::Interrupted { detail: None });
        }
        let exe = super::worker_exe(&self.exe, job)?;
        let job_file = job_file.path()?;
        let (tx, rx) = mpsc::channel();
        {
            let mut st = self.shared.state.lock().unwrap();
            if st.cancelled {
                return Err(JobError::Interrupted { detail: None });
            }
            st.queue.push(Submission {
                job: job.clone(),
                job_file: std::path::absolute(job_file).unwrap_or(job_file.to_path_buf()),
                exe,
                tx,
            });
        }
        self.shared.wake.notify_all();
        for u in rx {
            match u {
                Update::Event(ev) => on_event(ev),
                Update::End(r) => return r,
            }
        }
        Err(JobError::Internal("the Slurm monitor stopped"))
    }
}

/// The thread that talks to Slurm.
struct Monitor {
    shared: Arc<Shared>,
    opts: SlurmOptions,
    active: Vec<Active>,
    poll: Duration,
    last_poll: Instant,
    warned: bool,
}

impl Monitor {
    fn new(shared: Arc<Shared>, opts: SlurmOptions) -> Self {
        let poll = poll_interval();
        Monitor {
            shared,
            opts,
            active: Vec::new(),
            poll,
            last_poll: Instant::now() - poll,
            warned: false,
        }
    }

    fn run(mut self) {
        let tail_every = self.poll.min(Duration::from_millis(100));
        loop {
            let (subs, cancelled, shutdown) = {
                let mut st = self.shared.state.lock().unwrap();
                if st.queue.is_empty() && (!st.cancelled || self.active.is_empty()) {
                    st = self.shared.wake.wait_timeout(st, tail_every).unwrap().0;
                }
                (std::mem::take(&mut st.queue), st.cancelled, st.shutdown)
            };
            if cancelled {
                self.cancel_all(subs);
                if shutdown {
                    return;
                }
                continue;
            }
            let subs = if self.opts.bundle > 1 && !subs.is_empty() {
                // Stages that become ready together arrive over a few milliseconds:
                // gather them (until 20 ms pass without a new one, at most 0.5 s) so
                // that they can share jobs.
                let mut subs = subs;
                let t0 = Instant::now();
                while t0.elapsed() < Duration::from_millis(500) {
                    std::thread::sleep(Duration::from_millis(20));
                    let more = std::mem::take(&mut self.shared.state.lock().unwrap().queue);
                    if more.is_empty() {
                        break;
                    }
                    subs.extend(more);
                }
                subs
            } else {
                subs
            };
            self.submit(subs);
            self.tail_running();
            if self.last_poll.elapsed() >= self.poll && !self.active.is_empty() {
                self.last_poll = Instant::now();
                self.poll_queue();
            }
            self.active.retain(|a| !a.finished);
            if shutdown && self.active.is_empty() {
                return;
            }
        }
    }

    fn cancel_all(&mut self, subs: Vec<Submission>) {
        for s in subs {
            let _ =
                s.tx.send(Update::End(Err(JobError::Interrupted { detail: None })));
        }
        if self.active.is_empty() {
            return;
        }
        let ids: Vec<String> = self.active.iter().map(|a| a.id.clone()).collect();
        let _ = slurm_cmd("scancel", &ids);
        for a in self.active.drain(..) {
            let _ = std::fs::remove_file(&a.paths.record);
            let _ = std::fs::rename(
                &a.paths.stage_log,
                a.paths.stage_log.with_file_name(format!("{}.log", a.key)),
            );
            let _ = a.tx.send(Update::End(Err(JobError::Interrupted {
                detail: Some(format!("slurm job {} cancelled", a.id)),
            })));
        }
    }

    /// Submits a batch of ready stages: bundles them (`--slurm-bundle`), then runs up to
    /// [`SUBMIT_PARALLEL`] `sbatch` processes at a time (each script, a few hundred
    /// bytes, goes to its stdin without blocking).
    fn submit(&mut self, subs: Vec<Submission>) {
        let jobs = bundles(subs, self.opts.bundle.max(1), &self.opts);
        let mut jobs = jobs.into_iter().peekable();
        while jobs.peek().is_some() {
            let batch: Vec<(Vec<String>, Vec<Submission>)> =
                jobs.by_ref().take(SUBMIT_PARALLEL).collect();
            let started: Vec<_> = batch
                .iter()
                .map(|(args, group)| {
                    let stages: Vec<(&Path, &Job)> = group
                        .iter()
                        .map(|s| (s.job_file.as_path(), &s.job))
                        .collect();
                    let script = batch_script(&group[0].exe, &stages);
                    Command::new("sbatch")
                        .args(args)
                        .envs(self.opts.worker_env.iter().map(|(k, v)| (k, v)))
                        .stdin(Stdio::piped())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped())
                        .spawn()
                        .and_then(|mut child| {
                            child
                                .stdin
                                .take()
                                .expect("piped")
                                .write_all(script.as_bytes())?;
                            Ok(child)
                        })
                })
                .collect();
            for ((args, group), child) in batch.into_iter().zip(started) {
                let result = child.and_then(|c| c.wait_with_output());
                self.submitted(group, args, result);
            }
        }
    }

    fn submitted(
        &mut self,
        group: Vec<Submission>,
        args: Vec<String>,
        result: std::io::Result<std::process::Output>,
    ) {
        let id = match result {
            Ok(out) if out.status.success() => {
                let text = String::from_utf8_lossy(&out.stdout);
                let id = text.trim().split(';').next().unwrap_or("").to_string();
                if id.is_empty() {
                    Err("sbatch printed no job id".to_string())
                } else {
                    Ok(id)
                }
            }
            Ok(out) => Err(String::from_utf8_lossy(&out.stderr)
                .lines()
                .map(|l| l.trim().trim_start_matches("sbatch: error: "))
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; ")),
            Err(e) => Err(format!("cannot run sbatch: {e}")),
        };
        let id = match id {
            Ok(id) => id,
            Err(msg) => {
                // sbatch refuses what the user asked for (resources, options).
                for s in group {
                    let _ =
                        s.tx.send(Update::Event(WorkerEvent::Failed(StageError::user(
                            format!("sbatch refused the job: {msg} (sbatch {})", args.join(" ")),
                        ))));
                    let _ = s.tx.send(Update::End(Ok(())));
                }
                return;
            }
        };
        let now = crate::time::unix_now();
        let alone = group.len() == 1;
        for (n, s) in group.into_iter().enumerate() {
            let paths = paths(&s.job.cache_dir, &s.job.key, &id, n);
            let record = JobRecord {
                id: id.clone(),
                key: s.job.key.clone(),
                pipeline: s.job.pipeline.clone(),
                instance: s.job.instance.clone(),
                submitted_unix: now,
            };
            let _ = std::fs::write(
                &paths.record,
                serde_json::to_vec(&record).expect("record serialises"),
            );
            let _ = s.tx.send(Update::Event(WorkerEvent::Queued {
                job: format!("slurm {id}"),
            }));
            self.active.push(Active {
                id: id.clone(),
                key: s.job.key.clone(),
                paths,
                tx: s.tx,
                offset: 0,
                partial: Vec::new(),
                running: false,
                finished: false,
                alone,
            });
        }
    }

    fn tail_running(&mut self) {
        for a in self.active.iter_mut().filter(|a| a.running && !a.finished) {
            tail(a);
        }
    }

    /// One `squeue` for every outstanding job; jobs no longer listed have ended.
    fn poll_queue(&mut self) {
        let ids: Vec<&str> = self
            .active
            .iter()
            .filter(|a| !a.finished)
            .map(|a| a.id.as_str())
            .collect();
        if ids.is_empty() {
            return;
        }
        let listed = match squeue(&ids) {
            Ok(listed) => listed,
            Err(e) => {
                if !self.warned {
                    eprintln!("warning: squeue failed ({e}); retrying");
                    self.warned = true;
                }
                return;
            }
        };
        for a in self.active.iter_mut().filter(|a| !a.finished) {
            match listed.get(&a.id).filter(|(state, _)| !is_final(state)) {
                Some((state, _)) => {
                    if !a.running && state != "PENDING" {
                        a.running = true;
                        tail(a);
                    }
                }
                None => {
                    // Ended: its last events are in the file (re-opened, so an NFS client
                    // sees what the compute node wrote before the job ended).
                    tail(a);
                    if !a.finished {
                        ended_without_result(a);
                    }
                }
            }
        }
    }
}

/// Groups ready stages into jobs: stages with the same worker and the same `sbatch`
/// arguments, up to `bundle` per job (in the order they became ready). A bundle's time
/// limit is the sum of its stages'.
fn bundles(
    subs: Vec<Submission>,
    bundle: usize,
    opts: &SlurmOptions,
) -> Vec<(Vec<String>, Vec<Submission>)> {
    let mut out: Vec<(Vec<String>, Vec<Submission>)> = Vec::new();
    let mut open: HashMap<(PathBuf, Vec<String>), usize> = HashMap::new();
    for s in subs {
        let args = sbatch_args(&s.job, opts);
        let shape: Vec<String> = args
            .iter()
            .filter(|a| !a.starts_with("--job-name="))
            .cloned()
            .collect();
        let slot = (s.exe.clone(), shape);
        match open.get(&slot) {
            Some(&i) if out[i].1.len() < bundle => out[i].1.push(s),
            _ => {
                open.insert(slot, out.len());
                out.push((args, vec![s]));
            }
        }
    }
    for (args, group) in &mut out {
        if group.len() > 1 {
            for a in args.iter_mut() {
                if a.starts_with("--job-name=") {
                    *a = format!("{a}+{}", group.len() - 1);
                }
            }
            if let Some(t) = group[0].job.resources.time_s {
                for a in args.iter_mut() {
                    if a.starts_with("--time=") {
                        *a = format!("--time={}", slurm_time(t * group.len() as u64));
                    }
                }
            }
        }
    }
    out
}

/// Job states after which a job never runs again (squeue may still list one briefly).
fn is_final(state: &str) -> bool {
    matches!(
        state,
        "COMPLETED"
            | "FAILED"
            | "CANCELLED"
            | "TIMEOUT"
            | "OUT_OF_MEMORY"
            | "NODE_FAIL"
            | "BOOT_FAIL"
            | "DEADLINE"
            | "SPECIAL_EXIT"
            | "REVOKED"
    )
}

/// Reads new complete lines from the job's events file and forwards them.
fn tail(a: &mut Active) {
    let Ok(mut f) = std::fs::File::open(&a.paths.events) else {
        return;
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if len < a.offset {
        // Requeued: the worker started over.
        a.offset = 0;
        a.partial.clear();
    }
    if len == a.offset || f.seek(SeekFrom::Start(a.offset)).is_err() {
        return;
    }
    let mut buf = Vec::new();
    if f.read_to_end(&mut buf).is_err() {
        return;
    }
    a.offset += buf.len() as u64;
    a.partial.extend_from_slice(&buf);
    while let Some(nl) = a.partial.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = a.partial.drain(..=nl).collect();
        let Ok(ev) = serde_json::from_slice::<WorkerEvent>(&line) else {
            continue;
        };
        let ev = match ev {
            WorkerEvent::Failed(mut e) => {
                e.message = format!(
                    "{} [slurm job {}, slurm log {}]",
                    e.message,
                    a.id,
                    a.paths.slurm_out.display()
                );
                WorkerEvent::Failed(e)
            }
            other => other,
        };
        let last = matches!(ev, WorkerEvent::Done { .. } | WorkerEvent::Failed(_));
        let done = matches!(ev, WorkerEvent::Done { .. });
        let _ = a.tx.send(Update::Event(ev));
        if done && a.alone {
            // A job that went well leaves an empty Slurm log: don't keep one per job.
            if std::fs::metadata(&a.paths.slurm_out).is_ok_and(|m| m.len() == 0) {
                let _ = std::fs::remove_file(&a.paths.slurm_out);
            }
        }
        if last {
            finish(a, Ok(()));
            return;
        }
    }
}

fn finish(a: &mut Active, r: Result<(), JobError>) {
    a.finished = true;
    let _ = std::fs::rename(
        &a.paths.stage_log,
        a.paths.stage_log.with_file_name(format!("{}.log", a.key)),
    );
    let _ = std::fs::remove_file(&a.paths.events);
    let _ = std::fs::remove_file(&a.paths.record);
    let _ = a.tx.send(Update::End(r));
}

/// A job left the queue without Done/Failed: crashed, cancelled, timed out, out of memory.
fn ended_without_result(a: &mut Active) {
    let info = slurm_cmd(
        "scontrol",
        &["show".into(), "job".into(), "-o".into(), a.id.clone()],
    )
    .ok()
    .and_then(|o| parse_scontrol(&o));
    let how = match &info {
        Some(i) => format!(
            "ended {} (exit code {}, reason {})",
            i.state, i.exit_code, i.reason
        ),
        None => "ended".to_string(),
    };
    let tail_line = std::fs::read_to_string(&a.paths.slurm_out)
        .ok()
        .and_then(|t| {
            t.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(|l| format!(": {}", l.trim()))
        })
        .unwrap_or_default();
    let msg = format!(
        "slurm job {} {how} without a result{tail_line}; slurm log {}",
        a.id,
        a.paths.slurm_out.display()
    );
    finish(a, Err(JobError::Cluster(msg)));
}

/// For `rst status`: the submitted jobs recorded in the cache that Slurm still lists,
/// by stage key → (job id, `queued` | `running`). Empty when there are none (no Slurm
/// command runs then).
pub fn outstanding(cache_dir: &Path) -> HashMap<String, (String, &'static str)> {
    let mut by_id: HashMap<String, (String, PathBuf)> = HashMap::new();
    if let Ok(rd) = std::fs::read_dir(cache_dir.join("slurm").join("jobs")) {
        for e in rd.flatten() {
            let rec = std::fs::read(e.path())
                .ok()
                .and_then(|b| serde_json::from_slice::<JobRecord>(&b).ok());
            if let Some(r) = rec {
                by_id.insert(r.id, (r.key, e.path()));
            }
        }
    }
    let mut out = HashMap::new();
    if by_id.is_empty() {
        return out;
    }
    let ids: Vec<&str> = by_id.keys().map(String::as_str).collect();
    let Ok(listed) = squeue(&ids) else {
        // Slurm unreachable: say nothing about jobs.
        return out;
    };
    for (id, (key, record)) in by_id {
        match listed.get(&id).filter(|(state, _)| !is_final(state)) {
            Some((state, _)) => {
                let s = if state == "PENDING" {
                    "queued"
                } else {
                    "running"
                };
                out.insert(key, (id, s));
            }
            // Ended while no `rst run` watched it (that run was killed): forget it.
            None => {
                let _ = std::fs::remove_file(record);
                let prefix = format!("{key}.{id}.");
                if let Ok(rd) = std::fs::read_dir(cache_dir.join("slurm").join("events")) {
                    for e in rd.flatten() {
                        if e.file_name().to_string_lossy().starts_with(&prefix) {
                            let _ = std::fs::remove_file(e.path());
                        }
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::resources::Resources;

    fn job() -> Job {
        Job {
            cache_dir: "/shared/proj/cache".into(),
            project_dir: "/shared/proj".into(),
            pipeline: "p".into(),
            instance: "train[rate=0.2, seed=1]".into(),
            key: "ab12".into(),
            kind: "command".into(),
            params: serde_json::json!({}),
            inputs: Default::default(),
            record: crate::cache::key::empty_command_record(),
            threads: 4,
            resources: Resources::default(),
            consumed: Default::default(),
            gpus: None,
        }
    }

    #[test]
    fn sbatch_args_from_resources_and_options() {
        let mut j = job();
        j.resources = Resources {
            memory_mib: Some(4096),
            gpus: Some(1),
            time_s: Some(5400),
        };
        let opts = SlurmOptions {
            partition: Some("gpu".into()),
            account: Some("lab".into()),
            extra: vec![
                ("qos".into(), Some("high".into())),
                ("exclusive".into(), None),
            ],
            bundle: 1,
            worker_env: Vec::new(),
        };
        assert_eq!(
            sbatch_args(&j, &opts),
            [
                "--parsable",
                "--job-name=rst:train[rate=0.2,seed=1]",
                "--output=/shared/proj/cache/slurm/out/%j.out",
                "--chdir=/shared/proj",
                "--nodes=1",
                "--ntasks=1",
                "--cpus-per-task=4",
                "--mem=4096M",
                "--gres=gpu:1",
                "--time=0-01:30:00",
                "--partition=gpu",
                "--account=lab",
                "--qos=high",
                "--exclusive",
            ]
        );
        // No resources asked: only the CPUs (threads).
        j.resources = Resources {
            gpus: Some(0),
            ..Default::default()
        };
        let a = sbatch_args(&j, &SlurmOptions::default());
        assert!(a.iter().all(|x| !x.starts_with("--mem")
            && !x.starts_with("--gres")
            && !x.starts_with("--time")));
    }

    #[test]
    fn script_runs_the_worker_into_the_cache() {
        let s = batch_script(
            Path::new("/opt/it's/rst"),
            &[(Path::new("/shared/proj/cache/tmp/jobs/ab12.7.json"), &job())],
        );
        assert_eq!(
            s,
            "#!/bin/sh\nexport RAYON_NUM_THREADS=4 OMP_NUM_THREADS=4\n\
             # rst stage train[rate=0.2, seed=1] (key ab12)\n\
             '/opt/it'\\''s/rst' worker '/shared/proj/cache/tmp/jobs/ab12.7.json' \
             >'/shared/proj/cache/slurm/events'/ab12.\"$SLURM_JOB_ID\".0.jsonl \
             2>'/shared/proj/cache/logs'/ab12.\"$SLURM_JOB_ID\".0.log\n"
        );
    }

    fn submission(instance: &str, memory: u64) -> Submission {
        let mut j = job();
        j.instance = instance.into();
        j.resources.memory_mib = Some(memory);
        j.resources.time_s = Some(600);
        Submission {
            job: j,
            job_file: "/j".into(),
            exe: "/rst".into(),
            tx: mpsc::channel().0,
        }
    }

    #[test]
    fn bundles_group_stages_of_the_same_shape() {
        let subs = vec![
            submission("a1", 100),
            submission("b1", 200),
            submission("a2", 100),
            submission("a3", 100),
            submission("b2", 200),
        ];
        let opts = SlurmOptions::default();
        let one = bundles(
            subs.iter()
                .map(|s| submission(&s.job.instance, s.job.resources.memory_mib.unwrap()))
                .collect(),
            1,
            &opts,
        );
        assert_eq!(one.len(), 5, "no bundling: one job per stage");
        let b = bundles(subs, 2, &opts);
        let names: Vec<Vec<&str>> = b
            .iter()
            .map(|(_, g)| g.iter().map(|s| s.job.instance.as_str()).collect())
            .collect();
        assert_eq!(names, [vec!["a1", "a2"], vec!["b1", "b2"], vec!["a3"]]);
        // A bundle's name counts its extra stages; its time limit is the sum.
        assert!(b[0].0.contains(&"--job-name=rst:a1+1".to_string()));
        assert!(b[0].0.contains(&"--time=0-00:20:00".to_string()));
        assert!(b[2].0.contains(&"--time=0-00:10:00".to_string()));
        assert!(b[1].0.contains(&"--mem=200M".to_string()));
    }

    #[test]
    fn squeue_output() {
        let q = parse_squeue("12|RUNNING|None\n13|PENDING|Resources\n\n14_2|PENDING|Priority\n");
        assert_eq!(q.len(), 3);
        assert_eq!(q["12"], ("RUNNING".to_string(), "None".to_string()));
        assert_eq!(q["13"].0, "PENDING");
        assert_eq!(q["14_2"].1, "Priority");
        assert!(parse_squeue("").is_empty());
    }

    #[test]
    fn scontrol_output() {
        let one_line = "JobId=7 JobName=rst:x UserId=root(0) JobState=CANCELLED Reason=None \
                        Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 ExitCode=0:15";
        assert_eq!(
            parse_scontrol(one_line),
            Some(JobInfo {
                state: "CANCELLED".into(),
                exit_code: "0:15".into(),
                reason: "None".into()
            })
        );
        let multi =
            "JobId=8 JobName=wrap\n   JobState=TIMEOUT Reason=TimeLimit Dependency=(null)\n   \
                     Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:1\n";
        let i = parse_scontrol(multi).unwrap();
        assert_eq!(
            (i.state.as_str(), i.reason.as_str()),
            ("TIMEOUT", "TimeLimit")
        );
        assert_eq!(
            parse_scontrol("slurm_load_jobs error: Invalid job id"),
            None
        );
    }

    #[test]
    fn slurm_opt_parsing() {
        assert_eq!(
            parse_slurm_opt("qos=high").unwrap(),
            ("qos".into(), Some("high".into()))
        );
        assert_eq!(
            parse_slurm_opt("--constraint=a100&nvlink").unwrap(),
            ("constraint".into(), Some("a100&nvlink".into()))
        );
        assert_eq!(
            parse_slurm_opt("exclusive").unwrap(),
            ("exclusive".into(), None)
        );
        assert!(parse_slurm_opt("=x").is_err());
        assert!(parse_slurm_opt("bad key=1").is_err());
        assert!(parse_slurm_opt("output=/tmp/x").is_err());
    }
}
