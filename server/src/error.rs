//! The one error type of Anneal's use cases, and the one place the layers below control map
//! their own errors into it.
//!
//! Every fallible use case returns [`Error`]. Its variants are the `google.rpc.Code`s the `ml` v1
//! API uses ([`Error::code`]); [`Error::status`] is what a client may read of one (the text of an
//! internal error never leaves the server). The REST surface (`api/error.rs`) maps them to HTTP
//! status and the API's error envelope; failed operations carry the same status.
//!
//! The layers below control have error types of their own (`serving::LoadError`,
//! `storage::StorageError`, ...); the `From` impls at the end of this file decide, once, which
//! code each of their failures is to a client.

use std::fmt;

/// A field that a request got wrong, as reported in `google.rpc.BadRequest.fieldViolations`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    /// The field's path in the request, e.g. `model.name` or `name`.
    pub field: String,
    /// What is wrong with it, as a sentence.
    pub description: String,
}

impl FieldViolation {
    /// Creates a violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self { field: field.into(), description: description.into() }
    }
}

impl fmt::Display for FieldViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Field: {} Error: {}", self.field, self.description)
    }
}

/// Why a use case failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or a field has a bad value (`INVALID_ARGUMENT`, 400).
    #[error("{0}")]
    InvalidArgument(FieldViolation),
    /// The named resource does not exist (`NOT_FOUND`, 404).
    #[error("{0}")]
    NotFound(FieldViolation),
    /// No API method answers this HTTP method and path (`NOT_FOUND`, 404).
    #[error("No API method answers {method} {path}.")]
    NoRoute { method: String, path: String },
    /// A resource with that name exists already (`ALREADY_EXISTS`, 409).
    #[error("{0}")]
    AlreadyExists(FieldViolation),
    /// The resource is not in a state that allows the request (`FAILED_PRECONDITION`, 400).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A concurrent change won, e.g. an `etag` mismatch (`ABORTED`, 409).
    #[error("{0}")]
    Aborted(String),
    /// The request carries no valid credentials (`UNAUTHENTICATED`, 401).
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller's role does not allow the request (`PERMISSION_DENIED`, 403).
    #[error("{0}")]
    PermissionDenied(String),
    /// A bounded resource is full; retry later (`RESOURCE_EXHAUSTED`, 429).
    #[error("{0}")]
    ResourceExhausted(String),
    /// The request is valid but Anneal does not support it (`UNIMPLEMENTED`, 501).
    #[error("{0}")]
    Unimplemented(String),
    /// A part of Anneal the request needs is not working right now (`UNAVAILABLE`, 503).
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected failure below the use case (`INTERNAL`, 500). The text is logged,
    /// never sent to the client.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The result of a use case.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A bad value in `field`; `description` (a sentence, or a lower layer's error) says what is
    /// wrong.
    pub fn invalid(field: impl Into<String>, description: impl fmt::Display) -> Self {
        Self::InvalidArgument(FieldViolation::new(field, description.to_string()))
    }

    /// The resource named in `field` does not exist.
    pub fn not_found(field: impl Into<String>, description: impl fmt::Display) -> Self {
        Self::NotFound(FieldViolation::new(field, description.to_string()))
    }

    /// Wraps an unexpected failure, keeping its text for the log.
    pub fn internal(error: impl fmt::Display) -> Self {
        Self::Internal(error.to_string())
    }

    /// The `google.rpc.Code` the API reports this error under.
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::NotFound(_) | Self::NoRoute { .. } => Code::NotFound,
            Self::AlreadyExists(_) => Code::AlreadyExists,
            Self::FailedPrecondition(_) => Code::FailedPrecondition,
            Self::Aborted(_) => Code::Aborted,
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::PermissionDenied(_) => Code::PermissionDenied,
            Self::ResourceExhausted(_) => Code::ResourceExhausted,
            Self::Unimplemented(_) => Code::Unimplemented,
            Self::Unavailable(_) => Code::Unavailable,
            Self::Internal(_) => Code::Internal,
        }
    }

    /// What a client may read of this error: its code and message, except that an internal
    /// error's text is replaced by [`INTERNAL_MESSAGE`] (whoever reports it logs the text).
    pub fn status(&self) -> Status {
        let message = match self {
            Self::Internal(_) => INTERNAL_MESSAGE.to_owned(),
            other => other.to_string(),
        };
        Status { code: self.code(), message }
    }
}

/// The message clients get for an INTERNAL error.
pub const INTERNAL_MESSAGE: &str = "Internal error encountered.";

/// A `google.rpc.Code`: the name and number under which the API reports an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    Aborted,
    Unauthenticated,
    PermissionDenied,
    ResourceExhausted,
    Unimplemented,
    Unavailable,
    Internal,
}

impl Code {
    /// The code's number, as in an operation's `error.code`.
    pub fn number(self) -> i32 {
        match self {
            Self::InvalidArgument => 3,
            Self::NotFound => 5,
            Self::AlreadyExists => 6,
            Self::PermissionDenied => 7,
            Self::ResourceExhausted => 8,
            Self::FailedPrecondition => 9,
            Self::Aborted => 10,
            Self::Unimplemented => 12,
            Self::Internal => 13,
            Self::Unavailable => 14,
            Self::Unauthenticated => 16,
        }
    }

    /// The code's name, as in the error envelope's `status`.
    pub fn name(self) -> &'static str {
        match self {
            Self::InvalidArgument => "INVALID_ARGUMENT",
            Self::NotFound => "NOT_FOUND",
            Self::AlreadyExists => "ALREADY_EXISTS",
            Self::FailedPrecondition => "FAILED_PRECONDITION",
            Self::Aborted => "ABORTED",
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::PermissionDenied => "PERMISSION_DENIED",
            Self::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Self::Unimplemented => "UNIMPLEMENTED",
            Self::Unavailable => "UNAVAILABLE",
            Self::Internal => "INTERNAL",
        }
    }
}

/// The API's error shape without HTTP (`google.rpc.Status` without details): what a client may
/// read of an [`Error`], from [`Error::status`]. A failed operation carries one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    pub message: String,
}

/// A database that cannot be reached, went away, restarts, or cancels a statement that ran too
/// long is UNAVAILABLE (503, retry later: the pool reconnects by itself when the database is back);
/// anything else the database answers is a bug here (INTERNAL).
impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        const RETRY: &str = "the metadata database is unavailable; retry shortly";
        match error {
            sqlx::Error::PoolTimedOut => Self::Unavailable("the metadata database is busy; retry shortly".into()),
            sqlx::Error::PoolClosed => Self::Unavailable("the server is shutting down".into()),
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => {
                tracing::warn!(error = %error, "the metadata database cannot be reached");
                Self::Unavailable(RETRY.into())
            }
            sqlx::Error::Database(ref db) if db.code().as_deref().is_some_and(unavailable_sqlstate) => {
                tracing::warn!(error = %error, "the metadata database did not answer the statement");
                Self::Unavailable(RETRY.into())
            }
            // PostgreSQL's text cannot hold U+0000 (SQLite's can); only a request's own text has one.
            sqlx::Error::Database(ref db) if db.code().as_deref() == Some("22021") => Self::invalid(
                "request",
                "A text field contains the NUL character (U+0000), which the metadata database cannot store.",
            ),
            other => Self::internal(format!("database: {other}")),
        }
    }
}

/// PostgreSQL's SQLSTATEs for a database that is not there for now: connection exceptions (class
/// 08), too many connections or out of resources (class 53), shutdowns and restarts (57P01–57P03),
/// and a statement cancelled by `statement_timeout` (57014).
fn unavailable_sqlstate(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("53") || matches!(code, "57014" | "57P01" | "57P02" | "57P03")
}

/// A model that cannot be served is the deployment's problem (FAILED_PRECONDITION, with the reason
/// for the user, as ML Engine answers a bad model); a failure of the host itself is internal.
impl From<crate::serving::LoadError> for Error {
    fn from(error: crate::serving::LoadError) -> Self {
        use crate::serving::LoadError;
        match error {
            LoadError::MissingModel
            | LoadError::Signature(_)
            | LoadError::NotTorchScript(_)
            | LoadError::RejectsSignature(_)
            | LoadError::Output(_)
            | LoadError::Routine(_)
            | LoadError::PythonExited(_)
            | LoadError::Refused(_)
            | LoadError::Packages(_) => Self::FailedPrecondition(error.to_string()),
            LoadError::Worker(_) | LoadError::Stopped(_) | LoadError::PythonStart { .. } | LoadError::Isolation(_) => {
                Self::internal(error)
            }
        }
    }
}

/// A copy that fails is about the files the request named (FAILED_PRECONDITION, with the reason);
/// a storage root that does not work is the server's own problem.
impl From<crate::storage::StorageError> for Error {
    fn from(error: crate::storage::StorageError) -> Self {
        use crate::storage::StorageError;
        match error {
            StorageError::Copy { .. } | StorageError::LinkLoop { .. } | StorageError::TooDeep { .. } => {
                Self::FailedPrecondition(error.to_string())
            }
            StorageError::Create { .. }
            | StorageError::Unusable { .. }
            | StorageError::NotWritable { .. }
            | StorageError::Corrupt(_) => Self::internal(error),
        }
    }
}

/// An object store's answer is about the bucket the request named: a missing object or bucket,
/// refused credentials (FAILED_PRECONDITION with the store's reason); a store that cannot be
/// reached after the retries is UNAVAILABLE; a local file of a transfer is the server's own.
impl From<crate::storage::ObjectError> for Error {
    fn from(error: crate::storage::ObjectError) -> Self {
        use crate::storage::ObjectError;
        match &error {
            ObjectError::NotFound(_) => Self::FailedPrecondition(error.to_string()),
            ObjectError::Store { .. } if error.is_unreachable() => Self::Unavailable(error.to_string()),
            ObjectError::Store { .. } => Self::FailedPrecondition(error.to_string()),
            ObjectError::Configure { .. } | ObjectError::Local { .. } => Self::internal(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_read_codes_and_messages_but_never_internal_text() {
        let status = Error::invalid("version.name", "bad").status();
        assert_eq!((status.code.number(), status.code.name()), (3, "INVALID_ARGUMENT"));
        assert_eq!(status.message, "Field: version.name Error: bad");
        let status = Error::FailedPrecondition("model.pt is not a loadable TorchScript model".into()).status();
        assert_eq!(
            (status.code.number(), status.message.as_str()),
            (9, "model.pt is not a loadable TorchScript model")
        );
        let status = Error::internal("database: disk I/O error at /var/lib/anneal").status();
        assert_eq!((status.code, status.message.as_str()), (Code::Internal, INTERNAL_MESSAGE));
        assert_eq!(Error::NoRoute { method: "GET".into(), path: "/v1/x".into() }.code().number(), 5);
    }
}
