//! Anneal's uploads (an addition to the ML Engine API, used by the CLI): create an upload folder,
//! then `PUT` its files; the answer's `uri` names the folder in later requests (`packageUris`,
//! `deploymentUri`, `uri`). The folder is in this server's storage, or in a bucket: the one
//! named by the create request's `uri`, or the artifacts bucket when the server has one.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::routing::{post, put};
use axum::Router;
use serde::{Deserialize, Serialize};

use super::Json;
use crate::control::Control;
use crate::names::ProjectId;

/// The file body is streamed to disk; its size and the project's quota are checked as it arrives
/// (`max_upload_bytes`, `upload_quota_bytes`), not by a body limit layer.
pub fn router() -> Router<Control> {
    Router::new()
        .route("/projects/{project}/uploads", post(create))
        .route("/projects/{project}/uploads/{upload}/{*path}", put(write_file))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UploadResponse {
    name: String,
    uri: String,
}

/// `{}`, or `{"uri": "s3://bucket/prefix"}` for an upload into a bucket folder.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    uri: Option<String>,
}

async fn create(
    State(control): State<Control>,
    Path(project): Path<String>,
    body: axum::body::Bytes,
) -> crate::Result<Json<UploadResponse>> {
    let project = ProjectId::parse("parent", &project)?;
    let request: CreateRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CreateRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| crate::Error::invalid("body", format!("Invalid JSON payload received. {e}")))?
    };
    let upload = control.create_upload(&project, request.uri.as_deref()).await?;
    Ok(Json(UploadResponse { name: format!("projects/{}/uploads/{}", project.as_str(), upload.id), uri: upload.uri }))
}

#[derive(Serialize)]
struct FileResponse {
    path: String,
    /// int64, so a string on the wire.
    size: String,
}

async fn write_file(
    State(control): State<Control>,
    Path((project, upload, path)): Path<(String, String, String)>,
    body: Body,
) -> crate::Result<Json<FileResponse>> {
    let project = ProjectId::parse("parent", &project)?;
    let size = control.write_upload_file(&project, &upload, &path, body.into_data_stream()).await?;
    Ok(Json(FileResponse { path, size: size.to_string() }))
}
