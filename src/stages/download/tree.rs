//! Looking up the relative paths of `image_folder` in the fetched files.
use std::path::{Path, PathBuf};

/// Where relative paths of `image_folder` are looked up (see the module docs).
pub(super) enum Place {
    File { name: String, path: PathBuf },
    Dir { name: String, path: PathBuf },
    Archive { name: String, path: PathBuf },
}

pub(super) struct Tree(pub(super) Vec<Place>);

impl Tree {
    pub(super) fn resolve(&self, rel: &str) -> Option<PathBuf> {
        let inside = |base: &Path, rel: &str| -> Option<PathBuf> {
            let p = if rel == "." {
                base.to_path_buf()
            } else {
                base.join(rel)
            };
            p.exists().then_some(p)
        };
        for place in &self.0 {
            let found = match place {
                Place::File { name, path } => (rel == name).then(|| path.clone()),
                Place::Dir { name, path } => {
                    let named = if rel == name {
                        Some(".")
                    } else {
                        rel.strip_prefix(name.as_str())
                            .and_then(|r| r.strip_prefix('/'))
                    };
                    named
                        .and_then(|r| inside(path, r))
                        .or_else(|| inside(path, rel))
                }
                Place::Archive { path, .. } => inside(path, rel),
            };
            if found.is_some() {
                return found;
            }
        }
        None
    }

    pub(super) fn describe(&self) -> String {
        self.0
            .iter()
            .map(|p| match p {
                Place::File { name, .. } => format!("file {name}"),
                Place::Dir { name, path } => format!("directory {name} ({})", path.display()),
                Place::Archive { name, .. } => format!("unpacked archive {name}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}
