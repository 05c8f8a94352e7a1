//! Tuning studies on Ray: the study's loop ([`crate::executor::study`]: suggestions, up to
//! `maxParallelTrials` at once, the median stopping rule, `trainingOutput.trials`) runs on this
//! server exactly as for the local executor, and each trial is its own Ray job
//! (`<job's submission id>-trial-<N>`) followed by a [`Follower`] in trial mode: its replicas'
//! lines go into the job's log as `trial-N/<replica>`, their metric reports into the job's series
//! under the same names, and stopping a trial (early stopping, cancel, the running-time limit)
//! stops its Ray job and removes its placement group.
//!
//! A study is not followed again after a restart: it ends as a lost job, and the Ray jobs of its
//! trials that outlived the server are stopped ([`stop_leftover_trials`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::follow::Follower;
use super::{Inner, Marker, RayWork, MARKER_FILE};
use crate::executor::study::{run_study, TrialFuture, TrialRunner};
use crate::executor::supervise::{Environment, Launch, LogSender, Run};
use crate::executor::{logs, JobContext, RunError};
use crate::jobs::{Ending, Event, JobEvent, Needs, TrainingPlan};
use crate::names::JobName;

/// Trials as Ray jobs.
struct RayTrials {
    inner: Arc<Inner>,
    job: JobName,
    /// The study's own submission id; trials append `-trial-<N>`.
    submission_id: String,
    /// The job's folder (its log and series).
    dir: PathBuf,
    /// `ANNEAL_JOB` of the replicas.
    tag: String,
    events: tokio::sync::mpsc::Sender<Event>,
}

impl TrialRunner for RayTrials {
    fn run<'a>(&'a self, launch: Launch<'a>, _log: LogSender, token: CancellationToken) -> TrialFuture<'a> {
        Box::pin(async move {
            let trial = launch.run.trial.clone().unwrap_or_default();
            let mut plan = launch.plan.clone();
            plan.args.extend(launch.run.extra_args.iter().cloned());
            plan.job_dir = launch.run.job_dir.clone();
            // The study keeps the running-time limit and stops its trials.
            plan.max_running_time = None;
            plan.study = None;
            let needs = Needs {
                slots: plan.replicas.count().max(1) as usize,
                gpus: plan.replicas.total_gpus().max(0) as usize,
            };
            let marker = Marker {
                submission_id: format!("{}-trial-{trial}", self.submission_id),
                needs,
                work: RayWork::Training(plan),
            };
            let follower = Follower {
                inner: self.inner.clone(),
                dir: self.dir.clone(),
                state: launch.run.dir.clone(),
                label: launch.run.label.clone(),
                trial: Some(trial),
                tag: self.tag.clone(),
                job: self.job.clone(),
                marker,
                cancel: token,
                events: self.events.clone(),
            };
            Ok(follower.run_trial().await)
        })
    }
}

/// Runs the study of `plan` to its end, its trials on Ray.
pub(super) async fn run(
    context: &JobContext,
    plan: &TrainingPlan,
    inner: Arc<Inner>,
    submission_id: String,
    tag: String,
) -> Result<Ending, RunError> {
    let Some(study) = &plan.study else { return Err(RunError::Unresolved) };
    let dir = context.dir();
    let file = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(dir.join("trials")).map_err(RunError::io("create the job's directory", &dir))?;
            let log = dir.join("job.log");
            logs::open(&log).map_err(RunError::io("open the job log", log))
        })
        .await??
    };
    let (log, writer) = logs::writer(file);
    let _ = log
        .send((
            "service".into(),
            format!(
                "Running the study's trials as Ray jobs {submission_id}-trial-<N>, up to {} at once.",
                study.parallel_trials.max(1)
            ),
        ))
        .await;
    context.report(JobEvent::Running).await;
    let launch = Launch {
        plan,
        env: Environment {
            python: &context.config.python,
            job_id: &context.job.job,
            tag: Some(tag.clone()),
            python_path: &[],
            cwd: None,
            kill_grace: context.config.kill_grace,
            max_log_line: context.config.max_log_line,
            sandbox: std::sync::Arc::new(crate::sandbox::Sandbox::off()),
            project: context.job.project.as_str(),
        },
        // GPUs are Ray's to hand out: the study holds none of this host's.
        run: Run { dir: dir.clone(), job_dir: plan.job_dir.clone(), ..Run::default() },
    };
    let trials = RayTrials { inner, job: context.job.clone(), submission_id, dir, tag, events: context.events.clone() };
    let ending = run_study(context, study, &launch, log, &trials).await;
    // Every line is in the log before the job's end is reported.
    let _ = writer.await;
    ending
}

/// Stops the Ray jobs of a lost study's trials (their markers are in `trials/<N>/` of the job's
/// folder), so none outlives the study.
pub(super) async fn stop_leftover_trials(inner: &Inner, dir: &Path) {
    let Ok(mut entries) = tokio::fs::read_dir(dir.join("trials")).await else { return };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let Ok(bytes) = tokio::fs::read(entry.path().join(MARKER_FILE)).await else { continue };
        let Ok(marker) = serde_json::from_slice::<Marker>(&bytes) else { continue };
        match inner.client.stop(&marker.submission_id).await {
            Ok(()) => tracing::info!(ray.job = %marker.submission_id, "stopped a lost study's trial on Ray"),
            Err(e) => tracing::warn!(ray.job = %marker.submission_id, error = %e, "cannot stop a lost study's trial"),
        }
    }
}
