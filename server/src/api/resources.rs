//! The API's JSON shapes of models, versions and operations (`GoogleCloudMlV1__Model`,
//! `GoogleCloudMlV1__Version`, `GoogleLongrunning__Operation`), converted from stored records.
//! lowerCamelCase, int64 as strings, RFC 3339 UTC times, empty fields omitted.

use std::collections::BTreeMap;

use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::store::{ModelRecord, OperationOutcome, OperationRecord, VersionRecord};

/// A time as the API writes it.
pub fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The etag of a stored revision: its 8 bytes, base64.
pub fn etag(revision: i64) -> String {
    base64::engine::general_purpose::STANDARD.encode(revision.to_be_bytes())
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `GoogleCloudMlV1__Model`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Model {
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_version: Option<Version>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
    #[serde(skip_serializing_if = "is_false")]
    pub online_prediction_logging: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub online_prediction_console_logging: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    pub etag: String,
}

impl Model {
    /// The model, with its default version when the caller has it.
    pub fn new(record: ModelRecord, default_version: Option<VersionRecord>) -> Self {
        Self {
            name: format!("projects/{}/models/{}", record.project, record.model),
            description: record.description,
            default_version: default_version.map(Version::from),
            regions: record.regions,
            online_prediction_logging: record.prediction_logging,
            online_prediction_console_logging: record.console_logging,
            labels: record.labels,
            etag: etag(record.revision),
        }
    }
}

/// `GoogleCloudMlV1__Version`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Version {
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(skip_serializing_if = "is_false")]
    pub is_default: bool,
    pub deployment_uri: String,
    pub create_time: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub runtime_version: String,
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    pub framework: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub python_version: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub machine_type: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manual_scaling: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accelerator_config: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub package_uris: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prediction_class: Option<String>,
    pub etag: String,
}

impl From<VersionRecord> for Version {
    fn from(v: VersionRecord) -> Self {
        Self {
            name: format!("projects/{}/models/{}/versions/{}", v.project, v.model, v.version),
            description: v.description,
            is_default: v.is_default,
            deployment_uri: v.deployment_uri,
            create_time: time(&v.create_time),
            runtime_version: v.runtime_version,
            state: v.state.as_str(),
            error_message: v.error_message,
            framework: v.framework,
            python_version: v.python_version,
            machine_type: v.machine_type,
            labels: v.labels,
            manual_scaling: v.serving.workers.map(|nodes| serde_json::json!({ "nodes": nodes })),
            accelerator_config: (v.serving.accelerator_count > 0).then(|| {
                serde_json::json!({ "count": v.serving.accelerator_count.to_string(), "type": v.serving.accelerator_type })
            }),
            package_uris: v.serving.package_uris,
            prediction_class: v.serving.prediction_class,
            etag: etag(v.revision),
        }
    }
}

/// Reads an int64 field sent as a JSON number or a string (the API writes int64 as strings).
pub fn int64<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int64 {
        Number(i64),
        Text(String),
    }
    match Option::<Int64>::deserialize(deserializer)? {
        None => Ok(None),
        Some(Int64::Number(n)) => Ok(Some(n)),
        Some(Int64::Text(t)) => {
            t.parse().map(Some).map_err(|_| serde::de::Error::custom(format!("'{t}' is not an int64")))
        }
    }
}

/// `GoogleLongrunning__Operation`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    pub name: String,
    pub metadata: OperationMetadata,
    #[serde(skip_serializing_if = "is_false")]
    pub done: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Status>,
}

/// `GoogleCloudMlV1__OperationMetadata`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationMetadata {
    #[serde(rename = "@type")]
    pub type_url: &'static str,
    pub create_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    #[serde(skip_serializing_if = "is_false")]
    pub is_cancellation_requested: bool,
    pub operation_type: &'static str,
    pub model_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<Version>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// `GoogleRpc__Status` inside an operation.
#[derive(Serialize)]
pub struct Status {
    pub code: i32,
    pub message: String,
}

impl From<OperationRecord> for Operation {
    fn from(op: OperationRecord) -> Self {
        let name = op.name();
        let (done, response, error) = match op.outcome {
            None => (false, None, None),
            Some(OperationOutcome::Version { version }) => {
                (true, Some(typed("google.cloud.ml.v1.Version", &Version::from(*version))), None)
            }
            Some(OperationOutcome::Model { model }) => {
                (true, Some(typed("google.cloud.ml.v1.Model", &Model::new(*model, None))), None)
            }
            Some(OperationOutcome::Empty) => {
                (true, Some(serde_json::json!({"@type": "type.googleapis.com/google.protobuf.Empty"})), None)
            }
            Some(OperationOutcome::Error { code, message }) => (true, None, Some(Status { code, message })),
        };
        Self {
            name,
            metadata: OperationMetadata {
                type_url: "type.googleapis.com/google.cloud.ml.v1.OperationMetadata",
                create_time: time(&op.create_time),
                start_time: op.start_time.as_ref().map(time),
                end_time: op.end_time.as_ref().map(time),
                is_cancellation_requested: op.cancel_requested,
                operation_type: op.kind.as_str(),
                model_name: op.model_name,
                version: op.version.map(Version::from),
                labels: op.labels,
            },
            done,
            response,
            error,
        }
    }
}

/// A message with its `@type`, as `Any` is written in JSON.
fn typed(type_name: &str, value: &impl Serialize) -> serde_json::Value {
    let mut json = serde_json::to_value(value).unwrap_or_default();
    if let serde_json::Value::Object(map) = &mut json {
        map.insert("@type".into(), format!("type.googleapis.com/{type_name}").into());
    }
    json
}

/// The standard list query parameters.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    pub page_size: Option<i64>,
    pub page_token: Option<String>,
    pub filter: Option<String>,
}

impl ListQuery {
    /// The validated page request and filter.
    pub fn parse(&self) -> crate::Result<(crate::control::PageRequest, crate::control::Filter)> {
        let page = crate::control::PageRequest::new(self.page_size, self.page_token.as_deref())?;
        Ok((page, crate::control::Filter::parse(self.filter.as_deref())?))
    }
}
