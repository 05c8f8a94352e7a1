//! Operation use cases: get and list.

use super::paging::PageRequest;
use super::Control;
use crate::error::{Error, Result};
use crate::names::{OperationName, ProjectId};
use crate::store::OperationRecord;

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

    /// A page of the project's operations, newest first.
    pub async fn list_operations(&self, project: &ProjectId, page: PageRequest) -> Result<OperationPage> {
        let mut operations = self.store.list_operations(project, page.after.as_deref(), page.fetch_limit()).await?;
        let next_page_token = page.finish(&mut operations, |o| &o.id);
        Ok(OperationPage { operations, next_page_token })
    }
}
