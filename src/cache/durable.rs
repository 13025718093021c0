//! Durability by batch: one `syncfs(2)` per run instead of five fsyncs per stage.
//!
//! The rule (see also [`super::store`]): while a [`SyncBatch`] is open, stages publish
//! with renames only (object tree, then entry file), no fsync. Before the batch opens,
//! a journal `pending/<pid>.<n>.json` (the boot id and the start time) is written and
//! made durable; [`SyncBatch::commit`] syncs the cache's filesystem once and removes it.
//! So after any crash an entry that may point at an object not yet on disk is *known*:
//! - the process was killed (`kill -9`, OOM) but the machine kept running: the page
//!   cache holds every byte it wrote, renames are atomic, so the state is the old or the
//!   new complete one; the next batch finds the journal unlocked with the same boot id,
//!   syncs the filesystem and removes it;
//! - the machine went down (power loss, kernel crash) before the commit: the next batch
//!   finds a journal of another boot and re-hashes the object of every entry written since
//!   that journal's start; a torn or missing one is quarantined, so its entries miss and
//!   are recomputed. (Independently, every input is verified against its digest before a
//!   stage reads it, `exec::integrity`.)
//!
//! Why: the five fsyncs of a one-file stage (file, staging dir, objects shard, entry,
//! entries shard) were most of a small stage's cost (5,068 fsyncs for 1,013 stages).
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::digest;
use super::store::{Store, StoreError};

/// Set on the workers of a run whose parent holds a [`SyncBatch`]: their publishes defer
/// durability to the parent's commit (the parent waits for them before it commits).
pub const DEFERRED_ENV: &str = "RST_SYNC_DEFERRED";

/// Open batches in this process: publishes here defer their durability while one is open.
static OPEN_BATCHES: AtomicUsize = AtomicUsize::new(0);
static SEQ: AtomicU64 = AtomicU64::new(0);

/// Does a publish in this process leave durability to an open batch's commit?
pub(crate) fn deferred() -> bool {
    OPEN_BATCHES.load(Ordering::Relaxed) > 0 || std::env::var_os(DEFERRED_ENV).is_some()
}

#[derive(Debug, Serialize, Deserialize)]
struct Journal {
    boot_id: String,
    started_unix: f64,
}

/// An open batch: the journal is durable and locked (the lock tells a concurrent run it is
/// alive). Committed on drop too (an interrupted or failed run keeps what it published).
pub struct SyncBatch {
    root: PathBuf,
    journal: PathBuf,
    _lock: File,
    done: bool,
}

fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One `syncfs(2)` of the filesystem holding `dir` (Linux); elsewhere `sync(2)`.
pub fn sync_filesystem(dir: &Path) -> Result<(), StoreError> {
    #[cfg(target_os = "linux")]
    {
        let f = File::open(dir).map_err(io(dir))?;
        match rustix::fs::syncfs(&f) {
            Ok(()) => return Ok(()),
            Err(e) if e == rustix::io::Errno::NOSYS => {}
            Err(e) => return Err(io(dir)(e.into())),
        }
    }
    rustix::fs::sync();
    Ok(())
}

/// Writes `record` to a temp file, locks it, makes it durable and renames it to `path`.
fn write_locked(path: &Path, record: &Journal) -> Result<File, StoreError> {
    use std::io::Write;
    let tmp = path.with_extension("new");
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.lock()?;
        f.write_all(&serde_json::to_vec(record).expect("journal serialises"))?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        Ok(f)
    })()
    .map_err(io(path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    let f = written?;
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(f)
}

/// Recovers what crashed batches left (see the module doc): call before the first cache
/// lookup, so that an entry whose object was torn by a power loss misses. Returns whether
/// there was one: a run was killed, and may have left leftovers to sweep.
pub fn recover_crashed(store: &Store) -> Result<bool, StoreError> {
    let dir = store.root().join("pending");
    let empty = match fs::read_dir(&dir) {
        Ok(mut rd) => rd.next().is_none(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    };
    if empty {
        return Ok(false);
    }
    Ok(recover(store, &dir)? > 0)
}

/// A batch opened when the first job of a run starts, not before: a run where every
/// stage is cached writes no journal (two fsyncs less on a no-op run).
pub struct LazyBatch<'s> {
    store: &'s Store,
    batch: std::sync::Mutex<Option<SyncBatch>>,
}

impl<'s> LazyBatch<'s> {
    pub fn new(store: &'s Store) -> Self {
        LazyBatch {
            store,
            batch: std::sync::Mutex::new(None),
        }
    }

    /// Opens the batch if it is not open yet.
    pub fn ensure(&self) -> Result<(), StoreError> {
        let mut batch = self.batch.lock().unwrap_or_else(|e| e.into_inner());
        if batch.is_none() {
            *batch = Some(SyncBatch::begin(self.store)?);
        }
        Ok(())
    }

    /// Commits the batch if one was opened.
    pub fn commit(self) -> Result<(), StoreError> {
        let batch = self.batch.into_inner().unwrap_or_else(|e| e.into_inner());
        batch.map_or(Ok(()), SyncBatch::commit)
    }
}

impl SyncBatch {
    /// Recovers what crashed batches left (see the module doc), then opens a new one.
    pub fn begin(store: &Store) -> Result<SyncBatch, StoreError> {
        let dir = store.root().join("pending");
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        recover(store, &dir)?;
        let journal = dir.join(format!(
            "{}.{}.json",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let record = Journal {
            boot_id: boot_id(),
            started_unix: crate::time::unix_now(),
        };
        // Locked before it gets its name: a concurrent run's recovery must never see it
        // unlocked (it would take it for a dead batch's and remove it).
        let lock = write_locked(&journal, &record)?;
        OPEN_BATCHES.fetch_add(1, Ordering::SeqCst);
        Ok(SyncBatch {
            root: store.root().to_path_buf(),
            journal,
            _lock: lock,
            done: false,
        })
    }

    /// Makes everything published since [`begin`](Self::begin) durable (one syncfs), then
    /// removes the journal.
    pub fn commit(mut self) -> Result<(), StoreError> {
        self.close(true)
    }

    fn close(&mut self, sync: bool) -> Result<(), StoreError> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        OPEN_BATCHES.fetch_sub(1, Ordering::SeqCst);
        if sync {
            sync_filesystem(&self.root)?;
        }
        // Losing this removal to a crash costs only a needless check next time.
        fs::remove_file(&self.journal).map_err(io(&self.journal))
    }
}

impl Drop for SyncBatch {
    fn drop(&mut self) {
        let _ = self.close(true);
    }
}

/// Handles each journal in `dir` whose batch is gone (its lock is free); returns how many.
fn recover(store: &Store, dir: &Path) -> Result<usize, StoreError> {
    let boot = boot_id();
    let mut recovered = 0;
    for e in fs::read_dir(dir).map_err(io(dir))?.flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "json") {
            // A journal being written (`.new`): its writer may not hold the lock yet. One
            // left by a crash in `begin` is a few bytes, nothing was published under it.
            continue;
        }
        let Ok(file) = File::open(&path) else {
            continue;
        };
        if file.try_lock().is_err() {
            continue; // a live run's batch (or an unreadable one: left alone)
        }
        let journal: Option<Journal> = fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        match journal {
            // The process died, the kernel kept its writes: make them durable.
            Some(j) if j.boot_id == boot && !boot.is_empty() => sync_filesystem(store.root())?,
            // The machine went down: check what was published since the batch began (an
            // unreadable journal: since a day before now).
            j => {
                let since = j.map_or(crate::time::unix_now() - 86_400.0, |j| j.started_unix);
                check_entries_since(store, since)?;
                sync_filesystem(store.root())?;
            }
        }
        let _ = fs::remove_file(&path);
        recovered += 1;
    }
    Ok(recovered)
}

/// Re-hashes the object of every entry file modified since `since` (with a margin for
/// clock steps); a torn or missing one is quarantined, so those entries miss.
fn check_entries_since(store: &Store, since: f64) -> Result<(), StoreError> {
    let since = UNIX_EPOCH + Duration::from_secs_f64((since - 2.0).max(0.0));
    let (entries, _) = store.all_entries();
    for (path, entry) in entries {
        let recent = fs::metadata(&path)
            .and_then(|m| m.modified())
            .map_or(true, |t| t >= since || t > SystemTime::now());
        if !recent {
            continue;
        }
        let object = store.object_path(&entry.artifact);
        match digest::digest_path(&object) {
            Ok(d) if d == entry.artifact => {}
            Ok(_) => {
                store.quarantine(&entry.artifact)?;
            }
            Err(_) if object.exists() => {
                store.quarantine(&entry.artifact)?;
            }
            Err(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_defers_and_commits() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path()).unwrap();
        let b = SyncBatch::begin(&store).unwrap();
        assert!(deferred());
        assert_eq!(fs::read_dir(d.path().join("pending")).unwrap().count(), 1);
        b.commit().unwrap();
        assert_eq!(fs::read_dir(d.path().join("pending")).unwrap().count(), 0);
    }

    #[test]
    fn a_lazy_batch_writes_no_journal_until_a_job_starts() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path()).unwrap();
        LazyBatch::new(&store).commit().unwrap();
        let journals = || fs::read_dir(d.path().join("pending")).map_or(0, |r| r.count());
        assert_eq!(journals(), 0, "no job: no journal");
        let lazy = LazyBatch::new(&store);
        lazy.ensure().unwrap();
        lazy.ensure().unwrap();
        assert_eq!(fs::read_dir(d.path().join("pending")).unwrap().count(), 1);
        assert!(deferred());
        lazy.commit().unwrap();
        assert_eq!(fs::read_dir(d.path().join("pending")).unwrap().count(), 0);
    }

    #[test]
    fn a_journal_of_another_boot_quarantines_torn_objects() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path()).unwrap();
        let key = "ab".repeat(32);
        let st = store.staging(&key).unwrap();
        fs::write(st.out.join("a"), "intact").unwrap();
        let rec = crate::cache::key::empty_command_record();
        let e = store
            .publish(st, &key, "p", "s", rec, Default::default())
            .unwrap();
        // As if the power went out before the commit: the file's data never reached disk.
        let file = store.object_path(&e.artifact).join("a");
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&file, "").unwrap();
        let old = Journal {
            boot_id: "another-boot".into(),
            started_unix: crate::time::unix_now() - 10.0,
        };
        fs::create_dir_all(d.path().join("pending")).unwrap();
        fs::write(
            d.path().join("pending/1.0.json"),
            serde_json::to_vec(&old).unwrap(),
        )
        .unwrap();
        assert!(store.entry(&key).is_some());
        SyncBatch::begin(&store).unwrap().commit().unwrap();
        assert!(store.entry(&key).is_none(), "the torn object is not used");
        assert_eq!(fs::read_dir(d.path().join("pending")).unwrap().count(), 0);
    }
}
