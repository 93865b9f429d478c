//! The controller loop: reconcile, then sleep until the poll interval ends,
//! the next schedule slot comes, a webhook arrives, or the process is told
//! to stop. Only the leader acts when leader election is on.
//!
//! Backups and restores run beside the cycles ([`crate::work`]); the loop
//! wakes when one ends, to reap it and publish the status at once.
//!
//! Stopping (SIGTERM): a running cycle and running work get `grace` to
//! finish; after that they are abandoned, which is safe: a backup that was
//! not committed has no manifest (the next leader writes that slot again,
//! and cleans the leftovers after the incomplete grace period), and a
//! restore left `InProgress` is marked interrupted by the next leader, never
//! run twice. Losing leadership abandons them at once.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use lifeboat_core::plan::{Action, Plan, RpoStatus};
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::executor::Done;
use crate::http::Health;
use crate::leader::Leadership;
use crate::metrics::{BackupMetrics, Metrics};
use crate::reconcile::{CycleReport, Reconciler};
use crate::shutdown::Shutdown;

/// How the loop runs.
#[derive(Debug, Clone)]
pub struct LoopConfig {
    /// Poll the remote at least this often.
    pub interval: Duration,
    /// How long a running cycle may go on after a stop signal.
    pub grace: Duration,
}

impl Default for LoopConfig {
    fn default() -> Self {
        LoopConfig {
            interval: Duration::from_secs(60),
            grace: Duration::from_secs(25),
        }
    }
}

/// What the loop talks to.
#[derive(Debug)]
pub struct Loop {
    pub reconciler: Reconciler,
    pub config: LoopConfig,
    pub metrics: Metrics,
    pub health: Health,
    pub webhook: Arc<Notify>,
    pub leader: Option<Leadership>,
    pub shutdown: Shutdown,
}

/// The earliest next slot of the plan's policies.
fn next_slot(plan: Option<&Plan>) -> Option<Timestamp> {
    plan?.policies.iter().filter_map(|f| f.next_slot).min()
}

/// Resolves when leadership is lost; never without leader election.
async fn lost(leading: &mut Option<tokio::sync::watch::Receiver<bool>>) {
    match leading.as_mut() {
        Some(w) => loop {
            if w.changed().await.is_err() || !*w.borrow() {
                break;
            }
        },
        None => std::future::pending::<()>().await,
    }
}

/// Records a cycle in the metrics.
pub fn record(metrics: &Metrics, report: &CycleReport, known: &mut BTreeSet<String>) {
    if let Some(sha) = &report.revision.sha {
        metrics.set_revision(sha, report.revision.valid);
    }
    for (kind, _) in &report.errors {
        metrics.reconcile_error(kind);
    }
    for e in &report.executed {
        match (&e.action, &e.result) {
            (Action::Backup { policy, .. }, Ok(Done::Backup(m))) => {
                metrics.backup_finished(
                    policy,
                    &BackupMetrics {
                        success: e.ok(),
                        end_time: m.end_time,
                        duration: e.duration,
                        objects: m.totals.items,
                        bytes: m.files.bytes(),
                    },
                );
                if !m.volumes.is_empty() {
                    metrics.volumes_finished(policy, &m.volumes);
                }
                metrics.hooks_finished(policy, &m.hooks);
            }
            (Action::Backup { policy, .. }, Err(_)) => metrics.backup_finished(
                policy,
                &BackupMetrics {
                    success: false,
                    end_time: Timestamp::now(),
                    duration: e.duration,
                    objects: 0,
                    bytes: 0,
                },
            ),
            (Action::Restore { .. }, Ok(Done::Restored(r))) => {
                metrics.restore_finished(&format!("{:?}", r.phase));
                metrics.restore_hooks_finished(&r.hook_counts);
            }
            (Action::Restore { .. }, Err(_)) => metrics.restore_finished("Failed"),
            (Action::MaintainRepository { location, .. }, result) => {
                metrics.maintenance_finished(location, result.is_ok())
            }
            _ => {}
        }
    }
    let Some(plan) = report.after.as_ref().or(report.plan.as_ref()) else {
        return;
    };
    let mut now_known = BTreeSet::new();
    metrics.set_movers_running(
        plan.policies
            .iter()
            .filter(|f| f.running)
            .filter_map(|f| f.in_progress.as_ref())
            .map(|p| p.operation.moving.len())
            .sum(),
    );
    for f in &plan.policies {
        now_known.insert(f.policy.clone());
        metrics.set_rpo_violated(
            &f.policy,
            matches!(f.rpo_status, RpoStatus::Violated { .. }),
        );
        if let Some(last) = &f.last_success {
            metrics.set_last_success(&f.policy, last.end);
        }
    }
    for gone in known.difference(&now_known) {
        metrics.forget_policy(gone);
    }
    *known = now_known;
}

impl Loop {
    /// Runs until the shutdown signal; returns when stopped.
    pub async fn run(mut self) {
        let mut known = BTreeSet::new();
        let mut leading = self.leader.as_ref().map(|l| l.watch());
        let work_done = self.reconciler.run_in_background();
        loop {
            if self.shutdown.is_triggered() {
                break;
            }
            self.health.beat(Instant::now());
            if let Some(watch) = leading.as_mut() {
                if !*watch.borrow() {
                    if self.reconciler.working() {
                        warn!(
                            "leadership lost: abandoning the running backups and restores to the next leader"
                        );
                        self.reconciler.abort_work();
                    }
                    self.metrics.set_leader(false);
                    // Standby replicas are ready: they serve metrics and take
                    // over when the leader goes.
                    self.health.set_ready(true);
                    tokio::select! {
                        _ = watch.changed() => {}
                        _ = tokio::time::sleep(self.config.interval.min(Duration::from_secs(10))) => {}
                        _ = self.shutdown.cancelled() => break,
                    }
                    continue;
                }
                self.metrics.set_leader(true);
            }
            let started = Instant::now();
            let now = Timestamp::now();
            let Some(report) = self.cycle(now, &mut leading).await else {
                break;
            };
            self.metrics
                .reconcile_finished(started.elapsed(), report.ok());
            record(&self.metrics, &report, &mut known);
            self.health.beat(Instant::now());
            self.health.set_ready(self.reconciler.valid().is_some());

            let mut wait = self.config.interval;
            if let Some(slot) = next_slot(report.after.as_ref().or(report.plan.as_ref())) {
                let until = slot.duration_since(Timestamp::now());
                if let Ok(until) = Duration::try_from(until) {
                    // Wake just after the slot so it is due.
                    wait = wait.min(until + Duration::from_secs(1));
                }
            }
            info!(
                seconds = wait.as_secs(),
                "sleeping until the next poll or slot"
            );
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.webhook.notified() => info!("woken by a webhook"),
                _ = work_done.notified() => info!("woken by the end of a backup or restore"),
                _ = lost(&mut leading) => {}
                _ = self.shutdown.cancelled() => break,
            }
        }
        // Running work gets the grace period; what is left after it is
        // interrupted work for the next leader.
        self.reconciler.finish_work(self.config.grace).await;
        if let Some(leader) = self.leader.take() {
            leader.release().await;
        }
        info!("controller stopped");
    }

    /// One cycle, abandoned when leadership is lost or when the stop
    /// grace period ends. `None` means stop.
    async fn cycle(
        &mut self,
        now: Timestamp,
        leading: &mut Option<tokio::sync::watch::Receiver<bool>>,
    ) -> Option<CycleReport> {
        let shutdown = self.shutdown.clone();
        let grace = self.config.grace;
        let lost = lost(leading);
        let lost_leadership = {
            let cycle = self.reconciler.cycle(now, true);
            tokio::pin!(cycle);
            tokio::select! {
                report = &mut cycle => return Some(report),
                _ = lost => true,
                _ = shutdown.cancelled() => {
                    tokio::select! {
                        report = &mut cycle => return Some(report),
                        _ = tokio::time::sleep(grace) => false,
                    }
                }
            }
        };
        if lost_leadership {
            warn!("leadership lost during a cycle: abandoning it and the running work");
            self.reconciler.abort_work();
            Some(CycleReport::abandoned("leadership lost"))
        } else {
            warn!(
                grace_seconds = grace.as_secs(),
                "stop requested: abandoning the running cycle"
            );
            None
        }
    }
}
