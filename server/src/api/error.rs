//! The one mapping from [`Error`] to HTTP: status code and the API's error envelope
//! `{"error":{"code","message","status","details"}}`, with the `google.rpc.Code` name of
//! [`Error::code`] and the message of [`Error::status`]. Each error is logged here, once; the text
//! of internal errors never reaches the client.

use axum::extract::{OriginalUri, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::Json;
use crate::error::{Code, Error, FieldViolation};

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
        let code = self.code();
        let http = match code {
            Code::InvalidArgument | Code::FailedPrecondition => StatusCode::BAD_REQUEST,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let details = match &self {
            Error::InvalidArgument(v) | Error::NotFound(v) | Error::AlreadyExists(v) => bad_request(v),
            Error::NoRoute { .. }
            | Error::FailedPrecondition(_)
            | Error::Aborted(_)
            | Error::Unauthenticated(_)
            | Error::PermissionDenied(_)
            | Error::ResourceExhausted(_)
            | Error::Unimplemented(_)
            | Error::Unavailable(_)
            | Error::Internal(_) => Vec::new(),
        };
        let status = code.name();
        match &self {
            Error::Internal(detail) => tracing::error!(error = %detail, "internal error"),
            other if http.is_server_error() => tracing::warn!(error = %other, status, "request failed"),
            other => tracing::debug!(error = %other, status, "request rejected"),
        }
        let message = self.status().message;
        let unauthenticated = matches!(self, Error::Unauthenticated(_));
        let envelope = Envelope { error: Status { code: http.as_u16(), message, status, details } };
        let mut response = (http, Json(envelope)).into_response();
        if unauthenticated {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"anneal\""),
            );
        }
        response
    }
}

/// The answer for any path or method under `/v1` that no API method serves. The message shows the
/// path as the client sent it: with the `/v1` prefix and the custom verb back after its `:`.
pub async fn no_route(OriginalUri(uri): OriginalUri, request: Request) -> Error {
    Error::NoRoute { method: request.method().to_string(), path: uri.path().replace("/@", ":") }
}
