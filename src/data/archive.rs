//! Unpacking `.tar`, `.tar.gz` / `.tgz` and `.zip` archives (detected by name) into a
//! directory, safely: an entry whose path escapes the target (`..`, an absolute path), or a
//! symbolic or hard link whose target escapes it, makes the whole unpack fail with a user
//! error naming the entry. Symbolic links that stay inside are not created (skipped and
//! reported), so the unpacked tree never contains links to follow.
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use flate2::bufread::MultiGzDecoder;

use crate::data::error::DataError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    Tar,
    TarGz,
    Zip,
}

/// The archive kind a file name says, if any. A lone `.gz` is not an archive.
pub fn archive_kind(name: &str) -> Option<ArchiveKind> {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".tar.gz") || lower.ends_with(".tgz") {
        Some(ArchiveKind::TarGz)
    } else if lower.ends_with(".tar") {
        Some(ArchiveKind::Tar)
    } else if lower.ends_with(".zip") {
        Some(ArchiveKind::Zip)
    } else {
        None
    }
}

/// What an unpack did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unpacked {
    /// Files and directories written.
    pub entries: usize,
    /// Symbolic links (inside the tree) that were not created.
    pub skipped_links: Vec<String>,
    /// Entries of other kinds (devices, fifos) that were not created.
    pub skipped_other: Vec<String>,
}

/// Bounds on what an archive may unpack to, against decompression bombs (a 1 MB archive
/// of zeros that unpacks to 1 GiB): the total size of its files, and that total divided by
/// the archive's own size (applied past [`RATIO_FLOOR`], so small archives of very
/// compressible files stay fine). Checked against each entry's declared size before it is
/// written, and against the bytes actually written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub max_bytes: u64,
    /// 0: no ratio limit.
    pub max_ratio: f64,
}

/// Unpacked totals up to this size are never refused for their ratio.
pub const RATIO_FLOOR: u64 = 1 << 20;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 256 << 30,
            max_ratio: 200.0,
        }
    }
}

/// Running total of an unpack, checked against [`Limits`].
struct Budget<'a> {
    limits: Limits,
    archive_bytes: u64,
    display: &'a str,
    written: u64,
}

impl Budget<'_> {
    /// The most bytes the whole unpack may write.
    fn cap(&self) -> u64 {
        let by_ratio = if self.limits.max_ratio > 0.0 {
            ((self.archive_bytes as f64 * self.limits.max_ratio) as u64).max(RATIO_FLOOR)
        } else {
            u64::MAX
        };
        self.limits.max_bytes.min(by_ratio)
    }

    /// Bytes the next entry may still write.
    fn left(&self) -> u64 {
        self.cap().saturating_sub(self.written)
    }

    fn exceeded(&self, entry: &str, total: u64) -> DataError {
        let by_size = self.cap() == self.limits.max_bytes;
        let which = if by_size {
            format!(
                "the limit of {} unpacked bytes (params.max_unpacked_bytes)",
                self.limits.max_bytes
            )
        } else {
            format!(
                "{} times its own size of {} bytes (params.max_unpack_ratio: {})",
                self.limits.max_ratio, self.archive_bytes, self.limits.max_ratio
            )
        };
        DataError::invalid(format!(
            "archive {}: unpacking entry `{entry}` would bring it to at least {total} bytes, \
             over {which}; refusing it as a possible decompression bomb. If the archive is \
             genuine, raise {} in this download stage's params",
            self.display,
            if by_size {
                "max_unpacked_bytes"
            } else {
                "max_unpack_ratio (0: no ratio limit)"
            }
        ))
    }

    /// Reserves `size` bytes for `entry`.
    fn take(&mut self, entry: &str, size: u64) -> Result<(), DataError> {
        if size > self.left() {
            return Err(self.exceeded(entry, self.written.saturating_add(size)));
        }
        self.written += size;
        Ok(())
    }
}

/// What a tar or gzip reader's error says, fit for a terminal: on garbage the tar crate
/// quotes the header bytes it could not parse, which would print raw binary.
fn clean(e: &dyn std::fmt::Display) -> String {
    let text: String = e
        .to_string()
        .chars()
        .map(|c| {
            if c.is_control() || c == '\u{fffd}' {
                '?'
            } else {
                c
            }
        })
        .collect();
    let mut text = text.split(" when ").next().unwrap_or("").trim().to_string();
    if text.chars().count() > 120 {
        text = text.chars().take(120).collect::<String>() + "…";
    }
    text
}

/// `path` as normal components only, or None when it has `..`, a root or a prefix.
pub fn safe_relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Whether a symbolic link at `link` (relative to the tree) pointing at `target` stays inside.
fn link_stays_inside(link: &Path, target: &Path) -> bool {
    let mut depth: Vec<&std::ffi::OsStr> = Vec::new();
    if let Some(parent) = link.parent() {
        for c in parent.components() {
            if let Component::Normal(p) = c {
                depth.push(p);
            }
        }
    }
    for c in target.components() {
        match c {
            Component::Normal(p) => depth.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                if depth.pop().is_none() {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

fn escape_error(archive: &str, entry: &str, why: &str) -> DataError {
    DataError::invalid(format!(
        "archive {archive}: entry `{entry}` {why}; refusing to unpack it"
    ))
}

/// Unpacks `archive` (shown to the user as `display`) into the existing directory `dest`,
/// within `limits`.
pub fn unpack(
    archive: &Path,
    display: &str,
    kind: ArchiveKind,
    dest: &Path,
    limits: Limits,
) -> Result<Unpacked, DataError> {
    let mut file = File::open(archive).map_err(DataError::read(format_args!(
        "archive {display}: cannot open"
    )))?;
    let archive_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    let budget = Budget {
        limits,
        archive_bytes,
        display,
        written: 0,
    };
    match kind {
        ArchiveKind::Tar => unpack_tar(BufReader::new(file), display, dest, budget, "tar"),
        ArchiveKind::TarGz => {
            let mut magic = [0u8; 2];
            let head = file.read_exact(&mut magic);
            if head.is_err() || magic != [0x1f, 0x8b] {
                return Err(DataError::invalid(format!(
                    "archive {display}: not a gzip file ({archive_bytes} bytes that do not start \
                     with the gzip signature 1f 8b), so not a valid .tar.gz"
                )));
            }
            let file = BufReader::new(file);
            let reader = io::Read::chain(&magic[..], file);
            unpack_tar(
                MultiGzDecoder::new(BufReader::new(reader)),
                display,
                dest,
                budget,
                "gzip-compressed tar",
            )
        }
        ArchiveKind::Zip => unpack_zip(file, display, dest, budget),
    }
}

fn unpack_tar(
    reader: impl Read,
    display: &str,
    dest: &Path,
    mut budget: Budget<'_>,
    what: &str,
) -> Result<Unpacked, DataError> {
    let bad = |e: io::Error| {
        DataError::invalid(format!(
            "archive {display}: not a valid {what} archive ({})",
            clean(&e)
        ))
    };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(false);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);
    let mut done = Unpacked::default();
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
            || kind.is_gnu_longlink()
        {
            continue; // metadata for the archive or the next entry, not a file
        }
        let path = entry.path().map_err(bad)?.into_owned();
        let shown = path.display().to_string();
        let Some(rel) = safe_relative(&path) else {
            return Err(escape_error(
                display,
                &shown,
                "escapes the target directory",
            ));
        };
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(bad)?
                .map(|t| t.into_owned())
                .unwrap_or_default();
            let inside = if kind.is_symlink() {
                link_stays_inside(&rel, &target)
            } else {
                safe_relative(&target).is_some_and(|t| t.components().next().is_some())
            };
            if !inside {
                let what = if kind.is_symlink() {
                    "is a symbolic link"
                } else {
                    "is a hard link"
                };
                return Err(escape_error(
                    display,
                    &shown,
                    &format!(
                        "{what} to `{}`, outside the target directory",
                        target.display()
                    ),
                ));
            }
            if kind.is_symlink() {
                done.skipped_links.push(shown);
                continue;
            }
        }
        if rel.as_os_str().is_empty() {
            continue;
        }
        let writable = kind.is_file()
            || kind.is_dir()
            || kind.is_hard_link()
            || kind == tar::EntryType::GNUSparse
            || kind == tar::EntryType::Continuous;
        if !writable {
            done.skipped_other.push(shown);
            continue;
        }
        // The declared size is what the tar reader lets this entry write.
        budget.take(&shown, entry.size())?;
        match entry.unpack_in(dest) {
            Ok(true) => done.entries += 1,
            Ok(false) => {
                return Err(escape_error(
                    display,
                    &shown,
                    "escapes the target directory",
                ))
            }
            Err(e) => {
                return Err(DataError::invalid(format!(
                    "archive {display}: cannot unpack entry `{shown}`: {}",
                    clean(&e)
                )))
            }
        }
    }
    Ok(done)
}

fn unpack_zip(
    file: File,
    display: &str,
    dest: &Path,
    mut budget: Budget<'_>,
) -> Result<Unpacked, DataError> {
    let bad = |e: zip::result::ZipError| {
        DataError::invalid(format!(
            "archive {display}: not a valid zip archive ({})",
            clean(&e)
        ))
    };
    let mut zip = zip::ZipArchive::new(BufReader::new(file)).map_err(bad)?;
    let mut done = Unpacked::default();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(bad)?;
        let name = entry.name().to_string();
        let rel = match safe_relative(Path::new(&name)) {
            Some(rel) if entry.enclosed_name().is_some() => rel,
            _ => return Err(escape_error(display, &name, "escapes the target directory")),
        };
        if entry.is_symlink() {
            let mut target = String::new();
            entry
                .read_to_string(&mut target)
                .map_err(DataError::read(format_args!(
                    "archive {display}: cannot read link `{name}`"
                )))?;
            if !link_stays_inside(&rel, Path::new(&target)) {
                return Err(escape_error(
                    display,
                    &name,
                    &format!("is a symbolic link to `{target}`, outside the target directory"),
                ));
            }
            done.skipped_links.push(name);
            continue;
        }
        if rel.as_os_str().is_empty() {
            continue;
        }
        let out = dest.join(&rel);
        let write_err = |source: io::Error| DataError::Read {
            what: format!("archive {display}: cannot unpack entry `{name}`"),
            source,
        };
        if entry.is_dir() {
            std::fs::create_dir_all(&out).map_err(write_err)?;
        } else {
            if let Some(parent) = out.parent() {
                std::fs::create_dir_all(parent).map_err(write_err)?;
            }
            budget.take(&name, entry.size())?;
            let mut f = File::create(&out).map_err(write_err)?;
            // The declared size can lie: never write more than the budget has left.
            let allowed = budget.left() + entry.size();
            let n = io::copy(&mut (&mut entry).take(allowed + 1), &mut f).map_err(write_err)?;
            if n > allowed {
                drop(f);
                let _ = std::fs::remove_file(&out);
                return Err(budget.exceeded(&name, budget.written + n));
            }
            budget.written = budget.written - entry.size() + n;
        }
        done.entries += 1;
    }
    Ok(done)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// A tar header for `path`, written byte-wise so `..` and absolute names get through.
    fn raw_header(path: &str, kind: tar::EntryType, size: u64, link: Option<&str>) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        if let Some(link) = link {
            h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        h
    }

    /// A tar holding `files` (path, content) plus `extra` raw entries.
    pub(crate) fn tar_bytes(
        files: &[(&str, &[u8])],
        links: &[(&str, tar::EntryType, &str)],
    ) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let h = raw_header(path, tar::EntryType::Regular, data.len() as u64, None);
            b.append(&h, *data).unwrap();
        }
        for (path, kind, target) in links {
            let h = raw_header(path, *kind, 0, Some(target));
            b.append(&h, &[][..]).unwrap();
        }
        b.into_inner().unwrap()
    }

    pub(crate) fn zip_bytes(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (path, data) in files {
            w.start_file(*path, opts).unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    fn unpack_bytes(
        bytes: &[u8],
        kind: ArchiveKind,
    ) -> (tempfile::TempDir, Result<Unpacked, DataError>) {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a");
        std::fs::write(&archive, bytes).unwrap();
        let dest = dir.path().join("out");
        std::fs::create_dir(&dest).unwrap();
        let r = unpack(&archive, "a", kind, &dest, Limits::default());
        (dir, r)
    }

    #[test]
    fn kinds_by_name() {
        assert_eq!(archive_kind("x.tar.gz"), Some(ArchiveKind::TarGz));
        assert_eq!(archive_kind("x.TGZ"), Some(ArchiveKind::TarGz));
        assert_eq!(archive_kind("x.tar"), Some(ArchiveKind::Tar));
        assert_eq!(archive_kind("x.zip"), Some(ArchiveKind::Zip));
        assert_eq!(archive_kind("train-images-idx3-ubyte.gz"), None);
    }

    #[test]
    fn tar_gz_and_zip_unpack() {
        let files: &[(&str, &[u8])] = &[("d/a.txt", b"alpha"), ("b.txt", b"beta")];
        let tgz = crate::data::idx::tests::gzip(&tar_bytes(
            files,
            &[("d/link", tar::EntryType::Symlink, "a.txt")],
        ));
        for (bytes, kind) in [
            (tgz, ArchiveKind::TarGz),
            (zip_bytes(files), ArchiveKind::Zip),
        ] {
            let (dir, r) = unpack_bytes(&bytes, kind);
            let r = r.unwrap();
            assert_eq!(
                std::fs::read(dir.path().join("out/d/a.txt")).unwrap(),
                b"alpha"
            );
            assert_eq!(
                std::fs::read(dir.path().join("out/b.txt")).unwrap(),
                b"beta"
            );
            if kind == ArchiveKind::TarGz {
                assert_eq!(r.skipped_links, vec!["d/link".to_string()]);
                assert!(std::fs::symlink_metadata(dir.path().join("out/d/link")).is_err());
            }
        }
    }

    #[test]
    fn escaping_entries_are_rejected() {
        let cases: Vec<(Vec<u8>, ArchiveKind, &str)> = vec![
            (
                tar_bytes(&[("ok.txt", b"x"), ("../evil", b"x")], &[]),
                ArchiveKind::Tar,
                "../evil",
            ),
            (
                tar_bytes(&[("/etc/evil", b"x")], &[]),
                ArchiveKind::Tar,
                "/etc/evil",
            ),
            (
                tar_bytes(&[], &[("d/l", tar::EntryType::Symlink, "../../x")]),
                ArchiveKind::Tar,
                "d/l",
            ),
            (
                tar_bytes(&[], &[("l", tar::EntryType::Symlink, "/etc/passwd")]),
                ArchiveKind::Tar,
                "l",
            ),
            (
                tar_bytes(&[], &[("h", tar::EntryType::Link, "../x")]),
                ArchiveKind::Tar,
                "h",
            ),
            (zip_bytes(&[("../evil", b"x")]), ArchiveKind::Zip, "../evil"),
        ];
        for (bytes, kind, entry) in cases {
            let (dir, r) = unpack_bytes(&bytes, kind);
            let e = r.unwrap_err();
            assert!(e.is_user(), "{e}");
            assert!(e.render().contains(&format!("`{entry}`")), "{e}");
            assert!(!dir.path().join("evil").exists());
        }
    }

    #[test]
    fn pax_global_headers_are_not_files() {
        let mut b = tar::Builder::new(Vec::new());
        let record = b"17 comment=hello\n";
        b.append(
            &raw_header(
                "pax_global_header",
                tar::EntryType::XGlobalHeader,
                record.len() as u64,
                None,
            ),
            &record[..],
        )
        .unwrap();
        b.append(
            &raw_header("a.txt", tar::EntryType::Regular, 1, None),
            &b"x"[..],
        )
        .unwrap();
        let (dir, r) = unpack_bytes(&b.into_inner().unwrap(), ArchiveKind::Tar);
        assert_eq!(
            r.unwrap(),
            Unpacked {
                entries: 1,
                ..Default::default()
            }
        );
        assert!(!dir.path().join("out/pax_global_header").exists());
    }

    #[test]
    fn links_inside_are_fine() {
        assert!(link_stays_inside(Path::new("a/b/l"), Path::new("../c")));
        assert!(!link_stays_inside(Path::new("a/l"), Path::new("../../c")));
        assert!(!link_stays_inside(Path::new("l"), Path::new("/abs")));
    }
}

#[cfg(test)]
mod limit_tests {
    use super::tests::{tar_bytes, zip_bytes};
    use super::*;

    fn unpack_with(bytes: &[u8], kind: ArchiveKind, limits: Limits) -> Result<u64, DataError> {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a");
        std::fs::write(&archive, bytes).unwrap();
        let dest = dir.path().join("out");
        std::fs::create_dir(&dest).unwrap();
        unpack(&archive, "a", kind, &dest, limits)?;
        Ok(std::fs::read_dir(&dest)
            .unwrap()
            .flatten()
            .map(|e| e.metadata().unwrap().len())
            .sum())
    }

    #[test]
    fn size_and_ratio_limits_stop_an_unpack_and_name_the_param() {
        let zeros = vec![0u8; 3 << 20];
        let tar = tar_bytes(&[("a.bin", &zeros[..1000]), ("b.bin", &zeros)], &[]);
        let small = Limits {
            max_bytes: 1 << 20,
            max_ratio: 0.0,
        };
        let e = unpack_with(&tar, ArchiveKind::Tar, small).unwrap_err();
        assert!(
            e.is_user() && e.render().contains("max_unpacked_bytes"),
            "{e:?}"
        );
        assert!(e.render().contains("`b.bin`"), "{e:?}");
        // A tar is barely larger than its content: the default ratio lets it through.
        assert_eq!(
            unpack_with(&tar, ArchiveKind::Tar, Limits::default()).unwrap(),
            1000 + (3 << 20)
        );
        // Deflated zeros are ~1000:1: over the default ratio, fine without one.
        let zip = zip_bytes(&[("z.bin", &zeros)]);
        let e = unpack_with(&zip, ArchiveKind::Zip, Limits::default()).unwrap_err();
        assert!(e.render().contains("max_unpack_ratio"), "{e:?}");
        let no_ratio = Limits {
            max_ratio: 0.0,
            ..Limits::default()
        };
        assert_eq!(
            unpack_with(&zip, ArchiveKind::Zip, no_ratio).unwrap(),
            3 << 20
        );
        // Small archives are never refused for their ratio.
        let zip = zip_bytes(&[("z.bin", &zeros[..100_000])]);
        assert!(unpack_with(&zip, ArchiveKind::Zip, Limits::default()).is_ok());
    }

    #[test]
    fn tar_error_text_is_made_printable() {
        let e = io::Error::other(
            "numeric field was not a number: \u{0}\u{7f}\u{fffd}x when getting cksum for y",
        );
        assert_eq!(clean(&e), "numeric field was not a number: ???x");
    }
}
