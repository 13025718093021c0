//! The engine built without the `torch` feature (`cargo test --no-default-features`): a
//! pipeline with a `train` or `evaluate` stage is a user error (exit 2) that says how to
//! build rst with torch, before any stage runs, rather than a crash on a missing
//! `rst-torch` worker.
use crate::common::TestDir;

/// A command stage that would run first, and a training that needs it.
const PIPELINE: &str = r#"name: t
stages:
  prepare:
    kind: command
    params: {shell: 'echo prepare >> $RST_PROJECT/ran.log; echo p > $RST_OUT/x'}
  fit:
    kind: train
    inputs: {data: prepare}
    params: {model: resnet-mini, epochs: 1, batch_size: 16, lr: 0.01, device: cpu}
"#;

#[test]
fn torch_stages_need_the_torch_feature() {
    let t = TestDir::new();
    t.write("p.yaml", PIPELINE);
    for cmd in ["run", "status"] {
        let out = t.rst(&[cmd, "p.yaml"]);
        out.assert_code(2)
            .assert_no_panic()
            .assert_stderr_contains("stage `fit` in p.yaml is a `train` stage")
            .assert_stderr_contains("this rst was built without the torch feature")
            .assert_stderr_contains("cargo build --features torch");
    }
    assert!(
        !t.exists("ran.log"),
        "no stage may run: {}",
        t.read("ran.log")
    );
    assert!(t.entries().is_empty(), "{:?}", t.entries());
}
