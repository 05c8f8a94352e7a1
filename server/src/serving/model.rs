//! A served TorchScript model and the worker threads that own its forward passes. Each worker
//! thread owns a worker process ([`super::process`]) that loaded the model in the version's
//! sandbox cell: a TorchScript model is code, and the server never loads one itself. (With the
//! `in-process` build feature, for the benchmarks' comparison only, the threads run the passes
//! in the server's own process, as Anneal did before.)
//!
//! Requests reach the workers through one bounded queue (`queue_capacity` requests); a full queue
//! answers [`PredictError::Overloaded`] at once instead of waiting. Each worker takes a request,
//! then gathers more whose inputs have the same layout until it has `max_batch_size` rows or
//! `max_queue_delay` has passed (with a delay of zero it takes only what is already queued), runs
//! one forward pass, and answers each request on its own reply channel. When a merged pass fails,
//! each request is retried alone so one bad request cannot fail its neighbours.
//!
//! Every pass runs on a worker. A worker that finished a pass polls the queue for [`SPIN`] before
//! it sleeps, so under steady traffic the request's hand-off is a queue push the polling worker
//! picks up at once, on a core that stayed warm; it stops polling early when the runtime's threads
//! need its core (under load, parsing requests is what limits the server). A request the model
//! is working on alone watches for its answer ([`ServedModel::watch`]), so the runtime's thread
//! is awake to write it. (Passes used to run on the request's own runtime thread when the model
//! was idle; measured, that thread had just woken on a cold core, and its pass took 2.7 times the
//! floor: `benchmarks/serving/results.md`.)

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde_json::Value;
use tch::{CModule, Device};
use tokio::sync::oneshot;

use super::instances::{Batch, InstanceError, Instances};
use super::process::Restarting;
pub use super::process::TorchSpec;
use super::signature::{Signature, SignatureError};
use super::tensors::{batch_to_inputs, outputs_to_rows, OutputError};

/// The TorchScript file a model directory must hold.
pub const MODEL_FILE: &str = "model.pt";

/// How a model is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServingOptions {
    /// The most rows one forward pass takes.
    pub max_batch_size: usize,
    /// How long a worker waits for more requests to fill a batch. Zero: batch only what is queued.
    pub max_queue_delay: Duration,
    /// Requests that may wait in the queue before new ones are refused.
    pub queue_capacity: usize,
    /// Worker threads, each running forward passes.
    pub workers: usize,
    /// libtorch intra-op threads per worker.
    pub intra_op_threads: i32,
    /// Run on CUDA when the host has it.
    pub use_cuda: bool,
    /// The runtime Python, which serves Python models.
    pub python: std::path::PathBuf,
    /// The program TorchScript worker processes run (`PROGRAM model-worker`): the `anneal`
    /// binary (tests of the library name it; a running `anneal` is its own).
    pub worker_program: std::path::PathBuf,
}

impl Default for ServingOptions {
    fn default() -> Self {
        Self {
            max_batch_size: 64,
            max_queue_delay: Duration::ZERO,
            queue_capacity: 1024,
            workers: 1,
            intra_op_threads: 1,
            use_cuda: true,
            python: std::path::PathBuf::from("python3"),
            worker_program: std::env::current_exe().unwrap_or_else(|_| "anneal".into()),
        }
    }
}

/// Why a prediction failed.
#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    /// An instance could not become a model input (HTTP 400).
    #[error(transparent)]
    BadInstance(#[from] InstanceError),
    /// The model rejected its inputs or failed while running (HTTP 400).
    #[error("Prediction failed: Error during model execution: {0}")]
    Model(String),
    /// The queue is full (HTTP 429).
    #[error("the model's request queue is full; retry later")]
    Overloaded,
    /// The model's workers are gone (HTTP 503).
    #[error("the model is not being served right now")]
    Unavailable,
    /// A Python model or prediction routine refused the instances or failed (HTTP 400), with
    /// ML Engine's error code.
    #[error("Prediction failed: {0}")]
    Routine(#[from] super::python::RoutineError),
    /// The Python worker process running the pass exited or was stopped (HTTP 500); it is
    /// started again.
    #[error("Prediction failed: {0}; it is being started again")]
    Crashed(String),
}

/// Why a model could not be loaded for serving.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The directory holds no `model.pt`.
    #[error("{file} not found in the model directory", file = MODEL_FILE)]
    MissingModel,
    /// The directory's `signature.json` cannot be used.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// libtorch cannot load `model.pt`: the informative line of its error.
    #[error("{file} is not a loadable TorchScript model: {0}", file = MODEL_FILE)]
    NotTorchScript(String),
    /// A forward pass on zeros of the declared signature failed: the model and its signature
    /// disagree.
    #[error("the model does not accept inputs of its declared signature: {0}")]
    RejectsSignature(String),
    /// The warm-up pass ran, but what the model returns cannot be served.
    #[error("the model's output cannot be served: {0}")]
    Output(#[from] OutputError),
    /// A worker thread could not be started.
    #[error("cannot start a model worker thread: {0}")]
    Worker(#[source] std::io::Error),
    /// The thread loading the model ended without an answer.
    #[error("model loading stopped unexpectedly: {0}")]
    Stopped(#[source] tokio::task::JoinError),
    /// A Python model or prediction routine could not be loaded: ML Engine's error text.
    #[error("Create Version failed. Bad model detected with error: \"{0}\"")]
    Routine(super::python::RoutineError),
    /// The runtime Python could not be started.
    #[error("cannot start the runtime Python {python}: {source}")]
    PythonStart {
        python: String,
        #[source]
        source: std::io::Error,
    },
    /// A Python worker process ended before it had loaded the model.
    #[error("Create Version failed. The prediction worker did not start: {0}")]
    PythonExited(String),
    /// The version's `packageUris` could not be installed.
    #[error("Create Version failed. The packageUris could not be installed with pip: {0}")]
    Packages(String),
    /// The model's worker process loaded it and refused it: its reason (the text of the load
    /// error it met).
    #[error("{0}")]
    Refused(String),
    /// The Python workers could not be set up to run as the project's replica user.
    #[error("cannot run the prediction workers as the project's replica user: {0}")]
    Isolation(String),
}

/// Why one forward pass gave no predictions.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// libtorch refused the inputs or failed while running: the informative line of its error.
    #[error("{0}")]
    Torch(String),
    /// The model ran, but its output cannot become one prediction per row.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// The model's worker process failed during the pass (it is started again): why.
    #[error("{0}")]
    Crashed(String),
}

/// How long an idle worker polls its queue before it sleeps. Measured on a 2-core virtual
/// machine (`benchmarks/serving`): a core that idles between requests (its vCPU halts) runs the
/// next forward pass of the small MLP 2.7 times slower than a hot loop does (67 µs against 25 µs,
/// the same after an in-process 200 µs sleep), and waking a sleeping worker costs more again. A
/// worker that keeps polling while requests keep coming keeps its core and caches warm; polling
/// stops 2 ms after the last pass, so an idle server costs nothing.
const SPIN: Duration = Duration::from_millis(2);

/// How often a polling worker checks that it still has its core to itself ([`Worker::next_job`]).
/// Measured at 64 connections on 2 cores shared with the load generator: polling regardless took
/// 707 ms of CPU a second on the worker against 468 ms with this check, and the runtime's threads
/// got that time back (950 against 1,088 ms/s; 19.9k against 23.1k req/s), while one connection's
/// p50 stayed where polling put it (`benchmarks/serving`).
const SHARE_CHECK: Duration = Duration::from_micros(100);

type Reply = oneshot::Sender<Result<Vec<Value>, PredictError>>;
type Answer = oneshot::Receiver<Result<Vec<Value>, PredictError>>;

/// How long a request the model is working on alone looks for its answer before it sleeps
/// ([`ServedModel::watch`]). Measured at one connection on 2 cores (`benchmarks/serving`, A/B
/// rounds): a request that slept until its answer came took 153–181 µs at p50 against 101–112 µs
/// with this watch, about 50 µs of waking the runtime's thread on an idle vCPU; its p99 rose from
/// 275–340 to 403–439 µs. 200 µs is several passes of a small model.
const ANSWER_WATCH: Duration = Duration::from_micros(200);

/// Counts a request out of [`ServedModel::in_flight`] when it is answered or given up.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Job {
    batch: Batch,
    reply: Reply,
}

/// A model loaded into libtorch with its worker threads.
pub struct ServedModel {
    sender: Option<Sender<Job>>,
    /// Requests queued or in a pass, not yet answered.
    in_flight: AtomicUsize,
    /// Requests that have arrived since the model was loaded.
    arrivals: AtomicUsize,
    workers: Vec<JoinHandle<()>>,
    signature: Signature,
    device: Device,
    metrics: ModelMetrics,
}

/// Per-version metrics, labelled by the version's name; handles are made once at load.
#[derive(Clone)]
pub(super) struct ModelMetrics {
    ok: metrics::Counter,
    bad_instance: metrics::Counter,
    model_error: metrics::Counter,
    overloaded: metrics::Counter,
    unavailable: metrics::Counter,
    latency: metrics::Histogram,
    pub(super) batch_rows: metrics::Histogram,
    pub(super) queue_depth: metrics::Gauge,
}

impl ModelMetrics {
    pub(super) fn new(version: &str) -> Self {
        let version = version.to_owned();
        let requests = |outcome: &'static str| metrics::counter!("anneal_predict_requests_total", "version" => version.clone(), "outcome" => outcome);
        Self {
            ok: requests("ok"),
            bad_instance: requests("bad_instance"),
            model_error: requests("model_error"),
            overloaded: requests("overloaded"),
            unavailable: requests("unavailable"),
            latency: metrics::histogram!("anneal_predict_duration_seconds", "version" => version.clone()),
            batch_rows: metrics::histogram!("anneal_predict_batch_rows", "version" => version.clone()),
            queue_depth: metrics::gauge!("anneal_predict_queue_depth", "version" => version),
        }
    }

    pub(super) fn record(&self, result: &Result<Vec<Value>, PredictError>, started: Instant) {
        self.latency.record(started.elapsed().as_secs_f64());
        let counter = match result {
            Ok(_) => &self.ok,
            Err(PredictError::BadInstance(_)) => &self.bad_instance,
            Err(PredictError::Model(_) | PredictError::Routine(_) | PredictError::Crashed(_)) => &self.model_error,
            Err(PredictError::Overloaded) => &self.overloaded,
            Err(PredictError::Unavailable) => &self.unavailable,
        };
        counter.increment(1);
    }
}

impl std::fmt::Debug for ServedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServedModel").field("device", &self.device).field("workers", &self.workers.len()).finish()
    }
}

impl ServedModel {
    /// Serves `spec.model_dir/model.pt` (with `signature.json` if present): starts the workers,
    /// each with its worker process, and waits until every process has loaded and warmed up the
    /// model. Blocks: call it on a blocking thread.
    pub fn load(name: &str, spec: TorchSpec, options: &ServingOptions) -> Result<Self, LoadError> {
        if !spec.model_dir.join(MODEL_FILE).is_file() {
            return Err(LoadError::MissingModel);
        }
        // The signature is data (bounded JSON): the server reads it, the worker checks the model
        // against it.
        let signature = Signature::read(&spec.model_dir)?;
        let metrics = ModelMetrics::new(name);
        let (sender, receiver) = crossbeam_channel::bounded::<Job>(options.queue_capacity.max(1));
        let count = options.workers.max(1);
        let (started, starts) = std::sync::mpsc::channel::<Result<Device, LoadError>>();
        let spec = Arc::new(spec);
        let mut workers = Vec::with_capacity(count);
        for index in 0..count {
            let (spec, name, started) = (spec.clone(), name.to_owned(), started.clone());
            let (receiver, options, metrics) = (receiver.clone(), options.clone(), metrics.clone());
            let handle = std::thread::Builder::new()
                .name(format!("model-worker-{index}"))
                .spawn(move || {
                    let engine = match Restarting::start(spec, &name) {
                        Ok((engine, ready)) => {
                            let _ = started.send(Ok(ready.device()));
                            engine
                        }
                        Err(e) => {
                            let _ = started.send(Err(e));
                            return;
                        }
                    };
                    drop(started);
                    Worker { engine, receiver, options, metrics }.run();
                })
                .map_err(LoadError::Worker)?;
            workers.push(handle);
        }
        drop(started);
        let (mut device, mut failure) = (None, None);
        for _ in 0..count {
            match starts.recv() {
                Ok(Ok(d)) => device = device.or(Some(d)),
                Ok(Err(e)) => failure = failure.or(Some(e)),
                Err(_) => {
                    failure = failure.or(Some(LoadError::PythonExited("a worker thread ended while starting".into())))
                }
            }
        }
        let mut model = Self {
            sender: Some(sender),
            in_flight: Default::default(),
            arrivals: Default::default(),
            workers,
            signature,
            device: device.unwrap_or(Device::Cpu),
            metrics,
        };
        if let Some(error) = failure {
            model.stop();
            return Err(error);
        }
        Ok(model)
    }

    /// The model's signature.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// Where forward passes run.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Predicts `instances`, one prediction per instance, in order.
    pub async fn predict(&self, instances: &[Value]) -> Result<Vec<Value>, PredictError> {
        let started = Instant::now();
        self.arrivals.fetch_add(1, Ordering::Relaxed);
        let result = match Batch::from_instances(instances, &self.signature.inputs) {
            Ok(batch) => self.run(batch).await,
            Err(e) => Err(e.into()),
        };
        self.metrics.record(&result, started);
        result
    }

    /// Predicts the instances of a request, one prediction per instance, in order.
    pub async fn predict_instances(&self, instances: Instances) -> Result<Vec<Value>, PredictError> {
        let started = Instant::now();
        self.arrivals.fetch_add(1, Ordering::Relaxed);
        let result = match instances.into_batch(&self.signature.inputs) {
            Ok(batch) => self.run(batch).await,
            Err(e) => Err(e.into()),
        };
        self.metrics.record(&result, started);
        result
    }

    /// Runs `batch` on a worker (a pass of its own or merged with others queued); a full queue
    /// answers at once.
    async fn run(&self, batch: Batch) -> Result<Vec<Value>, PredictError> {
        let (reply, mut answer) = oneshot::channel();
        let sender = self.sender.as_ref().ok_or(PredictError::Unavailable)?;
        let alone = self.in_flight.fetch_add(1, Ordering::AcqRel) == 0;
        let _in_flight = InFlight(&self.in_flight);
        match sender.try_send(Job { batch, reply }) {
            Ok(()) => self.metrics.queue_depth.set(sender.len() as f64),
            Err(TrySendError::Full(_)) => return Err(PredictError::Overloaded),
            Err(TrySendError::Disconnected(_)) => return Err(PredictError::Unavailable),
        }
        if alone {
            if let Some(result) = self.watch(&mut answer).await {
                return result;
            }
        }
        answer.await.unwrap_or(Err(PredictError::Unavailable))
    }

    /// Looks for a lone request's answer for up to [`ANSWER_WATCH`], yielding to the runtime
    /// between looks, so the thread that answers the client is still running when the pass ends
    /// instead of asleep on an idle core it must first be woken on. `None` once the time is up or
    /// another request arrives for this model (then it waits to be woken as usual).
    async fn watch(&self, answer: &mut Answer) -> Option<Result<Vec<Value>, PredictError>> {
        let until = Instant::now() + ANSWER_WATCH;
        let arrivals = self.arrivals.load(Ordering::Relaxed);
        loop {
            match answer.try_recv() {
                Ok(result) => return Some(result),
                Err(oneshot::error::TryRecvError::Closed) => return Some(Err(PredictError::Unavailable)),
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            let joined =
                self.arrivals.load(Ordering::Relaxed) != arrivals || self.in_flight.load(Ordering::Relaxed) > 1;
            if joined || Instant::now() >= until {
                return None;
            }
            tokio::task::yield_now().await;
        }
    }

    /// Stops taking requests, lets the workers finish what is queued, and joins them. Blocks.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.sender = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

impl Drop for ServedModel {
    fn drop(&mut self) {
        // Closing the queue ends the workers once it is drained; they are not joined here so a
        // drop on the async runtime never blocks it.
        self.sender = None;
    }
}

/// A TorchScript model loaded for inference, checked against its signature.
pub struct LoadedModule {
    pub module: CModule,
    pub signature: Signature,
    pub device: Device,
}

impl LoadedModule {
    /// Loads `dir/model.pt` (and `dir/signature.json` if present) in eval mode, on CUDA when
    /// `use_cuda` and the host has it, and warms it up. Blocks.
    pub fn load(dir: &Path, use_cuda: bool) -> Result<Self, LoadError> {
        let path = dir.join(MODEL_FILE);
        if !path.is_file() {
            return Err(LoadError::MissingModel);
        }
        let signature = Signature::read(dir)?;
        let device = if use_cuda && tch::Cuda::is_available() { Device::Cuda(0) } else { Device::Cpu };
        let mut module = CModule::load_on_device(&path, device)
            .map_err(|e| LoadError::NotTorchScript(first_line(&e.to_string())))?;
        module.set_eval();
        warm_up(&module, &signature, device)?;
        Ok(Self { module, signature, device })
    }

    /// One forward pass over `batch`, one prediction per row. Call under `no_grad`.
    pub fn forward(&self, batch: &Batch) -> Result<Vec<Value>, ForwardError> {
        forward(&self.module, batch, self.device, &self.signature.outputs)
    }
}

/// One forward pass of `module` over `batch`, split into per-row predictions.
fn forward(module: &CModule, batch: &Batch, device: Device, outputs: &[String]) -> Result<Vec<Value>, ForwardError> {
    let inputs = batch_to_inputs(batch, device);
    let output = module.forward_is(&inputs).map_err(|e| ForwardError::Torch(first_line(&e.to_string())))?;
    Ok(outputs_to_rows(output, batch.rows, outputs)?)
}

/// With a fully declared signature, one forward pass on zeros proves the model and signature
/// agree, and makes the first real request as fast as the rest.
fn warm_up(module: &CModule, signature: &Signature, device: Device) -> Result<(), LoadError> {
    if !signature.declared {
        return Ok(());
    }
    let mut instance = serde_json::Map::new();
    for input in &signature.inputs {
        let Some(shape) = &input.shape else { return Ok(()) };
        if shape.iter().any(|d| *d < 0) {
            return Ok(());
        }
        instance.insert(input.name.clone(), zeros(shape));
    }
    let instance = if signature.inputs.len() == 1 {
        instance.into_iter().next().map(|(_, v)| v).unwrap_or(Value::Null)
    } else {
        Value::Object(instance)
    };
    // Zeros of the declared shapes that do not make an instance mean the signature is unusable.
    let batch =
        Batch::from_instances(&[instance], &signature.inputs).map_err(|e| SignatureError::Invalid(e.message))?;
    let _guard = tch::no_grad_guard();
    let output = module
        .forward_is(&batch_to_inputs(&batch, device))
        .map_err(|e| LoadError::RejectsSignature(first_line(&e.to_string())))?;
    outputs_to_rows(output, 1, &signature.outputs)?;
    Ok(())
}

fn zeros(shape: &[i64]) -> Value {
    match shape.split_first() {
        None => Value::from(0),
        Some((&n, rest)) => Value::Array((0..n).map(|_| zeros(rest)).collect()),
    }
}

/// The informative line of a libtorch error: TorchScript errors carry a traceback and put the
/// cause on a line like `RuntimeError: mat1 and mat2 shapes cannot be multiplied (...)`.
fn first_line(text: &str) -> String {
    let lines = || text.lines().map(str::trim).filter(|l| !l.is_empty());
    lines().find(|l| l.contains("Error: ")).or_else(|| lines().next()).unwrap_or(text).to_owned()
}

struct Worker {
    engine: Restarting,
    receiver: Receiver<Job>,
    options: ServingOptions,
    metrics: ModelMetrics,
}

impl Worker {
    fn run(mut self) {
        let mut held: Option<Job> = None;
        loop {
            let first = match held.take() {
                Some(job) => job,
                None => match self.next_job() {
                    Some(job) => job,
                    None => return,
                },
            };
            let (jobs, next) = self.gather(first);
            held = next;
            self.metrics.queue_depth.set(self.receiver.len() as f64);
            self.metrics.batch_rows.record(jobs.iter().map(|j| j.batch.rows).sum::<usize>() as f64);
            self.execute(jobs);
        }
    }

    /// Waits for the next request. A worker that just finished a pass polls the queue for up to
    /// [`SPIN`] before it sleeps: waking a sleeping thread costs tens of microseconds, more than
    /// the forward pass of a small model, and requests tend to follow each other closely. It polls
    /// only while it has a core to itself: every [`SHARE_CHECK`] it compares its own CPU time
    /// with the time it has polled, and once it got less than half, threads that parse and answer
    /// requests are waiting for that core, so it sleeps and leaves the core to them.
    fn next_job(&self) -> Option<Job> {
        // `Some(next job or None at the end)` when the queue answered; `None` while it is empty.
        let poll = || match self.receiver.try_recv() {
            Ok(job) => Some(Some(job)),
            Err(crossbeam_channel::TryRecvError::Disconnected) => Some(None),
            Err(crossbeam_channel::TryRecvError::Empty) => None,
        };
        // Under load the next request is usually queued already: the clocks are read only when
        // polling starts.
        if let Some(next) = poll() {
            return next;
        }
        let mut polling = Polling::new(SPIN);
        while polling.go_on() {
            std::thread::yield_now();
            if let Some(next) = poll() {
                return next;
            }
        }
        self.receiver.recv().ok()
    }

    /// Collects requests that can share a forward pass with `first`. Returns them and, if one
    /// arrived that cannot join, that one for the next pass.
    fn gather(&self, first: Job) -> (Vec<Job>, Option<Job>) {
        let mut rows = first.batch.rows;
        let mut jobs = vec![first];
        let deadline = Instant::now() + self.options.max_queue_delay;
        while rows < self.options.max_batch_size {
            let next = if self.options.max_queue_delay.is_zero() {
                self.receiver.try_recv().ok()
            } else {
                self.receiver.recv_deadline(deadline).ok()
            };
            let Some(job) = next else { break };
            if job.batch.layout() != jobs[0].batch.layout() || rows + job.batch.rows > self.options.max_batch_size {
                return (jobs, Some(job));
            }
            rows += job.batch.rows;
            jobs.push(job);
        }
        (jobs, None)
    }

    fn execute(&mut self, mut jobs: Vec<Job>) {
        if jobs.len() == 1 {
            let job = jobs.remove(0);
            let result = self.forward(&job.batch);
            let _ = job.reply.send(result);
            return;
        }
        let mut merged = jobs[0].batch.clone();
        merged.reserve_rows(jobs[1..].iter().map(|j| j.batch.rows).sum());
        for job in &jobs[1..] {
            merged.extend_from(&job.batch);
        }
        match self.forward(&merged) {
            Ok(mut predictions) => {
                for job in jobs {
                    let rest = predictions.split_off(job.batch.rows.min(predictions.len()));
                    let mine = std::mem::replace(&mut predictions, rest);
                    let _ = job.reply.send(Ok(mine));
                }
            }
            Err(_) => {
                for job in jobs {
                    let result = self.forward(&job.batch);
                    let _ = job.reply.send(result);
                }
            }
        }
    }

    fn forward(&mut self, batch: &Batch) -> Result<Vec<Value>, PredictError> {
        self.engine.forward(batch).map_err(|e| match e {
            ForwardError::Crashed(why) => PredictError::Crashed(why),
            other => PredictError::Model(other.to_string()),
        })
    }
}

/// Polling for up to a limit that stops early once the polling thread gets less than half of
/// its core: then other threads (the runtime's, a worker process) are waiting for that core. The
/// clocks are read every [`SHARE_CHECK`] only. Used by the model workers' threads and processes.
pub(super) struct Polling {
    started: Instant,
    cpu_started: Duration,
    check_at: Instant,
    until: Instant,
}

impl Polling {
    pub(super) fn new(limit: Duration) -> Self {
        let started = Instant::now();
        Self { started, cpu_started: thread_cpu_time(), check_at: started + SHARE_CHECK, until: started + limit }
    }

    /// Whether to poll again.
    pub(super) fn go_on(&mut self) -> bool {
        let now = Instant::now();
        if now >= self.until {
            return false;
        }
        if now >= self.check_at {
            if thread_cpu_time().saturating_sub(self.cpu_started) * 2 < now - self.started {
                return false;
            }
            self.check_at = now + SHARE_CHECK;
        }
        true
    }
}

/// The CPU time the calling thread has run.
fn thread_cpu_time() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).map(Duration::from).unwrap_or_default()
}
