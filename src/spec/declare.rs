//! Phase 2 of building: each stage's declaration (name, kind, matrix, which inputs, where
//! it publishes), checked once per stage, before any instance is expanded.
use std::path::{Component, Path};

use super::ctx::Ctx;
use super::matrix::{self, Matrix};
use super::params::Params;
use super::raw::{Publish, RawPipeline, RawStage};
use super::trials::{self, Proposals};
use crate::error::UserError;
use crate::hint::did_you_mean;
use crate::stages::{self, StageKind};

/// A stage as declared, ready to expand.
pub(super) struct Declared<'r> {
    pub name: &'r str,
    pub raw: &'r RawStage,
    pub kind: &'static dyn StageKind,
    pub matrix: Matrix,
    /// `params:` as JSON, not yet interpolated.
    pub params: serde_json::Value,
    pub publish: Option<String>,
    /// A trial stage's study, and how many of its matrix variables name an instance.
    pub trial: Option<(&'r str, usize)>,
}

/// Every stage's declaration, in file order.
pub(super) fn declare<'r>(
    cx: &Ctx<'_>,
    raw: &'r RawPipeline,
    params: &Params,
    proposals: &Proposals,
) -> Result<Vec<Declared<'r>>, UserError> {
    trials::check_references(cx, raw)?;
    raw.stages
        .iter()
        .map(|(name, rs)| {
            let sp = format!("stages.{name}");
            if !super::valid_name(name) {
                return Err(cx.at_key(
                    &sp,
                    format!("stage name `{name}` may only use letters, digits, `_` and `-`"),
                ));
            }
            let kind = kind(cx, &sp, rs)?;
            let (matrix, trial) = match &rs.trial_of {
                None => (matrix::parse(cx, name, &rs.matrix, params)?, None),
                Some(study) => {
                    let (m, named) = trials::matrix(cx, raw, name, rs, study, params, proposals)?;
                    (m, Some((study.as_str(), named)))
                }
            };
            check_input_names(cx, &sp, name, rs, kind)?;
            let publish = publish(cx, &sp, name, rs)?;
            let params = match &rs.params {
                None => serde_json::Value::Object(Default::default()),
                Some(p) => cx.json(&format!("{sp}.params"), p)?,
            };
            Ok(Declared {
                name,
                raw: rs,
                kind,
                matrix,
                params,
                publish,
                trial,
            })
        })
        .collect()
}

fn kind(cx: &Ctx<'_>, sp: &str, rs: &RawStage) -> Result<&'static dyn StageKind, UserError> {
    stages::lookup(&rs.kind).ok_or_else(|| {
        let mut u = cx.at_value(
            &format!("{sp}.kind"),
            format!("unknown stage kind `{}`", rs.kind),
        );
        u.help = Some(match did_you_mean(&rs.kind, stages::kind_names()) {
            Some(h) => h,
            None => format!("kinds: {}", stages::kind_names().join(", ")),
        });
        u
    })
}

/// Input names the kind accepts, and the ones it requires.
fn check_input_names(
    cx: &Ctx<'_>,
    sp: &str,
    sname: &str,
    rs: &RawStage,
    kind: &'static dyn StageKind,
) -> Result<(), UserError> {
    let Some(decls) = kind.inputs() else {
        return Ok(());
    };
    for iname in rs.inputs.keys() {
        if !decls.iter().any(|d| d.name == iname) {
            let mut u = cx.at_key(
                &format!("{sp}.inputs.{iname}"),
                format!("stage kind `{}` has no input `{iname}`", kind.name()),
            );
            u.help = Some(match did_you_mean(iname, decls.iter().map(|d| d.name)) {
                Some(h) => h,
                None if decls.is_empty() => format!("`{}` stages take no inputs", kind.name()),
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
                    sp,
                    format!(
                        "stage `{sname}` ({}) needs the input `{}`",
                        kind.name(),
                        d.name
                    ),
                )
                .help(format!("add `inputs: {{{}: <stage>}}`", d.name)));
        }
    }
    Ok(())
}

/// The results sub-directory of a published stage (relative, inside `results/`).
fn publish(
    cx: &Ctx<'_>,
    sp: &str,
    sname: &str,
    rs: &RawStage,
) -> Result<Option<String>, UserError> {
    Ok(match &rs.publish {
        None | Some(Publish::Flag(false)) => None,
        Some(Publish::Flag(true)) => Some(sname.to_string()),
        Some(Publish::Dir(d)) => {
            let p = Path::new(d);
            if p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
                return Err(cx.at_value(
                    &format!("{sp}.publish"),
                    format!("publish directory `{d}` must be relative and stay inside results/"),
                ));
            }
            Some(d.clone())
        }
    })
}
