//! The `download` stage kind: fetches files from mirrors (local paths, `file://`, http(s)
//! with resume), verifies sha256 pins, unpacks archives, and writes either the files
//! themselves (`format: raw`) or a materialised dataset (`format: idx | image-folder`).
//!
//! ```yaml
//! kind: download
//! params:
//!   files:                        # one or more
//!     - name: train-images-idx3-ubyte.gz   # a plain file name (no `/`)
//!       sha256: "<64 hex>"                  # optional for local sources, required for http(s)
//!       mirrors: [/data/x.gz, file:///data/x.gz, https://example.org/x.gz]   # tried in order
//!   format: raw                   # raw | idx | image-folder
//!   idx: {train_images, train_labels, test_images, test_labels, classes?}   # format: idx
//!   image_folder: {root, train_list?, test_list?, on_corrupt?}               # format: image-folder
//!   idle_timeout_s: 30            # the longest wait for an HTTP server (connect, answer, each read)
//!   attempts: 3                   # per http(s) mirror, each resuming where the last stopped
//!   max_unpacked_bytes: 274877906944   # what an archive may unpack to (256 GiB)
//!   max_unpack_ratio: 200         # unpacked / archive size, past 1 MiB (0: no ratio limit)
//! ```
//!
//! Local sources are read in place and never modified; a directory source cannot be pinned.
//! Downloads go into `<ctx.downloads>/<sha256>.part` (unpinned: `url-<blake3(url)>.part`),
//! which a later run resumes with a `Range` request. An unpinned network download always
//! fails after downloading, printing the digest to pin (the file is kept under that digest,
//! so the next run does not fetch it again).
//!
//! Paths in `image_folder` (`root`, the lists) are looked up in the fetched files, in
//! declaration order: a plain file by its `name`; inside a directory source as
//! `<name>/<path>` or `<path>`; inside an unpacked archive as `<path>`.
//!
//! The files of this folder, in the order a run goes through them: `params` (types,
//! defaults, checks before anything runs), `mirrors` (one file entry from its mirrors),
//! `verify` (sha256 pins, the hash in a name, trust on first use), `unpack` (archives; a
//! directory source is copied by `data::copy`), then one writer per `format`: `raw`, `idx`, `image_folder` (with
//! `tree`, where its relative paths are looked up).
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};

use super::{
    parse_params, InputDecl, ParamError, Progress, StageCtx, StageError, StageKind, StageRunner,
};
use crate::data::archive;
use crate::data::fetch::{self, Mirror, Throttle};

mod idx;
mod image_folder;
mod mirrors;
mod params;
mod raw;
mod tree;
mod unpack;
mod verify;

pub use params::{
    validate, FileSpec, Format, IdxSpec, ImageFolderSpec, OnCorrupt, Params, ATTEMPTS,
    IDLE_TIMEOUT_S,
};
pub use verify::{name_hash, ACCEPT_NEW_CHECKSUMS_ENV};

use params::{param_to_stage, parse, Net};

/// The `download` stage kind (see the module docs).
pub struct Download;

/// The least time between two progress reports (the live view redraws no faster).
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

impl StageKind for Download {
    fn params_schema(&self) -> schemars::Schema {
        params_schema()
    }
    fn canonical_params(&self, params: &Value) -> Value {
        params::Params::canonical(params)
    }
    fn name(&self) -> &'static str {
        "download"
    }
    fn version(&self) -> u32 {
        1
    }
    fn check(&self, params: &Value) -> Result<(), ParamError> {
        parse(params).map(|_| ())
    }
    fn inputs(&self) -> Option<&'static [InputDecl]> {
        Some(&[])
    }
    /// For each unpinned file, its first mirror when that is local: its content goes into
    /// the cache key, since no digest in the params does.
    fn local_deps(&self, params: &Value) -> Vec<String> {
        let Ok(p) = parse_params::<Params>(params) else {
            return Vec::new();
        };
        // Per unpinned file, the mirror a run would read: the first local one that exists
        // (relative paths from the directory rst runs in), unless a network mirror comes
        // before it. A missing local copy is a fallback to the next mirror, not an error.
        p.files
            .iter()
            .filter(|f| f.sha256.is_none())
            .filter_map(|f| {
                for m in &f.mirrors {
                    match fetch::parse_mirror(m) {
                        Ok(Mirror::Local(path)) if Path::new(&path).exists() => return Some(path),
                        Ok(Mirror::Local(_)) => continue,
                        _ => return None,
                    }
                }
                None
            })
            .collect()
    }
}

impl StageRunner for Download {
    fn kind(&self) -> &'static dyn StageKind {
        &Download
    }
    fn run(&self, ctx: &StageCtx<'_>) -> Result<(), StageError> {
        let p = parse(ctx.params).map_err(param_to_stage)?;
        let runner = Runner {
            ctx,
            throttle: Throttle::new(PROGRESS_EVERY),
            agent: OnceLock::new(),
            limits: p.limits(),
            net: p.net(),
        };
        let fetched = p
            .files
            .iter()
            .enumerate()
            .map(|(i, f)| runner.fetch(i, f))
            .collect::<Result<Vec<_>, _>>()?;
        match p.format {
            Format::Raw => runner.write_raw(&fetched),
            Format::Idx => runner.write_idx(p.idx.as_ref().expect("validated"), &fetched),
            Format::ImageFolder => {
                runner.write_image_folder(p.image_folder.as_ref().expect("validated"), &fetched)
            }
        }
    }
}

/// A file entry after fetching.
struct Fetched {
    name: String,
    path: PathBuf,
    is_dir: bool,
    /// In the work area (may be moved into the artifact); false: user data read in place.
    owned: bool,
    /// The content digest (files only).
    sha256: Option<String>,
}

/// One run of the stage: what every phase needs (the context, the HTTP agent made on
/// first use, the unpack limits and the network patience from the params).
struct Runner<'c, 'a> {
    ctx: &'c StageCtx<'a>,
    throttle: Throttle,
    agent: OnceLock<ureq::Agent>,
    limits: archive::Limits,
    net: Net,
}

/// An I/O error in the work area or the artifact: the machine's, not the user's (exit 1).
fn internal_io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> StageError {
    move |e| StageError::internal(format!("{what}: {e}"))
}

/// Lines for a message: the first `max` items and how many more there are.
fn listing(items: &[String], max: usize) -> String {
    let mut s: String = items
        .iter()
        .take(max)
        .map(|i| format!("\n  - {i}"))
        .collect();
    if items.len() > max {
        s.push_str(&format!("\n  ... and {} more", items.len() - max));
    }
    s
}

impl Runner<'_, '_> {
    /// Reports progress, at most every [`PROGRESS_EVERY`].
    fn progress(&self, pos: u64, len: u64, message: impl FnOnce() -> String) {
        if self.throttle.ready() {
            (self.ctx.progress)(Progress {
                pos,
                len,
                message: message(),
            });
        }
    }

    /// The `files` record of `dataset.json`: each entry's name and digest.
    fn files_info(fetched: &[Fetched]) -> Value {
        Value::Array(
            fetched
                .iter()
                .map(|f| match &f.sha256 {
                    Some(sha) => json!({"name": f.name, "sha256": sha}),
                    None => json!({"name": f.name, "directory": true}),
                })
                .collect(),
        )
    }
}

/// The JSON schema of this kind's `params:` (what the validator deserialises), for the
/// parameter reference (`rst params`).
pub fn params_schema() -> schemars::Schema {
    schemars::schema_for!(params::Params)
}

#[cfg(test)]
mod tests;
