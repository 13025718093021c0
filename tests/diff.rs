//! `rst diff` (issue #14): two runs of a small pipeline whose "evaluations" are command
//! stages writing metrics.json, aggregated into a table: the overrides and parameters
//! that changed, the instances computed in one run only, and the table cells side by side.
use crate::common::TestDir;

const PIPELINE: &str = r#"
name: d
params: {acc: 0.5, seeds: [1, 2]}
stages:
  prep:
    kind: command
    params: {shell: 'echo data > $RST_OUT/data'}
  eval:
    kind: command
    matrix: {seed: "${seeds}", rate: [0.2]}
    inputs: {data: prep}
    params: {shell: 'echo "{\"top1\": ${acc}, \"seed\": ${seed}}" > $RST_OUT/metrics.json'}
  table:
    kind: aggregate
    inputs: {evals: eval}
    publish: "."
    params: {columns: rate, over: [seed], row_labels: {eval: Ours}}
"#;

#[test]
fn diff_names_what_changed_between_two_runs() {
    let t = TestDir::new();
    t.write("p.yaml", PIPELINE);
    // Nothing to compare yet.
    t.rst(&["diff"]).assert_code(2);
    t.ok(&["run", "p.yaml"]);
    t.rst(&["diff"])
        .assert_code(2)
        .assert_stderr_contains("is the first recorded run of `d`");
    t.ok(&["run", "p.yaml", "--set", "acc=0.625", "--replace-results"]);

    let out = t.ok(&["diff"]);
    out.assert_stdout_contains("acc: — → 0.625")
        .assert_stdout_contains("acc: 0.5 → 0.625")
        .assert_stdout_contains("eval[seed=1, rate=0.2]  ran → ran  (other key)")
        .assert_stdout_contains("(0 the same)")
        .assert_stdout_contains("Ours | rate = 0.2: 50.00 ± 0.00 → 62.50 ± 0.00  (+12.50)");
    // The same computation, computed by the first run only.
    assert!(
        out.stdout
            .lines()
            .any(|l| l.trim_start().starts_with("prep ") && l.ends_with("ran → cached")),
        "{}",
        out.stdout
    );

    let j: serde_json::Value = serde_json::from_str(&t.ok(&["diff", "--json"]).stdout).unwrap();
    assert_eq!(j["overrides"][0]["b"], "0.625");
    assert_eq!(j["tables"][0]["cells"][0]["change"], 12.5);
    assert_eq!(j["unchanged_instances"], 0);

    // One id: that run against the one before it; two ids, in that order; a bad id.
    let ids: Vec<String> = t
        .ok(&["log"])
        .stdout
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    let (newest, oldest) = (&ids[0], &ids[1]);
    let one: serde_json::Value =
        serde_json::from_str(&t.ok(&["diff", newest, "--json"]).stdout).unwrap();
    assert_eq!(one["a"]["id"], oldest.as_str());
    let two: serde_json::Value =
        serde_json::from_str(&t.ok(&["diff", newest, oldest, "--json"]).stdout).unwrap();
    assert_eq!(two["a"]["id"], newest.as_str());
    assert_eq!(two["params"][0]["b"], "0.5");
    t.rst(&["diff", "--cache-dir", "no-such-cache"])
        .assert_code(2)
        .assert_stderr_contains("the cache directory no-such-cache does not exist");
    t.rst(&["diff", "nosuchrun"])
        .assert_code(2)
        .assert_stderr_contains("no run `nosuchrun`");
}
