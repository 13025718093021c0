#!/usr/bin/env python3
"""Reference numbers for rst's TPE sampler (src/search/tpe.rs): Optuna's own TPESampler and
RandomSampler on two benchmark functions, 20 seeds x 50 trials each.

Writes tests/fixtures/optuna_tpe_parity.json: per function and sampler, the best value after
50 trials for every seed, with their median and quartiles (numpy's default, linear
interpolation). The unit test `tpe::tests::parity_with_optuna_fixture` runs rst's samplers
on the same functions and compares medians with these.

Run with a scratch virtual environment that has the pinned Optuna (2.5.0, the version the
RegSL authors used) and numpy:

    python3 -m venv /tmp/optuna-venv
    /tmp/optuna-venv/bin/pip install optuna==2.5.0 numpy
    /tmp/optuna-venv/bin/python scripts/optuna_tpe_parity.py

Only TPESampler and RandomSampler are used, with their default settings (no pruner is ever
consulted: the objectives never call trial.should_prune()).
"""

import json
import math
import os
import platform
import sys

import numpy as np
import optuna
import scipy

SEEDS = list(range(20))
N_TRIALS = 50
OUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "optuna_tpe_parity.json"
)


def log_quadratic(trial):
    # x log-scaled over six decades, y linear: minimum 0 at x = 10, y = 0.5.
    x = trial.suggest_float("x", 1e-3, 1e3, log=True)
    y = trial.suggest_float("y", -5.0, 5.0)
    return (math.log10(x) - 1.0) ** 2 + (y - 0.5) ** 2


def branin(trial):
    # The Branin-Hoo function: global minimum 0.397887 at three points.
    x1 = trial.suggest_float("x1", -5.0, 10.0)
    x2 = trial.suggest_float("x2", 0.0, 15.0)
    a = 1.0
    b = 5.1 / (4.0 * math.pi ** 2)
    c = 5.0 / math.pi
    r = 6.0
    s = 10.0
    t = 1.0 / (8.0 * math.pi)
    return a * (x2 - b * x1 ** 2 + c * x1 - r) ** 2 + s * (1.0 - t) * math.cos(x1) + s


FUNCTIONS = {"log_quadratic": log_quadratic, "branin": branin}
SAMPLERS = {
    "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed),
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
}


def summary(bests):
    q1, median, q3 = np.percentile(bests, [25, 50, 75])
    return {
        "best_per_seed": bests,
        "median": float(median),
        "q1": float(q1),
        "q3": float(q3),
    }


def main():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results = {}
    for fname, objective in FUNCTIONS.items():
        results[fname] = {}
        for sname, make in SAMPLERS.items():
            bests = []
            for seed in SEEDS:
                study = optuna.create_study(direction="minimize", sampler=make(seed))
                study.optimize(objective, n_trials=N_TRIALS)
                bests.append(float(study.best_value))
            results[fname][sname] = summary(bests)
            r = results[fname][sname]
            print(
                f"{fname:14} {sname:6} median {r['median']:.6g}  "
                f"IQR [{r['q1']:.6g}, {r['q3']:.6g}]",
                file=sys.stderr,
            )
    doc = {
        "generated_by": "scripts/optuna_tpe_parity.py",
        "optuna": optuna.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "python": platform.python_version(),
        "seeds": SEEDS,
        "n_trials": N_TRIALS,
        "direction": "minimize",
        "functions": {
            "log_quadratic": "x in [1e-3, 1e3] log, y in [-5, 5]: (log10 x - 1)^2 + (y - 0.5)^2",
            "branin": "x1 in [-5, 10], x2 in [0, 15]: Branin-Hoo (a=1, b=5.1/(4 pi^2), "
            "c=5/pi, r=6, s=10, t=1/(8 pi)), minimum 0.397887",
        },
        "results": results,
    }
    with open(OUT, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
