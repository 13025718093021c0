//! The data stages through the binary: a download from a local HTTP server (127.0.0.1)
//! with mirror fallback and checksum errors, and IDX → split → noise on a generated set.
use std::io::{Read, Write};
use std::net::TcpListener;

use crate::common::{idx, TestDir};

/// Serves `body` for any GET on 127.0.0.1; returns the base URL. Stops after `max` requests.
fn serve(body: Vec<u8>, max: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(max) {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            if req.starts_with("GET /missing") {
                let _ = s.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                continue;
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    format!("http://{addr}")
}

fn sha256_hex(data: &[u8]) -> String {
    use std::fmt::Write as _;
    let digest = <sha2::Sha256 as sha2::Digest>::digest(data);
    digest.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn pipeline(url: &str, sha: &str) -> String {
    format!(
        "name: dl\nstages:\n  get:\n    kind: download\n    publish: true\n    params:\n      files:\n        - name: data.txt\n          sha256: \"{sha}\"\n          mirrors: [\"{url}/missing/data.txt\", \"{url}/data.txt\"]\n"
    )
}

#[test]
fn http_download_with_mirror_fallback_and_checksums() {
    let body = b"hello from a mirror\n".to_vec();
    let url = serve(body.clone(), 8);
    let t = TestDir::new();
    t.write("p.yaml", &pipeline(&url, &sha256_hex(&body)));
    t.ok(&["run", "p.yaml"]);
    assert_eq!(
        t.read("results/p/get/files/data.txt"),
        "hello from a mirror\n"
    );
    // Cached afterwards: no network needed.
    let out = t.ok(&["run", "p.yaml"]);
    assert_eq!(out.summary().ran, 0);

    // A wrong pin is a user error (exit 2) naming both digests; nothing is cached.
    let t2 = TestDir::new();
    t2.write("p.yaml", &pipeline(&url, &"0".repeat(64)));
    let out = t2.rst(&["run", "p.yaml"]);
    out.assert_code(2)
        .assert_no_panic()
        .assert_stderr_contains(&sha256_hex(&body));
    assert!(t2.entries().is_empty());
}

/// An unpinned network file stops the run (exit 2) with the digest to pin; the run
/// trusts it with `--accept-new-checksums`. torch.hub's name hash (`<stem>-<hex>.<ext>`)
/// vouches for a file by itself, and a file whose content does not match its name's hash is
/// refused.
#[test]
fn unpinned_downloads_need_a_pin_a_name_hash_or_accept_new_checksums() {
    let body = b"weights, say\n".to_vec();
    let sha = sha256_hex(&body);
    let url = serve(body.clone(), 16);
    let unpinned = |name: &str, hash_in_name: bool| {
        format!(
            "name: dl\nstages:\n  get:\n    kind: download\n    params:\n      files:\n        - name: w.pth\n          hash_in_name: {hash_in_name}\n          mirrors: [\"{url}/{name}\"]\n"
        )
    };
    let t = TestDir::new();
    t.write("p.yaml", &unpinned("w.pth", false));
    t.rst(&["run", "p.yaml"])
        .assert_code(2)
        .assert_stderr_contains(&format!("sha256: \"{sha}\""))
        .assert_stderr_contains("--accept-new-checksums");
    assert!(t.entries().is_empty());
    let out = t.ok(&["run", "p.yaml", "--accept-new-checksums"]);
    assert_eq!(out.summary().ran, 1);

    let t = TestDir::new();
    t.write("p.yaml", &unpinned(&format!("w-{}.pth", &sha[..8]), true));
    t.ok(&["run", "p.yaml"]);

    let t = TestDir::new();
    let wrong = if sha.starts_with('0') { "1" } else { "0" };
    t.write(
        "p.yaml",
        &unpinned(&format!("w-{wrong}{}.pth", &sha[1..8]), true),
    );
    t.rst(&["run", "p.yaml", "--accept-new-checksums"])
        .assert_code(2)
        .assert_stderr_contains("the hash in its file name");
    assert!(t.entries().is_empty());
}

#[test]
fn idx_split_noise_chain_is_deterministic_and_cached() {
    let t = TestDir::new();
    // 60 train / 20 test images of 2x2 pixels, labels cycling over 3 classes.
    let train_labels: Vec<u8> = (0..60).map(|i| (i % 3) as u8).collect();
    let test_labels: Vec<u8> = (0..20).map(|i| (i % 3) as u8).collect();
    std::fs::write(t.join("tr-img"), idx(0x803, &[60, 2, 2], &[7u8; 240])).unwrap();
    std::fs::write(t.join("tr-lab"), idx(0x801, &[60], &train_labels)).unwrap();
    std::fs::write(t.join("te-img"), idx(0x803, &[20, 2, 2], &[9u8; 80])).unwrap();
    std::fs::write(t.join("te-lab"), idx(0x801, &[20], &test_labels)).unwrap();
    let yaml = r#"
name: chain
params: {rates: [0.5]}
stages:
  data:
    kind: download
    params:
      format: idx
      files:
        - {name: tr-img, mirrors: [tr-img]}
        - {name: tr-lab, mirrors: [tr-lab]}
        - {name: te-img, mirrors: [te-img]}
        - {name: te-lab, mirrors: [te-lab]}
      idx: {train_images: tr-img, train_labels: tr-lab, test_images: te-img, test_labels: te-lab}
  target:
    kind: split
    inputs: {data: data}
    params:
      classes: [1, 2]
      splits:
        - {name: train, from: train, per_class: 15}
        - {name: val, from: train, per_class: 5}
        - {name: test, from: test}
  noisy:
    kind: noise
    matrix: {rate: "${rates}"}
    inputs: {data: target}
    publish: true
    params: {rate: "${rate}", mode: exclude-true}
"#;
    t.write("p.yaml", yaml);
    t.ok(&["run", "p.yaml"]);
    let meta: serde_json::Value =
        serde_json::from_str(&t.read("results/p/noisy/rate=0.5/dataset.json")).unwrap();
    assert_eq!(meta["splits"]["train"]["n"], 30);
    assert_eq!(meta["info"]["noise"]["chosen"], 15);
    assert_eq!(
        meta["info"]["noise"]["flipped"], 15,
        "exclude-true flips every chosen label"
    );
    let first = std::fs::read(t.join("results/p/noisy/rate=0.5/labels.safetensors")).unwrap();
    // An unpinned local source is part of the key: changing its bytes reruns the chain...
    std::fs::write(t.join("te-lab"), idx(0x801, &[20], &[1u8; 20])).unwrap();
    let out = t.ok(&["run", "p.yaml"]);
    assert!(out.started().contains("data"), "{}", out.stderr);
    // ... and restoring them gives the cached, byte-identical result again.
    std::fs::write(t.join("te-lab"), idx(0x801, &[20], &test_labels)).unwrap();
    let out = t.ok(&["run", "p.yaml"]);
    assert_eq!(out.summary().ran, 0, "{}", out.stderr);
    assert_eq!(
        std::fs::read(t.join("results/p/noisy/rate=0.5/labels.safetensors")).unwrap(),
        first
    );
}
