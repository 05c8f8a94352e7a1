//! Liveness and readiness: whether the server can do its work right now.

use serde::Serialize;

use super::Control;

/// The outcome of one readiness check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Check {
    fn from_result(name: &'static str, result: Result<(), impl std::fmt::Display>) -> Self {
        match result {
            Ok(()) => Self { name, ok: true, error: None },
            Err(error) => Self { name, ok: false, error: Some(error.to_string()) },
        }
    }
}

/// All readiness checks: the database is open with every migration applied, and storage is
/// writable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub checks: Vec<Check>,
    /// This node's name.
    pub node: String,
    /// The live nodes sharing the database (their names), when it answers.
    pub nodes: Vec<String>,
}

impl Control {
    /// Runs the readiness checks.
    pub async fn readiness(&self) -> Readiness {
        let database = Check::from_result("database", self.store.check_ready().await);
        let storage = self.storage.clone();
        let storage = match tokio::task::spawn_blocking(move || storage.check_writable()).await {
            Ok(result) => Check::from_result("storage", result),
            Err(e) => Check::from_result("storage", Err(format!("storage check did not finish: {e}"))),
        };
        let checks = vec![database, storage];
        let nodes = match self.store.live_nodes(chrono::Utc::now()).await {
            Ok(nodes) => nodes.into_iter().map(|n| n.node).collect(),
            Err(_) => Vec::new(),
        };
        Readiness { ready: checks.iter().all(|c| c.ok), checks, node: self.node.id.to_string(), nodes }
    }
}
