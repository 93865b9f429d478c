//! Errors of volume data operations. Each says what to do next.

use std::path::PathBuf;

pub type Result<T, E = VolumeError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VolumeError {
    /// A storage location without recipients cannot hold volume data.
    #[error(
        "the storage location {location} has no encryption recipients, so it cannot hold volume \
         data (the repository key is sealed to them); add spec.encryption.recipients (age public \
         keys, `age-keygen -y id.txt`) to the StorageLocation"
    )]
    NoRecipients { location: String },

    /// The repository exists but this cluster has no cached key and no
    /// identity was given.
    #[error(
        "the key of the volume repository {repo} is not cached here and no age identity was \
         given; re-seed the cache from an identity: `lifeboat volumes key --identity FILE \
         --seed-cache …` (with the same --location/--cluster/--namespace)"
    )]
    KeyNotCached { repo: String },

    /// The sealed key could not be opened.
    #[error("cannot open {path}: {reason}")]
    Unseal { path: String, reason: String },

    /// The password does not open the repository.
    #[error(
        "the key for {repo} does not open it (wrong or stale cached key); re-seed the cache with \
         `lifeboat volumes key --identity FILE --seed-cache …`"
    )]
    WrongKey { repo: String },

    /// The repository does not exist (nothing was backed up yet).
    #[error("there is no volume repository at {repo}: nothing of this namespace was backed up")]
    NoRepository { repo: String },

    /// Another writer or a prune holds the repository.
    #[error(
        "the volume repository {repo} is locked: {holder}; retry when it is done (locks expire after {expiry_secs} s without a heartbeat)"
    )]
    Locked {
        repo: String,
        holder: String,
        expiry_secs: u64,
    },

    /// No snapshot matches.
    #[error("no snapshot {wanted} in {repo}; list them with `lifeboat volumes snapshots`")]
    NoSnapshot { wanted: String, repo: String },

    /// The source cannot be read.
    #[error(
        "cannot read the source {path}: {source}; check that it exists and this user may read it"
    )]
    Source {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The destination cannot be written.
    #[error("cannot write {path}: {source}")]
    Destination {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A backup was stopped before it finished; no snapshot was written.
    #[error(
        "the backup was cancelled before it finished; no snapshot was written (the data uploaded so far is reused by the next backup)"
    )]
    Cancelled,

    /// A storage request failed.
    #[error("storage: {0}")]
    Storage(String),

    /// rustic reported an error.
    #[error("{context}: {message}")]
    Rustic { context: String, message: String },

    /// Lifeboat's own storage layer (boxed: its errors carry a diagnosis
    /// and would make every `Result` of this crate large).
    #[error(transparent)]
    Store(Box<lifeboat_store::StoreError>),

    /// Reading or writing the key cache failed.
    #[error("key cache: {0}")]
    KeyCache(String),

    /// The random number generator failed.
    #[error("cannot generate a random key: {0}")]
    Random(String),

    /// Bad input (names, snapshot ids, paths).
    #[error("{0}")]
    Invalid(String),

    /// A worker thread failed unexpectedly.
    #[error("internal error: {0}")]
    Internal(String),
}

impl VolumeError {
    pub(crate) fn rustic(
        context: impl Into<String>,
        err: &rustic_core::RusticError,
    ) -> VolumeError {
        VolumeError::Rustic {
            context: context.into(),
            message: err.display_log(),
        }
    }
}

impl From<lifeboat_store::StoreError> for VolumeError {
    fn from(e: lifeboat_store::StoreError) -> VolumeError {
        VolumeError::Store(Box::new(e))
    }
}
