//! A job's plan: everything an executor needs to run it, resolved and checked by control when the
//! job is created (URIs confined to the project's storage roots, counts bounded, durations
//! parsed, the tuning study checked), then stored with the job and executed as is. An executor
//! never goes back to the request.
//!
//! Plans are serialised with serde into the job's row. [`PLAN_VERSION`] names the shape; a plan
//! written by another version of Anneal that this one cannot read fails that one job with a
//! message saying so (see `control::scheduler`), and a job stored before plans existed gets its
//! plan made from its stored input when it is scheduled.

use crate::storage::Location;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::study::Study;
use super::wire::HyperparameterOutput;
use crate::serving::batch::InputFormat;

/// The shape of [`JobPlan`] this Anneal writes and reads.
pub const PLAN_VERSION: u32 = 1;

/// What a job is to do, and what it holds while it runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobPlan {
    /// [`PLAN_VERSION`] when written.
    pub version: u32,
    pub needs: Needs,
    /// `scheduling.maxWaitTime`: a job still queued after it is cancelled.
    #[serde(default)]
    pub max_wait_time: Option<Duration>,
    pub work: Work,
}

impl JobPlan {
    /// A plan of the current version.
    pub fn new(needs: Needs, max_wait_time: Option<Duration>, work: Work) -> Self {
        Self { version: PLAN_VERSION, needs, max_wait_time, work }
    }

    /// Reads a stored plan; the error says why this Anneal cannot run it.
    pub fn from_stored(text: &str) -> Result<Self, PlanError> {
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let version = serde_json::from_str::<Version>(text).map_err(PlanError::NotAPlan)?;
        if version.version != PLAN_VERSION {
            return Err(PlanError::OtherVersion(version.version));
        }
        serde_json::from_str(text).map_err(PlanError::Unreadable)
    }
}

/// Why a stored plan cannot be run by this Anneal.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("the stored plan is not one: {0}")]
    NotAPlan(#[source] serde_json::Error),
    #[error("the job was planned by another Anneal version (plan version {0}, this server reads {PLAN_VERSION})")]
    OtherVersion(u32),
    #[error("the stored plan cannot be read: {0}")]
    Unreadable(#[source] serde_json::Error),
}

/// Room a job holds on an executor while it runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Needs {
    /// Replica slots (a tuning job: its parallel trials' replicas; a batch job: its workers).
    pub slots: usize,
    /// GPU devices.
    pub gpus: usize,
}

/// The work of a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Work {
    Training(TrainingPlan),
    Prediction(PredictionPlan),
}

/// A training job: replicas of the user's package (or, with a study, trials of them).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrainingPlan {
    /// Package files or folders, resolved inside the project's storage roots or buckets.
    pub packages: Vec<Location>,
    /// Run as `python -m <module>`.
    pub module: String,
    pub args: Vec<String>,
    /// `--job-dir`, created before the replicas start when local.
    pub job_dir: Option<Location>,
    pub replicas: Replicas,
    /// `scheduling.maxRunningTime`.
    #[serde(default)]
    pub max_running_time: Option<Duration>,
    /// The tag whose last report by the master becomes `trainingOutput.finalMetric`.
    pub metric_tag: String,
    /// `TF_CONFIG.job`: the TrainingInput as the API returns it.
    pub tf_config_job: serde_json::Value,
    /// A hyperparameter tuning study, when the job has `hyperparameters` with `params`.
    #[serde(default)]
    pub study: Option<StudyPlan>,
}

/// A tuning study as a job runs it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StudyPlan {
    pub study: Study,
    /// Trials run at once (what fits on the executor, at most `maxParallelTrials`).
    pub parallel_trials: usize,
    /// The trials of the job named by `resumePreviousJobId` (it had ended when this one was
    /// created): they count towards `maxTrials` and inform suggestions.
    #[serde(default)]
    pub previous_trials: Vec<HyperparameterOutput>,
}

/// A replica pool of a training job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Pool {
    Master,
    Worker,
    ParameterServer,
}

impl Pool {
    /// The task type in `TF_CONFIG` and in replica names (`master-replica-0`, `ps-replica-1`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Master => "master",
            Self::Worker => "worker",
            Self::ParameterServer => "ps",
        }
    }
}

/// The replica pools of a job, and the GPU devices each replica of a pool needs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
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

    /// Every replica, as (pool, index), master first. The counts are bounded when the plan is
    /// made.
    pub fn all(&self) -> Vec<(Pool, i64)> {
        let mut all = vec![(Pool::Master, 0)];
        all.extend((0..self.workers).map(|i| (Pool::Worker, i)));
        all.extend((0..self.parameter_servers).map(|i| (Pool::ParameterServer, i)));
        all
    }

    /// GPU devices one replica of `pool` needs.
    pub fn gpus_of(&self, pool: Pool) -> i64 {
        match pool {
            Pool::Master => self.master_gpus,
            Pool::Worker => self.worker_gpus,
            Pool::ParameterServer => self.parameter_server_gpus,
        }
    }

    /// GPU devices the whole job needs at once.
    pub fn total_gpus(&self) -> i64 {
        self.master_gpus + self.workers * self.worker_gpus + self.parameter_servers * self.parameter_server_gpus
    }
}

/// A batch prediction job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PredictionPlan {
    pub model: ModelSource,
    pub format: InputFormat,
    pub inputs: Vec<InputPattern>,
    /// The folder the shards go to, resolved.
    pub output: Location,
    /// `outputPath` as the user gave it (reported in `predictionOutput`).
    pub output_path: String,
    /// Worker threads (slots held).
    pub workers: usize,
    /// Lines per forward pass.
    pub batch_size: usize,
    /// `signatureName`: the TensorFlow signature to predict with (`None`: the model's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_name: Option<String>,
}

/// Which model a batch job runs, in the job's own project.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "camelCase")]
pub enum ModelSource {
    /// The model's default version when the job starts.
    Model {
        model: String,
    },
    Version {
        model: String,
        version: String,
    },
    /// A model directory that is not deployed.
    Dir {
        dir: Location,
    },
}

/// One entry of `inputPaths`: a folder and a file name that may hold `*` wildcards.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputPattern {
    pub dir: Location,
    pub file: String,
}

/// What one replica of a machine type holds besides its GPUs: its vCPUs and memory (a Ray
/// bundle's resources; the local executor's limits of the replica's sandbox).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Machine {
    pub cpus: u32,
    /// Bytes; `None` reserves no memory.
    pub memory: Option<u64>,
}

/// The bundle of a replica of `machine_type`: `<family>-<kind>-<N>` (n1, n2, e2, …: standard,
/// highmem, highcpu) and `mls1-c<N>-m<M>` as Compute Engine sizes them (N vCPUs; 3.75, 6.5 or
/// 0.9 GB per vCPU for n1, 4, 8 or 1 for the others; M GB); anything else (none, a legacy name
/// such as `standard_gpu`) one CPU and no memory.
pub fn machine_resources(machine_type: &str) -> Machine {
    const GB: f64 = 1e9;
    let plain = Machine { cpus: 1, memory: None };
    let parts: Vec<&str> = machine_type.split('-').collect();
    match parts.as_slice() {
        ["mls1", c, m] => {
            let cpus = c.strip_prefix('c').and_then(|n| n.parse::<u32>().ok()).filter(|n| *n > 0);
            let memory = m.strip_prefix('m').and_then(|n| n.parse::<u64>().ok());
            match cpus {
                Some(cpus) => Machine { cpus, memory: memory.map(|m| m * 1_000_000_000) },
                None => plain,
            }
        }
        [family, kind, n] => {
            let Some(cpus) = n.parse::<u32>().ok().filter(|n| *n > 0) else { return plain };
            let per_cpu = match (*family == "n1", *kind) {
                (true, "standard") => 3.75,
                (true, "highmem") => 6.5,
                (true, "highcpu") => 0.9,
                (false, "standard") => 4.0,
                (false, "highmem") => 8.0,
                (false, "highcpu") => 1.0,
                _ => return plain,
            };
            Machine { cpus, memory: Some((per_cpu * GB * f64::from(cpus)).round() as u64) }
        }
        _ => plain,
    }
}

impl TrainingPlan {
    /// The machine of one replica of `pool`, from its `masterType`, `workerType` or
    /// `parameterServerType`.
    pub fn machine_of(&self, pool: Pool) -> Machine {
        let key = match pool {
            Pool::Master => "masterType",
            Pool::Worker => "workerType",
            Pool::ParameterServer => "parameterServerType",
        };
        machine_resources(self.tf_config_job[key].as_str().unwrap_or(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::study::{Algorithm, Domain, Goal, Param, Scale};
    use crate::jobs::wire::{HyperparameterMetric, JobState};

    #[test]
    fn machine_types_become_bundle_cpus_and_memory() {
        let machine = |cpus, gb: f64| Machine { cpus, memory: Some((gb * 1e9).round() as u64) };
        assert_eq!(machine_resources("n1-standard-4"), machine(4, 15.0));
        assert_eq!(machine_resources("n1-highmem-2"), machine(2, 13.0));
        assert_eq!(machine_resources("e2-highcpu-8"), machine(8, 8.0));
        assert_eq!(machine_resources("mls1-c4-m2"), machine(4, 2.0));
        for plain in ["", "standard_gpu", "complex_model_m", "n1-standard-0", "n1-weird-4", "mls1-x-m2"] {
            assert_eq!(machine_resources(plain), Machine { cpus: 1, memory: None }, "{plain}");
        }
    }

    fn training() -> JobPlan {
        let study = Study {
            goal: Goal::Minimize,
            metric_tag: "loss".into(),
            params: vec![
                Param { name: "lr".into(), domain: Domain::Double { min: 1e-4, max: 1.0, scale: Scale::Log } },
                Param { name: "opt".into(), domain: Domain::Categorical(vec!["sgd".into(), "adam".into()]) },
            ],
            max_trials: 4,
            max_parallel_trials: 2,
            max_failed_trials: 0,
            early_stopping: true,
            algorithm: Algorithm::Tpe,
            resume_previous_job_id: Some("before".into()),
        };
        let previous = HyperparameterOutput {
            trial_id: "1".into(),
            hyperparameters: [("lr".to_owned(), "0.1".to_owned())].into(),
            state: JobState::Succeeded,
            start_time: "2026-12-01T00:00:00.000Z".into(),
            end_time: Some("2026-12-01T00:01:00.000Z".into()),
            is_trial_stopped_early: false,
            final_metric: Some(HyperparameterMetric { training_step: 10, objective_value: 0.5 }),
        };
        JobPlan::new(
            Needs { slots: 4, gpus: 0 },
            Some(Duration::from_secs(60)),
            Work::Training(TrainingPlan {
                packages: vec![local("/data/storage/p/trainer"), object("s3://bucket/pkgs/trainer-0.1.tar.gz")],
                module: "trainer.task".into(),
                args: vec!["--epochs=2".into()],
                job_dir: Some(object("s3://bucket/jobs/j1")),
                replicas: Replicas { workers: 1, ..Replicas::default() },
                max_running_time: Some(Duration::from_millis(1500)),
                metric_tag: "loss".into(),
                tf_config_job: serde_json::json!({"pythonModule": "trainer.task", "scaleTier": "CUSTOM"}),
                study: Some(StudyPlan { study, parallel_trials: 2, previous_trials: vec![previous] }),
            }),
        )
    }

    fn local(path: &str) -> Location {
        Location::Local(path.into())
    }

    fn object(uri: &str) -> Location {
        Location::Object(crate::storage::ObjectUri::parse("f", uri).expect("uri"))
    }

    fn prediction() -> JobPlan {
        JobPlan::new(
            Needs { slots: 2, gpus: 0 },
            None,
            Work::Prediction(PredictionPlan {
                model: ModelSource::Version { model: "m".into(), version: "v1".into() },
                format: InputFormat::Csv,
                inputs: vec![
                    InputPattern { dir: local("/data/in"), file: "part-*".into() },
                    InputPattern { dir: object("s3://bucket/in"), file: "*.json".into() },
                ],
                output: local("/data/out"),
                output_path: "file:///data/out".into(),
                workers: 2,
                batch_size: 64,
                signature_name: None,
            }),
        )
    }

    #[test]
    fn plans_round_trip_through_their_stored_text() {
        for plan in [training(), prediction()] {
            let text = serde_json::to_string(&plan).expect("serialises");
            assert_eq!(JobPlan::from_stored(&text).expect("reads back"), plan);
        }
    }

    #[test]
    fn a_plan_of_another_version_fails_with_a_reason() {
        let mut value = serde_json::to_value(training()).expect("serialises");
        value["version"] = 99.into();
        let error = JobPlan::from_stored(&value.to_string()).expect_err("other version").to_string();
        assert!(error.contains("plan version 99"), "{error}");
        let error = JobPlan::from_stored("{\"version\": 1, \"needs\": 3}").expect_err("broken").to_string();
        assert!(error.contains("cannot be read"), "{error}");
        assert!(JobPlan::from_stored("not json").expect_err("garbage").to_string().contains("not one"));
    }

    #[test]
    fn replicas_list_master_first() {
        let replicas = Replicas { workers: 2, parameter_servers: 1, worker_gpus: 1, ..Replicas::default() };
        let names: Vec<String> = replicas.all().iter().map(|(p, i)| format!("{}-{i}", p.as_str())).collect();
        assert_eq!(names, ["master-0", "worker-0", "worker-1", "ps-0"]);
        assert_eq!((replicas.count(), replicas.total_gpus()), (4, 2));
    }
}
