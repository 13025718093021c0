//! The arrows between modules, checked on the source text (cheap, and it fails the moment
//! an import points the wrong way):
//! - only `commands/` and `main.rs` know the command line (`cli`) and the subcommands
//!   (`commands`): the library takes plain values;
//! - `data/` (formats, datasets) knows nothing of `stages/` (which runs them);
//! - `search/` (the samplers) is pure: it knows nothing of stages, specs, the cache or files;
//! - the engine (cache, exec, spec, stages, data, ml, status) knows the remote only as
//!   `cache::shared::SharedCache`: S3 and its async runtime stay in `remote/`.
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, relative to `src/`, with its text.
fn sources(dir: &Path, src: &Path, out: &mut Vec<(PathBuf, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            sources(&path, src, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            out.push((path.strip_prefix(src).unwrap().to_path_buf(), text));
        }
    }
}

fn all_sources() -> Vec<(PathBuf, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    sources(&src, &src, &mut out);
    assert!(out.len() > 20, "found only {} source files", out.len());
    out
}

/// The lines of the files `is_checked` picks that mention one of `forbidden`.
fn offenders(is_checked: impl Fn(&Path) -> bool, forbidden: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for (path, text) in all_sources() {
        if !is_checked(&path) {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            if forbidden.iter().any(|f| line.contains(f)) {
                found.push(format!("src/{}:{}: {}", path.display(), n + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn only_commands_and_main_use_the_cli() {
    let found = offenders(
        |p| {
            !p.starts_with("commands") && p != Path::new("main.rs") && p != Path::new("layering.rs")
        },
        &["crate::cli", "crate::commands", "rst::cli", "rst::commands"],
    );
    assert!(
        found.is_empty(),
        "only src/commands/ and src/main.rs may use the CLI; move the logic into the library and take plain values:\n{}",
        found.join("\n")
    );
}

#[test]
fn only_commands_use_the_html_report() {
    let found = offenders(
        |p| !p.starts_with("commands") && !p.starts_with("html") && p != Path::new("layering.rs"),
        &["crate::html", "rst::html"],
    );
    assert!(
        found.is_empty(),
        "src/html/ (the report) reads the engine, the cache and provenance; only src/commands/ may call it:\n{}",
        found.join("\n")
    );
}

#[test]
fn data_does_not_use_stages() {
    let found = offenders(|p| p.starts_with("data"), &["crate::stages", "rst::stages"]);
    assert!(
        found.is_empty(),
        "src/data/ must not depend on src/stages/ (stages use data, not the other way):\n{}",
        found.join("\n")
    );
}

#[test]
fn samplers_are_pure() {
    let found = offenders(
        |p| p.starts_with("search"),
        &[
            "crate::stages",
            "crate::spec",
            "crate::exec",
            "crate::cache",
            "std::fs",
            "rst::",
        ],
    );
    assert!(
        found.is_empty(),
        "src/search/ (the samplers) is pure: no stages, spec, exec, cache or files (the driver, src/study.rs, uses it):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_engine_does_not_know_the_remote() {
    let found = offenders(
        |p| {
            ["cache", "exec", "spec", "stages", "data", "ml"]
                .iter()
                .any(|d| p.starts_with(d))
                || p == Path::new("status.rs")
        },
        &["crate::remote", "rst::remote", "object_store", "tokio"],
    );
    assert!(
        found.is_empty(),
        "the engine sees the remote as a cache::shared::SharedCache; only src/remote/ speaks S3 (and commands/ opens it):\n{}",
        found.join("\n")
    );
}

/// The checks see through a file that breaks the rule (the test of the test).
#[test]
fn offenders_name_file_and_line() {
    let found = offenders(|p| p == Path::new("layering.rs"), &["crate::cli"]);
    assert!(
        found.iter().any(|f| f.starts_with("src/layering.rs:")),
        "{found:?}"
    );
}
