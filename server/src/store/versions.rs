//! SQL for versions. Every state change of a version and the operation that tracks it happen in
//! one transaction, so a version and its operation never disagree.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::operations::{insert_operation, OperationRecord};
use super::{now_text, parse_time, storable, with_pool, BeginWrite, Store};
use crate::error::{Error, FieldViolation, Result};
use crate::names::{ModelName, VersionName};

/// The life of a version: CREATING → READY | FAILED; READY/FAILED → DELETING → gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VersionState {
    Creating,
    Ready,
    Failed,
    Deleting,
}

impl VersionState {
    /// The stored (and API) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "CREATING",
            Self::Ready => "READY",
            Self::Failed => "FAILED",
            Self::Deleting => "DELETING",
        }
    }

    fn parse(text: &str) -> Result<Self> {
        Ok(match text {
            "CREATING" => Self::Creating,
            "READY" => Self::Ready,
            "FAILED" => Self::Failed,
            "DELETING" => Self::Deleting,
            other => return Err(Error::internal(format!("unknown stored version state '{other}'"))),
        })
    }
}

/// How a version asks to be served; unset fields take the server's defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServingSettings {
    /// Worker threads (`manualScaling.nodes`).
    pub workers: Option<u32>,
    /// libtorch intra-op threads per worker (from `machineType`).
    pub intra_op_threads: Option<u32>,
    /// GPUs asked for (`acceleratorConfig.count`); more than 0 runs on CUDA when the host has it.
    pub accelerator_count: u32,
    /// `acceleratorConfig.type`, recorded.
    pub accelerator_type: String,
    /// What serves the version: the framework as checked or detected at creation (`PYTORCH`,
    /// `TENSORFLOW`, `SCIKIT_LEARN`, `XGBOOST`); empty in versions stored before it was kept
    /// here, which are PYTORCH.
    pub framework: String,
    /// A custom prediction routine's `predictionClass`.
    pub prediction_class: Option<String>,
    /// Its `packageUris` as the client sent them.
    pub package_uris: Vec<String>,
    /// Those packages' files, resolved in storage at creation.
    pub package_paths: Vec<String>,
}

/// A stored version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub project: String,
    pub model: String,
    pub version: String,
    pub state: VersionState,
    pub error_message: Option<String>,
    pub description: String,
    pub labels: BTreeMap<String, String>,
    pub deployment_uri: String,
    pub framework: String,
    pub runtime_version: String,
    pub python_version: String,
    pub machine_type: String,
    pub artifact_dir: Option<String>,
    pub create_time: DateTime<Utc>,
    pub revision: i64,
    /// Whether it is its model's default version (from the model row).
    pub is_default: bool,
    #[serde(default)]
    pub serving: ServingSettings,
}

/// What a client sets when creating a version.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NewVersion {
    pub description: String,
    pub labels: BTreeMap<String, String>,
    pub deployment_uri: String,
    pub framework: String,
    pub runtime_version: String,
    pub python_version: String,
    pub machine_type: String,
    pub serving: ServingSettings,
}

#[derive(sqlx::FromRow)]
struct Row {
    project_id: String,
    model_id: String,
    version_id: String,
    state: String,
    error_message: Option<String>,
    description: String,
    labels: String,
    deployment_uri: String,
    framework: String,
    runtime_version: String,
    python_version: String,
    machine_type: String,
    artifact_dir: Option<String>,
    create_time: String,
    revision: i64,
    is_default: i64,
    serving: String,
}

impl TryFrom<Row> for VersionRecord {
    type Error = Error;
    fn try_from(row: Row) -> Result<Self> {
        Ok(Self {
            state: VersionState::parse(&row.state)?,
            labels: serde_json::from_str(&row.labels).map_err(Error::internal)?,
            create_time: parse_time(&row.create_time)?,
            project: row.project_id,
            model: row.model_id,
            version: row.version_id,
            error_message: row.error_message,
            description: row.description,
            deployment_uri: row.deployment_uri,
            framework: row.framework,
            runtime_version: row.runtime_version,
            python_version: row.python_version,
            machine_type: row.machine_type,
            artifact_dir: row.artifact_dir,
            revision: row.revision,
            is_default: row.is_default != 0,
            serving: serde_json::from_str(&row.serving).map_err(Error::internal)?,
        })
    }
}

const SELECT: &str = "SELECT v.project_id, v.model_id, v.version_id, v.state, v.error_message, v.description, v.labels, \
     v.deployment_uri, v.framework, v.runtime_version, v.python_version, v.machine_type, v.artifact_dir, v.create_time, \
     v.revision, CAST(CASE WHEN m.default_version_id = v.version_id THEN 1 ELSE 0 END AS BIGINT) AS is_default, v.serving \
     FROM versions v JOIN models m ON m.project_id = v.project_id AND m.model_id = v.model_id";

impl Store {
    /// Stores a CREATING version and the operation that creates it, in one transaction, both
    /// recording `node` as the node that works on them; the model's first version becomes its
    /// default. NOT_FOUND without the model, ALREADY_EXISTS for a taken name.
    pub async fn insert_version(
        &self,
        name: &VersionName,
        new: &NewVersion,
        operation: &OperationRecord,
        node: &str,
    ) -> Result<VersionRecord> {
        let labels = serde_json::to_string(&new.labels).map_err(Error::internal)?;
        let serving = serde_json::to_string(&new.serving).map_err(Error::internal)?;
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let model_exists: Option<(String,)> =
                sqlx::query_as("SELECT model_id FROM models WHERE project_id = $1 AND model_id = $2")
                    .bind(name.model.project.as_str())
                    .bind(&name.model.model)
                    .fetch_optional(&mut *tx)
                    .await?;
            if model_exists.is_none() {
                return Err(model_not_found(&name.model));
            }
            let inserted = sqlx::query(
                "INSERT INTO versions (project_id, model_id, version_id, state, description, labels, deployment_uri, framework, \
                 runtime_version, python_version, machine_type, create_time, serving, node_id) \
                 VALUES ($1, $2, $3, 'CREATING', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT DO NOTHING",
            )
            .bind(name.model.project.as_str())
            .bind(&name.model.model)
            .bind(&name.version)
            .bind(&new.description)
            .bind(&labels)
            .bind(&new.deployment_uri)
            .bind(&new.framework)
            .bind(&new.runtime_version)
            .bind(&new.python_version)
            .bind(&new.machine_type)
            .bind(now_text())
            .bind(&serving)
            .bind(node)
            .execute(&mut *tx)
            .await?;
            if inserted.rows_affected() == 0 {
                return Err(Error::AlreadyExists(FieldViolation::new(
                    "version.name",
                    "A version with the same name already exists.",
                )));
            }
            sqlx::query(
                "UPDATE models SET default_version_id = $1, revision = revision + 1 \
                 WHERE project_id = $2 AND model_id = $3 AND default_version_id IS NULL",
            )
            .bind(&name.version)
            .bind(name.model.project.as_str())
            .bind(&name.model.model)
            .execute(&mut *tx)
            .await?;
            insert_operation!(tx, operation);
            sqlx::query("UPDATE operations SET node_id = $1 WHERE project_id = $2 AND operation_id = $3")
                .bind(node)
                .bind(operation.project.as_str())
                .bind(&operation.id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        self.get_version(name).await?.ok_or_else(|| Error::internal("a version vanished right after it was stored"))
    }

    /// Versions left CREATING by a node other than `this` whose lease lapsed before `now` (or
    /// that has no row), each with that node.
    pub async fn creations_of_lost_nodes(
        &self,
        this: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<(VersionName, String)>> {
        let rows: Vec<CreationRow> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT v.project_id, v.model_id, v.version_id, v.node_id FROM versions v \
                 LEFT JOIN nodes n ON n.node_id = v.node_id \
                 WHERE v.state = 'CREATING' AND v.node_id IS NOT NULL AND v.node_id <> $1 \
                 AND (n.node_id IS NULL OR n.lease_until < $2) ORDER BY v.project_id, v.model_id, v.version_id",
            )
            .bind(this)
            .bind(super::stored_time(now))
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(creation).collect()
    }

    /// Versions node `node` left CREATING, each with the node.
    pub async fn creations_of(&self, node: &str) -> Result<Vec<(VersionName, String)>> {
        let rows: Vec<CreationRow> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT project_id, model_id, version_id, node_id FROM versions \
                 WHERE state = 'CREATING' AND node_id = $1 ORDER BY project_id, model_id, version_id",
            )
            .bind(node)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(creation).collect()
    }

    /// The version, if it exists.
    pub async fn get_version(&self, name: &VersionName) -> Result<Option<VersionRecord>> {
        let row: Option<Row> = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "{SELECT} WHERE v.project_id = $1 AND v.model_id = $2 AND v.version_id = $3"
            )))
            .bind(name.model.project.as_str())
            .bind(&name.model.model)
            .bind(&name.version)
            .fetch_optional(pool)
            .await?
        });
        row.map(VersionRecord::try_from).transpose()
    }

    /// Versions of `model` ordered by id, after `after`, at most `limit`.
    pub async fn list_versions(
        &self,
        model: &ModelName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<VersionRecord>> {
        let rows: Vec<Row> = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "{SELECT} WHERE v.project_id = $1 AND v.model_id = $2 AND v.version_id > $3 ORDER BY v.version_id LIMIT $4"
            )))
            .bind(model.project.as_str())
            .bind(&model.model)
            .bind(after.unwrap_or(""))
            .bind(limit as i64)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(VersionRecord::try_from).collect()
    }

    /// Versions in `state`, across all projects (for reconciling at start).
    pub async fn versions_in_state(&self, state: VersionState) -> Result<Vec<VersionRecord>> {
        let rows: Vec<Row> = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!("{SELECT} WHERE v.state = $1")))
                .bind(state.as_str())
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(VersionRecord::try_from).collect()
    }

    /// Moves a version from `from` to `to` (with `error_message` and `artifact_dir` when given).
    /// Returns false if the version was not in `from`, so racing transitions cannot both win.
    pub async fn transition_version(
        &self,
        name: &VersionName,
        from: VersionState,
        to: VersionState,
        error_message: Option<&str>,
        artifact_dir: Option<&str>,
    ) -> Result<bool> {
        let error_message = error_message.map(storable);
        let moved = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE versions SET state = $1, error_message = COALESCE($2, error_message), \
                 artifact_dir = COALESCE($3, artifact_dir), revision = revision + 1 \
                 WHERE project_id = $4 AND model_id = $5 AND version_id = $6 AND state = $7",
            )
            .bind(to.as_str())
            .bind(&error_message)
            .bind(artifact_dir)
            .bind(name.model.project.as_str())
            .bind(&name.model.model)
            .bind(&name.version)
            .bind(from.as_str())
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(moved == 1)
    }

    /// Changes a READY version's description and labels (each when given); with
    /// `expected_revision`, only if the version is still at that revision.
    pub async fn update_version(
        &self,
        name: &VersionName,
        description: Option<&str>,
        labels: Option<&BTreeMap<String, String>>,
        expected_revision: Option<i64>,
    ) -> Result<()> {
        let version = self.get_version(name).await?.ok_or_else(|| version_not_found(name))?;
        if version.state != VersionState::Ready {
            return Err(Error::FailedPrecondition(format!(
                "Version {name} is {}; only READY versions can be updated.",
                version.state.as_str()
            )));
        }
        let labels = labels.map(serde_json::to_string).transpose().map_err(Error::internal)?;
        let updated = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE versions SET description = COALESCE($1, description), labels = COALESCE($2, labels), \
                 revision = revision + 1 WHERE project_id = $3 AND model_id = $4 AND version_id = $5 AND state = 'READY' \
                 AND (CAST($6 AS BIGINT) IS NULL OR revision = $6)",
            )
            .bind(description)
            .bind(&labels)
            .bind(name.model.project.as_str())
            .bind(&name.model.model)
            .bind(&name.version)
            .bind(expected_revision)
            .execute(pool)
            .await?
            .rows_affected()
        });
        if updated == 0 {
            return Err(Error::Aborted(format!(
                "Version {name} was changed by another request (etag mismatch); read it again."
            )));
        }
        Ok(())
    }

    /// Marks a READY or FAILED version DELETING and stores the operation that deletes it. The
    /// default version may be deleted only when it is the model's last version. Of two requests
    /// racing to delete one version, one wins; the other is ABORTED.
    pub async fn begin_version_delete(&self, name: &VersionName, operation: &OperationRecord) -> Result<VersionRecord> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "{SELECT} WHERE v.project_id = $1 AND v.model_id = $2 AND v.version_id = $3"
            )))
            .bind(name.model.project.as_str())
            .bind(&name.model.model)
            .bind(&name.version)
            .fetch_optional(&mut *tx)
            .await?;
            let version = row.map(VersionRecord::try_from).transpose()?.ok_or_else(|| version_not_found(name))?;
            if !matches!(version.state, VersionState::Ready | VersionState::Failed) {
                return Err(Error::FailedPrecondition(format!(
                    "Version {name} is {}; only READY or FAILED versions can be deleted.",
                    version.state.as_str()
                )));
            }
            if version.is_default {
                let (others,): (i64,) = sqlx::query_as(
                    "SELECT COUNT(*) FROM versions WHERE project_id = $1 AND model_id = $2 AND version_id <> $3",
                )
                .bind(name.model.project.as_str())
                .bind(&name.model.model)
                .bind(&name.version)
                .fetch_one(&mut *tx)
                .await?;
                if others > 0 {
                    return Err(Error::FailedPrecondition(format!(
                        "Version {name} is the default version of its model and other versions exist; set another version as default first."
                    )));
                }
            }
            let marked = sqlx::query(
                "UPDATE versions SET state = 'DELETING', revision = revision + 1 \
                 WHERE project_id = $1 AND model_id = $2 AND version_id = $3 AND state IN ('READY', 'FAILED')",
            )
            .bind(name.model.project.as_str())
            .bind(&name.model.model)
            .bind(&name.version)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if marked == 0 {
                return Err(Error::Aborted(format!(
                    "Version {name} was changed by another request while it was being deleted; read it again."
                )));
            }
            insert_operation!(tx, operation);
            tx.commit().await?;
            Ok(VersionRecord { state: VersionState::Deleting, ..version })
        })
    }

    /// Removes a DELETING version (and clears the model's default if it was the default).
    pub async fn remove_version(&self, name: &VersionName) -> Result<()> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            sqlx::query(
                "DELETE FROM versions WHERE project_id = $1 AND model_id = $2 AND version_id = $3 AND state = 'DELETING'",
            )
            .bind(name.model.project.as_str())
            .bind(&name.model.model)
            .bind(&name.version)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE models SET default_version_id = NULL, revision = revision + 1 \
                 WHERE project_id = $1 AND model_id = $2 AND default_version_id = $3",
            )
            .bind(name.model.project.as_str())
            .bind(&name.model.model)
            .bind(&name.version)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }
}

/// NOT_FOUND for a model.
pub fn model_not_found(name: &ModelName) -> Error {
    Error::not_found("name", format!("Model {name} not found."))
}

/// NOT_FOUND for a version.
pub fn version_not_found(name: &VersionName) -> Error {
    Error::not_found("name", format!("Version {name} not found."))
}

/// A CREATING version's name and the node creating it.
type CreationRow = (String, String, String, String);

fn creation((project, model, version, node): CreationRow) -> Result<(VersionName, String)> {
    Ok((VersionName::new("name", &project, &model, &version)?, node))
}
