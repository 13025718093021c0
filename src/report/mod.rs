//! Result tables and plots, as the `aggregate` stage writes them: a [`Table`] of cells
//! (each the runs of one (row, column) pair) rendered as Markdown (the paper's README
//! layout), CSV, LaTeX and JSON ([`table`]), and accuracy / training-curve figures as PNG
//! and SVG ([`plot`]), with an embedded font so that no system font is needed.
//!
//! Everything here is deterministic: the same table gives the same bytes.
use serde_json::Value;

pub mod compare;
pub mod plot;
pub mod spread;
pub mod stats;
pub mod study_plot;
pub mod table;

pub use table::{Column, Row, Run, Table};

/// Mean and population standard deviation (ddof 0, as the paper reports) of some runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub mean: f64,
    pub std: f64,
    pub n: usize,
}

/// Mean and population standard deviation of `values`; None when there are none.
pub fn mean_std(values: &[f64]) -> Option<Stats> {
    if values.is_empty() {
        return None;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    Some(Stats {
        mean,
        std: var.sqrt(),
        n: values.len(),
    })
}

/// A number as short as it reads: rounded to 9 decimals (so `0.2 * 100` is `20`, not
/// `20.000000000000004`), without a trailing `.0`.
pub fn format_number(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    let r = (x * 1e9).round() / 1e9;
    let r = if r == 0.0 { 0.0 } else { r }; // no `-0`
    format!("{r}")
}

/// A matrix value as text: strings as they are, numbers as [`format_number`], anything
/// else as JSON. Also the key runs are grouped by, so `1` and `1.0` are the same value.
pub fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) => format_number(f),
            None => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// Validation accuracy (percent) per epoch from a train artifact's `history.json` (a list
/// of epochs; an epoch without a finite `val_acc` is left out); None when it is not a list.
pub fn validation_curve(history: &Value) -> Option<Vec<(f64, f64)>> {
    let entries = history.as_array()?;
    Some(
        entries
            .iter()
            .enumerate()
            .filter_map(|(i, entry)| {
                let epoch = entry
                    .get("epoch")
                    .and_then(Value::as_f64)
                    .unwrap_or((i + 1) as f64);
                let acc = entry.get("val_acc")?.as_f64().filter(|a| a.is_finite())?;
                Some((epoch, acc * 100.0))
            })
            .collect(),
    )
}

/// `{value}`, `{percent}` (value × 100) and `{axis}` in a label template; `{{` and `}}`
/// are literal braces.
pub const LABEL_PLACEHOLDERS: &[&str] = &["value", "percent", "axis"];

/// Checks a label template: the placeholders it uses, or what is wrong with it.
pub fn template_placeholders(template: &str) -> Result<Vec<String>, String> {
    let mut used = Vec::new();
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => name.push(c),
                        None => return Err(format!("`{{{name}` is not closed by `}}`")),
                    }
                }
                if !LABEL_PLACEHOLDERS.contains(&name.as_str()) {
                    return Err(format!(
                        "unknown placeholder `{{{name}}}`; use {} (`{{{{` for a literal brace)",
                        LABEL_PLACEHOLDERS
                            .iter()
                            .map(|p| format!("`{{{p}}}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                used.push(name);
            }
            '}' => return Err("a lone `}` (write `}}` for a literal brace)".into()),
            _ => {}
        }
    }
    Ok(used)
}

/// Fills a label template (checked by [`template_placeholders`]) for one axis value.
/// `{percent}` needs a number: value × 100, an integer when whole (`0.2` → `20`).
pub fn fill_template(template: &str, axis: &str, value: &Value) -> Result<String, String> {
    template_placeholders(template)?;
    let mut out = String::new();
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let name: String = chars.by_ref().take_while(|&c| c != '}').collect();
                match name.as_str() {
                    "value" => out.push_str(&value_text(value)),
                    "axis" => out.push_str(axis),
                    _ => match value.as_f64() {
                        Some(f) => out.push_str(&format_number(f * 100.0)),
                        None => {
                            return Err(format!(
                                "`{{percent}}` needs a number, but `{axis}` is {}",
                                value
                            ))
                        }
                    },
                }
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mean_and_population_std() {
        let s = mean_std(&[70.0, 80.0]).unwrap();
        assert_eq!((s.mean, s.std, s.n), (75.0, 5.0, 2));
        let s = mean_std(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap();
        assert_eq!((s.mean, s.std), (5.0, 2.0));
        let s = mean_std(&[42.0]).unwrap();
        assert_eq!((s.mean, s.std, s.n), (42.0, 0.0, 1));
        assert_eq!(mean_std(&[]), None);
    }

    #[test]
    fn numbers_and_values_read_short() {
        assert_eq!(format_number(0.2 * 100.0), "20");
        assert_eq!(format_number(0.125 * 100.0), "12.5");
        assert_eq!(format_number(0.333 * 100.0), "33.3");
        assert_eq!(format_number(-0.0), "0");
        assert_eq!(value_text(&json!(0.4)), "0.4");
        assert_eq!(value_text(&json!(1.0)), value_text(&json!(1)));
        assert_eq!(value_text(&json!("ours")), "ours");
        assert_eq!(value_text(&json!(true)), "true");
    }

    #[test]
    fn label_templates() {
        assert_eq!(
            fill_template("Noise = {percent}%", "rate", &json!(0.2)).unwrap(),
            "Noise = 20%"
        );
        assert_eq!(
            fill_template("Noise = {percent}%", "rate", &json!(0.125)).unwrap(),
            "Noise = 12.5%"
        );
        assert_eq!(
            fill_template("{axis} = {value}", "rate", &json!(0.4)).unwrap(),
            "rate = 0.4"
        );
        assert_eq!(
            fill_template("{{x}} {value}", "m", &json!("a")).unwrap(),
            "{x} a"
        );
        assert!(fill_template("{percent}", "m", &json!("a"))
            .unwrap_err()
            .contains("needs a number"));
        assert!(template_placeholders("{rate}")
            .unwrap_err()
            .contains("unknown placeholder `{rate}`"));
        assert!(template_placeholders("{value").is_err());
        assert!(template_placeholders("a } b").is_err());
        assert_eq!(
            template_placeholders("{value} ({percent}%)").unwrap(),
            vec!["value", "percent"]
        );
    }
}
