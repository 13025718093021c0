//! Pipeline files: YAML → raw structs (serde, unknown keys rejected) → a validated
//! [`Pipeline`], built by phases with a type between each (see [`build`]): parameters,
//! stage declarations, matrix expansion, input resolution, topological order. Every
//! problem is a [`UserError`] with file, line and column.
mod best;
mod ctx;
mod declare;
mod expand;
mod include;
mod inputs;
pub mod interp;
pub mod matrix;
mod order;
pub mod params;
mod raw;
pub mod resources;
pub mod source_map;
mod stage_checks;
mod targets;
pub mod trials;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::error::{Location, UserError};
use crate::stages::StageKind;
pub use best::{BestValues, BEST_INPUT};
use ctx::{Ctx, Located, Routes};
pub use expand::instance_name;
pub use matrix::{Matrix, DEFAULT_MAX_INSTANCES};
pub use order::topo_order;
pub use raw::Publish;
use raw::RawPipeline;
use source_map::SourceMap;

/// One expanded stage instance (a stage without a matrix has exactly one).
#[derive(Debug, Clone)]
pub struct Instance {
    pub id: usize,
    /// Index into [`Pipeline::stages`].
    pub stage: usize,
    /// `stage` or `stage[a=1, b=x]`.
    pub name: String,
    /// Matrix variable → value (the names shared by all instances of the stage).
    pub matrix: Vec<(Arc<str>, Value)>,
    /// Input name → upstream instance ids (in their stage's expansion order).
    pub inputs: BTreeMap<String, Vec<usize>>,
    pub threads: usize,
    /// How a torch stage chooses its CPU kernels (part of its key; `crate::numerics`).
    pub numerics: crate::numerics::Numerics,
    /// What a cluster job for this instance asks for (not part of the cache key).
    pub resources: resources::Resources,
    pub local_deps: Vec<String>,
    /// The best trial's values of the study named by `best:` (variables in its params'
    /// scope besides the matrix ones; `spec::best`).
    pub best: Vec<(Arc<str>, Value)>,
    /// Bound to stand-ins of a study's best values (`best:`) because the study has not run
    /// yet: such an instance is shown, never run (`spec::best`).
    pub best_pending: bool,
}

#[derive(Clone)]
pub struct StageDef {
    pub name: String,
    pub kind: &'static dyn StageKind,
    /// The variables its matrix binds, in instance-name order.
    pub axes: Vec<String>,
    /// Its instances' ids, in expansion order (the k-th matrix combination first).
    pub instances: Vec<usize>,
    /// The matrix the instances were expanded from (slices are matched on it).
    pub matrix: Matrix,
    /// `params:` as written; each instance's are these interpolated
    /// ([`Pipeline::params_of`]), derived when needed rather than kept per instance.
    pub params: Value,
    /// Results sub-directory, when the stage is published.
    pub publish: Option<String>,
    /// The `search` stage this stage is a trial of (`trial_of:`).
    pub trial_of: Option<String>,
}

impl std::fmt::Debug for StageDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageDef")
            .field("name", &self.name)
            .field("kind", &self.kind.name())
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct Pipeline {
    pub name: String,
    pub file: PathBuf,
    /// Relative paths in stage params resolve against this (the directory rst runs in).
    pub project_dir: PathBuf,
    pub params: BTreeMap<String, Value>,
    pub stages: Vec<StageDef>,
    /// All instances, in a topological order (every input before its consumer).
    pub instances: Vec<Instance>,
    /// The `--set` overrides it was loaded with, in the order given.
    pub overrides: Vec<(String, Value)>,
    /// The files its `include:` brought in (paths as the pipeline file's folder joins them).
    pub includes: Vec<PathBuf>,
}

impl Pipeline {
    /// The pipeline file's name without its extension.
    pub fn stem(&self) -> String {
        self.file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.name.clone())
    }

    /// Where its published results go: `results/<stem>/`.
    pub fn results_dir(&self) -> PathBuf {
        self.project_dir.join("results").join(self.stem())
    }

    pub fn find_stage(&self, name: &str) -> Option<usize> {
        self.stages.iter().position(|s| s.name == name)
    }

    /// The params of `inst`: its stage's `params:` interpolated with the pipeline
    /// parameters and the instance's matrix values (what its kind reads and its key hashes).
    pub fn params_of(&self, inst: &Instance) -> Value {
        let scope = interp::Scope {
            params: &self.params,
            matrix: interp::MatrixVars::Bindings(&inst.matrix, &inst.best),
        };
        // Building interpolated and checked these very values, so this cannot fail.
        scope
            .apply(&self.stages[inst.stage].params)
            .unwrap_or(Value::Null)
    }
}

/// Parses a `--set key=value` override; the value is YAML (`0.1`, `[1, 2]`, `text`).
pub fn parse_override(s: &str) -> Result<(String, Value), UserError> {
    let (k, v) = s.split_once('=').ok_or_else(|| {
        UserError::new(format!("--set `{s}` is not of the form key=value"))
            .help("e.g. --set lr=0.001 or --set seeds=[1,2,3]")
    })?;
    let parsed: serde_yaml::Value = match serde_yaml::from_str(v) {
        Ok(parsed) => parsed,
        // A value that starts like a YAML list, mapping or quoted string but does not parse
        // is a typo (`[1,`), not a string the user meant: taking it as one would run the
        // pipeline with a parameter nobody asked for.
        Err(e) if v.trim_start().starts_with(['[', '{', '"', '\'']) => {
            return Err(UserError::new(format!(
                "--set {}: `{v}` is not a valid YAML value: {e}",
                k.trim()
            ))
            .help(format!(
                "write a complete list or mapping (e.g. --set {k}=[1,2]), or quote it to pass a string: --set '{k}=\"{v}\"'",
                k = k.trim()
            )));
        }
        Err(_) => serde_yaml::Value::String(v.to_string()),
    };
    let value =
        ctx::yaml_to_json(&parsed).map_err(|e| UserError::new(format!("--set {k}: {e}")))?;
    Ok((k.trim().to_string(), value))
}

pub(crate) use crate::names::valid_name;

/// A reference to another stage's output: `stage` or `stage[key=value, ...]`.
#[derive(Debug, Clone, PartialEq)]
pub struct InputRef {
    pub stage: String,
    pub slice: Vec<(String, String)>,
}

pub fn parse_input_ref(s: &str) -> Result<InputRef, String> {
    let s = s.trim();
    let (stage, slice) = match s.split_once('[') {
        None => (s, Vec::new()),
        Some((stage, rest)) => {
            let body = rest
                .strip_suffix(']')
                .ok_or_else(|| format!("`{s}`: missing closing `]`"))?;
            let mut slice = Vec::new();
            for part in body.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (k, v) = part
                    .split_once('=')
                    .ok_or_else(|| format!("`{s}`: slice entry `{part}` is not key=value"))?;
                slice.push((k.trim().to_string(), v.trim().to_string()));
            }
            (stage.trim(), slice)
        }
    };
    if !valid_name(stage) {
        return Err(format!(
            "`{s}` is not a stage reference (expected `stage` or `stage[key=value]`)"
        ));
    }
    Ok(InputRef {
        stage: stage.to_string(),
        slice,
    })
}

/// How a pipeline is built, beyond its file and `--set` overrides.
#[derive(Debug, Clone)]
pub struct Options {
    /// Refuse pipelines that would expand to more instances than this (checked before
    /// expanding, so a typo'd 100^5 sweep fails at once instead of filling memory).
    pub max_instances: u64,
    /// The trials proposed so far of each study (`kind: search`): what trial stages
    /// expand to. None on a plain load.
    pub proposals: trials::Proposals,
    /// The best trial's values of each finished study, for stages with `best:`.
    pub best: BestValues,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_instances: DEFAULT_MAX_INSTANCES,
            proposals: trials::Proposals::new(),
            best: BestValues::new(),
        }
    }
}

/// Loads, validates and expands a pipeline file. `overrides` are `--set` pairs.
pub fn load(
    file: &Path,
    overrides: &[(String, Value)],
    project_dir: &Path,
) -> Result<Pipeline, UserError> {
    load_with(file, overrides, project_dir, &Options::default())
}

/// [`load`] with explicit [`Options`].
pub fn load_with(
    file: &Path,
    overrides: &[(String, Value)],
    project_dir: &Path,
    opts: &Options,
) -> Result<Pipeline, UserError> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        UserError::new(format!("cannot read pipeline file {}: {e}", file.display()))
            .help("check the path; pipeline files usually live in pipelines/")
    })?;
    parse_with(file, &text, overrides, project_dir, opts)
}

/// Like [`load`] on text already read.
pub fn parse(
    file: &Path,
    text: &str,
    overrides: &[(String, Value)],
    project_dir: &Path,
) -> Result<Pipeline, UserError> {
    parse_with(file, text, overrides, project_dir, &Options::default())
}

/// Like [`load_with`] on text already read.
pub fn parse_with(
    file: &Path,
    text: &str,
    overrides: &[(String, Value)],
    project_dir: &Path,
    opts: &Options,
) -> Result<Pipeline, UserError> {
    let map = SourceMap::build(text).map_err(|e| {
        let mut u = UserError::new(e.message).located(
            Some(Location {
                file: file.to_path_buf(),
                line: e.pos.line,
                column: e.pos.column,
            }),
            text,
        );
        u.help = e.help;
        u
    })?;
    let mut raw: RawPipeline =
        serde_yaml::from_str(text).map_err(|e| serde_error(file, text, e))?;
    let no_routes = Routes::default();
    let cx = Ctx {
        file,
        text,
        map: &map,
        overrides,
        routes: &no_routes,
    };
    if raw.include.is_empty() {
        return build(&cx, &raw, overrides, project_dir, opts, Vec::new());
    }
    let (included, fragments) = include::read(&cx, &raw)?;
    let routes = include::merge(&cx, &mut raw, fragments, include::sources(&included))?;
    let cx = Ctx {
        routes: &routes,
        ..cx
    };
    let files = included.iter().map(|inc| inc.file.clone()).collect();
    build(&cx, &raw, overrides, project_dir, opts, files)
}

fn serde_error(file: &Path, text: &str, e: serde_yaml::Error) -> UserError {
    let loc = e.location().map(|l| Location {
        file: file.to_path_buf(),
        line: l.line(),
        column: l.column(),
    });
    let mut msg = e.to_string();
    // yaml_serde appends " at line L column C"; the location is shown in front already.
    if let Some(i) = msg.find(" at line ") {
        msg.truncate(i);
    }
    let hint = msg
        .find("unknown field `")
        .and_then(|i| crate::hint::serde_unknown(&msg[i..]));
    let mut u = UserError::new(msg.clone()).located(loc, text);
    u.help = hint.or_else(|| {
        msg.contains("missing field")
            .then(|| "see pipelines/demo.yaml for a complete example".to_string())
    });
    u
}

/// The phases, in order; each takes what the one before produced.
fn build(
    cx: &Ctx<'_>,
    raw: &RawPipeline,
    overrides: &[(String, Value)],
    project_dir: &Path,
    opts: &Options,
    includes: Vec<PathBuf>,
) -> Result<Pipeline, UserError> {
    if !valid_name(&raw.name) {
        return Err(cx.at_value(
            "name",
            format!(
                "pipeline name `{}` may only use letters, digits, `_` and `-`",
                raw.name
            ),
        ));
    }
    let params = params::resolve(cx, &raw.params, overrides)?;
    let declared = declare::declare(cx, raw, &params, &opts.proposals)?;
    let sizes: Vec<(&str, &Matrix)> = declared.iter().map(|d| (d.name, &d.matrix)).collect();
    matrix::check_size(cx, &sizes, opts.max_instances)?;
    let mut expanded = expand::expand(cx, raw, &declared, &params, &opts.best)?;
    inputs::resolve(cx, &declared, &mut expanded)?;
    let stages = declared
        .into_iter()
        .zip(&expanded.ids)
        .map(|(d, ids)| StageDef {
            name: d.name.to_string(),
            kind: d.kind,
            axes: d.matrix.variables().map(str::to_string).collect(),
            instances: ids.clone().collect(),
            matrix: d.matrix,
            params: d.params,
            publish: d.publish,
            trial_of: d.trial.map(|(study, _)| study.to_string()),
        })
        .collect();
    let (stages, instances) = ordered(cx, raw, stages, expanded.instances)?;
    let pipeline = Pipeline {
        name: raw.name.clone(),
        file: cx.file.to_path_buf(),
        project_dir: project_dir.to_path_buf(),
        params,
        stages,
        instances,
        overrides: overrides.to_vec(),
        includes,
    };
    stage_checks::check_upstreams(cx, &pipeline)?;
    Ok(pipeline)
}

/// The instances renumbered in topological order, or the error naming the stage cycle.
fn ordered(
    cx: &Ctx<'_>,
    raw: &RawPipeline,
    mut stages: Vec<StageDef>,
    instances: Vec<Instance>,
) -> Result<(Vec<StageDef>, Vec<Instance>), UserError> {
    let order = topo_order(&stages, &instances).map_err(|cycle| {
        let first = &stages[cycle[0]];
        let next = &stages[cycle[1 % cycle.len()]];
        let path = raw
            .stages
            .get(&first.name)
            .and_then(|rs| rs.inputs.iter().find(|(_, v)| v.refers_to(&next.name)))
            .map(|(k, _)| format!("stages.{}.inputs.{k}", first.name))
            .unwrap_or(format!("stages.{}", first.name));
        let names: Vec<&str> = cycle
            .iter()
            .chain(cycle.first())
            .map(|&i| stages[i].name.as_str())
            .collect();
        cx.at_value(&path, format!("the stages form a cycle: {}", names.join(" -> ")))
            .help("a stage cannot depend, directly or through others, on its own output; remove one of these inputs")
    })?;
    if order.iter().enumerate().all(|(n, &old)| n == old) {
        return Ok((stages, instances));
    }
    let mut new_id = vec![0; instances.len()];
    for (n, &old) in order.iter().enumerate() {
        new_id[old] = n;
    }
    let mut slots: Vec<Option<Instance>> = instances.into_iter().map(Some).collect();
    let sorted = order
        .iter()
        .map(|&old| {
            let mut inst = slots[old].take().expect("each instance once");
            inst.id = new_id[old];
            for ids in inst.inputs.values_mut() {
                for i in ids.iter_mut() {
                    *i = new_id[*i];
                }
            }
            inst
        })
        .collect();
    for s in &mut stages {
        for i in s.instances.iter_mut() {
            *i = new_id[*i];
        }
    }
    Ok((stages, sorted))
}

#[cfg(test)]
mod tests;
