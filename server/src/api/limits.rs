//! The HTTP side of "no request takes the server down": a panic in a handler becomes the API's
//! 500 INTERNAL envelope, and an ordinary API request that runs past `request_timeout_secs`
//! answers 503 UNAVAILABLE. Log follow streams and upload bodies are not timed.

use std::any::Any;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::Error;

/// The response to a request whose handler panicked: the same envelope as any internal error,
/// with nothing of the panic in it. The panic hook installed with the log subscriber has logged
/// it already (see [`crate::telemetry`]).
pub fn panic_response(_payload: Box<dyn Any + Send + 'static>) -> Response {
    // The envelope `api::error` writes for `Error::Internal`, built here without going through it
    // so the panic is logged once (by the hook), not twice.
    let envelope = serde_json::json!({
        "error": {"code": 500, "message": "Internal error encountered.", "status": "INTERNAL"}
    });
    let mut response = (axum::http::StatusCode::INTERNAL_SERVER_ERROR, super::Json(envelope)).into_response();
    // The connection may be in any state after a panic; ask the client not to reuse it.
    response.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
    response
}

/// Answers 503 UNAVAILABLE when an ordinary `/v1` request has not produced its response within
/// `limit`. The limit covers the handler up to the response's head: a stream (log follow) runs
/// on after it, and file uploads, whose handler reads the whole body, are not timed at all.
pub async fn time_limit(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    if !is_timed(&request) {
        return next.run(request).await;
    }
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Error::Unavailable(format!(
            "The request did not finish within {} s (request_timeout_secs); retry, or ask for less at once.",
            limit.as_secs()
        ))
        .into_response(),
    }
}

/// Whether a request is an ordinary API call: under `/v1`, not an upload's file body and not a
/// log follow stream.
fn is_timed(request: &Request) -> bool {
    let path = request.uri().path();
    if !path.starts_with("/v1/") {
        return false;
    }
    let upload = request.method() == Method::PUT && path.contains("/uploads/");
    let follow = path.ends_with("/logs")
        && request.uri().query().is_some_and(|q| q.split('&').any(|pair| pair == "follow=true" || pair == "follow=1"));
    !upload && !follow
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, uri: &str) -> Request {
        Request::builder().method(method).uri(uri).body(axum::body::Body::empty()).expect("request")
    }

    #[test]
    fn uploads_and_follow_streams_are_not_timed() {
        assert!(is_timed(&request(Method::GET, "/v1/projects/p/jobs")));
        assert!(is_timed(&request(Method::GET, "/v1/projects/p/jobs/j/logs?offset=3")));
        assert!(!is_timed(&request(Method::GET, "/v1/projects/p/jobs/j/logs?offset=3&follow=true")));
        assert!(!is_timed(&request(Method::PUT, "/v1/projects/p/uploads/abc/pkg.tar.gz")));
        assert!(is_timed(&request(Method::POST, "/v1/projects/p/uploads")));
        assert!(!is_timed(&request(Method::GET, "/healthz")));
    }

    async fn boom() -> &'static str {
        panic!("secret detail")
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_and_the_service_goes_on() {
        use tower::ServiceExt;
        let app = axum::Router::new()
            .route("/boom", axum::routing::get(boom))
            .route("/ok", axum::routing::get(|| async { "ok" }))
            .layer(tower_http::catch_panic::CatchPanicLayer::custom(panic_response));
        let response = app.clone().oneshot(request(Method::GET, "/boom")).await.expect("response");
        assert_eq!(response.status(), axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.expect("body");
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains(r#""status":"INTERNAL""#), "{text}");
        assert!(!text.contains("secret"), "nothing of the panic is sent: {text}");
        let response = app.oneshot(request(Method::GET, "/ok")).await.expect("response");
        assert_eq!(response.status(), axum::http::StatusCode::OK);
    }

    #[test]
    fn a_panic_answers_the_internal_envelope_without_its_text() {
        let response = panic_response(Box::new("secret detail"));
        assert_eq!(response.status(), axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    }
}
