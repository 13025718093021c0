//! `format: raw`: the fetched files themselves.
use super::{internal_io, listing, Fetched, Runner};
use crate::data::archive::archive_kind;
use crate::data::copy::copy_tree;
use crate::data::fetch;
use crate::stages::StageError;

impl Runner<'_, '_> {
    /// `files/<name>`: the file, the directory tree, or an archive's unpacked content.
    pub(super) fn write_raw(&self, fetched: &[Fetched]) -> Result<(), StageError> {
        let files = self.ctx.out.join("files");
        std::fs::create_dir_all(&files)
            .map_err(internal_io(format!("cannot create {}", files.display())))?;
        for f in fetched {
            let dest = files.join(&f.name);
            if f.is_dir {
                let mut skipped = Vec::new();
                copy_tree(&f.path, &dest, &mut skipped)?;
                if !skipped.is_empty() {
                    let shown: Vec<String> =
                        skipped.iter().map(|p| p.display().to_string()).collect();
                    self.ctx.log(&format!(
                        "warning: {}: {} symbolic link(s) or special file(s) not copied:{}",
                        f.name,
                        shown.len(),
                        listing(&shown, 20)
                    ));
                }
            } else if let Some(kind) = archive_kind(&f.name) {
                self.unpack(f, kind, &dest)?;
            } else if f.owned {
                fetch::move_file(&f.path, &dest).map_err(internal_io(format!(
                    "cannot move {} to {}",
                    f.path.display(),
                    dest.display()
                )))?;
            } else {
                std::fs::copy(&f.path, &dest).map_err(|e| {
                    StageError::user(format!("cannot copy {}: {e}", f.path.display()))
                })?;
            }
        }
        Ok(())
    }
}
