//! Server functions the console calls, and the wire types they return.
//!
//! Each server function is thin: it takes the [`crate::backend::Backend`] from context, calls one
//! use case and returns its result. The types here are the console's contract with the server;
//! they are not the domain types of the `server` crate.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

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

/// Reads [`ServerInfo`] from the running server.
#[server]
pub async fn fetch_server_info() -> Result<ServerInfo, ServerFnError> {
    let backend = crate::backend::from_context()?;
    backend.server_info().await.map_err(ServerFnError::new)
}
