//! The `search` stage kind: a hyper-parameter study whose trials are ordinary stage
//! instances (every trial a cache entry).
//!
//! ```yaml
//! fit:                          # one trial: any stages with `trial_of: <the study>`
//!   kind: train
//!   trial_of: tune
//!   inputs: {train: "noisy[rate=${rate}]", ...}
//!   params: {reg: regsl, D: "${D}", H: "${H}", ...}
//! tune:
//!   kind: search
//!   matrix: {rate: "${noise_rates}"}   # one study per rate
//!   params:
//!     objective: fit            # a `train` trial: its best validation accuracy
//!     # objective: {stage: score, file: metrics.json, key: acc}   # any number in a JSON file
//!     direction: maximize       # or minimize
//!     trials: 20
//!     parallel: 2               # trials proposed per batch (constant liar), run at once
//!     sampler: tpe              # tpe (default) | random | grid
//!     seed: 0
//!     prune: median             # Optuna's MedianPruner over a `train` trial's epochs
//!     # prune: {percentile: 50, startup_trials: 5, warmup_epochs: 0, interval_epochs: 1}
//!     space:
//!       D: {low: 0.5, high: 20, log: true}
//!       H: {low: 0.5, high: 20, step: 0.5}
//!       T0: {choices: [1, 2, 4]}
//!       epochs: {type: int, low: 5, high: 15}
//! ```
//!
//! The trials are proposed and run by the search driver (`crate::study`), batch after
//! batch, each proposal a pure function of the sampler, seed, space and the results of the
//! trials before its batch. This kind only summarises them once all have run: its input
//! `trials` (added by the builder, never written) is every instance of the objective stage
//! in its study, and it writes `trials.json`, `trials.csv` and `best.json`.
//!
//! Pruning (`prune:`) needs a `train` objective that passes `prune: ${prune}` on: the driver
//! binds `prune` to the pruner's reference accuracy after each epoch, computed from the
//! trials completed before the batch ([`crate::search::prune`]), and the training stops,
//! marked `pruned` in its `summary.json`, at the first epoch whose best validation
//! accuracy so far is below it. Steps are counted from 0 (epoch 1 is step 0), as an Optuna
//! objective that reports `trial.report(acc, epoch)` in `for epoch in range(E)`.
use std::path::Path;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{
    parse_params, Arity, InputArtifact, InputDecl, ParamError, StageCtx, StageError, StageKind,
    StageRunner,
};
use crate::search::{Direction, Distribution, ParamValue, Space};

pub struct Search;

/// Bump when the same inputs and params would give other files.
/// 2: trials list their epochs run and pruned trials.
const VERSION: u32 = 2;

/// The input the builder fills with the study's trials (`spec::inputs::TRIALS_INPUT`).
pub const TRIALS: &str = "trials";

const INPUTS: &[InputDecl] = &[InputDecl {
    name: TRIALS,
    arity: Arity::Many,
    required: false,
}];

/// A `train` trial's objective: the best validation accuracy, in its `summary.json`.
pub const DEFAULT_FILE: &str = "summary.json";
pub const DEFAULT_KEY: &str = "best_val_acc";

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum SamplerName {
    #[default]
    Tpe,
    Random,
    Grid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DirectionName {
    Minimize,
    Maximize,
}

impl From<DirectionName> for Direction {
    fn from(d: DirectionName) -> Direction {
        match d {
            DirectionName::Minimize => Direction::Minimize,
            DirectionName::Maximize => Direction::Maximize,
        }
    }
}

/// Which number of a trial's artifact is the objective.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Objective {
    /// The trial stage (`trial_of` this study) whose artifact holds it.
    pub stage: String,
    /// A JSON file of that artifact.
    #[serde(default = "default_file")]
    pub file: String,
    /// The number's key in it; `a.b` for a nested one.
    #[serde(default = "default_key")]
    pub key: String,
}

fn default_file() -> String {
    DEFAULT_FILE.into()
}
fn default_key() -> String {
    DEFAULT_KEY.into()
}

/// `objective: fit` is `objective: {stage: fit}`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
enum RawObjective {
    Stage(String),
    Full(Value),
}

fn objective<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Objective, D::Error> {
    use serde::de::Error;
    match RawObjective::deserialize(d)? {
        RawObjective::Stage(stage) => Ok(Objective {
            stage,
            file: default_file(),
            key: default_key(),
        }),
        RawObjective::Full(v) => Objective::deserialize(v).map_err(D::Error::custom),
    }
}

/// `prune:`: Optuna's `PercentilePruner` (`MedianPruner` at 50) over a `train` trial's
/// validation accuracy per epoch. `prune: median` is the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PruneParams {
    /// Keep the trials in the best `percentile` at each epoch (50: the median).
    #[serde(default = "d_percentile")]
    pub percentile: f64,
    /// Completed trials needed before anything is pruned (Optuna's `n_startup_trials`).
    #[serde(default = "d_startup")]
    pub startup_trials: usize,
    /// Steps (epochs − 1) never pruned at (Optuna's `n_warmup_steps`).
    #[serde(default)]
    pub warmup_epochs: u64,
    /// Check once per this many epochs (Optuna's `interval_steps`).
    #[serde(default = "d_interval")]
    pub interval_epochs: u64,
}

fn d_percentile() -> f64 {
    crate::search::prune::MEDIAN_PRUNER.percentile
}
fn d_startup() -> usize {
    crate::search::prune::MEDIAN_PRUNER.n_startup_trials
}
fn d_interval() -> u64 {
    crate::search::prune::MEDIAN_PRUNER.interval_steps
}

impl PruneParams {
    pub fn pruner(&self) -> crate::search::prune::PercentilePruner {
        crate::search::prune::PercentilePruner {
            percentile: self.percentile,
            n_startup_trials: self.startup_trials,
            n_warmup_steps: self.warmup_epochs,
            interval_steps: self.interval_epochs,
        }
    }
}

/// `prune: median` is `prune: {}`; `prune: null` (the default) prunes nothing.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
enum RawPrune {
    Name(String),
    Full(Value),
}

fn prune<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<PruneParams>, D::Error> {
    use serde::de::Error;
    match Option::<RawPrune>::deserialize(d)? {
        None => Ok(None),
        Some(RawPrune::Name(n)) if n == "median" => Ok(Some(
            PruneParams::deserialize(json!({})).map_err(D::Error::custom)?,
        )),
        Some(RawPrune::Name(n)) => Err(D::Error::custom(format!(
            "unknown pruner `{n}`: use `median`, or `{{percentile: 25}}` for a percentile pruner"
        ))),
        Some(RawPrune::Full(v)) => PruneParams::deserialize(v)
            .map(Some)
            .map_err(D::Error::custom),
    }
}

/// One dimension of the space as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Dim {
    /// `float` (the default) or `int`; a dimension with `choices` is categorical.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub ty: Option<DimType>,
    /// The lowest value (with `high`; not with `choices`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low: Option<f64>,
    /// The highest value (included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high: Option<f64>,
    /// Sample on a log scale (low > 0).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub log: bool,
    /// Only values low + k·step (an `int` dimension: 1 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<f64>,
    /// The values of a categorical dimension (any YAML values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choices: Option<Vec<Value>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DimType {
    Float,
    Int,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    /// The number a trial is scored by: the trial stage's name (`objective: fit`: its
    /// summary.json's `best_val_acc`), or `{stage, file, key}`.
    #[serde(deserialize_with = "objective")]
    pub objective: Objective,
    /// `maximize` or `minimize` the objective.
    pub direction: DirectionName,
    /// How many trials the study runs (per instance of the search stage).
    pub trials: usize,
    /// Trials proposed per batch and run at once (within `--jobs`).
    #[serde(default = "one")]
    pub parallel: usize,
    /// `tpe` (Optuna's TPE, the default), `random` or `grid` (every combination of a finite space).
    #[serde(default)]
    pub sampler: SamplerName,
    /// Seeds the sampler (the same seed proposes the same trials).
    #[serde(default)]
    pub seed: u64,
    #[serde(
        default,
        deserialize_with = "prune",
        skip_serializing_if = "Option::is_none"
    )]
    /// Stop trials early whose validation accuracy falls below the others' (a `train` trial only); none: never.
    pub prune: Option<PruneParams>,
    /// The parameters searched, by name: `{low: 0.25, high: 8, log: true}`, `{type: int,
    /// low: 1, high: 9, step: 2}` or `{choices: [a, b]}`.
    pub space: IndexMap<String, Dim>,
}

fn one() -> usize {
    1
}

/// Parses and checks the params; the space as the samplers take it.
pub fn parse(params: &Value) -> Result<(SearchParams, Space), ParamError> {
    let p: SearchParams = parse_params(params)?;
    if p.trials == 0 {
        return Err(
            ParamError::new("trials", "a study needs at least one trial").help("e.g. `trials: 20`"),
        );
    }
    if p.parallel == 0 {
        return Err(
            ParamError::new("parallel", "parallel must be at least 1").help("e.g. `parallel: 2`")
        );
    }
    if p.space.is_empty() {
        return Err(ParamError::new("space", "the space has no parameter")
            .help("e.g. `space: {D: {low: 0.5, high: 20, log: true}}`"));
    }
    if let Some(pr) = &p.prune {
        if !(0.0..=100.0).contains(&pr.percentile) {
            return Err(ParamError::new(
                "prune.percentile",
                format!("must be in [0, 100], got {}", pr.percentile),
            )
            .help("50 is the median pruner"));
        }
        if pr.interval_epochs == 0 {
            return Err(ParamError::new(
                "prune.interval_epochs",
                "must be at least 1",
            ));
        }
    }
    let mut space = Space::new();
    for (name, dim) in &p.space {
        space.insert(name.clone(), distribution(name, dim)?);
    }
    if p.sampler == SamplerName::Grid {
        let size = crate::search::grid::grid_size(&space)
            .map_err(|e| ParamError::new("sampler", e.to_string()))?;
        if p.trials > size {
            return Err(ParamError::new(
                "trials",
                format!(
                    "the grid has {size} points, fewer than `trials: {}`",
                    p.trials
                ),
            )
            .help(format!("set `trials: {size}` to run the whole grid once")));
        }
    }
    Ok((p, space))
}

/// One dimension as a sampler's [`Distribution`], checked.
fn distribution(name: &str, d: &Dim) -> Result<Distribution, ParamError> {
    let at = format!("space.{name}");
    let dist = if let Some(choices) = &d.choices {
        if d.ty.is_some() || d.low.is_some() || d.high.is_some() || d.log || d.step.is_some() {
            return Err(ParamError::new(
                &at,
                "a dimension with `choices` takes no `type`, `low`, `high`, `log` or `step`",
            )
            .help("either list the choices, or give a range"));
        }
        Distribution::Categorical {
            choices: choices.clone(),
        }
    } else {
        let (Some(low), Some(high)) = (d.low, d.high) else {
            return Err(ParamError::new(&at, "a range needs both `low` and `high`")
                .help("e.g. `{low: 0.5, high: 20}`, or `{choices: [1, 2, 4]}`"));
        };
        match d.ty.unwrap_or(DimType::Float) {
            DimType::Float => Distribution::Float {
                low,
                high,
                log: d.log,
                step: d.step,
            },
            DimType::Int => {
                let int = |v: f64, key: &str| {
                    if v.fract() == 0.0 && v.abs() < crate::search::MAX_EXACT_INT as f64 {
                        Ok(v as i64)
                    } else {
                        Err(ParamError::new(
                            format!("{at}.{key}"),
                            format!("an int dimension needs whole numbers, got {v}"),
                        ))
                    }
                };
                Distribution::Int {
                    low: int(low, "low")?,
                    high: int(high, "high")?,
                    log: d.log,
                    step: match d.step {
                        None => 1,
                        Some(s) => int(s, "step")?,
                    },
                }
            }
        }
    };
    dist.validate()
        .map_err(|e| ParamError::new(&at, e.to_string()))?;
    Ok(dist)
}

/// The value of `p` as it is bound in a trial (a categorical: the choice itself).
pub fn value_json(dist: &Distribution, p: &ParamValue) -> Value {
    dist.to_json(p).unwrap_or(Value::Null)
}

/// The objective `key` (dotted for nested objects) of `file` in the artifact at `dir`.
pub fn read_objective(dir: &Path, obj: &Objective) -> Result<f64, String> {
    let path = dir.join(&obj.file);
    let bytes = crate::cache::digest::read_regular(&path)
        .map_err(|e| format!("cannot read {}: {e}", obj.file))?;
    let v: Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("{} is not JSON: {e}", obj.file))?;
    let mut cur = &v;
    for part in obj.key.split('.') {
        cur = cur
            .get(part)
            .ok_or_else(|| format!("{} has no key `{}`", obj.file, obj.key))?;
    }
    cur.as_f64().filter(|x| x.is_finite()).ok_or_else(|| {
        format!(
            "`{}` in {} is not a finite number: {cur}",
            obj.key, obj.file
        )
    })
}

impl StageKind for Search {
    fn params_schema(&self) -> schemars::Schema {
        params_schema()
    }
    fn name(&self) -> &'static str {
        "search"
    }
    fn version(&self) -> u32 {
        VERSION
    }
    fn check(&self, params: &Value) -> Result<(), ParamError> {
        parse(params).map(|_| ())
    }
    fn inputs(&self) -> Option<&'static [InputDecl]> {
        Some(INPUTS)
    }
    fn canonical_params(&self, params: &Value) -> Value {
        super::canonical_as::<SearchParams>(params)
    }
}

/// One finished trial, as the study's artifact lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct TrialRecord {
    pub number: usize,
    pub instance: String,
    pub params: IndexMap<String, Value>,
    /// The objective (for a pruned trial, its value when it stopped: never the best).
    pub value: f64,
    /// `complete` or `pruned`.
    pub state: String,
    /// Epochs run, for a `train` trial (fewer than asked when pruned or stopped early).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<usize>,
}

/// `complete` or `pruned`, as [`TrialRecord::state`] says.
pub const COMPLETE: &str = "complete";
pub const PRUNED: &str = "pruned";

/// What a trial's `summary.json` says of how it ended (a `train` trial's; other stages
/// have none): whether it was pruned, and how many epochs it ran.
pub fn trial_end(dir: &Path) -> (bool, Option<usize>) {
    let Ok(text) = std::fs::read(dir.join(DEFAULT_FILE)) else {
        return (false, None);
    };
    let Ok(v) = serde_json::from_slice::<Value>(&text) else {
        return (false, None);
    };
    (
        v.get("pruned").and_then(Value::as_bool).unwrap_or(false),
        v.get("epochs_run")
            .and_then(Value::as_u64)
            .map(|n| n as usize),
    )
}

/// A `train` trial's validation accuracy per epoch, as Optuna steps from 0 (its
/// `history.json`); empty for other stages.
pub fn intermediate(dir: &Path) -> Vec<(u64, f64)> {
    let Ok(text) = std::fs::read(dir.join("history.json")) else {
        return Vec::new();
    };
    let Ok(Value::Array(rows)) = serde_json::from_slice::<Value>(&text) else {
        return Vec::new();
    };
    rows.iter()
        .filter_map(|r| {
            let epoch = r.get("epoch")?.as_u64()?;
            Some((epoch.checked_sub(1)?, r.get("val_acc")?.as_f64()?))
        })
        .collect()
}

impl StageRunner for Search {
    fn kind(&self) -> &'static dyn StageKind {
        &Search
    }
    fn run(&self, ctx: &StageCtx<'_>) -> Result<(), StageError> {
        let (p, space) = parse(ctx.params).map_err(StageError::from)?;
        let inputs = ctx.inputs.get(TRIALS).map(Vec::as_slice).unwrap_or(&[]);
        let mut trials = inputs
            .iter()
            .map(|a| trial_record(a, &p, &space))
            .collect::<Result<Vec<_>, _>>()?;
        trials.sort_by_key(|t| t.number);
        let Some(best) = best(&trials, p.direction.into()) else {
            return Err(StageError::user(format!(
                "study `{}` has no complete trial (every trial was pruned)",
                ctx.instance
            )));
        };
        let best = best.clone();
        write_json(&ctx.out.join("trials.json"), &json!(trials))?;
        write_json(&ctx.out.join("best.json"), &json!(best))?;
        std::fs::write(ctx.out.join("trials.csv"), trials_csv(&space, &trials))
            .map_err(|e| StageError::io("writing trials.csv", e))?;
        plots(ctx, &p, &space, &trials)?;
        ctx.log(&format!(
            "{}: {} trials, best #{} = {} with {}",
            ctx.instance,
            trials.len(),
            best.number,
            best.value,
            serde_json::to_string(&best.params).unwrap_or_default()
        ));
        Ok(())
    }
}

/// A trial's number, values and objective, from its artifact and its matrix.
fn trial_record(
    a: &InputArtifact,
    p: &SearchParams,
    space: &Space,
) -> Result<TrialRecord, StageError> {
    let number = a
        .matrix
        .get(crate::spec::trials::TRIAL_VAR)
        .and_then(Value::as_u64)
        .ok_or_else(|| StageError::internal(format!("trial {} has no number", a.instance)))?;
    let params = space
        .keys()
        .map(|k| (k.clone(), a.matrix.get(k).cloned().unwrap_or(Value::Null)))
        .collect();
    let value = read_objective(&a.path, &p.objective)
        .map_err(|e| StageError::user(format!("trial {}: {e}", a.instance)))?;
    let (pruned, epochs) = trial_end(&a.path);
    Ok(TrialRecord {
        number: number as usize,
        instance: a.instance.clone(),
        params,
        value,
        state: if pruned { PRUNED } else { COMPLETE }.into(),
        epochs,
    })
}

/// The best complete trial (the first of equals, as Optuna's `best_trial`).
pub fn best(trials: &[TrialRecord], direction: Direction) -> Option<&TrialRecord> {
    trials
        .iter()
        .filter(|t| t.state == COMPLETE)
        .fold(None, |best: Option<&TrialRecord>, t| match best {
            Some(b) if direction.sign() * t.value >= direction.sign() * b.value => Some(b),
            _ => Some(t),
        })
}

/// `objective.png`/`.svg` (each trial against its number, the best so far as a line) and
/// `param-<name>.png`/`.svg` (against each parameter; a log-scaled one in log10, a
/// categorical one by choice index).
fn plots(
    ctx: &StageCtx<'_>,
    p: &SearchParams,
    space: &Space,
    trials: &[TrialRecord],
) -> Result<(), StageError> {
    use crate::report::study_plot::ScatterFigure;
    let objective = format!("{} ({})", p.objective.key, p.objective.stage);
    let sign = Direction::from(p.direction).sign();
    let mut best = f64::NAN;
    let line: Vec<(f64, f64)> = trials
        .iter()
        .map(|t| {
            let counts = t.state == COMPLETE;
            if counts && (best.is_nan() || sign * t.value < sign * best) {
                best = t.value;
            }
            (t.number as f64, best)
        })
        .collect();
    let mut figures = vec![(
        "objective".to_string(),
        ScatterFigure {
            title: Some(ctx.instance.to_string()),
            x_label: "trial".into(),
            y_label: objective.clone(),
            points: trials.iter().map(|t| (t.number as f64, t.value)).collect(),
            line: Some(("best so far".into(), line)),
        },
    )];
    for (name, dist) in space {
        let x_label = match dist {
            Distribution::Categorical { choices } => {
                let listed: Vec<String> =
                    choices.iter().map(crate::spec::interp::display).collect();
                format!("{name} (choice: {})", listed.join(", "))
            }
            Distribution::Float { log: true, .. } | Distribution::Int { log: true, .. } => {
                format!("log10 {name}")
            }
            _ => name.clone(),
        };
        let x = |v: &Value| param_x(dist, v);
        figures.push((
            format!("param-{name}"),
            ScatterFigure {
                title: Some(ctx.instance.to_string()),
                x_label,
                y_label: objective.clone(),
                points: trials
                    .iter()
                    .filter_map(|t| Some((x(t.params.get(name)?)?, t.value)))
                    .collect(),
                line: None,
            },
        ));
    }
    for (file, fig) in figures {
        let r = crate::report::plot::render(&fig)
            .map_err(|e| StageError::internal(format!("drawing {file}: {e}")))?;
        std::fs::write(ctx.out.join(format!("{file}.png")), &r.png)
            .map_err(|e| StageError::io(format!("writing {file}.png"), e))?;
        std::fs::write(ctx.out.join(format!("{file}.svg")), &r.svg)
            .map_err(|e| StageError::io(format!("writing {file}.svg"), e))?;
    }
    Ok(())
}

/// Where a parameter's value goes on its plot's x axis.
fn param_x(dist: &Distribution, v: &Value) -> Option<f64> {
    match dist {
        Distribution::Categorical { choices } => {
            choices.iter().position(|c| c == v).map(|i| i as f64)
        }
        Distribution::Float { log: true, .. } | Distribution::Int { log: true, .. } => {
            v.as_f64().filter(|x| *x > 0.0).map(f64::log10)
        }
        _ => v.as_f64(),
    }
}

fn trials_csv(space: &Space, trials: &[TrialRecord]) -> String {
    let mut out = String::from("number,value");
    for k in space.keys() {
        out.push(',');
        out.push_str(k);
    }
    out.push_str(",state,epochs,instance\n");
    for t in trials {
        out.push_str(&format!("{},{}", t.number, t.value));
        for v in t.params.values() {
            out.push(',');
            out.push_str(&csv_field(&crate::spec::interp::display(v)));
        }
        let epochs = t.epochs.map(|e| e.to_string()).unwrap_or_default();
        out.push_str(&format!(
            ",{},{epochs},{}\n",
            t.state,
            csv_field(&t.instance)
        ));
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn write_json(path: &Path, v: &Value) -> Result<(), StageError> {
    let text = serde_json::to_vec_pretty(v).expect("JSON values serialise");
    std::fs::write(path, text).map_err(|e| StageError::io(format!("writing {}", path.display()), e))
}

/// The JSON schema of this kind's `params:` (what the validator deserialises), for the
/// parameter reference (`rst params`).
pub fn params_schema() -> schemars::Schema {
    schemars::schema_for!(SearchParams)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(extra: Value) -> Value {
        let mut p = json!({
            "objective": "fit",
            "direction": "maximize",
            "trials": 4,
            "space": {"D": {"low": 0.5, "high": 20, "log": true}, "T0": {"choices": [1, 2]}},
        });
        for (k, v) in extra.as_object().unwrap() {
            p[k] = v.clone();
        }
        p
    }

    #[test]
    fn objective_shorthand_and_defaults() {
        let (p, space) = parse(&params(json!({}))).unwrap();
        assert_eq!(
            p.objective,
            Objective {
                stage: "fit".into(),
                file: DEFAULT_FILE.into(),
                key: DEFAULT_KEY.into()
            }
        );
        assert_eq!((p.parallel, p.sampler, p.seed), (1, SamplerName::Tpe, 0));
        assert_eq!(space.len(), 2);
        let canon = Search.canonical_params(&params(json!({})));
        assert_eq!(canon["objective"]["key"], "best_val_acc");
        assert_eq!(canon["parallel"], 1);
    }

    #[test]
    fn bad_spaces_name_the_dimension() {
        let err = |extra: Value| parse(&params(extra)).unwrap_err();
        let e = err(json!({"space": {"D": {"low": 2, "high": 1}}}));
        assert_eq!(e.path, "space.D");
        assert!(e.message.contains("above high"), "{e:?}");
        let e = err(json!({"space": {"D": {"low": 0, "high": 1, "log": true}}}));
        assert!(e.message.contains("low > 0"), "{e:?}");
        let e = err(json!({"space": {"D": {"choices": []}}}));
        assert!(e.message.contains("at least one choice"), "{e:?}");
        let e = err(json!({"space": {"D": {"low": 1}}}));
        assert!(e.message.contains("both `low` and `high`"), "{e:?}");
        let e = err(json!({"space": {"n": {"type": "int", "low": 1.5, "high": 4}}}));
        assert_eq!(e.path, "space.n.low");
        let e = err(json!({"sampler": "tpee"}));
        assert_eq!(e.path, "sampler");
        let e = err(json!({"trials": 0}));
        assert_eq!(e.path, "trials");
        let e = err(json!({"space": {}}));
        assert_eq!(e.path, "space");
        let e = err(json!({"sampler": "grid"}));
        assert!(e.message.contains("continuous"), "{e:?}");
        let e = err(json!({"sampler": "grid", "trials": 7,
            "space": {"T0": {"choices": [1, 2, 3]}, "n": {"type": "int", "low": 1, "high": 2}}}));
        assert!(e.message.contains("6 points"), "{e:?}");
    }

    #[test]
    fn prune_shorthand_defaults_and_errors() {
        let (p, _) = parse(&params(json!({}))).unwrap();
        assert_eq!(p.prune, None);
        let (p, _) = parse(&params(json!({"prune": "median"}))).unwrap();
        assert_eq!(
            p.prune.unwrap().pruner(),
            crate::search::prune::MEDIAN_PRUNER
        );
        let (p, _) = parse(&params(
            json!({"prune": {"startup_trials": 2, "warmup_epochs": 1}}),
        ))
        .unwrap();
        let pr = p.prune.unwrap();
        assert_eq!(
            (pr.startup_trials, pr.warmup_epochs, pr.percentile),
            (2, 1, 50.0)
        );
        // Canonical params spell the pruner out, and leave it out when there is none.
        let canon = Search.canonical_params(&params(json!({"prune": "median"})));
        assert_eq!(canon["prune"]["startup_trials"], 5);
        assert!(Search
            .canonical_params(&params(json!({})))
            .get("prune")
            .is_none());
        let err = |extra| parse(&params(extra)).unwrap_err();
        assert!(err(json!({"prune": "hyperband"}))
            .message
            .contains("unknown pruner"));
        assert_eq!(
            err(json!({"prune": {"percentile": 120}})).path,
            "prune.percentile"
        );
        assert_eq!(
            err(json!({"prune": {"interval_epochs": 0}})).path,
            "prune.interval_epochs"
        );
    }

    #[test]
    fn best_is_the_first_of_equals_in_the_direction() {
        let t = |number, value| TrialRecord {
            number,
            instance: format!("fit[trial={number}]"),
            params: IndexMap::new(),
            value,
            state: COMPLETE.into(),
            epochs: None,
        };
        let mut trials = vec![t(0, 0.5), t(1, 0.9), t(2, 0.9), t(3, 0.1)];
        assert_eq!(best(&trials, Direction::Maximize).unwrap().number, 1);
        assert_eq!(best(&trials, Direction::Minimize).unwrap().number, 3);
        assert!(best(&[], Direction::Minimize).is_none());
        // A pruned trial is never the best, whatever its value.
        trials[3].state = PRUNED.into();
        assert_eq!(best(&trials, Direction::Minimize).unwrap().number, 0);
    }

    #[test]
    fn objectives_are_read_by_dotted_key() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("m.json"), r#"{"a": {"b": 0.25}, "s": "x"}"#).unwrap();
        let obj = |key: &str| Objective {
            stage: "s".into(),
            file: "m.json".into(),
            key: key.into(),
        };
        assert_eq!(read_objective(d.path(), &obj("a.b")), Ok(0.25));
        assert!(read_objective(d.path(), &obj("a.c"))
            .unwrap_err()
            .contains("no key"));
        assert!(read_objective(d.path(), &obj("s"))
            .unwrap_err()
            .contains("not a finite number"));
    }
}
