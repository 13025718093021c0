//! The subcommands: one file each, as the CLI glue between parsed flags ([`crate::cli`])
//! and the library. Each returns the process's exit code (0 success, 1 a stage failed or
//! an audit/verification found a difference, 2 a user error via [`crate::error::Error`]);
//! `main.rs` only parses, calls [`dispatch`] and maps errors to codes.
//!
//! Nothing outside this folder and `main.rs` imports `cli` or `commands`: the library
//! (provenance, audits, verification, the engine) takes plain values, so it can be called
//! from tests and other front ends without clap.
mod audit;
mod check;
mod diff;
mod export_crate;
mod gc;
mod graph;
mod lineage;
mod log;
mod params;
mod report;
mod run;
mod show;
mod status;
mod sync;
mod verify;
mod worker;

use std::process::ExitCode;

use crate::cli::{Cmd, PipelineArgs};
use crate::error::Result;
use crate::spec::Pipeline;

fn remote_flags(r: &crate::cli::RemoteArgs) -> crate::remote::Flags {
    crate::remote::Flags {
        remote: r.remote.clone(),
        read_only: r.remote_read_only,
        no_remote: r.no_remote,
    }
}

/// The remote that `flags`, `RST_REMOTE` or the project's `rst.toml` (the project is the
/// current directory) name, connected and checked; None when none is set.
fn open_remote(flags: &crate::remote::Flags) -> Result<Option<crate::remote::Remote>> {
    let project =
        std::env::current_dir().map_err(|e| crate::error::Error::io("current directory", e))?;
    Ok(crate::remote::open(flags, &project)?)
}

/// Runs the subcommand `cmd`.
pub fn dispatch(cmd: Cmd) -> Result<ExitCode> {
    let result = command(cmd);
    // The scratch dirs this process kept for its next stage (`Store::staging`).
    crate::cache::store::release_work_dirs();
    result
}

fn command(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Worker { job } => Ok(worker::run(&job)),
        Cmd::Run {
            p,
            targets,
            jobs,
            force,
            keep_going,
            accept_new_checksums,
            replace_results,
            remote,
            exec,
        } => run::run(
            &p,
            &run::RunFlags {
                targets: targets.targets,
                jobs,
                force,
                keep_going,
                accept_new_checksums,
                replace_results,
                remote: remote_flags(&remote),
            },
            &exec,
        ),
        Cmd::Status {
            p,
            targets,
            json,
            remote,
        } => status::run(&p, &targets.targets, json, &remote_flags(&remote)),
        Cmd::Push { files } => sync::push(&files.files, &files.set, &files.cache_dir, files.remote),
        Cmd::Pull { files } => sync::pull(&files.files, &files.set, &files.cache_dir, files.remote),
        Cmd::Graph { p, targets, format } => graph::run(&p, &targets.targets, format),
        Cmd::Check { p } => check::run(&p),
        Cmd::Verify { cache_dir } => verify::run(&cache_dir),
        Cmd::Gc {
            files,
            set,
            cache_dir,
            dry_run,
        } => gc::run(&files, &set, &cache_dir, dry_run),
        Cmd::Lineage {
            target,
            stage,
            set,
            cache_dir,
            json,
        } => lineage::run(&target, stage.as_deref(), &set, &cache_dir, json),
        Cmd::Log {
            run,
            cache_dir,
            json,
            limit,
        } => log::run(run.as_deref(), &cache_dir, json, limit),
        Cmd::Audit {
            p,
            stage,
            sample,
            seed,
            jobs,
            tolerance,
        } => audit::run(
            &p,
            crate::provenance::audit::AuditOptions {
                stage,
                sample,
                seed,
                jobs,
                tolerance,
            },
        ),
        Cmd::ExportCrate { p, dir } => export_crate::run(&p, &dir),
        Cmd::Show { p, target, json } => show::run(&p, &target, json),
        Cmd::Report { p, output, run } => report::run(&p, output.as_deref(), run.as_deref()),
        Cmd::Params { kind, all, json } => params::run(kind.as_deref(), all, json),
        Cmd::Diff {
            a,
            b,
            cache_dir,
            json,
        } => diff::run(a.as_deref(), b.as_deref(), &cache_dir, json),
    }
}

/// Loads the pipeline `args` name, with its `--set` overrides.
fn load(args: &PipelineArgs) -> Result<Pipeline> {
    load_studied(args, &crate::study::Known::default())
}

/// [`load`], with the trials its studies made as far as the cache at `store` has them
/// (`crate::study::replay`): what every command but `run` works on.
fn load_replayed(args: &PipelineArgs, store: &crate::cache::store::Store) -> Result<Pipeline> {
    replayed(&args.file, &args.set, args.max_instances, store)
}

/// [`load_replayed`] of a file with `--set` values.
fn replayed(
    file: &std::path::Path,
    set: &[String],
    max_instances: u64,
    store: &crate::cache::store::Store,
) -> Result<Pipeline> {
    let with = |known: &crate::study::Known| {
        let opts = crate::spec::Options {
            max_instances,
            proposals: known.proposals.clone(),
            best: known.best.clone(),
        };
        crate::project::load_with(file, set, &opts)
    };
    let first = with(&crate::study::Known::default())?;
    if !crate::study::has_studies(&first) {
        return Ok(first);
    }
    let known = crate::study::replay(&first, store, &mut |k| with(k))?;
    with(&known)
}

/// [`load`] with what is known of its studies: the trials proposed so far, the best values
/// of the finished ones (`crate::study`).
fn load_studied(args: &PipelineArgs, known: &crate::study::Known) -> Result<Pipeline> {
    let opts = crate::spec::Options {
        max_instances: args.max_instances,
        proposals: known.proposals.clone(),
        best: known.best.clone(),
    };
    crate::project::load_with(&args.file, &args.set, &opts)
}

/// Exit 0 when `ok`, else 1 (an audit or verification that found differences).
fn passed(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
