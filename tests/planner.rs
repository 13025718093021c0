//! The planner from the command line: targets (stages, instances, slices) run only what
//! they need, parameters resolved from parameters, and the instance limit.
//!
//! Every stage is a `sh` one-liner that appends its instance to `$RST_PROJECT/ran.log`.

use std::time::{Duration, Instant};

use crate::common::TestDir;

/// prep → noisy[rate] → train[rate, method] → report (all of train); `other` apart.
const SWEEP: &str = r#"
name: sweep
params:
  rates: [0.2, 0.4, 0.6]
  tag: "r-${base}"
  base: b1
stages:
  prep:
    kind: command
    params: {shell: 'echo prep >> $RST_PROJECT/ran.log; echo P > $RST_OUT/x'}
  noisy:
    kind: command
    matrix: {rate: "${rates}"}
    inputs: {data: prep}
    params: {shell: 'echo noisy-${rate} >> $RST_PROJECT/ran.log; echo ${rate} > $RST_OUT/x'}
  train:
    kind: command
    matrix: {rate: "${rates}", method: [ce, regsl]}
    inputs: {data: "noisy[rate=${rate}]"}
    params: {shell: 'echo train-${method}-${rate}-${tag} >> $RST_PROJECT/ran.log; cat $RST_IN_DATA/x > $RST_OUT/x'}
  report:
    kind: command
    inputs: {runs: train}
    params: {shell: 'echo report >> $RST_PROJECT/ran.log; echo R > $RST_OUT/x'}
  other:
    kind: command
    params: {shell: 'echo other >> $RST_PROJECT/ran.log; echo O > $RST_OUT/x'}
"#;

fn ran(t: &TestDir) -> Vec<String> {
    let mut v = t.take_log();
    v.sort();
    v
}

fn sorted(items: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = items.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[test]
fn a_slice_target_runs_only_it_and_its_ancestors() {
    let t = TestDir::new();
    t.write("p.yaml", SWEEP);
    let o = t.ok(&["run", "p.yaml", "train[rate=0.4, method=regsl]"]);
    assert_eq!(
        ran(&t),
        sorted(&["prep", "noisy-0.4", "train-regsl-0.4-r-b1"]),
        "{}",
        o.stderr
    );
    assert_eq!(o.summary().total, 3);
    // A slice on one axis takes every instance with that value (numbers by value).
    t.ok(&["run", "p.yaml", "train[rate=0.40]"]);
    assert_eq!(ran(&t), sorted(&["train-ce-0.4-r-b1"]));
    // Status and graph take the same targets.
    let s = t.ok(&["status", "p.yaml", "noisy[rate=0.6]"]);
    assert!(
        s.stdout.contains("1 of 2 stage instances cached, 1 to run"),
        "{}",
        s.stdout
    );
    assert!(
        s.stdout.contains("noisy[rate=0.6]") && !s.stdout.contains("train"),
        "{}",
        s.stdout
    );
    let g = t.ok(&["graph", "p.yaml", "--format", "mermaid", "noisy[rate=0.2]"]);
    assert_eq!(g.stdout.matches("[\"").count(), 2, "{}", g.stdout);
}

#[test]
fn stage_and_instance_targets_and_the_rest_stays_unrun() {
    let t = TestDir::new();
    t.write("p.yaml", SWEEP);
    t.ok(&["run", "p.yaml", "noisy[rate=0.2]", "other"]);
    assert_eq!(ran(&t), sorted(&["prep", "noisy-0.2", "other"]));
    let o = t.ok(&["run", "p.yaml", "report"]);
    let log = ran(&t);
    assert_eq!(log.len(), 2 + 6 + 1, "{log:?}\n{}", o.stderr);
    assert!(log.contains(&"report".to_string()) && !log.contains(&"other".to_string()));
    // Everything is cached now: the whole pipeline runs nothing.
    t.ok(&["run", "p.yaml"]);
    assert!(ran(&t).is_empty());
}

#[test]
fn unknown_targets_exit_2_with_a_suggestion() {
    let t = TestDir::new();
    t.write("p.yaml", SWEEP);
    t.rst(&["run", "p.yaml", "trian"])
        .assert_code(2)
        .assert_stderr_contains("no stage or instance `trian`")
        .assert_stderr_contains("did you mean `train`?");
    t.rst(&["status", "p.yaml", "train[rat=0.4]"])
        .assert_code(2)
        .assert_stderr_contains("has no matrix axis `rat`")
        .assert_stderr_contains("axes of `train`: rate, method");
    t.rst(&["graph", "p.yaml", "train[rate=0.9]"])
        .assert_code(2)
        .assert_stderr_contains("selects no instance of `train`");
    assert!(ran(&t).is_empty());
}

#[test]
fn params_refer_to_params_and_cycles_are_errors() {
    let t = TestDir::new();
    t.write("p.yaml", SWEEP);
    // `tag` is `r-${base}`: overriding `base` changes it.
    t.ok(&[
        "run",
        "p.yaml",
        "--set",
        "base=b2",
        "train[rate=0.2, method=ce]",
    ]);
    assert_eq!(ran(&t), sorted(&["prep", "noisy-0.2", "train-ce-0.2-r-b2"]));
    t.write(
        "c.yaml",
        "name: c\nparams: {p: \"${q}\", q: \"${p}\"}\nstages:\n  s:\n    kind: command\n    params: {argv: [echo, \"${p}\"]}\n",
    );
    t.rst(&["check", "c.yaml"])
        .assert_code(2)
        .assert_stderr_contains("c.yaml:2:")
        .assert_stderr_contains("cycle: p -> q -> p");
    t.write(
        "u.yaml",
        "name: u\nparams: {p: \"x-${qq}\", q: 1}\nstages:\n  s:\n    kind: command\n    params: {argv: [echo, \"${p}\"]}\n",
    );
    t.rst(&["check", "u.yaml"])
        .assert_code(2)
        .assert_stderr_contains("u.yaml:2:")
        .assert_stderr_contains("unknown variable `${qq}`");
}

#[test]
fn oversized_matrices_fail_at_once() {
    let t = TestDir::new();
    t.write(
        "big.yaml",
        "name: big\nstages:\n  s:\n    kind: command\n    matrix: {a: {count: 100}, b: {count: 100}, c: {count: 100}, d: {count: 100}, e: {count: 100}}\n    params: {argv: [echo, \"${a}\"]}\n",
    );
    let start = Instant::now();
    t.rst(&["status", "big.yaml"])
        .assert_code(2)
        .assert_stderr_contains("stage `s` expands to 10000000000 instances")
        .assert_stderr_contains("a (100) × b (100) × c (100) × d (100) × e (100)")
        .assert_stderr_contains("--max-instances");
    assert!(start.elapsed() < Duration::from_secs(5));
    t.write("p.yaml", SWEEP);
    t.rst(&["check", "p.yaml", "--max-instances", "5"])
        .assert_code(2)
        .assert_stderr_contains("more than the limit of 5");
    let o = t
        .command(&["check", "p.yaml"])
        .env("RST_MAX_INSTANCES", "12")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
}
