//! rst's integration tests, as one test binary (as ripgrep does): every file in `tests/`
//! is a module here, so `common` is compiled once and the suite is linked once rather
//! than once per file. Each test runs the real `rst` (and `rst-torch`) binaries that
//! cargo builds for it (`CARGO_BIN_EXE_*`) in a temporary project.
//!
//! The modules that train (and so need libtorch and the `rst-torch` worker) are compiled
//! only with the `torch` feature (the default); `cargo test --no-default-features` runs
//! the rest, on a machine with no libtorch. Run one module with a filter:
//! `cargo test --test integration engine::`.

mod common;

mod audit;
mod bounds;
#[cfg(feature = "torch")]
mod correlated;
#[cfg(feature = "torch")]
mod datasets;
mod diff;
mod download;
mod engine;
mod errors;
mod gpus;
mod hints;
mod include;
#[cfg(feature = "torch")]
mod indoor;
mod integrity;
mod keys;
mod layer;
mod libtorch;
#[cfg(feature = "torch")]
mod numerics;
mod params;
mod perf_exec;
mod planner;
#[cfg(feature = "torch")]
mod prune;
mod publish;
mod remote;
mod report;
mod search;
mod show;
mod slurm;
#[cfg(feature = "torch")]
mod train;
#[cfg(not(feature = "torch"))]
mod without_torch;
