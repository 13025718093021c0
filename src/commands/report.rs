//! `rst report FILE [-o PATH] [--run ID]`: the HTML report of a run (see [`crate::html`]).
use std::path::Path;
use std::process::ExitCode;

use crate::cli::PipelineArgs;
use crate::error::Result;
use crate::project::{cache_dir, open_existing_store};

pub fn run(args: &PipelineArgs, output: Option<&Path>, run: Option<&str>) -> Result<ExitCode> {
    let store = open_existing_store(&cache_dir(&args.cache_dir))?;
    let p = super::load_replayed(args, &store)?;
    let record = crate::html::choose_run(&p, &store, run)?;
    // The pipeline as that run had it (its `--set` overrides), so that the DAG's instance
    // counts are the run's.
    let p = if record.set == args.set {
        p
    } else {
        super::replayed(&args.file, &record.set, args.max_instances, &store)?
    };
    let out = output.map_or_else(|| crate::html::default_path(&p), Path::to_path_buf);
    let bytes = crate::html::write(&p, &store, &record, &out)?;
    println!(
        "{}: report of run {} ({})",
        out.display(),
        record.id,
        crate::human::human_bytes(bytes)
    );
    Ok(ExitCode::SUCCESS)
}
