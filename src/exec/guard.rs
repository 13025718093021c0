//! The guardian of the process groups of the command stages rst starts itself
//! (`exec::direct`): a forked copy of rst that does nothing but wait, and when rst is gone
//! (even killed by SIGKILL, which no handler sees) ends every group still registered:
//! SIGTERM, then SIGKILL after [`GRACE`](super::local::GRACE).
//!
//! Why a process and not `PR_SET_PDEATHSIG`: that signal reaches only the direct child (the
//! `sh`), never what it started in the background. A `rst worker` per stage did this job
//! before, at the cost of one more process per stage; one guardian per run does it for all.
//!
//! Protocol: a pipe whose only long-lived writer is rst. A stage's program registers its
//! own pid (= its process group) between fork and exec, so nothing it starts can escape
//! before it is known; rst unregisters the group once it has ended it. Records are 4-byte
//! `i32`s (positive: register, negative: unregister), written atomically (under
//! `PIPE_BUF`). rst's death closes the write end: the guardian reads end-of-file.
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;

/// The write end of the guardian's pipe.
pub struct Guard {
    write: OwnedFd,
}

/// Most groups one guardian tracks at once (more than any thread budget runs).
const MAX_GROUPS: usize = 16384;

impl Guard {
    /// Forks the guardian.
    pub fn start() -> io::Result<Guard> {
        let mut fds = [-1; 2];
        // SAFETY: pipe2 writes two fds into the array; close-on-exec keeps them from the
        // programs rst starts (a registering child writes before its exec).
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both fds were just created and are owned here.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: the child runs only async-signal-safe calls (see `guardian`) and never
        // returns; the parent goes on as before.
        match unsafe { libc::fork() } {
            -1 => Err(io::Error::last_os_error()),
            0 => guardian(read.as_raw_fd()),
            _ => Ok(Guard { write }),
        }
    }

    /// Makes `cmd`'s process register itself (its pid, which is its process group: call
    /// after `process_group(0)`) before it execs.
    pub fn arm(&self, cmd: &mut std::process::Command) {
        let fd = self.write.as_raw_fd();
        // SAFETY: getpid and write are async-signal-safe; the fd stays open in the child
        // until its exec (close-on-exec).
        unsafe {
            cmd.pre_exec(move || {
                let pid = libc::getpid().to_ne_bytes();
                if libc::write(fd, pid.as_ptr().cast(), pid.len()) != pid.len() as isize {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    /// Forgets group `pgid` (ended by rst, its id may be reused).
    pub fn disarm(&self, pgid: u32) {
        let rec = (-(pgid as i32)).to_ne_bytes();
        // SAFETY: a 4-byte write to our own pipe.
        unsafe {
            libc::write(self.write.as_raw_fd(), rec.as_ptr().cast(), rec.len());
        }
    }
}

/// The guardian's whole life. Only async-signal-safe calls: it is a fork of a process
/// with threads, in which another thread may have held the allocator's lock.
fn guardian(read: i32) -> ! {
    // SAFETY: plain syscalls on this process's own fds and signal dispositions.
    unsafe {
        // The terminal's Ctrl-C goes to rst, which stops the stages itself.
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
            libc::signal(sig, libc::SIG_IGN);
        }
        // Keep nothing of rst's open: not its stdout (a reader waiting for end-of-file),
        // not its lock files (flock locks live as long as any copy of their fd).
        for fd in 0..4096 {
            if fd != read {
                libc::close(fd);
            }
        }
    }
    let mut groups = [0i32; MAX_GROUPS];
    let mut n = 0usize;
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: reads into our own buffer.
        let k = unsafe { libc::read(read, buf.as_mut_ptr().cast(), buf.len()) };
        if k == 0 {
            break;
        }
        if k < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        for rec in buf[..k as usize].chunks_exact(4) {
            let v = i32::from_ne_bytes([rec[0], rec[1], rec[2], rec[3]]);
            if v > 0 && n < MAX_GROUPS {
                groups[n] = v;
                n += 1;
            } else if let Some(i) = groups[..n].iter().position(|&g| g == -v) {
                n -= 1;
                groups[i] = groups[n];
            }
        }
    }
    let grace = super::local::GRACE;
    // SAFETY: killpg, nanosleep and _exit are async-signal-safe.
    unsafe {
        for &g in &groups[..n] {
            libc::killpg(g, libc::SIGTERM);
        }
        if n > 0 {
            let ts = libc::timespec {
                tv_sec: grace.as_secs() as libc::time_t,
                tv_nsec: grace.subsec_nanos() as libc::c_long,
            };
            libc::nanosleep(&ts, std::ptr::null_mut());
            for &g in &groups[..n] {
                libc::killpg(g, libc::SIGKILL);
            }
        }
        libc::_exit(0)
    }
}
