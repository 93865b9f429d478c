//! Leader election over a `coordination.k8s.io/v1` Lease, so that of several
//! controller replicas exactly one runs backups, prunes and restores.
//!
//! ```text
//! Leadership::start ──▶ task: loop { LeaseManager::changed() } ──▶ watch<bool>
//!                            │ API error while leader: step down, release
//!                            ▼
//! Leadership::release ──▶ publish false, free the Lease (a standby takes
//!                         over at its next check, within one lease duration)
//! ```
//!
//! kube-lease-manager does the Lease protocol: the holder renews
//! `renewTime` a grace period before the lease expires; candidates sleep
//! until it expires, then clear it and take it with a server-side apply of
//! `holderIdentity`, which the API server lets only one of them win.
//!
//! The API calls it makes (and so the RBAC the controller needs), all on
//! `leases` in group `coordination.k8s.io`, in the lease's namespace:
//! `get`, `create` (only when the Lease does not exist yet) and `patch`
//! (server-side apply and strategic merge).
//!
//! On doubt this module steps down: any API error while leading publishes
//! `false` and gives the lease up, so a replica cut off from the API server
//! stops writing before another one takes over. The caller stops its work
//! on `false` and competes again automatically.

use std::time::Duration;

use anyhow::{Context as _, bail};
use kube_lease_manager::{LeaseCreateMode, LeaseManager, LeaseParams};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::metrics::Metrics;

/// Default Lease name.
pub const DEFAULT_LEASE_NAME: &str = "lifeboat-controller";
/// Default lease duration, as Kubernetes' own controllers use.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(15);
/// How long [`Leadership::release`] waits for the API server.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and as whom to take the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderConfig {
    /// Namespace of the Lease (the controller's own).
    pub namespace: String,
    /// Name of the Lease; [`DEFAULT_LEASE_NAME`] by default.
    pub lease_name: String,
    /// This replica's identity, unique among replicas: the pod name.
    pub identity: String,
    /// How long a lease lasts without renewal; whole seconds, at least 2.
    pub duration: Duration,
}

impl LeaderConfig {
    /// The default lease name and duration.
    pub fn new(namespace: impl Into<String>, identity: impl Into<String>) -> LeaderConfig {
        LeaderConfig {
            namespace: namespace.into(),
            lease_name: DEFAULT_LEASE_NAME.to_string(),
            identity: identity.into(),
            duration: DEFAULT_DURATION,
        }
    }

    /// Lease duration and renewal margin in whole seconds: the holder
    /// renews `grace` seconds before expiry, a third of the duration.
    fn seconds(&self) -> anyhow::Result<(u64, u64)> {
        let secs = self.duration.as_secs() + u64::from(self.duration.subsec_nanos() > 0);
        if secs < 2 {
            bail!(
                "lease duration must be at least 2s, got {:?}",
                self.duration
            );
        }
        Ok((secs, (secs / 3).max(1)))
    }
}

/// This replica's part in the election. Dropping it releases the lease in
/// the background; [`Leadership::release`] does so and waits.
#[derive(Debug)]
pub struct Leadership {
    identity: String,
    rx: watch::Receiver<bool>,
    stop: DropGuard,
    task: JoinHandle<()>,
}

impl Leadership {
    /// Creates the Lease if needed and starts competing for it in a
    /// spawned task. Fails when the Lease cannot be read or created.
    pub async fn start(client: kube::Client, config: LeaderConfig) -> anyhow::Result<Leadership> {
        let (duration, grace) = config.seconds()?;
        if config.identity.is_empty() {
            bail!("leader election needs an identity (the pod name)");
        }
        let params = LeaseParams::new(config.identity.clone(), duration, grace);
        let manager = LeaseManager::new(
            client,
            config.lease_name.clone(),
            config.namespace.clone(),
            params,
            LeaseCreateMode::AutoCreate,
        )
        .await
        .with_context(|| {
            format!(
                "cannot read or create Lease {}/{}",
                config.namespace, config.lease_name
            )
        })?;
        let (tx, rx) = watch::channel(false);
        let stop = CancellationToken::new();
        let identity = config.identity.clone();
        let task = tokio::spawn(run(manager, tx, stop.clone(), config));
        Ok(Leadership {
            identity,
            rx,
            stop: stop.drop_guard(),
            task,
        })
    }

    /// Whether this replica holds the lease now.
    pub fn is_leader(&self) -> bool {
        *self.rx.borrow()
    }

    /// Leadership changes; the current value is marked seen.
    pub fn watch(&self) -> watch::Receiver<bool> {
        let mut rx = self.rx.clone();
        rx.mark_unchanged();
        rx
    }

    /// Keeps `lifeboat_leader` in step with this replica's leadership.
    pub fn report_to(&self, metrics: Metrics) {
        let mut rx = self.rx.clone();
        tokio::spawn(async move {
            loop {
                let leader = *rx.borrow_and_update();
                metrics.set_leader(leader);
                if rx.changed().await.is_err() {
                    metrics.set_leader(false);
                    return;
                }
            }
        });
    }

    /// This replica's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Stops leading (watchers see `false` first) and frees the lease, so
    /// a standby takes over without waiting for it to expire. Waits at most
    /// a few seconds for the API server.
    pub async fn release(self) {
        let Leadership { stop, task, .. } = self;
        drop(stop);
        if let Err(e) = task.await {
            tracing::warn!(error = %e, "leader election task failed");
        }
    }
}

/// Publishes `leader` unless the value is already current.
fn publish(tx: &watch::Sender<bool>, leader: bool, identity: &str) {
    tx.send_if_modified(|cur| {
        if *cur == leader {
            return false;
        }
        *cur = leader;
        if leader {
            tracing::info!(%identity, "acquired the leader lease");
        } else {
            tracing::info!(%identity, "no longer the leader");
        }
        true
    });
}

async fn run(
    manager: LeaseManager,
    tx: watch::Sender<bool>,
    stop: CancellationToken,
    config: LeaderConfig,
) {
    let identity = config.identity.as_str();
    let mut backoff = Duration::from_millis(200);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            changed = manager.changed() => match changed {
                Ok(leader) => {
                    backoff = Duration::from_millis(200);
                    publish(&tx, leader, identity);
                }
                Err(e) => {
                    tracing::warn!(%identity, error = %e, "leader election failed, retrying");
                    if *tx.borrow() {
                        // Can no longer prove we hold the lease: stop first,
                        // then try to give it up so the state is consistent.
                        publish(&tx, false, identity);
                        match tokio::time::timeout(RELEASE_TIMEOUT, manager.release()).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => tracing::warn!(%identity, error = %e, "cannot release the lease"),
                            Err(_) => tracing::warn!(%identity, "timed out releasing the lease"),
                        }
                    }
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(config.duration);
                }
            },
        }
    }
    publish(&tx, false, identity);
    match tokio::time::timeout(RELEASE_TIMEOUT, manager.release()).await {
        Ok(Ok(())) => tracing::info!(%identity, lease = %config.lease_name, "released the lease"),
        Ok(Err(e)) => tracing::warn!(%identity, error = %e, "cannot release the lease"),
        Err(_) => tracing::warn!(%identity, "timed out releasing the lease"),
    }
}
