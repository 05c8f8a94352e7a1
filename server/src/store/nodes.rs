//! SQL for several nodes on one database: each node's heartbeat row, the claim (and lease) a node
//! holds on the jobs it runs, the sweep of claims that lapsed, and singleton leases with a fencing
//! token. Times are stored as RFC 3339 UTC text with milliseconds ([`super::now_text`]), which
//! orders as text, so lease comparisons are plain string comparisons on both backends.

use chrono::{DateTime, Utc};

use super::{parse_time, with_pool, Store};
use crate::error::Result;
use crate::names::JobName;

/// A node's row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRecord {
    pub node: String,
    /// Where it listens (`host:port`).
    pub address: String,
    /// The Anneal version it runs.
    pub version: String,
    pub start_time: DateTime<Utc>,
    pub heartbeat: DateTime<Utc>,
    /// It is live until then.
    pub lease_until: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct NodeRow {
    node_id: String,
    address: String,
    version: String,
    start_time: String,
    heartbeat: String,
    lease_until: String,
}

impl TryFrom<NodeRow> for NodeRecord {
    type Error = crate::Error;
    fn try_from(row: NodeRow) -> Result<Self> {
        Ok(Self {
            start_time: parse_time(&row.start_time)?,
            heartbeat: parse_time(&row.heartbeat)?,
            lease_until: parse_time(&row.lease_until)?,
            node: row.node_id,
            address: row.address,
            version: row.version,
        })
    }
}

/// A job whose node's claim lapsed.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct LapsedJob {
    pub project_id: String,
    pub job_id: String,
    pub node_id: String,
    pub state: String,
}

/// A time as stored.
pub fn stored(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// States in which a job is held by a node.
const HELD: &str = "'PREPARING', 'RUNNING', 'CANCELLING'";

impl Store {
    /// Records that `node` is live until `until` (creating its row on the first beat).
    pub async fn heartbeat(&self, node: &NodeRecord) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO nodes (node_id, address, version, start_time, heartbeat, lease_until) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (node_id) DO UPDATE SET address = excluded.address, \
                 version = excluded.version, start_time = excluded.start_time, heartbeat = excluded.heartbeat, \
                 lease_until = excluded.lease_until",
            )
            .bind(&node.node)
            .bind(&node.address)
            .bind(&node.version)
            .bind(stored(node.start_time))
            .bind(stored(node.heartbeat))
            .bind(stored(node.lease_until))
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Marks `node` gone now (a node that stops cleanly).
    pub async fn leave(&self, node: &str, now: DateTime<Utc>) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query("UPDATE nodes SET lease_until = $1 WHERE node_id = $2")
                .bind(stored(now))
                .bind(node)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Nodes whose lease runs past `now`, by name.
    pub async fn live_nodes(&self, now: DateTime<Utc>) -> Result<Vec<NodeRecord>> {
        let rows: Vec<NodeRow> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT node_id, address, version, start_time, heartbeat, lease_until FROM nodes \
                 WHERE lease_until > $1 ORDER BY node_id",
            )
            .bind(stored(now))
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(NodeRecord::try_from).collect()
    }

    /// The node's row, live or not.
    pub async fn get_node(&self, node: &str) -> Result<Option<NodeRecord>> {
        let row: Option<NodeRow> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT node_id, address, version, start_time, heartbeat, lease_until FROM nodes WHERE node_id = $1",
            )
            .bind(node)
            .fetch_optional(pool)
            .await?
        });
        row.map(NodeRecord::try_from).transpose()
    }

    /// Claims a QUEUED job for `node` (→ PREPARING) until `until`. Exactly one claim of a job
    /// succeeds, whatever the number of nodes: the row's state is compared and set in one
    /// statement. Returns whether this one did.
    pub async fn claim_job(&self, name: &JobName, node: &str, until: DateTime<Utc>) -> Result<bool> {
        let claimed = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE jobs SET state = 'PREPARING', node_id = $1, lease_until = $2, revision = revision + 1 \
                 WHERE project_id = $3 AND job_id = $4 AND state = 'QUEUED'",
            )
            .bind(node)
            .bind(stored(until))
            .bind(name.project.as_str())
            .bind(&name.job)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(claimed == 1)
    }

    /// Extends `node`'s claims on every job it holds to `until`.
    pub async fn renew_claims(&self, node: &str, until: DateTime<Utc>) -> Result<u64> {
        let renewed = with_pool!(self, |pool| {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE jobs SET lease_until = $1 WHERE node_id = $2 AND state IN ({HELD})"
            )))
            .bind(stored(until))
            .bind(node)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(renewed)
    }

    /// Jobs `node` holds that a cancel (sent to any node) set CANCELLING.
    pub async fn cancelling_jobs_of(&self, node: &str) -> Result<Vec<JobName>> {
        let rows: Vec<(String, String)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT project_id, job_id FROM jobs WHERE state = 'CANCELLING' AND node_id = $1 ORDER BY project_id, job_id",
            )
            .bind(node)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(|(project, job)| JobName::new("name", &project, &job)).collect()
    }

    /// Jobs held by a node other than `node` whose claim lapsed before `now`.
    pub async fn lapsed_jobs(&self, node: &str, now: DateTime<Utc>) -> Result<Vec<LapsedJob>> {
        let rows: Vec<LapsedJob> = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT project_id, job_id, node_id, state FROM jobs WHERE state IN ({HELD}) \
                 AND node_id IS NOT NULL AND node_id <> $1 AND lease_until < $2 ORDER BY project_id, job_id"
            )))
            .bind(node)
            .bind(stored(now))
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// Jobs `node` held (or that no node claimed: stored before nodes existed) and that are still
    /// PREPARING, RUNNING or CANCELLING: what a restarted node left mid-way.
    pub async fn unfinished_jobs_of(&self, node: &str) -> Result<Vec<JobName>> {
        let rows: Vec<(String, String)> = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT project_id, job_id FROM jobs WHERE state IN ({HELD}) AND (node_id = $1 OR node_id IS NULL) \
                 ORDER BY project_id, job_id"
            )))
            .bind(node)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(|(project, job)| JobName::new("name", &project, &job)).collect()
    }

    /// Takes or keeps the singleton lease `name` for `holder` until `until`, when it is free, has
    /// lapsed before `now`, or is `holder`'s already. Returns its fencing token (it grows each
    /// time the lease changes hands), or `None` when another holder has it.
    pub async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<i64>> {
        let token: Option<(i64,)> = with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO leases (name, holder, token, lease_until) VALUES ($1, $2, 1, $3) \
                 ON CONFLICT (name) DO UPDATE SET \
                 token = CASE WHEN leases.holder = excluded.holder THEN leases.token ELSE leases.token + 1 END, \
                 holder = excluded.holder, lease_until = excluded.lease_until \
                 WHERE leases.holder = excluded.holder OR leases.lease_until < $4",
            )
            .bind(name)
            .bind(holder)
            .bind(stored(until))
            .bind(stored(now))
            .execute(pool)
            .await?;
            sqlx::query_as("SELECT token FROM leases WHERE name = $1 AND holder = $2")
                .bind(name)
                .bind(holder)
                .fetch_optional(pool)
                .await?
        });
        Ok(token.map(|(t,)| t))
    }
}
