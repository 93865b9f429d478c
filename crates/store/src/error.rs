//! The one error type of this crate.
//!
//! Every variant's message says what went wrong *and* what a person can do
//! about it; callers print the whole `source()` chain.

use std::io;

use crate::diagnose::{Cause, Explained, endpoint};

fn explained(op: &str, path: &str, cause: Option<&Cause>, endpoint: Option<&str>) -> String {
    Explained {
        op,
        path,
        cause,
        endpoint,
    }
    .to_string()
}

/// Result alias used throughout `lifeboat-store`.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything that can go wrong while talking to object storage or reading
/// and writing archives.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The storage URL could not be understood.
    #[error(
        "invalid storage URL {url:?}: {reason}; use file:///path, s3://bucket/prefix, \
         az://container/prefix or gs://bucket/prefix"
    )]
    InvalidUrl { url: String, reason: String },

    /// A configuration value is inconsistent or missing.
    #[error("invalid storage location configuration: {0}")]
    InvalidConfig(String),

    /// An age recipient (public key) could not be parsed.
    #[error(
        "invalid age recipient {key:?}: {reason}; recipients are X25519 public keys \
         starting with \"age1\" (see `age-keygen -y key.txt`)"
    )]
    InvalidRecipient { key: String, reason: String },

    /// An age identity (secret key) could not be parsed. The key itself is
    /// never printed.
    #[error(
        "age identity #{index} is not a valid X25519 secret key ({reason}); identities start \
         with \"AGE-SECRET-KEY-1\" (as written by `age-keygen`)"
    )]
    InvalidIdentity { index: usize, reason: String },

    /// The repository was written by a newer lifeboat.
    #[error(
        "{url} holds a lifeboat repository of format {found}, but this lifeboat understands \
         format {supported} at most; upgrade lifeboat before using this storage location"
    )]
    NewerFormat {
        url: String,
        found: u32,
        supported: u32,
    },

    /// The prefix holds objects but no repository marker.
    #[error(
        "{url} is not empty (it holds {example:?}) but has no lifeboat.json, so it is not a \
         lifeboat repository; point the storage location at an empty prefix (for example \
         add \"/lifeboat\" to the URL) instead of mixing lifeboat with other data"
    )]
    ForeignData { url: String, example: String },

    /// The repository marker exists but is not valid JSON of the expected shape.
    #[error(
        "{url}/lifeboat.json is not a valid repository marker; restore it from a copy or \
         move the data to a new prefix"
    )]
    InvalidMarker {
        url: String,
        #[source]
        source: serde_json::Error,
    },

    /// A name used as a path segment is not acceptable.
    #[error(
        "invalid {what} name {name:?}: use 1-253 characters from a-z, 0-9, '-' and '.', \
         starting with a letter or digit"
    )]
    InvalidName { what: &'static str, name: String },

    /// A Kubernetes object cannot be stored because a path segment is unsafe.
    #[error(
        "cannot store object {resource}/{name}: field {field} is {value:?}, which cannot be a \
         path segment (empty, \".\", \"..\" or contains '/' or NUL)"
    )]
    InvalidObjectPath {
        resource: String,
        name: String,
        field: &'static str,
        value: String,
    },

    /// An object storage request failed (after retries). The message names
    /// the cause in words when it is a common one ([`Cause`]); the
    /// provider's response is the source, for `-v` and logs.
    #[error("{}", explained(op, path, cause.as_ref(), endpoint.as_deref()))]
    Storage {
        op: &'static str,
        path: String,
        cause: Option<Cause>,
        /// `scheme://host:port` of the request, when object_store shows it.
        endpoint: Option<String>,
        /// Boxed: object_store's error is large and this enum is the
        /// `Err` of every store call.
        #[source]
        source: Box<object_store::Error>,
    },

    /// The backup does not exist (no manifest).
    #[error(
        "backup {backup:?} of cluster {cluster:?} not found in {url}; list backups with \
         `lifeboat backups list`"
    )]
    BackupNotFound {
        url: String,
        cluster: String,
        backup: String,
    },

    /// No `backups/<name>/velero-backup.json` in a Velero location.
    #[error(
        "no Velero backup named {backup:?} in {url}/backups/; list them with \
         `lifeboat backups list --location <the Velero location>`"
    )]
    VeleroBackupNotFound { url: String, backup: String },

    /// Velero did not finish the backup.
    #[error(
        "Velero backup {backup:?} is {phase}, not Completed or PartiallyFailed: Velero did not \
         finish writing it, so it is not restored; pick another one from `lifeboat backups list`"
    )]
    VeleroBackupNotRestorable { backup: String, phase: String },

    /// A backup with this name already has a manifest.
    #[error(
        "backup {backup:?} of cluster {cluster:?} already exists; a schedule slot is backed \
         up at most once, delete the old backup first if you really want to redo it"
    )]
    BackupExists { cluster: String, backup: String },

    /// A manifest or record could not be parsed.
    #[error("{path} is not valid lifeboat JSON; delete the backup or restore the file from a copy")]
    InvalidJson {
        path: String,
        #[source]
        source: serde_json::Error,
    },

    /// A manifest was written by a newer lifeboat.
    #[error(
        "{path} has format {found}, newer than the {supported} this lifeboat reads; upgrade \
         lifeboat"
    )]
    NewerManifest {
        path: String,
        found: u32,
        supported: u32,
    },

    /// The stored bytes do not hash to what the manifest says.
    #[error(
        "checksum mismatch in {path}: the manifest records sha256 {expected} but the stored \
         bytes hash to {actual}; the file was modified or damaged after the backup, restore \
         from another backup"
    )]
    ChecksumMismatch {
        path: String,
        expected: String,
        actual: String,
    },

    /// The stored object has a different size than the manifest says.
    #[error(
        "{path} is {actual} bytes but the manifest records {expected}; the file was truncated \
         or replaced, restore from another backup"
    )]
    SizeMismatch {
        path: String,
        expected: u64,
        actual: u64,
    },

    /// The content could not be decoded although its checksum matched.
    #[error("{path} cannot be decoded ({reason}); restore from another backup")]
    Corrupt { path: String, reason: String },

    /// The archive is encrypted but no identity was configured.
    #[error(
        "{path} is encrypted with age but no identity (secret key) is configured; set \
         encryption.identitySecretRef on the storage location"
    )]
    MissingIdentity { path: String },

    /// None of the configured identities can decrypt the archive.
    #[error(
        "none of the configured age identities can decrypt {path}; it was encrypted to \
         {recipients:?}, configure the matching secret key"
    )]
    WrongIdentity {
        path: String,
        recipients: Vec<String>,
    },

    /// A signing key (minisign secret key) could not be parsed. The key
    /// itself is never printed.
    #[error(
        "the signing key is not an unencrypted minisign secret key ({reason}); create one with \
         `lifeboat keys generate` or `minisign -G -W`"
    )]
    InvalidSigningKey { reason: String },

    /// A trusted public key could not be parsed.
    #[error(
        "the public key trusted for cluster {cluster:?} is not a minisign public key ({reason}); \
         use the `RW…` line of the `.pub` file `lifeboat keys generate` wrote"
    )]
    InvalidPublicKey { cluster: String, reason: String },

    /// A backup of a cluster that must sign was started without a key.
    #[error(
        "keys are trusted for cluster {cluster:?}, so its backups must be signed, but no signing \
         key is configured: set the Cluster's signing.keySecretRef (or pass --signing-key FILE)"
    )]
    SigningKeyMissing { cluster: String },

    /// Signing failed.
    #[error("cannot sign: {0}")]
    Sign(String),

    /// The signature of a backup is bad or untrusted (or missing where
    /// signing is required): nothing of it may be read.
    #[error(
        "refusing {what}: {reason}; restore a backup with a valid signature, or see \
         \"Signed backups\" in docs/operations.md if the key was rotated"
    )]
    SignatureRefused { what: String, reason: String },

    /// Encryption failed.
    #[error("cannot set up age encryption: {0}")]
    Encrypt(String),

    /// The background writer stopped; `finish` returns the underlying cause.
    #[error("the backup writer stopped: {0}")]
    WriterStopped(String),

    /// A local I/O error (temp files, pipelines).
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },

    /// A check of `lifeboat backups verify` beyond the backup's files could
    /// not run.
    #[error("the {check} check could not run: {detail}")]
    Check { check: String, detail: String },

    /// A background task panicked or was cancelled.
    #[error("internal task failed: {0}; this is a lifeboat bug, please report it")]
    Task(String),

    /// A container registry request failed or was refused.
    #[error("registry {registry}: {doing} failed: {reason}; {hint}")]
    Registry {
        registry: String,
        doing: String,
        reason: String,
        hint: &'static str,
    },

    /// A registry sent bytes that do not hash to the digest asked for.
    #[error(
        "registry {registry} sent {what} whose sha256 is {actual}, not {expected}; nothing of \
         it was kept; check the registry's storage (the image may be damaged there)"
    )]
    DigestMismatch {
        registry: String,
        what: String,
        expected: String,
        actual: String,
    },
}

impl StoreError {
    /// A failed storage request, its cause put in words.
    pub fn storage(op: &'static str, path: impl ToString, source: object_store::Error) -> Self {
        StoreError::Storage {
            op,
            path: path.to_string(),
            cause: Cause::of(&source),
            endpoint: endpoint(&source),
            source: Box::new(source),
        }
    }

    /// The common cause of a storage failure, when it is one.
    pub fn storage_cause(&self) -> Option<&Cause> {
        match self {
            StoreError::Storage { cause, .. } => cause.as_ref(),
            _ => None,
        }
    }

    /// True when the message says all a person needs: the source chain
    /// below it is the provider's detail (shown with `-v`, logged).
    pub fn is_explained(&self) -> bool {
        self.storage_cause().is_some()
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        StoreError::Io {
            context: context.into(),
            source,
        }
    }

    /// True when the error means the data is damaged or unreadable with the
    /// configured keys (as opposed to a storage or network failure).
    pub fn is_integrity(&self) -> bool {
        matches!(
            self,
            StoreError::ChecksumMismatch { .. }
                | StoreError::SizeMismatch { .. }
                | StoreError::Corrupt { .. }
                | StoreError::MissingIdentity { .. }
                | StoreError::WrongIdentity { .. }
                | StoreError::SignatureRefused { .. }
        )
    }
}
