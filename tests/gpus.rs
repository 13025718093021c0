//! GPUs as a scheduled resource of the local executor, on machines without GPUs:
//! `RST_GPUS` declares device ids and `command` stages record the `CUDA_VISIBLE_DEVICES`
//! they were given and when they ran, so the real lease logic is what is tested.
use std::collections::{BTreeMap, BTreeSet};

use crate::common::TestDir;

/// A sweep of `n` one-GPU stages (`one[i=1]` … `one[i=n]`) (each holds its device ~0.3 s), one two-GPU stage and
/// one that asks for none. Each writes `ids start_ns end_ns` to `gpu.txt`.
fn pipeline(n: usize) -> String {
    let record = r#"s=$(date +%s%N); sleep 0.3; echo \"$${CUDA_VISIBLE_DEVICES-unset} $s $(date +%s%N)\" > $RST_OUT/gpu.txt"#;
    format!(
        "name: gpus\nstages:\n  one:\n    kind: command\n    matrix: {{i: {{count: {n}}}}}\n    resources: {{gpus: 1}}\n    params: {{shell: \"echo ${{i}} > /dev/null; {record}\"}}\n  two:\n    kind: command\n    resources: {{gpus: 2}}\n    params: {{shell: \"echo two > /dev/null; {record}\"}}\n  none:\n    kind: command\n    params: {{shell: \"echo none > /dev/null; {record}\"}}\n"
    )
}

/// (devices, start, end) that `instance` recorded.
fn lease(t: &TestDir, instance: &str) -> (String, u128, u128) {
    let text = t.artifact_file(instance, "gpu.txt");
    let f: Vec<&str> = text.split_whitespace().collect();
    match f.as_slice() {
        [ids, s, e] => (ids.to_string(), s.parse().unwrap(), e.parse().unwrap()),
        // `CUDA_VISIBLE_DEVICES=` (empty): only the two times.
        [s, e] => (String::new(), s.parse().unwrap(), e.parse().unwrap()),
        _ => panic!("{instance}: unexpected gpu.txt {text:?}"),
    }
}

fn run(t: &TestDir, gpus_env: &str, args: &[&str]) -> crate::common::Output {
    let mut all = vec!["run", "p.yaml", "-j", "16"];
    all.extend_from_slice(args);
    t.rst_env(
        &all,
        &[("RST_GPUS", Some(gpus_env)), ("CUDA_VISIBLE_DEVICES", None)],
    )
}

#[test]
fn leases_never_share_a_device_and_use_every_one() {
    let t = TestDir::new();
    t.write("p.yaml", &pipeline(9));
    let out = run(&t, "0,1,2", &[]);
    out.assert_code(0);

    let mut by_device: BTreeMap<String, Vec<(u128, u128, String)>> = BTreeMap::new();
    for i in 1..=9 {
        let name = format!("one[i={i}]");
        let (ids, s, e) = lease(&t, &name);
        assert!(
            ["0", "1", "2"].contains(&ids.as_str()),
            "{name} got `{ids}`, not one of the declared devices"
        );
        by_device.entry(ids).or_default().push((s, e, name));
    }
    let (two, s2, e2) = lease(&t, "two");
    let pair: BTreeSet<&str> = two.split(',').collect();
    assert_eq!(pair.len(), 2, "`two` asked for 2 devices, got `{two}`");
    for id in &pair {
        by_device
            .entry(id.to_string())
            .or_default()
            .push((s2, e2, "two".into()));
    }
    assert_eq!(
        by_device.keys().map(String::as_str).collect::<Vec<_>>(),
        ["0", "1", "2"],
        "every device is used"
    );
    for (id, mut runs) in by_device {
        runs.sort();
        for w in runs.windows(2) {
            assert!(
                w[0].1 <= w[1].0,
                "device {id} was held by {} and {} at once",
                w[0].2,
                w[1].2
            );
        }
    }
    // A stage that asked for none sees none (the variable is set, empty).
    assert_eq!(
        lease(&t, "none").0,
        "",
        "no GPU for a stage that asked none"
    );

    // The live view, the entry's run facts and the run record say where each ran.
    out.assert_stderr_contains(&format!("running  two on GPU {two}"));
    let facts = &t.entry_of("one[i=1]").unwrap()["run"]["gpus"];
    assert_eq!(facts, &serde_json::json!([lease(&t, "one[i=1]").0]));
    assert!(t.entry_of("none").unwrap()["run"].get("gpus").is_none());
    let runs = crate::common::read_dir_sorted(&t.join("cache/runs"));
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(runs.last().unwrap()).unwrap()).unwrap();
    let two_run = record["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["instance"] == "two")
        .unwrap();
    assert_eq!(two_run["gpus"].as_array().unwrap().len(), 2, "{two_run}");

    // `rst status` reads the same field from the entries (as for a Slurm-bound stage).
    let status = t.ok(&["status", "p.yaml", "--json"]);
    let lines: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    let line = |name: &str| {
        lines
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["instance"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(line("two")["gpus"], two_run["gpus"]);
    assert!(line("none").get("gpus").is_none());
    t.ok(&["status", "p.yaml"])
        .assert_stdout_contains(&format!("computed on GPU {two}"));
}

#[test]
fn a_stage_asking_for_more_gpus_than_exist_fails_before_anything_runs() {
    let t = TestDir::new();
    t.write("p.yaml", &pipeline(2));
    let out = run(&t, "0", &[]);
    out.assert_code(2).assert_no_panic();
    out.assert_stderr_contains("stage `two` in p.yaml asks for 2 GPUs");
    out.assert_stderr_contains("this run has 1 (0), from RST_GPUS");
    assert!(t.entries().is_empty(), "nothing ran: {:?}", t.entries());

    // No GPUs at all: the same, before anything runs.
    let out = run(&t, "", &[]);
    out.assert_code(2);
    out.assert_stderr_contains("asks for 1 GPU (resources: gpus), but this run has none");
    assert!(t.entries().is_empty());
}

#[test]
fn the_gpus_flag_picks_the_devices_and_names_a_wrong_one() {
    let t = TestDir::new();
    t.write(
        "p.yaml",
        &pipeline(3).replace("resources: {gpus: 2}", "resources: {gpus: 1}"),
    );
    run(&t, "0,1,2", &["--gpus", "2"]).assert_code(0);
    for i in 1..=3 {
        assert_eq!(lease(&t, &format!("one[i={i}]")).0, "2");
    }
    let out = run(&t, "0,1,2", &["--gpus", "5", "--force", "two"]);
    out.assert_code(2);
    out.assert_stderr_contains(
        "--gpus 5: device `5` is not one of this machine's GPUs (0,1,2, from RST_GPUS)",
    );
}

#[test]
fn without_gpus_the_environment_is_left_alone() {
    let t = TestDir::new();
    t.write(
        "p.yaml",
        "name: plain\nstages:\n  s:\n    kind: command\n    params: {shell: \"echo $${CUDA_VISIBLE_DEVICES-unset} > $RST_OUT/v.txt\"}\n",
    );
    run(&t, "", &[]).assert_code(0);
    assert_eq!(t.artifact_file("s", "v.txt").trim(), "unset");
}

/// Without `RST_GPUS` or `CUDA_VISIBLE_DEVICES`, the devices are those `nvidia-smi -L`
/// lists, asked once per run and never by a run with nothing to do (here a stand-in
/// `nvidia-smi` on PATH that counts its calls).
#[test]
fn nvidia_smi_is_asked_once_per_run_and_not_by_a_no_op() {
    use std::os::unix::fs::PermissionsExt;
    let t = TestDir::new();
    let bin = t.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let smi = bin.join("nvidia-smi");
    std::fs::write(
        &smi,
        format!(
            "#!/bin/sh\necho x >> {}\necho 'GPU 0: Stand-in (UUID: GPU-a)'\necho 'GPU 1: Stand-in (UUID: GPU-b)'\n",
            t.join("calls").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&smi, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A chain of three stages (three launches), each asking for one GPU.
    t.write(
        "p.yaml",
        "name: chain\nstages:\n  a:\n    kind: command\n    resources: {gpus: 1}\n    params: {shell: \"echo $${CUDA_VISIBLE_DEVICES} > $RST_OUT/v\"}\n  b:\n    kind: command\n    inputs: {x: a}\n    resources: {gpus: 2}\n    params: {shell: \"echo $${CUDA_VISIBLE_DEVICES} > $RST_OUT/v\"}\n  c:\n    kind: command\n    inputs: {x: b}\n    resources: {gpus: 1}\n    params: {shell: \"echo c $${CUDA_VISIBLE_DEVICES} > $RST_OUT/v\"}\n",
    );
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let run = || {
        let env = [
            ("PATH", Some(path.as_str())),
            ("RST_GPUS", None),
            ("CUDA_VISIBLE_DEVICES", None),
        ];
        t.rst_env(&["run", "p.yaml"], &env).assert_code(0);
    };
    run();
    assert_eq!(
        t.read("calls").lines().count(),
        1,
        "asked once for three launches"
    );
    assert_eq!(t.artifact_file("b", "v").trim(), "0,1");
    assert_eq!(t.artifact_file("a", "v").trim(), "0");
    run();
    assert_eq!(
        t.read("calls").lines().count(),
        1,
        "a no-op run asks nothing"
    );

    // A driver that lists no GPU: still asked once, however many stages start.
    std::fs::write(
        &smi,
        format!("#!/bin/sh\necho x >> {}\n", t.join("calls").display()),
    )
    .unwrap();
    std::fs::remove_file(t.join("calls")).unwrap();
    t.write(
        "p.yaml",
        "name: chain\nstages:\n  a:\n    kind: command\n    params: {shell: \"echo 1 > $RST_OUT/v\"}\n  b:\n    kind: command\n    inputs: {x: a}\n    params: {shell: \"echo 2 > $RST_OUT/v\"}\n  c:\n    kind: command\n    inputs: {x: b}\n    params: {shell: \"echo 3 > $RST_OUT/v\"}\n",
    );
    run();
    assert_eq!(
        t.read("calls").lines().count(),
        1,
        "no GPUs: asked once all the same"
    );
}

/// GPU stages start in ready order: a two-GPU stage waiting for devices is not passed by
/// the one-GPU stages behind it (each would take the device that just came free).
#[test]
fn a_multi_gpu_stage_is_not_starved_by_the_stages_behind_it() {
    let t = TestDir::new();
    let record = r#"s=$(date +%s%N); sleep 0.3; echo \"$${CUDA_VISIBLE_DEVICES-unset} $s $(date +%s%N)\" > $RST_OUT/gpu.txt"#;
    t.write(
        "p.yaml",
        &format!(
            "name: order\nstages:\n  first:\n    kind: command\n    resources: {{gpus: 1}}\n    params: {{shell: \"echo first > /dev/null; {record}\"}}\n  two:\n    kind: command\n    resources: {{gpus: 2}}\n    params: {{shell: \"echo two > /dev/null; {record}\"}}\n  more:\n    kind: command\n    matrix: {{i: {{count: 4}}}}\n    resources: {{gpus: 1}}\n    params: {{shell: \"echo ${{i}} > /dev/null; {record}\"}}\n"
        ),
    );
    run(&t, "0,1", &[]).assert_code(0);
    let (_, two_start, _) = lease(&t, "two");
    for i in 1..=4 {
        let (_, start, _) = lease(&t, &format!("more[i={i}]"));
        assert!(
            start > two_start,
            "more[i={i}] started before the two-GPU stage that was ready first"
        );
    }
}

/// `--gpus` is the local executor's: with Slurm, where the cluster binds GPUs, it is an
/// error before anything is submitted.
#[test]
fn the_gpus_flag_needs_the_local_executor() {
    let t = TestDir::new();
    t.write("p.yaml", &pipeline(1));
    let out = t.rst(&["run", "p.yaml", "--executor", "slurm", "--gpus", "0"]);
    out.assert_code(2).assert_no_panic();
    out.assert_stderr_contains("--gpus needs --executor local");
    assert!(t.entries().is_empty());
}
