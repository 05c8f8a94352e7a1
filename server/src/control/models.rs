//! Model use cases: create, get, list, delete.

use super::paging::PageRequest;
use super::Control;
use crate::error::{Error, Result};
use crate::names::{ModelName, ProjectId};
use crate::store::{ModelRecord, NewModel, OperationKind, OperationOutcome, OperationRecord};

/// A page of models.
pub struct ModelPage {
    pub models: Vec<ModelRecord>,
    pub next_page_token: Option<String>,
}

impl Control {
    /// Creates a model (synchronous, like `models.create`).
    pub async fn create_model(&self, name: &ModelName, new: NewModel) -> Result<ModelRecord> {
        if new.regions.len() > 1 {
            return Err(Error::invalid("model.regions", "At most one region may be given."));
        }
        self.store.insert_model(name, &new).await
    }

    /// The model, or NOT_FOUND.
    pub async fn get_model(&self, name: &ModelName) -> Result<ModelRecord> {
        self.store.get_model(name).await?.ok_or_else(|| crate::store::model_not_found(name))
    }

    /// A page of the project's models, ordered by name.
    pub async fn list_models(&self, project: &ProjectId, page: PageRequest) -> Result<ModelPage> {
        let mut models = self.store.list_models(project, page.after.as_deref(), page.fetch_limit()).await?;
        let next_page_token = page.finish(&mut models, |m| &m.model);
        Ok(ModelPage { models, next_page_token })
    }

    /// Deletes a model without versions. Returns the (already finished) operation, as
    /// `models.delete` is a long-running method.
    pub async fn delete_model(&self, name: &ModelName) -> Result<OperationRecord> {
        self.get_model(name).await?;
        if !self.store.delete_model_without_versions(name).await? {
            return Err(Error::FailedPrecondition(format!(
                "Model {name} has versions; delete its versions before deleting the model."
            )));
        }
        let mut operation = OperationRecord::start(
            &name.project,
            OperationKind::DeleteModel,
            &format!("model_{}", name.model),
            name.to_string(),
            None,
        );
        self.store.insert_operation(&operation).await?;
        self.store.finish_operation(&operation.project, &operation.id, &OperationOutcome::Empty).await?;
        operation.outcome = Some(OperationOutcome::Empty);
        operation.end_time = Some(chrono::Utc::now());
        Ok(operation)
    }
}
