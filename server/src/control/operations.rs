//! Operation use cases: get, list and cancel; and how a failed operation reports its error.

use super::filter::{labels, Filter};
use super::paging::{filtered_page, PageRequest};
use super::Control;
use crate::error::{Error, Result};
use crate::names::{OperationName, ProjectId};
use crate::store::{OperationOutcome, OperationRecord};

/// A page of operations.
pub struct OperationPage {
    pub operations: Vec<OperationRecord>,
    pub next_page_token: Option<String>,
}

impl Control {
    /// The operation, or NOT_FOUND.
    pub async fn get_operation(&self, name: &OperationName) -> Result<OperationRecord> {
        self.store
            .get_operation(name)
            .await?
            .ok_or_else(|| Error::not_found("name", format!("Operation {name} not found.")))
    }

    /// Asks a running operation to stop (`operations.cancel`). A version creation that is
    /// cancelled ends with an error (FAILED_PRECONDITION, saying it was cancelled) and the version
    /// FAILED; an operation that is already done is left as it is.
    pub async fn cancel_operation(&self, name: &OperationName) -> Result<()> {
        self.get_operation(name).await?;
        self.store.request_cancel(name).await?;
        Ok(())
    }

    /// A page of the project's operations, newest first.
    pub async fn list_operations(
        &self,
        project: &ProjectId,
        page: PageRequest,
        filter: &Filter,
    ) -> Result<OperationPage> {
        let fetch = |after: Option<String>, limit| async move {
            self.store.list_operations(project, after.as_deref(), limit).await
        };
        let keep = |o: &OperationRecord| filter.matches(&operation_fields(o));
        let (operations, next_page_token) = filtered_page(&page, keep, |o| &o.id, fetch).await?;
        Ok(OperationPage { operations, next_page_token })
    }
}

/// How an operation that failed with `error` ends: with the API's error shape, as a request
/// failing with `error` would answer. Clients read operations, so an internal error's text is
/// logged here and the operation says only [`crate::error::INTERNAL_MESSAGE`].
pub(super) fn failure(operation: &OperationRecord, error: &Error) -> OperationOutcome {
    if let Error::Internal(detail) = error {
        tracing::error!(operation = %operation.id, error = %detail, "operation failed with an internal error");
    }
    let status = error.status();
    OperationOutcome::Error { code: status.code.number(), message: status.message }
}

/// The fields a list filter can name on an operation.
fn operation_fields(o: &OperationRecord) -> Vec<(String, String)> {
    let mut fields = vec![
        ("name".to_owned(), o.id.clone()),
        ("name".to_owned(), o.name()),
        ("done".to_owned(), o.outcome.is_some().to_string()),
        ("metadata.operationType".to_owned(), o.kind.as_str().to_owned()),
        ("metadata.modelName".to_owned(), o.model_name.clone()),
    ];
    fields.extend(labels(&o.labels));
    fields
}
