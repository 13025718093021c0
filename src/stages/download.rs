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
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    parse_params, InputDecl, ParamError, Progress, StageCtx, StageError, StageKind, StageRunner,
};
use crate::data::archive::{self, archive_kind, safe_relative, Unpacked};
use crate::data::dataset::{write_materialised, Images, MaterialSplit};
use crate::data::fetch::{self, HttpDownload, Mirror, Throttle};
use crate::data::layouts::{self, Layout};
use crate::data::{idx, imagefolder};

pub struct Download;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub files: Vec<FileSpec>,
    #[serde(default)]
    pub format: Format,
    #[serde(default)]
    pub idx: Option<IdxSpec>,
    #[serde(default)]
    pub image_folder: Option<ImageFolderSpec>,
    /// Seconds an HTTP attempt may wait for the server (connecting, the answer, each read of
    /// the body) before it counts as failed. Default [`IDLE_TIMEOUT_S`].
    #[serde(default)]
    pub idle_timeout_s: Option<f64>,
    /// Attempts per http(s) mirror (each resumes what the last one got). Default [`ATTEMPTS`].
    #[serde(default)]
    pub attempts: Option<u32>,
    /// The most bytes an archive may unpack to. Default 256 GiB.
    #[serde(default)]
    pub max_unpacked_bytes: Option<u64>,
    /// The most an archive may unpack to relative to its own size (0: no limit). Default 200.
    #[serde(default)]
    pub max_unpack_ratio: Option<f64>,
}

/// Default of `idle_timeout_s`.
pub const IDLE_TIMEOUT_S: f64 = 30.0;
/// Default of `attempts`.
pub const ATTEMPTS: u32 = 3;

impl Params {
    fn limits(&self) -> archive::Limits {
        let d = archive::Limits::default();
        archive::Limits {
            max_bytes: self.max_unpacked_bytes.unwrap_or(d.max_bytes),
            max_ratio: self.max_unpack_ratio.unwrap_or(d.max_ratio),
        }
    }

    fn net(&self) -> Net {
        Net {
            idle: Duration::from_secs_f64(self.idle_timeout_s.unwrap_or(IDLE_TIMEOUT_S)),
            attempts: self.attempts.unwrap_or(ATTEMPTS),
        }
    }
}

/// How patient HTTP downloads are.
#[derive(Debug, Clone, Copy)]
struct Net {
    idle: Duration,
    attempts: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    pub name: String,
    #[serde(default)]
    pub sha256: Option<String>,
    /// torch.hub's convention: a source file named `<stem>-<hex>.<ext>` must have a sha256
    /// starting with `<hex>` (checked per mirror, for names of that form).
    #[serde(default)]
    pub hash_in_name: bool,
    pub mirrors: Vec<String>,
}

/// The environment variable `rst run --accept-new-checksums` sets for its workers: an
/// unpinned file from the network is used (trust on first use) instead of refused.
pub const ACCEPT_NEW_CHECKSUMS_ENV: &str = "RST_ACCEPT_NEW_CHECKSUMS";

fn accept_new_checksums() -> bool {
    std::env::var_os(ACCEPT_NEW_CHECKSUMS_ENV).is_some_and(|v| v == "1")
}

/// The hex digits a file name carries in torch.hub's convention (`-<hex>.`, the first
/// such group of the name's last path component), if any.
pub fn name_hash(source: &str) -> Option<String> {
    let base = source
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(source)
        .split(['?', '#'])
        .next()
        .unwrap_or("");
    let bytes = base.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b != b'-' {
            continue;
        }
        let hex: String = base[i + 1..]
            .chars()
            .take_while(|c| matches!(c, '0'..='9' | 'a'..='f'))
            .collect();
        if !hex.is_empty() && base[i + 1 + hex.len()..].starts_with('.') {
            return Some(hex);
        }
    }
    None
}

/// With `hash_in_name`, checks `sha` against the hash in the source's name.
fn check_name_hash(spec: &FileSpec, source: &str, sha: &str) -> Result<Option<String>, String> {
    match name_hash(source).filter(|_| spec.hash_in_name) {
        Some(h) if sha.starts_with(&h) => Ok(Some(h)),
        Some(h) => Err(format!(
            "its sha256 {sha} does not start with `{h}`, the hash in its file name (corrupt or \
             substituted file)"
        )),
        None => Ok(None),
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    #[default]
    Raw,
    Idx,
    ImageFolder,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdxSpec {
    pub train_images: String,
    pub train_labels: String,
    pub test_images: String,
    pub test_labels: String,
    #[serde(default)]
    pub classes: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnCorrupt {
    #[default]
    Skip,
    Error,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageFolderSpec {
    /// The folder of class folders, or with `layout` the dataset's root folder.
    #[serde(default = "dot")]
    pub root: String,
    /// An official dataset layout (its list and annotation files give splits and labels).
    #[serde(default)]
    pub layout: Option<Layout>,
    #[serde(default)]
    pub train_list: Option<String>,
    #[serde(default)]
    pub test_list: Option<String>,
    #[serde(default)]
    pub on_corrupt: OnCorrupt,
    /// Resize every image so its shorter side has this many pixels (aspect kept), once,
    /// at decoding (the ImageNet protocol's Resize(256)).
    #[serde(default)]
    pub resize: Option<usize>,
}

fn dot() -> String {
    ".".into()
}

impl FileSpec {
    fn expected(&self) -> Option<String> {
        self.sha256.as_ref().map(|s| s.to_ascii_lowercase())
    }
}

const RETRY_DELAY: Duration = if cfg!(test) {
    Duration::from_millis(10)
} else {
    Duration::from_millis(750)
};
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

fn valid_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
        return Err(format!(
            "`{name}` must be a plain file name (no `/`, not `.` or `..`)"
        ));
    }
    Ok(())
}

fn valid_relative(value: &str) -> Result<(), String> {
    match safe_relative(Path::new(value)) {
        Some(_) if !value.is_empty() => Ok(()),
        _ => Err(format!("`{value}` must be a relative path without `..`")),
    }
}

/// Semantic checks beyond the types, with key paths as serde_path_to_error writes them.
pub fn validate(p: &Params) -> Result<(), ParamError> {
    if p.files.is_empty() {
        return Err(ParamError::new("files", "at least one file is required"));
    }
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, f) in p.files.iter().enumerate() {
        valid_name(&f.name).map_err(|m| ParamError::new(format!("files[{i}].name"), m))?;
        if let Some(first) = names.insert(&f.name, i) {
            return Err(ParamError::new(
                format!("files[{i}].name"),
                format!("`{}` is also the name of files[{first}]", f.name),
            ));
        }
        if let Some(sha) = &f.sha256 {
            if !fetch::is_sha256_hex(sha) {
                return Err(ParamError::new(
                    format!("files[{i}].sha256"),
                    format!("`{sha}` is not a sha256 (64 hex digits)"),
                )
                .help("compute it with `sha256sum <file>`"));
            }
        }
        if f.mirrors.is_empty() {
            return Err(ParamError::new(
                format!("files[{i}].mirrors"),
                "at least one mirror is required",
            ));
        }
        for (j, m) in f.mirrors.iter().enumerate() {
            if let Err(e) = fetch::parse_mirror(m) {
                return Err(
                    ParamError::new(format!("files[{i}].mirrors[{j}]"), e.message).help(e.help),
                );
            }
        }
    }
    if let Some(t) = p.idle_timeout_s {
        if !(t > 0.0 && t <= 86400.0) {
            return Err(ParamError::new(
                "idle_timeout_s",
                format!("{t} is not a number of seconds between 0 and 86400"),
            )
            .help("e.g. idle_timeout_s: 30"));
        }
    }
    if p.attempts == Some(0) {
        return Err(ParamError::new("attempts", "must be at least 1").help("e.g. attempts: 3"));
    }
    if let Some(r) = p.max_unpack_ratio {
        if !(r >= 0.0 && r.is_finite()) {
            return Err(ParamError::new(
                "max_unpack_ratio",
                format!("{r} is not a ratio (a number >= 0; 0: no ratio limit)"),
            ));
        }
    }
    let declared = || p.files.iter().map(|f| f.name.as_str());
    match (p.format, &p.idx) {
        (Format::Idx, None) => return Err(ParamError::new(
            "idx",
            "`idx` is required when format is idx",
        )
        .help(
            "name the four IDX files: idx: {train_images, train_labels, test_images, test_labels}",
        )),
        (Format::Idx, Some(spec)) => {
            for (key, value) in [
                ("train_images", &spec.train_images),
                ("train_labels", &spec.train_labels),
                ("test_images", &spec.test_images),
                ("test_labels", &spec.test_labels),
            ] {
                let path = format!("idx.{key}");
                if !declared().any(|n| n == value) {
                    let mut err = ParamError::new(
                        path,
                        format!("`{value}` is not the name of any entry of `files`"),
                    );
                    err = match crate::error::did_you_mean(value, declared()) {
                        Some(s) => err.help(format!("did you mean `{s}`?")),
                        None => err.help(format!(
                            "declared files: {}",
                            declared().collect::<Vec<_>>().join(", ")
                        )),
                    };
                    return Err(err);
                }
                if archive_kind(value).is_some() {
                    return Err(ParamError::new(
                        path,
                        format!("`{value}` is an archive; IDX files are plain or .gz files"),
                    ));
                }
            }
            if let Some(classes) = &spec.classes {
                if classes.is_empty() {
                    return Err(ParamError::new(
                        "idx.classes",
                        "must name at least one class (or leave it out)",
                    ));
                }
                let mut seen = BTreeSet::new();
                for (j, c) in classes.iter().enumerate() {
                    if !seen.insert(c) {
                        return Err(ParamError::new(
                            format!("idx.classes[{j}]"),
                            format!("class `{c}` appears twice"),
                        ));
                    }
                }
            }
        }
        (_, Some(_)) => {
            return Err(
                ParamError::new("idx", "`idx` is only used with format: idx")
                    .help("set `format: idx`, or remove `idx`"),
            )
        }
        (_, None) => {}
    }
    match (p.format, &p.image_folder) {
        (Format::ImageFolder, None) => {
            return Err(ParamError::new(
                "image_folder",
                "`image_folder` is required when format is image-folder",
            )
            .help("give at least `image_folder: {root: <folder of class folders>}`"))
        }
        (Format::ImageFolder, Some(spec)) => {
            if spec.root != "." {
                valid_relative(&spec.root).map_err(|m| ParamError::new("image_folder.root", m))?;
            }
            for (key, list) in [
                ("train_list", &spec.train_list),
                ("test_list", &spec.test_list),
            ] {
                if let Some(list) = list {
                    valid_relative(list)
                        .map_err(|m| ParamError::new(format!("image_folder.{key}"), m))?;
                }
            }
            if spec.layout.is_some() && (spec.train_list.is_some() || spec.test_list.is_some()) {
                return Err(ParamError::new(
                    "image_folder.layout",
                    "a layout reads its own list files: drop train_list / test_list",
                ));
            }
            if spec.resize == Some(0) {
                return Err(ParamError::new(
                    "image_folder.resize",
                    "must be at least 1 (or left out to keep the original sizes)",
                ));
            }
            match (&spec.train_list, &spec.test_list) {
                (Some(_), None) => {
                    return Err(ParamError::new(
                        "image_folder.test_list",
                        "`train_list` is given, so `test_list` is required too",
                    ))
                }
                (None, Some(_)) => {
                    return Err(ParamError::new(
                        "image_folder.train_list",
                        "`test_list` is given, so `train_list` is required too",
                    ))
                }
                _ => {}
            }
        }
        (_, Some(_)) => {
            return Err(ParamError::new(
                "image_folder",
                "`image_folder` is only used with format: image-folder",
            )
            .help("set `format: image-folder`, or remove `image_folder`"))
        }
        (_, None) => {}
    }
    Ok(())
}

fn param_to_stage(e: ParamError) -> StageError {
    let at = if e.path.is_empty() {
        "params".to_string()
    } else {
        format!("params.{}", e.path)
    };
    let help = e.help.map(|h| format!(" (help: {h})")).unwrap_or_default();
    StageError::user(format!("{at}: {}{help}", e.message))
}

fn parse(params: &Value) -> Result<Params, ParamError> {
    let p: Params = parse_params(params)?;
    validate(&p)?;
    Ok(p)
}

impl StageKind for Download {
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

/// Why one mirror did not give the file: try the next one, or stop.
enum Fail {
    Mirror(String),
    Fatal(StageError),
}

struct Runner<'c, 'a> {
    ctx: &'c StageCtx<'a>,
    throttle: Throttle,
    agent: OnceLock<ureq::Agent>,
    limits: archive::Limits,
    net: Net,
}

fn mismatch(expected: &str, actual: &str) -> String {
    format!("sha256 mismatch: expected {expected}, got {actual}")
}

fn internal_io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> StageError {
    move |e| StageError::internal(format!("{what}: {e}"))
}

/// Copies a directory tree; symbolic links and special files are skipped and listed.
fn copy_tree(from: &Path, to: &Path, skipped: &mut Vec<PathBuf>) -> Result<(), StageError> {
    std::fs::create_dir_all(to).map_err(internal_io(format!("cannot create {}", to.display())))?;
    let listing = std::fs::read_dir(from)
        .map_err(|e| StageError::user(format!("cannot list {}: {e}", from.display())))?;
    let mut entries = listing
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StageError::user(format!("cannot list {}: {e}", from.display())))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let ft = entry
            .file_type()
            .map_err(|e| StageError::user(format!("cannot stat {}: {e}", src.display())))?;
        if ft.is_dir() {
            copy_tree(&src, &dst, skipped)?;
        } else if ft.is_file() {
            std::fs::copy(&src, &dst)
                .map_err(|e| StageError::user(format!("cannot copy {}: {e}", src.display())))?;
        } else {
            skipped.push(src);
        }
    }
    Ok(())
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

/// Where relative paths of `image_folder` are looked up (see the module docs).
enum Place {
    File { name: String, path: PathBuf },
    Dir { name: String, path: PathBuf },
    Archive { name: String, path: PathBuf },
}

struct Tree(Vec<Place>);

impl Tree {
    fn resolve(&self, rel: &str) -> Option<PathBuf> {
        let inside = |base: &Path, rel: &str| -> Option<PathBuf> {
            let p = if rel == "." {
                base.to_path_buf()
            } else {
                base.join(rel)
            };
            p.exists().then_some(p)
        };
        for place in &self.0 {
            let found = match place {
                Place::File { name, path } => (rel == name).then(|| path.clone()),
                Place::Dir { name, path } => {
                    let named = if rel == name {
                        Some(".")
                    } else {
                        rel.strip_prefix(name.as_str())
                            .and_then(|r| r.strip_prefix('/'))
                    };
                    named
                        .and_then(|r| inside(path, r))
                        .or_else(|| inside(path, rel))
                }
                Place::Archive { path, .. } => inside(path, rel),
            };
            if found.is_some() {
                return found;
            }
        }
        None
    }

    fn describe(&self) -> String {
        self.0
            .iter()
            .map(|p| match p {
                Place::File { name, .. } => format!("file {name}"),
                Place::Dir { name, path } => format!("directory {name} ({})", path.display()),
                Place::Archive { name, .. } => format!("unpacked archive {name}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Runner<'_, '_> {
    fn progress(&self, pos: u64, len: u64, message: impl FnOnce() -> String) {
        if self.throttle.ready() {
            (self.ctx.progress)(Progress {
                pos,
                len,
                message: message(),
            });
        }
    }

    fn fetch(&self, i: usize, spec: &FileSpec) -> Result<Fetched, StageError> {
        let label = format!("files[{i}] ({})", spec.name);
        let expected = spec.expected();
        let mut failures = Vec::new();
        for (j, m) in spec.mirrors.iter().enumerate() {
            let result = match fetch::parse_mirror(m) {
                Err(e) => Err(Fail::Mirror(e.message)),
                Ok(Mirror::Local(path)) => self.fetch_local(spec, expected.as_deref(), &path),
                Ok(Mirror::Http(url)) => {
                    self.fetch_http(i, &label, spec, expected.as_deref(), &url)
                }
            };
            match result {
                Ok(f) => {
                    let what = match &f.sha256 {
                        Some(sha) => format!("sha256 {sha}"),
                        None => "directory, read in place".into(),
                    };
                    self.ctx.log(&format!("{label}: from {m} ({what})"));
                    return Ok(f);
                }
                Err(Fail::Fatal(e)) => return Err(e),
                Err(Fail::Mirror(why)) => {
                    if j + 1 < spec.mirrors.len() {
                        self.ctx.log(&format!(
                            "{label}: mirror {m} failed: {why}; trying the next mirror"
                        ));
                    }
                    failures.push(format!("{m}: {why}"));
                }
            }
        }
        let n = failures.len();
        Err(StageError::user(format!(
            "{label}: no mirror worked ({n} tried, in order):{}",
            listing(&failures, usize::MAX)
        )))
    }

    fn fetch_local(
        &self,
        spec: &FileSpec,
        expected: Option<&str>,
        path: &str,
    ) -> Result<Fetched, Fail> {
        let path = self.ctx.local_path(path);
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Fail::Mirror(format!("not found ({})", path.display())))
            }
            Err(e) => return Err(Fail::Mirror(format!("cannot read {}: {e}", path.display()))),
        };
        if meta.is_dir() {
            if expected.is_some() {
                return Err(Fail::Mirror("is a directory, but sha256 pins a single file (drop sha256 for a directory source)".into()));
            }
            return Ok(Fetched {
                name: spec.name.clone(),
                path,
                is_dir: true,
                owned: false,
                sha256: None,
            });
        }
        if !meta.is_file() {
            return Err(Fail::Mirror(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        let len = meta.len();
        let actual = fetch::sha256_file(&path, &|pos| {
            self.progress(pos, len, || format!("{}: checking sha256", spec.name))
        })
        .map_err(|e| Fail::Mirror(format!("cannot read {}: {e}", path.display())))?;
        if let Some(expected) = expected {
            if actual != expected {
                return Err(Fail::Mirror(mismatch(expected, &actual)));
            }
        }
        check_name_hash(spec, &path.to_string_lossy(), &actual).map_err(Fail::Mirror)?;
        Ok(Fetched {
            name: spec.name.clone(),
            path,
            is_dir: false,
            owned: false,
            sha256: Some(actual),
        })
    }

    fn fetch_http(
        &self,
        i: usize,
        label: &str,
        spec: &FileSpec,
        expected: Option<&str>,
        url: &str,
    ) -> Result<Fetched, Fail> {
        let ctx = self.ctx;
        let part_name = match expected {
            Some(e) => format!("{e}.part"),
            None => format!("url-{}.part", blake3::hash(url.as_bytes()).to_hex()),
        };
        let partial = ctx.downloads.join(part_name);
        let agent = self.agent.get_or_init(|| fetch::http_agent(self.net.idle));
        let progress = |pos: u64, len: Option<u64>| {
            self.progress(pos, len.unwrap_or(0), || {
                format!("{}: {:.1} MiB", spec.name, pos as f64 / 1048576.0)
            });
        };
        let log = |line: &str| ctx.log(&format!("{label}: {line}"));
        for round in 0..2 {
            let had = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
            let got = fetch::http_download(&HttpDownload {
                agent,
                url,
                partial: &partial,
                expected,
                attempts: self.net.attempts,
                idle: self.net.idle,
                retry_delay: RETRY_DELAY,
                progress: &progress,
                log: &log,
            })
            .map_err(Fail::Mirror)?;
            (ctx.progress)(Progress {
                pos: got.bytes,
                len: got.bytes,
                message: format!("{}: downloaded", spec.name),
            });
            match expected {
                Some(e) if got.sha256 != e => {
                    let _ = std::fs::remove_file(&partial);
                    if had > 0 && round == 0 {
                        log(&format!("the {had} bytes kept from an earlier run did not verify ({}); downloading again from zero", mismatch(e, &got.sha256)));
                        continue;
                    }
                    return Err(Fail::Mirror(mismatch(e, &got.sha256)));
                }
                Some(_) => return self.take_download(spec, &partial, got.sha256),
                None => {
                    let sha = got.sha256;
                    let vouched = match check_name_hash(spec, url, &sha) {
                        Ok(v) => v,
                        Err(why) => {
                            let _ = std::fs::remove_file(&partial);
                            return Err(Fail::Mirror(why));
                        }
                    };
                    if let Some(h) = vouched {
                        log(&format!(
                            "sha256 {sha} starts with `{h}`, the hash in its file name \
                             (torch.hub's check); pin it with  sha256: \"{sha}\""
                        ));
                        return self.take_download(spec, &partial, sha);
                    }
                    if accept_new_checksums() {
                        log(&format!(
                            "warning: accepted a file nothing pinned (--accept-new-checksums): \
                             sha256 {sha}; pin it with  sha256: \"{sha}\"  in files[{i}]"
                        ));
                        return self.take_download(spec, &partial, sha);
                    }
                    // Keep it under the name a pinned download uses, so pinning costs no refetch.
                    let _ = std::fs::rename(&partial, ctx.downloads.join(format!("{sha}.part")));
                    return Err(Fail::Fatal(StageError::user(format!(
                        "{label}: downloaded {url} ({} bytes), but a file from the network is only used once pinned by its sha256.\n  its sha256 is {sha}\n  add  sha256: \"{sha}\"  to files[{i}] ({})  (the download is kept: the next run does not fetch it again),\n  or run with --accept-new-checksums to trust it this once",
                        got.bytes, spec.name
                    ))));
                }
            }
        }
        Err(Fail::Mirror("the download did not verify twice".into()))
    }

    /// Moves a verified download into the work area.
    fn take_download(
        &self,
        spec: &FileSpec,
        partial: &Path,
        sha256: String,
    ) -> Result<Fetched, Fail> {
        let dir = self.ctx.work.join("fetched");
        std::fs::create_dir_all(&dir)
            .map_err(|e| Fail::Fatal(internal_io(format!("cannot create {}", dir.display()))(e)))?;
        let dest = dir.join(&spec.name);
        fetch::move_file(partial, &dest).map_err(|e| {
            Fail::Fatal(internal_io(format!(
                "cannot move {} to {}",
                partial.display(),
                dest.display()
            ))(e))
        })?;
        Ok(Fetched {
            name: spec.name.clone(),
            path: dest,
            is_dir: false,
            owned: true,
            sha256: Some(sha256),
        })
    }

    fn report_unpack(&self, name: &str, report: &Unpacked) {
        if !report.skipped_links.is_empty() {
            self.ctx.log(&format!(
                "warning: archive {name}: {} symbolic link(s) not created:{}",
                report.skipped_links.len(),
                listing(&report.skipped_links, 20)
            ));
        }
        if !report.skipped_other.is_empty() {
            self.ctx.log(&format!(
                "warning: archive {name}: {} special file(s) (devices, fifos) not created:{}",
                report.skipped_other.len(),
                listing(&report.skipped_other, 20)
            ));
        }
    }

    fn unpack(
        &self,
        f: &Fetched,
        kind: archive::ArchiveKind,
        dest: &Path,
    ) -> Result<(), StageError> {
        std::fs::create_dir_all(dest)
            .map_err(internal_io(format!("cannot create {}", dest.display())))?;
        self.ctx.log(&format!("unpacking {}", f.name));
        let report = archive::unpack(&f.path, &f.name, kind, dest, self.limits)?;
        self.report_unpack(&f.name, &report);
        Ok(())
    }

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

    /// `files/<name>`: the file, the directory tree, or an archive's unpacked content.
    fn write_raw(&self, fetched: &[Fetched]) -> Result<(), StageError> {
        let files = self.ctx.out.join("files");
        std::fs::create_dir_all(&files)
            .map_err(internal_io(format!("cannot create {}", files.display())))?;
        for f in fetched {
            let dest = files.join(&f.name);
            if f.is_dir {
                let mut skipped = Vec::new();
                copy_tree(&f.path, &dest, &mut skipped)?;
                if !skipped.is_empty() {
                    let shown: Vec<String> =
                        skipped.iter().map(|p| p.display().to_string()).collect();
                    self.ctx.log(&format!(
                        "warning: {}: {} symbolic link(s) or special file(s) not copied:{}",
                        f.name,
                        shown.len(),
                        listing(&shown, 20)
                    ));
                }
            } else if let Some(kind) = archive_kind(&f.name) {
                self.unpack(f, kind, &dest)?;
            } else if f.owned {
                fetch::move_file(&f.path, &dest).map_err(internal_io(format!(
                    "cannot move {} to {}",
                    f.path.display(),
                    dest.display()
                )))?;
            } else {
                std::fs::copy(&f.path, &dest).map_err(|e| {
                    StageError::user(format!("cannot copy {}: {e}", f.path.display()))
                })?;
            }
        }
        Ok(())
    }

    fn write_idx(&self, spec: &IdxSpec, fetched: &[Fetched]) -> Result<(), StageError> {
        let read = |key: &str, name: &str, ndim: usize| -> Result<idx::IdxArray, StageError> {
            let f = fetched
                .iter()
                .find(|f| f.name == name)
                .ok_or_else(|| StageError::internal(format!("idx.{key}: {name} not fetched")))?;
            if f.is_dir {
                return Err(StageError::user(format!(
                    "idx.{key}: {name} is a directory, not an IDX file"
                )));
            }
            let arr = idx::read_idx(&f.path)
                .map_err(|e| StageError::user(format!("idx.{key} ({name}): {e}")))?;
            if arr.dims.len() != ndim {
                let want = if ndim == 3 {
                    "images [N, H, W] (magic 0x00000803)"
                } else {
                    "labels [N] (magic 0x00000801)"
                };
                return Err(StageError::user(format!(
                    "idx.{key} ({name}): expected IDX {want}, but it has {} dimensions (magic 0x000008{:02x})",
                    arr.dims.len(),
                    arr.dims.len()
                )));
            }
            Ok(arr)
        };
        let mut splits = BTreeMap::new();
        let mut max_label: Option<u8> = None;
        let sets = [
            (
                "train",
                ("train_images", &spec.train_images),
                ("train_labels", &spec.train_labels),
            ),
            (
                "test",
                ("test_images", &spec.test_images),
                ("test_labels", &spec.test_labels),
            ),
        ];
        for (n, (split, (ikey, iname), (lkey, lname))) in sets.into_iter().enumerate() {
            self.progress(n as u64, 2, || format!("reading {split} IDX files"));
            let images = read(ikey, iname, 3)?;
            let labels = read(lkey, lname, 1)?;
            let count = images.dims[0];
            if labels.dims[0] != count {
                return Err(StageError::user(format!(
                    "idx: the {split} split has {count} images ({iname}) but {} labels ({lname})",
                    labels.dims[0]
                )));
            }
            let shape = [images.dims[1], images.dims[2], 1];
            if count > 0 && (shape[0] == 0 || shape[1] == 0) {
                return Err(StageError::user(format!(
                    "idx.{ikey} ({iname}): images are {}x{} pixels",
                    shape[0], shape[1]
                )));
            }
            if let Some(classes) = &spec.classes {
                if let Some(pos) = labels
                    .data
                    .iter()
                    .position(|&l| l as usize >= classes.len())
                {
                    return Err(StageError::user(format!(
                        "idx.{lkey} ({lname}): label {} at row {pos} is out of range: `idx.classes` names {} classes",
                        labels.data[pos],
                        classes.len()
                    )));
                }
            }
            max_label = max_label.max(labels.data.iter().copied().max());
            let labels: Vec<i64> = labels.data.iter().map(|&l| l as i64).collect();
            splits.insert(
                split.to_string(),
                MaterialSplit {
                    images: Images::Fixed {
                        shape,
                        data: images.data,
                    },
                    labels,
                },
            );
        }
        let classes = match (&spec.classes, max_label) {
            (Some(c), _) => c.clone(),
            (None, Some(max)) => (0..=max as usize).map(|c| c.to_string()).collect(),
            (None, None) => return Err(StageError::user("idx: the IDX files hold no samples")),
        };
        let mut info = serde_json::Map::new();
        info.insert("source".into(), json!("download"));
        info.insert("format".into(), json!("idx"));
        info.insert("files".into(), Self::files_info(fetched));
        info.insert(
            "idx".into(),
            json!({
                "train_images": spec.train_images, "train_labels": spec.train_labels,
                "test_images": spec.test_images, "test_labels": spec.test_labels,
                "class_names": if spec.classes.is_some() { "from params" } else { "label values 0..K-1, K = max label + 1" },
            }),
        );
        write_materialised(self.ctx.out, classes, splits, info)
            .map_err(|e| StageError::internal(format!("cannot write the dataset: {e}")))
    }

    /// The splits of a folder of class folders: from `train_list`/`test_list`, or one
    /// split `all` of every image found.
    fn folder_splits(
        &self,
        spec: &ImageFolderSpec,
        tree: &Tree,
        root: &Path,
        classes: &[String],
        ignored: &mut usize,
    ) -> Result<Vec<(String, Vec<imagefolder::Entry>)>, StageError> {
        let ctx = self.ctx;
        let mut splits: Vec<(String, Vec<imagefolder::Entry>)> = Vec::new();
        match (&spec.train_list, &spec.test_list) {
            (Some(train), Some(test)) => {
                for (split, key, list) in
                    [("train", "train_list", train), ("test", "test_list", test)]
                {
                    let path = tree.resolve(list).filter(|p| p.is_file()).ok_or_else(|| {
                        StageError::user(format!(
                            "image_folder.{key}: no file `{list}` in the fetched files ({})",
                            tree.describe()
                        ))
                    })?;
                    splits.push((
                        split.to_string(),
                        imagefolder::read_list(&path, list, root, classes)?,
                    ));
                }
                let train: BTreeSet<&str> = splits[0].1.iter().map(|e| e.rel.as_str()).collect();
                let both: Vec<String> = splits[1]
                    .1
                    .iter()
                    .filter(|e| train.contains(e.rel.as_str()))
                    .map(|e| e.rel.clone())
                    .collect();
                if !both.is_empty() {
                    ctx.log(&format!(
                        "warning: {} image(s) are in both train_list and test_list:{}",
                        both.len(),
                        listing(&both, 10)
                    ));
                }
            }
            _ => {
                let (entries, report) = imagefolder::scan(root, classes)?;
                *ignored = report.ignored.len();
                if *ignored > 0 {
                    ctx.log(&format!(
                        "{} file(s) without a .jpg/.jpeg/.png extension under the class folders were ignored:{}",
                        *ignored,
                        listing(&report.ignored, 5)
                    ));
                }
                splits.push(("all".to_string(), entries));
            }
        }
        Ok(splits)
    }

    fn write_image_folder(
        &self,
        spec: &ImageFolderSpec,
        fetched: &[Fetched],
    ) -> Result<(), StageError> {
        let ctx = self.ctx;
        let mut places = Vec::new();
        for (i, f) in fetched.iter().enumerate() {
            let name = f.name.clone();
            if f.is_dir {
                places.push(Place::Dir {
                    name,
                    path: f.path.clone(),
                });
            } else if let Some(kind) = archive_kind(&f.name) {
                let dest = ctx.work.join("unpacked").join(i.to_string());
                self.unpack(f, kind, &dest)?;
                places.push(Place::Archive { name, path: dest });
            } else {
                places.push(Place::File {
                    name,
                    path: f.path.clone(),
                });
            }
        }
        let tree = Tree(places);
        let root = tree
            .resolve(&spec.root)
            .filter(|p| p.is_dir())
            .ok_or_else(|| {
                StageError::user(format!(
                    "image_folder.root: no directory `{}` in the fetched files ({})",
                    spec.root,
                    tree.describe()
                ))
            })?;
        let mut layout_info = Value::Null;
        let mut ignored = 0;
        let (classes, splits) = if let Some(layout) = spec.layout {
            // Names inside the root first, then the fetched files (list files downloaded
            // beside an archive, as MIT Indoor's are).
            let resolve = |rel: &str| -> Option<PathBuf> {
                let inside = if rel == "." {
                    root.clone()
                } else {
                    root.join(rel)
                };
                if inside.exists() {
                    Some(inside)
                } else {
                    tree.resolve(rel)
                }
            };
            let data = layouts::read(layout, &resolve)?;
            layout_info = data.info;
            (data.classes, data.splits)
        } else {
            let classes = imagefolder::class_names(&root)?;
            if classes.is_empty() {
                return Err(StageError::user(format!(
                    "image_folder.root: `{}` has no class folders",
                    spec.root
                )));
            }
            let splits = self.folder_splits(spec, &tree, &root, &classes, &mut ignored)?;
            (classes, splits)
        };
        for (split, entries) in &splits {
            if entries.is_empty() {
                return Err(StageError::user(format!(
                    "image_folder: split `{split}` has no images"
                )));
            }
        }

        let paths: Vec<&Path> = splits
            .iter()
            .flat_map(|(_, es)| es.iter().map(|e| e.path.as_path()))
            .collect();
        let total = paths.len() as u64;
        let decoded_count = AtomicU64::new(0);
        let done = || {
            let n = decoded_count.fetch_add(1, Ordering::Relaxed) + 1;
            self.progress(n, total, || format!("decoding images {n}/{total}"));
        };
        let decoded = imagefolder::decode_all(&paths, ctx.threads, spec.resize, &done)?;
        (ctx.progress)(Progress {
            pos: total,
            len: total,
            message: format!("decoded {total} images"),
        });
        drop(paths);

        let mut decoded = decoded.into_iter();
        let mut skipped: Vec<(String, String, String)> = Vec::new();
        let mut out = BTreeMap::new();
        let mut counts = serde_json::Map::new();
        for (split, entries) in &splits {
            let mut images = Vec::with_capacity(entries.len());
            let mut labels = Vec::with_capacity(entries.len());
            for (entry, result) in entries.iter().zip(&mut decoded) {
                match result {
                    Ok(img) => {
                        images.push(img);
                        labels.push(entry.label as i64);
                    }
                    Err(why) => skipped.push((split.clone(), entry.rel.clone(), why)),
                }
            }
            if images.is_empty() {
                return Err(StageError::user(format!(
                    "image_folder: none of the {} images of split `{split}` could be decoded",
                    entries.len()
                )));
            }
            counts.insert(split.clone(), json!(labels.len()));
            out.insert(
                split.clone(),
                MaterialSplit {
                    images: Images::from_list(images),
                    labels,
                },
            );
        }
        if !skipped.is_empty() {
            let lines: Vec<String> = skipped
                .iter()
                .map(|(s, f, why)| format!("{f} ({s}): {why}"))
                .collect();
            match spec.on_corrupt {
                OnCorrupt::Error => {
                    return Err(StageError::user(format!(
                        "image_folder: {} image(s) could not be decoded (on_corrupt: error):{}",
                        lines.len(),
                        listing(&lines, 20)
                    )))
                }
                OnCorrupt::Skip => ctx.log(&format!(
                    "warning: skipped {} image(s) that could not be decoded:{}",
                    lines.len(),
                    listing(&lines, 50)
                )),
            }
        }

        let mut info = serde_json::Map::new();
        info.insert("source".into(), json!("download"));
        info.insert("format".into(), json!("image-folder"));
        info.insert("files".into(), Self::files_info(fetched));
        info.insert(
            "image_folder".into(),
            json!({
                "root": spec.root,
                "layout": spec.layout.map(|l| l.name()),
                "layout_info": layout_info,
                "class_ids": if spec.layout.is_some() { "as the layout defines them (see layout_info)" } else { "class id = position of the class folder name in byte-wise sorted order" },
                "resize": spec.resize.map(|r| format!("shorter side {r} px, aspect kept (antialiased bilinear), at decoding")),
                "lists": match (&spec.train_list, &spec.test_list) {
                    (Some(tr), Some(te)) => json!({"train": tr, "test": te}),
                    _ => Value::Null,
                },
                "pixels": "RGB u8 [H, W, 3]; grey images repeated over 3 channels, alpha dropped",
                "counts": counts,
                "ignored_files": ignored,
                "skipped": skipped.iter().map(|(s, f, why)| json!({"split": s, "file": f, "error": why})).collect::<Vec<_>>(),
            }),
        );
        write_materialised(ctx.out, classes, out, info)
            .map_err(|e| StageError::internal(format!("cannot write the dataset: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::archive::tests::{tar_bytes, zip_bytes};
    use crate::data::dataset::{load_images, Dataset};
    use crate::data::idx::tests::{gzip, idx_bytes};
    use crate::stages::Inputs;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    fn sha(bytes: &[u8]) -> String {
        use sha2::Digest;
        fetch::hex(&sha2::Sha256::digest(bytes))
    }

    struct Env {
        dir: tempfile::TempDir,
    }

    impl Env {
        fn new() -> Env {
            let dir = tempfile::tempdir().unwrap();
            for d in ["project", "downloads"] {
                std::fs::create_dir(dir.path().join(d)).unwrap();
            }
            Env { dir }
        }
        fn project(&self) -> PathBuf {
            self.dir.path().join("project")
        }
        fn downloads(&self) -> PathBuf {
            self.dir.path().join("downloads")
        }
        fn write(&self, rel: &str, bytes: &[u8]) -> PathBuf {
            let p = self.project().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, bytes).unwrap();
            p
        }
        /// Checks and runs the stage; returns the artifact directory.
        fn run(&self, params: Value) -> Result<PathBuf, StageError> {
            Download.check(&params).map_err(param_to_stage)?;
            let out = tempfile::tempdir_in(self.dir.path()).unwrap().keep();
            let work = tempfile::tempdir_in(self.dir.path()).unwrap();
            let inputs = Inputs::new();
            let resolve = |_: &str| -> Option<PathBuf> { None };
            let progress = |_: Progress| {};
            let downloads = self.downloads();
            let project = self.project();
            let ctx = StageCtx {
                instance: "download",
                params: &params,
                inputs: &inputs,
                out: &out,
                work: work.path(),
                downloads: &downloads,
                project_dir: &project,
                threads: 2,
                resolve: &resolve,
                progress: &progress,
            };
            Download.run(&ctx).map(|()| out)
        }
    }

    // ---- params ----

    fn check_err(params: Value) -> ParamError {
        Download.check(&params).unwrap_err()
    }

    #[test]
    fn param_errors_name_the_key() {
        let e = check_err(json!({"files": [{"name": "a", "sha256": "abc", "mirrors": ["a"]}]}));
        assert_eq!(e.path, "files[0].sha256");
        let e = check_err(json!({"files": [{"name": "a", "mirrors": ["a", "ftp://x.org/a"]}]}));
        assert_eq!(e.path, "files[0].mirrors[1]");
        assert!(e.help.is_some());
        let e = check_err(json!({"files": []}));
        assert_eq!(e.path, "files");
        let e = check_err(json!({"files": [{"name": "a", "mirrors": []}]}));
        assert_eq!(e.path, "files[0].mirrors");
        let e = check_err(json!({"files": [{"name": "a/b", "mirrors": ["x"]}]}));
        assert_eq!(e.path, "files[0].name");
        let e = check_err(
            json!({"files": [{"name": "a", "mirrors": ["x"]}, {"name": "a", "mirrors": ["y"]}]}),
        );
        assert_eq!(e.path, "files[1].name");
        let e = check_err(json!({"files": [{"name": "a", "mirors": ["x"]}]}));
        assert_eq!(e.help.as_deref(), Some("did you mean `mirrors`?"));
        let e = check_err(json!({"files": [{"name": "a", "mirrors": ["x"]}], "format": "idx"}));
        assert_eq!(e.path, "idx");
        let e = check_err(
            json!({"files": [{"name": "a", "mirrors": ["x"]}], "idx": {"train_images": "a", "train_labels": "a", "test_images": "a", "test_labels": "a"}}),
        );
        assert_eq!(e.path, "idx");
        let files = json!([{"name": "train-images.gz", "mirrors": ["x"]}, {"name": "labels.gz", "mirrors": ["x"]}]);
        let e = check_err(
            json!({"files": files, "format": "idx", "idx": {"train_images": "train-imgs.gz", "train_labels": "labels.gz", "test_images": "labels.gz", "test_labels": "labels.gz"}}),
        );
        assert_eq!(e.path, "idx.train_images");
        assert_eq!(e.help.as_deref(), Some("did you mean `train-images.gz`?"));
        let e = check_err(
            json!({"files": [{"name": "a", "mirrors": ["x"]}], "format": "image-folder", "image_folder": {"root": "../x"}}),
        );
        assert_eq!(e.path, "image_folder.root");
        let e = check_err(
            json!({"files": [{"name": "a", "mirrors": ["x"]}], "format": "image-folder", "image_folder": {"root": "x", "train_list": "t"}}),
        );
        assert_eq!(e.path, "image_folder.test_list");
        let e = check_err(json!({"files": [{"name": "a", "mirrors": ["x"]}], "format": "images"}));
        assert_eq!(e.path, "format");
        Download
            .check(&json!({"files": [{"name": "a", "sha256": "A".repeat(64), "mirrors": ["x", "file:///x", "https://e.org/x"]}]}))
            .unwrap();
    }

    #[test]
    fn local_deps_are_first_local_mirrors_of_unpinned_files() {
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str| dir.path().join(name).display().to_string();
        for name in ["a", "b", "c", "d", "e2"] {
            std::fs::write(at(name), name).unwrap();
        }
        let p = json!({"files": [
            {"name": "a", "mirrors": [at("a"), "https://e.org/a"]},
            {"name": "b", "sha256": "0".repeat(64), "mirrors": [at("b")]},
            {"name": "c", "mirrors": ["https://e.org/c", at("c")]},
            {"name": "d", "mirrors": [format!("file://{}", at("d"))]},
            {"name": "e", "mirrors": [at("missing"), at("e2"), "https://e.org/e"]},
            {"name": "f", "mirrors": [at("missing"), "https://e.org/f", at("a")]},
        ]});
        assert_eq!(Download.local_deps(&p), vec![at("a"), at("d"), at("e2")]);
        assert_eq!(Download.inputs().map(|i| i.len()), Some(0));
    }

    // ---- local sources ----

    #[test]
    fn checksum_mismatch_names_file_source_and_digests() {
        let env = Env::new();
        env.write("data/a.bin", b"actual content");
        let wrong = sha(b"other content");
        let e = env
            .run(json!({"files": [{"name": "a.bin", "sha256": wrong, "mirrors": ["data/a.bin"]}]}))
            .unwrap_err();
        assert!(e.user);
        for needle in [
            "files[0] (a.bin)",
            "data/a.bin",
            &wrong,
            &sha(b"actual content"),
            "mismatch",
        ] {
            assert!(
                e.message.contains(needle),
                "missing {needle}: {}",
                e.message
            );
        }
    }

    #[test]
    fn mirrors_fall_back_in_order() {
        let env = Env::new();
        env.write("bad/a.bin", b"corrupted");
        let good = env.write("good/a.bin", b"the real thing");
        let pin = sha(b"the real thing");
        let out = env
            .run(json!({"files": [{"name": "a.bin", "sha256": pin, "mirrors": ["missing/a.bin", "bad/a.bin", format!("file://{}", good.display())]}]}))
            .unwrap();
        assert_eq!(
            std::fs::read(out.join("files/a.bin")).unwrap(),
            b"the real thing"
        );
        assert!(good.exists(), "user data is never moved");

        let e = env.run(json!({"files": [{"name": "a.bin", "sha256": pin, "mirrors": ["missing/a.bin", "bad/a.bin"]}]})).unwrap_err();
        assert!(
            e.message.contains("missing/a.bin: not found"),
            "{}",
            e.message
        );
        assert!(
            e.message.contains("bad/a.bin: sha256 mismatch"),
            "{}",
            e.message
        );
    }

    #[test]
    fn raw_unpacks_tar_gz_and_zip_and_copies_directories() {
        let env = Env::new();
        let files: &[(&str, &[u8])] = &[("d/a.txt", b"alpha"), ("b.txt", b"beta")];
        env.write("x.tar.gz", &gzip(&tar_bytes(files, &[])));
        env.write("y.zip", &zip_bytes(files));
        env.write("tree/sub/c.txt", b"gamma");
        env.write("plain.gz", &gzip(b"stays compressed"));
        #[cfg(unix)]
        std::os::unix::fs::symlink("sub/c.txt", env.project().join("tree/link")).unwrap();
        let out = env
            .run(json!({"files": [
                {"name": "x.tar.gz", "mirrors": ["x.tar.gz"]},
                {"name": "y.zip", "mirrors": ["y.zip"]},
                {"name": "tree", "mirrors": ["tree"]},
                {"name": "plain.gz", "mirrors": ["plain.gz"]},
            ]}))
            .unwrap();
        for a in ["x.tar.gz", "y.zip"] {
            assert_eq!(
                std::fs::read(out.join(format!("files/{a}/d/a.txt"))).unwrap(),
                b"alpha"
            );
            assert_eq!(
                std::fs::read(out.join(format!("files/{a}/b.txt"))).unwrap(),
                b"beta"
            );
        }
        assert_eq!(
            std::fs::read(out.join("files/tree/sub/c.txt")).unwrap(),
            b"gamma"
        );
        assert!(
            std::fs::symlink_metadata(out.join("files/tree/link")).is_err(),
            "symlinks are not copied"
        );
        assert_eq!(
            std::fs::read(out.join("files/plain.gz")).unwrap(),
            gzip(b"stays compressed")
        );
    }

    #[test]
    fn escaping_tar_entry_is_a_user_error() {
        let env = Env::new();
        env.write(
            "evil.tar",
            &tar_bytes(&[("fine.txt", b"x"), ("../evil", b"x")], &[]),
        );
        let e = env
            .run(json!({"files": [{"name": "evil.tar", "mirrors": ["evil.tar"]}]}))
            .unwrap_err();
        assert!(
            e.user && e.message.contains("`../evil`") && e.message.contains("escapes"),
            "{}",
            e.message
        );
        assert!(!env.dir.path().join("evil").exists());
    }

    // ---- idx ----

    fn idx_params(classes: Option<Vec<&str>>) -> Value {
        let names = [
            "train-images-idx3-ubyte.gz",
            "train-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
        ];
        let mut idx = json!({"train_images": names[0], "train_labels": names[1], "test_images": names[2], "test_labels": names[3]});
        if let Some(c) = classes {
            idx["classes"] = json!(c);
        }
        json!({
            "files": names.iter().map(|n| json!({"name": n, "mirrors": [format!("fmnist/{n}")]})).collect::<Vec<_>>(),
            "format": "idx",
            "idx": idx,
        })
    }

    #[test]
    fn idx_pair_becomes_a_dataset() {
        let env = Env::new();
        env.write(
            "fmnist/train-images-idx3-ubyte.gz",
            &gzip(&idx_bytes(&[3, 2, 2], &(0..12).collect::<Vec<u8>>())),
        );
        env.write(
            "fmnist/train-labels-idx1-ubyte.gz",
            &gzip(&idx_bytes(&[3], &[0, 2, 1])),
        );
        env.write(
            "fmnist/t10k-images-idx3-ubyte.gz",
            &idx_bytes(&[2, 2, 2], &[9; 8]),
        );
        env.write(
            "fmnist/t10k-labels-idx1-ubyte.gz",
            &gzip(&idx_bytes(&[2], &[1, 1])),
        );
        let out = env.run(idx_params(None)).unwrap();
        let ds = Dataset::open(&out, "d").unwrap();
        assert_eq!(ds.meta.classes, vec!["0", "1", "2"]);
        assert_eq!(ds.meta.image_shape, Some([2, 2, 1]));
        assert_eq!(ds.splits["train"].labels, vec![0, 2, 1]);
        assert_eq!(ds.splits["test"].labels, vec![1, 1]);
        let train = load_images(&out, "train").unwrap();
        assert_eq!(train.get(2), ([2, 2, 1], &[8u8, 9, 10, 11][..]));
        let files = ds.meta.info["files"].as_array().unwrap();
        assert_eq!(files.len(), 4);
        assert_eq!(files[0]["sha256"].as_str().unwrap().len(), 64);

        let out = env.run(idx_params(Some(vec!["a", "b", "c", "d"]))).unwrap();
        assert_eq!(
            Dataset::open(&out, "d").unwrap().meta.classes,
            vec!["a", "b", "c", "d"]
        );
        let e = env.run(idx_params(Some(vec!["a", "b"]))).unwrap_err();
        assert!(
            e.user && e.message.contains("out of range"),
            "{}",
            e.message
        );

        env.write(
            "fmnist/t10k-labels-idx1-ubyte.gz",
            &idx_bytes(&[3], &[1, 1, 0]),
        );
        let e = env.run(idx_params(None)).unwrap_err();
        assert!(
            e.user && e.message.contains("2 images") && e.message.contains("3 labels"),
            "{}",
            e.message
        );
    }

    // ---- image folder ----

    fn png(img: image::DynamicImage) -> Vec<u8> {
        let mut v = std::io::Cursor::new(Vec::new());
        img.write_to(&mut v, image::ImageFormat::Png).unwrap();
        v.into_inner()
    }

    fn jpeg(img: image::DynamicImage) -> Vec<u8> {
        let mut v = std::io::Cursor::new(Vec::new());
        img.write_to(&mut v, image::ImageFormat::Jpeg).unwrap();
        v.into_inner()
    }

    fn image_tree(env: &Env) {
        let rgb = image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(
            3,
            2,
            image::Rgb([200, 10, 10]),
        ));
        let grey =
            image::DynamicImage::ImageLuma8(image::GrayImage::from_pixel(2, 4, image::Luma([77])));
        env.write("indoor/Images/kitchen/k1.png", &png(rgb.clone()));
        env.write("indoor/Images/kitchen/k2.jpg", &jpeg(rgb));
        env.write("indoor/Images/bar/b1.png", &png(grey));
        env.write(
            "indoor/Images/bar/broken.jpg",
            b"\xff\xd8\xff\xe0 not really a jpeg",
        );
        env.write("indoor/Images/bar/readme.txt", b"ignored");
        env.write(
            "lists/TrainImages.txt",
            b"kitchen/k1.png\nbar/broken.jpg\nbar/b1.png\n",
        );
        env.write("lists/TestImages.txt", b"kitchen/k2.jpg\n");
    }

    fn folder_params(lists: bool, on_corrupt: &str) -> Value {
        let mut files = vec![json!({"name": "indoor", "mirrors": ["indoor"]})];
        let mut spec = json!({"root": "Images", "on_corrupt": on_corrupt});
        if lists {
            files.push(json!({"name": "TrainImages.txt", "mirrors": ["lists/TrainImages.txt"]}));
            files.push(json!({"name": "TestImages.txt", "mirrors": ["lists/TestImages.txt"]}));
            spec["train_list"] = json!("TrainImages.txt");
            spec["test_list"] = json!("TestImages.txt");
        }
        json!({"files": files, "format": "image-folder", "image_folder": spec})
    }

    #[test]
    fn image_folder_with_lists_decodes_to_rgb_and_skips_corrupt() {
        let env = Env::new();
        image_tree(&env);
        let out = env.run(folder_params(true, "skip")).unwrap();
        let ds = Dataset::open(&out, "d").unwrap();
        assert_eq!(ds.meta.classes, vec!["bar", "kitchen"]);
        assert_eq!(
            ds.splits["train"].labels,
            vec![0, 1],
            "bar/b1.png, kitchen/k1.png; broken skipped"
        );
        assert_eq!(ds.splits["test"].labels, vec![1]);
        let train = load_images(&out, "train").unwrap();
        let (shape, px) = train.get(0);
        assert_eq!(shape, [4, 2, 3]);
        assert!(px.iter().all(|&v| v == 77), "grey repeated over 3 channels");
        assert_eq!(train.get(1), ([2, 3, 3], &[200u8, 10, 10].repeat(6)[..]));
        assert_eq!(load_images(&out, "test").unwrap().get(0).0, [2, 3, 3]);
        let skipped = ds.meta.info["image_folder"]["skipped"].as_array().unwrap();
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0]["file"], "bar/broken.jpg");

        let e = env.run(folder_params(true, "error")).unwrap_err();
        assert!(
            e.user && e.message.contains("bar/broken.jpg"),
            "{}",
            e.message
        );

        env.write("lists/TestImages.txt", b"kitchen/k3.jpg\n");
        let e = env.run(folder_params(true, "skip")).unwrap_err();
        assert!(
            e.user && e.message.contains("kitchen/k3.jpg") && e.message.contains("line 1"),
            "{}",
            e.message
        );
    }

    #[test]
    fn image_folder_from_an_archive_without_lists_is_one_split() {
        let env = Env::new();
        image_tree(&env);
        let mut b = tar::Builder::new(Vec::new());
        b.append_dir_all("Images", env.project().join("indoor/Images"))
            .unwrap();
        env.write("indoor.tar.gz", &gzip(&b.into_inner().unwrap()));
        let params = json!({
            "files": [{"name": "indoor.tar.gz", "mirrors": ["indoor.tar.gz"]}],
            "format": "image-folder",
            "image_folder": {"root": "Images"},
        });
        let out = env.run(params).unwrap();
        let ds = Dataset::open(&out, "d").unwrap();
        assert_eq!(ds.splits.keys().collect::<Vec<_>>(), vec!["all"]);
        assert_eq!(
            ds.splits["all"].labels,
            vec![0, 1, 1],
            "bar/b1, kitchen/k1, kitchen/k2"
        );
        assert_eq!(ds.meta.info["image_folder"]["ignored_files"], 1);
    }

    // ---- http ----

    struct Server {
        url: String,
        /// The Range header of each request (None: no Range).
        requests: Arc<Mutex<Vec<Option<String>>>>,
    }

    /// Serves `body` at /file over HTTP/1.1. With `honor_range`, `Range: bytes=N-` gets a 206;
    /// otherwise every answer is a 200 with the whole body. The first `drops` connections
    /// are closed halfway through the body.
    fn serve(body: Vec<u8>, honor_range: bool, drops: usize) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/file", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut range = None;
                let mut line = String::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim_end().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':') {
                        if k.eq_ignore_ascii_case("range") {
                            range = Some(v.trim().to_string());
                        }
                    }
                }
                log.lock().unwrap().push(range.clone());
                let start = range.filter(|_| honor_range).and_then(|r| {
                    r.strip_prefix("bytes=")?
                        .strip_suffix('-')?
                        .parse::<usize>()
                        .ok()
                });
                let (status, slice, extra) = match start {
                    Some(s) if s < body.len() => (
                        "206 Partial Content",
                        &body[s..],
                        format!(
                            "Content-Range: bytes {s}-{}/{}\r\n",
                            body.len() - 1,
                            body.len()
                        ),
                    ),
                    Some(_) => (
                        "416 Range Not Satisfiable",
                        &body[..0],
                        format!("Content-Range: bytes */{}\r\n", body.len()),
                    ),
                    None => ("200 OK", &body[..], String::new()),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
                    slice.len()
                );
                let cut = if n < drops {
                    slice.len() / 2
                } else {
                    slice.len()
                };
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&slice[..cut]);
                let _ = stream.flush();
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        });
        Server { url, requests }
    }

    fn body() -> Vec<u8> {
        (0..200_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect()
    }

    #[test]
    fn http_download_resumes_a_dropped_connection() {
        let env = Env::new();
        let data = body();
        let server = serve(data.clone(), true, 1);
        let out = env
            .run(json!({"files": [{"name": "blob.bin", "sha256": sha(&data), "mirrors": [server.url]}]}))
            .unwrap();
        assert_eq!(std::fs::read(out.join("files/blob.bin")).unwrap(), data);
        let requests = server.requests.lock().unwrap().clone();
        assert_eq!(requests.len(), 2, "{requests:?}");
        assert_eq!(requests[0], None);
        let resumed_at: usize = requests[1]
            .as_deref()
            .unwrap()
            .trim_start_matches("bytes=")
            .trim_end_matches('-')
            .parse()
            .unwrap();
        assert!(resumed_at > 0 && resumed_at < data.len(), "{requests:?}");
        assert_eq!(
            std::fs::read_dir(env.downloads()).unwrap().count(),
            0,
            "the partial file moved into the artifact"
        );
    }

    #[test]
    fn http_download_resumes_a_partial_file_from_an_earlier_run() {
        let env = Env::new();
        let data = body();
        std::fs::write(
            env.downloads().join(format!("{}.part", sha(&data))),
            &data[..1000],
        )
        .unwrap();
        let server = serve(data.clone(), true, 0);
        let out = env
            .run(json!({"files": [{"name": "blob.bin", "sha256": sha(&data), "mirrors": [server.url]}]}))
            .unwrap();
        assert_eq!(std::fs::read(out.join("files/blob.bin")).unwrap(), data);
        assert_eq!(
            *server.requests.lock().unwrap(),
            vec![Some("bytes=1000-".to_string())]
        );
    }

    #[test]
    fn http_server_ignoring_range_restarts_from_zero() {
        let env = Env::new();
        let data = body();
        let server = serve(data.clone(), false, 1);
        let out = env
            .run(json!({"files": [{"name": "blob.bin", "sha256": sha(&data), "mirrors": [server.url]}]}))
            .unwrap();
        assert_eq!(std::fs::read(out.join("files/blob.bin")).unwrap(), data);
        assert_eq!(server.requests.lock().unwrap().len(), 2);
    }

    #[test]
    fn http_without_pin_prints_the_digest_and_keeps_the_download() {
        let env = Env::new();
        let data = body();
        let server = serve(data.clone(), true, 0);
        let e = env
            .run(json!({"files": [{"name": "blob.bin", "mirrors": ["missing.bin", server.url]}]}))
            .unwrap_err();
        assert!(e.user);
        let digest = sha(&data);
        assert!(
            e.message.contains(&format!(
                "add  sha256: \"{digest}\"  to files[0] (blob.bin)"
            )),
            "{}",
            e.message
        );

        let out = env
            .run(
                json!({"files": [{"name": "blob.bin", "sha256": digest, "mirrors": [server.url]}]}),
            )
            .unwrap();
        assert_eq!(std::fs::read(out.join("files/blob.bin")).unwrap(), data);
        assert_eq!(
            server.requests.lock().unwrap().len(),
            1,
            "pinning does not refetch"
        );
    }

    #[test]
    fn http_mismatch_falls_back_to_the_next_mirror() {
        let env = Env::new();
        let data = body();
        let wrong = serve(b"not the file".to_vec(), true, 0);
        env.write("copy.bin", &data);
        let out = env
            .run(json!({"files": [{"name": "blob.bin", "sha256": sha(&data), "mirrors": [wrong.url, "copy.bin"]}]}))
            .unwrap();
        assert_eq!(std::fs::read(out.join("files/blob.bin")).unwrap(), data);
        let e = env
            .run(json!({"files": [{"name": "blob.bin", "sha256": sha(&data), "mirrors": [wrong.url]}]}))
            .unwrap_err();
        assert!(
            e.message.contains(&sha(b"not the file")) && e.message.contains(&wrong.url),
            "{}",
            e.message
        );
    }
}
