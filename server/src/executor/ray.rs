//! The Ray executor: runs training jobs on a Ray cluster through the Jobs REST API of its head
//! (`executor = "ray"`, `ray_address`, `ray_token`). It implements [`JobExecutor`] as the local
//! executor does; control keeps the queue, priorities and states, Ray only runs what Anneal
//! started.
//!
//! - One Anneal job is one Ray job whose `submission_id` is made from the job's name (and this
//!   deployment's storage folder), so a resubmission after a crash finds the job instead of
//!   running it twice.
//! - The Ray job's entrypoint is Anneal's driver (`server/python/ray_driver.py`), shipped with the
//!   job's spec and packages as its working directory ([`package`]). It gang-schedules the replicas
//!   on a placement group (one bundle per replica, `PACK`), fails the job when the group cannot be
//!   placed within `ray_placement_timeout_secs` (saying what was asked and what the cluster has),
//!   runs every replica with the local executor's environment, and prints their output and metric
//!   reports as tagged messages.
//! - A task per job ([`follow`]) follows the Ray job: its status, and its log, whose messages go
//!   into the job's own log and metric series on Anneal's side (so `follow` works, and they are
//!   kept after Ray forgets the job). Cancel asks Ray to stop the job; its driver stops every
//!   replica and removes the placement group.
//! - Faults: while the head cannot be reached, jobs keep their state, no new job starts and the
//!   followers keep trying. A server that stops leaves its Ray jobs running; after a restart,
//!   [`JobExecutor::recover`] follows them again (or ends them saying Ray no longer knows them).
//! - A batch prediction job spreads its input files over up to `maxWorkerCount` Ray workers
//!   ([`shard`]); each runs Anneal's own batch engine (`anneal ray-batch-shard`, the binary at
//!   `ray_anneal_binary` on the nodes) and writes its own output shard, and their counts come
//!   back as the job's `predictionOutput` while it runs. Objects in a bucket (model, inputs,
//!   output) are read and written by the shards themselves, with the bucket's configuration in
//!   their environment; local paths must be seen by the nodes (one machine, or a shared file
//!   system).
//! - A tuning study's loop runs on this server and each of its trials is a Ray job of its own
//!   ([`study`]), up to `maxParallelTrials` at once.

mod client;
mod follow;
mod package;
pub mod shard;
mod study;

pub use client::{RayClient, RayError};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{lock, work_dir, LocalExecutor};
use crate::jobs::executor::{Recovered, SubmitError};
use crate::jobs::{Capacity, Event, JobExecutor, JobFiles, Needs, Submission, TrainingPlan, Work};
use crate::names::JobName;
use crate::storage::{Location, Storage};
use crate::tasks::Tasks;

/// How the Ray executor reaches and uses the cluster.
#[derive(Clone, Debug)]
pub struct RayConfig {
    /// The head's dashboard address (`http://HOST:PORT`).
    pub address: String,
    /// The cluster's token (token authentication), if it has one.
    pub token: Option<String>,
    /// The Python on the nodes that runs the driver and the replicas.
    pub python: String,
    /// How long a job waits for its placement group.
    pub placement_timeout: Duration,
    /// Replica slots Anneal fills on the cluster at once.
    pub slots: usize,
    /// GPU devices Anneal's jobs may hold on the cluster at once.
    pub gpus: usize,
    /// Time between SIGTERM and SIGKILL when replicas are stopped.
    pub kill_grace: Duration,
    /// The longest replica output line kept, in bytes.
    pub max_log_line: usize,
    /// The `anneal` binary on the nodes, which runs batch prediction shards.
    pub anneal_binary: PathBuf,
}

/// The handle to the Ray executor; cheap to clone.
#[derive(Clone, Debug)]
pub struct RayExecutor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: RayClient,
    config: RayConfig,
    storage: Storage,
    tasks: Tasks,
    events: Mutex<Option<mpsc::Sender<Event>>>,
    /// Jobs followed on Ray, by full name.
    running: Mutex<HashMap<String, Running>>,
    /// Whether the head answered the last request.
    reachable: AtomicBool,
    /// Runs what does not go to Ray (batch prediction with objects in a bucket).
    local: LocalExecutor,
    /// Names this deployment in submission ids.
    deployment: String,
}

#[derive(Debug)]
struct Running {
    name: JobName,
    cancel: CancellationToken,
    slots: usize,
    gpus: usize,
}

/// What a followed job keeps in its folder, so a restarted server can follow it again.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Marker {
    submission_id: String,
    needs: Needs,
    work: RayWork,
}

/// What a job runs on Ray.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
enum RayWork {
    Training(crate::jobs::TrainingPlan),
    /// A batch prediction job over the model files in `model_dir`.
    Prediction {
        plan: crate::jobs::PredictionPlan,
        model_dir: Location,
    },
}

const MARKER_FILE: &str = "ray-job.json";

impl RayExecutor {
    /// Creates the executor; it reports on `events` (and so does `local`, which must report on
    /// the same channel).
    pub fn new(
        storage: Storage,
        config: RayConfig,
        local: LocalExecutor,
        tasks: Tasks,
        events: mpsc::Sender<Event>,
    ) -> Self {
        let client = RayClient::new(&config.address, config.token.clone());
        let deployment = {
            use sha2::Digest;
            let hash = sha2::Sha256::digest(storage.root().to_string_lossy().as_bytes());
            hash.iter().take(4).map(|b| format!("{b:02x}")).collect()
        };
        let inner = Arc::new(Inner {
            client,
            config,
            storage,
            tasks,
            events: Mutex::new(Some(events)),
            running: Mutex::new(HashMap::new()),
            reachable: AtomicBool::new(true),
            local,
            deployment,
        });
        let closing = inner.clone();
        inner.tasks.spawn("ray-executor-events", move |token| async move {
            token.cancelled().await;
            lock(&closing.events).take();
        });
        Self { inner }
    }

    /// The Ray `submission_id` of a job.
    fn submission_id(&self, job: &JobName) -> String {
        format!("anneal-{}-{}-{}", self.inner.deployment, job.project.as_str(), job.job)
    }

    fn fits(&self, running: &HashMap<String, Running>, needs: &Needs) -> bool {
        let slots: usize = running.values().map(|r| r.slots).sum();
        let gpus: usize = running.values().map(|r| r.gpus).sum();
        slots + needs.slots <= self.inner.config.slots && gpus + needs.gpus <= self.inner.config.gpus
    }

    /// Holds `needs` for `job` (checking they fit unless `resume`: a recovered job keeps what it
    /// held), with `cancel` as the token its cancel triggers; returns where its events go.
    fn hold(
        &self,
        job: &JobName,
        needs: &Needs,
        cancel: &CancellationToken,
        resume: bool,
    ) -> Result<mpsc::Sender<Event>, SubmitError> {
        let Some(events) = lock(&self.inner.events).clone() else { return Err(SubmitError::NoRoom) };
        let mut running = lock(&self.inner.running);
        if !resume && !self.fits(&running, needs) {
            return Err(SubmitError::NoRoom);
        }
        running.insert(
            job.to_string(),
            Running { name: job.clone(), cancel: cancel.clone(), slots: needs.slots, gpus: needs.gpus },
        );
        Ok(events)
    }

    /// Starts following `marker`'s job (submitting it first unless `resume`).
    fn follow(&self, job: JobName, marker: Marker, resume: bool) -> Result<(), SubmitError> {
        let cancel = CancellationToken::new();
        let events = self.hold(&job, &marker.needs, &cancel, resume)?;
        let dir = work_dir(&self.inner.storage, &job);
        let follower = follow::Follower {
            inner: self.inner.clone(),
            state: dir.clone(),
            dir,
            label: String::new(),
            trial: None,
            tag: super::run::replica_tag(&self.inner.storage, &job),
            job,
            marker,
            cancel,
            events,
        };
        self.inner.tasks.spawn("ray-job", move |shutdown| follower.run(resume, shutdown));
        Ok(())
    }

    /// Starts `job`'s tuning study, whose trials run as Ray jobs ([`study`]).
    fn start_study(&self, job: JobName, training: TrainingPlan, needs: &Needs) -> Result<(), SubmitError> {
        // A child of the server's shutdown: stopping the server stops the trials on Ray too.
        let token = self.inner.tasks.shutdown_token().child_token();
        let events = self.hold(&job, needs, &token, false)?;
        let context = super::JobContext {
            storage: self.inner.storage.clone(),
            config: self.inner.local.inner.config.clone(),
            job: job.clone(),
            gpus: Vec::new(),
            token,
            events,
        };
        let (inner, id) = (self.inner.clone(), self.submission_id(&job));
        let tag = super::run::replica_tag(&self.inner.storage, &job);
        self.inner.tasks.spawn("ray-study", move |_| async move {
            let ending = study::run(&context, &training, inner.clone(), id, tag).await;
            let ending = ending.unwrap_or_else(|e| crate::jobs::Ending::Failed(e.to_string()));
            inner.done(&context.job);
            context.report(crate::jobs::JobEvent::Ended(ending)).await;
        });
        Ok(())
    }
}

#[async_trait::async_trait]
impl JobExecutor for RayExecutor {
    fn capacity(&self) -> Capacity {
        let local = self.inner.local.capacity();
        Capacity { slots: self.inner.config.slots, gpus: self.inner.config.gpus, isolated: local.isolated }
    }

    /// No new job starts while the head cannot be reached.
    fn has_room(&self, needs: &Needs) -> bool {
        self.inner.reachable.load(Ordering::Relaxed) && self.fits(&lock(&self.inner.running), needs)
    }

    fn submit(&self, submission: Submission) -> Result<(), SubmitError> {
        let work = match (&submission.plan.work, &submission.model_dir) {
            (Work::Training(training), _) if training.study.is_none() => RayWork::Training(training.clone()),
            (Work::Training(training), _) => {
                return self.start_study(submission.job.clone(), training.clone(), &submission.plan.needs)
            }
            (Work::Prediction(plan), Some(model_dir)) => {
                RayWork::Prediction { plan: plan.clone(), model_dir: model_dir.clone() }
            }
            _ => return self.inner.local.submit(submission),
        };
        let marker = Marker { submission_id: self.submission_id(&submission.job), needs: submission.plan.needs, work };
        self.follow(submission.job, marker, false)
    }

    fn cancel(&self, job: &JobName) {
        match lock(&self.inner.running).get(&job.to_string()) {
            Some(running) => running.cancel.cancel(),
            None => self.inner.local.cancel(job),
        }
    }

    fn running_jobs(&self) -> Vec<JobName> {
        let mut jobs: Vec<JobName> = lock(&self.inner.running).values().map(|r| r.name.clone()).collect();
        jobs.extend(self.inner.local.running_jobs());
        jobs
    }

    /// Jobs this executor sent to Ray (their folder holds the marker) are followed again; the
    /// others were the local executor's.
    async fn recover(&self, jobs: &[JobName]) -> Vec<(JobName, Recovered)> {
        let mut recovered = Vec::new();
        let mut local = Vec::new();
        for job in jobs {
            let file = work_dir(&self.inner.storage, job).join(MARKER_FILE);
            let marker =
                tokio::fs::read(&file).await.ok().and_then(|bytes| serde_json::from_slice::<Marker>(&bytes).ok());
            let resumed = marker.is_some_and(|marker| self.follow(job.clone(), marker, true).is_ok());
            if resumed {
                tracing::info!(job.name = %job, "following the job on Ray again");
                recovered.push((job.clone(), Recovered::Resumed));
            } else {
                // A study's trials that outlived the previous server are stopped.
                study::stop_leftover_trials(&self.inner, &work_dir(&self.inner.storage, job)).await;
                local.push(job.clone());
            }
        }
        recovered.extend(self.inner.local.recover(&local).await);
        recovered
    }

    fn files(&self, job: &JobName) -> JobFiles {
        self.inner.local.files(job)
    }
}

impl Inner {
    /// Notes whether the head answered; says so in the server's log when it changes.
    fn answered(&self, reachable: bool, error: Option<&RayError>) {
        let was = self.reachable.swap(reachable, Ordering::Relaxed);
        match (was, reachable) {
            (true, false) => tracing::warn!(
                address = %self.config.address,
                error = %error.map(ToString::to_string).unwrap_or_default(),
                "the Ray head cannot be reached: jobs keep their state, new ones wait"
            ),
            (false, true) => tracing::info!(address = %self.config.address, "the Ray head answers again"),
            _ => {}
        }
    }

    fn done(&self, job: &JobName) {
        lock(&self.running).remove(&job.to_string());
    }
}

/// Where a job's marker is.
fn marker_file(dir: &std::path::Path) -> PathBuf {
    dir.join(MARKER_FILE)
}
