//! lifeboat's Git edge: a local cache of the policy repository and the status
//! write-back, over libgit2 (git2). Every call blocks; the async controller
//! runs them with `spawn_blocking`.
//!
//! ```text
//!  remote ──fetch(branch)──▶ cache (bare repo) ──checkout(sha, dir)──▶ plain files ──▶ core::load
//!                              │  resolve / commit_info / changed_paths (offline)
//!  status files ──publish──▶ commit on top of the remote tip ──push (retry on race)──▶ remote
//! ```
//!
//! # Cache layout
//!
//! `cache_dir` is a bare repository owned by lifeboat, one per remote. Its
//! config records the remote URL without credentials (`lifeboat.url`); a cache
//! made for another URL, or one libgit2 cannot open, is deleted and re-created
//! on [`Mirror::open`] ([`Mirror::was_recreated`] tells). Object damage found
//! while fetching also re-creates it and fetches again. A fetched branch `b` is
//! kept as `refs/heads/b` and `refs/remotes/origin/b`; `HEAD` follows the branch
//! fetched last. No remote is configured in the cache: every operation uses
//! the URL given to `open`, so credentials are never written to disk.
//!
//! A cache directory belongs to one process. Within it, every `Mirror` on the
//! same directory shares a lock, so threads may fetch and publish through one
//! cache at once; lock files left behind by a killed process are removed when
//! the cache is opened.
//!
//! When the remote is unreachable the cache keeps serving what it fetched last:
//! [`Mirror::resolve`], [`Mirror::checkout`], [`Mirror::commit_info`] and
//! [`Mirror::changed_paths`] never touch the network.
//!
//! # Authentication and trust
//!
//! See [`Auth`]: a token goes out as HTTP basic-auth password (user
//! `x-access-token` unless set) and is offered once, so a wrong one fails fast
//! with [`Error::AuthRejected`] naming where the token came from. SSH uses a
//! private key file; host keys are checked against the configured known_hosts
//! file, or libgit2's `$HOME/.ssh/known_hosts` when none is configured; unknown
//! hosts are refused either way. TLS uses the system trust store plus
//! certificates pinned with [`Mirror::with_pinned_certificates`]. URLs in errors
//! and logs have `user:password@` removed; tokens never appear.
//!
//! # Timeouts
//!
//! libgit2's socket timeouts can only be set through `unsafe` global options,
//! which this workspace forbids. Instead every network operation runs on a
//! helper thread and fails with [`Error::Timeout`] when no progress callback
//! fired for [`Mirror::with_timeout`] (default 90 s). The helper aborts at its
//! next callback; a server that never sends another byte leaves it parked
//! until the OS gives up on the connection.
//!
//! # Publishing status
//!
//! [`Mirror::publish`] replaces one directory of one branch (default branch
//! `lifeboat-status`, path `clusters/<cluster>`): fetch the branch, build the
//! new tree on top of its tip (or an orphan commit when the branch does not
//! exist yet), skip the commit when nothing but ignorable differences (as judged
//! by the caller's `same`) changed, commit as `lifeboat <lifeboat@localhost>`
//! with `[skip ci]`, push without force. When another writer moved the branch,
//! start over on the new tip after an exponential, jittered back-off. Writers
//! own disjoint directories, so re-applying never drops anyone's files. For a
//! remote on the local file system the branch is moved with a compare-and-swap
//! under Git's ref lock, because libgit2's local push would overwrite.

mod auth;
mod error;
mod mirror;
mod publish;

pub use auth::{Auth, redact_url};
pub use error::{Error, Result};
pub use mirror::{
    CommitInfo, DEFAULT_NETWORK_TIMEOUT, DEFAULT_PUBLISH_ATTEMPTS, Mirror, checkout_local,
};
pub use publish::{
    BOT_EMAIL, BOT_NAME, DEFAULT_STATUS_BRANCH, Published, SameFn, StatusCommit, StatusTarget,
};
