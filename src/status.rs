//! The state of every instance of a pipeline against a store: cached, stale (with the
//! reasons) or blocked on a stale input. Used by `rst status`, lineage, export and audits.
use serde::Serialize;

use crate::cache::store::Store;
use crate::error::Result;
use crate::exec::plan::Planner;
use crate::spec::Pipeline;

#[derive(Serialize)]
pub struct StatusLine {
    pub instance: String,
    pub stage: String,
    pub kind: String,
    /// cached | stale | blocked; queued | running while a Slurm job computes it
    pub state: String,
    pub reasons: Vec<String>,
    pub key: Option<String>,
    pub artifact: Option<String>,
}

/// The instances among `lines` that are not cached, by name.
pub fn uncached<'a>(lines: impl IntoIterator<Item = &'a StatusLine>) -> Vec<&'a str> {
    lines
        .into_iter()
        .filter(|l| l.state != "cached")
        .map(|l| l.instance.as_str())
        .collect()
}

/// The state of every instance: cached, stale (with reasons) or blocked on a stale input.
pub fn status_lines(p: &Pipeline, store: &Store) -> Result<Vec<StatusLine>> {
    let planner = Planner::new(p);
    let mut digests: Vec<Option<String>> = vec![None; p.instances.len()];
    let mut lines = Vec::new();
    for inst in &p.instances {
        let stage = &p.stages[inst.stage];
        let mut line = StatusLine {
            instance: inst.name.clone(),
            stage: stage.name.clone(),
            kind: stage.kind.name().into(),
            state: String::new(),
            reasons: Vec::new(),
            key: None,
            artifact: None,
        };
        let unknown: Vec<&str> = inst
            .inputs
            .values()
            .flatten()
            .filter(|&&u| digests[u].is_none())
            .map(|&u| p.instances[u].name.as_str())
            .collect();
        if !unknown.is_empty() {
            let mut u = unknown.clone();
            u.dedup();
            line.state = "stale".into();
            line.reasons.push(format!(
                "runs after its stale input{} {}",
                if u.len() > 1 { "s" } else { "" },
                u.join(", ")
            ));
            lines.push(line);
            continue;
        }
        let record = planner.record(inst, &|u| digests[u].clone().unwrap_or_default())?;
        let key = record.key();
        if let Some(entry) = store.entry(&key) {
            line.state = "cached".into();
            line.artifact = Some(entry.artifact.clone());
            digests[inst.id] = Some(entry.artifact);
        } else {
            line.state = "stale".into();
            line.reasons = match store.last_entry(&p.name, &inst.name) {
                None => vec!["never run".to_string()],
                Some(old) if old.key == key => {
                    vec!["its cached artifact is missing (removed or quarantined)".to_string()]
                }
                Some(old) => {
                    let d = record.diff(&old.record);
                    if d.is_empty() {
                        vec!["cache entry missing".to_string()]
                    } else {
                        d
                    }
                }
            };
        }
        line.key = Some(key);
        lines.push(line);
    }
    Ok(lines)
}
