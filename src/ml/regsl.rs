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
