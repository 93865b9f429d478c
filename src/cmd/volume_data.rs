//! Volume data for `lifeboat backup` and `lifeboat restore` run by hand:
//! the repository keys, then one mover per claim through the kubeconfig
//! (`lifeboat_kube::volumes`), with per-volume progress.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args as ClapArgs;
use lifeboat_core::model::{BackupPolicy, VolumeMethod};
use lifeboat_kube::select::Selection;
use lifeboat_kube::volumes::{
    self, ChosenVolume, MoverAccess, MoverOptions, RepoKey, VolumeProgress, WorkLocation,
};
use lifeboat_store::{
    BackupWriter, LocationConfig, LogEntry, LogLevel, Repository, VolumeEntry, VolumePhase,
};
use lifeboat_volume::secret_cache::SecretKeyCache;
use lifeboat_volume::{KeyCache, VolumeRepo};

use crate::progress::Reporter;

/// The Secret (in the movers' namespace) caching repository keys where
/// backups run, so later backups need no identity.
pub const KEY_CACHE_SECRET: &str = "lifeboat-volume-keys";

/// Mover settings shared by `backup` and `restore`.
#[derive(Debug, Clone, ClapArgs)]
pub struct MoverArgs {
    /// The mover image (lifeboat's own; set it for a mirrored registry).
    #[arg(long, value_name = "IMAGE", default_value = volumes::DEFAULT_IMAGE, env = "LIFEBOAT_MOVER_IMAGE")]
    pub mover_image: String,
    /// The namespace mover pods run in.
    #[arg(long, value_name = "NAMESPACE", default_value = volumes::MOVERS_NAMESPACE)]
    pub movers_namespace: String,
    /// The ServiceAccount of mover pods (deploy/ creates `lifeboat-mover`;
    /// OpenShift's SCC for `fileSystem` movers is granted to it). Default:
    /// the namespace's `default`.
    #[arg(long, value_name = "NAME", env = "LIFEBOAT_MOVER_SERVICE_ACCOUNT")]
    pub mover_service_account: Option<String>,
    /// How long a CSI snapshot may take to become ready (seconds).
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub snapshot_timeout: u64,
    /// How long one volume's mover may take (seconds).
    #[arg(long, value_name = "SECONDS", default_value_t = 4 * 3600)]
    pub move_timeout: u64,
}

impl MoverArgs {
    pub fn options(&self) -> MoverOptions {
        MoverOptions {
            image: self.mover_image.clone(),
            namespace: self.movers_namespace.clone(),
            snapshot_timeout: Duration::from_secs(self.snapshot_timeout),
            move_timeout: Duration::from_secs(self.move_timeout),
            service_account: self.mover_service_account.clone(),
            ..MoverOptions::default()
        }
    }
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
            "StorageLocation `{location_name}` uses this machine's default credential chain, \
             which a mover pod does not have: give the location spec.credentials (a Secret) so \
             lifeboat can hand them to the mover"
        );
    }
    Ok(MoverAccess {
        location: WorkLocation::from_config(config),
        location_name: location_name.into(),
        cluster: cluster.into(),
    })
}

/// A repository's key, as a mover finds it in its key cache.
async fn repo_key(repo: &VolumeRepo) -> RepoKey {
    RepoKey {
        cache_name: repo.reference().cache_key(),
        password: repo.password().to_string(),
    }
}

pub fn show(reporter: &Reporter, what: &str) -> impl Fn(VolumeProgress) + Send + Sync + use<> {
    let reporter = reporter.clone();
    let what = what.to_string();
    move |p| match p {
        VolumeProgress::Step { step } => reporter.line(&format!("volume {what}: {step}"), 0),
        VolumeProgress::Moving {
            bytes_done,
            bytes_total,
            files_done,
            files_total,
        } => reporter.line(
            &format!(
                "volume {what}: {bytes_done}/{bytes_total} bytes, {files_done}/{files_total} files"
            ),
            bytes_done,
        ),
    }
}

fn entry(v: &ChosenVolume, phase: VolumePhase, error: Option<String>) -> VolumeEntry {
    VolumeEntry {
        error,
        ..entry_of((&v.namespace, &v.pvc, &v.pvc_uid), v.method, phase)
    }
}

fn entry_of(
    (namespace, pvc, pvc_uid): (&str, &str, &str),
    method: volumes::Method,
    phase: VolumePhase,
) -> VolumeEntry {
    VolumeEntry {
        namespace: namespace.to_string(),
        pvc: pvc.to_string(),
        pvc_uid: pvc_uid.to_string(),
        method: method.to_string(),
        phase,
        snapshot: None,
        bytes: 0,
        new_bytes: 0,
        files: 0,
        duration_ms: 0,
        node: None,
        file: None,
        error: None,
    }
}

/// Carries the data of the claims `selection` backs up into `writer`:
/// one `snapshotMove` per chosen claim; claims no method protects are
/// warnings of the backup. A volume that fails is recorded as failed.
#[allow(clippy::too_many_arguments)]
pub async fn back_up(
    client: &kube::Client,
    writer: &mut BackupWriter,
    selection: &Selection,
    repository: &Repository,
    config: &LocationConfig,
    location_name: &str,
    cluster: &str,
    opts: &MoverOptions,
    reporter: &Reporter,
    policy: &BackupPolicy,
) -> anyhow::Result<()> {
    let (mut chosen, mut unprotected) = volumes::choose_volumes(client, selection).await?;
    // fileSystem where the policy asks for it, as the planner decides.
    let mut pod_volumes = Vec::new();
    for d in file_system_decisions(client, policy, !config.recipients.is_empty()).await? {
        chosen.retain(|v| (&v.namespace, &v.pvc) != (&d.namespace, &d.pvc));
        unprotected.retain(|v| (&v.namespace, &v.pvc) != (&d.namespace, &d.pvc));
        match volumes::filesystem::PodVolume::from_decision(&d) {
            Ok(v) => pod_volumes.push(v),
            Err(_) => unprotected.push(volumes::Unprotected {
                namespace: d.namespace,
                pvc: d.pvc,
                reason: d.warning.unwrap_or_default(),
            }),
        }
    }
    if config.recipients.is_empty() {
        // Volume data is only ever kept encrypted: without recipients no
        // claim is protected, which the backup says.
        unprotected.extend(chosen.drain(..).map(|v| volumes::Unprotected {
            namespace: v.namespace,
            pvc: v.pvc,
            reason: format!(
                "StorageLocation `{location_name}` has no spec.encryption.recipients, and volume \
                 data is only kept encrypted"
            ),
        }));
    }
    for u in &unprotected {
        reporter.line(
            &format!(
                "volume {}/{}: not protected: {}",
                u.namespace, u.pvc, u.reason
            ),
            0,
        );
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
    if chosen.is_empty() && pod_volumes.is_empty() {
        return Ok(());
    }
    let backup = writer.name().to_string();
    // Keys: one repository per namespace; the cache lives in the cluster.
    let prepared = async {
        let access = access(config, location_name, cluster)?;
        volumes::ensure_movers_namespace(client, &opts.namespace).await?;
        let cache: Arc<dyn KeyCache> = Arc::new(SecretKeyCache::new(
            client.clone(),
            &opts.namespace,
            KEY_CACHE_SECRET,
        ));
        let mut keys = BTreeMap::new();
        let namespaces = chosen.iter().map(|v| &v.namespace);
        for ns in namespaces.chain(pod_volumes.iter().map(|v| &v.namespace)) {
            if keys.contains_key(ns) {
                continue;
            }
            let repo =
                VolumeRepo::open_or_create(repository, location_name, cluster, ns, cache.as_ref())
                    .await
                    .with_context(|| format!("cannot open the volume repository of {ns}"))?;
            keys.insert(ns.clone(), repo_key(&repo).await);
        }
        anyhow::Ok((access, keys))
    }
    .await;
    let (access, keys) = match prepared {
        Ok(p) => p,
        Err(e) => {
            let reason = format!("{e:#}");
            let entries = chosen.iter().map(|v| entry(v, VolumePhase::Failed, None));
            let fs = pod_volumes.iter().map(|v| fs_entry(v, VolumePhase::Failed));
            for mut e in entries.chain(fs) {
                reporter.line(
                    &format!("volume {}/{}: failed: {reason}", e.namespace, e.pvc),
                    0,
                );
                e.error = Some(reason.clone());
                writer
                    .add_volume(e, &serde_json::json!({"error": reason}))
                    .await?;
            }
            return Ok(());
        }
    };
    let snapshot_moves = chosen
        .iter()
        .map(|v| (entry(v, VolumePhase::Completed, None), Some(v), None));
    let file_systems = pod_volumes
        .iter()
        .map(|v| (fs_entry(v, VolumePhase::Completed), None, Some(v)));
    for (mut e, snapshot_move, file_system) in snapshot_moves.chain(file_systems) {
        let what = format!("{}/{}", e.namespace, e.pvc);
        let key = &keys[&e.namespace];
        let progress = show(reporter, &what);
        let result = match (snapshot_move, file_system) {
            (Some(v), _) => {
                volumes::back_up_claim(client, v, &backup, &access, key, opts, &progress).await
            }
            (_, Some(v)) => {
                volumes::filesystem::back_up_claim(
                    client, v, &backup, &access, key, opts, &progress,
                )
                .await
            }
            (None, None) => continue,
        };
        match result {
            Ok(r) => {
                reporter.line(
                    &format!(
                        "volume {what}: snapshot {} ({} files, {} bytes, {} new)",
                        short(&r.snapshot),
                        r.files,
                        r.bytes,
                        r.new_bytes
                    ),
                    r.bytes,
                );
                e.snapshot = Some(r.snapshot.clone());
                e.bytes = r.bytes;
                e.new_bytes = r.new_bytes;
                e.files = r.files;
                e.duration_ms = (r.duration_seconds * 1000.0) as u64;
                e.node = r.node.clone();
                writer.add_volume(e, &serde_json::to_value(&r)?).await?;
            }
            Err(err) => {
                let reason = err.to_string();
                reporter.line(&format!("volume {what}: failed: {reason}"), 0);
                e.phase = VolumePhase::Failed;
                e.error = Some(reason.clone());
                writer
                    .add_volume(e, &serde_json::json!({"error": reason}))
                    .await?;
            }
        }
    }
    Ok(())
}

/// The planner's decisions of the claims `policy` wants backed up by
/// `fileSystem` (carried out, or not protected with the reason).
async fn file_system_decisions(
    client: &kube::Client,
    policy: &BackupPolicy,
    has_recipients: bool,
) -> anyhow::Result<Vec<lifeboat_core::volumes::VolumeDecision>> {
    // Rules, `volumes.method` and Velero's `backup.velero.io/backup-volumes`
    // pod annotation can each ask for it: the planner sees them all.
    let inventory = lifeboat_kube::inventory::inventory(client).await?;
    let decisions = lifeboat_core::volumes::decide(policy, has_recipients, &inventory)?;
    Ok(decisions
        .into_iter()
        .filter(|d| d.wanted == Some(VolumeMethod::FileSystem))
        .collect())
}

fn fs_entry(v: &volumes::filesystem::PodVolume, phase: VolumePhase) -> VolumeEntry {
    entry_of(
        (&v.namespace, &v.pvc, &v.pvc_uid),
        volumes::Method::FileSystem,
        phase,
    )
}

/// What a restore of `backup` needs to fill claims with its volume data:
/// the movers' access and (unless a dry run) each source namespace's
/// repository key, opened with the identities. `None` when the backup
/// carries no volume data.
#[allow(clippy::too_many_arguments)]
pub async fn for_restore(
    set: &lifeboat_core::load::PolicySet,
    repository: &Repository,
    location_name: &str,
    source_cluster: &str,
    backup: &str,
    request: &str,
    identities: &[String],
    dry_run: bool,
    movers: MoverOptions,
) -> anyhow::Result<Option<lifeboat_kube::restore::VolumeData>> {
    let Ok(reader) = repository.open_backup(source_cluster, backup).await else {
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
    if namespaces.is_empty() {
        return Ok(None);
    }
    let location = set
        .storage_location(location_name)
        .ok_or_else(|| anyhow::anyhow!("no StorageLocation named `{location_name}`"))?;
    let config = lifeboat_controller::locations::config(set, &location.doc, identities.to_vec());
    let access = access(&config, location_name, source_cluster)?;
    let mut keys = BTreeMap::new();
    // Without identities the encrypted archive cannot be read either: the
    // restore fails (and is recorded) before any claim would be filled.
    if !dry_run && !identities.is_empty() {
        for (ns, snapshot) in &namespaces {
            let repo = VolumeRepo::open_holding(
                repository,
                location_name,
                source_cluster,
                ns,
                snapshot,
                None,
            )
            .await
            .with_context(|| {
                format!(
                    "cannot open the volume repository of namespace {ns}; restoring \
                             volume data needs an age identity of the location (--identity FILE)"
                )
            })?;
            keys.insert(ns.clone(), repo_key(&repo).await);
        }
    }
    Ok(Some(lifeboat_kube::restore::VolumeData {
        restore: request.to_string(),
        access,
        keys,
        movers,
    }))
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}
