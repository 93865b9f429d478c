//! The CSI driver with data, modelled on kubernetes-csi/csi-driver-host-path
//! with its external-provisioner and external-snapshotter sidecars (and the
//! snapshot-controller), plus an `nfs` provisioner without snapshot support.
//!
//! ```text
//! <data>/volumes/<pv-name>/          a Filesystem volume (CSI or nfs)
//! <data>/volumes/<pv-name>.img       a Block volume: a sparse file of the claim's size
//! <data>/snapshots/<handle>/ | .img  a snapshot: an independent copy (reflink or bytes)
//! <data>/snapshots/<handle>.json     what the driver knows of it (size, time, mode)
//!
//! claim ─(binding::sync_claim)─▶ provision ─▶ empty volume ─▶ PV (pre-bound) ─▶ bind
//!                                          └▶ dataSource: Job::Fill ─(copy, no lock)─▶ PV ─▶ bind
//! VolumeSnapshot ─▶ sync_snapshot: class, VolumeSnapshotContent ─▶ Job::Cut
//!        Job::Cut ─(copy, no lock)─▶ content status (handle, creationTime, restoreSize)
//!                 ─(snapshot delay)─▶ readyToUse ─▶ VolumeSnapshot status
//! ```
//!
//! Copies run on blocking threads without the state lock ([`copy`]); what
//! they produce is written back under the lock and re-checked there (a
//! claim or content deleted meanwhile gets its data removed). The
//! snapshot is cut right after the VolumeSnapshot is created, and
//! `status.creationTime` says when: as on a real cluster, a writer waits
//! for it (or for `readyToUse`) before writing again.

pub mod copy;
pub mod quantity;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};

use crate::behaviours::{create_builtin, get, put};
use crate::error::ApiError;
use crate::events::EventType;
use crate::handlers::{Deferred, State};
use crate::meta::{self, meta_str};
use crate::server::Shared;

/// The CSI driver name of the simulated provisioner and snapshotter.
pub const DRIVER: &str = "sandbox.csi.lifeboat.dev";
/// The provisioner of the `nfs` class (not CSI: its PVs have an `nfs` source).
pub const NFS_PROVISIONER: &str = "sandbox.lifeboat.dev/nfs";
/// The NFS server named in `nfs` PVs.
pub const NFS_SERVER: &str = "nfs.sandbox.lifeboat.dev";
/// The default VolumeSnapshotClass.
pub const SNAPSHOT_CLASS: &str = "sandbox-snapclass";
/// The default storage class.
pub const STANDARD: &str = "standard";
/// The WaitForFirstConsumer storage class.
pub const STANDARD_WFFC: &str = "standard-wffc";
/// The `nfs` storage class.
pub const NFS: &str = "nfs";

const SNAP: &str = "snapshot.storage.k8s.io";

/// The storage backend: where volumes and snapshots live, and the work in
/// flight.
#[derive(Debug)]
pub struct Driver {
    data: PathBuf,
    seeds: Vec<PathBuf>,
    identity: String,
    /// Claims (uids) whose volume is being filled from a data source.
    filling: HashSet<String>,
    /// Volumes already given their seed contents.
    seeded: HashSet<String>,
}

/// Background work of the driver (copies), run by [`run`].
#[derive(Debug)]
pub enum Job {
    /// Cut a snapshot of a volume for a VolumeSnapshotContent.
    Cut {
        /// The VolumeSnapshotContent.
        content: String,
        /// Source volume path.
        source: PathBuf,
        /// Snapshot handle.
        handle: String,
        /// Block volume.
        block: bool,
        /// Bytes of the source volume (the restore size).
        size: u64,
        /// When the VolumeSnapshot was created (readiness counts from it).
        created: Instant,
    },
    /// Fill a new volume from a snapshot or another volume, then create
    /// its PV.
    Fill {
        /// Claim namespace.
        namespace: String,
        /// Claim name.
        name: String,
        /// Claim uid.
        uid: String,
        /// Source path (snapshot or volume).
        source: PathBuf,
        /// Block volume.
        block: bool,
        /// Requested bytes.
        size: u64,
    },
}

impl Driver {
    /// A driver keeping its data under `data`, seeding volumes from
    /// `<seed>/volumes/<namespace>/<pvc>/` of each seed directory.
    pub fn new(data: PathBuf, seeds: Vec<PathBuf>) -> Driver {
        let ms = jiff::Timestamp::now().as_millisecond();
        Driver {
            data,
            seeds,
            identity: format!("{ms}-{}-{DRIVER}", fastrand::u16(1000..10000)),
            filling: HashSet::new(),
            seeded: HashSet::new(),
        }
    }

    fn volume_path(&self, pv: &str, block: bool) -> PathBuf {
        let dir = self.data.join("volumes");
        if block {
            dir.join(format!("{pv}.img"))
        } else {
            dir.join(pv)
        }
    }

    fn snapshot_path(&self, handle: &str, block: bool) -> PathBuf {
        let dir = self.data.join("snapshots");
        if block {
            dir.join(format!("{handle}.img"))
        } else {
            dir.join(handle)
        }
    }

    fn snapshot_meta(&self, handle: &str) -> PathBuf {
        self.data.join("snapshots").join(format!("{handle}.json"))
    }

    /// Creates the directories the driver writes into.
    pub fn prepare(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(self.data.join("volumes"))?;
        std::fs::create_dir_all(self.data.join("snapshots"))
    }
}

fn is_block(v: &Value) -> bool {
    v["spec"]["volumeMode"] == "Block"
}

/// Bytes a claim requests (`spec.resources.requests.storage`).
pub fn requested(claim: &Value) -> Option<u64> {
    claim["spec"]["resources"]["requests"]["storage"]
        .as_str()
        .and_then(quantity::parse)
}

/// Bytes of a PV's capacity.
pub fn capacity(pv: &Value) -> Option<u64> {
    pv["spec"]["capacity"]["storage"]
        .as_str()
        .and_then(quantity::parse)
}

/// Whether this driver (CSI or nfs) holds the bytes of a PV.
pub fn holds(pv: &Value) -> bool {
    pv["spec"]["csi"]["driver"] == DRIVER || pv["spec"]["nfs"]["server"] == NFS_SERVER
}

fn ours(provisioner: &str) -> bool {
    provisioner == DRIVER || provisioner == NFS_PROVISIONER
}

/// Whether a provisioner is one this sandbox runs.
pub fn runs_provisioner(provisioner: &str) -> bool {
    ours(provisioner)
}

/// The path of a PV's bytes, when this driver holds them.
pub fn volume_of(st: &State, pv: &Value) -> Option<PathBuf> {
    holds(pv).then(|| st.csi.volume_path(meta_str(pv, "name"), is_block(pv)))
}

/// The storage and snapshot classes every sandbox has.
pub fn bootstrap(st: &mut State) -> Result<(), ApiError> {
    let class = |name: &str, provisioner: &str, mode: &str, default: bool| {
        let mut meta = json!({"name": name});
        if default {
            meta["annotations"] = json!({"storageclass.kubernetes.io/is-default-class": "true"});
        }
        json!({"metadata": meta, "provisioner": provisioner, "reclaimPolicy": "Delete",
            "volumeBindingMode": mode, "allowVolumeExpansion": true})
    };
    for sc in [
        class(STANDARD, DRIVER, "Immediate", true),
        class(STANDARD_WFFC, DRIVER, "WaitForFirstConsumer", false),
        class(NFS, NFS_PROVISIONER, "Immediate", false),
    ] {
        create_builtin(st, "storage.k8s.io", "storageclasses", "", sc)?;
    }
    create_builtin(
        st,
        SNAP,
        "volumesnapshotclasses",
        "",
        json!({"metadata": {"name": SNAPSHOT_CLASS, "annotations": {"snapshot.storage.kubernetes.io/is-default-class": "true"}},
            "driver": DRIVER, "deletionPolicy": "Delete"}),
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Provisioning (external-provisioner + CreateVolume / DeleteVolume).

/// What provisioning a claim did.
#[derive(Debug)]
pub enum Provisioned {
    /// A PV of this name was created, pre-bound to the claim.
    Volume(String),
    /// The volume is being filled from its data source; its PV follows.
    Filling,
}

/// Provisions a volume for `claim` of `class` (its provisioner is ours).
/// `node` is the selected node of a WaitForFirstConsumer claim. The error
/// is the message of a ProvisioningFailed event.
pub fn provision(
    st: &mut State,
    claim: &Value,
    class: &Value,
    node: Option<&str>,
) -> Result<Provisioned, String> {
    let uid = meta_str(claim, "uid").to_string();
    if st.csi.filling.contains(&uid) {
        return Ok(Provisioned::Filling);
    }
    // As the external-provisioner: a claim with a selector waits for a
    // matching volume and is never provisioned.
    if !claim["spec"]["selector"].is_null() {
        return Err("claim Selector is not supported".into());
    }
    let provisioner = class["provisioner"].as_str().unwrap_or_default();
    let pv_name = format!("pvc-{uid}");
    let block = is_block(claim);
    let size = requested(claim).ok_or("the claim requests no valid storage size")?;
    let source = data_source(claim);
    if provisioner == NFS_PROVISIONER {
        if block {
            return Err(format!(
                "{NFS_PROVISIONER} does not support block volume provisioning"
            ));
        }
        if source.is_some() {
            return Err(format!(
                "{NFS_PROVISIONER} does not support volume data sources"
            ));
        }
    }
    let hostname = match node {
        Some(n) => Some(node_hostname(st, n)?),
        None => None,
    };
    if let Some(src) = source {
        let kind = src["kind"].as_str().unwrap_or_default();
        let name = src["name"].as_str().unwrap_or_default();
        let path = content_source(st, claim, class, &src, size).map_err(|e| {
            format!("error getting handle for DataSource Type {kind} by Name {name}: {e}")
        })?;
        st.csi.filling.insert(uid.clone());
        st.deferred.push(Deferred::Csi(Job::Fill {
            namespace: meta_str(claim, "namespace").to_string(),
            name: meta_str(claim, "name").to_string(),
            uid,
            source: path,
            block,
            size,
        }));
        return Ok(Provisioned::Filling);
    }
    let path = st.csi.volume_path(&pv_name, block);
    create_volume(&path, block, size)
        .map_err(|e| format!("rpc error: code = Internal desc = {e}"))?;
    let pv = pv_object(st, claim, class, &pv_name, size, hostname.as_deref());
    create_builtin(st, "", "persistentvolumes", "", pv).map_err(|e| e.message)?;
    Ok(Provisioned::Volume(pv_name))
}

fn create_volume(path: &Path, block: bool, size: u64) -> std::io::Result<()> {
    if block {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        if f.metadata()?.len() < size {
            f.set_len(size)?;
        }
        Ok(())
    } else {
        std::fs::create_dir_all(path)
    }
}

/// Makes sure a PV this driver holds has its directory or image (a
/// pre-provisioned PV may name a volume that was never written).
pub fn ensure_volume(st: &State, pv: &Value) {
    if let Some(path) = volume_of(st, pv) {
        let size = capacity(pv).unwrap_or(0);
        if let Err(e) = create_volume(&path, is_block(pv), size) {
            tracing::warn!(path = %path.display(), error = %e, "cannot create the volume");
        }
    }
}

/// Removes the bytes of a PV this driver holds (DeleteVolume).
pub fn delete_volume(st: &State, pv: &Value) {
    if let Some(path) = volume_of(st, pv)
        && let Err(e) = copy::remove(&path)
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove the volume");
    }
}

fn node_hostname(st: &State, node: &str) -> Result<String, String> {
    let n = get(st, "", "nodes", "", node)
        .ok_or_else(|| format!("failed to get target node: node \"{node}\" not found"))?;
    Ok(n["metadata"]["labels"]["kubernetes.io/hostname"]
        .as_str()
        .unwrap_or(node)
        .to_string())
}

fn pv_object(
    st: &State,
    claim: &Value,
    class: &Value,
    pv_name: &str,
    size: u64,
    hostname: Option<&str>,
) -> Value {
    let provisioner = class["provisioner"].as_str().unwrap_or_default();
    let mut spec = json!({
        "accessModes": claim["spec"]["accessModes"],
        "capacity": {"storage": quantity::format(size)},
        "claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1",
            "namespace": meta_str(claim, "namespace"), "name": meta_str(claim, "name"),
            "uid": meta_str(claim, "uid"), "resourceVersion": meta_str(claim, "resourceVersion")},
        "persistentVolumeReclaimPolicy": class.get("reclaimPolicy").cloned().unwrap_or(json!("Delete")),
        "storageClassName": meta_str(class, "name"),
        "volumeMode": claim["spec"]["volumeMode"],
    });
    if let Some(opts) = class.get("mountOptions") {
        spec["mountOptions"] = opts.clone();
    }
    if provisioner == NFS_PROVISIONER {
        spec["nfs"] = json!({"server": NFS_SERVER, "path": format!("/exports/{pv_name}")});
    } else {
        let mut csi = json!({"driver": DRIVER, "volumeHandle": meta::uid(),
            "volumeAttributes": {"storage.kubernetes.io/csiProvisionerIdentity": st.csi.identity}});
        if !is_block(claim) {
            csi["fsType"] = class["parameters"]["csi.storage.k8s.io/fstype"]
                .as_str()
                .map_or(json!("ext4"), |f| json!(f));
        }
        spec["csi"] = csi;
    }
    if let Some(h) = hostname {
        spec["nodeAffinity"] = json!({"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": [h]}]}]}});
    }
    json!({
        "metadata": {"name": pv_name, "annotations": {"pv.kubernetes.io/provisioned-by": provisioner,
            "volume.kubernetes.io/provisioner-deletion-secret-name": "",
            "volume.kubernetes.io/provisioner-deletion-secret-namespace": ""}},
        "spec": spec,
    })
}

/// `spec.dataSourceRef`, else `spec.dataSource`.
fn data_source(claim: &Value) -> Option<Value> {
    ["dataSourceRef", "dataSource"]
        .iter()
        .map(|k| &claim["spec"][*k])
        .find(|v| v.is_object())
        .cloned()
}

/// The path a new volume is filled from, after the checks the
/// external-provisioner makes.
fn content_source(
    st: &State,
    claim: &Value,
    class: &Value,
    src: &Value,
    size: u64,
) -> Result<PathBuf, String> {
    let ns = src["namespace"]
        .as_str()
        .unwrap_or(meta_str(claim, "namespace"));
    let name = src["name"].as_str().unwrap_or_default();
    let provisioner = class["provisioner"].as_str().unwrap_or_default();
    match (
        src["apiGroup"].as_str().unwrap_or_default(),
        src["kind"].as_str().unwrap_or_default(),
    ) {
        (SNAP, "VolumeSnapshot") => {
            let vs = get(st, SNAP, "volumesnapshots", ns, name).ok_or_else(|| {
                format!("error getting snapshot {name} from api server: volumesnapshots.snapshot.storage.k8s.io \"{name}\" not found")
            })?;
            if vs["metadata"].get("deletionTimestamp").is_some() {
                return Err(format!("snapshot {name} is currently being deleted"));
            }
            let cname = vs["status"]["boundVolumeSnapshotContentName"]
                .as_str()
                .ok_or_else(|| format!("snapshot {name} not bound"))?;
            let content = get(st, SNAP, "volumesnapshotcontents", "", cname).ok_or_else(|| {
                format!("error getting snapshotcontent {cname} for snapshot {ns}/{name} from api server: volumesnapshotcontents.snapshot.storage.k8s.io \"{cname}\" not found")
            })?;
            let driver = content["spec"]["driver"].as_str().unwrap_or_default();
            if driver != provisioner {
                return Err(format!(
                    "snapshot {name}'s driver {driver} does not match the provisioner {provisioner} of storage class {}",
                    meta_str(class, "name")
                ));
            }
            if vs["status"]["readyToUse"] != true {
                return Err(format!("snapshot {name} is not Ready"));
            }
            let restore = content["status"]["restoreSize"].as_u64().unwrap_or(0);
            if size < restore {
                return Err(format!(
                    "requested volume size {size} is less than the size {restore} for the source snapshot {name}"
                ));
            }
            let src_mode = content["spec"]["sourceVolumeMode"]
                .as_str()
                .unwrap_or("Filesystem");
            let mode = claim["spec"]["volumeMode"].as_str().unwrap_or("Filesystem");
            let allowed = content["metadata"]["annotations"]["snapshot.storage.kubernetes.io/allow-volume-mode-change"]
                == "true";
            if src_mode != mode && !allowed {
                return Err(format!(
                    "requested volume {}/{} modifies the mode of the source volume but does not have permission to do so. snapshot.storage.kubernetes.io/allow-volume-mode-change annotation is not present on snapshotcontent {cname}",
                    meta_str(claim, "namespace"),
                    meta_str(claim, "name")
                ));
            }
            if src_mode != mode {
                return Err(format!(
                    "{DRIVER} cannot restore a {src_mode} snapshot into a {mode} volume"
                ));
            }
            let handle = content["status"]["snapshotHandle"]
                .as_str()
                .unwrap_or_default();
            let path = st.csi.snapshot_path(handle, src_mode == "Block");
            if handle.is_empty() || !path.exists() {
                return Err(format!(
                    "rpc error: code = NotFound desc = cannot find snapshot {handle:?}"
                ));
            }
            Ok(path)
        }
        ("", "PersistentVolumeClaim") => {
            let source = get(st, "", "persistentvolumeclaims", ns, name).ok_or_else(|| {
                format!("error getting PVC {name} (namespace {ns:?}) from api server: persistentvolumeclaims \"{name}\" not found")
            })?;
            if source["status"]["phase"] != "Bound" {
                return Err(format!(
                    "the PVC DataSource {name} must have a status of Bound.  Got {}",
                    source["status"]["phase"].as_str().unwrap_or("Pending")
                ));
            }
            if source["metadata"].get("deletionTimestamp").is_some() {
                return Err(format!(
                    "the PVC DataSource {name} is currently being deleted"
                ));
            }
            let (src_class, class_name) = (
                source["spec"]["storageClassName"]
                    .as_str()
                    .unwrap_or_default(),
                claim["spec"]["storageClassName"]
                    .as_str()
                    .unwrap_or_default(),
            );
            if src_class != class_name {
                return Err(format!(
                    "the source PVC and destination PVCs must be in the same storage class for cloning.  Source is in {src_class}, but new PVC is in {class_name}"
                ));
            }
            let src_size = requested(&source).unwrap_or(0);
            if size < src_size {
                return Err(format!(
                    "error, new PVC request must be greater than or equal in size to the specified PVC data source, requested {size} but source is {src_size}"
                ));
            }
            if source["spec"]["volumeMode"] != claim["spec"]["volumeMode"] {
                return Err(format!(
                    "the source PVC and destination PVCs must have the same volume mode for cloning.  Source is {}.  Requested PVC is {}",
                    source["spec"]["volumeMode"]
                        .as_str()
                        .unwrap_or("Filesystem"),
                    claim["spec"]["volumeMode"].as_str().unwrap_or("Filesystem")
                ));
            }
            let pv_name = source["spec"]["volumeName"].as_str().unwrap_or_default();
            let pv = get(st, "", "persistentvolumes", "", pv_name)
                .filter(|pv| pv["spec"]["csi"]["driver"] == provisioner)
                .ok_or("claim in dataSource not bound or invalid")?;
            volume_of(st, &pv).ok_or_else(|| "claim in dataSource not bound or invalid".into())
        }
        (group, kind) => Err(format!(
            "the data source {group}/{kind} is not supported by {provisioner}"
        )),
    }
}

/// Copies the seed contents of a claim into its volume, once per volume.
pub fn seed_volume(st: &mut State, claim: &Value, pv: &Value) {
    let pv_name = meta_str(pv, "name").to_string();
    if st.csi.seeded.contains(&pv_name) || is_block(pv) {
        return;
    }
    let Some(dst) = volume_of(st, pv) else {
        return;
    };
    let rel = Path::new("volumes")
        .join(meta_str(claim, "namespace"))
        .join(meta_str(claim, "name"));
    for seed in &st.csi.seeds {
        let src = seed.join(&rel);
        if src.is_dir()
            && let Err(e) = copy::copy_tree(&src, &dst)
        {
            tracing::warn!(from = %src.display(), error = %e, "seeding the volume failed");
        }
    }
    st.csi.seeded.insert(pv_name);
}

// ---------------------------------------------------------------------------
// Snapshots (snapshot-controller + csi-snapshotter + CreateSnapshot).

fn snapshot_error(st: &mut State, mut vs: Value, reason: &str, message: String) {
    if vs["status"]["error"]["message"] == json!(message) {
        return;
    }
    crate::binding::note(
        st,
        &vs,
        EventType::Warning,
        reason,
        &message,
        "snapshot-controller",
    );
    let bound = vs["status"]["boundVolumeSnapshotContentName"].clone();
    vs["status"] = json!({"readyToUse": false, "error": {"message": message, "time": meta::now()}});
    if !bound.is_null() {
        vs["status"]["boundVolumeSnapshotContentName"] = bound;
    }
    put(st, SNAP, "volumesnapshots", vs);
}

/// The bound PV of a VolumeSnapshot's source claim.
fn snapshot_volume(st: &State, vs: &Value) -> Result<Value, String> {
    let ns = meta_str(vs, "namespace");
    let claim = vs["spec"]["source"]["persistentVolumeClaimName"]
        .as_str()
        .unwrap_or_default();
    let pvc = get(st, "", "persistentvolumeclaims", ns, claim).ok_or_else(|| {
        format!("failed to retrieve PVC {claim} from the lister: \"persistentvolumeclaim \\\"{claim}\\\" not found\"")
    })?;
    let pv_name = pvc["spec"]["volumeName"].as_str().unwrap_or_default();
    if pv_name.is_empty() || pvc["status"]["phase"] != "Bound" {
        return Err(format!(
            "the PVC {claim} is not yet bound to a PV, will not attempt to take a snapshot"
        ));
    }
    get(st, "", "persistentvolumes", "", pv_name)
        .ok_or_else(|| format!("failed to retrieve PV {pv_name} from the API server"))
}

/// Brings a VolumeSnapshot forward: class, content, status (idempotent).
pub fn sync_snapshot(st: &mut State, ns: &str, name: &str) {
    let Some(mut vs) = get(st, SNAP, "volumesnapshots", ns, name) else {
        return;
    };
    if vs["metadata"].get("deletionTimestamp").is_some() {
        return;
    }
    let uid = meta_str(&vs, "uid").to_string();
    let content_name = if let Some(pre) = vs["spec"]["source"]["volumeSnapshotContentName"].as_str()
    {
        let Some(mut content) = get(st, SNAP, "volumesnapshotcontents", "", pre) else {
            snapshot_error(
                st,
                vs,
                "SnapshotContentMissing",
                "VolumeSnapshotContent is missing".into(),
            );
            return;
        };
        let r = &content["spec"]["volumeSnapshotRef"];
        let matches = r["name"] == json!(name)
            && r["namespace"] == json!(ns)
            && r["uid"].as_str().is_none_or(|u| u.is_empty() || u == uid);
        if !matches {
            let msg = format!(
                "Snapshot failed to bind VolumeSnapshotContent, Could not bind snapshot {name} and content {pre}, the VolumeSnapshotRef does not match"
            );
            snapshot_error(st, vs, "SnapshotBindFailed", msg);
            return;
        }
        if r["uid"].as_str().is_none_or(str::is_empty) {
            content["spec"]["volumeSnapshotRef"]["uid"] = json!(uid);
            content["spec"]["volumeSnapshotRef"]["resourceVersion"] =
                json!(meta_str(&vs, "resourceVersion"));
            put(st, SNAP, "volumesnapshotcontents", content);
        }
        pre.to_string()
    } else {
        let cname = format!("snapcontent-{uid}");
        if get(st, SNAP, "volumesnapshotcontents", "", &cname).is_none() {
            // The class: named, or the default one of the volume's driver.
            let class_name = match vs["spec"]["volumeSnapshotClassName"].as_str() {
                Some(c) => c.to_string(),
                None => match default_snapshot_class(st, &vs) {
                    Ok(c) => {
                        vs["spec"]["volumeSnapshotClassName"] = json!(c);
                        put(st, SNAP, "volumesnapshots", vs.clone());
                        vs = get(st, SNAP, "volumesnapshots", ns, name).unwrap_or(vs);
                        c
                    }
                    Err(e) => {
                        let msg = format!("Failed to set default snapshot class with error {e}");
                        snapshot_error(st, vs, "SetDefaultSnapshotClassFailed", msg);
                        return;
                    }
                },
            };
            let Some(class) = get(st, SNAP, "volumesnapshotclasses", "", &class_name) else {
                let msg = format!(
                    "Failed to get snapshot class with error volumesnapshotclass.snapshot.storage.k8s.io \"{class_name}\" not found"
                );
                snapshot_error(st, vs, "GetSnapshotClassFailed", msg);
                return;
            };
            let pv = match snapshot_volume(st, &vs) {
                Ok(pv) => pv,
                Err(e) => {
                    let msg = format!(
                        "Failed to create snapshot content with error failed to get input parameters to create snapshot {name}: {e:?}"
                    );
                    snapshot_error(st, vs, "SnapshotContentCreationFailed", msg);
                    return;
                }
            };
            if !pv["spec"]["csi"].is_object() {
                let msg = format!(
                    "Failed to create snapshot content with error cannot find CSI PersistentVolumeSource for volume {}",
                    meta_str(&pv, "name")
                );
                snapshot_error(st, vs, "SnapshotContentCreationFailed", msg);
                return;
            }
            let content = json!({
                "metadata": {"name": cname},
                "spec": {"deletionPolicy": class["deletionPolicy"], "driver": class["driver"],
                    "source": {"volumeHandle": pv["spec"]["csi"]["volumeHandle"]},
                    "sourceVolumeMode": pv["spec"]["volumeMode"].as_str().unwrap_or("Filesystem"),
                    "volumeSnapshotClassName": class_name,
                    "volumeSnapshotRef": {"kind": "VolumeSnapshot", "apiVersion": "snapshot.storage.k8s.io/v1",
                        "namespace": ns, "name": name, "uid": uid, "resourceVersion": meta_str(&vs, "resourceVersion")}},
            });
            if let Err(e) = create_builtin(st, SNAP, "volumesnapshotcontents", "", content) {
                snapshot_error(st, vs, "SnapshotContentCreationFailed", e.message);
                return;
            }
            if class["driver"] == DRIVER {
                cut(st, &cname, &pv);
            }
            vs = get(st, SNAP, "volumesnapshots", ns, name).unwrap_or(vs);
        }
        cname
    };
    let Some(content) = get(st, SNAP, "volumesnapshotcontents", "", &content_name) else {
        return;
    };
    let cs = &content["status"];
    let mut status = json!({"boundVolumeSnapshotContentName": content_name,
        "readyToUse": cs["readyToUse"].as_bool().unwrap_or(false)});
    if let Some(ns_time) = cs["creationTime"].as_i64() {
        status["creationTime"] = json!(
            jiff::Timestamp::from_nanosecond(i128::from(ns_time))
                .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
                .unwrap_or_default()
        );
    }
    if let Some(size) = cs["restoreSize"].as_u64() {
        status["restoreSize"] = json!(quantity::format(size));
    }
    if cs["error"].is_object() {
        status["error"] = cs["error"].clone();
    }
    if vs["status"] != status {
        vs["status"] = status;
        put(st, SNAP, "volumesnapshots", vs);
    }
}

fn default_snapshot_class(st: &State, vs: &Value) -> Result<String, String> {
    let pv = snapshot_volume(st, vs)?;
    let Some(driver) = pv["spec"]["csi"]["driver"].as_str() else {
        return Err(format!(
            "snapshotting non-CSI volumes is not supported, snapshot:{}/{}",
            meta_str(vs, "namespace"),
            meta_str(vs, "name")
        ));
    };
    let defaults: Vec<String> = st
        .store
        .table(&(SNAP.to_string(), "volumesnapshotclasses".to_string()))
        .values()
        .map(|o| o.value())
        .filter(|c| {
            c["metadata"]["annotations"]["snapshot.storage.kubernetes.io/is-default-class"]
                == "true"
                && c["driver"] == driver
        })
        .map(|c| meta_str(&c, "name").to_string())
        .collect();
    match defaults.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err("cannot find default snapshot class".into()),
        many => Err(format!(
            "{} default snapshot classes were found",
            many.len()
        )),
    }
}

/// Queues CreateSnapshot of `pv` for a new content.
fn cut(st: &mut State, content: &str, pv: &Value) {
    let Some(source) = volume_of(st, pv) else {
        let mut c = get(st, SNAP, "volumesnapshotcontents", "", content).unwrap_or_default();
        let handle = pv["spec"]["csi"]["volumeHandle"]
            .as_str()
            .unwrap_or_default();
        c["status"] = json!({"readyToUse": false, "error": {"time": meta::now(), "message":
            format!("Failed to check and update snapshot content: failed to take snapshot of the volume {handle}: \"rpc error: code = NotFound desc = source volume {handle} not found\"")}});
        put(st, SNAP, "volumesnapshotcontents", c);
        return;
    };
    st.deferred.push(Deferred::Csi(Job::Cut {
        content: content.to_string(),
        source,
        handle: meta::uid(),
        block: is_block(pv),
        size: capacity(pv).unwrap_or(0),
        created: Instant::now(),
    }));
}

/// Sets the status of a pre-provisioned content of this driver from what
/// the driver knows of its snapshot handle (ListSnapshots), then syncs the
/// VolumeSnapshot it names.
pub fn sync_content(st: &mut State, name: &str) {
    let Some(mut c) = get(st, SNAP, "volumesnapshotcontents", "", name) else {
        return;
    };
    if let Some(handle) = c["spec"]["source"]["snapshotHandle"]
        .as_str()
        .map(str::to_string)
        && c["spec"]["driver"] == DRIVER
        && c["status"]["snapshotHandle"].is_null()
        && c["status"]["error"].is_null()
    {
        let handle = handle.as_str();
        let meta_path = st.csi.snapshot_meta(handle);
        c["status"] = match std::fs::read(&meta_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        {
            Some(m) => json!({"snapshotHandle": handle, "creationTime": m["creationTime"],
                "restoreSize": m["sizeBytes"], "readyToUse": true}),
            None => json!({"readyToUse": false, "error": {"time": meta::now(), "message":
                format!("failed to list snapshot for content {name}: \"rpc error: code = NotFound desc = snapshot {handle} not found\"")}}),
        };
        if c["spec"]["sourceVolumeMode"].is_null() {
            // The driver knows the mode of its snapshots.
            let block = st.csi.snapshot_path(handle, true).exists();
            c["spec"]["sourceVolumeMode"] = json!(if block { "Block" } else { "Filesystem" });
        }
        put(st, SNAP, "volumesnapshotcontents", c.clone());
    }
    let r = &c["spec"]["volumeSnapshotRef"];
    if let (Some(ns), Some(vs)) = (r["namespace"].as_str(), r["name"].as_str()) {
        let (ns, vs) = (ns.to_string(), vs.to_string());
        sync_snapshot(st, &ns, &vs);
    }
}

/// A VolumeSnapshot is gone: its content goes with it under `Delete`.
pub fn snapshot_deleted(st: &mut State, vs: &Value) {
    let uid = meta_str(vs, "uid");
    let name = vs["status"]["boundVolumeSnapshotContentName"]
        .as_str()
        .or(vs["spec"]["source"]["volumeSnapshotContentName"].as_str())
        .map_or_else(|| format!("snapcontent-{uid}"), str::to_string);
    let key = (SNAP.to_string(), "volumesnapshotcontents".to_string());
    let (Some(c), Some(info)) = (st.store.get(&key, "", &name), st.registry.by_key(&key)) else {
        return;
    };
    let v = c.value();
    let ours = v["spec"]["volumeSnapshotRef"]["uid"]
        .as_str()
        .is_none_or(|u| u.is_empty() || u == uid);
    if ours && v["spec"]["deletionPolicy"] == "Delete" {
        let _ = crate::handlers::delete_object(st, &info, &c, false);
    }
}

/// A VolumeSnapshotContent is gone: under `Delete` the snapshot's data goes
/// too (DeleteSnapshot); under `Retain` it stays in the storage system.
pub fn content_deleted(st: &mut State, c: &Value) {
    if c["spec"]["deletionPolicy"] != "Delete" || c["spec"]["driver"] != DRIVER {
        return;
    }
    let Some(handle) = c["status"]["snapshotHandle"]
        .as_str()
        .or(c["spec"]["source"]["snapshotHandle"].as_str())
    else {
        return;
    };
    for path in [
        st.csi.snapshot_path(handle, false),
        st.csi.snapshot_path(handle, true),
        st.csi.snapshot_meta(handle),
    ] {
        if let Err(e) = copy::remove(&path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove the snapshot");
        }
    }
}

// ---------------------------------------------------------------------------
// Background jobs.

/// Runs one job: the copy on a blocking thread, the result under the lock.
pub async fn run(shared: Arc<Shared>, job: Job) {
    match job {
        Job::Cut {
            content,
            source,
            handle,
            block,
            size,
            created,
        } => {
            let dst = {
                let st = shared.state.lock().expect("state lock");
                st.csi.snapshot_path(&handle, block)
            };
            let meta_path = dst.with_file_name(format!("{handle}.json"));
            let now = jiff::Timestamp::now().as_nanosecond() as i64;
            let copied = tokio::task::spawn_blocking({
                let dst = dst.clone();
                move || -> std::io::Result<copy::CopyStats> {
                    let stats = if block {
                        copy::copy_file(&source, &dst)?
                    } else {
                        copy::copy_tree(&source, &dst)?
                    };
                    let mode = if block { "Block" } else { "Filesystem" };
                    let m = json!({"sizeBytes": size, "creationTime": now, "volumeMode": mode,
                        "reflinkedFiles": stats.reflinked});
                    std::fs::write(&meta_path, serde_json::to_vec(&m).unwrap_or_default())?;
                    Ok(stats)
                }
            })
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            let more = {
                let mut st = shared.state.lock().expect("state lock");
                let Some(mut c) = get(&st, SNAP, "volumesnapshotcontents", "", &content) else {
                    // Deleted while cutting.
                    let _ = copy::remove(&dst);
                    let _ = copy::remove(&st.csi.snapshot_meta(&handle));
                    return;
                };
                c["status"] = match &copied {
                    Ok(_) => json!({"snapshotHandle": handle, "creationTime": now,
                        "restoreSize": size, "readyToUse": false}),
                    Err(e) => json!({"readyToUse": false, "error": {"time": meta::now(), "message":
                        format!("Failed to check and update snapshot content: failed to take snapshot of the volume: \"rpc error: code = Internal desc = {e}\"")}}),
                };
                sync_after(&mut st, c)
            };
            crate::server::run_deferred(&shared, more);
            if copied.is_err() {
                return;
            }
            let delay = shared.settings.snapshot_delay;
            tokio::time::sleep(delay.saturating_sub(created.elapsed())).await;
            let more = {
                let mut st = shared.state.lock().expect("state lock");
                let Some(mut c) = get(&st, SNAP, "volumesnapshotcontents", "", &content) else {
                    return;
                };
                c["status"]["readyToUse"] = json!(true);
                sync_after(&mut st, c)
            };
            crate::server::run_deferred(&shared, more);
        }
        Job::Fill {
            namespace,
            name,
            uid,
            source,
            block,
            size,
        } => {
            let dst = {
                let st = shared.state.lock().expect("state lock");
                st.csi.volume_path(&format!("pvc-{uid}"), block)
            };
            let copied = tokio::task::spawn_blocking({
                let dst = dst.clone();
                move || -> std::io::Result<()> {
                    if block {
                        if let Some(dir) = dst.parent() {
                            std::fs::create_dir_all(dir)?;
                        }
                        copy::copy_file(&source, &dst)?;
                        create_volume(&dst, true, size)
                    } else {
                        copy::copy_tree(&source, &dst).map(|_| ())
                    }
                }
            })
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            let more = {
                let mut st = shared.state.lock().expect("state lock");
                st.csi.filling.remove(&uid);
                fill_done(&mut st, &namespace, &name, &uid, &dst, size, copied);
                std::mem::take(&mut st.deferred)
            };
            crate::server::run_deferred(&shared, more);
        }
    }
}

fn sync_after(st: &mut State, c: Value) -> Vec<Deferred> {
    let r = c["spec"]["volumeSnapshotRef"].clone();
    put(st, SNAP, "volumesnapshotcontents", c);
    if let (Some(ns), Some(name)) = (r["namespace"].as_str(), r["name"].as_str()) {
        sync_snapshot(st, ns, name);
    }
    crate::binding::resync_pending(st);
    std::mem::take(&mut st.deferred)
}

fn fill_done(
    st: &mut State,
    ns: &str,
    name: &str,
    uid: &str,
    dst: &Path,
    size: u64,
    copied: std::io::Result<()>,
) {
    let claim = get(st, "", "persistentvolumeclaims", ns, name)
        .filter(|c| meta_str(c, "uid") == uid && c["metadata"].get("deletionTimestamp").is_none());
    let Some(claim) = claim else {
        let _ = copy::remove(dst);
        return;
    };
    let class_name = claim["spec"]["storageClassName"]
        .as_str()
        .unwrap_or_default();
    let class = get(st, "storage.k8s.io", "storageclasses", "", class_name);
    let result = copied.map_err(|e| e.to_string()).and_then(|()| {
        let class = class
            .ok_or_else(|| format!("storageclass.storage.k8s.io \"{class_name}\" not found"))?;
        let node = claim["metadata"]["annotations"]["volume.kubernetes.io/selected-node"]
            .as_str()
            .map(|n| node_hostname(st, n))
            .transpose()?;
        let pv = pv_object(
            st,
            &claim,
            &class,
            &format!("pvc-{uid}"),
            size,
            node.as_deref(),
        );
        create_builtin(st, "", "persistentvolumes", "", pv).map_err(|e| e.message)
    });
    match result {
        Ok(pv) => {
            let msg = format!("Successfully provisioned volume {}", meta_str(&pv, "name"));
            crate::binding::note(
                st,
                &claim,
                EventType::Normal,
                "ProvisioningSucceeded",
                &msg,
                DRIVER,
            );
            crate::binding::sync_claim(st, ns, name);
        }
        Err(e) => {
            let _ = copy::remove(dst);
            let msg = format!("failed to provision volume with StorageClass \"{class_name}\": {e}");
            crate::binding::note(
                st,
                &claim,
                EventType::Warning,
                "ProvisioningFailed",
                &msg,
                DRIVER,
            );
        }
    }
}
