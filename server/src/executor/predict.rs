//! Running one batch prediction job from its plan: list its input files, run `serving::batch` on
//! a blocking thread, report `predictionOutput` while it runs.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{JobContext, RunError};
use crate::jobs::plan::InputPattern;
use crate::jobs::wire::PredictionOutput;
use crate::jobs::{Ending, JobEvent, JobOutput, PredictionPlan};
use crate::names::ProjectId;
use crate::serving::batch::{self, BatchProgress, BatchRun};
use crate::storage::LocalStorage;

/// How often `predictionOutput` is reported while the job runs.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// Runs a batch prediction job over the model files in `model_dir`.
pub async fn run_prediction(
    context: &JobContext,
    plan: &PredictionPlan,
    model_dir: PathBuf,
) -> Result<Ending, RunError> {
    let files = {
        let (storage, project, patterns) = (context.storage.clone(), context.job.project.clone(), plan.inputs.clone());
        tokio::task::spawn_blocking(move || expand_inputs(&storage, &project, &patterns)).await??
    };
    context.report(JobEvent::Running).await;
    let run = BatchRun {
        model_dir,
        files,
        format: plan.format,
        output_dir: plan.output.clone(),
        workers: plan.workers,
        batch_size: plan.batch_size,
        use_cuda: true,
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

/// The input files of a job of `project`, in order: each pattern's matches sorted by name, each
/// resolved (symlinks followed) to a file the project may name; a named file it may not name is
/// refused as outside the roots, a match of a wildcard is skipped. Blocks.
fn expand_inputs(
    storage: &LocalStorage,
    project: &ProjectId,
    patterns: &[InputPattern],
) -> Result<Vec<PathBuf>, RunError> {
    let mut files = Vec::new();
    for pattern in patterns {
        if !pattern.file.contains('*') {
            let path = pattern.dir.join(&pattern.file);
            let shown = path.display().to_string();
            match storage.resolve_if_exists(project, "job.predictionInput.inputPaths", &shown) {
                Ok(Some(file)) if file.is_file() => files.push(file),
                Ok(_) => return Err(RunError::Inputs(format!("The input file {shown} does not exist."))),
                Err(e) => return Err(RunError::Inputs(e.to_string())),
            }
            continue;
        }
        let entries = std::fs::read_dir(&pattern.dir).map_err(RunError::io("list", &pattern.dir))?;
        let mut matched: Vec<(PathBuf, PathBuf)> = entries
            .flatten()
            .filter(|e| glob_match(&pattern.file, &e.file_name().to_string_lossy()))
            .filter_map(|e| Some((e.path(), e.path().canonicalize().ok()?)))
            .filter(|(_, file)| file.is_file() && storage.permits(project, file))
            .collect();
        matched.sort();
        files.extend(matched.into_iter().map(|(_, file)| file));
    }
    if files.is_empty() {
        return Err(RunError::Inputs("No input files match inputPaths.".into()));
    }
    Ok(files)
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
