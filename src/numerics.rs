//! Portable numerics: the same bytes from a CPU training on any x86-64 machine.
//!
//! libtorch picks its CPU kernels by the instruction set of the machine it runs on:
//! ATen's vectorised kernels (reductions, batch norm, the optimiser's updates) by its CPU
//! capability (AVX-512 where there is one), oneDNN's convolutions and MKL's matrix
//! products by theirs. Kernels of other vector widths sum in another order, so the same
//! seed, data and thread count give other bits on another CPU (measured: an Intel Xeon
//! and an AMD EPYC, same libtorch, different trained weights). `numerics: portable` pins
//! all three to AVX2, which every x86-64-v3 CPU (2013 on) has:
//!
//! | library | variable | value |
//! |---|---|---|
//! | ATen | `ATEN_CPU_CAPABILITY` | `avx2` |
//! | MKL | `MKL_CBWR` (conditional numerical reproducibility) | `AVX2,STRICT` |
//! | oneDNN | `ONEDNN_MAX_CPU_ISA` | `AVX2` |
//!
//! They are read when each library first runs, so they are set on the worker process
//! (`rst-torch worker`) before it starts. The mode is part of a torch stage's key record
//! (`env.numerics`), so a portable and a native training are two cache entries.
//! What this cannot pin: GPUs (other kernels entirely) and CPUs without AVX2 (the libraries
//! fall back to what the CPU has); `rst audit` says which when bytes differ.
use serde::{Deserialize, Serialize};

/// How a torch stage's CPU kernels are chosen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Numerics {
    /// By each machine's instruction set (fastest; bytes can differ between CPUs).
    #[default]
    Native,
    /// Pinned to AVX2 ([`PORTABLE_ENV`]): the same bytes on x86-64 CPUs with AVX2.
    Portable,
}

/// The key record's `env` entry for the mode.
pub const KEY: &str = "numerics";

/// Its value for [`Numerics::Portable`]: names the instruction set pinned, so that a
/// later standard (another ISA) is another key. Native adds nothing to the record, so
/// native keys are those of entries made before the mode existed.
pub const PORTABLE: &str = "portable-avx2";

/// The variables a portable worker runs with.
pub const PORTABLE_ENV: [(&str, &str); 3] = [
    ("ATEN_CPU_CAPABILITY", "avx2"),
    ("MKL_CBWR", "AVX2,STRICT"),
    ("ONEDNN_MAX_CPU_ISA", "AVX2"),
];

impl Numerics {
    /// What goes into the key record's `env` (None: nothing, for native).
    pub fn key_value(self) -> Option<&'static str> {
        match self {
            Numerics::Native => None,
            Numerics::Portable => Some(PORTABLE),
        }
    }
}

/// The environment a worker for a job with this key record `env` needs.
pub fn worker_env(
    record_env: &std::collections::BTreeMap<String, String>,
) -> &'static [(&'static str, &'static str)] {
    match record_env.get(KEY).map(String::as_str) {
        Some(PORTABLE) => &PORTABLE_ENV,
        _ => &[],
    }
}

/// How a record's mode reads in an audit: `portable numerics (AVX2)` or `native numerics`.
pub fn describe(record_env: &std::collections::BTreeMap<String, String>) -> &'static str {
    match record_env.get(KEY).map(String::as_str) {
        Some(PORTABLE) => "portable numerics (AVX2 kernels)",
        _ => "native numerics (kernels by each CPU's instruction set)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_portable_changes_the_record_and_the_environment() {
        let mut env = std::collections::BTreeMap::new();
        assert!(worker_env(&env).is_empty());
        assert_eq!(Numerics::Native.key_value(), None);
        env.insert(
            KEY.to_string(),
            Numerics::Portable.key_value().unwrap().to_string(),
        );
        assert_eq!(worker_env(&env), &PORTABLE_ENV);
        assert!(describe(&env).starts_with("portable"));
    }
}
