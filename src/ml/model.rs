//! ResNets with torchvision's architecture and parameter names, on `tch::nn`.
//!
//! - `resnet18` / `resnet34` (BasicBlock) and `resnet50` / `resnet101` (Bottleneck, the
//!   "v1.5" form with the stride on the 3x3 conv): stem conv 7x7/2 + BN + ReLU + maxpool
//!   3x3/2, layer1..layer4 with 64/128/256/512 planes, global average pool. Names as in
//!   torchvision's `state_dict` (`conv1.weight`, `bn1.running_var`, `layer1.0.conv1.weight`,
//!   `layer2.0.downsample.0.weight`, `layer2.0.downsample.1.weight`, ...), except that
//!   `num_batches_tracked` is not kept (BN momentum is fixed at 0.1, so it is unused) and the
//!   classification head is a separate linear layer `head` (`head.weight`, `head.bias`)
//!   instead of `fc`.
//! - `resnet-mini` for small grey images: stem conv 3x3/1 with 16 channels (no bias) + BN +
//!   ReLU (no maxpool), layer1..layer3 of two BasicBlocks each with 16/32/64 channels and
//!   strides 1/2/2, global average pool, head.
//!
//! From-scratch initialisation is torchvision's: convolutions kaiming-normal (fan_out, ReLU),
//! BN weight 1 and bias 0. The head is re-initialised per run with PyTorch's `nn.Linear`
//! default: weight and bias U(±1/√fan_in) ([`ResNet::reinit_head`]).
//!
//! Weights are stored as safetensors (all variables, BN running statistics included,
//! float32, names sorted), written with the `safetensors` crate so files are byte-identical
//! for identical weights.
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use tch::nn;
use tch::{Device, Kind, Tensor};

use rst::prng::Prng;
use rst::stages::train::Model;
use rst::stages::StageError;

/// The name of a model as pipelines write it (`resnet-mini`, `resnet18`, ...).
pub fn model_name(m: Model) -> &'static str {
    match m {
        Model::ResnetMini => "resnet-mini",
        Model::Resnet18 => "resnet18",
        Model::Resnet34 => "resnet34",
        Model::Resnet50 => "resnet50",
        Model::Resnet101 => "resnet101",
    }
}

/// The model named `name` (the inverse of [`model_name`]).
pub fn parse_model_name(name: &str) -> Option<Model> {
    serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
}

const CONV_INIT: nn::Init = nn::Init::Kaiming {
    dist: nn::init::NormalOrUniform::Normal,
    fan: nn::init::FanInOut::FanOut,
    non_linearity: nn::init::NonLinearity::ReLU,
};

fn conv(p: nn::Path<'_>, cin: i64, cout: i64, k: i64, stride: i64, padding: i64) -> nn::Conv2D {
    nn::conv2d(
        p,
        cin,
        cout,
        k,
        nn::ConvConfig {
            stride,
            padding,
            bias: false,
            ws_init: CONV_INIT,
            ..Default::default()
        },
    )
}

fn bn(p: nn::Path<'_>, c: i64) -> nn::BatchNorm {
    nn::batch_norm2d(
        p,
        c,
        nn::BatchNormConfig {
            eps: 1e-5,
            momentum: 0.1,
            ws_init: nn::Init::Const(1.0),
            bs_init: nn::Init::Const(0.0),
            ..Default::default()
        },
    )
}

/// `downsample.0` (conv 1x1 with the block's stride) and `downsample.1` (BN).
#[derive(Debug)]
struct Downsample {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
}

impl Downsample {
    fn new(p: &nn::Path<'_>, cin: i64, cout: i64, stride: i64) -> Downsample {
        let d = p / "downsample";
        Downsample {
            conv: conv(&d / "0", cin, cout, 1, stride, 0),
            bn: bn(&d / "1", cout),
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        x.apply(&self.conv).apply_t(&self.bn, train)
    }
}

#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // a few dozen per model
enum Block {
    Basic {
        conv1: nn::Conv2D,
        bn1: nn::BatchNorm,
        conv2: nn::Conv2D,
        bn2: nn::BatchNorm,
        down: Option<Downsample>,
    },
    Bottleneck {
        conv1: nn::Conv2D,
        bn1: nn::BatchNorm,
        conv2: nn::Conv2D,
        bn2: nn::BatchNorm,
        conv3: nn::Conv2D,
        bn3: nn::BatchNorm,
        down: Option<Downsample>,
    },
}

impl Block {
    fn basic(p: nn::Path<'_>, cin: i64, planes: i64, stride: i64) -> Block {
        let down = (stride != 1 || cin != planes).then(|| Downsample::new(&p, cin, planes, stride));
        Block::Basic {
            conv1: conv(&p / "conv1", cin, planes, 3, stride, 1),
            bn1: bn(&p / "bn1", planes),
            conv2: conv(&p / "conv2", planes, planes, 3, 1, 1),
            bn2: bn(&p / "bn2", planes),
            down,
        }
    }

    fn bottleneck(p: nn::Path<'_>, cin: i64, planes: i64, stride: i64) -> Block {
        let out = planes * 4;
        let down = (stride != 1 || cin != out).then(|| Downsample::new(&p, cin, out, stride));
        Block::Bottleneck {
            conv1: conv(&p / "conv1", cin, planes, 1, 1, 0),
            bn1: bn(&p / "bn1", planes),
            conv2: conv(&p / "conv2", planes, planes, 3, stride, 1),
            bn2: bn(&p / "bn2", planes),
            conv3: conv(&p / "conv3", planes, out, 1, 1, 0),
            bn3: bn(&p / "bn3", out),
            down,
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        match self {
            Block::Basic {
                conv1,
                bn1,
                conv2,
                bn2,
                down,
            } => {
                let y = x
                    .apply(conv1)
                    .apply_t(bn1, train)
                    .relu()
                    .apply(conv2)
                    .apply_t(bn2, train);
                let identity = match down {
                    Some(d) => d.forward_t(x, train),
                    None => x.shallow_clone(),
                };
                (y + identity).relu()
            }
            Block::Bottleneck {
                conv1,
                bn1,
                conv2,
                bn2,
                conv3,
                bn3,
                down,
            } => {
                let y = x
                    .apply(conv1)
                    .apply_t(bn1, train)
                    .relu()
                    .apply(conv2)
                    .apply_t(bn2, train)
                    .relu()
                    .apply(conv3)
                    .apply_t(bn3, train);
                let identity = match down {
                    Some(d) => d.forward_t(x, train),
                    None => x.shallow_clone(),
                };
                (y + identity).relu()
            }
        }
    }
}

/// A ResNet whose variables live in the VarStore it was built on.
#[derive(Debug)]
pub struct ResNet {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    maxpool: bool,
    layers: Vec<Vec<Block>>,
    pub head: nn::Linear,
    pub feature_dim: i64,
    pub num_classes: i64,
}

/// Builds `model` under `root` (normally `vs.root()`), for images with `in_channels`
/// channels and a head of `num_classes` outputs. Variables are initialised from the torch
/// RNG (seed it first with `tch::manual_seed` for a reproducible init).
pub fn build(root: &nn::Path<'_>, model: Model, in_channels: i64, num_classes: i64) -> ResNet {
    assert!(in_channels > 0 && num_classes > 0, "empty model");
    let (stem_k, stem_stride, stem_pad, stem_c, maxpool) = match model {
        Model::ResnetMini => (3, 1, 1, 16, false),
        _ => (7, 2, 3, 64, true),
    };
    // (planes, blocks, stride) per layer, and whether blocks are bottlenecks.
    let (spec, bottleneck): (Vec<(i64, usize, i64)>, bool) = match model {
        Model::ResnetMini => (vec![(16, 2, 1), (32, 2, 2), (64, 2, 2)], false),
        Model::Resnet18 => (
            vec![(64, 2, 1), (128, 2, 2), (256, 2, 2), (512, 2, 2)],
            false,
        ),
        Model::Resnet34 => (
            vec![(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)],
            false,
        ),
        Model::Resnet50 => (
            vec![(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)],
            true,
        ),
        Model::Resnet101 => (
            vec![(64, 3, 1), (128, 4, 2), (256, 23, 2), (512, 3, 2)],
            true,
        ),
    };
    let conv1 = conv(
        root / "conv1",
        in_channels,
        stem_c,
        stem_k,
        stem_stride,
        stem_pad,
    );
    let bn1 = bn(root / "bn1", stem_c);
    let mut cin = stem_c;
    let mut layers = Vec::new();
    for (li, &(planes, blocks, stride)) in spec.iter().enumerate() {
        let lp = root / format!("layer{}", li + 1);
        let mut layer = Vec::new();
        for b in 0..blocks {
            let s = if b == 0 { stride } else { 1 };
            let p = &lp / b;
            if bottleneck {
                layer.push(Block::bottleneck(p, cin, planes, s));
                cin = planes * 4;
            } else {
                layer.push(Block::basic(p, cin, planes, s));
                cin = planes;
            }
        }
        layers.push(layer);
    }
    let bound = 1.0 / (cin as f64).sqrt();
    let head = nn::linear(
        root / "head",
        cin,
        num_classes,
        nn::LinearConfig {
            ws_init: nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
            bs_init: Some(nn::Init::Uniform {
                lo: -bound,
                up: bound,
            }),
            bias: true,
        },
    );
    ResNet {
        conv1,
        bn1,
        maxpool,
        layers,
        head,
        feature_dim: cin,
        num_classes,
    }
}

impl ResNet {
    /// The pooled features `[N, feature_dim]`.
    pub fn features_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut y = x.apply(&self.conv1).apply_t(&self.bn1, train).relu();
        if self.maxpool {
            y = y.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        }
        for layer in &self.layers {
            for block in layer {
                y = block.forward_t(&y, train);
            }
        }
        y.adaptive_avg_pool2d([1, 1]).flatten(1, -1)
    }

    /// Logits `[N, num_classes]` for images `[N, C, H, W]`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.features_t(x, train).apply(&self.head)
    }

    /// Re-initialises the head as PyTorch's `nn.Linear.reset_parameters` does: weight
    /// kaiming-uniform with a = √5 (= U(±1/√fan_in)), then bias U(±1/√fan_in), the numbers
    /// drawn from `rng` (so the same on every device and independent of libtorch's RNG).
    pub fn reinit_head(&mut self, rng: &mut Prng) {
        let bound = 1.0 / (self.feature_dim as f64).sqrt();
        fill_uniform(&self.head.ws, bound, rng);
        if let Some(bs) = &self.head.bs {
            fill_uniform(bs, bound, rng);
        }
    }
}

/// Copies `values` into the variable `t` (same number of elements).
fn fill(t: &Tensor, values: Vec<f32>) {
    let src = Tensor::from_slice(&values)
        .view(t.size().as_slice())
        .to_kind(t.kind())
        .to_device(t.device());
    tch::no_grad(|| {
        let mut t = t.shallow_clone();
        t.copy_(&src);
    });
}

fn fill_uniform(t: &Tensor, bound: f64, rng: &mut Prng) {
    let v = (0..t.numel())
        .map(|_| (bound * (2.0 * rng.unit_f64() - 1.0)) as f32)
        .collect();
    fill(t, v);
}

/// Standard normal samples (Box–Muller, both outputs used).
fn normals(n: usize, rng: &mut Prng) -> Vec<f32> {
    let mut v = Vec::with_capacity(n + 1);
    while v.len() < n {
        let u1 = 1.0 - rng.unit_f64(); // (0, 1]
        let u2 = rng.unit_f64();
        let r = (-2.0 * u1.ln()).sqrt();
        let a = 2.0 * std::f64::consts::PI * u2;
        v.push((r * a.cos()) as f32);
        v.push((r * a.sin()) as f32);
    }
    v.truncate(n);
    v
}

/// Re-initialises every variable of a model built by [`build`] as torchvision does, from
/// `rng` instead of libtorch's global generator (the same weights on every device, and no
/// interference from anything else drawing torch random numbers): 4-D conv kernels
/// kaiming-normal (fan_out, ReLU: std √2/√(out·kh·kw)); BN weight 1, bias 0, running mean
/// 0, running variance 1; 2-D weights (the head) U(±1/√fan_in) and their biases likewise.
pub fn init_seeded(vs: &nn::VarStore, rng: &mut Prng) {
    let vars = named_variables(vs);
    let fan_in: BTreeMap<String, i64> = vars
        .iter()
        .filter(|(_, t)| t.dim() == 2)
        .map(|(n, t)| (n.trim_end_matches(".weight").to_string(), t.size()[1]))
        .collect();
    for (name, t) in &vars {
        let size = t.size();
        let module = name.rsplit_once('.').map_or("", |m| m.0);
        if size.len() == 4 {
            let std = 2f64.sqrt() / ((size[0] * size[2] * size[3]) as f64).sqrt();
            let v = normals(t.numel(), rng)
                .into_iter()
                .map(|z| (z as f64 * std) as f32)
                .collect();
            fill(t, v);
        } else if size.len() == 2 {
            fill_uniform(t, 1.0 / (size[1] as f64).sqrt(), rng);
        } else if let Some(&fi) = fan_in.get(module).filter(|_| name.ends_with(".bias")) {
            fill_uniform(t, 1.0 / (fi as f64).sqrt(), rng);
        } else if name.ends_with("running_var") || name.ends_with(".weight") {
            fill(t, vec![1.0; t.numel()]);
        } else {
            fill(t, vec![0.0; t.numel()]);
        }
    }
}

/// Whether a variable belongs to the classification head (ours or torchvision's `fc`).
pub fn is_head(name: &str) -> bool {
    name.starts_with("head.") || name.starts_with("fc.")
}

/// All variables of `vs` (parameters and BN buffers), sorted by name.
pub fn named_variables(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Deep copies of `vars` (detached, same device), e.g. the best epoch's weights.
pub fn snapshot(vars: &[(String, Tensor)]) -> Vec<(String, Tensor)> {
    tch::no_grad(|| {
        vars.iter()
            .map(|(n, t)| (n.clone(), t.detach().copy()))
            .collect()
    })
}

fn dtype_of(kind: Kind) -> Result<Dtype, String> {
    Ok(match kind {
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Uint8 => Dtype::U8,
        other => return Err(format!("cannot store tensors of kind {other:?}")),
    })
}

fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::U8 => Kind::Uint8,
        _ => return None,
    })
}

/// The bytes of a tensor (copied to the CPU, contiguous, native = little endian).
fn tensor_bytes(t: &Tensor) -> Vec<u8> {
    let t = t.detach().to_device(Device::Cpu).contiguous();
    let numel = t.numel();
    let mut bytes = vec![0u8; numel * t.kind().elt_size_in_bytes()];
    t.copy_data_u8(&mut bytes, numel);
    bytes
}

/// Writes named tensors as a safetensors file; the layout depends only on names, shapes,
/// kinds and values.
pub fn write_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<(), StageError> {
    let mut data = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let dtype = dtype_of(t.kind()).map_err(StageError::internal)?;
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        data.push((name.clone(), dtype, shape, tensor_bytes(t)));
    }
    data.sort_by(|a, b| a.0.cmp(&b.0));
    let views = data
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| StageError::internal(format!("tensor {name}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::serialize_to_file(views, None, path)
        .map_err(|e| StageError::internal(format!("cannot write {}: {e}", path.display())))
}

/// Saves every variable of `vs` to `path` (safetensors).
#[allow(dead_code)] // API for tools; training writes snapshots
pub fn save(vs: &nn::VarStore, path: &Path) -> Result<(), StageError> {
    write_safetensors(path, &named_variables(vs))
}

/// Reads every tensor of a safetensors file onto the CPU.
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, Tensor>, StageError> {
    let bytes = std::fs::read(path)
        .map_err(|e| StageError::user(format!("cannot read weights {}: {e}", path.display())))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| {
        StageError::user(format!("{} is not a safetensors file: {e}", path.display()))
    })?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let kind = kind_of(view.dtype()).ok_or_else(|| {
            StageError::user(format!(
                "{}: tensor {name} has unsupported dtype {:?}",
                path.display(),
                view.dtype()
            ))
        })?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        out.insert(name, Tensor::from_data_size(view.data(), &shape, kind));
    }
    Ok(out)
}

/// Reads a weights file: safetensors, or a PyTorch `torch.save` state dict (`.pth`/`.pt`,
/// e.g. torchvision's ImageNet weights) through [`super::pth`]. Tensors land on the CPU.
pub fn read_weights(path: &Path) -> Result<BTreeMap<String, Tensor>, StageError> {
    // By content, not by name: a `torch.save` file is a zip archive; anything else is read
    // as safetensors (whose own checks name what is wrong).
    let mut magic = [0u8; 4];
    let is_zip = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok()
        && &magic == b"PK\x03\x04";
    let legacy_name = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("pth") | Some("pt")
    );
    match is_zip || legacy_name {
        true => Ok(super::pth::load_state_dict(path)
            .map_err(StageError::user)?
            .into_iter()
            .collect()),
        false => read_safetensors(path),
    }
}

/// What [`load`] copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// Variables set from the file.
    pub loaded: usize,
    /// File entries ignored: the head (`head.*` / torchvision's `fc.*`) when it is not
    /// loaded, and BN `num_batches_tracked` counters.
    pub ignored: usize,
}

fn first_few(items: &[String]) -> String {
    const N: usize = 5;
    let mut s = items.iter().take(N).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > N {
        s.push_str(&format!(", ... ({} in all)", items.len()));
    }
    s
}

/// Loads the variables of `vs` from the safetensors file `path` (an upstream train
/// artifact's weights, or a converted torchvision state dict). With `with_head: false` the
/// head (`head.*`, `fc.*`) is neither loaded nor required. Every other variable must be in
/// the file with the same shape, and the file must hold nothing else (BN
/// `num_batches_tracked` counters aside); otherwise a user error lists the first offenders.
/// `what` names the file in messages.
pub fn load(
    vs: &nn::VarStore,
    path: &Path,
    with_head: bool,
    what: &str,
) -> Result<Loaded, StageError> {
    let file = read_weights(path)?;
    let vars = named_variables(vs);
    let wanted: BTreeSet<&str> = vars
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| with_head || !is_head(n))
        .collect();
    let mut missing = Vec::new();
    let mut mismatched = Vec::new();
    for (name, var) in &vars {
        if !wanted.contains(name.as_str()) {
            continue;
        }
        match file.get(name) {
            None => missing.push(name.clone()),
            Some(t) if t.size() != var.size() => {
                mismatched.push(format!("{name} {:?} (model {:?})", t.size(), var.size()))
            }
            Some(t) if !t.is_floating_point() => {
                mismatched.push(format!("{name} has kind {:?}", t.kind()))
            }
            Some(_) => {}
        }
    }
    let mut unexpected = Vec::new();
    let mut ignored = 0;
    for name in file.keys() {
        if wanted.contains(name.as_str()) {
            continue;
        }
        if name.ends_with(".num_batches_tracked") || (!with_head && is_head(name)) {
            ignored += 1;
        } else {
            unexpected.push(name.clone());
        }
    }
    if !(missing.is_empty() && mismatched.is_empty() && unexpected.is_empty()) {
        let mut msg = format!("{what} ({}) does not fit the model:", path.display());
        if !missing.is_empty() {
            msg.push_str(&format!("\n  missing: {}", first_few(&missing)));
        }
        if !mismatched.is_empty() {
            msg.push_str(&format!("\n  shape mismatch: {}", first_few(&mismatched)));
        }
        if !unexpected.is_empty() {
            msg.push_str(&format!("\n  not in the model: {}", first_few(&unexpected)));
        }
        msg.push_str(
            "\n  (weights must use torchvision's parameter names for the same architecture; \
             the head `head.*` / `fc.*` is dropped)",
        );
        return Err(StageError::user(msg));
    }
    tch::no_grad(|| {
        for (name, var) in &vars {
            if let Some(src) = file.get(name).filter(|_| wanted.contains(name.as_str())) {
                let mut v = var.shallow_clone();
                v.copy_(&src.to_kind(var.kind()).to_device(var.device()));
            }
        }
    });
    Ok(Loaded {
        loaded: wanted.len(),
        ignored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `.pth` state dict written by PyTorch itself (the project venv's torch, running the
    /// resnet-mini definition of benches/train_reference.py, with BN statistics perturbed)
    /// loads into rst's resnet-mini: every name and shape matches, values are identical.
    #[test]
    fn loads_a_pytorch_pth_state_dict() {
        let dir = tempfile::tempdir().unwrap();
        let pth = dir.path().join("mini.pth");
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let script = format!(
            "import importlib.util, torch\n\
             spec = importlib.util.spec_from_file_location('ref', r'{}')\n\
             ref = importlib.util.module_from_spec(spec); spec.loader.exec_module(ref)\n\
             torch.manual_seed(0)\n\
             m = ref.ResNetMini(1, 5)\n\
             for mod in m.modules():\n\
             \x20   if isinstance(mod, torch.nn.BatchNorm2d):\n\
             \x20       mod.running_mean.uniform_(-1, 1); mod.running_var.uniform_(0.5, 2)\n\
             torch.save(m.state_dict(), r'{}')\n",
            root.join("benches/train_reference.py").display(),
            pth.display()
        );
        let status = std::process::Command::new(root.join(".venv/bin/python"))
            .args(["-c", &script])
            .status()
            .expect("the project venv's python (scripts/setup makes it)");
        assert!(status.success());
        let vs = nn::VarStore::new(Device::Cpu);
        let _net = build(&vs.root(), Model::ResnetMini, 1, 5);
        let loaded = load(&vs, &pth, true, "test").unwrap();
        assert_eq!(loaded.loaded, named_variables(&vs).len());
        let file = super::super::pth::load_state_dict(&pth).unwrap();
        for (name, var) in named_variables(&vs) {
            let (_, t) = file.iter().find(|(n, _)| *n == name).unwrap();
            assert!(var.equal(t), "{name} differs");
        }
    }

    /// A ResNet-18 state dict with torchvision's names (written by the venv's PyTorch,
    /// `tests/support/resnet18_pth.py`) loads into rst's ResNet-18 with the head dropped:
    /// every other variable equals, byte for byte, the float32 bytes PyTorch wrote beside it.
    #[test]
    fn loads_a_torchvision_resnet18_pth_with_identical_values() {
        let dir = tempfile::tempdir().unwrap();
        let (pth, bin) = (dir.path().join("r18.pth"), dir.path().join("r18.bin"));
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let status = std::process::Command::new(root.join(".venv/bin/python"))
            .arg(root.join("tests/support/resnet18_pth.py"))
            .args([&pth, &bin])
            .status()
            .expect("the project venv's python (scripts/setup makes it)");
        assert!(status.success());
        let vs = nn::VarStore::new(Device::Cpu);
        let _net = build(&vs.root(), Model::Resnet18, 3, 67);
        let loaded = load(&vs, &pth, false, "test").unwrap();
        // 102 variables minus the head's 2; ignored: fc.* and 20 num_batches_tracked.
        assert_eq!((loaded.loaded, loaded.ignored), (100, 22));
        let names: Vec<serde_json::Value> =
            serde_json::from_slice(&std::fs::read(dir.path().join("r18.bin.json")).unwrap())
                .unwrap();
        let bytes = std::fs::read(&bin).unwrap();
        let vars: BTreeMap<String, Tensor> = named_variables(&vs).into_iter().collect();
        let mut at = 0;
        let mut compared = 0;
        for entry in names {
            let name = entry["name"].as_str().unwrap();
            let shape: Vec<i64> = serde_json::from_value(entry["shape"].clone()).unwrap();
            let len = shape.iter().product::<i64>() as usize * 4;
            let want = &bytes[at..at + len];
            at += len;
            if name.starts_with("fc.") {
                continue;
            }
            let var = &vars[name];
            assert_eq!(var.size(), shape, "{name}");
            let got: Vec<f32> = Vec::try_from(var.flatten(0, -1)).unwrap();
            let got: Vec<u8> = got.iter().flat_map(|v| v.to_le_bytes()).collect();
            assert!(got == want, "{name} differs");
            compared += 1;
        }
        assert_eq!(compared, 100);
    }

    fn shapes(model: Model, cin: i64, k: i64) -> BTreeMap<String, Vec<i64>> {
        let vs = nn::VarStore::new(Device::Cpu);
        let _net = build(&vs.root(), model, cin, k);
        named_variables(&vs)
            .into_iter()
            .map(|(n, t)| (n, t.size()))
            .collect()
    }

    #[test]
    fn resnet18_matches_torchvision_names_and_shapes() {
        let s = shapes(Model::Resnet18, 3, 10);
        // torchvision resnet18's state_dict has 122 entries minus 20 num_batches_tracked,
        // with fc.* renamed head.*.
        assert_eq!(s.len(), 102);
        assert_eq!(s["conv1.weight"], vec![64, 3, 7, 7]);
        assert_eq!(s["bn1.running_mean"], vec![64]);
        assert_eq!(s["layer1.0.conv1.weight"], vec![64, 64, 3, 3]);
        assert_eq!(s["layer1.1.bn2.bias"], vec![64]);
        assert_eq!(s["layer2.0.conv1.weight"], vec![128, 64, 3, 3]);
        assert_eq!(s["layer2.0.downsample.0.weight"], vec![128, 64, 1, 1]);
        assert_eq!(s["layer2.0.downsample.1.running_var"], vec![128]);
        assert_eq!(s["layer4.1.bn2.running_var"], vec![512]);
        assert_eq!(s["layer4.1.conv2.weight"], vec![512, 512, 3, 3]);
        assert_eq!(s["head.weight"], vec![10, 512]);
        assert_eq!(s["head.bias"], vec![10]);
        assert!(!s.contains_key("layer1.0.downsample.0.weight"));
        assert!(!s.keys().any(|k| k.contains("conv1.bias")));
        // Trainable: 62 parameters (conv/bn weights, bn biases, head), the rest BN buffers.
        let params = s.keys().filter(|k| !k.contains("running_")).count();
        assert_eq!(params, 62);
    }

    #[test]
    fn bottleneck_resnets_match_torchvision() {
        let s = shapes(Model::Resnet50, 3, 5);
        // 320 state_dict entries minus 53 num_batches_tracked.
        assert_eq!(s.len(), 267);
        assert_eq!(s["layer1.0.conv1.weight"], vec![64, 64, 1, 1]);
        assert_eq!(s["layer1.0.conv3.weight"], vec![256, 64, 1, 1]);
        assert_eq!(s["layer1.0.downsample.0.weight"], vec![256, 64, 1, 1]);
        assert_eq!(s["layer2.0.conv2.weight"], vec![128, 128, 3, 3]);
        assert_eq!(s["layer4.2.bn3.running_var"], vec![2048]);
        assert_eq!(s["head.weight"], vec![5, 2048]);
        let s = shapes(Model::Resnet101, 3, 5);
        assert!(s.contains_key("layer3.22.conv3.weight"));
        assert!(!s.contains_key("layer3.23.conv3.weight"));
        let s = shapes(Model::Resnet34, 3, 5);
        assert!(s.contains_key("layer3.5.bn2.weight"));
        assert!(!s.contains_key("layer1.0.downsample.0.weight"));
    }

    #[test]
    fn resnet_mini_layout_and_forward() {
        let s = shapes(Model::ResnetMini, 1, 5);
        assert_eq!(s["conv1.weight"], vec![16, 1, 3, 3]);
        assert_eq!(s["layer1.0.conv1.weight"], vec![16, 16, 3, 3]);
        assert_eq!(s["layer2.0.downsample.0.weight"], vec![32, 16, 1, 1]);
        assert_eq!(s["layer3.1.bn2.running_var"], vec![64]);
        assert_eq!(s["head.weight"], vec![5, 64]);
        assert!(!s.keys().any(|k| k.starts_with("layer4")));
        assert!(!s.contains_key("layer1.0.downsample.0.weight"));
        let vs = nn::VarStore::new(Device::Cpu);
        let net = build(&vs.root(), Model::ResnetMini, 1, 5);
        let y = net.forward_t(
            &Tensor::randn([4, 1, 28, 28], (Kind::Float, Device::Cpu)),
            true,
        );
        assert_eq!(y.size(), vec![4, 5]);
        let y = net.forward_t(
            &Tensor::randn([2, 1, 8, 8], (Kind::Float, Device::Cpu)),
            false,
        );
        assert_eq!(y.size(), vec![2, 5]);
    }

    #[test]
    fn resnet18_forward_shape() {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = build(&vs.root(), Model::Resnet18, 3, 7);
        let y = net.forward_t(
            &Tensor::randn([2, 3, 64, 64], (Kind::Float, Device::Cpu)),
            false,
        );
        assert_eq!(y.size(), vec![2, 7]);
    }

    #[test]
    fn head_init_is_pytorch_linear_default() {
        let vs = nn::VarStore::new(Device::Cpu);
        let mut net = build(&vs.root(), Model::Resnet18, 3, 100);
        init_seeded(&vs, &mut Prng::new(3, "init"));
        let before = net.head.ws.copy();
        net.reinit_head(&mut Prng::new(3, "head"));
        let bound = 1.0 / 512f64.sqrt();
        let w = &net.head.ws;
        let b = net.head.bs.as_ref().unwrap();
        for t in [w, b] {
            let max = t.abs().max().double_value(&[]);
            assert!(max <= bound, "{max} > {bound}");
            // Uniform: the extremes come close to the bound.
            assert!(max > 0.9 * bound, "{max}");
        }
        // U(-b, b) has mean 0 and std b/√3.
        let std = w.std(true).double_value(&[]);
        assert!((std - bound / 3f64.sqrt()).abs() < 0.05 * bound, "{std}");
        assert!(!w.equal(&before), "re-initialised");
        // Convs: kaiming normal, fan_out: std √2/√(64·9) for layer1 convs.
        let c = vs.variables()["layer1.0.conv1.weight"]
            .std(true)
            .double_value(&[]);
        let want = (2.0f64 / (64.0 * 9.0)).sqrt();
        assert!((c - want).abs() < 0.05 * want, "{c} vs {want}");
        assert_eq!(
            vs.variables()["bn1.weight"]
                .mean(Kind::Float)
                .double_value(&[]),
            1.0
        );
    }

    #[test]
    fn seeded_init_is_reproducible() {
        let make = |seed| {
            let vs = nn::VarStore::new(Device::Cpu);
            let _net = build(&vs.root(), Model::ResnetMini, 1, 4);
            init_seeded(&vs, &mut Prng::new(seed, "init"));
            named_variables(&vs)
        };
        let (a, b, c) = (make(1), make(1), make(2));
        for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
            assert_eq!(na, nb);
            assert!(ta.equal(tb), "{na}");
        }
        let differs = |n: &str| {
            let i = a.iter().position(|(k, _)| k == n).unwrap();
            !a[i].1.equal(&c[i].1)
        };
        assert!(differs("layer1.0.conv1.weight") && differs("head.weight") && differs("head.bias"));
        assert!(!differs("layer1.0.bn1.weight") && !differs("layer3.1.bn2.running_var"));
        let head_b = &a.iter().find(|(k, _)| k == "head.bias").unwrap().1;
        assert!(head_b.abs().max().double_value(&[]) <= 1.0 / 8.0);
    }

    #[test]
    fn save_load_round_trip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        tch::manual_seed(1);
        let vs = nn::VarStore::new(Device::Cpu);
        let _a = build(&vs.root(), Model::ResnetMini, 1, 3);
        let path = dir.path().join("a.safetensors");
        save(&vs, &path).unwrap();
        // Same weights, same bytes.
        let path2 = dir.path().join("b.safetensors");
        save(&vs, &path2).unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            std::fs::read(&path2).unwrap()
        );

        tch::manual_seed(2);
        let vs2 = nn::VarStore::new(Device::Cpu);
        let _b = build(&vs2.root(), Model::ResnetMini, 1, 7);
        // Without the head: a 7-class model loads a 3-class model's body.
        let l = load(&vs2, &path, false, "weights").unwrap();
        assert_eq!(l.ignored, 2);
        let v1 = vs.variables();
        let v2 = vs2.variables();
        assert!(v1["layer2.0.conv1.weight"].equal(&v2["layer2.0.conv1.weight"]));
        assert!(v1["layer3.1.bn2.running_var"].equal(&v2["layer3.1.bn2.running_var"]));
        // With the head: shape mismatch named.
        let e = load(&vs2, &path, true, "weights").unwrap_err();
        assert!(e.user);
        assert!(
            e.message.contains("head.weight [3, 64] (model [7, 64])"),
            "{}",
            e.message
        );

        // Another architecture: missing names and shape mismatches, listed.
        let vs3 = nn::VarStore::new(Device::Cpu);
        let _c = build(&vs3.root(), Model::Resnet18, 1, 3);
        let e = load(&vs3, &path, false, "input `init`").unwrap_err();
        assert!(e.user);
        assert!(e.message.contains("missing: "), "{}", e.message);
        assert!(e.message.contains("layer4."), "{}", e.message);
        assert!(e.message.contains("shape mismatch: "), "{}", e.message);
        assert!(e.message.contains("in all)"), "{}", e.message);

        // Not a safetensors file.
        std::fs::write(dir.path().join("x.safetensors"), b"nope").unwrap();
        let e = load(&vs2, &dir.path().join("x.safetensors"), false, "w").unwrap_err();
        assert!(
            e.user && e.message.contains("not a safetensors file"),
            "{}",
            e.message
        );
    }

    #[test]
    fn model_names_round_trip() {
        for m in [
            Model::ResnetMini,
            Model::Resnet18,
            Model::Resnet34,
            Model::Resnet50,
            Model::Resnet101,
        ] {
            assert_eq!(parse_model_name(model_name(m)), Some(m));
        }
        assert_eq!(parse_model_name("resnet19"), None);
    }
}
