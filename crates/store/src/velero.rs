//! Velero's backups, read where Velero left them: a `format: velero`
//! StorageLocation is the bucket and prefix of a Velero or OADP
//! BackupStorageLocation. lifeboat lists and restores its backups without
//! Velero installed, and never writes there.
//!
//! ```text
//! <prefix>/backups/<name>/velero-backup.json   the Backup object: phase, times, items
//!                        /<name>.tar.gz        the objects:
//!   resources/<resource>[.<group>]/<version>-preferredversion/namespaces/<ns>/<name>.json
//!   resources/<resource>[.<group>]/namespaces/<ns>/<name>.json   unversioned copy
//!   resources/<resource>[.<group>]/<version>/…                    other versions (EnableAPIGroupVersions)
//!   resources/…/cluster/<name>.json                               cluster-scoped objects
//!   metadata/version
//! ```
//!
//! Each object is read from its preferred-version copy, else from its
//! unversioned copy (backups of Velero before 1.4 have only that); copies
//! in other versions are not read. Velero records no checksums, so
//! [`VeleroReader::verify`] checks what can be checked before anything is
//! applied: gzip's CRC and length, the tar structure, and that every
//! object read is a JSON object. The server fields Velero keeps (status,
//! uid, resourceVersion, managedFields) are removed by the restore's
//! transforms, as for every backup.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{self, Read};
use std::sync::{Arc, OnceLock};

use futures::{Stream, TryStreamExt};
use jiff::Timestamp;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::config::{LocationConfig, build_store};
use crate::error::{Result, StoreError};
use crate::model::{Prerequisite, VolumeEntry};
use crate::reader::{ArchiveEntry, RestoreSource, Stop, VerifyReport};
use crate::repo::validate_name;

/// A Velero BackupStorageLocation's bucket and prefix, read-only.
#[derive(Debug, Clone)]
pub struct VeleroLocation {
    store: Arc<dyn ObjectStore>,
    url: String,
}

/// One Velero backup, as its `velero-backup.json` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VeleroBackup {
    pub name: String,
    /// `Completed`, `PartiallyFailed`, `Failed`, `InProgress`, … as Velero
    /// wrote it (empty when it wrote none).
    pub phase: String,
    pub started: Option<Timestamp>,
    pub completed: Option<Timestamp>,
    /// When Velero's `ttl` would have deleted it.
    pub expires: Option<Timestamp>,
    /// Items Velero backed up (`status.progress.itemsBackedUp`).
    pub items: Option<u64>,
    /// The Schedule that took it (label `velero.io/schedule-name`).
    pub schedule: Option<String>,
    /// The tarball's format version (`status.formatVersion`, e.g. `1.1.0`).
    pub format_version: Option<String>,
    pub errors: u64,
    pub warnings: u64,
}

impl VeleroBackup {
    /// Whether lifeboat restores it: Velero finished writing it. A
    /// `PartiallyFailed` backup restores what it holds, as in Velero.
    pub fn restorable(&self) -> bool {
        matches!(self.phase.as_str(), "Completed" | "PartiallyFailed")
    }
}

#[derive(Deserialize)]
struct BackupDoc {
    #[serde(default)]
    metadata: DocMeta,
    #[serde(default)]
    status: DocStatus,
}

#[derive(Deserialize, Default)]
struct DocMeta {
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DocStatus {
    #[serde(default)]
    phase: String,
    start_timestamp: Option<Timestamp>,
    completion_timestamp: Option<Timestamp>,
    expiration: Option<Timestamp>,
    format_version: Option<String>,
    #[serde(default)]
    errors: u64,
    #[serde(default)]
    warnings: u64,
    #[serde(default)]
    progress: DocProgress,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DocProgress {
    items_backed_up: Option<u64>,
}

impl VeleroLocation {
    /// Connects to the location. Reads and writes nothing.
    pub fn open(config: &LocationConfig) -> Result<VeleroLocation> {
        let (store, url) = build_store(config)?;
        Ok(VeleroLocation { store, url })
    }

    /// Uses an existing object store (tests).
    pub fn from_store(store: Arc<dyn ObjectStore>, url: impl Into<String>) -> VeleroLocation {
        VeleroLocation {
            store,
            url: url.into(),
        }
    }

    /// The location URL as configured (for messages).
    pub fn url(&self) -> &str {
        &self.url
    }

    fn display(&self, path: &Path) -> String {
        format!("{}/{}", self.url, path)
    }

    /// Every backup under `backups/`, newest first. A directory without
    /// `velero-backup.json` (Velero deleting it, or an upload it never
    /// finished) is not a backup.
    pub async fn list(&self) -> Result<Vec<VeleroBackup>> {
        let prefix = Path::from("backups");
        let listing = self
            .store
            .list_with_delimiter(Some(&prefix))
            .await
            .map_err(|e| StoreError::storage("list", self.display(&prefix), e))?;
        let mut out = Vec::new();
        for dir in listing.common_prefixes {
            let Some(name) = dir.filename() else { continue };
            match self.describe(name).await {
                Ok(b) => out.push(b),
                Err(StoreError::VeleroBackupNotFound { .. } | StoreError::InvalidName { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| b.started.cmp(&a.started).then_with(|| a.name.cmp(&b.name)));
        Ok(out)
    }

    /// One backup's `velero-backup.json`.
    pub async fn describe(&self, name: &str) -> Result<VeleroBackup> {
        validate_name("backup", name)?;
        let path = Path::from(format!("backups/{name}/velero-backup.json"));
        let bytes = match self.store.get(&path).await {
            Ok(got) => got
                .bytes()
                .await
                .map_err(|e| StoreError::storage("get", self.display(&path), e))?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(StoreError::VeleroBackupNotFound {
                    url: self.url.clone(),
                    backup: name.into(),
                });
            }
            Err(e) => return Err(StoreError::storage("get", self.display(&path), e)),
        };
        let doc: BackupDoc = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            path: self.display(&path),
            reason: format!("not a Velero Backup object: {e}"),
        })?;
        Ok(VeleroBackup {
            name: name.into(),
            phase: doc.status.phase,
            started: doc.status.start_timestamp,
            completed: doc.status.completion_timestamp,
            expires: doc.status.expiration,
            items: doc.status.progress.items_backed_up,
            schedule: doc.metadata.labels.get("velero.io/schedule-name").cloned(),
            format_version: doc.status.format_version,
            errors: doc.status.errors,
            warnings: doc.status.warnings,
        })
    }

    /// Opens a backup for restoring; refuses one Velero did not finish.
    pub async fn open_backup(&self, name: &str) -> Result<VeleroReader> {
        let backup = self.describe(name).await?;
        if !backup.restorable() {
            return Err(StoreError::VeleroBackupNotRestorable {
                backup: name.into(),
                phase: if backup.phase.is_empty() {
                    "no phase".into()
                } else {
                    backup.phase.clone()
                },
            });
        }
        Ok(VeleroReader {
            store: self.store.clone(),
            archive: Path::from(format!("backups/{name}/{name}.tar.gz")),
            url: self.url.clone(),
            backup,
            preferred: Arc::default(),
        })
    }
}

/// Reads one Velero backup's objects.
#[derive(Debug, Clone)]
pub struct VeleroReader {
    store: Arc<dyn ObjectStore>,
    archive: Path,
    url: String,
    backup: VeleroBackup,
    /// The objects that have a preferred-version copy, learnt by the first
    /// pass over the archive (verification).
    preferred: Arc<OnceLock<HashSet<ObjectKey>>>,
}

/// `<resource>[.<group>]`, namespace, name.
type ObjectKey = (String, Option<String>, String);

/// Which copy of an object an archive path holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Copy {
    Preferred,
    Unversioned,
    /// Another API version: not read.
    OtherVersion,
}

/// Parses a path of Velero's tarball; `None` for what is not an object
/// (`metadata/version`, directories).
fn parse_path(path: &str) -> Option<(Copy, ObjectKey)> {
    let parts: Vec<&str> = path.trim_start_matches("./").split('/').collect();
    let ["resources", gr, rest @ ..] = parts.as_slice() else {
        return None;
    };
    let (copy, ns, file) = match rest {
        ["namespaces", ns, file] => (Copy::Unversioned, Some(*ns), *file),
        ["cluster", file] => (Copy::Unversioned, None, *file),
        [version, "namespaces", ns, file] => (version_copy(version), Some(*ns), *file),
        [version, "cluster", file] => (version_copy(version), None, *file),
        _ => return None,
    };
    let name = file.strip_suffix(".json")?;
    if name.is_empty() || gr.is_empty() {
        return None;
    }
    Some((
        copy,
        (gr.to_string(), ns.map(str::to_string), name.to_string()),
    ))
}

fn version_copy(dir: &str) -> Copy {
    if dir.ends_with("-preferredversion") {
        Copy::Preferred
    } else {
        Copy::OtherVersion
    }
}

/// What the first pass found.
struct Scan {
    objects: u64,
    preferred: HashSet<ObjectKey>,
}

impl VeleroReader {
    pub fn backup(&self) -> &VeleroBackup {
        &self.backup
    }

    fn display(&self) -> String {
        format!("{}/{}", self.url, self.archive)
    }

    /// Streams the tarball once on a blocking thread, giving `each` every
    /// object's copy kind, key, archive path and bytes; then reads gzip's
    /// trailer, whose CRC and length are checked.
    async fn stream(
        &self,
        mut each: impl FnMut(Copy, ObjectKey, String, Vec<u8>) -> Result<(), Stop> + Send + 'static,
    ) -> Result<()> {
        let display = self.display();
        let got = match self.store.get(&self.archive).await {
            Ok(got) => got,
            Err(e @ object_store::Error::NotFound { .. }) => {
                return Err(StoreError::Corrupt {
                    path: display,
                    reason: format!(
                        "velero-backup.json is there but the tarball is not ({e}); Velero may \
                         still be uploading it, or it was deleted"
                    ),
                });
            }
            Err(e) => return Err(StoreError::storage("get", display, e)),
        };
        let stream = got.into_stream().map_err(io::Error::other);
        let bridge = SyncIoBridge::new(StreamReader::new(stream));
        tokio::task::spawn_blocking(move || {
            let corrupt = |reason: String| StoreError::Corrupt {
                path: display.clone(),
                reason,
            };
            let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bridge));
            let result: Result<(), Stop> = (|| {
                for entry in archive.entries()? {
                    let mut entry = entry?;
                    if !entry.header().entry_type().is_file() {
                        continue;
                    }
                    let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                    let Some((copy, key)) = parse_path(&path) else {
                        continue;
                    };
                    let mut json = Vec::with_capacity(entry.size().min(1 << 24) as usize);
                    entry.read_to_end(&mut json)?;
                    each(copy, key, path, json)?;
                }
                Ok(())
            })();
            match result {
                Ok(()) => {}
                Err(Stop::Io(e)) => return Err(corrupt(e.to_string())),
                Err(Stop::Invalid(reason)) => return Err(corrupt(reason)),
                Err(Stop::Cancelled) => {
                    return Err(StoreError::Task("reading was cancelled".into()));
                }
            }
            // The tar end marker comes before gzip's trailer: read to the
            // end so that the CRC and length are checked.
            io::copy(&mut archive.into_inner(), &mut io::sink())
                .map_err(|e| corrupt(format!("gzip trailer: {e}")))?;
            Ok(())
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// The first pass: checks the whole tarball and learns which objects
    /// have a preferred-version copy.
    async fn scan(&self) -> Result<Scan> {
        let found = Arc::new(std::sync::Mutex::new((
            HashSet::<ObjectKey>::new(),
            HashSet::<ObjectKey>::new(),
        )));
        let sink = found.clone();
        self.stream(move |copy, key, path, json| {
            match serde_json::from_slice::<serde_json::Value>(&json) {
                Ok(serde_json::Value::Object(_)) => {}
                Ok(_) => return Err(Stop::Invalid(format!("{path} is not a JSON object"))),
                Err(e) => return Err(Stop::Invalid(format!("{path}: {e}"))),
            }
            let mut sets = sink.lock().map_err(|_| Stop::Cancelled)?;
            match copy {
                Copy::Preferred => {
                    sets.0.insert(key);
                }
                Copy::Unversioned => {
                    sets.1.insert(key);
                }
                Copy::OtherVersion => {}
            }
            Ok(())
        })
        .await?;
        let (preferred, unversioned) = std::mem::take(
            &mut *found
                .lock()
                .map_err(|_| StoreError::Task("a reader panicked".into()))?,
        );
        let objects = preferred.union(&unversioned).count() as u64;
        Ok(Scan { objects, preferred })
    }
}

impl RestoreSource for VeleroReader {
    async fn verify(&self) -> Result<VerifyReport> {
        let scan = self.scan().await?;
        let _ = self.preferred.set(scan.preferred);
        Ok(VerifyReport {
            objects: scan.objects,
            log_lines: 0,
            stored_bytes: 0,
        })
    }

    /// Velero's file-system and data-mover volume data is not read yet.
    fn volumes(&self) -> &[VolumeEntry] {
        &[]
    }

    fn prerequisites(&self) -> &[Prerequisite] {
        &[]
    }

    /// Single claims restore with their data, which is not read from
    /// Velero backups yet.
    async fn claims(&self) -> Result<BTreeSet<(String, String)>> {
        Err(StoreError::InvalidConfig(format!(
            "{}: restoring single claims needs their volume data, which lifeboat does not read \
             from Velero backups yet; restore the backup's objects without --claim",
            self.display()
        )))
    }

    fn entries(&self) -> impl Stream<Item = Result<ArchiveEntry>> + Send + 'static {
        let (tx, rx) = mpsc::channel::<Result<ArchiveEntry>>(32);
        let reader = self.clone();
        tokio::spawn(async move {
            let preferred = match reader.preferred.get() {
                Some(p) => p.clone(),
                None => match reader.scan().await {
                    Ok(scan) => scan.preferred,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                },
            };
            let sender = tx.clone();
            let result = reader
                .stream(move |copy, key, path, json| {
                    let wanted = match copy {
                        Copy::Preferred => true,
                        Copy::Unversioned => !preferred.contains(&key),
                        Copy::OtherVersion => false,
                    };
                    if !wanted {
                        return Ok(());
                    }
                    let (group_resource, namespace, name) = key;
                    let (resource, group) = group_resource
                        .split_once('.')
                        .unwrap_or((&group_resource, ""));
                    let item = ArchiveEntry {
                        path,
                        resource: resource.into(),
                        group: group.into(),
                        namespace,
                        name,
                        json: json.into(),
                    };
                    sender.blocking_send(Ok(item)).map_err(|_| Stop::Cancelled)
                })
                .await;
            if let Err(e) = result {
                let _ = tx.send(Err(e)).await;
            }
        });
        futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    /// `(group-resource, namespace, name)` as written in a case.
    type Key<'a> = (&'a str, Option<&'a str>, &'a str);

    #[rstest]
    #[case("resources/pods/namespaces/web/a.json", Some((Copy::Unversioned, ("pods", Some("web"), "a"))))]
    #[case("resources/deployments.apps/v1-preferredversion/namespaces/web/api.json", Some((Copy::Preferred, ("deployments.apps", Some("web"), "api"))))]
    #[case("resources/deployments.apps/v1beta1/namespaces/web/api.json", Some((Copy::OtherVersion, ("deployments.apps", Some("web"), "api"))))]
    #[case("resources/namespaces/cluster/web.json", Some((Copy::Unversioned, ("namespaces", None, "web"))))]
    #[case("resources/namespaces/v1-preferredversion/cluster/web.json", Some((Copy::Preferred, ("namespaces", None, "web"))))]
    // A namespace named `cluster` is still a namespace.
    #[case("resources/pods/namespaces/cluster/a.json", Some((Copy::Unversioned, ("pods", Some("cluster"), "a"))))]
    #[case("./resources/pods/namespaces/web/a.json", Some((Copy::Unversioned, ("pods", Some("web"), "a"))))]
    #[case("metadata/version", None)]
    #[case("resources/pods/namespaces/web/", None)]
    #[case("resources/pods/namespaces/web/a.yaml", None)]
    fn paths(#[case] path: &str, #[case] expect: Option<(Copy, Key<'_>)>) {
        let expect = expect
            .map(|(c, (gr, ns, n))| (c, (gr.to_string(), ns.map(str::to_string), n.to_string())));
        assert_eq!(parse_path(path), expect);
    }
}
