//! `command` stages run by the local executor without a worker process: rst starts the
//! stage's program (`sh -c …` or its argv) itself, in a process group of its own, waits
//! for it on one of the scheduler's threads, then stores and publishes the artifact
//! in-process with the same code as `rst worker` (`worker::compute`: the key's lock, reuse
//! of what another run finished, verified inputs, staging, atomic publish).
//!
//! Why: a worker process per stage (rst → `rst worker` → `sh`) doubled the processes of a
//! run of small stages. What the worker gave a command stage is kept:
//! - crash isolation: the stage's code is a separate program anyway; a crashing program is
//!   a failed stage (its exit status or signal), and a panic in rst's own storing code is
//!   caught and reported as the stage's failure;
//! - the process-group kill: Ctrl-C and SIGTERM end the group as for a worker
//!   ([`LocalExecutor::killer`](super::local::LocalExecutor::killer)); when rst dies without a
//!   chance to clean up (SIGKILL), the [guardian](super::guard) ends the group;
//! - nothing half-done is stored: a program that exits 0 after rst was told to stop (a
//!   `trap` on SIGTERM) fails as interrupted;
//! - the log: the program's stdout and stderr, and rst's lines about the stage, go to the
//!   stage's log file, which the executor moves into the cache's `logs/`.
use std::fs::File;
use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use super::guard::Guard;
use super::local::{end_group, signal_group, Groups};
use super::worker::{self, Host};
use super::{Cancel, Job, WorkerEvent};
use crate::stages::{command, StageCtx, StageError, StageRunner};

/// Runs the command stage `job` in this process, its program under `guard`; forwards its
/// events. Returns (a result was reported, the result was another run's artifact).
pub(super) fn run(
    job: &Job,
    log: &File,
    groups: &Groups,
    guard: &Guard,
    cancel: &Cancel,
    on_event: &mut (dyn FnMut(WorkerEvent) + Send),
) -> (bool, bool) {
    // What the events said: a result was reported, and it was another run's.
    let (finished, reused) = (AtomicBool::new(false), AtomicBool::new(false));
    let forward = |ev: WorkerEvent| {
        if matches!(ev, WorkerEvent::Done { .. } | WorkerEvent::Failed(_)) {
            finished.store(true, Ordering::Relaxed);
        }
        if matches!(ev, WorkerEvent::Done { reused: true, .. }) {
            reused.store(true, Ordering::Relaxed);
        }
        on_event(ev);
    };
    let host = Direct {
        // Events go to the scheduler as they happen (a lock wait while the stage waits):
        // `on_event` sends them on its channel, so the stage is computed on this thread,
        // with no second one per stage.
        events: Mutex::new(Box::new(forward)),
        log,
        groups,
        guard,
        cancel,
        rss: AtomicU64::new(0),
        visible_devices: job.visible_devices(),
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        worker::compute(job, &command::Command, &host)
    }))
    .unwrap_or_else(|panic| {
        Err(worker::crashed(
            "storing the stage's artifact",
            panic.as_ref(),
        ))
    });
    worker::finish(&host, result);
    drop(host);
    (finished.into_inner(), reused.into_inner())
}

struct Direct<'a> {
    events: Mutex<Box<dyn FnMut(WorkerEvent) + Send + 'a>>,
    log: &'a File,
    groups: &'a Groups,
    guard: &'a Guard,
    cancel: &'a Cancel,
    /// Peak resident memory of the program and what it waited for (KiB).
    rss: AtomicU64,
    /// `CUDA_VISIBLE_DEVICES` for the program: the job's GPU lease.
    visible_devices: Option<String>,
}

impl Host for Direct<'_> {
    fn emit(&self, ev: WorkerEvent) {
        let mut forward = self.events.lock().unwrap_or_else(|e| e.into_inner());
        forward(ev);
    }

    /// The lease, set on the program's command; without one the program inherits rst's
    /// own variable.
    fn gpus(&self, job: &Job) -> Vec<String> {
        job.gpus
            .clone()
            .unwrap_or_else(super::gpus::visible_devices)
    }

    fn log(&self, line: &str) {
        // A lost log line (full disk) is the lesser harm, as with `elog!`.
        let _ = writeln!(&mut &*self.log, "{line}");
    }

    fn run(&self, _runner: &dyn StageRunner, ctx: &StageCtx<'_>) -> Result<(), StageError> {
        let mut program = command::prepare(ctx)?;
        let out = self
            .log
            .try_clone()
            .map_err(|e| StageError::io("the stage's log", e))?;
        let err = self
            .log
            .try_clone()
            .map_err(|e| StageError::io("the stage's log", e))?;
        program
            .cmd
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .env("RAYON_NUM_THREADS", ctx.threads.to_string())
            .envs(
                self.visible_devices
                    .as_ref()
                    .map(|d| ("CUDA_VISIBLE_DEVICES", d)),
            )
            // Its own process group, so that ending the stage ends all it started.
            .process_group(0);
        self.guard.mark(&mut program.cmd);
        // Registered under the lock, so a Ctrl-C between spawn and push cannot miss it.
        let pid = {
            let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
            self.guard.spawning();
            let child = program.cmd.spawn();
            self.guard.spawned(child.as_ref().ok().map(|c| c.id()));
            let child = child.map_err(|e| program.start_error(e))?;
            groups.push(child.id());
            child.id()
        };
        // Ctrl-C sets the flag before it reads the list: either it saw this group, or we
        // see the flag.
        if self.cancel.is_cancelled() {
            signal_group(pid, libc::SIGTERM);
        }
        let waited = wait_with_rusage(pid);
        // The program is gone; whatever it started that still runs goes with it.
        end_group(pid);
        self.guard.disarm(pid);
        if let Ok(mut groups) = self.groups.lock() {
            groups.retain(|p| *p != pid);
        }
        let (status, rss) =
            waited.map_err(|e| StageError::io(format!("cannot wait for `{}`", program.what), e))?;
        self.rss.store(rss, Ordering::Relaxed);
        program.judge(ctx, status, self.cancel.is_cancelled())
    }

    fn peak_rss_kib(&self) -> u64 {
        self.rss.load(Ordering::Relaxed)
    }
}

/// Waits for child `pid`; its exit status and peak resident memory (KiB, including the
/// children it waited for).
fn wait_with_rusage(pid: u32) -> std::io::Result<(ExitStatus, u64)> {
    let mut status = 0;
    // SAFETY: wait4 only writes into the zeroed struct and the int we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: as above; `pid` is our own child, not yet waited for.
        let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
        if r == pid as libc::pid_t {
            return Ok((ExitStatus::from_raw(status), usage.ru_maxrss.max(0) as u64));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
