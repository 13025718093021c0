//! Nothing read that was not verified: a stage never runs on a cached input whose content
//! no longer matches its digest (`rst run` quarantines it and recomputes its producer in
//! the same run), `rst verify` invalidates every entry computed from a corrupt object,
//! survives an existing quarantine name and a second `rst verify` at once, and lineage
//! follows the entry a consumer actually read.
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::common::{write_band_idx, TestDir, BAND_DATA_STAGES};

/// `a` alone: writes `good`.
const ONLY_A: &str = r#"
name: one
stages:
  a:
    kind: command
    params: {shell: 'echo a >> $RST_PROJECT/ran.log; echo good > $RST_OUT/x'}
"#;

/// `a` and `c`, which copies `a`'s file and is published.
const A_AND_C: &str = r#"
name: two
stages:
  a:
    kind: command
    params: {shell: 'echo a >> $RST_PROJECT/ran.log; echo good > $RST_OUT/x'}
  c:
    kind: command
    inputs: {in: a}
    publish: true
    params: {shell: 'echo c >> $RST_PROJECT/ran.log; cat $RST_IN_IN/x > $RST_OUT/x'}
"#;

fn object_dir(t: &TestDir, digest: &str) -> PathBuf {
    t.join("cache/objects").join(&digest[..2]).join(digest)
}

fn artifact_of(t: &TestDir, instance: &str) -> String {
    t.entry_of(instance).unwrap()["artifact"]
        .as_str()
        .unwrap()
        .to_string()
}

/// What someone with write access does: make a cached file writable and overwrite it.
fn tamper(file: &Path, contents: &[u8]) {
    fs::set_permissions(file, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(file, contents).unwrap();
}

/// The issue's scenario: `a` computed alone, its stored file edited to `evil`, then a
/// pipeline whose `c` copies `a`'s file. Before the fix `c` ran on `evil`, exited 0 and
/// published it. Now the run finds `a`'s artifact corrupt before `c` reads it, quarantines
/// it, recomputes `a` and only then runs `c`: `good` is published, in the same run.
#[test]
fn a_consumer_never_reads_a_tampered_input() {
    let t = TestDir::new();
    t.write("one.yaml", ONLY_A).write("two.yaml", A_AND_C);
    t.ok(&["run", "one.yaml"]);
    t.take_log();
    let a = artifact_of(&t, "a");
    tamper(&object_dir(&t, &a).join("x"), b"evil\n");

    let run = t.ok(&["run", "two.yaml"]);
    assert_eq!(t.take_log(), ["a", "c"], "{}", run.stderr);
    run.assert_stderr_contains(&format!(
        "warning: input in (from a) (artifact {a}) is corrupt"
    ))
    .assert_stderr_contains("quarantined to")
    .assert_stderr_contains("(read by c): recomputing a first");
    assert_eq!(t.read("results/two/c/x"), "good\n");
    assert_eq!(t.artifact_file("c", "x"), "good\n");
    assert_eq!(
        fs::read_to_string(object_dir(&t, &a).join("x")).unwrap(),
        "good\n"
    );
    assert_eq!(
        fs::read_dir(t.join("cache/quarantine")).unwrap().count(),
        1,
        "the evil copy is kept in quarantine/"
    );
    // What c read is recorded beside its key.
    let c = t.entry_of("c").unwrap();
    assert_eq!(c["run"]["reads"], serde_json::json!([a]));
    t.ok(&["verify"]).assert_stdout_contains(" 0 corrupt");
    let again = t.ok(&["run", "two.yaml"]);
    assert!(again.started().is_empty(), "{}", again.stderr);
}

/// `rst verify` after tampering: it quarantines `a` and also the entry of `c`, computed
/// from it (before the fix `c` stayed cached and a rerun kept whatever it had computed);
/// a second verify finds nothing; the next run recomputes both and publishes `good`.
#[test]
fn verify_invalidates_entries_computed_from_a_corrupt_object() {
    let t = TestDir::new();
    t.write("two.yaml", A_AND_C);
    t.ok(&["run", "two.yaml"]);
    t.take_log();
    let a = artifact_of(&t, "a");
    let c_key = t.entry_of("c").unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    tamper(&object_dir(&t, &a).join("x"), b"evil\n");

    let v = t.rst(&["verify"]);
    v.assert_code(1)
        .assert_stdout_contains(&format!(
            "corrupt  {a}: its content does not match its digest"
        ))
        .assert_stdout_contains(&format!(
            "invalid  entry {} of c (two): computed from the corrupt artifact {}",
            &c_key[..12],
            &a[..12]
        ))
        .assert_stdout_contains("1 corrupt, 1 entries computed from them invalidated");
    assert!(t.entry_of("c").is_none(), "c's entry left entries/");
    let quarantined: Vec<String> = fs::read_dir(t.join("cache/quarantine"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        quarantined
            .iter()
            .any(|n| n.starts_with(&format!("{c_key}.json."))),
        "{quarantined:?}"
    );
    t.ok(&["verify"]).assert_stdout_contains(" 0 corrupt");

    let run = t.ok(&["run", "two.yaml"]);
    assert_eq!(t.take_log(), ["a", "c"], "{}", run.stderr);
    assert_eq!(t.read("results/two/c/x"), "good\n");
}

/// Entries written before they recorded what they read (no `run.reads`) are invalidated
/// through their key record's input digests.
#[test]
fn verify_invalidates_old_entries_through_their_input_digests() {
    let t = TestDir::new();
    t.write("two.yaml", A_AND_C);
    t.ok(&["run", "two.yaml"]);
    let a = artifact_of(&t, "a");
    let c_file = t
        .entries()
        .into_iter()
        .find(|p| {
            let v: serde_json::Value = serde_json::from_slice(&fs::read(p).unwrap()).unwrap();
            v["instance"] == "c"
        })
        .unwrap();
    let mut c: serde_json::Value = serde_json::from_slice(&fs::read(&c_file).unwrap()).unwrap();
    c["run"].as_object_mut().unwrap().remove("reads");
    c["run"].as_object_mut().unwrap().remove("consumed");
    fs::write(&c_file, serde_json::to_vec_pretty(&c).unwrap()).unwrap();
    tamper(&object_dir(&t, &a).join("x"), b"evil\n");
    t.rst(&["verify"])
        .assert_code(1)
        .assert_stdout_contains("invalid  entry");
    assert!(!c_file.exists());
}

/// A dataset view (`split`) names its base artifact (the download) instead of copying it.
/// A stage reading the view resolves the base: the scheduler verifies the base too, finds
/// it tampered, and recomputes the download before the stages reading the view run. (The
/// worker's own check of what a stage resolves is tested in `exec::worker`.)
#[test]
fn a_tampered_dataset_view_base_is_caught() {
    let t = TestDir::new();
    write_band_idx(&t);
    let views = format!("name: views\nstages:\n{BAND_DATA_STAGES}");
    // Two readers: the second finds the base already being recomputed and waits for it.
    let look = |name: &str| {
        format!("  {name}:\n    kind: command\n    inputs: {{t: target}}\n    params: {{shell: 'cat $RST_IN_T/dataset.json > $RST_OUT/meta; echo {name} > $RST_OUT/who'}}\n")
    };
    let reader = format!("{views}{}{}", look("look"), look("look2"));
    t.write("views.yaml", &views).write("reader.yaml", &reader);
    t.ok(&["run", "views.yaml"]);
    let base = artifact_of(&t, "data");
    let meta = t.artifact_file("target", "dataset.json");
    assert!(meta.contains(&base), "target is a view over data: {meta}");
    // Flip one byte of one of the base's files.
    let files: Vec<PathBuf> = walk(&object_dir(&t, &base));
    let victim = files
        .iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = fs::read(victim).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    tamper(victim, &bytes);

    let run = t.ok(&["run", "reader.yaml"]);
    run.assert_stderr_contains(&format!(
        "warning: the base of input t (from target) (artifact {base}) is corrupt"
    ))
    .assert_stderr_contains("recomputing data first");
    assert!(run.started().contains("data"), "{}", run.stderr);
    assert!(run.started().contains("look"), "{}", run.stderr);
    assert!(run.started().contains("look2"), "{}", run.stderr);
    assert_eq!(run.summary().failed, 0, "{}", run.stderr);
    assert!(run.cached().contains("target"), "{}", run.stderr);
    assert_eq!(
        artifact_of(&t, "data"),
        base,
        "recomputed to the same bytes"
    );
    t.ok(&["verify"]).assert_stdout_contains(" 0 corrupt");

    // `rst verify` invalidates the view (it read the base) along with the base.
    let mut bytes = fs::read(victim).unwrap();
    bytes[0] ^= 1;
    tamper(victim, &bytes);
    let v = t.rst(&["verify"]);
    v.assert_code(1)
        .assert_stdout_contains(&format!("corrupt  {base}"))
        .assert_stdout_contains("of target (views)");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// Quarantine names used to be `<digest>.<unix seconds>`: quarantining the same digest
/// twice in one second (or finding such a folder left over) aborted verify half-way with
/// `Directory not empty`.
#[test]
fn verify_survives_an_existing_quarantine_name() {
    let t = TestDir::new();
    t.write("one.yaml", ONLY_A);
    t.ok(&["run", "one.yaml"]);
    let a = artifact_of(&t, "a");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for s in now - 1..now + 30 {
        let d = t.join(&format!("cache/quarantine/{a}.{s}"));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("x"), "an earlier copy\n").unwrap();
    }
    for round in 0..2 {
        tamper(&object_dir(&t, &a).join("x"), b"evil\n");
        let v = t.rst(&["verify"]);
        v.assert_code(1)
            .assert_stdout_contains(&format!("corrupt  {a}"))
            .assert_stdout_contains("verified 1 artifacts: 1 corrupt");
        assert!(!v.stderr.contains("error"), "round {round}: {}", v.stderr);
        assert!(!object_dir(&t, &a).exists());
        t.ok(&["run", "one.yaml"]);
    }
    // 31 earlier copies, the two new ones.
    assert_eq!(
        fs::read_dir(t.join("cache/quarantine")).unwrap().count(),
        33
    );
}

/// Two `rst verify` at once on a cache full of corrupt objects: each quarantines what it
/// finds; an object the other one moved first is not an error. Before the fix one of them
/// failed (`cache …: No such file or directory`) half-way.
#[test]
fn two_verifies_at_once_both_succeed() {
    let t = TestDir::new();
    t.write("one.yaml", ONLY_A);
    t.ok(&["run", "one.yaml"]);
    for round in 0..3 {
        for k in 0..300u32 {
            let digest = format!(
                "{:064x}",
                (round * 1000 + k) as u128 * 0x9e37_79b9_7f4a_7c15
            );
            let d = object_dir(&t, &digest);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("f"), format!("not what {k} hashes to")).unwrap();
        }
        let spawn = || {
            t.command(&["verify"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (one, two) = (spawn(), spawn());
        let mut corrupt = 0;
        for child in [one, two] {
            let out = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                matches!(out.status.code(), Some(0 | 1)) && stderr.trim().is_empty(),
                "round {round}: {:?}\n{stdout}\n{stderr}",
                out.status
            );
            assert!(stdout.contains("verified "), "{stdout}");
            corrupt += stdout
                .lines()
                .filter(|l| l.starts_with("corrupt  "))
                .count();
        }
        assert!(
            corrupt >= 300,
            "round {round}: each object reported: {corrupt}"
        );
        let v = t.ok(&["verify"]);
        v.assert_stdout_contains("verified 1 artifacts: 0 corrupt");
    }
}

/// Lineage used to pick the newest entry with the consumer's input artifact. Here `a` runs
/// with p=1, `c` reads it; then `a` runs again with p=2 (a new entry, created after `c`)
/// and gives the same bytes, so `c` stays cached. The lineage of c's published file must
/// name the entry c read (p=1), not the newer one.
#[test]
fn lineage_follows_the_entry_the_consumer_read() {
    let t = TestDir::new();
    t.write(
        "p.yaml",
        r#"
name: lin
params: {p: 1}
stages:
  a:
    kind: command
    params: {shell: 'echo same > $RST_OUT/x # p=${p}'}
  c:
    kind: command
    inputs: {in: a}
    publish: true
    params: {shell: 'cat $RST_IN_IN/x > $RST_OUT/x'}
"#,
    );
    t.ok(&["run", "p.yaml"]);
    let first_a = t.entry_of("a").unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let second = t.ok(&["run", "p.yaml", "--set", "p=2", "--replace-results"]);
    assert!(second.cached().contains("c"), "{}", second.stderr);
    let newer_a = t.entry_of("a").unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(first_a, newer_a);

    let out = t.ok(&["lineage", "results/p/c/x", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let c = &doc["lineage"][0];
    assert_eq!(c["instance"], "c");
    let a = &c["inputs"][0]["node"];
    assert_eq!(a["key"], first_a.as_str(), "{}", out.stdout);
    assert!(a["params"]["shell"].as_str().unwrap().contains("p=1"));
}

/// The recomputed producer gives other bytes (a stage that is not deterministic): what was
/// already looked up downstream with its old artifact is looked up again, so every stage
/// of the run reads the same, new `a`.
#[test]
fn a_recomputed_producer_with_new_bytes_reruns_what_was_cached_downstream() {
    let a = "  a:\n    kind: command\n    params: {shell: 'echo a >> $RST_PROJECT/ran.log; od -An -tx1 -N16 /dev/urandom > $RST_OUT/x'}\n";
    let copy = |name: &str| {
        format!("  {name}:\n    kind: command\n    inputs: {{in: a}}\n    publish: true\n    params: {{shell: 'echo {name} >> $RST_PROJECT/ran.log; cat $RST_IN_IN/x > $RST_OUT/x'}}\n")
    };
    let t = TestDir::new();
    t.write("one.yaml", &format!("name: r\nstages:\n{a}{}", copy("c1")));
    t.write(
        "two.yaml",
        &format!("name: r\nstages:\n{a}{}{}", copy("c1"), copy("c2")),
    );
    t.ok(&["run", "one.yaml"]);
    t.take_log();
    let old = artifact_of(&t, "a");
    tamper(&object_dir(&t, &old).join("x"), b"evil\n");

    let run = t.ok(&["run", "two.yaml"]);
    let mut log = t.take_log();
    log.sort();
    assert_eq!(log, ["a", "c1", "c2"], "{}", run.stderr);
    let new = artifact_of(&t, "a");
    assert_ne!(new, old);
    let x = fs::read_to_string(object_dir(&t, &new).join("x")).unwrap();
    assert_eq!(t.read("results/two/c1/x"), x);
    assert_eq!(t.read("results/two/c2/x"), x);
    assert_eq!(run.summary().ran, 3, "{}", run.stderr);
}

/// A stage that writes into its input (`chmod` + overwrite: cached files are read-only by
/// mode bits only) corrupts an artifact computed earlier in the same run, which the run
/// itself did not re-hash. The worker of the next stage reading it refuses it, and the run
/// recomputes the producer and runs that stage again: it publishes `good`, in the same run.
#[test]
fn an_input_corrupted_during_the_run_is_refused_and_recomputed() {
    let t = TestDir::new();
    t.write(
        "p.yaml",
        r#"
name: hostile
stages:
  a:
    kind: command
    params: {shell: 'echo a >> $RST_PROJECT/ran.log; echo good > $RST_OUT/x'}
  vandal:
    kind: command
    inputs: {in: a}
    params: {shell: 'chmod u+w $RST_IN_IN/x; echo evil > $RST_IN_IN/x; echo done > $RST_OUT/v'}
  c:
    kind: command
    inputs: {in: a, after: vandal}
    publish: true
    params: {shell: 'echo c >> $RST_PROJECT/ran.log; cat $RST_IN_IN/x > $RST_OUT/x'}
"#,
    );
    let run = t.ok(&["run", "p.yaml"]);
    run.assert_stderr_contains("recomputing a, then c again");
    assert_eq!(t.take_log(), ["a", "a", "c"], "{}", run.stderr);
    assert_eq!(t.read("results/p/c/x"), "good\n");
    assert_eq!(run.summary().failed, 0, "{}", run.stderr);
}
