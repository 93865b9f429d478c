//! Kept snapshots: CSI snapshots a backup leaves in the storage system
//! (method `snapshot`, or `keepLocalSnapshots` of `snapshotMove`).
//!
//! ```text
//! kept:    the exposed clone content (see the parent module), set to Retain
//!          and labelled lifeboat.dev/kept=<method>, its VolumeSnapshot
//!          deleted ─▶ no Delete owner of the handle; the storage snapshot
//!          lives as long as the content
//! restore: a temporary content (Retain) from the recorded handle, bound
//!          to a VolumeSnapshot in lifeboat-movers ─▶ a claim there with it
//!          as dataSource ─▶ bound (the provisioner filled the volume) ─▶
//!          the volume handed to the restore's claim ─▶ the temporary
//!          snapshot and content deleted (Retain: the storage snapshot stays)
//! delete:  the content set to Delete (unless another content holds the
//!          handle) ─▶ deleted ─▶ the CSI driver deletes the storage snapshot
//! ```
//!
//! At most one `Delete` owner per handle at any time: a kept content is on
//! Retain, a restore's temporary content too, and a content goes to
//! `Delete` only when it is deleted and no other content holds its handle.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::json;

use super::{
    BACKUP_LABEL, ClaimToFill, Created, KEPT_LABEL, KeptSnapshot, MANAGED_BY, Method, MoverOptions,
    MoversClaim, PreProvisioned, RESTORE_LABEL, VolumeError, VolumeProgress, VolumeRestoreResult,
    contents, ensure_movers_namespace, gone, hand_over, kube_err, labels, object_name,
    restore_target, timed, until,
};

/// The contents kept by backups: labelled, with [`KEPT_LABEL`].
async fn kept_contents(client: &kube::Client) -> Result<Vec<DynamicObject>, VolumeError> {
    let lp = ListParams::default().labels(&format!(
        "{}={},{BACKUP_LABEL},{KEPT_LABEL}",
        MANAGED_BY.0, MANAGED_BY.1
    ));
    match contents(client).list(&lp).await {
        Ok(l) => Ok(l.items),
        // No snapshot API: nothing was kept.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Vec::new()),
        Err(e) => Err(kube_err("list the kept VolumeSnapshotContents")(e)),
    }
}

/// Deletes kept contents: each set to Delete first — unless another
/// content holds its handle, which then stays that snapshot's owner — so
/// the CSI driver deletes the storage snapshot. Returns their names.
async fn delete_contents(
    client: &kube::Client,
    doomed: &[&DynamicObject],
) -> Result<Vec<String>, VolumeError> {
    let all = contents(client)
        .list(&ListParams::default())
        .await
        .map_err(kube_err("list VolumeSnapshotContents"))?
        .items;
    let handle = |c: &DynamicObject| {
        c.data["status"]["snapshotHandle"]
            .as_str()
            .or(c.data["spec"]["source"]["snapshotHandle"].as_str())
            .map(str::to_string)
    };
    let mut deleted = Vec::new();
    for c in doomed {
        let name = c.name_any();
        let h = handle(c);
        let shared = h.is_some() && all.iter().any(|o| o.name_any() != name && handle(o) == h);
        if !shared {
            let patch = json!({"spec": {"deletionPolicy": "Delete"}});
            match contents(client)
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => continue,
                Err(e) => {
                    return Err(kube_err(format!(
                        "set VolumeSnapshotContent {name} to Delete"
                    ))(e));
                }
            }
        }
        gone(
            contents(client)
                .delete(&name, &DeleteParams::default())
                .await,
        )
        .map_err(kube_err(format!("delete VolumeSnapshotContent {name}")))?;
        deleted.push(name);
    }
    Ok(deleted)
}

/// Deletes the snapshots `backup` kept in the cluster, and with them the
/// storage snapshots. Found by their labels (never by a name a manifest
/// gives, which could name anyone's content). Returns the contents deleted.
pub async fn delete_kept(client: &kube::Client, backup: &str) -> Result<Vec<String>, VolumeError> {
    let kept = kept_contents(client).await?;
    let doomed: Vec<&DynamicObject> = kept
        .iter()
        .filter(|c| c.labels().get(BACKUP_LABEL).map(String::as_str) == Some(backup))
        .collect();
    delete_contents(client, &doomed).await
}

/// Deletes what an interrupted run of `backup` kept for the claim `id`
/// ([`super::claim_id`]), so the claim starts over cleanly.
pub(super) async fn delete_kept_of_claim(
    client: &kube::Client,
    backup: &str,
    id: &str,
) -> Result<Vec<String>, VolumeError> {
    let kept = kept_contents(client).await?;
    let doomed: Vec<&DynamicObject> = kept
        .iter()
        .filter(|c| {
            c.labels().get(BACKUP_LABEL).map(String::as_str) == Some(backup)
                && c.labels().get(super::CLAIM_LABEL).map(String::as_str) == Some(id)
        })
        .collect();
    delete_contents(client, &doomed).await
}

/// `keepLocalSnapshots: keep`: of the local snapshots `snapshotMove` kept
/// (label `lifeboat.dev/kept=snapshotMove`) for backups `of_policy`
/// accepts, those of the newest `keep` backups that have any stay; older
/// ones are deleted. Backup names of one policy sort by time
/// (`<policy>-YYYYMMDD-HHMMSS`). The data of `snapshot` volumes is never
/// touched here: it goes with its backup. Returns the contents deleted.
pub async fn thin_local_snapshots(
    client: &kube::Client,
    of_policy: impl Fn(&str) -> bool,
    keep: usize,
) -> Result<Vec<String>, VolumeError> {
    let kept = kept_contents(client).await?;
    let local: Vec<&DynamicObject> = kept
        .iter()
        .filter(|c| {
            c.labels().get(KEPT_LABEL).map(String::as_str)
                == Some(Method::SnapshotMove.to_string().as_str())
                && c.labels().get(BACKUP_LABEL).is_some_and(|b| of_policy(b))
        })
        .collect();
    let older = beyond_newest(
        local
            .iter()
            .filter_map(|c| c.labels().get(BACKUP_LABEL).map(String::as_str)),
        keep,
    );
    let doomed: Vec<&DynamicObject> = local
        .into_iter()
        .filter(|c| {
            c.labels()
                .get(BACKUP_LABEL)
                .is_some_and(|b| older.contains(b.as_str()))
        })
        .collect();
    delete_contents(client, &doomed).await
}

/// The backups (of one policy: their names sort by time) that are not
/// among the newest `keep`.
fn beyond_newest<'a>(backups: impl Iterator<Item = &'a str>, keep: usize) -> BTreeSet<&'a str> {
    let all: BTreeSet<&str> = backups.collect();
    all.iter().rev().skip(keep).copied().collect()
}

/// Whether a kept snapshot is in this cluster: its content exists, kept by
/// lifeboat, with the recorded handle and driver. Another cluster (or this
/// one after its storage was lost) does not have it.
pub async fn kept_available(
    client: &kube::Client,
    kept: &KeptSnapshot,
) -> Result<bool, VolumeError> {
    let c = match contents(client).get_opt(&kept.content).await {
        Ok(c) => c,
        Err(kube::Error::Api(s)) if s.code == 404 => None,
        Err(e) => {
            return Err(kube_err(format!(
                "read VolumeSnapshotContent {}",
                kept.content
            ))(e));
        }
    };
    Ok(c.is_some_and(|c| {
        c.labels().contains_key(KEPT_LABEL)
            && c.data["spec"]["driver"] == kept.driver.as_str()
            && c.data["status"]["snapshotHandle"] == kept.handle.as_str()
    }))
}

/// Fills a claim the restore created from a snapshot kept in this
/// cluster: a claim of the same class in the movers' namespace is
/// provisioned from a temporary pre-provisioned content of the handle
/// (Retain), and its volume handed to the restore's claim. The kept
/// content stays the handle's only owner.
pub async fn restore_claim_from_kept(
    client: &kube::Client,
    claim: &ClaimToFill,
    kept: &KeptSnapshot,
    restore: &str,
    opts: &MoverOptions,
    progress: &(dyn Fn(VolumeProgress) + Send + Sync),
) -> Result<VolumeRestoreResult, VolumeError> {
    timed(client, opts, progress, async |created: &mut Created| {
        from_kept_steps(client, claim, kept, restore, opts, progress, created).await
    })
    .await
}

async fn from_kept_steps(
    client: &kube::Client,
    c: &ClaimToFill,
    kept: &KeptSnapshot,
    restore: &str,
    opts: &MoverOptions,
    progress: &(dyn Fn(VolumeProgress) + Send + Sync),
    created: &mut Created,
) -> Result<VolumeRestoreResult, VolumeError> {
    let movers = opts.namespace.as_str();
    ensure_movers_namespace(client, movers).await?;
    let target = restore_target(client, c, restore).await?;
    let spec = target.spec.clone().unwrap_or_default();
    if !kept_available(client, kept).await? {
        return Err(VolumeError::Invalid(format!(
            "the kept snapshot VolumeSnapshotContent {} (handle {}) is not in this cluster",
            kept.content, kept.handle
        )));
    }
    if super::waits_for_first_consumer(client, spec.storage_class_name.as_deref()).await? {
        return Err(VolumeError::Invalid(format!(
            "restoring from a kept snapshot into the WaitForFirstConsumer class {} is not \
             supported yet",
            spec.storage_class_name.as_deref().unwrap_or_default()
        )));
    }
    let lbl = labels(RESTORE_LABEL, restore, &[]);
    let name = object_name("lifeboat-r", restore, &c.namespace, &c.pvc);
    let content = object_name("lifeboat-rc", restore, &c.namespace, &c.pvc);

    // A temporary content of the handle, Retain: deleting it later never
    // deletes the storage snapshot the kept content owns.
    progress(VolumeProgress::Step { step: "snapshot" });
    PreProvisioned {
        content: &content,
        snapshot: &name,
        driver: &kept.driver,
        handle: &kept.handle,
        class: &kept.snapshot_class,
        mode: kept.volume_mode.as_deref(),
        deletion_policy: "Retain",
        labels: &lbl,
    }
    .create(client, opts, created)
    .await?;

    // A claim provisioned from it (the CSI driver fills the volume).
    progress(VolumeProgress::Step { step: "provision" });
    MoversClaim::like(&spec, &name, Some(&name), &lbl)
        .create(client, opts, created)
        .await?;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), movers);
    until(
        &format!("claim {movers}/{name} being provisioned from the kept snapshot"),
        opts.move_timeout,
        opts.poll,
        || async {
            let pvc = claims.get(&name).await.map_err(kube_err(format!(
                "read PersistentVolumeClaim {movers}/{name}"
            )))?;
            let phase = pvc.status.as_ref().and_then(|s| s.phase.clone());
            Ok(if phase.as_deref() == Some("Bound") {
                Ok(())
            } else {
                Err(phase.unwrap_or_else(|| "Pending".into()))
            })
        },
    )
    .await?;
    let pv = hand_over(client, c, restore, &target, &name, opts, progress, created).await?;
    Ok(VolumeRestoreResult {
        namespace: c.namespace.clone(),
        pvc: c.pvc.clone(),
        snapshot: kept.content.clone(),
        bytes: 0,
        files: 0,
        duration_seconds: 0.0,
        pv,
        node: None,
    })
}

#[cfg(test)]
mod tests {
    use super::beyond_newest;

    #[rstest::rstest]
    #[case::none_kept(0, &["db-20261201-020000", "db-20261201-030000"], &["db-20261201-020000", "db-20261201-030000"])]
    #[case::newest_one(1, &["db-20261201-030000", "db-20261201-020000", "db-20261201-030000"], &["db-20261201-020000"])]
    #[case::across_days(2, &["db-20261130-230000", "db-20261201-010000", "db-20261202-000000"], &["db-20261130-230000"])]
    #[case::fewer_than_n(3, &["db-20261201-020000"], &[])]
    fn only_the_newest_backups_keep_their_local_snapshots(
        #[case] keep: usize,
        #[case] backups: &[&str],
        #[case] older: &[&str],
    ) {
        let got: Vec<&str> = beyond_newest(backups.iter().copied(), keep)
            .into_iter()
            .collect();
        assert_eq!(got, older);
    }
}
