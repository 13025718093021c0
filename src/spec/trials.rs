//! Trial stages: `trial_of: <search stage>` makes a stage one step of a trial of that
//! study. Its matrix is not written but proposed: one zipped axis whose entries are the
//! trials proposed so far for each of the study's instances, binding the study's own matrix
//! variables, `trial` (the trial's number in its study) and every variable of the study's
//! `space`. Only the study's variables and `trial` name an instance
//! (`fit[rate=0.4, trial=3]`); the proposed values are in its params, hence in its key, so
//! a trial proposed twice is computed once.
//!
//! A plain load (`rst check`, `rst graph`) has no proposals: trial stages then have no
//! instances. The search driver (`crate::study`) loads the pipeline again with each new
//! batch of proposals ([`Proposals`]).
use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::ctx::Ctx;
use super::matrix::{self, Axis, Matrix};
use super::params::Params;
use super::raw::{RawPipeline, RawStage};
use crate::error::UserError;
use crate::hint::did_you_mean;

/// The variable that numbers the trials of a study (0, 1, ...).
pub const TRIAL_VAR: &str = "trial";
/// The variable a trial stage passes to `train` as `prune: ${prune}`: the study pruner's
/// reference accuracy after each epoch, or null when nothing is pruned
/// (`stages::search`).
pub const PRUNE_VAR: &str = "prune";
/// The key of the trial axis in a trial stage's matrix.
const TRIAL_AXIS: &str = "trials";

/// One proposed trial of one instance of a study.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialRow {
    /// The study instance's matrix bindings (e.g. `rate = 0.4`), in its order.
    pub study: Vec<(Arc<str>, Value)>,
    /// The trial's number in its study.
    pub trial: usize,
    /// The proposed value of every variable of the space, in the space's order.
    pub values: Vec<(Arc<str>, Value)>,
    /// What [`PRUNE_VAR`] binds: the same for every trial of a batch.
    pub prune: Value,
}

/// The trials proposed so far, by search stage name, in proposal order.
pub type Proposals = BTreeMap<String, Vec<TrialRow>>;

/// The names a study's `space:` binds, in order, as written (before any check: the
/// search kind checks the space itself). Empty when there is no mapping to read.
pub(super) fn space_names(study: &RawStage) -> Vec<String> {
    study
        .params
        .as_ref()
        .and_then(|p| p.get("space"))
        .and_then(|s| s.as_mapping())
        .map(|m| {
            m.keys()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The matrix of trial stage `name` (`trial_of: study`), and how many of its variables
/// (the study's, then `trial`) name an instance.
pub(super) fn matrix(
    cx: &Ctx<'_>,
    raw: &RawPipeline,
    name: &str,
    rs: &RawStage,
    study: &str,
    params: &Params,
    proposals: &Proposals,
) -> Result<(Matrix, usize), UserError> {
    let sp = format!("stages.{name}");
    if !rs.matrix.is_empty() {
        return Err(cx
            .at_key(
                &format!("{sp}.matrix"),
                format!("`{name}` is a trial of `{study}` and cannot have its own matrix"),
            )
            .help(format!(
                "remove `matrix:`: a trial binds the variables of `{study}`'s matrix, \
                 `{TRIAL_VAR}` and those of its `space`"
            )));
    }
    let Some(srs) = raw.stages.get(study) else {
        let mut u = cx.at_value(
            &format!("{sp}.trial_of"),
            format!("`{name}` is a trial of `{study}`, which is not a stage of this pipeline"),
        );
        u.help = did_you_mean(study, raw.stages.keys().map(String::as_str));
        return Err(u);
    };
    if srs.kind != "search" {
        return Err(cx
            .at_value(
                &format!("{sp}.trial_of"),
                format!(
                    "`{name}` is a trial of `{study}`, a `{}` stage: trials belong to a `search` stage",
                    srs.kind
                ),
            )
            .help("name the `kind: search` stage whose study this stage is a trial of"));
    }
    let outer = matrix::parse(cx, study, &srs.matrix, params)?;
    let space = space_names(srs);
    let mut names: Vec<Arc<str>> = outer.variables().map(Arc::from).collect();
    let named = names.len() + 1;
    names.push(Arc::from(TRIAL_VAR));
    names.push(Arc::from(PRUNE_VAR));
    for v in &space {
        if names.iter().any(|n| **n == **v) {
            return Err(cx
                .at_key(
                    &format!("stages.{study}.params.space.{v}"),
                    format!(
                        "the space variable `{v}` of `{study}` is also a matrix variable of it \
                         (or `{TRIAL_VAR}` or `{PRUNE_VAR}`, which a trial binds)"
                    ),
                )
                .help("rename the space variable"));
        }
        names.push(Arc::from(v.as_str()));
    }
    let entries = proposals
        .get(study)
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    let mut e: Vec<Value> = r.study.iter().map(|(_, v)| v.clone()).collect();
                    e.push(Value::from(r.trial));
                    e.push(r.prune.clone());
                    e.extend(r.values.iter().map(|(_, v)| v.clone()));
                    e
                })
                .collect()
        })
        .unwrap_or_default();
    let matrix = Matrix {
        axes: vec![Axis::zipped(TRIAL_AXIS, names, entries)],
    };
    Ok((matrix, named))
}

/// Trial stages are read only by trial stages of the same study and by the study itself
/// (whose `trials` input the builder adds): a plain load has no trials, and what a later
/// stage needs of a study is its artifact.
pub(super) fn check_references(cx: &Ctx<'_>, raw: &RawPipeline) -> Result<(), UserError> {
    check_space_used(cx, raw)?;
    check_prune(cx, raw)?;
    for (name, rs) in &raw.stages {
        for (iname, rin) in &rs.inputs {
            for (tname, trs) in &raw.stages {
                let Some(study) = &trs.trial_of else { continue };
                if rs.trial_of.as_ref() == Some(study) || !rin.refers_to(tname) {
                    continue;
                }
                return Err(cx
                    .at_value(
                        &format!("stages.{name}.inputs.{iname}"),
                        format!(
                            "`{name}` reads `{tname}`, a trial of `{study}`: only trials of \
                             `{study}` can read it"
                        ),
                    )
                    .help(format!(
                        "read the study instead (`{study}`: its artifact holds every trial and \
                         the best one), or make `{name}` a trial too (`trial_of: {study}`)"
                    )));
            }
        }
    }
    Ok(())
}

/// The search stage's `objective` stage, as written: `objective: fit` or
/// `objective: {stage: fit, ...}`.
pub fn objective_stage(params: &Value) -> Option<&str> {
    match params.get("objective")? {
        Value::String(s) => Some(s),
        Value::Object(m) => m.get("stage")?.as_str(),
        _ => None,
    }
}

/// Every variable of a study's space is used by one of its trial stages (in `params`,
/// `inputs` or `threads`): one that is not would make every proposal of it the same stage.
fn check_space_used(cx: &Ctx<'_>, raw: &RawPipeline) -> Result<(), UserError> {
    for (study, srs) in raw.stages.iter().filter(|(_, s)| s.kind == "search") {
        let trials: Vec<(&String, String)> = raw
            .stages
            .iter()
            .filter(|(_, t)| t.trial_of.as_deref() == Some(study.as_str()))
            .map(|(n, t)| (n, uses_text(t)))
            .collect();
        if trials.is_empty() {
            continue; // the objective check says what is missing
        }
        for v in space_names(srs) {
            let used = format!("${{{v}}}");
            if !trials.iter().any(|(_, text)| text.contains(&used)) {
                let names: Vec<&str> = trials.iter().map(|(n, _)| n.as_str()).collect();
                return Err(cx
                    .at_key(
                        &format!("stages.{study}.params.space.{v}"),
                        format!(
                            "the space variable `{v}` of `{study}` is used by none of its trial \
                             stages ({})",
                            names.join(", ")
                        ),
                    )
                    .help(format!(
                        "pass it to a trial stage (e.g. `params: {{{v}: \"${{{v}}}\"}}`), or \
                         remove it from the space"
                    )));
            }
        }
    }
    Ok(())
}

/// A study with `prune:` has a `train` objective that passes `prune: ${prune}` on, and
/// maximises (what is pruned on is the validation accuracy per epoch).
fn check_prune(cx: &Ctx<'_>, raw: &RawPipeline) -> Result<(), UserError> {
    for (study, srs) in raw.stages.iter().filter(|(_, s)| s.kind == "search") {
        let Some(params) = &srs.params else { continue };
        if params.get("prune").is_none_or(|p| p.is_null()) {
            continue;
        }
        let at = format!("stages.{study}.params.prune");
        let json = serde_json::to_value(params).unwrap_or_default();
        let Some((name, trs)) = objective_stage(&json).and_then(|o| raw.stages.get_key_value(o))
        else {
            continue; // the objective check says what is missing
        };
        if trs.kind != "train" {
            return Err(cx
                .at_key(
                    &at,
                    format!(
                        "`{study}` prunes, but its objective `{name}` is a `{}` stage: pruning \
                         stops a `train` trial after an epoch",
                        trs.kind
                    ),
                )
                .help("remove `prune:`, or make the objective a `train` trial"));
        }
        if !uses_text(trs).contains(&format!("${{{PRUNE_VAR}}}")) {
            return Err(cx
                .at_key(
                    &at,
                    format!(
                        "`{study}` prunes, but its objective `{name}` does not take the \
                         pruner's references"
                    ),
                )
                .help(format!(
                    "add `{PRUNE_VAR}: ${{{PRUNE_VAR}}}` to the params of `{name}`"
                )));
        }
        let direction = params.get("direction").and_then(|d| d.as_str());
        if direction != Some("maximize") {
            return Err(cx
                .at_key(
                    &at,
                    format!(
                        "`{study}` prunes on validation accuracy, which it must maximise \
                         (direction is {})",
                        direction.unwrap_or("not set")
                    ),
                )
                .help("set `direction: maximize`, or remove `prune:`"));
        }
    }
    Ok(())
}

/// The parts of a stage where it can use a variable, as text.
fn uses_text(rs: &RawStage) -> String {
    let mut text = String::new();
    if let Some(p) = &rs.params {
        text.push_str(&serde_yaml::to_string(p).unwrap_or_default());
    }
    for rin in rs.inputs.values() {
        for (_, s) in rin.items("") {
            text.push_str(s);
            text.push('\n');
        }
    }
    if let Some(t) = &rs.threads {
        text.push_str(&serde_yaml::to_string(t).unwrap_or_default());
    }
    text
}
