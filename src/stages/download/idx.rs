//! `format: idx`: an MNIST-style pair of IDX files per split becomes a dataset.
use std::collections::BTreeMap;

use serde_json::json;

use super::params::IdxSpec;
use super::{Fetched, Runner};
use crate::data::dataset::{write_materialised, Images, MaterialSplit};
use crate::data::idx;
use crate::stages::StageError;

impl Runner<'_, '_> {
    pub(super) fn write_idx(&self, spec: &IdxSpec, fetched: &[Fetched]) -> Result<(), StageError> {
        let read = |key: &str, name: &str, ndim: usize| -> Result<idx::IdxArray, StageError> {
            let f = fetched
                .iter()
                .find(|f| f.name == name)
                .ok_or_else(|| StageError::internal(format!("idx.{key}: {name} not fetched")))?;
            if f.is_dir {
                return Err(StageError::user(format!(
                    "idx.{key}: {name} is a directory, not an IDX file"
                )));
            }
            let arr =
                idx::read_idx(&f.path).map_err(|e| e.within(format!("idx.{key} ({name})")))?;
            if arr.dims.len() != ndim {
                let want = if ndim == 3 {
                    "images [N, H, W] (magic 0x00000803)"
                } else {
                    "labels [N] (magic 0x00000801)"
                };
                return Err(StageError::user(format!(
                    "idx.{key} ({name}): expected IDX {want}, but it has {} dimensions (magic 0x000008{:02x})",
                    arr.dims.len(),
                    arr.dims.len()
                )));
            }
            Ok(arr)
        };
        let mut splits = BTreeMap::new();
        let mut max_label: Option<u8> = None;
        let sets = [
            (
                "train",
                ("train_images", &spec.train_images),
                ("train_labels", &spec.train_labels),
            ),
            (
                "test",
                ("test_images", &spec.test_images),
                ("test_labels", &spec.test_labels),
            ),
        ];
        for (n, (split, (ikey, iname), (lkey, lname))) in sets.into_iter().enumerate() {
            self.progress(n as u64, 2, || format!("reading {split} IDX files"));
            let images = read(ikey, iname, 3)?;
            let labels = read(lkey, lname, 1)?;
            let count = images.dims[0];
            if labels.dims[0] != count {
                return Err(StageError::user(format!(
                    "idx: the {split} split has {count} images ({iname}) but {} labels ({lname})",
                    labels.dims[0]
                )));
            }
            let shape = [images.dims[1], images.dims[2], 1];
            if count > 0 && (shape[0] == 0 || shape[1] == 0) {
                return Err(StageError::user(format!(
                    "idx.{ikey} ({iname}): images are {}x{} pixels",
                    shape[0], shape[1]
                )));
            }
            if let Some(classes) = &spec.classes {
                if let Some(pos) = labels
                    .data
                    .iter()
                    .position(|&l| l as usize >= classes.len())
                {
                    return Err(StageError::user(format!(
                        "idx.{lkey} ({lname}): label {} at row {pos} is out of range: `idx.classes` names {} classes",
                        labels.data[pos],
                        classes.len()
                    )));
                }
            }
            max_label = max_label.max(labels.data.iter().copied().max());
            let labels: Vec<i64> = labels.data.iter().map(|&l| l as i64).collect();
            splits.insert(
                split.to_string(),
                MaterialSplit {
                    images: Images::Fixed {
                        shape,
                        data: images.data,
                    },
                    labels,
                },
            );
        }
        let classes = match (&spec.classes, max_label) {
            (Some(c), _) => c.clone(),
            (None, Some(max)) => (0..=max as usize).map(|c| c.to_string()).collect(),
            (None, None) => return Err(StageError::user("idx: the IDX files hold no samples")),
        };
        let mut info = serde_json::Map::new();
        info.insert("source".into(), json!("download"));
        info.insert("format".into(), json!("idx"));
        info.insert("files".into(), Self::files_info(fetched));
        info.insert(
            "idx".into(),
            json!({
                "train_images": spec.train_images, "train_labels": spec.train_labels,
                "test_images": spec.test_images, "test_labels": spec.test_labels,
                "class_names": if spec.classes.is_some() { "from params" } else { "label values 0..K-1, K = max label + 1" },
            }),
        );
        write_materialised(self.ctx.out, classes, splits, info)
            .map_err(|e| StageError::internal(format!("cannot write the dataset: {}", e.render())))
    }
}
