//! The paper's own pipeline, `pipelines/indoor_noise.yaml`, end to end on CPU: a generated
//! miniature of MIT Indoor 67 (the official folder layout and list files, a few JPEGs per
//! class, some grey, one corrupt) and a ResNet-18 `.pth` written by the project venv's
//! PyTorch, with the quick settings.
use std::path::Path;

use crate::common::{write_resnet18_pth, TestDir};
use rst::data::miniature::{self, MiniOpts};

fn logs_containing(t: &TestDir, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(t.join("cache/logs")).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap_or_default();
        if text.contains(needle) {
            found.push(text);
        }
    }
    found
}

#[test]
fn indoor_noise_pipeline_runs_on_a_miniature_indoor_with_a_pytorch_pth() {
    let t = TestDir::new();
    let info = miniature::indoor(
        &t.join("Indoor"),
        &MiniOpts {
            classes: 4,
            grey: true,
            corrupt: true,
            compress_mat: true,
        },
    );
    assert!(info.corrupt.is_some() && !info.grey.is_empty());
    // Not named like torch.hub's file: no name hash to check; an unpinned local file is
    // keyed by its content.
    write_resnet18_pth(&t.join("weights/r18.pth"));
    let pipeline = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/indoor_noise.yaml");
    let pipeline = pipeline.to_str().unwrap();
    let args = [
        "run",
        pipeline,
        "-j",
        "2",
        "--set",
        "data_root=Indoor",
        "--set",
        "weights=weights/r18.pth",
        "--set",
        "epochs=1",
        "--set",
        "runs=1",
        "--set",
        "image_size=64",
        "--set",
        "device=cpu",
    ];
    let out = t.ok(&args);
    // 1 download + 1 split + 4 noise + 1 weights + 4 + 4 trainings + 8 evaluations + table.
    assert_eq!(out.summary().ran, 24, "{}", out.stderr);

    // The table in the paper's layout, published.
    let table = t.read("results/indoor_noise/table.md");
    for needle in [
        "| Method | Noise = 20% | Noise = 40% | Noise = 60% | Noise = 80% |",
        "| Ours |",
        "| Fine-tuning |",
    ] {
        assert!(table.contains(needle), "{needle} not in\n{table}");
    }
    assert!(!table.contains('–'), "every cell has a run:\n{table}");
    assert!(out.stdout.contains("Fine-tuning"), "the table is printed");

    // Decoding: the corrupt JPEG skipped with a warning naming it; the weights loaded with
    // the head dropped; ImageNet transforms at 64 (eval resize 73).
    let corrupt = info.corrupt.unwrap();
    let file = corrupt.rsplit('/').next().unwrap();
    assert_eq!(
        logs_containing(&t, "skipped 1 image(s) that could not be decoded").len(),
        1
    );
    assert!(!logs_containing(&t, file).is_empty());
    assert_eq!(
        logs_containing(&t, "loaded 100 tensors from input `weights`").len(),
        8
    );
    assert_eq!(
        logs_containing(&t, "RandomResizedCrop 64").len(),
        8,
        "every training uses the ImageNet transforms"
    );
    assert!(!logs_containing(&t, "Resize 73 + CenterCrop 64").is_empty());

    // Everything is cached the second time.
    let again = t.ok(&args);
    assert_eq!(again.summary().ran, 0, "{}", again.stderr);
    assert_eq!(again.summary().cached, 24);

    // The authors' procedure with the search: a 3-trial study at 40% on the validation
    // split, one final run with the best values, the table. The data, weights and
    // Fine-tuning stages are indoor_noise.yaml's (same keys): cached.
    let search = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/indoor_search.yaml");
    let mut args = args.to_vec();
    args[1] = search.to_str().unwrap();
    args.extend([
        "--set",
        "noise_rates=[0.4]",
        "--set",
        "trials=3",
        "--set",
        "parallel=2",
    ]);
    let out = t.ok(&args);
    let s = out.summary();
    // 3 trials + the study + 1 final training + its evaluation + the table.
    assert_eq!(s.ran, 7, "{}", out.stderr);
    assert_eq!(
        s.cached, 6,
        "data, weights and Fine-tuning are shared: {}",
        out.stderr
    );
    let trials: Vec<serde_json::Value> =
        serde_json::from_str(&t.artifact_file("tune[rate=0.4]", "trials.json")).unwrap();
    assert_eq!(trials.len(), 3);
    let table = t.read("results/indoor_search/table.md");
    assert!(table.contains("| Ours (tuned by TPE) |"), "{table}");
    assert!(table.contains("| Fine-tuning |"), "{table}");
    assert!(
        out.stderr.contains("tune[rate=0.4]"),
        "the study's summary line: {}",
        out.stderr
    );
}
