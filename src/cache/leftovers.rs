//! Leftovers of killed or failed runs, and their cleanup (by `rst gc`, and at the start
//! of an `rst run` when one is due: [`sweep_if_due`]).
//!
//! What a `kill -9` or a full disk can leave in the cache, and when it is safe to remove:
//!
//! | leftover | written by | removed when |
//! |---|---|---|
//! | `tmp/<key>.<pid>.<n>/` (staging; and `….link-copy.<m>` files beside it) | the worker computing `key` (it holds the key's lock) | the key's lock is free |
//! | `tmp/work.<pid>.<n>.<host>/` (a stage's scratch, reused by that process) | the process with that pid on that host | it is this host and that pid is not running |
//! | `tmp/upload.<pid>.<n>.<host>` (an artifact packed for a multipart upload) | the process with that pid on that host | it is this host and that pid is not running |
//! | `tmp/jobs/<key>.<pid>.<i>.json` | the `rst run` with that pid | that pid is not running |
//! | `logs/<key>.<pid>.log` | the `rst run` with that pid (renamed to `<key>.log` at the end) | that pid is not running and the key's lock is free |
//! | `.<name>.<pid>.<n>.tmp` (entries, refs, runs) | `write_atomic` in that pid | that pid is not running, the key in the name (if any) is unlocked, and it is over a minute old |
//!
//! A concurrent `rst run` never loses a file it still uses: its pid is alive and it holds
//! the locks of the keys it computes. (A Slurm worker runs on another host: its staging is
//! protected by its lock, and its temp files by the age check.)
use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::store::{
    dir_size, is_dead_process_file, is_dead_work_dir, pid_alive, remove_tree, temp_file_owner,
};

/// What a sweep removed (or would remove, when dry).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub items: usize,
    pub bytes: u64,
}

fn is_key(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Runs `f` while holding `key`'s lock, if nobody else holds it; false when it is held.
fn with_free_lock(root: &Path, key: &str, f: impl FnOnce()) -> bool {
    let path = root.join("locks").join(format!("{key}.lock"));
    match fs::File::open(&path) {
        // No lock file: nobody ever locked the key here.
        Err(_) => {
            f();
            true
        }
        Ok(file) => {
            if file.try_lock().is_err() {
                return false;
            }
            f();
            true
        }
    }
}

fn names(dir: &Path) -> Vec<(String, std::path::PathBuf)> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Marks that a run ended with a failed or interrupted stage: the next run sweeps.
/// (In the cache's root, not in `tmp/`: what is in `tmp/` is a leftover or in use.)
pub const SWEEP_DUE: &str = ".sweep-due";
/// Touched by every sweep; a run sweeps when it is older than [`SWEEP_EVERY`] (or absent).
const SWEPT: &str = ".swept";
/// The longest a run goes without a sweep: a bound on how long a leftover whose maker left
/// no other sign (a killed `rst gc` or `rst audit`, a Slurm worker) takes up room.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// Sweeps (as [`sweep`]) when something may have left leftovers: a run that was killed
/// (`killed`: its durability journal was found unlocked, `durable::recover_crashed`), a run that ended with a failed or
/// interrupted stage ([`SWEEP_DUE`], see [`mark_sweep_due`]), or no sweep for
/// [`SWEEP_EVERY`]. Otherwise it costs three system calls.
///
/// Why not every run: a sweep lists `tmp/`, `logs/` and the 256 shards of `entries/`,
/// work that grows with the cache; on a no-op run of 1,013 stages it was a tenth of the
/// run's time, to find nothing after a run that ended well.
pub fn sweep_if_due(root: &Path, killed: bool) -> Option<Swept> {
    let marked = root.join(SWEEP_DUE).exists();
    let stale = fs::metadata(root.join(SWEPT))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_none_or(|age| age > SWEEP_EVERY);
    if !(marked || stale || killed) {
        return None;
    }
    // Cleared before the sweep: a mark a concurrent run sets meanwhile is kept.
    let _ = fs::remove_file(root.join(SWEEP_DUE));
    let swept = sweep(root, false);
    let _ = fs::write(root.join(SWEPT), b"");
    Some(swept)
}

/// Makes the next run sweep (a stage failed or was interrupted: it may have left a
/// staging dir or a temp file).
pub fn mark_sweep_due(root: &Path) {
    let _ = fs::write(root.join(SWEEP_DUE), b"");
}

/// Removes the leftovers of dead runs in the cache at `root` (see the module docs).
pub fn sweep(root: &Path, dry_run: bool) -> Swept {
    let mut swept = Swept::default();
    let remove_file = |path: &Path, swept: &mut Swept| {
        let size = fs::symlink_metadata(path).map(|m| m.len()).unwrap_or(0);
        if dry_run || fs::remove_file(path).is_ok() {
            swept.items += 1;
            swept.bytes += size;
        }
    };
    let remove_dir = |path: &Path, swept: &mut Swept| {
        let size = dir_size(path).0;
        if dry_run || remove_tree(path).is_ok() {
            swept.items += 1;
            swept.bytes += size;
        }
    };
    for (name, path) in names(&root.join("tmp")) {
        match name.split('.').next() {
            // The work dirs of processes that are gone.
            Some("work") if path.is_dir() && is_dead_work_dir(&name) => {
                remove_dir(&path, &mut swept);
            }
            // A remote upload's packed object, of a process that is gone.
            Some("upload") if is_dead_process_file(&name, "upload") => {
                remove_file(&path, &mut swept);
            }
            // Staging dirs (and their link copies) of computations that are not running
            // (their key is unlocked).
            Some(key) if is_key(key) => {
                with_free_lock(root, key, || {
                    if path.is_dir() {
                        remove_dir(&path, &mut swept);
                    } else {
                        remove_file(&path, &mut swept);
                    }
                });
            }
            _ => {} // tmp/jobs, audit scratch caches
        }
    }
    // Job files of runs that are gone.
    for (name, path) in names(&root.join("tmp").join("jobs")) {
        let pid = name.split('.').nth(1).and_then(|p| p.parse::<u32>().ok());
        if name.ends_with(".json") && pid.is_some_and(|p| !pid_alive(p)) {
            remove_file(&path, &mut swept);
        }
    }
    // Logs of stages a killed run was computing (`<key>.<pid>.log`).
    for (name, path) in names(&root.join("logs")) {
        let parts: Vec<&str> = name.split('.').collect();
        let [key, pid, "log"] = parts[..] else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if is_key(key) && !pid_alive(pid) {
            let mut free = false;
            with_free_lock(root, key, || free = true);
            if free {
                remove_file(&path, &mut swept);
            }
        }
    }
    // Temp files of atomic writes that never got renamed (killed, or a full disk).
    let mut dirs = vec![root.to_path_buf(), root.join("refs"), root.join("runs")];
    dirs.extend(
        names(&root.join("entries"))
            .into_iter()
            .map(|(_, p)| p)
            .filter(|p| p.is_dir()),
    );
    let old_enough = |path: &Path| {
        fs::symlink_metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age > Duration::from_secs(60))
    };
    for dir in dirs {
        for (name, path) in names(&dir) {
            let Some((target, pid)) = temp_file_owner(&name) else {
                continue;
            };
            if pid_alive(pid) || !old_enough(&path) {
                continue;
            }
            let key = target.strip_suffix(".json").filter(|k| is_key(k));
            match key {
                Some(key) => {
                    let mut free = false;
                    with_free_lock(root, key, || free = true);
                    if free {
                        remove_file(&path, &mut swept);
                    }
                }
                None => remove_file(&path, &mut swept),
            }
        }
    }
    swept
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pid that is not running: past the kernel's pid_max.
    const DEAD: u32 = 4_194_304 + 7;

    fn age(path: &Path) {
        let old = SystemTime::now() - Duration::from_secs(3600);
        let f = fs::File::options().write(true).open(path).unwrap();
        f.set_modified(old).unwrap();
    }

    #[test]
    fn sweeps_when_due_and_not_after_a_run_that_ended_well() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        fs::create_dir_all(root.join("tmp/jobs")).unwrap();
        let job = root.join(format!("tmp/jobs/{}.{DEAD}.0.json", "ab".repeat(32)));
        // No sweep yet: due.
        assert!(sweep_if_due(root, false).is_some());
        // Swept a moment ago, nothing marked, no journal: not due; the file stays.
        fs::write(&job, b"x").unwrap();
        assert_eq!(sweep_if_due(root, false), None);
        assert!(job.exists());
        // A failed run marked it.
        mark_sweep_due(root);
        assert_eq!(sweep_if_due(root, false).map(|s| s.items), Some(1));
        assert!(!job.exists() && !root.join(SWEEP_DUE).exists());
        // A killed run (its journal was found unlocked).
        fs::write(&job, b"x").unwrap();
        assert_eq!(sweep_if_due(root, true).map(|s| s.items), Some(1));
        // An hour without a sweep.
        fs::write(&job, b"x").unwrap();
        age(&root.join(SWEPT));
        assert_eq!(sweep_if_due(root, false).map(|s| s.items), Some(1));
    }

    #[test]
    fn removes_what_dead_runs_left_and_keeps_what_live_ones_use() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        for sub in ["tmp/jobs", "logs", "locks", "entries/ab", "refs", "runs"] {
            fs::create_dir_all(root.join(sub)).unwrap();
        }
        let k1 = "ab".repeat(32);
        let k2 = "cd".repeat(32);
        let me = std::process::id();
        let touch = |rel: &str| {
            let p = root.join(rel);
            fs::write(&p, b"x").unwrap();
            p
        };
        // Dead run's leftovers.
        fs::create_dir_all(root.join(format!("tmp/{k1}.{DEAD}.0/sub"))).unwrap();
        touch(&format!("tmp/{k1}.{DEAD}.0.link-copy.4"));
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        let host = host.trim();
        fs::create_dir_all(root.join(format!("tmp/work.{DEAD}.1.{host}/scratch"))).unwrap();
        // Another node's (a shared cluster cache): never judged here.
        fs::create_dir_all(root.join(format!("tmp/work.{DEAD}.3.other-node"))).unwrap();
        touch(&format!("tmp/jobs/{k1}.{DEAD}.0.json"));
        touch(&format!("logs/{k1}.{DEAD}.log"));
        age(&touch(&format!("entries/ab/.{k1}.json.{DEAD}.3.tmp")));
        age(&touch(&format!("runs/.r1.json.{DEAD}.0.tmp")));
        // A live run's files (this process), a locked key, a fresh temp file, real entries.
        touch(&format!("tmp/jobs/{k2}.{me}.0.json"));
        touch(&format!("logs/{k2}.{me}.log"));
        fs::create_dir_all(root.join(format!("tmp/{k2}.{DEAD}.0/sub"))).unwrap();
        fs::create_dir_all(root.join(format!("tmp/work.{me}.2.{host}"))).unwrap();
        let lock = fs::File::create(root.join(format!("locks/{k2}.lock"))).unwrap();
        lock.lock().unwrap();
        std::thread::scope(|s| {
            // The lock is held by "another process": flock is per open file, so a second
            // open in this process conflicts like one in another would.
            s.spawn(|| {
                touch(&format!("refs/.x.json.{DEAD}.0.tmp"));
                touch(&format!("entries/ab/{k1}.json"));
                touch(&format!("logs/{k1}.log"));
                let dry = sweep(root, true);
                assert_eq!(dry.items, 7);
                assert!(root.join(format!("logs/{k1}.{DEAD}.log")).exists());
                let swept = sweep(root, false);
                assert_eq!(swept.items, 7, "{swept:?}");
            });
        });
        for gone in [
            format!("tmp/{k1}.{DEAD}.0"),
            format!("tmp/{k1}.{DEAD}.0.link-copy.4"),
            format!("tmp/work.{DEAD}.1.{host}"),
            format!("tmp/jobs/{k1}.{DEAD}.0.json"),
            format!("logs/{k1}.{DEAD}.log"),
            format!("entries/ab/.{k1}.json.{DEAD}.3.tmp"),
            format!("runs/.r1.json.{DEAD}.0.tmp"),
        ] {
            assert!(!root.join(&gone).exists(), "{gone} should be removed");
        }
        for kept in [
            format!("tmp/jobs/{k2}.{me}.0.json"),
            format!("logs/{k2}.{me}.log"),
            format!("tmp/{k2}.{DEAD}.0"),
            format!("tmp/work.{me}.2.{host}"),
            format!("tmp/work.{DEAD}.3.other-node"),
            format!("refs/.x.json.{DEAD}.0.tmp"),
            format!("entries/ab/{k1}.json"),
            format!("logs/{k1}.log"),
        ] {
            assert!(root.join(&kept).exists(), "{kept} should be kept");
        }
        drop(lock);
    }
}
