//! Unpacking fetched archives and copying directory sources.
use std::path::{Path, PathBuf};

use super::{internal_io, listing, Fetched, Runner};
use crate::data::archive::{self, Unpacked};
use crate::stages::StageError;

/// Copies a directory tree; symbolic links and special files are skipped and listed.
pub(super) fn copy_tree(
    from: &Path,
    to: &Path,
    skipped: &mut Vec<PathBuf>,
) -> Result<(), StageError> {
    std::fs::create_dir_all(to).map_err(internal_io(format!("cannot create {}", to.display())))?;
    let listing = std::fs::read_dir(from)
        .map_err(|e| StageError::user(format!("cannot list {}: {e}", from.display())))?;
    let mut entries = listing
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StageError::user(format!("cannot list {}: {e}", from.display())))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let ft = entry
            .file_type()
            .map_err(|e| StageError::user(format!("cannot stat {}: {e}", src.display())))?;
        if ft.is_dir() {
            copy_tree(&src, &dst, skipped)?;
        } else if ft.is_file() {
            std::fs::copy(&src, &dst)
                .map_err(|e| StageError::user(format!("cannot copy {}: {e}", src.display())))?;
        } else {
            skipped.push(src);
        }
    }
    Ok(())
}

impl Runner<'_, '_> {
    pub(super) fn report_unpack(&self, name: &str, report: &Unpacked) {
        if !report.skipped_links.is_empty() {
            self.ctx.log(&format!(
                "warning: archive {name}: {} symbolic link(s) not created:{}",
                report.skipped_links.len(),
                listing(&report.skipped_links, 20)
            ));
        }
        if !report.skipped_other.is_empty() {
            self.ctx.log(&format!(
                "warning: archive {name}: {} special file(s) (devices, fifos) not created:{}",
                report.skipped_other.len(),
                listing(&report.skipped_other, 20)
            ));
        }
    }

    pub(super) fn unpack(
        &self,
        f: &Fetched,
        kind: archive::ArchiveKind,
        dest: &Path,
    ) -> Result<(), StageError> {
        std::fs::create_dir_all(dest)
            .map_err(internal_io(format!("cannot create {}", dest.display())))?;
        self.ctx.log(&format!("unpacking {}", f.name));
        let report = archive::unpack(&f.path, &f.name, kind, dest, self.limits)?;
        self.report_unpack(&f.name, &report);
        Ok(())
    }
}
