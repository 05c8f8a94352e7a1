//! The port through which server functions reach the server (server only).
//!
//! The `server` crate implements [`ConsoleBackend`] and provides a [`Backend`] in Leptos' context
//! for every request; server functions only look it up and call it, passing the request they
//! serve (its extensions carry the logged-in caller, which the server put there), so every call
//! acts as the logged-in identity with its role.

use std::sync::Arc;

use http::request::Parts;
use leptos::prelude::{use_context, ServerFnError};

use crate::api::{ApiResult, Chart, ServerInfo, SessionInfo};

/// Why the server could not answer a server function: a message the console shows as it is. The
/// server fills it from its own error type and puts nothing internal in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendError {
    pub message: String,
}

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BackendError {}

/// What the console needs from the server.
#[async_trait::async_trait]
pub trait ConsoleBackend: Send + Sync + 'static {
    /// Describes the running server.
    async fn server_info(&self, request: &Parts) -> Result<ServerInfo, BackendError>;

    /// Who is logged in, for the console's frame.
    async fn session(&self, request: &Parts) -> Result<SessionInfo, BackendError>;

    /// Calls the REST API in process as the request's caller: `method` on `/v1{path}` with an
    /// optional JSON body.
    async fn call_api(
        &self,
        request: &Parts,
        method: &'static str,
        path: String,
        body: Option<serde_json::Value>,
    ) -> Result<ApiResult, BackendError>;

    /// The job's metric series, one chart per tag.
    async fn job_charts(&self, request: &Parts, project: String, job: String) -> Result<Vec<Chart>, BackendError>;

    /// Example `instances` for a version with a declared signature.
    async fn example_instances(
        &self,
        request: &Parts,
        project: String,
        model: String,
        version: String,
    ) -> Result<Option<String>, BackendError>;
}

/// The shared handle put into Leptos' context.
pub type Backend = Arc<dyn ConsoleBackend>;

/// Looks up the backend handle the server provided for this request, and the request itself.
pub fn from_context() -> Result<(Backend, Parts), ServerFnError> {
    let backend = use_context::<Backend>()
        .ok_or_else(|| ServerFnError::new("the console backend is not available in this request"))?;
    let request = use_context::<Parts>().ok_or_else(|| ServerFnError::new("the request is not available"))?;
    Ok((backend, request))
}
