//! Backup, restore, listing and maintenance of a volume repository.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use object_store::ObjectStoreExt;
use rustic_core::repofile::{NodeType, SnapshotFile};
use rustic_core::{
    BackupOptions, CheckOptions, LocalSource, LocalSourceFilterOptions, LocalSourceSaveOptions,
    ParentOptions, Progress, ProgressBars, ProgressType, PruneOptions, RusticProgress,
    SnapshotOptions,
};
use serde::{Deserialize, Serialize};

use crate::backend::Control;

/// Markers of backups in progress (see `index_orphans`).
const PENDING: &str = "lifeboat-pending";
use crate::error::{Result, VolumeError};
use crate::lock::{DEFAULT_EXPIRY, Lock};
use crate::repo::{VolumeRepo, blocking};
use crate::restore::{RestoreProgress, Target, restore_node};
use crate::source::{BlockSource, TreeSource, Watch};

/// What a volume holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum VolumeKind {
    /// A mounted file system (a directory tree).
    Filesystem,
    /// A raw block device or image file.
    Block,
}

/// What to back up.
#[derive(Debug, Clone)]
pub struct BackupRequest {
    /// The directory (filesystem) or device / image file (block).
    pub source: PathBuf,
    pub kind: VolumeKind,
    /// The claim's name: the snapshot path is `/<namespace>/<pvc>`.
    pub pvc: String,
    /// The claim's UID (tag `pvc-uid=…`).
    pub pvc_uid: Option<String>,
    /// The lifeboat backup this belongs to (tag `backup=…`).
    pub backup: Option<String>,
    /// Read every file's content even when size and mtime match the parent.
    pub force_read: bool,
}

/// lifeboat's note in the snapshot's description.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeNote {
    pub kind: Option<VolumeKind>,
    /// The volume root's mode, owner and group (rustic records the
    /// directories above the snapshot path without them).
    pub root_mode: Option<u32>,
    pub root_uid: Option<u32>,
    pub root_gid: Option<u32>,
}

/// The result of a backup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupResult {
    pub snapshot: String,
    pub parent: Option<String>,
    pub repository: String,
    pub path: String,
    pub files: u64,
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    /// Bytes of all files in the snapshot.
    pub total_bytes: u64,
    /// Bytes of new content (before compression).
    pub new_bytes: u64,
    /// Bytes uploaded for new content (after compression and encryption).
    pub uploaded_bytes: u64,
    pub duration_seconds: f64,
    pub warnings: Vec<String>,
}

/// Progress counters of a running operation (for JSON lines and bars).
#[derive(Debug, Default)]
pub struct Counters {
    pub bytes_done: AtomicU64,
    pub bytes_total: AtomicU64,
    pub files_done: AtomicU64,
    pub files_total: AtomicU64,
}

/// One progress sample.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProgressSample {
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub files_done: u64,
    pub files_total: u64,
}

impl Counters {
    pub fn sample(&self) -> ProgressSample {
        ProgressSample {
            bytes_done: self.bytes_done.load(Ordering::Relaxed),
            bytes_total: self.bytes_total.load(Ordering::Relaxed),
            files_done: self.files_done.load(Ordering::Relaxed),
            files_total: self.files_total.load(Ordering::Relaxed),
        }
    }
}

/// Feeds rustic's byte progress into [`Counters`].
#[derive(Debug, Clone)]
struct Bars(Arc<Counters>);

#[derive(Debug)]
struct Bytes(Arc<Counters>);

impl RusticProgress for Bytes {
    fn is_hidden(&self) -> bool {
        false
    }
    fn set_length(&self, len: u64) {
        self.0.bytes_total.store(len, Ordering::Relaxed);
    }
    fn set_title(&self, _title: &str) {}
    fn inc(&self, inc: u64) {
        self.0.bytes_done.fetch_add(inc, Ordering::Relaxed);
    }
    fn finish(&self) {}
}

impl ProgressBars for Bars {
    fn progress(&self, kind: ProgressType, _prefix: &str) -> Progress {
        match kind {
            ProgressType::Bytes => Progress::new(Bytes(self.0.clone())),
            _ => Progress::hidden(),
        }
    }
}

/// A snapshot as `lifeboat volumes snapshots` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotInfo {
    pub id: String,
    pub short_id: String,
    pub time: String,
    pub host: String,
    pub paths: Vec<String>,
    pub tags: Vec<String>,
    pub parent: Option<String>,
    pub kind: Option<VolumeKind>,
    pub files: Option<u64>,
    pub bytes: Option<u64>,
}

impl SnapshotInfo {
    fn from_file(s: &SnapshotFile) -> SnapshotInfo {
        let note: VolumeNote = s
            .description
            .as_deref()
            .and_then(|d| serde_json::from_str(d).ok())
            .unwrap_or_default();
        let id = full_id(&s.id);
        SnapshotInfo {
            short_id: id.chars().take(8).collect(),
            id,
            time: s.time.timestamp().to_string(),
            host: s.hostname.clone(),
            paths: s.paths.iter().cloned().collect(),
            tags: s.tags.iter().cloned().collect(),
            parent: s.parent.as_ref().map(full_id),
            kind: note.kind,
            files: s.summary.as_ref().map(|x| x.total_files_processed),
            bytes: s.summary.as_ref().map(|x| x.total_bytes_processed),
        }
    }

    /// The value of tag `key=…`.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find_map(|t| t.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
    }
}

impl VolumeRepo {
    /// The snapshot path of a claim.
    pub fn snapshot_path(&self, pvc: &str) -> String {
        format!("/{}/{}", self.reference.namespace, pvc)
    }

    /// The snapshot host of this cluster.
    pub fn snapshot_host(&self) -> String {
        format!("lifeboat-{}", self.reference.cluster)
    }

    /// Backs up one volume. Holds a write lock for its duration; `control`
    /// cancels it (no snapshot is written then).
    pub async fn backup(
        &self,
        req: BackupRequest,
        counters: Arc<Counters>,
        control: Arc<Control>,
    ) -> Result<BackupResult> {
        crate::repo::validate("claim", &req.pvc)?;
        let mut req = req;
        if req.kind == VolumeKind::Filesystem
            && let Ok(real) = std::fs::canonicalize(&req.source)
        {
            // A symlink to the volume (the sandbox's mounts) is read as the
            // directory it names; rustic would store the link itself.
            req.source = real;
        }
        let meta = std::fs::metadata(&req.source).map_err(|source| VolumeError::Source {
            path: req.source.clone(),
            source,
        })?;
        if req.kind == VolumeKind::Filesystem {
            if !meta.is_dir() {
                return Err(VolumeError::Invalid(format!(
                    "{} is not a directory; pass a directory or use block mode",
                    req.source.display()
                )));
            }
            std::fs::read_dir(&req.source).map_err(|source| VolumeError::Source {
                path: req.source.clone(),
                source,
            })?;
        }
        let lock = Lock::write(self.store(), &self.base(), &self.url(), DEFAULT_EXPIRY).await?;
        let result = self
            .backup_locked(req, meta, counters, control, &lock)
            .await;
        lock.release_after(result).await
    }

    async fn backup_locked(
        &self,
        req: BackupRequest,
        meta: std::fs::Metadata,
        counters: Arc<Counters>,
        control: Arc<Control>,
        lock: &Lock,
    ) -> Result<BackupResult> {
        self.index_orphans(lock).await?;
        // The pending marker stays when this backup fails: its uploaded
        // packs are then indexed by the next backup and reused.
        let store = self.store();
        let marker = self.pending_marker(lock);
        store
            .put(
                &marker,
                object_store::PutPayload::from(lock.path().to_string().into_bytes()),
            )
            .await
            .map_err(|e| VolumeError::Storage(format!("write {marker}: {e}")))?;
        let repo = self.clone();
        let result =
            blocking(move || repo.backup_blocking(&req, &meta, &counters, &control)).await?;
        let _ = store.delete(&marker).await;
        Ok(result)
    }

    fn pending_marker(&self, lock: &Lock) -> object_store::path::Path {
        let name = lock.path().filename().unwrap_or("unknown").to_string();
        self.base().join(PENDING).join(name.as_str())
    }

    /// A backup that failed (store gone, SIGTERM, crash) leaves packs no
    /// index lists. When such a backup's marker is stale and no other writer
    /// runs, index those packs (rustic's index repair) so their blobs are
    /// reused instead of uploaded again.
    async fn index_orphans(&self, own: &Lock) -> Result<()> {
        let store = self.store();
        let dir = self.base().join(PENDING);
        let markers = crate::repo::list_all(&store, &dir).await?;
        let mut stale = Vec::new();
        for m in markers {
            let Some(bytes) = crate::repo::get_optional(&store, &m).await? else {
                continue;
            };
            let lock_path =
                object_store::path::Path::from(String::from_utf8_lossy(&bytes).to_string());
            if !crate::lock::is_live(&store, &lock_path).await? {
                stale.push(m);
            }
        }
        if stale.is_empty() {
            return Ok(());
        }
        let others = crate::lock::live_writers(&store, &self.base())
            .await?
            .into_iter()
            .filter(|p| p != own.path())
            .count();
        if others > 0 {
            // Another writer may be uploading packs it will index itself.
            return Ok(());
        }
        let repo = self.clone();
        blocking(move || {
            let rustic = repo.rustic(Control::new())?;
            rustic
                .repair_index(&rustic_core::RepairIndexOptions::default(), false)
                .map_err(|e| {
                    VolumeError::rustic("cannot index the packs of an interrupted backup", &e)
                })
        })
        .await?;
        for m in stale {
            let _ = store.delete(&m).await;
        }
        Ok(())
    }

    fn backup_blocking(
        &self,
        req: &BackupRequest,
        meta: &std::fs::Metadata,
        counters: &Arc<Counters>,
        control: &Arc<Control>,
    ) -> Result<BackupResult> {
        let started = Instant::now();
        let path = self.snapshot_path(&req.pvc);
        let rustic = self
            .rustic_unopened_with(control.clone(), Bars(counters.clone()))?
            .open(&rustic_core::Credentials::password(&self.password))
            .map_err(|e| {
                if e.is_incorrect_password() {
                    VolumeError::WrongKey { repo: self.url() }
                } else {
                    VolumeError::rustic(format!("cannot open {}", self.url()), &e)
                }
            })?;
        let rustic = rustic
            .to_indexed_ids()
            .map_err(|e| VolumeError::rustic("cannot read the repository index", &e))?;

        let mut tags = Vec::new();
        if let Some(b) = &req.backup {
            tags.push(format!("backup={b}"));
        }
        if let Some(u) = &req.pvc_uid {
            tags.push(format!("pvc-uid={u}"));
        }
        let note = VolumeNote {
            kind: Some(req.kind),
            root_mode: (req.kind == VolumeKind::Filesystem).then(|| meta.mode() & 0o7777),
            root_uid: (req.kind == VolumeKind::Filesystem).then(|| meta.uid()),
            root_gid: (req.kind == VolumeKind::Filesystem).then(|| meta.gid()),
        };
        let mut snap_opts = SnapshotOptions::default();
        snap_opts.host = Some(self.snapshot_host());
        snap_opts.description =
            Some(serde_json::to_string(&note).map_err(|e| VolumeError::Internal(e.to_string()))?);
        if !tags.is_empty() {
            snap_opts = snap_opts
                .add_tags(&tags.join(","))
                .map_err(|e| VolumeError::rustic("bad tags", &e))?;
        }
        let snap = snap_opts
            .to_snapshot()
            .map_err(|e| VolumeError::rustic("cannot prepare the snapshot", &e))?;

        let mut parent = ParentOptions::default();
        // Clones of CSI snapshots get new inodes and ctimes: size and mtime
        // alone decide whether a file changed.
        parent.ignore_ctime = true;
        parent.ignore_inode = true;
        parent.force = req.force_read;
        // The parent is found once, here: named to rustic (which would
        // otherwise read every snapshot file again to find it) and, for a
        // directory, the source of the progress totals.
        let previous = newest_snapshot(&rustic, &self.snapshot_host(), &path);
        if let Some(p) = &previous {
            parent.parents = vec![p.id.to_hex().to_string()];
        }
        let mut opts = BackupOptions::default();
        opts.parent_opts = parent;
        opts.as_path = Some(PathBuf::from(&path));

        let watch = Arc::new(Watch::default());
        let result = match req.kind {
            VolumeKind::Filesystem => {
                // An incremental backup's progress totals are its parent's:
                // the size scan is a second walk of the whole volume, which
                // on a tree of small files costs as much as the backup.
                if let Some(summary) = previous.as_ref().and_then(|p| p.summary.as_ref()) {
                    opts.no_scan = true;
                    let (files, bytes) =
                        (summary.total_files_processed, summary.total_bytes_processed);
                    watch.files_total.store(files, Ordering::Relaxed);
                    watch.bytes_total.store(bytes, Ordering::Relaxed);
                    counters.bytes_total.store(bytes, Ordering::Relaxed);
                }
                let mut save = LocalSourceSaveOptions::default();
                save.set_blockdev = None;
                let filter = LocalSourceFilterOptions::default();
                let local = LocalSource::new(
                    save,
                    &rustic_core::Excludes::default(),
                    &filter,
                    std::slice::from_ref(&req.source),
                )
                .map_err(|e| VolumeError::rustic("cannot read the source", &e))?;
                let src =
                    TreeSource::new(local, req.source.clone(), watch.clone(), control.clone());
                let w = watch.clone();
                let c = counters.clone();
                with_file_counts(&w, &c, || {
                    rustic.archive(&opts, &src, snap, std::slice::from_ref(&req.source))
                })
            }
            VolumeKind::Block => {
                let src = BlockSource::new(&req.source, &req.pvc, watch.clone(), control.clone())
                    .map_err(|source| VolumeError::Source {
                    path: req.source.clone(),
                    source,
                })?;
                let w = watch.clone();
                let c = counters.clone();
                with_file_counts(&w, &c, || {
                    rustic.archive(&opts, &src, snap, std::slice::from_ref(&req.source))
                })
            }
        };
        if control.is_cancelled() {
            return Err(VolumeError::Cancelled);
        }
        if let Some(reason) = control.failure() {
            return Err(VolumeError::Storage(format!(
                "{reason}; no snapshot was written (the next backup reuses what was uploaded)"
            )));
        }
        let snap = result.map_err(|e| VolumeError::rustic("the backup failed", &e))?;
        let summary = snap.summary.clone().unwrap_or_default();
        if req.kind == VolumeKind::Block
            && summary.total_bytes_processed != watch.bytes_total.load(Ordering::Relaxed)
        {
            return Err(VolumeError::Invalid(format!(
                "{} changed size while it was read; stop writers and back it up again",
                req.source.display()
            )));
        }
        Ok(BackupResult {
            snapshot: full_id(&snap.id),
            parent: snap.parent.as_ref().map(full_id),
            repository: self.url(),
            path,
            files: summary.total_files_processed,
            files_new: summary.files_new,
            files_changed: summary.files_changed,
            files_unmodified: summary.files_unmodified,
            total_bytes: summary.total_bytes_processed,
            new_bytes: summary.data_added_files,
            uploaded_bytes: summary.data_added_packed,
            duration_seconds: started.elapsed().as_secs_f64(),
            warnings: watch.warnings(),
        })
    }

    /// All snapshots, oldest first; `pvc` limits them to one claim.
    pub async fn snapshots(&self, pvc: Option<&str>) -> Result<Vec<SnapshotInfo>> {
        let repo = self.clone();
        let wanted = pvc.map(|p| self.snapshot_path(p));
        blocking(move || {
            let rustic = repo.rustic(Control::new())?;
            let mut snaps = rustic
                .get_all_snapshots()
                .map_err(|e| VolumeError::rustic("cannot read the snapshots", &e))?;
            snaps.sort_by(|a, b| a.time.cmp(&b.time));
            Ok(snaps
                .iter()
                .filter(|s| {
                    wanted
                        .as_ref()
                        .is_none_or(|w| s.paths.iter().any(|p| p == w))
                })
                .map(SnapshotInfo::from_file)
                .collect())
        })
        .await
    }

    /// Restores `spec` (`ID[:/path]`, `ID` a prefix of a snapshot id or
    /// `latest`; the path relative to the volume root) to `dest`. A block
    /// snapshot restores to a device or file (`dest`; into `dest/<pvc>` when
    /// `dest` is a directory).
    pub async fn restore(
        &self,
        spec: &str,
        pvc: Option<&str>,
        dest: &Path,
        counters: Arc<Counters>,
        control: Arc<Control>,
    ) -> Result<RestoreResult> {
        let (id, sub) = spec.split_once(':').unwrap_or((spec, ""));
        let (id, sub) = (id.to_string(), sub.trim_matches('/').to_string());
        let repo = self.clone();
        let dest = dest.to_path_buf();
        let wanted = pvc.map(|p| self.snapshot_path(p));
        let started = Instant::now();
        blocking(move || {
            let rustic = repo
                .rustic(control.clone())?
                .to_indexed()
                .map_err(|e| VolumeError::rustic("cannot read the repository index", &e))?;
            let snaps = rustic
                .get_all_snapshots()
                .map_err(|e| VolumeError::rustic("cannot read the snapshots", &e))?;
            let snap = pick_snapshot(&snaps, &id, wanted.as_deref()).ok_or_else(|| {
                VolumeError::NoSnapshot {
                    wanted: spec_display(&id, wanted.as_deref()),
                    repo: repo.url(),
                }
            })?;
            let root =
                snap.paths.iter().next().cloned().ok_or_else(|| {
                    VolumeError::Invalid(format!("snapshot {} has no path", snap.id))
                })?;
            let note: VolumeNote = snap
                .description
                .as_deref()
                .and_then(|d| serde_json::from_str(d).ok())
                .unwrap_or_default();
            let path = if sub.is_empty() {
                root.clone()
            } else {
                format!("{root}/{sub}")
            };
            // An empty volume's snapshot has an empty tree: rustic stores no
            // node for the root path when nothing lies below it.
            let empty = sub.is_empty()
                && note.kind != Some(VolumeKind::Block)
                && snap
                    .summary
                    .as_ref()
                    .is_some_and(|s| s.total_files_processed == 0);
            let node = match rustic.node_from_snapshot_and_path(snap, &path) {
                Ok(node) => Some(node),
                Err(_) if empty => None,
                // The snapshot's root always exists: failing to find it is
                // a damaged tree (or storage), not a wrong path.
                Err(e) if sub.is_empty() => {
                    return Err(crate::restore::unreadable(
                        "cannot read the snapshot's tree".into(),
                        &e,
                    ));
                }
                Err(_) => {
                    return Err(VolumeError::NoSnapshot {
                        wanted: format!("{}:{path}", full_id(&snap.id)),
                        repo: repo.url(),
                    });
                }
            };
            let progress = RestoreProgress::default();
            let dest = match node {
                None => {
                    std::fs::create_dir_all(&dest).map_err(|source| VolumeError::Destination {
                        path: dest.clone(),
                        source,
                    })?;
                    apply_root_note(&dest, &note, &progress);
                    dest
                }
                Some(node) => {
                    let (target, dest) = if node.node_type == NodeType::File {
                        let dest = if dest.is_dir() {
                            dest.join(node.name())
                        } else {
                            dest
                        };
                        (Target::Single { sparse: true }, dest)
                    } else {
                        (Target::Tree, dest)
                    };
                    let done = std::sync::atomic::AtomicBool::new(false);
                    let r = std::thread::scope(|s| {
                        s.spawn(|| {
                            while !done.load(Ordering::Relaxed) {
                                copy_counts(&progress, &counters);
                                std::thread::sleep(Duration::from_millis(200));
                            }
                        });
                        let r = restore_node(&rustic, &node, &dest, target, &progress, &control);
                        done.store(true, Ordering::Relaxed);
                        r
                    });
                    copy_counts(&progress, &counters);
                    r?;
                    if sub.is_empty() && target == Target::Tree {
                        apply_root_note(&dest, &note, &progress);
                    }
                    dest
                }
            };
            Ok(RestoreResult {
                snapshot: full_id(&snap.id),
                path,
                destination: dest.display().to_string(),
                files: progress.files_done.load(Ordering::Relaxed),
                bytes: progress.bytes_done.load(Ordering::Relaxed),
                duration_seconds: started.elapsed().as_secs_f64(),
                warnings: progress
                    .warnings
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
            })
        })
        .await
    }

    /// Forgets (deletes the snapshot files of) every snapshot tagged
    /// `backup=<backup>`. Their data goes with the next prunes.
    pub async fn forget_backup(&self, backup: &str) -> Result<Vec<String>> {
        let tag = format!("backup={backup}");
        let lock = Lock::write(self.store(), &self.base(), &self.url(), DEFAULT_EXPIRY).await?;
        let repo = self.clone();
        let r = blocking(move || {
            let rustic = repo.rustic(Control::new())?;
            let snaps = rustic
                .get_all_snapshots()
                .map_err(|e| VolumeError::rustic("cannot read the snapshots", &e))?;
            let ids: Vec<_> = snaps
                .iter()
                .filter(|s| s.tags.contains(&tag))
                .map(|s| s.id)
                .collect();
            rustic
                .delete_snapshots(&ids)
                .map_err(|e| VolumeError::rustic("cannot delete snapshots", &e))?;
            Ok(ids.iter().map(ToString::to_string).collect())
        })
        .await;
        lock.release_after(r).await
    }

    /// Prunes unreferenced data in two phases: packs no snapshot needs are
    /// marked and only deleted by a later prune after `keep_delete` (23 h by
    /// default), so a backup that started before the mark still finds its
    /// packs. Takes the exclusive prune lock.
    pub async fn prune(&self, keep_delete: Option<Duration>) -> Result<PruneReport> {
        let lock = Lock::prune(self.store(), &self.base(), &self.url(), DEFAULT_EXPIRY).await?;
        let repo = self.clone();
        let r = blocking(move || {
            let rustic = repo.rustic(Control::new())?;
            let mut opts = PruneOptions::default();
            if let Some(k) = keep_delete {
                opts.keep_delete =
                    jiff::Span::new().seconds(i64::try_from(k.as_secs()).unwrap_or(i64::MAX));
            }
            let plan = rustic
                .prune_plan(&opts)
                .map_err(|e| VolumeError::rustic("cannot plan the prune", &e))?;
            // rustic's `packs_to_delete` counts packs marked by an earlier
            // prune (deleted now, kept in their grace period, or recovered);
            // the packs this prune marks are the unused ones (`keep_pack` is
            // zero, so none is too young to mark) and the repacked ones.
            let stats = &plan.stats;
            let size = stats.size_sum();
            let report = PruneReport {
                packs_to_delete: stats.packs_to_delete.remove,
                packs_marked: stats.packs.unused + stats.packs.repack,
                packs_waiting: stats.packs_to_delete.keep,
                packs_recovered: stats.packs_to_delete.recover,
                bytes_to_delete: stats.size_to_delete.remove,
                bytes_marked: size.remove + size.repack,
            };
            rustic
                .prune(&opts, plan)
                .map_err(|e| VolumeError::rustic("the prune failed", &e))?;
            Ok(report)
        })
        .await;
        lock.release_after(r).await
    }

    /// Checks the repository's structure (and with `read_data` every pack's
    /// content). Returns the problems found; empty means healthy.
    pub async fn check(&self, read_data: bool) -> Result<Vec<String>> {
        let repo = self.clone();
        blocking(move || {
            let rustic = repo.rustic(Control::new())?;
            let mut opts = CheckOptions::default();
            opts.read_data = read_data;
            let results = rustic
                .check(opts)
                .map_err(|e| VolumeError::rustic("the check failed", &e))?;
            Ok(results
                .0
                .iter()
                .map(|(level, err)| format!("{level:?}: {err}"))
                .collect())
        })
        .await
    }
}

/// The outcome of a prune.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PruneReport {
    /// Packs deleted now (marked by an earlier prune, grace period over).
    pub packs_to_delete: u64,
    /// Packs marked now, deleted by a later prune after the grace period.
    pub packs_marked: u64,
    /// Packs marked by an earlier prune whose grace period is not over.
    pub packs_waiting: u64,
    /// Marked packs that are needed again.
    pub packs_recovered: u64,
    /// Bytes of the packs deleted now.
    pub bytes_to_delete: u64,
    /// Bytes of the blobs in the packs marked now.
    pub bytes_marked: u64,
}

/// The result of a restore.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RestoreResult {
    pub snapshot: String,
    pub path: String,
    pub destination: String,
    pub files: u64,
    pub bytes: u64,
    pub duration_seconds: f64,
    pub warnings: Vec<String>,
}

/// A snapshot id as restic names its file: all 64 hex digits. (rustic's
/// `Display` of an id shows only the first 8, which is ambiguous and is
/// not what a signed manifest may name.)
fn full_id(id: &impl std::ops::Deref<Target = rustic_core::Id>) -> String {
    id.to_hex().as_str().to_string()
}

fn spec_display(id: &str, path: Option<&str>) -> String {
    match path {
        Some(p) => format!("{id} of {p}"),
        None => id.to_string(),
    }
}

fn pick_snapshot<'a>(
    snaps: &'a [SnapshotFile],
    id: &str,
    path: Option<&str>,
) -> Option<&'a SnapshotFile> {
    let of_path = |s: &&SnapshotFile| path.is_none_or(|p| s.paths.iter().any(|x| x == p));
    if id == "latest" {
        return snaps
            .iter()
            .filter(of_path)
            .max_by_key(|s| s.time.timestamp());
    }
    let mut found = snaps
        .iter()
        .filter(of_path)
        .filter(|s| !id.is_empty() && full_id(&s.id).starts_with(id));
    let first = found.next()?;
    // An ambiguous prefix matches nothing rather than a guess.
    if found.next().is_some() {
        None
    } else {
        Some(first)
    }
}

fn copy_counts(p: &RestoreProgress, c: &Counters) {
    c.bytes_done
        .store(p.bytes_done.load(Ordering::Relaxed), Ordering::Relaxed);
    c.bytes_total
        .store(p.bytes_total.load(Ordering::Relaxed), Ordering::Relaxed);
    c.files_done
        .store(p.files_done.load(Ordering::Relaxed), Ordering::Relaxed);
    c.files_total
        .store(p.files_total.load(Ordering::Relaxed), Ordering::Relaxed);
}

fn apply_root_note(dest: &Path, note: &VolumeNote, progress: &RestoreProgress) {
    use std::os::unix::fs::PermissionsExt;
    if note.root_uid.is_some() || note.root_gid.is_some() {
        let _ = std::os::unix::fs::chown(dest, note.root_uid, note.root_gid);
    }
    if let Some(mode) = note.root_mode
        && let Err(e) = std::fs::set_permissions(dest, std::fs::Permissions::from_mode(mode))
    {
        progress
            .warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(format!("{}: cannot set the mode ({e})", dest.display()));
    }
}

/// The newest snapshot of `path` from `host`: the parent of its next
/// backup.
fn newest_snapshot<S: rustic_core::Open>(
    rustic: &rustic_core::Repository<S>,
    host: &str,
    path: &str,
) -> Option<rustic_core::repofile::SnapshotFile> {
    rustic
        .get_matching_snapshots(|s| s.hostname == host && s.paths.iter().any(|p| p == path))
        .ok()?
        .into_iter()
        .max_by(|a, b| a.time.cmp(&b.time))
}

/// Runs `f` while a thread copies the source's file counts into `counters`.
fn with_file_counts<T>(watch: &Arc<Watch>, counters: &Arc<Counters>, f: impl FnOnce() -> T) -> T {
    let done = std::sync::atomic::AtomicBool::new(false);
    let copy = || {
        counters
            .files_done
            .store(watch.files_done.load(Ordering::Relaxed), Ordering::Relaxed);
        counters
            .files_total
            .store(watch.files_total.load(Ordering::Relaxed), Ordering::Relaxed);
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                copy();
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        let r = f();
        done.store(true, Ordering::Relaxed);
        copy();
        r
    })
}
