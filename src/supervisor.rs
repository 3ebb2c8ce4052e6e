//! The supervisor of a long-running command's tasks (tokio-util's `CancellationToken` and
//! `TaskTracker`, the way mini-redis's `Listener` pairs a shutdown signal with a completion
//! wait).
//!
//! - Every task gets the same token; it stops when the token is cancelled.
//! - The first task that fails (an error, a panic, or ending before shutdown was asked)
//!   cancels the token, so the others stop too, and its error becomes the process's.
//! - Shutdown waits for the tasks within a limit, then names the ones still running.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, warn};

use crate::error::{Error, Result};

/// How long a shutdown waits for the tasks (the speed layer's final checkpoint included).
pub const SHUTDOWN_LIMIT: Duration = Duration::from_secs(60);

/// Runs named tasks under one cancellation token.
#[derive(Clone, Default)]
pub struct Supervisor {
    token: CancellationToken,
    tracker: TaskTracker,
    /// The first failure, the process's error.
    failure: Arc<Mutex<Option<Error>>>,
    /// The tasks not finished yet, for the message when shutdown takes too long.
    running: Arc<Mutex<BTreeSet<&'static str>>>,
}

impl Supervisor {
    /// A supervisor with no tasks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Resolves when the tasks are asked to stop (shutdown, or a task failed).
    pub fn stopping(&self) -> impl Future<Output = ()> + Send + 'static {
        self.token.clone().cancelled_owned()
    }

    /// True once the tasks were asked to stop.
    pub fn is_stopping(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Spawns `task` under `name`. When it fails, panics, or returns before the others were
    /// asked to stop, every task is asked to stop and the failure is recorded.
    pub fn spawn<F>(&self, name: &'static str, task: F)
    where
        F: Future<Output = Result<()>> + Send + 'static,
    {
        self.lock_running().insert(name);
        let inner = tokio::spawn(task);
        let this = self.clone();
        self.tracker.spawn(async move {
            let outcome = match inner.await {
                Ok(Ok(())) if this.is_stopping() => None,
                Ok(Ok(())) => Some(Error::Internal(format!(
                    "the {name} task ended although nothing asked it to stop"
                ))),
                Ok(Err(e)) => Some(e),
                Err(e) => Some(Error::task(name, e)),
            };
            if let Some(e) = outcome {
                error!(task = name, cause = %e.report(), "task failed: stopping the others");
                this.fail(e);
            }
            this.lock_running().remove(name);
        });
    }

    /// Records `e` (when it is the first failure) and asks every task to stop.
    pub fn fail(&self, e: Error) {
        let mut f = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        f.get_or_insert(e);
        drop(f);
        self.token.cancel();
    }

    /// Waits for `shutdown` or the first failure, asks every task to stop, and waits for them
    /// up to `limit`. Returns the first failure, or an error naming the tasks still running.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()>,
        limit: Duration,
    ) -> Result<()> {
        tokio::select! {
            _ = shutdown => {}
            _ = self.token.cancelled() => {}
        }
        self.token.cancel();
        self.tracker.close();
        if tokio::time::timeout(limit, self.tracker.wait())
            .await
            .is_err()
        {
            let running: Vec<_> = self.lock_running().iter().copied().collect();
            warn!(
                ?running,
                "shutdown: tasks still running after {limit:?}; exiting without them"
            );
            if let Some(e) = self.take_failure() {
                return Err(e);
            }
            return Err(Error::Internal(format!(
                "shutdown: {} did not stop within {limit:?}",
                running.join(", ")
            )));
        }
        self.take_failure().map_or(Ok(()), Err)
    }

    fn take_failure(&self) -> Option<Error> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, BTreeSet<&'static str>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failing_task_stops_the_others_and_is_the_result() {
        let s = Supervisor::new();
        let stop = s.stopping();
        s.spawn("waits", async move {
            stop.await;
            Ok(())
        });
        s.spawn("fails", async { Err(Error::config("boom")) });
        let r = s
            .run_until(std::future::pending(), Duration::from_secs(5))
            .await;
        assert!(matches!(r, Err(Error::Config(m)) if m == "boom"));
    }

    #[tokio::test]
    async fn a_panic_is_a_task_error() {
        let s = Supervisor::new();
        s.spawn("panics", async { panic!("bug") });
        let r = s
            .run_until(std::future::pending(), Duration::from_secs(5))
            .await;
        assert!(
            matches!(r, Err(Error::Task { task: "panics", .. })),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn shutdown_stops_every_task_and_succeeds() {
        let s = Supervisor::new();
        for name in ["a", "b"] {
            let stop = s.stopping();
            s.spawn(name, async move {
                stop.await;
                Ok(())
            });
        }
        let r = s.run_until(async {}, Duration::from_secs(5)).await;
        assert!(r.is_ok(), "{r:?}");
    }

    #[tokio::test]
    async fn a_task_that_ignores_shutdown_is_named_after_the_limit() {
        let s = Supervisor::new();
        s.spawn("stubborn", std::future::pending());
        let r = s.run_until(async {}, Duration::from_millis(50)).await;
        let msg = r.unwrap_err().to_string();
        assert!(msg.contains("stubborn did not stop within"), "{msg}");
    }

    #[tokio::test]
    async fn a_task_that_ends_on_its_own_is_a_failure() {
        let s = Supervisor::new();
        let stop = s.stopping();
        s.spawn("waits", async move {
            stop.await;
            Ok(())
        });
        s.spawn("quits", async { Ok(()) });
        let r = s
            .run_until(std::future::pending(), Duration::from_secs(5))
            .await;
        assert!(r.unwrap_err().to_string().contains("the quits task ended"));
    }
}
