//! `rst audit`: recompute cached stages in a scratch cache and compare each fresh artifact
//! with the cached one.
//!
//! Design: each audited stage gets a scratch cache `cache/tmp/audit-<pid>-<n>/` (same
//! filesystem, removed afterwards). Each audited stage's input artifacts are made visible there as symbolic
//! links to the main cache's object directories (and to the base datasets that dataset
//! views name), so the worker reads the cached inputs, read-only, and publishes its fresh
//! artifact into the scratch cache only. The job is the cached entry's own: same key
//! record, same params, and the thread count the entry recorded.
//!
//! Verdicts, per stage: `bit-identical` (same artifact digest), `within tolerance` (differs,
//! but every accuracy compared moved by at most `--tolerance` points), `differs`, `cache
//! corrupt` (the cached artifact no longer matches the digest it was stored under: it was
//! modified after the fact; `rst verify` quarantines it), `failed` (the stage did not run).
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use serde::Serialize;
use serde_json::Value;

use crate::cache::digest::{self, digest_path};
use crate::cache::store::{remove_tree, write_atomic, Entry, Store};
use crate::cli::PipelineArgs;
use crate::error::{Error, Result, UserError};
use crate::exec::local::LocalExecutor;
use crate::exec::{Cancel, Executor, Job, WorkerEvent};
use crate::provenance::{iso_time, unix_now};
use crate::spec::Pipeline;

pub struct AuditOptions {
    pub stage: Option<String>,
    pub sample: Option<usize>,
    pub seed: u64,
    pub jobs: Option<usize>,
    pub tolerance: Option<f64>,
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

#[derive(Debug, Clone, Default, Serialize)]
pub struct FileChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

impl FileChanges {
    fn is_empty(&self) -> bool {
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
    fn max_delta(&self) -> Option<f64> {
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

#[derive(Debug, Clone, Serialize)]
pub struct StageAudit {
    pub instance: String,
    pub stage: String,
    pub kind: String,
    pub key: String,
    pub cached_artifact: String,
    pub fresh_artifact: Option<String>,
    /// bit-identical | within tolerance | differs | cache corrupt | failed
    pub verdict: String,
    pub threads: usize,
    pub secs: f64,
    pub comparison: Comparison,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl StageAudit {
    pub fn passed(&self) -> bool {
        self.verdict == "bit-identical" || self.verdict == "within tolerance"
    }
}

fn files_with_hashes(dir: &Path) -> BTreeMap<String, (u64, blake3::Hash)> {
    digest::list_files(dir)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(rel, abs)| Some((rel, digest::hash_file(&abs).ok()?)))
        .collect()
}

fn read_json(path: &Path) -> Option<Value> {
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

fn compare_tables(a: &Value, b: &Value, out: &mut Vec<CellChange>) {
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
) -> &'static str {
    match fresh {
        None => "failed",
        _ if corrupt => "cache corrupt",
        Some(f) if f == recorded => "bit-identical",
        Some(_) => match (tolerance, cmp.max_delta()) {
            (Some(t), Some(d)) if d <= t + 1e-9 => "within tolerance",
            _ => "differs",
        },
    }
}

/// The scratch cache; its links into the main cache are removed before the tree.
struct Scratch {
    dir: PathBuf,
    store: Store,
}

impl Scratch {
    fn new(main: &Store) -> Result<Scratch> {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let dir = main.root().join("tmp").join(format!(
            "audit-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let store = Store::open(&dir).map_err(|e| Error::Internal(e.to_string()))?;
        Ok(Scratch { dir, store })
    }

    /// Makes the main cache's object `digest` (and the base datasets it names) visible in
    /// the scratch cache.
    fn link(&self, main: &Store, digest: &str) -> Result<()> {
        let to = self.store.object_path(digest);
        if to.exists() {
            return Ok(());
        }
        let from = main.object_path(digest);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io_path("cannot create", parent, e))?;
        }
        std::os::unix::fs::symlink(&from, &to)
            .map_err(|e| Error::io_path("cannot link", &to, e))?;
        if let Some(base) = read_json(&from.join(crate::data::dataset::META_FILE))
            .and_then(|m| m["base"].as_str().map(str::to_string))
        {
            self.link(main, &base)?;
        }
        Ok(())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for shard in std::fs::read_dir(self.dir.join("objects"))
            .into_iter()
            .flatten()
            .flatten()
        {
            for e in std::fs::read_dir(shard.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if e.file_type().is_ok_and(|t| t.is_symlink()) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let _ = remove_tree(&self.dir);
    }
}

/// Is the object `digest` intact? (memoised: inputs are shared)
fn intact(store: &Store, digest: &str, memo: &Mutex<HashMap<String, bool>>) -> bool {
    if let Some(&ok) = memo.lock().unwrap().get(digest) {
        return ok;
    }
    let ok = digest_path(&store.object_path(digest)).is_ok_and(|d| d == digest);
    memo.lock().unwrap().insert(digest.to_string(), ok);
    ok
}

struct Work<'a> {
    instance: usize,
    entry: Entry,
    job: Job,
    notes: Vec<String>,
    corrupt: bool,
    /// Its own scratch cache: another stage's links must not stand in for this one's
    /// fresh artifact.
    scratch: Scratch,
    p: &'a Pipeline,
}

/// `rst audit`. Ok(true): every stage met its standard.
pub fn command(args: &PipelineArgs, opts: &AuditOptions) -> Result<bool> {
    let started = unix_now();
    if opts.jobs == Some(0) {
        return Err(UserError::new("--jobs must be at least 1").into());
    }
    if opts.sample == Some(0) {
        return Err(UserError::new("--sample must be at least 1").into());
    }
    if let Some(t) = opts.tolerance {
        if !(t >= 0.0 && t.is_finite()) {
            return Err(UserError::new(format!(
                "--tolerance {t}: give a non-negative number of accuracy points (e.g. 0.1)"
            ))
            .into());
        }
    }
    let p = crate::project::load(&args.file, &args.set)?;
    let store = crate::project::open_store(&crate::project::cache_dir(&args.cache_dir))?;
    let lines = crate::status::status_lines(&p, &store)?;
    let mut chosen: Vec<usize> = (0..p.instances.len())
        .filter(|&i| match &opts.stage {
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
            opts.stage.as_deref().unwrap_or_default(),
            p.file.display()
        ))
        .help(format!(
            "stages: {} (`*` matches any characters)",
            names.join(", ")
        ))
        .into());
    }
    if let Some(n) = opts.sample {
        if n < chosen.len() {
            let mut rng = crate::prng::Prng::new(opts.seed, "audit-sample");
            let mut picked: Vec<usize> = rng
                .sample(chosen.len(), n)
                .into_iter()
                .map(|k| chosen[k])
                .collect();
            picked.sort();
            chosen = picked;
        }
    }
    let stale: Vec<&str> = chosen
        .iter()
        .filter(|&&i| lines[i].state != "cached")
        .map(|&i| p.instances[i].name.as_str())
        .collect();
    if !stale.is_empty() {
        return Err(UserError::new(format!(
            "not cached, so there is nothing to audit: {}",
            stale.join(", ")
        ))
        .help(format!("run `rst run {}` first", args.file.display()))
        .into());
    }
    let jobs = opts.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let memo = Mutex::new(HashMap::new());
    let mut work = Vec::new();
    for &i in &chosen {
        let inst = &p.instances[i];
        let key = lines[i].key.clone().expect("cached has a key");
        let entry = store
            .entry(&key)
            .ok_or_else(|| Error::Internal(format!("entry {key} vanished")))?;
        let mut notes = Vec::new();
        let corrupt = !intact(&store, &entry.artifact, &memo);
        let scratch = Scratch::new(&store)?;
        for (name, recs) in &entry.record.inputs {
            for r in recs {
                if !intact(&store, &r.digest, &memo) {
                    notes.push(format!(
                        "input {name} ({}) is corrupt in the cache: a stage never runs on a corrupt input, so it was not recomputed (run `rst verify`, then `rst run`)",
                        r.instance
                    ));
                }
                scratch.link(&store, &r.digest)?;
            }
        }
        let threads = recorded_threads(&entry, inst.threads);
        if threads > jobs {
            notes.push(format!(
                "recorded {threads} threads, more than --jobs {jobs}: recomputed with {threads} anyway"
            ));
        }
        let job = Job {
            cache_dir: scratch.dir.clone(),
            project_dir: p.project_dir.clone(),
            pipeline: p.name.clone(),
            instance: inst.name.clone(),
            key: key.clone(),
            kind: entry.record.kind.clone(),
            params: p.params_of(inst),
            inputs: entry.record.inputs.clone(),
            record: entry.record.clone(),
            threads,
            resources: inst.resources.clone(),
            consumed: entry.run.consumed.clone(),
        };
        work.push(Work {
            instance: i,
            entry,
            job,
            notes,
            corrupt,
            scratch,
            p: &p,
        });
    }
    let executor =
        LocalExecutor::new().map_err(|e| Error::io("cannot find the rst executable", e))?;
    let cancel = Cancel::default();
    {
        let cancel = cancel.clone();
        let kill = executor.killer();
        let _ = ctrlc::set_handler(move || {
            cancel.cancel();
            kill();
        });
    }
    eprintln!(
        "auditing {} of {} stage instances of {} in a scratch cache",
        work.len(),
        p.instances.len(),
        p.name
    );
    let results = run_all(&work, &executor, &cancel, &store, jobs, opts.tolerance);
    if cancel.is_cancelled() {
        return Err(Error::Interrupted);
    }
    let report = Report {
        pipeline: p.name.clone(),
        file: args.file.clone(),
        started: iso_time(started),
        ended: iso_time(unix_now()),
        host: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default(),
        rst_version: env!("CARGO_PKG_VERSION").to_string(),
        stage_pattern: opts.stage.clone(),
        sample: opts.sample,
        seed: opts.seed,
        tolerance_points: opts.tolerance,
        audited: results.len(),
        passed: results.iter().all(StageAudit::passed),
        counts: count(&results),
        stages: results,
    };
    let dir = p.project_dir.join("results").join(p.stem());
    std::fs::create_dir_all(&dir).map_err(|e| Error::io_path("cannot create", &dir, e))?;
    let md = report.markdown();
    write_atomic(&dir.join("audit.md"), md.as_bytes())
        .map_err(|e| Error::Internal(e.to_string()))?;
    write_atomic(
        &dir.join("audit.json"),
        (serde_json::to_string_pretty(&report)
            .map_err(|e| Error::Internal(format!("cannot encode the audit report: {e}")))?
            + "\n")
            .as_bytes(),
    )
    .map_err(|e| Error::Internal(e.to_string()))?;
    print!("{md}");
    let shown = dir.strip_prefix(&p.project_dir).unwrap_or(&dir);
    eprintln!(
        "audit report: {}/audit.md, {}/audit.json",
        shown.display(),
        shown.display()
    );
    Ok(report.passed)
}

fn count(results: &[StageAudit]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in results {
        *m.entry(r.verdict.clone()).or_insert(0) += 1;
    }
    m
}

/// Runs the audit jobs with at most `jobs` threads in use.
fn run_all(
    work: &[Work<'_>],
    executor: &LocalExecutor,
    cancel: &Cancel,
    main: &Store,
    jobs: usize,
    tolerance: Option<f64>,
) -> Vec<StageAudit> {
    let queue: Mutex<(VecDeque<usize>, usize)> = Mutex::new(((0..work.len()).collect(), 0));
    let cv = Condvar::new();
    let results: Mutex<Vec<Option<StageAudit>>> = Mutex::new(vec![None; work.len()]);
    let n_threads = jobs.min(work.len()).max(1);
    std::thread::scope(|s| {
        for _ in 0..n_threads {
            s.spawn(|| loop {
                let (w, threads) = {
                    let mut q = queue.lock().unwrap();
                    loop {
                        let Some(&next) = q.0.front() else { return };
                        let t = work[next].job.threads.min(jobs);
                        if q.1 == 0 || q.1 + t <= jobs {
                            q.0.pop_front();
                            q.1 += t;
                            break (next, t);
                        }
                        q = cv.wait(q).unwrap();
                    }
                };
                let r = audit_one(&work[w], executor, cancel, main, tolerance);
                results.lock().unwrap()[w] = Some(r);
                queue.lock().unwrap().1 -= threads;
                cv.notify_all();
            });
        }
    });
    results
        .into_inner()
        .unwrap()
        .into_iter()
        .flatten()
        .collect()
}

fn audit_one(
    w: &Work<'_>,
    executor: &LocalExecutor,
    cancel: &Cancel,
    main: &Store,
    tolerance: Option<f64>,
) -> StageAudit {
    let scratch = &w.scratch;
    let inst = &w.p.instances[w.instance];
    eprintln!("running  {} ({} threads)", inst.name, w.job.threads);
    let t0 = std::time::Instant::now();
    let job_file = scratch
        .dir
        .join("tmp")
        .join(format!("{}.job.json", w.job.key));
    let mut notes = w.notes.clone();
    let mut failed: Option<String> = None;
    let mut fresh: Option<String> = None;
    let encoded =
        serde_json::to_vec_pretty(&w.job).map_err(|e| format!("cannot encode the job: {e}"));
    match encoded.and_then(|bytes| write_atomic(&job_file, &bytes).map_err(|e| e.to_string())) {
        Err(e) => failed = Some(e),
        Ok(()) => {
            let mut on_event = |ev: WorkerEvent| match ev {
                WorkerEvent::Done { artifact, .. } => fresh = Some(artifact),
                WorkerEvent::Failed(e) => failed = Some(e.message),
                _ => {}
            };
            if let Err(e) = executor.run_job(&job_file, &w.job, cancel, &mut on_event) {
                failed.get_or_insert(e);
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    if let Some(e) = &failed {
        fresh = None;
        notes.push(format!(
            "the recomputation failed: {e} (log: {})",
            scratch.store.log_path(&w.job.key).display()
        ));
    }
    let cached_dir = main.object_path(&w.entry.artifact);
    let comparison = match &fresh {
        Some(f) if *f != w.entry.artifact || w.corrupt => {
            compare(&cached_dir, &scratch.store.object_path(f))
        }
        _ => Comparison::default(),
    };
    if w.corrupt {
        notes.push(format!(
            "the cached artifact no longer matches its digest {}: it was modified after rst stored it{}; `rst verify` quarantines it",
            &w.entry.artifact[..12],
            if fresh.as_deref() == Some(w.entry.artifact.as_str()) {
                " (the recomputation reproduces the recorded digest)"
            } else {
                ""
            }
        ));
    }
    let v = verdict(
        &w.entry.artifact,
        fresh.as_deref(),
        w.corrupt,
        &comparison,
        tolerance,
    );
    eprintln!("{:<8} {} ({secs:.2}s): {v}", "audited", inst.name);
    StageAudit {
        instance: inst.name.clone(),
        stage: w.p.stages[inst.stage].name.clone(),
        kind: w.entry.record.kind.clone(),
        key: w.job.key.clone(),
        cached_artifact: w.entry.artifact.clone(),
        fresh_artifact: fresh,
        verdict: v.to_string(),
        threads: w.job.threads,
        secs,
        comparison,
        notes,
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

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
}

impl Report {
    pub fn markdown(&self) -> String {
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
            ".\n\n**{}**: {}.\n\n| stage | kind | threads | verdict | what differs |\n|---|---|---|---|---|\n",
            if self.passed { "PASSED" } else { "FAILED" },
            counts.join(", ")
        ));
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
        let details: Vec<&StageAudit> = self
            .stages
            .iter()
            .filter(|s| s.verdict != "bit-identical")
            .collect();
        for s in details {
            out.push_str(&format!("\n## {}: {}\n\n", s.instance, s.verdict));
            out.push_str(&format!(
                "- cached artifact `{}`, fresh `{}`\n",
                &s.cached_artifact[..12],
                s.fresh_artifact
                    .as_deref()
                    .map(|f| &f[..12.min(f.len())])
                    .unwrap_or("-")
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
        }
        out
    }
}

/// One line: what differs in a stage.
fn summary(s: &StageAudit) -> String {
    if s.verdict == "bit-identical" {
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
    if s.verdict == "failed" || s.verdict == "cache corrupt" {
        if let Some(n) = s.notes.last() {
            parts.push(n.clone());
        }
    }
    parts.join("; ")
}

/// The thread count a stage was computed with: the key's own record where the key has one
/// (torch stages: it is part of what the key stands for), else the run facts (entries
/// written before run facts existed have 0 there), else what the pipeline asks for now.
fn recorded_threads(entry: &crate::cache::store::Entry, pipeline_threads: usize) -> usize {
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
        let mut entry = crate::cache::store::Entry {
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
        assert_eq!(verdict("a", Some("a"), false, &cmp, None), "bit-identical");
        assert_eq!(verdict("a", Some("b"), false, &cmp, Some(1.0)), "differs");
        assert_eq!(verdict("a", None, false, &cmp, None), "failed");
        assert_eq!(verdict("a", Some("a"), true, &cmp, None), "cache corrupt");
        cmp.accuracy_compared = true;
        cmp.metrics.push(MetricChange {
            file: "metrics.json".into(),
            metric: "top1".into(),
            cached: 0.81,
            fresh: 0.8105,
            delta_points: 0.05,
        });
        assert_eq!(verdict("a", Some("b"), false, &cmp, None), "differs");
        assert_eq!(
            verdict("a", Some("b"), false, &cmp, Some(0.1)),
            "within tolerance"
        );
        assert_eq!(verdict("a", Some("b"), false, &cmp, Some(0.01)), "differs");
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
            "within tolerance"
        );
        assert_eq!(verdict("a", Some("b"), false, &c, Some(0.5)), "differs");
        // Weights moved in the last bits, accuracy did not: within any tolerance.
        put(b.path(), "metrics.json", br#"{"top1": 0.8, "top3": 0.9}"#);
        let c = compare(a.path(), b.path());
        assert_eq!(c.max_delta(), Some(0.0));
        assert_eq!(
            verdict("a", Some("b"), false, &c, Some(0.0)),
            "within tolerance"
        );
        assert_eq!(verdict("a", Some("b"), false, &c, None), "differs");
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
