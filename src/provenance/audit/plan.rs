//! Which stage instances an audit recomputes (`--stage` pattern, `--sample` of them, all
//! cached) and with how many threads each.
use std::path::Path;

use super::AuditOptions;
use crate::cache::store::Entry;
use crate::error::{Result, UserError};
use crate::spec::Pipeline;
use crate::status::StatusLine;

/// A chosen instance: its index in the pipeline and the key it is cached under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    pub instance: usize,
    pub key: String,
}

impl AuditOptions {
    /// Refuses flags no audit can honour, before anything is loaded.
    pub fn validate(&self) -> Result<()> {
        if self.jobs == Some(0) {
            return Err(UserError::new("--jobs must be at least 1").into());
        }
        if self.sample == Some(0) {
            return Err(UserError::new("--sample must be at least 1").into());
        }
        if let Some(t) = self.tolerance {
            if !(t >= 0.0 && t.is_finite()) {
                return Err(UserError::new(format!(
                    "--tolerance {t}: give a non-negative number of accuracy points (e.g. 0.1)"
                ))
                .into());
            }
        }
        Ok(())
    }
}

/// The instances `opts` picks, in pipeline order; every one must be cached (`lines` are
/// the pipeline's status). `file` is the pipeline file as the user gave it, for help.
pub fn choose(
    p: &Pipeline,
    lines: &[StatusLine],
    opts: &AuditOptions,
    file: &Path,
) -> Result<Vec<Chosen>> {
    let matching = matching(p, opts.stage.as_deref())?;
    let picked = sample(matching, opts.sample, opts.seed);
    let stale: Vec<&str> = picked
        .iter()
        .filter(|&&i| lines[i].state != "cached")
        .map(|&i| p.instances[i].name.as_str())
        .collect();
    if !stale.is_empty() {
        return Err(UserError::new(format!(
            "not cached, so there is nothing to audit: {}",
            stale.join(", ")
        ))
        .help(format!("run `rst run {}` first", file.display()))
        .into());
    }
    Ok(picked
        .into_iter()
        .filter_map(|i| {
            Some(Chosen {
                instance: i,
                key: lines[i].key.clone()?,
            })
        })
        .collect())
}

/// The instances whose name or stage name `pattern` matches (all without one).
fn matching(p: &Pipeline, pattern: Option<&str>) -> Result<Vec<usize>> {
    let chosen: Vec<usize> = (0..p.instances.len())
        .filter(|&i| match pattern {
            None => true,
            Some(pat) => {
                glob_match(pat, &p.instances[i].name)
                    || glob_match(pat, &p.stages[p.instances[i].stage].name)
            }
        })
        .collect();
    if chosen.is_empty() {
        let names: Vec<&str> = p.stages.iter().map(|s| s.name.as_str()).collect();
        return Err(UserError::new(format!(
            "--stage {}: no stage or instance matches in {}",
            pattern.unwrap_or_default(),
            p.file.display()
        ))
        .help(format!(
            "stages: {} (`*` matches any characters)",
            names.join(", ")
        ))
        .into());
    }
    Ok(chosen)
}

/// `--sample n --seed s`: n of `chosen` drawn with the seed, kept in pipeline order.
fn sample(chosen: Vec<usize>, n: Option<usize>, seed: u64) -> Vec<usize> {
    match n {
        Some(n) if n < chosen.len() => {
            let mut rng = crate::prng::Prng::new(seed, "audit-sample");
            let mut picked: Vec<usize> = rng
                .sample(chosen.len(), n)
                .into_iter()
                .map(|k| chosen[k])
                .collect();
            picked.sort();
            picked
        }
        _ => chosen,
    }
}

/// `*` matches any run of characters, `?` one character.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some(('*', rest)) => (0..=n.len()).any(|i| go(rest, &n[i..])),
            Some(('?', rest)) => !n.is_empty() && go(rest, &n[1..]),
            Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

/// The thread count a stage was computed with: the key's own record where the key has one
/// (torch stages: it is part of what the key stands for), else the run facts (entries
/// written before run facts existed have 0 there), else what the pipeline asks for now.
pub fn recorded_threads(entry: &Entry, pipeline_threads: usize) -> usize {
    entry
        .record
        .env
        .get("threads")
        .and_then(|t| t.parse::<usize>().ok())
        .filter(|&t| t > 0)
        .or(Some(entry.run.threads).filter(|&t| t > 0))
        .unwrap_or(pipeline_threads)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: the demo's pretraining (computed with 2 threads, before entries
    /// recorded run facts) was audited with 1 thread and reported as differing.
    #[test]
    fn threads_come_from_the_key_record_first() {
        let mut entry = Entry {
            key: "k".into(),
            artifact: "a".into(),
            pipeline: "p".into(),
            instance: "i".into(),
            record: crate::cache::key::KeyRecord {
                cache_version: 2,
                kind: "train".into(),
                kind_version: 1,
                params: serde_json::json!({}),
                inputs: Default::default(),
                local_deps: Default::default(),
                env: [("threads".to_string(), "2".to_string())].into(),
            },
            created_unix: 0.0,
            duration_s: 0.0,
            size_bytes: 0,
            files: 0,
            rst_version: String::new(),
            run: Default::default(),
        };
        assert_eq!(recorded_threads(&entry, 4), 2);
        entry.record.env.clear();
        assert_eq!(recorded_threads(&entry, 4), 4, "no record, no run facts");
        entry.run.threads = 3;
        assert_eq!(recorded_threads(&entry, 4), 3);
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("eval_*", "eval_regsl[rate=0.2, seed=1]"));
        assert!(glob_match("re?sl", "regsl"));
        assert!(!glob_match("eval_*", "regsl"));
        assert!(glob_match("table", "table"));
        assert!(!glob_match("tab", "table"));
    }
}
