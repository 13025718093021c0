//! The on-disk cache.
//!
//! ```text
//! cache/
//!   CACHEDIR.TAG
//!   objects/ab/<digest>/      artifact directories, content-addressed, files read-only
//!   entries/ab/<key>.json     stage key -> artifact digest + what went into the key
//!   refs/<id>                 (pipeline, instance) -> last key (a symlink), for `rst status` reasons
//!   refs/<id>.recent          what a pipeline's last run found: the no-op shortcut (`cache::recent`)
//!   locks/<key>.lock          OS file locks (flock): released by the kernel when a holder dies
//!   tmp/<key>.<pid>.<n>/      a stage being computed: out/ (the artifact) and work/
//!   logs/<key>.log            the last log of each computed stage
//!   downloads/                partial downloads, resumed across runs
//!   quarantine/               corrupted objects found by `rst verify`
//! ```
//! Publishing: the artifact is written into tmp/; every file is checked to be a regular
//! file (no FIFO, device, socket or link), hashed and made read-only (a file with other
//! hard links, e.g. one linked in from outside, is first replaced by a private copy, so
//! the user's file is neither chmodded nor shared with the cache); then one `syncfs(2)`
//! makes the whole staging tree durable (instead of one fsync per file: 10,000 small files
//! took 34 s), the tree is moved into objects/ by one rename, then the entry is written
//! (temp file, fsync, rename). An entry is trusted only if its object exists, so `kill -9`
//! at any moment leaves either a complete entry or nothing a later run uses.
//!
//! Durability rule (`rst run`): an entry never points at an object that is not there
//! intact, or if it might, that is known and checked before the entry is used again.
//! `rst run` opens a [`SyncBatch`](super::durable::SyncBatch): a journal in `pending/`
//! (boot id, start time) is made durable first; then every stage of the run publishes
//! with renames only (object tree into `objects/`, entry file into `entries/`: readers
//! see the old or the new complete file, never a partial one), no fsync; before the run
//! record is written, one `syncfs(2)` makes all of it durable and the journal is removed.
//! A `kill -9` loses nothing (the kernel keeps the written pages; the next run syncs and
//! drops the journal). A machine crash before the commit leaves the journal of another
//! boot: the next run re-hashes the objects of the entries written since it began and
//! quarantines a torn one, so its entries miss and are recomputed. Outside a batch (other
//! commands, Slurm workers on other hosts) publishing fsyncs as above.
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::digest::{self, DigestError};
use super::key::KeyRecord;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The path only: the cause is the `source`, which a reporter prints after it
    /// ([`crate::error::chain`]); writing it here too would say it twice.
    #[error("cache {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error("cache entry {path} is corrupt: {message}")]
    Corrupt { path: PathBuf, message: String },
}

/// Reads a small file (an entry) into a buffer sized for it, with plain `read`s:
/// `fs::read` and `read_to_end` on a `File` first ask for its size and position (a
/// `statx` and an `lseek`), two system calls more per cache lookup.
fn read_small(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut file = fs::File::open(path)?;
    let mut buf = vec![0; 8 << 10];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(2 * len, 0);
        }
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    Ok(buf)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A cache entry: stage key -> artifact, with the record of what went into the key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub key: String,
    pub artifact: String,
    pub pipeline: String,
    pub instance: String,
    pub record: KeyRecord,
    pub created_unix: f64,
    pub duration_s: f64,
    pub size_bytes: u64,
    pub files: usize,
    pub rst_version: String,
    #[serde(default)]
    pub run: RunFacts,
}

/// How and where an artifact was computed (provenance; never part of the key).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunFacts {
    pub host: String,
    pub started_unix: f64,
    pub ended_unix: f64,
    pub duration_s: f64,
    pub threads: usize,
    /// Peak resident memory of the worker and the programs it ran, in KiB.
    pub peak_rss_kib: u64,
    pub rst_version: String,
    /// The git commit rst was built from, when built from a checkout.
    pub rst_git_commit: Option<String>,
    pub libtorch: String,
    /// The device a torch stage ran on (`cpu`, `cuda:0`); None for other stages.
    #[serde(default)]
    pub device: Option<String>,
    /// The CPU it ran on (`model name` of /proc/cpuinfo) and its x86-64 level
    /// (`x86-64-v4`); empty in entries older than these fields.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cpu: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub isa: String,
    /// The GPUs the stage was given (`CUDA_VISIBLE_DEVICES`: leased by rst, or bound by
    /// the cluster); empty when it had none or the variable was not set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<String>,
    /// The stage's log, relative to the cache root (`logs/<key>.log`: kept while the
    /// entry exists; a later run of the same key only replaces it when it recomputes).
    pub log: String,
    /// Set when this entry was not computed here but fetched from a shared cache (the
    /// remote): from where, when, by which host. The other facts are the computing run's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched: Option<FetchedFrom>,
    /// Every object the stage read, verified before it read it: its inputs' artifacts and
    /// each artifact it resolved (a dataset view's base). `rst verify` invalidates the
    /// entry when one of them is corrupt. Empty in entries older than this field: then
    /// the key record's input digests stand for it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reads: Vec<String>,
    /// Per input name, the keys of the entries whose artifacts the stage consumed, in the
    /// order of `record.inputs` (`rst lineage` follows them; several entries can share
    /// one artifact). Empty in older entries and for jobs that did not pass them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub consumed: BTreeMap<String, Vec<String>>,
}

/// Where and when an entry was fetched from a shared cache ([`RunFacts::fetched`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FetchedFrom {
    /// The remote's URL (`s3://bucket/prefix`).
    pub from: String,
    pub unix: f64,
    pub host: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ref {
    pipeline: String,
    instance: String,
    key: String,
}

/// The name of `instance`'s ref in `refs/`: 32 hex digits of blake3(`pipeline\0instance`).
fn ref_id(pipeline: &str, instance: &str) -> String {
    let mut h = blake3::Hasher::new();
    h.update(pipeline.as_bytes());
    h.update(b"\0");
    h.update(instance.as_bytes());
    let hex = h.finalize().to_hex();
    hex[..32].to_string()
}

/// What sealing a staging tree gave.
struct Sealed {
    artifact: String,
    size_bytes: u64,
    files: usize,
}

/// The names a [`Store::listing`] found.
pub struct Listing {
    entries: std::collections::HashSet<String>,
    refs: std::collections::HashSet<String>,
}

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// An exclusive per-key lock, held while a stage is computed; released on drop or when
/// the process dies.
pub struct KeyLock {
    _file: File,
}

/// A private staging area for one computation: `out`, the artifact being written
/// (`tmp/<key>.<pid>.<n>/`, renamed into `objects/` when published), and `work`, the
/// stage's scratch directory (`tmp/work.<pid>.<n>.<host>/`, reused by this process's next
/// computation). Dropping it removes what was not published and empties the work dir.
///
/// Why this layout, and not one fresh `tmp/<key>…/{out,work}` per computation: every
/// directory made and removed per stage is an inode freed mid-run, and ext4 skips inodes
/// freed in the last seconds when it allocates new ones, scanning past each: a run of a
/// thousand small stages spent most of its kernel time there (measured in #11). Now a
/// stage that leaves no scratch frees no inode at all.
pub struct Staging {
    pub out: PathBuf,
    pub work: PathBuf,
}

impl Drop for Staging {
    fn drop(&mut self) {
        // Not there after a publish (renamed into objects/).
        let _ = remove_tree(&self.out);
        give_back_work_dir(std::mem::take(&mut self.work));
    }
}

static STAGING_SEQ: AtomicU64 = AtomicU64::new(0);

/// This process's idle work dirs (of any store: each lies in its store's `tmp/`).
static WORK_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// The file every `command` stage finds in its work dir (`$RST_INPUTS`): kept when a work
/// dir is emptied, because the next command stage rewrites it in place (truncating the
/// same inode). Only `command` stages are computed in the process that runs the
/// scheduler (`exec::direct`); every other kind runs in a worker process of its own, so
/// no stage finds another kind's leftover.
const KEPT_IN_WORK: &str = "rst-inputs.json";

/// This machine's host name (read once), part of a work dir's name: the cache's `tmp/`
/// may be shared by cluster nodes, whose pids this machine cannot judge.
pub(crate) fn this_host() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default()
    })
}

/// Whether `name` is a work dir (`work.<pid>.<n>.<host>`) of a process of this host that is
/// gone; a work dir of another host is never judged here.
pub(crate) fn is_dead_work_dir(name: &str) -> bool {
    is_dead_process_file(name, "work")
}

/// Whether `name` is `<prefix>.<pid>.<n>.<host>…` of a process of this host that is gone
/// (work dirs, a remote upload's packed temp file).
pub(crate) fn is_dead_process_file(name: &str, prefix: &str) -> bool {
    let mut parts = name.splitn(4, '.');
    if parts.next() != Some(prefix) {
        return false;
    }
    let pid = parts.next().and_then(|p| p.parse::<u32>().ok());
    let host = parts.nth(1);
    matches!((pid, host), (Some(pid), Some(host)) if host == this_host() && !pid_alive(pid))
}

/// A unique temp file name in `tmp/` for this process (`<prefix>.<pid>.<n>.<host>`),
/// removed by `cache::leftovers` once this process is gone.
pub fn process_temp_path(root: &Path, prefix: &str) -> PathBuf {
    root.join("tmp").join(format!(
        "{prefix}.{}.{}.{}",
        std::process::id(),
        STAGING_SEQ.fetch_add(1, Ordering::Relaxed),
        this_host()
    ))
}

/// An empty work dir in `tmp`: one this process used before, else a new one.
fn take_work_dir(tmp: &Path) -> Result<PathBuf, StoreError> {
    let mut idle = WORK_DIRS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(i) = idle.iter().position(|d| d.parent() == Some(tmp)) {
        let dir = idle.swap_remove(i);
        drop(idle);
        // Still there unless someone removed it.
        if dir.is_dir() {
            return Ok(dir);
        }
    } else {
        drop(idle);
    }
    let dir = tmp.join(format!(
        "work.{}.{}.{}",
        std::process::id(),
        STAGING_SEQ.fetch_add(1, Ordering::Relaxed),
        this_host()
    ));
    fs::create_dir_all(&dir).map_err(io(&dir))?;
    Ok(dir)
}

/// Removes the work dirs this process kept: call when it computes no more stages.
pub fn release_work_dirs() {
    let idle = std::mem::take(&mut *WORK_DIRS.lock().unwrap_or_else(|e| e.into_inner()));
    for dir in idle {
        let _ = remove_tree(&dir);
    }
}

/// Empties `dir` (all but [`KEPT_IN_WORK`]) and keeps it for the next computation; a
/// dir that cannot be emptied is removed instead.
fn give_back_work_dir(dir: PathBuf) {
    if dir.as_os_str().is_empty() {
        return;
    }
    let emptied = fs::read_dir(&dir).is_ok_and(|rd| {
        rd.flatten().all(|e| {
            let path = e.path();
            if e.file_name() == KEPT_IN_WORK && e.file_type().is_ok_and(|t| t.is_file()) {
                return true;
            }
            match e.file_type() {
                Ok(t) if t.is_dir() => remove_tree(&path).is_ok(),
                _ => fs::remove_file(&path).is_ok(),
            }
        })
    });
    // The stage may have made its work dir read-only: it is kept only if still writable.
    let writable = fs::metadata(&dir).is_ok_and(|m| !m.permissions().readonly());
    if emptied && writable {
        WORK_DIRS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(dir);
    } else {
        let _ = remove_tree(&dir);
    }
}

fn fsync_dir(path: &Path) -> Result<(), StoreError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io(path))
}

/// Writes `bytes` to `path` atomically (temp file in the same dir, fsync, rename, fsync dir).
/// The temp file is `.<name>.<pid>.<n>.tmp`: unique per writer, removed on failure; one
/// left by a killed process is removed by [`remove_stale_temp_files`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    write_via_temp(path, bytes, true)
}

/// [`write_atomic`] without the two fsyncs: readers see the old or the new content, but a
/// crash of the machine may lose the update. For files whose loss only makes something
/// stale (a ref: the reason `rst status` gives) or that live for one run (job files): two
/// fsyncs per stage were a third of a small stage's cost.
pub fn write_replace(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    write_via_temp(path, bytes, false)
}

fn write_via_temp(path: &Path, bytes: &[u8], durable: bool) -> Result<(), StoreError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id(),
        STAGING_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let written = File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            if durable {
                f.sync_all()?;
            }
            Ok(())
        })
        .map_err(io(&tmp))
        .and_then(|()| fs::rename(&tmp, path).map_err(io(path)));
    if written.is_err() {
        // A full disk must not leave half-written temp files behind.
        let _ = fs::remove_file(&tmp);
    }
    written?;
    if durable {
        fsync_dir(dir)?;
    }
    Ok(())
}

/// Is process `pid` alive (on this machine)?
pub fn pid_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    // A zombie (dead, not yet reaped by its parent: a killed cluster job's worker while
    // slurmstepd cleans up) has a /proc entry too: its state, after the name in
    // parentheses, says `Z`.
    match fs::read(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let after = stat.iter().rposition(|&b| b == b')').map_or(0, |i| i + 1);
            !matches!(stat.get(after + 1), Some(b'Z' | b'X'))
        }
        Err(_) => false,
    }
}

/// The target name and writer pid of a [`write_atomic`] temp file name
/// (`.<target>.<pid>.<n>.tmp`); None for any other name.
pub fn temp_file_owner(name: &str) -> Option<(&str, u32)> {
    let inner = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let mut parts = inner.rsplitn(3, '.');
    let n = parts.next()?;
    let pid = parts.next()?.parse::<u32>().ok()?;
    let target = parts.next()?;
    n.parse::<u64>().ok()?;
    Some((target, pid))
}

/// Removes the temp files [`write_atomic`] left in `dir` when its process was killed (a
/// live process's are kept: it is about to rename them).
pub fn remove_stale_temp_files(dir: &Path) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name();
        let dead = name
            .to_str()
            .and_then(temp_file_owner)
            .is_some_and(|(_, pid)| !pid_alive(pid));
        if dead {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Sum of file sizes and count under `dir`.
pub fn dir_size(dir: &Path) -> (u64, usize) {
    match digest::walk(dir) {
        Ok(files) => (files.iter().map(|f| f.meta.len()).sum(), files.len()),
        Err(_) => (0, 0),
    }
}

fn make_writable(dir: &Path) {
    if let Ok(files) = digest::list_files(dir) {
        for (_, p) in files {
            if let Ok(meta) = fs::metadata(&p) {
                let mut perm = meta.permissions();
                #[allow(clippy::permissions_set_readonly_false)]
                perm.set_readonly(false);
                let _ = fs::set_permissions(&p, perm);
            }
        }
    }
}

/// Removes a directory tree that may hold read-only files.
pub fn remove_tree(dir: &Path) -> std::io::Result<()> {
    make_writable(dir);
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

impl Store {
    /// Opens (creating if needed) the cache at `root`.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        // Absolute, so workers running in other directories see the same cache.
        let root = &std::path::absolute(root).map_err(io(root))?;
        // Made once per process: the direct executor opens the store for every command
        // stage, and eight `mkdir`s each were 8,000 system calls in a run of 1,013.
        static OPENED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
        let mut opened = OPENED.lock().unwrap_or_else(|e| e.into_inner());
        if opened.iter().any(|r| r == root) && root.join("tmp").is_dir() {
            return Ok(Store {
                root: root.to_path_buf(),
            });
        }
        for sub in [
            "objects",
            "entries",
            "refs",
            "locks",
            "tmp",
            "logs",
            "downloads",
            "quarantine",
        ] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(io(&p))?;
        }
        let tag = root.join("CACHEDIR.TAG");
        if !tag.exists() {
            let _ = fs::write(&tag, "Signature: 8a477f597d28d172789f06886806bc55\n# This is the cache of rst (content-addressed stage outputs).\n");
        }
        opened.push(root.to_path_buf());
        Ok(Store {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn downloads_dir(&self) -> PathBuf {
        self.root.join("downloads")
    }

    pub fn object_path(&self, digest: &str) -> PathBuf {
        self.root
            .join("objects")
            .join(&digest[..2.min(digest.len())])
            .join(digest)
    }

    pub(crate) fn entry_path(&self, key: &str) -> PathBuf {
        self.root
            .join("entries")
            .join(&key[..2])
            .join(format!("{key}.json"))
    }

    pub fn log_path(&self, key: &str) -> PathBuf {
        self.root.join("logs").join(format!("{key}.log"))
    }

    /// The entry for `key`, if present and its object exists. A corrupt entry file counts
    /// as absent (it is rewritten by the next computation).
    pub fn entry(&self, key: &str) -> Option<Entry> {
        let text = read_small(&self.entry_path(key)).ok()?;
        let entry: Entry = serde_json::from_slice(&text).ok()?;
        (entry.key == key && self.object_path(&entry.artifact).is_dir()).then_some(entry)
    }

    /// The artifact of the entry for `key`, if present and its object exists: what a
    /// cache lookup needs, without the rest of the entry. The whole file is still parsed
    /// (a torn or corrupt one counts as absent, as in [`entry`](Self::entry)), but its
    /// record and run facts are skipped, not built: on a no-op run of 1,013 stages, building
    /// them was a third of the run's time.
    pub fn hit(&self, key: &str) -> Option<String> {
        self.hit_with_gpus(key).map(|(artifact, _)| artifact)
    }

    /// [`Store::hit`], with the GPUs the entry's run facts say it was computed on
    /// (`run.gpus`; empty for none, or for entries older than the field).
    pub fn hit_with_gpus(&self, key: &str) -> Option<(String, Vec<String>)> {
        #[derive(Deserialize)]
        struct Head<'a> {
            #[serde(borrow)]
            key: std::borrow::Cow<'a, str>,
            #[serde(borrow)]
            artifact: std::borrow::Cow<'a, str>,
            #[serde(default)]
            run: HeadRun,
        }
        #[derive(Deserialize, Default)]
        struct HeadRun {
            #[serde(default)]
            gpus: Vec<String>,
        }
        let text = read_small(&self.entry_path(key)).ok()?;
        let head: Head = serde_json::from_slice(&text).ok()?;
        (head.key == key && self.object_path(&head.artifact).is_dir())
            .then(|| (head.artifact.into_owned(), head.run.gpus))
    }

    /// Forgets the entry for `key` (`--force`); its artifact stays until `gc`.
    pub fn remove_entry(&self, key: &str) {
        let _ = fs::remove_file(self.entry_path(key));
    }

    /// The lock file of `key`, open (created if needed).
    fn lock_file(&self, key: &str) -> Result<(File, PathBuf), StoreError> {
        let path = self.root.join("locks").join(format!("{key}.lock"));
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        Ok((file, path))
    }

    /// Takes the lock for `key` if nobody holds it (Ok(None): another process is
    /// computing or fetching it).
    pub fn try_lock(&self, key: &str) -> Result<Option<KeyLock>, StoreError> {
        let (file, path) = self.lock_file(key)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(KeyLock { _file: file })),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(io(&path)(e)),
        }
    }

    /// Takes the exclusive lock for `key`, blocking. `on_wait` is called once if another
    /// process holds it.
    pub fn lock(&self, key: &str, on_wait: impl FnOnce()) -> Result<KeyLock, StoreError> {
        let (file, path) = self.lock_file(key)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                on_wait();
                file.lock().map_err(io(&path))?;
            }
            Err(fs::TryLockError::Error(e)) => return Err(io(&path)(e)),
        }
        Ok(KeyLock { _file: file })
    }

    /// A fresh staging area for `key`. Call with the key's lock held: it first removes
    /// staging dirs of earlier, killed computations of the same key.
    pub fn staging(&self, key: &str) -> Result<Staging, StoreError> {
        let tmp = self.root.join("tmp");
        let prefix = format!("{key}.");
        if let Ok(rd) = fs::read_dir(&tmp) {
            for e in rd.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.starts_with(&prefix) {
                    // Staging dirs, and the link copies beside them.
                    let _ = match e.file_type() {
                        Ok(t) if t.is_dir() => remove_tree(&e.path()),
                        _ => fs::remove_file(e.path()),
                    };
                } else if is_dead_work_dir(&name) {
                    // The work dir of a killed worker (a cancelled cluster job, which the
                    // next run waits for through this key's lock).
                    let _ = remove_tree(&e.path());
                }
            }
        }
        let out = tmp.join(format!(
            "{key}.{}.{}",
            std::process::id(),
            STAGING_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir(&out).map_err(io(&out))?;
        let work = take_work_dir(&tmp)?;
        Ok(Staging { out, work })
    }

    /// Hashes and publishes a finished staging area; returns the entry.
    pub fn publish(
        &self,
        staging: Staging,
        key: &str,
        pipeline: &str,
        instance: &str,
        record: KeyRecord,
        run: RunFacts,
    ) -> Result<Entry, StoreError> {
        let sealed = self.seal_object(&staging, None)?;
        let entry = Entry {
            key: key.to_string(),
            artifact: sealed.artifact,
            pipeline: pipeline.to_string(),
            instance: instance.to_string(),
            record,
            created_unix: crate::time::unix_now(),
            duration_s: run.duration_s,
            size_bytes: sealed.size_bytes,
            files: sealed.files,
            rst_version: env!("CARGO_PKG_VERSION").to_string(),
            run,
        };
        self.write_entry(&entry)?;
        drop(staging);
        Ok(entry)
    }

    /// Stores a staging area that holds an artifact fetched from a shared cache (the
    /// remote): hashed and sealed exactly as a computed one, and moved into `objects/` only
    /// if its digest is `expected`. A tree whose digest differs is removed and reported as
    /// [`StoreError::Corrupt`]: nothing of it is used. The entry comes after
    /// ([`Store::adopt_entry`]).
    pub fn publish_fetched(
        &self,
        staging: Staging,
        expected: &str,
    ) -> Result<(u64, usize), StoreError> {
        let sealed = self.seal_object(&staging, Some(expected))?;
        drop(staging);
        Ok((sealed.size_bytes, sealed.files))
    }

    /// Writes an entry fetched from a shared cache whose object is here already (the same
    /// content, stored by another key).
    pub fn adopt_entry(&self, entry: &Entry) -> Result<(), StoreError> {
        if !self.object_path(&entry.artifact).is_dir() {
            return Err(StoreError::Corrupt {
                path: self.entry_path(&entry.key),
                message: format!("its object {} is not in this cache", entry.artifact),
            });
        }
        self.write_entry(entry)
    }

    /// Checks, hashes and seals every file of a staging area and moves the tree into
    /// `objects/` (unless the same content is there already).
    /// `expected`: the digest a fetched tree must hash to (else [`StoreError::Corrupt`],
    /// and nothing is stored).
    fn seal_object(&self, staging: &Staging, expected: Option<&str>) -> Result<Sealed, StoreError> {
        // Paths in errors about what a stage wrote are shown as `$RST_OUT/...`.
        let named = |e: DigestError| match expected {
            None => StoreError::Digest(as_output(e, &staging.out)),
            Some(_) => StoreError::Digest(e),
        };
        let listed = digest::walk(&staging.out).map_err(named)?;
        // One pass over the files, in parallel: check, copy if hard-linked, hash, seal.
        let hashed: Vec<(u64, blake3::Hash)> = listed
            .par_iter()
            .map(|f| seal_file(f, &staging.out))
            .collect::<Result<_, _>>()
            .map_err(|e| match e {
                StoreError::Digest(e) => named(e),
                e => e,
            })?;
        let artifact = digest::combine(
            listed
                .iter()
                .zip(&hashed)
                .map(|(f, (size, hash))| (f.rel.as_str(), *size, hash)),
        );
        if let Some(expected) = expected.filter(|e| *e != artifact) {
            return Err(StoreError::Corrupt {
                path: staging.out.clone(),
                message: format!("it hashes to {artifact}, not to {expected} as its entry says"),
            });
        }
        self.store_object(staging, &listed, &artifact)?;
        Ok(Sealed {
            artifact,
            size_bytes: hashed.iter().map(|(size, _)| size).sum(),
            files: listed.len(),
        })
    }

    /// Moves a sealed staging tree into `objects/<artifact>` (durable first, outside a
    /// batch); a no-op when that object exists (the same content from elsewhere).
    fn store_object(
        &self,
        staging: &Staging,
        listed: &[digest::Listed],
        artifact: &str,
    ) -> Result<(), StoreError> {
        let object = self.object_path(artifact);
        // In a batch, durability is the batch's one syncfs at its commit (module doc).
        let durable = !super::durable::deferred();
        if object.is_dir() {
            // Same content already stored (another stage or an earlier key).
            return Ok(());
        }
        // Durable before it becomes visible: one syncfs for the whole tree.
        if durable {
            sync_tree(&staging.out, listed)?;
        }
        let parent = object.parent().unwrap_or(&self.root);
        fs::create_dir_all(parent).map_err(io(parent))?;
        match fs::rename(&staging.out, &object) {
            Ok(()) if durable => fsync_dir(parent)?,
            Ok(()) => {}
            Err(_) if object.is_dir() => {} // a concurrent publisher of the same content won
            Err(e) => return Err(io(&object)(e)),
        }
        Ok(())
    }

    /// Writes `entry` as the entry of its key (atomically; durably outside a batch).
    fn write_entry(&self, entry: &Entry) -> Result<(), StoreError> {
        let path = self.entry_path(&entry.key);
        fs::create_dir_all(path.parent().unwrap()).map_err(io(&path))?;
        let bytes = serde_json::to_vec_pretty(entry).expect("entry serialises");
        if super::durable::deferred() {
            write_replace(&path, &bytes)
        } else {
            write_atomic(&path, &bytes)
        }
    }

    /// Discards a staging area (failed computation).
    pub fn discard(&self, staging: Staging) {
        drop(staging);
    }

    /// What the store holds, by name, listed with one `readdir` per folder: the keys that
    /// have an entry file and the ref ids (`refs/<id>` or `refs/<id>.json`). For reports
    /// over very many instances, where a miss is otherwise a failing path lookup each
    /// (a never-run sweep of a million instances: three million). A snapshot: what is
    /// written meanwhile may be missed.
    pub fn listing(&self) -> Listing {
        let names = |dir: &Path| -> Vec<String> {
            fs::read_dir(dir)
                .map(|rd| {
                    rd.flatten()
                        .filter_map(|e| e.file_name().into_string().ok())
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut entries = std::collections::HashSet::new();
        for shard in names(&self.root.join("entries")) {
            for f in names(&self.root.join("entries").join(&shard)) {
                if let Some(key) = f.strip_suffix(".json").filter(|k| !k.starts_with('.')) {
                    entries.insert(key.to_string());
                }
            }
        }
        let refs = names(&self.root.join("refs"))
            .into_iter()
            .map(|n| n.strip_suffix(".json").map(str::to_string).unwrap_or(n))
            .collect();
        Listing { entries, refs }
    }

    /// [`Store::hit_with_gpus`], asking the file system only when `listing` has the key.
    pub fn hit_listed(
        &self,
        listing: Option<&Listing>,
        key: &str,
    ) -> Option<(String, Vec<String>)> {
        if listing.is_some_and(|l| !l.entries.contains(key)) {
            return None;
        }
        self.hit_with_gpus(key)
    }

    /// [`Store::last_entry`], asking the file system only when `listing` has the ref.
    pub fn last_entry_listed(
        &self,
        listing: Option<&Listing>,
        pipeline: &str,
        instance: &str,
    ) -> Option<Entry> {
        if listing.is_some_and(|l| !l.refs.contains(&ref_id(pipeline, instance))) {
            return None;
        }
        self.last_entry(pipeline, instance)
    }

    /// `refs/<id>`: a symbolic link whose target is the key (one `readlink` to check it:
    /// a no-op run checks 1,000 refs); `refs/<id>.json` is the older form, still read.
    fn ref_path(&self, pipeline: &str, instance: &str) -> PathBuf {
        self.root.join("refs").join(ref_id(pipeline, instance))
    }

    /// The key `instance` of `pipeline` last used.
    fn ref_key(&self, pipeline: &str, instance: &str) -> Option<String> {
        let path = self.ref_path(pipeline, instance);
        if let Ok(target) = fs::read_link(&path) {
            return target.to_str().map(str::to_string);
        }
        let old: Ref = serde_json::from_slice(&fs::read(path.with_extension("json")).ok()?).ok()?;
        (old.pipeline == pipeline && old.instance == instance).then_some(old.key)
    }

    /// Remembers that `instance` of `pipeline` last used `key` (no fsync: its loss only
    /// makes `rst status`'s reason stale).
    pub fn set_ref(&self, pipeline: &str, instance: &str, key: &str) -> Result<(), StoreError> {
        let path = self.ref_path(pipeline, instance);
        match fs::read_link(&path) {
            Ok(t) if t.as_os_str() == key => return Ok(()),
            // No ref yet (a first run): one symlink, atomic by itself. Taken meanwhile by
            // a concurrent run: replaced below, as an existing one is.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match std::os::unix::fs::symlink(key, &path) {
                    Ok(()) => {
                        let _ = fs::remove_file(path.with_extension("json"));
                        return Ok(());
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io(&path)(e)),
                }
            }
            _ => {}
        }
        let tmp = path.with_file_name(format!(
            ".{}.{}.{}.tmp",
            path.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id(),
            STAGING_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let linked = std::os::unix::fs::symlink(key, &tmp)
            .map_err(io(&tmp))
            .and_then(|()| fs::rename(&tmp, &path).map_err(io(&path)));
        if linked.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        linked?;
        let _ = fs::remove_file(path.with_extension("json"));
        Ok(())
    }

    /// The entry `instance` of `pipeline` last used (for "why does it rerun").
    pub fn last_entry(&self, pipeline: &str, instance: &str) -> Option<Entry> {
        let key = self.ref_key(pipeline, instance)?;
        if key.len() < 2 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let text = fs::read(self.entry_path(&key)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// All entries (for gc and verify); unreadable entry files are returned as paths.
    pub fn all_entries(&self) -> (Vec<(PathBuf, Entry)>, Vec<PathBuf>) {
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for shard in read_dirs(&self.root.join("entries")) {
            for p in read_dirs(&shard) {
                if p.extension().and_then(|e| e.to_str()) != Some("json") {
                    continue;
                }
                match fs::read(&p)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Entry>(&b).ok())
                {
                    Some(e) => good.push((p, e)),
                    None => bad.push(p),
                }
            }
        }
        (good, bad)
    }

    /// All object digests with their paths.
    pub fn all_objects(&self) -> Vec<(String, PathBuf)> {
        let mut out = Vec::new();
        for shard in read_dirs(&self.root.join("objects")) {
            for p in read_dirs(&shard) {
                if let Some(name) = p.file_name().and_then(|n| n.to_str()) {
                    out.push((name.to_string(), p.clone()));
                }
            }
        }
        out.sort();
        out
    }

    /// Moves a corrupted object into `quarantine/` under a unique name; entries that point
    /// at it then miss. `Ok(None)` when the object is already gone (another `rst verify`
    /// or a worker moved it first): not an error.
    pub fn quarantine(&self, digest: &str) -> Result<Option<PathBuf>, StoreError> {
        self.move_to_quarantine(&self.object_path(digest))
    }

    /// Moves the entry file of `key` into `quarantine/` (an entry computed from a corrupt
    /// object, or an unreadable one); `Ok(None)` when it is already gone.
    pub fn quarantine_entry(&self, key: &str) -> Result<Option<PathBuf>, StoreError> {
        self.move_to_quarantine(&self.entry_path(key))
    }

    /// Moves `from` (an object dir or entry file of this cache) to `quarantine/<name>.<unix
    /// time>.<pid>.<n>`: never onto an earlier quarantined copy, so quarantining the same
    /// digest twice in one second, or from two processes, cannot fail.
    pub fn move_to_quarantine(&self, from: &Path) -> Result<Option<PathBuf>, StoreError> {
        let name = from
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stamp = crate::time::unix_now() as u64;
        let dir = self.root.join("quarantine");
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let mut last = None;
        for _ in 0..64 {
            let to = dir.join(format!(
                "{name}.{stamp}.{}.{}",
                std::process::id(),
                STAGING_SEQ.fetch_add(1, Ordering::Relaxed)
            ));
            if fs::symlink_metadata(&to).is_ok() {
                continue;
            }
            match fs::rename(from, &to) {
                Ok(()) => return Ok(Some(to)),
                Err(_) if fs::symlink_metadata(from).is_err() => return Ok(None),
                // Someone created the same name in between: take the next one.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::AlreadyExists | std::io::ErrorKind::DirectoryNotEmpty
                    ) =>
                {
                    last = Some(e)
                }
                Err(e) => return Err(io(from)(e)),
            }
        }
        Err(io(from)(last.unwrap_or_else(|| {
            std::io::Error::other("no free name in quarantine/")
        })))
    }

    /// What is in `tmp/` but the reused work dirs (`work.*`): staging dirs, job files.
    #[cfg(test)]
    pub fn staging_dirs(&self) -> Vec<PathBuf> {
        let mut v = read_dirs(&self.root.join("tmp"));
        v.retain(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("work."))
        });
        v
    }
}

fn read_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// `e` with its path relative to a stage's output dir `out`, as `$RST_OUT/rel`.
fn as_output(e: DigestError, out: &Path) -> DigestError {
    let rel = |p: PathBuf| match p.strip_prefix(out) {
        Ok(rel) => Path::new("$RST_OUT").join(rel),
        Err(_) => p,
    };
    match e {
        DigestError::Io { path, source } => DigestError::Io {
            path: rel(path),
            source,
        },
        DigestError::Symlink(p) => DigestError::Symlink(rel(p)),
        DigestError::Special { path, kind } => DigestError::Special {
            path: rel(path),
            kind,
        },
        DigestError::NonUtf8(p) => DigestError::NonUtf8(rel(p)),
    }
}

/// Checks that a staged file is a regular file (opened without following links or waiting
/// on a FIFO), replaces it by a private copy when it has other hard links (a link to a
/// file outside the artifact would otherwise be chmodded and shared with the cache),
/// hashes it and makes it read-only. `scratch` is a directory on the same filesystem
/// for the copy.
fn seal_file(f: &digest::Listed, out: &Path) -> Result<(u64, blake3::Hash), StoreError> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    let (mut file, meta) = digest::open_regular(&f.path)?;
    if meta.nlink() > 1 {
        // Beside the staging dir, named after it: a leftover of the same key's staging.
        let mut tmp = out.as_os_str().to_owned();
        tmp.push(format!(
            ".link-copy.{}",
            STAGING_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let tmp = PathBuf::from(tmp);
        let mut copy = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(meta.mode() & 0o777)
            .open(&tmp)
            .map_err(io(&tmp))?;
        std::io::copy(&mut file, &mut copy).map_err(io(&tmp))?;
        fs::rename(&tmp, &f.path).map_err(io(&f.path))?;
        copy.rewind().map_err(io(&f.path))?;
        file = copy;
    }
    let size = file.metadata().map_err(io(&f.path))?.len();
    let hashed = digest::hash_open(&file, size, &f.path)?;
    // fchmod on the open file: the name cannot have been swapped since the check.
    let mode = meta.mode() & 0o7777 & !0o222;
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io(&f.path))?;
    Ok(hashed)
}

/// From this many files on, a staged tree is made durable by one `syncfs(2)` instead of
/// one fsync per file. syncfs writes back all dirty data of the filesystem, also other
/// programs' (measured 0.1–0.7 s on a busy disk), while each fsync is a journal commit of
/// about 3 ms (10,000 of them: 34 s): a few files are cheaper one by one.
const SYNCFS_MIN_FILES: usize = 64;

/// Makes the files and directories of a staged tree durable: one `syncfs(2)` of the
/// filesystem holding it (Linux) for many files, else an fsync of every file and directory.
fn sync_tree(root: &Path, files: &[digest::Listed]) -> Result<(), StoreError> {
    #[cfg(target_os = "linux")]
    if files.len() >= SYNCFS_MIN_FILES {
        let dir = File::open(root).map_err(io(root))?;
        match rustix::fs::syncfs(&dir) {
            Ok(()) => return Ok(()),
            Err(e) if e == rustix::io::Errno::NOSYS => {}
            Err(e) => return Err(io(root)(e.into())),
        }
    }
    files.par_iter().try_for_each(|f| {
        File::open(&f.path)
            .and_then(|file| file.sync_all())
            .map_err(io(&f.path))
    })?;
    sync_dirs(root)
}

fn sync_dirs(root: &Path) -> Result<(), StoreError> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).map_err(io(&d))?.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(e.path());
            }
        }
        fsync_dir(&d)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> KeyRecord {
        crate::cache::key::empty_command_record()
    }

    #[test]
    fn publish_then_lookup_and_dedupe() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path()).unwrap();
        let key = record().key();
        assert!(store.entry(&key).is_none());
        let _lock = store.lock(&key, || {}).unwrap();
        let st = store.staging(&key).unwrap();
        fs::write(st.out.join("a.txt"), "hello").unwrap();
        let e = store
            .publish(st, &key, "p", "s", record(), RunFacts::default())
            .unwrap();
        assert_eq!(store.entry(&key).unwrap().artifact, e.artifact);
        assert_eq!(store.hit(&key), Some(e.artifact.clone()));
        assert_eq!(
            fs::read_to_string(store.object_path(&e.artifact).join("a.txt")).unwrap(),
            "hello"
        );
        assert!(store.staging_dirs().is_empty(), "staging removed");
        // An entry whose object vanished is a miss.
        remove_tree(&store.object_path(&e.artifact)).unwrap();
        assert!(store.entry(&key).is_none());
        assert_eq!(store.hit(&key), None);
    }

    #[test]
    fn read_small_reads_files_of_any_size_whole() {
        let d = tempfile::tempdir().unwrap();
        for len in [0, 1, 8 << 10, (8 << 10) + 1, 100_000] {
            let p = d.path().join(format!("f{len}"));
            let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            fs::write(&p, &bytes).unwrap();
            assert_eq!(read_small(&p).unwrap(), bytes, "{len} bytes");
        }
        assert!(read_small(&d.path().join("absent")).is_err());
    }

    #[test]
    fn a_zombie_is_not_alive() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Exited, not yet waited for: a zombie.
        let stat = format!("/proc/{pid}/stat");
        for _ in 0..200 {
            if fs::read_to_string(&stat).is_ok_and(|s| s.contains(") Z")) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!pid_alive(pid));
        child.wait().unwrap();
        assert!(!pid_alive(pid));
        assert!(pid_alive(std::process::id()));
        assert!(pid_alive(1), "init runs");
    }

    #[test]
    fn set_ref_creates_then_moves_the_ref() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path()).unwrap();
        let (k1, k2) = ("a1".repeat(32), "b2".repeat(32));
        store.set_ref("p", "s", &k1).unwrap();
        assert_eq!(store.ref_key("p", "s"), Some(k1.clone()));
        store.set_ref("p", "s", &k1).unwrap();
        store.set_ref("p", "s", &k2).unwrap();
        assert_eq!(store.ref_key("p", "s"), Some(k2));
        let left: Vec<_> = fs::read_dir(d.path().join("refs")).unwrap().collect();
        assert_eq!(left.len(), 1, "no temp link left: {left:?}");
    }

    #[test]
    fn a_work_dir_is_emptied_and_reused_and_a_staging_area_frees_no_inode() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path()).unwrap();
        let key = record().key();
        let st = store.staging(&key).unwrap();
        let (work, ino) = (st.work.clone(), fs::metadata(&st.work).unwrap().ino());
        assert!(work
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("work."));
        fs::write(work.join(KEPT_IN_WORK), "[]").unwrap();
        fs::create_dir_all(work.join("scratch/deep")).unwrap();
        fs::write(work.join("scratch/deep/x"), "x").unwrap();
        fs::write(st.out.join("a"), "a").unwrap();
        store
            .publish(st, &key, "p", "s", record(), RunFacts::default())
            .unwrap();
        // The next staging area gets the same dir, emptied but for the inputs file.
        let key2 = "e7".repeat(32);
        let st = store.staging(&key2).unwrap();
        assert_eq!(st.work, work);
        assert_eq!(fs::metadata(&st.work).unwrap().ino(), ino);
        let names: Vec<_> = read_dirs(&st.work);
        assert_eq!(names, [work.join(KEPT_IN_WORK)]);
        // A failed computation: its output goes, the work dir stays for the next.
        let out = st.out.clone();
        store.discard(st);
        assert!(!out.exists());
        assert_eq!(store.staging_dirs(), Vec::<PathBuf>::new());
        assert!(work.is_dir());
        release_work_dirs();
        assert!(!work.exists(), "released when the process computes no more");
    }

    #[test]
    fn stale_staging_of_a_killed_run_is_removed_under_the_lock() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path()).unwrap();
        let key = record().key();
        let leftover = d.path().join("tmp").join(format!("{key}.99999.0"));
        fs::create_dir_all(leftover.join("half")).unwrap();
        let _st = store.staging(&key).unwrap();
        assert!(!leftover.exists());
    }

    #[test]
    fn a_hard_linked_output_is_stored_as_a_private_copy() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("cache")).unwrap();
        let outside = d.path().join("mine.txt");
        fs::write(&outside, "mine").unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o640)).unwrap();
        let key = record().key();
        let st = store.staging(&key).unwrap();
        fs::hard_link(&outside, st.out.join("h")).unwrap();
        fs::write(st.out.join("own"), "x").unwrap();
        let e = store
            .publish(st, &key, "p", "s", record(), RunFacts::default())
            .unwrap();
        let meta = fs::metadata(&outside).unwrap();
        assert_eq!(
            meta.mode() & 0o777,
            0o640,
            "the user's file is not chmodded"
        );
        assert_eq!(meta.nlink(), 1, "nor shared with the cache");
        let obj = store.object_path(&e.artifact);
        let stored = fs::metadata(obj.join("h")).unwrap();
        assert_eq!(stored.mode() & 0o777, 0o440, "the copy is sealed read-only");
        assert_eq!(fs::read_to_string(obj.join("h")).unwrap(), "mine");
        assert_eq!(e.files, 2);
        assert_eq!(e.size_bytes, 5);
        assert_eq!(digest::digest_path(&obj).unwrap(), e.artifact);
    }

    #[test]
    fn special_files_in_an_output_are_refused_and_nothing_is_stored() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path()).unwrap();
        let key = record().key();
        let st = store.staging(&key).unwrap();
        let fifo = st.out.join("p");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let err = store
            .publish(st, &key, "p", "s", record(), RunFacts::default())
            .unwrap_err();
        assert!(err.to_string().contains("FIFO"), "{err}");
        assert!(err.to_string().starts_with("$RST_OUT/p: "), "{err}");
        assert!(store.all_objects().is_empty());
        assert!(store.entry(&key).is_none());
    }

    #[test]
    fn write_atomic_leaves_no_temp_file_on_failure() {
        let d = tempfile::tempdir().unwrap();
        // The rename fails: the target is a non-empty directory.
        fs::create_dir_all(d.path().join("t/x")).unwrap();
        assert!(write_atomic(&d.path().join("t"), b"x").is_err());
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
        remove_stale_temp_files(d.path());
        fs::write(d.path().join(".t.999999999.0.tmp"), "").unwrap();
        fs::write(
            d.path().join(format!(".t.{}.0.tmp", std::process::id())),
            "",
        )
        .unwrap();
        remove_stale_temp_files(d.path());
        assert!(!d.path().join(".t.999999999.0.tmp").exists());
        assert!(d
            .path()
            .join(format!(".t.{}.0.tmp", std::process::id()))
            .exists());
    }

    #[test]
    fn refs_point_to_the_last_entry() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path()).unwrap();
        let key = record().key();
        let st = store.staging(&key).unwrap();
        let e = store
            .publish(st, &key, "p", "s", record(), RunFacts::default())
            .unwrap();
        store.set_ref("p", "s", &key).unwrap();
        assert_eq!(store.last_entry("p", "s").unwrap().artifact, e.artifact);
        assert!(store.last_entry("p", "other").is_none());
    }
}
