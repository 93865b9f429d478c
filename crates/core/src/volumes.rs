//! Volume planning: which claims a BackupPolicy protects, by which method,
//! with which VolumeSnapshotClass or on which node — or why a claim cannot
//! be protected. A pure function of the policy and an [`Inventory`] of the
//! cluster (observed state the caller collected); no I/O.
//!
//! ```text
//! BackupPolicy ─┐
//! recipients? ──┼─▶ decide ─▶ Vec<VolumeDecision>  (one per selected bound claim,
//! Inventory ────┘                                    by namespace and name)
//! ```
//!
//! For each claim the policy selects (namespace, `persistentvolumeclaims`,
//! labels, as for its objects) that is `Bound`, the **wanted** method comes
//! from the first of:
//!
//! 1. the first of `volumes.rules` whose `match` fits the claim;
//! 2. Velero's pod annotations on a pod (not finished) that mounts it:
//!    `backup.velero.io/backup-volumes` naming the pod's volume asks for
//!    `fileSystem`; `backup.velero.io/backup-volumes-excludes` keeps it out of
//!    file-system backup: where the next step would give `fileSystem`, the
//!    claim gets the automatic choice (4.) instead, or `skip` where that
//!    finds nothing;
//! 3. `volumes.method`;
//! 4. the automatic choice: `snapshotMove` when the claim's CSI driver has a
//!    VolumeSnapshotClass and the location has encryption recipients, else
//!    nothing: the claim is reported unprotected.
//!
//! Then what the method needs is looked up, and a claim whose method cannot
//! be carried out gets `method: None` and a warning saying why — never a
//! silent "protected":
//!
//! - `snapshotMove`, `snapshot`: a CSI volume and a VolumeSnapshotClass of
//!   its driver, chosen in Velero's order ([`snapshot_class`]);
//!   `snapshotMove` also needs recipients.
//! - `fileSystem`: recipients, a Filesystem-mode volume, and a Running pod
//!   on a node that mounts the claim (the mover reads the kubelet's mount
//!   there).
//! - `skip`: nothing.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::model::{BackupPolicy, VolumeMatch, VolumeMethod};
use crate::select::{PatternError, Selection};

/// Pod annotation listing pod volumes to back up by file system (Velero's opt-in).
pub const VELERO_BACKUP_VOLUMES: &str = "backup.velero.io/backup-volumes";
/// Pod annotation listing pod volumes kept out of file-system backup (Velero's opt-out).
pub const VELERO_BACKUP_VOLUMES_EXCLUDES: &str = "backup.velero.io/backup-volumes-excludes";
/// PVC annotation naming the VolumeSnapshotClass for the claim (Velero's).
pub const VELERO_SNAPSHOT_CLASS: &str = "velero.io/csi-volumesnapshot-class";
/// Label (value `"true"`) marking the VolumeSnapshotClass lifeboat uses for its driver.
pub const SNAPSHOT_CLASS_LABEL: &str = "lifeboat.dev/snapshot-class";
/// The external-snapshotter's default-class annotation (value `"true"`).
pub const DEFAULT_SNAPSHOT_CLASS_ANNOTATION: &str =
    "snapshot.storage.kubernetes.io/is-default-class";

// ---------------------------------------------------------------- input

/// What a cluster holds that volume planning looks at: observed state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    /// Every PersistentVolumeClaim, with its bound volume.
    pub claims: Vec<ClaimInfo>,
    pub storage_classes: Vec<StorageClassInfo>,
    /// `None` when the cluster does not serve the VolumeSnapshotClass API
    /// (the snapshot CRDs are not installed).
    pub snapshot_classes: Option<Vec<SnapshotClassInfo>>,
    /// Pods that mount at least one claim.
    pub pods: Vec<PodInfo>,
    /// Velero Schedules that are not paused (after `lifeboat import
    /// velero`, both tools would back up the same namespaces).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub velero_schedules: Vec<VeleroSchedule>,
    /// KubeVirt VirtualMachines (empty where KubeVirt is not installed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vms: Vec<crate::kubevirt::VmInfo>,
    /// The CRDs and OLM operators the cluster provides, looked at for the
    /// prerequisites of the backups restores into it would use
    /// ([`crate::prerequisites`]); `None`: not looked at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provides: Option<crate::prerequisites::Provided>,
}

/// An enabled Velero Schedule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VeleroSchedule {
    pub namespace: String,
    pub name: String,
    /// `spec.template.includedNamespaces`; empty or `*`: every namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub included_namespaces: Vec<String>,
}

/// A PersistentVolumeClaim and the volume bound to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    pub storage_class: Option<String>,
    /// Bytes: `status.capacity.storage`, else the requested size.
    pub capacity: Option<u64>,
    /// `ReadWriteOnce`, `ReadWriteMany`, …
    #[serde(default)]
    pub access_modes: Vec<String>,
    #[serde(default)]
    pub volume_mode: VolumeMode,
    /// `Bound`, `Pending` or `Lost`.
    pub phase: String,
    /// The bound PersistentVolume (`spec.volumeName`).
    pub volume_name: Option<String>,
    /// `spec.csi.driver` of the bound PersistentVolume; `None` for a
    /// volume of another kind (NFS, hostPath) or one not observed.
    pub csi_driver: Option<String>,
}

/// `spec.volumeMode` of a claim.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VolumeMode {
    #[default]
    Filesystem,
    Block,
}

/// A StorageClass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageClassInfo {
    pub name: String,
    pub provisioner: String,
}

/// A VolumeSnapshotClass (`snapshot.storage.k8s.io/v1`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotClassInfo {
    pub name: String,
    pub driver: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A pod that mounts claims.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// `spec.nodeName`, once scheduled.
    pub node: Option<String>,
    /// `status.phase`: `Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`.
    pub phase: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The pod's volumes that are claims.
    pub volumes: Vec<PodClaimVolume>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The pod's controller, `Kind/name`, a ReplicaSet's resolved to its
    /// Deployment (hooks select pods by owner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The names of the pod's containers, in order (hooks run in the first
    /// by default).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<String>,
}

/// A volume of a pod backed by a claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodClaimVolume {
    /// The volume's name in the pod spec (what Velero's annotations list).
    pub name: String,
    /// `persistentVolumeClaim.claimName`.
    pub claim: String,
}

// ---------------------------------------------------------------- output

/// How one claim's data is protected by one policy: what the backup flow
/// carries out and what plans, manifests and status files report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeDecision {
    pub namespace: String,
    pub pvc: String,
    pub pvc_uid: String,
    /// The bound PersistentVolume.
    pub pv: Option<String>,
    pub storage_class: Option<String>,
    pub csi_driver: Option<String>,
    pub volume_mode: VolumeMode,
    /// Bytes, where known.
    pub capacity: Option<u64>,
    /// The method to carry out; `None`: the claim's data is NOT protected
    /// (`warning` says why). `Some(Skip)` is a deliberate skip.
    pub method: Option<VolumeMethod>,
    /// The method asked for (`None` when the automatic choice found none).
    pub wanted: Option<VolumeMethod>,
    /// What chose `wanted`.
    pub decided_by: DecidedBy,
    /// For `snapshotMove` and `snapshot`: the VolumeSnapshotClass.
    pub snapshot_class: Option<String>,
    /// For `fileSystem`: the running pod that mounts the claim…
    pub pod: Option<String>,
    /// …its uid (the kubelet's directory `pods/<uid>/volumes/…`)…
    pub pod_uid: Option<String>,
    /// …and its node, where the mover runs.
    pub node: Option<String>,
    /// Why the claim is not protected, or what to know about how it is.
    pub warning: Option<String>,
}

impl VolumeDecision {
    /// Whether the claim's data is backed up (not skipped, not unprotected).
    pub fn is_protected(&self) -> bool {
        matches!(self.method, Some(m) if m != VolumeMethod::Skip)
    }
}

/// What chose a claim's method.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all_fields = "camelCase")]
pub enum DecidedBy {
    /// `volumes.rules[index - 1]` (1-based, as the plan prints it).
    Rule { index: usize },
    /// A Velero annotation on a pod that mounts the claim.
    PodAnnotation { pod: String, annotation: String },
    /// `volumes.method`.
    PolicyMethod,
    /// The automatic choice of a policy without `volumes.method`.
    Default,
}

impl std::fmt::Display for DecidedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecidedBy::Rule { index } => write!(f, "rule {index}"),
            DecidedBy::PodAnnotation { pod, annotation } => {
                write!(f, "annotation {annotation} on pod {pod}")
            }
            DecidedBy::PolicyMethod => f.write_str("volumes.method"),
            DecidedBy::Default => f.write_str("default"),
        }
    }
}

// ---------------------------------------------------------------- deciding

/// The status line for claims whose data only a snapshot kept in the
/// cluster's storage system holds (method `snapshot`): it does not survive
/// losing that storage. `None` when there are none.
pub fn not_disaster_proof(decisions: &[VolumeDecision]) -> Option<String> {
    let kept: Vec<String> = decisions
        .iter()
        .filter(|d| d.method == Some(VolumeMethod::Snapshot))
        .map(|d| format!("{}/{}", d.namespace, d.pvc))
        .collect();
    (!kept.is_empty()).then(|| {
        format!(
            "not disaster-proof: `snapshot` keeps the data of {} only in the cluster's storage \
             system ({}); use `snapshotMove` for data that must survive losing the cluster",
            if kept.len() == 1 {
                "1 claim".to_string()
            } else {
                format!("{} claims", kept.len())
            },
            kept.join(", ")
        )
    })
}

/// Decides, for every bound claim `policy` selects in `inventory`, how its
/// data is protected. `has_recipients`: whether the policy's location has
/// encryption recipients. Sorted by namespace and claim name. Fails only
/// on a malformed namespace glob (lint LB114).
pub fn decide(
    policy: &BackupPolicy,
    has_recipients: bool,
    inventory: &Inventory,
) -> Result<Vec<VolumeDecision>, PatternError> {
    let spec = &policy.spec;
    let selection = Selection::new(&spec.include, &spec.exclude)?;
    if !selection.resource("persistentvolumeclaims", "") {
        return Ok(Vec::new());
    }
    let mut mounts: HashMap<(&str, &str), Vec<(&PodInfo, &str)>> = HashMap::new();
    for pod in &inventory.pods {
        for v in &pod.volumes {
            mounts
                .entry((pod.namespace.as_str(), v.claim.as_str()))
                .or_default()
                .push((pod, v.name.as_str()));
        }
    }
    for list in mounts.values_mut() {
        list.sort_by(|a, b| (&a.0.name, a.1).cmp(&(&b.0.name, b.1)));
    }
    let ctx = Context {
        policy,
        has_recipients,
        inventory,
    };
    let mut out: Vec<VolumeDecision> = inventory
        .claims
        .iter()
        .filter(|c| {
            c.phase == "Bound"
                && c.volume_name.is_some()
                && selection.namespace(&c.namespace)
                && selection.labels(&c.labels)
        })
        .map(|c| {
            let pods = mounts
                .get(&(c.namespace.as_str(), c.name.as_str()))
                .map_or(&[][..], Vec::as_slice);
            ctx.claim(c, pods)
        })
        .collect();
    out.sort_by(|a, b| (&a.namespace, &a.pvc).cmp(&(&b.namespace, &b.pvc)));
    out.dedup_by(|a, b| a.namespace == b.namespace && a.pvc == b.pvc);
    Ok(out)
}

struct Context<'a> {
    policy: &'a BackupPolicy,
    has_recipients: bool,
    inventory: &'a Inventory,
}

/// Whether a pod still runs or will (finished pods are not backed up).
fn live(pod: &PodInfo) -> bool {
    !matches!(pod.phase.as_str(), "Succeeded" | "Failed")
}

/// Whether an annotation's comma-separated list names `volume`.
fn lists(pod: &PodInfo, annotation: &str, volume: &str) -> bool {
    pod.annotations
        .get(annotation)
        .is_some_and(|v| v.split(',').any(|s| s.trim() == volume))
}

impl Context<'_> {
    fn claim(&self, claim: &ClaimInfo, pods: &[(&PodInfo, &str)]) -> VolumeDecision {
        let volumes = self.policy.spec.volumes.as_ref();
        let rule = volumes.and_then(|v| {
            v.rules
                .iter()
                .position(|r| self.matches(&r.matches, claim))
                .map(|i| (v.rules[i].method, DecidedBy::Rule { index: i + 1 }))
        });
        let annotated = |annotation: &str| {
            pods.iter()
                .find(|(pod, volume)| live(pod) && lists(pod, annotation, volume))
                .map(|(pod, _)| DecidedBy::PodAnnotation {
                    pod: pod.name.clone(),
                    annotation: annotation.to_string(),
                })
        };
        let (wanted, decided_by) = match rule {
            Some((method, by)) => (Some(method), by),
            None => match annotated(VELERO_BACKUP_VOLUMES) {
                Some(by) => (Some(VolumeMethod::FileSystem), by),
                None => {
                    let next = match volumes.and_then(|v| v.method) {
                        Some(method) => (Some(method), DecidedBy::PolicyMethod),
                        None => (self.automatic(claim), DecidedBy::Default),
                    };
                    match (next.0, annotated(VELERO_BACKUP_VOLUMES_EXCLUDES)) {
                        (Some(VolumeMethod::FileSystem), Some(by)) => (
                            Some(self.automatic(claim).unwrap_or(VolumeMethod::Skip)),
                            by,
                        ),
                        _ => next,
                    }
                }
            },
        };
        let mut d = VolumeDecision {
            namespace: claim.namespace.clone(),
            pvc: claim.name.clone(),
            pvc_uid: claim.uid.clone(),
            pv: claim.volume_name.clone(),
            storage_class: claim.storage_class.clone(),
            csi_driver: claim.csi_driver.clone(),
            volume_mode: claim.volume_mode,
            capacity: claim.capacity,
            method: None,
            wanted,
            decided_by,
            snapshot_class: None,
            pod: None,
            pod_uid: None,
            node: None,
            warning: None,
        };
        match wanted {
            None => d.warning = Some(self.why_no_automatic(claim)),
            Some(method) => match self.carry_out(method, claim, pods, &mut d) {
                Ok(()) => d.method = Some(method),
                Err(why) => d.warning = Some(format!("`{method}` cannot protect it: {why}")),
            },
        }
        d
    }

    /// `snapshotMove` where it works, else nothing.
    fn automatic(&self, claim: &ClaimInfo) -> Option<VolumeMethod> {
        let driver = claim.csi_driver.as_deref()?;
        let has_class = self
            .inventory
            .snapshot_classes
            .as_ref()?
            .iter()
            .any(|c| c.driver == driver);
        (has_class && self.has_recipients).then_some(VolumeMethod::SnapshotMove)
    }

    /// Why [`Self::automatic`] found nothing, with what to do.
    fn why_no_automatic(&self, claim: &ClaimInfo) -> String {
        let location = &self.policy.spec.storage;
        let why = match (&claim.csi_driver, &self.inventory.snapshot_classes) {
            (None, _) => not_csi(claim),
            (Some(_), None) => no_snapshot_api(),
            (Some(driver), Some(classes)) if !classes.iter().any(|c| &c.driver == driver) => {
                format!("CSI driver `{driver}` has no VolumeSnapshotClass")
            }
            _ => format!("storage location `{location}` has no encryption recipients"),
        };
        format!(
            "not protected: {why}; add a `volumes` rule for it (`fileSystem` reads it through a pod that mounts it, `skip` makes this explicit)"
        )
    }

    fn carry_out(
        &self,
        method: VolumeMethod,
        claim: &ClaimInfo,
        pods: &[(&PodInfo, &str)],
        d: &mut VolumeDecision,
    ) -> Result<(), String> {
        let location = &self.policy.spec.storage;
        if method.writes_repository() && !self.has_recipients {
            return Err(format!(
                "storage location `{location}` has no encryption recipients, so it cannot hold volume data"
            ));
        }
        match method {
            VolumeMethod::SnapshotMove | VolumeMethod::Snapshot => {
                let Some(driver) = claim.csi_driver.as_deref() else {
                    return Err(not_csi(claim));
                };
                let Some(classes) = &self.inventory.snapshot_classes else {
                    return Err(no_snapshot_api());
                };
                d.snapshot_class = Some(snapshot_class(claim, driver, classes)?.name.clone());
                if method == VolumeMethod::Snapshot {
                    d.warning = Some(
                        "the snapshot stays in the cluster's storage system: it is lost with the cluster or its storage".into(),
                    );
                }
            }
            VolumeMethod::FileSystem => {
                if claim.volume_mode == VolumeMode::Block {
                    return Err("it is a Block volume, which has no file system to read".into());
                }
                let Some((pod, node)) = pods.iter().find_map(|(pod, _)| {
                    (pod.phase == "Running")
                        .then_some(())
                        .and(pod.node.as_deref())
                        .map(|node| (*pod, node))
                }) else {
                    return Err(if pods.is_empty() {
                        "no pod mounts it, so there is no mounted file system to read".into()
                    } else {
                        format!(
                            "no running pod mounts it ({} is not running on a node)",
                            pods.iter()
                                .map(|(p, _)| format!("`{}`", p.name))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    });
                };
                d.pod = Some(pod.name.clone());
                d.pod_uid = Some(pod.uid.clone());
                d.node = Some(node.to_string());
            }
            VolumeMethod::Skip => {}
        }
        Ok(())
    }

    fn matches(&self, m: &VolumeMatch, claim: &ClaimInfo) -> bool {
        (m.storage_classes.is_empty()
            || claim.storage_class.as_deref().is_some_and(|sc| {
                crate::lint::any_matches(m.storage_classes.iter().map(|p| p.0.as_str()), sc)
            }))
            && (m.csi_drivers.is_empty()
                || self
                    .driver(claim)
                    .is_some_and(|d| m.csi_drivers.iter().any(|x| x == d)))
            && m.label_selector
                .as_ref()
                .is_none_or(|s| s.matches(&claim.labels))
            && m.capacity.as_ref().is_none_or(|range| {
                claim.capacity.is_some_and(|c| {
                    let c = u128::from(c);
                    range.min.as_ref().is_none_or(|min| c >= min.bytes())
                        && range.max.as_ref().is_none_or(|max| c <= max.bytes())
                })
            })
            && (m.access_modes.is_empty()
                || m.access_modes
                    .iter()
                    .any(|a| claim.access_modes.iter().any(|c| c == a.as_str())))
    }

    /// The claim's CSI driver: its volume's, else its storage class's
    /// provisioner when the volume was not observed.
    fn driver<'a>(&'a self, claim: &'a ClaimInfo) -> Option<&'a str> {
        claim.csi_driver.as_deref().or_else(|| {
            let class = claim.storage_class.as_deref()?;
            self.inventory
                .storage_classes
                .iter()
                .find(|c| c.name == class)
                .map(|c| c.provisioner.as_str())
        })
    }
}

fn not_csi(claim: &ClaimInfo) -> String {
    format!(
        "its volume `{}` is not a CSI volume{}, so it cannot be snapshotted",
        claim.volume_name.as_deref().unwrap_or("?"),
        claim
            .storage_class
            .as_deref()
            .map(|c| format!(" (storage class `{c}`)"))
            .unwrap_or_default()
    )
}

fn no_snapshot_api() -> String {
    "the cluster does not serve VolumeSnapshotClasses (the CSI snapshot CRDs are not installed)"
        .into()
}

/// The VolumeSnapshotClass for a claim whose volume has CSI driver
/// `driver`, in Velero's order: the class the claim's
/// `velero.io/csi-volumesnapshot-class` annotation names; the class of the
/// driver labelled `lifeboat.dev/snapshot-class: "true"`; the driver's
/// default class (`snapshot.storage.kubernetes.io/is-default-class: "true"`);
/// the driver's only class. Otherwise an error saying what to do.
pub fn snapshot_class<'a>(
    claim: &ClaimInfo,
    driver: &str,
    classes: &'a [SnapshotClassInfo],
) -> Result<&'a SnapshotClassInfo, String> {
    if let Some(name) = claim.annotations.get(VELERO_SNAPSHOT_CLASS) {
        return match classes.iter().find(|c| &c.name == name) {
            None => Err(format!(
                "its annotation {VELERO_SNAPSHOT_CLASS} names VolumeSnapshotClass `{name}`, which does not exist"
            )),
            Some(c) if c.driver != driver => Err(format!(
                "its annotation {VELERO_SNAPSHOT_CLASS} names VolumeSnapshotClass `{name}` of driver `{}`, but its volume is of driver `{driver}`",
                c.driver
            )),
            Some(c) => Ok(c),
        };
    }
    let mut of_driver: Vec<&SnapshotClassInfo> =
        classes.iter().filter(|c| c.driver == driver).collect();
    of_driver.sort_by(|a, b| a.name.cmp(&b.name));
    let pick = |chosen: Vec<&'a SnapshotClassInfo>, how: &str| match chosen.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        many => Err(format!(
            "{} VolumeSnapshotClasses of driver `{driver}` are {how} ({}): keep it on one",
            many.len(),
            names(many)
        )),
    };
    let true_in = |m: &BTreeMap<String, String>, key: &str| m.get(key).is_some_and(|v| v == "true");
    if let Some(c) = pick(
        of_driver
            .iter()
            .copied()
            .filter(|c| true_in(&c.labels, SNAPSHOT_CLASS_LABEL))
            .collect(),
        &format!("labelled {SNAPSHOT_CLASS_LABEL}=true"),
    )? {
        return Ok(c);
    }
    if let Some(c) = pick(
        of_driver
            .iter()
            .copied()
            .filter(|c| true_in(&c.annotations, DEFAULT_SNAPSHOT_CLASS_ANNOTATION))
            .collect(),
        &format!("annotated {DEFAULT_SNAPSHOT_CLASS_ANNOTATION}=true"),
    )? {
        return Ok(c);
    }
    match of_driver.as_slice() {
        [] => Err(format!("CSI driver `{driver}` has no VolumeSnapshotClass")),
        [one] => Ok(one),
        many => Err(format!(
            "CSI driver `{driver}` has {} VolumeSnapshotClasses ({}) and none is chosen: label one {SNAPSHOT_CLASS_LABEL}=true, annotate one as the default, or name one in the claim's {VELERO_SNAPSHOT_CLASS} annotation",
            many.len(),
            names(many)
        )),
    }
}

fn names(classes: &[&SnapshotClassInfo]) -> String {
    classes
        .iter()
        .map(|c| format!("`{}`", c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
