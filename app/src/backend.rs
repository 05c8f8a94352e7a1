//! The port through which server functions reach the server (server only).
//!
//! The `server` crate implements [`ConsoleBackend`] and provides a [`Backend`] in Leptos' context
//! for every request; server functions only look it up and call it.

use std::sync::Arc;

use leptos::prelude::{use_context, ServerFnError};

use crate::api::{ApiResult, Chart, ServerInfo};

/// What the console needs from the server.
#[async_trait::async_trait]
pub trait ConsoleBackend: Send + Sync + 'static {
    /// Describes the running server.
    async fn server_info(&self) -> Result<ServerInfo, String>;

    /// Calls the REST API in process: `method` on `/v1{path}` with an optional JSON body.
    async fn call_api(
        &self,
        method: &'static str,
        path: String,
        body: Option<serde_json::Value>,
    ) -> Result<ApiResult, String>;

    /// The job's metric series, one chart per tag.
    async fn job_charts(&self, project: String, job: String) -> Result<Vec<Chart>, String>;

    /// Example `instances` for a version with a declared signature.
    async fn example_instances(
        &self,
        project: String,
        model: String,
        version: String,
    ) -> Result<Option<String>, String>;
}

/// The shared handle put into Leptos' context.
pub type Backend = Arc<dyn ConsoleBackend>;

/// Looks up the backend handle the server provided for this request.
pub fn from_context() -> Result<Backend, ServerFnError> {
    use_context::<Backend>().ok_or_else(|| ServerFnError::new("the console backend is not available in this request"))
}
