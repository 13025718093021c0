//! Optuna 2.5's `MedianPruner` (a `PercentilePruner` at 50), as a pure function.
//!
//! The rules of `optuna/pruners/_percentile.py` (2.5.0), in order:
//! 1. only `Complete` trials count, for the start-up and for the percentile (pruned,
//!    failed and running trials are ignored); with none, or fewer than `n_startup_trials`,
//!    nothing is pruned;
//! 2. the check is at `step`, the step just reported (Optuna's `trial.last_step`); a trial
//!    that reported nothing, or a step before `n_warmup_steps`, is not pruned;
//! 3. only the first report in each interval of `interval_steps` (counted from the warm-up)
//!    is checked (`_is_first_in_interval_step`);
//! 4. the trial's score is its **best** intermediate value so far (`nanmin`, or `nanmax`
//!    when maximising), not its value at `step`; if all its values are NaN it is pruned;
//! 5. the reference is the percentile (numpy's linear interpolation, NaNs ignored:
//!    `nanpercentile`) of the completed trials' values at exactly `step`, the percentile
//!    mirrored (`100 − p`) when maximising; if no completed trial reported `step`, or all
//!    of them reported NaN, nothing is pruned;
//! 6. prune when the score is worse than the reference (strictly).
//!
//! Optuna 3.x and 4.x keep these rules and add `n_min_trials` (how many completed trials
//! must have reported `step`; its default, 1, is rule 5 here).
use super::{Direction, Trial, TrialState};

/// Optuna's `PercentilePruner`: keep the best `percentile` of trials at each step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PercentilePruner {
    /// In `[0, 100]`: 50 is the median; 25 keeps the best quarter.
    pub percentile: f64,
    pub n_startup_trials: usize,
    pub n_warmup_steps: u64,
    /// At least 1.
    pub interval_steps: u64,
}

/// Optuna's `MedianPruner()` defaults: `n_startup_trials=5, n_warmup_steps=0,
/// interval_steps=1`.
pub const MEDIAN_PRUNER: PercentilePruner = PercentilePruner {
    percentile: 50.0,
    n_startup_trials: 5,
    n_warmup_steps: 0,
    interval_steps: 1,
};

/// [`MEDIAN_PRUNER`]'s decision for a running trial that has reported `current_intermediate`
/// and has just reported `step`. `completed` is the study's other trials (only the
/// `Complete` ones are read).
pub fn should_prune(
    completed: &[Trial],
    current_intermediate: &[(u64, f64)],
    step: u64,
    direction: Direction,
) -> bool {
    MEDIAN_PRUNER.should_prune(completed, current_intermediate, step, direction)
}

impl PercentilePruner {
    /// See the module doc. Reports of the current trial after `step` are ignored (the
    /// check is as of `step`); a step reported twice keeps its first value, as in Optuna.
    pub fn should_prune(
        &self,
        trials: &[Trial],
        current_intermediate: &[(u64, f64)],
        step: u64,
        direction: Direction,
    ) -> bool {
        assert!(
            (0.0..=100.0).contains(&self.percentile),
            "percentile {}",
            self.percentile
        );
        assert!(self.interval_steps >= 1, "interval_steps 0");
        let complete: Vec<&Trial> = trials
            .iter()
            .filter(|t| t.state == TrialState::Complete)
            .collect();
        if complete.is_empty() || complete.len() < self.n_startup_trials {
            return false;
        }
        // The current trial's reports up to `step`, a repeated step keeping its first value.
        let mut reports: Vec<(u64, f64)> = Vec::new();
        for &(s, v) in current_intermediate {
            if s <= step && !reports.iter().any(|(r, _)| *r == s) {
                reports.push((s, v));
            }
        }
        if !reports.iter().any(|(s, _)| *s == step) {
            return false; // Optuna checks at the last reported step; `step` was not reported
        }
        if step < self.n_warmup_steps {
            return false;
        }
        if !self.is_first_in_interval(step, &reports) {
            return false;
        }
        let best = nan_best(reports.iter().map(|(_, v)| *v), direction);
        let Some(best) = best else {
            return true; // every report NaN: Optuna prunes
        };
        let Some(reference) = self.reference(&complete, step, direction) else {
            return false;
        };
        Self::prunes(best, reference, direction)
    }

    /// The decision of [`should_prune`](Self::should_prune) made ahead of time, for a trial
    /// that reports every step from `first_step` to `last_step` (an epoch each) with a
    /// number: element `i` is the reference at step `first_step + i`, or `None` where the
    /// pruner does not check (too few completed trials, warm-up, not first in its interval,
    /// no completed trial at that step). Such a trial is pruned at the first step whose
    /// best value so far is worse (strictly) than the reference ([`Self::prunes`]).
    ///
    /// This is how a study prunes deterministically: the references come from the trials
    /// completed before the batch, and a running trial compares itself with them alone.
    pub fn thresholds(
        &self,
        trials: &[Trial],
        first_step: u64,
        last_step: u64,
        direction: Direction,
    ) -> Vec<Option<f64>> {
        let complete: Vec<&Trial> = trials
            .iter()
            .filter(|t| t.state == TrialState::Complete)
            .collect();
        (first_step..=last_step)
            .map(|step| {
                if complete.is_empty() || complete.len() < self.n_startup_trials {
                    return None;
                }
                let reports: Vec<(u64, f64)> = (first_step..=step).map(|s| (s, 0.0)).collect();
                if step < self.n_warmup_steps || !self.is_first_in_interval(step, &reports) {
                    return None;
                }
                self.reference(&complete, step, direction)
            })
            .collect()
    }

    /// Rule 5: the percentile of the completed trials' values at `step` (mirrored when
    /// maximising); `None` when none of them has a number there.
    fn reference(&self, complete: &[&Trial], step: u64, direction: Direction) -> Option<f64> {
        let at_step: Vec<f64> = complete
            .iter()
            .filter_map(|t| t.intermediate_at(step))
            .collect();
        let percentile = match direction {
            Direction::Minimize => self.percentile,
            Direction::Maximize => 100.0 - self.percentile,
        };
        nan_percentile(&at_step, percentile)
    }

    /// Whether a best-so-far value `best` is worse than a [`thresholds`](Self::thresholds)
    /// reference (rule 6).
    pub fn prunes(best: f64, reference: f64, direction: Direction) -> bool {
        match direction {
            Direction::Minimize => best > reference,
            Direction::Maximize => best < reference,
        }
    }

    /// Optuna's `_is_first_in_interval_step`: no earlier report since the start of the
    /// interval `step` falls in.
    fn is_first_in_interval(&self, step: u64, reports: &[(u64, f64)]) -> bool {
        let (warmup, interval) = (self.n_warmup_steps, self.interval_steps);
        let interval_start = (step - warmup) / interval * interval + warmup;
        let second_last = reports.iter().map(|(s, _)| *s).filter(|s| *s != step).max();
        second_last.is_none_or(|s| s < interval_start)
    }
}

/// `nanmin`/`nanmax`: `None` when every value is NaN (or there are none).
fn nan_best(values: impl Iterator<Item = f64>, direction: Direction) -> Option<f64> {
    values
        .filter(|v| !v.is_nan())
        .reduce(|a, b| match direction {
            Direction::Minimize => a.min(b),
            Direction::Maximize => a.max(b),
        })
}

/// numpy's `nanpercentile` with the default linear interpolation: `None` when no value is
/// a number.
fn nan_percentile(values: &[f64], percentile: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = percentile / 100.0 * (v.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    let t = rank - lo as f64;
    Some(if lo == hi {
        v[lo]
    } else {
        v[lo] + (v[hi] - v[lo]) * t
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::Params;

    fn trial(number: usize, state: TrialState, curve: &[(u64, f64)]) -> Trial {
        Trial {
            number,
            params: Params::new(),
            value: curve.last().map(|c| c.1),
            state,
            intermediate: curve.to_vec(),
        }
    }

    /// Five completed trials whose values at step 1 are 1, 2, 3, 4, 5 (median 3).
    fn five() -> Vec<Trial> {
        (0..5)
            .map(|i| trial(i, TrialState::Complete, &[(0, 10.0), (1, 1.0 + i as f64)]))
            .collect()
    }

    #[test]
    fn prunes_above_the_median_when_minimising() {
        let t = five();
        assert!(should_prune(
            &t,
            &[(0, 10.0), (1, 3.5)],
            1,
            Direction::Minimize
        ));
        assert!(
            !should_prune(&t, &[(0, 10.0), (1, 3.0)], 1, Direction::Minimize),
            "ties stay"
        );
        assert!(!should_prune(
            &t,
            &[(0, 10.0), (1, 2.0)],
            1,
            Direction::Minimize
        ));
    }

    #[test]
    fn maximising_mirrors() {
        let t = five();
        assert!(should_prune(&t, &[(1, 2.5)], 1, Direction::Maximize));
        assert!(!should_prune(&t, &[(1, 3.5)], 1, Direction::Maximize));
        // An uneven percentile mirrors to 100 − p: the 25th best when maximising is the
        // 75th percentile of the values.
        let p = PercentilePruner {
            percentile: 25.0,
            ..MEDIAN_PRUNER
        };
        assert!(p.should_prune(&t, &[(1, 3.9)], 1, Direction::Maximize)); // p75 = 4
        assert!(!p.should_prune(&t, &[(1, 4.1)], 1, Direction::Maximize));
        assert!(p.should_prune(&t, &[(1, 2.1)], 1, Direction::Minimize)); // p25 = 2
    }

    #[test]
    fn the_best_value_so_far_is_compared_not_the_current_one() {
        // Optuna 2.5 compares the trial's best intermediate value over all its steps.
        let t = five();
        assert!(!should_prune(
            &t,
            &[(0, 0.5), (1, 100.0)],
            1,
            Direction::Minimize
        ));
    }

    #[test]
    fn only_completed_trials_count_for_startup_and_median() {
        let mut t = five();
        t.pop();
        assert!(
            !should_prune(&t, &[(1, 100.0)], 1, Direction::Minimize),
            "4 < 5 startup"
        );
        t.push(trial(9, TrialState::Pruned, &[(1, 0.0)]));
        t.push(trial(10, TrialState::Running, &[(1, 0.0)]));
        t.push(trial(11, TrialState::Failed, &[(1, 0.0)]));
        assert!(!should_prune(&t, &[(1, 100.0)], 1, Direction::Minimize));
        t.push(trial(4, TrialState::Complete, &[(1, 5.0)]));
        assert!(should_prune(&t, &[(1, 3.5)], 1, Direction::Minimize));
        assert!(!should_prune(&[], &[(1, 3.5)], 1, Direction::Minimize));
    }

    #[test]
    fn even_count_interpolates_the_median() {
        let mut t = five();
        t.push(trial(5, TrialState::Complete, &[(1, 6.0)]));
        // Median of 1..=6 is 3.5.
        assert!(should_prune(&t, &[(1, 3.6)], 1, Direction::Minimize));
        assert!(!should_prune(&t, &[(1, 3.5)], 1, Direction::Minimize));
    }

    #[test]
    fn nan_handling() {
        let mut t = five();
        // All of the trial's reports NaN: pruned.
        assert!(should_prune(&t, &[(1, f64::NAN)], 1, Direction::Minimize));
        // One number among NaNs is its best.
        assert!(!should_prune(
            &t,
            &[(0, 1.0), (1, f64::NAN)],
            1,
            Direction::Minimize
        ));
        // NaNs of completed trials are left out of the median: 1, 2, 3, 4, 5 still.
        t.push(trial(5, TrialState::Complete, &[(1, f64::NAN)]));
        assert!(should_prune(&t, &[(1, 3.5)], 1, Direction::Minimize));
        // No completed trial has a number at the step: not pruned.
        let nan_only: Vec<_> = (0..5)
            .map(|i| trial(i, TrialState::Complete, &[(1, f64::NAN)]))
            .collect();
        assert!(!should_prune(
            &nan_only,
            &[(1, 1e9)],
            1,
            Direction::Minimize
        ));
    }

    /// Thresholds computed ahead agree with `should_prune` step by step, for every pruner
    /// setting, on curves that report every step.
    #[test]
    fn thresholds_agree_with_should_prune() {
        let mut rng = crate::prng::Prng::new(7, "prune-thresholds");
        let curve = |rng: &mut crate::prng::Prng| -> Vec<(u64, f64)> {
            (1..=6).map(|s| (s, rng.unit_f64())).collect()
        };
        for (warmup, interval, startup) in [(0, 1, 5), (2, 1, 3), (0, 2, 1), (1, 3, 2), (0, 1, 9)] {
            let pruner = PercentilePruner {
                percentile: 50.0,
                n_startup_trials: startup,
                n_warmup_steps: warmup,
                interval_steps: interval,
            };
            for round in 0..20 {
                let n = 1 + round % 7;
                let done: Vec<Trial> = (0..n)
                    .map(|i| {
                        let mut c = curve(&mut rng);
                        c.truncate(3 + i % 4); // some stopped early
                        trial(i, TrialState::Complete, &c)
                    })
                    .collect();
                for direction in [Direction::Minimize, Direction::Maximize] {
                    let th = pruner.thresholds(&done, 1, 6, direction);
                    let mine = curve(&mut rng);
                    for step in 1..=6u64 {
                        let reports = &mine[..step as usize];
                        let best = nan_best(reports.iter().map(|r| r.1), direction).unwrap();
                        let ahead = th[step as usize - 1]
                            .is_some_and(|r| PercentilePruner::prunes(best, r, direction));
                        assert_eq!(
                            ahead,
                            pruner.should_prune(&done, reports, step, direction),
                            "{pruner:?} step {step} {direction:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_step_no_completed_trial_reached_is_not_pruned() {
        let t = five();
        assert!(!should_prune(&t, &[(7, 1e9)], 7, Direction::Minimize));
    }

    #[test]
    fn unreported_step_and_warmup_and_interval() {
        let t = five();
        assert!(!should_prune(&t, &[], 1, Direction::Minimize));
        assert!(
            !should_prune(&t, &[(0, 1e9)], 1, Direction::Minimize),
            "step 1 not reported"
        );
        let warm = PercentilePruner {
            n_warmup_steps: 2,
            ..MEDIAN_PRUNER
        };
        assert!(!warm.should_prune(&t, &[(1, 1e9)], 1, Direction::Minimize));
        // Interval 2 after warm-up 0: checks at the first report in [0, 2), [2, 4), ...
        let every2 = PercentilePruner {
            interval_steps: 2,
            ..MEDIAN_PRUNER
        };
        let t: Vec<_> = (0..5)
            .map(|i| {
                trial(
                    i,
                    TrialState::Complete,
                    &[(0, 1.0), (1, 1.0), (2, 1.0), (3, 1.0)],
                )
            })
            .collect();
        assert!(every2.should_prune(&t, &[(0, 9.0)], 0, Direction::Minimize));
        assert!(!every2.should_prune(&t, &[(0, 9.0), (1, 9.0)], 1, Direction::Minimize));
        assert!(every2.should_prune(&t, &[(0, 9.0), (1, 9.0), (2, 9.0)], 2, Direction::Minimize));
        // A skipped report: step 3 is the first one reported in [2, 4).
        assert!(every2.should_prune(&t, &[(0, 9.0), (1, 9.0), (3, 9.0)], 3, Direction::Minimize));
        // Later reports than `step` are ignored.
        let t = five();
        assert!(should_prune(
            &t,
            &[(1, 3.5), (2, 0.0)],
            1,
            Direction::Minimize
        ));
    }
}
