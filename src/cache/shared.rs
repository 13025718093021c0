//! A cache shared between machines (the remote, in `src/remote/`), as the scheduler and
//! `rst status` see it: a second tier behind the local store. The engine only knows this
//! trait, so `exec` and `status` do not depend on S3 (the arrows point from `remote` to
//! `cache`, never back).
use super::store::Store;

/// What fetching one key gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Fetch {
    /// Stored here now.
    Hit(Fetched),
    /// The shared cache has no entry for the key.
    Miss,
    /// It had one, but it was not used (a corrupt object, an entry that does not hash to
    /// its key, a transfer that failed): why, for a warning. The key is computed here.
    Rejected(String),
}

/// A fetched entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Fetched {
    /// The artifact, now in the local store (verified against its digest).
    pub artifact: String,
    /// Bytes transferred for it (0 when the object was here already).
    pub bytes: u64,
}

pub trait SharedCache: Send + Sync {
    /// The artifacts the shared cache's entries name for `keys`, in order (None: no entry,
    /// or it could not be read). Reads entries only: what `rst status` asks.
    fn peek(&self, keys: &[&str]) -> Vec<Option<String>>;

    /// Fetches the entries of `keys` and their objects into `store`, in parallel, each
    /// object verified against its digest before it is stored; per key what it gave.
    /// Once `cancelled()` (Ctrl-C), what is in flight is abandoned and counts as a miss.
    fn fetch(&self, store: &Store, keys: &[&str], cancelled: &dyn Fn() -> bool) -> Vec<Fetch>;

    /// `key` was computed here and its entry is in `store`: upload it (in the background;
    /// a read-only remote ignores it).
    fn offer(&self, store: &Store, key: &str);
}
