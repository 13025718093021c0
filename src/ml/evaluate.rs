//! The `evaluate` stage: scores a train artifact (input `model`, its best or final weights)
//! on a split of a dataset input (input `data`), normalised with the model's stored
//! mean/std, in eval mode.
//!
//! Artifact: `metrics.json` — [`Metrics`]: top-1 and top-3 accuracy (fractions in [0, 1]),
//! per-class accuracy (null for a class without samples), the confusion matrix (rows: true
//! class, columns: predicted), against the split's clean labels when the dataset records
//! them (`labels: "clean"`), else its labels (`labels: "given"`). With `predictions: true`
//! also `predictions.json` (the argmax class per image, for correlated noise).
use serde::{Deserialize, Serialize};
use tch::nn;

use rst::stages::train::{EvalParams, Predictions, WhichWeights, EVALUATE, PREDICTIONS_FILE};
use rst::stages::{Progress, StageCtx, StageError, StageKind, StageRunner};

use super::train::{self, ModelMeta};
use super::{data, model};

pub const METRICS_FILE: &str = "metrics.json";

/// `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub split: String,
    pub n: usize,
    pub top1: f64,
    pub top3: f64,
    pub per_class: Vec<Option<f64>>,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<u64>>,
    pub classes: Vec<String>,
    /// `best` or `final`.
    pub weights: String,
    /// `clean` (the labels before noise) or `given`.
    pub labels: String,
}

/// Top-1 / top-k counts from logits `[n·k]` (row-major). The rank of the true class counts
/// ties in favour of the lower class index (as argmax does): sample i is top-k correct
/// when fewer than k classes beat its true class.
pub fn score(
    logits: &[f32],
    k: usize,
    truth: &[i64],
) -> (f64, f64, Vec<Option<f64>>, Vec<Vec<u64>>) {
    let n = truth.len();
    assert_eq!(logits.len(), n * k, "logits shape");
    let mut top1 = 0usize;
    let mut top3 = 0usize;
    let mut confusion = vec![vec![0u64; k]; k];
    for (row, &y) in logits.chunks_exact(k.max(1)).zip(truth) {
        let y = y as usize;
        let ly = row[y];
        let beaten_by = row
            .iter()
            .enumerate()
            .filter(|&(j, &l)| l > ly || (l == ly && j < y))
            .count();
        // argmax: the first maximum.
        let pred = row
            .iter()
            .enumerate()
            .fold(0, |best, (j, &l)| if l > row[best] { j } else { best });
        confusion[y][pred] += 1;
        top1 += (beaten_by == 0) as usize;
        top3 += (beaten_by < 3) as usize;
    }
    let per_class = confusion
        .iter()
        .enumerate()
        .map(|(c, r)| {
            let total: u64 = r.iter().sum();
            (total > 0).then(|| r[c] as f64 / total as f64)
        })
        .collect();
    let frac = |x: usize| if n == 0 { 0.0 } else { x as f64 / n as f64 };
    (frac(top1), frac(top3), per_class, confusion)
}

fn run(ctx: &StageCtx<'_>) -> Result<(), StageError> {
    let p = EvalParams::parse(ctx.params).map_err(StageError::from)?;
    let dev = train::setup(ctx.threads, &p.device)?;
    super::precision::check(p.precision, dev)?;
    let model_input = ctx.one_input("model")?;
    let what = format!("input `model` ({})", model_input.instance);
    let meta = ModelMeta::read(&model_input.path, &what)?;
    let arch = meta.architecture(&what)?;
    let ds = ctx.dataset_input("data")?;
    let base = data::base_dir(ctx, "data", &ds)?;
    let raw = data::load_split("data", &ds, &base, &p.split)?;
    if ds.num_classes() != meta.num_classes {
        return Err(StageError::user(format!(
            "{what} predicts {} classes, input `data` has {}",
            meta.num_classes,
            ds.num_classes()
        )));
    }
    let imagenet = meta.transform.as_ref().map(|t| (t.resize, t.size));
    if imagenet.is_none() && raw.images.channels() != meta.in_channels {
        return Err(StageError::user(format!(
            "{what} takes images with {} channels, input `data` has {}",
            meta.in_channels,
            raw.images.channels()
        )));
    }
    let (file, weights) = match p.weights {
        WhichWeights::Best => (train::BEST_FILE, "best"),
        WhichWeights::Final => (train::FINAL_FILE, "final"),
    };
    let vs = nn::VarStore::new(dev);
    let net = model::build(
        &vs.root(),
        arch,
        meta.in_channels as i64,
        meta.num_classes as i64,
    );
    model::load(&vs, &model_input.path.join(file), true, &what)?;
    let x = data::eval_set(&raw, &meta.normalisation, imagenet, dev)?;
    let mut tick = |done: usize, total: usize| {
        (ctx.progress)(Progress {
            pos: done as u64,
            len: total as u64,
            message: format!("{} {}", p.split, weights),
        })
    };
    let logits = train::logits(&net, &x, p.batch_size, p.precision, &mut tick);
    let flat: Vec<f32> = Vec::try_from(logits.flatten(0, -1))
        .map_err(|e| StageError::internal(format!("logits: {e}")))?;
    let k = meta.num_classes;
    let (top1, top3, per_class, confusion) = score(&flat, k, raw.truth());
    let metrics = Metrics {
        split: p.split.clone(),
        n: raw.len(),
        top1,
        top3,
        per_class,
        confusion,
        classes: ds.meta.classes.clone(),
        weights: weights.into(),
        labels: if raw.clean.is_some() {
            "clean"
        } else {
            "given"
        }
        .into(),
    };
    ctx.log(&format!(
        "evaluate: {} ({weights} weights) on split {} of {}: top-1 {:.4}, top-3 {:.4} ({} images)",
        model_input.instance,
        p.split,
        ctx.one_input("data")?.instance,
        top1,
        top3,
        raw.len()
    ));
    if p.predictions {
        let predicted = flat
            .chunks_exact(k.max(1))
            .map(|row| {
                let mut best = 0;
                for (j, v) in row.iter().enumerate() {
                    if *v > row[best] {
                        best = j;
                    }
                }
                best as i64
            })
            .collect();
        let preds = Predictions {
            split: p.split.clone(),
            weights: weights.into(),
            num_classes: k,
            predicted,
        };
        let path = ctx.out.join(PREDICTIONS_FILE);
        let text = serde_json::to_string(&preds).expect("serialises") + "\n";
        std::fs::write(&path, text).map_err(|e| StageError::io(path.display(), e))?;
    }
    let path = ctx.out.join(METRICS_FILE);
    let text = serde_json::to_string_pretty(&metrics).expect("serialises") + "\n";
    std::fs::write(&path, text).map_err(|e| StageError::io(path.display(), e))
}

/// The `evaluate` kind as `rst-torch` runs it; everything but `run` is the engine's.
pub struct EvaluateStage;

pub static EVALUATE_STAGE: EvaluateStage = EvaluateStage;

impl StageRunner for EvaluateStage {
    fn kind(&self) -> &'static dyn StageKind {
        &EVALUATE
    }
    fn run(&self, ctx: &StageCtx<'_>) -> Result<(), StageError> {
        run(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_top1_top3_per_class_and_confusion() {
        // 4 classes, 4 samples.
        let logits = [
            5.0, 1.0, 0.0, 0.0, // true 0: top-1
            0.0, 1.0, 3.0, 2.0, // true 1: rank 3 -> top-3 only
            1.0, 1.0, 0.0, 0.0, // true 1: tie with class 0, which wins argmax -> rank 2
            0.0, 0.0, 0.0, 9.0, // true 3: top-1
        ];
        let (top1, top3, per_class, confusion) = score(&logits, 4, &[0, 1, 1, 3]);
        assert_eq!(top1, 0.5);
        assert_eq!(top3, 1.0);
        assert_eq!(per_class, vec![Some(1.0), Some(0.0), None, Some(1.0)]);
        assert_eq!(
            confusion,
            vec![
                vec![1, 0, 0, 0],
                vec![1, 0, 1, 0],
                vec![0, 0, 0, 0],
                vec![0, 0, 0, 1]
            ]
        );
        let (top1, top3, _, _) = score(
            &[
                1.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0,
            ],
            4,
            &[3, 3, 2, 1],
        );
        // Ties rank the lower class index first.
        assert_eq!(top1, 0.0);
        assert_eq!(top3, 0.25);
    }
}
