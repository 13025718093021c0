//! The run's overall ETA on the live view's header: from how long each running stage took
//! when it was last computed (its previous cache entry for this pipeline), and for stages
//! not started yet the mean of what is known (earlier durations and stages finished in
//! this run), spread over the stages running at once. Without any duration to go on it
//! says nothing rather than guess.
use std::collections::HashMap;
use std::time::Instant;

/// What the ETA is computed from, updated as stages start and end.
pub struct Eta {
    total: usize,
    closed: usize,
    /// Running instances: when they started, and their earlier duration if known.
    running: HashMap<String, (Instant, Option<f64>)>,
    /// Durations known: earlier ones of started stages, and those finished in this run.
    known: Vec<f64>,
}

impl Eta {
    pub fn new(total: usize) -> Eta {
        Eta {
            total,
            closed: 0,
            running: HashMap::new(),
            known: Vec::new(),
        }
    }

    pub fn started(&mut self, name: &str, earlier: Option<f64>) {
        self.known.extend(earlier);
        self.running
            .insert(name.to_string(), (Instant::now(), earlier));
    }

    /// A stage ended (done, cached, failed or skipped); `secs` when it was computed.
    pub fn closed(&mut self, name: &str, secs: Option<f64>) {
        self.closed += 1;
        self.running.remove(name);
        self.known.extend(secs);
    }

    /// Seconds left, if anything is known to estimate from.
    pub fn remaining(&self, now: Instant) -> Option<f64> {
        if self.known.is_empty() {
            return None;
        }
        let mean = self.known.iter().sum::<f64>() / self.known.len() as f64;
        let running: f64 = self
            .running
            .values()
            .map(|(t0, earlier)| {
                (earlier.unwrap_or(mean) - now.duration_since(*t0).as_secs_f64()).max(0.0)
            })
            .sum();
        let pending = self.total.saturating_sub(self.closed + self.running.len());
        let at_once = self.running.len().max(1) as f64;
        Some((running + pending as f64 * mean) / at_once)
    }

    /// The header's text: `eta ~3 min` (empty when unknown).
    pub fn text(&self, now: Instant) -> String {
        match self.remaining(now) {
            None => String::new(),
            Some(s) if s < 1.0 => "eta <1 s".to_string(),
            Some(s) if s < 90.0 => format!("eta ~{:.0} s", s.ceil()),
            Some(s) if s < 5400.0 => format!("eta ~{:.0} min", (s / 60.0).ceil()),
            Some(s) => format!("eta ~{:.1} h", s / 3600.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn from_earlier_durations_over_the_stages_running_at_once() {
        let mut eta = Eta::new(4);
        assert_eq!(eta.remaining(Instant::now()), None);
        assert_eq!(eta.text(Instant::now()), "");
        eta.started("a", Some(100.0));
        eta.started("b", Some(60.0));
        let later = Instant::now() + Duration::from_secs(10);
        // Running: 90 + 50 left; two not started, at the mean (80) each; two at once.
        let left = eta.remaining(later).unwrap();
        assert!((left - (90.0 + 50.0 + 160.0) / 2.0).abs() < 0.5, "{left}");
        assert_eq!(eta.text(later), "eta ~3 min");
        eta.closed("b", Some(40.0));
        eta.closed("c", None);
        eta.closed("d", None);
        // Only a is left: its 100 s less what it ran.
        let left = eta.remaining(later).unwrap();
        assert!((left - 90.0).abs() < 0.5, "{left}");
        // Overrun: never negative.
        assert_eq!(eta.remaining(later + Duration::from_secs(500)), Some(0.0));
    }
}
