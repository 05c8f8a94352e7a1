//! Why a job's run failed inside the executor. The text of each becomes the job's
//! `errorMessage` (it is written for the job's owner: what failed and where), so nothing here is
//! an internal detail of the server.

use std::path::PathBuf;

use crate::sandbox::{IsolationError, SandboxError};

/// A failure preparing, starting or supervising a job.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A file-system step of the run failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A program the run needs could not be started or waited for.
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// Setting up who the replicas run as failed.
    #[error(transparent)]
    Isolation(#[from] IsolationError),
    /// The sandbox could not be set up for a program of the run (or the kernel cannot confine it).
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// `pip install` of the trainer packages failed.
    #[error("Installing the packages failed (pip exit {code}): {last_lines}")]
    Install { code: i32, last_lines: String },
    /// Copying a package folder as the replica user failed.
    #[error("cannot copy the package {} as the replica user: {reason}", package.display())]
    CopyPackage { package: PathBuf, reason: String },
    /// A storage step (resolving or copying a file) refused or failed.
    #[error("{0}")]
    Storage(String),
    /// A transfer from or to a bucket failed (after retries): which object, and the store's reason.
    #[error(transparent)]
    Object(#[from] crate::storage::ObjectError),
    /// A batch job's input files.
    #[error("{0}")]
    Inputs(String),
    /// The batch engine failed.
    #[error("{0}")]
    Batch(String),
    /// A blocking step panicked or was cancelled.
    #[error("a background step of the job stopped unexpectedly: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// A batch job was submitted without its model's files.
    #[error("the job's model was not resolved before it started")]
    Unresolved,
}

impl From<crate::sandbox::pip::PipError> for RunError {
    fn from(error: crate::sandbox::pip::PipError) -> Self {
        use crate::sandbox::pip::PipError;
        match error {
            PipError::Sandbox(e) => Self::Sandbox(e),
            PipError::Failed { code, last_lines } => Self::Install { code, last_lines },
            PipError::Start { python, source } => Self::Spawn { program: format!("{python} -m pip"), source },
            PipError::Io { action, path, source } => Self::Io { action, path, source },
        }
    }
}

impl RunError {
    /// An [`RunError::Io`] of `action` on `path`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { action, path, source }
    }
}
