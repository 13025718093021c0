//! Bakes libtorch's library directory into every binary, test and bench as an rpath, so
//! `cargo build`, `cargo test` and `target/release/rst` run without LD_LIBRARY_PATH, and
//! records the libtorch version (a cache-key environment fact).
use std::path::Path;

fn main() {
    // The commit rst is built from, for provenance (absent outside a git checkout).
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    if let Ok(out) = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
    {
        let commit = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !commit.is_empty() {
            println!("cargo:rustc-env=RST_GIT_COMMIT={commit}");
        }
    }
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    // Set by torch-sys, so absent without the `torch` feature: no libtorch, no rpath, and no
    // RST_LIBTORCH_VERSION (its users read it with `option_env!`).
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    let version_py = Path::new(&lib).join("../version.py");
    println!("cargo:rerun-if-changed={}", version_py.display());
    let version = std::fs::read_to_string(&version_py)
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("__version__ = "))
                .map(|v| v.trim().trim_matches('\'').trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=RST_LIBTORCH_VERSION={version}");
}
