//! Bad input: every problem is a user error (exit 2) that says where (`p.yaml:LINE:COL`)
//! and, where it can, how to fix it; nothing runs, nothing is cached, nothing panics.
use crate::common::{Output, TestDir};

/// Writes `yaml` to p.yaml and runs `rst run p.yaml EXTRA...`; asserts a clean user error.
fn run_bad(yaml: &str, extra: &[&str]) -> (TestDir, Output) {
    let t = TestDir::new();
    t.write("p.yaml", yaml);
    let mut args = vec!["run", "p.yaml"];
    args.extend_from_slice(extra);
    let out = t.rst(&args);
    out.assert_code(2);
    out.assert_stderr_contains("error: ");
    assert!(
        t.entries().is_empty(),
        "a rejected pipeline must not create cache entries: {:?}",
        t.entries()
    );
    assert!(
        !t.exists("ran.log"),
        "no stage may run:\n{}",
        t.read("ran.log")
    );
    // `rst check` gives the same verdict without running anything.
    let mut args = vec!["check", "p.yaml"];
    args.extend_from_slice(extra);
    let check = t.rst(&args);
    check.assert_code(2);
    assert_eq!(
        check.stderr, out.stderr,
        "check and run report the same error"
    );
    (t, out)
}

const OK_STAGE: &str = r#"
  ok:
    kind: command
    params: {shell: 'echo ok >> $RST_PROJECT/ran.log; echo ok > $RST_OUT/x'}
"#;

#[test]
fn yaml_syntax_error() {
    let yaml = format!(
        "name: t\nstages:{OK_STAGE}  a:\n    kind: command\n    params: {{shell: 'echo a > $RST_OUT/x'}}\n   bad: 1\n"
    );
    let (_, out) = run_bad(&yaml, &[]);
    out.assert_stderr_contains("p.yaml:9:4: invalid YAML");
    // The offending line is shown.
    out.assert_stderr_contains("   bad: 1");
}

#[test]
fn unknown_key_suggests_the_right_one() {
    let yaml = format!(
        "name: t\nstages:{OK_STAGE}  a:\n    kind: command\n    parms: {{shell: 'echo a > $RST_OUT/x'}}\n"
    );
    let (_, out) = run_bad(&yaml, &[]);
    out.assert_stderr_contains("p.yaml:8:5: ");
    out.assert_stderr_contains("unknown field `parms`");
    out.assert_stderr_contains("help: did you mean `params`?");
}

#[test]
fn wrong_type_for_threads() {
    let yaml = format!(
        "name: t\nstages:{OK_STAGE}  a:\n    kind: command\n    threads: lots\n    params: {{shell: 'echo a > $RST_OUT/x'}}\n"
    );
    let (_, out) = run_bad(&yaml, &[]);
    out.assert_stderr_contains("p.yaml:8:14: ");
    out.assert_stderr_contains("threads must be a whole number");
    out.assert_stderr_contains("lots");
}

#[test]
fn reference_to_a_missing_stage() {
    let yaml = r#"name: t
stages:
  prepare:
    kind: command
    params: {shell: 'echo p > $RST_OUT/x'}
  train:
    kind: command
    inputs: {data: prepair}
    params: {shell: 'echo t > $RST_OUT/x'}
"#;
    let (_, out) = run_bad(yaml, &[]);
    out.assert_stderr_contains("p.yaml:8:20: ");
    out.assert_stderr_contains("stage `prepair` that does not exist");
    out.assert_stderr_contains("help: did you mean `prepare`?");
}

#[test]
fn cycle_is_reported_with_its_path() {
    let yaml = r#"name: t
stages:
  a:
    kind: command
    inputs: {x: b}
    params: {shell: 'echo a > $RST_OUT/x'}
  b:
    kind: command
    inputs: {x: a}
    params: {shell: 'echo b > $RST_OUT/x'}
"#;
    let (_, out) = run_bad(yaml, &[]);
    out.assert_stderr_contains("p.yaml:5:17: ");
    out.assert_stderr_contains("cycle: a -> b -> a");
    out.assert_stderr_contains("help: ");
}

#[test]
fn duplicate_stage_names() {
    let yaml = r#"name: t
stages:
  a:
    kind: command
    params: {shell: 'echo a > $RST_OUT/x'}
  a:
    kind: command
    params: {shell: 'echo b > $RST_OUT/x'}
"#;
    let (_, out) = run_bad(yaml, &[]);
    out.assert_stderr_contains("p.yaml:6:3: ");
    out.assert_stderr_contains("duplicate key `a`");
    out.assert_stderr_contains("line 3");
}

#[test]
fn unknown_stage_kind() {
    let yaml = format!(
        "name: t\nstages:{OK_STAGE}  a:\n    kind: comand\n    params: {{shell: 'echo a > $RST_OUT/x'}}\n"
    );
    let (_, out) = run_bad(&yaml, &[]);
    out.assert_stderr_contains("p.yaml:7:11: ");
    out.assert_stderr_contains("unknown stage kind `comand`");
    out.assert_stderr_contains("help: did you mean `command`?");
}

#[test]
fn command_stage_without_argv_or_shell() {
    let yaml =
        format!("name: t\nstages:{OK_STAGE}  a:\n    kind: command\n    params: {{deps: []}}\n");
    let (_, out) = run_bad(&yaml, &[]);
    out.assert_stderr_contains("p.yaml:8:13: ");
    out.assert_stderr_contains("`argv");
    out.assert_stderr_contains("`shell");
}

const WITH_PARAM: &str = r#"name: t
params: {rate: 0.1}
stages:
  a:
    kind: command
    params: {shell: 'echo a >> $RST_PROJECT/ran.log; echo ${rate} > $RST_OUT/x'}
"#;

#[test]
fn unknown_set_key() {
    let (_, out) = run_bad(WITH_PARAM, &["--set", "rat=0.2"]);
    out.assert_stderr_contains("--set rat");
    out.assert_stderr_contains("no parameter `rat`");
    out.assert_stderr_contains("help: did you mean `rate`?");
}

#[test]
fn set_value_of_the_wrong_type() {
    let (_, out) = run_bad(WITH_PARAM, &["--set", "rate=fast"]);
    out.assert_stderr_contains("--set rate=fast");
    out.assert_stderr_contains("a number");
}

#[test]
fn missing_pipeline_file() {
    let t = TestDir::new();
    let out = t.rst(&["run", "nope.yaml"]);
    out.assert_code(2);
    out.assert_stderr_contains("nope.yaml");
    out.assert_stderr_contains("help: ");
    assert!(t.entries().is_empty());
    let out = t.rst(&["status", "nope.yaml"]);
    out.assert_code(2);
    out.assert_stderr_contains("nope.yaml");
}

#[test]
fn good_pipeline_checks_ok() {
    let t = TestDir::new();
    t.write("p.yaml", WITH_PARAM);
    t.ok(&["check", "p.yaml"])
        .assert_stdout_contains("p.yaml: ok (1 stages, 1 instances)");
    assert!(!t.exists("cache"), "check does not create a cache");
}

/// The error is printed once: `error: <location>: <message>`, snippet, help. Not the whole
/// text a second time after a `: `.
#[test]
fn error_message_is_printed_once() {
    let cases: Vec<(String, Vec<&str>, &str)> = vec![
        (
            format!("name: t\nstages:{OK_STAGE}  a:\n    kind: command\n    parms: {{shell: 'echo a > $RST_OUT/x'}}\n"),
            vec![],
            "unknown field `parms`",
        ),
        (
            format!("name: t\nstages:{OK_STAGE}  a:\n    kind: comand\n"),
            vec![],
            "unknown stage kind `comand`",
        ),
        (WITH_PARAM.to_string(), vec!["--set", "rat=0.2"], "no parameter `rat`"),
    ];
    for (yaml, extra, msg) in cases {
        let t = TestDir::new();
        t.write("p.yaml", &yaml);
        let mut args = vec!["run", "p.yaml"];
        args.extend(extra);
        let out = t.rst(&args);
        out.assert_code(2);
        assert_eq!(
            out.stderr.matches(msg).count(),
            1,
            "the message is repeated:\n{}",
            out.stderr
        );
        assert_eq!(
            out.stderr.matches("help: ").count(),
            1,
            "the help line is repeated:\n{}",
            out.stderr
        );
    }
    let t = TestDir::new();
    let out = t.rst(&["run", "nope.yaml"]);
    assert_eq!(
        out.stderr.matches("cannot read pipeline file").count(),
        1,
        "the message is repeated:\n{}",
        out.stderr
    );
}

#[test]
fn an_unknown_numerics_mode_names_the_two() {
    let yaml = format!("name: t\nnumerics: portabel\nstages:{OK_STAGE}");
    let (_, out) = run_bad(&yaml, &[]);
    out.assert_stderr_contains("p.yaml:2:11: ");
    out.assert_stderr_contains("unknown variant `portabel`, expected `native` or `portable`");
    let yaml = format!("name: t\nstages:{OK_STAGE}    numerics: fast\n");
    let (_, out) = run_bad(&yaml, &[]);
    out.assert_stderr_contains("p.yaml:6:15: stages.ok.numerics");
    out.assert_stderr_contains("unknown variant `fast`");
}
