//! An S3 server on 127.0.0.1 backed by a directory (s3s-fs), answering
//! authentication failures the way AWS S3 does, so tests of error messages
//! see what users see.

use std::collections::HashMap;
use std::path::Path;

use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::{S3Result, s3_error};
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
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(users.clone());
        builder.set_access(users);
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

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Stops serving: the listener and open connections close, as when a
    /// store goes away.
    pub fn stop(&self) {
        self.task.abort();
    }
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
