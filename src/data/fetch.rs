//! Fetching one file from one mirror.
//!
//! - Local paths and `file://` URLs are read in place (never modified).
//! - `http://` / `https://` downloads go into a persistent partial file (named by the caller,
//!   normally after the expected sha256) that a later run, or a retry within this run,
//!   resumes with an HTTP `Range` request. A server that ignores `Range` (answers 200) makes
//!   the download restart from zero.
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::data::error::DataError;

/// One entry of a file's `mirrors` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mirror {
    /// A local path: as written (absolute, or relative to the project dir), or the path of a
    /// `file://` URL.
    Local(String),
    /// An `http://` or `https://` URL.
    Http(String),
}

const MIRROR_HELP: &str = "a mirror is a local path (absolute, or relative to the project directory), a file:///absolute/path URL, or an http:// or https:// URL";

/// Classifies a mirror string; one that is neither is a [`DataError::Mirror`].
pub fn parse_mirror(s: &str) -> Result<Mirror, DataError> {
    let err = |message: String| DataError::Mirror {
        message,
        help: MIRROR_HELP.to_string(),
    };
    if s.trim().is_empty() {
        return Err(err("empty mirror".into()));
    }
    if let Some(pos) = s.find("://") {
        let scheme = &s[..pos];
        let rest = &s[pos + 3..];
        let valid_scheme = !scheme.is_empty()
            && scheme
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if valid_scheme {
            match scheme.to_ascii_lowercase().as_str() {
                "http" | "https" => {
                    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
                    if host.is_empty() {
                        return Err(err(format!("`{s}` has no host")));
                    }
                    if s.parse::<ureq::http::Uri>().is_err() {
                        return Err(err(format!("`{s}` is not a valid URL")));
                    }
                    return Ok(Mirror::Http(s.to_string()));
                }
                "file" => {
                    let path = rest.strip_prefix("localhost").unwrap_or(rest);
                    if !path.starts_with('/') {
                        return Err(DataError::Mirror {
                            message: format!(
                                "`{s}`: a file:// URL needs an absolute path on this machine"
                            ),
                            help: "write file:///absolute/path (three slashes), or just the path"
                                .into(),
                        });
                    }
                    let decoded = percent_decode(path)
                        .ok_or_else(|| err(format!("`{s}` has a bad %-escape")))?;
                    return Ok(Mirror::Local(decoded));
                }
                other => return Err(err(format!("unsupported URL scheme `{other}://` in `{s}`"))),
            }
        }
    }
    Ok(Mirror::Local(s.to_string()))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Whether `s` is a sha256 digest written as 64 hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The sha256 of a file's content as lower-case hex; `progress` gets the bytes read so far.
pub fn sha256_file(path: &Path, progress: &dyn Fn(u64)) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
        progress(total);
    }
    Ok(hex(&hasher.finalize()))
}

/// Lets an event through at most once per `every` (for progress reports), across threads.
pub struct Throttle {
    every: Duration,
    last: Mutex<Option<Instant>>,
}

impl Throttle {
    pub fn new(every: Duration) -> Self {
        Throttle {
            every,
            last: Mutex::new(None),
        }
    }

    /// True when the last event let through is at least `every` ago.
    pub fn ready(&self) -> bool {
        let Ok(mut last) = self.last.try_lock() else {
            return false;
        };
        let now = Instant::now();
        match *last {
            Some(t) if now.duration_since(t) < self.every => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }
}

/// The HTTP client used for downloads: statuses are handled here (not errors), no
/// transparent compression (byte ranges must refer to the stored bytes), and no wait for
/// the server longer than `idle`: resolving, connecting, sending the request, the answer's
/// headers, and each read of the body (the body as a whole may take as long as it takes,
/// as long as bytes keep coming).
pub fn http_agent(idle: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_resolve(Some(idle))
        .timeout_connect(Some(idle))
        .timeout_send_request(Some(idle))
        .timeout_recv_response(Some(idle))
        .timeout_per_read(Some(idle))
        .timeout_per_write(Some(idle))
        .user_agent(concat!("rst/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// One HTTP download into a resumable partial file.
pub struct HttpDownload<'a> {
    pub agent: &'a ureq::Agent,
    pub url: &'a str,
    /// The persistent partial file; bytes already in it are kept and resumed from.
    pub partial: &'a Path,
    /// When given and the partial file already has this digest, nothing is fetched.
    pub expected: Option<&'a str>,
    /// How many attempts a dropped connection, a silent server or a 5xx answer gets in all
    /// (each resumes what the last one got).
    pub attempts: u32,
    /// The idle timeout the agent was built with (for messages).
    pub idle: Duration,
    /// Wait before retry `k` is `retry_delay * k`.
    pub retry_delay: Duration,
    /// Bytes in the partial file so far and the total size when known.
    pub progress: &'a dyn Fn(u64, Option<u64>),
    pub log: &'a dyn Fn(&str),
}

/// The outcome of a download: the sha256 of the complete partial file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    pub sha256: String,
    pub bytes: u64,
}

fn is_transient(e: &ureq::Error) -> bool {
    matches!(
        e,
        ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::Protocol(_)
            | ureq::Error::BodyStalled
    )
}

/// Parses `bytes START-END/TOTAL` (TOTAL may be `*`).
fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    let start = start.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start, total))
}

fn header<'r>(resp: &'r ureq::http::Response<ureq::Body>, name: &str) -> Option<&'r str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Hashes the first `len` bytes of `file` into a fresh hasher.
fn hash_prefix(file: &mut File, len: u64) -> io::Result<Sha256> {
    file.seek(SeekFrom::Start(0))?;
    let mut hasher = Sha256::new();
    let copied = io::copy(&mut (&mut *file).take(len), &mut HashWriter(&mut hasher))?;
    if copied != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "partial file shrank while reading it",
        ));
    }
    Ok(hasher)
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Downloads `d.url` into `d.partial`, resuming from what the partial file holds, and returns
/// the sha256 of the complete file. Errors say why this mirror failed (the caller names
/// the mirror); the partial file is kept on failure so a later run resumes.
pub fn http_download(d: &HttpDownload<'_>) -> Result<Downloaded, DataError> {
    let io_err = |what: &str, source: io::Error| DataError::Write {
        what: format!("{what} {}", d.partial.display()),
        source,
    };
    if let Some(dir) = d.partial.parent() {
        std::fs::create_dir_all(dir).map_err(DataError::write(format_args!(
            "cannot create download directory {}",
            dir.display()
        )))?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(d.partial)
        .map_err(|e| io_err("cannot open partial download", e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            (d.log)(&format!(
                "waiting for another process downloading into {}",
                d.partial.display()
            ));
            file.lock().map_err(|e| io_err("cannot lock", e))?;
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io_err("cannot lock", e)),
    }

    let mut have = file.metadata().map_err(|e| io_err("cannot stat", e))?.len();
    let mut hasher = hash_prefix(&mut file, have).map_err(|e| io_err("cannot read", e))?;
    if have > 0 {
        if let Some(expected) = d.expected {
            if hex(&hasher.clone().finalize()) == expected {
                (d.log)(&format!("{} already downloaded ({have} bytes)", d.url));
                return Ok(Downloaded {
                    sha256: expected.to_string(),
                    bytes: have,
                });
            }
        }
    }
    file.seek(SeekFrom::Start(have))
        .map_err(|e| io_err("cannot seek in", e))?;

    let restart = |file: &mut File, hasher: &mut Sha256, have: &mut u64| -> Result<(), DataError> {
        file.set_len(0).map_err(|e| io_err("cannot truncate", e))?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| io_err("cannot seek in", e))?;
        *hasher = Sha256::new();
        *have = 0;
        Ok(())
    };

    let mut failed = 0u32;
    let attempts = d.attempts.max(1);
    let idle = d.idle;
    let mut use_range = true;
    let mut buf = vec![0u8; 256 * 1024];
    'attempt: loop {
        let mut retry = |why: String| -> Result<(), DataError> {
            failed += 1;
            if failed >= attempts {
                return Err(DataError::Fetch(format!(
                    "{why}; gave up after {attempts} attempt(s) (raise `attempts` (now \
                     {attempts}) or `idle_timeout_s` (now {}) in the download stage's params)",
                    idle.as_secs_f64()
                )));
            }
            (d.log)(&format!(
                "{}: {why}; retrying (attempt {} of {attempts})",
                d.url,
                failed + 1
            ));
            std::thread::sleep(d.retry_delay * failed);
            Ok(())
        };
        let what = |e: &ureq::Error| match e {
            ureq::Error::Timeout(_) => {
                format!("the server sent nothing for {} s ({e})", idle.as_secs_f64())
            }
            _ => e.to_string(),
        };

        let mut req = d.agent.get(d.url).header("Accept-Encoding", "identity");
        let ranged = use_range && have > 0;
        if ranged {
            req = req.header("Range", format!("bytes={have}-"));
        }
        let resp = match req.call() {
            Ok(r) => r,
            Err(e) if is_transient(&e) => {
                retry(format!("request failed: {}", what(&e)))?;
                continue 'attempt;
            }
            Err(e) => return Err(DataError::Http(Box::new(e))),
        };
        let status = resp.status().as_u16();
        let content_length =
            header(&resp, "content-length").and_then(|v| v.trim().parse::<u64>().ok());
        let total = match status {
            206 if ranged => {
                let Some((start, total)) =
                    header(&resp, "content-range").and_then(parse_content_range)
                else {
                    (d.log)(&format!("{}: answer to a range request has no usable Content-Range; restarting from zero", d.url));
                    restart(&mut file, &mut hasher, &mut have)?;
                    use_range = false;
                    continue 'attempt;
                };
                if start != have {
                    (d.log)(&format!(
                        "{}: server resumed at byte {start}, not {have}; restarting from zero",
                        d.url
                    ));
                    restart(&mut file, &mut hasher, &mut have)?;
                    use_range = false;
                    continue 'attempt;
                }
                total.or(content_length.map(|n| n + have))
            }
            200 | 206 => {
                if have > 0 {
                    (d.log)(&format!(
                        "{}: server ignored the range request; restarting from zero",
                        d.url
                    ));
                    restart(&mut file, &mut hasher, &mut have)?;
                }
                content_length
            }
            416 if ranged => {
                // Nothing left past `have`: the partial file is complete (the digest decides).
                break 'attempt;
            }
            429 | 500..=599 => {
                retry(format!("server answered HTTP {status}"))?;
                continue 'attempt;
            }
            _ => {
                let reason = resp.status().canonical_reason().unwrap_or("");
                return Err(DataError::Fetch(
                    format!("server answered HTTP {status} {reason}")
                        .trim_end()
                        .to_string(),
                ));
            }
        };
        (d.progress)(have, total);

        let mut reader = resp.into_body().into_reader();
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    file.flush().map_err(|e| io_err("cannot write", e))?;
                    let why = match e.get_ref().and_then(|i| i.downcast_ref::<ureq::Error>()) {
                        Some(u) => what(u),
                        None if e.kind() == io::ErrorKind::TimedOut => {
                            format!("the server sent nothing for {} s", idle.as_secs_f64())
                        }
                        None => e.to_string(),
                    };
                    let of = total.map(|t| format!(" of {t}")).unwrap_or_default();
                    retry(format!("connection lost after {have}{of} bytes: {why}"))?;
                    continue 'attempt;
                }
            };
            file.write_all(&buf[..n])
                .map_err(|e| io_err("cannot write", e))?;
            hasher.update(&buf[..n]);
            have += n as u64;
            (d.progress)(have, total);
        }
        if let Some(t) = total {
            if have < t {
                retry(format!("connection closed after {have} of {t} bytes"))?;
                continue 'attempt;
            }
        }
        break 'attempt;
    }
    file.flush().map_err(|e| io_err("cannot write", e))?;
    file.sync_all().map_err(|e| io_err("cannot sync", e))?;
    Ok(Downloaded {
        sha256: hex(&hasher.finalize()),
        bytes: have,
    })
}

/// Moves `from` to `to`: a rename, or a copy and delete across file systems.
pub fn move_file(from: &Path, to: &Path) -> io::Result<()> {
    if std::fs::rename(from, to).is_ok() {
        return Ok(());
    }
    std::fs::copy(from, to)?;
    std::fs::remove_file(from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_are_classified() {
        assert_eq!(
            parse_mirror("data/x.gz").unwrap(),
            Mirror::Local("data/x.gz".into())
        );
        assert_eq!(
            parse_mirror("/abs/x.gz").unwrap(),
            Mirror::Local("/abs/x.gz".into())
        );
        assert_eq!(
            parse_mirror("file:///abs/a%20b.gz").unwrap(),
            Mirror::Local("/abs/a b.gz".into())
        );
        assert_eq!(
            parse_mirror("file://localhost/abs").unwrap(),
            Mirror::Local("/abs".into())
        );
        assert_eq!(
            parse_mirror("HTTPS://example.org/x").unwrap(),
            Mirror::Http("HTTPS://example.org/x".into())
        );
        assert!(parse_mirror("file://rel/x").is_err());
        assert!(parse_mirror("https:///x").is_err());
        let e = parse_mirror("ftp://example.org/x").unwrap_err();
        assert!(e.to_string().contains("ftp://"), "{e}");
        assert!(e.help().is_some_and(|h| h.contains("http://")), "{e:?}");
        assert!(parse_mirror("").is_err());
    }

    #[test]
    fn content_range_parses() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }

    #[test]
    fn sha256_of_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p, &|_| {}).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(is_sha256_hex(
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        ));
        assert!(!is_sha256_hex("ba78"));
    }
}
