//! The wall clock, as the run records, the cache's entries and the Slurm job records keep
//! it: seconds since the Unix epoch.

/// Seconds since the Unix epoch, with fractions; 0 on a clock set before 1970 (a record
/// with a wrong time beats a failed run).
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn is_after_2020() {
        assert!(super::unix_now() > 1.6e9);
    }
}
