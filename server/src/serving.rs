//! Model serving: the only module that touches libtorch (through `tch`).
//!
//! Tensors never run on the async runtime. Each served model belongs to its own worker threads
//! fed by a bounded queue ([`model`]); async code only enqueues a request and awaits its reply.
//! [`ModelHost`] keeps the models being served, by version name.
//!
//! Loading fails with a [`LoadError`] that says what is wrong with the model's files (or that
//! the host could not start it; `crate::error` decides which code each is to a client); a
//! prediction fails with a [`PredictError`].

pub mod batch;
pub mod instances;
pub mod model;
pub mod signature;
mod tensors;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use serde::Serialize;

pub use instances::{Instances, RequestError};
pub use model::{ForwardError, LoadError, PredictError, ServedModel, ServingOptions, MODEL_FILE};
pub use signature::{Signature, SignatureError, SIGNATURE_FILE};
pub use tensors::OutputError;

/// What libtorch offers on this host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Accelerators {
    /// The number of CUDA devices libtorch can use (0 without a GPU or CUDA driver).
    pub cuda_devices: i64,
}

impl Accelerators {
    /// Asks libtorch which devices it can use. This loads libtorch's CUDA runtime, which takes a
    /// moment, so it runs on a blocking thread.
    pub async fn detect() -> Self {
        let cuda_devices =
            tokio::task::spawn_blocking(|| if tch::Cuda::is_available() { tch::Cuda::device_count() } else { 0 })
                .await
                .unwrap_or(0);
        Self { cuda_devices }
    }

    /// `cuda` when a GPU is usable, else `cpu`: where predictions run.
    pub fn device_label(&self) -> &'static str {
        if self.cuda_devices > 0 {
            "cuda"
        } else {
            "cpu"
        }
    }
}

/// What one version asks of its serving, over the host's defaults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VersionSettings {
    pub workers: Option<usize>,
    pub intra_op_threads: Option<i32>,
    /// Run on CUDA when the host has it.
    pub use_cuda: bool,
}

/// The models being served, by the full name of their version.
#[derive(Clone, Debug, Default)]
pub struct ModelHost {
    models: Arc<RwLock<HashMap<String, Arc<ServedModel>>>>,
    options: ServingOptions,
}

impl ModelHost {
    /// An empty host serving with `options`.
    pub fn new(options: ServingOptions) -> Self {
        Self { models: Arc::default(), options }
    }

    /// Loads the model in `dir` and serves it as `key`, replacing any model served as `key`.
    /// `workers`, `intra_op_threads` and `use_cuda` override the host's defaults when given.
    pub async fn load(&self, key: &str, dir: &Path, settings: VersionSettings) -> Result<(), LoadError> {
        let dir = dir.to_path_buf();
        let mut options = self.options.clone();
        if let Some(workers) = settings.workers {
            options.workers = workers;
        }
        if let Some(threads) = settings.intra_op_threads {
            options.intra_op_threads = threads;
        }
        options.use_cuda = settings.use_cuda;
        let name = key.to_owned();
        let model = tokio::task::spawn_blocking(move || ServedModel::load(&name, &dir, &options))
            .await
            .map_err(LoadError::Stopped)??;
        let previous = self.write().insert(key.to_owned(), Arc::new(model));
        drop(previous);
        Ok(())
    }

    /// The model served as `key`.
    pub fn get(&self, key: &str) -> Option<Arc<ServedModel>> {
        self.models.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(key).cloned()
    }

    /// The keys of every model served.
    pub fn keys(&self) -> Vec<String> {
        self.models.read().unwrap_or_else(std::sync::PoisonError::into_inner).keys().cloned().collect()
    }

    /// Stops serving `key`; its workers finish queued requests, then end.
    pub fn unload(&self, key: &str) {
        self.write().remove(key);
    }

    /// Stops serving every model and waits for their workers (on a blocking thread).
    pub async fn shutdown(&self) {
        let models: Vec<Arc<ServedModel>> = self.write().drain().map(|(_, m)| m).collect();
        let _ = tokio::task::spawn_blocking(move || {
            for model in models {
                if let Ok(model) = Arc::try_unwrap(model) {
                    model.shutdown();
                }
            }
        })
        .await;
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<ServedModel>>> {
        self.models.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
