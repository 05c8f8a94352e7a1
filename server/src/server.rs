//! Start-up and shutdown of `anneal serve`.
//!
//! Start-up opens every part in order and stops at the first failure with one clear message:
//! data directory → database (migrations applied) → storage → libtorch → listener. Shutdown (on
//! SIGINT or SIGTERM) stops accepting connections, lets in-flight requests finish, then cancels
//! and waits for background tasks, within the configured grace period.

use std::net::SocketAddr;
use std::path::Path;

use tokio::net::TcpListener;

use crate::config::{Config, ExecutorKind};
use crate::console::Console;
use crate::control::{Control, Parts};
use crate::executor::{ExecutorConfig, LocalExecutor, RayConfig, RayExecutor, EVENT_BUFFER};
use crate::serving::{Accelerators, ModelHost};
use crate::storage::Storage;
use crate::store::Store;
use crate::tasks::Tasks;

/// Why the server could not start. Each variant renders as one line for the terminal.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data directory {path} is not usable: {reason}")]
    DataDir { path: String, reason: String },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Storage(String),
    #[error(
        "refusing to serve {addr} without authentication: --no-auth (auth = false) is allowed only on a loopback address such as 127.0.0.1; remove it, or bind 127.0.0.1"
    )]
    InsecureBind { addr: SocketAddr },
    #[error("cannot set up authentication: {0}")]
    Auth(String),
    /// This node's name is not usable (a bad `node_id`, or its file cannot be kept).
    #[error("cannot name this node: {0}")]
    Node(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

/// A server that has opened its parts and bound its listener but is not yet serving.
pub struct Server {
    listener: TcpListener,
    router: axum::Router,
    store: Store,
    host: ModelHost,
    tasks: Tasks,
    config: Config,
    bootstrap: crate::control::auth::Bootstrap,
}

impl Server {
    /// Opens every part and binds the listener.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        // The recorder goes first so that every metric recorded during start-up is kept.
        let metrics = crate::telemetry::metrics_handle();
        if !config.auth && !config.addr.ip().is_loopback() {
            return Err(StartError::InsecureBind { addr: config.addr });
        }
        prepare_data_dir(&config.data_dir)?;
        let store = Store::open(&config.database_url(), config.database_max_connections).await?;
        // User URIs may name the data dir (as always), the storage folder (shared by the nodes
        // of one database when `storage_dir` is set) and the configured roots.
        let roots: Vec<std::path::PathBuf> =
            std::iter::once(config.data_dir.clone()).chain(config.storage_roots.iter().cloned()).collect();
        let buckets = crate::storage::Buckets::open(&config.buckets, &config.aws)
            .map_err(|e| StartError::Storage(e.to_string()))?;
        let artifacts = config
            .artifacts_uri
            .as_deref()
            .map(|uri| buckets.confine("artifacts_uri", uri))
            .transpose()
            .map_err(|e| StartError::Storage(e.to_string()))?;
        let storage = Storage::open_with_roots(&config.storage_root(), &roots)
            .map_err(|e| StartError::Storage(e.to_string()))?
            .with_buckets(buckets)
            .with_artifacts(artifacts);
        // User code runs confined, and as root as unprivileged users of its own (see sandbox).
        let sandbox = crate::sandbox::Sandbox::set_up(&config.sandbox_settings(), &store)
            .await
            .map_err(|e| StartError::Storage(format!("cannot set up the sandbox for user code: {e}")))?;
        let accelerators = Accelerators::detect().await;
        metrics::gauge!("anneal_cuda_devices").set(accelerators.cuda_devices as f64);
        tracing::info!(
            cuda_devices = accelerators.cuda_devices,
            device = accelerators.device_label(),
            "libtorch loaded"
        );

        let browser = crate::http::browser::BrowserPolicy::from_config(&config)
            .map_err(|e| StartError::Storage(format!("invalid configuration: {e}")))?;
        let console = Console::new(config.site_root.as_deref(), browser);
        let (site_root, found) = console.site_root();
        if found {
            tracing::info!(site_root, "console assets found");
        } else {
            tracing::warn!(
                site_root,
                "console assets not found: pages render but do not become interactive; run `make build`"
            );
        }

        let tasks = Tasks::new();
        // Python prediction workers run in their project's sandbox cell, as its trainers do.
        let sandbox = std::sync::Arc::new(sandbox);
        let host = ModelHost::new(config.serving_options())
            .with_sandbox(sandbox.clone())
            .with_max_answer_bytes(config.max_answer_bytes());
        let (events, executor_events) = tokio::sync::mpsc::channel(EVENT_BUFFER);
        let local = LocalExecutor::new(
            storage.clone(),
            ExecutorConfig {
                python: config.runtime_python(),
                slots: config.training_slots.max(1),
                gpus: config.gpu_count(),
                kill_grace: std::time::Duration::from_secs(config.kill_grace_secs),
                max_log_line: config.max_log_line_bytes,
                sandbox: sandbox.clone(),
            },
            tasks.clone(),
            events.clone(),
        );
        let executor: std::sync::Arc<dyn crate::jobs::JobExecutor> = match config.executor {
            ExecutorKind::Local => std::sync::Arc::new(local),
            ExecutorKind::Ray => {
                let address = config.ray_address.clone().unwrap_or_default();
                tracing::info!(address, token = config.ray_token.is_some(), "training jobs run on Ray");
                std::sync::Arc::new(RayExecutor::new(
                    storage.clone(),
                    RayConfig {
                        address,
                        token: config.ray_token.clone(),
                        python: config.ray_python.clone(),
                        placement_timeout: std::time::Duration::from_secs(config.ray_placement_timeout_secs),
                        slots: config.training_slots.max(1),
                        gpus: config.gpu_devices.unwrap_or(1 << 16),
                        kill_grace: std::time::Duration::from_secs(config.kill_grace_secs),
                        max_log_line: config.max_log_line_bytes,
                        anneal_binary: config.ray_anneal_binary.clone().unwrap_or_else(|| {
                            std::env::current_exe().unwrap_or_else(|_| std::path::PathBuf::from("anneal"))
                        }),
                    },
                    local,
                    tasks.clone(),
                    events,
                ))
            }
        };
        let node = crate::control::Node::open(
            config.node_id.as_deref(),
            &config.data_dir,
            std::time::Duration::from_secs(config.node_lease_secs),
        )
        .map_err(|e| StartError::Node(e.to_string()))?
        .with_kill_grace(std::time::Duration::from_secs(config.kill_grace_secs));
        let control = Control::new(Parts {
            store: store.clone(),
            storage,
            accelerators,
            data_dir: config.data_dir.clone(),
            host: host.clone(),
            tasks: tasks.clone(),
            executor,
            node,
            limits: config.limits(),
            auth_enabled: config.auth,
            metrics_public: config.metrics_public,
        });
        let bootstrap = control.bootstrap_auth().await.map_err(|e| StartError::Auth(e.to_string()))?;
        if let Some(file) = &bootstrap.created {
            tracing::info!(file = %file.display(), "created the admin token (readable by this user only)");
        }
        if !config.auth {
            tracing::warn!(
                addr = %config.addr,
                "authentication is OFF (--no-auth): every caller on this machine is an admin"
            );
        }
        control.watch_serving_failures();
        control.follow_revocations();
        control.node().set_address(config.addr.to_string());
        control.start_node().await.map_err(|e| StartError::Storage(format!("cannot register this node: {e}")))?;
        control
            .start_jobs(executor_events)
            .await
            .map_err(|e| StartError::Storage(format!("cannot start the job scheduler: {e}")))?;
        // Recovery finishes before the listener serves; reloading models runs in the background
        // so the server answers (health, API) at once. A prediction for a version not loaded yet
        // says so.
        let ready = control
            .recover_versions()
            .await
            .map_err(|e| StartError::Storage(format!("cannot recover versions: {e}")))?;
        let reloading = control.clone();
        tasks.spawn("reload-versions", move |token| async move {
            tokio::select! {
                result = reloading.reload_versions(ready) => if let Err(e) = result {
                    tracing::error!(error = %e, "reloading versions after start failed");
                },
                () = token.cancelled() => {}
            }
        });
        let listener =
            TcpListener::bind(config.addr).await.map_err(|source| StartError::Bind { addr: config.addr, source })?;
        if let Ok(bound) = listener.local_addr() {
            control.node().set_address(bound.to_string());
        }
        let router = crate::http::app(control, console, metrics, config.max_request_bytes);
        Ok(Self { listener, router, store, host, tasks, config, bootstrap })
    }

    /// The address the listener is bound to (the real port when the configured port was 0).
    pub fn local_addr(&self) -> Result<SocketAddr, StartError> {
        self.listener.local_addr().map_err(StartError::Serve)
    }

    /// What to tell the operator at start, after the address line: where the admin token is and
    /// the one-time console login link (as Jupyter prints one), or that authentication is off.
    pub fn login_hints(&self, addr: SocketAddr) -> Vec<String> {
        if !self.config.auth {
            return vec!["Authentication is off (--no-auth): anyone on this machine can use this server.".into()];
        }
        let file = self.config.data_dir.join(crate::auth::ADMIN_TOKEN_FILE);
        let mut lines = Vec::new();
        if let Some(code) = &self.bootstrap.login_code {
            lines.push(format!("Admin token: {} (the CLI on this machine finds it by itself)", file.display()));
            lines.push(format!("Log in to the console (this link works once): http://{addr}/login?code={code}"));
        } else {
            lines.push(format!("Log in to the console with a token at http://{addr}/login"));
        }
        lines
    }

    /// Serves until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn run(self) -> Result<(), StartError> {
        let Self { listener, router, store, host, tasks, config, .. } = self;
        let shutdown = tasks.shutdown_token();
        let signal_token = shutdown.clone();
        // Registered before the server answers anything: a signal that came before its handler
        // would end the process at once instead of shutting it down.
        let signals = StopSignals::register();
        tasks.spawn("signals", move |token| async move {
            tokio::select! {
                () = signals.wait() => signal_token.cancel(),
                () = token.cancelled() => {}
            }
        });

        let grace = config.shutdown_grace();
        let drained = shutdown.clone();
        let serve = axum::serve(listener, router).with_graceful_shutdown(async move { drained.cancelled().await });
        let server = tokio::spawn(async move { serve.await });
        shutdown.cancelled().await;
        tracing::info!(grace_secs = grace.as_secs(), "shutting down: draining in-flight requests");

        match tokio::time::timeout(grace, server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => return Err(StartError::Serve(e)),
            Ok(Err(join)) => return Err(StartError::Serve(std::io::Error::other(join))),
            Err(_) => {
                tracing::warn!("requests still in flight after the grace period; closing them")
            }
        }
        if !tasks.shutdown(grace).await {
            tracing::warn!("background tasks still running after the grace period");
        }
        host.shutdown().await;
        store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Creates the data directory if needed and proves it is writable, so a bad `--data-dir` fails
/// here with its own message rather than later inside SQLite.
fn prepare_data_dir(dir: &Path) -> Result<(), StartError> {
    let fail = |reason: String| StartError::DataDir { path: dir.display().to_string(), reason };
    std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
    let probe = dir.join(".anneal-write-probe");
    std::fs::write(&probe, b"").map_err(|e| fail(format!("not writable: {e}")))?;
    std::fs::remove_file(&probe).map_err(|e| fail(format!("not writable: {e}")))?;
    Ok(())
}

/// SIGINT and SIGTERM, each `None` when it cannot be listened for.
struct StopSignals {
    interrupt: Option<tokio::signal::unix::Signal>,
    terminate: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    fn register() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        Self { interrupt: signal(SignalKind::interrupt()).ok(), terminate: signal(SignalKind::terminate()).ok() }
    }

    /// Until either arrives.
    async fn wait(mut self) {
        async fn next(signal: Option<&mut tokio::signal::unix::Signal>) {
            match signal {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            () = next(self.interrupt.as_mut()) => tracing::info!("received SIGINT"),
            () = next(self.terminate.as_mut()) => tracing::info!("received SIGTERM"),
        }
    }
}
