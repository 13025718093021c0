//! Planner scale: `rst check` and `rst status` of one sweep at 1k, 10k, 100k and 1M
//! instances (a root stage and one stage with a three-axis matrix, an empty cache, so
//! status computes every key and looks each up), with wall time, CPU time and peak RSS
//! of the child process. `cargo bench --bench planner [-- MAX]` (MAX: largest size, 1M).
//! Run it in release (cargo bench does); wall times on a loaded machine exceed CPU times.
use std::path::Path;
use std::process::Command;
use std::time::Instant;

const RST: &str = env!("CARGO_BIN_EXE_rst");

/// (label, axis sizes): products 1,000, 10,000, 100,000, 1,000,000.
const SIZES: [(&str, [u32; 3]); 4] = [
    ("1k", [10, 10, 10]),
    ("10k", [100, 10, 10]),
    ("100k", [100, 100, 10]),
    ("1M", [100, 100, 100]),
];

fn pipeline(axes: [u32; 3]) -> String {
    format!(
        "name: sweep\nstages:\n  src:\n    kind: command\n    params: {{argv: [sh, -c, 'echo > $RST_OUT/x']}}\n  s:\n    kind: command\n    matrix: {{a: {{count: {}}}, b: {{count: {}}}, c: {{count: {}}}}}\n    params: {{argv: [echo, \"${{a}}\", \"${{b}}\", \"${{c}}\"]}}\n",
        axes[0], axes[1], axes[2]
    )
}

/// Wall seconds, CPU seconds (user + system) and peak RSS in MiB of `rst ARGS` in `dir`.
fn measure(dir: &Path, args: &[&str]) -> (f64, f64, f64) {
    let before = children_usage();
    let t0 = Instant::now();
    let out = Command::new(RST)
        .args(args)
        .current_dir(dir)
        .env("RST_PLAIN", "1")
        .output()
        .expect("run rst");
    let wall = t0.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "rst {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = children_usage();
    (wall, after.0 - before.0, after.1)
}

/// CPU seconds of all waited-for children so far, and the largest child's peak RSS (MiB).
fn children_usage() -> (f64, f64) {
    // SAFETY: getrusage writes into the struct we pass; RUSAGE_CHILDREN is valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (
        secs(ru.ru_utime) + secs(ru.ru_stime),
        ru.ru_maxrss as f64 / 1024.0,
    )
}

fn main() {
    let max: usize = std::env::args()
        .skip(1)
        .find_map(|a| match a.as_str() {
            "1k" => Some(0),
            "10k" => Some(1),
            "100k" => Some(2),
            "1M" | "1m" => Some(3),
            _ => None,
        })
        .unwrap_or(3);
    let dir = tempfile::Builder::new()
        .prefix("rst-bench-planner-")
        .tempdir()
        .expect("temp dir");
    println!(
        "{:>6} {:>10} | {:>8} {:>8} {:>9} | {:>8} {:>8} {:>9}",
        "size", "instances", "check s", "cpu s", "peak MiB", "status s", "cpu s", "peak MiB"
    );
    for (label, axes) in SIZES.iter().take(max + 1) {
        let file = format!("{label}.yaml");
        std::fs::write(dir.path().join(&file), pipeline(*axes)).expect("write pipeline");
        let n: u32 = axes.iter().product::<u32>() + 1;
        let (cw, cc, cm) = measure(dir.path(), &["check", &file]);
        let (sw, sc, sm) = measure(dir.path(), &["status", &file]);
        // ru_maxrss of children is the largest so far: sizes grow, so it is this one's.
        println!(
            "{label:>6} {n:>10} | {cw:>8.2} {cc:>8.2} {cm:>9.0} | {sw:>8.2} {sc:>8.2} {sm:>9.0}"
        );
    }
}
