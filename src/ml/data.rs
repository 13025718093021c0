//! A dataset input's split as tensors, its normalisation, and the small-image augmentation.
//!
//! Images are decoded once (the dataset artifact already holds raw u8 pixels `[N, H, W, C]`)
//! and kept as one normalised float tensor `[N, C, H, W]` on the training device; a batch is
//! an `index_select` on it. Normalisation is per channel, `(x/255 − mean)/std`, with the
//! population mean/std of the training split computed exactly (integer sums), or inherited
//! from the upstream model a run starts from.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use rst::data::dataset::{self, Dataset, Images};
use rst::prng::Prng;
use rst::stages::{StageCtx, StageError};

/// Per-channel mean and std of pixel values scaled to [0, 1].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalisation {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

/// One split's raw pixels and labels.
#[derive(Debug, Clone)]
pub struct RawSplit {
    /// The split's images (HWC u8), in the split's order.
    pub images: Images,
    /// The labels as the dataset gives them (noisy for a noise view's train split).
    pub labels: Vec<i64>,
    /// The labels before noise, when the dataset records them.
    pub clean: Option<Vec<i64>>,
}

impl RawSplit {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The labels to score against: the clean ones when known.
    pub fn truth(&self) -> &[i64] {
        self.clean.as_deref().unwrap_or(&self.labels)
    }
}

/// The directory holding the pixels of `ds` (input `name`): the input itself when it is
/// materialised, else its base resolved in the cache.
pub fn base_dir(ctx: &StageCtx<'_>, name: &str, ds: &Dataset) -> Result<PathBuf, StageError> {
    if ds.meta.base.is_none() {
        return Ok(ds.dir.clone());
    }
    (ctx.resolve)(ds.base_digest()).ok_or_else(|| {
        StageError::user(format!(
            "input `{name}`: its images (artifact {}) are not in the cache; rerun the pipeline \
             that produced it",
            ds.base_digest()
        ))
    })
}

/// Loads `split` of the dataset `ds` (input `name`, pixels in `base`).
pub fn load_split(
    name: &str,
    ds: &Dataset,
    base: &std::path::Path,
    split: &str,
) -> Result<RawSplit, StageError> {
    let labels = ds.splits.get(split).ok_or_else(|| {
        StageError::user(format!(
            "input `{name}` has no split `{split}` (it has: {})",
            ds.splits.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    })?;
    let (source, rows) = ds.base_rows(split).expect("split exists");
    let images = dataset::load_images(base, &source)
        .map_err(|e| StageError::user(format!("input `{name}`: {}", e.render())))?;
    if let (Some(shape), Some(found)) = (ds.meta.image_shape, images.fixed_shape()) {
        if shape != found {
            return Err(StageError::user(format!(
                "input `{name}`: split `{source}` has images of shape {found:?}, dataset.json \
                 says {shape:?}"
            )));
        }
    }
    let n_base = images.len();
    let mut picked = Vec::with_capacity(rows.len());
    for &r in &rows {
        let r = usize::try_from(r)
            .ok()
            .filter(|&r| r < n_base)
            .ok_or_else(|| {
                StageError::user(format!(
                    "input `{name}`: split `{split}` indexes row {r} of `{source}`, which has \
                 {n_base} images"
                ))
            })?;
        picked.push(r);
    }
    let images = if picked.len() == n_base && picked.iter().enumerate().all(|(i, &r)| i == r) {
        images
    } else {
        images.select(&picked)
    };
    let k = ds.num_classes() as i64;
    for l in labels
        .labels
        .iter()
        .chain(labels.clean_labels.iter().flatten())
    {
        if !(0..k).contains(l) {
            return Err(StageError::user(format!(
                "input `{name}`: split `{split}` has label {l}, outside the {k} classes"
            )));
        }
    }
    Ok(RawSplit {
        images,
        labels: labels.labels.clone(),
        clean: labels.clean_labels.clone(),
    })
}

/// The population mean and std per channel of `raw`'s pixels / 255, from exact integer
/// sums (independent of threads and order). A constant channel gets std 1.
pub fn compute_normalisation(raw: &RawSplit) -> Normalisation {
    let c = raw.images.channels();
    let mut sum = vec![0u128; c];
    let mut sumsq = vec![0u128; c];
    let pixels = raw.images.bytes();
    for px in pixels.chunks_exact(c.max(1)) {
        for (ch, &v) in px.iter().enumerate() {
            sum[ch] += v as u128;
            sumsq[ch] += (v as u128) * (v as u128);
        }
    }
    let count = (pixels.len() / c.max(1)).max(1) as f64;
    let mut mean = Vec::with_capacity(c);
    let mut std = Vec::with_capacity(c);
    for ch in 0..c {
        let m = sum[ch] as f64 / count;
        let var = (sumsq[ch] as f64 / count - m * m).max(0.0);
        mean.push(m / 255.0);
        let s = var.sqrt() / 255.0;
        std.push(if s > 1e-12 { s } else { 1.0 });
    }
    Normalisation { mean, std }
}

fn channel_tensor(v: &[f64], device: Device) -> Tensor {
    let f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
    Tensor::from_slice(&f)
        .view([1, v.len() as i64, 1, 1])
        .to_device(device)
}

/// Images of one size `[H, W, C]` (`pixels` holds N of them, HWC u8) as a normalised float
/// tensor `[N, C, H, W]` on `device`.
pub fn to_tensor(shape: [usize; 3], pixels: &[u8], norm: &Normalisation, device: Device) -> Tensor {
    let [h, w, c] = shape;
    let n = (pixels.len() / (h * w * c).max(1)) as i64;
    let x = Tensor::from_data_size(pixels, &[n, h as i64, w as i64, c as i64], Kind::Uint8)
        .to_device(device)
        .permute([0, 3, 1, 2])
        .to_kind(Kind::Float)
        / 255.0;
    let mean = channel_tensor(&norm.mean, device);
    let std = channel_tensor(&norm.std, device);
    ((x - mean) / std).contiguous()
}

/// A split ready for eval-mode batches.
pub enum EvalSet {
    /// Normalised floats `[N, C, H, W]` on the device.
    Float(Tensor),
    /// u8 `[N, H, W, 3]` on the device, converted and normalised per batch.
    Bytes {
        x: Tensor,
        norm: super::imagenet::DeviceNorm,
    },
}

impl EvalSet {
    /// The number of images.
    pub fn count(&self) -> i64 {
        match self {
            EvalSet::Float(x) | EvalSet::Bytes { x, .. } => x.size()[0],
        }
    }

    /// Images `start..start + len`, normalised, `[len, C, H, W]`.
    pub fn batch(&self, start: i64, len: i64) -> Tensor {
        match self {
            EvalSet::Float(x) => x.narrow(0, start, len),
            EvalSet::Bytes { x, norm } => norm.apply(&x.narrow(0, start, len)),
        }
    }
}

/// `raw`'s images for evaluation: with `imagenet = Some((resize, size))` through
/// Resize + CenterCrop (any image sizes), else as they are (one size required).
pub fn eval_set(
    raw: &RawSplit,
    norm: &Normalisation,
    imagenet: Option<(usize, usize)>,
    device: Device,
) -> Result<EvalSet, StageError> {
    match imagenet {
        Some((resize, size)) => {
            let bytes = super::imagenet::eval_bytes(&raw.images, resize, size);
            Ok(EvalSet::Bytes {
                x: super::imagenet::bytes_tensor(&bytes, size).to_device(device),
                norm: super::imagenet::DeviceNorm::new(norm, device),
            })
        }
        None => {
            let shape = raw.images.fixed_shape().ok_or_else(|| {
                StageError::user(
                    "the images have different sizes: the model must be trained with \
                     `augment: {imagenet: true}` to evaluate on them",
                )
            })?;
            Ok(EvalSet::Float(to_tensor(
                shape,
                raw.images.bytes(),
                norm,
                device,
            )))
        }
    }
}

/// Random crop after zero padding and horizontal flip, applied to a normalised batch.
pub struct Augment {
    pad: usize,
    flip: bool,
    /// The normalised value of a black pixel per channel `[1, C, 1, 1]` (the padding).
    fill: Tensor,
}

impl Augment {
    pub fn new(pad: usize, flip: bool, norm: &Normalisation, device: Device) -> Augment {
        let fill: Vec<f64> = norm
            .mean
            .iter()
            .zip(&norm.std)
            .map(|(m, s)| -m / s)
            .collect();
        Augment {
            pad,
            flip,
            fill: channel_tensor(&fill, device),
        }
    }

    pub fn is_identity(&self) -> bool {
        self.pad == 0 && !self.flip
    }

    /// Augments `x` `[B, C, H, W]`: per sample (in batch order) draws the crop offsets
    /// `dy, dx ∈ [0, 2·pad]` (when pad > 0) and then a flip bit (when flip is on) from
    /// `rng`; the output pixel (i, j) is padded pixel (dy + i, dx + j′), j′ = W−1−j when
    /// flipped. One gather for the whole batch.
    pub fn apply(&self, x: &Tensor, rng: &mut Prng) -> Tensor {
        if self.is_identity() {
            return x.shallow_clone();
        }
        let size = x.size();
        let (b, c, h, w) = (size[0], size[1], size[2], size[3]);
        let p = self.pad as i64;
        let (hp, wp) = (h + 2 * p, w + 2 * p);
        let padded = if p > 0 {
            let padded = self.fill.expand([b, c, hp, wp], false).contiguous();
            padded.narrow(2, p, h).narrow(3, p, w).copy_(x);
            padded
        } else {
            x.shallow_clone()
        };
        let mut idx: Vec<i64> = Vec::with_capacity((b * h * w) as usize);
        for _ in 0..b {
            let (dy, dx) = if p > 0 {
                (
                    rng.below(2 * p as u64 + 1) as i64,
                    rng.below(2 * p as u64 + 1) as i64,
                )
            } else {
                (0, 0)
            };
            let flipped = self.flip && rng.below(2) == 1;
            for i in 0..h {
                for j in 0..w {
                    let jj = if flipped { w - 1 - j } else { j };
                    idx.push((dy + i) * wp + dx + jj);
                }
            }
        }
        let idx = Tensor::from_slice(&idx)
            .view([b, 1, h * w])
            .to_device(x.device())
            .expand([b, c, h * w], false);
        padded
            .view([b, c, hp * wp])
            .gather(2, &idx, false)
            .view([b, c, h, w])
    }
}

/// The order of the training samples in epoch `epoch` (1-based).
pub fn epoch_order(seed: u64, epoch: usize, n: usize) -> Vec<usize> {
    Prng::new(seed, &format!("shuffle/{epoch}")).permutation(n)
}

/// The augmentation generator of epoch `epoch` (1-based).
pub fn augment_rng(seed: u64, epoch: usize) -> Prng {
    Prng::new(seed, &format!("augment/epoch/{epoch}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(shape: [usize; 3], pixels: Vec<u8>) -> RawSplit {
        let n = pixels.len() / shape.iter().product::<usize>();
        RawSplit {
            images: Images::Fixed {
                shape,
                data: pixels,
            },
            labels: vec![0; n],
            clean: None,
        }
    }

    #[test]
    fn normalisation_is_exact_and_applied_per_channel() {
        // Two 1x2 RGB-ish images with 2 channels: channel 0 = {0, 255, 0, 255}, channel 1 = 51.
        let r = raw([1, 2, 2], vec![0, 51, 255, 51, 0, 51, 255, 51]);
        let n = compute_normalisation(&r);
        assert_eq!(n.mean, vec![0.5, 0.2]);
        assert_eq!(n.std[0], 0.5);
        assert_eq!(n.std[1], 1.0, "constant channel");
        let t = to_tensor([1, 2, 2], r.images.bytes(), &n, Device::Cpu);
        assert_eq!(t.size(), vec![2, 2, 1, 2]);
        let v: Vec<f32> = Vec::try_from(t.flatten(0, -1)).unwrap();
        // image 0: ch0 = [-1, 1], ch1 = [0, 0]; image 1 same.
        assert_eq!(v, vec![-1.0, 1.0, 0.0, 0.0, -1.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn augment_crops_pads_with_black_and_flips() {
        let norm = Normalisation {
            mean: vec![0.0],
            std: vec![1.0],
        };
        let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).view([1, 1, 2, 3]);
        let flip_only = Augment::new(0, true, &norm, Device::Cpu);
        let mut saw = [false, false];
        for s in 0..20 {
            let mut rng = Prng::new(s, "t");
            let y: Vec<f32> = Vec::try_from(flip_only.apply(&x, &mut rng).flatten(0, -1)).unwrap();
            if y == vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0] {
                saw[0] = true;
            } else {
                assert_eq!(y, vec![3.0, 2.0, 1.0, 6.0, 5.0, 4.0]);
                saw[1] = true;
            }
        }
        assert_eq!(saw, [true, true]);
        // Padding 1: every output is a shifted window of the zero-padded image.
        let crop = Augment::new(1, false, &norm, Device::Cpu);
        let mut shifted = false;
        for s in 0..20 {
            let mut rng = Prng::new(s, "t");
            let y: Vec<f32> = Vec::try_from(crop.apply(&x, &mut rng).flatten(0, -1)).unwrap();
            let padded = [
                [0.0, 0.0, 0.0, 0.0, 0.0],
                [0.0, 1.0, 2.0, 3.0, 0.0],
                [0.0, 4.0, 5.0, 6.0, 0.0],
                [0.0, 0.0, 0.0, 0.0, 0.0],
            ];
            let ok = (0..3).any(|dy| {
                (0..3).any(|dx| {
                    (0..2).all(|i| (0..3).all(|j| y[i * 3 + j] == padded[dy + i][dx + j]))
                })
            });
            assert!(ok, "{y:?}");
            shifted |= y != vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        }
        assert!(shifted);
        // Same generator state, same output.
        let a = crop.apply(&x, &mut Prng::new(7, "t"));
        let b = crop.apply(&x, &mut Prng::new(7, "t"));
        assert!(a.equal(&b));
    }

    #[test]
    fn epoch_order_is_seeded_per_epoch() {
        assert_eq!(epoch_order(1, 1, 50), epoch_order(1, 1, 50));
        assert_ne!(epoch_order(1, 1, 50), epoch_order(1, 2, 50));
        let mut o = epoch_order(3, 4, 50);
        o.sort();
        assert_eq!(o, (0..50).collect::<Vec<_>>());
    }
}
