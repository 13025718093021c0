//! The six other datasets of the paper, each through its own pipeline file on a generated
//! miniature of that dataset's real folder and list/annotation-file layout (a few JPEGs per
//! class, some grey; `.mat` files where the dataset ships them), one noise rate and one
//! run at 32 pixels: download (layout + decode) → split → noise → Fine-tuning and Ours
//! from a PyTorch-written ResNet-18 `.pth` → evaluate → table.
use std::path::Path;

use crate::common::{write_resnet18_pth, TestDir};
use rst::data::miniature::{self, MiniInfo, MiniOpts};

type Generator = fn(&Path, &MiniOpts) -> MiniInfo;

fn run_dataset(t: &TestDir, pipeline: &str, folder: &str, make: Generator, extra: &[&str]) {
    // Five classes: enough training images that 10% of them make a validation split.
    let opts = MiniOpts {
        classes: 5,
        ..MiniOpts::default()
    };
    let info = make(&t.join(folder), &opts);
    assert!(!info.splits.is_empty());
    let pipeline = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("pipelines")
        .join(pipeline);
    let data_root = format!("data_root={folder}");
    let mut args = vec![
        "run",
        pipeline.to_str().unwrap(),
        "-j",
        "2",
        "--set",
        &data_root,
        "--set",
        "weights=weights/r18.pth",
        "--set",
        "epochs=1",
        "--set",
        "runs=1",
        "--set",
        "image_size=32",
        "--set",
        "device=cpu",
        "--set",
        "noise_rates=[0.4]",
        "--set",
        "ours=[{rate: 0.4, D: 8.47139398080791, H: 19.0191127114923, T0: 2.0}]",
    ];
    args.extend_from_slice(extra);
    let out = t.ok(&args);
    // download, split, noise, weights, 2 trainings, 2 evaluations, table; the weights
    // stage is shared with the datasets before (same file, same key: cached).
    let s = out.summary();
    assert_eq!(
        (s.total, s.ran + s.cached),
        (9, 9),
        "{pipeline:?}\n{}",
        out.stderr
    );
    assert!(s.ran >= 8, "{pipeline:?}\n{}", out.stderr);
    let stem = pipeline.file_stem().unwrap().to_str().unwrap();
    let table = t.read(&format!("results/{stem}/table.md"));
    assert!(
        table.contains("| Method | Noise = 40% |") && table.contains("| Ours |"),
        "{stem}:\n{table}"
    );
    assert!(table.contains("| Fine-tuning |"), "{stem}:\n{table}");

    // The search option: a 2-trial study at 40%, one final run with its best values, a
    // new row in the table; everything before is cached.
    args.extend_from_slice(&[
        "--set",
        "tune_rates=[0.4]",
        "--set",
        "trials=2",
        "--set",
        "parallel=2",
        // A variation of the run that published the table: replace it on purpose.
        "--replace-results",
    ]);
    let out = t.ok(&args);
    let s = out.summary();
    // 2 trials, the study, the tuned training, its evaluation, the table again.
    assert_eq!((s.ran, s.cached), (6, 8), "{pipeline:?}\n{}", out.stderr);
    let table = t.read(&format!("results/{stem}/table.md"));
    assert!(table.contains("| Ours (tuned here) |"), "{stem}:\n{table}");
}

#[test]
fn each_dataset_pipeline_runs_on_its_miniature() {
    let t = TestDir::new();
    write_resnet18_pth(&t.join("weights/r18.pth"));
    let cases: [(&str, &str, Generator, &[&str]); 6] = [
        ("cub_noise.yaml", "CUB_200_2011", miniature::cub, &[]),
        ("cars_noise.yaml", "StanfordCars", miniature::cars, &[]),
        ("dogs_noise.yaml", "StanfordDogs", miniature::dogs, &[]),
        (
            "aircraft_noise.yaml",
            "fgvc-aircraft-2013b",
            miniature::aircraft,
            &[],
        ),
        (
            "caltech256_noise.yaml",
            "256_ObjectCategories",
            miniature::caltech256,
            &[],
        ),
        (
            "flowers_noise.yaml",
            "flowers",
            miniature::flowers102,
            &["--set", "val_count=3", "--set", "test_count=4"],
        ),
    ];
    for (pipeline, folder, make, extra) in cases {
        run_dataset(&t, pipeline, folder, make, extra);
    }
}
