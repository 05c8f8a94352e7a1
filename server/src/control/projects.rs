//! Project use cases.

use super::Control;
use crate::names::ProjectName;
use crate::store::ProjectRecord;

/// A project's service configuration (`projects.getConfig`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectConfig {
    pub project: ProjectRecord,
    /// The identity Anneal runs the project's jobs as. Anneal runs them as itself; the name is
    /// reported so clients that read it keep working.
    pub service_account: String,
}

impl Control {
    /// Returns the project's configuration, registering the project on first use.
    pub async fn get_project_config(&self, name: &ProjectName) -> crate::Result<ProjectConfig> {
        let project = self.store.ensure_project(&name.0).await?;
        let service_account = format!("service-{}@anneal.local", project.number);
        Ok(ProjectConfig { project, service_account })
    }
}
