//! Model use cases: create, get, list, delete.

use super::filter::{labels, Filter};
use super::paging::{filtered_page, PageRequest};
use super::versions::Update;
use super::Control;
use crate::error::{Error, Result};
use crate::names::{ModelName, ProjectId, VersionName};
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
        super::limits::check_labels("model.labels", &new.labels)?;
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
        let subject = format!("model_{}", name.model);
        self.finished_operation(
            &name.project,
            OperationKind::DeleteModel,
            &subject,
            name.to_string(),
            None,
            OperationOutcome::Empty,
        )
        .await
    }

    /// Changes a model's description, labels or default version (`models.patch`); returns the
    /// finished operation with the updated model. With an etag, nothing changes unless the model
    /// is still at the etag's revision (else ABORTED).
    pub async fn update_model(&self, name: &ModelName, update: Update) -> Result<OperationRecord> {
        if let Some(labels) = &update.labels {
            super::limits::check_labels("model.labels", labels)?;
        }
        let current = self.get_model(name).await?;
        if update.expected_revision.is_some_and(|r| r != current.revision) {
            return Err(Error::Aborted(format!(
                "Model {name} was changed by another request (etag mismatch); read it again."
            )));
        }
        let mut expected = update.expected_revision;
        if let Some(version) = &update.default_version {
            self.set_default_version(&VersionName { model: name.clone(), version: version.clone() }).await?;
            expected = None;
        }
        if update.description.is_some() || update.labels.is_some() {
            self.store.update_model(name, update.description.as_deref(), update.labels.as_ref(), expected).await?;
        }
        let model = self.get_model(name).await?;
        let subject = format!("model_{}", name.model);
        let outcome = OperationOutcome::Model { model: Box::new(model) };
        self.finished_operation(&name.project, OperationKind::UpdateModel, &subject, name.to_string(), None, outcome)
            .await
    }

    /// Stores an operation that is already finished (for changes made within the request).
    pub(super) async fn finished_operation(
        &self,
        project: &ProjectId,
        kind: OperationKind,
        subject: &str,
        model_name: String,
        version: Option<crate::store::VersionRecord>,
        outcome: OperationOutcome,
    ) -> Result<OperationRecord> {
        let mut operation = OperationRecord::start(project, kind, subject, model_name, version);
        self.store.insert_operation(&operation).await?;
        self.store.finish_operation(&operation.project, &operation.id, &outcome).await?;
        operation.outcome = Some(outcome);
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
