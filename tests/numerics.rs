//! Portable numerics (`numerics: portable`, `crate::numerics`): the mode is part of a
//! torch stage's key, reaches the worker, and pins the bytes of a training. The pinned
//! digest below was computed on an AMD EPYC (x86-64-v4, AVX-512) machine; another CPU
//! that gives other bytes fails this test, loudly, naming itself.
use crate::common::{with_band_stages, write_band_idx, TestDir};

/// A short training of the demo's model (resnet-mini, from scratch, Adam, augmentation)
/// on the generated band images. Batch 1 and one thread: then every kernel it runs is
/// ATen's (pinned to AVX2) or MKL's (conditional numerical reproducibility, AVX2 STRICT);
/// from batch 2 libtorch convolves with oneDNN, whose blocking follows the CPU's cache
/// sizes and which no reproducibility contract covers across CPU models.
const PIPELINE: &str = r#"
name: portable
numerics: portable
stages:
  # BAND DATA STAGES (tests/common: `data` and `target`)
  train:
    kind: train
    inputs: {data: target}
    params:
      model: resnet-mini
      epochs: 1
      batch_size: 1
      lr: 0.01
      device: cpu
      augment: {crop_padding: 1, flip: true}
  native:
    kind: train
    numerics: native
    inputs: {data: target}
    params: {model: resnet-mini, epochs: 1, batch_size: 1, lr: 0.01, device: cpu, augment: {crop_padding: 1, flip: true}}
"#;

/// `train`'s artifact in portable mode (see the module doc for the machine).
const PINNED: &str = "0def5e0dfc5fc8459fd5a2297bb507e469ecdf9af335d83ae879f8d04126d3bb";

#[test]
fn portable_numerics_is_keyed_reaches_the_worker_and_pins_the_bytes() {
    let t = TestDir::new();
    write_band_idx(&t);
    t.write("p.yaml", &with_band_stages(PIPELINE));
    t.ok(&["run", "p.yaml", "-j", "1"]);
    let portable = t.entry_of("train").unwrap();
    let native = t.entry_of("native").unwrap();
    assert_eq!(portable["record"]["env"]["numerics"], "portable-avx2");
    assert!(
        native["record"]["env"].get("numerics").is_none(),
        "{native}"
    );
    assert_ne!(portable["key"], native["key"], "two modes, two keys");
    let log = std::fs::read_to_string(t.join(&format!(
        "cache/{}",
        portable["run"]["log"].as_str().unwrap()
    )))
    .unwrap();
    assert!(
        log.contains("numerics: portable numerics (AVX2 kernels) (ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2,STRICT ONEDNN_MAX_CPU_ISA=AVX2)"),
        "{log}"
    );
    let got = portable["artifact"].as_str().unwrap();
    let cpu = portable["run"]["cpu"].as_str().unwrap_or("?");
    let isa = portable["run"]["isa"].as_str().unwrap_or("?");
    assert_eq!(
        got, PINNED,
        "\n*** portable numerics gave other bytes on this CPU ({cpu}, {isa}) than on the AMD EPYC \
         (x86-64-v4) where the digest was pinned: a kernel that AVX2 pinning does not cover \
         differs here. Do not re-pin on a whim: find which (see src/numerics.rs). ***\n"
    );
}
