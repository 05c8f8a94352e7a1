//! Models served by Python: scikit-learn, XGBoost, TensorFlow SavedModels and custom prediction
//! routines. Each version is served by a pool of long-lived worker processes of the runtime
//! Python running `server/python/anneal_predictor.py` (embedded in the binary, run with `-c`), one
//! per `manualScaling.nodes`.
//!
//! Requests reach the pool through the same kind of bounded queue as TorchScript models (a full
//! queue answers [`PredictError::Overloaded`] at once). Each worker thread owns one process: it
//! takes a request, gathers more of the same layout up to `max_batch_size` rows, sends them over
//! the process's stdin as one frame and reads one answer frame from its stdout (frames: a 4-byte
//! little-endian length and the bytes; the file's docstring has the protocol). Equally shaped
//! number lists travel as raw float64, anything else as JSON. A merged pass that the model
//! refuses is retried per request, so one bad request cannot fail its neighbours; custom
//! prediction routines get each request's instances alone, as on ML Engine.
//!
//! An answer frame is read as it arrives, never past `max_answer_bytes` (per request of the
//! pass): a longer one (user code can write to the protocol's pipe) fails its requests with
//! `INVALID_OUTPUTS`, and so does one that is not the protocol's JSON; either way the stream is out
//! of step, so the process is stopped and started again. Non-finite numbers travel as protobuf's
//! JSON mapping writes them: the strings `"NaN"`, `"Infinity"` and `"-Infinity"`.
//!
//! A process that exits (or outlives `predict_timeout` on one pass, and is killed) fails the
//! requests it had with [`PredictError::Crashed`] and is started again, after a pause that grows
//! while its passes keep failing ([`restart_pause`]), so a model that crashes on every request
//! does not spin. What one caller sent never fails the version: only starting a process counts
//! against it. A pool whose processes fail to start again [`MAX_START_FAILURES`] times in a row
//! within [`START_FAILURE_WINDOW`] gives up: it answers every request with
//! [`PredictError::Unavailable`] and reports the last error through its `on_failed` callback, so
//! the version goes FAILED. All of this runs on the pool's own threads; async code only enqueues
//! a request and awaits its reply.

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::oneshot;

use super::exits::{self, Tail};
use super::instances::{Instances, Raw};
use super::model::{LoadError, ModelMetrics, PredictError, ServingOptions};
use crate::sandbox::Cell;

/// The worker's Python source, run with `python -c`.
pub const PREDICTOR_SOURCE: &str = include_str!("../../python/anneal_predictor.py");

/// Failed starts in a row (within [`START_FAILURE_WINDOW`]) after which a pool stops restarting
/// its processes and the version goes FAILED. A process that dies during a pass does not count:
/// that is what a request did, not whether the model can be served.
pub const MAX_START_FAILURES: usize = 3;
/// See [`MAX_START_FAILURES`].
pub const START_FAILURE_WINDOW: Duration = Duration::from_secs(120);

/// The pause before a worker starts its process again grows with the processes it lost within
/// this window ([`restart_pause`]).
const RESTART_WINDOW: Duration = Duration::from_secs(60);
/// The pause after the second loss within [`RESTART_WINDOW`]; it doubles with each further one.
const RESTART_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause before a restart.
const MAX_RESTART_PAUSE: Duration = Duration::from_secs(5);

/// The default bound on one request's answer from a worker process
/// ([`PythonSpec::max_answer_bytes`]): four times the default request body limit
/// (`max_request_bytes`, 1.5 MiB).
pub const DEFAULT_MAX_ANSWER_BYTES: usize = 4 * 1_572_864;

/// An error of the model or of user code, with ML Engine's prediction error codes
/// (`FAILED_TO_LOAD_MODEL` 0, `INVALID_INPUTS` 1, `FAILED_TO_RUN_MODEL` 2, `INVALID_OUTPUTS` 3,
/// `INVALID_USER_CODE` 4), shown as ML Engine shows them.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, thiserror::Error)]
#[error("{message}: {detail} (Error code: {code})")]
pub struct RoutineError {
    pub code: i64,
    pub message: String,
    pub detail: String,
}

impl RoutineError {
    /// `FAILED_TO_LOAD_MODEL` with `detail`.
    pub fn failed_to_load(detail: impl Into<String>) -> Self {
        Self { code: 0, message: "Failed to load model".into(), detail: detail.into() }
    }
}

/// What starts a worker process.
#[derive(Clone, Debug)]
pub struct PythonSpec {
    /// The runtime Python.
    pub python: PathBuf,
    /// The version's stored model directory.
    pub model_dir: PathBuf,
    /// `SCIKIT_LEARN`, `XGBOOST` or `TENSORFLOW`; ignored with a prediction class.
    pub framework: String,
    /// `module.Class` of a custom prediction routine.
    pub prediction_class: Option<String>,
    /// Folders put on `PYTHONPATH` (the version's installed packages).
    pub python_path: Vec<PathBuf>,
    /// Threads of numerical libraries per process (OpenMP, BLAS, TensorFlow).
    pub threads: i32,
    /// How long a process may take to load the model.
    pub load_timeout: Duration,
    /// How long one pass may take before its process is killed.
    pub predict_timeout: Duration,
    /// The largest answer frame a process may send for one request (a merged pass: for each of
    /// its requests); a longer one is refused before it is read.
    pub max_answer_bytes: usize,
    /// The sandbox cell the processes run in (as the project's identity, confined; see
    /// [`crate::sandbox`]); `None`: unconfined, as the server's user (`anneal local predict`, a
    /// Ray shard, where Ray decides who runs code).
    pub cell: Option<Cell>,
}

/// What a request carries besides its instances: a TensorFlow `signature_name`, or a custom
/// routine's keyword arguments (the request body's other top-level keys). Requests share a pass
/// only when theirs are equal.
#[derive(Clone, Debug, Default, PartialEq)]
struct Extra {
    signature: Option<String>,
    kwargs: Option<serde_json::Map<String, Value>>,
}

/// What a worker said once its model was loaded.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Ready {
    /// The framework it serves (an XGBoost object in a `model.joblib` says `XGBOOST`).
    pub framework: String,
    /// The Python's `major.minor`.
    pub python: String,
    /// The framework's package versions.
    pub runtime: BTreeMap<String, String>,
    /// A TensorFlow signature's inputs and outputs.
    pub signature: Option<Value>,
}

/// Called once with the last error when a pool gives up.
pub type OnFailed = Box<dyn Fn(String) + Send + Sync>;

/// A version served by Python worker processes.
pub struct PythonModel {
    sender: Option<Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
    ready: Ready,
    metrics: ModelMetrics,
    pool: Arc<Pool>,
}

impl std::fmt::Debug for PythonModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PythonModel")
            .field("framework", &self.ready.framework)
            .field("workers", &self.workers.len())
            .finish()
    }
}

type Reply = oneshot::Sender<Result<Vec<Value>, PredictError>>;

/// The instances of one request, as they travel to Python.
#[derive(Clone, Debug, PartialEq)]
enum Input {
    /// Equally shaped number lists: one instance's shape and every value, row-major.
    Dense { rows: usize, shape: Vec<i64>, values: Vec<f64> },
    /// Anything else, as JSON values.
    Json(Vec<Value>),
}

impl Input {
    fn rows(&self) -> usize {
        match self {
            Self::Dense { rows, .. } => *rows,
            Self::Json(values) => values.len(),
        }
    }

    /// Whether `other` can share one pass with this input.
    fn joins(&self, other: &Input) -> bool {
        match (self, other) {
            (Self::Dense { shape: a, .. }, Self::Dense { shape: b, .. }) => a == b,
            (Self::Json(_), Self::Json(_)) => true,
            _ => false,
        }
    }

    /// The header and payload frames of a pass over `inputs` (all joining the first).
    fn frames(inputs: &[&Input], extra: &Extra) -> (Vec<u8>, Vec<u8>) {
        let rows: usize = inputs.iter().map(|i| i.rows()).sum();
        let mut header = match inputs[0] {
            Self::Dense { shape, .. } => serde_json::json!({"rows": rows, "format": "dense", "shape": shape}),
            Self::Json(_) => serde_json::json!({"rows": rows, "format": "json"}),
        };
        if let Some(signature) = &extra.signature {
            header["signature"] = Value::String(signature.clone());
        }
        if let Some(kwargs) = &extra.kwargs {
            header["kwargs"] = Value::Object(kwargs.clone());
        }
        let header = header.to_string().into_bytes();
        match inputs[0] {
            Self::Dense { .. } => {
                let count: usize =
                    inputs.iter().map(|i| if let Self::Dense { values, .. } = i { values.len() } else { 0 }).sum();
                let mut payload = Vec::with_capacity(count * 8);
                for input in inputs {
                    if let Self::Dense { values, .. } = input {
                        for v in values {
                            payload.extend_from_slice(&v.to_le_bytes());
                        }
                    }
                }
                (header, payload)
            }
            Self::Json(_) => {
                let mut payload = Vec::with_capacity(64 * rows);
                payload.push(b'[');
                let mut first = true;
                for input in inputs {
                    if let Self::Json(values) = input {
                        for value in values {
                            if !first {
                                payload.push(b',');
                            }
                            first = false;
                            // Writing a Value into a Vec cannot fail.
                            let _ = serde_json::to_writer(&mut payload, value);
                        }
                    }
                }
                payload.push(b']');
                (header, payload)
            }
        }
    }
}

struct Job {
    input: Input,
    extra: Extra,
    reply: Reply,
}

impl PythonModel {
    /// Starts `options.workers` processes serving `spec` and waits until each has loaded the
    /// model (in parallel). Blocks: call it on a blocking thread.
    pub fn load(
        name: &str,
        spec: PythonSpec,
        options: &ServingOptions,
        on_failed: OnFailed,
    ) -> Result<Self, LoadError> {
        let spec = Arc::new(spec);
        let count = options.workers.max(1);
        let pool = Arc::new(Pool::new(name, on_failed, spec.prediction_class.is_none()));
        let metrics = ModelMetrics::new(name);
        let (sender, receiver) = crossbeam_channel::bounded::<Job>(options.queue_capacity.max(1));
        let (started, starts) = std::sync::mpsc::channel::<Result<Ready, LoadError>>();
        let mut workers = Vec::with_capacity(count);
        for index in 0..count {
            let worker = Worker {
                name: name.to_owned(),
                spec: spec.clone(),
                receiver: receiver.clone(),
                max_batch_size: options.max_batch_size.max(1),
                max_queue_delay: options.max_queue_delay,
                metrics: metrics.clone(),
                pool: pool.clone(),
            };
            let started = started.clone();
            let handle = std::thread::Builder::new()
                .name(format!("py-worker-{index}"))
                .spawn(move || worker.run(started))
                .map_err(LoadError::Worker)?;
            workers.push(handle);
        }
        drop(started);
        let mut ready = None;
        let mut failure = None;
        for _ in 0..count {
            match starts.recv() {
                Ok(Ok(r)) => ready = ready.or(Some(r)),
                Ok(Err(e)) => failure = failure.or(Some(e)),
                Err(_) => {
                    failure = failure.or(Some(LoadError::PythonExited("a worker thread ended while starting".into())))
                }
            }
        }
        let model = Self { sender: Some(sender), workers, ready: ready.unwrap_or_default(), metrics, pool };
        if let Some(error) = failure {
            model.shutdown();
            return Err(error);
        }
        Ok(model)
    }

    /// What the workers said when they had loaded the model.
    pub fn ready(&self) -> &Ready {
        &self.ready
    }

    /// Predicts the instances of a request, one prediction per instance, in order.
    pub async fn predict_instances(&self, mut instances: Instances) -> Result<Vec<Value>, PredictError> {
        let started = Instant::now();
        let rest = instances.take_rest();
        let extra = if !self.pool.merges {
            // A custom routine gets every other key of the body as keyword arguments.
            Extra { signature: None, kwargs: Some(rest).filter(|kwargs| !kwargs.is_empty()) }
        } else if self.ready.framework == super::frameworks::TENSORFLOW {
            let signature = rest.get("signature_name").and_then(Value::as_str).filter(|s| !s.is_empty());
            Extra { signature: signature.map(str::to_owned), kwargs: None }
        } else {
            Extra::default()
        };
        let input = if self.pool.merges {
            match instances.into_raw() {
                Raw::Dense { rows, row_shape, values } => Input::Dense { rows, shape: row_shape, values },
                Raw::Values(values) => Input::Json(values),
            }
        } else {
            // A custom predictor is handed the instances as JSON lists, as ML Engine does.
            Input::Json(instances.into_values())
        };
        let result = self.enqueue_and_wait(input, extra).await;
        self.metrics.record(&result, started);
        result
    }

    async fn enqueue_and_wait(&self, input: Input, extra: Extra) -> Result<Vec<Value>, PredictError> {
        if self.pool.failed().is_some() {
            return Err(PredictError::Unavailable);
        }
        let sender = self.sender.as_ref().ok_or(PredictError::Unavailable)?;
        let (reply, answer) = oneshot::channel();
        match sender.try_send(Job { input, extra, reply }) {
            Ok(()) => self.metrics.queue_depth.set(sender.len() as f64),
            Err(TrySendError::Full(_)) => return Err(PredictError::Overloaded),
            Err(TrySendError::Disconnected(_)) => return Err(PredictError::Unavailable),
        }
        answer.await.unwrap_or(Err(PredictError::Unavailable))
    }

    /// Stops taking requests, lets the workers finish what is queued, stops the processes and
    /// joins the threads. Blocks.
    pub fn shutdown(mut self) {
        self.sender = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

impl Drop for PythonModel {
    fn drop(&mut self) {
        // Closing the queue ends the workers (and their processes) once it is drained; they are
        // not joined here so a drop on the async runtime never blocks it.
        self.sender = None;
    }
}

/// What a pool's workers share: its processes' failed starts and whether it gave up.
struct Pool {
    name: String,
    /// When each start failed since the last one that succeeded.
    start_failures: Mutex<VecDeque<Instant>>,
    failed: Mutex<Option<String>>,
    on_failed: OnFailed,
    /// Whether requests may share a pass (not for custom prediction routines).
    merges: bool,
}

impl Pool {
    fn new(name: &str, on_failed: OnFailed, merges: bool) -> Self {
        Self { name: name.to_owned(), start_failures: Mutex::default(), failed: Mutex::default(), on_failed, merges }
    }

    fn failed(&self) -> Option<String> {
        lock(&self.failed).clone()
    }

    /// A process was started: the failed starts before it no longer count.
    fn started(&self) {
        lock(&self.start_failures).clear();
    }

    /// Records a process that could not be started again; returns false when the pool gives up
    /// (and reports it, once).
    fn start_failed(&self, message: &str) -> bool {
        let now = Instant::now();
        let count = {
            let mut failures = lock(&self.start_failures);
            failures.push_back(now);
            while failures.front().is_some_and(|t| now.duration_since(*t) > START_FAILURE_WINDOW) {
                failures.pop_front();
            }
            failures.len()
        };
        tracing::warn!(
            version.name = %self.name, failures = count, error = message,
            "a Python prediction worker could not be started again"
        );
        if count < MAX_START_FAILURES {
            return true;
        }
        let first = {
            let mut failed = lock(&self.failed);
            let first = failed.is_none();
            if first {
                *failed = Some(message.to_owned());
            }
            first
        };
        if first {
            (self.on_failed)(format!(
                "Its prediction workers could not be started again {count} times in a row within {} s; the last: {message}",
                START_FAILURE_WINDOW.as_secs()
            ));
        }
        false
    }
}

/// How long a worker waits before it starts its process again, given when it lost its process
/// before (`losses`, oldest first, the loss being handled last): nothing after a first loss, then
/// [`RESTART_PAUSE`] doubling with each loss within [`RESTART_WINDOW`], at most
/// [`MAX_RESTART_PAUSE`]. Drops the losses older than the window.
fn restart_pause(losses: &mut VecDeque<Instant>, now: Instant) -> Duration {
    while losses.front().is_some_and(|t| now.duration_since(*t) > RESTART_WINDOW) {
        losses.pop_front();
    }
    match losses.len() {
        0 | 1 => Duration::ZERO,
        n => RESTART_PAUSE.saturating_mul(1 << (n - 2).min(16)).min(MAX_RESTART_PAUSE),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Worker {
    name: String,
    spec: Arc<PythonSpec>,
    receiver: Receiver<Job>,
    max_batch_size: usize,
    max_queue_delay: Duration,
    metrics: ModelMetrics,
    pool: Arc<Pool>,
}

impl Worker {
    fn run(self, started: std::sync::mpsc::Sender<Result<Ready, LoadError>>) {
        let mut process = match Process::start(&self.spec, &self.name) {
            Ok((process, ready)) => {
                let _ = started.send(Ok(ready));
                Some(process)
            }
            Err(e) => {
                let _ = started.send(Err(e));
                return;
            }
        };
        drop(started);
        let mut held: Option<Job> = None;
        // When this worker lost its process, for the pause before it starts another.
        let mut losses: VecDeque<Instant> = VecDeque::new();
        loop {
            let first = match held.take() {
                Some(job) => job,
                None => match self.receiver.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                },
            };
            let (jobs, next) = self.gather(first);
            held = next;
            self.metrics.queue_depth.set(self.receiver.len() as f64);
            if self.pool.failed().is_some() {
                for job in jobs {
                    let _ = job.reply.send(Err(PredictError::Unavailable));
                }
                continue;
            }
            if process.is_none() {
                process = self.restart(&mut losses);
            }
            let Some(running) = process.as_mut() else {
                for job in jobs {
                    let _ = job.reply.send(Err(PredictError::Unavailable));
                }
                continue;
            };
            self.metrics.batch_rows.record(jobs.iter().map(|j| j.input.rows()).sum::<usize>() as f64);
            if let Err(lost) = self.execute(running, jobs) {
                // What a request did to the process fails that request only; the version stays.
                tracing::warn!(
                    version.name = %self.name, error = %lost,
                    "a Python prediction worker was lost during a pass"
                );
                drop(process.take());
                losses.push_back(Instant::now());
                process = self.restart(&mut losses);
            }
        }
    }

    /// Starts a new process after one was lost (after a pause when they keep being lost:
    /// `losses`); `None` when it fails, which counts toward the pool giving up.
    fn restart(&self, losses: &mut VecDeque<Instant>) -> Option<Process> {
        if self.pool.failed().is_some() {
            return None;
        }
        let pause = restart_pause(losses, Instant::now());
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
        match Process::start(&self.spec, &self.name) {
            Ok((process, _)) => {
                self.pool.started();
                tracing::info!(version.name = %self.name, "a Python prediction worker was started again");
                Some(process)
            }
            Err(e) => {
                // No pause for these: a start is tried again only for a request, and a few
                // failures in a row end the pool.
                self.pool.start_failed(&format!("starting again failed: {e}"));
                None
            }
        }
    }

    /// The largest answer of a pass over `requests` requests.
    fn answer_limit(&self, requests: usize) -> usize {
        self.spec.max_answer_bytes.saturating_mul(requests.max(1))
    }

    /// Collects requests that can share a pass with `first` (none for custom routines).
    fn gather(&self, first: Job) -> (Vec<Job>, Option<Job>) {
        let mut rows = first.input.rows();
        let mut jobs = vec![first];
        if !self.pool.merges {
            return (jobs, None);
        }
        let deadline = Instant::now() + self.max_queue_delay;
        while rows < self.max_batch_size {
            let next = if self.max_queue_delay.is_zero() {
                self.receiver.try_recv().ok()
            } else {
                self.receiver.recv_deadline(deadline).ok()
            };
            let Some(job) = next else { break };
            let joins = jobs[0].input.joins(&job.input) && jobs[0].extra == job.extra;
            if !joins || rows + job.input.rows() > self.max_batch_size {
                return (jobs, Some(job));
            }
            rows += job.input.rows();
            jobs.push(job);
        }
        (jobs, None)
    }

    /// Runs `jobs` as one pass (each alone when the merged pass is refused) and answers them.
    /// `Err` when the process was lost: every job still unanswered is answered with why.
    fn execute(&self, process: &mut Process, jobs: Vec<Job>) -> Result<(), Lost> {
        let inputs: Vec<&Input> = jobs.iter().map(|j| &j.input).collect();
        let answer = match process.call(&inputs, &jobs[0].extra, self.answer_limit(jobs.len())) {
            Ok(answer) => answer,
            Err(lost) => {
                for job in jobs {
                    let _ = job.reply.send(Err(lost.to_predict_error()));
                }
                return Err(lost);
            }
        };
        match answer {
            Ok(mut predictions) => {
                for job in jobs {
                    let rest = predictions.split_off(job.input.rows().min(predictions.len()));
                    let mine = std::mem::replace(&mut predictions, rest);
                    let _ = job.reply.send(Ok(mine));
                }
                Ok(())
            }
            Err(error) if jobs.len() == 1 => {
                for job in jobs {
                    let _ = job.reply.send(Err(PredictError::Routine(error.clone())));
                }
                Ok(())
            }
            Err(_) => {
                let mut jobs = jobs.into_iter();
                while let Some(job) = jobs.next() {
                    match process.call(&[&job.input], &job.extra, self.answer_limit(1)) {
                        Ok(answer) => {
                            let _ = job.reply.send(answer.map_err(PredictError::Routine));
                        }
                        Err(lost) => {
                            let _ = job.reply.send(Err(lost.to_predict_error()));
                            for job in jobs {
                                let _ = job.reply.send(Err(lost.to_predict_error()));
                            }
                            return Err(lost);
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

/// One worker process used from one thread, without a queue: batch prediction's workers each
/// own one. A process that crashed is started again on the next call.
pub struct Predictor {
    spec: PythonSpec,
    name: String,
    process: Option<Process>,
    extra: Extra,
}

impl Predictor {
    /// Starts a process serving `spec` and waits until it has loaded the model. Blocks.
    pub fn start(name: &str, spec: PythonSpec) -> Result<(Self, Ready), LoadError> {
        let (process, ready) = Process::start(&spec, name)?;
        Ok((Self { spec, name: name.to_owned(), process: Some(process), extra: Extra::default() }, ready))
    }

    /// Predicts with the TensorFlow signature `name` (a batch job's `signatureName`) instead of
    /// the model's default.
    pub fn with_signature(mut self, name: Option<String>) -> Self {
        self.extra.signature = name.filter(|n| !n.is_empty());
        self
    }

    /// One pass over `instances`: one prediction per instance, or the model's error (an answer
    /// it could not take among them: the process is then started again on the next call). `Err`
    /// when the process crashed (or could not be started again): why.
    pub fn predict(&mut self, instances: Vec<Value>) -> Result<Result<Vec<Value>, RoutineError>, String> {
        if self.process.is_none() {
            let (process, _) = Process::start(&self.spec, &self.name).map_err(|e| e.to_string())?;
            self.process = Some(process);
        }
        let Some(process) = self.process.as_mut() else { return Err("the worker process is not running".into()) };
        match process.call(&[&Input::Json(instances)], &self.extra, self.spec.max_answer_bytes) {
            Ok(answer) => Ok(answer),
            Err(lost) => {
                self.process = None;
                match lost {
                    Lost::Crashed(why) => Err(why),
                    Lost::Refused(error) => Ok(Err(error)),
                }
            }
        }
    }
}

/// Why a pass got no answer it could use from its process, which is then stopped (and started
/// again for the next pass).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Lost {
    /// The process exited, or was stopped past `predict_timeout`: why.
    Crashed(String),
    /// Its answer was refused (too long, or not the protocol's JSON), so the stream is out of
    /// step: the pass's requests fail with this error.
    Refused(RoutineError),
}

impl Lost {
    fn to_predict_error(&self) -> PredictError {
        match self {
            Self::Crashed(why) => PredictError::Crashed(why.clone()),
            Self::Refused(error) => PredictError::Routine(error.clone()),
        }
    }
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Crashed(why) => f.write_str(why),
            Self::Refused(error) => std::fmt::Display::fmt(error, f),
        }
    }
}

/// `INVALID_OUTPUTS` with `detail`.
fn invalid_outputs(detail: String) -> RoutineError {
    RoutineError { code: 3, message: "There was a problem processing the outputs".into(), detail }
}

/// One answer frame.
#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    predictions: Option<Vec<Value>>,
    #[serde(default)]
    error: Option<RoutineError>,
    #[serde(default)]
    ready: Option<Ready>,
}

/// One running worker process: its pipes, its stderr's last lines, and a watchdog that kills it
/// when a load or a pass takes too long.
struct Process {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    stderr: Tail,
    watch: Arc<Watch>,
    watcher: Option<JoinHandle<()>>,
    predict_timeout: Duration,
    /// Started through the sandbox's launcher (see [`stop`]).
    confined: bool,
}

impl Process {
    /// Starts a process and waits for its first frame: the model loaded, or why not.
    fn start(spec: &PythonSpec, name: &str) -> Result<(Self, Ready), LoadError> {
        let threads = spec.threads.max(1).to_string();
        let python_path = std::env::join_paths(&spec.python_path).unwrap_or_default();
        let mut command = match &spec.cell {
            Some(cell) => {
                let cell = spec.python_path.iter().fold(cell.clone().read(&spec.model_dir), |c, p| c.read(p));
                cell.command(&spec.python).map_err(|e| LoadError::Isolation(e.to_string()))?
            }
            None => crate::sandbox::unconfined(&spec.python),
        };
        command
            .arg("-u")
            .arg("-c")
            .arg(PREDICTOR_SOURCE)
            .current_dir(&spec.model_dir)
            .env("ANNEAL_MODEL_DIR", &spec.model_dir)
            .env("ANNEAL_FRAMEWORK", &spec.framework)
            .env("ANNEAL_PREDICTION_CLASS", spec.prediction_class.as_deref().unwrap_or(""))
            .env("PYTHONPATH", python_path)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("OMP_NUM_THREADS", &threads)
            .env("OPENBLAS_NUM_THREADS", &threads)
            .env("MKL_NUM_THREADS", &threads)
            .env("TF_NUM_INTRAOP_THREADS", &threads)
            .env("TF_NUM_INTEROP_THREADS", "1")
            .env("TF_CPP_MIN_LOG_LEVEL", "2")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command
            .spawn()
            .map_err(|e| LoadError::PythonStart { python: spec.python.display().to_string(), source: e })?;
        let (Some(stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(LoadError::PythonExited("its pipes could not be opened".into()));
        };
        let tail = Tail::follow(name, stderr);
        let watch = Arc::new(Watch::default());
        let watcher = {
            let (watch, pid, confined) = (watch.clone(), child.id(), spec.cell.is_some());
            std::thread::Builder::new().name("py-watchdog".into()).spawn(move || watch.run(pid, confined)).ok()
        };
        let mut process = Self {
            child,
            stdin,
            stdout,
            stderr: tail,
            watch,
            watcher,
            predict_timeout: spec.predict_timeout,
            confined: spec.cell.is_some(),
        };
        process.watch.arm(spec.load_timeout);
        let first = read_frame(&mut process.stdout, spec.max_answer_bytes);
        let fired = process.watch.disarm();
        let frame = match first {
            Ok(frame) => frame,
            Err(FrameError::TooLong(length)) => {
                return Err(LoadError::PythonExited(format!(
                    "its first answer is {length} bytes, over the limit of {} bytes",
                    spec.max_answer_bytes
                )))
            }
            Err(_) if fired => {
                return Err(LoadError::Routine(RoutineError::failed_to_load(format!(
                    "Loading the model took longer than {} s",
                    spec.load_timeout.as_secs()
                ))))
            }
            Err(_) => return Err(LoadError::PythonExited(process.exit_description())),
        };
        match serde_json::from_slice::<Answer>(&frame) {
            Ok(Answer { ready: Some(ready), .. }) => Ok((process, ready)),
            Ok(Answer { error: Some(error), .. }) => Err(LoadError::Routine(error)),
            _ => Err(LoadError::PythonExited(format!(
                "its first answer was not understood: {}",
                String::from_utf8_lossy(&frame[..frame.len().min(200)])
            ))),
        }
    }

    /// One pass over `inputs`: the predictions (as many as the rows), or the model's error.
    /// `Err` when the process was lost (it is then stopped for good): it crashed, was killed, or
    /// sent an answer longer than `max_answer` bytes or one that is not the protocol's JSON.
    fn call(
        &mut self,
        inputs: &[&Input],
        extra: &Extra,
        max_answer: usize,
    ) -> Result<Result<Vec<Value>, RoutineError>, Lost> {
        let rows: usize = inputs.iter().map(|i| i.rows()).sum();
        let (header, payload) = Input::frames(inputs, extra);
        self.watch.arm(self.predict_timeout);
        let sent = write_frame(&mut self.stdin, &header).and_then(|()| write_frame(&mut self.stdin, &payload));
        let frame = sent.map_err(FrameError::from).and_then(|()| read_frame(&mut self.stdout, max_answer));
        let fired = self.watch.disarm();
        let frame = match frame {
            Ok(frame) => frame,
            Err(FrameError::TooLong(length)) => {
                self.kill();
                return Err(Lost::Refused(invalid_outputs(format!(
                    "the model's answer is {length} bytes, over the limit of {max_answer} bytes \
                     (predict_max_answer_bytes); its worker process is being started again"
                ))));
            }
            Err(_) if fired => {
                self.kill();
                return Err(Lost::Crashed(format!(
                    "the prediction took longer than {} s and its worker process was stopped",
                    self.predict_timeout.as_secs()
                )));
            }
            Err(_) => return Err(Lost::Crashed(self.exit_description())),
        };
        let parsed = serde_json::from_slice::<Answer>(&frame).or_else(|e| match quote_non_finite(&frame) {
            Some(quoted) => serde_json::from_slice::<Answer>(&quoted),
            None => Err(e),
        });
        match parsed {
            Ok(Answer { predictions: Some(predictions), .. }) if predictions.len() == rows => Ok(Ok(predictions)),
            Ok(Answer { predictions: Some(predictions), .. }) => {
                Ok(Err(invalid_outputs(format!("{} predictions for {rows} instances", predictions.len()))))
            }
            Ok(Answer { error: Some(error), .. }) => Ok(Err(error)),
            _ => {
                // Something besides the worker wrote to its pipe: what follows is out of step.
                self.kill();
                Err(Lost::Refused(invalid_outputs(
                    "the worker's answer was not understood; its worker process is being started again".into(),
                )))
            }
        }
    }

    /// Why the process ended: its exit status and its last lines on stderr. Stops it first.
    fn exit_description(&mut self) -> String {
        self.kill();
        let status = exits::status(&mut self.child);
        // The server's log has them whole; the caller and the version's errorMessage get them
        // without the server's paths (a traceback names the runtime Python's files).
        let lines = self.stderr.lines(without_paths);
        if lines.is_empty() {
            format!("the worker process exited ({status})")
        } else {
            format!("the worker process exited ({status}); its last lines: {}", lines.join(" | "))
        }
    }

    fn kill(&mut self) {
        exits::stop(self.child.id(), self.confined);
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        let _ = self.child.wait();
        self.watch.finish();
        if let Some(watcher) = self.watcher.take() {
            let _ = watcher.join();
        }
    }
}

/// `text` with absolute filesystem paths (of two parts or more, not inside a URL or a longer
/// word) cut to their last part, as the worker cuts them from its error details.
fn without_paths(text: &str) -> String {
    let ends = |c: char| c.is_whitespace() || "'\"`<>|;,()[]{}".contains(c);
    let joins = |c: char| c.is_alphanumeric() || "_.:/~@-".contains(c);
    let mut out = String::with_capacity(text.len());
    let mut previous: Option<char> = None;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c == '/' && !previous.is_some_and(joins) {
            let path = &rest[..rest.find(ends).unwrap_or(rest.len())];
            let inner = &path[1..];
            if !inner.starts_with('/') && inner.contains('/') {
                out.push_str(path.rsplit('/').next().unwrap_or_default());
                previous = path.chars().last();
                rest = &rest[path.len()..];
                continue;
            }
        }
        out.push(c);
        previous = Some(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Kills a process whose load or pass outlives its deadline.
#[derive(Default)]
struct Watch {
    state: Mutex<WatchState>,
    wake: Condvar,
}

#[derive(Default)]
struct WatchState {
    deadline: Option<Instant>,
    fired: bool,
    done: bool,
}

impl Watch {
    fn arm(&self, timeout: Duration) {
        let mut state = lock(&self.state);
        state.deadline = Some(Instant::now() + timeout);
        state.fired = false;
        self.wake.notify_all();
    }

    /// Clears the deadline; whether it had passed and the process was killed.
    fn disarm(&self) -> bool {
        let mut state = lock(&self.state);
        state.deadline = None;
        state.fired
    }

    fn finish(&self) {
        lock(&self.state).done = true;
        self.wake.notify_all();
    }

    fn run(&self, pid: u32, confined: bool) {
        let mut state = lock(&self.state);
        loop {
            if state.done {
                return;
            }
            state = match state.deadline {
                None => self.wake.wait(state).unwrap_or_else(std::sync::PoisonError::into_inner),
                Some(deadline) if Instant::now() >= deadline => {
                    exits::stop(pid, confined);
                    state.fired = true;
                    state.deadline = None;
                    state
                }
                Some(deadline) => {
                    let wait = deadline.saturating_duration_since(Instant::now());
                    self.wake.wait_timeout(state, wait).unwrap_or_else(std::sync::PoisonError::into_inner).0
                }
            };
        }
    }
}

fn write_frame(stream: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    let length = u32::try_from(bytes.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "a frame of 4 GiB or more"))?;
    stream.write_all(&length.to_le_bytes())?;
    stream.write_all(bytes)?;
    stream.flush()
}

/// Why no frame was read.
#[derive(Debug)]
enum FrameError {
    /// The stream ended (the process exited) or failed.
    Io,
    /// The frame's length prefix is over the bound: that length (nothing more was read).
    TooLong(usize),
}

impl From<std::io::Error> for FrameError {
    fn from(_: std::io::Error) -> Self {
        Self::Io
    }
}

/// How much of a frame is reserved before its bytes arrive; the rest grows as they do.
const FRAME_RESERVE: usize = 64 << 10;

/// Reads one frame of at most `max` bytes. The length prefix is not trusted: the buffer grows as
/// the bytes arrive, so a prefix that promises more than is sent costs nothing.
fn read_frame(stream: &mut impl Read, max: usize) -> Result<Vec<u8>, FrameError> {
    let mut head = [0u8; 4];
    stream.read_exact(&mut head)?;
    let length = u32::from_le_bytes(head) as usize;
    if length > max {
        return Err(FrameError::TooLong(length));
    }
    let mut frame = Vec::with_capacity(length.min(FRAME_RESERVE));
    let read = stream.take(length as u64).read_to_end(&mut frame)?;
    if read < length {
        return Err(FrameError::Io);
    }
    Ok(frame)
}

/// `frame` with the bare `NaN`, `Infinity` and `-Infinity` that Python's `json` writes for
/// non-finite floats quoted, as protobuf's JSON mapping writes them; `None` when it has none. The
/// worker writes them quoted already: this keeps an answer that still has them (user code's own
/// encoding) from failing.
fn quote_non_finite(frame: &[u8]) -> Option<Vec<u8>> {
    const TOKENS: [&[u8]; 3] = [b"-Infinity", b"Infinity", b"NaN"];
    let mut out = Vec::with_capacity(frame.len() + 32);
    let (mut in_string, mut escaped, mut changed) = (false, false, false);
    let mut i = 0;
    while i < frame.len() {
        let byte = frame[i];
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
        } else if byte == b'"' {
            in_string = true;
        } else if let Some(token) = TOKENS.iter().find(|t| frame[i..].starts_with(t)) {
            out.push(b'"');
            out.extend_from_slice(token);
            out.push(b'"');
            i += token.len();
            changed = true;
            continue;
        }
        out.push(byte);
        i += 1;
    }
    changed.then_some(out)
}

/// Installs a custom prediction routine's packages (sdists or wheels) into `target` once, with
/// the sandbox's one pip install in `cell` (see [`crate::sandbox::pip`]). Blocks.
pub fn install_packages(python: &Path, packages: &[PathBuf], target: &Path, cell: &Cell) -> Result<(), LoadError> {
    crate::sandbox::pip::install_once(cell, python, packages, target).map_err(|e| LoadError::Packages(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_inputs_travel_as_float64_and_others_as_one_json_list() {
        let a = Input::Dense { rows: 1, shape: vec![2], values: vec![1.0, 2.5] };
        let b = Input::Dense { rows: 2, shape: vec![2], values: vec![3.0, 4.0, 5.0, 6.0] };
        assert!(a.joins(&b));
        assert!(!a.joins(&Input::Dense { rows: 1, shape: vec![3], values: vec![0.0; 3] }));
        let (header, payload) = Input::frames(&[&a, &b], &Extra::default());
        let header: Value = serde_json::from_slice(&header).expect("json");
        assert_eq!(header, serde_json::json!({"rows": 3, "format": "dense", "shape": [2]}));
        assert_eq!(payload.len(), 6 * 8);
        assert_eq!(f64::from_le_bytes(payload[8..16].try_into().expect("8 bytes")), 2.5);

        let c = Input::Json(vec![serde_json::json!({"x": 1}), serde_json::json!("s")]);
        let d = Input::Json(vec![serde_json::json!([1, 2])]);
        assert!(!a.joins(&c));
        let extra = Extra { signature: Some("second".into()), kwargs: None };
        let (header, payload) = Input::frames(&[&c, &d], &extra);
        let header: Value = serde_json::from_slice(&header).expect("json");
        assert_eq!(header, serde_json::json!({"rows": 3, "format": "json", "signature": "second"}));
        assert_eq!(
            serde_json::from_slice::<Value>(&payload).expect("json"),
            serde_json::json!([{"x": 1}, "s", [1, 2]])
        );
    }

    #[test]
    fn paths_are_cut_to_their_last_part() {
        let line = r#"File "/work/.venv/lib/python3.11/site-packages/xgboost/core.py", line 3, in f"#;
        assert_eq!(without_paths(line), r#"File "core.py", line 3, in f"#);
        assert_eq!(without_paths("/usr/lib/x.so(+0x1) and /opt/dir/ then /tmp"), "x.so(+0x1) and  then /tmp");
        let kept = "gs://bucket/a/b, https://host/a/b, 1/2, a / b, p_fmat->Info() (4 vs. 6), ünï/cödé";
        assert_eq!(without_paths(kept), kept);
    }

    #[test]
    fn routine_errors_read_as_ml_engine_writes_them() {
        let error = RoutineError { code: 2, message: "Failed to run the provided model".into(), detail: "boom".into() };
        assert_eq!(error.to_string(), "Failed to run the provided model: boom (Error code: 2)");
    }

    #[test]
    fn frames_round_trip() {
        let mut buffer = Vec::new();
        write_frame(&mut buffer, b"hello").expect("write");
        write_frame(&mut buffer, b"").expect("write");
        let mut reader = std::io::Cursor::new(buffer);
        assert_eq!(read_frame(&mut reader, 5).expect("frame"), b"hello");
        assert_eq!(read_frame(&mut reader, 5).expect("frame"), b"");
        assert!(matches!(read_frame(&mut reader, 5), Err(FrameError::Io)), "end of stream");
    }

    #[test]
    fn a_frame_over_the_bound_is_refused_before_its_bytes_are_read() {
        let mut buffer = 0xFFFF_FFF0u32.to_le_bytes().to_vec();
        buffer.extend_from_slice(b"rest");
        let mut reader = std::io::Cursor::new(buffer);
        assert!(matches!(read_frame(&mut reader, 1 << 20), Err(FrameError::TooLong(0xFFFF_FFF0))));
        assert_eq!(reader.position(), 4, "only the length was read");

        // Within the bound but never sent: the stream's end, with only what came allocated.
        let mut reader = std::io::Cursor::new([&(1u32 << 30).to_le_bytes()[..], &b"short"[..]].concat());
        assert!(matches!(read_frame(&mut reader, usize::MAX), Err(FrameError::Io)));
    }

    #[test]
    fn bare_non_finite_numbers_are_quoted_outside_strings_only() {
        let frame = br#"{"predictions": [NaN, [Infinity, -Infinity], "NaN in a \"string\" Infinity", 1.5]}"#;
        let quoted = quote_non_finite(frame).expect("changed");
        let answer: Value = serde_json::from_slice(&quoted).expect("JSON");
        assert_eq!(
            answer,
            serde_json::json!({"predictions": ["NaN", ["Infinity", "-Infinity"], "NaN in a \"string\" Infinity", 1.5]})
        );
        assert_eq!(quote_non_finite(br#"{"predictions": ["NaN", 1e308]}"#), None, "nothing to quote");
        assert_eq!(quote_non_finite(br#"["a\\", "Infinity"]"#), None, "an escaped backslash ends no string early");
    }

    #[test]
    fn restarts_pause_longer_while_processes_keep_being_lost() {
        let start = Instant::now();
        let mut losses: VecDeque<Instant> = VecDeque::new();
        let mut pauses = Vec::new();
        for i in 0..10 {
            let now = start + Duration::from_secs(i);
            losses.push_back(now);
            pauses.push(restart_pause(&mut losses, now).as_millis());
        }
        assert_eq!(pauses, [0, 100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        // A loss after a quiet minute restarts at once.
        let later = start + Duration::from_secs(200);
        losses.push_back(later);
        assert_eq!(restart_pause(&mut losses, later), Duration::ZERO);
        assert_eq!(losses.len(), 1);
    }

    #[test]
    fn only_failed_starts_in_a_row_make_a_pool_give_up() {
        let reports = Arc::new(Mutex::new(Vec::new()));
        let seen = reports.clone();
        let pool = Pool::new("v", Box::new(move |message| lock(&seen).push(message)), true);
        for _ in 0..MAX_START_FAILURES - 1 {
            assert!(pool.start_failed("no"));
        }
        pool.started();
        for _ in 0..MAX_START_FAILURES - 1 {
            assert!(pool.start_failed("no"), "a start in between: the count begins again");
        }
        assert!(pool.failed().is_none());
        assert!(!pool.start_failed("the last"));
        assert!(!pool.start_failed("after"));
        assert_eq!(pool.failed().as_deref(), Some("the last"));
        let reports = lock(&reports).clone();
        assert_eq!(reports.len(), 1, "reported once: {reports:?}");
        assert!(
            reports[0].contains("could not be started again 3 times") && reports[0].ends_with("the last"),
            "{reports:?}"
        );
    }
}
