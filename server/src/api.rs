//! The REST API under `/v1`, compatible with the Cloud ML Engine `ml` v1 API.
//!
//! Handlers are thin: they parse the request into typed values, call one [`Control`] use case and
//! convert the result into the API's JSON. Errors become the API's envelope in [`error`].
//! Custom verbs (`name:verb`) are rewritten to an extra path segment before routing by
//! [`split_custom_verb`], so routes read `/projects/{project}/@getConfig`.

mod auth;
pub mod error;
mod extract;
mod jobs;
pub mod limits;
mod models;
mod nodes;
mod operations;
mod patch;
mod predict;
mod projects;
pub mod resources;
mod uploads;
mod versions;
mod wire;

use axum::extract::Request;
use axum::http::Uri;
use axum::Router;

use crate::control::Control;

pub use auth::{authenticate, metrics_reader, required_permission};
pub use wire::Json;

/// The `/v1` router (to be nested at `/v1`). Every route is guarded by [`auth::authorize`]: the
/// caller's identity must come in the request's extensions, put there by [`authenticate`] (bearer
/// tokens) or by the console (its logged-in session).
pub fn router(control: &Control) -> Router<Control> {
    Router::new()
        .merge(projects::router())
        .merge(jobs::router())
        .merge(models::router())
        .merge(versions::router())
        .merge(operations::router())
        .merge(predict::router())
        .merge(uploads::router())
        .merge(auth::router())
        .merge(nodes::router())
        .route("/openapi.json", axum::routing::get(openapi))
        .route_layer(axum::middleware::from_fn_with_state(control.clone(), auth::authorize))
        .fallback(error::no_route)
        .method_not_allowed_fallback(error::no_route)
}

/// This API's OpenAPI 3 document (`server/src/api/openapi.json`; a test keeps it in step with
/// the routes).
pub const OPENAPI: &str = include_str!("api/openapi.json");

async fn openapi() -> impl axum::response::IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "application/json; charset=UTF-8")], OPENAPI)
}

/// Rewrites a custom verb in the last path segment of a `/v1` request into a segment of its own:
/// `/v1/projects/demo:getConfig` becomes `/v1/projects/demo/@getConfig`. Resource ids cannot
/// contain `:`, so a `:` in the last segment is always a verb. Other paths pass unchanged.
pub fn split_custom_verb(mut request: Request) -> Request {
    let uri = request.uri();
    let path = uri.path();
    if !path.starts_with("/v1/") {
        return request;
    }
    let last_start = path.rfind('/').map_or(0, |i| i + 1);
    let Some(colon) = path[last_start..].find(':').map(|i| last_start + i) else {
        return request;
    };
    let mut rewritten = format!("{}/@{}", &path[..colon], &path[colon + 1..]);
    if let Some(query) = uri.query() {
        rewritten.push('?');
        rewritten.push_str(query);
    }
    if let Ok(new_uri) = rewritten.parse::<Uri>() {
        *request.uri_mut() = new_uri;
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(uri: &str) -> String {
        let request = Request::builder().uri(uri).body(axum::body::Body::empty()).expect("request");
        split_custom_verb(request).uri().to_string()
    }

    #[test]
    fn splits_verbs_off_the_last_segment_keeping_the_query() {
        assert_eq!(rewrite("/v1/projects/demo:getConfig?alt=json"), "/v1/projects/demo/@getConfig?alt=json");
        assert_eq!(
            rewrite("/v1/projects/p/models/m/versions/v1:predict"),
            "/v1/projects/p/models/m/versions/v1/@predict"
        );
    }

    #[test]
    fn leaves_other_paths_alone() {
        assert_eq!(rewrite("/v1/projects/demo/models?alt=json"), "/v1/projects/demo/models?alt=json");
        assert_eq!(rewrite("/models:x"), "/models:x");
        assert_eq!(rewrite("/v1/projects:x/models"), "/v1/projects:x/models");
    }
}
