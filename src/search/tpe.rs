//! The Tree-structured Parzen Estimator, with Optuna 2.5.0's semantics (univariate, the
//! default `TPESampler()`), as a pure function of the study so far.
//!
//! For each parameter, independently (Optuna's `sample_independent`):
//! 1. fewer than `n_startup_trials` (10) finished trials: a uniform proposal, the very one
//!    [`super::random::propose`] makes for this trial number and seed;
//! 2. otherwise the finished trials are ranked (completed by objective, then pruned ones by
//!    how far they got) and the best `gamma(n) = min(⌈0.1·n⌉, 25)` form the "good" group;
//! 3. a Parzen estimator (a mixture of truncated normals, one per observation plus a prior)
//!    is fitted to each group's values, `l(x)` to the good and `g(x)` to the rest, with
//!    `default_weights` favouring recent trials;
//! 4. `n_ei_candidates` (24) values are drawn from `l(x)`, and the one with the largest
//!    `ln l(x) − ln g(x)` is proposed.
//!
//! Log domains are modelled in `ln` space; stepped floats and integers on the real line with
//! `±step/2` margins, the candidates rounded to the grid; categoricals by weighted counts.
//!
//! Comments marked *Later Optuna* say where 3.x/4.x differ (checked against 3.6 and 4.1);
//! this file follows 2.5.
//!
//! Determinism: the randomness of parameter `p` of trial `t` is the stream
//! `search/tpe/trial=t/param=p` of [`Prng`]; normal quantiles are computed here (Wichura's
//! AS241) and the special functions come from `libm` (see the [module doc](super)), so
//! proposals are bit-reproducible. They are not Optuna's numbers (its generator is numpy's
//! Mersenne Twister and scipy's `truncnorm`): parity is in law, which the test
//! `parity_with_optuna_fixture` checks against Optuna itself.
use super::{
    normalize_space, random, round_half_even, Direction, Distribution, ParamValue, Params,
    SearchError, Space, Trial, TrialState,
};
use crate::prng::Prng;

/// Optuna's `EPS`: the floor of a kernel's width in the density and of a probability.
const EPS: f64 = 1e-12;

/// How many of `n` finished trials form the good group.
pub type GammaFn = fn(usize) -> usize;
/// The weights of `n` observations, oldest first (`n` of them).
pub type WeightsFn = fn(usize) -> Vec<f64>;

/// `min(⌈0.1·n⌉, 25)` (Optuna's `default_gamma`, unchanged in 4.x).
pub fn default_gamma(n: usize) -> usize {
    ((0.1 * n as f64).ceil() as usize).min(25)
}

/// Optuna's `default_weights` (unchanged in 4.x): 1 for each of the newest 25 observations;
/// when there are more, the older `n − 25` ramp linearly from `1/n` (the oldest) to 1
/// (`np.linspace(1/n, 1, n − 25)`).
pub fn default_weights(n: usize) -> Vec<f64> {
    if n < 25 {
        return vec![1.0; n];
    }
    let mut w = linspace(1.0 / n as f64, 1.0, n - 25);
    w.extend(std::iter::repeat_n(1.0, 25));
    w
}

/// numpy's `linspace(start, stop, num)` (endpoint included; one point is `start`).
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    match num {
        0 => vec![],
        1 => vec![start],
        _ => {
            let step = (stop - start) / (num - 1) as f64;
            let mut y: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
            y[num - 1] = stop;
            y
        }
    }
}

/// The sampler's settings; [`Default`] is Optuna 2.5's `TPESampler()`.
#[derive(Debug, Clone, Copy)]
pub struct TpeConfig {
    /// Add the prior kernel (mean the middle of the range, width the range) to the numeric
    /// estimators. Categorical estimators always add `prior_weight` to every count, whatever
    /// this says (as Optuna 2.5 does).
    pub consider_prior: bool,
    pub prior_weight: f64,
    /// Floor each kernel's width at `range / min(100, 1 + kernels)`.
    pub consider_magic_clip: bool,
    /// Let the outermost kernels' widths reach to the range's ends (off by default in every
    /// Optuna version so far).
    pub consider_endpoints: bool,
    pub n_startup_trials: usize,
    pub n_ei_candidates: usize,
    pub gamma: GammaFn,
    pub weights: WeightsFn,
    /// Rank `Running` trials given to [`Self::propose`] as the worst trials (see
    /// [`Self::propose_batch`]). Off: they are ignored, as in Optuna 2.5, which has no
    /// constant liar (it came in 2.8, off by default there and in 4.x).
    pub constant_liar: bool,
}

impl Default for TpeConfig {
    fn default() -> Self {
        TpeConfig {
            consider_prior: true,
            prior_weight: 1.0,
            consider_magic_clip: true,
            consider_endpoints: false,
            n_startup_trials: 10,
            n_ei_candidates: 24,
            gamma: default_gamma,
            weights: default_weights,
            constant_liar: false,
        }
    }
}

/// [`TpeConfig::propose`] with the default settings.
pub fn propose(
    space: &Space,
    trials_so_far: &[Trial],
    trial_number: usize,
    seed: u64,
    direction: Direction,
) -> Result<Params, SearchError> {
    TpeConfig::default().propose(space, trials_so_far, trial_number, seed, direction)
}

/// [`TpeConfig::propose_batch`] with the default settings.
pub fn propose_batch(
    space: &Space,
    completed_before_batch: &[Trial],
    batch_start_number: usize,
    n: usize,
    seed: u64,
    direction: Direction,
) -> Result<Vec<Params>, SearchError> {
    TpeConfig::default().propose_batch(
        space,
        completed_before_batch,
        batch_start_number,
        n,
        seed,
        direction,
    )
}

/// A finished trial's place in the ranking, Optuna 2.5's `(-step, loss)` pairs compared
/// lexicographically (smaller is better):
/// - completed: `(−∞, sign·value)`;
/// - pruned: `(−last step, sign·its value)`, or `(−last step, +∞)` if that value is NaN, so
///   a trial pruned later ranks above one pruned earlier, and any completed trial above both;
/// - pruned before reporting anything: `(+∞, 0)`, last.
///
/// *Later Optuna* (3.x/4.x `_split_trials`) sorts completed trials by value, then pruned ones
/// by the same key (one reported nothing: `(1, 0)`, still after every reported step), then
/// infeasible ones (constraints): the same order.
fn rank_key(trial: &Trial, direction: Direction) -> Option<(f64, f64)> {
    let sign = direction.sign();
    match trial.state {
        TrialState::Complete => match trial.value {
            Some(v) if !v.is_nan() => Some((f64::NEG_INFINITY, sign * v)),
            _ => None, // no value, or NaN (a failed trial in Optuna 2.5)
        },
        TrialState::Pruned => Some(match trial.last_intermediate() {
            Some((step, v)) if v.is_nan() => (-(step as f64), f64::INFINITY),
            Some((step, v)) => (-(step as f64), sign * v),
            None => (f64::INFINITY, 0.0),
        }),
        TrialState::Failed | TrialState::Running => None,
    }
}

/// The good (`below`) and the other (`above`) trials, each oldest first.
struct Split<'a> {
    below: Vec<&'a Trial>,
    above: Vec<&'a Trial>,
    /// Finished (completed or pruned) trials: the `n` of `n_startup_trials` and `gamma(n)`.
    n_finished: usize,
}

impl TpeConfig {
    /// Parameters for trial `trial_number`, given the trials so far (any order; the one
    /// numbered `trial_number`, if present, is left out). Pure: the same arguments give the
    /// same proposal on every machine.
    ///
    /// Trials read: `Complete` ones with a (non-NaN) value and `Pruned` ones; `Running` ones
    /// only with [`Self::constant_liar`]; `Failed` ones never. A trial without a value of the
    /// parameter (or with a value outside its current domain) counts for `n` and the split,
    /// and then adds no observation, as in Optuna 2.5.
    pub fn propose(
        &self,
        space: &Space,
        trials_so_far: &[Trial],
        trial_number: usize,
        seed: u64,
        direction: Direction,
    ) -> Result<Params, SearchError> {
        let trials: Vec<&Trial> = trials_so_far.iter().collect();
        self.propose_with(
            space,
            &trials,
            trial_number,
            seed,
            direction,
            self.constant_liar,
        )
    }

    /// `n` proposals to run at once, numbered `batch_start_number..`, with a constant liar:
    /// proposal `j` sees `completed_before_batch` plus the `j` earlier proposals of the batch
    /// as `Running` trials, each taken to have done as badly as the worst observed trial, so
    /// that a batch spreads out instead of piling onto one promising spot.
    ///
    /// Concretely a running trial always lands in `g(x)` (ranked behind every finished
    /// trial, the worst observed value included) and counts neither for `n_startup_trials`
    /// nor for `gamma(n)`, as with Optuna's `constant_liar` (added in 2.8; 3.x and 4.x append
    /// running trials to the `above` group in `_split_trials`). This differs from ranking a
    /// liar as a completed trial with the worst value only when pruned trials fill the good
    /// group, where such a liar would outrank them and attract proposals. Proposal 0 is
    /// [`Self::propose`]'s. `Running` trials in `completed_before_batch` are liars too. Pure,
    /// like [`Self::propose`].
    pub fn propose_batch(
        &self,
        space: &Space,
        completed_before_batch: &[Trial],
        batch_start_number: usize,
        n: usize,
        seed: u64,
        direction: Direction,
    ) -> Result<Vec<Params>, SearchError> {
        let mut pending: Vec<Trial> = Vec::with_capacity(n);
        for j in 0..n {
            let number = batch_start_number + j;
            let trials: Vec<&Trial> = completed_before_batch.iter().chain(&pending).collect();
            let params = self.propose_with(space, &trials, number, seed, direction, true)?;
            pending.push(Trial {
                number,
                params,
                value: None,
                state: TrialState::Running,
                intermediate: Vec::new(),
            });
        }
        Ok(pending.into_iter().map(|t| t.params).collect())
    }

    fn propose_with(
        &self,
        space: &Space,
        trials: &[&Trial],
        trial_number: usize,
        seed: u64,
        direction: Direction,
        liar: bool,
    ) -> Result<Params, SearchError> {
        assert!(self.n_ei_candidates > 0, "n_ei_candidates 0");
        let space = normalize_space(space)?;
        let others: Vec<&Trial> = trials
            .iter()
            .copied()
            .filter(|t| t.number != trial_number)
            .collect();
        let split = self.split(&others, direction, liar);
        let mut params = Params::with_capacity(space.len());
        for (name, dist) in &space {
            let value = if let Some(v) = dist.single_value() {
                v // Optuna's `single()` short-cut: no sampler is asked
            } else if split.n_finished < self.n_startup_trials {
                // *Later Optuna*: the same count (completed + pruned, running excluded).
                random::sample(dist, &mut random::rng(seed, trial_number, name))
            } else {
                let below = observations(&split.below, name, dist);
                let above = observations(&split.above, name, dist);
                let mut rng = Prng::new(
                    seed,
                    &format!("search/tpe/trial={trial_number}/param={name}"),
                );
                self.sample(dist, &below, &above, &mut rng)
            };
            params.insert(name.clone(), value);
        }
        Ok(params)
    }

    /// Optuna 2.5's `_get_observation_pairs` + `_split_observation_pairs`: rank the finished
    /// trials ([`rank_key`]), the first `gamma(n)` are below, the rest above, each group back
    /// in trial order (the order the weights read). Ties keep trial order (numpy's
    /// `argsort` is not stable there, so Optuna's choice among equal losses is arbitrary).
    /// Running trials (with `liar`) go above.
    fn split<'a>(&self, trials: &[&'a Trial], direction: Direction, liar: bool) -> Split<'a> {
        let mut chronological: Vec<&Trial> = trials.to_vec();
        chronological.sort_by_key(|t| t.number);
        let mut finished: Vec<(usize, (f64, f64))> = Vec::new();
        let mut running: Vec<usize> = Vec::new();
        for (i, t) in chronological.iter().enumerate() {
            if let Some(key) = rank_key(t, direction) {
                finished.push((i, key));
            } else if liar && t.state == TrialState::Running {
                running.push(i);
            }
        }
        let n_finished = finished.len();
        let n_below = (self.gamma)(n_finished).min(n_finished);
        let mut ranked = finished.clone();
        ranked.sort_by(|a, b| a.1 .0.total_cmp(&b.1 .0).then(a.1 .1.total_cmp(&b.1 .1)));
        let mut is_below = vec![false; chronological.len()];
        for (i, _) in &ranked[..n_below] {
            is_below[*i] = true;
        }
        let mut in_above = vec![false; chronological.len()];
        for (i, _) in &finished {
            in_above[*i] = !is_below[*i];
        }
        for i in running {
            in_above[i] = true;
        }
        let pick = |mask: &[bool]| -> Vec<&'a Trial> {
            chronological
                .iter()
                .zip(mask)
                .filter(|(_, m)| **m)
                .map(|(t, _)| *t)
                .collect()
        };
        Split {
            below: pick(&is_below),
            above: pick(&in_above),
            n_finished,
        }
    }

    /// One parameter's proposal from its good and other observations (internal form).
    fn sample(
        &self,
        dist: &Distribution,
        below: &[f64],
        above: &[f64],
        rng: &mut Prng,
    ) -> ParamValue {
        match *dist {
            Distribution::Categorical { ref choices } => {
                ParamValue::Categorical(self.sample_categorical(choices.len(), below, above, rng))
            }
            _ => {
                let d = NumericDomain::of(dist);
                let below: Vec<f64> = below.iter().map(|&v| d.model_of(v)).collect();
                let above: Vec<f64> = above.iter().map(|&v| d.model_of(v)).collect();
                let x = self.sample_numerical(d.low, d.high, &below, &above, d.q, rng);
                d.proposal(dist, x)
            }
        }
    }

    /// Optuna 2.5's `_sample_numerical`: candidates from `l`, the best `ln l − ln g`.
    fn sample_numerical(
        &self,
        low: f64,
        high: f64,
        below: &[f64],
        above: &[f64],
        q: Option<f64>,
        rng: &mut Prng,
    ) -> f64 {
        let l = self.parzen(below, low, high);
        let candidates = l.sample(low, high, q, self.n_ei_candidates, rng);
        let log_l = l.log_pdf(&candidates, low, high, q);
        let log_g = self
            .parzen(above, low, high)
            .log_pdf(&candidates, low, high, q);
        candidates[argmax_ratio(&log_l, &log_g)]
    }

    /// Optuna 2.5's `_sample_categorical_index`: each group's weighted counts per choice
    /// plus `prior_weight`, normalised; candidates drawn from the good group's.
    ///
    /// *Later Optuna* (3.x/4.x): one kernel per observation (weight 1 on its choice plus
    /// `prior_weight / kernels` on every choice, normalised) and a uniform prior kernel,
    /// mixed with the observation weights: a differently smoothed version of the same idea.
    fn sample_categorical(
        &self,
        n_choices: usize,
        below: &[f64],
        above: &[f64],
        rng: &mut Prng,
    ) -> usize {
        let p_below = self.categorical_probabilities(n_choices, below);
        let p_above = self.categorical_probabilities(n_choices, above);
        let candidates: Vec<usize> = (0..self.n_ei_candidates)
            .map(|_| draw_index(&p_below, rng))
            .collect();
        let log_l: Vec<f64> = candidates.iter().map(|&c| libm::log(p_below[c])).collect();
        let log_g: Vec<f64> = candidates.iter().map(|&c| libm::log(p_above[c])).collect();
        candidates[argmax_ratio(&log_l, &log_g)]
    }

    fn categorical_probabilities(&self, n_choices: usize, observed: &[f64]) -> Vec<f64> {
        let weights = self.observation_weights(observed.len());
        let mut p = vec![self.prior_weight; n_choices];
        for (&c, w) in observed.iter().zip(weights) {
            p[c as usize] += w;
        }
        let total: f64 = p.iter().sum();
        p.iter_mut().for_each(|x| *x /= total);
        p
    }

    fn observation_weights(&self, n: usize) -> Vec<f64> {
        let w = (self.weights)(n);
        assert_eq!(
            w.len(),
            n,
            "the weights function gave {} weights for {n}",
            w.len()
        );
        w
    }

    /// Optuna 2.5's `_ParzenEstimator._calculate`: the kernels of one group's observations
    /// `mus` (oldest first) on `[low, high]`, sorted by position with the prior among them.
    ///
    /// - The prior (mean `(low + high)/2`, width `high − low`, weight `prior_weight`) is
    ///   inserted at its sorted place (`searchsorted`, before equal means); with no
    ///   observation it is the only kernel, whatever `consider_prior` says.
    /// - A kernel's width is the larger gap to its neighbours in `[low, sorted means…, high]`;
    ///   without `consider_endpoints` the first and last kernels take the gap to their inner
    ///   neighbour instead.
    /// - Observation weights come from `weights` (by age), then all are normalised.
    /// - Widths are clipped to `[range / min(100, 1 + kernels), range]` (`consider_magic_clip`,
    ///   else `[EPS, range]`), and the prior's is reset to the range.
    ///
    /// *Later Optuna* (3.x/4.x `_calculate_numerical_distributions`) appends the prior last
    /// instead of in place but computes the same widths (the prior still among the
    /// neighbours, the magic-clip floor the same), and for a stepped domain takes the
    /// neighbours within `[low − step/2, high + step/2]` and the range as `high − low + step`;
    /// multivariate TPE (off by default in every version) uses Scott-like widths
    /// `0.2·n^(−1/(d+4))·range` instead.
    fn parzen(&self, mus: &[f64], low: f64, high: f64) -> Parzen {
        let n = mus.len();
        let consider_prior = self.consider_prior || n == 0;
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| mus[a].total_cmp(&mus[b])); // stable: ties keep age order
        let prior_mu = 0.5 * (low + high);
        let prior_sigma = high - low;
        let unsorted_weights = self.observation_weights(n);
        let prior_pos = if consider_prior {
            order.partition_point(|&i| mus[i] < prior_mu)
        } else {
            usize::MAX
        };
        let mut sorted_mus = Vec::with_capacity(n + 1);
        let mut weights = Vec::with_capacity(n + 1);
        for (rank, &i) in order.iter().enumerate() {
            if rank == prior_pos {
                sorted_mus.push(prior_mu);
                weights.push(self.prior_weight);
            }
            sorted_mus.push(mus[i]);
            weights.push(unsorted_weights[i]);
        }
        if prior_pos == n {
            sorted_mus.push(prior_mu);
            weights.push(self.prior_weight);
        }
        let m = sorted_mus.len();
        let mut sigmas = if n > 0 {
            // Neighbour gaps in [low, sorted_mus..., high].
            let at = |k: usize| -> f64 {
                match k {
                    0 => low,
                    k if k == m + 1 => high,
                    k => sorted_mus[k - 1],
                }
            };
            let mut s: Vec<f64> = (1..=m)
                .map(|k| (at(k) - at(k - 1)).max(at(k + 1) - at(k)))
                .collect();
            if !self.consider_endpoints {
                s[0] = at(2) - at(1);
                s[m - 1] = at(m) - at(m - 1);
            }
            s
        } else {
            vec![prior_sigma]
        };
        let total: f64 = weights.iter().sum();
        weights.iter_mut().for_each(|w| *w /= total);
        let max_sigma = high - low;
        let min_sigma = if self.consider_magic_clip {
            (high - low) / (100.0f64).min(1.0 + m as f64)
        } else {
            EPS
        };
        // numpy's clip: min(max(x, lo), hi).
        sigmas
            .iter_mut()
            .for_each(|s| *s = s.max(min_sigma).min(max_sigma));
        if consider_prior {
            sigmas[prior_pos.min(m - 1)] = prior_sigma;
        }
        Parzen {
            weights,
            mus: sorted_mus,
            sigmas,
        }
    }
}

/// A parameter's internal values of some trials (oldest first), those without one dropped.
fn observations(trials: &[&Trial], name: &str, dist: &Distribution) -> Vec<f64> {
    trials
        .iter()
        .filter_map(|t| t.params.get(name).and_then(|v| dist.internal(v)))
        .collect()
}

/// The first index of the largest `log_l − log_g` (numpy's `argmax`; a NaN score is never
/// chosen unless all are).
fn argmax_ratio(log_l: &[f64], log_g: &[f64]) -> usize {
    let mut best = 0;
    let mut best_score = f64::NEG_INFINITY;
    for (i, (l, g)) in log_l.iter().zip(log_g).enumerate() {
        let score = l - g;
        if score > best_score {
            best = i;
            best_score = score;
        }
    }
    best
}

/// An index drawn with probability proportional to `weights` (Optuna: `multinomial(1, w)`).
fn draw_index(weights: &[f64], rng: &mut Prng) -> usize {
    let total: f64 = weights.iter().sum();
    let u = rng.unit_f64() * total;
    let mut acc = 0.0;
    for (i, w) in weights.iter().enumerate() {
        acc += w;
        if u < acc {
            return i;
        }
    }
    weights.len() - 1 // u within rounding of the total
}

/// Where a numeric parameter is modelled: `[low, high]` in model space, the grid `q` there,
/// and the map from a value to model space (Optuna 2.5's `_sample_uniform`,
/// `_sample_loguniform`, `_sample_discrete_uniform`, `_sample_int`,
/// `_sample_int_loguniform`).
#[derive(Debug, Clone, Copy, PartialEq)]
struct NumericDomain {
    low: f64,
    high: f64,
    q: Option<f64>,
    /// Subtracted from a value before modelling (a stepped domain is shifted to start at 0).
    shift: f64,
    log: bool,
}

impl NumericDomain {
    /// For a normalised numeric distribution that is not a constant.
    fn of(dist: &Distribution) -> NumericDomain {
        match *dist {
            // Float: [low, high] as is.
            Distribution::Float {
                low,
                high,
                log: false,
                step: None,
            } => NumericDomain {
                low,
                high,
                q: None,
                shift: 0.0,
                log: false,
            },
            // Log float: [ln low, ln high].
            Distribution::Float {
                low,
                high,
                log: true,
                ..
            } => NumericDomain {
                low: libm::log(low),
                high: libm::log(high),
                q: None,
                shift: 0.0,
                log: true,
            },
            // Stepped float, integer (`_sample_int` is the discrete one with q = step): the
            // range shifted to [0, r], widened by half a step each side, `[−q/2, r + q/2]`, so
            // that each grid point owns an interval of width q.
            Distribution::Float {
                low,
                high,
                step: Some(q),
                ..
            } => NumericDomain {
                low: -0.5 * q,
                high: (high - low) + 0.5 * q,
                q: Some(q),
                shift: low,
                log: false,
            },
            Distribution::Int {
                low,
                high,
                log: false,
                step,
            } => {
                let (low, high, q) = (low as f64, high as f64, step as f64);
                NumericDomain {
                    low: -0.5 * q,
                    high: (high - low) + 0.5 * q,
                    q: Some(q),
                    shift: low,
                    log: false,
                }
            }
            // Log integer: [ln(low − 0.5), ln(high + 0.5)], continuous there, rounded after.
            // (*Later Optuna* does the same, with `step/2` for the 0.5.)
            Distribution::Int {
                low,
                high,
                log: true,
                ..
            } => NumericDomain {
                low: libm::log(low as f64 - 0.5),
                high: libm::log(high as f64 + 0.5),
                q: None,
                shift: 0.0,
                log: true,
            },
            Distribution::Categorical { .. } => unreachable!("a categorical is not numeric"),
        }
    }

    fn model_of(&self, v: f64) -> f64 {
        if self.log {
            libm::log(v)
        } else {
            v - self.shift
        }
    }

    /// The proposal for the chosen candidate `x`.
    fn proposal(&self, dist: &Distribution, x: f64) -> ParamValue {
        match *dist {
            Distribution::Float {
                low,
                high,
                step: None,
                ..
            } => {
                let v = if self.log { libm::exp(x) } else { x };
                // Optuna does not clamp; `exp(ln high)` can exceed `high` by an ulp.
                ParamValue::Float(v.clamp(low, high))
            }
            Distribution::Int {
                low,
                high,
                log: true,
                ..
            } => ParamValue::Int((round_half_even(libm::exp(x)) as i64).clamp(low, high)),
            // Stepped: x is already on the grid `k·q`; the index, clamped to `0..=K` as Optuna
            // clamps the value to [low, high].
            _ => {
                let q = self.q.expect("a stepped domain");
                let k_max = dist.n_steps().expect("a stepped domain");
                let k = round_half_even(x / q).max(0.0) as u64;
                dist.step_value(k.min(k_max))
            }
        }
    }
}

/// A mixture of normals, each truncated to the domain: weights (summing to 1), means and
/// widths, sorted by mean.
#[derive(Debug, Clone, PartialEq)]
struct Parzen {
    weights: Vec<f64>,
    mus: Vec<f64>,
    sigmas: Vec<f64>,
}

impl Parzen {
    /// Optuna 2.5's `_sample_from_gmm`: `size` draws, each from one kernel (chosen by
    /// weight) truncated to `[low, high]`, values at or above `high` drawn again; then
    /// rounded to the grid `q` (half to even, as `np.round`).
    fn sample(&self, low: f64, high: f64, q: Option<f64>, size: usize, rng: &mut Prng) -> Vec<f64> {
        let mut cumulative = Vec::with_capacity(self.weights.len());
        let mut acc = 0.0;
        for w in &self.weights {
            acc += w;
            cumulative.push(acc);
        }
        (0..size)
            .map(|_| {
                let u = rng.unit_f64() * acc;
                let k = cumulative
                    .partition_point(|&c| c <= u)
                    .min(self.weights.len() - 1);
                let (mu, sigma) = (self.mus[k], self.sigmas[k]);
                let (a, b) = ((low - mu) / sigma, (high - mu) / sigma);
                let mut x = high;
                for _ in 0..64 {
                    x = mu + sigma * truncated_std_normal(a, b, rng.unit_f64());
                    if x < high {
                        break;
                    }
                }
                // The rejection above cannot loop forever on a kernel whose mass sits at
                // `high` to the last bit: settle for the float just below it.
                let x = if x < high { x } else { high.next_down() }.max(low);
                match q {
                    Some(q) => round_half_even(x / q) * q,
                    None => x,
                }
            })
            .collect()
    }

    /// Optuna 2.5's `_gmm_log_pdf` at each of `xs`.
    ///
    /// The mixture is normalised as a whole, by `p_accept = Σ wₖ·(Φₖ(high) − Φₖ(low))`,
    /// not kernel by kernel, although candidates are drawn from kernels truncated one by one.
    /// With `q`, the density is the mass of `[x − q/2, x + q/2] ∩ [low, high]`:
    /// `ln(mass + EPS) − ln(p_accept + EPS)`.
    ///
    /// *Later Optuna* (3.x/4.x) normalises each kernel by its own mass in the domain (a true
    /// mixture of truncated normals, as sampled) and drops the `EPS` terms.
    fn log_pdf(&self, xs: &[f64], low: f64, high: f64, q: Option<f64>) -> Vec<f64> {
        let kernels = || self.weights.iter().zip(&self.mus).zip(&self.sigmas);
        let p_accept: f64 = kernels()
            .map(|((w, mu), s)| w * (normal_cdf(high, *mu, *s) - normal_cdf(low, *mu, *s)))
            .sum();
        match q {
            None => {
                let sqrt_2pi = std::f64::consts::TAU.sqrt();
                let log_coef: Vec<f64> = kernels()
                    .map(|((w, _), s)| libm::log(w / (sqrt_2pi * s) / p_accept))
                    .collect();
                let mut terms = vec![0.0; self.mus.len()];
                xs.iter()
                    .map(|&x| {
                        for (t, ((mu, s), c)) in terms
                            .iter_mut()
                            .zip(self.mus.iter().zip(&self.sigmas).zip(&log_coef))
                        {
                            let z = (x - mu) / s.max(EPS);
                            *t = -0.5 * z * z + c;
                        }
                        log_sum_exp(&terms)
                    })
                    .collect()
            }
            Some(q) => {
                // Candidates on a grid repeat (24 draws among few points): each point once.
                let mut seen: Vec<(u64, f64)> = Vec::new();
                xs.iter()
                    .map(|&x| {
                        if let Some(&(_, v)) = seen.iter().find(|(b, _)| *b == x.to_bits()) {
                            return v;
                        }
                        let (lo, hi) = ((x - q / 2.0).max(low), (x + q / 2.0).min(high));
                        let mass: f64 = kernels()
                            .map(|((w, mu), s)| {
                                w * (normal_cdf(hi, *mu, *s) - normal_cdf(lo, *mu, *s))
                            })
                            .sum();
                        let v = libm::log(mass + EPS) - libm::log(p_accept + EPS);
                        seen.push((x.to_bits(), v));
                        v
                    })
                    .collect()
            }
        }
    }
}

/// `ln Σ exp(tᵢ)`, shifted by the maximum (Optuna's `_logsum_rows`).
fn log_sum_exp(terms: &[f64]) -> f64 {
    let m = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return m;
    }
    let s: f64 = terms.iter().map(|t| libm::exp(t - m)).sum();
    libm::log(s) + m
}

/// Optuna's `_normal_cdf`: `½(1 + erf((x − μ) / max(√2·σ, EPS)))`.
fn normal_cdf(x: f64, mu: f64, sigma: f64) -> f64 {
    let z = (x - mu) / (std::f64::consts::SQRT_2 * sigma).max(EPS);
    0.5 * (1.0 + libm::erf(z))
}

/// `Φ(x)`, the standard normal CDF, accurate in the lower tail.
fn phi(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

/// `1 − Φ(x)`, accurate in the upper tail.
fn phi_upper(x: f64) -> f64 {
    0.5 * libm::erfc(x / std::f64::consts::SQRT_2)
}

/// The standard normal truncated to `[a, b]` (`a ≤ b`) by the inverse CDF at `u ∈ [0, 1)`:
/// `Φ⁻¹(Φ(a) + u·(Φ(b) − Φ(a)))`, evaluated on whichever tail keeps the precision
/// (scipy's `truncnorm` does the same with its own generator). Optuna 2.5 calls
/// `truncnorm.rvs`.
fn truncated_std_normal(a: f64, b: f64, u: f64) -> f64 {
    let x = if a >= 0.0 {
        // Upper tail: in survival terms, from Q(a) down to Q(b).
        let (qa, qb) = (phi_upper(a), phi_upper(b));
        -ndtri(qa - u * (qa - qb))
    } else {
        let (pa, pb) = (phi(a), phi(b));
        let p = pa + u * (pb - pa);
        if p <= 0.5 || b <= 0.0 {
            ndtri(p)
        } else {
            // The same point, 1 − p, from the upper tail.
            let (qa, qb) = (phi_upper(a), phi_upper(b));
            -ndtri(qb + (1.0 - u) * (qa - qb))
        }
    };
    if x.is_nan() {
        0.5 * (a + b) // no mass representable: the middle
    } else {
        x.clamp(a, b)
    }
}

/// `Φ⁻¹(p)`, Wichura's algorithm AS241 (`PPND16`, relative error about 1e-16): `−∞` at 0,
/// `+∞` at 1.
fn ndtri(p: f64) -> f64 {
    // Rational approximations: numerator and denominator coefficients, constant term first.
    const A: [f64; 8] = [
        3.387_132_872_796_366_5,
        1.331_416_678_917_843_8e2,
        1.971_590_950_306_551_3e3,
        1.373_169_376_550_946e4,
        4.592_195_393_154_987e4,
        6.726_577_092_700_87e4,
        3.343_057_558_358_813e4,
        2.509_080_928_730_122_7e3,
    ];
    const B: [f64; 8] = [
        1.0,
        4.231_333_070_160_091e1,
        6.871_870_074_920_579e2,
        5.394_196_021_424_751e3,
        2.121_379_430_158_659_7e4,
        3.930_789_580_009_271e4,
        2.872_908_573_572_194_3e4,
        5.226_495_278_852_545e3,
    ];
    const C: [f64; 8] = [
        1.423_437_110_749_683_5,
        4.630_337_846_156_545,
        5.769_497_221_460_691,
        3.647_848_324_763_204_5,
        1.270_458_252_452_368_4,
        2.417_807_251_774_506e-1,
        2.272_384_498_926_918_4e-2,
        7.745_450_142_783_414e-4,
    ];
    const D: [f64; 8] = [
        1.0,
        2.053_191_626_637_759,
        1.676_384_830_183_803_8,
        6.897_673_349_851e-1,
        1.481_039_764_274_800_8e-1,
        1.519_866_656_361_645_7e-2,
        5.475_938_084_995_345e-4,
        1.050_750_071_644_416_8e-9,
    ];
    const E: [f64; 8] = [
        6.657_904_643_501_103,
        5.463_784_911_164_114,
        1.784_826_539_917_291_3,
        2.965_605_718_285_048_7e-1,
        2.653_218_952_657_612_4e-2,
        1.242_660_947_388_078_4e-3,
        2.711_555_568_743_487_6e-5,
        2.010_334_399_292_288_1e-7,
    ];
    const F: [f64; 8] = [
        1.0,
        5.998_322_065_558_88e-1,
        1.369_298_809_227_358e-1,
        1.487_536_129_085_061_5e-2,
        7.868_691_311_456_133e-4,
        1.846_318_317_510_054_8e-5,
        1.421_511_758_316_446e-7,
        2.044_263_103_389_939_7e-15,
    ];
    /// Horner's rule, highest power first.
    fn poly(c: &[f64; 8], r: f64) -> f64 {
        c.iter().rev().fold(0.0, |acc, &k| acc * r + k)
    }
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    let q = p - 0.5;
    if q.abs() <= 0.425 {
        let r = 0.180625 - q * q;
        return q * poly(&A, r) / poly(&B, r);
    }
    let r = libm::sqrt(-libm::log(if q < 0.0 { p } else { 1.0 - p }));
    let val = if r <= 5.0 {
        poly(&C, r - 1.6) / poly(&D, r - 1.6)
    } else {
        poly(&E, r - 5.0) / poly(&F, r - 5.0)
    };
    if q < 0.0 {
        -val
    } else {
        val
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::random;

    fn space2(a: Distribution, b: Distribution) -> Space {
        let mut s = Space::new();
        s.insert("x".into(), a);
        s.insert("y".into(), b);
        s
    }

    fn complete(number: usize, params: Params, value: f64) -> Trial {
        Trial {
            number,
            params,
            value: Some(value),
            state: TrialState::Complete,
            intermediate: vec![],
        }
    }

    fn params(pairs: &[(&str, ParamValue)]) -> Params {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn assert_close(got: &[f64], want: &[f64], tol: f64) {
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - w).abs() <= tol * w.abs().max(1.0),
                "{got:?} vs {want:?}"
            );
        }
    }

    /// Runs a study of `n_trials` sequential trials and returns the best value.
    fn best_of(
        space: &Space,
        f: impl Fn(&Params) -> f64,
        seed: u64,
        n_trials: usize,
        tpe: bool,
    ) -> f64 {
        let mut trials = Vec::new();
        for t in 0..n_trials {
            let p = if tpe {
                propose(space, &trials, t, seed, Direction::Minimize).unwrap()
            } else {
                random::propose(space, t, seed).unwrap()
            };
            let v = f(&p);
            trials.push(complete(t, p, v));
        }
        trials
            .iter()
            .filter_map(|t| t.value)
            .fold(f64::INFINITY, f64::min)
    }

    fn float(p: &Params, name: &str) -> f64 {
        match p[name] {
            ParamValue::Float(v) => v,
            ref other => panic!("{name} = {other:?}"),
        }
    }

    // ---- The rules, one by one ----

    #[test]
    fn gamma_and_weights_are_optunas() {
        let got: Vec<usize> = [1, 9, 10, 11, 30, 70, 250, 251, 1000]
            .map(default_gamma)
            .to_vec();
        assert_eq!(got, [1, 1, 1, 2, 3, 7, 25, 25, 25]); // from Optuna 2.5
        assert_eq!(default_gamma(0), 0);
        assert!(default_weights(0).is_empty());
        assert_eq!(default_weights(24), vec![1.0; 24]);
        assert_eq!(default_weights(25), vec![1.0; 25]);
        let w26 = default_weights(26);
        assert_eq!(w26.len(), 26);
        assert_eq!(w26[0], 1.0 / 26.0);
        assert!(w26[1..].iter().all(|&w| w == 1.0));
        // np.linspace(1/30, 1, 5) then ones: Optuna 2.5's default_weights(30).
        let w30 = default_weights(30);
        assert_close(
            &w30[..5],
            &[
                1.0 / 30.0,
                0.275,
                0.5166666666666667,
                0.7583333333333333,
                1.0,
            ],
            1e-15,
        );
        assert_eq!(w30[4], 1.0, "the ramp ends exactly at 1");
        assert!(w30[5..].iter().all(|&w| w == 1.0));
    }

    #[test]
    fn startup_trials_are_the_random_samplers() {
        let space = space2(Distribution::float(-5.0, 5.0), Distribution::int(0, 9));
        let mut trials = Vec::new();
        for t in 0..10 {
            let p = propose(&space, &trials, t, 3, Direction::Minimize).unwrap();
            assert_eq!(p, random::propose(&space, t, 3).unwrap(), "trial {t}");
            trials.push(complete(t, p, t as f64));
        }
        let p = propose(&space, &trials, 10, 3, Direction::Minimize).unwrap();
        assert_ne!(
            p,
            random::propose(&space, 10, 3).unwrap(),
            "TPE from the 11th trial"
        );
    }

    #[test]
    fn startup_counts_completed_and_pruned_trials_only() {
        // Optuna 2.5: n = completed (with a value) + pruned trials; failed and running ones
        // (and a completed one without a value) do not count.
        let space = space2(Distribution::float(0.0, 1.0), Distribution::float(0.0, 1.0));
        let p = |i: usize| random::propose(&space, i, 0).unwrap();
        let mut trials: Vec<Trial> = (0..9).map(|i| complete(i, p(i), i as f64)).collect();
        let extra = |number, state, value| Trial {
            number,
            params: p(number),
            value,
            state,
            intermediate: vec![],
        };
        trials.push(extra(9, TrialState::Failed, None));
        trials.push(extra(10, TrialState::Running, None));
        trials.push(extra(11, TrialState::Complete, None));
        trials.push(extra(12, TrialState::Complete, Some(f64::NAN)));
        let random13 = random::propose(&space, 13, 0).unwrap();
        assert_eq!(
            propose(&space, &trials, 13, 0, Direction::Minimize).unwrap(),
            random13
        );
        trials.push(extra(12, TrialState::Pruned, None)); // a tenth finished trial
        assert_ne!(
            propose(&space, &trials, 13, 0, Direction::Minimize).unwrap(),
            random13
        );
    }

    fn pruned(number: usize, curve: &[(u64, f64)]) -> Trial {
        Trial {
            number,
            params: params(&[("x", ParamValue::Float(number as f64))]),
            value: None,
            state: TrialState::Pruned,
            intermediate: curve.to_vec(),
        }
    }

    fn split_numbers(
        cfg: &TpeConfig,
        trials: &[Trial],
        direction: Direction,
        liar: bool,
    ) -> (Vec<usize>, Vec<usize>) {
        let refs: Vec<&Trial> = trials.iter().collect();
        let s = cfg.split(&refs, direction, liar);
        let nums = |v: &[&Trial]| v.iter().map(|t| t.number).collect::<Vec<_>>();
        (nums(&s.below), nums(&s.above))
    }

    #[test]
    fn split_ranks_completed_then_pruned_by_depth_then_value() {
        let x = |i: usize| params(&[("x", ParamValue::Float(i as f64))]);
        let trials = vec![
            pruned(0, &[(0, 0.1), (3, 0.5)]),      // (−3, 0.5)
            complete(1, x(1), 9.0),                // (−∞, 9)
            pruned(2, &[(0, 0.0), (5, f64::NAN)]), // (−5, +∞)
            pruned(3, &[]),                        // (+∞, 0)
            complete(4, x(4), 7.0),                // (−∞, 7)
            pruned(5, &[(5, 0.3)]),                // (−5, 0.3)
            pruned(6, &[(3, 0.4)]),                // (−3, 0.4)
        ];
        // Order: 4, 1, 5, 2, 6, 0, 3. A gamma that takes k of them shows the ranking.
        let want = [4, 1, 5, 2, 6, 0, 3];
        let gammas: [GammaFn; 8] = [|_| 0, |_| 1, |_| 2, |_| 3, |_| 4, |_| 5, |_| 6, |_| 7];
        for (k, gamma) in gammas.into_iter().enumerate() {
            let cfg = TpeConfig {
                gamma,
                ..Default::default()
            };
            let (below, above) = split_numbers(&cfg, &trials, Direction::Minimize, false);
            let mut top: Vec<usize> = want[..k].to_vec();
            top.sort();
            assert_eq!(below, top, "k = {k}");
            assert_eq!(below.len() + above.len(), 7);
            assert!(above.windows(2).all(|w| w[0] < w[1]), "trial order");
        }
    }

    #[test]
    fn maximising_negates() {
        let x = |i: usize| params(&[("x", ParamValue::Float(i as f64))]);
        let trials: Vec<Trial> = (0..20)
            .map(|i| complete(i, x(i), ((i * 7) % 20) as f64))
            .collect();
        let cfg = TpeConfig::default(); // gamma(20) = 2
        let (below_min, _) = split_numbers(&cfg, &trials, Direction::Minimize, false);
        let (below_max, _) = split_numbers(&cfg, &trials, Direction::Maximize, false);
        // Values (7·i) mod 20: the smallest, 0 and 1, at i = 0 and 3; the largest, 19 and
        // 18, at i = 17 and 14.
        assert_eq!(below_min, [0, 3]);
        assert_eq!(below_max, [14, 17]);
        // Maximising f proposes exactly what minimising −f does.
        let space = space2(
            Distribution::float(0.0, 20.0),
            Distribution::log_float(1.0, 100.0),
        );
        let mut t_min = Vec::new();
        let mut t_max = Vec::new();
        for t in 0..30 {
            let p = propose(&space, &t_min, t, 5, Direction::Minimize).unwrap();
            assert_eq!(
                p,
                propose(&space, &t_max, t, 5, Direction::Maximize).unwrap()
            );
            let v = (float(&p, "x") - 3.0).powi(2) + float(&p, "y").ln();
            t_min.push(complete(t, p.clone(), v));
            t_max.push(complete(t, p, -v));
        }
    }

    #[test]
    fn pruned_trials_enter_the_split() {
        // Nine trials pruned at step 0 with better values and one that got to step 4 with a
        // worse one: gamma(10) = 1, and the deepest is the good one.
        let mut trials: Vec<Trial> = (0..9).map(|i| pruned(i, &[(0, 0.0)])).collect();
        trials.push(pruned(9, &[(0, 50.0), (4, 50.0)]));
        let (below, _) = split_numbers(&TpeConfig::default(), &trials, Direction::Minimize, false);
        assert_eq!(below, [9]);
        // A completed trial, however bad, ranks above every pruned one.
        let x = params(&[("x", ParamValue::Float(0.0))]);
        trials.push(complete(10, x, 1e9));
        let (below, _) = split_numbers(&TpeConfig::default(), &trials, Direction::Minimize, false);
        assert_eq!(below, [9, 10], "gamma(11) = 2");
    }

    #[test]
    fn parzen_estimator_matches_optuna() {
        // Expected values: optuna 2.5.0 `_ParzenEstimator._calculate(mus, low, high,
        // consider_prior, 1.0, consider_magic_clip, consider_endpoints, default_weights)`.
        type Case = (
            &'static [f64],
            f64,
            f64,
            bool,
            bool,
            bool,
            [&'static [f64]; 3],
        );
        let cases: [Case; 7] = [
            (&[], 0.0, 1.0, true, true, false, [&[1.0], &[0.5], &[1.0]]),
            (
                &[0.4],
                -1.0,
                1.0,
                true,
                true,
                false,
                [&[0.5, 0.5], &[0.0, 0.4], &[2.0, 0.6666666666666666]],
            ),
            (
                &[1.7, 0.1, 0.9, 0.9],
                0.0,
                2.0,
                true,
                true,
                false,
                [
                    &[0.2; 5],
                    &[0.1, 0.9, 0.9, 1.0, 1.7],
                    &[0.8, 0.8, 0.3333333333333333, 2.0, 0.7],
                ],
            ),
            (
                &[1.7, 0.1, 0.9, 0.9],
                0.0,
                2.0,
                true,
                true,
                true,
                [
                    &[0.2; 5],
                    &[0.1, 0.9, 0.9, 1.0, 1.7],
                    &[0.8, 0.8, 0.3333333333333333, 2.0, 0.7],
                ],
            ),
            (
                &[1.7, 0.1, 0.9, 0.9],
                0.0,
                2.0,
                false,
                true,
                false,
                [
                    &[0.25; 4],
                    &[0.1, 0.9, 0.9, 1.7],
                    &[0.8, 0.8, 0.7999999999999999, 0.7999999999999999],
                ],
            ),
            (
                &[1.7, 0.1, 0.9, 0.9],
                0.0,
                2.0,
                true,
                false,
                false,
                [
                    &[0.2; 5],
                    &[0.1, 0.9, 0.9, 1.0, 1.7],
                    &[0.8, 0.8, 0.09999999999999998, 2.0, 0.7],
                ],
            ),
            (
                &[0.4],
                -1.0,
                1.0,
                false,
                true,
                false,
                [&[1.0], &[0.4], &[1.4]],
            ),
        ];
        for (mus, low, high, prior, clip, endpoints, [w, m, s]) in cases {
            let cfg = TpeConfig {
                consider_prior: prior,
                consider_magic_clip: clip,
                consider_endpoints: endpoints,
                ..Default::default()
            };
            let pe = cfg.parzen(mus, low, high);
            assert_close(&pe.weights, w, 1e-15);
            assert_close(&pe.mus, m, 1e-15);
            assert_close(&pe.sigmas, s, 1e-15);
        }
    }

    #[test]
    fn parzen_weights_follow_age_through_the_sort() {
        // 30 observations (the ramp applies) in a scrambled order; Optuna 2.5's numbers.
        let mus: Vec<f64> = (0..30)
            .map(|i| ((i * 37) % 30) as f64 / 10.0 - 1.0)
            .collect();
        let pe = TpeConfig::default().parzen(&mus, -1.5, 2.5);
        let a = 0.034985422740524776;
        let mut want = vec![a; 31];
        want[0] = 0.0011661807580174927; // the oldest observation, -1.0, weight 1/30
        want[7] = 0.009620991253644314;
        want[14] = 0.018075801749271137;
        want[22] = 0.026530612244897955;
        assert_close(&pe.weights, &want, 1e-12);
        let mut sigmas = vec![0.125; 31];
        sigmas[15] = 4.0; // the prior, at 0.5, placed before the equal observation
        assert_close(&pe.sigmas, &sigmas, 1e-12);
        assert_eq!(pe.mus[15], 0.5);
        assert_eq!(pe.mus[16], 0.5);
    }

    #[test]
    fn mixture_density_matches_optuna() {
        // optuna 2.5.0 `TPESampler._gmm_log_pdf` on the estimators below.
        let cfg = TpeConfig::default();
        let pe = cfg.parzen(&[1.7, 0.1, 0.9, 0.9], 0.0, 2.0);
        let got = pe.log_pdf(&[0.0, 0.05, 0.5, 0.9, 1.3, 1.99], 0.0, 2.0, None);
        let want = [
            -1.2161537736431587,
            -1.172521842959891,
            -0.6323109878594155,
            -0.29913765193471953,
            -0.5892327769286714,
            -1.2823611217302642,
        ];
        assert_close(&got, &want, 1e-12);
        // A stepped domain: q = 0.5 on [0, 2], shifted to [−0.25, 2.25].
        let pe = cfg.parzen(&[1.5, 0.0, 1.0, 1.0], -0.25, 2.25);
        let got = pe.log_pdf(&[0.0, 0.5, 1.0, 1.5, 2.0], -0.25, 2.25, Some(0.5));
        let want = [
            -2.3462438388818705,
            -1.5891284468312172,
            -1.113358338139065,
            -1.3510711738488128,
            -2.182566725904523,
        ];
        assert_close(&got, &want, 1e-12);
    }

    #[test]
    fn categorical_estimator_matches_optuna() {
        let cfg = TpeConfig::default();
        let p = cfg.categorical_probabilities(3, &[0.0, 2.0, 2.0]);
        assert_close(&p, &[0.3333333333333333, 0.16666666666666666, 0.5], 1e-15);
        let above: Vec<f64> = (0..30).map(|i| ((i * 7) % 3) as f64).collect();
        let p = cfg.categorical_probabilities(3, &above);
        assert_close(
            &p,
            &[0.3201634877384196, 0.3359673024523161, 0.3438692098092643],
            1e-14,
        );
        // The prior is added even without `consider_prior` (Optuna 2.5).
        let no_prior = TpeConfig {
            consider_prior: false,
            ..cfg
        };
        assert_eq!(no_prior.categorical_probabilities(2, &[]), [0.5, 0.5]);
    }

    #[test]
    fn categorical_proposals_follow_the_good_choice() {
        let mut space = Space::new();
        space.insert(
            "opt".into(),
            Distribution::categorical(["sgd".into(), "adam".into(), "lamb".into()]),
        );
        let mut trials = Vec::new();
        let mut picks = [0usize; 3];
        for t in 0..60 {
            let p = propose(&space, &trials, t, 11, Direction::Minimize).unwrap();
            let ParamValue::Categorical(c) = p["opt"] else {
                panic!()
            };
            if t >= 10 {
                picks[c] += 1;
            }
            trials.push(complete(t, p, [1.0, 0.0, 2.0][c]));
        }
        assert!(picks[1] > picks[0] + picks[2], "{picks:?}");
    }

    #[test]
    fn numeric_domains_are_optunas() {
        let d = |dist: Distribution| NumericDomain::of(&dist.normalized().unwrap());
        let nd = |low, high, q, shift, log| NumericDomain {
            low,
            high,
            q,
            shift,
            log,
        };
        assert_eq!(
            d(Distribution::float(-1.0, 3.0)),
            nd(-1.0, 3.0, None, 0.0, false)
        );
        assert_eq!(
            d(Distribution::log_float(1e-3, 1e3)),
            nd(libm::log(1e-3), libm::log(1e3), None, 0.0, true)
        );
        // `_sample_discrete_uniform`: shifted to [0, r], then [−q/2, r + q/2].
        assert_eq!(
            d(Distribution::stepped_float(1.0, 2.0, 0.25)),
            nd(-0.125, 1.125, Some(0.25), 1.0, false)
        );
        // `_sample_int`: the discrete one with q = step (high first moved down to 9).
        assert_eq!(
            d(Distribution::stepped_int(1, 10, 4)),
            nd(-2.0, 10.0, Some(4.0), 1.0, false)
        );
        assert_eq!(
            d(Distribution::int(0, 3)),
            nd(-0.5, 3.5, Some(1.0), 0.0, false)
        );
        // `_sample_int_loguniform`: ln(low − 0.5), ln(high + 0.5), continuous.
        assert_eq!(
            d(Distribution::log_int(1, 64)),
            nd(libm::log(0.5), libm::log(64.5), None, 0.0, true)
        );
    }

    #[test]
    fn stepped_and_integer_proposals_stay_on_the_grid() {
        let mut space = Space::new();
        space.insert("w".into(), Distribution::stepped_int(16, 250, 16)); // high → 240
        space.insert("d".into(), Distribution::stepped_float(0.0, 0.5, 0.1));
        space.insert("n".into(), Distribution::log_int(1, 100));
        space.insert("lr".into(), Distribution::log_float(1e-5, 1e-1));
        let grid_d: Vec<u64> = (0..=5)
            .map(
                |k| match Distribution::stepped_float(0.0, 0.5, 0.1).step_value(k) {
                    ParamValue::Float(v) => v.to_bits(),
                    _ => unreachable!(),
                },
            )
            .collect();
        let mut trials = Vec::new();
        let mut seen_w = std::collections::BTreeSet::new();
        for t in 0..80 {
            let p = propose(&space, &trials, t, 2, Direction::Minimize).unwrap();
            let ParamValue::Int(w) = p["w"] else { panic!() };
            assert!((16..=240).contains(&w) && w % 16 == 0, "{w}");
            seen_w.insert(w);
            let d = float(&p, "d");
            assert!(grid_d.contains(&d.to_bits()), "{d}");
            let ParamValue::Int(n) = p["n"] else { panic!() };
            assert!((1..=100).contains(&n));
            let lr = float(&p, "lr");
            assert!((1e-5..=1e-1).contains(&lr));
            let v = ((w - 128) as f64 / 16.0).powi(2)
                + (d - 0.2).abs()
                + (n as f64).ln()
                + (lr.log10() + 3.0).powi(2);
            trials.push(complete(t, p, v));
        }
        // TPE homes in: the last 20 proposals are mostly near w = 128.
        let near: usize = trials[60..]
            .iter()
            .filter(|t| matches!(t.params["w"], ParamValue::Int(w) if (96..=160).contains(&w)))
            .count();
        assert!(near >= 12, "{near} of 20 near the optimum");
        assert!(seen_w.len() > 5);
    }

    #[test]
    fn candidates_come_from_l_and_the_best_ratio_wins() {
        let cfg = TpeConfig::default();
        let below = [0.5, 0.52, 0.48];
        let above: Vec<f64> = (0..30).map(|i| i as f64 / 30.0).collect();
        let l = cfg.parzen(&below, 0.0, 1.0);
        let g = cfg.parzen(&above, 0.0, 1.0);
        let mut rng = Prng::new(0, "t");
        let candidates = l.sample(0.0, 1.0, None, 24, &mut rng);
        assert_eq!(candidates.len(), 24);
        assert!(candidates.iter().all(|c| (0.0..1.0).contains(c)));
        let log_l = l.log_pdf(&candidates, 0.0, 1.0, None);
        let log_g = g.log_pdf(&candidates, 0.0, 1.0, None);
        let best = argmax_ratio(&log_l, &log_g);
        for i in 0..24 {
            assert!(log_l[best] - log_g[best] >= log_l[i] - log_g[i]);
        }
        // And sample_numerical makes the same choice from the same stream.
        let mut rng = Prng::new(0, "t");
        assert_eq!(
            cfg.sample_numerical(0.0, 1.0, &below, &above, None, &mut rng),
            candidates[best]
        );
        assert!((candidates[best] - 0.5).abs() < 0.2, "{}", candidates[best]);
        assert_eq!(
            argmax_ratio(&[0.0, 1.0, 1.0], &[0.0; 3]),
            1,
            "first of equal scores"
        );
        assert_eq!(argmax_ratio(&[f64::NAN, 1.0], &[0.0; 2]), 1);
    }

    #[test]
    fn normal_quantiles_match_scipy() {
        // scipy.special.ndtri at these points.
        let cases = [
            (1e-300, -37.0470962993612),
            (1e-20, -9.262340089798409),
            (1e-5, -4.264890793922825),
            (0.02, -2.053748910631823),
            (0.3, -0.5244005127080409),
            (0.5, 0.0),
            (0.7, 0.5244005127080407),
            (0.975, 1.959963984540054),
            (0.9999999999, 6.361340889697422),
        ];
        for (p, want) in cases {
            let got = ndtri(p);
            assert!(
                (got - want).abs() <= 1e-14 * want.abs().max(1.0),
                "ndtri({p}) = {got}, want {want}"
            );
        }
        // Round trip through erfc.
        for i in 1..1000 {
            let p = i as f64 / 1000.0;
            assert!((phi(ndtri(p)) - p).abs() < 1e-15, "{p}");
        }
        assert_eq!(ndtri(0.0), f64::NEG_INFINITY);
        assert_eq!(ndtri(1.0), f64::INFINITY);
    }

    #[test]
    fn truncated_normal_draws_have_the_right_law() {
        // Means of the standard normal truncated to [a, b]: (φ(a) − φ(b)) / (Φ(b) − Φ(a)).
        let pdf = |x: f64| (-0.5 * x * x).exp() / std::f64::consts::TAU.sqrt();
        let mut rng = Prng::new(1, "truncnorm");
        for (a, b) in [
            (-1.0, 1.0),
            (-0.5, 3.0),
            (0.0, 0.01),
            (-50.0, 0.2),
            (2.0, 30.0),
            (-8.0, -7.5),
        ] {
            let n = 20_000;
            let xs: Vec<f64> = (0..n)
                .map(|_| truncated_std_normal(a, b, rng.unit_f64()))
                .collect();
            assert!(xs.iter().all(|x| (a..=b).contains(x)), "[{a}, {b}]");
            let mean = xs.iter().sum::<f64>() / n as f64;
            let want = (pdf(a) - pdf(b)) / (phi(b) - phi(a));
            assert!(
                (mean - want).abs() < 0.02 * (b - a).min(3.0),
                "[{a}, {b}]: {mean} vs {want}"
            );
        }
        assert_eq!(truncated_std_normal(1.0, 1.0, 0.3), 1.0);
    }

    #[test]
    fn deterministic_and_independent_of_input_order() {
        let space = space2(
            Distribution::log_float(1e-3, 1e3),
            Distribution::float(-5.0, 5.0),
        );
        let mut trials = Vec::new();
        for t in 0..25 {
            let p = propose(&space, &trials, t, 9, Direction::Minimize).unwrap();
            let v = (float(&p, "x").log10() - 1.0).powi(2) + (float(&p, "y") - 0.5).powi(2);
            trials.push(complete(t, p, v));
        }
        let a = propose(&space, &trials, 25, 9, Direction::Minimize).unwrap();
        assert_eq!(
            a,
            propose(&space, &trials, 25, 9, Direction::Minimize).unwrap()
        );
        let mut shuffled = trials.clone();
        shuffled.reverse();
        assert_eq!(
            a,
            propose(&space, &shuffled, 25, 9, Direction::Minimize).unwrap()
        );
        assert_ne!(
            a,
            propose(&space, &trials, 25, 10, Direction::Minimize).unwrap()
        );
        assert_ne!(
            a,
            propose(&space, &trials, 26, 9, Direction::Minimize).unwrap()
        );
        // The trial being proposed is never its own observation.
        let mut with_self = trials.clone();
        with_self.push(complete(25, a.clone(), -1e9));
        assert_eq!(
            a,
            propose(&space, &with_self, 25, 9, Direction::Minimize).unwrap()
        );
        // A constant parameter is returned as is.
        let mut s3 = space.clone();
        s3.insert("c".into(), Distribution::int(4, 4));
        assert_eq!(
            propose(&s3, &trials, 25, 9, Direction::Minimize).unwrap()["c"],
            ParamValue::Int(4)
        );
    }

    #[test]
    fn trials_missing_a_parameter_count_but_add_no_observation() {
        let space = space2(Distribution::float(0.0, 1.0), Distribution::float(0.0, 1.0));
        let mut trials: Vec<Trial> = (0..12)
            .map(|i| complete(i, random::propose(&space, i, 4).unwrap(), i as f64))
            .collect();
        for t in &mut trials[..6] {
            t.params.shift_remove("y");
        }
        let p = propose(&space, &trials, 12, 4, Direction::Minimize).unwrap();
        assert!(matches!(p["y"], ParamValue::Float(_)));
        // Values out of the current domain (the space changed) are dropped the same way.
        let narrower = space2(Distribution::float(0.0, 0.5), Distribution::float(0.0, 1.0));
        let q = propose(&narrower, &trials, 12, 4, Direction::Minimize).unwrap();
        assert!(float(&q, "x") < 0.5);
    }

    #[test]
    fn batch_proposals_use_a_constant_liar() {
        let space = space2(
            Distribution::float(-5.0, 10.0),
            Distribution::float(0.0, 15.0),
        );
        let mut done = Vec::new();
        for t in 0..20 {
            let p = propose(&space, &done, t, 1, Direction::Minimize).unwrap();
            let v = branin(float(&p, "x"), float(&p, "y"));
            done.push(complete(t, p, v));
        }
        let batch = propose_batch(&space, &done, 20, 4, 1, Direction::Minimize).unwrap();
        assert_eq!(batch.len(), 4);
        // Proposal 0 is the sequential proposal; proposal j sees the j before as running.
        assert_eq!(
            batch[0],
            propose(&space, &done, 20, 1, Direction::Minimize).unwrap()
        );
        let liar = TpeConfig {
            constant_liar: true,
            ..Default::default()
        };
        let mut seen = done.clone();
        for (j, p) in batch.iter().enumerate() {
            assert_eq!(
                *p,
                liar.propose(&space, &seen, 20 + j, 1, Direction::Minimize)
                    .unwrap(),
                "{j}"
            );
            seen.push(Trial {
                number: 20 + j,
                params: p.clone(),
                value: None,
                state: TrialState::Running,
                intermediate: vec![],
            });
        }
        // The liars change the later proposals (they are in g(x)) ...
        let plain = TpeConfig::default();
        assert_ne!(
            batch[3],
            plain
                .propose(&space, &seen[..23], 23, 1, Direction::Minimize)
                .unwrap()
        );
        // ... and are always above, never counted in n: a running trial with no value ranks
        // behind every finished one.
        let refs: Vec<&Trial> = seen.iter().collect();
        let split = liar.split(&refs, Direction::Minimize, true);
        assert_eq!(split.n_finished, 20);
        assert_eq!(split.below.len(), 2);
        assert!(
            split
                .above
                .iter()
                .filter(|t| t.state == TrialState::Running)
                .count()
                == 4
        );
        // Pure.
        assert_eq!(
            batch,
            propose_batch(&space, &done, 20, 4, 1, Direction::Minimize).unwrap()
        );
        // In the start-up phase a batch is random proposals.
        let early = propose_batch(&space, &done[..3], 3, 5, 1, Direction::Minimize).unwrap();
        for (j, p) in early.iter().enumerate() {
            assert_eq!(*p, random::propose(&space, 3 + j, 1).unwrap());
        }
    }

    #[test]
    fn pinned_proposal() {
        // The bits of one proposal after the start-up: if they change, stored studies propose
        // differently (or a platform computes differently): change them deliberately.
        let space = space2(
            Distribution::float(-5.0, 10.0),
            Distribution::float(0.0, 15.0),
        );
        let mut trials = Vec::new();
        for t in 0..15 {
            let p = propose(&space, &trials, t, 1, Direction::Minimize).unwrap();
            let v = branin(float(&p, "x"), float(&p, "y"));
            trials.push(complete(t, p, v));
        }
        let p = propose(&space, &trials, 15, 1, Direction::Minimize).unwrap();
        // x ≈ 0.0796, y ≈ 2.403.
        assert_eq!(float(&p, "x").to_bits(), 0x3fb4_609b_3747_bd80);
        assert_eq!(float(&p, "y").to_bits(), 0x4003_39cb_21a3_db00);
    }

    #[test]
    fn a_thousand_trials() {
        // The size of the performance target (< 5 ms a proposal in release: measured by
        // `cargo bench --bench search`); here only correctness.
        let (space, trials) = thousand_trials();
        let p = propose(&space, &trials, 1000, 0, Direction::Minimize).unwrap();
        for (name, v) in &p {
            assert!(space[name].internal(v).is_some(), "{name} = {v:?}");
        }
        // Close to the optimum (lr 1e-3, dropout 0.2, layers 4) where most good trials are.
        assert!((float(&p, "lr").log10() + 3.0).abs() < 1.0, "{p:?}");
        assert_eq!(
            p,
            propose(&space, &trials, 1000, 0, Direction::Minimize).unwrap()
        );
    }

    fn thousand_trials() -> (Space, Vec<Trial>) {
        let mut space = Space::new();
        space.insert("lr".into(), Distribution::log_float(1e-5, 1e-1));
        space.insert("dropout".into(), Distribution::float(0.0, 0.5));
        space.insert("layers".into(), Distribution::int(1, 8));
        let trials = (0..1000)
            .map(|t| {
                let p = random::propose(&space, t, 77).unwrap();
                let ParamValue::Int(layers) = p["layers"] else {
                    panic!()
                };
                let v = (float(&p, "lr").log10() + 3.0).powi(2)
                    + (float(&p, "dropout") - 0.2).powi(2)
                    + ((layers - 4) as f64).powi(2) / 10.0;
                complete(t, p, v)
            })
            .collect();
        (space, trials)
    }

    // ---- Parity with Optuna ----

    fn branin(x1: f64, x2: f64) -> f64 {
        let pi = std::f64::consts::PI;
        let (a, b, c, r, s, t) = (
            1.0,
            5.1 / (4.0 * pi * pi),
            5.0 / pi,
            6.0,
            10.0,
            1.0 / (8.0 * pi),
        );
        a * (x2 - b * x1 * x1 + c * x1 - r).powi(2) + s * (1.0 - t) * x1.cos() + s
    }

    /// numpy's `percentile` (linear) of sorted values.
    fn percentile(sorted: &[f64], p: f64) -> f64 {
        let rank = p / 100.0 * (sorted.len() - 1) as f64;
        let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
        sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
    }

    #[test]
    fn parity_with_optuna_fixture() {
        let fixture: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/optuna_tpe_parity.json"))
                .unwrap();
        assert_eq!(fixture["optuna"], "2.5.0");
        let n_trials = fixture["n_trials"].as_u64().unwrap() as usize;
        let seeds = fixture["seeds"].as_array().unwrap().len() as u64;
        let quad = space2(
            Distribution::log_float(1e-3, 1e3),
            Distribution::float(-5.0, 5.0),
        );
        let bran = space2(
            Distribution::float(-5.0, 10.0),
            Distribution::float(0.0, 15.0),
        );
        let f_quad =
            |p: &Params| (float(p, "x").log10() - 1.0).powi(2) + (float(p, "y") - 0.5).powi(2);
        let f_bran = |p: &Params| branin(float(p, "x"), float(p, "y"));
        // (name, space, objective, its global minimum)
        type Case<'a> = (&'a str, &'a Space, &'a dyn Fn(&Params) -> f64, f64);
        let cases: [Case; 2] = [
            ("log_quadratic", &quad, &f_quad, 0.0),
            ("branin", &bran, &f_bran, 0.397887357729738),
        ];
        for (name, space, f, f_min) in cases {
            let median_best = |tpe: bool| {
                let mut bests: Vec<f64> = (0..seeds)
                    .map(|seed| best_of(space, f, seed, n_trials, tpe))
                    .collect();
                bests.sort_by(f64::total_cmp);
                percentile(&bests, 50.0)
            };
            let rst_tpe = median_best(true);
            let rst_random = median_best(false);
            let optuna = &fixture["results"][name]["tpe"];
            let (q1, median, q3) = (
                optuna["q1"].as_f64().unwrap(),
                optuna["median"].as_f64().unwrap(),
                optuna["q3"].as_f64().unwrap(),
            );
            let optuna_random = fixture["results"][name]["random"]["median"]
                .as_f64()
                .unwrap();
            eprintln!(
                "{name}: Optuna TPE median {median:.4} IQR [{q1:.4}, {q3:.4}]; rst TPE median \
                 {rst_tpe:.4}; random median: rst {rst_random:.4}, Optuna {optuna_random:.4}"
            );
            // The band: Optuna's IQR widened by half its width on each side. If rst's TPE has
            // Optuna's law, the median of its 20 runs has a standard error of about 0.2 IQR,
            // and Optuna's quartiles are estimates from 20 runs too (with 100 seeds Optuna's
            // Branin median is 0.66, not this fixture's 0.55: half the fixture's IQR). Half an
            // IQR leaves room for that noise, while random search's median (0.13 to 0.20, and
            // 1.14, in the fixture's numbers and rst's) falls outside the band on both.
            let widen = 0.5 * (q3 - q1);
            assert!(
                (q1 - widen..=q3 + widen).contains(&rst_tpe),
                "{name}: rst TPE median {rst_tpe} outside [{}, {}]",
                q1 - widen,
                q3 + widen
            );
            // TPE clearly beats random: at most half of random's median regret (distance to the
            // global minimum: Branin's 0.398 would blur a ratio of raw values), rst's random
            // and Optuna's. Optuna's own TPE has a quarter (log quadratic) and a fifth (Branin)
            // of its random regret.
            let regret = |v: f64| v - f_min;
            for random in [rst_random, optuna_random] {
                assert!(
                    regret(rst_tpe) < 0.5 * regret(random),
                    "{name}: TPE {rst_tpe} vs random {random}"
                );
            }
        }
    }
}
