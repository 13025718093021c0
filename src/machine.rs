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

/// The x86-64 micro-architecture level of the psABI (each level includes the ones
/// below): `x86-64-v4` (AVX-512 F/BW/CD/DQ/VL), `v3` (AVX, AVX2, BMI1/2, F16C, FMA, LZCNT,
/// MOVBE, XSAVE), `v2` (CMPXCHG16B, LAHF/SAHF, POPCNT, SSE3, SSE4.1, SSE4.2, SSSE3), else
/// `v1`; the architecture's name elsewhere.
pub fn isa_level() -> &'static str {
    static LEVEL: OnceLock<&'static str> = OnceLock::new();
    LEVEL.get_or_init(detect_level)
}

fn detect_level() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        // std cannot detect LAHF/SAHF in 64-bit mode; the kernel lists it as `lahf_lm`.
        let lahf = std::fs::read_to_string("/proc/cpuinfo")
            .map(|t| {
                t.lines()
                    .any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "lahf_lm"))
            })
            .unwrap_or(true);
        let v2 = has!("cmpxchg16b")
            && lahf
            && has!("popcnt")
            && has!("sse3")
            && has!("sse4.1")
            && has!("sse4.2")
            && has!("ssse3");
        let v3 = v2
            && has!("avx")
            && has!("avx2")
            && has!("bmi1")
            && has!("bmi2")
            && has!("f16c")
            && has!("fma")
            && has!("lzcnt")
            && has!("movbe")
            && has!("xsave");
        let v4 = v3
            && has!("avx512f")
            && has!("avx512bw")
            && has!("avx512cd")
            && has!("avx512dq")
            && has!("avx512vl");
        match (v4, v3, v2) {
            (true, _, _) => "x86-64-v4",
            (_, true, _) => "x86-64-v3",
            (_, _, true) => "x86-64-v2",
            _ => "x86-64-v1",
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
