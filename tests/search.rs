//! `kind: search`: studies whose trials are cached stage instances, driven batch by batch
//! (every trial a `command` stage whose objective is a quadratic computed by `awk`).
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::Duration;

use crate::common::{self, TestDir};

/// Two studies (one per `rate`), each minimising (x − 2)² + (y − 0.5)² + rate over a
/// 2-D space; a trial appends `rate,trial` to `ran.log`.
pub(crate) fn pipeline(trials: usize, parallel: usize, sampler: &str) -> String {
    format!(
        r#"name: tune
params:
  rates: [0.1, 0.2]
stages:
  data:
    kind: command
    params: {{shell: 'echo 2 > $RST_OUT/centre'}}
  fit:
    kind: command
    trial_of: tune
    inputs: {{data: data}}
    params:
      shell: >-
        echo ${{rate}},${{trial}} >> $RST_PROJECT/ran.log;
        awk -v x=${{x}} -v y=${{y}} -v r=${{rate}} -v c=$(cat $RST_IN_DATA/centre)
        'BEGIN {{ printf "{{\"loss\": %.9f}}\n", (x - c)^2 + (y - 0.5)^2 + r }}' > $RST_OUT/m.json
  tune:
    kind: search
    matrix: {{rate: "${{rates}}"}}
    publish: true
    params:
      objective: {{stage: fit, file: m.json, key: loss}}
      direction: minimize
      trials: {trials}
      parallel: {parallel}
      sampler: {sampler}
      seed: 7
      space:
        x: {{low: -5, high: 5}}
        y: {{choices: [0.0, 0.5, 1.0]}}
"#
    )
}

fn trials_json(t: &TestDir, rate: &str) -> Vec<serde_json::Value> {
    let text = t.artifact_file(&format!("tune[rate={rate}]"), "trials.json");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn a_study_runs_its_trials_once_and_resumes_from_the_cache() {
    let t = TestDir::new();
    t.write("p.yaml", &pipeline(12, 2, "tpe"));
    let out = t.ok(&["run", "p.yaml"]);
    let mut log = t.take_log();
    assert_eq!(
        log.len(),
        24,
        "12 trials per study: {log:?}\n{}",
        out.stderr
    );
    log.sort();
    log.dedup();
    assert_eq!(log.len(), 24, "each trial once");
    let first = trials_json(&t, "0.1");
    assert_eq!(first.len(), 12);
    let numbers: Vec<u64> = first
        .iter()
        .map(|r| r["number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, (0..12).collect::<Vec<_>>());
    for r in &first {
        let (x, y) = (
            r["params"]["x"].as_f64().unwrap(),
            r["params"]["y"].as_f64().unwrap(),
        );
        let want = (x - 2.0).powi(2) + (y - 0.5).powi(2) + 0.1;
        assert!((r["value"].as_f64().unwrap() - want).abs() < 1e-6, "{r}");
        assert!(
            (-5.0..5.0).contains(&x) && [0.0, 0.5, 1.0].contains(&y),
            "{r}"
        );
    }
    let best: serde_json::Value =
        serde_json::from_str(&t.artifact_file("tune[rate=0.1]", "best.json")).unwrap();
    let min = first
        .iter()
        .map(|r| r["value"].as_f64().unwrap())
        .fold(f64::INFINITY, f64::min);
    assert_eq!(best["value"].as_f64().unwrap(), min);
    for f in [
        "trials.csv",
        "trials.json",
        "best.json",
        "objective.png",
        "objective.svg",
        "param-x.svg",
        "param-y.png",
    ] {
        assert!(
            t.exists(&format!("results/p/tune/rate=0.1/{f}")),
            "{f} published"
        );
    }
    let svg = t.read("results/p/tune/rate=0.1/objective.svg");
    assert!(
        svg.contains("best so far") && svg.matches("<circle").count() >= 12,
        "one dot per trial"
    );

    // A re-run replays the same proposals: every trial is cached.
    let again = t.ok(&["run", "p.yaml"]);
    assert!(
        t.take_log().is_empty(),
        "nothing recomputed:\n{}",
        again.stderr
    );
    assert!(again.stderr.contains("0 ran"), "{}", again.stderr);
    assert_eq!(trials_json(&t, "0.1"), first, "the same study");

    // More trials: only the new ones run, and the first 12 are the same trials.
    t.write("p.yaml", &pipeline(16, 2, "tpe"));
    t.ok(&["run", "p.yaml"]);
    let log = t.take_log();
    assert_eq!(log.len(), 8, "4 new trials per study: {log:?}");
    assert!(log.iter().all(|l| l.ends_with(",12")
        || l.ends_with(",13")
        || l.ends_with(",14")
        || l.ends_with(",15")));
    let more = trials_json(&t, "0.1");
    assert_eq!(&more[..12], &first[..], "the first 12 trials are unchanged");
}

#[test]
fn a_failed_trial_stops_the_study_and_the_rerun_resumes_it_as_an_uninterrupted_one() {
    let full = TestDir::new();
    full.write("p.yaml", &pipeline(8, 1, "tpe"));
    full.ok(&["run", "p.yaml"]);
    let want = trials_json(&full, "0.2");

    let t = TestDir::new();
    // The 6th trial of each study fails once (a crash mid-study), then works.
    let flaky = pipeline(8, 1, "tpe").replace(
        "echo ${rate},${trial} >> $RST_PROJECT/ran.log;",
        "echo ${rate},${trial} >> $RST_PROJECT/ran.log; \
         if [ ${trial} = 5 ] && [ ! -e $RST_PROJECT/healed ]; then exit 3; fi;",
    );
    t.write("p.yaml", &flaky);
    let out = t.rst(&["run", "p.yaml"]);
    assert_ne!(out.code, 0, "{}", out.stderr);
    assert_eq!(t.take_log().len(), 12, "trials 0..=5 of both studies ran");
    t.write("healed", "");
    t.ok(&["run", "p.yaml"]);
    let log = t.take_log();
    assert_eq!(log.len(), 6, "trials 5..=7 of both studies: {log:?}");
    assert_eq!(
        trials_json(&t, "0.2"),
        want,
        "trial for trial the same study"
    );
}

#[test]
fn random_and_grid_samplers_and_the_same_study_with_other_jobs() {
    let t = TestDir::new();
    t.write("p.yaml", &pipeline(6, 3, "random"));
    t.ok(&["run", "p.yaml", "--jobs", "1"]);
    let one = trials_json(&t, "0.1");
    let t2 = TestDir::new();
    t2.write("p.yaml", &pipeline(6, 3, "random"));
    t2.ok(&["run", "p.yaml", "--jobs", "4"]);
    assert_eq!(
        trials_json(&t2, "0.1"),
        one,
        "--jobs does not change a study"
    );

    let g = TestDir::new();
    g.write(
        "p.yaml",
        &pipeline(6, 2, "grid").replace("x: {low: -5, high: 5}", "x: {low: 1, high: 2, step: 0.5}"),
    );
    g.ok(&["run", "p.yaml"]);
    let grid = trials_json(&g, "0.1");
    let points: Vec<(f64, f64)> = grid
        .iter()
        .map(|r| {
            (
                r["params"]["x"].as_f64().unwrap(),
                r["params"]["y"].as_f64().unwrap(),
            )
        })
        .collect();
    let mut sorted = points.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    sorted.dedup();
    assert_eq!(sorted.len(), 6, "six distinct grid points: {points:?}");
}

#[test]
fn search_errors_name_file_line_and_fix() {
    let t = TestDir::new();
    let cases: &[(&str, &str, &str)] = &[
        (
            "x: {low: -5, high: 5}",
            "x: {low: 5, high: -5}",
            "above high",
        ),
        (
            "x: {low: -5, high: 5}",
            "x: {low: 0, high: 5, log: true}",
            "low > 0",
        ),
        (
            "y: {choices: [0.0, 0.5, 1.0]}",
            "y: {choices: []}",
            "at least one choice",
        ),
        ("sampler: tpe", "sampler: tpx", "tpx"),
        (
            "stage: fit, file",
            "stage: fitt, file",
            "not one of its trial stages",
        ),
        ("trial_of: tune", "trial_of: tun", "not a stage"),
        (
            "x: {low: -5, high: 5}",
            "x: {low: -5, high: 5}\n        z: {low: 0, high: 1}",
            "`z`",
        ),
        (
            "seed: 7",
            "seed: 7\n      prune: median",
            "is a `command` stage: pruning stops a `train` trial",
        ),
    ];
    for (from, to, want) in cases {
        let text = pipeline(4, 1, "tpe").replacen(from, to, 1);
        assert_ne!(text, pipeline(4, 1, "tpe"), "{from}");
        t.write("p.yaml", &text);
        let out = t.rst(&["check", "p.yaml"]);
        out.assert_code(2);
        assert!(out.stderr.contains(want), "{to}: {}", out.stderr);
        assert!(
            out.stderr.contains("p.yaml:"),
            "{to}: no location: {}",
            out.stderr
        );
    }
}

#[test]
fn the_best_values_feed_later_stages_and_every_command_sees_the_trials() {
    let t = TestDir::new();
    let text = format!(
        "{}{}",
        pipeline(6, 2, "random"),
        r#"  final:
    kind: command
    matrix: {rate: "${rates}", seed: [1, 2]}
    best: "tune[rate=${rate}]"
    params: {shell: 'echo final ${seed} >> $RST_PROJECT/ran.log; echo ${x} ${y} > $RST_OUT/best.txt'}
"#
    );
    // (`${seed}` in the command: the two seeds are two stages, not twins of one key, which
    // would race for whose name their one entry carries.)
    t.write("p.yaml", &text);
    // Before the study ran, `final` waits for it.
    let st = t.ok(&["status", "p.yaml"]);
    assert!(
        st.stdout
            .contains("waits for the best trial of tune[rate=0.1]"),
        "{}",
        st.stdout
    );
    t.ok(&["run", "p.yaml"]);
    let best: serde_json::Value =
        serde_json::from_str(&t.artifact_file("tune[rate=0.2]", "best.json")).unwrap();
    let got = t.artifact_file("final[rate=0.2, seed=1]", "best.txt");
    let want = format!(
        "{} {}",
        best["params"]["x"].as_f64().unwrap(),
        best["params"]["y"].as_f64().unwrap()
    );
    let parsed: Vec<f64> = got.split_whitespace().map(|v| v.parse().unwrap()).collect();
    let wanted: Vec<f64> = want
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(parsed, wanted, "final trains with the best values");
    // The study is an input of `final`: its key depends on the study's artifact.
    let e = t.entry_of("final[rate=0.2, seed=1]").unwrap();
    assert_eq!(
        e["record"]["inputs"]["best"][0]["instance"],
        "tune[rate=0.2]"
    );
    t.take_log();

    // status lists the trials; gc keeps them; the re-run computes nothing.
    let st = t.ok(&["status", "p.yaml"]);
    assert!(
        st.stdout.contains("fit[rate=0.1, trial=5]"),
        "{}",
        st.stdout
    );
    assert!(st.stdout.contains("0 to run"), "{}", st.stdout);
    t.ok(&["gc", "p.yaml"]);
    let again = t.ok(&["run", "p.yaml"]);
    assert!(t.take_log().is_empty(), "{}", again.stderr);
    let lineage = t.ok(&["lineage", "p.yaml", "final"]);
    assert!(
        lineage.stdout.contains("tune[rate=0.1]"),
        "{}",
        lineage.stdout
    );
    assert!(
        lineage.stdout.contains("fit[rate=0.1, trial=0]"),
        "{}",
        lineage.stdout
    );
    // `rst audit` re-executes one trial in a scratch cache and finds it reproduced (exit 0).
    let audit = t.ok(&["audit", "p.yaml", "--stage", "fit[rate=0.1, trial=3]"]);
    assert!(
        audit.stdout.contains("fit[rate=0.1, trial=3]"),
        "{}",
        audit.stdout
    );
    assert!(
        !audit.stdout.contains("| fit[rate=0.1, trial=4]"),
        "{}",
        audit.stdout
    );
}

#[test]
fn kill_9_mid_study_then_the_rerun_resumes_and_gives_the_uninterrupted_study() {
    // Trials from #4 on wait for a `go` file (their command is the same either way, so
    // are their keys): the run is killed while trial 4 waits.
    let text = pipeline(7, 1, "tpe").replace(
        "echo ${rate},${trial} >> $RST_PROJECT/ran.log;",
        "if [ ${trial} -ge 4 ]; then while [ ! -e $RST_PROJECT/go ]; do sleep 0.05; done; fi; \
         echo ${rate},${trial} >> $RST_PROJECT/ran.log;",
    );
    let full = TestDir::new();
    full.write("p.yaml", &text).write("go", "");
    full.ok(&["run", "p.yaml"]);
    let want = (trials_json(&full, "0.1"), trials_json(&full, "0.2"));

    let t = TestDir::new();
    t.write("p.yaml", &text);
    let mut child = t
        .command(&["run", "p.yaml"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    common::wait_for(
        "trials 0-3 of both studies",
        Duration::from_secs(60),
        || std::fs::read_to_string(t.join("ran.log")).is_ok_and(|l| l.lines().count() == 8),
    );
    std::thread::sleep(Duration::from_millis(200));
    // rst alone (not its group): its guardian then ends the waiting trials.
    let kill = std::process::Command::new("kill")
        .args(["-9", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    assert!(!child.wait().unwrap().success());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(t.take_log().len(), 8);

    t.write("go", "");
    let out = t.ok(&["run", "p.yaml"]);
    let log = t.take_log();
    assert_eq!(
        log.len(),
        6,
        "only trials 4..=6 of both studies: {log:?}\n{}",
        out.stderr
    );
    assert_eq!((trials_json(&t, "0.1"), trials_json(&t, "0.2")), want);
}

#[test]
fn the_bundled_search_pipeline_checks() {
    let t = TestDir::new();
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/pipelines/demo-tune.yaml");
    let out = t.ok(&["check", file]);
    assert!(out.stdout.contains("ok"), "{}", out.stdout);
}
