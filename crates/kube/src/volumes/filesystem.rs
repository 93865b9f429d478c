//! The `fileSystem` method: a claim's data read where a running pod mounts
//! it, for volumes without CSI snapshots (NFS, local and other in-tree
//! volumes, CSI drivers without a snapshot class).
//!
//! ```text
//! backup of one claim (as Velero's file-system backup finds a pod volume):
//!   the pod the planner chose (Running on its node, mounting the claim)
//!   ─▶ the work Secret + a short-lived mover pod (`lifeboat mover backup`)
//!      in lifeboat-movers, pinned to that node (required node affinity on
//!      metadata.name), with the workload pod's tolerations and the node's
//!      /var/lib/kubelet/pods mounted read-only (hostPath, HostToContainer
//!      propagation, so mounts made after the mover started are seen)
//!   ─▶ the mover finds <pods>/<pod-uid>/volumes/*/<pv> (`…/mount` for CSI)
//!      and writes it into the same repository, snapshot path and parent
//!      chain as snapshotMove
//!   ─▶ progress from pods/log, the result from the termination message
//!   ─▶ pod and Secret deleted
//! ```
//!
//! Its restore is snapshotMove's (`super::restore_claim`): a mover fills a
//! fresh volume from the repository, whatever method wrote the snapshot.
//!
//! Only what a real cluster allows: a hostPath volume needs Pod Security
//! `privileged` in the movers' namespace (a refusal says so), and no
//! standing DaemonSet runs. The data is read live: the workload keeps
//! writing while the mover reads (a file changing size is a warning), so
//! pre/post hooks, when a policy has them, run around this copy.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{PersistentVolume, Pod, Toleration};
use kube::api::Api;
use lifeboat_core::model::VolumeMethod;
use lifeboat_core::volumes::VolumeDecision;
use serde_json::json;

use super::{
    Created, DataKind, Method, Mover, MoverAccess, MoverBackup, MoverOptions, PodVolumeRef,
    RepoKey, VolumeError, VolumeProgress, VolumeResult, WORK_DIR, Work, backup_labels, kube_err,
    object_name, timed, typed,
};

/// The kubelet's pods directory on a node (its default `--root-dir`).
pub const KUBELET_PODS_DIR: &str = "/var/lib/kubelet/pods";
/// Where a `fileSystem` mover sees the node's kubelet pods directory.
pub const HOST_PODS_DIR: &str = "/host/var/lib/kubelet/pods";

/// A claim as a running pod mounts it: what a `fileSystem` backup reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodVolume {
    pub namespace: String,
    pub pvc: String,
    pub pvc_uid: String,
    /// The bound PersistentVolume (the kubelet's directory name).
    pub pv: String,
    /// The running pod that mounts the claim, its uid and its node.
    pub pod: String,
    pub pod_uid: String,
    pub node: String,
}

impl PodVolume {
    /// The pod volume of a planner decision for `fileSystem`; an error when
    /// the decision is for another method or lacks the pod.
    pub fn from_decision(d: &VolumeDecision) -> Result<PodVolume, VolumeError> {
        let what = format!("{}/{}", d.namespace, d.pvc);
        if d.method != Some(VolumeMethod::FileSystem) {
            return Err(VolumeError::Invalid(format!(
                "the claim {what} is not to be backed up by `fileSystem`"
            )));
        }
        let missing = |field: &str| {
            VolumeError::Invalid(format!(
                "the `fileSystem` decision for {what} names no {field}"
            ))
        };
        Ok(PodVolume {
            namespace: d.namespace.clone(),
            pvc: d.pvc.clone(),
            pvc_uid: d.pvc_uid.clone(),
            pv: d.pv.clone().ok_or_else(|| missing("volume"))?,
            pod: d.pod.clone().ok_or_else(|| missing("pod"))?,
            pod_uid: d.pod_uid.clone().ok_or_else(|| missing("pod uid"))?,
            node: d.node.clone().ok_or_else(|| missing("node"))?,
        })
    }
}

/// Backs up one claim by `fileSystem`. On failure the mover pod and its
/// Secret are removed and the error says what went wrong.
pub async fn back_up_claim(
    client: &kube::Client,
    volume: &PodVolume,
    backup: &str,
    access: &MoverAccess,
    key: &RepoKey,
    opts: &MoverOptions,
    progress: &(dyn Fn(VolumeProgress) + Send + Sync),
) -> Result<VolumeResult, VolumeError> {
    timed(client, opts, progress, async |created: &mut Created| {
        back_up_steps(client, volume, backup, access, key, opts, progress, created).await
    })
    .await
}

#[allow(clippy::too_many_arguments)]
async fn back_up_steps(
    client: &kube::Client,
    v: &PodVolume,
    backup: &str,
    access: &MoverAccess,
    key: &RepoKey,
    opts: &MoverOptions,
    progress: &(dyn Fn(VolumeProgress) + Send + Sync),
    created: &mut Created,
) -> Result<VolumeResult, VolumeError> {
    // 1. The pod still runs there and mounts the claim; the volume is one
    //    the kubelet mounts into the pod's directory.
    progress(VolumeProgress::Step { step: "locate" });
    let workload = Api::<Pod>::namespaced(client.clone(), &v.namespace)
        .get_opt(&v.pod)
        .await
        .map_err(kube_err(format!("read pod {}/{}", v.namespace, v.pod)))?;
    let workload = check_pod(v, workload)?;
    let pv = Api::<PersistentVolume>::all(client.clone())
        .get(&v.pv)
        .await
        .map_err(kube_err(format!("read PersistentVolume {}", v.pv)))?;
    if let Some(spec) = &pv.spec {
        if spec.volume_mode.as_deref() == Some("Block") {
            return Err(VolumeError::Invalid(format!(
                "the volume {} of {}/{} is a Block volume, which has no file system to read; \
                 protect it by `snapshotMove`",
                v.pv, v.namespace, v.pvc
            )));
        }
        if let Some(h) = &spec.host_path {
            return Err(VolumeError::Invalid(format!(
                "the volume {} of {}/{} is the node directory {} (hostPath), which the kubelet \
                 does not mount into the pod's directory; `fileSystem` cannot read it",
                v.pv, v.namespace, v.pvc, h.path
            )));
        }
    }

    // 2. The mover on that node, reading the kubelet's pods directory.
    let lbl = backup_labels(backup, &v.namespace, &v.pvc);
    let name = object_name("lifeboat-fs", backup, &v.namespace, &v.pvc);
    let work = Work {
        location: access.location.clone(),
        location_name: access.location_name.clone(),
        cluster: access.cluster.clone(),
        namespace: v.namespace.clone(),
        pvc: v.pvc.clone(),
        pvc_uid: Some(v.pvc_uid.clone()),
        backup: Some(backup.into()),
        path: HOST_PODS_DIR.into(),
        kind: DataKind::Filesystem,
        snapshot: None,
        key_cache_dir: WORK_DIR.into(),
        pod_volume: Some(PodVolumeRef {
            pod_uid: v.pod_uid.clone(),
            volume: v.pv.clone(),
        }),
        maintenance: None,
        repository: None,
    };
    let tolerations = workload
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    let pod = mover_pod(v, &name, &lbl, tolerations, opts)?;
    let mover = Mover {
        name: name.clone(),
        action: "backup",
        claim: String::new(),
        block: false,
        node_affinity: None,
        labels: lbl,
    };
    progress(VolumeProgress::Step { step: "mover" });
    let (message, node) = mover
        .run_pod(client, pod, &work, key, opts, progress, created)
        .await?;
    Ok(MoverBackup::parse(message, &name)?.result(
        (&v.namespace, &v.pvc, &v.pvc_uid),
        Method::FileSystem,
        node.or_else(|| Some(v.node.clone())),
    ))
}

/// The mover pod of a `fileSystem` backup: on the workload's node (with its
/// tolerations), the node's kubelet pods directory mounted read-only.
fn mover_pod(
    v: &PodVolume,
    name: &str,
    lbl: &BTreeMap<String, String>,
    tolerations: Vec<Toleration>,
    opts: &MoverOptions,
) -> Result<Pod, VolumeError> {
    let mut pod = json!({
        "metadata": {"name": name, "namespace": opts.namespace, "labels": lbl},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchFields": [
                    {"key": "metadata.name", "operator": "In", "values": [v.node]}]}]}}},
            "tolerations": tolerations,
            "containers": [{
                "name": "mover",
                "image": opts.image,
                "command": ["lifeboat", "mover", "backup", "--work", format!("{WORK_DIR}/work.json")],
                "terminationMessagePolicy": "File",
                // Root reads files of every owner; nothing is written but
                // the termination message. Under SELinux (OpenShift) other
                // pods' files carry their own MCS categories: `spc_t` may
                // read them, as the node's own agents do.
                "securityContext": {"runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": false,
                                    "readOnlyRootFilesystem": true,
                                    "allowPrivilegeEscalation": false,
                                    "seLinuxOptions": {"type": "spc_t"}},
                "volumeMounts": [
                    {"name": "work", "mountPath": WORK_DIR, "readOnly": true},
                    {"name": "host-pods", "mountPath": HOST_PODS_DIR, "readOnly": true,
                     "mountPropagation": "HostToContainer"},
                ],
            }],
            "volumes": [
                {"name": "work", "secret": {"secretName": name, "defaultMode": 0o400}},
                {"name": "host-pods", "hostPath": {"path": KUBELET_PODS_DIR, "type": "Directory"}},
            ],
        },
    });
    opts.shape_pod(&mut pod["spec"]);
    typed(pod)
}

/// The workload pod, when it is still the one chosen: same uid, Running on
/// the node, mounting the claim.
fn check_pod(v: &PodVolume, pod: Option<Pod>) -> Result<Pod, VolumeError> {
    let what = format!("{}/{}", v.namespace, v.pod);
    let gone = |why: String| {
        VolumeError::Invalid(format!(
            "the pod {what} that mounted {}/{} {why}; `fileSystem` reads a claim only through a \
             running pod that mounts it",
            v.namespace, v.pvc
        ))
    };
    let Some(pod) = pod else {
        return Err(gone("no longer exists".into()));
    };
    if kube::ResourceExt::uid(&pod).as_deref() != Some(v.pod_uid.as_str()) {
        return Err(gone("was replaced by another pod of that name".into()));
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if phase != Some("Running") || pod.metadata.deletion_timestamp.is_some() {
        return Err(gone(format!(
            "is not running (phase {})",
            phase.unwrap_or("unknown")
        )));
    }
    let spec = pod.spec.as_ref();
    if spec.and_then(|s| s.node_name.as_deref()) != Some(v.node.as_str()) {
        return Err(gone(format!("is no longer on node {}", v.node)));
    }
    let mounts = spec
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .any(|vol| {
            vol.persistent_volume_claim
                .as_ref()
                .is_some_and(|c| c.claim_name == v.pvc)
        });
    if !mounts {
        return Err(gone("does not mount it".into()));
    }
    Ok(pod)
}

/// Why a pod volume could not be found on the node.
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    #[error(
        "no mount of volume {volume} for pod {pod_uid} under {dir} on this node (is the pod still \
         running here? a kubelet with another --root-dir keeps pods elsewhere)"
    )]
    NotFound {
        dir: PathBuf,
        pod_uid: String,
        volume: String,
    },
    #[error("volume {volume} of pod {pod_uid} is mounted by several plugins: {found:?}")]
    Ambiguous {
        pod_uid: String,
        volume: String,
        found: Vec<PathBuf>,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Finds a pod's mount of a volume in a kubelet pods directory, as the
/// kubelet lays it out (and as Velero's node agent looks for it):
/// `<pods>/<pod-uid>/volumes/<plugin>/<volume>`, where `<plugin>` is the
/// escaped plugin name (`kubernetes.io~nfs`, `kubernetes.io~local-volume`…)
/// and a CSI volume's file system is its `mount` subdirectory
/// (`kubernetes.io~csi/<pv>/mount`, beside `vol_data.json`). Exactly one
/// plugin directory may hold it.
pub fn find_pod_volume(pods_dir: &Path, pod: &PodVolumeRef) -> Result<PathBuf, FindError> {
    let volumes = pods_dir.join(&pod.pod_uid).join("volumes");
    let not_found = || FindError::NotFound {
        dir: pods_dir.to_path_buf(),
        pod_uid: pod.pod_uid.clone(),
        volume: pod.volume.clone(),
    };
    if pod.volume.is_empty() || pod.volume.contains('/') || pod.pod_uid.contains('/') {
        return Err(not_found());
    }
    let entries = match std::fs::read_dir(&volumes) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
        Err(source) => {
            return Err(FindError::Read {
                path: volumes,
                source,
            });
        }
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| FindError::Read {
            path: volumes.clone(),
            source,
        })?;
        let mut path = entry.path().join(&pod.volume);
        if entry.file_name() == "kubernetes.io~csi" {
            path.push("mount");
        }
        if path.is_dir() {
            found.push(path);
        }
    }
    found.sort();
    match found.len() {
        0 => Err(not_found()),
        1 => Ok(found.remove(0)),
        _ => Err(FindError::Ambiguous {
            pod_uid: pod.pod_uid.clone(),
            volume: pod.volume.clone(),
            found,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{BACKUP_LABEL, labels};
    use super::*;

    fn layout(dirs: &[&str]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for p in dirs {
            std::fs::create_dir_all(d.path().join(p)).unwrap();
        }
        d
    }

    fn r(uid: &str, volume: &str) -> PodVolumeRef {
        PodVolumeRef {
            pod_uid: uid.into(),
            volume: volume.into(),
        }
    }

    #[test]
    fn pod_volumes_are_found_as_the_kubelet_lays_them_out() {
        let d = layout(&[
            "u1/volumes/kubernetes.io~nfs/pvc-a",
            "u1/volumes/kubernetes.io~csi/pvc-b/mount",
            "u1/volumes/kubernetes.io~empty-dir/cache",
            "u2/volumes/kubernetes.io~local-volume/local-pv",
        ]);
        let p = d.path();
        assert_eq!(
            find_pod_volume(p, &r("u1", "pvc-a")).unwrap(),
            p.join("u1/volumes/kubernetes.io~nfs/pvc-a")
        );
        assert_eq!(
            find_pod_volume(p, &r("u1", "pvc-b")).unwrap(),
            p.join("u1/volumes/kubernetes.io~csi/pvc-b/mount")
        );
        assert_eq!(
            find_pod_volume(p, &r("u2", "local-pv")).unwrap(),
            p.join("u2/volumes/kubernetes.io~local-volume/local-pv")
        );
    }

    #[test]
    fn a_missing_or_ambiguous_pod_volume_is_an_error_naming_it() {
        let d = layout(&[
            "u1/volumes/kubernetes.io~nfs/pvc-a",
            "u1/volumes/example.com~other/pvc-a",
            // A CSI volume the kubelet has not mounted yet: no `mount`.
            "u1/volumes/kubernetes.io~csi/pvc-b",
        ]);
        let p = d.path();
        let e = find_pod_volume(p, &r("u1", "pvc-a")).unwrap_err();
        assert!(
            matches!(e, FindError::Ambiguous { ref found, .. } if found.len() == 2),
            "{e}"
        );
        let e = find_pod_volume(p, &r("u1", "pvc-b"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no mount of volume pvc-b for pod u1"), "{e}");
        let e = find_pod_volume(p, &r("u9", "pvc-a"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no mount of volume pvc-a for pod u9"), "{e}");
        assert!(find_pod_volume(p, &r("u1", "../u1")).is_err());
    }

    fn pod(uid: &str, phase: &str, node: &str, claim: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "db-0", "namespace": "shop", "uid": uid},
            "spec": {"nodeName": node, "containers": [{"name": "c"}],
                     "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]},
            "status": {"phase": phase},
        }))
        .unwrap()
    }

    fn volume() -> PodVolume {
        PodVolume {
            namespace: "shop".into(),
            pvc: "data".into(),
            pvc_uid: "c1".into(),
            pv: "pvc-c1".into(),
            pod: "db-0".into(),
            pod_uid: "u1".into(),
            node: "n1".into(),
        }
    }

    #[test]
    fn the_mover_runs_on_the_pods_node_and_reads_the_kubelet_directory_read_only() {
        let tolerations: Vec<Toleration> = serde_json::from_value(json!([
            {"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}
        ]))
        .unwrap();
        let lbl = labels(BACKUP_LABEL, "b1", &[]);
        let opts = MoverOptions {
            service_account: Some("lifeboat-mover".into()),
            priority_class: Some("backup-low".into()),
            resources: super::super::MoverResources {
                requests: [("cpu".into(), "250m".into())].into(),
                limits: [("memory".into(), "1Gi".into())].into(),
            },
            ..MoverOptions::default()
        };
        let pod = mover_pod(&volume(), "m", &lbl, tolerations, &opts).unwrap();
        let p = serde_json::to_value(&pod).unwrap();
        assert_eq!(p["metadata"]["namespace"], "lifeboat-movers");
        assert_eq!(
            p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                ["nodeSelectorTerms"][0]["matchFields"][0],
            json!({"key": "metadata.name", "operator": "In", "values": ["n1"]})
        );
        assert_eq!(p["spec"]["tolerations"][0]["key"], "dedicated");
        assert_eq!(
            p["spec"]["volumes"][1],
            json!({"name": "host-pods", "hostPath": {"path": "/var/lib/kubelet/pods", "type": "Directory"}})
        );
        let mounts = &p["spec"]["containers"][0]["volumeMounts"];
        assert_eq!(
            mounts[1],
            json!({"name": "host-pods", "mountPath": HOST_PODS_DIR, "readOnly": true,
                   "mountPropagation": "HostToContainer"})
        );
        assert_eq!(mounts[0]["readOnly"], true);
        let sc = &p["spec"]["containers"][0]["securityContext"];
        assert_eq!(sc["runAsUser"], 0);
        assert_eq!(sc["readOnlyRootFilesystem"], true);
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["seLinuxOptions"]["type"], "spc_t");
        assert_eq!(p["spec"]["automountServiceAccountToken"], false);
        assert_eq!(p["spec"]["serviceAccountName"], "lifeboat-mover");
        assert_eq!(p["spec"]["priorityClassName"], "backup-low");
        assert_eq!(
            p["spec"]["containers"][0]["resources"],
            json!({"requests": {"cpu": "250m"}, "limits": {"memory": "1Gi"}})
        );
        assert_eq!(p["spec"]["containers"][0]["command"][2], "backup");
    }

    #[test]
    fn only_the_chosen_running_pod_that_mounts_the_claim_is_read() {
        let v = volume();
        assert!(check_pod(&v, Some(pod("u1", "Running", "n1", "data"))).is_ok());
        for (p, why) in [
            (None, "no longer exists"),
            (Some(pod("u2", "Running", "n1", "data")), "was replaced"),
            (Some(pod("u1", "Pending", "n1", "data")), "is not running"),
            (
                Some(pod("u1", "Running", "n2", "data")),
                "no longer on node n1",
            ),
            (
                Some(pod("u1", "Running", "n1", "other")),
                "does not mount it",
            ),
        ] {
            let e = check_pod(&v, p).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains("shop/db-0"), "{e}");
        }
    }
}
