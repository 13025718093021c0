//! Slurm executor benchmark: `cargo bench --bench slurm`.
//!
//! A sweep of 200 trivial `command` stages (one matrix axis, no dependencies) run cold with
//! the release `rst` binary, once with the local executor and once with `--executor slurm`
//! on the one-node cluster `scripts/slurm-local up` starts (root on Debian), one job per
//! stage and with `--slurm-bundle 25`. Reports stages/s, the ratios to local, and how fast
//! the jobs were submitted (the time of the last `queued` line).
//!
//! Everything lives in a temporary directory under `target/tmp` (removed at the end).
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RST: &str = env!("CARGO_BIN_EXE_rst");
const STAGES: usize = 200;

fn pipeline() -> String {
    let values: Vec<String> = (0..STAGES).map(|i| i.to_string()).collect();
    format!(
        "name: sweep\nstages:\n  s:\n    kind: command\n    matrix: {{i: [{}]}}\n    params: {{shell: 'echo ${{i}} > $RST_OUT/x'}}\n",
        values.join(", ")
    )
}

struct Run {
    wall: Duration,
    last_queued: Option<Duration>,
}

fn run(dir: &Path, extra: &[&str]) -> Run {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("p.yaml"), pipeline()).unwrap();
    let t0 = Instant::now();
    let mut child = Command::new(RST)
        .args(["run", "p.yaml"])
        .args(extra)
        .current_dir(dir)
        .env("RST_PLAIN", "1")
        .env_remove("RST_CACHE_DIR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rst");
    let mut queued = 0;
    let mut last_queued = None;
    let mut tail = Vec::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.starts_with("queued ") {
            queued += 1;
            if queued == STAGES {
                last_queued = Some(t0.elapsed());
            }
        }
        tail.push(line);
    }
    let status = child.wait().unwrap();
    let wall = t0.elapsed();
    assert!(
        status.success(),
        "rst run {extra:?} failed:\n{}",
        tail.join("\n")
    );
    let summary = tail.last().cloned().unwrap_or_default();
    assert!(
        summary.contains(&format!("{STAGES} ran")),
        "not every stage ran: {summary}"
    );
    Run { wall, last_queued }
}

fn main() {
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("SKIPPED: the Slurm benchmark needs root to start the one-node cluster");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/slurm-local");
    let up = Command::new(&script)
        .arg("up")
        .status()
        .expect("slurm-local");
    assert!(up.success(), "scripts/slurm-local up failed");

    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&base).unwrap();
    let tmp = tempfile::Builder::new()
        .prefix("rst-bench-slurm-")
        .tempdir_in(&base)
        .unwrap();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!("rst Slurm executor benchmark: {STAGES} trivial `command` stages, cold cache");
    println!("  binary:  {RST}");
    println!("  cores:   {cores}; one-node Slurm with {cores} CPUs");
    println!();

    let local = run(&tmp.path().join("local"), &[]);
    println!("local:  {:.2} s", local.wall.as_secs_f64());
    let slurm = run(&tmp.path().join("slurm"), &["--executor", "slurm"]);
    println!("slurm:  {:.2} s", slurm.wall.as_secs_f64());
    let bundled = run(
        &tmp.path().join("bundled"),
        &["--executor", "slurm", "--slurm-bundle", "25"],
    );
    println!(
        "slurm --slurm-bundle 25:  {:.2} s",
        bundled.wall.as_secs_f64()
    );

    let rate = |r: &Run| STAGES as f64 / r.wall.as_secs_f64();
    println!();
    println!("| Executor | Wall time | Stages/s | vs local |");
    println!("|---|---|---|---|");
    for (name, r) in [
        (format!("local (`--jobs {cores}`)"), &local),
        ("slurm, one job per stage".to_string(), &slurm),
        ("slurm, `--slurm-bundle 25`".to_string(), &bundled),
    ] {
        println!(
            "| {name} | {:.2} s | {:.1} | {:.2} |",
            r.wall.as_secs_f64(),
            rate(r),
            rate(r) / rate(&local)
        );
    }
    println!();
    if let Some(q) = slurm.last_queued {
        println!(
            "one job per stage: all {STAGES} jobs submitted after {:.2} s ({:.0} submissions/s)",
            q.as_secs_f64(),
            STAGES as f64 / q.as_secs_f64()
        );
    }
}
