//! The guardian of the process groups of the command stages rst starts itself
//! (`exec::direct`): a forked copy of rst that does nothing but wait, and when rst is gone
//! (even killed by SIGKILL, which no handler sees) ends every group still registered:
//! SIGTERM, then SIGKILL after [`GRACE`](super::local::GRACE).
//!
//! Why a process and not `PR_SET_PDEATHSIG`: that signal reaches only the direct child (the
//! `sh`), never what it started in the background. A `rst worker` per stage did this job
//! before, at the cost of one more process per stage; one guardian per run does it for all.
//!
//! Protocol: a pipe whose only long-lived writer is rst. Records are 4-byte `i32`s,
//! written atomically (under `PIPE_BUF`): `SPAWNING` before rst starts a program, then
//! its pid (= its process group, positive: register) or `SPAWN_FAILED`; a negative pid
//! when rst has ended that group itself (unregister). rst's death closes the write end:
//! the guardian reads end-of-file and ends the registered groups.
//!
//! rst registers a program from its own side, right after the spawn returns. Why not from
//! the child, between fork and exec, as before: a `pre_exec` hook makes the standard
//! library fork rst (copying its page tables, then copy-on-write faults with TLB
//! shootdowns in every thread of rst) instead of `posix_spawn`'s vfork; for a run of a
//! thousand small stages that was a fifth of all CPU time (measured in #11). The price is
//! a window of microseconds between the program's exec and its registration: if rst dies
//! there, a `SPAWNING` record is left unmatched, and the guardian then also ends every
//! process carrying rst's [marker](Guard::MARKER) in its environment (each program rst
//! starts gets it, and what it starts inherits it), found by reading `/proc/*/environ`.
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
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
        let rst = std::process::id();
        // SAFETY: the child runs only async-signal-safe calls (see `guardian`) and never
        // returns; the parent goes on as before.
        match unsafe { libc::fork() } {
            -1 => Err(io::Error::last_os_error()),
            0 => guardian(read.as_raw_fd(), rst),
            _ => Ok(Guard { write }),
        }
    }

    /// The environment variable every program rst starts carries: `RST_GUARD=<rst's pid>`.
    pub const MARKER: &'static str = "RST_GUARD";

    /// Marks `cmd` (see [`MARKER`](Self::MARKER)); call before [`spawning`](Self::spawning).
    pub fn mark(&self, cmd: &mut std::process::Command) {
        cmd.env(Self::MARKER, std::process::id().to_string());
    }

    /// Says a program is about to start; follow with [`spawned`](Self::spawned).
    pub fn spawning(&self) {
        self.send(SPAWNING);
    }

    /// Registers the group of the program just started (`Some(pid)`, its process group:
    /// it was started with `process_group(0)`), or says the start failed (`None`).
    pub fn spawned(&self, pgid: Option<u32>) {
        self.send(pgid.map_or(SPAWN_FAILED, |p| p as i32));
    }

    /// Forgets group `pgid` (ended by rst, its id may be reused).
    pub fn disarm(&self, pgid: u32) {
        self.send(-(pgid as i32));
    }

    fn send(&self, rec: i32) {
        let rec = rec.to_ne_bytes();
        // SAFETY: a 4-byte write to our own pipe.
        unsafe {
            libc::write(self.write.as_raw_fd(), rec.as_ptr().cast(), rec.len());
        }
    }
}

/// A program is about to start (no pid is 0).
const SPAWNING: i32 = 0;
/// The program announced by [`SPAWNING`] did not start.
const SPAWN_FAILED: i32 = i32::MIN;

/// The guardian's whole life. Only async-signal-safe calls: it is a fork of a process
/// with threads, in which another thread may have held the allocator's lock.
fn guardian(read: i32, rst: u32) -> ! {
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
    // Programs announced and not yet registered.
    let mut starting = 0usize;
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
            match v {
                SPAWNING => starting += 1,
                SPAWN_FAILED => starting = starting.saturating_sub(1),
                _ if v > 0 => {
                    starting = starting.saturating_sub(1);
                    if n < MAX_GROUPS {
                        groups[n] = v;
                        n += 1;
                    }
                }
                _ => {
                    if let Some(i) = groups[..n].iter().position(|&g| g == -v) {
                        n -= 1;
                        groups[i] = groups[n];
                    }
                }
            }
        }
    }
    if starting > 0 {
        // rst died while starting a program: it may run unregistered.
        let mut marker = [0u8; 32];
        let len = marker_of(rst, &mut marker);
        n += groups_marked(&marker[..len], &mut groups[n..]);
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

/// Writes `RST_GUARD=<rst>` into `buf`; its length. (By hand: no allocation in the
/// guardian.)
fn marker_of(rst: u32, buf: &mut [u8; 32]) -> usize {
    let name = Guard::MARKER.as_bytes();
    buf[..name.len()].copy_from_slice(name);
    buf[name.len()] = b'=';
    let mut len = name.len() + 1;
    let mut digits = [0u8; 10];
    let mut k = 0;
    let mut v = rst;
    loop {
        digits[k] = b'0' + (v % 10) as u8;
        k += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    while k > 0 {
        k -= 1;
        buf[len] = digits[k];
        len += 1;
    }
    len
}

/// The process groups of every process whose environment holds the entry `marker`
/// (`NAME=value`), written into `out`; how many. Reads `/proc` with raw system calls
/// only (`getdents64`, `open`, `read`): async-signal-safe, as the guardian must be.
fn groups_marked(marker: &[u8], out: &mut [i32]) -> usize {
    let mut n = 0;
    // SAFETY: open/getdents64/read/close on fds this function owns, into its own
    // buffers; getpgid takes any pid.
    unsafe {
        let dir = libc::open(
            c"/proc".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        if dir < 0 {
            return 0;
        }
        let mut ents = [0u8; 8192];
        loop {
            let got = libc::syscall(libc::SYS_getdents64, dir, ents.as_mut_ptr(), ents.len());
            if got <= 0 {
                break;
            }
            let mut at = 0usize;
            while at < got as usize {
                // struct linux_dirent64 { u64 d_ino; i64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
                let reclen = u16::from_ne_bytes([ents[at + 16], ents[at + 17]]) as usize;
                let name = &ents[at + 19..at + reclen];
                let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
                at += reclen;
                let Some(pid) = parse_pid(name) else {
                    continue;
                };
                if n < out.len() && environ_has(name, marker) {
                    let pgid = libc::getpgid(pid);
                    if pgid > 1 && !out[..n].contains(&pgid) {
                        out[n] = pgid;
                        n += 1;
                    }
                }
            }
        }
        libc::close(dir);
    }
    n
}

/// `name` as a pid, when it is all digits.
fn parse_pid(name: &[u8]) -> Option<i32> {
    if name.is_empty() || name.len() > 9 || !name.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(name.iter().fold(0i32, |v, d| v * 10 + (d - b'0') as i32))
}

/// Whether `/proc/<pid>/environ` has the entry `marker`, read in chunks with a matcher
/// that needs no buffer for the whole environment.
fn environ_has(pid_name: &[u8], marker: &[u8]) -> bool {
    let mut path = [0u8; 32];
    let parts: [&[u8]; 3] = [b"/proc/", pid_name, b"/environ\0"];
    let mut len = 0;
    for p in parts {
        path[len..len + p.len()].copy_from_slice(p);
        len += p.len();
    }
    // SAFETY: a NUL-terminated path in our buffer; reads into our buffer; fd closed.
    unsafe {
        let fd = libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return false;
        }
        let mut buf = [0u8; 4096];
        // How much of `marker` the current entry matched so far; None: it differs.
        let mut matched = Some(0usize);
        let mut found = false;
        'read: loop {
            let k = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
            if k <= 0 {
                break;
            }
            for &b in &buf[..k as usize] {
                if b == 0 {
                    if matched == Some(marker.len()) {
                        found = true;
                        break 'read;
                    }
                    matched = Some(0);
                } else {
                    matched = matched
                        .filter(|&m| m < marker.len() && marker[m] == b)
                        .map(|m| m + 1);
                }
            }
        }
        libc::close(fd);
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn the_marker_names_rst() {
        let mut buf = [0u8; 32];
        let len = marker_of(4_194_303, &mut buf);
        assert_eq!(&buf[..len], b"RST_GUARD=4194303");
        let len = marker_of(7, &mut buf);
        assert_eq!(&buf[..len], b"RST_GUARD=7");
    }

    #[test]
    fn marked_processes_are_found_by_their_environment_and_no_other() {
        let marker = format!("{}=test-{}", Guard::MARKER, std::process::id());
        let spawn = |mark: bool| {
            let mut c = std::process::Command::new("sleep");
            c.arg("30").process_group(0);
            if mark {
                c.env(Guard::MARKER, marker.split_once('=').unwrap().1);
            }
            c.spawn().unwrap()
        };
        let (mut marked, mut other) = (spawn(true), spawn(false));
        // The environment is readable once the program has exec'd.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let mut out = [0i32; 16];
        let n = groups_marked(marker.as_bytes(), &mut out);
        // A prefix of the marker's value is not the marker.
        let mut none = [0i32; 16];
        let prefix = &marker.as_bytes()[..marker.len() - 1];
        let m = groups_marked(prefix, &mut none);
        for c in [&mut marked, &mut other] {
            let _ = c.kill();
            let _ = c.wait();
        }
        assert_eq!(&out[..n], &[marked.id() as i32]);
        assert_eq!(m, 0);
    }
}
