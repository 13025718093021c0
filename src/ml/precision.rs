//! Mixed precision (`precision: bf16 | fp16`): autocast around the forward pass, and for
//! fp16 the dynamic loss scaling of PyTorch's `GradScaler`.
//!
//! tch exposes autocast only as on/off (`tch::autocast`, fp16, CUDA), with no way to pick
//! bf16. libtorch has it: `at::autocast::set_autocast_dtype(DeviceType, ScalarType)` and
//! `set_autocast_enabled(DeviceType, bool)`, exported from `libtorch_cpu.so` with C++
//! linkage. They are declared here by their mangled names (two `int8_t` enums and a bool
//! are passed like C integers on every Linux ABI rst builds for); a unit test round-trips
//! the dtype on the CPU device type, so a libtorch without these symbols fails to link and
//! one with other semantics fails the test.
use tch::{Device, Kind, Tensor};

use rst::stages::train::Precision;

// c10::DeviceType and c10::ScalarType values (c10/core/DeviceType.h, ScalarType.h).
const DEVICE_CPU: i8 = 0;
const DEVICE_CUDA: i8 = 1;
const SCALAR_HALF: i8 = 5;
const SCALAR_BFLOAT16: i8 = 15;

extern "C" {
    #[link_name = "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE"]
    fn at_set_autocast_dtype(device_type: i8, dtype: i8);
    #[link_name = "_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE"]
    fn at_get_autocast_dtype(device_type: i8) -> i8;
    #[link_name = "_ZN2at8autocast20set_autocast_enabledEN3c1010DeviceTypeEb"]
    fn at_set_autocast_enabled(device_type: i8, enabled: bool);
    #[link_name = "_ZN2at8autocast19is_autocast_enabledEN3c1010DeviceTypeE"]
    fn at_is_autocast_enabled(device_type: i8) -> bool;
}

fn device_type(device: Device) -> i8 {
    match device {
        Device::Cuda(_) => DEVICE_CUDA,
        _ => DEVICE_CPU,
    }
}

/// Runs `f` (a forward pass) under autocast for `precision` on `device`; fp32 runs it as
/// is. What it returns may be bf16/fp16: callers take `.to_kind(Kind::Float)` for losses
/// and metrics, as autocast itself does for `log_softmax` and `nll_loss`.
pub fn autocast<T>(precision: Precision, device: Device, f: impl FnOnce() -> T) -> T {
    let dtype = match precision {
        Precision::Fp32 => return f(),
        Precision::Bf16 => SCALAR_BFLOAT16,
        Precision::Fp16 => SCALAR_HALF,
    };
    let _on = Autocast::enter(device_type(device), dtype);
    f()
}

/// libtorch's autocast state for one device type while alive: what it was is restored on
/// drop, also when the forward pass panics (tch panics on a C++ error such as CUDA OOM).
struct Autocast {
    device_type: i8,
    dtype_before: i8,
    enabled_before: bool,
}

impl Autocast {
    fn enter(device_type: i8, dtype: i8) -> Autocast {
        // SAFETY: getters and setters of libtorch's thread-local autocast state (see the
        // module doc for the declarations).
        unsafe {
            let on = Autocast {
                device_type,
                dtype_before: at_get_autocast_dtype(device_type),
                enabled_before: at_is_autocast_enabled(device_type),
            };
            at_set_autocast_dtype(device_type, dtype);
            at_set_autocast_enabled(device_type, true);
            torch_sys::at_autocast_increment_nesting();
            on
        }
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        // SAFETY: as in `enter`.
        unsafe {
            if torch_sys::at_autocast_decrement_nesting() == 0 {
                torch_sys::at_autocast_clear_cache();
            }
            at_set_autocast_enabled(self.device_type, self.enabled_before);
            at_set_autocast_dtype(self.device_type, self.dtype_before);
        }
    }
}

/// Dynamic loss scaling for fp16 (PyTorch's `GradScaler` defaults: scale 2^16, halved on
/// an overflow, doubled after 2000 steps without one): fp16 gradients of small losses
/// underflow to zero unless the loss is scaled up first.
pub struct LossScaler {
    scale: f64,
    good_steps: u32,
}

impl Default for LossScaler {
    fn default() -> Self {
        LossScaler {
            scale: 65536.0,
            good_steps: 0,
        }
    }
}

const GROWTH_INTERVAL: u32 = 2000;

impl LossScaler {
    /// Backward of the scaled loss, then the gradients unscaled in place. Returns whether
    /// they are all finite: when not, the caller skips this step (and the scale halves).
    pub fn backward(&mut self, loss: &Tensor, params: &[Tensor]) -> bool {
        (loss * self.scale).backward();
        // The non-finite counts stay on the device; one read at the end (one sync a step).
        let bad = tch::no_grad(|| {
            let mut bad: Option<Tensor> = None;
            for p in params {
                let mut g = p.grad();
                if !g.defined() {
                    continue;
                }
                let _ = g.g_mul_scalar_(1.0 / self.scale);
                let n = g.isfinite().logical_not().sum(Kind::Int64);
                bad = Some(match bad {
                    Some(b) => b + n,
                    None => n,
                });
            }
            bad
        });
        let finite = bad.is_none_or(|b| b.int64_value(&[]) == 0);
        self.update(finite);
        finite
    }

    fn update(&mut self, finite: bool) {
        if finite {
            self.good_steps += 1;
            if self.good_steps == GROWTH_INTERVAL {
                self.scale *= 2.0;
                self.good_steps = 0;
            }
        } else {
            self.scale = (self.scale / 2.0).max(1.0);
            self.good_steps = 0;
        }
    }
}

/// Whether `precision` can run on `device` (mixed precision needs CUDA); the error is the
/// same the pipeline check gives for `device: cpu`.
pub fn check(precision: Precision, device: Device) -> Result<(), rst::stages::StageError> {
    precision
        .check_on(&super::device::key_name(device))
        .map_err(rst::stages::StageError::from)
}

/// `t` in float32 (a no-op when it already is).
pub fn float(t: Tensor) -> Tensor {
    if t.kind() == Kind::Float {
        t
    } else {
        t.to_kind(Kind::Float)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_autocast_dtype_round_trips_through_libtorch() {
        // CPU's default autocast dtype is bf16; set fp16, read it back, restore.
        let before = unsafe { at_get_autocast_dtype(DEVICE_CPU) };
        assert_eq!(before, SCALAR_BFLOAT16);
        unsafe { at_set_autocast_dtype(DEVICE_CPU, SCALAR_HALF) };
        assert_eq!(unsafe { at_get_autocast_dtype(DEVICE_CPU) }, SCALAR_HALF);
        unsafe { at_set_autocast_dtype(DEVICE_CPU, before) };
    }

    #[test]
    fn autocast_runs_a_linear_layer_in_bf16_and_restores_the_state() {
        // The same calls drive CUDA; on CPU libtorch autocasts too, so the mechanism is
        // tested here (the stages themselves refuse mixed precision on the CPU).
        let x = Tensor::ones([2, 3], (Kind::Float, Device::Cpu));
        let w = Tensor::ones([4, 3], (Kind::Float, Device::Cpu));
        let y = autocast(Precision::Bf16, Device::Cpu, || {
            x.linear::<Tensor>(&w, None)
        });
        assert_eq!(y.kind(), Kind::BFloat16);
        assert_eq!(float(y).double_value(&[0, 0]), 3.0);
        let y = x.linear::<Tensor>(&w, None);
        assert_eq!(y.kind(), Kind::Float, "autocast is off again");
        let y = autocast(Precision::Fp32, Device::Cpu, || {
            x.linear::<Tensor>(&w, None)
        });
        assert_eq!(y.kind(), Kind::Float);
        assert_eq!(
            unsafe { at_get_autocast_dtype(DEVICE_CPU) },
            SCALAR_BFLOAT16
        );
        // Nested: the inner one gives the outer its state back (dtype and enabled).
        let (inner, outer) = autocast(Precision::Bf16, Device::Cpu, || {
            let inner = autocast(Precision::Fp16, Device::Cpu, || {
                x.linear::<Tensor>(&w, None)
            });
            (inner.kind(), x.linear::<Tensor>(&w, None).kind())
        });
        assert_eq!((inner, outer), (Kind::Half, Kind::BFloat16));
        assert!(!unsafe { at_is_autocast_enabled(DEVICE_CPU) });
    }

    #[test]
    fn the_loss_scaler_unscales_skips_overflows_and_grows() {
        let p = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
        let mut s = LossScaler::default();
        let loss = (&p * &p).sum(Kind::Float);
        assert!(s.backward(&loss, std::slice::from_ref(&p)));
        // d/dp sum(p²) = 2p, unscaled
        assert_eq!(Vec::<f32>::try_from(p.grad()).unwrap(), vec![2.0, 4.0]);
        let _ = p.grad().zero_();
        let inf = (&p * f64::INFINITY).sum(Kind::Float);
        assert!(!s.backward(&inf, std::slice::from_ref(&p)), "overflow");
        assert_eq!(s.scale, 32768.0, "halved");
        for _ in 0..GROWTH_INTERVAL {
            s.update(true);
        }
        assert_eq!(s.scale, 65536.0, "doubled after 2000 good steps");
        assert!(check(Precision::Bf16, Device::Cpu).is_err());
        assert!(check(Precision::Fp32, Device::Cpu).is_ok());
        assert!(check(Precision::Fp16, Device::Cuda(0)).is_ok());
    }
}
