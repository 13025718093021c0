//! RegSL (../shared/regsl-spec.md §1–§2): layer-wise constraints and penalties around the
//! pretrained weights, and self-labeling (label correction, reweighting, temperature).
//!
//! Parameter names follow torchvision (`layer1.0.conv1.weight`, `layer2.0.downsample.0.weight`,
//! `layer3.1.bn2.weight`, BN buffers `...running_var`), with the classification head as
//! `head.weight` / `head.bias`.
//!
//! # Which tensors are regularized
//!
//! [`Regularizer::new`] walks the VarStore's variables once (sorted by name) and classifies
//! each one; the classification is fixed for the run:
//!
//! - **Layer weight**: a name ending in `.weight` with a path component `layer1`..`layer4`
//!   (see [`layer_radius`]; whole components are matched, so `layer10` is not `layer1`), of
//!   2 or 4 dimensions and not a BatchNorm: conv kernels including `downsample.0.weight`.
//!   Centre: its own pretrained value; radius / multiplier: the layer's D·γ^k.
//! - **BatchNorm γ**: a 1-D `<module>.weight` in layer1..4 whose module also holds a
//!   `<module>.running_var` variable (what tch's `batch_norm2d` registers, so `bnK.weight`
//!   and `downsample.1.weight`). Radius / multiplier: the layer's D·γ^k.
//! - **Head weight**: `head.weight` (a module whose last path component is `head`), 2-D or
//!   4-D. Centre: zero; radius / multiplier: H.
//! - **Never touched**: every other variable: any `.bias` (conv biases, BN betas, the head
//!   bias), the running statistics, the stem `conv1` / `bn1` and anything else outside
//!   layer1..4 and the head.
//!
//! The snapshot (pretrained value of every layer weight, and γ0 and running variance σ0² of
//! every BatchNorm of layer1..4) is taken in [`Regularizer::new`] with `.detach().copy()`,
//! on the variables' device; nothing is snapshotted for `reg: none`, nor for the head (its
//! centre is zero).
//!
//! # Constraint (`reg: constraint`, [`Regularizer::project`])
//!
//! After each optimizer step every classified tensor is projected onto its own ball and
//! written back in place (`copy_` under `no_grad`): layer weights with [`project_frob`] or
//! [`project_inf_op`] by `norm`, the head weight with the same projection around zero, and
//! BatchNorm γ with [`bn_rule`] (for both norms) using the **current** running variance and
//! the snapshot's γ0, σ0².
//!
//! # Penalty (`reg: penalty`, [`Regularizer::penalty`])
//!
//! The term added to the loss is, over exactly the classified tensors,
//!
//! ```text
//! Σ_layer weights and BN γ  λ_l · dist(W − W0)  +  H · dist(W_head)
//! ```
//!
//! with λ_l = D (layer1, layer2), D·γ (layer3), D·γ² (layer4), and
//! `dist(t) = Σ t²` (the **squared** Frobenius norm) for `frob`, or for `inf-op`
//! `dist(t) = max_j Σ|t_j|` (the largest L1 norm of an output row/filter; for a 1-D BN γ
//! every element is a row, i.e. `max |t|`). BatchNorm γ is penalised directly in γ (not in
//! the γ/σ scale the constraint uses). This is what the authors' `add_penalty` computes
//! for ResNets (every non-bias parameter of layer1..4, i.e. conv kernels and BN γ, against
//! the pretrained state, and the head weight against zero). The result is a scalar tensor
//! that carries gradients to the live variables.
use std::collections::HashMap;

use tch::nn::VarStore;
use tch::{Kind, Reduction, Tensor};

use rst::stages::train::{Norm, Reg};

/// The radius (constraint) or weight (penalty) of a parameter of layer1..4, by name:
/// layer1, layer2 → D; layer3 → D·γ; layer4 → D·γ². None for anything else.
///
/// The layer is the first dot-separated component of the name equal to `layer1`..`layer4`.
pub fn layer_radius(name: &str, d: f64, gamma: f64) -> Option<f64> {
    name.split('.').find_map(|part| match part {
        "layer1" | "layer2" => Some(d),
        "layer3" => Some(d * gamma),
        "layer4" => Some(d * gamma * gamma),
        _ => None,
    })
}

/// All axes but the first.
fn row_axes(t: &Tensor) -> Vec<i64> {
    (1..t.dim() as i64).collect()
}

/// Per output row/filter L1 norms, shaped to broadcast against `t` (for a 1-D tensor every
/// element is its own row).
fn row_l1(t: &Tensor) -> Tensor {
    if t.dim() <= 1 {
        t.abs()
    } else {
        t.abs()
            .sum_dim_intlist(row_axes(t).as_slice(), true, t.kind())
    }
}

/// t / max(1, ‖t‖_F / r): the projection of `t` onto the Frobenius ball of radius r around
/// zero (r ≤ 0: the centre).
fn shrink_frob(t: &Tensor, r: f64) -> Tensor {
    if r.is_nan() || r <= 0.0 {
        return t.zeros_like();
    }
    let norm = t.square().sum(t.kind()).sqrt();
    t / (norm / r).clamp_min(1.0)
}

/// Per row j: t_j / max(1, Σ|t_j| / r) (r ≤ 0: the centre).
fn shrink_inf_op(t: &Tensor, r: f64) -> Tensor {
    if r.is_nan() || r <= 0.0 {
        return t.zeros_like();
    }
    t / (row_l1(t) / r).clamp_min(1.0)
}

/// Frobenius projection: t = w − w0; w0 + t / max(1, ‖t‖_F / r).
pub fn project_frob(w: &Tensor, w0: &Tensor, r: f64) -> Tensor {
    w0 + shrink_frob(&(w - w0), r)
}

/// MARS (inf-op) projection: per output row/filter j, n_j = Σ|t_j|; t_j / max(1, n_j / r).
pub fn project_inf_op(w: &Tensor, w0: &Tensor, r: f64) -> Tensor {
    w0 + shrink_inf_op(&(w - w0), r)
}

/// The BN rule: s = γ/√(σ²+1e-6), s0 = γ0/√(σ0²+1e-6); s ← s0 + clamp(s − s0, −r, r);
/// returns the new γ = s·√(σ²+1e-6) (σ² the current running variance).
pub fn bn_rule(
    gamma: &Tensor,
    running_var: &Tensor,
    gamma0: &Tensor,
    running_var0: &Tensor,
    r: f64,
) -> Tensor {
    let r = if r.is_nan() { 0.0 } else { r.max(0.0) };
    let sd = (running_var + 1e-6).sqrt();
    let s0 = gamma0 / (running_var0 + 1e-6).sqrt();
    let t = gamma / &sd - &s0;
    (t.clamp(-r, r) + s0) * sd
}

/// `dist` of the penalty: Σ t² (frob) or the largest row L1 norm (inf-op).
fn penalty_distance(t: &Tensor, norm: Norm) -> Tensor {
    match norm {
        Norm::Frob => t.square().sum(t.kind()),
        Norm::InfOp => row_l1(t).max(),
    }
}

/// How one regularized tensor is treated.
enum Rule {
    /// A 2-D/4-D weight of layer1..4: its own ball around the pretrained value `w0`.
    Weight { w0: Tensor },
    /// A BatchNorm γ of layer1..4: the BN rule with the module's running variance.
    BatchNorm {
        var_name: String,
        gamma0: Tensor,
        var0: Tensor,
    },
    /// The head weight: a ball around zero.
    Head,
}

struct Entry {
    /// The variable's name in the VarStore.
    name: String,
    /// The radius (constraint) or multiplier (penalty).
    radius: f64,
    rule: Rule,
}

/// The regularizer of one training run: a snapshot of the pretrained weights and BN
/// buffers taken once, and the rules of `reg` / `norm`.
pub struct Regularizer {
    reg: Reg,
    norm: Norm,
    /// Sorted by name.
    entries: Vec<Entry>,
}

/// A copy that shares no storage with the live variable.
fn snapshot(t: &Tensor) -> Tensor {
    t.detach().copy()
}

/// The live variable `name`; the regularizer's tensors must stay in the VarStore.
fn live<'a>(vars: &'a HashMap<String, Tensor>, name: &str) -> &'a Tensor {
    vars.get(name)
        .unwrap_or_else(|| panic!("regularized variable `{name}` is not in the VarStore"))
}

/// Classifies one variable (see the module docs).
fn classify(
    name: &str,
    vars: &HashMap<String, Tensor>,
    d: f64,
    h: f64,
    gamma: f64,
) -> Option<Entry> {
    let t = &vars[name];
    let module = name.strip_suffix(".weight")?;
    let entry = |radius, rule| {
        Some(Entry {
            name: name.to_string(),
            radius,
            rule,
        })
    };
    if module.rsplit('.').next() == Some("head") {
        return match t.dim() {
            2 | 4 => entry(h, Rule::Head),
            _ => None,
        };
    }
    let radius = layer_radius(name, d, gamma)?;
    let var_name = format!("{module}.running_var");
    if let Some(var) = vars.get(&var_name) {
        if t.dim() == 1 {
            return entry(
                radius,
                Rule::BatchNorm {
                    var_name,
                    gamma0: snapshot(t),
                    var0: snapshot(var),
                },
            );
        }
    }
    match t.dim() {
        2 | 4 => entry(radius, Rule::Weight { w0: snapshot(t) }),
        _ => None,
    }
}

impl Regularizer {
    /// Snapshots `vs` (call after loading the pretrained weights and re-initialising the head).
    pub fn new(vs: &VarStore, reg: Reg, norm: Norm, d: f64, h: f64, gamma: f64) -> Regularizer {
        let entries = if reg == Reg::None {
            Vec::new()
        } else {
            let vars = vs.variables();
            let mut names: Vec<&String> = vars.keys().collect();
            names.sort();
            tch::no_grad(|| {
                names
                    .into_iter()
                    .filter_map(|name| classify(name, &vars, d, h, gamma))
                    .collect()
            })
        };
        Regularizer { reg, norm, entries }
    }

    /// For `reg: constraint`: projects every constrained tensor (call after every optimizer
    /// step). No-op for other methods.
    pub fn project(&self, vs: &VarStore) {
        if self.reg != Reg::Constraint {
            return;
        }
        let vars = vs.variables();
        tch::no_grad(|| {
            for e in &self.entries {
                let mut w = live(&vars, &e.name).shallow_clone();
                let projected = match (&e.rule, self.norm) {
                    (Rule::Weight { w0 }, Norm::Frob) => project_frob(&w, w0, e.radius),
                    (Rule::Weight { w0 }, Norm::InfOp) => project_inf_op(&w, w0, e.radius),
                    (Rule::Head, Norm::Frob) => shrink_frob(&w, e.radius),
                    (Rule::Head, Norm::InfOp) => shrink_inf_op(&w, e.radius),
                    (
                        Rule::BatchNorm {
                            var_name,
                            gamma0,
                            var0,
                        },
                        _,
                    ) => bn_rule(&w, live(&vars, var_name), gamma0, var0, e.radius),
                };
                w.copy_(&projected);
            }
        });
    }

    /// For `reg: penalty`: the term added to the loss. None for other methods.
    ///
    /// `Σ λ_l·dist(W − W0)` over the layer1..4 weights and BN γ plus `H·dist(W_head)`, with
    /// `dist` = squared Frobenius norm (frob) or largest row L1 norm (inf-op); see the
    /// module docs.
    pub fn penalty(&self, vs: &VarStore) -> Option<Tensor> {
        if self.reg != Reg::Penalty {
            return None;
        }
        let vars = vs.variables();
        let mut total: Option<Tensor> = None;
        for e in &self.entries {
            let w = live(&vars, &e.name);
            let diff = match &e.rule {
                Rule::Weight { w0 } => w - w0,
                Rule::BatchNorm { gamma0, .. } => w - gamma0,
                Rule::Head => w.shallow_clone(),
            };
            let term = penalty_distance(&diff, self.norm) * e.radius;
            total = Some(match total {
                None => term,
                Some(acc) => acc + term,
            });
        }
        Some(total.unwrap_or_else(|| Tensor::zeros([], (Kind::Float, vs.device()))))
    }
}

/// Label correction on a batch: where max softmax(logits) > thres (strict) and the argmax
/// differs from the current label, the label becomes the argmax. Returns the new labels
/// and how many changed.
///
/// The probabilities are `exp(log_softmax(logits))` (as the authors', whose model outputs
/// log-probabilities; passing log-probabilities instead of logits gives the same result).
pub fn correct_labels(logits: &Tensor, labels: &Tensor, thres: f64) -> (Tensor, i64) {
    tch::no_grad(|| {
        let probs = logits.detach().log_softmax(-1, logits.kind()).exp();
        let (max_p, argmax) = probs.max_dim(-1, false);
        let mask = max_p.gt(thres).logical_and(&argmax.ne_tensor(labels));
        let new = argmax.to_kind(labels.kind()).where_self(&mask, labels);
        let changed = mask.sum(Kind::Int64).int64_value(&[]);
        (new, changed)
    })
}

/// The reweighting: w = softmax(−ℓ.detach()/T) over the batch.
fn sample_weights(nll: &Tensor, temp: f64) -> Tensor {
    (-nll.detach() / temp).softmax(0, nll.kind())
}

/// Reweighted loss: ℓ_i = NLL(log_probs_i, labels_i); w = softmax(−ℓ.detach()/T); Σ w_i ℓ_i.
pub fn reweighted_nll(log_probs: &Tensor, labels: &Tensor, temp: f64) -> Tensor {
    let nll = log_probs.g_nll_loss::<Tensor>(labels, None, Reduction::None, -100);
    let w = sample_weights(&nll, temp);
    (nll * w).sum(log_probs.kind())
}

/// Temperature after epoch `epoch` (1-based, called after the LR scheduler step): if
/// epoch > reweight_epoch, T0·max(0.5, exp(−0.1·(epoch − reweight_epoch))), else `current`.
pub fn temperature(t0: f64, epoch: usize, reweight_epoch: usize, current: f64) -> f64 {
    if epoch > reweight_epoch {
        t0 * f64::max(0.5, (-0.1 * (epoch - reweight_epoch) as f64).exp())
    } else {
        current
    }
}

#[cfg(test)]
mod tests {
    //! Reference values come from PyTorch 2.13 via `tests/fixtures/regsl/make_fixtures.py`
    //! (`.venv/bin/python tests/fixtures/regsl/make_fixtures.py` rewrites `fixtures.json`).
    use super::*;
    use serde_json::Value;
    use tch::nn;
    use tch::Device;

    fn fixtures() -> Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/regsl/fixtures.json"
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn shape_of(v: &Value) -> Vec<i64> {
        v["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect()
    }

    fn floats(v: &Value) -> Vec<f32> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    }

    fn tensor(v: &Value) -> Tensor {
        Tensor::from_slice(&floats(v)).reshape(shape_of(v))
    }

    fn longs(v: &Value) -> Tensor {
        let data: Vec<i64> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect();
        Tensor::from_slice(&data)
    }

    fn values(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.detach().to_kind(Kind::Float).flatten(0, -1)).unwrap()
    }

    /// |a − e| ≤ tol·max(1, |e|) elementwise, shapes equal.
    fn assert_close(actual: &Tensor, expected: &Tensor, tol: f64, what: &str) {
        assert_eq!(actual.size(), expected.size(), "{what}: shape");
        for (i, (a, e)) in values(actual).iter().zip(values(expected)).enumerate() {
            let (a, e) = (*a as f64, e as f64);
            assert!(
                (a - e).abs() <= tol * e.abs().max(1.0),
                "{what}[{i}]: {a} vs expected {e}"
            );
        }
    }

    fn l2(t: &Tensor) -> f64 {
        values(t)
            .iter()
            .map(|x| (*x as f64).powi(2))
            .sum::<f64>()
            .sqrt()
    }

    /// Per-row L1 norms (all axes but the first; a 1-D tensor: |t_j|).
    fn row_norms(t: &Tensor) -> Vec<f64> {
        let v = values(t);
        let rows = if t.dim() == 0 {
            1
        } else {
            t.size()[0] as usize
        };
        let per = v.len() / rows;
        v.chunks(per)
            .map(|c| c.iter().map(|x| (*x as f64).abs()).sum())
            .collect()
    }

    #[test]
    fn layer_radius_by_name() {
        let (d, g) = (3.0, 0.5);
        assert_eq!(layer_radius("layer1.0.conv1.weight", d, g), Some(3.0));
        assert_eq!(
            layer_radius("layer2.0.downsample.0.weight", d, g),
            Some(3.0)
        );
        assert_eq!(
            layer_radius("layer2.0.downsample.1.weight", d, g),
            Some(3.0)
        );
        assert_eq!(layer_radius("layer3.1.bn2.weight", d, g), Some(1.5));
        assert_eq!(layer_radius("layer4.2.conv3.weight", d, g), Some(0.75));
        assert_eq!(layer_radius("conv1.weight", d, g), None);
        assert_eq!(layer_radius("bn1.weight", d, g), None);
        assert_eq!(layer_radius("head.weight", d, g), None);
        assert_eq!(layer_radius("layer10.0.conv1.weight", d, g), None);
    }

    #[test]
    fn frob_projection_matches_pytorch() {
        let fx = fixtures();
        let cases = fx["frob"].as_array().unwrap();
        for (i, c) in cases.iter().enumerate() {
            let (w, w0, r) = (tensor(&c["w"]), tensor(&c["w0"]), c["r"].as_f64().unwrap());
            let out = project_frob(&w, &w0, r);
            assert_close(
                &out,
                &tensor(&c["expected"]),
                1e-6,
                &format!("frob case {i}"),
            );
            assert!(l2(&(&out - &w0)) <= r * (1.0 + 1e-5));
        }
        // case 0 is inside its ball (unchanged), case 1 outside (onto the sphere)
        let c0 = &cases[0];
        assert_close(
            &project_frob(
                &tensor(&c0["w"]),
                &tensor(&c0["w0"]),
                c0["r"].as_f64().unwrap(),
            ),
            &tensor(&c0["w"]),
            1e-6,
            "inside",
        );
        let c1 = &cases[1];
        let (w0, r) = (tensor(&c1["w0"]), c1["r"].as_f64().unwrap());
        let out = project_frob(&tensor(&c1["w"]), &w0, r);
        assert!((l2(&(&out - &w0)) - r).abs() <= 1e-5 * r);
    }

    #[test]
    fn inf_op_projection_matches_pytorch() {
        let fx = fixtures();
        for (i, c) in fx["inf_op"].as_array().unwrap().iter().enumerate() {
            let (w, w0, r) = (tensor(&c["w"]), tensor(&c["w0"]), c["r"].as_f64().unwrap());
            let out = project_inf_op(&w, &w0, r);
            assert_close(
                &out,
                &tensor(&c["expected"]),
                1e-6,
                &format!("inf-op case {i}"),
            );
            let before = row_norms(&(&w - &w0));
            let after = row_norms(&(&out - &w0));
            assert!(before.iter().any(|n| *n > r) && before.iter().any(|n| *n < r));
            for (b, a) in before.iter().zip(&after) {
                assert!(*a <= r * (1.0 + 1e-5), "row norm {a} > {r}");
                if *b <= r {
                    assert!((a - b).abs() <= 1e-5 * b.max(1.0), "an inside row moved");
                }
            }
        }
        assert_eq!(fx["inf_op"][0]["w"]["shape"].as_array().unwrap().len(), 4);
    }

    #[test]
    fn bn_rule_matches_pytorch() {
        let fx = fixtures();
        let c = &fx["bn"];
        let (g, var, g0, var0) = (
            tensor(&c["gamma"]),
            tensor(&c["var"]),
            tensor(&c["gamma0"]),
            tensor(&c["var0"]),
        );
        let r = c["r"].as_f64().unwrap();
        let out = bn_rule(&g, &var, &g0, &var0, r);
        assert_close(&out, &tensor(&c["expected"]), 1e-6, "bn rule");
        let s = &out / (&var + 1e-6).sqrt();
        let s0 = &g0 / (&var0 + 1e-6).sqrt();
        for x in values(&(s - s0)) {
            assert!((x as f64).abs() <= r * (1.0 + 1e-5));
        }
    }

    #[test]
    fn reweighting_matches_pytorch() {
        let fx = fixtures();
        let c = &fx["reweight"];
        let lp = tensor(&c["log_probs"]).set_requires_grad(true);
        let y = longs(&c["labels"]);
        let temp = c["temp"].as_f64().unwrap();
        let nll = lp.g_nll_loss::<Tensor>(&y, None, Reduction::None, -100);
        assert_close(&nll, &tensor(&c["nll"]), 1e-6, "nll");
        let w = sample_weights(&nll, temp);
        assert_close(&w, &tensor(&c["weights"]), 1e-6, "weights");
        assert!((w.sum(Kind::Float).double_value(&[]) - 1.0).abs() < 1e-6);
        let loss = reweighted_nll(&lp, &y, temp);
        let expected = c["loss"].as_f64().unwrap();
        assert!((loss.double_value(&[]) - expected).abs() <= 1e-6 * expected.max(1.0));
        // the weights are detached: ∂loss/∂lp[i, y_i] = −w_i, zero elsewhere
        loss.backward();
        assert_close(&lp.grad(), &tensor(&c["grad"]), 1e-6, "grad");
    }

    #[test]
    fn label_correction_matches_pytorch() {
        let fx = fixtures();
        for (i, c) in fx["correct"].as_array().unwrap().iter().enumerate() {
            let logits = tensor(&c["logits"]);
            let labels = longs(&c["labels"]);
            let (new, changed) = correct_labels(&logits, &labels, c["thres"].as_f64().unwrap());
            assert_eq!(
                Vec::<i64>::try_from(&new).unwrap(),
                Vec::<i64>::try_from(&longs(&c["new_labels"])).unwrap(),
                "case {i}"
            );
            assert_eq!(changed, c["changed"].as_i64().unwrap(), "case {i}");
            assert_eq!(new.kind(), Kind::Int64);
        }
        // strict `>`: two equal logits give p = 0.5 exactly, not above a 0.5 threshold
        let edge = Tensor::from_slice(&[1.0f32, 1.0]).reshape([1, 2]);
        let (new, changed) = correct_labels(&edge, &Tensor::from_slice(&[1i64]), 0.5);
        assert_eq!((new.int64_value(&[0]), changed), (1, 0));
        let (new, changed) = correct_labels(&edge, &Tensor::from_slice(&[1i64]), 0.4999);
        assert_eq!((new.int64_value(&[0]), changed), (0, 1));
    }

    #[test]
    fn temperature_schedule_matches_pytorch() {
        let fx = fixtures();
        for c in fx["temperature"].as_array().unwrap() {
            let t0 = c["t0"].as_f64().unwrap();
            let re = c["reweight_epoch"].as_u64().unwrap() as usize;
            let mut t = t0;
            for (i, e) in c["after_epoch"].as_array().unwrap().iter().enumerate() {
                t = temperature(t0, i + 1, re, t);
                assert!(
                    (t - e.as_f64().unwrap()).abs() < 1e-12,
                    "T0 {t0}, epoch {}",
                    i + 1
                );
            }
        }
        assert_eq!(temperature(2.0, 5, 5, 2.0), 2.0);
        assert_eq!(temperature(2.0, 6, 5, 2.0), 2.0 * (-0.1f64).exp());
        assert_eq!(temperature(2.0, 30, 5, 1.234), 1.0);
    }

    /// A torchvision-named model built from tch modules: stem conv1/bn1, layer1 (conv, BN),
    /// layer3 (conv, BN, downsample conv + BN), layer4 (conv), head.
    fn tiny_model(vs: &VarStore) {
        let root = vs.root();
        let conv = |p: nn::Path, i, o, k| {
            let cfg = nn::ConvConfig {
                bias: false,
                ..Default::default()
            };
            nn::conv2d(p, i, o, k, cfg);
        };
        let bn = |p: nn::Path, n| {
            nn::batch_norm2d(p, n, Default::default());
        };
        conv(&root / "conv1", 1, 2, 1);
        bn(&root / "bn1", 2);
        conv(&root / "layer1" / "0" / "conv1", 2, 2, 2);
        bn(&root / "layer1" / "0" / "bn1", 2);
        conv(&root / "layer3" / "0" / "conv1", 2, 3, 1);
        bn(&root / "layer3" / "0" / "bn1", 3);
        conv(&root / "layer3" / "0" / "downsample" / "0", 2, 3, 1);
        bn(&root / "layer3" / "0" / "downsample" / "1", 3);
        conv(&root / "layer4" / "0" / "conv1", 3, 2, 1);
        nn::linear(&root / "head", 2, 3, Default::default());
    }

    /// Copies `state` (fixture name → tensor) into the VarStore, which must hold exactly
    /// those names.
    fn load(vs: &VarStore, state: &Value) {
        let state = state.as_object().unwrap();
        let vars = vs.variables();
        let mut a: Vec<&String> = vars.keys().collect();
        let mut b: Vec<&String> = state.keys().collect();
        a.sort();
        b.sort();
        assert_eq!(a, b);
        tch::no_grad(|| {
            for (name, v) in &vars {
                v.shallow_clone().copy_(&tensor(&state[name.as_str()]));
            }
        });
    }

    fn var(vs: &VarStore, name: &str) -> Tensor {
        vs.variables()[name].detach().copy()
    }

    /// The layer weights and BN γ of the tiny model, with their radius for D, γ.
    fn constrained(d: f64, g: f64) -> Vec<(&'static str, f64)> {
        vec![
            ("layer1.0.conv1.weight", d),
            ("layer1.0.bn1.weight", d),
            ("layer3.0.conv1.weight", d * g),
            ("layer3.0.bn1.weight", d * g),
            ("layer3.0.downsample.0.weight", d * g),
            ("layer3.0.downsample.1.weight", d * g),
            ("layer4.0.conv1.weight", d * g * g),
        ]
    }

    fn params(fx: &Value) -> (f64, f64, f64) {
        let r = &fx["regularizer"];
        (
            r["d"].as_f64().unwrap(),
            r["h"].as_f64().unwrap(),
            r["gamma"].as_f64().unwrap(),
        )
    }

    fn check_projection(norm: Norm, key: &str) {
        let fx = fixtures();
        let fr = &fx["regularizer"];
        let (d, h, g) = params(&fx);
        let vs = VarStore::new(Device::Cpu);
        tiny_model(&vs);
        load(&vs, &fr["pretrained"]);
        let reg = Regularizer::new(&vs, Reg::Constraint, norm, d, h, g);
        assert!(reg.penalty(&vs).is_none());
        // train far away in place (a snapshot sharing storage would move along)
        load(&vs, &fr["perturbed"]);
        reg.project(&vs);

        let expected = fr[key].as_object().unwrap();
        let mut changed: Vec<&str> = expected.keys().map(String::as_str).collect();
        changed.sort();
        let mut want: Vec<&str> = constrained(d, g).iter().map(|(n, _)| *n).collect();
        want.push("head.weight");
        want.sort();
        assert_eq!(
            changed, want,
            "the tensors the reference projection changed"
        );
        for (name, v) in vs.variables() {
            match expected.get(&name) {
                Some(e) => assert_close(&v, &tensor(e), 1e-6, &name),
                // biases, BN betas, running stats, stem, head bias: untouched, bit for bit
                None => assert!(
                    v.equal(&tensor(&fr["perturbed"][name.as_str()])),
                    "{name} was modified"
                ),
            }
        }

        let pre = |n: &str| tensor(&fr["pretrained"][n]);
        let cur = |n: &str| tensor(&fr["perturbed"][n]);
        let within = |dist: f64, r: f64, what: &str| {
            assert!(dist <= r * (1.0 + 1e-5), "{what}: {dist} > {r}");
        };
        for (name, r) in constrained(d, g) {
            let w = var(&vs, name);
            if name.contains("bn") || name.contains("downsample.1") {
                let v = name.replace(".weight", ".running_var");
                let s = &w / (var(&vs, &v) + 1e-6).sqrt();
                let s0 = pre(name) / (pre(&v) + 1e-6).sqrt();
                let s_before = cur(name) / (cur(&v) + 1e-6).sqrt();
                let before = values(&(s_before - &s0))
                    .iter()
                    .map(|x| x.abs())
                    .fold(0f32, f32::max);
                assert!(
                    before as f64 > r,
                    "{name} was not perturbed out of its ball"
                );
                for x in values(&(s - s0)) {
                    within(x.abs() as f64, r, name);
                }
            } else {
                let t = &w - pre(name);
                let before = &cur(name) - pre(name);
                match norm {
                    Norm::Frob => {
                        assert!(l2(&before) > r);
                        within(l2(&t), r, name);
                    }
                    Norm::InfOp => {
                        assert!(row_norms(&before).iter().any(|n| *n > r));
                        for n in row_norms(&t) {
                            within(n, r, name);
                        }
                    }
                }
            }
        }
        // the head around zero with radius H
        let head = var(&vs, "head.weight");
        match norm {
            Norm::Frob => within(l2(&head), h, "head"),
            Norm::InfOp => row_norms(&head)
                .into_iter()
                .for_each(|n| within(n, h, "head")),
        }
        // projecting again changes nothing (up to rounding)
        let before: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .map(|(n, v)| (n, v.copy()))
            .collect();
        reg.project(&vs);
        for (name, v) in before {
            assert_close(&var(&vs, &name), &v, 1e-6, &name);
        }
    }

    #[test]
    fn constraint_frob_on_torchvision_names() {
        check_projection(Norm::Frob, "projected_frob");
    }

    #[test]
    fn constraint_inf_op_on_torchvision_names() {
        check_projection(Norm::InfOp, "projected_inf_op");
    }

    /// The penalty recomputed by hand in f64 from the fixture values.
    fn hand_penalty(fx: &Value, norm: Norm) -> f64 {
        let fr = &fx["regularizer"];
        let (d, h, g) = params(fx);
        let dist = |w: Vec<f64>, shape: Vec<i64>| -> f64 {
            match norm {
                Norm::Frob => w.iter().map(|x| x * x).sum(),
                Norm::InfOp => {
                    let rows = if shape.len() == 1 {
                        w.len()
                    } else {
                        shape[0] as usize
                    };
                    w.chunks(w.len() / rows)
                        .map(|c| c.iter().map(|x| x.abs()).sum::<f64>())
                        .fold(0.0, f64::max)
                }
            }
        };
        let f64s = |v: &Value| -> Vec<f64> { floats(v).into_iter().map(f64::from).collect() };
        let mut total = 0.0;
        for (name, lambda) in constrained(d, g) {
            let (w, w0) = (f64s(&fr["perturbed"][name]), f64s(&fr["pretrained"][name]));
            let t = w.iter().zip(&w0).map(|(a, b)| a - b).collect();
            total += lambda * dist(t, shape_of(&fr["perturbed"][name]));
        }
        let head = &fr["perturbed"]["head.weight"];
        total + h * dist(f64s(head), shape_of(head))
    }

    fn check_penalty(norm: Norm, key: &str) {
        let fx = fixtures();
        let fr = &fx["regularizer"];
        let (d, h, g) = params(&fx);
        let vs = VarStore::new(Device::Cpu);
        tiny_model(&vs);
        load(&vs, &fr["pretrained"]);
        let reg = Regularizer::new(&vs, Reg::Penalty, norm, d, h, g);
        let at_start = reg.penalty(&vs).unwrap().double_value(&[]);
        let head_only = h * match norm {
            Norm::Frob => l2(&var(&vs, "head.weight")).powi(2),
            Norm::InfOp => row_norms(&var(&vs, "head.weight"))
                .into_iter()
                .fold(0.0, f64::max),
        };
        assert!((at_start - head_only).abs() <= 1e-6 * head_only.max(1.0));
        load(&vs, &fr["perturbed"]);
        let before = vs.variables();
        let p = reg.penalty(&vs).unwrap();
        let hand = hand_penalty(&fx, norm);
        let torch_ref = fr[key].as_f64().unwrap();
        let got = p.double_value(&[]);
        assert!((got - hand).abs() <= 1e-6 * hand, "{got} vs hand {hand}");
        assert!(
            (got - torch_ref).abs() <= 1e-6 * torch_ref,
            "{got} vs torch {torch_ref}"
        );
        // penalty mode never projects
        reg.project(&vs);
        for (name, v) in before {
            assert!(v.equal(&tensor(&fr["perturbed"][name.as_str()])), "{name}");
        }
        // gradients reach the live variables: frob on the head gives 2·H·W
        p.backward();
        let vars = vs.variables();
        if norm == Norm::Frob {
            let head = &vars["head.weight"];
            assert_close(
                &head.grad(),
                &(head.detach() * (2.0 * h)),
                1e-6,
                "head grad",
            );
        }
        for name in ["conv1.weight", "bn1.weight"] {
            let g = vars[name].grad();
            assert!(
                !g.defined() || values(&g).iter().all(|x| *x == 0.0),
                "{name}"
            );
        }
    }

    #[test]
    fn penalty_frob_matches_hand_and_pytorch() {
        check_penalty(Norm::Frob, "penalty_frob");
    }

    #[test]
    fn penalty_inf_op_matches_hand_and_pytorch() {
        check_penalty(Norm::InfOp, "penalty_inf_op");
    }

    #[test]
    fn reg_none_does_nothing() {
        let fx = fixtures();
        let vs = VarStore::new(Device::Cpu);
        tiny_model(&vs);
        load(&vs, &fx["regularizer"]["pretrained"]);
        let reg = Regularizer::new(&vs, Reg::None, Norm::Frob, 0.0, 0.0, 1.0);
        assert!(reg.entries.is_empty());
        load(&vs, &fx["regularizer"]["perturbed"]);
        reg.project(&vs);
        assert!(reg.penalty(&vs).is_none());
        for (name, v) in vs.variables() {
            assert!(v.equal(&tensor(&fx["regularizer"]["perturbed"][name.as_str()])));
        }
    }

    #[test]
    fn snapshot_does_not_alias_and_stays_on_device() {
        let vs = VarStore::new(Device::Cpu);
        tiny_model(&vs);
        let reg = Regularizer::new(&vs, Reg::Constraint, Norm::Frob, 1.0, 1.0, 1.0);
        tch::no_grad(|| {
            for (_, v) in vs.variables() {
                let _ = v.shallow_clone().fill_(7.0);
            }
        });
        for e in &reg.entries {
            let snaps: Vec<&Tensor> = match &e.rule {
                Rule::Weight { w0 } => vec![w0],
                Rule::BatchNorm { gamma0, var0, .. } => vec![gamma0, var0],
                Rule::Head => vec![],
            };
            for s in snaps {
                assert!(values(s).iter().all(|x| *x != 7.0), "{}", e.name);
                assert_eq!(s.device(), Device::Cpu);
                assert!(!s.requires_grad());
            }
        }
        assert!(reg
            .entries
            .iter()
            .any(|e| matches!(e.rule, Rule::BatchNorm { .. })));
    }
}
