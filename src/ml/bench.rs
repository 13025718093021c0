//! `rst-torch bench-epoch`: times the train stage's own epoch loop (`train::train`) on
//! synthetic 28x28 grey images, for `cargo bench --bench train` to compare with a plain
//! PyTorch loop (benches/train_reference.py) on the same libtorch.
use std::cell::RefCell;

use serde_json::json;

use super::data::{self, RawSplit};
use super::train::{self, TrainInputs};
use rst::prng::Prng;
use rst::stages::train::TrainParams;

fn random_split(n: usize, k: usize, size: usize, seed: u64) -> RawSplit {
    let mut rng = Prng::new(seed, "bench");
    RawSplit {
        images: rst::data::dataset::Images::Fixed {
            shape: [size, size, 1],
            data: (0..n * size * size).map(|_| rng.below(256) as u8).collect(),
        },
        labels: (0..n).map(|_| rng.below(k as u64) as i64).collect(),
        clean: None,
    }
}

/// The number after flag `name` in `args`, or `default`.
fn arg(args: &[String], name: &str, default: usize) -> Result<usize, String> {
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or(format!("{name} needs a number")),
        None => Ok(default),
    }
}

/// Runs `epochs + 1` epochs (the first a warm-up) and prints the best epoch's images/s.
pub fn bench_epoch(args: &[String]) -> Result<(), String> {
    let get = |name: &str, default: usize| arg(args, name, default);
    let (n, batch, epochs, threads) = (
        get("--n", 900)?,
        get("--batch", 32)?,
        get("--epochs", 3)?,
        get("--threads", 2)?,
    );
    let params = TrainParams::parse(&json!({
        "model": "resnet-mini", "epochs": epochs + 1, "batch_size": batch, "lr": 1e-4,
        "amsgrad": true, "early_stop": null, "augment": {"crop_padding": 2, "flip": true}, "device": "cpu"
    }))
    .map_err(|e| e.message)?;
    let dev = train::setup(threads, "cpu").map_err(|e| e.message)?;
    let train_split = random_split(n, 5, 28, 1);
    // A token validation split: the reference loop does not validate.
    let val = random_split(8, 5, 28, 2);
    let inputs = TrainInputs {
        params,
        classes: (0..5).map(|c| c.to_string()).collect(),
        normalisation: data::compute_normalisation(&train_split),
        train: train_split,
        val,
        init: None,
    };
    let times = RefCell::new(Vec::new());
    let log = |line: &str| {
        if let Some(secs) = line
            .rsplit("| ")
            .next()
            .and_then(|s| s.trim().strip_suffix('s'))
            .and_then(|s| s.parse::<f64>().ok())
        {
            times.borrow_mut().push(secs);
        }
    };
    train::train(inputs, dev, &|_| {}, &log).map_err(|e| e.message)?;
    let times = times.into_inner();
    let best = times.iter().skip(1).copied().fold(f64::INFINITY, f64::min);
    if !best.is_finite() {
        return Err(format!("no epoch timings in the training log ({times:?})"));
    }
    println!(
        "{}",
        json!({"images_per_s": n as f64 / best, "epoch_s": best, "epochs_timed": times.len() - 1, "threads": threads})
    );
    Ok(())
}

/// The ImageNet training loader alone (RandomResizedCrop + flip from decoded images to u8
/// batches; no model): prints `{"images_per_s": ...}` for synthetic `height × width`
/// images (default 256 × 341, a 4:3 photo after `download`'s resize to 256).
pub fn bench_loader(args: &[String]) -> Result<(), String> {
    let get = |name: &str, default: usize| arg(args, name, default);
    let threads = get("--threads", 2)?;
    let (n, h, w, size, batch) = (
        get("--n", 1024)?,
        get("--height", 256)?,
        get("--width", 341)?,
        get("--size", 224)?,
        get("--batch", 32)?,
    );
    // The loader's producer thread uses the global pool, as in a worker (RAYON_NUM_THREADS).
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .map_err(|e| e.to_string())?;
    let ips = super::imagenet::loader_images_per_s(n, h, w, size, batch, 3);
    println!(
        "{}",
        json!({"images_per_s": ips, "n": n, "height": h, "width": w, "size": size,
               "batch": batch, "threads": threads})
    );
    Ok(())
}
