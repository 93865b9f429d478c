//! Writing a snapshot's tree back to a directory (or one file to a device).
//!
//! rustic's own restore writes sparse files fully allocated, panics on read
//! errors (`unwrap` in its worker threads) and keeps its metadata helpers
//! private, so lifeboat restores by itself:
//!
//! ```text
//! ls (tree walk) ─▶ dirs created, files queued ─▶ N workers: for each blob
//!                                                  read (decrypt, check) and
//!                                                  write only non-zero pages
//!               ─▶ links, fifos, devices ─▶ owners, modes, xattrs, times
//!                                           (directories last, deepest first)
//! ```
//!
//! Sparse files: each file is first extended to its length with `set_len`
//! (a hole), then only the 4 KiB pages of a blob that are not all zero are
//! written, so zero runs stay holes in the restored file. A device target is
//! written in full (its old content is not known to be zero).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rustic_core::repofile::{BlobType, Node, NodeType};
use rustic_core::{DataId, IndexedFull, Repository};

use crate::backend::Control;
use crate::error::{Result, VolumeError};

/// Size of the pages checked for zeros when writing sparsely.
const PAGE: usize = 4096;

/// Counters of a restore in progress.
#[derive(Debug, Default)]
pub struct RestoreProgress {
    pub files_total: AtomicU64,
    pub bytes_total: AtomicU64,
    pub files_done: AtomicU64,
    pub bytes_done: AtomicU64,
    pub warnings: Mutex<Vec<String>>,
}

impl RestoreProgress {
    fn warn(&self, msg: String) {
        self.warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(msg);
    }
}

/// How file contents are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// A directory tree (files sparse).
    Tree,
    /// One file or device (`sparse` false for devices).
    Single { sparse: bool },
}

/// Restores `node` (a directory or one file) of the snapshot to `dest`.
pub(crate) fn restore_node<S: IndexedFull + Sync>(
    repo: &Repository<S>,
    node: &Node,
    dest: &Path,
    target: Target,
    progress: &RestoreProgress,
    control: &Control,
) -> Result<()> {
    if let Target::Single { sparse } = target {
        if node.node_type != NodeType::File {
            return Err(VolumeError::Invalid(format!(
                "the snapshot path is a {}, not a file; restore it to a directory",
                node.node_type
            )));
        }
        progress.files_total.store(1, Ordering::Relaxed);
        progress
            .bytes_total
            .store(node.meta.size, Ordering::Relaxed);
        let is_device = std::fs::metadata(dest)
            .map(|m| std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()))
            .unwrap_or(false);
        let file = OpenOptions::new()
            .write(true)
            .create(!is_device)
            .truncate(false)
            .open(dest)
            .map_err(|source| VolumeError::Destination {
                path: dest.into(),
                source,
            })?;
        if is_device {
            let size =
                crate::source::device_size(dest).map_err(|source| VolumeError::Destination {
                    path: dest.into(),
                    source,
                })?;
            if size < node.meta.size {
                return Err(VolumeError::Invalid(format!(
                    "the device {} holds {size} bytes, the snapshot {}; use a device at least as large",
                    dest.display(),
                    node.meta.size
                )));
            }
        } else {
            file.set_len(0)
                .and_then(|()| file.set_len(node.meta.size))
                .map_err(|source| VolumeError::Destination {
                    path: dest.into(),
                    source,
                })?;
        }
        write_contents(
            repo,
            node,
            &file,
            dest,
            sparse && !is_device,
            progress,
            control,
        )?;
        file.sync_all().map_err(|source| VolumeError::Destination {
            path: dest.into(),
            source,
        })?;
        progress.files_done.store(1, Ordering::Relaxed);
        return Ok(());
    }

    if node.node_type != NodeType::Dir {
        return Err(VolumeError::Invalid(format!(
            "the snapshot path is a {}, not a directory; give the path of a directory or restore \
             the file into a directory",
            node.node_type
        )));
    }
    std::fs::create_dir_all(dest).map_err(|source| VolumeError::Destination {
        path: dest.into(),
        source,
    })?;

    let mut opts = rustic_core::LsOptions::default();
    opts.recursive = true;
    let entries = repo
        .ls(node, &opts)
        .map_err(|e| unreadable("cannot read the snapshot's tree".into(), &e))?;
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    let mut others = Vec::new();
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut hardlinks = Vec::new();
    for entry in entries {
        let (rel, n) =
            entry.map_err(|e| unreadable("cannot read the snapshot's tree".into(), &e))?;
        let path = dest.join(&rel);
        match n.node_type {
            NodeType::Dir => {
                mkdir(&path)?;
                dirs.push((path, n));
            }
            NodeType::File => {
                if n.meta.links > 1 && n.meta.inode != 0 {
                    let key = (n.meta.device_id, n.meta.inode);
                    if let Some(first) = links.get(&key) {
                        hardlinks.push((first.clone(), path));
                        continue;
                    }
                    links.insert(key, path.clone());
                }
                progress.files_total.fetch_add(1, Ordering::Relaxed);
                progress
                    .bytes_total
                    .fetch_add(n.meta.size, Ordering::Relaxed);
                files.push((path, n));
            }
            _ => others.push((path, n)),
        }
    }

    // File contents, in parallel.
    let queue = Mutex::new(files.iter());
    let failure: Mutex<Option<VolumeError>> = Mutex::new(None);
    let workers = std::thread::available_parallelism()
        .map(|n| n.get() * 2)
        .unwrap_or(4)
        .clamp(4, 16);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    if control.is_cancelled()
                        || failure.lock().unwrap_or_else(|e| e.into_inner()).is_some()
                    {
                        return;
                    }
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                    let Some((path, n)) = next else { return };
                    if let Err(e) = restore_file(repo, n, path, progress, control) {
                        let mut f = failure.lock().unwrap_or_else(|e| e.into_inner());
                        if f.is_none() {
                            *f = Some(e);
                        }
                        return;
                    }
                    progress.files_done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    if control.is_cancelled() {
        return Err(VolumeError::Cancelled);
    }

    for (first, path) in &hardlinks {
        remove_existing(path);
        std::fs::hard_link(first, path).map_err(|source| VolumeError::Destination {
            path: path.clone(),
            source,
        })?;
    }
    for (path, n) in &others {
        create_special(path, n, progress)?;
    }
    for (path, n) in files.iter().chain(others.iter()) {
        set_metadata(path, n, progress);
    }
    // Directories last and deepest first, so writing into them does not
    // change their times and a read-only directory is filled before.
    dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (path, n) in &dirs {
        set_metadata(path, n, progress);
    }
    set_metadata(dest, node, progress);
    Ok(())
}

fn mkdir(path: &Path) -> Result<()> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(source) => Err(VolumeError::Destination {
            path: path.into(),
            source,
        }),
    }
}

fn remove_existing(path: &Path) {
    if std::fs::symlink_metadata(path).is_ok_and(|m| !m.is_dir()) {
        let _ = std::fs::remove_file(path);
    }
}

fn restore_file<S: IndexedFull>(
    repo: &Repository<S>,
    node: &Node,
    path: &Path,
    progress: &RestoreProgress,
    control: &Control,
) -> Result<()> {
    remove_existing(path);
    let file = File::create(path).map_err(|source| VolumeError::Destination {
        path: path.into(),
        source,
    })?;
    file.set_len(node.meta.size)
        .map_err(|source| VolumeError::Destination {
            path: path.into(),
            source,
        })?;
    write_contents(repo, node, &file, path, true, progress, control)
}

fn write_contents<S: IndexedFull>(
    repo: &Repository<S>,
    node: &Node,
    file: &File,
    path: &Path,
    sparse: bool,
    progress: &RestoreProgress,
    control: &Control,
) -> Result<()> {
    let mut offset = 0u64;
    for id in node.content.iter().flatten() {
        if control.is_cancelled() {
            return Err(VolumeError::Cancelled);
        }
        let data = read_blob(repo, *id, path)?;
        write_at(file, &data, offset, sparse).map_err(|source| VolumeError::Destination {
            path: path.into(),
            source,
        })?;
        offset += data.len() as u64;
        progress
            .bytes_done
            .fetch_add(data.len() as u64, Ordering::Relaxed);
    }
    if offset != node.meta.size {
        return Err(VolumeError::Rustic {
            context: format!("restoring {}", path.display()),
            message: format!(
                "the snapshot lists {} bytes but its content has {offset}; run `lifeboat volumes \
                 check --read-data`",
                node.meta.size
            ),
        });
    }
    Ok(())
}

fn read_blob<S: IndexedFull>(
    repo: &Repository<S>,
    id: DataId,
    path: &Path,
) -> Result<bytes::Bytes> {
    repo.get_blob_cached(&id.into(), BlobType::Data)
        .map_err(|e| unreadable(format!("cannot read the content of {}", path.display()), &e))
}

/// A read from the repository failed: a damaged or missing pack, or the
/// storage. Says how to find out which.
pub(crate) fn unreadable(what: String, e: &rustic_core::RusticError) -> VolumeError {
    VolumeError::rustic(
        format!(
            "{what} (if the storage is reachable, the repository is damaged: \
             `lifeboat volumes check --read-data` lists what)"
        ),
        e,
    )
}

/// Writes `data` at `offset`; when `sparse`, skips the all-zero pages.
fn write_at(file: &File, data: &[u8], offset: u64, sparse: bool) -> std::io::Result<()> {
    if !sparse {
        return file.write_all_at(data, offset);
    }
    let mut start: Option<usize> = None;
    let mut pos = 0;
    while pos < data.len() {
        let end = (pos + PAGE).min(data.len());
        let zero = data[pos..end].iter().all(|&b| b == 0);
        match (zero, start) {
            (false, None) => start = Some(pos),
            (true, Some(s)) => {
                file.write_all_at(&data[s..pos], offset + s as u64)?;
                start = None;
            }
            _ => {}
        }
        pos = end;
    }
    if let Some(s) = start {
        file.write_all_at(&data[s..], offset + s as u64)?;
    }
    Ok(())
}

fn create_special(path: &Path, node: &Node, progress: &RestoreProgress) -> Result<()> {
    use nix::sys::stat::{Mode, SFlag, mknod};
    remove_existing(path);
    let perm = Mode::from_bits_truncate(node.meta.mode.unwrap_or(0o644) & 0o777);
    let result = match &node.node_type {
        NodeType::Symlink { .. } => std::os::unix::fs::symlink(node.node_type.to_link(), path),
        NodeType::Fifo => nix::unistd::mkfifo(path, perm).map_err(std::io::Error::from),
        NodeType::Dev { device } => {
            mknod(path, SFlag::S_IFBLK, perm, *device).map_err(std::io::Error::from)
        }
        NodeType::Chardev { device } => {
            mknod(path, SFlag::S_IFCHR, perm, *device).map_err(std::io::Error::from)
        }
        NodeType::Socket => {
            // A socket cannot be restored meaningfully (restic skips it too).
            return Ok(());
        }
        NodeType::File | NodeType::Dir => Ok(()),
    };
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            progress.warn(format!(
                "{}: cannot create a {} without privileges ({e}); skipped",
                path.display(),
                node.node_type
            ));
            Ok(())
        }
        Err(source) => Err(VolumeError::Destination {
            path: path.into(),
            source,
        }),
    }
}

/// Owner, mode, xattrs and times; failures are warnings (an unprivileged
/// restore cannot set owners, as with restic).
fn set_metadata(path: &Path, node: &Node, progress: &RestoreProgress) {
    let is_link = matches!(node.node_type, NodeType::Symlink { .. });
    if path.symlink_metadata().is_err() {
        return;
    }
    let root = nix::unistd::geteuid().is_root();
    if node.meta.uid.is_some() || node.meta.gid.is_some() {
        let r = std::os::unix::fs::lchown(path, node.meta.uid, node.meta.gid);
        if let Err(e) = r
            && root
        {
            progress.warn(format!("{}: cannot set the owner ({e})", path.display()));
        }
    }
    if !is_link && let Some(mode) = node.meta.mode {
        let perm = unix_mode(mode);
        if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(perm)) {
            progress.warn(format!("{}: cannot set the mode ({e})", path.display()));
        }
    }
    for xattr in &node.meta.extended_attributes {
        if let Some(value) = &xattr.value {
            let r = if is_link {
                Ok(())
            } else {
                xattr::set(path, &xattr.name, value)
            };
            if let Err(e) = r {
                progress.warn(format!(
                    "{}: cannot set the extended attribute {} ({e})",
                    path.display(),
                    xattr.name
                ));
            }
        }
    }
    if let Some(mtime) = node.meta.mtime {
        let mtime = filetime::FileTime::from_unix_time(
            mtime.as_second(),
            mtime.subsec_nanosecond().max(0) as u32,
        );
        let atime = node
            .meta
            .atime
            .map(|a| {
                filetime::FileTime::from_unix_time(
                    a.as_second(),
                    a.subsec_nanosecond().max(0) as u32,
                )
            })
            .unwrap_or(mtime);
        // utimensat without following links: never opens the file (a fifo
        // would block) and sets a symlink's own times.
        let r = filetime::set_symlink_file_times(path, atime, mtime);
        if let Err(e) = r {
            progress.warn(format!("{}: cannot set the times ({e})", path.display()));
        }
    }
}

/// restic stores Go's `os.FileMode`; the permission bits plus setuid,
/// setgid and sticky.
fn unix_mode(go: u32) -> u32 {
    let mut mode = go & 0o777;
    if go & (1 << 23) != 0 {
        mode |= 0o4000;
    }
    if go & (1 << 22) != 0 {
        mode |= 0o2000;
    }
    if go & (1 << 20) != 0 {
        mode |= 0o1000;
    }
    mode
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_modes_map_to_unix() {
        assert_eq!(unix_mode(0o755), 0o755);
        assert_eq!(unix_mode((1 << 31) | (1 << 20) | 0o777), 0o1777);
        assert_eq!(unix_mode((1 << 23) | (1 << 22) | 0o750), 0o6750);
    }

    #[test]
    fn sparse_writes_skip_zero_pages() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("f");
        let file = File::create(&path)?;
        let size = 64 * PAGE;
        file.set_len(size as u64)?;
        let mut data = vec![0u8; size];
        data[10 * PAGE + 7] = 1;
        write_at(&file, &data, 0, true)?;
        let back = std::fs::read(&path)?;
        assert_eq!(back, data);
        Ok(())
    }
}
