//! Input verification: an object is read by a stage only after its content was re-hashed
//! and found to match its digest (the name it is stored under). The scheduler checks the
//! cached objects a stage about to run will read (once per object per run) and recovers
//! from a corrupt one; the worker checks again right before the stage reads them (the
//! final guard, also on a cluster node), including every artifact the stage resolves.
//!
//! Why a full re-hash and not something cheaper: sizes and modification times can be
//! restored by whoever edits a file (`touch -r`), and cached files are read-only only by
//! their mode bits. blake3 over the content is the only check as strong as the digest
//! itself; it runs in parallel across files and, for big files, inside each file
//! (`digest_path`), at a cost measured in the README ("How the cache works").
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::cache::digest::{digest_path, DigestError};
use crate::cache::store::Store;

/// What re-hashing an object found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectState {
    Intact,
    /// Its content does not match its digest (or it cannot be read as an artifact: a
    /// symbolic link or an unreadable file inside it); `why` says which.
    Corrupt {
        why: String,
    },
    /// Not in the cache (never stored, removed by `gc`, or quarantined meanwhile).
    Missing,
}

/// Re-hashes the object `digest` of `store`. An object directory that is a symbolic link
/// (the scratch caches of `rst audit` link the main cache's objects) is followed.
pub fn check_object(store: &Store, digest: &str) -> ObjectState {
    check_dir(&store.object_path(digest), digest)
}

/// Re-hashes the object directory `path` stored under `digest`.
pub fn check_dir(path: &Path, digest: &str) -> ObjectState {
    if std::fs::symlink_metadata(path).is_err() {
        return ObjectState::Missing;
    }
    let real = match std::fs::canonicalize(path) {
        Ok(p) if p.is_dir() => p,
        Ok(_) => {
            return ObjectState::Corrupt {
                why: "it is not a directory".into(),
            }
        }
        Err(_) => return ObjectState::Missing,
    };
    match digest_path(&real) {
        Ok(d) if d == digest => ObjectState::Intact,
        Ok(_) => ObjectState::Corrupt {
            why: "its content does not match its digest".into(),
        },
        // Moved away while we hashed it (another `rst verify`).
        Err(DigestError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound && !real.exists() =>
        {
            ObjectState::Missing
        }
        Err(e) => ObjectState::Corrupt {
            why: format!(
                "it cannot be read as an artifact ({})",
                crate::error::chain(&e)
            ),
        },
    }
}

/// The base artifact a dataset view names in its `dataset.json` (`base: "<digest>"`),
/// which a stage reading the view resolves for the pixels. None for anything else.
pub fn view_base(object: &Path) -> Option<String> {
    let meta = std::fs::read(object.join(crate::data::dataset::META_FILE)).ok()?;
    serde_json::from_slice::<serde_json::Value>(&meta)
        .ok()?
        .get("base")?
        .as_str()
        .map(str::to_string)
}

pub use crate::human::short;

/// What was found wrong with an input: `{what} (artifact D) is corrupt in the cache: {why};
/// quarantined to …` (callers add what happens next).
pub fn corrupt_input_message(what: &str, digest: &str, why: &str, moved: Option<&Path>) -> String {
    format!(
        "{what} (artifact {digest}) is corrupt in the cache: {why}; {}",
        match moved {
            Some(to) => format!("quarantined to {}", to.display()),
            None => "moved out of the cache".to_string(),
        }
    )
}

/// Objects checked so far, by digest (true: intact), so each is hashed once.
#[derive(Default)]
pub struct Checked {
    seen: Mutex<HashMap<String, bool>>,
}

impl Checked {
    /// Whether `digest` is intact, hashing it the first time it is asked; a corrupt one is
    /// quarantined (the second value: where it went).
    pub fn intact(&self, store: &Store, digest: &str) -> (ObjectState, Option<PathBuf>) {
        if let Some(&ok) = self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(digest)
        {
            return if ok {
                (ObjectState::Intact, None)
            } else {
                (
                    ObjectState::Corrupt {
                        why: "it was found corrupt earlier".into(),
                    },
                    None,
                )
            };
        }
        let state = check_object(store, digest);
        let mut moved = None;
        if let ObjectState::Corrupt { .. } = state {
            moved = store.quarantine(digest).ok().flatten();
        }
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(digest.to_string(), state == ObjectState::Intact);
        (state, moved)
    }

    /// Marks `digest` as trusted (just computed in this run) or forgets it.
    pub fn set(&self, digest: &str, intact: Option<bool>) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        match intact {
            Some(ok) => {
                seen.insert(digest.to_string(), ok);
            }
            None => {
                seen.remove(digest);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cache::key::{KeyRecord, CACHE_VERSION};
    use crate::cache::store::RunFacts;
    use std::os::unix::fs::PermissionsExt;

    pub(crate) fn stored(store: &Store, text: &str) -> String {
        let record = KeyRecord {
            cache_version: CACHE_VERSION,
            kind: "command".into(),
            kind_version: 1,
            params: serde_json::json!({ "text": text }),
            inputs: Default::default(),
            local_deps: Default::default(),
            env: Default::default(),
        };
        let key = record.key();
        let st = store.staging(&key).unwrap();
        std::fs::write(st.out.join("x"), text).unwrap();
        store
            .publish(st, &key, "p", "a", record, RunFacts::default())
            .unwrap()
            .artifact
    }

    pub(crate) fn tamper(store: &Store, digest: &str, text: &str) {
        let f = store.object_path(digest).join("x");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&f, text).unwrap();
    }

    #[test]
    fn a_tampered_object_is_corrupt_and_quarantined_once() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path()).unwrap();
        let good = stored(&store, "good");
        let other = stored(&store, "other");
        assert_eq!(check_object(&store, &good), ObjectState::Intact);
        tamper(&store, &good, "evil");
        assert!(matches!(
            check_object(&store, &good),
            ObjectState::Corrupt { .. }
        ));
        let checked = Checked::default();
        let (state, moved) = checked.intact(&store, &good);
        assert!(matches!(state, ObjectState::Corrupt { .. }));
        assert!(moved.unwrap().starts_with(d.path().join("quarantine")));
        assert!(!store.object_path(&good).exists());
        // Asked again: answered from memory, nothing hashed or moved.
        assert!(matches!(
            checked.intact(&store, &good).0,
            ObjectState::Corrupt { .. }
        ));
        assert_eq!(check_object(&store, &good), ObjectState::Missing);
        assert_eq!(checked.intact(&store, &other).0, ObjectState::Intact);
    }

    #[test]
    fn a_linked_object_dir_is_followed() {
        let d = tempfile::tempdir().unwrap();
        let main = Store::open(&d.path().join("main")).unwrap();
        let scratch = Store::open(&d.path().join("scratch")).unwrap();
        let digest = stored(&main, "good");
        let link = scratch.object_path(&digest);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(main.object_path(&digest), &link).unwrap();
        assert_eq!(check_object(&scratch, &digest), ObjectState::Intact);
    }
}
