//! `projects.models`: create, get, list, delete.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use super::extract::{Body, Query};
use super::patch::{mask_paths, revision, PatchQuery};
use super::resources::{ListQuery, Model, Operation};
use super::Json;
use crate::control::{Control, Update};
use crate::error::Error;
use crate::names::{parse_resource_id, ModelName, ProjectId};
use crate::store::NewModel;

pub fn router() -> Router<Control> {
    Router::new()
        .route("/projects/{project}/models", get(list).post(create))
        .route("/projects/{project}/models/{model}", get(fetch).delete(delete).patch(patch))
}

/// The fields a client may send in a Model; output-only fields are accepted and ignored.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ModelBody {
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    regions: Vec<String>,
    #[serde(default)]
    online_prediction_logging: bool,
    #[serde(default)]
    online_prediction_console_logging: bool,
    default_version: Option<DefaultVersion>,
    etag: Option<String>,
}

#[derive(Deserialize)]
struct DefaultVersion {
    #[serde(default)]
    name: String,
}

async fn create(
    State(control): State<Control>,
    Path(project): Path<String>,
    Body(body): Body<ModelBody>,
) -> crate::Result<Json<Model>> {
    let project = ProjectId::parse("parent", &project)?;
    let model = parse_resource_id("model.name", "model", &body.name)?;
    let name = ModelName { project, model };
    let new = NewModel {
        description: body.description,
        labels: body.labels,
        regions: body.regions,
        prediction_logging: body.online_prediction_logging,
        console_logging: body.online_prediction_console_logging,
    };
    let record = control.create_model(&name, new).await?;
    Ok(Json(Model::new(record, None)))
}

async fn fetch(
    State(control): State<Control>,
    Path((project, model)): Path<(String, String)>,
) -> crate::Result<Json<Model>> {
    let name = ModelName::new("name", &project, &model)?;
    let record = control.get_model(&name).await?;
    let default = default_version(&control, &name, record.default_version.as_deref()).await?;
    Ok(Json(Model::new(record, default)))
}

async fn default_version(
    control: &Control,
    model: &ModelName,
    version: Option<&str>,
) -> crate::Result<Option<crate::store::VersionRecord>> {
    let Some(version) = version else { return Ok(None) };
    let name = crate::names::VersionName { model: model.clone(), version: version.to_owned() };
    match control.get_version(&name).await {
        Ok(v) => Ok(Some(v)),
        Err(Error::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ListModelsResponse {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    models: Vec<Model>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<String>,
}

async fn list(
    State(control): State<Control>,
    Path(project): Path<String>,
    Query(query): Query<ListQuery>,
) -> crate::Result<Json<ListModelsResponse>> {
    let project = ProjectId::parse("parent", &project)?;
    let (page, filter) = query.parse()?;
    let page = control.list_models(&project, page, &filter).await?;
    let mut models = Vec::with_capacity(page.models.len());
    for record in page.models {
        let name = ModelName { project: project.clone(), model: record.model.clone() };
        let default = default_version(&control, &name, record.default_version.as_deref()).await?;
        models.push(Model::new(record, default));
    }
    Ok(Json(ListModelsResponse { models, next_page_token: page.next_page_token }))
}

async fn delete(
    State(control): State<Control>,
    Path((project, model)): Path<(String, String)>,
) -> crate::Result<Json<Operation>> {
    let name = ModelName::new("name", &project, &model)?;
    Ok(Json(control.delete_model(&name).await?.into()))
}

async fn patch(
    State(control): State<Control>,
    Path((project, model)): Path<(String, String)>,
    Query(query): Query<PatchQuery>,
    Body(body): Body<ModelBody>,
) -> crate::Result<Json<Operation>> {
    let name = ModelName::new("name", &project, &model)?;
    let paths = mask_paths(
        query.update_mask.as_deref(),
        &["description", "labels", "defaultVersion.name"],
        &["defaultVersion"],
    )?;
    let mut update = Update { expected_revision: revision(body.etag.as_deref())?, ..Update::default() };
    for path in paths {
        match path.as_str() {
            "description" => update.description = Some(body.description.clone()),
            "labels" => update.labels = Some(body.labels.clone()),
            _ => {
                let full = body.default_version.as_ref().map(|d| d.name.as_str()).unwrap_or_default();
                let id = full.rsplit('/').next().unwrap_or_default();
                update.default_version = Some(parse_resource_id("model.defaultVersion.name", "version", id)?);
            }
        }
    }
    Ok(Json(control.update_model(&name, update).await?.into()))
}
