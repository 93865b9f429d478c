//! Volume data of one backup or restore, for `lifeboat backup` /
//! `lifeboat restore` run by hand and for the controller alike: the
//! repository keys, then one mover per claim (`lifeboat_kube::volumes`).
//!
//! ```text
//! backup:  claims to protect ─▶ keys (one repository per namespace, cached
//!          in a Secret of the movers' namespace) ─▶ back_up_claim per claim,
//!          concurrently within volumes.concurrency (slots) ─▶ one volume
//!          entry (Completed / Failed, recorded as each ends, through the one
//!          writer) or a warning per claim
//! restore: the backup's completed volumes ─▶ keys opened with the
//!          location's age identities ─▶ restore::VolumeData
//! ```
//!
//! What happens is reported as [`VolumeEvent`]s; the CLI shows them on a
//! terminal, the controller logs them.

mod hooks;
mod slots;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lifeboat_core::BackupPolicy;
use lifeboat_core::model::HookOnError;
use lifeboat_core::model::{VolumeConcurrency, VolumeMethod};
use lifeboat_core::volumes::{DecidedBy, PodInfo, VolumeDecision, decide};
use lifeboat_kube::volumes::{
    self, ChosenVolume, MoverAccess, MoverOptions, RepoKey, Snapshotted, VolumeProgress,
    VolumeResult, WorkLocation,
};
use lifeboat_store::{
    BackupWriter, LocationConfig, LogEntry, LogLevel, Repository, VolumeEntry, VolumePhase,
};
use lifeboat_volume::secret_cache::SecretKeyCache;
use lifeboat_volume::{KeyCache, VolumeRepo};
use slots::{Place, Slots};

/// The Secret (in the movers' namespace) caching repository keys where
/// backups run, so later backups need no identity.
pub const KEY_CACHE_SECRET: &str = "lifeboat-volume-keys";

/// What happens to the volumes of a backup, as it happens.
#[derive(Debug, Clone, Copy)]
pub enum VolumeEvent<'a> {
    /// A claim's mover reports progress.
    Progress {
        namespace: &'a str,
        pvc: &'a str,
        progress: &'a VolumeProgress,
    },
    /// A claim whose data the backup does not carry, and why.
    NotProtected {
        namespace: &'a str,
        pvc: &'a str,
        reason: &'a str,
    },
    /// A claim whose data the policy deliberately does not back up.
    Skipped {
        namespace: &'a str,
        pvc: &'a str,
        decided_by: &'a DecidedBy,
    },
    /// A claim's data is in the repository.
    Done {
        namespace: &'a str,
        pvc: &'a str,
        result: &'a VolumeResult,
    },
    /// A claim's data was already in the repository: an interrupted run
    /// of this backup moved it, and this run takes its result over.
    TakenOver {
        namespace: &'a str,
        pvc: &'a str,
        snapshot: &'a str,
    },
    /// An exec hook ran in a pod (or could not).
    Hook {
        namespace: &'a str,
        pod: &'a str,
        message: &'a str,
    },
    /// A claim's data could not be backed up.
    Failed {
        namespace: &'a str,
        pvc: &'a str,
        reason: &'a str,
    },
}

/// Where a backup's volume data goes.
#[derive(Debug, Clone, Copy)]
pub struct Destination<'a> {
    pub repository: &'a Repository,
    /// The location's configuration (store settings, credentials, recipients).
    pub config: &'a LocationConfig,
    pub location_name: &'a str,
    pub cluster: &'a str,
}

/// How movers reach the location; errors when a pod could not.
pub fn access(
    config: &LocationConfig,
    location_name: &str,
    cluster: &str,
) -> anyhow::Result<MoverAccess> {
    if config.recipients.is_empty() {
        bail!(
            "StorageLocation `{location_name}` has no spec.encryption.recipients: volume data is \
             only kept encrypted; add age recipients to the location"
        );
    }
    if !config.url.starts_with("file://") && config.credentials.is_none() {
        bail!(
            "StorageLocation `{location_name}` uses the default credential chain of whoever \
             runs lifeboat, which a mover pod does not have: give the location \
             spec.credentials (a Secret) so lifeboat can hand them to the mover"
        );
    }
    Ok(MoverAccess {
        location: WorkLocation::from_config(config),
        location_name: location_name.into(),
        cluster: cluster.into(),
    })
}

/// A repository's key, as a mover finds it in its key cache.
fn repo_key(repo: &VolumeRepo) -> RepoKey {
    RepoKey {
        cache_name: repo.reference().cache_key(),
        password: repo.password().to_string(),
        foreign: None,
    }
}

fn entry(
    d: &VolumeDecision,
    method: VolumeMethod,
    phase: VolumePhase,
    error: Option<String>,
) -> VolumeEntry {
    VolumeEntry {
        namespace: d.namespace.clone(),
        pvc: d.pvc.clone(),
        pvc_uid: d.pvc_uid.clone(),
        method: method.to_string(),
        phase,
        snapshot: None,
        bytes: 0,
        new_bytes: 0,
        files: 0,
        duration_ms: 0,
        node: None,
        file: None,
        error,
        kept: None,
    }
}

/// The entry of a volume backed up as `r` says.
fn completed(d: &VolumeDecision, method: VolumeMethod, r: &VolumeResult) -> VolumeEntry {
    let mut e = entry(d, method, VolumePhase::Completed, None);
    e.snapshot = (!r.snapshot.is_empty()).then(|| r.snapshot.clone());
    e.bytes = r.bytes;
    e.new_bytes = r.new_bytes;
    e.files = r.files;
    e.duration_ms = (r.duration_seconds * 1000.0) as u64;
    e.node = r.node.clone();
    e.kept = r.kept.clone();
    e
}

/// The mover settings `base` with the timeouts of `policy`'s `volumes`,
/// and `snapshotMove` keeping its snapshot under `keepLocalSnapshots`.
pub fn policy_movers(base: &MoverOptions, policy: &BackupPolicy) -> MoverOptions {
    let timeouts = policy
        .spec
        .volumes
        .as_ref()
        .map(|v| v.timeouts.clone())
        .unwrap_or_default();
    MoverOptions {
        snapshot_timeout: Duration::from_secs(timeouts.snapshot_ready.as_secs()),
        move_timeout: Duration::from_secs(timeouts.move_data.as_secs()),
        keep_snapshot: keep_local_snapshots(policy) > 0,
        ..base.clone()
    }
}

/// The policy's `volumes.keepLocalSnapshots` (0 without `volumes`).
fn keep_local_snapshots(policy: &BackupPolicy) -> u32 {
    policy
        .spec
        .volumes
        .as_ref()
        .map_or(0, |v| v.keep_local_snapshots)
}

/// `keepLocalSnapshots: N` after a backup of `policy`: the local snapshots
/// of the newest N backups of the policy that kept any stay in the
/// cluster, older ones are deleted with their storage snapshots (the
/// backups themselves and their moved data stay). With N = 0 (or without
/// `volumes`) every local snapshot of the policy goes. Failures are
/// logged: they never fail the backup.
async fn thin_local_snapshots(client: &kube::Client, policy: &BackupPolicy) {
    let name = policy.metadata.name.as_str();
    let keep = keep_local_snapshots(policy) as usize;
    match volumes::thin_local_snapshots(client, |b| is_backup_of(name, b), keep).await {
        Ok(deleted) => {
            for c in deleted {
                tracing::info!(
                    policy = name,
                    "deleted the local snapshot VolumeSnapshotContent {c}: older than the \
                     newest {keep} (keepLocalSnapshots)"
                );
            }
        }
        Err(e) => tracing::warn!(
            policy = name,
            "cannot delete local snapshots beyond keepLocalSnapshots: {e}"
        ),
    }
}

/// How the claims a backup of `policy` selects are protected, by the
/// planner's [`decide`] over the cluster as it is now.
/// Also returns the pods that mount claims (their hooks, the groups) and
/// the KubeVirt VMs. A running VM the backup would hold without its
/// disks, or the reverse, refuses the backup
/// ([`lifeboat_core::kubevirt::refusals`]).
pub async fn decisions(
    client: &kube::Client,
    policy: &BackupPolicy,
    has_recipients: bool,
) -> anyhow::Result<(
    Vec<VolumeDecision>,
    Vec<PodInfo>,
    Vec<lifeboat_core::kubevirt::VmInfo>,
)> {
    let inventory = lifeboat_kube::inventory::inventory(client)
        .await
        .context("cannot list the claims, volumes and snapshot classes to protect")?;
    let invalid = || format!("policy `{}` has an invalid selection", policy.metadata.name);
    let decisions = decide(policy, has_recipients, &inventory).with_context(invalid)?;
    let refused = lifeboat_core::kubevirt::refusals(policy, &inventory.vms, &decisions)
        .with_context(invalid)?;
    if !refused.is_empty() {
        anyhow::bail!(
            "policy `{}` cannot back up its VMs consistently: {}",
            policy.metadata.name,
            refused.join("; ")
        );
    }
    Ok((decisions, inventory.pods, inventory.vms))
}

async fn warn(
    writer: &mut BackupWriter,
    d: &VolumeDecision,
    level: LogLevel,
    message: String,
) -> anyhow::Result<()> {
    writer
        .log(LogEntry {
            level,
            time: jiff::Timestamp::now(),
            resource: Some("persistentvolumeclaims".into()),
            namespace: Some(d.namespace.clone()),
            name: Some(d.pvc.clone()),
            message,
        })
        .await?;
    Ok(())
}

/// Carries the data of the claims a backup of `policy` selects into
/// `writer`, each by the method [`decide`] gives it (`volumes.rules`,
/// Velero's annotations, the automatic choice). A claim no method protects
/// is a warning of the backup, a skipped one an info line; a volume that
/// fails is recorded as failed (the backup becomes `PartiallyFailed`). An
/// error means the backup itself could not be written.
///
/// Claims are backed up concurrently within the policy's
/// `volumes.concurrency` (see [`slots`]): at most `moversPerNode` movers on
/// one node, `moversPerBackup` in all. Each volume is recorded as its mover
/// ends, through the one writer; the manifest lists them by claim.
pub async fn back_up(
    client: &kube::Client,
    writer: &mut BackupWriter,
    policy: &BackupPolicy,
    to: Destination<'_>,
    opts: &MoverOptions,
    events: &(dyn Fn(VolumeEvent<'_>) + Send + Sync),
) -> anyhow::Result<()> {
    let (decisions, pods, vms) =
        decisions(client, policy, !to.config.recipients.is_empty()).await?;
    let backup = writer.name().to_string();
    if decisions.iter().any(VolumeDecision::is_protected) {
        remove_leftovers_of_policy(client, &opts.namespace, &policy.metadata.name, &backup).await;
    }
    // Resuming an interrupted run: first the thaws it owes (pre hooks
    // that ran without their post hook), then the volumes it finished are
    // taken over as they are, and a mover it left running is adopted.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<hooks::Msg>(16);
    let rec = hooks::Recorder(tx);
    let resuming = writer.interrupted().is_some();
    let mut taken_over = Vec::new();
    if let Some(op) = writer.interrupted().cloned() {
        let owed = writer.adopt_hooks(&op).await?;
        let thaws: Vec<hooks::Thaw> = owed
            .iter()
            .filter_map(|i| hooks::owed_thaw(*i, writer.hook(*i)?))
            .collect();
        if !thaws.is_empty() {
            tracing::info!(backup = %backup, "running {} post hooks an interrupted run owes", thaws.len());
            let thawing = hooks::thaw(client, &rec, events, thaws);
            let failures = answer_while(writer, &mut rx, thawing).await?;
            for f in failures {
                tracing::warn!(backup = %backup, "{}", f.reason);
            }
        }
        taken_over = writer.adopt_volumes(&op).await?;
    }
    let planned = decisions.iter().filter(|d| d.is_protected()).count();
    writer
        .volumes_next(u32::try_from(planned).unwrap_or(u32::MAX))
        .await?;
    let deadline = writer.operation().map(|o| o.deadline);
    // Keys of the repositories the methods write, opened once, when the
    // first claim needs them.
    let namespaces: BTreeSet<&str> = decisions
        .iter()
        .filter(|d| d.method.is_some_and(VolumeMethod::writes_repository))
        .map(|d| d.namespace.as_str())
        .collect();
    let keys = Keys {
        namespaces: &namespaces,
        prepared: tokio::sync::OnceCell::new(),
    };
    // The claims whose data this run moves, in the decisions' order.
    let mut jobs: Vec<(&VolumeDecision, VolumeMethod)> = Vec::new();
    for d in &decisions {
        let (namespace, pvc) = (d.namespace.as_str(), d.pvc.as_str());
        let Some(method) = d.method else {
            let reason = d
                .warning
                .clone()
                .unwrap_or_else(|| "no method protects it".into());
            events(VolumeEvent::NotProtected {
                namespace,
                pvc,
                reason: &reason,
            });
            warn(
                writer,
                d,
                LogLevel::Warning,
                format!("the volume data is not protected: {reason}"),
            )
            .await?;
            continue;
        };
        if method == VolumeMethod::Skip {
            events(VolumeEvent::Skipped {
                namespace,
                pvc,
                decided_by: &d.decided_by,
            });
            warn(
                writer,
                d,
                LogLevel::Info,
                format!(
                    "the volume data is not backed up: skipped ({})",
                    d.decided_by
                ),
            )
            .await?;
            continue;
        }
        if let Some(v) = taken_over
            .iter()
            .find(|v| v.namespace == namespace && v.pvc == pvc)
        {
            events(VolumeEvent::TakenOver {
                namespace,
                pvc,
                snapshot: v.snapshot.as_deref().unwrap_or_default(),
            });
            continue;
        }
        jobs.push((d, method));
    }
    if jobs.is_empty() {
        return Ok(());
    }
    if resuming {
        // A mover the interrupted run left is adopted (followed to its
        // end); what else it left for a claim is removed, and the claim
        // starts over below, hooks and all.
        let backup = backup.as_str();
        let adopting = futures::future::join_all(jobs.iter().map(|(d, method)| async move {
            let claim = volumes::Interrupted {
                backup,
                namespace: &d.namespace,
                pvc: &d.pvc,
                pvc_uid: &d.pvc_uid,
                method: mover_method(*method),
            };
            let progress = claim_progress(events, d);
            volumes::take_over(client, claim, opts, &progress)
                .await
                .map_err(|e| e.to_string())
        }));
        let adopted = answer_while(writer, &mut rx, adopting).await?;
        let mut left = Vec::new();
        for (job, r) in jobs.into_iter().zip(adopted) {
            match r {
                Ok(None) => left.push(job),
                Ok(Some(r)) => record(writer, job.0, job.1, Ok(r), events).await?,
                Err(e) => record(writer, job.0, job.1, Err(e), events).await?,
            }
        }
        jobs = left;
        if jobs.is_empty() {
            return Ok(());
        }
    }
    // Groups: the claims pods share, with the pods' hooks.
    let mut hooked = lifeboat_core::hooks::pod_hooks(policy, &pods)
        .with_context(|| format!("policy `{}` has an invalid selection", policy.metadata.name))?;
    // KubeVirt: a running VM's freeze is a pre hook of its launcher pod.
    let unfrozen = lifeboat_core::kubevirt::freeze_hooks(policy, &pods, &vms, &mut hooked)
        .with_context(|| format!("policy `{}` has an invalid selection", policy.metadata.name))?;
    for w in unfrozen {
        events(VolumeEvent::Hook {
            namespace: &w.namespace,
            pod: &w.pod,
            message: &w.message,
        });
        writer
            .log(LogEntry {
                level: LogLevel::Warning,
                time: jiff::Timestamp::now(),
                resource: Some("virtualmachines.kubevirt.io".into()),
                namespace: Some(w.namespace),
                name: Some(w.vm),
                message: w.message,
            })
            .await?;
    }
    let claim_names: Vec<(&str, &str)> = jobs
        .iter()
        .map(|(d, _)| (d.namespace.as_str(), d.pvc.as_str()))
        .collect();
    let group_by = policy
        .spec
        .hooks
        .as_ref()
        .map(|h| h.group_by)
        .unwrap_or_default();
    let groups = lifeboat_core::hooks::groups(&claim_names, &pods, &hooked, group_by);
    let mut group_of = vec![usize::MAX; jobs.len()];
    for (g, group) in groups.iter().enumerate() {
        for &job in &group.claims {
            group_of[job] = g;
        }
    }
    let concurrency = policy
        .spec
        .volumes
        .as_ref()
        .map(|v| v.concurrency.clone())
        .unwrap_or_default();
    let (places, open_nodes) = places(client, &jobs, &concurrency).await;
    let mut slots = Slots::new(&concurrency, open_nodes);
    let run = |job: usize, opts: Result<MoverOptions, String>, snapshotted: Option<Snapshotted>| {
        let (d, method) = jobs[job];
        let (backup, keys) = (backup.as_str(), &keys);
        async move {
            let progress = claim_progress(events, d);
            let result = match opts {
                Ok(opts) => {
                    back_up_claim(
                        client,
                        d,
                        method,
                        backup,
                        snapshotted,
                        to,
                        &opts,
                        keys,
                        &progress,
                    )
                    .await
                }
                Err(e) => {
                    if let Some(s) = snapshotted {
                        s.discard().await;
                    }
                    Err(e)
                }
            };
            (job, result)
        }
    };
    // The snapshot phase of a group with hooks: its pods' pre hooks, the
    // snapshots of its claims (not waiting for mover slots), then — once
    // every snapshot has its handle — the post hooks; `fileSystem` claims
    // have no snapshot, so a group with any thaws after their copies.
    let prepare = |g: usize| -> futures::future::BoxFuture<'_, Stage> {
        let group = &groups[g];
        let (rec, jobs, hooked, backup) = (rec.clone(), &jobs, &hooked, backup.as_str());
        Box::pin(async move {
            let pods: Vec<&lifeboat_core::hooks::PodHooks> =
                group.pods.iter().map(|i| &hooked[*i]).collect();
            let frozen = hooks::freeze(client, &rec, events, &pods).await;
            let mut out = GroupPrepared {
                group: g,
                claims: Vec::new(),
                backup_failure: None,
                thaws: frozen.thaws,
                file_system: Vec::new(),
            };
            if let Some(f) = frozen.failure {
                for &job in &group.claims {
                    out.claims.push((
                        job,
                        Err(format!(
                            "not snapshotted: {} (onError: {})",
                            f.reason, f.on_error
                        )),
                    ));
                }
                if f.on_error == HookOnError::FailBackup {
                    out.backup_failure = Some(f.reason.clone());
                }
            } else {
                out.thaws.extend(frozen.post_only);
                let snaps = group
                    .claims
                    .iter()
                    .filter(|job| jobs[**job].1 != VolumeMethod::FileSystem)
                    .map(|&job| {
                        let (d, method) = jobs[job];
                        async move {
                            let progress = claim_progress(events, d);
                            let r = match claim_options(opts, deadline, d, method) {
                                Ok(o) => match ChosenVolume::snapshot_move(client, d).await {
                                    Ok(v) => {
                                        volumes::take_snapshot(client, &v, backup, &o, &progress)
                                            .await
                                            .map_err(|e| e.to_string())
                                    }
                                    Err(e) => Err(e.to_string()),
                                },
                                Err(e) => Err(e),
                            };
                            (job, r)
                        }
                    });
                out.claims = futures::future::join_all(snaps).await;
                out.file_system = group
                    .claims
                    .iter()
                    .copied()
                    .filter(|job| jobs[*job].1 == VolumeMethod::FileSystem)
                    .collect();
            }
            if out.file_system.is_empty() {
                let thaws = std::mem::take(&mut out.thaws);
                let failures = hooks::thaw(client, &rec, events, thaws).await;
                if let Some(f) = failures
                    .into_iter()
                    .find(|f| f.on_error == HookOnError::FailBackup)
                {
                    out.backup_failure.get_or_insert(f.reason);
                }
            }
            Stage::Prepared(out)
        })
    };
    let thaw_later = |g: usize, thaws: Vec<hooks::Thaw>| -> futures::future::BoxFuture<'_, Stage> {
        let rec = rec.clone();
        Box::pin(async move {
            let failures = hooks::thaw(client, &rec, events, thaws).await;
            Stage::Thawed {
                group: g,
                backup_failure: failures
                    .into_iter()
                    .find(|f| f.on_error == HookOnError::FailBackup)
                    .map(|f| f.reason),
            }
        })
    };
    let mut pending: Vec<(usize, Option<Snapshotted>)> = Vec::new();
    let mut preparing = FuturesUnordered::new();
    // Per group with `fileSystem` claims and hooks: copies left before
    // its thaw, the thaws, and its snapshots held until then.
    let mut copies_left: BTreeMap<usize, usize> = BTreeMap::new();
    let mut owed: BTreeMap<usize, Vec<hooks::Thaw>> = BTreeMap::new();
    let mut held: BTreeMap<usize, Vec<(usize, Snapshotted)>> = BTreeMap::new();
    for (g, group) in groups.iter().enumerate() {
        if group.pods.is_empty() {
            pending.extend(group.claims.iter().map(|&job| (job, None)));
        } else {
            for &job in &group.claims {
                writer
                    .moving(&jobs[job].0.namespace, &jobs[job].0.pvc)
                    .await?;
            }
            preparing.push(prepare(g));
        }
    }
    pending.sort_by_key(|(job, _)| *job);
    let mut failed_backup: Option<String> = None;
    let mut running = FuturesUnordered::new();
    let mut landing = tokio::time::interval(opts.poll.max(Duration::from_millis(100)));
    landing.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if failed_backup.is_some() {
            // The backup fails: nothing new starts; snapshots waiting for a
            // mover are deleted.
            for (job, s) in pending.drain(..) {
                if let Some(s) = s {
                    s.discard().await;
                }
                let (d, method) = jobs[job];
                let why = format!(
                    "not backed up: {}",
                    failed_backup.as_deref().unwrap_or_default()
                );
                record(writer, d, method, Err(why), events).await?;
                // A frozen group waiting for this copy still thaws.
                let g = group_of[job];
                if method == VolumeMethod::FileSystem
                    && let Some(left) = copies_left.get_mut(&g)
                {
                    *left -= 1;
                    if *left == 0 {
                        copies_left.remove(&g);
                        preparing.push(thaw_later(g, owed.remove(&g).unwrap_or_default()));
                    }
                }
            }
        }
        // Start every waiting claim that fits now, in order; when nothing
        // runs the first one always starts, so no limit can stall the
        // backup (no open node known, say).
        let mut i = 0;
        while i < pending.len() {
            let job = pending[i].0;
            if !(slots.is_idle() || slots.fits(&places[job])) {
                i += 1;
                continue;
            }
            let (_, snapshotted) = pending.remove(i);
            let (d, method) = jobs[job];
            writer.moving(&d.namespace, &d.pvc).await?;
            slots.start(job, places[job].clone());
            tracing::debug!(backup = %backup, namespace = %d.namespace, pvc = %d.pvc, place = ?places[job], "starting the claim's mover");
            running.push(run(
                job,
                claim_options(opts, deadline, d, method),
                snapshotted,
            ));
        }
        if running.is_empty() && preparing.is_empty() && pending.is_empty() {
            break;
        }
        tokio::select! {
            Some(msg) = rx.recv() => answer(writer, msg).await?,
            Some(stage) = preparing.next() => match stage {
                Stage::Prepared(p) => {
                    if let Some(f) = p.backup_failure {
                        failed_backup.get_or_insert(f);
                    }
                    let later = !p.file_system.is_empty();
                    for (job, r) in p.claims {
                        let (d, method) = jobs[job];
                        match r {
                            Ok(s) if later => held.entry(p.group).or_default().push((job, s)),
                            Ok(s) => pending.push((job, Some(s))),
                            Err(e) => record(writer, d, method, Err(e), events).await?,
                        }
                    }
                    if later {
                        copies_left.insert(p.group, p.file_system.len());
                        owed.insert(p.group, p.thaws);
                        pending.extend(p.file_system.into_iter().map(|job| (job, None)));
                    }
                    pending.sort_by_key(|(job, _)| *job);
                }
                Stage::Thawed { group, backup_failure } => {
                    if let Some(f) = backup_failure {
                        failed_backup.get_or_insert(f);
                    }
                    pending.extend(held.remove(&group).unwrap_or_default().into_iter().map(|(j, s)| (j, Some(s))));
                    pending.sort_by_key(|(job, _)| *job);
                }
            },
            Some((job, result)) = running.next() => {
                slots.finish(job);
                let (d, method) = jobs[job];
                record(writer, d, method, result, events).await?;
                let g = group_of[job];
                if method == VolumeMethod::FileSystem && let Some(left) = copies_left.get_mut(&g) {
                    *left -= 1;
                    if *left == 0 {
                        copies_left.remove(&g);
                        preparing.push(thaw_later(g, owed.remove(&g).unwrap_or_default()));
                    }
                }
            }
            _ = landing.tick(), if !slots.unplaced().is_empty() => {
                learn_landings(client, &opts.namespace, &backup, &jobs, &mut slots).await;
            }
        }
    }
    if let Some(reason) = failed_backup {
        bail!("{reason} (onError: failBackup)");
    }
    thin_local_snapshots(client, policy).await;
    Ok(())
}

/// A claim's mover progress as [`VolumeEvent::Progress`].
fn claim_progress<'a>(
    events: &'a (dyn Fn(VolumeEvent<'_>) + Send + Sync),
    d: &'a VolumeDecision,
) -> impl Fn(VolumeProgress) + Send + Sync + 'a {
    move |p: VolumeProgress| {
        events(VolumeEvent::Progress {
            namespace: &d.namespace,
            pvc: &d.pvc,
            progress: &p,
        })
    }
}

/// The mover settings of one claim starting now: the whole backup's timeout
/// bounds every step of every claim. An error when it has passed.
fn claim_options(
    opts: &MoverOptions,
    deadline: Option<jiff::Timestamp>,
    d: &VolumeDecision,
    method: VolumeMethod,
) -> Result<MoverOptions, String> {
    let Some(deadline) = deadline else {
        return Ok(opts.clone());
    };
    match Duration::try_from(deadline.duration_since(jiff::Timestamp::now())) {
        Err(_) => Err(format!(
            "the backup reached its timeouts.backup before this claim's turn (the claim \
             would be backed up by {method}, {})",
            d.decided_by
        )),
        Ok(left) => Ok(MoverOptions {
            move_timeout: opts.move_timeout.min(left),
            snapshot_timeout: opts.snapshot_timeout.min(left),
            ..opts.clone()
        }),
    }
}

/// Records the end of one claim: its volume entry and result file.
async fn record(
    writer: &mut BackupWriter,
    d: &VolumeDecision,
    method: VolumeMethod,
    result: Result<VolumeResult, String>,
    events: &(dyn Fn(VolumeEvent<'_>) + Send + Sync),
) -> anyhow::Result<()> {
    let (namespace, pvc) = (d.namespace.as_str(), d.pvc.as_str());
    match result {
        Ok(r) => {
            events(VolumeEvent::Done {
                namespace,
                pvc,
                result: &r,
            });
            writer
                .add_volume(completed(d, method, &r), &serde_json::to_value(&r)?)
                .await?;
        }
        Err(reason) => {
            events(VolumeEvent::Failed {
                namespace,
                pvc,
                reason: &reason,
            });
            writer
                .add_volume(
                    entry(d, method, VolumePhase::Failed, Some(reason.clone())),
                    &serde_json::json!({"error": reason}),
                )
                .await?;
        }
    }
    Ok(())
}

/// What a group's snapshot phase ends with.
enum Stage {
    Prepared(GroupPrepared),
    /// A group's thaw after its `fileSystem` copies.
    Thawed {
        group: usize,
        backup_failure: Option<String>,
    },
}

/// A group whose pre hooks ran and whose claims were snapshotted (or not).
struct GroupPrepared {
    group: usize,
    /// Per claim (job): its snapshot, or why there is none.
    claims: Vec<(usize, Result<Snapshotted, String>)>,
    /// A hook failed with `failBackup`.
    backup_failure: Option<String>,
    /// Post hooks still owed (until the `fileSystem` copies are done).
    thaws: Vec<hooks::Thaw>,
    /// The group's `fileSystem` claims: the thaw waits for their copies.
    file_system: Vec<usize>,
}

/// Answers one hook record message through the writer.
async fn answer(writer: &mut BackupWriter, msg: hooks::Msg) -> anyhow::Result<()> {
    match msg {
        hooks::Msg::Starting(entry, index) => {
            let i = writer.hook_starting(entry).await?;
            let _ = index.send(i);
        }
        hooks::Msg::Ended {
            index,
            entry,
            fails,
            thaws,
            ack,
        } => {
            writer.hook_ended(index, entry, fails, thaws).await?;
            let _ = ack.send(());
        }
    }
    Ok(())
}

/// Awaits `work`, answering hook record messages meanwhile.
async fn answer_while<T>(
    writer: &mut BackupWriter,
    rx: &mut tokio::sync::mpsc::Receiver<hooks::Msg>,
    work: impl std::future::Future<Output = T>,
) -> anyhow::Result<T> {
    tokio::pin!(work);
    loop {
        tokio::select! {
            v = &mut work => return Ok(v),
            Some(msg) = rx.recv() => answer(writer, msg).await?,
        }
    }
}

/// Where each job's mover will run, as far as is known before it starts,
/// and how many nodes a mover the scheduler places may land on. Without
/// the nodes (an error listing them), such movers run one at a time.
async fn places(
    client: &kube::Client,
    jobs: &[(&VolumeDecision, VolumeMethod)],
    limits: &VolumeConcurrency,
) -> (Vec<Place>, usize) {
    let serial = limits.movers_per_backup == Some(1);
    let needs_nodes = !serial && jobs.iter().any(|(_, m)| *m == VolumeMethod::SnapshotMove);
    let placements = if needs_nodes {
        volumes::nodes::placements(client)
            .await
            .inspect_err(|e| {
                tracing::warn!("cannot read where movers will run ({e}); movers the scheduler places run one at a time")
            })
            .unwrap_or_default()
    } else {
        volumes::nodes::Placements::default()
    };
    let places = jobs
        .iter()
        .map(|(d, method)| match method {
            VolumeMethod::FileSystem => d.node.clone().map_or(Place::Scheduler, Place::Node),
            VolumeMethod::SnapshotMove => {
                d.pv.as_ref()
                    .and_then(|pv| placements.pinned.get(pv))
                    .map_or(Place::Scheduler, |n| Place::Node(n.clone()))
            }
            VolumeMethod::Snapshot | VolumeMethod::Skip => Place::NoMover,
        })
        .collect();
    (places, placements.open_nodes.max(1))
}

/// Counts each scheduler-placed mover against the node it was bound to, once
/// it is. A failed look-up is retried at the next tick.
async fn learn_landings(
    client: &kube::Client,
    movers: &str,
    backup: &str,
    jobs: &[(&VolumeDecision, VolumeMethod)],
    slots: &mut Slots,
) {
    let nodes =
        match volumes::nodes::mover_nodes(client, movers, volumes::BACKUP_LABEL, backup).await {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(backup, "cannot see where movers landed: {e}");
                return;
            }
        };
    for job in slots.unplaced() {
        let (d, _) = jobs[job];
        if let Some(node) = nodes.get(&volumes::claim_id(&d.namespace, &d.pvc)) {
            slots.landed(job, node);
        }
    }
}

/// The repository keys of a backup's namespaces, opened once, by the
/// first claim that needs them (claims run concurrently).
struct Keys<'a> {
    namespaces: &'a BTreeSet<&'a str>,
    prepared: tokio::sync::OnceCell<Result<Prepared, String>>,
}

impl Keys<'_> {
    async fn get(
        &self,
        client: &kube::Client,
        to: Destination<'_>,
        opts: &MoverOptions,
    ) -> &Result<Prepared, String> {
        self.prepared
            .get_or_init(|| async {
                backup_keys(client, to, opts, self.namespaces)
                    .await
                    .map_err(|e| format!("{e:#}"))
            })
            .await
    }
}

/// The mover's method of a claim's method (not `skip`).
fn mover_method(method: VolumeMethod) -> volumes::Method {
    match method {
        VolumeMethod::FileSystem => volumes::Method::FileSystem,
        VolumeMethod::Snapshot => volumes::Method::Snapshot,
        VolumeMethod::SnapshotMove | VolumeMethod::Skip => volumes::Method::SnapshotMove,
    }
}

/// Backs up one claim by `method` (not `skip`), from its snapshot when
/// the group's snapshot phase took it already.
#[allow(clippy::too_many_arguments)]
async fn back_up_claim(
    client: &kube::Client,
    d: &VolumeDecision,
    method: VolumeMethod,
    backup: &str,
    snapshotted: Option<Snapshotted>,
    to: Destination<'_>,
    opts: &MoverOptions,
    keys: &Keys<'_>,
    progress: &(dyn Fn(VolumeProgress) + Send + Sync),
) -> Result<VolumeResult, String> {
    if method == VolumeMethod::Skip {
        return Err(format!("`skip` ({}) backs up nothing", d.decided_by));
    }
    let mover_method = mover_method(method);
    if mover_method == volumes::Method::Snapshot {
        // Kept in the storage system: no repository, no key, no mover.
        let v = ChosenVolume::snapshot_move(client, d)
            .await
            .map_err(|e| e.to_string())?;
        let v = ChosenVolume {
            method: volumes::Method::Snapshot,
            ..v
        };
        let kept = match snapshotted {
            Some(s) => volumes::keep_snapshotted(client, &v, s, backup, opts, progress).await,
            None => volumes::keep_snapshot(client, &v, backup, opts, progress).await,
        };
        return kept.map_err(|e| e.to_string());
    }
    let discard = async |s: Option<Snapshotted>| {
        if let Some(s) = s {
            s.discard().await;
        }
    };
    let (access, keys) = match keys.get(client, to, opts).await {
        Ok((access, keys)) => (access, keys),
        Err(e) => {
            discard(snapshotted).await;
            return Err(e.clone());
        }
    };
    let Some(key) = keys.get(d.namespace.as_str()) else {
        discard(snapshotted).await;
        return Err(format!(
            "no key for the volume repository of namespace {}",
            d.namespace
        ));
    };
    let done = match mover_method {
        volumes::Method::FileSystem => match volumes::filesystem::PodVolume::from_decision(d) {
            Ok(v) => {
                volumes::filesystem::back_up_claim(client, &v, backup, access, key, opts, progress)
                    .await
            }
            Err(e) => Err(e),
        },
        volumes::Method::SnapshotMove => match ChosenVolume::snapshot_move(client, d).await {
            Ok(v) => match snapshotted {
                Some(s) => {
                    volumes::back_up_snapshotted(client, &v, s, backup, access, key, opts, progress)
                        .await
                }
                None => {
                    volumes::back_up_claim(client, &v, backup, access, key, opts, progress).await
                }
            },
            Err(e) => {
                discard(snapshotted).await;
                Err(e)
            }
        },
        volumes::Method::Snapshot => Err(volumes::VolumeError::Invalid(
            "a `snapshot` volume has no mover".into(),
        )),
    };
    done.map_err(|e| e.to_string())
}

/// Removes what an unfinished backup (cancelled, interrupted by hand) left:
/// its labelled objects in the cluster, then the uncommitted backup with
/// the volume snapshots its operation record says it finished. Returns the
/// cluster objects removed and what the deletion removed.
pub async fn discard_backup(
    client: &kube::Client,
    movers: &str,
    repository: &Repository,
    cluster: &str,
    backup: &str,
) -> anyhow::Result<(Vec<String>, lifeboat_volume::forget::Deleted)> {
    let mut removed =
        volumes::remove_leftovers(client, movers, volumes::BACKUP_LABEL, |op| op == backup).await?;
    // The leftover removal never touches kept snapshots; an unfinished
    // backup's go with it.
    let (kept, deleted) = delete_backup(Some(client), repository, cluster, backup).await?;
    removed.extend(
        kept.into_iter()
            .map(|c| format!("VolumeSnapshotContent {c} (kept)")),
    );
    Ok((removed, deleted))
}

/// Deletes a backup as prunes and cancellations do: its kept snapshots in
/// the cluster first (when `client` is this cluster's: another cluster's
/// contents are not here), then its volume snapshots are forgotten and the
/// backup deleted. One already gone counts as deleted. Returns the kept
/// contents deleted and what the deletion removed.
pub async fn delete_backup(
    client: Option<&kube::Client>,
    repository: &Repository,
    cluster: &str,
    backup: &str,
) -> anyhow::Result<(Vec<String>, lifeboat_volume::forget::Deleted)> {
    let kept = match client {
        Some(client) => volumes::delete_kept(client, backup).await?,
        None => Vec::new(),
    };
    let deleted = match lifeboat_volume::forget::delete_backup(repository, cluster, backup).await {
        Ok(d) => d,
        Err(lifeboat_store::StoreError::BackupNotFound { .. }) => Default::default(),
        Err(e) => return Err(e.into()),
    };
    Ok((kept, deleted))
}

/// Removes what an unfinished restore left in the cluster (mover pods,
/// their Secrets and claims) and finishes its `InProgress` record as
/// `Failed` with `why`; what it restored stays.
pub async fn discard_restore(
    client: &kube::Client,
    movers: &str,
    repository: Option<&Repository>,
    cluster: &str,
    request: &str,
    why: &str,
) -> anyhow::Result<Vec<String>> {
    let removed =
        volumes::remove_leftovers(client, movers, volumes::RESTORE_LABEL, |op| op == request)
            .await?;
    if let Some(repository) = repository
        && let Some(mut record) = repository.read_restore_record(cluster, request).await?
        && record.phase == lifeboat_store::RestorePhase::InProgress
    {
        record.phase = lifeboat_store::RestorePhase::Failed;
        record.end_time = Some(jiff::Timestamp::now());
        record.message = Some(format!(
            "{why}; what it restored so far stays in the cluster"
        ));
        repository
            .write_restore_record(cluster, request, &record)
            .await?;
    }
    Ok(removed)
}

/// Whether `operation` names a backup of `policy` (`<policy>-YYYYMMDD-HHMMSS`).
fn is_backup_of(policy: &str, operation: &str) -> bool {
    lifeboat_store::parse_backup_name(operation).is_some_and(|(p, _)| p == policy)
}

/// Removes what earlier backups of `policy` left in the cluster (a run
/// killed mid-move). Backups of one policy never run at once — the planner
/// plans one at a time, by hand one backup is one process — so any other
/// backup of the policy is finished or gone. Failures are logged: they
/// never fail this backup.
async fn remove_leftovers_of_policy(
    client: &kube::Client,
    movers: &str,
    policy: &str,
    backup: &str,
) {
    let leftover = |op: &str| op != backup && is_backup_of(policy, op);
    match volumes::remove_leftovers(client, movers, volumes::BACKUP_LABEL, leftover).await {
        Ok(removed) => {
            for r in removed {
                tracing::info!(
                    policy,
                    "removed {r}, left by an earlier backup of the policy"
                );
            }
        }
        Err(e) => tracing::warn!(
            policy,
            "cannot remove what earlier backups of the policy left in the cluster: {e}"
        ),
    }
}

/// Prunes the repository of `namespace` (generation `generation`) in
/// `to` by a maintenance mover, and records the attempt and its outcome in
/// the repository's maintenance record, which the planner reads to know
/// when the next prune is due. The key comes from the cluster's key cache
/// (this cluster wrote the repository).
pub async fn maintain(
    client: &kube::Client,
    to: Destination<'_>,
    namespace: &str,
    generation: u32,
    keep_delete: Duration,
    opts: &MoverOptions,
    now: impl Fn() -> jiff::Timestamp,
) -> anyhow::Result<volumes::MaintenanceResult> {
    use lifeboat_volume::maintenance::{
        MaintenanceRecord, maintenance_record, write_maintenance_record,
    };
    let started = now();
    let reference = lifeboat_volume::RepoRef {
        location: to.location_name.to_string(),
        cluster: to.cluster.to_string(),
        namespace: namespace.to_string(),
        generation,
    };
    let run = async {
        let access = access(to.config, to.location_name, to.cluster)?;
        volumes::ensure_movers_namespace(client, &opts.namespace).await?;
        let cache = SecretKeyCache::new(client.clone(), &opts.namespace, KEY_CACHE_SECRET);
        let repo = VolumeRepo::open_existing(
            to.repository,
            to.location_name,
            to.cluster,
            namespace,
            Some(generation),
            Some(&cache),
        )
        .await
        .with_context(|| format!("cannot open the volume repository of {namespace}"))?;
        let work = volumes::MaintenanceWork {
            generation,
            keep_delete_seconds: keep_delete.as_secs(),
        };
        let done =
            volumes::maintain_repository(client, &access, &repo_key(&repo), namespace, work, opts)
                .await?;
        anyhow::Ok(done)
    };
    let result = run.await;
    let previous = maintenance_record(to.repository, &reference)
        .await
        .ok()
        .flatten();
    let record = match &result {
        Ok(done) => MaintenanceRecord {
            last_attempt: started,
            last_success: Some(started),
            error: None,
            report: Some(lifeboat_volume::PruneReport {
                packs_to_delete: done.packs_to_delete,
                packs_marked: done.packs_marked,
                packs_waiting: done.packs_waiting,
                packs_recovered: done.packs_recovered,
                bytes_to_delete: done.bytes_to_delete,
                bytes_marked: done.bytes_marked,
            }),
        },
        Err(e) => MaintenanceRecord {
            last_attempt: started,
            last_success: previous.as_ref().and_then(|p| p.last_success),
            error: Some(format!("{e:#}")),
            report: previous.and_then(|p| p.report),
        },
    };
    write_maintenance_record(to.repository, &reference, &record)
        .await
        .context("cannot write the repository's maintenance record")?;
    result
}

/// The movers' access and the repository key of each namespace.
type Prepared = (MoverAccess, BTreeMap<String, RepoKey>);

/// The movers' access and the key of each namespace's repository (created
/// when missing; the keys cached in the cluster).
async fn backup_keys(
    client: &kube::Client,
    to: Destination<'_>,
    opts: &MoverOptions,
    namespaces: &BTreeSet<&str>,
) -> anyhow::Result<Prepared> {
    let access = access(to.config, to.location_name, to.cluster)?;
    volumes::ensure_movers_namespace(client, &opts.namespace).await?;
    let cache: Arc<dyn KeyCache> = Arc::new(SecretKeyCache::new(
        client.clone(),
        &opts.namespace,
        KEY_CACHE_SECRET,
    ));
    let mut keys = BTreeMap::new();
    for ns in namespaces {
        let repo = VolumeRepo::open_or_create(
            to.repository,
            to.location_name,
            to.cluster,
            ns,
            cache.as_ref(),
        )
        .await
        .with_context(|| format!("cannot open the volume repository of {ns}"))?;
        keys.insert((*ns).to_string(), repo_key(&repo));
    }
    Ok((access, keys))
}

/// What a restore of `backup` needs to fill claims with its volume data:
/// the movers' access and (unless a dry run) each source namespace's
/// repository key, opened with the identities of `from.config`. `None`
/// when the backup carries no volume data.
pub async fn for_restore(
    from: Destination<'_>,
    backup: &str,
    request: &str,
    dry_run: bool,
    movers: MoverOptions,
) -> anyhow::Result<Option<lifeboat_kube::restore::VolumeData>> {
    let Ok(reader) = from.repository.open_backup(from.cluster, backup).await else {
        // The restore itself reports why the backup cannot be opened.
        return Ok(None);
    };
    // One snapshot per namespace finds the repository generation the
    // backup wrote to (all its volumes of a namespace are in one).
    let namespaces: BTreeMap<String, String> = reader
        .volumes()
        .iter()
        .filter(|v| v.phase == VolumePhase::Completed)
        .filter_map(|v| Some((v.namespace.clone(), v.snapshot.clone()?)))
        .collect();
    let kept = reader
        .volumes()
        .iter()
        .any(|v| v.phase == VolumePhase::Completed && v.kept.is_some());
    if namespaces.is_empty() && !kept {
        return Ok(None);
    }
    // Only kept snapshots: no mover will run, so the location need not be
    // one a mover can reach.
    let access = match access(from.config, from.location_name, from.cluster) {
        Ok(a) => a,
        Err(_) if namespaces.is_empty() => MoverAccess {
            location: WorkLocation::from_config(from.config),
            location_name: from.location_name.into(),
            cluster: from.cluster.into(),
        },
        Err(e) => return Err(e),
    };
    let mut keys = BTreeMap::new();
    // Without identities the encrypted archive cannot be read either: the
    // restore fails (and is recorded) before any claim would be filled.
    if !dry_run && !from.config.identities.is_empty() {
        for (ns, snapshot) in &namespaces {
            let repo = VolumeRepo::open_holding(
                from.repository,
                from.location_name,
                from.cluster,
                ns,
                snapshot,
                None,
            )
            .await
            .with_context(|| {
                format!(
                    "cannot open the volume repository of namespace {ns}; restoring volume data \
                     needs an age identity of the location (by hand: --identity FILE; in the \
                     controller: the location's encryption.identitySecretRef)"
                )
            })?;
            keys.insert(ns.clone(), repo_key(&repo));
        }
    }
    Ok(Some(lifeboat_kube::restore::VolumeData {
        restore: request.to_string(),
        access,
        keys,
        movers,
    }))
}

/// What a restore of Velero backup `backup` needs to fill claims with the
/// data Velero's restic uploader wrote: the movers' access to the Velero
/// location and, per namespace with restic pod volume backups, the
/// repository `restic/<namespace>` with Velero's static password (which
/// reaches the mover only through the per-operation Secret, as lifeboat's
/// keys do). `None` when the backup has no restic pod volume backups.
pub async fn for_velero_restore(
    velero: &lifeboat_store::VeleroLocation,
    config: &LocationConfig,
    location_name: &str,
    backup: &str,
    request: &str,
    movers: MoverOptions,
) -> anyhow::Result<Option<lifeboat_kube::restore::VolumeData>> {
    let backups = match velero.pod_volume_backups(backup).await {
        Ok(b) => b,
        // The restore itself reports why the backup cannot be read.
        Err(lifeboat_store::StoreError::VeleroBackupNotFound { .. }) => return Ok(None),
        Err(e) => {
            return Err(anyhow::Error::from(e)
                .context(format!("cannot read the pod volume backups of `{backup}`")));
        }
    };
    // Kopia's are reported per claim by the restore, with no mover.
    let namespaces: BTreeSet<&str> = backups
        .iter()
        .filter(|b| b.uploader == lifeboat_store::Uploader::Restic)
        .map(|b| b.namespace.as_str())
        .collect();
    // Claims Velero kept otherwise (data mover, CSI snapshots) are
    // reported by the restore too, with no mover.
    let infos = velero.volume_infos(backup).await.map_err(|e| {
        anyhow::Error::from(e).context(format!("cannot read the volume information of `{backup}`"))
    })?;
    if backups.is_empty() && infos.is_empty() {
        return Ok(None);
    }
    let access = if namespaces.is_empty() {
        // No mover runs: how it would reach the location does not matter.
        MoverAccess {
            location: WorkLocation::from_config(config),
            location_name: location_name.into(),
            cluster: location_name.into(),
        }
    } else {
        velero_access(config, location_name)?
    };
    let keys = namespaces
        .into_iter()
        .map(|ns| {
            let key = RepoKey {
                cache_name: lifeboat_volume::RepoRef {
                    location: format!("velero-{location_name}"),
                    cluster: "restic".into(),
                    namespace: ns.into(),
                    generation: 1,
                }
                .cache_key(),
                password: lifeboat_store::VELERO_RESTIC_PASSWORD.into(),
                foreign: Some(lifeboat_store::velero_restic_repository(ns)),
            };
            (ns.to_string(), key)
        })
        .collect();
    Ok(Some(lifeboat_kube::restore::VolumeData {
        restore: request.to_string(),
        access,
        keys,
        movers,
    }))
}

/// How movers reach a Velero location: as [`access`], without the
/// recipients (Velero's data is not encrypted by lifeboat, and nothing is
/// written there).
fn velero_access(config: &LocationConfig, location_name: &str) -> anyhow::Result<MoverAccess> {
    if !config.url.starts_with("file://") && config.credentials.is_none() {
        bail!(
            "StorageLocation `{location_name}` uses the default credential chain of whoever \
             runs lifeboat, which a mover pod does not have: give the location \
             spec.credentials (a Secret with read access to Velero's bucket) so lifeboat can \
             hand them to the mover, or restore with --no-volume-data"
        );
    }
    Ok(MoverAccess {
        location: WorkLocation::from_config(config),
        location_name: location_name.into(),
        cluster: location_name.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::is_backup_of;

    #[test]
    fn backups_of_a_policy_are_told_from_other_policies_backups() {
        assert!(is_backup_of("db", "db-20261201-020000"));
        assert!(!is_backup_of("db", "db-x-20261201-020000"));
        assert!(!is_backup_of("db", "dbx-20261201-020000"));
        assert!(!is_backup_of("db", "db-20261201-02000"));
        assert!(!is_backup_of("db", "db-2026120a-020000"));
        assert!(is_backup_of("db-x", "db-x-20261201-020000"));
    }
}
