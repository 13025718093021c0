//! Hyper-parameter search: the samplers and the pruner behind `kind: search`.
//!
//! Everything here is a pure function of its inputs (the space, the trials so far, a trial
//! number and a seed): no clock, no global generator, no I/O. The engine stores the trials
//! and calls these; the same study replayed gives the same proposals on any machine.
//!
//! - [`tpe`]: the Tree-structured Parzen Estimator with Optuna 2.5.0's semantics (the
//!   version the RegSL authors pinned), univariate, with a constant-liar batch mode;
//! - [`random`]: independent uniform sampling (also TPE's first `n_startup_trials`);
//! - [`grid`]: every combination of a discrete space, in a fixed order;
//! - [`prune`]: Optuna's `MedianPruner` (and the `PercentilePruner` it is made of).
//!
//! Randomness comes from [`crate::prng::Prng`] (ChaCha8, specified bit for bit) with one
//! stream per (sampler, trial number, parameter name), so a parameter's proposal does not
//! depend on the order of the space or on the other parameters. The floating-point special
//! functions (`exp`, `ln`, `erf`, `erfc`) come from the pure-Rust `libm` crate rather than
//! the platform's C library, whose last bits differ between systems; the rest is IEEE-754
//! arithmetic (`+ - * / sqrt`, correctly rounded everywhere, and never fused into FMAs by
//! rustc), so a proposal is bit-reproducible across machines.
//!
//! Parameter values have two forms: the external [`ParamValue`] (a float, an integer, or the
//! index of a categorical choice) and an internal `f64` that the samplers compute with (the
//! number itself, or the choice index), as Optuna's `to_internal_repr` does.

pub mod grid;
pub mod prune;
pub mod random;
pub mod tpe;

use indexmap::IndexMap;

/// Integer bounds must lie within ±2^53, where every integer is exactly an `f64` (TPE, like
/// Optuna, computes with integers as floats).
pub const MAX_EXACT_INT: i64 = 1 << 53;

/// The domain of one parameter.
///
/// Bounds are inclusive except a continuous float's `high`, which is excluded as in Optuna
/// 2.5's `UniformDistribution`/`LogUniformDistribution` (a stepped float includes `high`).
/// `low == high` is allowed (Optuna allows it too): the parameter is a constant, and every
/// sampler returns `low` without consuming randomness (Optuna's `single()` short-cut).
#[derive(Debug, Clone, PartialEq)]
pub enum Distribution {
    /// A float in `[low, high)`; log-uniform with `log`; on the grid `low + k·step` (both
    /// ends included) with `step`. `log` and `step` cannot be combined (Optuna forbids it).
    Float {
        low: f64,
        high: f64,
        log: bool,
        step: Option<f64>,
    },
    /// An integer in `low..=high` on the grid `low + k·step`; with `log`, sampled uniformly in
    /// `ln` space between `low − 0.5` and `high + 0.5` and rounded, which needs `low ≥ 1`
    /// and `step == 1` (Optuna's `IntLogUniformDistribution`).
    Int {
        low: i64,
        high: i64,
        log: bool,
        step: i64,
    },
    /// One of `choices`, proposed as its index.
    Categorical { choices: Vec<serde_json::Value> },
}

/// What is wrong with a [`Distribution`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DistributionError {
    #[error("the bounds must be finite numbers with a finite width, got low {low}, high {high}")]
    NonFinite { low: f64, high: f64 },
    #[error("low ({low}) is above high ({high})")]
    LowAboveHigh { low: f64, high: f64 },
    #[error("a log-scaled range needs low > 0 (low ≥ 1 for an integer), got low {low}")]
    LogLowNotPositive { low: f64 },
    #[error("the step must be a positive finite number, got {step}")]
    StepNotPositive { step: f64 },
    #[error("log and step cannot be combined (a log-scaled integer has step 1)")]
    LogWithStep,
    #[error("a categorical parameter needs at least one choice")]
    EmptyChoices,
    #[error("integer bound {value} is beyond ±2^53, where integers stop being exact floats")]
    IntTooLarge { value: i64 },
    #[error("the step {step} cuts the range into more than 2^53 steps")]
    TooManySteps { step: f64 },
}

/// An error of a sampler, naming the parameter.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SearchError {
    #[error("search parameter `{name}`: {source}")]
    Distribution {
        name: String,
        #[source]
        source: DistributionError,
    },
    #[error("grid search: parameter `{name}` is a continuous float; give it a step")]
    GridContinuous { name: String },
    #[error("grid search: the grid has more points than fit in a usize")]
    GridTooLarge,
    #[error("grid search: point {index} is past the grid's {size} points")]
    GridIndexOutOfRange { index: usize, size: usize },
}

/// Parameter name → domain, in a fixed order (the order of the search spec): samplers visit
/// parameters in this order and the grid enumerates it with the last parameter fastest.
pub type Space = IndexMap<String, Distribution>;

/// One trial's parameter values, by name.
pub type Params = IndexMap<String, ParamValue>;

/// A proposed or observed value of one parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParamValue {
    Float(f64),
    Int(i64),
    /// The index into [`Distribution::Categorical`]'s `choices`
    /// ([`Distribution::to_json`] gives the choice itself).
    Categorical(usize),
}

/// Where a trial stands. Samplers read `Complete` and `Pruned` trials (as Optuna 2.5 does),
/// TPE's constant liar also `Running` ones; `Failed` trials are ignored everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrialState {
    Complete,
    Pruned,
    Failed,
    Running,
}

/// One trial of a study.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    /// Its number in the study, from 0, in the order trials were started.
    pub number: usize,
    pub params: Params,
    /// The objective of a `Complete` trial. A `Complete` trial without a value, or with NaN,
    /// is ignored like a failed one (Optuna 2.5 marks a NaN objective as failed).
    pub value: Option<f64>,
    pub state: TrialState,
    /// `(step, value)` as reported during the trial (a step is an epoch, say). A step reported
    /// twice keeps its first value, as Optuna 2.5's `Trial.report` ignores a repeat.
    pub intermediate: Vec<(u64, f64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Minimize,
    Maximize,
}

impl Direction {
    /// The factor that turns an objective into a loss to minimise (Optuna's `sign`).
    pub fn sign(self) -> f64 {
        match self {
            Direction::Minimize => 1.0,
            Direction::Maximize => -1.0,
        }
    }
}

impl Trial {
    /// The intermediate value reported at `step` (the first, if reported twice).
    pub fn intermediate_at(&self, step: u64) -> Option<f64> {
        self.intermediate
            .iter()
            .find(|(s, _)| *s == step)
            .map(|(_, v)| *v)
    }

    /// The last reported step and its value (Optuna's `max(intermediate_values.items())`).
    pub fn last_intermediate(&self) -> Option<(u64, f64)> {
        let last = self.intermediate.iter().map(|(s, _)| *s).max()?;
        Some((
            last,
            self.intermediate_at(last)
                .expect("the max step is reported"),
        ))
    }
}

impl Distribution {
    pub fn float(low: f64, high: f64) -> Self {
        Distribution::Float {
            low,
            high,
            log: false,
            step: None,
        }
    }
    pub fn log_float(low: f64, high: f64) -> Self {
        Distribution::Float {
            low,
            high,
            log: true,
            step: None,
        }
    }
    pub fn stepped_float(low: f64, high: f64, step: f64) -> Self {
        Distribution::Float {
            low,
            high,
            log: false,
            step: Some(step),
        }
    }
    pub fn int(low: i64, high: i64) -> Self {
        Distribution::Int {
            low,
            high,
            log: false,
            step: 1,
        }
    }
    pub fn stepped_int(low: i64, high: i64, step: i64) -> Self {
        Distribution::Int {
            low,
            high,
            log: false,
            step,
        }
    }
    pub fn log_int(low: i64, high: i64) -> Self {
        Distribution::Int {
            low,
            high,
            log: true,
            step: 1,
        }
    }
    pub fn categorical(choices: impl IntoIterator<Item = serde_json::Value>) -> Self {
        Distribution::Categorical {
            choices: choices.into_iter().collect(),
        }
    }

    /// Checks the distribution (Optuna 2.5's constructor checks, plus finiteness and the
    /// limits of exact float arithmetic). `low == high` is valid: a constant. A range that is
    /// not a multiple of the step is valid too: [`Self::normalized`] moves `high` down.
    pub fn validate(&self) -> Result<(), DistributionError> {
        match *self {
            Distribution::Float {
                low,
                high,
                log,
                step,
            } => {
                if !low.is_finite() || !high.is_finite() || !(high - low).is_finite() {
                    return Err(DistributionError::NonFinite { low, high });
                }
                if low > high {
                    return Err(DistributionError::LowAboveHigh { low, high });
                }
                if log && low <= 0.0 {
                    return Err(DistributionError::LogLowNotPositive { low });
                }
                if let Some(step) = step {
                    if !(step > 0.0 && step.is_finite()) {
                        return Err(DistributionError::StepNotPositive { step });
                    }
                    if log {
                        return Err(DistributionError::LogWithStep);
                    }
                    if (high - low) / step > MAX_EXACT_INT as f64 {
                        return Err(DistributionError::TooManySteps { step });
                    }
                }
                Ok(())
            }
            Distribution::Int {
                low,
                high,
                log,
                step,
            } => {
                for value in [low, high] {
                    if !(-MAX_EXACT_INT..=MAX_EXACT_INT).contains(&value) {
                        return Err(DistributionError::IntTooLarge { value });
                    }
                }
                if low > high {
                    return Err(DistributionError::LowAboveHigh {
                        low: low as f64,
                        high: high as f64,
                    });
                }
                if step <= 0 {
                    return Err(DistributionError::StepNotPositive { step: step as f64 });
                }
                if log && low <= 0 {
                    return Err(DistributionError::LogLowNotPositive { low: low as f64 });
                }
                if log && step != 1 {
                    return Err(DistributionError::LogWithStep);
                }
                Ok(())
            }
            Distribution::Categorical { ref choices } => {
                if choices.is_empty() {
                    return Err(DistributionError::EmptyChoices);
                }
                Ok(())
            }
        }
    }

    /// The validated distribution with `high` moved down onto the step grid when
    /// `high − low` is not a multiple of the step, as Optuna 2.5 does (with a warning there):
    /// `[0, 1]` step 0.3 becomes `[0, 0.9]`, integers `[1, 10]` step 4 become `[1, 9]`. For
    /// floats the remainder is taken in decimal on the numbers' shortest representations
    /// (Optuna uses `decimal.Decimal(str(x))`), so 0.1 divides 0.3 exactly.
    pub fn normalized(&self) -> Result<Distribution, DistributionError> {
        self.validate()?;
        Ok(match *self {
            Distribution::Float {
                low,
                high,
                log,
                step: Some(step),
            } => {
                let k = decimal::steps(low, high, step);
                let exact = decimal::value(low, step, k);
                // Keep the caller's `high` when it is on the grid (to the last bit or in decimal).
                let high = if exact == high || (high - exact).abs() <= 1e-12 * step {
                    high
                } else {
                    exact
                };
                Distribution::Float {
                    low,
                    high,
                    log,
                    step: Some(step),
                }
            }
            Distribution::Int {
                low,
                high,
                log,
                step,
            } => Distribution::Int {
                low,
                high: low + (high - low) / step * step,
                log,
                step,
            },
            ref other => other.clone(),
        })
    }

    /// The only value of a one-point distribution (`low == high`, a range shorter than one
    /// step, or one choice), which samplers return without sampling. Call it on a
    /// [`Self::normalized`] distribution.
    pub fn single_value(&self) -> Option<ParamValue> {
        match *self {
            Distribution::Float {
                low, high, step, ..
            } => {
                let one_point = low == high || (step.is_some() && self.n_steps() == Some(0));
                one_point.then_some(ParamValue::Float(low))
            }
            Distribution::Int {
                low, high, step, ..
            } => (high - low < step).then_some(ParamValue::Int(low)),
            Distribution::Categorical { ref choices } => {
                (choices.len() == 1).then_some(ParamValue::Categorical(0))
            }
        }
    }

    /// For a stepped float or an integer: the number of steps `K` from `low` to (normalised)
    /// `high`, so that the values are `low + k·step` for `k` in `0..=K`.
    pub fn n_steps(&self) -> Option<u64> {
        match *self {
            Distribution::Float {
                low,
                high,
                step: Some(step),
                ..
            } => Some(decimal::steps(low, high, step)),
            Distribution::Int {
                low, high, step, ..
            } => Some(((high - low) / step) as u64),
            _ => None,
        }
    }

    /// The `k`-th point of a stepped float or an integer: `low + k·step`, for a float computed
    /// in decimal (0.1 + 2·0.1 is 0.3, not 0.30000000000000004), the same in every sampler.
    pub fn step_value(&self, k: u64) -> ParamValue {
        match *self {
            Distribution::Float {
                low,
                step: Some(step),
                ..
            } => ParamValue::Float(decimal::value(low, step, k)),
            Distribution::Int { low, step, .. } => ParamValue::Int(low + k as i64 * step),
            _ => panic!("step_value of a distribution without steps: {self:?}"),
        }
    }

    /// The internal (`f64`) form of an observed value, or `None` where it does not belong to
    /// this distribution (another kind, outside the range, a choice index past the end, not
    /// finite): such an observation is treated as missing, like a trial without the parameter.
    /// Optuna 2.5 would feed an out-of-range value to its estimators (and take the log of a
    /// non-positive one); values outside a space that changed between trials are dropped here.
    pub fn internal(&self, value: &ParamValue) -> Option<f64> {
        match (self, *value) {
            (
                Distribution::Float {
                    low, high, step, ..
                },
                ParamValue::Float(v),
            ) => {
                let top_ok = if step.is_some() || low == high {
                    v <= *high
                } else {
                    v < *high
                };
                (v.is_finite() && v >= *low && top_ok).then_some(v)
            }
            (Distribution::Int { low, high, .. }, ParamValue::Int(v)) => {
                (*low..=*high).contains(&v).then_some(v as f64)
            }
            (Distribution::Categorical { choices }, ParamValue::Categorical(i)) => {
                (i < choices.len()).then_some(i as f64)
            }
            _ => None,
        }
    }

    /// The value as JSON: the number, or the categorical choice itself.
    pub fn to_json(&self, value: &ParamValue) -> Option<serde_json::Value> {
        match (self, *value) {
            (Distribution::Float { .. }, ParamValue::Float(v)) => {
                serde_json::Number::from_f64(v).map(serde_json::Value::Number)
            }
            (Distribution::Int { .. }, ParamValue::Int(v)) => Some(v.into()),
            (Distribution::Categorical { choices }, ParamValue::Categorical(i)) => {
                choices.get(i).cloned()
            }
            _ => None,
        }
    }
}

/// Every distribution of `space` validated and [normalised](Distribution::normalized).
pub fn normalize_space(space: &Space) -> Result<Space, SearchError> {
    space
        .iter()
        .map(|(name, dist)| match dist.normalized() {
            Ok(d) => Ok((name.clone(), d)),
            Err(source) => Err(SearchError::Distribution {
                name: name.clone(),
                source,
            }),
        })
        .collect()
}

/// Round half to even, numpy's `np.round` (Rust's `f64::round` rounds half away from zero).
pub(crate) fn round_half_even(x: f64) -> f64 {
    x.round_ties_even()
}

/// Exact decimal arithmetic on floats' shortest representations, for the step grid of a
/// stepped float (Optuna 2.5 does the same with `decimal.Decimal(str(x))`). Rust's `{}` of
/// an `f64` is the shortest string that parses back to the same number, without exponent;
/// numbers whose digits do not fit an `i128` (tiny or huge ones) fall back to `f64`.
mod decimal {
    /// `(digits, scale)` with `x == digits / 10^scale`.
    fn parse(x: f64) -> Option<(i128, u32)> {
        let s = format!("{x}");
        let (int, frac) = s.split_once('.').unwrap_or((&s, ""));
        if int.len() + frac.len() > 36 {
            return None;
        }
        let digits: i128 = format!("{int}{frac}").parse().ok()?;
        Some((digits, frac.len() as u32))
    }

    /// `a`, `b` and `c` as integers over one common power of ten.
    fn common(a: f64, b: f64, c: f64) -> Option<([i128; 3], u32)> {
        let parsed = [parse(a)?, parse(b)?, parse(c)?];
        let scale = parsed.iter().map(|p| p.1).max()?;
        let mut out = [0i128; 3];
        for (o, (digits, s)) in out.iter_mut().zip(parsed) {
            *o = digits.checked_mul(10i128.checked_pow(scale - s)?)?;
        }
        Some((out, scale))
    }

    fn to_f64(digits: i128, scale: u32) -> f64 {
        let neg = digits < 0;
        let s = digits.unsigned_abs().to_string();
        let s = if s.len() <= scale as usize {
            format!("0.{}{s}", "0".repeat(scale as usize - s.len()))
        } else {
            let (i, f) = s.split_at(s.len() - scale as usize);
            format!("{i}.{f}")
        };
        let v: f64 = s.parse().expect("a decimal string");
        if neg {
            -v
        } else {
            v
        }
    }

    /// `floor((high − low) / step)`, the number of whole steps in the range.
    pub(super) fn steps(low: f64, high: f64, step: f64) -> u64 {
        if let Some(([l, h, s], _)) = common(low, high, step) {
            return ((h - l) / s) as u64;
        }
        // No exact form: a float quotient, forgiving a relative error of 1e-9 below a whole
        // number (so that a range meant as a multiple is not cut by rounding).
        let r = (high - low) / step;
        let k = r.round();
        (if (r - k).abs() <= 1e-9 * k.max(1.0) {
            k
        } else {
            r.floor()
        }) as u64
    }

    /// `low + k·step`.
    pub(super) fn value(low: f64, step: f64, k: u64) -> f64 {
        if let Some(([l, s, _], scale)) = common(low, step, 0.0) {
            if let Some(v) = (k as i128).checked_mul(s).and_then(|ks| ks.checked_add(l)) {
                return to_f64(v, scale);
            }
        }
        low + k as f64 * step
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_reports_each_invalid_shape() {
        use DistributionError as E;
        let cases = [
            (
                Distribution::float(1.0, 0.0),
                E::LowAboveHigh {
                    low: 1.0,
                    high: 0.0,
                },
            ),
            (
                Distribution::int(3, 2),
                E::LowAboveHigh {
                    low: 3.0,
                    high: 2.0,
                },
            ),
            (
                Distribution::log_float(0.0, 1.0),
                E::LogLowNotPositive { low: 0.0 },
            ),
            (
                Distribution::log_float(-1.0, 1.0),
                E::LogLowNotPositive { low: -1.0 },
            ),
            (
                Distribution::log_int(0, 10),
                E::LogLowNotPositive { low: 0.0 },
            ),
            (
                Distribution::stepped_float(0.0, 1.0, 0.0),
                E::StepNotPositive { step: 0.0 },
            ),
            (
                Distribution::stepped_float(0.0, 1.0, -0.5),
                E::StepNotPositive { step: -0.5 },
            ),
            (
                Distribution::stepped_int(0, 10, 0),
                E::StepNotPositive { step: 0.0 },
            ),
            (
                Distribution::Float {
                    low: 1.0,
                    high: 2.0,
                    log: true,
                    step: Some(0.5),
                },
                E::LogWithStep,
            ),
            (
                Distribution::Int {
                    low: 1,
                    high: 9,
                    log: true,
                    step: 2,
                },
                E::LogWithStep,
            ),
            (Distribution::categorical([]), E::EmptyChoices),
            (
                Distribution::float(0.0, f64::INFINITY),
                E::NonFinite {
                    low: 0.0,
                    high: f64::INFINITY,
                },
            ),
            (
                Distribution::int(0, i64::MAX),
                E::IntTooLarge { value: i64::MAX },
            ),
            (
                Distribution::stepped_float(0.0, 1.0, 1e-17),
                E::TooManySteps { step: 1e-17 },
            ),
        ];
        for (dist, want) in cases {
            assert_eq!(dist.validate(), Err(want), "{dist:?}");
        }
        assert!(matches!(
            Distribution::float(f64::NAN, 1.0).validate(),
            Err(E::NonFinite { .. })
        ));
    }

    #[test]
    fn low_equal_to_high_is_a_constant() {
        for (dist, value) in [
            (Distribution::float(2.5, 2.5), ParamValue::Float(2.5)),
            (Distribution::log_float(2.5, 2.5), ParamValue::Float(2.5)),
            (Distribution::int(7, 7), ParamValue::Int(7)),
            (
                Distribution::stepped_float(0.0, 0.2, 0.5),
                ParamValue::Float(0.0),
            ),
            (
                Distribution::categorical(["only".into()]),
                ParamValue::Categorical(0),
            ),
        ] {
            let dist = dist.normalized().unwrap();
            assert_eq!(dist.single_value(), Some(value), "{dist:?}");
        }
        assert_eq!(Distribution::float(0.0, 1.0).single_value(), None);
    }

    #[test]
    fn high_moves_down_onto_the_step_grid() {
        let d = Distribution::stepped_float(0.0, 1.0, 0.3)
            .normalized()
            .unwrap();
        assert_eq!(d, Distribution::stepped_float(0.0, 0.9, 0.3));
        assert_eq!(d.n_steps(), Some(3));
        // 0.1 divides 0.3 in decimal, though not in binary floating point.
        let d = Distribution::stepped_float(0.1, 0.3, 0.1)
            .normalized()
            .unwrap();
        assert_eq!(d, Distribution::stepped_float(0.1, 0.3, 0.1));
        assert_eq!(d.n_steps(), Some(2));
        assert_eq!(d.step_value(2), ParamValue::Float(0.3));
        assert_eq!(d.step_value(1), ParamValue::Float(0.2));
        let d = Distribution::stepped_int(1, 10, 4).normalized().unwrap();
        assert_eq!(d, Distribution::stepped_int(1, 9, 4));
        assert_eq!(d.n_steps(), Some(2));
        assert_eq!(d.step_value(2), ParamValue::Int(9));
        let d = Distribution::stepped_int(-5, 5, 5).normalized().unwrap();
        assert_eq!(d, Distribution::stepped_int(-5, 5, 5));
        let d = Distribution::stepped_float(-1.0, 1.05, 0.25)
            .normalized()
            .unwrap();
        assert_eq!(d, Distribution::stepped_float(-1.0, 1.0, 0.25));
        // No exact decimal form (1e-40 has 40 decimals, past an i128): the float fallback.
        let d = Distribution::stepped_float(0.0, 1e-39, 1e-40)
            .normalized()
            .unwrap();
        assert_eq!(d.n_steps(), Some(10));
    }

    #[test]
    fn internal_form_drops_foreign_values() {
        let f = Distribution::float(0.0, 1.0);
        assert_eq!(f.internal(&ParamValue::Float(0.5)), Some(0.5));
        assert_eq!(
            f.internal(&ParamValue::Float(1.0)),
            None,
            "high is excluded"
        );
        assert_eq!(f.internal(&ParamValue::Int(0)), None);
        assert_eq!(f.internal(&ParamValue::Float(f64::NAN)), None);
        let s = Distribution::stepped_float(0.0, 1.0, 0.5);
        assert_eq!(
            s.internal(&ParamValue::Float(1.0)),
            Some(1.0),
            "a step includes high"
        );
        let i = Distribution::int(1, 3);
        assert_eq!(i.internal(&ParamValue::Int(3)), Some(3.0));
        assert_eq!(i.internal(&ParamValue::Int(4)), None);
        let c = Distribution::categorical(["a".into(), 2.into()]);
        assert_eq!(c.internal(&ParamValue::Categorical(1)), Some(1.0));
        assert_eq!(c.internal(&ParamValue::Categorical(2)), None);
        assert_eq!(c.to_json(&ParamValue::Categorical(1)), Some(2.into()));
        assert_eq!(i.to_json(&ParamValue::Int(2)), Some(2.into()));
    }

    #[test]
    fn repeated_steps_keep_the_first_report() {
        let t = Trial {
            number: 0,
            params: Params::new(),
            value: None,
            state: TrialState::Pruned,
            intermediate: vec![(0, 1.0), (2, 5.0), (1, 3.0), (2, 9.0)],
        };
        assert_eq!(t.intermediate_at(2), Some(5.0));
        assert_eq!(t.last_intermediate(), Some((2, 5.0)));
        assert_eq!(
            Trial {
                intermediate: vec![],
                ..t
            }
            .last_intermediate(),
            None
        );
    }

    #[test]
    fn normalize_space_names_the_parameter() {
        let mut space = Space::new();
        space.insert("lr".into(), Distribution::log_float(1e-5, 1e-1));
        space.insert("depth".into(), Distribution::int(5, 1));
        let err = normalize_space(&space).unwrap_err();
        assert_eq!(
            err.to_string(),
            "search parameter `depth`: low (5) is above high (1)"
        );
    }
}
