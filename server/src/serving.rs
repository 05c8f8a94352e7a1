//! Model serving: the only module that touches libtorch (through `tch`), and the one that runs
//! Python models.
//!
//! Tensors never run on the async runtime. Each served TorchScript model belongs to its own
//! worker threads fed by a bounded queue ([`model`]); scikit-learn, XGBoost, TensorFlow and custom
//! prediction routines are served by a pool of Python worker processes fed the same way
//! ([`python`]). Async code only enqueues a request and awaits its reply. [`ModelHost`] keeps the
//! models being served, by version name, and reports a Python pool that gave up
//! ([`ServingFailure`]).
//!
//! Loading fails with a [`LoadError`] that says what is wrong with the model's files (or that
//! the host could not start it; `crate::error` decides which code each is to a client); a
//! prediction fails with a [`PredictError`].

pub mod batch;
mod exits;
pub mod instances;
pub mod model;
pub mod process;
pub mod python;
pub mod signature;
mod tensors;
pub mod wire;
pub mod worker;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;

pub use instances::{Instances, RequestError};
pub use model::{ForwardError, LoadError, PredictError, ServedModel, ServingOptions, TorchSpec, MODEL_FILE};
pub use python::{PythonModel, Ready, RoutineError};
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

/// The framework names of the versions Anneal serves (`Version.framework`).
pub mod frameworks {
    pub const PYTORCH: &str = "PYTORCH";
    pub const TENSORFLOW: &str = "TENSORFLOW";
    pub const SCIKIT_LEARN: &str = "SCIKIT_LEARN";
    pub const XGBOOST: &str = "XGBOOST";
}

/// The folder, inside a version's stored model directory, that its `packageUris` are installed
/// into (once, at creation).
pub const PACKAGES_DIR: &str = ".anneal-packages";

/// The Python framework that serves a model directory, by its files (ML Engine's rules), or
/// `None` for a TorchScript `model.pt` or no model file. A pickled XGBoost object in
/// `model.joblib`/`model.pkl` is served by the SCIKIT_LEARN worker as XGBoost.
pub fn python_framework(dir: &Path) -> Option<&'static str> {
    if dir.join(MODEL_FILE).is_file() {
        return None;
    }
    if dir.join("saved_model.pb").is_file() || dir.join("saved_model.pbtxt").is_file() {
        return Some(frameworks::TENSORFLOW);
    }
    if dir.join("model.bst").is_file() {
        return Some(frameworks::XGBOOST);
    }
    if dir.join("model.joblib").is_file() || dir.join("model.pkl").is_file() {
        return Some(frameworks::SCIKIT_LEARN);
    }
    None
}

/// A Python worker's process settings for `dir` served as `framework` (no custom routine).
pub fn python_spec(python: &Path, dir: &Path, framework: &str, threads: i32) -> python::PythonSpec {
    python::PythonSpec {
        python: python.to_path_buf(),
        model_dir: dir.to_path_buf(),
        framework: framework.to_owned(),
        prediction_class: None,
        python_path: Vec::new(),
        threads,
        load_timeout: PYTHON_LOAD_TIMEOUT,
        predict_timeout: PYTHON_PREDICT_TIMEOUT,
        max_answer_bytes: PYTHON_PASS_MAX_ANSWER_BYTES,
        cell: None,
    }
}

/// How long a Python worker may take to load a model.
const PYTHON_LOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);
/// How long one pass of a Python model may take before its worker is stopped.
const PYTHON_PREDICT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);
/// The largest answer of one pass of a batch job (`batchSize` lines) or of `anneal local
/// predict`, which no request body limit bounds: it stops a runaway length prefix, not a model.
const PYTHON_PASS_MAX_ANSWER_BYTES: usize = 256 << 20;

/// What one version asks of its serving, over the host's defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VersionSettings {
    pub workers: Option<usize>,
    pub intra_op_threads: Option<i32>,
    /// Run on CUDA when the host has it.
    pub use_cuda: bool,
    /// `Version.framework`; empty is PYTORCH (versions stored before other frameworks).
    pub framework: String,
    /// A custom prediction routine's `module.Class`.
    pub prediction_class: Option<String>,
    /// Its packages (sdists, wheels), installed into the model directory's [`PACKAGES_DIR`].
    pub packages: Vec<std::path::PathBuf>,
    /// The version's project: its Python workers run in its sandbox cell ([`crate::sandbox`]).
    pub project: String,
}

impl VersionSettings {
    /// Whether Python serves this version (every framework but PyTorch, and custom routines).
    pub fn is_python(&self) -> bool {
        self.prediction_class.is_some() || !matches!(self.framework.as_str(), "" | frameworks::PYTORCH)
    }
}

/// A model being served: TorchScript in process, or Python worker processes.
#[derive(Debug)]
pub enum Served {
    Torch(ServedModel),
    Python(PythonModel),
}

impl Served {
    /// Predicts the instances of a request, one prediction per instance, in order.
    pub async fn predict_instances(&self, instances: Instances) -> Result<Vec<Value>, PredictError> {
        match self {
            Self::Torch(model) => model.predict_instances(instances).await,
            Self::Python(model) => model.predict_instances(instances).await,
        }
    }

    /// Predicts `instances`, one prediction per instance, in order.
    pub async fn predict(&self, instances: &[Value]) -> Result<Vec<Value>, PredictError> {
        match self {
            Self::Torch(model) => model.predict(instances).await,
            Self::Python(model) => model.predict_instances(Instances::from_values(instances.to_vec())).await,
        }
    }

    /// The TorchScript model, if it is one.
    pub fn torch(&self) -> Option<&ServedModel> {
        match self {
            Self::Torch(model) => Some(model),
            Self::Python(_) => None,
        }
    }

    fn shutdown(self) {
        match self {
            Self::Torch(model) => model.shutdown(),
            Self::Python(model) => model.shutdown(),
        }
    }
}

/// A Python model whose workers kept crashing: it is not served any more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServingFailure {
    /// The key it was served as.
    pub key: String,
    /// The last error, for the version's `errorMessage`.
    pub message: String,
}

/// The models being served, by the full name of their version.
#[derive(Clone, Debug)]
pub struct ModelHost {
    models: Arc<RwLock<HashMap<String, (u64, Arc<Served>)>>>,
    options: ServingOptions,
    loads: Arc<AtomicU64>,
    failures: mpsc::UnboundedSender<ServingFailure>,
    failures_out: Arc<Mutex<Option<mpsc::UnboundedReceiver<ServingFailure>>>>,
    /// Where Python workers run.
    sandbox: Arc<crate::sandbox::Sandbox>,
    /// The largest answer a Python worker may send for one request.
    max_answer_bytes: usize,
}

impl Default for ModelHost {
    fn default() -> Self {
        Self::new(ServingOptions::default())
    }
}

impl ModelHost {
    /// An empty host serving with `options`.
    pub fn new(options: ServingOptions) -> Self {
        let (failures, receiver) = mpsc::unbounded_channel();
        Self {
            models: Arc::default(),
            options,
            loads: Arc::default(),
            failures,
            failures_out: Arc::new(Mutex::new(Some(receiver))),
            sandbox: Arc::new(crate::sandbox::Sandbox::off()),
            max_answer_bytes: python::DEFAULT_MAX_ANSWER_BYTES,
        }
    }

    /// The host with Python workers' answers bounded at `bytes` per request (the
    /// `predict_max_answer_bytes` setting; default [`python::DEFAULT_MAX_ANSWER_BYTES`]).
    pub fn with_max_answer_bytes(mut self, bytes: usize) -> Self {
        self.max_answer_bytes = bytes.max(1);
        self
    }

    /// The host with Python workers run in `sandbox`, in their project's cell, as that project's
    /// trainers are.
    pub fn with_sandbox(mut self, sandbox: Arc<crate::sandbox::Sandbox>) -> Self {
        self.sandbox = sandbox;
        self
    }

    /// The Python models that gave up serving (once; `None` after the first call).
    pub fn take_failures(&self) -> Option<mpsc::UnboundedReceiver<ServingFailure>> {
        self.failures_out.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }

    /// Loads the model in `dir` and serves it as `key`, replacing any model served as `key`.
    /// `workers`, `intra_op_threads` and `use_cuda` override the host's defaults when given;
    /// the framework decides what serves it. Returns what a Python model's workers said.
    pub async fn load(&self, key: &str, dir: &Path, settings: VersionSettings) -> Result<Option<Ready>, LoadError> {
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
        let generation = self.loads.fetch_add(1, Ordering::Relaxed);
        let max_answer_bytes = self.max_answer_bytes;
        let model = if settings.is_python() {
            let host = self.clone();
            let on_failed: python::OnFailed = Box::new(move |message| host.failed(generation, &name, message));
            let key = key.to_owned();
            let cell =
                self.sandbox.cell(&settings.project, None).await.map_err(|e| LoadError::Isolation(e.to_string()))?;
            tokio::task::spawn_blocking(move || {
                let packages = dir.join(PACKAGES_DIR);
                python::install_packages(&options.python, &settings.packages, &packages, &cell)?;
                let spec = python::PythonSpec {
                    python: options.python.clone(),
                    model_dir: dir.clone(),
                    framework: settings.framework.clone(),
                    prediction_class: settings.prediction_class.clone(),
                    python_path: if packages.is_dir() { vec![packages] } else { Vec::new() },
                    threads: options.intra_op_threads,
                    load_timeout: PYTHON_LOAD_TIMEOUT,
                    predict_timeout: PYTHON_PREDICT_TIMEOUT,
                    max_answer_bytes,
                    cell: Some(cell),
                };
                PythonModel::load(&key, spec, &options, on_failed).map(Served::Python)
            })
            .await
            .map_err(LoadError::Stopped)??
        } else {
            let cell =
                self.sandbox.cell(&settings.project, None).await.map_err(|e| LoadError::Isolation(e.to_string()))?;
            tokio::task::spawn_blocking(move || {
                let spec = TorchSpec::new(&dir, &options).in_cell(cell).with_max_answer_bytes(max_answer_bytes);
                ServedModel::load(&name, spec, &options).map(Served::Torch)
            })
            .await
            .map_err(LoadError::Stopped)??
        };
        let ready = match &model {
            Served::Python(python) => Some(python.ready().clone()),
            Served::Torch(_) => None,
        };
        let previous = self.write().insert(key.to_owned(), (generation, Arc::new(model)));
        drop(previous);
        Ok(ready)
    }

    /// A Python model loaded as `generation` gave up: it stops being served (unless another
    /// load replaced it) and is reported.
    fn failed(&self, generation: u64, key: &str, message: String) {
        let removed = {
            let mut models = self.write();
            match models.get(key) {
                Some((loaded, _)) if *loaded == generation => models.remove(key),
                _ => None,
            }
        };
        if removed.is_some() {
            let _ = self.failures.send(ServingFailure { key: key.to_owned(), message });
        }
    }

    /// The model served as `key`.
    pub fn get(&self, key: &str) -> Option<Arc<Served>> {
        self.models.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(key).map(|(_, m)| m.clone())
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
        let models: Vec<Arc<Served>> = self.write().drain().map(|(_, (_, m))| m).collect();
        let _ = tokio::task::spawn_blocking(move || {
            for model in models {
                if let Ok(model) = Arc::try_unwrap(model) {
                    model.shutdown();
                }
            }
        })
        .await;
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, (u64, Arc<Served>)>> {
        self.models.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
