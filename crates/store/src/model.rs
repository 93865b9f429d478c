//! The serde types of everything lifeboat writes to object storage:
//! repository marker, manifest, index, log lines and restore records.
//! All JSON is camelCase; see `docs/format.md` for the field reference.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Format of the repository marker and the object index this crate writes
/// and the newest it reads (the marker's version is separate from the
/// manifest's).
pub const FORMAT_VERSION: u32 = 1;

/// Format of `manifest.json` this crate writes and the newest it reads.
/// Format 2 lists `files` (also `volumes/**`) and `volumes[]`; format 1
/// (`files` as an object of the three archive files) stays readable.
pub const MANIFEST_FORMAT_VERSION: u32 = 2;

/// The lifeboat version recorded in markers and manifests.
pub const LIFEBOAT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// `<prefix>/lifeboat.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryMarker {
    pub format: u32,
    /// Random identifier of this repository (32 hex digits).
    pub id: String,
    pub created_by: String,
}

/// Outcome of a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Phase {
    /// Every object was stored.
    Completed,
    /// The archive is usable but some items could not be stored (see the log).
    PartiallyFailed,
    /// Nothing usable; the files are kept for inspection until retention
    /// deletes them.
    Failed,
}

/// Items and errors of one resource (`<resource>[.<group>]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceCount {
    pub items: u64,
    pub errors: u64,
}

/// Totals over the whole backup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub items: u64,
    pub errors: u64,
    pub warnings: u64,
    /// Sum of the objects' JSON sizes (uncompressed).
    pub object_bytes: u64,
}

/// One stored file of a backup, as it is in object storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileInfo {
    /// File name relative to the backup directory, e.g. `resources.tar.zst.age`.
    pub name: String,
    /// Stored size in bytes.
    pub bytes: u64,
    /// SHA-256 of the stored bytes (after compression and encryption), hex.
    pub sha256: String,
}

/// The stored files of a backup: the three archive files and (format 2)
/// every other file, such as the volume results under `volumes/`.
///
/// Format 2 writes a list of [`FileInfo`]; format 1 manifests hold an
/// object `{resources, index, log}`, which is read too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupFiles {
    pub resources: FileInfo,
    pub index: FileInfo,
    pub log: FileInfo,
    /// Files besides the archive (`volumes/<namespace>/<pvc>.json.zst[.age]`).
    pub other: Vec<FileInfo>,
}

impl BackupFiles {
    /// Every file, the archive's first.
    pub fn all(&self) -> impl Iterator<Item = &FileInfo> {
        [&self.resources, &self.index, &self.log]
            .into_iter()
            .chain(self.other.iter())
    }

    /// Stored bytes of every file.
    pub fn bytes(&self) -> u64 {
        self.all().map(|f| f.bytes).sum()
    }
}

impl Serialize for BackupFiles {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.all())
    }
}

impl<'de> Deserialize<'de> for BackupFiles {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            List(Vec<FileInfo>),
            Object {
                resources: FileInfo,
                index: FileInfo,
                log: FileInfo,
            },
        }
        match Form::deserialize(d)? {
            Form::Object {
                resources,
                index,
                log,
            } => Ok(BackupFiles {
                resources,
                index,
                log,
                other: Vec::new(),
            }),
            Form::List(list) => {
                let (mut resources, mut index, mut log, mut other) = (None, None, None, Vec::new());
                for f in list {
                    let slot = if f.name.starts_with("resources.tar.zst") {
                        &mut resources
                    } else if f.name.starts_with("index.json.zst") {
                        &mut index
                    } else if f.name.starts_with("log.jsonl.zst") {
                        &mut log
                    } else {
                        other.push(f);
                        continue;
                    };
                    if slot.replace(f).is_some() {
                        return Err(serde::de::Error::custom(
                            "files lists an archive file twice",
                        ));
                    }
                }
                let missing = |what| serde::de::Error::custom(format!("files has no {what} file"));
                Ok(BackupFiles {
                    resources: resources.ok_or_else(|| missing("resources.tar.zst"))?,
                    index: index.ok_or_else(|| missing("index.json.zst"))?,
                    log: log.ok_or_else(|| missing("log.jsonl.zst"))?,
                    other,
                })
            }
        }
    }
}

/// How a volume's backup ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolumePhase {
    Completed,
    Failed,
}

/// One volume of a backup (manifest format 2). The snapshot id is in the
/// signed manifest, so a signature covers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeEntry {
    pub namespace: String,
    pub pvc: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pvc_uid: String,
    /// `snapshotMove` (the policy method).
    pub method: String,
    pub phase: VolumePhase,
    /// The restic snapshot id in the namespace's volume repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// Bytes of every file in the snapshot.
    #[serde(default)]
    pub bytes: u64,
    /// Bytes of new content the backup read.
    #[serde(default)]
    pub new_bytes: u64,
    #[serde(default)]
    pub files: u64,
    #[serde(default)]
    pub duration_ms: u64,
    /// The node the mover ran on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The result file (`volumes/<namespace>/<pvc>.json.zst[.age]`), listed in
    /// `files`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Why the volume failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The CSI snapshot kept in the cluster's storage system: the data of a
    /// `snapshot` volume, or the local copy of a `snapshotMove` one under
    /// `keepLocalSnapshots`. It does not survive losing that storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept: Option<KeptSnapshot>,
}

/// A CSI snapshot a backup keeps in the cluster: a cluster-scoped
/// VolumeSnapshotContent on `deletionPolicy: Retain`, labelled with the
/// backup, with no VolumeSnapshot bound to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeptSnapshot {
    /// The VolumeSnapshotContent's name.
    pub content: String,
    /// The storage system's snapshot handle.
    pub handle: String,
    /// The CSI driver.
    pub driver: String,
    /// The size a volume restored from it needs (a quantity).
    pub restore_size: String,
    /// The VolumeSnapshotClass it was taken with.
    pub snapshot_class: String,
    /// `Filesystem` or `Block`, when the driver says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mode: Option<String>,
}

/// `operation.json`: the record of a backup while it is written, so that
/// others see it running (owner, deadline, progress) and a restarted
/// controller resumes it: the finished volumes, with their result files,
/// are adopted instead of moved again. Plain JSON (it names what the
/// manifest names, no more). Removed once the manifest commits the
/// backup; a directory with a manifest ignores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    pub format_version: u32,
    pub backup_name: String,
    pub policy: String,
    pub cluster: String,
    /// The controller instance writing it (pod, process, start time).
    pub owner: String,
    pub started: Timestamp,
    /// When it was last written: each step and each finished volume.
    pub updated: Timestamp,
    /// After this the backup is given up and committed `Failed`.
    pub deadline: Timestamp,
    /// `objects`, then `volumes`.
    pub step: String,
    /// Claims whose data the backup moves.
    #[serde(default)]
    pub volumes_planned: u32,
    /// Finished volumes (entries as in the manifest, `file` set) …
    #[serde(default)]
    pub volumes: Vec<VolumeEntry>,
    /// … and their result files.
    #[serde(default)]
    pub files: Vec<FileInfo>,
    /// Claims being moved now, `namespace/pvc`.
    #[serde(default)]
    pub moving: Vec<String>,
    /// Every exec hook run, each recorded before it runs: a pre hook whose
    /// `thaw` has not run is what a resumed run runs first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<HookEntry>,
}

/// One exec hook run of a backup (operation record, log).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HookEntry {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    /// The policy hook's name, or `annotations`.
    pub hook: String,
    /// `pre` or `post`.
    pub phase: String,
    pub command: Vec<String>,
    pub start: Timestamp,
    /// Set once it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The last lines of its stderr.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stderr: Vec<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A pre hook's post hook, run whenever the pre hook ran (thaw).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thaw: Option<ThawCommand>,
    /// Whether `thaw` ran.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub thawed: bool,
    /// The dump artifact streamed into the command's stdin (a restore
    /// hook's `stdinFrom`), as the backup lists it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_from: Option<String>,
    /// Bytes streamed into its stdin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_bytes: Option<u64>,
    /// Bytes it wrote to stdout that were kept (a dump hook's artifact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_bytes: Option<u64>,
}

impl HookEntry {
    /// A hook run that starts at `start` and has not ended yet.
    pub fn started(
        at: (&str, &str, &str),
        hook: &str,
        phase: &str,
        command: &[String],
        start: Timestamp,
    ) -> HookEntry {
        let (namespace, pod, container) = at;
        HookEntry {
            namespace: namespace.to_string(),
            pod: pod.to_string(),
            container: container.to_string(),
            hook: hook.to_string(),
            phase: phase.to_string(),
            command: command.to_vec(),
            start,
            duration_ms: None,
            exit_code: None,
            stderr: Vec::new(),
            error: None,
            thaw: None,
            thawed: false,
            stdin_from: None,
            stdin_bytes: None,
            stdout_bytes: None,
        }
    }

    /// Whether it ran and failed, or never ended.
    pub fn failed(&self) -> bool {
        self.error.is_some() || self.duration_ms.is_none()
    }
}

/// The post hook owed to a pre hook that ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThawCommand {
    pub container: String,
    pub command: Vec<String>,
    pub timeout_seconds: u64,
    /// `continue`, `failVolume` or `failBackup`.
    pub on_error: String,
    /// A KubeVirt VMI to unfreeze through virt-api (not an exec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmi: Option<String>,
}

/// Counts of a backup's exec hook runs (manifest).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HookCounts {
    pub ran: u32,
    pub failed: u32,
}

impl HookCounts {
    pub fn is_zero(&self) -> bool {
        self.ran == 0 && self.failed == 0
    }
}

/// Version of `operation.json`.
pub const OPERATION_FORMAT_VERSION: u32 = 1;

impl Operation {
    /// Bytes of the finished volumes.
    pub fn bytes_done(&self) -> u64 {
        self.volumes.iter().map(|v| v.bytes).sum()
    }
}

/// `manifest.json`: written last; its presence commits the backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format_version: u32,
    pub backup_name: String,
    pub policy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_revision: Option<String>,
    pub cluster: String,
    pub schedule_slot: Timestamp,
    pub start_time: Timestamp,
    pub end_time: Timestamp,
    pub phase: Phase,
    /// Why a backup failed, when the caller said so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// Per `<resource>[.<group>]`.
    pub resources: BTreeMap<String, ResourceCount>,
    pub totals: Totals,
    pub files: BackupFiles,
    /// age recipients (public keys) the files are encrypted to; empty means
    /// not encrypted.
    pub recipients: Vec<String>,
    pub lifeboat_version: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// What the target cluster must provide before this backup can be
    /// restored (CRDs of the backed-up custom resources, operators that
    /// were installed through OLM). Absent in older manifests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prerequisites: Vec<Prerequisite>,
    /// The volumes whose data the backup carries (format 2; empty in
    /// format 1).
    #[serde(default)]
    pub volumes: Vec<VolumeEntry>,
    /// How many exec hooks ran and failed (each run is in the log).
    #[serde(default, skip_serializing_if = "HookCounts::is_zero")]
    pub hooks: HookCounts,
    /// The outputs of the dump hooks whose command exited 0 (format 2),
    /// each its own file under `artifacts/`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<ArtifactEntry>,
    /// Container images the backup copied into the location's `images/`
    /// (OpenShift ImageStream tags); their blobs are shared by every
    /// backup of the location that references them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageEntry>,
}

/// One dump hook's output stored in a backup: the command's stdout,
/// zstd-compressed and (in an encrypted backup) age-encrypted, in
/// `file`. Listed only when the command exited 0; the signed manifest
/// carries both hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactEntry {
    /// The SOURCE namespace of the pod it ran in.
    pub namespace: String,
    /// The pod's owner as in the path, `deployment-mysql`.
    pub owner: String,
    /// The dump hook's name.
    pub hook: String,
    pub pod: String,
    pub container: String,
    pub command: Vec<String>,
    /// `artifacts/<namespace>/<owner>/<hook>.zst[.age]`, relative to the
    /// backup directory.
    pub file: String,
    /// Bytes the command wrote to stdout.
    pub bytes: u64,
    /// SHA-256 of those bytes (what a restore pipes back), hex.
    pub raw_sha256: String,
    /// Bytes stored (after compression and encryption).
    pub stored_bytes: u64,
    /// SHA-256 of the stored bytes, hex.
    pub sha256: String,
    pub start: Timestamp,
    pub duration_ms: u64,
}

/// One image a backup copied: an ImageStream tag's image, its manifest
/// (an index's platform manifests too) and every blob they name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageEntry {
    /// `<namespace>/<stream>` in the source cluster's registry.
    pub repository: String,
    /// The ImageStream tag.
    pub tag: String,
    /// The digest of the top manifest (the index of a multi-arch image).
    pub digest: String,
    pub media_type: String,
    /// `false` for an older image of the tag's history (`history: all`);
    /// a restore pushes it by digest and leaves the tag on the head.
    #[serde(default = "yes", skip_serializing_if = "Clone::clone")]
    pub head: bool,
    /// An index's platform manifests, in its order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<ImageManifest>,
    /// Config and layer blobs of every manifest, in first-use order.
    pub blobs: Vec<String>,
    /// Bytes of those blobs as the registry serves them.
    pub bytes: u64,
}

fn yes() -> bool {
    true
}

/// A platform manifest of an index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub digest: String,
    pub media_type: String,
}

impl ImageEntry {
    /// Every digest it keeps under `images/blobs/`: manifests and blobs.
    pub fn stored(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.digest.as_str())
            .chain(self.manifests.iter().map(|m| m.digest.as_str()))
            .chain(self.blobs.iter().map(String::as_str))
    }
}

/// One image a restore pushed (or, dry run, would push).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoredImage {
    /// The repository in the target registry (namespace mapped).
    pub repository: String,
    pub tag: String,
    pub digest: String,
    /// Blobs pushed (dry run: to push).
    pub blobs_pushed: u32,
    /// Blobs the registry already had.
    pub blobs_present: u32,
    /// Bytes pushed (dry run: to push).
    pub bytes_pushed: u64,
    /// Manifests pushed (the index, its platforms).
    pub manifests_pushed: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Something a backup's objects need on the target that the backup itself
/// does not restore.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Prerequisite {
    pub kind: PrerequisiteKind,
    /// A CRD's name (`<plural>.<group>`) or an operator's package name.
    pub name: String,
    /// Where the operator's Subscription was (operators only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// For people: channel, catalog source and installed CSV of an operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The kind of a [`Prerequisite`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PrerequisiteKind {
    /// A CustomResourceDefinition the target must serve.
    CustomResourceDefinition,
    /// An operator installed through OLM (a Subscription to a package).
    Operator,
}

impl std::fmt::Display for Prerequisite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            PrerequisiteKind::CustomResourceDefinition => {
                write!(f, "CustomResourceDefinition {}", self.name)
            }
            PrerequisiteKind::Operator => {
                write!(f, "operator {}", self.name)?;
                if let Some(ns) = &self.namespace {
                    write!(f, " (Subscription in {ns})")?;
                }
                Ok(())
            }
        }?;
        if let Some(d) = &self.detail {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

impl Manifest {
    /// True when the files are age-encrypted.
    pub fn encrypted(&self) -> bool {
        !self.recipients.is_empty()
    }
}

/// One line of `index.json`'s `objects`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexEntry {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    pub resource: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// Path of the object inside `resources.tar.zst`.
    pub path: String,
    /// Size of the object's JSON.
    pub bytes: u64,
    /// SHA-256 of the object's JSON, hex.
    pub sha256: String,
}

/// `index.json` (zstd-compressed, maybe encrypted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub format_version: u32,
    pub objects: Vec<IndexEntry>,
}

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Info,
    Warning,
    Error,
}

/// One line of `log.jsonl`. Errors count towards the resource's `errors`
/// and make the backup `PartiallyFailed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogEntry {
    pub level: LogLevel,
    pub time: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub message: String,
}

/// Outcome of a restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestorePhase {
    InProgress,
    Completed,
    PartiallyFailed,
    Failed,
}

/// What a restore did to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestoreAction {
    Created,
    Updated,
    Skipped,
    Failed,
}

/// Counts of a restore.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreCounts {
    pub created: u64,
    pub updated: u64,
    pub skipped: u64,
    pub failed: u64,
}

/// One object of a restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreItem {
    pub resource: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    pub action: RestoreAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What the restore changed in the object besides the usual stripping
    /// of server-set fields (one line per rule that fired, e.g. an
    /// OpenShift Route losing its generated host).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
}

/// `clusters/<cluster>/restores/<request>/record.json`: the source of truth
/// for "has this RestoreRequest run".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreRecord {
    pub request: String,
    pub source_cluster: String,
    pub source_backup: String,
    pub target_cluster: String,
    pub start_time: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Timestamp>,
    pub phase: RestorePhase,
    /// While `InProgress`: the controller instance running it …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// … and until when an interrupted run is resumed (run again) rather
    /// than marked `Failed`. Records without one are never resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
    /// Why the restore ended as it did, when there is more to say than the
    /// items (e.g. it was interrupted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub dry_run: bool,
    pub counts: RestoreCounts,
    pub items: Vec<RestoreItem>,
    /// Prerequisites of the backup (CRDs, operators) the target did not
    /// provide when the restore started.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_prerequisites: Vec<String>,
    /// The claims whose data the restore filled from the backup.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<RestoredVolume>,
    /// Every restore hook run (phase `init` or `post`), in the pods the
    /// restored workloads created.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<HookEntry>,
    #[serde(default, skip_serializing_if = "HookCounts::is_zero")]
    pub hook_counts: HookCounts,
    /// Container images pushed to the target's registry before the
    /// objects were applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<RestoredImage>,
    pub lifeboat_version: String,
}

/// One claim a restore filled with data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoredVolume {
    /// The claim (target namespace).
    pub namespace: String,
    pub pvc: String,
    /// Where its data came from.
    pub source_namespace: String,
    /// The restic snapshot id, or the kept VolumeSnapshotContent's name
    /// when `fromKept`.
    pub snapshot: String,
    /// Filled from the CSI snapshot the backup kept in this cluster.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_kept: bool,
    pub phase: VolumePhase,
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub files: u64,
    #[serde(default)]
    pub duration_ms: u64,
    /// The node the mover filled it on: a WaitForFirstConsumer volume is
    /// provisioned there, and the workload then runs where it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `clusters/<cluster>/orphans/<policy>.json`: when the controller first saw
/// backups of a policy that is no longer in Git. The grace period before
/// they are pruned counts from `since`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrphanMark {
    pub policy: String,
    pub since: Timestamp,
}
