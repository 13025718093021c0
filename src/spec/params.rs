//! Phase 1 of building: the pipeline parameters, with `--set` overrides, resolved in
//! dependency order so that a parameter may default to another (`lr: "${base_lr}"`).
//! A cycle or an unknown variable is an error at the parameter's value.
use std::collections::BTreeMap;

use indexmap::IndexMap;
use serde_json::Value;

use super::ctx::Ctx;
use super::interp::{self, Scope};
use crate::error::UserError;
use crate::hint::did_you_mean;

/// Pipeline parameters by name, every `${}` resolved.
pub type Params = BTreeMap<String, Value>;

/// The file's parameters with `overrides` (`--set`, type-checked against the defaults)
/// put in their place, each resolved.
pub(super) fn resolve(
    cx: &Ctx<'_>,
    raw: &IndexMap<String, serde_yaml::Value>,
    overrides: &[(String, Value)],
) -> Result<Params, UserError> {
    let mut declared = IndexMap::new();
    for (k, v) in raw {
        declared.insert(k.clone(), cx.json(&format!("params.{k}"), v)?);
    }
    let defaults = interpolate(cx, &declared, &[])?;
    for (k, v) in overrides {
        check_override(cx, &defaults, k, v)?;
        declared.insert(k.clone(), v.clone());
    }
    if overrides.is_empty() {
        return Ok(defaults);
    }
    let literal: Vec<&str> = overrides.iter().map(|(k, _)| k.as_str()).collect();
    interpolate(cx, &declared, &literal)
}

/// A `--set k=v` must name a parameter and keep its type (unless the default is null).
fn check_override(cx: &Ctx<'_>, defaults: &Params, k: &str, v: &Value) -> Result<(), UserError> {
    let Some(old) = defaults.get(k) else {
        let mut u = UserError::new(format!("--set {k}: the pipeline has no parameter `{k}`"));
        u.help = Some(match did_you_mean(k, defaults.keys().map(String::as_str)) {
            Some(h) => h,
            None => format!(
                "parameters of {}: {}",
                cx.file.display(),
                defaults.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        });
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
    Ok(())
}

/// Interpolates every parameter after those it names (a depth-first walk that reports
/// the first cycle it closes). `literal` ones (overrides) are taken as given.
fn interpolate(
    cx: &Ctx<'_>,
    declared: &IndexMap<String, Value>,
    literal: &[&str],
) -> Result<Params, UserError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut marks = vec![Mark::New; declared.len()];
    let mut out = Params::new();
    let empty = BTreeMap::new();
    for root in 0..declared.len() {
        if marks[root] != Mark::New {
            continue;
        }
        // (parameter, its references not yet visited); the stack is the current path.
        let mut stack: Vec<(usize, Vec<usize>)> = Vec::new();
        let open = |i: usize, marks: &mut Vec<Mark>| {
            marks[i] = Mark::Open;
            let (name, v) = declared.get_index(i).expect("index in range");
            let deps: Vec<usize> = if literal.contains(&name.as_str()) {
                Vec::new()
            } else {
                interp::references(v)
                    .iter()
                    .filter_map(|r| {
                        let r = r.strip_prefix("params.").unwrap_or(r);
                        declared.get_index_of(r)
                    })
                    .rev()
                    .collect()
            };
            (i, deps)
        };
        stack.push(open(root, &mut marks));
        while let Some((i, deps)) = stack.last_mut() {
            let i = *i;
            match deps.pop() {
                Some(d) if marks[d] == Mark::Done => {}
                Some(d) if marks[d] == Mark::Open => {
                    let from = stack.iter().position(|(j, _)| *j == d).unwrap_or(0);
                    let names: Vec<&str> = stack[from..]
                        .iter()
                        .map(|(j, _)| declared.get_index(*j).unwrap().0.as_str())
                        .chain([declared.get_index(d).unwrap().0.as_str()])
                        .collect();
                    let name = declared.get_index(i).unwrap().0;
                    return Err(cx
                        .at_value(
                            &format!("params.{name}"),
                            format!(
                                "the parameters refer to each other in a cycle: {}",
                                names.join(" -> ")
                            ),
                        )
                        .help("give one of them a value that names no other parameter"));
                }
                Some(d) => stack.push(open(d, &mut marks)),
                None => {
                    let (name, v) = declared.get_index(i).unwrap();
                    let value = if literal.contains(&name.as_str()) {
                        v.clone()
                    } else {
                        let scope = Scope {
                            params: &out,
                            matrix: (&empty).into(),
                        };
                        scope.apply(v).map_err(|(rel, e)| {
                            cx.interp(&super::ctx::join_path(&format!("params.{name}"), &rel), e)
                        })?
                    };
                    out.insert(name.clone(), value);
                    marks[i] = Mark::Done;
                    stack.pop();
                }
            }
        }
    }
    Ok(out)
}

pub(super) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}
