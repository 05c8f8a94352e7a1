//! The executor interface: what control asks of a backend that runs jobs, and what the backend
//! reports back. The local process executor (`crate::executor`) implements it today; a cluster
//! backend (Ray) implements the same.
//!
//! Control decides: it keeps the queue and every state in the store, picks the next job, moves it
//! to PREPARING and [`JobExecutor::submit`]s its plan. The executor runs what it is told and
//! reports through one bounded channel of [`Event`]s (replicas started, output so far, how the run
//! ended); control writes them to the store. An executor never reads or writes jobs itself.

use std::path::PathBuf;

use super::plan::{JobPlan, Needs};
use super::wire::{PredictionOutput, TrainingOutput};
use crate::names::JobName;

/// A job handed to an executor.
#[derive(Clone, Debug)]
pub struct Submission {
    pub job: JobName,
    pub plan: JobPlan,
    /// A batch job's model files, resolved by control when the job starts.
    pub model_dir: Option<crate::storage::Location>,
}

/// What an executor can run at most, used to refuse jobs that could never start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// Replica slots.
    pub slots: usize,
    /// GPU devices.
    pub gpus: usize,
    /// Whether replicas run as other users than the server's (the server runs as root); batch
    /// outputs must then be folders no replica can redirect.
    pub isolated: bool,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    Succeeded,
    /// The reason, as the job's `errorMessage`.
    Failed(String),
    /// Stopped by its cancellation token: a cancel, or the server shutting down.
    Stopped,
    /// Ran longer than `scheduling.maxRunningTime`.
    TimedOut,
}

/// A job's output so far.
#[derive(Clone, Debug, PartialEq)]
pub enum JobOutput {
    Training(TrainingOutput),
    Prediction(PredictionOutput),
}

/// What happened to a submitted job.
#[derive(Clone, Debug, PartialEq)]
pub enum JobEvent {
    /// Preparation is done and the replicas (or batch workers) are starting: PREPARING → RUNNING.
    Running,
    /// The job's output so far (replaces the previous one).
    Output(JobOutput),
    /// The run is over; nothing follows for this job.
    Ended(Ending),
}

/// A [`JobEvent`] of one job.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub job: JobName,
    pub event: JobEvent,
}

/// Where a job's log and metric series are kept (JSON lines, readable while the job runs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobFiles {
    pub log: PathBuf,
    pub metrics: PathBuf,
}

/// What a restarted server learns about a job that a previous run left mid-way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recovered {
    /// Its processes are gone (or were stopped): the job ends.
    Lost,
    /// It still runs (or ended while the server was down) on a cluster that outlives the
    /// server: the executor follows it again and reports its events as for a submitted job.
    Resumed,
}

/// Why an executor did not take a job.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The job does not fit in what is free now; control tries again later.
    #[error("the executor has no room for the job now")]
    NoRoom,
}

/// A backend that runs jobs.
#[async_trait::async_trait]
pub trait JobExecutor: Send + Sync + std::fmt::Debug + 'static {
    /// The most it can run at once.
    fn capacity(&self) -> Capacity;

    /// Whether a job with these needs would start now.
    fn has_room(&self, needs: &Needs) -> bool;

    /// Starts a job (already PREPARING in the store). Its events follow on the executor's
    /// channel, ending with [`JobEvent::Ended`].
    fn submit(&self, submission: Submission) -> Result<(), SubmitError>;

    /// Stops a submitted job; it ends with [`Ending::Stopped`]. Unknown jobs are ignored.
    fn cancel(&self, job: &JobName);

    /// The jobs it runs now (submitted and not ended), for stopping them all (self-fencing).
    fn running_jobs(&self) -> Vec<JobName>;

    /// After a restart: what became of jobs a previous run left PREPARING, RUNNING or
    /// CANCELLING (stopping whatever of theirs still runs, when they cannot be picked up again).
    async fn recover(&self, jobs: &[JobName]) -> Vec<(JobName, Recovered)>;

    /// Where a job's log and metrics are.
    fn files(&self, job: &JobName) -> JobFiles;
}
