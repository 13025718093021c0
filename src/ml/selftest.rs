//! The numerical checks against PyTorch, on every device this machine has: RegSL's
//! projections (of single tensors and of a whole model's state), its BN rule, the penalty,
//! the reweighted loss and its gradient, and label correction,
//! each compared with the numbers PyTorch computed (`tests/fixtures/regsl/`, written by
//! the committed script there). The fixtures are compiled in, so `rst-torch selftest` runs
//! them on a GPU host that has the binary and nothing else; the unit test
//! [`tests::every_check_passes_on_every_device`] runs them under `cargo test`, on CPU
//! always and on CUDA when libtorch sees a GPU (else it says SKIPPED).
use serde_json::Value;
use tch::{Device, Kind, Reduction, Tensor};

use rst::stages::train::{Norm, Reg};
use tch::nn::VarStore;

use super::regsl::{
    bn_rule, correct_labels, project_frob, project_inf_op, reweighted_nll, Regularizer,
};

const FIXTURES: &str = include_str!("../../tests/fixtures/regsl/fixtures.json");

/// One check: its name and how it runs on a device.
pub struct Check {
    pub name: &'static str,
    run: fn(&Value, On) -> Result<(), String>,
}

/// The checks, in the order they are reported.
pub const CHECKS: [Check; 9] = [
    Check {
        name: "frob projection",
        run: frob,
    },
    Check {
        name: "inf-op projection",
        run: inf_op,
    },
    Check {
        name: "BN rule",
        run: bn,
    },
    Check {
        name: "reweighted loss and gradient",
        run: reweight,
    },
    Check {
        name: "label correction",
        run: correction,
    },
    Check {
        name: "constraint projection of a model (frob)",
        run: |fx, on| model_projection(fx, on, Norm::Frob, "projected_frob"),
    },
    Check {
        name: "constraint projection of a model (inf-op)",
        run: |fx, on| model_projection(fx, on, Norm::InfOp, "projected_inf_op"),
    },
    Check {
        name: "penalty of a model (frob)",
        run: |fx, on| model_penalty(fx, on, Norm::Frob, "penalty_frob"),
    },
    Check {
        name: "penalty of a model (inf-op)",
        run: |fx, on| model_penalty(fx, on, Norm::InfOp, "penalty_inf_op"),
    },
];

/// The relative tolerance on `device`: float32 on CPU agrees with PyTorch's CPU numbers to
/// rounding; CUDA's reductions sum in another order (and its `exp`/`log` differ in the last
/// bits), so 1e-5 there.
pub fn tolerance(device: Device) -> f64 {
    match device {
        Device::Cpu => 1e-6,
        _ => 1e-5,
    }
}

/// The devices to check on: CPU, and every CUDA device libtorch sees.
pub fn devices() -> Vec<Device> {
    let mut d = vec![Device::Cpu];
    d.extend((0..tch::Cuda::device_count() as usize).map(Device::Cuda));
    d
}

/// Runs `check` on `device`.
pub fn run(check: &Check, device: Device) -> Result<(), String> {
    let fx: Value = serde_json::from_str(FIXTURES).map_err(|e| format!("fixtures: {e}"))?;
    let on = On {
        device,
        tol: tolerance(device),
    };
    (check.run)(&fx, on)
}

/// `rst-torch selftest`: every check on every device, one line each; exit code 1 when one
/// failed. Says loudly when there is no GPU to check on.
pub fn command() -> i32 {
    let devices = devices();
    if devices.len() == 1 {
        println!("SKIPPED on CUDA: libtorch sees no GPU here (CPU only)");
    }
    let mut failed = 0;
    for device in &devices {
        for check in &CHECKS {
            let name = super::device::key_name(*device);
            match run(check, *device) {
                Ok(()) => println!(
                    "ok      {name:<7} {} (tolerance {:e})",
                    check.name,
                    tolerance(*device)
                ),
                Err(e) => {
                    failed += 1;
                    println!("FAILED  {name:<7} {}: {e}", check.name);
                }
            }
        }
    }
    println!(
        "{} checks on {} device(s): {failed} failed",
        CHECKS.len() * devices.len(),
        devices.len()
    );
    i32::from(failed > 0)
}

/// Where a check runs and how close it must come.
#[derive(Clone, Copy)]
struct On {
    device: Device,
    tol: f64,
}

impl On {
    fn tensor(&self, v: &Value) -> Tensor {
        let data: Vec<f32> = v["data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_f64)
                    .map(|x| x as f32)
                    .collect()
            })
            .unwrap_or_default();
        Tensor::from_slice(&data)
            .reshape(shape(v))
            .to_device(self.device)
    }

    fn longs(&self, v: &Value) -> Tensor {
        let data: Vec<i64> = v
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default();
        Tensor::from_slice(&data).to_device(self.device)
    }

    /// |a − e| ≤ tol·max(1, |e|) elementwise, shapes equal.
    fn close(&self, actual: &Tensor, expected: &Tensor, what: &str) -> Result<(), String> {
        if actual.size() != expected.size() {
            return Err(format!(
                "{what}: shape {:?}, expected {:?}",
                actual.size(),
                expected.size()
            ));
        }
        for (i, (a, e)) in values(actual).iter().zip(values(expected)).enumerate() {
            let (a, e) = (*a as f64, e as f64);
            if (a - e).abs() > self.tol * e.abs().max(1.0) {
                return Err(format!("{what}[{i}]: {a} vs PyTorch's {e}"));
            }
        }
        Ok(())
    }
}

fn shape(v: &Value) -> Vec<i64> {
    v["shape"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default()
}

fn values(t: &Tensor) -> Vec<f32> {
    let flat = t
        .detach()
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .flatten(0, -1);
    Vec::<f32>::try_from(flat).unwrap_or_default()
}

fn cases<'a>(fx: &'a Value, key: &str) -> Result<&'a Vec<Value>, String> {
    fx[key]
        .as_array()
        .ok_or_else(|| format!("fixtures have no `{key}` cases"))
}

fn number(v: &Value, what: &str) -> Result<f64, String> {
    v.as_f64()
        .ok_or_else(|| format!("fixture `{what}` is not a number"))
}

fn frob(fx: &Value, on: On) -> Result<(), String> {
    for (i, c) in cases(fx, "frob")?.iter().enumerate() {
        let (w, w0) = (on.tensor(&c["w"]), on.tensor(&c["w0"]));
        let out = project_frob(&w, &w0, number(&c["r"], "r")?);
        on.close(&out, &on.tensor(&c["expected"]), &format!("case {i}"))?;
        if out.device() != on.device {
            return Err(format!("case {i}: result left {:?}", on.device));
        }
    }
    Ok(())
}

fn inf_op(fx: &Value, on: On) -> Result<(), String> {
    for (i, c) in cases(fx, "inf_op")?.iter().enumerate() {
        let (w, w0) = (on.tensor(&c["w"]), on.tensor(&c["w0"]));
        let out = project_inf_op(&w, &w0, number(&c["r"], "r")?);
        on.close(&out, &on.tensor(&c["expected"]), &format!("case {i}"))?;
    }
    Ok(())
}

fn bn(fx: &Value, on: On) -> Result<(), String> {
    let c = &fx["bn"];
    let t = |k: &str| on.tensor(&c[k]);
    let out = bn_rule(
        &t("gamma"),
        &t("var"),
        &t("gamma0"),
        &t("var0"),
        number(&c["r"], "r")?,
    );
    on.close(&out, &t("expected"), "gamma")
}

fn reweight(fx: &Value, on: On) -> Result<(), String> {
    let c = &fx["reweight"];
    let lp = on.tensor(&c["log_probs"]).set_requires_grad(true);
    let y = on.longs(&c["labels"]);
    let temp = number(&c["temp"], "temp")?;
    let nll = lp.g_nll_loss::<Tensor>(&y, None, Reduction::None, -100);
    on.close(&nll, &on.tensor(&c["nll"]), "nll")?;
    let loss = reweighted_nll(&lp, &y, temp);
    let expected = number(&c["loss"], "loss")?;
    let got = loss.double_value(&[]);
    if (got - expected).abs() > on.tol * expected.abs().max(1.0) {
        return Err(format!("loss {got} vs PyTorch's {expected}"));
    }
    loss.backward();
    on.close(&lp.grad(), &on.tensor(&c["grad"]), "grad")
}

fn correction(fx: &Value, on: On) -> Result<(), String> {
    for (i, c) in cases(fx, "correct")?.iter().enumerate() {
        let (new, changed) = correct_labels(
            &on.tensor(&c["logits"]),
            &on.longs(&c["labels"]),
            number(&c["thres"], "thres")?,
        );
        let new = Vec::<i64>::try_from(new.to_device(Device::Cpu)).unwrap_or_default();
        let want: Vec<i64> = c["new_labels"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default();
        if new != want || Some(changed) != c["changed"].as_i64() {
            return Err(format!(
                "case {i}: labels {new:?} ({changed} changed), PyTorch's {want:?} ({})",
                c["changed"]
            ));
        }
    }
    Ok(())
}

/// A variable store on the check's device holding `state` (a torchvision-named state
/// dict, BN statistics included), as a model's would: the regularizer reads names only.
fn var_store(on: On, state: &Value) -> Result<VarStore, String> {
    let state = state.as_object().ok_or("fixture state is not an object")?;
    let vs = VarStore::new(on.device);
    for (name, t) in state {
        let parts: Vec<&str> = name.split('.').collect();
        let Some((last, path)) = parts.split_last() else {
            continue;
        };
        let mut p = vs.root();
        for part in path {
            p = p / *part;
        }
        let _ = p.var_copy(last, &on.tensor(t));
    }
    Ok(vs)
}

/// Overwrites the store's variables with `state` (training moved them).
fn set(vs: &VarStore, on: On, state: &Value) {
    tch::no_grad(|| {
        for (name, v) in vs.variables() {
            v.shallow_clone().copy_(&on.tensor(&state[name.as_str()]));
        }
    });
}

/// (D, H, γ) of the regularizer fixture.
fn reg_params(fr: &Value) -> Result<(f64, f64, f64), String> {
    Ok((
        number(&fr["d"], "d")?,
        number(&fr["h"], "h")?,
        number(&fr["gamma"], "gamma")?,
    ))
}

/// `reg: constraint`: a model far from its start projected back, tensor by tensor, as
/// PyTorch's reference did (what it left alone stays bit for bit).
fn model_projection(fx: &Value, on: On, norm: Norm, key: &str) -> Result<(), String> {
    let fr = &fx["regularizer"];
    let (d, h, g) = reg_params(fr)?;
    let vs = var_store(on, &fr["pretrained"])?;
    let reg = Regularizer::new(&vs, Reg::Constraint, norm, d, h, g);
    set(&vs, on, &fr["perturbed"]);
    reg.project(&vs);
    let expected = fr[key]
        .as_object()
        .ok_or_else(|| format!("fixtures have no `{key}`"))?;
    for (name, v) in vs.variables() {
        match expected.get(&name) {
            Some(e) => on.close(&v, &on.tensor(e), &name)?,
            None => {
                if !v.equal(&on.tensor(&fr["perturbed"][name.as_str()])) {
                    return Err(format!("{name} was modified"));
                }
            }
        }
    }
    Ok(())
}

/// `reg: penalty`: the penalty of a moved model, against PyTorch's.
fn model_penalty(fx: &Value, on: On, norm: Norm, key: &str) -> Result<(), String> {
    let fr = &fx["regularizer"];
    let (d, h, g) = reg_params(fr)?;
    let vs = var_store(on, &fr["pretrained"])?;
    let reg = Regularizer::new(&vs, Reg::Penalty, norm, d, h, g);
    set(&vs, on, &fr["perturbed"]);
    let got = reg
        .penalty(&vs)
        .ok_or("no penalty in penalty mode")?
        .double_value(&[]);
    let expected = number(&fr[key], key)?;
    if (got - expected).abs() > on.tol * expected.abs().max(1.0) {
        return Err(format!("penalty {got} vs PyTorch's {expected}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_check_passes_on_every_device() {
        let devices = devices();
        if devices.len() == 1 {
            eprintln!("SKIPPED on CUDA: libtorch sees no GPU here; the checks ran on CPU only");
        }
        for device in devices {
            for check in &CHECKS {
                if let Err(e) = run(check, device) {
                    panic!("{} on {device:?}: {e}", check.name);
                }
            }
        }
    }

    #[test]
    fn a_check_fails_when_the_numbers_differ() {
        let on = On {
            device: Device::Cpu,
            tol: tolerance(Device::Cpu),
        };
        let a = Tensor::from_slice(&[1.0f32, 2.0]);
        let b = Tensor::from_slice(&[1.0f32, 2.5]);
        assert!(on.close(&a, &a, "same").is_ok());
        let e = on.close(&a, &b, "x").unwrap_err();
        assert_eq!(e, "x[1]: 2 vs PyTorch's 2.5");
    }
}
