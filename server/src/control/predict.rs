//! Online prediction: find the version a request names and hand its instances to the model.
//!
//! A request naming a model is served by its default version. Which version that is comes from
//! memory ([`DefaultVersions`]), not from the database on every request: asking the store costs a
//! round trip through its connection pool's worker thread, and on the machines Anneal was
//! measured on that hand-off (several thread wake-ups) cost more than the forward pass itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Control;
use crate::error::{Error, Result};
use crate::names::{ModelName, VersionName};
use crate::serving::{Instances, PredictError};
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

/// How long a model's default version is used from memory before the store is asked again. A
/// default set on this node takes effect at once; one set on another node sharing the database
/// within this time, as versions themselves follow the database (`VERSION_SYNC_EVERY`).
const DEFAULT_FRESH_FOR: Duration = super::VERSION_SYNC_EVERY;

/// The default version of each model predicted recently, as the store had it.
#[derive(Debug, Default)]
pub struct DefaultVersions {
    entries: RwLock<HashMap<ModelName, (String, Instant)>>,
    /// Bumped by every change made on this node, so an answer the store gave before the change
    /// is not kept after it.
    generation: AtomicU64,
}

impl DefaultVersions {
    /// The default version of `model` if it was read within [`DEFAULT_FRESH_FOR`].
    fn fresh(&self, model: &ModelName) -> Option<String> {
        let entries = self.entries.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (version, read_at) = entries.get(model)?;
        (read_at.elapsed() < DEFAULT_FRESH_FOR).then(|| version.clone())
    }

    /// The generation before a read of the store, for [`Self::keep`].
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Keeps what the store said `model`'s default is, unless this node changed a default since
    /// `generation`.
    fn keep(&self, model: &ModelName, version: &str, generation: u64) {
        let mut entries = self.entries.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.generation.load(Ordering::Acquire) == generation {
            entries.insert(model.clone(), (version.to_owned(), Instant::now()));
        }
    }

    /// Records that this node made `version` the default of `model`.
    pub fn changed(&self, model: &ModelName, version: &str) {
        let mut entries = self.entries.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.insert(model.clone(), (version.to_owned(), Instant::now()));
    }
}

impl Control {
    /// Predicts `instances` with the named version (or the model's default version).
    pub async fn predict(&self, target: &PredictTarget, instances: Instances) -> Result<Vec<Value>, PredictFailure> {
        let name = match target {
            PredictTarget::Version(name) => name.clone(),
            PredictTarget::Model(model) => {
                // The remembered default, while it is fresh and served here; else the store's.
                let remembered =
                    self.defaults.fresh(model).map(|version| VersionName { model: model.clone(), version });
                if let Some(served) = remembered.as_ref().and_then(|name| self.host.get(&name.to_string())) {
                    return Ok(served.predict_instances(instances).await?);
                }
                self.default_version(model).await?
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
        Ok(model.predict_instances(instances).await?)
    }

    /// `model`'s default version as the store has it now, remembered for the next requests.
    async fn default_version(&self, model: &ModelName) -> Result<VersionName> {
        let generation = self.defaults.generation();
        let record = self.get_model(model).await?;
        let version = record.default_version.ok_or_else(|| {
            Error::FailedPrecondition(format!("Model {model} has no default version; create a version first."))
        })?;
        self.defaults.keep(model, &version, generation);
        Ok(VersionName { model: model.clone(), version })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> ModelName {
        ModelName::new("name", "p", "m").expect("a valid name")
    }

    #[test]
    fn a_default_read_before_a_change_here_is_not_kept() {
        let defaults = DefaultVersions::default();
        assert_eq!(defaults.fresh(&model()), None);
        let before = defaults.generation();
        defaults.changed(&model(), "v2");
        // A store read that began before the change answers the old default: dropped.
        defaults.keep(&model(), "v1", before);
        assert_eq!(defaults.fresh(&model()).as_deref(), Some("v2"));
        let now = defaults.generation();
        defaults.keep(&model(), "v3", now);
        assert_eq!(defaults.fresh(&model()).as_deref(), Some("v3"));
    }
}
