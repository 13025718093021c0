//! The run's timeline as inline SVG: one row and one bar per stage instance (as
//! Nextflow's `-with-timeline`), ordered by start, coloured by what happened (ran, came
//! from the cache, failed), with the slot or cluster job and GPUs it ran on.
use maud::{html, Markup};

use super::gather::Bar;

/// Bars drawn at most; beyond, the page says how many were left out.
pub const MAX_BARS: usize = 3000;

const WIDTH: f64 = 1000.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 22.0;

/// The SVG of `bars`.
pub fn svg(bars: &[Bar]) -> Markup {
    let bars = &bars[..bars.len().min(MAX_BARS)];
    let row = if bars.len() <= 120 {
        14.0
    } else {
        (1700.0 / bars.len() as f64).max(1.0)
    };
    let labelled = row >= 10.0;
    let left = if labelled { label_width(bars) } else { 10.0 };
    let total = bars.iter().map(|b| b.end).fold(0.0, f64::max).max(1e-3);
    let span = WIDTH - left - RIGHT;
    let x = |t: f64| left + t / total * span;
    let height = TOP + row * bars.len() as f64 + 4.0;
    let step = tick_step(total);
    let ticks: Vec<f64> = (0..)
        .map(|i| i as f64 * step)
        .take_while(|t| *t <= total * 1.000_001)
        .collect();
    html! {
        svg class="timeline" viewBox=(format!("0 0 {WIDTH} {height:.1}")) role="img"
            aria-label=(format!("timeline of {} stage instances", bars.len())) {
            @for t in &ticks {
                line class="tick" x1=(f(x(*t))) x2=(f(x(*t))) y1=(f(TOP - 4.0)) y2=(f(height)) {}
                text class="tick-label" x=(f(x(*t))) y="12" text-anchor="middle" { (crate::human::seconds(*t)) }
            }
            @for (i, b) in bars.iter().enumerate() {
                @let y = TOP + row * i as f64;
                @let w = (x(b.end) - x(b.start)).max(2.0);
                @if labelled {
                    text class="name" x=(f(left - 6.0)) y=(f(y + row * 0.75)) text-anchor="end" {
                        (b.instance)
                    }
                }
                rect class=(format!("bar {}", b.outcome)) data-instance=(b.instance)
                    x=(f(x(b.start))) y=(f(y + row * 0.1)) width=(f(w)) height=(f(row * 0.8)) {
                    title { (describe(b)) }
                }
                @if labelled {
                    text class="where" x=(f(x(b.start) + w + 4.0)) y=(f(y + row * 0.75)) {
                        (short_where(b))
                    }
                }
            }
        }
    }
}

fn f(v: f64) -> String {
    format!("{v:.1}")
}

/// Room for the longest instance name (about 6.2 units a character at the page's size).
fn label_width(bars: &[Bar]) -> f64 {
    let longest = bars
        .iter()
        .map(|b| b.instance.chars().count())
        .max()
        .unwrap_or(0);
    (longest as f64 * 6.2 + 12.0).clamp(60.0, 360.0)
}

/// A round step for about 8 ticks over `total` seconds.
fn tick_step(total: f64) -> f64 {
    let raw = total / 8.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude)
}

/// The bar's tooltip: the instance, what happened, how long, where.
fn describe(b: &Bar) -> String {
    let mut text = format!("{}: {}", b.instance, b.outcome);
    match (&*b.outcome, &b.computed) {
        ("ran" | "failed", _) => {
            text.push_str(&format!(" in {}", crate::human::seconds(b.end - b.start)))
        }
        (_, Some((secs, host))) => text.push_str(&format!(
            " (computed earlier in {} on {host})",
            crate::human::seconds(*secs)
        )),
        _ => {}
    }
    let place = placement(b);
    if !place.is_empty() {
        text.push_str(&format!(", {place}"));
    }
    text
}

/// What the row's right side says.
fn short_where(b: &Bar) -> String {
    match &*b.outcome {
        "ran" | "failed" => {
            let place = placement(b);
            let took = crate::human::seconds(b.end - b.start);
            if place.is_empty() {
                took
            } else {
                format!("{took} · {place}")
            }
        }
        other => other.to_string(),
    }
}

/// `slot 2`, `Slurm job 1234`, plus `GPU 0,1`.
fn placement(b: &Bar) -> String {
    let mut parts = Vec::new();
    if let Some(job) = &b.job {
        parts.push(format!("Slurm job {job}"));
    } else if let Some(lane) = b.lane {
        parts.push(format!("slot {}", lane + 1));
    }
    if !b.gpus.is_empty() {
        parts.push(format!("GPU {}", b.gpus.join(",")));
    }
    parts.join(" · ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(name: &str, outcome: &str, start: f64, end: f64, lane: Option<usize>) -> Bar {
        Bar {
            instance: name.into(),
            stage: name.into(),
            outcome: outcome.into(),
            start,
            end,
            lane,
            job: None,
            gpus: Vec::new(),
            computed: (outcome == "cached").then(|| (8.25, "node1".to_string())),
        }
    }

    #[test]
    fn one_bar_per_instance_with_where_it_ran() {
        let mut b = bar("train[seed=1]", "ran", 1.0, 31.0, Some(1));
        b.gpus = vec!["0".into()];
        let bars = vec![
            bar("data", "cached", 0.0, 0.0, None),
            b,
            bar("eval<1>", "failed", 31.0, 32.0, Some(0)),
        ];
        let svg = svg(&bars).into_string();
        assert_eq!(svg.matches("<rect class=\"bar ").count(), 3);
        assert!(svg.contains("class=\"bar cached\" data-instance=\"data\""));
        assert!(svg.contains("30 s · slot 2 · GPU 0"));
        assert!(svg.contains("data: cached (computed earlier in 8.25 s on node1)"));
        // Names are escaped.
        assert!(svg.contains("eval&lt;1&gt;"));
        assert!(!svg.contains("eval<1>"));
    }

    #[test]
    fn ticks_are_round_and_times_read_short() {
        assert_eq!(tick_step(80.0), 10.0);
        assert_eq!(tick_step(0.9), 0.2);
        assert_eq!(tick_step(1000.0), 200.0);
    }

    #[test]
    fn many_bars_are_capped_and_unlabelled() {
        let bars: Vec<Bar> = (0..MAX_BARS + 10)
            .map(|i| {
                bar(
                    &format!("s[i={i}]"),
                    "ran",
                    i as f64,
                    i as f64 + 1.0,
                    Some(0),
                )
            })
            .collect();
        let svg = svg(&bars).into_string();
        assert_eq!(svg.matches("<rect class=\"bar ").count(), MAX_BARS);
        assert!(!svg.contains("class=\"name\""));
    }
}
