//! Proposal time of the search samplers (`src/search/`): one TPE proposal with 1,000
//! completed trials in a 3-parameter space (target < 5 ms), against Optuna 2.5's
//! `TPESampler` on the very same 1,000 trials, measured in the same run.
//!
//! `cargo bench --no-default-features --bench search`. The peer runs when a Python with
//! `optuna` is found: `RST_BENCH_OPTUNA_PYTHON`, else `/tmp/optuna-venv/bin/python` (made
//! as `scripts/optuna_tpe_parity.py` says); without one its row says so.
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use rst::search::{random, tpe, Direction, Distribution, ParamValue, Space, Trial, TrialState};

const TRIALS: usize = 1000;

/// The space and 1,000 random trials of a smooth objective (optimum lr 1e-3, dropout 0.2,
/// layers 4), as `tpe::tests::thousand_trials`.
fn history() -> (Space, Vec<Trial>) {
    let mut space = Space::new();
    space.insert("lr".into(), Distribution::log_float(1e-5, 1e-1));
    space.insert("dropout".into(), Distribution::float(0.0, 0.5));
    space.insert("layers".into(), Distribution::int(1, 8));
    let trials = (0..TRIALS)
        .map(|t| {
            let params = random::propose(&space, t, 77).expect("a valid space");
            let (ParamValue::Float(lr), ParamValue::Float(dropout), ParamValue::Int(layers)) =
                (params["lr"], params["dropout"], params["layers"])
            else {
                unreachable!("the space's kinds")
            };
            let value = (lr.log10() + 3.0).powi(2)
                + (dropout - 0.2).powi(2)
                + ((layers - 4) as f64).powi(2) / 10.0;
            Trial {
                number: t,
                params,
                value: Some(value),
                state: TrialState::Complete,
                intermediate: Vec::new(),
            }
        })
        .collect();
    (space, trials)
}

/// Seconds per rst TPE proposal (the median of 5 rounds of 100).
fn rst_tpe(space: &Space, trials: &[Trial]) -> f64 {
    let mut rounds: Vec<f64> = (0..5)
        .map(|r| {
            let t0 = Instant::now();
            for i in 0..100 {
                std::hint::black_box(
                    tpe::propose(space, trials, TRIALS + r * 100 + i, 0, Direction::Minimize)
                        .expect("proposes"),
                );
            }
            t0.elapsed().as_secs_f64() / 100.0
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[2]
}

/// Optuna 2.5's TPESampler on the same trials (added with `create_trial`): seconds per
/// trial of `study.optimize` whose objective only suggests the 3 parameters (what a user
/// pays per proposal, in-memory storage), the median of 5 rounds of 20.
const OPTUNA: &str = r#"
import json, sys, time, warnings
import optuna
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
from optuna.distributions import LogUniformDistribution, UniformDistribution, IntUniformDistribution
optuna.logging.set_verbosity(optuna.logging.WARNING)
rows = json.load(sys.stdin)
dists = {"lr": LogUniformDistribution(1e-5, 1e-1), "dropout": UniformDistribution(0.0, 0.5),
         "layers": IntUniformDistribution(1, 8)}
def objective(trial):
    trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    trial.suggest_float("dropout", 0.0, 0.5)
    trial.suggest_int("layers", 1, 8)
    return 1.0
rounds = []
for r in range(5):
    # A fresh study holding the 1,000 trials each round, so proposals see 1,000 to 1,019.
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=r))
    for row in rows:
        study.add_trial(optuna.trial.create_trial(params=row["params"], distributions=dists,
                                                  value=row["value"]))
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=20)
    rounds.append((time.perf_counter() - t0) / 20)
rounds.sort()
print(json.dumps({"seconds": rounds[2], "optuna": optuna.__version__}))
"#;

fn optuna_python() -> Option<String> {
    let p = std::env::var("RST_BENCH_OPTUNA_PYTHON")
        .unwrap_or_else(|_| "/tmp/optuna-venv/bin/python".into());
    let ok = Command::new(&p)
        .args(["-c", "import optuna"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(p)
}

fn optuna_tpe(python: &str, trials: &[Trial]) -> Result<(f64, String), String> {
    let rows: Vec<serde_json::Value> = trials
        .iter()
        .map(|t| {
            let num = |v: &ParamValue| match *v {
                ParamValue::Float(x) => serde_json::json!(x),
                ParamValue::Int(i) => serde_json::json!(i),
                ParamValue::Categorical(c) => serde_json::json!(c),
            };
            serde_json::json!({
                "params": t.params.iter().map(|(k, v)| (k.clone(), num(v))).collect::<serde_json::Map<_, _>>(),
                "value": t.value,
            })
        })
        .collect();
    let mut child = Command::new(python)
        .args(["-c", OPTUNA])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {python}: {e}"))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(serde_json::to_string(&rows).expect("JSON").as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {:?}", out.stdout))?;
    Ok((
        v["seconds"].as_f64().ok_or("no seconds")?,
        v["optuna"].as_str().unwrap_or("?").to_string(),
    ))
}

fn main() {
    let (space, trials) = history();
    let ours = rst_tpe(&space, &trials);
    println!("TPE proposal, {TRIALS} completed trials, 3 parameters (target < 5 ms):");
    println!("  rst        {:>9.3} ms", ours * 1e3);
    match optuna_python() {
        None => println!(
            "  Optuna     not measured: no Python with optuna (set RST_BENCH_OPTUNA_PYTHON, or \
             make /tmp/optuna-venv as scripts/optuna_tpe_parity.py says)"
        ),
        Some(py) => match optuna_tpe(&py, &trials) {
            Ok((theirs, version)) => println!(
                "  Optuna {version} {:>7.3} ms   (rst is {:.1}x faster)",
                theirs * 1e3,
                theirs / ours
            ),
            Err(e) => println!("  Optuna     failed: {e}"),
        },
    }
}
