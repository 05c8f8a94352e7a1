//! Use cases: the one place where Anneal decides things. The REST API, the console and the CLI
//! all call these, so their behaviour cannot drift apart.

pub mod auth;
mod batch;
pub mod filter;
mod health;
mod jobs;
pub mod limits;
mod models;
mod nodes;
mod operations;
pub mod paging;
mod predict;
mod projects;
mod scheduler;
mod tenancy;
mod tuning;
mod uploads;
mod versions;

use std::path::PathBuf;
use std::sync::Arc;

pub use batch::{prediction_plan, resolve_model_dir, ModelUnavailable};
pub use filter::Filter;
pub use health::{Check, Readiness};
pub use jobs::{training_plan, JobLogs, JobPage};
pub use limits::Limits;
pub use models::ModelPage;
pub use nodes::{Node, NodeView, VERSION_SYNC_EVERY};
pub use operations::OperationPage;
pub use paging::PageRequest;
pub use predict::{PredictFailure, PredictTarget};
pub use projects::ProjectConfig;
pub use versions::{Update, VersionPage, PYTORCH};

use crate::jobs::JobExecutor;
use crate::serving::{Accelerators, ModelHost};
use crate::storage::Storage;
use crate::store::Store;
use crate::tasks::Tasks;

/// The handle every surface holds: cheap to clone (one reference count: axum clones the state
/// of each layer a request passes through, about twenty times per request), shared by all
/// requests.
#[derive(Clone, Debug)]
pub struct Control(Arc<Shared>);

/// What a [`Control`] shares; its fields are reached through `Deref`.
#[derive(Debug)]
pub struct Shared {
    store: Store,
    storage: Storage,
    accelerators: Accelerators,
    data_dir: PathBuf,
    host: ModelHost,
    tasks: Tasks,
    executor: Arc<dyn JobExecutor>,
    /// Wakes the job scheduler (`control::scheduler`).
    scheduler: Arc<tokio::sync::Notify>,
    /// This node among the nodes sharing the database.
    node: Arc<Node>,
    growth: limits::Growth,
    auth: Arc<auth::AuthState>,
    /// Models' default versions, remembered for predictions.
    defaults: Arc<predict::DefaultVersions>,
    metrics_public: bool,
    /// Jobs this node stopped because it could not renew its lease (self-fencing), with the
    /// message they end with.
    fenced: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

/// The parts [`Control`] works with.
pub struct Parts {
    pub store: Store,
    pub storage: Storage,
    pub accelerators: Accelerators,
    pub data_dir: PathBuf,
    pub host: ModelHost,
    pub tasks: Tasks,
    /// The backend that runs jobs.
    pub executor: Arc<dyn JobExecutor>,
    /// This node.
    pub node: Node,
    /// The configured limits on growth (uploads, log followers).
    pub limits: Limits,
    /// Whether callers must authenticate (false only with `--no-auth` on loopback).
    pub auth_enabled: bool,
    /// Whether `/metrics` answers without a token (`metrics_public`).
    pub metrics_public: bool,
}

impl Control {
    /// Assembles the use cases over opened parts.
    pub fn new(parts: Parts) -> Self {
        let Parts {
            store,
            storage,
            accelerators,
            data_dir,
            host,
            tasks,
            executor,
            node,
            limits,
            auth_enabled,
            metrics_public,
        } = parts;
        let auth = Arc::new(auth::AuthState::new(auth_enabled));
        let growth = limits::Growth::new(limits);
        let scheduler = Arc::default();
        let node = Arc::new(node);
        let defaults = Arc::default();
        let shared = Shared {
            store,
            storage,
            accelerators,
            data_dir,
            host,
            tasks,
            executor,
            scheduler,
            node,
            growth,
            auth,
            defaults,
            metrics_public,
            fenced: std::sync::Mutex::default(),
        };
        Self(Arc::new(shared))
    }

    /// Cancelled when the server begins to shut down (for long-lived responses).
    pub fn shutdown_token(&self) -> tokio_util::sync::CancellationToken {
        self.tasks.shutdown_token()
    }

    /// What libtorch offers on this host.
    pub fn accelerators(&self) -> &Accelerators {
        &self.accelerators
    }

    /// The data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// Whether `/metrics` answers without a token (`metrics_public`).
    pub fn metrics_public(&self) -> bool {
        self.metrics_public
    }

    /// The configured limits on growth.
    pub fn limits(&self) -> &Limits {
        &self.growth.limits
    }

    /// A permit for one `logs?follow=true` stream of `project` by token `token`, held while it
    /// is open; RESOURCE_EXHAUSTED when the token's, the project's or the server's share of
    /// `max_log_followers` is taken ([`limits::Growth::follower`]).
    pub fn log_follower(&self, token: &str, project: &str) -> crate::Result<limits::Follower> {
        self.growth.follower(token, project)
    }
}

impl std::ops::Deref for Control {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// A mutex's guard, also after a panic elsewhere poisoned it (the data is plain values).
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
