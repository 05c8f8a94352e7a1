//! Running one training job from its plan: prepare (the job's folders, its job dir, its
//! packages), launch (the replicas, or a study's trials), finish (`trainingOutput`). Each step
//! reports what it did in the job's log; the job's end is reported by the caller.

use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::prepare::Packages;
use super::supervise::{self, Environment, LogSender, Run};
use super::{logs, metrics, Identity, JobContext, Launch, RunError};
use crate::jobs::wire::{HyperparameterMetric, TrainingOutput};
use crate::jobs::{Ending, JobEvent, JobOutput, TrainingPlan};
use crate::names::JobName;
use crate::sandbox;
use crate::storage::{Location, Storage};

/// Runs a training job to its end; `Ok` says how it ended, `Err` why it could not run.
pub async fn run_training(context: &JobContext, plan: &TrainingPlan) -> Result<Ending, RunError> {
    let identity = context.config.sandbox.identity(context.job.project.as_str()).await?;
    let dir = context.dir();
    let log_file = {
        let (dir, isolated) = (dir.clone(), identity.is_some());
        tokio::task::spawn_blocking(move || make_work_dir(&dir, isolated)).await??
    };
    let (log, writer) = logs::writer(log_file);
    let started = Instant::now();
    let ending = prepare_and_launch(context, plan, identity, &dir, log).await;
    // Every line is in the log before the job's end is reported.
    let _ = writer.await;
    if plan.study.is_none() {
        // A study keeps trainingOutput up to date itself.
        let output = training_output(plan, &dir, started, plan.replicas.count() as usize).await;
        context.report(JobEvent::Output(JobOutput::Training(output))).await;
    }
    ending
}

/// The job's folder (the server's when isolated: replicas reach their own folders in it,
/// nothing else), and its log opened for appending. Blocks.
fn make_work_dir(dir: &Path, isolated: bool) -> Result<std::fs::File, RunError> {
    std::fs::create_dir_all(dir.join("replicas")).map_err(RunError::io("create the job's directory", dir))?;
    if isolated {
        for folder in [dir.parent().unwrap_or(dir), dir, &dir.join("replicas")] {
            sandbox::server_folder(folder)?;
        }
        for file in ["job.log", "metrics.jsonl"] {
            sandbox::private_file(&dir.join(file))?;
        }
    }
    let log = dir.join("job.log");
    logs::open(&log).map_err(RunError::io("open the job log", log))
}

async fn prepare_and_launch(
    context: &JobContext,
    plan: &TrainingPlan,
    identity: Option<Identity>,
    dir: &Path,
    log: LogSender,
) -> Result<Ending, RunError> {
    let mut env = Vec::new();
    match &plan.job_dir {
        Some(Location::Local(job_dir)) => {
            if let Err(e) = make_job_dir(job_dir, context.storage.root(), identity.as_ref()).await {
                let _ = log.send(("service".into(), e.to_string())).await;
                return Err(e);
            }
        }
        Some(Location::Object(uri)) => {
            let keyed;
            (env, keyed) = context.storage.buckets().env_for(uri, context.job.project.as_str());
            if !keyed {
                let message = format!(
                    "The job dir is in bucket {}, which has no credentials for project {} ([buckets.projects.{}]): the replicas get its endpoint and region only.",
                    uri.bucket,
                    context.job.project.as_str(),
                    context.job.project.as_str()
                );
                let _ = log.send(("service".into(), message)).await;
            }
        }
        None => {}
    }
    let packages = Packages {
        storage: &context.storage,
        python: &context.config.python,
        project: &context.job.project,
        sandbox: &context.config.sandbox,
        identity: identity.as_ref(),
    };
    let python_path = tokio::select! {
        prepared = async {
            let local = fetch_packages(&context.storage, &plan.packages, dir, &log).await?;
            packages.prepare(&local, &log).await
        } => prepared?,
        () = context.token.cancelled() => return Ok(Ending::Stopped),
    };
    context.report(JobEvent::Running).await;
    let launch = Launch {
        plan,
        env: Environment {
            python: &context.config.python,
            job_id: &context.job.job,
            tag: Some(replica_tag(&context.storage, &context.job)),
            python_path: &python_path,
            cwd: None,
            kill_grace: context.config.kill_grace,
            max_log_line: context.config.max_log_line,
            sandbox: context.config.sandbox.clone(),
            project: context.job.project.as_str(),
        },
        run: Run {
            dir: dir.to_path_buf(),
            job_dir: plan.job_dir.clone(),
            gpus: context.gpus.clone(),
            env,
            ..Run::default()
        },
    };
    match &plan.study {
        Some(study) => super::study::run_study(context, study, &launch, log, &super::study::LocalTrials).await,
        None => supervise::supervise(&launch, log, &context.token).await,
    }
}

/// The packages as local files: those in a bucket downloaded into the job's folder
/// (`packages/<n>/`), a file as itself, a folder (a key with objects under it) whole.
async fn fetch_packages(
    storage: &Storage,
    packages: &[Location],
    dir: &Path,
    log: &LogSender,
) -> Result<Vec<PathBuf>, RunError> {
    let mut local = Vec::with_capacity(packages.len());
    for (index, package) in packages.iter().enumerate() {
        match package {
            Location::Local(path) => local.push(path.clone()),
            Location::Object(uri) => {
                let _ = log.send(("service".into(), format!("Downloading the package {uri}."))).await;
                let dest = dir.join("packages").join(index.to_string());
                let folder = !storage.is_object(uri).await?;
                let dest = if folder { dest.join(uri.file_name()) } else { dest };
                local.push(storage.fetch(uri, &dest, folder).await?);
            }
        }
    }
    Ok(local)
}

/// Creates the job dir (as the replica user when isolated, inside its own folders).
async fn make_job_dir(job_dir: &Path, root: &Path, identity: Option<&Identity>) -> Result<(), RunError> {
    let (job_dir, root, identity) = (job_dir.to_path_buf(), root.to_path_buf(), identity.cloned());
    tokio::task::spawn_blocking(move || match &identity {
        Some(id) => sandbox::make_job_dir(&job_dir, &root, id).map_err(RunError::from),
        None => std::fs::create_dir_all(&job_dir).map_err(RunError::io("create the job dir", &job_dir)),
    })
    .await?
}

/// `trainingOutput` of a job that is not a study: replica hours used (`consumedMLUnits`) and the
/// master's last report of the plan's metric tag as `finalMetric`, when it made one.
pub(super) async fn training_output(
    plan: &TrainingPlan,
    dir: &Path,
    started: Instant,
    replicas: usize,
) -> TrainingOutput {
    let series = dir.join("metrics.jsonl");
    let points = tokio::task::spawn_blocking(move || metrics::read_series(&series)).await;
    let points = match points {
        Ok(Ok(points)) => points,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot read the job's metrics");
            Vec::new()
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the job's metrics");
            Vec::new()
        }
    };
    let hours = started.elapsed().as_secs_f64() / 3600.0 * replicas.max(1) as f64;
    let last = points.iter().filter(|p| p.tag == plan.metric_tag && p.replica == "master-replica-0").last();
    TrainingOutput {
        consumed_ml_units: Some((hours * 1e6).round() / 1e6),
        hyperparameter_metric_tag: last.map(|_| plan.metric_tag.clone()),
        final_metric: last.map(|p| HyperparameterMetric { training_step: p.step, objective_value: p.value }),
        ..TrainingOutput::default()
    }
}

/// The value of `ANNEAL_JOB` in a job's replicas: names the job and this server's storage, so
/// leftover replicas can be found after a crash without touching another server's.
pub fn replica_tag(storage: &Storage, name: &JobName) -> String {
    format!("{}|{name}", storage.root().display())
}

/// Sends SIGKILL to every process (and its process group) whose `ANNEAL_JOB` is one of `tags`.
/// Returns how many processes matched. Blocks.
pub fn kill_leftovers(tags: &std::collections::HashSet<String>) -> usize {
    if tags.is_empty() {
        return 0;
    }
    let mut matched = 0;
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
        let tagged = environ
            .split(|b| *b == 0)
            .filter_map(|var| var.strip_prefix(b"ANNEAL_JOB="))
            .any(|value| tags.contains(String::from_utf8_lossy(value).as_ref()));
        if tagged {
            matched += 1;
            let pid = Pid::from_raw(pid);
            if let Ok(group) = nix::unistd::getpgid(Some(pid)) {
                let _ = killpg(group, Signal::SIGKILL);
            }
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        }
    }
    matched
}
