//! Provenance: where every artifact and published result came from (`rst lineage`), the
//! record of each `rst run` (`rst log`), and the Workflow Run RO-Crate export
//! (`rst export-crate`). Everything here reads what the cache already records: each entry's
//! key record (params, input digests, kind and version, environment) and run facts (host,
//! times, threads, memory, device, versions, log).
pub mod audit;
pub mod crate_export;
pub mod diff;
pub mod lineage;
pub mod runlog;

use std::collections::HashMap;

use crate::cache::store::{Entry, Store};

/// The file recording, in `results/<pipeline>/`, which artifact each published file came from.
pub const PUBLISHED_FILE: &str = "provenance.json";

/// Seconds since the epoch as an ISO 8601 UTC time (`2026-11-27T23:45:21Z`).
pub fn iso_time(unix: f64) -> String {
    let secs = unix.max(0.0).floor() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

pub use crate::time::unix_now;

/// How an artifact was computed, for people: `2026-11-28T23:45:21Z on node1 (AMD EPYC
/// (x86-64-v4)) in 12.30s, 2
/// threads, peak 1.2 GiB, device cpu, rst 0.1.0 (89adb1f28268), libtorch 2.13.0`.
pub fn describe_run(r: &crate::cache::store::RunFacts) -> String {
    format!(
        "{} on {}{} in {:.2}s, {} thread{}, peak {}, device {}, rst {}{}, libtorch {}",
        iso_time(r.started_unix),
        if r.host.is_empty() { "?" } else { &r.host },
        if r.cpu.is_empty() && r.isa.is_empty() {
            String::new()
        } else {
            format!(" ({})", crate::machine::describe(&r.cpu, &r.isa))
        },
        r.duration_s,
        r.threads,
        if r.threads == 1 { "" } else { "s" },
        crate::human::human_bytes(r.peak_rss_kib * 1024),
        r.device.as_deref().unwrap_or("-"),
        r.rst_version,
        r.rst_git_commit
            .as_deref()
            .map(|c| format!(" ({})", crate::human::short(c)))
            .unwrap_or_default(),
        if r.libtorch.is_empty() {
            "-"
        } else {
            &r.libtorch
        }
    )
}

/// Cache entries by artifact digest, to walk from an input record (instance + digest) to
/// the entry that produced it.
pub struct EntryIndex {
    by_artifact: HashMap<String, Vec<Entry>>,
}

impl EntryIndex {
    pub fn load(store: &Store) -> EntryIndex {
        let mut by_artifact: HashMap<String, Vec<Entry>> = HashMap::new();
        for (_, e) in store.all_entries().0 {
            by_artifact.entry(e.artifact.clone()).or_default().push(e);
        }
        EntryIndex { by_artifact }
    }

    /// The entry of `key`, if it produced `digest` (what a consumer recorded it read).
    pub fn by_key(&self, key: &str, digest: &str) -> Option<&Entry> {
        self.by_artifact.get(digest)?.iter().find(|e| e.key == key)
    }

    /// The entry that produced `digest`, preferring one of `instance` in `pipeline`, then
    /// the newest.
    pub fn producer(&self, digest: &str, instance: &str, pipeline: &str) -> Option<&Entry> {
        let all = self.by_artifact.get(digest)?;
        let score = |e: &Entry| (e.instance == instance, e.pipeline == pipeline);
        all.iter().max_by(|a, b| {
            score(a)
                .cmp(&score(b))
                .then(a.created_unix.total_cmp(&b.created_unix))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_time_is_utc_civil_time() {
        assert_eq!(iso_time(0.0), "1970-01-01T00:00:00Z");
        // date -u -d @1795909521
        assert_eq!(iso_time(1_795_909_521.7), "2026-11-28T23:45:21Z");
        assert_eq!(iso_time(951_782_400.0), "2000-02-29T00:00:00Z");
    }
}
