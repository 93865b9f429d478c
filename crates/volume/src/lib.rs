//! lifeboat-volume: volume data in restic-format repositories.
//!
//! ```text
//! StorageLocation (lifeboat-store) ─▶ VolumeRepo::open_or_create / open_existing
//!     │  keys: random password, sealed to the recipients (lifeboat-key.age),
//!     │        cached where backups run (KeyCache)
//!     ├─ backup(dir | block device)  ─▶ snapshot /<namespace>/<pvc>
//!     ├─ restore(ID[:/path], dest)   ─▶ sparse files, owners, modes, xattrs, links
//!     ├─ snapshots / forget_backup / prune (two-phase) / check
//!     └─ locks in the repository (many writers or one pruner)
//! ```
//!
//! rustic_core does the restic format (chunking, packs, index, encryption,
//! zstd); this crate gives it a backend over the location's object store
//! ([`backend`]), watched sources ([`source`]), its own restore
//! ([`restore`]) and the key and lock handling restic repositories lack.
//! rustic is synchronous: every call into it runs on a blocking thread.

pub mod backend;
mod error;
pub mod forget;
pub mod keys;
pub mod lock;
pub mod maintenance;
mod ops;
mod repo;
pub mod restore;
pub mod secret_cache;
pub mod source;
pub mod verify;

#[cfg(test)]
mod chunk_boundaries;

pub use backend::Control;
pub use error::{Result, VolumeError};
pub use keys::{FileKeyCache, KeyCache, MemoryKeyCache};
pub use ops::{
    BackupRequest, BackupResult, Counters, ProgressSample, PruneReport, RestoreResult,
    SnapshotInfo, VolumeKind, VolumeNote,
};
pub use repo::{
    KEY_FILE, KEY_INFO_FILE, KeyInfo, RepoRef, VolumeRepo, current_generation, generation_holding,
    generations, snapshot_path, validate,
};
