//! The bare cache of one remote: fetch, resolve, checkout, history queries.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use git2::{
    AutotagOption, ErrorClass, ErrorCode, FetchOptions, ObjectType, Oid, ProxyOptions, Repository,
    RepositoryInitOptions, TreeWalkMode, TreeWalkResult,
};

use crate::auth::{self, Auth, CallState, Pins, Watch};
use crate::error::{Error, Result};

/// Default time a network operation may go without any sign of progress.
pub const DEFAULT_NETWORK_TIMEOUT: Duration = Duration::from_secs(90);
/// Default number of push attempts in [`Mirror::publish`].
pub const DEFAULT_PUBLISH_ATTEMPTS: u32 = 5;

/// Config key in the cache recording which remote it mirrors (URL without credentials).
const URL_KEY: &str = "lifeboat.url";

/// Commit metadata for status and plan output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    /// Full hex SHA.
    pub sha: String,
    /// Shortest unambiguous abbreviation (at least 7 characters).
    pub short: String,
    /// First line of the message.
    pub summary: String,
    /// `Name <email>`.
    pub author: String,
    /// Author time, seconds since the Unix epoch (UTC).
    pub time: i64,
    /// The author's UTC offset in minutes at that time.
    pub time_offset_minutes: i32,
}

/// Everything a worker thread needs; shared, immutable.
pub(crate) struct Inner {
    /// The URL handed to libgit2 (may carry credentials; never shown).
    pub url: String,
    /// The URL without credentials, for messages and logs.
    pub display_url: String,
    /// Set when the remote is a repository on this machine.
    pub local: Option<PathBuf>,
    pub path: PathBuf,
    pub auth: Auth,
    pub pins: Pins,
    pub timeout: Duration,
    /// Serialises writers to this cache directory within the process.
    pub lock: Arc<Mutex<()>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `url` may carry credentials: only the redacted form is shown.
        f.debug_struct("Inner")
            .field("url", &self.display_url)
            .field("local", &self.local)
            .field("path", &self.path)
            .field("auth", &self.auth)
            .field("pinned_certificates", &self.pins.0.len())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A local bare cache of one remote. Cheap to share: it holds no open
/// repository handle, every call opens the cache anew, so a `Mirror` is
/// `Send + Sync` and can be moved into `spawn_blocking`.
#[derive(Debug, Clone)]
pub struct Mirror {
    pub(crate) inner: Arc<Inner>,
    pub(crate) max_attempts: u32,
    pub(crate) backoff_base: Duration,
    recreated: bool,
}

/// What kind of access an operation needs, for error messages.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Access {
    Read,
    Write,
}

impl Mirror {
    /// Opens or creates the cache at `cache_dir` for `url` (file://, https://,
    /// http://, ssh://, scp-like `git@host:path`, or a plain local path).
    ///
    /// A cache that cannot be opened, or that was made for another URL, is
    /// deleted and re-created when it looks like a Git directory (see
    /// [`Mirror::was_recreated`]); a non-empty directory that is not one is left
    /// alone and reported as [`Error::CacheCorrupt`].
    pub fn open(url: &str, cache_dir: &Path, auth: Auth) -> Result<Mirror> {
        let display_url = auth::redact_url(url);
        let local = local_path(url);
        let git_url = match &local {
            Some(p) => p.to_string_lossy().into_owned(),
            None => url.to_owned(),
        };
        if url.starts_with("http://") && auth.token.is_some() {
            tracing::warn!(url = %display_url, "sending a Git token over plain http; use https");
        }
        let lock = cache_lock(cache_dir);
        let recreated = {
            let _guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
            prepare_cache(cache_dir, &display_url)?
        };
        Ok(Mirror {
            inner: Arc::new(Inner {
                url: git_url,
                display_url,
                local,
                path: cache_dir.to_owned(),
                auth,
                pins: Pins::default(),
                timeout: DEFAULT_NETWORK_TIMEOUT,
                lock,
            }),
            max_attempts: DEFAULT_PUBLISH_ATTEMPTS,
            backoff_base: Duration::from_millis(100),
            recreated,
        })
    }

    /// Also trusts the TLS certificates in this PEM file, compared byte for byte
    /// with the server's certificate (for self-signed or private-CA servers
    /// whose CA is not in the system store). The system store still applies.
    pub fn with_pinned_certificates(mut self, pem: &Path) -> Result<Mirror> {
        let pins = Pins::load(pem)?;
        self.map_inner(|i| i.pins = pins);
        Ok(self)
    }

    /// How long a network operation may go without progress before it fails
    /// with [`Error::Timeout`] (default 90 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Mirror {
        self.map_inner(|i| i.timeout = timeout);
        self
    }

    /// Push attempts in [`Mirror::publish`] before giving up (default 5, at least 1).
    pub fn with_publish_attempts(mut self, attempts: u32) -> Mirror {
        self.max_attempts = attempts.max(1);
        self
    }

    /// First back-off delay between publish attempts (doubles each time, with
    /// jitter, capped at 5 s; default 100 ms).
    pub fn with_publish_backoff(mut self, base: Duration) -> Mirror {
        self.backoff_base = base;
        self
    }

    /// True when [`Mirror::open`] found a broken or foreign cache and re-created it.
    pub fn was_recreated(&self) -> bool {
        self.recreated
    }

    /// The remote URL without credentials.
    pub fn display_url(&self) -> &str {
        &self.inner.display_url
    }

    /// The cache directory (a bare repository).
    pub fn cache_dir(&self) -> &Path {
        &self.inner.path
    }

    fn map_inner(&mut self, f: impl FnOnce(&mut Inner)) {
        let mut inner = Inner {
            url: self.inner.url.clone(),
            display_url: self.inner.display_url.clone(),
            local: self.inner.local.clone(),
            path: self.inner.path.clone(),
            auth: self.inner.auth.clone(),
            pins: self.inner.pins.clone(),
            timeout: self.inner.timeout,
            lock: Arc::clone(&self.inner.lock),
        };
        f(&mut inner);
        self.inner = Arc::new(inner);
    }

    /// Held while the cache's refs change (fetch, publish), so threads sharing
    /// a cache do not trip over each other's lock files.
    pub(crate) fn lock(&self) -> MutexGuard<'_, ()> {
        self.inner
            .lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn repo(&self) -> Result<Repository> {
        Repository::open_bare(&self.inner.path).map_err(|e| Error::CacheCorrupt {
            path: self.inner.path.clone(),
            reason: e.message().to_owned(),
        })
    }

    /// Fetches `branch` from the remote; returns the commit SHA it points at (hex).
    /// The cache keeps it as `refs/heads/<branch>` and `refs/remotes/origin/<branch>`,
    /// and `HEAD` follows the branch fetched last (so `HEAD~1` means its parent).
    pub fn fetch(&self, branch: &str) -> Result<String> {
        let _guard = self.lock();
        let oid = self
            .fetch_branch(branch)?
            .ok_or_else(|| Error::BranchNotFound {
                url: self.inner.display_url.clone(),
                branch: branch.to_owned(),
            })?;
        self.repo()?.set_head(&format!("refs/heads/{branch}"))?;
        Ok(oid.to_string())
    }

    /// Fetches `refs/heads/<branch>` and records it; `None` when the remote has no such branch.
    pub(crate) fn fetch_branch(&self, branch: &str) -> Result<Option<Oid>> {
        check_ref_name(&format!("refs/heads/{branch}"), branch)?;
        let oid = self.fetch_ref(&format!("refs/heads/{branch}"))?;
        if let Some(oid) = oid {
            self.record_branch(branch, oid)?;
        }
        Ok(oid)
    }

    pub(crate) fn record_branch(&self, branch: &str, oid: Oid) -> Result<()> {
        let repo = self.repo()?;
        repo.reference(
            &format!("refs/remotes/origin/{branch}"),
            oid,
            true,
            "lifeboat fetch",
        )?;
        repo.reference(&format!("refs/heads/{branch}"), oid, true, "lifeboat fetch")?;
        Ok(())
    }

    /// Fetches one remote ref into a scratch ref of the cache and returns what it
    /// pointed at, or `None` when the remote does not have it.
    fn fetch_ref(&self, remote_ref: &str) -> Result<Option<Oid>> {
        match self.fetch_ref_once(remote_ref) {
            Err(Error::Git(e)) if is_cache_damage(&e) => {
                tracing::warn!(cache = %self.inner.path.display(), error = %e, "git cache damaged, re-creating it");
                reset_cache(&self.inner.path, &self.inner.display_url)?;
                self.fetch_ref_once(remote_ref)
            }
            other => other,
        }
    }

    fn fetch_ref_once(&self, remote_ref: &str) -> Result<Option<Oid>> {
        // Unique per call, so concurrent fetches through one cache do not
        // delete each other's scratch refs.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let scratch = format!(
            "refs/lifeboat/incoming/{}-{n}/{}",
            std::process::id(),
            remote_ref.trim_start_matches("refs/")
        );
        let spec = format!("+{remote_ref}:{scratch}");
        self.run_remote(Access::Read, move |repo, state, watch, inner| {
            let mut remote = repo.remote_anonymous(&inner.url)?;
            let mut fo = FetchOptions::new();
            fo.remote_callbacks(auth::callbacks(&inner.auth, &inner.pins, state, watch));
            fo.download_tags(AutotagOption::None);
            fo.update_fetchhead(false);
            if inner.local.is_none() {
                let mut proxy = ProxyOptions::new();
                proxy.auto();
                fo.proxy_options(proxy);
            }
            remote.fetch(&[spec.as_str()], Some(&mut fo), None)?;
            let oid = repo.refname_to_id(&scratch).ok();
            if let Ok(mut r) = repo.find_reference(&scratch) {
                r.delete()?;
            }
            Ok(oid)
        })
    }

    /// Runs a network operation on a helper thread with its own repository
    /// handle, failing with [`Error::Timeout`] when it shows no progress for
    /// the configured timeout. (libgit2's own socket timeouts can only be set
    /// through `unsafe` global options, which this workspace forbids.) On a
    /// timeout the helper is told to abort at its next callback and is left
    /// to finish on its own.
    pub(crate) fn run_remote<T, F>(&self, access: Access, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Repository, &CallState, &Watch, &Inner) -> Result<T, git2::Error>
            + Send
            + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let watch = Arc::new(Watch::new());
        let (tx, rx) = mpsc::channel();
        {
            let watch = Arc::clone(&watch);
            std::thread::Builder::new()
                .name("lifeboat-git".into())
                .spawn(move || {
                    let out = (|| {
                        let repo = Repository::open_bare(&inner.path).map_err(|e| {
                            Error::CacheCorrupt {
                                path: inner.path.clone(),
                                reason: e.message().to_owned(),
                            }
                        })?;
                        let state = CallState::default();
                        let r = f(&repo, &state, &watch, &inner);
                        r.map_err(|e| classify(&inner, &state, &watch, e, access))
                    })();
                    let _ = tx.send(out);
                })
                .map_err(|e| Error::Io {
                    path: self.inner.path.clone(),
                    source: e,
                })?;
        }
        let timeout = self.inner.timeout;
        let tick = Duration::from_millis(200).min(timeout);
        loop {
            match rx.recv_timeout(tick) {
                Ok(out) => return out,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(Error::Unreachable {
                        url: self.inner.display_url.clone(),
                        reason: "the git worker stopped unexpectedly".into(),
                    });
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let last = Duration::from_millis(watch.last_ms.load(Ordering::Relaxed));
                    if watch.started.elapsed().saturating_sub(last) >= timeout {
                        watch.abort.store(true, Ordering::Relaxed);
                        return Err(Error::Timeout {
                            url: self.inner.display_url.clone(),
                            after: timeout,
                        });
                    }
                }
            }
        }
    }

    /// Resolves a revision (sha, branch, tag, `origin/x`, `HEAD~1`…) in the cache
    /// to a commit SHA, without touching the network.
    pub fn resolve(&self, rev: &str) -> Result<String> {
        Ok(self.resolve_oid(rev)?.to_string())
    }

    /// Like [`Mirror::resolve`], but when `rev` is a plain branch or tag name
    /// (or `origin/<branch>`) it is fetched first, so the answer is current.
    pub fn resolve_remote(&self, rev: &str) -> Result<String> {
        if is_plain_name(rev) {
            let _guard = self.lock();
            let name = rev.strip_prefix("origin/").unwrap_or(rev);
            if self.fetch_branch(name)?.is_none()
                && git2::Reference::is_valid_name(&format!("refs/tags/{name}"))
            {
                let tag_ref = format!("refs/tags/{name}");
                if let Some(oid) = self.fetch_ref(&tag_ref)? {
                    self.repo()?
                        .reference(&tag_ref, oid, true, "lifeboat fetch tag")?;
                }
            }
        }
        self.resolve(rev)
    }

    pub(crate) fn resolve_oid(&self, rev: &str) -> Result<Oid> {
        let repo = self.repo()?;
        let unknown = || Error::UnknownRevision {
            rev: rev.to_owned(),
        };
        let obj = repo.revparse_single(rev).map_err(|_| unknown())?;
        let commit = obj.peel_to_commit().map_err(|_| unknown())?;
        Ok(commit.id())
    }

    /// Writes the tree of commit `sha` (any revision [`Mirror::resolve`] accepts)
    /// into `dir`: the directory is created if needed and emptied first, so no
    /// stale file survives. Only regular and executable files are written;
    /// symbolic links and submodules are skipped (policy repositories do not
    /// need them, and a link could point outside `dir`).
    pub fn checkout(&self, sha: &str, dir: &Path) -> Result<()> {
        let repo = self.repo()?;
        let oid = self.resolve_oid(sha)?;
        let tree = repo.find_commit(oid)?.tree()?;
        empty_dir(dir)?;
        write_tree(&repo, &tree, dir)
    }

    /// Commit metadata for status/plan output.
    pub fn commit_info(&self, sha: &str) -> Result<CommitInfo> {
        let repo = self.repo()?;
        let oid = self.resolve_oid(sha)?;
        let commit = repo.find_commit(oid)?;
        let short = commit
            .as_object()
            .short_id()?
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let author = commit.author();
        Ok(CommitInfo {
            sha: oid.to_string(),
            short,
            summary: commit
                .summary()
                .ok()
                .flatten()
                .unwrap_or_default()
                .to_owned(),
            author: format!(
                "{} <{}>",
                author.name().unwrap_or_default(),
                author.email().unwrap_or_default()
            ),
            time: author.when().seconds(),
            time_offset_minutes: author.when().offset_minutes(),
        })
    }

    /// Files changed between two commits (for `plan --base`), paths relative to
    /// the repository root, sorted, each once. A rename shows as both paths.
    pub fn changed_paths(&self, from: &str, to: &str) -> Result<Vec<String>> {
        let repo = self.repo()?;
        let a = repo.find_commit(self.resolve_oid(from)?)?.tree()?;
        let b = repo.find_commit(self.resolve_oid(to)?)?.tree()?;
        let diff = repo.diff_tree_to_tree(Some(&a), Some(&b), None)?;
        let mut out = Vec::new();
        for delta in diff.deltas() {
            for file in [delta.old_file(), delta.new_file()] {
                if let Some(p) = file.path().and_then(Path::to_str) {
                    out.push(p.to_owned());
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

/// Writes the tree of `rev` of the local repository containing `repo_dir`
/// (a working copy, as `lifeboat plan --base origin/main` runs in CI) into
/// `dir`, as [`Mirror::checkout`] does, and returns the commit SHA. Revisions
/// resolve in that repository, so `HEAD~1` and remote-tracking branches such
/// as `origin/main` mean what they mean to `git` there. Nothing is fetched.
pub fn checkout_local(repo_dir: &Path, rev: &str, dir: &Path) -> Result<String> {
    let repo = Repository::discover(repo_dir).map_err(|e| Error::Unreachable {
        url: repo_dir.display().to_string(),
        reason: format!("not a Git repository: {}", e.message()),
    })?;
    let unknown = || Error::UnknownRevision {
        rev: rev.to_owned(),
    };
    let commit = repo
        .revparse_single(rev)
        .map_err(|_| unknown())?
        .peel_to_commit()
        .map_err(|_| unknown())?;
    let tree = commit.tree()?;
    empty_dir(dir)?;
    write_tree(&repo, &tree, dir)?;
    Ok(commit.id().to_string())
}

fn write_tree(repo: &Repository, tree: &git2::Tree<'_>, dir: &Path) -> Result<()> {
    let mut failure = None;
    tree.walk(TreeWalkMode::PreOrder, |root, entry| {
        let Ok(name) = entry.name() else { return TreeWalkResult::Skip };
        if name.is_empty() || name == "." || name == ".." || name == ".git" || name.contains(['/', '\\']) {
            tracing::warn!(name, "skipping a tree entry with an unsafe name");
            return TreeWalkResult::Skip;
        }
        let path = dir.join(root).join(name);
        let result = match (entry.kind(), entry.filemode()) {
            (Some(ObjectType::Tree), _) => std::fs::create_dir_all(&path),
            (Some(ObjectType::Blob), mode) if mode == 0o100644 || mode == 0o100755 => {
                match entry.to_object(repo).and_then(|o| o.peel_to_blob()) {
                    Ok(blob) => write_file(&path, blob.content(), mode == 0o100755),
                    Err(e) => {
                        failure = Some(Error::Git(e));
                        return TreeWalkResult::Abort;
                    }
                }
            }
            _ => {
                tracing::debug!(path = %path.display(), "skipping symlink or submodule in checkout");
                return TreeWalkResult::Skip;
            }
        };
        match result {
            Ok(()) => TreeWalkResult::Ok,
            Err(source) => {
                failure = Some(Error::Io { path, source });
                TreeWalkResult::Abort
            }
        }
    })?;
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Creates `dir` or removes everything inside it. The directory itself stays,
/// so it may be a mount point.
fn empty_dir(dir: &Path) -> Result<()> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(io(&path))?;
        if kind.is_dir() {
            std::fs::remove_dir_all(&path).map_err(io(&path))?;
        } else {
            std::fs::remove_file(&path).map_err(io(&path))?;
        }
    }
    Ok(())
}

fn write_file(path: &Path, content: &[u8], executable: bool) -> std::io::Result<()> {
    std::fs::write(path, content)?;
    #[cfg(unix)]
    if executable {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    }
    #[cfg(not(unix))]
    let _ = executable;
    Ok(())
}

/// Maps a libgit2 failure of a network operation to words.
fn classify(
    inner: &Inner,
    state: &CallState,
    watch: &Watch,
    e: git2::Error,
    access: Access,
) -> Error {
    let url = inner.display_url.clone();
    if let Some((path, reason)) = state.ssh_key_error.borrow_mut().take() {
        return Error::SshKey { path, reason };
    }
    if let Some(reason) = state.untrusted.borrow_mut().take() {
        return Error::UntrustedHost { url, reason };
    }
    let ssh = inner.url.starts_with("ssh://") || is_scp_like(&inner.url);
    let access = match access {
        Access::Read => "read",
        Access::Write => "write to",
    };
    if state.auth_failed.get() || e.code() == ErrorCode::Auth {
        return Error::AuthRejected {
            url,
            credential: inner.auth.describe(ssh),
            access,
        };
    }
    if e.code() == ErrorCode::Certificate
        || (e.class() == ErrorClass::Ssl && e.message().contains("certificate"))
    {
        return Error::UntrustedHost {
            url,
            reason: format!(
                "{}; if the server uses a private CA or a self-signed certificate, pin it",
                e.message()
            ),
        };
    }
    if watch.abort.load(Ordering::Relaxed) {
        // Aborted by a callback after the waiting side timed out.
        return Error::Timeout {
            url,
            after: inner.timeout,
        };
    }
    let remote_side = matches!(
        e.class(),
        ErrorClass::Net | ErrorClass::Http | ErrorClass::Ssh | ErrorClass::Ssl | ErrorClass::Os
    ) || (inner.local.is_some()
        && matches!(e.class(), ErrorClass::Repository | ErrorClass::Odb));
    if remote_side {
        let reason = scrub(e.message(), &inner.auth);
        return Error::Unreachable { url, reason };
    }
    Error::Git(e)
}

/// Makes sure libgit2's message cannot leak the token (it never should).
fn scrub(message: &str, auth: &Auth) -> String {
    match &auth.token {
        Some(t) if !t.is_empty() => message.replace(t.as_str(), "<redacted>"),
        _ => message.to_owned(),
    }
}

fn is_cache_damage(e: &git2::Error) -> bool {
    matches!(
        e.class(),
        ErrorClass::Odb | ErrorClass::Zlib | ErrorClass::Object | ErrorClass::Index
    ) && e.code() != ErrorCode::NotFound
}

fn check_ref_name(full: &str, name: &str) -> Result<()> {
    if git2::Reference::is_valid_name(full) {
        Ok(())
    } else {
        Err(Error::InvalidBranch {
            name: name.to_owned(),
        })
    }
}

fn is_plain_name(rev: &str) -> bool {
    let looks_like_sha =
        (7..=40).contains(&rev.len()) && rev.bytes().all(|b| b.is_ascii_hexdigit());
    let special = rev.is_empty() || rev == "HEAD" || rev.contains(['~', '^', ':', '@', ' ']);
    !(looks_like_sha || special)
}

fn is_scp_like(url: &str) -> bool {
    !url.contains("://")
        && url
            .split_once(':')
            .is_some_and(|(host, _)| !host.is_empty() && !host.contains('/'))
        && !Path::new(url).exists()
}

/// The local repository path when `url` names one (file:// or a plain path).
fn local_path(url: &str) -> Option<PathBuf> {
    if let Some(rest) = url.strip_prefix("file://") {
        let path = url::Url::parse(url)
            .ok()
            .and_then(|u| u.to_file_path().ok())
            .unwrap_or_else(|| rest.into());
        return Some(path);
    }
    if url.contains("://") || is_scp_like(url) {
        return None;
    }
    let path = PathBuf::from(url);
    Some(std::path::absolute(&path).unwrap_or(path))
}

/// The in-process lock of a cache directory, shared by every `Mirror` on it.
fn cache_lock(dir: &Path) -> Arc<Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>> = OnceLock::new();
    let key = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
    let mut map = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    Arc::clone(map.entry(key).or_default())
}

/// Removes lock files left by a process that died mid-operation; they would
/// make every later fetch fail. Only safe because a cache belongs to one
/// process (see the crate docs) and we hold its in-process lock.
fn remove_stale_locks(dir: &Path) {
    fn walk(dir: &Path, depth: u32) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() && depth > 0 {
                walk(&path, depth - 1);
            } else if kind.is_file() && path.extension().is_some_and(|e| e == "lock") {
                tracing::warn!(file = %path.display(), "removing a stale lock file from the git cache");
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    for name in [
        "shallow.lock",
        "packed-refs.lock",
        "config.lock",
        "HEAD.lock",
        "index.lock",
    ] {
        let p = dir.join(name);
        if p.is_file() {
            tracing::warn!(file = %p.display(), "removing a stale lock file from the git cache");
            let _ = std::fs::remove_file(p);
        }
    }
    walk(&dir.join("refs"), 8);
}

/// Opens the cache, creating or re-creating it as needed. Returns whether it was re-created.
fn prepare_cache(dir: &Path, display_url: &str) -> Result<bool> {
    let empty = match std::fs::read_dir(dir) {
        Ok(mut it) => it.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => {
            return Err(Error::CacheCorrupt {
                path: dir.to_owned(),
                reason: e.to_string(),
            });
        }
    };
    if empty {
        init_cache(dir, display_url)?;
        return Ok(false);
    }
    let problem = match Repository::open_bare(dir) {
        Ok(repo) => {
            let recorded = repo.config().and_then(|c| c.get_string(URL_KEY)).ok();
            match recorded {
                Some(u) if u == display_url => {
                    remove_stale_locks(dir);
                    return Ok(false);
                }
                Some(u) => format!("it caches another remote ({u})"),
                None => "it was not made by lifeboat".to_owned(),
            }
        }
        Err(e) => e.message().to_owned(),
    };
    let looks_like_git = ["HEAD", "objects", "refs", "config"]
        .iter()
        .any(|n| dir.join(n).exists());
    if !looks_like_git {
        return Err(Error::CacheCorrupt {
            path: dir.to_owned(),
            reason: problem,
        });
    }
    tracing::warn!(cache = %dir.display(), reason = %problem, "re-creating the git cache");
    reset_cache(dir, display_url)?;
    Ok(true)
}

fn reset_cache(dir: &Path, display_url: &str) -> Result<()> {
    std::fs::remove_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_owned(),
        source,
    })?;
    init_cache(dir, display_url)
}

fn init_cache(dir: &Path, display_url: &str) -> Result<()> {
    let mut opts = RepositoryInitOptions::new();
    opts.bare(true).mkpath(true);
    let repo = Repository::init_opts(dir, &opts).map_err(|e| Error::CacheCorrupt {
        path: dir.to_owned(),
        reason: e.message().to_owned(),
    })?;
    repo.config()?.set_str(URL_KEY, display_url)?;
    Ok(())
}
