//! OpenShift ImageStream images: copied into the location with a backup,
//! pushed to the target's registry with a restore, swept by retention.
//!
//! ```text
//! backup:  BackupSummary.image_streams ─▶ openshift::stream_images (heads | all)
//!          ─▶ images of the internal registry ─▶ Repository::copy_image each
//!          ─▶ BackupWriter::add_images ─▶ manifest `images[]`
//! restore: manifest `images[]` (selected namespaces) ─▶ namespace mapping
//!          ─▶ Repository::push_image each, once the objects are applied
//! sweep:   Repository::image_inventory ─▶ core::images::plan_sweep (pure)
//!          ─▶ delete_image_blobs, delete_pending_refs
//! ```
//!
//! Registry access: the Cluster's `spec.openshift.registryEndpoint`
//! (default `https://<internalRegistry>`), a bearer token (the
//! ServiceAccount token when running in a pod, or `LIFEBOAT_REGISTRY_TOKEN`)
//! and, in a pod, the service CA OpenShift mounts beside the token.

use std::collections::BTreeSet;
use std::sync::Arc;

use anyhow::Context;
use jiff::Timestamp;
use lifeboat_core::images::{self as core_images, SweepPlan};
use lifeboat_core::load::PolicySet;
use lifeboat_core::model::{BackupPolicy, ClusterOpenShift};
use lifeboat_kube::backup::StoredImageStream;
use lifeboat_kube::openshift;
use lifeboat_kube::select::Selection;
use lifeboat_store::registry::{Registry, RegistryAuth, RegistryConfig};
use lifeboat_store::{
    BackupWriter, ImageEntry, ImageSource, LogEntry, LogLevel, Manifest, Repository, RestoredImage,
};

/// Where a pod's ServiceAccount token is mounted.
const SA_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// OpenShift's service CA, mounted beside it (it signs the internal
/// registry's certificate).
const SA_SERVICE_CA: &str = "/var/run/secrets/kubernetes.io/serviceaccount/service-ca.crt";
/// A registry token given by hand (`oc whoami -t`), for runs outside a pod.
pub const TOKEN_ENV: &str = "LIFEBOAT_REGISTRY_TOKEN";

/// How a backup copies images.
#[derive(Debug, Clone)]
pub struct ImageCopy {
    pub registry: Arc<Registry>,
    /// `host[:port]` image references name the internal registry by.
    pub internal_registry: String,
    /// Every image of each tag's history, not only the heads.
    pub history: bool,
}

/// How a restore pushes images.
#[derive(Debug, Clone)]
pub struct ImagePush {
    pub registry: Arc<Registry>,
}

/// The registry of a cluster, as configured in its Cluster document (the
/// defaults without one).
pub fn registry(openshift: Option<&ClusterOpenShift>) -> anyhow::Result<Registry> {
    let default = ClusterOpenShift::default();
    let openshift = openshift.unwrap_or(&default);
    let auth = match std::env::var(TOKEN_ENV) {
        Ok(t) if !t.trim().is_empty() => Some(RegistryAuth::Token(t.trim().to_string())),
        _ => std::fs::read_to_string(SA_TOKEN)
            .ok()
            .map(|t| RegistryAuth::Token(t.trim().to_string())),
    };
    let ca_pem = std::fs::read(SA_SERVICE_CA).ok();
    Ok(Registry::new(&RegistryConfig {
        endpoint: openshift.registry_endpoint(),
        auth,
        ca_pem,
    })?)
}

/// The image copy a policy asks for on `cluster`, if any.
pub fn copy_options(
    set: &PolicySet,
    cluster: &str,
    policy: &BackupPolicy,
) -> anyhow::Result<Option<ImageCopy>> {
    let Some(images) = policy.spec.images.as_ref().filter(|i| i.copies()) else {
        return Ok(None);
    };
    let openshift = set.cluster(cluster).map(|c| &c.doc.spec.openshift);
    let registry = registry(openshift).with_context(|| {
        format!(
            "policy `{}` copies images, but cluster `{cluster}`'s registry is not usable",
            policy.metadata.name
        )
    })?;
    Ok(Some(ImageCopy {
        registry: Arc::new(registry),
        internal_registry: openshift
            .map_or(ClusterOpenShift::DEFAULT_INTERNAL_REGISTRY, |o| {
                o.internal_registry()
            })
            .to_string(),
        history: images.history == lifeboat_core::model::ImageHistory::All,
    }))
}

/// The registry images are pushed to on a restore into `target`.
pub fn push_options(set: &PolicySet, target: &str) -> anyhow::Result<ImagePush> {
    let openshift = set.cluster(target).map(|c| &c.doc.spec.openshift);
    let registry = registry(openshift)
        .with_context(|| format!("cluster `{target}`'s image registry is not usable"))?;
    Ok(ImagePush {
        registry: Arc::new(registry),
    })
}

fn log(level: LogLevel, ns: &str, name: &str, message: String) -> LogEntry {
    LogEntry {
        level,
        time: Timestamp::now(),
        resource: Some("imagestreams.image.openshift.io".into()),
        namespace: Some(ns.to_string()),
        name: Some(name.to_string()),
        message,
    }
}

/// Copies the images of the stored ImageStreams into the backup's
/// location and lists them in its manifest. An image that cannot be
/// copied is an error line of the log (the backup is `PartiallyFailed`);
/// an image outside the internal registry is an info line. Before it
/// returns, every referenced blob is checked to be stored, and copied
/// again if a sweep removed it meanwhile.
pub async fn copy_images(
    repository: &Repository,
    writer: &mut BackupWriter,
    copy: &ImageCopy,
    streams: &[StoredImageStream],
) -> anyhow::Result<()> {
    let cluster = writer.cluster().to_string();
    let backup = writer.name().to_string();
    let handle = writer.handle();
    let mut pending = BTreeSet::new();
    let mut entries: Vec<ImageEntry> = Vec::new();
    let mut sources: Vec<ImageSource> = Vec::new();
    for s in streams {
        for image in openshift::stream_images(&s.namespace, &s.name, &s.status, copy.history) {
            let Some(repo) = image.repository_in(&copy.internal_registry) else {
                handle
                    .log(log(
                        LogLevel::Info,
                        &s.namespace,
                        &s.name,
                        format!(
                            "tag {} points at {}, outside the internal registry {}: not copied",
                            image.tag, image.reference, copy.internal_registry
                        ),
                    ))
                    .await?;
                continue;
            };
            if !lifeboat_store::registry::valid_repository(repo)
                || !lifeboat_store::registry::valid_digest(&image.digest)
            {
                handle
                    .log(log(
                        LogLevel::Error,
                        &s.namespace,
                        &s.name,
                        format!(
                            "tag {} names {:?}, not a repository@sha256 digest: not copied",
                            image.tag, image.reference
                        ),
                    ))
                    .await?;
                continue;
            }
            let source = ImageSource {
                repository: repo.to_string(),
                tag: image.tag.clone(),
                digest: image.digest.clone(),
                head: image.head,
            };
            if sources.contains(&source) {
                continue;
            }
            sources.push(source);
        }
    }
    for source in &sources {
        let (ns, name) = source
            .repository
            .split_once('/')
            .unwrap_or((source.repository.as_str(), ""));
        match repository
            .copy_image(&copy.registry, source, (&cluster, &backup), &mut pending)
            .await
        {
            Ok((entry, stats)) => {
                tracing::info!(
                    backup = %backup,
                    image = %format!("{}:{}@{}", source.repository, source.tag, source.digest),
                    uploaded = stats.uploaded,
                    present = stats.present,
                    bytes = stats.bytes,
                    "image copied"
                );
                entries.push(entry);
            }
            Err(e) => {
                handle
                    .log(log(
                        LogLevel::Error,
                        ns,
                        name,
                        format!(
                            "image {}:{} ({}) was not copied: {e}",
                            source.repository, source.tag, source.digest
                        ),
                    ))
                    .await?;
            }
        }
    }
    // A sweep that ran while this backup copied may have removed a blob
    // it found present: copy those images again.
    let stored: BTreeSet<String> = entries
        .iter()
        .flat_map(|e| e.stored().map(str::to_string))
        .collect();
    let missing = repository.missing_image_blobs(&stored).await?;
    if !missing.is_empty() {
        for entry in entries.iter_mut() {
            if !entry.stored().any(|d| missing.iter().any(|m| m == d)) {
                continue;
            }
            let source = ImageSource {
                repository: entry.repository.clone(),
                tag: entry.tag.clone(),
                digest: entry.digest.clone(),
                head: entry.head,
            };
            let (again, _) = repository
                .copy_image(&copy.registry, &source, (&cluster, &backup), &mut pending)
                .await
                .with_context(|| {
                    format!("image {} lost blobs during the backup", entry.repository)
                })?;
            *entry = again;
        }
    }
    writer.add_images(entries);
    Ok(())
}

/// Pushes the images of a backup into the target registry, for the
/// namespaces `selection` restores, renamed under `mapping` (source
/// namespace → target). A dry run says what it would push.
pub async fn push_images(
    repository: &Repository,
    manifest: &Manifest,
    push: &ImagePush,
    selection: &Selection,
    map_ns: &(dyn Fn(&str) -> String + Sync),
    dry_run: bool,
) -> Vec<RestoredImage> {
    let encrypted = !manifest.recipients.is_empty();
    let mut out = Vec::new();
    for entry in &manifest.images {
        let (ns, stream) = entry
            .repository
            .split_once('/')
            .unwrap_or((entry.repository.as_str(), ""));
        if !selection.namespace(ns) {
            continue;
        }
        let target = format!("{}/{stream}", map_ns(ns));
        match repository
            .push_image(&push.registry, entry, &target, encrypted, dry_run)
            .await
        {
            Ok(pushed) => out.push(pushed),
            Err(e) => out.push(RestoredImage {
                repository: target,
                tag: entry.tag.clone(),
                digest: entry.digest.clone(),
                blobs_pushed: 0,
                blobs_present: 0,
                bytes_pushed: 0,
                manifests_pushed: 0,
                error: Some(e.to_string()),
            }),
        }
    }
    out
}

/// What a sweep of a location's images did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepReport {
    pub plan: SweepPlan,
    /// Blob objects deleted.
    pub deleted: u64,
    /// Committed manifests read for their references.
    pub manifests: usize,
    pub grace: lifeboat_core::Duration,
}

/// Sweeps the images of `location` at `now`: blobs no committed backup
/// references and no running backup recorded, older than the grace of the
/// policies writing there. A dry run decides and deletes nothing.
pub async fn sweep(
    repository: &Repository,
    set: &PolicySet,
    location: &str,
    now: Timestamp,
    dry_run: bool,
) -> anyhow::Result<SweepReport> {
    let grace = core_images::sweep_grace(
        set.policies
            .iter()
            .map(|p| &p.doc)
            .filter(|p| p.spec.storage == location),
    );
    sweep_with_grace(repository, now, grace, dry_run).await
}

/// [`sweep`] with a given grace.
pub async fn sweep_with_grace(
    repository: &Repository,
    now: Timestamp,
    grace: lifeboat_core::Duration,
    dry_run: bool,
) -> anyhow::Result<SweepReport> {
    let inv = repository.image_inventory().await?;
    let blobs: Vec<core_images::StoredBlob> = inv
        .blobs
        .iter()
        .map(|b| core_images::StoredBlob {
            digest: b.digest.clone(),
            modified: b.modified,
        })
        .collect();
    let pending: Vec<core_images::PendingRefs> = inv
        .pending
        .iter()
        .map(|p| core_images::PendingRefs {
            name: p.name.clone(),
            modified: p.modified,
            digests: p.digests.clone(),
        })
        .collect();
    let plan = core_images::plan_sweep(&blobs, &inv.referenced, &pending, now, grace);
    let mut deleted = 0;
    if !dry_run {
        deleted = repository.delete_image_blobs(&plan.delete).await?;
        repository.delete_pending_refs(&plan.stale_pending).await?;
    }
    Ok(SweepReport {
        plan,
        deleted,
        manifests: inv.manifests,
        grace,
    })
}
