//! Online prediction: find the version a request names and hand its instances to the model.

use serde_json::Value;

use super::Control;
use crate::error::{Error, Result};
use crate::names::{ModelName, VersionName};
use crate::serving::PredictError;
use crate::store::VersionState;

/// What a predict request names: a model (its default version) or a version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PredictTarget {
    Model(ModelName),
    Version(VersionName),
}

/// Why a prediction was not made: a resource problem (the API's error envelope) or a problem with
/// the instances or the model run (a `{"error": "..."}` body).
#[derive(Debug, thiserror::Error)]
pub enum PredictFailure {
    #[error(transparent)]
    Resource(#[from] Error),
    #[error(transparent)]
    Prediction(#[from] PredictError),
}

impl Control {
    /// Predicts `instances` with the named version (or the model's default version).
    pub async fn predict(&self, target: &PredictTarget, instances: &[Value]) -> Result<Vec<Value>, PredictFailure> {
        let name = match target {
            PredictTarget::Version(name) => name.clone(),
            PredictTarget::Model(model) => {
                let record = self.get_model(model).await?;
                let version = record.default_version.ok_or_else(|| {
                    Error::FailedPrecondition(format!("Model {model} has no default version; create a version first."))
                })?;
                VersionName { model: model.clone(), version }
            }
        };
        let key = name.to_string();
        let model = match self.host.get(&key) {
            Some(model) => model,
            None => {
                let version = self.get_version(&name).await?;
                let why = match version.state {
                    VersionState::Creating => "is still being created; poll its operation until it is done",
                    VersionState::Failed => "FAILED to deploy; see its errorMessage",
                    VersionState::Deleting => "is being deleted",
                    VersionState::Ready => "is READY but not loaded on this server yet; retry shortly",
                };
                return Err(Error::FailedPrecondition(format!("Version {name} {why}.")).into());
            }
        };
        Ok(model.predict(instances).await?)
    }
}
