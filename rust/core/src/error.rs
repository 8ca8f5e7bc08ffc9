//! Error kinds of the engine. The Python binding maps each kind to one exception class, so the
//! kinds are few and mean one thing each: a caller can branch on them without parsing messages.

use std::io;
use std::path::{Path, PathBuf};

/// What went wrong, as a caller would branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A blob, file or record that was asked for does not exist.
    NotFound,
    /// Something that must be new already exists.
    AlreadyExists,
    /// The caller passed something unusable: a bad path, name, option or value.
    InvalidArgument,
    /// Stored bytes do not match their recorded hash, or a store file cannot be parsed.
    Corrupt,
    /// The store on disk was made by a newer format or with other settings than asked for.
    Incompatible,
    /// The operating system refused an operation; the OS error is kept.
    Io,
}

/// An engine error: a kind, a message that names the thing concerned, and the OS error if any.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
    path: Option<PathBuf>,
    #[source]
    source: Option<io::Error>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            path: None,
            source: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    pub fn corrupt(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Corrupt, message)
    }

    pub fn incompatible(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Incompatible, message)
    }

    /// Wraps an OS error raised while doing `op` on `path`. `NotFound` and `AlreadyExists` keep
    /// their own kinds so that callers can tell a missing file from a failing disk.
    pub fn io(op: &str, path: &Path, err: io::Error) -> Self {
        let kind = match err.kind() {
            io::ErrorKind::NotFound => ErrorKind::NotFound,
            io::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
            // Raised by the standard library itself, never by the OS: a path with a NUL byte.
            io::ErrorKind::InvalidInput if err.raw_os_error().is_none() => {
                ErrorKind::InvalidArgument
            }
            _ => ErrorKind::Io,
        };
        Error {
            kind,
            message: format!("{op} {}: {err}", path.display()),
            path: Some(path.to_path_buf()),
            source: Some(err),
        }
    }

    /// The same error (kind, OS error) told as `"<op> <path>: <cause>"`: about the path the
    /// caller named rather than an internal one (a temp file beside it).
    pub(crate) fn about(mut self, op: &str, path: &Path, cause: Option<String>) -> Self {
        let cause = cause.unwrap_or_else(|| match &self.source {
            Some(e) => e.to_string(),
            None => self.message.clone(),
        });
        self.message = format!("{op} {}: {cause}", path.display());
        self.path = Some(path.to_path_buf());
        self
    }

    pub fn with_path(mut self, path: &Path) -> Self {
        self.path = Some(path.to_path_buf());
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The raw OS error number, when the error came from the OS.
    pub fn os_errno(&self) -> Option<i32> {
        self.source.as_ref().and_then(|e| e.raw_os_error())
    }
}

/// Attaches an operation name and a path to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn ctx(self, op: &str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, op: &str, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(op, path, e))
    }
}

impl<T> IoContext<T> for std::result::Result<T, rustix::io::Errno> {
    fn ctx(self, op: &str, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(op, path, io::Error::from(e)))
    }
}
