//! `projects.models.versions`: create, get, list, delete, setDefault.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use super::extract::{Body, Query};
use super::patch::{mask_paths, revision, PatchQuery};
use super::resources::{ListQuery, Operation, Version};
use super::Json;
use crate::control::{Control, Update};
use crate::names::{parse_resource_id, ModelName, VersionName};
use crate::store::{NewVersion, ServingSettings};

pub fn router() -> Router<Control> {
    Router::new()
        .route("/projects/{project}/models/{model}/versions", get(list).post(create))
        .route("/projects/{project}/models/{model}/versions/{version}", get(fetch).delete(delete).patch(patch))
        .route("/projects/{project}/models/{model}/versions/{version}/@setDefault", post(set_default))
}

/// The fields a client may send in a Version. Fields Anneal records but does not act on
/// (machine types, scaling, logging, containers) are accepted so ML Engine requests work as-is.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct VersionBody {
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    deployment_uri: String,
    #[serde(default)]
    framework: String,
    #[serde(default)]
    runtime_version: String,
    #[serde(default)]
    python_version: String,
    #[serde(default)]
    machine_type: String,
    #[serde(default)]
    manual_scaling: Option<ManualScaling>,
    #[serde(default)]
    accelerator_config: Option<AcceleratorConfig>,
    /// A custom prediction routine's packages (sdists or wheels).
    #[serde(default)]
    package_uris: Vec<String>,
    /// A custom prediction routine: `module.Class` with `from_path` and `predict`.
    #[serde(default)]
    prediction_class: String,
    #[serde(flatten)]
    #[allow(dead_code)]
    recorded: Recorded,
}

/// Fields accepted and ignored: output-only ones clients echo back, and settings of ML Engine's
/// managed infrastructure that have no meaning on one Anneal host.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct Recorded {
    is_default: Option<serde_json::Value>,
    create_time: Option<serde_json::Value>,
    last_use_time: Option<serde_json::Value>,
    state: Option<serde_json::Value>,
    error_message: Option<serde_json::Value>,
    etag: Option<serde_json::Value>,
    auto_scaling: Option<serde_json::Value>,
    service_account: Option<serde_json::Value>,
    request_logging_config: Option<serde_json::Value>,
    explanation_config: Option<serde_json::Value>,
    container: Option<serde_json::Value>,
    routes: Option<serde_json::Value>,
    last_migration_time: Option<serde_json::Value>,
    last_migration_model_id: Option<serde_json::Value>,
}

/// `manualScaling`: on Anneal, `nodes` worker threads serve the version.
#[derive(Deserialize)]
struct ManualScaling {
    #[serde(default)]
    nodes: Option<u32>,
}

/// `acceleratorConfig`: a count above 0 runs the version on CUDA when the host has a GPU.
#[derive(Deserialize)]
struct AcceleratorConfig {
    #[serde(default, deserialize_with = "super::resources::int64")]
    count: Option<i64>,
    #[serde(default, rename = "type")]
    kind: String,
}

async fn create(
    State(control): State<Control>,
    Path((project, model)): Path<(String, String)>,
    Body(body): Body<VersionBody>,
) -> crate::Result<Json<Operation>> {
    let model = ModelName::new("parent", &project, &model)?;
    let version = parse_resource_id("version.name", "version", &body.name)?;
    let name = VersionName { model, version };
    let new = NewVersion {
        description: body.description,
        labels: body.labels,
        deployment_uri: body.deployment_uri,
        framework: body.framework,
        runtime_version: body.runtime_version,
        python_version: body.python_version,
        machine_type: body.machine_type,
        serving: ServingSettings {
            workers: body.manual_scaling.and_then(|m| m.nodes),
            intra_op_threads: None,
            accelerator_count: body.accelerator_config.as_ref().and_then(|a| a.count).unwrap_or(0).clamp(0, 16) as u32,
            accelerator_type: body.accelerator_config.map(|a| a.kind).unwrap_or_default(),
            framework: String::new(),
            prediction_class: Some(body.prediction_class).filter(|c| !c.is_empty()),
            package_uris: body.package_uris,
            package_paths: Vec::new(),
        },
    };
    Ok(Json(control.create_version(&name, new).await?.into()))
}

async fn fetch(
    State(control): State<Control>,
    Path((project, model, version)): Path<(String, String, String)>,
) -> crate::Result<Json<Version>> {
    let name = VersionName::new("name", &project, &model, &version)?;
    Ok(Json(control.get_version(&name).await?.into()))
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ListVersionsResponse {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    versions: Vec<Version>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<String>,
}

async fn list(
    State(control): State<Control>,
    Path((project, model)): Path<(String, String)>,
    Query(query): Query<ListQuery>,
) -> crate::Result<Json<ListVersionsResponse>> {
    let model = ModelName::new("parent", &project, &model)?;
    let (page, filter) = query.parse()?;
    let page = control.list_versions(&model, page, &filter).await?;
    Ok(Json(ListVersionsResponse {
        versions: page.versions.into_iter().map(Version::from).collect(),
        next_page_token: page.next_page_token,
    }))
}

async fn delete(
    State(control): State<Control>,
    Path((project, model, version)): Path<(String, String, String)>,
) -> crate::Result<Json<Operation>> {
    let name = VersionName::new("name", &project, &model, &version)?;
    Ok(Json(control.delete_version(&name).await?.into()))
}

async fn set_default(
    State(control): State<Control>,
    Path((project, model, version)): Path<(String, String, String)>,
    // Read (and ignored: SetDefaultVersionRequest is empty) so the connection stays usable: a
    // client that sends the body after the headers (httplib2) otherwise finds it closed.
    _body: axum::body::Bytes,
) -> crate::Result<Json<Version>> {
    let name = VersionName::new("name", &project, &model, &version)?;
    Ok(Json(control.set_default_version(&name).await?.into()))
}

/// Version fields ML Engine clients may name in a patch mask that mean nothing on one Anneal host.
const ACCEPTED_MASK: &[&str] = &[
    "requestLoggingConfig",
    "autoScaling.minNodes",
    "autoScaling.maxNodes",
    "manualScaling.nodes",
    "predictionClass",
    "packageUris",
];

async fn patch(
    State(control): State<Control>,
    Path((project, model, version)): Path<(String, String, String)>,
    Query(query): Query<PatchQuery>,
    Body(body): Body<VersionBody>,
) -> crate::Result<Json<Operation>> {
    let name = VersionName::new("name", &project, &model, &version)?;
    let paths = mask_paths(query.update_mask.as_deref(), &["description", "labels"], ACCEPTED_MASK)?;
    let etag = body.recorded.etag.as_ref().and_then(|e| e.as_str()).map(str::to_owned);
    let mut update = Update { expected_revision: revision(etag.as_deref())?, ..Update::default() };
    for path in paths {
        match path.as_str() {
            "description" => update.description = Some(body.description.clone()),
            "labels" => update.labels = Some(body.labels.clone()),
            _ => {}
        }
    }
    Ok(Json(control.update_version(&name, update).await?.into()))
}
