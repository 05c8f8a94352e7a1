//! SQL for identity and audit: API tokens (hashes only), console sessions, the audit log and
//! stored IAM policies.

use chrono::{DateTime, Utc};

use super::{now_text, parse_time, Store};
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

impl Store {
    /// Stores a new token.
    pub async fn insert_token(&self, token: NewToken<'_>) -> Result<TokenRecord> {
        let projects = match token.projects {
            ProjectScope::All => None,
            ProjectScope::Only(list) => Some(serde_json::to_string(list).map_err(Error::internal)?),
        };
        sqlx::query(
            "INSERT INTO api_tokens (token_id, name, secret_hash, role, projects, created_by, create_time) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(token.id)
        .bind(token.name)
        .bind(token.secret_hash)
        .bind(token.role.as_str())
        .bind(projects)
        .bind(token.created_by)
        .bind(now_text())
        .execute(&self.pool)
        .await?;
        self.token(token.id).await?.ok_or_else(|| Error::internal("a token just stored is missing"))
    }

    /// The token with this public id, revoked or not.
    pub async fn token(&self, id: &str) -> Result<Option<TokenRecord>> {
        let row: Option<TokenRow> =
            sqlx::query_as(
                "SELECT token_id, name, secret_hash, role, projects, created_by, create_time, revoke_time \
                 FROM api_tokens WHERE token_id = ?",
            )
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(token_from_row).transpose()
    }

    /// Every token, oldest first.
    pub async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        let rows: Vec<TokenRow> =
            sqlx::query_as(
                "SELECT token_id, name, secret_hash, role, projects, created_by, create_time, revoke_time \
                 FROM api_tokens ORDER BY create_time, token_id",
            )
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter().map(token_from_row).collect()
    }

    /// How many tokens were ever made (revoked ones included).
    pub async fn count_tokens(&self) -> Result<i64> {
        let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM api_tokens").fetch_one(&self.pool).await?;
        Ok(count)
    }

    /// Marks a token revoked and ends its console sessions, in one transaction. Returns false
    /// when no unrevoked token has this id.
    pub async fn revoke_token(&self, id: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("UPDATE api_tokens SET revoke_time = ? WHERE token_id = ? AND revoke_time IS NULL")
            .bind(now_text())
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM console_sessions WHERE token_id = ?").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(done == 1)
    }

    /// Stores a console session (by the hash of its secret) for a token.
    pub async fn insert_session(&self, session_hash: &str, token_id: &str, expires: DateTime<Utc>) -> Result<()> {
        sqlx::query("INSERT INTO console_sessions (session_hash, token_id, create_time, expire_time) VALUES (?, ?, ?, ?)")
            .bind(session_hash)
            .bind(token_id)
            .bind(now_text())
            .bind(expires.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The token id and expiry of a session, if it exists.
    pub async fn session(&self, session_hash: &str) -> Result<Option<(String, DateTime<Utc>)>> {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT token_id, expire_time FROM console_sessions WHERE session_hash = ?")
                .bind(session_hash)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|(token, expires)| Ok((token, parse_time(&expires)?))).transpose()
    }

    /// Ends a session (and every expired one).
    pub async fn delete_session(&self, session_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM console_sessions WHERE session_hash = ? OR expire_time < ?")
            .bind(session_hash)
            .bind(now_text())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Appends one entry to the audit log.
    pub async fn append_audit(&self, entry: NewAudit<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit_log (time, actor, method, path, project, status, outcome) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(now_text())
        .bind(entry.actor)
        .bind(entry.method)
        .bind(entry.path)
        .bind(entry.project)
        .bind(i64::from(entry.status))
        .bind(entry.outcome)
        .execute(&self.pool)
        .await?;
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
        let rows: Vec<(i64, String, String, String, String, Option<String>, i64, String)> =
            query.build_query_as().fetch_all(&self.pool).await?;
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
        Ok(sqlx::query_as("SELECT policy, etag FROM iam_policies WHERE resource = ?")
            .bind(resource)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Stores a resource's IAM policy. With `check`, only if the stored policy's etag is still
    /// `Some(etag)`, or there is still none (`None`); returns false when that changed.
    pub async fn put_iam_policy(
        &self,
        resource: &str,
        policy: &str,
        etag: &str,
        check: Option<Option<String>>,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let current: Option<(String,)> = sqlx::query_as("SELECT etag FROM iam_policies WHERE resource = ?")
            .bind(resource)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(expected) = check {
            if current.map(|(etag,)| etag) != expected {
                return Ok(false);
            }
        }
        sqlx::query(
            "INSERT INTO iam_policies (resource, policy, etag) VALUES (?, ?, ?) \
             ON CONFLICT (resource) DO UPDATE SET policy = excluded.policy, etag = excluded.etag",
        )
        .bind(resource)
        .bind(policy)
        .bind(etag)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}
