//! Remote cache benchmark: `cargo bench --bench remote`.
//!
//! Push and pull of the demo's cache (what `pipelines/demo.yaml` uses: its entries and
//! artifacts) to a local S3 server (moto, from the project venv that `./scripts/setup`
//! makes), side by side with `dvc push` / `dvc pull` of the same bytes (the same files,
//! as one tracked directory) to the same server, in one run:
//!
//! - rst: `rst push pipelines/demo.yaml` from the demo's cache, then `rst pull` into an
//!   empty cache (every object verified by its blake3 digest before it is stored);
//! - DVC: `dvc push` of a directory holding those artifacts' files (after `dvc add`,
//!   not timed), then `dvc pull` into a clone of the project with no cache and no data.
//!
//! Needs: a demo cache (`cache/`, or `RST_BENCH_CACHE=DIR`: run `rst run
//! pipelines/demo.yaml` first); DVC with its S3 plugin from `./scripts/bench-peers`
//! (target/peers, or `RST_PEERS_VENV`); without DVC its rows are skipped, loudly.
//! Everything else lives under target/tmp (removed at the end).
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

const RST: &str = env!("CARGO_BIN_EXE_rst");

struct Moto(Child, u16);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn moto(root: &Path) -> Moto {
    let mut child = Command::new(root.join(".venv/bin/moto_server"))
        .args(["-H", "127.0.0.1", "-p", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start .venv/bin/moto_server (./scripts/setup installs it)");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut port = 0;
    for line in lines.by_ref() {
        let line = line.unwrap_or_default();
        if let Some(at) = line.find("Running on http://127.0.0.1:") {
            let rest = &line[at + 28..];
            port = rest
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .unwrap();
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    assert!(port > 0, "moto printed no port");
    Moto(child, port)
}

fn env<'a>(cmd: &'a mut Command, endpoint: &str) -> &'a mut Command {
    cmd.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("RST_REMOTE_ENDPOINT", endpoint)
        .env("RST_PLAIN", "1")
        .env_remove("RST_REMOTE")
}

/// Runs `cmd`, panicking with its output if it fails; returns (seconds, stdout + stderr).
fn timed(what: &str, cmd: &mut Command) -> (f64, String) {
    let t0 = Instant::now();
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let secs = t0.elapsed().as_secs_f64();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    (secs, text)
}

/// The artifacts the pipeline's instances use (their objects, with view bases), from
/// `rst status --json` against `cache`.
fn used_objects(root: &Path, cache: &Path) -> Vec<PathBuf> {
    let out = Command::new(RST)
        .args(["status", "pipelines/demo.yaml", "--json", "--no-remote"])
        .arg("--cache-dir")
        .arg(cache)
        .current_dir(root)
        .output()
        .unwrap();
    let lines: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status --json");
    let mut dirs: Vec<PathBuf> = lines
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["artifact"].as_str())
        .map(|a| cache.join("objects").join(&a[..2]).join(a))
        .collect();
    let bases: Vec<PathBuf> = dirs
        .iter()
        .filter_map(|d| std::fs::read(d.join("dataset.json")).ok())
        .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .filter_map(|v| v["base"].as_str().map(str::to_string))
        .map(|a| cache.join("objects").join(&a[..2]).join(&a))
        .collect();
    dirs.extend(bases);
    dirs.sort();
    dirs.dedup();
    dirs
}

fn tree_size(dir: &Path) -> (u64, usize) {
    let mut total = (0, 0);
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            let (b, n) = tree_size(&p);
            total = (total.0 + b, total.1 + n);
        } else {
            total = (total.0 + e.metadata().unwrap().len(), total.1 + 1);
        }
    }
    total
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let (p, q) = (e.path(), to.join(e.file_name()));
        if p.is_dir() {
            copy_tree(&p, &q);
        } else {
            std::fs::copy(&p, &q).unwrap();
            let mut perm = std::fs::metadata(&q).unwrap().permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perm.set_readonly(false);
            std::fs::set_permissions(&q, perm).unwrap();
        }
    }
}

struct Row {
    tool: &'static str,
    op: &'static str,
    secs: f64,
    bytes: u64,
    objects: usize,
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cache = std::env::var_os("RST_BENCH_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("cache"));
    let objects = used_objects(root, &cache);
    if objects.is_empty() {
        println!(
            "*** no demo cache in {}: run `target/release/rst run pipelines/demo.yaml` first (or set RST_BENCH_CACHE) ***",
            cache.display()
        );
        return;
    }
    let (bytes, files) = objects
        .iter()
        .map(|d| tree_size(d))
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    println!(
        "the demo's cache: {} artifacts, {files} files, {:.1} MB",
        objects.len(),
        bytes as f64 / 1e6
    );
    let tmp = root.join("target/tmp/bench-remote");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let server = moto(root);
    let endpoint = format!("http://127.0.0.1:{}", server.1);
    Command::new(root.join(".venv/bin/python"))
        .args(["-c", &format!("import urllib.request as u; u.urlopen(u.Request('{endpoint}/bench', method='PUT'))")])
        .status()
        .unwrap();
    let mut rows = Vec::new();

    // rst: push from the demo's cache, pull into an empty one.
    let (secs, out) = timed(
        "rst push",
        env(Command::new(RST).current_dir(root), &endpoint)
            .args([
                "push",
                "pipelines/demo.yaml",
                "--remote",
                "s3://bench/rst",
                "--cache-dir",
            ])
            .arg(&cache),
    );
    println!("  {}", out.lines().next().unwrap_or(""));
    let entries = |text: &str, verb: &str| -> usize {
        text.split(verb)
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let pushed = entries(&out, "uploaded ");
    rows.push(Row {
        tool: "rst",
        op: "push",
        secs,
        bytes,
        objects: pushed,
    });
    let fresh = tmp.join("pulled-cache");
    let (secs, out) = timed(
        "rst pull",
        env(Command::new(RST).current_dir(root), &endpoint)
            .args([
                "pull",
                "pipelines/demo.yaml",
                "--remote",
                "s3://bench/rst",
                "--cache-dir",
            ])
            .arg(&fresh),
    );
    println!("  {}", out.lines().next().unwrap_or(""));
    let pulled = entries(&out, "fetched ");
    rows.push(Row {
        tool: "rst",
        op: "pull",
        secs,
        bytes,
        objects: pulled,
    });

    // DVC: the same files as one tracked directory.
    let venv = std::env::var_os("RST_PEERS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/peers"));
    let dvc = venv.join("bin/dvc");
    let has_s3 = Command::new(venv.join("bin/python"))
        .args(["-c", "import dvc_s3"])
        .status()
        .is_ok_and(|s| s.success());
    if !dvc.exists() || !has_s3 {
        println!(
            "*** DVC with dvc-s3 not found in {}: run ./scripts/bench-peers; DVC rows SKIPPED ***",
            venv.display()
        );
    } else {
        let proj = tmp.join("dvc");
        let data = proj.join("data");
        for (n, o) in objects.iter().enumerate() {
            copy_tree(o, &data.join(format!("{n:03}")));
        }
        let dvc_cmd = |dir: &Path, args: &[&str]| {
            let mut c = Command::new(&dvc);
            env(&mut c, &endpoint).args(args).current_dir(dir);
            c
        };
        for args in [
            &["init", "--no-scm", "-q"][..],
            &["config", "core.analytics", "false"],
            &["remote", "add", "-d", "moto", "s3://bench/dvc"],
            &["remote", "modify", "moto", "endpointurl", &endpoint],
            &["add", "data", "-q"],
        ] {
            timed("dvc setup", &mut dvc_cmd(&proj, args));
        }
        let (secs, out) = timed("dvc push", &mut dvc_cmd(&proj, &["push"]));
        println!("  dvc push: {}", out.lines().last().unwrap_or(""));
        rows.push(Row {
            tool: "DVC",
            op: "push",
            secs,
            bytes,
            objects: files,
        });
        // A clone of the project: its metadata, no cache, no data.
        let clone = tmp.join("dvc-clone");
        std::fs::create_dir_all(clone.join(".dvc")).unwrap();
        std::fs::copy(proj.join(".dvc/config"), clone.join(".dvc/config")).unwrap();
        std::fs::copy(proj.join("data.dvc"), clone.join("data.dvc")).unwrap();
        let (secs, out) = timed("dvc pull", &mut dvc_cmd(&clone, &["pull"]));
        println!("  dvc pull: {}", out.lines().last().unwrap_or(""));
        assert_eq!(
            tree_size(&clone.join("data")).0,
            bytes,
            "dvc pulled every byte"
        );
        rows.push(Row {
            tool: "DVC",
            op: "pull",
            secs,
            bytes,
            objects: files,
        });
    }
    println!("\n| tool | operation | wall | MB | MB/s | entries or files | per s |\n|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {:.2} s | {:.1} | {:.1} | {} | {:.0} |",
            r.tool,
            r.op,
            r.secs,
            r.bytes as f64 / 1e6,
            r.bytes as f64 / 1e6 / r.secs,
            r.objects,
            r.objects as f64 / r.secs
        );
    }
    for op in ["push", "pull"] {
        let of = |tool: &str| {
            rows.iter()
                .find(|r| r.tool == tool && r.op == op)
                .map(|r| r.secs)
        };
        if let (Some(a), Some(b)) = (of("rst"), of("DVC")) {
            println!("{op}: DVC / rst wall time = {:.2}", b / a);
        }
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&tmp);
}
