//! Issue #11: `command` stages run without a worker process (rst starts their program in a
//! process group of its own and stores the artifact itself). What the worker gave them
//! must hold: crash isolation, the stage's log, the process-group kill (also when rst is
//! killed by SIGKILL: tests/bounds.rs), nothing stored from an interrupted program.

use std::process::Stdio;
use std::time::Duration;

use crate::common::{wait_for, TestDir};

/// The program's parent is rst itself: no `rst worker` in between.
#[test]
fn a_command_stage_is_started_by_rst_without_a_worker_process() {
    let t = TestDir::new();
    t.write(
        "p.yaml",
        "name: direct\nstages:\n  s:\n    kind: command\n    params:\n      shell: \"tr '\\\\0' ' ' < /proc/$PPID/cmdline > $RST_OUT/parent\"\n",
    );
    t.ok(&["run", "p.yaml"]);
    let parent = t.artifact_file("s", "parent");
    assert!(
        parent.contains(" run p.yaml") && !parent.contains("worker"),
        "the stage's parent: {parent:?}"
    );
}

/// A program killed by a signal (here SIGSEGV, as a crashing program) is a failed stage:
/// rst reports it, goes on with the others under --keep-going, caches them and not it.
#[test]
fn a_command_killed_by_a_signal_is_a_stage_failure_and_rst_survives() {
    let t = TestDir::new();
    t.write(
        "p.yaml",
        r#"
name: crash
stages:
  crash:
    kind: command
    params: {shell: "echo partial > $RST_OUT/x; kill -SEGV $$"}
  fine:
    kind: command
    params: {shell: "echo ok > $RST_OUT/x"}
"#,
    );
    let o = t.rst(&["run", "p.yaml", "--keep-going"]);
    o.assert_code(1)
        .assert_no_panic()
        .assert_stderr_contains("was killed by signal 11");
    let s = o.summary();
    assert_eq!((s.ran, s.failed), (1, 1), "{}", o.stderr);
    assert_eq!(
        t.entries().len(),
        1,
        "only the stage that succeeded is cached"
    );
    assert_eq!(t.artifact_file("fine", "x").trim(), "ok");
    // The next run computes only the failed stage again.
    let o = t.rst(&["run", "p.yaml", "--keep-going"]);
    o.assert_code(1);
    assert_eq!(o.summary().cached, 1, "{}", o.stderr);
}

/// The stage's log in the cache holds the program's stdout and stderr and rst's line.
#[test]
fn the_log_of_a_command_stage_holds_its_output() {
    let t = TestDir::new();
    t.write(
        "p.yaml",
        "name: logs\nstages:\n  s:\n    kind: command\n    params: {shell: 'echo to-stdout; echo to-stderr >&2; echo x > $RST_OUT/x'}\n",
    );
    t.ok(&["run", "p.yaml"]);
    let logs: Vec<String> = std::fs::read_dir(t.join("cache/logs"))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    assert_eq!(logs.len(), 1, "one log, under the key's name: {logs:?}");
    for needle in ["to-stdout", "to-stderr", "rst worker: s (command v1), key"] {
        assert!(logs[0].contains(needle), "{needle} in {:?}", logs[0]);
    }
}

/// SIGTERM to rst while several command stages run ends every one of their process
/// groups; rst exits 130 and caches nothing.
#[test]
fn sigterm_to_rst_ends_the_groups_of_every_running_command_stage() {
    let t = TestDir::new();
    t.write(
        "p.yaml",
        r#"
name: many
params: {n: [1, 2]}
stages:
  slow:
    kind: command
    matrix: {i: "${n}"}
    params:
      shell: "sleep 30 & echo $! >> $RST_PROJECT/pids; touch $RST_PROJECT/started-${i}; wait"
"#,
    );
    let mut child = t
        .command(&["run", "p.yaml", "--jobs", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("both stages to start", Duration::from_secs(20), || {
        t.exists("started-1") && t.exists("started-2")
    });
    let pids: Vec<u32> = t
        .read("pids")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert_eq!(pids.len(), 2);
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(130));
    wait_for("the sleepers to end", Duration::from_secs(5), || {
        pids.iter().all(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).map_or(true, |s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with(['Z', 'X']))
            })
        })
    });
    assert!(t.entries().is_empty(), "nothing cached: {:?}", t.entries());
}
