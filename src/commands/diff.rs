//! `rst diff [RUN_A [RUN_B]]`: what changed between two recorded runs (see
//! [`crate::provenance::diff`]). With no run: the last two runs of the pipeline of the
//! newest run; with one: that run against the run of the same pipeline before it.
use std::path::PathBuf;
use std::process::ExitCode;

use crate::error::{Result, UserError};
use crate::project::{cache_dir, open_existing_store};
use crate::provenance::runlog::{self, RunRecord};

pub fn run(
    a: Option<&str>,
    b: Option<&str>,
    cache: &Option<PathBuf>,
    json: bool,
) -> Result<ExitCode> {
    let dir = cache_dir(cache);
    let store = open_existing_store(&dir)?;
    let runs = runlog::all(&store);
    let (older, newer) = pick(&runs, a, b, &dir)?;
    let d = crate::provenance::diff::diff(&store, older, newer);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&d.json()).expect("a diff serialises")
        );
    } else {
        print!("{}", d.text());
    }
    Ok(ExitCode::SUCCESS)
}

/// The two runs to compare, (A, B); runs are newest first.
fn pick<'a>(
    runs: &'a [RunRecord],
    a: Option<&str>,
    b: Option<&str>,
    dir: &std::path::Path,
) -> Result<(&'a RunRecord, &'a RunRecord)> {
    let before = |r: &RunRecord| {
        runs.iter()
            .find(|o| o.pipeline == r.pipeline && o.started_unix < r.started_unix && o.id != r.id)
    };
    let none_before = |r: &RunRecord| {
        UserError::new(format!(
            "run {} is the first recorded run of `{}`: nothing to compare it with",
            r.id, r.pipeline
        ))
        .help("give two run ids (`rst log` lists them)")
    };
    match (a, b) {
        (Some(a), Some(b)) => Ok((runlog::find(runs, a, dir)?, runlog::find(runs, b, dir)?)),
        (Some(a), None) => {
            let r = runlog::find(runs, a, dir)?;
            Ok((before(r).ok_or_else(|| none_before(r))?, r))
        }
        _ => {
            let Some(newest) = runs.first() else {
                return Err(
                    UserError::new(format!("no runs recorded in {}", dir.display()))
                        .help("`rst run FILE` records a run; `rst diff` compares two")
                        .into(),
                );
            };
            Ok((before(newest).ok_or_else(|| none_before(newest))?, newest))
        }
    }
}
