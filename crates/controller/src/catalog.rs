//! What the planner observes: the backups, incomplete backups, restore
//! records and orphan marks of the StorageLocations of a policy set, read
//! from object storage. A location that cannot be opened or listed is
//! reported as unavailable, so the planner prunes nothing there, and the
//! other locations are still read.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::Context;
use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use lifeboat_core::AccessMode;
use lifeboat_core::load::PolicySet;
use lifeboat_core::plan::{
    BackupPhase, IncompleteBackup, Observed, ObservedBackup, ObservedOperation, ObservedRepository,
    ObservedRestore, ObservedVeleroBackup, OrphanMark, RestoreState, Running, SignatureStatus,
    VolumeTotals,
};
use lifeboat_store::{
    LocationConfig, Manifest, Phase, Repository, RestorePhase, SignatureCheck, SignatureState,
    VeleroLocation,
};

use crate::locations::{self, Secrets};
use crate::status::RecordSummary;

/// Locations opened at once.
const OPEN_CONCURRENCY: usize = 8;

/// One StorageLocation of the set, opened or not.
#[derive(Debug, Clone)]
pub struct Location {
    pub name: String,
    pub access: AccessMode,
    /// The repository, or why it could not be opened.
    pub repository: Result<Repository, String>,
    /// The configuration it was opened with (credentials and identities
    /// read), which mover pods reach it by.
    pub config: Option<LocationConfig>,
}

/// A Velero location (`format: velero`) a RestoreRequest of this cluster
/// restores from, never written, only listed and read, with the
/// configuration it was opened with (credentials read), which mover pods
/// reach it by; or why it could not be opened.
pub type VeleroSource = Result<(VeleroLocation, LocationConfig), String>;

/// The StorageLocations of a policy set, by name.
#[derive(Debug, Clone, Default)]
pub struct Locations {
    pub by_name: BTreeMap<String, Location>,
    /// Every Velero location of the set.
    pub velero: BTreeSet<String>,
    /// The Velero locations that RestoreRequests targeting this cluster
    /// name, opened; the others are not touched.
    pub velero_sources: BTreeMap<String, VeleroSource>,
}

impl Locations {
    /// Opens every StorageLocation of `set` (concurrently), trusting the
    /// keys Git trusts there and signing as `cluster` (with its
    /// `signing.keySecretRef`, when `secrets` come from the cluster).
    ///
    /// Velero locations (`format: velero`) are not lifeboat repositories:
    /// the controller never writes them, and reads only those that a
    /// RestoreRequest targeting `cluster` restores from.
    pub async fn open(set: &PolicySet, secrets: &Secrets, cluster: &str) -> Locations {
        let opening: Vec<_> = set
            .storage_locations
            .iter()
            .filter(|l| l.doc.spec.format.is_lifeboat())
            .map(|l| async move {
                let doc = &l.doc;
                let opened = locations::open_with_config(set, doc, secrets, cluster).await;
                let (repository, config) = match opened {
                    Ok((r, c)) => (Ok(r), Some(c)),
                    Err(e) => (Err(format!("{e:#}")), None),
                };
                Location {
                    name: doc.metadata.name.clone(),
                    access: doc.spec.access_mode,
                    repository,
                    config,
                }
            })
            .collect();
        let opened: Vec<Location> = futures::stream::iter(opening)
            .buffer_unordered(OPEN_CONCURRENCY)
            .collect()
            .await;
        let wanted: BTreeSet<&str> = set
            .restores
            .iter()
            .filter(|r| r.doc.spec.target.cluster == cluster)
            .filter_map(|r| r.doc.spec.source.location.as_deref())
            .collect();
        let mut velero_sources = BTreeMap::new();
        for l in &set.storage_locations {
            let name = l.doc.metadata.name.as_str();
            if l.doc.spec.format.is_lifeboat() || !wanted.contains(name) {
                continue;
            }
            let opened = async {
                let config = locations::resolve(set, &l.doc, secrets, cluster).await?;
                let location = VeleroLocation::open(&config)
                    .with_context(|| format!("cannot open StorageLocation `{name}`"))?;
                anyhow::Ok((location, config))
            }
            .await;
            velero_sources.insert(name.to_string(), opened.map_err(|e| format!("{e:#}")));
        }
        Locations {
            by_name: opened.into_iter().map(|l| (l.name.clone(), l)).collect(),
            velero: set
                .storage_locations
                .iter()
                .filter(|l| !l.doc.spec.format.is_lifeboat())
                .map(|l| l.doc.metadata.name.clone())
                .collect(),
            velero_sources,
        }
    }

    /// The Velero location `name` a restore reads from, with its
    /// configuration, or why there is none.
    pub fn velero(&self, name: &str) -> Result<(&VeleroLocation, &LocationConfig), String> {
        match self.velero_sources.get(name) {
            Some(Ok((l, c))) => Ok((l, c)),
            Some(Err(e)) => Err(e.clone()),
            None if self.by_name.contains_key(name) => Err(format!(
                "StorageLocation `{name}` is a lifeboat location, not a Velero one"
            )),
            None => Err(format!(
                "no Velero location named `{name}` that a RestoreRequest of this cluster restores from"
            )),
        }
    }

    /// The repository of `name`, or why there is none.
    pub fn repository(&self, name: &str) -> Result<&Repository, String> {
        match self.by_name.get(name) {
            Some(l) => l.repository.as_ref().map_err(Clone::clone),
            None if self.velero.contains(name) => Err(format!(
                "StorageLocation `{name}` is a Velero location (`format: velero`), which \
                 lifeboat never writes; it only restores from it"
            )),
            None => Err(format!("no StorageLocation named `{name}`")),
        }
    }

    /// The configuration `name` was opened with.
    pub fn config(&self, name: &str) -> Option<&LocationConfig> {
        self.by_name.get(name).and_then(|l| l.config.as_ref())
    }

    pub fn access(&self, name: &str) -> Option<AccessMode> {
        self.by_name.get(name).map(|l| l.access)
    }
}

/// How many of `volumes` completed (or not).
fn count(volumes: &[lifeboat_store::VolumeEntry], completed: bool) -> u32 {
    let n = volumes
        .iter()
        .filter(|v| (v.phase == lifeboat_store::VolumePhase::Completed) == completed)
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// What the planner sees of a backup's operation record.
pub fn observed_operation(op: &lifeboat_store::Operation) -> ObservedOperation {
    ObservedOperation {
        owner: op.owner.clone(),
        started: op.started,
        updated: op.updated,
        deadline: op.deadline,
        step: op.step.clone(),
        volumes_done: u32::try_from(op.volumes.len()).unwrap_or(u32::MAX),
        volumes_planned: op.volumes_planned,
        bytes_done: op.bytes_done(),
        moving: op.moving.clone(),
    }
}

/// Converts a manifest and its signature check into what the planner sees.
pub fn observed_backup(
    location: &str,
    m: &Manifest,
    signature: Option<&SignatureCheck>,
) -> ObservedBackup {
    let (signature, signature_detail) = match signature.map(|c| (c, &c.state)) {
        None | Some((_, SignatureState::Unsigned)) => (SignatureStatus::Unsigned, None),
        Some((_, SignatureState::Valid { .. })) => (SignatureStatus::Valid, None),
        Some((c, SignatureState::Untrusted { .. })) => {
            (SignatureStatus::Untrusted, Some(c.describe()))
        }
        Some((c, SignatureState::Bad { .. })) => (SignatureStatus::Bad, Some(c.describe())),
    };
    ObservedBackup {
        location: location.to_string(),
        cluster: m.cluster.clone(),
        name: m.backup_name.clone(),
        policy: m.policy.clone(),
        slot: m.schedule_slot,
        start: m.start_time,
        end: m.end_time,
        phase: match m.phase {
            Phase::Completed => BackupPhase::Completed,
            Phase::PartiallyFailed => BackupPhase::PartiallyFailed,
            Phase::Failed => BackupPhase::Failed,
        },
        items: m.totals.items,
        bytes: m.files.bytes(),
        signature,
        signature_detail,
        volumes: VolumeTotals {
            completed: count(&m.volumes, true),
            failed: count(&m.volumes, false),
            bytes: m
                .volumes
                .iter()
                .filter(|v| v.phase == lifeboat_store::VolumePhase::Completed)
                .map(|v| v.bytes)
                .sum(),
        },
        prerequisites: m
            .prerequisites
            .iter()
            .map(lifeboat_kube::inventory::prerequisite)
            .collect(),
    }
}

/// What one location holds, or (location, error).
type LocationPart = (Observed, BTreeMap<String, RecordSummary>);

/// What the catalog holds: the planner's input, plus what the restore
/// records say for the status report.
#[derive(Debug, Clone)]
pub struct Observation {
    pub observed: Observed,
    pub records: BTreeMap<String, RecordSummary>,
}

/// Reads everything the planner needs about `cluster` from every location.
pub async fn observe(
    set: &PolicySet,
    locations: &Locations,
    cluster: &str,
    now: Timestamp,
    running: Running,
) -> Observation {
    let mut observed = Observed {
        backups: Vec::new(),
        incomplete: Vec::new(),
        restores: Vec::new(),
        orphans: Vec::new(),
        unavailable: Vec::new(),
        running,
        inventory: None,
        repositories: Vec::new(),
        velero_backups: Vec::new(),
    };
    // Restores into this cluster, and the other clusters they read from.
    let requests: Vec<&lifeboat_core::RestoreRequest> = set
        .restores
        .iter()
        .map(|r| &r.doc)
        .filter(|r| r.spec.target.cluster == cluster)
        .collect();
    let sources: BTreeSet<(String, String)> = requests
        .iter()
        .filter(|r| r.spec.source.location.is_none() && r.spec.source.cluster_name() != cluster)
        .filter_map(|r| {
            let policy = set.policy(r.spec.source.policy.as_deref()?)?;
            Some((
                policy.doc.spec.storage.clone(),
                r.spec.source.cluster_name().to_string(),
            ))
        })
        .collect();
    let reads = locations.by_name.values().map(|location| {
        let requests = &requests;
        let sources = &sources;
        async move { read_location(location, cluster, now, requests, sources).await }
    });
    let reads: Vec<_> = reads.collect();
    let results: Vec<Result<LocationPart, (String, String)>> = futures::stream::iter(reads)
        .buffer_unordered(OPEN_CONCURRENCY)
        .collect()
        .await;
    let mut records = BTreeMap::new();
    for result in results {
        match result {
            Ok((part, part_records)) => {
                observed.backups.extend(part.backups);
                observed.incomplete.extend(part.incomplete);
                observed.restores.extend(part.restores);
                observed.orphans.extend(part.orphans);
                observed.repositories.extend(part.repositories);
                records.extend(part_records);
            }
            Err(unavailable) => observed.unavailable.push(unavailable),
        }
    }
    observe_velero(locations, &requests, &mut observed).await;
    observed.unavailable.sort();
    Observation { observed, records }
}

/// The claims a restore filled with their data, and those it could not.
fn volume_totals(record: &lifeboat_store::RestoreRecord) -> lifeboat_core::plan::VolumeTotals {
    let mut totals = lifeboat_core::plan::VolumeTotals::default();
    for v in &record.volumes {
        match v.phase {
            lifeboat_store::VolumePhase::Completed => {
                totals.completed += 1;
                totals.bytes += v.bytes;
            }
            lifeboat_store::VolumePhase::Failed => totals.failed += 1,
        }
    }
    totals
}

/// The Velero backups that RestoreRequests of this cluster may restore:
/// of each Velero location that a request without a finished record
/// names, every backup for `latest`, else only the one named (one read of
/// its `velero-backup.json`). A location that cannot be read is
/// unavailable: its requests wait.
async fn observe_velero(
    locations: &Locations,
    requests: &[&lifeboat_core::RestoreRequest],
    observed: &mut Observed,
) {
    let finished: BTreeSet<&str> = observed
        .restores
        .iter()
        .filter(|r| r.phase != RestoreState::InProgress)
        .map(|r| r.request.as_str())
        .collect();
    // Per location: None = list everything, Some(names) = describe these.
    let mut wanted: BTreeMap<&str, Option<BTreeSet<&str>>> = BTreeMap::new();
    for r in requests {
        let Some(location) = r.spec.source.location.as_deref() else {
            continue;
        };
        if finished.contains(r.metadata.name.as_str()) {
            continue;
        }
        let entry = wanted
            .entry(location)
            .or_insert_with(|| Some(BTreeSet::new()));
        match (entry, r.spec.source.backup.as_str()) {
            (e, "latest") => *e = None,
            (Some(names), name) => {
                names.insert(name);
            }
            (None, _) => {}
        }
    }
    for (name, which) in wanted {
        let velero = match locations.velero(name) {
            Ok((v, _)) => v,
            Err(e) => {
                observed.unavailable.push((name.to_string(), e));
                continue;
            }
        };
        let found = match which {
            None => velero.list().await,
            Some(names) => {
                let mut out = Vec::new();
                let mut failed = None;
                for backup in names {
                    match velero.describe(backup).await {
                        Ok(b) => out.push(b),
                        Err(
                            lifeboat_store::StoreError::VeleroBackupNotFound { .. }
                            | lifeboat_store::StoreError::InvalidName { .. },
                        ) => {}
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                match failed {
                    Some(e) => Err(e),
                    None => Ok(out),
                }
            }
        };
        match found {
            Ok(list) => {
                observed
                    .velero_backups
                    .extend(list.into_iter().map(|b| ObservedVeleroBackup {
                        location: name.to_string(),
                        name: b.name,
                        phase: b.phase,
                        started: b.started,
                    }))
            }
            Err(e) => observed.unavailable.push((name.to_string(), e.to_string())),
        }
    }
}

fn summary(location: &str, cluster: &str, record: &lifeboat_store::RestoreRecord) -> RecordSummary {
    RecordSummary {
        phase: format!("{:?}", record.phase),
        source_cluster: record.source_cluster.clone(),
        source_backup: record.source_backup.clone(),
        dry_run: record.dry_run,
        start: Some(record.start_time),
        end: record.end_time,
        created: record.counts.created,
        updated: record.counts.updated,
        skipped: record.counts.skipped,
        failed: record.counts.failed,
        message: record.message.clone(),
        volumes: volume_totals(record),
        failures: record
            .items
            .iter()
            .filter(|i| i.action == lifeboat_store::RestoreAction::Failed)
            .take(crate::status::LISTED_FAILURES)
            .map(|i| {
                format!(
                    "{} {}{}: {}",
                    i.resource,
                    i.namespace
                        .as_deref()
                        .map(|n| format!("{n}/"))
                        .unwrap_or_default(),
                    i.name,
                    i.reason.as_deref().unwrap_or("failed")
                )
            })
            .collect(),
        missing_prerequisites: record.missing_prerequisites.clone(),
        record: format!(
            "{location}: clusters/{cluster}/restores/{}/record.json",
            record.request
        ),
    }
}

async fn read_location(
    location: &Location,
    cluster: &str,
    now: Timestamp,
    requests: &[&lifeboat_core::RestoreRequest],
    sources: &BTreeSet<(String, String)>,
) -> Result<LocationPart, (String, String)> {
    let name = location.name.as_str();
    let fail = |e: String| (name.to_string(), e);
    let repo = location.repository.as_ref().map_err(|e| fail(e.clone()))?;
    let mut part = Observed {
        backups: Vec::new(),
        incomplete: Vec::new(),
        restores: Vec::new(),
        orphans: Vec::new(),
        unavailable: Vec::new(),
        running: Running::default(),
        inventory: None,
        repositories: Vec::new(),
        velero_backups: Vec::new(),
    };
    let listed = repo
        .list_backups(cluster, None)
        .await
        .map_err(|e| fail(e.to_string()))?;
    part.backups.extend(
        listed
            .backups
            .iter()
            .map(|m| observed_backup(name, m, listed.signature(m))),
    );
    for (source_location, source_cluster) in sources {
        if source_location != name {
            continue;
        }
        let listed = repo
            .list_backups(source_cluster, None)
            .await
            .map_err(|e| fail(e.to_string()))?;
        part.backups.extend(
            listed
                .backups
                .iter()
                .map(|m| observed_backup(name, m, listed.signature(m))),
        );
    }
    let incomplete = repo
        .incomplete_backups(cluster, now, SignedDuration::ZERO)
        .await
        .map_err(|e| fail(e.to_string()))?;
    part.incomplete
        .extend(incomplete.into_iter().map(|i| IncompleteBackup {
            location: name.to_string(),
            cluster: i.cluster,
            name: i.backup,
            last_modified: i.last_modified,
            operation: i.operation.as_ref().map(observed_operation),
        }));
    let marks = repo
        .orphan_marks(cluster)
        .await
        .map_err(|e| fail(e.to_string()))?;
    part.orphans.extend(marks.into_iter().map(|m| OrphanMark {
        location: name.to_string(),
        policy: m.policy,
        since: m.since,
    }));
    // The cluster's volume repositories, for maintenance. Unreadable ones
    // only delay their prune: they do not make the location unavailable.
    match lifeboat_volume::maintenance::list_repositories(repo, cluster).await {
        Ok(repos) => part
            .repositories
            .extend(repos.into_iter().map(|r| ObservedRepository {
                location: name.to_string(),
                namespace: r.namespace,
                generation: r.generation,
                created: r.created,
                last_attempt: r.record.as_ref().map(|m| m.last_attempt),
                last_success: r.record.as_ref().and_then(|m| m.last_success),
                last_failed: r.record.as_ref().is_some_and(|m| m.error.is_some()),
            })),
        Err(e) => {
            tracing::warn!(location = name, error = %e, "cannot list the volume repositories")
        }
    }
    let mut records = BTreeMap::new();
    for request in requests {
        let request_name = &request.metadata.name;
        if let Some(record) = repo
            .read_restore_record(cluster, request_name)
            .await
            .map_err(|e| fail(e.to_string()))?
        {
            records.insert(record.request.clone(), summary(name, cluster, &record));
            part.restores.push(ObservedRestore {
                location: name.to_string(),
                request: record.request,
                phase: match record.phase {
                    RestorePhase::InProgress => RestoreState::InProgress,
                    RestorePhase::Completed => RestoreState::Completed,
                    RestorePhase::PartiallyFailed => RestoreState::PartiallyFailed,
                    RestorePhase::Failed => RestoreState::Failed,
                },
                source_backup: record.source_backup,
                deadline: record.deadline,
                start: record.start_time,
                end: record.end_time,
            });
        }
    }
    Ok((part, records))
}

/// Shared, cheaply cloned locations for concurrent executors.
pub type SharedLocations = Arc<Locations>;
