//! `rst diff`: what changed between two recorded runs (as `dvc exp diff`): the `--set`
//! overrides and pipeline parameters, the stage instances computed in one run but not the
//! other (or with other keys), and every published table cell side by side.
//!
//! Phases: [`diff`] compares two [`RunRecord`]s (reading the tables of their `aggregate`
//! artifacts from the store, when it still has them) into a [`RunDiff`]; [`RunDiff::text`]
//! and [`RunDiff::json`] render it.
use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::iso_time;
use super::runlog::{RunRecord, StageRun};
use crate::cache::store::Store;

/// A parameter or override whose value differs (None: absent in that run).
#[derive(Debug, Clone, PartialEq)]
pub struct Changed {
    pub name: String,
    pub a: Option<String>,
    pub b: Option<String>,
}

/// A stage instance in one run only, with another key, or computed (`ran`) in exactly one
/// of the runs.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceChange {
    pub instance: String,
    /// Its outcome in each run (`ran`, `cached`, …; None: not in that run).
    pub a: Option<String>,
    pub b: Option<String>,
    /// Its key differs between the runs (other params or inputs).
    pub key_changed: bool,
}

/// One table cell of a published `aggregate` in both runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub row: String,
    pub column: String,
    pub a: Option<f64>,
    pub b: Option<f64>,
    /// The cell's text (`75.21 ± 0.46`) in each run.
    pub a_text: Option<String>,
    pub b_text: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TableDiff {
    /// The aggregate instance.
    pub instance: String,
    pub cells: Vec<Cell>,
    /// Why a run's table could not be read (its artifact was collected, say).
    pub missing: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunDiff {
    pub a: Summary,
    pub b: Summary,
    pub overrides: Vec<Changed>,
    pub params: Vec<Changed>,
    pub instances: Vec<InstanceChange>,
    /// Instances that were the same computation (same key) in both runs.
    pub unchanged: usize,
    pub tables: Vec<TableDiff>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub id: String,
    pub pipeline: String,
    pub started_unix: f64,
    pub status: String,
    pub set: Vec<String>,
}

impl Summary {
    fn of(r: &RunRecord) -> Summary {
        Summary {
            id: r.id.clone(),
            pipeline: r.pipeline.clone(),
            started_unix: r.started_unix,
            status: r.status.clone(),
            set: r.set.clone(),
        }
    }
}

/// `k=v` overrides as a map (a later `--set` of the same key wins, as when loading).
fn overrides(set: &[String]) -> BTreeMap<String, String> {
    set.iter()
        .map(|s| match s.split_once('=') {
            Some((k, v)) => (k.trim().to_string(), v.trim().to_string()),
            None => (s.clone(), String::new()),
        })
        .collect()
}

fn changed<V: PartialEq + Clone>(
    a: &BTreeMap<String, V>,
    b: &BTreeMap<String, V>,
    text: impl Fn(&V) -> String,
) -> Vec<Changed> {
    let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    names
        .into_iter()
        .filter(|n| a.get(*n) != b.get(*n))
        .map(|n| Changed {
            name: n.clone(),
            a: a.get(n).map(&text),
            b: b.get(n).map(&text),
        })
        .collect()
}

/// Compares run `a` with run `b` (usually the older with the newer).
pub fn diff(store: &Store, a: &RunRecord, b: &RunRecord) -> RunDiff {
    let by_name = |r: &RunRecord| -> BTreeMap<String, StageRun> {
        r.stages
            .iter()
            .map(|s| (s.instance.clone(), s.clone()))
            .collect()
    };
    let (sa, sb) = (by_name(a), by_name(b));
    let mut instances = Vec::new();
    let mut unchanged = 0;
    // In the newer run's order (topological), then what only the older one had.
    let mut order: Vec<&String> = b.stages.iter().map(|s| &s.instance).collect();
    order.extend(
        a.stages
            .iter()
            .map(|s| &s.instance)
            .filter(|n| !sb.contains_key(*n)),
    );
    for name in order {
        let (x, y) = (sa.get(name), sb.get(name));
        let key_changed = match (x, y) {
            (Some(x), Some(y)) => x.key != y.key,
            _ => false,
        };
        let ran = |s: Option<&StageRun>| s.is_some_and(|s| s.outcome == "ran");
        // Listed: in one run only, another key, or computed in exactly one of them.
        if x.is_some() && y.is_some() && !key_changed && ran(x) == ran(y) {
            unchanged += 1;
            continue;
        }
        instances.push(InstanceChange {
            instance: name.clone(),
            a: x.map(|s| s.outcome.clone()),
            b: y.map(|s| s.outcome.clone()),
            key_changed,
        });
    }
    let tables = sb
        .values()
        .chain(sa.values().filter(|s| !sb.contains_key(&s.instance)))
        .filter(|s| s.kind == "aggregate")
        .map(|s| {
            let artifact = |r: &BTreeMap<String, StageRun>| {
                r.get(&s.instance).and_then(|x| x.artifact.clone())
            };
            table_diff(store, &s.instance, artifact(&sa), artifact(&sb))
        })
        .collect();
    RunDiff {
        a: Summary::of(a),
        b: Summary::of(b),
        overrides: changed(&overrides(&a.set), &overrides(&b.set), String::clone),
        params: changed(&a.params, &b.params, crate::report::value_text),
        instances,
        unchanged,
        tables,
    }
}

/// (row label, column label) → (mean, text) of a table.json.
type Cells = BTreeMap<(String, String), (Option<f64>, String)>;

fn read_table(store: &Store, artifact: &str) -> Result<(Vec<String>, Vec<String>, Cells), String> {
    let path = store.object_path(artifact).join("table.json");
    let bytes = crate::cache::digest::read_regular(&path).map_err(|_| {
        format!(
            "its table ({}) is no longer in the cache",
            artifact.chars().take(12).collect::<String>()
        )
    })?;
    let doc: Value = serde_json::from_slice(&bytes).map_err(|e| format!("table.json: {e}"))?;
    let columns: Vec<String> = doc["columns"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["label"].as_str().unwrap_or_default().to_string())
        .collect();
    let mut rows = Vec::new();
    let mut cells = Cells::new();
    for row in doc["rows"].as_array().into_iter().flatten() {
        let label = row["label"].as_str().unwrap_or_default().to_string();
        for (c, cell) in row["cells"].as_array().into_iter().flatten().enumerate() {
            let column = columns.get(c).cloned().unwrap_or_default();
            let text = cell["text"].as_str().unwrap_or_default().to_string();
            cells.insert((label.clone(), column), (cell["mean"].as_f64(), text));
        }
        rows.push(label);
    }
    Ok((rows, columns, cells))
}

fn table_diff(store: &Store, instance: &str, a: Option<String>, b: Option<String>) -> TableDiff {
    let mut missing = Vec::new();
    let mut read = |which: &str, artifact: Option<String>| match artifact {
        None => {
            missing.push(format!("run {which} has no table of {instance}"));
            None
        }
        Some(art) => match read_table(store, &art) {
            Ok(t) => Some(t),
            Err(e) => {
                missing.push(format!("run {which}: {e}"));
                None
            }
        },
    };
    let (ta, tb) = (read("A", a), read("B", b));
    // Rows and columns in B's order, then what only A had.
    let mut rows: Vec<String> = Vec::new();
    let mut columns: Vec<String> = Vec::new();
    for t in [&tb, &ta].into_iter().flatten() {
        for r in &t.0 {
            if !rows.contains(r) {
                rows.push(r.clone());
            }
        }
        for c in &t.1 {
            if !columns.contains(c) {
                columns.push(c.clone());
            }
        }
    }
    let get = |t: &Option<(Vec<String>, Vec<String>, Cells)>, k: &(String, String)| {
        t.as_ref().and_then(|t| t.2.get(k).cloned())
    };
    let mut cells = Vec::new();
    for r in &rows {
        for c in &columns {
            let k = (r.clone(), c.clone());
            let (x, y) = (get(&ta, &k), get(&tb, &k));
            if x.is_none() && y.is_none() {
                continue;
            }
            cells.push(Cell {
                row: r.clone(),
                column: c.clone(),
                a: x.as_ref().and_then(|v| v.0),
                b: y.as_ref().and_then(|v| v.0),
                a_text: x.map(|v| v.1),
                b_text: y.map(|v| v.1),
            });
        }
    }
    TableDiff {
        instance: instance.to_string(),
        cells,
        missing,
    }
}

fn or_dash(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("—")
}

impl RunDiff {
    /// The report for a terminal.
    pub fn text(&self) -> String {
        let run = |w: &str, s: &Summary| {
            format!(
                "{w} {}  {}  {} ({}){}\n",
                s.id,
                iso_time(s.started_unix),
                s.pipeline,
                s.status,
                if s.set.is_empty() {
                    String::new()
                } else {
                    format!("  --set {}", s.set.join(" --set "))
                }
            )
        };
        let mut out = run("A", &self.a) + &run("B", &self.b);
        let mut section = |title: &str, lines: Vec<String>| {
            out.push('\n');
            out.push_str(title);
            out.push('\n');
            if lines.is_empty() {
                out.push_str("  (none)\n");
            }
            for l in lines {
                out.push_str(&format!("  {l}\n"));
            }
        };
        let changes = |v: &[Changed]| -> Vec<String> {
            v.iter()
                .map(|c| format!("{}: {} → {}", c.name, or_dash(&c.a), or_dash(&c.b)))
                .collect()
        };
        section("overrides (--set)", changes(&self.overrides));
        section("parameters", changes(&self.params));
        let width = self
            .instances
            .iter()
            .map(|i| i.instance.len())
            .max()
            .unwrap_or(0);
        section(
            &format!(
                "stage instances not the same computation in both ({} the same)",
                self.unchanged
            ),
            self.instances
                .iter()
                .map(|i| {
                    format!(
                        "{:<width$}  {} → {}{}",
                        i.instance,
                        or_dash(&i.a),
                        or_dash(&i.b),
                        if i.key_changed { "  (other key)" } else { "" }
                    )
                })
                .collect(),
        );
        for t in &self.tables {
            let mut lines: Vec<String> = t.missing.clone();
            for c in &t.cells {
                let delta = match (c.a, c.b) {
                    (Some(a), Some(b)) => format!("  ({:+.2})", b - a),
                    _ => String::new(),
                };
                lines.push(format!(
                    "{} | {}: {} → {}{delta}",
                    c.row,
                    c.column,
                    or_dash(&c.a_text),
                    or_dash(&c.b_text)
                ));
            }
            section(&format!("table of {}", t.instance), lines);
        }
        out
    }

    pub fn json(&self) -> Value {
        let summary = |s: &Summary| {
            json!({"id": s.id, "pipeline": s.pipeline, "started": iso_time(s.started_unix),
                   "status": s.status, "set": s.set})
        };
        let changes = |v: &[Changed]| -> Value {
            v.iter()
                .map(|c| json!({"name": c.name, "a": c.a, "b": c.b}))
                .collect()
        };
        json!({
            "a": summary(&self.a),
            "b": summary(&self.b),
            "overrides": changes(&self.overrides),
            "params": changes(&self.params),
            "unchanged_instances": self.unchanged,
            "instances": self.instances.iter().map(|i| json!({
                "instance": i.instance, "a": i.a, "b": i.b, "key_changed": i.key_changed,
            })).collect::<Value>(),
            "tables": self.tables.iter().map(|t| json!({
                "instance": t.instance,
                "missing": t.missing,
                "cells": t.cells.iter().map(|c| json!({
                    "row": c.row, "column": c.column, "a": c.a, "b": c.b,
                    "a_text": c.a_text, "b_text": c.b_text,
                    "change": match (c.a, c.b) { (Some(a), Some(b)) => json!(b - a), _ => Value::Null },
                })).collect::<Value>(),
            })).collect::<Value>(),
        })
    }
}
