//! Running one batch prediction job: resolve its model and inputs, run `serving::batch` on a
//! blocking thread, report `predictionOutput` while it runs, and record how it ended.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::run::{record_ending, Ending};
use crate::control::{expand_inputs, prediction_spec, resolve_model_dir, PredictionInput};
use crate::names::JobName;
use crate::serving::batch::{self, BatchProgress, BatchRun};
use crate::storage::LocalStorage;
use crate::store::{JobRecord, JobState, Store};

/// How often `predictionOutput` is written while the job runs.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// Runs a batch prediction job to its end and records the outcome. `isolated`: the server runs as
/// root (see [`prediction_spec`]).
pub async fn run_prediction_job(
    store: &Store,
    storage: &LocalStorage,
    isolated: bool,
    name: &JobName,
    job: JobRecord,
    token: CancellationToken,
) {
    let ending = match run(store, storage, isolated, name, &job, &token).await {
        Ok(ending) => ending,
        Err(message) => Ending::Failed(message),
    };
    record_ending(store, name, ending).await;
}

async fn run(
    store: &Store,
    storage: &LocalStorage,
    isolated: bool,
    name: &JobName,
    job: &JobRecord,
    token: &CancellationToken,
) -> Result<Ending, String> {
    let input: PredictionInput =
        serde_json::from_value(job.input.clone()).map_err(|e| format!("stored job is unreadable: {e}"))?;
    let spec = prediction_spec(storage, &name.project, &input, isolated).map_err(|e| e.to_string())?;
    let model_dir = resolve_model_dir(store, &spec.model).await?;
    let (patterns, inputs_storage, project) = (spec.inputs.clone(), storage.clone(), name.project.clone());
    let files = tokio::task::spawn_blocking(move || expand_inputs(&inputs_storage, &project, &patterns))
        .await
        .map_err(|e| e.to_string())??;
    if !store.transition_job(name, &[JobState::Preparing], JobState::Running, None).await.map_err(|e| e.to_string())? {
        return Ok(Ending::Stopped);
    }
    let workers = job.replicas.max(1) as usize;
    let run = BatchRun {
        model_dir,
        files,
        format: spec.format,
        output_dir: spec.output.clone(),
        workers,
        batch_size: spec.batch_size,
        use_cuda: true,
    };
    let progress = Arc::new(BatchProgress::default());
    let cancel = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let report = |progress: &BatchProgress| {
        let node_hours = started.elapsed().as_secs_f64() / 3600.0 * workers as f64;
        serde_json::json!({
            "outputPath": input.output_path,
            "predictionCount": progress.predictions.load(Ordering::Relaxed).to_string(),
            "errorCount": progress.errors.load(Ordering::Relaxed).to_string(),
            "nodeHours": (node_hours * 1e6).round() / 1e6,
        })
    };
    let mut work = {
        let (progress, cancel) = (progress.clone(), cancel.clone());
        tokio::task::spawn_blocking(move || batch::run(&run, &progress, &cancel))
    };
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    let result = loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = store.set_job_output(name, &report(&progress)).await {
                    tracing::warn!(job.name = %name, error = %e, "cannot record batch progress");
                }
            }
            () = token.cancelled(), if !cancel.load(Ordering::Relaxed) => cancel.store(true, Ordering::Relaxed),
            done = &mut work => break done.map_err(|e| format!("the batch run panicked: {e}"))?,
        }
    };
    store.set_job_output(name, &report(&progress)).await.map_err(|e| e.to_string())?;
    let summary = result?;
    Ok(if summary.cancelled {
        Ending::Stopped
    } else if summary.predictions == 0 && summary.errors > 0 {
        let (message, _) = summary.top_error.unwrap_or_default();
        Ending::Failed(format!("Every instance failed ({} errors). The most frequent error: {message}", summary.errors))
    } else {
        Ending::Succeeded
    })
}
