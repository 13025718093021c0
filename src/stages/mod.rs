//! Stage kinds. Each kind declares its parameter type (checked before anything runs), the
//! inputs it accepts, a VERSION folded into every cache key (bump it when the kind's
//! output for the same inputs changes), and its defaults ([`StageKind`], the declaration
//! the planner uses); `run`, which writes the artifact into `ctx.out`, is a separate
//! [`StageRunner`] registered by the binary that can run it.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::Value;

pub mod aggregate;
pub mod command;
pub mod download;
pub mod noise;
pub mod reference;
pub mod search;
pub mod split;
pub mod train;

/// One upstream artifact handed to a stage.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct InputArtifact {
    /// The upstream stage instance, e.g. `noisy[rate=0.4]`.
    pub instance: String,
    /// Its artifact digest (blake3 over sorted (path, content)).
    pub digest: String,
    /// Where the artifact directory is (read-only).
    pub path: PathBuf,
    /// The upstream instance's matrix values, e.g. `{rate: 0.4, seed: 1}`.
    #[serde(default)]
    pub matrix: BTreeMap<String, Value>,
}

/// Inputs by the name the pipeline gave them (`inputs: {data: split}`), each a list: one
/// element for a plain reference, all matching instances for a matrix stage.
pub type Inputs = BTreeMap<String, Vec<InputArtifact>>;

/// Progress a running stage reports to the live view.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    pub pos: u64,
    pub len: u64,
    pub message: String,
}

/// What a stage gets to run.
pub struct StageCtx<'a> {
    /// The stage instance name, e.g. `noisy[rate=0.4]`.
    pub instance: &'a str,
    /// Parameters after interpolation, as JSON.
    pub params: &'a Value,
    pub inputs: &'a Inputs,
    /// Empty directory the artifact is written into. Everything in it is the artifact.
    pub out: &'a Path,
    /// Scratch directory (not part of the artifact), removed afterwards.
    pub work: &'a Path,
    /// Persistent directory inside the cache for partial downloads (resume across runs).
    pub downloads: &'a Path,
    /// Relative paths in params (local files) are resolved against this directory.
    pub project_dir: &'a Path,
    /// Threads this stage may use (as declared in the pipeline).
    pub threads: usize,
    /// Resolves an artifact digest to its directory in the cache (for dataset views).
    pub resolve: &'a (dyn Fn(&str) -> Option<PathBuf> + Sync),
    /// Reports progress (rate-limited by the caller).
    pub progress: &'a (dyn Fn(Progress) + Sync),
}

impl StageCtx<'_> {
    /// Resolves a path given in params: absolute as is, relative against the project dir.
    pub fn local_path(&self, p: &str) -> PathBuf {
        let path = Path::new(p);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.project_dir.join(path)
        }
    }

    /// Writes a line to the stage's log.
    pub fn log(&self, line: &str) {
        crate::elog!("{line}");
    }

    /// The single input named `name` (validation guarantees presence and count for kinds
    /// that declare it as `One`).
    pub fn one_input(&self, name: &str) -> Result<&InputArtifact, StageError> {
        match self.inputs.get(name).map(Vec::as_slice) {
            Some([one]) => Ok(one),
            Some(many) => Err(StageError::user(format!(
                "input `{name}` must be exactly one artifact, got {}",
                many.len()
            ))),
            None => Err(StageError::user(format!("missing input `{name}`"))),
        }
    }

    /// Opens the single dataset input `name`.
    pub fn dataset_input(&self, name: &str) -> Result<crate::data::dataset::Dataset, StageError> {
        let input = self.one_input(name)?;
        crate::data::dataset::Dataset::open(&input.path, &input.digest).map_err(|e| {
            StageError::user(format!(
                "input `{name}` ({}) is not a dataset: {}",
                input.instance,
                e.render()
            ))
        })
    }
}

/// A stage's failure. `user` errors (missing file, wrong checksum, bad data) make `rst run`
/// exit 2; others exit 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("{message}")]
pub struct StageError {
    pub user: bool,
    pub message: String,
}

impl StageError {
    pub fn user(message: impl Into<String>) -> Self {
        StageError {
            user: true,
            message: message.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        StageError {
            user: false,
            message: message.into(),
        }
    }

    pub fn io(what: impl std::fmt::Display, e: std::io::Error) -> Self {
        StageError::internal(format!("{what}: {e}"))
    }
}

/// A data error keeps its exit code (the user's files: 2) and its whole cause chain.
impl From<crate::data::error::DataError> for StageError {
    fn from(e: crate::data::error::DataError) -> StageError {
        StageError {
            user: e.is_user(),
            message: e.render(),
        }
    }
}

/// A parameter error found before anything runs: `path` is the key path inside `params`
/// (`sources[0].sha256`), empty for the params object itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    pub path: String,
    pub message: String,
    pub help: Option<String>,
}

impl ParamError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ParamError {
            path: path.into(),
            message: message.into(),
            help: None,
        }
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// A parameter error found while a stage runs (the planner checked them already, so this
/// is rare: e.g. a job file edited by hand) is the user's to fix.
impl From<ParamError> for StageError {
    fn from(e: ParamError) -> StageError {
        let at = if e.path.is_empty() {
            "params".to_string()
        } else {
            format!("params.{}", e.path)
        };
        let help = e.help.map(|h| format!(" ({h})")).unwrap_or_default();
        StageError::user(format!("{at}: {}{help}", e.message))
    }
}

/// Deserialises `params` into the kind's type, reporting the failing key path, the
/// expected type in words, and a "did you mean" hint for unknown keys and values.
pub fn parse_params<T: DeserializeOwned>(params: &Value) -> Result<T, ParamError> {
    serde_path_to_error::deserialize(params).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let message = expected_in_words(&e.inner().to_string());
        let help = crate::hint::serde_unknown(&message).or_else(|| type_hint(&message, &path));
        ParamError {
            path,
            message,
            help,
        }
    })
}

/// The params of type `T` with every default filled in, as JSON: what enters the cache key
/// (see [`StageKind::canonical_params`]). Params that do not parse are keyed as written:
/// they never get that far (the planner checks them first).
pub fn canonical_as<T: DeserializeOwned + serde::Serialize>(params: &Value) -> Value {
    parse_params::<T>(params)
        .ok()
        .and_then(|p| serde_json::to_value(p).ok())
        .unwrap_or_else(|| params.clone())
}

/// Rust's primitive type names in serde's messages, as a newcomer reads them.
const TYPE_WORDS: &[(&str, &str)] = &[
    ("usize", "a whole number (0 or more)"),
    ("u64", "a whole number (0 or more)"),
    ("u32", "a whole number (0 or more)"),
    ("u16", "a whole number (0 or more)"),
    ("u8", "a whole number (0 or more)"),
    ("i64", "a whole number"),
    ("i32", "a whole number"),
    ("f64", "a number"),
    ("f32", "a number"),
    ("a boolean", "true or false"),
];

/// `invalid type: string "one", expected usize` → `..., expected a whole number (0 or more)`.
fn expected_in_words(message: &str) -> String {
    if let Some((head, ty)) = message.rsplit_once(", expected ") {
        if let Some((_, words)) = TYPE_WORDS.iter().find(|(t, _)| *t == ty) {
            return format!("{head}, expected {words}");
        }
    }
    message.to_string()
}

/// A help line for a value of the wrong type: what to write instead.
fn type_hint(message: &str, path: &str) -> Option<String> {
    if !message.starts_with("invalid type") {
        return None;
    }
    let key = path.rsplit('.').next().filter(|k| !k.is_empty())?;
    let example =
        if message.ends_with("a whole number (0 or more)") || message.ends_with("a whole number") {
            "10"
        } else if message.ends_with("a number") {
            "0.5"
        } else if message.ends_with("true or false") {
            "true"
        } else {
            return None;
        };
    Some(format!(
        "write {}, e.g. `{key}: {example}`",
        &message[message.rfind("expected ")? + 9..]
    ))
}

/// Checks that every artifact of `input` whose splits are known has the split `split`
/// (named by the param `param`): the static form of "the input has no split `x`".
pub fn check_split_name(
    inputs: &Upstreams<'_>,
    input: &str,
    param: &str,
    split: &str,
) -> Result<(), ParamError> {
    for up in inputs.get(input).into_iter().flatten() {
        let Some(splits) = up.splits else { continue };
        if splits.iter().any(|s| s == split) {
            continue;
        }
        let listed: Vec<String> = splits.iter().map(|s| format!("`{s}`")).collect();
        let help = match crate::hint::did_you_mean(split, splits.iter().map(String::as_str)) {
            Some(h) => h,
            None => format!(
                "name one of {}, or add a split `{split}` to `{}`",
                listed.join(", "),
                up.stage
            ),
        };
        return Err(ParamError::new(
            param,
            format!(
                "input `{input}` (`{}`) has no split `{split}`; it has {}",
                up.instance,
                listed.join(", ")
            ),
        )
        .help(help));
    }
    Ok(())
}

/// How many artifacts an input name takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arity {
    One,
    Many,
}

#[derive(Debug, Clone, Copy)]
pub struct InputDecl {
    pub name: &'static str,
    pub arity: Arity,
    pub required: bool,
}

/// What the pipeline knows, before anything runs, about one artifact an input refers to:
/// enough for a consumer to check its params against its inputs (`aggregate`'s axes,
/// `train`'s split names) in `rst check`, instead of failing an hour into a run.
#[derive(Debug, Clone, Copy)]
pub struct Upstream<'a> {
    /// The producing stage's name (`noisy`).
    pub stage: &'a str,
    /// The producing instance (`noisy[rate=0.4]`).
    pub instance: &'a str,
    /// The names the producing stage's matrix binds (what the artifact's `matrix` holds).
    pub axes: &'a [String],
    /// The dataset splits the artifact will have, when its kind declares them.
    pub splits: Option<&'a [String]>,
}

/// Upstream facts by input name, in the order the input lists them.
pub type Upstreams<'a> = BTreeMap<&'a str, Vec<Upstream<'a>>>;

/// The declaration of a stage kind: everything the planner needs (name, version, params,
/// inputs, what enters the key), and nothing that runs it. The engine's [`registry`] holds
/// declarations only, so a kind whose runner lives elsewhere (`train` and `evaluate` in the
/// `rst-torch` binary) needs no placeholder here; see [`StageRunner`].
pub trait StageKind: Sync {
    fn name(&self) -> &'static str;
    /// Folded into the cache key: bump it when the same inputs would give other output.
    fn version(&self) -> u32;
    /// Checks the parameters before anything runs.
    fn check(&self, params: &Value) -> Result<(), ParamError>;
    /// The JSON schema of the struct `check` deserialises `params:` into (`rst params`).
    fn params_schema(&self) -> schemars::Schema;
    /// The inputs this kind accepts; None: any names (the `command` kind).
    fn inputs(&self) -> Option<&'static [InputDecl]>;
    /// Local files (relative to the project dir) whose *content* goes into the cache key,
    /// e.g. an unpinned local download source or a `command` stage's declared `deps`.
    fn local_deps(&self, _params: &Value) -> Vec<String> {
        Vec::new()
    }
    /// Whether results depend on the libtorch version and device (train, evaluate).
    fn uses_torch(&self) -> bool {
        false
    }
    /// The params as they enter the cache key: checked params with every default filled
    /// in, so writing a default (`split: test`) and leaving it out are one stage. The
    /// default is the params as written (kinds without defaults, or not yet converted).
    fn canonical_params(&self, params: &Value) -> Value {
        params.clone()
    }
    /// Checks the params against what the pipeline knows of the inputs (their matrix axes,
    /// their splits). Called after every input is resolved, before anything runs.
    fn check_upstream(&self, _params: &Value, _inputs: &Upstreams<'_>) -> Result<(), ParamError> {
        Ok(())
    }
    /// The dataset splits this kind's artifact will have, when known from its params and
    /// inputs alone (`split` declares them; `noise` keeps its input's). None: not known.
    fn output_splits(&self, _params: &Value, _inputs: &Upstreams<'_>) -> Option<Vec<String>> {
        None
    }
    /// Whether [`Self::check_upstream`] or [`Self::output_splits`] do anything for this
    /// kind: the spec derives an instance's params for those checks only when they do (a
    /// sweep of a million `command` stages costs nothing here).
    fn checks_upstream(&self) -> bool {
        false
    }
}

/// How a kind runs: a binary registers the runners it has (the engine's [`runners`], the
/// torch ones in `rst-torch`); the worker finds a job's runner by its declaration's name.
pub trait StageRunner: Sync {
    /// The declaration this runner implements.
    fn kind(&self) -> &'static dyn StageKind;
    /// Writes the artifact into `ctx.out`.
    fn run(&self, ctx: &StageCtx<'_>) -> Result<(), StageError>;
}

/// A runner that is a plain function: what `rst-torch` registers for `train`/`evaluate`.
pub struct FnRunner {
    pub kind: &'static dyn StageKind,
    pub run: fn(&StageCtx<'_>) -> Result<(), StageError>,
}

impl StageRunner for FnRunner {
    fn kind(&self) -> &'static dyn StageKind {
        self.kind
    }
    fn run(&self, ctx: &StageCtx<'_>) -> Result<(), StageError> {
        (self.run)(ctx)
    }
}

/// All stage kinds' declarations, by name.
pub fn registry() -> &'static [&'static dyn StageKind] {
    static KINDS: [&dyn StageKind; 8] = [
        &download::Download,
        &split::Split,
        &noise::Noise,
        &command::Command,
        &train::TRAIN,
        &train::EVALUATE,
        &aggregate::Aggregate,
        &search::Search,
    ];
    &KINDS
}

/// The runners the engine binary has (every kind without libtorch).
pub fn runners() -> &'static [&'static dyn StageRunner] {
    static RUNNERS: [&dyn StageRunner; 6] = [
        &download::Download,
        &split::Split,
        &noise::Noise,
        &command::Command,
        &aggregate::Aggregate,
        &search::Search,
    ];
    &RUNNERS
}

pub fn lookup(name: &str) -> Option<&'static dyn StageKind> {
    registry().iter().copied().find(|k| k.name() == name)
}

/// The engine's runner of the kind `name`; None for kinds another binary runs.
pub fn runner(name: &str) -> Option<&'static dyn StageRunner> {
    runners().iter().copied().find(|r| r.kind().name() == name)
}

pub fn kind_names() -> Vec<&'static str> {
    registry().iter().map(|k| k.name()).collect()
}

/// Running a kind in unit tests the way the worker does (check, then run).
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Checks `params`, then runs `kind` into a fresh directory under `dir` (with `dir`
    /// as project dir and `downloads` for partial downloads); returns the artifact dir.
    pub fn run_kind(
        runner: &dyn StageRunner,
        params: &Value,
        inputs: &Inputs,
        dir: &Path,
        downloads: &Path,
        threads: usize,
    ) -> Result<PathBuf, StageError> {
        let kind = runner.kind();
        kind.check(params)?;
        let out = tempfile::tempdir_in(dir).unwrap().keep();
        let work = tempfile::tempdir_in(dir).unwrap();
        let resolve = |_: &str| -> Option<PathBuf> { None };
        let progress = |_: Progress| {};
        let ctx = StageCtx {
            instance: kind.name(),
            params,
            inputs,
            out: &out,
            work: work.path(),
            downloads,
            project_dir: dir,
            threads,
            resolve: &resolve,
            progress: &progress,
        };
        runner.run(&ctx).map(|()| out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct P {
        rate: f64,
        seed: u64,
    }

    #[test]
    fn param_errors_carry_path_and_hint() {
        let err = parse_params::<P>(&serde_json::json!({"rate": 0.1, "sed": 1})).unwrap_err();
        assert_eq!(err.help.as_deref(), Some("did you mean `seed`?"));
        let err = parse_params::<P>(&serde_json::json!({"rate": "x", "seed": 1})).unwrap_err();
        assert_eq!(err.path, "rate");
    }
}
