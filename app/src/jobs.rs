//! The wire types of jobs, shared by the server (which writes them) and the console (which reads
//! them): `GoogleCloudMlV1__Job` with its inputs, outputs, trials and states, as the `ml` v1 API
//! spells them. A field renamed here changes both sides at once, so the console cannot drift from
//! what the API answers.
//!
//! Conventions of the API kept here: camelCase names, int64 values written as strings (and read as
//! numbers or strings, see [`int64`]), fields the server does not act on kept and echoed as given
//! (the `recorded` maps).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// int64 fields: read as JSON numbers or strings, written as strings.
pub mod int64 {
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int64 {
        Number(i64),
        Text(String),
    }

    fn parse<E: serde::de::Error>(value: Int64) -> Result<i64, E> {
        match value {
            Int64::Number(n) => Ok(n),
            Int64::Text(t) => t.parse().map_err(|_| E::custom(format!("'{t}' is not an int64"))),
        }
    }

    /// An optional int64 (`#[serde(default, with = "int64::option")]`).
    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(value: &Option<i64>, serializer: S) -> Result<S::Ok, S::Error> {
            match value {
                Some(v) => serializer.serialize_str(&v.to_string()),
                None => serializer.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
            Option::<Int64>::deserialize(deserializer)?.map(parse).transpose()
        }
    }

    /// A required int64 (`#[serde(with = "int64::required")]`).
    pub mod required {
        use super::*;

        pub fn serialize<S: Serializer>(value: &i64, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_str(&value.to_string())
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
            parse(Int64::deserialize(deserializer)?)
        }
    }
}

/// The life of a job (and of a tuning trial): QUEUED → PREPARING → RUNNING → SUCCEEDED | FAILED;
/// CANCELLING → CANCELLED.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    Queued,
    Preparing,
    Running,
    Succeeded,
    Failed,
    Cancelling,
    Cancelled,
}

impl JobState {
    /// Every state, in the order of a job's life.
    pub const ALL: [JobState; 7] = [
        Self::Queued,
        Self::Preparing,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelling,
        Self::Cancelled,
    ];

    /// The API's (and the store's) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "QUEUED",
            Self::Preparing => "PREPARING",
            Self::Running => "RUNNING",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
            Self::Cancelling => "CANCELLING",
            Self::Cancelled => "CANCELLED",
        }
    }

    /// The state named `text`, if it is one.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether the job has ended.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    #[serde(default, with = "int64::option", skip_serializing_if = "Option::is_none")]
    pub worker_count: Option<i64>,
    #[serde(default, with = "int64::option", skip_serializing_if = "Option::is_none")]
    pub parameter_server_count: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling: Option<Scheduling>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter_server_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_config: Option<ReplicaConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_config: Option<ReplicaConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter_server_config: Option<ReplicaConfig>,
    /// The `HyperparameterSpec` exactly as sent (echoed as given; the server reads it into
    /// [`HyperparameterSpec`] when it checks the job, naming the field when it is not one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hyperparameters: Option<Value>,
    /// region, runtimeVersion, pythonVersion, ...: recorded.
    #[serde(flatten)]
    pub recorded: serde_json::Map<String, Value>,
}

/// `ReplicaConfig`: what one replica of a pool runs on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accelerator_config: Option<AcceleratorConfig>,
    /// imageUri, diskConfig, ...: recorded.
    #[serde(flatten)]
    pub recorded: serde_json::Map<String, Value>,
}

/// `AcceleratorConfig`. The count stays as sent (a number or a string); the server checks it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AcceleratorConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<Value>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
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

/// `HyperparameterSpec` as sent. The counts stay JSON values here: the server checks them and
/// names the field when one is not a whole number.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HyperparameterSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hyperparameter_metric_tag: Option<String>,
    #[serde(default)]
    pub params: Vec<ParameterSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_trials: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel_trials: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failed_trials: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_trial_early_stopping: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_previous_job_id: Option<String>,
}

/// `ParameterSpec` as sent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParameterSpec {
    #[serde(default)]
    pub parameter_name: String,
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_value: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categorical_values: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub discrete_values: Vec<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_type: Option<String>,
}

/// The PredictionInput fields Anneal acts on; every other field (region, runtimeVersion,
/// accelerator, ...) is kept and echoed as given.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PredictionInput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_data_format: Option<String>,
    #[serde(default)]
    pub input_paths: Vec<String>,
    #[serde(default)]
    pub output_path: String,
    #[serde(default, with = "int64::option", skip_serializing_if = "Option::is_none")]
    pub max_worker_count: Option<i64>,
    #[serde(default, with = "int64::option", skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_name: Option<String>,
    #[serde(flatten)]
    pub recorded: serde_json::Map<String, Value>,
}

/// `HyperparameterOutput.HyperparameterMetric`: one report of the objective.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HyperparameterMetric {
    #[serde(with = "int64::required")]
    pub training_step: i64,
    pub objective_value: f64,
}

/// `HyperparameterOutput`: one trial of a tuning job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HyperparameterOutput {
    pub trial_id: String,
    /// The trial's values, as they reached the trainer (`--name=value`).
    #[serde(default)]
    pub hyperparameters: BTreeMap<String, String>,
    pub state: JobState,
    #[serde(default)]
    pub start_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    #[serde(default)]
    pub is_trial_stopped_early: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_metric: Option<HyperparameterMetric>,
}

impl HyperparameterOutput {
    /// The trial's number (trial ids are 1, 2, ...); 0 for an id that is not a number.
    pub fn number(&self) -> u64 {
        self.trial_id.parse().unwrap_or(0)
    }
}

/// `TrainingOutput`. A job that is not a tuning job has no trials; `finalMetric` (an Anneal
/// addition) is the master's last report of the job's metric tag.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrainingOutput {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_hyperparameter_tuning_job: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hyperparameter_metric_tag: Option<String>,
    #[serde(default, with = "int64::option", skip_serializing_if = "Option::is_none")]
    pub completed_trial_count: Option<i64>,
    /// Replica hours used.
    #[serde(default, rename = "consumedMLUnits", skip_serializing_if = "Option::is_none")]
    pub consumed_ml_units: Option<f64>,
    /// Trials, best first by the study's goal.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trials: Vec<HyperparameterOutput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_metric: Option<HyperparameterMetric>,
}

/// `PredictionOutput`; empty until the job runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PredictionOutput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_path: Option<String>,
    #[serde(default, with = "int64::option", skip_serializing_if = "Option::is_none")]
    pub prediction_count: Option<i64>,
    #[serde(default, with = "int64::option", skip_serializing_if = "Option::is_none")]
    pub error_count: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_hours: Option<f64>,
}

/// `GoogleCloudMlV1__Job`: the resource `projects.jobs` answers. Exactly one of the inputs is
/// set, and the output of the same kind (empty, `{}`, until the job reports).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub job_id: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_input: Option<TrainingInput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction_input: Option<PredictionInput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_output: Option<TrainingOutput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction_output: Option<PredictionOutput>,
    pub state: JobState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    pub create_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    /// The job's place in the queue (1 is next); 0 once it has left the queue.
    #[serde(default, with = "int64::required")]
    pub job_position: i64,
    pub etag: String,
    /// An Anneal addition: the node that runs (or ran) the job, when several share a database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl Job {
    /// Whether it is a training job (else a batch prediction job).
    pub fn is_training(&self) -> bool {
        self.training_input.is_some()
    }
}

/// `ListJobsResponse`: a page of jobs, and the token of the next page when there is one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListJobsResponse {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<Job>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// One line of a job's log (Anneal's `jobs/{job}/logs`, and each `line` event when it follows).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// When the line was written, RFC 3339 UTC.
    pub time: String,
    /// Who wrote it: `master-replica-0`, `worker-replica-1`, `trial-3`, ...
    pub replica: String,
    pub text: String,
}

/// A page of a job's log: its lines from the asked offset, and the offset to ask for next (a
/// plain number: it counts lines, it is not an int64 field of the `ml` API).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogPage {
    #[serde(default)]
    pub lines: Vec<LogLine>,
    #[serde(default)]
    pub next_offset: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_keep_the_api_spelling() {
        let output = TrainingOutput {
            is_hyperparameter_tuning_job: true,
            hyperparameter_metric_tag: Some("loss".into()),
            completed_trial_count: Some(2),
            consumed_ml_units: Some(0.5),
            trials: vec![HyperparameterOutput {
                trial_id: "1".into(),
                hyperparameters: BTreeMap::from([("lr".into(), "0.1".into())]),
                state: JobState::Succeeded,
                start_time: "2026-01-01T00:00:00.000Z".into(),
                end_time: None,
                is_trial_stopped_early: false,
                final_metric: Some(HyperparameterMetric { training_step: 7, objective_value: 0.25 }),
            }],
            final_metric: None,
        };
        let json = serde_json::to_value(&output).unwrap();
        assert_eq!(json["consumedMLUnits"], 0.5);
        assert_eq!(json["completedTrialCount"], "2");
        assert_eq!(json["trials"][0]["state"], "SUCCEEDED");
        assert_eq!(json["trials"][0]["finalMetric"]["trainingStep"], "7");
        assert_eq!(serde_json::from_value::<TrainingOutput>(json).unwrap(), output);
        assert_eq!(serde_json::to_string(&TrainingOutput::default()).unwrap(), "{}");
        assert_eq!(serde_json::to_string(&PredictionOutput::default()).unwrap(), "{}");
    }

    #[test]
    fn int64_reads_numbers_and_text() {
        let input: PredictionInput = serde_json::from_str(r#"{"maxWorkerCount": 3, "batchSize": "8"}"#).unwrap();
        assert_eq!((input.max_worker_count, input.batch_size), (Some(3), Some(8)));
        assert!(serde_json::from_str::<PredictionInput>(r#"{"batchSize": "x"}"#).is_err());
        assert_eq!(JobState::parse("CANCELLING"), Some(JobState::Cancelling));
        assert_eq!(JobState::parse("nope"), None);
    }

    #[test]
    fn a_job_keeps_the_api_spelling() {
        let job = Job {
            job_id: "j".into(),
            labels: BTreeMap::new(),
            training_input: Some(TrainingInput { python_module: "trainer.task".into(), ..Default::default() }),
            prediction_input: None,
            training_output: Some(TrainingOutput::default()),
            prediction_output: None,
            state: JobState::Queued,
            error_message: None,
            create_time: "2026-01-01T00:00:00Z".into(),
            start_time: None,
            end_time: None,
            job_position: 1,
            etag: "AAAAAQ==".into(),
            node: None,
        };
        let json = serde_json::to_value(&job).unwrap();
        assert_eq!(json["trainingOutput"], serde_json::json!({}));
        assert_eq!(json["jobPosition"], "1");
        assert_eq!(json["state"], "QUEUED");
        assert!(json.get("labels").is_none() && json.get("startTime").is_none());
        assert_eq!(serde_json::from_value::<Job>(json).unwrap(), job);
        let page: LogPage =
            serde_json::from_str(r#"{"lines":[{"time":"t","replica":"r","text":"x"}],"nextOffset":1}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&page).unwrap(),
            r#"{"lines":[{"time":"t","replica":"r","text":"x"}],"nextOffset":1}"#
        );
        assert_eq!(serde_json::to_string(&ListJobsResponse::default()).unwrap(), "{}");
    }
}
