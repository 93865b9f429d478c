//! Container images in a location: blobs addressed by digest, shared by
//! every backup that references them.
//!
//! ```text
//! <prefix>/images/blobs/sha256/<hex>[.age]        a manifest, config or layer,
//!                                                 encrypted to the recipients
//! <prefix>/images/pending/<cluster>/<backup>.json the digests a running backup
//!                                                 references (written before it
//!                                                 looks for them; removed once
//!                                                 its manifest lists them)
//!
//! copy:  registry manifest(s) ─▶ pending refs ─▶ per blob: HEAD in the location,
//!        else GET from the registry ─▶ sha256 + [age] ─▶ upload (streamed)
//! push:  per blob: HEAD in the target registry, else location ─▶ [age -d]
//!        ─▶ sha256 ─▶ PUT (streamed); then platform manifests, then the tag
//! sweep: ImageInventory (blobs, every manifest's images, pending refs)
//!        ─▶ the caller's decision ─▶ delete_image_blobs, delete_pending_refs
//! ```
//!
//! A blob is written under its digest only after the bytes hashed to it;
//! an upload whose bytes do not is aborted, so nothing is stored. Layers are
//! never held in memory: at most the upload's buffers (`upload.rs`).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Result, StoreError};
use crate::model::{ImageEntry, ImageManifest, RestoredImage};
use crate::registry::{Registry, digest_of, is_index, manifest_refs, valid_digest};
use crate::repo::{MANIFEST, Repository, validate_name};
use crate::upload::{self, FirstError, error_chain};
use crate::writer::MaybeAge;

const BLOBS: &str = "images/blobs/sha256";
const PENDING: &str = "images/pending";
/// Blobs copied or pushed at once.
const CONCURRENCY: usize = 2;
const CHUNK: usize = 1024 * 1024;

/// One image to copy: an ImageStream tag's image in the source registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSource {
    /// `<namespace>/<stream>` in the registry.
    pub repository: String,
    pub tag: String,
    /// `sha256:<hex>` of its manifest.
    pub digest: String,
    /// The tag's current image (false: an older one of its history).
    pub head: bool,
}

/// What copying (or pushing) blobs did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Blobs written.
    pub uploaded: u32,
    /// Blobs already there (deduplicated).
    pub present: u32,
    /// Bytes written (before encryption).
    pub bytes: u64,
}

/// A stored blob: its digest and when it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlob {
    pub digest: String,
    pub modified: Timestamp,
}

/// A pending reference file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRefs {
    /// `<cluster>/<backup>`.
    pub name: String,
    pub modified: Timestamp,
    pub digests: BTreeSet<String>,
}

/// Everything a sweep decides on.
#[derive(Debug, Clone, Default)]
pub struct ImageInventory {
    pub blobs: Vec<StoredBlob>,
    /// Digests committed manifests (every cluster's) list.
    pub referenced: BTreeSet<String>,
    pub pending: Vec<PendingRefs>,
    /// Committed manifests read.
    pub manifests: usize,
}

#[derive(Serialize, Deserialize)]
struct PendingFile {
    backup: String,
    digests: BTreeSet<String>,
}

fn blob_path(digest: &str, encrypted: bool) -> Result<Path> {
    if !valid_digest(digest) {
        return Err(StoreError::InvalidConfig(format!(
            "{digest:?} is not a sha256 digest"
        )));
    }
    let hex = &digest["sha256:".len()..];
    Ok(Path::from(format!(
        "{BLOBS}/{hex}{}",
        if encrypted { ".age" } else { "" }
    )))
}

fn pending_path(cluster: &str, backup: &str) -> Path {
    Path::from(format!("{PENDING}/{cluster}/{backup}.json"))
}

fn timestamp(meta: &object_store::ObjectMeta) -> Timestamp {
    Timestamp::new(
        meta.last_modified.timestamp(),
        meta.last_modified.timestamp_subsec_nanos() as i32,
    )
    .unwrap_or(Timestamp::UNIX_EPOCH)
}

impl Repository {
    async fn blob_present(&self, path: &Path) -> Result<bool> {
        match self.store().head(path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(StoreError::storage("head", self.display(path), e)),
        }
    }

    /// Records that backup `backup` of `cluster` references `digests`, so
    /// a sweep keeps them while it runs. Written before the backup looks
    /// for them in the location.
    pub async fn write_pending_refs(
        &self,
        cluster: &str,
        backup: &str,
        digests: &BTreeSet<String>,
    ) -> Result<()> {
        validate_name("cluster", cluster)?;
        validate_name("backup", backup)?;
        self.ensure_marker().await?;
        let file = PendingFile {
            backup: backup.to_string(),
            digests: digests.clone(),
        };
        self.put_json(&pending_path(cluster, backup), &file).await
    }

    /// Removes a backup's pending references (its manifest lists them now,
    /// or it was given up).
    pub async fn remove_pending_refs(&self, cluster: &str, backup: &str) -> Result<()> {
        let path = pending_path(cluster, backup);
        match self.store().delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StoreError::storage("delete", self.display(&path), e)),
        }
    }

    /// The digests of `digests` that are not stored (as this location
    /// stores them now: encrypted when it has recipients).
    pub async fn missing_image_blobs(&self, digests: &BTreeSet<String>) -> Result<Vec<String>> {
        let encrypted = self.encrypts();
        let mut missing = Vec::new();
        for d in digests {
            if !self.blob_present(&blob_path(d, encrypted)?).await? {
                missing.push(d.clone());
            }
        }
        Ok(missing)
    }

    /// Copies one image from `registry` into the location: its manifest
    /// (an index's platform manifests too) and every blob they name,
    /// skipping those already stored. `pending` accumulates the digests
    /// of the whole backup and is written to its pending reference file
    /// before anything is looked up. Returns the manifest entry.
    pub async fn copy_image(
        &self,
        registry: &Registry,
        source: &ImageSource,
        backup: (&str, &str),
        pending: &mut BTreeSet<String>,
    ) -> Result<(ImageEntry, CopyStats)> {
        let repo = source.repository.as_str();
        let top = registry.manifest(repo, &source.digest).await?;
        let bad = |what: &str, reason: String| StoreError::Registry {
            registry: registry.name(),
            doing: format!("reading {what} of {repo}@{}", source.digest),
            reason,
            hint: "the image cannot be copied; the backup keeps the ImageStream object",
        };
        let mut manifests = vec![top.clone()];
        let mut children = Vec::new();
        if is_index(&top.media_type) {
            let refs =
                manifest_refs(&top.bytes, &top.media_type).map_err(|r| bad("the index", r))?;
            for (digest, media_type) in refs.manifests {
                let child = registry.manifest(repo, &digest).await?;
                children.push(ImageManifest {
                    digest: child.digest.clone(),
                    media_type: if is_index(&child.media_type) {
                        return Err(bad("a platform manifest", "it is an index".into()));
                    } else {
                        media_type
                    },
                });
                manifests.push(child);
            }
        }
        let mut blobs: Vec<(String, u64)> = Vec::new();
        for m in manifests.iter().filter(|m| !is_index(&m.media_type)) {
            let refs = manifest_refs(&m.bytes, &m.media_type).map_err(|r| bad("a manifest", r))?;
            for (d, size) in refs.blobs {
                if !blobs.iter().any(|(b, _)| b == &d) {
                    blobs.push((d, size));
                }
            }
        }
        pending.extend(manifests.iter().map(|m| m.digest.clone()));
        pending.extend(blobs.iter().map(|(d, _)| d.clone()));
        self.write_pending_refs(backup.0, backup.1, pending).await?;

        let encrypted = self.encrypts();
        let mut stats = CopyStats::default();
        for m in &manifests {
            let path = blob_path(&m.digest, encrypted)?;
            if self.blob_present(&path).await? {
                stats.present += 1;
                continue;
            }
            let bytes = if encrypted {
                self.seal(&m.bytes)?
            } else {
                m.bytes.to_vec()
            };
            self.put_raw(&path, bytes).await?;
            stats.uploaded += 1;
            stats.bytes += m.bytes.len() as u64;
        }
        // The futures are built before they enter the stream (not by a
        // closure of it), so callers' futures stay `Send`.
        let copies: Vec<_> = blobs
            .iter()
            .map(|(digest, _)| async move {
                let path = blob_path(digest, encrypted)?;
                if self.blob_present(&path).await? {
                    return Ok(None);
                }
                let response = registry.blob(repo, digest).await?;
                self.store_blob(registry, path, response, digest, repo)
                    .await
                    .map(Some)
            })
            .collect();
        let results: Vec<Result<Option<u64>>> = futures::stream::iter(copies)
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for r in results {
            match r? {
                Some(n) => {
                    stats.uploaded += 1;
                    stats.bytes += n;
                }
                None => stats.present += 1,
            }
        }
        let entry = ImageEntry {
            repository: source.repository.clone(),
            tag: source.tag.clone(),
            digest: top.digest.clone(),
            media_type: top.media_type.clone(),
            head: source.head,
            manifests: children,
            blobs: blobs.iter().map(|(d, _)| d.clone()).collect(),
            bytes: blobs.iter().map(|(_, s)| s).sum(),
        };
        Ok((entry, stats))
    }

    /// Streams a registry response into `path`, hashing as it goes; the
    /// upload completes only when the bytes hash to `digest`.
    async fn store_blob(
        &self,
        registry: &Registry,
        path: Path,
        mut response: reqwest::Response,
        digest: &str,
        repo: &str,
    ) -> Result<u64> {
        let display = self.display(&path);
        let (sink, task) = upload::start(
            self.store().clone(),
            path,
            display.clone(),
            FirstError::default(),
        );
        let keys = self.inner.keys.clone();
        let handle = tokio::runtime::Handle::current();
        let expected = digest.to_string();
        let registry_name = registry.name();
        let what = format!("blob {digest} of {repo}");
        let encoder = tokio::task::spawn_blocking(move || -> Result<u64> {
            let io = |e: std::io::Error| StoreError::io(format!("writing {display}"), e);
            let mut out = MaybeAge::new(&keys, sink)?;
            let mut hasher = Sha256::new();
            let mut n = 0u64;
            while let Some(chunk) =
                handle
                    .block_on(response.chunk())
                    .map_err(|e| StoreError::Registry {
                        registry: registry_name.clone(),
                        doing: format!("reading {what}"),
                        reason: e.to_string(),
                        hint: "the registry stopped sending; run the backup again",
                    })?
            {
                hasher.update(&chunk);
                n += chunk.len() as u64;
                out.write_all(&chunk).map_err(io)?;
            }
            let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
            if actual != expected {
                // Dropping the sink aborts the upload: nothing is stored.
                return Err(StoreError::DigestMismatch {
                    registry: registry_name,
                    what,
                    expected,
                    actual,
                });
            }
            out.finish().map_err(io)?.finish().map_err(io)?;
            Ok(n)
        });
        let encoded = encoder.await.map_err(|e| StoreError::Task(e.to_string()))?;
        let uploaded = task.await.map_err(|e| StoreError::Task(e.to_string()))?;
        let n = encoded?;
        uploaded?;
        Ok(n)
    }

    /// A stored blob as a request body: read, decrypted and verified
    /// against its digest as it streams (a mismatch fails the request, so
    /// the registry never commits it).
    fn blob_body(&self, digest: &str, encrypted: bool) -> Result<(reqwest::Body, Failure)> {
        let path = blob_path(digest, encrypted)?;
        let store: Arc<dyn ObjectStore> = self.store().clone();
        let keys = self.inner.keys.clone();
        let recipients = self.recipients();
        let display = self.display(&path);
        let expected = digest.to_string();
        let failure = Failure::default();
        let fail = failure.clone();
        let handle = tokio::runtime::Handle::current();
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
        tokio::task::spawn_blocking(move || {
            let run = || -> std::result::Result<(), String> {
                let get = handle
                    .block_on(store.get(&path))
                    .map_err(|e| error_chain(&StoreError::storage("get", &display, e)))?;
                let stream = get.into_stream().map_err(std::io::Error::other);
                let reader = tokio_util::io::SyncIoBridge::new_with_handle(
                    tokio_util::io::StreamReader::new(stream),
                    handle.clone(),
                );
                let mut reader: Box<dyn Read> = if encrypted {
                    Box::new(
                        keys.decrypt(reader, &display, &recipients)
                            .map_err(|e| error_chain(&e))?,
                    )
                } else {
                    Box::new(reader)
                };
                let mut hasher = Sha256::new();
                let mut buf = vec![0u8; CHUNK];
                loop {
                    let n = reader
                        .read(&mut buf)
                        .map_err(|e| format!("reading {display}: {e}"))?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                    if tx
                        .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                        .is_err()
                    {
                        // The request ended first; its error says why.
                        return Ok(());
                    }
                }
                let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
                if actual != expected {
                    return Err(format!(
                        "{display} hashes to {actual}, not {expected}: the stored blob is \
                         damaged; restore from another location"
                    ));
                }
                Ok(())
            };
            if let Err(reason) = run() {
                fail.set(reason.clone());
                let _ = tx.blocking_send(Err(std::io::Error::other(reason)));
            }
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok((reqwest::Body::wrap_stream(stream), failure))
    }

    /// A stored manifest's bytes, verified.
    async fn stored_manifest(&self, digest: &str, encrypted: bool) -> Result<Bytes> {
        let path = blob_path(digest, encrypted)?;
        let bytes = self
            .get_optional(&path)
            .await?
            .ok_or_else(|| StoreError::Corrupt {
                path: self.display(&path),
                reason: "the image manifest is missing from the location".into(),
            })?;
        let bytes = if encrypted {
            Bytes::from(self.unseal(&bytes, &self.display(&path))?)
        } else {
            bytes
        };
        let actual = digest_of(&bytes);
        if actual != digest {
            return Err(StoreError::ChecksumMismatch {
                path: self.display(&path),
                expected: digest.to_string(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Pushes one image of a backup into `repository` of `registry`:
    /// blobs first (those the registry lacks), then an index's platform
    /// manifests, then the manifest under its tag (a history image: under
    /// its digest). `encrypted`: the backup's blobs are (its manifest has
    /// recipients). A dry run only looks and says what it would push.
    pub async fn push_image(
        &self,
        registry: &Registry,
        entry: &ImageEntry,
        repository: &str,
        encrypted: bool,
        dry_run: bool,
    ) -> Result<RestoredImage> {
        let mut out = RestoredImage {
            repository: repository.to_string(),
            tag: entry.tag.clone(),
            digest: entry.digest.clone(),
            blobs_pushed: 0,
            blobs_present: 0,
            bytes_pushed: 0,
            manifests_pushed: 0,
            error: None,
        };
        let mut missing = Vec::new();
        for blob in &entry.blobs {
            if registry.has_blob(repository, blob, true).await? {
                out.blobs_present += 1;
            } else {
                missing.push(blob.clone());
            }
        }
        // Sizes of what is pushed, from the stored manifests.
        let mut sizes = std::collections::BTreeMap::new();
        let mut manifests = Vec::new();
        for m in std::iter::once((&entry.digest, &entry.media_type))
            .chain(entry.manifests.iter().map(|m| (&m.digest, &m.media_type)))
        {
            let bytes = self.stored_manifest(m.0, encrypted).await?;
            if let Ok(refs) = manifest_refs(&bytes, m.1) {
                sizes.extend(refs.blobs);
            }
            manifests.push((m.0.clone(), m.1.clone(), bytes));
        }
        out.blobs_pushed = missing.len() as u32;
        out.bytes_pushed = missing.iter().filter_map(|d| sizes.get(d)).sum();
        if dry_run {
            for (digest, _, _) in manifests.iter().skip(1) {
                if !registry.has_manifest(repository, digest).await? {
                    out.manifests_pushed += 1;
                }
            }
            out.manifests_pushed += 1;
            return Ok(out);
        }
        let pushes: Vec<_> = missing
            .iter()
            .map(|digest| async move {
                let (body, failure) = self.blob_body(digest, encrypted)?;
                match registry.push_blob(repository, digest, body).await {
                    Ok(()) => Ok(()),
                    Err(e) => Err(match failure.get() {
                        Some(reason) => StoreError::Corrupt {
                            path: format!("images/blobs/{digest}"),
                            reason,
                        },
                        None => e,
                    }),
                }
            })
            .collect();
        let pushed: Vec<Result<()>> = futures::stream::iter(pushes)
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for r in pushed {
            r?;
        }
        // Platform manifests before the index that names them.
        for (digest, media_type, bytes) in manifests.iter().skip(1) {
            if !registry.has_manifest(repository, digest).await? {
                registry
                    .put_manifest(repository, digest, media_type, bytes.clone())
                    .await?;
                out.manifests_pushed += 1;
            }
        }
        let (digest, media_type, bytes) = &manifests[0];
        let reference = if entry.head { &entry.tag } else { digest };
        let got = registry
            .put_manifest(repository, reference, media_type, bytes.clone())
            .await?;
        out.manifests_pushed += 1;
        if &got != digest {
            return Err(StoreError::DigestMismatch {
                registry: registry.name(),
                what: format!("the pushed manifest {repository}:{reference}"),
                expected: digest.clone(),
                actual: got,
            });
        }
        Ok(out)
    }

    /// Everything a sweep of the location's images decides on. Fails when
    /// any committed manifest cannot be read: its references would be
    /// unknown.
    pub async fn image_inventory(&self) -> Result<ImageInventory> {
        let mut inv = ImageInventory::default();
        let prefix = Path::from(BLOBS);
        let mut list = self.store().list(Some(&prefix));
        while let Some(meta) = list.next().await {
            let meta = meta.map_err(|e| StoreError::storage("list", self.display(&prefix), e))?;
            let Some(file) = meta.location.filename() else {
                continue;
            };
            let hex = file.strip_suffix(".age").unwrap_or(file);
            let digest = format!("sha256:{hex}");
            if valid_digest(&digest) {
                inv.blobs.push(StoredBlob {
                    digest,
                    modified: timestamp(&meta),
                });
            }
        }
        let prefix = Path::from(PENDING);
        let mut list = self.store().list(Some(&prefix));
        let mut pending = Vec::new();
        while let Some(meta) = list.next().await {
            let meta = meta.map_err(|e| StoreError::storage("list", self.display(&prefix), e))?;
            pending.push(meta);
        }
        for meta in pending {
            let name = meta
                .location
                .as_ref()
                .strip_prefix(&format!("{PENDING}/"))
                .unwrap_or(meta.location.as_ref())
                .trim_end_matches(".json")
                .to_string();
            let digests = match self.get_json::<PendingFile>(&meta.location).await {
                Ok(Some(f)) => f.digests,
                Ok(None) => continue,
                // An unreadable pending file is kept, as if it named every
                // blob: nothing is swept until it is gone or stale.
                Err(_) => inv.blobs.iter().map(|b| b.digest.clone()).collect(),
            };
            inv.pending.push(PendingRefs {
                name,
                modified: timestamp(&meta),
                digests,
            });
        }
        let clusters = self
            .store()
            .list_with_delimiter(Some(&Path::from("clusters")))
            .await
            .map_err(|e| StoreError::storage("list", self.display(&Path::from("clusters")), e))?;
        for dir in clusters.common_prefixes {
            let Some(cluster) = dir.filename() else {
                continue;
            };
            let list = self.list_backups(cluster, None).await?;
            if let Some((name, reason)) = list.unreadable.first() {
                return Err(StoreError::Corrupt {
                    path: format!(
                        "{}/clusters/{cluster}/backups/{name}/{MANIFEST}",
                        self.url()
                    ),
                    reason: format!(
                        "{reason}; images are not swept while a manifest cannot be read \
                         (its references are unknown)"
                    ),
                });
            }
            for m in &list.backups {
                inv.manifests += 1;
                for image in &m.images {
                    inv.referenced.extend(image.stored().map(str::to_string));
                }
            }
        }
        Ok(inv)
    }

    /// Deletes blobs by digest (both the plain and the encrypted name);
    /// returns how many objects went.
    pub async fn delete_image_blobs(&self, digests: &[String]) -> Result<u64> {
        let mut deleted = 0;
        for d in digests {
            for encrypted in [false, true] {
                let path = blob_path(d, encrypted)?;
                if !self.blob_present(&path).await? {
                    continue;
                }
                match self.store().delete(&path).await {
                    Ok(()) => deleted += 1,
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(StoreError::storage("delete", self.display(&path), e)),
                }
            }
        }
        Ok(deleted)
    }

    /// Deletes pending reference files by name (`<cluster>/<backup>`).
    pub async fn delete_pending_refs(&self, names: &[String]) -> Result<()> {
        for name in names {
            let path = Path::from(format!("{PENDING}/{name}.json"));
            match self.store().delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(StoreError::storage("delete", self.display(&path), e)),
            }
        }
        Ok(())
    }
}

/// Why a streamed body stopped, for the error of the request it fed.
#[derive(Debug, Clone, Default)]
struct Failure(Arc<Mutex<Option<String>>>);

impl Failure {
    fn set(&self, reason: String) {
        if let Ok(mut slot) = self.0.lock() {
            slot.get_or_insert(reason);
        }
    }

    fn get(&self) -> Option<String> {
        self.0.lock().ok().and_then(|s| s.clone())
    }
}
