//! Storing artifacts and publishing them to results/ (issue #10, items 2, 3, 4, 6 and the
//! performance note): atomic and concurrent publishing, verified copies, special files,
//! hard links out, non-UTF-8 names, the umask, and no-op runs that copy nothing.
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Output, TestDir};

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// Runs `rst ARGS`, killing it (and failing the test) if it takes longer than `limit`:
/// the holes tested here used to hang forever.
fn rst_within(t: &TestDir, args: &[&str], limit: Duration) -> Output {
    let mut child = t
        .command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rst");
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("rst {} hung (killed after {limit:?})", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    output(args, child)
}

fn output(args: &[&str], child: Child) -> Output {
    let out = child.wait_with_output().unwrap();
    Output {
        args: args.iter().map(|s| s.to_string()).collect(),
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The object directory of `instance`'s artifact.
fn object_of(t: &TestDir, instance: &str) -> PathBuf {
    let e = t
        .entry_of(instance)
        .unwrap_or_else(|| panic!("no entry for {instance}"));
    let d = e["artifact"].as_str().unwrap().to_string();
    t.join("cache/objects").join(&d[..2]).join(&d)
}

/// Every path under `dir` (recursive), relative.
fn all_paths(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

fn leftovers(dir: &Path) -> Vec<String> {
    all_paths(dir)
        .into_iter()
        .filter(|p| {
            let name = p.rsplit('/').next().unwrap();
            name.ends_with(".tmp") || name.starts_with(".rst-tmp.")
        })
        .collect()
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
}

/// `agg` publishes N files holding `${v}`; `m` is a published matrix; `table` is published
/// as "." (straight into results/<stem>/).
fn many_files(n: usize) -> String {
    format!(
        r#"
name: conc
params: {{v: 0}}
stages:
  agg:
    kind: command
    publish: true
    params: {{shell: 'cd $RST_OUT && i=0; while [ $i -lt {n} ]; do echo ${{v}} > f$i; i=$((i+1)); done'}}
  m:
    kind: command
    publish: true
    matrix: {{k: [1, 2]}}
    params: {{shell: 'echo ${{v}}-${{k}} > $RST_OUT/x'}}
  table:
    kind: command
    publish: "."
    params: {{shell: 'echo "table ${{v}}" > $RST_OUT/table.md'}}
"#
    )
}

/// The version every file of results/conc/agg holds, if it is complete and uniform.
fn agg_version(t: &TestDir, n: usize) -> Result<String, String> {
    let dir = t.join("results/conc/agg");
    let names = fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .count();
    if names != n {
        return Err(format!("{names} of {n} files"));
    }
    let mut versions = std::collections::BTreeSet::new();
    for i in 0..n {
        let text =
            fs::read_to_string(dir.join(format!("f{i}"))).map_err(|e| format!("f{i}: {e}"))?;
        versions.insert(text.trim().to_string());
    }
    match versions.len() {
        1 => Ok(versions.into_iter().next().unwrap()),
        _ => Err(format!("mixed versions {versions:?}")),
    }
}

#[test]
fn concurrent_publishers_in_one_directory_all_succeed() {
    let t = TestDir::new();
    t.write("conc.yaml", &many_files(150));
    for round in 1..=3 {
        let set = format!("v={round}");
        let children: Vec<Child> = (0..4)
            .map(|_| {
                t.command(&["run", "conc.yaml", "--set", &set, "--replace-results"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children {
            output(&["run", "conc.yaml", "--set", &set], c).assert_code(0);
        }
        assert_eq!(agg_version(&t, 150), Ok(round.to_string()));
        assert_eq!(t.read("results/conc/m/k=2/x"), format!("{round}-2\n"));
        assert_eq!(t.read("results/conc/table.md"), format!("table {round}\n"));
        assert_eq!(leftovers(&t.join("results")), Vec::<String>::new());
        let manifest: serde_json::Value =
            serde_json::from_str(&t.read("results/conc/manifest.json")).unwrap();
        assert_eq!(manifest["stages"].as_object().unwrap().len(), 4);
    }
}

/// Waits until `root` holds a temp dir (a publisher has started); false if `child` exited
/// first.
fn wait_publishing(child: &mut Child, root: &Path) -> bool {
    let t0 = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        let publishing = fs::read_dir(root).into_iter().flatten().flatten().any(|e| {
            e.file_name().to_string_lossy().starts_with('.')
                && e.file_type().is_ok_and(|t| t.is_dir())
        });
        if publishing {
            return true;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "run never published"
        );
        std::thread::sleep(Duration::from_micros(100));
    }
}

#[test]
fn kill_9_mid_publish_leaves_the_old_or_the_new_complete_folder() {
    const N: usize = 300;
    let t = TestDir::new();
    t.write("conc.yaml", &many_files(N));
    // Two cached versions: each run below switches results/conc/agg to the other one.
    t.ok(&["run", "conc.yaml", "--set", "v=1", "--replace-results"]);
    t.ok(&["run", "conc.yaml", "--set", "v=2", "--replace-results"]);
    let root = t.join("results/conc");
    let spawn = |v: &str| {
        t.command(&[
            "run",
            "conc.yaml",
            "--set",
            &format!("v={v}"),
            "--replace-results",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
    };
    // How long publishing takes, to kill at points spread over it (denser near the end,
    // where the old folder is replaced).
    let mut child = spawn("1");
    assert!(wait_publishing(&mut child, &root));
    let t0 = Instant::now();
    child.wait().unwrap();
    let publish_time = t0.elapsed();
    let mut complete = "1".to_string();
    let mut killed = 0;
    // INFINITY: only when the folder looks incomplete (never, if the switch is atomic).
    let inf = f64::INFINITY;
    let fractions = [inf, 0.3, inf, 0.7, inf, 0.9, inf, 1.0];
    for (trial, f) in fractions.iter().enumerate() {
        let v = if trial % 2 == 0 { "2" } else { "1" };
        let mut child = spawn(v);
        if wait_publishing(&mut child, &root) {
            // Kill at `f` of the publishing time, or as soon as the folder looks
            // incomplete to a reader (the moment a non-atomic switch is weakest).
            let t0 = Instant::now();
            let agg = root.join("agg");
            while (f.is_infinite() || t0.elapsed().as_secs_f64() < publish_time.as_secs_f64() * f)
                && child.try_wait().unwrap().is_none()
                && fs::read_dir(&agg).is_ok_and(|rd| rd.count() == N)
            {
                std::thread::sleep(Duration::from_micros(50));
            }
            let _ = child.kill();
            killed += 1;
        }
        let _ = child.wait();
        let got = agg_version(&t, N).unwrap_or_else(|e| {
            panic!("after kill -9 at {f} of publishing: results/conc/agg is not complete: {e}")
        });
        assert!(
            got == complete || got == v,
            "after kill -9 at {f} of publishing: version {got}, expected {complete} or {v}"
        );
        complete = got;
    }
    assert!(killed > 0, "no run was killed while publishing");
    // The next run finishes the job and removes what the killed ones left.
    t.ok(&["run", "conc.yaml", "--set", "v=2", "--replace-results"]);
    assert_eq!(agg_version(&t, N), Ok("2".into()));
    assert_eq!(leftovers(&t.join("results")), Vec::<String>::new());
}

const SIMPLE: &str = r#"
name: p
stages:
  a:
    kind: command
    publish: true
    params: {shell: 'echo good > $RST_OUT/x; mkdir $RST_OUT/sub; echo deep > $RST_OUT/sub/y'}
  table:
    kind: command
    publish: "."
    params: {shell: 'echo "| t |" > $RST_OUT/table.md'}
  leaf:
    kind: command
    params: {shell: 'echo leaf > $RST_OUT/z'}
"#;

#[test]
fn a_flipped_byte_in_a_published_object_is_not_published() {
    let t = TestDir::new();
    t.write("p.yaml", SIMPLE);
    t.ok(&["run", "p.yaml"]);
    let obj = object_of(&t, "a");
    let digest = obj.file_name().unwrap().to_string_lossy().into_owned();
    let file = obj.join("x");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&file, "evil\n").unwrap(); // same size: only the content hash tells
    fs::remove_dir_all(t.join("results")).unwrap();

    let out = t.rst(&["run", "p.yaml"]);
    out.assert_code(1)
        .assert_stderr_contains(&digest)
        .assert_stderr_contains("corrupt")
        .assert_stderr_contains("rst run");
    assert!(
        !t.exists("results/p/a"),
        "nothing of the corrupt stage is published"
    );
    assert_eq!(t.read("results/p/table.md"), "| t |\n", "other stages are");
    assert!(!obj.exists(), "the corrupt object is quarantined");
    assert!(
        fs::read_dir(t.join("cache/quarantine"))
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(&digest)),
        "quarantine holds the object"
    );
    // `rst run` again recomputes it.
    t.ok(&["run", "p.yaml"]);
    assert_eq!(t.read("results/p/a/x"), "good\n");
}

#[test]
fn a_fifo_in_rst_out_is_a_stage_error_naming_it() {
    let t = TestDir::new();
    t.write(
        "p.yaml",
        "name: p\nstages:\n  s:\n    kind: command\n    params: {shell: 'echo x > $RST_OUT/ok; mkdir $RST_OUT/d; mkfifo $RST_OUT/d/pipe'}\n",
    );
    let out = rst_within(&t, &["run", "p.yaml"], Duration::from_secs(30));
    out.assert_code(1)
        .assert_stderr_contains("$RST_OUT/d/pipe: a FIFO");
    assert!(t.entries().is_empty() && t.objects().is_empty());
}

#[test]
fn a_character_device_in_rst_out_is_a_stage_error_naming_it() {
    if !is_root() {
        eprintln!(
            "SKIPPED: a_character_device_in_rst_out_is_a_stage_error_naming_it needs root (mknod)"
        );
        return;
    }
    let t = TestDir::new();
    t.write(
        "p.yaml",
        "name: p\nstages:\n  s:\n    kind: command\n    params: {shell: 'mknod $RST_OUT/zero c 1 5'}\n",
    );
    let out = rst_within(&t, &["run", "p.yaml"], Duration::from_secs(30));
    out.assert_code(1)
        .assert_stderr_contains("$RST_OUT/zero: a character device");
    assert!(t.objects().is_empty());
}

#[test]
fn a_fifo_planted_in_a_cached_object_hangs_neither_run_nor_verify() {
    let t = TestDir::new();
    t.write("p.yaml", SIMPLE);
    t.ok(&["run", "p.yaml"]);
    fs::remove_dir_all(t.join("results")).unwrap();
    // As the table.md `rst run` prints of a leaf stage: not read.
    let leaf = object_of(&t, "leaf");
    mkfifo(&leaf.join("table.md"));
    rst_within(&t, &["run", "p.yaml"], Duration::from_secs(30)).assert_code(0);
    // In a published object: corrupt, not published (results/ removed: an unchanged
    // published folder is not copied again, so the object would not be read).
    let a = object_of(&t, "a");
    mkfifo(&a.join("sub/pipe"));
    fs::remove_dir_all(t.join("results")).unwrap();
    let out = rst_within(&t, &["run", "p.yaml"], Duration::from_secs(30));
    out.assert_code(1)
        .assert_stderr_contains("corrupt")
        .assert_stderr_contains("sub/pipe");
    assert!(!t.exists("results/p/a"));

    let out = rst_within(&t, &["verify"], Duration::from_secs(30));
    out.assert_code(1);
    let leaf_digest = leaf.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        out.stdout.contains(&format!("corrupt  {leaf_digest}")),
        "{}",
        out.stdout
    );
}

#[test]
fn a_hard_link_out_of_rst_out_is_stored_as_a_copy() {
    let t = TestDir::new();
    let outside = t.join("outside.txt");
    fs::write(&outside, "mine\n").unwrap();
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o644)).unwrap();
    t.write(
        "p.yaml",
        &format!(
            "name: p\nstages:\n  s:\n    kind: command\n    params: {{shell: 'ln {} $RST_OUT/h'}}\n",
            outside.display()
        ),
    );
    t.ok(&["run", "p.yaml"]);
    let meta = fs::metadata(&outside).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o644, "the user's file keeps its mode");
    assert_eq!(
        meta.nlink(),
        1,
        "the cache holds no link to the user's file"
    );
    let stored = object_of(&t, "s").join("h");
    assert_ne!(fs::metadata(&stored).unwrap().ino(), meta.ino());
    assert_eq!(fs::read_to_string(&stored).unwrap(), "mine\n");
    // Appending to the user's file leaves the object intact.
    fs::write(&outside, "mine\nmore\n").unwrap();
    let v = t.rst(&["verify"]);
    v.assert_code(0).assert_stdout_contains("0 corrupt");
}

#[test]
fn non_utf8_output_names_are_refused() {
    let t = TestDir::new();
    t.write(
        "p.yaml",
        "name: p\nstages:\n  s:\n    kind: command\n    params: {shell: 'echo a > \"$RST_OUT/n$(printf \"\\376\")\"; echo b > \"$RST_OUT/n$(printf \"\\377\")\"'}\n",
    );
    let out = t.rst(&["run", "p.yaml"]);
    out.assert_code(1)
        .assert_stderr_contains("UTF-8")
        .assert_stderr_contains("\"$RST_OUT/n\\xF");
    assert!(t.objects().is_empty());
}

#[test]
fn published_files_respect_the_umask() {
    let t = TestDir::new();
    t.write("p.yaml", SIMPLE);
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 027; exec '{}' run p.yaml",
            env!("CARGO_BIN_EXE_rst")
        ))
        .current_dir(t.path())
        .env("RST_PLAIN", "1")
        .env_remove("RST_CACHE_DIR")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let mode = |rel: &str| fs::metadata(t.join(rel)).unwrap().mode() & 0o777;
    assert_eq!(mode("results/p/a/x"), 0o640);
    assert_eq!(mode("results/p/a/sub/y"), 0o640);
    assert_eq!(mode("results/p/table.md"), 0o640);
    assert_eq!(mode("results/p/a/sub"), 0o750);
}

#[test]
fn a_no_op_rerun_does_not_recopy_published_files() {
    let t = TestDir::new();
    t.write("p.yaml", SIMPLE);
    t.ok(&["run", "p.yaml"]);
    let id = |rel: &str| {
        let m = fs::metadata(t.join(rel)).unwrap();
        (m.ino(), m.mtime(), m.mtime_nsec())
    };
    let files = ["results/p/a/x", "results/p/a/sub/y", "results/p/table.md"];
    let before: Vec<_> = files.iter().map(|f| id(f)).collect();
    std::thread::sleep(Duration::from_millis(20));
    t.ok(&["run", "p.yaml"]);
    let after: Vec<_> = files.iter().map(|f| id(f)).collect();
    assert_eq!(
        before, after,
        "unchanged published files are not copied again"
    );

    // A file edited, a file added, a file removed: the next run restores the folder.
    fs::write(t.join("results/p/a/x"), "edited\n").unwrap();
    fs::write(t.join("results/p/a/extra"), "x").unwrap();
    fs::remove_file(t.join("results/p/table.md")).unwrap();
    t.ok(&["run", "p.yaml"]);
    assert_eq!(t.read("results/p/a/x"), "good\n");
    assert!(!t.exists("results/p/a/extra"));
    assert_eq!(t.read("results/p/table.md"), "| t |\n");
    let prov = t.read("results/p/provenance.json");
    assert!(prov.contains("\"a/sub/y\""), "{prov}");
}

/// A run with other `--set` overrides than the one that published `results/<stem>/`
/// stops before anything runs (exit 2) instead of replacing them; `--replace-results`
/// replaces them; the same overrides again publish as usual.
#[test]
fn a_run_with_other_overrides_does_not_replace_the_results_without_a_flag() {
    let t = TestDir::new();
    t.write(
        "p.yaml",
        "name: p\nparams: {seeds: [1, 2]}\nstages:\n  s:\n    kind: command\n    publish: \".\"\n    params: {shell: 'echo ${seeds} >> $RST_PROJECT/ran.log; echo ${seeds} > $RST_OUT/out.txt'}\n",
    );
    t.ok(&["run", "p.yaml"]);
    let refused = t.rst(&["run", "p.yaml", "--set", "seeds=[1]"]);
    refused.assert_code(2);
    refused.assert_stderr_contains("results/p/ holds the results of a run with no --set overrides; this run has --set seeds=[1]");
    refused.assert_stderr_contains("--replace-results");
    assert_eq!(t.take_log(), ["[1,2]"], "nothing ran");
    assert_eq!(t.read("results/p/out.txt"), "[1,2]\n");
    t.ok(&["run", "p.yaml", "--set", "seeds=[1]", "--replace-results"]);
    assert_eq!(t.read("results/p/out.txt"), "[1]\n");
    t.ok(&["run", "p.yaml", "--set", "seeds=[1]"]);
    // The same overrides in another order, or a key repeated (the last counts): the same.
    t.ok(&["run", "p.yaml", "--set", "seeds=[2]", "--set", "seeds=[1]"]);
    // Back to the file's own values: also a replacement.
    t.rst(&["run", "p.yaml"])
        .assert_code(2)
        .assert_stderr_contains("a run with --set seeds=[1]; this run has no --set overrides");
    assert_eq!(t.take_log(), ["[1]"]);
}
