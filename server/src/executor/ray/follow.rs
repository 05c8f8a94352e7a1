//! Following one job on Ray, from submission to its end: build and upload its working directory,
//! submit it under its `submission_id`, then poll its status and log. The driver's messages
//! (lines after `ANNEAL> `, see `server/python/ray_driver.py`) become the job's log lines (tagged
//! by replica, as the local executor writes them), its metric series and its RUNNING event; the
//! driver's own output is kept tagged `ray`. How far the Ray log was read is kept in the job's
//! folder, so a restarted server goes on from there.
//!
//! A batch prediction job's shards print progress lines (see [`super::shard`]); the follower
//! keeps each shard's last counts and reports their sum as the job's `predictionOutput`.
//!
//! The head being unreachable never ends a job: the follower says so once in the job's log and
//! keeps trying. A job Ray no longer knows (its head restarted) ends FAILED saying so.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::client::{RayError, RayStatus, Submitted};
use super::package::{self, PackageError, DRIVER_FILE};
use super::shard::{self, ShardReport, ShardSpec, PROGRESS_MARK};
use super::{marker_file, Inner, Marker, RayWork};
use crate::executor::metrics::Collector;
use crate::executor::supervise::LogSender;
use crate::executor::RunError;
use crate::executor::{lock, logs};
use crate::jobs::plan::Pool;
use crate::jobs::wire::PredictionOutput;
use crate::jobs::{Ending, Event, JobEvent, JobOutput, PredictionPlan};
use crate::names::JobName;
use crate::storage::Location;

/// How often a running job's status and log are read.
const POLL: Duration = Duration::from_millis(300);
/// How often an unreachable head is tried again.
const RETRY: Duration = Duration::from_secs(2);
/// Marks the driver's messages in the Ray job's log.
const MARK: &str = "ANNEAL> ";
/// How long the log of a job Ray reports over is read on for the driver's last lines.
const END_WAIT: Duration = Duration::from_secs(5);
/// How far the Ray log was read, in the job's folder.
const OFFSET_FILE: &str = "ray-log-offset";

/// Why a job could not be run on Ray; the text is the job's `errorMessage`.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Package(#[from] PackageError),
    #[error("Ray did not take the job: {0}")]
    Ray(#[from] RayError),
    #[error("a background step of the job stopped unexpectedly: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Storage(#[from] crate::storage::ObjectError),
    #[error(transparent)]
    Run(#[from] RunError),
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FollowError {
    let path = path.to_path_buf();
    move |source| FollowError::Io { action, path, source }
}

/// One job's follower.
pub(super) struct Follower {
    pub inner: Arc<Inner>,
    /// The job's folder on Anneal's side: its log and metric series.
    pub dir: PathBuf,
    /// Where this Ray job's follow state goes (its marker, how far its log was read, fetched
    /// packages, metric files): the job's folder, or a trial's `trials/<id>/` in it.
    pub state: PathBuf,
    /// Prefixes replica names in the log and the series (`trial-3/` for a tuning trial).
    pub label: String,
    /// The tuning trial this Ray job runs (`CLOUD_ML_TRIAL_ID`); a trial reports no job events,
    /// its study does.
    pub trial: Option<String>,
    /// `ANNEAL_JOB` of its replicas.
    pub tag: String,
    pub job: JobName,
    pub marker: Marker,
    pub cancel: CancellationToken,
    pub events: mpsc::Sender<Event>,
}

/// What a message of the driver asks for.
#[derive(serde::Deserialize)]
struct Message {
    k: String,
    #[serde(default)]
    r: String,
    #[serde(default)]
    t: String,
    #[serde(default)]
    message: String,
}

/// What following found so far.
#[derive(Default)]
struct Progress {
    /// Bytes of the Ray log consumed.
    offset: usize,
    /// When the replicas started (the driver's `running`).
    started: Option<Instant>,
    /// The driver's last words: its `end` message (when it said something).
    end: Option<String>,
    /// Whether the driver's `end` message was read.
    end_seen: bool,
    /// The last lines of the driver's own output, for a driver that failed without saying why.
    tail: VecDeque<String>,
    /// A batch prediction job's shards' last reports, by replica.
    shards: BTreeMap<String, ShardReport>,
}

impl Progress {
    /// The shards' counts summed: (predictions, errors).
    fn counts(&self) -> (u64, u64) {
        self.shards.values().fold((0, 0), |(p, e), r| (p + r.predictions, e + r.errors))
    }
}

impl Follower {
    /// Runs the job to its end and reports it; a server that stops leaves the Ray job running
    /// and reports nothing (a restart follows it again).
    pub async fn run(self, resume: bool, shutdown: CancellationToken) {
        let outcome = self.drive(resume, &shutdown).await;
        self.inner.done(&self.job);
        let ending = match outcome {
            Ok(Some((ending, output))) => {
                self.report(JobEvent::Output(output)).await;
                ending
            }
            Ok(None) => return,
            Err(e) => Ending::Failed(e.to_string()),
        };
        self.report(JobEvent::Ended(ending)).await;
    }

    /// Runs a tuning trial's Ray job to its end and says how it ended; the server shutting down
    /// stops it (a study is not followed again after a restart).
    pub async fn run_trial(self) -> Ending {
        match self.drive(false, &CancellationToken::new()).await {
            Ok(Some((ending, _))) => ending,
            Ok(None) => Ending::Stopped,
            Err(e) => Ending::Failed(e.to_string()),
        }
    }

    async fn report(&self, event: JobEvent) {
        if self.trial.is_some() {
            return;
        }
        if self.events.send(Event { job: self.job.clone(), event }).await.is_err() {
            tracing::warn!(job.name = %self.job, "control stopped listening to the executor");
        }
    }

    async fn drive(
        &self,
        resume: bool,
        shutdown: &CancellationToken,
    ) -> Result<Option<(Ending, JobOutput)>, FollowError> {
        let dir = self.dir.clone();
        let file = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(dir.join("replicas")).map_err(io("create the job's directory", &dir))?;
            logs::open(&dir.join("job.log")).map_err(io("open the job log", &dir.join("job.log")))
        })
        .await??;
        let (log, writer) = logs::writer(file);
        let mut progress = Progress::default();
        let ending = self.submit_and_follow(resume, shutdown, &log, &mut progress).await;
        drop(log);
        // Every line is in the log before the job's end is reported.
        let _ = writer.await;
        let Some(ending) = ending? else { return Ok(None) };
        let started = progress.started.unwrap_or_else(Instant::now);
        let output = match &self.marker.work {
            // A trial's study reports the study's output.
            RayWork::Training(_) if self.trial.is_some() => JobOutput::Training(Default::default()),
            RayWork::Training(plan) => JobOutput::Training(
                crate::executor::run::training_output(plan, &self.dir, started, plan.replicas.count() as usize).await,
            ),
            RayWork::Prediction { plan, .. } => self.prediction_output(plan, &progress),
        };
        Ok(Some((ending, output)))
    }

    async fn say(log: &LogSender, text: String) {
        let _ = log.send(("service".into(), text)).await;
    }

    async fn submit_and_follow(
        &self,
        resume: bool,
        shutdown: &CancellationToken,
        log: &LogSender,
        progress: &mut Progress,
    ) -> Result<Option<Ending>, FollowError> {
        let id = self.marker.submission_id.clone();
        if resume {
            let offset = tokio::fs::read_to_string(self.state.join(OFFSET_FILE)).await.unwrap_or_default();
            progress.offset = offset.trim().parse().unwrap_or(0);
            Self::say(log, format!("Anneal restarted: following the Ray job {id} again.")).await;
        } else {
            match self.submit(shutdown, log).await? {
                Some(()) => {}
                None if self.cancel.is_cancelled() => return Ok(Some(Ending::Stopped)),
                None => {
                    // Not submitted: nothing to follow after a restart.
                    let _ = tokio::fs::remove_file(marker_file(&self.state)).await;
                    return Ok(Some(Ending::Stopped));
                }
            }
        }
        self.follow(shutdown, log, progress).await
    }

    /// Uploads the working directory and submits the job; `None` when cancelled or shut down
    /// first. An unreachable head is tried again until then.
    async fn submit(&self, shutdown: &CancellationToken, log: &LogSender) -> Result<Option<()>, FollowError> {
        let (marker, dir) = (self.marker.clone(), self.state.clone());
        tokio::task::spawn_blocking(move || -> Result<_, FollowError> {
            std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
            let file = marker_file(&dir);
            let text = serde_json::to_vec(&marker).unwrap_or_default();
            std::fs::write(&file, text).map_err(io("write", &file))?;
            let _ = std::fs::remove_file(dir.join(OFFSET_FILE));
            Ok(())
        })
        .await??;
        let (packages, spec) = match &self.marker.work {
            RayWork::Training(_) => {
                let packages = self.local_packages(log).await?;
                let spec = self.spec(&packages);
                (packages, spec)
            }
            RayWork::Prediction { plan, model_dir } => (Vec::new(), self.prediction_spec(plan, model_dir, log).await?),
        };
        let replicas = spec["replicas"].as_array().map_or(0, Vec::len);
        let built = tokio::task::spawn_blocking(move || package::build(&spec, &packages)).await??;
        let id = &self.marker.submission_id;
        let config = &self.inner.config;
        Self::say(
            log,
            format!(
                "Submitting the job to Ray at {} as {id} ({replicas} replicas, working directory {} of {} KB).",
                config.address,
                built.name,
                built.zip.len().div_ceil(1024)
            ),
        )
        .await;
        let body = serde_json::json!({
            "entrypoint": format!("{} {DRIVER_FILE}", shell_quote(&config.python)),
            "submission_id": id,
            "runtime_env": {"working_dir": format!("gcs://{}", built.name)},
            "metadata": {"anneal_job": self.job.to_string()},
            "entrypoint_num_cpus": 0,
        });
        let client = &self.inner.client;
        let mut said = false;
        let submitted = loop {
            let attempt = async {
                client.upload_package(&built.name, built.zip.clone()).await?;
                client.submit(&body, id).await
            };
            match attempt.await {
                Ok(submitted) => {
                    self.inner.answered(true, None);
                    break submitted;
                }
                Err(e) if e.is_unreachable() => {
                    self.inner.answered(false, Some(&e));
                    if !said {
                        said = true;
                        Self::say(log, format!("{e}; trying again until it answers.")).await;
                    }
                }
                Err(e) => return Err(e.into()),
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(None),
                () = self.cancel.cancelled() => return Ok(None),
                () = tokio::time::sleep(RETRY) => {}
            }
        };
        if submitted == Submitted::Existing {
            Self::say(log, format!("The Ray job {id} exists already (submitted before a restart): following it."))
                .await;
        }
        Ok(Some(()))
    }

    /// The packages as local files: those in a bucket downloaded into the job's folder first
    /// (`packages/<n>/`), to go into the working directory.
    async fn local_packages(&self, log: &LogSender) -> Result<Vec<PathBuf>, FollowError> {
        let storage = &self.inner.storage;
        let mut local = Vec::new();
        let RayWork::Training(plan) = &self.marker.work else { return Ok(local) };
        for (index, package) in plan.packages.iter().enumerate() {
            match package {
                Location::Local(path) => local.push(path.clone()),
                Location::Object(uri) => {
                    Self::say(log, format!("Downloading the package {uri}.")).await;
                    let dest = self.state.join("packages").join(index.to_string());
                    let folder = !storage.is_object(uri).await?;
                    let dest = if folder { dest.join(uri.file_name()) } else { dest };
                    local.push(storage.fetch(uri, &dest, folder).await?);
                }
            }
        }
        Ok(local)
    }

    /// The driver's spec of the job, with its packages as local files.
    fn spec(&self, packages: &[PathBuf]) -> serde_json::Value {
        let RayWork::Training(plan) = &self.marker.work else { return serde_json::Value::Null };
        let replicas: Vec<serde_json::Value> = plan
            .replicas
            .all()
            .into_iter()
            .map(|(pool, index)| {
                let rank = match pool {
                    Pool::Master => Some(0),
                    Pool::Worker => Some(index + 1),
                    Pool::ParameterServer => None,
                };
                let machine = plan.machine_of(pool);
                serde_json::json!({
                    "task": format!("{}-replica-{index}", pool.as_str()),
                    "type": pool.as_str(),
                    "index": index,
                    "rank": rank,
                    "gpus": plan.replicas.gpus_of(pool).max(0),
                    "cpus": machine.cpus,
                    "memory": machine.memory,
                })
            })
            .collect();
        let config = &self.inner.config;
        let env: serde_json::Map<String, serde_json::Value> = match &plan.job_dir {
            Some(Location::Object(uri)) => {
                let (env, _) = self.inner.storage.buckets().env_for(uri, self.job.project.as_str());
                env.into_iter().map(|(k, v)| (k, v.into())).collect()
            }
            _ => serde_json::Map::new(),
        };
        serde_json::json!({
            "submissionId": self.marker.submission_id,
            "jobId": self.job.job,
            "trial": self.trial,
            "module": plan.module,
            "args": plan.args,
            "jobDir": plan.job_dir.as_ref().map(ToString::to_string),
            // The driver creates a local job dir on each replica's node.
            "jobDirLocal": matches!(plan.job_dir, Some(Location::Local(_))),
            // What reaches an s3:// job dir's bucket.
            "env": env,
            "packages": package::entries(packages),
            "replicas": replicas,
            "tfConfigJob": plan.tf_config_job,
            "strategy": "PACK",
            "placementTimeout": config.placement_timeout.as_secs_f64(),
            "killGrace": config.kill_grace.as_secs_f64(),
            "tag": self.tag,
            "maxLogLine": config.max_log_line,
        })
    }

    /// Polls the Ray job to its end. `None`: the server is shutting down (the job goes on).
    async fn follow(
        &self,
        shutdown: &CancellationToken,
        log: &LogSender,
        progress: &mut Progress,
    ) -> Result<Option<Ending>, FollowError> {
        let id = &self.marker.submission_id;
        let client = &self.inner.client;
        let collector = Arc::new(Mutex::new(Collector::default()));
        // Why Anneal asked Ray to stop the job, and whether that request still has to be sent.
        let mut stopping: Option<Ending> = None;
        let mut stop_unsent = false;
        let mut deadline: Option<tokio::time::Instant> = None;
        let mut said_unreachable = false;
        loop {
            let wait = if self.inner.reachable.load(std::sync::atomic::Ordering::Relaxed) { POLL } else { RETRY };
            let limit = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled(), if stopping.is_none() => return Ok(None),
                () = self.cancel.cancelled(), if stopping.is_none() => {
                    stopping = Some(Ending::Stopped);
                    stop_unsent = true;
                }
                () = limit, if stopping.is_none() => {
                    stopping = Some(Ending::TimedOut);
                    stop_unsent = true;
                }
                () = tokio::time::sleep(wait) => {}
            }
            if stop_unsent {
                match client.stop(id).await {
                    Ok(()) => stop_unsent = false,
                    Err(e) => tracing::warn!(job.name = %self.job, error = %e, "cannot stop the Ray job yet"),
                }
            }
            let polled =
                async { Ok::<_, RayError>((client.job(id).await?, client.logs(id).await.unwrap_or_default())) };
            let (job, text) = match polled.await {
                Ok(answer) => {
                    self.inner.answered(true, None);
                    if said_unreachable {
                        said_unreachable = false;
                        Self::say(log, "The Ray head answers again.".into()).await;
                    }
                    answer
                }
                Err(e) => {
                    self.inner.answered(!e.is_unreachable(), Some(&e));
                    if !said_unreachable {
                        said_unreachable = true;
                        Self::say(log, format!("{e}; the job keeps its state and Anneal keeps trying.")).await;
                    }
                    continue;
                }
            };
            let Some(job) = job else {
                return Ok(Some(Ending::Failed(format!(
                    "Ray no longer knows the job {id} (its head restarted, or the job was never submitted before Anneal restarted); its logs up to then are kept. Submit the job again."
                ))));
            };
            let started = self.consume(&text, progress, &collector).await;
            if let (true, RayWork::Training(plan)) = (started, &self.marker.work) {
                deadline = plan.max_running_time.map(|d| tokio::time::Instant::now() + d);
            }
            if !job.status.is_terminal() {
                continue;
            }
            // Ray may report the job over before its log holds the driver's last lines (a
            // stopped job's final counts): read on until its `end` message, a few seconds at most.
            let settle = tokio::time::Instant::now() + END_WAIT;
            while !progress.end_seen && tokio::time::Instant::now() < settle {
                tokio::time::sleep(POLL).await;
                match client.logs(id).await {
                    Ok(text) => {
                        self.consume(&text, progress, &collector).await;
                    }
                    Err(_) => break,
                }
            }
            let shard_error = progress.shards.values().find_map(|r| r.error.clone());
            let ending = match (job.status, stopping) {
                (RayStatus::Succeeded, _) if matches!(self.marker.work, RayWork::Prediction { .. }) => {
                    every_instance_failed(progress).unwrap_or(Ending::Succeeded)
                }
                (RayStatus::Succeeded, _) => Ending::Succeeded,
                (_, Some(reason)) => reason,
                (RayStatus::Failed, None) if shard_error.is_some() => Ending::Failed(shard_error.unwrap_or_default()),
                (RayStatus::Stopped, None) => Ending::Failed(format!("The Ray job {id} was stopped outside Anneal.")),
                _ => Ending::Failed(progress.end.clone().unwrap_or_else(|| {
                    let tail: Vec<String> = progress.tail.iter().cloned().collect();
                    format!(
                        "The Ray job {id} failed: {}. Last lines of its driver:\n{}",
                        job.message.unwrap_or_default(),
                        tail.join("\n")
                    )
                })),
            };
            return Ok(Some(ending));
        }
    }

    /// Takes the complete lines of the Ray log past `progress.offset`: log lines to the job's
    /// log, metric reports to its series, `running` to control. Returns whether the replicas
    /// started with these lines. The lines are appended to the job's log in one write, and the
    /// new offset saved right after it, so a restarted server neither repeats nor loses lines
    /// (short of a crash between those two writes).
    async fn consume(&self, text: &str, progress: &mut Progress, collector: &Arc<Mutex<Collector>>) -> bool {
        let Some(new) = text.get(progress.offset..) else { return false };
        let Some(end) = new.rfind('\n') else { return false };
        let mut started = false;
        let mut counted = false;
        let mut lines = String::new();
        let mut metrics: Vec<(String, String)> = Vec::new();
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let mut add = |replica: &str, text: &str| {
            // The log's line format: time, replica (one word), text.
            let replica: String = replica.chars().map(|c| if c.is_whitespace() { '_' } else { c }).collect();
            let replica = if replica.is_empty() { "ray".to_owned() } else { format!("{}{replica}", self.label) };
            lines.push_str(&format!("{time} {replica} {}\n", text.replace(['\n', '\r'], " ")));
        };
        for line in new[..end].split('\n') {
            let Some(message) = line.strip_prefix(MARK).and_then(|m| serde_json::from_str::<Message>(m).ok()) else {
                let line = line.trim_end_matches('\r');
                if progress.tail.len() == 10 {
                    progress.tail.pop_front();
                }
                progress.tail.push_back(line.to_owned());
                add("ray", line);
                continue;
            };
            match message.k.as_str() {
                "log" if message.t.starts_with(PROGRESS_MARK) => {
                    if let Ok(report) = serde_json::from_str::<ShardReport>(&message.t[PROGRESS_MARK.len()..]) {
                        counted |= progress.shards.get(&message.r) != Some(&report);
                        progress.shards.insert(message.r, report);
                    }
                }
                "log" => add(&message.r, &message.t),
                "metric" => metrics.push((message.r, message.t)),
                "running" if progress.started.is_none() => {
                    progress.started = Some(Instant::now());
                    started = true;
                }
                "end" => {
                    progress.end_seen = true;
                    progress.end = Some(message.message).filter(|m| !m.is_empty());
                }
                _ => {}
            }
        }
        progress.offset += end + 1;
        let (dir, state, label) = (self.dir.clone(), self.state.clone(), self.label.clone());
        let (collector, offset) = (collector.clone(), progress.offset);
        let written = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let log = dir.join("job.log");
            logs::open(&log).and_then(|mut file| file.write_all(lines.as_bytes()))?;
            if !metrics.is_empty() {
                record_metrics(&dir, &state, &label, &metrics, &collector);
            }
            std::fs::write(state.join(OFFSET_FILE), offset.to_string())
        })
        .await;
        if !matches!(written, Ok(Ok(()))) {
            tracing::warn!(job.name = %self.job, "cannot write what the Ray job printed into the job's folder");
        }
        if started {
            self.report(JobEvent::Running).await;
        }
        if let (true, RayWork::Prediction { plan, .. }) = (counted, &self.marker.work) {
            self.report(JobEvent::Output(self.prediction_output(plan, progress))).await;
        }
        started
    }

    /// The prediction job's output so far: its shards' counts summed.
    fn prediction_output(&self, plan: &PredictionPlan, progress: &Progress) -> JobOutput {
        let (predictions, errors) = progress.counts();
        let shards = self.marker.needs.slots.max(1) as f64;
        let hours = progress.started.map_or(0.0, |s| s.elapsed().as_secs_f64()) / 3600.0 * shards;
        JobOutput::Prediction(PredictionOutput {
            output_path: Some(plan.output_path.clone()),
            prediction_count: Some(predictions as i64),
            error_count: Some(errors as i64),
            node_hours: Some((hours * 1e6).round() / 1e6),
        })
    }

    /// The driver's spec of a prediction job: its input files spread over up to `workers`
    /// shards, each a replica running `anneal ray-batch-shard` over its files. The output folder
    /// is checked (and made) here, once, as the local executor does. Shards reach the buckets the
    /// job names with their configurations in their environment.
    async fn prediction_spec(
        &self,
        plan: &PredictionPlan,
        model_dir: &Location,
        log: &LogSender,
    ) -> Result<serde_json::Value, FollowError> {
        let inputs =
            crate::executor::predict::expand_inputs(&self.inner.storage, &self.job.project, &plan.inputs).await?;
        let buckets = self.inner.storage.buckets().clone();
        let folder = crate::executor::predict::JobFiles {
            buckets: buckets.clone(),
            handle: tokio::runtime::Handle::current(),
            inputs: Vec::new(),
            output: plan.output.clone(),
        };
        tokio::task::spawn_blocking(move || {
            use crate::serving::batch::BatchFiles;
            folder.create_folder()
        })
        .await?
        .map_err(|e| RunError::Batch(e.to_string()))?;
        let objects = inputs.iter().chain([model_dir, &plan.output]).filter_map(|l| match l {
            Location::Object(uri) => Some(uri),
            Location::Local(_) => None,
        });
        // The shards run the project's model beside the keys: its keys, never the server's.
        let project = self.job.project.as_str();
        let configs = buckets.resolved_for(objects, project).map_err(|bucket| {
            RunError::Batch(format!(
                "On Ray, a batch job's workers reach bucket {bucket} with project {project}'s own keys, and the bucket has none for it: add [buckets.projects.{project}] to its configuration"
            ))
        })?;
        let mut env = serde_json::Map::new();
        if !configs.is_empty() {
            env.insert(shard::BUCKETS_VARIABLE.into(), serde_json::to_string(&configs).unwrap_or_default().into());
        }
        let output = plan.output.clone();
        let spread = shard::spread(&inputs, plan.workers);
        let config = &self.inner.config;
        Self::say(
            log,
            format!(
                "Spreading {} input files over {} Ray workers, each running Anneal's batch engine.",
                inputs.len(),
                spread.len()
            ),
        )
        .await;
        let shards = spread.len();
        let replicas: Vec<serde_json::Value> = spread
            .into_iter()
            .enumerate()
            .map(|(index, inputs)| {
                let spec = ShardSpec {
                    model_dir: model_dir.clone(),
                    format: plan.format,
                    inputs,
                    output: output.clone(),
                    batch_size: plan.batch_size,
                    shard: index,
                    shards,
                    python: PathBuf::from(&config.python),
                    signature_name: plan.signature_name.clone(),
                };
                serde_json::json!({
                    "task": format!("worker-replica-{index}"),
                    "type": "worker",
                    "index": index,
                    "rank": null,
                    "gpus": 0,
                    "cpus": 1,
                    "command": [config.anneal_binary, "ray-batch-shard", serde_json::to_string(&spec).unwrap_or_default()],
                })
            })
            .collect();
        Ok(serde_json::json!({
            "kind": "prediction",
            "submissionId": self.marker.submission_id,
            "jobId": self.job.job,
            "module": "",
            "args": [],
            "jobDir": null,
            "env": env,
            "packages": [],
            "replicas": replicas,
            "tfConfigJob": {},
            "strategy": "PACK",
            "placementTimeout": config.placement_timeout.as_secs_f64(),
            "killGrace": config.kill_grace.as_secs_f64(),
            "tag": self.tag,
            "maxLogLine": config.max_log_line,
        }))
    }
}

/// A prediction job whose shards all ended with errors only: FAILED as on the local executor.
fn every_instance_failed(progress: &Progress) -> Option<Ending> {
    let (predictions, errors) = progress.counts();
    if predictions > 0 || errors == 0 {
        return None;
    }
    let mut top: BTreeMap<&str, u64> = BTreeMap::new();
    for report in progress.shards.values() {
        if let Some((message, count)) = &report.top_error {
            *top.entry(message).or_default() += count;
        }
    }
    let message =
        top.into_iter().max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(a.0))).map(|(m, _)| m).unwrap_or_default();
    Some(Ending::Failed(format!("Every instance failed ({errors} errors). The most frequent error: {message}")))
}

/// Adds reports (replica, hypertune line) to the job's series (`dir/metrics.jsonl`, under the
/// replica's name prefixed with `label`), each once: this poll's lines of each replica are
/// written to `<state>/replicas/<replica>/ray-metrics.new` and collected from there. Blocks.
fn record_metrics(dir: &Path, state: &Path, label: &str, metrics: &[(String, String)], collector: &Mutex<Collector>) {
    let mut by_replica: std::collections::BTreeMap<&str, String> = Default::default();
    for (replica, line) in metrics {
        // A replica name becomes a folder name: only the names the driver makes.
        if replica.is_empty() || !replica.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            continue;
        }
        let text = by_replica.entry(replica).or_default();
        text.push_str(line);
        text.push('\n');
    }
    let mut files = Vec::new();
    for (replica, text) in by_replica {
        let folder = state.join("replicas").join(replica);
        let file = folder.join("ray-metrics.new");
        if std::fs::create_dir_all(&folder).and_then(|()| std::fs::write(&file, text)).is_ok() {
            files.push((format!("{label}{replica}"), file));
        }
    }
    lock(collector).collect(&files, &dir.join("metrics.jsonl"));
}

/// `text` as one shell word.
fn shell_quote(text: &str) -> String {
    if !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+=:".contains(c)) {
        return text.to_owned();
    }
    format!("'{}'", text.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words() {
        assert_eq!(shell_quote("/opt/venv/bin/python"), "/opt/venv/bin/python");
        assert_eq!(shell_quote("/my env/python"), "'/my env/python'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}
