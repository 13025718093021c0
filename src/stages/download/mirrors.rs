//! Fetching one file entry: its mirrors in order, local paths read in place, http(s)
//! downloads resumed across attempts and runs.
use std::path::Path;
use std::time::Duration;

use super::params::FileSpec;
use super::verify::{accept_new_checksums, check_name_hash, mismatch};
use super::{internal_io, listing, Fetched, Runner};
use crate::data::fetch::{self, HttpDownload, Mirror};
use crate::stages::{Progress, StageError};

/// Why one mirror did not give the file: try the next one, or stop.
pub(super) enum Fail {
    Mirror(String),
    Fatal(StageError),
}

const RETRY_DELAY: Duration = if cfg!(test) {
    Duration::from_millis(10)
} else {
    Duration::from_millis(750)
};
impl Runner<'_, '_> {
    pub(super) fn fetch(&self, i: usize, spec: &FileSpec) -> Result<Fetched, StageError> {
        let label = format!("files[{i}] ({})", spec.name);
        let expected = spec.expected();
        let mut failures = Vec::new();
        for (j, m) in spec.mirrors.iter().enumerate() {
            let result = match fetch::parse_mirror(m) {
                Err(e) => Err(Fail::Mirror(e.render())),
                Ok(Mirror::Local(path)) => self.fetch_local(spec, expected.as_deref(), &path),
                Ok(Mirror::Http(url)) => {
                    self.fetch_http(i, &label, spec, expected.as_deref(), &url)
                }
            };
            match result {
                Ok(f) => {
                    let what = match &f.sha256 {
                        Some(sha) => format!("sha256 {sha}"),
                        None => "directory, read in place".into(),
                    };
                    self.ctx.log(&format!("{label}: from {m} ({what})"));
                    return Ok(f);
                }
                Err(Fail::Fatal(e)) => return Err(e),
                Err(Fail::Mirror(why)) => {
                    if j + 1 < spec.mirrors.len() {
                        self.ctx.log(&format!(
                            "{label}: mirror {m} failed: {why}; trying the next mirror"
                        ));
                    }
                    failures.push(format!("{m}: {why}"));
                }
            }
        }
        let n = failures.len();
        Err(StageError::user(format!(
            "{label}: no mirror worked ({n} tried, in order):{}",
            listing(&failures, usize::MAX)
        )))
    }

    pub(super) fn fetch_local(
        &self,
        spec: &FileSpec,
        expected: Option<&str>,
        path: &str,
    ) -> Result<Fetched, Fail> {
        let path = self.ctx.local_path(path);
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Fail::Mirror(format!("not found ({})", path.display())))
            }
            Err(e) => return Err(Fail::Mirror(format!("cannot read {}: {e}", path.display()))),
        };
        if meta.is_dir() {
            if expected.is_some() {
                return Err(Fail::Mirror("is a directory, but sha256 pins a single file (drop sha256 for a directory source)".into()));
            }
            return Ok(Fetched {
                name: spec.name.clone(),
                path,
                is_dir: true,
                owned: false,
                sha256: None,
            });
        }
        if !meta.is_file() {
            return Err(Fail::Mirror(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        let len = meta.len();
        let actual = fetch::sha256_file(&path, &|pos| {
            self.progress(pos, len, || format!("{}: checking sha256", spec.name))
        })
        .map_err(|e| Fail::Mirror(format!("cannot read {}: {e}", path.display())))?;
        if let Some(expected) = expected {
            if actual != expected {
                return Err(Fail::Mirror(mismatch(expected, &actual)));
            }
        }
        check_name_hash(spec, &path.to_string_lossy(), &actual).map_err(Fail::Mirror)?;
        Ok(Fetched {
            name: spec.name.clone(),
            path,
            is_dir: false,
            owned: false,
            sha256: Some(actual),
        })
    }

    pub(super) fn fetch_http(
        &self,
        i: usize,
        label: &str,
        spec: &FileSpec,
        expected: Option<&str>,
        url: &str,
    ) -> Result<Fetched, Fail> {
        let ctx = self.ctx;
        let part_name = match expected {
            Some(e) => format!("{e}.part"),
            None => format!("url-{}.part", blake3::hash(url.as_bytes()).to_hex()),
        };
        let partial = ctx.downloads.join(part_name);
        let agent = self.agent.get_or_init(|| fetch::http_agent(self.net.idle));
        let progress = |pos: u64, len: Option<u64>| {
            self.progress(pos, len.unwrap_or(0), || {
                format!("{}: {:.1} MiB", spec.name, pos as f64 / 1048576.0)
            });
        };
        let log = |line: &str| ctx.log(&format!("{label}: {line}"));
        for round in 0..2 {
            let had = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
            let got = fetch::http_download(&HttpDownload {
                agent,
                url,
                partial: &partial,
                expected,
                attempts: self.net.attempts,
                idle: self.net.idle,
                retry_delay: RETRY_DELAY,
                progress: &progress,
                log: &log,
            })
            .map_err(|e| Fail::Mirror(e.render()))?;
            (ctx.progress)(Progress {
                pos: got.bytes,
                len: got.bytes,
                message: format!("{}: downloaded", spec.name),
            });
            match expected {
                Some(e) if got.sha256 != e => {
                    let _ = std::fs::remove_file(&partial);
                    if had > 0 && round == 0 {
                        log(&format!("the {had} bytes kept from an earlier run did not verify ({}); downloading again from zero", mismatch(e, &got.sha256)));
                        continue;
                    }
                    return Err(Fail::Mirror(mismatch(e, &got.sha256)));
                }
                Some(_) => return self.take_download(spec, &partial, got.sha256),
                None => {
                    let sha = got.sha256;
                    let vouched = match check_name_hash(spec, url, &sha) {
                        Ok(v) => v,
                        Err(why) => {
                            let _ = std::fs::remove_file(&partial);
                            return Err(Fail::Mirror(why));
                        }
                    };
                    if let Some(h) = vouched {
                        log(&format!(
                            "sha256 {sha} starts with `{h}`, the hash in its file name \
                             (torch.hub's check); pin it with  sha256: \"{sha}\""
                        ));
                        return self.take_download(spec, &partial, sha);
                    }
                    if accept_new_checksums() {
                        log(&format!(
                            "warning: accepted a file nothing pinned (--accept-new-checksums): \
                             sha256 {sha}; pin it with  sha256: \"{sha}\"  in files[{i}]"
                        ));
                        return self.take_download(spec, &partial, sha);
                    }
                    // Keep it under the name a pinned download uses, so pinning costs no refetch.
                    let _ = std::fs::rename(&partial, ctx.downloads.join(format!("{sha}.part")));
                    return Err(Fail::Fatal(StageError::user(format!(
                        "{label}: downloaded {url} ({} bytes), but a file from the network is only used once pinned by its sha256.\n  its sha256 is {sha}\n  add  sha256: \"{sha}\"  to files[{i}] ({})  (the download is kept: the next run does not fetch it again),\n  or run with --accept-new-checksums to trust it this once",
                        got.bytes, spec.name
                    ))));
                }
            }
        }
        Err(Fail::Mirror("the download did not verify twice".into()))
    }

    /// Moves a verified download into the work area.
    pub(super) fn take_download(
        &self,
        spec: &FileSpec,
        partial: &Path,
        sha256: String,
    ) -> Result<Fetched, Fail> {
        let dir = self.ctx.work.join("fetched");
        std::fs::create_dir_all(&dir)
            .map_err(|e| Fail::Fatal(internal_io(format!("cannot create {}", dir.display()))(e)))?;
        let dest = dir.join(&spec.name);
        fetch::move_file(partial, &dest).map_err(|e| {
            Fail::Fatal(internal_io(format!(
                "cannot move {} to {}",
                partial.display(),
                dest.display()
            ))(e))
        })?;
        Ok(Fetched {
            name: spec.name.clone(),
            path: dest,
            is_dir: false,
            owned: true,
            sha256: Some(sha256),
        })
    }
}
