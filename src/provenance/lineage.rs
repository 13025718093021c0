//! `rst lineage`: the tree of everything an artifact or a published result came from, down
//! to the downloaded files and their checksums, built from the cache entries alone (each
//! entry records its inputs' digests and the keys of the entries it read them from;
//! [`super::EntryIndex`] finds those entries, or for older entries the likeliest producer).
use crate::human::short;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{EntryIndex, PUBLISHED_FILE};
use crate::cache::store::{Entry, RunFacts, Store};
use crate::data::fetch::sha256_file;
use crate::error::{Error, Result, UserError};
use crate::spec::Pipeline;

/// One artifact in a lineage tree.
#[derive(Debug, Clone, Serialize)]
pub struct Node {
    pub instance: String,
    pub pipeline: String,
    pub kind: String,
    pub kind_version: u32,
    pub cache_version: u32,
    pub key: String,
    pub artifact: String,
    pub params: Value,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub local_files: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    pub run: RunFacts,
    /// The stage's log, when it is still in the cache.
    pub log: Option<PathBuf>,
    /// For `download` stages: the fetched files, their sha256 and where they came from.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub downloads: Vec<Downloaded>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<InputEdge>,
    /// Shown in full earlier in the tree (its inputs are not repeated).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub repeated: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct InputEdge {
    /// The input's name in the consuming stage (`data`, `evals`).
    pub name: String,
    pub instance: String,
    pub digest: String,
    /// None when no cache entry that produced this artifact is left (removed by gc).
    pub node: Option<Box<Node>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Downloaded {
    pub name: String,
    pub sha256: Option<String>,
    pub mirrors: Vec<String>,
}

/// The files a `download` artifact holds with their checksums, and the mirrors its params
/// listed.
pub fn downloads_of(store: &Store, entry: &Entry) -> Vec<Downloaded> {
    if entry.record.kind != "download" {
        return Vec::new();
    }
    let dir = store.object_path(&entry.artifact);
    let recorded: BTreeMap<String, Option<String>> =
        std::fs::read(dir.join(crate::data::dataset::META_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|m| m["info"]["files"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|f| {
                Some((
                    f["name"].as_str()?.to_string(),
                    f["sha256"].as_str().map(str::to_string),
                ))
            })
            .collect();
    let files = entry.record.params["files"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    files
        .iter()
        .filter_map(|f| {
            let name = f["name"].as_str()?.to_string();
            let mirrors = f["mirrors"]
                .as_array()
                .map(|m| {
                    m.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let raw = dir.join("files").join(&name);
            let sha256 = recorded
                .get(&name)
                .cloned()
                .flatten()
                .or_else(|| {
                    raw.is_file()
                        .then(|| sha256_file(&raw, &|_| {}).ok())
                        .flatten()
                })
                .or_else(|| f["sha256"].as_str().map(str::to_ascii_lowercase));
            Some(Downloaded {
                name,
                sha256,
                mirrors,
            })
        })
        .collect()
}

/// The lineage tree below `entry`. Artifacts met twice are shown once in full.
pub fn build(store: &Store, index: &EntryIndex, entry: &Entry, seen: &mut HashSet<String>) -> Node {
    let log = store.root().join(&entry.run.log);
    let mut node = Node {
        instance: entry.instance.clone(),
        pipeline: entry.pipeline.clone(),
        kind: entry.record.kind.clone(),
        kind_version: entry.record.kind_version,
        cache_version: entry.record.cache_version,
        key: entry.key.clone(),
        artifact: entry.artifact.clone(),
        params: entry.record.params.clone(),
        local_files: entry.record.local_deps.clone(),
        env: entry.record.env.clone(),
        run: entry.run.clone(),
        log: (!entry.run.log.is_empty() && log.is_file()).then_some(log),
        downloads: downloads_of(store, entry),
        inputs: Vec::new(),
        repeated: false,
    };
    if !seen.insert(entry.key.clone()) {
        node.repeated = true;
        node.downloads.clear();
        return node;
    }
    for (name, recs) in &entry.record.inputs {
        let consumed = entry.run.consumed.get(name);
        for (j, r) in recs.iter().enumerate() {
            // The entry the stage actually read (recorded when it ran); entries older than
            // that record: the likeliest producer of the same artifact.
            let up = consumed
                .and_then(|keys| keys.get(j))
                .and_then(|key| index.by_key(key, &r.digest))
                .or_else(|| index.producer(&r.digest, &r.instance, &entry.pipeline));
            node.inputs.push(InputEdge {
                name: name.clone(),
                instance: r.instance.clone(),
                digest: r.digest.clone(),
                node: up.map(|e| Box::new(build(store, index, e, seen))),
            });
        }
    }
    node
}

/// Every download (name, sha256) reachable from `node`.
pub fn all_downloads(node: &Node, out: &mut Vec<(String, Downloaded)>) {
    for d in &node.downloads {
        out.push((node.instance.clone(), d.clone()));
    }
    for i in &node.inputs {
        if let Some(n) = &i.node {
            all_downloads(n, out);
        }
    }
}

/// The tree as indented text.
pub fn render(node: &Node, cwd: &Path) -> String {
    let mut out = String::new();
    render_into(node, 0, None, cwd, &mut out);
    out
}

fn render_into(node: &Node, depth: usize, via: Option<&str>, cwd: &Path, out: &mut String) {
    let pad = "  ".repeat(depth);
    let via = via.map(|v| format!("{v} <- ")).unwrap_or_default();
    out.push_str(&format!(
        "{pad}{via}{} ({} v{}) artifact {} key {}{}\n",
        node.instance,
        node.kind,
        node.kind_version,
        short(&node.artifact),
        short(&node.key),
        if node.repeated { " (shown above)" } else { "" }
    ));
    if node.repeated {
        return;
    }
    let pad = "  ".repeat(depth + 2);
    let mut params = serde_json::to_string(&node.params).unwrap_or_default();
    if params.chars().count() > 240 {
        params = params.chars().take(240).collect::<String>() + "...";
    }
    out.push_str(&format!("{pad}params {params}\n"));
    for (f, d) in &node.local_files {
        out.push_str(&format!("{pad}local file {f} (blake3 {})\n", short(d)));
    }
    if !node.env.is_empty() {
        let env: Vec<String> = node.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push_str(&format!("{pad}key environment {}\n", env.join(", ")));
    }
    if node.run.started_unix > 0.0 {
        out.push_str(&format!("{pad}ran {}\n", super::describe_run(&node.run)));
    }
    if let Some(log) = &node.log {
        out.push_str(&format!(
            "{pad}log {}\n",
            log.strip_prefix(cwd).unwrap_or(log).display()
        ));
    }
    for d in &node.downloads {
        out.push_str(&format!(
            "{pad}file {} sha256 {} from {}\n",
            d.name,
            d.sha256.as_deref().unwrap_or("-"),
            d.mirrors.join(" | ")
        ));
    }
    for i in &node.inputs {
        match &i.node {
            Some(n) => render_into(n, depth + 1, Some(&i.name), cwd, out),
            None => out.push_str(&format!(
                "{}{} <- {} artifact {} (no cache entry left for it)\n",
                "  ".repeat(depth + 1),
                i.name,
                i.instance,
                short(&i.digest)
            )),
        }
    }
}

/// One published file, as `results/<pipeline>/provenance.json` records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishedFile {
    pub stage: String,
    pub instance: String,
    pub key: String,
    pub artifact: String,
    /// The file's path inside the artifact.
    pub path: String,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Published {
    pub pipeline: String,
    pub file: PathBuf,
    pub published_unix: f64,
    /// Path relative to `results/<pipeline>/` → where it came from.
    pub files: BTreeMap<String, PublishedFile>,
}

impl Published {
    pub fn read(results_dir: &Path) -> Option<Published> {
        serde_json::from_slice(&std::fs::read(results_dir.join(PUBLISHED_FILE)).ok()?).ok()
    }
}

/// Writes `provenance.json` into `root` (`results/<pipeline>/`): for every published file
/// (path relative to `root`), the stage instance, key and artifact it was copied from, and
/// its sha256 (computed by `publish` while copying).
pub fn write_published(
    root: &Path,
    p: &Pipeline,
    files: BTreeMap<String, PublishedFile>,
) -> Result<()> {
    let doc = Published {
        pipeline: p.name.clone(),
        file: p
            .file
            .strip_prefix(&p.project_dir)
            .unwrap_or(&p.file)
            .to_path_buf(),
        published_unix: super::unix_now(),
        files,
    };
    crate::cache::store::write_atomic(
        &root.join(PUBLISHED_FILE),
        (serde_json::to_string_pretty(&doc).expect("serialises") + "\n").as_bytes(),
    )?;
    Ok(())
}

/// `results/<pipeline>/` holding `path`, with its provenance record.
fn find_published(path: &Path) -> Option<(PathBuf, Published)> {
    let abs = std::path::absolute(path).ok()?;
    abs.ancestors()
        .skip(usize::from(abs.is_file()))
        .find_map(|d| Published::read(d).map(|p| (d.to_path_buf(), p)))
}

/// The cache entries a result file (or directory of results) came from, with notes on
/// files modified since they were published.
pub fn result_roots(path: &Path, store: &Store) -> Result<(Vec<Entry>, Vec<String>)> {
    if !path.exists() {
        return Err(UserError::new(format!("{} does not exist", path.display()))
            .help("give a published result (results/<pipeline>/table.md) or a pipeline file and a stage: rst lineage FILE STAGE")
            .into());
    }
    let Some((dir, published)) = find_published(path) else {
        return Err(UserError::new(format!(
            "{} is not a published result: no {PUBLISHED_FILE} beside it or above it",
            path.display()
        ))
        .help("`rst run FILE` publishes results with their provenance; or ask about a stage: rst lineage FILE STAGE")
        .into());
    };
    let abs = std::path::absolute(path).map_err(|e| Error::io("current directory", e))?;
    let rel = abs.strip_prefix(&dir).unwrap_or(Path::new(""));
    let rel = rel.to_string_lossy();
    let chosen: Vec<(&String, &PublishedFile)> = published
        .files
        .iter()
        .filter(|(f, _)| rel.is_empty() || f.as_str() == rel || f.starts_with(&format!("{rel}/")))
        .collect();
    if chosen.is_empty() {
        return Err(UserError::new(format!(
            "{} was not published by rst ({} in {} does not list it)",
            path.display(),
            PUBLISHED_FILE,
            dir.display()
        ))
        .help(format!(
            "published files: {}",
            published
                .files
                .keys()
                .take(12)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .into());
    }
    let mut notes = Vec::new();
    let mut keys: Vec<(String, String)> = Vec::new();
    for (f, pf) in &chosen {
        match sha256_file(&dir.join(f), &|_| {}) {
            Ok(sha) if sha == pf.sha256 => {}
            Ok(_) => notes.push(format!(
                "warning: {f} was modified after rst published it (sha256 differs from {PUBLISHED_FILE})"
            )),
            Err(_) => notes.push(format!("warning: {f} is missing")),
        }
        if !keys.iter().any(|(k, _)| k == &pf.key) {
            keys.push((pf.key.clone(), pf.instance.clone()));
        }
    }
    let mut roots = Vec::new();
    for (key, instance) in keys {
        match store.entry(&key) {
            Some(e) => roots.push(e),
            None => {
                return Err(UserError::new(format!(
                    "the cache entry of {instance} (key {}), which {} came from, is not in {}",
                    short(&key),
                    path.display(),
                    store.root().display()
                ))
                .help(format!(
                    "pass the cache it was computed in with --cache-dir, or rerun `rst run {}`",
                    published.file.display()
                ))
                .into())
            }
        }
    }
    Ok((roots, notes))
}

/// The cache entries of a stage (every instance) or one instance of a pipeline.
pub fn stage_roots(p: &Pipeline, store: &Store, stage: &str) -> Result<Vec<Entry>> {
    let lines = crate::status::status_lines(p, store)?;
    let chosen: Vec<_> = lines
        .iter()
        .filter(|l| l.stage == stage || l.instance == stage)
        .collect();
    if chosen.is_empty() {
        let names: Vec<&str> = p.stages.iter().map(|s| s.name.as_str()).collect();
        let mut u = UserError::new(format!(
            "no stage or instance `{stage}` in {}",
            p.file.display()
        ));
        u.help = Some(
            match crate::hint::did_you_mean(stage, names.iter().copied()) {
                Some(h) => h,
                None => format!("stages: {}", names.join(", ")),
            },
        );
        return Err(u.into());
    }
    let stale = crate::status::uncached(chosen.iter().copied());
    if !stale.is_empty() {
        return Err(UserError::new(format!(
            "not cached: {} (lineage describes computed artifacts)",
            stale.join(", ")
        ))
        .help(format!("run `rst run {}` first", p.file.display()))
        .into());
    }
    Ok(chosen
        .iter()
        .filter_map(|l| store.entry(l.key.as_deref()?))
        .collect())
}

/// The lineage trees of `roots`; an artifact reached twice is shown in full once.
pub fn trees(store: &Store, roots: &[Entry]) -> Vec<Node> {
    let index = EntryIndex::load(store);
    let mut seen = HashSet::new();
    roots
        .iter()
        .map(|e| build(store, &index, e, &mut seen))
        .collect()
}

/// The downloaded files the trees start from, one line each (empty when none).
pub fn render_sources(trees: &[Node]) -> String {
    let mut downloads = Vec::new();
    for t in trees {
        all_downloads(t, &mut downloads);
    }
    if downloads.is_empty() {
        return String::new();
    }
    let mut out = format!("\nsources ({}):\n", downloads.len());
    for (inst, d) in downloads {
        out += &format!(
            "  {inst}: {} sha256 {}\n",
            d.name,
            d.sha256.as_deref().unwrap_or("-")
        );
    }
    out
}
