//! Issue #10, items 5, 6, 7 and 9: stage programs end with an interrupted run, no panics on
//! odd paths or a full disk, bounded archives and HTTP waits, and the smaller holes
//! (`rst log` on a missing cache, `export-crate` into a read-only dir, garbage archives,
//! broken `--set` values, leftovers of killed runs).
use crate::common;

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{wait_for, Output, TestDir};

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether `pid` is a live process (not gone, not a zombie waiting to be reaped).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        // `pid (comm) S ...`: the state follows the last `)`.
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

fn pids_in(t: &TestDir, file: &str) -> Vec<u32> {
    std::fs::read_to_string(t.join(file))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// A stage whose shell starts a background sleeper, a sleeper that ignores SIGTERM, and
/// waits on a third: each writes its pid into `pids`.
const STUBBORN: &str = r#"
name: stubborn
stages:
  slow:
    kind: command
    params:
      shell: |
        echo $$ >> $RST_PROJECT/pids
        sleep 30 &
        echo $! >> $RST_PROJECT/pids
        (trap '' TERM; sleep 30) &
        echo $! >> $RST_PROJECT/pids
        touch $RST_PROJECT/started
        sleep 30
        echo late > $RST_PROJECT/late
        echo x > $RST_OUT/x
"#;

/// Starts `rst run` on STUBBORN, waits until its stage runs, sends `sig` to rst alone, and
/// returns rst's exit code and how long after the signal every stage process was gone.
fn interrupt_run(sig: libc::c_int) -> (TestDir, Option<i32>, Duration) {
    let t = TestDir::new();
    t.write("p.yaml", STUBBORN);
    let mut child = t
        .command(&["run", "p.yaml"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the stage to start", Duration::from_secs(20), || {
        t.exists("started") && pids_in(&t, "pids").len() == 3
    });
    let pids = pids_in(&t, "pids");
    assert!(pids.iter().all(|&p| alive(p)), "stage processes run");
    let t0 = Instant::now();
    // SAFETY: a signal to our own child, not to its group.
    unsafe { libc::kill(child.id() as i32, sig) };
    let code = child.wait().unwrap().code();
    let exited = t0.elapsed();
    let mut gone = None;
    while t0.elapsed() < Duration::from_secs(10) {
        if pids.iter().all(|&p| !alive(p)) {
            gone = Some(t0.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let Some(gone) = gone else {
        let left: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
        for &p in &left {
            // SAFETY: cleaning up what the test started.
            unsafe { libc::kill(p as i32, libc::SIGKILL) };
        }
        panic!("stage processes {left:?} outlived the interrupted run");
    };
    eprintln!(
        "signal {sig}: rst exited after {exited:?}, every stage process gone {gone:?} after it"
    );
    (t, code, gone)
}

#[test]
fn sigterm_to_rst_alone_ends_the_stage_process_group() {
    let (t, code, gone) = interrupt_run(libc::SIGTERM);
    assert_eq!(code, Some(130));
    assert!(gone < Duration::from_millis(2500), "took {gone:?}");
    assert!(t.entries().is_empty(), "nothing cached: {:?}", t.entries());
    assert!(!t.exists("late"));
}

#[test]
fn sigint_to_rst_alone_is_forwarded_to_the_stage_process_group() {
    let (t, code, gone) = interrupt_run(libc::SIGINT);
    assert_eq!(code, Some(130));
    assert!(gone < Duration::from_millis(2500), "took {gone:?}");
    assert!(t.entries().is_empty(), "nothing cached: {:?}", t.entries());
    assert!(!t.exists("late"));
}

/// rst killed by SIGKILL cannot clean up: the kernel tells its workers (PR_SET_PDEATHSIG),
/// and each ends its process group.
#[test]
fn sigkill_to_rst_still_ends_the_stage_process_group() {
    let (t, _code, gone) = interrupt_run(libc::SIGKILL);
    assert!(gone < Duration::from_millis(3000), "took {gone:?}");
    assert!(t.entries().is_empty(), "nothing cached: {:?}", t.entries());
    assert!(!t.exists("late"));
}

/// A program that exits 0 on SIGTERM (after writing half its output) is not stored.
#[test]
fn a_program_that_exits_0_on_sigterm_is_not_cached() {
    let t = TestDir::new();
    t.write(
        "p.yaml",
        r#"
name: trapper
stages:
  s:
    kind: command
    params:
      shell: "trap 'echo half > $RST_OUT/x; exit 0' TERM; touch $RST_PROJECT/started; sleep 30 & wait"
"#,
    );
    let mut child = t
        .command(&["run", "p.yaml"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the stage to start", Duration::from_secs(20), || {
        t.exists("started")
    });
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(130));
    assert!(t.entries().is_empty(), "half an artifact was cached");
}

// ---- item 6: no panics --------------------------------------------------------------

const TINY: &str =
    "name: tiny\nstages:\n  s:\n    kind: command\n    params: {shell: 'echo hi > $RST_OUT/x'}\n";

fn rst_os(t: &TestDir, args: &[&OsStr]) -> Output {
    let out = t.command(&[]).args(args).output().expect("cannot run rst");
    Output {
        args: args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn non_utf8_pipeline_path_or_cache_dir_is_a_user_error_not_a_panic() {
    let t = TestDir::new();
    let bad = OsStr::from_bytes(b"p\xff.yaml");
    std::fs::write(t.path().join(bad), TINY).unwrap();
    let out = rst_os(&t, &[OsStr::new("run"), bad]);
    out.assert_code(2).assert_stderr_contains("not valid UTF-8");
    assert!(t.entries().is_empty());

    t.write("p.yaml", TINY);
    let cache = OsStr::from_bytes(b"cache\xfe");
    for sub in ["run", "status", "gc", "verify", "log"] {
        let mut args = vec![OsStr::new(sub)];
        if sub != "verify" && sub != "log" {
            args.push(OsStr::new("p.yaml"));
        }
        args.extend([OsStr::new("--cache-dir"), cache]);
        std::fs::create_dir_all(t.path().join(cache)).unwrap();
        let out = rst_os(&t, &args);
        out.assert_code(2)
            .assert_stderr_contains("cache directory")
            .assert_stderr_contains("not valid UTF-8");
    }
}

/// Mounts a tmpfs of `size` at `dir` (root only); unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str, opts: &str) -> Option<Tmpfs> {
        if !is_root() {
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}{opts}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Files under `dir` (relative paths), sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
        }
    }
    out.sort();
    out
}

/// Leftovers a run must not leave: staging dirs, job files, per-pid logs, temp files.
fn leftovers(cache: &Path) -> Vec<String> {
    tree(cache)
        .into_iter()
        .filter(|p| {
            let name = p.rsplit('/').next().unwrap_or(p);
            (p.starts_with("tmp/") && p != "tmp/jobs")
                || name.ends_with(".tmp")
                || (p.starts_with("logs/") && name.matches('.').count() > 1)
        })
        .collect()
}

#[test]
fn a_full_cache_disk_is_a_clear_error_and_the_next_run_recovers() {
    let t = TestDir::new();
    let Some(_fs) = Tmpfs::mount(&t.join("small"), "2m", "") else {
        eprintln!("SKIPPED: a_full_cache_disk_is_a_clear_error_and_the_next_run_recovers needs root (mount -t tmpfs)");
        return;
    };
    let cache = t.join("small/cache");
    let cache_s = cache.to_str().unwrap();
    // A stage that writes more than the disk holds.
    t.write(
        "big.yaml",
        "name: big\nstages:\n  fill:\n    kind: command\n    params: {shell: 'echo start; head -c 4000000 /dev/zero > $RST_OUT/zeros'}\n",
    );
    let out = t.rst(&["run", "big.yaml", "--cache-dir", cache_s]);
    out.assert_no_panic()
        .assert_stderr_contains("No space left on device")
        .assert_stderr_contains(cache_s);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(tidy(&out.stderr), "{}", out.stderr);
    // No worker panicked (exit status 101); a bare "101" may be in a key or a temp path.
    assert!(
        !out.stderr.contains("exit status: 101") && !out.stderr.contains("panicked"),
        "{}",
        out.stderr
    );
    assert!(common::shard_children(&cache.join("entries")).is_empty());

    // A stage fills the disk outside its output and fails: the worker's log lines (its
    // stderr is the log, on that disk) cannot be written. This used to panic in the
    // worker's eprintln! (exit status 101).
    let filler = t.join("small/filler");
    t.write(
        "fill.yaml",
        &format!(
            "name: fill\nstages:\n  fill:\n    kind: command\n    params: {{shell: 'head -c 3000000 /dev/zero > {}; exit 1'}}\n",
            filler.display()
        ),
    );
    let out = t.rst(&["run", "fill.yaml", "--cache-dir", cache_s]);
    out.assert_code(2)
        .assert_stderr_contains("No space left on device")
        .assert_stderr_contains(cache_s);
    // No worker panicked (exit status 101); a bare "101" may be in a key or a temp path.
    assert!(
        !out.stderr.contains("exit status: 101") && !out.stderr.contains("panicked"),
        "{}",
        out.stderr
    );

    // Still full: the next run refuses to start, saying why.
    t.write("tiny.yaml", TINY);
    let out = t.rst(&["run", "tiny.yaml", "--cache-dir", cache_s]);
    out.assert_code(2)
        .assert_stderr_contains("No space left on device")
        .assert_stderr_contains(cache_s);
    assert!(common::shard_children(&cache.join("entries")).is_empty());

    // Space freed: the next run works and leaves nothing behind.
    std::fs::remove_file(&filler).unwrap();
    t.ok(&["run", "tiny.yaml", "--cache-dir", cache_s]);
    assert_eq!(leftovers(&cache), Vec::<String>::new());
    assert_eq!(
        common::shard_children(&cache.join("entries")).len(),
        1,
        "one entry"
    );
}

// ---- item 7: bounded archives and HTTP waits -------------------------------------------

fn tar_gz(name: &str, data: &[u8]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let mut b = tar::Builder::new(gz);
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, name, data).unwrap();
    b.into_inner().unwrap().finish().unwrap()
}

fn zip(name: &str, data: &[u8]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    w.start_file(
        name,
        zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated),
    )
    .unwrap();
    w.write_all(data).unwrap();
    w.finish().unwrap().into_inner()
}

fn archive_pipeline(file: &str, extra: &str) -> String {
    format!(
        "name: arch\nstages:\n  get:\n    kind: download\n    publish: true\n    params:\n{extra}      files:\n        - name: {file}\n          mirrors: [{file}]\n"
    )
}

#[test]
fn an_archive_that_unpacks_past_the_limit_is_refused_and_nothing_cached() {
    let t = TestDir::new();
    // 3 MiB of zeros: a few KiB compressed.
    let zeros = vec![0u8; 3 << 20];
    std::fs::write(t.join("bomb.tar.gz"), tar_gz("zeros.bin", &zeros)).unwrap();
    t.write(
        "p.yaml",
        &archive_pipeline("bomb.tar.gz", "      max_unpacked_bytes: 1048576\n"),
    );
    let out = t.rst(&["run", "p.yaml"]);
    out.assert_code(2)
        .assert_stderr_contains("archive bomb.tar.gz")
        .assert_stderr_contains("max_unpacked_bytes")
        .assert_stderr_contains("1048576");
    assert!(tidy(&out.stderr), "{}", out.stderr);
    assert!(t.entries().is_empty() && t.objects().is_empty());
    assert!(!t.exists("results/p/get"));

    // The default ratio limit (200) catches a zip of zeros (about 1000:1)...
    std::fs::write(t.join("bomb.zip"), zip("zeros.bin", &zeros)).unwrap();
    t.write("z.yaml", &archive_pipeline("bomb.zip", ""));
    let out = t.rst(&["run", "z.yaml"]);
    out.assert_code(2)
        .assert_stderr_contains("archive bomb.zip")
        .assert_stderr_contains("max_unpack_ratio");
    assert!(t.entries().is_empty() && t.objects().is_empty());

    // ...and a genuine one passes with the limit raised.
    t.write(
        "z.yaml",
        &archive_pipeline("bomb.zip", "      max_unpack_ratio: 0\n"),
    );
    t.ok(&["run", "z.yaml"]);
    assert_eq!(
        std::fs::metadata(t.join("results/z/get/files/bomb.zip/zeros.bin"))
            .unwrap()
            .len(),
        3 << 20
    );
}

/// Accepts connections on 127.0.0.1 and, per request, calls `answer` (request number,
/// request text, stream). Serves at most `max` connections; returns the base URL.
fn server(
    max: usize,
    answer: impl Fn(usize, &str, &mut TcpStream) + Send + 'static,
) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for (i, stream) in listener.incoming().take(max).enumerate() {
            let Ok(mut s) = stream else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            log.lock().unwrap().push(req.clone());
            answer(i, &req, &mut s);
        }
    });
    (url, seen)
}

fn http_pipeline(url: &str, sha: &str, knobs: &str) -> String {
    format!(
        "name: net\nstages:\n  get:\n    kind: download\n    params:\n{knobs}      files:\n        - name: data.bin\n          sha256: \"{sha}\"\n          mirrors: [\"{url}/data.bin\"]\n"
    )
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn a_server_that_never_answers_fails_after_the_idle_timeout_and_attempts() {
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    let (url, seen) = server(8, move |_, _, s| {
        // Never answer; keep the connection open.
        keep.lock().unwrap().push(s.try_clone().unwrap());
    });
    let t = TestDir::new();
    t.write(
        "p.yaml",
        &http_pipeline(
            &url,
            &"0".repeat(64),
            "      idle_timeout_s: 1\n      attempts: 2\n",
        ),
    );
    let t0 = Instant::now();
    let out = t.rst(&["run", "p.yaml"]);
    let took = t0.elapsed();
    out.assert_code(2)
        .assert_stderr_contains(&format!("{url}/data.bin"))
        .assert_stderr_contains("sent nothing for 1 s")
        .assert_stderr_contains("gave up after 2 attempt(s)")
        .assert_stderr_contains("idle_timeout_s");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(tidy(&out.stderr), "{}", out.stderr);
    assert_eq!(seen.lock().unwrap().len(), 2, "two attempts");
    assert!(t.entries().is_empty());
}

/// Answers ranges honestly but cuts every connection after `chunk` bytes of the body,
/// for the first `cuts` requests; then serves the rest.
fn cutting_server(body: Vec<u8>, chunk: usize, cuts: usize) -> (String, Arc<Mutex<Vec<String>>>) {
    let served = Arc::new(AtomicUsize::new(0));
    server(16, move |i, req, s| {
        let start: usize = req
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("range: bytes=")
                    .map(str::to_string)
            })
            .and_then(|r| r.trim_end_matches('-').trim().parse().ok())
            .unwrap_or(0);
        let rest = &body[start.min(body.len())..];
        let head = if start > 0 {
            format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{}/{}\r\nConnection: close\r\n\r\n",
                rest.len(),
                body.len() - 1,
                body.len()
            )
        } else {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
        };
        let _ = s.write_all(head.as_bytes());
        let n = if i < cuts {
            chunk.min(rest.len())
        } else {
            rest.len()
        };
        let _ = s.write_all(&rest[..n]);
        served.fetch_add(n, Ordering::SeqCst);
        let _ = s.shutdown(std::net::Shutdown::Both);
    })
}

#[test]
fn a_server_that_cuts_the_connection_is_resumed_then_given_up_after_n_attempts() {
    let body: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let sha = sha256_hex(&body);

    // Cut every time: three attempts, each resuming where the last stopped, then a clear error.
    let (url, seen) = cutting_server(body.clone(), 100, usize::MAX);
    let t = TestDir::new();
    t.write(
        "p.yaml",
        &http_pipeline(&url, &sha, "      idle_timeout_s: 2\n      attempts: 3\n"),
    );
    let out = t.rst(&["run", "p.yaml"]);
    out.assert_code(2)
        .assert_stderr_contains(&format!("{url}/data.bin"))
        .assert_stderr_contains("connection lost after 300 of 1000 bytes")
        .assert_stderr_contains("gave up after 3 attempt(s)")
        .assert_stderr_contains("attempts");
    let reqs = seen.lock().unwrap().clone();
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    assert!(
        reqs[1].to_ascii_lowercase().contains("range: bytes=100-"),
        "{}",
        reqs[1]
    );
    assert!(
        reqs[2].to_ascii_lowercase().contains("range: bytes=200-"),
        "{}",
        reqs[2]
    );
    assert!(t.entries().is_empty());

    // Cut twice, then complete: the third attempt resumes and the file verifies.
    let (url, seen) = cutting_server(body.clone(), 100, 2);
    let t = TestDir::new();
    t.write(
        "p.yaml",
        &http_pipeline(&url, &sha, "      idle_timeout_s: 2\n      attempts: 3\n"),
    );
    t.ok(&["run", "p.yaml"]);
    assert_eq!(seen.lock().unwrap().len(), 3);
    assert_eq!(t.entries().len(), 1);
}

// ---- item 9: the smaller holes ---------------------------------------------------------

#[test]
fn log_with_a_missing_cache_dir_is_a_user_error() {
    let t = TestDir::new();
    t.rst(&["log", "--cache-dir", "no-such-cache"])
        .assert_code(2)
        .assert_stderr_contains("no-such-cache")
        .assert_stderr_contains("does not exist");
}

#[test]
fn export_crate_into_a_read_only_dir_is_a_user_error_naming_it() {
    let t = TestDir::new();
    t.write("p.yaml", TINY);
    t.ok(&["run", "p.yaml"]);
    let ro = t.join("ro");
    std::fs::create_dir_all(&ro).unwrap();
    // Root ignores permission bits: use a read-only mount there.
    let _mounted = if is_root() {
        let m = Tmpfs::mount(&ro, "1m", ",ro");
        assert!(m.is_some(), "cannot mount a read-only tmpfs");
        m
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        None
    };
    for dir in ["ro", "ro/crate"] {
        t.rst(&["export-crate", "p.yaml", dir])
            .assert_code(2)
            .assert_stderr_contains(&format!("cannot write the crate into {dir}"));
    }
}

/// Whether a message reads as one (no gap of spaces inside a line, as a broken string
/// continuation leaves).
fn tidy(s: &str) -> bool {
    s.lines().all(|l| !l.trim_start().contains("     "))
}

fn printable(s: &str) -> bool {
    s.chars()
        .all(|c| (c == '\n' || c == '\t' || !c.is_control()) && c != '\u{fffd}')
}

#[test]
fn garbage_archives_get_a_clean_message_not_raw_bytes() {
    let t = TestDir::new();
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    for (file, expect) in [
        ("junk.tar.gz", "not a gzip file"),
        ("junk.tar", "not a valid tar archive"),
        ("junk.zip", "not a valid zip archive"),
    ] {
        std::fs::write(t.join(file), &garbage).unwrap();
        t.write("p.yaml", &archive_pipeline(file, ""));
        let out = t.rst(&["run", "p.yaml"]);
        out.assert_code(2)
            .assert_stderr_contains(&format!("archive {file}"))
            .assert_stderr_contains(expect);
        assert!(printable(&out.stderr), "raw bytes in: {:?}", out.stderr);
        assert!(tidy(&out.stderr), "{}", out.stderr);
    }
    // gzip, but not a tar inside.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&garbage).unwrap();
    std::fs::write(t.join("junk.tgz"), gz.finish().unwrap()).unwrap();
    t.write("p.yaml", &archive_pipeline("junk.tgz", ""));
    let out = t.rst(&["run", "p.yaml"]);
    out.assert_code(2)
        .assert_stderr_contains("archive junk.tgz")
        .assert_stderr_contains("not a valid gzip-compressed tar archive");
    assert!(printable(&out.stderr), "raw bytes in: {:?}", out.stderr);
}

#[test]
fn a_broken_list_in_set_is_refused_not_taken_as_a_string() {
    let t = TestDir::new();
    t.write(
        "p.yaml",
        "name: s\nparams: {a: [1]}\nstages:\n  s:\n    kind: command\n    params: {argv: [echo, \"${a}\"]}\n",
    );
    t.rst(&["check", "p.yaml", "--set", "a=[1,"])
        .assert_code(2)
        .assert_stderr_contains("--set a")
        .assert_stderr_contains("not a valid YAML value")
        .assert_stderr_contains("help:");
}

/// A pid that no process has: past the kernel's largest pid_max.
const DEAD: u32 = 4_194_304 + 11;

/// Leftovers of a dead run (pid DEAD) and a live one (this test's pid) in `cache`.
fn plant_leftovers(cache: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let k1 = "a1".repeat(32);
    let k2 = "b2".repeat(32);
    let me = std::process::id();
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    let mut dead = Vec::new();
    let mut live = Vec::new();
    let mut put = |rel: String, is_dead: bool| {
        let p = cache.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"x").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(old)
            .unwrap();
        if is_dead { &mut dead } else { &mut live }.push(p);
    };
    put(format!("tmp/jobs/{k1}.{DEAD}.0.json"), true);
    put(format!("logs/{k1}.{DEAD}.log"), true);
    put(format!("tmp/{k1}.{DEAD}.0/out/half"), true);
    put(format!("entries/a1/.{k1}.json.{DEAD}.4.tmp"), true);
    put(format!("runs/.x.json.{DEAD}.0.tmp"), true);
    put(format!("tmp/jobs/{k2}.{me}.0.json"), false);
    put(format!("logs/{k2}.{me}.log"), false);
    put(format!("entries/b2/.{k2}.json.{me}.1.tmp"), false);
    dead[2] = cache.join(format!("tmp/{k1}.{DEAD}.0"));
    (dead, live)
}

#[test]
fn leftovers_of_killed_runs_are_cleaned_by_the_next_run_and_by_gc() {
    let t = TestDir::new();
    t.write("p.yaml", TINY);
    t.ok(&["run", "p.yaml"]);
    let cache = t.join("cache");
    let (dead, live) = plant_leftovers(&cache);
    // What tells the next run that one was killed: its durability journal, unlocked.
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let journal = cache.join(format!("pending/{DEAD}.0.json"));
    std::fs::create_dir_all(journal.parent().unwrap()).unwrap();
    std::fs::write(
        &journal,
        format!(r#"{{"boot_id": "{}", "started_unix": 0.0}}"#, boot.trim()),
    )
    .unwrap();
    t.ok(&["run", "p.yaml"]);
    assert!(!journal.exists(), "the dead run's journal is recovered");
    for p in &dead {
        assert!(
            !p.exists(),
            "{} should be removed by the next run",
            p.display()
        );
    }
    for p in &live {
        assert!(p.exists(), "{} belongs to a live run", p.display());
    }
    let (dead, live) = plant_leftovers(&cache);
    t.ok(&["gc", "p.yaml", "--dry-run"]);
    assert!(dead.iter().all(|p| p.exists()), "dry run removes nothing");
    t.ok(&["gc", "p.yaml"])
        .assert_stdout_contains("(and 5 leftovers of killed runs)");
    for p in &dead {
        assert!(!p.exists(), "{} should be removed by gc", p.display());
    }
    for p in &live {
        assert!(p.exists(), "{} belongs to a live run", p.display());
    }
    // The run's own work is intact.
    t.ok(&["run", "p.yaml"]).assert_stderr_contains("cached");
}
