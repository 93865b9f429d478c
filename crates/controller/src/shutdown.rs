//! Graceful shutdown: the signal that starts it, the token every task
//! watches, and the drain that waits for running work within a budget.
//!
//! ```text
//! SIGTERM / Ctrl-C ──signal()──▶ Shutdown::trigger ──▶ tasks see cancelled()
//!                                                    ──▶ HTTP server stops
//! main ──drain(tasks, deadline)──▶ finished / panicked / abandoned (aborted)
//! ```
//!
//! Kubernetes sends SIGTERM and kills the pod after
//! `terminationGracePeriodSeconds` (30 s by default), so the whole shutdown,
//! lease release included, has [`BUDGET`] to finish.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Time the process has from SIGTERM until it must have exited.
pub const BUDGET: Duration = Duration::from_secs(30);

/// Resolves on the first SIGTERM (Unix) or Ctrl-C.
///
/// The SIGTERM handler is installed when this function is called, not when
/// the future is first polled, so a signal that arrives in between is not
/// lost. When a handler cannot be installed the error is logged and that
/// source never fires.
pub fn signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .inspect_err(|e| tracing::warn!(error = %e, "cannot listen for SIGTERM"))
        .ok();
    async move {
        let ctrl_c = async {
            if let Err(e) = tokio::signal::ctrl_c().await {
                tracing::warn!(error = %e, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
        };
        #[cfg(unix)]
        let term = async move {
            match term {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            () = ctrl_c => tracing::info!("Ctrl-C received, shutting down"),
            () = term => tracing::info!("SIGTERM received, shutting down"),
        }
    }
}

/// A shutdown switch shared by every task. Clones share one state.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// A switch that has not been triggered.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Starts shutdown; idempotent.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Whether shutdown has started.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once shutdown has started (at once if it already has). The
    /// future owns a handle, so it can be handed to `serve` or spawned.
    pub fn cancelled(&self) -> impl Future<Output = ()> + Send + 'static {
        self.token.clone().cancelled_owned()
    }

    /// The underlying token, for APIs that take one.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }
}

/// What [`drain`] saw, each list in the order the tasks were given.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Drained {
    /// Tasks that returned before the deadline.
    pub finished: Vec<String>,
    /// Tasks that panicked or were cancelled before the deadline.
    pub failed: Vec<String>,
    /// Tasks still running at the deadline; they have been aborted.
    pub abandoned: Vec<String>,
}

impl Drained {
    /// Every task ended on its own.
    pub fn is_clean(&self) -> bool {
        self.failed.is_empty() && self.abandoned.is_empty()
    }
}

/// Waits for `tasks` until `deadline`, aborts those still running and
/// reports which ended and which were abandoned. Pass one deadline computed
/// from [`BUDGET`] to every shutdown step so they share the budget.
pub async fn drain<T>(
    tasks: impl IntoIterator<Item = (String, JoinHandle<T>)>,
    deadline: Instant,
) -> Drained
where
    T: Send + 'static,
{
    let tasks: Vec<(String, JoinHandle<T>)> = tasks.into_iter().collect();
    let names: Vec<String> = tasks.iter().map(|(n, _)| n.clone()).collect();
    let aborts: Vec<_> = tasks.iter().map(|(_, h)| h.abort_handle()).collect();
    let mut outcome: Vec<Option<bool>> = vec![None; tasks.len()];
    let mut pending: FuturesUnordered<_> = tasks
        .into_iter()
        .enumerate()
        .map(|(i, (_, h))| async move { (i, h.await.is_ok()) })
        .collect();
    let sleep = tokio::time::sleep_until(deadline);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            next = pending.next() => match next {
                Some((i, ok)) => outcome[i] = Some(ok),
                None => break,
            },
            () = &mut sleep => break,
        }
    }
    let mut out = Drained::default();
    for (i, name) in names.into_iter().enumerate() {
        match outcome[i] {
            Some(true) => out.finished.push(name),
            Some(false) => out.failed.push(name),
            None => {
                aborts[i].abort();
                tracing::warn!(task = %name, "task still running at the shutdown deadline, abandoned");
                out.abandoned.push(name);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn trigger_wakes_waiters_and_is_sticky() {
        let s = Shutdown::new();
        assert!(!s.is_triggered());
        let waiter = tokio::spawn(s.cancelled());
        s.clone().trigger();
        waiter.await.unwrap();
        assert!(s.is_triggered());
        // Already triggered: resolves at once.
        s.cancelled().await;
    }

    #[tokio::test(start_paused = true)]
    async fn drain_reports_finished_failed_and_abandoned() {
        let s = Shutdown::new();
        let quick = {
            let s = s.clone();
            tokio::spawn(async move { s.cancelled().await })
        };
        let slow = tokio::spawn(async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
        let panics = tokio::spawn(async { panic!("boom") });
        s.trigger();
        let started = Instant::now();
        let out = drain(
            [
                ("quick".to_string(), quick),
                ("slow".to_string(), slow),
                ("panics".to_string(), panics),
            ],
            started + Duration::from_secs(5),
        )
        .await;
        assert_eq!(out.finished, ["quick"]);
        assert_eq!(out.failed, ["panics"]);
        assert_eq!(out.abandoned, ["slow"]);
        assert!(!out.is_clean());
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn drain_returns_as_soon_as_all_tasks_end() {
        let t = tokio::spawn(async { tokio::time::sleep(Duration::from_secs(2)).await });
        let started = Instant::now();
        let out = drain([("t".to_string(), t)], started + BUDGET).await;
        assert!(out.is_clean());
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test]
    async fn abandoned_tasks_are_aborted() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let t = tokio::spawn(async move {
            let _keep = tx;
            std::future::pending::<()>().await;
        });
        let out = drain([("stuck".to_string(), t)], Instant::now()).await;
        assert_eq!(out.abandoned, ["stuck"]);
        // The sender is dropped once the aborted task is torn down.
        assert!(rx.await.is_err());
    }
}
