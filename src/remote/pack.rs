//! An artifact (a directory of files) as one remote object: an uncompressed tar of its
//! files in path order, with nothing in the headers but path, size and mode (no times,
//! owners or directories), so the same artifact is the same bytes on every machine and
//! two writers of it upload the same object. One object per artifact rather than one per
//! file: a split stage's thousands of images are one request, not thousands. Not
//! compressed: most bytes are weights and images that do not shrink, and the local cache
//! keeps them uncompressed too.
use std::io::{Read, Write};
use std::path::{Component, Path};

use crate::cache::digest;

/// Writes the tar of the artifact directory `dir` to `out`; returns its length.
pub fn pack(dir: &Path, out: &mut impl Write) -> std::io::Result<u64> {
    use std::os::unix::fs::PermissionsExt;
    let files = digest::walk(dir).map_err(std::io::Error::other)?;
    let mut counted = Counted { inner: out, n: 0 };
    {
        let mut tar = tar::Builder::new(&mut counted);
        tar.mode(tar::HeaderMode::Deterministic);
        for f in &files {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(f.meta.len());
            let exec = f.meta.permissions().mode() & 0o111 != 0;
            header.set_mode(if exec { 0o555 } else { 0o444 });
            header.set_mtime(0);
            header.set_uid(0);
            header.set_gid(0);
            let file = std::fs::File::open(&f.path)?;
            tar.append_data(&mut header, &f.rel, file.take(f.meta.len()))?;
        }
        tar.finish()?;
    }
    Ok(counted.n)
}

struct Counted<'a, W: Write> {
    inner: &'a mut W,
    n: u64,
}

impl<W: Write> Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Unpacks a tar made by [`pack`] into the empty directory `out`. Only regular files with
/// plain relative paths are accepted (no links, devices, absolute paths or `..`), and at
/// most `max_bytes` of content: what comes from a server is checked before it is stored,
/// and its digest after ([`crate::cache::store::Store::publish_fetched`]).
pub fn unpack(tar_file: impl Read, out: &Path, max_bytes: u64) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut archive = tar::Archive::new(tar_file);
    let mut total: u64 = 0;
    for entry in archive
        .entries()
        .map_err(|e| format!("not a tar archive: {e}"))?
    {
        let mut entry = entry.map_err(|e| format!("a damaged tar archive: {e}"))?;
        let path = entry
            .path()
            .map_err(|e| format!("a path that is not UTF-8: {e}"))?
            .into_owned();
        let kind = entry.header().entry_type();
        if !kind.is_file() {
            return Err(format!(
                "{} is not a regular file ({kind:?})",
                path.display()
            ));
        }
        if path
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(format!("{} is not a plain relative path", path.display()));
        }
        let size = entry.size();
        total = total.saturating_add(size);
        if total > max_bytes {
            return Err(format!(
                "it holds more than the {max_bytes} bytes its entry declares"
            ));
        }
        let exec = entry.header().mode().unwrap_or(0o444) & 0o111 != 0;
        let to = out.join(&path);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if exec { 0o755 } else { 0o644 })
            .open(&to)
            .map_err(|e| format!("{}: {e}", to.display()))?;
        let copied = std::io::copy(&mut (&mut entry).take(size), &mut file)
            .map_err(|e| format!("{}: {e}", to.display()))?;
        if copied != size {
            return Err(format!("{} is cut short", path.display()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_tree_packs_to_the_same_bytes_and_back() {
        let a = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(a.path().join("sub/deep")).unwrap();
        std::fs::write(a.path().join("x.txt"), b"hello").unwrap();
        std::fs::write(a.path().join("sub/deep/y.bin"), vec![7u8; 10_000]).unwrap();
        let mut one = Vec::new();
        let n = pack(a.path(), &mut one).unwrap();
        assert_eq!(n as usize, one.len());
        // Another copy, written in another order at another time: the same bytes.
        let b = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(b.path().join("sub/deep")).unwrap();
        std::fs::write(b.path().join("sub/deep/y.bin"), vec![7u8; 10_000]).unwrap();
        std::fs::write(b.path().join("x.txt"), b"hello").unwrap();
        let mut two = Vec::new();
        pack(b.path(), &mut two).unwrap();
        assert_eq!(one, two);
        let out = tempfile::tempdir().unwrap();
        unpack(&one[..], out.path(), 10_005).unwrap();
        assert_eq!(
            digest::digest_path(out.path()).unwrap(),
            digest::digest_path(a.path()).unwrap()
        );
        let again = tempfile::tempdir().unwrap();
        assert!(unpack(&one[..], again.path(), 10_004)
            .unwrap_err()
            .contains("more than"));
    }

    #[test]
    fn links_and_escaping_paths_are_refused() {
        let mut bytes = Vec::new();
        {
            let mut tar = tar::Builder::new(&mut bytes);
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            tar.append_link(&mut h, "evil", "/etc/passwd").unwrap();
            tar.finish().unwrap();
        }
        let out = tempfile::tempdir().unwrap();
        assert!(unpack(&bytes[..], out.path(), 1 << 20)
            .unwrap_err()
            .contains("not a regular file"));
        let mut bytes = Vec::new();
        {
            let mut tar = tar::Builder::new(&mut bytes);
            let mut h = tar::Header::new_old();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(1);
            // Written into the header as is: Builder refuses `..` in append_data.
            h.as_old_mut().name[..7].copy_from_slice(b"../x.tx");
            h.set_cksum();
            tar.append(&h, &b"x"[..]).unwrap();
            tar.finish().unwrap();
        }
        assert!(unpack(&bytes[..], out.path(), 1 << 20)
            .unwrap_err()
            .contains("plain relative path"));
    }
}
