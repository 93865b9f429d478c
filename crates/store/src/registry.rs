//! A client of the OCI distribution API (v2), as container registries
//! serve it: what copying images out of a cluster's registry and back in
//! needs, nothing more.
//!
//! ```text
//! Registry::manifest ─ GET  /v2/<repo>/manifests/<ref>   (Accept: OCI and Docker v2)
//! Registry::blob     ─ GET  /v2/<repo>/blobs/<digest>    (streamed, never held)
//! Registry::has_blob ─ HEAD /v2/<repo>/blobs/<digest>
//! Registry::push_blob─ POST /v2/<repo>/blobs/uploads/ ─▶ PUT <location>?digest=…
//! Registry::put_manifest ─ PUT /v2/<repo>/manifests/<ref>
//! ```
//!
//! Authentication: a configured bearer token (a ServiceAccount token on
//! OpenShift) is sent as it is; a `401` with `WWW-Authenticate: Bearer
//! realm=…,service=…,scope=…` is answered by the token flow of the
//! distribution spec (the realm is asked for a token for the scope, with
//! the credentials as basic auth), and `Basic` challenges with the
//! credentials. Tokens are cached per repository and action.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use bytes::Bytes;
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, LOCATION, WWW_AUTHENTICATE,
};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use url::Url;

use crate::error::{Result, StoreError};

/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker manifest list (multi-platform).
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// The manifests lifeboat copies (schema 1 is not among them: registries
/// stopped serving it).
const ACCEPTED: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// Manifests larger than this are refused (registries cap them at 4 MiB).
const MAX_MANIFEST: usize = 4 * 1024 * 1024;

/// Credentials for a registry.
#[derive(Clone)]
pub enum RegistryAuth {
    /// A bearer token, sent as it is, and as the password of the token
    /// flow (OpenShift's registry takes a ServiceAccount token so).
    Token(String),
    /// A user name and password (htpasswd registries).
    Basic { username: String, password: String },
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegistryAuth::Token(_) => f.write_str("Token(…)"),
            RegistryAuth::Basic { username, .. } => write!(f, "Basic({username}, …)"),
        }
    }
}

/// How to reach a registry.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// `https://host[:port]` or `http://host[:port]`.
    pub endpoint: String,
    pub auth: Option<RegistryAuth>,
    /// Extra CA certificates (PEM) trusted for `https` (OpenShift's
    /// service CA).
    pub ca_pem: Option<Vec<u8>>,
}

/// A manifest as the registry sent it, its digest verified.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: Bytes,
    pub media_type: String,
    /// `sha256:<hex>` of `bytes`.
    pub digest: String,
}

/// What a manifest refers to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManifestRefs {
    /// An index's or manifest list's platform manifests: (digest, media type).
    pub manifests: Vec<(String, String)>,
    /// A manifest's config and layers: (digest, size).
    pub blobs: Vec<(String, u64)>,
}

/// A registry client. Cheap to share behind an `Arc`.
pub struct Registry {
    http: reqwest::Client,
    endpoint: Url,
    auth: Option<RegistryAuth>,
    /// `Authorization` values by scope (`repository:<repo>:<actions>`).
    tokens: Mutex<HashMap<String, HeaderValue>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("endpoint", &self.endpoint.as_str())
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

/// `sha256:<64 hex digits>`: the only digests lifeboat stores.
pub fn valid_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A repository name as the distribution spec allows it: lowercase path
/// components of `[a-z0-9]` separated by `.`, `_`, `-`.
pub fn valid_repository(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.split('/').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                })
                && c.as_bytes()[0].is_ascii_alphanumeric()
                && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
        })
}

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The media type of a manifest: its `mediaType`, else what its shape says
/// (OCI allows leaving it out).
pub fn media_type_of(bytes: &[u8], header: Option<&str>) -> Option<String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Shape {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
        layers: Option<serde_json::Value>,
        schema_version: Option<u32>,
    }
    let shape: Shape = serde_json::from_slice(bytes).ok()?;
    if shape.schema_version == Some(1) {
        return None;
    }
    shape
        .media_type
        .or_else(|| header.map(|h| h.split(';').next().unwrap_or(h).trim().to_string()))
        .filter(|m| [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST].contains(&m.as_str()))
        .or_else(|| {
            if shape.manifests.is_some() {
                Some(OCI_INDEX.into())
            } else if shape.layers.is_some() {
                Some(OCI_MANIFEST.into())
            } else {
                None
            }
        })
}

/// Whether a media type is an index or manifest list.
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

/// The manifests and blobs a manifest names. Errors name what is wrong.
pub fn manifest_refs(bytes: &[u8], media_type: &str) -> std::result::Result<ManifestRefs, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Descriptor {
        digest: String,
        #[serde(default)]
        size: u64,
        #[serde(default)]
        media_type: Option<String>,
    }
    #[derive(Deserialize)]
    struct Shape {
        #[serde(default)]
        manifests: Vec<Descriptor>,
        config: Option<Descriptor>,
        #[serde(default)]
        layers: Vec<Descriptor>,
    }
    let shape: Shape = serde_json::from_slice(bytes).map_err(|e| format!("not a manifest: {e}"))?;
    let check = |d: &Descriptor| {
        if valid_digest(&d.digest) {
            Ok(())
        } else {
            Err(format!(
                "it names {:?}, which is not a sha256 digest (only sha256 is supported)",
                d.digest
            ))
        }
    };
    let mut refs = ManifestRefs::default();
    if is_index(media_type) {
        for m in &shape.manifests {
            check(m)?;
            let child = m
                .media_type
                .clone()
                .unwrap_or_else(|| OCI_MANIFEST.to_string());
            if is_index(&child) {
                return Err("it nests an index in an index, which lifeboat does not copy".into());
            }
            refs.manifests.push((m.digest.clone(), child));
        }
    } else {
        let config = shape
            .config
            .ok_or_else(|| "the manifest has no config".to_string())?;
        for d in std::iter::once(&config).chain(shape.layers.iter()) {
            check(d)?;
            if !refs.blobs.iter().any(|(b, _)| b == &d.digest) {
                refs.blobs.push((d.digest.clone(), d.size));
            }
        }
    }
    Ok(refs)
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Challenge {
    Bearer {
        realm: String,
        service: Option<String>,
    },
    Basic,
}

fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    // key="value" pairs separated by commas; values may hold commas.
    let mut params = HashMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            match after.find(',') {
                Some(i) => (&after[..i], &after[i..]),
                None => (after, ""),
            }
        };
        params.insert(key, value.to_string());
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge::Bearer {
        realm: params.remove("realm")?,
        service: params.remove("service"),
    })
}

fn hint(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            "check the registry credentials: on OpenShift the controller's ServiceAccount needs \
             `get` on imagestreams/layers to copy and `update` to push (deploy/components/\
             openshift-images grants them)"
        }
        StatusCode::NOT_FOUND => {
            "the image or repository is not in the registry (was the ImageStream's image \
             pruned?)"
        }
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
            "the registry is busy or unavailable; run the backup or restore again later"
        }
        _ => "check the registry's logs",
    }
}

impl Registry {
    /// A client for the registry at `config.endpoint`.
    pub fn new(config: &RegistryConfig) -> Result<Registry> {
        let bad = |reason: String| {
            StoreError::InvalidConfig(format!(
                "registry endpoint {:?}: {reason}; write https://host[:port] or http://host[:port] \
                 (Cluster spec.openshift.registryEndpoint)",
                config.endpoint
            ))
        };
        let mut endpoint = Url::parse(&config.endpoint).map_err(|e| bad(e.to_string()))?;
        if !matches!(endpoint.scheme(), "http" | "https") || endpoint.host_str().is_none() {
            return Err(bad("not an http(s) URL with a host".into()));
        }
        endpoint.set_path("/");
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("lifeboat/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(30));
        if let Some(pem) = &config.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| bad(format!("its CA certificates cannot be read: {e}")))?;
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder
            .build()
            .map_err(|e| bad(format!("cannot build an HTTP client: {e}")))?;
        Ok(Registry {
            http,
            endpoint,
            auth: config.auth.clone(),
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// `host[:port]` of the registry, for messages.
    pub fn name(&self) -> String {
        let host = self.endpoint.host_str().unwrap_or_default();
        match self.endpoint.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        }
    }

    fn url(&self, path: &str) -> Result<Url> {
        self.endpoint
            .join(path)
            .map_err(|e| StoreError::InvalidConfig(format!("bad registry path {path}: {e}")))
    }

    fn error(&self, doing: &str, status: StatusCode, body: &str) -> StoreError {
        let body = body.trim();
        let reason = if body.is_empty() {
            format!("HTTP {status}")
        } else {
            let cut: String = body.chars().take(300).collect();
            format!("HTTP {status}: {cut}")
        };
        StoreError::Registry {
            registry: self.name(),
            doing: doing.to_string(),
            reason,
            hint: hint(status),
        }
    }

    fn net_error(&self, doing: &str, e: reqwest::Error) -> StoreError {
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            reason.push_str(": ");
            reason.push_str(&s.to_string());
            source = s.source();
        }
        StoreError::Registry {
            registry: self.name(),
            doing: doing.to_string(),
            reason,
            hint: "check that the registry is reachable at Cluster spec.openshift.registryEndpoint \
                   (and its TLS certificate trusted)",
        }
    }

    fn auth_header(&self, scope: &str) -> Option<HeaderValue> {
        if let Some(h) = self.tokens.lock().ok().and_then(|t| t.get(scope).cloned()) {
            return Some(h);
        }
        match &self.auth {
            Some(RegistryAuth::Token(t)) => HeaderValue::from_str(&format!("Bearer {t}")).ok(),
            _ => None,
        }
    }

    fn basic(&self) -> Option<(String, String)> {
        match &self.auth {
            Some(RegistryAuth::Token(t)) => Some(("lifeboat".into(), t.clone())),
            Some(RegistryAuth::Basic { username, password }) => {
                Some((username.clone(), password.clone()))
            }
            None => None,
        }
    }

    /// Answers a challenge: the `Authorization` value to retry with.
    async fn answer(&self, doing: &str, challenge: &str, scope: &str) -> Result<HeaderValue> {
        let refused = |why: &str| StoreError::Registry {
            registry: self.name(),
            doing: doing.to_string(),
            reason: format!("HTTP 401 ({why})"),
            hint: hint(StatusCode::UNAUTHORIZED),
        };
        let value = match parse_challenge(challenge) {
            Some(Challenge::Basic) => {
                let (u, p) = self
                    .basic()
                    .ok_or_else(|| refused("the registry asks for credentials and none are set"))?;
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
                )
            }
            Some(Challenge::Bearer { realm, service }) => {
                let mut url =
                    Url::parse(&realm).map_err(|_| refused("its token realm is not a URL"))?;
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = &service {
                        q.append_pair("service", s);
                    }
                    q.append_pair("scope", scope);
                }
                let mut req = self.http.get(url);
                if let Some((u, p)) = self.basic() {
                    req = req.basic_auth(u, Some(p));
                }
                let resp = req
                    .send()
                    .await
                    .map_err(|e| self.net_error("asking for a token", e))?;
                if !resp.status().is_success() {
                    let status = resp.status();
                    let body = resp.text().await.unwrap_or_default();
                    return Err(self.error("asking for a token", status, &body));
                }
                #[derive(Deserialize)]
                struct Token {
                    token: Option<String>,
                    access_token: Option<String>,
                }
                let body = resp
                    .bytes()
                    .await
                    .map_err(|e| self.net_error("reading the token", e))?;
                let t: Token = serde_json::from_slice(&body)
                    .map_err(|_| refused("its token endpoint did not answer JSON"))?;
                let token = t
                    .token
                    .or(t.access_token)
                    .ok_or_else(|| refused("its token endpoint returned no token"))?;
                format!("Bearer {token}")
            }
            None => return Err(refused("no supported WWW-Authenticate challenge")),
        };
        let value = HeaderValue::from_str(&value).map_err(|_| refused("an unusable token"))?;
        if let Ok(mut t) = self.tokens.lock() {
            t.insert(scope.to_string(), value.clone());
        }
        Ok(value)
    }

    /// Sends a request without a body, answering one auth challenge.
    async fn send(
        &self,
        doing: &str,
        scope: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let mut req = build();
        if let Some(h) = self.auth_header(scope) {
            req = req.header(AUTHORIZATION, h);
        }
        let resp = req.send().await.map_err(|e| self.net_error(doing, e))?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let challenge = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let header = self.answer(doing, &challenge, scope).await?;
        build()
            .header(AUTHORIZATION, header)
            .send()
            .await
            .map_err(|e| self.net_error(doing, e))
    }

    async fn ok(&self, doing: &str, resp: reqwest::Response) -> Result<reqwest::Response> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        Err(self.error(doing, status, &body))
    }

    fn pull(repo: &str) -> String {
        format!("repository:{repo}:pull")
    }

    fn push(repo: &str) -> String {
        format!("repository:{repo}:pull,push")
    }

    /// The manifest `reference` (a tag or digest) of `repo`; a digest
    /// reference is verified.
    pub async fn manifest(&self, repo: &str, reference: &str) -> Result<FetchedManifest> {
        let doing = format!("reading manifest {repo}:{reference}");
        let url = self.url(&format!("v2/{repo}/manifests/{reference}"))?;
        let resp = self
            .send(&doing, &Self::pull(repo), || {
                self.http.get(url.clone()).header(ACCEPT, ACCEPTED)
            })
            .await?;
        let resp = self.ok(&doing, resp).await?;
        let header = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = resp.bytes().await.map_err(|e| self.net_error(&doing, e))?;
        if bytes.len() > MAX_MANIFEST {
            return Err(StoreError::Registry {
                registry: self.name(),
                doing,
                reason: format!("the manifest is {} bytes", bytes.len()),
                hint: "manifests above 4 MiB are not copied",
            });
        }
        let digest = digest_of(&bytes);
        if reference.starts_with("sha256:") && digest != reference {
            return Err(StoreError::DigestMismatch {
                registry: self.name(),
                what: format!("manifest {repo}@{reference}"),
                expected: reference.to_string(),
                actual: digest,
            });
        }
        let media_type =
            media_type_of(&bytes, header.as_deref()).ok_or_else(|| StoreError::Registry {
                registry: self.name(),
                doing: doing.clone(),
                reason: "it is not an OCI or Docker schema 2 manifest".into(),
                hint: "Docker schema 1 images are not copied; push the image again with a \
                       current client",
            })?;
        Ok(FetchedManifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// The response streaming blob `digest` of `repo`.
    pub async fn blob(&self, repo: &str, digest: &str) -> Result<reqwest::Response> {
        let doing = format!("reading blob {digest} of {repo}");
        let url = self.url(&format!("v2/{repo}/blobs/{digest}"))?;
        let resp = self
            .send(&doing, &Self::pull(repo), || self.http.get(url.clone()))
            .await?;
        self.ok(&doing, resp).await
    }

    async fn exists(&self, doing: &str, scope: &str, url: Url) -> Result<bool> {
        let resp = self
            .send(doing, scope, || {
                self.http.request(Method::HEAD, url.clone())
            })
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(self.error(doing, s, "")),
        }
    }

    /// Whether `repo` has blob `digest`. `push` asks with push rights (a
    /// restore about to push), so one token serves both.
    pub async fn has_blob(&self, repo: &str, digest: &str, push: bool) -> Result<bool> {
        let scope = if push {
            Self::push(repo)
        } else {
            Self::pull(repo)
        };
        let url = self.url(&format!("v2/{repo}/blobs/{digest}"))?;
        self.exists(&format!("looking for blob {digest} in {repo}"), &scope, url)
            .await
    }

    /// Whether `repo` has manifest `reference`.
    pub async fn has_manifest(&self, repo: &str, reference: &str) -> Result<bool> {
        let url = self.url(&format!("v2/{repo}/manifests/{reference}"))?;
        let doing = format!("looking for manifest {reference} in {repo}");
        let resp = self
            .send(&doing, &Self::push(repo), || {
                self.http
                    .request(Method::HEAD, url.clone())
                    .header(ACCEPT, ACCEPTED)
            })
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(self.error(&doing, s, "")),
        }
    }

    /// Uploads blob `digest` into `repo` from `body` (streamed); the
    /// registry checks the digest before it keeps the blob.
    pub async fn push_blob(&self, repo: &str, digest: &str, body: reqwest::Body) -> Result<()> {
        let doing = format!("pushing blob {digest} to {repo}");
        let scope = Self::push(repo);
        let url = self.url(&format!("v2/{repo}/blobs/uploads/"))?;
        let resp = self
            .send(&doing, &scope, || self.http.post(url.clone()))
            .await?;
        let resp = self.ok(&doing, resp).await?;
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| StoreError::Registry {
                registry: self.name(),
                doing: doing.clone(),
                reason: "the upload was started without a Location".into(),
                hint: "the registry does not follow the distribution API",
            })?;
        let mut upload = self.url(location)?;
        upload.query_pairs_mut().append_pair("digest", digest);
        let mut req = self
            .http
            .put(upload)
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(body);
        if let Some(h) = self.auth_header(&scope) {
            req = req.header(AUTHORIZATION, h);
        }
        let resp = req.send().await.map_err(|e| self.net_error(&doing, e))?;
        self.ok(&doing, resp).await.map(|_| ())
    }

    /// Stores a manifest under `reference` (a tag or its digest); returns
    /// the digest the registry computed.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<String> {
        let doing = format!("pushing manifest {repo}:{reference}");
        let url = self.url(&format!("v2/{repo}/manifests/{reference}"))?;
        let resp = self
            .send(&doing, &Self::push(repo), || {
                self.http
                    .put(url.clone())
                    .header(CONTENT_TYPE, media_type)
                    .body(bytes.clone())
            })
            .await?;
        let resp = self.ok(&doing, resp).await?;
        Ok(resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .unwrap_or_else(|| digest_of(&bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse_with_commas_in_values() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://r.example/token",service="registry",scope="repository:a/b:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://r.example/token".into(),
                service: Some("registry".into())
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="basic-realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn names_and_digests_are_checked() {
        assert!(valid_repository("shop/web"));
        assert!(valid_repository("a.b/c_d-e"));
        assert!(!valid_repository("Shop/web"));
        assert!(!valid_repository("shop/../web"));
        assert!(!valid_repository("shop//web"));
        assert!(valid_digest(&digest_of(b"x")));
        assert!(!valid_digest("sha512:00"));
        assert!(!valid_digest("sha256:../../etc"));
    }

    #[test]
    fn manifests_name_their_blobs_and_platforms() {
        let d = |c: &str| digest_of(c.as_bytes());
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d("c"), "size": 1},
            "layers": [{"digest": d("l1"), "size": 2}, {"digest": d("l1"), "size": 2}],
        });
        let bytes = serde_json::to_vec(&manifest).unwrap();
        assert_eq!(media_type_of(&bytes, None).as_deref(), Some(OCI_MANIFEST));
        let refs = manifest_refs(&bytes, OCI_MANIFEST).unwrap();
        assert_eq!(refs.blobs, [(d("c"), 1), (d("l1"), 2)]);
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": d("amd64"), "size": 3},
                          {"mediaType": DOCKER_MANIFEST, "digest": d("arm64"), "size": 3}],
        });
        let bytes = serde_json::to_vec(&index).unwrap();
        assert_eq!(media_type_of(&bytes, None).as_deref(), Some(OCI_INDEX));
        let refs = manifest_refs(&bytes, OCI_INDEX).unwrap();
        assert_eq!(refs.manifests.len(), 2);
        assert_eq!(refs.manifests[1].1, DOCKER_MANIFEST);
        let bad =
            serde_json::json!({"schemaVersion": 2, "config": {"digest": "md5:x"}, "layers": []});
        let err = manifest_refs(&serde_json::to_vec(&bad).unwrap(), OCI_MANIFEST).unwrap_err();
        assert!(err.contains("sha256"), "{err}");
    }
}
