//! `lifeboat backups verify`'s check of volume data: every snapshot a
//! backup's manifest lists is in its namespace's repository, and its file
//! still hashes to its name (restic names snapshot files by the SHA-256 of
//! their stored bytes, and the signed manifest names them by id).
//!
//! The check needs no key: it reads the encrypted snapshot files as stored.
//! Whether the data packs they reference are intact is `lifeboat volumes
//! check`'s job (it needs the repository key and reads every pack).

use futures::FutureExt;
use futures::future::BoxFuture;
use lifeboat_store::{BackupCheck, BackupReader, Finding, StoreError, Verification, VolumePhase};
use object_store::ObjectStoreExt;
use sha2::Digest;

use crate::repo::{generation_holding, missing_snapshot, snapshot_path};

/// The check's name in findings and logs.
pub const CHECK: &str = "volume-snapshots";
/// The finding that lists a CSI snapshot a backup kept in its cluster.
pub const KEPT_CHECK: &str = "kept-snapshot";

/// Checks a backup's volume snapshots in `location`, the storage location
/// the backup is in (volume repositories live beside the backups).
#[derive(Debug)]
pub struct SnapshotsCheck {
    location: lifeboat_store::Repository,
}

impl SnapshotsCheck {
    pub fn new(location: lifeboat_store::Repository) -> SnapshotsCheck {
        SnapshotsCheck { location }
    }

    async fn check_all(
        &self,
        backup: &BackupReader,
        out: &mut Verification,
    ) -> lifeboat_store::Result<()> {
        let cluster = backup.manifest().cluster.clone();
        for v in backup.volumes() {
            let subject = format!("volumes/{}/{}", v.namespace, v.pvc);
            if let Some(k) = &v.kept {
                // In the cluster's storage system, not in the location:
                // listed, not checked from here.
                out.push(Finding {
                    detail: Some(format!(
                        "VolumeSnapshotContent {} (method {}), in cluster `{cluster}`; not \
                         checked from the location",
                        k.content, v.method
                    )),
                    ..Finding::ok(&subject, KEPT_CHECK)
                });
            }
            let Some(id) = v.snapshot.as_deref() else {
                // A failed or skipped volume has no data to check; the
                // manifest already says why. A `snapshot` volume's data is
                // its kept snapshot.
                if v.phase == VolumePhase::Completed && v.kept.is_none() {
                    out.push(Finding::damaged(
                        &subject,
                        CHECK,
                        "the manifest records the volume as completed without a snapshot id",
                    ));
                }
                continue;
            };
            let generation = generation_holding(&self.location, &cluster, &v.namespace, id)
                .await
                .map_err(|e| StoreError::Check {
                    check: CHECK.into(),
                    detail: e.to_string(),
                })?;
            let Some(generation) = generation else {
                out.push(Finding::damaged(
                    &subject,
                    CHECK,
                    format!(
                        "{}, so this claim's data cannot be restored",
                        missing_snapshot(&self.location, &cluster, &v.namespace, id)
                    ),
                ));
                continue;
            };
            let path = snapshot_path(&cluster, &v.namespace, generation, id);
            let read = async { self.location.object_store().get(&path).await?.bytes().await };
            let bytes = read
                .await
                .map_err(|e| StoreError::storage("read", &path, e))?;
            let digest = hex::encode(sha2::Sha256::digest(&bytes));
            out.push(if digest == id {
                Finding::ok(&subject, CHECK)
            } else {
                Finding::damaged(
                    &subject,
                    CHECK,
                    format!(
                        "{}/{path} hashes to {digest}, not to its name: the snapshot file was \
                         modified or replaced after the backup",
                        self.location.url()
                    ),
                )
            });
        }
        Ok(())
    }
}

impl BackupCheck for SnapshotsCheck {
    fn name(&self) -> &str {
        CHECK
    }

    fn check<'a>(
        &'a self,
        backup: &'a BackupReader,
        out: &'a mut Verification,
    ) -> BoxFuture<'a, lifeboat_store::Result<()>> {
        self.check_all(backup, out).boxed()
    }
}
