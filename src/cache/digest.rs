//! Artifact digests: blake3 over the sorted (relative path, size, content hash) of every
//! file in a directory. Large files are hashed with blake3's own multi-threaded path over
//! a memory map; many small files are hashed in parallel across files.
//!
//! An artifact holds only regular files and directories with UTF-8 names:
//! - a FIFO, socket or device is refused (reading one can block forever or never end);
//!   the type is taken from the directory listing (`lstat`), and every file is opened with
//!   `O_NOFOLLOW | O_NONBLOCK` and checked with `fstat` before a byte is read, so a file
//!   swapped for a FIFO between the listing and the open cannot hang us either;
//! - symbolic links are refused, also ones that point inside the artifact: the digest,
//!   the store, `rst verify`, publishing and the provenance all deal in file contents, and
//!   a link would need its own rules in each (a stage can copy the file instead);
//! - a name that is not valid UTF-8 is refused: names are hashed, published and recorded
//!   in JSON (manifest, provenance) as UTF-8 strings, and a lossy conversion would make
//!   `n\xFE` and `n\xFF` the same file.
use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

/// Files at or above this size use blake3's multi-threaded hashing.
const BIG_FILE: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    /// The path only: the cause is the `source` ([`crate::error::chain`] prints both).
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: symbolic links are not allowed in artifacts (copy the file itself instead, e.g. `cp -L`)")]
    Symlink(PathBuf),
    #[error("{path}: a {kind} is not allowed in artifacts (outputs may contain only regular files and directories)")]
    Special { path: PathBuf, kind: &'static str },
    #[error(
        "{0:?}: the file name is not valid UTF-8 (artifact files must have UTF-8 names: rename it)"
    )]
    NonUtf8(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DigestError + '_ {
    move |source| DigestError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a non-regular, non-directory file type is, for error messages.
fn special_kind(ft: std::fs::FileType) -> &'static str {
    if ft.is_symlink() {
        "symbolic link"
    } else if ft.is_fifo() {
        "FIFO (named pipe)"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_block_device() {
        "block device"
    } else {
        "special file"
    }
}

/// One regular file of an artifact.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Relative path with `/`.
    pub rel: String,
    pub path: PathBuf,
    /// From `lstat` (the listing): size, mode, link count, inode.
    pub meta: Metadata,
}

/// Every regular file under `root`, sorted by relative path; anything that is not a regular
/// file or a directory is an error naming it. `root` itself may be a symbolic link to a
/// directory (the audit's scratch caches link to the main cache's objects).
pub fn walk(root: &Path) -> Result<Vec<Listed>, DigestError> {
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            let path = entry.path();
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                return Err(DigestError::NonUtf8(path));
            };
            let rel = if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}/{name}")
            };
            let ft = entry.file_type().map_err(io(&path))?;
            if ft.is_dir() {
                stack.push((path, rel));
            } else if ft.is_file() {
                let meta = entry.metadata().map_err(io(&path))?;
                out.push(Listed { rel, path, meta });
            } else if ft.is_symlink() {
                return Err(DigestError::Symlink(path));
            } else {
                return Err(DigestError::Special {
                    path,
                    kind: special_kind(ft),
                });
            }
        }
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

/// All regular files under `root`, as (relative path with `/`, absolute path), sorted.
pub fn list_files(root: &Path) -> Result<Vec<(String, PathBuf)>, DigestError> {
    Ok(walk(root)?.into_iter().map(|l| (l.rel, l.path)).collect())
}

/// Opens `path` for reading if, and only if, it is a regular file: `O_NOFOLLOW` (a link is
/// not followed), `O_NONBLOCK` (opening a FIFO does not wait for a writer), then `fstat`
/// on the open file (what is read is what was checked).
pub fn open_regular(path: &Path) -> Result<(File, Metadata), DigestError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                DigestError::Symlink(path.to_path_buf())
            } else {
                io(path)(e)
            }
        })?;
    let meta = file.metadata().map_err(io(path))?;
    if !meta.is_file() {
        return Err(if meta.is_dir() {
            io(path)(std::io::Error::from(std::io::ErrorKind::IsADirectory))
        } else {
            DigestError::Special {
                path: path.to_path_buf(),
                kind: special_kind(meta.file_type()),
            }
        });
    }
    Ok((file, meta))
}

/// The content of `path` if it is a regular file (never blocks on a FIFO or reads a device).
pub fn read_regular(path: &Path) -> Result<Vec<u8>, DigestError> {
    let (mut file, meta) = open_regular(path)?;
    let mut buf = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut buf).map_err(io(path))?;
    Ok(buf)
}

/// blake3 of an open regular file's content, from its start: (bytes hashed, hash).
pub fn hash_open(file: &File, size: u64, path: &Path) -> Result<(u64, blake3::Hash), DigestError> {
    let mut hasher = blake3::Hasher::new();
    if size >= BIG_FILE {
        // SAFETY: the map is read while it lives; the file is a regular file of the cache
        // or of a finished stage (nothing truncates it meanwhile, and if something did,
        // the digest would not match and the object be refused).
        let map = unsafe { memmap2::Mmap::map(file) }.map_err(io(path))?;
        hasher.update_rayon(&map);
        Ok((map.len() as u64, hasher.finalize()))
    } else {
        let mut buf = Vec::with_capacity(size as usize);
        let mut reader = file;
        reader.read_to_end(&mut buf).map_err(io(path))?;
        hasher.update(&buf);
        Ok((buf.len() as u64, hasher.finalize()))
    }
}

/// blake3 of one regular file's content: (size, hash).
pub fn hash_file(path: &Path) -> Result<(u64, blake3::Hash), DigestError> {
    let (file, meta) = open_regular(path)?;
    hash_open(&file, meta.len(), path)
}

/// The artifact digest of files given as (relative path, size, content hash), sorted by
/// relative path.
pub fn combine<'a>(files: impl IntoIterator<Item = (&'a str, u64, &'a blake3::Hash)>) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"rst-artifact-v1\0");
    for (rel, size, hash) in files {
        h.update(&(rel.len() as u64).to_le_bytes());
        h.update(rel.as_bytes());
        h.update(&size.to_le_bytes());
        h.update(hash.as_bytes());
    }
    h.finalize().to_hex().to_string()
}

/// The digest of the artifact directory (or single file) at `path`.
pub fn digest_path(path: &Path) -> Result<String, DigestError> {
    let meta = std::fs::metadata(path).map_err(io(path))?;
    let files = if meta.is_dir() {
        list_files(path)?
    } else {
        let name = path.file_name().unwrap_or_default();
        let Some(name) = name.to_str() else {
            return Err(DigestError::NonUtf8(path.to_path_buf()));
        };
        // A single file (a pipeline's local dependency) may be a link to the real file.
        let real = std::fs::canonicalize(path).map_err(io(path))?;
        vec![(name.to_string(), real)]
    };
    let hashes: Vec<(u64, blake3::Hash)> = files
        .par_iter()
        .map(|(_, abs)| hash_file(abs))
        .collect::<Result<_, _>>()?;
    Ok(combine(files.iter().zip(&hashes).map(
        |((rel, _), (size, hash))| (rel.as_str(), *size, hash),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn digest_depends_on_names_and_contents_not_on_location() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        for d in [a.path(), b.path()] {
            std::fs::create_dir(d.join("sub")).unwrap();
            std::fs::write(d.join("x"), "1").unwrap();
            std::fs::write(d.join("sub/y"), "2").unwrap();
        }
        let da = digest_path(a.path()).unwrap();
        assert_eq!(da, digest_path(b.path()).unwrap());
        std::fs::write(b.path().join("sub/y"), "3").unwrap();
        assert_ne!(da, digest_path(b.path()).unwrap());
        std::fs::write(b.path().join("sub/y"), "2").unwrap();
        std::fs::rename(b.path().join("x"), b.path().join("z")).unwrap();
        assert_ne!(da, digest_path(b.path()).unwrap());
    }

    /// The digest format is pinned: changing it would orphan every cached object.
    #[test]
    fn digest_is_pinned() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("x"), "1").unwrap();
        std::fs::write(d.path().join("sub/y"), "2").unwrap();
        let mut h = blake3::Hasher::new();
        h.update(b"rst-artifact-v1\0");
        for (rel, content) in [("sub/y", "2"), ("x", "1")] {
            h.update(&(rel.len() as u64).to_le_bytes());
            h.update(rel.as_bytes());
            h.update(&(content.len() as u64).to_le_bytes());
            h.update(blake3::hash(content.as_bytes()).as_bytes());
        }
        assert_eq!(
            digest_path(d.path()).unwrap(),
            h.finalize().to_hex().to_string()
        );
    }

    #[test]
    fn big_files_hash_like_blake3() {
        let d = tempfile::tempdir().unwrap();
        let data = vec![7u8; (BIG_FILE as usize) * 3 + 5];
        std::fs::write(d.path().join("big"), &data).unwrap();
        assert_eq!(
            hash_file(&d.path().join("big")).unwrap(),
            (data.len() as u64, blake3::hash(&data))
        );
    }

    #[test]
    fn fifos_sockets_and_symlinks_are_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("sub/p");
        std::fs::create_dir(d.path().join("sub")).unwrap();
        let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let err = digest_path(d.path()).unwrap_err();
        assert!(
            matches!(&err, DigestError::Special { path, kind } if path == &fifo && kind.contains("FIFO")),
            "{err}"
        );
        assert!(err.to_string().contains("sub/p"), "{err}");
        // Opened directly (as if swapped in after the listing): refused by fstat, no hang.
        assert!(matches!(hash_file(&fifo), Err(DigestError::Special { .. })));
        assert!(matches!(
            read_regular(&fifo),
            Err(DigestError::Special { .. })
        ));
        std::fs::remove_file(&fifo).unwrap();

        let sock = d.path().join("s");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert!(matches!(
            digest_path(d.path()),
            Err(DigestError::Special { kind: "socket", .. })
        ));
        std::fs::remove_file(&sock).unwrap();

        std::fs::write(d.path().join("real"), "x").unwrap();
        std::os::unix::fs::symlink("real", d.path().join("link")).unwrap();
        assert!(matches!(
            digest_path(d.path()),
            Err(DigestError::Symlink(_))
        ));
        assert!(matches!(
            hash_file(&d.path().join("link")),
            Err(DigestError::Symlink(_))
        ));
    }

    #[test]
    fn non_utf8_names_are_refused_not_merged() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(OsStr::from_bytes(b"n\xfe")), "a").unwrap();
        let err = digest_path(d.path()).unwrap_err();
        assert!(matches!(err, DigestError::NonUtf8(_)), "{err}");
        assert!(err.to_string().contains("n\\xFE"), "{err}");
    }

    #[test]
    fn combine_matches_digest_path() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a"), "hello").unwrap();
        let h = blake3::hash(b"hello");
        assert_eq!(combine([("a", 5, &h)]), digest_path(d.path()).unwrap());
    }
}
