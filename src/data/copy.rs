//! Copying a directory tree of the user's data (a `download` directory source) into an
//! artifact: regular files and folders only, in sorted order.
use std::path::{Path, PathBuf};

use crate::data::error::DataError;

/// Copies `from` into `to` (created if missing). Symbolic links and special files are not
/// followed or created: they are pushed onto `skipped` for the caller to report. Reading
/// the source is the user's side of the copy ([`DataError::Read`]), creating `to` ours
/// ([`DataError::Write`]).
pub fn copy_tree(from: &Path, to: &Path, skipped: &mut Vec<PathBuf>) -> Result<(), DataError> {
    std::fs::create_dir_all(to).map_err(DataError::write(format_args!(
        "cannot create {}",
        to.display()
    )))?;
    let cannot_list = || DataError::read(format!("cannot list {}", from.display()));
    let mut entries = std::fs::read_dir(from)
        .map_err(cannot_list())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(cannot_list())?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let ft = entry.file_type().map_err(DataError::read(format_args!(
            "cannot stat {}",
            src.display()
        )))?;
        if ft.is_dir() {
            copy_tree(&src, &dst, skipped)?;
        } else if ft.is_file() {
            std::fs::copy(&src, &dst).map_err(DataError::read(format_args!(
                "cannot copy {}",
                src.display()
            )))?;
        } else {
            skipped.push(src);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_files_and_folders_and_lists_links() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("from");
        std::fs::create_dir_all(from.join("a/b")).unwrap();
        std::fs::write(from.join("a/b/x.txt"), "x").unwrap();
        std::os::unix::fs::symlink("a", from.join("link")).unwrap();
        let to = dir.path().join("to");
        let mut skipped = Vec::new();
        copy_tree(&from, &to, &mut skipped).unwrap();
        assert_eq!(std::fs::read_to_string(to.join("a/b/x.txt")).unwrap(), "x");
        assert_eq!(skipped, vec![from.join("link")]);
        assert!(!to.join("link").exists());
        let e = copy_tree(&dir.path().join("nope"), &to, &mut skipped).unwrap_err();
        assert!(e.is_user() && e.render().starts_with("cannot list "), "{e}");
    }
}
