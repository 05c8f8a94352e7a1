//! SQL for projects.

use chrono::{DateTime, Utc};

use super::Store;
use crate::names::ProjectId;

/// A registered project.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectRecord {
    pub id: ProjectId,
    pub number: i64,
    pub create_time: DateTime<Utc>,
}

impl Store {
    /// Returns the project, registering it first if this is the first time it is named.
    pub async fn ensure_project(&self, id: &ProjectId) -> crate::Result<ProjectRecord> {
        sqlx::query("INSERT INTO projects (project_id, create_time) VALUES (?, ?) ON CONFLICT (project_id) DO NOTHING")
            .bind(id.as_str())
            .bind(Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .execute(&self.pool)
            .await?;
        let (number, create_time): (i64, String) =
            sqlx::query_as("SELECT project_number, create_time FROM projects WHERE project_id = ?")
                .bind(id.as_str())
                .fetch_one(&self.pool)
                .await?;
        let create_time = DateTime::parse_from_rfc3339(&create_time)
            .map_err(|e| crate::Error::internal(format!("project {} has a bad create_time: {e}", id.as_str())))?
            .with_timezone(&Utc);
        Ok(ProjectRecord { id: id.clone(), number, create_time })
    }
}
