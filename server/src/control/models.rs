//! Model use cases: create, get, list, delete.

use super::filter::{labels, Filter};
use super::paging::{filtered_page, PageRequest};
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
    pub async fn list_models(&self, project: &ProjectId, page: PageRequest, filter: &Filter) -> Result<ModelPage> {
        let fetch = |after: Option<String>, limit| async move {
            self.store.list_models(project, after.as_deref(), limit).await
        };
        let keep = |m: &ModelRecord| filter.matches(&model_fields(m));
        let (models, next_page_token) = filtered_page(&page, keep, |m| &m.model, fetch).await?;
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

/// The fields a list filter can name on a model.
fn model_fields(m: &ModelRecord) -> Vec<(String, String)> {
    let mut fields = vec![
        ("name".to_owned(), m.model.clone()),
        ("name".to_owned(), format!("projects/{}/models/{}", m.project, m.model)),
        ("description".to_owned(), m.description.clone()),
    ];
    if let Some(default) = &m.default_version {
        fields.push(("defaultVersion.name".to_owned(), default.clone()));
    }
    fields.extend(labels(&m.labels));
    fields
}
