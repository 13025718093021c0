//! The state of every instance of a pipeline against a store: cached, stale (with the
//! reasons) or blocked on a stale input. Used by `rst status`, lineage, export and audits.
use rayon::prelude::*;
use serde::Serialize;

use crate::cache::shared::{Fetch, SharedCache};
use crate::cache::store::{Listing, Store};
use crate::error::Result;
use crate::exec::plan::Planner;
use crate::spec::{Instance, Pipeline};

#[derive(Serialize)]
pub struct StatusLine {
    pub instance: String,
    pub stage: String,
    pub kind: &'static str,
    /// cached | stale | blocked; queued | running while a Slurm job computes it; remote
    /// (stale here, the remote has it); fetched (by `rst pull`, now cached)
    pub state: &'static str,
    pub reasons: Vec<String>,
    pub key: Option<String>,
    pub artifact: Option<String>,
    /// The GPUs a cached instance was computed on (its entry's `run.gpus`, whether rst
    /// leased them or a cluster bound them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<String>,
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
///
/// An instance's key needs its inputs' artifacts, so instances are looked up level by
/// level (a level: those whose inputs are all in earlier levels), each level in parallel:
/// a sweep of a million instances is one level of a million independent lookups.
pub fn status_lines(p: &Pipeline, store: &Store) -> Result<Vec<StatusLine>> {
    status_lines_with(p, store, None)
}

/// What [`status_lines_with`] asks of a shared cache (the remote) for what is stale here.
#[derive(Clone, Copy)]
pub enum Tier<'a> {
    /// Which stale instances it can serve: `remote` lines (its entries are read, for the
    /// artifacts the keys of their consumers need; nothing is downloaded).
    Peek(&'a dyn SharedCache),
    /// Fetch them into the store (`rst pull`): `fetched` lines, or stale ones with the
    /// reason it was not used.
    Fetch(&'a dyn SharedCache),
}

/// [`status_lines`], asking `tier` about what the local store does not have.
pub fn status_lines_with(
    p: &Pipeline,
    store: &Store,
    tier: Option<Tier<'_>>,
) -> Result<Vec<StatusLine>> {
    let planner = Planner::new(p);
    // Above this, listing the store once costs less than a failing lookup per miss.
    const LIST_FROM: usize = 10_000;
    let listing = (p.instances.len() >= LIST_FROM).then(|| store.listing());
    let listing = listing.as_ref();
    let mut digests: Vec<Option<String>> = vec![None; p.instances.len()];
    let mut lines: Vec<Option<StatusLine>> = Vec::new();
    lines.resize_with(p.instances.len(), || None);
    for level in levels(p) {
        // In chunks, so that what is computed but not yet moved stays small.
        for chunk in level.chunks(1 << 16) {
            let mut done: Vec<(StatusLine, Option<String>)> = chunk
                .par_iter()
                .map(|&i| {
                    let at = At { p, store, listing };
                    status_line(&at, &planner, &digests, &p.instances[i])
                })
                .collect::<Result<_>>()?;
            if let Some(tier) = tier {
                ask_tier(tier, store, &mut done);
            }
            for (&i, (line, digest)) in chunk.iter().zip(done) {
                digests[i] = digest;
                lines[i] = Some(line);
            }
        }
    }
    // `filter_map` (not `flatten`) collects in place, into the same allocation.
    #[allow(clippy::filter_map_identity)]
    Ok(lines.into_iter().filter_map(|l| l).collect())
}

/// The stale lines with a key, asked of the shared cache (one batch: its requests run
/// in parallel).
fn ask_tier(tier: Tier<'_>, store: &Store, done: &mut [(StatusLine, Option<String>)]) {
    let asked: Vec<usize> = (0..done.len())
        .filter(|&j| done[j].0.state == "stale" && done[j].0.key.is_some())
        .collect();
    if asked.is_empty() {
        return;
    }
    let keys: Vec<&str> = asked
        .iter()
        .map(|&j| done[j].0.key.as_deref().unwrap_or_default())
        .collect();
    match tier {
        Tier::Peek(shared) => {
            let found = shared.peek(&keys);
            for (&j, artifact) in asked.iter().zip(found) {
                if let Some(artifact) = artifact {
                    let (line, digest) = &mut done[j];
                    line.state = "remote";
                    line.reasons.insert(
                        0,
                        "the remote has it (rst pull, or rst run, fetches it)".to_string(),
                    );
                    line.artifact = Some(artifact.clone());
                    *digest = Some(artifact);
                }
            }
        }
        Tier::Fetch(shared) => {
            let fetched = shared.fetch(store, &keys, &|| false);
            for (&j, f) in asked.iter().zip(fetched) {
                let (line, digest) = &mut done[j];
                match f {
                    Fetch::Hit(f) => {
                        line.state = "fetched";
                        line.reasons = vec![crate::human::human_bytes(f.bytes)];
                        line.artifact = Some(f.artifact.clone());
                        *digest = Some(f.artifact);
                    }
                    Fetch::Miss => {}
                    Fetch::Rejected(why) => line.reasons.insert(0, format!("not fetched: {why}")),
                }
            }
        }
    }
}

/// Instance ids by depth (0: no inputs; else one more than the deepest input), each level
/// in id order. Instances are topologically ordered, so one pass suffices.
fn levels(p: &Pipeline) -> Vec<Vec<usize>> {
    let mut depth = vec![0usize; p.instances.len()];
    let mut levels: Vec<Vec<usize>> = Vec::new();
    for inst in &p.instances {
        let d = inst
            .inputs
            .values()
            .flatten()
            .map(|&u| depth[u] + 1)
            .max()
            .unwrap_or(0);
        depth[inst.id] = d;
        if levels.len() <= d {
            levels.resize_with(d + 1, Vec::new);
        }
        levels[d].push(inst.id);
    }
    levels
}

/// What the lines are of: the pipeline, the store and, for big pipelines, its listing.
struct At<'a> {
    p: &'a Pipeline,
    store: &'a Store,
    listing: Option<&'a Listing>,
}

/// One instance's line, and its artifact when cached (its consumers' keys need it).
fn status_line(
    at: &At<'_>,
    planner: &Planner<'_>,
    digests: &[Option<String>],
    inst: &Instance,
) -> Result<(StatusLine, Option<String>)> {
    let (p, store) = (at.p, at.store);
    let stage = &p.stages[inst.stage];
    let mut line = StatusLine {
        instance: inst.name.clone(),
        stage: stage.name.clone(),
        kind: stage.kind.name(),
        state: "",
        reasons: Vec::new(),
        key: None,
        artifact: None,
        gpus: Vec::new(),
    };
    if inst.best_pending {
        let study = inst
            .inputs
            .get(crate::spec::BEST_INPUT)
            .and_then(|ids| ids.first())
            .map_or("?", |&u| p.instances[u].name.as_str());
        line.state = "stale";
        line.reasons
            .push(format!("waits for the best trial of {study}"));
        return Ok((line, None));
    }
    let mut unknown: Vec<&str> = inst
        .inputs
        .values()
        .flatten()
        .filter(|&&u| digests[u].is_none())
        .map(|&u| p.instances[u].name.as_str())
        .collect();
    if !unknown.is_empty() {
        unknown.dedup();
        line.state = "stale";
        line.reasons.push(format!(
            "runs after its stale input{} {}",
            if unknown.len() > 1 { "s" } else { "" },
            unknown.join(", ")
        ));
        return Ok((line, None));
    }
    let record = planner.record(inst, &|u| digests[u].clone().unwrap_or_default())?;
    let key = record.key();
    let mut digest = None;
    if let Some((artifact, gpus)) = store.hit_listed(at.listing, &key) {
        line.state = "cached";
        line.artifact = Some(artifact.clone());
        line.gpus = gpus;
        digest = Some(artifact);
    } else {
        line.state = "stale";
        line.reasons = match store.last_entry_listed(at.listing, &p.name, &inst.name) {
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
    Ok((line, digest))
}
