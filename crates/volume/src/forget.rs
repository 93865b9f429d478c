//! Deleting a backup together with its volume snapshots.
//!
//! A backup's manifest names its restic snapshots by id, so forgetting them
//! is deleting `snapshots/<id>` in the generation that holds each: restic's
//! `forget` does no more, and it needs no key. The data they reference stays
//! until a prune (two-phase, under the repository's lock) finds it unused.
//!
//! Order: the snapshots first, then the backup (manifest first). A crash in
//! between leaves a backup whose deletion the next prune or `backups delete`
//! finishes; the other order would leave snapshots nobody lists.
//!
//! A manifest whose signature a restore would refuse (forged, or signed by
//! a key nobody trusts) is deleted without forgetting the snapshots it
//! names: they may be another backup's, named to have them forgotten.
//!
//! A backup without a manifest (interrupted, cancelled) forgets the
//! snapshots of the volumes its operation record says it finished, unless
//! signatures are required (the record is unsigned).

use lifeboat_store::{StoreError, VolumePhase};
use object_store::ObjectStoreExt;

use crate::repo::{generation_holding, snapshot_path};

/// What deleting a backup removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deleted {
    /// Objects of the backup deleted (manifest, archive, index, …).
    pub files: u64,
    /// Volume snapshots forgotten, as `<namespace>/<pvc>@<id>`.
    pub snapshots: Vec<String>,
    /// Snapshots the manifest names that were not forgotten, and why.
    pub kept: Vec<String>,
}

/// Deletes backup `backup` of `cluster` from `location`, forgetting its
/// volume snapshots first.
pub async fn delete_backup(
    location: &lifeboat_store::Repository,
    cluster: &str,
    backup: &str,
) -> lifeboat_store::Result<Deleted> {
    let mut out = Deleted::default();
    let (volumes, refusal) = match location.open_backup(cluster, backup).await {
        Ok(reader) => (reader.volumes().to_vec(), reader.signature().refusal()),
        // No manifest: an interrupted or cancelled backup. Its operation
        // record names the volumes it finished. The record is unsigned, so
        // where signatures are required its snapshots are kept (a forged
        // record could name another backup's).
        Err(StoreError::BackupNotFound { .. }) => {
            match location.read_operation(cluster, backup).await? {
                Some(op) => {
                    let refusal = location.trust().required_for(cluster).then(|| {
                        "named only by the unsigned operation record of an unfinished backup \
                         while signatures are required; forget it by hand if it is no other \
                         backup's"
                            .to_string()
                    });
                    (op.volumes, refusal)
                }
                None => (Vec::new(), None),
            }
        }
        // A manifest that cannot be read names nothing we can trust; the
        // backup's objects still go.
        Err(StoreError::InvalidJson { .. }) => (Vec::new(), None),
        Err(e) => return Err(e),
    };
    for v in &volumes {
        let (Some(id), VolumePhase::Completed) = (v.snapshot.as_deref(), v.phase) else {
            continue;
        };
        let name = format!("{}/{}@{id}", v.namespace, v.pvc);
        if let Some(why) = &refusal {
            out.kept.push(format!("{name}: not forgotten, {why}"));
            continue;
        }
        let generation = generation_holding(location, cluster, &v.namespace, id)
            .await
            .map_err(|e| StoreError::Check {
                check: "forget".into(),
                detail: e.to_string(),
            })?;
        let Some(generation) = generation else {
            // Forgotten already (an earlier, interrupted deletion).
            continue;
        };
        let path = snapshot_path(cluster, &v.namespace, generation, id);
        match location.object_store().delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => out.snapshots.push(name),
            Err(e) => return Err(StoreError::storage("delete", &path, e)),
        }
    }
    out.files = location.delete_backup(cluster, backup).await?;
    Ok(out)
}
