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
