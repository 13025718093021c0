//! The grid sampler: every combination of a discrete space, in a fixed order.
//!
//! Each parameter's values, in increasing order: a categorical's choices (by index), an
//! integer's `low, low + step, ..., high`, a stepped float's `low + k·step` (in decimal, see
//! [`Distribution::step_value`]), and a constant's one value. A log-scaled integer lists every
//! integer of its range (its step is 1). A continuous float has no grid and is an error.
//!
//! Points are numbered like `itertools.product` over the space's order: the first parameter
//! varies slowest, the last fastest. Optuna's `GridSampler` takes the same product (over the
//! names sorted) but visits it in a random order; here the engine picks the order (point `i`
//! for trial `i`), so a grid study is reproducible without a seed.
use super::{normalize_space, Distribution, ParamValue, Params, SearchError, Space};

/// The number of values of each parameter, in the space's order (of a normalised space).
fn counts(space: &Space) -> Result<Vec<u64>, SearchError> {
    space
        .iter()
        .map(|(name, dist)| {
            if dist.single_value().is_some() {
                return Ok(1);
            }
            match dist {
                Distribution::Categorical { choices } => Ok(choices.len() as u64),
                Distribution::Float { step: None, .. } => {
                    Err(SearchError::GridContinuous { name: name.clone() })
                }
                _ => Ok(dist.n_steps().expect("a stepped distribution") + 1),
            }
        })
        .collect()
}

/// The `k`-th value of a normalised distribution with `count` values.
fn value(dist: &Distribution, k: u64) -> ParamValue {
    if let Some(v) = dist.single_value() {
        return v;
    }
    match dist {
        Distribution::Categorical { .. } => ParamValue::Categorical(k as usize),
        _ => dist.step_value(k),
    }
}

/// The number of grid points (1 for an empty space: the one empty combination).
pub fn grid_size(space: &Space) -> Result<usize, SearchError> {
    let space = normalize_space(space)?;
    counts(&space)?
        .into_iter()
        .try_fold(1usize, |acc, c| acc.checked_mul(usize::try_from(c).ok()?))
        .ok_or(SearchError::GridTooLarge)
}

/// Grid point `index` (in `0..grid_size`), without listing the others.
pub fn grid_point(space: &Space, index: usize) -> Result<Params, SearchError> {
    let size = grid_size(space)?;
    if index >= size {
        return Err(SearchError::GridIndexOutOfRange { index, size });
    }
    let space = normalize_space(space)?;
    let counts = counts(&space)?;
    // Mixed radix, the last parameter the least significant digit.
    let mut digits = vec![0u64; counts.len()];
    let mut rest = index as u64;
    for (d, c) in digits.iter_mut().zip(&counts).rev() {
        *d = rest % c;
        rest /= c;
    }
    Ok(space
        .iter()
        .zip(digits)
        .map(|((name, dist), k)| (name.clone(), value(dist, k)))
        .collect())
}

/// Every grid point, in order.
pub fn grid(space: &Space) -> Result<Vec<Params>, SearchError> {
    (0..grid_size(space)?)
        .map(|i| grid_point(space, i))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn product_in_space_order_last_fastest() {
        let mut s = Space::new();
        s.insert(
            "opt".into(),
            Distribution::categorical(["sgd".into(), "adam".into()]),
        );
        s.insert("depth".into(), Distribution::stepped_int(1, 6, 2)); // 1, 3, 5
        s.insert("wd".into(), Distribution::stepped_float(0.0, 0.2, 0.1)); // 0, 0.1, 0.2
        s.insert("seedless".into(), Distribution::float(1.5, 1.5));
        assert_eq!(grid_size(&s).unwrap(), 18);
        let points = grid(&s).unwrap();
        assert_eq!(points.len(), 18);
        let as_tuple = |p: &Params| (p["opt"], p["depth"], p["wd"], p["seedless"]);
        use ParamValue::*;
        assert_eq!(
            as_tuple(&points[0]),
            (Categorical(0), Int(1), Float(0.0), Float(1.5))
        );
        assert_eq!(
            as_tuple(&points[1]),
            (Categorical(0), Int(1), Float(0.1), Float(1.5))
        );
        assert_eq!(
            as_tuple(&points[3]),
            (Categorical(0), Int(3), Float(0.0), Float(1.5))
        );
        assert_eq!(
            as_tuple(&points[17]),
            (Categorical(1), Int(5), Float(0.2), Float(1.5))
        );
        let mut distinct: Vec<_> = points.iter().map(|p| format!("{p:?}")).collect();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 18);
        assert_eq!(grid_point(&s, 7).unwrap(), points[7]);
        assert_eq!(
            grid_point(&s, 18),
            Err(SearchError::GridIndexOutOfRange {
                index: 18,
                size: 18
            })
        );
    }

    #[test]
    fn log_int_lists_every_integer() {
        let mut s = Space::new();
        s.insert("n".into(), Distribution::log_int(1, 8));
        let got: Vec<_> = grid(&s).unwrap().into_iter().map(|p| p["n"]).collect();
        assert_eq!(got, (1..=8).map(ParamValue::Int).collect::<Vec<_>>());
    }

    #[test]
    fn continuous_float_is_an_error() {
        let mut s = Space::new();
        s.insert("a".into(), Distribution::int(0, 3));
        s.insert("lr".into(), Distribution::log_float(1e-4, 1e-1));
        assert_eq!(
            grid_size(&s),
            Err(SearchError::GridContinuous { name: "lr".into() })
        );
        assert!(grid(&s).is_err());
    }

    #[test]
    fn empty_space_has_one_point_and_huge_grids_are_refused() {
        assert_eq!(grid(&Space::new()).unwrap(), vec![Params::new()]);
        let mut s = Space::new();
        for name in ["a", "b", "c", "d", "e"] {
            s.insert(name.into(), Distribution::int(0, 1 << 20));
        }
        assert_eq!(grid_size(&s), Err(SearchError::GridTooLarge));
    }
}
