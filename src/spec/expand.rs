//! Phase 3 of building: each declared stage's instances, one matrix combination at a time:
//! instance name, interpolated params (checked by the kind), threads, resources and the
//! input references (interpolated and parsed; resolved to instances in the next phase).
use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::best::{self, BestValues};
use super::ctx::{join_path, Ctx};
use super::declare::Declared;
use super::interp::{self, Scope};
use super::params::Params;
use super::raw::RawPipeline;
use super::{parse_input_ref, resources, InputRef, Instance};
use crate::error::UserError;

/// Per input of a stage (in `inputs:` order), the references it lists.
pub(super) type Refs = Vec<Vec<InputRef>>;

/// A stage's input references: the same for every instance when they name no variable
/// (kept once), else one set per instance.
pub(super) enum StageRefs {
    Shared(Refs),
    PerInstance(Vec<Refs>),
}

/// Every stage's instances (numbered in file order; inputs still empty) and references.
pub(super) struct Expanded {
    pub instances: Vec<Instance>,
    /// Per stage, its instances' ids (consecutive).
    pub ids: Vec<std::ops::Range<usize>>,
    pub refs: Vec<StageRefs>,
    /// Instances with `best:`: (instance id, (study stage, position of the study)).
    pub best_of: Vec<(usize, (usize, usize))>,
}

pub(super) fn expand(
    cx: &Ctx<'_>,
    raw: &RawPipeline,
    stages: &[Declared<'_>],
    params: &Params,
    best: &BestValues,
) -> Result<Expanded, UserError> {
    let total: u64 = stages.iter().map(|d| d.matrix.size()).sum();
    let mut out = Expanded {
        instances: Vec::with_capacity(total as usize),
        ids: Vec::with_capacity(stages.len()),
        refs: Vec::with_capacity(stages.len()),
        best_of: Vec::new(),
    };
    for si in 0..stages.len() {
        let first = out.instances.len();
        let at = StageAt {
            stages,
            si,
            params,
            best,
        };
        let refs = expand_stage(cx, raw, &at, &mut out.instances, &mut out.best_of)?;
        out.ids.push(first..out.instances.len());
        out.refs.push(refs);
    }
    Ok(out)
}

/// The stage being expanded, and what its instances may refer to.
struct StageAt<'a, 'r> {
    stages: &'a [Declared<'r>],
    si: usize,
    params: &'a Params,
    best: &'a BestValues,
}

/// The instances of stage `at.si`, appended to `instances`.
fn expand_stage(
    cx: &Ctx<'_>,
    raw: &RawPipeline,
    at: &StageAt<'_, '_>,
    instances: &mut Vec<Instance>,
    best_of: &mut Vec<(usize, (usize, usize))>,
) -> Result<StageRefs, UserError> {
    let (si, d, params) = (at.si, &at.stages[at.si], at.params);
    let sp = format!("stages.{}", d.name);
    // A trial's proposed values are in its params, not its name.
    let named = |b: &[(Arc<str>, Value)]| b.len().min(d.trial.map_or(usize::MAX, |t| t.1));
    if let Some(at) = d.matrix.first_repeat() {
        let bindings = d.matrix.bindings(&at);
        let name = instance_name(d.name, &bindings[..named(&bindings)]);
        return Err(cx
            .at_key(
                &format!("{sp}.matrix"),
                format!("matrix gives the instance `{name}` twice"),
            )
            .help("remove the repeated value from the axis"));
    }
    let threads_json = match &d.raw.threads {
        None => None,
        Some(t) => Some(cx.json(&format!("{sp}.threads"), t)?),
    };
    let shared = !d
        .raw
        .inputs
        .values()
        .any(|rin| rin.items("").any(|(_, s)| s.contains('$')));
    let mut per_instance = Vec::new();
    let mut shared_refs = None;
    for combo in d.matrix.combinations() {
        let bindings = d.matrix.bindings(&combo);
        let name = instance_name(d.name, &bindings[..named(&bindings)]);
        let mut mvals: BTreeMap<String, Value> = bindings
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let mut best_pending = false;
        let mut best_values = Vec::new();
        if let Some(reference) = &d.raw.best {
            let scope = Scope {
                params,
                matrix: (&mvals).into(),
            };
            let bound = best::bind(cx, &sp, reference, at.stages, params, &scope, at.best)?;
            for (k, v) in &bound.values {
                if mvals.insert(k.to_string(), v.clone()).is_some() {
                    return Err(cx
                        .at_value(
                            &format!("{sp}.best"),
                            format!("`{k}` is both a matrix variable of `{}` and a variable of the study's space", d.name),
                        )
                        .help("rename one of them"));
                }
            }
            best_pending = bound.pending;
            best_values = bound.values;
            best_of.push((instances.len(), bound.study));
        }
        let scope = Scope {
            params,
            matrix: (&mvals).into(),
        };
        let iparams = instance_params(cx, &sp, d, &name, &bindings, &scope)?;
        let threads = match &threads_json {
            None => 1,
            Some(t) => threads(cx, &sp, &scope, t)?,
        };
        let resources = resources::instance(cx, &raw.resources, &d.raw.resources, &sp, &scope)?;
        if !shared || shared_refs.is_none() {
            let refs = instance_refs(cx, &sp, d, &scope)?;
            if shared {
                shared_refs = Some(refs);
            } else {
                per_instance.push(refs);
            }
        }
        instances.push(Instance {
            id: instances.len(),
            stage: si,
            name,
            matrix: bindings,
            local_deps: d.kind.local_deps(&iparams),
            inputs: BTreeMap::new(),
            threads,
            numerics: d.raw.numerics.or(raw.numerics).unwrap_or_default(),
            resources,
            best: best_values,
            best_pending,
        });
    }
    Ok(match shared_refs {
        Some(r) => StageRefs::Shared(r),
        None => StageRefs::PerInstance(per_instance),
    })
}

/// `stage` or `stage[a=1, b=x]`.
pub fn instance_name(stage: &str, bindings: &[(Arc<str>, Value)]) -> String {
    if bindings.is_empty() {
        return stage.to_string();
    }
    // Written into one string: a sweep names a million instances.
    use std::fmt::Write;
    let mut name = String::with_capacity(stage.len() + 16 * bindings.len());
    name.push_str(stage);
    for (i, (k, v)) in bindings.iter().enumerate() {
        name.push(if i == 0 { '[' } else { ',' });
        if i > 0 {
            name.push(' ');
        }
        name.push_str(k);
        name.push('=');
        match v {
            Value::String(s) => name.push_str(s),
            Value::Null => name.push_str("null"),
            other => {
                let _ = write!(name, "{other}");
            }
        }
    }
    name.push(']');
    name.shrink_to_fit();
    name
}

/// The stage's `params:` interpolated for one instance and checked by its kind.
fn instance_params(
    cx: &Ctx<'_>,
    sp: &str,
    d: &Declared<'_>,
    name: &str,
    bindings: &[(Arc<str>, Value)],
    scope: &Scope<'_>,
) -> Result<Value, UserError> {
    let pp = format!("{sp}.params");
    let iparams = scope
        .apply(&d.params)
        .map_err(|(p, e)| cx.interp(&join_path(&pp, &p), e))?;
    if !iparams.is_object() {
        return Err(cx.at_value(&pp, "params must be a mapping"));
    }
    d.kind.check(&iparams).map_err(|e| {
        let overridden = |k: &str| cx.overrides.iter().any(|(o, _)| o == k);
        super::stage_checks::param_error(cx, sp, name, d.kind, &d.params, bindings, &overridden, e)
    })?;
    Ok(iparams)
}

fn threads(cx: &Ctx<'_>, sp: &str, scope: &Scope<'_>, t: &Value) -> Result<usize, UserError> {
    let tp = format!("{sp}.threads");
    let tv = scope.apply(t).map_err(|(_, e)| cx.interp(&tp, e))?;
    match tv.as_u64() {
        Some(n) if n >= 1 => Ok(n as usize),
        _ => Err(cx.at_value(
            &tp,
            format!("threads must be a whole number >= 1, got {tv}"),
        )),
    }
}

/// The stage's input references for one instance, interpolated and parsed.
fn instance_refs(
    cx: &Ctx<'_>,
    sp: &str,
    d: &Declared<'_>,
    scope: &Scope<'_>,
) -> Result<Refs, UserError> {
    d.raw
        .inputs
        .iter()
        .map(|(iname, rin)| {
            let ip = format!("{sp}.inputs.{iname}");
            rin.items(&ip)
                .map(|(item_path, s)| {
                    let s = match scope.string(s).map_err(|e| cx.interp(&item_path, e))? {
                        Value::String(s) => s,
                        other => interp::display(&other),
                    };
                    parse_input_ref(&s).map_err(|m| cx.at_value(&item_path, m))
                })
                .collect()
        })
        .collect()
}
