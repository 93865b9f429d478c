//! The backup reader: opens a committed backup by its manifest and streams
//! its files back, verifying every byte.
//!
//! ```text
//! GET file ─(size check)─▶ SHA-256 ─▶ [age -d] ─▶ zstd -d ─▶ tar / JSON
//!                            └─ compared with manifest.json at the end
//! ```
//!
//! Restores must not apply anything before the archive is known to be
//! good, so reading is two passes over the store (no temp files):
//! [`BackupReader::verify`] streams every file once and checks sizes,
//! SHA-256, decryption, compression and tar structure; then
//! [`BackupReader::entries`] streams the objects for applying (and checks
//! the hash again, reporting a mismatch as its last item). Decoding runs on
//! a blocking thread; memory holds one object at a time.

use std::collections::BTreeSet;
use std::io::{self, BufRead, Read};
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::error::{Result, StoreError};
use crate::model::{
    FileInfo, Index, LogEntry, MANIFEST_FORMAT_VERSION, Manifest, Prerequisite, VolumeEntry,
};
use crate::repo::{MANIFEST, Repository, layout, validate_name};
use crate::signing::SignatureCheck;

/// Reads one committed backup.
#[derive(Debug, Clone)]
pub struct BackupReader {
    repo: Repository,
    manifest: Arc<Manifest>,
    signature: Arc<SignatureCheck>,
}

/// One object from `resources.tar.zst`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveEntry {
    /// Path in the archive, e.g. `resources/deployments.apps/namespaces/web/api.json`.
    pub path: String,
    /// `<resource>[.<group>]` parsed from the path.
    pub resource: String,
    pub group: String,
    pub namespace: Option<String>,
    pub name: String,
    /// The object's JSON.
    pub json: Bytes,
}

impl ArchiveEntry {
    /// Parses an archive path into (resource, group, namespace, name).
    pub fn parse_path(path: &str) -> Option<(String, String, Option<String>, String)> {
        let parts: Vec<&str> = path.split('/').collect();
        let (rk, namespace, file) = match parts.as_slice() {
            ["resources", rk, "namespaces", ns, file] => (*rk, Some(ns.to_string()), *file),
            ["resources", rk, "cluster", file] => (*rk, None, *file),
            _ => return None,
        };
        let name = file.strip_suffix(".json")?;
        let (resource, group) = rk.split_once('.').unwrap_or((rk, ""));
        Some((resource.into(), group.into(), namespace, name.into()))
    }
}

/// What `verify` checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyReport {
    pub objects: u64,
    pub log_lines: u64,
    pub stored_bytes: u64,
}

/// Why decoding stopped.
pub(crate) enum Stop {
    Io(io::Error),
    Invalid(String),
    Cancelled,
}

impl From<io::Error> for Stop {
    fn from(e: io::Error) -> Self {
        Stop::Io(e)
    }
}

/// What a restore reads objects from: a lifeboat backup ([`BackupReader`])
/// or a Velero one ([`crate::VeleroReader`]).
pub trait RestoreSource: Send + Sync {
    /// Checks everything before anything is applied.
    fn verify(&self) -> impl Future<Output = Result<VerifyReport>> + Send;
    /// The objects, in archive order; an error as the last item when the
    /// stored bytes turn out damaged.
    fn entries(&self) -> impl Stream<Item = Result<ArchiveEntry>> + Send + 'static;
    /// The volumes whose data the backup carries.
    fn volumes(&self) -> &[VolumeEntry];
    /// Volumes whose data the backup holds in a form lifeboat cannot read
    /// (Velero's Kopia repositories), or that its writer did not finish,
    /// each with the reason in `error`: their claims come back as they
    /// were backed up, and the restore reports each.
    fn unreadable_volumes(&self) -> &[VolumeEntry] {
        &[]
    }
    /// What the backed-up objects need in the target cluster.
    fn prerequisites(&self) -> &[Prerequisite];
    /// The claims (namespace, name) the backup holds, for restoring
    /// single claims.
    fn claims(&self) -> impl Future<Output = Result<BTreeSet<(String, String)>>> + Send;
    /// The dump artifacts the backup holds (none in a Velero backup).
    fn artifacts(&self) -> &[crate::model::ArtifactEntry] {
        &[]
    }
    /// Streams one of [`RestoreSource::artifacts`] back, checked as it
    /// streams.
    fn open_artifact(
        &self,
        entry: &crate::model::ArtifactEntry,
    ) -> impl Future<Output = Result<crate::ArtifactChunks>> + Send {
        let file = entry.file.clone();
        async move {
            Err(StoreError::InvalidConfig(format!(
                "this backup holds no dump artifacts (asked for {file})"
            )))
        }
    }
}

impl RestoreSource for BackupReader {
    fn verify(&self) -> impl Future<Output = Result<VerifyReport>> + Send {
        BackupReader::verify(self)
    }
    fn entries(&self) -> impl Stream<Item = Result<ArchiveEntry>> + Send + 'static {
        BackupReader::entries(self)
    }
    fn volumes(&self) -> &[VolumeEntry] {
        BackupReader::volumes(self)
    }
    fn prerequisites(&self) -> &[Prerequisite] {
        &self.manifest.prerequisites
    }
    fn artifacts(&self) -> &[crate::model::ArtifactEntry] {
        BackupReader::artifacts(self)
    }
    fn open_artifact(
        &self,
        entry: &crate::model::ArtifactEntry,
    ) -> impl Future<Output = Result<crate::ArtifactChunks>> + Send {
        BackupReader::open_artifact(self, entry)
    }
    async fn claims(&self) -> Result<BTreeSet<(String, String)>> {
        Ok(self
            .index()
            .await?
            .objects
            .iter()
            .filter(|o| o.group.is_empty() && o.resource == "persistentvolumeclaims")
            .filter_map(|o| Some((o.namespace.clone()?, o.name.clone())))
            .collect())
    }
}

impl Repository {
    /// Opens a committed backup (one with a manifest).
    pub async fn open_backup(&self, cluster: &str, backup: &str) -> Result<BackupReader> {
        validate_name("cluster", cluster)?;
        validate_name("backup", backup)?;
        let path = layout::backup_file(cluster, backup, MANIFEST);
        let (manifest, signature) =
            self.read_manifest(cluster, backup).await?.ok_or_else(|| {
                StoreError::BackupNotFound {
                    url: self.url().to_string(),
                    cluster: cluster.into(),
                    backup: backup.into(),
                }
            })?;
        if manifest.format_version > MANIFEST_FORMAT_VERSION {
            return Err(StoreError::NewerManifest {
                path: self.display(&path),
                found: manifest.format_version,
                supported: MANIFEST_FORMAT_VERSION,
            });
        }
        Ok(BackupReader {
            repo: self.clone(),
            manifest: Arc::new(manifest),
            signature: Arc::new(signature),
        })
    }
}

impl BackupReader {
    pub(crate) fn repository(&self) -> &Repository {
        &self.repo
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The manifest's signature, checked against the trusted keys when the
    /// backup was opened.
    pub fn signature(&self) -> &SignatureCheck {
        &self.signature
    }

    /// Fails when the signature is bad or untrusted, or missing although
    /// signing is required for the backup's cluster. [`BackupReader::verify`]
    /// and [`BackupReader::entries`] call it first, so nothing of a refused
    /// backup is ever read.
    pub fn check_signature(&self) -> Result<()> {
        match self.signature.refusal() {
            None => Ok(()),
            Some(reason) => Err(StoreError::SignatureRefused {
                what: format!(
                    "backup {} of cluster {} in {}",
                    self.manifest.backup_name,
                    self.manifest.cluster,
                    self.repo.url()
                ),
                reason,
            }),
        }
    }

    /// Streams every file once and checks it completely. Run this before
    /// applying anything.
    pub async fn verify(&self) -> Result<VerifyReport> {
        self.check_signature()?;
        let files = &self.manifest.files;
        let objects = self
            .read_file(&files.resources, |r| {
                let mut archive = tar::Archive::new(r);
                let mut n = 0u64;
                for entry in archive.entries()? {
                    let mut entry = entry?;
                    io::copy(&mut entry, &mut io::sink())?;
                    n += 1;
                }
                Ok(n)
            })
            .await?;
        let index = self.index().await?;
        for file in &files.other {
            self.read_file(file, |r| {
                io::copy(r, &mut io::sink())?;
                Ok(())
            })
            .await?;
        }
        let log_lines = self
            .read_file(&files.log, |r| count_log_lines(r).map(|v| v.len() as u64))
            .await?;
        let expected = self.manifest.totals.items;
        if objects != expected || index.objects.len() as u64 != expected {
            return Err(StoreError::Corrupt {
                path: self.display(&files.resources),
                reason: format!(
                    "the manifest counts {expected} objects, the archive holds {objects} and the \
                     index {}",
                    index.objects.len()
                ),
            });
        }
        Ok(VerifyReport {
            objects,
            log_lines,
            stored_bytes: files.bytes(),
        })
    }

    /// The volumes whose data the backup carries (none in format 1).
    pub fn volumes(&self) -> &[VolumeEntry] {
        &self.manifest.volumes
    }

    /// A volume's result file (its JSON), checked against the manifest.
    pub async fn volume_detail(&self, entry: &VolumeEntry) -> Result<serde_json::Value> {
        self.check_signature()?;
        let file = entry
            .file
            .as_ref()
            .and_then(|f| self.manifest.files.other.iter().find(|i| &i.name == f))
            .ok_or_else(|| StoreError::Corrupt {
                path: self.repo.display(&layout::backup_file(
                    &self.manifest.cluster,
                    &self.manifest.backup_name,
                    MANIFEST,
                )),
                reason: format!(
                    "volume {}/{} names no file that the manifest lists",
                    entry.namespace, entry.pvc
                ),
            })?;
        self.read_file(file, |r| {
            serde_json::from_reader(r).map_err(|e| Stop::Invalid(format!("volume result: {e}")))
        })
        .await
    }

    /// The object index (all entries in memory: metadata only).
    pub async fn index(&self) -> Result<Index> {
        self.read_file(&self.manifest.files.index, |r| {
            serde_json::from_reader(r).map_err(|e| Stop::Invalid(format!("index: {e}")))
        })
        .await
    }

    /// The backup log.
    pub async fn log(&self) -> Result<Vec<LogEntry>> {
        self.read_file(&self.manifest.files.log, count_log_lines)
            .await
    }

    /// Streams the objects of `resources.tar.zst` in archive order. Filter
    /// by resource or namespace on the entry. If the stored bytes do not
    /// match the manifest, the last item is the error.
    pub fn entries(&self) -> impl Stream<Item = Result<ArchiveEntry>> + Send + 'static {
        let (tx, rx) = mpsc::channel::<Result<ArchiveEntry>>(32);
        let reader = self.clone();
        tokio::spawn(async move {
            if let Err(e) = reader.check_signature() {
                let _ = tx.send(Err(e)).await;
                return;
            }
            let sender = tx.clone();
            let result = reader
                .read_file(&reader.manifest.files.resources, move |r| {
                    let mut archive = tar::Archive::new(r);
                    for entry in archive.entries()? {
                        let mut entry = entry?;
                        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                        let Some((resource, group, namespace, name)) =
                            ArchiveEntry::parse_path(&path)
                        else {
                            return Err(Stop::Invalid(format!("unexpected entry {path:?}")));
                        };
                        let mut json = Vec::with_capacity(entry.size() as usize);
                        entry.read_to_end(&mut json)?;
                        let item = ArchiveEntry {
                            path,
                            resource,
                            group,
                            namespace,
                            name,
                            json: json.into(),
                        };
                        if sender.blocking_send(Ok(item)).is_err() {
                            return Err(Stop::Cancelled);
                        }
                    }
                    Ok(())
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

    pub(crate) fn display(&self, file: &FileInfo) -> String {
        self.repo.display(&self.path(file))
    }

    fn path(&self, file: &FileInfo) -> Path {
        layout::backup_file(
            &self.manifest.cluster,
            &self.manifest.backup_name,
            &file.name,
        )
    }

    /// GETs `file`, checks its size, and runs `decode` on the plaintext on
    /// a blocking thread while hashing the stored bytes.
    async fn read_file<T, F>(&self, file: &FileInfo, decode: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Read) -> Result<T, Stop> + Send + 'static,
    {
        let display = self.display(file);
        if self.manifest.encrypted() && self.repo.inner.keys.identities.is_empty() {
            return Err(StoreError::MissingIdentity { path: display });
        }
        match self.stream_file(file, Some(decode)).await? {
            Streamed::Missing(e) => Err(StoreError::storage("get", &display, e)),
            Streamed::Size { actual } => Err(StoreError::SizeMismatch {
                path: display,
                expected: file.bytes,
                actual,
            }),
            Streamed::Read { sha256, .. } if sha256 != file.sha256 => {
                Err(StoreError::ChecksumMismatch {
                    path: display,
                    expected: file.sha256.clone(),
                    actual: sha256,
                })
            }
            Streamed::Read { decoded, .. } => {
                decoded.unwrap_or_else(|| Err(StoreError::Task("the file was not decoded".into())))
            }
        }
    }

    /// True when the files can be decrypted (or need no decryption).
    pub(crate) fn can_decrypt(&self) -> bool {
        !self.manifest.encrypted() || !self.repo.inner.keys.identities.is_empty()
    }

    /// GETs `file` and streams it once: checks its size, hashes the stored
    /// bytes and, with `decode`, decrypts, decompresses and decodes them on
    /// a blocking thread. Damage is in the answer; `Err` is a storage or
    /// local failure.
    pub(crate) async fn stream_file<T, F>(
        &self,
        file: &FileInfo,
        decode: Option<F>,
    ) -> Result<Streamed<T>>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Read) -> Result<T, Stop> + Send + 'static,
    {
        let path = self.path(file);
        let display = self.repo.display(&path);
        let got = match self.repo.store().get(&path).await {
            Ok(got) => got,
            Err(e @ object_store::Error::NotFound { .. })
                if crate::diagnose::Cause::of(&e) != Some(crate::diagnose::Cause::NoSuchBucket) =>
            {
                return Ok(Streamed::Missing(e));
            }
            Err(e) => return Err(StoreError::storage("get", &display, e)),
        };
        if got.meta.size != file.bytes {
            return Ok(Streamed::Size {
                actual: got.meta.size,
            });
        }
        let stream = got.into_stream().map_err(io::Error::other);
        let bridge = SyncIoBridge::new(StreamReader::new(stream));
        let repo = self.repo.clone();
        let manifest = self.manifest.clone();
        tokio::task::spawn_blocking(move || {
            let mut hashing = HashingReader {
                inner: bridge,
                hasher: Sha256::new(),
                read_error: None,
            };
            let decoded = decode.map(|d| decode_file(&mut hashing, &repo, &manifest, &display, d));
            // Hash whatever the decoder did not read, then judge.
            let drained = io::copy(&mut hashing, &mut io::sink());
            if let Some(e) = hashing.read_error.take() {
                return Err(StoreError::io(
                    format!("reading {display} from object storage failed"),
                    e,
                ));
            }
            if decoded
                .as_ref()
                .and_then(|d| d.as_ref().err())
                .is_some_and(DecodeFailure::is_cancelled)
            {
                return Err(StoreError::Task("reading was cancelled".into()));
            }
            drained.map_err(|e| StoreError::io(format!("reading {display} failed"), e))?;
            let sha256 = hex::encode(hashing.hasher.finalize());
            let decoded = decoded.map(|d| match d {
                Ok(v) => Ok(v),
                Err(DecodeFailure::Store(e)) => Err(e),
                Err(DecodeFailure::Stop(Stop::Io(e))) => Err(StoreError::Corrupt {
                    path: display.clone(),
                    reason: e.to_string(),
                }),
                Err(DecodeFailure::Stop(Stop::Invalid(reason))) => Err(StoreError::Corrupt {
                    path: display.clone(),
                    reason,
                }),
                Err(DecodeFailure::Stop(Stop::Cancelled)) => {
                    Err(StoreError::Task("reading was cancelled".into()))
                }
            });
            Ok(Streamed::Read { sha256, decoded })
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

/// What streaming one file found.
pub(crate) enum Streamed<T> {
    /// The object does not exist.
    Missing(object_store::Error),
    /// Its size differs from the manifest's (it was not read).
    Size { actual: u64 },
    /// It was read: the SHA-256 of the stored bytes and, when asked for,
    /// the decoded content (or why decoding failed).
    Read {
        sha256: String,
        decoded: Option<Result<T>>,
    },
}

enum DecodeFailure {
    Store(StoreError),
    Stop(Stop),
}

impl DecodeFailure {
    fn is_cancelled(&self) -> bool {
        matches!(self, DecodeFailure::Stop(Stop::Cancelled))
    }
}

fn decode_file<T>(
    input: &mut HashingReader<impl Read>,
    repo: &Repository,
    manifest: &Manifest,
    display: &str,
    decode: impl FnOnce(&mut dyn Read) -> Result<T, Stop>,
) -> Result<T, DecodeFailure> {
    let plain: Box<dyn Read + '_> = if manifest.encrypted() {
        let r = repo
            .inner
            .keys
            .decrypt(input, display, &manifest.recipients)
            .map_err(DecodeFailure::Store)?;
        Box::new(r)
    } else {
        Box::new(input)
    };
    let mut zstd = zstd::Decoder::new(plain).map_err(|e| DecodeFailure::Stop(Stop::Io(e)))?;
    let value = decode(&mut zstd).map_err(DecodeFailure::Stop)?;
    // Decode to the end so a damaged tail is noticed; all that may follow
    // the content is tar's zero padding.
    let mut rest = [0u8; 8192];
    loop {
        match zstd.read(&mut rest) {
            Ok(0) => return Ok(value),
            Ok(n) if rest[..n].iter().all(|b| *b == 0) => {}
            Ok(_) => {
                return Err(DecodeFailure::Stop(Stop::Invalid(
                    "unexpected data after the content".into(),
                )));
            }
            Err(e) => return Err(DecodeFailure::Stop(Stop::Io(e))),
        }
    }
}

pub(crate) fn count_log_lines(r: &mut dyn Read) -> Result<Vec<LogEntry>, Stop> {
    let mut lines = Vec::new();
    for line in io::BufReader::new(r).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        lines.push(serde_json::from_str(&line).map_err(|e| Stop::Invalid(format!("log: {e}")))?);
    }
    Ok(lines)
}

/// Hashes everything read through it and remembers a storage read error
/// (so it is not mistaken for corruption).
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    read_error: Option<io::Error>,
}

impl<R> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            read_error: None,
        }
    }

    /// The SHA-256 of everything read, hex.
    pub(crate) fn finish(self) -> String {
        hex::encode(self.hasher.finalize())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.hasher.update(&buf[..n]);
                Ok(n)
            }
            Err(e) => {
                let kind = e.kind();
                let message = e.to_string();
                self.read_error.get_or_insert(e);
                Err(io::Error::new(kind, message))
            }
        }
    }
}
