//! The pipeline's stage graph as SVG: one box per stage (its kind and how many instances,
//! filled by what they did in the run), an arrow per stage that reads another. Laid out
//! by `layout-rs` (ranks, crossing reduction, placement), so no Graphviz is needed.
use layout::backends::svg::SVGWriter;
use layout::core::base::Orientation;
use layout::core::color::Color;
use layout::core::style::StyleAttr;
use layout::std_shapes::shapes::{Arrow, Element, ShapeKind};
use layout::topo::layout::VisualGraph;

use super::gather::StageNode;

/// Stages drawn at most: a larger graph is not readable as one picture (`rst graph` exports
/// it for Graphviz).
pub const MAX_STAGES: usize = 200;

/// The fill of a stage: failed, ran (any instance), all from the cache, not in the run.
pub fn fill(s: &StageNode) -> &'static str {
    if s.failed > 0 {
        "#f4c7c3"
    } else if s.ran > 0 {
        "#c6dbef"
    } else if s.cached > 0 {
        "#e8e8e8"
    } else {
        "#ffffff"
    }
}

/// The SVG document, or None when there is nothing to draw, too much, or the layout failed.
pub fn svg(stages: &[StageNode], edges: &[(usize, usize)]) -> Option<String> {
    if stages.is_empty() || stages.len() > MAX_STAGES {
        return None;
    }
    // layout-rs asserts on what it cannot lay out; a report without its DAG is better than
    // a run that panics after its results were published. The panic is caught, and its
    // message kept off the run's output: a hook installed once stays quiet on the thread
    // that is laying out, and passes every other panic to the hook before it.
    quiet_hook();
    LAYING_OUT.with(|l| l.set(true));
    let drawn = std::panic::catch_unwind(|| draw(stages, edges)).ok();
    LAYING_OUT.with(|l| l.set(false));
    drawn
}

thread_local! {
    static LAYING_OUT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn quiet_hook() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let before = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !LAYING_OUT.with(|l| l.get()) {
                before(info);
            }
        }));
    });
}

fn draw(stages: &[StageNode], edges: &[(usize, usize)]) -> String {
    let mut vg = VisualGraph::new(Orientation::LeftToRight);
    let handles: Vec<_> = stages
        .iter()
        .map(|s| {
            let shape = ShapeKind::new_box(&label(s));
            let look = StyleAttr::new(Color::fast("#555555"), 1, Color::from_name(fill(s)), 6, 13);
            let size = layout::std_shapes::render::get_shape_size(
                Orientation::LeftToRight,
                &shape,
                13,
                false,
            );
            vg.add_node(Element::create(shape, look, Orientation::LeftToRight, size))
        })
        .collect();
    for &(from, to) in edges {
        if from != to {
            vg.add_edge(Arrow::simple(""), handles[from], handles[to]);
        }
    }
    let mut writer = SVGWriter::new();
    vg.do_it(false, false, false, &mut writer);
    fit(&writer.finalize())
}

/// layout-rs sizes the document for the boxes it reserved for long edges too, which can
/// leave most of the picture empty, and sets its text in Times: the document is cut to
/// what it draws (boxes and edges) and set in the page's sans-serif.
fn fit(svg: &str) -> String {
    let svg = svg.replace(
        "font-family: Times, serif;",
        "font-family: system-ui, sans-serif;",
    );
    let (Some(start), Some(end)) = (svg.find("<svg "), svg.find("xmlns=")) else {
        return svg;
    };
    let (mut x0, mut y0, mut x1, mut y1) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
    let mut take = |x: f64, y: f64| {
        x0 = x0.min(x);
        y0 = y0.min(y);
        x1 = x1.max(x);
        y1 = y1.max(y);
    };
    for rect in svg.split("<rect ").skip(1) {
        let attr = |name: &str| -> Option<f64> {
            let at = rect
                .find(&format!(" {name}=\""))
                .map(|i| i + 1)
                .or_else(|| rect.starts_with(&format!("{name}=\"")).then_some(0))?;
            let value = &rect[at + name.len() + 2..];
            value[..value.find('"')?].parse().ok()
        };
        if let (Some(x), Some(y), Some(w), Some(h)) =
            (attr("x"), attr("y"), attr("width"), attr("height"))
        {
            take(x, y);
            take(x + w, y + h);
        }
    }
    for path in svg.split(" d=\"").skip(1) {
        let d = &path[..path.find('"').unwrap_or(0)];
        let numbers: Vec<f64> = d.split([' ', ',']).filter_map(|t| t.parse().ok()).collect();
        for pair in numbers.chunks_exact(2) {
            take(pair[0], pair[1]);
        }
    }
    if x0 > x1 || y0 > y1 {
        return svg;
    }
    let pad = 12.0;
    let (x, y, w, h) = (x0 - pad, y0 - pad, x1 - x0 + 2.0 * pad, y1 - y0 + 2.0 * pad);
    format!(
        "{}<svg width=\"{w:.0}\" height=\"{h:.0}\" viewBox=\"{x:.1} {y:.1} {w:.1} {h:.1}\" {}",
        &svg[..start],
        &svg[end..]
    )
}

/// `name`, then `kind · N instances` and what they did.
fn label(s: &StageNode) -> String {
    let mut did = Vec::new();
    for (n, what) in [(s.ran, "ran"), (s.cached, "cached"), (s.failed, "failed")] {
        if n > 0 {
            did.push(format!("{n} {what}"));
        }
    }
    let count = match s.instances {
        1 => "1 instance".to_string(),
        n => format!("{n} instances"),
    };
    if did.is_empty() {
        format!("{}\n{} · {count}", s.name, s.kind)
    } else {
        format!("{}\n{} · {count}\n{}", s.name, s.kind, did.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ran: usize, cached: usize) -> StageNode {
        StageNode {
            name: name.into(),
            kind: "command".into(),
            instances: ran + cached,
            ran,
            cached,
            failed: 0,
        }
    }

    #[test]
    fn every_stage_is_a_box_with_its_counts() {
        let stages = vec![
            node("data", 0, 1),
            node("train<x>", 3, 1),
            node("table", 1, 0),
        ];
        let svg = svg(&stages, &[(0, 1), (1, 2), (0, 2)]).unwrap();
        assert!(svg.starts_with("<?xml") || svg.starts_with("<svg"));
        assert!(svg.contains("train&lt;x&gt;"));
        assert!(svg.contains("3 ran, 1 cached"));
        assert!(svg.contains("command · 4 instances"));
        assert_eq!(svg.matches("<rect").count(), 3);
        assert!(svg.contains("#c6dbefff"), "a stage that ran is filled blue");
        assert!(!svg.contains("Times"));
    }

    #[test]
    fn the_document_is_cut_to_what_it_draws() {
        let raw = "<?xml?><svg width=\"900\" height=\"500\" viewBox=\"0 0 900 500\" \
                   xmlns=\"http://www.w3.org/2000/svg\"><rect x=\"30\" y=\"60\" width=\"100\" \
                   height=\"40\"/><path id=\"a\" d=\"M 130 80 C 200 80, 200 90, 300 90 \"/></svg>";
        let cut = fit(raw);
        assert!(
            cut.contains(
                "<svg width=\"294\" height=\"64\" viewBox=\"18.0 48.0 294.0 64.0\" xmlns="
            ),
            "{cut}"
        );
    }

    #[test]
    fn nothing_or_too_much_is_not_drawn() {
        assert!(svg(&[], &[]).is_none());
        let many: Vec<StageNode> = (0..=MAX_STAGES)
            .map(|i| node(&format!("s{i}"), 1, 0))
            .collect();
        assert!(svg(&many, &[]).is_none());
    }
}
