//! One shard of a batch prediction job on Ray: what a Ray worker runs. Anneal's driver starts
//! `anneal ray-batch-shard '<spec>'` (a hidden subcommand of the same binary) on the worker's
//! node; it runs Anneal's own batch engine ([`crate::serving::batch`]) over its share of the
//! input files and writes its output shard (`prediction.results-0000K-of-0000N`, K this shard,
//! N the job's shards, as the local executor names its workers' shards), and prints its counts
//! as progress lines (`ANNEAL-BATCH {json}`) that the follower turns into `predictionOutput`.
//!
//! The model, the inputs and the output are local paths (the node must see them) or objects in a
//! bucket: the buckets' configurations (with credentials) come in the `ANNEAL_SHARD_BUCKETS`
//! variable, never in the command line; a model in a bucket is downloaded into a temporary
//! folder first, inputs are streamed in ranged reads and the output shard is uploaded as it is
//! written, as on the local executor ([`JobFiles`]).
//!
//! SIGTERM (the job cancelled) stops the engine after its current chunk: what was written stays,
//! and the last progress line counts exactly that, as a cancelled local job does.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::executor::predict::JobFiles;
use crate::serving::batch::{self, BatchError, BatchFiles, BatchProgress, BatchRun, InputFormat, OutputFile};
use crate::storage::{AwsEnvironment, BucketConfig, Buckets, Location};

/// The variable that holds the configurations of the buckets a shard reads or writes (JSON).
pub const BUCKETS_VARIABLE: &str = "ANNEAL_SHARD_BUCKETS";

/// Marks a shard's progress lines in its output.
pub const PROGRESS_MARK: &str = "ANNEAL-BATCH ";

/// How often a shard prints its counts.
const PROGRESS_EVERY: Duration = Duration::from_millis(300);

/// What one shard does (the subcommand's argument, JSON).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardSpec {
    /// The model's folder (local, or objects under a prefix).
    pub model_dir: Location,
    pub format: InputFormat,
    /// This shard's input files, in the job's order.
    pub inputs: Vec<Location>,
    /// The job's output folder (Anneal checked it holds no earlier predictions).
    pub output: Location,
    pub batch_size: usize,
    /// This shard's number and the job's shard count.
    pub shard: usize,
    pub shards: usize,
    /// The Python for models of Python frameworks.
    pub python: PathBuf,
    /// The TensorFlow signature to predict with (`signatureName`); `None`: the model's default.
    #[serde(default)]
    pub signature_name: Option<String>,
}

/// A shard's progress line.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardReport {
    pub predictions: u64,
    pub errors: u64,
    /// Set on the last line: the shard ended (cancelled or not).
    #[serde(default)]
    pub done: bool,
    #[serde(default)]
    pub cancelled: bool,
    /// The shard's most frequent line error and its count (last line).
    #[serde(default)]
    pub top_error: Option<(String, u64)>,
    /// Why the shard stopped before its end (model not loadable, output not writable).
    #[serde(default)]
    pub error: Option<String>,
}

fn print(report: &ShardReport) {
    use std::io::Write;
    let line = format!("{PROGRESS_MARK}{}\n", serde_json::to_string(report).unwrap_or_default());
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}

/// The shard's files: its inputs, and output files named as shard `shard` of `shards`.
struct ShardFiles {
    files: JobFiles,
    shard: usize,
    shards: usize,
}

/// The engine runs one worker thread, so it names its files `…-00000-of-00001`.
const ONE_OF_ONE: &str = "-00000-of-00001";

impl BatchFiles for ShardFiles {
    fn inputs(&self) -> usize {
        self.files.inputs()
    }

    fn input_name(&self, index: usize) -> String {
        self.files.input_name(index)
    }

    fn open(&self, index: usize) -> std::io::Result<Box<dyn Read + Send>> {
        self.files.open(index)
    }

    /// The folder was checked by Anneal before the shards started (the other shards write into
    /// it at the same time); a bucket has no folders to make.
    fn create_folder(&self) -> Result<(), BatchError> {
        match &self.files.output {
            Location::Local(dir) => std::fs::create_dir_all(dir)
                .map_err(|source| BatchError::CreateOutput { name: dir.display().to_string(), source }),
            Location::Object(_) => Ok(()),
        }
    }

    fn create(&self, name: &str) -> Result<Box<dyn OutputFile>, BatchError> {
        let base = name.strip_suffix(ONE_OF_ONE).unwrap_or(name);
        self.files.create(&format!("{base}-{:05}-of-{:05}", self.shard, self.shards))
    }
}

/// The buckets named in [`BUCKETS_VARIABLE`] (none when it is unset).
fn shard_buckets() -> Result<Buckets, String> {
    let configs: Vec<BucketConfig> = match std::env::var(BUCKETS_VARIABLE) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| format!("{BUCKETS_VARIABLE} cannot be read: {e}"))?,
        Err(_) => Vec::new(),
    };
    Buckets::open(&configs, &AwsEnvironment::default()).map_err(|e| e.to_string())
}

/// The model's local folder: the spec's, or a bucket's objects downloaded into `scratch`.
async fn model_folder(buckets: &Buckets, model_dir: &Location, scratch: &std::path::Path) -> Result<PathBuf, String> {
    match model_dir {
        Location::Local(dir) => Ok(dir.clone()),
        Location::Object(uri) => {
            let dest = scratch.join("model");
            buckets.download_tree(uri, &dest).await.map_err(|e| format!("the model cannot be downloaded: {e}"))?;
            Ok(dest)
        }
    }
}

/// Runs the shard described by `spec` (JSON); the exit code is 0 when it ran to its end or was
/// cancelled, 1 when it could not (the reason in its last progress line and on stderr).
pub fn run(spec: &str) -> ExitCode {
    let spec: ShardSpec = match serde_json::from_str(spec) {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("error: the shard's spec cannot be read: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Object reads and uploads run on the runtime while the engine's thread blocks on them.
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let failed = |error: String| {
        print(&ShardReport { done: true, error: Some(error.clone()), ..ShardReport::default() });
        eprintln!("error: {error}");
        ExitCode::FAILURE
    };
    let buckets = match shard_buckets() {
        Ok(buckets) => buckets,
        Err(e) => return failed(e),
    };
    let scratch = match tempfile::tempdir() {
        Ok(scratch) => scratch,
        Err(e) => return failed(format!("cannot make a temporary folder: {e}")),
    };
    let model_dir = match runtime.block_on(model_folder(&buckets, &spec.model_dir, scratch.path())) {
        Ok(dir) => dir,
        Err(e) => return failed(e),
    };
    let files = ShardFiles {
        files: JobFiles { buckets, handle: runtime.handle().clone(), inputs: spec.inputs, output: spec.output },
        shard: spec.shard,
        shards: spec.shards.max(1),
    };
    let job = BatchRun {
        model_dir,
        files: Arc::new(files),
        format: spec.format,
        workers: 1,
        batch_size: spec.batch_size,
        use_cuda: true,
        python: spec.python,
        // A shard's Python workers run as the Ray worker's user: Ray, not Anneal, decides who
        // runs code on its nodes.
        cell: None,
        signature_name: spec.signature_name,
    };
    let progress = Arc::new(BatchProgress::default());
    let cancel = Arc::new(AtomicBool::new(false));
    let counts = |progress: &BatchProgress| ShardReport {
        predictions: progress.predictions.load(Ordering::Relaxed),
        errors: progress.errors.load(Ordering::Relaxed),
        ..ShardReport::default()
    };
    let result = runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let mut work = {
            let (progress, cancel) = (progress.clone(), cancel.clone());
            tokio::task::spawn_blocking(move || batch::run(&job, &progress, &cancel))
        };
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        loop {
            let terminated = async {
                match term.as_mut() {
                    Some(term) => term.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tick.tick() => print(&counts(&progress)),
                _ = terminated => cancel.store(true, Ordering::Relaxed),
                done = &mut work => break done,
            }
        }
    });
    match result {
        Ok(Ok(summary)) => {
            print(&ShardReport {
                done: true,
                cancelled: summary.cancelled,
                top_error: summary.top_error,
                ..counts(&progress)
            });
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            print(&ShardReport { done: true, error: Some(e.to_string()), ..counts(&progress) });
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            print(&ShardReport {
                done: true,
                error: Some(format!("the batch engine stopped: {e}")),
                ..counts(&progress)
            });
            eprintln!("error: the batch engine stopped: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Spreads `inputs` over at most `workers` shards, file by file in turn (file i to shard
/// i mod n), so every shard gets files and their order within a shard is the job's.
pub fn spread<T: Clone>(inputs: &[T], workers: usize) -> Vec<Vec<T>> {
    let shards = workers.clamp(1, inputs.len().max(1));
    let mut spread = vec![Vec::new(); shards];
    for (i, input) in inputs.iter().enumerate() {
        spread[i % shards].push(input.clone());
    }
    spread
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_go_to_shards_in_turn_and_no_shard_is_empty() {
        let files: Vec<PathBuf> = (0..5).map(|i| PathBuf::from(format!("f{i}"))).collect();
        let spread2 = spread(&files, 2);
        assert_eq!(
            spread2,
            vec![vec![files[0].clone(), files[2].clone(), files[4].clone()], vec![files[1].clone(), files[3].clone()]]
        );
        assert_eq!(spread(&files[..1], 4).len(), 1, "no more shards than files");
        assert_eq!(spread(&files, 0).len(), 1);
    }

    #[test]
    fn shard_files_are_named_as_shard_k_of_n() {
        let dir = tempfile::tempdir().expect("tempdir");
        let handle = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let files = JobFiles {
            buckets: Buckets::default(),
            handle: handle.handle().clone(),
            inputs: Vec::new(),
            output: Location::Local(dir.path().to_path_buf()),
        };
        let files = ShardFiles { files, shard: 1, shards: 3 };
        files.create("prediction.results-00000-of-00001").expect("create").finish().expect("finish");
        assert!(dir.path().join("prediction.results-00001-of-00003").is_file());
    }
}
