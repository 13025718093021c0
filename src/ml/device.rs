//! Device selection: `auto | cpu | cuda | cuda:N`.
use tch::Device;

/// Parses a device spec; `auto` picks the first GPU when libtorch sees one.
pub fn resolve(spec: &str) -> Result<Device, String> {
    match spec.trim() {
        "auto" => Ok(if tch::Cuda::is_available() {
            Device::Cuda(0)
        } else {
            Device::Cpu
        }),
        "cpu" => Ok(Device::Cpu),
        "cuda" => cuda(0),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => cuda(n),
            _ => Err(format!(
                "unknown device `{other}`: use auto, cpu, cuda or cuda:N"
            )),
        },
    }
}

fn cuda(n: usize) -> Result<Device, String> {
    let count = tch::Cuda::device_count() as usize;
    if n < count {
        Ok(Device::Cuda(n))
    } else if count == 0 {
        Err(format!("device cuda:{n} asked for, but libtorch sees no GPU on this machine; use `device: auto` or `cpu`"))
    } else {
        Err(format!(
            "device cuda:{n} asked for, but this machine has {count} GPU(s)"
        ))
    }
}

/// The device as written into cache keys: `cpu`, `cuda:0`, ...
pub fn key_name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".to_string(),
        Device::Cuda(n) => format!("cuda:{n}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_resolves_and_libtorch_runs() {
        assert_eq!(resolve("cpu").unwrap(), Device::Cpu);
        let t = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.5]);
        assert_eq!(t.sum(tch::Kind::Float).double_value(&[]), 6.5);
        assert!(resolve("tpu").is_err());
        let auto = resolve("auto").unwrap();
        assert_eq!(auto == Device::Cpu, !tch::Cuda::is_available());
    }
}
