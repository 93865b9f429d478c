//! An S3 server on 127.0.0.1 backed by a directory (s3s-fs), answering
//! authentication failures the way AWS S3 does, so tests of error messages
//! see what users see, and listing as S3 does (see [`S3Fs`]).

use std::collections::HashMap;
use std::path::Path;

use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
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
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// The bucket every server has, empty at start.
pub const BUCKET: &str = "bucket";
/// The access key of the one user with full access.
pub const ACCESS_KEY: &str = "AKTEST";
/// Its secret key.
pub const SECRET_KEY: &str = "SECRETTEST";

/// What a user's credentials may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Every request.
    Full,
    /// Nothing: the credentials authenticate but every request is denied,
    /// like an IAM user without a bucket policy.
    None,
}

/// A running server. Dropping it (or [`S3Server::stop`]) stops the
/// listener and every open connection.
#[derive(Debug)]
pub struct S3Server {
    endpoint: String,
    task: JoinHandle<()>,
    /// What [`S3Server::resume`] serves again.
    service: s3s::service::S3Service,
    addr: std::net::SocketAddr,
}

impl S3Server {
    /// Starts a server storing into `root` with bucket [`BUCKET`] and the
    /// user [`ACCESS_KEY`]/[`SECRET_KEY`] with full access.
    pub async fn start(root: &Path) -> std::io::Result<S3Server> {
        S3Server::start_with_users(root, &[(ACCESS_KEY, SECRET_KEY, Grant::Full)]).await
    }

    /// Starts a server with the given users; must run inside a tokio runtime.
    pub async fn start_with_users(
        root: &Path,
        users: &[(&str, &str, Grant)],
    ) -> std::io::Result<S3Server> {
        std::fs::create_dir_all(root.join(BUCKET))?;
        let fs = s3s_fs::FileSystem::new(root)
            .map_err(|e| std::io::Error::other(format!("s3s-fs on {}: {e:?}", root.display())))?;
        let users = Users(
            users
                .iter()
                .map(|(k, s, g)| ((*k).to_string(), ((*s).to_string(), *g)))
                .collect(),
        );
        let mut builder = s3s::service::S3ServiceBuilder::new(S3Fs(fs));
        builder.set_auth(users.clone());
        builder.set_access(users);
        let service = builder.build();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let endpoint = format!("http://{addr}");
        let task = serve(listener, service.clone());
        Ok(S3Server {
            endpoint,
            task,
            service,
            addr,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Stops serving: the listener and open connections close, as when a
    /// store goes away.
    pub fn stop(&self) {
        self.task.abort();
    }

    /// Serves again at the same address, with the same contents, after
    /// [`S3Server::stop`]: the store is back. Waits (up to 5 s) for the
    /// port to be free.
    pub async fn resume(&mut self) -> std::io::Result<()> {
        self.task.abort();
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                // The stopped listener closes on its runtime's next turn.
                Err(_) if tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e),
            }
        };
        self.task = serve(listener, self.service.clone());
        Ok(())
    }
}

/// Accepts connections on `listener` until the task is aborted.
fn serve(listener: TcpListener, service: s3s::service::S3Service) -> JoinHandle<()> {
    tokio::spawn(async move {
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
    })
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug, Clone)]
struct Users(HashMap<String, (String, Grant)>);

#[async_trait::async_trait]
impl S3Auth for Users {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.0.get(access_key) {
            Some((secret, _)) => Ok(SecretKey::from(secret.as_str())),
            // What AWS answers for a key it does not know.
            None => Err(s3_error!(
                InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records."
            )),
        }
    }
}

#[async_trait::async_trait]
impl S3Access for Users {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        match cx.credentials() {
            Some(c) => match self.0.get(&c.access_key) {
                Some((_, Grant::Full)) => Ok(()),
                _ => Err(s3_error!(AccessDenied)),
            },
            None => Err(s3_error!(AccessDenied, "Anonymous access is forbidden")),
        }
    }
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
