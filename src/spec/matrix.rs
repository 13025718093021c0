//! Phase 2 of building: each stage's matrix as axes of bindings, sized before anything is
//! expanded (so a 100^5 sweep is refused at once), then walked one combination at a time
//! (an odometer) instead of materialising the Cartesian product.
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use indexmap::IndexMap;
use serde_json::Value;

use super::ctx::Ctx;
use super::interp::{self, Scope};
use super::params::Params;
use crate::error::UserError;

/// The default of `--max-instances` / `RST_MAX_INSTANCES`.
pub const DEFAULT_MAX_INSTANCES: u64 = 10_000_000;

/// One axis: its entries, each binding one or more variables (a "zipped" axis of
/// mappings binds several together: per-rate radii, say).
#[derive(Debug, Clone)]
pub struct Axis {
    /// The axis's key under `matrix:`.
    pub key: String,
    /// The variables each entry binds, in order (the key itself for a list of scalars).
    pub names: Vec<Arc<str>>,
    /// Per entry, the value of each of `names`.
    pub entries: Vec<Vec<Value>>,
    /// Per variable, entry indices by canonical value text (built on first slice).
    index: OnceLock<Vec<HashMap<String, Vec<usize>>>>,
}

impl Axis {
    /// An axis of `entries`, each binding every one of `names` (a zipped axis).
    pub fn zipped(key: &str, names: Vec<Arc<str>>, entries: Vec<Vec<Value>>) -> Axis {
        debug_assert!(entries.iter().all(|e| e.len() == names.len()));
        Axis {
            key: key.to_string(),
            names,
            entries,
            index: OnceLock::new(),
        }
    }

    /// The entries (ascending) whose variable `ni` reads as `want` (numbers by value).
    fn entries_with(&self, ni: usize, want: &str) -> &[usize] {
        let index = self.index.get_or_init(|| {
            (0..self.names.len())
                .map(|n| {
                    let mut m: HashMap<String, Vec<usize>> = HashMap::new();
                    for (e, vals) in self.entries.iter().enumerate() {
                        m.entry(canon_text(&interp::display(&vals[n])))
                            .or_default()
                            .push(e);
                    }
                    m
                })
                .collect()
        });
        index[ni]
            .get(&canon_text(want))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

/// A stage's matrix: axes in declaration order, the first outermost.
#[derive(Debug, Clone, Default)]
pub struct Matrix {
    pub axes: Vec<Axis>,
}

impl Matrix {
    /// Every variable the matrix binds, in instance-name order.
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.axes.iter().flat_map(|a| a.names.iter().map(|n| &**n))
    }

    /// The number of instances (saturating: only compared against a limit).
    pub fn size(&self) -> u64 {
        self.axes
            .iter()
            .fold(1u64, |n, a| n.saturating_mul(a.entries.len() as u64))
    }

    /// How far apart consecutive entries of each axis are in expansion order.
    pub fn strides(&self) -> Vec<usize> {
        let mut strides = vec![1; self.axes.len()];
        for i in (0..self.axes.len().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * self.axes[i + 1].entries.len();
        }
        strides
    }

    /// The combinations (their positions in expansion order, ascending) whose variables
    /// read as the slice says; `Err(key)` for a key that is no variable of the matrix.
    /// Works on the axes, not the instances: the cost is that of the answer.
    pub fn select<'s>(&self, slice: &'s [(String, String)]) -> Result<Vec<usize>, &'s str> {
        let mut allowed: Vec<Option<Vec<usize>>> = vec![None; self.axes.len()];
        for (key, want) in slice {
            let (ai, ni) = self
                .axes
                .iter()
                .enumerate()
                .find_map(|(ai, a)| a.names.iter().position(|n| **n == **key).map(|ni| (ai, ni)))
                .ok_or(key.as_str())?;
            let hits = self.axes[ai].entries_with(ni, want);
            allowed[ai] = Some(match allowed[ai].take() {
                None => hits.to_vec(),
                Some(prev) => prev
                    .into_iter()
                    .filter(|e| hits.binary_search(e).is_ok())
                    .collect(),
            });
        }
        let lists: Vec<Vec<usize>> = allowed
            .into_iter()
            .zip(&self.axes)
            .map(|(a, axis)| a.unwrap_or_else(|| (0..axis.entries.len()).collect()))
            .collect();
        if lists.iter().any(Vec::is_empty) {
            return Ok(Vec::new());
        }
        let strides = self.strides();
        let lens: Vec<usize> = lists.iter().map(Vec::len).collect();
        let odometer = Combinations {
            lens,
            next: Some(vec![0; lists.len()]),
        };
        Ok(odometer
            .map(|at| {
                at.iter()
                    .zip(&lists)
                    .zip(&strides)
                    .map(|((&i, list), &s)| list[i] * s)
                    .sum()
            })
            .collect())
    }

    /// The bindings of the combination at entry indices `at`.
    pub fn bindings(&self, at: &[usize]) -> Vec<(Arc<str>, Value)> {
        self.axes
            .iter()
            .zip(at)
            .flat_map(|(a, &e)| a.names.iter().cloned().zip(a.entries[e].iter().cloned()))
            .collect()
    }

    /// Entry indices of every combination, first axis outermost (the odometer).
    pub fn combinations(&self) -> Combinations {
        let lens: Vec<usize> = self.axes.iter().map(|a| a.entries.len()).collect();
        // An empty axis (a study with no trial proposed yet) gives no combination at all.
        let next = (!lens.contains(&0)).then(|| vec![0; self.axes.len()]);
        Combinations { lens, next }
    }

    /// The first combination whose instance name repeats an earlier one, if any: an axis
    /// with two entries that read the same. Checking entries per axis finds it without
    /// keeping every instance name.
    pub fn first_repeat(&self) -> Option<Vec<usize>> {
        // The innermost axis with a repeat gives the earliest repeated combination.
        self.axes.iter().enumerate().rev().find_map(|(ai, a)| {
            let mut seen = HashMap::new();
            a.entries.iter().enumerate().find_map(|(e, vals)| {
                let text: Vec<String> = vals.iter().map(interp::display).collect();
                seen.insert(text, e).map(|_| {
                    let mut at = vec![0; self.axes.len()];
                    at[ai] = e;
                    at
                })
            })
        })
    }
}

/// Iterator of [`Matrix::combinations`].
pub struct Combinations {
    lens: Vec<usize>,
    next: Option<Vec<usize>>,
}

impl Iterator for Combinations {
    type Item = Vec<usize>;

    fn next(&mut self) -> Option<Vec<usize>> {
        let cur = self.next.take()?;
        let mut n = cur.clone();
        let mut i = n.len();
        self.next = loop {
            if i == 0 {
                break None;
            }
            i -= 1;
            n[i] += 1;
            if n[i] < self.lens[i] {
                break Some(n);
            }
            n[i] = 0;
        };
        Some(cur)
    }
}

/// The axes of stage `sname`'s `matrix:`, values interpolated from the parameters.
pub(super) fn parse(
    cx: &Ctx<'_>,
    sname: &str,
    raw: &IndexMap<String, serde_yaml::Value>,
    params: &Params,
) -> Result<Matrix, UserError> {
    let empty = std::collections::BTreeMap::<String, Value>::new();
    let top = Scope {
        params,
        matrix: (&empty).into(),
    };
    let mut m = Matrix::default();
    for (key, v) in raw {
        let ap = format!("stages.{sname}.matrix.{key}");
        if !super::valid_name(key) {
            return Err(cx.at_key(
                &ap,
                format!("matrix axis `{key}` may only use letters, digits, `_` and `-`"),
            ));
        }
        let v = cx.json(&ap, v)?;
        // `rate: ${tune_rates}` may be empty (a stage switched off by a parameter: it has
        // no instance); a literal `rate: []` is a mistake.
        let from_variable = v.as_str().is_some_and(|s| s.contains("${"));
        let v = top.apply(&v).map_err(|(_, e)| cx.interp(&ap, e))?;
        let axis = parse_axis(cx, &ap, key, expand_count(cx, &ap, key, v)?, from_variable)?;
        for name in &axis.names {
            if m.variables().any(|n| n == &**name) {
                return Err(cx.at_key(&ap, format!("matrix variable `{name}` is bound twice")));
            }
        }
        m.axes.push(axis);
    }
    Ok(m)
}

/// `{count: N}`: the values 1, 2, ..., N (N runs of a stage, say).
fn expand_count(cx: &Ctx<'_>, ap: &str, key: &str, v: Value) -> Result<Value, UserError> {
    match v {
        Value::Object(m) if m.len() == 1 && m.contains_key("count") => {
            match m["count"].as_u64().filter(|&n| (1..=100_000).contains(&n)) {
                Some(n) => Ok(Value::Array((1..=n).map(Value::from).collect())),
                None => Err(cx
                    .at_value(
                        ap,
                        format!(
                            "matrix axis `{key}`: count must be a whole number from 1 to 100000, got {}",
                            m["count"]
                        ),
                    )
                    .help("e.g. `run: {count: 3}` for the values 1, 2, 3")),
            }
        }
        other => Ok(other),
    }
}

/// One axis from its list: scalars bind the key, mappings bind their keys together. An
/// empty list is an error unless it came from a variable (`may_be_empty`).
fn parse_axis(
    cx: &Ctx<'_>,
    ap: &str,
    key: &str,
    v: Value,
    may_be_empty: bool,
) -> Result<Axis, UserError> {
    let values = match v {
        Value::Array(a) => a,
        other => {
            return Err(cx
                .at_value(
                    ap,
                    format!(
                        "matrix axis `{key}` must be a list, got {}",
                        super::params::type_name(&other)
                    ),
                )
                .help("e.g. `rate: [0.2, 0.4]`, `rate: ${noise_rates}` or `run: {count: 3}`"))
        }
    };
    if values.is_empty() {
        if may_be_empty {
            return Ok(Axis::zipped(key, vec![Arc::from(key)], Vec::new()));
        }
        return Err(cx
            .at_value(ap, format!("matrix axis `{key}` is empty"))
            .help(format!(
                "give it values, or remove the stage; to switch a stage off by a parameter, \
                 write `{key}: ${{param}}` with `param: []`"
            )));
    }
    let mut names: Option<Vec<String>> = None;
    let mut entries = Vec::with_capacity(values.len());
    for (j, x) in values.into_iter().enumerate() {
        match x {
            Value::Array(_) => {
                return Err(cx.at_value(
                    &format!("{ap}[{j}]"),
                    "matrix values must be scalars or mappings of scalars, got a list",
                ));
            }
            Value::Object(m) => {
                if let Some((k, _)) = m.iter().find(|(_, v)| v.is_array() || v.is_object()) {
                    return Err(cx.at_value(
                        &format!("{ap}[{j}].{k}"),
                        "values bound by a matrix mapping must be scalars",
                    ));
                }
                let keys: Vec<String> = m.keys().cloned().collect();
                if let Some(first) = &names {
                    if *first != keys {
                        return Err(cx.at_value(
                            &format!("{ap}[{j}]"),
                            format!(
                                "every mapping of axis `{key}` must bind the same names ({})",
                                first.join(", ")
                            ),
                        ));
                    }
                }
                names = Some(keys);
                entries.push(m.into_iter().map(|(_, v)| v).collect());
            }
            scalar => {
                if names.as_ref().is_some_and(|n| n.len() != 1 || n[0] != key) {
                    return Err(cx.at_value(
                        &format!("{ap}[{j}]"),
                        format!(
                            "every mapping of axis `{key}` must bind the same names ({})",
                            names.unwrap_or_default().join(", ")
                        ),
                    ));
                }
                names = Some(vec![key.to_string()]);
                entries.push(vec![scalar]);
            }
        }
    }
    Ok(Axis {
        key: key.to_string(),
        names: names
            .unwrap_or_else(|| vec![key.to_string()])
            .into_iter()
            .map(Arc::from)
            .collect(),
        entries,
        index: OnceLock::new(),
    })
}

/// Refuses a pipeline whose stages would expand past `limit` instances, naming the stage
/// that crosses it and its axes; called before any instance exists.
pub(super) fn check_size(
    cx: &Ctx<'_>,
    stages: &[(&str, &Matrix)],
    limit: u64,
) -> Result<(), UserError> {
    let mut total = 0u64;
    for (sname, m) in stages {
        total = total.saturating_add(m.size());
        if total <= limit {
            continue;
        }
        let axes: Vec<String> = m
            .axes
            .iter()
            .map(|a| format!("{} ({})", a.key, a.entries.len()))
            .collect();
        let product = m
            .axes
            .iter()
            .fold(1u128, |n, a| n.saturating_mul(a.entries.len() as u128));
        let what = if m.size() > limit {
            format!(
                "stage `{sname}` expands to {product} instances: {} = {product}",
                axes.join(" × ")
            )
        } else {
            format!(
                "the stages up to `{sname}` expand to {total} instances (`{sname}`: {} = {product})",
                axes.join(" × ")
            )
        };
        let path = if m.axes.is_empty() {
            format!("stages.{sname}")
        } else {
            format!("stages.{sname}.matrix")
        };
        return Err(cx
            .at_key(&path, format!("{what}, more than the limit of {limit}"))
            .help(
                "shrink the matrix (or split the sweep into several pipelines), or raise the \
                 limit with --max-instances N or RST_MAX_INSTANCES=N",
            ));
    }
    Ok(())
}

/// The form a matrix value and a slice value are compared in: numbers by value (`0.40`
/// and `0.4` match), everything else as text.
pub(super) fn canon_text(text: &str) -> String {
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() => format!("{f:?}"),
        _ => text.to_string(),
    }
}
