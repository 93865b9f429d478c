//! Executing a plan: every action of [`Plan::actions`] against the cluster
//! and object storage.
//!
//! - Backups and restores run as tasks beside the cycle
//!   ([`crate::work::Work`]), `backup_concurrency` and `restore_concurrency`
//!   at a time; the planner never plans two backups of one policy, nor a
//!   prune of a policy whose backup runs.
//! - The bookkeeping (orphan marks, prunes and clean-ups) runs within the
//!   cycle, a few at once. A policy's prunes wait for its running backup,
//!   so a failing backup never leaves it with fewer backups than retention
//!   meant to keep.
//! - Every action is idempotent: a backup slot that already has a manifest
//!   is not written again; a restore with a record is not run again (the
//!   record is written `InProgress` before anything is applied); deleting
//!   what is gone is a no-op.
//! - One action's failure never stops the others; each result says what
//!   happened, in words.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::Timestamp;
use lifeboat_core::AccessMode;
use lifeboat_core::load::PolicySet;
use lifeboat_core::plan::Action;
use lifeboat_kube::backup::BackupOptions;
use lifeboat_kube::volumes::MoverOptions;
use lifeboat_store::{Manifest, Phase, RestorePhase, RestoreRecord};
use tracing::{Instrument, info, info_span, warn};

use crate::catalog::Locations;
use crate::jobs::{self, BackupJob, RestoreJob};
use crate::volume_data::{self, Destination, VolumeEvent};

/// Logs what happens to a backup's volumes.
fn log_volume(policy: &str, event: VolumeEvent<'_>) {
    match event {
        VolumeEvent::Progress {
            namespace,
            pvc,
            progress,
        } => {
            tracing::debug!(policy, volume = %format!("{namespace}/{pvc}"), ?progress, "volume progress")
        }
        VolumeEvent::NotProtected {
            namespace,
            pvc,
            reason,
        } => {
            warn!(policy, volume = %format!("{namespace}/{pvc}"), "volume data not protected: {reason}")
        }
        VolumeEvent::Skipped {
            namespace,
            pvc,
            decided_by,
        } => {
            info!(policy, volume = %format!("{namespace}/{pvc}"), "volume data skipped ({decided_by})")
        }
        VolumeEvent::Hook {
            namespace,
            pod,
            message,
        } => info!(policy, pod = %format!("{namespace}/{pod}"), "{message}"),
        VolumeEvent::Done {
            namespace,
            pvc,
            result,
        } => info!(
            policy,
            volume = %format!("{namespace}/{pvc}"),
            snapshot = %result.snapshot,
            files = result.files,
            bytes = result.bytes,
            new_bytes = result.new_bytes,
            "volume backed up"
        ),
        VolumeEvent::TakenOver {
            namespace,
            pvc,
            snapshot,
        } => info!(
            policy,
            volume = %format!("{namespace}/{pvc}"),
            snapshot,
            "volume taken over from the interrupted run"
        ),
        VolumeEvent::Failed {
            namespace,
            pvc,
            reason,
        } => {
            warn!(policy, volume = %format!("{namespace}/{pvc}"), "volume backup failed: {reason}")
        }
    }
}

/// How the executor runs.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// Backups of different policies at once.
    pub backup_concurrency: usize,
    /// Prunes, clean-ups and marks at once.
    pub bookkeeping_concurrency: usize,
    pub backup: BackupOptions,
    /// RestoreRequests at once.
    pub restore_concurrency: usize,
    /// Restore writes at once within a tier.
    pub restore_parallelism: usize,
    /// Carry volume data in backups and restores (false: objects only).
    pub volume_data: bool,
    /// Mover pods (image, namespace, waits); a policy's
    /// `volumes.timeouts` replace the timeouts for its backups.
    pub movers: MoverOptions,
    /// This controller instance, as operation records name their owner.
    pub owner: String,
}

/// A name for this process in operation records: the pod (`HOSTNAME` in a
/// pod), the process id and the start time, so a restarted controller in
/// the same pod is another owner.
pub fn instance_name(what: &str) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!(
        "{what} {host} pid {} started {}",
        std::process::id(),
        Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ")
    )
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            backup_concurrency: 2,
            bookkeeping_concurrency: 8,
            restore_concurrency: 2,
            backup: BackupOptions::default(),
            restore_parallelism: lifeboat_kube::restore::DEFAULT_PARALLELISM,
            volume_data: true,
            movers: MoverOptions::default(),
            owner: instance_name("controller"),
        }
    }
}

/// What an action did.
#[derive(Debug, Clone)]
pub enum Done {
    Backup(Box<Manifest>),
    Pruned {
        objects: u64,
    },
    Restored(Box<RestoreRecord>),
    Cleaned {
        objects: u64,
    },
    Marked,
    Unmarked,
    RestoreFinished,
    /// A volume repository was pruned.
    Maintained(Box<lifeboat_kube::volumes::MaintenanceResult>),
}

/// One executed action.
#[derive(Debug, Clone)]
pub struct Executed {
    pub action: Action,
    pub result: Result<Done, String>,
    pub duration: Duration,
}

impl Executed {
    /// True when the action did what it was meant to (a backup committed as
    /// `Failed` or a restore that failed counts as not ok).
    pub fn ok(&self) -> bool {
        match &self.result {
            Ok(Done::Backup(m)) => m.phase != Phase::Failed,
            Ok(Done::Restored(r)) => r.phase != RestorePhase::Failed,
            Ok(_) => true,
            Err(_) => false,
        }
    }

    /// The kind of work, as metrics and logs name it.
    pub fn action_kind(&self) -> &'static str {
        match self.action {
            Action::Backup { .. } => "backup",
            Action::Restore { .. } | Action::FinishInterruptedRestore { .. } => "restore",
            Action::Prune { .. } | Action::CleanupIncomplete { .. } => "prune",
            Action::MarkOrphaned { .. } | Action::UnmarkOrphaned { .. } => "prune",
            Action::MaintainRepository { .. } => "maintenance",
        }
    }

    /// One line for logs and the CLI.
    pub fn describe(&self) -> String {
        let what = self.action.summary();
        let secs = self.duration.as_secs_f64();
        match &self.result {
            Ok(Done::Backup(m)) => format!(
                "{what}: {:?}, {} objects, {} bytes in {secs:.1}s{}",
                m.phase,
                m.totals.items,
                m.files.bytes(),
                m.failure_reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
            Ok(Done::Restored(r)) => format!(
                "{what}: {:?}{}, {} created, {} updated, {} skipped, {} failed in {secs:.1}s",
                r.phase,
                if r.dry_run { " (dry run)" } else { "" },
                r.counts.created,
                r.counts.updated,
                r.counts.skipped,
                r.counts.failed
            ),
            Ok(Done::Pruned { objects }) | Ok(Done::Cleaned { objects }) => {
                format!("{what}: {objects} objects deleted")
            }
            Ok(Done::Maintained(m)) => format!(
                "{what}: {} packs deleted ({} bytes), {} marked ({} bytes), {} waiting in {secs:.1}s",
                m.packs_to_delete,
                m.bytes_to_delete,
                m.packs_marked,
                m.bytes_marked,
                m.packs_waiting
            ),
            Ok(_) => format!("{what}: done"),
            Err(e) => format!("{what}: failed: {e}"),
        }
    }
}

/// Runs plans for one cluster.
#[derive(Clone)]
pub struct Executor {
    pub client: kube::Client,
    pub locations: Arc<Locations>,
    pub cluster: String,
    /// Git revision of the policy set, stored in each backup's manifest.
    pub revision: Option<String>,
    pub options: ExecOptions,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("cluster", &self.cluster)
            .field("revision", &self.revision)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Executor {
    /// Runs `actions`, `bookkeeping_concurrency` at a time; the results are
    /// in the order given. Backups and restores run as tasks of
    /// [`crate::work::Work`] instead, beside the cycle.
    pub fn execute<'a>(
        &'a self,
        set: &'a PolicySet,
        actions: &'a [Action],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<Executed>> + Send + 'a>> {
        // Futures are built before they enter the stream (not by a closure
        // of the stream) so the whole cycle stays `Send` and can be spawned.
        let runs: Vec<_> = actions
            .iter()
            .enumerate()
            .map(|(i, action)| async move { (i, self.run(set, action).await) })
            .collect();
        Box::pin(async move {
            let mut done: Vec<_> = futures::stream::iter(runs)
                .buffer_unordered(self.options.bookkeeping_concurrency.max(1))
                .collect()
                .await;
            done.sort_by_key(|(i, _)| *i);
            let done: Vec<Executed> = done.into_iter().map(|(_, e)| e).collect();
            self.sweep_images(set, &done).await;
            done
        })
    }

    /// After a cycle's prunes, sweeps the image blobs of each location a
    /// backup was pruned from (mark and sweep, `crate::images::sweep`).
    /// A failed sweep is logged and retried after the next prune.
    async fn sweep_images(&self, set: &PolicySet, done: &[Executed]) {
        let mut locations: Vec<&str> = done
            .iter()
            .filter(|e| e.ok())
            .filter_map(|e| match &e.action {
                Action::Prune { location, .. } => Some(location.as_str()),
                _ => None,
            })
            .collect();
        locations.sort_unstable();
        locations.dedup();
        for location in locations {
            let Ok(repository) = self.writable(location) else {
                continue;
            };
            match crate::images::sweep(repository, set, location, Timestamp::now(), false).await {
                Ok(r) if r.deleted > 0 || !r.plan.stale_pending.is_empty() => info!(
                    location,
                    deleted = r.deleted,
                    referenced = r.plan.referenced,
                    recent = r.plan.recent,
                    "swept unreferenced image blobs"
                ),
                Ok(_) => {}
                Err(e) => warn!(location, "image sweep failed: {e:#}"),
            }
        }
    }

    /// Runs one action and says how it went.
    pub async fn run(&self, set: &PolicySet, action: &Action) -> Executed {
        let span = info_span!("action", cluster = %self.cluster, action = %action.summary());
        async {
            let started = Instant::now();
            let result = self
                .dispatch(set, action)
                .await
                .map_err(|e| format!("{e:#}"));
            let executed = Executed {
                action: action.clone(),
                result,
                duration: started.elapsed(),
            };
            if executed.ok() {
                info!("{}", executed.describe());
            } else {
                warn!("{}", executed.describe());
            }
            executed
        }
        .instrument(span)
        .await
    }

    fn writable(&self, location: &str) -> anyhow::Result<&lifeboat_store::Repository> {
        let repository = self
            .locations
            .repository(location)
            .map_err(|e| anyhow::anyhow!("StorageLocation `{location}` is unavailable: {e}"))?;
        if self.locations.access(location) == Some(AccessMode::ReadOnly) {
            anyhow::bail!("StorageLocation `{location}` is ReadOnly");
        }
        Ok(repository)
    }

    async fn dispatch(&self, set: &PolicySet, action: &Action) -> anyhow::Result<Done> {
        match action {
            Action::Backup {
                policy,
                location,
                slot,
                ..
            } => {
                let repository = self.writable(location)?;
                let doc = &set
                    .policy(policy)
                    .ok_or_else(|| anyhow::anyhow!("policy `{policy}` is not in the set"))?
                    .doc;
                let job = BackupJob {
                    cluster: &self.cluster,
                    policy: doc,
                    slot: *slot,
                    revision: self.revision.clone(),
                    trigger: "schedule",
                    owner: &self.options.owner,
                    movers_namespace: &self.options.movers.namespace,
                    images: crate::images::copy_options(set, &self.cluster, doc)?,
                };
                let movers = volume_data::policy_movers(&self.options.movers, doc);
                let events = |e: VolumeEvent<'_>| log_volume(policy, e);
                let to = self.locations.config(location).map(|config| Destination {
                    repository,
                    config,
                    location_name: location,
                    cluster: &self.cluster,
                });
                let volumes = async |writer: &mut lifeboat_store::BackupWriter| match to {
                    Some(to) if self.options.volume_data => {
                        volume_data::back_up(&self.client, writer, doc, to, &movers, &events).await
                    }
                    _ => Ok(()),
                };
                let manifest = jobs::run_backup_then(
                    &self.client,
                    repository,
                    &job,
                    &self.options.backup,
                    &|_| {},
                    Timestamp::now,
                    volumes,
                )
                .await?;
                Ok(Done::Backup(Box::new(manifest)))
            }
            Action::Restore {
                request,
                location,
                source_cluster,
                backup,
                record_location: Some(record_location),
                ..
            } => {
                self.restore_velero(
                    set,
                    request,
                    location,
                    source_cluster,
                    backup,
                    record_location,
                )
                .await
            }
            Action::Restore {
                request,
                location,
                source_cluster,
                backup,
                record_location: None,
                ..
            } => {
                let repository = self.locations.repository(location).map_err(|e| {
                    anyhow::anyhow!("StorageLocation `{location}` is unavailable: {e}")
                })?;
                let mut options = self.request_options(set, request, source_cluster)?;
                if self.options.volume_data
                    && let Some(config) = self.locations.config(location)
                {
                    let from = Destination {
                        repository,
                        config,
                        location_name: location,
                        cluster: source_cluster,
                    };
                    options.volume_data = volume_data::for_restore(
                        from,
                        backup,
                        request,
                        options.dry_run,
                        self.options.movers.clone(),
                    )
                    .await?;
                }
                let job = RestoreJob {
                    request,
                    source_cluster,
                    backup,
                    target_cluster: &self.cluster,
                    options,
                    record: self.locations.access(location) != Some(AccessMode::ReadOnly),
                    owner: Some(&self.options.owner),
                    velero: None,
                    images: Some(crate::images::push_options(set, &self.cluster)?),
                };
                self.run_restore(repository, &job).await
            }
            Action::Prune {
                location,
                cluster,
                backup,
                ..
            } => {
                let objects = self.delete(location, cluster, backup).await?;
                Ok(Done::Pruned { objects })
            }
            Action::CleanupIncomplete {
                location,
                cluster,
                backup,
                ..
            } => {
                let objects = self.delete(location, cluster, backup).await?;
                Ok(Done::Cleaned { objects })
            }
            Action::MarkOrphaned {
                location,
                policy,
                since,
            } => {
                self.writable(location)?
                    .mark_orphaned(&self.cluster, policy, *since)
                    .await?;
                Ok(Done::Marked)
            }
            Action::UnmarkOrphaned { location, policy } => {
                self.writable(location)?
                    .unmark_orphaned(&self.cluster, policy)
                    .await?;
                Ok(Done::Unmarked)
            }
            Action::FinishInterruptedRestore { location, request } => {
                let repository = self.writable(location)?;
                if let Some(mut record) = repository
                    .read_restore_record(&self.cluster, request)
                    .await?
                    && record.phase == RestorePhase::InProgress
                {
                    record.phase = RestorePhase::Failed;
                    record.end_time = Some(Timestamp::now());
                    record.message = Some(
                        "interrupted: the controller stopped during this restore and it was \
                         not resumed before its deadline (or its record has none); check the \
                         target, then commit a RestoreRequest with a new name to run it again"
                            .into(),
                    );
                    repository
                        .write_restore_record(&self.cluster, request, &record)
                        .await?;
                }
                Ok(Done::RestoreFinished)
            }
            Action::MaintainRepository {
                location,
                namespace,
                generation,
                keep_delete,
                ..
            } => {
                anyhow::ensure!(
                    self.options.volume_data,
                    "volume data is turned off in this controller; its repositories are not maintained"
                );
                let repository = self.writable(location)?;
                let config = self.locations.config(location).ok_or_else(|| {
                    anyhow::anyhow!("StorageLocation `{location}` has no store configuration")
                })?;
                let to = Destination {
                    repository,
                    config,
                    location_name: location,
                    cluster: &self.cluster,
                };
                let done = volume_data::maintain(
                    &self.client,
                    to,
                    namespace,
                    *generation,
                    std::time::Duration::from_secs(keep_delete.as_secs()),
                    &self.options.movers,
                    Timestamp::now,
                )
                .await?;
                Ok(Done::Maintained(Box::new(done)))
            }
        }
    }

    /// The options RestoreRequest `request` runs with in this cluster: the
    /// request's own, this controller's parallelism, and the OpenShift
    /// rules of its source and target clusters.
    fn request_options(
        &self,
        set: &PolicySet,
        request: &str,
        source_cluster: &str,
    ) -> anyhow::Result<lifeboat_kube::restore::RestoreOptions> {
        let doc = &set
            .restores
            .iter()
            .find(|r| r.doc.metadata.name == request)
            .ok_or_else(|| anyhow::anyhow!("RestoreRequest `{request}` is not in the set"))?
            .doc;
        let target = set.cluster(&self.cluster).map(|c| &c.doc);
        let mut options = jobs::restore_options(doc, target)?;
        options.parallelism = self.options.restore_parallelism;
        options.transform.openshift = lifeboat_kube::openshift::RestoreConfig::for_clusters(
            set.cluster(source_cluster).map(|c| &c.doc.spec),
            target.map(|c| &c.spec),
        );
        Ok(options)
    }

    /// Removes what an interrupted run of `request` left (mover pods, their
    /// Secrets and claims); the claims it created and had not filled are
    /// filled again.
    async fn remove_restore_leftovers(&self, request: &str) -> anyhow::Result<()> {
        lifeboat_kube::volumes::remove_leftovers(
            &self.client,
            &self.options.movers.namespace,
            lifeboat_kube::volumes::RESTORE_LABEL,
            |op| op == request,
        )
        .await?;
        Ok(())
    }

    /// Runs a RestoreRequest of a Velero backup: the objects (and restic
    /// volume data) read from the Velero location `location`, which is
    /// never written; the record in the lifeboat location `record_location`
    /// of this cluster, with the same resume and deadline as any restore.
    async fn restore_velero(
        &self,
        set: &PolicySet,
        request: &str,
        location: &str,
        source_cluster: &str,
        backup: &str,
        record_location: &str,
    ) -> anyhow::Result<Done> {
        let repository = self.writable(record_location)?;
        let (velero, config) = self
            .locations
            .velero(location)
            .map_err(|e| anyhow::anyhow!("Velero location `{location}` is unavailable: {e}"))?;
        let mut options = self.request_options(set, request, source_cluster)?;
        if self.options.volume_data {
            options.volume_data = volume_data::for_velero_restore(
                velero,
                config,
                location,
                backup,
                request,
                self.options.movers.clone(),
            )
            .await?;
        }
        let job = RestoreJob {
            request,
            source_cluster,
            backup,
            target_cluster: &self.cluster,
            options,
            record: true,
            owner: Some(&self.options.owner),
            velero: Some(velero),
            // Velero's backups hold no images lifeboat copied.
            images: None,
        };
        self.run_restore(repository, &job).await
    }

    /// Runs `job`, its record in `repository`, once what an interrupted
    /// run of the same request left is removed.
    async fn run_restore(
        &self,
        repository: &lifeboat_store::Repository,
        job: &RestoreJob<'_>,
    ) -> anyhow::Result<Done> {
        if !job.options.dry_run {
            self.remove_restore_leftovers(job.request).await?;
        }
        let record =
            jobs::run_restore(&self.client, repository, job, &|_| {}, Timestamp::now).await?;
        Ok(Done::Restored(Box::new(record)))
    }

    /// Removes what a cancelled backup or restore left: its objects in the
    /// cluster (snapshots, mover pods, their claims and Secrets), the
    /// uncommitted backup with the snapshots it finished, or the restore's
    /// record is finished as `Failed` with `why` (what it restored stays).
    pub async fn clean_up_cancelled(&self, action: &Action, why: &str) -> Executed {
        let started = Instant::now();
        let movers = self.options.movers.namespace.as_str();
        let result = async {
            match action {
                Action::Backup { location, name, .. } => {
                    let repository = self.writable(location)?;
                    volume_data::discard_backup(
                        &self.client,
                        movers,
                        repository,
                        &self.cluster,
                        name,
                    )
                    .await?;
                }
                Action::Restore {
                    location,
                    request,
                    record_location,
                    ..
                } => {
                    volume_data::discard_restore(
                        &self.client,
                        movers,
                        self.writable(record_location.as_deref().unwrap_or(location))
                            .ok(),
                        &self.cluster,
                        request,
                        &format!("cancelled: {why}"),
                    )
                    .await?;
                }
                _ => {}
            }
            anyhow::Ok(())
        }
        .await;
        let executed = Executed {
            action: action.clone(),
            result: Err(match result {
                Ok(()) => format!("cancelled: {why}"),
                Err(e) => format!("cancelled: {why}; cleaning up failed: {e:#}"),
            }),
            duration: started.elapsed(),
        };
        warn!("{}", executed.describe());
        executed
    }

    /// Deletes a backup, the snapshots it kept in this cluster and its
    /// volume snapshots (as `lifeboat backups delete` does); one that is
    /// already gone counts as deleted. Kept snapshots first: an interrupted
    /// deletion leaves a backup the next prune finishes, never a kept
    /// snapshot nobody lists.
    async fn delete(&self, location: &str, cluster: &str, backup: &str) -> anyhow::Result<u64> {
        let repository = self.writable(location)?;
        let client = (cluster == self.cluster).then_some(&self.client);
        let (kept, deleted) =
            volume_data::delete_backup(client, repository, cluster, backup).await?;
        for c in &kept {
            tracing::info!(
                backup,
                "deleted the kept snapshot VolumeSnapshotContent {c}"
            );
        }
        for s in &deleted.snapshots {
            tracing::info!(backup, "forgot volume snapshot {s}");
        }
        for k in &deleted.kept {
            tracing::warn!(backup, "kept volume snapshot {k}");
        }
        Ok(deleted.files)
    }
}
