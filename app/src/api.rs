//! Server functions the console calls, and the wire types they return.
//!
//! Each server function is thin: it takes the [`crate::backend::Backend`] from context and makes
//! one call. Reads and writes of resources go through the REST API itself, called in process
//! ([`api_get`], [`api_send`]), so the console shows exactly what the API answers and cannot
//! drift from it; what the API does not offer (rendered charts, example instances) has its own
//! function.

use leptos::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What the console shows about the server it talks to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// Anneal's version (the `server` crate's package version).
    pub version: String,
    /// The device predictions run on: `cuda` when libtorch sees a GPU, else `cpu`.
    pub device: String,
    /// How many CUDA devices libtorch sees.
    pub cuda_devices: i64,
    /// The data directory the server keeps its database and local storage in.
    pub data_dir: String,
}

/// Who is logged in to the console.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// The token's name.
    pub name: String,
    /// The token's role: `admin`, `developer`, `viewer` or `predictor`.
    pub role: String,
    /// False when the server runs with authentication off (then there is nothing to log out of).
    pub auth_enabled: bool,
}

/// An error the REST API answered: its status, message and the first field it names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    pub code: u16,
    pub status: String,
    pub message: String,
    /// `fieldViolations[0].field`, e.g. `job.trainingInput.pythonModule`.
    pub field: Option<String>,
    /// `fieldViolations[0].description`.
    pub description: Option<String>,
}

impl ApiError {
    /// Reads the API's error envelope (or a predict error body `{"error": "..."}`).
    pub fn from_body(code: u16, body: &Value) -> Self {
        let error = &body["error"];
        let violation = &error["details"][0]["fieldViolations"][0];
        Self {
            code,
            status: error["status"].as_str().unwrap_or("").to_owned(),
            message: error["message"].as_str().or_else(|| error.as_str()).unwrap_or("request failed").to_owned(),
            field: violation["field"].as_str().map(str::to_owned),
            description: violation["description"].as_str().map(str::to_owned),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.status.is_empty() {
            write!(f, "{} (HTTP {})", self.message, self.code)
        } else {
            write!(f, "{} ({})", self.message, self.status)
        }
    }
}

/// An API answer: the resource JSON, or the error the API gave.
pub type ApiResult = Result<Value, ApiError>;

/// One metric chart of a job: its tag and an SVG drawn on the server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Chart {
    pub tag: String,
    pub points: usize,
    pub svg: String,
}

/// Reads [`ServerInfo`] from the running server.
#[server]
pub async fn fetch_server_info() -> Result<ServerInfo, ServerFnError> {
    let (backend, request) = crate::backend::from_context()?;
    backend.server_info(&request).await.map_err(ServerFnError::new)
}

/// Reads who is logged in.
#[server]
pub async fn fetch_session() -> Result<SessionInfo, ServerFnError> {
    let (backend, request) = crate::backend::from_context()?;
    backend.session(&request).await.map_err(ServerFnError::new)
}

/// `GET /v1{path}` (a path under `/projects/`), answered by the REST API in process.
#[server]
pub async fn api_get(path: String) -> Result<ApiResult, ServerFnError> {
    let (backend, request) = crate::backend::from_context()?;
    backend.call_api(&request, "GET", path, None).await.map_err(ServerFnError::new)
}

/// `GET /v1{path}` read into its wire type (a [`crate::jobs::Job`], a page of them, ...). The
/// API's error, a failed call and an answer that is not a `T` each become the message to show.
pub async fn api_read<T: DeserializeOwned>(path: String) -> Result<T, String> {
    let answer = api_get(path.clone()).await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
    decode(&format!("GET /v1{path}"), answer)
}

/// The answer of `call` (`GET /v1/projects/p/jobs`) read into its wire type; one that does not fit
/// says which call and why.
pub fn decode<T: DeserializeOwned>(call: &str, answer: Value) -> Result<T, String> {
    serde_json::from_value(answer).map_err(|e| format!("The console cannot read the answer of {call}: {e}"))
}

/// `POST`, `PATCH` or `DELETE /v1{path}` with an optional JSON body, answered by the REST API in
/// process.
#[server]
pub async fn api_send(method: String, path: String, body: Option<String>) -> Result<ApiResult, ServerFnError> {
    let (backend, request) = crate::backend::from_context()?;
    let method = match method.as_str() {
        "POST" => "POST",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        other => return Err(ServerFnError::new(format!("method {other} is not allowed"))),
    };
    let body = match body {
        Some(text) => {
            Some(serde_json::from_str(&text).map_err(|e| ServerFnError::new(format!("the body is not JSON: {e}")))?)
        }
        None => None,
    };
    backend.call_api(&request, method, path, body).await.map_err(ServerFnError::new)
}

/// The job's metric series drawn as one chart per tag.
#[server]
pub async fn job_charts(project: String, job: String) -> Result<Vec<Chart>, ServerFnError> {
    let (backend, request) = crate::backend::from_context()?;
    backend.job_charts(&request, project, job).await.map_err(ServerFnError::new)
}

/// A JSON `instances` array matching the version's signature (zeros of the declared shapes), when
/// the version declares one.
#[server]
pub async fn example_instances(
    project: String,
    model: String,
    version: String,
) -> Result<Option<String>, ServerFnError> {
    let (backend, request) = crate::backend::from_context()?;
    backend.example_instances(&request, project, model, version).await.map_err(ServerFnError::new)
}
