//! `rst worker JOB` (hidden): compute one stage, what `run` starts per stage and what a
//! cluster job runs.
use std::path::Path;
use std::process::ExitCode;

use crate::exec::{local, worker};

pub fn run(job: &Path) -> ExitCode {
    local::guard_worker_group();
    local::worker_exit_code(worker::run(job, &[]))
}
