//! The scheduler: walks the DAG, answers cached stages at once, runs the rest on an
//! executor with at most `jobs` threads in use, and stops dependents of a failure.
use std::collections::VecDeque;
use std::sync::mpsc;
use std::time::Instant;

use super::gpus::{GpuSource, Leases};
use super::integrity::{corrupt_input_message, short, view_base, Checked, ObjectState};
use super::plan::Planner;
use super::progress::{Report, Reporter};
use super::{Cancel, Executor, Job, JobError, JobFile, WorkerEvent};
use crate::cache::key::KeyRecord;
use crate::cache::recent::Recent;
use crate::cache::shared::{Fetch, SharedCache};
use crate::cache::store::Store;
use crate::error::{Error, UserError};
use crate::spec::Pipeline;
use crate::stages::StageError;

pub struct RunOptions {
    /// Thread budget (default: number of cores).
    pub jobs: usize,
    /// Stage or instance names to recompute even if cached.
    pub force: Vec<String>,
    pub keep_going: bool,
    /// GPU leases ([`super::gpus`]) on the local executor (the devices are found when the
    /// first stage starts), None where the cluster binds GPUs.
    pub gpus: Option<std::sync::Arc<GpuSource>>,
    /// A cache shared with other machines (the remote): asked on a local miss, offered
    /// what this run computes.
    pub shared: Option<std::sync::Arc<dyn SharedCache>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Cached {
        artifact: String,
    },
    /// Fetched from the shared cache (the remote), verified, and stored here.
    Fetched {
        artifact: String,
        bytes: u64,
    },
    Ran {
        artifact: String,
        secs: f64,
    },
    /// Another rst process computed it while we waited for its lock.
    Reused {
        artifact: String,
    },
    Failed {
        error: StageError,
        log: Option<String>,
    },
    Skipped {
        cause: String,
    },
    NotRun,
}

impl Outcome {
    pub fn artifact(&self) -> Option<&str> {
        match self {
            Outcome::Cached { artifact }
            | Outcome::Fetched { artifact, .. }
            | Outcome::Ran { artifact, .. }
            | Outcome::Reused { artifact } => Some(artifact),
            _ => None,
        }
    }
}

/// When an instance was answered or ran, and where: what a report's timeline draws.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Span {
    pub start_unix: f64,
    pub end_unix: f64,
    /// The slot it ran in (0-based, fewer than `--jobs`): the first free one when it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lane: Option<usize>,
    /// The cluster job it ran as (Slurm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
}

impl Span {
    /// A bar of no length, now: answered from the cache, or failed before it started.
    fn now() -> Span {
        let now = crate::time::unix_now();
        Span {
            start_unix: now,
            end_unix: now,
            lane: None,
            job: None,
        }
    }
}

pub struct RunResult {
    pub outcomes: Vec<Outcome>,
    /// Per instance, when it was answered from the cache or ran (None: it never did).
    pub spans: Vec<Option<Span>>,
    pub keys: Vec<Option<String>>,
    pub interrupted: bool,
    pub wall_s: f64,
    /// Per instance, the GPUs leased to it when it ran (empty: none, or not leased here).
    pub gpus: Vec<Vec<String>>,
}

enum Msg {
    Event(usize, WorkerEvent),
    Exit(usize, Result<(), JobError>),
}

/// Checks `--force` names against the pipeline.
pub fn forced_set(p: &Pipeline, force: &[String]) -> Result<Vec<bool>, UserError> {
    let mut forced = vec![false; p.instances.len()];
    for f in force {
        let mut any = false;
        for inst in &p.instances {
            if inst.name == *f || p.stages[inst.stage].name == *f {
                forced[inst.id] = true;
                any = true;
            }
        }
        if !any {
            let names: Vec<&str> = p.stages.iter().map(|s| s.name.as_str()).collect();
            let mut u = UserError::new(format!(
                "--force {f}: no stage or instance of that name in {}",
                p.file.display()
            ));
            u.help = Some(match crate::hint::did_you_mean(f, names.iter().copied()) {
                Some(h) => h,
                None => format!("stages: {}", names.join(", ")),
            });
            return Err(u);
        }
    }
    Ok(forced)
}

/// Where an instance is in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    /// Waiting for inputs (or for a producer being recomputed).
    Pending,
    /// Inputs known: to be looked up in the cache.
    Frontier,
    /// A cache miss waiting for threads.
    Ready,
    Running,
    Done,
}

/// The scheduler's bookkeeping, per instance.
struct State {
    st: Vec<St>,
    outcomes: Vec<Option<Outcome>>,
    keys: Vec<Option<String>>,
    records: Vec<Option<KeyRecord>>,
    frontier: VecDeque<usize>,
    /// How often each instance was put on the frontier: a lookup made for one visit is
    /// not applied to a later one (`Run::resolve_frontier`).
    pushes: Vec<u32>,
    ready: VecDeque<usize>,
    /// Consumers of each instance.
    consumers: Vec<Vec<usize>>,
    /// Recomputed in this run because its cached artifact (the value) was corrupt; at
    /// most once per instance.
    recovering: Vec<Option<String>>,
    recovered: Vec<bool>,
    /// Running, but an input changed meanwhile: its result is not this run's.
    stale: Vec<bool>,
    /// Instances waiting for recomputed producers that need not be their inputs (the
    /// producer of a dataset view's base).
    blocked: Vec<(usize, Vec<usize>)>,
    /// Artifacts the worker of each instance found corrupt (and quarantined).
    corrupt_seen: Vec<Vec<String>>,
}

impl State {
    fn inputs<'p>(p: &'p Pipeline, i: usize) -> impl Iterator<Item = usize> + 'p {
        p.instances[i].inputs.values().flatten().copied()
    }

    fn inputs_done(&self, p: &Pipeline, i: usize) -> bool {
        Self::inputs(p, i).all(|u| self.st[u] == St::Done)
    }

    fn push_frontier(&mut self, i: usize) {
        self.st[i] = St::Frontier;
        self.pushes[i] = self.pushes[i].wrapping_add(1);
        self.frontier.push_back(i);
    }

    /// `i` is done: consumers whose inputs are all done become lookups.
    fn release(&mut self, p: &Pipeline, i: usize) {
        for k in 0..self.consumers[i].len() {
            let c = self.consumers[i][k];
            if self.st[c] == St::Pending && self.inputs_done(p, c) {
                self.push_frontier(c);
            }
        }
        let blocked = std::mem::take(&mut self.blocked);
        for (c, producers) in blocked {
            if !producers.iter().all(|&v| self.st[v] == St::Done) {
                self.blocked.push((c, producers));
            } else if self.st[c] == St::Pending && self.inputs_done(p, c) {
                self.push_frontier(c);
            }
        }
    }

    /// Looks `v` up again (its cached artifact was corrupt and is quarantined): it misses
    /// and is recomputed; at most once per run.
    fn recompute(&mut self, v: usize, checked: &Checked) {
        let old = self.outcomes[v]
            .take()
            .and_then(|o| o.artifact().map(str::to_string));
        if let Some(old) = &old {
            checked.set(old, None);
        }
        self.recovering[v] = old;
        self.recovered[v] = true;
        self.keys[v] = None;
        self.push_frontier(v);
    }

    /// The instances done in this run whose artifact is `digest`, if each can still be
    /// recomputed to replace it (none was already).
    fn producers_of(&self, digest: &str) -> Result<Vec<usize>, Option<usize>> {
        let by: Vec<usize> = (0..self.st.len())
            .filter(|&v| {
                self.st[v] == St::Done
                    && self.outcomes[v].as_ref().and_then(Outcome::artifact) == Some(digest)
            })
            .collect();
        match by.iter().find(|&&v| self.recovered[v]) {
            Some(&v) => Err(Some(v)),
            None if by.is_empty() => Err(None),
            None => Ok(by),
        }
    }

    /// Sends everything downstream of `u` back to pending (its key may change); running
    /// ones are marked stale.
    fn reset_downstream(&mut self, u: usize) {
        let mut seen = vec![false; self.st.len()];
        let mut stack = self.consumers[u].clone();
        while let Some(d) = stack.pop() {
            if std::mem::replace(&mut seen[d], true) {
                continue;
            }
            stack.extend(self.consumers[d].iter().copied());
            match self.st[d] {
                St::Pending => {}
                St::Running => self.stale[d] = true,
                St::Frontier | St::Ready | St::Done => {
                    self.frontier.retain(|&x| x != d);
                    self.ready.retain(|&x| x != d);
                    self.outcomes[d] = None;
                    self.keys[d] = None;
                    self.records[d] = None;
                    self.st[d] = St::Pending;
                }
            }
        }
    }
}

/// What checking the cached objects a stage about to run will read found.
enum Reads {
    Intact,
    /// Corrupt ones were quarantined: recompute the producers in `reset`, and wait for
    /// them and for those in `wait` (already being recomputed for another stage).
    Recompute {
        reset: Vec<usize>,
        wait: Vec<usize>,
    },
    Fail(String),
}

/// Re-hashes (once per object per run) the cached artifacts `i` will read: the artifacts
/// of its inputs that came from the cache, and the base artifact each dataset view among
/// them names. A corrupt one is quarantined, and the instances of this run that produced
/// it are recomputed first (once); when none can be, the stage fails saying why.
fn check_reads(
    p: &Pipeline,
    store: &Store,
    checked: &Checked,
    s: &State,
    i: usize,
    reporter: &dyn Reporter,
) -> Reads {
    let inst = &p.instances[i];
    let n = p.instances.len();
    let mut reset: Vec<usize> = Vec::new();
    let mut wait: Vec<usize> = Vec::new();
    for (name, ids) in &inst.inputs {
        for &u in ids {
            let what = format!("input {name} (from {})", p.instances[u].name);
            let mut todo = match &s.outcomes[u] {
                Some(Outcome::Cached { artifact }) => vec![(artifact.clone(), what)],
                // Computed in this run: hashed by the worker that stored it just now; the
                // base it names (a view's) may come from the cache.
                Some(o) => match o.artifact().and_then(|a| view_base(&store.object_path(a))) {
                    Some(base) => vec![(base, format!("the base of {what}"))],
                    None => continue,
                },
                None => continue,
            };
            while let Some((digest, what)) = todo.pop() {
                // Already being recomputed for another stage (a view's base): wait for it.
                let busy: Vec<usize> = (0..n)
                    .filter(|&v| {
                        s.st[v] != St::Done && s.recovering[v].as_deref() == Some(digest.as_str())
                    })
                    .collect();
                if !busy.is_empty() {
                    wait.extend(busy);
                    continue;
                }
                let (state, moved) = checked.intact(store, &digest);
                let message = match state {
                    ObjectState::Intact => {
                        if let Some(base) = view_base(&store.object_path(&digest)) {
                            todo.push((base, format!("the base of {what}")));
                        }
                        continue;
                    }
                    ObjectState::Corrupt { why } => {
                        corrupt_input_message(&what, &digest, &why, moved.as_deref())
                    }
                    ObjectState::Missing => format!(
                        "{what} (artifact {digest}) is no longer in the cache (removed or \
                         quarantined meanwhile)"
                    ),
                };
                let by = match s.producers_of(&digest) {
                    Ok(by) => by,
                    Err(None) => {
                        return Reads::Fail(format!(
                            "{message}; no stage of {} produced it in this run: run the \
                             pipeline that did, then this one",
                            p.file.display()
                        ))
                    }
                    Err(Some(v)) => {
                        return Reads::Fail(format!(
                            "{message}; recomputing {} in this run did not restore it",
                            p.instances[v].name
                        ))
                    }
                };
                for &v in &by {
                    reporter.report(Report::Warning(&format!(
                        "{message} (read by {}): recomputing {} first",
                        inst.name, p.instances[v].name
                    )));
                }
                reset.extend(by);
            }
        }
    }
    if reset.is_empty() && wait.is_empty() {
        Reads::Intact
    } else {
        reset.sort();
        reset.dedup();
        Reads::Recompute { reset, wait }
    }
}

/// The producers to recompute for the artifacts the worker of `i` found corrupt, with a
/// warning for each; None when one of them cannot be (then `i` stays failed).
fn producers_to_recompute(
    p: &Pipeline,
    s: &State,
    i: usize,
    corrupt: &[String],
    reporter: &dyn Reporter,
) -> Option<Vec<usize>> {
    let mut reset = Vec::new();
    for digest in corrupt {
        reset.extend(s.producers_of(digest).ok()?);
    }
    reset.sort();
    reset.dedup();
    for &v in &reset {
        reporter.report(Report::Warning(&format!(
            "the worker of {} found the artifact {} of {} corrupt and quarantined it: \
             recomputing {}, then {} again",
            p.instances[i].name,
            short(
                s.outcomes[v]
                    .as_ref()
                    .and_then(Outcome::artifact)
                    .unwrap_or("")
            ),
            p.instances[v].name,
            p.instances[v].name,
            p.instances[i].name
        )));
    }
    Some(reset)
}

/// Runs the pipeline: the cached instances are answered at once, the rest run on
/// `executor` within the thread budget, in dependency order. Phases: [`Run::new`]
/// (bookkeeping, the first lookups), then until nothing runs: [`Run::resolve_frontier`]
/// (cache lookups), [`Run::launch_ready`] (start jobs), and [`Run::on_event`] /
/// [`Run::on_exit`] (what the workers report); [`Run::finish`] gives the outcomes.
pub fn run(
    p: &Pipeline,
    store: &Store,
    executor: &dyn Executor,
    opts: &RunOptions,
    reporter: &dyn Reporter,
    cancel: &Cancel,
) -> Result<RunResult, Error> {
    let mut run = Run::new(p, store, executor, opts, reporter, cancel)?;
    std::thread::scope(|scope| -> Result<(), Error> {
        let (tx, rx) = mpsc::channel::<Msg>();
        loop {
            run.resolve_frontier()?;
            run.launch_ready(scope, &tx)?;
            if run.running == 0 {
                break;
            }
            let Ok(msg) = rx.recv() else { break };
            match msg {
                Msg::Event(i, ev) => run.on_event(i, ev),
                Msg::Exit(i, r) => run.on_exit(i, r),
            }
        }
        Ok(())
    })?;
    Ok(run.finish())
}

/// What [`Run::look_up`] found for one instance.
struct Looked {
    record: KeyRecord,
    key: String,
    /// The cached artifact.
    hit: Option<String>,
    /// Bytes transferred when the hit was fetched from the shared cache in this run.
    fetched: Option<u64>,
}

/// One run in progress: what it was given and where every instance stands.
struct Run<'a> {
    p: &'a Pipeline,
    store: &'a Store,
    executor: &'a dyn Executor,
    opts: &'a RunOptions,
    reporter: &'a dyn Reporter,
    cancel: &'a Cancel,
    t0: Instant,
    forced: Vec<bool>,
    planner: Planner<'a>,
    checked: Checked,
    /// What the last run of this pipeline found (`cache::recent`): the no-op shortcut.
    recent: Recent,
    /// The thread budget (at least 1).
    jobs: usize,
    running: usize,
    used_threads: usize,
    /// A stage failed (without --keep-going): start nothing more.
    stop_launching: bool,
    started: Vec<Instant>,
    spans: Vec<Option<Span>>,
    /// Which slots are taken (`Span::lane`).
    lanes: Vec<bool>,
    jobs_dir: std::path::PathBuf,
    /// The GPU leases, set up when the first stage starts (a no-op run asks no driver).
    gpus: Option<GpuLeases>,
    /// The devices were looked for (once per run: `nvidia-smi` is a process).
    gpus_found: bool,
    s: State,
}

/// The run's GPUs: the devices, each instance's need, and who holds which.
struct GpuLeases {
    leases: Leases,
    demands: Vec<u64>,
    held: Vec<Vec<String>>,
}

impl<'a> Run<'a> {
    /// Checks `--force`, creates the job-file folder, indexes consumers, and puts the
    /// instances without inputs on the frontier.
    fn new(
        p: &'a Pipeline,
        store: &'a Store,
        executor: &'a dyn Executor,
        opts: &'a RunOptions,
        reporter: &'a dyn Reporter,
        cancel: &'a Cancel,
    ) -> Result<Self, Error> {
        let t0 = Instant::now();
        let n = p.instances.len();
        let forced = forced_set(p, &opts.force)?;
        let jobs_dir = store.root().join("tmp").join("jobs");
        std::fs::create_dir_all(&jobs_dir)
            .map_err(|e| Error::io_path("cannot create", &jobs_dir, e))?;
        let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); n];
        for inst in &p.instances {
            let mut ups: Vec<usize> = inst.inputs.values().flatten().copied().collect();
            ups.sort();
            ups.dedup();
            for u in ups {
                consumers[u].push(inst.id);
            }
        }
        let mut s = State {
            st: vec![St::Pending; n],
            outcomes: vec![None; n],
            keys: vec![None; n],
            records: vec![None; n],
            frontier: VecDeque::new(),
            pushes: vec![0; n],
            ready: VecDeque::new(),
            consumers,
            recovering: vec![None; n],
            recovered: vec![false; n],
            stale: vec![false; n],
            blocked: Vec::new(),
            corrupt_seen: vec![Vec::new(); n],
        };
        for i in 0..n {
            if s.inputs_done(p, i) {
                s.push_frontier(i);
            }
        }
        Ok(Run {
            p,
            store,
            executor,
            opts,
            reporter,
            cancel,
            t0,
            forced,
            planner: Planner::new(p),
            checked: Checked::default(),
            recent: if p.instances.len() <= crate::cache::recent::MAX_INSTANCES {
                Recent::load(store, &p.name)
            } else {
                Recent::off()
            },
            jobs: opts.jobs.max(1),
            running: 0,
            used_threads: 0,
            stop_launching: false,
            started: vec![Instant::now(); n],
            spans: vec![None; n],
            lanes: Vec::new(),
            jobs_dir,
            gpus: None,
            gpus_found: false,
            s,
        })
    }

    /// Resolves everything whose inputs are known: skipped (an input failed), a cache
    /// hit, or ready to run once its cached inputs check out.
    ///
    /// The frontier is taken a wave at a time: the keys and cache lookups of a wave (all
    /// of a sweep's instances, in a no-op run) are computed in parallel, read-only
    /// ([`Run::look_up`]); what they found is then applied in frontier order, so reports
    /// and outcomes do not depend on the parallelism.
    fn resolve_frontier(&mut self) -> Result<(), Error> {
        loop {
            let mut wave: Vec<usize> = Vec::with_capacity(self.s.frontier.len());
            let mut visits: Vec<u32> = Vec::with_capacity(self.s.frontier.len());
            while let Some(i) = self.s.frontier.pop_front() {
                if self.s.st[i] == St::Frontier {
                    wave.push(i);
                    visits.push(self.s.pushes[i]);
                }
            }
            if wave.is_empty() {
                return Ok(());
            }
            let mut looked = self.look_up(&wave);
            self.fetch_misses(&wave, &mut looked);
            for ((i, visit), found) in wave.into_iter().zip(visits).zip(looked) {
                // Sent back (an input is recomputed) since the lookup: it comes again.
                if self.s.st[i] != St::Frontier || self.s.pushes[i] != visit {
                    continue;
                }
                self.resolve(i, found?)?;
            }
        }
    }

    /// Phase 1 of a wave, for each instance: `Err(input)` when an input has no artifact
    /// (it failed or was skipped), else its key record, key and cache hit (none when
    /// forced). Read-only, so in parallel for a wave big enough to pay for it.
    fn look_up(&self, wave: &[usize]) -> Vec<Result<Result<Looked, usize>, Error>> {
        use rayon::prelude::*;
        let (p, store, s) = (self.p, self.store, &self.s);
        let one = |&i: &usize| -> Result<Result<Looked, usize>, Error> {
            if let Some(cause) = State::inputs(p, i)
                .find(|&u| s.outcomes[u].as_ref().and_then(Outcome::artifact).is_none())
            {
                return Ok(Err(cause));
            }
            let inst = &p.instances[i];
            let record = self.planner.record(inst, &|u| {
                s.outcomes[u]
                    .as_ref()
                    .and_then(Outcome::artifact)
                    .unwrap_or_default()
                    .to_string()
            })?;
            let key = record.key();
            let hit = if self.forced[i] {
                None
            } else if let Some(a) = self.recent.hit(store, &inst.name, &key) {
                Some(a) // its ref was set by the run that recorded it
            } else {
                let hit = store.hit(&key);
                if hit.is_some() {
                    let _ = store.set_ref(&p.name, &inst.name, &key);
                }
                hit
            };
            Ok(Ok(Looked {
                record,
                key,
                hit,
                fetched: None,
            }))
        };
        // Below this a wave is looked up on this thread (rayon's hand-off costs more).
        const PARALLEL_FROM: usize = 32;
        if wave.len() < PARALLEL_FROM {
            wave.iter().map(one).collect()
        } else {
            wave.par_iter().map(one).collect()
        }
    }

    /// Phase 1b: the local misses of a wave (not forced) asked of the shared cache, all at
    /// once (its transfers run in parallel); what it fetched becomes a hit.
    fn fetch_misses(&self, wave: &[usize], looked: &mut [Result<Result<Looked, usize>, Error>]) {
        let Some(shared) = self.opts.shared.as_deref() else {
            return;
        };
        let misses: Vec<usize> = (0..wave.len())
            .filter(|&w| {
                !self.forced[wave[w]] && matches!(&looked[w], Ok(Ok(l)) if l.hit.is_none())
            })
            .collect();
        if misses.is_empty() || self.cancel.is_cancelled() {
            return;
        }
        let keys: Vec<&str> = misses
            .iter()
            .map(|&w| match &looked[w] {
                Ok(Ok(l)) => l.key.as_str(),
                _ => unreachable!("filtered above"),
            })
            .collect();
        let cancel = self.cancel;
        let fetched = shared.fetch(self.store, &keys, &|| cancel.is_cancelled());
        for (&w, f) in misses.iter().zip(fetched) {
            let Ok(Ok(l)) = &mut looked[w] else { continue };
            match f {
                Fetch::Hit(f) => {
                    let _ =
                        self.store
                            .set_ref(&self.p.name, &self.p.instances[wave[w]].name, &l.key);
                    l.hit = Some(f.artifact);
                    l.fetched = Some(f.bytes);
                }
                Fetch::Miss => {}
                Fetch::Rejected(why) => self.reporter.report(Report::Warning(&format!(
                    "the remote's copy of {} was not used: {why}; computing it here",
                    self.p.instances[wave[w]].name
                ))),
            }
        }
    }

    /// Phase 2, in frontier order: what one instance's lookup means.
    fn resolve(&mut self, i: usize, found: Result<Looked, usize>) -> Result<(), Error> {
        let (p, store, reporter) = (self.p, self.store, self.reporter);
        let s = &mut self.s;
        let inst = &p.instances[i];
        let Looked {
            record,
            key,
            hit,
            fetched,
        } = match found {
            Ok(looked) => looked,
            Err(cause) => {
                let cause_name = p.instances[cause].name.clone();
                reporter.report(Report::Skipped {
                    name: &inst.name,
                    cause: &cause_name,
                });
                s.outcomes[i] = Some(Outcome::Skipped { cause: cause_name });
                s.st[i] = St::Done;
                s.release(p, i);
                return Ok(());
            }
        };
        if let Some(artifact) = hit {
            self.spans[i] = Some(Span::now());
            s.outcomes[i] = Some(match fetched {
                Some(bytes) => {
                    reporter.report(Report::Fetched {
                        name: &inst.name,
                        bytes,
                    });
                    Outcome::Fetched { artifact, bytes }
                }
                None => {
                    reporter.report(Report::Cached(&inst.name));
                    Outcome::Cached { artifact }
                }
            });
            s.keys[i] = Some(key);
            s.st[i] = St::Done;
            s.release(p, i);
            return Ok(());
        }
        match check_reads(p, store, &self.checked, s, i, reporter) {
            Reads::Intact => {
                s.keys[i] = Some(key);
                s.records[i] = Some(record);
                s.st[i] = St::Ready;
                s.ready.push_back(i);
            }
            Reads::Recompute { reset, wait } => {
                for &v in &reset {
                    s.recompute(v, &self.checked);
                }
                s.st[i] = St::Pending;
                s.blocked.push((i, reset.into_iter().chain(wait).collect()));
            }
            Reads::Fail(message) => {
                reporter.report(Report::Failed {
                    name: &inst.name,
                    message: &message,
                });
                // Failed before it started: a bar of no length at the time it failed.
                self.spans[i] = Some(Span::now());
                s.outcomes[i] = Some(Outcome::Failed {
                    error: StageError::internal(message),
                    log: None,
                });
                s.keys[i] = Some(key);
                s.st[i] = St::Done;
                self.stop_launching |= !self.opts.keep_going;
                s.release(p, i);
            }
        }
        Ok(())
    }

    /// Starts ready instances while they fit in the thread budget (one always may, so a
    /// stage asking for more threads than the budget still runs, alone) and their GPUs are
    /// free. GPU stages start in ready order: once one waits for devices, no later one
    /// takes them (a two-GPU stage is not starved by a stream of one-GPU stages); stages
    /// that need none still start meanwhile.
    fn launch_ready<'s>(
        &mut self,
        scope: &'s std::thread::Scope<'s, 'a>,
        tx: &mpsc::Sender<Msg>,
    ) -> Result<(), Error> {
        let (p, store, jobs) = (self.p, self.store, self.jobs);
        if self.s.ready.is_empty() {
            return Ok(());
        }
        self.set_up_gpus()?;
        while !self.stop_launching && !self.cancel.is_cancelled() {
            let (running, used) = (self.running, self.used_threads);
            let gpus = self.gpus.as_ref();
            let mut gpu_queue_blocked = false;
            let mut gpus_fit = |i: usize| {
                let Some(g) = gpus else { return true };
                let need = g.demands[i] as usize;
                if need == 0 {
                    return true;
                }
                let fits = !gpu_queue_blocked && need <= g.leases.free();
                gpu_queue_blocked |= !fits;
                fits
            };
            let Some(pos) = self.s.ready.iter().position(|&i| {
                (running == 0 || used + p.instances[i].threads.min(jobs) <= jobs) && gpus_fit(i)
            }) else {
                break;
            };
            let i = self.s.ready.remove(pos).expect("position is in range");
            let mut job = self.job(i);
            if let Some(g) = self.gpus.as_mut() {
                let lease = g
                    .leases
                    .take(g.demands[i] as usize)
                    .expect("checked to fit above");
                g.held[i] = lease.clone();
                job.gpus = Some(lease);
            }
            if self.forced[i] {
                store.remove_entry(&job.key);
            }
            // Per instance: two instances may share a key (a cluster job reads its file later).
            let job_path =
                self.jobs_dir
                    .join(format!("{}.{}.{i}.json", job.key, std::process::id()));
            self.running += 1;
            self.used_threads += job.threads;
            self.started[i] = Instant::now();
            let lane = match self.lanes.iter().position(|busy| !busy) {
                Some(free) => free,
                None => {
                    self.lanes.push(false);
                    self.lanes.len() - 1
                }
            };
            self.lanes[lane] = true;
            self.spans[i] = Some(Span {
                lane: Some(lane),
                ..Span::now()
            });
            self.s.st[i] = St::Running;
            let tx = tx.clone();
            let (executor, cancel) = (self.executor, self.cancel);
            scope.spawn(move || {
                let tx2 = tx.clone();
                let mut on_event = |ev: WorkerEvent| {
                    let _ = tx2.send(Msg::Event(i, ev));
                };
                let job_file = JobFile::new(job_path, &job);
                let r = executor.run_job(&job_file, &job, cancel, &mut on_event);
                job_file.remove();
                let _ = tx.send(Msg::Exit(i, r));
            });
        }
        Ok(())
    }

    /// Before the first stage starts: the devices, and every instance's need checked
    /// against them (exit 2 before anything runs when one asks for more than there are).
    fn set_up_gpus(&mut self) -> Result<(), Error> {
        let Some(source) = self.opts.gpus.as_ref().filter(|_| !self.gpus_found) else {
            return Ok(());
        };
        self.gpus_found = true;
        let (found, demands) = source.check(self.p)?;
        if found.ids.is_empty() {
            return Ok(()); // nothing to lease: every need is 0
        }
        self.gpus = Some(GpuLeases {
            leases: Leases::new(found),
            held: vec![Vec::new(); demands.len()],
            demands,
        });
        Ok(())
    }

    /// The job description of ready instance `i` (its key and record taken from lookup).
    fn job(&mut self, i: usize) -> Job {
        let (p, s) = (self.p, &mut self.s);
        let inst = &p.instances[i];
        let key = s.keys[i].clone().expect("a ready instance has a key");
        let record = s.records[i].take().expect("a ready instance has a record");
        let consumed = inst
            .inputs
            .iter()
            .map(|(name, ids)| {
                (
                    name.clone(),
                    ids.iter()
                        .map(|&u| s.keys[u].clone().unwrap_or_default())
                        .collect(),
                )
            })
            .collect();
        Job {
            cache_dir: self.store.root().to_path_buf(),
            project_dir: p.project_dir.clone(),
            pipeline: p.name.clone(),
            instance: inst.name.clone(),
            key,
            kind: p.stages[inst.stage].kind.name().to_string(),
            params: p.params_of(inst),
            inputs: record.inputs.clone(),
            record,
            threads: inst.threads.min(self.jobs),
            resources: inst.resources.clone(),
            consumed,
            gpus: None,
        }
    }

    /// A worker's report while it runs: progress, its result, corrupt inputs it refused.
    fn on_event(&mut self, i: usize, ev: WorkerEvent) {
        let (p, store, reporter) = (self.p, self.store, self.reporter);
        let (s, started, checked) = (&mut self.s, &self.started, &self.checked);
        let name = &p.instances[i].name;
        match ev {
            WorkerEvent::Queued { job } => {
                reporter.report(Report::Queued(name, &job));
                if let Some(span) = self.spans[i].as_mut() {
                    span.job = Some(job);
                }
            }
            WorkerEvent::Started => {
                if let Some(span) = self.spans[i].as_mut() {
                    // A cluster job may wait in the queue: its bar starts when it does.
                    span.start_unix = crate::time::unix_now();
                }
                let gpus = self.gpus.as_ref().map_or(&[][..], |g| &g.held[i][..]);
                reporter.report(Report::Started(name, gpus))
            }
            WorkerEvent::LockWait => reporter.report(Report::LockWait(name)),
            WorkerEvent::Progress(pr) => reporter.report(Report::Progress(name, &pr)),
            WorkerEvent::Done {
                artifact, reused, ..
            } => {
                let secs = started[i].elapsed().as_secs_f64();
                reporter.report(Report::Done { name, secs, reused });
                if let (false, Some(shared), Some(key)) =
                    (reused, self.opts.shared.as_deref(), s.keys[i].as_deref())
                {
                    shared.offer(store, key);
                }
                s.outcomes[i] = Some(if reused {
                    Outcome::Reused { artifact }
                } else {
                    Outcome::Ran { artifact, secs }
                });
            }
            WorkerEvent::Corrupt { digest } => {
                checked.set(&digest, Some(false));
                s.corrupt_seen[i].push(digest);
            }
            WorkerEvent::Failed(error) => {
                reporter.report(Report::Failed {
                    name,
                    message: &error.message,
                });
                let log = s.keys[i]
                    .as_ref()
                    .map(|k| store.log_path(k).display().to_string());
                s.outcomes[i] = Some(Outcome::Failed { error, log });
            }
        }
    }

    /// A worker finished: record its outcome, or recompute what it found corrupt and run
    /// it again, then release its consumers.
    fn on_exit(&mut self, i: usize, r: Result<(), JobError>) {
        let (p, store, reporter, cancel, opts) =
            (self.p, self.store, self.reporter, self.cancel, self.opts);
        let jobs = self.jobs;
        let checked = &self.checked;
        self.running -= 1;
        self.used_threads -= p.instances[i].threads.min(jobs);
        if let Some(span) = self.spans[i].as_mut() {
            span.end_unix = crate::time::unix_now();
            if let Some(lane) = span.lane {
                self.lanes[lane] = false;
            }
        }
        if let Some(g) = self.gpus.as_mut() {
            // Kept in `held` for the run record; lent again from now on.
            g.leases.give_back(&g.held[i]);
        }
        let s = &mut self.s;
        if std::mem::replace(&mut s.stale[i], false) {
            // An input was recomputed meanwhile: look it up again with its
            // new key (what it computed stays cached under the old one).
            s.outcomes[i] = None;
            s.keys[i] = None;
            s.st[i] = St::Pending;
            if s.inputs_done(p, i) {
                s.push_frontier(i);
            }
            return;
        }
        if let Err(e) = r {
            if s.outcomes[i].is_none() {
                let error = if cancel.is_cancelled() || e.is_interrupted() {
                    StageError::internal("interrupted")
                } else {
                    StageError::internal(e.report())
                };
                reporter.report(Report::Failed {
                    name: &p.instances[i].name,
                    message: &error.message,
                });
                s.outcomes[i] = Some(Outcome::Failed {
                    error,
                    log: s.keys[i]
                        .as_ref()
                        .map(|k| store.log_path(k).display().to_string()),
                });
            }
        }
        let corrupt = std::mem::take(&mut s.corrupt_seen[i]);
        if !corrupt.is_empty()
            && matches!(s.outcomes[i], Some(Outcome::Failed { .. }))
            && !cancel.is_cancelled()
        {
            if let Some(reset) = producers_to_recompute(p, s, i, &corrupt, reporter) {
                // The worker refused a corrupt input that the run had not
                // hashed (computed in this run, or changed since): recompute
                // its producer, then run this stage again.
                for &v in &reset {
                    s.recompute(v, checked);
                }
                s.outcomes[i] = None;
                s.keys[i] = None;
                s.st[i] = St::Pending;
                s.blocked.push((i, reset));
                return;
            }
        }
        match &s.outcomes[i] {
            Some(o) if o.artifact().is_some() => {
                let _ = store.set_ref(&p.name, &p.instances[i].name, s.keys[i].as_ref().unwrap());
            }
            Some(_) => {
                if !opts.keep_going {
                    self.stop_launching = true;
                }
            }
            None => {
                s.outcomes[i] = Some(Outcome::Failed {
                    error: StageError::internal("the worker reported no result"),
                    log: None,
                });
                self.stop_launching |= !opts.keep_going;
            }
        }
        s.st[i] = St::Done;
        let artifact = s.outcomes[i]
            .as_ref()
            .and_then(Outcome::artifact)
            .map(str::to_string);
        if let Some(a) = &artifact {
            // Just hashed by the worker that stored it (or by another rst).
            checked.set(a, Some(true));
        }
        if let Some(old) = s.recovering[i].take() {
            if artifact.as_deref() != Some(old.as_str()) {
                // Recomputed to other bytes: what was looked up downstream
                // with the old artifact has other keys now.
                s.reset_downstream(i);
            }
        }
        s.release(p, i);
    }

    /// The outcome of every instance (NotRun for what never started).
    fn finish(self) -> RunResult {
        let recent = self.recent;
        let found = self
            .p
            .instances
            .iter()
            .zip(&self.s.outcomes)
            .zip(&self.s.keys)
            .filter_map(|((inst, o), k)| {
                let artifact = o.as_ref()?.artifact()?;
                Some((inst.name.as_str(), k.as_deref()?, artifact))
            });
        recent.update(self.store, found);
        RunResult {
            outcomes: self
                .s
                .outcomes
                .into_iter()
                .map(|o| o.unwrap_or(Outcome::NotRun))
                .collect(),
            spans: self.spans,
            keys: self.s.keys,
            interrupted: self.cancel.is_cancelled(),
            wall_s: self.t0.elapsed().as_secs_f64(),
            gpus: match self.gpus {
                Some(g) => g.held,
                None => vec![Vec::new(); self.p.instances.len()],
            },
        }
    }
}
