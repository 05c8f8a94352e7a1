//! The metadata store: every SQL statement in Anneal lives under this module.
//!
//! Two real backends behind one [`Store`], chosen by the `database_url` setting:
//!
//! - **SQLite** (`sqlite://PATH`), the embedded default: one file in the data directory
//!   (`anneal.db`), opened in WAL mode. One node.
//! - **PostgreSQL** (`postgres://…`), for several nodes sharing one database.
//!
//! Each backend has its own migrations (`migrations/sqlite/`, `migrations/postgres/`, at the same
//! version numbers), embedded in the binary and applied at start; a failed migration stops the
//! server.
//!
//! Every query is written once and compiled once per backend by [`with_pool!`]: its body runs on
//! whichever pool the store holds, so rows (`sqlx::FromRow`) and binds stay typed on both. SQL text
//! follows rules both backends accept: `$1, $2, …` placeholders, each number first used in
//! ascending order (SQLite numbers `$n` parameters by first appearance); a parameter reused or
//! whose type PostgreSQL cannot infer is cast (`CAST($3 AS BIGINT) IS NULL`, not `::`, which SQLite
//! lacks); integers are `BIGINT` (read as `i64`), flags are `0`/`1` integers, times are RFC 3339
//! text, and literals that would be `INTEGER` on PostgreSQL are cast to `BIGINT` before they are
//! read as `i64`. Where the backends truly differ (row locks, PostgreSQL's `NOTIFY` of a revoked
//! token in `auth`), match on [`Pool`] directly or implement a small trait for each backend.

mod auth;
mod database_url;
mod jobs;
mod models;
mod nodes;
mod operations;
mod projects;
mod versions;

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

pub use auth::{AuditRecord, AuthEvent, AuthEvents, NewAudit, NewToken, TokenRecord};
pub use database_url::{DatabaseUrl, DatabaseUrlError};
pub use jobs::{JobInput, JobKind, JobRecord, JobState, NewJob, StoredPlan};
pub use models::{ModelRecord, NewModel};
pub use nodes::{stored as stored_time, LapsedJob, NodeRecord};
pub use operations::{OperationKind, OperationOutcome, OperationRecord};
pub use projects::ProjectRecord;
pub use versions::{model_not_found, version_not_found, NewVersion, ServingSettings, VersionRecord, VersionState};

/// The current time as stored: RFC 3339 UTC with milliseconds.
pub(crate) fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// An error message Anneal wrote (a replica's last lines, a loader's complaint) as both backends
/// store it: PostgreSQL's text cannot hold U+0000, so each is shown as U+FFFD.
pub(crate) fn storable(message: &str) -> String {
    message.replace('\0', "\u{FFFD}")
}

/// Parses a stored time.
pub(crate) fn parse_time(text: &str) -> crate::Result<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| crate::Error::internal(format!("bad stored time '{text}': {e}")))
}

/// The SQLite migrations, embedded at compile time.
static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("../migrations/sqlite");

/// The PostgreSQL migrations, embedded at compile time (the same versions as SQLite's).
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("../migrations/postgres");

/// How long a request waits for a free database connection (or a new one) before it answers
/// 503 UNAVAILABLE.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest one PostgreSQL statement may run before the database cancels it (and the request
/// answers 503 UNAVAILABLE).
const STATEMENT_TIMEOUT: &str = "30s";

/// Runs `$body` with `$pool` bound to the store's pool, whichever backend it is: the body is
/// compiled once for SQLite and once for PostgreSQL, so it must be valid for both (see the
/// module's rules for SQL text). `$pool` is a `&SqlitePool` or a `&PgPool`; `$pool.begin_write()` ([`BeginWrite`])
/// opens a write transaction of that backend.
///
/// ```ignore
/// let row: Option<Row> = with_pool!(self, |pool| {
///     sqlx::query_as("SELECT … FROM jobs WHERE project_id = $1").bind(p).fetch_optional(pool).await?
/// });
/// ```
macro_rules! with_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.pool {
            $crate::store::Pool::Sqlite($pool) => $body,
            $crate::store::Pool::Postgres($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

/// Opens a transaction that writes. On SQLite it is `BEGIN IMMEDIATE`, which takes the write
/// lock at the start and waits for it (the busy timeout): a deferred transaction that reads
/// first and writes after another connection committed fails at once with SQLITE_BUSY_SNAPSHOT
/// ("database is locked", 500 to the client) instead. On PostgreSQL a plain `BEGIN`.
pub(crate) trait BeginWrite {
    type Db: sqlx::Database;
    fn begin_write(
        &self,
    ) -> impl std::future::Future<Output = Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error>> + Send + '_;
}

impl BeginWrite for SqlitePool {
    type Db = sqlx::Sqlite;
    fn begin_write(
        &self,
    ) -> impl std::future::Future<Output = Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error>> + Send + '_ {
        self.begin_with("BEGIN IMMEDIATE")
    }
}

impl BeginWrite for PgPool {
    type Db = sqlx::Postgres;
    fn begin_write(
        &self,
    ) -> impl std::future::Future<Output = Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error>> + Send + '_ {
        self.begin()
    }
}

/// The connection pool of the configured backend.
#[derive(Clone, Debug)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Which backend a store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Why the store could not be opened, or is not ready.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened, created or reached.
    #[error("cannot open the database {url}: {source}")]
    Open { url: String, source: sqlx::Error },
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
    pool: Pool,
}

impl Store {
    /// Opens the database `url` names with at most `max_connections` connections (creating a
    /// SQLite file if needed) and applies pending migrations.
    pub async fn open(url: &DatabaseUrl, max_connections: u32) -> Result<Self, StoreError> {
        let open_error = |source| StoreError::Open { url: url.to_string(), source };
        let max_connections = max_connections.max(1);
        let pool = match url {
            DatabaseUrl::Sqlite(path) => {
                let options = SqliteConnectOptions::from_str("sqlite:")
                    .map_err(open_error)?
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(5));
                let pool = SqlitePoolOptions::new()
                    .max_connections(max_connections)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_with(options)
                    .await
                    .map_err(open_error)?;
                SQLITE_MIGRATOR.run(&pool).await?;
                Pool::Sqlite(pool)
            }
            DatabaseUrl::Postgres(text) => {
                let options = PgConnectOptions::from_str(text)
                    .map_err(open_error)?
                    .application_name("anneal")
                    .options([("statement_timeout", STATEMENT_TIMEOUT)]);
                let pool = PgPoolOptions::new()
                    .max_connections(max_connections)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_with(options)
                    .await
                    .map_err(open_error)?;
                // A migration may take longer than one request's statement may (an index on a
                // large table): migrations run on a connection of their own without the limit,
                // closed afterwards.
                let mut conn = pool.acquire().await.map_err(open_error)?;
                sqlx::query("SET statement_timeout = 0").execute(&mut *conn).await.map_err(open_error)?;
                POSTGRES_MIGRATOR.run(&mut *conn).await?;
                conn.close().await.map_err(open_error)?;
                Pool::Postgres(pool)
            }
        };
        Ok(Self { pool })
    }

    /// Which backend this store runs on.
    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Checks that the database answers and that every embedded migration is applied.
    pub async fn check_ready(&self) -> Result<(), StoreError> {
        let (applied, migrator): (Vec<(i64,)>, &Migrator) = with_pool!(self, |pool| {
            let applied = sqlx::query_as("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
                .fetch_all(pool)
                .await
                .map_err(StoreError::Unavailable)?;
            (applied, self.migrator())
        });
        let missing: Vec<i64> =
            migrator.iter().map(|m| m.version).filter(|v| !applied.iter().any(|(a,)| a == v)).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(StoreError::Unmigrated(missing))
        }
    }

    fn migrator(&self) -> &'static Migrator {
        match self.pool {
            Pool::Sqlite(_) => &SQLITE_MIGRATOR,
            Pool::Postgres(_) => &POSTGRES_MIGRATOR,
        }
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        with_pool!(self, |pool| pool.close().await)
    }
}
