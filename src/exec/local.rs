//! The local executor: each stage runs in a worker process (`rst worker JOB`), which
//! isolates tch's process-global RNG and thread settings and contains crashes; `command`
//! stages, whose code is a program of their own anyway, are started by rst itself
//! (`exec::direct`), one process fewer per stage.
//!
//! Each worker leads its own process group, which the stage's programs (a command
//! stage's `sh -c …` and whatever it starts) inherit. On Ctrl-C or SIGTERM rst ends the
//! whole group: SIGTERM, then SIGKILL after [`GRACE`]. Since a worker in its own group no
//! longer gets the terminal's SIGINT, rst forwards the interrupt; a worker whose rst died
//! (even by SIGKILL) gets SIGTERM from the kernel (`PR_SET_PDEATHSIG`) and ends its group
//! itself ([`guard_worker_group`]). Whatever a stage leaves running when its worker exits is
//! ended too: no stage program outlives its stage.
use std::io::{BufRead, BufReader};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::guard::Guard;
use super::{Cancel, Executor, Job, JobError, JobFile, WorkerEvent};
use crate::stages::command::STOP_REQUESTED;

/// How long a stage's processes get between SIGTERM and SIGKILL.
pub const GRACE: Duration = Duration::from_millis(1000);

/// Process groups (= worker pids) of running workers, shared with the Ctrl-C handler.
pub(super) type Groups = Arc<Mutex<Vec<u32>>>;

pub struct LocalExecutor {
    exe: PathBuf,
    groups: Groups,
    /// Set on every worker's command on top of this process's environment (e.g. what
    /// `--accept-new-checksums` tells the download stages), so nobody calls `set_var`.
    env: Vec<(String, String)>,
    /// The guardian of the groups of command stages, started with the first one; None if
    /// it could not be (then they run in workers, as other stages).
    guard: std::sync::OnceLock<Option<Guard>>,
}

/// Whether a live process (not a zombie waiting for its reaper) is in process group `pgid`.
fn group_alive(pgid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    if unsafe { libc::killpg(pgid as libc::pid_t, 0) } != 0 {
        return false; // the common case: nobody left
    }
    // Zombies count for kill(2); orphans are reaped by init whenever it gets to it.
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return true;
    };
    procs.flatten().any(|e| {
        if !e
            .file_name()
            .as_encoded_bytes()
            .iter()
            .all(u8::is_ascii_digit)
        {
            return false;
        }
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            return false;
        };
        // `pid (comm) STATE PPID PGRP ...`: comm may hold spaces and parentheses.
        let mut fields = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace())
            .into_iter()
            .flatten();
        let state = fields.next().unwrap_or("Z");
        let pgrp = fields.nth(1).and_then(|g| g.parse::<u32>().ok());
        pgrp == Some(pgid) && !matches!(state, "Z" | "X")
    })
}

pub(super) fn signal_group(pgid: u32, sig: libc::c_int) {
    // SAFETY: plain syscall; an ended group gives ESRCH, which is fine.
    unsafe {
        libc::killpg(pgid as libc::pid_t, sig);
    }
}

/// Waits up to `timeout` for group `pgid` to empty; true when it did.
fn wait_group_gone(pgid: u32, timeout: Duration) -> bool {
    let t0 = Instant::now();
    loop {
        if !group_alive(pgid) {
            return true;
        }
        if t0.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Ends every process of group `pgid`: SIGTERM, then SIGKILL after [`GRACE`].
pub fn end_group(pgid: u32) {
    if !group_alive(pgid) {
        return;
    }
    signal_group(pgid, libc::SIGTERM);
    if !wait_group_gone(pgid, GRACE) {
        signal_group(pgid, libc::SIGKILL);
        wait_group_gone(pgid, GRACE);
    }
}

impl LocalExecutor {
    pub fn new() -> std::io::Result<Self> {
        Ok(LocalExecutor {
            exe: std::env::current_exe()?,
            groups: Arc::new(Mutex::new(Vec::new())),
            env: Vec::new(),
            guard: std::sync::OnceLock::new(),
        })
    }

    /// Workers get `env` on top of this process's environment.
    pub fn with_env(mut self, env: &[(String, String)]) -> Self {
        self.env.extend_from_slice(env);
        self
    }

    /// What the Ctrl-C handler calls: ends every running worker's process group (the
    /// stage's programs with it). Their staging dirs are cleaned by the next run of the
    /// same key.
    pub fn killer(&self) -> impl Fn() + Send + 'static {
        let groups = self.groups.clone();
        move || {
            let running: Vec<u32> = groups.lock().map(|g| g.clone()).unwrap_or_default();
            for &pgid in &running {
                signal_group(pgid, libc::SIGTERM);
            }
            std::thread::sleep(GRACE);
            for &pgid in &running {
                signal_group(pgid, libc::SIGKILL);
            }
        }
    }
}

/// Whether this worker was told to stop (see [`guard_worker_group`]).
pub fn worker_interrupted() -> bool {
    STOP_REQUESTED.load(Ordering::SeqCst)
}

/// The worker's own process group, for its signal handler.
static GROUP: AtomicI32 = AtomicI32::new(0);
/// The write end of the pipe that wakes the thread that sends SIGKILL after [`GRACE`].
static WAKE: AtomicI32 = AtomicI32::new(-1);

/// The worker's handler of SIGINT, SIGTERM and SIGHUP. A plain signal handler, not the
/// ctrlc crate's thread: [`STOP_REQUESTED`] must be set before the stage's program, which
/// gets the same SIGTERM, has exited and been waited for (else a program that exits 0 on
/// SIGTERM could be stored). It only calls async-signal-safe functions.
extern "C" fn on_stop(_sig: libc::c_int) {
    if STOP_REQUESTED.swap(true, Ordering::SeqCst) {
        return; // our own SIGTERM to the group, or a repeated signal
    }
    // SAFETY: killpg and write are async-signal-safe.
    unsafe {
        libc::killpg(GROUP.load(Ordering::SeqCst), libc::SIGTERM);
        let fd = WAKE.load(Ordering::SeqCst);
        if fd >= 0 {
            libc::write(fd, b"x".as_ptr().cast(), 1);
        }
    }
}

/// Called first thing by `rst worker`: when the worker leads its own process group (the
/// local executor starts it so), SIGINT, SIGTERM or SIGHUP — from rst, or from the kernel
/// when rst died — end the whole group: SIGTERM to it, then SIGKILL after [`GRACE`] (which
/// ends this worker too). A worker in someone else's group (a Slurm job) is left as it was.
pub fn guard_worker_group() {
    // SAFETY: getpgrp/getpid cannot fail.
    let (pgrp, pid) = unsafe { (libc::getpgrp(), libc::getpid()) };
    if pgrp != pid {
        return;
    }
    GROUP.store(pgrp, Ordering::SeqCst);
    let mut fds = [-1; 2];
    // SAFETY: pipe2 writes two fds into the array; close-on-exec keeps them from stages.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == 0 {
        WAKE.store(fds[1], Ordering::SeqCst);
        let read_end = fds[0];
        std::thread::spawn(move || {
            let mut b = [0u8; 1];
            // SAFETY: reads one byte into `b` from our own pipe.
            while unsafe { libc::read(read_end, b.as_mut_ptr().cast(), 1) } < 0 {}
            std::thread::sleep(GRACE);
            // SAFETY: plain syscall on our own group (this process included).
            unsafe {
                libc::killpg(pgrp, libc::SIGKILL);
            }
        });
    }
    // SAFETY: `on_stop` is async-signal-safe; the sigaction struct is fully initialised.
    // SIG_IGN for SIGPIPE: when rst is gone, writing an event to its pipe must not kill this
    // worker before the group is ended (the write error is ignored instead); the stage's
    // programs start with the default again (std resets SIGPIPE in children).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_stop as extern "C" fn(libc::c_int) as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// How `rst worker` ends: when interrupted, it waits for its signal handler to end the
/// group (this process included) instead of leaving stage programs behind.
pub fn exit_worker(code: i32) -> ! {
    wait_if_interrupted();
    std::process::exit(code)
}

/// [`exit_worker`] for a `main` that returns its exit code.
pub fn worker_exit_code(code: i32) -> std::process::ExitCode {
    wait_if_interrupted();
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn wait_if_interrupted() {
    if worker_interrupted() {
        std::thread::sleep(GRACE * 3);
    }
}

impl Executor for LocalExecutor {
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
        let logs = job.cache_dir.join("logs");
        let log_tmp = logs.join(format!("{}.{}.log", job.key, std::process::id()));
        let log = std::fs::File::create(&log_tmp).map_err(|source| JobError::Log {
            path: log_tmp.clone(),
            source,
        })?;
        let log_path = logs.join(format!("{}.log", job.key));
        let guard = (job.kind == "command")
            .then(|| self.guard.get_or_init(|| Guard::start().ok()).as_ref())
            .flatten();
        let ran = match guard {
            Some(guard) => {
                let (finished, reused) =
                    super::direct::run(job, &log, &self.groups, guard, cancel, on_event);
                Ok((finished, reused, None))
            }
            None => self.run_worker(job_file, job, log, cancel, on_event),
        };
        let (finished, reused, status) = match ran {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_file(&log_tmp);
                return Err(e);
            }
        };
        if reused {
            // Another process computed the artifact: its log (the entry's) stays.
            let _ = std::fs::remove_file(&log_tmp);
        } else {
            let _ = std::fs::rename(&log_tmp, &log_path);
        }
        if finished {
            return Ok(());
        }
        Err(match status {
            Some(Ok(s)) if cancel.is_cancelled() || s.signal() == Some(libc::SIGINT) => {
                JobError::Interrupted {
                    detail: Some(s.to_string()),
                }
            }
            _ if cancel.is_cancelled() => JobError::Interrupted { detail: None },
            Some(Ok(status)) => JobError::NoResult {
                status,
                log: log_path,
            },
            Some(Err(e)) => JobError::Wait(e),
            None => JobError::Internal("the stage reported no result"),
        })
    }
}

/// (a result was reported, it was another run's artifact, how the worker exited).
type WorkerEnd = (
    bool,
    bool,
    Option<std::io::Result<std::process::ExitStatus>>,
);

impl LocalExecutor {
    /// Runs `job` in a worker process (`rst worker JOB`, or `rst-torch worker JOB`) whose
    /// stderr is `log`, forwarding the events it prints.
    fn run_worker(
        &self,
        job_file: &JobFile<'_>,
        job: &Job,
        log: std::fs::File,
        cancel: &Cancel,
        on_event: &mut (dyn FnMut(WorkerEvent) + Send),
    ) -> Result<WorkerEnd, JobError> {
        let exe = super::worker_exe(&self.exe, job)?;
        let job_file = job_file.path()?;
        let mut cmd = Command::new(&exe);
        cmd.arg("worker")
            .arg(job_file)
            .env("RAYON_NUM_THREADS", job.threads.to_string())
            .env("OMP_NUM_THREADS", job.threads.to_string())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(job.visible_devices().map(|d| ("CUDA_VISIBLE_DEVICES", d)))
            .envs(crate::numerics::worker_env(&job.record.env).iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            // Its own process group, so that ending the stage ends all it started.
            .process_group(0);
        die_with_parent(&mut cmd);
        // Registered under the lock, so a Ctrl-C between spawn and push cannot miss it.
        let mut groups = self
            .groups
            .lock()
            .map_err(|_| JobError::Internal("the list of running workers is poisoned"))?;
        let mut child: Child = cmd.spawn().map_err(|source| JobError::Spawn {
            exe: exe.clone(),
            source,
        })?;
        let pid = child.id();
        groups.push(pid);
        drop(groups);
        // Ctrl-C sets the flag before it reads the list: either it saw this worker, or we
        // see the flag.
        if cancel.is_cancelled() {
            signal_group(pid, libc::SIGTERM);
        }
        let Some(stdout) = child.stdout.take() else {
            end_group(pid);
            let _ = child.wait();
            return Err(JobError::Internal("the worker's stdout was not piped"));
        };
        let mut finished = false;
        let mut reused = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(ev) = serde_json::from_str::<WorkerEvent>(&line) {
                finished |= matches!(ev, WorkerEvent::Done { .. } | WorkerEvent::Failed(_));
                reused |= matches!(ev, WorkerEvent::Done { reused: true, .. });
                on_event(ev);
            }
        }
        let status = child.wait();
        // The worker is gone; whatever it started that still runs goes with it.
        end_group(pid);
        if let Ok(mut groups) = self.groups.lock() {
            groups.retain(|p| *p != pid);
        }
        Ok((finished, reused, Some(status)))
    }
}

/// Makes the child get SIGTERM when this thread ends (rst killed, even by SIGKILL), so a
/// worker never outlives the run that started it; its handler then ends its group.
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: getpid is async-signal-safe.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe
    // functions (prctl, getppid, raise).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl: then nobody would send the signal.
            if libc::getppid() != parent {
                libc::raise(libc::SIGTERM);
            }
            Ok(())
        });
    }
}
