//! The `aggregate` stage kind: the paper's results table (mean ± std over seeds) from
//! evaluation artifacts, plus accuracy and training-curve plots. No torch.
//!
//! ```yaml
//! table:
//!   kind: aggregate
//!   inputs:
//!     evals: [eval_regsl, eval_ft]    # evaluate artifacts (metrics.json), required
//!     trains: [ft_regsl, ft_plain]    # train artifacts (history.json), optional: curves
//!   publish: "."
//!   params:
//!     metric: top1                    # top1 | top3 (default top1)
//!     rows: stage                     # `stage` (upstream stage name) or a matrix axis (default stage)
//!     row_labels: {eval_regsl: Ours, eval_ft: Fine-tuning}   # optional display names
//!     row_order: [eval_regsl, eval_ft]                      # optional; else first appearance
//!     columns: rate                   # a matrix axis (or `stage`)
//!     column_label: "Noise = {percent}%"   # {value}, {percent} (value×100), {axis}; default "{axis} = {value}"
//!     over: [seed]                    # axes averaged over; every other axis is an error
//!     decimals: 2                     # 0..=6 (default 2)
//!     title: "Indoor, independent noise, test accuracy (%)"   # optional
//!     row_header: Method              # the first header cell (default Method)
//!     x_label: Noise rate             # accuracy plot's x axis (default: the columns axis)
//!     y_label: Test accuracy (%)      # its y axis (default: "<Split> top-1 accuracy (%)")
//!     compare: {Ours: Fine-tuning}    # optional: row vs baseline (labels or keys), paired stats
//! ```
//!
//! Each evaluation is grouped by (row, column): the row is its stage name (the instance
//! name before `[`) or its value of the `rows` axis, the column its value of the `columns`
//! axis. A cell reads `mean ± std` of the metric × 100 over its runs with the POPULATION
//! std (ddof 0, as the paper), `(n = 1)` for one run, `–` where no run exists. Numeric
//! columns are sorted by value, others keep their first appearance.
//!
//! `compare` adds, per comparison and column, the paired statistics of
//! [`crate::report::compare`]: the runs of the two rows paired by their values of the
//! `over` axes, the mean difference with its t and bootstrap 95% intervals, the paired
//! t-test and Wilcoxon signed-rank p-values, Holm-corrected across the columns ("n too
//! small" under two pairs), as a block under the table in table.md and table.tex and as
//! `comparisons` in table.json.
//!
//! Writes `table.md` (the paper's README layout), `table.csv`, `table.tex`, `table.json`
//! (with every run), `accuracy.png`/`.svg` (the metric per column, ±std error bars) and,
//! with `trains`, `curves.png`/`.svg` (and `curves.json`, every run's curve with its group,
//! panel and colour): validation accuracy per epoch, one panel per table
//! column (a train run's value of the `columns` axis), in each the mean over a row's runs
//! with a min–max band, coloured by row: a train run's row is its `rows` axis value when it
//! has that axis, else its stage name, shown through `row_labels` (so `row_labels:
//! {ft_regsl: Ours}` puts `ft_regsl`'s curves under the `Ours` label and colour). The table
//! is also printed to the log.
use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    canonical_as, parse_params, Arity, InputArtifact, InputDecl, ParamError, StageCtx, StageError,
    StageKind, StageRunner, Upstreams,
};
use crate::report::compare;
use crate::report::plot::{self, AccuracyFigure, Curve, CurvesFigure};
use crate::report::spread::Spreads;
use crate::report::{fill_template, template_placeholders, value_text, Column, Row, Run, Table};

pub struct Aggregate;

/// Bump when the same inputs and params would give other files. 2: a single run reads
/// `(n = 1)`, not `± 0.00`; curves.png has one panel per column, means with bands.
/// 3: curves.json (every run's curve, for the HTML report).
const VERSION: u32 = 3;

const INPUTS: &[InputDecl] = &[
    InputDecl {
        name: "evals",
        arity: Arity::Many,
        required: true,
    },
    InputDecl {
        name: "trains",
        arity: Arity::Many,
        required: false,
    },
];

/// Grouping by the upstream stage name rather than a matrix axis.
const STAGE: &str = "stage";
const MAX_DECIMALS: usize = 6;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    #[default]
    Top1,
    Top3,
}

impl Metric {
    /// The key in metrics.json.
    pub fn key(self) -> &'static str {
        match self {
            Metric::Top1 => "top1",
            Metric::Top3 => "top3",
        }
    }

    fn display(self) -> &'static str {
        match self {
            Metric::Top1 => "top-1",
            Metric::Top3 => "top-3",
        }
    }
}

#[derive(Debug, Clone, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AggregateParams {
    /// Which accuracy of metrics.json the table shows.
    #[serde(default)]
    pub metric: Metric,
    /// What makes a row: `stage` (the evaluation's stage name) or a matrix axis.
    #[serde(default = "default_rows")]
    pub rows: String,
    /// Display names of rows (by stage name or axis value); also labels train stages' curves.
    #[serde(default)]
    pub row_labels: Option<BTreeMap<String, String>>,
    /// Rows in this order first (by key), then the rest in first appearance.
    #[serde(default)]
    pub row_order: Option<Vec<String>>,
    /// The matrix axis (or `stage`) that makes the columns (and the curves' panels).
    pub columns: String,
    /// The column header: `{value}`, `{percent}` (value × 100), `{axis}`; `{{` for a brace.
    #[serde(default = "default_column_label")]
    pub column_label: String,
    /// The axes averaged over (e.g. `[seed]`): any other axis an evaluation varies is an error.
    #[serde(default)]
    pub over: Option<Vec<String>>,
    /// Decimals of the cells (0–6).
    #[serde(default = "default_decimals")]
    pub decimals: usize,
    /// A line above the table (and the LaTeX comment).
    #[serde(default)]
    pub title: Option<String>,
    /// The first header cell.
    #[serde(default = "default_row_header")]
    pub row_header: String,
    /// accuracy.png's x axis (default: the columns axis).
    #[serde(default)]
    pub x_label: Option<String>,
    /// Its y axis (default: `<Split> top-1 accuracy (%)`).
    #[serde(default)]
    pub y_label: Option<String>,
    /// Rows to compare, `{row: baseline}` (labels or keys): paired statistics per column.
    #[serde(default)]
    pub compare: Option<BTreeMap<String, String>>,
    /// Axes of `over` that are data realisations (a noise or split seed): per cell, the
    /// spread between realisations and between seeds, under the table.
    #[serde(default)]
    pub realisations: Option<Vec<String>>,
}

fn default_rows() -> String {
    STAGE.into()
}

fn default_column_label() -> String {
    "{axis} = {value}".into()
}

fn default_decimals() -> usize {
    2
}

fn default_row_header() -> String {
    "Method".into()
}

impl AggregateParams {
    fn over(&self) -> &[String] {
        self.over.as_deref().unwrap_or(&[])
    }

    fn label(&self, key: &str) -> String {
        self.row_labels
            .as_ref()
            .and_then(|l| l.get(key))
            .cloned()
            .unwrap_or_else(|| key.to_string())
    }
}

fn parse(params: &Value) -> Result<AggregateParams, ParamError> {
    let p: AggregateParams = parse_params(params)?;
    for (key, value) in [("rows", &p.rows), ("columns", &p.columns)] {
        if value.trim().is_empty() {
            return Err(ParamError::new(
                key,
                "is empty: name a matrix axis (or `stage`)",
            ));
        }
    }
    if p.rows == p.columns {
        return Err(ParamError::new(
            "columns",
            format!("is `{}`, the same as rows", p.columns),
        ));
    }
    for (i, axis) in p.over().iter().enumerate() {
        let at = format!("over[{i}]");
        if axis == &p.rows || axis == &p.columns {
            let which = if axis == &p.rows { "rows" } else { "columns" };
            return Err(ParamError::new(
                at,
                format!("`{axis}` is already params.{which}; it cannot also be averaged over"),
            ));
        }
        if p.over()[..i].contains(axis) {
            return Err(ParamError::new(at, format!("`{axis}` is listed twice")));
        }
    }
    if let Some(order) = &p.row_order {
        for (i, key) in order.iter().enumerate() {
            if order[..i].contains(key) {
                return Err(ParamError::new(
                    format!("row_order[{i}]"),
                    format!("`{key}` is listed twice"),
                ));
            }
        }
    }
    if p.decimals > MAX_DECIMALS {
        return Err(ParamError::new(
            "decimals",
            format!("must be at most {MAX_DECIMALS}, got {}", p.decimals),
        ));
    }
    template_placeholders(&p.column_label).map_err(|m| ParamError::new("column_label", m))?;
    for (i, axis) in p.realisations.iter().flatten().enumerate() {
        let at = format!("realisations[{i}]");
        if !p.over().contains(axis) {
            return Err(ParamError::new(
                at,
                format!(
                    "`{axis}` is not averaged over: a realisation axis is one of params.over ({})",
                    if p.over().is_empty() {
                        "none".to_string()
                    } else {
                        p.over().join(", ")
                    }
                ),
            ));
        }
        if p.realisations.as_deref().unwrap_or(&[])[..i].contains(axis) {
            return Err(ParamError::new(at, format!("`{axis}` is listed twice")));
        }
    }
    for (row, baseline) in p.compare.iter().flatten() {
        if row == baseline {
            return Err(ParamError::new(
                format!("compare.{row}"),
                "compares a row with itself; name another row as its baseline",
            ));
        }
    }
    Ok(p)
}

/// The (row, baseline) positions of `compare` in `table`, each named by its label or key.
fn compared_rows(p: &AggregateParams, table: &Table) -> Result<Vec<(usize, usize)>, StageError> {
    let find = |name: &str, what: &str| {
        table
            .rows
            .iter()
            .position(|r| r.label == name || r.key == name)
            .ok_or_else(|| {
                let names = table.rows.iter().map(|r| r.label.as_str());
                let hint = crate::hint::did_you_mean(name, names)
                    .map(|h| format!(" ({h})"))
                    .unwrap_or_default();
                StageError::user(format!(
                    "params.compare: {what} `{name}` is not a row of the table; its rows: {}{hint}",
                    table
                        .rows
                        .iter()
                        .map(|r| format!("`{}`", r.label))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    };
    p.compare
        .iter()
        .flatten()
        .map(|(row, baseline)| {
            let (r, b) = (find(row, "row")?, find(baseline, "baseline")?);
            if r == b {
                return Err(StageError::user(format!(
                    "params.compare: `{row}` and `{baseline}` are the same row (`{}`); name \
                     another row as its baseline",
                    table.rows[r].label
                )));
            }
            Ok((r, b))
        })
        .collect()
}

/// `eval_regsl[rate=0.4, seed=1]` → `eval_regsl`.
fn stage_name(instance: &str) -> &str {
    instance.split('[').next().unwrap_or(instance).trim()
}

fn axes_list(input: &InputArtifact) -> String {
    if input.matrix.is_empty() {
        "it has no matrix".into()
    } else {
        format!(
            "its axes: {}",
            input
                .matrix
                .keys()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// The value an input groups under for `by` (`stage` or a matrix axis).
fn group_value(input: &InputArtifact, by: &str) -> Option<Value> {
    if by == STAGE {
        Some(Value::String(stage_name(&input.instance).to_string()))
    } else {
        input.matrix.get(by).cloned()
    }
}

/// The value of `by` for an evaluation, or an error naming the instance and the fix.
fn required_value(input: &InputArtifact, by: &str, param: &str) -> Result<Value, StageError> {
    group_value(input, by).ok_or_else(|| {
        let stage = stage_name(&input.instance);
        StageError::user(format!(
            "`{}` (input `evals`) has no matrix axis `{by}` (params.{param}); {}. Give \
             `{stage}` a `{by}` matrix axis, or set params.{param} to one of its axes",
            input.instance,
            axes_list(input)
        ))
    })
}

/// Reads and parses `file` in an input artifact.
fn read_json(input: &InputArtifact, input_name: &str, file: &str) -> Result<Value, StageError> {
    let path = input.path.join(file);
    let stage = stage_name(&input.instance);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        let what = if input_name == "evals" {
            "an `evaluate` stage"
        } else {
            "a `train` stage"
        };
        if e.kind() == std::io::ErrorKind::NotFound {
            StageError::user(format!(
                "`{}` (input `{input_name}`) has no {file} in its artifact ({}): input \
                 `{input_name}` takes {what}'s output; check that `{stage}` is one",
                input.instance,
                input.path.display()
            ))
        } else {
            StageError::user(format!(
                "`{}` (input `{input_name}`): cannot read {}: {e}",
                input.instance,
                path.display()
            ))
        }
    })?;
    serde_json::from_str(&text).map_err(|e| {
        StageError::user(format!(
            "`{}` (input `{input_name}`): {file} is not valid JSON ({e}); rerun `{stage}` \
             (e.g. with `rst run --force {stage}`) or fix the file {}",
            input.instance,
            path.display()
        ))
    })
}

/// What one evaluation's metrics.json says: the metric as a fraction, the split it was
/// measured on, and the class every prediction fell in if they all did ([`one_class`]).
struct Measured {
    value: f64,
    split: Option<String>,
    one_class: Option<usize>,
}

fn read_metric(input: &InputArtifact, metric: Metric) -> Result<Measured, StageError> {
    let metrics = read_json(input, "evals", "metrics.json")?;
    let key = metric.key();
    let Some(obj) = metrics.as_object() else {
        return Err(StageError::user(format!(
            "`{}` (input `evals`): metrics.json is not a JSON object",
            input.instance
        )));
    };
    let value = match obj.get(key) {
        Some(v) => v.as_f64().ok_or_else(|| {
            StageError::user(format!(
                "`{}` (input `evals`): metrics.json `{key}` is {v}, not a number",
                input.instance
            ))
        })?,
        None => {
            return Err(StageError::user(format!(
                "`{}` (input `evals`): metrics.json has no `{key}` (params.metric); it has {}",
                input.instance,
                obj.keys()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    };
    if !(0.0..=1.0).contains(&value) {
        return Err(StageError::user(format!(
            "`{}` (input `evals`): metrics.json `{key}` is {value}, not a fraction between 0 \
             and 1",
            input.instance
        )));
    }
    let split = obj.get("split").and_then(Value::as_str).map(str::to_string);
    Ok(Measured {
        value,
        split,
        one_class: one_class(obj),
    })
}

/// The class every prediction of an evaluation fell in, when they all did (its
/// `confusion[true][predicted]` has one non-empty column, of two or more): a degenerate
/// model, whose accuracy is only that class's share of the split.
fn one_class(metrics: &serde_json::Map<String, Value>) -> Option<usize> {
    let rows = metrics.get("confusion")?.as_array()?;
    let k = rows.len();
    if k < 2 {
        return None;
    }
    let mut predicted = vec![0u64; k];
    for row in rows {
        for (j, n) in row.as_array()?.iter().enumerate() {
            let count = predicted.get_mut(j)?;
            *count = count.checked_add(n.as_u64()?)?;
        }
    }
    let used: Vec<usize> = (0..k).filter(|&j| predicted[j] > 0).collect();
    match used.as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

/// The warning under the table about degenerate evaluations (`` `instance` (class c) ``
/// each), or None when there are none.
fn degenerate_note(found: &[String]) -> Option<String> {
    if found.is_empty() {
        return None;
    }
    let shown: Vec<&str> = found.iter().take(8).map(String::as_str).collect();
    let more = if found.len() > 8 {
        format!(" and {} more", found.len() - 8)
    } else {
        String::new()
    };
    let note = format!(
        "Warning: {} evaluation(s) predict one class for every image, a degenerate model \
         whose accuracy is only that class's share of the split: {}{more}.",
        found.len(),
        shown.join(", ")
    );
    Some(note)
}

/// Validation accuracy (percent) per epoch from a train artifact's history.json.
fn read_curve(input: &InputArtifact) -> Result<Vec<(f64, f64)>, StageError> {
    let history = read_json(input, "trains", "history.json")?;
    crate::report::validation_curve(&history).ok_or_else(|| {
        StageError::user(format!(
            "`{}` (input `trains`): history.json is not a list of epochs",
            input.instance
        ))
    })
}

fn write(out: &Path, name: &str, bytes: impl AsRef<[u8]>) -> Result<(), StageError> {
    let path = out.join(name);
    std::fs::write(&path, bytes).map_err(|e| StageError::io(format!("writing {name}"), e))
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Groups the evaluations into the table.
/// What `build_table` would find wrong with the axes of the `evals`, known from the
/// pipeline before anything runs: `rows`/`columns` that an evaluation lacks, and axes it
/// varies that are neither rows, columns nor averaged `over`.
fn check_axes(p: &AggregateParams, inputs: &Upstreams<'_>) -> Result<(), ParamError> {
    for up in inputs.get("evals").into_iter().flatten() {
        let listed = || {
            if up.axes.is_empty() {
                format!("`{}` has no matrix", up.stage)
            } else {
                let names: Vec<String> = up.axes.iter().map(|a| format!("`{a}`")).collect();
                format!("its axes: {}", names.join(", "))
            }
        };
        for (param, by) in [("columns", &p.columns), ("rows", &p.rows)] {
            if by == STAGE || up.axes.contains(by) {
                continue;
            }
            let help = match crate::hint::did_you_mean(by, up.axes.iter().map(String::as_str)) {
                Some(h) => h,
                None => format!(
                    "give `{}` a `{by}` matrix axis, or set {param} to one of its axes (or `stage`)",
                    up.stage
                ),
            };
            return Err(ParamError::new(
                param,
                format!(
                    "`{by}` is not a matrix axis of `{}` (input `evals`); {}",
                    up.instance,
                    listed()
                ),
            )
            .help(help));
        }
        if let Some(axis) = up
            .axes
            .iter()
            .find(|a| *a != &p.rows && *a != &p.columns && !p.over().contains(a))
        {
            return Err(ParamError::new(
                "over",
                format!(
                    "`{}` (input `evals`) varies the axis `{axis}`, which is neither rows (`{}`) \
                     nor columns (`{}`) nor averaged over",
                    up.instance, p.rows, p.columns
                ),
            )
            .help(format!(
                "add `{axis}` to over to average over it, or take one value of it in the input \
                 (e.g. `{}[{axis}=...]`)",
                up.stage
            )));
        }
    }
    check_compared_rows(p, inputs)
}

/// With `rows: stage` the rows are known before anything runs (the evaluations' stages,
/// shown by their labels): a `compare` row or baseline that is none of them is refused at
/// `rst check`, not after the evaluations ran. (Rows by an axis are checked when the
/// table is built.)
fn check_compared_rows(p: &AggregateParams, inputs: &Upstreams<'_>) -> Result<(), ParamError> {
    if p.rows != STAGE {
        return Ok(());
    }
    let mut rows: Vec<String> = Vec::new();
    for up in inputs.get("evals").into_iter().flatten() {
        for name in [up.stage.to_string(), p.label(up.stage)] {
            if !rows.contains(&name) {
                rows.push(name);
            }
        }
    }
    if rows.is_empty() {
        return Ok(());
    }
    for (row, baseline) in p.compare.iter().flatten() {
        for (what, name) in [("row", row), ("baseline", baseline)] {
            if rows.contains(name) {
                continue;
            }
            let mut e = ParamError::new(
                format!("compare.{row}"),
                format!(
                    "{what} `{name}` is not a row of the table; its rows: {}",
                    rows.iter()
                        .map(|r| format!("`{r}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            e.help = crate::hint::did_you_mean(name, rows.iter().map(String::as_str));
            return Err(e);
        }
    }
    Ok(())
}

/// The table, the split its evaluations were measured on (when they agree), and the
/// evaluations that predicted a single class (`` `instance` (class c) ``).
struct Built {
    table: Table,
    split: Option<String>,
    degenerate: Vec<String>,
}

fn build_table(p: &AggregateParams, evals: &[InputArtifact]) -> Result<Built, StageError> {
    struct Entry {
        row: String,
        column: Value,
        run: Run,
    }
    let mut entries = Vec::with_capacity(evals.len());
    let mut splits: Vec<Option<String>> = Vec::new();
    let mut degenerate = Vec::new();
    for input in evals {
        for axis in input.matrix.keys() {
            if axis != &p.rows && axis != &p.columns && !p.over().contains(axis) {
                let over = if p.over().is_empty() {
                    "empty".to_string()
                } else {
                    p.over()
                        .iter()
                        .map(|a| format!("`{a}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let typo = crate::hint::closest(axis, p.over().iter().map(String::as_str))
                    .map(|o| format!(" (params.over has `{o}`: did you mean `{axis}`?)"))
                    .unwrap_or_default();
                return Err(StageError::user(format!(
                    "`{}` (input `evals`) varies the axis `{axis}`, which is neither params.rows \
                     (`{}`) nor params.columns (`{}`) nor in params.over ({over}): add `{axis}` \
                     to params.over to average over it, or take one value of it in the input \
                     (e.g. `{}[{axis}=...]`){typo}",
                    input.instance,
                    p.rows,
                    p.columns,
                    stage_name(&input.instance)
                )));
            }
        }
        let column = required_value(input, &p.columns, "columns")?;
        let row = value_text(&required_value(input, &p.rows, "rows")?);
        let Measured {
            value,
            split,
            one_class,
        } = read_metric(input, p.metric)?;
        if !splits.contains(&split) {
            splits.push(split);
        }
        if let Some(c) = one_class {
            degenerate.push(format!("`{}` (class {c})", input.instance));
        }
        entries.push(Entry {
            row,
            column,
            run: Run {
                instance: input.instance.clone(),
                value: value * 100.0,
                matrix: input.matrix.clone(),
            },
        });
    }

    // Rows: row_order first (those that have runs), then first appearance.
    let mut row_keys: Vec<String> = Vec::new();
    if let Some(order) = &p.row_order {
        row_keys.extend(
            order
                .iter()
                .filter(|k| entries.iter().any(|e| &e.row == *k))
                .cloned(),
        );
    }
    for e in &entries {
        if !row_keys.contains(&e.row) {
            row_keys.push(e.row.clone());
        }
    }
    // Columns: distinct values, sorted when all are numbers.
    let mut columns: Vec<(String, Value)> = Vec::new();
    for e in &entries {
        let key = value_text(&e.column);
        if !columns.iter().any(|(k, _)| *k == key) {
            columns.push((key, e.column.clone()));
        }
    }
    if columns.iter().all(|(_, v)| v.as_f64().is_some()) {
        columns.sort_by(|a, b| a.1.as_f64().unwrap().total_cmp(&b.1.as_f64().unwrap()));
    }
    let column_defs = columns
        .iter()
        .map(|(_, v)| {
            fill_template(&p.column_label, &p.columns, v)
                .map(|label| Column {
                    value: v.clone(),
                    label,
                })
                .map_err(|m| StageError::user(format!("params.column_label: {m}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let rows = row_keys
        .iter()
        .map(|k| Row {
            key: k.clone(),
            label: p.label(k),
        })
        .collect();
    let mut table = Table::new(
        p.title.clone(),
        p.row_header.clone(),
        p.metric.key(),
        p.decimals,
        rows,
        column_defs,
    );
    for e in entries {
        let r = row_keys.iter().position(|k| *k == e.row).unwrap();
        let key = value_text(&e.column);
        let c = columns.iter().position(|(k, _)| *k == key).unwrap();
        table.cells[r][c].push(e.run);
    }
    for row in &mut table.cells {
        for cell in row {
            cell.sort_by(|a, b| a.instance.cmp(&b.instance));
        }
    }
    let split = match splits.as_slice() {
        [Some(s)] => Some(s.clone()),
        _ => None,
    };
    Ok(Built {
        table,
        split,
        degenerate,
    })
}

/// `curves.json`: every run's curve with its group, panel and colour, as curves.png draws
/// them (the HTML report draws each run from it in the same colours).
fn curves_json(curves: &[Curve]) -> String {
    let runs: Vec<Value> = curves
        .iter()
        .map(|c| {
            json!({
                "instance": c.name,
                "group": c.group,
                "panel": c.panel,
                "color": plot::color_hex(c.color),
                "points": c.points.iter().map(|&(x, y)| json!([x, y])).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::to_string_pretty(&runs).expect("curves serialise")
}

/// One curve per train run, coloured as the table row of the same label.
fn build_curves(
    ctx: &StageCtx<'_>,
    p: &AggregateParams,
    table: &Table,
    trains: &[InputArtifact],
) -> Result<Vec<Curve>, StageError> {
    let mut extra_groups: Vec<String> = Vec::new();
    let mut curves = Vec::new();
    for input in trains {
        let points = read_curve(input)?;
        if points.is_empty() {
            ctx.log(&format!(
                "aggregate: `{}` has no `val_acc` in its history.json; left out of the curves",
                input.instance
            ));
            continue;
        }
        let key = match (p.rows.as_str(), input.matrix.get(&p.rows)) {
            (STAGE, _) | (_, None) => stage_name(&input.instance).to_string(),
            (_, Some(v)) => value_text(v),
        };
        let group = p.label(&key);
        let color = match table.rows.iter().position(|r| r.label == group) {
            Some(i) => i,
            None => {
                if !extra_groups.contains(&group) {
                    extra_groups.push(group.clone());
                }
                table.rows.len() + extra_groups.iter().position(|g| *g == group).unwrap()
            }
        };
        // Its panel: the table column of its value of the columns axis (all in one panel
        // when it has no such axis).
        let panel = input
            .matrix
            .get(&p.columns)
            .map(value_text)
            .and_then(|v| table.columns.iter().find(|c| value_text(&c.value) == v))
            .map(|c| c.label.clone())
            .unwrap_or_default();
        curves.push(Curve {
            name: input.instance.clone(),
            group,
            color,
            panel,
            points,
        });
    }
    Ok(curves)
}

impl StageKind for Aggregate {
    fn params_schema(&self) -> schemars::Schema {
        params_schema()
    }
    fn checks_upstream(&self) -> bool {
        true
    }
    fn name(&self) -> &'static str {
        "aggregate"
    }
    fn version(&self) -> u32 {
        VERSION
    }
    fn check(&self, params: &Value) -> Result<(), ParamError> {
        parse(params).map(|_| ())
    }
    fn inputs(&self) -> Option<&'static [InputDecl]> {
        Some(INPUTS)
    }
    fn canonical_params(&self, params: &Value) -> Value {
        canonical_as::<AggregateParams>(params)
    }
    fn check_upstream(&self, params: &Value, inputs: &Upstreams<'_>) -> Result<(), ParamError> {
        check_axes(&parse(params)?, inputs)
    }
}

impl StageRunner for Aggregate {
    fn kind(&self) -> &'static dyn StageKind {
        &Aggregate
    }
    fn run(&self, ctx: &StageCtx<'_>) -> Result<(), StageError> {
        let p = parse(ctx.params).map_err(StageError::from)?;
        let evals = ctx.inputs.get("evals").map(Vec::as_slice).unwrap_or(&[]);
        if evals.is_empty() {
            return Err(StageError::user(
                "input `evals` has no artifacts: list the evaluate stages, e.g. \
                 `inputs: {evals: [eval_regsl, eval_ft]}`",
            ));
        }
        let Built {
            table,
            split,
            degenerate,
        } = build_table(&p, evals)?;
        if let Some(order) = &p.row_order {
            for key in order {
                if !table.rows.iter().any(|r| &r.key == key) {
                    let keys = table.rows.iter().map(|r| r.key.as_str());
                    let hint = crate::hint::did_you_mean(key, keys)
                        .map(|h| format!(" ({h})"))
                        .unwrap_or_default();
                    ctx.log(&format!(
                        "aggregate: params.row_order: no evaluation has row `{key}`; left out{hint}"
                    ));
                }
            }
        }

        let comparisons: Vec<compare::Compared> = compared_rows(&p, &table)?
            .into_iter()
            .map(|(row, baseline)| compare::compare(&table, row, baseline, p.over()))
            .collect();
        let mut markdown = table.markdown_document();
        let mut latex = table.latex();
        if let Some(note) = &degenerate_note(&degenerate) {
            ctx.log(&format!("warning: aggregate: {note}"));
            markdown.push('\n');
            markdown.push_str(note);
            markdown.push('\n');
            latex.push_str(&format!("% {}\n", note.replace('`', "")));
        }
        for c in &comparisons {
            markdown.push('\n');
            markdown.push_str(&c.markdown(p.decimals));
            latex.push('\n');
            latex.push_str(&c.latex(p.decimals));
        }
        let spreads = p
            .realisations
            .as_deref()
            .filter(|axes| !axes.is_empty())
            .map(|axes| Spreads::of(&table, axes));
        if let Some(s) = &spreads {
            markdown.push('\n');
            markdown.push_str(&s.markdown(&table, p.decimals));
            latex.push('\n');
            latex.push_str(&s.latex(&table, p.decimals));
        }
        for line in markdown.lines() {
            ctx.log(line);
        }
        write(ctx.out, "table.md", &markdown)?;
        write(ctx.out, "table.csv", table.csv())?;
        write(ctx.out, "table.tex", latex)?;
        let mut doc = table.json();
        doc["rows_by"] = json!(p.rows);
        doc["columns_by"] = json!(p.columns);
        doc["over"] = json!(p.over());
        doc["split"] = json!(split);
        if !comparisons.is_empty() {
            doc["comparisons"] = comparisons.iter().map(compare::Compared::json).collect();
        }
        if !degenerate.is_empty() {
            doc["degenerate"] = json!(degenerate);
        }
        if let Some(s) = &spreads {
            doc["spreads"] = s.json(&table);
        }
        let text = serde_json::to_string_pretty(&doc)
            .map_err(|e| StageError::internal(format!("table.json: {e}")))?;
        write(ctx.out, "table.json", text + "\n")?;

        let x_label = p.x_label.clone().unwrap_or_else(|| p.columns.clone());
        let y_label = p.y_label.clone().unwrap_or_else(|| match &split {
            Some(s) => format!("{} {} accuracy (%)", capitalise(s), p.metric.display()),
            None => format!("{} accuracy (%)", capitalise(p.metric.display())),
        });
        let fig = AccuracyFigure::from_table(&table, &x_label, &y_label);
        let rendered = plot::render(&fig)
            .map_err(|e| StageError::internal(format!("drawing accuracy.png: {e}")))?;
        write(ctx.out, "accuracy.png", &rendered.png)?;
        write(ctx.out, "accuracy.svg", &rendered.svg)?;

        let trains = ctx.inputs.get("trains").map(Vec::as_slice).unwrap_or(&[]);
        if !trains.is_empty() {
            let curves = build_curves(ctx, &p, &table, trains)?;
            if curves.is_empty() {
                ctx.log(
                    "aggregate: no train input has `val_acc` in its history.json; \
                     curves.png is not written",
                );
            } else {
                write(ctx.out, "curves.json", curves_json(&curves) + "\n")?;
                let fig = CurvesFigure {
                    title: Some("Validation accuracy per epoch".into()),
                    x_label: "Epoch".into(),
                    y_label: "Validation accuracy (%)".into(),
                    curves,
                };
                let rendered = plot::render(&fig)
                    .map_err(|e| StageError::internal(format!("drawing curves.png: {e}")))?;
                write(ctx.out, "curves.png", &rendered.png)?;
                write(ctx.out, "curves.svg", &rendered.svg)?;
            }
        }
        Ok(())
    }
}

/// The JSON schema of this kind's `params:` (what the validator deserialises), for the
/// parameter reference (`rst params`).
pub fn params_schema() -> schemars::Schema {
    schemars::schema_for!(AggregateParams)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::Inputs;
    use std::path::PathBuf;

    /// An evaluate artifact in `dir` with this top-1 (and top-3 = top-1 + 0.1).
    fn eval_artifact(dir: &Path, instance: &str, top1: f64) -> PathBuf {
        let path = dir.join(instance.replace(['[', ']', ',', ' ', '='], "_"));
        std::fs::create_dir_all(&path).unwrap();
        let metrics = json!({
            "split": "test", "n": 100, "top1": top1, "top3": (top1 + 0.1).min(1.0),
            "per_class": [top1, top1], "confusion": [[1, 0], [0, 1]],
            "classes": ["a", "b"], "weights": "best",
        });
        std::fs::write(path.join("metrics.json"), metrics.to_string()).unwrap();
        path
    }

    fn train_artifact(dir: &Path, instance: &str, val: &[f64]) -> PathBuf {
        let path = dir.join(instance.replace(['[', ']', ',', ' ', '='], "_"));
        std::fs::create_dir_all(&path).unwrap();
        let history: Vec<Value> = val
            .iter()
            .enumerate()
            .map(|(i, v)| json!({"epoch": i + 1, "train_loss": 1.0 / (i + 1) as f64, "val_acc": v, "train_acc": v}))
            .collect();
        std::fs::write(path.join("history.json"), Value::from(history).to_string()).unwrap();
        std::fs::write(path.join("summary.json"), "{}").unwrap();
        path
    }

    /// `eval[rate=0.2, seed=1]` with matrix {rate: 0.2, seed: 1}.
    fn instance(stage: &str, matrix: &[(&str, Value)]) -> (String, BTreeMap<String, Value>) {
        let m: BTreeMap<String, Value> = matrix
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let name = if m.is_empty() {
            stage.to_string()
        } else {
            let parts: Vec<String> = matrix
                .iter()
                .map(|(k, v)| format!("{k}={}", value_text(v)))
                .collect();
            format!("{stage}[{}]", parts.join(", "))
        };
        (name, m)
    }

    fn eval(dir: &Path, stage: &str, matrix: &[(&str, Value)], top1: f64) -> InputArtifact {
        let (name, m) = instance(stage, matrix);
        InputArtifact {
            path: eval_artifact(dir, &name, top1),
            digest: format!("digest-{name}"),
            instance: name,
            matrix: m,
        }
    }

    fn train(dir: &Path, stage: &str, matrix: &[(&str, Value)], val: &[f64]) -> InputArtifact {
        let (name, m) = instance(stage, matrix);
        InputArtifact {
            path: train_artifact(dir, &name, val),
            digest: format!("digest-{name}"),
            instance: name,
            matrix: m,
        }
    }

    /// Runs the kind (check first, as the engine does) into a fresh directory.
    fn run_aggregate(
        dir: &Path,
        evals: Vec<InputArtifact>,
        trains: Vec<InputArtifact>,
        params: Value,
    ) -> Result<PathBuf, StageError> {
        let mut inputs: Inputs = BTreeMap::new();
        inputs.insert("evals".into(), evals);
        if !trains.is_empty() {
            inputs.insert("trains".into(), trains);
        }
        crate::stages::testing::run_kind(&Aggregate, &params, &inputs, dir, dir, 1)
    }

    fn read(dir: &Path, file: &str) -> String {
        std::fs::read_to_string(dir.join(file)).unwrap()
    }

    fn paper_params() -> Value {
        json!({
            "metric": "top1",
            "rows": "stage",
            "row_labels": {"eval_regsl": "Ours", "eval_ft": "Fine-tuning"},
            "row_order": ["eval_regsl", "eval_ft"],
            "columns": "rate",
            "column_label": "Noise = {percent}%",
            "over": ["seed"],
            "decimals": 2,
            "title": "Indoor, independent noise, test accuracy (%)",
        })
    }

    /// eval_ft comes first in the inputs, so row_order decides; rate 0.4 before 0.2.
    fn paper_evals(dir: &Path) -> Vec<InputArtifact> {
        vec![
            eval(
                dir,
                "eval_ft",
                &[("rate", json!(0.4)), ("seed", json!(1))],
                0.57,
            ),
            eval(
                dir,
                "eval_ft",
                &[("rate", json!(0.4)), ("seed", json!(2))],
                0.58,
            ),
            eval(
                dir,
                "eval_ft",
                &[("rate", json!(0.2)), ("seed", json!(1))],
                0.65,
            ),
            eval(
                dir,
                "eval_regsl",
                &[("rate", json!(0.2)), ("seed", json!(1))],
                0.7,
            ),
            eval(
                dir,
                "eval_regsl",
                &[("rate", json!(0.2)), ("seed", json!(2))],
                0.8,
            ),
            eval(
                dir,
                "eval_regsl",
                &[("rate", json!(0.4)), ("seed", json!(1))],
                0.6813,
            ),
            eval(
                dir,
                "eval_regsl",
                &[("rate", json!(0.4)), ("seed", json!(2))],
                0.6813,
            ),
        ]
    }

    #[test]
    fn the_paper_table_two_by_two() {
        let dir = tempfile::tempdir().unwrap();
        let out =
            run_aggregate(dir.path(), paper_evals(dir.path()), vec![], paper_params()).unwrap();
        assert_eq!(
            read(&out, "table.md"),
            "Indoor, independent noise, test accuracy (%)\n\
             \n\
             | Method | Noise = 20% | Noise = 40% |\n\
             |---|---|---|\n\
             | Ours | 75.00 ± 5.00 | 68.13 ± 0.00 |\n\
             | Fine-tuning | 65.00 (n = 1) | 57.50 ± 0.50 |\n"
        );
        let csv = read(&out, "table.csv");
        assert_eq!(csv.lines().next(), Some("method,column,mean,std,n,runs"));
        assert!(csv.contains("\nOurs,0.2,75,5,2,70;80\n"), "{csv}");
        assert!(
            csv.contains("\nFine-tuning,0.4,57.5,0.5,2,57;58\n"),
            "{csv}"
        );
        let tex = read(&out, "table.tex");
        assert!(
            tex.contains("Ours & 75.00 $\\pm$ 5.00 & 68.13 $\\pm$ 0.00 \\\\"),
            "{tex}"
        );
        let j: Value = serde_json::from_str(&read(&out, "table.json")).unwrap();
        assert_eq!(j["rows"][0]["label"], json!("Ours"));
        assert_eq!(j["rows"][0]["cells"][0]["std"], json!(5.0));
        assert_eq!(
            j["rows"][0]["cells"][0]["runs"][1]["instance"],
            json!("eval_regsl[rate=0.2, seed=2]")
        );
        assert_eq!(
            j["rows"][0]["cells"][0]["runs"][1]["matrix"]["seed"],
            json!(2)
        );
        assert_eq!(j["over"], json!(["seed"]));
        assert_eq!(j["split"], json!("test"));
        assert_eq!(j["metric"], json!("top1"));
    }

    #[test]
    fn two_spreads_when_the_runs_differ_in_data_realisation_and_seed() {
        let dir = tempfile::tempdir().unwrap();
        let mut evals = Vec::new();
        // Two noise realisations × two seeds at 80%: realisation means 81 and 86.
        for (noise, seed, v) in [(1, 1, 0.80), (1, 2, 0.82), (2, 1, 0.84), (2, 2, 0.88)] {
            let m = [
                ("rate", json!(0.8)),
                ("noise_seed", json!(noise)),
                ("seed", json!(seed)),
            ];
            evals.push(eval(dir.path(), "eval_regsl", &m, v));
        }
        let mut params = paper_params();
        params["over"] = json!(["seed", "noise_seed"]);
        params["realisations"] = json!(["noise_seed"]);
        let out = run_aggregate(dir.path(), evals.clone(), vec![], params.clone()).unwrap();
        let md = read(&out, "table.md");
        assert!(md.contains("| Ours | 83.50 ± 2.96 |"), "{md}");
        assert!(
            md.contains("between data realisations (`noise_seed`)"),
            "{md}"
        );
        assert!(
            md.contains("| Ours | 2.50 between 2 realisations, 1.50 between seeds |"),
            "{md}"
        );
        let j: Value = serde_json::from_str(&read(&out, "table.json")).unwrap();
        let cell = &j["spreads"]["rows"][0]["cells"][0];
        assert_eq!(cell["between_realisations"], json!(2.5));
        assert_eq!(cell["between_seeds"], json!(1.5));
        assert!(read(&out, "table.tex").contains("2.50 between 2 realisations"));
        // A realisation axis must be one averaged over.
        params["realisations"] = json!(["split_seed"]);
        let err = parse(&params).unwrap_err();
        assert!(
            format!("{err:?}").contains("is not averaged over"),
            "{err:?}"
        );
    }

    #[test]
    fn compare_pairs_rows_by_seed_under_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let seeds = |stage: &str, rate: f64, values: &[f64]| -> Vec<InputArtifact> {
            values
                .iter()
                .enumerate()
                .map(|(s, v)| {
                    let m = [("rate", json!(rate)), ("seed", json!(s + 1))];
                    eval(dir.path(), stage, &m, *v)
                })
                .collect()
        };
        let mut evals = seeds("eval_regsl", 0.2, &[0.75, 0.765, 0.74]);
        evals.extend(seeds("eval_ft", 0.2, &[0.73, 0.75, 0.735]));
        evals.extend(seeds("eval_regsl", 0.4, &[0.70]));
        evals.extend(seeds("eval_ft", 0.4, &[0.69]));
        let mut params = paper_params();
        params["compare"] = json!({"Ours": "eval_ft"});
        let out = run_aggregate(dir.path(), evals.clone(), vec![], params.clone()).unwrap();
        let md = read(&out, "table.md");
        assert!(
            md.contains("| Ours | 75.17 ± 1.03 | 70.00 (n = 1) |"),
            "{md}"
        );
        assert!(
            md.contains("Ours − Fine-tuning, paired by `seed`: mean difference"),
            "{md}"
        );
        assert!(
            md.contains("| mean difference | +1.33 | n too small |"),
            "{md}"
        );
        let j: Value = serde_json::from_str(&read(&out, "table.json")).unwrap();
        let c = &j["comparisons"][0];
        assert_eq!(c["baseline"], json!("Fine-tuning"));
        assert_eq!(c["columns"][0]["n"], json!(3));
        assert_eq!(c["columns"][1]["too_small"], json!(true));
        assert!(read(&out, "table.tex").contains("mean difference & +1.33 & n too small"));

        params["compare"] = json!({"Ours": "Finetuning"});
        let err = run_aggregate(dir.path(), evals.clone(), vec![], params.clone()).unwrap_err();
        assert!(
            err.message
                .contains("baseline `Finetuning` is not a row of the table")
                && err.message.contains("`Fine-tuning`"),
            "{}",
            err.message
        );
        params["compare"] = json!({"Ours": "eval_regsl"});
        let err = run_aggregate(dir.path(), evals.clone(), vec![], params.clone()).unwrap_err();
        assert!(
            err.message.contains("are the same row (`Ours`)"),
            "{}",
            err.message
        );
        params["compare"] = json!({"Ours": "Ours"});
        let err = parse(&params).unwrap_err();
        assert!(format!("{err:?}").contains("with itself"), "{err:?}");
    }

    #[test]
    fn a_degenerate_evaluation_is_flagged_under_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let evals = paper_evals(dir.path());
        // One evaluation predicts class 1 for everything.
        let m = evals[0].path.join("metrics.json");
        let mut metrics: Value =
            serde_json::from_str(&std::fs::read_to_string(&m).unwrap()).unwrap();
        metrics["confusion"] = json!([[0, 40], [0, 60]]);
        std::fs::write(&m, metrics.to_string()).unwrap();
        let out = run_aggregate(dir.path(), evals.clone(), vec![], paper_params()).unwrap();
        let md = read(&out, "table.md");
        assert!(
            md.contains("Warning: 1 evaluation(s) predict one class for every image")
                && md.contains(&format!("`{}` (class 1)", evals[0].instance)),
            "{md}"
        );
        let j: Value = serde_json::from_str(&read(&out, "table.json")).unwrap();
        assert_eq!(j["degenerate"].as_array().unwrap().len(), 1);
        // A healthy confusion matrix: no warning.
        metrics["confusion"] = json!([[30, 10], [5, 55]]);
        std::fs::write(&m, metrics.to_string()).unwrap();
        let out = run_aggregate(dir.path(), evals, vec![], paper_params()).unwrap();
        assert!(!read(&out, "table.md").contains("Warning"));
    }

    #[test]
    fn top3_and_decimals() {
        let dir = tempfile::tempdir().unwrap();
        let mut params = paper_params();
        params["metric"] = json!("top3");
        params["decimals"] = json!(1);
        let out = run_aggregate(dir.path(), paper_evals(dir.path()), vec![], params).unwrap();
        assert!(read(&out, "table.md").contains("| Ours | 85.0 ± 5.0 | 78.1 ± 0.0 |"));
    }

    #[test]
    fn first_appearance_order_and_default_labels() {
        let dir = tempfile::tempdir().unwrap();
        let out = run_aggregate(
            dir.path(),
            paper_evals(dir.path()),
            vec![],
            json!({"columns": "rate", "over": ["seed"]}),
        )
        .unwrap();
        assert_eq!(
            read(&out, "table.md"),
            "| Method | rate = 0.2 | rate = 0.4 |\n\
             |---|---|---|\n\
             | eval_ft | 65.00 (n = 1) | 57.50 ± 0.50 |\n\
             | eval_regsl | 75.00 ± 5.00 | 68.13 ± 0.00 |\n"
        );
    }

    #[test]
    fn grouping_by_an_axis_with_a_missing_cell() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let m = |method: &str, rate: f64, seed: u64| {
            vec![
                ("method", json!(method)),
                ("rate", json!(rate)),
                ("seed", json!(seed)),
            ]
        };
        let evals = vec![
            eval(d, "evaluate", &m("ours", 0.2, 1), 0.75),
            eval(d, "evaluate", &m("ours", 0.8, 1), 0.34),
            eval(d, "evaluate", &m("ours", 0.8, 2), 0.36),
            eval(d, "evaluate", &m("ft", 0.2, 1), 0.65),
        ];
        let out = run_aggregate(
            d,
            evals,
            vec![],
            json!({
                "rows": "method", "columns": "rate", "over": ["seed"],
                "row_labels": {"ours": "Ours"}, "row_header": "Approach",
                "column_label": "{percent}%", "decimals": 0,
            }),
        )
        .unwrap();
        assert_eq!(
            read(&out, "table.md"),
            "| Approach | 20% | 80% |\n\
             |---|---|---|\n\
             | Ours | 75 (n = 1) | 35 ± 1 |\n\
             | ft | 65 (n = 1) | – |\n"
        );
        assert!(read(&out, "table.csv").contains("\nft,0.8,,,0,\n"));
        assert!(read(&out, "table.tex").contains("ft & 65 (n = 1) & -- \\\\"));
    }

    #[test]
    fn string_columns_keep_their_order_and_stage_can_be_the_columns() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let evals = vec![
            eval(d, "eval_b", &[("model", json!("resnet18"))], 0.5),
            eval(d, "eval_a", &[("model", json!("resnet18"))], 0.6),
            eval(d, "eval_a", &[("model", json!("mini"))], 0.7),
        ];
        let out = run_aggregate(
            d,
            evals.clone(),
            vec![],
            json!({"columns": "model", "column_label": "{value}"}),
        )
        .unwrap();
        assert_eq!(
            read(&out, "table.md"),
            "| Method | resnet18 | mini |\n|---|---|---|\n\
             | eval_b | 50.00 (n = 1) | – |\n| eval_a | 60.00 (n = 1) | 70.00 (n = 1) |\n"
        );
        let out = run_aggregate(
            d,
            evals,
            vec![],
            json!({"rows": "model", "columns": "stage", "column_label": "{value}", "row_header": "Model"}),
        )
        .unwrap();
        assert!(read(&out, "table.md").starts_with("| Model | eval_b | eval_a |\n"));
    }

    #[test]
    fn stray_and_missing_axes_are_user_errors_naming_the_instance() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let evals = vec![eval(
            d,
            "eval_regsl",
            &[
                ("rate", json!(0.2)),
                ("seed", json!(1)),
                ("lr", json!(0.01)),
            ],
            0.7,
        )];
        let err = run_aggregate(d, evals.clone(), vec![], paper_params()).unwrap_err();
        assert!(err.user);
        assert!(err.message.contains("`lr`"), "{}", err.message);
        assert!(
            err.message
                .contains("eval_regsl[rate=0.2, seed=1, lr=0.01]"),
            "{}",
            err.message
        );
        assert!(err.message.contains("params.over"), "{}", err.message);
        let mut params = paper_params();
        params["over"] = json!(["sed"]);
        let seeded = vec![eval(
            d,
            "eval_regsl",
            &[("rate", json!(0.2)), ("seed", json!(1))],
            0.7,
        )];
        let err = run_aggregate(d, seeded, vec![], params).unwrap_err();
        assert!(
            err.message
                .contains("params.over has `sed`: did you mean `seed`?"),
            "{}",
            err.message
        );
        let mut params = paper_params();
        params["over"] = json!(["seed", "lr"]);
        run_aggregate(d, evals, vec![], params).unwrap();

        let evals = vec![eval(d, "eval_ft", &[("seed", json!(1))], 0.7)];
        let err = run_aggregate(d, evals, vec![], paper_params()).unwrap_err();
        assert!(err.user);
        assert!(
            err.message.contains("`eval_ft[seed=1]`")
                && err.message.contains("no matrix axis `rate`")
                && err.message.contains("params.columns"),
            "{}",
            err.message
        );
        let evals = vec![eval(d, "eval_ft", &[("rate", json!(0.2))], 0.7)];
        let mut params = paper_params();
        params["rows"] = json!("method");
        let err = run_aggregate(d, evals, vec![], params).unwrap_err();
        assert!(
            err.message.contains("no matrix axis `method`"),
            "{}",
            err.message
        );
    }

    #[test]
    fn missing_or_malformed_metrics_are_user_errors() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut e = eval(d, "eval_ft", &[("rate", json!(0.2))], 0.7);
        std::fs::remove_file(e.path.join("metrics.json")).unwrap();
        let err = run_aggregate(d, vec![e.clone()], vec![], paper_params()).unwrap_err();
        assert!(err.user);
        assert!(
            err.message.contains("`eval_ft[rate=0.2]`") && err.message.contains("no metrics.json"),
            "{}",
            err.message
        );
        std::fs::write(e.path.join("metrics.json"), "{\"top1\": ").unwrap();
        let err = run_aggregate(d, vec![e.clone()], vec![], paper_params()).unwrap_err();
        assert!(
            err.user && err.message.contains("not valid JSON"),
            "{}",
            err.message
        );
        std::fs::write(e.path.join("metrics.json"), "{\"top5\": 0.9}").unwrap();
        let err = run_aggregate(d, vec![e.clone()], vec![], paper_params()).unwrap_err();
        assert!(
            err.message.contains("has no `top1`") && err.message.contains("`top5`"),
            "{}",
            err.message
        );
        std::fs::write(e.path.join("metrics.json"), "{\"top1\": 75.2}").unwrap();
        let err = run_aggregate(d, vec![e.clone()], vec![], paper_params()).unwrap_err();
        assert!(err.message.contains("not a fraction"), "{}", err.message);
        std::fs::write(e.path.join("metrics.json"), "{\"top1\": \"high\"}").unwrap();
        let err = run_aggregate(d, vec![e.clone()], vec![], paper_params()).unwrap_err();
        assert!(err.message.contains("not a number"), "{}", err.message);
        e.path = d.join("nowhere");
        let err = run_aggregate(d, vec![e], vec![], paper_params()).unwrap_err();
        assert!(err.user);
        let err = run_aggregate(d, vec![], vec![], paper_params()).unwrap_err();
        assert!(
            err.user && err.message.contains("`evals`"),
            "{}",
            err.message
        );
    }

    #[test]
    fn plots_exist_render_text_and_are_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let trains = vec![
            train(
                d,
                "ft_regsl",
                &[("rate", json!(0.2)), ("seed", json!(1))],
                &[0.5, 0.6, 0.7],
            ),
            train(
                d,
                "ft_regsl",
                &[("rate", json!(0.2)), ("seed", json!(2))],
                &[0.5, 0.62, 0.72],
            ),
            train(
                d,
                "ft_plain",
                &[("rate", json!(0.2)), ("seed", json!(1))],
                &[0.4, 0.5, 0.6],
            ),
        ];
        let mut params = paper_params();
        params["row_labels"]["ft_regsl"] = json!("Ours");
        let a = run_aggregate(d, paper_evals(d), trains.clone(), params.clone()).unwrap();
        let b = run_aggregate(d, paper_evals(d), trains, params).unwrap();
        let mut files: Vec<String> = std::fs::read_dir(&a)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(
            files,
            [
                "accuracy.png",
                "accuracy.svg",
                "curves.json",
                "curves.png",
                "curves.svg",
                "table.csv",
                "table.json",
                "table.md",
                "table.tex"
            ]
        );
        for f in &files {
            assert_eq!(
                std::fs::read(a.join(f)).unwrap(),
                std::fs::read(b.join(f)).unwrap(),
                "{f} differs between two runs"
            );
        }
        let svg = read(&a, "accuracy.svg");
        for text in [
            "Noise = 20%",
            "Noise = 40%",
            "rate",
            "Test top-1 accuracy (%)",
            "Ours",
            "Fine-tuning",
        ] {
            assert!(svg.contains(text), "{text} not in accuracy.svg");
        }
        let curves = read(&a, "curves.svg");
        for text in [
            "Epoch",
            "Validation accuracy (%)",
            // One panel per column, the table's row labels in the legend.
            "Noise = 20%",
            ">\nOurs",
            ">\nft_plain",
        ] {
            assert!(curves.contains(text), "{text:?} not in curves.svg");
        }
        // ft_regsl's curves take the colour of the `Ours` row (tab10 blue), ft_plain the next
        // one after the table's rows.
        assert!(curves.contains("stroke=\"#1F77B4\""));
        assert!(curves.contains("stroke=\"#2CA02C\""));
        // curves.json: every run, in the colour, group and panel curves.png gives it.
        let runs: Value = serde_json::from_str(&read(&a, "curves.json")).unwrap();
        let runs = runs.as_array().unwrap();
        assert_eq!(runs.len(), 3);
        let ours = runs.iter().find(|r| r["group"] == "Ours").unwrap();
        assert_eq!(ours["color"], "#1f77b4");
        assert_eq!(ours["panel"], "Noise = 20%");
        assert!(ours["instance"].as_str().unwrap().starts_with("ft_regsl"));
        assert!(!ours["points"].as_array().unwrap().is_empty());
        let plain = runs.iter().find(|r| r["group"] == "ft_plain").unwrap();
        assert_eq!(plain["color"], "#2ca02c");
        for png in ["accuracy.png", "curves.png"] {
            let bytes = std::fs::read(a.join(png)).unwrap();
            assert!(bytes.len() > 5_000, "{png}: {} bytes", bytes.len());
            let img = image::load_from_memory(&bytes).unwrap().to_rgb8();
            let dark = img
                .pixels()
                .filter(|p| p.0.iter().map(|&v| v as u32).sum::<u32>() < 200)
                .count();
            assert!(dark > 1000, "{png}: {dark} dark pixels");
        }
    }

    #[test]
    fn no_curves_without_trains_or_val_acc() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let out = run_aggregate(d, paper_evals(d), vec![], paper_params()).unwrap();
        assert!(!out.join("curves.png").exists());
        let t = train(d, "ft_plain", &[], &[]);
        let out = run_aggregate(d, paper_evals(d), vec![t.clone()], paper_params()).unwrap();
        assert!(!out.join("curves.png").exists());
        std::fs::write(t.path.join("history.json"), "{}").unwrap();
        let err = run_aggregate(d, paper_evals(d), vec![t], paper_params()).unwrap_err();
        assert!(
            err.user && err.message.contains("not a list"),
            "{}",
            err.message
        );
    }

    #[test]
    fn check_reports_key_paths_and_hints() {
        assert!(Aggregate.check(&paper_params()).is_ok());
        assert!(Aggregate.check(&json!({"columns": "rate"})).is_ok());
        let check = |patch: Value| {
            let mut p = paper_params();
            for (k, v) in patch.as_object().unwrap() {
                p[k] = v.clone();
            }
            Aggregate.check(&p).unwrap_err()
        };
        let e = check(json!({"metric": "top-1"}));
        assert_eq!(
            (e.path.as_str(), e.help.as_deref()),
            ("metric", Some("did you mean `top1`?"))
        );
        let e = check(json!({"metric": "top5"}));
        assert_eq!(e.path, "metric");
        let e = check(json!({"decimals": 7}));
        assert_eq!(e.path, "decimals");
        let e = check(json!({"decimals": -1}));
        assert_eq!(e.path, "decimals");
        let e = check(json!({"over": ["seed", "rate"]}));
        assert_eq!(e.path, "over[1]");
        let e = check(json!({"over": ["seed", "seed"]}));
        assert_eq!(e.path, "over[1]");
        let e = check(json!({"columns": "stage"}));
        assert_eq!(e.path, "columns");
        let e = check(json!({"column_label": "Noise = {pct}%"}));
        assert_eq!(e.path, "column_label");
        let e = check(json!({"row_order": ["a", "a"]}));
        assert_eq!(e.path, "row_order[1]");
        let e = check(json!({"row_labels": {"a": 1}}));
        assert_eq!(e.path, "row_labels.a");
        let e = check(json!({"colums": "rate"}));
        assert_eq!(e.help.as_deref(), Some("did you mean `columns`?"), "{e:?}");
        let e = Aggregate.check(&json!({"rows": "stage"})).unwrap_err();
        assert!(e.message.contains("columns"), "{e:?}");
    }

    #[test]
    fn declares_its_inputs() {
        let decl = Aggregate.inputs().unwrap();
        assert_eq!(
            decl.iter()
                .map(|d| (d.name, d.arity, d.required))
                .collect::<Vec<_>>(),
            [("evals", Arity::Many, true), ("trains", Arity::Many, false)]
        );
        assert_eq!((Aggregate.name(), Aggregate.version()), ("aggregate", 3));
        assert!(!Aggregate.uses_torch());
        assert_eq!(stage_name("eval_regsl[rate=0.4, seed=1]"), "eval_regsl");
    }
}
