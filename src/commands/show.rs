//! `rst show FILE TARGET [--json]`: what the cache holds for each instance a target names,
//! without digging in `cache/objects`: its key and state, how and when its artifact was
//! made, the record of its key, and the artifact's files with their sizes.
use std::path::Path;
use std::process::ExitCode;

use serde_json::{json, Value};

use crate::cache::store::{Entry, Store};
use crate::cli::PipelineArgs;
use crate::error::Result;
use crate::human::{human_bytes, short};
use crate::project::{cache_dir, open_existing_store};
use crate::status::{status_lines, StatusLine};

/// Files listed per artifact in the text output (the JSON lists up to [`MAX_JSON_FILES`]).
const MAX_SHOWN_FILES: usize = 50;
const MAX_JSON_FILES: usize = 10_000;

pub fn run(args: &PipelineArgs, target: &str, json: bool) -> Result<ExitCode> {
    let store = open_existing_store(&cache_dir(&args.cache_dir))?;
    let p = super::load_replayed(args, &store)?;
    let named: std::collections::HashSet<String> = p
        .target(target)?
        .into_iter()
        .map(|i| p.instances[i].name.clone())
        .collect();
    let p = p.select(&[target.to_string()])?;
    let lines: Vec<StatusLine> = status_lines(&p, &store)?
        .into_iter()
        .filter(|l| named.contains(&l.instance))
        .collect();
    if json {
        let shown: Vec<Value> = lines.iter().map(|l| to_json(&store, l)).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&shown).expect("serialises")
        );
    } else {
        for l in &lines {
            print!("{}", render(&store, l));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Every file of an artifact, relative, with its size (what `cache::digest` hashes).
fn files(dir: &Path) -> Vec<(String, u64)> {
    crate::cache::digest::walk(dir)
        .map(|all| all.into_iter().map(|f| (f.rel, f.meta.len())).collect())
        .unwrap_or_default()
}

fn entry_of(store: &Store, l: &StatusLine) -> Option<Entry> {
    (l.state == "cached")
        .then(|| store.entry(l.key.as_deref()?))
        .flatten()
}

fn render(store: &Store, l: &StatusLine) -> String {
    let mut out = format!("{}  {}", l.instance, l.state);
    if !l.reasons.is_empty() {
        out.push_str(&format!(" ({})", l.reasons.join("; ")));
    }
    out.push('\n');
    let row = |out: &mut String, k: &str, v: String| out.push_str(&format!("  {k:<10}{v}\n"));
    row(&mut out, "stage", format!("{} ({})", l.stage, l.kind));
    if let Some(key) = &l.key {
        row(&mut out, "key", key.clone());
    }
    let Some(e) = entry_of(store, l) else {
        return out + "\n";
    };
    let dir = store.object_path(&e.artifact);
    row(
        &mut out,
        "artifact",
        format!(
            "{} ({} files, {}) {}",
            e.artifact,
            e.files,
            human_bytes(e.size_bytes),
            dir.display()
        ),
    );
    row(
        &mut out,
        "computed",
        crate::provenance::describe_run(&e.run),
    );
    let k = &e.record;
    row(
        &mut out,
        "kind",
        format!(
            "{} v{} (cache format {})",
            k.kind, k.kind_version, k.cache_version
        ),
    );
    row(&mut out, "params", k.params.to_string());
    for (name, ins) in &k.inputs {
        let list: Vec<String> = ins
            .iter()
            .map(|i| format!("{} {}", i.instance, short(&i.digest)))
            .collect();
        row(&mut out, "input", format!("{name}: {}", list.join(", ")));
    }
    for (path, digest) in &k.local_deps {
        row(&mut out, "file", format!("{path} {}", short(digest)));
    }
    for (var, value) in &k.env {
        row(&mut out, "env", format!("{var}={value}"));
    }
    if !e.run.log.is_empty() {
        row(
            &mut out,
            "log",
            store.root().join(&e.run.log).display().to_string(),
        );
    }
    let all = files(&dir);
    out.push_str("  files\n");
    for (path, size) in all.iter().take(MAX_SHOWN_FILES) {
        out.push_str(&format!("    {:>10}  {path}\n", human_bytes(*size)));
    }
    if all.len() > MAX_SHOWN_FILES {
        out.push_str(&format!(
            "    … and {} more (--json lists them)\n",
            all.len() - MAX_SHOWN_FILES
        ));
    }
    out + "\n"
}

fn to_json(store: &Store, l: &StatusLine) -> Value {
    let mut v = json!({
        "instance": l.instance,
        "stage": l.stage,
        "kind": l.kind,
        "state": l.state,
        "reasons": l.reasons,
        "key": l.key,
    });
    if let Some(e) = entry_of(store, l) {
        let dir = store.object_path(&e.artifact);
        let all = files(&dir);
        v["object"] = json!(dir);
        v["files"] = all
            .iter()
            .take(MAX_JSON_FILES)
            .map(|(path, size)| json!({"path": path, "bytes": size}))
            .collect();
        v["files_left_out"] = json!(all.len().saturating_sub(MAX_JSON_FILES));
        v["entry"] = serde_json::to_value(&e).expect("entries serialise");
    }
    v
}
