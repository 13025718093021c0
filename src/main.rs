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
        Cmd::Worker { job } => std::process::exit(rst::exec::worker::run(&job, &[])),
        Cmd::Run {
            p,
            jobs,
            force,
            keep_going,
            exec,
        } => commands::run(&p, jobs, force, keep_going, &exec),
        Cmd::Status { p, json } => commands::status(&p, json),
        Cmd::Graph { p, format } => commands::graph(&p, format),
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
    };
    if let Err(e) = result {
        let code = e.exit_code();
        if !matches!(
            e,
            rst::error::Error::StagesFailed { .. } | rst::error::Error::Interrupted
        ) {
            // `{:#}` prints the whole cause chain on one line.
            eprintln!("error: {:#}", anyhow::Error::new(e));
        }
        std::process::exit(code);
    }
}
