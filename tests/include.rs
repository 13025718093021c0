//! `include:` (issue #14): stage files shared by pipelines, driven through the real `rst`:
//! the included stages run and cache as if written in place, `--set` reaches an included
//! parameter, errors point into the included file (exit 2), and an RO-Crate export carries
//! the included file beside the pipeline.
use crate::common::TestDir;

const SHARED: &str = r#"# shared stages
params:
  greeting: hello
stages:
  shout:
    kind: command
    inputs: {src: data}
    params: {shell: 'echo ${greeting} ${who} > $RST_OUT/out.txt'}
    publish: true
"#;

const PIPELINE: &str = r#"name: inc
params:
  who: world
include:
  - file: shared/stages.yaml
    params: {greeting: hi}
stages:
  data:
    kind: command
    params: {shell: 'echo data > $RST_OUT/d'}
"#;

const FLAT: &str = r#"name: inc
params:
  who: world
  greeting: hi
stages:
  data:
    kind: command
    params: {shell: 'echo data > $RST_OUT/d'}
  shout:
    kind: command
    inputs: {src: data}
    params: {shell: 'echo ${greeting} ${who} > $RST_OUT/out.txt'}
    publish: true
"#;

#[test]
fn included_stages_run_cache_and_take_set_like_written_ones() {
    let t = TestDir::new();
    t.write("pipelines/shared/stages.yaml", SHARED);
    t.write("pipelines/p.yaml", PIPELINE);
    t.write("pipelines/flat.yaml", FLAT);
    t.ok(&["run", "pipelines/flat.yaml"]);
    // The same stages, keyed the same: all cached.
    let out = t.ok(&["run", "pipelines/p.yaml"]);
    assert_eq!(out.summary().ran, 0, "{}", out.stdout);
    assert_eq!(t.read("results/p/shout/out.txt"), "hi world\n");
    // --set on the included parameter.
    t.ok(&[
        "run",
        "pipelines/p.yaml",
        "--set",
        "greeting=hey",
        "--replace-results",
    ]);
    assert_eq!(t.read("results/p/shout/out.txt"), "hey world\n");

    // The crate carries the included file where the copied pipeline looks for it.
    t.ok(&["export-crate", "pipelines/p.yaml", "crate"]);
    assert_eq!(t.read("crate/shared/stages.yaml"), SHARED);
    let meta = t.read("crate/ro-crate-metadata.json");
    assert!(meta.contains("\"shared/stages.yaml\""), "{meta}");
    // An include outside the pipeline's folder cannot keep its place in a crate.
    t.write("elsewhere/stages.yaml", SHARED);
    t.write(
        "pipelines/p.yaml",
        &PIPELINE.replace("shared/stages.yaml", "../elsewhere/stages.yaml"),
    );
    t.rst(&["export-crate", "pipelines/p.yaml", "crate2"])
        .assert_code(2)
        .assert_stderr_contains("which is outside its folder");
    assert!(!t.exists("crate2"), "nothing written");
}

#[test]
fn an_error_in_an_included_file_names_its_file_line_and_column() {
    let t = TestDir::new();
    t.write("pipelines/p.yaml", PIPELINE);
    t.write(
        "pipelines/shared/stages.yaml",
        &SHARED.replace("inputs: {src: data}", "inputs: {src: dta}"),
    );
    t.rst(&["check", "pipelines/p.yaml"])
        .assert_code(2)
        .assert_no_panic()
        .assert_stderr_contains("pipelines/shared/stages.yaml:7:")
        .assert_stderr_contains("inputs: {src: dta}");
    // A parameter the included file does not have, at the include.
    t.write("pipelines/shared/stages.yaml", SHARED);
    t.write(
        "pipelines/p.yaml",
        &PIPELINE.replace("{greeting: hi}", "{greting: hi}"),
    );
    t.rst(&["check", "pipelines/p.yaml"])
        .assert_code(2)
        .assert_stderr_contains("pipelines/p.yaml:6:")
        .assert_stderr_contains("has no parameter `greting`")
        .assert_stderr_contains("greeting");
    // A missing file.
    t.write(
        "pipelines/p.yaml",
        &PIPELINE.replace("shared/stages.yaml", "shared/nope.yaml"),
    );
    t.rst(&["check", "pipelines/p.yaml"])
        .assert_code(2)
        .assert_stderr_contains("pipelines/p.yaml:5:")
        .assert_stderr_contains("cannot read the included file");
}
