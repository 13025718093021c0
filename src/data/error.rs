//! The one error type of `data/`: reading datasets in their official layouts, image
//! folders, archives and dataset artifacts.
//!
//! `data` sits below `stages` and knows nothing of it: a stage turns a [`DataError`] into
//! its own error with `?` (`StageError: From<DataError>`), which keeps the exit code
//! ([`DataError::is_user`]) and the whole message ([`DataError::render`]).
//!
//! Variants that wrap a cause keep it as `#[source]` and do not repeat it in their own
//! message; [`DataError::render`] joins the chain (`cannot read `x`: No such file ...`), the
//! way the user reads it.
use std::io;
use std::path::PathBuf;

/// Why reading or writing a dataset failed.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The files do not say what the reader expects: a missing file or folder, a malformed
    /// list line, a label out of range, an archive entry escaping its directory. The
    /// message names the file (and line or entry) and what would be accepted; the user's
    /// to fix.
    #[error("{0}")]
    Invalid(String),
    /// A file or folder of the user's data could not be read (`what` says which).
    #[error("{what}")]
    Read {
        what: String,
        #[source]
        source: io::Error,
    },
    /// A list or text file of the user's data is not UTF-8 (`file` as shown to the user).
    #[error("{file} is not UTF-8 text")]
    NotText {
        file: String,
        #[source]
        source: std::string::FromUtf8Error,
    },
    /// Writing into the artifact or the work area failed (a full disk, a bug): not the
    /// user's data.
    #[error("{what}")]
    Write {
        what: String,
        #[source]
        source: io::Error,
    },
    /// A dataset artifact (`dataset.json` and its tensors) is not what this version writes.
    #[error("{}: {message}", path.display())]
    Artifact { path: PathBuf, message: String },
    /// `dataset.json` is not JSON of the artifact's shape.
    #[error("{}: not a dataset artifact", path.display())]
    Meta {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A safetensors file of an artifact could not be read or written.
    #[error("{}", path.display())]
    Tensors {
        path: PathBuf,
        #[source]
        source: safetensors::SafeTensorError,
    },
    /// `source`, said of `what` (a file as the user named it, `` `devkit/cars_meta.mat` ``):
    /// a reader that does not know the name its caller shows.
    #[error("{what}")]
    In {
        what: String,
        #[source]
        source: Box<DataError>,
    },
    /// A mirror string is not a path or URL rst can fetch from; `help` says what is.
    #[error("{message}")]
    Mirror { message: String, help: String },
    /// An http(s) mirror did not give the file: the server's answer, a connection lost
    /// too often, a timeout (the message says which, and what to raise).
    #[error("{0}")]
    Fetch(String),
    /// An http(s) request failed outright (a bad URL, a refused TLS handshake).
    #[error("request failed")]
    Http(#[source] Box<ureq::Error>),
    /// The decoding thread pool could not be started (out of threads or memory).
    #[error("cannot start decoding threads")]
    Threads(#[source] rayon::ThreadPoolBuildError),
}

impl DataError {
    /// An [`DataError::Invalid`] from a message.
    pub fn invalid(message: impl Into<String>) -> Self {
        DataError::Invalid(message.into())
    }

    /// Wraps an I/O error reading the user's data, `what` naming the file.
    pub fn read(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> DataError {
        let what = what.to_string();
        move |source| DataError::Read { what, source }
    }

    /// Wraps an I/O error writing an artifact, `what` naming the file.
    pub fn write(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> DataError {
        let what = what.to_string();
        move |source| DataError::Write { what, source }
    }

    /// This error, said of `what` ([`DataError::In`]).
    pub fn within(self, what: impl Into<String>) -> DataError {
        DataError::In {
            what: what.into(),
            source: Box::new(self),
        }
    }

    /// Whether the user can fix it (their files, their parameters: exit 2) rather than it
    /// being the machine's or rst's (exit 1).
    pub fn is_user(&self) -> bool {
        match self {
            DataError::Invalid(_)
            | DataError::Read { .. }
            | DataError::NotText { .. }
            | DataError::Artifact { .. }
            | DataError::Meta { .. }
            | DataError::Tensors { .. }
            | DataError::Mirror { .. }
            | DataError::Fetch(_)
            | DataError::Http(_) => true,
            DataError::Write { .. } | DataError::Threads(_) => false,
            DataError::In { source, .. } => source.is_user(),
        }
    }

    /// How to fix it, where the error knows more than its message says.
    pub fn help(&self) -> Option<&str> {
        match self {
            DataError::Mirror { help, .. } => Some(help),
            DataError::In { source, .. } => source.help(),
            _ => None,
        }
    }

    /// The message with every cause after it, `: `-separated: what a user reads.
    pub fn render(&self) -> String {
        render_chain(self)
    }
}

/// `error: cause: cause of the cause`, each source once.
pub fn render_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_joins_the_causes_once() {
        let e = DataError::read("cannot read `a.txt`")(io::Error::new(
            io::ErrorKind::NotFound,
            "no such file",
        ));
        assert_eq!(e.to_string(), "cannot read `a.txt`");
        assert_eq!(e.render(), "cannot read `a.txt`: no such file");
        assert!(e.is_user());
        let e = DataError::write("cannot create out")(io::Error::other("disk full"));
        assert!(!e.is_user());
        assert_eq!(e.render(), "cannot create out: disk full");
        let e = DataError::invalid("labels(3) is 0").within("`imagelabels.mat`");
        assert_eq!(e.render(), "`imagelabels.mat`: labels(3) is 0");
        assert!(e.is_user());
    }
}
