//! The canonical dataset artifact.
//!
//! A *materialised* dataset (what `download` writes) holds the pixels:
//! - `dataset.json`   — [`DatasetMeta`]: class names, splits, image shape, `base: null`
//! - `images.safetensors` — per split `<split>.images` u8 `[N, H, W, C]` when every image
//!   has one shape, else `<split>.pixels` (flat u8), `<split>.shapes` i64 `[N, 3]` and
//!   `<split>.offsets` i64 `[N]`
//! - `labels.safetensors` — per split `<split>.labels` i64 `[N]`
//!
//! A *view* (what `split` and `noise` write) holds labels and indices only, and names its
//! materialised base by artifact digest, so a 4 GB image set is never copied per noise rate:
//! - `dataset.json` with `base: "<digest>"` and per split the base split it indexes
//! - `labels.safetensors` — `<split>.index` i64 (rows of the base split), `<split>.labels`,
//!   and optionally `<split>.clean_labels` (the labels before noise)
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::data::error::DataError;
use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};

pub const FORMAT: &str = "rst-dataset";
pub const FORMAT_VERSION: u32 = 1;
pub const META_FILE: &str = "dataset.json";
pub const IMAGES_FILE: &str = "images.safetensors";
pub const LABELS_FILE: &str = "labels.safetensors";

fn invalid(path: &Path, message: impl Into<String>) -> DataError {
    DataError::Artifact {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn tensors_err(path: &Path) -> impl FnOnce(safetensors::SafeTensorError) -> DataError + '_ {
    move |source| DataError::Tensors {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitMeta {
    pub n: usize,
    /// For a view: the split of the base dataset that `index` points into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetMeta {
    pub format: String,
    pub version: u32,
    pub classes: Vec<String>,
    /// Artifact digest of the materialised dataset that holds the pixels; None: this one.
    pub base: Option<String>,
    /// `[H, W, C]` when all images share one shape.
    pub image_shape: Option<[usize; 3]>,
    pub splits: BTreeMap<String, SplitMeta>,
    /// Stage-specific facts (noise rate and realised flip rate, split rule, source files).
    #[serde(default)]
    pub info: serde_json::Map<String, serde_json::Value>,
}

/// Pixels of one split.
#[derive(Debug, Clone, PartialEq)]
pub enum Images {
    Fixed {
        shape: [usize; 3],
        data: Vec<u8>,
    },
    Variable {
        shapes: Vec<[usize; 3]>,
        offsets: Vec<usize>,
        data: Vec<u8>,
    },
}

impl Images {
    pub fn len(&self) -> usize {
        match self {
            Images::Fixed { shape, data } => data.len() / shape.iter().product::<usize>().max(1),
            Images::Variable { shapes, .. } => shapes.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Shape `[H, W, C]` and bytes of image `i`.
    pub fn get(&self, i: usize) -> ([usize; 3], &[u8]) {
        match self {
            Images::Fixed { shape, data } => {
                let size = shape.iter().product::<usize>();
                (*shape, &data[i * size..(i + 1) * size])
            }
            Images::Variable {
                shapes,
                offsets,
                data,
            } => {
                let size = shapes[i].iter().product::<usize>();
                (shapes[i], &data[offsets[i]..offsets[i] + size])
            }
        }
    }

    /// The images at `rows`, in that order (rows must be in range).
    pub fn select(&self, rows: &[usize]) -> Images {
        match self {
            Images::Fixed { shape, data } => {
                let size = shape.iter().product::<usize>();
                let mut out = Vec::with_capacity(rows.len() * size);
                for &r in rows {
                    out.extend_from_slice(&data[r * size..(r + 1) * size]);
                }
                Images::Fixed {
                    shape: *shape,
                    data: out,
                }
            }
            Images::Variable { .. } => Images::from_list(
                rows.iter()
                    .map(|&r| {
                        let (s, b) = self.get(r);
                        (s, b.to_vec())
                    })
                    .collect(),
            ),
        }
    }

    /// The common shape `[H, W, C]`, when every image has it.
    pub fn fixed_shape(&self) -> Option<[usize; 3]> {
        match self {
            Images::Fixed { shape, .. } => Some(*shape),
            Images::Variable { shapes, .. } => {
                let first = shapes.first()?;
                shapes.iter().all(|s| s == first).then_some(*first)
            }
        }
    }

    /// Channels per pixel (the last axis; 0 for no images).
    pub fn channels(&self) -> usize {
        match self {
            Images::Fixed { shape, .. } => shape[2],
            Images::Variable { shapes, .. } => shapes.first().map_or(0, |s| s[2]),
        }
    }

    /// All pixel bytes, image after image.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Images::Fixed { data, .. } | Images::Variable { data, .. } => data,
        }
    }

    /// Builds the storage form from a list of decoded images (shape, bytes).
    pub fn from_list(images: Vec<([usize; 3], Vec<u8>)>) -> Images {
        let fixed = images.first().map(|f| f.0);
        if let Some(shape) = fixed.filter(|s| images.iter().all(|(t, _)| t == s)) {
            let mut data = Vec::with_capacity(images.len() * shape.iter().product::<usize>());
            for (_, bytes) in images {
                data.extend_from_slice(&bytes);
            }
            return Images::Fixed { shape, data };
        }
        let mut shapes = Vec::with_capacity(images.len());
        let mut offsets = Vec::with_capacity(images.len());
        let mut data = Vec::new();
        for (shape, bytes) in images {
            offsets.push(data.len());
            shapes.push(shape);
            data.extend_from_slice(&bytes);
        }
        Images::Variable {
            shapes,
            offsets,
            data,
        }
    }
}

/// Labels (and for views, indices into the base) of one split.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LabelSplit {
    pub index: Option<Vec<i64>>,
    pub labels: Vec<i64>,
    pub clean_labels: Option<Vec<i64>>,
}

/// One split of a materialised dataset, as `download` produces it.
pub struct MaterialSplit {
    pub images: Images,
    pub labels: Vec<i64>,
}

fn i64_bytes(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn write_meta(out: &Path, meta: &DatasetMeta) -> Result<(), DataError> {
    let path = out.join(META_FILE);
    let text = serde_json::to_string_pretty(meta).expect("meta serialises");
    std::fs::write(&path, text + "\n").map_err(DataError::write(path.display()))
}

fn write_tensors(
    path: &Path,
    tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>,
) -> Result<(), DataError> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, dtype, shape, data)| {
            let view = TensorView::new(*dtype, shape.clone(), data)
                .map_err(|e| invalid(path, format!("tensor {name}: {e}")))?;
            Ok((name.clone(), view))
        })
        .collect::<Result<_, DataError>>()?;
    safetensors::serialize_to_file(views, None, path).map_err(tensors_err(path))
}

fn label_tensors(
    splits: &BTreeMap<String, LabelSplit>,
) -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
    let mut t = Vec::new();
    for (name, s) in splits {
        t.push((
            format!("{name}.labels"),
            Dtype::I64,
            vec![s.labels.len()],
            i64_bytes(&s.labels),
        ));
        if let Some(index) = &s.index {
            t.push((
                format!("{name}.index"),
                Dtype::I64,
                vec![index.len()],
                i64_bytes(index),
            ));
        }
        if let Some(clean) = &s.clean_labels {
            t.push((
                format!("{name}.clean_labels"),
                Dtype::I64,
                vec![clean.len()],
                i64_bytes(clean),
            ));
        }
    }
    t
}

/// Writes a materialised dataset into `out`.
pub fn write_materialised(
    out: &Path,
    classes: Vec<String>,
    splits: BTreeMap<String, MaterialSplit>,
    info: serde_json::Map<String, serde_json::Value>,
) -> Result<(), DataError> {
    let mut shapes = splits.values().map(|s| match &s.images {
        Images::Fixed { shape, .. } => Some(*shape),
        Images::Variable { .. } => None,
    });
    let first = shapes.next().flatten();
    let image_shape = if shapes.all(|s| s == first) {
        first
    } else {
        None
    };
    let mut image_tensors = Vec::new();
    let mut labels = BTreeMap::new();
    for (name, split) in &splits {
        if split.images.len() != split.labels.len() {
            return Err(invalid(
                out,
                format!(
                    "split {name}: {} images but {} labels",
                    split.images.len(),
                    split.labels.len()
                ),
            ));
        }
        match &split.images {
            Images::Fixed { shape, data } => {
                image_tensors.push((
                    format!("{name}.images"),
                    Dtype::U8,
                    vec![split.labels.len(), shape[0], shape[1], shape[2]],
                    data.clone(),
                ));
            }
            Images::Variable {
                shapes,
                offsets,
                data,
            } => {
                let flat: Vec<i64> = shapes
                    .iter()
                    .flat_map(|s| s.iter().map(|&d| d as i64))
                    .collect();
                let offs: Vec<i64> = offsets.iter().map(|&o| o as i64).collect();
                image_tensors.push((
                    format!("{name}.pixels"),
                    Dtype::U8,
                    vec![data.len()],
                    data.clone(),
                ));
                image_tensors.push((
                    format!("{name}.shapes"),
                    Dtype::I64,
                    vec![shapes.len(), 3],
                    i64_bytes(&flat),
                ));
                image_tensors.push((
                    format!("{name}.offsets"),
                    Dtype::I64,
                    vec![offs.len()],
                    i64_bytes(&offs),
                ));
            }
        }
        labels.insert(
            name.clone(),
            LabelSplit {
                index: None,
                labels: split.labels.clone(),
                clean_labels: None,
            },
        );
    }
    write_tensors(&out.join(IMAGES_FILE), image_tensors)?;
    write_tensors(&out.join(LABELS_FILE), label_tensors(&labels))?;
    let meta = DatasetMeta {
        format: FORMAT.into(),
        version: FORMAT_VERSION,
        classes,
        base: None,
        image_shape,
        splits: splits
            .iter()
            .map(|(k, s)| {
                (
                    k.clone(),
                    SplitMeta {
                        n: s.labels.len(),
                        source: None,
                    },
                )
            })
            .collect(),
        info,
    };
    write_meta(out, &meta)
}

/// Writes a view over the materialised dataset `base` (an artifact digest) into `out`.
/// Every split must carry `index`; `sources` names the base split each indexes.
pub fn write_view(
    out: &Path,
    base: &str,
    image_shape: Option<[usize; 3]>,
    classes: Vec<String>,
    splits: BTreeMap<String, (String, LabelSplit)>,
    info: serde_json::Map<String, serde_json::Value>,
) -> Result<(), DataError> {
    let mut meta_splits = BTreeMap::new();
    let mut labels = BTreeMap::new();
    for (name, (source, split)) in splits {
        let index = split
            .index
            .as_ref()
            .ok_or_else(|| invalid(out, format!("view split {name} has no index")))?;
        if index.len() != split.labels.len() {
            return Err(invalid(
                out,
                format!("split {name}: index and labels differ in length"),
            ));
        }
        meta_splits.insert(
            name.clone(),
            SplitMeta {
                n: split.labels.len(),
                source: Some(source),
            },
        );
        labels.insert(name, split);
    }
    write_tensors(&out.join(LABELS_FILE), label_tensors(&labels))?;
    let meta = DatasetMeta {
        format: FORMAT.into(),
        version: FORMAT_VERSION,
        classes,
        base: Some(base.to_string()),
        image_shape,
        splits: meta_splits,
        info,
    };
    write_meta(out, &meta)
}

/// A dataset artifact opened for reading (materialised or view).
#[derive(Debug, Clone)]
pub struct Dataset {
    pub dir: PathBuf,
    /// This artifact's own digest.
    pub digest: String,
    pub meta: DatasetMeta,
    pub splits: BTreeMap<String, LabelSplit>,
}

fn read_i64(
    path: &Path,
    st: &safetensors::SafeTensors<'_>,
    name: &str,
) -> Result<Option<Vec<i64>>, DataError> {
    match st.tensor(name) {
        Ok(t) => {
            if t.dtype() != Dtype::I64 {
                return Err(invalid(
                    path,
                    format!("tensor {name} is {:?}, expected I64", t.dtype()),
                ));
            }
            Ok(Some(
                t.data()
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            ))
        }
        Err(safetensors::SafeTensorError::TensorNotFound(_)) => Ok(None),
        Err(e) => Err(tensors_err(path)(e)),
    }
}

impl Dataset {
    /// Opens the dataset artifact at `dir` whose digest is `digest`.
    pub fn open(dir: &Path, digest: &str) -> Result<Dataset, DataError> {
        let meta_path = dir.join(META_FILE);
        let text =
            std::fs::read_to_string(&meta_path).map_err(DataError::read(meta_path.display()))?;
        let meta: DatasetMeta = serde_json::from_str(&text).map_err(|source| DataError::Meta {
            path: meta_path.clone(),
            source,
        })?;
        if meta.format != FORMAT || meta.version != FORMAT_VERSION {
            return Err(invalid(
                &meta_path,
                format!(
                    "unsupported dataset format {} v{}",
                    meta.format, meta.version
                ),
            ));
        }
        let labels_path = dir.join(LABELS_FILE);
        let bytes = std::fs::read(&labels_path).map_err(DataError::read(labels_path.display()))?;
        let st =
            safetensors::SafeTensors::deserialize(&bytes).map_err(tensors_err(&labels_path))?;
        let mut splits = BTreeMap::new();
        for (name, sm) in &meta.splits {
            let labels = read_i64(&labels_path, &st, &format!("{name}.labels"))?
                .ok_or_else(|| invalid(&labels_path, format!("missing {name}.labels")))?;
            if labels.len() != sm.n {
                return Err(invalid(
                    &labels_path,
                    format!(
                        "{name}.labels has {} entries, dataset.json says {}",
                        labels.len(),
                        sm.n
                    ),
                ));
            }
            let index = read_i64(&labels_path, &st, &format!("{name}.index"))?;
            let clean_labels = read_i64(&labels_path, &st, &format!("{name}.clean_labels"))?;
            splits.insert(
                name.clone(),
                LabelSplit {
                    index,
                    labels,
                    clean_labels,
                },
            );
        }
        Ok(Dataset {
            dir: dir.to_path_buf(),
            digest: digest.to_string(),
            meta,
            splits,
        })
    }

    pub fn num_classes(&self) -> usize {
        self.meta.classes.len()
    }

    /// The digest of the materialised dataset that holds the pixels.
    pub fn base_digest(&self) -> &str {
        self.meta.base.as_deref().unwrap_or(&self.digest)
    }

    /// The split of the base dataset that `split` of this one reads, and the row of each of
    /// its samples in it.
    pub fn base_rows(&self, split: &str) -> Option<(String, Vec<i64>)> {
        let s = self.splits.get(split)?;
        let meta = self.meta.splits.get(split)?;
        match (&s.index, &meta.source) {
            (Some(index), Some(source)) => Some((source.clone(), index.clone())),
            _ => Some((split.to_string(), (0..s.labels.len() as i64).collect())),
        }
    }
}

/// Loads the pixels of `split` from a materialised dataset directory.
pub fn load_images(dir: &Path, split: &str) -> Result<Images, DataError> {
    let path = dir.join(IMAGES_FILE);
    let bytes = std::fs::read(&path).map_err(DataError::read(path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(tensors_err(&path))?;
    if let Ok(t) = st.tensor(&format!("{split}.images")) {
        let s = t.shape();
        if s.len() != 4 {
            return Err(invalid(
                &path,
                format!("{split}.images has rank {}", s.len()),
            ));
        }
        return Ok(Images::Fixed {
            shape: [s[1], s[2], s[3]],
            data: t.data().to_vec(),
        });
    }
    let pixels = st
        .tensor(&format!("{split}.pixels"))
        .map_err(|_| invalid(&path, format!("no images for split {split}")))?;
    let shapes = read_i64(&path, &st, &format!("{split}.shapes"))?
        .ok_or_else(|| invalid(&path, format!("missing {split}.shapes")))?;
    let offsets = read_i64(&path, &st, &format!("{split}.offsets"))?
        .ok_or_else(|| invalid(&path, format!("missing {split}.offsets")))?;
    Ok(Images::Variable {
        shapes: shapes
            .chunks_exact(3)
            .map(|c| [c[0] as usize, c[1] as usize, c[2] as usize])
            .collect(),
        offsets: offsets.iter().map(|&o| o as usize).collect(),
        data: pixels.data().to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn materialised_and_view_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base");
        std::fs::create_dir(&base).unwrap();
        let mut splits = BTreeMap::new();
        splits.insert(
            "train".to_string(),
            MaterialSplit {
                images: Images::from_list(vec![
                    ([2, 2, 1], vec![1, 2, 3, 4]),
                    ([2, 2, 1], vec![5, 6, 7, 8]),
                ]),
                labels: vec![0, 1],
            },
        );
        splits.insert(
            "test".to_string(),
            MaterialSplit {
                images: Images::from_list(vec![([1, 2, 1], vec![9, 9]), ([2, 1, 1], vec![7, 7])]),
                labels: vec![1, 0],
            },
        );
        write_materialised(
            &base,
            vec!["a".into(), "b".into()],
            splits,
            Default::default(),
        )
        .unwrap();
        let ds = Dataset::open(&base, "d0").unwrap();
        assert_eq!(ds.meta.image_shape, None, "splits differ in shape");
        assert_eq!(ds.splits["train"].labels, vec![0, 1]);
        assert_eq!(load_images(&base, "train").unwrap().get(1).1, &[5, 6, 7, 8]);
        assert_eq!(
            load_images(&base, "test").unwrap().get(1),
            ([2, 1, 1], &[7u8, 7][..])
        );

        let view_dir = dir.path().join("view");
        std::fs::create_dir(&view_dir).unwrap();
        let mut vs = BTreeMap::new();
        vs.insert(
            "train".to_string(),
            (
                "train".to_string(),
                LabelSplit {
                    index: Some(vec![1]),
                    labels: vec![0],
                    clean_labels: Some(vec![1]),
                },
            ),
        );
        write_view(
            &view_dir,
            "d0",
            None,
            vec!["a".into(), "b".into()],
            vs,
            Default::default(),
        )
        .unwrap();
        let view = Dataset::open(&view_dir, "d1").unwrap();
        assert_eq!(view.base_digest(), "d0");
        assert_eq!(
            view.base_rows("train"),
            Some(("train".to_string(), vec![1]))
        );
        assert_eq!(view.splits["train"].clean_labels, Some(vec![1]));
    }
}
