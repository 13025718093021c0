//! One training epoch of rst's train stage vs a plain PyTorch loop on the same libtorch
//! (`cargo bench --bench train`): resnet-mini, 28x28 grey images, Adam with amsgrad, batch
//! 32, zero-pad-and-crop + flip augmentation, the same number of threads. Both sides
//! report the best of a few timed epochs after a warm-up epoch; rst's side is
//! `rst-torch bench-epoch`, which runs the train stage's own epoch loop on synthetic data.
//! rst's loop runs twice per round: with native numerics and with portable numerics (its
//! kernels pinned to AVX2, `rst::numerics`), whose speed cost the last table states.
use std::process::Command;

fn run_json(cmd: &mut Command) -> serde_json::Value {
    let out = cmd.output().expect("start benchmark process");
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .expect("a JSON line");
    serde_json::from_str(line).expect("JSON")
}

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let torch_bin = std::path::Path::new(env!("CARGO_BIN_EXE_rst-torch"));
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .to_string();
    let args = [
        "--n",
        "900",
        "--batch",
        "32",
        "--epochs",
        "3",
        "--threads",
        &threads,
    ];
    println!("one training epoch, resnet-mini, 900 images 28x28, batch 32, {threads} threads");
    let mut rows = Vec::new();
    let mut portable_rows = Vec::new();
    for round in 0..3 {
        let rst = run_json(Command::new(torch_bin).arg("bench-epoch").args(args));
        let portable = run_json(
            Command::new(torch_bin)
                .arg("bench-epoch")
                .args(args)
                .envs(rst::numerics::PORTABLE_ENV),
        );
        let py = run_json(
            Command::new(root.join(".venv/bin/python"))
                .arg(root.join("benches/train_reference.py"))
                .args(args),
        );
        let (r, p) = (
            rst["images_per_s"].as_f64().unwrap(),
            py["images_per_s"].as_f64().unwrap(),
        );
        let q = portable["images_per_s"].as_f64().unwrap();
        println!(
            "  round {round}: rst {r:.0} images/s (portable numerics {q:.0}), PyTorch {p:.0} images/s, ratio {:.2}",
            r / p
        );
        rows.push((r, p));
        portable_rows.push(q);
    }
    let best_r = rows.iter().map(|x| x.0).fold(0.0, f64::max);
    let best_p = rows.iter().map(|x| x.1).fold(0.0, f64::max);
    let best_q = portable_rows.iter().copied().fold(0.0, f64::max);
    println!("\n| loop | images/s (best) |\n|---|---|\n| rst train stage | {best_r:.0} |\n| plain PyTorch (same libtorch) | {best_p:.0} |\n| ratio rst / PyTorch | {:.2} (target >= 1.0) |", best_r / best_p);
    println!(
        "\n| rst train stage | images/s (best) |\n|---|---|\n| native numerics | {best_r:.0} |\n| portable numerics (AVX2) | {best_q:.0} |\n| portable / native | {:.2} |",
        best_q / best_r
    );
}
