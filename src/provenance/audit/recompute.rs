//! Recomputing the chosen stages: each in its own scratch cache
//! (`cache/tmp/audit-<pid>-<n>/`, same filesystem, removed afterwards) whose inputs are
//! symbolic links to the main cache's objects, run by the local executor with the thread
//! count the entry recorded, at most `--jobs` threads in use at a time.
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Condvar, Mutex};

use super::plan::{recorded_threads, Chosen};
use crate::cache::digest::digest_path;
use crate::cache::store::{remove_tree, Entry, Store};
use crate::error::{Error, Result};
use crate::exec::integrity::view_base;
use crate::exec::local::LocalExecutor;
use crate::exec::{Cancel, Executor, Job, JobFile, WorkerEvent};
use crate::spec::Pipeline;

/// A stage ready to be recomputed: its cache entry, the job that recomputes it, and what
/// was found before it ran.
pub struct Planned {
    pub instance: usize,
    pub entry: Entry,
    pub job: Job,
    /// Found while preparing (corrupt inputs, more threads than `--jobs`).
    pub notes: Vec<String>,
    /// The cached artifact no longer matches its digest.
    pub corrupt: bool,
    /// Its own scratch cache: another stage's links must not stand in for this one's
    /// fresh artifact.
    pub scratch: Scratch,
}

/// What one recomputation gave.
pub struct Recomputed {
    /// The fresh artifact's digest; None when the recomputation failed.
    pub fresh: Option<String>,
    pub secs: f64,
    /// The planned notes, and why it failed.
    pub notes: Vec<String>,
}

/// Builds a scratch cache and a job for every chosen instance.
pub fn prepare(
    p: &Pipeline,
    store: &Store,
    chosen: &[Chosen],
    jobs: usize,
) -> Result<Vec<Planned>> {
    let memo = Mutex::new(HashMap::new());
    chosen
        .iter()
        .map(|c| prepare_one(p, store, c, jobs, &memo))
        .collect()
}

fn prepare_one(
    p: &Pipeline,
    store: &Store,
    chosen: &Chosen,
    jobs: usize,
    memo: &Mutex<HashMap<String, bool>>,
) -> Result<Planned> {
    let inst = &p.instances[chosen.instance];
    let entry = store
        .entry(&chosen.key)
        .ok_or_else(|| Error::EntryVanished {
            instance: inst.name.clone(),
            key: chosen.key.clone(),
        })?;
    let mut notes = Vec::new();
    let corrupt = !intact(store, &entry.artifact, memo);
    let scratch = Scratch::new(store)?;
    for (name, recs) in &entry.record.inputs {
        for r in recs {
            if !intact(store, &r.digest, memo) {
                notes.push(format!(
                    "input {name} ({}) is corrupt in the cache: a stage never runs on a corrupt input, so it was not recomputed (run `rst verify`, then `rst run`)",
                    r.instance
                ));
            }
            scratch.link(store, &r.digest)?;
        }
    }
    let threads = recorded_threads(&entry, inst.threads);
    if threads > jobs {
        notes.push(format!(
            "recorded {threads} threads, more than --jobs {jobs}: recomputed with {threads} anyway"
        ));
    }
    // The job is the cached entry's own: same key record, same params.
    let job = Job {
        cache_dir: scratch.dir.clone(),
        project_dir: p.project_dir.clone(),
        pipeline: p.name.clone(),
        instance: inst.name.clone(),
        key: chosen.key.clone(),
        kind: entry.record.kind.clone(),
        params: p.params_of(inst),
        inputs: entry.record.inputs.clone(),
        record: entry.record.clone(),
        threads,
        resources: inst.resources.clone(),
        consumed: entry.run.consumed.clone(),
        gpus: None,
    };
    Ok(Planned {
        instance: chosen.instance,
        entry,
        job,
        notes,
        corrupt,
        scratch,
    })
}

/// Recomputes `w` in its scratch cache.
pub fn recompute(w: &Planned, executor: &LocalExecutor, cancel: &Cancel) -> Recomputed {
    eprintln!("running  {} ({} threads)", w.job.instance, w.job.threads);
    let t0 = std::time::Instant::now();
    let mut notes = w.notes.clone();
    let mut fresh: Option<String> = None;
    let job_file = JobFile::new(
        w.scratch
            .dir
            .join("tmp")
            .join(format!("{}.job.json", w.job.key)),
        &w.job,
    );
    let mut failed = None;
    let mut on_event = |ev: WorkerEvent| match ev {
        WorkerEvent::Done { artifact, .. } => fresh = Some(artifact),
        WorkerEvent::Failed(e) => failed = Some(e.message),
        _ => {}
    };
    if let Err(e) = executor.run_job(&job_file, &w.job, cancel, &mut on_event) {
        failed.get_or_insert(e.report());
    }
    job_file.remove();
    if let Some(e) = &failed {
        fresh = None;
        notes.push(format!(
            "the recomputation failed: {e} (log: {})",
            w.scratch.store.log_path(&w.job.key).display()
        ));
    }
    if fresh.as_ref() == Some(&w.entry.artifact) {
        // The standard met: bit for bit, and on which machines.
        if let Some(now) = w.scratch.store.entry(&w.job.key) {
            let (a, b) = (&w.entry.run, &now.run);
            if a.device.as_deref() == Some("cpu") && (&a.cpu, &a.isa) != (&b.cpu, &b.isa) {
                notes.push(format!(
                    "bit-identical on another CPU: computed on {}, recomputed on {}, with {}",
                    crate::machine::describe(&a.cpu, &a.isa),
                    crate::machine::describe(&b.cpu, &b.isa),
                    crate::numerics::describe(&w.entry.record.env)
                ));
            }
        }
    }
    if fresh.as_ref().is_some_and(|f| *f != w.entry.artifact) {
        if let Some(now) = w.scratch.store.entry(&w.job.key) {
            notes.extend(other_machine(&w.entry.run, &now.run));
            notes.extend(numerics_note(&w.entry, &now));
        }
    }
    Recomputed {
        fresh,
        secs: t0.elapsed().as_secs_f64(),
        notes,
    }
}

/// Why a recomputation can differ without anything being wrong: another device, or a CPU
/// of another model or instruction-set level (libtorch chooses kernels by them).
fn other_machine(
    cached: &crate::cache::store::RunFacts,
    now: &crate::cache::store::RunFacts,
) -> Vec<String> {
    let mut notes = Vec::new();
    // `cuda:0` and `cuda:1` are the same kind of device.
    let kind = |d: &Option<String>| {
        d.as_deref()
            .map(|d| d.split(':').next().unwrap_or(d).to_string())
    };
    if kind(&cached.device) != kind(&now.device) {
        notes.push(format!(
            "computed on device {}, recomputed on {}: results on different devices are \
             equal to a tolerance, not bit for bit",
            cached.device.as_deref().unwrap_or("-"),
            now.device.as_deref().unwrap_or("-")
        ));
    }
    let on_cpu = |r: &crate::cache::store::RunFacts| r.device.as_deref() == Some("cpu");
    let recorded = !cached.cpu.is_empty() || !cached.isa.is_empty();
    if on_cpu(cached)
        && on_cpu(now)
        && recorded
        && (&cached.cpu, &cached.isa) != (&now.cpu, &now.isa)
    {
        notes.push(format!(
            "computed on {}, recomputed on {}: libtorch picks CPU kernels by instruction set, \
             so a CPU training's bytes can differ between CPUs",
            crate::machine::describe(&cached.cpu, &cached.isa),
            crate::machine::describe(&now.cpu, &now.isa)
        ));
    }
    notes
}

/// Which standard the stage was computed to, when its bytes differ on another CPU: native
/// numerics (kernels by instruction set: the fix is `numerics: portable`) or portable
/// (then what AVX2 pinning cannot cover caused it).
fn numerics_note(
    cached: &crate::cache::store::Entry,
    now: &crate::cache::store::Entry,
) -> Option<String> {
    let on_cpu = |e: &crate::cache::store::Entry| e.run.device.as_deref() == Some("cpu");
    let other_cpu = (&cached.run.cpu, &cached.run.isa) != (&now.run.cpu, &now.run.isa);
    if !(on_cpu(cached) && on_cpu(now) && other_cpu) {
        return None;
    }
    let mode = |e: &crate::cache::store::Entry| {
        e.record
            .env
            .get(crate::numerics::KEY)
            .cloned()
            .unwrap_or_default()
    };
    Some(if mode(cached) == crate::numerics::PORTABLE {
        format!(
            "both computed with {}, yet the bytes differ: a kernel AVX2 pinning does not \
             cover (one tuned by the CPU's cache sizes)",
            crate::numerics::describe(&cached.record.env)
        )
    } else {
        format!(
            "computed with {}: `numerics: portable` (pipeline or stage) pins them to AVX2 \
             so that x86-64 CPUs give the same bytes",
            crate::numerics::describe(&cached.record.env)
        )
    })
}

/// Writes the job file into the scratch cache; Err: why not, for the report.
/// Runs `each` over `work` on up to `jobs` threads, so that the stages' own thread counts
/// add up to at most `jobs` (one stage asking for more runs alone); results in `work`'s
/// order.
pub fn run_all<T: Send>(
    work: &[Planned],
    jobs: usize,
    each: impl Fn(&Planned) -> T + Sync,
) -> Vec<T> {
    let queue: Mutex<(VecDeque<usize>, usize)> = Mutex::new(((0..work.len()).collect(), 0));
    let cv = Condvar::new();
    let results: Mutex<Vec<Option<T>>> = Mutex::new((0..work.len()).map(|_| None).collect());
    let n_threads = jobs.min(work.len()).max(1);
    std::thread::scope(|s| {
        for _ in 0..n_threads {
            s.spawn(|| loop {
                let (w, threads) = {
                    let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
                    loop {
                        let Some(&next) = q.0.front() else { return };
                        let t = work[next].job.threads.min(jobs);
                        if q.1 == 0 || q.1 + t <= jobs {
                            q.0.pop_front();
                            q.1 += t;
                            break (next, t);
                        }
                        q = cv.wait(q).unwrap_or_else(|e| e.into_inner());
                    }
                };
                let r = each(&work[w]);
                results.lock().unwrap_or_else(|e| e.into_inner())[w] = Some(r);
                queue.lock().unwrap_or_else(|e| e.into_inner()).1 -= threads;
                cv.notify_all();
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
        .collect()
}

/// Is the object `digest` intact? (memoised: inputs are shared). Unlike the scheduler's
/// check, a corrupt object is only reported, not quarantined: an audit changes nothing in
/// the main cache.
fn intact(store: &Store, digest: &str, memo: &Mutex<HashMap<String, bool>>) -> bool {
    if let Some(&ok) = memo.lock().unwrap_or_else(|e| e.into_inner()).get(digest) {
        return ok;
    }
    let ok = digest_path(&store.object_path(digest)).is_ok_and(|d| d == digest);
    memo.lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(digest.to_string(), ok);
    ok
}

/// The scratch cache; its links into the main cache are removed before the tree.
pub struct Scratch {
    pub dir: PathBuf,
    pub store: Store,
}

impl Scratch {
    fn new(main: &Store) -> Result<Scratch> {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let dir = main.root().join("tmp").join(format!(
            "audit-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let store = Store::open(&dir)?;
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
        if let Some(base) = view_base(&from) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::store::RunFacts;

    #[test]
    fn a_difference_names_the_other_device_or_cpu() {
        let facts = |device: &str, cpu: &str, isa: &str| RunFacts {
            device: Some(device.to_string()),
            cpu: cpu.to_string(),
            isa: isa.to_string(),
            ..RunFacts::default()
        };
        let intel = facts("cpu", "Intel Xeon", "x86-64-v4");
        let amd = facts("cpu", "AMD EPYC", "x86-64-v3");
        let notes = other_machine(&intel, &amd);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0]
            .contains("computed on Intel Xeon (x86-64-v4), recomputed on AMD EPYC (x86-64-v3)"));
        assert!(other_machine(&amd, &amd).is_empty());
        let notes = other_machine(&facts("cuda:0", "AMD EPYC", "x86-64-v3"), &amd);
        assert!(
            notes[0].contains("computed on device cuda:0, recomputed on cpu"),
            "{notes:?}"
        );
    }
}
