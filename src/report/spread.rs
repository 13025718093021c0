//! Two sources of spread in one cell: when the runs averaged over differ both in a data
//! realisation (a noise or split seed: `aggregate`'s `realisations:`) and in the training
//! seed, the cell's ± mixes them. This separates them: the spread **between realisations**
//! (the population std of the per-realisation means) and **between seeds** (the mean,
//! over realisations, of the population std within each). A table over one realisation
//! shows only the second, and so overstates how precisely its mean is known.
use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::mean_std;
use super::table::{md_escape, tex_escape, Run, Table};

/// A cell's two spreads (points).
#[derive(Debug, Clone, PartialEq)]
pub struct Spread {
    pub realisations: usize,
    /// Std of the realisation means; None with fewer than two realisations.
    pub between: Option<f64>,
    /// Mean std within a realisation; None when no realisation has two runs.
    pub within: Option<f64>,
}

/// The spreads of `runs`, realisations told apart by their values of `axes`.
pub fn spread(runs: &[Run], axes: &[String]) -> Spread {
    let mut groups: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in runs {
        groups.entry(r.values_of(axes)).or_default().push(r.value);
    }
    let stats: Vec<_> = groups.values().filter_map(|v| mean_std(v)).collect();
    let means: Vec<f64> = stats.iter().map(|s| s.mean).collect();
    let stds: Vec<f64> = stats.iter().filter(|s| s.n >= 2).map(|s| s.std).collect();
    Spread {
        realisations: stats.len(),
        between: (means.len() >= 2)
            .then(|| mean_std(&means).map(|s| s.std))
            .flatten(),
        within: mean_std(&stds).map(|s| s.mean),
    }
}

/// The spreads of every cell of a table.
pub struct Spreads {
    pub axes: Vec<String>,
    /// Per row, per column.
    pub cells: Vec<Vec<Spread>>,
}

impl Spreads {
    pub fn of(table: &Table, axes: &[String]) -> Spreads {
        Spreads {
            axes: axes.to_vec(),
            cells: table
                .cells
                .iter()
                .map(|row| row.iter().map(|runs| spread(runs, axes)).collect())
                .collect(),
        }
    }

    fn text(s: &Spread, decimals: usize) -> String {
        let n = |x: Option<f64>| x.map_or("—".to_string(), |v| format!("{v:.decimals$}"));
        match s.realisations {
            0 => "—".to_string(),
            1 => format!("one realisation; seeds {}", n(s.within)),
            k => format!(
                "{} between {k} realisations, {} between seeds",
                n(s.between),
                n(s.within)
            ),
        }
    }

    fn heading(&self) -> String {
        let axes: Vec<String> = self.axes.iter().map(|a| format!("`{a}`")).collect();
        format!(
            "Spread (population std, points) between data realisations ({}): of the \
             realisations' means; and between seeds: the mean std within a realisation",
            axes.join(", ")
        )
    }

    /// The block under the table in table.md.
    pub fn markdown(&self, table: &Table, decimals: usize) -> String {
        let mut out = format!("{}:\n\n", self.heading());
        let mut header = vec![md_escape(&table.row_header)];
        header.extend(table.columns.iter().map(|c| md_escape(&c.label)));
        out.push_str(&format!("| {} |\n", header.join(" | ")));
        out.push_str(&format!("|{}\n", "---|".repeat(table.columns.len() + 1)));
        for (row, cells) in table.rows.iter().zip(&self.cells) {
            let texts: Vec<String> = cells.iter().map(|s| Self::text(s, decimals)).collect();
            out.push_str(&format!(
                "| {} | {} |\n",
                md_escape(&row.label),
                texts.join(" | ")
            ));
        }
        out
    }

    /// The block in table.tex (a comment and a `tabular`).
    pub fn latex(&self, table: &Table, decimals: usize) -> String {
        let mut out = format!("% {}\n", self.heading().replace('`', ""));
        out.push_str(&format!(
            "\\begin{{tabular}}{{l{}}}\n\\hline\n",
            "c".repeat(table.columns.len())
        ));
        let mut header = vec![tex_escape(&table.row_header)];
        header.extend(table.columns.iter().map(|c| tex_escape(&c.label)));
        out.push_str(&format!("{} \\\\\n\\hline\n", header.join(" & ")));
        for (row, cells) in table.rows.iter().zip(&self.cells) {
            let texts: Vec<String> = cells
                .iter()
                .map(|s| tex_escape(&Self::text(s, decimals)))
                .collect();
            out.push_str(&format!(
                "{} & {} \\\\\n",
                tex_escape(&row.label),
                texts.join(" & ")
            ));
        }
        out.push_str("\\hline\n\\end{tabular}\n");
        out
    }

    /// `spreads` in table.json (numbers rounded to 9 decimals).
    pub fn json(&self, table: &Table) -> Value {
        let round = |x: Option<f64>| x.map(|v| (v * 1e9).round() / 1e9);
        let rows: Vec<Value> = table
            .rows
            .iter()
            .zip(&self.cells)
            .map(|(row, cells)| {
                let cells: Vec<Value> = table
                    .columns
                    .iter()
                    .zip(cells)
                    .map(|(c, s)| {
                        json!({
                            "column": c.value,
                            "realisations": s.realisations,
                            "between_realisations": round(s.between),
                            "between_seeds": round(s.within),
                        })
                    })
                    .collect();
                json!({"key": row.key, "label": row.label, "cells": cells})
            })
            .collect();
        json!({"realisations": self.axes, "std": "population (ddof 0)", "rows": rows})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(noise: u32, seed: u32, value: f64) -> Run {
        Run {
            instance: format!("e[noise_seed={noise}, seed={seed}]"),
            value,
            matrix: BTreeMap::from([
                ("noise_seed".to_string(), json!(noise)),
                ("seed".to_string(), json!(seed)),
            ]),
        }
    }

    #[test]
    fn between_realisations_and_between_seeds() {
        // Realisation 1: 80, 82 (mean 81, std 1); realisation 2: 84, 88 (mean 86, std 2).
        let runs = [
            run(1, 1, 80.0),
            run(1, 2, 82.0),
            run(2, 1, 84.0),
            run(2, 2, 88.0),
        ];
        let s = spread(&runs, &["noise_seed".to_string()]);
        assert_eq!(s.realisations, 2);
        assert_eq!(s.between, Some(2.5));
        assert_eq!(s.within, Some(1.5));
        assert_eq!(
            Spreads::text(&s, 2),
            "2.50 between 2 realisations, 1.50 between seeds"
        );
        // One realisation: no spread between realisations to show.
        let s = spread(&runs[..2], &["noise_seed".to_string()]);
        assert_eq!((s.realisations, s.between, s.within), (1, None, Some(1.0)));
        assert_eq!(Spreads::text(&s, 1), "one realisation; seeds 1.0");
        // One run per realisation: no spread between seeds.
        let s = spread(
            &[runs[0].clone(), runs[2].clone()],
            &["noise_seed".to_string()],
        );
        assert_eq!((s.between, s.within), (Some(2.0), None));
    }
}
