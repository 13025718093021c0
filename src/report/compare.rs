//! A declared comparison of two rows of a [`Table`] (`aggregate`'s `compare: {Ours:
//! Fine-tuning}`): per column, the runs of both rows paired by their values of the
//! averaged axes (`over`, e.g. the seed), the statistics of [`super::stats`], and the
//! p-values Holm-corrected across the columns. Rendered as a block under the table in
//! `table.md` and `table.tex`, and as `comparisons` in `table.json`.
use serde_json::{json, Value};

use super::stats::{self, Comparison};
use super::table::{md_escape, tex_escape, Table};

/// One comparison, every column.
#[derive(Debug, Clone, PartialEq)]
pub struct Compared {
    /// The row compared (its label) and the row it is compared with.
    pub row: String,
    pub baseline: String,
    /// The axes the pairs share values of.
    pub over: Vec<String>,
    pub columns: Vec<ColumnCompared>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ColumnCompared {
    pub label: String,
    pub value: Value,
    /// Runs of either row with no partner in the other (left out).
    pub unpaired: usize,
    pub result: Comparison,
    /// The paired t-test's and Wilcoxon's p-values, Holm-corrected across the columns
    /// that have one.
    pub t_p_holm: Option<f64>,
    pub wilcoxon_p_holm: Option<f64>,
}

/// Compares row `row` of `table` with row `baseline`, pairing runs by their values of
/// those `over` axes that every run of both rows has (a method's own hyper-parameter axes,
/// say, are not shared). Each column's bootstrap is seeded by its position.
pub fn compare(table: &Table, row: usize, baseline: usize, over: &[String]) -> Compared {
    let runs = || {
        table.cells[row]
            .iter()
            .chain(&table.cells[baseline])
            .flatten()
    };
    let over: Vec<String> = over
        .iter()
        .filter(|axis| runs().all(|r| r.matrix.contains_key(*axis)))
        .cloned()
        .collect();
    let pair_key = |run: &super::Run| run.values_of(&over);
    let mut columns: Vec<ColumnCompared> = table
        .columns
        .iter()
        .enumerate()
        .map(|(c, col)| {
            let (ours, theirs) = (&table.cells[row][c], &table.cells[baseline][c]);
            // Pairs are one-to-one: a baseline run is taken once.
            let mut taken = vec![false; theirs.len()];
            let mut a = Vec::new();
            let mut b = Vec::new();
            for run in ours {
                let key = pair_key(run);
                let partner = (0..theirs.len()).find(|&j| !taken[j] && pair_key(&theirs[j]) == key);
                if let Some(j) = partner {
                    taken[j] = true;
                    a.push(run.value);
                    b.push(theirs[j].value);
                }
            }
            ColumnCompared {
                label: col.label.clone(),
                value: col.value.clone(),
                unpaired: ours.len() + theirs.len() - 2 * a.len(),
                result: stats::paired(&a, &b, c as u64),
                t_p_holm: None,
                wilcoxon_p_holm: None,
            }
        })
        .collect();
    let family = |get: fn(&Comparison) -> Option<f64>, columns: &[ColumnCompared]| {
        let found: Vec<(usize, f64)> = columns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| get(&c.result).map(|p| (i, p)))
            .collect();
        let adjusted = stats::holm(&found.iter().map(|(_, p)| *p).collect::<Vec<_>>());
        found
            .into_iter()
            .zip(adjusted)
            .map(|((i, _), p)| (i, p))
            .collect::<Vec<_>>()
    };
    let t_p = |c: &Comparison| match c {
        Comparison::Paired(p) => p.t_p,
        Comparison::TooSmall { .. } => None,
    };
    let w_p = |c: &Comparison| match c {
        Comparison::Paired(p) => p.wilcoxon_p,
        Comparison::TooSmall { .. } => None,
    };
    for (i, p) in family(t_p, &columns) {
        columns[i].t_p_holm = Some(p);
    }
    for (i, p) in family(w_p, &columns) {
        columns[i].wilcoxon_p_holm = Some(p);
    }
    Compared {
        row: table.rows[row].label.clone(),
        baseline: table.rows[baseline].label.clone(),
        over,
        columns,
    }
}

/// What a cell of a comparison says when there are fewer than two pairs.
pub const TOO_SMALL: &str = "n too small";

/// A signed difference with `d` decimals: `+0.83`, `−1.20` (a minus sign, not a hyphen).
fn signed(x: f64, d: usize) -> String {
    let s = format!("{:+.d$}", x);
    match s.strip_prefix('-') {
        Some(rest) if rest.chars().any(|c| c.is_ascii_digit() && c != '0') => format!("−{rest}"),
        Some(rest) => format!("+{rest}"), // -0.00
        None => s,
    }
}

/// A p-value: three decimals, `< 0.001` below that.
pub fn p_text(p: f64) -> String {
    if p < 0.001 {
        "< 0.001".into()
    } else {
        format!("{p:.3}")
    }
}

/// A rounded number for table.json: 9 decimals, so the file does not depend on the last
/// bits of the platform's math functions.
fn rounded(x: f64) -> Value {
    if x.is_finite() {
        json!((x * 1e9).round() / 1e9)
    } else {
        Value::Null
    }
}

impl Compared {
    /// The title line above the block.
    fn heading(&self) -> String {
        let over = if self.over.is_empty() {
            "nothing (no axis is averaged over)".to_string()
        } else {
            self.over
                .iter()
                .map(|a| format!("`{a}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "{} − {}, paired by {over}: mean difference (points), its 95% confidence interval, and \
             two-sided p-values, Holm-corrected over the columns in parentheses",
            self.row, self.baseline
        )
    }

    /// The rows of the block: (label, one text per column).
    fn lines(&self, decimals: usize) -> Vec<(&'static str, Vec<String>)> {
        let each = |f: &dyn Fn(&ColumnCompared, &stats::Paired) -> String| -> Vec<String> {
            self.columns
                .iter()
                .map(|c| match &c.result {
                    Comparison::Paired(p) => f(c, p),
                    Comparison::TooSmall { .. } => TOO_SMALL.to_string(),
                })
                .collect()
        };
        let interval =
            |(lo, hi): (f64, f64)| format!("[{}, {}]", signed(lo, decimals), signed(hi, decimals));
        let p_and_holm = |p: Option<f64>, holm: Option<f64>| match (p, holm) {
            (Some(p), Some(h)) => format!("{} ({})", p_text(p), p_text(h)),
            _ => "undefined (no difference)".to_string(),
        };
        let n: Vec<String> = self
            .columns
            .iter()
            .map(|c| {
                let n = match &c.result {
                    Comparison::Paired(p) => p.n,
                    Comparison::TooSmall { n } => *n,
                };
                match c.unpaired {
                    0 => n.to_string(),
                    u => format!("{n} ({u} unpaired left out)"),
                }
            })
            .collect();
        vec![
            ("pairs", n),
            (
                "mean difference",
                each(&|_, p| signed(p.mean_diff, decimals)),
            ),
            ("95% CI, t", each(&|_, p| interval(p.t_ci))),
            ("95% CI, bootstrap", each(&|_, p| interval(p.bootstrap_ci))),
            (
                "p, paired t-test",
                each(&|c, p| p_and_holm(p.t_p, c.t_p_holm)),
            ),
            (
                "p, Wilcoxon signed-rank",
                each(&|c, p| p_and_holm(p.wilcoxon_p, c.wilcoxon_p_holm)),
            ),
        ]
    }

    /// The block for table.md: a heading paragraph and a Markdown table.
    pub fn markdown(&self, decimals: usize) -> String {
        let mut out = format!("{}:\n\n", self.heading());
        let mut header = vec![String::new()];
        header.extend(self.columns.iter().map(|c| md_escape(&c.label)));
        out.push_str(&format!("| {} |\n", header.join(" | ")));
        out.push_str(&format!("|{}\n", "---|".repeat(self.columns.len() + 1)));
        for (label, cells) in self.lines(decimals) {
            let cells: Vec<String> = cells.iter().map(|c| md_escape(c)).collect();
            out.push_str(&format!("| {label} | {} |\n", cells.join(" | ")));
        }
        out
    }

    /// The block for table.tex: a comment line and a `tabular`.
    pub fn latex(&self, decimals: usize) -> String {
        let mut out = format!("% {}\n", self.heading().replace('`', ""));
        out.push_str(&format!(
            "\\begin{{tabular}}{{l{}}}\n\\hline\n",
            "c".repeat(self.columns.len())
        ));
        let mut header = vec![String::new()];
        header.extend(self.columns.iter().map(|c| tex_escape(&c.label)));
        out.push_str(&format!("{} \\\\\n\\hline\n", header.join(" & ")));
        for (label, cells) in self.lines(decimals) {
            let cells: Vec<String> = cells
                .iter()
                // `<` after escaping: in LaTeX's text mode it prints as `¡`.
                .map(|c| tex_escape(&c.replace('−', "-")).replace('<', "$<$"))
                .collect();
            out.push_str(&format!(
                "{} & {} \\\\\n",
                tex_escape(label),
                cells.join(" & ")
            ));
        }
        out.push_str("\\hline\n\\end{tabular}\n");
        out
    }

    /// The comparison in table.json (numbers rounded to 9 decimals).
    pub fn json(&self) -> Value {
        let columns: Vec<Value> = self
            .columns
            .iter()
            .map(|c| {
                let mut v = match &c.result {
                    Comparison::TooSmall { n } => json!({"n": n, "too_small": true}),
                    Comparison::Paired(p) => json!({
                        "n": p.n,
                        "too_small": false,
                        "mean_diff": rounded(p.mean_diff),
                        "t_ci": [rounded(p.t_ci.0), rounded(p.t_ci.1)],
                        "bootstrap_ci": [rounded(p.bootstrap_ci.0), rounded(p.bootstrap_ci.1)],
                        "t_p": p.t_p.map(rounded),
                        "t_p_holm": c.t_p_holm.map(rounded),
                        "wilcoxon_p": p.wilcoxon_p.map(rounded),
                        "wilcoxon_p_holm": c.wilcoxon_p_holm.map(rounded),
                        "wilcoxon_method": p.wilcoxon_method.name(),
                    }),
                };
                v["column"] = c.value.clone();
                v["label"] = json!(c.label);
                v["unpaired"] = json!(c.unpaired);
                v
            })
            .collect();
        json!({
            "row": self.row,
            "baseline": self.baseline,
            "over": self.over,
            "level": stats::LEVEL,
            "bootstrap": {"method": "percentile", "resamples": stats::RESAMPLES},
            "correction": "Holm, over the columns",
            "columns": columns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::table::tests::two_by_two;
    use crate::report::Run;
    use std::collections::BTreeMap;

    fn run(seed: u64, value: f64) -> Run {
        Run {
            instance: format!("e[seed={seed}]"),
            value,
            matrix: BTreeMap::from([("seed".to_string(), json!(seed))]),
        }
    }

    #[test]
    fn pairs_by_the_averaged_axes_and_corrects_over_columns() {
        let mut t = two_by_two();
        t.cells[0][0] = vec![run(1, 75.0), run(2, 76.5), run(3, 74.0), run(9, 80.0)];
        t.cells[1][0] = vec![run(2, 75.0), run(1, 73.0), run(3, 73.5)];
        t.cells[0][1] = vec![run(1, 68.0)];
        t.cells[1][1] = vec![run(1, 67.0)];
        let c = compare(&t, 0, 1, &["seed".to_string()]);
        assert_eq!(
            (c.row.as_str(), c.baseline.as_str()),
            ("Ours", "Fine-tuning")
        );
        let first = &c.columns[0];
        assert_eq!(first.unpaired, 1, "seed 9 has no partner");
        let Comparison::Paired(p) = &first.result else {
            panic!("{first:?}")
        };
        assert_eq!(p.n, 3);
        // Differences 2.0, 1.5, 0.5 (paired by seed, not by position).
        assert!((p.mean_diff - 4.0 / 3.0).abs() < 1e-12);
        // One column has a p-value: Holm leaves it as it is.
        assert_eq!(first.t_p_holm, p.t_p);
        assert_eq!(c.columns[1].result, Comparison::TooSmall { n: 1 });
        assert_eq!(c.columns[1].t_p_holm, None);
        let md = c.markdown(2);
        assert!(
            md.contains("| pairs | 3 (1 unpaired left out) | 1 |"),
            "{md}"
        );
        assert!(
            md.contains("| mean difference | +1.33 | n too small |"),
            "{md}"
        );
        let j = c.json();
        assert_eq!(j["columns"][1]["too_small"], json!(true));
        assert_eq!(j["columns"][0]["wilcoxon_method"], json!("exact"));
        assert!(c
            .latex(2)
            .contains("pairs & 3 (1 unpaired left out) & 1 \\\\"));
    }

    #[test]
    fn axes_one_row_lacks_are_not_paired_by() {
        let mut t = two_by_two();
        let with_lr = |seed: u64, value: f64| {
            let mut r = run(seed, value);
            r.matrix.insert("lr".into(), json!(0.01));
            r
        };
        t.cells[0][0] = vec![with_lr(1, 75.0), with_lr(2, 76.0)];
        t.cells[1][0] = vec![run(2, 74.0), run(1, 73.0)];
        t.cells[0][1].clear();
        t.cells[1][1].clear();
        let c = compare(&t, 0, 1, &["seed".to_string(), "lr".to_string()]);
        assert_eq!(c.over, ["seed"]);
        let Comparison::Paired(p) = &c.columns[0].result else {
            panic!()
        };
        assert_eq!((p.n, p.mean_diff), (2, 2.0));
    }

    #[test]
    fn signs_and_p_values_read_well() {
        assert_eq!(signed(0.834, 2), "+0.83");
        assert_eq!(signed(-1.2, 2), "−1.20");
        assert_eq!(signed(-0.001, 2), "+0.00");
        assert_eq!(p_text(0.0004), "< 0.001");
        // In LaTeX the `<` is math, not text mode's `¡`, and the `$` are not escaped.
        let mut t = two_by_two();
        let many = |base: f64| (1..=12).map(|s| run(s, base + s as f64 * 0.01)).collect();
        t.cells[0][0] = many(80.0);
        t.cells[1][0] = many(70.0);
        let tex = compare(&t, 0, 1, &["seed".to_string()]).latex(2);
        assert!(tex.contains("$<$ 0.001"), "{tex}");
        assert!(!tex.contains("\\$"), "{tex}");
        assert_eq!(p_text(0.12345), "0.123");
    }
}
