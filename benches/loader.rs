//! The ImageNet training loader alone (`cargo bench --bench loader`): images/s from decoded
//! 256×341 RGB images (a 4:3 photo after `download`'s resize to 256) through
//! RandomResizedCrop(224) + flip into u8 batches of 32 — the CPU side of every ImageNet-style
//! training step (no model, no device). Runs `rst-torch bench-loader` with 1 thread and with
//! all cores; each reports the best of 3 passes over 1,024 images.
use std::process::Command;

fn images_per_s(threads: usize) -> f64 {
    let exe = env!("CARGO_BIN_EXE_rst-torch");
    let out = Command::new(exe)
        .args(["bench-loader", "--threads", &threads.to_string()])
        .output()
        .expect("start rst-torch");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    v["images_per_s"].as_f64().unwrap()
}

fn main() {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let one = images_per_s(1);
    println!("loader, RandomResizedCrop 224 + flip from 256x341: 1 thread {one:.0} images/s");
    if cores > 1 {
        let all = images_per_s(cores);
        println!(
            "loader, RandomResizedCrop 224 + flip from 256x341: {cores} threads {all:.0} images/s \
             ({:.2}x of 1 thread)",
            all / one
        );
    }
}
