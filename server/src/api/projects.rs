//! `projects.getConfig`.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::Router;
use serde::Serialize;

use super::Json;
use crate::control::{Control, ProjectConfig};
use crate::names::{ProjectId, ProjectName};

pub fn router() -> Router<Control> {
    Router::new().route("/projects/{project}/@getConfig", get(get_config))
}

/// `GetConfigResponse`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GetConfigResponse {
    service_account: String,
    /// int64, so a string on the wire.
    service_account_project: String,
}

impl From<ProjectConfig> for GetConfigResponse {
    fn from(config: ProjectConfig) -> Self {
        Self { service_account: config.service_account, service_account_project: config.project.number.to_string() }
    }
}

async fn get_config(
    State(control): State<Control>,
    Path(project): Path<String>,
) -> crate::Result<Json<GetConfigResponse>> {
    let name = ProjectName(ProjectId::parse("name", &project)?);
    let config = control.get_project_config(&name).await?;
    Ok(Json(config.into()))
}
