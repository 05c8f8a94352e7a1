//! Request extractors whose rejections are the API's INVALID_ARGUMENT envelope, never axum's
//! plain-text errors.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::Error;

/// A JSON request body.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Error;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> Error {
    match rejection {
        JsonRejection::JsonDataError(e) => Error::invalid(
            "body",
            format!(
                "Invalid JSON payload received. {}",
                e.body_text().trim_start_matches("Failed to deserialize the JSON body into the target type: ")
            ),
        ),
        JsonRejection::JsonSyntaxError(e) => Error::invalid(
            "body",
            format!(
                "Invalid JSON payload received. {}",
                e.body_text().trim_start_matches("Failed to parse the request body as JSON: ")
            ),
        ),
        JsonRejection::MissingJsonContentType(_) => {
            Error::invalid("body", "Send the body as JSON with Content-Type: application/json.")
        }
        JsonRejection::BytesRejection(e) => {
            Error::invalid("body", format!("Cannot read the request body: {}", e.body_text()))
        }
        other => Error::invalid("body", other.body_text()),
    }
}

/// Query parameters (unknown ones, like the standard `alt` or `fields`, are ignored).
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => Err(Error::invalid(
                "query",
                e.body_text().trim_start_matches("Failed to deserialize query string: ").to_owned(),
            )),
            Err(other) => Err(Error::invalid("query", other.body_text())),
        }
    }
}
