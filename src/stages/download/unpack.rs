//! Unpacking fetched archives.
use std::path::Path;

use super::{internal_io, listing, Fetched, Runner};
use crate::data::archive::{self, Unpacked};
use crate::stages::StageError;

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
