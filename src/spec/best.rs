//! `best: <study>`: a stage that takes the best trial's values of a study. Every variable of
//! the study's space is bound in the stage's scope (`D: "${D}"`), and the study's instance
//! becomes its input `best`, so its key depends on the study's artifact as well as on the
//! values themselves, and its lineage reaches the study and its trials.
//!
//! The values are known once the study has run: the search driver passes them
//! ([`BestValues`]). Without them (a plain `rst check`, or a study not finished yet) each
//! variable is bound to a stand-in, a value of its space (a range's `low`, the first
//! choice), so that the stage is checked as usual, and the instance is marked
//! [`best_pending`](super::Instance::best_pending): it is never run that way.
use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::ctx::Ctx;
use super::declare::Declared;
use super::expand::instance_name;
use super::interp::{self, Scope};
use super::params::Params;
use super::parse_input_ref;
use crate::error::UserError;
use crate::search::Distribution;

/// The input a `best:` stage reads its study through.
pub const BEST_INPUT: &str = "best";

/// The best trial's values of each finished study, by the study's instance name.
pub type BestValues = BTreeMap<String, Vec<(Arc<str>, Value)>>;

/// What `best:` gives one instance: the study (stage index, position in its expansion)
/// and the variables it binds.
pub(super) struct Bound {
    pub study: (usize, usize),
    pub values: Vec<(Arc<str>, Value)>,
    pub pending: bool,
}

/// Resolves `best: <reference>` for one instance (`scope`: its matrix and the parameters).
pub(super) fn bind(
    cx: &Ctx<'_>,
    sp: &str,
    reference: &str,
    stages: &[Declared<'_>],
    params: &Params,
    scope: &Scope<'_>,
    best: &BestValues,
) -> Result<Bound, UserError> {
    let bp = format!("{sp}.best");
    let text = match scope.string(reference).map_err(|e| cx.interp(&bp, e))? {
        Value::String(s) => s,
        other => interp::display(&other),
    };
    let r = parse_input_ref(&text).map_err(|m| cx.at_value(&bp, m))?;
    let Some(ti) = stages
        .iter()
        .position(|t| t.name == r.stage && t.kind.name() == "search")
    else {
        let studies: Vec<&str> = stages
            .iter()
            .filter(|t| t.kind.name() == "search")
            .map(|t| t.name)
            .collect();
        let mut u = cx.at_value(
            &bp,
            format!("`best: {text}` does not name a `search` stage"),
        );
        u.help = Some(
            crate::hint::did_you_mean(&r.stage, studies.iter().copied()).unwrap_or_else(|| {
                if studies.is_empty() {
                    "`best:` takes the best trial of a `kind: search` stage".to_string()
                } else {
                    format!("search stages: {}", studies.join(", "))
                }
            }),
        );
        return Err(u);
    };
    let t = &stages[ti];
    let chosen = t
        .matrix
        .select(&r.slice)
        .map_err(|key| cx.at_value(&bp, format!("`{}` has no matrix axis `{key}`", t.name)))?;
    let [k] = chosen[..] else {
        let example = t
            .matrix
            .variables()
            .map(|v| format!("{v}=${{{v}}}"))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(cx
            .at_value(
                &bp,
                format!(
                    "`best: {text}` selects {} studies; it takes one",
                    chosen.len()
                ),
            )
            .help(format!(
                "pick one with a slice, e.g. `{}[{example}]`",
                t.name
            )));
    };
    let at = t
        .matrix
        .combinations()
        .nth(k)
        .expect("a selected position exists");
    let bindings = t.matrix.bindings(&at);
    let name = instance_name(t.name, &bindings);
    if let Some(values) = best.get(&name) {
        return Ok(Bound {
            study: (ti, k),
            values: values.clone(),
            pending: false,
        });
    }
    // Stand-ins from the study's space, as that instance of it reads it.
    let mvals: BTreeMap<String, Value> = bindings
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let study_params = Scope {
        params,
        matrix: (&mvals).into(),
    }
    .apply(&t.params)
    .map_err(|(p, e)| cx.interp(&format!("stages.{}.params.{p}", t.name), e))?;
    let (_, space) = crate::stages::search::parse(&study_params).map_err(|e| {
        cx.at_value(
            &format!("stages.{}.params", t.name),
            format!("{}: {}", e.path, e.message),
        )
    })?;
    let values = space
        .iter()
        .map(|(k, d)| (Arc::from(k.as_str()), stand_in(d)))
        .collect();
    Ok(Bound {
        study: (ti, k),
        values,
        pending: true,
    })
}

/// A value of the distribution (its low end, its first choice).
fn stand_in(d: &Distribution) -> Value {
    match d {
        Distribution::Float { low, .. } => Value::from(*low),
        Distribution::Int { low, .. } => Value::from(*low),
        Distribution::Categorical { choices } => choices.first().cloned().unwrap_or(Value::Null),
    }
}
