//! `rst audit FILE`: recompute cached stages and compare (see
//! [`crate::provenance::audit`]); exit 1 when one differs.
use std::process::ExitCode;

use crate::cli::PipelineArgs;
use crate::error::Result;
use crate::project::{cache_dir, open_store};
use crate::provenance::audit::{self, AuditOptions};

pub fn run(args: &PipelineArgs, opts: AuditOptions) -> Result<ExitCode> {
    // Flags first: a bad --jobs is reported before the pipeline is even read.
    opts.validate()?;
    let store = open_store(&cache_dir(&args.cache_dir))?;
    let p = super::load_replayed(args, &store)?;
    let report = audit::audit(&p, &store, &args.file, &opts)?;
    let dir = p.results_dir();
    let md = report.write(&dir)?;
    print!("{md}");
    let shown = dir.strip_prefix(&p.project_dir).unwrap_or(&dir);
    eprintln!(
        "audit report: {}/audit.md, {}/audit.json",
        shown.display(),
        shown.display()
    );
    Ok(super::passed(report.passed))
}
