//! `rst verify`: re-hash the cache (see [`crate::verify`]); exit 1 when something was
//! corrupt.
use std::path::PathBuf;
use std::process::ExitCode;

use crate::error::Result;
use crate::project::cache_dir;

pub fn run(cache: &Option<PathBuf>) -> Result<ExitCode> {
    Ok(super::passed(crate::verify::verify(&cache_dir(cache))?))
}
