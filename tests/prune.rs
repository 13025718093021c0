//! Pruning (`prune:` in a `search`): a hopeless `train` trial stops early, is cached as
//! pruned with its partial history, and the study is the same on a re-run.
use crate::common::{with_band_stages, write_band_idx, TestDir};

/// A grid over three learning rates, the last one far too small to learn anything; the
/// median pruner starts after two completed trials, so only the third can be pruned.
const PIPELINE: &str = r#"
name: prune
stages:
  # BAND DATA STAGES (tests/common: `data` and `target`)
  fit:
    kind: train
    trial_of: tune
    inputs: {data: target}
    threads: 1
    params:
      model: resnet-mini
      epochs: 5
      batch_size: 16
      lr: ${lr}
      early_stop: null
      device: cpu
      prune: ${prune}
  tune:
    kind: search
    publish: true
    params:
      objective: fit
      direction: maximize
      trials: 3
      sampler: grid
      prune: {startup_trials: 2}
      space:
        lr: {choices: [0.02, 0.01, 0.0000001]}
"#;

#[test]
fn a_hopeless_trial_is_pruned_early_and_cached_as_pruned() {
    let t = TestDir::new();
    write_band_idx(&t);
    t.write("p.yaml", &with_band_stages(PIPELINE));
    let out = t.ok(&["run", "p.yaml"]);
    let trials: Vec<serde_json::Value> =
        serde_json::from_str(&t.artifact_file("tune", "trials.json")).unwrap();
    assert_eq!(trials.len(), 3, "{trials:?}");
    let states: Vec<&str> = trials
        .iter()
        .map(|t| t["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        ["complete", "complete", "pruned"],
        "{trials:?}\n{}",
        out.stderr
    );
    assert_eq!(trials[0]["epochs"], 5);
    let pruned_epochs = trials[2]["epochs"].as_u64().unwrap();
    assert!(pruned_epochs < 5, "{trials:?}");

    // The pruned trial's artifact keeps its partial history and says it was pruned.
    let history: Vec<serde_json::Value> =
        serde_json::from_str(&t.artifact_file("fit[trial=2]", "history.json")).unwrap();
    assert_eq!(history.len() as u64, pruned_epochs);
    let summary: serde_json::Value =
        serde_json::from_str(&t.artifact_file("fit[trial=2]", "summary.json")).unwrap();
    assert_eq!(summary["pruned"], true);
    // The first two trials ran before any reference existed: their params have none.
    let first: serde_json::Value =
        serde_json::from_str(&t.artifact_file("fit[trial=0]", "summary.json")).unwrap();
    assert!(first.get("pruned").is_none(), "{first}");

    // The best is a complete trial; trials.csv says which one was pruned.
    let best: serde_json::Value =
        serde_json::from_str(&t.artifact_file("tune", "best.json")).unwrap();
    assert_eq!(best["state"], "complete");
    let csv = t.artifact_file("tune", "trials.csv");
    assert!(csv.lines().nth(3).unwrap().contains(",pruned,"), "{csv}");

    // A re-run replays the same references and finds every trial cached.
    let again = t.ok(&["run", "p.yaml"]);
    assert_eq!(again.summary().ran, 0, "{}", again.stderr);
    let status = t.ok(&["status", "p.yaml"]);
    assert!(
        status.stdout.contains(&format!(
            "fit[trial=2]  trial pruned after epoch {pruned_epochs}"
        )),
        "{}",
        status.stdout
    );
}

#[test]
fn pruning_needs_the_objective_to_take_the_references() {
    let t = TestDir::new();
    write_band_idx(&t);
    t.write(
        "p.yaml",
        &with_band_stages(PIPELINE).replace("      prune: ${prune}\n", ""),
    );
    let out = t.rst(&["check", "p.yaml"]);
    out.assert_code(2);
    assert!(
        out.stderr.contains("p.yaml:") && out.stderr.contains("prune: ${prune}"),
        "{}",
        out.stderr
    );
    for (from, to, want) in [
        (
            "prune: {startup_trials: 2}",
            "prune: {percentile: 150}",
            "[0, 100]",
        ),
        (
            "prune: {startup_trials: 2}",
            "prune: hyperband",
            "unknown pruner",
        ),
        (
            "direction: maximize",
            "direction: minimize",
            "must maximise",
        ),
    ] {
        t.write("p.yaml", &with_band_stages(PIPELINE).replace(from, to));
        let out = t.rst(&["check", "p.yaml"]);
        out.assert_code(2);
        assert!(
            out.stderr.contains("p.yaml:") && out.stderr.contains(want),
            "{to}: {}",
            out.stderr
        );
    }
}
