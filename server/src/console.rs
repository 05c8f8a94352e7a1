//! The web console's server side: renders the Leptos app, serves its built assets (WASM, JS, CSS),
//! and implements the console's backend port on top of [`Control`].
//!
//! The assets are found where `make build` (cargo-leptos) puts them relative to the executable, so
//! `target/release/anneal` serves its console from any working directory: the configured
//! `site_root` if set, else `<exe dir>/site`, else `<exe dir>/../site` (that is `target/site`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use app::api::ServerInfo;
use app::backend::{Backend, ConsoleBackend};
use axum::Router;
use leptos::prelude::*;
use leptos_axum::{generate_route_list, LeptosRoutes};

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
        let backend: Backend = Arc::new(ConsoleUseCases { control });
        let routes = generate_route_list(app::App);
        let options = self.options.clone();
        let shell = move || app::shell(options.clone());
        let context = move || provide_context(backend.clone());
        Router::new()
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

/// The console's backend port, implemented by calling use cases.
struct ConsoleUseCases {
    control: Control,
}

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
}
