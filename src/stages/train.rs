//! The `train` and `evaluate` stage kinds: their parameters, checked before anything runs.
//! These are declarations only ([`StageKind`]): their runners live in `src/ml/` and are
//! registered by the `rst-torch` worker binary (the engine never loads libtorch); the
//! local executor starts `rst-torch worker` for them.
//!
//! ```yaml
//! kind: train
//! inputs: {data: "noisy[rate=${rate}]", init: pretrain}   # init: optional upstream train artifact
//!                                 # or weights: a download artifact holding one .pth/.safetensors
//! params:
//!   model: resnet-mini            # resnet-mini | resnet18 | resnet34 | resnet50 | resnet101
//!   weights: null                 # or a local .safetensors / torch.save .pth file to start from (head dropped)
//!   seed: 1
//!   epochs: 30
//!   batch_size: 32
//!   optimizer: adam               # adam (amsgrad by default, as the paper) | sgd
//!   lr: 0.0001
//!   amsgrad: true
//!   momentum: 0.9                 # sgd only
//!   weight_decay: 0
//!   lr_step: 10                   # StepLR step (epochs) and factor
//!   lr_gamma: 0.1
//!   early_stop: 10                # epochs without a better validation accuracy (>=) before stopping; null: never
//!   reg: constraint               # none | constraint | penalty
//!   norm: frob                    # frob | inf-op
//!   reg_extractor: 7.8            # D
//!   reg_predictor: 14.08          # H
//!   scale_factor: 1.0             # gamma
//!   self_label: {correct_epoch: 10, correct_thres: 0.9, reweight_epoch: 5, reweight_temp: 2.0}
//!   augment: {crop_padding: 2, flip: true}   # small images; or {imagenet: true, flip: true, size: 224}
//!   device: auto                  # auto | cpu | cuda | cuda:N
//!   precision: fp32               # fp32 | bf16 | fp16 (mixed precision: CUDA only; fp16 with loss scaling)
//!   train_split: train
//!   val_split: val
//!   prune: ${prune}               # in a trial of a pruning `search`: stop below its references
//! ```
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    canonical_as, check_split_name, parse_params, Arity, InputDecl, ParamError, StageKind,
    Upstreams,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Model {
    ResnetMini,
    Resnet18,
    Resnet34,
    Resnet50,
    Resnet101,
}

/// The arithmetic of the forward pass (`precision:` of `train` and `evaluate`): fp32, or
/// mixed precision on CUDA (autocast: matrix products and convolutions in bf16 or fp16,
/// reductions and the loss in fp32; the weights and the optimiser stay fp32; fp16 with
/// dynamic loss scaling, as PyTorch's `GradScaler`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Fp32,
    Bf16,
    Fp16,
}

impl Precision {
    /// Left out of the canonical params when fp32, so the keys of every stage written
    /// before the parameter existed stay the same.
    pub fn is_fp32(&self) -> bool {
        *self == Precision::Fp32
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
            Precision::Fp16 => "fp16",
        }
    }

    /// Mixed precision is for GPUs: on the CPU anything but fp32 is refused (`device`
    /// being what the stage runs on, `cpu` or `cuda:N`).
    pub fn check_on(self, device: &str) -> Result<(), ParamError> {
        if self.is_fp32() || device.trim() != "cpu" {
            return Ok(());
        }
        Err(ParamError::new(
            "precision",
            format!(
                "precision {} needs a CUDA device, and this stage runs on the CPU",
                self.name()
            ),
        )
        .help(
            "use precision: fp32 (the default) on the CPU, or run on a GPU (device: auto or cuda)",
        ))
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    #[default]
    Adam,
    Sgd,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Reg {
    #[default]
    None,
    Constraint,
    Penalty,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Norm {
    #[default]
    Frob,
    InfOp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SelfLabel {
    /// First (1-based) epoch of label correction.
    pub correct_epoch: usize,
    /// Correct when the max softmax probability is strictly above this.
    pub correct_thres: f64,
    /// First (1-based) epoch of reweighting.
    pub reweight_epoch: usize,
    /// Initial temperature T0.
    pub reweight_temp: f64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Augment {
    /// Random crop back to the original size after zero-padding by this many pixels.
    #[serde(default)]
    pub crop_padding: usize,
    /// Random horizontal flips.
    #[serde(default)]
    pub flip: bool,
    /// ImageNet transforms: train RandomResizedCrop(`size`, `scale`, `ratio`) + flip (with
    /// `flip`); eval Resize(`resize`) + CenterCrop(`size`); ImageNet mean/std; images of any
    /// size, grey ones repeated over three channels.
    #[serde(default)]
    pub imagenet: bool,
    /// Crop side (imagenet; default 224).
    #[serde(default)]
    pub size: Option<usize>,
    /// Eval: shorter side before the centre crop (imagenet; default `size`·256/224, 256 for 224).
    #[serde(default)]
    pub resize: Option<usize>,
    /// Area fraction range of RandomResizedCrop (imagenet; default [0.08, 1]).
    #[serde(default)]
    pub scale: Option<[f64; 2]>,
    /// Aspect ratio range of RandomResizedCrop (imagenet; default [3/4, 4/3]).
    #[serde(default)]
    pub ratio: Option<[f64; 2]>,
}

/// The ImageNet transform settings with their defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImagenetSettings {
    pub size: usize,
    pub resize: usize,
    pub scale: (f64, f64),
    pub ratio: (f64, f64),
    pub flip: bool,
}

impl Augment {
    /// The ImageNet settings, when `imagenet` is on.
    pub fn imagenet_settings(&self) -> Option<ImagenetSettings> {
        if !self.imagenet {
            return None;
        }
        let size = self.size.unwrap_or(224);
        let [s0, s1] = self.scale.unwrap_or([0.08, 1.0]);
        let [r0, r1] = self.ratio.unwrap_or([3.0 / 4.0, 4.0 / 3.0]);
        Some(ImagenetSettings {
            size,
            resize: self.resize.unwrap_or(size * 256 / 224),
            scale: (s0, s1),
            ratio: (r0, r1),
            flip: self.flip,
        })
    }

    fn check(&self) -> Result<(), ParamError> {
        if !self.imagenet {
            for (set, key) in [
                (self.size.is_some(), "size"),
                (self.resize.is_some(), "resize"),
                (self.scale.is_some(), "scale"),
                (self.ratio.is_some(), "ratio"),
            ] {
                if set {
                    return Err(ParamError::new(
                        format!("augment.{key}"),
                        "only applies to the ImageNet transforms",
                    )
                    .help("add `imagenet: true` to augment, or remove the key"));
                }
            }
            return Ok(());
        }
        if self.crop_padding > 0 {
            return Err(ParamError::new(
                "augment.crop_padding",
                "does not combine with imagenet (RandomResizedCrop does the cropping)",
            ));
        }
        let s = self.imagenet_settings().expect("imagenet");
        if s.size == 0 {
            return Err(ParamError::new("augment.size", "must be at least 1"));
        }
        if s.resize < s.size {
            return Err(ParamError::new(
                "augment.resize",
                format!(
                    "must be at least augment.size ({}), got {}",
                    s.size, s.resize
                ),
            ));
        }
        let (a, b) = s.scale;
        if !(a > 0.0 && a <= b && b <= 1.0) {
            return Err(ParamError::new(
                "augment.scale",
                format!("must be [low, high] with 0 < low <= high <= 1, got [{a}, {b}]"),
            ));
        }
        let (a, b) = s.ratio;
        if !(a.is_finite() && b.is_finite() && a > 0.0 && a <= b) {
            return Err(ParamError::new(
                "augment.ratio",
                format!("must be [low, high] with 0 < low <= high, got [{a}, {b}]"),
            ));
        }
        Ok(())
    }
}

fn d_seed() -> u64 {
    0
}
fn d_lr() -> f64 {
    1e-4
}
fn d_true() -> bool {
    true
}
fn d_momentum() -> f64 {
    0.9
}
fn d_gamma() -> f64 {
    0.1
}
fn d_scale() -> f64 {
    1.0
}
fn d_device() -> String {
    "auto".into()
}
fn d_train() -> String {
    "train".into()
}
fn d_val() -> String {
    "val".into()
}
fn d_early() -> Option<usize> {
    Some(10)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainParams {
    /// The network: `resnet-mini` (CPU-sized) or a torchvision ResNet.
    pub model: Model,
    /// A local `.safetensors` or torch.save `.pth` file to start from (its classifier head dropped); or give an `init`/`weights` input.
    #[serde(default)]
    pub weights: Option<String>,
    /// Seeds initialisation, shuffling and augmentation (rst's portable PRNG: the same seed gives the same run).
    #[serde(default = "d_seed")]
    pub seed: u64,
    /// Training epochs (at most; see `early_stop`).
    pub epochs: usize,
    /// Images per step.
    pub batch_size: usize,
    /// `adam` (with `amsgrad`, as the paper) or `sgd` (with `momentum`).
    #[serde(default)]
    pub optimizer: OptimizerKind,
    /// Learning rate.
    #[serde(default = "d_lr")]
    pub lr: f64,
    /// Adam's AMSGrad variant (the paper's setting).
    #[serde(default = "d_true")]
    pub amsgrad: bool,
    /// SGD momentum (`optimizer: sgd` only).
    #[serde(default = "d_momentum")]
    pub momentum: f64,
    /// L2 weight decay of the optimizer.
    #[serde(default)]
    pub weight_decay: f64,
    /// StepLR: multiply the learning rate by `lr_gamma` every this many epochs (none: constant).
    #[serde(default)]
    pub lr_step: Option<usize>,
    /// StepLR's factor.
    #[serde(default = "d_gamma")]
    pub lr_gamma: f64,
    /// Stop after this many epochs without a better validation accuracy (`>=` counts as better, as the authors' code); null: never.
    #[serde(default = "d_early")]
    pub early_stop: Option<usize>,
    /// `none` (plain fine-tuning), `constraint` (project onto the balls after every step: RegSL) or `penalty` (add the distances to the loss).
    #[serde(default)]
    pub reg: Reg,
    /// The distance: `frob` (Frobenius) or `inf-op` (maximum absolute row sum).
    #[serde(default)]
    pub norm: Norm,
    /// D: the radius (`reg: constraint`) or penalty weight (`reg: penalty`) of the weights of
    /// layer1..4 (layer k scaled by γ^k), around the weights the run starts from: the
    /// pretrained ones (`init`/`weights`), else its own seeded initialisation.
    #[serde(default)]
    pub reg_extractor: f64,
    /// H: the same for the classifier head, always around zero.
    #[serde(default)]
    pub reg_predictor: f64,
    /// γ: layer k (layer1 is 0) gets D·γ^k, the paper's layer-wise scaling.
    #[serde(default = "d_scale")]
    pub scale_factor: f64,
    /// Self-labeling (the paper's SL): reweighting and label correction; none: off.
    #[serde(default)]
    pub self_label: Option<SelfLabel>,
    /// Training-time augmentation (evaluation uses the matching deterministic transform).
    #[serde(default)]
    pub augment: Augment,
    /// `auto` (a GPU when there is one, else the CPU), `cpu`, `cuda` or `cuda:N`.
    #[serde(default = "d_device")]
    pub device: String,
    #[serde(default, skip_serializing_if = "Precision::is_fp32")]
    #[schemars(extend("default" = "fp32"))]
    pub precision: Precision,
    /// The input split trained on.
    #[serde(default = "d_train")]
    pub train_split: String,
    /// The clean validation split that picks the best epoch and drives `early_stop`.
    #[serde(default = "d_val")]
    pub val_split: String,
    /// A study's pruning references (`prune: ${prune}` in a trial of a `search` with
    /// `prune:`): element `i` is the validation accuracy the best epoch so far must reach
    /// after epoch `i + 1` (null: no check there); below it the run stops, `pruned`.
    /// Left out of the canonical params when absent, so other keys do not change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<Vec<Option<f64>>>,
}

fn positive(v: f64, path: &str) -> Result<(), ParamError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(ParamError::new(
            path,
            format!("must be a number > 0, got {v}"),
        ))
    }
}

pub fn check_device(d: &str) -> Result<(), ParamError> {
    let ok = matches!(d, "auto" | "cpu" | "cuda")
        || d.strip_prefix("cuda:")
            .is_some_and(|n| n.parse::<usize>().is_ok());
    if ok {
        Ok(())
    } else {
        Err(ParamError::new("device", format!("unknown device `{d}`"))
            .help("use auto, cpu, cuda or cuda:N"))
    }
}

impl TrainParams {
    pub fn parse(params: &Value) -> Result<TrainParams, ParamError> {
        let p: TrainParams = parse_params(params)?;
        if p.epochs == 0 {
            return Err(ParamError::new("epochs", "must be at least 1"));
        }
        if p.batch_size == 0 {
            return Err(ParamError::new("batch_size", "must be at least 1"));
        }
        positive(p.lr, "lr")?;
        if !(p.weight_decay.is_finite() && p.weight_decay >= 0.0) {
            return Err(ParamError::new("weight_decay", "must be >= 0"));
        }
        if p.lr_step == Some(0) {
            return Err(ParamError::new(
                "lr_step",
                "must be at least 1 (or null for a constant rate)",
            ));
        }
        if p.early_stop == Some(0) {
            return Err(ParamError::new(
                "early_stop",
                "must be at least 1 (or null to never stop early)",
            ));
        }
        if p.reg != Reg::None {
            positive(p.reg_extractor, "reg_extractor").map_err(|e| {
                e.help("the radius (constraint) or weight (penalty) D of layers 1-4")
            })?;
            positive(p.reg_predictor, "reg_predictor")
                .map_err(|e| e.help("the radius (constraint) or weight (penalty) H of the head"))?;
            positive(p.scale_factor, "scale_factor")?;
        }
        if let Some(s) = &p.self_label {
            if s.correct_epoch == 0 {
                return Err(ParamError::new(
                    "self_label.correct_epoch",
                    "epochs are numbered from 1",
                ));
            }
            if s.reweight_epoch == 0 {
                return Err(ParamError::new(
                    "self_label.reweight_epoch",
                    "epochs are numbered from 1",
                ));
            }
            if !(s.correct_thres > 0.0 && s.correct_thres < 1.0) {
                return Err(ParamError::new(
                    "self_label.correct_thres",
                    "must be between 0 and 1",
                ));
            }
            positive(s.reweight_temp, "self_label.reweight_temp")?;
        }
        p.augment.check()?;
        check_device(&p.device)?;
        p.precision.check_on(&p.device)?;
        Ok(p)
    }
}

fn d_split_test() -> String {
    "test".into()
}
fn d_eval_batch() -> usize {
    256
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum WhichWeights {
    #[default]
    Best,
    Final,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvalParams {
    /// The split evaluated.
    #[serde(default = "d_split_test")]
    pub split: String,
    /// Which weights of the train artifact: `best` (best validation epoch) or `final`.
    #[serde(default)]
    pub weights: WhichWeights,
    /// Images per forward pass.
    #[serde(default = "d_eval_batch")]
    pub batch_size: usize,
    /// As `train`'s `device`.
    #[serde(default = "d_device")]
    pub device: String,
    #[serde(default, skip_serializing_if = "Precision::is_fp32")]
    #[schemars(extend("default" = "fp32"))]
    pub precision: Precision,
    /// Also write `predictions.json`: the argmax class of every image of the split, in
    /// the split's order (what `noise` with `mode: correlated` reads).
    #[serde(default)]
    pub predictions: bool,
}

/// `predictions.json` of an `evaluate` artifact (`predictions: true`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Predictions {
    pub split: String,
    /// `best` or `final`.
    pub weights: String,
    pub num_classes: usize,
    /// The predicted class of each image (argmax; ties to the lower class id).
    pub predicted: Vec<i64>,
}

pub const PREDICTIONS_FILE: &str = "predictions.json";

impl EvalParams {
    pub fn parse(params: &Value) -> Result<EvalParams, ParamError> {
        let p: EvalParams = parse_params(params)?;
        if p.batch_size == 0 {
            return Err(ParamError::new("batch_size", "must be at least 1"));
        }
        check_device(&p.device)?;
        p.precision.check_on(&p.device)?;
        Ok(p)
    }
}

const TRAIN_INPUTS: &[InputDecl] = &[
    InputDecl {
        name: "data",
        arity: Arity::One,
        required: true,
    },
    InputDecl {
        name: "init",
        arity: Arity::One,
        required: false,
    },
    InputDecl {
        name: "weights",
        arity: Arity::One,
        required: false,
    },
];

const EVAL_INPUTS: &[InputDecl] = &[
    InputDecl {
        name: "model",
        arity: Arity::One,
        required: true,
    },
    InputDecl {
        name: "data",
        arity: Arity::One,
        required: true,
    },
];

/// A torch stage kind's declaration; `rst-torch` registers its runner (`src/ml/`), so the
/// engine has none and needs no placeholder.
pub struct TorchKind {
    name: &'static str,
    version: u32,
}

/// Bump when training gives other weights for the same inputs and params.
pub const TRAIN: TorchKind = TorchKind {
    name: "train",
    version: 1,
};
/// Bump when evaluation output changes.
pub const EVALUATE: TorchKind = TorchKind {
    name: "evaluate",
    version: 1,
};

impl StageKind for TorchKind {
    fn params_schema(&self) -> schemars::Schema {
        match self.name {
            "train" => schemars::schema_for!(TrainParams),
            _ => schemars::schema_for!(EvalParams),
        }
    }
    fn checks_upstream(&self) -> bool {
        true
    }
    fn name(&self) -> &'static str {
        self.name
    }
    fn version(&self) -> u32 {
        self.version
    }
    fn check(&self, params: &Value) -> Result<(), ParamError> {
        match self.name {
            "train" => TrainParams::parse(params).map(|_| ()),
            _ => EvalParams::parse(params).map(|_| ()),
        }
    }
    fn inputs(&self) -> Option<&'static [InputDecl]> {
        Some(if self.name == "train" {
            TRAIN_INPUTS
        } else {
            EVAL_INPUTS
        })
    }
    fn local_deps(&self, params: &Value) -> Vec<String> {
        match self.name {
            "train" => TrainParams::parse(params)
                .ok()
                .and_then(|p| p.weights)
                .into_iter()
                .collect(),
            _ => Vec::new(),
        }
    }
    fn uses_torch(&self) -> bool {
        true
    }
    fn canonical_params(&self, params: &Value) -> Value {
        match self.name {
            "train" => canonical_as::<TrainParams>(params),
            _ => canonical_as::<EvalParams>(params),
        }
    }
    fn check_upstream(&self, params: &Value, inputs: &Upstreams<'_>) -> Result<(), ParamError> {
        match self.name {
            "train" => {
                let p = TrainParams::parse(params)?;
                check_split_name(inputs, "data", "train_split", &p.train_split)?;
                check_split_name(inputs, "data", "val_split", &p.val_split)
            }
            _ => {
                let p = EvalParams::parse(params)?;
                check_split_name(inputs, "data", "split", &p.split)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Writing a default and leaving it out are one key (issue #11).
    #[test]
    fn canonical_params_fill_in_defaults() {
        let bare = EVALUATE.canonical_params(&json!({}));
        let written = EVALUATE.canonical_params(&json!({"split": "test", "batch_size": 256}));
        assert_eq!(bare, written);
        assert_eq!(bare["split"], "test");
        let other = EVALUATE.canonical_params(&json!({"split": "val"}));
        assert_ne!(bare, other);
        let t = |extra: Value| {
            let mut p = json!({"model": "resnet-mini", "epochs": 3, "batch_size": 32});
            p.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            TRAIN.canonical_params(&p)
        };
        assert_eq!(
            t(json!({})),
            t(json!({"optimizer": "adam", "lr": 1e-4, "device": "auto"}))
        );
        // Params that do not parse are keyed as written (the planner rejects them first).
        assert_eq!(TRAIN.canonical_params(&json!({"x": 1})), json!({"x": 1}));
        // fp32 (the default) is left out, so keys from before `precision` stay the same;
        // mixed precision is keyed.
        assert_eq!(t(json!({})), t(json!({"precision": "fp32"})));
        assert!(t(json!({})).get("precision").is_none());
        assert_eq!(t(json!({"precision": "bf16"}))["precision"], "bf16");
        assert_ne!(
            EVALUATE.canonical_params(&json!({"precision": "fp16"})),
            bare
        );
    }

    #[test]
    fn mixed_precision_on_the_cpu_is_refused_naming_the_parameter() {
        let base = json!({"model": "resnet-mini", "epochs": 1, "batch_size": 8});
        let with = |extra: Value| {
            let mut p = base.clone();
            p.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            p
        };
        let e =
            TrainParams::parse(&with(json!({"device": "cpu", "precision": "bf16"}))).unwrap_err();
        assert_eq!(e.path, "precision");
        assert!(
            e.message.contains("bf16 needs a CUDA device"),
            "{}",
            e.message
        );
        assert!(e.help.unwrap().contains("fp32"));
        assert!(TrainParams::parse(&with(json!({"device": "auto", "precision": "fp16"}))).is_ok());
        assert!(TrainParams::parse(&with(json!({"device": "cpu", "precision": "fp32"}))).is_ok());
        let e = EvalParams::parse(&json!({"device": "cpu", "precision": "fp16"})).unwrap_err();
        assert_eq!(e.path, "precision");
        let e = TrainParams::parse(&with(json!({"precision": "fp8"}))).unwrap_err();
        assert!(e.message.contains("fp8"), "{}", e.message);
    }

    #[test]
    fn newcomer_errors_name_the_type_and_the_variant() {
        let e = TrainParams::parse(&json!({"model": "resnet_mini", "epochs": 3, "batch_size": 32}))
            .unwrap_err();
        assert_eq!(e.help.as_deref(), Some("did you mean `resnet-mini`?"));
        let e =
            TrainParams::parse(&json!({"model": "resnet-mini", "epochs": "one", "batch_size": 32}))
                .unwrap_err();
        assert_eq!(e.path, "epochs");
        assert_eq!(
            e.message,
            "invalid type: string \"one\", expected a whole number (0 or more)"
        );
        assert_eq!(
            e.help.as_deref(),
            Some("write a whole number (0 or more), e.g. `epochs: 10`")
        );
        let e = TrainParams::parse(&json!({"epochs": 3, "batch_size": 32})).unwrap_err();
        assert_eq!(
            (e.path.as_str(), e.message.as_str()),
            ("", "missing field `model`")
        );
    }

    #[test]
    fn train_params_defaults_and_errors() {
        let p = TrainParams::parse(&json!({"model": "resnet-mini", "epochs": 3, "batch_size": 32}))
            .unwrap();
        assert_eq!(p.optimizer, OptimizerKind::Adam);
        assert!(p.amsgrad);
        assert_eq!(p.early_stop, Some(10));
        let e = TrainParams::parse(&json!({"model": "resnet19", "epochs": 3, "batch_size": 32}))
            .unwrap_err();
        assert_eq!(e.path, "model");
        let e = TrainParams::parse(
            &json!({"model": "resnet18", "epochs": 3, "batch_size": 32, "reg": "constraint"}),
        )
        .unwrap_err();
        assert_eq!(e.path, "reg_extractor");
        let e = TrainParams::parse(&json!({"model": "resnet18", "epochs": 3, "batch_size": 32, "self_label": {"correct_epoch": 0, "correct_thres": 0.9, "reweight_epoch": 5, "reweight_temp": 2.0}})).unwrap_err();
        assert_eq!(e.path, "self_label.correct_epoch");
        let e = TrainParams::parse(
            &json!({"model": "resnet18", "epochs": 3, "batch_size": 32, "device": "gpu"}),
        )
        .unwrap_err();
        assert_eq!(e.path, "device");
        let e = TrainParams::parse(
            &json!({"model": "resnet18", "epochs": 3, "batch_size": 32, "lr_stepp": 3}),
        )
        .unwrap_err();
        assert_eq!(e.help.as_deref(), Some("did you mean `lr_step`?"));
    }
}
