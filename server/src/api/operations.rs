//! `projects.operations`: get, list.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::Router;

use super::extract::Query;
use super::resources::{ListQuery, Operation};
use super::Json;
use crate::control::Control;
use crate::names::{OperationName, ProjectId};

pub fn router() -> Router<Control> {
    Router::new()
        .route("/projects/{project}/operations", get(list))
        .route("/projects/{project}/operations/{operation}", get(fetch))
        .route("/projects/{project}/operations/{operation}/@cancel", post(cancel))
}

async fn fetch(
    State(control): State<Control>,
    Path((project, operation)): Path<(String, String)>,
) -> crate::Result<Json<Operation>> {
    let name = OperationName::new("name", &project, &operation)?;
    Ok(Json(control.get_operation(&name).await?.into()))
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ListOperationsResponse {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    operations: Vec<Operation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<String>,
}

async fn list(
    State(control): State<Control>,
    Path(project): Path<String>,
    Query(query): Query<ListQuery>,
) -> crate::Result<Json<ListOperationsResponse>> {
    let project = ProjectId::parse("name", &project)?;
    let (page, filter) = query.parse()?;
    let page = control.list_operations(&project, page, &filter).await?;
    Ok(Json(ListOperationsResponse {
        operations: page.operations.into_iter().map(Operation::from).collect(),
        next_page_token: page.next_page_token,
    }))
}

/// `operations.cancel`: answers `{}`; the operation ends CANCELLED if it was still running.
async fn cancel(
    State(control): State<Control>,
    Path((project, operation)): Path<(String, String)>,
    // Read (and ignored: the request is empty) so the connection stays usable, as jobs:cancel.
    _body: axum::body::Bytes,
) -> crate::Result<Json<serde_json::Value>> {
    let name = OperationName::new("name", &project, &operation)?;
    control.cancel_operation(&name).await?;
    Ok(Json(serde_json::json!({})))
}
