//! Turning a source-map path (`stages.a.params.argv[0]`) into a located [`UserError`].
use std::path::Path;

use serde_json::Value;

use super::interp;
use super::source_map::{Pos, SourceMap};
use crate::error::{Location, UserError};

/// The file being built, for errors that point into it.
pub(super) struct Ctx<'a> {
    pub file: &'a Path,
    pub text: &'a str,
    pub map: &'a SourceMap,
    /// The `--set` overrides, so an error can say a bad value came from the command line.
    pub overrides: &'a [(String, Value)],
}

impl Ctx<'_> {
    pub fn loc(&self, pos: Option<Pos>) -> Option<Location> {
        pos.map(|p| Location {
            file: self.file.to_path_buf(),
            line: p.line,
            column: p.column,
        })
    }

    /// An error with the caret on the key at `path`.
    pub fn at_key(&self, path: &str, message: impl Into<String>) -> UserError {
        UserError::new(message).located(self.loc(self.map.key(path)), self.text)
    }

    /// An error with the caret on the value at `path`.
    pub fn at_value(&self, path: &str, message: impl Into<String>) -> UserError {
        UserError::new(message).located(self.loc(self.map.value(path)), self.text)
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
