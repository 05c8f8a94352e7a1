//! The port through which server functions reach server-side use cases (server only).
//!
//! The `server` crate implements [`ConsoleBackend`] on top of its control layer and provides an
//! [`Backend`] in Leptos' context for every request; server functions only look it up and call it.

use std::sync::Arc;

use leptos::prelude::{use_context, ServerFnError};

use crate::api::ServerInfo;

/// The use cases the console needs, implemented by the server.
#[async_trait::async_trait]
pub trait ConsoleBackend: Send + Sync + 'static {
    /// Describes the running server.
    async fn server_info(&self) -> Result<ServerInfo, String>;
}

/// The shared handle put into Leptos' context.
pub type Backend = Arc<dyn ConsoleBackend>;

/// Looks up the backend handle the server provided for this request.
pub fn from_context() -> Result<Backend, ServerFnError> {
    use_context::<Backend>().ok_or_else(|| ServerFnError::new("the console backend is not available in this request"))
}
