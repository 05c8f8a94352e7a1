//! Anneal's `GET /v1/nodes` (admins): the live nodes sharing this server's database.

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use serde::Serialize;

use super::Json;
use crate::control::{Control, NodeView};

pub fn router() -> Router<Control> {
    Router::new().route("/nodes", get(list))
}

#[derive(Serialize)]
struct ListNodesResponse {
    nodes: Vec<NodeView>,
}

async fn list(State(control): State<Control>) -> crate::Result<Json<ListNodesResponse>> {
    Ok(Json(ListNodesResponse { nodes: control.live_nodes().await? }))
}
