//! Copying volume bytes the way a storage backend would: every file an
//! independent copy (a reflink where the filesystem can share extents
//! copy-on-write, else a sparse-aware byte copy), never a hard link, so a
//! later in-place write to the source cannot reach the copy.
//!
//! ```text
//! copy_tree(src, dst) ─▶ for each entry (walkdir, parents first)
//!   dir     ─▶ mkdir, mode, mtime (set after its contents)
//!   file    ─▶ copy_file: FICLONE ─(unsupported)─▶ SEEK_DATA/SEEK_HOLE + copy_file_range
//!   symlink ─▶ a new symlink with the same target
//! ```
//!
//! Modes and modification times are kept (symlinks keep their target only).

use std::fs::{self, File, FileTimes};
use std::io;
use std::path::Path;

/// What a copy did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CopyStats {
    /// Regular files copied.
    pub files: u64,
    /// Bytes in those files (their apparent size).
    pub bytes: u64,
    /// Files whose extents were shared by reflink instead of copied.
    pub reflinked: u64,
}

impl CopyStats {
    fn add(&mut self, o: CopyStats) {
        self.files += o.files;
        self.bytes += o.bytes;
        self.reflinked += o.reflinked;
    }
}

/// Copies one regular file to `dst` (created or truncated), keeping its
/// mode and modification time.
pub fn copy_file(src: &Path, dst: &Path) -> io::Result<CopyStats> {
    let from = File::open(src)?;
    let meta = from.metadata()?;
    let to = File::create(dst)?;
    let reflinked = clone_or_copy(&from, &to, meta.len())?;
    to.set_permissions(meta.permissions())?;
    to.set_times(FileTimes::new().set_modified(meta.modified()?))?;
    Ok(CopyStats {
        files: 1,
        bytes: meta.len(),
        reflinked: u64::from(reflinked),
    })
}

/// Copies the contents of directory `src` into `dst` (created when missing;
/// existing files of the same name are replaced).
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<CopyStats> {
    let mut stats = CopyStats::default();
    fs::create_dir_all(dst)?;
    let mut dirs = Vec::new();
    for entry in walkdir::WalkDir::new(src).min_depth(1) {
        let entry = entry.map_err(io::Error::other)?;
        let rel = entry.path().strip_prefix(src).map_err(io::Error::other)?;
        let target = dst.join(rel);
        let ty = entry.file_type();
        if ty.is_dir() {
            fs::create_dir_all(&target)?;
            dirs.push((entry.path().to_path_buf(), target));
        } else if ty.is_symlink() {
            let link = fs::read_link(entry.path())?;
            if fs::symlink_metadata(&target).is_ok() {
                fs::remove_file(&target)?;
            }
            symlink(&link, &target)?;
        } else if ty.is_file() {
            if fs::symlink_metadata(&target).is_ok_and(|m| !m.is_file()) {
                fs::remove_file(&target)?;
            }
            stats.add(copy_file(entry.path(), &target)?);
        }
    }
    dirs.push((src.to_path_buf(), dst.to_path_buf()));
    // Deepest first, so creating entries does not bump a parent's mtime
    // after it was set.
    for (from, to) in dirs.iter().rev() {
        let meta = fs::metadata(from)?;
        fs::set_permissions(to, meta.permissions())?;
        File::open(to)?.set_times(FileTimes::new().set_modified(meta.modified()?))?;
    }
    Ok(stats)
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
fn symlink(_target: &Path, _link: &Path) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "symbolic links in volumes need a Unix host",
    ))
}

/// Shares the extents of `from` with `to` (FICLONE) when the filesystem
/// allows; otherwise copies the data regions, leaving holes as holes.
#[cfg(target_os = "linux")]
fn clone_or_copy(from: &File, to: &File, len: u64) -> io::Result<bool> {
    use rustix::fs::SeekFrom;
    if rustix::fs::ioctl_ficlone(to, from).is_ok() {
        return Ok(true);
    }
    let mut pos = 0u64;
    while pos < len {
        let start = match rustix::fs::seek(from, SeekFrom::Data(pos)) {
            Ok(s) => s,
            // ENXIO: no data after `pos`, the rest is a hole.
            Err(rustix::io::Errno::NXIO) => break,
            // No SEEK_DATA on this filesystem: the rest is data.
            Err(rustix::io::Errno::INVAL) => pos,
            Err(e) => return Err(e.into()),
        };
        let end = match rustix::fs::seek(from, SeekFrom::Hole(start)) {
            Ok(e) => e.min(len),
            Err(_) => len,
        };
        copy_range(from, to, start, end)?;
        pos = end;
    }
    to.set_len(len)?;
    Ok(false)
}

#[cfg(target_os = "linux")]
fn copy_range(from: &File, to: &File, start: u64, end: u64) -> io::Result<()> {
    let (mut off_in, mut off_out) = (start, start);
    while off_in < end {
        let want = usize::try_from(end - off_in)
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        match rustix::fs::copy_file_range(from, Some(&mut off_in), to, Some(&mut off_out), want) {
            Ok(0) => break,
            Ok(_) => {}
            // Across filesystems or unsupported: fall back to read/write.
            Err(rustix::io::Errno::XDEV | rustix::io::Errno::NOSYS | rustix::io::Errno::INVAL) => {
                return copy_range_rw(from, to, off_in, end);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn copy_range_rw(from: &File, to: &File, start: u64, end: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 1 << 20];
    let mut off = start;
    while off < end {
        let n = usize::try_from(end - off)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let got = from.read_at(&mut buf[..n], off)?;
        if got == 0 {
            break;
        }
        to.write_all_at(&buf[..got], off)?;
        off += got as u64;
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn clone_or_copy(from: &File, to: &File, len: u64) -> io::Result<bool> {
    let mut r = from;
    let mut w = to;
    io::copy(&mut r, &mut w)?;
    to.set_len(len)?;
    Ok(false)
}

/// Removes a volume or snapshot (a directory tree or an image file);
/// missing is fine.
pub fn remove(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(unix)]
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::time::{Duration, SystemTime};

    #[test]
    fn a_tree_copy_is_independent_and_keeps_modes_and_mtimes() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("sub/a.txt"), b"one").unwrap();
        let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
        File::options()
            .write(true)
            .open(src.join("sub/a.txt"))
            .unwrap()
            .set_times(FileTimes::new().set_modified(old))
            .unwrap();
        #[cfg(unix)]
        fs::set_permissions(src.join("sub/a.txt"), fs::Permissions::from_mode(0o640)).unwrap();
        let stats = copy_tree(&src, &dst).unwrap();
        assert_eq!((stats.files, stats.bytes), (1, 3));
        let copied = dst.join("sub/a.txt");
        assert_eq!(fs::read(&copied).unwrap(), b"one");
        assert_eq!(fs::metadata(&copied).unwrap().modified().unwrap(), old);
        #[cfg(unix)]
        {
            let (a, b) = (
                fs::metadata(src.join("sub/a.txt")).unwrap(),
                fs::metadata(&copied).unwrap(),
            );
            assert_eq!(b.permissions().mode() & 0o777, 0o640);
            assert_ne!(a.ino(), b.ino(), "a copy, not a hard link");
        }
        // An in-place write to the source does not reach the copy.
        fs::write(src.join("sub/a.txt"), b"two").unwrap();
        assert_eq!(fs::read(&copied).unwrap(), b"one");
    }

    #[test]
    fn sparse_files_keep_their_size_and_holes() {
        use std::io::{Seek, SeekFrom, Write};
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("a.img"), dir.path().join("b.img"));
        let mut f = File::create(&src).unwrap();
        f.set_len(64 << 20).unwrap();
        f.seek(SeekFrom::Start(32 << 20)).unwrap();
        f.write_all(b"middle").unwrap();
        drop(f);
        copy_file(&src, &dst).unwrap();
        let data = fs::read(&dst).unwrap();
        assert_eq!(data.len(), 64 << 20);
        assert_eq!(&data[32 << 20..(32 << 20) + 6], b"middle");
        #[cfg(unix)]
        assert!(
            fs::metadata(&dst).unwrap().blocks() * 512 < 16 << 20,
            "holes stay holes"
        );
        remove(&dst).unwrap();
        remove(&dst).unwrap();
    }
}
