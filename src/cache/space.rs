//! Free space on the cache's file system: a full disk is named as such, not left to
//! surface as a stage's exit status or a half-written file.
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// (free bytes for unprivileged users, total bytes) of the file system holding `path`.
pub fn free_space(path: &Path) -> Option<(u64, u64)> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs only writes into the zeroed struct we pass.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let unit = st.f_frsize as u64;
    Some((st.f_bavail as u64 * unit, st.f_blocks as u64 * unit))
}

/// The free bytes of the file system holding `path` when it is (nearly) full: under
/// 256 KiB, or under 0.5% of its size.
pub fn nearly_full(path: &Path) -> Option<u64> {
    let (free, total) = free_space(path)?;
    (free < (256 << 10).max(total / 200)).then_some(free)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_file_system_of_a_path() {
        let (free, total) = super::free_space(std::path::Path::new("/")).unwrap();
        assert!(total > 0 && free <= total);
        assert!(super::free_space(std::path::Path::new("/no/such/dir")).is_none());
    }
}
