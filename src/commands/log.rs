//! `rst log [RUN_ID]`: the recorded runs, newest first, or one in full (see
//! [`crate::provenance::runlog`]).
use std::path::PathBuf;
use std::process::ExitCode;

use crate::error::Result;
use crate::project::{cache_dir, open_existing_store};
use crate::provenance::runlog::{self, RunRecord};

pub fn run(
    id: Option<&str>,
    cache: &Option<PathBuf>,
    json: bool,
    limit: usize,
) -> Result<ExitCode> {
    let dir = cache_dir(cache);
    // A typo in --cache-dir must not look like "no runs yet"; no ./cache yet is no runs.
    let runs = if cache.is_some() || dir.is_dir() {
        runlog::all(&open_existing_store(&dir)?)
    } else {
        Vec::new()
    };
    if let Some(id) = id {
        let r = runlog::find(&runs, id, &dir)?;
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(r).expect("run records serialise")
            );
        } else {
            print!("{}", runlog::show(r));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let shown: Vec<&RunRecord> = runs.iter().take(limit).collect();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&shown).expect("run records serialise")
        );
    } else if shown.is_empty() {
        println!("no runs recorded in {}", dir.display());
    } else {
        for r in shown {
            println!("{}", runlog::list_line(r));
        }
    }
    Ok(ExitCode::SUCCESS)
}
