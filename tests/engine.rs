//! End-to-end tests of `rst run` and friends: caching, invalidation, parallelism, crash
//! safety, concurrent runs, corruption, failures, graph export, publishing, gc.
//!
//! Every stage is a `sh` one-liner; stages append their name to `$RST_PROJECT/ran.log`,
//! so a test sees which stage bodies actually executed.
use crate::common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::Duration;

use crate::common::{set, TestDir};

/// a → b → m[k=1], m[k=2]
const CHAIN: &str = r#"
name: chain
stages:
  a:
    kind: command
    params: {shell: 'echo a >> $RST_PROJECT/ran.log; echo A > $RST_OUT/x'}
  b:
    kind: command
    inputs: {in: a}
    params: {shell: 'echo b >> $RST_PROJECT/ran.log; cat $RST_IN_IN/x > $RST_OUT/y; echo B >> $RST_OUT/y'}
  m:
    kind: command
    matrix: {k: [1, 2]}
    inputs: {in: b}
    params: {shell: 'echo m${k} >> $RST_PROJECT/ran.log; cat $RST_IN_IN/y > $RST_OUT/z; echo ${k} >> $RST_OUT/z'}
"#;

fn sorted(v: Vec<String>) -> Vec<String> {
    let mut v = v;
    v.sort();
    v
}

#[test]
fn second_run_is_fully_cached() {
    let t = TestDir::new();
    t.write("p.yaml", CHAIN);
    let first = t.ok(&["run", "p.yaml"]);
    assert_eq!(sorted(t.take_log()), ["a", "b", "m1", "m2"]);
    let s = first.summary();
    assert_eq!((s.total, s.ran, s.cached, s.failed), (4, 4, 0, 0), "{s:?}");
    assert_eq!(t.artifact_file("m[k=2]", "z"), "A\nB\n2\n");

    let second = t.ok(&["run", "p.yaml"]);
    assert_eq!(t.take_log(), Vec::<String>::new(), "no stage body may run");
    assert!(second.started().is_empty(), "{}", second.stderr);
    assert_eq!(second.cached(), set(&["a", "b", "m[k=1]", "m[k=2]"]));
    let s = second.summary();
    assert_eq!(
        (s.total, s.ran, s.cached, s.failed, s.not_run),
        (4, 0, 4, 0, 0),
        "{s:?}"
    );
    // `rst status` agrees.
    let st = t.ok(&["status", "p.yaml"]);
    st.assert_stdout_contains("4 of 4 stage instances cached, 0 to run");
}

/// a → b(uses ${scale}) → c, and an independent d.
const PARAM: &str = r#"
name: param
params: {scale: 1}
stages:
  a:
    kind: command
    params: {shell: 'echo a >> $RST_PROJECT/ran.log; echo A > $RST_OUT/x'}
  b:
    kind: command
    inputs: {in: a}
    params: {shell: 'echo b >> $RST_PROJECT/ran.log; cat $RST_IN_IN/x > $RST_OUT/y; echo ${scale} >> $RST_OUT/y'}
  c:
    kind: command
    inputs: {in: b}
    params: {shell: 'echo c >> $RST_PROJECT/ran.log; cat $RST_IN_IN/y > $RST_OUT/z'}
  d:
    kind: command
    params: {shell: 'echo d >> $RST_PROJECT/ran.log; echo D > $RST_OUT/w'}
"#;

#[test]
fn set_param_reruns_exactly_the_downstream_stages() {
    let t = TestDir::new();
    t.write("p.yaml", PARAM);
    t.ok(&["run", "p.yaml"]);
    assert_eq!(sorted(t.take_log()), ["a", "b", "c", "d"]);

    let st = t.ok(&["status", "p.yaml", "--set", "scale=2"]);
    let line = |name: &str| -> String {
        st.stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no status line for {name}:\n{}", st.stdout))
            .to_string()
    };
    for cached in ["a", "d"] {
        assert!(line(cached).starts_with("cached"), "{}", st.stdout);
    }
    let b = line("b");
    assert!(b.starts_with("stale"), "{}", st.stdout);
    assert!(
        b.contains("param ") && b.contains(" -> "),
        "status must name the changed param of b:\n{}",
        st.stdout
    );
    let c = line("c");
    assert!(c.starts_with("stale"), "{}", st.stdout);
    assert!(
        c.contains("runs after its stale input b"),
        "status must say why c reruns:\n{}",
        st.stdout
    );
    st.assert_stdout_contains("2 of 4 stage instances cached, 2 to run");

    let run = t.ok(&["run", "p.yaml", "--set", "scale=2"]);
    assert_eq!(sorted(t.take_log()), ["b", "c"]);
    assert_eq!(run.started(), set(&["b", "c"]));
    assert_eq!(run.cached(), set(&["a", "d"]));
    let s = run.summary();
    assert_eq!((s.ran, s.cached), (2, 2), "{s:?}");
    assert_eq!(t.artifact_file("c", "z"), "A\n2\n");

    // Going back to the default is a full cache hit (the old entries are still there).
    let back = t.ok(&["run", "p.yaml"]);
    assert_eq!(t.take_log(), Vec::<String>::new());
    assert_eq!(back.summary().cached, 4);
}

#[test]
fn upstream_content_change_reruns_dependents() {
    let t = TestDir::new();
    t.write(
        "p.yaml",
        r#"
name: content
stages:
  a:
    kind: command
    params:
      shell: 'echo a >> $RST_PROJECT/ran.log; cat $RST_PROJECT/input.txt > $RST_OUT/x'
      deps: [input.txt]
  b:
    kind: command
    inputs: {in: a}
    params: {shell: 'echo b >> $RST_PROJECT/ran.log; tr a-z A-Z < $RST_IN_IN/x > $RST_OUT/y'}
  u:
    kind: command
    params:
      shell: 'echo u >> $RST_PROJECT/ran.log; grep -v "^#" $RST_PROJECT/notes.txt > $RST_OUT/x'
      deps: [notes.txt]
  v:
    kind: command
    inputs: {in: u}
    params: {shell: 'echo v >> $RST_PROJECT/ran.log; wc -l < $RST_IN_IN/x > $RST_OUT/n'}
"#,
    );
    t.write("input.txt", "hello\n");
    t.write("notes.txt", "one\ntwo\n");
    t.ok(&["run", "p.yaml"]);
    assert_eq!(sorted(t.take_log()), ["a", "b", "u", "v"]);
    assert_eq!(t.artifact_file("b", "y"), "HELLO\n");

    // Edit the declared local file: a and its dependent b rerun, nothing else.
    t.write("input.txt", "world\n");
    let st = t.ok(&["status", "p.yaml"]);
    assert!(
        st.stdout
            .lines()
            .any(|l| l.contains(" a ") && l.contains("file input.txt changed")),
        "status should name the changed file:\n{}",
        st.stdout
    );
    let run = t.ok(&["run", "p.yaml"]);
    assert_eq!(sorted(t.take_log()), ["a", "b"]);
    assert_eq!(run.cached(), set(&["u", "v"]));
    assert_eq!(t.artifact_file("b", "y"), "WORLD\n");

    // Restore the content: everything is cached again.
    t.write("input.txt", "hello\n");
    let run = t.ok(&["run", "p.yaml"]);
    assert_eq!(t.take_log(), Vec::<String>::new());
    assert!(run.started().is_empty(), "{}", run.stderr);
    assert_eq!(run.summary().cached, 4);

    // u reruns (its file changed) but produces byte-identical output: v stays cached.
    t.write("notes.txt", "# a comment\none\ntwo\n");
    let run = t.ok(&["run", "p.yaml"]);
    assert_eq!(t.take_log(), ["u"], "{}", run.stderr);
    assert_eq!(run.started(), set(&["u"]));
    assert_eq!(run.cached(), set(&["a", "b", "v"]));
}

/// Two independent stages that each sleep 1 s and record (start, end).
const TIMED: &str = r#"
name: timed
stages:
  p:
    kind: command
    params: {shell: 's=$(date +%s.%N); sleep 1; e=$(date +%s.%N); echo p $s $e > $RST_OUT/t'}
  q:
    kind: command
    params: {shell: 's=$(date +%s.%N); sleep 1; e=$(date +%s.%N); echo q $s $e > $RST_OUT/t'}
"#;

fn interval(t: &TestDir, stage: &str) -> (f64, f64) {
    let text = t.artifact_file(stage, "t");
    let f: Vec<f64> = text
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    (f[0], f[1])
}

#[test]
fn independent_stages_overlap_with_two_jobs_and_not_with_one() {
    let two = TestDir::new();
    two.write("p.yaml", TIMED);
    let one = TestDir::new();
    one.write("p.yaml", TIMED);
    std::thread::scope(|s| {
        s.spawn(|| two.ok(&["run", "p.yaml", "--jobs", "2"]));
        s.spawn(|| one.ok(&["run", "p.yaml", "--jobs", "1"]));
    });

    let (p, q) = (interval(&two, "p"), interval(&two, "q"));
    assert!(
        p.0 < q.1 && q.0 < p.1,
        "with --jobs 2 the stages must run at the same time: p={p:?} q={q:?}"
    );
    let (p, q) = (interval(&one, "p"), interval(&one, "q"));
    assert!(
        p.1 <= q.0 || q.1 <= p.0,
        "with --jobs 1 the stages must not overlap: p={p:?} q={q:?}"
    );
}

/// Staging dirs in `cache/tmp` (everything but the `jobs` folder).
fn staging_dirs(t: &TestDir) -> Vec<String> {
    common::read_dir_sorted(&t.join("cache/tmp"))
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|n| n != "jobs")
        .collect()
}

#[test]
fn kill_9_mid_stage_leaves_nothing_and_the_rerun_recomputes() {
    let t = TestDir::new();
    t.write(
        "p.yaml",
        r#"
name: killme
stages:
  slow:
    kind: command
    params: {shell: 'echo slow >> $RST_PROJECT/ran.log; echo partial > $RST_OUT/x; touch $RST_PROJECT/marker; sleep 3; echo result > $RST_OUT/x'}
"#,
    );
    let mut child = t
        .command(&["run", "p.yaml"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = child.id();
    common::wait_for("the stage to start", Duration::from_secs(30), || {
        t.exists("marker")
    });
    // The worker leads its own process group (`tmp/<key>.<worker pid>.<n>`): kill -9 it and
    // its stage too, as a crash of the whole machine would, before rst's group.
    let worker: String = staging_dirs(&t)[0].split('.').nth(1).unwrap().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-9", "--", &format!("-{worker}"), &format!("-{pgid}")])
        .status()
        .unwrap();
    assert!(kill.success(), "kill failed");
    let status = child.wait().unwrap();
    assert!(!status.success(), "rst should have been killed: {status:?}");

    // The killed run published nothing.
    assert!(t.entries().is_empty(), "entries: {:?}", t.entries());
    assert!(t.objects().is_empty(), "objects: {:?}", t.objects());
    let left = staging_dirs(&t);
    assert_eq!(
        left.len(),
        2,
        "the killed staging dir and work dir: {left:?}"
    );
    assert!(left[1].starts_with("work."), "{left:?}");
    let st = t.ok(&["status", "p.yaml"]);
    st.assert_stdout_contains("0 of 1 stage instances cached");

    let run = t.ok(&["run", "p.yaml"]);
    assert_eq!(run.started(), set(&["slow"]));
    assert_eq!(t.take_log(), ["slow", "slow"], "the stage runs again");
    assert_eq!(t.artifact_file("slow", "x"), "result\n");
    let key = t.entry_of("slow").unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        left[0].starts_with(&key),
        "the leftover was the stage's staging dir"
    );
    assert_eq!(
        staging_dirs(&t),
        Vec::<String>::new(),
        "no staging dir may remain after the rerun"
    );
    // And the result is a cache hit from now on.
    let again = t.ok(&["run", "p.yaml"]);
    assert_eq!(again.cached(), set(&["slow"]));
}

#[test]
fn concurrent_runs_on_one_cache_compute_once() {
    let t = TestDir::new();
    t.write(
        "p.yaml",
        r#"
name: conc
stages:
  s:
    kind: command
    params: {shell: 'echo s >> $RST_PROJECT/ran.log; sleep 1.5; echo done > $RST_OUT/x'}
  after:
    kind: command
    inputs: {in: s}
    params: {shell: 'cat $RST_IN_IN/x > $RST_OUT/y'}
"#,
    );
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| t.rst(&["run", "p.yaml"]));
        let b = s.spawn(|| t.rst(&["run", "p.yaml"]));
        (a.join().unwrap(), b.join().unwrap())
    });
    a.assert_code(0);
    b.assert_code(0);
    assert_eq!(t.take_log(), ["s"], "the stage body must run exactly once");
    let ran: usize = [&a, &b]
        .iter()
        .map(|o| o.lines_with("done").contains("s") as usize)
        .sum();
    let other: usize = [&a, &b]
        .iter()
        .map(|o| (o.lines_with("reused").contains("s") || o.cached().contains("s")) as usize)
        .sum();
    assert_eq!(
        (ran, other),
        (1, 1),
        "one run computes s, the other reuses it\n--- A:\n{}\n--- B:\n{}",
        a.stderr,
        b.stderr
    );
    assert_eq!(t.artifact_file("after", "y"), "done\n");
}

#[test]
fn corrupted_object_is_detected_and_recomputed() {
    let t = TestDir::new();
    t.write(
        "p.yaml",
        r#"
name: corrupt
stages:
  a:
    kind: command
    params: {shell: 'echo a >> $RST_PROJECT/ran.log; echo alpha > $RST_OUT/x'}
  b:
    kind: command
    inputs: {in: a}
    params: {shell: 'echo b >> $RST_PROJECT/ran.log; cat $RST_IN_IN/x > $RST_OUT/y; echo beta >> $RST_OUT/y'}
"#,
    );
    t.ok(&["run", "p.yaml"]);
    t.take_log();
    t.ok(&["verify"]).assert_stdout_contains("0 corrupt");

    let digest = t.entry_of("b").unwrap()["artifact"]
        .as_str()
        .unwrap()
        .to_string();
    let file = t
        .join("cache/objects")
        .join(&digest[..2])
        .join(&digest)
        .join("y");
    let mut perm = fs::metadata(&file).unwrap().permissions();
    assert_eq!(perm.mode() & 0o222, 0, "cached files are read-only");
    perm.set_mode(0o644);
    fs::set_permissions(&file, perm).unwrap();
    fs::write(&file, "tampered\n").unwrap();

    let v = t.rst(&["verify"]);
    v.assert_code(1);
    v.assert_stdout_contains("corrupt");
    v.assert_stdout_contains(&digest);

    let run = t.ok(&["run", "p.yaml"]);
    assert_eq!(t.take_log(), ["b"], "{}", run.stderr);
    assert_eq!(run.cached(), set(&["a"]));
    assert_eq!(t.artifact_file("b", "y"), "alpha\nbeta\n");

    let v = t.ok(&["verify"]);
    v.assert_stdout_contains("0 corrupt");
}

#[test]
fn failing_stage_stops_dependents_and_is_not_cached() {
    let t = TestDir::new();
    t.write(
        "p.yaml",
        r#"
name: fail
stages:
  bad:
    kind: command
    params: {shell: 'echo bad >> $RST_PROJECT/ran.log; echo oops-from-bad >&2; exit 3'}
  dep:
    kind: command
    inputs: {in: bad}
    params: {shell: 'echo dep >> $RST_PROJECT/ran.log; echo x > $RST_OUT/x'}
  indep:
    kind: command
    params: {shell: 'echo indep >> $RST_PROJECT/ran.log; echo y > $RST_OUT/y'}
"#,
    );
    let run = t.rst(&["run", "p.yaml", "--jobs", "1"]);
    run.assert_code(1);
    let log = t.take_log();
    assert!(log.contains(&"bad".to_string()), "{log:?}");
    assert!(
        !log.contains(&"dep".to_string()),
        "dep must not run: {log:?}"
    );
    run.assert_stderr_contains("FAILED");
    run.assert_stderr_contains("exited with status 3");
    assert!(run.lines_with("FAILED").contains("bad"), "{}", run.stderr);
    let s = run.summary();
    assert_eq!(s.failed, 1, "{s:?}");
    assert_eq!(s.total, 3);
    // The log path is printed and holds the stage's stderr.
    let log_path = run
        .stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("log: "))
        .unwrap_or_else(|| panic!("no log path printed:\n{}", run.stderr));
    let log_text = fs::read_to_string(log_path).unwrap_or_else(|e| panic!("{log_path}: {e}"));
    assert!(log_text.contains("oops-from-bad"), "log: {log_text}");
    assert!(t.entry_of("bad").is_none(), "a failure must not be cached");
    assert!(t.entry_of("dep").is_none());

    // --keep-going: the independent branch completes; bad is tried again.
    let run = t.rst(&["run", "p.yaml", "--keep-going"]);
    run.assert_code(1);
    let log: BTreeSet<String> = t.take_log().into_iter().collect();
    assert!(log.contains("bad"), "a failed stage is retried: {log:?}");
    assert!(!log.contains("dep"), "{log:?}");
    assert!(t.entry_of("indep").is_some(), "{}", run.stderr);
    assert!(
        run.lines_with("done").contains("indep") || run.cached().contains("indep"),
        "{}",
        run.stderr
    );
    assert!(t.entry_of("bad").is_none());
    assert!(t.entry_of("dep").is_none());
    let s = run.summary();
    assert_eq!((s.failed, s.ran + s.cached, s.not_run), (1, 1, 1), "{s:?}");
}

const MATRIX: &str = r#"
name: t
params:
  rates: [0.2, 0.4]
stages:
  a:
    kind: command
    params: {shell: "echo hello > $RST_OUT/x"}
  b:
    kind: command
    matrix: {rate: "${rates}"}
    inputs: {data: a}
    publish: true
    params: {shell: "cat $RST_IN_DATA/x > $RST_OUT/y; echo ${rate} >> $RST_OUT/y"}
  c:
    kind: command
    inputs: {all: b}
    publish: true
    params: {shell: "cat $RST_IN_ALL_0/y $RST_IN_ALL_1/y > $RST_OUT/z"}
  hidden:
    kind: command
    params: {shell: "echo h > $RST_OUT/h"}
"#;

#[test]
fn graph_prints_dot_and_mermaid() {
    let t = TestDir::new();
    t.write("p.yaml", MATRIX);
    let dot = t.ok(&["graph", "p.yaml"]).stdout;
    assert!(dot.trim_start().starts_with("digraph"), "{dot}");
    assert!(dot.trim_end().ends_with('}'), "{dot}");
    // node id -> label
    let mut labels = std::collections::HashMap::new();
    for l in dot.lines() {
        let l = l.trim();
        if let Some((id, rest)) = l.split_once(" [label=\"") {
            if !l.contains("->") {
                labels.insert(id.to_string(), rest.split('"').next().unwrap().to_string());
            }
        }
    }
    let names: BTreeSet<&str> = labels.values().map(String::as_str).collect();
    assert_eq!(
        names,
        ["a", "b[rate=0.2]", "b[rate=0.4]", "c", "hidden"]
            .into_iter()
            .collect(),
        "{dot}"
    );
    let edges: BTreeSet<(String, String)> = dot
        .lines()
        .filter_map(|l| {
            let (from, rest) = l.trim().split_once(" -> ")?;
            let to = rest.split([' ', ';']).next()?;
            Some((labels[from].clone(), labels[to].clone()))
        })
        .collect();
    let want: BTreeSet<(String, String)> = [
        ("a", "b[rate=0.2]"),
        ("a", "b[rate=0.4]"),
        ("b[rate=0.2]", "c"),
        ("b[rate=0.4]", "c"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(edges, want, "{dot}");

    let explicit = t.ok(&["graph", "p.yaml", "--format", "dot"]).stdout;
    assert_eq!(explicit, dot);

    let mm = t.ok(&["graph", "p.yaml", "--format", "mermaid"]).stdout;
    assert!(mm.starts_with("flowchart"), "{mm}");
    for name in ["a", "b[rate=0.2]", "b[rate=0.4]", "c", "hidden"] {
        assert!(mm.contains(&format!("\"{name}\"")), "{name} missing:\n{mm}");
    }
    assert_eq!(mm.matches("-->").count(), 4, "{mm}");
    // Graph does not touch the cache.
    assert!(!t.exists("cache"));
}

#[test]
fn publish_copies_artifacts_to_results() {
    let t = TestDir::new();
    t.write("exp.yaml", MATRIX);
    let run = t.ok(&["run", "exp.yaml"]);
    run.assert_stdout_contains("results/exp");
    assert_eq!(t.read("results/exp/b/rate=0.2/y"), "hello\n0.2\n");
    assert_eq!(t.read("results/exp/b/rate=0.4/y"), "hello\n0.4\n");
    assert_eq!(t.read("results/exp/c/z"), "hello\n0.2\nhello\n0.4\n");
    assert!(!t.exists("results/exp/a"), "a is not published");
    assert!(!t.exists("results/exp/hidden"), "hidden is not published");
    let manifest: serde_json::Value =
        serde_json::from_str(&t.read("results/exp/manifest.json")).unwrap();
    let stages = manifest["stages"].as_object().expect("manifest.stages");
    let keys: BTreeSet<&str> = stages.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["b[rate=0.2]", "b[rate=0.4]", "c"].into_iter().collect(),
        "{manifest:#}"
    );
    let c_art = t.entry_of("c").unwrap()["artifact"].clone();
    assert_eq!(stages["c"]["artifact"], c_art);

    // A fully cached run publishes again (results/ is rebuilt from the cache).
    fs::remove_dir_all(t.join("results")).unwrap();
    let run = t.ok(&["run", "exp.yaml"]);
    assert_eq!(run.summary().cached, 5);
    assert_eq!(t.read("results/exp/c/z"), "hello\n0.2\nhello\n0.4\n");
    assert!(t.exists("results/exp/b/rate=0.4/y"));
    assert!(t.exists("results/exp/manifest.json"));
    // Published copies are ordinary writable files.
    let perm = fs::metadata(t.join("results/exp/c/z"))
        .unwrap()
        .permissions();
    assert!(!perm.readonly());
}

#[test]
fn gc_removes_what_the_pipeline_no_longer_uses() {
    let t = TestDir::new();
    let yaml =
        |scale: u32| PARAM.replace("params: {scale: 1}", &format!("params: {{scale: {scale}}}"));
    t.write("p.yaml", &yaml(1));
    t.ok(&["run", "p.yaml"]);
    assert_eq!(t.entries().len(), 4);
    assert_eq!(t.objects().len(), 4);
    let old_b = t.entry_of("b").unwrap()["artifact"]
        .as_str()
        .unwrap()
        .to_string();

    t.write("p.yaml", &yaml(2));
    let run = t.ok(&["run", "p.yaml"]);
    assert_eq!(run.started(), set(&["b", "c"]));
    assert_eq!(t.entries().len(), 6);
    assert_eq!(t.objects().len(), 6);

    let dry = t.ok(&["gc", "p.yaml", "--dry-run"]);
    dry.assert_stdout_contains("would have removed 2 entries and 2 artifacts");
    assert_eq!(t.entries().len(), 6, "--dry-run removes nothing");
    assert_eq!(t.objects().len(), 6);

    let gc = t.ok(&["gc", "p.yaml"]);
    gc.assert_stdout_contains("removed 2 entries and 2 artifacts");
    let freed = gc
        .stdout
        .split("artifacts, ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no freed size in {:?}", gc.stdout));
    assert!(freed > 0.0, "{}", gc.stdout);
    gc.assert_stdout_contains("freed");
    assert_eq!(t.entries().len(), 4);
    assert_eq!(t.objects().len(), 4);
    assert!(
        !t.join("cache/objects")
            .join(&old_b[..2])
            .join(&old_b)
            .exists(),
        "the old artifact of b is gone"
    );

    t.take_log();
    let run = t.ok(&["run", "p.yaml"]);
    assert_eq!(t.take_log(), Vec::<String>::new());
    assert_eq!(run.summary().cached, 4);
    t.ok(&["status", "p.yaml"])
        .assert_stdout_contains("4 of 4 stage instances cached");
    // gc again has nothing to do.
    t.ok(&["gc", "p.yaml"])
        .assert_stdout_contains("removed 0 entries and 0 artifacts");
}

#[test]
fn moving_the_project_keeps_the_cache_valid() {
    let src = TestDir::new();
    src.write(
        "p.yaml",
        r#"
name: moved
stages:
  a:
    kind: command
    params:
      shell: 'echo a >> $RST_PROJECT/ran.log; cat $RST_PROJECT/input.txt > $RST_OUT/x'
      deps: [input.txt]
  b:
    kind: command
    inputs: {in: a}
    params: {shell: 'echo b >> $RST_PROJECT/ran.log; echo $RST_IN_IN > /dev/null; cat $RST_IN_IN/x > $RST_OUT/y'}
"#,
    );
    src.write("input.txt", "payload\n");
    src.ok(&["run", "p.yaml"]);
    assert_eq!(sorted(src.take_log()), ["a", "b"]);

    let dst = TestDir::new();
    common::copy_tree(src.path(), dst.path());
    drop(src); // the old location is gone

    let st = dst.ok(&["status", "p.yaml"]);
    st.assert_stdout_contains("2 of 2 stage instances cached");
    let run = dst.ok(&["run", "p.yaml"]);
    assert_eq!(dst.take_log(), Vec::<String>::new());
    assert!(run.started().is_empty(), "{}", run.stderr);
    assert_eq!(run.cached(), set(&["a", "b"]));
    assert_eq!(dst.artifact_file("b", "y"), "payload\n");
    dst.ok(&["verify"]).assert_stdout_contains("0 corrupt");
}

#[test]
fn publish_dot_puts_files_at_the_top_of_results_and_keeps_other_stages() {
    let t = TestDir::new();
    t.write(
        "exp.yaml",
        "name: exp\nstages:\n  a:\n    kind: command\n    publish: true\n    params: {shell: \"echo a > $RST_OUT/a.txt\"}\n  table:\n    kind: command\n    publish: \".\"\n    params: {shell: \"echo t > $RST_OUT/table.md\"}\n",
    );
    t.ok(&["run", "exp.yaml"]);
    t.ok(&["run", "exp.yaml"]);
    assert_eq!(t.read("results/exp/table.md"), "t\n");
    assert_eq!(t.read("results/exp/a/a.txt"), "a\n");
    assert!(t.exists("results/exp/manifest.json"));
}

/// Ctrl-C in a terminal sends SIGINT to the whole foreground process group: rst stops its
/// workers, reports the run as interrupted (exit 130), caches nothing half-done, and keeps
/// what had finished; the next run computes only the rest.
#[test]
fn ctrl_c_stops_workers_keeps_finished_stages_and_exits_130() {
    let t = TestDir::new();
    t.write(
        "p.yaml",
        r#"
name: interrupt
stages:
  quick:
    kind: command
    params: {shell: 'echo quick >> $RST_PROJECT/ran.log; echo q > $RST_OUT/q'}
  slow:
    kind: command
    inputs: {q: quick}
    params: {shell: 'echo slow >> $RST_PROJECT/ran.log; touch $RST_PROJECT/marker; sleep 2; echo s > $RST_OUT/s'}
"#,
    );
    let child = t
        .command(&["run", "p.yaml"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = child.id();
    common::wait_for("the slow stage to start", Duration::from_secs(30), || {
        t.exists("marker")
    });
    let kill = std::process::Command::new("kill")
        .args(["-INT", "--", &format!("-{pgid}")])
        .status()
        .unwrap();
    assert!(kill.success(), "kill failed");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // `quick` finished before the interrupt and stays cached; `slow` left no entry.
    assert!(t.entry_of("quick").is_some());
    assert!(t.entry_of("slow").is_none());
    let run = t.ok(&["run", "p.yaml"]);
    assert_eq!(run.started(), set(&["slow"]));
    assert_eq!(run.cached(), set(&["quick"]));
    assert_eq!(t.artifact_file("slow", "s"), "s\n");
}

/// Each cache entry records how its artifact was computed (outside the key).
#[test]
fn entries_record_run_facts() {
    let t = TestDir::new();
    t.write(
        "p.yaml",
        "name: facts\nstages:\n  a:\n    kind: command\n    threads: 1\n    params: {shell: \"echo hi; echo x > $RST_OUT/x\"}\n",
    );
    t.ok(&["run", "p.yaml"]);
    let e = t.entry_of("a").unwrap();
    let run = &e["run"];
    assert!(!run["host"].as_str().unwrap().is_empty(), "{e}");
    assert_eq!(run["threads"], 1);
    assert!(run["peak_rss_kib"].as_u64().unwrap() > 0, "{e}");
    assert!(run["ended_unix"].as_f64().unwrap() >= run["started_unix"].as_f64().unwrap());
    // The libtorch this rst was built against; a build without torch has none.
    let libtorch = run["libtorch"].as_str().unwrap();
    if cfg!(feature = "torch") {
        assert!(libtorch.starts_with("2.13.0"), "{e}");
    } else {
        assert_eq!(libtorch, "none", "{e}");
    }
    // The log it names exists and holds the stage's output.
    let log = t.read(&format!("cache/{}", run["log"].as_str().unwrap()));
    assert!(log.contains("hi"), "{log}");
}

/// `--force STAGE` recomputes that stage even though it is cached; a dependent whose input
/// comes out byte-identical stays cached.
#[test]
fn force_recomputes_a_cached_stage() {
    let t = TestDir::new();
    t.write(
        "p.yaml",
        "name: force\nstages:\n  a:\n    kind: command\n    params: {shell: \"echo a >> $RST_PROJECT/ran.log; echo x > $RST_OUT/x\"}\n  b:\n    kind: command\n    inputs: {x: a}\n    params: {shell: \"echo b >> $RST_PROJECT/ran.log; cat $RST_IN_X/x > $RST_OUT/y\"}\n",
    );
    t.ok(&["run", "p.yaml"]);
    assert_eq!(t.take_log(), ["a", "b"]);
    let run = t.ok(&["run", "p.yaml", "--force", "a"]);
    assert_eq!(run.started(), set(&["a"]));
    assert_eq!(run.cached(), set(&["b"]));
    assert_eq!(t.take_log(), ["a"]);
    let again = t.ok(&["run", "p.yaml"]);
    assert_eq!(again.cached(), set(&["a", "b"]));
}
