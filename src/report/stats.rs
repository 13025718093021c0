//! Whether a difference between two rows of a results table is more than seed noise: the
//! paired comparison of two methods over the same seeds (`aggregate`'s `compare`).
//!
//! For differences `d = a - b` (one per seed, paired by the averaged axes) it gives the
//! mean difference, its 95% confidence interval two ways (Student's t, and a seeded
//! percentile bootstrap), and two-sided p-values of the paired t-test and of the Wilcoxon
//! signed-rank test; [`holm`] corrects a family of p-values (one per table column). Fewer
//! than two pairs give [`Comparison::TooSmall`], never a number.
//!
//! The definitions follow SciPy's, and the tests check them against SciPy on fixtures that
//! `scripts/stats-fixtures.py` writes (`tests/fixtures/stats.json`):
//! - `ttest_rel(a, b)`; constant non-zero differences give t = ±inf and p = 0, all-zero
//!   differences give no p-value (SciPy: NaN);
//! - `wilcoxon(a, b)` with its defaults: zero differences dropped before ranking
//!   (`zero_method='wilcox'`), no continuity correction, the exact null distribution for
//!   at most [`WILCOXON_EXACT_MAX`] pairs without ties or zeros, all sign flips of the
//!   observed ranks for at most [`WILCOXON_PERMUTATION_MAX`] pairs with ties or zeros
//!   (all differences zero: p = 1), else the normal approximation with the tie
//!   correction of the variance (SciPy 1.17's `method='auto'`);
//! - `bootstrap((d,), np.mean, method='percentile')`: rst's own resampling, seeded through
//!   [`crate::prng`] so the same table comes out on every machine; it agrees with SciPy's
//!   within Monte-Carlo error, not bit for bit.
//!
//! The t and normal distributions come from `statrs`.
use statrs::distribution::{ContinuousCDF, Normal, StudentsT};

use crate::prng::Prng;

/// The confidence level of both intervals.
pub const LEVEL: f64 = 0.95;
/// Bootstrap resamples: the Monte-Carlo error of a 2.5% quantile is then well under a
/// hundredth of the differences' spread.
pub const RESAMPLES: usize = 10_000;
/// Up to this many pairs without ties or zeros the Wilcoxon p-value is exact (SciPy's
/// `method='auto'`).
pub const WILCOXON_EXACT_MAX: usize = 50;
/// Up to this many pairs with ties or zeros, every sign flip is counted (SciPy's
/// `method='auto'` since 1.15: a permutation test, exhaustive at this size).
pub const WILCOXON_PERMUTATION_MAX: usize = 13;

/// How the Wilcoxon p-value was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WilcoxonMethod {
    /// The exact null distribution (no ties, no zeros).
    Exact,
    /// Every sign flip of the observed ranks (ties or zeros, few pairs).
    Permutation,
    /// Normal approximation (ties or zeros with many pairs, or very many pairs).
    Approx,
}

impl WilcoxonMethod {
    pub fn name(self) -> &'static str {
        match self {
            WilcoxonMethod::Exact => "exact",
            WilcoxonMethod::Permutation => "permutation",
            WilcoxonMethod::Approx => "normal approximation",
        }
    }
}

/// The paired comparison of `a` with `b`.
#[derive(Debug, Clone, PartialEq)]
pub struct Paired {
    pub n: usize,
    /// Mean of `a - b`.
    pub mean_diff: f64,
    /// 95% t-interval of the mean difference (equal ends when the differences are constant).
    pub t_ci: (f64, f64),
    /// 95% percentile-bootstrap interval of the mean difference.
    pub bootstrap_ci: (f64, f64),
    /// Two-sided paired t-test; None when every difference is zero.
    pub t_p: Option<f64>,
    /// Two-sided Wilcoxon signed-rank test. Every difference zero: 1 up to
    /// [`WILCOXON_PERMUTATION_MAX`] pairs (SciPy's sign flips), None above (SciPy: NaN).
    pub wilcoxon_p: Option<f64>,
    pub wilcoxon_method: WilcoxonMethod,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Comparison {
    /// Fewer than two pairs: no spread, no test.
    TooSmall {
        n: usize,
    },
    Paired(Paired),
}

/// Compares `a` with `b`, paired by position (`a[i]` and `b[i]` share a seed); `seed`
/// seeds the bootstrap. Panics if the lengths differ (the caller pairs them).
pub fn paired(a: &[f64], b: &[f64], seed: u64) -> Comparison {
    assert_eq!(a.len(), b.len(), "paired samples");
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let n = d.len();
    if n < 2 {
        return Comparison::TooSmall { n };
    }
    let mean = mean(&d);
    let (t_ci, t_p) = t_test(&d, mean);
    let (wilcoxon_p, wilcoxon_method) = wilcoxon(&d);
    Comparison::Paired(Paired {
        n,
        mean_diff: mean,
        t_ci,
        bootstrap_ci: bootstrap_ci(&d, seed),
        t_p,
        wilcoxon_p,
        wilcoxon_method,
    })
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Sample standard deviation (ddof 1).
fn sd(v: &[f64], mean: f64) -> f64 {
    let ss: f64 = v.iter().map(|x| (x - mean) * (x - mean)).sum();
    (ss / (v.len() - 1) as f64).sqrt()
}

/// The t-interval and the two-sided p-value of the one-sample t-test of `d` (n ≥ 2).
fn t_test(d: &[f64], mean: f64) -> ((f64, f64), Option<f64>) {
    let n = d.len() as f64;
    let se = sd(d, mean) / n.sqrt();
    let t = StudentsT::new(0.0, 1.0, n - 1.0).expect("n - 1 >= 1 degrees of freedom");
    let half = t.inverse_cdf(1.0 - (1.0 - LEVEL) / 2.0) * se;
    let ci = (mean - half, mean + half);
    let p = if se == 0.0 {
        // Constant differences: t is ±inf (p = 0), or undefined when they are all zero.
        (mean != 0.0).then_some(0.0)
    } else {
        Some((2.0 * t.sf((mean / se).abs())).min(1.0))
    };
    (ci, p)
}

/// Ranks of `v` (1-based, ties get the mean rank), and the sizes of the tie groups.
fn ranks(v: &[f64]) -> (Vec<f64>, Vec<usize>) {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
    let mut ranks = vec![0.0; v.len()];
    let mut ties = Vec::new();
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && v[order[end]] == v[order[start]] {
            end += 1;
        }
        // Positions start..end (0-based) share the ranks start+1..=end.
        let rank = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        if end - start > 1 {
            ties.push(end - start);
        }
        start = end;
    }
    (ranks, ties)
}

/// Two-sided Wilcoxon signed-rank p-value of the differences `d`, as SciPy's defaults
/// (1.17) compute it (module docs): zeros dropped before ranking; the exact distribution
/// without ties or zeros (up to [`WILCOXON_EXACT_MAX`] pairs); all sign flips of the
/// observed ranks with ties or zeros up to [`WILCOXON_PERMUTATION_MAX`] pairs; else the
/// normal approximation with the tie-corrected variance.
fn wilcoxon(d: &[f64]) -> (Option<f64>, WilcoxonMethod) {
    let zeros = d.iter().filter(|x| **x == 0.0).count();
    let nz: Vec<f64> = d.iter().copied().filter(|x| *x != 0.0).collect();
    let abs: Vec<f64> = nz.iter().map(|x| x.abs()).collect();
    let (r, ties) = ranks(&abs);
    let r_plus: f64 = nz
        .iter()
        .zip(&r)
        .filter(|(x, _)| **x > 0.0)
        .map(|(_, r)| r)
        .sum();
    if d.len() <= WILCOXON_EXACT_MAX && ties.is_empty() && zeros == 0 {
        return (
            Some(wilcoxon_exact(nz.len(), r_plus)),
            WilcoxonMethod::Exact,
        );
    }
    if d.len() <= WILCOXON_PERMUTATION_MAX {
        return (
            Some(wilcoxon_flips(&r, r_plus)),
            WilcoxonMethod::Permutation,
        );
    }
    let nf = nz.len() as f64;
    let r_minus = nf * (nf + 1.0) / 2.0 - r_plus;
    let t = r_plus.min(r_minus);
    let mn = nf * (nf + 1.0) / 4.0;
    let tie_term: f64 = ties.iter().map(|&t| (t * t * t - t) as f64).sum::<f64>() / 48.0;
    let var = nf * (nf + 1.0) * (2.0 * nf + 1.0) / 24.0 - tie_term;
    if var <= 0.0 {
        return (None, WilcoxonMethod::Approx);
    }
    let z = (t - mn) / var.sqrt();
    let normal = Normal::new(0.0, 1.0).expect("the standard normal");
    (
        Some((2.0 * normal.sf(z.abs())).min(1.0)),
        WilcoxonMethod::Approx,
    )
}

/// The two-sided p-value of `r_plus` over all 2^m sign patterns of the (mid)ranks `r`:
/// 2 · min(P(W+ ≤ r_plus), P(W+ ≥ r_plus)), at most 1. Ranks are halves, so sums are
/// compared exactly as twice their value.
fn wilcoxon_flips(r: &[f64], r_plus: f64) -> f64 {
    let twice: Vec<u64> = r.iter().map(|x| (x * 2.0).round() as u64).collect();
    let observed = (r_plus * 2.0).round() as u64;
    let (mut le, mut ge) = (0u64, 0u64);
    let patterns = 1u64 << twice.len();
    for mask in 0..patterns {
        let sum: u64 = (0..twice.len())
            .filter(|i| mask >> i & 1 == 1)
            .map(|i| twice[i])
            .sum();
        le += u64::from(sum <= observed);
        ge += u64::from(sum >= observed);
    }
    (2.0 * le.min(ge) as f64 / patterns as f64).min(1.0)
}

/// The exact two-sided p-value of the signed-rank statistic `r_plus` for `n` pairs
/// without ties: the null distribution of W+ (each of the 2^n sign patterns equally
/// likely) by counting subsets of 1..=n per sum.
fn wilcoxon_exact(n: usize, r_plus: f64) -> f64 {
    let max = n * (n + 1) / 2;
    // counts[s]: how many subsets of the ranks seen so far sum to s (as f64: 2^50 fits).
    let mut counts = vec![0.0f64; max + 1];
    counts[0] = 1.0;
    for k in 1..=n {
        for s in (k..=max).rev() {
            counts[s] += counts[s - k];
        }
    }
    let total = 2f64.powi(n as i32);
    let w = r_plus.round() as usize;
    let cdf: f64 = counts[..=w].iter().sum::<f64>() / total;
    let sf: f64 = counts[w..].iter().sum::<f64>() / total;
    (2.0 * cdf.min(sf)).min(1.0)
}

/// The percentile-bootstrap interval of the mean of `d`: [`RESAMPLES`] resamples with
/// replacement, their means' 2.5% and 97.5% quantiles by linear interpolation (NumPy's
/// default, as SciPy's `percentile` method).
fn bootstrap_ci(d: &[f64], seed: u64) -> (f64, f64) {
    let mut rng = Prng::new(seed, "aggregate-bootstrap");
    let n = d.len();
    let mut means: Vec<f64> = (0..RESAMPLES)
        .map(|_| (0..n).map(|_| d[rng.below(n as u64) as usize]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let alpha = (1.0 - LEVEL) / 2.0;
    (quantile(&means, alpha), quantile(&means, 1.0 - alpha))
}

/// The `q` quantile of sorted `v`, linear interpolation between order statistics.
fn quantile(v: &[f64], q: f64) -> f64 {
    let pos = q * (v.len() - 1) as f64;
    let (lo, frac) = (pos.floor() as usize, pos - pos.floor());
    match v.get(lo + 1) {
        Some(hi) if frac > 0.0 => v[lo] + (hi - v[lo]) * frac,
        _ => v[lo],
    }
}

/// Holm–Bonferroni step-down adjustment of a family of p-values, in their order:
/// the i-th smallest becomes max over j ≤ i of min(1, (m - j + 1) · p_(j)).
pub fn holm(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&i, &j| p[i].total_cmp(&p[j]));
    let mut adjusted = vec![0.0; m];
    let mut running = 0.0f64;
    for (k, &i) in order.iter().enumerate() {
        running = running.max(((m - k) as f64 * p[i]).min(1.0));
        adjusted[i] = running;
    }
    adjusted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * (1.0 + b.abs())
    }

    #[test]
    fn fewer_than_two_pairs_are_too_small() {
        assert_eq!(paired(&[], &[], 1), Comparison::TooSmall { n: 0 });
        assert_eq!(paired(&[75.0], &[74.0], 1), Comparison::TooSmall { n: 1 });
    }

    #[test]
    fn constant_and_zero_differences() {
        let Comparison::Paired(c) = paired(&[71.0, 72.0, 73.0], &[70.0, 71.0, 72.0], 1) else {
            panic!()
        };
        assert_eq!(c.mean_diff, 1.0);
        assert_eq!(c.t_p, Some(0.0));
        assert_eq!(c.t_ci, (1.0, 1.0));
        assert_eq!(c.bootstrap_ci, (1.0, 1.0));
        let Comparison::Paired(z) = paired(&[70.0, 71.0], &[70.0, 71.0], 1) else {
            panic!()
        };
        assert_eq!((z.t_p, z.wilcoxon_p), (None, Some(1.0)));
    }

    #[test]
    fn exact_wilcoxon_by_hand() {
        // n = 3, every difference positive: W+ = 6 of max 6; P(W+ >= 6) = 1/8, two-sided 1/4.
        assert!(close(wilcoxon_exact(3, 6.0), 0.25, 1e-15));
        // n = 5, W+ = 0: 2/32.
        assert!(close(wilcoxon_exact(5, 0.0), 0.0625, 1e-15));
    }

    #[test]
    fn ranks_share_ties() {
        let (r, ties) = ranks(&[3.0, 1.0, 3.0, 2.0]);
        assert_eq!(r, [3.5, 1.0, 3.5, 2.0]);
        assert_eq!(ties, [2]);
    }

    #[test]
    fn holm_by_hand() {
        let adj = holm(&[0.01, 0.04, 0.03, 0.5]);
        let want = [0.04, 0.09, 0.09, 0.5];
        for (a, w) in adj.iter().zip(want) {
            assert!(close(*a, w, 1e-12), "{adj:?}");
        }
        assert_eq!(holm(&[0.6, 0.6]), [1.0, 1.0]);
    }

    /// Every case of `tests/fixtures/stats.json` (SciPy, written by
    /// `scripts/stats-fixtures.py`): the same numbers, the bootstrap within Monte-Carlo
    /// error.
    #[test]
    fn agrees_with_scipy() {
        let fixtures: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/stats.json")).unwrap();
        let num = |v: &serde_json::Value| v.as_f64();
        // Where SciPy warned, the fixture keeps null and what SciPy returned beside it.
        let scipy = |case: &serde_json::Value, k: &str| {
            num(&case[k]).or_else(|| num(&case["scipy_returned"][k]))
        };
        let mut checked = 0;
        for case in fixtures["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let vec = |k: &str| -> Vec<f64> {
                case[k]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect()
            };
            let (a, b) = (vec("a"), vec("b"));
            let c = match paired(&a, &b, 1) {
                Comparison::TooSmall { n } => {
                    assert!(n < 2, "{name}");
                    continue;
                }
                Comparison::Paired(c) => c,
            };
            assert!(
                close(c.mean_diff, num(&case["mean_diff"]).unwrap(), 1e-12),
                "{name}"
            );
            if let (Some(lo), Some(hi)) = (num(&case["t_ci"][0]), num(&case["t_ci"][1])) {
                assert!(
                    close(c.t_ci.0, lo, 1e-9) && close(c.t_ci.1, hi, 1e-9),
                    "{name}: {:?}",
                    c.t_ci
                );
            }
            assert_eq!(
                c.t_p.map(|p| (p * 1e9).round()),
                scipy(case, "ttest_p").map(|p| (p * 1e9).round()),
                "{name}: t-test p {:?}",
                c.t_p
            );
            let method = match case["wilcoxon_method"].as_str().unwrap() {
                "exact" => WilcoxonMethod::Exact,
                "permutation" => WilcoxonMethod::Permutation,
                _ => WilcoxonMethod::Approx,
            };
            assert_eq!(c.wilcoxon_method, method, "{name}");
            match (c.wilcoxon_p, scipy(case, "wilcoxon_p")) {
                (Some(p), Some(want)) => assert!(close(p, want, 1e-9), "{name}: {p} vs {want}"),
                (got, want) => assert_eq!(got, want, "{name}: Wilcoxon p"),
            }
            let sd = num(&case["d_std_ddof1"]).unwrap();
            let (lo, hi) = (
                num(&case["bootstrap_percentile_ci"][0]).unwrap(),
                num(&case["bootstrap_percentile_ci"][1]).unwrap(),
            );
            let tol = 0.05 * sd + 1e-9;
            assert!(
                (c.bootstrap_ci.0 - lo).abs() <= tol && (c.bootstrap_ci.1 - hi).abs() <= tol,
                "{name}: bootstrap {:?} vs SciPy [{lo}, {hi}] (sd {sd})",
                c.bootstrap_ci
            );
            checked += 1;
        }
        assert!(checked >= 12, "{checked} cases");
        for case in fixtures["holm"].as_array().unwrap() {
            let p: Vec<f64> = case["p"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            let want: Vec<f64> = case["holm"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            let got = holm(&p);
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    close(*g, *w, 1e-12),
                    "{}: {got:?} vs {want:?}",
                    case["name"]
                );
            }
        }
    }

    #[test]
    fn the_bootstrap_is_seeded() {
        let a: Vec<f64> = (0..12).map(|i| 70.0 + (i * 37 % 11) as f64 * 0.7).collect();
        let b: Vec<f64> = (0..12).map(|i| 70.0 + (i * 53 % 13) as f64 * 0.4).collect();
        assert_eq!(paired(&a, &b, 7), paired(&a, &b, 7));
        assert_ne!(paired(&a, &b, 7), paired(&a, &b, 8));
    }
}
