//! The HTML report of a run (`results/<pipeline>/report.html`, `rst report FILE`): one
//! self-contained file, readable on a laptop and printable, that shows what a run made and
//! how: the published tables with their statistics, the plots, every run's validation
//! curve, a timeline bar per stage instance, the DAG, the parameters and `--set`
//! overrides, provenance (downloads with sha256, versions, devices, hosts), the latest
//! audit and the search studies.
//!
//! In phases: [`gather`] reads what the cache and `results/` hold for one run record into
//! a [`gather::Report`] (no HTML), [`page`] renders it (with [`timeline`], [`dag`] and
//! [`curves`] drawing the SVGs), [`write`] puts the file in place atomically.
//!
//! Nothing is fetched when the page is opened: styles are inline, figures are `data:` URIs,
//! and the one script only checks that every image decoded (it marks `<body>` with
//! `data-images-loaded` / `data-images-failed`, which the browser test reads).
pub mod curves;
pub mod dag;
pub mod gather;
pub mod page;
pub mod timeline;

use std::path::{Path, PathBuf};

use crate::cache::store::Store;
use crate::error::{Error, Result, UserError};
use crate::provenance::runlog::{self, RunRecord};
use crate::spec::Pipeline;

/// The report's file name in `results/<pipeline>/`.
pub const REPORT_FILE: &str = "report.html";

/// Renders the report of `run` (a run of `p`) into `out`, atomically, with `notes` at the
/// top; returns its size.
pub fn write(
    p: &Pipeline,
    store: &Store,
    run: &RunRecord,
    out: &Path,
    notes: &[String],
) -> Result<u64> {
    let report = gather::gather(p, store, run, notes);
    let html = page::render(&report);
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io_path("cannot create", dir, e))?;
    }
    crate::cache::store::write_atomic(out, html.as_bytes())?;
    Ok(html.len() as u64)
}

/// The run a report of `p` describes (the one whose id starts with `id`, else the newest
/// successful run of `p`), and a note for its page when a newer successful run exists:
/// its tables and timeline are its own, but results/ (the published files, the audit) is
/// the newer one's.
pub fn choose_run(
    p: &Pipeline,
    store: &Store,
    id: Option<&str>,
) -> Result<(RunRecord, Option<String>)> {
    let runs: Vec<RunRecord> = runlog::all(store)
        .into_iter()
        .filter(|r| r.is_of(p))
        .collect();
    let newest = runs.iter().find(|r| r.status == "ok");
    let chosen = match id {
        Some(id) => runlog::find(&runs, id, store.root())?,
        None => newest.ok_or_else(|| {
            Error::User(
                UserError::new(format!(
                    "no successful run of `{}` is recorded in {}",
                    p.name,
                    store.root().display()
                ))
                .help(format!(
                    "run `rst run {}` first (`rst log` lists the runs; `--run ID` picks a failed one)",
                    p.file.display()
                )),
            )
        })?,
    };
    let note = newest
        .filter(|n| n.id != chosen.id && n.started_unix > chosen.started_unix)
        .map(|n| {
            format!(
                "this is not the newest successful run ({} is): the published files and the \
                 audit below are those in {} now",
                n.id,
                p.results_dir().display()
            )
        });
    Ok((chosen.clone(), note))
}

/// Where `rst run` writes the report of `p`.
pub fn default_path(p: &Pipeline) -> PathBuf {
    p.results_dir().join(REPORT_FILE)
}
