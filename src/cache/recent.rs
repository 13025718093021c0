//! `refs/<pipeline id>.recent`: what the last run of a pipeline found for each of its
//! instances: the key, the artifact, and the identity (inode, size, modification time) of
//! the entry file it was read from or wrote.
//!
//! A shortcut for the no-op run, never a source of truth. An instance whose key is the one
//! recorded is a hit when its entry file still has the recorded identity (one `statx`,
//! instead of opening, reading and parsing the entry) and its object is there; its ref
//! (`refs/<id>`, the "why does it rerun" of `rst status`) was set by that run and is not
//! read again. Anything else falls back to [`Store::hit`]: entries are only ever replaced
//! by a rename (a new inode) or removed (`gc`, `--force`, quarantine), so a rewritten or
//! removed entry no longer matches, and a quarantined object is not a directory.
//!
//! Written after a run when something changed, with [`write_replace`] (no fsync: a lost
//! update only makes the next run take the long way), read-modify-write so that a run of
//! some targets keeps the others. Two runs at once: the last one wins; each of its records
//! is still checked before use. An unreadable or foreign file is ignored.
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::store::{write_replace, Store};

/// Bump when the layout changes (an older file is then ignored).
const FORMAT: u32 = 1;

/// Pipelines with more instances keep no record: it would cost about 250 bytes of file
/// and more of memory per instance at every start, for a run that takes minutes anyway.
pub const MAX_INSTANCES: usize = 200_000;

/// An entry file's identity: what changes whenever it is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct FileId {
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

impl FileId {
    fn of(path: &std::path::Path) -> Option<FileId> {
        let m = std::fs::metadata(path).ok()?;
        Some(FileId {
            ino: m.ino(),
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }
}

impl FileId {
    /// [`FileId::of`] `rel`, relative to the open directory `dir`.
    fn at(dir: &std::fs::File, rel: &str) -> Option<FileId> {
        use rustix::fs::{statx, AtFlags, StatxFlags};
        let st = statx(
            dir,
            rel,
            AtFlags::empty(),
            StatxFlags::INO | StatxFlags::SIZE | StatxFlags::MTIME,
        )
        .ok()?;
        Some(FileId {
            ino: st.stx_ino,
            size: st.stx_size,
            mtime_ns: i128::from(st.stx_mtime.tv_sec) * 1_000_000_000
                + i128::from(st.stx_mtime.tv_nsec),
        })
    }
}

/// Whether `rel`, relative to the open directory `dir`, is a directory (following a
/// link, as [`std::path::Path::is_dir`] does).
fn is_dir_at(dir: &std::fs::File, rel: &str) -> bool {
    use rustix::fs::{statx, AtFlags, FileType, StatxFlags};
    statx(dir, rel, AtFlags::empty(), StatxFlags::TYPE)
        .is_ok_and(|st| FileType::from_raw_mode(u32::from(st.stx_mode)) == FileType::Directory)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Seen {
    key: String,
    artifact: String,
    entry: FileId,
}

#[derive(Serialize, Deserialize)]
struct File {
    format: u32,
    pipeline: String,
    instances: HashMap<String, Seen>,
}

/// The last run's records of one pipeline.
pub struct Recent {
    /// None: recording is off (a pipeline over [`MAX_INSTANCES`]).
    path: Option<PathBuf>,
    pipeline: String,
    instances: HashMap<String, Seen>,
    /// `entries/` and `objects/`, open: each check is a `statx` of `ab/<name>` relative to
    /// them (two path components) rather than of the whole path from `/` (measured on a
    /// no-op run of 1,013 stages: path walking was an eighth of it).
    dirs: Option<(std::fs::File, std::fs::File)>,
}

impl Recent {
    /// No records, and none kept.
    pub fn off() -> Recent {
        Recent {
            path: None,
            pipeline: String::new(),
            instances: HashMap::new(),
            dirs: None,
        }
    }

    /// The records of `pipeline` (none when there is no readable file).
    pub fn load(store: &Store, pipeline: &str) -> Recent {
        let id = blake3::hash(pipeline.as_bytes()).to_hex();
        let path = store
            .root()
            .join("refs")
            .join(format!("{}.recent", &id[..32]));
        let instances = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<File>(&b).ok())
            .filter(|f| f.format == FORMAT && f.pipeline == pipeline)
            .map(|f| f.instances)
            .unwrap_or_default();
        let open = |sub: &str| std::fs::File::open(store.root().join(sub)).ok();
        let dirs = if instances.is_empty() {
            None
        } else {
            open("entries").zip(open("objects"))
        };
        Recent {
            path: Some(path),
            pipeline: pipeline.to_string(),
            instances,
            dirs,
        }
    }

    /// The artifact of `instance` at `key` if the last run recorded exactly that and its
    /// entry and object are still the ones it saw; `None`: ask [`Store::hit`].
    pub fn hit(&self, store: &Store, instance: &str, key: &str) -> Option<String> {
        let seen = self.instances.get(instance)?;
        if seen.key != key || key.len() < 2 || seen.artifact.len() < 2 {
            return None;
        }
        let Some((entries, objects)) = &self.dirs else {
            return (FileId::of(&store.entry_path(key)) == Some(seen.entry)
                && store.object_path(&seen.artifact).is_dir())
            .then(|| seen.artifact.clone());
        };
        // Both checked every time (no memo of objects seen): a run that quarantines an
        // object asks again for its producer, which must then miss.
        let entry = format!("{}/{key}.json", &key[..2]);
        let object = format!("{}/{}", &seen.artifact[..2], seen.artifact);
        (FileId::at(entries, &entry) == Some(seen.entry) && is_dir_at(objects, &object))
            .then(|| seen.artifact.clone())
    }

    /// Records what this run found (`(instance, key, artifact)` of every instance with a
    /// result) and writes the file if that changed anything. Errors are ignored: the file
    /// is a shortcut.
    pub fn update<'a>(
        mut self,
        store: &Store,
        found: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
    ) {
        let Some(path) = self.path.take() else {
            return;
        };
        let mut changed = false;
        for (instance, key, artifact) in found {
            if let Some(s) = self.instances.get(instance) {
                if s.key == key && s.artifact == artifact {
                    continue;
                }
            }
            let Some(entry) = FileId::of(&store.entry_path(key)) else {
                continue;
            };
            self.instances.insert(
                instance.to_string(),
                Seen {
                    key: key.to_string(),
                    artifact: artifact.to_string(),
                    entry,
                },
            );
            changed = true;
        }
        if changed {
            let file = File {
                format: FORMAT,
                pipeline: self.pipeline,
                instances: self.instances,
            };
            let bytes = serde_json::to_vec(&file).expect("records serialise");
            let _ = write_replace(&path, &bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry of `key` pointing at a new object, as the store would write it.
    fn publish(store: &Store, key: &str, artifact: &str, text: &str) {
        std::fs::create_dir_all(store.object_path(artifact)).unwrap();
        let path = store.entry_path(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let entry =
            format!("{{\"key\": \"{key}\", \"artifact\": \"{artifact}\", \"x\": \"{text}\"}}");
        write_replace(&path, entry.as_bytes()).unwrap();
    }

    #[test]
    fn a_recorded_hit_holds_until_its_entry_or_object_changes() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path()).unwrap();
        let (k, a) = ("ab".repeat(32), "cd".repeat(32));
        publish(&store, &k, &a, "1");
        let recent = Recent::load(&store, "p");
        assert_eq!(recent.hit(&store, "s", &k), None, "nothing recorded yet");
        recent.update(&store, [("s", k.as_str(), a.as_str())]);

        let recent = Recent::load(&store, "p");
        assert_eq!(recent.hit(&store, "s", &k), Some(a.clone()));
        assert_eq!(
            recent.hit(&store, "s", &"ef".repeat(32)),
            None,
            "another key"
        );
        assert_eq!(recent.hit(&store, "t", &k), None, "another instance");
        assert_eq!(
            Recent::load(&store, "q").hit(&store, "s", &k),
            None,
            "another pipeline"
        );

        // The entry replaced (a recompute: same key, another artifact): not trusted.
        let b = "ee".repeat(32);
        publish(&store, &k, &b, "2");
        assert_eq!(recent.hit(&store, "s", &k), None);
        // Recorded again; then the object goes (quarantine): not trusted.
        recent.update(&store, [("s", k.as_str(), b.as_str())]);
        let recent = Recent::load(&store, "p");
        assert_eq!(recent.hit(&store, "s", &k), Some(b.clone()));
        std::fs::remove_dir(store.object_path(&b)).unwrap();
        assert_eq!(recent.hit(&store, "s", &k), None);
        // The entry removed (gc, --force): not trusted.
        std::fs::create_dir_all(store.object_path(&b)).unwrap();
        std::fs::remove_file(store.entry_path(&k)).unwrap();
        assert_eq!(recent.hit(&store, "s", &k), None);
        // A garbled file is ignored.
        std::fs::write(recent.path.as_ref().unwrap(), b"{not json").unwrap();
        assert!(Recent::load(&store, "p").instances.is_empty());
    }
}
