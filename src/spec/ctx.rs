//! Turning a source-map path (`stages.a.params.argv[0]`) into a located [`UserError`],
//! in the pipeline file or, for what an `include:` brought in, in the included file.
use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use super::interp;
use super::source_map::{Pos, SourceMap};
use crate::error::{Location, UserError};

/// One YAML file: its path (as given), text and source map.
#[derive(Clone, Copy)]
pub(super) struct Source<'a> {
    pub file: &'a Path,
    pub text: &'a str,
    pub map: &'a SourceMap,
}

impl Source<'_> {
    pub fn loc(&self, pos: Option<Pos>) -> Option<Location> {
        pos.map(|p| Location {
            file: self.file.to_path_buf(),
            line: p.line,
            column: p.column,
        })
    }
}

/// Where what the includes brought in is written (see `spec::include`).
#[derive(Default)]
pub(super) struct Routes<'a> {
    pub included: Vec<Source<'a>>,
    /// Stage name → the included file that defines it.
    pub stages: HashMap<String, usize>,
    /// Parameter name → where its value is written.
    pub params: HashMap<String, ParamSite>,
}

/// Where an included parameter's value is written.
pub(super) enum ParamSite {
    /// Its default in the included file (`params.<name>` there).
    Default(usize),
    /// Set by the include (`include[i].params.<name>` in the pipeline file).
    Set(usize),
}

/// The file being built, for errors that point into it.
pub(super) struct Ctx<'a> {
    pub file: &'a Path,
    pub text: &'a str,
    pub map: &'a SourceMap,
    /// The `--set` overrides, so an error can say a bad value came from the command line.
    pub overrides: &'a [(String, Value)],
    pub routes: &'a Routes<'a>,
}

impl Ctx<'_> {
    /// The file a source-map path of the built pipeline is written in, and its path there:
    /// an included stage's (`stages.<name>…`) and parameter's (`params.<name>…`) are in the
    /// included file, or at the `include:` that set the parameter.
    fn route(&self, path: &str) -> (Source<'_>, String) {
        let main = Source {
            file: self.file,
            text: self.text,
            map: self.map,
        };
        let head = |prefix: &str| -> Option<String> {
            let rest = path.strip_prefix(prefix)?;
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            Some(rest[..end].to_string())
        };
        if let Some(i) = head("stages.").and_then(|s| self.routes.stages.get(&s)) {
            return (self.routes.included[*i], path.to_string());
        }
        if let Some(site) = head("params.").and_then(|p| self.routes.params.get(&p)) {
            return match site {
                ParamSite::Default(i) => (self.routes.included[*i], path.to_string()),
                ParamSite::Set(i) => (main, format!("include[{i}].{path}")),
            };
        }
        (main, path.to_string())
    }

    /// The file and position of the key at `path` (or its nearest written ancestor).
    pub fn key_at(&self, path: &str) -> Option<Location> {
        let (src, path) = self.route(path);
        src.loc(src.map.key(&path))
    }

    /// The file and position of the value at `path` (or its nearest written ancestor).
    pub fn value_at(&self, path: &str) -> Option<Location> {
        let (src, path) = self.route(path);
        src.loc(src.map.value(&path))
    }

    /// An error with the caret on the key at `path`.
    pub fn at_key(&self, path: &str, message: impl Into<String>) -> UserError {
        let (src, path) = self.route(path);
        UserError::new(message).located(src.loc(src.map.key(&path)), src.text)
    }

    /// An error with the caret on the value at `path`.
    pub fn at_value(&self, path: &str, message: impl Into<String>) -> UserError {
        let (src, path) = self.route(path);
        UserError::new(message).located(src.loc(src.map.value(&path)), src.text)
    }

    /// An interpolation failure at `path`, keeping its suggestion.
    pub fn interp(&self, path: &str, e: interp::InterpError) -> UserError {
        let mut u = self.at_value(path, e.message);
        u.help = e.help;
        u
    }

    /// A YAML value as JSON (YAML-only values, such as non-string keys, are refused at `path`).
    pub fn json(&self, path: &str, v: &serde_yaml::Value) -> Result<Value, UserError> {
        yaml_to_json(v).map_err(|e| self.at_value(path, e.to_string()))
    }
}

pub(super) trait Located {
    fn located(self, loc: Option<Location>, text: &str) -> Self;
}

impl Located for UserError {
    fn located(mut self, loc: Option<Location>, text: &str) -> Self {
        self.location = loc;
        self.with_source_line(text)
    }
}

pub(super) fn yaml_to_json(v: &serde_yaml::Value) -> Result<Value, serde_json::Error> {
    serde_json::to_value(v)
}

/// `base` joined with a path relative to it (`a.b`, `[0]`, or empty for `base` itself).
pub(super) fn join_path(base: &str, rel: &str) -> String {
    if rel.is_empty() {
        base.to_string()
    } else if rel.starts_with('[') {
        format!("{base}{rel}")
    } else {
        format!("{base}.{rel}")
    }
}
