//! Independent uniform sampling, Optuna 2.5's `RandomSampler`, on rst's portable generator.
//!
//! Per distribution (all on a [normalised](super::Distribution::normalized) one):
//! - float: `low + (high − low)·u`, `u` uniform in [0, 1) (numpy's `uniform`);
//! - log float: `exp` of a uniform between `ln low` and `ln high`, clamped to `[low, high]`
//!   (`exp(ln high)` can land an ulp above `high`; Optuna does not clamp);
//! - stepped float, integer: a uniform index `k` in `0..=K`, the value `low + k·step`
//!   (Optuna draws a float between `−step/2` and `K·step + step/2` and rounds it, which is
//!   the same law; the index is exact);
//! - log integer: `exp` of a uniform between `ln(low − 0.5)` and `ln(high + 0.5)`, rounded
//!   half to even (numpy's `round`) and clamped, as Optuna 2.5 does, so small values are
//!   likelier;
//! - categorical: a uniform index;
//! - a one-point distribution: its value, without drawing.
//!
//! Each parameter of each trial has its own stream, `search/random/trial=N/param=NAME`, so
//! a proposal depends only on (seed, trial number, name, distribution).
use super::{
    normalize_space, round_half_even, Distribution, ParamValue, Params, SearchError, Space,
};
use crate::prng::Prng;

/// The generator for one parameter of one trial.
pub(crate) fn rng(seed: u64, trial_number: usize, name: &str) -> Prng {
    Prng::new(
        seed,
        &format!("search/random/trial={trial_number}/param={name}"),
    )
}

/// Independent uniform values for every parameter of `space`.
pub fn propose(space: &Space, trial_number: usize, seed: u64) -> Result<Params, SearchError> {
    let space = normalize_space(space)?;
    Ok(space
        .iter()
        .map(|(name, dist)| {
            let value = sample(dist, &mut rng(seed, trial_number, name));
            (name.clone(), value)
        })
        .collect())
}

/// One uniform value of a normalised distribution.
pub fn sample(dist: &Distribution, rng: &mut Prng) -> ParamValue {
    if let Some(v) = dist.single_value() {
        return v;
    }
    match *dist {
        Distribution::Float {
            low,
            high,
            log: false,
            step: None,
        } => ParamValue::Float(low + (high - low) * rng.unit_f64()),
        Distribution::Float {
            low,
            high,
            log: true,
            ..
        } => {
            let (a, b) = (libm::log(low), libm::log(high));
            ParamValue::Float(libm::exp(a + (b - a) * rng.unit_f64()).clamp(low, high))
        }
        Distribution::Float { step: Some(_), .. } | Distribution::Int { log: false, .. } => {
            let k = dist.n_steps().expect("a stepped distribution");
            dist.step_value(rng.below(k + 1))
        }
        Distribution::Int {
            low,
            high,
            log: true,
            ..
        } => {
            let (a, b) = (libm::log(low as f64 - 0.5), libm::log(high as f64 + 0.5));
            let v = round_half_even(libm::exp(a + (b - a) * rng.unit_f64()));
            ParamValue::Int((v as i64).clamp(low, high))
        }
        Distribution::Categorical { ref choices } => {
            ParamValue::Categorical(rng.below(choices.len() as u64) as usize)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space() -> Space {
        let mut s = Space::new();
        s.insert("lr".into(), Distribution::log_float(1e-5, 1e-1));
        s.insert("dropout".into(), Distribution::float(0.0, 0.5));
        s.insert("width".into(), Distribution::stepped_int(16, 256, 16));
        s.insert("layers".into(), Distribution::log_int(1, 64));
        s.insert("wd".into(), Distribution::stepped_float(0.0, 0.3, 0.1));
        s.insert(
            "opt".into(),
            Distribution::categorical(["sgd".into(), "adam".into()]),
        );
        s.insert("fixed".into(), Distribution::float(3.0, 3.0));
        s
    }

    #[test]
    fn deterministic_per_seed_trial_and_name() {
        let a = propose(&space(), 3, 42).unwrap();
        assert_eq!(a, propose(&space(), 3, 42).unwrap());
        assert_ne!(a, propose(&space(), 4, 42).unwrap());
        assert_ne!(a, propose(&space(), 3, 43).unwrap());
        // A parameter's value does not depend on the others or on their order.
        let mut reordered: Space = space().into_iter().rev().collect();
        reordered.shift_remove("dropout");
        let b = propose(&reordered, 3, 42).unwrap();
        assert_eq!(a["lr"], b["lr"]);
        assert_eq!(a["opt"], b["opt"]);
    }

    #[test]
    fn pinned_values() {
        // If these change, every stored search study proposes differently: change them
        // deliberately.
        use ParamValue::*;
        let p = propose(&space(), 0, 7).unwrap();
        let want = [
            Float(0.00034053478090790694),
            Float(0.2752595800687814),
            Int(208),
            Int(26),
            Float(0.2),
            Categorical(1),
            Float(3.0),
        ];
        assert_eq!(p.values().copied().collect::<Vec<_>>(), want);
    }

    #[test]
    fn values_stay_in_their_domains_and_cover_them() {
        let space = space();
        let mut widths = std::collections::BTreeSet::new();
        let mut layers = std::collections::BTreeMap::<i64, usize>::new();
        let mut wds = std::collections::BTreeSet::new();
        let mut lr_decades = [0usize; 4];
        let n = 4000;
        for t in 0..n {
            let p = propose(&space, t, 1).unwrap();
            for (name, v) in &p {
                assert!(space[name].internal(v).is_some(), "{name} = {v:?}");
            }
            let ParamValue::Int(w) = p["width"] else {
                panic!()
            };
            assert_eq!(w % 16, 0);
            widths.insert(w);
            let ParamValue::Int(l) = p["layers"] else {
                panic!()
            };
            *layers.entry(l).or_default() += 1;
            let ParamValue::Float(wd) = p["wd"] else {
                panic!()
            };
            wds.insert(wd.to_bits());
            let ParamValue::Float(lr) = p["lr"] else {
                panic!()
            };
            lr_decades[(-lr.log10()).floor() as usize - 1] += 1;
        }
        assert_eq!(widths.len(), 16, "16, 32, ..., 256");
        assert_eq!(
            wds,
            [0.0f64, 0.1, 0.2, 0.3]
                .iter()
                .map(|v| v.to_bits())
                .collect(),
            "decimal grid points"
        );
        assert_eq!(layers.keys().copied().min(), Some(1));
        assert_eq!(layers.keys().copied().max(), Some(64));
        // Log-uniform: 1 is likelier than 2 (ln 1.5 − ln 0.5 vs ln 2.5 − ln 1.5) ...
        assert!(layers[&1] > layers[&2]);
        // ... and every decade of the learning rate gets about a quarter.
        for c in lr_decades {
            assert!(
                (n / 4 - n / 16..n / 4 + n / 16).contains(&c),
                "{lr_decades:?}"
            );
        }
    }

    #[test]
    fn invalid_space_is_an_error() {
        let mut s = Space::new();
        s.insert("x".into(), Distribution::categorical([]));
        assert!(matches!(
            propose(&s, 0, 0),
            Err(SearchError::Distribution { .. })
        ));
    }
}
