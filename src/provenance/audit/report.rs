//! The audit's report: per stage what was recomputed and how it compares, rendered as
//! `audit.md` (a table, then details of every stage that is not bit-identical) and
//! `audit.json`, written into `results/<pipeline>/`.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::compare::{Comparison, Verdict};
use crate::cache::store::write_atomic;
use crate::error::{Error, Result};
use crate::human::short;
use crate::report::table::md_escape;

/// One audited stage instance.
#[derive(Debug, Clone, Serialize)]
pub struct StageAudit {
    pub instance: String,
    pub stage: String,
    pub kind: String,
    pub key: String,
    pub cached_artifact: String,
    pub fresh_artifact: Option<String>,
    pub verdict: Verdict,
    pub threads: usize,
    pub secs: f64,
    pub comparison: Comparison,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl StageAudit {
    pub fn passed(&self) -> bool {
        self.verdict.passed()
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub pipeline: String,
    pub file: PathBuf,
    pub started: String,
    pub ended: String,
    pub host: String,
    pub rst_version: String,
    pub stage_pattern: Option<String>,
    pub sample: Option<usize>,
    pub seed: u64,
    pub tolerance_points: Option<f64>,
    pub audited: usize,
    pub passed: bool,
    pub counts: BTreeMap<String, usize>,
    pub stages: Vec<StageAudit>,
}

impl Report {
    /// `audit.md`: what was audited, the verdict counts, a table of every stage, then the
    /// details of each that is not bit-identical.
    pub fn markdown(&self) -> String {
        let mut out = self.header();
        out.push_str(&self.table());
        for s in self
            .stages
            .iter()
            .filter(|s| s.verdict != Verdict::BitIdentical)
        {
            out.push_str(&details(s));
        }
        out
    }

    /// The title, what was recomputed where, and the verdict counts.
    fn header(&self) -> String {
        let mut out = format!(
            "# Audit of {} ({})\n\n{} stage instance(s) recomputed on {} ({} to {}), rst {}",
            self.pipeline,
            self.file.display(),
            self.audited,
            self.host,
            self.started,
            self.ended,
            self.rst_version
        );
        if let Some(s) = &self.stage_pattern {
            out.push_str(&format!(", --stage {s}"));
        }
        if let Some(n) = self.sample {
            out.push_str(&format!(", --sample {n} --seed {}", self.seed));
        }
        if let Some(t) = self.tolerance_points {
            out.push_str(&format!(", tolerance {t} accuracy points"));
        }
        let counts: Vec<String> = self
            .counts
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect();
        out.push_str(&format!(
            ".\n\n**{}**: {}.\n\n",
            if self.passed { "PASSED" } else { "FAILED" },
            counts.join(", ")
        ));
        out
    }

    /// One row per audited stage.
    fn table(&self) -> String {
        let mut out = String::from(
            "| stage | kind | threads | verdict | what differs |\n|---|---|---|---|---|\n",
        );
        for s in &self.stages {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                md_escape(&s.instance),
                s.kind,
                s.threads,
                s.verdict,
                md_escape(&summary(s))
            ));
        }
        out
    }
}

/// The section of a stage that is not bit-identical: artifacts, files, accuracies,
/// weights and table cells that moved, notes.
fn details(s: &StageAudit) -> String {
    let mut out = format!("\n## {}: {}\n\n", s.instance, s.verdict);
    out.push_str(&format!(
        "- cached artifact `{}`, fresh `{}`\n",
        short(&s.cached_artifact),
        s.fresh_artifact.as_deref().map(short).unwrap_or("-")
    ));
    let f = &s.comparison.files;
    for (what, list) in [
        ("changed", &f.changed),
        ("only in the cached artifact", &f.removed),
        ("only in the fresh artifact", &f.added),
    ] {
        if !list.is_empty() {
            out.push_str(&format!("- files {what}: {}\n", list.join(", ")));
        }
    }
    for m in &s.comparison.metrics {
        out.push_str(&format!(
            "- {} {}: {:.2}% -> {:.2}% ({:+.2} points)\n",
            m.file,
            m.metric,
            m.cached * 100.0,
            m.fresh * 100.0,
            m.delta_points
        ));
    }
    for w in &s.comparison.weights {
        out.push_str(&format!(
            "- {}: max |weight difference| {:.3e}{}\n",
            w.file,
            w.max_abs_diff,
            if w.tensor.is_empty() {
                String::new()
            } else {
                format!(" (in {})", w.tensor)
            }
        ));
        for n in &w.notes {
            out.push_str(&format!("  - {n}\n"));
        }
    }
    for c in &s.comparison.cells {
        out.push_str(&format!(
            "- table cell {} / {}: {} -> {}{}\n",
            c.row,
            c.column,
            if c.cached.is_empty() { "-" } else { &c.cached },
            if c.fresh.is_empty() { "-" } else { &c.fresh },
            c.delta_points
                .map(|d| format!(" ({d:+.2} points)"))
                .unwrap_or_default()
        ));
    }
    for n in &s.notes {
        out.push_str(&format!("- {n}\n"));
    }
    out
}

/// One line: what differs in a stage.
fn summary(s: &StageAudit) -> String {
    if s.verdict == Verdict::BitIdentical {
        return "-".into();
    }
    let c = &s.comparison;
    let mut parts = Vec::new();
    let files = c.files.changed.len() + c.files.added.len() + c.files.removed.len();
    if !c.files.is_empty() {
        parts.push(format!(
            "{files} file{}: {}",
            if files == 1 { "" } else { "s" },
            c.files
                .changed
                .iter()
                .chain(&c.files.added)
                .chain(&c.files.removed)
                .take(4)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(d) = c.max_delta() {
        parts.push(format!("accuracy moved up to {d:.2} points"));
    }
    if let Some(w) = c.weights.iter().map(|w| w.max_abs_diff).reduce(f64::max) {
        parts.push(format!("max weight diff {w:.3e}"));
    }
    if !c.cells.is_empty() {
        parts.push(format!("{} table cell(s) moved", c.cells.len()));
    }
    if matches!(s.verdict, Verdict::Failed | Verdict::CacheCorrupt) {
        if let Some(n) = s.notes.last() {
            parts.push(n.clone());
        }
    }
    parts.join("; ")
}

/// How many stages got each verdict (by its name, as audit.json has always listed them).
pub fn count(results: &[StageAudit]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in results {
        *m.entry(r.verdict.to_string()).or_insert(0) += 1;
    }
    m
}

impl Report {
    /// Writes `audit.md` and `audit.json` into `dir` (created); returns the Markdown.
    pub fn write(&self, dir: &Path) -> Result<String> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io_path("cannot create", dir, e))?;
        let md = self.markdown();
        write_atomic(&dir.join("audit.md"), md.as_bytes())?;
        let json = serde_json::to_string_pretty(self).map_err(|source| Error::Encode {
            what: "the audit report",
            source,
        })?;
        write_atomic(&dir.join("audit.json"), (json + "\n").as_bytes())?;
        Ok(md)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: the audit had its own `md_escape`, which left newlines in, so a
    /// multi-line failure message broke the table row in two.
    #[test]
    fn a_multi_line_note_stays_in_its_table_row() {
        let stage = StageAudit {
            instance: "eval[a|b]".into(),
            stage: "eval".into(),
            kind: "command".into(),
            key: "k".into(),
            cached_artifact: "c".repeat(64),
            fresh_artifact: None,
            verdict: Verdict::Failed,
            threads: 1,
            secs: 0.5,
            comparison: Comparison::default(),
            notes: vec!["the recomputation failed: first line\nsecond line".into()],
        };
        let report = Report {
            pipeline: "p".into(),
            file: "p.yaml".into(),
            started: "2026-12-02T00:00:00Z".into(),
            ended: "2026-12-02T00:00:01Z".into(),
            host: "h".into(),
            rst_version: "0".into(),
            stage_pattern: None,
            sample: None,
            seed: 0,
            tolerance_points: None,
            audited: 1,
            passed: false,
            counts: count(std::slice::from_ref(&stage)),
            stages: vec![stage],
        };
        let md = report.markdown();
        let row = md
            .lines()
            .find(|l| l.starts_with("| eval"))
            .unwrap_or_else(|| panic!("{md}"));
        assert_eq!(
            row,
            "| eval[a\\|b] | command | 1 | failed | the recomputation failed: first line second line |"
        );
        assert!(md.contains("**FAILED**: 1 failed."), "{md}");
        assert!(md.contains("## eval[a|b]: failed"), "{md}");
    }
}
