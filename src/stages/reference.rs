//! The reference of every stage kind's parameters: `rst params KIND` and the README's
//! "Stage parameters" section. Generated from the structs the validator deserialises
//! `params:` into (their JSON schemas, which `schemars` derives from the same serde
//! attributes and doc comments), so the reference cannot drift from what is accepted: a
//! test checks the README's copy against this output.
use serde_json::{Map, Value};

/// The JSON schema of `kind`'s params (from its declaration in [`super::registry`]);
/// None for an unknown kind.
pub fn schema(kind: &str) -> Option<Value> {
    super::registry()
        .iter()
        .find(|k| k.name() == kind)
        .map(|k| k.params_schema().to_value())
}

/// Every stage kind's name, in the order of a pipeline (the registry's).
pub fn kinds() -> impl Iterator<Item = &'static str> {
    super::registry().iter().map(|k| k.name())
}

/// Text on one line (doc comments wrap), with `|` escaped for a Markdown cell.
fn one_line(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// The definition a `$ref` names.
fn deref<'a>(v: &'a Value, defs: &'a Map<String, Value>) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => r
            .rsplit('/')
            .next()
            .and_then(|name| defs.get(name))
            .unwrap_or(v),
        None => v,
    }
}

/// The name of the object definition `v` refers to, if it is one (a nested table).
fn object_ref(v: &Value, defs: &Map<String, Value>) -> Option<String> {
    let name = v.get("$ref")?.as_str()?.rsplit('/').next()?.to_string();
    defs.get(&name)?.get("properties").map(|_| name)
}

/// The object definitions `v` refers to anywhere (a field, an option, list items, map
/// values), each once: the tables that follow the kind's own.
fn collect_objects(v: &Value, defs: &Map<String, Value>, nested: &mut Vec<String>) {
    if let Some(name) = object_ref(v, defs) {
        if !nested.contains(&name) {
            nested.push(name);
        }
    }
    match v {
        Value::Object(m) => m.values().for_each(|x| collect_objects(x, defs, nested)),
        Value::Array(a) => a.iter().for_each(|x| collect_objects(x, defs, nested)),
        _ => {}
    }
}

/// A type as a reader says it: `string`, `integer or null`, `fp32 | bf16 | fp16`,
/// `list of number`, `map of string`, `Test (below)`.
fn type_text(v: &Value, defs: &Map<String, Value>) -> String {
    if let Some(name) = object_ref(v, defs) {
        return format!("`{name}` (below)");
    }
    let v = deref(v, defs);
    if let Some(values) = v.get("enum").and_then(Value::as_array) {
        return values
            .iter()
            .map(|x| match x {
                Value::String(s) => format!("`{s}`"),
                x => format!("`{x}`"),
            })
            .collect::<Vec<_>>()
            .join(" \\| ");
    }
    if let Some(c) = v.get("const") {
        return match c {
            Value::String(s) => format!("`{s}`"),
            c => format!("`{c}`"),
        };
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(variants) = v.get(key).and_then(Value::as_array) {
            let mut parts: Vec<String> = Vec::new();
            for variant in variants {
                let t = type_text(variant, defs);
                if t != "null" && !parts.contains(&t) {
                    parts.push(t);
                }
            }
            return parts.join(" or ");
        }
    }
    let one = |t: &str| -> String {
        match t {
            "array" => match v.get("items") {
                Some(items) => format!("list of {}", type_text(items, defs)),
                None => "list".into(),
            },
            "object" => match v.get("additionalProperties") {
                Some(Value::Bool(_)) | None => "map".into(),
                Some(values) => format!("map of {}", type_text(values, defs)),
            },
            t => t.to_string(),
        }
    };
    match v.get("type") {
        Some(Value::String(t)) => one(t),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .map(one)
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "any".into(),
    }
}

/// The Markdown table of one object schema's properties.
fn table(object: &Value, defs: &Map<String, Value>, nested: &mut Vec<String>) -> String {
    let required: Vec<&str> = object
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut out = String::from("| parameter | type | default | description |\n|---|---|---|---|\n");
    let empty = Map::new();
    let props = object
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    for (name, prop) in props {
        collect_objects(prop, defs, nested);
        let default = match prop.get("default") {
            Some(Value::Null) => "none".to_string(),
            Some(d) => format!("`{}`", d.to_string().replace('|', "\\|")),
            None if required.contains(&name.as_str()) => "**required**".to_string(),
            None => "none".to_string(),
        };
        let described = prop
            .get("description")
            .or_else(|| deref(prop, defs).get("description"))
            .and_then(Value::as_str)
            .map(one_line)
            .unwrap_or_default();
        out.push_str(&format!(
            "| `{name}` | {} | {default} | {described} |\n",
            type_text(prop, defs)
        ));
    }
    out
}

/// The reference of `kind` in Markdown: a heading, the kind's description, its table, then
/// a table per nested object; None for an unknown kind.
pub fn markdown(kind: &str) -> Option<String> {
    let schema = schema(kind)?;
    let empty = Map::new();
    let defs = schema
        .get("$defs")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut nested = Vec::new();
    let mut out = format!("### `{kind}`\n\n");
    if let Some(d) = schema.get("description").and_then(Value::as_str) {
        out.push_str(&one_line(d));
        out.push_str("\n\n");
    }
    out.push_str(&table(&schema, defs, &mut nested));
    let mut i = 0;
    while i < nested.len() {
        let name = nested[i].clone();
        let def = &defs[&name];
        out.push_str(&format!("\n`{name}`:"));
        if let Some(d) = def.get("description").and_then(Value::as_str) {
            out.push_str(&format!(" {}", one_line(d)));
        }
        out.push_str("\n\n");
        out.push_str(&table(def, defs, &mut nested));
        i += 1;
    }
    Some(out)
}

/// Every kind's reference, one after the other (the README's section).
pub fn all_markdown() -> String {
    kinds()
        .map(|k| markdown(k).expect("every registered kind has a schema"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_reference_with_its_defaults() {
        for kind in kinds() {
            let md = markdown(kind).unwrap();
            assert!(
                md.contains("| parameter | type | default | description |"),
                "{kind}"
            );
        }
        assert!(markdown("nope").is_none());
        let aggregate = markdown("aggregate").unwrap();
        assert!(
            aggregate.contains("| `decimals` | integer | `2` |"),
            "{aggregate}"
        );
        assert!(
            aggregate.contains("| `columns` | string | **required** |"),
            "{aggregate}"
        );
        assert!(
            aggregate.contains("| `metric` | `top1` \\| `top3` | `\"top1\"` |"),
            "{aggregate}"
        );
    }

    /// The README's "Stage parameters" section is this output, between its markers: a
    /// changed struct changes the reference, and the test says to regenerate it.
    #[test]
    fn the_readme_reference_is_current() {
        let readme = include_str!("../../README.md");
        let (start, end) = ("<!-- params:begin -->\n", "<!-- params:end -->");
        let a = readme
            .find(start)
            .expect("README has the params:begin marker")
            + start.len();
        let b = readme.find(end).expect("README has the params:end marker");
        assert!(
            readme[a..b] == all_markdown(),
            "the README's stage parameter reference is stale: regenerate it with \
             `cargo run --no-default-features --bin rst -- params --all` between the markers"
        );
    }
}
