//! The search driver: runs every study (`kind: search` instance) of a pipeline batch by
//! batch, each trial an ordinary stage instance and so a cache entry.
//!
//! A round proposes the next batch of every unfinished study (`parallel` trials; each
//! proposal a pure function of the sampler, seed, space and the results of the trials
//! before its batch, `crate::search`), loads the pipeline again with the trials proposed
//! so far (`spec::trials`), and runs the new trials' objective instances and what they
//! need; their results feed the next round. The batches of all studies run in one round,
//! so the studies of a sweep (one per noise rate, say) run side by side within `--jobs`.
//!
//! What follows from trials being cache entries: a re-run replays the same proposals and
//! finds every trial cached; raising `trials` from 20 to 40 computes only the 20 new ones
//! (the first 20 proposals do not depend on the total); a killed study resumes at its
//! first uncomputed trial; a Slurm run and a local one share trials.
//!
//! A study that prunes binds `prune` for each batch to the pruner's references per epoch,
//! computed from the trials completed before the batch (`search::prune`); a trial that
//! stops below them is `Pruned` (its `summary.json` says so) and counts for TPE by its
//! last validation accuracy, as in Optuna, but is never the best.
//!
//! Once every study has all its trials, the whole pipeline is loaded with them and run as
//! usual: each study's `search` instance summarises its trials (`stages::search`), and
//! stages downstream of it read that artifact.
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use crate::cache::store::Store;
use crate::error::{Result, UserError};
use crate::exec::scheduler::{Outcome, RunResult};
use crate::search::{self, Params, Space, Trial, TrialState};
use crate::spec::trials::{Proposals, TrialRow, TRIAL_VAR};
use crate::spec::{instance_name, BestValues, Pipeline};
use crate::stages::search::{read_objective, SamplerName, SearchParams};

/// Whether the pipeline has a study to drive.
pub fn has_studies(p: &Pipeline) -> bool {
    p.stages.iter().any(|s| s.kind.name() == "search")
}

/// One study: an instance of a `search` stage, and its trials so far.
struct Study {
    /// The search stage's name, and the instance's.
    stage: String,
    instance: String,
    /// The instance's matrix bindings (what its trials bind besides `trial`).
    bindings: Vec<(Arc<str>, Value)>,
    params: SearchParams,
    space: Space,
    trials: Vec<Trial>,
}

impl Study {
    /// The next batch of proposals: `parallel` of them, fewer for the last batch.
    fn propose(&self) -> Result<Vec<Params>> {
        let start = self.trials.len();
        let n = self.params.parallel.min(self.params.trials - start);
        let (seed, dir) = (self.params.seed, self.params.direction.into());
        let proposed = match self.params.sampler {
            SamplerName::Tpe => {
                search::tpe::propose_batch(&self.space, &self.trials, start, n, seed, dir)
            }
            SamplerName::Random => (start..start + n)
                .map(|k| search::random::propose(&self.space, k, seed))
                .collect(),
            SamplerName::Grid => (start..start + n)
                .map(|k| search::grid::grid_point(&self.space, k))
                .collect(),
        };
        proposed.map_err(|e| {
            UserError::new(format!("study `{}`: {e}", self.instance))
                .help("check the search stage's `space`")
                .into()
        })
    }

    /// What the trials of the next batch bind as `prune`: the pruner's reference after
    /// each epoch (element `i` after epoch `i + 1`, null where it does not check), from the
    /// trials completed so far (all of them before the batch: rounds run one after the
    /// other). Null when nothing would be pruned, so that the key of such a trial is that of
    /// one without a pruner.
    fn prune_references(&self) -> Value {
        let Some(pr) = &self.params.prune else {
            return Value::Null;
        };
        let last = self
            .trials
            .iter()
            .filter_map(|t| t.last_intermediate())
            .map(|(s, _)| s)
            .max();
        let Some(last) = last else {
            return Value::Null;
        };
        let mut refs = pr.pruner().thresholds(
            &self.trials,
            0,
            last,
            search::Direction::from(self.params.direction),
        );
        while refs.last() == Some(&None) {
            refs.pop();
        }
        if refs.is_empty() {
            return Value::Null;
        }
        Value::Array(
            refs.into_iter()
                .map(|r| r.map_or(Value::Null, Value::from))
                .collect(),
        )
    }

    /// A trial's row for the pipeline builder: the values as the trial stages bind them.
    fn row(&self, trial: usize, params: &Params, prune: &Value) -> TrialRow {
        TrialRow {
            prune: prune.clone(),
            study: self.bindings.clone(),
            trial,
            values: self
                .space
                .iter()
                .map(|(k, dist)| {
                    let v = params
                        .get(k)
                        .map_or(Value::Null, |p| crate::stages::search::value_json(dist, p));
                    (Arc::from(k.as_str()), v)
                })
                .collect(),
        }
    }

    /// The best trial's values as `best:` binds them (the first of equals, as the
    /// study's artifact says: `stages::search::best`).
    fn best_values(&self) -> Option<Vec<(Arc<str>, Value)>> {
        let sign = search::Direction::from(self.params.direction).sign();
        let best = self
            .trials
            .iter()
            .filter(|t| t.state == TrialState::Complete)
            .filter_map(|t| Some((t, t.value?)))
            .fold(None, |best: Option<(&Trial, f64)>, (t, v)| match best {
                Some((b, bv)) if sign * v >= sign * bv => Some((b, bv)),
                _ => Some((t, v)),
            })?;
        Some(self.row(best.0.number, &best.0.params, &Value::Null).values)
    }

    /// The name of trial `n`'s objective instance (as the builder names it).
    fn objective_instance(&self, n: usize) -> String {
        let mut b = self.bindings.clone();
        b.push((Arc::from(TRIAL_VAR), Value::from(n)));
        instance_name(&self.params.objective.stage, &b)
    }
}

/// The studies of `p`, in instance order (their params were checked when it was built).
fn studies(p: &Pipeline) -> Result<Vec<Study>> {
    let mut out = Vec::new();
    for inst in &p.instances {
        let stage = &p.stages[inst.stage];
        if stage.kind.name() != "search" {
            continue;
        }
        let (params, space) = crate::stages::search::parse(&p.params_of(inst)).map_err(|e| {
            UserError::new(format!(
                "study `{}`: params.{}: {}",
                inst.name, e.path, e.message
            ))
        })?;
        out.push(Study {
            stage: stage.name.clone(),
            instance: inst.name.clone(),
            bindings: inst.matrix.clone(),
            params,
            space,
            trials: Vec::new(),
        });
    }
    Ok(out)
}

/// What the driver knows of the studies: what the pipeline is loaded with.
#[derive(Debug, Clone, Default)]
pub struct Known {
    /// The trials proposed so far.
    pub proposals: Proposals,
    /// The best trial's values of each finished study.
    pub best: BestValues,
    /// Per study (instance name): trials with a result, and trials it runs.
    pub progress: Vec<(String, usize, usize)>,
}

impl Known {
    /// Records what the studies have reached (best values of the finished ones).
    fn update(&mut self, studies: &[Study]) {
        self.progress.clear();
        for s in studies {
            let done = s
                .trials
                .iter()
                .filter(|t| matches!(t.state, TrialState::Complete | TrialState::Pruned))
                .count();
            self.progress
                .push((s.instance.clone(), done, s.params.trials));
            if done == s.params.trials {
                if let Some(values) = s.best_values() {
                    self.best.insert(s.instance.clone(), values);
                }
            }
        }
    }
}

/// How the driver ended.
pub enum Driven {
    /// Every study has all its trials: what to load the pipeline with, and what each
    /// instance that ran in a round did (by name).
    Done {
        known: Known,
        ran: HashMap<String, RoundRun>,
    },
    /// A round did not end well (a failed trial, Ctrl-C): that round's pipeline and result.
    Stopped {
        round: Box<Pipeline>,
        result: RunResult,
        known: Known,
    },
}

/// Drives every study of `first` to its last trial. `load` builds the pipeline with the
/// given proposals; `run` runs one (the round's new trials and what they need).
pub fn drive(
    first: &Pipeline,
    store: &Store,
    load: &mut dyn FnMut(&Known) -> Result<Pipeline>,
    run: &mut dyn FnMut(&Pipeline) -> Result<RunResult>,
) -> Result<Driven> {
    let mut studies = studies(first)?;
    let mut known = Known::default();
    let mut ran = HashMap::new();
    loop {
        let mut new: Vec<(usize, usize)> = Vec::new();
        for (si, s) in studies.iter_mut().enumerate() {
            if s.trials.len() >= s.params.trials {
                continue;
            }
            let start = s.trials.len();
            let prune = s.prune_references();
            for (j, params) in s.propose()?.into_iter().enumerate() {
                let row = s.row(start + j, &params, &prune);
                known
                    .proposals
                    .entry(s.stage.clone())
                    .or_default()
                    .push(row);
                s.trials.push(Trial {
                    number: start + j,
                    params,
                    value: None,
                    state: TrialState::Running,
                    intermediate: Vec::new(),
                });
                new.push((si, start + j));
            }
        }
        if new.is_empty() {
            known.update(&studies);
            return Ok(Driven::Done { known, ran });
        }
        let p = load(&known)?;
        let ids: HashMap<&str, usize> = p
            .instances
            .iter()
            .map(|i| (i.name.as_str(), i.id))
            .collect();
        let mut targets = Vec::with_capacity(new.len());
        for &(si, n) in &new {
            let name = studies[si].objective_instance(n);
            let id = ids.get(name.as_str()).copied().ok_or_else(|| {
                crate::error::Error::Bug(format!("trial instance `{name}` was not built"))
            })?;
            targets.push(id);
        }
        drop(ids);
        let round = p.select_ids(&targets);
        let result = run(&round)?;
        let ended_well =
            !result.interrupted && result.outcomes.iter().all(|o| o.artifact().is_some());
        if !ended_well {
            known.update(&studies);
            return Ok(Driven::Stopped {
                round: Box::new(round),
                result,
                known,
            });
        }
        let by_name: HashMap<&str, &Outcome> = round
            .instances
            .iter()
            .zip(&result.outcomes)
            .map(|(i, o)| (i.name.as_str(), o))
            .collect();
        for &(si, n) in &new {
            let s = &mut studies[si];
            let name = s.objective_instance(n);
            let artifact = by_name
                .get(name.as_str())
                .and_then(|o| o.artifact())
                .expect("every instance of a round that ended well has an artifact");
            let value =
                read_objective(&store.object_path(artifact), &s.params.objective).map_err(|e| {
                    UserError::new(format!("trial {name} of study `{}`: {e}", s.instance)).help(
                        format!(
                            "the objective is `{}` in `{}`: make the trial write it, or change \
                             the search stage's `objective`",
                            s.params.objective.key, s.params.objective.file
                        ),
                    )
                })?;
            let dir = store.object_path(artifact);
            let (pruned, _) = crate::stages::search::trial_end(&dir);
            let t = &mut s.trials[n];
            t.intermediate = crate::stages::search::intermediate(&dir);
            if pruned {
                t.state = TrialState::Pruned; // TPE reads its last intermediate value
            } else {
                t.value = Some(value);
                t.state = TrialState::Complete;
            }
        }
        let per_instance = result
            .outcomes
            .into_iter()
            .zip(result.gpus)
            .zip(result.spans);
        for (inst, ((o, gpus), span)) in round.instances.iter().zip(per_instance) {
            if matches!(o, Outcome::Ran { .. }) {
                ran.insert(
                    inst.name.clone(),
                    RoundRun {
                        outcome: o,
                        gpus,
                        span,
                    },
                );
            }
        }
    }
}

/// What the cache knows of the studies of `first`, running nothing: each study replayed
/// as long as its trials are cached (its next batch then is proposed but not computed).
/// What `rst status`, `gc`, `lineage`, `audit` and `export-crate` load a pipeline with, so
/// that they see the trials a run made.
pub fn replay(
    first: &Pipeline,
    store: &Store,
    load: &mut dyn FnMut(&Known) -> Result<Pipeline>,
) -> Result<Known> {
    let mut lookup = |p: &Pipeline| -> Result<RunResult> {
        let lines = crate::status::status_lines(p, store)?;
        Ok(RunResult {
            outcomes: lines
                .iter()
                .map(|l| match &l.artifact {
                    Some(a) => Outcome::Cached {
                        artifact: a.clone(),
                    },
                    None => Outcome::NotRun,
                })
                .collect(),
            keys: lines.iter().map(|l| l.key.clone()).collect(),
            spans: vec![None; lines.len()],
            interrupted: false,
            wall_s: 0.0,
            gpus: vec![Vec::new(); lines.len()],
        })
    };
    Ok(match drive(first, store, load, &mut lookup)? {
        Driven::Done { known, .. } | Driven::Stopped { known, .. } => known,
    })
}

/// The final run's outcomes with what ran in a round counted as ran (the final run finds
/// those trials cached, but this `rst run` computed them).
pub fn merge_rounds(p: &Pipeline, result: &mut RunResult, ran: &HashMap<String, RoundRun>) {
    let per_instance = result
        .outcomes
        .iter_mut()
        .zip(result.gpus.iter_mut())
        .zip(result.spans.iter_mut());
    for (inst, ((o, gpus), span)) in p.instances.iter().zip(per_instance) {
        let Some(round) = ran.get(&inst.name) else {
            continue;
        };
        if let (Outcome::Cached { artifact }, Outcome::Ran { artifact: a, .. }) =
            (&*o, &round.outcome)
        {
            if artifact == a {
                *o = round.outcome.clone();
                gpus.clone_from(&round.gpus);
                span.clone_from(&round.span);
            }
        }
    }
}

/// What an instance that ran in a round did, the GPUs it had, and when it ran.
pub struct RoundRun {
    pub outcome: Outcome,
    pub gpus: Vec<String>,
    pub span: Option<crate::exec::scheduler::Span>,
}

/// `--force` names as the instances of `p` they name, each forced in the first round that
/// has it (so a forced trial or input is computed once per `rst run`, not once per round).
pub struct Forced {
    names: Vec<String>,
    done: HashSet<String>,
}

impl Forced {
    pub fn new(names: &[String]) -> Forced {
        Forced {
            names: names.to_vec(),
            done: HashSet::new(),
        }
    }

    /// The instances of `p` to force in this round.
    pub fn round(&mut self, p: &Pipeline) -> Vec<String> {
        let mut out = Vec::new();
        for inst in &p.instances {
            let stage = &p.stages[inst.stage].name;
            if self.names.iter().any(|f| *f == inst.name || f == stage)
                && self.done.insert(inst.name.clone())
            {
                out.push(inst.name.clone());
            }
        }
        out
    }
}

/// Checks `--force` names before the first round: a stage, an instance of the pipeline as
/// loaded, or an instance of a trial stage (`fit[rate=0.4, trial=3]`, not built yet).
pub fn check_force(p: &Pipeline, force: &[String]) -> std::result::Result<(), UserError> {
    let trial_stages: Vec<&str> = p
        .stages
        .iter()
        .filter(|s| s.trial_of.is_some())
        .map(|s| s.name.as_str())
        .collect();
    let known: Vec<String> = force
        .iter()
        .filter(|f| {
            !trial_stages
                .iter()
                .any(|t| *f == t || f.starts_with(&format!("{t}[")))
        })
        .cloned()
        .collect();
    crate::exec::scheduler::forced_set(p, &known).map(|_| ())
}
