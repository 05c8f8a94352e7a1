//! Logging (`tracing`, readable or JSON lines on stderr) and Prometheus metrics.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// The `log` setting is not a `tracing` filter.
    #[error("invalid log filter '{filter}': {source}")]
    Filter { filter: String, source: tracing_subscriber::filter::ParseError },
    /// A log subscriber was installed already.
    #[error("cannot install the log subscriber: {0}")]
    Install(#[source] tracing_subscriber::util::TryInitError),
}

/// Installs the process-wide log subscriber. `filter` is a `tracing` filter such as `info`.
pub fn init_logging(format: LogFormat, filter: &str) -> Result<(), LoggingError> {
    let filter =
        EnvFilter::try_new(filter).map_err(|source| LoggingError::Filter { filter: filter.to_owned(), source })?;
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Text => registry.with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr)).try_init(),
        LogFormat::Json => registry
            .with(tracing_subscriber::fmt::layer().json().flatten_event(true).with_writer(std::io::stderr))
            .try_init(),
    };
    result.map_err(LoggingError::Install)?;
    std::panic::set_hook(Box::new(log_panic));
    Ok(())
}

/// Logs a panic once, as an error event in the configured format (the default hook would print
/// a plain line to stderr). The request that panicked still gets its 500 envelope from the HTTP
/// surface's panic layer, and the process goes on.
fn log_panic(info: &std::panic::PanicHookInfo<'_>) {
    let message = panic_message(info.payload());
    let location = info.location().map(ToString::to_string).unwrap_or_default();
    let thread = std::thread::current().name().unwrap_or("unnamed").to_owned();
    tracing::error!(panic = %message, %location, %thread, "panicked");
}

/// The text of a panic's payload (`&str` or `String`; anything else is named as such).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// Buckets for request latencies, in seconds: 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Buckets for rows per forward pass.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// The process-wide Prometheus recorder. The `metrics` facade has one global recorder, so it is
/// installed once per process and shared by every server the process runs.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .expect("the latency buckets are a non-empty constant")
                .set_buckets_for_metric(Matcher::Full("anneal_predict_batch_rows".into()), BATCH_BUCKETS)
                .expect("the batch buckets are a non-empty constant")
                .build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; then our handle renders nothing,
            // which `/metrics` makes visible rather than hiding.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            metrics::gauge!("anneal_build_info", "version" => crate::VERSION).set(1.0);
            handle
        })
        .clone()
}

/// Counts every HTTP request by method, route template and status, and records its latency.
pub async fn track_http(request: Request, next: Next) -> Response {
    let started = Instant::now();
    // Only the methods HTTP defines become labels: an invented one must not make a new series.
    let method = match *request.method() {
        Method::GET | Method::HEAD | Method::POST | Method::PUT | Method::PATCH | Method::DELETE | Method::OPTIONS => {
            request.method().as_str().to_owned()
        }
        _ => "other".to_owned(),
    };
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("anneal_http_requests_total", &labels).increment(1);
    metrics::histogram!("anneal_http_request_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_payloads_become_their_text() {
        assert_eq!(panic_message(&"text"), "text");
        assert_eq!(panic_message(&String::from("owned")), "owned");
        assert_eq!(panic_message(&42), "a panic without a message");
    }
}
