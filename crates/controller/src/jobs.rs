//! One backup and one restore, as the CLI and the executor run them: the
//! engine of `lifeboat-kube` wired to a repository of `lifeboat-store`, with
//! the failure handling that keeps half-written work from being reported as
//! complete.

use std::collections::BTreeMap;

use anyhow::Context;
use jiff::Timestamp;
use lifeboat_core::hooks::level::LevelPhase;
use lifeboat_core::model::{HookOnError, default_denied_namespaces};
use lifeboat_core::{BackupPolicy, Cluster, Include, RestoreRequest};
use lifeboat_kube::backup::{self, BackupOptions};
use lifeboat_kube::restore::{self, ClaimSelection, RestoreOptions};
use lifeboat_kube::select::Selection;
use lifeboat_kube::transform::Transform;
use lifeboat_store::{
    BackupSpec, BackupWriter, Manifest, Repository, RestorePhase, RestoreRecord, VeleroLocation,
};

/// What to back up and under which name.
#[derive(Debug, Clone)]
pub struct BackupJob<'a> {
    pub cluster: &'a str,
    pub policy: &'a BackupPolicy,
    /// The schedule slot; the backup is named after it.
    pub slot: Timestamp,
    /// Git revision of the policy repository, when known.
    pub revision: Option<String>,
    /// `schedule` or `manual`, stored as the `lifeboat.dev/trigger` label.
    pub trigger: &'a str,
    /// Who runs it (the controller instance, or a by-hand run), recorded
    /// in the backup's operation record.
    pub owner: &'a str,
    /// The movers' namespace, where (as in lifeboat's own) no Job hook
    /// may run.
    pub movers_namespace: &'a str,
    /// Copy the ImageStreams' images (`spec.images`), see
    /// [`crate::images::copy_options`].
    pub images: Option<crate::images::ImageCopy>,
}

/// Runs one backup. A backup the engine could not finish (the API server
/// went away, say) is committed as `Failed` with the reason and returned;
/// an error means nothing could be committed (storage failed), and the
/// writer was aborted.
pub async fn run_backup(
    client: &kube::Client,
    repository: &Repository,
    job: &BackupJob<'_>,
    options: &BackupOptions,
    progress: &(dyn Fn(backup::Progress) + Send + Sync),
    now: impl Fn() -> Timestamp,
) -> anyhow::Result<Manifest> {
    run_backup_then(
        client,
        repository,
        job,
        options,
        progress,
        now,
        async |_: &mut BackupWriter| Ok(()),
    )
    .await
}

/// [`run_backup`], with `after_objects` run once the objects are stored and
/// the dump hooks ran ([`crate::dumps`]), before the manifest commits the
/// backup (volume data goes there).
pub async fn run_backup_then(
    client: &kube::Client,
    repository: &Repository,
    job: &BackupJob<'_>,
    options: &BackupOptions,
    progress: &(dyn Fn(backup::Progress) + Send + Sync),
    now: impl Fn() -> Timestamp,
    after_objects: impl AsyncFnOnce(&mut BackupWriter) -> anyhow::Result<()>,
) -> anyhow::Result<Manifest> {
    let spec = &job.policy.spec;
    let selection = Selection::new(&spec.include, &spec.exclude).with_context(|| {
        format!(
            "policy `{}` has an invalid selection",
            job.policy.metadata.name
        )
    })?;
    // An interrupted run of this slot (a killed controller) left its
    // operation record: this run resumes it, within its deadline.
    let name = lifeboat_store::backup_name(&job.policy.metadata.name, job.slot);
    let interrupted = repository
        .read_operation(job.cluster, &name)
        .await
        .with_context(|| format!("cannot read the operation record of backup `{name}`"))?;
    let timeout = spec
        .volumes
        .as_ref()
        .map(|v| v.timeouts.backup)
        .unwrap_or_else(lifeboat_core::model::default_backup_timeout);
    let (started, deadline) = match &interrupted {
        Some(op) => (op.started, op.deadline),
        None => {
            let started = now();
            (
                started,
                started
                    .saturating_add(timeout.to_signed())
                    .unwrap_or(started),
            )
        }
    };
    let mut writer = repository
        .begin_backup(BackupSpec {
            cluster: job.cluster.to_string(),
            policy: job.policy.metadata.name.clone(),
            policy_revision: job.revision.clone(),
            schedule_slot: job.slot,
            start_time: started,
            labels: BTreeMap::from([("lifeboat.dev/trigger".to_string(), job.trigger.to_string())]),
        })
        .await?;
    if let Some(op) = &interrupted {
        tracing::info!(
            backup = %name,
            owner = %op.owner,
            volumes_done = op.volumes.len(),
            "resuming a backup its earlier run left unfinished"
        );
        if now() >= deadline {
            let reason = format!(
                "interrupted (its run by {} stopped) and not finished within timeouts.backup                  ({timeout}) of its start at {started}",
                op.owner
            );
            return writer
                .finish_failed(now(), reason)
                .await
                .with_context(|| format!("backup `{name}` could not be committed"));
        }
    }
    if let Err(e) = writer
        .track(job.owner, started, deadline, interrupted)
        .await
    {
        let _ = writer.abort().await;
        return Err(anyhow::Error::from(e).context(format!(
            "cannot write the operation record of backup `{name}`"
        )));
    }
    // Backup-level hooks: `before` ones first, `after` ones at the end of
    // every run that got this far, whatever happened in between.
    let earlier: Vec<lifeboat_store::HookEntry> = writer
        .interrupted()
        .map(|op| op.hooks.clone())
        .unwrap_or_default();
    let before = level_hooks(client, &mut writer, job, LevelPhase::Before, &earlier).await?;
    let result = match before {
        Some(reason) => Err(reason),
        None => match backup::backup(client, &selection, &writer.handle(), options, progress).await
        {
            // The ImageStreams' images, then dump hooks (their artifacts
            // are files of their own), then the volume data.
            Ok(summary) => async {
                if let Some(copy) = &job.images {
                    crate::images::copy_images(
                        repository,
                        &mut writer,
                        copy,
                        &summary.image_streams,
                    )
                    .await?;
                }
                crate::dumps::back_up(client, &mut writer, job.policy).await?;
                after_objects(&mut writer).await
            }
            .await
            .map_err(|e| format!("{e:#}")),
            Err(e) => Err(e.to_string()),
        },
    };
    let after = level_hooks(client, &mut writer, job, LevelPhase::After, &earlier).await?;
    let committed = match (result, after) {
        (Ok(()), None) => writer.finish(now()).await,
        (Err(e), _) | (Ok(()), Some(e)) => writer.finish_failed(now(), e).await,
    };
    if job.images.is_some() && committed.is_ok() {
        // The manifest lists the images now; the pending references have
        // served (a stale one left behind is removed by the sweep).
        if let Err(e) = repository.remove_pending_refs(job.cluster, &name).await {
            tracing::warn!(backup = %name, "cannot remove the pending image references: {e}");
        }
    }
    committed.with_context(|| format!("backup `{name}` could not be committed"))
}

/// Runs the policy's backup-level hooks of `phase` in order, each recorded
/// in the operation record before it runs; one an interrupted run already
/// finished (in `earlier`) is not run again. Returns the reason the backup
/// fails when a hook with `onError: failBackup` failed (later hooks of the
/// phase do not run then); an error means the record could not be written.
async fn level_hooks(
    client: &kube::Client,
    writer: &mut BackupWriter,
    job: &BackupJob<'_>,
    phase: LevelPhase,
    earlier: &[lifeboat_store::HookEntry],
) -> anyhow::Result<Option<String>> {
    let Some(hooks) = &job.policy.spec.hooks else {
        return Ok(None);
    };
    let declared = match phase {
        LevelPhase::Before => &hooks.before,
        LevelPhase::After => &hooks.after,
    };
    if declared.is_empty() {
        return Ok(None);
    }
    // Exec hooks choose their pod among the pods of their namespace.
    let mut pods = Vec::new();
    let namespaces: std::collections::BTreeSet<&str> = declared
        .iter()
        .filter_map(|h| h.exec.as_ref().map(|e| e.namespace.as_str()))
        .collect();
    for ns in namespaces {
        match lifeboat_kube::inventory::pods_in(client, ns).await {
            Ok(p) => pods.extend(p),
            Err(e) => {
                tracing::warn!(namespace = %ns, "cannot list pods for backup-level hooks: {e}")
            }
        }
    }
    let backup = writer.name().to_string();
    let phase_name = phase.to_string();
    for hook in
        lifeboat_core::hooks::level::level_hooks(job.policy, phase, &pods, job.movers_namespace)
    {
        let done = earlier.iter().any(|e| {
            e.phase == phase_name && e.hook == hook.name && e.duration_ms.is_some() && !e.failed()
        });
        if done {
            tracing::info!(backup = %backup, hook = %hook.name, "{phase} hook already ran in the interrupted run");
            continue;
        }
        let mut entry = lifeboat_store::HookEntry::started(
            (&hook.namespace, &hook.pod_or_job(&backup), hook.container()),
            &hook.name,
            &phase_name,
            hook.command(),
            Timestamp::now(),
        );
        let index = writer.hook_starting(entry.clone()).await?;
        let outcome = lifeboat_kube::level_hooks::run(client, &backup, &hook).await;
        entry.duration_ms = Some(outcome.duration.as_millis() as u64);
        entry.exit_code = outcome.exit_code;
        entry.stderr = outcome.stderr.clone();
        entry.error = outcome.error.clone();
        let fails = hook.on_error != HookOnError::Continue;
        writer.hook_ended(index, entry, fails, None).await?;
        if let Some(why) = outcome.error {
            tracing::warn!(backup = %backup, hook = %hook.name, "{phase} hook failed (onError: {}): {why}", hook.on_error);
            if hook.on_error == HookOnError::FailBackup {
                return Ok(Some(format!(
                    "{phase} hook {} failed (onError: failBackup): {why}",
                    hook.name
                )));
            }
        } else {
            tracing::info!(backup = %backup, hook = %hook.name, "{phase} hook ran");
        }
    }
    Ok(None)
}

/// The restore options a RestoreRequest asks for, into `target`.
pub fn restore_options(
    request: &RestoreRequest,
    target: Option<&Cluster>,
) -> anyhow::Result<RestoreOptions> {
    let spec = &request.spec;
    Ok(RestoreOptions {
        selection: Selection::new(&spec.include, &spec.exclude).with_context(|| {
            format!(
                "RestoreRequest `{}` has an invalid selection",
                request.metadata.name
            )
        })?,
        transform: Transform {
            namespace_mapping: spec.namespace_mapping.clone(),
            storage_class_mapping: target
                .map(|c| c.spec.storage_class_mapping.clone())
                .unwrap_or_default(),
            kubevirt: lifeboat_kube::kubevirt::RestoreConfig::from_request(
                &spec.kubevirt,
                &request.metadata.name,
            ),
            ..Transform::default()
        },
        existing: spec.existing_resources,
        dry_run: spec.dry_run,
        denied_namespaces: target
            .map(|c| c.spec.restore.denied_namespaces.clone())
            .unwrap_or_else(default_denied_namespaces),
        // Single claims: other objects only when an include asks for them.
        claims: ClaimSelection::of(&spec.claims, spec.include != Include::default()),
        hooks: spec
            .hooks
            .as_ref()
            .map(|h| h.pods.clone())
            .unwrap_or_default(),
        ..RestoreOptions::default()
    })
}

/// What to restore, from where, and as which request.
#[derive(Debug, Clone)]
pub struct RestoreJob<'a> {
    /// The request name the record is kept under.
    pub request: &'a str,
    pub source_cluster: &'a str,
    pub backup: &'a str,
    pub target_cluster: &'a str,
    pub options: RestoreOptions,
    /// Write the record (false for ReadOnly locations).
    pub record: bool,
    /// The controller instance running it: its record then carries a
    /// deadline ([`RESTORE_DEADLINE`]) within which a later controller
    /// resumes it after an interruption. `None` (by hand): never resumed.
    pub owner: Option<&'a str>,
    /// Read the backup from this Velero location instead of from the
    /// repository, which then only keeps the record (a Velero bucket is
    /// never written).
    pub velero: Option<&'a VeleroLocation>,
    /// Where the backup's images are pushed (once the objects are
    /// applied), see [`crate::images::push_options`]; `None`: not pushed.
    pub images: Option<crate::images::ImagePush>,
}

/// How long after its start an interrupted controller restore is run again
/// rather than marked `Failed`.
pub const RESTORE_DEADLINE: jiff::SignedDuration = jiff::SignedDuration::from_hours(12);

/// Runs one restore and records it. The record is first written
/// `InProgress` (with owner and deadline when a controller runs it), so a
/// controller that dies mid-restore finds it: the next one runs it again
/// before the deadline (keeping the first run's start and deadline), and
/// marks it `Failed` after. It is then replaced by the final record. A
/// restore that could not start (verification failed, wrong key) is
/// recorded `Failed` with the reason, and the error is returned too.
pub async fn run_restore(
    client: &kube::Client,
    repository: &Repository,
    job: &RestoreJob<'_>,
    progress: &(dyn Fn(restore::Progress) + Send + Sync),
    now: impl Fn() -> Timestamp,
) -> anyhow::Result<RestoreRecord> {
    let mut start = now();
    let mut deadline = job
        .owner
        .map(|_| start.saturating_add(RESTORE_DEADLINE).unwrap_or(start));
    if job.record
        && job.owner.is_some()
        && let Some(earlier) = repository
            .read_restore_record(job.target_cluster, job.request)
            .await?
        && earlier.phase == RestorePhase::InProgress
        && earlier.deadline.is_some()
    {
        tracing::info!(
            request = job.request,
            owner = earlier.owner.as_deref().unwrap_or("?"),
            "resuming a restore its earlier run left unfinished"
        );
        start = earlier.start_time;
        deadline = earlier.deadline;
    }
    let mut record = RestoreRecord {
        request: job.request.to_string(),
        source_cluster: job.source_cluster.to_string(),
        source_backup: job.backup.to_string(),
        target_cluster: job.target_cluster.to_string(),
        start_time: start,
        end_time: None,
        phase: RestorePhase::InProgress,
        owner: job.owner.map(str::to_string),
        deadline,
        message: None,
        dry_run: job.options.dry_run,
        counts: Default::default(),
        items: Vec::new(),
        missing_prerequisites: Vec::new(),
        volumes: Vec::new(),
        hooks: Vec::new(),
        hook_counts: Default::default(),
        images: Vec::new(),
        lifeboat_version: lifeboat_store::LIFEBOAT_VERSION.into(),
    };
    if job.record {
        repository
            .write_restore_record(job.target_cluster, job.request, &record)
            .await
            .context("cannot write the restore record, so the restore was not started")?;
    }
    // The signature is checked when the backup is opened; a refused one
    // fails in `restore` before anything is applied.
    let mut warning = None;
    let mut images = Vec::new();
    let outcome = if let Some(velero) = job.velero {
        match velero.open_backup(job.backup).await {
            Ok(reader) => restore::restore(client, &reader, &job.options, progress)
                .await
                .map_err(anyhow::Error::from),
            Err(e) => Err(anyhow::Error::from(e)),
        }
    } else {
        match repository.open_backup(job.source_cluster, job.backup).await {
            Ok(reader) => {
                warning = reader.signature().warning();
                if let Some(w) = &warning {
                    tracing::warn!(request = job.request, backup = job.backup, "{w}");
                }
                let outcome = restore::restore(client, &reader, &job.options, progress)
                    .await
                    .map_err(anyhow::Error::from);
                // Images after the objects: OpenShift's registry accepts a
                // push into a namespace only once it exists (and has its
                // image-builder binding); pods started meanwhile retry
                // their pulls. A restore that was refused pushes nothing.
                if outcome.is_ok()
                    && let Some(push) = &job.images
                    && !reader.manifest().images.is_empty()
                {
                    let transform = &job.options.transform;
                    let map = |ns: &str| transform.namespace(ns).to_string();
                    images = crate::images::push_images(
                        repository,
                        reader.manifest(),
                        push,
                        &job.options.selection,
                        &map,
                        job.options.dry_run,
                    )
                    .await;
                }
                outcome
            }
            Err(e) => Err(anyhow::Error::from(e)),
        }
    };
    match outcome {
        Ok(outcome) => {
            record = outcome.into_record(
                job.request,
                job.source_cluster,
                job.backup,
                job.target_cluster,
                start,
                now(),
            );
            if let Some(w) = warning {
                record.message = Some(match record.message.take() {
                    Some(m) => format!("{m}; {w}"),
                    None => w,
                });
            }
            let failed_images = images.iter().filter(|i| i.error.is_some()).count();
            if failed_images > 0 {
                // The objects are in; some images are not: PartiallyFailed.
                if record.phase == RestorePhase::Completed {
                    record.phase = RestorePhase::PartiallyFailed;
                }
                let note = format!("{failed_images} images were not pushed (see images)");
                record.message = Some(match record.message.take() {
                    Some(m) => format!("{m}; {note}"),
                    None => note,
                });
            }
            record.images = images;
        }
        Err(e) => {
            record.phase = RestorePhase::Failed;
            record.end_time = Some(now());
            record.message = Some(format!("{e:#}"));
            if job.record {
                repository
                    .write_restore_record(job.target_cluster, job.request, &record)
                    .await?;
            }
            return Err(e);
        }
    }
    if job.record {
        repository
            .write_restore_record(job.target_cluster, job.request, &record)
            .await
            .context("the restore ran but its record could not be written")?;
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(spec: serde_json::Value) -> RestoreRequest {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "lifeboat.dev/v1alpha1", "kind": "RestoreRequest",
            "metadata": {"name": "r"},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn claims_restore_alone_unless_an_include_selects_more() {
        let base = serde_json::json!({
            "source": {"cluster": "prod", "policy": "p"}, "target": {"cluster": "prod"},
            "claims": ["shop/data-0", "shop/data-1"],
        });
        let alone = restore_options(&request(base.clone()), None).unwrap();
        let claims = alone.claims.unwrap();
        assert!(!claims.with_selection);
        assert_eq!(
            claims.claims.into_iter().collect::<Vec<_>>(),
            [
                ("shop".to_string(), "data-0".to_string()),
                ("shop".to_string(), "data-1".to_string())
            ]
        );
        let mut with = base;
        with["include"] = serde_json::json!({"namespaces": ["shop"]});
        let with = restore_options(&request(with), None).unwrap();
        assert!(with.claims.unwrap().with_selection);
        let none = restore_options(
            &request(serde_json::json!({
                "source": {"cluster": "prod", "policy": "p"}, "target": {"cluster": "prod"},
            })),
            None,
        )
        .unwrap();
        assert!(none.claims.is_none());
    }
}
