//! rustic's `ReadBackend`/`WriteBackend` over an `object_store` location.
//!
//! ```text
//! rustic (sync, its own threads) ──▶ ObjectBackend ──block_on──▶ ObjectStore (async)
//!                                         │
//!                                         └─ Control: cancelled? failed? → refuse writes
//! ```
//!
//! rustic is synchronous and calls the backend from its own worker threads;
//! each call blocks that thread on the tokio runtime handle captured when
//! the backend was built. It must therefore never be called from inside an
//! async task: lifeboat runs every rustic operation under `spawn_blocking`.
//!
//! The [`Control`] is the commit guard. Once a backup is cancelled (SIGTERM)
//! or any write has failed, every further write is refused, so rustic cannot
//! write the snapshot file (restic's commit point) of an incomplete backup.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use rustic_core::{
    BytesList, ErrorKind, FileType, Id, ReadBackend, RusticError, RusticResult, WriteBackend,
};
use tokio::runtime::Handle;

/// Shared state of one operation: cancellation and the first failure.
#[derive(Debug, Default)]
pub struct Control {
    cancelled: AtomicBool,
    failure: Mutex<Option<String>>,
}

impl Control {
    pub fn new() -> Arc<Control> {
        Arc::new(Control::default())
    }

    /// Stops the operation: further writes (and source reads) fail.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Records a failure (the first one is kept) and refuses later writes.
    pub fn fail(&self, reason: String) {
        let mut f = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if f.is_none() {
            *f = Some(reason);
        }
    }

    /// The first failure, if any.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn check_writable(&self) -> RusticResult<()> {
        if self.is_cancelled() {
            return Err(RusticError::new(
                ErrorKind::Backend,
                "The operation was cancelled; nothing more is written.",
            ));
        }
        if let Some(reason) = self.failure() {
            return Err(RusticError::new(
                ErrorKind::Backend,
                "An earlier write failed (`{reason}`); nothing more is written.",
            )
            .attach_context("reason", reason));
        }
        Ok(())
    }
}

/// rustic's guidance for a failed storage request (`{detail}`: what was
/// asked of which file, and the store's answer).
const STORAGE_FAILED: &str = "Storage request failed: `{detail}`. Check that the storage \
     location is reachable and the credentials allow it, then run the command again.";

/// Memory budget of the tree-pack cache.
const TREE_CACHE_BYTES: usize = 64 << 20;

/// Whole tree packs, kept in memory while an operation runs.
///
/// rustic asks for tree blobs one at a time (`read_partial` with
/// `cacheable`), and a volume with thousands of directories has thousands
/// of trees spread over a few packs: without its on-disk cache (off here:
/// a mover has no cache worth keeping) each tree was a storage request.
/// The first tree read of a pack fetches the whole pack once, as rustic's
/// own cache does; the oldest packs are dropped beyond the budget. Packs
/// are immutable, so a cached one is never stale. Data blobs are never
/// cached.
#[derive(Debug, Default)]
struct TreeCache {
    packs: HashMap<Id, Bytes>,
    order: VecDeque<Id>,
    bytes: usize,
}

impl TreeCache {
    fn get(&self, id: &Id) -> Option<Bytes> {
        self.packs.get(id).cloned()
    }

    fn insert(&mut self, id: Id, pack: Bytes) {
        if pack.len() > TREE_CACHE_BYTES / 4 || self.packs.contains_key(&id) {
            return;
        }
        self.bytes += pack.len();
        self.packs.insert(id, pack);
        self.order.push_back(id);
        while self.bytes > TREE_CACHE_BYTES {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(p) = self.packs.remove(&old) {
                self.bytes -= p.len();
            }
        }
    }
}

/// A restic repository below `base` in an object store.
#[derive(Debug, Clone)]
pub struct ObjectBackend {
    store: Arc<dyn ObjectStore>,
    base: Path,
    display: String,
    handle: Handle,
    control: Arc<Control>,
    trees: Arc<Mutex<TreeCache>>,
}

impl ObjectBackend {
    /// `handle` is the runtime the store's futures run on; `display` names
    /// the repository in messages.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        base: Path,
        display: String,
        handle: Handle,
        control: Arc<Control>,
    ) -> ObjectBackend {
        ObjectBackend {
            store,
            base,
            display,
            handle,
            control,
            trees: Arc::default(),
        }
    }

    fn dir(&self, tpe: FileType) -> Path {
        self.base.clone().join(tpe.dirname())
    }

    /// restic's layout: `config`, `keys/<id>`, `data/<id[..2]>/<id>`, ….
    fn path(&self, tpe: FileType, id: &Id) -> Path {
        let hex = id.to_hex();
        let hex = hex.as_str();
        match tpe {
            FileType::Config => self.base.clone().join("config"),
            FileType::Pack => self.dir(tpe).join(&hex[..2]).join(hex),
            _ => self.dir(tpe).join(hex),
        }
    }

    /// What a failed request of `what` on `path` says: the repository's
    /// URL and the file in it (`display` already holds the base path), and
    /// the store's answer (its URL, retries and cause), on one line.
    fn storage_detail(&self, what: &str, path: &Path, err: &object_store::Error) -> String {
        let full = path.as_ref();
        let base = self.base.as_ref();
        let rel = full
            .strip_prefix(base)
            .map(|r| r.trim_start_matches('/'))
            .filter(|r| !base.is_empty() && !r.is_empty())
            .unwrap_or(full);
        format!("{what} {}/{rel}: {err}", self.display)
    }

    fn storage_error(&self, what: &str, path: &Path, err: object_store::Error) -> Box<RusticError> {
        let msg = self.storage_detail(what, path, &err);
        RusticError::with_source(ErrorKind::Backend, STORAGE_FAILED, err)
            .attach_context("detail", msg)
    }
}

impl ReadBackend for ObjectBackend {
    fn location(&self) -> String {
        self.display.clone()
    }

    fn list_with_size(&self, tpe: FileType) -> RusticResult<Vec<(Id, u32)>> {
        if tpe == FileType::Config {
            let path = self.base.clone().join("config");
            return match self.handle.block_on(self.store.head(&path)) {
                Ok(meta) => Ok(vec![(Id::default(), size_u32(meta.size)?)]),
                Err(object_store::Error::NotFound { .. }) => Ok(Vec::new()),
                Err(e) => Err(self.storage_error("head", &path, e)),
            };
        }
        let dir = self.dir(tpe);
        let metas: Vec<_> = self
            .handle
            .block_on(self.store.list(Some(&dir)).try_collect())
            .map_err(|e| self.storage_error("list", &dir, e))?;
        let mut out = Vec::with_capacity(metas.len());
        for meta in metas {
            let Some(name) = meta.location.filename() else {
                continue;
            };
            // Anything that is not a 64-digit hex name (temporary files of
            // other tools, notes) is not part of the repository.
            if name.len() != 64 {
                continue;
            }
            let Ok(id) = name.parse::<Id>() else {
                continue;
            };
            out.push((id, size_u32(meta.size)?));
        }
        Ok(out)
    }

    fn read_full(&self, tpe: FileType, id: &Id) -> RusticResult<Bytes> {
        let path = self.path(tpe, id);
        let bytes = self
            .handle
            .block_on(async { self.store.get(&path).await?.bytes().await })
            .map_err(|e| self.storage_error("read", &path, e))?;
        check_content(tpe, id, &bytes, &path)?;
        Ok(bytes)
    }

    fn read_partial(
        &self,
        tpe: FileType,
        id: &Id,
        cacheable: bool,
        offset: u32,
        length: u32,
    ) -> RusticResult<Bytes> {
        let path = self.path(tpe, id);
        let range = offset as usize..offset as usize + length as usize;
        let bytes = if cacheable && tpe == FileType::Pack {
            let cached = self.trees.lock().unwrap_or_else(|e| e.into_inner()).get(id);
            let pack = match cached {
                Some(p) => p,
                None => {
                    let p = self.read_full(tpe, id)?;
                    self.trees
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(*id, p.clone());
                    p
                }
            };
            // A range past the pack's end is a short read (checked below).
            if range.end <= pack.len() {
                pack.slice(range)
            } else {
                Bytes::new()
            }
        } else {
            let range = range.start as u64..range.end as u64;
            self.handle
                .block_on(self.store.get_range(&path, range))
                .map_err(|e| self.storage_error("read", &path, e))?
        };
        if bytes.len() != length as usize {
            return Err(RusticError::new(
                ErrorKind::Backend,
                "Short read of `{path}`: the object is truncated. Run `lifeboat volumes check`.",
            )
            .attach_context("path", path.to_string()));
        }
        Ok(bytes)
    }

    fn warmup_path(&self, tpe: FileType, id: &Id) -> String {
        self.path(tpe, id).to_string()
    }
}

impl WriteBackend for ObjectBackend {
    fn create(&self) -> RusticResult<()> {
        // Object stores have no directories.
        Ok(())
    }

    fn write_bytes(
        &self,
        tpe: FileType,
        id: &Id,
        _cacheable: bool,
        content: BytesList,
    ) -> RusticResult<()> {
        self.control.check_writable()?;
        let path = self.path(tpe, id);
        let payload: PutPayload = content.into_vec().into_iter().collect();
        // The config file is the repository's identity: create-if-absent, so
        // two first writers cannot both initialise the repository.
        let mode = if tpe == FileType::Config {
            PutMode::Create
        } else {
            PutMode::Overwrite
        };
        let opts = PutOptions {
            mode,
            ..PutOptions::default()
        };
        match self
            .handle
            .block_on(self.store.put_opts(&path, payload, opts))
        {
            Ok(_) => Ok(()),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) if tpe == FileType::Config => Err(RusticError::new(
                ErrorKind::Repository,
                "The repository `{repo}` was initialised by another writer at the same time.",
            )
            .attach_context("repo", self.display.clone())),
            Err(e) => {
                // The reason a mover reports: one line (rustic's own
                // rendering of the error spans a page).
                let detail = self.storage_detail("write", &path, &e);
                self.control.fail(format!(
                    "a write to the store failed: {detail}; check that the storage location is \
                     reachable and the credentials allow it"
                ));
                Err(self.storage_error("write", &path, e))
            }
        }
    }

    fn remove(&self, tpe: FileType, id: &Id, _cacheable: bool) -> RusticResult<()> {
        if self.control.is_cancelled() {
            return self.control.check_writable();
        }
        let path = self.path(tpe, id);
        match self.handle.block_on(self.store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.storage_error("delete", &path, e)),
        }
    }
}

fn size_u32(size: u64) -> RusticResult<u32> {
    u32::try_from(size).map_err(|_| {
        RusticError::new(
            ErrorKind::Backend,
            "A repository file is larger than 4 GiB; this is not a restic repository.",
        )
    })
}

/// Checks that a file read whole hashes to its name.
///
/// Every restic file but `config` is named by the SHA-256 of its stored
/// bytes. rustic does not check this on read; lifeboat does, because a
/// backup's signed manifest names its snapshots by id: a snapshot file
/// swapped for another (genuine, encrypted with the same key) under the
/// same name would otherwise restore other data than the signature covers.
fn check_content(tpe: FileType, id: &Id, bytes: &[u8], path: &Path) -> RusticResult<()> {
    use sha2::Digest;
    if tpe == FileType::Config {
        return Ok(());
    }
    let digest = hex::encode(sha2::Sha256::digest(bytes));
    if digest.parse::<Id>().ok().as_ref() == Some(id) {
        return Ok(());
    }
    Err(RusticError::new(
        ErrorKind::Backend,
        "The repository file `{path}` does not hash to its name (its bytes hash to `{digest}`): \
         it was modified or replaced after it was written. Run `lifeboat volumes check` on this \
         repository and restore from another backup.",
    )
    .attach_context("path", path.to_string())
    .attach_context("digest", digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> Id {
        format!("{n:02x}{}", "0".repeat(62)).parse().expect("id")
    }

    #[test]
    fn tree_cache_keeps_the_newest_packs_within_its_budget() {
        let mut c = TreeCache::default();
        let quarter = TREE_CACHE_BYTES / 4;
        for n in 0..5 {
            c.insert(id(n), Bytes::from(vec![n; quarter]));
        }
        assert!(c.bytes <= TREE_CACHE_BYTES);
        assert!(c.get(&id(0)).is_none(), "the oldest pack was dropped");
        assert_eq!(c.get(&id(4)).expect("newest kept")[0], 4);
        // A pack larger than a quarter of the budget is never held.
        c.insert(id(9), Bytes::from(vec![9; quarter + 1]));
        assert!(c.get(&id(9)).is_none());
        // Inserting a pack twice counts it once.
        let before = c.bytes;
        c.insert(id(4), Bytes::from(vec![4; quarter]));
        assert_eq!(c.bytes, before);
    }

    #[test]
    fn files_read_whole_must_hash_to_their_name() {
        use sha2::Digest;
        let data = b"a snapshot file";
        let named: Id = hex::encode(sha2::Sha256::digest(data)).parse().expect("id");
        let path = Path::from("snapshots/x");
        assert!(check_content(FileType::Snapshot, &named, data, &path).is_ok());
        let err = check_content(FileType::Snapshot, &named, b"another file", &path)
            .expect_err("a swapped file is refused");
        assert!(
            err.to_string().contains("does not hash to its name"),
            "{err}"
        );
        // `config` is not content-addressed.
        assert!(check_content(FileType::Config, &Id::default(), data, &path).is_ok());
    }
}
