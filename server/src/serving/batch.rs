//! Batch prediction: one prediction per input line, for inputs of any size, at the speed of the
//! model.
//!
//! A reader thread streams the input files in order and cuts them into chunks of `batch_size`
//! lines (or TFRecords: [`tfrecord`]). `workers` threads share the chunks through one bounded queue; each parses its chunk,
//! runs one forward pass over it and appends the predictions to its own output shard
//! (`prediction.results-0000i-of-0000N`), so reading, parsing, model execution and writing of
//! different chunks overlap. Memory is bounded by the queue (about `2 × workers` chunks), however
//! large the input. A line that cannot be parsed or predicted is counted under its error message
//! (written to `prediction.errors_stats-…`), never fails the run on its own; when a merged forward
//! pass fails, the chunk's lines are retried one by one so only the bad ones are counted.
//!
//! A model directory that holds a scikit-learn, XGBoost or TensorFlow model instead of a
//! TorchScript `model.pt` is predicted by Python: each worker thread owns one worker process
//! ([`super::python::Predictor`]) and sends it each chunk's instances as one JSON list (a TFRecord
//! as `{"b64": ...}` of its bytes, the serialized Example a TensorFlow string input takes). A
//! process that crashes is started again; the chunk's lines count as errors.

pub mod tfrecord;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::Value;

use self::tfrecord::{Feature, Record, Records};
use super::instances::{Batch, Column, ColumnData, DType, InputSpec, InstanceError};
use super::model::{ForwardError, LoadError};
use super::process::{Restarting, TorchSpec};
use super::python::{Predictor, RoutineError};
use super::signature::Signature;

/// How input lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum InputFormat {
    /// One JSON instance per line (as in an online predict request's `instances`).
    Json,
    /// One row of comma-separated numbers per line: a one-dimensional instance.
    Csv,
    /// TFRecord files of `tf.train.Example`s: one instance per record, its features the inputs.
    TfRecord,
    /// Gzipped TFRecord files.
    TfRecordGzip,
}

impl InputFormat {
    fn is_tfrecord(self) -> bool {
        matches!(self, Self::TfRecord | Self::TfRecordGzip)
    }

    /// Whether the file at `path` can be of this format, from its first bytes: a TFRecord file
    /// (gzipped for `TfRecordGzip`) must start with a record header whose CRC matches; a file of
    /// another format is not checked. An empty file passes (it has no records).
    pub fn admits(self, path: &Path) -> std::io::Result<bool> {
        let file = File::open(path)?;
        if self == Self::Json || self == Self::Csv || file.metadata()?.len() == 0 {
            return Ok(true);
        }
        let mut header = Vec::with_capacity(12);
        let read = if self == Self::TfRecordGzip {
            flate2::read::MultiGzDecoder::new(file).take(12).read_to_end(&mut header)
        } else {
            file.take(12).read_to_end(&mut header)
        };
        match read {
            Ok(_) => Ok(tfrecord::is_header(&header)),
            // Not gzip data at all.
            Err(e) if matches!(e.kind(), std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData) => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

/// What every output file's name starts with (`prediction.results-…`, `prediction.errors_stats-…`).
pub const OUTPUT_PREFIX: &str = "prediction.";

/// Where a run reads its input files and writes its output files: local folders
/// ([`LocalFiles`]), or what the executor provides (objects in a bucket).
pub trait BatchFiles: Send + Sync {
    /// How many input files there are; they are read in order.
    fn inputs(&self) -> usize;
    /// Input file `index` as errors name it.
    fn input_name(&self, index: usize) -> String;
    /// Opens input file `index` at its start.
    fn open(&self, index: usize) -> std::io::Result<Box<dyn Read + Send>>;
    /// Makes the output folder (if the place has folders).
    fn create_folder(&self) -> Result<(), BatchError>;
    /// Creates output file `name` in the output folder; one that exists is
    /// [`BatchError::OutputExists`].
    fn create(&self, name: &str) -> Result<Box<dyn OutputFile>, BatchError>;
}

/// An output file being written.
pub trait OutputFile: Write + Send {
    /// Completes the file (an object becomes visible only now).
    fn finish(self: Box<Self>) -> std::io::Result<()>;
}

/// Input files and an output folder on the local file system.
#[derive(Clone, Debug)]
pub struct LocalFiles {
    pub inputs: Vec<PathBuf>,
    pub output_dir: PathBuf,
}

impl BatchFiles for LocalFiles {
    fn inputs(&self) -> usize {
        self.inputs.len()
    }

    fn input_name(&self, index: usize) -> String {
        self.inputs[index].display().to_string()
    }

    fn open(&self, index: usize) -> std::io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(File::open(&self.inputs[index])?))
    }

    /// Creates the folder; one that holds earlier predictions (any `prediction.` file) is
    /// refused, so two runs' shards never mix.
    fn create_folder(&self) -> Result<(), BatchError> {
        let failed = |source| BatchError::CreateOutput { name: self.output_dir.display().to_string(), source };
        std::fs::create_dir_all(&self.output_dir).map_err(failed)?;
        for entry in std::fs::read_dir(&self.output_dir).map_err(failed)? {
            let entry = entry.map_err(failed)?;
            if entry.file_name().to_string_lossy().starts_with(OUTPUT_PREFIX) {
                return Err(BatchError::OutputExists(entry.path().display().to_string()));
            }
        }
        Ok(())
    }

    fn create(&self, name: &str) -> Result<Box<dyn OutputFile>, BatchError> {
        Ok(Box::new(create_local(&self.output_dir.join(name))?))
    }
}

impl OutputFile for File {
    fn finish(self: Box<Self>) -> std::io::Result<()> {
        Ok(())
    }
}

/// A batch prediction run.
#[derive(Clone)]
pub struct BatchRun {
    pub model_dir: PathBuf,
    /// The input files and the output folder.
    pub files: Arc<dyn BatchFiles>,
    pub format: InputFormat,
    pub workers: usize,
    /// Lines per forward pass.
    pub batch_size: usize,
    pub use_cuda: bool,
    /// The runtime Python, for models of Python frameworks.
    pub python: PathBuf,
    /// The sandbox cell a Python model's worker processes run in (the job's project's);
    /// `None`: unconfined (a Ray shard: Ray decides who runs code on its nodes).
    pub cell: Option<crate::sandbox::Cell>,
    /// The TensorFlow signature to predict with (`signatureName`); `None`: the model's default.
    pub signature_name: Option<String>,
}

/// Counters a run updates as it goes, for progress reports.
#[derive(Debug, Default)]
pub struct BatchProgress {
    pub predictions: AtomicU64,
    pub errors: AtomicU64,
}

/// How a run ended.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BatchSummary {
    pub predictions: u64,
    pub errors: u64,
    /// The most frequent error message and its count.
    pub top_error: Option<(String, u64)>,
    /// Whether it stopped early because it was cancelled.
    pub cancelled: bool,
}

/// Why a run stopped before its end: the model, or a file that cannot be read or written. A bad
/// line never stops a run (see [`LineError`]).
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The model cannot be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The output folder cannot be created.
    #[error("cannot create the output path {name}: {source}")]
    CreateOutput { name: String, source: std::io::Error },
    /// An input file cannot be read.
    #[error("cannot read {name}: {source}")]
    Read { name: String, source: std::io::Error },
    /// An output file cannot be written.
    #[error("cannot write {name}: {source}")]
    Write { name: String, source: std::io::Error },
    /// A prediction cannot be written as JSON.
    #[error("cannot write predictions: {0}")]
    Encode(#[source] serde_json::Error),
    /// The output folder already holds an output file of this name.
    #[error("{0} already exists: name an output path without earlier predictions")]
    OutputExists(String),
    /// A worker thread panicked.
    #[error("a prediction worker panicked")]
    WorkerPanicked,
    /// `signatureName` names a signature other than `serving_default` for a TorchScript model.
    #[error("No signature found for signature key {0}: a TorchScript model has one signature, serving_default.")]
    Signature(String),
}

/// Why one input line gave no prediction. The run counts lines under this message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
enum LineError {
    #[error("The line is not UTF-8 text.")]
    NotUtf8,
    #[error("Invalid JSON instance: {0}")]
    Json(String),
    #[error("A CSV line must hold only numbers separated by commas.")]
    Csv,
    #[error("The record's CRC does not match its data.")]
    CorruptRecord,
    #[error(transparent)]
    Example(tfrecord::ExampleError),
    #[error("The Example has no feature named {0} (the model's input).")]
    MissingFeature(String),
    /// The instance does not fit the model's inputs.
    #[error("{}", .0.message)]
    Instance(InstanceError),
    /// The model failed on the line.
    #[error("Prediction failed: Error during model execution: {0}")]
    Model(ForwardError),
    /// A Python model failed on the line, with ML Engine's error code.
    #[error("Prediction failed: {0}")]
    Routine(RoutineError),
    /// The Python worker process exited while predicting the line's chunk.
    #[error("Prediction failed: {0}")]
    Crashed(String),
}

/// Lines or records of one input file: each item is `data[previous end..end]`.
#[derive(Debug, Default)]
struct Chunk {
    data: Vec<u8>,
    items: Vec<Item>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Item {
    end: usize,
    /// False for a TFRecord whose data CRC failed.
    intact: bool,
}

impl Chunk {
    /// The chunk with no items, its buffers kept for the next ones.
    fn emptied(mut self) -> Self {
        self.data.clear();
        self.items.clear();
        self
    }

    /// Each item's bytes and whether it is intact.
    fn items(&self) -> impl Iterator<Item = (&[u8], bool)> {
        let mut start = 0;
        self.items.iter().map(move |item| {
            let bytes = &self.data[start..item.end];
            start = item.end;
            (bytes, item.intact)
        })
    }
}

/// Runs the batch prediction to the end (or until `cancel` is set). Blocks: call it on a
/// blocking thread. Fails only when the model cannot be loaded or an output cannot be written.
pub fn run(job: &BatchRun, progress: &BatchProgress, cancel: &AtomicBool) -> Result<BatchSummary, BatchError> {
    let engine = match super::python_framework(&job.model_dir) {
        Some(framework) => {
            // One process loads the model first, so a model that cannot load fails the run
            // before anything is written; each worker then starts its own.
            let spec = super::python::PythonSpec {
                cell: job.cell.clone(),
                ..super::python_spec(&job.python, &job.model_dir, framework, 1)
            };
            let (first, _) = Predictor::start("batch", spec.clone())?;
            Engine::Python(spec, std::sync::Mutex::new(Some(first.with_signature(job.signature_name.clone()))))
        }
        None if !matches!(job.signature_name.as_deref(), None | Some("serving_default")) => {
            return Err(BatchError::Signature(job.signature_name.clone().unwrap_or_default()))
        }
        None => {
            // As for a Python model: one worker process loads the model first, so a model that
            // cannot load fails the run before anything is written.
            if !job.model_dir.join(super::MODEL_FILE).is_file() {
                return Err(LoadError::MissingModel.into());
            }
            let signature = Signature::read(&job.model_dir).map_err(LoadError::from)?;
            let options = super::ServingOptions { use_cuda: job.use_cuda, ..super::ServingOptions::default() };
            let mut spec = TorchSpec::new(&job.model_dir, &options).with_max_answer_bytes(BATCH_MAX_ANSWER_BYTES);
            spec.cell = job.cell.clone();
            let spec = Arc::new(spec);
            let (first, _) = Restarting::start(spec.clone(), "batch")?;
            Engine::Torch(spec, signature, std::sync::Mutex::new(Some(first)))
        }
    };
    job.files.create_folder()?;
    let workers = job.workers.max(1);
    let batch_size = job.batch_size.max(1);
    let (chunks, queue) = crossbeam_channel::bounded::<Chunk>(2 * workers);
    // Chunks the workers are done with go back to the reader, which fills them again: a chunk of
    // full-precision lines is about 1 MiB, and a fresh one each time cost page faults and regrowth.
    let (used, spare) = crossbeam_channel::bounded::<Chunk>(2 * workers + 2);
    let mut errors: HashMap<String, u64> = HashMap::new();
    let outcome = std::thread::scope(|scope| -> Result<(), BatchError> {
        let mut handles = Vec::with_capacity(workers);
        for index in 0..workers {
            let (queue, used) = (queue.clone(), used.clone());
            let shard = format!("prediction.results-{index:05}-of-{workers:05}");
            let (format, files, engine) = (job.format, &*job.files, &engine);
            handles.push(scope.spawn(move || match engine {
                Engine::Torch(spec, signature, first) => {
                    let started = first.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
                    let process = match started {
                        Some(process) => process,
                        None => Restarting::start(spec.clone(), "batch")?.0,
                    };
                    work(process, signature, format, &queue, &used, files, &shard, progress, cancel)
                }
                Engine::Python(spec, first) => {
                    let started = first.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
                    let predictor = match started {
                        Some(predictor) => predictor,
                        None => Predictor::start("batch", spec.clone())?.0.with_signature(job.signature_name.clone()),
                    };
                    work_python(predictor, format, &queue, &used, files, &shard, progress, cancel)
                }
            }));
        }
        drop((queue, used));
        let read = read_chunks(&*job.files, job.format, batch_size, &chunks, &spare, cancel);
        drop(chunks);
        for (index, handle) in handles.into_iter().enumerate() {
            let stats = handle.join().map_err(|_| BatchError::WorkerPanicked)??;
            let name = format!("prediction.errors_stats-{index:05}-of-{workers:05}");
            write_error_stats(&*job.files, &name, &stats)?;
            for (message, count) in stats {
                *errors.entry(message).or_default() += count;
            }
        }
        read
    });
    outcome?;
    let top_error = errors.into_iter().max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)));
    Ok(BatchSummary {
        predictions: progress.predictions.load(Ordering::Relaxed),
        errors: progress.errors.load(Ordering::Relaxed),
        top_error,
        cancelled: cancel.load(Ordering::Relaxed),
    })
}

/// Streams `files` into chunks of `batch_size` complete lines or records (a chunk never spans
/// two files).
fn read_chunks(
    files: &dyn BatchFiles,
    format: InputFormat,
    batch_size: usize,
    chunks: &crossbeam_channel::Sender<Chunk>,
    spare: &crossbeam_channel::Receiver<Chunk>,
    cancel: &AtomicBool,
) -> Result<(), BatchError> {
    for index in 0..files.inputs() {
        let unreadable = |source| BatchError::Read { name: files.input_name(index), source };
        let opened = files.open(index).map_err(unreadable)?;
        let reader = BufReader::with_capacity(1 << 20, opened);
        let read = match format {
            InputFormat::Json | InputFormat::Csv => read_lines(reader, batch_size, chunks, spare, cancel),
            InputFormat::TfRecord => read_records(Records::new(reader), batch_size, chunks, spare, cancel),
            InputFormat::TfRecordGzip => {
                let inflated = BufReader::with_capacity(1 << 20, flate2::read::MultiGzDecoder::new(reader));
                read_records(Records::new(inflated), batch_size, chunks, spare, cancel)
            }
        };
        match read.map_err(unreadable)? {
            Flow::Go => {}
            Flow::Stop => return Ok(()),
        }
    }
    Ok(())
}

/// Whether to read on after a file.
enum Flow {
    Go,
    Stop,
}

/// Lines of `reader` (a last line without a newline gets one), each an intact item.
fn read_lines(
    mut reader: impl BufRead,
    batch_size: usize,
    chunks: &crossbeam_channel::Sender<Chunk>,
    spare: &crossbeam_channel::Receiver<Chunk>,
    cancel: &AtomicBool,
) -> std::io::Result<Flow> {
    cut_chunks(batch_size, chunks, spare, cancel, |data| {
        if reader.read_until(b'\n', data)? == 0 {
            return Ok(None);
        }
        if data.last() != Some(&b'\n') {
            data.push(b'\n');
        }
        Ok(Some(true))
    })
}

/// The records of a TFRecord stream; a record whose data fails its checksum is an item that is
/// not intact.
fn read_records(
    mut records: Records<impl BufRead>,
    batch_size: usize,
    chunks: &crossbeam_channel::Sender<Chunk>,
    spare: &crossbeam_channel::Receiver<Chunk>,
    cancel: &AtomicBool,
) -> std::io::Result<Flow> {
    cut_chunks(batch_size, chunks, spare, cancel, |data| Ok(records.next_into(data)?.map(|r| r == Record::Intact)))
}

/// Cuts the items that `next` appends to a chunk's data (`Some(intact)`, `None` at the end) into
/// chunks of `batch_size` items onto `chunks` (refilling the workers' `spare` ones when there are),
/// until the input ends, the queue closes or the job is cancelled.
fn cut_chunks(
    batch_size: usize,
    chunks: &crossbeam_channel::Sender<Chunk>,
    spare: &crossbeam_channel::Receiver<Chunk>,
    cancel: &AtomicBool,
    mut next: impl FnMut(&mut Vec<u8>) -> std::io::Result<Option<bool>>,
) -> std::io::Result<Flow> {
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Ok(Flow::Stop);
        }
        let mut chunk = spare.try_recv().map(Chunk::emptied).unwrap_or_default();
        while chunk.items.len() < batch_size {
            let Some(intact) = next(&mut chunk.data)? else { break };
            chunk.items.push(Item { end: chunk.data.len(), intact });
        }
        if chunk.items.is_empty() {
            return Ok(Flow::Go);
        }
        if chunks.send(chunk).is_err() {
            return Ok(Flow::Stop);
        }
    }
}

/// One worker: parse, predict and write chunks until the queue closes. Returns its error counts.
fn work(
    mut model: Restarting,
    signature: &Signature,
    format: InputFormat,
    queue: &crossbeam_channel::Receiver<Chunk>,
    used: &crossbeam_channel::Sender<Chunk>,
    files: &dyn BatchFiles,
    shard: &str,
    progress: &BatchProgress,
    cancel: &AtomicBool,
) -> Result<HashMap<String, u64>, BatchError> {
    let unwritable = |source| BatchError::Write { name: shard.to_owned(), source };
    let file = files.create(shard)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut errors: HashMap<String, u64> = HashMap::new();
    let inputs = &signature.inputs;
    let fast = inputs.len() == 1 && inputs[0].dtype == DType::Float32;
    let mut parsed: Vec<Parsed> = Vec::new();
    for chunk in queue {
        if cancel.load(Ordering::Relaxed) {
            break;
        }
        parsed.clear();
        for (item, intact) in chunk.items() {
            if format.is_tfrecord() {
                parsed.push(if intact { parse_example(item, inputs) } else { Err(LineError::CorruptRecord) });
                continue;
            }
            let line = trim(item);
            if !line.is_empty() {
                parsed.push(parse_line(line, format, inputs, fast));
            }
        }
        write_results(&mut out, predict_chunk(&mut model, &parsed), &mut errors, progress, shard)?;
        let _ = used.try_send(chunk);
    }
    out.into_inner().map_err(|e| unwritable(e.into_error()))?.finish().map_err(unwritable)?;
    Ok(errors)
}

/// The largest answer of one forward pass of a batch job (`batchSize` lines): it stops a runaway
/// worker, not a model.
const BATCH_MAX_ANSWER_BYTES: usize = 256 << 20;

/// What predicts a run's lines.
enum Engine {
    /// A TorchScript model: its worker processes' settings, its signature, and the process
    /// started first.
    Torch(Arc<TorchSpec>, Signature, std::sync::Mutex<Option<Restarting>>),
    /// A Python model: the settings of its processes and the process started first.
    Python(super::python::PythonSpec, std::sync::Mutex<Option<Predictor>>),
}

/// One worker over a Python model: each chunk's instances as one JSON list to its process.
fn work_python(
    mut predictor: Predictor,
    format: InputFormat,
    queue: &crossbeam_channel::Receiver<Chunk>,
    used: &crossbeam_channel::Sender<Chunk>,
    files: &dyn BatchFiles,
    shard: &str,
    progress: &BatchProgress,
    cancel: &AtomicBool,
) -> Result<HashMap<String, u64>, BatchError> {
    use base64::Engine as _;
    let unwritable = |source| BatchError::Write { name: shard.to_owned(), source };
    let file = files.create(shard)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut errors: HashMap<String, u64> = HashMap::new();
    let mut parsed: Vec<Result<Value, LineError>> = Vec::new();
    for chunk in queue {
        if cancel.load(Ordering::Relaxed) {
            break;
        }
        parsed.clear();
        for (item, intact) in chunk.items() {
            if format.is_tfrecord() {
                parsed.push(if intact {
                    Ok(serde_json::json!({"b64": base64::engine::general_purpose::STANDARD.encode(item)}))
                } else {
                    Err(LineError::CorruptRecord)
                });
                continue;
            }
            let line = trim(item);
            if line.is_empty() {
                continue;
            }
            parsed.push(std::str::from_utf8(line).map_err(|_| LineError::NotUtf8).and_then(|text| match format {
                InputFormat::Csv => {
                    let row: Result<Vec<f64>, _> = text.split(',').map(|v| v.trim().parse::<f64>()).collect();
                    Ok(Value::from(row.map_err(|_| LineError::Csv)?))
                }
                _ => serde_json::from_str::<Value>(text).map_err(|e| LineError::Json(e.to_string())),
            }));
        }
        let good: Vec<Value> = parsed.iter().filter_map(|p| p.as_ref().ok().cloned()).collect();
        let mut predicted: std::vec::IntoIter<Result<Value, LineError>> = if good.is_empty() {
            Vec::new().into_iter()
        } else {
            let count = good.len();
            match predictor.predict(good.clone()) {
                Ok(Ok(predictions)) => predictions.into_iter().map(Ok).collect::<Vec<_>>().into_iter(),
                Ok(Err(_)) if count > 1 => good
                    .into_iter()
                    .map(|instance| match predictor.predict(vec![instance]) {
                        Ok(Ok(mut one)) => Ok(one.pop().unwrap_or(Value::Null)),
                        Ok(Err(error)) => Err(LineError::Routine(error)),
                        Err(crash) => Err(LineError::Crashed(crash)),
                    })
                    .collect::<Vec<_>>()
                    .into_iter(),
                Ok(Err(error)) => vec![Err(LineError::Routine(error))].into_iter(),
                Err(crash) => vec![Err(LineError::Crashed(crash)); count].into_iter(),
            }
        };
        let results = parsed.drain(..).map(|line| match line {
            Ok(_) => predicted.next().unwrap_or(Err(LineError::Crashed("no prediction".into()))),
            Err(error) => Err(error),
        });
        write_results(&mut out, results, &mut errors, progress, shard)?;
        let _ = used.try_send(chunk);
    }
    out.into_inner().map_err(|e| unwritable(e.into_error()))?.finish().map_err(unwritable)?;
    Ok(errors)
}

/// Appends one chunk's predictions to a shard, one JSON line each, and counts the failed lines
/// under their message; the progress counters move once per chunk.
fn write_results(
    out: &mut impl Write,
    results: impl IntoIterator<Item = Result<Value, LineError>>,
    errors: &mut HashMap<String, u64>,
    progress: &BatchProgress,
    shard: &str,
) -> Result<(), BatchError> {
    let (mut written, mut failed) = (0, 0);
    for result in results {
        match result {
            Ok(prediction) => {
                serde_json::to_writer(&mut *out, &prediction).map_err(BatchError::Encode)?;
                out.write_all(b"\n").map_err(|source| BatchError::Write { name: shard.to_owned(), source })?;
                written += 1;
            }
            Err(error) => {
                *errors.entry(error.to_string()).or_default() += 1;
                failed += 1;
            }
        }
    }
    progress.predictions.fetch_add(written, Ordering::Relaxed);
    progress.errors.fetch_add(failed, Ordering::Relaxed);
    Ok(())
}

/// A parsed line: a one-row batch, or why the line cannot be one.
type Parsed = Result<Batch, LineError>;

/// Predicts the parsed lines of a chunk: rows of the same layout in one forward pass (merged runs
/// in line order); a failed pass is retried row by row. One result per line, in order.
fn predict_chunk(model: &mut Restarting, parsed: &[Parsed]) -> Vec<Result<Value, LineError>> {
    let mut results: Vec<Result<Value, LineError>> = Vec::with_capacity(parsed.len());
    let mut start = 0;
    while start < parsed.len() {
        let first = match &parsed[start] {
            Ok(first) => first,
            Err(error) => {
                results.push(Err(error.clone()));
                start += 1;
                continue;
            }
        };
        // The run of good lines with the first one's layout.
        let mut end = start + 1;
        while end < parsed.len() && parsed[end].as_ref().is_ok_and(|b| b.layout() == first.layout()) {
            end += 1;
        }
        let mut merged = first.clone();
        for row in parsed[start + 1..end].iter().flatten() {
            merged.extend_from(row);
        }
        match model.forward(&merged) {
            Ok(predictions) => results.extend(predictions.into_iter().map(Ok)),
            Err(_) if end - start > 1 => {
                for row in parsed[start..end].iter().flatten() {
                    results
                        .push(model.forward(row).map(|mut p| p.pop().unwrap_or(Value::Null)).map_err(LineError::Model));
                }
            }
            Err(e) => results.push(Err(LineError::Model(e))),
        }
        start = end;
    }
    results
}

/// Parses one input line into a one-row batch.
fn parse_line(line: &[u8], format: InputFormat, inputs: &[InputSpec], fast: bool) -> Parsed {
    if fast {
        let numbers = match format {
            InputFormat::Csv => numbers(line),
            _ => line.strip_prefix(b"[").and_then(|l| l.strip_suffix(b"]")).and_then(numbers),
        };
        if let Some(values) = numbers {
            let spec = &inputs[0];
            let fits = spec.shape.as_ref().is_none_or(|s| s.len() == 1 && (s[0] == -1 || s[0] == values.len() as i64));
            if fits {
                let row_shape = vec![values.len() as i64];
                let column =
                    Column { name: spec.name.clone(), dtype: DType::Float32, row_shape, data: ColumnData::F32(values) };
                return Ok(Batch { rows: 1, columns: vec![column] });
            }
        }
    }
    let text = std::str::from_utf8(line).map_err(|_| LineError::NotUtf8)?;
    let instance = match format {
        InputFormat::Csv => {
            let row: Result<Vec<f64>, _> = text.split(',').map(|v| v.trim().parse::<f64>()).collect();
            Value::from(row.map_err(|_| LineError::Csv)?)
        }
        _ => serde_json::from_str::<Value>(text).map_err(|e| LineError::Json(e.to_string()))?,
    };
    Batch::from_instances(std::slice::from_ref(&instance), inputs).map_err(LineError::Instance)
}

/// Parses one serialized `tf.train.Example` into a one-row batch: each input is the feature of
/// its name (a one-input model also takes an Example's only feature, whatever its name), its
/// flat list shaped as the input's declared shape when the counts agree. A one-input float32
/// model's features go straight into its column; others become a JSON instance, checked as one.
fn parse_example(record: &[u8], inputs: &[InputSpec]) -> Parsed {
    let features = tfrecord::parse_example(record).map_err(LineError::Example)?;
    let find = |spec: &InputSpec| {
        let named = features.iter().find(|(name, _)| *name == spec.name);
        let only = (inputs.len() == 1 && features.len() == 1).then(|| &features[0]);
        named.or(only).map(|(_, feature)| feature).ok_or_else(|| LineError::MissingFeature(spec.name.clone()))
    };
    if let [spec] = inputs {
        if let (DType::Float32, Feature::Floats(values)) = (spec.dtype, find(spec)?) {
            if let Some(row_shape) = example_shape(spec, values.len()) {
                let column = Column {
                    name: spec.name.clone(),
                    dtype: DType::Float32,
                    row_shape,
                    data: ColumnData::F32(values.clone()),
                };
                return Ok(Batch { rows: 1, columns: vec![column] });
            }
        }
    }
    let mut object = serde_json::Map::new();
    for spec in inputs {
        let values: Vec<Value> = match find(spec)? {
            Feature::Floats(v) => v.iter().map(|x| Value::from(f64::from(*x))).collect(),
            Feature::Ints(v) => v.iter().map(|x| Value::from(*x)).collect(),
            Feature::Bytes(v) => {
                use base64::Engine;
                v.iter()
                    .map(|b| serde_json::json!({"b64": base64::engine::general_purpose::STANDARD.encode(b)}))
                    .collect()
            }
        };
        let shaped = match example_shape(spec, values.len()) {
            Some(shape) if shape.len() > 1 => nest(&values, &shape),
            _ => Value::Array(values),
        };
        object.insert(spec.name.clone(), shaped);
    }
    let instance = if inputs.len() == 1 {
        object.into_iter().next().map_or(Value::Null, |(_, v)| v)
    } else {
        Value::Object(object)
    };
    Batch::from_instances(std::slice::from_ref(&instance), inputs).map_err(LineError::Instance)
}

/// The shape of one instance of `spec` from a flat list of `count` values: the declared shape
/// when it is fully known and holds `count` values, `[count]` when none is declared or it is
/// one-dimensional; `None` when they disagree.
fn example_shape(spec: &InputSpec, count: usize) -> Option<Vec<i64>> {
    let count = count as i64;
    match &spec.shape {
        None => Some(vec![count]),
        Some(shape) if shape.len() == 1 && (shape[0] == -1 || shape[0] == count) => Some(vec![count]),
        Some(shape) if shape.iter().all(|d| *d >= 0) && shape.iter().product::<i64>() == count => Some(shape.clone()),
        Some(_) => None,
    }
}

/// Row-major `values` as nested lists of `shape`.
fn nest(values: &[Value], shape: &[i64]) -> Value {
    match shape.split_first() {
        None => values.first().cloned().unwrap_or(Value::Null),
        Some((&n, rest)) => {
            let step = rest.iter().product::<i64>().max(1) as usize;
            Value::Array((0..n as usize).map(|i| nest(&values[i * step..(i + 1) * step], rest)).collect())
        }
    }
}

/// `1.5, -2, 3e-4` → floats; `None` when any item is not a plain number. Each number becomes
/// the nearest f64, then f32, as a JSON number does on the online path.
fn numbers(list: &[u8]) -> Option<Vec<f32>> {
    let mut values = Vec::with_capacity(list.len() / 6 + 1);
    let mut i = skip_spaces(list, 0);
    loop {
        let (value, next) = number(list, i)?;
        values.push(value);
        i = skip_spaces(list, next);
        match list.get(i) {
            None => return Some(values),
            Some(b',') => i = skip_spaces(list, i + 1),
            Some(_) => return None,
        }
    }
}

fn skip_spaces(text: &[u8], mut i: usize) -> usize {
    while text.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

/// One number starting at `start`: returns it and where it ends (a `,`, a space or the end must
/// follow). fast-float2 reads it in one pass, correctly rounded to f64 as the standard parser does,
/// then it becomes f32 as a JSON number does on the online path. (A hand-written Clinger fast
/// path ran first here until full-precision floats showed that it scanned each of their 17
/// digits twice, the fast path then declining them: a third of the job's parse time.)
fn number(text: &[u8], start: usize) -> Option<(f32, usize)> {
    let (parsed, length): (f64, usize) = fast_float2::parse_partial(&text[start..]).ok()?;
    let end = start + length;
    let delimited = end == text.len() || text[end] == b',' || text[end].is_ascii_whitespace();
    (delimited && parsed.is_finite()).then_some((parsed as f32, end))
}

fn trim(line: &[u8]) -> &[u8] {
    let start = line.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(line.len());
    let end = line.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &line[start..end]
}

/// `{"error": message, "count": n}` per line, most frequent first.
fn write_error_stats(files: &dyn BatchFiles, name: &str, stats: &HashMap<String, u64>) -> Result<(), BatchError> {
    let mut sorted: Vec<(&String, &u64)> = stats.iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    let mut out = String::new();
    for (message, count) in sorted {
        out.push_str(&serde_json::json!({"error": message, "count": count}).to_string());
        out.push('\n');
    }
    let unwritable = |source| BatchError::Write { name: name.to_owned(), source };
    let mut file = files.create(name)?;
    file.write_all(out.as_bytes()).map_err(unwritable)?;
    file.finish().map_err(unwritable)
}

/// Creates the output file `path`, which must not exist: never through a symlink (`O_NOFOLLOW`,
/// and `create_new` refuses any existing entry), so a link planted in the output folder cannot
/// make the server write another file. A folder that already holds these shards is refused.
pub fn create_local(path: &Path) -> Result<File, BatchError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create_new(true).custom_flags(nix::libc::O_NOFOLLOW).open(path).map_err(
        |source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => BatchError::OutputExists(path.display().to_string()),
            _ => BatchError::Write { name: path.display().to_string(), source },
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_lines_take_the_fast_path_and_others_the_general_one() {
        let inputs = vec![InputSpec { name: "x".into(), dtype: DType::Float32, shape: Some(vec![3]) }];
        let batch = parse_line(b"[1, 2.5, -3e-1]", InputFormat::Json, &inputs, true).expect("parsed");
        assert_eq!(batch.columns[0].data, ColumnData::F32(vec![1.0, 2.5, -0.3]));
        let batch = parse_line(b"1,2,3", InputFormat::Csv, &inputs, true).expect("parsed");
        assert_eq!(batch.columns[0].row_shape, vec![3]);
        let named = parse_line(br#"{"x": [1, 2, 3]}"#, InputFormat::Json, &inputs, true).expect("parsed");
        assert_eq!(named.columns[0].data, ColumnData::F32(vec![1.0, 2.0, 3.0]));
        let short = parse_line(b"[1, 2]", InputFormat::Json, &inputs, true).expect_err("wrong shape").to_string();
        assert!(short.contains("shape"), "{short}");
        let bad = |line: &[u8], format| parse_line(line, format, &inputs, true).expect_err("bad").to_string();
        assert!(bad(b"[1, 2", InputFormat::Json).starts_with("Invalid JSON"));
        assert!(bad(b"1,x,3", InputFormat::Csv).contains("CSV"));
    }

    #[test]
    fn the_number_scanner_agrees_with_the_standard_parser() {
        let cases = [
            "0",
            "-0",
            "1",
            "0.5",
            "-0.25",
            "3.14159",
            "0.0001",
            "123456.789",
            "1e3",
            "-2.5E-4",
            "0.1234567890123456789",
            "12345678901234567890",
            "1234567890123456789012345.5",
            "7.",
            "00012.50",
            "1e-30",
            "0.30000000000000004",
        ];
        for case in cases {
            let (value, end) = number(case.as_bytes(), 0).unwrap_or_else(|| panic!("{case} parses"));
            assert_eq!(end, case.len());
            assert_eq!(value, case.parse::<f64>().expect("std") as f32, "{case}");
        }
        for bad in ["", "-", ".", "abc", "1.2.3", "1e", "nan", "inf", "--1", "1-"] {
            assert!(number(bad.as_bytes(), 0).is_none(), "{bad} is not a number");
        }
        assert_eq!(numbers(b" 1 , 2.5,-3 "), Some(vec![1.0, 2.5, -3.0]));
        assert_eq!(numbers(b"1,,2"), None);
        assert_eq!(numbers(b"1 2"), None);
    }

    #[test]
    fn chunks_hold_complete_lines_of_one_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(&a, "1\n2\n3").expect("write");
        std::fs::write(&b, "4\n").expect("write");
        let (sender, receiver) = crossbeam_channel::unbounded();
        let files = LocalFiles { inputs: vec![a, b], output_dir: dir.path().join("out") };
        let (_, spare) = crossbeam_channel::bounded(1);
        read_chunks(&files, InputFormat::Json, 2, &sender, &spare, &AtomicBool::new(false)).expect("read");
        drop(sender);
        let chunks: Vec<String> = receiver.iter().map(|c| String::from_utf8(c.data).expect("utf8")).collect();
        assert_eq!(chunks, ["1\n2\n", "3\n", "4\n"]);
    }
}
