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

impl Store {
    /// The number `n` of `project`'s sandbox identity (uid `replica_uid_base + n`), allocated on
    /// first use: the lowest free number above every allocated one for which `usable` holds (it
    /// says no where the uid belongs to an account of this host). Two nodes allocating at once
    /// both end with the same answer for one project and different ones for two: the row's
    /// uniqueness decides, and the loser reads again.
    pub async fn project_uid(&self, project: &str, usable: impl Fn(i64) -> bool) -> crate::Result<i64> {
        for _ in 0..64 {
            let found: Option<(i64,)> = with_pool!(self, |pool| {
                sqlx::query_as("SELECT n FROM project_uids WHERE project_id = $1")
                    .bind(project)
                    .fetch_optional(pool)
                    .await?
            });
            if let Some((n,)) = found {
                return Ok(n);
            }
            let (highest,): (i64,) = with_pool!(self, |pool| {
                sqlx::query_as("SELECT CAST(COALESCE(MAX(n), 0) AS BIGINT) FROM project_uids").fetch_one(pool).await?
            });
            let mut n = highest + 1;
            while !usable(n) {
                n += 1;
            }
            let inserted = with_pool!(self, |pool| {
                sqlx::query("INSERT INTO project_uids (project_id, n) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(project)
                    .bind(n)
                    .execute(pool)
                    .await?
                    .rows_affected()
            });
            if inserted == 1 {
                return Ok(n);
            }
        }
        Err(crate::Error::Unavailable(format!(
            "cannot allocate a sandbox identity for project '{project}': too many nodes allocating at once"
        )))
    }

    /// Records numbers allocated before the database held them (`storage/replica-ids`), keeping
    /// each project's uid; a project or number already recorded is left as it is.
    pub async fn import_project_uids(&self, numbers: &[(String, i64)]) -> crate::Result<()> {
        for (project, n) in numbers {
            with_pool!(self, |pool| {
                sqlx::query("INSERT INTO project_uids (project_id, n) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(project)
                    .bind(*n)
                    .execute(pool)
                    .await?
                    .rows_affected()
            });
        }
        Ok(())
    }
}

impl Store {
    /// Records that `project`'s jobs write at `place` (a canonical local path or an `s3://` URI,
    /// without a trailing slash); a place already recorded keeps its first project.
    pub async fn claim_place(&self, project: &str, place: &str) -> crate::Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO claimed_places (place, project_id, create_time) VALUES ($1, $2, $3) \
                 ON CONFLICT (place) DO NOTHING",
            )
            .bind(place)
            .bind(project)
            .bind(now_text())
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Another project than `project` that claimed `place`, a place inside it or a place that
    /// holds it, if any.
    pub async fn foreign_claim(&self, project: &str, place: &str) -> crate::Result<Option<String>> {
        let row: Option<(String,)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT project_id FROM claimed_places WHERE project_id <> $1 AND (place = CAST($2 AS TEXT) \
                 OR substr(CAST($2 AS TEXT), 1, length(place) + 1) = place || '/' \
                 OR substr(place, 1, length(CAST($2 AS TEXT)) + 1) = CAST($2 AS TEXT) || '/') LIMIT 1",
            )
            .bind(project)
            .bind(place)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(|(p,)| p))
    }
}
