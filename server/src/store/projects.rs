//! SQL for projects.

use chrono::{DateTime, Utc};

use super::{now_text, parse_time, Store};
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
            .bind(now_text())
            .execute(&self.pool)
            .await?;
        let (number, create_time): (i64, String) =
            sqlx::query_as("SELECT project_number, create_time FROM projects WHERE project_id = ?")
                .bind(id.as_str())
                .fetch_one(&self.pool)
                .await?;
        Ok(ProjectRecord { id: id.clone(), number, create_time: parse_time(&create_time)? })
    }
}
