//! The web console's server side: renders the Leptos app, serves its built assets (WASM, JS, CSS),
//! and implements the console's backend port on top of [`Control`].
//!
//! The assets are found where `make build` (cargo-leptos) puts them relative to the executable, so
//! `target/release/anneal` serves its console from any working directory: the configured
//! `site_root` if set, else `<exe dir>/site`, else `<exe dir>/../site` (that is `target/site`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

mod charts;

use app::api::{ApiError, ApiResult, Chart, ServerInfo};
use app::backend::{Backend, ConsoleBackend};
use axum::Router;
use leptos::prelude::*;
use leptos_axum::{generate_route_list, LeptosRoutes};
use tower::ServiceExt;

use crate::control::Control;

/// The file whose presence marks a site root built for this app.
const MARKER: &str = "pkg/anneal.js";

/// The console's rendering options and asset location.
#[derive(Clone, Debug)]
pub struct Console {
    options: LeptosOptions,
    assets_found: bool,
}

impl Console {
    /// Locates the console's assets (see the module docs).
    pub fn new(configured_root: Option<&Path>) -> Self {
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
        Self { options, assets_found: found.is_some() }
    }

    /// Where the assets are served from, and whether they were found there.
    pub fn site_root(&self) -> (&str, bool) {
        (&self.options.site_root, self.assets_found)
    }

    /// The console's routes: server-rendered pages, server functions and static assets.
    pub fn router(&self, control: Control) -> Router {
        let api = Router::new().nest("/v1", crate::api::router().with_state(control.clone()));
        let backend: Backend = Arc::new(ConsoleUseCases { control, api });
        let routes = generate_route_list(app::App);
        let options = self.options.clone();
        let shell = move || app::shell(options.clone());
        let context = move || provide_context(backend.clone());
        Router::new()
            .route("/console/project", axum::routing::get(switch_project))
            .leptos_routes_with_context(&self.options, routes, context, shell)
            .fallback(leptos_axum::file_and_error_handler(app::shell))
            .with_state(self.options.clone())
    }
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
    /// The `/v1` router, the same one the server serves.
    api: Router,
}

/// The largest API answer the console reads (a page of log lines is far smaller).
const MAX_API_BODY: usize = 64 << 20;

#[async_trait::async_trait]
impl ConsoleBackend for ConsoleUseCases {
    async fn server_info(&self) -> Result<ServerInfo, String> {
        let accelerators = self.control.accelerators();
        Ok(ServerInfo {
            version: crate::VERSION.to_owned(),
            device: accelerators.device_label().to_owned(),
            cuda_devices: accelerators.cuda_devices,
            data_dir: self.control.data_dir().display().to_string(),
        })
    }

    async fn call_api(
        &self,
        method: &'static str,
        path: String,
        body: Option<serde_json::Value>,
    ) -> Result<ApiResult, String> {
        if !path.starts_with("/projects/") || path.contains("..") {
            return Err(format!("the console reads only /projects/ paths, not {path}"));
        }
        let mut request = axum::http::Request::builder().method(method).uri(format!("/v1{path}"));
        let body = match body {
            Some(value) => {
                request = request.header(axum::http::header::CONTENT_TYPE, "application/json");
                axum::body::Body::from(value.to_string())
            }
            None => axum::body::Body::empty(),
        };
        let request = crate::api::split_custom_verb(request.body(body).map_err(|e| e.to_string())?);
        let response = self.api.clone().oneshot(request).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), MAX_API_BODY).await.map_err(|e| e.to_string())?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Ok(if status < 300 { Ok(value) } else { Err(ApiError::from_body(status, &value)) })
    }

    async fn job_charts(&self, project: String, job: String) -> Result<Vec<Chart>, String> {
        let name = crate::names::JobName::new("name", &project, &job).map_err(|e| e.to_string())?;
        let mut points = self.control.job_metrics(&name).await.map_err(|e| e.to_string())?;
        // A tuning job also gets the objective of each finished trial.
        let job = self.control.get_job(&name).await.map_err(|e| e.to_string())?;
        let tag = job.output["hyperparameterMetricTag"].as_str().unwrap_or("objective").to_owned();
        for trial in job.output["trials"].as_array().into_iter().flatten() {
            let (Some(id), Some(value)) = (
                trial["trialId"].as_str().and_then(|t| t.parse().ok()),
                trial["finalMetric"]["objectiveValue"].as_f64(),
            ) else {
                continue;
            };
            points.push(crate::executor::MetricPoint {
                replica: "trials".into(),
                tag: format!("{tag} by trial"),
                step: id,
                value,
                timestamp: 0.0,
                trial: id.to_string(),
            });
        }
        let charts = tokio::task::spawn_blocking(move || charts::draw(&points)).await.map_err(|e| e.to_string())??;
        Ok(charts.into_iter().map(|(tag, points, svg)| Chart { tag, points, svg }).collect())
    }

    async fn example_instances(
        &self,
        project: String,
        model: String,
        version: String,
    ) -> Result<Option<String>, String> {
        let name = crate::names::VersionName::new("name", &project, &model, &version).map_err(|e| e.to_string())?;
        let record = self.control.get_version(&name).await.map_err(|e| e.to_string())?;
        let Some(dir) = record.artifact_dir else { return Ok(None) };
        let Ok(signature) = crate::serving::Signature::read(std::path::Path::new(&dir)) else { return Ok(None) };
        Ok(example(&signature))
    }
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
