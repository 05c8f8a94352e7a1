//! Ownership of background work: every task Anneal starts is spawned through [`Tasks`], which
//! hands it a cancellation token derived from the server's root token and keeps it tracked, so
//! shutdown can cancel everything and wait for it to finish.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The set of background tasks of one running server.
#[derive(Clone, Debug, Default)]
pub struct Tasks {
    root: CancellationToken,
    tracker: TaskTracker,
}

impl Tasks {
    /// Creates an empty set with a fresh root token.
    pub fn new() -> Self {
        Self::default()
    }

    /// The root token: cancelled when the server begins to shut down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.root.clone()
    }

    /// Spawns `task` on the runtime. It receives a child of the root token and must return soon
    /// after that token is cancelled.
    pub fn spawn<F, Fut>(&self, name: &'static str, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let future = task(self.root.child_token());
        self.tracker.spawn(async move {
            future.await;
            tracing::debug!(task = name, "background task finished");
        });
    }

    /// Cancels every task and waits up to `grace` for all of them to finish. Returns whether they
    /// all finished in time.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.root.cancel();
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait()).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn shutdown_cancels_and_waits_for_tasks() {
        let tasks = Tasks::new();
        let finished = Arc::new(AtomicBool::new(false));
        let flag = finished.clone();
        tasks.spawn("test", move |token| async move {
            token.cancelled().await;
            flag.store(true, Ordering::SeqCst);
        });
        assert!(tasks.shutdown(Duration::from_secs(5)).await);
        assert!(finished.load(Ordering::SeqCst), "task saw the cancellation and finished");
    }

    #[tokio::test]
    async fn shutdown_reports_a_task_that_ignores_cancellation() {
        let tasks = Tasks::new();
        tasks.spawn("stubborn", |_token| async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        assert!(!tasks.shutdown(Duration::from_millis(50)).await);
    }
}
