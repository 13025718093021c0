//! Error types shared by the library. `main` maps them to exit codes:
//! 0 success, 1 a stage failed, 2 a user error (bad file, bad flag, bad parameter, ...).
use std::fmt;
use std::path::{Path, PathBuf};

/// A position in a user's file (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// An error the user caused and can fix: it names where (file, line, column) and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserError {
    pub message: String,
    pub location: Option<Location>,
    /// The offending source line, shown under the message with a caret.
    pub snippet: Option<String>,
    pub help: Option<String>,
}

impl UserError {
    pub fn new(message: impl Into<String>) -> Self {
        UserError {
            message: message.into(),
            location: None,
            snippet: None,
            help: None,
        }
    }

    pub fn at(mut self, location: Option<Location>) -> Self {
        if let Some(loc) = &location {
            self.snippet = std::fs::read_to_string(&loc.file).ok().and_then(|text| {
                text.lines()
                    .nth(loc.line.saturating_sub(1))
                    .map(str::to_string)
            });
        }
        self.location = location;
        self
    }

    pub fn with_source_line(mut self, source: &str) -> Self {
        if let Some(loc) = &self.location {
            self.snippet = source
                .lines()
                .nth(loc.line.saturating_sub(1))
                .map(str::to_string);
        }
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(loc) => write!(f, "{loc}: {}", self.message)?,
            None => write!(f, "{}", self.message)?,
        }
        if let (Some(loc), Some(line)) = (&self.location, &self.snippet) {
            let width = loc.line.to_string().len();
            write!(
                f,
                "\n {:width$} |\n {} | {}\n {:width$} | {}^",
                "",
                loc.line,
                line,
                "",
                " ".repeat(loc.column.saturating_sub(1))
            )?;
        }
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

impl std::error::Error for UserError {}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    User(#[from] UserError),
    /// One or more stages failed; the summary has been printed already.
    #[error("{failed} stage(s) failed")]
    StagesFailed { failed: usize, user_caused: bool },
    #[error("interrupted")]
    Interrupted,
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// Publishing to results/ failed (a corrupt cached object, an I/O error).
    #[error(transparent)]
    Publish(#[from] crate::publish::PublishError),
    /// Reading or writing the cache (or a file written the cache's way, atomically).
    #[error(transparent)]
    Store(#[from] crate::cache::store::StoreError),
    /// A cache entry found a moment ago is gone: another process removed it.
    #[error("the cache entry of {instance} (key {key}) was removed while rst was reading it (by a concurrent `rst gc` or `rst verify`?); run the command again")]
    EntryVanished { instance: String, key: String },
    /// Something rst relies on of its own making did not hold (a bug).
    #[error("internal error: {0} (a bug in rst: please report it)")]
    Bug(String),
    /// A value rst made could not be encoded (a bug: rst's records always serialise).
    #[error("cannot encode {what}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    pub fn io(context: impl fmt::Display, source: std::io::Error) -> Self {
        Error::Io {
            context: context.to_string(),
            source,
        }
    }

    pub fn io_path(what: &str, path: &Path, source: std::io::Error) -> Self {
        Error::io(format!("{what} {}", path.display()), source)
    }

    /// The process exit code this error maps to.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::User(_) => 2,
            Error::StagesFailed { user_caused, .. } => {
                if *user_caused {
                    2
                } else {
                    1
                }
            }
            Error::Interrupted => 130,
            Error::Io { .. }
            | Error::Publish(_)
            | Error::Store(_)
            | Error::EntryVanished { .. }
            | Error::Bug(_)
            | Error::Encode { .. } => 1,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `e` and its causes on one line, `message: cause: cause`, each once. A cause whose text
/// the message before it already ends with is skipped, so an error that writes its source
/// into its own message (a library's, say) is not reported twice.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut last = out.clone();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !last.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        last = text;
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_location_snippet_and_help() {
        let err = UserError {
            message: "unknown key `parms`".into(),
            location: Some(Location {
                file: "p.yaml".into(),
                line: 3,
                column: 5,
            }),
            snippet: Some("    parms: {}".into()),
            help: Some("did you mean `params`?".into()),
        };
        let text = err.to_string();
        assert!(
            text.starts_with("p.yaml:3:5: unknown key `parms`"),
            "{text}"
        );
        assert!(text.contains("3 |     parms: {}"), "{text}");
        assert!(text.contains("help: did you mean `params`?"), "{text}");
    }

    /// Regression: `StoreError::Io` wrote its source into its message, and the reporter
    /// printed the chain, so the cause came out twice.
    #[test]
    fn chain_prints_each_cause_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::PermissionDenied, "Permission denied");
        let e = Error::Store(crate::cache::store::StoreError::Io {
            path: "/c/objects/ab".into(),
            source: io(),
        });
        assert_eq!(chain(&e), "cache /c/objects/ab: Permission denied");
        let e = Error::io("cannot create /c/runs", io());
        assert_eq!(chain(&e), "cannot create /c/runs: Permission denied");
        // A (foreign) error that repeats its source in its message is printed once too.
        #[derive(Debug, thiserror::Error)]
        #[error("reading x: {0}")]
        struct Repeats(#[source] std::io::Error);
        assert_eq!(chain(&Repeats(io())), "reading x: Permission denied");
    }
}
