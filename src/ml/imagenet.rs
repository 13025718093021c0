//! The ImageNet data path (`augment: {imagenet: true}`): images of any size, decoded once
//! by `download` (shorter side 256), cropped per sample on the CPU and batched.
//!
//! - Train: `RandomResizedCrop(size, scale 0.08–1, ratio 3/4–4/3)` + horizontal flip,
//!   per sample from `Prng(seed, "imagenet/<epoch>/<row>")` — the same crops whatever the
//!   batch size, thread count or order of work. Batches are assembled on a background
//!   thread (rayon inside, one batch ahead of training plus a small queue) so the device
//!   does not wait for the CPU.
//! - Eval: `Resize(resize)` + `CenterCrop(size)`, computed once per split.
//! - Batches travel as u8 NHWC (a quarter of the bytes of floats) and are converted and
//!   normalised with ImageNet's mean/std on the device.
//! - Grey (1-channel) images are repeated over three channels.
use std::borrow::Cow;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use rayon::prelude::*;
use tch::{Device, Kind, Tensor};

use super::data::Normalisation;
use rst::data::dataset::Images;
use rst::data::transform::{resize_center_crop, RandomResizedCrop};
use rst::prng::Prng;

/// torchvision's ImageNet normalisation.
pub fn normalisation() -> Normalisation {
    Normalisation {
        mean: vec![0.485, 0.456, 0.406],
        std: vec![0.229, 0.224, 0.225],
    }
}

/// Image `i` of `images` as RGB: `(h, w, bytes)`.
fn rgb(images: &Images, i: usize) -> (usize, usize, Cow<'_, [u8]>) {
    let ([h, w, c], bytes) = images.get(i);
    match c {
        3 => (h, w, Cow::Borrowed(bytes)),
        1 => (
            h,
            w,
            Cow::Owned(bytes.iter().flat_map(|&v| [v, v, v]).collect()),
        ),
        _ => {
            // RGBA or other: keep the first three channels (download stores RGB only).
            let rgb = bytes
                .chunks_exact(c)
                .flat_map(|p| [p[0], p[1 % c], p[2 % c]])
                .collect();
            (h, w, Cow::Owned(rgb))
        }
    }
}

/// The per-sample generator of the training transform.
pub fn sample_rng(seed: u64, epoch: usize, row: usize) -> Prng {
    Prng::new(seed, &format!("imagenet/{epoch}/{row}"))
}

/// The training transform of the samples `rows`, as `rows.len() × size × size × 3` bytes.
pub fn train_batch(
    images: &Images,
    rows: &[usize],
    t: &RandomResizedCrop,
    seed: u64,
    epoch: usize,
) -> Vec<u8> {
    let parts: Vec<Vec<u8>> = rows
        .par_iter()
        .map(|&r| {
            let (h, w, px) = rgb(images, r);
            t.apply(&px, h, w, &mut sample_rng(seed, epoch, r))
        })
        .collect();
    parts.concat()
}

/// The evaluation transform of every image, as `N × size × size × 3` bytes.
pub fn eval_bytes(images: &Images, resize: usize, size: usize) -> Vec<u8> {
    let parts: Vec<Vec<u8>> = (0..images.len())
        .into_par_iter()
        .map(|i| {
            let (h, w, px) = rgb(images, i);
            resize_center_crop(&px, h, w, resize, size)
        })
        .collect();
    parts.concat()
}

/// Mean and std as `[1, 3, 1, 1]` tensors on a device.
pub struct DeviceNorm {
    mean: Tensor,
    std: Tensor,
}

impl DeviceNorm {
    pub fn new(norm: &Normalisation, device: Device) -> DeviceNorm {
        let t = |v: &[f64]| {
            let f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
            Tensor::from_slice(&f)
                .view([1, v.len() as i64, 1, 1])
                .to_device(device)
        };
        DeviceNorm {
            mean: t(&norm.mean),
            std: t(&norm.std),
        }
    }

    /// u8 NHWC (any device) → normalised float NCHW.
    pub fn apply(&self, x: &Tensor) -> Tensor {
        let x = x
            .to_device(self.mean.device())
            .permute([0, 3, 1, 2])
            .to_kind(Kind::Float)
            / 255.0;
        (x - &self.mean) / &self.std
    }
}

/// `bytes` (`N × size × size × 3`) as a u8 NHWC tensor.
pub fn bytes_tensor(bytes: &[u8], size: usize) -> Tensor {
    let n = (bytes.len() / (size * size * 3).max(1)) as i64;
    Tensor::from_data_size(bytes, &[n, size as i64, size as i64, 3], Kind::Uint8)
}

/// Training batches of one epoch, produced on a background thread.
pub struct EpochBatches {
    rx: Receiver<Vec<u8>>,
    worker: Option<JoinHandle<()>>,
    size: usize,
}

/// Batches queued ahead of the training loop.
const PREFETCH: usize = 3;

impl EpochBatches {
    /// Starts producing the batches of `order` (chunks of `batch`) for `epoch`.
    pub fn start(
        images: Arc<Images>,
        order: Vec<usize>,
        batch: usize,
        t: RandomResizedCrop,
        seed: u64,
        epoch: usize,
    ) -> EpochBatches {
        let (tx, rx) = sync_channel(PREFETCH);
        let worker = std::thread::Builder::new()
            .name("rst-loader".into())
            .spawn(move || {
                for chunk in order.chunks(batch.max(1)) {
                    let bytes = train_batch(&images, chunk, &t, seed, epoch);
                    if tx.send(bytes).is_err() {
                        return; // the consumer stopped early (error or early exit)
                    }
                }
            })
            .expect("spawning a thread");
        EpochBatches {
            rx,
            worker: Some(worker),
            size: t.size,
        }
    }

    /// The next batch as u8 NHWC on the CPU (pinned to nothing; moved by `DeviceNorm`).
    pub fn next_batch(&mut self) -> Option<Tensor> {
        let bytes = self.rx.recv().ok()?;
        Some(bytes_tensor(&bytes, self.size))
    }
}

impl Drop for EpochBatches {
    fn drop(&mut self) {
        // Unblock the producer (its send fails once the receiver is gone), then join it.
        let (_, dead) = sync_channel(0);
        let rx = std::mem::replace(&mut self.rx, dead);
        drop(rx);
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// Loader throughput on this machine: `n` synthetic images of `h × w` through the
/// training transform at `size`, in batches of `batch`; returns images per second of the
/// best of `rounds` passes (decoded bytes to u8 batches, the part the CPU does).
pub fn loader_images_per_s(
    n: usize,
    h: usize,
    w: usize,
    size: usize,
    batch: usize,
    rounds: usize,
) -> f64 {
    let mut rng = Prng::new(0, "bench-loader");
    let list: Vec<([usize; 3], Vec<u8>)> = (0..n)
        .map(|_| {
            let bytes = (0..h * w * 3).map(|_| rng.below(256) as u8).collect();
            ([h, w, 3], bytes)
        })
        .collect();
    let images = Arc::new(Images::from_list(list));
    let t = RandomResizedCrop {
        size,
        scale: (0.08, 1.0),
        ratio: (3.0 / 4.0, 4.0 / 3.0),
        flip: true,
    };
    let mut best = 0.0f64;
    for epoch in 1..=rounds.max(1) {
        let start = std::time::Instant::now();
        let mut b = EpochBatches::start(images.clone(), (0..n).collect(), batch, t, 0, epoch);
        let mut seen = 0;
        while let Some(x) = b.next_batch() {
            seen += x.size()[0] as usize;
        }
        assert_eq!(seen, n);
        best = best.max(n as f64 / start.elapsed().as_secs_f64());
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images() -> Arc<Images> {
        let mut rng = Prng::new(5, "t");
        let list = (0..7)
            .map(|i| {
                let (h, w, c) = (20 + i * 3, 30 - i, if i == 2 { 1 } else { 3 });
                let b = (0..h * w * c).map(|_| rng.below(256) as u8).collect();
                ([h, w, c], b)
            })
            .collect();
        Arc::new(Images::from_list(list))
    }

    #[test]
    fn batches_do_not_depend_on_batch_size_or_threads() {
        let imgs = images();
        let t = RandomResizedCrop {
            size: 16,
            scale: (0.08, 1.0),
            ratio: (0.75, 4.0 / 3.0),
            flip: true,
        };
        let order = vec![3, 0, 6, 2, 5, 1, 4];
        let collect = |batch: usize| {
            let mut b = EpochBatches::start(imgs.clone(), order.clone(), batch, t, 9, 2);
            let mut all = Vec::new();
            while let Some(x) = b.next_batch() {
                all.extend(Vec::<u8>::try_from(x.flatten(0, -1)).unwrap());
            }
            all
        };
        let a = collect(2);
        assert_eq!(a.len(), 7 * 16 * 16 * 3);
        assert_eq!(a, collect(7));
        assert_eq!(a, collect(3));
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            assert_eq!(a, pool.install(|| train_batch(&imgs, &order, &t, 9, 2)));
        }
        // Another epoch draws other crops.
        let other = train_batch(&imgs, &order, &t, 9, 3);
        assert_ne!(a, other);
        // Dropping a half-consumed epoch stops its producer.
        let mut b = EpochBatches::start(imgs.clone(), order.clone(), 1, t, 9, 2);
        assert!(b.next_batch().is_some());
        drop(b);
    }

    #[test]
    fn eval_is_resize_then_centre_crop_and_normalised_on_device() {
        let imgs = images();
        let bytes = eval_bytes(&imgs, 18, 16);
        assert_eq!(bytes.len(), 7 * 16 * 16 * 3);
        let x = bytes_tensor(&bytes, 16);
        let norm = DeviceNorm::new(&normalisation(), Device::Cpu);
        let y = norm.apply(&x);
        assert_eq!(y.size(), vec![7, 3, 16, 16]);
        let v0 = y.double_value(&[0, 0, 0, 0]);
        let raw = bytes[0] as f64 / 255.0;
        assert!((v0 - (raw - 0.485) / 0.229).abs() < 1e-5);
    }
}
