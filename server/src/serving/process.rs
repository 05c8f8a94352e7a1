//! A TorchScript model's worker process, as the server sees it: started (this executable, as
//! `anneal model-worker`) in the version's or job's sandbox cell, sent one [`Batch`] per forward
//! pass over its stdin, answered over its stdout ([`super::wire`]). One process per worker
//! thread; the thread owns it, so no locks are taken on the way.
//!
//! The thread that sent a pass polls for the answer for up to [`SPIN`] before it blocks (a small
//! model's pass is tens of microseconds, and a thread that slept must be woken); a pass that
//! outlives `predict_timeout` has its process stopped. A process that exits, sends more than
//! `max_answer_bytes` or sends what is not an answer fails that pass with a
//! [`ForwardError::Crashed`] naming why, is stopped, and the next pass starts a new one.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use serde_json::Value;

use super::exits::{self, Tail};
use super::instances::Batch;
use super::model::{ForwardError, LoadError};
use super::wire::{self, FrameError, Hello, Ready};
use crate::sandbox::Cell;

/// The size asked of a worker's pipes.
const PIPE_BYTES: i32 = 1 << 20;

/// How long a thread that sent a pass polls for its answer before it blocks (less when its
/// core is wanted: [`super::model::Polling`]).
const SPIN: Duration = Duration::from_micros(500);

/// How a model's worker processes are started.
#[derive(Clone, Debug)]
pub struct TorchSpec {
    /// The program run as `PROGRAM model-worker`: this executable.
    pub program: PathBuf,
    pub model_dir: PathBuf,
    /// libtorch intra-op threads.
    pub threads: i32,
    pub use_cuda: bool,
    /// The sandbox cell the processes run in; `None`: unconfined, as the server's user.
    pub cell: Option<Cell>,
    /// How long loading and warming up may take.
    pub load_timeout: Duration,
    /// How long one pass may take before the process is stopped.
    pub predict_timeout: Duration,
    /// The largest answer read from a process.
    pub max_answer_bytes: usize,
}

impl TorchSpec {
    /// Worker processes for the model in `model_dir`, with `options`' threads, device and
    /// program, unconfined until [`TorchSpec::in_cell`], answers bounded by the default.
    pub fn new(model_dir: &std::path::Path, options: &super::ServingOptions) -> Self {
        Self {
            program: options.worker_program.clone(),
            model_dir: model_dir.to_path_buf(),
            threads: options.intra_op_threads,
            use_cuda: options.use_cuda,
            cell: None,
            load_timeout: Duration::from_secs(300),
            predict_timeout: Duration::from_secs(120),
            max_answer_bytes: super::python::DEFAULT_MAX_ANSWER_BYTES,
        }
    }

    /// The processes run in `cell`.
    pub fn in_cell(mut self, cell: Cell) -> Self {
        self.cell = Some(cell);
        self
    }

    /// Answers of more than `bytes` fail their pass.
    pub fn with_max_answer_bytes(mut self, bytes: usize) -> Self {
        self.max_answer_bytes = bytes.max(1);
        self
    }
}

/// One running worker process.
pub struct TorchProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    stderr: Tail,
    confined: bool,
    request: Vec<u8>,
}

impl TorchProcess {
    /// Starts a process and waits for it to load the model. Blocks.
    pub fn start(spec: &TorchSpec, name: &str) -> Result<(Self, Ready), LoadError> {
        let mut command = match &spec.cell {
            Some(cell) => cell
                .clone()
                .read(&spec.model_dir)
                .read(&spec.program)
                .command(&spec.program)
                .map_err(|e| LoadError::Isolation(e.to_string()))?,
            None => crate::sandbox::unconfined(&spec.program),
        };
        command
            .arg("model-worker")
            .arg("--model-dir")
            .arg(&spec.model_dir)
            .arg("--threads")
            .arg(spec.threads.max(1).to_string())
            .args(spec.use_cuda.then_some("--cuda"))
            .current_dir(&spec.model_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command.spawn().map_err(LoadError::Worker)?;
        let (Some(stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(LoadError::PythonExited("its pipes could not be opened".into()));
        };
        // A pass of 64 rows of 784 floats is 200 KB: in the default 64 KiB pipes it would take
        // several wake-ups of each side to cross (best effort: the system's maximum may be lower).
        for pipe in [stdin.as_fd(), stdout.as_fd()] {
            let _ = nix::fcntl::fcntl(pipe, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_BYTES));
        }
        let tail = Tail::follow(name, stderr);
        let mut process =
            Self { child, stdin, stdout, stderr: tail, confined: spec.cell.is_some(), request: Vec::new() };
        let hello = process
            .answer(spec.load_timeout, 64 << 10)
            .map_err(|why| LoadError::PythonExited(process.exit_description(&why)))?;
        match serde_json::from_slice::<Hello>(&hello) {
            Ok(Hello::Ready(ready)) => Ok((process, ready)),
            Ok(Hello::Failed { message }) => Err(LoadError::Refused(message)),
            Err(e) => Err(LoadError::PythonExited(format!("its first answer was not understood: {e}"))),
        }
    }

    /// One forward pass over `batch`: its predictions, the model's error, or
    /// [`ForwardError::Crashed`] when the process failed (it is then stopped).
    pub fn forward(&mut self, batch: &Batch, spec: &TorchSpec) -> Result<Vec<Value>, ForwardError> {
        wire::encode_batch(batch, &mut self.request);
        if let Err(e) = wire::write_frame(&mut self.stdin, &[&self.request]) {
            let why = format!("it stopped taking requests ({e})");
            return Err(ForwardError::Crashed(self.exit_description(&why)));
        }
        let frame = match self.answer(spec.predict_timeout, spec.max_answer_bytes) {
            Ok(frame) => frame,
            Err(why) => return Err(ForwardError::Crashed(self.exit_description(&why))),
        };
        match wire::decode_answer(&frame) {
            Ok(Ok(predictions)) if predictions.len() == batch.rows => Ok(predictions),
            Ok(Ok(predictions)) => Err(ForwardError::Torch(format!(
                "the model gave {} predictions for {} instances",
                predictions.len(),
                batch.rows
            ))),
            Ok(Err(message)) => Err(ForwardError::Torch(message)),
            Err(e) => Err(ForwardError::Crashed(self.exit_description(&e.to_string()))),
        }
    }

    /// Reads the next frame, waiting at most `timeout`: polled for [`SPIN`], then waited for.
    fn answer(&mut self, timeout: Duration, max: usize) -> Result<Vec<u8>, String> {
        let started = Instant::now();
        let ready = |wait: PollTimeout, stdout: &ChildStdout| {
            let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::POLLIN)];
            nix::poll::poll(&mut fds, wait).is_ok_and(|n| n > 0)
        };
        let mut readable = false;
        let mut polling = super::model::Polling::new(SPIN.min(timeout));
        while polling.go_on() {
            if ready(PollTimeout::ZERO, &self.stdout) {
                readable = true;
                break;
            }
            std::thread::yield_now();
        }
        while !readable {
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(format!("it took longer than {} s", timeout.as_secs_f64()));
            }
            let wait = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
            readable = ready(wait, &self.stdout);
        }
        wire::read_frame(&mut self.stdout, max).map_err(|e| match e {
            FrameError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => "it exited".to_owned(),
            other => other.to_string(),
        })
    }

    /// Stops the process and says why it failed: `why`, its exit status, its last stderr lines.
    fn exit_description(&mut self, why: &str) -> String {
        self.stop();
        let status = exits::status(&mut self.child);
        let lines = self.stderr.lines(str::to_owned);
        if lines.is_empty() {
            format!("the model's worker process failed: {why} ({status})")
        } else {
            format!("the model's worker process failed: {why} ({status}); its last lines: {}", lines.join(" | "))
        }
    }

    /// Stops the process and everything it started ([`exits::stop`]).
    fn stop(&mut self) {
        exits::stop(self.child.id(), self.confined);
    }
}

impl Drop for TorchProcess {
    fn drop(&mut self) {
        self.stop();
        let _ = self.child.wait();
    }
}

/// A worker process per thread that starts again after a crash.
#[cfg(not(feature = "in-process"))]
pub struct Restarting {
    spec: Arc<TorchSpec>,
    name: String,
    process: Option<TorchProcess>,
}

#[cfg(not(feature = "in-process"))]
impl Restarting {
    /// Starts the first process. Blocks.
    pub fn start(spec: Arc<TorchSpec>, name: &str) -> Result<(Self, Ready), LoadError> {
        let (process, ready) = TorchProcess::start(&spec, name)?;
        Ok((Self { spec, name: name.to_owned(), process: Some(process) }, ready))
    }

    /// One pass (see [`TorchProcess::forward`]); a process that failed is started again for the
    /// next pass, and one that cannot start fails this pass.
    pub fn forward(&mut self, batch: &Batch) -> Result<Vec<Value>, ForwardError> {
        let process = match &mut self.process {
            Some(process) => process,
            None => {
                let (process, _) = TorchProcess::start(&self.spec, &self.name)
                    .map_err(|e| ForwardError::Crashed(format!("its worker process could not start again: {e}")))?;
                tracing::info!(version.name = %self.name, "a model worker process was started again");
                self.process.insert(process)
            }
        };
        let result = process.forward(batch, &self.spec);
        if let Err(ForwardError::Crashed(why)) = &result {
            tracing::warn!(version.name = %self.name, error = %why, "a model worker process failed");
            self.process = None;
        }
        result
    }
}

/// With the `in-process` build feature (the benchmarks' comparison build, never shipped): the
/// model loaded in this thread's own process, as Anneal served before its sandbox.
#[cfg(feature = "in-process")]
pub struct Restarting(super::model::LoadedModule);

#[cfg(feature = "in-process")]
impl Restarting {
    pub fn start(spec: Arc<TorchSpec>, _name: &str) -> Result<(Self, Ready), LoadError> {
        tch::set_num_threads(spec.threads.max(1));
        let loaded = super::model::LoadedModule::load(&spec.model_dir, spec.use_cuda)?;
        let ready = Ready::on(loaded.device);
        Ok((Self(loaded), ready))
    }

    pub fn forward(&mut self, batch: &Batch) -> Result<Vec<Value>, ForwardError> {
        let _guard = tch::no_grad_guard();
        self.0.forward(batch)
    }
}
