//! Locks in the repository: many writers or one pruner, never both.
//!
//! ```text
//! <repo>/lifeboat-locks/write-<random>.json   one per running backup (shared)
//! <repo>/lifeboat-locks/prune.json            the pruner (create-if-absent)
//! ```
//!
//! rustic takes no locks and ignores restic's, so lifeboat keeps its own
//! next to the repository (outside restic's `locks/`, which restic would try
//! to decrypt). Each side writes its lock first and then looks for the
//! other's: a writer backs off when a live prune lock exists, a pruner when
//! a live write lock exists, so the two never overlap. The prune lock is
//! created with a conditional put (`If-None-Match: *` on S3), so two pruners
//! cannot both hold it. Every lock carries an expiry that a heartbeat moves
//! forward; a lock whose holder died stops blocking others once it expires,
//! or at once when its holder is known to be gone: as restic does, a lock
//! taken on this machine (same boot and process namespace) by a process that
//! no longer runs, or by this process and no longer held by it (a backup
//! whose store went away could not delete its lock), is stale.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::error::{Result, VolumeError};

/// How long a lock stays valid without a heartbeat.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(300);

const DIR: &str = "lifeboat-locks";
const PRUNE: &str = "prune.json";

/// The content of a lock object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LockInfo {
    /// `write` or `prune`.
    pub kind: String,
    /// Who holds it (host and process), for messages.
    pub holder: String,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// Seconds since the Unix epoch after which the lock is stale.
    pub expires: u64,
    /// Where the holder runs: the kernel's boot id and the holder's process
    /// namespace; with `pid`, whether the holder still runs can be checked
    /// there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Distinguishes the locks of one process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl LockInfo {
    /// Held: not expired, and its holder is not known to be gone.
    pub fn is_live(&self) -> bool {
        self.expires > now() && !self.holder_is_gone()
    }

    /// Whether the holder is known not to hold this lock any more: it ran
    /// in this process namespace and either no longer runs or is this
    /// process, which no longer holds the lock.
    fn holder_is_gone(&self) -> bool {
        let (Some(boot), Some(ns), Some(pid), Some(token)) =
            (&self.boot, &self.pid_namespace, self.pid, &self.token)
        else {
            return false;
        };
        let here = whereami();
        if here.boot.as_ref() != Some(boot) || here.pid_namespace.as_ref() != Some(ns) {
            return false;
        }
        if pid == std::process::id() {
            !held()
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(token)
        } else {
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
        }
    }
}

/// This process's boot id and process namespace (either `None` when the
/// system does not tell; such locks only expire).
struct Whereami {
    boot: Option<String>,
    pid_namespace: Option<String>,
}

fn whereami() -> &'static Whereami {
    static HERE: OnceLock<Whereami> = OnceLock::new();
    HERE.get_or_init(|| Whereami {
        boot: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|b| b.trim().to_string())
            .filter(|b| !b.is_empty()),
        pid_namespace: std::fs::read_link("/proc/self/ns/pid")
            .ok()
            .map(|p| p.display().to_string()),
    })
}

/// The tokens of the locks this process holds.
fn held() -> &'static Mutex<HashSet<String>> {
    static HELD: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    HELD.get_or_init(Mutex::default)
}

/// Registers a lock token as held by this process until dropped.
#[derive(Debug)]
struct Holding(String);

impl Holding {
    fn new() -> Result<Holding> {
        let token = hex::encode(random_bytes()?);
        held()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.clone());
        Ok(Holding(token))
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        held()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.0);
    }
}

/// A held lock; its heartbeat runs until [`Lock::release`] (or drop, after
/// which the lock expires by itself).
#[derive(Debug)]
pub struct Lock {
    store: Arc<dyn ObjectStore>,
    path: Path,
    heartbeat: JoinHandle<()>,
    _holding: Holding,
}

/// Whether the lock at `path` is held (see [`LockInfo::is_live`]).
pub async fn is_live(store: &Arc<dyn ObjectStore>, path: &Path) -> Result<bool> {
    Ok(read(store, path).await?.is_some_and(|l| l.is_live()))
}

/// The live write locks of the repository at `base`.
pub async fn live_writers(store: &Arc<dyn ObjectStore>, base: &Path) -> Result<Vec<Path>> {
    let dir = base.clone().join(DIR);
    let locks: Vec<_> = store
        .list(Some(&dir))
        .try_collect()
        .await
        .map_err(|e| VolumeError::Storage(format!("list {dir}: {e}")))?;
    let mut out = Vec::new();
    for meta in locks {
        if meta
            .location
            .filename()
            .is_some_and(|n| n.starts_with("write-"))
            && is_live(store, &meta.location).await?
        {
            out.push(meta.location);
        }
    }
    Ok(out)
}

impl Lock {
    /// The lock object's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes a shared write lock on the repository at `base`.
    pub async fn write(
        store: Arc<dyn ObjectStore>,
        base: &Path,
        display: &str,
        expiry: Duration,
    ) -> Result<Lock> {
        let name = format!("write-{}.json", hex::encode(random_bytes()?));
        let path = base.clone().join(DIR).join(name.as_str());
        let holding = Holding::new()?;
        let info = info("write", expiry, &holding);
        put(&store, &path, &info, PutMode::Overwrite).await?;
        match read(&store, &base.clone().join(DIR).join(PRUNE)).await? {
            Some(prune) if prune.is_live() => {
                let _ = store.delete(&path).await;
                return Err(locked(display, &prune, expiry));
            }
            _ => {}
        }
        Ok(Lock::hold(store, path, info, expiry, holding))
    }

    /// Takes the exclusive prune lock on the repository at `base`.
    pub async fn prune(
        store: Arc<dyn ObjectStore>,
        base: &Path,
        display: &str,
        expiry: Duration,
    ) -> Result<Lock> {
        let path = base.clone().join(DIR).join(PRUNE);
        let holding = Holding::new()?;
        let info = info("prune", expiry, &holding);
        let mut attempts = 0;
        loop {
            match put(&store, &path, &info, PutMode::Create).await {
                Ok(()) => break,
                Err(VolumeError::Locked { .. }) if attempts == 0 => {
                    attempts += 1;
                    match read(&store, &path).await? {
                        Some(other) if other.is_live() => {
                            return Err(locked(display, &other, expiry));
                        }
                        // Stale (its holder died) or gone: take it over.
                        _ => {
                            let _ = store.delete(&path).await;
                        }
                    }
                }
                Err(VolumeError::Locked { .. }) => {
                    return Err(VolumeError::Locked {
                        repo: display.into(),
                        holder: "another prune took the lock at the same time".into(),
                        expiry_secs: expiry.as_secs(),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        let dir = base.clone().join(DIR);
        let locks: Vec<_> = store
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(|e| VolumeError::Storage(format!("list {dir}: {e}")))?;
        for meta in locks {
            if meta
                .location
                .filename()
                .is_some_and(|n| n.starts_with("write-"))
                && let Some(w) = read(&store, &meta.location).await?
                && w.is_live()
            {
                let _ = store.delete(&path).await;
                return Err(locked(display, &w, expiry));
            }
        }
        Ok(Lock::hold(store, path, info, expiry, holding))
    }

    fn hold(
        store: Arc<dyn ObjectStore>,
        path: Path,
        mut info: LockInfo,
        expiry: Duration,
        holding: Holding,
    ) -> Lock {
        let (s, p) = (store.clone(), path.clone());
        let heartbeat = tokio::spawn(async move {
            let every = (expiry / 3).max(Duration::from_millis(100));
            loop {
                tokio::time::sleep(every).await;
                info.expires = now() + expiry.as_secs().max(1);
                // A failed heartbeat is retried on the next beat; the lock
                // stays valid until its expiry.
                let _ = put(&s, &p, &info, PutMode::Overwrite).await;
            }
        });
        Lock {
            store,
            path,
            heartbeat,
            _holding: holding,
        }
    }

    /// Releases the lock after the work it guarded, returning that work's
    /// result; its error wins over a failure to release.
    pub async fn release_after<T>(self, result: Result<T>) -> Result<T> {
        let released = self.release().await;
        let value = result?;
        released?;
        Ok(value)
    }

    /// Stops the heartbeat and deletes the lock.
    pub async fn release(self) -> Result<()> {
        self.heartbeat.abort();
        match self.store.delete(&self.path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(VolumeError::Storage(format!("delete {}: {e}", self.path))),
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

fn info(kind: &str, expiry: Duration, holding: &Holding) -> LockInfo {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown host".into());
    LockInfo {
        kind: kind.into(),
        holder: format!("lifeboat on {host} (pid {})", std::process::id()),
        created: now(),
        expires: now() + expiry.as_secs().max(1),
        boot: whereami().boot.clone(),
        pid_namespace: whereami().pid_namespace.clone(),
        pid: Some(std::process::id()),
        token: Some(holding.0.clone()),
    }
}

fn locked(display: &str, other: &LockInfo, expiry: Duration) -> VolumeError {
    VolumeError::Locked {
        repo: display.into(),
        holder: format!("a {} lock held by {}", other.kind, other.holder),
        expiry_secs: expiry.as_secs(),
    }
}

async fn put(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
    info: &LockInfo,
    mode: PutMode,
) -> Result<()> {
    let bytes = serde_json::to_vec(info).map_err(|e| VolumeError::Internal(e.to_string()))?;
    let opts = PutOptions {
        mode,
        ..PutOptions::default()
    };
    match store.put_opts(path, PutPayload::from(bytes), opts).await {
        Ok(_) => Ok(()),
        Err(
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
        ) => Err(VolumeError::Locked {
            repo: path.to_string(),
            holder: "exists".into(),
            expiry_secs: 0,
        }),
        Err(e) => Err(VolumeError::Storage(format!("write lock {path}: {e}"))),
    }
}

async fn read(store: &Arc<dyn ObjectStore>, path: &Path) -> Result<Option<LockInfo>> {
    match store.get(path).await {
        Ok(r) => {
            let bytes = r
                .bytes()
                .await
                .map_err(|e| VolumeError::Storage(format!("read lock {path}: {e}")))?;
            // An unreadable lock is treated as held until it is replaced.
            Ok(Some(serde_json::from_slice(&bytes).unwrap_or(LockInfo {
                kind: "unknown".into(),
                holder: format!("an unreadable lock object {path}"),
                created: 0,
                expires: u64::MAX,
                boot: None,
                pid_namespace: None,
                pid: None,
                token: None,
            })))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(VolumeError::Storage(format!("read lock {path}: {e}"))),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn random_bytes() -> Result<[u8; 8]> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|e| VolumeError::Random(e.to_string()))?;
    Ok(b)
}
