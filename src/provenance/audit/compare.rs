//! Comparing a fresh artifact with the cached one: which files differ, how far
//! accuracies (metrics, summaries, table cells) and weights moved, and the [`Verdict`].
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::cache::digest;

/// How a recomputed stage compares with its cache entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Verdict {
    /// Same artifact digest.
    #[serde(rename = "bit-identical")]
    BitIdentical,
    /// Differs, but every accuracy compared moved by at most `--tolerance` points.
    #[serde(rename = "within tolerance")]
    WithinTolerance,
    #[serde(rename = "differs")]
    Differs,
    /// The cached artifact no longer matches the digest it was stored under.
    #[serde(rename = "cache corrupt")]
    CacheCorrupt,
    /// The recomputation did not run to the end.
    #[serde(rename = "failed")]
    Failed,
}

impl Verdict {
    /// What the report and audit.json call it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::BitIdentical => "bit-identical",
            Verdict::WithinTolerance => "within tolerance",
            Verdict::Differs => "differs",
            Verdict::CacheCorrupt => "cache corrupt",
            Verdict::Failed => "failed",
        }
    }

    /// Whether the stage met its standard (exit 0).
    pub fn passed(self) -> bool {
        matches!(self, Verdict::BitIdentical | Verdict::WithinTolerance)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FileChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

impl FileChanges {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// An accuracy that moved, in percentage points.
#[derive(Debug, Clone, Serialize)]
pub struct MetricChange {
    pub file: String,
    pub metric: String,
    pub cached: f64,
    pub fresh: f64,
    pub delta_points: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct WeightChange {
    pub file: String,
    /// Largest |cached - fresh| over all f32/f64 tensors.
    pub max_abs_diff: f64,
    pub tensor: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// A table cell (aggregate) that moved.
#[derive(Debug, Clone, Serialize)]
pub struct CellChange {
    pub row: String,
    pub column: String,
    pub cached: String,
    pub fresh: String,
    pub delta_points: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Comparison {
    pub files: FileChanges,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricChange>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub weights: Vec<WeightChange>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cells: Vec<CellChange>,
    /// An accuracy was compared (metrics or table cells), moved or not: what
    /// `--tolerance` judges.
    pub accuracy_compared: bool,
}

impl Comparison {
    /// The largest accuracy change compared (metrics and table cells), if any was.
    pub fn max_delta(&self) -> Option<f64> {
        if !self.accuracy_compared {
            return None;
        }
        if self.metrics.is_empty() && self.cells.is_empty() {
            return Some(0.0);
        }
        self.metrics
            .iter()
            .map(|m| Some(m.delta_points.abs()))
            .chain(self.cells.iter().map(|c| c.delta_points.map(f64::abs)))
            .try_fold(None::<f64>, |acc, d| {
                let d = d?;
                Some(Some(acc.map_or(d, |a| a.max(d))))
            })
            .flatten()
    }
}

fn files_with_hashes(dir: &Path) -> BTreeMap<String, (u64, blake3::Hash)> {
    digest::list_files(dir)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(rel, abs)| Some((rel, digest::hash_file(&abs).ok()?)))
        .collect()
}

pub(super) fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Accuracy fields (fractions in [0, 1]) compared in [`ACCURACY_FILES`].
const METRICS: [&str; 3] = ["top1", "top3", "best_val_acc"];

/// Where accuracies are: `evaluate`'s metrics, `train`'s summary, `aggregate`'s table.
const ACCURACY_FILES: [&str; 3] = ["metrics.json", "summary.json", "table.json"];

fn compare_metrics(rel: &str, a: &Value, b: &Value, out: &mut Vec<MetricChange>) {
    for m in METRICS {
        if let (Some(x), Some(y)) = (a[m].as_f64(), b[m].as_f64()) {
            out.push(MetricChange {
                file: rel.to_string(),
                metric: m.to_string(),
                cached: x,
                fresh: y,
                delta_points: (y - x) * 100.0,
            });
        }
    }
}

fn tensor_values(v: &safetensors::tensor::TensorView<'_>) -> Option<Vec<f64>> {
    use safetensors::Dtype;
    let d = v.data();
    match v.dtype() {
        Dtype::F32 => Some(
            d.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                .collect(),
        ),
        Dtype::F64 => Some(
            d.chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
        ),
        _ => None,
    }
}

/// Max |a - b| over the float tensors two safetensors files share.
pub fn compare_safetensors(rel: &str, a: &[u8], b: &[u8]) -> WeightChange {
    let mut w = WeightChange {
        file: rel.to_string(),
        max_abs_diff: 0.0,
        tensor: String::new(),
        notes: Vec::new(),
    };
    let (ta, tb) = match (
        safetensors::SafeTensors::deserialize(a),
        safetensors::SafeTensors::deserialize(b),
    ) {
        (Ok(x), Ok(y)) => (x, y),
        _ => {
            w.notes.push("not readable as safetensors".into());
            w.max_abs_diff = f64::NAN;
            return w;
        }
    };
    let fresh: HashMap<String, safetensors::tensor::TensorView<'_>> =
        tb.tensors().into_iter().collect();
    let mut names: Vec<String> = Vec::new();
    for (name, va) in ta.tensors() {
        names.push(name.clone());
        let Some(vb) = fresh.get(&name) else {
            w.notes
                .push(format!("tensor {name} missing in the fresh file"));
            continue;
        };
        if va.shape() != vb.shape() || va.dtype() != vb.dtype() {
            w.notes.push(format!(
                "tensor {name}: {:?} {:?} -> {:?} {:?}",
                va.dtype(),
                va.shape(),
                vb.dtype(),
                vb.shape()
            ));
            continue;
        }
        match (tensor_values(&va), tensor_values(vb)) {
            (Some(x), Some(y)) => {
                let d = x
                    .iter()
                    .zip(&y)
                    .map(|(p, q)| (p - q).abs())
                    .fold(0.0f64, |m, d| if d.is_nan() || d > m { d } else { m });
                if d > w.max_abs_diff || (d.is_nan() && !w.max_abs_diff.is_nan()) {
                    w.max_abs_diff = d;
                    w.tensor = name.clone();
                }
            }
            _ => {
                if va.data() != vb.data() {
                    w.notes
                        .push(format!("tensor {name} ({:?}) differs", va.dtype()));
                }
            }
        }
    }
    for name in fresh.keys().filter(|n| !names.contains(n)) {
        w.notes
            .push(format!("tensor {name} only in the fresh file"));
    }
    w
}

pub(super) fn compare_tables(a: &Value, b: &Value, out: &mut Vec<CellChange>) {
    let cells = |t: &Value| -> BTreeMap<(String, String), (String, Option<f64>)> {
        let mut m = BTreeMap::new();
        for row in t["rows"].as_array().into_iter().flatten() {
            let label = row["label"].as_str().unwrap_or_default().to_string();
            for c in row["cells"].as_array().into_iter().flatten() {
                let col = match &c["column"] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                m.insert(
                    (label.clone(), col),
                    (
                        c["text"].as_str().unwrap_or_default().to_string(),
                        c["mean"].as_f64(),
                    ),
                );
            }
        }
        m
    };
    let (ca, cb) = (cells(a), cells(b));
    for (k, (ta, ma)) in &ca {
        let (tb, mb) = cb.get(k).cloned().unwrap_or_default();
        if *ta != tb || *ma != mb {
            out.push(CellChange {
                row: k.0.clone(),
                column: k.1.clone(),
                cached: ta.clone(),
                fresh: tb,
                delta_points: ma.zip(mb).map(|(x, y)| y - x),
            });
        }
    }
    for (k, (tb, _)) in cb.iter().filter(|(k, _)| !ca.contains_key(*k)) {
        out.push(CellChange {
            row: k.0.clone(),
            column: k.1.clone(),
            cached: String::new(),
            fresh: tb.clone(),
            delta_points: None,
        });
    }
}

/// What differs between two artifact directories.
pub fn compare(cached: &Path, fresh: &Path) -> Comparison {
    let a = files_with_hashes(cached);
    let b = files_with_hashes(fresh);
    let mut c = Comparison::default();
    for (rel, ha) in &a {
        match b.get(rel) {
            None => c.files.removed.push(rel.clone()),
            Some(hb) if hb != ha => c.files.changed.push(rel.clone()),
            _ => {}
        }
    }
    c.files.added = b.keys().filter(|k| !a.contains_key(*k)).cloned().collect();
    // The accuracy files are compared even when unchanged: a train artifact whose weights
    // moved in the last bits but whose accuracy did not is within any tolerance.
    for rel in ACCURACY_FILES {
        if let (Some(x), Some(y)) = (read_json(&cached.join(rel)), read_json(&fresh.join(rel))) {
            c.accuracy_compared = true;
            compare_metrics(rel, &x, &y, &mut c.metrics);
            if rel == "table.json" {
                compare_tables(&x, &y, &mut c.cells);
            }
        }
    }
    for rel in &c.files.changed {
        let (pa, pb) = (cached.join(rel), fresh.join(rel));
        if rel.ends_with(".safetensors") {
            if let (Ok(x), Ok(y)) = (std::fs::read(&pa), std::fs::read(&pb)) {
                c.weights.push(compare_safetensors(rel, &x, &y));
            }
        }
    }
    c
}

/// The verdict for a stage whose fresh artifact is `fresh` (None: it failed).
pub fn verdict(
    recorded: &str,
    fresh: Option<&str>,
    corrupt: bool,
    cmp: &Comparison,
    tolerance: Option<f64>,
) -> Verdict {
    match fresh {
        None => Verdict::Failed,
        _ if corrupt => Verdict::CacheCorrupt,
        Some(f) if f == recorded => Verdict::BitIdentical,
        Some(_) => match (tolerance, cmp.max_delta()) {
            (Some(t), Some(d)) if d <= t + 1e-9 => Verdict::WithinTolerance,
            _ => Verdict::Differs,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(tensors: &[(&str, Vec<f32>)]) -> Vec<u8> {
        let data: Vec<(String, Vec<u8>, usize)> = tensors
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    v.len(),
                )
            })
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = data
            .iter()
            .map(|(n, b, len)| {
                (
                    n.clone(),
                    safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![*len], b)
                        .unwrap(),
                )
            })
            .collect();
        safetensors::serialize(views, None).unwrap()
    }

    #[test]
    fn max_weight_difference() {
        let a = st(&[("w", vec![1.0, 2.0, 3.0]), ("b", vec![0.5])]);
        let b = st(&[("w", vec![1.0, 2.25, 3.0]), ("b", vec![0.5])]);
        let w = compare_safetensors("final.safetensors", &a, &b);
        assert_eq!(w.max_abs_diff, 0.25);
        assert_eq!(w.tensor, "w");
        assert!(w.notes.is_empty(), "{:?}", w.notes);
        let c = st(&[("w", vec![1.0, 2.0, 3.0])]);
        let w = compare_safetensors("x", &a, &c);
        assert!(
            w.notes.iter().any(|n| n.contains("b missing")),
            "{:?}",
            w.notes
        );
    }

    #[test]
    fn verdicts_and_tolerance() {
        let mut cmp = Comparison::default();
        assert_eq!(
            verdict("a", Some("a"), false, &cmp, None),
            Verdict::BitIdentical
        );
        assert_eq!(
            verdict("a", Some("b"), false, &cmp, Some(1.0)),
            Verdict::Differs
        );
        assert_eq!(verdict("a", None, false, &cmp, None), Verdict::Failed);
        assert_eq!(
            verdict("a", Some("a"), true, &cmp, None),
            Verdict::CacheCorrupt
        );
        cmp.accuracy_compared = true;
        cmp.metrics.push(MetricChange {
            file: "metrics.json".into(),
            metric: "top1".into(),
            cached: 0.81,
            fresh: 0.8105,
            delta_points: 0.05,
        });
        assert_eq!(verdict("a", Some("b"), false, &cmp, None), Verdict::Differs);
        assert_eq!(
            verdict("a", Some("b"), false, &cmp, Some(0.1)),
            Verdict::WithinTolerance
        );
        assert_eq!(
            verdict("a", Some("b"), false, &cmp, Some(0.01)),
            Verdict::Differs
        );
    }

    #[test]
    fn compare_names_files_accuracy_weights_and_cells() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let put = |d: &Path, name: &str, bytes: &[u8]| std::fs::write(d.join(name), bytes).unwrap();
        put(a.path(), "metrics.json", br#"{"top1": 0.8, "top3": 0.9}"#);
        put(b.path(), "metrics.json", br#"{"top1": 0.81, "top3": 0.9}"#);
        put(a.path(), "final.safetensors", &st(&[("w", vec![1.0, 2.0])]));
        put(b.path(), "final.safetensors", &st(&[("w", vec![1.0, 2.5])]));
        put(a.path(), "same.txt", b"x");
        put(b.path(), "same.txt", b"x");
        put(a.path(), "old.txt", b"x");
        put(b.path(), "new.txt", b"x");
        let c = compare(a.path(), b.path());
        assert_eq!(c.files.changed, ["final.safetensors", "metrics.json"]);
        assert_eq!(c.files.removed, ["old.txt"]);
        assert_eq!(c.files.added, ["new.txt"]);
        let top1 = c.metrics.iter().find(|m| m.metric == "top1").unwrap();
        assert!((top1.delta_points - 1.0).abs() < 1e-9, "{top1:?}");
        assert_eq!(c.weights[0].max_abs_diff, 0.5);
        assert!((c.max_delta().unwrap() - 1.0).abs() < 1e-9);
        assert_eq!(
            verdict("a", Some("b"), false, &c, Some(1.5)),
            Verdict::WithinTolerance
        );
        assert_eq!(
            verdict("a", Some("b"), false, &c, Some(0.5)),
            Verdict::Differs
        );
        // Weights moved in the last bits, accuracy did not: within any tolerance.
        put(b.path(), "metrics.json", br#"{"top1": 0.8, "top3": 0.9}"#);
        let c = compare(a.path(), b.path());
        assert_eq!(c.max_delta(), Some(0.0));
        assert_eq!(
            verdict("a", Some("b"), false, &c, Some(0.0)),
            Verdict::WithinTolerance
        );
        assert_eq!(verdict("a", Some("b"), false, &c, None), Verdict::Differs);
    }

    #[test]
    fn table_cells_that_moved() {
        let t = |m: f64| {
            serde_json::json!({"rows": [{"label": "Ours", "cells": [
                {"column": 0.2, "text": format!("{m:.2}"), "mean": m},
                {"column": 0.4, "text": "70.00", "mean": 70.0}]}]})
        };
        let mut out = Vec::new();
        compare_tables(&t(80.0), &t(80.5), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].row.as_str(), out[0].column.as_str()),
            ("Ours", "0.2")
        );
        assert_eq!(out[0].delta_points, Some(0.5));
    }
}
