//! Phase 4 of building: every input reference resolved to the instances it selects (a
//! slice is matched on the target's matrix axes, not by scanning its instances).
use std::collections::BTreeMap;

use super::ctx::Ctx;
use super::declare::Declared;
use super::expand::{Expanded, Refs, StageRefs};
use super::InputRef;
use crate::error::UserError;
use crate::hint::did_you_mean;
use crate::stages::Arity;

/// Fills `inputs` of every instance in `ex`.
pub(super) fn resolve(
    cx: &Ctx<'_>,
    stages: &[Declared<'_>],
    ex: &mut Expanded,
) -> Result<(), UserError> {
    for si in 0..stages.len() {
        let range = ex.ids[si].clone();
        match &ex.refs[si] {
            StageRefs::Shared(refs) => {
                let inputs = resolve_instance(cx, stages, ex, si, range.start, refs)?;
                for id in range {
                    ex.instances[id].inputs = inputs.clone();
                }
            }
            StageRefs::PerInstance(all) => {
                for (k, refs) in all.iter().enumerate() {
                    let inputs = resolve_instance(cx, stages, ex, si, range.start + k, refs)?;
                    ex.instances[range.start + k].inputs = inputs;
                }
            }
        }
        if stages[si].kind.name() == "search" {
            resolve_trials(cx, stages, ex, si)?;
        }
    }
    for &(id, (ti, k)) in &ex.best_of {
        let study = ex.ids[ti].start + k;
        ex.instances[id]
            .inputs
            .insert(super::BEST_INPUT.to_string(), vec![study]);
    }
    Ok(())
}

/// The name under which a study reads its trials (the instances of its objective stage).
pub const TRIALS_INPUT: &str = "trials";

/// A study's `trials` input: the proposed trials of its objective stage that belong to
/// each of its instances (their leading variables are the instance's matrix values).
fn resolve_trials(
    cx: &Ctx<'_>,
    stages: &[Declared<'_>],
    ex: &mut Expanded,
    si: usize,
) -> Result<(), UserError> {
    let d = &stages[si];
    let pp = format!("stages.{}.params.objective", d.name);
    let Some(obj) = super::trials::objective_stage(&d.params) else {
        return Err(cx
            .at_key(
                &format!("stages.{}.params", d.name),
                format!("search stage `{}` has no `objective`", d.name),
            )
            .help("name the trial stage whose result is the objective: `objective: <stage>`"));
    };
    let Some(ti) = stages
        .iter()
        .position(|t| t.name == obj && t.trial.is_some_and(|(s, _)| s == d.name))
    else {
        let trials: Vec<&str> = stages
            .iter()
            .filter(|t| t.trial.is_some_and(|(s, _)| s == d.name))
            .map(|t| t.name)
            .collect();
        let mut u = cx.at_value(
            &pp,
            format!(
                "the objective `{obj}` of `{}` is not one of its trial stages",
                d.name
            ),
        );
        u.help = Some(if trials.is_empty() {
            format!(
                "declare the stages of a trial with `trial_of: {}`, and name the one whose                  result is the objective",
                d.name
            )
        } else {
            did_you_mean(obj, trials.iter().copied())
                .unwrap_or_else(|| format!("trial stages of `{}`: {}", d.name, trials.join(", ")))
        });
        return Err(u);
    };
    let k = d.matrix.variables().count();
    for id in ex.ids[si].clone() {
        let own: Vec<&serde_json::Value> = ex.instances[id].matrix.iter().map(|(_, v)| v).collect();
        let trials: Vec<usize> = ex.ids[ti]
            .clone()
            .filter(|&t| {
                let m = &ex.instances[t].matrix;
                m.len() > k && m[..k].iter().map(|(_, v)| v).eq(own.iter().copied())
            })
            .collect();
        ex.instances[id]
            .inputs
            .insert(TRIALS_INPUT.to_string(), trials);
    }
    Ok(())
}

/// The inputs of instance `id` of stage `si`, from its references.
fn resolve_instance(
    cx: &Ctx<'_>,
    stages: &[Declared<'_>],
    ex: &Expanded,
    si: usize,
    id: usize,
    refs: &Refs,
) -> Result<BTreeMap<String, Vec<usize>>, UserError> {
    let d = &stages[si];
    let mut resolved = BTreeMap::new();
    for ((iname, rin), items) in d.raw.inputs.iter().zip(refs) {
        let ip = format!("stages.{}.inputs.{iname}", d.name);
        let mut ids = Vec::new();
        for ((item_path, _), r) in rin.items(&ip).zip(items) {
            ids.extend(select(cx, stages, ex, d.name, iname, &item_path, r)?);
        }
        if let Some(decl) = d
            .kind
            .inputs()
            .and_then(|ds| ds.iter().find(|x| x.name == iname))
        {
            if decl.arity == Arity::One && ids.len() != 1 {
                let example = items
                    .first()
                    .and_then(|r| {
                        // The producer's axis that the consumer's own matrix binds (the
                        // usual sweep: `${axis}`), else its first one.
                        let t = stages.iter().find(|t| t.name == r.stage)?;
                        let own = &ex.instances[id].matrix;
                        let bound = t
                            .matrix
                            .variables()
                            .find(|v| own.iter().any(|(k, _)| &**k == *v));
                        Some(match bound {
                            Some(v) => format!("`{}[{v}=${{{v}}}]`", t.name),
                            None => format!("`{}[{}=...]`", t.name, t.matrix.variables().next()?),
                        })
                    })
                    .unwrap_or_else(|| "`stage[axis=value]`".to_string());
                return Err(cx
                    .at_value(
                        &ip,
                        format!(
                            "input `{iname}` of `{}` takes one artifact, but the reference selects {}",
                            ex.instances[id].name,
                            ids.len()
                        ),
                    )
                    .help(format!("pick one instance with a slice, e.g. {example}")));
            }
        }
        resolved.insert(iname.clone(), ids);
    }
    Ok(resolved)
}

/// The instances (in their stage's expansion order) one reference selects.
fn select(
    cx: &Ctx<'_>,
    stages: &[Declared<'_>],
    ex: &Expanded,
    consumer: &str,
    iname: &str,
    item_path: &str,
    r: &InputRef,
) -> Result<Vec<usize>, UserError> {
    let Some(ti) = stages.iter().position(|s| s.name == r.stage) else {
        let names = stages.iter().map(|s| s.name);
        let mut u = cx.at_value(
            item_path,
            format!(
                "input `{iname}` of stage `{consumer}` refers to a stage `{}` that does not exist",
                r.stage
            ),
        );
        u.help = Some(match did_you_mean(&r.stage, names.clone()) {
            Some(h) => h,
            None => format!("stages: {}", names.collect::<Vec<_>>().join(", ")),
        });
        return Err(u);
    };
    let target = &stages[ti];
    let first = ex.ids[ti].start;
    let chosen = target.matrix.select(&r.slice).map_err(|key| {
        let mut u = cx.at_value(
            item_path,
            format!("`{}` has no matrix axis `{key}`", target.name),
        );
        let axes: Vec<&str> = target.matrix.variables().collect();
        u.help = Some(if axes.is_empty() {
            format!(
                "`{}` has no matrix; refer to it as `{}`",
                target.name, target.name
            )
        } else {
            format!("axes of `{}`: {}", target.name, axes.join(", "))
        });
        u
    })?;
    // A whole stage with no instance (switched off: `matrix: {rate: ${tune_rates}}` with
    // `tune_rates: []`) selects nothing; a slice that selects nothing is a mistake.
    if chosen.is_empty() && !(r.slice.is_empty() && ex.ids[ti].is_empty()) {
        return Err(cx
            .at_value(
                item_path,
                format!(
                    "`{}` selects no instance of `{}`",
                    slice_text(r),
                    target.name
                ),
            )
            .help(format!(
                "instances: {}",
                instance_list(ex.ids[ti].clone().map(|i| ex.instances[i].name.as_str()))
            )));
    }
    Ok(chosen.into_iter().map(|k| first + k).collect())
}

/// Names for a help line: all of a few, the first ones of many.
pub(super) fn instance_list<'a>(names: impl ExactSizeIterator<Item = &'a str>) -> String {
    const SHOWN: usize = 20;
    let n = names.len();
    let mut s: Vec<&str> = names.take(SHOWN).collect();
    let more;
    if n > SHOWN {
        more = format!("... ({} more)", n - SHOWN);
        s.push(&more);
    }
    s.join(", ")
}

pub(super) fn slice_text(r: &InputRef) -> String {
    let parts: Vec<String> = r.slice.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{}[{}]", r.stage, parts.join(", "))
}
