//! SQL for identity and audit: API tokens (hashes only), console sessions, the audit log and
//! stored IAM policies.
//!
//! On PostgreSQL (several nodes) a revocation also names the token on the channel
//! [`AUTH_CHANNEL`] (`NOTIFY`, sent when its transaction commits), and [`AuthEvents`] listens on
//! it, on a connection of its own outside the pool, so every node can drop the token from its
//! cache of checked tokens at once. SQLite has one node: nothing is sent or listened for.

use std::future::Future;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};

use super::{now_text, parse_time, with_pool, BeginWrite, Pool, Store, StoreError, ACQUIRE_TIMEOUT};
use crate::auth::{ProjectScope, Role};
use crate::error::{Error, Result};

/// The PostgreSQL notification channel on which a revocation names the revoked token's id.
pub const AUTH_CHANNEL: &str = "anneal_auth";

/// A stored API token (never its secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub secret_hash: String,
    pub role: Role,
    pub projects: ProjectScope,
    /// The token id of whoever created it (`None` for the admin token made on first start).
    pub created_by: Option<String>,
    pub create_time: DateTime<Utc>,
    pub revoke_time: Option<DateTime<Utc>>,
}

/// A token to store.
pub struct NewToken<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub secret_hash: &'a str,
    pub role: Role,
    pub projects: &'a ProjectScope,
    pub created_by: Option<&'a str>,
}

/// One entry of the audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    pub seq: i64,
    pub time: DateTime<Utc>,
    pub actor: String,
    pub method: String,
    pub path: String,
    pub project: Option<String>,
    pub status: u16,
    pub outcome: String,
}

/// An audit entry to append.
pub struct NewAudit<'a> {
    pub actor: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub project: Option<&'a str>,
    pub status: u16,
    pub outcome: &'a str,
}

type AuditRow = (i64, String, String, String, String, Option<String>, i64, String);

type TokenRow = (String, String, String, String, Option<String>, Option<String>, String, Option<String>);

fn token_from_row(row: TokenRow) -> Result<TokenRecord> {
    let (id, name, secret_hash, role, projects, created_by, create_time, revoke_time) = row;
    let projects = match projects {
        None => ProjectScope::All,
        Some(text) => ProjectScope::Only(
            serde_json::from_str(&text).map_err(|e| Error::internal(format!("bad stored projects of {id}: {e}")))?,
        ),
    };
    Ok(TokenRecord {
        role: Role::parse("role", &role).map_err(|_| Error::internal(format!("bad stored role '{role}' of {id}")))?,
        id,
        name,
        secret_hash,
        projects,
        created_by,
        create_time: parse_time(&create_time)?,
        revoke_time: revoke_time.as_deref().map(parse_time).transpose()?,
    })
}

const TOKEN_COLUMNS: &str = "token_id, name, secret_hash, role, projects, created_by, create_time, revoke_time";

impl Store {
    /// Stores a new token.
    pub async fn insert_token(&self, token: NewToken<'_>) -> Result<TokenRecord> {
        let projects = match token.projects {
            ProjectScope::All => None,
            ProjectScope::Only(list) => Some(serde_json::to_string(list).map_err(Error::internal)?),
        };
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO api_tokens (token_id, name, secret_hash, role, projects, created_by, create_time) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(token.id)
            .bind(token.name)
            .bind(token.secret_hash)
            .bind(token.role.as_str())
            .bind(&projects)
            .bind(token.created_by)
            .bind(now_text())
            .execute(pool)
            .await?;
        });
        self.token(token.id).await?.ok_or_else(|| Error::internal("a token just stored is missing"))
    }

    /// The token with this public id, revoked or not.
    pub async fn token(&self, id: &str) -> Result<Option<TokenRecord>> {
        let row: Option<TokenRow> = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE token_id = $1")))
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        row.map(token_from_row).transpose()
    }

    /// Every token, oldest first.
    pub async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        let rows: Vec<TokenRow> = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY create_time, token_id"
            )))
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(token_from_row).collect()
    }

    /// How many tokens were ever made (revoked ones included).
    pub async fn count_tokens(&self) -> Result<i64> {
        let (count,): (i64,) =
            with_pool!(self, |pool| sqlx::query_as("SELECT COUNT(*) FROM api_tokens").fetch_one(pool).await?);
        Ok(count)
    }

    /// Marks a token revoked and ends its console sessions, in one transaction. Returns false
    /// when no unrevoked token has this id.
    pub async fn revoke_token(&self, id: &str) -> Result<bool> {
        let done = with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let done =
                sqlx::query("UPDATE api_tokens SET revoke_time = $1 WHERE token_id = $2 AND revoke_time IS NULL")
                    .bind(now_text())
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            sqlx::query("DELETE FROM console_sessions WHERE token_id = $1").bind(id).execute(&mut *tx).await?;
            if done == 1 {
                tx.notify_revoked(id).await?;
            }
            tx.commit().await?;
            done
        });
        Ok(done == 1)
    }

    /// The revocations every node makes, as they commit: `None` on SQLite (one node, whose own
    /// revocations need no message). Nothing connects until the first [`AuthEvents::next`].
    pub fn auth_events(&self) -> Option<AuthEvents> {
        match &self.pool {
            Pool::Sqlite(_) => None,
            Pool::Postgres(pool) => Some(AuthEvents {
                options: pool.connect_options().as_ref().clone().application_name("anneal-auth-listener"),
                listener: None,
            }),
        }
    }

    /// Stores a console session (by the hash of its secret) for a token.
    pub async fn insert_session(&self, session_hash: &str, token_id: &str, expires: DateTime<Utc>) -> Result<()> {
        let expires = expires.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO console_sessions (session_hash, token_id, create_time, expire_time) VALUES ($1, $2, $3, $4)",
            )
            .bind(session_hash)
            .bind(token_id)
            .bind(now_text())
            .bind(&expires)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The token id and expiry of a session, if it exists.
    pub async fn session(&self, session_hash: &str) -> Result<Option<(String, DateTime<Utc>)>> {
        let row: Option<(String, String)> = with_pool!(self, |pool| {
            sqlx::query_as("SELECT token_id, expire_time FROM console_sessions WHERE session_hash = $1")
                .bind(session_hash)
                .fetch_optional(pool)
                .await?
        });
        row.map(|(token, expires)| Ok((token, parse_time(&expires)?))).transpose()
    }

    /// Ends a session (and every expired one).
    pub async fn delete_session(&self, session_hash: &str) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query("DELETE FROM console_sessions WHERE session_hash = $1 OR expire_time < $2")
                .bind(session_hash)
                .bind(now_text())
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Appends one entry to the audit log.
    pub async fn append_audit(&self, entry: NewAudit<'_>) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO audit_log (time, actor, method, path, project, status, outcome) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(now_text())
            .bind(entry.actor)
            .bind(entry.method)
            .bind(entry.path)
            .bind(entry.project)
            .bind(i64::from(entry.status))
            .bind(entry.outcome)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Audit entries newest first, before `before` (a `seq`), of the given projects (`None`:
    /// every entry), at most `limit`.
    pub async fn list_audit(
        &self,
        projects: Option<&[String]>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>> {
        // The builder writes each backend's own placeholders.
        let rows: Vec<AuditRow> = with_pool!(self, |pool| {
            let mut query = sqlx::QueryBuilder::new(
                "SELECT seq, time, actor, method, path, project, status, outcome FROM audit_log WHERE seq < ",
            );
            query.push_bind(before.unwrap_or(i64::MAX));
            if let Some(projects) = projects {
                query.push(" AND project IN (");
                let mut list = query.separated(", ");
                list.push_bind("");
                for project in projects {
                    list.push_bind(project.clone());
                }
                query.push(")");
            }
            query.push(" ORDER BY seq DESC LIMIT ").push_bind(i64::from(limit));
            query.build_query_as().fetch_all(pool).await?
        });
        rows.into_iter()
            .map(|(seq, time, actor, method, path, project, status, outcome)| {
                Ok(AuditRecord {
                    seq,
                    time: parse_time(&time)?,
                    actor,
                    method,
                    path,
                    project,
                    status: u16::try_from(status).unwrap_or(0),
                    outcome,
                })
            })
            .collect()
    }

    /// The stored IAM policy of a resource and its etag.
    pub async fn iam_policy(&self, resource: &str) -> Result<Option<(String, String)>> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_as("SELECT policy, etag FROM iam_policies WHERE resource = $1")
                .bind(resource)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Stores a resource's IAM policy. With `check`, only if the stored policy's etag is still
    /// `Some(etag)`, or there is still none (`None`); returns false when that changed. Each case
    /// is one statement, so two writers racing on either backend cannot both win.
    pub async fn put_iam_policy(
        &self,
        resource: &str,
        policy: &str,
        etag: &str,
        check: Option<Option<String>>,
    ) -> Result<bool> {
        let written = with_pool!(self, |pool| {
            match &check {
            None => sqlx::query(
                "INSERT INTO iam_policies (resource, policy, etag) VALUES ($1, $2, $3) \
                 ON CONFLICT (resource) DO UPDATE SET policy = excluded.policy, etag = excluded.etag",
            )
            .bind(resource)
            .bind(policy)
            .bind(etag)
            .execute(pool)
            .await?
            .rows_affected(),
            Some(None) => sqlx::query(
                "INSERT INTO iam_policies (resource, policy, etag) VALUES ($1, $2, $3) ON CONFLICT (resource) DO NOTHING",
            )
            .bind(resource)
            .bind(policy)
            .bind(etag)
            .execute(pool)
            .await?
            .rows_affected(),
            Some(Some(expected)) => sqlx::query(
                "UPDATE iam_policies SET policy = $1, etag = $2 WHERE resource = $3 AND etag = $4",
            )
            .bind(policy)
            .bind(etag)
            .bind(resource)
            .bind(expected)
            .execute(pool)
            .await?
            .rows_affected(),
        }
        });
        Ok(written == 1)
    }
}

/// Names a revoked token to every node, delivered when the transaction commits (and not at all
/// if it rolls back): `NOTIFY` on [`AUTH_CHANNEL`] on PostgreSQL; nothing on SQLite, which has one
/// node.
trait NotifyRevoked {
    fn notify_revoked<'a>(&'a mut self, id: &'a str) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'a;
}

impl NotifyRevoked for sqlx::Transaction<'static, sqlx::Sqlite> {
    fn notify_revoked<'a>(&'a mut self, _id: &'a str) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'a {
        std::future::ready(Ok(()))
    }
}

impl NotifyRevoked for sqlx::Transaction<'static, sqlx::Postgres> {
    async fn notify_revoked<'a>(&'a mut self, id: &'a str) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT pg_notify($1, $2)").bind(AUTH_CHANNEL).bind(id).execute(&mut **self).await?;
        Ok(())
    }
}

/// What [`AuthEvents::next`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthEvent {
    /// Listening began, or began again after the connection was lost: revocations made before
    /// may not have been reported, so whatever was cached is to be forgotten.
    Listening,
    /// The token with this id was revoked (on any node, this one included).
    Revoked(String),
}

/// The revocations of every node sharing a PostgreSQL database (`LISTEN anneal_auth`), on one
/// connection of its own (not one of the pool's, so it cannot starve requests).
pub struct AuthEvents {
    options: PgConnectOptions,
    listener: Option<PgListener>,
}

impl std::fmt::Debug for AuthEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthEvents").field("listening", &self.listener.is_some()).finish()
    }
}

impl AuthEvents {
    /// Waits for the next event. Connects first when not connected (the first call, or after a
    /// failure) and then answers [`AuthEvent::Listening`]; a connection lost while waiting is
    /// replaced at once (again `Listening`). An error means it cannot (re)connect or the
    /// connection failed; the next call tries again, so the caller should wait a little first.
    pub async fn next(&mut self) -> Result<AuthEvent, StoreError> {
        loop {
            let Some(listener) = self.listener.as_mut() else {
                self.listener = Some(self.connect().await.map_err(StoreError::Unavailable)?);
                return Ok(AuthEvent::Listening);
            };
            match listener.try_recv().await {
                Ok(Some(notification)) => return Ok(AuthEvent::Revoked(notification.payload().to_owned())),
                // The connection was lost (and nothing reconnected: `eager_reconnect` is off).
                Ok(None) => self.listener = None,
                Err(e) => {
                    self.listener = None;
                    return Err(StoreError::Unavailable(e));
                }
            }
        }
    }

    /// A listener on a new one-connection pool, listening on [`AUTH_CHANNEL`]. A fresh pool each
    /// time, so a connection that listened is never handed out again.
    async fn connect(&self) -> Result<PgListener, sqlx::Error> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(self.options.clone())
            .await?;
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.eager_reconnect(false);
        listener.listen(AUTH_CHANNEL).await?;
        Ok(listener)
    }
}
