//! Velero's backups, read where Velero left them: a `format: velero`
//! StorageLocation is the bucket and prefix of a Velero or OADP
//! BackupStorageLocation. lifeboat lists and restores its backups without
//! Velero installed, and never writes there.
//!
//! ```text
//! <prefix>/backups/<name>/velero-backup.json   the Backup object: phase, times, items
//!                        /<name>.tar.gz        the objects:
//!   resources/<resource>[.<group>]/<version>-preferredversion/namespaces/<ns>/<name>.json
//!   resources/<resource>[.<group>]/namespaces/<ns>/<name>.json   unversioned copy
//!   resources/<resource>[.<group>]/<version>/…                    other versions (EnableAPIGroupVersions)
//!   resources/…/cluster/<name>.json                               cluster-scoped objects
//!   metadata/version
//!                        /<name>-podvolumebackups.json.gz   Velero's file-system backups:
//!                                                           a gzipped JSON array of PodVolumeBackups
//!                        /<name>-volumeinfo.json.gz         Velero 1.12+: how each claim's data was
//!                                                           kept (CSI snapshot, data mover, …)
//! <prefix>/restic/<namespace>/   restic repository of a namespace's pod volumes
//!                                (Velero's restic uploader; password `static-passw0rd`)
//! <prefix>/kopia/<namespace>/    Kopia repository (Velero's kopia uploader, OADP >= 1.3): not read
//! ```
//!
//! A PodVolumeBackup names a pod, one of its volumes and the snapshot of
//! it; the pod in the tarball says which claim that volume is. Completed
//! restic backups of claims become the reader's [`RestoreSource::volumes`]
//! (method [`VELERO_RESTIC`]), which lifeboat's movers restore from the
//! namespace's restic repository; Kopia ones, and those Velero did not
//! finish, become [`RestoreSource::unreadable_volumes`] with the reason.
//! Pod volumes that are not claims (`emptyDir` …) are not restored. The
//! volume information of Velero 1.12+ adds the claims whose data Velero
//! kept otherwise — moved by its data mover (Kopia), or a CSI or native
//! snapshot in the source's storage — as unreadable, with the reason.
//!
//! Each object is read from its preferred-version copy, else from its
//! unversioned copy (backups of Velero before 1.4 have only that); copies
//! in other versions are not read. Velero records no checksums, so
//! [`VeleroReader::verify`] checks what can be checked before anything is
//! applied: gzip's CRC and length, the tar structure, and that every
//! object read is a JSON object. The server fields Velero keeps (status,
//! uid, resourceVersion, managedFields) are removed by the restore's
//! transforms, as for every backup.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{self, Read};
use std::sync::{Arc, OnceLock};

use futures::{Stream, TryStreamExt};
use jiff::Timestamp;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::config::{LocationConfig, build_store};
use crate::error::{Result, StoreError};
use crate::model::{Prerequisite, VolumeEntry, VolumePhase};
use crate::reader::{ArchiveEntry, RestoreSource, Stop, VerifyReport};
use crate::repo::{Repository, validate_name};

/// The password of every restic repository Velero's restic uploader
/// creates (Velero's default `velero-repo-credentials`): whoever may read
/// the bucket may read every volume in it.
pub const VELERO_RESTIC_PASSWORD: &str = "static-passw0rd";

/// [`VolumeEntry::method`] of a claim Velero backed up with restic.
pub const VELERO_RESTIC: &str = "veleroRestic";
/// [`VolumeEntry::method`] of a claim Velero backed up with Kopia.
pub const VELERO_KOPIA: &str = "veleroKopia";

/// The directory (below the location) of the restic repository Velero
/// keeps the pod volumes of `namespace` in.
pub fn velero_restic_repository(namespace: &str) -> String {
    format!("restic/{namespace}")
}

/// Which of Velero's uploaders wrote a pod volume's data.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Uploader {
    /// restic (`uploaderType: restic`, or none: Velero before 1.10).
    Restic,
    /// Kopia (`uploaderType: kopia`).
    Kopia,
    /// Anything else, as Velero wrote it.
    Other(String),
}

impl std::fmt::Display for Uploader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Uploader::Restic => "restic",
            Uploader::Kopia => "kopia",
            Uploader::Other(o) => o,
        })
    }
}

/// One of Velero's PodVolumeBackups: a file-system backup of one volume of
/// one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodVolumeBackup {
    /// The pod's namespace (its repository's namespace too).
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    /// The pod's volume name (`spec.volumes[].name`).
    pub volume: String,
    pub uploader: Uploader,
    /// Where Velero says the repository is (`spec.repoIdentifier`).
    pub repo_identifier: String,
    /// `Completed`, `Failed`, `InProgress`, `New` as Velero wrote it.
    pub phase: String,
    /// The snapshot id in the repository (`status.snapshotID`).
    pub snapshot: String,
    /// The path Velero's node agent read (`status.path`).
    pub path: String,
    pub message: String,
    /// `status.progress.totalBytes`.
    pub bytes: u64,
    pub started: Option<Timestamp>,
    pub completed: Option<Timestamp>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct PvbDoc {
    spec: PvbSpec,
    status: PvbStatus,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct PvbSpec {
    pod: PvbPod,
    volume: String,
    repo_identifier: String,
    uploader_type: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PvbPod {
    namespace: String,
    name: String,
    uid: String,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct PvbStatus {
    phase: String,
    path: String,
    #[serde(rename = "snapshotID")]
    snapshot_id: String,
    message: String,
    start_timestamp: Option<Timestamp>,
    completion_timestamp: Option<Timestamp>,
    progress: PvbProgress,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct PvbProgress {
    total_bytes: u64,
}

impl From<PvbDoc> for PodVolumeBackup {
    fn from(d: PvbDoc) -> Self {
        PodVolumeBackup {
            namespace: d.spec.pod.namespace,
            pod: d.spec.pod.name,
            pod_uid: d.spec.pod.uid,
            volume: d.spec.volume,
            uploader: match d.spec.uploader_type.as_str() {
                "" | "restic" => Uploader::Restic,
                "kopia" => Uploader::Kopia,
                other => Uploader::Other(other.to_string()),
            },
            repo_identifier: d.spec.repo_identifier,
            phase: d.status.phase,
            snapshot: d.status.snapshot_id,
            path: d.status.path,
            message: d.status.message,
            bytes: d.status.progress.total_bytes,
            started: d.status.start_timestamp,
            completed: d.status.completion_timestamp,
        }
    }
}

/// Parses `<backup>-podvolumebackups.json.gz` (`display` names it in errors).
fn parse_pod_volume_backups(gz: &[u8], display: &str) -> Result<Vec<PodVolumeBackup>> {
    let corrupt = |reason: String| StoreError::Corrupt {
        path: display.to_string(),
        reason,
    };
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut json)
        .map_err(|e| corrupt(format!("not gzip: {e}")))?;
    // Velero writes `null` when a backup has none.
    let docs: Option<Vec<PvbDoc>> = serde_json::from_slice(&json)
        .map_err(|e| corrupt(format!("not a JSON array of PodVolumeBackups: {e}")))?;
    Ok(docs
        .unwrap_or_default()
        .into_iter()
        .map(PodVolumeBackup::from)
        .collect())
}

/// One entry of `<backup>-volumeinfo.json.gz` (Velero 1.12+): how a
/// claim's data was kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct VolumeInfo {
    pub pvc_name: String,
    pub pvc_namespace: String,
    /// `PodVolumeBackup`, `CSISnapshot`, `NativeSnapshot` (empty: skipped).
    pub backup_method: String,
    /// Moved out of the storage system by Velero's data mover.
    pub snapshot_data_moved: bool,
    pub skipped: bool,
    /// `succeeded` or `failed`.
    pub result: String,
}

/// Parses `<backup>-volumeinfo.json.gz` (`display` names it in errors).
fn parse_volume_infos(gz: &[u8], display: &str) -> Result<Vec<VolumeInfo>> {
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut json)
        .map_err(|e| StoreError::Corrupt {
            path: display.to_string(),
            reason: format!("not gzip: {e}"),
        })?;
    let infos: Option<Vec<VolumeInfo>> =
        serde_json::from_slice(&json).map_err(|e| StoreError::Corrupt {
            path: display.to_string(),
            reason: format!("not a JSON array of Velero's volume information: {e}"),
        })?;
    Ok(infos.unwrap_or_default())
}

/// Why lifeboat cannot restore the data of a claim Velero kept as `info`
/// says; `None` for pod volume backups (read from their own list) and
/// claims whose data Velero skipped.
fn kept_elsewhere(info: &VolumeInfo) -> Option<String> {
    if info.skipped || info.pvc_name.is_empty() {
        return None;
    }
    match info.backup_method.as_str() {
        "CSISnapshot" if info.snapshot_data_moved => Some(
            "Velero's data mover moved its CSI snapshot into a Kopia repository (kopia/<namespace>), \
             a format lifeboat does not read; restore its data with Velero, or back the claim up \
             with lifeboat from now on"
                .to_string(),
        ),
        "CSISnapshot" => Some(
            "Velero kept it as a CSI snapshot in the storage system of the cluster it was backed \
             up in, which lifeboat does not restore from Velero backups"
                .to_string(),
        ),
        "NativeSnapshot" => Some(
            "Velero kept it as a snapshot of the cloud provider (a VolumeSnapshotLocation), which \
             lifeboat does not restore"
                .to_string(),
        ),
        _ => None,
    }
}

/// The volumes of a Velero backup, as a restore sees them.
#[derive(Debug, Default)]
struct PodVolumes {
    readable: Vec<VolumeEntry>,
    unreadable: Vec<VolumeEntry>,
}

/// Maps each PodVolumeBackup to its claim through `pods` ((namespace,
/// pod) → (volume → claim)). The first backup of a claim counts (Velero
/// backs a claim mounted by several pods up once).
fn resolve(
    backups: &[PodVolumeBackup],
    infos: &[VolumeInfo],
    pods: &BTreeMap<(String, String), BTreeMap<String, String>>,
) -> PodVolumes {
    let mut out = PodVolumes::default();
    let mut seen = BTreeSet::new();
    for b in backups {
        let Some(claim) = pods
            .get(&(b.namespace.clone(), b.pod.clone()))
            .and_then(|vols| vols.get(&b.volume))
        else {
            continue;
        };
        if !seen.insert((b.namespace.clone(), claim.clone())) {
            continue;
        }
        let method = match b.uploader {
            Uploader::Kopia => VELERO_KOPIA,
            _ => VELERO_RESTIC,
        };
        let why = match &b.uploader {
            Uploader::Kopia => Some(format!(
                "Velero backed it up with Kopia (uploaderType kopia, repository kopia/{}), a \
                 format lifeboat does not read; restore its data with Velero, or back the claim \
                 up with lifeboat from now on",
                b.namespace
            )),
            Uploader::Other(o) => Some(format!(
                "Velero backed it up with the uploader `{o}`, which lifeboat does not know"
            )),
            Uploader::Restic if b.phase != "Completed" => Some(format!(
                "Velero's backup of it is {}{}",
                if b.phase.is_empty() {
                    "unfinished"
                } else {
                    b.phase.as_str()
                },
                if b.message.is_empty() {
                    String::new()
                } else {
                    format!(": {}", b.message)
                }
            )),
            Uploader::Restic if b.snapshot.is_empty() => {
                Some("Velero recorded no snapshot id for it".to_string())
            }
            Uploader::Restic => None,
        };
        let duration_ms = match (b.started, b.completed) {
            (Some(s), Some(c)) => u64::try_from(c.duration_since(s).as_millis()).unwrap_or(0),
            _ => 0,
        };
        let entry = VolumeEntry {
            namespace: b.namespace.clone(),
            pvc: claim.clone(),
            pvc_uid: String::new(),
            method: method.to_string(),
            phase: if why.is_none() {
                VolumePhase::Completed
            } else {
                VolumePhase::Failed
            },
            snapshot: (!b.snapshot.is_empty()).then(|| b.snapshot.clone()),
            bytes: b.bytes,
            new_bytes: 0,
            files: 0,
            duration_ms,
            node: None,
            file: None,
            error: why.clone(),
            kept: None,
        };
        if why.is_none() {
            out.readable.push(entry);
        } else {
            out.unreadable.push(entry);
        }
    }
    for info in infos {
        let Some(why) = kept_elsewhere(info) else {
            continue;
        };
        if !seen.insert((info.pvc_namespace.clone(), info.pvc_name.clone())) {
            continue;
        }
        out.unreadable.push(VolumeEntry {
            namespace: info.pvc_namespace.clone(),
            pvc: info.pvc_name.clone(),
            pvc_uid: String::new(),
            method: if info.snapshot_data_moved {
                VELERO_KOPIA.to_string()
            } else {
                format!("velero{}", info.backup_method)
            },
            phase: VolumePhase::Failed,
            snapshot: None,
            bytes: 0,
            new_bytes: 0,
            files: 0,
            duration_ms: 0,
            node: None,
            file: None,
            error: Some(why),
            kept: None,
        });
    }
    out
}

/// A Velero BackupStorageLocation's bucket and prefix, read-only.
#[derive(Debug, Clone)]
pub struct VeleroLocation {
    store: Arc<dyn ObjectStore>,
    url: String,
}

/// One Velero backup, as its `velero-backup.json` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VeleroBackup {
    pub name: String,
    /// `Completed`, `PartiallyFailed`, `Failed`, `InProgress`, … as Velero
    /// wrote it (empty when it wrote none).
    pub phase: String,
    pub started: Option<Timestamp>,
    pub completed: Option<Timestamp>,
    /// When Velero's `ttl` would have deleted it.
    pub expires: Option<Timestamp>,
    /// Items Velero backed up (`status.progress.itemsBackedUp`).
    pub items: Option<u64>,
    /// The Schedule that took it (label `velero.io/schedule-name`).
    pub schedule: Option<String>,
    /// The tarball's format version (`status.formatVersion`, e.g. `1.1.0`).
    pub format_version: Option<String>,
    pub errors: u64,
    pub warnings: u64,
}

impl VeleroBackup {
    /// Whether lifeboat restores it: Velero finished writing it. A
    /// `PartiallyFailed` backup restores what it holds, as in Velero.
    pub fn restorable(&self) -> bool {
        matches!(self.phase.as_str(), "Completed" | "PartiallyFailed")
    }
}

#[derive(Deserialize)]
struct BackupDoc {
    #[serde(default)]
    metadata: DocMeta,
    #[serde(default)]
    status: DocStatus,
}

#[derive(Deserialize, Default)]
struct DocMeta {
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DocStatus {
    #[serde(default)]
    phase: String,
    start_timestamp: Option<Timestamp>,
    completion_timestamp: Option<Timestamp>,
    expiration: Option<Timestamp>,
    format_version: Option<String>,
    #[serde(default)]
    errors: u64,
    #[serde(default)]
    warnings: u64,
    #[serde(default)]
    progress: DocProgress,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DocProgress {
    items_backed_up: Option<u64>,
}

impl VeleroLocation {
    /// Connects to the location. Reads and writes nothing.
    pub fn open(config: &LocationConfig) -> Result<VeleroLocation> {
        let (store, url) = build_store(config)?;
        Ok(VeleroLocation { store, url })
    }

    /// Uses an existing object store (tests).
    pub fn from_store(store: Arc<dyn ObjectStore>, url: impl Into<String>) -> VeleroLocation {
        VeleroLocation {
            store,
            url: url.into(),
        }
    }

    /// The location URL as configured (for messages).
    pub fn url(&self) -> &str {
        &self.url
    }

    fn display(&self, path: &Path) -> String {
        format!("{}/{}", self.url, path)
    }

    /// Every backup under `backups/`, newest first. A directory without
    /// `velero-backup.json` (Velero deleting it, or an upload it never
    /// finished) is not a backup.
    pub async fn list(&self) -> Result<Vec<VeleroBackup>> {
        let prefix = Path::from("backups");
        let listing = self
            .store
            .list_with_delimiter(Some(&prefix))
            .await
            .map_err(|e| StoreError::storage("list", self.display(&prefix), e))?;
        let mut out = Vec::new();
        for dir in listing.common_prefixes {
            let Some(name) = dir.filename() else { continue };
            match self.describe(name).await {
                Ok(b) => out.push(b),
                Err(StoreError::VeleroBackupNotFound { .. } | StoreError::InvalidName { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| b.started.cmp(&a.started).then_with(|| a.name.cmp(&b.name)));
        Ok(out)
    }

    /// One backup's `velero-backup.json`.
    pub async fn describe(&self, name: &str) -> Result<VeleroBackup> {
        validate_name("backup", name)?;
        let path = Path::from(format!("backups/{name}/velero-backup.json"));
        let bytes = match self.store.get(&path).await {
            Ok(got) => got
                .bytes()
                .await
                .map_err(|e| StoreError::storage("get", self.display(&path), e))?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(StoreError::VeleroBackupNotFound {
                    url: self.url.clone(),
                    backup: name.into(),
                });
            }
            Err(e) => return Err(StoreError::storage("get", self.display(&path), e)),
        };
        let doc: BackupDoc = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            path: self.display(&path),
            reason: format!("not a Velero Backup object: {e}"),
        })?;
        Ok(VeleroBackup {
            name: name.into(),
            phase: doc.status.phase,
            started: doc.status.start_timestamp,
            completed: doc.status.completion_timestamp,
            expires: doc.status.expiration,
            items: doc.status.progress.items_backed_up,
            schedule: doc.metadata.labels.get("velero.io/schedule-name").cloned(),
            format_version: doc.status.format_version,
            errors: doc.status.errors,
            warnings: doc.status.warnings,
        })
    }

    /// The object at `path`, or `None` when Velero did not write it.
    async fn get_if_present(&self, path: &Path) -> Result<Option<bytes::Bytes>> {
        match self.store.get(path).await {
            Ok(got) => got
                .bytes()
                .await
                .map(Some)
                .map_err(|e| StoreError::storage("get", self.display(path), e)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(StoreError::storage("get", self.display(path), e)),
        }
    }

    /// The PodVolumeBackups of backup `name` (none when Velero wrote no
    /// `<name>-podvolumebackups.json.gz`: no file-system backups).
    pub async fn pod_volume_backups(&self, name: &str) -> Result<Vec<PodVolumeBackup>> {
        validate_name("backup", name)?;
        let path = Path::from(format!("backups/{name}/{name}-podvolumebackups.json.gz"));
        let Some(bytes) = self.get_if_present(&path).await? else {
            return Ok(Vec::new());
        };
        parse_pod_volume_backups(&bytes, &self.display(&path))
    }

    /// Velero's volume information of backup `name` (none when Velero,
    /// before 1.12, wrote no `<name>-volumeinfo.json.gz`).
    pub async fn volume_infos(&self, name: &str) -> Result<Vec<VolumeInfo>> {
        validate_name("backup", name)?;
        let path = Path::from(format!("backups/{name}/{name}-volumeinfo.json.gz"));
        let Some(bytes) = self.get_if_present(&path).await? else {
            return Ok(Vec::new());
        };
        parse_volume_infos(&bytes, &self.display(&path))
    }

    /// The bucket as a read-only [`Repository`] view, through which
    /// Velero's restic repositories are read (nothing is written there).
    pub fn data_view(&self) -> Repository {
        Repository::foreign(self.store.clone(), self.url.clone())
    }

    /// Opens a backup for restoring; refuses one Velero did not finish.
    pub async fn open_backup(&self, name: &str) -> Result<VeleroReader> {
        let backup = self.describe(name).await?;
        if !backup.restorable() {
            return Err(StoreError::VeleroBackupNotRestorable {
                backup: name.into(),
                phase: if backup.phase.is_empty() {
                    "no phase".into()
                } else {
                    backup.phase.clone()
                },
            });
        }
        let pod_volume_backups = Arc::new(self.pod_volume_backups(name).await?);
        let volume_infos = Arc::new(self.volume_infos(name).await?);
        Ok(VeleroReader {
            store: self.store.clone(),
            archive: Path::from(format!("backups/{name}/{name}.tar.gz")),
            url: self.url.clone(),
            backup,
            preferred: Arc::default(),
            pod_volume_backups,
            volume_infos,
            scanned: Arc::default(),
        })
    }
}

/// Reads one Velero backup's objects.
#[derive(Debug, Clone)]
pub struct VeleroReader {
    store: Arc<dyn ObjectStore>,
    archive: Path,
    url: String,
    backup: VeleroBackup,
    /// The objects that have a preferred-version copy, learnt by the first
    /// pass over the archive (verification).
    preferred: Arc<OnceLock<HashSet<ObjectKey>>>,
    pod_volume_backups: Arc<Vec<PodVolumeBackup>>,
    volume_infos: Arc<Vec<VolumeInfo>>,
    /// The claims in the archive and the volumes of its PodVolumeBackups,
    /// learnt by verification.
    scanned: Arc<OnceLock<Scanned>>,
}

/// What verification learnt: the claims (namespace, name) in the archive
/// and the volumes of its PodVolumeBackups and volume information.
type Scanned = (BTreeSet<(String, String)>, PodVolumes);

/// `<resource>[.<group>]`, namespace, name.
type ObjectKey = (String, Option<String>, String);

/// Which copy of an object an archive path holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Copy {
    Preferred,
    Unversioned,
    /// Another API version: not read.
    OtherVersion,
}

/// Parses a path of Velero's tarball; `None` for what is not an object
/// (`metadata/version`, directories).
fn parse_path(path: &str) -> Option<(Copy, ObjectKey)> {
    let parts: Vec<&str> = path.trim_start_matches("./").split('/').collect();
    let ["resources", gr, rest @ ..] = parts.as_slice() else {
        return None;
    };
    let (copy, ns, file) = match rest {
        ["namespaces", ns, file] => (Copy::Unversioned, Some(*ns), *file),
        ["cluster", file] => (Copy::Unversioned, None, *file),
        [version, "namespaces", ns, file] => (version_copy(version), Some(*ns), *file),
        [version, "cluster", file] => (version_copy(version), None, *file),
        _ => return None,
    };
    let name = file.strip_suffix(".json")?;
    if name.is_empty() || gr.is_empty() {
        return None;
    }
    Some((
        copy,
        (gr.to_string(), ns.map(str::to_string), name.to_string()),
    ))
}

fn version_copy(dir: &str) -> Copy {
    if dir.ends_with("-preferredversion") {
        Copy::Preferred
    } else {
        Copy::OtherVersion
    }
}

/// What the first pass found.
struct Scan {
    objects: u64,
    preferred: HashSet<ObjectKey>,
    /// (namespace, name) of every claim.
    claims: BTreeSet<(String, String)>,
    /// (namespace, pod) → (volume → claim) of every pod.
    pods: BTreeMap<(String, String), BTreeMap<String, String>>,
}

/// What the first pass collects as it goes.
#[derive(Default)]
struct Found {
    preferred: HashSet<ObjectKey>,
    unversioned: HashSet<ObjectKey>,
    claims: BTreeSet<(String, String)>,
    pods: BTreeMap<(String, String), BTreeMap<String, String>>,
}

/// A pod's volumes that are claims: volume name → claim name.
fn pod_claims(pod: &serde_json::Value) -> BTreeMap<String, String> {
    pod.pointer("/spec/volumes")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| {
            let name = v.get("name")?.as_str()?;
            let claim = v.pointer("/persistentVolumeClaim/claimName")?.as_str()?;
            Some((name.to_string(), claim.to_string()))
        })
        .collect()
}

impl VeleroReader {
    pub fn backup(&self) -> &VeleroBackup {
        &self.backup
    }

    /// The backup's PodVolumeBackups, as Velero recorded them.
    pub fn pod_volume_backups(&self) -> &[PodVolumeBackup] {
        &self.pod_volume_backups
    }

    /// Learns claims and pod volumes from `scan` (once).
    fn remember(&self, scan: &Scan) {
        let _ = self.scanned.set((
            scan.claims.clone(),
            resolve(&self.pod_volume_backups, &self.volume_infos, &scan.pods),
        ));
    }

    fn display(&self) -> String {
        format!("{}/{}", self.url, self.archive)
    }

    /// Streams the tarball once on a blocking thread, giving `each` every
    /// object's copy kind, key, archive path and bytes; then reads gzip's
    /// trailer, whose CRC and length are checked.
    async fn stream(
        &self,
        mut each: impl FnMut(Copy, ObjectKey, String, Vec<u8>) -> Result<(), Stop> + Send + 'static,
    ) -> Result<()> {
        let display = self.display();
        let got = match self.store.get(&self.archive).await {
            Ok(got) => got,
            Err(e @ object_store::Error::NotFound { .. }) => {
                return Err(StoreError::Corrupt {
                    path: display,
                    reason: format!(
                        "velero-backup.json is there but the tarball is not ({e}); Velero may \
                         still be uploading it, or it was deleted"
                    ),
                });
            }
            Err(e) => return Err(StoreError::storage("get", display, e)),
        };
        let stream = got.into_stream().map_err(io::Error::other);
        let bridge = SyncIoBridge::new(StreamReader::new(stream));
        tokio::task::spawn_blocking(move || {
            let corrupt = |reason: String| StoreError::Corrupt {
                path: display.clone(),
                reason,
            };
            let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bridge));
            let result: Result<(), Stop> = (|| {
                for entry in archive.entries()? {
                    let mut entry = entry?;
                    if !entry.header().entry_type().is_file() {
                        continue;
                    }
                    let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                    let Some((copy, key)) = parse_path(&path) else {
                        continue;
                    };
                    let mut json = Vec::with_capacity(entry.size().min(1 << 24) as usize);
                    entry.read_to_end(&mut json)?;
                    each(copy, key, path, json)?;
                }
                Ok(())
            })();
            match result {
                Ok(()) => {}
                Err(Stop::Io(e)) => return Err(corrupt(e.to_string())),
                Err(Stop::Invalid(reason)) => return Err(corrupt(reason)),
                Err(Stop::Cancelled) => {
                    return Err(StoreError::Task("reading was cancelled".into()));
                }
            }
            // The tar end marker comes before gzip's trailer: read to the
            // end so that the CRC and length are checked.
            io::copy(&mut archive.into_inner(), &mut io::sink())
                .map_err(|e| corrupt(format!("gzip trailer: {e}")))?;
            Ok(())
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// The first pass: checks the whole tarball and learns which objects
    /// have a preferred-version copy.
    async fn scan(&self) -> Result<Scan> {
        let found = Arc::new(std::sync::Mutex::new(Found::default()));
        let sink = found.clone();
        self.stream(move |copy, key, path, json| {
            let value = match serde_json::from_slice::<serde_json::Value>(&json) {
                Ok(v @ serde_json::Value::Object(_)) => v,
                Ok(_) => return Err(Stop::Invalid(format!("{path} is not a JSON object"))),
                Err(e) => return Err(Stop::Invalid(format!("{path}: {e}"))),
            };
            let mut found = sink.lock().map_err(|_| Stop::Cancelled)?;
            if copy != Copy::OtherVersion
                && let (gr, Some(ns), name) = &key
            {
                match gr.as_str() {
                    "persistentvolumeclaims" => {
                        found.claims.insert((ns.clone(), name.clone()));
                    }
                    "pods" => {
                        found
                            .pods
                            .insert((ns.clone(), name.clone()), pod_claims(&value));
                    }
                    _ => {}
                }
            }
            match copy {
                Copy::Preferred => {
                    found.preferred.insert(key);
                }
                Copy::Unversioned => {
                    found.unversioned.insert(key);
                }
                Copy::OtherVersion => {}
            }
            Ok(())
        })
        .await?;
        let found = std::mem::take(
            &mut *found
                .lock()
                .map_err(|_| StoreError::Task("a reader panicked".into()))?,
        );
        let objects = found.preferred.union(&found.unversioned).count() as u64;
        Ok(Scan {
            objects,
            preferred: found.preferred,
            claims: found.claims,
            pods: found.pods,
        })
    }
}

impl RestoreSource for VeleroReader {
    async fn verify(&self) -> Result<VerifyReport> {
        let scan = self.scan().await?;
        self.remember(&scan);
        let _ = self.preferred.set(scan.preferred);
        Ok(VerifyReport {
            objects: scan.objects,
            log_lines: 0,
            stored_bytes: 0,
        })
    }

    /// The claims Velero backed up with restic (known once verified).
    fn volumes(&self) -> &[VolumeEntry] {
        self.scanned.get().map_or(&[], |(_, v)| &v.readable)
    }

    /// Kopia's and unfinished pod volume backups of claims (known once
    /// verified).
    fn unreadable_volumes(&self) -> &[VolumeEntry] {
        self.scanned.get().map_or(&[], |(_, v)| &v.unreadable)
    }

    fn prerequisites(&self) -> &[Prerequisite] {
        &[]
    }

    async fn claims(&self) -> Result<BTreeSet<(String, String)>> {
        if let Some((claims, _)) = self.scanned.get() {
            return Ok(claims.clone());
        }
        let scan = self.scan().await?;
        self.remember(&scan);
        Ok(scan.claims)
    }

    fn entries(&self) -> impl Stream<Item = Result<ArchiveEntry>> + Send + 'static {
        let (tx, rx) = mpsc::channel::<Result<ArchiveEntry>>(32);
        let reader = self.clone();
        tokio::spawn(async move {
            let preferred = match reader.preferred.get() {
                Some(p) => p.clone(),
                None => match reader.scan().await {
                    Ok(scan) => scan.preferred,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                },
            };
            let sender = tx.clone();
            let result = reader
                .stream(move |copy, key, path, json| {
                    let wanted = match copy {
                        Copy::Preferred => true,
                        Copy::Unversioned => !preferred.contains(&key),
                        Copy::OtherVersion => false,
                    };
                    if !wanted {
                        return Ok(());
                    }
                    let (group_resource, namespace, name) = key;
                    let (resource, group) = group_resource
                        .split_once('.')
                        .unwrap_or((&group_resource, ""));
                    let item = ArchiveEntry {
                        path,
                        resource: resource.into(),
                        group: group.into(),
                        namespace,
                        name,
                        json: json.into(),
                    };
                    sender.blocking_send(Ok(item)).map_err(|_| Stop::Cancelled)
                })
                .await;
            if let Err(e) = result {
                let _ = tx.send(Err(e)).await;
            }
        });
        futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    fn gz(v: &serde_json::Value) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&serde_json::to_vec(v).unwrap()).unwrap();
        e.finish().unwrap()
    }

    fn pvb(pod: &str, volume: &str, uploader: &str, phase: &str, id: &str) -> serde_json::Value {
        serde_json::json!({
            "spec": {"pod": {"namespace": "shop", "name": pod, "uid": "u"}, "volume": volume,
                     "repoIdentifier": "s3:x/restic/shop", "uploaderType": uploader},
            "status": {"phase": phase, "snapshotID": id, "message": "node agent gone",
                       "progress": {"totalBytes": 42}}
        })
    }

    #[test]
    fn pod_volume_backups_map_to_claims_through_their_pods() {
        let list = serde_json::json!([
            pvb("a", "data", "restic", "Completed", "abc"),
            pvb("a", "tmp", "restic", "Completed", "def"),
            pvb("b", "data", "", "Completed", "abc2"),
            pvb("b", "cache", "kopia", "Completed", "k1"),
            pvb("b", "logs", "restic", "Failed", ""),
            pvb("gone", "x", "restic", "Completed", "zz"),
        ]);
        let backups = parse_pod_volume_backups(&gz(&list), "f").unwrap();
        assert_eq!(backups.len(), 6);
        assert_eq!(backups[2].uploader, Uploader::Restic, "none is restic");
        assert_eq!(backups[0].bytes, 42);
        let pods = BTreeMap::from([
            (
                ("shop".to_string(), "a".to_string()),
                BTreeMap::from([("data".to_string(), "data".to_string())]),
            ),
            (
                ("shop".to_string(), "b".to_string()),
                BTreeMap::from([
                    ("data".to_string(), "data".to_string()),
                    ("cache".to_string(), "cache".to_string()),
                    ("logs".to_string(), "logs".to_string()),
                ]),
            ),
        ]);
        let infos = vec![
            VolumeInfo {
                pvc_name: "moved".into(),
                pvc_namespace: "shop".into(),
                backup_method: "CSISnapshot".into(),
                snapshot_data_moved: true,
                ..VolumeInfo::default()
            },
            // Also in the pod volume backups: counted once.
            VolumeInfo {
                pvc_name: "cache".into(),
                pvc_namespace: "shop".into(),
                backup_method: "CSISnapshot".into(),
                ..VolumeInfo::default()
            },
            VolumeInfo {
                pvc_name: "left".into(),
                pvc_namespace: "shop".into(),
                skipped: true,
                ..VolumeInfo::default()
            },
        ];
        let v = resolve(&backups, &infos, &pods);
        // `tmp` is no claim, pod `gone` is not in the backup, `data` of
        // pod b is the claim pod a's backup already holds.
        assert_eq!(v.readable.len(), 1);
        assert_eq!(v.readable[0].pvc, "data");
        assert_eq!(v.readable[0].snapshot.as_deref(), Some("abc"));
        assert_eq!(v.readable[0].method, VELERO_RESTIC);
        let why: Vec<(&str, &str)> = v
            .unreadable
            .iter()
            .map(|e| (e.pvc.as_str(), e.error.as_deref().unwrap()))
            .collect();
        assert_eq!(why.len(), 3);
        assert!(
            why[2].0 == "moved" && why[2].1.contains("data mover"),
            "{why:?}"
        );
        assert!(why[0].0 == "cache" && why[0].1.contains("Kopia"), "{why:?}");
        assert!(
            why[1].0 == "logs" && why[1].1.contains("Failed: node agent gone"),
            "{why:?}"
        );
    }

    #[test]
    fn a_damaged_pod_volume_backup_list_is_a_clear_error() {
        assert!(matches!(
            parse_pod_volume_backups(b"not gzip", "f"),
            Err(StoreError::Corrupt { .. })
        ));
        let e = parse_pod_volume_backups(&gz(&serde_json::json!({"a": 1})), "f").unwrap_err();
        assert!(e.to_string().contains("PodVolumeBackups"), "{e}");
        assert!(
            parse_pod_volume_backups(&gz(&serde_json::Value::Null), "f")
                .unwrap()
                .is_empty()
        );
    }

    /// `(group-resource, namespace, name)` as written in a case.
    type Key<'a> = (&'a str, Option<&'a str>, &'a str);

    #[rstest]
    #[case("resources/pods/namespaces/web/a.json", Some((Copy::Unversioned, ("pods", Some("web"), "a"))))]
    #[case("resources/deployments.apps/v1-preferredversion/namespaces/web/api.json", Some((Copy::Preferred, ("deployments.apps", Some("web"), "api"))))]
    #[case("resources/deployments.apps/v1beta1/namespaces/web/api.json", Some((Copy::OtherVersion, ("deployments.apps", Some("web"), "api"))))]
    #[case("resources/namespaces/cluster/web.json", Some((Copy::Unversioned, ("namespaces", None, "web"))))]
    #[case("resources/namespaces/v1-preferredversion/cluster/web.json", Some((Copy::Preferred, ("namespaces", None, "web"))))]
    // A namespace named `cluster` is still a namespace.
    #[case("resources/pods/namespaces/cluster/a.json", Some((Copy::Unversioned, ("pods", Some("cluster"), "a"))))]
    #[case("./resources/pods/namespaces/web/a.json", Some((Copy::Unversioned, ("pods", Some("web"), "a"))))]
    #[case("metadata/version", None)]
    #[case("resources/pods/namespaces/web/", None)]
    #[case("resources/pods/namespaces/web/a.yaml", None)]
    fn paths(#[case] path: &str, #[case] expect: Option<(Copy, Key<'_>)>) {
        let expect = expect
            .map(|(c, (gr, ns, n))| (c, (gr.to_string(), ns.map(str::to_string), n.to_string())));
        assert_eq!(parse_path(path), expect);
    }
}
