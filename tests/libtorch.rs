//! The libtorch side links through the rpath that build.rs sets: `rst-torch` runs with a
//! cleared environment (no LD_LIBRARY_PATH, which `cargo test` would otherwise provide),
//! and the engine binary `rst` does not load libtorch at all.
#[test]
#[cfg(feature = "torch")]
fn rst_torch_runs_with_nothing_exported() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rst-torch"))
        .arg("probe")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["libtorch"].as_str().unwrap().starts_with("2.13.0"), "{v}");
    let auto = v["auto_device"].as_str().unwrap();
    assert!(auto == "cpu" || auto.starts_with("cuda:"), "{v}");
}

#[test]
fn engine_binary_does_not_link_libtorch() {
    let bin = std::fs::read(env!("CARGO_BIN_EXE_rst")).unwrap();
    let needle = b"libtorch_cpu.so";
    assert!(
        !bin.windows(needle.len()).any(|w| w == needle),
        "rst links libtorch; keep tch out of the engine"
    );
}

/// `rst-torch selftest` is what a GPU host runs with nothing but the binary: every check
/// against PyTorch's numbers, on CPU and each GPU (here: CPU, and a loud SKIPPED for CUDA).
#[test]
#[cfg(feature = "torch")]
fn rst_torch_selftest_checks_every_device() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rst-torch"))
        .arg("selftest")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    for check in [
        "frob projection",
        "inf-op projection",
        "BN rule",
        "label correction",
        "constraint projection of a model (inf-op)",
        "penalty of a model (frob)",
    ] {
        assert!(
            stdout.contains(&format!("ok      cpu     {check}")),
            "{check}: {stdout}"
        );
    }
    let cuda = stdout.contains("ok      cuda:0");
    assert!(
        cuda || stdout.contains("SKIPPED on CUDA"),
        "neither CUDA checks nor a SKIPPED line: {stdout}"
    );
    assert!(stdout.contains("9 checks on "), "{stdout}");
    assert!(stdout.contains(": 0 failed"), "{stdout}");
}
