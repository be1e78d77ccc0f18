//! The library's error type. Every message is one line and names what it is about.

use std::io;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// Malformed input: bad JSON, a missing member, a corrupt header.
    #[error("{0}")]
    Format(String),
    /// A walk over the layers was ended by its consumer (its output is gone, or it has what
    /// it needs): not a failure, and not shown to users.
    #[error("stopped before the last layer")]
    Stopped,
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    Digest {
        what: String,
        expected: String,
        actual: String,
    },
    /// A problem with one entry of one layer.
    #[error("{layer}: {path}: {message}")]
    Entry {
        layer: String,
        path: String,
        message: String,
    },
    /// A problem reading one layer's stream.
    #[error("{layer}: {message}")]
    Layer { layer: String, message: String },
    /// The user asked for something that does not exist or cannot be done.
    #[error("{0}")]
    Usage(String),
}

impl Error {
    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
