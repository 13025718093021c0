//! `rst gc FILE...`: remove cache entries and artifacts that none of the listed pipelines
//! uses now, and what killed runs left behind.
use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::cache::store::{self, remove_tree, Store};
use crate::error::Result;
use crate::exec::integrity::view_base;
use crate::human::human_bytes;
use crate::project::{cache_dir, open_store};
use crate::status::status_lines;

pub fn run(
    files: &[PathBuf],
    set: &[String],
    cache: &Option<PathBuf>,
    dry_run: bool,
) -> Result<ExitCode> {
    let store = open_store(&cache_dir(cache))?;
    let keep_keys = keys_in_use(files, set, &store)?;
    let (removed_entries, keep_objects) = sweep_entries(&store, &keep_keys, dry_run);
    let (removed_objects, mut freed) = sweep_objects(&store, &keep_objects, dry_run);
    // Leftovers of killed runs: staging dirs, job files, logs, temp files (see
    // cache::leftovers for what is safe to remove while other runs go on).
    let swept = crate::cache::leftovers::sweep(store.root(), dry_run);
    freed += swept.bytes;
    println!(
        "{}removed {removed_entries} entries and {removed_objects} artifacts{}, {} freed",
        if dry_run { "would have " } else { "" },
        match swept.items {
            0 => String::new(),
            n => format!(" (and {n} leftovers of killed runs)"),
        },
        human_bytes(freed)
    );
    Ok(ExitCode::SUCCESS)
}

/// The keys of every instance of `files` that is cached now.
fn keys_in_use(files: &[PathBuf], set: &[String], store: &Store) -> Result<HashSet<String>> {
    let mut keep = HashSet::new();
    for f in files {
        let p = super::replayed(f, set, crate::spec::DEFAULT_MAX_INSTANCES, store)?;
        for l in status_lines(&p, store)? {
            if l.state == "cached" {
                keep.extend(l.key);
            }
        }
    }
    Ok(keep)
}

/// Removes the entries whose key is not kept (and unreadable ones); returns how many were
/// removed and the objects the kept entries need.
fn sweep_entries(
    store: &Store,
    keep_keys: &HashSet<String>,
    dry_run: bool,
) -> (usize, HashSet<String>) {
    let (entries, bad) = store.all_entries();
    let mut keep_objects = HashSet::new();
    let mut removed = 0;
    for (path, e) in &entries {
        if keep_keys.contains(&e.key) {
            keep_objects.insert(e.artifact.clone());
            // Dataset views name their base artifact: keep it too.
            keep_objects.extend(view_base(&store.object_path(&e.artifact)));
        } else {
            removed += 1;
            if !dry_run {
                let _ = std::fs::remove_file(path);
                let _ = std::fs::remove_file(store.log_path(&e.key));
            }
        }
    }
    for path in bad {
        if !dry_run {
            let _ = std::fs::remove_file(path);
        }
    }
    (removed, keep_objects)
}

/// Removes the objects not kept; returns how many and their size in bytes.
fn sweep_objects(store: &Store, keep: &HashSet<String>, dry_run: bool) -> (usize, u64) {
    let mut removed = 0;
    let mut freed = 0u64;
    for (digest, path) in store.all_objects() {
        if !keep.contains(&digest) {
            freed += store::dir_size(&path).0;
            removed += 1;
            if !dry_run {
                let _ = remove_tree(&path);
            }
        }
    }
    (removed, freed)
}
