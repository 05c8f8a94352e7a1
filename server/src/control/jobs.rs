//! Training-job use cases: check a TrainingInput into a plan and queue the job, read, list,
//! label, cancel. The scheduler (`control::scheduler`) starts what is queued on the executor.

use std::collections::BTreeMap;
use std::time::Duration;

use super::filter::{labels, Filter};
use super::limits::{self, at_most, check_labels, count_in};
use super::paging::{filtered_page, PageRequest};
use super::Control;
use crate::error::{Error, Result};
use crate::executor::{LogCursor, LogLine, MetricPoint};
use crate::jobs::plan::{Replicas, StudyPlan};
use crate::jobs::study::{Study, DEFAULT_METRIC_TAG};
use crate::jobs::wire::{HyperparameterSpec, ReplicaConfig, TrainingInput};
use crate::jobs::{JobOutput, JobPlan, Needs, TrainingPlan, Work};
use crate::names::{JobName, ProjectId};
use crate::storage::Storage;
use crate::store::{JobInput, JobRecord, JobState, NewJob};

/// Lines of a job's log, where to read next, and whether the job had ended before they were read.
pub struct JobLogs {
    pub lines: Vec<LogLine>,
    pub next: LogCursor,
    pub job_ended: bool,
}

/// A page of jobs.
pub struct JobPage {
    pub jobs: Vec<JobRecord>,
    pub next_page_token: Option<String>,
}

impl Control {
    /// Checks a training job into its plan and queues it.
    pub async fn create_job(
        &self,
        name: &JobName,
        labels: BTreeMap<String, String>,
        input: TrainingInput,
    ) -> Result<JobRecord> {
        check_labels("job.labels", &labels)?;
        let plan = self.plan_training(name, &input).await?;
        let priority = input.scheduling.as_ref().and_then(|s| s.priority).unwrap_or(0);
        let new = NewJob { labels, input: JobInput::Training(input), plan, priority };
        let job = self.store.insert_job(name, &new).await?;
        self.wake_scheduler();
        Ok(job)
    }

    /// The plan of a training job of `name`'s project, with the room it holds on this executor.
    pub(super) async fn plan_training(&self, name: &JobName, input: &TrainingInput) -> Result<JobPlan> {
        let capacity = self.executor.capacity();
        check_accelerator_counts(input, capacity.gpus)?;
        let mut training = training_plan(&self.storage, &name.project, input)?;
        for (i, package) in training.packages.iter().enumerate() {
            let package_field = format!("{}[{i}]", field("packageUris"));
            self.refuse_foreign(&name.project, &package_field, &input.package_uris[i], package).await?;
            self.storage.check_readable(&package_field, package).await?;
        }
        if let (Some(dir), Some(uri)) = (&training.job_dir, &input.job_dir) {
            self.claim_output(&name.project, &field("jobDir"), uri, dir).await?;
        }
        let per_run = training.replicas.count();
        if per_run as usize > capacity.slots {
            return Err(Error::invalid(
                "job.trainingInput.scaleTier",
                format!(
                    "The job has {per_run} replicas; this host runs at most {} at once (training_slots).",
                    capacity.slots
                ),
            ));
        }
        let per_run_gpus = training.replicas.total_gpus().max(0) as usize;
        // A tuning job holds room for its parallel trials (as many as fit on this host).
        let parallel = match training.study.as_mut() {
            Some(plan) => {
                plan.previous_trials = self.previous_trials(name, &plan.study).await?;
                let by_gpus = capacity.gpus.checked_div(per_run_gpus).unwrap_or(usize::MAX);
                plan.parallel_trials =
                    plan.study.max_parallel_trials.min(capacity.slots / per_run.max(1) as usize).min(by_gpus).max(1);
                plan.parallel_trials
            }
            None => 1,
        };
        let needs = Needs { slots: per_run as usize * parallel, gpus: per_run_gpus * parallel };
        if needs.gpus > capacity.gpus {
            let field = if input.scale_tier.as_deref() == Some("BASIC_GPU") {
                "job.trainingInput.scaleTier"
            } else {
                "job.trainingInput.masterConfig.acceleratorConfig.count"
            };
            return Err(Error::invalid(
                field,
                format!(
                    "The job needs {} GPU devices at once; this host has {} (gpu_devices).",
                    needs.gpus, capacity.gpus
                ),
            ));
        }
        let max_wait_time = scheduling_duration(input, "maxWaitTime", |s| s.max_wait_time.as_deref())?;
        Ok(JobPlan::new(needs, max_wait_time, Work::Training(training)))
    }

    /// The trials of the ended job a study resumes (`resumePreviousJobId`).
    async fn previous_trials(
        &self,
        name: &JobName,
        study: &Study,
    ) -> Result<Vec<crate::jobs::wire::HyperparameterOutput>> {
        let Some(previous) = &study.resume_previous_job_id else { return Ok(Vec::new()) };
        let field = "job.trainingInput.hyperparameters.resumePreviousJobId";
        let previous_name = JobName::new(field, name.project.as_str(), previous)?;
        let found = self
            .store
            .get_job(&previous_name)
            .await?
            .ok_or_else(|| Error::invalid(field, format!("There is no job {previous} to resume.")))?;
        if !found.state.is_final() {
            return Err(Error::invalid(field, format!("Job {previous} has not ended yet.")));
        }
        let mut trials = match found.output {
            JobOutput::Training(output) => output.trials,
            JobOutput::Prediction(_) => Vec::new(),
        };
        for trial in &mut trials {
            // A trial the ended job did not finish counts as cancelled.
            if !matches!(trial.state, JobState::Succeeded | JobState::Failed) {
                trial.state = JobState::Cancelled;
            }
        }
        trials.sort_by_key(|t| t.number());
        Ok(trials)
    }

    /// The job, or NOT_FOUND.
    pub async fn get_job(&self, name: &JobName) -> Result<JobRecord> {
        self.store.get_job(name).await?.ok_or_else(|| Error::not_found("name", format!("Job {name} not found.")))
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
fn pool_gpus(pool: &str, config: Option<&ReplicaConfig>, machine_type: Option<&str>) -> Result<i64> {
    match accelerator_count(pool, config)? {
        Some((field, n)) => count_in(&field, n, 0, limits::MAX_ACCELERATORS_PER_REPLICA),
        None => Ok(machine_type_gpus(machine_type.unwrap_or(""))),
    }
}

/// A pool's `<pool>Config.acceleratorConfig.count`, if given, with its field's name.
fn accelerator_count(pool: &str, config: Option<&ReplicaConfig>) -> Result<Option<(String, i64)>> {
    let Some(count) = config.and_then(|c| c.accelerator_config.as_ref()).and_then(|a| a.count.as_ref()) else {
        return Ok(None);
    };
    let parsed = count.as_i64().or_else(|| count.as_str().and_then(|s| s.trim().parse().ok()));
    let field = format!("job.trainingInput.{pool}Config.acceleratorConfig.count");
    match parsed {
        Some(n) => Ok(Some((field, n))),
        None => Err(Error::invalid(field, format!("{} is not a GPU count.", limits::short(&count.to_string())))),
    }
}

/// Refuses an `acceleratorConfig.count` of any pool (whatever the scale tier) that no replica
/// could ever get: more GPUs than the executor has (all of a Ray cluster's: what it reports).
fn check_accelerator_counts(input: &TrainingInput, gpus: usize) -> Result<()> {
    let pools = [
        ("master", input.master_config.as_ref()),
        ("worker", input.worker_config.as_ref()),
        ("parameterServer", input.parameter_server_config.as_ref()),
    ];
    for (pool, config) in pools {
        let Some((field, n)) = accelerator_count(pool, config)? else { continue };
        if n > 0 && n as u64 > gpus as u64 {
            let name = field.strip_prefix("job.").unwrap_or(&field).to_owned();
            let s = if gpus == 1 { "" } else { "s" };
            return Err(Error::invalid(field, format!("{name} is {n}, more than the {gpus} GPU{s} this server has.")));
        }
        count_in(&field, n, 0, limits::MAX_ACCELERATORS_PER_REPLICA)?;
    }
    Ok(())
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

fn field(f: &str) -> String {
    format!("job.trainingInput.{f}")
}

/// The replica pools a TrainingInput asks for: a scale tier's, or CUSTOM counts and devices.
fn replicas(input: &TrainingInput) -> Result<Replicas> {
    let tier = input.scale_tier.as_deref().unwrap_or("BASIC");
    if tier == "CUSTOM" {
        let max = limits::MAX_REPLICAS_PER_POOL;
        return Ok(Replicas {
            workers: count_in(&field("workerCount"), input.worker_count.unwrap_or(0), 0, max)?,
            parameter_servers: count_in(
                &field("parameterServerCount"),
                input.parameter_server_count.unwrap_or(0),
                0,
                max,
            )?,
            master_gpus: pool_gpus("master", input.master_config.as_ref(), input.master_type.as_deref())?,
            worker_gpus: pool_gpus("worker", input.worker_config.as_ref(), input.worker_type.as_deref())?,
            parameter_server_gpus: pool_gpus(
                "parameterServer",
                input.parameter_server_config.as_ref(),
                input.parameter_server_type.as_deref(),
            )?,
        });
    }
    let replicas = tier_replicas(tier).ok_or_else(|| {
        Error::invalid(
            field("scaleTier"),
            format!("Unknown scale tier '{tier}'; use BASIC, STANDARD_1, PREMIUM_1, BASIC_GPU, BASIC_TPU or CUSTOM."),
        )
    })?;
    if input.worker_count.unwrap_or(0) != 0 || input.parameter_server_count.unwrap_or(0) != 0 {
        return Err(Error::invalid(
            field("workerCount"),
            "workerCount and parameterServerCount are allowed only with scaleTier CUSTOM.",
        ));
    }
    Ok(replicas)
}

/// A `scheduling` duration (`maxWaitTime`, `maxRunningTime`), parsed.
fn scheduling_duration(
    input: &TrainingInput,
    name: &str,
    get: impl Fn(&crate::jobs::wire::Scheduling) -> Option<&str>,
) -> Result<Option<Duration>> {
    let Some(text) = input.scheduling.as_ref().and_then(get) else { return Ok(None) };
    limits::parse_duration(text)
        .map(Some)
        .map_err(|e| Error::invalid(field(&format!("scheduling.{name}")), e.to_string()))
}

/// Checks a TrainingInput of a job of `project` and resolves it into the plan the executor runs
/// (URIs confined to what the project may name in the storage roots). A study's parallel trials
/// and resumed trials are filled in by [`Control::plan_training`], which knows the executor and
/// the store.
pub fn training_plan(storage: &Storage, project: &ProjectId, input: &TrainingInput) -> Result<TrainingPlan> {
    let replicas = replicas(input)?;
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
    let packages = input
        .package_uris
        .iter()
        .enumerate()
        .map(|(i, uri)| storage.locate(project, &format!("{}[{i}]", field("packageUris")), uri))
        .collect::<Result<Vec<_>>>()?;
    let job_dir = input.job_dir.as_deref().map(|d| storage.locate_output(project, &field("jobDir"), d)).transpose()?;
    if let Some(priority) = input.scheduling.as_ref().and_then(|s| s.priority) {
        if !(0..=1000).contains(&priority) {
            return Err(Error::invalid(field("scheduling.priority"), "priority must be between 0 and 1000."));
        }
    }
    scheduling_duration(input, "maxWaitTime", |s| s.max_wait_time.as_deref())?;
    let max_running_time = scheduling_duration(input, "maxRunningTime", |s| s.max_running_time.as_deref())?;
    let spec = input
        .hyperparameters
        .as_ref()
        .map(|spec| {
            serde_json::from_value::<HyperparameterSpec>(spec.clone())
                .map_err(|e| Error::invalid(field("hyperparameters"), format!("not a HyperparameterSpec: {e}")))
        })
        .transpose()?;
    let metric_tag = spec
        .as_ref()
        .and_then(|s| s.hyperparameter_metric_tag.clone())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| DEFAULT_METRIC_TAG.to_owned());
    let study = spec.as_ref().map(Study::from_spec).transpose()?.map(|study| StudyPlan {
        study,
        parallel_trials: 1,
        previous_trials: Vec::new(),
    });
    Ok(TrainingPlan {
        packages,
        module: input.python_module.clone(),
        args: input.args.clone(),
        job_dir,
        replicas,
        max_running_time,
        metric_tag,
        tf_config_job: serde_json::to_value(input).map_err(Error::internal)?,
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
        let path = self.executor.files(name).log;
        if job_ended {
            // Another node ran it, or this node's storage folder is new: the copy in the
            // artifacts bucket, when there is one.
            self.storage.fetch_published(&path).await?;
        }
        let (lines, next) =
            tokio::task::spawn_blocking(move || crate::executor::read_logs(&path, replica.as_deref(), from, limit))
                .await
                .map_err(Error::internal)?
                .map_err(Error::internal)?;
        Ok(JobLogs { lines, next, job_ended })
    }

    /// The job's metric reports collected so far, grouped into series (tag and replica) in the
    /// order each first appeared; read and grouped off the async runtime.
    pub async fn job_metric_series(&self, name: &JobName) -> Result<Vec<crate::executor::Series>> {
        let points = self.job_metrics(name).await?;
        tokio::task::spawn_blocking(move || crate::executor::group_series(points)).await.map_err(Error::internal)
    }

    /// The job's metric reports collected so far, in report order.
    pub async fn job_metrics(&self, name: &JobName) -> Result<Vec<MetricPoint>> {
        let job_ended = self.get_job(name).await?.state.is_final();
        let path = self.executor.files(name).metrics;
        if job_ended {
            self.storage.fetch_published(&path).await?;
        }
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
        ("type".to_owned(), j.kind().as_str().to_owned()),
    ];
    fields.extend(labels(&j.labels));
    fields
}
