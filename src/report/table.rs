//! The results table and its text renderings: Markdown (the paper's README layout), CSV,
//! LaTeX and JSON. Cells read `mean ± std` over their runs (population std, values in
//! percent), `(n = 1)` for a single run, and `–` where no run exists.
use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{format_number, mean_std, value_text, Stats};

/// What a missing (row, column) combination reads in Markdown.
pub const MISSING: &str = "–";

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The grouping key: a stage name or an axis value as text.
    pub key: String,
    /// What the table shows.
    pub label: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// The axis value.
    pub value: Value,
    /// The header, e.g. `Noise = 20%`.
    pub label: String,
}

impl Column {
    /// Where the column sits on a numeric axis, when its value is a number.
    pub fn x(&self) -> Option<f64> {
        self.value.as_f64()
    }
}

/// One run that went into a cell.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// The upstream instance, e.g. `eval_regsl[rate=0.4, seed=1]`.
    pub instance: String,
    /// The metric in percent.
    pub value: f64,
    /// The instance's matrix values.
    pub matrix: BTreeMap<String, Value>,
}

impl Run {
    /// Its values of `axes` as one text (missing ones empty): what runs are grouped or
    /// paired by.
    pub fn values_of(&self, axes: &[String]) -> String {
        axes.iter()
            .map(|axis| {
                self.matrix
                    .get(axis)
                    .map(super::value_text)
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\u{1f}")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub title: Option<String>,
    /// The first header cell (`Method`).
    pub row_header: String,
    /// The metric's name (`top1`), for the JSON.
    pub metric: String,
    pub decimals: usize,
    pub rows: Vec<Row>,
    pub columns: Vec<Column>,
    /// `cells[row][column]`: the runs of that combination (possibly none).
    pub cells: Vec<Vec<Vec<Run>>>,
}

impl Table {
    /// An empty table of these rows and columns.
    pub fn new(
        title: Option<String>,
        row_header: impl Into<String>,
        metric: impl Into<String>,
        decimals: usize,
        rows: Vec<Row>,
        columns: Vec<Column>,
    ) -> Table {
        let cells = vec![vec![Vec::new(); columns.len()]; rows.len()];
        Table {
            title,
            row_header: row_header.into(),
            metric: metric.into(),
            decimals,
            rows,
            columns,
            cells,
        }
    }

    pub fn stats(&self, row: usize, column: usize) -> Option<Stats> {
        let values: Vec<f64> = self.cells[row][column].iter().map(|r| r.value).collect();
        mean_std(&values)
    }

    /// `75.21 ± 0.46` with the table's decimals, `68.13 (n = 1)` for a single run (whose
    /// spread is unknown, not zero), or None for a missing combination.
    pub fn cell_text(&self, row: usize, column: usize, pm: &str) -> Option<String> {
        self.stats(row, column).map(|s| {
            let d = self.decimals;
            if s.n == 1 {
                format!("{:.d$} (n = 1)", s.mean)
            } else {
                format!("{:.d$}{pm}{:.d$}", s.mean, s.std)
            }
        })
    }

    /// The Markdown table, one line each: `| Method | Noise = 20% | ... |`, `|---|...|`,
    /// then the rows.
    pub fn markdown(&self) -> String {
        let mut lines = Vec::with_capacity(self.rows.len() + 2);
        let mut header = vec![md_escape(&self.row_header)];
        header.extend(self.columns.iter().map(|c| md_escape(&c.label)));
        lines.push(md_line(&header));
        lines.push(format!("|{}", "---|".repeat(self.columns.len() + 1)));
        for (r, row) in self.rows.iter().enumerate() {
            let mut cells = vec![md_escape(&row.label)];
            cells.extend(
                (0..self.columns.len())
                    .map(|c| self.cell_text(r, c, " ± ").unwrap_or(MISSING.into())),
            );
            lines.push(md_line(&cells));
        }
        let mut out = lines.join("\n");
        out.push('\n');
        out
    }

    /// `table.md`: the title (when there is one) as a paragraph, then the table.
    pub fn markdown_document(&self) -> String {
        match &self.title {
            Some(t) => format!("{t}\n\n{}", self.markdown()),
            None => self.markdown(),
        }
    }

    /// `method,column,mean,std,n,runs`: one line per cell, numbers in percent unrounded
    /// (to 9 decimals), `runs` the per-run values joined by `;`; a missing cell has n = 0
    /// and empty mean, std and runs.
    pub fn csv(&self) -> String {
        let mut out = String::from("method,column,mean,std,n,runs\n");
        for (r, row) in self.rows.iter().enumerate() {
            for (c, col) in self.columns.iter().enumerate() {
                let runs: Vec<String> = self.cells[r][c]
                    .iter()
                    .map(|run| format_number(run.value))
                    .collect();
                let (mean, std, n) = match self.stats(r, c) {
                    Some(s) => (format_number(s.mean), format_number(s.std), s.n),
                    None => (String::new(), String::new(), 0),
                };
                let fields = [
                    csv_field(&row.label),
                    csv_field(&value_text(&col.value)),
                    mean,
                    std,
                    n.to_string(),
                    csv_field(&runs.join(";")),
                ];
                out.push_str(&fields.join(","));
                out.push('\n');
            }
        }
        out
    }

    /// A LaTeX `tabular` (no package needed), cells `75.21 $\pm$ 0.46`, missing ones `--`.
    pub fn latex(&self) -> String {
        let mut out = String::new();
        if let Some(t) = &self.title {
            out.push_str(&format!("% {}\n", t.replace(['\n', '\r'], " ")));
        }
        out.push_str(&format!(
            "\\begin{{tabular}}{{l{}}}\n\\hline\n",
            "c".repeat(self.columns.len())
        ));
        let mut header = vec![tex_escape(&self.row_header)];
        header.extend(self.columns.iter().map(|c| tex_escape(&c.label)));
        out.push_str(&format!("{} \\\\\n\\hline\n", header.join(" & ")));
        for (r, row) in self.rows.iter().enumerate() {
            let mut cells = vec![tex_escape(&row.label)];
            cells.extend(
                (0..self.columns.len())
                    .map(|c| self.cell_text(r, c, " $\\pm$ ").unwrap_or("--".into())),
            );
            out.push_str(&format!("{} \\\\\n", cells.join(" & ")));
        }
        out.push_str("\\hline\n\\end{tabular}\n");
        out
    }

    /// Everything: rows, columns, and per cell the statistics, the text and each run with
    /// its instance name, value (percent) and matrix.
    pub fn json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .enumerate()
            .map(|(r, row)| {
                let cells: Vec<Value> = self
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(c, col)| {
                        let stats = self.stats(r, c);
                        let runs: Vec<Value> = self.cells[r][c]
                            .iter()
                            .map(|run| {
                                json!({
                                    "instance": run.instance,
                                    "value": run.value,
                                    "matrix": run.matrix,
                                })
                            })
                            .collect();
                        json!({
                            "column": col.value,
                            "text": self.cell_text(r, c, " ± ").unwrap_or(MISSING.into()),
                            "mean": stats.map(|s| s.mean),
                            "std": stats.map(|s| s.std),
                            "n": stats.map_or(0, |s| s.n),
                            "runs": runs,
                        })
                    })
                    .collect();
                json!({"key": row.key, "label": row.label, "cells": cells})
            })
            .collect();
        let columns: Vec<Value> = self
            .columns
            .iter()
            .map(|c| json!({"value": c.value, "label": c.label}))
            .collect();
        json!({
            "title": self.title,
            "row_header": self.row_header,
            "metric": self.metric,
            "unit": "percent",
            "std": "population (ddof 0)",
            "decimals": self.decimals,
            "columns": columns,
            "rows": rows,
            "markdown": self.markdown(),
        })
    }
}

fn md_line(cells: &[String]) -> String {
    format!("| {} |", cells.join(" | "))
}

/// Text for one Markdown table cell: `|` escaped, line breaks (which would end the row)
/// turned into spaces. Also used by the audit report.
pub fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub(crate) fn tex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\textbackslash{}"),
            '%' | '&' | '#' | '_' | '$' | '{' | '}' => {
                out.push('\\');
                out.push(c);
            }
            '~' => out.push_str("\\textasciitilde{}"),
            '^' => out.push_str("\\textasciicircum{}"),
            '±' => out.push_str("$\\pm$"),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn run(instance: &str, value: f64) -> Run {
        Run {
            instance: instance.into(),
            value,
            matrix: BTreeMap::new(),
        }
    }

    /// Two methods × two noise rates; Fine-tuning at 40% has no run.
    pub(crate) fn two_by_two() -> Table {
        let rows = vec![
            Row {
                key: "eval_regsl".into(),
                label: "Ours".into(),
            },
            Row {
                key: "eval_ft".into(),
                label: "Fine-tuning".into(),
            },
        ];
        let columns = vec![
            Column {
                value: json!(0.2),
                label: "Noise = 20%".into(),
            },
            Column {
                value: json!(0.4),
                label: "Noise = 40%".into(),
            },
        ];
        let mut t = Table::new(
            Some("Indoor, test accuracy (%)".into()),
            "Method",
            "top1",
            2,
            rows,
            columns,
        );
        t.cells[0][0] = vec![run("a", 70.0), run("b", 80.0)];
        t.cells[0][1] = vec![run("c", 68.13)];
        t.cells[1][0] = vec![run("d", 65.0), run("e", 65.5), run("f", 64.5)];
        t
    }

    #[test]
    fn markdown_in_the_readme_layout() {
        let t = two_by_two();
        assert_eq!(
            t.markdown(),
            "| Method | Noise = 20% | Noise = 40% |\n\
             |---|---|---|\n\
             | Ours | 75.00 ± 5.00 | 68.13 (n = 1) |\n\
             | Fine-tuning | 65.00 ± 0.41 | – |\n"
        );
        assert!(t
            .markdown_document()
            .starts_with("Indoor, test accuracy (%)\n\n| Method |"));
    }

    #[test]
    fn csv_latex_and_json() {
        let t = two_by_two();
        assert_eq!(
            t.csv(),
            "method,column,mean,std,n,runs\n\
             Ours,0.2,75,5,2,70;80\n\
             Ours,0.4,68.13,0,1,68.13\n\
             Fine-tuning,0.2,65,0.40824829,3,65;65.5;64.5\n\
             Fine-tuning,0.4,,,0,\n"
        );
        let tex = t.latex();
        assert!(tex.starts_with("% Indoor, test accuracy (%)\n\\begin{tabular}{lcc}\n"));
        assert!(tex.contains("Method & Noise = 20\\% & Noise = 40\\% \\\\\n"));
        assert!(tex.contains("Ours & 75.00 $\\pm$ 5.00 & 68.13 (n = 1) \\\\\n"));
        assert!(tex.contains("Fine-tuning & 65.00 $\\pm$ 0.41 & -- \\\\\n"));
        assert!(tex.ends_with("\\end{tabular}\n"));
        let j = t.json();
        assert_eq!(j["rows"][0]["cells"][0]["mean"], json!(75.0));
        assert_eq!(j["rows"][0]["cells"][0]["runs"][1]["instance"], json!("b"));
        assert_eq!(j["rows"][1]["cells"][1]["n"], json!(0));
        assert_eq!(j["rows"][1]["cells"][1]["mean"], Value::Null);
        assert_eq!(j["columns"][1]["label"], json!("Noise = 40%"));
    }

    #[test]
    fn escapes() {
        assert_eq!(md_escape("a|b"), "a\\|b");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"x\""), "\"say \"\"x\"\"\"");
        assert_eq!(tex_escape("50% & L_2"), "50\\% \\& L\\_2");
    }
}
