//! Finding, creating and opening the restic repository of a namespace.
//!
//! ```text
//! <location>/volumes/<cluster>/<namespace>/         generation 1
//! <location>/volumes/<cluster>/<namespace>.g<N>/    generation N (after a compromise)
//!     config, keys/, data/, index/, snapshots/      restic's layout
//!     lifeboat-key.age                              the password, sealed to the recipients
//!     lifeboat-key.json                             which recipients it is sealed to
//!     lifeboat-locks/                               see `lock`
//! ```
//!
//! The newest generation is the one written; older ones stay readable with
//! their own `lifeboat-key.age`.

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use rustic_core::repofile::ConfigFile;
use rustic_core::{
    ConfigOptions, Credentials, KeyOptions, OpenStatus, Repository, RepositoryBackends,
    RepositoryOptions,
};
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;

use crate::backend::{Control, ObjectBackend};
use crate::error::{Result, VolumeError};
use crate::keys::{KeyCache, new_password};

/// The sealed password's file name in the repository.
pub const KEY_FILE: &str = "lifeboat-key.age";
/// The recipients the key is sealed to.
pub const KEY_INFO_FILE: &str = "lifeboat-key.json";
/// Claimed by the one writer that initialises the repository.
const INIT_CLAIM: &str = "lifeboat-init";
/// How long others wait for the claimant's config before taking over.
const INIT_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Which repository: (location, cluster, namespace, generation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoRef {
    /// The StorageLocation's name (or URL); part of the cache key.
    pub location: String,
    pub cluster: String,
    pub namespace: String,
    pub generation: u32,
}

impl RepoRef {
    /// The repository's directory below the location.
    pub fn base(&self) -> Path {
        let dir = if self.generation <= 1 {
            self.namespace.clone()
        } else {
            format!("{}.g{}", self.namespace, self.generation)
        };
        Path::from("volumes")
            .clone()
            .join(self.cluster.as_str())
            .clone()
            .join(dir.as_str())
    }

    /// The name of this repository's entry in a [`KeyCache`].
    pub fn cache_key(&self) -> String {
        let clean = |s: &str| {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '-'
                    }
                })
                .collect::<String>()
        };
        format!(
            "{}.{}.{}.g{}",
            clean(&self.location),
            clean(&self.cluster),
            clean(&self.namespace),
            self.generation.max(1)
        )
    }
}

/// What `lifeboat-key.json` records.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct KeyInfo {
    pub generation: u32,
    /// The age recipients `lifeboat-key.age` is sealed to, sorted.
    pub recipients: Vec<String>,
}

/// An opened volume repository: where it is and its password.
#[derive(Clone)]
pub struct VolumeRepo {
    pub(crate) location: lifeboat_store::Repository,
    pub(crate) reference: RepoRef,
    pub(crate) password: String,
    /// A repository lifeboat did not write (Velero's): its directory below
    /// the location, instead of [`RepoRef::base`].
    pub(crate) foreign: Option<Path>,
}

impl std::fmt::Debug for VolumeRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeRepo")
            .field("reference", &self.reference)
            .field("password", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Checks a name used in repository paths (cluster, namespace).
pub fn validate(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(VolumeError::Invalid(format!(
            "{what} {name:?} is not a valid name (lowercase letters, digits and '-')"
        )))
    }
}

/// Every repository directory of `cluster` in `location`, as (namespace,
/// generation): `<namespace>` is generation 1, `<namespace>.g<N>` is N.
pub(crate) async fn repository_dirs(
    location: &lifeboat_store::Repository,
    cluster: &str,
) -> Result<Vec<(String, u32)>> {
    let store = location.object_store();
    let dir = Path::from("volumes").join(cluster);
    let listing = store
        .list_with_delimiter(Some(&dir))
        .await
        .map_err(|e| VolumeError::Storage(format!("list {}/{dir}: {e}", location.url())))?;
    Ok(listing
        .common_prefixes
        .iter()
        .filter_map(|p| p.filename())
        .map(|name| match name.rsplit_once(".g") {
            Some((ns, g)) if !ns.is_empty() && g.parse::<u32>().is_ok() => {
                (ns.to_string(), g.parse().unwrap_or(1))
            }
            _ => (name.to_string(), 1),
        })
        .collect())
}

/// The generations of a namespace's repository that have a directory,
/// newest first (`[1]` when none exists yet).
pub async fn generations(
    location: &lifeboat_store::Repository,
    cluster: &str,
    namespace: &str,
) -> Result<Vec<u32>> {
    let mut found = vec![1];
    found.extend(
        repository_dirs(location, cluster)
            .await?
            .into_iter()
            .filter(|(ns, _)| ns == namespace)
            .map(|(_, g)| g),
    );
    found.sort_unstable_by(|a, b| b.cmp(a));
    found.dedup();
    Ok(found)
}

/// The newest generation of a namespace's repository (1 when none exists).
pub async fn current_generation(
    location: &lifeboat_store::Repository,
    cluster: &str,
    namespace: &str,
) -> Result<u32> {
    Ok(generations(location, cluster, namespace).await?[0])
}

/// The generation whose repository holds snapshot `id`, newest first;
/// `None` when no generation has it (forgotten, or never written).
///
/// A backup's volumes are in the generation that was newest when it was
/// written: after a key compromise starts a new one, older backups'
/// snapshots stay in theirs.
pub async fn generation_holding(
    location: &lifeboat_store::Repository,
    cluster: &str,
    namespace: &str,
    id: &str,
) -> Result<Option<u32>> {
    let store = location.object_store();
    for g in generations(location, cluster, namespace).await? {
        let path = snapshot_path(cluster, namespace, g, id);
        match store.head(&path).await {
            Ok(_) => return Ok(Some(g)),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => {
                return Err(VolumeError::Storage(format!(
                    "head {}/{path}: {e}",
                    location.url()
                )));
            }
        }
    }
    Ok(None)
}

/// Why snapshot `id` cannot be found: no generation holds it.
pub fn missing_snapshot(
    location: &lifeboat_store::Repository,
    cluster: &str,
    namespace: &str,
    id: &str,
) -> String {
    format!(
        "snapshot {id} is in no volume repository of namespace {namespace} under \
         {}/volumes/{cluster}/: it was forgotten or deleted",
        location.url()
    )
}

/// Where snapshot `id` of a generation is stored below the location.
pub fn snapshot_path(cluster: &str, namespace: &str, generation: u32, id: &str) -> Path {
    RepoRef {
        location: String::new(),
        cluster: cluster.into(),
        namespace: namespace.into(),
        generation,
    }
    .base()
    .clone()
    .join("snapshots")
    .join(id)
}

impl VolumeRepo {
    /// The repository's URL, e.g. `s3://bucket/prefix/volumes/c/ns`.
    pub fn url(&self) -> String {
        format!(
            "{}/{}",
            self.location.url().trim_end_matches('/'),
            self.base()
        )
    }

    /// The repository's directory below the location.
    pub(crate) fn base(&self) -> Path {
        self.foreign
            .clone()
            .unwrap_or_else(|| self.reference.base())
    }

    /// Opens, for reading, a restic repository lifeboat did not write —
    /// Velero's of a namespace (`restic/<namespace>`) — at `dir` below
    /// `location` (a [`lifeboat_store::Repository::foreign`] view), with
    /// `password`. Only restores read it: lifeboat never writes there.
    pub async fn open_foreign(
        location: &lifeboat_store::Repository,
        dir: &str,
        password: String,
    ) -> Result<VolumeRepo> {
        let dir = dir.trim_matches('/');
        let base = Path::from(dir);
        if dir.is_empty() || base.as_ref() != dir {
            return Err(VolumeError::Invalid(format!(
                "`{dir}` is not a repository directory below the location"
            )));
        }
        let config = base.clone().join("config");
        match location.object_store().head(&config).await {
            Ok(_) => {}
            Err(object_store::Error::NotFound { .. }) => {
                return Err(VolumeError::NoRepository {
                    repo: format!("{}/{}", location.url().trim_end_matches('/'), base),
                });
            }
            Err(e) => return Err(VolumeError::Storage(format!("head {config}: {e}"))),
        }
        Ok(VolumeRepo {
            location: location.clone(),
            reference: RepoRef {
                location: location.url().to_string(),
                cluster: String::new(),
                namespace: dir.rsplit('/').next().unwrap_or(dir).to_string(),
                generation: 1,
            },
            password,
            foreign: Some(base),
        })
    }

    /// The `restic -r …` form of [`VolumeRepo::url`].
    pub fn restic_url(&self) -> String {
        let url = self.url();
        if let Some(path) = url.strip_prefix("file://") {
            path.to_string()
        } else if let Some(rest) = url.strip_prefix("s3://") {
            format!("s3:<endpoint>/{rest}")
        } else if let Some(rest) = url.strip_prefix("gs://") {
            format!("gs:{}", rest.replacen('/', ":/", 1))
        } else if let Some(rest) = url.strip_prefix("az://") {
            format!("azure:{}", rest.replacen('/', ":/", 1))
        } else {
            url
        }
    }

    pub fn reference(&self) -> &RepoRef {
        &self.reference
    }

    /// The repository password (for `lifeboat volumes key`).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// Opens the repository for writing, creating it (and its key) when it
    /// does not exist yet. The password comes from `cache`; when the cache
    /// has none and the repository exists, the location's identities open
    /// `lifeboat-key.age` (and re-seed the cache), else the error names the
    /// command that does.
    pub async fn open_or_create(
        location: &lifeboat_store::Repository,
        location_name: &str,
        cluster: &str,
        namespace: &str,
        cache: &dyn KeyCache,
    ) -> Result<VolumeRepo> {
        validate("cluster", cluster)?;
        validate("namespace", namespace)?;
        if location.recipients().is_empty() {
            return Err(VolumeError::NoRecipients {
                location: location.url().into(),
            });
        }
        let generation = current_generation(location, cluster, namespace).await?;
        let reference = RepoRef {
            location: location_name.into(),
            cluster: cluster.into(),
            namespace: namespace.into(),
            generation,
        };
        let repo = VolumeRepo::with_key(location, reference, Some(cache), true).await?;
        repo.create_if_absent().await?;
        repo.reseal_if_needed().await?;
        Ok(repo)
    }

    /// Opens an existing repository for reading (snapshots, restore, key,
    /// check). The password comes from `cache` when it has it, else from
    /// `lifeboat-key.age` with the location's identities. `generation`
    /// `None` means the newest.
    pub async fn open_existing(
        location: &lifeboat_store::Repository,
        location_name: &str,
        cluster: &str,
        namespace: &str,
        generation: Option<u32>,
        cache: Option<&dyn KeyCache>,
    ) -> Result<VolumeRepo> {
        validate("cluster", cluster)?;
        validate("namespace", namespace)?;
        let generation = match generation {
            Some(g) => g,
            None => current_generation(location, cluster, namespace).await?,
        };
        let reference = RepoRef {
            location: location_name.into(),
            cluster: cluster.into(),
            namespace: namespace.into(),
            generation,
        };
        let store = location.object_store();
        let config = reference.base().join("config");
        match store.head(&config).await {
            Ok(_) => {}
            Err(object_store::Error::NotFound { .. }) => {
                return Err(VolumeError::NoRepository {
                    repo: format!("{}/{}", location.url(), reference.base()),
                });
            }
            Err(e) => return Err(VolumeError::Storage(format!("head {config}: {e}"))),
        }
        VolumeRepo::with_key(location, reference, cache, false).await
    }

    /// Opens, for reading, the generation of a namespace's repository that
    /// holds snapshot `id` (a backup's volumes stay in the generation that
    /// was newest when it ran, also after a compromise started a new one).
    pub async fn open_holding(
        location: &lifeboat_store::Repository,
        location_name: &str,
        cluster: &str,
        namespace: &str,
        id: &str,
        cache: Option<&dyn KeyCache>,
    ) -> Result<VolumeRepo> {
        validate("cluster", cluster)?;
        validate("namespace", namespace)?;
        let Some(generation) = generation_holding(location, cluster, namespace, id).await? else {
            return Err(VolumeError::Invalid(format!(
                "{}; restore this claim from another backup",
                missing_snapshot(location, cluster, namespace, id)
            )));
        };
        VolumeRepo::open_existing(
            location,
            location_name,
            cluster,
            namespace,
            Some(generation),
            cache,
        )
        .await
    }

    /// Starts a new generation after a compromise: a new repository with a
    /// new password and master key. Older generations stay as they are.
    pub async fn new_generation(
        location: &lifeboat_store::Repository,
        location_name: &str,
        cluster: &str,
        namespace: &str,
        cache: &dyn KeyCache,
    ) -> Result<VolumeRepo> {
        let current = current_generation(location, cluster, namespace).await?;
        let exists = location
            .object_store()
            .head(
                &RepoRef {
                    location: location_name.into(),
                    cluster: cluster.into(),
                    namespace: namespace.into(),
                    generation: current,
                }
                .base()
                .clone()
                .join("config"),
            )
            .await
            .is_ok();
        let next = if exists { current + 1 } else { current };
        // The new directory's first object makes it the newest generation.
        let reference = RepoRef {
            location: location_name.into(),
            cluster: cluster.into(),
            namespace: namespace.into(),
            generation: next,
        };
        if location.recipients().is_empty() {
            return Err(VolumeError::NoRecipients {
                location: location.url().into(),
            });
        }
        let repo = VolumeRepo::with_key(location, reference, Some(cache), true).await?;
        repo.create_if_absent().await?;
        Ok(repo)
    }

    /// Finds the password: cache, then the sealed key, else (when `create`)
    /// a new one, sealed create-if-absent.
    async fn with_key(
        location: &lifeboat_store::Repository,
        reference: RepoRef,
        cache: Option<&dyn KeyCache>,
        create: bool,
    ) -> Result<VolumeRepo> {
        let store = location.object_store();
        let base = reference.base();
        let key_path = base.clone().join(KEY_FILE);
        let display = format!("{}/{}", location.url(), key_path);
        let name = reference.cache_key();
        if let Some(cache) = cache
            && let Some(password) = cache.get(&name).await?
        {
            return Ok(VolumeRepo {
                location: location.clone(),
                reference,
                password,
                foreign: None,
            });
        }
        let sealed = get_optional(&store, &key_path).await?;
        let password = match sealed {
            Some(sealed) => {
                if !location.has_identities() {
                    return Err(VolumeError::KeyNotCached {
                        repo: format!("{}/{}", location.url(), base),
                    });
                }
                let password = unseal(location, &sealed, &display)?;
                if let Some(cache) = cache {
                    cache.put(&name, &password).await?;
                }
                password
            }
            None if create => {
                let mut password = new_password()?;
                if let Some(cache) = cache {
                    // Two first movers of one cluster agree through the cache.
                    password = cache.insert_if_absent(&name, &password).await?;
                }
                let sealed = location.seal(password.as_bytes())?;
                location.ensure_marker().await?;
                let opts = PutOptions {
                    mode: PutMode::Create,
                    ..PutOptions::default()
                };
                match store
                    .put_opts(&key_path, PutPayload::from(sealed), opts)
                    .await
                {
                    Ok(_) => {
                        write_key_info(location, &reference).await?;
                        password
                    }
                    Err(
                        object_store::Error::AlreadyExists { .. }
                        | object_store::Error::Precondition { .. },
                    ) => {
                        // Another writer sealed its key first: use theirs.
                        let sealed = get_optional(&store, &key_path).await?.ok_or_else(|| {
                            VolumeError::Storage(format!("{display} vanished after a conflict"))
                        })?;
                        if !location.has_identities() {
                            return Err(VolumeError::KeyNotCached {
                                repo: format!("{}/{}", location.url(), base),
                            });
                        }
                        unseal(location, &sealed, &display)?
                    }
                    Err(e) => return Err(VolumeError::Storage(format!("write {display}: {e}"))),
                }
            }
            None => {
                return Err(VolumeError::Unseal {
                    path: display,
                    reason: "the repository has no lifeboat-key.age; it was not created by \
                             lifeboat (open it with restic and its own password)"
                        .into(),
                });
            }
        };
        Ok(VolumeRepo {
            location: location.clone(),
            reference,
            password,
            foreign: None,
        })
    }

    /// Initialises the restic repository unless its config exists. The
    /// config is written create-if-absent, so of two racing first writers
    /// exactly one initialises it; the other opens it.
    async fn create_if_absent(&self) -> Result<()> {
        let store = self.location.object_store();
        let base = self.reference.base();
        let config = base.clone().join("config");
        let claim = base.clone().join(INIT_CLAIM);
        if store.head(&config).await.is_ok() {
            return Ok(());
        }
        self.location.ensure_marker().await?;
        // rustic's init writes a key file before the config, so two racing
        // inits would leave a second master key. One writer claims the init
        // (create-if-absent); the others wait for its config.
        let waited = std::time::Instant::now();
        loop {
            let opts = PutOptions {
                mode: PutMode::Create,
                ..PutOptions::default()
            };
            match store
                .put_opts(&claim, PutPayload::from_static(b"{}"), opts)
                .await
            {
                Ok(_) => break,
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ) => {
                    if store.head(&config).await.is_ok() {
                        return Ok(());
                    }
                    if waited.elapsed() > INIT_WAIT {
                        // The claimant died before writing the config.
                        let _ = store.delete(&claim).await;
                        continue;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                Err(e) => return Err(VolumeError::Storage(format!("write {claim}: {e}"))),
            }
        }
        if store.head(&config).await.is_ok() {
            let _ = store.delete(&claim).await;
            return Ok(());
        }
        let repo = self.clone();
        let created = blocking(move || {
            let rustic = repo.rustic_unopened(Control::new())?;
            let mut config = ConfigOptions::default();
            config.set_version = Some(2);
            config.set_compression = Some(3);
            rustic
                .init(
                    &Credentials::password(&repo.password),
                    &KeyOptions::default(),
                    &config,
                )
                .map(|_| ())
                .map_err(|e| VolumeError::rustic(format!("cannot initialise {}", repo.url()), &e))
        })
        .await;
        let _ = store.delete(&claim).await;
        created
    }

    /// Re-seals `lifeboat-key.age` when the location's recipients changed.
    pub async fn reseal_if_needed(&self) -> Result<bool> {
        let store = self.location.object_store();
        let info_path = self.reference.base().join(KEY_INFO_FILE);
        let mut wanted = self.location.recipients();
        wanted.sort();
        let current: Option<KeyInfo> = get_optional(&store, &info_path)
            .await?
            .and_then(|b| serde_json::from_slice(&b).ok());
        if current.as_ref().is_some_and(|c| c.recipients == wanted) {
            return Ok(false);
        }
        self.reseal().await?;
        Ok(true)
    }

    /// Seals the password to the location's current recipients, replacing
    /// `lifeboat-key.age` (the holder of the key does this).
    pub async fn reseal(&self) -> Result<()> {
        let store = self.location.object_store();
        let key_path = self.reference.base().join(KEY_FILE);
        let sealed = self.location.seal(self.password.as_bytes())?;
        store
            .put(&key_path, PutPayload::from(sealed))
            .await
            .map_err(|e| VolumeError::Storage(format!("write {key_path}: {e}")))?;
        write_key_info(&self.location, &self.reference).await
    }

    /// A rustic repository over this location (not opened).
    pub(crate) fn rustic_unopened(&self, control: Arc<Control>) -> Result<Repository<()>> {
        self.rustic_unopened_with(control, rustic_core::NoProgressBars)
    }

    /// As [`VolumeRepo::rustic_unopened`], reporting progress to `bars`.
    pub(crate) fn rustic_unopened_with<P: rustic_core::ProgressBars>(
        &self,
        control: Arc<Control>,
        bars: P,
    ) -> Result<Repository<()>> {
        let backend = ObjectBackend::new(
            self.location.object_store(),
            self.base(),
            self.url(),
            Handle::try_current().map_err(|e| VolumeError::Internal(e.to_string()))?,
            control,
        );
        let backends = RepositoryBackends::new(Arc::new(backend), None);
        let mut opts = RepositoryOptions::default();
        opts.no_cache = true;
        Repository::new_with_progress(&opts, &backends, bars)
            .map_err(|e| VolumeError::rustic(format!("cannot open {}", self.url()), &e))
    }

    /// Opens the rustic repository (blocking; call on a blocking thread
    /// inside the runtime).
    pub(crate) fn rustic(&self, control: Arc<Control>) -> Result<Repository<OpenStatus>> {
        let repo = self.rustic_unopened(control)?;
        repo.open(&Credentials::password(&self.password))
            .map_err(|e| {
                if e.is_incorrect_password() {
                    VolumeError::WrongKey { repo: self.url() }
                } else {
                    VolumeError::rustic(format!("cannot open {}", self.url()), &e)
                }
            })
    }

    /// The repository's restic config (version, compression).
    pub async fn config(&self) -> Result<ConfigFile> {
        let repo = self.clone();
        blocking(move || Ok(repo.rustic(Control::new())?.config().clone())).await
    }

    pub(crate) fn store(&self) -> Arc<dyn ObjectStore> {
        self.location.object_store()
    }
}

async fn write_key_info(location: &lifeboat_store::Repository, reference: &RepoRef) -> Result<()> {
    let mut recipients = location.recipients();
    recipients.sort();
    let info = KeyInfo {
        generation: reference.generation.max(1),
        recipients,
    };
    let mut bytes =
        serde_json::to_vec_pretty(&info).map_err(|e| VolumeError::Internal(e.to_string()))?;
    bytes.push(b'\n');
    let path = reference.base().join(KEY_INFO_FILE);
    location
        .object_store()
        .put(&path, PutPayload::from(bytes))
        .await
        .map(|_| ())
        .map_err(|e| VolumeError::Storage(format!("write {path}: {e}")))
}

fn unseal(location: &lifeboat_store::Repository, sealed: &[u8], display: &str) -> Result<String> {
    let bytes = location
        .unseal(sealed, display)
        .map_err(|e| VolumeError::Unseal {
            path: display.into(),
            reason: e.to_string(),
        })?;
    String::from_utf8(bytes)
        .map(|s| s.trim().to_string())
        .map_err(|_| VolumeError::Unseal {
            path: display.into(),
            reason: "the sealed key is not text".into(),
        })
}

pub(crate) async fn get_optional(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
) -> Result<Option<bytes::Bytes>> {
    match store.get(path).await {
        Ok(r) => r
            .bytes()
            .await
            .map(Some)
            .map_err(|e| VolumeError::Storage(format!("read {path}: {e}"))),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(VolumeError::Storage(format!("read {path}: {e}"))),
    }
}

/// Runs blocking rustic work on a blocking thread; a panic inside rustic
/// becomes an error instead of taking the process down.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown".into());
            Err(VolumeError::Internal(format!(
                "the repository library failed ({msg}); run `lifeboat volumes check` on the repository"
            )))
        }
        Err(e) => Err(VolumeError::Internal(e.to_string())),
    }
}

pub(crate) async fn list_all(store: &Arc<dyn ObjectStore>, prefix: &Path) -> Result<Vec<Path>> {
    store
        .list(Some(prefix))
        .map_ok(|m| m.location)
        .try_collect()
        .await
        .map_err(|e| VolumeError::Storage(format!("list {prefix}: {e}")))
}
