//! Test harness: a temporary project directory in which the real `rst` binary runs.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A temporary project directory; `rst` runs with it as the working directory, so the
/// cache is `./cache` and results go to `./results`.
pub struct TestDir {
    dir: tempfile::TempDir,
}

/// What one `rst` invocation returned.
#[derive(Debug, Clone)]
pub struct Output {
    pub args: Vec<String>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Default for TestDir {
    fn default() -> Self {
        Self::new()
    }
}

impl TestDir {
    pub fn new() -> TestDir {
        TestDir {
            dir: tempfile::Builder::new()
                .prefix("rst-test-")
                .tempdir()
                .expect("create tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.path().join(rel)
    }

    /// Writes `contents` to `rel` (creating parent directories).
    pub fn write(&self, rel: &str, contents: &str) -> &Self {
        let p = self.join(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&p, contents).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        self
    }

    pub fn read(&self, rel: &str) -> String {
        let p = self.join(rel);
        fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
    }

    pub fn exists(&self, rel: &str) -> bool {
        self.join(rel).exists()
    }

    /// The `rst` command, configured for this directory (not yet started).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_rst"));
        c.args(args)
            .current_dir(self.path())
            .env("RST_PLAIN", "1")
            .env_remove("RST_CACHE_DIR")
            .env_remove("RUST_LOG");
        c
    }

    /// Runs `rst ARGS` to completion.
    pub fn rst(&self, args: &[&str]) -> Output {
        self.rst_env(args, &[])
    }

    /// Runs `rst ARGS` to completion with its environment changed: `(name, Some(value))`
    /// sets a variable, `(name, None)` removes it.
    pub fn rst_env(&self, args: &[&str], env: &[(&str, Option<&str>)]) -> Output {
        let mut c = self.command(args);
        for (k, v) in env {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        let out = c.output().unwrap_or_else(|e| panic!("cannot run rst: {e}"));
        Output {
            args: args.iter().map(|s| s.to_string()).collect(),
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs `rst ARGS` and asserts it exits 0.
    pub fn ok(&self, args: &[&str]) -> Output {
        let o = self.rst(args);
        o.assert_code(0);
        o
    }

    /// Lines of `ran.log` (stages append their name to it), then empties it.
    pub fn take_log(&self) -> Vec<String> {
        let p = self.join("ran.log");
        let text = fs::read_to_string(&p).unwrap_or_default();
        let _ = fs::remove_file(&p);
        text.lines().map(str::to_string).collect()
    }

    /// All cache entry files (`cache/entries/ab/<key>.json`).
    pub fn entries(&self) -> Vec<PathBuf> {
        shard_children(&self.join("cache/entries"))
    }

    /// All object directories (`cache/objects/ab/<digest>/`).
    pub fn objects(&self) -> Vec<PathBuf> {
        shard_children(&self.join("cache/objects"))
    }

    /// Parsed cache entries (JSON).
    pub fn entry_values(&self) -> Vec<serde_json::Value> {
        self.entries()
            .iter()
            .map(|p| serde_json::from_slice(&fs::read(p).unwrap()).unwrap())
            .collect()
    }

    /// The cache entry of one instance (the latest, if there are several).
    pub fn entry_of(&self, instance: &str) -> Option<serde_json::Value> {
        self.entry_values()
            .into_iter()
            .filter(|e| e["instance"] == instance)
            .max_by(|a, b| {
                a["created_unix"]
                    .as_f64()
                    .unwrap_or(0.0)
                    .total_cmp(&b["created_unix"].as_f64().unwrap_or(0.0))
            })
    }

    /// The content of `file` in the artifact of `instance`.
    pub fn artifact_file(&self, instance: &str, file: &str) -> String {
        let e = self
            .entry_of(instance)
            .unwrap_or_else(|| panic!("no cache entry for {instance}"));
        let digest = e["artifact"].as_str().unwrap();
        let p = self
            .join("cache/objects")
            .join(&digest[..2])
            .join(digest)
            .join(file);
        fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
    }
}

/// `dir/*/*`, sorted.
pub fn shard_children(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for shard in read_dir_sorted(dir) {
        if shard.is_dir() {
            out.extend(read_dir_sorted(&shard));
        }
    }
    out.sort();
    out
}

pub fn read_dir_sorted(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Copies a directory tree (regular files and directories), keeping permissions.
pub fn copy_tree(from: &Path, to: &Path) {
    rst::data::copy::copy_tree(from, to, &mut Vec::new()).unwrap();
}

/// Waits until `cond` holds, panicking with `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        if t0.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The progress/summary counts `rst run` prints last: `NAME: N stages: X ran, Y cached,
/// Z failed, W not run (..s)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub total: usize,
    pub ran: usize,
    pub cached: usize,
    pub failed: usize,
    pub not_run: usize,
}

impl Output {
    fn context(&self) -> String {
        format!(
            "rst {}\n--- exit code: {}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        )
    }

    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "unexpected exit code\n{}", self.context());
        self.assert_no_panic()
    }

    pub fn assert_no_panic(&self) -> &Self {
        assert!(
            !self.stderr.contains("panicked") && !self.stdout.contains("panicked"),
            "rst panicked\n{}",
            self.context()
        );
        self
    }

    pub fn assert_stderr_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr does not contain {needle:?}\n{}",
            self.context()
        );
        self
    }

    pub fn assert_stdout_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "stdout does not contain {needle:?}\n{}",
            self.context()
        );
        self
    }

    /// Instance names in stderr lines that start with `word` (`running`, `cached`, `done`,
    /// `reused`, `FAILED`, `skipped`, `waiting`).
    pub fn lines_with(&self, word: &str) -> BTreeSet<String> {
        self.stderr
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(word)?;
                if !rest.starts_with(' ') {
                    return None;
                }
                let rest = rest.trim_start();
                // `done     a (0.31s)`, `FAILED   a: msg`, `skipped  c (input ...)`
                let end = rest
                    .find(" (")
                    .or_else(|| {
                        if word == "FAILED" {
                            rest.find(": ")
                        } else {
                            None
                        }
                    })
                    .unwrap_or(rest.len());
                Some(rest[..end].trim_end_matches(':').to_string())
            })
            .collect()
    }

    pub fn started(&self) -> BTreeSet<String> {
        self.lines_with("running")
    }

    pub fn cached(&self) -> BTreeSet<String> {
        self.lines_with("cached")
    }

    pub fn summary(&self) -> Summary {
        let line = self
            .stderr
            .lines()
            .rev()
            .find(|l| l.contains(" stages: ") && l.contains(" ran, "))
            .unwrap_or_else(|| panic!("no summary line\n{}", self.context()));
        // "<name>: N stages: X ran, Y cached, Z failed, W not run (S.SSs)"
        let (head, tail) = line.split_once(" stages: ").unwrap();
        let num = |s: Option<&str>| -> usize {
            s.and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("bad summary line {line:?}"))
        };
        let total = num(head.rsplit(' ').next());
        let counts: Vec<usize> = tail
            .split(", ")
            .take(4)
            .map(|part| num(part.split(' ').next()))
            .collect();
        assert_eq!(counts.len(), 4, "bad summary line {line:?}");
        Summary {
            total,
            ran: counts[0],
            cached: counts[1],
            failed: counts[2],
            not_run: counts[3],
        }
    }
}

/// `["a", "b"]` → a sorted set of owned strings.
pub fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// An IDX file (the MNIST format): big-endian magic (0x803 images, 0x801 labels), the
/// dimensions, then the bytes.
pub fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = magic.to_be_bytes().to_vec();
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

#[cfg(feature = "torch")]
/// Writes a ResNet-18 state dict with torchvision's names and random values to `dest`,
/// saved by the project venv's PyTorch (`tests/support/resnet18_pth.py`).
pub fn write_resnet18_pth(dest: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    fs::create_dir_all(dest.parent().unwrap()).unwrap();
    let status = Command::new(root.join(".venv/bin/python"))
        .arg(root.join("tests/support/resnet18_pth.py"))
        .arg(dest)
        .status()
        .expect("the project venv's python (scripts/setup makes it)");
    assert!(status.success());
}

/// `n` 8x8 grey images of 3 classes, labels cycling: class c has a bright band over rows
/// [3c, 3c+2) on a cheap pseudo-random texture (`salt` varies it).
pub fn band_images(n: usize, salt: u32) -> (Vec<u8>, Vec<u8>) {
    let mut pixels = Vec::with_capacity(n * 64);
    let mut labels = Vec::with_capacity(n);
    let mut state = 0x9e37_79b9u32 ^ salt;
    for i in 0..n {
        let c = i % 3;
        for r in 0..8 {
            for _ in 0..8 {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let noise = (state >> 26) as u8; // 0..63
                pixels.push(if r / 3 == c { 170 + noise } else { noise });
            }
        }
        labels.push(c as u8);
    }
    (pixels, labels)
}

/// Writes the IDX files `tr-img`, `tr-lab` (60 band images) and `te-img`, `te-lab` (30)
/// into the test directory, for pipelines with a `download` of format idx.
pub fn write_band_idx(t: &TestDir) {
    let (tr, trl) = band_images(60, 1);
    let (te, tel) = band_images(30, 2);
    fs::write(t.join("tr-img"), idx(0x803, &[60, 8, 8], &tr)).unwrap();
    fs::write(t.join("tr-lab"), idx(0x801, &[60], &trl)).unwrap();
    fs::write(t.join("te-img"), idx(0x803, &[30, 8, 8], &te)).unwrap();
    fs::write(t.join("te-lab"), idx(0x801, &[30], &tel)).unwrap();
}

/// The stages reading the band-image IDX files ([`write_band_idx`]): `data` (a download of
/// format idx, classes top/middle/bottom) and `target` (15 train / 5 val per class, all test).
pub const BAND_DATA_STAGES: &str = r#"  data:
    kind: download
    params:
      format: idx
      files:
        - {name: tr-img, mirrors: [tr-img]}
        - {name: tr-lab, mirrors: [tr-lab]}
        - {name: te-img, mirrors: [te-img]}
        - {name: te-lab, mirrors: [te-lab]}
      idx: {train_images: tr-img, train_labels: tr-lab, test_images: te-img, test_labels: te-lab,
            classes: [top, middle, bottom]}
  target:
    kind: split
    inputs: {data: data}
    params:
      classes: [0, 1, 2]
      splits:
        - {name: train, from: train, per_class: 15}
        - {name: val, from: train, per_class: 5}
        - {name: test, from: test}
"#;

/// `pipeline` with its line `  # BAND DATA STAGES ...` replaced by [`BAND_DATA_STAGES`].
pub fn with_band_stages(pipeline: &str) -> String {
    let marker = "  # BAND DATA STAGES (tests/common: `data` and `target`)\n";
    assert!(
        pipeline.contains(marker),
        "no band data marker in the pipeline"
    );
    pipeline.replace(marker, BAND_DATA_STAGES)
}

/// A `command` stage that writes the time: never the same bytes twice (for audits that
/// must find a difference). Appended under a pipeline's `stages:`.
pub const CLOCK_STAGE: &str = r#"
  clock:
    kind: command
    params: {shell: 'date +%s%N > $RST_OUT/now'}
"#;
