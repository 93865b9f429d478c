//! Shared helpers: a tree with every file kind, tree comparison, an
//! in-process S3 server, age keys, and the real restic.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use lifeboat_store::{Credentials, LocationConfig, RetryOptions};

pub type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A scratch directory on the target disk (tmpfs may lack user xattrs).
pub fn scratch() -> TestResult<tempfile::TempDir> {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("volume-tests");
    std::fs::create_dir_all(&base)?;
    Ok(tempfile::tempdir_in(base)?)
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// age keys for a test location.
pub struct Keys {
    pub recipient: String,
    pub identity: String,
}

pub fn keys() -> Keys {
    let id = age::x25519::Identity::generate();
    Keys {
        recipient: id.to_public().to_string(),
        identity: age::secrecy::ExposeSecret::expose_secret(&id.to_string()).to_string(),
    }
}

pub fn file_config(dir: &Path, keys: &Keys, with_identity: bool) -> LocationConfig {
    LocationConfig {
        url: format!("file://{}", dir.display()),
        recipients: vec![keys.recipient.clone()],
        identities: if with_identity {
            vec![keys.identity.clone()]
        } else {
            Vec::new()
        },
        ..Default::default()
    }
}

/// What the tree builder made, for the checks.
pub struct TreeInfo {
    pub sparse_file: Option<PathBuf>,
    pub small_files: Vec<PathBuf>,
}

/// A deterministic pseudo-random byte stream.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Builds a tree with every file kind: regular files, an empty directory,
/// symlinks (relative, absolute, dangling), hard links, a sparse file of
/// `sparse_size` bytes, odd modes, owners, mtimes, xattrs, a fifo and (as
/// root) device nodes, plus `small` small files in nested directories.
pub fn make_tree(root: &Path, small: usize, sparse_size: u64) -> TestResult<TreeInfo> {
    std::fs::create_dir_all(root)?;
    std::fs::create_dir_all(root.join("empty/nested-empty"))?;
    std::fs::write(root.join("hello.txt"), b"hello volume\n")?;
    std::fs::write(root.join("zero-length"), b"")?;
    // Ignore files and hidden files are data like any other.
    std::fs::write(root.join(".gitignore"), b"*.dat\n*\n")?;
    std::fs::write(root.join(".ignore"), b"*\n")?;
    std::fs::write(root.join(".hidden"), b"dot file\n")?;
    std::fs::write(root.join("binary.bin"), bytes(1, 300_000))?;
    std::os::unix::fs::symlink("hello.txt", root.join("link-relative"))?;
    std::os::unix::fs::symlink("/etc/hostname", root.join("link-absolute"))?;
    std::os::unix::fs::symlink("does/not/exist", root.join("link-dangling"))?;
    std::fs::create_dir_all(root.join("links"))?;
    std::fs::write(root.join("links/a"), b"shared content\n")?;
    std::fs::hard_link(root.join("links/a"), root.join("links/b"))?;
    std::fs::hard_link(root.join("links/a"), root.join("hardlink-top"))?;
    std::fs::write(root.join("exec.sh"), b"#!/bin/sh\necho hi\n")?;
    std::fs::set_permissions(root.join("exec.sh"), std::fs::Permissions::from_mode(0o755))?;
    std::fs::write(root.join("private"), b"secret\n")?;
    std::fs::set_permissions(root.join("private"), std::fs::Permissions::from_mode(0o600))?;
    std::fs::write(root.join("setgid"), b"x")?;
    std::fs::set_permissions(root.join("setgid"), std::fs::Permissions::from_mode(0o2750))?;
    std::fs::create_dir_all(root.join("sticky"))?;
    std::fs::set_permissions(root.join("sticky"), std::fs::Permissions::from_mode(0o1777))?;
    xattr::set(root.join("hello.txt"), "user.lifeboat", b"attr value")?;
    xattr::set(root.join("empty"), "user.dir", b"on a directory")?;
    nix::unistd::mkfifo(
        &root.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )?;
    if is_root() {
        std::os::unix::fs::chown(root.join("private"), Some(1234), Some(5678))?;
        std::os::unix::fs::lchown(root.join("link-relative"), Some(4321), Some(8765))?;
        nix::sys::stat::mknod(
            &root.join("null-device"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 3),
        )?;
        nix::sys::stat::mknod(
            &root.join("block-device"),
            nix::sys::stat::SFlag::S_IFBLK,
            nix::sys::stat::Mode::from_bits_truncate(0o660),
            nix::sys::stat::makedev(7, 200),
        )?;
    }
    let sparse_file = if sparse_size > 0 {
        let path = root.join("sparse.img");
        let mut f = std::fs::File::create(&path)?;
        f.set_len(sparse_size)?;
        // Data islands at the start, the middle and the end.
        for (i, at) in [0, sparse_size / 2, sparse_size - 100_000]
            .iter()
            .enumerate()
        {
            f.seek(SeekFrom::Start(*at))?;
            f.write_all(&bytes(100 + i as u64, 100_000))?;
        }
        Some(path)
    } else {
        None
    };
    let mut small_files = Vec::with_capacity(small);
    for i in 0..small {
        let dir = root.join(format!("many/d{:02}/e{:02}", i % 50, (i / 50) % 10));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("f{i:05}.dat"));
        let len = 200 + (i * 37) % 3800;
        std::fs::write(&path, bytes(1000 + i as u64, len))?;
        small_files.push(path);
    }
    // Distinct, sub-second mtimes.
    let mut n = 0i64;
    for entry in walkdir::WalkDir::new(root).contents_first(true) {
        let entry = entry?;
        n += 1;
        let t = filetime::FileTime::from_unix_time(
            1_700_000_000 + n * 7,
            ((n * 1_234_567) % 1_000_000_000) as u32,
        );
        filetime::set_symlink_file_times(entry.path(), t, t)?;
    }
    Ok(TreeInfo {
        sparse_file,
        small_files,
    })
}

/// What one entry of a tree looks like, for comparison.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: (i64, i64),
    pub content: Option<[u8; 32]>,
    pub link: Option<PathBuf>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    pub rdev: u64,
}

pub struct Options {
    pub owners: bool,
    pub mtimes: bool,
    pub xattrs: bool,
    pub specials: bool,
    pub dir_mtimes: bool,
}

impl Options {
    pub fn all() -> Options {
        Options {
            owners: true,
            mtimes: true,
            xattrs: true,
            specials: true,
            dir_mtimes: true,
        }
    }
}

pub fn snapshot_tree(root: &Path, opts: &Options) -> TestResult<BTreeMap<PathBuf, Entry>> {
    use sha2::Digest;
    let mut out = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1) {
        let entry = entry?;
        let m = entry.path().symlink_metadata()?;
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_fifo() {
            "fifo"
        } else if ft.is_char_device() {
            "chardev"
        } else if ft.is_block_device() {
            "blockdev"
        } else if ft.is_socket() {
            "socket"
        } else {
            "file"
        };
        if !opts.specials && matches!(kind, "fifo" | "chardev" | "blockdev") {
            continue;
        }
        let content = if ft.is_file() {
            Some(sha2::Sha256::digest(std::fs::read(entry.path())?).into())
        } else {
            None
        };
        let link = ft
            .is_symlink()
            .then(|| std::fs::read_link(entry.path()))
            .transpose()?;
        let mut xattrs = BTreeMap::new();
        if opts.xattrs && !ft.is_symlink() {
            for name in xattr::list(entry.path())? {
                let name = name.to_string_lossy().to_string();
                if name.starts_with("user.")
                    && let Some(v) = xattr::get(entry.path(), &name)?
                {
                    xattrs.insert(name, v);
                }
            }
        }
        let mtime = if opts.mtimes && (opts.dir_mtimes || !ft.is_dir()) {
            (m.mtime(), m.mtime_nsec())
        } else {
            (0, 0)
        };
        out.insert(
            entry.path().strip_prefix(root)?.to_path_buf(),
            Entry {
                kind: kind.into(),
                mode: if ft.is_symlink() {
                    0
                } else {
                    m.mode() & 0o7777
                },
                uid: if opts.owners { m.uid() } else { 0 },
                gid: if opts.owners { m.gid() } else { 0 },
                size: if ft.is_dir() || ft.is_symlink() {
                    0
                } else {
                    m.len()
                },
                mtime,
                content,
                link,
                xattrs,
                rdev: m.rdev(),
            },
        );
    }
    Ok(out)
}

/// Asserts two trees are identical under `opts`, naming the first
/// difference.
pub fn assert_same_tree(a: &Path, b: &Path, opts: &Options) -> TestResult {
    let left = snapshot_tree(a, opts)?;
    let right = snapshot_tree(b, opts)?;
    let lk: Vec<_> = left.keys().collect();
    let rk: Vec<_> = right.keys().collect();
    if lk != rk {
        let only_left: Vec<_> = lk
            .iter()
            .filter(|k| !right.contains_key(**k))
            .take(5)
            .collect();
        let only_right: Vec<_> = rk
            .iter()
            .filter(|k| !left.contains_key(**k))
            .take(5)
            .collect();
        return Err(format!(
            "trees differ in entries: only in {}: {only_left:?}; only in {}: {only_right:?}",
            a.display(),
            b.display()
        )
        .into());
    }
    for (k, l) in &left {
        let r = &right[k];
        if l != r {
            return Err(format!(
                "{} differs:\n  source:   {l:?}\n  restored: {r:?}",
                k.display()
            )
            .into());
        }
    }
    Ok(())
}

/// Bytes actually allocated for a file.
pub fn allocated(path: &Path) -> TestResult<u64> {
    Ok(std::fs::metadata(path)?.blocks() * 512)
}

pub use lifeboat_testkit::s3::S3Server;

/// An S3 server (lifeboat-testkit) storing into `root`, bucket `bucket`.
pub async fn start_s3(root: &Path) -> TestResult<S3Server> {
    Ok(S3Server::start(root).await?)
}

pub fn s3_config(server: &S3Server, keys: &Keys, with_identity: bool) -> LocationConfig {
    LocationConfig {
        url: "s3://bucket/lifeboat".into(),
        region: Some("us-east-1".into()),
        endpoint: Some(server.endpoint().to_string()),
        path_style: true,
        credentials: Some(Credentials::S3 {
            access_key_id: "AKTEST".into(),
            secret_access_key: "SECRETTEST".into(),
            session_token: None,
        }),
        recipients: vec![keys.recipient.clone()],
        identities: if with_identity {
            vec![keys.identity.clone()]
        } else {
            Vec::new()
        },
        retry: Some(RetryOptions {
            max_retries: 1,
            retry_timeout: Duration::from_secs(2),
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
            request_timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(2),
        }),
        ..Default::default()
    }
}

/// The real restic, when installed.
pub fn restic() -> Option<PathBuf> {
    let out = Command::new("restic").arg("version").output().ok()?;
    if out.status.success() {
        Some(PathBuf::from("restic"))
    } else {
        None
    }
}

/// Runs restic on `repo` with `password`; returns stdout.
pub fn run_restic(
    repo: &str,
    password: &str,
    env: &[(&str, &str)],
    args: &[&str],
) -> TestResult<String> {
    let dir = scratch()?;
    let pw = dir.path().join("pw");
    std::fs::write(&pw, password)?;
    let mut cmd = Command::new("restic");
    cmd.arg("-r")
        .arg(repo)
        .arg("--password-file")
        .arg(&pw)
        .arg("--no-cache")
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(format!(
            "restic {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8(out.stdout)?)
}
