//! `rst verify`: re-hashes every artifact in the cache; a corrupt one (its content no
//! longer matches its digest) is moved to `quarantine/`, and so is every entry computed
//! from it (the entry records which objects its stage read), so the next run recomputes
//! the artifact and everything that read it. Unreadable entry files are quarantined too.
//! Safe to run while another `rst verify` (or `rst run`) works on the same cache: what the
//! other process moved first is not an error.
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::cache::store::{Entry, Store};
use crate::error::{Result, UserError};
use crate::exec::integrity::{check_dir, short, view_base, ObjectState};
use crate::project::open_store;

/// The objects `entry`'s stage read. Entries older than the record of it (`run.reads`)
/// stand for it with their inputs' digests and the base each dataset view among them
/// names.
pub fn objects_read(store: &Store, entry: &Entry) -> BTreeSet<String> {
    if !entry.run.reads.is_empty() {
        return entry.run.reads.iter().cloned().collect();
    }
    let mut out = BTreeSet::new();
    for r in entry.record.inputs.values().flatten() {
        if let Some(base) = view_base(&store.object_path(&r.digest)) {
            out.insert(base);
        }
        out.insert(r.digest.clone());
    }
    out
}

fn moved(to: Option<PathBuf>) -> String {
    match to {
        Some(to) => format!("moved to {}", to.display()),
        None => "already moved to quarantine/ by another process".to_string(),
    }
}

/// Returns whether the cache was intact (false: exit 1).
pub fn verify(dir: &Path) -> Result<bool> {
    if !dir.is_dir() {
        return Err(UserError::new(format!("no cache at {}", dir.display()))
            .help("pass --cache-dir or set RST_CACHE_DIR")
            .into());
    }
    let store = open_store(dir)?;
    let objects = store.all_objects();
    // Objects in parallel (many small artifacts); each big file is hashed in parallel too.
    let states: Vec<ObjectState> = objects
        .par_iter()
        .map(|(digest, path)| check_dir(path, digest))
        .collect();
    let mut bad = 0usize;
    let mut corrupt = HashSet::new();
    let mut failed_moves = 0usize;
    let mut quarantine = |path: &Path, what: &str| match store.move_to_quarantine(path) {
        Ok(to) => println!("{what}; {}", moved(to)),
        Err(e) => {
            failed_moves += 1;
            println!(
                "{what}; cannot move it to quarantine/: {}",
                crate::error::chain(&e)
            );
        }
    };
    for ((digest, path), state) in objects.iter().zip(states) {
        // Missing: moved meanwhile (another `rst verify`); that process reports it.
        if let ObjectState::Corrupt { why } = state {
            bad += 1;
            corrupt.insert(digest.clone());
            quarantine(path, &format!("corrupt  {digest}: {why}"));
        }
    }
    let (entries, bad_entries) = store.all_entries();
    for path in &bad_entries {
        bad += 1;
        quarantine(
            path,
            &format!("corrupt  entry {}: unreadable", path.display()),
        );
    }
    let mut invalidated = 0usize;
    if !corrupt.is_empty() {
        for (path, e) in &entries {
            let reads = objects_read(&store, e);
            let Some(from) = reads.iter().find(|d| corrupt.contains(*d)) else {
                continue;
            };
            invalidated += 1;
            quarantine(
                path,
                &format!(
                    "invalid  entry {} of {} ({}): computed from the corrupt artifact {}",
                    short(&e.key),
                    e.instance,
                    e.pipeline,
                    short(from)
                ),
            );
        }
    }
    println!(
        "verified {} artifacts: {} corrupt, {invalidated} entries computed from them invalidated{}",
        objects.len(),
        bad,
        if bad > 0 {
            " (their stages are recomputed on the next run)"
        } else {
            ""
        }
    );
    Ok(bad == 0 && failed_moves == 0)
}
