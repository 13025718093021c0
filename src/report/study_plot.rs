//! A study's plots (the `search` stage): the objective of each trial against its number
//! with the best-so-far line, and against each parameter, in the `aggregate` stage's style.
use plotters::coord::Shift;
use plotters::prelude::*;

use super::plot::{color, Figure, FAMILY};

/// Points, and an optional line through others (the best so far).
#[derive(Debug, Clone, PartialEq)]
pub struct ScatterFigure {
    pub title: Option<String>,
    pub x_label: String,
    pub y_label: String,
    pub points: Vec<(f64, f64)>,
    /// Drawn as steps, under the label `line_label`.
    pub line: Option<(String, Vec<(f64, f64)>)>,
}

/// `[lo, hi]` with a margin, never empty.
fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        return (0.0, 1.0);
    }
    let pad = if hi > lo { (hi - lo) * 0.06 } else { 0.5 };
    (lo - pad, hi + pad)
}

impl Figure for ScatterFigure {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        root.fill(&WHITE).map_err(err)?;
        let line = self.line.iter().flat_map(|(_, l)| l.iter().copied());
        let (x0, x1) = range(
            self.points
                .iter()
                .map(|p| p.0)
                .chain(line.clone().map(|p| p.0)),
        );
        let (y0, y1) = range(self.points.iter().map(|p| p.1).chain(line.map(|p| p.1)));
        let mut builder = ChartBuilder::on(root);
        builder
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(72);
        if let Some(t) = &self.title {
            builder.caption(t, (FAMILY, 22));
        }
        let mut chart = builder.build_cartesian_2d(x0..x1, y0..y1).map_err(err)?;
        chart
            .configure_mesh()
            .x_label_formatter(&|x| super::format_number(*x))
            .y_label_formatter(&|y| super::format_number(*y))
            .x_desc(self.x_label.as_str())
            .y_desc(self.y_label.as_str())
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 16))
            .light_line_style(RGBColor(246, 246, 246))
            .draw()
            .map_err(err)?;
        let dots = color(0);
        chart
            .draw_series(
                self.points
                    .iter()
                    .map(|&p| Circle::new(p, 4, dots.mix(0.8).filled())),
            )
            .map_err(err)?
            .label("trial")
            .legend(move |(x, y)| Circle::new((x + 10, y), 4, dots.filled()));
        if let Some((label, points)) = &self.line {
            let c = color(1);
            let mut steps = Vec::with_capacity(points.len() * 2);
            for (i, &(x, y)) in points.iter().enumerate() {
                if i > 0 {
                    steps.push((x, points[i - 1].1));
                }
                steps.push((x, y));
            }
            chart
                .draw_series(LineSeries::new(steps, c.stroke_width(2)))
                .map_err(err)?
                .label(label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
        }
        super::plot::legend(&mut chart, SeriesLabelPosition::LowerRight)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_study_figure_draws_points_line_and_labels() {
        let fig = ScatterFigure {
            title: Some("tune[rate=0.6]".into()),
            x_label: "trial".into(),
            y_label: "objective".into(),
            points: vec![(0.0, 0.5), (1.0, 0.7), (2.0, 0.6)],
            line: Some((
                "best so far".into(),
                vec![(0.0, 0.5), (1.0, 0.7), (2.0, 0.7)],
            )),
        };
        let r = super::super::plot::render(&fig).unwrap();
        for text in ["tune[rate=0.6]", "trial", "objective", "best so far"] {
            assert!(r.svg.contains(text), "{text} not in the SVG");
        }
        assert!(r.svg.matches("<circle").count() >= 3, "one dot per trial");
        assert!(!r.png.is_empty());
    }
}
