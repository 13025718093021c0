//! Checking what was fetched: sha256 pins, torch.hub's hash in the file name, and trust
//! on first use (`--accept-new-checksums`).
use super::FileSpec;

/// The environment variable `rst run --accept-new-checksums` sets for its workers: an
/// unpinned file from the network is used (trust on first use) instead of refused.
pub const ACCEPT_NEW_CHECKSUMS_ENV: &str = "RST_ACCEPT_NEW_CHECKSUMS";

pub(super) fn accept_new_checksums() -> bool {
    std::env::var_os(ACCEPT_NEW_CHECKSUMS_ENV).is_some_and(|v| v == "1")
}

/// The hex digits a file name carries in torch.hub's convention (`-<hex>.`, the first
/// such group of the name's last path component), if any.
pub fn name_hash(source: &str) -> Option<String> {
    let base = source
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(source)
        .split(['?', '#'])
        .next()
        .unwrap_or("");
    let bytes = base.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b != b'-' {
            continue;
        }
        let hex: String = base[i + 1..]
            .chars()
            .take_while(|c| matches!(c, '0'..='9' | 'a'..='f'))
            .collect();
        if !hex.is_empty() && base[i + 1 + hex.len()..].starts_with('.') {
            return Some(hex);
        }
    }
    None
}

/// With `hash_in_name`, checks `sha` against the hash in the source's name.
pub(super) fn check_name_hash(
    spec: &FileSpec,
    source: &str,
    sha: &str,
) -> Result<Option<String>, String> {
    match name_hash(source).filter(|_| spec.hash_in_name) {
        Some(h) if sha.starts_with(&h) => Ok(Some(h)),
        Some(h) => Err(format!(
            "its sha256 {sha} does not start with `{h}`, the hash in its file name (corrupt or \
             substituted file)"
        )),
        None => Ok(None),
    }
}

pub(super) fn mismatch(expected: &str, actual: &str) -> String {
    format!("sha256 mismatch: expected {expected}, got {actual}")
}
