//! What the spec checks with a stage kind's declaration, as user errors with a location:
//! a param error at the place the bad value was *written* (the pipeline parameter or matrix
//! axis a `${name}` took it from, with the use named), a missing field at the stage's
//! `params:` key, and the kind's own checks against what the pipeline knows of its inputs
//! (their axes and splits, [`StageKind::check_upstream`]) before anything runs.
use std::sync::Arc;

use serde_json::Value;

use super::ctx::{join_path, Ctx};
use super::Pipeline;
use crate::error::UserError;
use crate::stages::{ParamError, StageKind, Upstream, Upstreams};

/// Where a `${name}` that is a param's whole value came from.
enum Origin {
    /// A pipeline parameter (`params.NAME` at the top of the file).
    Param(String),
    /// A variable of the stage's matrix (`stages.S.matrix.AXIS`).
    Matrix(String),
}

/// The value at `path` (`a.b[0].c`, as serde_path_to_error writes it) inside `v`.
fn value_at<'v>(v: &'v Value, path: &str) -> Option<&'v Value> {
    let mut cur = v;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, indices) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            cur = cur.get(key)?;
        }
        for index in indices.split(['[', ']']).filter(|s| !s.is_empty()) {
            cur = cur.get(index.parse::<usize>().ok()?)?;
        }
    }
    Some(cur)
}

/// Whether the param at `path` was written as exactly `${name}`, and where `name` is bound.
fn origin(written: &Value, path: &str, matrix: &[(Arc<str>, Value)]) -> Option<Origin> {
    let text = value_at(written, path)?.as_str()?.trim();
    let name = text.strip_prefix("${")?.strip_suffix('}')?.trim();
    let in_matrix = |n: &str| matrix.iter().any(|(k, _)| &**k == n);
    Some(match name.split_once('.') {
        Some(("params", n)) => Origin::Param(n.to_string()),
        Some(("matrix", n)) => Origin::Matrix(n.to_string()),
        _ if in_matrix(name) => Origin::Matrix(name.to_string()),
        _ => Origin::Param(name.to_string()),
    })
}

/// The instance's param error as a user error. `written` is the stage's params before
/// interpolation, `matrix` the instance's matrix values, and `overridden` says which
/// pipeline parameters `--set` replaced.
#[allow(clippy::too_many_arguments)]
pub(super) fn param_error(
    cx: &Ctx<'_>,
    sp: &str,
    instance: &str,
    kind: &dyn StageKind,
    written: &Value,
    matrix: &[(Arc<str>, Value)],
    overridden: &dyn Fn(&str) -> bool,
    e: ParamError,
) -> UserError {
    let use_path = join_path(&format!("{sp}.params"), &e.path);
    let what = if e.path.is_empty() {
        format!("{} params", kind.name())
    } else {
        format!("{} params `{}`", kind.name(), e.path)
    };
    let message = format!("stage `{instance}` ({what}): {}", e.message);
    let mut u = if e.message.starts_with("unknown field") {
        cx.at_key(&use_path, message)
    } else if e.message.starts_with("missing field") {
        // The field is absent: point at the mapping it belongs in, not at its first key.
        let at = if cx.key_at(&use_path).is_some() {
            use_path.clone()
        } else {
            sp.to_string()
        };
        let field = e.message.split('`').nth(1).unwrap_or("it");
        let mut u = cx.at_key(&at, message);
        u.help = Some(format!("add `{field}: ...` to the params of `{instance}`"));
        return u;
    } else {
        match origin(written, &e.path, matrix) {
            // Not from a file position we know: point at the use.
            None => cx.at_value(&use_path, message),
            Some(Origin::Param(name)) if overridden(&name) => cx.at_value(
                &use_path,
                format!("{message} (the value of `{name}` given by --set {name}=...)"),
            ),
            Some(Origin::Param(name)) => {
                let param = format!("params.{name}");
                // The use's line, and its file when the parameter is written in another one
                // (an included stage using the pipeline's parameter, or the other way).
                let used_at = cx.value_at(&use_path).map(|u| {
                    match cx.value_at(&param).filter(|p| p.file == u.file) {
                        Some(_) => format!(" (line {})", u.line),
                        None => format!(" ({}:{})", u.file.display(), u.line),
                    }
                });
                cx.at_value(
                    &param,
                    format!(
                        "{message}: the value of the pipeline parameter `{name}`, used by \
                         {use_path}{}",
                        used_at.unwrap_or_default()
                    ),
                )
            }
            Some(Origin::Matrix(name)) => {
                let axis = format!("{sp}.matrix.{name}");
                let at = if cx.value_at(&axis).is_some() {
                    axis
                } else {
                    use_path.clone()
                };
                cx.at_value(
                    &at,
                    format!("{message}: the matrix value `{name}`, used by {use_path}"),
                )
            }
        }
    };
    u.help = e.help;
    u
}

/// Calls every instance's [`StageKind::check_upstream`] with what the pipeline knows of its
/// inputs; `instances` in topological order (each input before its consumer), so the splits
/// a stage will have are known from those of its inputs.
pub(super) fn check_upstreams(cx: &Ctx<'_>, p: &Pipeline) -> Result<(), UserError> {
    let (stages, instances) = (&p.stages, &p.instances);
    if !stages.iter().any(|s| s.kind.checks_upstream()) {
        return Ok(());
    }
    let mut splits: Vec<Option<Vec<String>>> = Vec::with_capacity(instances.len());
    for inst in instances {
        let stage = &stages[inst.stage];
        if !stage.kind.checks_upstream() {
            splits.push(None);
            continue;
        }
        let params = p.params_of(inst);
        let upstreams: Upstreams<'_> = inst
            .inputs
            .iter()
            .map(|(name, ids)| {
                let ups = ids
                    .iter()
                    .map(|&u| Upstream {
                        stage: &stages[instances[u].stage].name,
                        instance: &instances[u].name,
                        axes: &stages[instances[u].stage].axes,
                        splits: splits[u].as_deref(),
                    })
                    .collect();
                (name.as_str(), ups)
            })
            .collect();
        if let Err(e) = stage.kind.check_upstream(&params, &upstreams) {
            let sp = format!("stages.{}", stage.name);
            let path = join_path(&format!("{sp}.params"), &e.path);
            // The stage's params as written (a default that is not written: the stage).
            let at = if cx.value_at(&path).is_some() {
                path
            } else if cx.key_at(&format!("{sp}.params")).is_some() {
                format!("{sp}.params")
            } else {
                sp
            };
            let what = if e.path.is_empty() {
                String::new()
            } else {
                format!(" `{}`", e.path)
            };
            let mut u = cx.at_value(
                &at,
                format!(
                    "stage `{}` ({} params{what}): {}",
                    inst.name,
                    stage.kind.name(),
                    e.message
                ),
            );
            u.help = e.help;
            return Err(u);
        }
        splits.push(stage.kind.output_splits(&params, &upstreams));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn value_at_follows_keys_and_indices() {
        let v = json!({"a": {"b": [1, {"c": "x"}]}, "d": 2});
        assert_eq!(value_at(&v, "a.b[1].c"), Some(&json!("x")));
        assert_eq!(value_at(&v, "d"), Some(&json!(2)));
        assert_eq!(value_at(&v, ""), Some(&v));
        assert_eq!(value_at(&v, "a.z"), None);
    }

    #[test]
    fn origin_tells_parameters_from_matrix_values() {
        let written = json!({"epochs": "${epochs}", "lr": "${matrix.lr}", "seed": "${seed}", "x": "a${epochs}"});
        let m = vec![(Arc::from("seed"), json!(1))];
        assert!(matches!(origin(&written, "epochs", &m), Some(Origin::Param(n)) if n == "epochs"));
        assert!(matches!(origin(&written, "lr", &m), Some(Origin::Matrix(n)) if n == "lr"));
        assert!(matches!(origin(&written, "seed", &m), Some(Origin::Matrix(n)) if n == "seed"));
        assert!(origin(&written, "x", &m).is_none());
    }
}
