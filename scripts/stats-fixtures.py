#!/usr/bin/env python3
"""Reference values for rst's paired-comparison statistics, computed with SciPy.

Writes tests/fixtures/stats.json. Each case is a pair of equal-length accuracy vectors
`a`, `b` (percent, two decimals, paired by seed) and holds, for d = a - b (float64):

  mean_diff, d_std_ddof1  mean and sample standard deviation (ddof=1) of d
  t_ci                    95% t-interval of the mean difference,
                          mean +- t.ppf(0.975, n-1) * sd(d, ddof=1) / sqrt(n)
  ttest_t, ttest_p        scipy.stats.ttest_rel(a, b), two-sided
  wilcoxon_stat/_p        scipy.stats.wilcoxon(a, b) with SciPy's defaults (zero_method='wilcox',
                          correction=False, alternative='two-sided', method='auto')
  wilcoxon_method         the method that method='auto' resolved to (rule below)
  wilcoxon_approx_stat/_p/_z
                          scipy.stats.wilcoxon(a, b, method='approx') (normal approximation,
                          no continuity correction; SciPy maps 'approx' to 'asymptotic'),
                          for every case, whatever 'auto' resolved to. _z is SciPy's
                          zstatistic, which is -|z| for a two-sided test.
  bootstrap_percentile_ci scipy.stats.bootstrap((d,), np.mean, confidence_level=0.95,
                          n_resamples=20000, method='percentile', rng=default_rng(SEED))
  bootstrap_bca_ci        the same with method='BCa' (SciPy's default method)

rst draws its own bootstrap resamples, so tests must compare the bootstrap intervals within a
Monte-Carlo tolerance (sized from d_std_ddof1 / sqrt(n) and n_resamples), not exactly.

Where SciPy returns NaN/inf, raises, or warns, the field is null, the case gets a `note`
saying what SciPy did, and `scipy_returned` holds the raw value SciPy produced (non-finite
values as the strings "nan", "inf", "-inf") so a test can still look at it.

How SciPy's wilcoxon resolves method='auto' (read from scipy/stats/_wilcoxon.py of the
installed SciPy 1.17.1, `_wilcoxon_iv` and `_wilcoxon_nd`):
  1. if len(d) > 50 (n counts the pairs, zero differences included)  -> 'asymptotic'
  2. else, if there are no ties among the nonzero |d| and no zero d   -> 'exact'
     (exact null distribution of the signed-rank statistic, count = number of nonzero d)
  3. else, if len(d) <= 13                                           -> exhaustive sign-flip
     permutation test, permutation_test(..., permutation_type='samples') with the default
     PermutationMethod() (n_resamples=9999 >= 2**13, so all 2**n sign patterns are enumerated
     and the p-value is deterministic); recorded here as 'permutation'
  4. else (ties or zeros, 14 <= n <= 50)                             -> 'asymptotic'
  Ties are ties of the float64 values |a - b|; two decimal differences that are equal on
  paper can differ in the last bit after subtraction (see case constant_diff_roundoff_n4),
  so rst must compute d as a - b in float64, exactly as numpy does, to make the same choice.
  zero_method='wilcox' drops zero differences before ranking (SciPy turns them into NaN,
  which the ranking ignores); the normal approximation then uses count = number of nonzero d
  for its mean count*(count+1)/4 and variance count*(count+1)*(2*count+1)/24 minus the tie
  correction sum(t^3 - t)/48. In the permutation test the zeros stay in the sample, but
  flipping their sign changes nothing.
  The script recomputes the auto result with the method it resolved to, given explicitly,
  and checks that both agree.

The top-level list `holm` holds raw p-value vectors and their Holm-Bonferroni (step-down)
adjustment, computed here by two independent implementations that must agree:
  adjusted p_(i) = max_{j<=i} min(1, (m - j + 1) p_(j)), p sorted ascending, returned in the
  original order.

Regenerate with:

    python3 -m venv target/stats-venv && target/stats-venv/bin/pip install scipy && target/stats-venv/bin/python scripts/stats-fixtures.py

(the venv also needs numpy, which pip installs as a SciPy dependency). The SciPy and NumPy
versions used are recorded in the JSON ("scipy", "numpy"); the values were produced with
SciPy 1.17.1 and NumPy 2.4.6. Rerunning with the same versions gives a byte-identical file.
"""

import json
import math
import os
import platform
import sys
import warnings

import numpy as np
import scipy
from scipy import stats

BOOTSTRAP_SEED = 20240611
BOOTSTRAP_N_RESAMPLES = 20000
CONFIDENCE = 0.95
RANDOM_CASES_SEED = 2

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "stats.json")


# --------------------------------------------------------------------------------------------
# cases


def two_dec(x):
    """Round to two decimals and return plain Python floats (shortest repr, e.g. 75.21)."""
    return [float(round(float(v), 2)) for v in np.asarray(x)]


def random_case(rng, n, shift, spread):
    b = rng.uniform(55.0, 90.0, n)
    a = b + rng.normal(shift, spread, n)
    return two_dec(np.clip(a, 40.0, 95.0)), two_dec(np.clip(b, 40.0, 95.0))


def untie(a, b):
    """Nudge a[i] up by 0.01 until the float64 |a - b| are all distinct and nonzero."""
    a = list(a)
    for i in range(len(a)):
        while True:
            d = [x - y for x, y in zip(a, b)]
            if d[i] != 0 and all(abs(d[i]) != abs(d[j]) for j in range(i)):
                break
            a[i] = float(round(a[i] + 0.01, 2))
    return a


def build_cases():
    rng = np.random.default_rng(RANDOM_CASES_SEED)
    cases = []

    def add(name, a, b, comment):
        assert len(a) == len(b) and len(a) >= 1, name
        for v in a + b:
            assert 40.0 <= v <= 95.0 and round(v, 2) == v, (name, v)
        cases.append({"name": name, "comment": comment, "a": list(a), "b": list(b)})

    add("n1_single", [75.21], [74.10],
        "one seed: no spread, no t-interval, no bootstrap")
    add("n2", [75.21, 76.43], [74.10, 76.80],
        "two seeds, differences of opposite sign")
    add("n3_three_seeds", [76.42, 75.88, 76.91], [75.97, 75.61, 76.05],
        "the typical paper case: three seeds, a better on all three")
    add("n5", [81.12, 79.64, 80.37, 82.05, 80.90], [80.45, 79.91, 79.58, 81.13, 80.97],
        "five seeds, mixed signs")
    a, b = random_case(rng, 8, 0.6, 1.2)
    add("n8_random", a, b, f"random, numpy default_rng({RANDOM_CASES_SEED}), first draw")
    a, b = random_case(rng, 12, 0.4, 1.5)
    add("n12_random", a, b, f"random, numpy default_rng({RANDOM_CASES_SEED}), second draw")
    a, b = random_case(rng, 20, 0.5, 2.0)
    add("n20_random", a, b, f"random, numpy default_rng({RANDOM_CASES_SEED}), third draw")
    add("all_positive_n6",
        [88.41, 87.95, 89.12, 88.70, 88.03, 89.46],
        [87.62, 87.73, 87.80, 88.15, 87.09, 88.02],
        "a > b in every pair, distinct |d|: exact Wilcoxon, p = 2/2^6")
    add("ties_abs_diff_n7",
        [70.50, 68.25, 72.00, 69.75, 71.25, 70.00, 67.50],
        [69.00, 69.75, 69.75, 69.00, 69.00, 69.00, 68.00],
        "|d| ties that are exact in float64 (dyadic values): d = 1.5, -1.5, 2.25, 0.75, 2.25, 1, -0.5")
    add("zero_diff_n6",
        [77.31, 78.02, 76.88, 77.45, 78.60, 77.19],
        [76.54, 78.02, 76.10, 77.71, 77.32, 76.23],
        "one pair with a == b (zero difference), n <= 13")
    add("constant_diff_n4",
        [75.25, 80.50, 68.75, 71.00],
        [74.00, 79.25, 67.50, 69.75],
        "every difference exactly 1.25 in float64: sd = 0")
    add("constant_diff_roundoff_n4",
        [71.43, 60.91, 65.32, 64.18],
        [70.73, 60.21, 64.62, 63.48],
        "every difference 0.70 on paper, but a - b in float64 gives four distinct values "
        "(0.7000000000000028, 0.6999999999999957, 0.6999999999999886, 0.70000000000001): "
        "no float ties, so 'auto' picks 'exact'; sd is ~1e-14, not 0, so SciPy returns a huge "
        "t and a tiny p without warning: those two are pure roundoff, compare them loosely or not at all")
    add("all_zero_n5",
        [72.14, 73.08, 71.66, 72.90, 73.41],
        [72.14, 73.08, 71.66, 72.90, 73.41],
        "a == b in every pair")
    a, b = random_case(rng, 50, 0.5, 2.0)
    a = untie(a, b)
    add("n50_exact_boundary", a, b,
        f"random, numpy default_rng({RANDOM_CASES_SEED}), fourth draw, a nudged by +0.01 steps until "
        "every |d| is distinct and nonzero: n = 50 is the largest n that 'auto' runs exactly")
    a, b = random_case(rng, 60, 0.3, 1.8)
    add("n60_large", a, b,
        f"random, numpy default_rng({RANDOM_CASES_SEED}), fifth draw; n > 50 forces the normal approximation")
    add("negative_mean_n10",
        [62.14, 63.80, 61.95, 64.22, 62.71, 63.05, 61.38, 64.90, 62.47, 63.66],
        [63.52, 64.11, 63.40, 64.05, 64.38, 63.97, 62.80, 65.74, 62.19, 64.83],
        "b better than a on 8 of 10 seeds: negative mean difference")
    add("ties_n16",
        [55.50, 57.25, 56.00, 58.75, 54.25, 56.50, 57.00, 55.75,
         59.00, 56.25, 57.50, 55.00, 58.25, 56.75, 57.75, 54.75],
        [54.50, 56.25, 56.50, 57.25, 53.25, 55.00, 57.50, 54.25,
         57.50, 55.75, 56.00, 55.50, 56.75, 55.75, 57.25, 53.25],
        "many exact |d| ties with 14 <= n <= 50: 'auto' resolves to the tie-corrected normal approximation")
    a, b = random_case(rng, 20, 0.5, 1.0)
    a[3] = b[3]
    a[11] = b[11]
    add("zero_diff_n20", a, b,
        f"random, numpy default_rng({RANDOM_CASES_SEED}), sixth draw, pairs 3 and 11 set equal: "
        "zeros with n > 13, normal approximation with the zeros dropped")
    return cases


# --------------------------------------------------------------------------------------------
# helpers


def call(fn):
    """Run fn, capturing warnings. Returns (value, warning texts, exception text or None)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            value = fn()
            err = None
        except Exception as e:  # noqa: BLE001 - SciPy raising is itself a recorded outcome
            value = None
            err = f"{type(e).__name__}: {e}"
    texts = []
    for w in caught:
        t = f"{w.category.__name__}: {w.message}"
        if t not in texts:
            texts.append(t)
    return value, texts, err


def raw(x):
    """A JSON-safe copy of what SciPy returned (non-finite floats as strings)."""
    if x is None:
        return None
    if isinstance(x, (list, tuple)):
        return [raw(v) for v in x]
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def finite(x):
    if isinstance(x, (list, tuple)):
        return all(finite(v) for v in x)
    return x is not None and math.isfinite(float(x))


class Record:
    def __init__(self, out):
        self.out = out
        self.notes = []
        self.returned = {}

    def put(self, fields, fn, what):
        """fields: names; fn returns a tuple of the same length. Null all of them on any
        warning, exception or non-finite value."""
        value, warns, err = call(fn)
        if err is None and not warns and all(finite(v) for v in value):
            for f, v in zip(fields, value):
                self.out[f] = [float(x) for x in v] if isinstance(v, (list, tuple)) else float(v)
            return value
        for f in fields:
            self.out[f] = None
        if err is not None:
            self.notes.append(f"{what} raised {err}")
        else:
            shown = ", ".join(f"{f}={raw(v)!r}" for f, v in zip(fields, value))
            bits = [f"{what} returned {shown}"]
            if warns:
                bits.append("with warning(s) " + " | ".join(warns))
            self.notes.append("; ".join(bits))
            for f, v in zip(fields, value):
                self.returned[f] = raw(v)
        return value


def wilcoxon_auto_method(d):
    """Replicates SciPy 1.17.1's resolution of method='auto' (see module docstring)."""
    n = len(d)
    if n > 50:
        return "asymptotic"
    nz = np.abs(d[d != 0])
    has_ties = len(np.unique(nz)) < len(nz)
    n_zero = int(np.count_nonzero(d == 0))
    if not (has_ties or n_zero > 0):
        return "exact"
    if n <= 13:
        return "permutation"
    return "asymptotic"


def same(x, y):
    x, y = float(x), float(y)
    return (math.isnan(x) and math.isnan(y)) or x == y


# --------------------------------------------------------------------------------------------
# per-case statistics


def compute_case(case):
    a = np.asarray(case["a"], dtype=np.float64)
    b = np.asarray(case["b"], dtype=np.float64)
    d = a - b
    n = len(d)
    out = {
        "name": case["name"],
        "comment": case["comment"],
        "n": n,
        "a": case["a"],
        "b": case["b"],
        "d": [float(x) for x in d],
    }
    nz = np.abs(d[d != 0])
    out["n_zero"] = int(np.count_nonzero(d == 0))
    out["has_ties"] = bool(len(np.unique(nz)) < len(nz))
    rec = Record(out)

    rec.put(["mean_diff"], lambda: (np.mean(d),), "np.mean(d)")
    rec.put(["d_std_ddof1"], lambda: (np.std(d, ddof=1),), "np.std(d, ddof=1)")

    def t_ci():
        m = np.mean(d)
        half = stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * np.std(d, ddof=1) / math.sqrt(n)
        return ([m - half, m + half],)

    rec.put(["t_ci"], t_ci, "t-interval (stats.t.ppf(0.975, n-1))")

    def ttest():
        r = stats.ttest_rel(a, b)
        return (r.statistic, r.pvalue)

    rec.put(["ttest_t", "ttest_p"], ttest, "stats.ttest_rel(a, b)")

    method = wilcoxon_auto_method(d)
    out["wilcoxon_method"] = method

    def wil_auto():
        r = stats.wilcoxon(a, b)
        return (r.statistic, r.pvalue)

    got = rec.put(["wilcoxon_stat", "wilcoxon_p"], wil_auto, "stats.wilcoxon(a, b) (method='auto')")

    # cross-check the resolved method: the explicit method must reproduce the auto result
    explicit = {"exact": "exact", "asymptotic": "asymptotic", "permutation": stats.PermutationMethod()}[method]
    chk, _, err = call(lambda: stats.wilcoxon(a, b, method=explicit))
    assert err is None and got is not None, (case["name"], err)
    assert same(chk.statistic, got[0]) and same(chk.pvalue, got[1]), (case["name"], method, chk, got)
    if method == "permutation":
        # and in these cases the asymptotic p-value differs, so 'auto' did not take that route
        asy, _, _ = call(lambda: stats.wilcoxon(a, b, method="asymptotic"))
        assert not same(asy.pvalue, got[1]), case["name"]

    def wil_approx():
        r = stats.wilcoxon(a, b, method="approx")
        return (r.statistic, r.pvalue, r.zstatistic)

    rec.put(["wilcoxon_approx_stat", "wilcoxon_approx_p", "wilcoxon_approx_z"], wil_approx,
            "stats.wilcoxon(a, b, method='approx')")

    for field, bmethod in (("bootstrap_percentile_ci", "percentile"), ("bootstrap_bca_ci", "BCa")):
        def boot(bmethod=bmethod):
            r = stats.bootstrap((d,), np.mean, confidence_level=CONFIDENCE,
                                n_resamples=BOOTSTRAP_N_RESAMPLES, method=bmethod,
                                rng=np.random.default_rng(BOOTSTRAP_SEED))
            ci = r.confidence_interval
            return ([ci.low, ci.high],)

        rec.put([field], boot, f"stats.bootstrap(method='{bmethod}')")

    if rec.notes:
        out["note"] = "; ".join(rec.notes)
        out["scipy_returned"] = rec.returned
    return out


# --------------------------------------------------------------------------------------------
# Holm-Bonferroni


def holm_vectorised(p):
    p = np.asarray(p, dtype=np.float64)
    m = len(p)
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adj_sorted = np.maximum.accumulate(scaled)
    adj = np.empty(m)
    adj[order] = adj_sorted
    return [float(x) for x in adj]


def holm_loop(p):
    """Straight from the definition, with plain Python floats."""
    m = len(p)
    order = sorted(range(m), key=lambda i: (p[i], i))
    adj = [0.0] * m
    running = 0.0
    for j, i in enumerate(order, start=1):  # j is the 1-based rank
        running = max(running, min(1.0, (m - j + 1) * p[i]))
        adj[i] = running
    return adj


HOLM_VECTORS = [
    ("single", [0.03], "m = 1: unchanged"),
    ("sorted_distinct", [0.001, 0.01, 0.02, 0.04], "already ascending"),
    ("unsorted", [0.04, 0.001, 0.03, 0.005, 0.2], "original order must be restored"),
    ("monotonicity", [0.01, 0.011, 0.04, 0.045], "step-down max carries a larger earlier value forward"),
    ("ties", [0.02, 0.01, 0.02, 0.02, 0.3], "tied raw p-values get the same adjusted value"),
    ("clip_above_one", [0.4, 0.6, 0.3, 0.9, 0.5], "(m - j + 1) p > 1: clipped to 1"),
    ("with_zero_and_one", [0.0, 1.0, 0.025, 0.5], "p = 0 and p = 1 present"),
    ("paper_six_baselines", [0.0123, 0.0481, 0.2217, 0.0009, 0.0481, 0.6402],
     "six comparisons against one method, one tie"),
]


def compute_holm():
    out = []
    for name, p, comment in HOLM_VECTORS:
        v = holm_vectorised(p)
        lp = holm_loop(p)
        assert len(v) == len(lp) and all(abs(x - y) <= 1e-15 for x, y in zip(v, lp)), (name, v, lp)
        out.append({"name": name, "comment": comment, "p": [float(x) for x in p], "holm": lp})
    return out


# --------------------------------------------------------------------------------------------


def main():
    cases = [compute_case(c) for c in build_cases()]
    doc = {
        "generated_by": "scripts/stats-fixtures.py",
        "scipy": scipy.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "confidence_level": CONFIDENCE,
        "bootstrap": {
            "n_resamples": BOOTSTRAP_N_RESAMPLES,
            "rng": f"numpy.random.default_rng({BOOTSTRAP_SEED}), fresh for every call",
            "statistic": "np.mean",
        },
        "wilcoxon_auto_rule": (
            "n = len(d) including zeros; n > 50 -> asymptotic; else no ties among nonzero |d| and "
            "no zero d -> exact; else n <= 13 -> permutation (exhaustive sign flips); "
            "else asymptotic. zero_method='wilcox' drops zeros before ranking; correction=False."
        ),
        "cases": cases,
        "holm": compute_holm(),
    }
    text = json.dumps(doc, indent=2, allow_nan=False) + "\n"
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        f.write(text)
    print(f"wrote {os.path.normpath(OUT)}: {len(cases)} cases, {len(doc['holm'])} Holm vectors", file=sys.stderr)


if __name__ == "__main__":
    main()
