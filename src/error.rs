//! Errors at the library's boundaries. Every variant names the child it is
//! about and keeps its OS-level cause as `source`.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

/// A child could not be started. Nothing was left running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// `cmd` was empty.
    #[error("child `{child}`: empty command line (cmd needs at least the program)")]
    EmptyCommand {
        /// The child's name.
        child: Arc<str>,
    },
    /// The program does not exist (on `PATH`, or at the path given).
    #[error("child `{child}`: program `{program}` not found{}", if program.contains('/') { "" } else { " on PATH" })]
    NotFound {
        /// The child's name.
        child: Arc<str>,
        /// The program as written in `cmd`.
        program: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The program exists but may not be executed.
    #[error("child `{child}`: program `{program}` is not executable (permission denied)")]
    NotExecutable {
        /// The child's name.
        child: Arc<str>,
        /// The program as written in `cmd`.
        program: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The working directory is missing or not a directory.
    #[error("child `{child}`: working directory `{}` is not a directory", cwd.display())]
    BadCwd {
        /// The child's name.
        child: Arc<str>,
        /// The directory from the spec.
        cwd: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Any other failure of the spawn itself (out of processes, descriptors...).
    #[error("child `{child}`: cannot start `{program}`")]
    Os {
        /// The child's name.
        child: Arc<str>,
        /// The program as written in `cmd`.
        program: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl SpawnError {
    /// The name of the child that could not be started.
    pub fn child(&self) -> &str {
        match self {
            SpawnError::EmptyCommand { child }
            | SpawnError::NotFound { child, .. }
            | SpawnError::NotExecutable { child, .. }
            | SpawnError::BadCwd { child, .. }
            | SpawnError::Os { child, .. } => child,
        }
    }
}

/// Bytes could not be queued for a child's stdin. The bytes are given back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StdinError {
    /// Stdin was closed (on request, or because the child stopped reading or exited).
    #[error("child `{child}`: stdin is closed")]
    Closed {
        /// The child's name.
        child: Arc<str>,
        /// What was not written.
        data: Bytes,
    },
    /// The queue is full (only from `try_send`; `send` waits instead).
    #[error("child `{child}`: stdin queue is full")]
    Full {
        /// The child's name.
        child: Arc<str>,
        /// What was not queued.
        data: Bytes,
    },
}

impl StdinError {
    /// The bytes that were not queued.
    pub fn into_data(self) -> Bytes {
        match self {
            StdinError::Closed { data, .. } | StdinError::Full { data, .. } => data,
        }
    }
}

/// A control message to a child failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChildError {
    /// The child's actor is gone (its process exited and was reported).
    #[error("child `{child}` is gone (it exited)")]
    Gone {
        /// The child's name.
        child: Arc<str>,
    },
    /// A signal could not be sent.
    #[error("child `{child}`: cannot send {signal}")]
    Signal {
        /// The child's name.
        child: Arc<str>,
        /// The signal.
        signal: crate::Signal,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Writing to stdin failed.
    #[error(transparent)]
    Stdin(#[from] StdinError),
}
