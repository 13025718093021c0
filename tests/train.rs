//! Training and evaluation through the binaries: `rst` plans and caches, `rst-torch` trains
//! (resnet-mini on a generated IDX set of 8x8 images of 3 classes), deterministically.
use std::collections::BTreeMap;

use crate::common::{with_band_stages, write_band_idx, TestDir};

const PIPELINE: &str = r#"
name: tiny
params: {lr: 0.01, rate: 0.2}
stages:
  # BAND DATA STAGES (tests/common: `data` and `target`)
  noisy:
    kind: noise
    inputs: {data: target}
    params: {rate: "${rate}", mode: uniform}
  train:
    kind: train
    inputs: {data: noisy}
    threads: 2
    params:
      model: resnet-mini
      epochs: 3
      batch_size: 16
      lr: ${lr}
      lr_step: 2
      device: cpu
      augment: {crop_padding: 1, flip: true}
  evaluate:
    kind: evaluate
    inputs: {model: train, data: noisy}
    publish: true
    params: {split: test, device: cpu}
  train_rsl:
    kind: train
    inputs: {data: noisy}
    threads: 2
    params:
      model: resnet-mini
      epochs: 3
      batch_size: 16
      lr: ${lr}
      device: cpu
      reg: constraint
      reg_extractor: 2.0
      reg_predictor: 3.0
      self_label: {correct_epoch: 2, correct_thres: 0.9, reweight_epoch: 2, reweight_temp: 2.0}
  evaluate_rsl:
    kind: evaluate
    inputs: {model: train_rsl, data: noisy}
    params: {split: test, weights: final, device: cpu}
"#;

fn project() -> TestDir {
    let t = TestDir::new();
    write_band_idx(&t);
    t.write("p.yaml", &with_band_stages(PIPELINE));
    t
}

/// instance → artifact digest, over all cache entries.
fn digests(t: &TestDir) -> BTreeMap<String, String> {
    t.entry_values()
        .into_iter()
        .map(|e| {
            (
                e["instance"].as_str().unwrap().to_string(),
                e["artifact"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn train_evaluate_cached_deterministic_and_divergence_is_reported() {
    let t = project();
    let out = t.ok(&["run", "p.yaml"]);
    assert_eq!(out.summary().ran, 7, "{}", out.stderr);

    // The evaluation's metrics.
    let m: serde_json::Value =
        serde_json::from_str(&t.read("results/p/evaluate/metrics.json")).unwrap();
    assert_eq!(m["split"], "test");
    assert_eq!(m["n"], 30);
    assert_eq!(m["weights"], "best");
    assert_eq!(m["classes"], serde_json::json!(["top", "middle", "bottom"]));
    for k in ["top1", "top3"] {
        let v = m[k].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{k} = {v}");
    }
    assert_eq!(
        m["top3"], 1.0,
        "3 classes: the truth is always in the top 3"
    );
    let confusion: Vec<Vec<u64>> = serde_json::from_value(m["confusion"].clone()).unwrap();
    assert_eq!(confusion.iter().flatten().sum::<u64>(), 30);

    // The train artifact.
    let summary: serde_json::Value =
        serde_json::from_str(&t.artifact_file("train", "summary.json")).unwrap();
    assert_eq!(summary["epochs_run"], 3);
    let history: Vec<serde_json::Value> =
        serde_json::from_str(&t.artifact_file("train", "history.json")).unwrap();
    assert_eq!(history.len(), 3);
    assert_eq!(history[2]["lr"], 0.01 * 0.1, "StepLR after epoch 2");
    assert!(
        history[0]["train_acc_clean"].is_number(),
        "noise view has clean labels"
    );
    let model: serde_json::Value =
        serde_json::from_str(&t.artifact_file("train", "model.json")).unwrap();
    assert_eq!(model["model"], "resnet-mini");
    assert_eq!(model["in_channels"], 1);
    assert_eq!(model["image_shape"], serde_json::json!([8, 8, 1]));
    let rsl: Vec<serde_json::Value> =
        serde_json::from_str(&t.artifact_file("train_rsl", "history.json")).unwrap();
    assert_eq!(rsl[0]["temperature"], 2.0);
    let m: serde_json::Value =
        serde_json::from_str(&t.artifact_file("evaluate_rsl", "metrics.json")).unwrap();
    assert_eq!(m["weights"], "final");

    // Everything cached the second time.
    let out = t.ok(&["run", "p.yaml"]);
    assert_eq!(out.summary().ran, 0, "{}", out.stderr);
    assert_eq!(out.summary().cached, 7, "{}", out.stderr);

    // Deterministic: without the cache, the same artifacts again.
    let first = digests(&t);
    assert_eq!(first.len(), 7);
    std::fs::remove_dir_all(t.join("cache")).unwrap();
    std::fs::remove_dir_all(t.join("results")).unwrap();
    let out = t.ok(&["run", "p.yaml"]);
    assert_eq!(out.summary().ran, 7, "{}", out.stderr);
    assert_eq!(digests(&t), first);

    // A learning rate that blows up: a user error naming the divergence; nothing cached.
    let entries = t.entries();
    let out = t.rst(&["run", "p.yaml", "--set", "lr=1e12", "--replace-results"]);
    out.assert_code(2)
        .assert_stderr_contains("training diverged: loss is");
    assert_eq!(t.entries(), entries, "a failed run caches nothing");
}

/// `precision: bf16 | fp16` is mixed precision for GPUs: with `device: cpu` the pipeline is
/// refused before anything runs (file:line, the parameter named); with `device: auto` on a
/// machine without a GPU the training stage refuses at its start, exit 2, nothing cached.
#[test]
fn mixed_precision_on_a_cpu_is_an_error_naming_the_parameter() {
    let t = project();
    let out = t.rst(&["run", "p.yaml", "train", "--set", "lr=0.01"]);
    out.assert_code(0);
    let before = t.entries();
    t.write(
        "p.yaml",
        &with_band_stages(&PIPELINE.replacen(
            "      lr_step: 2\n",
            "      lr_step: 2\n      precision: bf16\n",
            1,
        )),
    );
    let out = t.rst(&["run", "p.yaml", "train"]);
    out.assert_code(2).assert_no_panic();
    out.assert_stderr_contains("precision bf16 needs a CUDA device");
    out.assert_stderr_contains("p.yaml:");
    assert_eq!(t.entries(), before, "nothing ran");

    if rst_has_no_gpu() {
        let auto = PIPELINE.replacen(
            "      lr_step: 2\n      device: cpu\n",
            "      lr_step: 2\n      device: auto\n      precision: fp16\n",
            1,
        );
        t.write("p.yaml", &with_band_stages(&auto));
        let out = t.rst(&["run", "p.yaml", "train"]);
        out.assert_code(2).assert_no_panic();
        out.assert_stderr_contains("precision fp16 needs a CUDA device");
        assert_eq!(t.entries(), before, "a refused training caches nothing");
    }
}

/// Whether libtorch sees no GPU here (`rst-torch probe`).
fn rst_has_no_gpu() -> bool {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rst-torch"))
        .arg("probe")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["cuda_available"] == false
}

/// A torch stage runs in its own `rst-torch` worker process: its GPU lease reaches it
/// through that process's `CUDA_VISIBLE_DEVICES` (recorded in the entry's run facts), and a
/// torch stage on `device: cpu` that asked for none sees none.
#[test]
fn a_torch_worker_gets_its_gpu_lease_in_its_environment() {
    let t = TestDir::new();
    write_band_idx(&t);
    t.write(
        "p.yaml",
        &with_band_stages(&PIPELINE.replacen(
            "    threads: 2\n",
            "    threads: 2\n    resources: {gpus: 1}\n",
            1,
        )),
    );
    let env = [("RST_GPUS", Some("3")), ("CUDA_VISIBLE_DEVICES", None)];
    t.rst_env(&["run", "p.yaml", "evaluate"], &env)
        .assert_code(0);
    let train = t.entry_of("train").unwrap();
    assert_eq!(
        train["run"]["gpus"],
        serde_json::json!(["3"]),
        "{}",
        train["run"]
    );
    let eval = t.entry_of("evaluate").unwrap();
    assert!(eval["run"].get("gpus").is_none(), "{}", eval["run"]);
}
