//! Correlated label noise (../shared/regsl-spec.md §3) on the demo's data: every training
//! label replaced by the prediction of an auxiliary model trained upstream, the realised
//! noise rate recorded. Fashion-MNIST comes from Debian's dataset-fashion-mnist package
//! (scripts/setup installs it), read in place and pinned as in pipelines/demo.yaml.
use crate::common::TestDir;

const PIPELINE: &str = r#"
name: correlated
params:
  fmnist: /usr/share/datasets/fashion-mnist
stages:
  fashion_mnist:
    kind: download
    params:
      format: idx
      files:
        - name: train-images-idx3-ubyte.gz
          sha256: b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7
          mirrors: ["${fmnist}/train-images-idx3-ubyte.gz"]
        - name: train-labels-idx1-ubyte.gz
          sha256: 0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056
          mirrors: ["${fmnist}/train-labels-idx1-ubyte.gz"]
        - name: t10k-images-idx3-ubyte.gz
          sha256: cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa
          mirrors: ["${fmnist}/t10k-images-idx3-ubyte.gz"]
        - name: t10k-labels-idx1-ubyte.gz
          sha256: 8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05
          mirrors: ["${fmnist}/t10k-labels-idx1-ubyte.gz"]
      idx:
        train_images: train-images-idx3-ubyte.gz
        train_labels: train-labels-idx1-ubyte.gz
        test_images: t10k-images-idx3-ubyte.gz
        test_labels: t10k-labels-idx1-ubyte.gz
  target:
    kind: split
    inputs: {data: fashion_mnist}
    params:
      classes: [5, 6, 7, 8, 9]
      splits:
        - {name: train, from: train, per_class: 40}
        - {name: val, from: train, per_class: 10}
        - {name: test, from: test, per_class: 20}
  # The auxiliary model: briefly fine-tuned on the clean labels.
  aux:
    kind: train
    inputs: {data: target}
    threads: 2
    params: {model: resnet-mini, seed: 1, epochs: 2, batch_size: 32, lr: 0.003, device: cpu,
             early_stop: null}
  aux_predictions:
    kind: evaluate
    inputs: {model: aux, data: target}
    params: {split: train, predictions: true, device: cpu}
  correlated:
    kind: noise
    inputs: {data: target, predictions: aux_predictions}
    params: {mode: correlated}
  # The noisy data trains like any other.
  fit:
    kind: train
    inputs: {data: correlated}
    threads: 2
    params: {model: resnet-mini, seed: 2, epochs: 1, batch_size: 32, device: cpu}
"#;

#[test]
fn correlated_noise_takes_the_auxiliary_models_predictions() {
    let t = TestDir::new();
    t.write("p.yaml", PIPELINE);
    let out = t.ok(&["run", "p.yaml"]);
    assert_eq!(out.summary().ran, 6, "{}", out.stderr);

    let preds: serde_json::Value =
        serde_json::from_str(&t.artifact_file("aux_predictions", "predictions.json")).unwrap();
    let predicted = preds["predicted"].as_array().unwrap();
    assert_eq!(predicted.len(), 200);
    assert_eq!(preds["split"], "train");
    // metrics.json of the same evaluation: its confusion matrix (true × predicted, on the
    // clean train labels) says how many predictions are wrong.
    let metrics: serde_json::Value =
        serde_json::from_str(&t.artifact_file("aux_predictions", "metrics.json")).unwrap();
    let confusion = metrics["confusion"].as_array().unwrap();
    let right: u64 = (0..5)
        .map(|i| confusion[i][i].as_u64().unwrap())
        .sum::<u64>();
    let wrong = 200 - right;
    let ds: serde_json::Value =
        serde_json::from_str(&t.artifact_file("correlated", "dataset.json")).unwrap();
    let noise = &ds["info"]["noise"];
    assert_eq!(noise["mode"], "correlated", "{noise}");
    assert_eq!(noise["flipped"].as_u64(), Some(wrong), "{noise}");
    let realised = noise["realised_rate"].as_f64().unwrap();
    assert!((realised - wrong as f64 / 200.0).abs() < 1e-12, "{noise}");
    // A briefly trained model is neither perfect nor useless.
    assert!(wrong > 0 && wrong < 160, "{wrong} of 200 predictions wrong");

    // Asking for correlated noise without predictions is a user error (exit 2).
    t.write(
        "bad.yaml",
        &PIPELINE.replace(
            "inputs: {data: target, predictions: aux_predictions}",
            "inputs: {data: target}",
        ),
    );
    t.rst(&["run", "bad.yaml"])
        .assert_code(2)
        .assert_stderr_contains("mode correlated needs input `predictions`");
}
