//! The catalog: what backups exist, deleting them, finding incomplete ones,
//! and restore records.
//!
//! Listing reads only object listings (paged by object_store) and
//! `manifest.json` files, never archives. A backup directory without a
//! manifest is *incomplete*: never listed, reported by
//! [`Repository::incomplete_backups`] once it is older than a grace period.
//! Deleting removes the manifest first, so a half-deleted backup is never
//! listed as complete.

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};
use jiff::{SignedDuration, Timestamp};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt};

use crate::error::{Result, StoreError};
use crate::model::{Manifest, OPERATION_FORMAT_VERSION, Operation, OrphanMark, RestoreRecord};
use crate::repo::{MANIFEST, OPERATION, Repository, layout, parse_backup_name, validate_name};
use crate::signing::{SignatureCheck, SignedKind, Subject};

const MANIFEST_FETCH_CONCURRENCY: usize = 16;

/// Result of listing the backups of a cluster.
#[derive(Debug, Clone, Default)]
pub struct BackupList {
    /// Committed backups, sorted by name (policy, then schedule slot).
    pub backups: Vec<Manifest>,
    /// Manifests that exist but could not be read: (backup name, error).
    /// They do not stop the listing so planning keeps working.
    pub unreadable: Vec<(String, String)>,
    /// The signature of each listed backup, by backup directory name.
    pub signatures: BTreeMap<String, SignatureCheck>,
}

impl BackupList {
    /// The signature check of a listed manifest.
    pub fn signature(&self, manifest: &Manifest) -> Option<&SignatureCheck> {
        self.signatures.get(&manifest.backup_name)
    }
}

/// A backup directory without a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncompleteBackup {
    pub cluster: String,
    pub backup: String,
    /// Newest `last_modified` of its objects.
    pub last_modified: Timestamp,
    pub objects: u64,
    pub bytes: u64,
    /// Its operation record: running, or interrupted and resumable.
    pub operation: Option<Operation>,
}

#[derive(Debug, Default)]
struct Dir {
    has_manifest: bool,
    newest: Option<Timestamp>,
    objects: u64,
    bytes: u64,
}

impl Repository {
    /// Committed backups of `cluster`, optionally only those of `policy`.
    pub async fn list_backups(&self, cluster: &str, policy: Option<&str>) -> Result<BackupList> {
        validate_name("cluster", cluster)?;
        let dirs = self.backup_dirs(cluster).await?;
        let names: Vec<String> = dirs
            .into_iter()
            .filter(|(name, dir)| {
                dir.has_manifest
                    && policy.is_none_or(|p| parse_backup_name(name).is_some_and(|(bp, _)| bp == p))
            })
            .map(|(name, _)| name)
            .collect();
        type Fetched = Result<Option<(Manifest, SignatureCheck)>>;
        let fetched: Vec<(String, Fetched)> = futures::stream::iter(names)
            .map(|name| async move {
                let manifest = self.read_manifest(cluster, &name).await;
                (name, manifest)
            })
            .buffered(MANIFEST_FETCH_CONCURRENCY)
            .collect()
            .await;
        let mut list = BackupList::default();
        for (name, manifest) in fetched {
            match manifest {
                Ok(Some((m, check))) if policy.is_none_or(|p| m.policy == p) => {
                    // A manifest stored under another name would shadow
                    // the real one: key it by its directory.
                    if m.backup_name == name {
                        list.signatures.insert(name, check);
                        list.backups.push(m);
                    } else {
                        list.unreadable.push((name, check.describe()));
                    }
                }
                // Deleted between listing and reading, or another policy.
                Ok(_) => {}
                Err(e @ StoreError::InvalidJson { .. }) => {
                    list.unreadable.push((name, e.to_string()))
                }
                Err(e) => return Err(e),
            }
        }
        Ok(list)
    }

    /// A manifest, its signature checked against the trusted keys.
    pub(crate) async fn read_manifest(
        &self,
        cluster: &str,
        backup: &str,
    ) -> Result<Option<(Manifest, SignatureCheck)>> {
        let path = layout::backup_file(cluster, backup, MANIFEST);
        let Some((bytes, sig)) = self.get_signed(&path).await? else {
            return Ok(None);
        };
        let manifest: Manifest = self.parse_json(&path, &bytes)?;
        let check = self.trust().check(
            &Subject {
                kind: SignedKind::Backup,
                path_cluster: cluster,
                path_name: backup,
                claimed_cluster: &manifest.cluster,
                claimed_name: &manifest.backup_name,
            },
            &bytes,
            sig.as_deref(),
        );
        Ok(Some((manifest, check)))
    }

    /// The manifest of one committed backup.
    pub async fn show_backup(&self, cluster: &str, backup: &str) -> Result<Manifest> {
        Ok(self.open_backup(cluster, backup).await?.manifest().clone())
    }

    /// Deletes a backup, complete or not: the manifest first, then the
    /// rest. Returns the number of objects deleted.
    pub async fn delete_backup(&self, cluster: &str, backup: &str) -> Result<u64> {
        validate_name("cluster", cluster)?;
        validate_name("backup", backup)?;
        let manifest = layout::backup_file(cluster, backup, MANIFEST);
        let mut deleted = 0;
        match self.store().delete(&manifest).await {
            Ok(()) => deleted += 1,
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(StoreError::storage("delete", self.display(&manifest), e)),
        }
        let dir = layout::backup_dir(cluster, backup);
        let rest: Vec<ObjectMeta> = self
            .store()
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(|e| StoreError::storage("list", self.display(&dir), e))?;
        // LocalFileSystem reports deleting a missing manifest as success,
        // so count what the listing saw.
        let locations = rest.into_iter().map(|m| Ok(m.location)).collect::<Vec<_>>();
        let count = locations.len() as u64;
        let store = self.store().clone();
        store
            .delete_stream(futures::stream::iter(locations).boxed())
            .try_collect::<Vec<Path>>()
            .await
            .map_err(|e| StoreError::storage("delete", self.display(&dir), e))?;
        deleted += count;
        if deleted == 0 {
            return Err(StoreError::BackupNotFound {
                url: self.url().to_string(),
                cluster: cluster.into(),
                backup: backup.into(),
            });
        }
        Ok(deleted)
    }

    /// Backup directories without a manifest whose newest object is older
    /// than `now - grace`: interrupted writers. Delete them with
    /// [`Repository::delete_backup`].
    pub async fn incomplete_backups(
        &self,
        cluster: &str,
        now: Timestamp,
        grace: SignedDuration,
    ) -> Result<Vec<IncompleteBackup>> {
        validate_name("cluster", cluster)?;
        let cutoff = now - grace;
        let mut out = Vec::new();
        for (name, dir) in self.backup_dirs(cluster).await? {
            let Some(newest) = dir.newest else { continue };
            if dir.has_manifest || newest >= cutoff {
                continue;
            }
            let operation = self.read_operation(cluster, &name).await?;
            out.push(IncompleteBackup {
                cluster: cluster.into(),
                backup: name,
                last_modified: newest,
                objects: dir.objects,
                bytes: dir.bytes,
                operation,
            });
        }
        Ok(out)
    }

    /// The operation record of a backup being written (or interrupted).
    /// One that cannot be parsed (another version's) counts as none.
    pub async fn read_operation(&self, cluster: &str, backup: &str) -> Result<Option<Operation>> {
        validate_name("cluster", cluster)?;
        validate_name("backup", backup)?;
        let path = layout::backup_file(cluster, backup, OPERATION);
        match self.get_json::<Operation>(&path).await {
            Ok(op) => Ok(op.filter(|o| o.format_version == OPERATION_FORMAT_VERSION)),
            Err(StoreError::InvalidJson { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes (or replaces) the record of a restore request.
    pub async fn write_restore_record(
        &self,
        cluster: &str,
        request: &str,
        record: &RestoreRecord,
    ) -> Result<()> {
        validate_name("cluster", cluster)?;
        validate_name("restore request", request)?;
        self.ensure_marker().await?;
        self.put_signed_json(
            &layout::restore_record(cluster, request),
            record,
            SignedKind::Restore,
            cluster,
            request,
            record.end_time.unwrap_or(record.start_time),
        )
        .await
    }

    /// The signature state of a restore record, `None` if it never ran.
    pub async fn restore_record_signature(
        &self,
        cluster: &str,
        request: &str,
    ) -> Result<Option<SignatureCheck>> {
        validate_name("cluster", cluster)?;
        validate_name("restore request", request)?;
        let path = layout::restore_record(cluster, request);
        let Some((bytes, sig)) = self.get_signed(&path).await? else {
            return Ok(None);
        };
        let record: RestoreRecord = self.parse_json(&path, &bytes)?;
        Ok(Some(self.trust().check(
            &Subject {
                kind: SignedKind::Restore,
                path_cluster: cluster,
                path_name: request,
                claimed_cluster: &record.target_cluster,
                claimed_name: &record.request,
            },
            &bytes,
            sig.as_deref(),
        )))
    }

    /// The record of a restore request, `None` if it never ran.
    pub async fn read_restore_record(
        &self,
        cluster: &str,
        request: &str,
    ) -> Result<Option<RestoreRecord>> {
        validate_name("cluster", cluster)?;
        validate_name("restore request", request)?;
        self.get_json(&layout::restore_record(cluster, request))
            .await
    }

    /// Records that backups of `policy` lost their policy at `since`
    /// (idempotent: an existing mark is kept, so the grace period is not
    /// restarted).
    pub async fn mark_orphaned(
        &self,
        cluster: &str,
        policy: &str,
        since: Timestamp,
    ) -> Result<OrphanMark> {
        validate_name("cluster", cluster)?;
        validate_name("policy", policy)?;
        let path = layout::orphan_mark(cluster, policy);
        if let Some(existing) = self.get_json::<OrphanMark>(&path).await? {
            return Ok(existing);
        }
        let mark = OrphanMark {
            policy: policy.into(),
            since,
        };
        self.ensure_marker().await?;
        self.put_json(&path, &mark).await?;
        Ok(mark)
    }

    /// Removes the orphan mark of `policy` (its policy is back in Git).
    pub async fn unmark_orphaned(&self, cluster: &str, policy: &str) -> Result<()> {
        validate_name("cluster", cluster)?;
        validate_name("policy", policy)?;
        let path = layout::orphan_mark(cluster, policy);
        match self.store().delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StoreError::storage("delete", self.display(&path), e)),
        }
    }

    /// Every orphan mark of `cluster`, sorted by policy.
    pub async fn orphan_marks(&self, cluster: &str) -> Result<Vec<OrphanMark>> {
        validate_name("cluster", cluster)?;
        let prefix = layout::orphans(cluster);
        let metas: Vec<ObjectMeta> = self
            .store()
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| StoreError::storage("list", self.display(&prefix), e))?;
        let mut marks = Vec::new();
        for meta in metas {
            if meta.location.extension() != Some("json") {
                continue;
            }
            if let Some(mark) = self.get_json::<OrphanMark>(&meta.location).await? {
                marks.push(mark);
            }
        }
        marks.sort_by(|a, b| a.policy.cmp(&b.policy));
        Ok(marks)
    }

    /// One listing of `clusters/<cluster>/backups/`, grouped by directory.
    async fn backup_dirs(&self, cluster: &str) -> Result<BTreeMap<String, Dir>> {
        let prefix = layout::backups(cluster);
        let depth = prefix.parts().count();
        let mut dirs: BTreeMap<String, Dir> = BTreeMap::new();
        let mut stream = self.store().list(Some(&prefix));
        while let Some(meta) = stream.next().await {
            let meta = meta.map_err(|e| StoreError::storage("list", self.display(&prefix), e))?;
            let parts: Vec<_> = meta.location.parts().skip(depth).collect();
            let [backup, file] = parts.as_slice() else {
                continue; // not <backup>/<file>: not ours
            };
            let dir = dirs.entry(backup.as_ref().to_string()).or_default();
            if file.as_ref() == MANIFEST {
                dir.has_manifest = true;
            }
            let modified = Timestamp::new(
                meta.last_modified.timestamp(),
                meta.last_modified.timestamp_subsec_nanos() as i32,
            )
            .unwrap_or(Timestamp::UNIX_EPOCH);
            dir.newest = Some(dir.newest.map_or(modified, |n| n.max(modified)));
            dir.objects += 1;
            dir.bytes += meta.size;
        }
        Ok(dirs)
    }
}
