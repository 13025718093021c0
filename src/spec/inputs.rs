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
    if chosen.is_empty() {
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
