//! The `rst` binary: parse the command line, run the subcommand, map its error to an exit
//! code (0 success, 1 a stage failed or an audit found a difference, 2 a user error, 130
//! interrupted). Everything else is in the library ([`rst::commands`]).
use std::process::ExitCode;

use clap::Parser;
use rst::cli::Cli;
use rst::error::Error;

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`rst status x.yaml | head`), as command-line tools do,
    // instead of panicking in println!.
    // SAFETY: called first thing, before any thread exists; SIG_DFL is a valid handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    match run() {
        Ok(code) => code,
        Err(e) => {
            report(&e);
            ExitCode::from(e.exit_code())
        }
    }
}

fn run() -> Result<ExitCode, Error> {
    rst::commands::dispatch(Cli::parse().command)
}

/// Prints `e` with its causes, each once; failed stages and interrupts have been reported
/// by the run's own summary.
fn report(e: &Error) {
    if !matches!(e, Error::StagesFailed { .. } | Error::Interrupted) {
        rst::elog!("error: {}", rst::error::chain(e));
    }
}
