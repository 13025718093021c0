//! `rst run --executor slurm` against a real one-node Slurm cluster on this machine
//! (`scripts/slurm-local up`: installs slurm-wlm and munge with apt if missing). Needs root
//! on Debian; elsewhere the cluster tests are skipped with a loud message on stderr.
//!
//! The cluster is shared, so its scenarios run one after the other in one test function.
//! The resources tests below need no cluster.
use crate::common;

#[cfg(feature = "torch")]
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{wait_for, TestDir};
#[cfg(feature = "torch")]
use crate::common::{with_band_stages, write_band_idx};

/// Starts the cluster; false (after a loud message) where it cannot run here.
fn cluster_up() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let apt = Path::new("/usr/bin/apt-get").exists() && Path::new("/etc/debian_version").exists();
    let have = Command::new("sbatch").arg("--version").output().is_ok();
    if !root || !(apt || have) {
        // Straight to the process's stderr: the test harness captures eprintln!.
        let _ = writeln!(
            std::io::stderr(),
            "\n\
             ************************************************************************\n\
             * SKIPPED: the Slurm executor tests need root on Debian (apt) to start  *\n\
             * a one-node cluster with scripts/slurm-local up (root: {root}, apt: {apt}) *\n\
             ************************************************************************\n"
        );
        return false;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/slurm-local");
    let out = Command::new(&script)
        .arg("up")
        .output()
        .expect("run scripts/slurm-local");
    assert!(
        out.status.success(),
        "scripts/slurm-local up failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

#[cfg(feature = "torch")]
/// Data stages, a tiny training, and command stages (a matrix, one reading the model).
const PIPELINE: &str = r#"
name: mixed
resources: {memory: 512M, time: 10m}
stages:
  # BAND DATA STAGES (tests/common: `data` and `target`)
  noisy:
    kind: noise
    inputs: {data: target}
    params: {rate: 0.2, mode: uniform}
  train:
    kind: train
    inputs: {data: noisy}
    threads: 2
    resources: {memory: 1G, gpus: 0, time: 5m}
    params: {model: resnet-mini, epochs: 2, batch_size: 16, lr: 0.01, device: cpu}
  shout:
    kind: command
    matrix: {word: [alpha, beta]}
    params: {shell: 'echo ${word} | tr a-z A-Z > $RST_OUT/word'}
  files:
    kind: command
    inputs: {model: train, words: shout}
    params: {shell: 'ls $RST_IN_MODEL > $RST_OUT/model-files; cat $RST_IN_WORDS_0/word $RST_IN_WORDS_1/word > $RST_OUT/words'}
"#;

#[cfg(feature = "torch")]
fn mixed_project() -> TestDir {
    let t = TestDir::new();
    write_band_idx(&t);
    t.write("p.yaml", &with_band_stages(PIPELINE));
    t
}

#[cfg(feature = "torch")]
/// instance → (key, artifact digest), over all cache entries.
fn digests(t: &TestDir) -> BTreeMap<String, (String, String)> {
    t.entry_values()
        .into_iter()
        .map(|e| {
            (
                e["instance"].as_str().unwrap().to_string(),
                (
                    e["key"].as_str().unwrap().to_string(),
                    e["artifact"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect()
}

const SLURM: [&str; 2] = ["--executor", "slurm"];

fn run_slurm(t: &TestDir, extra: &[&str]) -> common::Output {
    let mut args = vec!["run", "p.yaml"];
    args.extend_from_slice(&SLURM);
    args.extend_from_slice(extra);
    t.rst(&args)
}

#[test]
fn slurm_executor() {
    if !cluster_up() {
        return;
    }
    let t0 = Instant::now();
    let scenarios: &[(&str, fn())] = &[
        // The one scenario that trains: it needs the rst-torch worker.
        #[cfg(feature = "torch")]
        ("same artifacts as local", same_artifacts_as_local),
        ("failure", failure_shows_the_stage_error_and_the_slurm_log),
        ("refused submission", refused_submission_and_same_key_twins),
        ("scancel + rerun", scancelled_job_then_rerun_completes),
        ("Ctrl-C", ctrl_c_cancels_the_submitted_jobs),
        (
            "two concurrent runs",
            two_concurrent_runs_compute_each_stage_once,
        ),
        ("bundles", bundles_share_jobs),
        ("a study", a_study_shares_its_trials_with_local_runs),
    ];
    for &(name, scenario) in scenarios {
        let t = Instant::now();
        scenario();
        eprintln!("slurm: {name} ({:.1?})", t.elapsed());
    }
    eprintln!("slurm: all scenarios in {:.1?}", t0.elapsed());
}

#[cfg(feature = "torch")]
/// (1) The same pipeline under both executors gives the same keys and byte-identical
/// artifacts; cached stages are never submitted.
fn same_artifacts_as_local() {
    let local = mixed_project();
    let out = local.ok(&["run", "p.yaml"]);
    assert_eq!(out.summary().ran, 7, "{}", out.stderr);

    let slurm = mixed_project();
    let out = run_slurm(&slurm, &[]);
    out.assert_code(0);
    assert_eq!(out.summary().ran, 7, "{}", out.stderr);
    // Each stage was a Slurm job, reported with its id.
    assert_eq!(
        out.stderr
            .lines()
            .filter(|l| l.starts_with("queued "))
            .count(),
        7,
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("queued   train (slurm "),
        "{}",
        out.stderr
    );
    assert_eq!(digests(&slurm), digests(&local));
    assert_eq!(
        slurm.artifact_file("files", "words"),
        "ALPHA\nBETA\n",
        "command stages ran in the job"
    );
    assert!(slurm
        .artifact_file("files", "model-files")
        .contains("model.json"));
    // The stage logs are where the local executor puts them.
    let key = &digests(&slurm)["train"].0;
    assert!(slurm.exists(&format!("cache/logs/{key}.log")));

    // Cached: nothing is submitted.
    let out = run_slurm(&slurm, &[]);
    out.assert_code(0);
    assert_eq!(out.summary().cached, 7, "{}", out.stderr);
    assert!(!out.stderr.contains("queued"), "{}", out.stderr);
}

/// (2) A failing stage: its own error, the Slurm log's path, exit 1, dependents not run.
fn failure_shows_the_stage_error_and_the_slurm_log() {
    let t = TestDir::new();
    t.write(
        "p.yaml",
        r#"
name: failing
stages:
  bad:
    kind: command
    params: {shell: 'echo about to fail >&2; exit 3'}
  after:
    kind: command
    inputs: {x: bad}
    params: {shell: 'echo no > $RST_OUT/x'}
"#,
    );
    let local = t.rst(&["run", "p.yaml"]);
    local.assert_code(1);
    std::fs::remove_dir_all(t.join("cache")).unwrap();
    let out = run_slurm(&t, &[]);
    out.assert_code(1);
    let failed = out
        .stderr
        .lines()
        .find(|l| l.contains("FAILED bad"))
        .unwrap_or_else(|| panic!("{}", out.stderr));
    // The stage's own message, as locally.
    let local_msg = local
        .stderr
        .lines()
        .find(|l| l.contains("FAILED bad"))
        .unwrap()
        .split_once(": ")
        .unwrap()
        .1
        .to_string();
    assert!(failed.contains(&local_msg), "{failed}\nlocal: {local_msg}");
    let log = failed
        .split("slurm log ")
        .nth(1)
        .unwrap_or_else(|| panic!("no slurm log in {failed}"))
        .trim_end_matches(']');
    assert!(
        log.ends_with(".out") && Path::new(log).exists(),
        "slurm log {log}"
    );
    assert_eq!(out.summary().not_run, 1, "{}", out.stderr);
    // The stage's log (its stderr) is where the local executor keeps it.
    out.assert_stderr_contains("log: ");
    let stage_log = out
        .stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("log: "))
        .unwrap();
    assert!(
        std::fs::read_to_string(stage_log)
            .unwrap()
            .contains("about to fail"),
        "{stage_log}"
    );
    assert!(t.entries().is_empty());
}

/// sbatch refusing a job (more memory than any node has) is the user's error (exit 2,
/// sbatch's reason); a twin instance with the same key still runs (regression: the two
/// shared one job file, and the refused one's cleanup removed it before the twin's job
/// started).
fn refused_submission_and_same_key_twins() {
    let t = TestDir::new();
    t.write(
        "p.yaml",
        r#"
name: refused
stages:
  huge:
    kind: command
    resources: {memory: 100000G}
    params: {shell: 'echo x > $RST_OUT/x'}
  twin:
    kind: command
    params: {shell: 'echo x > $RST_OUT/x'}
"#,
    );
    let out = run_slurm(&t, &["--keep-going"]);
    out.assert_code(2);
    out.assert_stderr_contains("FAILED huge: sbatch refused the job: ");
    out.assert_stderr_contains("--mem=102400000M");
    let s = out.summary();
    assert_eq!((s.ran, s.failed), (1, 1), "{}", out.stderr);
}

fn job_ids(t: &TestDir) -> Vec<String> {
    common::read_dir_sorted(&t.join("cache/slurm/jobs"))
        .iter()
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?;
            Some(name.strip_suffix(".json")?.rsplit('.').next()?.to_string())
        })
        .collect()
}

/// (3) A job cancelled mid-stage fails the run (exit 1, says CANCELLED); the cache keeps
/// nothing of it; the next run resubmits only what is missing and completes.
fn scancelled_job_then_rerun_completes() {
    let t = TestDir::new();
    t.write(
        "p.yaml",
        r#"
name: cancel
stages:
  quick:
    kind: command
    params: {shell: 'echo quick >> $RST_PROJECT/ran.log; echo q > $RST_OUT/q'}
  slow:
    kind: command
    inputs: {q: quick}
    params: {shell: 'echo slow >> $RST_PROJECT/ran.log; sleep 2; echo s > $RST_OUT/s'}
"#,
    );
    let child = t
        .command(&["run", "p.yaml", "--executor", "slurm"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until `slow` is running (it wrote to ran.log), then cancel its job.
    wait_for("slow to start", Duration::from_secs(30), || {
        t.exists("ran.log") && t.read("ran.log").contains("slow")
    });
    let ids = job_ids(&t);
    assert_eq!(ids.len(), 1, "one outstanding job: {ids:?}");
    // `rst status` shows it running, with its job id.
    let st = t.ok(&["status", "p.yaml"]);
    assert!(
        st.stdout
            .lines()
            .any(|l| l.starts_with("running") && l.contains(&format!("slurm {}", ids[0]))),
        "{}",
        st.stdout
    );
    let ok = Command::new("scancel").arg(&ids[0]).status().unwrap();
    assert!(ok.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("CANCELLED"), "{stderr}");
    assert!(stderr.contains("slurm log "), "{stderr}");
    assert_eq!(t.entries().len(), 1, "only `quick` is cached");
    assert_eq!(t.take_log(), ["quick", "slow"]);

    let out = run_slurm(&t, &[]);
    out.assert_code(0);
    let s = out.summary();
    assert_eq!((s.ran, s.cached), (1, 1), "{}", out.stderr);
    assert_eq!(t.take_log(), ["slow"], "only the missing stage ran again");
    assert_eq!(t.artifact_file("slow", "s"), "s\n");
    // The killed job's staging dir was removed by the rerun.
    let left: Vec<_> = common::read_dir_sorted(&t.join("cache/tmp"))
        .into_iter()
        .filter(|p| p.file_name().unwrap() != "jobs")
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(job_ids(&t).is_empty(), "no job records left");
}

/// Ctrl-C (SIGINT) on `rst run`: every job it submitted, running or queued, is
/// cancelled; exit 130; nothing is cached.
fn ctrl_c_cancels_the_submitted_jobs() {
    let t = TestDir::new();
    t.write(
        "p.yaml",
        r#"
name: interrupt
stages:
  slow:
    kind: command
    matrix: {i: [1, 2, 3, 4]}
    params: {shell: 'echo ${i} >> $RST_PROJECT/ran.log; sleep 30; echo > $RST_OUT/x'}
"#,
    );
    let child = t
        .command(&["run", "p.yaml", "--executor", "slurm"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("a stage to start", Duration::from_secs(30), || {
        t.exists("ran.log")
    });
    let ids = job_ids(&t);
    assert_eq!(ids.len(), 4, "{ids:?}");
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    let q = Command::new("squeue")
        .args(["-h", "-j", &ids.join(","), "-o", "%i %T"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&q.stdout);
    assert!(
        listed
            .lines()
            .all(|l| l.ends_with("CANCELLED") || l.ends_with("COMPLETING")),
        "jobs left in the queue: {listed}"
    );
    assert!(t.entries().is_empty());
    assert!(job_ids(&t).is_empty(), "no job records left");
}

/// (4) Two concurrent runs on one cache: each stage is computed once (the key locks
/// work across jobs); the other run reuses it.
fn two_concurrent_runs_compute_each_stage_once() {
    let t = TestDir::new();
    t.write(
        "p.yaml",
        r#"
name: twice
stages:
  a:
    kind: command
    matrix: {i: [1, 2, 3]}
    params: {shell: 'echo a${i} >> $RST_PROJECT/ran.log; sleep 0.5; echo ${i} > $RST_OUT/x'}
  b:
    kind: command
    inputs: {xs: a}
    params: {shell: 'echo b >> $RST_PROJECT/ran.log; cat $RST_IN_XS_0/x $RST_IN_XS_1/x $RST_IN_XS_2/x > $RST_OUT/y'}
"#,
    );
    let (one, two) = std::thread::scope(|s| {
        let one = s.spawn(|| run_slurm(&t, &[]));
        let two = s.spawn(|| run_slurm(&t, &[]));
        (one.join().unwrap(), two.join().unwrap())
    });
    one.assert_code(0);
    two.assert_code(0);
    let mut log = t.take_log();
    log.sort();
    assert_eq!(log, ["a1", "a2", "a3", "b"], "each stage computed once");
    let ran = one.summary().ran + two.summary().ran;
    let done = one.summary().ran + one.summary().cached + two.summary().ran + two.summary().cached;
    assert_eq!(ran, 4, "{}\n{}", one.stderr, two.stderr);
    assert_eq!(done, 8);
    assert_eq!(t.artifact_file("b", "y"), "1\n2\n3\n");
}

/// `--slurm-bundle 4`: ready stages of the same shape share jobs; each still reports, caches
/// and fails on its own.
fn bundles_share_jobs() {
    let t = TestDir::new();
    t.write(
        "p.yaml",
        r#"
name: bundled
stages:
  a:
    kind: command
    matrix: {i: [1, 2, 3, 4, 5, 6, 7, 8]}
    params: {shell: 'test ${i} != 5 || exit 9; echo ${i} > $RST_OUT/x'}
  big:
    kind: command
    resources: {memory: 100M}
    params: {shell: 'echo big > $RST_OUT/x'}
"#,
    );
    let out = run_slurm(&t, &["--slurm-bundle", "4", "--keep-going"]);
    out.assert_code(1);
    let s = out.summary();
    assert_eq!((s.ran, s.failed), (8, 1), "{}", out.stderr);
    out.assert_stderr_contains("FAILED a[i=5]: ");
    let jobs: std::collections::BTreeSet<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("queued "))
        .filter_map(|l| l.rsplit("(slurm ").next())
        .collect();
    // 8 stages of one shape in bundles of 4, and `big` alone: 3 jobs (more only if the
    // scheduler handed the stages over unusually slowly).
    assert!(
        (3..=5).contains(&jobs.len()),
        "{} jobs: {}",
        jobs.len(),
        out.stderr
    );
    assert_eq!(t.artifact_file("a[i=8]", "x"), "8\n");
}

/// A study whose trials run as Slurm jobs: a local run then finds every trial cached and
/// the same study, and raising `trials` under Slurm computes only the new ones.
fn a_study_shares_its_trials_with_local_runs() {
    let t = TestDir::new();
    let text = |trials: usize| {
        format!(
            r#"
name: study
stages:
  fit:
    kind: command
    trial_of: tune
    params:
      shell: >-
        echo ${{trial}} >> $RST_PROJECT/ran.log;
        awk -v x=${{x}} 'BEGIN {{ printf "{{\"loss\": %.9f}}\n", (x - 1)^2 }}' > $RST_OUT/m.json
  tune:
    kind: search
    params:
      objective: {{stage: fit, file: m.json, key: loss}}
      direction: minimize
      trials: {trials}
      parallel: 2
      sampler: random
      seed: 3
      space: {{x: {{low: -3, high: 3}}}}
"#
        )
    };
    t.write("p.yaml", &text(2));
    t.ok(&["run", "p.yaml"]);
    assert_eq!(t.take_log().len(), 2);
    t.write("p.yaml", &text(4));
    let out = run_slurm(&t, &[]);
    out.assert_code(0);
    let mut ran = t.take_log();
    ran.sort();
    assert_eq!(
        ran,
        ["2", "3"],
        "only the new trials, as Slurm jobs: {}",
        out.stderr
    );
    assert!(out.stderr.contains("(slurm "), "{}", out.stderr);
    let study = t.artifact_file("tune", "trials.json");
    let again = t.ok(&["run", "p.yaml"]);
    assert_eq!(again.summary().ran, 0, "{}", again.stderr);
    assert!(t.take_log().is_empty());
    assert_eq!(t.artifact_file("tune", "trials.json"), study);
}

/// Resources are checked like every other key: file:line, exit 2.
#[test]
fn bad_resources_are_user_errors() {
    let cases = [
        (
            "name: r\nresources: {memory: lots}\nstages:\n  a:\n    kind: command\n    params: {shell: 'echo a > $RST_OUT/x'}\n",
            "p.yaml:2:21: memory must be a size like 4G",
        ),
        (
            "name: r\nstages:\n  a:\n    kind: command\n    resources: {time: soon}\n    params: {shell: 'echo a > $RST_OUT/x'}\n",
            "p.yaml:5:23: time must be minutes",
        ),
        (
            "name: r\nstages:\n  a:\n    kind: command\n    resources: {gpus: -1}\n    params: {shell: 'echo a > $RST_OUT/x'}\n",
            "p.yaml:5:23: gpus must be a whole number",
        ),
        (
            "name: r\nstages:\n  a:\n    kind: command\n    resources: {mem: 1G}\n    params: {shell: 'echo a > $RST_OUT/x'}\n",
            "unknown field `mem`",
        ),
    ];
    for (yaml, want) in cases {
        let t = TestDir::new();
        t.write("p.yaml", yaml);
        let out = t.rst(&["run", "p.yaml"]);
        out.assert_code(2).assert_stderr_contains(want);
        out.assert_no_panic();
    }
    // Slurm-only flags without the Slurm executor.
    let t = TestDir::new();
    t.write(
        "p.yaml",
        "name: r\nstages:\n  a:\n    kind: command\n    params: {shell: 'echo a > $RST_OUT/x'}\n",
    );
    t.rst(&["run", "p.yaml", "--partition", "x"])
        .assert_code(2)
        .assert_stderr_contains("--partition needs --executor slurm");
    t.rst(&[
        "run",
        "p.yaml",
        "--executor",
        "slurm",
        "--slurm-opt",
        "output=x",
    ])
    .assert_code(2)
    .assert_stderr_contains("rst sets --output itself");
}

/// Resources only shape the job: they are not part of any cache key.
#[test]
fn resources_do_not_change_keys() {
    let t = TestDir::new();
    let yaml = |mem: &str, time: &str| {
        format!("name: r\nresources: {{memory: {mem}}}\nstages:\n  a:\n    kind: command\n    resources: {{time: {time}, gpus: 0}}\n    params: {{shell: 'echo a > $RST_OUT/x'}}\n")
    };
    t.write("p.yaml", &yaml("1G", "10m"));
    t.ok(&["run", "p.yaml"]);
    t.write("p.yaml", &yaml("8G", "2h"));
    let out = t.ok(&["run", "p.yaml"]);
    assert_eq!(out.summary().cached, 1, "{}", out.stderr);
}
