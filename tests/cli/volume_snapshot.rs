//! Kept CSI snapshots: the `snapshot` method (the data stays in the
//! cluster's storage system as a lifeboat-labelled VolumeSnapshotContent
//! on Retain) and `keepLocalSnapshots` of `snapshotMove`, against the
//! sandbox's CSI driver and snapshotter.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::Api;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};

use crate::run;
use crate::volume_data::{NS, World, assert_same_files, snapshot_api};

/// Where the sandbox's CSI driver keeps the storage snapshot of `handle`.
fn storage_snapshot(w: &World, handle: &str) -> PathBuf {
    w.sb.data_dir().join("snapshots").join(handle)
}

/// Waits until `path` is gone (the driver deletes snapshots on its own time).
fn gone(path: &Path) -> bool {
    for _ in 0..200 {
        if !path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

fn backup(w: &World) -> String {
    let (code, out, err) = w.lifeboat(&["backup", "--policy", "db"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Completed"), "{out}");
    out.split_whitespace().next().unwrap().to_string()
}

/// Restores `backup`, which must fill the claim from the kept `content`
/// with every file as it was.
fn restores_from_kept(w: &World, backup: &str, content: &str) {
    let out = w.restore(backup);
    assert!(
        out.contains(&format!(
            "filled   volume mysql-persistent/mysql: from the kept CSI snapshot \
             (VolumeSnapshotContent {content})"
        )),
        "{out}"
    );
    assert_same_files(&w.claim_bound(NS, "mysql"), &w.files);
}

fn delete_backup(w: &World, backup: &str) -> (i32, String, String) {
    run(
        &[
            "backups",
            "delete",
            backup,
            "--yes",
            "--repo",
            &w.path("repo"),
            "--kubeconfig",
            &w.path("kubeconfig"),
        ],
        None,
    )
}

#[test]
fn the_snapshot_method_keeps_a_csi_snapshot_that_restores_byte_for_byte_and_goes_with_its_backup() {
    let w = World::new(Path::new(env!("CARGO_BIN_EXE_lifeboat")));
    w.set_volumes("    method: snapshot\n");
    let (code, out, err) = w.lifeboat(&["backup", "--policy", "db"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("Completed") && out.contains("1 of 1 volumes"),
        "{out}"
    );
    assert!(
        err.contains("volume mysql-persistent/mysql: kept in the cluster as VolumeSnapshotContent")
            && err.contains("not disaster-proof"),
        "{err}"
    );
    let backup = out.split_whitespace().next().unwrap().to_string();

    // The manifest records the kept content, and no restic snapshot.
    let manifest = w.manifest(&backup);
    let volume = &manifest["volumes"][0];
    assert_eq!(volume["method"], "snapshot", "{volume}");
    assert_eq!(volume["phase"], "Completed", "{volume}");
    assert!(volume.get("snapshot").is_none(), "{volume}");
    let kept = &volume["kept"];
    let content = kept["content"].as_str().unwrap().to_string();
    let handle = kept["handle"].as_str().unwrap().to_string();
    assert_eq!(kept["driver"], "sandbox.csi.lifeboat.dev", "{kept}");
    assert_eq!(kept["snapshotClass"], "sandbox-snapclass");
    assert!(kept["restoreSize"].is_string(), "{kept}");

    // Kept as exactly one labelled content on Retain with that handle, no
    // VolumeSnapshot anywhere (it would die with its namespace), no
    // repository (no key was needed).
    let contents = w.kept_contents_in(&w.sb);
    assert_eq!(contents.len(), 1, "{contents:?}");
    assert_eq!(kube::ResourceExt::name_any(&contents[0]), content);
    assert_eq!(
        contents[0].data["status"]["snapshotHandle"],
        handle.as_str()
    );
    assert_eq!(
        kube::ResourceExt::labels(&contents[0])["lifeboat.dev/backup"],
        backup
    );
    assert_eq!(w.volume_snapshots_in(&w.sb), Vec::<String>::new());
    assert!(storage_snapshot(&w, &handle).exists());
    assert!(!w.dir.path().join("storage/volumes/prod").join(NS).exists());
    w.nothing_left_behind();

    // `backups show` and `backups verify` list it.
    let (code, out, err) = run(
        &["backups", "show", &backup, "--repo", &w.path("repo")],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!(
            "mysql-persistent/mysql  snapshot  Completed  kept in the cluster as \
             VolumeSnapshotContent {content} (not disaster-proof)"
        )),
        "{out}"
    );
    let (code, out, err) = run(
        &["backups", "verify", &backup, "--repo", &w.path("repo")],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!(
            "kept snapshot of mysql-persistent/mysql: VolumeSnapshotContent {content} (method \
             snapshot), in cluster `prod`"
        )),
        "{out}"
    );

    // The namespace is lost; a dry run says where the data comes from,
    // the restore brings every file back.
    w.delete_namespace();
    let identity = w.path("identity.txt");
    let (code, out, err) = w.lifeboat(&[
        "restore",
        "--from",
        &backup,
        "--identity",
        &identity,
        "--dry-run",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!(
            "a fresh volume, from the kept CSI snapshot (VolumeSnapshotContent {content})"
        )),
        "{out}"
    );
    restores_from_kept(&w, &backup, &content);
    // The temporary snapshot and content of the restore are gone; the kept
    // content is still the snapshot's only owner, and the snapshot is there.
    w.nothing_left_behind();
    let contents = w.kept_contents_in(&w.sb);
    assert_eq!(contents.len(), 1, "{contents:?}");
    assert_eq!(w.volume_snapshots_in(&w.sb), Vec::<String>::new());
    assert!(storage_snapshot(&w, &handle).exists());

    // Deleting the backup deletes the kept content and the storage snapshot.
    let (code, out, err) = delete_backup(&w, &backup);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("1 kept snapshot deleted")
            && out.contains(&format!("deleted VolumeSnapshotContent {content}")),
        "{out}"
    );
    assert!(w.kept_contents_in(&w.sb).is_empty());
    assert!(
        gone(&storage_snapshot(&w, &handle)),
        "the storage snapshot is deleted"
    );
    w.nothing_left_behind();
}

#[test]
fn a_snapshot_backup_whose_kept_snapshot_is_not_in_the_cluster_fails_the_claim_naming_the_method() {
    let w = World::new(Path::new(env!("CARGO_BIN_EXE_lifeboat")));
    w.set_volumes("    method: snapshot\n");
    let backup = backup(&w);
    // What another cluster, or this one after losing its storage, sees: no
    // such content (deleted here by hand, storage snapshot and all).
    let api: Api<DynamicObject> = Api::all_with(w.sb.client(), &snapshot_api(false));
    let content = w.manifest(&backup)["volumes"][0]["kept"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    w.rt.block_on(async {
        let patch = serde_json::json!({"spec": {"deletionPolicy": "Delete"}});
        api.patch(&content, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        api.delete(&content, &DeleteParams::default())
            .await
            .unwrap();
    });
    w.delete_namespace();
    let (code, out, err) = w.lifeboat(&[
        "restore",
        "--from",
        &backup,
        "--identity",
        &w.path("identity.txt"),
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(
            "failed   volume mysql-persistent/mysql: its data is a `snapshot` (method snapshot)"
        ) && out.contains(&format!(
            "(VolumeSnapshotContent {content}), which this cluster does not have"
        )),
        "{out}"
    );
    // The workload mounting the claim is held back, and said why.
    assert!(
        out.contains("mounts a claim whose data could not be restored"),
        "{out}"
    );
    w.nothing_left_behind();
}

#[test]
fn keep_local_snapshots_keeps_the_newest_backups_snapshot_which_a_restore_prefers() {
    let w = World::new(Path::new(env!("CARGO_BIN_EXE_lifeboat")));
    w.set_volumes("    keepLocalSnapshots: 1\n");
    let first = backup(&w);
    let kept = w.manifest(&first)["volumes"][0].clone();
    assert_eq!(kept["method"], "snapshotMove", "{kept}");
    assert!(kept["snapshot"].is_string(), "moved as well: {kept}");
    let first_handle = kept["kept"]["handle"].as_str().unwrap().to_string();
    let contents = w.kept_contents_in(&w.sb);
    assert_eq!(contents.len(), 1, "{contents:?}");
    assert_eq!(
        kube::ResourceExt::labels(&contents[0])["lifeboat.dev/kept"],
        "snapshotMove"
    );
    w.nothing_left_behind();

    std::thread::sleep(Duration::from_millis(1100)); // a new backup slot
    let second = backup(&w);
    assert_ne!(first, second);
    let entry = w.manifest(&second)["volumes"][0].clone();
    let content = entry["kept"]["content"].as_str().unwrap().to_string();
    // Exactly one kept content: the newest backup's; the first one's
    // storage snapshot went with its content.
    let contents = w.kept_contents_in(&w.sb);
    assert_eq!(contents.len(), 1, "{contents:?}");
    assert_eq!(kube::ResourceExt::name_any(&contents[0]), content);
    assert_eq!(
        kube::ResourceExt::labels(&contents[0])["lifeboat.dev/backup"],
        second
    );
    assert!(gone(&storage_snapshot(&w, &first_handle)));
    assert_eq!(w.volume_snapshots_in(&w.sb), Vec::<String>::new());
    w.nothing_left_behind();

    // In this cluster the restore takes the local snapshot (no mover).
    w.delete_namespace();
    restores_from_kept(&w, &second, &content);
    w.nothing_left_behind();

    // Deleting the backup takes its kept content along, and forgets its
    // restic snapshot.
    let (code, out, err) = delete_backup(&w, &second);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("1 volume snapshot forgotten, 1 kept snapshot deleted"),
        "{out}"
    );
    assert!(w.kept_contents_in(&w.sb).is_empty());
    // The first backup's local snapshot went already: nothing more to delete.
    let (code, out, err) = delete_backup(&w, &first);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("kept snapshot"), "{out}");
}

#[test]
fn the_controllers_retention_prune_deletes_the_kept_snapshot_of_the_pruned_backup() {
    let w = World::new(Path::new(env!("CARGO_BIN_EXE_lifeboat")));
    w.set_volumes("    method: snapshot\n");
    let policy = w.dir.path().join("repo/lifeboat.yaml");
    let text = std::fs::read_to_string(&policy).unwrap();
    std::fs::write(&policy, text.replace("keepLast: 5", "keepLast: 1")).unwrap();
    let remote = w.controller_remote();
    let kept_of = |backup: &str| w.manifest(backup)["volumes"][0]["kept"].clone();

    let (code, out, err) = w.reconcile(&remote, &["--now", "2026-12-01T10:30:00Z"]);
    assert_eq!(code, 0, "{out}{err}");
    let first = kept_of("db-20261201-100000");
    let first_handle = first["handle"].as_str().unwrap().to_string();
    assert!(storage_snapshot(&w, &first_handle).exists());

    let (code, out, err) = w.reconcile(&remote, &["--now", "2026-12-01T11:30:00Z"]);
    assert_eq!(code, 0, "{out}{err}");
    let second = kept_of("db-20261201-110000");
    assert!(
        !w.dir
            .path()
            .join("storage/clusters/prod/backups/db-20261201-100000")
            .exists(),
        "keepLast 1 prunes the first backup\n{out}"
    );
    // Only the remaining backup's content is kept; the pruned one's storage
    // snapshot is deleted with its content.
    let contents = w.kept_contents_in(&w.sb);
    assert_eq!(contents.len(), 1, "{contents:?}");
    assert_eq!(kube::ResourceExt::name_any(&contents[0]), second["content"]);
    assert!(gone(&storage_snapshot(&w, &first_handle)));
    assert!(storage_snapshot(&w, second["handle"].as_str().unwrap()).exists());
    assert_eq!(w.volume_snapshots_in(&w.sb), Vec::<String>::new());
    w.nothing_left_behind();
}
