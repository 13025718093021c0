//! Loading a pipeline and opening a store: what every subcommand does first, kept out of
//! the CLI so that provenance, audits and verification need not import `commands`.
use std::path::{Path, PathBuf};

use crate::cache::store::Store;
use crate::error::{Error, Result, UserError};
use crate::spec::{self, Pipeline};

pub fn cache_dir(explicit: &Option<PathBuf>) -> PathBuf {
    explicit.clone().unwrap_or_else(|| PathBuf::from("cache"))
}

/// The store of an existing cache directory (a typo in `--cache-dir` must not read as "no
/// runs yet"): exit 2 naming it when it does not exist.
pub fn open_existing_store(dir: &Path) -> Result<crate::cache::store::Store> {
    if !dir.is_dir() {
        return Err(crate::error::UserError::new(format!(
            "the cache directory {} does not exist",
            dir.display()
        ))
        .help("give the cache directory the runs used (--cache-dir or RST_CACHE_DIR; default ./cache)")
        .into());
    }
    open_store(dir)
}

/// Refuses a path that is not UTF-8: rst writes its paths into JSON (job files, entries,
/// run records), which holds only Unicode text.
pub fn utf8_path(what: &str, path: &Path) -> Result<()> {
    if path.to_str().is_some() {
        return Ok(());
    }
    Err(UserError::new(format!(
        "the {what} {} is not valid UTF-8 (rst records paths in JSON)",
        path.display()
    ))
    .help("rename it, or use a path made of UTF-8 characters")
    .into())
}

pub fn open_store(dir: &Path) -> Result<Store> {
    utf8_path("cache directory", dir)?;
    Store::open(dir).map_err(|e| {
        Error::User(
            UserError::new(format!(
                "cannot use the cache directory {}: {}",
                dir.display(),
                crate::error::chain(&e)
            ))
            .help("pass a writable directory with --cache-dir or RST_CACHE_DIR"),
        )
    })
}

/// Loads `file` with `--set` overrides, relative to the current directory (the project).
pub fn load(file: &Path, set: &[String]) -> Result<Pipeline> {
    load_with(file, set, &spec::Options::default())
}

/// [`load`] with explicit build options (`--max-instances`).
pub fn load_with(file: &Path, set: &[String], opts: &spec::Options) -> Result<Pipeline> {
    let overrides = set
        .iter()
        .map(|s| spec::parse_override(s))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let project = std::env::current_dir().map_err(|e| Error::io("current directory", e))?;
    utf8_path("pipeline file", file)?;
    utf8_path("project directory (the current directory)", &project)?;
    Ok(spec::load_with(file, &overrides, &project, opts)?)
}

/// How many threads rst uses at once when `--jobs` is not given: one per core (the same
/// rule for `run` and `audit`, so an audit recomputes with the budget the run had).
pub fn thread_budget() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
