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
use s3s::dto::{
    AbortMultipartUploadInput, AbortMultipartUploadOutput, CompleteMultipartUploadInput,
    CompleteMultipartUploadOutput, CopyObjectInput, CopyObjectOutput, CreateBucketInput,
    CreateBucketOutput, CreateMultipartUploadInput, CreateMultipartUploadOutput, DeleteBucketInput,
    DeleteBucketOutput, DeleteObjectInput, DeleteObjectOutput, DeleteObjectsInput,
    DeleteObjectsOutput, GetBucketLocationInput, GetBucketLocationOutput, GetObjectInput,
    GetObjectOutput, HeadBucketInput, HeadBucketOutput, HeadObjectInput, HeadObjectOutput,
    ListBucketsInput, ListBucketsOutput, ListObjectsInput, ListObjectsOutput, ListObjectsV2Input,
    ListObjectsV2Output, ListPartsInput, ListPartsOutput, PutObjectInput, PutObjectOutput,
    UploadPartCopyInput, UploadPartCopyOutput, UploadPartInput, UploadPartOutput,
};
use s3s::{S3, S3Request, S3Response, S3Result};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

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

/// s3s-fs as S3 answers: an empty `delimiter=` means no delimiter.
///
/// minio-go (restic's S3 client) always sends `delimiter=`, empty for a
/// recursive listing (restic lists `data/` so); s3s-fs 0.14 takes the empty
/// string as a delimiter and answers with one-character common prefixes
/// instead of the packs, so `restic check` over S3 found no pack.
struct S3Fs(s3s_fs::FileSystem);

fn no_empty_delimiter(delimiter: &mut Option<String>) {
    if delimiter.as_deref() == Some("") {
        *delimiter = None;
    }
}

#[async_trait::async_trait]
impl S3 for S3Fs {
    async fn list_objects(
        &self,
        mut req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        no_empty_delimiter(&mut req.input.delimiter);
        self.0.list_objects(req).await
    }
    async fn list_objects_v2(
        &self,
        mut req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        no_empty_delimiter(&mut req.input.delimiter);
        self.0.list_objects_v2(req).await
    }
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.0.create_bucket(req).await
    }
    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        self.0.copy_object(req).await
    }
    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.0.delete_bucket(req).await
    }
    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.0.delete_object(req).await
    }
    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.0.delete_objects(req).await
    }
    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.0.get_bucket_location(req).await
    }
    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        self.0.get_object(req).await
    }
    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.0.head_bucket(req).await
    }
    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        self.0.head_object(req).await
    }
    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        self.0.list_buckets(req).await
    }
    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        self.0.put_object(req).await
    }
    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.0.create_multipart_upload(req).await
    }
    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        self.0.upload_part(req).await
    }
    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        self.0.upload_part_copy(req).await
    }
    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        self.0.list_parts(req).await
    }
    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        self.0.complete_multipart_upload(req).await
    }
    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.0.abort_multipart_upload(req).await
    }
}

/// An S3 server on 127.0.0.1:0 storing into `root`.
pub struct S3Server {
    pub endpoint: String,
    task: JoinHandle<()>,
}

impl S3Server {
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn start_s3(root: &Path) -> TestResult<S3Server> {
    std::fs::create_dir_all(root.join("bucket"))?;
    let fs = s3s_fs::FileSystem::new(root).map_err(|e| format!("s3s-fs: {e:?}"))?;
    let mut builder = s3s::service::S3ServiceBuilder::new(S3Fs(fs));
    builder.set_auth(s3s::auth::SimpleAuth::from_single("AKTEST", "SECRETTEST"));
    let service = builder.build();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        while let Ok((socket, _)) = listener.accept().await {
            let service = service.clone();
            conns.spawn(async move {
                let io = hyper_util::rt::TokioIo::new(socket);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    Ok(S3Server { endpoint, task })
}

pub fn s3_config(server: &S3Server, keys: &Keys, with_identity: bool) -> LocationConfig {
    LocationConfig {
        url: "s3://bucket/lifeboat".into(),
        region: Some("us-east-1".into()),
        endpoint: Some(server.endpoint.clone()),
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
