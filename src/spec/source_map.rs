//! Where every key and value of a YAML file is: key path (`stages.train.params.lr`) →
//! line and column. yaml_serde gives positions for its own errors; this map gives them for
//! everything found later (missing stages, cycles, bad parameter values). It also finds
//! duplicate keys and syntax errors, with their positions.
use std::collections::HashMap;

use saphyr_parser::{Event, Parser};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, Default)]
pub struct SourceMap {
    /// Position of the key (for mapping entries) or of the item (for sequence items).
    keys: HashMap<String, Pos>,
    /// Position of the value.
    values: HashMap<String, Pos>,
}

/// A problem found while building the map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapError {
    pub message: String,
    pub pos: Pos,
    pub help: Option<String>,
}

enum Frame {
    Map {
        path: String,
        pending_key: Option<(String, Pos)>,
        seen: HashMap<String, Pos>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_string()
    } else {
        format!("{parent}.{child}")
    }
}

impl SourceMap {
    pub fn build(text: &str) -> Result<SourceMap, MapError> {
        let mut map = SourceMap::default();
        let mut stack: Vec<Frame> = Vec::new();
        for item in Parser::new_from_str(text) {
            let (event, span) = item.map_err(|e| MapError {
                message: format!("invalid YAML: {}", e.info()),
                pos: Pos {
                    line: e.marker().line(),
                    column: e.marker().col() + 1,
                },
                help: None,
            })?;
            let pos = Pos {
                line: span.start.line(),
                column: span.start.col() + 1,
            };
            // Where does this node sit? For a mapping expecting a key, a scalar is the key.
            let mut node_path: Option<String> = None;
            match stack.last_mut() {
                Some(Frame::Map {
                    path,
                    pending_key,
                    seen,
                }) => match pending_key.take() {
                    None => {
                        if let Event::Scalar(key, ..) = &event {
                            let key = key.to_string();
                            if let Some(first) = seen.get(&key) {
                                return Err(MapError {
                                    message: format!("duplicate key `{key}` (first defined at line {})", first.line),
                                    pos,
                                    help: Some("each key may appear once per mapping; rename or merge one of them".into()),
                                });
                            }
                            seen.insert(key.clone(), pos);
                            let full = join(path, &key);
                            map.keys.insert(full.clone(), pos);
                            *pending_key = Some((full, pos));
                            continue;
                        } else if matches!(event, Event::MappingEnd) {
                            // handled below
                        } else {
                            return Err(MapError {
                                message: "only plain keys are supported in rst files".into(),
                                pos,
                                help: None,
                            });
                        }
                    }
                    Some((full, _)) => node_path = Some(full),
                },
                Some(Frame::Seq { path, next }) if !matches!(event, Event::SequenceEnd) => {
                    let full = format!("{path}[{next}]");
                    *next += 1;
                    map.keys.insert(full.clone(), pos);
                    node_path = Some(full);
                }
                Some(Frame::Seq { .. }) | None => {}
            }
            if let Some(p) = &node_path {
                map.values.insert(p.clone(), pos);
            }
            match event {
                Event::MappingStart(..) => stack.push(Frame::Map {
                    path: node_path.unwrap_or_default(),
                    pending_key: None,
                    seen: HashMap::new(),
                }),
                Event::SequenceStart(..) => stack.push(Frame::Seq {
                    path: node_path.unwrap_or_default(),
                    next: 0,
                }),
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                _ => {}
            }
        }
        Ok(map)
    }

    /// Position of the key at `path`, or of its nearest ancestor that exists.
    pub fn key(&self, path: &str) -> Option<Pos> {
        self.lookup(&self.keys, path)
    }

    /// Position of the value at `path`, or of its nearest ancestor that exists.
    pub fn value(&self, path: &str) -> Option<Pos> {
        self.lookup(&self.values, path)
    }

    fn lookup(&self, table: &HashMap<String, Pos>, path: &str) -> Option<Pos> {
        let mut p = path.to_string();
        loop {
            if let Some(pos) = table.get(&p) {
                return Some(*pos);
            }
            let cut = p.rfind(['.', '['])?;
            p.truncate(cut);
            if p.is_empty() {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "name: demo\nstages:\n  a:\n    kind: split\n    params:\n      rates: [0.1, 0.2]\n  b:\n    kind: noise\n";

    #[test]
    fn positions_of_keys_values_and_items() {
        let m = SourceMap::build(DOC).unwrap();
        assert_eq!(m.key("stages.a.kind"), Some(Pos { line: 4, column: 5 }));
        assert_eq!(
            m.value("stages.a.kind"),
            Some(Pos {
                line: 4,
                column: 11
            })
        );
        assert_eq!(
            m.value("stages.a.params.rates[1]"),
            Some(Pos {
                line: 6,
                column: 20
            })
        );
        assert_eq!(m.key("stages.b"), Some(Pos { line: 7, column: 3 }));
        // Missing paths fall back to the nearest ancestor.
        assert_eq!(
            m.key("stages.a.params.rates.x"),
            m.key("stages.a.params.rates")
        );
    }

    #[test]
    fn duplicate_keys_are_reported_where_they_repeat() {
        let err = SourceMap::build("stages:\n  a: 1\n  a: 2\n").unwrap_err();
        assert_eq!(err.pos, Pos { line: 3, column: 3 });
        assert!(err.message.contains("duplicate key `a`"), "{}", err.message);
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err = SourceMap::build("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.message.starts_with("invalid YAML"), "{}", err.message);
        assert!(err.pos.line >= 1);
    }
}
