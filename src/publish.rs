//! Publishing: copying the artifacts of `publish:` stages from the cache to
//! `results/<stem>/`.
//!
//! - **Atomic per stage.** A stage's folder is assembled in a private temp dir
//!   (`results/<stem>/.rst-tmp.<pid>.<n>`, on the same filesystem) and put in place with one
//!   `renameat2(RENAME_EXCHANGE)` when the folder exists (the old tree, now at the temp
//!   name, is then removed) or one `rename` when it does not. A reader of `results/` sees
//!   the old or the new complete folder, never a mix; `kill -9` at any moment leaves one of
//!   them plus a temp dir that the next publish removes (its process is dead). A stage
//!   published as `"."` puts its entries straight into `results/<stem>/`, each replaced
//!   atomically the same way.
//! - **Safe for concurrent publishers** (several `rst run` in one directory): temp names
//!   are unique per process; a publisher that finds the folder created by another one
//!   meanwhile exchanges instead; the last complete folder wins.
//! - **Only verified bytes.** Every file is hashed (blake3) while it is copied and the
//!   artifact digest recomputed from the copies; a mismatch (or a file that is not a regular
//!   file) means the cached object is corrupt: it is quarantined, nothing of that stage is
//!   published, and the run fails naming the object (the next `rst run` recomputes it).
//! - **Skips what is already there.** `results/<stem>/.rst-published.json` records, per
//!   stage, what was published (instances, keys, artifacts) and each file's size, mtime and
//!   inode (plus its sha256, for `provenance.json`); a stage whose record matches the
//!   sources and whose files all still have the recorded inode, size and mtime (and no
//!   others) is not copied again. Every copy is a new inode, so a match means these are
//!   the files this record describes, untouched since.
//! - Published files are not fsynced: they are rebuilt from the cache, and after a power
//!   loss a file whose data did not reach the disk no longer has its recorded size and
//!   mtime, so the next run copies it again.
//! - Copies are reflinks (`FICLONE`) where the filesystem shares extents (btrfs, XFS),
//!   else byte copies; either way ordinary writable files created with mode 0666 (0777
//!   for executables) less the umask.
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::cache::digest::{self, DigestError};
use crate::cache::store::{self, Store, StoreError};
use crate::error::{Error, Result};
use crate::exec::scheduler::RunResult;
use crate::provenance::lineage::PublishedFile;
use crate::spec::{self, Pipeline};

/// What was published, per stage (hidden, beside manifest.json).
pub const RECORD_FILE: &str = ".rst-published.json";
/// Temp dirs of publishers: `.rst-tmp.<pid>.<n>`.
const TEMP_PREFIX: &str = ".rst-tmp.";

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot {what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the cached object {digest} of {instance} is corrupt ({reason}), so nothing of stage `{stage}` was published; {}: run `rst run` again to recompute it",
        match quarantined { Some(q) => format!("it was moved to {}", q.display()), None => "it was already moved away".into() }
    )]
    Corrupt {
        stage: String,
        instance: String,
        digest: String,
        /// Written into the message (not a `#[source]`: that would print it twice).
        reason: CorruptObject,
        quarantined: Option<PathBuf>,
    },
    #[error("cannot write {path}")]
    Store {
        path: PathBuf,
        #[source]
        source: StoreError,
    },
}

/// Why a cached object cannot be published.
#[derive(Debug, thiserror::Error)]
pub enum CorruptObject {
    #[error("its content does not match its digest")]
    Mismatch,
    /// It holds what no artifact may (a link, a FIFO, a non-UTF-8 name).
    /// (Boxed: keeps `PublishError`, and so `crate::error::Error`, small.)
    #[error(transparent)]
    Unreadable(Box<DigestError>),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> PublishError + 'a {
    move |source| PublishError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The record of one published stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StageRecord {
    sources: Vec<Source>,
    /// Top-level entries of `results/<stem>/` this stage owns (its folder, or for `"."`
    /// each file and folder it put there).
    slots: Vec<String>,
    /// Path relative to `results/<stem>/` → the published file.
    files: BTreeMap<String, FileRecord>,
}

/// One published instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Source {
    instance: String,
    key: Option<String>,
    artifact: String,
    /// Sub-folder (`rate=0.2`) or empty.
    sub: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct FileRecord {
    /// Index into [`StageRecord::sources`].
    source: usize,
    /// The file's path inside the artifact.
    path: String,
    size: u64,
    mtime_ns: i128,
    ino: u64,
    dev: u64,
    sha256: String,
}

impl FileRecord {
    fn matches(&self, meta: &fs::Metadata) -> bool {
        meta.is_file()
            && meta.len() == self.size
            && meta.ino() == self.ino
            && meta.dev() == self.dev
            && mtime_ns(meta) == self.mtime_ns
    }
}

fn mtime_ns(meta: &fs::Metadata) -> i128 {
    meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128
}

#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct Record {
    /// Publish directory (`publish:` value) → record.
    stages: BTreeMap<String, StageRecord>,
    /// The `--set` overrides of the run that published them; None in records written
    /// before rst kept them.
    #[serde(default)]
    overrides: Option<Vec<(String, Value)>>,
}

fn read_record(root: &Path) -> Record {
    fs::read(root.join(RECORD_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// `--set a=1 --set b=x` as a user would type it; `no --set overrides` for none.
fn overrides_text(o: &[(String, Value)]) -> String {
    if o.is_empty() {
        return "no --set overrides".into();
    }
    o.iter()
        .map(|(k, v)| format!("--set {k}={}", crate::report::value_text(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What `--set` overrides amount to: by name, the last one of a name counting (so their
/// order does not matter).
fn effective(o: &[(String, Value)]) -> Vec<(String, Value)> {
    let by_name: BTreeMap<&String, &Value> = o.iter().map(|(k, v)| (k, v)).collect();
    by_name
        .into_iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Refuses (exit 2) to publish over `results/<stem>/` that a run with other `--set`
/// overrides published, unless `replace` (`--replace-results`): a one-off variation
/// (`--set seeds=[1]`) must not silently replace the pipeline's table.
pub fn check_overrides(p: &Pipeline, replace: bool) -> Result<()> {
    if replace || p.stages.iter().all(|s| s.publish.is_none()) {
        return Ok(());
    }
    let root = p.results_dir();
    let Some(old) = read_record(&root).overrides else {
        return Ok(());
    };
    let (old, new) = (effective(&old), effective(&p.overrides));
    if old == new {
        return Ok(());
    }
    let shown = root.strip_prefix(&p.project_dir).unwrap_or(&root).display();
    Err(crate::error::UserError::new(format!(
        "{shown}/ holds the results of a run with {}; this run has {}, and would replace them",
        overrides_text(&old),
        overrides_text(&new)
    ))
    .help(
        "pass --replace-results to replace them, or copy the pipeline file under another \
         name for a variation that keeps its own results/ folder",
    )
    .into())
}

/// Copies the artifacts of published stages to `results/<stem>/`, then writes
/// `manifest.json` and `provenance.json` there. A stage whose object turns out corrupt is
/// not published (the others are) and the first such error is returned at the end.
pub fn publish(p: &Pipeline, store: &Store, r: &RunResult) -> Result<Outcome> {
    if p.stages.iter().all(|s| s.publish.is_none()) {
        return Ok(Outcome::Nothing);
    }
    let root = p.results_dir();
    fs::create_dir_all(&root).map_err(|e| Error::io_path("cannot create", &root, e))?;
    remove_stale(&root);
    let old = read_record(&root);
    let mut record = Record {
        overrides: Some(effective(&p.overrides)),
        ..Record::default()
    };
    let mut manifest = BTreeMap::new();
    let mut first_error: Option<PublishError> = None;
    for stage in &p.stages {
        let Some(dest) = &stage.publish else { continue };
        let dest_rel = clean(dest);
        let sources: Vec<Source> = stage
            .instances
            .iter()
            .filter_map(|&i| {
                let inst = &p.instances[i];
                let artifact = r.outcomes[i].artifact()?;
                let sub = if stage.axes.is_empty() {
                    String::new()
                } else {
                    inst.matrix
                        .iter()
                        .map(|(k, v)| format!("{k}={}", spec::interp::display(v)))
                        .collect::<Vec<_>>()
                        .join(",")
                        .replace('/', "_")
                };
                Some(Source {
                    instance: inst.name.clone(),
                    key: r.keys[i].clone(),
                    artifact: artifact.to_string(),
                    sub,
                })
            })
            .collect();
        let done = match old.stages.get(dest) {
            Some(rec) if rec.sources == sources && unchanged(&root, rec) => Ok(rec.clone()),
            _ => publish_stage(&root, &dest_rel, &stage.name, &sources, store),
        };
        match done {
            Ok(rec) => {
                let target = root.join(dest);
                for s in &sources {
                    manifest.insert(
                        s.instance.clone(),
                        serde_json::json!({"artifact": s.artifact, "key": s.key, "published": target.join(&s.sub)}),
                    );
                }
                record.stages.insert(dest.clone(), rec);
            }
            // The first is returned (and printed by main), later ones are printed here.
            Err(e) if first_error.is_none() => first_error = Some(e),
            Err(e) => eprintln!("error: {:#}", anyhow::Error::new(e)),
        }
    }
    let mut files = BTreeMap::new();
    for (dest, rec) in &record.stages {
        let stage = p
            .stages
            .iter()
            .find(|s| s.publish.as_ref() == Some(dest))
            .map(|s| s.name.clone())
            .unwrap_or_default();
        for (rel, f) in &rec.files {
            let Some(src) = rec.sources.get(f.source) else {
                continue;
            };
            files.insert(
                rel.clone(),
                PublishedFile {
                    stage: stage.clone(),
                    instance: src.instance.clone(),
                    key: src.key.clone().unwrap_or_default(),
                    artifact: src.artifact.clone(),
                    path: f.path.clone(),
                    sha256: f.sha256.clone(),
                },
            );
        }
    }
    // Nothing copied and the record unchanged: manifest.json and provenance.json, written
    // before that record, still describe results/ (a no-op run writes nothing).
    let same = record == old
        && root.join("manifest.json").is_file()
        && root.join(crate::provenance::PUBLISHED_FILE).is_file();
    if !same {
        crate::provenance::lineage::write_published(&root, p, files)?;
        let m = serde_json::json!({"pipeline": p.name, "file": p.file, "stages": manifest});
        write(
            &root.join("manifest.json"),
            serde_json::to_string_pretty(&m)
                .expect("manifest serialises")
                .as_bytes(),
        )?;
        // Last: a record names only results whose manifest and provenance were written.
        write(
            &root.join(RECORD_FILE),
            &serde_json::to_vec(&record).expect("record serialises"),
        )?;
    }
    println!(
        "results: {}",
        root.strip_prefix(&p.project_dir).unwrap_or(&root).display()
    );
    match first_error {
        Some(e) => Err(e.into()),
        None if same => Ok(Outcome::Unchanged),
        None => Ok(Outcome::Changed),
    }
}

/// What [`publish`] did to `results/<stem>/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The pipeline publishes nothing.
    Nothing,
    /// Everything there already was what this run would publish.
    Unchanged,
    Changed,
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), PublishError> {
    store::write_atomic(path, bytes).map_err(|source| PublishError::Store {
        path: path.to_path_buf(),
        source,
    })
}

/// `publish:` value as a relative path without `.` components (`"."` → empty).
fn clean(dest: &str) -> PathBuf {
    Path::new(dest)
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

/// Removes what killed publishers left in `root`: temp dirs and `write_atomic` temp files
/// of processes that no longer run.
fn remove_stale(root: &Path) {
    for e in fs::read_dir(root).into_iter().flatten().flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TEMP_PREFIX)) else {
            continue;
        };
        let pid = rest.split('.').next().and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|pid| !store::pid_alive(pid)) {
            let _ = remove_any(&e.path());
        }
    }
    store::remove_stale_temp_files(root);
}

fn temp_path(root: &Path) -> PathBuf {
    root.join(format!(
        "{TEMP_PREFIX}{}.{}",
        std::process::id(),
        TEMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Are the files of `rec` still in place, untouched, and alone in the slots it owns?
fn unchanged(root: &Path, rec: &StageRecord) -> bool {
    let mut seen = 0;
    for slot in &rec.slots {
        let path = root.join(slot);
        let Ok(meta) = fs::symlink_metadata(&path) else {
            return false;
        };
        if meta.is_dir() {
            let Ok(listed) = digest::walk(&path) else {
                return false;
            };
            for f in listed {
                let key = format!("{slot}/{}", f.rel);
                match rec.files.get(&key) {
                    Some(r) if r.matches(&f.meta) => seen += 1,
                    _ => return false,
                }
            }
        } else {
            match rec.files.get(slot) {
                Some(r) if r.matches(&meta) => seen += 1,
                _ => return false,
            }
        }
    }
    seen == rec.files.len()
}

/// Assembles one stage's folder from its verified artifacts and puts it in place.
fn publish_stage(
    root: &Path,
    dest: &Path,
    stage: &str,
    sources: &[Source],
    store: &Store,
) -> Result<StageRecord, PublishError> {
    let tmp = temp_path(root);
    fs::create_dir(&tmp).map_err(io_err("create", &tmp))?;
    let assembled = assemble(&tmp, dest, stage, sources, store);
    let rec = match assembled {
        Ok(rec) => rec,
        Err(e) => {
            let _ = remove_any(&tmp);
            return Err(e);
        }
    };
    let placed = if dest.as_os_str().is_empty() {
        // `"."`: each top-level entry replaces its namesake; other stages' entries stay.
        rec.slots.iter().try_for_each(|slot| {
            replace(&tmp.join(slot), &root.join(slot), root)
                .map_err(io_err("publish to", &root.join(slot)))
        })
    } else {
        let target = root.join(dest);
        match target.parent() {
            Some(parent) if parent != root => {
                fs::create_dir_all(parent).map_err(io_err("create", parent))
            }
            _ => Ok(()),
        }
        .and_then(|()| replace(&tmp, &target, root).map_err(io_err("publish to", &target)))
    };
    let _ = remove_any(&tmp);
    placed.map(|()| rec)
}

/// Copies every source's artifact into `tmp` (at `dest`-relative names) and checks each
/// copy against its digest.
fn assemble(
    tmp: &Path,
    dest: &Path,
    stage: &str,
    sources: &[Source],
    store: &Store,
) -> Result<StageRecord, PublishError> {
    let reflink = AtomicBool::new(true);
    let mut files = BTreeMap::new();
    for (index, s) in sources.iter().enumerate() {
        let object = store.object_path(&s.artifact);
        let corrupt = |reason: CorruptObject| {
            let quarantined = store.quarantine(&s.artifact).ok().flatten();
            PublishError::Corrupt {
                stage: stage.to_string(),
                instance: s.instance.clone(),
                digest: s.artifact.clone(),
                reason,
                quarantined,
            }
        };
        let listed = match digest::walk(&object) {
            Ok(l) => l,
            Err(DigestError::Io { path, source }) => {
                return Err(PublishError::Io {
                    what: "read",
                    path,
                    source,
                })
            }
            Err(e) => return Err(corrupt(CorruptObject::Unreadable(Box::new(e)))),
        };
        let into = tmp.join(&s.sub);
        // Folders first (once each), then the files in parallel.
        let mut dirs: Vec<&str> = listed
            .iter()
            .map(|f| f.rel.rsplit_once('/').map_or("", |(d, _)| d))
            .collect();
        dirs.dedup();
        for d in dirs {
            let dir = into.join(d);
            fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        }
        let copied: Vec<Copied> = listed
            .par_iter()
            .map(|f| copy_verified(&f.path, &into.join(&f.rel), &reflink, index, &f.rel))
            .collect::<Result<_, _>>()
            .map_err(|e| match e {
                CopyError::Corrupt(e) => corrupt(CorruptObject::Unreadable(Box::new(e))),
                CopyError::Io(e) => e,
            })?;
        let got = digest::combine(
            listed
                .iter()
                .zip(&copied)
                .map(|(f, c)| (f.rel.as_str(), c.size, &c.blake3)),
        );
        if got != s.artifact {
            return Err(corrupt(CorruptObject::Mismatch));
        }
        for (f, c) in listed.iter().zip(copied) {
            let rel = dest.join(&s.sub).join(&f.rel);
            files.insert(rel.to_string_lossy().into_owned(), c.record);
        }
    }
    let slots = if dest.as_os_str().is_empty() {
        let mut names: Vec<String> = fs::read_dir(tmp)
            .map_err(io_err("read", tmp))?
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect();
        names.sort();
        names
    } else {
        vec![dest.to_string_lossy().into_owned()]
    };
    Ok(StageRecord {
        sources: sources.to_vec(),
        slots,
        files,
    })
}

struct Copied {
    size: u64,
    blake3: blake3::Hash,
    record: FileRecord,
}

enum CopyError {
    /// The cached file is not what an object may hold.
    Corrupt(DigestError),
    Io(PublishError),
}

/// Copies one cached file to `to` (a new file in an existing folder, mode 0666/0777 less
/// the umask), hashing the bytes that land in the copy.
fn copy_verified(
    from: &Path,
    to: &Path,
    reflink: &AtomicBool,
    source: usize,
    rel: &str,
) -> Result<Copied, CopyError> {
    let (mut src, meta) = digest::open_regular(from).map_err(|e| match e {
        DigestError::Io { path, source } => CopyError::Io(PublishError::Io {
            what: "read",
            path,
            source,
        }),
        e => CopyError::Corrupt(e),
    })?;
    let mode = if meta.mode() & 0o111 != 0 {
        0o777
    } else {
        0o666
    };
    let mut dst = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(to)
        .map_err(io_err("create", to))
        .map_err(CopyError::Io)?;
    let mut b3 = blake3::Hasher::new();
    let mut sha = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; (meta.len() as usize).clamp(1, 1 << 18)];
    let cloned = reflink.load(Ordering::Relaxed) && {
        match rustix::fs::ioctl_ficlone(&dst, &src) {
            Ok(()) => true,
            Err(_) => {
                // Not supported here (ext4, tmpfs, across filesystems): copy from now on.
                reflink.store(false, Ordering::Relaxed);
                false
            }
        }
    };
    // A clone is hashed from the copy itself; a byte copy as the bytes pass.
    let read_err = |source| {
        CopyError::Io(PublishError::Io {
            what: "read",
            path: from.to_path_buf(),
            source,
        })
    };
    loop {
        let n = if cloned {
            dst.read(&mut buf).map_err(read_err)?
        } else {
            src.read(&mut buf).map_err(read_err)?
        };
        if n == 0 {
            break;
        }
        b3.update(&buf[..n]);
        sha.update(&buf[..n]);
        size += n as u64;
        if !cloned {
            dst.write_all(&buf[..n])
                .map_err(io_err("write", to))
                .map_err(CopyError::Io)?;
        }
    }
    let meta = dst
        .metadata()
        .map_err(io_err("stat", to))
        .map_err(CopyError::Io)?;
    Ok(Copied {
        size,
        blake3: b3.finalize(),
        record: FileRecord {
            source,
            path: rel.to_string(),
            size,
            mtime_ns: mtime_ns(&meta),
            ino: meta.ino(),
            dev: meta.dev(),
            sha256: sha.finalize().iter().map(|b| format!("{b:02x}")).collect(),
        },
    })
}

/// Removes a published file or folder (its files are writable, and unlinking needs only
/// the folder's permission, so no chmod pass as for cache objects).
fn remove_any(path: &Path) -> io::Result<()> {
    let gone = |r: io::Result<()>| match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    };
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => gone(fs::remove_dir_all(path)),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Puts `new` (a file or folder) at `target` in one atomic step and removes what was
/// there: `renameat2(RENAME_EXCHANGE)` when `target` exists, a plain `rename` when it does
/// not (and an exchange after all if another publisher created it meanwhile). `scratch`
/// (same filesystem) holds temp names for the fallback on filesystems without exchange.
fn replace(new: &Path, target: &Path, scratch: &Path) -> io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    use rustix::io::Errno;
    for _ in 0..100 {
        match renameat_with(CWD, new, CWD, target, RenameFlags::EXCHANGE) {
            Ok(()) => return remove_any(new), // `new` now names the old tree
            Err(Errno::NOENT) => match fs::rename(new, target) {
                Ok(()) => return Ok(()),
                // Created by another publisher since: exchange with it.
                Err(e) if is_exists(&e) => continue,
                Err(e) => return Err(e),
            },
            Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
                return replace_without_exchange(new, target, scratch)
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::other(
        "it kept being replaced by other processes",
    ))
}

fn is_exists(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EEXIST | libc::ENOTEMPTY | libc::EISDIR | libc::ENOTDIR)
    )
}

/// [`replace`] for filesystems without `RENAME_EXCHANGE` (some network and FUSE
/// filesystems): the old entry is renamed aside, then the new one renamed in. Between
/// the two renames `target` is briefly absent (never half-written).
fn replace_without_exchange(new: &Path, target: &Path, scratch: &Path) -> io::Result<()> {
    for _ in 0..100 {
        // A plain rename already replaces a file, or an empty folder, atomically.
        match fs::rename(new, target) {
            Ok(()) => return Ok(()),
            Err(e) if is_exists(&e) => {}
            Err(e) => return Err(e),
        }
        let aside = temp_path(scratch);
        match fs::rename(target, &aside) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
        let moved = fs::rename(new, target);
        let _ = remove_any(&aside);
        match moved {
            Ok(()) => return Ok(()),
            Err(e) if is_exists(&e) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(
        "it kept being replaced by other processes",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(dir: &Path, files: &[(&str, &str)]) {
        for (rel, text) in files {
            let p = dir.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        }
    }

    #[test]
    fn replace_puts_a_folder_in_place_whether_or_not_one_exists() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("t");
        let new = d.path().join("new");
        tree(&new, &[("a", "1"), ("sub/b", "2")]);
        replace(&new, &target, d.path()).unwrap();
        assert_eq!(fs::read_to_string(target.join("sub/b")).unwrap(), "2");
        assert!(!new.exists());
        // Over an existing, non-empty folder: exchanged, the old tree removed.
        tree(&new, &[("c", "3")]);
        replace(&new, &target, d.path()).unwrap();
        assert_eq!(fs::read_to_string(target.join("c")).unwrap(), "3");
        assert!(!target.join("a").exists());
        assert!(!new.exists());
        // A file over a folder and a folder over a file.
        fs::write(&new, "f").unwrap();
        replace(&new, &target, d.path()).unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "f");
        tree(&new, &[("x", "y")]);
        replace(&new, &target, d.path()).unwrap();
        assert_eq!(fs::read_to_string(target.join("x")).unwrap(), "y");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1, "no leftovers");
    }

    #[test]
    fn the_fallback_without_exchange_replaces_too() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("t");
        let new = d.path().join("new");
        tree(&new, &[("a", "1")]);
        replace_without_exchange(&new, &target, d.path()).unwrap();
        tree(&new, &[("b", "2")]);
        replace_without_exchange(&new, &target, d.path()).unwrap();
        assert!(target.join("b").exists() && !target.join("a").exists());
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1, "no leftovers");
    }

    #[test]
    fn copies_are_verified_writable_and_recorded() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        fs::write(&src, "hello").unwrap();
        let reflink = AtomicBool::new(true);
        fs::create_dir(d.path().join("out")).unwrap();
        let c = match copy_verified(&src, &d.path().join("out/x"), &reflink, 0, "x") {
            Ok(c) => c,
            Err(_) => panic!("copy failed"),
        };
        assert_eq!(c.blake3, blake3::hash(b"hello"));
        assert_eq!(c.size, 5);
        assert_eq!(
            c.record.sha256,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        let meta = fs::metadata(d.path().join("out/x")).unwrap();
        assert!(c.record.matches(&meta));
        assert!(!meta.permissions().readonly());
        // A FIFO is refused as corrupt, without blocking.
        let fifo = d.path().join("fifo");
        let cs = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(cs.as_ptr(), 0o644) }, 0);
        assert!(matches!(
            copy_verified(&fifo, &d.path().join("out/y"), &reflink, 0, "y"),
            Err(CopyError::Corrupt(_))
        ));
    }

    #[test]
    fn stale_temp_dirs_of_dead_publishers_are_removed_live_ones_kept() {
        let d = tempfile::tempdir().unwrap();
        let dead = d.path().join(format!("{TEMP_PREFIX}999999999.0"));
        let live = temp_path(d.path());
        fs::create_dir_all(dead.join("x")).unwrap();
        fs::create_dir_all(&live).unwrap();
        fs::write(d.path().join(".manifest.json.999999999.3.tmp"), "").unwrap();
        remove_stale(d.path());
        assert!(!dead.exists());
        assert!(live.exists());
        assert!(!d.path().join(".manifest.json.999999999.3.tmp").exists());
    }
}
