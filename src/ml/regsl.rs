//! RegSL (../shared/regsl-spec.md §1–§2): layer-wise constraints and penalties around the
//! pretrained weights, and self-labeling (label correction, reweighting, temperature).
//!
//! Parameter names follow torchvision (`layer1.0.conv1.weight`, `layer2.0.downsample.0.weight`,
//! `layer3.1.bn2.weight`, BN buffers `...running_var`), with the classification head as
//! `head.weight` / `head.bias`.
use tch::nn::VarStore;
use tch::Tensor;

use rst::stages::train::{Norm, Reg};

/// The radius (constraint) or weight (penalty) of a parameter of layer1..4, by name:
/// layer1, layer2 → D; layer3 → D·γ; layer4 → D·γ². None for anything else.
pub fn layer_radius(name: &str, d: f64, gamma: f64) -> Option<f64> {
    let _ = (name, d, gamma);
    unimplemented!("being written")
}

/// Frobenius projection: t = w − w0; w0 + t / max(1, ‖t‖_F / r).
pub fn project_frob(w: &Tensor, w0: &Tensor, r: f64) -> Tensor {
    let _ = (w, w0, r);
    unimplemented!("being written")
}

/// MARS (inf-op) projection: per output row/filter j, n_j = Σ|t_j|; t_j / max(1, n_j / r).
pub fn project_inf_op(w: &Tensor, w0: &Tensor, r: f64) -> Tensor {
    let _ = (w, w0, r);
    unimplemented!("being written")
}

/// The BN rule: s = γ/√(σ²+1e-6), s0 = γ0/√(σ0²+1e-6); s ← s0 + clamp(s − s0, −r, r);
/// returns the new γ = s·√(σ²+1e-6) (σ² the current running variance).
pub fn bn_rule(gamma: &Tensor, running_var: &Tensor, gamma0: &Tensor, running_var0: &Tensor, r: f64) -> Tensor {
    let _ = (gamma, running_var, gamma0, running_var0, r);
    unimplemented!("being written")
}

/// The regularizer of one training run: a snapshot of the pretrained weights and BN
/// buffers taken once, and the rules of `reg` / `norm`.
pub struct Regularizer {
    _private: (),
}

impl Regularizer {
    /// Snapshots `vs` (call after loading the pretrained weights and re-initialising the head).
    pub fn new(vs: &VarStore, reg: Reg, norm: Norm, d: f64, h: f64, gamma: f64) -> Regularizer {
        let _ = (vs, reg, norm, d, h, gamma);
        unimplemented!("being written")
    }

    /// For `reg: constraint`: projects every constrained tensor (call after every optimizer
    /// step). No-op for other methods.
    pub fn project(&self, vs: &VarStore) {
        let _ = vs;
        unimplemented!("being written")
    }

    /// For `reg: penalty`: the term added to the loss. None for other methods.
    pub fn penalty(&self, vs: &VarStore) -> Option<Tensor> {
        let _ = vs;
        unimplemented!("being written")
    }
}

/// Label correction on a batch: where max softmax(logits) > thres (strict) and the argmax
/// differs from the current label, the label becomes the argmax. Returns the new labels
/// and how many changed.
pub fn correct_labels(logits: &Tensor, labels: &Tensor, thres: f64) -> (Tensor, i64) {
    let _ = (logits, labels, thres);
    unimplemented!("being written")
}

/// Reweighted loss: ℓ_i = NLL(log_probs_i, labels_i); w = softmax(−ℓ.detach()/T); Σ w_i ℓ_i.
pub fn reweighted_nll(log_probs: &Tensor, labels: &Tensor, temp: f64) -> Tensor {
    let _ = (log_probs, labels, temp);
    unimplemented!("being written")
}

/// Temperature after epoch `epoch` (1-based, called after the LR scheduler step): if
/// epoch > reweight_epoch, T0·max(0.5, exp(−0.1·(epoch − reweight_epoch))), else `current`.
pub fn temperature(t0: f64, epoch: usize, reweight_epoch: usize, current: f64) -> f64 {
    let _ = (t0, epoch, reweight_epoch, current);
    unimplemented!("being written")
}
