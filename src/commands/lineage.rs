//! `rst lineage FILE STAGE` / `rst lineage RESULT`: everything an artifact or a published
//! result came from (see [`crate::provenance::lineage`]).
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::cache::store::{Entry, Store};
use crate::error::{Result, UserError};
use crate::project::{cache_dir, open_store};
use crate::provenance::lineage;

pub fn run(
    target: &Path,
    stage: Option<&str>,
    set: &[String],
    cache: &Option<PathBuf>,
    json: bool,
) -> Result<ExitCode> {
    let store = open_store(&cache_dir(cache))?;
    let (roots, notes) = roots(target, stage, set, &store)?;
    let trees = lineage::trees(&store, &roots);
    for n in &notes {
        eprintln!("{n}");
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "target": target,
                "stage": stage,
                "notes": notes,
                "lineage": trees,
            }))
            .expect("lineage serialises")
        );
        return Ok(ExitCode::SUCCESS);
    }
    let cwd = std::env::current_dir().unwrap_or_default();
    for t in &trees {
        print!("{}", lineage::render(t, &cwd));
    }
    print!("{}", lineage::render_sources(&trees));
    Ok(ExitCode::SUCCESS)
}

/// The entries asked about: a stage's instances (with a pipeline file), or those a
/// published result came from (with notes on files modified since).
fn roots(
    target: &Path,
    stage: Option<&str>,
    set: &[String],
    store: &Store,
) -> Result<(Vec<Entry>, Vec<String>)> {
    if let Some(stage) = stage {
        let p = super::replayed(target, set, crate::spec::DEFAULT_MAX_INSTANCES, store)?;
        return Ok((lineage::stage_roots(&p, store, stage)?, Vec::new()));
    }
    if matches!(
        target.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    ) && !target.starts_with("results")
    {
        return Err(UserError::new(format!(
            "{} looks like a pipeline file: name the stage too",
            target.display()
        ))
        .help(format!("rst lineage {} STAGE", target.display()))
        .into());
    }
    lineage::result_roots(target, store)
}
