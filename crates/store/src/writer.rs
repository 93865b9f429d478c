//! The backup writer: streams Kubernetes objects into a backup directory
//! and commits it with `manifest.json`.
//!
//! ```text
//! list tasks ──WriterHandle::add──┐
//!                                 ▼ bounded channel (backpressure)
//!                      encoder thread (spawn_blocking)
//!   objects → tar → zstd → [age] → UploadSink → resources.tar.zst[.age]
//!   index   → JSON → zstd → [age] → UploadSink → index.json.zst[.age]
//!   log     → JSONL → zstd → [age] → UploadSink → log.jsonl.zst[.age]
//!                                 │ each sink: SHA-256 of the stored bytes
//!                                 ▼
//!   BackupWriter::finish → manifest.json.minisig (when signing), then
//!                          manifest.json (LAST: commit point)
//! ```
//!
//! Objects travel in batches (`add_all`, one list page split into messages
//! of at most 128 objects / 256 KiB), so the channel costs one hand-off per
//! batch, not per object. `resources.tar.zst` is compressed by zstd's own
//! worker threads (one per core, at most four) while the encoder thread
//! builds tar entries and index lines; the output is ordinary zstd frames.
//!
//! Nothing holds the whole archive: memory is bounded by the channel, the
//! zstd window and jobs and the multipart buffers (see `upload.rs`).
//!
//! A writer that is dropped, or whose `abort` is called, stops the encoder
//! and aborts the uploads: no manifest is written, so the backup never
//! appears in listings. An error during `finish` also leaves no manifest;
//! files already completed stay behind as an *incomplete* backup that
//! `Catalog::incomplete_backups` finds after a grace period.
//! `finish_failed` commits a manifest with phase `Failed` (nothing usable)
//! and keeps the files for inspection; retention deletes them.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use jiff::Timestamp;
use object_store::ObjectStoreExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use zstd::stream::raw::CParameter;

use crate::crypto::Keys;
use crate::error::{Result, StoreError};
use crate::model::{
    BackupFiles, FORMAT_VERSION, FileInfo, HookCounts, HookEntry, ImageEntry, IndexEntry,
    LIFEBOAT_VERSION, LogEntry, LogLevel, MANIFEST_FORMAT_VERSION, Manifest,
    OPERATION_FORMAT_VERSION, Operation, Phase, Prerequisite, ResourceCount, Totals, VolumeEntry,
    VolumePhase,
};
use crate::repo::{MANIFEST, OPERATION, Repository, backup_name, layout, validate_name};
use crate::signing::SignedKind;
use crate::upload::{self, FirstError, UploadSink, Uploaded, error_chain};

const ZSTD_LEVEL: i32 = 3;
const MAX_ZSTD_WORKERS: usize = 4;
const ZSTD_JOB_SIZE: u32 = 2 * 1024 * 1024;
/// Messages waiting for the encoder. A message is one object, one log
/// line, or a batch of objects of at most `BATCH_OBJECTS` objects and
/// `BATCH_BYTES` of JSON (or a single larger object), so the queue holds at
/// most `QUEUE × max(BATCH_BYTES, largest object)` of JSON.
const QUEUE: usize = 32;
const BATCH_OBJECTS: usize = 128;
const BATCH_BYTES: usize = 256 * 1024;

/// What a backup is; everything the manifest records besides the content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSpec {
    pub cluster: String,
    pub policy: String,
    /// Git revision of the policy repository, if known.
    pub policy_revision: Option<String>,
    /// The UTC schedule slot; the backup name is derived from it.
    pub schedule_slot: Timestamp,
    pub start_time: Timestamp,
    pub labels: BTreeMap<String, String>,
}

/// One Kubernetes object to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEntry {
    /// Plural resource name, e.g. `deployments`.
    pub resource: String,
    /// API group, empty for the core group.
    pub group: String,
    /// `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    pub name: String,
    pub api_version: String,
    pub kind: String,
    /// The object as JSON.
    pub json: Bytes,
}

impl ObjectEntry {
    /// `<resource>[.<group>]`, the key of per-resource counts.
    pub fn resource_key(&self) -> String {
        resource_key(&self.resource, &self.group)
    }

    /// The path inside `resources.tar.zst`; errors when a segment is unsafe.
    pub fn archive_path(&self) -> Result<String> {
        let check = |field: &'static str, value: &str| {
            let bad = value.is_empty()
                || value == "."
                || value == ".."
                || value.contains('/')
                || value.contains('\0');
            if bad {
                Err(StoreError::InvalidObjectPath {
                    resource: self.resource.clone(),
                    name: self.name.clone(),
                    field,
                    value: value.to_string(),
                })
            } else {
                Ok(())
            }
        };
        check("resource", &self.resource)?;
        if !self.group.is_empty() {
            check("group", &self.group)?;
        }
        check("name", &self.name)?;
        let rk = self.resource_key();
        match &self.namespace {
            Some(ns) => {
                check("namespace", ns)?;
                Ok(format!("resources/{rk}/namespaces/{ns}/{}.json", self.name))
            }
            None => Ok(format!("resources/{rk}/cluster/{}.json", self.name)),
        }
    }
}

pub(crate) fn resource_key(resource: &str, group: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

enum Msg {
    Objects(Vec<(ObjectEntry, String)>),
    Log(LogEntry),
    Finish,
}

/// A cloneable sender for producers running in other tasks. It does not
/// keep the writer alive: once the writer is finished, dropped or aborted,
/// `add` returns an error.
#[derive(Debug, Clone)]
pub struct WriterHandle {
    tx: mpsc::WeakSender<Msg>,
    first_error: FirstError,
    prerequisites: Arc<Mutex<BTreeSet<Prerequisite>>>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Msg::Objects(..) => "Objects",
            Msg::Log(_) => "Log",
            Msg::Finish => "Finish",
        })
    }
}

impl WriterHandle {
    /// Queues one object; waits when the encoder is behind.
    pub async fn add(&self, entry: ObjectEntry) -> Result<()> {
        let path = entry.archive_path()?;
        self.send(Msg::Objects(vec![(entry, path)])).await
    }

    /// Queues several objects (typically one list page) with fewer hand-offs
    /// to the encoder than one [`add`](Self::add) each; waits when the
    /// encoder is behind. Fails without queueing anything when a path is
    /// unsafe.
    pub async fn add_all(&self, entries: Vec<ObjectEntry>) -> Result<()> {
        let mut items = Vec::with_capacity(entries.len());
        for entry in entries {
            let path = entry.archive_path()?;
            items.push((entry, path));
        }
        let mut batch = Vec::new();
        let mut bytes = 0;
        for item in items {
            if !batch.is_empty()
                && (batch.len() >= BATCH_OBJECTS || bytes + item.0.json.len() > BATCH_BYTES)
            {
                self.send(Msg::Objects(std::mem::take(&mut batch))).await?;
                bytes = 0;
            }
            bytes += item.0.json.len();
            batch.push(item);
        }
        if !batch.is_empty() {
            self.send(Msg::Objects(batch)).await?;
        }
        Ok(())
    }

    /// Queues one log line.
    pub async fn log(&self, entry: LogEntry) -> Result<()> {
        self.send(Msg::Log(entry)).await
    }

    /// Records a prerequisite of the backup for the manifest (duplicates
    /// are kept once).
    pub fn prerequisite(&self, p: Prerequisite) {
        self.prerequisites
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(p);
    }

    async fn send(&self, msg: Msg) -> Result<()> {
        let Some(tx) = self.tx.upgrade() else {
            return Err(StoreError::WriterStopped(
                "the backup writer was closed".into(),
            ));
        };
        tx.send(msg)
            .await
            .map_err(|_| StoreError::WriterStopped(self.first_error.get()))
    }
}

/// Writes one backup. Created by [`Repository::begin_backup`].
#[derive(Debug)]
pub struct BackupWriter {
    repo: Repository,
    spec: BackupSpec,
    name: String,
    tx: Option<mpsc::Sender<Msg>>,
    handle: WriterHandle,
    encoder: Option<JoinHandle<Result<Encoded>>>,
    uploads: Vec<JoinHandle<Result<()>>>,
    file_names: [String; 3],
    first_error: FirstError,
    /// Volume result files written so far, and their manifest entries.
    volume_files: Vec<FileInfo>,
    volumes: Vec<VolumeEntry>,
    hooks: Vec<HookEntry>,
    /// Dump artifacts finished so far.
    artifacts: Vec<crate::model::ArtifactEntry>,
    /// Images copied into the location's `images/`.
    images: Vec<ImageEntry>,
    /// `operation.json`, once [`BackupWriter::track`] was called.
    operation: Option<Operation>,
    /// The record of an interrupted earlier run of this backup.
    interrupted: Option<Operation>,
}

/// Result of the encoder thread.
#[derive(Debug)]
struct Encoded {
    files: [Uploaded; 3],
    resources: BTreeMap<String, ResourceCount>,
    totals: Totals,
}

impl Repository {
    /// Starts a backup of `spec.schedule_slot`. Fails if that backup already
    /// has a manifest. Writes the repository marker on first use.
    pub async fn begin_backup(&self, spec: BackupSpec) -> Result<BackupWriter> {
        validate_name("cluster", &spec.cluster)?;
        validate_name("policy", &spec.policy)?;
        if self.inner.signer.is_none() && self.inner.trust.required_for(&spec.cluster) {
            return Err(StoreError::SigningKeyMissing {
                cluster: spec.cluster.clone(),
            });
        }
        let name = backup_name(&spec.policy, spec.schedule_slot);
        let manifest_path = layout::backup_file(&spec.cluster, &name, MANIFEST);
        if self.get_optional(&manifest_path).await?.is_some() {
            return Err(StoreError::BackupExists {
                cluster: spec.cluster.clone(),
                backup: name,
            });
        }
        self.ensure_marker().await?;

        let suffix = if self.inner.keys.recipients.is_empty() {
            ""
        } else {
            ".age"
        };
        let file_names = [
            format!("resources.tar.zst{suffix}"),
            format!("index.json.zst{suffix}"),
            format!("log.jsonl.zst{suffix}"),
        ];
        let first_error = FirstError::default();
        let mut sinks = Vec::new();
        let mut uploads = Vec::new();
        for file in &file_names {
            let path = layout::backup_file(&spec.cluster, &name, file);
            let display = self.display(&path);
            let (sink, task) =
                upload::start(self.store().clone(), path, display, first_error.clone());
            sinks.push(sink);
            uploads.push(task);
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let keys = self.inner.keys.clone();
        let mtime = spec.start_time.as_second().max(0).unsigned_abs();
        let fe = first_error.clone();
        let encoder = tokio::task::spawn_blocking(move || {
            let mut rx = rx;
            let result = encode(&mut rx, sinks, &keys, mtime);
            if let Err(e) = &result {
                fe.set(error_chain(e));
            }
            // Producers see the closed channel only now, when the cause is
            // recorded for their error message.
            drop(rx);
            result
        });
        Ok(BackupWriter {
            repo: self.clone(),
            handle: WriterHandle {
                tx: tx.downgrade(),
                first_error: first_error.clone(),
                prerequisites: Arc::default(),
            },
            spec,
            name,
            tx: Some(tx),
            encoder: Some(encoder),
            uploads,
            file_names,
            first_error,
            volume_files: Vec::new(),
            volumes: Vec::new(),
            hooks: Vec::new(),
            artifacts: Vec::new(),
            images: Vec::new(),
            operation: None,
            interrupted: None,
        })
    }
}

impl BackupWriter {
    /// Records images copied into the location (see
    /// [`Repository::copy_image`]); the manifest lists them.
    pub fn add_images(&mut self, images: impl IntoIterator<Item = ImageEntry>) {
        self.images.extend(images);
    }

    /// The cluster the backup is of.
    pub fn cluster(&self) -> &str {
        &self.spec.cluster
    }

    /// The backup name, `<policy>-<YYYYMMDD>-<HHMMSS>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn repository(&self) -> &Repository {
        &self.repo
    }

    pub(crate) fn spec(&self) -> &BackupSpec {
        &self.spec
    }

    /// The dump artifacts listed so far.
    pub fn artifacts(&self) -> &[crate::model::ArtifactEntry] {
        &self.artifacts
    }

    pub(crate) async fn push_artifact(&mut self, entry: crate::model::ArtifactEntry) -> Result<()> {
        if self.artifacts.iter().any(|a| a.file == entry.file) {
            return Err(StoreError::InvalidConfig(format!(
                "artifact {} was recorded twice in backup {}",
                entry.file, self.name
            )));
        }
        self.artifacts.push(entry);
        Ok(())
    }

    /// A sender for concurrent producers.
    pub fn handle(&self) -> WriterHandle {
        self.handle.clone()
    }

    /// Queues one object (see [`WriterHandle::add`]).
    pub async fn add(&self, entry: ObjectEntry) -> Result<()> {
        self.handle.add(entry).await
    }

    /// Queues several objects (see [`WriterHandle::add_all`]).
    pub async fn add_all(&self, entries: Vec<ObjectEntry>) -> Result<()> {
        self.handle.add_all(entries).await
    }

    /// Queues one log line (see [`WriterHandle::log`]).
    pub async fn log(&self, entry: LogEntry) -> Result<()> {
        self.handle.log(entry).await
    }

    /// Writes `operation.json` for this backup (owner, deadline) and keeps
    /// it current from now on: each step, each claim started and each
    /// volume recorded rewrites it. The manifest's commit removes it.
    /// `interrupted` is the record an earlier, interrupted run of this
    /// backup left (see [`BackupWriter::adopt_volumes`]).
    pub async fn track(
        &mut self,
        owner: &str,
        started: Timestamp,
        deadline: Timestamp,
        interrupted: Option<Operation>,
    ) -> Result<()> {
        self.interrupted = interrupted;
        self.operation = Some(Operation {
            format_version: OPERATION_FORMAT_VERSION,
            backup_name: self.name.clone(),
            policy: self.spec.policy.clone(),
            cluster: self.spec.cluster.clone(),
            owner: owner.to_string(),
            started,
            updated: Timestamp::now(),
            deadline,
            step: "objects".into(),
            volumes_planned: 0,
            volumes: self.volumes.clone(),
            files: self.volume_files.clone(),
            moving: Vec::new(),
            hooks: self.hooks.clone(),
        });
        self.write_operation().await
    }

    /// The operation record, when tracked.
    pub fn operation(&self) -> Option<&Operation> {
        self.operation.as_ref()
    }

    /// The record of the interrupted run this one resumes, if any.
    pub fn interrupted(&self) -> Option<&Operation> {
        self.interrupted.as_ref()
    }

    /// Records that the objects are stored and `planned` claims' data is
    /// next.
    pub async fn volumes_next(&mut self, planned: u32) -> Result<()> {
        if let Some(op) = &mut self.operation {
            op.step = "volumes".into();
            op.volumes_planned = planned;
        }
        self.write_operation().await
    }

    /// Records that the data of `namespace/pvc` is being moved now, beside
    /// the claims already being moved (movers run concurrently); recording
    /// its volume ([`BackupWriter::add_volume`]) takes it off the list.
    pub async fn moving(&mut self, namespace: &str, pvc: &str) -> Result<()> {
        if let Some(op) = &mut self.operation {
            let claim = format!("{namespace}/{pvc}");
            if !op.moving.contains(&claim) {
                op.moving.push(claim);
            }
        }
        self.write_operation().await
    }

    async fn write_operation(&mut self) -> Result<()> {
        let Some(op) = &mut self.operation else {
            return Ok(());
        };
        op.updated = Timestamp::now();
        let path = layout::backup_file(&self.spec.cluster, &self.name, OPERATION);
        self.repo.put_json(&path, op).await
    }

    /// Records an exec hook run about to start (written to the operation
    /// record before the command runs); returns its index for
    /// [`BackupWriter::hook_ended`].
    pub async fn hook_starting(&mut self, entry: HookEntry) -> Result<usize> {
        self.hooks.push(entry.clone());
        if let Some(op) = &mut self.operation {
            op.hooks.push(entry);
        }
        self.write_operation().await?;
        Ok(self.hooks.len() - 1)
    }

    /// Records how hook run `index` ended, as a log line (an error when it
    /// failed and `fails` — the backup is then PartiallyFailed — a warning
    /// when it failed otherwise), and, for a post hook, that pre hook
    /// `thaws` is thawed.
    pub async fn hook_ended(
        &mut self,
        index: usize,
        ended: HookEntry,
        fails: bool,
        thaws: Option<usize>,
    ) -> Result<()> {
        let failed = ended.failed();
        let message = format!(
            "{} hook {} ran {:?} in container {}: {} after {} ms{}",
            ended.phase,
            ended.hook,
            ended.command,
            ended.container,
            match (&ended.error, ended.exit_code) {
                (Some(e), _) => format!("failed ({e})"),
                (None, Some(c)) => format!("exit code {c}"),
                (None, None) => "ended".to_string(),
            },
            ended.duration_ms.unwrap_or_default(),
            if ended.stderr.is_empty() {
                String::new()
            } else {
                format!("; stderr: {}", ended.stderr.join(" | "))
            },
        );
        let level = match (failed, fails) {
            (false, _) => LogLevel::Info,
            (true, true) => LogLevel::Error,
            (true, false) => LogLevel::Warning,
        };
        self.handle
            .log(LogEntry {
                level,
                time: ended.start,
                resource: Some("pods".into()),
                namespace: Some(ended.namespace.clone()),
                name: Some(ended.pod.clone()),
                message,
            })
            .await?;
        let set = |hooks: &mut Vec<HookEntry>| {
            if let Some(h) = hooks.get_mut(index) {
                *h = ended.clone();
            }
            if let Some(h) = thaws.and_then(|t| hooks.get_mut(t)) {
                h.thawed = true;
            }
        };
        set(&mut self.hooks);
        if let Some(op) = &mut self.operation {
            set(&mut op.hooks);
        }
        self.write_operation().await
    }

    /// The hook runs of the interrupted run this one resumes, taken over
    /// (they count in the manifest); returns the indexes of its pre hooks
    /// whose thaw is still owed.
    pub async fn adopt_hooks(&mut self, from: &Operation) -> Result<Vec<usize>> {
        let base = self.hooks.len();
        self.hooks.extend(from.hooks.iter().cloned());
        if let Some(op) = &mut self.operation {
            op.hooks.extend(from.hooks.iter().cloned());
        }
        self.write_operation().await?;
        Ok(from
            .hooks
            .iter()
            .enumerate()
            .filter(|(_, h)| h.thaw.is_some() && !h.thawed)
            .map(|(i, _)| base + i)
            .collect())
    }

    /// Hook run `index` as recorded.
    pub fn hook(&self, index: usize) -> Option<&HookEntry> {
        self.hooks.get(index)
    }

    /// Takes over the finished volumes an interrupted run of this backup
    /// recorded in `from`, whose result files are still there with their
    /// recorded size; returns them. Failed volumes are not taken over:
    /// they are tried again.
    pub async fn adopt_volumes(&mut self, from: &Operation) -> Result<Vec<VolumeEntry>> {
        let mut adopted = Vec::new();
        for entry in from
            .volumes
            .iter()
            .filter(|v| v.phase == VolumePhase::Completed)
        {
            let Some(file) = entry
                .file
                .as_ref()
                .and_then(|f| from.files.iter().find(|i| &i.name == f))
            else {
                continue;
            };
            if self
                .volumes
                .iter()
                .any(|v| v.namespace == entry.namespace && v.pvc == entry.pvc)
            {
                continue;
            }
            let path = layout::backup_file(&self.spec.cluster, &self.name, &file.name);
            match self.repo.store().head(&path).await {
                Ok(meta) if meta.size == file.bytes => {}
                Ok(_) | Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(StoreError::storage("head", self.repo.display(&path), e)),
            }
            self.volume_files.push(file.clone());
            self.volumes.push(entry.clone());
            if let Some(op) = &mut self.operation {
                op.volumes.push(entry.clone());
                op.files.push(file.clone());
            }
            adopted.push(entry.clone());
        }
        self.write_operation().await?;
        Ok(adopted)
    }

    /// Records one volume of the backup: its result `detail` (any JSON) is
    /// written now to `volumes/<namespace>/<pvc>.json.zst` (`.age`,
    /// encrypted to the recipients like the index, when the backup is
    /// encrypted), before the
    /// manifest, which lists the file and the entry. A `Failed` entry is
    /// also an error line of the log, so the backup is `PartiallyFailed`.
    pub async fn add_volume(
        &mut self,
        mut entry: VolumeEntry,
        detail: &serde_json::Value,
    ) -> Result<()> {
        validate_name("namespace", &entry.namespace)?;
        validate_name("claim", &entry.pvc)?;
        if self
            .volumes
            .iter()
            .any(|v| v.namespace == entry.namespace && v.pvc == entry.pvc)
        {
            return Err(StoreError::InvalidConfig(format!(
                "volume {}/{} was recorded twice in backup {}",
                entry.namespace, entry.pvc, self.name
            )));
        }
        let encrypted = !self.repo.recipients().is_empty();
        let name = format!(
            "volumes/{}/{}.json.zst{}",
            entry.namespace,
            entry.pvc,
            if encrypted { ".age" } else { "" }
        );
        let path = layout::backup_file(&self.spec.cluster, &self.name, &name);
        let mut bytes = serde_json::to_vec(detail).map_err(|source| StoreError::InvalidJson {
            path: self.repo.display(&path),
            source,
        })?;
        bytes.push(b'\n');
        bytes = zstd::encode_all(bytes.as_slice(), ZSTD_LEVEL)
            .map_err(|e| StoreError::io("cannot compress a volume result", e))?;
        if encrypted {
            bytes = self.repo.seal(&bytes)?;
        }
        let info = FileInfo {
            name: name.clone(),
            bytes: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(&bytes)),
        };
        self.repo.put_raw(&path, bytes).await?;
        if entry.phase == VolumePhase::Failed {
            self.handle
                .log(LogEntry {
                    level: LogLevel::Error,
                    time: Timestamp::now(),
                    resource: Some("persistentvolumeclaims".into()),
                    namespace: Some(entry.namespace.clone()),
                    name: Some(entry.pvc.clone()),
                    message: format!(
                        "the volume data was not backed up: {}",
                        entry.error.as_deref().unwrap_or("unknown error")
                    ),
                })
                .await?;
        }
        entry.file = Some(name);
        if let Some(op) = &mut self.operation {
            op.volumes.push(entry.clone());
            op.files.push(info.clone());
            let claim = format!("{}/{}", entry.namespace, entry.pvc);
            op.moving.retain(|m| m != &claim);
        }
        self.volume_files.push(info);
        self.volumes.push(entry);
        self.write_operation().await
    }

    /// Completes the files and commits the backup with a manifest; the phase
    /// is `Completed`, or `PartiallyFailed` when error lines were logged.
    pub async fn finish(self, end_time: Timestamp) -> Result<Manifest> {
        self.commit(end_time, None).await
    }

    /// Completes the files and commits the backup with phase `Failed`
    /// ("nothing usable"), recording `reason`. The files are kept for
    /// inspection; retention deletes failed backups.
    pub async fn finish_failed(
        self,
        end_time: Timestamp,
        reason: impl Into<String>,
    ) -> Result<Manifest> {
        self.commit(end_time, Some(reason.into())).await
    }

    /// Stops writing and aborts the uploads. No manifest is written.
    pub async fn abort(mut self) -> Result<()> {
        self.tx = None;
        let encoder = self.encoder.take();
        if let Some(encoder) = encoder {
            let _ = encoder.await;
        }
        for task in std::mem::take(&mut self.uploads) {
            let _ = task.await;
        }
        Ok(())
    }

    async fn commit(mut self, end_time: Timestamp, failure: Option<String>) -> Result<Manifest> {
        if let Some(tx) = self.tx.take() {
            // A closed channel means the encoder already stopped; its error
            // is collected below.
            let _ = tx.send(Msg::Finish).await;
        }
        let encoded = match self.encoder.take() {
            Some(task) => task.await.map_err(|e| StoreError::Task(e.to_string()))?,
            None => Err(StoreError::WriterStopped(self.first_error.get())),
        };
        // Upload errors are the root cause of "the upload stopped" in the
        // encoder, so report them first.
        let mut upload_error = None;
        for task in std::mem::take(&mut self.uploads) {
            let result = task.await.map_err(|e| StoreError::Task(e.to_string()))?;
            if let Err(e) = result
                && upload_error.is_none()
            {
                upload_error = Some(e);
            }
        }
        if let Some(e) = upload_error {
            return Err(e);
        }
        let encoded = encoded?;

        let [resources, index, log] = encoded.files;
        let info = |i: usize, up: Uploaded| FileInfo {
            name: self.file_names[i].clone(),
            bytes: up.bytes,
            sha256: up.sha256,
        };
        let phase = match (&failure, encoded.totals.errors) {
            (Some(_), _) => Phase::Failed,
            (None, 0) => Phase::Completed,
            (None, _) => Phase::PartiallyFailed,
        };
        let mut volumes = std::mem::take(&mut self.volumes);
        volumes.sort_by(|a, b| (&a.namespace, &a.pvc).cmp(&(&b.namespace, &b.pvc)));
        let mut other = std::mem::take(&mut self.volume_files);
        other.sort_by(|a, b| a.name.cmp(&b.name));
        let manifest = Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            backup_name: self.name.clone(),
            policy: self.spec.policy.clone(),
            policy_revision: self.spec.policy_revision.clone(),
            cluster: self.spec.cluster.clone(),
            schedule_slot: self.spec.schedule_slot,
            start_time: self.spec.start_time,
            end_time,
            phase,
            failure_reason: failure,
            resources: encoded.resources,
            totals: encoded.totals,
            files: BackupFiles {
                resources: info(0, resources),
                index: info(1, index),
                log: info(2, log),
                other,
            },
            recipients: self.repo.recipients(),
            lifeboat_version: LIFEBOAT_VERSION.to_string(),
            labels: self.spec.labels.clone(),
            prerequisites: self
                .handle
                .prerequisites
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned()
                .collect(),
            volumes,
            images: std::mem::take(&mut self.images),
            hooks: HookCounts {
                ran: self.hooks.len() as u32,
                failed: self.hooks.iter().filter(|h| h.failed()).count() as u32,
            },
            artifacts: {
                let mut a = std::mem::take(&mut self.artifacts);
                a.sort_by(|x, y| x.file.cmp(&y.file));
                a
            },
        };
        let path = layout::backup_file(&self.spec.cluster, &self.name, MANIFEST);
        self.repo
            .put_signed_json(
                &path,
                &manifest,
                SignedKind::Backup,
                &manifest.cluster,
                &manifest.backup_name,
                end_time,
            )
            .await?;
        // Committed: the operation record has served. One left behind (a
        // failed delete) is ignored next to a manifest.
        if self.operation.is_some() {
            let path = layout::backup_file(&self.spec.cluster, &self.name, OPERATION);
            let _ = self.repo.store().delete(&path).await;
        }
        Ok(manifest)
    }
}

/// Plain or age-encrypted output.
pub(crate) enum MaybeAge<W: Write> {
    Plain(W),
    Age(age::stream::StreamWriter<W>),
}

impl<W: Write> MaybeAge<W> {
    pub(crate) fn new(keys: &Keys, out: W) -> Result<Self> {
        if keys.recipients.is_empty() {
            Ok(MaybeAge::Plain(out))
        } else {
            keys.encrypt(out).map(MaybeAge::Age)
        }
    }

    pub(crate) fn finish(self) -> io::Result<W> {
        match self {
            MaybeAge::Plain(w) => Ok(w),
            MaybeAge::Age(w) => w.finish(),
        }
    }
}

impl<W: Write> Write for MaybeAge<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            MaybeAge::Plain(w) => w.write(buf),
            MaybeAge::Age(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            MaybeAge::Plain(w) => w.flush(),
            MaybeAge::Age(w) => w.flush(),
        }
    }
}

pub(crate) type Compressed = zstd::Encoder<'static, MaybeAge<UploadSink>>;

/// `workers` > 0 makes zstd compress on that many threads of its own
/// while the caller keeps feeding it; the output is ordinary zstd frames.
pub(crate) fn compressed(keys: &Keys, sink: UploadSink, workers: u32) -> Result<Compressed> {
    let out = MaybeAge::new(keys, sink)?;
    let start = |e| StoreError::io("cannot start zstd", e);
    let mut enc = zstd::Encoder::new(out, ZSTD_LEVEL).map_err(start)?;
    if workers > 0 {
        enc.multithread(workers).map_err(start)?;
        // zstd's default job (4 × the window, 8 MiB at level 3) would keep
        // four times more input in flight per worker; 2 MiB jobs bound the
        // buffers to a few MiB per worker.
        enc.set_parameter(CParameter::JobSize(ZSTD_JOB_SIZE))
            .map_err(start)?;
    }
    Ok(enc)
}

/// zstd worker threads for `resources.tar.zst`: one per core, at most
/// `MAX_ZSTD_WORKERS`. Even one worker takes compression off the encoder
/// thread, which then only builds tar entries and index lines.
fn zstd_workers() -> u32 {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_ZSTD_WORKERS) as u32
}

pub(crate) fn finish_compressed(w: Compressed) -> io::Result<Uploaded> {
    w.finish()?.finish()?.finish()
}

/// The encoder thread: runs until `Finish` (completes the files) or until
/// the channel closes without it (drops the sinks, which aborts uploads).
fn encode(
    rx: &mut mpsc::Receiver<Msg>,
    sinks: Vec<UploadSink>,
    keys: &Keys,
    mtime: u64,
) -> Result<Encoded> {
    let io_err = |e: io::Error| StoreError::io("writing the backup archive failed", e);
    let mut sinks = sinks.into_iter();
    let (Some(res), Some(idx), Some(log)) = (sinks.next(), sinks.next(), sinks.next()) else {
        return Err(StoreError::Task("encoder needs three sinks".into()));
    };
    let mut tar = tar::Builder::new(compressed(keys, res, zstd_workers())?);
    let mut index = compressed(keys, idx, 0)?;
    let mut log = compressed(keys, log, 0)?;
    write!(index, "{{\"formatVersion\":{FORMAT_VERSION},\"objects\":[").map_err(io_err)?;

    let mut resources: BTreeMap<String, ResourceCount> = BTreeMap::new();
    let mut totals = Totals::default();
    loop {
        match rx.blocking_recv() {
            Some(Msg::Objects(batch)) => {
                for (entry, path) in batch {
                    let mut header = tar::Header::new_gnu();
                    header.set_size(entry.json.len() as u64);
                    header.set_mode(0o644);
                    header.set_mtime(mtime);
                    header.set_entry_type(tar::EntryType::Regular);
                    tar.append_data(&mut header, &path, entry.json.as_ref())
                        .map_err(io_err)?;
                    if totals.items > 0 {
                        index.write_all(b",").map_err(io_err)?;
                    }
                    let line = IndexEntry {
                        sha256: hex::encode(Sha256::digest(&entry.json)),
                        bytes: entry.json.len() as u64,
                        path,
                        api_version: entry.api_version,
                        kind: entry.kind,
                        namespace: entry.namespace,
                        resource: entry.resource,
                        group: entry.group,
                        name: entry.name,
                    };
                    serde_json::to_writer(&mut index, &line).map_err(|e| io_err(e.into()))?;
                    totals.items += 1;
                    totals.object_bytes += line.bytes;
                    resources
                        .entry(resource_key(&line.resource, &line.group))
                        .or_default()
                        .items += 1;
                }
            }
            Some(Msg::Log(entry)) => {
                match entry.level {
                    LogLevel::Error => {
                        totals.errors += 1;
                        if let Some(r) = &entry.resource {
                            resources.entry(r.clone()).or_default().errors += 1;
                        }
                    }
                    LogLevel::Warning => totals.warnings += 1,
                    LogLevel::Info => {}
                }
                serde_json::to_writer(&mut log, &entry).map_err(|e| io_err(e.into()))?;
                log.write_all(b"\n").map_err(io_err)?;
            }
            Some(Msg::Finish) => break,
            // Dropped or aborted: drop the sinks unfinished.
            None => {
                return Err(StoreError::WriterStopped(
                    "the backup writer was aborted".into(),
                ));
            }
        }
    }
    index.write_all(b"]}\n").map_err(io_err)?;
    let res = finish_compressed(tar.into_inner().map_err(io_err)?).map_err(io_err)?;
    let idx = finish_compressed(index).map_err(io_err)?;
    let log = finish_compressed(log).map_err(io_err)?;
    Ok(Encoded {
        files: [res, idx, log],
        resources,
        totals,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ns: Option<&str>, name: &str, group: &str) -> ObjectEntry {
        ObjectEntry {
            resource: "things".into(),
            group: group.into(),
            namespace: ns.map(Into::into),
            name: name.into(),
            api_version: "v1".into(),
            kind: "Thing".into(),
            json: Bytes::from_static(b"{}"),
        }
    }

    #[rstest::rstest]
    #[case(
        Some("default"),
        "a",
        "",
        Some("resources/things/namespaces/default/a.json")
    )]
    #[case(
        None,
        "system:admin",
        "rbac.authorization.k8s.io",
        Some("resources/things.rbac.authorization.k8s.io/cluster/system:admin.json")
    )]
    #[case(Some(".."), "a", "", None)]
    #[case(None, "a/b", "", None)]
    #[case(None, "", "", None)]
    fn archive_paths(
        #[case] ns: Option<&str>,
        #[case] name: &str,
        #[case] group: &str,
        #[case] expected: Option<&str>,
    ) {
        let got = entry(ns, name, group).archive_path().ok();
        assert_eq!(got.as_deref(), expected);
    }
}
