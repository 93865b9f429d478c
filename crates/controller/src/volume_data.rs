//! Volume data of one backup or restore, for `lifeboat backup` /
//! `lifeboat restore` run by hand and for the controller alike: the
//! repository keys, then one mover per claim (`lifeboat_kube::volumes`).
//!
//! ```text
//! backup:  claims to protect ─▶ keys (one repository per namespace, cached
//!          in a Secret of the movers' namespace) ─▶ back_up_claim per claim
//!          ─▶ one volume entry (Completed / Failed) or a warning per claim
//! restore: the backup's completed volumes ─▶ keys opened with the
//!          location's age identities ─▶ restore::VolumeData
//! ```
//!
//! What happens is reported as [`VolumeEvent`]s; the CLI shows them on a
//! terminal, the controller logs them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::{Context, bail};
use lifeboat_kube::select::Selection;
use lifeboat_kube::volumes::{
    self, ChosenVolume, MoverAccess, MoverOptions, RepoKey, VolumeProgress, VolumeResult,
    WorkLocation,
};
use lifeboat_store::{
    BackupWriter, LocationConfig, LogEntry, LogLevel, Repository, VolumeEntry, VolumePhase,
};
use lifeboat_volume::secret_cache::SecretKeyCache;
use lifeboat_volume::{KeyCache, VolumeRepo};

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
    /// A claim's data is in the repository.
    Done {
        namespace: &'a str,
        pvc: &'a str,
        result: &'a VolumeResult,
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
    }
}

fn entry(v: &ChosenVolume, phase: VolumePhase, error: Option<String>) -> VolumeEntry {
    VolumeEntry {
        namespace: v.namespace.clone(),
        pvc: v.pvc.clone(),
        pvc_uid: v.pvc_uid.clone(),
        method: v.method.to_string(),
        phase,
        snapshot: None,
        bytes: 0,
        new_bytes: 0,
        files: 0,
        duration_ms: 0,
        node: None,
        file: None,
        error,
    }
}

async fn fail(
    writer: &mut BackupWriter,
    v: &ChosenVolume,
    reason: String,
    events: &(dyn Fn(VolumeEvent<'_>) + Send + Sync),
) -> anyhow::Result<()> {
    events(VolumeEvent::Failed {
        namespace: &v.namespace,
        pvc: &v.pvc,
        reason: &reason,
    });
    writer
        .add_volume(
            entry(v, VolumePhase::Failed, Some(reason.clone())),
            &serde_json::json!({"error": reason}),
        )
        .await?;
    Ok(())
}

/// Carries the data of the claims `selection` backs up into `writer`:
/// one `snapshotMove` per chosen claim; claims no method protects are
/// warnings of the backup. A volume that fails is recorded as failed (the
/// backup becomes `PartiallyFailed`); an error means the backup itself
/// could not be written.
pub async fn back_up(
    client: &kube::Client,
    writer: &mut BackupWriter,
    selection: &Selection,
    to: Destination<'_>,
    opts: &MoverOptions,
    events: &(dyn Fn(VolumeEvent<'_>) + Send + Sync),
) -> anyhow::Result<()> {
    let (mut chosen, mut unprotected) = volumes::choose_volumes(client, selection).await?;
    if to.config.recipients.is_empty() {
        // Volume data is only ever kept encrypted: without recipients no
        // claim is protected, which the backup says.
        unprotected.extend(chosen.drain(..).map(|v| volumes::Unprotected {
            namespace: v.namespace,
            pvc: v.pvc,
            reason: format!(
                "StorageLocation `{}` has no spec.encryption.recipients, and volume data is \
                 only kept encrypted",
                to.location_name
            ),
        }));
    }
    for u in &unprotected {
        events(VolumeEvent::NotProtected {
            namespace: &u.namespace,
            pvc: &u.pvc,
            reason: &u.reason,
        });
        writer
            .log(LogEntry {
                level: LogLevel::Warning,
                time: jiff::Timestamp::now(),
                resource: Some("persistentvolumeclaims".into()),
                namespace: Some(u.namespace.clone()),
                name: Some(u.pvc.clone()),
                message: format!("the volume data is not protected: {}", u.reason),
            })
            .await?;
    }
    if chosen.is_empty() {
        return Ok(());
    }
    let backup = writer.name().to_string();
    let namespaces: BTreeSet<&str> = chosen.iter().map(|v| v.namespace.as_str()).collect();
    let (access, keys) = match backup_keys(client, to, opts, &namespaces).await {
        Ok(p) => p,
        Err(e) => {
            let reason = format!("{e:#}");
            for v in &chosen {
                fail(writer, v, reason.clone(), events).await?;
            }
            return Ok(());
        }
    };
    for v in &chosen {
        let key = &keys[&v.namespace];
        let progress = |p: VolumeProgress| {
            events(VolumeEvent::Progress {
                namespace: &v.namespace,
                pvc: &v.pvc,
                progress: &p,
            })
        };
        match volumes::back_up_claim(client, v, &backup, &access, key, opts, &progress).await {
            Ok(r) => {
                events(VolumeEvent::Done {
                    namespace: &v.namespace,
                    pvc: &v.pvc,
                    result: &r,
                });
                let mut e = entry(v, VolumePhase::Completed, None);
                e.snapshot = Some(r.snapshot.clone());
                e.bytes = r.bytes;
                e.new_bytes = r.new_bytes;
                e.files = r.files;
                e.duration_ms = (r.duration_seconds * 1000.0) as u64;
                e.node = r.node.clone();
                writer.add_volume(e, &serde_json::to_value(&r)?).await?;
            }
            Err(err) => fail(writer, v, err.to_string(), events).await?,
        }
    }
    Ok(())
}

/// The movers' access and the key of each namespace's repository (created
/// when missing; the keys cached in the cluster).
async fn backup_keys(
    client: &kube::Client,
    to: Destination<'_>,
    opts: &MoverOptions,
    namespaces: &BTreeSet<&str>,
) -> anyhow::Result<(MoverAccess, BTreeMap<String, RepoKey>)> {
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
    let namespaces: BTreeSet<String> = reader
        .volumes()
        .iter()
        .filter(|v| v.phase == VolumePhase::Completed && v.snapshot.is_some())
        .map(|v| v.namespace.clone())
        .collect();
    if namespaces.is_empty() {
        return Ok(None);
    }
    let access = access(from.config, from.location_name, from.cluster)?;
    let mut keys = BTreeMap::new();
    // Without identities the encrypted archive cannot be read either: the
    // restore fails (and is recorded) before any claim would be filled.
    if !dry_run && !from.config.identities.is_empty() {
        for ns in &namespaces {
            let repo = VolumeRepo::open_existing(
                from.repository,
                from.location_name,
                from.cluster,
                ns,
                None,
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
