//! SQL for identity and audit: API tokens (hashes only), console sessions, the audit log and
//! stored IAM policies.

use chrono::{DateTime, Utc};

use super::{now_text, parse_time, with_pool, BeginWrite, Store};
use crate::auth::{ProjectScope, Role};
use crate::error::{Error, Result};

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
            tx.commit().await?;
            done
        });
        Ok(done == 1)
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
