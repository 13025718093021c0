//! Every training run's validation curve as inline SVG: one small chart per panel (a
//! table column, e.g. a noise rate), every run of it a line in its table row's colour,
//! all charts of a table on one y scale so they compare at a glance. The table's own
//! `curves.png` draws the means with bands; this shows each run it averaged.
use maud::{html, Markup};

use super::gather::RunCurve;

const W: f64 = 300.0;
const H: f64 = 180.0;
const LEFT: f64 = 38.0;
const BOTTOM: f64 = 24.0;
const TOP: f64 = 22.0;
const RIGHT: f64 = 8.0;

/// The charts of `curves`, one per panel in order of first appearance, and a legend.
pub fn charts(curves: &[RunCurve]) -> Markup {
    let mut panels: Vec<&str> = Vec::new();
    let mut groups: Vec<(&str, &str)> = Vec::new();
    for c in curves {
        if !panels.contains(&c.panel.as_str()) {
            panels.push(&c.panel);
        }
        if !groups.iter().any(|(g, _)| *g == c.group) {
            groups.push((&c.group, &c.color));
        }
    }
    let points = curves.iter().flat_map(|c| c.points.iter());
    let (mut lo, mut hi, mut last) = (f64::INFINITY, f64::NEG_INFINITY, 1.0f64);
    for &(x, y) in points {
        lo = lo.min(y);
        hi = hi.max(y);
        last = last.max(x);
    }
    if !lo.is_finite() {
        return html! {};
    }
    // Whole-number bounds with a little room.
    let (lo, hi) = (
        (lo - 1.0).floor().max(0.0),
        (hi + 1.0).ceil().min(100.0).max(lo + 1.0),
    );
    let scale = Scale { lo, hi, last };
    html! {
        div class="legend" {
            @for (g, color) in &groups {
                span class="key" { span class="swatch" style=(format!("background:{color}")) {} (g) }
            }
        }
        div class="charts" {
            @for panel in &panels {
                @let runs: Vec<&RunCurve> = curves.iter().filter(|c| c.panel == *panel).collect();
                (chart(panel, &runs, &scale))
            }
        }
    }
}

struct Scale {
    lo: f64,
    hi: f64,
    last: f64,
}

impl Scale {
    fn x(&self, epoch: f64) -> f64 {
        let first = 1.0f64.min(self.last);
        let span = (self.last - first).max(1.0);
        LEFT + (epoch - first) / span * (W - LEFT - RIGHT)
    }
    fn y(&self, acc: f64) -> f64 {
        TOP + (self.hi - acc) / (self.hi - self.lo) * (H - TOP - BOTTOM)
    }
}

fn chart(panel: &str, runs: &[&RunCurve], s: &Scale) -> Markup {
    let title = if panel.is_empty() {
        "Validation accuracy"
    } else {
        panel
    };
    html! {
        svg class="curve-chart" viewBox=(format!("0 0 {W} {H}")) role="img"
            aria-label=(format!("{title}: {} runs", runs.len())) {
            text class="chart-title" x=(W / 2.0) y="14" text-anchor="middle" { (title) }
            @for acc in [s.lo, (s.lo + s.hi) / 2.0, s.hi] {
                line class="grid" x1=(LEFT) x2=(W - RIGHT) y1=(f(s.y(acc))) y2=(f(s.y(acc))) {}
                text class="tick-label" x=(LEFT - 4.0) y=(f(s.y(acc) + 3.0)) text-anchor="end" {
                    (crate::report::format_number((acc * 10.0).round() / 10.0))
                }
            }
            text class="tick-label" x=(LEFT) y=(H - 8.0) { "epoch 1" }
            text class="tick-label" x=(W - RIGHT) y=(H - 8.0) text-anchor="end" {
                (crate::report::format_number(s.last))
            }
            @for run in runs {
                @let pts: Vec<String> = run.points.iter()
                    .map(|&(x, y)| format!("{},{}", f(s.x(x)), f(s.y(y))))
                    .collect();
                polyline class="run" data-instance=(run.instance) points=(pts.join(" "))
                    stroke=(run.color) {
                    title { (run.instance) " (" (run.group) ")" }
                }
            }
        }
    }
}

fn f(v: f64) -> String {
    format!("{v:.1}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(name: &str, group: &str, color: &str, panel: &str, ys: &[f64]) -> RunCurve {
        RunCurve {
            instance: name.into(),
            group: group.into(),
            color: color.into(),
            panel: panel.into(),
            points: ys
                .iter()
                .enumerate()
                .map(|(i, &y)| (i as f64 + 1.0, y))
                .collect(),
        }
    }

    #[test]
    fn a_chart_per_panel_and_a_line_per_run() {
        let curves = vec![
            run(
                "a[rate=0.2, seed=1]",
                "Ours",
                "#1f77b4",
                "Noise = 20%",
                &[50.0, 60.0],
            ),
            run(
                "a[rate=0.2, seed=2]",
                "Ours",
                "#1f77b4",
                "Noise = 20%",
                &[52.0, 61.0],
            ),
            run(
                "b[rate=0.2, seed=1]",
                "Fine-tuning",
                "#ff7f0e",
                "Noise = 20%",
                &[40.0, 45.0],
            ),
            run(
                "a[rate=0.4, seed=1]",
                "Ours",
                "#1f77b4",
                "Noise = 40%",
                &[30.0, 35.0],
            ),
        ];
        let html = charts(&curves).into_string();
        assert_eq!(html.matches("<svg class=\"curve-chart\"").count(), 2);
        assert_eq!(html.matches("<polyline class=\"run\"").count(), 4);
        assert!(html.contains("stroke=\"#ff7f0e\""));
        assert!(html.contains("Noise = 40%"));
        assert_eq!(html.matches("class=\"swatch\"").count(), 2);
    }

    #[test]
    fn no_points_no_chart() {
        assert_eq!(charts(&[]).into_string(), "");
    }
}
