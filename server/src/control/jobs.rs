//! Training-job use cases: validate and queue a job, read, list, label, cancel. The executor runs
//! what is queued.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::filter::{labels, Filter};
use super::limits::{self, at_most, check_labels, count_in};
use super::paging::{filtered_page, PageRequest};
use super::Control;
use crate::error::{Error, Result};
use crate::executor::LogCursor;
use crate::names::{JobName, ProjectId};
use crate::storage::LocalStorage;
use crate::store::{JobKind, JobRecord, JobState, NewJob};

/// The TrainingInput fields Anneal acts on; every other field is kept and echoed as given.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrainingInput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_tier: Option<String>,
    #[serde(default)]
    pub package_uris: Vec<String>,
    #[serde(default)]
    pub python_module: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_dir: Option<String>,
    #[serde(default, with = "int64_text", skip_serializing_if = "Option::is_none")]
    pub worker_count: Option<i64>,
    #[serde(default, with = "int64_text", skip_serializing_if = "Option::is_none")]
    pub parameter_server_count: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling: Option<Scheduling>,
    /// region, runtimeVersion, pythonVersion, machine types, replica configs, ...: recorded.
    #[serde(flatten)]
    pub recorded: serde_json::Map<String, Value>,
}

/// `Scheduling`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Scheduling {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_running_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wait_time: Option<String>,
}

/// int64 fields: read as numbers or strings, written as strings.
pub(super) mod int64_text {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<i64>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => serializer.serialize_str(&v.to_string()),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
        crate::api::resources::int64(deserializer)
    }
}

/// The replica pools of a job, and the GPU devices each replica of a pool needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replicas {
    pub workers: i64,
    pub parameter_servers: i64,
    pub master_gpus: i64,
    pub worker_gpus: i64,
    pub parameter_server_gpus: i64,
}

impl Replicas {
    /// How many replicas the job runs, master included (computed, nothing allocated).
    pub fn count(&self) -> i64 {
        1 + self.workers.max(0) + self.parameter_servers.max(0)
    }

    /// Every replica, as (type, index), master first. The counts are bounded by
    /// [`training_spec`] before this is called.
    pub fn all(&self) -> Vec<(&'static str, i64)> {
        let mut all = vec![("master", 0)];
        all.extend((0..self.workers).map(|i| ("worker", i)));
        all.extend((0..self.parameter_servers).map(|i| ("ps", i)));
        all
    }

    /// GPU devices one replica of pool `kind` needs.
    pub fn gpus_of(&self, kind: &str) -> i64 {
        match kind {
            "master" => self.master_gpus,
            "worker" => self.worker_gpus,
            _ => self.parameter_server_gpus,
        }
    }

    /// GPU devices the whole job needs at once.
    pub fn total_gpus(&self) -> i64 {
        self.master_gpus + self.workers * self.worker_gpus + self.parameter_servers * self.parameter_server_gpus
    }
}

/// GPUs of ML Engine's legacy GPU machine types.
fn machine_type_gpus(machine_type: &str) -> i64 {
    match machine_type {
        "standard_gpu" | "standard_p100" | "standard_v100" | "large_model_v100" => 1,
        "complex_model_m_gpu" | "complex_model_m_p100" | "complex_model_m_v100" => 4,
        "complex_model_l_gpu" | "complex_model_l_v100" => 8,
        _ => 0,
    }
}

/// GPUs one replica of a pool asks for through `<pool>Config.acceleratorConfig.count` or a GPU
/// `<pool>Type`.
fn pool_gpus(input: &TrainingInput, pool: &str) -> Result<i64> {
    let config = input.recorded.get(&format!("{pool}Config"));
    let count = config.and_then(|c| c.pointer("/acceleratorConfig/count"));
    if let Some(count) = count {
        let parsed = count.as_i64().or_else(|| count.as_str().and_then(|s| s.parse().ok()));
        let field = format!("job.trainingInput.{pool}Config.acceleratorConfig.count");
        return match parsed {
            Some(n) => count_in(&field, n, 0, limits::MAX_ACCELERATORS_PER_REPLICA),
            None => Err(Error::invalid(field, format!("{} is not a GPU count.", limits::short(&count.to_string())))),
        };
    }
    let machine_type = input.recorded.get(&format!("{pool}Type")).and_then(Value::as_str).unwrap_or("");
    Ok(machine_type_gpus(machine_type))
}

/// What the executor needs to run a validated job.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainingSpec {
    pub packages: Vec<PathBuf>,
    pub module: String,
    pub args: Vec<String>,
    pub job_dir: Option<PathBuf>,
    pub replicas: Replicas,
    pub max_running_time: Option<std::time::Duration>,
    /// A hyperparameter tuning study, when the job has `hyperparameters` with `params`.
    pub study: Option<super::tuning::Study>,
}

/// Replica counts of the predefined scale tiers on one host.
fn tier_replicas(tier: &str) -> Option<Replicas> {
    Some(match tier {
        "BASIC" | "BASIC_TPU" => Replicas::default(),
        "BASIC_GPU" => Replicas { master_gpus: 1, ..Replicas::default() },
        "STANDARD_1" => Replicas { workers: 4, parameter_servers: 3, ..Replicas::default() },
        "PREMIUM_1" => Replicas { workers: 19, parameter_servers: 11, ..Replicas::default() },
        _ => return None,
    })
}

/// Lines of a job's log, where to read next, and whether the job had ended before they were read.
pub struct JobLogs {
    pub lines: Vec<crate::executor::LogLine>,
    pub next: LogCursor,
    pub job_ended: bool,
}

/// A page of jobs.
pub struct JobPage {
    pub jobs: Vec<JobRecord>,
    pub next_page_token: Option<String>,
}

impl Control {
    /// Validates a training job and queues it.
    pub async fn create_job(
        &self,
        name: &JobName,
        labels: BTreeMap<String, String>,
        input: TrainingInput,
    ) -> Result<JobRecord> {
        check_labels("job.labels", &labels)?;
        let spec = training_spec(&self.storage, &name.project, &input)?;
        let slots = spec.replicas.count();
        if slots as usize > self.executor.slots() {
            return Err(Error::invalid(
                "job.trainingInput.scaleTier",
                format!(
                    "The job has {slots} replicas; this host runs at most {} at once (training_slots).",
                    self.executor.slots()
                ),
            ));
        }
        // A tuning job holds room for its parallel trials (as many as fit on this host).
        let parallel = match &spec.study {
            Some(study) => {
                if let Some(previous) = &study.resume_previous_job_id {
                    let field = "job.trainingInput.hyperparameters.resumePreviousJobId";
                    let name = JobName::new(field, name.project.as_str(), previous)?;
                    let found = self
                        .store
                        .get_job(&name)
                        .await?
                        .ok_or_else(|| Error::invalid(field, format!("There is no job {previous} to resume.")))?;
                    if !found.state.is_final() {
                        return Err(Error::invalid(field, format!("Job {previous} has not ended yet.")));
                    }
                }
                let per_trial_gpus = spec.replicas.total_gpus().max(0) as usize;
                let by_gpus = if per_trial_gpus == 0 { usize::MAX } else { self.executor.gpus() / per_trial_gpus };
                study.max_parallel_trials.min(self.executor.slots() / slots.max(1) as usize).min(by_gpus).max(1) as i64
            }
            None => 1,
        };
        let slots = slots * parallel;
        let gpus = spec.replicas.total_gpus() * parallel;
        if gpus as usize > self.executor.gpus() {
            let field = if input.scale_tier.as_deref() == Some("BASIC_GPU") {
                "job.trainingInput.scaleTier"
            } else {
                "job.trainingInput.masterConfig.acceleratorConfig.count"
            };
            return Err(Error::invalid(
                field,
                format!(
                    "The job needs {gpus} GPU devices at once; this host has {} (gpu_devices).",
                    self.executor.gpus()
                ),
            ));
        }
        let priority = input.scheduling.as_ref().and_then(|s| s.priority).unwrap_or(0);
        let new = NewJob {
            kind: JobKind::Training,
            labels,
            input: serde_json::to_value(&input).map_err(Error::internal)?,
            priority,
            replicas: slots,
            gpus,
        };
        let job = self.store.insert_job(name, &new).await?;
        self.executor.wake();
        Ok(job)
    }

    /// The job, or NOT_FOUND.
    pub async fn get_job(&self, name: &JobName) -> Result<JobRecord> {
        self.store.get_job(name).await?.ok_or_else(|| Error::not_found("name", format!("Job {name} not found.")))
    }
}

/// Checks a TrainingInput of a job of `project` and resolves what the executor needs from it
/// (URIs confined to what the project may name in the storage roots).
pub fn training_spec(storage: &LocalStorage, project: &ProjectId, input: &TrainingInput) -> Result<TrainingSpec> {
    let field = |f: &str| format!("job.trainingInput.{f}");
    let tier = input.scale_tier.as_deref().unwrap_or("BASIC");
    let counts_given = input.worker_count.unwrap_or(0) != 0 || input.parameter_server_count.unwrap_or(0) != 0;
    let replicas = if tier == "CUSTOM" {
        let max = limits::MAX_REPLICAS_PER_POOL;
        let workers = count_in(&field("workerCount"), input.worker_count.unwrap_or(0), 0, max)?;
        let parameter_servers =
            count_in(&field("parameterServerCount"), input.parameter_server_count.unwrap_or(0), 0, max)?;
        Replicas {
            workers,
            parameter_servers,
            master_gpus: pool_gpus(input, "master")?,
            worker_gpus: pool_gpus(input, "worker")?,
            parameter_server_gpus: pool_gpus(input, "parameterServer")?,
        }
    } else {
        let replicas = tier_replicas(tier).ok_or_else(|| {
            Error::invalid(
                field("scaleTier"),
                format!(
                    "Unknown scale tier '{tier}'; use BASIC, STANDARD_1, PREMIUM_1, BASIC_GPU, BASIC_TPU or CUSTOM."
                ),
            )
        })?;
        if counts_given {
            return Err(Error::invalid(
                field("workerCount"),
                "workerCount and parameterServerCount are allowed only with scaleTier CUSTOM.",
            ));
        }
        replicas
    };
    at_most(&field("packageUris"), &input.package_uris, limits::MAX_URIS)?;
    at_most(&field("args"), &input.args, limits::MAX_ARGS)?;
    if input.package_uris.is_empty() {
        return Err(Error::invalid(
            field("packageUris"),
            "At least one package URI is required (an sdist, a wheel or a folder).",
        ));
    }
    if input.python_module.trim().is_empty() {
        return Err(Error::invalid(
            field("pythonModule"),
            "pythonModule is required: the module run as python -m <module>.",
        ));
    }
    let mut packages = Vec::with_capacity(input.package_uris.len());
    for (i, uri) in input.package_uris.iter().enumerate() {
        packages.push(storage.resolve_uri(project, &format!("{}[{i}]", field("packageUris")), uri)?);
    }
    let job_dir =
        input.job_dir.as_deref().map(|d| storage.resolve_output_uri(project, &field("jobDir"), d)).transpose()?;
    let scheduling = input.scheduling.clone().unwrap_or_default();
    if let Some(priority) = scheduling.priority {
        if !(0..=1000).contains(&priority) {
            return Err(Error::invalid(field("scheduling.priority"), "priority must be between 0 and 1000."));
        }
    }
    if let Some(wait) = scheduling.max_wait_time.as_deref() {
        limits::parse_duration(wait).map_err(|e| Error::invalid(field("scheduling.maxWaitTime"), e))?;
    }
    let max_running_time = scheduling
        .max_running_time
        .as_deref()
        .map(|d| limits::parse_duration(d).map_err(|e| Error::invalid(field("scheduling.maxRunningTime"), e)))
        .transpose()?;
    let study = match input.recorded.get("hyperparameters") {
        Some(spec) => {
            let spec: super::tuning::HyperparameterSpec = serde_json::from_value(spec.clone())
                .map_err(|e| Error::invalid(field("hyperparameters"), format!("not a HyperparameterSpec: {e}")))?;
            Some(super::tuning::Study::from_spec(&spec)?)
        }
        None => None,
    };
    Ok(TrainingSpec {
        packages,
        module: input.python_module.clone(),
        args: input.args.clone(),
        job_dir,
        replicas,
        max_running_time,
        study,
    })
}

impl Control {
    /// A page of the project's jobs, ordered by id.
    pub async fn list_jobs(&self, project: &ProjectId, page: PageRequest, filter: &Filter) -> Result<JobPage> {
        let fetch =
            |after: Option<String>, limit| async move { self.store.list_jobs(project, after.as_deref(), limit).await };
        let keep = |j: &JobRecord| filter.matches(&job_fields(j));
        let (jobs, next_page_token) = filtered_page(&page, keep, |j| &j.job, fetch).await?;
        Ok(JobPage { jobs, next_page_token })
    }

    /// A queued job's place in the queue (1 = next to start), else 0.
    pub async fn job_position(&self, job: &JobRecord) -> Result<i64> {
        Ok(self.job_positions(std::slice::from_ref(job)).await?[0])
    }

    /// [`Control::job_position`] of each job, reading the queue once.
    pub async fn job_positions(&self, jobs: &[JobRecord]) -> Result<Vec<i64>> {
        if jobs.iter().all(|j| j.state != JobState::Queued) {
            return Ok(vec![0; jobs.len()]);
        }
        let queue = self.store.jobs_in_states(&[JobState::Queued]).await?;
        let position = |job: &JobRecord| {
            queue.iter().position(|q| q.project == job.project && q.job == job.job).map_or(0, |i| i as i64 + 1)
        };
        Ok(jobs.iter().map(|j| if j.state == JobState::Queued { position(j) } else { 0 }).collect())
    }

    /// The job's log from `from`, for `replica` when given.
    pub async fn job_logs(
        &self,
        name: &JobName,
        replica: Option<String>,
        from: LogCursor,
        limit: usize,
    ) -> Result<JobLogs> {
        // The state is read before the file: a job that had ended has every line written, so a
        // follower that reads nothing new after `job_ended` has seen them all.
        let job_ended = self.get_job(name).await?.state.is_final();
        let path = self.executor.work_dir(name).join("job.log");
        let (lines, next) =
            tokio::task::spawn_blocking(move || crate::executor::read_logs(&path, replica.as_deref(), from, limit))
                .await
                .map_err(Error::internal)?
                .map_err(Error::internal)?;
        Ok(JobLogs { lines, next, job_ended })
    }

    /// The job's metric reports collected so far, in report order.
    pub async fn job_metrics(&self, name: &JobName) -> Result<Vec<crate::executor::MetricPoint>> {
        self.get_job(name).await?;
        let path = self.executor.work_dir(name).join("metrics.jsonl");
        tokio::task::spawn_blocking(move || crate::executor::read_series(&path))
            .await
            .map_err(Error::internal)?
            .map_err(Error::internal)
    }

    /// Replaces the job's labels (`jobs.patch`, the only patchable field).
    pub async fn update_job_labels(
        &self,
        name: &JobName,
        labels: BTreeMap<String, String>,
        expected_revision: Option<i64>,
    ) -> Result<JobRecord> {
        check_labels("job.labels", &labels)?;
        self.get_job(name).await?;
        self.store.update_job_labels(name, &labels, expected_revision).await?;
        self.get_job(name).await
    }

    /// Cancels a job: a queued one at once; a preparing or running one through CANCELLING while
    /// the executor stops its processes. A job that has ended cannot be cancelled.
    pub async fn cancel_job(&self, name: &JobName) -> Result<()> {
        let job = self.get_job(name).await?;
        if job.state.is_final() {
            return Err(Error::FailedPrecondition(format!("Job {name} has already ended ({}).", job.state.as_str())));
        }
        if self
            .store
            .transition_job(name, &[JobState::Queued], JobState::Cancelled, Some("Cancelled by request."))
            .await?
        {
            return Ok(());
        }
        self.store.transition_job(name, &[JobState::Preparing, JobState::Running], JobState::Cancelling, None).await?;
        self.executor.cancel(name);
        Ok(())
    }
}

/// The fields a list filter can name on a job.
fn job_fields(j: &JobRecord) -> Vec<(String, String)> {
    let mut fields = vec![
        ("jobId".to_owned(), j.job.clone()),
        ("state".to_owned(), j.state.as_str().to_owned()),
        // An Anneal addition: TRAINING or PREDICTION.
        ("type".to_owned(), j.kind.as_str().to_owned()),
    ];
    fields.extend(labels(&j.labels));
    fields
}

/// Parses a protobuf JSON duration such as `"3600s"` or `"1.5s"`; `None` when it is not one or
/// is longer than [`limits::MAX_DURATION_SECS`].
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    limits::parse_duration(text).ok()
}
