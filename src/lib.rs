//! rst: declarative, content-cached experiment pipelines.
//!
//! YAML file → `spec` (parse, validate, expand matrices) → `graph` (petgraph DAG) →
//! `cache` (blake3 keys, content-addressed artifacts) → `exec` (scheduler, worker
//! processes) → results. This library never links libtorch (loading it costs ~0.4 s per
//! process start); `src/ml/` is compiled into the `rst-torch` binary, the worker for torch stages.

/// `eprintln!` that never panics: in a worker, stderr is the stage's log file in the cache,
/// and a full disk must not turn a log line into a crash (`eprintln!` panics when the write
/// fails, and the user would only see "exit status: 101"). A lost log line is the lesser harm.
#[macro_export]
macro_rules! elog {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        // Formatted first: stderr is unbuffered, and one line in one write(2) (not one
        // per piece) is a third of a no-op run's syscalls with a line per stage.
        let mut line = format!($($arg)*);
        line.push('\n');
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }};
}

pub mod cache;
pub mod cli;
pub mod commands;
pub mod data;
pub mod error;
pub mod exec;
pub mod graph;
pub mod hint;
pub mod html;
pub mod human;
#[cfg(test)]
mod layering;
pub mod machine;
pub mod names;
pub mod numerics;
pub mod prng;
pub mod project;
pub mod provenance;
pub mod publish;
pub mod remote;
pub mod report;
pub mod search;
pub mod shell;
pub mod spec;
pub mod stages;
pub mod status;
pub mod study;
pub mod time;
pub mod verify;
