//! The binary's contract as `main` and `commands/` keep it: exit codes (0 ok, 1 a stage
//! failed or an audit/verify found a difference, 2 a user error) and errors printed with
//! each cause once.

use crate::common::{TestDir, CLOCK_STAGE};

const PIPELINE: &str = r#"
name: p
stages:
  hello:
    kind: command
    params: {shell: 'echo hello > $RST_OUT/hello.txt'}
"#;

#[test]
fn subcommands_map_outcomes_to_exit_codes() {
    let t = TestDir::new();
    t.write("p.yaml", &format!("{PIPELINE}{CLOCK_STAGE}"));
    t.rst(&["check", "p.yaml"]).assert_code(0);
    t.rst(&["run", "p.yaml", "--jobs", "0"])
        .assert_code(2)
        .assert_stderr_contains("--jobs must be at least 1");
    t.ok(&["run", "p.yaml"]);
    t.rst(&["status", "p.yaml"]).assert_code(0);
    t.rst(&["verify"]).assert_code(0);
    // An audit that finds a difference: exit 1, not an error.
    let out = t.rst(&["audit", "p.yaml", "--stage", "clock"]);
    out.assert_code(1).assert_stdout_contains("**FAILED**");
    assert!(!out.stderr.contains("error:"), "{}", out.stderr);
    t.rst(&["audit", "p.yaml", "--stage", "hello"])
        .assert_code(0);
    // User errors: exit 2 with a help line.
    t.rst(&["verify", "--cache-dir", "nowhere"])
        .assert_code(2)
        .assert_stderr_contains("help: ");
    t.rst(&["log", "--cache-dir", "nowhere"])
        .assert_code(2)
        .assert_stderr_contains("help: ");
    t.rst(&["lineage", "p.yaml", "nope"])
        .assert_code(2)
        .assert_stderr_contains("no stage or instance `nope`");
}

/// Regression: `StoreError::Io` wrote its `#[source]` into its own message, and `main`
/// prints the cause chain, so the reason came out twice (`cannot write
/// results/p/manifest.json: cache …/manifest.json: Is a directory (os error 21): Is a
/// directory (os error 21)`).
#[test]
fn a_publish_write_error_prints_its_cause_once() {
    let t = TestDir::new();
    t.write(
        "p.yaml",
        r#"
name: p
stages:
  table:
    kind: command
    publish: "."
    params: {shell: 'echo hi > $RST_OUT/t.md'}
"#,
    );
    // manifest.json cannot be replaced: a non-empty directory stands in its place.
    t.write("results/p/manifest.json/keep", "x");
    let out = t.rst(&["run", "p.yaml"]);
    out.assert_code(1).assert_no_panic();
    let error: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(error.len(), 1, "{}", out.stderr);
    assert!(
        error[0].starts_with("error: cannot write ") && error[0].contains("manifest.json"),
        "{}",
        error[0]
    );
    assert_eq!(
        error[0].matches("(os error").count(),
        1,
        "the cause once: {}",
        error[0]
    );
}
