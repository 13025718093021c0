//! Facts of the machine a stage runs on, for its run facts: the CPU model and its x86-64
//! instruction-set level. libtorch chooses CPU kernels by instruction set (ATen's CPU
//! capability, oneDNN's ISA, MKL's code path), so a torch stage's bytes can differ between
//! CPUs; these say which CPU made an artifact, and `rst audit` names both when a
//! recomputation differs.
use std::sync::OnceLock;

/// `model name` of /proc/cpuinfo (`AMD EPYC`, `Intel(R) Xeon(R) Platinum 8375C ...`), or
/// empty where there is none.
pub fn cpu_model() -> &'static str {
    static MODEL: OnceLock<String> = OnceLock::new();
    MODEL.get_or_init(|| {
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_default()
    })
}

/// The x86-64 micro-architecture level (`x86-64-v4`: AVX-512; `v3`: AVX2, FMA, BMI2;
/// `v2`: SSE4.2, POPCNT; else `v1`), the architecture's name elsewhere.
pub fn isa_level() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f")
            && has!("avx512bw")
            && has!("avx512cd")
            && has!("avx512dq")
            && has!("avx512vl")
        {
            "x86-64-v4"
        } else if has!("avx2") && has!("fma") && has!("bmi2") && has!("movbe") {
            "x86-64-v3"
        } else if has!("sse4.2") && has!("popcnt") && has!("ssse3") {
            "x86-64-v2"
        } else {
            "x86-64-v1"
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::env::consts::ARCH
    }
}

/// `AMD EPYC (x86-64-v4)`.
pub fn describe(cpu: &str, isa: &str) -> String {
    match (cpu.is_empty(), isa.is_empty()) {
        (true, true) => "an unrecorded CPU".to_string(),
        (false, true) => cpu.to_string(),
        (true, false) => isa.to_string(),
        (false, false) => format!("{cpu} ({isa})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_has_a_level_and_a_model() {
        assert!(isa_level().starts_with("x86-64-v") || !cfg!(target_arch = "x86_64"));
        if std::path::Path::new("/proc/cpuinfo").exists() && cfg!(target_arch = "x86_64") {
            assert!(!cpu_model().is_empty());
        }
        assert_eq!(describe("AMD EPYC", "x86-64-v4"), "AMD EPYC (x86-64-v4)");
        assert_eq!(describe("", ""), "an unrecorded CPU");
    }
}
