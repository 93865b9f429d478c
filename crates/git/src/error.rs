//! The one error type of this crate. Every message says what happened in
//! words and what to do about it. URLs are always shown without credentials
//! (see [`crate::redact_url`]) and tokens never appear.

use std::path::PathBuf;
use std::time::Duration;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong talking to a Git remote or the local cache.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The remote could not be reached (DNS, connection refused, TLS, missing
    /// local path…). The cache keeps serving what it fetched last.
    #[error(
        "cannot reach the Git remote {url}: {reason}; check the URL, the network and that the server is up \
         (the last fetched revision stays usable from the cache)"
    )]
    Unreachable { url: String, reason: String },

    /// A network operation took longer than the configured timeout.
    #[error(
        "the Git remote {url} did not answer within {after:?}; check that the server is up, \
         or raise the timeout (the last fetched revision stays usable from the cache)"
    )]
    Timeout { url: String, after: Duration },

    /// The remote refused the credentials we sent (or asked for some and we had none).
    #[error(
        "the Git remote {url} rejected authentication with {credential}; check that the credential is valid, \
         not expired and allowed to {access} the repository"
    )]
    AuthRejected {
        url: String,
        /// Which credential was tried, e.g. "a token from file /etc/lifeboat/token".
        credential: String,
        /// "read" or "write".
        access: &'static str,
    },

    /// The SSH private key file configured for an ssh:// remote is missing or unreadable.
    #[error(
        "cannot read the SSH private key {path}: {reason}; check --ssh-key and that the secret is mounted"
    )]
    SshKey { path: PathBuf, reason: String },

    /// The server's SSH host key or TLS certificate was not trusted.
    #[error("refusing to talk to {url}: {reason}")]
    UntrustedHost { url: String, reason: String },

    /// A token or key file named in the configuration could not be read.
    #[error(
        "cannot read the credential file {path}: {reason}; check that the secret is mounted and readable"
    )]
    CredentialFile { path: PathBuf, reason: String },

    /// The remote has no such branch.
    #[error("the remote {url} has no branch `{branch}`; check --branch")]
    BranchNotFound { url: String, branch: String },

    /// A branch name that Git cannot store.
    #[error("`{name}` is not a valid Git branch name; check --branch")]
    InvalidBranch { name: String },

    /// A revision could not be resolved in the cache.
    #[error(
        "unknown revision `{rev}`: it is not a commit, branch or tag in the fetched repository; \
         check the spelling, or fetch the branch first"
    )]
    UnknownRevision { rev: String },

    /// Publishing kept losing the race against other writers.
    #[error(
        "pushing status to branch `{branch}` of {url} was rejected {attempts} times because the branch kept moving; \
         it will be retried on the next reconcile (last rejection: {reason})"
    )]
    PushRejected {
        url: String,
        branch: String,
        attempts: u32,
        reason: String,
    },

    /// A push failed for a reason other than the branch moving (hook, protection rule…).
    #[error(
        "the remote {url} refused the push to branch `{branch}`: {reason}; check branch protection rules and \
         that the credential may write"
    )]
    PushRefused {
        url: String,
        branch: String,
        reason: String,
    },

    /// The cache directory exists but is not a usable repository, and was not re-created
    /// automatically because it does not look like one of ours.
    #[error(
        "the Git cache {path} is not usable ({reason}); delete the directory and lifeboat will re-create it"
    )]
    CacheCorrupt { path: PathBuf, reason: String },

    /// A status path or file name that cannot be stored in Git.
    #[error("invalid path `{path}` for a status file: {reason}")]
    InvalidPath { path: String, reason: String },

    /// Writing the checkout to disk failed.
    #[error("cannot write the checkout to {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Anything else libgit2 reports; the message is libgit2's own.
    #[error("git: {0}")]
    Git(#[from] git2::Error),
}

impl Error {
    /// True when the error is about the remote (network, auth, server) rather than
    /// the cache or the caller's input: the cache can still serve its last fetch.
    pub fn is_remote(&self) -> bool {
        matches!(
            self,
            Error::Unreachable { .. }
                | Error::Timeout { .. }
                | Error::AuthRejected { .. }
                | Error::UntrustedHost { .. }
                | Error::PushRejected { .. }
                | Error::PushRefused { .. }
        )
    }
}
