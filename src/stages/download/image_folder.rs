//! `format: image-folder`: class folders (or an official layout) decoded to a dataset.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Value};

use super::params::{ImageFolderSpec, OnCorrupt};
use super::tree::{Place, Tree};
use super::{listing, Fetched, Runner};
use crate::data::archive::archive_kind;
use crate::data::dataset::{write_materialised, Images, MaterialSplit};
use crate::data::{imagefolder, layouts};
use crate::stages::{Progress, StageError};

impl Runner<'_, '_> {
    /// The splits of a folder of class folders: from `train_list`/`test_list`, or one
    /// split `all` of every image found.
    pub(super) fn folder_splits(
        &self,
        spec: &ImageFolderSpec,
        tree: &Tree,
        root: &Path,
        classes: &[String],
        ignored: &mut usize,
    ) -> Result<Vec<(String, Vec<imagefolder::Entry>)>, StageError> {
        let ctx = self.ctx;
        let mut splits: Vec<(String, Vec<imagefolder::Entry>)> = Vec::new();
        match (&spec.train_list, &spec.test_list) {
            (Some(train), Some(test)) => {
                for (split, key, list) in
                    [("train", "train_list", train), ("test", "test_list", test)]
                {
                    let path = tree.resolve(list).filter(|p| p.is_file()).ok_or_else(|| {
                        StageError::user(format!(
                            "image_folder.{key}: no file `{list}` in the fetched files ({})",
                            tree.describe()
                        ))
                    })?;
                    splits.push((
                        split.to_string(),
                        imagefolder::read_list(&path, list, root, classes)?,
                    ));
                }
                let train: BTreeSet<&str> = splits[0].1.iter().map(|e| e.rel.as_str()).collect();
                let both: Vec<String> = splits[1]
                    .1
                    .iter()
                    .filter(|e| train.contains(e.rel.as_str()))
                    .map(|e| e.rel.clone())
                    .collect();
                if !both.is_empty() {
                    ctx.log(&format!(
                        "warning: {} image(s) are in both train_list and test_list:{}",
                        both.len(),
                        listing(&both, 10)
                    ));
                }
            }
            _ => {
                let (entries, report) = imagefolder::scan(root, classes)?;
                *ignored = report.ignored.len();
                if *ignored > 0 {
                    ctx.log(&format!(
                        "{} file(s) without a .jpg/.jpeg/.png extension under the class folders were ignored:{}",
                        *ignored,
                        listing(&report.ignored, 5)
                    ));
                }
                splits.push(("all".to_string(), entries));
            }
        }
        Ok(splits)
    }

    pub(super) fn write_image_folder(
        &self,
        spec: &ImageFolderSpec,
        fetched: &[Fetched],
    ) -> Result<(), StageError> {
        let ctx = self.ctx;
        let mut places = Vec::new();
        for (i, f) in fetched.iter().enumerate() {
            let name = f.name.clone();
            if f.is_dir {
                places.push(Place::Dir {
                    name,
                    path: f.path.clone(),
                });
            } else if let Some(kind) = archive_kind(&f.name) {
                let dest = ctx.work.join("unpacked").join(i.to_string());
                self.unpack(f, kind, &dest)?;
                places.push(Place::Archive { name, path: dest });
            } else {
                places.push(Place::File {
                    name,
                    path: f.path.clone(),
                });
            }
        }
        let tree = Tree(places);
        let root = tree
            .resolve(&spec.root)
            .filter(|p| p.is_dir())
            .ok_or_else(|| {
                StageError::user(format!(
                    "image_folder.root: no directory `{}` in the fetched files ({})",
                    spec.root,
                    tree.describe()
                ))
            })?;
        let mut layout_info = Value::Null;
        let mut ignored = 0;
        let (classes, splits) = if let Some(layout) = spec.layout {
            // Names inside the root first, then the fetched files (list files downloaded
            // beside an archive, as MIT Indoor's are).
            let resolve = |rel: &str| -> Option<PathBuf> {
                let inside = if rel == "." {
                    root.clone()
                } else {
                    root.join(rel)
                };
                if inside.exists() {
                    Some(inside)
                } else {
                    tree.resolve(rel)
                }
            };
            let data = layouts::read(layout, &resolve)?;
            layout_info = data.info;
            (data.classes, data.splits)
        } else {
            let classes = imagefolder::class_names(&root)?;
            if classes.is_empty() {
                return Err(StageError::user(format!(
                    "image_folder.root: `{}` has no class folders",
                    spec.root
                )));
            }
            let splits = self.folder_splits(spec, &tree, &root, &classes, &mut ignored)?;
            (classes, splits)
        };
        for (split, entries) in &splits {
            if entries.is_empty() {
                return Err(StageError::user(format!(
                    "image_folder: split `{split}` has no images"
                )));
            }
        }

        let paths: Vec<&Path> = splits
            .iter()
            .flat_map(|(_, es)| es.iter().map(|e| e.path.as_path()))
            .collect();
        let total = paths.len() as u64;
        let decoded_count = AtomicU64::new(0);
        let done = || {
            let n = decoded_count.fetch_add(1, Ordering::Relaxed) + 1;
            self.progress(n, total, || format!("decoding images {n}/{total}"));
        };
        let decoded = imagefolder::decode_all(&paths, ctx.threads, spec.resize, &done)?;
        (ctx.progress)(Progress {
            pos: total,
            len: total,
            message: format!("decoded {total} images"),
        });
        drop(paths);

        let mut decoded = decoded.into_iter();
        let mut skipped: Vec<(String, String, String)> = Vec::new();
        let mut out = BTreeMap::new();
        let mut counts = serde_json::Map::new();
        for (split, entries) in &splits {
            let mut images = Vec::with_capacity(entries.len());
            let mut labels = Vec::with_capacity(entries.len());
            for (entry, result) in entries.iter().zip(&mut decoded) {
                match result {
                    Ok(img) => {
                        images.push(img);
                        labels.push(entry.label as i64);
                    }
                    Err(why) => skipped.push((split.clone(), entry.rel.clone(), why)),
                }
            }
            if images.is_empty() {
                return Err(StageError::user(format!(
                    "image_folder: none of the {} images of split `{split}` could be decoded",
                    entries.len()
                )));
            }
            counts.insert(split.clone(), json!(labels.len()));
            out.insert(
                split.clone(),
                MaterialSplit {
                    images: Images::from_list(images),
                    labels,
                },
            );
        }
        if !skipped.is_empty() {
            let lines: Vec<String> = skipped
                .iter()
                .map(|(s, f, why)| format!("{f} ({s}): {why}"))
                .collect();
            match spec.on_corrupt {
                OnCorrupt::Error => {
                    return Err(StageError::user(format!(
                        "image_folder: {} image(s) could not be decoded (on_corrupt: error):{}",
                        lines.len(),
                        listing(&lines, 20)
                    )))
                }
                OnCorrupt::Skip => ctx.log(&format!(
                    "warning: skipped {} image(s) that could not be decoded:{}",
                    lines.len(),
                    listing(&lines, 50)
                )),
            }
        }

        let mut info = serde_json::Map::new();
        info.insert("source".into(), json!("download"));
        info.insert("format".into(), json!("image-folder"));
        info.insert("files".into(), Self::files_info(fetched));
        info.insert(
            "image_folder".into(),
            json!({
                "root": spec.root,
                "layout": spec.layout.map(|l| l.name()),
                "layout_info": layout_info,
                "class_ids": if spec.layout.is_some() { "as the layout defines them (see layout_info)" } else { "class id = position of the class folder name in byte-wise sorted order" },
                "resize": spec.resize.map(|r| format!("shorter side {r} px, aspect kept (antialiased bilinear), at decoding")),
                "lists": match (&spec.train_list, &spec.test_list) {
                    (Some(tr), Some(te)) => json!({"train": tr, "test": te}),
                    _ => Value::Null,
                },
                "pixels": "RGB u8 [H, W, 3]; grey images repeated over 3 channels, alpha dropped",
                "counts": counts,
                "ignored_files": ignored,
                "skipped": skipped.iter().map(|(s, f, why)| json!({"split": s, "file": f, "error": why})).collect::<Vec<_>>(),
            }),
        );
        write_materialised(ctx.out, classes, out, info)
            .map_err(|e| StageError::internal(format!("cannot write the dataset: {e}")))
    }
}
