//! `format: image-folder`: class folders (or an official layout) decoded to a dataset.
//!
//! [`Runner::write_image_folder`] goes through named phases, each with a type that says
//! what it hands on: the fetched files become a [`Tree`] (archives unpacked), the tree and
//! `root` give the [`Chosen`] images (classes and splits, from a layout, lists or a scan),
//! decoding gives an [`Assembled`] dataset (splits of pixels and the images skipped), and
//! the on-corrupt rule and the `info` record come last, before the dataset is written.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Value};

use super::params::{ImageFolderSpec, OnCorrupt};
use super::tree::{Place, Tree};
use super::{listing, Fetched, Runner};
use crate::data::archive::archive_kind;
use crate::data::dataset::{write_materialised, Images, MaterialSplit};
use crate::data::imagefolder::{self, Decoded, Entry};
use crate::data::layouts;
use crate::stages::{Progress, StageError};

/// The splits of entries: name and images, in order.
type Splits = Vec<(String, Vec<Entry>)>;

/// What images make up the dataset, before anything is decoded.
struct Chosen {
    /// Class names; the class id is the index.
    classes: Vec<String>,
    /// Every split has at least one entry.
    splits: Splits,
    /// The layout's record of the rules it applied (`null` without a layout).
    layout_info: Value,
    /// Files under the class folders that a scan did not take (not images by name).
    ignored: usize,
}

/// One image that could not be decoded.
struct Skipped {
    split: String,
    file: String,
    why: String,
}

/// The decoded dataset, ready to write.
struct Assembled {
    splits: BTreeMap<String, MaterialSplit>,
    /// Images per split that decoded.
    counts: serde_json::Map<String, Value>,
    skipped: Vec<Skipped>,
}

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
    ) -> Result<Splits, StageError> {
        let ctx = self.ctx;
        let mut splits: Splits = Vec::new();
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

    /// Decodes the images `spec` names among the fetched files and writes the dataset.
    pub(super) fn write_image_folder(
        &self,
        spec: &ImageFolderSpec,
        fetched: &[Fetched],
    ) -> Result<(), StageError> {
        let tree = self.fetched_tree(fetched)?;
        let root = find_root(spec, &tree)?;
        let chosen = self.choose_images(spec, &tree, &root)?;
        let decoded = self.decode(spec, &chosen.splits)?;
        let assembled = assemble(&chosen.splits, decoded)?;
        self.apply_on_corrupt(spec, &assembled.skipped)?;
        let info = image_folder_info(spec, fetched, &chosen, &assembled);
        write_materialised(self.ctx.out, chosen.classes, assembled.splits, info)
            .map_err(|e| StageError::internal(format!("cannot write the dataset: {}", e.render())))
    }

    /// Phase 1: the fetched files as places to look paths up in, archives unpacked (each
    /// into its own folder of the work area).
    fn fetched_tree(&self, fetched: &[Fetched]) -> Result<Tree, StageError> {
        let mut places = Vec::new();
        for (i, f) in fetched.iter().enumerate() {
            let name = f.name.clone();
            if f.is_dir {
                places.push(Place::Dir {
                    name,
                    path: f.path.clone(),
                });
            } else if let Some(kind) = archive_kind(&f.name) {
                let dest = self.ctx.work.join("unpacked").join(i.to_string());
                self.unpack(f, kind, &dest)?;
                places.push(Place::Archive { name, path: dest });
            } else {
                places.push(Place::File {
                    name,
                    path: f.path.clone(),
                });
            }
        }
        Ok(Tree(places))
    }

    /// Phase 3: classes and splits, from the official layout, the lists, or a scan of
    /// the class folders; a split without images is refused here.
    fn choose_images(
        &self,
        spec: &ImageFolderSpec,
        tree: &Tree,
        root: &Path,
    ) -> Result<Chosen, StageError> {
        let chosen = if let Some(layout) = spec.layout {
            // Names inside the root first, then the fetched files (list files downloaded
            // beside an archive, as MIT Indoor's are).
            let resolve = |rel: &str| -> Option<PathBuf> {
                let inside = if rel == "." {
                    root.to_path_buf()
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
            Chosen {
                classes: data.classes,
                splits: data.splits,
                layout_info: data.info,
                ignored: 0,
            }
        } else {
            let classes = imagefolder::class_names(root)?;
            if classes.is_empty() {
                return Err(StageError::user(format!(
                    "image_folder.root: `{}` has no class folders",
                    spec.root
                )));
            }
            let mut ignored = 0;
            let splits = self.folder_splits(spec, tree, root, &classes, &mut ignored)?;
            Chosen {
                classes,
                splits,
                layout_info: Value::Null,
                ignored,
            }
        };
        for (split, entries) in &chosen.splits {
            if entries.is_empty() {
                return Err(StageError::user(format!(
                    "image_folder: split `{split}` has no images"
                )));
            }
        }
        Ok(chosen)
    }

    /// Phase 4: every image of every split decoded (and resized) on the stage's threads,
    /// in split order, with progress.
    fn decode(
        &self,
        spec: &ImageFolderSpec,
        splits: &Splits,
    ) -> Result<Vec<Result<Decoded, String>>, StageError> {
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
        let decoded = imagefolder::decode_all(&paths, self.ctx.threads, spec.resize, &done)?;
        (self.ctx.progress)(Progress {
            pos: total,
            len: total,
            message: format!("decoded {total} images"),
        });
        Ok(decoded)
    }

    /// Phase 6: `on_corrupt: error` refuses a dataset with undecodable images; `skip`
    /// only logs them.
    fn apply_on_corrupt(
        &self,
        spec: &ImageFolderSpec,
        skipped: &[Skipped],
    ) -> Result<(), StageError> {
        if skipped.is_empty() {
            return Ok(());
        }
        let lines: Vec<String> = skipped
            .iter()
            .map(|s| format!("{} ({}): {}", s.file, s.split, s.why))
            .collect();
        match spec.on_corrupt {
            OnCorrupt::Error => Err(StageError::user(format!(
                "image_folder: {} image(s) could not be decoded (on_corrupt: error):{}",
                lines.len(),
                listing(&lines, 20)
            ))),
            OnCorrupt::Skip => {
                self.ctx.log(&format!(
                    "warning: skipped {} image(s) that could not be decoded:{}",
                    lines.len(),
                    listing(&lines, 50)
                ));
                Ok(())
            }
        }
    }
}

/// Phase 2: the folder `image_folder.root` names among the fetched files.
fn find_root(spec: &ImageFolderSpec, tree: &Tree) -> Result<PathBuf, StageError> {
    tree.resolve(&spec.root)
        .filter(|p| p.is_dir())
        .ok_or_else(|| {
            StageError::user(format!(
                "image_folder.root: no directory `{}` in the fetched files ({})",
                spec.root,
                tree.describe()
            ))
        })
}

/// Phase 5: the decoded pixels and labels per split, the undecodable images set aside; a
/// split none of whose images decode is refused.
fn assemble(
    splits: &Splits,
    decoded: Vec<Result<Decoded, String>>,
) -> Result<Assembled, StageError> {
    let mut decoded = decoded.into_iter();
    let mut done = Assembled {
        splits: BTreeMap::new(),
        counts: serde_json::Map::new(),
        skipped: Vec::new(),
    };
    for (split, entries) in splits {
        let mut images = Vec::with_capacity(entries.len());
        let mut labels = Vec::with_capacity(entries.len());
        for (entry, result) in entries.iter().zip(&mut decoded) {
            match result {
                Ok(img) => {
                    images.push(img);
                    labels.push(entry.label as i64);
                }
                Err(why) => done.skipped.push(Skipped {
                    split: split.clone(),
                    file: entry.rel.clone(),
                    why,
                }),
            }
        }
        if images.is_empty() {
            return Err(StageError::user(format!(
                "image_folder: none of the {} images of split `{split}` could be decoded",
                entries.len()
            )));
        }
        done.counts.insert(split.clone(), json!(labels.len()));
        done.splits.insert(
            split.clone(),
            MaterialSplit {
                images: Images::from_list(images),
                labels,
            },
        );
    }
    Ok(done)
}

/// Phase 7: the `info` record of `dataset.json`: where the images came from and which
/// rules made the splits and labels.
fn image_folder_info(
    spec: &ImageFolderSpec,
    fetched: &[Fetched],
    chosen: &Chosen,
    assembled: &Assembled,
) -> serde_json::Map<String, Value> {
    let mut info = serde_json::Map::new();
    info.insert("source".into(), json!("download"));
    info.insert("format".into(), json!("image-folder"));
    info.insert("files".into(), Runner::files_info(fetched));
    info.insert(
        "image_folder".into(),
        json!({
            "root": spec.root,
            "layout": spec.layout.map(|l| l.name()),
            "layout_info": chosen.layout_info,
            "class_ids": if spec.layout.is_some() { "as the layout defines them (see layout_info)" } else { "class id = position of the class folder name in byte-wise sorted order" },
            "resize": spec.resize.map(|r| format!("shorter side {r} px, aspect kept (antialiased bilinear), at decoding")),
            "lists": match (&spec.train_list, &spec.test_list) {
                (Some(tr), Some(te)) => json!({"train": tr, "test": te}),
                _ => Value::Null,
            },
            "pixels": "RGB u8 [H, W, 3]; grey images repeated over 3 channels, alpha dropped",
            "counts": assembled.counts,
            "ignored_files": chosen.ignored,
            "skipped": assembled.skipped.iter().map(|s| json!({"split": s.split, "file": s.file, "error": s.why})).collect::<Vec<_>>(),
        }),
    );
    info
}
