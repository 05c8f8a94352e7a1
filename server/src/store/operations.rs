//! SQL for long-running operations.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::models::ModelRecord;
use super::versions::VersionRecord;
use super::BeginWrite;
use super::{now_text, parse_time, with_pool, Store};
use crate::error::{Error, Result};
use crate::names::{OperationName, ProjectId};

/// What an operation does (`OperationMetadata.operationType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperationKind {
    CreateVersion,
    DeleteVersion,
    DeleteModel,
    UpdateModel,
    UpdateVersion,
}

impl OperationKind {
    /// The API's enum name, also the stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CreateVersion => "CREATE_VERSION",
            Self::DeleteVersion => "DELETE_VERSION",
            Self::DeleteModel => "DELETE_MODEL",
            Self::UpdateModel => "UPDATE_MODEL",
            Self::UpdateVersion => "UPDATE_VERSION",
        }
    }

    fn parse(text: &str) -> Result<Self> {
        Ok(match text {
            "CREATE_VERSION" => Self::CreateVersion,
            "DELETE_VERSION" => Self::DeleteVersion,
            "DELETE_MODEL" => Self::DeleteModel,
            "UPDATE_MODEL" => Self::UpdateModel,
            "UPDATE_VERSION" => Self::UpdateVersion,
            other => return Err(Error::internal(format!("unknown stored operation type '{other}'"))),
        })
    }
}

/// How a finished operation ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OperationOutcome {
    /// Succeeded with a version (create).
    Version { version: Box<VersionRecord> },
    /// Succeeded with a model.
    Model { model: Box<ModelRecord> },
    /// Succeeded with nothing to return (deletes).
    Empty,
    /// Failed with a `google.rpc.Code` and a message.
    Error { code: i32, message: String },
}

/// A stored operation.
#[derive(Clone, Debug, PartialEq)]
pub struct OperationRecord {
    pub project: String,
    pub id: String,
    pub kind: OperationKind,
    pub model_name: String,
    pub version: Option<VersionRecord>,
    pub labels: BTreeMap<String, String>,
    pub create_time: DateTime<Utc>,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
    pub cancel_requested: bool,
    /// Set when done.
    pub outcome: Option<OperationOutcome>,
}

impl OperationRecord {
    /// A new, running operation named by its kind, subject and the current time, the way ML
    /// Engine names them (`create_m1_v1-1544773675000123`).
    pub fn start(
        project: &ProjectId,
        kind: OperationKind,
        subject: &str,
        model_name: String,
        version: Option<VersionRecord>,
    ) -> Self {
        let now = Utc::now();
        let verb = match kind {
            OperationKind::CreateVersion => "create",
            OperationKind::DeleteVersion | OperationKind::DeleteModel => "delete",
            OperationKind::UpdateModel | OperationKind::UpdateVersion => "update",
        };
        Self {
            project: project.as_str().to_owned(),
            id: format!("{verb}_{subject}-{}", now.timestamp_micros()),
            kind,
            model_name,
            labels: version.as_ref().map(|v| v.labels.clone()).unwrap_or_default(),
            version,
            create_time: now,
            start_time: Some(now),
            end_time: None,
            cancel_requested: false,
            outcome: None,
        }
    }

    /// The operation's full name.
    pub fn name(&self) -> String {
        format!("projects/{}/operations/{}", self.project, self.id)
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    project_id: String,
    operation_id: String,
    operation_type: String,
    model_name: String,
    version_snapshot: Option<String>,
    labels: String,
    create_time: String,
    start_time: Option<String>,
    end_time: Option<String>,
    cancel_requested: i64,
    response: Option<String>,
}

fn from_json<T: serde::de::DeserializeOwned>(text: Option<String>) -> Result<Option<T>> {
    text.map(|t| serde_json::from_str(&t).map_err(Error::internal)).transpose()
}

impl TryFrom<Row> for OperationRecord {
    type Error = Error;
    fn try_from(row: Row) -> Result<Self> {
        Ok(Self {
            kind: OperationKind::parse(&row.operation_type)?,
            version: from_json(row.version_snapshot)?,
            labels: serde_json::from_str(&row.labels).map_err(Error::internal)?,
            create_time: parse_time(&row.create_time)?,
            start_time: row.start_time.as_deref().map(parse_time).transpose()?,
            end_time: row.end_time.as_deref().map(parse_time).transpose()?,
            cancel_requested: row.cancel_requested != 0,
            outcome: from_json(row.response)?,
            project: row.project_id,
            id: row.operation_id,
            model_name: row.model_name,
        })
    }
}

const COLUMNS: &str =
    "project_id, operation_id, operation_type, model_name, version_snapshot, labels, create_time, start_time, end_time, cancel_requested, response";

/// The values of a new operation's row, in the order of [`insert_operation!`]'s placeholders.
pub(super) struct OperationRow<'a> {
    pub project: &'a str,
    pub id: &'a str,
    pub kind: &'static str,
    pub model_name: &'a str,
    pub version: Option<String>,
    pub labels: String,
    pub create_time: String,
    pub start_time: Option<String>,
}

impl<'a> OperationRow<'a> {
    pub(super) fn of(op: &'a OperationRecord) -> Result<Self> {
        Ok(Self {
            project: &op.project,
            id: &op.id,
            kind: op.kind.as_str(),
            model_name: &op.model_name,
            version: op.version.as_ref().map(serde_json::to_string).transpose().map_err(Error::internal)?,
            labels: serde_json::to_string(&op.labels).map_err(Error::internal)?,
            create_time: op.create_time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            start_time: op.start_time.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        })
    }
}

/// Stores a new operation inside a caller's transaction `$tx` (of either backend), from an
/// [`OperationRecord`]. Used as a statement in a function returning [`Result`]: a failure
/// returns from it with `?`.
macro_rules! insert_operation {
    ($tx:expr, $op:expr) => {
        let row = $crate::store::operations::OperationRow::of($op)?;
        sqlx::query(
            "INSERT INTO operations (project_id, operation_id, operation_type, model_name, version_snapshot, labels, \
             create_time, start_time) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(row.project)
        .bind(row.id)
        .bind(row.kind)
        .bind(row.model_name)
        .bind(row.version)
        .bind(row.labels)
        .bind(row.create_time)
        .bind(row.start_time)
        .execute(&mut *$tx)
        .await?;
    };
}
pub(super) use insert_operation;

impl Store {
    /// Stores an operation on its own (for operations not tied to a version change).
    pub async fn insert_operation(&self, op: &OperationRecord) -> Result<()> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            insert_operation!(tx, op);
            tx.commit().await?;
        });
        Ok(())
    }

    /// Ends an operation with `outcome`.
    pub async fn finish_operation(&self, project: &str, id: &str, outcome: &OperationOutcome) -> Result<()> {
        let response = serde_json::to_string(outcome).map_err(Error::internal)?;
        with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE operations SET done = 1, end_time = $1, response = $2 WHERE project_id = $3 AND operation_id = $4",
            )
            .bind(now_text())
            .bind(&response)
            .bind(project)
            .bind(id)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The operation, if it exists.
    pub async fn get_operation(&self, name: &OperationName) -> Result<Option<OperationRecord>> {
        let row: Option<Row> = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM operations WHERE project_id = $1 AND operation_id = $2"
            )))
            .bind(name.project.as_str())
            .bind(&name.id)
            .fetch_optional(pool)
            .await?
        });
        row.map(OperationRecord::try_from).transpose()
    }

    /// Operations of `project`, newest first, after the operation id `after`, at most `limit`.
    pub async fn list_operations(
        &self,
        project: &ProjectId,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<OperationRecord>> {
        let rows: Vec<Row> = with_pool!(self, |pool| {
            match after {
            None => sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM operations WHERE project_id = $1 ORDER BY create_time DESC, operation_id DESC LIMIT $2"
            )))
            .bind(project.as_str())
            .bind(limit as i64)
            .fetch_all(pool)
            .await?,
            Some(after) => sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM operations o WHERE project_id = $1 AND (create_time, operation_id) < \
                 (SELECT create_time, operation_id FROM operations WHERE project_id = $1 AND operation_id = $2) \
                 ORDER BY create_time DESC, operation_id DESC LIMIT $3"
            )))
            .bind(project.as_str())
            .bind(after)
            .bind(limit as i64)
            .fetch_all(pool)
            .await?,
        }
        });
        rows.into_iter().map(OperationRecord::try_from).collect()
    }

    /// Records that a client asked to cancel the operation. Returns whether it was still running.
    pub async fn request_cancel(&self, name: &OperationName) -> Result<bool> {
        let updated = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE operations SET cancel_requested = 1 WHERE project_id = $1 AND operation_id = $2 AND done = 0",
            )
            .bind(name.project.as_str())
            .bind(&name.id)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(updated == 1)
    }

    /// Whether a client asked to cancel the operation.
    pub async fn cancel_requested(&self, project: &str, id: &str) -> Result<bool> {
        let row: Option<(i64,)> = with_pool!(self, |pool| {
            sqlx::query_as("SELECT cancel_requested FROM operations WHERE project_id = $1 AND operation_id = $2")
                .bind(project)
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.is_some_and(|(c,)| c != 0))
    }

    /// Operations not yet done (for reconciling at start).
    /// Operations node `node` started that are not done.
    pub async fn unfinished_operations_of(&self, node: &str) -> Result<Vec<OperationRecord>> {
        let rows: Vec<Row> = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM operations WHERE done = 0 AND node_id = $1"
            )))
            .bind(node)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(OperationRecord::try_from).collect()
    }

    pub async fn unfinished_operations(&self) -> Result<Vec<OperationRecord>> {
        let rows: Vec<Row> = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM operations WHERE done = 0")))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(OperationRecord::try_from).collect()
    }
}
