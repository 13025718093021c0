//! The `download` stage's parameters: their types, defaults and the checks run before
//! anything is fetched.
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::super::{parse_params, ParamError, StageError};
use crate::data::archive::{self, archive_kind, safe_relative};
use crate::data::fetch;
use crate::data::layouts::Layout;

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The files to fetch, each pinned by sha256 and tried from its mirrors in order.
    pub files: Vec<FileSpec>,
    /// How the files are read into the artifact: `raw` (as they are, archives unpacked), `idx` (MNIST-style IDX files) or `image-folder`.
    #[serde(default)]
    pub format: Format,
    /// For `format: idx`: which file holds which split's images and labels.
    #[serde(default)]
    pub idx: Option<IdxSpec>,
    /// For `format: image-folder`: the folder (or official layout) to read.
    #[serde(default)]
    pub image_folder: Option<ImageFolderSpec>,
    /// Seconds an HTTP attempt may wait for the server (connecting, the answer, each read of
    /// the body) before it counts as failed. Default 30 ([`IDLE_TIMEOUT_S`]).
    #[serde(default)]
    pub idle_timeout_s: Option<f64>,
    /// Attempts per http(s) mirror (each resumes what the last one got). Default 3 ([`ATTEMPTS`]).
    #[serde(default)]
    pub attempts: Option<u32>,
    /// The most bytes an archive may unpack to. Default 256 GiB.
    #[serde(default)]
    pub max_unpacked_bytes: Option<u64>,
    /// The most an archive may unpack to relative to its own size (0: no limit). Default 200.
    #[serde(default)]
    pub max_unpack_ratio: Option<f64>,
}

impl Params {
    /// What enters the cache key: the params with their defaults filled in, without the
    /// bounds on how a download may go (`idle_timeout_s`, `attempts`, `max_unpacked_bytes`,
    /// `max_unpack_ratio`). Those decide whether a fetch succeeds, never which bytes it
    /// yields (every file is checked against its sha256), so changing them reruns nothing
    /// — as with `resources`.
    pub(super) fn canonical(params: &Value) -> Value {
        let mut v = super::super::canonical_as::<Params>(params);
        if let Some(m) = v.as_object_mut() {
            for bound in [
                "idle_timeout_s",
                "attempts",
                "max_unpacked_bytes",
                "max_unpack_ratio",
            ] {
                m.remove(bound);
            }
        }
        v
    }
}

/// Default of `idle_timeout_s`.
pub const IDLE_TIMEOUT_S: f64 = 30.0;
/// Default of `attempts`.
pub const ATTEMPTS: u32 = 3;

impl Params {
    pub(super) fn limits(&self) -> archive::Limits {
        let d = archive::Limits::default();
        archive::Limits {
            max_bytes: self.max_unpacked_bytes.unwrap_or(d.max_bytes),
            max_ratio: self.max_unpack_ratio.unwrap_or(d.max_ratio),
        }
    }

    pub(super) fn net(&self) -> Net {
        Net {
            idle: Duration::from_secs_f64(self.idle_timeout_s.unwrap_or(IDLE_TIMEOUT_S)),
            attempts: self.attempts.unwrap_or(ATTEMPTS),
        }
    }
}

/// How patient HTTP downloads are.
#[derive(Debug, Clone, Copy)]
pub(super) struct Net {
    pub(super) idle: Duration,
    pub(super) attempts: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// The file's name in the artifact (and the archive's, for `raw`).
    pub name: String,
    /// Its sha256 (hex): checked on every fetch; without one the run needs `--accept-new-checksums` and prints the digest to pin.
    #[serde(default)]
    pub sha256: Option<String>,
    /// torch.hub's convention: a source file named `<stem>-<hex>.<ext>` must have a sha256
    /// starting with `<hex>` (checked per mirror, for names of that form).
    #[serde(default)]
    pub hash_in_name: bool,
    /// Where to get it, tried in order: a local path (relative to the project), `file://`, `http(s)://`.
    pub mirrors: Vec<String>,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    #[default]
    Raw,
    Idx,
    ImageFolder,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdxSpec {
    /// The `files` entry holding the training images.
    pub train_images: String,
    /// The `files` entry holding the training labels.
    pub train_labels: String,
    /// The `files` entry holding the test images.
    pub test_images: String,
    /// The `files` entry holding the test labels.
    pub test_labels: String,
    /// Class names, in label order (default: `0`, `1`, …).
    #[serde(default)]
    pub classes: Option<Vec<String>>,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum OnCorrupt {
    #[default]
    Skip,
    Error,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageFolderSpec {
    /// The folder of class folders, or with `layout` the dataset's root folder.
    #[serde(default = "dot")]
    pub root: String,
    /// An official dataset layout (its list and annotation files give splits and labels).
    #[serde(default)]
    pub layout: Option<Layout>,
    /// A file listing the training images (one relative path per line); without lists, every image is in `train`.
    #[serde(default)]
    pub train_list: Option<String>,
    /// A file listing the test images.
    #[serde(default)]
    pub test_list: Option<String>,
    /// An image that does not decode: `skip` it (with a warning naming it) or fail with an `error`.
    #[serde(default)]
    pub on_corrupt: OnCorrupt,
    /// Resize every image so its shorter side has this many pixels (aspect kept), once,
    /// at decoding (the ImageNet protocol's Resize(256)).
    #[serde(default)]
    pub resize: Option<usize>,
}

pub(super) fn dot() -> String {
    ".".into()
}

impl FileSpec {
    pub(super) fn expected(&self) -> Option<String> {
        self.sha256.as_ref().map(|s| s.to_ascii_lowercase())
    }
}

pub(super) fn valid_relative(value: &str) -> Result<(), String> {
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
        crate::names::plain_file_name(&f.name)
            .map_err(|m| ParamError::new(format!("files[{i}].name"), m))?;
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
                let err = ParamError::new(format!("files[{i}].mirrors[{j}]"), e.render());
                return Err(match e.help() {
                    Some(help) => err.help(help),
                    None => err,
                });
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
                    err = err.help(crate::hint::did_you_mean(value, declared()).unwrap_or_else(
                        || {
                            format!(
                                "declared files: {}",
                                declared().collect::<Vec<_>>().join(", ")
                            )
                        },
                    ));
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

pub(super) fn param_to_stage(e: ParamError) -> StageError {
    let at = if e.path.is_empty() {
        "params".to_string()
    } else {
        format!("params.{}", e.path)
    };
    let help = e.help.map(|h| format!(" (help: {h})")).unwrap_or_default();
    StageError::user(format!("{at}: {}{help}", e.message))
}

pub(super) fn parse(params: &Value) -> Result<Params, ParamError> {
    let p: Params = parse_params(params)?;
    validate(&p)?;
    Ok(p)
}
