//! The HTTP surface of one server: the REST API at `/v1`, operational endpoints (`/healthz`,
//! `/readyz`, `/metrics`) and the web console at `/`, with request tracing, metrics and gzip.
//! `browser.rs` guards all of them against being used by a web page (Host, cross-site requests,
//! JSON bodies, security headers).

pub mod browser;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tower::ServiceBuilder;
use tower_http::compression::CompressionLayer;
use tower_http::trace::TraceLayer;

use crate::api;
use crate::console::Console;
use crate::control::Control;

/// Builds the whole application: every route, with the custom-verb rewrite applied before routing.
pub fn app(control: Control, console: Console, metrics: PrometheusHandle, max_request_bytes: usize) -> Router {
    let ops =
        Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).with_state(control.clone()).route(
            "/metrics",
            get(render_metrics)
                .with_state(metrics)
                .layer(axum::middleware::from_fn_with_state(control.clone(), api::metrics_reader))
                .layer(axum::middleware::from_fn_with_state(control.clone(), api::authenticate)),
        );
    let routes = Router::new()
        .nest(
            "/v1",
            api::router(&control)
                .with_state(control.clone())
                .layer(DefaultBodyLimit::max(max_request_bytes))
                .layer(axum::middleware::from_fn_with_state(control.clone(), api::authenticate)),
        )
        .merge(ops)
        .merge(console.router(control.clone(), in_process_api(&control)))
        .layer(axum::middleware::from_fn_with_state(console.browser_policy().clone(), browser::guard))
        .layer(axum::middleware::from_fn_with_state(control.limits().request_timeout, crate::api::limits::time_limit))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(crate::api::limits::panic_response))
        .layer(axum::middleware::from_fn(crate::telemetry::track_http))
        .layer(CompressionLayer::new())
        .layer(TraceLayer::new_for_http());
    // Routing happens inside `routes`, so the rewrite must wrap it from outside.
    Router::new().fallback_service(ServiceBuilder::new().map_request(api::split_custom_verb).service(routes))
}

/// The `/v1` API as the console calls it in process: custom verbs split as for any client, and
/// no authentication middleware, because the console puts the session's identity into each
/// request itself.
fn in_process_api(control: &Control) -> Router {
    let api = Router::new().nest("/v1", api::router(control).with_state(control.clone()));
    Router::new().fallback_service(ServiceBuilder::new().map_request(api::split_custom_verb).service(api))
}

/// Liveness: the process is up and answering.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: database open with migrations applied, storage writable. 503 names what failed.
async fn readyz(State(control): State<Control>) -> impl IntoResponse {
    let readiness = control.readiness().await;
    let status = if readiness.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, api::Json(readiness))
}

/// Prometheus text exposition of every metric Anneal records.
async fn render_metrics(State(handle): State<PrometheusHandle>) -> impl IntoResponse {
    handle.run_upkeep();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], handle.render())
}
