//! `rst graph FILE`: the pipeline's DAG as DOT or Mermaid.
use std::process::ExitCode;

use crate::cli::{GraphFormat, PipelineArgs};
use crate::error::Result;

pub fn run(args: &PipelineArgs, targets: &[String], format: GraphFormat) -> Result<ExitCode> {
    let p = super::load(args)?.select(targets)?;
    print!(
        "{}",
        match format {
            GraphFormat::Dot => crate::graph::to_dot(&p),
            GraphFormat::Mermaid => crate::graph::to_mermaid(&p),
        }
    );
    Ok(ExitCode::SUCCESS)
}
