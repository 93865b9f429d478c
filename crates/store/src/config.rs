//! Storage location configuration and the construction of an
//! [`ObjectStore`] from it.
//!
//! ```text
//! LocationConfig { url, region, endpoint, credentials, … }
//!        │ build_store()
//!        ▼
//! file://  → LocalFileSystem (rooted at the path)
//! s3://    → AmazonS3      ┐ each with RetryConfig (backoff on transient
//! az://    → MicrosoftAzure├ errors) and request timeouts, wrapped in a
//! gs://    → GoogleCloud   ┘ PrefixStore for the URL's path
//! ```
//!
//! The caller (controller or CLI) resolves Kubernetes Secrets into
//! [`Credentials`]; this crate never reads Secrets. Without explicit
//! credentials each provider uses its standard chain (environment variables,
//! web identity / workload identity, instance metadata).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ClientOptions, RetryConfig};
use url::Url;

use crate::error::{Result, StoreError};

/// Where a repository lives and how to reach it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct LocationConfig {
    /// `file:///abs/path`, `s3://bucket/prefix`, `az://container/prefix` or
    /// `gs://bucket/prefix`.
    pub url: String,
    /// S3 region (defaults to `us-east-1` when neither this nor the
    /// environment names one).
    pub region: Option<String>,
    /// Custom endpoint (MinIO, Ceph RGW, Azurite, fake GCS…), e.g.
    /// `https://minio.example:9000`.
    pub endpoint: Option<String>,
    /// S3 path-style requests (`endpoint/bucket/key`); needed by most MinIO
    /// and Ceph set-ups. When false, virtual-hosted style is used.
    pub path_style: bool,
    /// Allow `http://` endpoints. Loopback endpoints (127.0.0.1, ::1,
    /// localhost) are always allowed.
    pub allow_http: bool,
    /// Explicit credentials; `None` uses the provider's default chain.
    pub credentials: Option<Credentials>,
    /// age X25519 public keys (`age1…`). Non-empty: archives are encrypted.
    pub recipients: Vec<String>,
    /// age X25519 secret keys (`AGE-SECRET-KEY-1…`), needed to read
    /// encrypted archives.
    pub identities: Vec<String>,
    /// Retry and timeout behaviour for cloud stores; `None` uses
    /// [`RetryOptions::default`].
    pub retry: Option<RetryOptions>,
    /// Public keys trusted to sign backups read from this location, each
    /// bound to a cluster.
    pub trusted_keys: Vec<crate::TrustedKey>,
    /// The minisign secret key file this writer signs manifests and restore
    /// records with; `None` writes them unsigned.
    pub signing_key: Option<String>,
}

impl std::fmt::Debug for LocationConfig {
    // Hand-written so secret keys and credentials never reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocationConfig")
            .field("url", &self.url)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("path_style", &self.path_style)
            .field("allow_http", &self.allow_http)
            .field("credentials", &self.credentials)
            .field("recipients", &self.recipients)
            .field(
                "identities",
                &format_args!("<{} redacted>", self.identities.len()),
            )
            .field("retry", &self.retry)
            .field("trusted_keys", &self.trusted_keys)
            .field(
                "signing_key",
                &self.signing_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Credentials resolved by the caller (typically from a Kubernetes Secret).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credentials {
    /// S3 static keys (AWS, MinIO, Ceph).
    S3 {
        access_key_id: String,
        secret_access_key: String,
        session_token: Option<String>,
    },
    /// Azure storage account name and key.
    Azure { account: String, access_key: String },
    /// Google Cloud service account key (the JSON document).
    Gcs { service_account_key: String },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::S3 { access_key_id, .. } => f
                .debug_struct("S3")
                .field("access_key_id", access_key_id)
                .finish_non_exhaustive(),
            Credentials::Azure { account, .. } => f
                .debug_struct("Azure")
                .field("account", account)
                .finish_non_exhaustive(),
            Credentials::Gcs { .. } => f.debug_struct("Gcs").finish_non_exhaustive(),
        }
    }
}

/// Retry with exponential backoff and per-request timeouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryOptions {
    /// Retries of one request on transient errors (5xx, 429, connection
    /// errors). 0 disables retries.
    pub max_retries: usize,
    /// Give up retrying a request after this long.
    pub retry_timeout: Duration,
    /// First backoff delay; doubles up to `max_backoff`.
    pub init_backoff: Duration,
    pub max_backoff: Duration,
    /// Timeout of one HTTP request (a part upload of 8 MiB must fit in it).
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
}

impl Default for RetryOptions {
    fn default() -> Self {
        RetryOptions {
            max_retries: 10,
            retry_timeout: Duration::from_secs(180),
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            request_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// The cloud provider of a URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cloud {
    S3,
    Azure,
    Gcs,
}

/// Builds the object store for `config`, already scoped to the URL's prefix.
/// Returns the store and a display form of the URL for messages.
pub(crate) fn build_store(config: &LocationConfig) -> Result<(Arc<dyn ObjectStore>, String)> {
    let url = Url::parse(&config.url).map_err(|e| invalid(config, e.to_string()))?;
    let display = config.url.trim_end_matches('/').to_string();
    let cloud = match url.scheme() {
        "file" => return build_local(config, &url, display),
        "s3" | "s3a" => Cloud::S3,
        "az" | "azure" | "abfs" | "abfss" => Cloud::Azure,
        "gs" => Cloud::Gcs,
        other => return Err(invalid(config, format!("unsupported scheme {other:?}"))),
    };
    let bucket = url.host_str().unwrap_or_default();
    if bucket.is_empty() {
        return Err(invalid(config, "missing bucket or container name".into()));
    }
    let prefix = url.path().trim_matches('/').to_string();
    let retry = config.retry.clone().unwrap_or_default();
    let retry_config = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: retry.init_backoff,
            max_backoff: retry.max_backoff,
            base: 2.0,
        },
        max_retries: retry.max_retries,
        retry_timeout: retry.retry_timeout,
    };
    let allow_http = config.allow_http || config.endpoint.as_deref().is_some_and(is_loopback);
    let client = ClientOptions::new()
        .with_timeout(retry.request_timeout)
        .with_connect_timeout(retry.connect_timeout)
        .with_allow_http(allow_http);
    if let Some(endpoint) = &config.endpoint
        && endpoint.starts_with("http://")
        && !allow_http
    {
        return Err(StoreError::InvalidConfig(format!(
            "endpoint {endpoint} uses plain http; use https or set allowHttp (only for \
             trusted networks)"
        )));
    }

    let store: Arc<dyn ObjectStore> = match cloud {
        Cloud::S3 => {
            let mut b = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_retry(retry_config)
                .with_client_options(client)
                .with_allow_http(allow_http)
                .with_virtual_hosted_style_request(!config.path_style);
            if let Some(region) = &config.region {
                b = b.with_region(region);
            }
            if let Some(endpoint) = &config.endpoint {
                b = b.with_endpoint(endpoint);
            }
            match &config.credentials {
                None => {}
                Some(Credentials::S3 {
                    access_key_id,
                    secret_access_key,
                    session_token,
                }) => {
                    b = b
                        .with_access_key_id(access_key_id)
                        .with_secret_access_key(secret_access_key);
                    if let Some(token) = session_token {
                        b = b.with_token(token);
                    }
                }
                Some(other) => return Err(wrong_credentials(config, other)),
            }
            Arc::new(
                b.build()
                    .map_err(|e| StoreError::storage("configure", &display, e))?,
            )
        }
        Cloud::Azure => {
            let mut b = MicrosoftAzureBuilder::from_env()
                .with_container_name(bucket)
                .with_retry(retry_config)
                .with_client_options(client)
                .with_allow_http(allow_http);
            if let Some(endpoint) = &config.endpoint {
                // object_store appends `/<container>/<blob>` to the account
                // URL's path as is, so `…/devstoreaccount1/` (Azurite, Azure
                // Stack) would become `…/devstoreaccount1//<container>`.
                b = b.with_endpoint(endpoint.trim_end_matches('/').to_string());
            }
            match &config.credentials {
                None => {}
                Some(Credentials::Azure {
                    account,
                    access_key,
                }) => b = b.with_account(account).with_access_key(access_key),
                Some(other) => return Err(wrong_credentials(config, other)),
            }
            Arc::new(
                b.build()
                    .map_err(|e| StoreError::storage("configure", &display, e))?,
            )
        }
        Cloud::Gcs => {
            let mut b = GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(bucket)
                .with_retry(retry_config)
                .with_client_options(client);
            match &config.credentials {
                None => {}
                Some(Credentials::Gcs {
                    service_account_key,
                }) => b = b.with_service_account_key(service_account_key),
                Some(other) => return Err(wrong_credentials(config, other)),
            }
            Arc::new(
                b.build()
                    .map_err(|e| StoreError::storage("configure", &display, e))?,
            )
        }
    };
    if prefix.is_empty() {
        Ok((store, display))
    } else {
        Ok((Arc::new(PrefixStore::new(store, prefix.as_str())), display))
    }
}

fn build_local(
    config: &LocationConfig,
    url: &Url,
    display: String,
) -> Result<(Arc<dyn ObjectStore>, String)> {
    if url
        .host_str()
        .is_some_and(|h| !h.is_empty() && h != "localhost")
    {
        return Err(invalid(config, "file URLs must not name a host".into()));
    }
    let path = url
        .to_file_path()
        .map_err(|()| invalid(config, "not an absolute local path".into()))?;
    std::fs::create_dir_all(&path)
        .map_err(|e| StoreError::io(format!("cannot create directory {}", path.display()), e))?;
    let fs = LocalFileSystem::new_with_prefix(&path)
        .map_err(|e| StoreError::storage("open", &display, e))?
        .with_automatic_cleanup(true);
    Ok((Arc::new(fs), display))
}

fn invalid(config: &LocationConfig, reason: String) -> StoreError {
    StoreError::InvalidUrl {
        url: config.url.clone(),
        reason,
    }
}

fn wrong_credentials(config: &LocationConfig, creds: &Credentials) -> StoreError {
    StoreError::InvalidConfig(format!(
        "{:?} credentials cannot be used with {}; give credentials of the URL's provider",
        creds, config.url
    ))
}

fn is_loopback(endpoint: &str) -> bool {
    let Ok(url) = Url::parse(endpoint) else {
        return false;
    };
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rstest::rstest]
    #[case("http://127.0.0.1:9000", true)]
    #[case("http://localhost:9000", true)]
    #[case("http://[::1]:9000", true)]
    #[case("http://minio.svc:9000", false)]
    #[case("not a url", false)]
    fn loopback(#[case] endpoint: &str, #[case] expected: bool) {
        assert_eq!(is_loopback(endpoint), expected);
    }

    #[rstest::rstest]
    #[case("ftp://x/y")]
    #[case("s3:///prefix")]
    #[case("relative/path")]
    fn rejects_bad_urls(#[case] url: &str) {
        let config = LocationConfig {
            url: url.into(),
            ..Default::default()
        };
        let err = build_store(&config)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("invalid storage URL"), "{err}");
    }

    #[test]
    fn plain_http_needs_opt_in() {
        let config = LocationConfig {
            url: "s3://bucket/p".into(),
            endpoint: Some("http://minio.example:9000".into()),
            ..Default::default()
        };
        let err = build_store(&config)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("allowHttp"), "{err}");
    }

    #[test]
    fn debug_redacts_secrets() {
        let config = LocationConfig {
            url: "s3://b".into(),
            credentials: Some(Credentials::S3 {
                access_key_id: "AKIA".into(),
                secret_access_key: "SECRET".into(),
                session_token: None,
            }),
            identities: vec!["AGE-SECRET-KEY-1XYZ".into()],
            ..Default::default()
        };
        let s = format!("{config:?}");
        assert!(!s.contains("SECRET"), "{s}");
        assert!(s.contains("AKIA"));
    }
}
