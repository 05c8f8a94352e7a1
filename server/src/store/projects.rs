//! SQL for projects.

use chrono::{DateTime, Utc};

use super::{now_text, parse_time, with_pool, Store};
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
        let (number, create_time): (i64, String) = with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO projects (project_id, create_time) VALUES ($1, $2) ON CONFLICT (project_id) DO NOTHING",
            )
            .bind(id.as_str())
            .bind(now_text())
            .execute(pool)
            .await?;
            sqlx::query_as("SELECT project_number, create_time FROM projects WHERE project_id = $1")
                .bind(id.as_str())
                .fetch_one(pool)
                .await?
        });
        Ok(ProjectRecord { id: id.clone(), number, create_time: parse_time(&create_time)? })
    }
}
