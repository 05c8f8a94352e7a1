//! The metadata store: every SQL statement in Anneal lives under this module.
//!
//! The embedded default is one SQLite file in the data directory, opened in WAL mode through one
//! `sqlx` pool. Migrations in `migrations/sqlite/` are embedded in the binary and applied at start;
//! a failed migration stops the server.

mod auth;
mod jobs;
mod models;
mod operations;
mod projects;
mod versions;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

pub use auth::{AuditRecord, NewAudit, NewToken, TokenRecord};
pub use jobs::{JobInput, JobKind, JobRecord, JobState, NewJob, StoredPlan};
pub use models::{ModelRecord, NewModel};
pub use operations::{OperationKind, OperationOutcome, OperationRecord};
pub use projects::ProjectRecord;
pub use versions::{model_not_found, version_not_found, NewVersion, ServingSettings, VersionRecord, VersionState};

/// The current time as stored: RFC 3339 UTC with milliseconds.
pub(crate) fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Parses a stored time.
pub(crate) fn parse_time(text: &str) -> crate::Result<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| crate::Error::internal(format!("bad stored time '{text}': {e}")))
}

/// The SQLite migrations, embedded at compile time.
static MIGRATOR: Migrator = sqlx::migrate!("../migrations/sqlite");

/// Why the store could not be opened, or is not ready.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or created.
    #[error("cannot open the database {path}: {source}")]
    Open { path: String, source: sqlx::Error },
    /// A migration failed or the database was migrated by a different build.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The open database does not answer.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// The database lacks migrations this build embeds.
    #[error("migrations not applied: {0:?}")]
    Unmigrated(Vec<i64>),
}

/// A handle to the metadata store; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let open_error = |source| StoreError::Open { path: path.display().to_string(), source };
        let options = SqliteConnectOptions::from_str("sqlite:")
            .map_err(open_error)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(open_error)?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }

    /// Checks that the database answers and that every embedded migration is applied.
    pub async fn check_ready(&self) -> Result<(), StoreError> {
        let applied: Vec<(i64,)> =
            sqlx::query_as("SELECT version FROM _sqlx_migrations WHERE success = 1 ORDER BY version")
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::Unavailable)?;
        let missing: Vec<i64> =
            MIGRATOR.iter().map(|m| m.version).filter(|v| !applied.iter().any(|(a,)| a == v)).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(StoreError::Unmigrated(missing))
        }
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}
