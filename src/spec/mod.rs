//! Pipeline files: YAML → raw structs (serde, unknown keys rejected) → validated
//! [`Pipeline`] (matrix expansion, interpolation, `--set` overrides, input resolution,
//! cycle check). Every problem is a [`UserError`] with file, line and column.
pub mod interp;
pub mod resources;
pub mod source_map;
mod stage_checks;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::Value;

use crate::error::{Location, UserError};
use crate::hint::did_you_mean;
use crate::names::valid_name;
use crate::stages::{self, Arity, StageKind};
use interp::Scope;
use source_map::{Pos, SourceMap};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    name: String,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    params: IndexMap<String, serde_yaml::Value>,
    /// Defaults of every stage's cluster resources.
    #[serde(default)]
    resources: resources::RawResources,
    stages: IndexMap<String, RawStage>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    kind: String,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    params: Option<serde_yaml::Value>,
    #[serde(default)]
    inputs: IndexMap<String, RawInput>,
    #[serde(default)]
    matrix: IndexMap<String, serde_yaml::Value>,
    #[serde(default)]
    threads: Option<serde_yaml::Value>,
    #[serde(default)]
    resources: resources::RawResources,
    #[serde(default)]
    publish: Option<Publish>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawInput {
    One(String),
    Many(Vec<String>),
}

/// Where a stage's artifacts are copied under `results/<pipeline file stem>/`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Publish {
    Flag(bool),
    Dir(String),
}

/// One expanded stage instance (a stage without a matrix has exactly one).
#[derive(Debug, Clone)]
pub struct Instance {
    pub id: usize,
    /// Index into [`Pipeline::stages`].
    pub stage: usize,
    /// `stage` or `stage[a=1, b=x]`.
    pub name: String,
    pub matrix: Vec<(String, Value)>,
    pub params: Value,
    /// Input name → upstream instance ids (in their stage's expansion order).
    pub inputs: BTreeMap<String, Vec<usize>>,
    pub threads: usize,
    /// What a cluster job for this instance asks for (not part of the cache key).
    pub resources: resources::Resources,
    pub local_deps: Vec<String>,
}

#[derive(Clone)]
pub struct StageDef {
    pub name: String,
    pub kind: &'static dyn StageKind,
    pub axes: Vec<String>,
    pub instances: Vec<usize>,
    /// Results sub-directory, when the stage is published.
    pub publish: Option<String>,
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
}

impl Pipeline {
    /// The `results/<stem>` directory name for this pipeline file.
    pub fn stem(&self) -> String {
        self.file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.name.clone())
    }

    pub fn find_stage(&self, name: &str) -> Option<usize> {
        self.stages.iter().position(|s| s.name == name)
    }
}

/// Context for turning positions into user errors.
struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
    map: &'a SourceMap,
}

impl Ctx<'_> {
    fn loc(&self, pos: Option<Pos>) -> Option<Location> {
        pos.map(|p| Location {
            file: self.file.to_path_buf(),
            line: p.line,
            column: p.column,
        })
    }

    fn at_key(&self, path: &str, message: impl Into<String>) -> UserError {
        UserError::new(message).located(self.loc(self.map.key(path)), self.text)
    }

    fn at_value(&self, path: &str, message: impl Into<String>) -> UserError {
        UserError::new(message).located(self.loc(self.map.value(path)), self.text)
    }
}

trait Located {
    fn located(self, loc: Option<Location>, text: &str) -> Self;
}

impl Located for UserError {
    fn located(mut self, loc: Option<Location>, text: &str) -> Self {
        self.location = loc;
        self.with_source_line(text)
    }
}

fn yaml_to_json(v: &serde_yaml::Value) -> Result<Value, String> {
    serde_json::to_value(v).map_err(|e| e.to_string())
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
    let value = yaml_to_json(&parsed).map_err(|e| UserError::new(format!("--set {k}: {e}")))?;
    Ok((k.trim().to_string(), value))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

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

/// Loads, validates and expands a pipeline file. `overrides` are `--set` pairs.
pub fn load(
    file: &Path,
    overrides: &[(String, Value)],
    project_dir: &Path,
) -> Result<Pipeline, UserError> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        UserError::new(format!("cannot read pipeline file {}: {e}", file.display()))
            .help("check the path; pipeline files usually live in pipelines/")
    })?;
    parse(file, &text, overrides, project_dir)
}

/// Like [`load`] on text already read.
pub fn parse(
    file: &Path,
    text: &str,
    overrides: &[(String, Value)],
    project_dir: &Path,
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
    let cx = Ctx {
        file,
        text,
        map: &map,
    };
    let raw: RawPipeline = serde_yaml::from_str(text).map_err(|e| serde_error(&cx, e))?;
    build(&cx, raw, overrides, project_dir)
}

fn serde_error(cx: &Ctx<'_>, e: serde_yaml::Error) -> UserError {
    let loc = e.location().map(|l| Location {
        file: cx.file.to_path_buf(),
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
    let mut u = UserError::new(msg.clone()).located(loc, cx.text);
    u.help = hint.or_else(|| {
        msg.contains("missing field")
            .then(|| "see pipelines/demo.yaml for a complete example".to_string())
    });
    u
}

fn build(
    cx: &Ctx<'_>,
    raw: RawPipeline,
    overrides: &[(String, Value)],
    project_dir: &Path,
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
    // Pipeline parameters, then --set overrides (type-checked against the defaults).
    let mut params = BTreeMap::new();
    for (k, v) in &raw.params {
        let v = yaml_to_json(v).map_err(|e| cx.at_value(&format!("params.{k}"), e))?;
        params.insert(k.clone(), v);
    }
    for (k, v) in overrides {
        let Some(old) = params.get(k) else {
            let mut u = UserError::new(format!("--set {k}: the pipeline has no parameter `{k}`"));
            u.help = Some(
                match did_you_mean(k, raw.params.keys().map(String::as_str)) {
                    Some(h) => h,
                    None => format!(
                        "parameters of {}: {}",
                        cx.file.display(),
                        raw.params.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                },
            );
            return Err(u);
        };
        if std::mem::discriminant(old) != std::mem::discriminant(v) && !old.is_null() {
            return Err(UserError::new(format!(
                "--set {k}={}: `{k}` is {} in the pipeline, got {}",
                interp::display(v),
                type_name(old),
                type_name(v)
            ))
            .help(format!("the default is {old}")));
        }
        params.insert(k.clone(), v.clone());
    }

    let mut stages_out: Vec<StageDef> = Vec::new();
    let mut instances: Vec<Instance> = Vec::new();
    let names: Vec<&str> = raw.stages.keys().map(String::as_str).collect();
    // Pass 1: kinds, matrices, instance params (inputs resolved in pass 2).
    #[allow(clippy::type_complexity)]
    let mut raw_inputs: Vec<Vec<Vec<(String, Vec<(String, InputRef)>)>>> = Vec::new();
    for (sname, rs) in &raw.stages {
        let sp = format!("stages.{sname}");
        if !valid_name(sname) {
            return Err(cx.at_key(
                &sp,
                format!("stage name `{sname}` may only use letters, digits, `_` and `-`"),
            ));
        }
        let kind = stages::lookup(&rs.kind).ok_or_else(|| {
            let mut u = cx.at_value(
                &format!("{sp}.kind"),
                format!("unknown stage kind `{}`", rs.kind),
            );
            u.help = Some(match did_you_mean(&rs.kind, stages::kind_names()) {
                Some(h) => h,
                None => format!("kinds: {}", stages::kind_names().join(", ")),
            });
            u
        })?;
        let empty = BTreeMap::new();
        let top = Scope {
            params: &params,
            matrix: &empty,
        };
        // Matrix axes: each a list (or `${param}` naming one) of scalars, or of mappings
        // that bind several variables together (a "zipped" axis: per-rate radii, say).
        let mut axes: Vec<Vec<Vec<(String, Value)>>> = Vec::new();
        let mut axis_names: Vec<String> = Vec::new();
        for (axis, v) in &rs.matrix {
            let ap = format!("{sp}.matrix.{axis}");
            if !valid_name(axis) {
                return Err(cx.at_key(
                    &ap,
                    format!("matrix axis `{axis}` may only use letters, digits, `_` and `-`"),
                ));
            }
            let v = yaml_to_json(v).map_err(|e| cx.at_value(&ap, e))?;
            let v = top.apply(&v).map_err(|(_, e)| interp_error(cx, &ap, e))?;
            // `{count: N}`: the values 1, 2, ..., N (N runs of a stage, say).
            let v = match v {
                Value::Object(m) if m.len() == 1 && m.contains_key("count") => {
                    match m["count"].as_u64().filter(|&n| (1..=100_000).contains(&n)) {
                        Some(n) => Value::Array((1..=n).map(Value::from).collect()),
                        None => {
                            return Err(cx
                                .at_value(
                                    &ap,
                                    format!(
                                        "matrix axis `{axis}`: count must be a whole number from 1 \
                                         to 100000, got {}",
                                        m["count"]
                                    ),
                                )
                                .help("e.g. `run: {count: 3}` for the values 1, 2, 3"))
                        }
                    }
                }
                other => other,
            };
            let Value::Array(values) = v else {
                return Err(cx
                    .at_value(
                        &ap,
                        format!("matrix axis `{axis}` must be a list, got {}", type_name(&v)),
                    )
                    .help("e.g. `rate: [0.2, 0.4]`, `rate: ${noise_rates}` or `run: {count: 3}`"));
            };
            if values.is_empty() {
                return Err(cx.at_value(&ap, format!("matrix axis `{axis}` is empty")));
            }
            let mut bindings = Vec::new();
            let mut names: Option<Vec<String>> = None;
            for (j, x) in values.iter().enumerate() {
                let b: Vec<(String, Value)> = match x {
                    Value::Array(_) => {
                        return Err(cx.at_value(
                            &format!("{ap}[{j}]"),
                            "matrix values must be scalars or mappings of scalars, got a list",
                        ));
                    }
                    Value::Object(m) => {
                        if let Some((k, _)) = m.iter().find(|(_, v)| v.is_array() || v.is_object())
                        {
                            return Err(cx.at_value(
                                &format!("{ap}[{j}].{k}"),
                                "values bound by a matrix mapping must be scalars",
                            ));
                        }
                        let keys: Vec<String> = m.keys().cloned().collect();
                        if let Some(first) = &names {
                            if *first != keys {
                                return Err(cx.at_value(&format!("{ap}[{j}]"), format!("every mapping of axis `{axis}` must bind the same names ({})", first.join(", "))));
                            }
                        }
                        names = Some(keys);
                        m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
                    }
                    scalar => vec![(axis.clone(), scalar.clone())],
                };
                bindings.push(b);
            }
            for name in names.unwrap_or_else(|| vec![axis.clone()]) {
                if axis_names.contains(&name) {
                    return Err(cx.at_key(&ap, format!("matrix variable `{name}` is bound twice")));
                }
                axis_names.push(name);
            }
            axes.push(bindings);
        }
        let combos = cartesian(&axes);
        let stage_index = stages_out.len();
        let params_json = match &rs.params {
            None => Value::Object(Default::default()),
            Some(p) => yaml_to_json(p).map_err(|e| cx.at_value(&format!("{sp}.params"), e))?,
        };
        let mut ids = Vec::new();
        let mut stage_inputs = Vec::new();
        let mut seen_names: BTreeMap<String, ()> = BTreeMap::new();
        for combo in combos {
            let mvals: BTreeMap<String, Value> = combo.iter().cloned().collect();
            let scope = Scope {
                params: &params,
                matrix: &mvals,
            };
            let name = if combo.is_empty() {
                sname.clone()
            } else {
                let parts: Vec<String> = combo
                    .iter()
                    .map(|(k, v)| format!("{k}={}", interp::display(v)))
                    .collect();
                format!("{sname}[{}]", parts.join(", "))
            };
            if seen_names.insert(name.clone(), ()).is_some() {
                return Err(cx
                    .at_key(
                        &format!("{sp}.matrix"),
                        format!("matrix gives the instance `{name}` twice"),
                    )
                    .help("remove the repeated value from the axis"));
            }
            let iparams = scope
                .apply(&params_json)
                .map_err(|(p, e)| interp_error(cx, &join_path(&format!("{sp}.params"), &p), e))?;
            if !iparams.is_object() {
                return Err(cx.at_value(&format!("{sp}.params"), "params must be a mapping"));
            }
            kind.check(&iparams).map_err(|e| {
                let overridden = |k: &str| overrides.iter().any(|(o, _)| o == k);
                let written = &params_json;
                stage_checks::param_error(cx, &sp, &name, kind, written, &combo, &overridden, e)
            })?;
            let threads = match &rs.threads {
                None => 1,
                Some(t) => {
                    let tv =
                        yaml_to_json(t).map_err(|e| cx.at_value(&format!("{sp}.threads"), e))?;
                    let tv = scope
                        .apply(&tv)
                        .map_err(|(_, e)| interp_error(cx, &format!("{sp}.threads"), e))?;
                    match tv.as_u64() {
                        Some(n) if n >= 1 => n as usize,
                        _ => {
                            return Err(cx.at_value(
                                &format!("{sp}.threads"),
                                format!("threads must be a whole number >= 1, got {tv}"),
                            ))
                        }
                    }
                }
            };
            let resources = instance_resources(cx, &raw.resources, &rs.resources, &sp, &scope)?;
            // Inputs: interpolate references per instance, resolve in pass 2.
            let mut refs = Vec::new();
            for (iname, rin) in &rs.inputs {
                let ip = format!("{sp}.inputs.{iname}");
                let list = match rin {
                    RawInput::One(s) => vec![s.clone()],
                    RawInput::Many(v) => v.clone(),
                };
                let mut parsed = Vec::new();
                for (j, s) in list.iter().enumerate() {
                    let item_path = if matches!(rin, RawInput::Many(_)) {
                        format!("{ip}[{j}]")
                    } else {
                        ip.clone()
                    };
                    let s = match scope
                        .string(s)
                        .map_err(|e| interp_error(cx, &item_path, e))?
                    {
                        Value::String(s) => s,
                        other => interp::display(&other),
                    };
                    let r = parse_input_ref(&s).map_err(|m| cx.at_value(&item_path, m))?;
                    parsed.push((item_path, r));
                }
                refs.push((iname.clone(), parsed));
            }
            stage_inputs.push(refs);
            let id = instances.len();
            ids.push(id);
            instances.push(Instance {
                id,
                stage: stage_index,
                name,
                matrix: combo,
                local_deps: kind.local_deps(&iparams),
                params: iparams,
                inputs: BTreeMap::new(),
                threads,
                resources,
            });
        }
        // Input names accepted by the kind.
        if let Some(decls) = kind.inputs() {
            for iname in rs.inputs.keys() {
                if !decls.iter().any(|d| d.name == iname) {
                    let mut u = cx.at_key(
                        &format!("{sp}.inputs.{iname}"),
                        format!("stage kind `{}` has no input `{iname}`", kind.name()),
                    );
                    u.help = Some(match did_you_mean(iname, decls.iter().map(|d| d.name)) {
                        Some(h) => h,
                        None if decls.is_empty() => {
                            format!("`{}` stages take no inputs", kind.name())
                        }
                        None => format!(
                            "inputs of `{}`: {}",
                            kind.name(),
                            decls.iter().map(|d| d.name).collect::<Vec<_>>().join(", ")
                        ),
                    });
                    return Err(u);
                }
            }
            for d in decls.iter().filter(|d| d.required) {
                if !rs.inputs.contains_key(d.name) {
                    return Err(cx
                        .at_key(
                            &sp,
                            format!(
                                "stage `{sname}` ({}) needs the input `{}`",
                                kind.name(),
                                d.name
                            ),
                        )
                        .help(format!("add `inputs: {{{}: <stage>}}`", d.name)));
                }
            }
        }
        let publish = match &rs.publish {
            None | Some(Publish::Flag(false)) => None,
            Some(Publish::Flag(true)) => Some(sname.clone()),
            Some(Publish::Dir(d)) => {
                let p = Path::new(d);
                if p.is_absolute()
                    || p.components()
                        .any(|c| matches!(c, std::path::Component::ParentDir))
                {
                    return Err(cx.at_value(
                        &format!("{sp}.publish"),
                        format!(
                            "publish directory `{d}` must be relative and stay inside results/"
                        ),
                    ));
                }
                Some(d.clone())
            }
        };
        raw_inputs.push(stage_inputs);
        stages_out.push(StageDef {
            name: sname.clone(),
            kind,
            axes: axis_names,
            instances: ids,
            publish,
        });
    }

    // Pass 2: resolve input references to instances.
    let mut slice_index: HashMap<usize, HashMap<(String, String), Vec<usize>>> = HashMap::new();
    for (si, stage_inputs) in raw_inputs.iter().enumerate() {
        let stage = &stages_out[si];
        for (k, refs) in stage_inputs.iter().enumerate() {
            let id = stage.instances[k];
            let mut resolved = BTreeMap::new();
            for (iname, items) in refs {
                let mut ids = Vec::new();
                for (item_path, r) in items {
                    let Some(ti) = stages_out.iter().position(|s| s.name == r.stage) else {
                        let mut u = cx.at_value(item_path, format!("input `{iname}` of stage `{}` refers to a stage `{}` that does not exist", stage.name, r.stage));
                        u.help = Some(match did_you_mean(&r.stage, names.iter().copied()) {
                            Some(h) => h,
                            None => format!("stages: {}", names.join(", ")),
                        });
                        return Err(u);
                    };
                    let target = &stages_out[ti];
                    for (key, _) in &r.slice {
                        if !target.axes.contains(key) {
                            let mut u = cx.at_value(
                                item_path,
                                format!("`{}` has no matrix axis `{key}`", target.name),
                            );
                            u.help = Some(if target.axes.is_empty() {
                                format!(
                                    "`{}` has no matrix; refer to it as `{}`",
                                    target.name, target.name
                                )
                            } else {
                                format!("axes of `{}`: {}", target.name, target.axes.join(", "))
                            });
                            return Err(u);
                        }
                    }
                    // Instances matching every slice entry, via a per-stage index (a sweep of
                    // n consumers over n producers stays linear, not quadratic).
                    let index = slice_index.entry(ti).or_insert_with(|| {
                        let mut m: HashMap<(String, String), Vec<usize>> = HashMap::new();
                        for &t in &target.instances {
                            for (a, v) in &instances[t].matrix {
                                m.entry((a.clone(), canon_text(&interp::display(v))))
                                    .or_default()
                                    .push(t);
                            }
                        }
                        m
                    });
                    let mut chosen: Vec<usize> = target.instances.clone();
                    for (key, want) in &r.slice {
                        let hits = index
                            .get(&(key.clone(), canon_text(want)))
                            .map(Vec::as_slice)
                            .unwrap_or(&[]);
                        chosen.retain(|t| hits.contains(t));
                    }
                    if chosen.is_empty() {
                        let values: Vec<String> = target
                            .instances
                            .iter()
                            .map(|&t| instances[t].name.clone())
                            .collect();
                        return Err(cx
                            .at_value(
                                item_path,
                                format!(
                                    "`{}` selects no instance of `{}`",
                                    slice_text(r),
                                    target.name
                                ),
                            )
                            .help(format!("instances: {}", values.join(", "))));
                    }
                    ids.extend(chosen);
                }
                if let Some(decl) = stage
                    .kind
                    .inputs()
                    .and_then(|d| d.iter().find(|d| d.name == iname))
                {
                    if decl.arity == Arity::One && ids.len() != 1 {
                        let ip = format!("stages.{}.inputs.{iname}", stage.name);
                        let target = &stages_out[instances[ids[0]].stage];
                        let own: BTreeMap<&str, &Value> = instances[id]
                            .matrix
                            .iter()
                            .map(|(k, v)| (k.as_str(), v))
                            .collect();
                        return Err(cx.at_value(&ip, format!("input `{iname}` of `{}` takes one artifact, but the reference selects {}", instances[id].name, ids.len()))
                            .help(stage_checks::slice_example(target, &instances, &own)));
                    }
                }
                resolved.insert(iname.clone(), ids);
            }
            instances[id].inputs = resolved;
        }
    }

    let order = crate::graph::topo_order(&stages_out, &instances).map_err(|cycle| {
        let first = &stages_out[cycle[0]];
        let next = &stages_out[cycle[1 % cycle.len()]];
        let path = raw.stages.get(&first.name).and_then(|rs| rs.inputs.iter().find(|(_, v)| refers_to(v, &next.name))).map(|(k, _)| format!("stages.{}.inputs.{k}", first.name)).unwrap_or(format!("stages.{}", first.name));
        let names: Vec<&str> = cycle.iter().chain(cycle.first()).map(|&i| stages_out[i].name.as_str()).collect();
        cx.at_value(&path, format!("the stages form a cycle: {}", names.join(" -> "))).help("a stage cannot depend, directly or through others, on its own output; remove one of these inputs")
    })?;
    // Renumber instances in topological order.
    let mut new_id = vec![0; instances.len()];
    for (n, &old) in order.iter().enumerate() {
        new_id[old] = n;
    }
    let mut sorted: Vec<Instance> = order.iter().map(|&old| instances[old].clone()).collect();
    for inst in &mut sorted {
        inst.id = new_id[inst.id];
        for ids in inst.inputs.values_mut() {
            for i in ids.iter_mut() {
                *i = new_id[*i];
            }
        }
    }
    for s in &mut stages_out {
        for i in s.instances.iter_mut() {
            *i = new_id[*i];
        }
    }
    stage_checks::check_upstreams(cx, &stages_out, &sorted)?;
    Ok(Pipeline {
        name: raw.name,
        file: cx.file.to_path_buf(),
        project_dir: project_dir.to_path_buf(),
        params,
        stages: stages_out,
        instances: sorted,
    })
}

/// One instance's resources: each key from the stage, else from the pipeline's defaults;
/// values interpolated in the instance's scope, then checked.
fn instance_resources(
    cx: &Ctx<'_>,
    top: &resources::RawResources,
    stage: &resources::RawResources,
    sp: &str,
    scope: &Scope<'_>,
) -> Result<resources::Resources, UserError> {
    type Parse = fn(&Value) -> Result<u64, String>;
    let pick = |name: &str,
                st: &Option<serde_yaml::Value>,
                tp: &Option<serde_yaml::Value>,
                parse: Parse|
     -> Result<Option<u64>, UserError> {
        let (v, path) = match (st, tp) {
            (Some(v), _) => (v, format!("{sp}.resources.{name}")),
            (None, Some(v)) => (v, format!("resources.{name}")),
            (None, None) => return Ok(None),
        };
        let v = yaml_to_json(v).map_err(|e| cx.at_value(&path, e))?;
        let v = scope
            .apply(&v)
            .map_err(|(_, e)| interp_error(cx, &path, e))?;
        parse(&v).map(Some).map_err(|m| cx.at_value(&path, m))
    };
    Ok(resources::Resources {
        memory_mib: pick(
            "memory",
            &stage.memory,
            &top.memory,
            resources::parse_memory,
        )?,
        gpus: pick("gpus", &stage.gpus, &top.gpus, resources::parse_gpus)?,
        time_s: pick("time", &stage.time, &top.time, resources::parse_time)?,
    })
}

fn refers_to(input: &RawInput, stage: &str) -> bool {
    let list: Vec<&String> = match input {
        RawInput::One(s) => vec![s],
        RawInput::Many(v) => v.iter().collect(),
    };
    list.iter()
        .any(|s| s.split('[').next().map(str::trim) == Some(stage))
}

fn slice_text(r: &InputRef) -> String {
    let parts: Vec<String> = r.slice.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{}[{}]", r.stage, parts.join(", "))
}

/// The form a matrix value and a slice value are compared in: numbers by value (`0.40`
/// and `0.4` match), everything else as text.
fn canon_text(text: &str) -> String {
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() => format!("{f:?}"),
        _ => text.to_string(),
    }
}

fn join_path(base: &str, rel: &str) -> String {
    if rel.is_empty() {
        base.to_string()
    } else if rel.starts_with('[') {
        format!("{base}{rel}")
    } else {
        format!("{base}.{rel}")
    }
}

fn interp_error(cx: &Ctx<'_>, path: &str, e: interp::InterpError) -> UserError {
    let mut u = cx.at_value(path, e.message);
    u.help = e.help;
    u
}

/// Cartesian product of the axes, first axis outermost, in declaration order; each axis
/// entry contributes its bindings.
fn cartesian(axes: &[Vec<Vec<(String, Value)>>]) -> Vec<Vec<(String, Value)>> {
    let mut out: Vec<Vec<(String, Value)>> = vec![Vec::new()];
    for entries in axes {
        out = out
            .into_iter()
            .flat_map(|prefix| {
                entries.iter().map(move |b| {
                    let mut p = prefix.clone();
                    p.extend(b.iter().cloned());
                    p
                })
            })
            .collect();
    }
    out
}

#[cfg(test)]
mod tests;
