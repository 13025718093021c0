//! The remote cache against a real S3 server: moto (PyPI `moto[server]`, installed into
//! the project venv by `./scripts/setup`), started by each test on a free port of
//! 127.0.0.1. A fault-injecting TCP proxy in front of it stands for a server that dies
//! in the middle of an upload.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{with_band_stages, write_band_idx, Output, TestDir};

/// A moto server, killed on drop.
struct Moto {
    child: Child,
    port: u16,
}

fn moto_server() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server");
    assert!(
        path.exists(),
        "{} is missing: ./scripts/setup installs moto[server] into the project venv",
        path.display()
    );
    path
}

impl Moto {
    fn start() -> Moto {
        Moto::start_with(&[])
    }

    /// Started with `env` (moto's own settings, e.g. authentication).
    fn start_with(env: &[(&str, &str)]) -> Moto {
        let mut cmd = Command::new(moto_server());
        cmd.args(["-H", "127.0.0.1", "-p", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start moto_server");
        // It prints `Running on http://127.0.0.1:PORT` on stderr, then a line per request:
        // read until the port, then keep draining in a thread.
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut port = None;
        for line in lines.by_ref() {
            let line = line.unwrap_or_default();
            if let Some(at) = line.find("Running on http://127.0.0.1:") {
                let rest = &line[at + "Running on http://127.0.0.1:".len()..];
                let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
                port = digits.parse().ok();
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        let port = port.expect("moto_server printed its port");
        Moto { child, port }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn url(&self, rel: &str) -> String {
        format!("{}/{rel}", self.endpoint())
    }

    /// Creates a bucket (moto accepts unsigned requests unless started with auth).
    fn bucket(&self, name: &str) -> &Self {
        ureq::put(&self.url(name))
            .send_empty()
            .expect("create bucket");
        self
    }

    /// The keys under `prefix` in `bucket` (ListObjectsV2).
    fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let body = ureq::get(&format!(
            "{}?list-type=2&prefix={prefix}&max-keys=1000",
            self.url(bucket)
        ))
        .call()
        .expect("list")
        .body_mut()
        .read_to_string()
        .unwrap();
        let mut keys: Vec<String> = body
            .split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(str::to_string)
            .collect();
        keys.sort();
        keys
    }

    /// Runs a Python snippet with `s3`, a boto3 client of this server (boto3 comes with
    /// moto; object reads need signed requests).
    fn boto(&self, code: &str) -> String {
        let python = moto_server().with_file_name("python");
        let script = format!(
            "import boto3\ns3 = boto3.client('s3', endpoint_url='{}', aws_access_key_id='test', aws_secret_access_key='test', region_name='us-east-1')\n{code}",
            self.endpoint()
        );
        let out = Command::new(python).arg("-c").arg(script).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The environment of an `rst` that talks to `endpoint` (moto takes any key), isolated
/// from the machine's own AWS settings.
fn s3_env(endpoint: &str) -> Vec<(&'static str, Option<String>)> {
    vec![
        ("AWS_ACCESS_KEY_ID", Some("test".into())),
        ("AWS_SECRET_ACCESS_KEY", Some("test".into())),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            Some("/nonexistent/credentials".into()),
        ),
        ("AWS_CONFIG_FILE", Some("/nonexistent/config".into())),
        ("AWS_PROFILE", None),
        ("AWS_ENDPOINT_URL", None),
        ("AWS_SESSION_TOKEN", None),
        ("RST_REMOTE", None),
        ("RST_REMOTE_READ_ONLY", None),
        ("RST_REMOTE_ENDPOINT", Some(endpoint.to_string())),
    ]
}

fn rst_s3(t: &TestDir, endpoint: &str, args: &[&str]) -> Output {
    rst_s3_with(t, endpoint, args, &[])
}

fn rst_s3_with(
    t: &TestDir,
    endpoint: &str,
    args: &[&str],
    extra: &[(&str, Option<&str>)],
) -> Output {
    let mut env = s3_env(endpoint);
    for (k, v) in extra {
        env.retain(|(n, _)| n != k);
        env.push((
            // Leaked: a handful of short names per test.
            Box::leak(k.to_string().into_boxed_str()),
            v.map(str::to_string),
        ));
    }
    let env: Vec<(&str, Option<&str>)> = env.iter().map(|(k, v)| (*k, v.as_deref())).collect();
    t.rst_env(args, &env)
}

/// Data (an idx download, a split view of it, label noise), commands reading them, and
/// a published table; every stage appends its name to ran.log when it runs.
const PIPELINE: &str = r#"name: shared
params: {rates: [0.2, 0.4]}
stages:
  # BAND DATA STAGES (tests/common: `data` and `target`)
  noisy:
    kind: noise
    matrix: {rate: "${rates}"}
    inputs: {data: target}
    params: {rate: "${rate}", mode: exclude-true}
  count:
    kind: command
    matrix: {rate: "${rates}"}
    inputs: {d: "noisy[rate=${rate}]"}
    params: {shell: 'echo count >> $RST_PROJECT/ran.log; ls $RST_IN_D/ > $RST_OUT/n; echo ${rate} >> $RST_OUT/n'}
  table:
    kind: command
    inputs: {c: count}
    publish: "."
    params: {shell: 'echo table >> $RST_PROJECT/ran.log; cat $RST_IN_C_0/n $RST_IN_C_1/n > $RST_OUT/table.md'}
"#;

fn project() -> TestDir {
    let t = TestDir::new();
    write_band_idx(&t);
    t.write("p.yaml", &with_band_stages(PIPELINE));
    t
}

fn entry_keys(keys: &[String]) -> Vec<&String> {
    keys.iter()
        .filter(|k| k.starts_with("entries/") || k.contains("/entries/"))
        .collect()
}

#[test]
fn a_fresh_cache_gets_every_stage_from_the_remote_and_the_same_results() {
    let moto = Moto::start();
    moto.bucket("lab");
    let ep = moto.endpoint();
    let a = project();
    let out = rst_s3(&a, &ep, &["run", "p.yaml", "--remote", "s3://lab/regsl"]);
    out.assert_code(0)
        .assert_stderr_contains("remote s3://lab/regsl: uploaded 7 entries");
    let keys = moto.keys("lab", "regsl/");
    assert_eq!(entry_keys(&keys).len(), 7, "{keys:#?}");
    assert!(keys.iter().all(|k| k.starts_with("regsl/")), "{keys:#?}");
    assert!(
        keys.iter().any(|k| k.ends_with(".log")),
        "logs go along: {keys:#?}"
    );

    // Another machine: a fresh project with the same pipeline, no cache.
    let b = project();
    let status = rst_s3(&b, &ep, &["status", "p.yaml", "--remote", "s3://lab/regsl"]);
    status
        .assert_code(0)
        .assert_stdout_contains("remote  table")
        .assert_stdout_contains("(7 of them on the remote: nothing to compute for those)");
    let out = rst_s3(&b, &ep, &["run", "p.yaml", "--remote", "s3://lab/regsl"]);
    out.assert_code(0)
        .assert_stderr_contains("fetched  table (from the remote")
        .assert_stderr_contains("0 ran, 0 cached, 7 fetched from the remote");
    assert!(
        !b.exists("ran.log"),
        "nothing is computed: {}",
        b.read("ran.log")
    );
    assert_eq!(b.read("results/p/table.md"), a.read("results/p/table.md"));
    // The same artifacts, and entries that say where they came from.
    let entry = b.entry_of("table").expect("an entry for table");
    assert_eq!(entry["run"]["fetched"]["from"], "s3://lab/regsl");
    assert_eq!(
        entry["artifact"],
        a.entry_of("table").unwrap()["artifact"],
        "the same artifact digest"
    );
    assert!(entry["run"]["host"].is_string());
    // Lineage and audit work on the fetched entries.
    b.ok(&["lineage", "p.yaml", "table"])
        .assert_stdout_contains("data");
    let audit = b.rst(&["audit", "p.yaml", "--stage", "count"]);
    audit.assert_code(0).assert_no_panic();
    // And a second run is local: cached, with no remote at all.
    b.ok(&["run", "p.yaml"])
        .assert_stderr_contains("0 ran, 7 cached");
}

#[test]
fn push_and_pull_sync_what_pipelines_use() {
    let moto = Moto::start();
    moto.bucket("lab");
    let ep = moto.endpoint();
    let a = project();
    a.ok(&["run", "p.yaml"]);
    let out = rst_s3(&a, &ep, &["push", "p.yaml", "--remote", "s3://lab"]);
    out.assert_code(0)
        .assert_stdout_contains("remote s3://lab: uploaded 7 entries");
    // Pushing again sends nothing.
    rst_s3(&a, &ep, &["push", "p.yaml", "--remote", "s3://lab"])
        .assert_code(0)
        .assert_stdout_contains("7 were there already");
    // The project's setting: rst.toml names the remote once for everyone.
    let b = project();
    b.write(
        "rst.toml",
        &format!("[remote]\nurl = \"s3://lab\"\nendpoint = \"{ep}\"\n"),
    );
    let out = rst_s3_with(
        &b,
        &ep,
        &["pull", "p.yaml"],
        &[("RST_REMOTE_ENDPOINT", None)],
    );
    out.assert_code(0)
        .assert_stdout_contains("remote s3://lab: fetched 7 entries");
    b.ok(&["run", "p.yaml", "--no-remote"])
        .assert_stderr_contains("0 ran, 7 cached");
    assert!(!b.exists("ran.log"));
    assert_eq!(b.read("results/p/table.md"), a.read("results/p/table.md"));
}

/// A project run with the remote s3://lab of `moto`, which then holds its 7 entries.
fn pushed(moto: &Moto) -> TestDir {
    moto.bucket("lab");
    let a = project();
    rst_s3(
        &a,
        &moto.endpoint(),
        &["run", "p.yaml", "--remote", "s3://lab"],
    )
    .assert_code(0);
    a
}

/// After the remote copy of `table` was damaged: a fresh project computes `table` alone,
/// saying `why` its copy was not used, publishes what `a` did, and replaces the copy, so
/// a third project gets all seven from the remote.
fn table_is_recomputed_and_replaced(moto: &Moto, a: &TestDir, why: &str) {
    let ep = moto.endpoint();
    let b = project();
    rst_s3(&b, &ep, &["run", "p.yaml", "--remote", "s3://lab"])
        .assert_code(0)
        .assert_stderr_contains(&format!("the remote's copy of table was not used: {why}"))
        .assert_stderr_contains("computing it here")
        .assert_stderr_contains("1 ran, 0 cached, 6 fetched from the remote");
    assert_eq!(
        b.take_log(),
        vec!["table"],
        "only the damaged one is computed"
    );
    assert_eq!(b.read("results/p/table.md"), a.read("results/p/table.md"));
    let c = project();
    let out = rst_s3(&c, &ep, &["run", "p.yaml", "--remote", "s3://lab"]);
    out.assert_code(0)
        .assert_stderr_contains("7 fetched from the remote");
    assert!(!out.stderr.contains("not used"), "{}", out.stderr);
}

#[test]
fn a_corrupt_remote_object_is_rejected_recomputed_and_replaced() {
    let moto = Moto::start();
    let a = pushed(&moto);
    // Flip a byte in the object of `table`: its tar, same length, other content (table.md:
    // counts and rates, after the tar's 512-byte header).
    let artifact = a.entry_of("table").unwrap()["artifact"]
        .as_str()
        .unwrap()
        .to_string();
    let key = format!("objects/{}/{artifact}.tar", &artifact[..2]);
    let md5 = format!(
        "import hashlib\nprint(hashlib.md5(s3.get_object(Bucket='lab', Key='{key}')['Body'].read()).hexdigest())"
    );
    let size = moto.boto(&format!(
        "b = bytearray(s3.get_object(Bucket='lab', Key='{key}')['Body'].read())\n\
         i = b.index(b'.2', 512)\nb[i + 1] = ord('9')\n\
         s3.put_object(Bucket='lab', Key='{key}', Body=bytes(b))\nprint(len(b))"
    ));
    assert!(size.trim().parse::<usize>().unwrap() > 1024);
    let damaged = moto.boto(&md5);
    table_is_recomputed_and_replaced(&moto, &a, "its remote object is corrupt");
    assert_ne!(moto.boto(&md5), damaged, "the object was re-uploaded");
}

#[test]
fn an_entry_that_is_not_its_keys_is_rejected_and_replaced() {
    let moto = Moto::start();
    let a = pushed(&moto);
    // The remote entry of `table` now claims other params: its record no longer hashes
    // to its key (a tampered or mixed-up entry).
    let key = a.entry_of("table").unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let rel = format!("entries/{}/{key}.json", &key[..2]);
    moto.boto(&format!(
        "import json\ne = json.loads(s3.get_object(Bucket='lab', Key='{rel}')['Body'].read())\n\
         e['record']['params']['shell'] = 'echo forged > $RST_OUT/table.md'\n\
         s3.put_object(Bucket='lab', Key='{rel}', Body=json.dumps(e).encode())"
    ));
    table_is_recomputed_and_replaced(&moto, &a, "its remote entry");
}

#[test]
fn a_large_artifact_goes_up_in_parts_and_comes_back_whole() {
    let moto = Moto::start();
    moto.bucket("lab");
    let ep = moto.endpoint();
    // 40 MB: above the 32 MiB of one PUT, so a multipart upload of three parts.
    let big = "name: big\nstages:\n  blob:\n    kind: command\n    params: {shell: 'head -c 40000000 /dev/urandom > $RST_OUT/blob'}\n";
    let a = TestDir::new();
    a.write("p.yaml", big);
    rst_s3(&a, &ep, &["run", "p.yaml", "--remote", "s3://lab"])
        .assert_code(0)
        .assert_stderr_contains("uploaded 1 entries (1 objects, 38.");
    let tmp: Vec<_> = crate::common::read_dir_sorted(&a.join("cache/tmp"))
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("upload.")
        })
        .collect();
    assert!(tmp.is_empty(), "the packed upload is removed: {tmp:?}");
    let b = TestDir::new();
    b.write("p.yaml", big);
    rst_s3(&b, &ep, &["pull", "p.yaml", "--remote", "s3://lab"])
        .assert_code(0)
        .assert_stdout_contains("fetched 1 entries");
    assert_eq!(
        b.entry_of("blob").unwrap()["artifact"],
        a.entry_of("blob").unwrap()["artifact"]
    );
    b.ok(&["verify"]);
}

#[test]
fn read_only_mode_never_writes() {
    let moto = Moto::start();
    moto.bucket("lab");
    let ep = moto.endpoint();
    let a = project();
    let out = rst_s3(
        &a,
        &ep,
        &[
            "run",
            "p.yaml",
            "--remote",
            "s3://lab/ro",
            "--remote-read-only",
        ],
    );
    out.assert_code(0).assert_stderr_contains("7 ran");
    assert_eq!(moto.keys("lab", ""), Vec::<String>::new());
    // The same through the environment, and `rst push` refuses.
    let out = rst_s3_with(
        &a,
        &ep,
        &["push", "p.yaml", "--remote", "s3://lab/ro"],
        &[("RST_REMOTE_READ_ONLY", Some("1"))],
    );
    out.assert_code(2).assert_stderr_contains("is read-only");
    assert_eq!(moto.keys("lab", ""), Vec::<String>::new());
}

#[test]
fn two_runs_pushing_the_same_keys_at_once_are_harmless() {
    let moto = Moto::start();
    moto.bucket("lab");
    let ep = moto.endpoint();
    let (a, b) = (project(), project());
    let spawn = |t: &TestDir| {
        let mut c = t.command(&["run", "p.yaml", "--remote", "s3://lab"]);
        for (k, v) in s3_env(&ep) {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c.stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (ca, cb) = (spawn(&a), spawn(&b));
    for child in [ca, cb] {
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{err}");
        assert!(!err.contains("warning"), "{err}");
    }
    assert_eq!(entry_keys(&moto.keys("lab", "")).len(), 7);
    let c = project();
    rst_s3(&c, &ep, &["run", "p.yaml", "--remote", "s3://lab"])
        .assert_code(0)
        .assert_stderr_contains("7 fetched from the remote");
    assert_eq!(c.read("results/p/table.md"), a.read("results/p/table.md"));
}

/// A TCP proxy that forwards to `to` and dies (closes every connection and stops
/// listening) once `limit` bytes have gone towards the server: a server killed in the
/// middle of an upload.
struct DyingProxy {
    port: u16,
    dead: Arc<AtomicBool>,
}

impl DyingProxy {
    fn start(to: u16, limit: u64) -> DyingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let dead = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let d = dead.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if d.load(Ordering::SeqCst) {
                    break; // the listener is dropped: connections are refused
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                let (d1, s1) = (d.clone(), sent.clone());
                let (mut c_read, mut s_write) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 << 10];
                    loop {
                        let n = match c_read.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if s1.fetch_add(n as u64, Ordering::SeqCst) + n as u64 > limit {
                            d1.store(true, Ordering::SeqCst);
                            break;
                        }
                        if s_write.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = c_read.shutdown(std::net::Shutdown::Both);
                    let _ = s_write.shutdown(std::net::Shutdown::Both);
                });
                let (mut s_read, mut c_write) = (server, client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s_read, &mut c_write);
                    let _ = c_write.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        DyingProxy { port, dead }
    }
}

/// A TCP proxy that forwards to `to`, `bytes_per_s` at most in each direction: a slow
/// link, for interrupting a transfer in its middle.
fn slow_proxy(to: u16, bytes_per_s: u64) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let pipe = move |mut from: TcpStream, mut into: TcpStream| {
        std::thread::spawn(move || {
            let mut buf = [0u8; 8 << 10];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 || into.write_all(&buf[..n]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_secs_f64(n as f64 / bytes_per_s as f64));
            }
            let _ = into.shutdown(std::net::Shutdown::Both);
        });
    };
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                continue;
            };
            pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
            pipe(server, client);
        }
    });
    port
}

/// `rst ARGS` through `endpoint`, sent SIGINT (Ctrl-C) after `after`; its output.
fn interrupted(
    t: &TestDir,
    endpoint: &str,
    args: &[&str],
    after: Duration,
) -> (Option<i32>, String) {
    let mut c = t.command(args);
    for (k, v) in s3_env(endpoint) {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

const BLOB: &str = "name: big\nstages:\n  blob:\n    kind: command\n    params: {shell: 'head -c 3000000 /dev/urandom > $RST_OUT/blob'}\n";

#[test]
fn ctrl_c_in_the_middle_of_a_transfer_leaves_both_caches_consistent() {
    let moto = Moto::start();
    moto.bucket("lab");
    // 3 MB at 1 MB/s: interrupted after one second, in the middle.
    let slow = format!("http://127.0.0.1:{}", slow_proxy(moto.port, 1 << 20));
    // An upload at the end of a run: abandoned, nothing visible on the remote.
    let a = TestDir::new();
    a.write("p.yaml", BLOB);
    let (code, text) = interrupted(
        &a,
        &slow,
        &["run", "p.yaml", "--remote", "s3://lab"],
        Duration::from_millis(1500),
    );
    assert_eq!(code, Some(130), "{text}");
    assert!(text.contains("abandoned"), "{text}");
    assert_eq!(moto.keys("lab", ""), Vec::<String>::new(), "{text}");
    // The local cache has the result, intact.
    a.ok(&["verify"]);
    a.ok(&["run", "p.yaml"])
        .assert_stderr_contains("0 ran, 1 cached");
    rst_s3(
        &a,
        &moto.endpoint(),
        &["push", "p.yaml", "--remote", "s3://lab"],
    )
    .assert_code(0);
    // A download: no entry without its object, nothing half-stored.
    let b = TestDir::new();
    b.write("p.yaml", BLOB);
    let (code, text) = interrupted(
        &b,
        &slow,
        &["pull", "p.yaml", "--remote", "s3://lab"],
        Duration::from_millis(1500),
    );
    assert_ne!(code, Some(0), "{text}");
    assert!(
        b.entries().is_empty(),
        "no entry: {:?}\n{text}",
        b.entries()
    );
    b.ok(&["verify"]);
    rst_s3(
        &b,
        &moto.endpoint(),
        &["pull", "p.yaml", "--remote", "s3://lab"],
    )
    .assert_code(0)
    .assert_stdout_contains("fetched 1 entries");
    b.ok(&["run", "p.yaml"])
        .assert_stderr_contains("0 ran, 1 cached");
    assert_eq!(
        b.entry_of("blob").unwrap()["artifact"],
        a.entry_of("blob").unwrap()["artifact"],
        "the same bytes"
    );
}

#[test]
fn a_server_killed_mid_upload_leaves_no_entry() {
    let moto = Moto::start();
    moto.bucket("lab");
    let t = TestDir::new();
    // One stage whose artifact is 3 MB (one PUT, cut after 1 MB).
    t.write(
        "p.yaml",
        "name: big\nstages:\n  blob:\n    kind: command\n    params: {shell: 'head -c 3000000 /dev/urandom > $RST_OUT/blob'}\n",
    );
    let proxy = DyingProxy::start(moto.port, 1 << 20);
    let via = format!("http://127.0.0.1:{}", proxy.port);
    let out = rst_s3(&t, &via, &["run", "p.yaml", "--remote", "s3://lab"]);
    // The results are here; the upload failed, said so, and left nothing half-made.
    out.assert_code(0)
        .assert_no_panic()
        .assert_stderr_contains("1 upload to s3://lab failed")
        .assert_stderr_contains("rst push FILE");
    assert!(proxy.dead.load(Ordering::SeqCst), "the proxy was cut");
    assert_eq!(
        moto.keys("lab", ""),
        Vec::<String>::new(),
        "no entry, no object, no part visible"
    );
    // Once the server is back, a push sends it.
    rst_s3(
        &t,
        &moto.endpoint(),
        &["push", "p.yaml", "--remote", "s3://lab"],
    )
    .assert_code(0)
    .assert_stdout_contains("uploaded 1 entries");
    assert_eq!(entry_keys(&moto.keys("lab", "")).len(), 1);
}

#[test]
fn bad_urls_buckets_credentials_and_servers_are_exit_2_with_the_fix() {
    let moto = Moto::start();
    moto.bucket("lab");
    let ep = moto.endpoint();
    let t = project();
    // (flags, environment changes, the message, its help)
    type Case<'a> = (
        Vec<&'a str>,
        Vec<(&'a str, Option<&'a str>)>,
        &'a str,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            vec!["--remote", "gs://lab"],
            vec![],
            "is not an S3 URL: it does not start with s3://",
            "write it as s3://BUCKET",
        ),
        (
            vec!["--remote", "s3://Lab_Cache"],
            vec![],
            "is not a bucket name",
            "s3://BUCKET/PREFIX",
        ),
        (
            vec!["--remote", "s3://no-such-bucket"],
            vec![],
            "there is no bucket \"no-such-bucket\" at http://127.0.0.1:",
            "create the bucket",
        ),
        (
            vec!["--remote", "s3://lab"],
            vec![("RST_REMOTE_ENDPOINT", Some("http://127.0.0.1:9"))],
            "cannot reach the remote s3://lab (from --remote) at http://127.0.0.1:9",
            "--no-remote runs without it",
        ),
        (
            vec![],
            vec![
                ("RST_REMOTE", Some("s3://lab")),
                ("AWS_ACCESS_KEY_ID", None),
                ("AWS_SECRET_ACCESS_KEY", None),
            ],
            "no credentials for the remote s3://lab (from RST_REMOTE)",
            "AWS_ACCESS_KEY_ID",
        ),
        (
            vec!["--remote", "s3://lab"],
            vec![("AWS_PROFILE", Some("lab"))],
            "the AWS profile \"lab\" is in none of",
            "aws configure --profile",
        ),
    ];
    for (flags, env, message, help) in cases {
        let mut args = vec!["run", "p.yaml"];
        args.extend(flags);
        let out = rst_s3_with(&t, &ep, &args, &env);
        out.assert_code(2)
            .assert_no_panic()
            .assert_stderr_contains(message)
            .assert_stderr_contains(help);
    }
    t.write(
        "rst.toml",
        "[remote]\nurl = \"s3://lab\"\nendpont = \"x\"\n",
    );
    rst_s3(&t, &ep, &["status", "p.yaml"])
        .assert_code(2)
        .assert_stderr_contains("rst.toml:3:1: unknown field `endpont`");
    assert!(!t.exists("ran.log"), "nothing ran");

    // Credentials the server refuses: a moto that checks signatures (no user exists).
    let strict = Moto::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]);
    let out = rst_s3(
        &t,
        &strict.endpoint(),
        &["run", "p.yaml", "--remote", "s3://lab", "--no-remote"],
    );
    out.assert_code(2); // clap: --no-remote conflicts with --remote
    let t2 = project();
    let out = rst_s3(
        &t2,
        &strict.endpoint(),
        &["run", "p.yaml", "--remote", "s3://lab"],
    );
    out.assert_code(2)
        .assert_no_panic()
        .assert_stderr_contains("refused the credentials")
        .assert_stderr_contains("AWS_SECRET_ACCESS_KEY");
    assert!(!t2.exists("ran.log"));
}

/// Data, a tiny training and its evaluation: what a GPU node computes and a colleague
/// pulls (trained weights travel as any artifact; the table is published from them).
#[cfg(feature = "torch")]
const TRAINING: &str = r#"
name: tiny
stages:
  # BAND DATA STAGES (tests/common: `data` and `target`)
  train:
    kind: train
    inputs: {data: target}
    params: {model: resnet-mini, epochs: 1, batch_size: 16, lr: 0.01, device: cpu}
  evaluate:
    kind: evaluate
    inputs: {model: train, data: target}
    publish: true
    params: {split: test, device: cpu}
"#;

#[cfg(feature = "torch")]
#[test]
fn a_training_pushed_from_one_cache_is_pulled_into_another_without_training() {
    let moto = Moto::start();
    moto.bucket("lab");
    let ep = moto.endpoint();
    let make = || {
        let t = TestDir::new();
        write_band_idx(&t);
        t.write("p.yaml", &with_band_stages(TRAINING));
        t
    };
    let a = make();
    rst_s3(&a, &ep, &["run", "p.yaml", "--remote", "s3://lab/gpu-node"])
        .assert_code(0)
        .assert_stderr_contains("uploaded 4 entries");
    let b = make();
    rst_s3(
        &b,
        &ep,
        &["pull", "p.yaml", "--remote", "s3://lab/gpu-node"],
    )
    .assert_code(0)
    .assert_stdout_contains("fetched 4 entries");
    let out = b.ok(&["run", "p.yaml"]);
    out.assert_stderr_contains("0 ran, 4 cached");
    fn files(dir: &std::path::Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        for f in crate::common::read_dir_sorted(dir) {
            if f.is_dir() {
                files(&f, out);
            } else {
                out.push((f.clone(), std::fs::read(&f).unwrap()));
            }
        }
    }
    let published = |t: &TestDir| {
        let mut v = Vec::new();
        // What the stage published (beside it: manifests naming this project's paths).
        files(&t.join("results/p/evaluate"), &mut v);
        assert!(!v.is_empty());
        v.into_iter()
            .map(|(p, b)| (p.strip_prefix(t.path()).unwrap().to_path_buf(), b))
            .collect::<Vec<_>>()
    };
    assert_eq!(published(&b), published(&a), "the same published bytes");
    let train = b.entry_of("train").unwrap();
    assert_eq!(train["artifact"], a.entry_of("train").unwrap()["artifact"]);
    assert_eq!(train["run"]["fetched"]["from"], "s3://lab/gpu-node");
    assert_eq!(
        train["run"]["device"], "cpu",
        "the computing run's facts are kept"
    );
}
