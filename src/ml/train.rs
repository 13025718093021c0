//! The `train` stage: fine-tunes a ResNet on a dataset input's train split with model
//! selection on the clean validation split (../shared/regsl-spec.md §1, §2, §4).
//!
//! Protocol, per run:
//! 1. `tch::manual_seed(seed)`; `threads` intra-op threads; the device from `device`.
//! 2. The model is built and initialised as torchvision does from `Prng(seed, "init")`
//!    (not libtorch's generator: the same initial weights on every device), then loaded from
//!    input `init` (an upstream train artifact's best weights) or param `weights` (a
//!    safetensors file with torchvision names) without the head; the head is re-initialised
//!    (PyTorch's Linear default) from `Prng(seed, "head")`; the regularizer snapshots the
//!    result.
//! 3. Every epoch e = 1, 2, ...: samples in the order `Prng(seed, "shuffle/<e>")`, batches
//!    augmented from `Prng(seed, "augment/epoch/<e>")`; per batch (train mode) logits →
//!    log-softmax; label correction (self_label, e ≥ correct_epoch) writes the corrected
//!    labels back before the loss; the loss is the reweighted NLL (self_label,
//!    e ≥ reweight_epoch) or the mean NLL, plus the penalty (`reg: penalty`); backward, step,
//!    then the constraint projection (`reg: constraint`) after **every** step.
//! 4. After the epoch: StepLR (`lr_step`), the temperature schedule, validation accuracy
//!    (eval mode) on the clean validation labels, best tracking with `>=` (a tie goes to the
//!    later epoch), early stopping as the authors' trainer does (see [`BestTracker`]).
//!
//! A NaN/inf loss stops the run with a user error; nothing is cached.
//!
//! The artifact (byte-identical for the same inputs, params, threads, device and libtorch):
//! - `model.json` — [`ModelMeta`]: architecture, classes, image shape, normalisation
//! - `best.safetensors`, `final.safetensors` — every variable (BN running stats included)
//!   at the best-validation epoch and at the last epoch run
//! - `history.json` — one [`EpochRow`] per epoch run (no timings: those go to the log)
//! - `summary.json` — [`Summary`]
//! - `labels.safetensors` — `labels`: the train split's label vector after the last epoch
//!   (i64; the noisy labels with self-labeling's corrections)
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use std::sync::Arc;

use rst::data::dataset::Images;
use rst::data::transform::RandomResizedCrop;
use rst::prng::Prng;
use rst::stages::train::{OptimizerKind, Precision, SelfLabel, TrainParams, TRAIN};
use rst::stages::{Progress, StageCtx, StageError, StageKind, StageRunner};

use super::data::{self, Normalisation, RawSplit};
use super::{device, imagenet, model, precision, regsl};

pub const MODEL_FILE: &str = "model.json";
pub const BEST_FILE: &str = "best.safetensors";
pub const FINAL_FILE: &str = "final.safetensors";
pub const HISTORY_FILE: &str = "history.json";
pub const SUMMARY_FILE: &str = "summary.json";
pub const LABELS_FILE: &str = "labels.safetensors";

pub const MODEL_FORMAT: &str = "rst-model";
pub const MODEL_FORMAT_VERSION: u32 = 1;

/// `model.json`: what it takes to rebuild and feed the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    pub format: String,
    pub version: u32,
    /// `resnet-mini`, `resnet18`, ...
    pub model: String,
    pub num_classes: usize,
    pub in_channels: usize,
    pub classes: Vec<String>,
    /// `[H, W, C]` of the training images.
    pub image_shape: [usize; 3],
    /// Applied to pixels / 255 before the model.
    pub normalisation: Normalisation,
    /// How evaluation turns an image of any size into `image_shape` (ImageNet runs);
    /// absent: images are used as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<EvalTransform>,
}

/// The evaluation transform of an ImageNet-style model: Resize(`resize`) + CenterCrop(`size`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalTransform {
    pub kind: String,
    pub resize: usize,
    pub size: usize,
}

/// Where training batches come from.
enum TrainSource {
    /// Fixed-size images as one normalised tensor on the device; pad-crop/flip on it.
    Small { x: Tensor, augment: data::Augment },
    /// Images of any size; RandomResizedCrop + flip per sample on CPU threads.
    Imagenet {
        images: Arc<Images>,
        transform: RandomResizedCrop,
        norm: imagenet::DeviceNorm,
    },
}

/// The batches of one epoch, in order.
enum Batches<'a> {
    Small {
        x: &'a Tensor,
        augment: &'a data::Augment,
        rng: Box<Prng>,
    },
    Imagenet {
        loader: imagenet::EpochBatches,
        norm: &'a imagenet::DeviceNorm,
    },
}

impl TrainSource {
    fn epoch(&self, order: &[usize], batch: usize, seed: u64, epoch: usize) -> Batches<'_> {
        match self {
            TrainSource::Small { x, augment } => Batches::Small {
                x,
                augment,
                rng: Box::new(data::augment_rng(seed, epoch)),
            },
            TrainSource::Imagenet {
                images,
                transform,
                norm,
            } => Batches::Imagenet {
                loader: imagenet::EpochBatches::start(
                    images.clone(),
                    order.to_vec(),
                    batch,
                    *transform,
                    seed,
                    epoch,
                ),
                norm,
            },
        }
    }
}

impl Batches<'_> {
    /// The input tensor of the next batch, whose samples are `chunk` (the next chunk of
    /// the epoch's order).
    fn next(&mut self, chunk: &[usize]) -> Tensor {
        match self {
            Batches::Small { x, augment, rng } => {
                let idx: Vec<i64> = chunk.iter().map(|&i| i as i64).collect();
                let idx_t = Tensor::from_slice(&idx).to_device(x.device());
                augment.apply(&x.index_select(0, &idx_t), rng)
            }
            Batches::Imagenet { loader, norm } => {
                let bytes = loader
                    .next_batch()
                    .expect("the loader yields one batch per chunk");
                norm.apply(&bytes)
            }
        }
    }
}

impl ModelMeta {
    /// Reads `model.json` of the train artifact at `dir` (input `what`).
    pub fn read(dir: &Path, what: &str) -> Result<ModelMeta, StageError> {
        let path = dir.join(MODEL_FILE);
        let text = std::fs::read_to_string(&path).map_err(|_| {
            StageError::user(format!(
                "{what} is not a train artifact (it has no {MODEL_FILE})"
            ))
        })?;
        let meta: ModelMeta = serde_json::from_str(&text).map_err(|e| {
            StageError::user(format!(
                "{what}: {MODEL_FILE} is not a model description: {e}"
            ))
        })?;
        if meta.format != MODEL_FORMAT || meta.version != MODEL_FORMAT_VERSION {
            return Err(StageError::user(format!(
                "{what}: unsupported model format {} v{}",
                meta.format, meta.version
            )));
        }
        Ok(meta)
    }

    pub fn architecture(&self, what: &str) -> Result<rst::stages::train::Model, StageError> {
        model::parse_model_name(&self.model)
            .ok_or_else(|| StageError::user(format!("{what}: unknown model `{}`", self.model)))
    }
}

/// One row of `history.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRow {
    pub epoch: usize,
    /// Mean over the epoch's samples of the batch loss (the loss optimised: reweighted NLL
    /// when reweighting, plus the penalty).
    pub train_loss: f64,
    /// Train-mode accuracy on the augmented batches against the labels in use (after this
    /// batch's correction).
    pub train_acc: f64,
    /// The same predictions against the clean labels, when the dataset has them.
    pub train_acc_clean: Option<f64>,
    /// Eval-mode accuracy on the validation split's clean labels.
    pub val_acc: f64,
    /// The learning rate used in this epoch.
    pub lr: f64,
    /// The reweighting temperature in effect during this epoch (self_label only).
    pub temperature: Option<f64>,
    /// Labels changed by correction during this epoch.
    pub labels_changed: i64,
    /// Training labels equal to the clean labels after this epoch (when known).
    pub correct_labels: Option<usize>,
}

/// `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub best_epoch: usize,
    pub best_val_acc: f64,
    pub epochs_run: usize,
    pub stopped_early: bool,
    /// Stopped by a study's pruner (`prune:`): left out when false, so that the summary of
    /// every other run is what it was before pruning existed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pruned: bool,
}

/// The reference a run whose best validation accuracy so far is `best` fell below after
/// `epoch` (from 1), if it did: it is pruned (`TrainParams::prune`: Optuna's percentile
/// pruner decided ahead, `search::prune::PercentilePruner::thresholds`).
pub fn pruned_after(references: Option<&[Option<f64>]>, epoch: usize, best: f64) -> Option<f64> {
    references
        .and_then(|r| r.get(epoch.checked_sub(1)?).copied().flatten())
        .filter(|&reference| best < reference)
}

/// Best-epoch tracking and early stopping, as the authors' trainer (pytorch-template's
/// `BaseTrainer.train`): an epoch improves when its validation accuracy is `>=` the best
/// so far (a tie goes to the later epoch; the first epoch always improves); the counter
/// of epochs without improvement resets on improvement, and training stops once it
/// exceeds `patience` (`not_improved_count > early_stop`: with `early_stop: 10` the run
/// ends at the 11th epoch in a row without improvement).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BestTracker {
    /// (epoch, accuracy) of the best epoch so far.
    pub best: Option<(usize, f64)>,
    /// Epochs in a row without improvement.
    pub not_improved: usize,
}

/// What [`BestTracker::update`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub improved: bool,
    pub stop: bool,
}

impl BestTracker {
    pub fn update(&mut self, epoch: usize, acc: f64, patience: Option<usize>) -> Decision {
        let improved = self.best.is_none_or(|(_, b)| acc >= b);
        if improved {
            self.best = Some((epoch, acc));
            self.not_improved = 0;
        } else {
            self.not_improved += 1;
        }
        Decision {
            improved,
            stop: patience.is_some_and(|p| self.not_improved > p),
        }
    }
}

/// Everything a training run needs, already loaded.
pub struct TrainInputs {
    pub params: TrainParams,
    pub classes: Vec<String>,
    pub train: RawSplit,
    pub val: RawSplit,
    pub normalisation: Normalisation,
    /// Weights to start from (file, and how to name it in messages); the head is dropped.
    pub init: Option<(PathBuf, String)>,
}

/// A finished run, not yet written.
pub struct Trained {
    pub meta: ModelMeta,
    pub best: Vec<(String, Tensor)>,
    pub last: Vec<(String, Tensor)>,
    pub history: Vec<EpochRow>,
    pub summary: Summary,
    pub labels: Vec<i64>,
}

fn count_eq(a: &[i64], b: impl Iterator<Item = i64>) -> usize {
    a.iter().zip(b).filter(|(x, y)| **x == *y).count()
}

fn to_vec_i64(t: &Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(t.to_device(Device::Cpu).to_kind(Kind::Int64).flatten(0, -1))
        .expect("1-D i64 tensor")
}

/// Eval-mode predictions (argmax) of `net` on `x`, `batch` images at a time.
pub fn predict(
    net: &model::ResNet,
    x: &data::EvalSet,
    batch: usize,
    precision: Precision,
) -> Vec<i64> {
    let logits = logits(net, x, batch, precision, &mut |_, _| {});
    to_vec_i64(&logits.argmax(-1, false))
}

/// Eval-mode logits `[N, K]` (float32, on the CPU) of `net` on `x`, the forward pass in
/// `precision`; `tick(done, total)` after each batch.
pub fn logits(
    net: &model::ResNet,
    x: &data::EvalSet,
    batch: usize,
    precision: Precision,
    tick: &mut dyn FnMut(usize, usize),
) -> Tensor {
    let n = x.count();
    let batch = batch.max(1) as i64;
    let total = (n + batch - 1) / batch;
    tch::no_grad(|| {
        let mut out = Vec::new();
        let mut start = 0;
        while start < n {
            let len = batch.min(n - start);
            let b = x.batch(start, len);
            let y = precision::autocast(precision, b.device(), || net.forward_t(&b, false));
            out.push(precision::float(y).to_device(Device::Cpu));
            start += len;
            tick(out.len(), total as usize);
        }
        if out.is_empty() {
            Tensor::zeros([0, net.num_classes], (Kind::Float, Device::Cpu))
        } else {
            Tensor::cat(&out, 0)
        }
    })
}

const EVAL_BATCH: usize = 256;

/// Runs training, phase by phase: check the splits, build the learner, put the data on the
/// device, run the epochs (each a pass of optimisation steps with self-labeling, then the
/// schedules, validation and model selection), and gather the result. `progress` gets
/// (pos, len, message) over all batches of all epochs; `log` gets one line per epoch (with
/// its duration).
pub fn train(
    inputs: TrainInputs,
    dev: Device,
    progress: &dyn Fn(Progress),
    log: &dyn Fn(&str),
) -> Result<Trained, StageError> {
    let TrainInputs {
        params: p,
        classes,
        train,
        val,
        normalisation,
        init,
    } = inputs;
    let shape = check_splits(&p, &train, &val, &normalisation)?;
    let mut learner = Learner::build(&p, dev, shape[2], classes.len(), init.as_ref(), log)?;
    let RawSplit {
        images,
        labels,
        clean,
    } = train;
    let data = TrainData::load(&p, images, &val, &normalisation, shape, dev, log)?;
    let mut labels = Labels {
        current: labels,
        clean,
    };
    let run = run_epochs(&p, &mut learner, &data, &mut labels, progress, log)?;
    Ok(finish(
        p,
        classes,
        normalisation,
        shape,
        &learner,
        run,
        labels,
    ))
}

/// Phase 1: both splits have samples, and their images one shape (or the ImageNet
/// transforms make them one), with as many channels as the normalisation. Returns the
/// shape of every batch's images, `[h, w, c]`.
fn check_splits(
    p: &TrainParams,
    train: &RawSplit,
    val: &RawSplit,
    normalisation: &Normalisation,
) -> Result<[usize; 3], StageError> {
    if train.is_empty() {
        return Err(StageError::user(format!(
            "split `{}` is empty",
            p.train_split
        )));
    }
    if val.is_empty() {
        return Err(StageError::user(format!(
            "split `{}` is empty: model selection needs validation samples",
            p.val_split
        )));
    }
    let shape = match p.augment.imagenet_settings() {
        Some(s) => [s.size, s.size, 3],
        None => {
            let fixed = |raw: &RawSplit, name: &str| {
                raw.images.fixed_shape().ok_or_else(|| {
                    StageError::user(format!(
                        "split `{name}` has images of different sizes: use `augment: {{imagenet: \
                         true}}` (RandomResizedCrop / CenterCrop to one size)"
                    ))
                })
            };
            let shape = fixed(train, &p.train_split)?;
            let val_shape = fixed(val, &p.val_split)?;
            if val_shape != shape {
                return Err(StageError::user(format!(
                    "splits `{}` and `{}` have images of different shapes ({shape:?} and \
                     {val_shape:?})",
                    p.train_split, p.val_split
                )));
            }
            shape
        }
    };
    let c = shape[2];
    if normalisation.mean.len() != c || normalisation.std.len() != c {
        return Err(StageError::user(format!(
            "the normalisation has {} channels but the images have {c}",
            normalisation.mean.len()
        )));
    }
    Ok(shape)
}

/// Phase 2's result: what is trained and how. Built in the protocol's order (seed, model,
/// weights, head, regularizer snapshot, optimizer), which the weights depend on bit for bit.
struct Learner {
    vs: nn::VarStore,
    net: model::ResNet,
    reg: regsl::Regularizer,
    opt: nn::Optimizer,
    /// Every variable by name (BN running stats included), for snapshots.
    vars: Vec<(String, Tensor)>,
    /// `precision: fp16`: the loss scaling, and the variables whose gradients it unscales.
    scaler: Option<(precision::LossScaler, Vec<Tensor>)>,
}

impl Learner {
    /// Seeds libtorch, builds the model (initialised from `Prng(seed, "init")` unless
    /// `init` overwrites it), loads `init` without the head, re-initialises the head from
    /// `Prng(seed, "head")`, and snapshots the result for the regularizer.
    fn build(
        p: &TrainParams,
        dev: Device,
        channels: usize,
        num_classes: usize,
        init: Option<&(PathBuf, String)>,
        log: &dyn Fn(&str),
    ) -> Result<Learner, StageError> {
        tch::manual_seed(p.seed as i64);
        let vs = nn::VarStore::new(dev);
        let mut net = model::build(&vs.root(), p.model, channels as i64, num_classes as i64);
        match init {
            // Every variable but the head is overwritten: no need to draw them.
            Some((path, what)) => {
                let l = model::load(&vs, path, false, what)?;
                log(&format!(
                    "loaded {} tensors from {what} ({}), head dropped",
                    l.loaded,
                    path.display()
                ));
            }
            None => model::init_seeded(&vs, &mut Prng::new(p.seed, "init")),
        }
        net.reinit_head(&mut Prng::new(p.seed, "head"));
        let reg = regsl::Regularizer::new(
            &vs,
            p.reg,
            p.norm,
            p.reg_extractor,
            p.reg_predictor,
            p.scale_factor,
        );
        let opt = match p.optimizer {
            OptimizerKind::Adam => nn::Adam {
                amsgrad: p.amsgrad,
                wd: p.weight_decay,
                ..Default::default()
            }
            .build(&vs, p.lr),
            OptimizerKind::Sgd => nn::Sgd {
                momentum: p.momentum,
                wd: p.weight_decay,
                ..Default::default()
            }
            .build(&vs, p.lr),
        }
        .map_err(|e| StageError::internal(format!("cannot build the optimizer: {e}")))?;
        let vars = model::named_variables(&vs);
        let scaler = (p.precision == Precision::Fp16)
            .then(|| (precision::LossScaler::default(), vs.trainable_variables()));
        Ok(Learner {
            vs,
            net,
            reg,
            opt,
            vars,
            scaler,
        })
    }

    /// One optimisation step on `loss`, then the constraint projection (`reg: constraint`),
    /// which follows **every** step.
    /// With fp16 loss scaling, a step whose gradients overflowed is skipped (and the scale
    /// halved), as PyTorch's `GradScaler.step` does.
    fn step(&mut self, loss: &Tensor) {
        self.opt.zero_grad();
        match &mut self.scaler {
            None => loss.backward(),
            Some((scaler, params)) => {
                if !scaler.backward(loss, params) {
                    return;
                }
            }
        }
        self.opt.step();
        self.reg.project(&self.vs);
    }
}

/// Phase 3's result: the data on the device.
struct TrainData {
    /// The validation split, eval-transformed once.
    val: data::EvalSet,
    /// The validation split's clean labels (model selection never sees noise).
    val_truth: Vec<i64>,
    /// Where each epoch's training batches come from.
    source: TrainSource,
}

impl TrainData {
    fn load(
        p: &TrainParams,
        images: Images,
        val: &RawSplit,
        normalisation: &Normalisation,
        [h, w, c]: [usize; 3],
        dev: Device,
        log: &dyn Fn(&str),
    ) -> Result<TrainData, StageError> {
        let imagenet = p.augment.imagenet_settings();
        let t_data = Instant::now();
        let x_val = data::eval_set(
            val,
            normalisation,
            imagenet.map(|s| (s.resize, s.size)),
            dev,
        )?;
        let source = match imagenet {
            Some(s) => TrainSource::Imagenet {
                images: Arc::new(images),
                transform: RandomResizedCrop {
                    size: s.size,
                    scale: s.scale,
                    ratio: s.ratio,
                    flip: s.flip,
                },
                norm: imagenet::DeviceNorm::new(normalisation, dev),
            },
            None => TrainSource::Small {
                x: data::to_tensor([h, w, c], images.bytes(), normalisation, dev),
                augment: data::Augment::new(
                    p.augment.crop_padding,
                    p.augment.flip,
                    normalisation,
                    dev,
                ),
            },
        };
        log(&format!(
            "data ready in {:.2}s ({})",
            t_data.elapsed().as_secs_f64(),
            match imagenet {
                Some(s) => format!(
                    "ImageNet transforms: train RandomResizedCrop {} scale {:?} ratio {:?}{}, \
                     eval Resize {} + CenterCrop {}",
                    s.size,
                    s.scale,
                    s.ratio,
                    if s.flip { " + flip" } else { "" },
                    s.resize,
                    s.size
                ),
                None => format!("{h}x{w}x{c} tensors on the device"),
            }
        ));
        Ok(TrainData {
            val: x_val,
            val_truth: val.truth().to_vec(),
            source,
        })
    }
}

/// The training labels: the dataset's (noisy) labels, which label correction rewrites in
/// place, and the clean ones when the dataset records them (reported, never trained on).
struct Labels {
    current: Vec<i64>,
    clean: Option<Vec<i64>>,
}

impl Labels {
    /// Training labels equal to the clean labels (when known).
    fn correct_count(&self) -> Option<usize> {
        self.clean
            .as_ref()
            .map(|c| count_eq(&self.current, c.iter().copied()))
    }
}

/// What self-labeling does in one epoch: correct a label when the max softmax probability
/// is above `correct` (from `correct_epoch`), and reweight the loss at temperature
/// `reweight` (from `reweight_epoch`).
#[derive(Debug, Clone, Copy, PartialEq)]
struct SelfLabelStep {
    correct: Option<f64>,
    reweight: Option<f64>,
}

impl SelfLabelStep {
    fn of(self_label: Option<&SelfLabel>, epoch: usize, temp: Option<f64>) -> SelfLabelStep {
        SelfLabelStep {
            correct: self_label
                .filter(|s| epoch >= s.correct_epoch)
                .map(|s| s.correct_thres),
            reweight: self_label
                .filter(|s| epoch >= s.reweight_epoch)
                .map(|_| temp.expect("self_label has a temperature")),
        }
    }

    /// The loss of one batch before the penalty, given the train-mode `logits` and the
    /// batch's samples `chunk`: label correction first writes the corrected labels back
    /// (into `labels` and `y`); then the reweighted NLL, or the mean NLL. Returns the loss
    /// and how many labels were changed.
    fn loss(
        &self,
        logits: &Tensor,
        chunk: &[usize],
        labels: &mut [i64],
        y_vec: &mut Vec<i64>,
        dev: Device,
    ) -> (Tensor, i64) {
        let mut y = Tensor::from_slice(y_vec).to_device(dev);
        let log_probs = logits.log_softmax(-1, Kind::Float);
        let mut changed = 0;
        if let Some(thres) = self.correct {
            let (new_y, k) = regsl::correct_labels(logits, &y, thres);
            changed = k;
            *y_vec = to_vec_i64(&new_y);
            for (&i, &l) in chunk.iter().zip(y_vec.iter()) {
                labels[i] = l;
            }
            y = new_y;
        }
        let loss = match self.reweight {
            Some(temp) => regsl::reweighted_nll(&log_probs, &y, temp),
            None => log_probs.nll_loss(&y),
        };
        (loss, changed)
    }
}

/// The schedules that change between epochs: StepLR's learning rate and self-labeling's
/// reweighting temperature.
struct Schedules {
    lr: f64,
    temp: Option<f64>,
}

impl Schedules {
    fn start(p: &TrainParams) -> Schedules {
        Schedules {
            lr: p.lr,
            temp: p.self_label.as_ref().map(|s| s.reweight_temp),
        }
    }

    /// After `epoch`: StepLR (`lr_step`, `lr_gamma`) and the temperature schedule.
    fn advance(&mut self, p: &TrainParams, epoch: usize, opt: &mut nn::Optimizer) {
        if let Some(step) = p.lr_step {
            if epoch.is_multiple_of(step) {
                self.lr *= p.lr_gamma;
                opt.set_lr(self.lr);
            }
        }
        if let (Some(s), Some(t)) = (&p.self_label, self.temp) {
            self.temp = Some(regsl::temperature(
                s.reweight_temp,
                epoch,
                s.reweight_epoch,
                t,
            ));
        }
    }
}

/// Sums over one epoch's batches, for its history row.
#[derive(Debug, Default)]
struct EpochTotals {
    /// Sum over samples of the batch loss.
    loss_sum: f64,
    /// Train-mode predictions equal to the labels in use.
    hits: usize,
    /// The same predictions equal to the clean labels.
    hits_clean: usize,
    /// Labels changed by correction.
    changed: i64,
}

/// Progress over all batches of all epochs.
struct Ticker<'a> {
    progress: &'a dyn Fn(Progress),
    epochs: usize,
    batches: usize,
    batch_size: usize,
    /// The epoch being reported on, when its first report came and how many images it had
    /// seen by then: images/s is its training rate since, not counting the validation
    /// passes between epochs.
    epoch_started: std::cell::Cell<(usize, std::time::Instant, usize)>,
}

impl Ticker<'_> {
    fn total(&self) -> u64 {
        (self.epochs * self.batches) as u64
    }

    /// After batch `bi` (0-based) of `epoch`: the epoch's mean loss so far, and the last
    /// epoch's validation accuracy (NaN before the first).
    fn batch(&self, epoch: usize, bi: usize, chunk: usize, loss_sum: f64, last_val: f64) {
        let seen = bi * self.batch_size + chunk;
        let (current, t0, seen0) = self.epoch_started.get();
        if current != epoch {
            self.epoch_started
                .set((epoch, std::time::Instant::now(), seen));
        }
        let (secs, seen) = if current == epoch {
            (t0.elapsed().as_secs_f64(), seen - seen0)
        } else {
            (0.0, 0)
        };
        (self.progress)(Progress {
            pos: ((epoch - 1) * self.batches + bi + 1) as u64,
            len: self.total(),
            message: format!(
                "epoch {epoch}/{} loss {:.4}{}{}",
                self.epochs,
                loss_sum / ((bi * self.batch_size + chunk) as f64),
                if last_val.is_nan() {
                    String::new()
                } else {
                    format!(" val {last_val:.4}")
                },
                if secs > 0.5 {
                    format!(" · {:.0} img/s", seen as f64 / secs)
                } else {
                    String::new()
                }
            ),
        });
    }

    fn done(&self, best_val: f64) {
        (self.progress)(Progress {
            pos: self.total(),
            len: self.total(),
            message: format!("done: best val {best_val:.4}"),
        });
    }
}

/// One epoch as its pass sees it: which epoch, what self-labeling does in it, and the
/// learning rate in use (for messages).
#[derive(Debug, Clone, Copy)]
struct EpochPlan {
    epoch: usize,
    step: SelfLabelStep,
    lr: f64,
}

/// Phase 4, one epoch's pass over the training split (train mode): per batch, the
/// self-labeling step, the penalty (`reg: penalty`), a NaN/inf check, the optimisation step
/// and the counts. `tick(batch index, batch size, loss sum so far)` after each batch.
fn train_epoch(
    p: &TrainParams,
    learner: &mut Learner,
    data: &TrainData,
    labels: &mut Labels,
    EpochPlan { epoch, step, lr }: EpochPlan,
    tick: &dyn Fn(usize, usize, f64),
) -> Result<EpochTotals, StageError> {
    let n = labels.current.len();
    let dev = learner.vs.device();
    let order = data::epoch_order(p.seed, epoch, n);
    let mut batches = data.source.epoch(&order, p.batch_size, p.seed, epoch);
    let mut totals = EpochTotals::default();
    for (bi, chunk) in order.chunks(p.batch_size).enumerate() {
        let x = batches.next(chunk);
        let mut y_vec: Vec<i64> = chunk.iter().map(|&i| labels.current[i]).collect();
        let out = precision::float(precision::autocast(p.precision, dev, || {
            learner.net.forward_t(&x, true)
        }));
        let (base, changed) = step.loss(&out, chunk, &mut labels.current, &mut y_vec, dev);
        totals.changed += changed;
        let loss = match learner.reg.penalty(&learner.vs) {
            Some(pen) => base + pen,
            None => base,
        };
        let loss_value = loss.double_value(&[]);
        if !loss_value.is_finite() {
            let what = if loss_value.is_nan() {
                "NaN"
            } else {
                "infinite"
            };
            return Err(StageError::user(format!(
                "training diverged: loss is {what} at epoch {epoch} batch {} (lr {lr:e}); \
                 lower lr, check the input images, or use a smaller reg_predictor / \
                 reg_extractor for `reg: penalty`",
                bi + 1
            )));
        }
        learner.step(&loss);

        let pred = to_vec_i64(&out.detach().argmax(-1, false));
        totals.hits += count_eq(&pred, y_vec.iter().copied());
        if let Some(clean) = &labels.clean {
            totals.hits_clean += count_eq(&pred, chunk.iter().map(|&i| clean[i]));
        }
        totals.loss_sum += loss_value * chunk.len() as f64;
        tick(bi, chunk.len(), totals.loss_sum);
    }
    Ok(totals)
}

/// Phase 4's model selection: the best-validation weights so far, and early stopping
/// ([`BestTracker`]).
#[derive(Default)]
struct Selection {
    tracker: BestTracker,
    best: Option<Vec<(String, Tensor)>>,
}

impl Selection {
    /// Records `epoch`'s validation accuracy; snapshots the weights when it improves.
    fn observe(
        &mut self,
        epoch: usize,
        val_acc: f64,
        patience: Option<usize>,
        vars: &[(String, Tensor)],
    ) -> Decision {
        let d = self.tracker.update(epoch, val_acc, patience);
        if d.improved {
            self.best = Some(model::snapshot(vars));
        }
        d
    }
}

/// Phase 4's result: every epoch run, and the selected weights.
struct EpochsRun {
    history: Vec<EpochRow>,
    selection: Selection,
    stopped_early: bool,
    pruned: bool,
}

/// Phase 4: epochs 1, 2, ... until `epochs` or early stopping. After each pass: the
/// schedules, validation accuracy (eval mode) on the clean validation labels, the history
/// row, model selection and the epoch's log line.
fn run_epochs(
    p: &TrainParams,
    learner: &mut Learner,
    data: &TrainData,
    labels: &mut Labels,
    progress: &dyn Fn(Progress),
    log: &dyn Fn(&str),
) -> Result<EpochsRun, StageError> {
    let n = labels.current.len();
    let ticker = Ticker {
        progress,
        epochs: p.epochs,
        batches: n.div_ceil(p.batch_size),
        batch_size: p.batch_size,
        epoch_started: std::cell::Cell::new((0, std::time::Instant::now(), 0)),
    };
    let mut schedules = Schedules::start(p);
    let mut selection = Selection::default();
    let mut history = Vec::new();
    let mut stopped_early = false;
    let mut pruned = false;
    let mut last_val = f64::NAN;
    for epoch in 1..=p.epochs {
        let t0 = Instant::now();
        let step = SelfLabelStep::of(p.self_label.as_ref(), epoch, schedules.temp);
        let (lr_used, temp_used) = (schedules.lr, schedules.temp);
        let totals = train_epoch(
            p,
            learner,
            data,
            labels,
            EpochPlan {
                epoch,
                step,
                lr: lr_used,
            },
            &|bi, chunk, loss_sum| ticker.batch(epoch, bi, chunk, loss_sum, last_val),
        )?;
        schedules.advance(p, epoch, &mut learner.opt);
        let val_pred = predict(&learner.net, &data.val, EVAL_BATCH, p.precision);
        let val_acc = count_eq(&val_pred, data.val_truth.iter().copied()) as f64
            / data.val_truth.len() as f64;
        last_val = val_acc;
        let row = EpochRow {
            epoch,
            train_loss: totals.loss_sum / n as f64,
            train_acc: totals.hits as f64 / n as f64,
            train_acc_clean: labels
                .clean
                .as_ref()
                .map(|_| totals.hits_clean as f64 / n as f64),
            val_acc,
            lr: lr_used,
            temperature: temp_used,
            labels_changed: totals.changed,
            correct_labels: labels.correct_count(),
        };
        let d = selection.observe(epoch, val_acc, p.early_stop, &learner.vars);
        log(&epoch_line(
            p,
            &row,
            d.improved,
            n,
            t0.elapsed().as_secs_f64(),
        ));
        history.push(row);
        let best = selection.tracker.best.map_or(f64::NAN, |b| b.1);
        if let Some(reference) = pruned_after(p.prune.as_deref(), epoch, best) {
            pruned = true;
            log(&format!(
                "pruned: best validation accuracy {best:.4} after epoch {epoch} is below the \
                 study's reference {reference:.4}"
            ));
            break;
        }
        if d.stop && epoch < p.epochs {
            stopped_early = true;
            log(&format!(
                "early stop: validation accuracy did not improve for {} epochs",
                selection.tracker.not_improved
            ));
            break;
        }
    }
    ticker.done(selection.tracker.best.map_or(0.0, |b| b.1));
    Ok(EpochsRun {
        history,
        selection,
        stopped_early,
        pruned,
    })
}

/// The log line of one epoch (with its duration in seconds).
fn epoch_line(p: &TrainParams, row: &EpochRow, improved: bool, n: usize, secs: f64) -> String {
    format!(
        "epoch {}/{}: train loss {:.4} acc {:.4}{} | val acc {:.4}{} | lr {:.3e}{}{} | {:.2}s",
        row.epoch,
        p.epochs,
        row.train_loss,
        row.train_acc,
        row.train_acc_clean
            .map(|a| format!(" (clean {a:.4})"))
            .unwrap_or_default(),
        row.val_acc,
        if improved { " (best)" } else { "" },
        row.lr,
        row.temperature
            .map(|t| format!(" | T {t:.3}"))
            .unwrap_or_default(),
        if p.self_label.is_some() {
            format!(
                " | labels changed {}{}",
                row.labels_changed,
                row.correct_labels
                    .map(|c| format!(", correct {c}/{n}"))
                    .unwrap_or_default()
            )
        } else {
            String::new()
        },
        secs
    )
}

/// Phase 5: the artifact's contents (written by [`write`]): the model description, the
/// best and last weights, the history, the summary and the final labels.
fn finish(
    p: TrainParams,
    classes: Vec<String>,
    normalisation: Normalisation,
    [h, w, c]: [usize; 3],
    learner: &Learner,
    run: EpochsRun,
    labels: Labels,
) -> Trained {
    let EpochsRun {
        history,
        selection,
        stopped_early,
        pruned,
    } = run;
    let (best_epoch, best_val_acc) = selection.tracker.best.expect("at least one epoch");
    Trained {
        meta: ModelMeta {
            format: MODEL_FORMAT.into(),
            version: MODEL_FORMAT_VERSION,
            model: model::model_name(p.model).into(),
            num_classes: classes.len(),
            in_channels: c,
            classes,
            image_shape: [h, w, c],
            normalisation,
            transform: p.augment.imagenet_settings().map(|s| EvalTransform {
                kind: "imagenet".into(),
                resize: s.resize,
                size: s.size,
            }),
        },
        best: selection.best.expect("at least one epoch"),
        last: model::snapshot(&learner.vars),
        summary: Summary {
            best_epoch,
            best_val_acc,
            epochs_run: history.len(),
            stopped_early,
            pruned,
        },
        history,
        labels: labels.current,
    }
}

fn write_json(path: &Path, v: &impl Serialize) -> Result<(), StageError> {
    let text = serde_json::to_string_pretty(v).expect("serialises") + "\n";
    std::fs::write(path, text).map_err(|e| StageError::io(path.display(), e))
}

/// Writes the artifact files into `out`.
pub fn write(out: &Path, t: &Trained) -> Result<(), StageError> {
    write_json(&out.join(MODEL_FILE), &t.meta)?;
    model::write_safetensors(&out.join(BEST_FILE), &t.best)?;
    model::write_safetensors(&out.join(FINAL_FILE), &t.last)?;
    write_json(&out.join(HISTORY_FILE), &t.history)?;
    write_json(&out.join(SUMMARY_FILE), &t.summary)?;
    model::write_safetensors(
        &out.join(LABELS_FILE),
        &[("labels".to_string(), Tensor::from_slice(&t.labels))],
    )
}

/// Sets the libtorch thread count and resolves the device.
pub fn setup(threads: usize, device_spec: &str) -> Result<Device, StageError> {
    tch::set_num_threads(threads.max(1) as i32);
    device::resolve(device_spec).map_err(StageError::user)
}

fn run(ctx: &StageCtx<'_>) -> Result<(), StageError> {
    let p = TrainParams::parse(ctx.params).map_err(StageError::from)?;
    let dev = setup(ctx.threads, &p.device)?;
    precision::check(p.precision, dev)?;
    let ds = ctx.dataset_input("data")?;
    let base = data::base_dir(ctx, "data", &ds)?;
    let train = data::load_split("data", &ds, &base, &p.train_split)?;
    let val = data::load_split("data", &ds, &base, &p.val_split)?;
    let imagenet = p.augment.imagenet_settings().is_some();
    // ImageNet runs feed three channels (grey images are repeated).
    let channels = if imagenet { 3 } else { train.images.channels() };
    let own_normalisation = |train: &RawSplit| {
        if imagenet {
            super::imagenet::normalisation()
        } else {
            data::compute_normalisation(train)
        }
    };

    let input = |name: &str| -> Result<Option<_>, StageError> {
        match ctx.inputs.get(name) {
            Some(v) if !v.is_empty() => Ok(Some(ctx.one_input(name)?)),
            _ => Ok(None),
        }
    };
    let init_input = input("init")?;
    let weights_input = input("weights")?;
    let given = [
        init_input.is_some().then_some("input `init`"),
        weights_input.is_some().then_some("input `weights`"),
        p.weights.is_some().then_some("param `weights`"),
    ];
    let given: Vec<&str> = given.into_iter().flatten().collect();
    if given.len() > 1 {
        return Err(StageError::user(format!(
            "give one starting point, not {}",
            given.join(" and ")
        )));
    }
    let (init, normalisation) = match (init_input, weights_input, &p.weights) {
        (Some(a), _, _) => {
            let what = format!("input `init` ({})", a.instance);
            let meta = ModelMeta::read(&a.path, &what)?;
            let arch = meta.architecture(&what)?;
            if arch != p.model {
                return Err(StageError::user(format!(
                    "{what} is a {} model but params.model is {}",
                    meta.model,
                    model::model_name(p.model)
                )));
            }
            if meta.in_channels != channels {
                return Err(StageError::user(format!(
                    "{what} takes images with {} channels, input `data` has {channels}",
                    meta.in_channels
                )));
            }
            (Some((a.path.join(BEST_FILE), what)), meta.normalisation)
        }
        (None, Some(a), _) => {
            let what = format!("input `weights` ({})", a.instance);
            let file = weights_file(&a.path, &what)?;
            let shown = format!(
                "{what}: {}",
                file.file_name().unwrap_or_default().to_string_lossy()
            );
            (Some((file, shown)), own_normalisation(&train))
        }
        (None, None, Some(w)) => {
            let path = ctx.local_path(w);
            if !path.is_file() {
                return Err(StageError::user(format!(
                    "weights file {} does not exist",
                    path.display()
                )));
            }
            (
                Some((path, format!("weights `{w}`"))),
                own_normalisation(&train),
            )
        }
        (None, None, None) => (None, own_normalisation(&train)),
    };
    ctx.log(&format!(
        "train: {} on {} ({} train / {} val images{}, {} classes), device {}, {} threads",
        model::model_name(p.model),
        ctx.one_input("data")?.instance,
        train.len(),
        val.len(),
        match train.images.fixed_shape() {
            Some(s) => format!(" {s:?}"),
            None => " of various sizes".into(),
        },
        ds.num_classes(),
        device::key_name(dev),
        ctx.threads
    ));
    let inputs = TrainInputs {
        params: p,
        classes: ds.meta.classes.clone(),
        train,
        val,
        normalisation,
        init,
    };
    let trained = self::train(inputs, dev, ctx.progress, &|l| ctx.log(l))?;
    write(ctx.out, &trained)
}

/// The one weights file (`.pth` or `.safetensors`) in the artifact `dir` of input `what`.
fn weights_file(dir: &Path, what: &str) -> Result<PathBuf, StageError> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let listing = std::fs::read_dir(&d).map_err(|e| StageError::io(d.display(), e))?;
        for entry in listing {
            let path = entry.map_err(|e| StageError::io(d.display(), e))?.path();
            if path.is_dir() {
                stack.push(path);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("pth" | "pt" | "safetensors")
            ) {
                found.push(path);
            }
        }
    }
    found.sort();
    match found.len() {
        1 => Ok(found.pop().expect("one")),
        0 => Err(StageError::user(format!(
            "{what} holds no .pth / .pt / .safetensors file"
        ))),
        _ => Err(StageError::user(format!(
            "{what} holds {} weights files ({}); give the stage an artifact with exactly one",
            found.len(),
            found
                .iter()
                .map(|p| p.strip_prefix(dir).unwrap_or(p).display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The `train` kind as `rst-torch` runs it; everything but `run` is the engine's.
pub struct TrainStage;

pub static TRAIN_STAGE: TrainStage = TrainStage;

impl StageRunner for TrainStage {
    fn kind(&self) -> &'static dyn StageKind {
        &TRAIN
    }
    fn run(&self, ctx: &StageCtx<'_>) -> Result<(), StageError> {
        run(ctx)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// A learnable set of `n` grey `s`x`s` images of `k` classes: class c has a bright
    /// horizontal band at rows [c·s/k, (c+1)·s/k), on noise.
    pub fn synthetic(n: usize, k: usize, s: usize, seed: u64) -> RawSplit {
        let mut rng = Prng::new(seed, "synthetic");
        let mut pixels = Vec::with_capacity(n * s * s);
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let c = i % k;
            for r in 0..s {
                for _ in 0..s {
                    let band = r * k / s == c;
                    let noise = rng.below(60) as u8;
                    pixels.push(if band { 160 + noise } else { noise });
                }
            }
            labels.push(c as i64);
        }
        RawSplit {
            images: rst::data::dataset::Images::Fixed {
                shape: [s, s, 1],
                data: pixels,
            },
            labels,
            clean: None,
        }
    }

    pub fn params(extra: Value) -> TrainParams {
        let mut v = json!({"model": "resnet-mini", "epochs": 4, "batch_size": 16, "lr": 0.01,
                           "early_stop": null, "device": "cpu"});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        TrainParams::parse(&v).unwrap()
    }

    pub fn inputs(p: TrainParams, train: RawSplit) -> TrainInputs {
        let val = synthetic(30, 3, 8, 99);
        TrainInputs {
            params: p,
            classes: vec!["a".into(), "b".into(), "c".into()],
            normalisation: data::compute_normalisation(&train),
            train,
            val,
            init: None,
        }
    }

    fn run_quiet(i: TrainInputs) -> Result<Trained, StageError> {
        tch::set_num_threads(1);
        train(i, Device::Cpu, &|_| {}, &|_| {})
    }

    #[test]
    fn early_stopping_rule() {
        // Ties go to the later epoch; stop once more than `patience` epochs in a row fail.
        let seq = [0.5, 0.6, 0.6, 0.55, 0.58, 0.59, 0.61, 0.4, 0.4, 0.4];
        let mut t = BestTracker::default();
        let mut stops = Vec::new();
        for (i, &a) in seq.iter().enumerate() {
            let d = t.update(i + 1, a, Some(2));
            stops.push((d.improved, d.stop));
        }
        assert_eq!(
            stops,
            vec![
                (true, false),  // 1: first epoch
                (true, false),  // 2: 0.6
                (true, false),  // 3: tie 0.6 -> later epoch
                (false, false), // 4
                (false, false), // 5
                (false, true),  // 6: third epoch without improvement > 2
                (true, false),  // (not reached in training)
                (false, false),
                (false, false),
                (false, true),
            ]
        );
        let mut t = BestTracker::default();
        for (i, &a) in seq[..6].iter().enumerate() {
            t.update(i + 1, a, Some(2));
        }
        assert_eq!(t.best, Some((3, 0.6)));
        // No patience: never stops.
        let mut t = BestTracker::default();
        assert!(seq
            .iter()
            .enumerate()
            .all(|(i, &a)| !t.update(i + 1, a, None).stop));
        assert_eq!(t.best, Some((7, 0.61)));
    }

    #[test]
    fn pruning_references_by_epoch() {
        let refs = [None, Some(0.5), Some(0.8)];
        assert_eq!(pruned_after(None, 2, 0.1), None);
        assert_eq!(
            pruned_after(Some(&refs), 1, 0.0),
            None,
            "no check after epoch 1"
        );
        assert_eq!(pruned_after(Some(&refs), 2, 0.49), Some(0.5));
        assert_eq!(pruned_after(Some(&refs), 2, 0.5), None, "a tie stays");
        assert_eq!(pruned_after(Some(&refs), 3, 0.7), Some(0.8));
        assert_eq!(
            pruned_after(Some(&refs), 4, 0.0),
            None,
            "no reference past the list"
        );
    }

    /// A run below the study's reference after its second epoch stops there, marked
    /// pruned, and keeps its partial history and best weights.
    #[test]
    fn a_pruned_run_stops_and_says_so() {
        let p = params(json!({"epochs": 5, "prune": [null, 2.0],
                             "augment": {"crop_padding": 1, "flip": false}}));
        let t = run_quiet(inputs(p, synthetic(60, 3, 8, 1))).unwrap();
        assert_eq!(t.history.len(), 2);
        assert!(t.summary.pruned && !t.summary.stopped_early);
        assert_eq!(t.summary.epochs_run, 2);
        let text = serde_json::to_string(&t.summary).unwrap();
        assert!(text.contains("\"pruned\":true"), "{text}");
        let p = params(json!({"epochs": 1}));
        let t = run_quiet(inputs(p, synthetic(30, 3, 8, 1))).unwrap();
        let text = serde_json::to_string(&t.summary).unwrap();
        assert!(
            !text.contains("pruned"),
            "unpruned summaries are unchanged: {text}"
        );
    }

    #[test]
    fn learns_a_synthetic_task() {
        let p = params(json!({"epochs": 5, "augment": {"crop_padding": 1, "flip": false}}));
        let t = run_quiet(inputs(p, synthetic(90, 3, 8, 1))).unwrap();
        let first = &t.history[0];
        assert_eq!(t.history.len(), 5);
        assert!(
            t.summary.best_val_acc >= 0.9,
            "best val {} history {:?}",
            t.summary.best_val_acc,
            t.history
        );
        let last = t.history.last().unwrap();
        assert!(last.train_acc > first.train_acc, "{:?}", t.history);
        assert!(last.train_loss < first.train_loss, "{:?}", t.history);
        assert_eq!(t.labels, synthetic(90, 3, 8, 1).labels, "no self-labeling");
        assert_eq!(first.temperature, None);
        assert_eq!(first.train_acc_clean, None);
    }

    fn artifact_bytes(t: &Trained) -> Vec<(String, Vec<u8>)> {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), t).unwrap();
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    }

    #[test]
    fn same_seed_same_bytes() {
        let p = params(
            json!({"epochs": 2, "augment": {"crop_padding": 2, "flip": true}, "lr_step": 1}),
        );
        let a = artifact_bytes(&run_quiet(inputs(p.clone(), synthetic(48, 3, 8, 1))).unwrap());
        let b = artifact_bytes(&run_quiet(inputs(p.clone(), synthetic(48, 3, 8, 1))).unwrap());
        let names: Vec<&str> = a.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(
            names,
            vec![
                BEST_FILE,
                FINAL_FILE,
                HISTORY_FILE,
                LABELS_FILE,
                MODEL_FILE,
                SUMMARY_FILE
            ]
        );
        assert!(a == b, "two runs differ");
        let mut p2 = p;
        p2.seed = 5;
        let c = artifact_bytes(&run_quiet(inputs(p2, synthetic(48, 3, 8, 1))).unwrap());
        assert!(a[0] != c[0], "another seed, other weights");
        let history: Vec<EpochRow> = serde_json::from_slice(&a[2].1).unwrap();
        assert_eq!(history[0].lr, 0.01);
        assert_eq!(history[1].lr, 0.01 * 0.1, "StepLR after each epoch");
    }

    #[test]
    fn nan_loss_is_a_user_error() {
        let p = params(json!({"lr": 1e12, "epochs": 3}));
        let e = run_quiet(inputs(p, synthetic(48, 3, 8, 1))).err().unwrap();
        assert!(e.user);
        assert!(
            e.message.starts_with("training diverged: loss is"),
            "{}",
            e.message
        );
        // A poisoned input gives NaN at the very first batch.
        let p = params(json!({}));
        let mut i = inputs(p, synthetic(48, 3, 8, 1));
        i.normalisation.std = vec![0.0];
        let e = run_quiet(i).err().unwrap();
        assert!(
            e.message.contains("loss is NaN at epoch 1 batch 1")
                || e.message.contains("loss is infinite at epoch 1 batch 1"),
            "{}",
            e.message
        );
    }

    #[test]
    fn self_labeling_corrects_noisy_labels() {
        // 20 of 90 labels flipped at random; correction from epoch 2.
        let mut tr = synthetic(90, 3, 8, 1);
        let clean = tr.labels.clone();
        let mut rng = Prng::new(1, "flip");
        for i in rng.sample(90, 20) {
            tr.labels[i] = (tr.labels[i] + 1 + rng.below(2) as i64) % 3;
        }
        tr.clean = Some(clean.clone());
        let p = params(json!({"epochs": 6, "self_label":
            {"correct_epoch": 3, "correct_thres": 0.6, "reweight_epoch": 2, "reweight_temp": 2.0}}));
        let t = run_quiet(inputs(p, tr)).unwrap();
        let h = &t.history;
        assert_eq!(h[0].labels_changed, 0);
        assert_eq!(h[1].labels_changed, 0);
        assert_eq!(h[0].correct_labels, Some(70));
        assert!(
            h[2..].iter().map(|r| r.labels_changed).sum::<i64>() > 0,
            "{h:?}"
        );
        let correct_now = count_eq(&t.labels, clean.iter().copied());
        assert_eq!(h.last().unwrap().correct_labels, Some(correct_now));
        assert!(correct_now > 70, "correction helped: {h:?}");
        // Temperature: T0 through epoch reweight_epoch + 1, then the schedule.
        assert_eq!(h[0].temperature, Some(2.0));
        assert_eq!(h[2].temperature, Some(2.0));
        // After epoch 3 (> reweight_epoch 2): T0·exp(−0.1·1), used in epoch 4.
        assert_eq!(h[3].temperature, Some(2.0 * (-0.1f64).exp()));
        assert!(h[0].train_acc_clean.is_some());
    }

    #[test]
    fn constraint_keeps_the_head_in_its_ball() {
        let p = params(
            json!({"epochs": 2, "reg": "constraint", "reg_extractor": 0.5,
                              "reg_predictor": 0.3}),
        );
        let t = run_quiet(inputs(p, synthetic(48, 3, 8, 1))).unwrap();
        let head = &t.last.iter().find(|(n, _)| n == "head.weight").unwrap().1;
        let norm = head.norm().double_value(&[]);
        assert!(norm <= 0.3 + 1e-5, "{norm}");
        // The penalty is part of the optimised (and reported) loss.
        let plain = run_quiet(inputs(params(json!({"epochs": 1})), synthetic(48, 3, 8, 1)));
        let pen = run_quiet(inputs(
            params(json!({"epochs": 1, "reg": "penalty", "reg_extractor": 0.1,
                          "reg_predictor": 10.0})),
            synthetic(48, 3, 8, 1),
        ));
        let (plain, pen) = (plain.unwrap().history, pen.unwrap().history);
        assert!(pen[0].train_loss > plain[0].train_loss, "{pen:?} {plain:?}");
    }

    #[test]
    fn starts_from_weights_without_the_head() {
        let dir = tempfile::tempdir().unwrap();
        let p = params(json!({"epochs": 1}));
        let first = run_quiet(inputs(p.clone(), synthetic(48, 3, 8, 1))).unwrap();
        write(dir.path(), &first).unwrap();
        // A tiny lr barely moves the loaded body.
        let p2 = params(json!({"epochs": 1, "lr": 1e-12, "seed": 9}));
        let mut i = inputs(p2, synthetic(48, 3, 8, 1));
        i.init = Some((dir.path().join(BEST_FILE), "input `init`".into()));
        let second = run_quiet(i).unwrap();
        let get = |t: &Trained, n: &str| {
            t.best
                .iter()
                .find(|(k, _)| k == n)
                .unwrap()
                .1
                .shallow_clone()
        };
        let a = get(&first, "layer2.0.conv1.weight");
        let b = get(&second, "layer2.0.conv1.weight");
        assert!(a.allclose(&b, 1e-6, 1e-6, false), "body loaded");
        assert!(
            !get(&first, "head.weight").allclose(&get(&second, "head.weight"), 1e-3, 1e-3, false),
            "head re-initialised"
        );
    }
}
