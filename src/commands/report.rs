//! `rst report FILE [-o PATH] [--run ID]`: the HTML report of a run (see [`crate::html`]).
use std::path::Path;
use std::process::ExitCode;

use crate::cli::PipelineArgs;
use crate::error::{Result, UserError};
use crate::project::{cache_dir, open_existing_store};

pub fn run(args: &PipelineArgs, output: Option<&Path>, run: Option<&str>) -> Result<ExitCode> {
    let store = open_existing_store(&cache_dir(&args.cache_dir))?;
    let p = super::load_replayed(args, &store)?;
    let (record, newer) = crate::html::choose_run(&p, &store, run)?;
    let mut notes: Vec<String> = newer.into_iter().collect();
    // The pipeline as that run had it (its `--set` overrides), so that the DAG's instance
    // counts are the run's.
    let p = if record.set == args.set {
        p
    } else {
        if !args.set.is_empty() {
            eprintln!(
                "warning: the report shows run {} with its own overrides ({}), not the --set given here",
                record.id,
                if record.set.is_empty() { "none".to_string() } else { record.set.join(" ") }
            );
        }
        match super::replayed(&args.file, &record.set, args.max_instances, &store) {
            Ok(p) => p,
            Err(e) => {
                notes.push(format!(
                    "run {} was made with --set {}, which {} no longer accepts ({}): the \
                     pipeline drawn here is the file as it is now",
                    record.id,
                    record.set.join(" --set "),
                    args.file.display(),
                    crate::error::chain(&e)
                ));
                p
            }
        }
    };
    let out = output.map_or_else(|| crate::html::default_path(&p), Path::to_path_buf);
    // Gathering never fails; what can is writing where the user asked.
    let bytes = crate::html::write(&p, &store, &record, &out, &notes).map_err(|e| {
        UserError::new(format!(
            "cannot write the report to {}: {}",
            out.display(),
            crate::error::chain(&e)
        ))
        .help("give -o a path in a folder you can write to")
    })?;
    println!(
        "{}: report of run {} ({})",
        out.display(),
        record.id,
        crate::human::human_bytes(bytes)
    );
    Ok(ExitCode::SUCCESS)
}
