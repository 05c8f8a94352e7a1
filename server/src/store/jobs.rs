//! SQL for training jobs. A job's state changes through [`Store::transition_job`] only, which
//! moves it from one of the states it may leave to the next.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::{now_text, parse_time, storable, with_pool, Store};
use crate::error::{Error, FieldViolation, Result};
use crate::jobs::wire::{PredictionInput, TrainingInput};
use crate::jobs::{JobOutput, JobPlan};
use crate::names::{JobName, ProjectId};

pub use crate::jobs::wire::JobState;

/// A state as stored.
fn parse_state(text: &str) -> Result<JobState> {
    JobState::parse(text).ok_or_else(|| Error::internal(format!("unknown stored job state '{text}'")))
}

/// What a job does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobKind {
    /// `trainingInput`: replicas of a user's trainer package.
    Training,
    /// `predictionInput`: batch prediction over input files.
    Prediction,
}

impl JobKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Training => "TRAINING",
            Self::Prediction => "PREDICTION",
        }
    }

    fn parse(text: &str) -> Result<Self> {
        match text {
            "TRAINING" => Ok(Self::Training),
            "PREDICTION" => Ok(Self::Prediction),
            other => Err(Error::internal(format!("unknown stored job kind '{other}'"))),
        }
    }
}

/// A job's input as the API returns it.
#[derive(Clone, Debug, PartialEq)]
pub enum JobInput {
    Training(TrainingInput),
    Prediction(PredictionInput),
}

impl JobInput {
    /// Which kind of job this input makes.
    pub fn kind(&self) -> JobKind {
        match self {
            Self::Training(_) => JobKind::Training,
            Self::Prediction(_) => JobKind::Prediction,
        }
    }

    fn to_text(&self) -> Result<String> {
        match self {
            Self::Training(input) => serde_json::to_string(input),
            Self::Prediction(input) => serde_json::to_string(input),
        }
        .map_err(Error::internal)
    }

    fn parse(kind: JobKind, text: &str) -> Result<Self> {
        let input = match kind {
            JobKind::Training => serde_json::from_str(text).map(Self::Training),
            JobKind::Prediction => serde_json::from_str(text).map(Self::Prediction),
        };
        input.map_err(|e| Error::internal(format!("a stored job input cannot be read: {e}")))
    }
}

/// A job's output of its kind, empty until it runs. An output this version cannot read is shown
/// empty (and logged) rather than making the job unreadable.
fn parse_output(kind: JobKind, text: &str) -> JobOutput {
    let output = match kind {
        JobKind::Training => serde_json::from_str(text).map(JobOutput::Training),
        JobKind::Prediction => serde_json::from_str(text).map(JobOutput::Prediction),
    };
    output.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "a stored job output cannot be read; showing it empty");
        match kind {
            JobKind::Training => JobOutput::Training(Default::default()),
            JobKind::Prediction => JobOutput::Prediction(Default::default()),
        }
    })
}

/// A job's plan as stored.
#[derive(Clone, Debug, PartialEq)]
pub enum StoredPlan {
    Plan(Box<JobPlan>),
    /// Stored before jobs had plans.
    Missing,
    /// Written by an Anneal this one cannot read; why.
    Unreadable(String),
}

/// A job to store.
#[derive(Clone, Debug)]
pub struct NewJob {
    pub labels: BTreeMap<String, String>,
    pub input: JobInput,
    /// What the job runs; its needs are the slots and GPU devices it holds while it runs.
    pub plan: JobPlan,
    pub priority: i64,
}

/// A stored job.
#[derive(Clone, Debug, PartialEq)]
pub struct JobRecord {
    pub project: String,
    pub job: String,
    pub state: JobState,
    pub labels: BTreeMap<String, String>,
    pub input: JobInput,
    /// The TrainingOutput or PredictionOutput so far.
    pub output: JobOutput,
    pub plan: StoredPlan,
    pub priority: i64,
    pub replicas: i64,
    pub gpus: i64,
    pub error_message: Option<String>,
    pub create_time: DateTime<Utc>,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
    pub revision: i64,
    /// The node that claimed the job (when several nodes share the database).
    pub node: Option<String>,
}

impl JobRecord {
    /// Which kind of job it is.
    pub fn kind(&self) -> JobKind {
        self.input.kind()
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    project_id: String,
    job_id: String,
    kind: String,
    state: String,
    labels: String,
    input: String,
    output: String,
    plan: Option<String>,
    priority: i64,
    replicas: i64,
    gpus: i64,
    error_message: Option<String>,
    create_time: String,
    start_time: Option<String>,
    end_time: Option<String>,
    revision: i64,
    node_id: Option<String>,
}

impl TryFrom<Row> for JobRecord {
    type Error = Error;
    fn try_from(row: Row) -> Result<Self> {
        let kind = JobKind::parse(&row.kind)?;
        let plan = match row.plan.as_deref() {
            None => StoredPlan::Missing,
            Some(text) => match JobPlan::from_stored(text) {
                Ok(plan) => StoredPlan::Plan(Box::new(plan)),
                Err(why) => StoredPlan::Unreadable(why.to_string()),
            },
        };
        Ok(Self {
            state: parse_state(&row.state)?,
            labels: serde_json::from_str(&row.labels).map_err(Error::internal)?,
            input: JobInput::parse(kind, &row.input)?,
            output: parse_output(kind, &row.output),
            plan,
            create_time: parse_time(&row.create_time)?,
            start_time: row.start_time.as_deref().map(parse_time).transpose()?,
            end_time: row.end_time.as_deref().map(parse_time).transpose()?,
            project: row.project_id,
            job: row.job_id,
            priority: row.priority,
            replicas: row.replicas,
            gpus: row.gpus,
            error_message: row.error_message,
            revision: row.revision,
            node: row.node_id,
        })
    }
}

const COLUMNS: &str =
    "project_id, job_id, kind, state, labels, input, output, plan, priority, replicas, gpus, error_message, \
                       create_time, start_time, end_time, revision, node_id";

impl Store {
    /// Stores a new QUEUED job; ALREADY_EXISTS if the project has one of that id.
    pub async fn insert_job(&self, name: &JobName, job: &NewJob) -> Result<JobRecord> {
        self.ensure_project(&name.project).await?;
        let labels = serde_json::to_string(&job.labels).map_err(Error::internal)?;
        let input = job.input.to_text()?;
        let plan = serde_json::to_string(&job.plan).map_err(Error::internal)?;
        let inserted = with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO jobs (project_id, job_id, kind, state, labels, input, plan, priority, replicas, gpus, create_time) \
                 VALUES ($1, $2, $3, 'QUEUED', $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
            )
            .bind(name.project.as_str())
            .bind(&name.job)
            .bind(job.input.kind().as_str())
            .bind(&labels)
            .bind(&input)
            .bind(&plan)
            .bind(job.priority)
            .bind(job.plan.needs.slots as i64)
            .bind(job.plan.needs.gpus as i64)
            .bind(now_text())
            .execute(pool)
            .await?
            .rows_affected()
        });
        if inserted == 0 {
            return Err(Error::AlreadyExists(FieldViolation::new(
                "job.jobId",
                "A job with the same id already exists.",
            )));
        }
        self.get_job(name).await?.ok_or_else(|| Error::internal("a job vanished right after it was stored"))
    }

    /// The job, if it exists.
    pub async fn get_job(&self, name: &JobName) -> Result<Option<JobRecord>> {
        let row: Option<Row> = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM jobs WHERE project_id = $1 AND job_id = $2"
            )))
            .bind(name.project.as_str())
            .bind(&name.job)
            .fetch_optional(pool)
            .await?
        });
        row.map(JobRecord::try_from).transpose()
    }

    /// Jobs of `project` ordered by id, after `after`, at most `limit`.
    pub async fn list_jobs(&self, project: &ProjectId, after: Option<&str>, limit: usize) -> Result<Vec<JobRecord>> {
        let rows: Vec<Row> = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM jobs WHERE project_id = $1 AND job_id > $2 ORDER BY job_id LIMIT $3"
            )))
            .bind(project.as_str())
            .bind(after.unwrap_or(""))
            .bind(limit as i64)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(JobRecord::try_from).collect()
    }

    /// Jobs in any of `states`, in queue order (priority, then submission time).
    pub async fn jobs_in_states(&self, states: &[JobState]) -> Result<Vec<JobRecord>> {
        let list = state_list(states);
        let rows: Vec<Row> = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM jobs WHERE state IN ({list}) ORDER BY priority DESC, create_time, job_id"
            )))
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(JobRecord::try_from).collect()
    }

    /// Moves a job from one of `from` to `to`, setting start/end times and the error message as
    /// the new state implies. Returns false if the job was in none of `from`.
    pub async fn transition_job(
        &self,
        name: &JobName,
        from: &[JobState],
        to: JobState,
        error_message: Option<&str>,
    ) -> Result<bool> {
        let list = state_list(from);
        let error_message = error_message.map(storable);
        let now = now_text();
        let start = (to == JobState::Running).then_some(now.clone());
        let end = to.is_final().then_some(now);
        let moved = with_pool!(self, |pool| {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE jobs SET state = $1, error_message = COALESCE($2, error_message), start_time = COALESCE($3, start_time), \
                 end_time = COALESCE($4, end_time), revision = revision + 1 WHERE project_id = $5 AND job_id = $6 AND state IN ({list})"
            )))
            .bind(to.as_str())
            .bind(&error_message)
            .bind(&start)
            .bind(&end)
            .bind(name.project.as_str())
            .bind(&name.job)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(moved == 1)
    }

    /// Records the job's TrainingOutput or PredictionOutput so far. (The etag is for labels, the
    /// only field clients change, so progress does not move it.)
    pub async fn set_job_output(&self, name: &JobName, output: &JobOutput) -> Result<()> {
        let text = match output {
            JobOutput::Training(output) => serde_json::to_string(output),
            JobOutput::Prediction(output) => serde_json::to_string(output),
        }
        .map_err(Error::internal)?;
        with_pool!(self, |pool| {
            sqlx::query("UPDATE jobs SET output = $1 WHERE project_id = $2 AND job_id = $3")
                .bind(&text)
                .bind(name.project.as_str())
                .bind(&name.job)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Replaces a job's labels; with `expected_revision`, only at that revision (else ABORTED).
    pub async fn update_job_labels(
        &self,
        name: &JobName,
        labels: &BTreeMap<String, String>,
        expected_revision: Option<i64>,
    ) -> Result<()> {
        let labels = serde_json::to_string(labels).map_err(Error::internal)?;
        let updated = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE jobs SET labels = $1, revision = revision + 1 \
                 WHERE project_id = $2 AND job_id = $3 AND (CAST($4 AS BIGINT) IS NULL OR revision = $4)",
            )
            .bind(&labels)
            .bind(name.project.as_str())
            .bind(&name.job)
            .bind(expected_revision)
            .execute(pool)
            .await?
            .rows_affected()
        });
        if updated == 0 {
            return Err(Error::Aborted(format!(
                "Job {name} was changed by another request (etag mismatch); read it again."
            )));
        }
        Ok(())
    }
}

/// `states` as a list of SQL literals, for `state IN (…)` (the names are the enum's own).
fn state_list(states: &[JobState]) -> String {
    states.iter().map(|s| format!("'{}'", s.as_str())).collect::<Vec<_>>().join(", ")
}
