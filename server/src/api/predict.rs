//! `projects.predict` on a model (its default version) or a version.
//!
//! The body is raw JSON `{"instances": [...], "signature_name"?: ...}`. Problems with the
//! instances or the model run answer HTTP 400 with `{"error": "<message>"}` (the regional ML
//! Engine endpoints' form); problems with the named resource use the normal error envelope.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;

use super::Json;
use crate::control::{Control, PredictFailure, PredictTarget};
use crate::names::{ModelName, VersionName};
use crate::serving::{Instances, PredictError};

pub fn router() -> Router<Control> {
    Router::new()
        .route("/projects/{project}/models/{model}/@predict", post(predict_model))
        .route("/projects/{project}/models/{model}/versions/{version}/@predict", post(predict_version))
}

async fn predict_model(
    State(control): State<Control>,
    Path((project, model)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match ModelName::new("name", &project, &model) {
        Ok(name) => predict(control, PredictTarget::Model(name), body).await,
        Err(e) => e.into_response(),
    }
}

async fn predict_version(
    State(control): State<Control>,
    Path((project, model, version)): Path<(String, String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match VersionName::new("name", &project, &model, &version) {
        Ok(name) => predict(control, PredictTarget::Version(name), body).await,
        Err(e) => e.into_response(),
    }
}

async fn predict(control: Control, target: PredictTarget, body: Result<Bytes, BytesRejection>) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return prediction_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request payload size exceeds the limit; send fewer instances per request.".into(),
            )
        }
        Err(rejection) => {
            return prediction_error(
                StatusCode::BAD_REQUEST,
                format!("Cannot read the request body: {}", rejection.body_text()),
            )
        }
    };
    let instances = match Instances::from_body(body, crate::control::limits::MAX_INSTANCES) {
        Ok(instances) => instances,
        Err(e) => return prediction_error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match control.predict(&target, instances).await {
        Ok(predictions) => Json(serde_json::json!({ "predictions": predictions })).into_response(),
        Err(PredictFailure::Resource(e)) => e.into_response(),
        Err(PredictFailure::Prediction(e)) => {
            let status = match e {
                PredictError::BadInstance(_) | PredictError::Model(_) | PredictError::Routine(_) => {
                    StatusCode::BAD_REQUEST
                }
                PredictError::Crashed(_) => StatusCode::INTERNAL_SERVER_ERROR,
                PredictError::Overloaded => return crate::Error::ResourceExhausted(e.to_string()).into_response(),
                PredictError::Unavailable => return crate::Error::Unavailable(e.to_string()).into_response(),
            };
            prediction_error(status, e.to_string())
        }
    }
}

fn prediction_error(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}
