//! `rst check FILE`: parse, validate and expand a pipeline without running anything.
use std::process::ExitCode;

use crate::cli::PipelineArgs;
use crate::error::Result;

pub fn run(args: &PipelineArgs) -> Result<ExitCode> {
    let p = super::load(args)?;
    println!(
        "{}: ok ({} stages, {} instances)",
        args.file.display(),
        p.stages.len(),
        p.instances.len()
    );
    Ok(ExitCode::SUCCESS)
}
