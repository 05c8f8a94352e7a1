//! The web console's server side: renders the Leptos app, serves its built assets (WASM, JS, CSS),
//! keeps browsers' sessions (`session.rs`), and implements the console's backend port on top of
//! [`Control`] and the REST API called in process, acting as the logged-in identity. What fails
//! reaches the page as its API message; an internal error is logged here and the page gets the
//! generic message.
//!
//! Pages carry a Content-Security-Policy: scripts only from this server plus the inline
//! hydration script, which carries the per-response nonce Leptos makes; WebAssembly compiled from
//! there (`'wasm-unsafe-eval'`); styles, images and connections to this server only; no framing.
//!
//! Server functions (`POST /api/<name>`) get a body limit, [`MAX_SERVER_FN_BODY`] (413 past it),
//! and the server's `request_timeout_secs` for reading the body and answering (503 past it),
//! both answered as a server function's error, which the page shows.
//!
//! The assets are found where `make build` (scripts/build-console.sh) puts them relative to the
//! executable, so `target/release/anneal` serves its console from any working directory: the configured
//! `site_root` if set, else `<exe dir>/site`, else `<exe dir>/../site` (that is `target/site`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

mod charts;
mod session;

use app::api::{ApiError, ApiResult, Chart, ServerInfo, SessionInfo};
use app::backend::{Backend, BackendError, ConsoleBackend};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue};
use axum::Router;
use leptos::prelude::*;
use leptos_axum::{generate_route_list, LeptosRoutes};
use tower::ServiceExt;

use crate::auth::{Identity, Permission};
use crate::control::Control;
use crate::error::{Error, Result};
use crate::http::browser::BrowserPolicy;

/// The file whose presence marks a site root built for this app.
const MARKER: &str = "pkg/anneal.js";

/// The console's rendering options and asset location.
#[derive(Clone, Debug)]
pub struct Console {
    options: LeptosOptions,
    assets_found: bool,
    browser: BrowserPolicy,
}

impl Console {
    /// Locates the console's assets (see the module docs); `browser` says which hosts and
    /// origins browsers reach it at.
    pub fn new(configured_root: Option<&Path>, browser: BrowserPolicy) -> Self {
        let candidates: Vec<PathBuf> = match configured_root {
            Some(root) => vec![root.to_path_buf()],
            None => exe_relative_roots(),
        };
        let found = candidates.iter().find(|root| root.join(MARKER).is_file()).cloned();
        let root = found.clone().or_else(|| candidates.first().cloned()).unwrap_or_else(|| PathBuf::from("site"));
        let options = LeptosOptions::builder()
            .output_name("anneal")
            .site_root(root.to_string_lossy().into_owned())
            .site_pkg_dir("pkg")
            .env(leptos::config::Env::PROD)
            .build();
        Self { options, assets_found: found.is_some(), browser }
    }

    /// Where the assets are served from, and whether they were found there.
    pub fn site_root(&self) -> (&str, bool) {
        (&self.options.site_root, self.assets_found)
    }

    /// The hosts and origins browsers may reach this server at.
    pub fn browser_policy(&self) -> &BrowserPolicy {
        &self.browser
    }

    /// The console's routes: server-rendered pages, server functions and static assets. `api`
    /// answers `/v1` requests in process (custom verbs as clients send them) without
    /// authenticating them: the console puts the session's identity into each one itself.
    pub fn router(&self, control: Control, api: Router) -> Router {
        let sessions = session::Sessions {
            control: control.clone(),
            browser: self.browser.clone(),
            site_root: PathBuf::from(&*self.options.site_root),
        };
        let time_limit = control.limits().request_timeout;
        let backend: Backend = Arc::new(ConsoleUseCases { control, api });
        let routes = generate_route_list(app::App);
        let options = self.options.clone();
        let shell = move || app::shell(options.clone());
        let context = move || {
            provide_context(backend.clone());
            content_security_policy();
        };
        let session_routes = Router::new()
            .route("/console/login", axum::routing::post(session::login))
            .route("/console/logout", axum::routing::post(session::logout))
            .with_state(sessions.clone());
        Router::new()
            .route("/console/project", axum::routing::get(switch_project))
            .leptos_routes_with_context(&self.options, routes, context.clone(), shell)
            .fallback(leptos_axum::file_and_error_handler_with_context(context, app::shell))
            .with_state(self.options.clone())
            .merge(session_routes)
            .layer(axum::middleware::from_fn_with_state(sessions, session::require_session))
            .layer(axum::middleware::from_fn_with_state(ServerFnLimits::new(time_limit), server_fn_limits))
            .layer(axum::middleware::map_response(default_security_policy))
    }
}

/// The largest body a server function call may carry: what the console sends (a form's JSON,
/// URL-encoded) is far smaller; a larger one answers 413 before the function runs.
pub const MAX_SERVER_FN_BODY: usize = 1 << 20;

/// The server functions' paths, and how long one call may take.
#[derive(Clone)]
struct ServerFnLimits {
    paths: Arc<std::collections::HashSet<&'static str>>,
    time_limit: std::time::Duration,
}

impl ServerFnLimits {
    /// The limits for every server function the app registered.
    fn new(time_limit: std::time::Duration) -> Self {
        let paths = leptos::server_fn::axum::server_fn_paths().map(|(path, _)| path).collect();
        Self { paths: Arc::new(paths), time_limit }
    }
}

/// Bounds a server function call: its body is read here, at most [`MAX_SERVER_FN_BODY`] bytes
/// (413 past it), and reading it plus the call itself must finish within the time limit (503
/// past it). Other console requests pass unchanged.
async fn server_fn_limits(
    axum::extract::State(limits): axum::extract::State<ServerFnLimits>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if !limits.paths.contains(request.uri().path()) {
        return next.run(request).await;
    }
    let too_large = || {
        server_fn_error(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            format!("The request is larger than the console accepts ({MAX_SERVER_FN_BODY} bytes)."),
        )
    };
    let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_SERVER_FN_BODY as u64) {
        return too_large();
    }
    let call = async {
        use futures_util::StreamExt;
        let (parts, body) = request.into_parts();
        let mut chunks = body.into_data_stream();
        let mut bytes = Vec::new();
        while let Some(chunk) = chunks.next().await {
            let Ok(chunk) = chunk else {
                return server_fn_error(axum::http::StatusCode::BAD_REQUEST, "The request's body could not be read.");
            };
            if bytes.len() + chunk.len() > MAX_SERVER_FN_BODY {
                return too_large();
            }
            bytes.extend_from_slice(&chunk);
        }
        next.run(axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes))).await
    };
    match tokio::time::timeout(limits.time_limit, call).await {
        Ok(response) => response,
        Err(_) => server_fn_error(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "The request did not finish within {} s (request_timeout_secs); retry, or ask for less at once.",
                limits.time_limit.as_secs()
            ),
        ),
    }
}

/// An answer with `status` that a server function's caller reads as its error, `message`.
fn server_fn_error(status: axum::http::StatusCode, message: impl Into<String>) -> axum::response::Response {
    use leptos::server_fn::error::FromServerFnError;
    let error: ServerFnError = ServerFnError::ServerError(message.into());
    let body = error.ser();
    let mut response = axum::response::Response::new(axum::body::Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// Puts the page's Content-Security-Policy, with this response's nonce, into its headers (while
/// Leptos renders a page; server functions have no nonce and get the default policy).
fn content_security_policy() {
    let (Some(nonce), Some(response)) = (leptos::nonce::use_nonce(), use_context::<leptos_axum::ResponseOptions>())
    else {
        return;
    };
    let policy = format!(
        "default-src 'self'; script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'; style-src 'self'; \
         img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
         frame-ancestors 'none'"
    );
    if let Ok(value) = HeaderValue::from_str(&policy) {
        response.insert_header(header::CONTENT_SECURITY_POLICY, value);
    }
}

/// The policy of every console answer that did not set one (static files, redirects, server
/// functions): nothing may run or frame it.
async fn default_security_policy(mut response: axum::response::Response) -> axum::response::Response {
    response.headers_mut().entry(header::CONTENT_SECURITY_POLICY).or_insert(HeaderValue::from_static(
        "default-src 'none'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ));
    response
}

fn exe_relative_roots() -> Vec<PathBuf> {
    let Some(dir) = std::env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_path_buf)) else {
        return vec![PathBuf::from("target/site")];
    };
    let mut roots = vec![dir.join("site")];
    if let Some(parent) = dir.parent() {
        roots.push(parent.join("site"));
    }
    roots
}

#[derive(serde::Deserialize)]
struct SwitchProject {
    name: String,
}

/// `GET /console/project?name=P`: the project switcher's form (works without JavaScript).
async fn switch_project(axum::extract::Query(query): axum::extract::Query<SwitchProject>) -> axum::response::Redirect {
    let name: String =
        query.name.trim().chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_')).collect();
    let name = if name.is_empty() { "default".to_owned() } else { name };
    axum::response::Redirect::to(&format!("/projects/{name}/jobs"))
}

/// The console's backend port: the REST API called in process, and use cases for the rest.
struct ConsoleUseCases {
    control: Control,
    /// The `/v1` API, the same one the server serves.
    api: Router,
}

/// The largest API answer the console reads (a page of log lines is far smaller).
const MAX_API_BODY: usize = 64 << 20;

/// What a page shows of an error: what the API would answer; the text of an internal error is
/// logged here instead.
impl From<Error> for BackendError {
    fn from(error: Error) -> Self {
        if let Error::Internal(detail) = &error {
            tracing::error!(error = %detail, "console request failed");
        }
        BackendError { message: error.status().message }
    }
}

#[async_trait::async_trait]
impl ConsoleBackend for ConsoleUseCases {
    async fn server_info(&self, request: &Parts) -> Result<ServerInfo, BackendError> {
        let identity = caller(request)?;
        let accelerators = self.control.accelerators();
        // Where the server keeps its files is for admins only.
        let data_dir = if identity.role == crate::auth::Role::Admin {
            self.control.data_dir().display().to_string()
        } else {
            "(shown to admins)".to_owned()
        };
        Ok(ServerInfo {
            version: crate::VERSION.to_owned(),
            device: accelerators.device_label().to_owned(),
            cuda_devices: accelerators.cuda_devices,
            data_dir,
        })
    }

    async fn session(&self, request: &Parts) -> Result<SessionInfo, BackendError> {
        let identity = caller(request)?;
        Ok(SessionInfo {
            name: identity.name.clone(),
            role: identity.role.as_str().to_owned(),
            auth_enabled: self.control.auth_enabled(),
        })
    }

    async fn call_api(
        &self,
        request: &Parts,
        method: &'static str,
        path: String,
        body: Option<serde_json::Value>,
    ) -> Result<ApiResult, BackendError> {
        if !path.starts_with("/projects/") || path.contains("..") {
            return Err(Error::PermissionDenied(format!("the console reads only /projects/ paths, not {path}")).into());
        }
        let identity = caller(request)?.clone();
        let mut request = axum::http::Request::builder().method(method).uri(format!("/v1{path}"));
        let body = match body {
            Some(value) => {
                request = request.header(axum::http::header::CONTENT_TYPE, "application/json");
                axum::body::Body::from(value.to_string())
            }
            None => axum::body::Body::empty(),
        };
        let mut request = request.body(body).map_err(Error::internal)?;
        request.extensions_mut().insert(identity);
        let response = self.api.clone().oneshot(request).await.map_err(Error::internal)?;
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), MAX_API_BODY).await.map_err(Error::internal)?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Ok(if status < 300 { Ok(value) } else { Err(ApiError::from_body(status, &value)) })
    }

    async fn job_charts(&self, request: &Parts, project: String, job: String) -> Result<Vec<Chart>, BackendError> {
        let name = crate::names::JobName::new("name", &project, &job)?;
        may_read(request, &project, || format!("projects/{project}/jobs/{job}"))?;
        let mut points = self.control.job_metrics(&name).await?;
        // A tuning job also gets the objective of each finished trial.
        let job = self.control.get_job(&name).await?;
        let (tag, trials) = match &job.output {
            crate::jobs::JobOutput::Training(output) => {
                (output.hyperparameter_metric_tag.as_deref(), &output.trials[..])
            }
            crate::jobs::JobOutput::Prediction(_) => (None, &[][..]),
        };
        let tag = tag.unwrap_or("objective");
        for trial in trials {
            let (Ok(id), Some(metric)) = (trial.trial_id.parse::<i64>(), trial.final_metric) else { continue };
            points.push(crate::executor::MetricPoint {
                replica: "trials".into(),
                tag: format!("{tag} by trial"),
                step: id,
                value: metric.objective_value,
                timestamp: 0.0,
                trial: id.to_string(),
            });
        }
        let charts = tokio::task::spawn_blocking(move || charts::draw(&points))
            .await
            .map_err(Error::internal)?
            .map_err(Error::internal)?;
        Ok(charts.into_iter().map(|(tag, points, svg)| Chart { tag, points, svg }).collect())
    }

    async fn example_instances(
        &self,
        request: &Parts,
        project: String,
        model: String,
        version: String,
    ) -> Result<Option<String>, BackendError> {
        let name = crate::names::VersionName::new("name", &project, &model, &version)?;
        may_read(request, &project, || format!("projects/{project}/models/{model}/versions/{version}"))?;
        let record = self.control.get_version(&name).await?;
        let Some(dir) = record.artifact_dir else { return Ok(None) };
        let Ok(dir) = self.control.version_files(&dir).await else { return Ok(None) };
        let Ok(signature) = crate::serving::Signature::read(&dir) else { return Ok(None) };
        Ok(example(&signature))
    }
}

/// The console session's secret among a request's cookies, if it carries one: what `/v1` needs
/// to authenticate the calls a logged-in page makes itself (the package upload's `PUT`).
pub fn session_secret(headers: &axum::http::HeaderMap) -> Option<&str> {
    session::cookie(headers, crate::auth::SESSION_COOKIE)
}

/// The logged-in identity [`session::require_session`] put into the request.
fn caller(request: &Parts) -> Result<&Identity> {
    request.extensions.get::<Identity>().ok_or_else(|| Error::Unauthenticated("Log in to the console first.".into()))
}

/// Whether the caller may read `project`: as the API answers, a project outside the caller's
/// scope is not found, and a role without reading is denied.
fn may_read(request: &Parts, project: &str, resource: impl FnOnce() -> String) -> Result<()> {
    let identity = caller(request)?;
    if !identity.projects.contains(project) {
        return Err(Error::not_found("name", format!("{} was not found.", resource())));
    }
    if !identity.can(Permission::Read, project) {
        return Err(Error::PermissionDenied(format!(
            "The token's role ({}) cannot read {}.",
            identity.role,
            resource()
        )));
    }
    Ok(())
}

/// `{"instances": [one instance of zeros]}` for a signature whose input shapes are all declared.
fn example(signature: &crate::serving::Signature) -> Option<String> {
    fn zeros(shape: &[i64]) -> serde_json::Value {
        match shape.split_first() {
            None => serde_json::Value::from(0.0),
            Some((&n, rest)) => serde_json::Value::Array((0..n.max(1)).map(|_| zeros(rest)).collect()),
        }
    }
    if !signature.declared {
        return None;
    }
    let mut named = serde_json::Map::new();
    for input in &signature.inputs {
        named.insert(input.name.clone(), zeros(input.shape.as_deref()?));
    }
    let instance = if named.len() == 1 { named.into_iter().next()?.1 } else { serde_json::Value::Object(named) };
    serde_json::to_string_pretty(&serde_json::json!({ "instances": [instance] })).ok()
}
