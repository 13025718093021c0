//! `${name}` interpolation of pipeline parameters and matrix values into stage fields.
//!
//! A string that is exactly `${x}` takes the value of `x` with its type (a list stays a
//! list, a number a number); inside a longer string the value is formatted as text.
//! `${matrix.x}` and `${params.x}` name one scope explicitly; a bare `${x}` looks in the
//! stage's matrix first, then in the pipeline parameters. `$${` writes a literal `${`.
use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

pub struct Scope<'a> {
    pub params: &'a BTreeMap<String, Value>,
    pub matrix: MatrixVars<'a>,
}

/// The matrix variables a scope sees: a map, or an instance's own bindings (its matrix
/// values, then its `best:` values) as the instance stores them, so that keying an
/// instance copies none of them (`Pipeline::params_of`, once per instance of a sweep).
#[derive(Clone, Copy)]
pub enum MatrixVars<'a> {
    Map(&'a BTreeMap<String, Value>),
    Bindings(&'a [(Arc<str>, Value)], &'a [(Arc<str>, Value)]),
}

impl<'a> From<&'a BTreeMap<String, Value>> for MatrixVars<'a> {
    fn from(m: &'a BTreeMap<String, Value>) -> Self {
        MatrixVars::Map(m)
    }
}

impl<'a> MatrixVars<'a> {
    fn get(self, name: &str) -> Option<&'a Value> {
        match self {
            MatrixVars::Map(m) => m.get(name),
            MatrixVars::Bindings(a, b) => a
                .iter()
                .chain(b)
                .find(|(k, _)| &**k == name)
                .map(|(_, v)| v),
        }
    }

    fn keys(self) -> Vec<&'a str> {
        match self {
            MatrixVars::Map(m) => m.keys().map(String::as_str).collect(),
            MatrixVars::Bindings(a, b) => a.iter().chain(b).map(|(k, _)| &**k).collect(),
        }
    }
}

/// An interpolation failure: the variable and a suggestion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterpError {
    pub message: String,
    pub help: Option<String>,
}

impl Scope<'_> {
    fn get(&self, name: &str) -> Result<&Value, InterpError> {
        let (scope, var) = match name.split_once('.') {
            Some(("matrix", v)) => (Some("matrix"), v),
            Some(("params", v)) => (Some("params"), v),
            _ => (None, name),
        };
        let found = match scope {
            Some("matrix") => self.matrix.get(var),
            Some(_) => self.params.get(var),
            None => self.matrix.get(var).or_else(|| self.params.get(var)),
        };
        found.ok_or_else(|| {
            let candidates = self
                .matrix
                .keys()
                .into_iter()
                .chain(self.params.keys().map(String::as_str));
            let help = match crate::hint::closest(var, candidates) {
                Some(s) => format!("did you mean `${{{s}}}`?"),
                None => {
                    let mut known: Vec<&str> = self.params.keys().map(String::as_str).collect();
                    known.extend(self.matrix.keys());
                    if known.is_empty() {
                        "declare it under `params:` at the top of the pipeline".to_string()
                    } else {
                        format!("known names: {}", known.join(", "))
                    }
                }
            };
            InterpError {
                message: format!("unknown variable `${{{name}}}`"),
                help: Some(help),
            }
        })
    }

    /// Interpolates every string inside `value`; on failure, the path of the string
    /// (`a.b[0]`) relative to `value`.
    pub fn apply(&self, value: &Value) -> Result<Value, (String, InterpError)> {
        // The path is built only on failure (it used to cost two allocations per node of
        // every instance's params).
        self.apply_in(value).map_err(|(mut rev, e)| {
            rev.reverse();
            (rev.concat(), e)
        })
    }

    /// Like [`Scope::apply`], with the path as segments innermost first.
    fn apply_in(&self, value: &Value) -> Result<Value, (Vec<String>, InterpError)> {
        Ok(match value {
            Value::String(s) => self.string(s).map_err(|e| (Vec::new(), e))?,
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        self.apply_in(v).map_err(|(mut p, e)| {
                            p.push(format!("[{i}]"));
                            (p, e)
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| match self.apply_in(v) {
                        Ok(v) => Ok((k.clone(), v)),
                        Err((mut p, e)) => {
                            // `a.b`, but `a[0]`: a dot only before a key that follows another.
                            if let Some(last) = p.last_mut() {
                                if !last.starts_with('[') {
                                    last.insert(0, '.');
                                }
                            }
                            p.push(k.clone());
                            Err((p, e))
                        }
                    })
                    .collect::<Result<_, _>>()?,
            ),
            other => other.clone(),
        })
    }

    /// Interpolates one string.
    pub fn string(&self, s: &str) -> Result<Value, InterpError> {
        if let Some(name) = s.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
            if !name.contains(['$', '{', '}']) {
                return Ok(self.get(name.trim())?.clone());
            }
        }
        let mut out = String::new();
        let mut rest = s;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let tail = &rest[i..];
            if let Some(t) = tail.strip_prefix("$${") {
                out.push_str("${");
                rest = t;
            } else if let Some(t) = tail.strip_prefix("${") {
                let end = t.find('}').ok_or_else(|| InterpError {
                    message: format!("unclosed `${{` in `{s}`"),
                    help: Some("write `${name}`, or `$${` for a literal `${`".into()),
                })?;
                out.push_str(&display(self.get(t[..end].trim())?));
                rest = &t[end + 1..];
            } else {
                out.push('$');
                rest = &tail[1..];
            }
        }
        out.push_str(rest);
        Ok(Value::String(out))
    }
}

/// The variables `value` names (`${x}`, `${params.x}`, ...), in order, as written inside
/// the braces; `$${` is a literal and names nothing. Used to order pipeline parameters
/// that refer to each other before interpolating them.
pub fn references(value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    collect_references(value, &mut out);
    out
}

fn collect_references(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => {
            let mut rest = s.as_str();
            while let Some(i) = rest.find('$') {
                let tail = &rest[i..];
                if let Some(t) = tail.strip_prefix("$${") {
                    rest = t;
                } else if let Some(t) = tail.strip_prefix("${") {
                    let Some(end) = t.find('}') else { return };
                    out.push(t[..end].trim().to_string());
                    rest = &t[end + 1..];
                } else {
                    rest = &tail[1..];
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_references(v, out)),
        Value::Object(map) => map.values().for_each(|v| collect_references(v, out)),
        _ => {}
    }
}

/// How a value reads inside a string and in instance names (`0.4`, `regsl`, `[1,2]`).
pub fn display(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope_with(
        params: Value,
        matrix: Value,
    ) -> (BTreeMap<String, Value>, BTreeMap<String, Value>) {
        let p = params.as_object().unwrap().clone().into_iter().collect();
        let m = matrix.as_object().unwrap().clone().into_iter().collect();
        (p, m)
    }

    #[test]
    fn whole_string_keeps_type_and_partial_formats() {
        let (p, m) = scope_with(
            json!({"rates": [0.2, 0.4], "lr": 0.0001}),
            json!({"rate": 0.4}),
        );
        let s = Scope {
            params: &p,
            matrix: (&m).into(),
        };
        assert_eq!(s.string("${rates}").unwrap(), json!([0.2, 0.4]));
        assert_eq!(s.string("${rate}").unwrap(), json!(0.4));
        assert_eq!(
            s.string("run-${rate}-${params.lr}").unwrap(),
            json!("run-0.4-0.0001")
        );
        assert_eq!(
            s.string("cost $5 and $${x}").unwrap(),
            json!("cost $5 and ${x}")
        );
    }

    #[test]
    fn unknown_names_suggest_close_ones() {
        let (p, m) = scope_with(json!({"noise_rates": [0.2]}), json!({}));
        let s = Scope {
            params: &p,
            matrix: (&m).into(),
        };
        let e = s.string("${noise_rate}").unwrap_err();
        assert_eq!(e.help.as_deref(), Some("did you mean `${noise_rates}`?"));
        let (path, _) = s.apply(&json!({"a": {"b": ["${nope}"]}})).unwrap_err();
        assert_eq!(path, "a.b[0]");
    }

    #[test]
    fn references_skip_literal_dollars() {
        let v = serde_json::json!({"a": ["${x}-${ params.y }", "$${z} $5"], "b": 1});
        assert_eq!(references(&v), vec!["x", "params.y"]);
    }
}
