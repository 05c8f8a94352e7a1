//! The one mapping from [`Error`] to HTTP: status code and the API's error envelope
//! `{"error":{"code","message","status","details"}}`, with `google.rpc.Code` names and numbers.
//! Each error is logged here, once; the text of internal errors never reaches the client.

use axum::extract::{OriginalUri, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::Json;
use crate::error::{Error, FieldViolation};

#[derive(Serialize)]
struct Envelope {
    error: Status,
}

#[derive(Serialize)]
struct Status {
    code: u16,
    message: String,
    status: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    details: Vec<Detail>,
}

#[derive(Serialize)]
struct Detail {
    #[serde(rename = "@type")]
    type_url: &'static str,
    #[serde(rename = "fieldViolations")]
    field_violations: Vec<Violation>,
}

#[derive(Serialize)]
struct Violation {
    field: String,
    description: String,
}

fn bad_request(violation: &FieldViolation) -> Vec<Detail> {
    vec![Detail {
        type_url: "type.googleapis.com/google.rpc.BadRequest",
        field_violations: vec![Violation {
            field: violation.field.clone(),
            description: violation.description.clone(),
        }],
    }]
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (http, status, details) = match &self {
            Error::InvalidArgument(v) => (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", bad_request(v)),
            Error::NotFound(v) => (StatusCode::NOT_FOUND, "NOT_FOUND", bad_request(v)),
            Error::NoRoute { .. } => (StatusCode::NOT_FOUND, "NOT_FOUND", Vec::new()),
            Error::AlreadyExists(v) => (StatusCode::CONFLICT, "ALREADY_EXISTS", bad_request(v)),
            Error::FailedPrecondition(_) => (StatusCode::BAD_REQUEST, "FAILED_PRECONDITION", Vec::new()),
            Error::Aborted(_) => (StatusCode::CONFLICT, "ABORTED", Vec::new()),
            Error::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", Vec::new()),
            Error::PermissionDenied(_) => (StatusCode::FORBIDDEN, "PERMISSION_DENIED", Vec::new()),
            Error::ResourceExhausted(_) => (StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED", Vec::new()),
            Error::Unimplemented(_) => (StatusCode::NOT_IMPLEMENTED, "UNIMPLEMENTED", Vec::new()),
            Error::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", Vec::new()),
            Error::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", Vec::new()),
        };
        let message = match &self {
            Error::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                "Internal error encountered.".to_owned()
            }
            other if http.is_server_error() => {
                tracing::warn!(error = %other, status, "request failed");
                other.to_string()
            }
            other => {
                tracing::debug!(error = %other, status, "request rejected");
                other.to_string()
            }
        };
        let unauthenticated = matches!(self, Error::Unauthenticated(_));
        let envelope = Envelope { error: Status { code: http.as_u16(), message, status, details } };
        let mut response = (http, Json(envelope)).into_response();
        if unauthenticated {
            response
                .headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer realm=\"anneal\""));
        }
        response
    }
}

/// The answer for any path or method under `/v1` that no API method serves. The message shows the
/// path as the client sent it: with the `/v1` prefix and the custom verb back after its `:`.
pub async fn no_route(OriginalUri(uri): OriginalUri, request: Request) -> Error {
    Error::NoRoute { method: request.method().to_string(), path: uri.path().replace("/@", ":") }
}
