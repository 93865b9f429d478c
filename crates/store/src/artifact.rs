//! Dump artifacts: a hook command's stdout streamed into a backup as a
//! file of its own, and streamed back out at restore.
//!
//! ```text
//! write: chunks ─(bounded channel)─▶ encoder thread: SHA-256 of the output
//!        ─▶ zstd ─▶ [age] ─▶ UploadSink (SHA-256 of the stored bytes)
//!        ─▶ BufWriter: one PUT, or a multipart upload of 8 MiB parts
//!        finish ─▶ ArtifactFile (sizes, both hashes) ─▶ BackupWriter::add_artifact
//!        abort / drop ─▶ the upload is aborted, nothing appears
//! read:  GET ─(size check)─▶ SHA-256 ─▶ [age -d] ─▶ zstd -d ─▶ SHA-256
//!        ─▶ chunks (bounded channel); a mismatch is the last item
//! ```
//!
//! Nothing holds the whole output: memory is the channel (`QUEUE` chunks),
//! the zstd window and the multipart buffers, whatever the dump's size.
//! An age file authenticates every 64 KiB chunk, so a damaged encrypted
//! artifact fails at the first damaged chunk, before its bytes are handed
//! on; the hashes are compared at the end.

use std::io::{self, Read, Write};

use bytes::Bytes;
use jiff::Timestamp;
use object_store::ObjectStoreExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::error::{Result, StoreError};
use crate::model::ArtifactEntry;
use crate::reader::{BackupReader, HashingReader};
use crate::repo::{Repository, layout, validate_name};
use crate::upload::{self, FirstError, Uploaded, error_chain};
use crate::writer::{BackupWriter, compressed, finish_compressed};

/// Chunks waiting for the encoder (or, reading, for the consumer).
const QUEUE: usize = 8;
/// Plaintext chunk size handed out when reading.
const READ_CHUNK: usize = 64 * 1024;

enum Msg {
    Data(Bytes),
    Finish,
}

/// The stored file of a finished artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactFile {
    /// Path relative to the backup directory.
    pub file: String,
    /// Bytes written (the command's output).
    pub bytes: u64,
    /// SHA-256 of the bytes written, hex.
    pub raw_sha256: String,
    pub stored_bytes: u64,
    /// SHA-256 of the stored bytes, hex.
    pub sha256: String,
}

/// Streams one artifact into a backup. Created by
/// [`BackupWriter::begin_artifact`]; [`ArtifactWriter::finish`] completes
/// the upload, dropping it (or [`ArtifactWriter::abort`]) abandons it.
#[derive(Debug)]
pub struct ArtifactWriter {
    file: String,
    tx: Option<mpsc::Sender<Msg>>,
    encoder: Option<JoinHandle<Result<(u64, String, Uploaded)>>>,
    upload: Option<JoinHandle<Result<()>>>,
    first_error: FirstError,
}

impl BackupWriter {
    /// Starts streaming the output of dump hook `hook`, run in a pod of
    /// `owner` (`deployment-mysql`) in `namespace`, into
    /// `artifacts/<namespace>/<owner>/<hook>.zst[.age]`, compressed and,
    /// when the location has recipients, encrypted to them.
    pub fn begin_artifact(
        &self,
        namespace: &str,
        owner: &str,
        hook: &str,
    ) -> Result<ArtifactWriter> {
        validate_name("namespace", namespace)?;
        validate_name("owner", owner)?;
        validate_name("hook", hook)?;
        let repo = self.repository();
        let keys = repo.inner.keys.clone();
        let file = format!(
            "artifacts/{namespace}/{owner}/{hook}.zst{}",
            if keys.recipients.is_empty() {
                ""
            } else {
                ".age"
            }
        );
        if self.artifacts().iter().any(|a| a.file == file) {
            return Err(StoreError::InvalidConfig(format!(
                "artifact {file} was written twice in backup {}: give each dump hook its own name",
                self.name()
            )));
        }
        let path = layout::backup_file(&self.spec().cluster, self.name(), &file);
        let display = repo.display(&path);
        let first_error = FirstError::default();
        let (sink, upload) =
            upload::start(repo.store().clone(), path, display, first_error.clone());
        let (tx, mut rx) = mpsc::channel::<Msg>(QUEUE);
        let fe = first_error.clone();
        let encoder = tokio::task::spawn_blocking(move || {
            let run = || -> Result<(u64, String, Uploaded)> {
                let io_err = |e: io::Error| StoreError::io("writing an artifact failed", e);
                let mut out = compressed(&keys, sink, 0)?;
                let mut hasher = Sha256::new();
                let mut bytes = 0u64;
                loop {
                    match rx.blocking_recv() {
                        Some(Msg::Data(chunk)) => {
                            hasher.update(&chunk);
                            bytes += chunk.len() as u64;
                            out.write_all(&chunk).map_err(io_err)?;
                        }
                        Some(Msg::Finish) => break,
                        // Dropped or aborted: the sink is dropped
                        // unfinished, which aborts the upload.
                        None => {
                            return Err(StoreError::WriterStopped(
                                "the artifact was abandoned".into(),
                            ));
                        }
                    }
                }
                Ok((
                    bytes,
                    hex::encode(hasher.finalize()),
                    finish_compressed(out).map_err(io_err)?,
                ))
            };
            let result = run();
            if let Err(e) = &result {
                fe.set(error_chain(e));
            }
            result
        });
        Ok(ArtifactWriter {
            file,
            tx: Some(tx),
            encoder: Some(encoder),
            upload: Some(upload),
            first_error,
        })
    }

    /// Lists a finished artifact in the manifest (and the operation
    /// record). Call it only for a command that exited 0.
    pub async fn add_artifact(&mut self, entry: ArtifactEntry) -> Result<()> {
        self.push_artifact(entry).await
    }
}

impl ArtifactWriter {
    /// The artifact's path relative to the backup directory.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Queues one chunk of output; waits while the encoder is behind.
    pub async fn write(&mut self, chunk: Bytes) -> Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        let Some(tx) = &self.tx else {
            return Err(StoreError::WriterStopped(
                "the artifact was finished".into(),
            ));
        };
        tx.send(Msg::Data(chunk))
            .await
            .map_err(|_| StoreError::WriterStopped(self.first_error.get()))
    }

    /// Completes the file: the last part is uploaded, the sizes and hashes
    /// returned. Nothing is listed yet ([`BackupWriter::add_artifact`]).
    pub async fn finish(mut self) -> Result<ArtifactFile> {
        // The encoder then completes zstd, age and the upload.
        if let Some(tx) = self.tx.take() {
            // A closed channel means the encoder stopped; its error is
            // collected below.
            let _ = tx.send(Msg::Finish).await;
        }
        let encoded = match self.encoder.take() {
            Some(t) => t.await.map_err(|e| StoreError::Task(e.to_string()))?,
            None => Err(StoreError::WriterStopped(self.first_error.get())),
        };
        let uploaded = match self.upload.take() {
            Some(t) => t.await.map_err(|e| StoreError::Task(e.to_string()))?,
            None => Ok(()),
        };
        // An upload error is the root cause of the encoder's.
        uploaded?;
        let (bytes, raw_sha256, stored) = encoded?;
        Ok(ArtifactFile {
            file: self.file.clone(),
            bytes,
            raw_sha256,
            stored_bytes: stored.bytes,
            sha256: stored.sha256,
        })
    }

    /// Abandons the file: the upload is aborted, so no object (and no
    /// multipart part) is left.
    pub async fn abort(mut self) {
        self.stop().await;
    }

    async fn stop(&mut self) {
        // Closing the channel without `Finish` makes the encoder drop the
        // upload's sink unfinished: the upload task aborts the upload.
        self.tx = None;
        if let Some(e) = self.encoder.take() {
            let _ = e.await;
        }
        if let Some(u) = self.upload.take() {
            let _ = u.await;
        }
    }
}

impl ArtifactEntry {
    /// The entry of artifact `file` of dump hook `hook` run in
    /// `namespace/pod` (container `container`).
    pub fn new(
        at: (&str, &str, &str, &str),
        hook: &str,
        command: &[String],
        file: ArtifactFile,
        start: Timestamp,
        duration_ms: u64,
    ) -> ArtifactEntry {
        let (namespace, owner, pod, container) = at;
        ArtifactEntry {
            namespace: namespace.into(),
            owner: owner.into(),
            hook: hook.into(),
            pod: pod.into(),
            container: container.into(),
            command: command.to_vec(),
            file: file.file,
            bytes: file.bytes,
            raw_sha256: file.raw_sha256,
            stored_bytes: file.stored_bytes,
            sha256: file.sha256,
            start,
            duration_ms,
        }
    }
}

/// An artifact's content as it is read: chunks of the command's output,
/// then `Err` as the last item when the stored bytes or the output do not
/// match the manifest.
pub type ArtifactChunks = mpsc::Receiver<Result<Bytes>>;

impl BackupReader {
    /// The artifacts the backup lists.
    pub fn artifacts(&self) -> &[ArtifactEntry] {
        &self.manifest().artifacts
    }

    /// Streams artifact `entry` back: decrypted, decompressed, checked
    /// against both of the manifest's hashes as it streams.
    pub async fn open_artifact(&self, entry: &ArtifactEntry) -> Result<ArtifactChunks> {
        self.check_signature()?;
        let manifest = self.manifest();
        let repo = self.repository();
        let path = layout::backup_file(&manifest.cluster, &manifest.backup_name, &entry.file);
        let display = repo.display(&path);
        let encrypted = entry.file.ends_with(".age");
        if encrypted && repo.inner.keys.identities.is_empty() {
            return Err(StoreError::MissingIdentity { path: display });
        }
        let got = repo
            .store()
            .get(&path)
            .await
            .map_err(|e| StoreError::storage("get", &display, e))?;
        if got.meta.size != entry.stored_bytes {
            return Err(StoreError::SizeMismatch {
                path: display,
                expected: entry.stored_bytes,
                actual: got.meta.size,
            });
        }
        use futures::TryStreamExt;
        let stream = got.into_stream().map_err(io::Error::other);
        let bridge = SyncIoBridge::new(StreamReader::new(stream));
        let keys = repo.inner.keys.clone();
        let recipients = manifest.recipients.clone();
        let entry = entry.clone();
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::task::spawn_blocking(move || {
            let mut hashing = HashingReader::new(bridge);
            let result = (|| -> Result<()> {
                let corrupt = |e: io::Error| StoreError::Corrupt {
                    path: display.clone(),
                    reason: e.to_string(),
                };
                let plain: Box<dyn Read + '_> = if encrypted {
                    Box::new(keys.decrypt(&mut hashing, &display, &recipients)?)
                } else {
                    Box::new(&mut hashing)
                };
                let mut zstd = zstd::Decoder::new(plain).map_err(corrupt)?;
                let mut hasher = Sha256::new();
                let mut bytes = 0u64;
                loop {
                    let mut buf = vec![0u8; READ_CHUNK];
                    let n = read_full(&mut zstd, &mut buf).map_err(corrupt)?;
                    if n == 0 {
                        break;
                    }
                    buf.truncate(n);
                    hasher.update(&buf);
                    bytes += n as u64;
                    if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                        return Err(StoreError::Task("reading was cancelled".into()));
                    }
                }
                drop(zstd);
                io::copy(&mut hashing, &mut io::sink()).map_err(corrupt)?;
                let raw = hex::encode(hasher.finalize());
                if bytes != entry.bytes || raw != entry.raw_sha256 {
                    return Err(StoreError::ChecksumMismatch {
                        path: display.clone(),
                        expected: format!("{} bytes, SHA-256 {}", entry.bytes, entry.raw_sha256),
                        actual: format!("{bytes} bytes, SHA-256 {raw}"),
                    });
                }
                Ok(())
            })();
            let result = result.and_then(|()| {
                let stored = hashing.finish();
                if stored != entry.sha256 {
                    return Err(StoreError::ChecksumMismatch {
                        path: display.clone(),
                        expected: entry.sha256.clone(),
                        actual: stored,
                    });
                }
                Ok(())
            });
            if let Err(e) = result {
                let _ = tx.blocking_send(Err(e));
            }
        });
        Ok(rx)
    }
}

/// Reads until `buf` is full or the input ends.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl Repository {
    /// Whether the location encrypts what it stores (dump hooks need it;
    /// image blobs are sealed when it does).
    pub fn encrypts(&self) -> bool {
        !self.inner.keys.recipients.is_empty()
    }
}
