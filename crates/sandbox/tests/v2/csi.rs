//! The CSI host-path driver with data and the PV controller, through
//! kube-rs: volume bytes under the data directory, snapshots as immutable
//! copies, restores and clones, Block images, the `nfs` class, the
//! WaitForFirstConsumer class, static pre-binding, Retain and rebinding,
//! seeding volume contents and snapshot deletion policies.

use std::fs;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Node, PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use kube::{Client, ResourceExt};
use lifeboat_sandbox::Sandbox;
use serde_json::{Value, json};

const NS: &str = "default";

/// Polls `f` until it yields a value (10 s at most).
async fn until<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn pvcs(c: &Client) -> Api<PersistentVolumeClaim> {
    Api::namespaced(c.clone(), NS)
}

fn pvs(c: &Client) -> Api<PersistentVolume> {
    Api::all(c.clone())
}

fn ar(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "snapshot.storage.k8s.io".into(),
        version: "v1".into(),
        api_version: "snapshot.storage.k8s.io/v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

fn snapshots(c: &Client) -> Api<DynamicObject> {
    Api::namespaced_with(c.clone(), NS, &ar("VolumeSnapshot", "volumesnapshots"))
}

fn contents(c: &Client) -> Api<DynamicObject> {
    Api::all_with(
        c.clone(),
        &ar("VolumeSnapshotContent", "volumesnapshotcontents"),
    )
}

fn obj<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("a valid object")
}

async fn claim(c: &Client, name: &str, size: &str, extra: Value) -> PersistentVolumeClaim {
    let mut spec =
        json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    pvcs(c)
        .create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": name}, "spec": spec})),
        )
        .await
        .expect("claim created")
}

async fn bound(c: &Client, name: &str) -> (PersistentVolumeClaim, PersistentVolume) {
    let api = pvcs(c);
    let pvc = until(&format!("claim {name} Bound"), || async {
        api.get(name)
            .await
            .ok()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
    })
    .await;
    let pv_name = pvc.spec.as_ref().unwrap().volume_name.clone().unwrap();
    let pv = pvs(c).get(&pv_name).await.expect("its PV");
    (pvc, pv)
}

async fn phase(c: &Client, name: &str) -> String {
    pvcs(c)
        .get(name)
        .await
        .ok()
        .and_then(|p| p.status.and_then(|s| s.phase))
        .unwrap_or_default()
}

fn volume_dir(sb: &Sandbox, pv: &PersistentVolume) -> PathBuf {
    sb.data_dir().join("volumes").join(pv.name_any())
}

async fn snapshot(c: &Client, name: &str, source: Value) -> DynamicObject {
    let vs: DynamicObject = obj(json!({"apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshot", "metadata": {"name": name}, "spec": source}));
    snapshots(c)
        .create(&PostParams::default(), &vs)
        .await
        .expect("snapshot created")
}

async fn ready(c: &Client, name: &str) -> (DynamicObject, DynamicObject) {
    let api = snapshots(c);
    let vs = until(&format!("snapshot {name} readyToUse"), || async {
        api.get(name)
            .await
            .ok()
            .filter(|v| v.data["status"]["readyToUse"] == true)
    })
    .await;
    let content = vs.data["status"]["boundVolumeSnapshotContentName"]
        .as_str()
        .expect("bound content")
        .to_string();
    (vs, contents(c).get(&content).await.expect("the content"))
}

async fn events_of(c: &Client, name: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(c.clone(), NS);
    api.list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await
        .expect("events")
        .items
}

fn restore_from(snapshot: &str) -> Value {
    json!({"dataSource": {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": snapshot}})
}

#[cfg(unix)]
fn inode(p: &Path) -> u64 {
    std::os::unix::fs::MetadataExt::ino(&fs::metadata(p).unwrap())
}

#[tokio::test]
async fn provisioned_volumes_are_directories_in_the_data_dir() {
    let sb = Sandbox::start().await.unwrap();
    let c = sb.client();
    assert!(sb.data_dir_is_temporary());
    claim(&c, "data", "1Gi", json!({})).await;
    let (pvc, pv) = bound(&c, "data").await;
    let ann = pvc.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(ann["pv.kubernetes.io/bind-completed"], "yes");
    assert_eq!(ann["pv.kubernetes.io/bound-by-controller"], "yes");
    assert_eq!(
        ann["volume.kubernetes.io/storage-provisioner"],
        "sandbox.csi.lifeboat.dev"
    );
    let spec = pv.spec.clone().unwrap();
    let csi = spec.csi.clone().unwrap();
    assert_eq!(csi.driver, "sandbox.csi.lifeboat.dev");
    assert!(!csi.volume_handle.is_empty());
    assert!(
        csi.volume_attributes.unwrap()["storage.kubernetes.io/csiProvisionerIdentity"]
            .ends_with("sandbox.csi.lifeboat.dev")
    );
    assert_eq!(spec.capacity.unwrap()["storage"].0, "1Gi");
    assert_eq!(spec.access_modes.unwrap(), ["ReadWriteOnce"]);
    assert_eq!(spec.volume_mode.as_deref(), Some("Filesystem"));
    assert_eq!(
        spec.persistent_volume_reclaim_policy.as_deref(),
        Some("Delete")
    );
    assert_eq!(spec.claim_ref.unwrap().uid, pvc.metadata.uid);
    assert_eq!(
        pv.annotations()["pv.kubernetes.io/provisioned-by"],
        "sandbox.csi.lifeboat.dev"
    );
    assert_eq!(pv.status.as_ref().unwrap().phase.as_deref(), Some("Bound"));
    let dir = volume_dir(&sb, &pv);
    fs::write(dir.join("hello.txt"), b"bytes on a volume").unwrap();
    // Delete reclaim: the PV and its bytes go with the claim.
    pvcs(&c)
        .delete("data", &DeleteParams::default())
        .await
        .unwrap();
    until("the PV deleted", || async {
        pvs(&c)
            .get_opt(&pv.name_any())
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert!(!dir.exists(), "{} removed", dir.display());
}

#[tokio::test]
async fn a_snapshot_is_an_immutable_copy_that_restores() {
    let sb = Sandbox::builder()
        .snapshot_delay(Duration::from_millis(50))
        .start()
        .await
        .unwrap();
    let c = sb.client();
    claim(&c, "src", "1Gi", json!({})).await;
    let (_, pv) = bound(&c, "src").await;
    let dir = volume_dir(&sb, &pv);
    fs::create_dir(dir.join("db")).unwrap();
    fs::write(dir.join("db/in-place.dat"), b"old in place").unwrap();
    fs::write(dir.join("replaced.txt"), b"old replaced").unwrap();
    snapshot(
        &c,
        "snap",
        json!({"source": {"persistentVolumeClaimName": "src"}}),
    )
    .await;
    let (vs, content) = ready(&c, "snap").await;
    // The default class of the volume's driver was filled in.
    assert_eq!(
        vs.data["spec"]["volumeSnapshotClassName"],
        "sandbox-snapclass"
    );
    assert_eq!(vs.data["status"]["restoreSize"], "1Gi");
    assert!(vs.data["status"]["creationTime"].is_string());
    assert_eq!(content.data["status"]["restoreSize"], 1u64 << 30);
    assert_eq!(
        content.data["spec"]["source"]["volumeHandle"],
        json!(
            pv.spec
                .as_ref()
                .unwrap()
                .csi
                .as_ref()
                .unwrap()
                .volume_handle
        )
    );
    let handle = content.data["status"]["snapshotHandle"].as_str().unwrap();
    let snap_dir = sb.data_dir().join("snapshots").join(handle);
    assert_eq!(
        fs::read(snap_dir.join("db/in-place.dat")).unwrap(),
        b"old in place"
    );
    #[cfg(unix)]
    assert_ne!(
        inode(&snap_dir.join("db/in-place.dat")),
        inode(&dir.join("db/in-place.dat")),
        "a copy, never a hard link"
    );
    // Overwrite in place (same inode) and by replacing the file.
    #[cfg(unix)]
    let before = inode(&dir.join("db/in-place.dat"));
    {
        use std::io::{Seek, Write};
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(dir.join("db/in-place.dat"))
            .unwrap();
        f.seek(std::io::SeekFrom::Start(0)).unwrap();
        f.write_all(b"NEW IN PLACE").unwrap();
    }
    #[cfg(unix)]
    assert_eq!(inode(&dir.join("db/in-place.dat")), before);
    fs::write(dir.join("replaced.tmp"), b"new replaced").unwrap();
    fs::rename(dir.join("replaced.tmp"), dir.join("replaced.txt")).unwrap();
    fs::write(dir.join("later.txt"), b"after the snapshot").unwrap();
    // Restore: the old bytes.
    claim(&c, "restored", "1Gi", restore_from("snap")).await;
    let (restored, rpv) = bound(&c, "restored").await;
    assert_eq!(
        restored.spec.unwrap().data_source_ref.unwrap().name,
        "snap",
        "dataSourceRef mirrors dataSource"
    );
    let rdir = volume_dir(&sb, &rpv);
    assert_eq!(
        fs::read(rdir.join("db/in-place.dat")).unwrap(),
        b"old in place"
    );
    assert_eq!(
        fs::read(rdir.join("replaced.txt")).unwrap(),
        b"old replaced"
    );
    assert!(!rdir.join("later.txt").exists());
    assert_eq!(
        fs::read(snap_dir.join("db/in-place.dat")).unwrap(),
        b"old in place"
    );
    let evs = events_of(&c, "restored").await;
    assert!(
        evs.iter()
            .any(|e| e.reason.as_deref() == Some("ProvisioningSucceeded")),
        "{evs:#?}"
    );
}

#[tokio::test]
async fn a_claim_clones_another() {
    let sb = Sandbox::start().await.unwrap();
    let c = sb.client();
    claim(&c, "origin", "1Gi", json!({})).await;
    let (_, pv) = bound(&c, "origin").await;
    fs::write(volume_dir(&sb, &pv).join("f"), b"cloned bytes").unwrap();
    claim(
        &c,
        "copy",
        "2Gi",
        json!({"dataSource": {"kind": "PersistentVolumeClaim", "name": "origin"}}),
    )
    .await;
    let (copy, cpv) = bound(&c, "copy").await;
    assert_eq!(copy.status.unwrap().capacity.unwrap()["storage"].0, "2Gi");
    assert_eq!(
        fs::read(volume_dir(&sb, &cpv).join("f")).unwrap(),
        b"cloned bytes"
    );
    // The clone is independent of its origin.
    fs::write(volume_dir(&sb, &pv).join("f"), b"changed").unwrap();
    assert_eq!(
        fs::read(volume_dir(&sb, &cpv).join("f")).unwrap(),
        b"cloned bytes"
    );
    // Smaller than the origin: refused with an event.
    claim(
        &c,
        "small",
        "512Mi",
        json!({"dataSource": {"kind": "PersistentVolumeClaim", "name": "origin"}}),
    )
    .await;
    let ev = until("ProvisioningFailed", || async {
        events_of(&c, "small")
            .await
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("ProvisioningFailed"))
    })
    .await;
    assert!(
        ev.message
            .unwrap()
            .contains("must be greater than or equal in size")
    );
    assert_eq!(phase(&c, "small").await, "Pending");
}

#[tokio::test]
async fn a_block_claim_is_an_image_of_its_size() {
    let sb = Sandbox::start().await.unwrap();
    let c = sb.client();
    claim(&c, "raw", "64Mi", json!({"volumeMode": "Block"})).await;
    let (_, pv) = bound(&c, "raw").await;
    let spec = pv.spec.clone().unwrap();
    assert_eq!(spec.volume_mode.as_deref(), Some("Block"));
    assert!(spec.csi.unwrap().fs_type.is_none());
    let img = sb
        .data_dir()
        .join("volumes")
        .join(format!("{}.img", pv.name_any()));
    assert_eq!(fs::metadata(&img).unwrap().len(), 64 << 20);
    #[cfg(unix)]
    assert!(
        std::os::unix::fs::MetadataExt::blocks(&fs::metadata(&img).unwrap()) * 512 < 1 << 20,
        "sparse"
    );
    // A Block snapshot restores into a Block claim.
    {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new().write(true).open(&img).unwrap();
        f.write_all_at(b"superblock", 4096).unwrap();
    }
    snapshot(
        &c,
        "raw-snap",
        json!({"source": {"persistentVolumeClaimName": "raw"}}),
    )
    .await;
    ready(&c, "raw-snap").await;
    claim(&c, "raw-restored", "128Mi", json!({"volumeMode": "Block", "dataSource": {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "raw-snap"}})).await;
    let (_, rpv) = bound(&c, "raw-restored").await;
    let rimg = sb
        .data_dir()
        .join("volumes")
        .join(format!("{}.img", rpv.name_any()));
    let bytes = fs::read(&rimg).unwrap();
    assert_eq!(bytes.len(), 128 << 20, "grown to the request");
    assert_eq!(&bytes[4096..4106], b"superblock");
}

#[tokio::test]
async fn a_restore_smaller_than_the_snapshot_fails_with_an_event() {
    let sb = Sandbox::start().await.unwrap();
    let c = sb.client();
    claim(&c, "big", "2Gi", json!({})).await;
    bound(&c, "big").await;
    snapshot(
        &c,
        "big-snap",
        json!({"source": {"persistentVolumeClaimName": "big"}}),
    )
    .await;
    ready(&c, "big-snap").await;
    claim(&c, "tiny", "1Gi", restore_from("big-snap")).await;
    let ev = until("ProvisioningFailed", || async {
        events_of(&c, "tiny")
            .await
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("ProvisioningFailed"))
    })
    .await;
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    assert_eq!(
        ev.message.as_deref(),
        Some(
            "failed to provision volume with StorageClass \"standard\": error getting handle for DataSource Type VolumeSnapshot by Name big-snap: requested volume size 1073741824 is less than the size 2147483648 for the source snapshot big-snap"
        )
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(phase(&c, "tiny").await, "Pending");
}

#[tokio::test]
async fn nfs_claims_hold_bytes_but_cannot_be_snapshotted() {
    let sb = Sandbox::builder()
        .snapshot_delay(Duration::from_millis(10))
        .start()
        .await
        .unwrap();
    let c = sb.client();
    claim(
        &c,
        "shared",
        "1Gi",
        json!({"storageClassName": "nfs", "accessModes": ["ReadWriteMany"]}),
    )
    .await;
    let (_, pv) = bound(&c, "shared").await;
    let spec = pv.spec.clone().unwrap();
    assert!(spec.csi.is_none());
    assert_eq!(
        spec.nfs.unwrap().path,
        format!("/exports/{}", pv.name_any())
    );
    assert!(volume_dir(&sb, &pv).is_dir());
    snapshot(
        &c,
        "no-class",
        json!({"source": {"persistentVolumeClaimName": "shared"}}),
    )
    .await;
    snapshot(&c, "with-class", json!({"volumeSnapshotClassName": "sandbox-snapclass", "source": {"persistentVolumeClaimName": "shared"}})).await;
    let api = snapshots(&c);
    let err = |name: &'static str| {
        let api = api.clone();
        async move {
            until(&format!("{name} status.error"), || async {
                api.get(name).await.ok().and_then(|v| {
                    v.data["status"]["error"]["message"]
                        .as_str()
                        .map(str::to_string)
                })
            })
            .await
        }
    };
    assert_eq!(
        err("no-class").await,
        "Failed to set default snapshot class with error snapshotting non-CSI volumes is not supported, snapshot:default/no-class"
    );
    assert_eq!(
        err("with-class").await,
        format!(
            "Failed to create snapshot content with error cannot find CSI PersistentVolumeSource for volume {}",
            pv.name_any()
        )
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    for name in ["no-class", "with-class"] {
        assert_ne!(
            api.get(name).await.unwrap().data["status"]["readyToUse"],
            true
        );
    }
}

#[tokio::test]
async fn wait_for_first_consumer_binds_once_a_node_is_selected() {
    let sb = Sandbox::start().await.unwrap();
    let c = sb.client();
    claim(
        &c,
        "late",
        "1Gi",
        json!({"storageClassName": "standard-wffc"}),
    )
    .await;
    let ev = until("WaitForFirstConsumer", || async {
        events_of(&c, "late")
            .await
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("WaitForFirstConsumer"))
    })
    .await;
    assert_eq!(ev.type_.as_deref(), Some("Normal"));
    assert_eq!(phase(&c, "late").await, "Pending");
    // What the scheduler does when the first pod using it is scheduled.
    let nodes: Api<Node> = Api::all(c.clone());
    let node = nodes
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .remove(0);
    let hostname = node.labels()["kubernetes.io/hostname"].clone();
    pvcs(&c)
        .patch(
            "late",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"volume.kubernetes.io/selected-node": node.name_any()}}})),
        )
        .await
        .unwrap();
    let (_, pv) = bound(&c, "late").await;
    let affinity = serde_json::to_value(pv.spec.unwrap().node_affinity.unwrap()).unwrap();
    assert_eq!(
        affinity["required"]["nodeSelectorTerms"][0]["matchExpressions"][0],
        json!({"key": "kubernetes.io/hostname", "operator": "In", "values": [hostname]})
    );
}

/// A statically provisioned CSI volume of `class` (Retain), pre-bound to
/// `claim_ref` unless it is null.
fn static_pv(name: &str, size: &str, class: &str, claim_ref: Value) -> Value {
    let mut spec = json!({"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"],
        "persistentVolumeReclaimPolicy": "Retain", "storageClassName": class,
        "csi": {"driver": "sandbox.csi.lifeboat.dev", "volumeHandle": format!("handle-{name}")}});
    if !claim_ref.is_null() {
        spec["claimRef"] = claim_ref;
    }
    json!({"metadata": {"name": name}, "spec": spec})
}

/// As the real binder (`FindMatchingVolume`): a WaitForFirstConsumer claim
/// takes no free volume before its node is selected, but a volume
/// pre-bound to it (a local PV made for it, a restore's filled volume)
/// binds at once, its node affinity kept.
#[tokio::test]
async fn a_waiting_claim_binds_a_volume_pre_bound_to_it_and_no_free_one() {
    let sb = Sandbox::start().await.unwrap();
    let c = sb.client();
    let pv = |name: &str, claim_ref: Value| {
        let mut pv = static_pv(name, "1Gi", "standard-wffc", claim_ref);
        pv["spec"]["nodeAffinity"] = json!({"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": ["sandbox-node-1"]}]}]}});
        obj::<PersistentVolume>(pv)
    };
    // The volumes exist first; the claims come later.
    for (name, claim_ref) in [
        ("free-pv", Value::Null),
        ("handed-pv", json!({"namespace": NS, "name": "handed"})),
    ] {
        pvs(&c)
            .create(&PostParams::default(), &pv(name, claim_ref))
            .await
            .unwrap();
    }
    claim(
        &c,
        "handed",
        "1Gi",
        json!({"storageClassName": "standard-wffc"}),
    )
    .await;
    let (_, got) = bound(&c, "handed").await;
    assert_eq!(got.name_any(), "handed-pv", "not the free volume");
    assert!(got.spec.unwrap().node_affinity.is_some());
    // Another claim of the class waits for its consumer, the free volume
    // stays free.
    claim(
        &c,
        "waiting",
        "1Gi",
        json!({"storageClassName": "standard-wffc"}),
    )
    .await;
    until("WaitForFirstConsumer", || async {
        events_of(&c, "waiting")
            .await
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("WaitForFirstConsumer"))
    })
    .await;
    assert_eq!(phase(&c, "waiting").await, "Pending");
    let free = pvs(&c).get("free-pv").await.unwrap();
    assert_eq!(
        free.status.and_then(|s| s.phase).as_deref(),
        Some("Available")
    );
}

#[tokio::test]
async fn static_pre_binding_binds_both_sides() {
    let sb = Sandbox::start().await.unwrap();
    let c = sb.client();
    let pv = |name: &str, claim_ref: Value| -> PersistentVolume {
        obj(static_pv(name, "5Gi", "", claim_ref))
    };
    // A PV pre-bound to a claim that does not exist yet stays Available.
    pvs(&c)
        .create(
            &PostParams::default(),
            &pv("pre-pv", json!({"namespace": NS, "name": "pre"})),
        )
        .await
        .unwrap();
    let p = until("pre-pv Available", || async {
        pvs(&c)
            .get("pre-pv")
            .await
            .ok()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Available"))
    })
    .await;
    assert!(p.spec.unwrap().claim_ref.is_some());
    // A claim naming its volume, and the volume naming its claim.
    claim(
        &c,
        "pre",
        "5Gi",
        json!({"volumeName": "pre-pv", "storageClassName": ""}),
    )
    .await;
    let (pvc, bound_pv) = bound(&c, "pre").await;
    assert_eq!(bound_pv.name_any(), "pre-pv");
    let ann = pvc.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(ann["pv.kubernetes.io/bind-completed"], "yes");
    assert!(
        !ann.contains_key("pv.kubernetes.io/bound-by-controller"),
        "{ann:?}"
    );
    assert_eq!(
        bound_pv
            .spec
            .as_ref()
            .unwrap()
            .claim_ref
            .as_ref()
            .unwrap()
            .uid,
        pvc.metadata.uid
    );
    assert!(
        volume_dir(&sb, &bound_pv).is_dir(),
        "the driver made the volume"
    );
    // A claim naming a free volume: the controller fills in the claimRef.
    pvs(&c)
        .create(&PostParams::default(), &pv("free-pv", Value::Null))
        .await
        .unwrap();
    claim(
        &c,
        "named",
        "1Gi",
        json!({"volumeName": "free-pv", "storageClassName": ""}),
    )
    .await;
    let (_, free) = bound(&c, "named").await;
    assert_eq!(
        free.annotations()["pv.kubernetes.io/bound-by-controller"],
        "yes"
    );
    // An unnamed claim of no class matches an Available volume by size.
    pvs(&c)
        .create(&PostParams::default(), &pv("match-pv", Value::Null))
        .await
        .unwrap();
    claim(&c, "matched", "3Gi", json!({"storageClassName": ""})).await;
    let (_, matched) = bound(&c, "matched").await;
    assert_eq!(matched.name_any(), "match-pv");
}

#[tokio::test]
async fn a_released_retained_volume_keeps_its_data_and_rebinds() {
    let sb = Sandbox::start().await.unwrap();
    let c = sb.client();
    claim(&c, "keep", "1Gi", json!({})).await;
    let (_, pv) = bound(&c, "keep").await;
    let name = pv.name_any();
    pvs(&c)
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"persistentVolumeReclaimPolicy": "Retain"}})),
        )
        .await
        .unwrap();
    fs::write(volume_dir(&sb, &pv).join("kept.txt"), b"survives the claim").unwrap();
    pvcs(&c)
        .delete("keep", &DeleteParams::default())
        .await
        .unwrap();
    let phase_of =
        |want: &'static str| {
            let c = c.clone();
            let name = name.clone();
            async move {
                until(&format!("PV {want}"), || async {
                    pvs(&c).get(&name).await.ok().filter(|p| {
                        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some(want)
                    })
                })
                .await
            }
        };
    phase_of("Released").await;
    assert!(volume_dir(&sb, &pv).join("kept.txt").exists());
    // A new claim of the same name does not take a Released volume...
    claim(&c, "keep", "1Gi", json!({"volumeName": name})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(phase(&c, "keep").await, "Pending");
    // ...until the administrator clears its claimRef.
    pvs(&c)
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"claimRef": null}})),
        )
        .await
        .unwrap();
    let (_, again) = bound(&c, "keep").await;
    assert_eq!(again.name_any(), name);
    assert_eq!(
        fs::read(volume_dir(&sb, &again).join("kept.txt")).unwrap(),
        b"survives the claim"
    );
}

#[tokio::test]
async fn seed_directories_fill_claims_once_bound() {
    let seed = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    fs::write(
        seed.path().join("app.yaml"),
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: web, namespace: shop}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 1Gi}}\n",
    )
    .unwrap();
    let files = seed.path().join("volumes/shop/web");
    fs::create_dir_all(files.join("conf")).unwrap();
    // Not a manifest: contents under volumes/ are never seeded as objects.
    fs::write(files.join("conf/site.yaml"), "listen: 8080\n").unwrap();
    fs::write(files.join("index.html"), "<h1>seeded</h1>").unwrap();
    let old = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_500_000_000);
    fs::File::options()
        .write(true)
        .open(files.join("index.html"))
        .unwrap()
        .set_times(fs::FileTimes::new().set_modified(old))
        .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(files.join("index.html"), fs::Permissions::from_mode(0o600)).unwrap();
    }
    let sb = Sandbox::builder()
        .seed_dir(seed.path())
        .data_dir(data.path())
        .start()
        .await
        .unwrap();
    assert!(!sb.data_dir_is_temporary());
    assert_eq!(sb.data_dir(), data.path());
    let c = sb.client();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(c.clone(), "shop");
    let pvc = until("web Bound", || async {
        api.get("web")
            .await
            .ok()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
    })
    .await;
    let vol = data
        .path()
        .join("volumes")
        .join(pvc.spec.unwrap().volume_name.unwrap());
    assert_eq!(
        fs::read_to_string(vol.join("index.html")).unwrap(),
        "<h1>seeded</h1>"
    );
    assert_eq!(
        fs::read_to_string(vol.join("conf/site.yaml")).unwrap(),
        "listen: 8080\n"
    );
    let meta = fs::metadata(vol.join("index.html")).unwrap();
    assert_eq!(meta.modified().unwrap(), old);
    #[cfg(unix)]
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
    drop(sb);
    assert!(vol.exists(), "a given data directory is kept");
}

#[tokio::test]
async fn deletion_policy_decides_what_happens_to_snapshot_data() {
    let sb = Sandbox::builder()
        .snapshot_delay(Duration::from_millis(10))
        .start()
        .await
        .unwrap();
    let c = sb.client();
    let classes: Api<DynamicObject> = Api::all_with(
        c.clone(),
        &ar("VolumeSnapshotClass", "volumesnapshotclasses"),
    );
    classes
        .create(&PostParams::default(), &obj(json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
            "metadata": {"name": "retain"}, "driver": "sandbox.csi.lifeboat.dev", "deletionPolicy": "Retain"})))
        .await
        .unwrap();
    claim(&c, "vol", "1Gi", json!({})).await;
    let (_, pv) = bound(&c, "vol").await;
    fs::write(
        volume_dir(&sb, &pv).join("x"),
        b"kept in the storage system",
    )
    .unwrap();
    snapshot(
        &c,
        "gone",
        json!({"source": {"persistentVolumeClaimName": "vol"}}),
    )
    .await;
    snapshot(&c, "kept", json!({"volumeSnapshotClassName": "retain", "source": {"persistentVolumeClaimName": "vol"}})).await;
    let (_, gone_content) = ready(&c, "gone").await;
    let (_, kept_content) = ready(&c, "kept").await;
    let path_of = |content: &DynamicObject| {
        sb.data_dir()
            .join("snapshots")
            .join(content.data["status"]["snapshotHandle"].as_str().unwrap())
    };
    let (gone_dir, kept_dir) = (path_of(&gone_content), path_of(&kept_content));
    assert!(gone_dir.is_dir() && kept_dir.is_dir());
    for name in ["gone", "kept"] {
        snapshots(&c)
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
    until("the Delete content removed", || async {
        contents(&c)
            .get_opt(&gone_content.name_any())
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert!(!gone_dir.exists(), "Delete removes the snapshot data");
    assert!(contents(&c).get(&kept_content.name_any()).await.is_ok());
    assert!(kept_dir.join("x").exists(), "Retain keeps it");
    // The retained handle comes back as a pre-provisioned content, bound to
    // the VolumeSnapshot that names it, and restores.
    let handle = kept_content.data["status"]["snapshotHandle"]
        .as_str()
        .unwrap();
    contents(&c)
        .create(&PostParams::default(), &obj(json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
            "metadata": {"name": "imported"}, "spec": {"driver": "sandbox.csi.lifeboat.dev", "deletionPolicy": "Delete",
                "source": {"snapshotHandle": handle}, "volumeSnapshotRef": {"namespace": NS, "name": "again"}}})))
        .await
        .unwrap();
    snapshot(
        &c,
        "again",
        json!({"source": {"volumeSnapshotContentName": "imported"}}),
    )
    .await;
    let (vs, content) = ready(&c, "again").await;
    assert_eq!(vs.data["status"]["restoreSize"], "1Gi");
    assert_eq!(
        content.data["spec"]["volumeSnapshotRef"]["uid"],
        json!(vs.uid())
    );
    claim(&c, "from-import", "1Gi", restore_from("again")).await;
    let (_, rpv) = bound(&c, "from-import").await;
    assert_eq!(
        fs::read(volume_dir(&sb, &rpv).join("x")).unwrap(),
        b"kept in the storage system"
    );
    // A content naming a snapshot that is missing from the driver.
    contents(&c)
        .create(&PostParams::default(), &obj(json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
            "metadata": {"name": "bogus"}, "spec": {"driver": "sandbox.csi.lifeboat.dev", "deletionPolicy": "Retain",
                "source": {"snapshotHandle": "no-such-handle"}, "volumeSnapshotRef": {"namespace": NS, "name": "bogus"}}})))
        .await
        .unwrap();
    let bogus = contents(&c).get("bogus").await.unwrap();
    assert!(
        bogus.data["status"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not found")
    );
}
