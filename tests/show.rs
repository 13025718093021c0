//! `rst show FILE TARGET` (issue #14): what the cache holds for a stage, instance or slice.
use crate::common::TestDir;

const PIPELINE: &str = r#"name: s
stages:
  make:
    kind: command
    matrix: {n: [1, 2]}
    params: {shell: 'mkdir $RST_OUT/sub; printf "%0${n}00d" 0 > $RST_OUT/sub/zeros.txt; echo ${n} > $RST_OUT/n.txt'}
"#;

#[test]
fn show_lists_key_record_and_files_of_each_instance() {
    let t = TestDir::new();
    t.write("p.yaml", PIPELINE);
    t.rst(&["show", "p.yaml", "make"])
        .assert_code(2)
        .assert_stderr_contains("the cache directory");
    t.ok(&["run", "p.yaml"]);
    let out = t.ok(&["show", "p.yaml", "make[n=2]"]);
    out.assert_stdout_contains("make[n=2]  cached")
        .assert_stdout_contains("  kind      command v")
        .assert_stdout_contains("     200 B  sub/zeros.txt")
        .assert_stdout_contains("       2 B  n.txt");
    assert!(!out.stdout.contains("make[n=1]"), "{}", out.stdout);
    if cfg!(target_arch = "x86_64") {
        // The CPU it ran on and its x86-64 level (issue #15).
        out.assert_stdout_contains(") in ")
            .assert_stdout_contains("(x86-64-v");
    }
    // A stage: every instance; JSON with the entry and each file's size.
    let j: serde_json::Value =
        serde_json::from_str(&t.ok(&["show", "p.yaml", "make", "--json"]).stdout).unwrap();
    assert_eq!(j.as_array().unwrap().len(), 2);
    assert_eq!(j[0]["files"][1]["path"], "sub/zeros.txt");
    assert_eq!(j[0]["files"][1]["bytes"], 100);
    assert_eq!(j[0]["entry"]["instance"], "make[n=1]");
    // Stale after a change: the reason, no files.
    t.write("p.yaml", &PIPELINE.replace("echo ${n}", "echo n=${n}"));
    t.ok(&["show", "p.yaml", "make[n=1]"])
        .assert_stdout_contains("make[n=1]  stale (param shell");
    t.rst(&["show", "p.yaml", "nope"])
        .assert_code(2)
        .assert_stderr_contains("nope");
}
