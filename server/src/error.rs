//! The one error type of Anneal's use cases.
//!
//! Every fallible use case returns [`Error`]. Its variants are the `google.rpc.Code`s the `ml` v1
//! API uses; [`crate::api::error`] maps them to HTTP status and the API's error envelope in one
//! exhaustive match, and logs each error once there.

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
    /// A bad value in `field`.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(FieldViolation::new(field, description))
    }

    /// The resource named in `field` does not exist.
    pub fn not_found(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::NotFound(FieldViolation::new(field, description))
    }

    /// Wraps an unexpected failure, keeping its text for the log.
    pub fn internal(error: impl fmt::Display) -> Self {
        Self::Internal(error.to_string())
    }
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::PoolTimedOut => Self::Unavailable("the metadata database is busy; retry shortly".into()),
            sqlx::Error::PoolClosed => Self::Unavailable("the server is shutting down".into()),
            other => Self::internal(format!("database: {other}")),
        }
    }
}
