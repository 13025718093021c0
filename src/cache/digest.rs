//! Artifact digests: blake3 over the sorted (relative path, size, content hash) of every
//! file in a directory. Large files are hashed with blake3's own multi-threaded mmap path;
//! many small files are hashed in parallel across files.
use std::io::Read;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

/// Files at or above this size use blake3's multi-threaded hashing.
const BIG_FILE: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: symbolic links are not allowed in artifacts")]
    Symlink(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DigestError + '_ {
    move |source| DigestError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// All regular files under `root`, as (relative path with `/`, absolute path), sorted.
pub fn list_files(root: &Path) -> Result<Vec<(String, PathBuf)>, DigestError> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            let path = entry.path();
            let ft = entry.file_type().map_err(io(&path))?;
            if ft.is_symlink() {
                return Err(DigestError::Symlink(path));
            } else if ft.is_dir() {
                stack.push(path);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .expect("under root")
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                out.push((rel, path));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// blake3 of one file's content.
pub fn hash_file(path: &Path) -> Result<(u64, blake3::Hash), DigestError> {
    let size = std::fs::metadata(path).map_err(io(path))?.len();
    let mut hasher = blake3::Hasher::new();
    if size >= BIG_FILE {
        hasher.update_mmap_rayon(path).map_err(io(path))?;
    } else {
        let mut buf = Vec::with_capacity(size as usize);
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut buf))
            .map_err(io(path))?;
        hasher.update(&buf);
    }
    Ok((size, hasher.finalize()))
}

/// The digest of the artifact directory (or single file) at `path`.
pub fn digest_path(path: &Path) -> Result<String, DigestError> {
    let meta = std::fs::symlink_metadata(path).map_err(io(path))?;
    let files = if meta.is_dir() {
        list_files(path)?
    } else {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        vec![(name, path.to_path_buf())]
    };
    let hashes: Vec<(u64, blake3::Hash)> = files
        .par_iter()
        .map(|(_, abs)| hash_file(abs))
        .collect::<Result<_, _>>()?;
    let mut h = blake3::Hasher::new();
    h.update(b"rst-artifact-v1\0");
    for ((rel, _), (size, hash)) in files.iter().zip(&hashes) {
        h.update(&(rel.len() as u64).to_le_bytes());
        h.update(rel.as_bytes());
        h.update(&size.to_le_bytes());
        h.update(hash.as_bytes());
    }
    Ok(h.finalize().to_hex().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn big_files_hash_like_blake3() {
        let d = tempfile::tempdir().unwrap();
        let data = vec![7u8; (BIG_FILE as usize) * 3 + 5];
        std::fs::write(d.path().join("big"), &data).unwrap();
        assert_eq!(
            hash_file(&d.path().join("big")).unwrap().1,
            blake3::hash(&data)
        );
    }
}
