//! The library's error type. Every message is one line and names what it is about, and
//! [`Error::kind`] says whose fault it is — the input, the output, a digest, access, a missing
//! image, the caller's request — so that a server can answer with the right status.

use std::io;

/// A result whose error is the library's [`Error`] unless said otherwise.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in an operation; [`Error::kind`] sorts them by fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the input failed (a file, a blob, a temp file of the input's).
    #[error("{context}: {source}")]
    Io {
        /// What was being read (a path, a layer).
        context: String,
        /// The underlying I/O error.
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
    /// The caller tripped the [`Cancel`](crate::control::Cancel) handle.
    #[error("cancelled")]
    Cancelled,
    /// Bytes read do not have the digest they were named by.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    Digest {
        /// What was read (a layer, a config, a blob).
        what: String,
        /// The digest it should have.
        expected: String,
        /// The digest of the bytes read.
        actual: String,
    },
    /// A problem with one entry of one layer.
    #[error("{layer}: {path}: {message}")]
    Entry {
        /// Which layer (its label, as in messages).
        layer: String,
        /// The entry's path in the layer.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// A problem reading one layer's stream.
    #[error("{layer}: {message}")]
    Layer {
        /// Which layer (its label, as in messages).
        layer: String,
        /// What went wrong.
        message: String,
    },
    /// The user asked for something that does not exist or cannot be done.
    #[error("{0}")]
    Usage(String),
    /// Writing the output failed (a full disk; a pipe or a client that went away).
    #[error("{context}: {source}")]
    Output {
        /// What was being written.
        context: String,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// A source refused access (wrong credentials, no credentials).
    #[error("{0}")]
    Auth(String),
    /// A source knows who is asking and refuses them this (a registry's 403).
    #[error("{0}")]
    Denied(String),
    /// The image, tag or blob asked for does not exist at its source.
    #[error("{0}")]
    NotFound(String),
}

/// Whose fault an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The image is malformed or unreadable (which layer and path are in the message).
    Input,
    /// The output could not be written.
    Output,
    /// Bytes do not have their digest.
    Digest,
    /// Access was refused.
    Auth,
    /// No such image, tag or blob.
    NotFound,
    /// The request itself cannot be done.
    Usage,
    /// The caller cancelled, or stopped reading (not a failure).
    Cancelled,
}

impl Error {
    /// Reading failed.
    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Writing the output failed.
    pub fn output(context: impl Into<String>, source: io::Error) -> Error {
        Error::Output {
            context: context.into(),
            source,
        }
    }

    /// Whose fault it is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { .. } | Error::Format(_) | Error::Entry { .. } | Error::Layer { .. } => {
                ErrorKind::Input
            }
            Error::Digest { .. } => ErrorKind::Digest,
            Error::Output { .. } => ErrorKind::Output,
            Error::Auth(_) | Error::Denied(_) => ErrorKind::Auth,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Usage(_) => ErrorKind::Usage,
            Error::Stopped | Error::Cancelled => ErrorKind::Cancelled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_and_input_errors_are_told_apart() {
        let broken = || io::Error::from(io::ErrorKind::BrokenPipe);
        assert_eq!(
            Error::output("writing output", broken()).kind(),
            ErrorKind::Output
        );
        assert_eq!(
            Error::io("reading layer 0", broken()).kind(),
            ErrorKind::Input
        );
        assert_eq!(
            Error::output("writing output", broken()).to_string(),
            "writing output: broken pipe"
        );
    }
}
