//! Running one batch prediction job from its plan: list its input files (local folders or
//! objects in a bucket), run `serving::batch` on a blocking thread over [`JobFiles`] (local files
//! read and written as files, objects streamed in ranged reads and multipart uploads), report
//! `predictionOutput` while it runs.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{JobContext, RunError};
use crate::jobs::plan::InputPattern;
use crate::jobs::wire::PredictionOutput;
use crate::jobs::{Ending, JobEvent, JobOutput, PredictionPlan};
use crate::names::ProjectId;
use crate::serving::batch::{
    self, BatchError, BatchFiles, BatchProgress, BatchRun, LocalFiles, OutputFile, OUTPUT_PREFIX,
};
use crate::storage::{Buckets, Location, ObjectWriter, Storage};

/// How often `predictionOutput` is reported while the job runs.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// Runs a batch prediction job over the model files in `model_dir`.
pub async fn run_prediction(
    context: &JobContext,
    plan: &PredictionPlan,
    model_dir: Location,
) -> Result<Ending, RunError> {
    let inputs = expand_inputs(&context.storage, &context.job.project, &plan.inputs).await?;
    let model_dir = match model_dir {
        Location::Local(dir) => dir,
        Location::Object(uri) => context.storage.fetch(&uri, &context.dir().join("model"), true).await?,
    };
    // A Python model's workers run in the project's sandbox cell (a pickle runs code as it loads).
    let cell = context
        .config
        .sandbox
        .cell(context.job.project.as_str(), None)
        .await
        .map_err(|e| RunError::Batch(e.to_string()))?;
    context.report(JobEvent::Running).await;
    let files = JobFiles {
        buckets: context.storage.buckets().clone(),
        handle: tokio::runtime::Handle::current(),
        inputs,
        output: plan.output.clone(),
    };
    let run = BatchRun {
        model_dir,
        files: Arc::new(files),
        format: plan.format,
        workers: plan.workers,
        batch_size: plan.batch_size,
        use_cuda: true,
        python: context.config.python.clone(),
        cell: Some(cell),
        signature_name: plan.signature_name.clone(),
    };
    let progress = Arc::new(BatchProgress::default());
    let cancel = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let report = |progress: &BatchProgress| {
        let node_hours = started.elapsed().as_secs_f64() / 3600.0 * plan.workers as f64;
        JobEvent::Output(JobOutput::Prediction(PredictionOutput {
            output_path: Some(plan.output_path.clone()),
            prediction_count: Some(progress.predictions.load(Ordering::Relaxed) as i64),
            error_count: Some(progress.errors.load(Ordering::Relaxed) as i64),
            node_hours: Some((node_hours * 1e6).round() / 1e6),
        }))
    };
    let mut work = {
        let (progress, cancel) = (progress.clone(), cancel.clone());
        tokio::task::spawn_blocking(move || batch::run(&run, &progress, &cancel))
    };
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    let result = loop {
        tokio::select! {
            _ = tick.tick() => context.report(report(&progress)).await,
            () = context.token.cancelled(), if !cancel.load(Ordering::Relaxed) => cancel.store(true, Ordering::Relaxed),
            done = &mut work => break done?,
        }
    };
    context.report(report(&progress)).await;
    let summary = result.map_err(|e| RunError::Batch(e.to_string()))?;
    Ok(if summary.cancelled {
        Ending::Stopped
    } else if summary.predictions == 0 && summary.errors > 0 {
        let (message, _) = summary.top_error.unwrap_or_default();
        Ending::Failed(format!("Every instance failed ({} errors). The most frequent error: {message}", summary.errors))
    } else {
        Ending::Succeeded
    })
}

/// The input files of a job of `project`, in order: each pattern's matches sorted by name; local
/// ones as [`expand_local`] finds them, objects from the bucket's listing.
pub(super) async fn expand_inputs(
    storage: &Storage,
    project: &ProjectId,
    patterns: &[InputPattern],
) -> Result<Vec<Location>, RunError> {
    let mut files = Vec::new();
    for pattern in patterns {
        match &pattern.dir {
            Location::Local(dir) => {
                let (storage, project, dir, file) =
                    (storage.clone(), project.clone(), dir.clone(), pattern.file.clone());
                let found =
                    tokio::task::spawn_blocking(move || expand_local(&storage, &project, &dir, &file)).await??;
                files.extend(found.into_iter().map(Location::Local));
            }
            Location::Object(dir) if !pattern.file.contains('*') => {
                let uri = dir.join(&pattern.file);
                if !storage.is_object(&uri).await? {
                    return Err(RunError::Inputs(format!("The input file {uri} does not exist.")));
                }
                files.push(Location::Object(uri));
            }
            Location::Object(dir) => {
                let matched = storage.buckets().matching(dir, |name| glob_match(&pattern.file, name)).await?;
                files.extend(matched.into_iter().map(Location::Object));
            }
        }
    }
    if files.is_empty() {
        return Err(RunError::Inputs("No input files match inputPaths.".into()));
    }
    Ok(files)
}

/// The local files of one input pattern of `project`, sorted by name, each resolved (symlinks
/// followed) to a file the project may name; a named file it may not name is refused as outside
/// the roots, a match of a wildcard is skipped. Blocks.
fn expand_local(storage: &Storage, project: &ProjectId, dir: &Path, file: &str) -> Result<Vec<PathBuf>, RunError> {
    if !file.contains('*') {
        let shown = dir.join(file).display().to_string();
        return match storage.resolve_if_exists(project, "job.predictionInput.inputPaths", &shown) {
            Ok(Some(found)) if found.is_file() => Ok(vec![found]),
            Ok(_) => Err(RunError::Inputs(format!("The input file {shown} does not exist."))),
            Err(e) => Err(RunError::Inputs(e.to_string())),
        };
    }
    let entries = std::fs::read_dir(dir).map_err(RunError::io("list", dir))?;
    let mut matched: Vec<(PathBuf, PathBuf)> = entries
        .flatten()
        .filter(|e| glob_match(file, &e.file_name().to_string_lossy()))
        .filter_map(|e| Some((e.path(), e.path().canonicalize().ok()?)))
        .filter(|(_, found)| found.is_file() && storage.permits(project, found))
        .collect();
    matched.sort();
    Ok(matched.into_iter().map(|(_, found)| found).collect())
}

/// A job's input files and output folder, local or in a bucket, for the batch engine's blocking
/// threads (objects go through `handle`'s runtime). A Ray shard reads and writes through the same
/// (`ray::shard`).
pub(crate) struct JobFiles {
    pub buckets: Buckets,
    pub handle: tokio::runtime::Handle,
    pub inputs: Vec<Location>,
    pub output: Location,
}

impl BatchFiles for JobFiles {
    fn inputs(&self) -> usize {
        self.inputs.len()
    }

    fn input_name(&self, index: usize) -> String {
        self.inputs[index].to_string()
    }

    fn open(&self, index: usize) -> std::io::Result<Box<dyn Read + Send>> {
        match &self.inputs[index] {
            Location::Local(path) => Ok(Box::new(std::fs::File::open(path)?)),
            Location::Object(uri) => Ok(Box::new(self.buckets.reader(uri, &self.handle)?)),
        }
    }

    fn create_folder(&self) -> Result<(), BatchError> {
        match &self.output {
            Location::Local(dir) => LocalFiles { inputs: Vec::new(), output_dir: dir.clone() }.create_folder(),
            // A bucket has no folders; one whose prefix holds earlier predictions is refused.
            Location::Object(folder) => {
                let listed =
                    self.handle.block_on(self.buckets.matching(folder, |name| name.starts_with(OUTPUT_PREFIX)));
                match listed {
                    Ok(found) if found.is_empty() => Ok(()),
                    Ok(found) => Err(BatchError::OutputExists(found[0].to_string())),
                    Err(e) => {
                        Err(BatchError::CreateOutput { name: folder.to_string(), source: std::io::Error::other(e) })
                    }
                }
            }
        }
    }

    fn create(&self, name: &str) -> Result<Box<dyn OutputFile>, BatchError> {
        match &self.output {
            Location::Local(dir) => Ok(Box::new(batch::create_local(&dir.join(name))?)),
            Location::Object(folder) => {
                let uri = folder.join(name);
                let exists = self
                    .handle
                    .block_on(self.buckets.head(&uri))
                    .map(|meta| meta.is_some())
                    .map_err(|e| BatchError::Write { name: uri.to_string(), source: std::io::Error::other(e) })?;
                if exists {
                    return Err(BatchError::OutputExists(uri.to_string()));
                }
                let writer = self
                    .buckets
                    .writer(&uri, &self.handle)
                    .map_err(|source| BatchError::Write { name: uri.to_string(), source })?;
                Ok(Box::new(ObjectShard(writer)))
            }
        }
    }
}

/// An output shard uploaded as it is written.
struct ObjectShard(ObjectWriter);

impl std::io::Write for ObjectShard {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl OutputFile for ObjectShard {
    fn finish(self: Box<Self>) -> std::io::Result<()> {
        self.0.finish()
    }
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters.
fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if parts.len() == 1 {
        return pattern == name;
    }
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn wildcards_match_runs_of_characters() {
        assert!(glob_match("*.json", "a.json"));
        assert!(glob_match("part-*", "part-00001"));
        assert!(glob_match("in-*-of-*.txt", "in-1-of-2.txt"));
        assert!(glob_match("exact.json", "exact.json"));
        assert!(!glob_match("*.json", "a.csv"));
        assert!(!glob_match("a*a", "a"));
        assert!(!glob_match("exact.json", "exact.jsonl"));
    }
}
