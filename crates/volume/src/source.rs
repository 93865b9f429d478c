//! What a backup reads: a directory tree (rustic's `LocalSource`, watched)
//! or a block device / image file (one node with its real size).
//!
//! The watch turns what rustic would only log into warnings the caller
//! reports: entries that cannot be read, files that change size while read,
//! files that vanish. It also stops reading when the operation is cancelled.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rustic_core::repofile::{Metadata, Node, NodeType};
use rustic_core::{
    ErrorKind, LocalSource, ReadSource, ReadSourceEntry, ReadSourceOpen, RusticError, RusticResult,
};

use crate::backend::Control;

/// Counters and warnings shared between the source and the caller.
#[derive(Debug, Default)]
pub struct Watch {
    pub warnings: Mutex<Vec<String>>,
    pub files_total: AtomicU64,
    pub bytes_total: AtomicU64,
    pub files_done: AtomicU64,
}

impl Watch {
    pub(crate) fn warn(&self, msg: String) {
        self.warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(msg);
    }

    pub fn warnings(&self) -> Vec<String> {
        self.warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A directory tree.
#[derive(Debug)]
pub struct TreeSource {
    inner: LocalSource,
    root: PathBuf,
    watch: Arc<Watch>,
    control: Arc<Control>,
}

impl TreeSource {
    pub fn new(
        inner: LocalSource,
        root: PathBuf,
        watch: Arc<Watch>,
        control: Arc<Control>,
    ) -> TreeSource {
        TreeSource {
            inner,
            root,
            watch,
            control,
        }
    }
}

/// Opens one file of the tree, watched.
#[derive(Debug)]
pub struct WatchedOpen {
    path: PathBuf,
    size: u64,
    watch: Arc<Watch>,
    control: Arc<Control>,
}

impl ReadSourceOpen for WatchedOpen {
    type Reader = WatchedReader;

    fn open(self) -> RusticResult<WatchedReader> {
        match File::open(&self.path) {
            Ok(file) => Ok(WatchedReader {
                file,
                read: 0,
                open: self,
            }),
            Err(e) => {
                let what = if e.kind() == std::io::ErrorKind::NotFound {
                    "vanished before it was read"
                } else {
                    "cannot be read"
                };
                self.watch.warn(format!(
                    "{}: {what} ({e}); not in the snapshot",
                    self.path.display()
                ));
                Err(
                    RusticError::with_source(ErrorKind::InputOutput, "Cannot open `{path}`.", e)
                        .attach_context("path", self.path.display().to_string()),
                )
            }
        }
    }
}

/// A file being read; checks at its end that it did not change size.
#[derive(Debug)]
pub struct WatchedReader {
    file: File,
    read: u64,
    open: WatchedOpen,
}

impl Read for WatchedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.open.control.is_cancelled() {
            return Err(std::io::Error::other("cancelled"));
        }
        match self.file.read(buf) {
            Ok(0) => {
                if self.read != self.open.size {
                    self.open.watch.warn(format!(
                        "{}: changed while it was read ({} bytes when listed, {} read); the \
                         snapshot holds what was read",
                        self.open.path.display(),
                        self.open.size,
                        self.read
                    ));
                }
                self.open.watch.files_done.fetch_add(1, Ordering::Relaxed);
                Ok(0)
            }
            Ok(n) => {
                self.read += n as u64;
                Ok(n)
            }
            Err(e) => {
                self.open.watch.warn(format!(
                    "{}: read failed after {} bytes ({e}); not in the snapshot",
                    self.open.path.display(),
                    self.read
                ));
                Err(e)
            }
        }
    }
}

impl ReadSource for TreeSource {
    type Open = WatchedOpen;
    type Iter = Box<dyn Iterator<Item = RusticResult<ReadSourceEntry<WatchedOpen>>> + Send>;

    fn size(&self) -> RusticResult<Option<u64>> {
        let (mut files, mut bytes) = (0u64, 0u64);
        for entry in walkdir::WalkDir::new(&self.root).into_iter().flatten() {
            if entry.file_type().is_file() {
                files += 1;
                bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
        self.watch.files_total.store(files, Ordering::Relaxed);
        self.watch.bytes_total.store(bytes, Ordering::Relaxed);
        Ok(Some(bytes))
    }

    fn entries(&self) -> Self::Iter {
        let watch = self.watch.clone();
        let control = self.control.clone();
        Box::new(self.inner.entries().map(move |item| match item {
            Err(e) => {
                watch.warn(format!("skipped an entry: {}", e.display_log()));
                Err(e)
            }
            Ok(ReadSourceEntry { path, node, open }) => {
                let open = open.map(|_| WatchedOpen {
                    path: path.clone(),
                    size: node.meta.size,
                    watch: watch.clone(),
                    control: control.clone(),
                });
                if open.is_none() && node.node_type == NodeType::File {
                    watch.files_done.fetch_add(1, Ordering::Relaxed);
                }
                Ok(ReadSourceEntry { path, node, open })
            }
        }))
    }
}

/// A block device or image file, backed up as one file node whose size is
/// the device's real size (seeking to its end: a device node's metadata
/// length is 0).
#[derive(Debug)]
pub struct BlockSource {
    path: PathBuf,
    name: String,
    size: u64,
    meta: std::fs::Metadata,
    watch: Arc<Watch>,
    control: Arc<Control>,
}

impl BlockSource {
    /// `name` is the node's name in the snapshot (the claim's name).
    pub fn new(
        path: &Path,
        name: &str,
        watch: Arc<Watch>,
        control: Arc<Control>,
    ) -> std::io::Result<BlockSource> {
        let meta = std::fs::metadata(path)?;
        let ft = meta.file_type();
        if !(ft.is_block_device() || ft.is_file()) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a block device or a regular file",
            ));
        }
        let size = device_size(path)?;
        watch.files_total.store(1, Ordering::Relaxed);
        watch.bytes_total.store(size, Ordering::Relaxed);
        Ok(BlockSource {
            path: path.to_path_buf(),
            name: name.to_string(),
            size,
            meta,
            watch,
            control,
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }
}

/// The size of a device or file, by seeking to its end.
pub fn device_size(path: &Path) -> std::io::Result<u64> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::End(0))
}

impl ReadSource for BlockSource {
    type Open = WatchedOpen;
    type Iter = std::iter::Once<RusticResult<ReadSourceEntry<WatchedOpen>>>;

    fn size(&self) -> RusticResult<Option<u64>> {
        Ok(Some(self.size))
    }

    fn entries(&self) -> Self::Iter {
        let mtime = self
            .meta
            .modified()
            .ok()
            .and_then(|t| jiff::Timestamp::try_from(t).ok());
        let meta = Metadata {
            // Recorded as a regular file (restic restores it as one), with
            // the real size: `restic restore` then writes every byte.
            mode: Some(0o600),
            mtime,
            uid: Some(self.meta.uid()),
            gid: Some(self.meta.gid()),
            size: self.size,
            links: 1,
            ..Metadata::default()
        };
        let node = Node::new_node(std::ffi::OsStr::new(&self.name), NodeType::File, meta);
        std::iter::once(Ok(ReadSourceEntry {
            path: self.path.clone(),
            node,
            open: Some(WatchedOpen {
                path: self.path.clone(),
                size: self.size,
                watch: self.watch.clone(),
                control: self.control.clone(),
            }),
        }))
    }
}
