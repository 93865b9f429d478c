//! Status write-back: replace one directory of one branch, commit, push, and
//! retry on top of the new tip when another writer got there first.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use git2::{
    ErrorCode, ObjectType, Oid, PushOptions, Repository, Signature, Tree, TreeWalkMode,
    TreeWalkResult,
};

use crate::auth;
use crate::error::{Error, Result};
use crate::mirror::{Access, Mirror};

/// `same(path, old, new)`: true when the difference between two versions of a
/// status file does not matter (e.g. only timestamps moved).
pub type SameFn<'a> = dyn Fn(&str, &[u8], &[u8]) -> bool + 'a;

/// The default status branch.
pub const DEFAULT_STATUS_BRANCH: &str = "lifeboat-status";
/// Author and committer of status commits.
pub const BOT_NAME: &str = "lifeboat";
/// Author and committer e-mail of status commits.
pub const BOT_EMAIL: &str = "lifeboat@localhost";
const SKIP_CI: &str = "[skip ci]";

/// Where status files go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusTarget {
    /// Branch to commit to (default `lifeboat-status`). May be the policy branch itself.
    pub branch: String,
    /// Directory inside the branch that this writer owns, e.g. `clusters/prod-east`.
    /// Everything under it is replaced on each publish; nothing outside is touched.
    pub path: String,
}

impl StatusTarget {
    /// The default target of a cluster: branch `lifeboat-status`, path `clusters/<cluster>`.
    pub fn for_cluster(cluster: &str) -> StatusTarget {
        StatusTarget {
            branch: DEFAULT_STATUS_BRANCH.to_owned(),
            path: format!("clusters/{cluster}"),
        }
    }
}

/// The commit to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCommit {
    /// The caller's message; `[skip ci]` is appended as its own paragraph when missing.
    pub message: String,
}

/// What [`Mirror::publish`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// A commit landed on the remote branch.
    Committed {
        /// The new commit.
        sha: String,
        /// Push attempts it took (1 when nobody else wrote in between).
        attempts: u32,
    },
    /// Nothing that matters changed; nothing was committed or pushed.
    Unchanged,
}

/// Outcome of one push attempt.
enum Push {
    Landed,
    /// The branch moved under us; try again on the new tip.
    Moved(String),
}

impl Mirror {
    /// Replaces everything under `target.path` on `target.branch` with `files`
    /// (paths relative to `target.path`, `/`-separated), commits as
    /// `lifeboat <lifeboat@localhost>` and pushes.
    ///
    /// * A missing branch is created as an orphan holding only the status
    ///   files. An existing branch — including the policy branch itself — gets
    ///   a commit on top of its tip, with everything outside `target.path` kept.
    /// * `same(path, old, new)` is asked about each file whose bytes changed;
    ///   when it says the difference does not matter (e.g. only timestamps) and
    ///   no file is added or removed, nothing is committed: [`Published::Unchanged`].
    ///   When something else changed, every file is written with its new bytes.
    /// * A push rejected because the branch moved is retried: fetch, re-apply
    ///   the files on the new tip (writers own disjoint paths, so this never
    ///   loses another writer's work), back off exponentially with jitter, up
    ///   to the configured attempts ([`Mirror::with_publish_attempts`], default 5).
    ///   The comparison with `same` is made again on each new tip.
    ///
    /// For remotes on this machine the ref is updated with a compare-and-swap
    /// under Git's lock file, so concurrent writers are safe there too.
    pub fn publish(
        &self,
        target: &StatusTarget,
        files: &BTreeMap<String, Vec<u8>>,
        commit: &StatusCommit,
        same: &SameFn<'_>,
    ) -> Result<Published> {
        let dir = split_path(&target.path, "the status path")?;
        if dir.is_empty() {
            return Err(Error::InvalidPath {
                path: target.path.clone(),
                reason: "the status path must name a directory; the branch root would replace everything".into(),
            });
        }
        for name in files.keys() {
            split_path(name, "a status file name")?;
        }
        let message = with_skip_ci(&commit.message);
        let mut last_reason = String::new();
        for attempt in 1..=self.max_attempts {
            if attempt > 1 {
                std::thread::sleep(backoff(self.backoff_base, attempt - 1));
            }
            // One writer per cache at a time; not held while backing off.
            let guard = self.lock();
            let tip = self.fetch_branch(&target.branch)?;
            let Some(new) = self.prepare_commit(tip, &dir, &target.path, files, &message, same)?
            else {
                return Ok(Published::Unchanged);
            };
            let outcome = match &self.inner.local {
                Some(path) => self.push_local(path, &target.branch, tip, new)?,
                None => self.push_remote(&target.branch, new)?,
            };
            if matches!(outcome, Push::Landed) {
                self.record_branch(&target.branch, new)?;
            }
            drop(guard);
            match outcome {
                Push::Landed => {
                    tracing::info!(branch = %target.branch, path = %target.path, sha = %new, attempt, "status published");
                    return Ok(Published::Committed {
                        sha: new.to_string(),
                        attempts: attempt,
                    });
                }
                Push::Moved(reason) => {
                    tracing::debug!(branch = %target.branch, attempt, %reason, "status push lost a race, retrying");
                    last_reason = reason;
                }
            }
        }
        Err(Error::PushRejected {
            url: self.inner.display_url.clone(),
            branch: target.branch.clone(),
            attempts: self.max_attempts,
            reason: last_reason,
        })
    }

    /// Builds the status commit on top of `tip` (or as an orphan); `None`
    /// when it would change nothing that matters.
    fn prepare_commit(
        &self,
        tip: Option<Oid>,
        dir: &[&str],
        dir_str: &str,
        files: &BTreeMap<String, Vec<u8>>,
        message: &str,
        same: &SameFn<'_>,
    ) -> Result<Option<Oid>> {
        let repo = self.repo()?;
        let parent = match tip {
            Some(oid) => Some(repo.find_commit(oid)?),
            None => None,
        };
        let base = match &parent {
            Some(c) => Some(c.tree()?),
            None => None,
        };
        if !differs(&repo, base.as_ref(), dir_str, files, same)? {
            return Ok(None);
        }
        let sub = build_tree(&repo, files)?;
        let root = replace_at(&repo, base.as_ref(), dir, sub)?;
        if base.as_ref().is_some_and(|t| t.id() == root) {
            return Ok(None);
        }
        let sig = Signature::now(BOT_NAME, BOT_EMAIL)?;
        let tree = repo.find_tree(root)?;
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        Ok(Some(
            repo.commit(None, &sig, &sig, message, &tree, &parents)?,
        ))
    }

    /// Pushes over the network. libgit2 refuses locally when the advertised tip
    /// is not an ancestor of ours; the server refuses when the ref changed
    /// between advertisement and update. Both mean "moved".
    fn push_remote(&self, branch: &str, new: Oid) -> Result<Push> {
        let spec = format!("{new}:refs/heads/{branch}");
        let branch_owned = branch.to_owned();
        let result = self.run_remote(Access::Write, move |repo, state, watch, inner| {
            let mut remote = repo.remote_anonymous(&inner.url)?;
            let mut po = PushOptions::new();
            po.remote_callbacks(auth::callbacks(&inner.auth, &inner.pins, state, watch));
            let mut proxy = git2::ProxyOptions::new();
            proxy.auto();
            po.proxy_options(proxy);
            match remote.push(&[spec.as_str()], Some(&mut po)) {
                Ok(()) => {}
                Err(e) if e.code() == ErrorCode::NotFastForward => {
                    return Ok(Err(e.message().to_owned()));
                }
                Err(e) => return Err(e),
            }
            let rejections = state.push_rejections.borrow();
            Ok(match rejections.first() {
                Some(r) => Err(r.clone()),
                None => Ok(()),
            })
        })?;
        match result {
            Ok(()) => Ok(Push::Landed),
            Err(reason) if is_race(&reason) => Ok(Push::Moved(reason)),
            Err(reason) => Err(Error::PushRefused {
                url: self.inner.display_url.clone(),
                branch: branch_owned,
                reason,
            }),
        }
    }

    /// Pushes into a repository on this machine: copies the new objects, then
    /// moves the branch only if it still points where we started
    /// (libgit2's local transport would overwrite a concurrent update).
    fn push_local(
        &self,
        remote_path: &Path,
        branch: &str,
        tip: Option<Oid>,
        new: Oid,
    ) -> Result<Push> {
        let unreachable = |e: git2::Error| Error::Unreachable {
            url: self.inner.display_url.clone(),
            reason: e.message().to_owned(),
        };
        let remote = Repository::open(remote_path).map_err(unreachable)?;
        let local = self.repo()?;
        let (src, dst) = (local.odb()?, remote.odb()?);
        let commit = local.find_commit(new)?;
        for parent in commit.parent_ids() {
            if !dst.exists(parent) {
                return Ok(Push::Moved(
                    "the remote no longer has the parent commit".into(),
                ));
            }
        }
        copy_tree(&local, &src, &dst, commit.tree_id())?;
        let obj = src.read(new)?;
        dst.write(obj.kind(), obj.data())?;
        let refname = format!("refs/heads/{branch}");
        let msg = "lifeboat status";
        let result = match tip {
            Some(old) => remote.reference_matching(&refname, new, true, old, msg),
            None => remote.reference(&refname, new, false, msg),
        };
        match result {
            Ok(_) => Ok(Push::Landed),
            Err(e)
                if matches!(
                    e.code(),
                    ErrorCode::Modified | ErrorCode::Exists | ErrorCode::Locked
                ) =>
            {
                Ok(Push::Moved(e.message().to_owned()))
            }
            Err(e) => Err(Error::PushRefused {
                url: self.inner.display_url.clone(),
                branch: branch.to_owned(),
                reason: e.message().to_owned(),
            }),
        }
    }
}

/// Copies a tree and everything under it that the destination lacks.
fn copy_tree(
    local: &Repository,
    src: &git2::Odb<'_>,
    dst: &git2::Odb<'_>,
    tree: Oid,
) -> Result<()> {
    if dst.exists(tree) {
        return Ok(());
    }
    for entry in local.find_tree(tree)?.iter() {
        match entry.kind() {
            Some(ObjectType::Tree) => copy_tree(local, src, dst, entry.id())?,
            Some(ObjectType::Blob) if !dst.exists(entry.id()) => {
                let obj = src.read(entry.id())?;
                dst.write(obj.kind(), obj.data())?;
            }
            _ => {}
        }
    }
    let obj = src.read(tree)?;
    dst.write(obj.kind(), obj.data())?;
    Ok(())
}

/// Server rejections that mean another writer moved the branch.
fn is_race(reason: &str) -> bool {
    let r = reason.to_ascii_lowercase();
    [
        "non-fast-forward",
        "fetch first",
        "stale",
        "failed to lock",
        "cannot lock",
        "failed to update",
        "not present locally",
        "fastforward",
    ]
    .iter()
    .any(|k| r.contains(k))
}

fn backoff(base: Duration, retry: u32) -> Duration {
    let exp = base
        .saturating_mul(1u32 << retry.min(10))
        .min(Duration::from_secs(5));
    // Jitter in [50%, 150%) so writers that collided spread out.
    exp.mul_f64(0.5 + fastrand::f64())
}

fn with_skip_ci(message: &str) -> String {
    let message = message.trim_end();
    if message.contains(SKIP_CI) {
        format!("{message}\n")
    } else if message.is_empty() {
        format!("lifeboat status {SKIP_CI}\n")
    } else {
        format!("{message}\n\n{SKIP_CI}\n")
    }
}

/// Splits a `/`-separated path into components, refusing anything Git or a
/// checkout could misread.
fn split_path<'p>(path: &'p str, what: &str) -> Result<Vec<&'p str>> {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    let parts: Vec<&str> = trimmed.split('/').collect();
    for part in &parts {
        if part.is_empty()
            || *part == "."
            || *part == ".."
            || part.eq_ignore_ascii_case(".git")
            || part.contains(['\\', '\0'])
        {
            return Err(Error::InvalidPath {
                path: path.to_owned(),
                reason: format!(
                    "{what} may not contain empty, `.`, `..`, `.git` or backslash components"
                ),
            });
        }
    }
    Ok(parts)
}

/// True when publishing `files` would change something that matters.
fn differs(
    repo: &Repository,
    base: Option<&Tree<'_>>,
    dir: &str,
    files: &BTreeMap<String, Vec<u8>>,
    same: &SameFn<'_>,
) -> Result<bool> {
    let old = existing_files(repo, base, dir)?;
    if old.keys().any(|k| !files.contains_key(k)) {
        return Ok(true);
    }
    for (name, new) in files {
        match old.get(name) {
            None => return Ok(true),
            Some(old) if old != new && !same(name, old, new) => return Ok(true),
            Some(_) => {}
        }
    }
    Ok(false)
}

/// The files currently under `dir` of `base`, relative to `dir`.
fn existing_files(
    repo: &Repository,
    base: Option<&Tree<'_>>,
    dir: &str,
) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let Some(base) = base else { return Ok(out) };
    let entry = match base.get_path(Path::new(dir.trim_matches('/'))) {
        Ok(e) => e,
        Err(e) if e.code() == ErrorCode::NotFound => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    if entry.kind() != Some(ObjectType::Tree) {
        // A file where our directory should be: replacing it is a change.
        out.insert(String::new(), Vec::new());
        return Ok(out);
    }
    let tree = repo.find_tree(entry.id())?;
    let mut failure = None;
    tree.walk(TreeWalkMode::PreOrder, |root, e| {
        if e.kind() == Some(ObjectType::Blob) {
            match repo.find_blob(e.id()) {
                Ok(blob) => {
                    out.insert(
                        format!("{root}{}", e.name().unwrap_or_default()),
                        blob.content().to_vec(),
                    );
                }
                Err(err) => {
                    failure = Some(err);
                    return TreeWalkResult::Abort;
                }
            }
        }
        TreeWalkResult::Ok
    })?;
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(out),
    }
}

enum Node {
    File(Oid),
    Dir(BTreeMap<String, Node>),
}

/// Writes `files` as a tree; `None` when there are none.
fn build_tree(repo: &Repository, files: &BTreeMap<String, Vec<u8>>) -> Result<Option<Oid>> {
    if files.is_empty() {
        return Ok(None);
    }
    let mut root = BTreeMap::new();
    for (name, content) in files {
        let parts = split_path(name, "a status file name")?;
        let blob = repo.blob(content)?;
        let conflict = || Error::InvalidPath {
            path: name.clone(),
            reason: "a file and a directory have the same name".into(),
        };
        let mut level = &mut root;
        let (last, dirs) = parts.split_last().ok_or_else(conflict)?;
        for d in dirs {
            let node = level
                .entry((*d).to_owned())
                .or_insert_with(|| Node::Dir(BTreeMap::new()));
            level = match node {
                Node::Dir(m) => m,
                Node::File(_) => return Err(conflict()),
            };
        }
        if level.insert((*last).to_owned(), Node::File(blob)).is_some() {
            return Err(conflict());
        }
    }
    Ok(Some(write_node(repo, &root)?))
}

fn write_node(repo: &Repository, dir: &BTreeMap<String, Node>) -> Result<Oid> {
    let mut tb = repo.treebuilder(None)?;
    for (name, node) in dir {
        match node {
            Node::File(oid) => tb.insert(name, *oid, 0o100644)?,
            Node::Dir(children) => tb.insert(name, write_node(repo, children)?, 0o040000)?,
        };
    }
    Ok(tb.write()?)
}

/// Returns the id of `base` with the entry at `path` replaced by `subtree`
/// (removed when `None`), creating intermediate directories as needed.
fn replace_at(
    repo: &Repository,
    base: Option<&Tree<'_>>,
    path: &[&str],
    subtree: Option<Oid>,
) -> Result<Oid> {
    let mut tb = repo.treebuilder(base)?;
    let (first, rest) = path.split_first().expect("callers pass a non-empty path");
    let new_entry = if rest.is_empty() {
        subtree
    } else {
        let child = match base.and_then(|t| t.get_name(first)) {
            Some(e) if e.kind() == Some(ObjectType::Tree) => Some(repo.find_tree(e.id())?),
            _ => None,
        };
        let id = replace_at(repo, child.as_ref(), rest, subtree)?;
        let empty = repo.find_tree(id)?.is_empty();
        (!empty).then_some(id)
    };
    match new_entry {
        Some(id) => {
            tb.insert(first, id, 0o040000)?;
        }
        None => {
            if tb.get(first)?.is_some() {
                tb.remove(first)?;
            }
        }
    }
    Ok(tb.write()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_ci_is_appended_once() {
        assert_eq!(with_skip_ci("status: prod"), "status: prod\n\n[skip ci]\n");
        assert_eq!(with_skip_ci("status [skip ci]"), "status [skip ci]\n");
    }

    #[test]
    fn paths_are_checked() {
        assert_eq!(
            split_path("clusters/prod/", "p").unwrap(),
            vec!["clusters", "prod"]
        );
        assert!(split_path("a/../b", "p").is_err());
        assert!(split_path("a/.git/b", "p").is_err());
        assert!(split_path("a//b", "p").is_err());
    }

    #[test]
    fn races_are_recognised() {
        assert!(is_race("refs/heads/x: failed to update ref"));
        assert!(is_race("cannot push non-fastforwardable reference"));
        assert!(!is_race("pre-receive hook declined"));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Duration::from_millis(100);
        assert!(backoff(b, 1) >= Duration::from_millis(100));
        assert!(backoff(b, 30) <= Duration::from_millis(7500));
    }
}
