//! Figures as PNG and SVG with plotters: accuracy per column with ±std error bars (one
//! line per table row), and validation accuracy per epoch (one panel per table column,
//! in each the mean of every row's runs with a min–max band, in the row's colour).
//!
//! Text is laid out and rasterised with an embedded DejaVu Sans (`assets/fonts/`, its
//! licence beside it) through plotters' `ab_glyph` backend, so no system font is needed
//! and the output is the same on every machine. The PNG is encoded with the `image` crate
//! (no timestamps or other metadata), the SVG is plotters' text output.
use std::sync::Once;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use super::Table;

/// DejaVu Sans 2.37 (Bitstream Vera licence: `assets/fonts/DejaVuSans.LICENSE`).
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// The family every text in the figures uses.
pub const FAMILY: &str = "sans-serif";

pub const WIDTH: u32 = 800;
pub const HEIGHT: u32 = 500;

/// Registers the embedded font with plotters, once per process.
pub fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for family in [FAMILY, "serif", "monospace"] {
            for style in [FontStyle::Normal, FontStyle::Bold] {
                if plotters::style::register_font(family, style, FONT).is_err() {
                    panic!("the embedded font is not a valid TrueType font");
                }
            }
        }
    });
}

/// matplotlib's `tab10`: row `i` gets colour `i % 10`.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

pub fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// [`color`] as CSS writes it (`#1f77b4`).
pub fn color_hex(i: usize) -> String {
    let RGBColor(r, g, b) = color(i);
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// A figure in both formats.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub png: Vec<u8>,
    pub svg: String,
}

/// Something that draws itself on any plotters backend.
pub trait Figure {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String>;
    /// Width and height in pixels.
    fn size(&self) -> (u32, u32) {
        (WIDTH, HEIGHT)
    }
}

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// The legend, in one style for every figure.
pub(super) fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(160, 160, 160))
        .label_font((FAMILY, 14))
        .draw()
        .map_err(err)
}

/// Draws `fig` into a PNG (RGB, its [`size`](Figure::size)) and an SVG.
pub fn render(fig: &impl Figure) -> Result<Rendered, String> {
    register_font();
    let (width, height) = fig.size();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        fig.draw(&root)?;
        root.present().map_err(err)?;
    }
    let mut pixels = vec![0u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        fig.draw(&root)?;
        root.present().map_err(err)?;
    }
    let mut png = Vec::new();
    {
        use image::ImageEncoder;
        image::codecs::png::PngEncoder::new(&mut png)
            .write_image(&pixels, width, height, image::ExtendedColorType::Rgb8)
            .map_err(|e| format!("encoding the PNG: {e}"))?;
    }
    Ok(Rendered { png, svg })
}

/// One line with error bars: (x, mean, std) per point.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorSeries {
    pub label: String,
    pub color: usize,
    pub points: Vec<(f64, f64, f64)>,
}

/// The metric per column, one line per row, ±std error bars.
#[derive(Debug, Clone, PartialEq)]
pub struct AccuracyFigure {
    pub title: Option<String>,
    pub x_label: String,
    pub y_label: String,
    /// Tick positions and their labels (the column headers).
    pub ticks: Vec<(f64, String)>,
    pub series: Vec<ErrorSeries>,
}

impl AccuracyFigure {
    /// Numeric columns sit at their value; otherwise columns are evenly spaced.
    pub fn from_table(table: &Table, x_label: &str, y_label: &str) -> AccuracyFigure {
        let numeric = table.columns.iter().all(|c| c.x().is_some());
        let xs: Vec<f64> = table
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| if numeric { c.x().unwrap() } else { i as f64 })
            .collect();
        let ticks = xs
            .iter()
            .zip(&table.columns)
            .map(|(&x, c)| (x, c.label.clone()))
            .collect();
        let series = table
            .rows
            .iter()
            .enumerate()
            .map(|(r, row)| ErrorSeries {
                label: row.label.clone(),
                color: r,
                points: (0..table.columns.len())
                    .filter_map(|c| table.stats(r, c).map(|s| (xs[c], s.mean, s.std)))
                    .collect(),
            })
            .collect();
        AccuracyFigure {
            title: table.title.clone(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            ticks,
            series,
        }
    }
}

/// An f64 axis with ticks exactly at the columns (plotters' `with_key_points` on an f64
/// range leaves it without a label formatter).
struct TickedAxis {
    inner: RangedCoordf64,
    ticks: Vec<f64>,
}

impl Ranged for TickedAxis {
    type ValueType = f64;
    type FormatOption = DefaultFormatting;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.inner.range()
    }
}

/// A padded range around `lo..hi`.
fn padded(lo: f64, hi: f64, min_pad: f64) -> (f64, f64) {
    if !(lo.is_finite() && hi.is_finite()) || lo > hi {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(min_pad);
    (lo - pad, hi + pad)
}

/// A y range in percent around the values, within 0..100 where they are.
fn percent_range(values: impl Iterator<Item = (f64, f64)>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (a, b)| {
        (lo.min(a), hi.max(b))
    });
    if lo > hi {
        return (0.0, 100.0);
    }
    let (y0, y1) = padded(lo, hi, 1.0);
    (
        if lo >= 0.0 { y0.max(0.0) } else { y0 },
        if hi <= 100.0 { y1.min(100.0) } else { y1 },
    )
}

impl Figure for AccuracyFigure {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        root.fill(&WHITE).map_err(err)?;
        let xs: Vec<f64> = self.ticks.iter().map(|t| t.0).collect();
        let (x_lo, x_hi) = xs
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
                (lo.min(x), hi.max(x))
            });
        let (x0, x1) = if x_lo > x_hi {
            (0.0, 1.0)
        } else if x_lo == x_hi {
            let pad = (x_lo.abs() * 0.5).max(0.5);
            (x_lo - pad, x_hi + pad)
        } else {
            let pad = (x_hi - x_lo) * 0.1;
            (x_lo - pad, x_hi + pad)
        };
        let (y0, y1) = percent_range(
            self.series
                .iter()
                .flat_map(|s| s.points.iter().map(|&(_, m, sd)| (m - sd, m + sd))),
        );
        let mut builder = ChartBuilder::on(root);
        builder
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(64);
        if let Some(t) = &self.title {
            builder.caption(t, (FAMILY, 22));
        }
        let mut chart = builder
            .build_cartesian_2d(
                TickedAxis {
                    inner: (x0..x1).into(),
                    ticks: xs.clone(),
                },
                y0..y1,
            )
            .map_err(err)?;
        let label_at = |x: &f64| {
            self.ticks
                .iter()
                .find(|(t, _)| (t - x).abs() <= 1e-9 * t.abs().max(1.0))
                .map(|(_, l)| l.clone())
                .unwrap_or_else(|| super::format_number(*x))
        };
        chart
            .configure_mesh()
            .x_labels(xs.len().max(1))
            .x_label_formatter(&label_at)
            .x_desc(self.x_label.as_str())
            .y_desc(self.y_label.as_str())
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 16))
            .y_label_formatter(&|y| super::format_number(*y))
            .light_line_style(RGBColor(246, 246, 246))
            .draw()
            .map_err(err)?;
        for s in &self.series {
            let c = color(s.color);
            chart
                .draw_series(LineSeries::new(
                    s.points.iter().map(|&(x, m, _)| (x, m)),
                    c.stroke_width(2),
                ))
                .map_err(err)?
                .label(s.label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
            chart
                .draw_series(s.points.iter().map(|&(x, m, sd)| {
                    ErrorBar::new_vertical(x, m - sd, m, m + sd, c.stroke_width(2), 12)
                }))
                .map_err(err)?;
            chart
                .draw_series(
                    s.points
                        .iter()
                        .map(|&(x, m, _)| Circle::new((x, m), 4, c.filled())),
                )
                .map_err(err)?;
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        Ok(())
    }
}

/// One training run's curve: (epoch, value in percent).
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// The run (its instance name).
    pub name: String,
    /// The legend entry it counts under (the table's row label).
    pub group: String,
    pub color: usize,
    /// The panel it is drawn in (the table's column label, e.g. `Noise = 20%`); the
    /// panels keep their first appearance's order.
    pub panel: String,
    pub points: Vec<(f64, f64)>,
}

/// Validation accuracy per epoch: one panel per column of the table, in each one line per
/// group (the mean over its runs at each epoch) with a band from the lowest to the
/// highest run, in the colour of the group's row everywhere.
#[derive(Debug, Clone, PartialEq)]
pub struct CurvesFigure {
    pub title: Option<String>,
    pub x_label: String,
    pub y_label: String,
    pub curves: Vec<Curve>,
}

/// A group's runs in one panel: per epoch (epoch, mean, lowest, highest, runs).
#[derive(Debug, Clone, PartialEq)]
pub struct Band {
    pub group: String,
    pub color: usize,
    pub points: Vec<(f64, f64, f64, f64, usize)>,
}

impl CurvesFigure {
    /// The panels in order, each with its groups' bands.
    pub fn panels(&self) -> Vec<(String, Vec<Band>)> {
        let mut panels: Vec<(String, Vec<Band>)> = Vec::new();
        for c in &self.curves {
            let i = match panels.iter().position(|(p, _)| *p == c.panel) {
                Some(i) => i,
                None => {
                    panels.push((c.panel.clone(), Vec::new()));
                    panels.len() - 1
                }
            };
            let bands = &mut panels[i].1;
            let j = match bands.iter().position(|b| b.group == c.group) {
                Some(j) => j,
                None => {
                    bands.push(Band {
                        group: c.group.clone(),
                        color: c.color,
                        points: Vec::new(),
                    });
                    bands.len() - 1
                }
            };
            for &(epoch, v) in &c.points {
                let pts = &mut bands[j].points;
                match pts.iter_mut().find(|p| p.0 == epoch) {
                    Some(p) => {
                        // Running sum in .1 until the end, then the mean.
                        p.1 += v;
                        p.2 = p.2.min(v);
                        p.3 = p.3.max(v);
                        p.4 += 1;
                    }
                    None => pts.push((epoch, v, v, v, 1)),
                }
            }
        }
        for (_, bands) in &mut panels {
            for b in bands {
                for p in &mut b.points {
                    p.1 /= p.4 as f64;
                }
                b.points.sort_by(|x, y| x.0.total_cmp(&y.0));
            }
        }
        panels
    }

    /// Panels per row of the grid.
    fn grid(n: usize) -> (usize, usize) {
        let cols = if n <= 1 { 1 } else { 2 };
        (n.max(1).div_ceil(cols), cols)
    }
}

/// A band's legend entry: its group, and how its line was made when from several runs.
fn band_label(band: &Band) -> String {
    let runs = band.points.iter().map(|p| p.4).max().unwrap_or(0);
    if runs > 1 {
        format!("{} (mean of {runs}, min–max)", band.group)
    } else {
        band.group.clone()
    }
}

impl Figure for CurvesFigure {
    fn size(&self) -> (u32, u32) {
        let (rows, cols) = Self::grid(self.panels().len());
        if rows * cols == 1 {
            (WIDTH, HEIGHT)
        } else {
            (WIDTH + 200, 48 + 330 * rows as u32)
        }
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        root.fill(&WHITE).map_err(err)?;
        let panels = self.panels();
        let all = || self.curves.iter().flat_map(|c| c.points.iter().copied());
        let (e_lo, e_hi) = all().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (e, _)| {
            (lo.min(e), hi.max(e))
        });
        let (x0, x1) = if e_lo > e_hi {
            (0.0, 1.0)
        } else if e_lo == e_hi {
            (e_lo - 1.0, e_hi + 1.0)
        } else {
            (e_lo, e_hi)
        };
        // One y scale for every panel, so that they compare at a glance.
        let (y0, y1) = percent_range(all().map(|(_, v)| (v, v)));
        let area = match &self.title {
            Some(t) => root.titled(t, (FAMILY, 22)).map_err(err)?,
            None => root.clone(),
        };
        let (rows, cols) = Self::grid(panels.len());
        let cells = area.split_evenly((rows, cols));
        let empty = vec![(String::new(), Vec::new())];
        let panels = if panels.is_empty() { empty } else { panels };
        for (k, ((title, bands), cell)) in panels.iter().zip(cells.iter()).enumerate() {
            let mut builder = ChartBuilder::on(cell);
            builder
                .margin(12)
                .x_label_area_size(44)
                .y_label_area_size(60);
            if !title.is_empty() {
                builder.caption(title, (FAMILY, 18));
            }
            let mut chart = builder.build_cartesian_2d(x0..x1, y0..y1).map_err(err)?;
            chart
                .configure_mesh()
                .x_label_formatter(&|x| super::format_number(*x))
                .x_desc(self.x_label.as_str())
                .y_desc(self.y_label.as_str())
                .label_style((FAMILY, 13))
                .axis_desc_style((FAMILY, 14))
                .y_label_formatter(&|y| super::format_number(*y))
                .light_line_style(RGBColor(246, 246, 246))
                .draw()
                .map_err(err)?;
            for band in bands {
                let c = color(band.color);
                if band.points.iter().any(|p| p.4 > 1) {
                    let mut outline: Vec<(f64, f64)> =
                        band.points.iter().map(|p| (p.0, p.3)).collect();
                    outline.extend(band.points.iter().rev().map(|p| (p.0, p.2)));
                    chart
                        .draw_series(std::iter::once(Polygon::new(outline, c.mix(0.18).filled())))
                        .map_err(err)?;
                }
                let series = chart
                    .draw_series(LineSeries::new(
                        band.points.iter().map(|p| (p.0, p.1)),
                        c.stroke_width(2),
                    ))
                    .map_err(err)?;
                // The legend once, in the first panel.
                if k == 0 {
                    series.label(band_label(band)).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                    });
                }
            }
            if k == 0 {
                // Groups with no run in the first panel still get their legend entry there.
                let here: Vec<&str> = bands.iter().map(|b| b.group.as_str()).collect();
                let mut listed = here.clone();
                for band in panels.iter().flat_map(|(_, b)| b) {
                    if listed.contains(&band.group.as_str()) {
                        continue;
                    }
                    listed.push(&band.group);
                    let c = color(band.color);
                    chart
                        // One point: no visible line, but a series the legend lists.
                        .draw_series(LineSeries::new(
                            band.points.first().map(|p| (p.0, p.1)),
                            c.stroke_width(2),
                        ))
                        .map_err(err)?
                        .label(band_label(band))
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                        });
                }
                if !listed.is_empty() {
                    legend(&mut chart, SeriesLabelPosition::LowerRight)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dark pixels: text, axes and lines were drawn.
    pub(crate) fn dark_pixels(png: &[u8]) -> usize {
        let img = image::load_from_memory(png).unwrap().to_rgb8();
        img.pixels()
            .filter(|p| p.0.iter().map(|&v| v as u32).sum::<u32>() < 200)
            .count()
    }

    #[test]
    fn accuracy_figure_renders_text_with_the_embedded_font() {
        let table = crate::report::table::tests::two_by_two();
        let fig = AccuracyFigure::from_table(&table, "Noise rate", "Top-1 accuracy (%)");
        assert_eq!(fig.ticks[0], (0.2, "Noise = 20%".to_string()));
        assert_eq!(
            fig.series[1].points.len(),
            1,
            "the missing cell is left out"
        );
        let a = render(&fig).unwrap();
        for text in [
            "Noise = 20%",
            "Noise rate",
            "Top-1 accuracy (%)",
            "Ours",
            "Fine-tuning",
        ] {
            assert!(a.svg.contains(text), "{text} not in the SVG");
        }
        assert!(a.png.starts_with(b"\x89PNG"));
        assert!(dark_pixels(&a.png) > 2000, "{}", dark_pixels(&a.png));
        assert_eq!(render(&fig).unwrap(), a, "deterministic");
    }

    #[test]
    fn text_changes_the_pixels() {
        let table = crate::report::table::tests::two_by_two();
        let a = render(&AccuracyFigure::from_table(&table, "x", "y")).unwrap();
        let b = render(&AccuracyFigure::from_table(
            &table,
            "A much longer axis description",
            "y",
        ))
        .unwrap();
        assert!(dark_pixels(&b.png) > dark_pixels(&a.png) + 100);
    }

    #[test]
    fn curves_figure() {
        let curve = |name: &str, group: &str, color, panel: &str, shift: f64| Curve {
            name: name.into(),
            group: group.into(),
            color,
            panel: panel.into(),
            points: (1..=10)
                .map(|e| (e as f64, 40.0 + shift + 3.0 * e as f64))
                .collect(),
        };
        let fig = CurvesFigure {
            title: Some("Validation accuracy".into()),
            x_label: "Epoch".into(),
            y_label: "Validation accuracy (%)".into(),
            curves: vec![
                curve("ft_regsl[rate=0.2, seed=1]", "Ours", 0, "Noise = 20%", 5.0),
                curve("ft_regsl[rate=0.2, seed=2]", "Ours", 0, "Noise = 20%", 3.0),
                curve(
                    "ft_plain[rate=0.2, seed=1]",
                    "Fine-tuning",
                    1,
                    "Noise = 20%",
                    0.0,
                ),
                curve("ft_regsl[rate=0.4, seed=1]", "Ours", 0, "Noise = 40%", 1.0),
                curve(
                    "ft_plain[rate=0.4, seed=1]",
                    "Fine-tuning",
                    1,
                    "Noise = 40%",
                    -2.0,
                ),
                curve(
                    "ft_other[rate=0.4, seed=1]",
                    "Other",
                    2,
                    "Noise = 40%",
                    -4.0,
                ),
            ],
        };
        let panels = fig.panels();
        assert_eq!(panels.len(), 2);
        assert_eq!(panels[0].0, "Noise = 20%");
        let ours = &panels[0].1[0];
        assert_eq!((ours.group.as_str(), ours.color), ("Ours", 0));
        // Epoch 1: runs at 48 and 46: mean 47, band 46..48, two runs.
        assert_eq!(ours.points[0], (1.0, 47.0, 46.0, 48.0, 2));
        let r = render(&fig).unwrap();
        assert_eq!(fig.size(), (WIDTH + 200, 48 + 330));
        assert!(r.svg.contains("Noise = 20%") && r.svg.contains("Noise = 40%"));
        assert!(r.svg.contains("Epoch") && r.svg.contains("Validation accuracy (%)"));
        assert_eq!(
            r.svg.matches(">\nOurs (mean of 2, min–max)\n<").count(),
            1,
            "one legend entry per group, in the first panel"
        );
        assert_eq!(
            r.svg.matches(">\nOther\n<").count(),
            1,
            "also a group absent there"
        );
        assert!(dark_pixels(&r.png) > 1000);
        // A single epoch and an empty figure still render.
        let one = CurvesFigure {
            curves: vec![Curve {
                points: vec![(1.0, 50.0)],
                ..fig.curves[0].clone()
            }],
            ..fig.clone()
        };
        render(&one).unwrap();
        render(&CurvesFigure {
            curves: vec![],
            ..fig
        })
        .unwrap();
    }
}
