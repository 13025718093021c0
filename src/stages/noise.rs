//! The `noise` stage kind: independent label noise on one split (the paper's §3), written
//! as a *view* over the materialised base dataset.
//!
//! ```yaml
//! params:
//!   rate: 0.4        # 0 <= rate <= 1
//!   seed: 1024       # default 1024 (the authors' fixed seed)
//!   mode: uniform    # uniform | exclude-true | pair
//!   split: train     # default train; every other split is copied untouched
//! ```
//!
//! Exactly `floor(rate * n)` samples of the split (Python's `int(rate * n)`) are chosen
//! without replacement with `Prng::new(seed, "noise/<split>").sample(n, k)`; then, in that
//! selection order, each chosen sample gets a new label:
//! - `uniform`: uniform over all K classes, the true one included (the paper's rule, so the
//!   realised flip rate is about rate·(K−1)/K);
//! - `exclude-true`: uniform over the K−1 classes other than the true one;
//! - `pair`: true class i becomes (i + 1) mod K (no random draw).
//!
//! "True" is the clean label: the input's `clean_labels` when it already carries noise,
//! else its labels. The output keeps those as `clean_labels`, so noise on noise still
//! knows the original labels. Samples not chosen keep the input's (possibly noisy) label.
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    canonical_as, check_split_name, parse_params, Arity, InputDecl, ParamError, Progress, StageCtx,
    StageError, StageKind, StageRunner, Upstreams,
};
use crate::data::dataset::{write_view, LabelSplit};
use crate::prng::Prng;
use crate::stages::train::{Predictions, PREDICTIONS_FILE};

pub struct Noise;

/// Bump when the same inputs and params would give other labels (the draws, their order,
/// the `info` written).
const VERSION: u32 = 1;

const INPUTS: &[InputDecl] = &[
    InputDecl {
        name: "data",
        arity: Arity::One,
        required: true,
    },
    InputDecl {
        name: "predictions",
        arity: Arity::One,
        required: false,
    },
];

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum NoiseMode {
    #[default]
    Uniform,
    ExcludeTrue,
    Pair,
    Correlated,
}

impl NoiseMode {
    fn as_str(self) -> &'static str {
        match self {
            NoiseMode::Uniform => "uniform",
            NoiseMode::ExcludeTrue => "exclude-true",
            NoiseMode::Pair => "pair",
            NoiseMode::Correlated => "correlated",
        }
    }
}

#[derive(Debug, Clone, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoiseParams {
    /// Required for the random modes; not used by `correlated`.
    #[serde(default)]
    pub rate: Option<f64>,
    /// Seeds which samples get a noisy label and which label (the paper: 1024).
    #[serde(default = "default_seed")]
    pub seed: u64,
    #[serde(default)]
    pub mode: NoiseMode,
    /// The split whose labels are corrupted; the others are kept clean.
    #[serde(default = "default_split")]
    pub split: String,
}

fn default_seed() -> u64 {
    1024
}

fn default_split() -> String {
    "train".into()
}

fn parse(params: &Value) -> Result<NoiseParams, ParamError> {
    let p: NoiseParams = parse_params(params)?;
    match (p.mode, p.rate) {
        (NoiseMode::Correlated, Some(_)) => {
            return Err(ParamError::new(
                "rate",
                "mode correlated replaces every label by the model's prediction; its rate is \
                 what the model gets wrong (recorded as realised_rate), not a parameter",
            )
            .help("remove `rate`"))
        }
        (NoiseMode::Correlated, None) => {}
        (_, None) => {
            return Err(
                ParamError::new("rate", "is required (a number between 0 and 1)")
                    .help("e.g. rate: 0.4"),
            )
        }
        (_, Some(rate)) if !(rate.is_finite() && (0.0..=1.0).contains(&rate)) => {
            return Err(ParamError::new(
                "rate",
                format!("must be between 0 and 1, got {rate}"),
            ))
        }
        _ => {}
    }
    if p.split.is_empty() {
        return Err(ParamError::new("split", "the split name is empty"));
    }
    Ok(p)
}

/// Python's `int(rate * n)` for 0 <= rate <= 1.
fn noisy_count(rate: f64, n: usize) -> usize {
    ((rate * n as f64).floor() as usize).min(n)
}

impl StageKind for Noise {
    fn params_schema(&self) -> schemars::Schema {
        params_schema()
    }
    fn checks_upstream(&self) -> bool {
        true
    }
    fn name(&self) -> &'static str {
        "noise"
    }
    fn version(&self) -> u32 {
        VERSION
    }
    fn check(&self, params: &Value) -> Result<(), ParamError> {
        parse(params).map(|_| ())
    }
    fn inputs(&self) -> Option<&'static [InputDecl]> {
        Some(INPUTS)
    }
    fn canonical_params(&self, params: &Value) -> Value {
        canonical_as::<NoiseParams>(params)
    }
    fn check_upstream(&self, params: &Value, inputs: &Upstreams<'_>) -> Result<(), ParamError> {
        let p = parse(params)?;
        check_split_name(inputs, "data", "split", &p.split)
    }
    /// A noisy view keeps every split of its input.
    fn output_splits(&self, _params: &Value, inputs: &Upstreams<'_>) -> Option<Vec<String>> {
        Some(inputs.get("data")?.first()?.splits?.to_vec())
    }
}

impl StageRunner for Noise {
    fn kind(&self) -> &'static dyn StageKind {
        &Noise
    }
    fn run(&self, ctx: &StageCtx<'_>) -> Result<(), StageError> {
        let p = parse(ctx.params).map_err(StageError::from)?;
        let input = ctx.dataset_input("data")?;
        let k = input.num_classes();
        let Some(target) = input.splits.get(&p.split) else {
            let names: Vec<&str> = input.splits.keys().map(String::as_str).collect();
            let hint = crate::hint::did_you_mean(&p.split, names.iter().copied())
                .map(|h| format!(" ({h})"))
                .unwrap_or_default();
            return Err(StageError::user(format!(
                "params.split: the input has no split `{}`; it has {}{hint}",
                p.split,
                names
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        let n = target.labels.len();
        let clean: Vec<i64> = target
            .clean_labels
            .clone()
            .unwrap_or_else(|| target.labels.clone());
        for (what, list) in [("label", &target.labels), ("clean label", &clean)] {
            if let Some((row, bad)) = list
                .iter()
                .enumerate()
                .find(|(_, &l)| l < 0 || l as usize >= k)
            {
                return Err(StageError::user(format!(
                    "split `{}` row {row} has {what} {bad}, outside the {k} classes of the input",
                    p.split
                )));
            }
        }
        let predictions = match ctx.inputs.get("predictions") {
            Some(v) if !v.is_empty() => Some(ctx.one_input("predictions")?),
            _ => None,
        };
        if p.mode == NoiseMode::Correlated {
            let Some(preds) = predictions else {
                return Err(StageError::user(
                    "mode correlated needs input `predictions`: an `evaluate` stage with \
                     `predictions: true` of a model on this split (inputs: {data: ..., \
                     predictions: <that stage>})",
                ));
            };
            let labels = correlated_labels(&preds.path, &preds.instance, &p.split, n, k)?;
            return self.write(ctx, &input, &p, labels, clean, n, 0);
        }
        if predictions.is_some() {
            return Err(StageError::user(
                "input `predictions` is only used with mode: correlated",
            ));
        }
        let rate = p.rate.expect("checked");
        let chosen_count = noisy_count(rate, n);
        if chosen_count > 0 {
            match p.mode {
                NoiseMode::ExcludeTrue if k < 2 => {
                    return Err(StageError::user(format!(
                        "mode exclude-true needs at least 2 classes; the input has {k}"
                    )));
                }
                _ if k == 0 => return Err(StageError::user("the input has no classes")),
                _ => {}
            }
        }

        let mut prng = Prng::new(p.seed, &format!("noise/{}", p.split));
        let chosen = prng.sample(n, chosen_count);
        let mut labels = target.labels.clone();
        for &i in &chosen {
            let truth = clean[i] as u64;
            labels[i] = match p.mode {
                NoiseMode::Uniform => prng.below(k as u64),
                NoiseMode::ExcludeTrue => {
                    let r = prng.below(k as u64 - 1);
                    if r >= truth {
                        r + 1
                    } else {
                        r
                    }
                }
                NoiseMode::Pair => (truth + 1) % k as u64,
                NoiseMode::Correlated => unreachable!("handled above"),
            } as i64;
        }
        self.write(ctx, &input, &p, labels, clean, n, chosen_count)
    }
}

/// The labels an `evaluate` artifact (at `dir`, input instance `what`) predicted for the
/// `n` images of split `split`.
fn correlated_labels(
    dir: &std::path::Path,
    what: &str,
    split: &str,
    n: usize,
    k: usize,
) -> Result<Vec<i64>, StageError> {
    let path = dir.join(PREDICTIONS_FILE);
    let text = std::fs::read_to_string(&path).map_err(|_| {
        StageError::user(format!(
            "input `predictions` ({what}) has no {PREDICTIONS_FILE}: give its evaluate stage \
             `predictions: true`"
        ))
    })?;
    let preds: Predictions = serde_json::from_str(&text).map_err(|e| {
        StageError::user(format!(
            "input `predictions` ({what}): {PREDICTIONS_FILE}: {e}"
        ))
    })?;
    if preds.split != split || preds.predicted.len() != n {
        return Err(StageError::user(format!(
            "input `predictions` ({what}) predicts split `{}` ({} images), but this stage \
             relabels split `{split}` ({n} images): evaluate the same split of the same data",
            preds.split,
            preds.predicted.len()
        )));
    }
    if preds.num_classes != k {
        return Err(StageError::user(format!(
            "input `predictions` ({what}) comes from a model of {} classes; the data has {k}",
            preds.num_classes
        )));
    }
    Ok(preds.predicted)
}

impl Noise {
    /// Writes the view with `labels` on split `p.split` and the facts of the noise.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        ctx: &StageCtx<'_>,
        input: &crate::data::dataset::Dataset,
        p: &NoiseParams,
        labels: Vec<i64>,
        clean: Vec<i64>,
        n: usize,
        chosen_count: usize,
    ) -> Result<(), StageError> {
        let target = &input.splits[&p.split];
        let flipped = labels.iter().zip(&clean).filter(|(a, b)| a != b).count();
        let changed = labels
            .iter()
            .zip(&target.labels)
            .filter(|(a, b)| a != b)
            .count();
        let realised = if n == 0 {
            0.0
        } else {
            flipped as f64 / n as f64
        };

        let mut out_splits = std::collections::BTreeMap::new();
        for (name, s) in &input.splits {
            let (source, index) = input.base_rows(name).expect("split exists");
            let split = if *name == p.split {
                LabelSplit {
                    index: Some(index),
                    labels: labels.clone(),
                    clean_labels: Some(clean.clone()),
                }
            } else {
                LabelSplit {
                    index: Some(index),
                    labels: s.labels.clone(),
                    clean_labels: s.clean_labels.clone(),
                }
            };
            out_splits.insert(name.clone(), (source, split));
        }
        let mut info = input.meta.info.clone();
        info.insert(
            "noise".into(),
            json!({
                "rate": p.rate,
                "mode": p.mode.as_str(),
                "seed": p.seed,
                "split": p.split,
                "n": n,
                "chosen": chosen_count,
                "flipped": flipped,
                "realised_rate": realised,
                "changed": changed,
            }),
        );
        (ctx.progress)(Progress {
            pos: 1,
            len: 1,
            message: format!("{flipped} of {n} labels differ from the clean ones"),
        });
        write_view(
            ctx.out,
            input.base_digest(),
            input.meta.image_shape,
            input.meta.classes.clone(),
            out_splits,
            info,
        )
        .map_err(|e| StageError::internal(format!("writing the noisy view: {e}")))
    }
}

/// The JSON schema of this kind's `params:` (what the validator deserialises), for the
/// parameter reference (`rst params`).
pub fn params_schema() -> schemars::Schema {
    schemars::schema_for!(NoiseParams)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::dataset::Dataset;
    use crate::stages::split::tests::{make_base, run_stage, BASE_DIGEST};
    use crate::stages::split::Split;
    use std::collections::BTreeSet;
    use std::path::Path;

    fn noise(dir: &Path, input: &Path, digest: &str, params: Value) -> Dataset {
        run_stage(&Noise, dir, input, digest, params).unwrap().1
    }

    fn differing(ds: &Dataset, split: &str) -> usize {
        let s = &ds.splits[split];
        s.labels
            .iter()
            .zip(s.clean_labels.as_ref().unwrap())
            .filter(|(a, b)| a != b)
            .count()
    }

    #[test]
    fn chooses_floor_rate_n_and_records_the_realised_rate() {
        let dir = tempfile::tempdir().unwrap();
        let base = make_base(dir.path());
        // 0.29 * 100 = 28.999999999999996: Python's int() gives 28, and so must we.
        let ds = noise(
            dir.path(),
            &base,
            BASE_DIGEST,
            json!({"rate": 0.29, "mode": "exclude-true"}),
        );
        let info = &ds.meta.info["noise"];
        assert_eq!(info["chosen"], json!(28));
        assert_eq!(info["n"], json!(100));
        assert_eq!(
            differing(&ds, "train"),
            28,
            "exclude-true changes every chosen label"
        );
        assert_eq!(info["flipped"], json!(28));
        assert_eq!(info["realised_rate"], json!(0.28));
        assert_eq!(
            (
                info["mode"].clone(),
                info["seed"].clone(),
                info["rate"].clone()
            ),
            (json!("exclude-true"), json!(1024), json!(0.29))
        );
        let clean: Vec<i64> = (0..100).map(|i| i % 5).collect();
        assert_eq!(ds.splits["train"].clean_labels.as_ref().unwrap(), &clean);
        assert_eq!(ds.base_digest(), BASE_DIGEST);
        assert_eq!(
            ds.base_rows("train").unwrap(),
            ("train".to_string(), (0..100).collect())
        );
        assert_eq!(ds.meta.image_shape, Some([1, 1, 1]));
        assert_eq!(ds.meta.classes.len(), 5);
    }

    #[test]
    fn uniform_mode_can_keep_the_true_label() {
        let dir = tempfile::tempdir().unwrap();
        let base = make_base(dir.path());
        let ds = noise(dir.path(), &base, BASE_DIGEST, json!({"rate": 1.0}));
        let info = &ds.meta.info["noise"];
        assert_eq!(info["chosen"], json!(100));
        let flipped = differing(&ds, "train");
        // About 100 * 4/5 = 80 differ; some chosen samples drew their own label again.
        assert!(flipped < 100 && flipped > 60, "{flipped}");
        assert_eq!(info["flipped"], json!(flipped));
        assert_eq!(info["realised_rate"], json!(flipped as f64 / 100.0));
        assert!(ds.splits["train"]
            .labels
            .iter()
            .all(|&l| (0..5).contains(&l)));
        let seen: BTreeSet<i64> = ds.splits["train"].labels.iter().copied().collect();
        assert_eq!(seen.len(), 5, "labels spread over all classes");
    }

    #[test]
    fn exclude_true_never_keeps_and_pair_shifts_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let base = make_base(dir.path());
        let ds = noise(
            dir.path(),
            &base,
            BASE_DIGEST,
            json!({"rate": 1.0, "mode": "exclude-true"}),
        );
        assert_eq!(differing(&ds, "train"), 100);
        let ds = noise(
            dir.path(),
            &base,
            BASE_DIGEST,
            json!({"rate": 1.0, "mode": "pair"}),
        );
        let s = &ds.splits["train"];
        for (l, c) in s.labels.iter().zip(s.clean_labels.as_ref().unwrap()) {
            assert_eq!(*l, (c + 1) % 5);
        }
        let ds = noise(
            dir.path(),
            &base,
            BASE_DIGEST,
            json!({"rate": 0.5, "mode": "pair", "split": "test"}),
        );
        let s = &ds.splits["test"];
        assert_eq!(differing(&ds, "test"), 10);
        for (l, c) in s.labels.iter().zip(s.clean_labels.as_ref().unwrap()) {
            assert!(*l == *c || *l == (c + 1) % 5);
        }
        assert_eq!(
            ds.splits["train"].clean_labels, None,
            "the other split is untouched"
        );
        assert_eq!(
            ds.splits["train"].labels,
            (0..100).map(|i| i % 5).collect::<Vec<i64>>()
        );
    }

    #[test]
    fn rate_zero_changes_nothing_and_other_splits_are_copied() {
        let dir = tempfile::tempdir().unwrap();
        let base = make_base(dir.path());
        let ds = noise(dir.path(), &base, BASE_DIGEST, json!({"rate": 0}));
        assert_eq!(ds.meta.info["noise"]["chosen"], json!(0));
        assert_eq!(differing(&ds, "train"), 0);
        let input = Dataset::open(&base, BASE_DIGEST).unwrap();
        assert_eq!(ds.splits["test"].labels, input.splits["test"].labels);
        assert_eq!(ds.splits["test"].clean_labels, None);
        assert_eq!(
            ds.base_rows("test").unwrap(),
            input.base_rows("test").unwrap()
        );
    }

    #[test]
    fn noise_on_noise_keeps_the_original_clean_labels() {
        let dir = tempfile::tempdir().unwrap();
        let base = make_base(dir.path());
        let (first_dir, first) = run_stage(
            &Noise,
            dir.path(),
            &base,
            BASE_DIGEST,
            json!({"rate": 0.5, "mode": "exclude-true"}),
        )
        .unwrap();
        let second = noise(
            dir.path(),
            &first_dir,
            "noisy-1",
            json!({"rate": 0.5, "mode": "pair", "seed": 7}),
        );
        let clean: Vec<i64> = (0..100).map(|i| i % 5).collect();
        assert_eq!(
            second.splits["train"].clean_labels.as_ref().unwrap(),
            &clean
        );
        let (s1, s2) = (&first.splits["train"], &second.splits["train"]);
        let chosen = second.meta.info["noise"]["chosen"].as_u64().unwrap() as usize;
        assert_eq!(chosen, 50);
        // Chosen ones become clean+1 (pair), the others keep the first stage's labels.
        let kept = s2
            .labels
            .iter()
            .zip(&s1.labels)
            .filter(|(a, b)| a == b)
            .count();
        assert!(kept >= 50, "{kept}");
        for ((l2, l1), c) in s2.labels.iter().zip(&s1.labels).zip(&clean) {
            assert!(l2 == l1 || *l2 == (c + 1) % 5);
        }
        assert_eq!(
            second.meta.info["noise"]["flipped"],
            json!(differing(&second, "train"))
        );
        assert_eq!(second.base_digest(), BASE_DIGEST);
    }

    #[test]
    fn split_then_noise_keeps_indices_into_the_base() {
        let dir = tempfile::tempdir().unwrap();
        let base = make_base(dir.path());
        let (split_dir, split) = run_stage(
            &Split,
            dir.path(),
            &base,
            BASE_DIGEST,
            json!({"classes": [4, 2, 0], "splits": [
                {"name": "train", "from": "train", "per_class": 15},
                {"name": "val", "from": "train"},
                {"name": "test", "from": "test"},
            ]}),
        )
        .unwrap();
        let ds = noise(dir.path(), &split_dir, "split-digest", json!({"rate": 0.4}));
        assert_eq!(ds.base_digest(), BASE_DIGEST);
        assert_eq!(ds.meta.classes, vec!["c4", "c2", "c0"]);
        for name in ["train", "val", "test"] {
            assert_eq!(ds.base_rows(name), split.base_rows(name), "{name}");
        }
        assert_eq!(
            ds.splits["train"].clean_labels.as_ref(),
            Some(&split.splits["train"].labels)
        );
        assert_eq!(
            ds.meta.info["noise"]["chosen"],
            json!(18),
            "floor(0.4 * 45)"
        );
        assert!(
            ds.splits["train"]
                .labels
                .iter()
                .all(|&l| (0..3).contains(&l)),
            "drawn among the subset's 3 classes"
        );
        assert!(
            ds.meta.info.contains_key("split"),
            "the split's record is kept"
        );
        assert_eq!(ds.splits["val"], split.splits["val"]);
    }

    #[test]
    fn deterministic_and_seeded() {
        let dir = tempfile::tempdir().unwrap();
        let base = make_base(dir.path());
        let params = json!({"rate": 0.4});
        let (a, da) = run_stage(&Noise, dir.path(), &base, BASE_DIGEST, params.clone()).unwrap();
        let (b, _) = run_stage(&Noise, dir.path(), &base, BASE_DIGEST, params).unwrap();
        for file in ["dataset.json", "labels.safetensors"] {
            assert_eq!(
                std::fs::read(a.join(file)).unwrap(),
                std::fs::read(b.join(file)).unwrap(),
                "{file}"
            );
        }
        let dc = noise(
            dir.path(),
            &base,
            BASE_DIGEST,
            json!({"rate": 0.4, "seed": 1}),
        );
        assert_ne!(da.splits["train"].labels, dc.splits["train"].labels);
    }

    /// Pinned output. If this changes, the same params give other noisy labels: bump
    /// VERSION (and say why) rather than editing the expected numbers.
    #[test]
    fn pinned_output_for_seed_1024() {
        let dir = tempfile::tempdir().unwrap();
        let base = make_base(dir.path());
        let ds = noise(dir.path(), &base, BASE_DIGEST, json!({"rate": 0.4}));
        let labels = &ds.splits["train"].labels;
        assert_eq!(VERSION, 1);
        assert_eq!(&labels[..20], PINNED, "{:?}", &labels[..20]);
        assert_eq!(ds.meta.info["noise"]["flipped"], json!(PINNED_FLIPPED));
    }
    const PINNED: &[i64] = &[0, 2, 2, 3, 4, 0, 1, 2, 4, 4, 0, 1, 2, 3, 4, 0, 2, 2, 3, 4];
    const PINNED_FLIPPED: usize = 31;

    #[test]
    fn check_reports_key_paths_and_hints() {
        assert!(Noise.check(&json!({"rate": 0.4})).is_ok());
        assert!(Noise
            .check(&json!({"rate": 1, "mode": "pair", "split": "val", "seed": 3}))
            .is_ok());
        let e = Noise.check(&json!({"rate": 1.5})).unwrap_err();
        assert_eq!(e.path, "rate");
        let e = Noise.check(&json!({"rate": -0.1})).unwrap_err();
        assert_eq!(e.path, "rate");
        let e = Noise.check(&json!({"rate": 0.4, "sed": 1})).unwrap_err();
        assert_eq!(e.help.as_deref(), Some("did you mean `seed`?"), "{e:?}");
        let e = Noise
            .check(&json!({"rate": 0.4, "mode": "exclude_true"}))
            .unwrap_err();
        assert_eq!(e.path, "mode");
        assert_eq!(
            e.help.as_deref(),
            Some("did you mean `exclude-true`?"),
            "{e:?}"
        );
        let e = Noise.check(&json!({"rate": "high"})).unwrap_err();
        assert_eq!(e.path, "rate");
        let e = Noise.check(&json!({"seed": 1})).unwrap_err();
        assert_eq!(e.path, "rate", "{e:?}");
        assert!(Noise.check(&json!({"mode": "correlated"})).is_ok());
        let e = Noise
            .check(&json!({"mode": "correlated", "rate": 0.2}))
            .unwrap_err();
        assert_eq!(
            (e.path.as_str(), e.help.as_deref()),
            ("rate", Some("remove `rate`"))
        );
        assert_eq!(noisy_count(0.4, 5360), 2144);
        assert_eq!(noisy_count(0.7, 10), 7);
    }

    #[test]
    fn unknown_split_is_a_user_error() {
        let dir = tempfile::tempdir().unwrap();
        let base = make_base(dir.path());
        let err = run_stage(
            &Noise,
            dir.path(),
            &base,
            BASE_DIGEST,
            json!({"rate": 0.4, "split": "trian"}),
        )
        .unwrap_err();
        assert!(err.user);
        assert!(
            err.message.contains("did you mean `train`?"),
            "{}",
            err.message
        );
    }

    #[test]
    fn declares_one_required_data_input() {
        let decl = Noise.inputs().unwrap();
        assert_eq!(
            (decl[0].name, decl[0].arity, decl[0].required),
            ("data", Arity::One, true)
        );
        assert_eq!((Noise.name(), Noise.version()), ("noise", 1));
    }
}
