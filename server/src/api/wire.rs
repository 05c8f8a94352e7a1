//! JSON in and out, with the API's wire conventions.

use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A JSON response body served as `application/json; charset=UTF-8`, like the `ml` v1 API.
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.0) {
            Ok(body) => {
                let mut response = body.into_response();
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json; charset=UTF-8"));
                response
            }
            Err(e) => crate::Error::internal(format!("cannot serialise a response: {e}")).into_response(),
        }
    }
}
