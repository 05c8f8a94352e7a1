//! The job scheduler and the recorder of what executors report: control's side of the executor
//! interface ([`crate::jobs::executor`]).
//!
//! - At start, jobs a previous run left PREPARING, RUNNING or CANCELLING are handed to the
//!   executor's `recover`, and those it reports lost end (CANCELLED when a cancel was under way,
//!   else FAILED saying the server restarted).
//! - The scheduler starts queued jobs in queue order (priority, then submission time) while the
//!   next one fits (`has_room`); a job that does not fit holds back later ones, which are still
//!   checked against their `scheduling.maxWaitTime`. A job moves to PREPARING in the store before
//!   it is submitted. A batch job's model is resolved to its files at that moment.
//! - Every [`Event`] the executor sends is written to the store in arrival order by one task, so
//!   a job's RUNNING, outputs and end are recorded in the order they happened. With an artifacts
//!   URI, an ended job's log and metrics are copied there before its end is recorded.

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Control;
use crate::error::Result;
use crate::jobs::executor::{Recovered, SubmitError};
use crate::jobs::{Ending, Event, JobEvent, JobPlan, Submission, Work};
use crate::names::JobName;
use crate::store::{JobInput, JobRecord, JobState, StoredPlan};

/// States a job can be left in by a server that stopped without finishing it.
const UNFINISHED: [JobState; 3] = [JobState::Preparing, JobState::Running, JobState::Cancelling];

impl Control {
    /// Ends or recovers the jobs a previous run left mid-way, then starts the scheduler and the
    /// recorder of `events` (the channel the executor reports on).
    pub async fn start_jobs(&self, events: mpsc::Receiver<Event>) -> Result<()> {
        // This node's own jobs only: another node's are its business (or, once it is lost, the
        // sweep's: `control::nodes`).
        let names = self.store.unfinished_jobs_of(self.node.id.as_str()).await?;
        for (name, recovered) in self.executor.recover(&names).await {
            match recovered {
                Recovered::Lost => self.end_lost(&name).await?,
                // A cancel that was under way goes on.
                Recovered::Resumed => {
                    if self.store.get_job(&name).await?.is_some_and(|j| j.state == JobState::Cancelling) {
                        self.executor.cancel(&name);
                    }
                }
            }
        }
        let control = self.clone();
        // Not cancelled with the server: it records the last events of stopping jobs, and ends
        // when the executor drops its side of the channel.
        self.tasks.spawn("job-events", move |_| async move { control.record_events(events).await });
        let control = self.clone();
        self.tasks.spawn("job-scheduler", move |token| async move { control.schedule_loop(token).await });
        Ok(())
    }

    /// Asks the scheduler to look at the queue now.
    pub(super) fn wake_scheduler(&self) {
        self.scheduler.notify_one();
    }

    async fn end_lost(&self, name: &JobName) -> Result<()> {
        let Some(job) = self.store.get_job(name).await? else { return Ok(()) };
        let (to, message) = if job.state == JobState::Cancelling {
            (JobState::Cancelled, "Cancelled by request; the server restarted while the job was stopping.")
        } else {
            (
                JobState::Failed,
                "The server restarted while the job ran; its replicas were stopped with it. Submit the job again.",
            )
        };
        self.store.transition_job(name, &UNFINISHED, to, Some(message)).await?;
        Ok(())
    }

    async fn schedule_loop(&self, token: CancellationToken) {
        loop {
            if let Err(e) = self.schedule().await {
                tracing::error!(error = %e, "scheduling jobs failed");
            }
            tokio::select! {
                () = token.cancelled() => return,
                () = self.scheduler.notified() => {}
                () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            }
        }
    }

    /// Starts queued jobs, in order, while the next one fits.
    async fn schedule(&self) -> Result<()> {
        let mut full = false;
        for job in self.store.jobs_in_states(&[JobState::Queued]).await? {
            let name = job_name(&job)?;
            let plan = match self.plan_of(&name, &job).await {
                Ok(plan) => plan,
                Err(why) => {
                    let message = why.to_string();
                    self.store.transition_job(&name, &[JobState::Queued], JobState::Failed, Some(&message)).await?;
                    continue;
                }
            };
            if waited_too_long(&job, &plan) {
                let message = "Cancelled: the job waited in the queue longer than scheduling.maxWaitTime.";
                self.store.transition_job(&name, &[JobState::Queued], JobState::Cancelled, Some(message)).await?;
                continue;
            }
            if full || !self.executor.has_room(&plan.needs) {
                full = true;
                continue;
            }
            // Exactly one node's claim succeeds.
            let until = chrono::Utc::now() + chrono::Duration::from_std(self.node.lease).unwrap_or_default();
            if !self.store.claim_job(&name, self.node.id.as_str(), until).await? {
                continue;
            }
            self.start(name, plan).await?;
        }
        Ok(())
    }

    /// Submits a PREPARING job; a job that cannot start ends FAILED with the reason.
    async fn start(&self, name: JobName, plan: JobPlan) -> Result<()> {
        let model_dir = match &plan.work {
            Work::Prediction(prediction) => {
                match super::batch::resolve_model_dir(&self.store, &name.project, &prediction.model).await {
                    Ok(dir) => Some(dir),
                    Err(e) => {
                        self.store.transition_job(&name, &UNFINISHED, JobState::Failed, Some(&e.to_string())).await?;
                        return Ok(());
                    }
                }
            }
            Work::Training(_) => None,
        };
        match self.executor.submit(Submission { job: name.clone(), plan, model_dir }) {
            Ok(()) => Ok(()),
            Err(SubmitError::NoRoom) => {
                // Room went between the check and the submission: back to the queue.
                self.store.transition_job(&name, &[JobState::Preparing], JobState::Queued, None).await?;
                Ok(())
            }
        }
    }

    /// The job's stored plan; a job stored before plans existed gets one made from its input (as
    /// it would be at `jobs.create` now).
    async fn plan_of(&self, name: &JobName, job: &JobRecord) -> std::result::Result<JobPlan, Unrunnable> {
        match &job.plan {
            StoredPlan::Plan(plan) => Ok((**plan).clone()),
            StoredPlan::Unreadable(why) => Err(Unrunnable::Unreadable(why.clone())),
            StoredPlan::Missing => match &job.input {
                JobInput::Training(input) => self.plan_training(name, input).await,
                JobInput::Prediction(input) => self.plan_prediction(name, input).await,
            }
            .map_err(Unrunnable::NoLongerValid),
        }
    }

    async fn record_events(&self, mut events: mpsc::Receiver<Event>) {
        while let Some(Event { job, event }) = events.recv().await {
            if let Err(e) = self.record(&job, event).await {
                tracing::error!(job.name = %job, error = %e, "cannot record what the executor reported");
            }
        }
    }

    async fn record(&self, name: &JobName, event: JobEvent) -> Result<()> {
        match event {
            JobEvent::Running => {
                if !self.store.transition_job(name, &[JobState::Preparing], JobState::Running, None).await? {
                    // Cancelled while it prepared (the cancel may have reached the executor
                    // before the job did): stop it. A job resumed after a restart may be RUNNING
                    // already.
                    let running = self.store.get_job(name).await?.is_some_and(|j| j.state == JobState::Running);
                    if !running {
                        self.executor.cancel(name);
                    }
                }
                Ok(())
            }
            JobEvent::Output(output) => self.store.set_job_output(name, &output).await,
            JobEvent::Ended(ending) => {
                // Its room is free again.
                self.wake_scheduler();
                self.publish_job_files(name).await;
                self.record_ending(name, ending).await
            }
        }
    }

    /// With an artifacts URI, copies the ended job's log and metrics there before its end is
    /// recorded, so that any node serves them once it has ended. A store that refuses is logged
    /// (the job's outcome stands; this node keeps serving them).
    async fn publish_job_files(&self, name: &JobName) {
        if self.storage.artifacts().is_none() {
            return;
        }
        let files = self.executor.files(name);
        let Some(dir) = files.log.parent() else { return };
        let names: Vec<&str> =
            [&files.log, &files.metrics].iter().filter_map(|path| path.file_name()?.to_str()).collect();
        if let Err(e) = self.storage.publish_files(dir, &names).await {
            tracing::warn!(job = %name, error = %e, "cannot copy the job's log and metrics to the artifacts bucket");
        }
    }

    /// Moves the job to the end state `ending` implies.
    async fn record_ending(&self, name: &JobName, ending: Ending) -> Result<()> {
        let cancelling = || async {
            Ok::<_, crate::Error>(self.store.get_job(name).await?.is_some_and(|j| j.state == JobState::Cancelling))
        };
        let (to, message) = match ending {
            Ending::Succeeded => {
                if !self.store.transition_job(name, &[JobState::Running], JobState::Succeeded, None).await? {
                    // The master finished as a cancel arrived: the cancel wins.
                    let message = Some("Cancelled by request.");
                    self.store.transition_job(name, &[JobState::Cancelling], JobState::Cancelled, message).await?;
                }
                return Ok(());
            }
            Ending::Failed(message) => (JobState::Failed, Some(message)),
            Ending::TimedOut => {
                (JobState::Cancelled, Some("Cancelled: the job ran longer than scheduling.maxRunningTime.".to_owned()))
            }
            Ending::Stopped if let Some(reason) = self.fenced_reason(name) => (JobState::Failed, Some(reason)),
            Ending::Stopped if cancelling().await? => (JobState::Cancelled, Some("Cancelled by request.".to_owned())),
            Ending::Stopped => {
                (JobState::Failed, Some("The server stopped while the job ran; submit it again.".into()))
            }
        };
        self.store.transition_job(name, &UNFINISHED, to, message.as_deref()).await?;
        Ok(())
    }
}

/// Why a queued job cannot run; the job fails with this message.
#[derive(Debug, thiserror::Error)]
enum Unrunnable {
    #[error("This Anneal cannot run the job: {0}. Submit it again.")]
    Unreadable(String),
    #[error("The job, stored by an earlier Anneal, no longer passes its checks: {0}")]
    NoLongerValid(crate::Error),
}

fn job_name(job: &JobRecord) -> Result<JobName> {
    JobName::new("name", &job.project, &job.job)
}

/// Whether a queued job has waited longer than its `scheduling.maxWaitTime`.
fn waited_too_long(job: &JobRecord, plan: &JobPlan) -> bool {
    let waited = (chrono::Utc::now() - job.create_time).to_std().unwrap_or_default();
    plan.max_wait_time.is_some_and(|limit| waited > limit)
}
