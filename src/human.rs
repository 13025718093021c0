//! Human-readable quantities for messages.

pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `0.25 s`, `12 s`, `3 min 5 s`.
pub fn seconds(t: f64) -> String {
    if t < 10.0 {
        let text = format!("{:.2}", t.max(0.0));
        format!("{} s", text.trim_end_matches('0').trim_end_matches('.'))
    } else if t < 120.0 {
        format!("{:.0} s", t)
    } else {
        let s = t.round() as u64;
        format!("{} min {} s", s / 60, s % 60)
    }
}

/// The first 12 characters of a digest or key, for messages.
pub fn short(s: &str) -> &str {
    &s[..12.min(s.len())]
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_short() {
        assert_eq!(super::seconds(0.123), "0.12 s");
        assert_eq!(super::seconds(2.0), "2 s");
        assert_eq!(super::seconds(0.0), "0 s");
        assert_eq!(super::seconds(42.4), "42 s");
        assert_eq!(super::seconds(605.0), "10 min 5 s");
    }
}
