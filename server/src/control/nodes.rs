//! Several Anneal nodes on one database. Each node has a name ([`NodeId`]: configured, or made
//! at its first start and kept in `<data dir>/node-id`) and a heartbeat row renewed every third of
//! `node_lease_secs`; a node claims the jobs it starts (`store::claim_job`) and renews those
//! claims with its heartbeat. The node holding the `sweep` lease (a singleton duty with a fencing
//! token, taken over when its holder stops renewing) ends jobs whose node's claim lapsed: FAILED
//! naming the lost node (CANCELLED when a cancel was under way), so a job of a node that died ends
//! within two lease periods. On PostgreSQL every node also follows the versions table every
//! [`VERSION_SYNC_EVERY`], loading READY versions it does not serve and dropping versions that
//! are gone, so a version deployed or deleted on one node is served (or not) by all.
//!
//! A cancel sent to any node sets the job CANCELLING in the database; the node that runs it sees
//! that at its next heartbeat (every third of the lease) and stops the replicas.
//!
//! **Self-fencing.** A node that cannot renew its heartbeat stops its own replicas before any
//! other node may declare them lost: its claims run out `node_lease_secs` after its last renewal
//! (and the sweep ends the jobs only then), and it stops every job it runs once
//! [`Node::fence_after`] has passed without a renewal, that is `node_lease_secs` −
//! `kill_grace_secs` − [`FENCE_MARGIN`] (at least two thirds of the lease). The replicas get
//! their grace and are gone before the claim lapses when the lease is long enough
//! ([`Node::fences_in_time`]; a node started with a shorter one warns).
//!
//! **One name, one node.** A node whose name belongs to another live node (a copied data dir, a
//! repeated `node_id`) refuses to start: on a shared database it watches the row's heartbeat for
//! a third of the lease and more, and a heartbeat that moves is another node's.
//!
//! Polling is the correctness path: nothing relies on a notification arriving.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::Control;
use crate::error::{Error, Result};
use crate::names::{JobName, NodeId, VersionName};
use crate::store::{Backend, LapsedJob, NodeRecord, VersionState};

/// How often a node looks for versions to load or drop (on a shared database).
pub const VERSION_SYNC_EVERY: Duration = Duration::from_secs(2);

/// How long a node waits before it tries again to load a version that failed to load here.
const LOAD_RETRY: Duration = Duration::from_secs(30);

/// The singleton duty of ending jobs whose node was lost.
const SWEEP_LEASE: &str = "sweep";

/// How long before its claims lapse a fenced node's replicas are gone at the latest (a confined
/// replica's launcher gets a second past the kill grace, then SIGKILL; one more for safety).
pub const FENCE_MARGIN: Duration = Duration::from_secs(2);

/// This node.
#[derive(Debug)]
pub struct Node {
    pub id: NodeId,
    /// How long a claim or heartbeat holds without renewal.
    pub lease: Duration,
    start_time: DateTime<Utc>,
    address: Mutex<String>,
    /// Versions that failed to load on this node, and when.
    failed_loads: Mutex<HashMap<String, Instant>>,
    /// How long a stopped replica has before SIGKILL (`kill_grace_secs`).
    kill_grace: Duration,
    /// When this node last renewed its heartbeat and claims.
    renewed: Mutex<Instant>,
}

impl Node {
    /// This node, named `configured` or by the name kept in `data_dir` (made on the first start).
    pub fn open(configured: Option<&str>, data_dir: &Path, lease: Duration) -> Result<Self> {
        let id = match configured {
            Some(name) => NodeId::parse("node_id", name)?,
            None => kept_id(data_dir)?,
        };
        Ok(Self {
            id,
            lease: lease.max(Duration::from_secs(1)),
            start_time: Utc::now(),
            address: Mutex::new(String::new()),
            failed_loads: Mutex::default(),
            kill_grace: Duration::ZERO,
            renewed: Mutex::new(Instant::now()),
        })
    }

    /// Sets the grace a stopped replica has, which [`Node::fence_after`] leaves room for.
    pub fn with_kill_grace(mut self, grace: Duration) -> Self {
        self.kill_grace = grace;
        self
    }

    /// How long this node runs its replicas without renewing its claims before it stops them:
    /// the lease less the kill grace and [`FENCE_MARGIN`], and at least two thirds of the lease (a
    /// heartbeat comes every third of it, so one missed or slow heartbeat is not taken for a lost
    /// database).
    pub fn fence_after(&self) -> Duration {
        self.lease.saturating_sub(self.kill_grace + FENCE_MARGIN).max(self.lease * 2 / 3)
    }

    /// Whether self-fencing stops the replicas before the claims lapse: the lease is at least
    /// three times the kill grace and [`FENCE_MARGIN`].
    pub fn fences_in_time(&self) -> bool {
        self.lease >= 3 * (self.kill_grace + FENCE_MARGIN)
    }

    /// Records where this node listens (shown to the other nodes).
    pub fn set_address(&self, address: impl Into<String>) {
        *super::lock(&self.address) = address.into();
    }

    fn until(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::seconds(10))
    }
}

/// The node name kept in `<data dir>/node-id`, made and written on the first start.
fn kept_id(data_dir: &Path) -> Result<NodeId> {
    let file = data_dir.join("node-id");
    match std::fs::read_to_string(&file) {
        Ok(text) => NodeId::parse("node_id", text.trim()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = NodeId::generate();
            std::fs::write(&file, format!("{id}\n"))
                .map_err(|e| Error::internal(format!("cannot write {}: {e}", file.display())))?;
            Ok(id)
        }
        Err(e) => Err(Error::internal(format!("cannot read {}: {e}", file.display()))),
    }
}

/// A live node as `GET /v1/nodes` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    pub name: String,
    pub address: String,
    pub version: String,
    pub start_time: String,
    pub heartbeat_time: String,
    /// It counts as lost after this time without a heartbeat.
    pub lease_expire_time: String,
    /// Whether it is the node that answered.
    pub this_node: bool,
}

impl Control {
    /// This node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Makes this node known (its first heartbeat) and starts its heartbeat, claim renewal, the
    /// sweep of lost nodes' jobs and (on a shared database) version following.
    pub async fn start_node(&self) -> Result<()> {
        self.refuse_duplicate().await?;
        if self.store.backend() == Backend::Postgres && !self.node.fences_in_time() {
            tracing::warn!(
                node_lease_secs = self.node.lease.as_secs(),
                kill_grace_secs = self.node.kill_grace.as_secs(),
                "node_lease_secs is less than three times kill_grace_secs + 2: a node cut off from the database may still be stopping its replicas when another node declares them lost"
            );
        }
        self.beat().await?;
        let control = self.clone();
        self.tasks.spawn("node-heartbeat", move |token| async move { control.node_loop(token).await });
        if self.store.backend() == Backend::Postgres {
            let control = self.clone();
            self.tasks.spawn("version-sync", move |token| async move { control.version_loop(token).await });
        }
        Ok(())
    }

    /// The live nodes, this one included.
    pub async fn live_nodes(&self) -> Result<Vec<NodeView>> {
        let nodes = self.store.live_nodes(Utc::now()).await?;
        Ok(nodes
            .into_iter()
            .map(|n| NodeView {
                this_node: n.node == self.node.id.as_str(),
                name: n.node,
                address: n.address,
                version: n.version,
                start_time: crate::store::stored_time(n.start_time),
                heartbeat_time: crate::store::stored_time(n.heartbeat),
                lease_expire_time: crate::store::stored_time(n.lease_until),
            })
            .collect())
    }

    async fn node_loop(&self, token: CancellationToken) {
        let every = self.node.lease / 3;
        let fencing = self.clone();
        let fence = tokio::spawn(async move { fencing.fence_loop().await });
        loop {
            tokio::select! {
                () = token.cancelled() => break,
                () = tokio::time::sleep(every) => {}
            }
            // A database that does not answer must not hold the loop past a heartbeat.
            match tokio::time::timeout(every.max(Duration::from_secs(1)), self.beat()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(node = %self.node.id, error = %e, "cannot renew this node's heartbeat and claims")
                }
                Err(_) => tracing::warn!(node = %self.node.id, "renewing this node's heartbeat and claims timed out"),
            }
            if let Err(e) = self.stop_cancelled().await {
                tracing::warn!(node = %self.node.id, error = %e, "cannot read the cancels sent to other nodes");
            }
            if let Err(e) = self.sweep().await {
                tracing::warn!(node = %self.node.id, error = %e, "cannot end the jobs of lost nodes");
            }
        }
        fence.abort();
        // Stopping cleanly: the other nodes see this one gone at once.
        if let Err(e) = self.store.leave(self.node.id.as_str(), Utc::now()).await {
            tracing::warn!(node = %self.node.id, error = %e, "cannot mark this node gone");
        }
    }

    /// Stops every job this node runs whenever [`Node::fence_after`] passes without a renewal
    /// (self-fencing), checking four times a second. The jobs end FAILED saying why, by this node
    /// once the database answers again or by the node that sweeps its lapsed claims.
    async fn fence_loop(&self) {
        let mut fenced = false;
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let silent = super::lock(&self.node.renewed).elapsed();
            if silent < self.node.fence_after() {
                fenced = false;
                continue;
            }
            let running = self.executor.running_jobs();
            if running.is_empty() {
                continue;
            }
            let reason = format!(
                "Node {} could not renew its lease in the database for {} s and stopped the job's replicas \
                 before another node could take its claim (self-fencing); submit the job again.",
                self.node.id,
                silent.as_secs()
            );
            for job in &running {
                if !fenced {
                    tracing::error!(
                        job.name = %job,
                        node = %self.node.id,
                        silent_secs = silent.as_secs(),
                        "cannot renew this node's lease: stopping the job (self-fencing)"
                    );
                }
                self.fence_job(job, &reason);
                self.executor.cancel(job);
            }
            fenced = true;
        }
    }

    /// Records that `job` is being stopped by self-fencing: it ends FAILED with `reason`.
    fn fence_job(&self, job: &JobName, reason: &str) {
        super::lock(&self.fenced).entry(job.to_string()).or_insert_with(|| reason.to_owned());
    }

    /// The message a job stopped by self-fencing ends with, taken once.
    pub(super) fn fenced_reason(&self, job: &JobName) -> Option<String> {
        super::lock(&self.fenced).remove(&job.to_string())
    }

    /// Stops the jobs of this node that a cancel on another node set CANCELLING.
    async fn stop_cancelled(&self) -> Result<()> {
        for job in self.store.cancelling_jobs_of(self.node.id.as_str()).await? {
            self.executor.cancel(&job);
        }
        Ok(())
    }

    /// Refuses to start when another live node has this node's name: a row with a lease still
    /// running whose heartbeat moves while this node watches it for a heartbeat period and more.
    /// (A row left by this node's own previous, crashed run does not move.) On SQLite there is
    /// one node, and nothing to watch.
    async fn refuse_duplicate(&self) -> Result<()> {
        if self.store.backend() != Backend::Postgres {
            return Ok(());
        }
        let Some(first) = self.store.get_node(self.node.id.as_str()).await? else { return Ok(()) };
        if first.lease_until <= Utc::now() {
            return Ok(());
        }
        tokio::time::sleep(self.node.lease / 3 + Duration::from_millis(500)).await;
        let Some(again) = self.store.get_node(self.node.id.as_str()).await? else { return Ok(()) };
        if again.heartbeat != first.heartbeat {
            return Err(Error::FailedPrecondition(format!(
                "node id '{}' belongs to another live node (at {}, heartbeat {}): give this node another node_id, or \
                 remove node-id from its data dir if the data dir was copied from that node",
                self.node.id,
                again.address,
                crate::store::stored_time(again.heartbeat)
            )));
        }
        Ok(())
    }

    /// Renews this node's heartbeat and its claims on the jobs it runs.
    async fn beat(&self) -> Result<()> {
        let started = Instant::now();
        let now = Utc::now();
        let until = self.node.until(now);
        let record = NodeRecord {
            node: self.node.id.to_string(),
            address: super::lock(&self.node.address).clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            start_time: self.node.start_time,
            heartbeat: now,
            lease_until: until,
        };
        self.store.heartbeat(&record).await?;
        self.store.renew_claims(self.node.id.as_str(), until).await?;
        // The claims hold for a lease from `now`, taken before the writes.
        *super::lock(&self.node.renewed) = started;
        Ok(())
    }

    /// Ends the jobs of nodes that stopped renewing their claims, when this node holds the sweep.
    async fn sweep(&self) -> Result<()> {
        let now = Utc::now();
        let lease = self.store.acquire_lease(SWEEP_LEASE, self.node.id.as_str(), now, self.node.until(now)).await?;
        if lease.is_none() {
            return Ok(());
        }
        for lapsed in self.store.lapsed_jobs(self.node.id.as_str(), now).await? {
            self.end_lapsed(&lapsed).await?;
        }
        let orphans = self.store.creations_of_lost_nodes(self.node.id.as_str(), now).await?;
        self.fail_creations(orphans, "The node creating the version was lost").await
    }

    async fn end_lapsed(&self, lapsed: &LapsedJob) -> Result<()> {
        let name = JobName::new("name", &lapsed.project_id, &lapsed.job_id)?;
        let last = match self.store.get_node(&lapsed.node_id).await? {
            Some(node) => format!("its last heartbeat was at {}", crate::store::stored_time(node.heartbeat)),
            None => "it never sent a heartbeat".to_owned(),
        };
        let Some(state) = crate::jobs::JobState::parse(&lapsed.state) else { return Ok(()) };
        let (to, message) = if state == crate::jobs::JobState::Cancelling {
            (
                crate::jobs::JobState::Cancelled,
                format!("Cancelled by request; node {} that ran the job was lost ({last}).", lapsed.node_id),
            )
        } else {
            (
                crate::jobs::JobState::Failed,
                format!(
                    "Node {} that ran the job was lost ({last}); its replicas went with it. Submit the job again.",
                    lapsed.node_id
                ),
            )
        };
        if self.store.transition_job(&name, &[state], to, Some(&message)).await? {
            tracing::warn!(job.name = %name, node = %lapsed.node_id, "ended a job of a lost node");
        }
        Ok(())
    }

    async fn version_loop(&self, token: CancellationToken) {
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                () = tokio::time::sleep(VERSION_SYNC_EVERY) => {}
            }
            if let Err(e) = self.sync_versions().await {
                tracing::warn!(error = %e, "cannot follow the versions of the shared database");
            }
        }
    }

    /// Loads READY versions this node does not serve, and drops served versions that are neither
    /// READY nor being created any more.
    async fn sync_versions(&self) -> Result<()> {
        // In this order: a version served now was stored CREATING before, and one that turns
        // READY between the two reads is in the second.
        let served = self.host.keys();
        let creating = self.store.versions_in_state(VersionState::Creating).await?;
        let ready = self.store.versions_in_state(VersionState::Ready).await?;
        let mut keep = std::collections::HashSet::new();
        for version in ready.iter().chain(&creating) {
            keep.insert(VersionName::new("name", &version.project, &version.model, &version.version)?.to_string());
        }
        for key in served {
            if !keep.contains(&key) {
                self.host.unload(&key);
                tracing::info!(version.name = %key, "stopped serving a version that is gone");
            }
        }
        for version in ready {
            let name = VersionName::new("name", &version.project, &version.model, &version.version)?;
            let key = name.to_string();
            let retry_later =
                super::lock(&self.node.failed_loads).get(&key).is_some_and(|at| at.elapsed() < LOAD_RETRY);
            if self.host.get(&key).is_some() || retry_later {
                continue;
            }
            let Some(dir) = &version.artifact_dir else { continue };
            // Published in a bucket, the files are fetched first (no shared disk needed).
            let loaded = match self.storage.local_copy(dir).await {
                Ok(dir) => self.host.load(&key, &dir, super::versions::settings(&version)).await.map_err(Error::from),
                Err(e) => Err(Error::from(e)),
            };
            match loaded {
                Ok(_) => {
                    super::lock(&self.node.failed_loads).remove(&key);
                    tracing::info!(version.name = %key, "serving a version another node deployed");
                }
                Err(e) => {
                    super::lock(&self.node.failed_loads).insert(key.clone(), Instant::now());
                    tracing::warn!(version.name = %key, error = %e, "cannot load a version another node deployed");
                }
            }
        }
        Ok(())
    }
}
