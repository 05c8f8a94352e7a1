//! SQL for models.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{now_text, parse_time, with_pool, Store};
use crate::error::{Error, FieldViolation, Result};
use crate::names::{ModelName, ProjectId};

/// A stored model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    pub project: String,
    pub model: String,
    pub description: String,
    pub labels: BTreeMap<String, String>,
    pub regions: Vec<String>,
    pub prediction_logging: bool,
    pub console_logging: bool,
    pub default_version: Option<String>,
    pub create_time: DateTime<Utc>,
    pub revision: i64,
}

/// What a client sets when creating a model.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NewModel {
    pub description: String,
    pub labels: BTreeMap<String, String>,
    pub regions: Vec<String>,
    pub prediction_logging: bool,
    pub console_logging: bool,
}

#[derive(sqlx::FromRow)]
struct Row {
    project_id: String,
    model_id: String,
    description: String,
    labels: String,
    regions: String,
    prediction_logging: i64,
    console_logging: i64,
    default_version_id: Option<String>,
    create_time: String,
    revision: i64,
}

impl TryFrom<Row> for ModelRecord {
    type Error = Error;
    fn try_from(row: Row) -> Result<Self> {
        Ok(Self {
            description: row.description,
            labels: serde_json::from_str(&row.labels).map_err(Error::internal)?,
            regions: serde_json::from_str(&row.regions).map_err(Error::internal)?,
            prediction_logging: row.prediction_logging != 0,
            console_logging: row.console_logging != 0,
            default_version: row.default_version_id,
            create_time: parse_time(&row.create_time)?,
            revision: row.revision,
            project: row.project_id,
            model: row.model_id,
        })
    }
}

const COLUMNS: &str = "project_id, model_id, description, labels, regions, prediction_logging, console_logging, default_version_id, create_time, revision";

impl Store {
    /// Stores a new model; ALREADY_EXISTS if the project has one of that name.
    pub async fn insert_model(&self, name: &ModelName, new: &NewModel) -> Result<ModelRecord> {
        self.ensure_project(&name.project).await?;
        let labels = serde_json::to_string(&new.labels).map_err(Error::internal)?;
        let regions = serde_json::to_string(&new.regions).map_err(Error::internal)?;
        let inserted = with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO models (project_id, model_id, description, labels, regions, prediction_logging, console_logging, create_time) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            )
            .bind(name.project.as_str())
            .bind(&name.model)
            .bind(&new.description)
            .bind(&labels)
            .bind(&regions)
            .bind(i64::from(new.prediction_logging))
            .bind(i64::from(new.console_logging))
            .bind(now_text())
            .execute(pool)
            .await?
            .rows_affected()
        });
        if inserted == 0 {
            return Err(Error::AlreadyExists(FieldViolation::new(
                "model.name",
                "A model with the same name already exists.",
            )));
        }
        self.get_model(name).await?.ok_or_else(|| Error::internal("a model vanished right after it was stored"))
    }

    /// The model, if it exists.
    pub async fn get_model(&self, name: &ModelName) -> Result<Option<ModelRecord>> {
        let row: Option<Row> = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM models WHERE project_id = $1 AND model_id = $2"
            )))
            .bind(name.project.as_str())
            .bind(&name.model)
            .fetch_optional(pool)
            .await?
        });
        row.map(ModelRecord::try_from).transpose()
    }

    /// Models of `project` ordered by id, after `after`, at most `limit`.
    pub async fn list_models(
        &self,
        project: &ProjectId,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ModelRecord>> {
        let rows: Vec<Row> = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM models WHERE project_id = $1 AND model_id > $2 ORDER BY model_id LIMIT $3"
            )))
            .bind(project.as_str())
            .bind(after.unwrap_or(""))
            .bind(limit as i64)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(ModelRecord::try_from).collect()
    }

    /// Deletes the model if it has no versions. Returns false when versions remain.
    pub async fn delete_model_without_versions(&self, name: &ModelName) -> Result<bool> {
        let deleted = with_pool!(self, |pool| {
            sqlx::query(
                "DELETE FROM models WHERE project_id = $1 AND model_id = $2 \
                 AND NOT EXISTS (SELECT 1 FROM versions WHERE project_id = $1 AND model_id = $2)",
            )
            .bind(name.project.as_str())
            .bind(&name.model)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(deleted == 1)
    }

    /// Changes a model's description and labels (each when given); with `expected_revision`, only
    /// if the model is still at that revision (else ABORTED).
    pub async fn update_model(
        &self,
        name: &ModelName,
        description: Option<&str>,
        labels: Option<&BTreeMap<String, String>>,
        expected_revision: Option<i64>,
    ) -> Result<()> {
        let labels = labels.map(serde_json::to_string).transpose().map_err(Error::internal)?;
        let updated = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE models SET description = COALESCE($1, description), labels = COALESCE($2, labels), revision = revision + 1 \
                 WHERE project_id = $3 AND model_id = $4 AND (CAST($5 AS BIGINT) IS NULL OR revision = $5)",
            )
            .bind(description)
            .bind(&labels)
            .bind(name.project.as_str())
            .bind(&name.model)
            .bind(expected_revision)
            .execute(pool)
            .await?
            .rows_affected()
        });
        if updated == 0 {
            return Err(Error::Aborted(format!(
                "Model {name} was changed by another request (etag mismatch); read it again."
            )));
        }
        Ok(())
    }

    /// Makes `version` the model's default version.
    pub async fn set_default_version(&self, name: &ModelName, version: &str) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE models SET default_version_id = $1, revision = revision + 1 WHERE project_id = $2 AND model_id = $3",
            )
            .bind(version)
            .bind(name.project.as_str())
            .bind(&name.model)
            .execute(pool)
            .await?;
        });
        Ok(())
    }
}
