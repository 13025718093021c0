use clap::Parser;
use rst::cli::{Cli, Cmd};
use rst::commands;

fn main() {
    // Die quietly on a closed pipe (`rst status x.yaml | head`), as command-line tools do,
    // instead of panicking in println!.
    // SAFETY: called first thing, before any thread exists; SIG_DFL is a valid handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Worker { job } => {
            rst::exec::local::guard_worker_group();
            rst::exec::local::exit_worker(rst::exec::worker::run(&job, &[]))
        }
        Cmd::Run {
            p,
            targets,
            jobs,
            force,
            keep_going,
            accept_new_checksums,
            exec,
        } => {
            if accept_new_checksums {
                // Read by `download` stages in the worker processes this run starts (set
                // before any thread exists); sbatch passes the environment on to Slurm jobs.
                std::env::set_var(rst::stages::download::ACCEPT_NEW_CHECKSUMS_ENV, "1");
            }
            commands::run(&p, &targets.targets, jobs, force, keep_going, &exec)
        }
        Cmd::Status { p, targets, json } => commands::status(&p, &targets.targets, json),
        Cmd::Graph { p, targets, format } => commands::graph(&p, &targets.targets, format),
        Cmd::Check { p } => commands::check(&p),
        Cmd::Verify { cache_dir } => commands::verify(&cache_dir).map(|ok| {
            if !ok {
                std::process::exit(1)
            }
        }),
        Cmd::Gc {
            files,
            set,
            cache_dir,
            dry_run,
        } => commands::gc(&files, &set, &cache_dir, dry_run),
        Cmd::Lineage {
            target,
            stage,
            set,
            cache_dir,
            json,
        } => rst::provenance::lineage::command(&target, stage.as_deref(), &set, &cache_dir, json),
        Cmd::Log {
            run,
            cache_dir,
            json,
            limit,
        } => rst::provenance::runlog::command(run.as_deref(), &cache_dir, json, limit),
        Cmd::Audit {
            p,
            stage,
            sample,
            seed,
            jobs,
            tolerance,
        } => rst::audit::command(
            &p,
            &rst::audit::AuditOptions {
                stage,
                sample,
                seed,
                jobs,
                tolerance,
            },
        )
        .map(|passed| {
            if !passed {
                std::process::exit(1)
            }
        }),
        Cmd::ExportCrate { p, dir } => rst::provenance::crate_export::command(&p, &dir),
    };
    if let Err(e) = result {
        let code = e.exit_code();
        if !matches!(
            e,
            rst::error::Error::StagesFailed { .. } | rst::error::Error::Interrupted
        ) {
            // `{:#}` prints the whole cause chain on one line.
            rst::elog!("error: {:#}", anyhow::Error::new(e));
        }
        std::process::exit(code);
    }
}
