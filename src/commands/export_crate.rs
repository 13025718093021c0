//! `rst export-crate FILE DIR`: the last run as a Workflow Run RO-Crate (see
//! [`crate::provenance::crate_export`]).
use std::path::Path;
use std::process::ExitCode;

use crate::cli::PipelineArgs;
use crate::error::Result;
use crate::project::{cache_dir, open_store};
use crate::provenance::crate_export;

pub fn run(args: &PipelineArgs, dir: &Path) -> Result<ExitCode> {
    let store = open_store(&cache_dir(&args.cache_dir))?;
    let p = super::load_replayed(args, &store)?;
    let done = crate_export::export(&p, &store, &args.file, dir)?;
    println!(
        "{}: Workflow Run RO-Crate of {}{} ({} entities)",
        done.metadata.display(),
        p.name,
        done.run_id
            .map(|id| format!(", run {id}"))
            .unwrap_or_default(),
        done.entities
    );
    Ok(ExitCode::SUCCESS)
}
