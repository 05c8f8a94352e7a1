//! The training executor: runs queued jobs' replicas as local processes.
//!
//! This is the embedded default; a cluster backend would offer the same handle (`slots`, `wake`,
//! `cancel`, `start`). The scheduler starts a job only when all of its replicas fit in the free
//! slots, in queue order (priority, then submission time), and moves its state in the database
//! before any process starts. Each started job is an owned task with its own cancellation token.

mod isolation;
mod logs;
mod metrics;
mod predict;
mod run;
mod study;

pub use isolation::{check_output_folder, Identity, Isolation};
pub use run::{supervise, Ending, Launch};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use logs::{read_logs, LogCursor, LogLine};
pub use metrics::{read_series, MetricPoint};

use crate::names::JobName;
use crate::storage::LocalStorage;
use crate::store::{JobKind, JobState, Store};
use crate::tasks::Tasks;

/// How the executor runs replicas.
#[derive(Clone, Debug)]
pub struct ExecutorConfig {
    /// The Python that runs replicas (with torch).
    pub python: PathBuf,
    /// Replica slots of this host.
    pub slots: usize,
    /// GPU devices of this host (numbered 0..gpus for `CUDA_VISIBLE_DEVICES`).
    pub gpus: usize,
    /// Time between SIGTERM and SIGKILL when replicas are stopped.
    pub kill_grace: Duration,
    /// The longest replica output line kept in a job's log, in bytes.
    pub max_log_line: usize,
    /// Who replicas run as (see [`Isolation`]).
    pub isolation: Arc<Isolation>,
}

/// The handle to the local executor; cheap to clone.
#[derive(Clone, Debug)]
pub struct Executor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    storage: LocalStorage,
    config: ExecutorConfig,
    tasks: Tasks,
    wake: Notify,
    /// Running jobs by full name.
    running: Mutex<HashMap<String, Running>>,
}

/// What a running job holds.
#[derive(Debug)]
struct Running {
    token: CancellationToken,
    slots: usize,
    gpus: Vec<usize>,
}

impl Executor {
    /// Creates the executor; [`Executor::start`] begins scheduling.
    pub fn new(store: Store, storage: LocalStorage, config: ExecutorConfig, tasks: Tasks) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                storage,
                config,
                tasks,
                wake: Notify::new(),
                running: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Replica slots of this host.
    pub fn slots(&self) -> usize {
        self.inner.config.slots
    }

    /// Whether replicas run as other users than the server's (the server runs as root).
    pub fn isolated(&self) -> bool {
        self.inner.config.isolation.is_on()
    }

    /// GPU devices of this host.
    pub fn gpus(&self) -> usize {
        self.inner.config.gpus
    }

    /// Asks the scheduler to look at the queue now.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Stops a running job's replicas; the job ends CANCELLED.
    pub fn cancel(&self, name: &JobName) {
        if let Some(running) = self.running().get(&name.to_string()) {
            running.token.cancel();
        }
    }

    /// Ends jobs a previous run left mid-way, stopping any of their replicas that outlived it (a
    /// server killed with SIGKILL cannot stop them), then starts the scheduler.
    pub async fn start(&self) -> crate::Result<()> {
        let orphaned = [JobState::Preparing, JobState::Running, JobState::Cancelling];
        let jobs = self.inner.store.jobs_in_states(&orphaned).await?;
        let tags: std::collections::HashSet<String> = jobs
            .iter()
            .filter_map(|job| JobName::new("name", &job.project, &job.job).ok())
            .map(|name| run::replica_tag(&self.inner.storage, &name))
            .collect();
        let stopped = tokio::task::spawn_blocking(move || run::kill_leftovers(&tags)).await.unwrap_or(0);
        if stopped > 0 {
            tracing::warn!(processes = stopped, "stopped replicas left running by a previous server");
        }
        for job in jobs {
            let name = JobName::new("name", &job.project, &job.job)?;
            let (to, message) = if job.state == JobState::Cancelling {
                (JobState::Cancelled, "Cancelled by request; the server restarted while the job was stopping.")
            } else {
                (
                    JobState::Failed,
                    "The server restarted while the job ran; its replicas were stopped with it. Submit the job again.",
                )
            };
            self.inner.store.transition_job(&name, &orphaned, to, Some(message)).await?;
        }
        let executor = self.clone();
        self.inner.tasks.spawn("job-scheduler", move |token| async move { executor.schedule_loop(token).await });
        Ok(())
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.inner.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn schedule_loop(&self, token: CancellationToken) {
        loop {
            if let Err(e) = self.schedule(&token).await {
                tracing::error!(error = %e, "scheduling jobs failed");
            }
            tokio::select! {
                () = token.cancelled() => return,
                () = self.inner.wake.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Starts queued jobs, in order, while the next one fits.
    async fn schedule(&self, token: &CancellationToken) -> crate::Result<()> {
        let mut full = false;
        for job in self.inner.store.jobs_in_states(&[JobState::Queued]).await? {
            let name = JobName::new("name", &job.project, &job.job)?;
            if waited_too_long(&job) {
                let message = "Cancelled: the job waited in the queue longer than scheduling.maxWaitTime.";
                self.inner.store.transition_job(&name, &[JobState::Queued], JobState::Cancelled, Some(message)).await?;
                continue;
            }
            let needed = job.replicas.max(1) as usize;
            let (used, mut free_gpus) = {
                let running = self.running();
                let held: std::collections::HashSet<usize> = running.values().flat_map(|r| r.gpus.clone()).collect();
                let used: usize = running.values().map(|r| r.slots).sum();
                (used, (0..self.inner.config.gpus).filter(|g| !held.contains(g)).collect::<Vec<_>>())
            };
            let gpus_needed = job.gpus.max(0) as usize;
            // Jobs start in queue order: once one does not fit, later ones wait too (but are still
            // checked against their maxWaitTime).
            if full || used + needed > self.inner.config.slots || gpus_needed > free_gpus.len() {
                full = true;
                continue;
            }
            if !self.inner.store.transition_job(&name, &[JobState::Queued], JobState::Preparing, None).await? {
                continue;
            }
            free_gpus.truncate(gpus_needed);
            let job_token = token.child_token();
            self.running()
                .insert(name.to_string(), Running { token: job_token.clone(), slots: needed, gpus: free_gpus.clone() });
            let executor = self.clone();
            self.inner.tasks.spawn("job", move |_| async move {
                let inner = &executor.inner;
                match job.kind {
                    JobKind::Training => {
                        run::run_job(&inner.store, &inner.storage, &inner.config, &name, job, &free_gpus, job_token)
                            .await;
                    }
                    JobKind::Prediction => {
                        let isolated = inner.config.isolation.is_on();
                        predict::run_prediction_job(&inner.store, &inner.storage, isolated, &name, job, job_token)
                            .await;
                    }
                }
                executor.running().remove(&name.to_string());
                executor.wake();
            });
        }
        Ok(())
    }

    /// Where a job's logs and replica working directories live.
    pub fn work_dir(&self, name: &JobName) -> PathBuf {
        work_dir(&self.inner.storage, name)
    }
}

/// Whether a queued job has waited longer than its `scheduling.maxWaitTime`.
fn waited_too_long(job: &crate::store::JobRecord) -> bool {
    let limit =
        job.input.pointer("/scheduling/maxWaitTime").and_then(|v| v.as_str()).and_then(crate::control::parse_duration);
    let waited = (chrono::Utc::now() - job.create_time).to_std().unwrap_or_default();
    limit.is_some_and(|limit| waited > limit)
}

fn work_dir(storage: &LocalStorage, name: &JobName) -> PathBuf {
    storage.root().join("jobs").join(name.project.as_str()).join(&name.job)
}
