//! The repository: one prefix in object storage, its marker
//! (`lifeboat.json`) and the layout of everything below it.
//!
//! ```text
//! <prefix>/lifeboat.json                                   marker (format, id)
//! <prefix>/clusters/<cluster>/backups/<backup>/…           see writer.rs
//! <prefix>/clusters/<cluster>/restores/<request>/record.json
//! ```
//!
//! [`Repository::open`] checks the marker: a newer format or foreign data
//! (objects but no marker) is refused. The marker is created on the first
//! write, so read-only users never write.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use jiff::Timestamp;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;

use crate::config::{LocationConfig, build_store};
use crate::crypto::Keys;
use crate::error::{Result, StoreError};
use crate::model::{FORMAT_VERSION, LIFEBOAT_VERSION, RepositoryMarker};
use crate::signing::{SIGNATURE_SUFFIX, SignedKind, SigningKey, Trust};

pub(crate) const MARKER: &str = "lifeboat.json";

/// A lifeboat repository in object storage. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Repository {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub store: Arc<dyn ObjectStore>,
    pub url: String,
    pub keys: Keys,
    /// Keys trusted to sign what is read here.
    pub trust: Trust,
    /// The key this writer signs with.
    pub signer: Option<SigningKey>,
    marker_written: OnceCell<()>,
}

impl Repository {
    /// Connects to the location and checks its marker. Writes nothing.
    pub async fn open(config: &LocationConfig) -> Result<Repository> {
        let keys = Keys::parse(&config.recipients, &config.identities)?;
        let trust = Trust::new(&config.trusted_keys)?;
        let signer = config
            .signing_key
            .as_deref()
            .map(SigningKey::parse)
            .transpose()?;
        let (store, url) = build_store(config)?;
        Ok(Repository::with_store(store, url, keys)
            .await?
            .with_signing(trust, signer))
    }

    /// A view of data another tool wrote below a location (Velero's restic
    /// repositories in its bucket), for reading: no marker is checked, and
    /// none is ever written ([`Repository::ensure_marker`] does nothing),
    /// so the location is left as that tool laid it out. It has no keys.
    pub fn foreign(store: Arc<dyn ObjectStore>, url: impl Into<String>) -> Repository {
        let marker_written = OnceCell::new();
        let _ = marker_written.set(());
        Repository {
            inner: Arc::new(Inner {
                store,
                url: url.into(),
                keys: Keys::default(),
                trust: Trust::default(),
                signer: None,
                marker_written,
            }),
        }
    }

    /// The same repository, trusting `trust` when reading and signing with
    /// `signer` when writing.
    pub fn with_signing(self, trust: Trust, signer: Option<SigningKey>) -> Repository {
        let inner = &self.inner;
        let marker_written = OnceCell::new();
        if inner.marker_written.initialized() {
            let _ = marker_written.set(());
        }
        Repository {
            inner: Arc::new(Inner {
                store: inner.store.clone(),
                url: inner.url.clone(),
                keys: inner.keys.clone(),
                trust,
                signer,
                marker_written,
            }),
        }
    }

    /// The keys trusted to sign what is read here.
    pub fn trust(&self) -> &Trust {
        &self.inner.trust
    }

    /// The key id this repository signs with, if any.
    pub fn signing_key_id(&self) -> Option<&str> {
        self.inner.signer.as_ref().map(SigningKey::key_id)
    }

    /// Uses an existing object store (for example `InMemory` in tests of
    /// other crates). `recipients` / `identities` as in [`LocationConfig`].
    pub async fn from_store(
        store: Arc<dyn ObjectStore>,
        url: impl Into<String>,
        recipients: &[String],
        identities: &[String],
    ) -> Result<Repository> {
        let keys = Keys::parse(recipients, identities)?;
        Repository::with_store(store, url.into(), keys).await
    }

    async fn with_store(
        store: Arc<dyn ObjectStore>,
        url: String,
        keys: Keys,
    ) -> Result<Repository> {
        let repo = Repository {
            inner: Arc::new(Inner {
                store,
                url,
                keys,
                trust: Trust::default(),
                signer: None,
                marker_written: OnceCell::new(),
            }),
        };
        let mut marker = repo.read_marker().await?;
        if marker.is_none() {
            match repo.first_object().await? {
                // Another writer created the marker between the read and
                // the list (two clusters starting on one empty location).
                Some(example) if example == MARKER => marker = repo.read_marker().await?,
                Some(example) => {
                    return Err(StoreError::ForeignData {
                        url: repo.inner.url.clone(),
                        example,
                    });
                }
                None => {}
            }
        }
        if let Some(marker) = marker {
            if marker.format > FORMAT_VERSION {
                return Err(StoreError::NewerFormat {
                    url: repo.inner.url.clone(),
                    found: marker.format,
                    supported: FORMAT_VERSION,
                });
            }
            // Already there; never rewrite it.
            let _ = repo.inner.marker_written.set(());
        }
        Ok(repo)
    }

    /// The location URL as configured (for messages).
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The age recipients new backups are encrypted to.
    pub fn recipients(&self) -> Vec<String> {
        self.inner.keys.recipient_strings()
    }

    /// The repository marker, if the repository has been written to.
    pub async fn marker(&self) -> Result<Option<RepositoryMarker>> {
        self.read_marker().await
    }

    async fn read_marker(&self) -> Result<Option<RepositoryMarker>> {
        let Some(bytes) = self.get_optional(&Path::from(MARKER)).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StoreError::InvalidMarker {
                url: self.inner.url.clone(),
                source,
            })
    }

    async fn first_object(&self) -> Result<Option<String>> {
        let mut list = self.inner.store.list(None);
        match list.next().await {
            Some(Ok(meta)) => Ok(Some(meta.location.to_string())),
            Some(Err(e)) => Err(StoreError::storage("list", &self.inner.url, e)),
            None => Ok(None),
        }
    }

    /// Writes the marker once per process if the repository has none.
    /// Other writers below the location (volume data) call it before their
    /// first write, so the location is never mistaken for foreign data.
    pub async fn ensure_marker(&self) -> Result<()> {
        self.inner
            .marker_written
            .get_or_try_init(|| async {
                if self.read_marker().await?.is_some() {
                    return Ok(());
                }
                let marker = RepositoryMarker {
                    format: FORMAT_VERSION,
                    id: random_id()?,
                    created_by: format!("lifeboat {LIFEBOAT_VERSION}"),
                };
                self.put_json(&Path::from(MARKER), &marker).await
            })
            .await
            .map(|_| ())
    }

    pub(crate) fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner.store
    }

    /// The object store rooted at the location (for data lifeboat keeps
    /// below it in other formats, such as the restic repositories of volume
    /// data).
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.inner.store.clone()
    }

    /// Whether age identities were given (so sealed files can be opened).
    pub fn has_identities(&self) -> bool {
        !self.inner.keys.identities.is_empty()
    }

    /// Encrypts `plaintext` to the location's recipients (an age v1 file).
    /// Fails when the location has no recipients.
    pub fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>> {
        if self.inner.keys.recipients.is_empty() {
            return Err(StoreError::InvalidConfig(format!(
                "the storage location {} has no encryption recipients; add \
                 spec.encryption.recipients (age public keys) to seal keys to",
                self.inner.url
            )));
        }
        let mut out = Vec::new();
        let mut w = self.inner.keys.encrypt(&mut out)?;
        std::io::Write::write_all(&mut w, plaintext)
            .and_then(|()| w.finish().map(|_| ()))
            .map_err(|e| StoreError::Encrypt(e.to_string()))?;
        Ok(out)
    }

    /// Decrypts an age file with the configured identities. `path` names the
    /// file in messages.
    pub fn unseal(&self, sealed: &[u8], path: &str) -> Result<Vec<u8>> {
        let recipients = self.recipients();
        let mut r = self.inner.keys.decrypt(sealed, path, &recipients)?;
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut r, &mut out).map_err(|e| StoreError::Corrupt {
            path: path.into(),
            reason: format!("age: {e}"),
        })?;
        Ok(out)
    }

    pub(crate) fn display(&self, path: &Path) -> String {
        format!("{}/{}", self.inner.url, path)
    }

    pub(crate) async fn get_optional(&self, path: &Path) -> Result<Option<Bytes>> {
        match self.inner.store.get(path).await {
            Ok(r) => r
                .bytes()
                .await
                .map(Some)
                .map_err(|e| StoreError::storage("get", self.display(path), e)),
            // A missing bucket answers 404 too: that is no missing object.
            Err(e @ object_store::Error::NotFound { .. })
                if crate::diagnose::Cause::of(&e) != Some(crate::diagnose::Cause::NoSuchBucket) =>
            {
                Ok(None)
            }
            Err(e) => Err(StoreError::storage("get", self.display(path), e)),
        }
    }

    pub(crate) async fn get_json<T: DeserializeOwned>(&self, path: &Path) -> Result<Option<T>> {
        let Some(bytes) = self.get_optional(path).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StoreError::InvalidJson {
                path: self.display(path),
                source,
            })
    }

    pub(crate) async fn put_json<T: Serialize>(&self, path: &Path, value: &T) -> Result<()> {
        let bytes = self.json_bytes(path, value)?;
        self.put_bytes(path, bytes).await
    }

    fn json_bytes<T: Serialize>(&self, path: &Path, value: &T) -> Result<Vec<u8>> {
        let mut bytes =
            serde_json::to_vec_pretty(value).map_err(|source| StoreError::InvalidJson {
                path: self.display(path),
                source,
            })?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    /// Writes `bytes` as they are.
    pub(crate) async fn put_raw(&self, path: &Path, bytes: Vec<u8>) -> Result<()> {
        self.put_bytes(path, bytes).await
    }

    async fn put_bytes(&self, path: &Path, bytes: Vec<u8>) -> Result<()> {
        self.inner
            .store
            .put(path, PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| StoreError::storage("put", self.display(path), e))
    }

    /// Writes `value` as JSON at `path`, first its signature at
    /// `path.minisig` when this repository signs, so the JSON (the commit
    /// point) never exists without it. Without a signer a stale signature
    /// is removed, so it cannot be mistaken for one over the new bytes.
    pub(crate) async fn put_signed_json<T: Serialize>(
        &self,
        path: &Path,
        value: &T,
        kind: SignedKind,
        cluster: &str,
        name: &str,
        time: Timestamp,
    ) -> Result<()> {
        let bytes = self.json_bytes(path, value)?;
        let sig_path = signature_path(path);
        match &self.inner.signer {
            Some(signer) => {
                let sig = signer.sign(kind, cluster, name, time, &bytes)?;
                self.put_bytes(&sig_path, sig.into_bytes()).await?;
            }
            None => match self.inner.store.delete(&sig_path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(StoreError::storage("delete", self.display(&sig_path), e)),
            },
        }
        self.put_bytes(path, bytes).await
    }

    /// The bytes at `path` and the signature next to it, if any.
    pub(crate) async fn get_signed(&self, path: &Path) -> Result<Option<(Bytes, Option<String>)>> {
        let sig_path = signature_path(path);
        let (data, sig) = futures::join!(self.get_optional(path), self.get_optional(&sig_path));
        let Some(data) = data? else {
            return Ok(None);
        };
        let sig = sig?.map(|b| String::from_utf8_lossy(&b).into_owned());
        Ok(Some((data, sig)))
    }

    pub(crate) fn parse_json<T: DeserializeOwned>(&self, path: &Path, bytes: &[u8]) -> Result<T> {
        serde_json::from_slice(bytes).map_err(|source| StoreError::InvalidJson {
            path: self.display(path),
            source,
        })
    }
}

/// Layout helpers: every path below the prefix is built here.
pub(crate) mod layout {
    use super::*;

    pub fn backups(cluster: &str) -> Path {
        Path::from_iter(["clusters", cluster, "backups"])
    }

    pub fn backup_dir(cluster: &str, backup: &str) -> Path {
        Path::from_iter(["clusters", cluster, "backups", backup])
    }

    /// A file of a backup; `file` may name a subdirectory
    /// (`volumes/<namespace>/<pvc>.json`).
    pub fn backup_file(cluster: &str, backup: &str, file: &str) -> Path {
        Path::from_iter(
            ["clusters", cluster, "backups", backup]
                .into_iter()
                .chain(file.split('/')),
        )
    }

    pub fn restore_record(cluster: &str, request: &str) -> Path {
        Path::from_iter(["clusters", cluster, "restores", request, "record.json"])
    }

    pub fn orphans(cluster: &str) -> Path {
        Path::from_iter(["clusters", cluster, "orphans"])
    }

    pub fn orphan_mark(cluster: &str, policy: &str) -> Path {
        Path::from_iter(["clusters", cluster, "orphans", &format!("{policy}.json")])
    }
}

pub(crate) const MANIFEST: &str = "manifest.json";
/// A backup's operation record, while it is written.
pub(crate) const OPERATION: &str = "operation.json";

/// `<path>.minisig`.
pub(crate) fn signature_path(path: &Path) -> Path {
    Path::from(format!("{path}{SIGNATURE_SUFFIX}"))
}

/// Checks a cluster, policy, backup or request name used as a path segment.
pub fn validate_name(what: &'static str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidName {
            what,
            name: name.to_string(),
        })
    }
}

/// The backup name of a policy's schedule slot:
/// `<policy>-<YYYYMMDD>-<HHMMSS>` in UTC.
pub fn backup_name(policy: &str, slot: Timestamp) -> String {
    format!("{policy}-{}", slot.strftime("%Y%m%d-%H%M%S"))
}

/// Splits a backup name into policy and schedule slot; `None` if the name
/// does not end in `-YYYYMMDD-HHMMSS`.
pub fn parse_backup_name(name: &str) -> Option<(&str, Timestamp)> {
    const SUFFIX: usize = "-YYYYMMDD-HHMMSS".len();
    let split = name.len().checked_sub(SUFFIX)?;
    if !name.is_char_boundary(split) || split == 0 {
        return None;
    }
    let (policy, suffix) = name.split_at(split);
    let slot = jiff::civil::DateTime::strptime("-%Y%m%d-%H%M%S", suffix).ok()?;
    let slot = slot.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp();
    Some((policy, slot))
}

fn random_id() -> Result<String> {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|e| {
        StoreError::io(
            "cannot get random bytes",
            std::io::Error::other(e.to_string()),
        )
    })?;
    Ok(hex::encode(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_names_round_trip() {
        let slot: Timestamp = "2025-03-30T01:30:00Z".parse().unwrap_or_default();
        let name = backup_name("db-main", slot);
        assert_eq!(name, "db-main-20250330-013000");
        assert_eq!(parse_backup_name(&name), Some(("db-main", slot)));
    }

    #[rstest::rstest]
    #[case("")]
    #[case("x-2025")]
    #[case("-20250330-013000")]
    #[case("p-20251330-013000")]
    #[case("p-2025033a-013000")]
    fn bad_backup_names(#[case] name: &str) {
        assert_eq!(parse_backup_name(name), None);
    }

    #[rstest::rstest]
    #[case("prod", true)]
    #[case("prod-eu.1", true)]
    #[case("", false)]
    #[case("..", false)]
    #[case("a/b", false)]
    #[case("Prod", false)]
    #[case("-x", false)]
    fn names(#[case] name: &str, #[case] ok: bool) {
        assert_eq!(validate_name("cluster", name).is_ok(), ok);
    }
}
