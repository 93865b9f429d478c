//! Volume data orchestration: the `snapshotMove` method.
//!
//! ```text
//! backup of one claim (as Velero's CSI snapshot exposer does):
//!   VolumeSnapshot of the claim (its namespace) ─▶ readyToUse + snapshotHandle
//!   ─▶ its VolumeSnapshotContent set to Retain
//!   ─▶ a pre-provisioned VolumeSnapshotContent with the same handle (Delete),
//!      bound to a VolumeSnapshot in lifeboat-movers
//!   ─▶ the original VolumeSnapshot and Content deleted (the clone is now the
//!      handle's only Delete owner)
//!   ─▶ a PVC from the clone (size: restoreSize) + the work Secret + a mover
//!      pod (`lifeboat mover backup`, pinned by the source PV's node affinity)
//!   ─▶ progress from pods/log, the result from the termination message
//!   ─▶ pod, Secret, PVC, clone deleted (the clone kept when asked)
//!
//! restore of one claim (as Velero's generic restore exposer does):
//!   the target claim exists, unbound (a selector no PV carries keeps
//!   provisioners away) ─▶ a PVC in lifeboat-movers of the same class and
//!   size + Secret + mover pod (`lifeboat mover restore`) fill a new volume
//!   ─▶ its PV set to Retain, pod and PVC deleted, the PV handed to the
//!   target claim (claimRef, the selector's label) ─▶ bound, policy restored
//! ```
//!
//! Everything created carries `lifeboat.dev/backup=<name>` (or
//! `lifeboat.dev/restore=<name>`) and `app.kubernetes.io/managed-by`; every
//! wait is bounded; a failure removes what the operation created and
//! returns an error saying what went wrong.

pub mod filesystem;
mod kept;
pub mod nodes;
mod work;

pub use kept::{delete_kept, kept_available, restore_claim_from_kept, thin_local_snapshots};

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::{AsyncBufReadExt, StreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, LogParams, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub use work::{
    DataKind, ForeignRepository, MaintenanceWork, PodVolumeRef, Work, WorkCredentials, WorkLocation,
};

use lifeboat_core::volumes::{VolumeDecision, VolumeMode};
pub use lifeboat_store::KeptSnapshot;

/// The namespace mover pods run in.
pub const MOVERS_NAMESPACE: &str = "lifeboat-movers";
/// Label on everything a backup creates in the cluster.
pub const BACKUP_LABEL: &str = "lifeboat.dev/backup";
/// Label on everything a restore creates in the cluster.
pub const RESTORE_LABEL: &str = "lifeboat.dev/restore";
/// On what a backup creates for one claim: [`claim_id`] of the claim, so a
/// resumed run finds what an interrupted one left for it.
pub const CLAIM_LABEL: &str = "lifeboat.dev/claim";
/// Label on a maintenance mover and its Secret: [`maintenance_id`] of the
/// repository it prunes.
pub const MAINTENANCE_LABEL: &str = "lifeboat.dev/maintenance";
/// Label on the PV a restore fills, matched by the target claim's selector
/// until the volume is handed over.
pub const RESTORE_VOLUME_LABEL: &str = "lifeboat.dev/restore-volume";
/// On a VolumeSnapshotContent a backup keeps (Retain): the method that
/// kept it, `snapshot` (the volume's only data) or `snapshotMove` (a local
/// copy under `keepLocalSnapshots`).
pub const KEPT_LABEL: &str = "lifeboat.dev/kept";
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "lifeboat");
/// The mover image by default (lifeboat's own, this version).
pub const DEFAULT_IMAGE: &str =
    concat!("ghcr.io/lifeboat-dev/lifeboat:", env!("CARGO_PKG_VERSION"));
/// How long a mover pod may stay Pending by default.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Where the work Secret is mounted in a mover pod.
const WORK_DIR: &str = "/etc/lifeboat/work";
/// Where the volume is mounted in a mover pod.
const DATA_DIR: &str = "/data";
const DATA_DEVICE: &str = "/dev/lifeboat-data";

/// How volume data moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Method {
    /// A CSI snapshot whose data a mover writes into the location's repository.
    SnapshotMove,
    /// A mover on the node of a pod that mounts the claim reads the mounted
    /// volume into the location's repository.
    FileSystem,
    /// A CSI snapshot kept in the storage system; nothing is copied.
    Snapshot,
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::SnapshotMove => "snapshotMove",
            Method::FileSystem => "fileSystem",
            Method::Snapshot => "snapshot",
        })
    }
}

/// Settings of mover pods and the waits around them.
#[derive(Debug, Clone)]
pub struct MoverOptions {
    /// The mover image (lifeboat's own; override for mirrored registries).
    pub image: String,
    /// The namespace movers run in.
    pub namespace: String,
    /// How long a snapshot may take to become ready.
    pub snapshot_timeout: Duration,
    /// How long a mover may take, from its creation to its result
    /// (scheduling and provisioning of its claim included).
    pub move_timeout: Duration,
    /// How long a mover pod may stay Pending (unschedulable, its image not
    /// pulled, its container not created) before its volume fails with
    /// the pod's reason.
    pub start_timeout: Duration,
    /// Keep the CSI snapshot (its clone, Retain, labelled) after the move.
    pub keep_snapshot: bool,
    /// How often state is polled.
    pub poll: Duration,
    /// The ServiceAccount mover pods run as (deploy/ makes
    /// `lifeboat-mover`; OpenShift grants its SCC to it); `None`: the
    /// namespace's `default`.
    pub service_account: Option<String>,
    /// Requests and limits of the mover container (`cpu`, `memory`… as
    /// quantities); empty: none, the namespace's LimitRange decides.
    pub resources: MoverResources,
    /// The PriorityClass of mover pods; `None`: the cluster's default.
    pub priority_class: Option<String>,
}

/// Resource requests and limits of a mover container, resource name ─▶
/// quantity (`cpu: 500m`, `memory: 1Gi`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MoverResources {
    pub requests: BTreeMap<String, String>,
    pub limits: BTreeMap<String, String>,
}

impl MoverOptions {
    /// Sets what these options say of every mover pod in the pod `spec`
    /// (its ServiceAccount, priority class, the resources of its `mover`
    /// container).
    fn shape_pod(&self, spec: &mut Value) {
        if let Some(sa) = &self.service_account {
            spec["serviceAccountName"] = json!(sa);
        }
        if let Some(pc) = &self.priority_class {
            spec["priorityClassName"] = json!(pc);
        }
        let r = &self.resources;
        if r.requests.is_empty() && r.limits.is_empty() {
            return;
        }
        let mut resources = json!({});
        if !r.requests.is_empty() {
            resources["requests"] = json!(r.requests);
        }
        if !r.limits.is_empty() {
            resources["limits"] = json!(r.limits);
        }
        if let Some(containers) = spec["containers"].as_array_mut() {
            for c in containers.iter_mut().filter(|c| c["name"] == "mover") {
                c["resources"] = resources.clone();
            }
        }
    }
}

impl Default for MoverOptions {
    fn default() -> Self {
        MoverOptions {
            image: DEFAULT_IMAGE.into(),
            namespace: MOVERS_NAMESPACE.into(),
            snapshot_timeout: Duration::from_secs(600),
            move_timeout: Duration::from_secs(4 * 3600),
            start_timeout: DEFAULT_START_TIMEOUT,
            keep_snapshot: false,
            poll: Duration::from_millis(250),
            service_account: None,
            resources: MoverResources::default(),
            priority_class: None,
        }
    }
}

/// What a mover needs to reach the repository.
#[derive(Debug, Clone)]
pub struct MoverAccess {
    pub location: WorkLocation,
    pub location_name: String,
    pub cluster: String,
}

/// A repository password, as the mover finds it in its key cache.
#[derive(Clone)]
pub struct RepoKey {
    /// The key cache entry's name (`lifeboat_volume::RepoRef::cache_key`).
    pub cache_name: String,
    pub password: String,
    /// A repository lifeboat did not write (Velero's): its directory below
    /// the location. `None`: lifeboat's repository of the namespace.
    pub foreign: Option<String>,
}

impl std::fmt::Debug for RepoKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoKey")
            .field("cache_name", &self.cache_name)
            .field("foreign", &self.foreign)
            .finish_non_exhaustive()
    }
}

/// A claim whose data moves by `snapshotMove`, with what its backup needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChosenVolume {
    pub namespace: String,
    pub pvc: String,
    pub pvc_uid: String,
    pub pv: String,
    pub driver: String,
    pub snapshot_class: String,
    pub storage_class: Option<String>,
    pub block: bool,
    /// The source PV's `spec.nodeAffinity.required` (a NodeSelector).
    pub node_affinity: Option<Value>,
    pub capacity: Option<String>,
    pub method: Method,
}

/// The result of one volume's backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeResult {
    pub namespace: String,
    pub pvc: String,
    pub pvc_uid: String,
    pub method: Method,
    /// The restic snapshot id (empty for `snapshot`: nothing is copied).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub snapshot: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Bytes of every file in the snapshot.
    pub bytes: u64,
    /// Bytes of new content this backup read.
    pub new_bytes: u64,
    pub files: u64,
    pub duration_seconds: f64,
    /// The node the mover ran on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The CSI snapshot kept in the cluster (`snapshot`, `keepLocalSnapshots`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept: Option<KeptSnapshot>,
}

/// The result of one volume's restore.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeRestoreResult {
    pub namespace: String,
    pub pvc: String,
    pub snapshot: String,
    pub bytes: u64,
    pub files: u64,
    pub duration_seconds: f64,
    /// The PV the claim was given.
    pub pv: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// Reported while a volume moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeProgress {
    /// A step started (`snapshot`, `expose`, `mover`, `rebind`, `cleanup`).
    Step { step: &'static str },
    /// A progress line of the mover.
    Moving {
        bytes_done: u64,
        bytes_total: u64,
        files_done: u64,
        files_total: u64,
    },
}

/// Why a volume could not be backed up or restored.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("cannot {what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{what} did not happen within {after:?}{detail}")]
    Timeout {
        what: String,
        after: Duration,
        detail: String,
    },
    #[error("the snapshot {name} failed: {message}")]
    Snapshot { name: String, message: String },
    #[error("the mover pod {pod} failed: {message}")]
    Mover { pod: String, message: String },
    #[error("the mover pod {pod} was refused: {message}; {hint}")]
    Admission {
        pod: String,
        message: String,
        hint: String,
    },
    #[error("the mover pod {pod} did not start within {after:?}: {reason}")]
    NotStarted {
        pod: String,
        after: Duration,
        reason: String,
    },
    #[error("{0}")]
    Invalid(String),
}

fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> VolumeError {
    let what = what.into();
    move |source| VolumeError::Kube { what, source }
}

fn snapshot_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "snapshot.storage.k8s.io".into(),
        version: "v1".into(),
        api_version: "snapshot.storage.k8s.io/v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

fn snapshots(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        ns,
        &snapshot_resource("VolumeSnapshot", "volumesnapshots"),
    )
}

fn contents(client: &kube::Client) -> Api<DynamicObject> {
    Api::all_with(
        client.clone(),
        &snapshot_resource("VolumeSnapshotContent", "volumesnapshotcontents"),
    )
}

fn dynamic(v: Value) -> Result<DynamicObject, VolumeError> {
    serde_json::from_value(v).map_err(|e| VolumeError::Invalid(format!("internal object: {e}")))
}

fn typed<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, VolumeError> {
    serde_json::from_value(v).map_err(|e| VolumeError::Invalid(format!("internal object: {e}")))
}

/// A name for an object of operation `op` for `ns/pvc`: stable (a restarted
/// run finds it), a valid DNS label, unique per (operation, claim).
pub fn object_name(prefix: &str, op: &str, ns: &str, pvc: &str) -> String {
    let hash = hex::encode(Sha256::digest(format!("{op}/{ns}/{pvc}").as_bytes()));
    let short: String = pvc
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(30)
        .collect::<String>()
        .to_ascii_lowercase();
    format!("{prefix}-{}-{}", short.trim_matches('-'), &hash[..12])
}

/// A claim's id in labels: 12 hex digits of SHA-256 of `namespace/pvc`.
pub fn claim_id(ns: &str, pvc: &str) -> String {
    hex::encode(Sha256::digest(format!("{ns}/{pvc}").as_bytes()))[..12].to_string()
}

/// The labels of what `backup` creates for the claim `ns/pvc`.
fn backup_labels(backup: &str, ns: &str, pvc: &str) -> BTreeMap<String, String> {
    labels(BACKUP_LABEL, backup, &[(CLAIM_LABEL, &claim_id(ns, pvc))])
}

/// A claim of a backup that an interrupted run of it (a killed
/// controller, a stopped `lifeboat backup`) may have started.
#[derive(Debug, Clone, Copy)]
pub struct Interrupted<'a> {
    pub backup: &'a str,
    pub namespace: &'a str,
    pub pvc: &'a str,
    pub pvc_uid: &'a str,
    pub method: Method,
}

/// Takes over what an interrupted run of a backup left for one claim: a
/// mover pod of that backup and claim that is still running, or that
/// succeeded, is adopted — followed to its end, its result returned — and
/// everything else the run left for the claim (snapshots, the clone, the
/// claim and Secret of the mover, a failed mover) is removed, so the claim
/// starts over cleanly. `None`: start the claim over.
pub async fn take_over(
    client: &kube::Client,
    claim: Interrupted<'_>,
    opts: &MoverOptions,
    progress: &(dyn Fn(VolumeProgress) + Send + Sync),
) -> Result<Option<VolumeResult>, VolumeError> {
    let movers = opts.namespace.as_str();
    let id = claim_id(claim.namespace, claim.pvc);
    let pods: Api<Pod> = Api::namespaced(client.clone(), movers);
    let lp = kube::api::ListParams::default().labels(&format!(
        "{BACKUP_LABEL}={},{CLAIM_LABEL}={id}",
        claim.backup
    ));
    let listed = match pods.list(&lp).await {
        Ok(l) => l.items,
        Err(kube::Error::Api(s)) if s.code == 404 => Vec::new(),
        Err(e) => return Err(kube_err(format!("list mover pods in {movers}"))(e)),
    };
    let alive = listed.into_iter().find(|p| match terminated(p) {
        None => p.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Failed"),
        Some((code, _)) => code == 0,
    });
    let mut result = None;
    if let Some(pod) = alive {
        let name = pod.name_any();
        tracing::info!(backup = claim.backup, pod = %name, "adopting the mover of an interrupted run");
        let started = Instant::now();
        match wait_for_mover(&pods, movers, &name, opts, progress).await {
            Ok((message, node)) => {
                let mut r = MoverBackup::parse(message, &name)?.result(
                    (claim.namespace, claim.pvc, claim.pvc_uid),
                    claim.method,
                    node,
                );
                r.duration_seconds = started.elapsed().as_secs_f64();
                r.warnings.push(format!(
                    "taken over from an interrupted run of the backup (mover {movers}/{name})"
                ));
                result = Some(r);
            }
            Err(e) => {
                tracing::warn!(backup = claim.backup, pod = %name, "the adopted mover failed: {e}; starting the claim over")
            }
        }
    }
    progress(VolumeProgress::Step { step: "cleanup" });
    remove_leftovers_where(client, movers, BACKUP_LABEL, |labels| {
        labels.get(BACKUP_LABEL).map(String::as_str) == Some(claim.backup)
            && labels.get(CLAIM_LABEL) == Some(&id)
    })
    .await?;
    if result.is_none() {
        // Starting over: what the interrupted run kept for the claim goes.
        kept::delete_kept_of_claim(client, claim.backup, &id).await?;
    }
    Ok(result)
}

impl ChosenVolume {
    /// What the `snapshotMove` of the claim a planner decision names needs
    /// (the class it chose; the volume's node affinity and capacity, read
    /// from its PersistentVolume now).
    pub async fn snapshot_move(
        client: &kube::Client,
        d: &VolumeDecision,
    ) -> Result<ChosenVolume, VolumeError> {
        let (Some(pv_name), Some(class)) = (&d.pv, &d.snapshot_class) else {
            return Err(VolumeError::Invalid(format!(
                "the claim {}/{} has no volume or no VolumeSnapshotClass to snapshot it with",
                d.namespace, d.pvc
            )));
        };
        let pv = Api::<PersistentVolume>::all(client.clone())
            .get_opt(pv_name)
            .await
            .map_err(kube_err(format!("read PersistentVolume {pv_name}")))?
            .ok_or_else(|| VolumeError::Invalid(format!("its volume {pv_name} does not exist")))?;
        let spec = pv.spec.unwrap_or_default();
        let driver = spec.csi.as_ref().map(|c| c.driver.clone()).ok_or_else(|| {
            VolumeError::Invalid(format!(
                "its volume {pv_name} is not a CSI volume, so it cannot be snapshotted"
            ))
        })?;
        Ok(ChosenVolume {
            namespace: d.namespace.clone(),
            pvc: d.pvc.clone(),
            pvc_uid: d.pvc_uid.clone(),
            pv: pv_name.clone(),
            driver,
            snapshot_class: class.clone(),
            storage_class: d.storage_class.clone(),
            block: d.volume_mode == VolumeMode::Block,
            node_affinity: spec
                .node_affinity
                .as_ref()
                .and_then(|a| a.required.as_ref())
                .and_then(|r| serde_json::to_value(r).ok()),
            capacity: spec
                .capacity
                .as_ref()
                .and_then(|c| c.get("storage"))
                .map(|q| q.0.clone()),
            method: Method::SnapshotMove,
        })
    }
}

/// What one operation created, removed again in reverse order.
struct Created {
    client: kube::Client,
    movers: String,
    pod: Option<String>,
    secret: Option<String>,
    pvc: Option<String>,
    clone_snapshot: Option<String>,
    clone_content: Option<String>,
    source_snapshot: Option<(String, String)>,
    source_content: Option<String>,
}

impl Created {
    fn new(client: &kube::Client, movers: &str) -> Self {
        Created {
            client: client.clone(),
            movers: movers.into(),
            pod: None,
            secret: None,
            pvc: None,
            clone_snapshot: None,
            clone_content: None,
            source_snapshot: None,
            source_content: None,
        }
    }

    /// Keeps the exposed clone content as a kept snapshot: Retain and the
    /// [`KEPT_LABEL`] (`method`), so that deleting its VolumeSnapshot in
    /// the cleanup leaves it — and the storage snapshot — in place, with no
    /// namespaced VolumeSnapshot that could take it along. It is no longer
    /// this operation's to remove.
    async fn keep_clone(&mut self, method: Method) -> Result<(), VolumeError> {
        let Some(c) = self.clone_content.clone() else {
            return Err(VolumeError::Invalid(
                "no exposed snapshot to keep".to_string(),
            ));
        };
        let patch = json!({"metadata": {"labels": {KEPT_LABEL: method.to_string()}},
                           "spec": {"deletionPolicy": "Retain"}});
        contents(&self.client)
            .patch(&c, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(kube_err(format!("keep VolumeSnapshotContent {c} (Retain)")))?;
        self.clone_content = None;
        Ok(())
    }

    /// Deletes what is left; returns what could not be deleted.
    async fn clean_up(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        let now = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        };
        let dp = DeleteParams::default();
        let mut note = |what: String, r: Result<(), kube::Error>| {
            if let Err(e) = r {
                problems.push(format!("cannot delete {what}: {e}"));
            }
        };
        if let Some(pod) = self.pod.take() {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.movers);
            note(format!("pod {pod}"), gone(api.delete(&pod, &now).await));
        }
        if let Some(s) = self.secret.take() {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.movers);
            note(format!("Secret {s}"), gone(api.delete(&s, &dp).await));
        }
        if let Some(p) = self.pvc.take() {
            let api: Api<PersistentVolumeClaim> =
                Api::namespaced(self.client.clone(), &self.movers);
            note(format!("PVC {p}"), gone(api.delete(&p, &dp).await));
        }
        if let Some(s) = self.clone_snapshot.take() {
            let api = snapshots(&self.client, &self.movers);
            note(
                format!("VolumeSnapshot {s}"),
                gone(api.delete(&s, &dp).await),
            );
        }
        if let Some(c) = self.clone_content.take() {
            note(
                format!("VolumeSnapshotContent {c}"),
                gone(contents(&self.client).delete(&c, &dp).await),
            );
        }
        if let Some((ns, s)) = self.source_snapshot.take() {
            let api = snapshots(&self.client, &ns);
            note(
                format!("VolumeSnapshot {ns}/{s}"),
                gone(api.delete(&s, &dp).await),
            );
        }
        if let Some(c) = self.source_content.take() {
            note(
                format!("VolumeSnapshotContent {c}"),
                gone(contents(&self.client).delete(&c, &dp).await),
            );
        }
        problems
    }
}

/// Removes what earlier operations left in the cluster: every object
/// labelled `label_key` (with lifeboat's managed-by label) whose operation
/// `leftover(operation)` says is finished or gone — mover pods, their
/// Secrets and claims in the movers' namespace, VolumeSnapshots anywhere,
/// and the VolumeSnapshotContents of those operations, except kept ones
/// (`deletionPolicy: Retain` on a labelled content is a kept snapshot,
/// which retention prunes). A source snapshot's content that an
/// interrupted expose left on Retain is set back to Delete first when no
/// other content holds its handle, so the storage snapshot does not leak.
/// Returns what was removed (`kind name`).
pub async fn remove_leftovers(
    client: &kube::Client,
    movers: &str,
    label_key: &str,
    leftover: impl Fn(&str) -> bool,
) -> Result<Vec<String>, VolumeError> {
    remove_leftovers_where(client, movers, label_key, |labels| {
        labels
            .get(label_key)
            .is_some_and(|op| leftover(op.as_str()))
    })
    .await
}

/// [`remove_leftovers`] of the objects whose labels `op_of` accepts.
async fn remove_leftovers_where(
    client: &kube::Client,
    movers: &str,
    label_key: &str,
    op_of: impl Fn(&BTreeMap<String, String>) -> bool,
) -> Result<Vec<String>, VolumeError> {
    let lp = kube::api::ListParams::default()
        .labels(&format!("{}={},{label_key}", MANAGED_BY.0, MANAGED_BY.1));
    let mut removed = Vec::new();
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    let dp = DeleteParams::default();
    removed.extend(
        delete_labelled(
            Api::<Pod>::namespaced(client.clone(), movers),
            "pod",
            &lp,
            &now,
            &op_of,
        )
        .await?,
    );
    removed.extend(
        delete_labelled(
            Api::<Secret>::namespaced(client.clone(), movers),
            "Secret",
            &lp,
            &dp,
            &op_of,
        )
        .await?,
    );
    removed.extend(
        delete_labelled(
            Api::<PersistentVolumeClaim>::namespaced(client.clone(), movers),
            "PersistentVolumeClaim",
            &lp,
            &dp,
            &op_of,
        )
        .await?,
    );
    let all_snapshots = Api::<DynamicObject>::all_with(
        client.clone(),
        &snapshot_resource("VolumeSnapshot", "volumesnapshots"),
    );
    let listed = match all_snapshots.list(&lp).await {
        Ok(l) => l.items,
        // No snapshot API: nothing of that kind was made.
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(removed),
        Err(e) => return Err(kube_err("list VolumeSnapshots")(e)),
    };
    let all_contents = contents(client)
        .list(&kube::api::ListParams::default())
        .await
        .map_err(kube_err("list VolumeSnapshotContents"))?
        .items;
    let handle = |c: &DynamicObject| {
        c.data["status"]["snapshotHandle"]
            .as_str()
            .map(str::to_string)
    };
    for vs in listed.iter().filter(|v| op_of(v.labels())) {
        let ns = vs.namespace().unwrap_or_default();
        let name = vs.name_any();
        let bound = vs.data["status"]["boundVolumeSnapshotContentName"].as_str();
        let content = bound.and_then(|b| all_contents.iter().find(|c| c.name_any() == b));
        if ns != movers
            && let Some(c) = content
            && c.data["spec"]["deletionPolicy"] == "Retain"
            && !c.labels().contains_key(label_key)
        {
            let h = handle(c);
            let shared = all_contents
                .iter()
                .any(|o| o.name_any() != c.name_any() && h.is_some() && handle(o) == h);
            if !shared {
                contents(client)
                    .patch(
                        &c.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&json!({"spec": {"deletionPolicy": "Delete"}})),
                    )
                    .await
                    .map_err(kube_err(format!(
                        "set VolumeSnapshotContent {} to Delete",
                        c.name_any()
                    )))?;
            }
        }
        gone(snapshots(client, &ns).delete(&name, &dp).await)
            .map_err(kube_err(format!("delete VolumeSnapshot {ns}/{name}")))?;
        removed.push(format!("VolumeSnapshot {ns}/{name}"));
        if ns != movers
            && let Some(c) = content
            && !c.labels().contains_key(label_key)
        {
            gone(contents(client).delete(&c.name_any(), &dp).await).map_err(kube_err(format!(
                "delete VolumeSnapshotContent {}",
                c.name_any()
            )))?;
            removed.push(format!("VolumeSnapshotContent {}", c.name_any()));
        }
    }
    for c in all_contents.iter().filter(|c| op_of(c.labels())) {
        if c.data["spec"]["deletionPolicy"] == "Retain" {
            continue; // a kept snapshot
        }
        gone(contents(client).delete(&c.name_any(), &dp).await).map_err(kube_err(format!(
            "delete VolumeSnapshotContent {}",
            c.name_any()
        )))?;
        removed.push(format!("VolumeSnapshotContent {}", c.name_any()));
    }
    Ok(removed)
}

/// Deletes the objects `api` lists with `lp` whose labels `leftover`
/// accepts; returns them as `kind namespace/name`.
async fn delete_labelled<K>(
    api: Api<K>,
    kind: &str,
    lp: &kube::api::ListParams,
    dp: &DeleteParams,
    leftover: &impl Fn(&BTreeMap<String, String>) -> bool,
) -> Result<Vec<String>, VolumeError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut removed = Vec::new();
    let list = api
        .list(lp)
        .await
        .map_err(kube_err(format!("list {kind}s")))?;
    for o in list.items.iter().filter(|o| leftover(o.labels())) {
        let what = format!(
            "{kind} {}/{}",
            o.namespace().unwrap_or_default(),
            o.name_any()
        );
        gone(api.delete(&o.name_any(), dp).await).map_err(kube_err(format!("delete {what}")))?;
        removed.push(what);
    }
    Ok(removed)
}

/// A delete whose object is already gone succeeded.
fn gone<T>(r: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

fn labels(key: &str, op: &str, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut m = BTreeMap::from([
        (key.to_string(), op.to_string()),
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
    ]);
    for (k, v) in extra {
        m.insert((*k).to_string(), (*v).to_string());
    }
    m
}

/// Creates the movers' namespace (Pod Security `baseline`) when missing.
pub async fn ensure_movers_namespace(client: &kube::Client, name: &str) -> Result<(), VolumeError> {
    let api: Api<Namespace> = Api::all(client.clone());
    if api
        .get_opt(name)
        .await
        .map_err(kube_err(format!("read namespace {name}")))?
        .is_some()
    {
        return Ok(());
    }
    let ns: Namespace = typed(json!({"metadata": {"name": name, "labels": {
        MANAGED_BY.0: MANAGED_BY.1,
        "pod-security.kubernetes.io/enforce": "baseline",
    }}}))?;
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(kube_err(format!("create namespace {name}"))(e)),
    }
}

/// Polls `f` until it returns `Some`, at most `after`.
async fn until<T, F, Fut>(
    what: &str,
    after: Duration,
    poll: Duration,
    mut f: F,
) -> Result<T, VolumeError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Result<T, String>, VolumeError>>,
{
    let deadline = Instant::now() + after;
    loop {
        let last = match f().await? {
            Ok(v) => return Ok(v),
            Err(state) => state,
        };
        if Instant::now() >= deadline {
            return Err(VolumeError::Timeout {
                what: what.into(),
                after,
                detail: if last.is_empty() {
                    String::new()
                } else {
                    format!(" ({last})")
                },
            });
        }
        tokio::time::sleep(poll).await;
    }
}

/// Waits until a VolumeSnapshot is ready; returns it and its content.
async fn ready_snapshot(
    client: &kube::Client,
    ns: &str,
    name: &str,
    opts: &MoverOptions,
) -> Result<(DynamicObject, DynamicObject), VolumeError> {
    let api = snapshots(client, ns);
    let vs = until(
        &format!("VolumeSnapshot {ns}/{name} becoming ready"),
        opts.snapshot_timeout,
        opts.poll,
        || async {
            let vs = api
                .get(name)
                .await
                .map_err(kube_err(format!("read VolumeSnapshot {ns}/{name}")))?;
            if let Some(msg) = vs.data["status"]["error"]["message"].as_str() {
                return Err(VolumeError::Snapshot {
                    name: format!("{ns}/{name}"),
                    message: msg.into(),
                });
            }
            let ready = vs.data["status"]["readyToUse"] == true
                && vs.data["status"]["boundVolumeSnapshotContentName"].is_string();
            Ok(if ready {
                Ok(vs)
            } else {
                Err("not readyToUse yet".to_string())
            })
        },
    )
    .await?;
    let content_name = vs.data["status"]["boundVolumeSnapshotContentName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let content = until(
        &format!("VolumeSnapshotContent {content_name} getting a snapshotHandle"),
        opts.snapshot_timeout,
        opts.poll,
        || async {
            let c = contents(client)
                .get(&content_name)
                .await
                .map_err(kube_err(format!(
                    "read VolumeSnapshotContent {content_name}"
                )))?;
            Ok(if c.data["status"]["snapshotHandle"].is_string() {
                Ok(c)
            } else {
                Err("no snapshotHandle yet".to_string())
            })
        },
    )
    .await?;
    Ok((vs, content))
}

/// Backs up one claim by `snapshotMove`. On failure everything created is
/// removed again and the error says what went wrong.
pub async fn back_up_claim(
    client: &kube::Client,
    volume: &ChosenVolume,
    backup: &str,
    access: &MoverAccess,
    key: &RepoKey,
    opts: &MoverOptions,
    progress: &(dyn Fn(VolumeProgress) + Send + Sync),
) -> Result<VolumeResult, VolumeError> {
    timed(client, opts, progress, async |created: &mut Created| {
        back_up_steps(
            client, volume, backup, access, key, opts, progress, created, None,
        )
        .await
    })
    .await
}

/// A claim's CSI snapshot, taken and with its handle, not yet exposed or
/// moved ([`take_snapshot`]): what exec hooks wait for before thawing.
/// Finish it with [`back_up_snapshotted`] or [`keep_snapshotted`], or
/// [`Snapshotted::discard`] it.
pub struct Snapshotted {
    created: Created,
    taken: (DynamicObject, DynamicObject),
    started: Instant,
}

impl Snapshotted {
    /// Runs the rest of the claim's steps on what the snapshot step
    /// created, then removes what is left of it, as [`timed`] does: the
    /// result carries the whole duration, from the snapshot on.
    async fn finish(
        self,
        progress: &(dyn Fn(VolumeProgress) + Send + Sync),
        steps: impl AsyncFnOnce(
            &mut Created,
            (DynamicObject, DynamicObject),
        ) -> Result<VolumeResult, VolumeError>,
    ) -> Result<VolumeResult, VolumeError> {
        let Snapshotted {
            mut created,
            taken,
            started,
        } = self;
        let result = steps(&mut created, taken).await;
        progress(VolumeProgress::Step { step: "cleanup" });
        let problems = created.clean_up().await;
        let mut result = result?;
        result.finished(started.elapsed().as_secs_f64(), problems);
        Ok(result)
    }
}

impl std::fmt::Debug for Snapshotted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshotted")
            .field("snapshot", &self.taken.0.name_any())
            .finish_non_exhaustive()
    }
}

impl Snapshotted {
    /// Deletes the snapshot; returns what could not be deleted.
    pub async fn discard(mut self) -> Vec<String> {
        self.created.clean_up().await
    }
}

/// Step 1 of a backup by snapshot alone: the claim's VolumeSnapshot,
/// ready with its snapshotHandle. On failure what it created is removed.
pub async fn take_snapshot(
    client: &kube::Client,
    volume: &ChosenVolume,
    backup: &str,
    opts: &MoverOptions,
    progress: &(dyn Fn(VolumeProgress) + Send + Sync),
) -> Result<Snapshotted, VolumeError> {
    let started = Instant::now();
    let mut created = Created::new(client, &opts.namespace);
    match snapshot_source(client, volume, backup, opts, progress, &mut created).await {
        Ok(taken) => Ok(Snapshotted {
            created,
            taken,
            started,
        }),
        Err(e) => {
            for p in created.clean_up().await {
                tracing::warn!("{p}");
            }
            Err(e)
        }
    }
}

/// The rest of a `snapshotMove` after [`take_snapshot`]: expose, move,
/// clean up. On failure everything created is removed again.
#[allow(clippy::too_many_arguments)]
pub async fn back_up_snapshotted(
    client: &kube::Client,
    volume: &ChosenVolume,
    snapshotted: Snapshotted,
    backup: &str,
    access: &MoverAccess,
    key: &RepoKey,
    opts: &MoverOptions,
    progress: &(dyn Fn(VolumeProgress) + Send + Sync),
) -> Result<VolumeResult, VolumeError> {
    snapshotted
        .finish(progress, async |created, taken| {
            back_up_steps(
                client,
                volume,
                backup,
                access,
                key,
                opts,
                progress,
                created,
                Some(taken),
            )
            .await
        })
        .await
}

/// The rest of a `snapshot` (kept) backup after [`take_snapshot`].
pub async fn keep_snapshotted(
    client: &kube::Client,
    volume: &ChosenVolume,
    snapshotted: Snapshotted,
    backup: &str,
    opts: &MoverOptions,
    progress: &(dyn Fn(VolumeProgress) + Send + Sync),
) -> Result<VolumeResult, VolumeError> {
    snapshotted
        .finish(progress, async |created, taken| {
            let exposed = expose(client, volume, backup, opts, progress, created, taken).await?;
            created.keep_clone(Method::Snapshot).await?;
            Ok(kept_result(volume, exposed.kept))
        })
        .await
}

/// The result of a `snapshot` backup that kept `kept`.
fn kept_result(volume: &ChosenVolume, kept: KeptSnapshot) -> VolumeResult {
    VolumeResult {
        namespace: volume.namespace.clone(),
        pvc: volume.pvc.clone(),
        pvc_uid: volume.pvc_uid.clone(),
        method: Method::Snapshot,
        snapshot: String::new(),
        parent: None,
        bytes: 0,
        new_bytes: 0,
        files: 0,
        duration_seconds: 0.0,
        node: None,
        warnings: Vec::new(),
        kept: Some(kept),
    }
}

/// A result that carries its whole duration and what its cleanup could
/// not remove.
trait Timed {
    fn finished(&mut self, seconds: f64, problems: Vec<String>);
}

impl Timed for VolumeResult {
    /// The cleanup's problems become the volume's warnings.
    fn finished(&mut self, seconds: f64, problems: Vec<String>) {
        self.duration_seconds = seconds;
        self.warnings.extend(problems);
    }
}

impl Timed for VolumeRestoreResult {
    /// The cleanup's problems are logged.
    fn finished(&mut self, seconds: f64, problems: Vec<String>) {
        self.duration_seconds = seconds;
        for p in problems {
            tracing::warn!("{p}");
        }
    }
}

/// [`with_cleanup`], timed: the result carries the whole duration and
/// what the cleanup could not remove ([`Timed`]).
async fn timed<T: Timed>(
    client: &kube::Client,
    opts: &MoverOptions,
    progress: &(dyn Fn(VolumeProgress) + Send + Sync),
    steps: impl AsyncFnOnce(&mut Created) -> Result<T, VolumeError>,
) -> Result<T, VolumeError> {
    let started = Instant::now();
    let (result, problems) = with_cleanup(client, opts, progress, steps).await;
    let mut result = result?;
    result.finished(started.elapsed().as_secs_f64(), problems);
    Ok(result)
}

/// Runs `steps` with a record of what they create, then removes what is
/// left of it (a snapshot the steps kept is no longer in the record).
/// Returns the steps' result and the problems the cleanup met.
async fn with_cleanup<T>(
    client: &kube::Client,
    opts: &MoverOptions,
    progress: &(dyn Fn(VolumeProgress) + Send + Sync),
    steps: impl AsyncFnOnce(&mut Created) -> Result<T, VolumeError>,
) -> (Result<T, VolumeError>, Vec<String>) {
    let mut created = Created::new(client, &opts.namespace);
    let result = steps(&mut created).await;
    progress(VolumeProgress::Step { step: "cleanup" });
    let problems = created.clean_up().await;
    (result, problems)
}

/// A VolumeSnapshotContent pre-provisioned from a snapshot handle, bound
/// to a VolumeSnapshot of the movers' namespace (how the CSI snapshotter
/// imports an existing snapshot).
struct PreProvisioned<'a> {
    content: &'a str,
    snapshot: &'a str,
    driver: &'a str,
    handle: &'a str,
    class: &'a str,
    /// `sourceVolumeMode`, when known.
    mode: Option<&'a str>,
    deletion_policy: &'a str,
    labels: &'a BTreeMap<String, String>,
}

impl PreProvisioned<'_> {
    /// Creates the content and its VolumeSnapshot (recorded in `created`)
    /// and waits until the snapshot is ready.
    async fn create(
        &self,
        client: &kube::Client,
        opts: &MoverOptions,
        created: &mut Created,
    ) -> Result<(), VolumeError> {
        let movers = opts.namespace.as_str();
        let (content, snapshot) = (self.content, self.snapshot);
        let mut spec = json!({
            "driver": self.driver,
            "deletionPolicy": self.deletion_policy,
            "source": {"snapshotHandle": self.handle},
            "volumeSnapshotClassName": self.class,
            "volumeSnapshotRef": {"namespace": movers, "name": snapshot},
        });
        if let Some(mode) = self.mode {
            spec["sourceVolumeMode"] = json!(mode);
        }
        let c = dynamic(json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
            "metadata": {"name": content, "labels": self.labels},
            "spec": spec,
        }))?;
        contents(client)
            .create(&PostParams::default(), &c)
            .await
            .map_err(kube_err(format!("create VolumeSnapshotContent {content}")))?;
        created.clone_content = Some(content.to_string());
        let vs = dynamic(json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": snapshot, "namespace": movers, "labels": self.labels},
            "spec": {"volumeSnapshotClassName": self.class,
                     "source": {"volumeSnapshotContentName": content}},
        }))?;
        snapshots(client, movers)
            .create(&PostParams::default(), &vs)
            .await
            .map_err(kube_err(format!(
                "create VolumeSnapshot {movers}/{snapshot}"
            )))?;
        created.clone_snapshot = Some(snapshot.to_string());
        ready_snapshot(client, movers, snapshot, opts).await?;
        Ok(())
    }
}

/// A claim in the movers' namespace: a mover's volume, empty or from a
/// VolumeSnapshot there.
struct MoversClaim<'a> {
    name: &'a str,
    access_modes: Value,
    resources: Value,
    block: bool,
    storage_class: Option<&'a str>,
    /// A VolumeSnapshot of the movers' namespace to fill it from.
    from_snapshot: Option<&'a str>,
    labels: &'a BTreeMap<String, String>,
}

impl<'a> MoversClaim<'a> {
    /// A claim of the class, size, access modes and volume mode of `spec`.
    fn like(
        spec: &'a k8s_openapi::api::core::v1::PersistentVolumeClaimSpec,
        name: &'a str,
        from_snapshot: Option<&'a str>,
        labels: &'a BTreeMap<String, String>,
    ) -> Self {
        MoversClaim {
            name,
            access_modes: json!(
                spec.access_modes
                    .clone()
                    .unwrap_or_else(|| vec!["ReadWriteOnce".into()])
            ),
            resources: json!(spec.resources),
            block: spec.volume_mode.as_deref() == Some("Block"),
            storage_class: spec.storage_class_name.as_deref(),
            from_snapshot,
            labels,
        }
    }

    /// Creates it (recorded in `created`).
    async fn create(
        &self,
        client: &kube::Client,
        opts: &MoverOptions,
        created: &mut Created,
    ) -> Result<(), VolumeError> {
        let (movers, name) = (opts.namespace.as_str(), self.name);
        let mut spec = json!({
            "accessModes": self.access_modes,
            "resources": self.resources,
            "volumeMode": if self.block { "Block" } else { "Filesystem" },
        });
        if let Some(vs) = self.from_snapshot {
            spec["dataSource"] = json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": vs});
        }
        if let Some(sc) = self.storage_class {
            spec["storageClassName"] = json!(sc);
        }
        let pvc: PersistentVolumeClaim = typed(json!({
            "metadata": {"name": name, "namespace": movers, "labels": self.labels},
            "spec": spec,
        }))?;
        Api::<PersistentVolumeClaim>::namespaced(client.clone(), movers)
            .create(&PostParams::default(), &pvc)
            .await
            .map_err(kube_err(format!(
                "create PersistentVolumeClaim {movers}/{name}"
            )))?;
        created.pvc = Some(name.to_string());
        Ok(())
    }
}

/// A claim's CSI snapshot exposed in the movers' namespace: a
/// pre-provisioned VolumeSnapshotContent (`Delete`, the handle's only
/// owner) bound to a VolumeSnapshot there, both recorded in `created`.
struct Exposed {
    /// The VolumeSnapshot in the movers' namespace.
    snapshot: String,
    /// The pre-provisioned content and what a restore needs of it.
    kept: KeptSnapshot,
}

/// Steps 1 and 2 of a backup by snapshot: the claim's VolumeSnapshot,
/// ready with a handle; Retain on its content; a pre-provisioned clone of
/// the handle bound to a VolumeSnapshot in the movers' namespace; the
/// original snapshot and content deleted (the clone is now the handle's
/// only `Delete` owner).
async fn snapshot_and_expose(
    client: &kube::Client,
    v: &ChosenVolume,
    backup: &str,
    opts: &MoverOptions,
    progress: &(dyn Fn(VolumeProgress) + Send + Sync),
    created: &mut Created,
) -> Result<Exposed, VolumeError> {
    let taken = snapshot_source(client, v, backup, opts, progress, created).await?;
    expose(client, v, backup, opts, progress, created, taken).await
}

/// Step 1 of a backup by snapshot: the claim's VolumeSnapshot in its
/// namespace, ready, its content with a snapshotHandle (both recorded in
/// `created`).
async fn snapshot_source(
    client: &kube::Client,
    v: &ChosenVolume,
    backup: &str,
    opts: &MoverOptions,
    progress: &(dyn Fn(VolumeProgress) + Send + Sync),
    created: &mut Created,
) -> Result<(DynamicObject, DynamicObject), VolumeError> {
    let lbl = backup_labels(backup, &v.namespace, &v.pvc);
    let snap_name = object_name("lifeboat", backup, &v.namespace, &v.pvc);
    // 1. The snapshot of the claim, in its namespace.
    progress(VolumeProgress::Step { step: "snapshot" });
    let source = snapshots(client, &v.namespace);
    let vs = dynamic(json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": {"name": snap_name, "namespace": v.namespace, "labels": lbl},
        "spec": {"volumeSnapshotClassName": v.snapshot_class,
                 "source": {"persistentVolumeClaimName": v.pvc}},
    }))?;
    source
        .create(&PostParams::default(), &vs)
        .await
        .map_err(kube_err(format!(
            "create a VolumeSnapshot of {}/{}",
            v.namespace, v.pvc
        )))?;
    created.source_snapshot = Some((v.namespace.clone(), snap_name.clone()));
    let (vs, content) = ready_snapshot(client, &v.namespace, &snap_name, opts).await?;
    created.source_content = Some(content.name_any());
    Ok((vs, content))
}

/// Step 2 of a backup by snapshot: the snapshot `taken` by
/// [`snapshot_source`] exposed in the movers' namespace.
async fn expose(
    client: &kube::Client,
    v: &ChosenVolume,
    backup: &str,
    opts: &MoverOptions,
    progress: &(dyn Fn(VolumeProgress) + Send + Sync),
    created: &mut Created,
    (vs, content): (DynamicObject, DynamicObject),
) -> Result<Exposed, VolumeError> {
    let movers = opts.namespace.as_str();
    ensure_movers_namespace(client, movers).await?;
    let lbl = backup_labels(backup, &v.namespace, &v.pvc);
    let snap_name = vs.name_any();
    let content_name = content.name_any();
    let handle = content.data["status"]["snapshotHandle"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let restore_size = vs.data["status"]["restoreSize"]
        .as_str()
        .map(str::to_string)
        .or_else(|| {
            content.data["status"]["restoreSize"]
                .as_i64()
                .map(|n| n.to_string())
        })
        .or_else(|| v.capacity.clone())
        .ok_or_else(|| {
            VolumeError::Invalid(format!(
                "VolumeSnapshot {}/{snap_name} has no restoreSize and its volume no capacity",
                v.namespace
            ))
        })?;

    // 2. Expose it in the movers' namespace: Retain on the original, a
    //    pre-provisioned clone of the handle, the original deleted.
    progress(VolumeProgress::Step { step: "expose" });
    contents(client)
        .patch(
            &content_name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"deletionPolicy": "Retain"}})),
        )
        .await
        .map_err(kube_err(format!(
            "set VolumeSnapshotContent {content_name} to Retain"
        )))?;
    let clone_content = object_name("lifeboat-c", backup, &v.namespace, &v.pvc);
    PreProvisioned {
        content: &clone_content,
        snapshot: &snap_name,
        driver: content.data["spec"]["driver"].as_str().unwrap_or(&v.driver),
        handle: &handle,
        class: &v.snapshot_class,
        mode: content.data["spec"]["sourceVolumeMode"].as_str(),
        deletion_policy: "Delete",
        labels: &lbl,
    }
    .create(client, opts, created)
    .await?;
    // The clone is the handle's only Delete owner from here on.
    if let Some((ns, s)) = created.source_snapshot.take() {
        gone(
            snapshots(client, &ns)
                .delete(&s, &DeleteParams::default())
                .await,
        )
        .map_err(kube_err(format!("delete VolumeSnapshot {ns}/{s}")))?;
    }
    if let Some(c) = created.source_content.take() {
        gone(contents(client).delete(&c, &DeleteParams::default()).await)
            .map_err(kube_err(format!("delete VolumeSnapshotContent {c}")))?;
    }

    let driver = content.data["spec"]["driver"]
        .as_str()
        .unwrap_or(&v.driver)
        .to_string();
    Ok(Exposed {
        snapshot: snap_name,
        kept: KeptSnapshot {
            content: clone_content,
            handle,
            driver,
            restore_size,
            snapshot_class: v.snapshot_class.clone(),
            volume_mode: content.data["spec"]["sourceVolumeMode"]
                .as_str()
                .map(str::to_string),
        },
    })
}

#[allow(clippy::too_many_arguments)]
async fn back_up_steps(
    client: &kube::Client,
    v: &ChosenVolume,
    backup: &str,
    access: &MoverAccess,
    key: &RepoKey,
    opts: &MoverOptions,
    progress: &(dyn Fn(VolumeProgress) + Send + Sync),
    created: &mut Created,
    taken: Option<(DynamicObject, DynamicObject)>,
) -> Result<VolumeResult, VolumeError> {
    let lbl = backup_labels(backup, &v.namespace, &v.pvc);
    let taken = match taken {
        Some(t) => t,
        None => snapshot_source(client, v, backup, opts, progress, created).await?,
    };
    let Exposed {
        snapshot: snap_name,
        kept,
    } = expose(client, v, backup, opts, progress, created, taken).await?;
    let restore_size = kept.restore_size.clone();

    // 3. A claim from the clone, the work Secret and the mover pod.
    let pvc_name = snap_name.clone();
    MoversClaim {
        name: &pvc_name,
        access_modes: json!(["ReadWriteOnce"]),
        resources: json!({"requests": {"storage": restore_size}}),
        block: v.block,
        storage_class: v.storage_class.as_deref(),
        from_snapshot: Some(&snap_name),
        labels: &lbl,
    }
    .create(client, opts, created)
    .await?;

    let work = Work {
        location: access.location.clone(),
        location_name: access.location_name.clone(),
        cluster: access.cluster.clone(),
        namespace: v.namespace.clone(),
        pvc: v.pvc.clone(),
        pvc_uid: Some(v.pvc_uid.clone()),
        backup: Some(backup.into()),
        path: if v.block { DATA_DEVICE } else { DATA_DIR }.into(),
        kind: if v.block {
            DataKind::Block
        } else {
            DataKind::Filesystem
        },
        snapshot: None,
        key_cache_dir: WORK_DIR.into(),
        pod_volume: None,
        maintenance: None,
        repository: None,
    };
    let mover = Mover {
        name: snap_name.clone(),
        action: "backup",
        claim: pvc_name,
        block: v.block,
        node_affinity: v.node_affinity.clone(),
        labels: lbl,
    };
    progress(VolumeProgress::Step { step: "mover" });
    let (message, node) = mover
        .run(client, &work, key, opts, progress, created)
        .await?;
    let mut result = MoverBackup::parse(message, &mover.name)?.result(
        (&v.namespace, &v.pvc, &v.pvc_uid),
        v.method,
        node,
    );
    if opts.keep_snapshot {
        // keepLocalSnapshots: the clone stays, as a kept snapshot.
        created.keep_clone(Method::SnapshotMove).await?;
        result.kept = Some(kept);
    }
    Ok(result)
}

/// Backs up one claim by `snapshot`: its CSI snapshot is kept in the
/// storage system as a labelled VolumeSnapshotContent on Retain (the
/// exposed clone of [`snapshot_and_expose`], its VolumeSnapshot deleted),
/// and nothing is copied. Fast, restorable only where that storage is.
pub async fn keep_snapshot(
    client: &kube::Client,
    volume: &ChosenVolume,
    backup: &str,
    opts: &MoverOptions,
    progress: &(dyn Fn(VolumeProgress) + Send + Sync),
) -> Result<VolumeResult, VolumeError> {
    timed(client, opts, progress, async |created: &mut Created| {
        let exposed = snapshot_and_expose(client, volume, backup, opts, progress, created).await?;
        created.keep_clone(Method::Snapshot).await?;
        Ok(kept_result(volume, exposed.kept))
    })
    .await
}

/// The result a backup mover writes as its termination message.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MoverBackup {
    snapshot: String,
    #[serde(default)]
    parent: Option<String>,
    #[serde(default)]
    files: u64,
    #[serde(default)]
    total_bytes: u64,
    #[serde(default)]
    new_bytes: u64,
    #[serde(default)]
    warnings: Vec<String>,
}

impl MoverBackup {
    fn parse(message: Value, pod: &str) -> Result<MoverBackup, VolumeError> {
        serde_json::from_value(message.clone()).map_err(|e| VolumeError::Mover {
            pod: pod.to_string(),
            message: format!("its result is not understood ({e}): {message}"),
        })
    }

    /// The volume's result (the duration is set by [`timed`]).
    fn result(
        self,
        (namespace, pvc, pvc_uid): (&str, &str, &str),
        method: Method,
        node: Option<String>,
    ) -> VolumeResult {
        VolumeResult {
            namespace: namespace.to_string(),
            pvc: pvc.to_string(),
            pvc_uid: pvc_uid.to_string(),
            method,
            snapshot: self.snapshot,
            parent: self.parent,
            bytes: self.total_bytes,
            new_bytes: self.new_bytes,
            files: self.files,
            duration_seconds: 0.0,
            node,
            warnings: self.warnings,
            kept: None,
        }
    }
}

/// The result a restore mover writes as its termination message.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MoverRestore {
    snapshot: String,
    #[serde(default)]
    files: u64,
    #[serde(default)]
    bytes: u64,
}

/// One mover pod.
struct Mover {
    name: String,
    action: &'static str,
    claim: String,
    block: bool,
    node_affinity: Option<Value>,
    labels: BTreeMap<String, String>,
}

impl Mover {
    fn pod(&self, opts: &MoverOptions) -> Result<Pod, VolumeError> {
        let mut container = json!({
            "name": "mover",
            "image": opts.image,
            "command": ["lifeboat", "mover", self.action,
                        "--work", format!("{WORK_DIR}/work.json")],
            "terminationMessagePolicy": "File",
            // Root, not the image's user: a backup reads files of every
            // owner, a restore gives them back their owners (chown).
            "securityContext": {"runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": false,
                                "readOnlyRootFilesystem": true,
                                "allowPrivilegeEscalation": false},
            "volumeMounts": [{"name": "work", "mountPath": WORK_DIR, "readOnly": true}],
        });
        if self.block {
            container["volumeDevices"] = json!([{"name": "data", "devicePath": DATA_DEVICE}]);
        } else {
            if let Some(m) = container["volumeMounts"].as_array_mut() {
                m.push(json!({"name": "data", "mountPath": DATA_DIR}));
            }
        }
        let mut spec = json!({
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "containers": [container],
            "volumes": [
                {"name": "work", "secret": {"secretName": self.name, "defaultMode": 0o400}},
                {"name": "data", "persistentVolumeClaim": {"claimName": self.claim}},
            ],
        });
        opts.shape_pod(&mut spec);
        if let Some(required) = &self.node_affinity {
            spec["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}});
        }
        typed(json!({
            "metadata": {"name": self.name, "namespace": opts.namespace, "labels": self.labels},
            "spec": spec,
        }))
    }

    /// Creates the Secret and the pod, follows the pod's log and returns
    /// its termination message (the result) and its node.
    async fn run(
        &self,
        client: &kube::Client,
        work: &Work,
        key: &RepoKey,
        opts: &MoverOptions,
        progress: &(dyn Fn(VolumeProgress) + Send + Sync),
        created: &mut Created,
    ) -> Result<(Value, Option<String>), VolumeError> {
        self.run_pod(client, self.pod(opts)?, work, key, opts, progress, created)
            .await
    }

    /// [`Mover::run`] with a pod spec built elsewhere (named `self.name`,
    /// its container `mover`, the work Secret mounted at `WORK_DIR`).
    #[allow(clippy::too_many_arguments)]
    async fn run_pod(
        &self,
        client: &kube::Client,
        pod: Pod,
        work: &Work,
        key: &RepoKey,
        opts: &MoverOptions,
        progress: &(dyn Fn(VolumeProgress) + Send + Sync),
        created: &mut Created,
    ) -> Result<(Value, Option<String>), VolumeError> {
        let movers = opts.namespace.as_str();
        let work_json = serde_json::to_vec(work)
            .map_err(|e| VolumeError::Invalid(format!("work file: {e}")))?;
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(movers.into()),
                labels: Some(self.labels.clone()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([
                ("work.json".to_string(), ByteString(work_json)),
                (
                    format!("{}.key", key.cache_name),
                    ByteString(key.password.as_bytes().to_vec()),
                ),
            ])),
            type_: Some("Opaque".into()),
            ..Secret::default()
        };
        Api::<Secret>::namespaced(client.clone(), movers)
            .create(&PostParams::default(), &secret)
            .await
            .map_err(kube_err(format!("create Secret {movers}/{}", self.name)))?;
        created.secret = Some(self.name.clone());
        let pods: Api<Pod> = Api::namespaced(client.clone(), movers);
        pods.create(&PostParams::default(), &pod)
            .await
            .map_err(|e| refused_pod(movers, &pod, e))?;
        created.pod = Some(self.name.clone());

        wait_for_mover(&pods, movers, &self.name, opts, progress).await
    }
}

/// A repository's id in labels and names: 12 hex digits of SHA-256 of
/// `location/namespace`.
pub fn maintenance_id(location: &str, namespace: &str) -> String {
    claim_id(location, namespace)
}

/// What a maintenance mover reports: the prune's counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceResult {
    pub packs_to_delete: u64,
    pub packs_marked: u64,
    pub packs_waiting: u64,
    pub packs_recovered: u64,
    pub bytes_to_delete: u64,
    pub bytes_marked: u64,
    pub duration_seconds: f64,
}

/// Prunes the repository of `namespace` (generation `work.generation`) in
/// a mover pod (`lifeboat mover prune`) in the movers' namespace, and
/// returns what it did. What an earlier, interrupted maintenance of the
/// same repository left (its pod and Secret) is removed first; the pod and
/// Secret of this one are removed when it ends, however it ends.
///
/// The pod mounts no volume: it only needs the store and the key. The
/// prune takes the repository's exclusive lock, so it fails (and is tried
/// again later) rather than run beside a writer of any cluster.
pub async fn maintain_repository(
    client: &kube::Client,
    access: &MoverAccess,
    key: &RepoKey,
    namespace: &str,
    work: MaintenanceWork,
    opts: &MoverOptions,
) -> Result<MaintenanceResult, VolumeError> {
    let id = maintenance_id(&access.location_name, namespace);
    remove_leftovers(client, &opts.namespace, MAINTENANCE_LABEL, |op| op == id).await?;
    let lbl = labels(MAINTENANCE_LABEL, &id, &[]);
    let name = object_name(
        "lifeboat-prune",
        &access.location_name,
        namespace,
        namespace,
    );
    let job = Work {
        location: access.location.clone(),
        location_name: access.location_name.clone(),
        cluster: access.cluster.clone(),
        namespace: namespace.to_string(),
        pvc: String::new(),
        pvc_uid: None,
        backup: None,
        path: std::path::PathBuf::new(),
        kind: DataKind::Filesystem,
        snapshot: None,
        key_cache_dir: WORK_DIR.into(),
        pod_volume: None,
        maintenance: Some(work),
        repository: None,
    };
    let mut spec = json!({
        "restartPolicy": "Never",
        "automountServiceAccountToken": false,
        "containers": [{
            "name": "mover",
            "image": opts.image,
            "command": ["lifeboat", "mover", "prune", "--work", format!("{WORK_DIR}/work.json")],
            "terminationMessagePolicy": "File",
            // It reads and writes only the store: no root, no volume.
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                                "readOnlyRootFilesystem": true,
                                "allowPrivilegeEscalation": false,
                                "capabilities": {"drop": ["ALL"]}},
            "volumeMounts": [{"name": "work", "mountPath": WORK_DIR, "readOnly": true},
                             {"name": "tmp", "mountPath": "/tmp"}],
        }],
        "volumes": [{"name": "work", "secret": {"secretName": name, "defaultMode": 0o444}},
                    {"name": "tmp", "emptyDir": {}}],
    });
    opts.shape_pod(&mut spec);
    let pod: Pod = typed(json!({
        "metadata": {"name": name, "namespace": opts.namespace, "labels": lbl},
        "spec": spec,
    }))?;
    let mover = Mover {
        name: name.clone(),
        action: "prune",
        claim: String::new(),
        block: false,
        node_affinity: None,
        labels: lbl,
    };
    let quiet = |_: VolumeProgress| {};
    let (result, problems) = with_cleanup(client, opts, &quiet, async |created| {
        mover
            .run_pod(client, pod, &job, key, opts, &quiet, created)
            .await
    })
    .await;
    let (message, _) = result?;
    if !problems.is_empty() {
        tracing::warn!(pod = %name, problems = ?problems, "maintenance cleanup");
    }
    if message["phase"] == "Failed" {
        return Err(VolumeError::Mover {
            pod: name,
            message: message["error"].as_str().unwrap_or("failed").to_string(),
        });
    }
    serde_json::from_value(message)
        .map_err(|e| VolumeError::Invalid(format!("the prune mover {name} reported: {e}")))
}

/// Follows a mover pod from Pending to its end: its progress lines, then
/// its termination message (the result) and its node. A pod that stays
/// Pending past the start timeout, or runs past the move timeout, fails.
async fn wait_for_mover(
    pods: &Api<Pod>,
    movers: &str,
    name: &str,
    opts: &MoverOptions,
    progress: &(dyn Fn(VolumeProgress) + Send + Sync),
) -> Result<(Value, Option<String>), VolumeError> {
    let deadline = Instant::now() + opts.move_timeout;
    let left = || deadline.saturating_duration_since(Instant::now());
    // Started (or already done)? A pod that stays Pending past the
    // start timeout (unschedulable, image not pulled, container not
    // created) fails with its reason, long before the move timeout.
    let start_deadline = Instant::now() + opts.start_timeout;
    until(
        &format!("mover pod {movers}/{name} starting"),
        left(),
        opts.poll,
        || async {
            let pod = pods
                .get(name)
                .await
                .map_err(kube_err(format!("read pod {movers}/{name}")))?;
            match start_state(&pod) {
                StartState::Started => Ok(Ok(())),
                StartState::Pending(reason) if Instant::now() < start_deadline => Ok(Err(reason)),
                StartState::Pending(reason) => Err(VolumeError::NotStarted {
                    pod: format!("{movers}/{name}"),
                    after: opts.start_timeout,
                    reason,
                }),
            }
        },
    )
    .await?;
    // Progress lines until the container exits.
    let follow = async {
        let lp = LogParams {
            follow: true,
            container: Some("mover".into()),
            ..LogParams::default()
        };
        match pods.log_stream(name, &lp).await {
            Ok(stream) => {
                let mut lines = stream.lines();
                while let Some(Ok(line)) = lines.next().await {
                    if let Some(p) = progress_line(&line) {
                        progress(p);
                    }
                }
            }
            Err(e) => tracing::debug!("cannot follow the mover's log: {e}"),
        }
    };
    if tokio::time::timeout(left(), follow).await.is_err() {
        return Err(VolumeError::Timeout {
            what: format!("mover pod {movers}/{name} finishing"),
            after: opts.move_timeout,
            detail: String::new(),
        });
    }
    let pod = until(
        &format!("mover pod {movers}/{name} finishing"),
        left().max(opts.poll * 4),
        opts.poll,
        || async {
            let pod = pods
                .get(name)
                .await
                .map_err(kube_err(format!("read pod {movers}/{name}")))?;
            Ok(if terminated(&pod).is_some() {
                Ok(pod)
            } else {
                Err("still running".to_string())
            })
        },
    )
    .await?;
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let (exit, message) = terminated(&pod).unwrap_or((-1, String::new()));
    let value: Option<Value> = serde_json::from_str(message.trim()).ok();
    match value {
        Some(v) if exit == 0 && v["phase"] == "Succeeded" => Ok((v, node)),
        Some(v) if v["error"].is_string() => Err(VolumeError::Mover {
            pod: format!("{movers}/{name}"),
            message: v["error"].as_str().unwrap_or_default().to_string(),
        }),
        _ => Err(VolumeError::Mover {
            pod: format!("{movers}/{name}"),
            message: format!(
                "it exited with code {exit}{}",
                if message.trim().is_empty() {
                    String::new()
                } else {
                    format!(": {}", message.trim())
                }
            ),
        }),
    }
}

/// The error of a refused mover pod; a Pod Security refusal says what the
/// movers' namespace needs.
fn refused_pod(movers: &str, pod: &Pod, e: kube::Error) -> VolumeError {
    let name = pod.name_any();
    match &e {
        kube::Error::Api(s) if s.code == 403 && s.message.contains("PodSecurity") => {
            let host_path = pod
                .spec
                .as_ref()
                .and_then(|s| s.volumes.as_ref())
                .is_some_and(|v| v.iter().any(|v| v.host_path.is_some()));
            let hint = if host_path {
                format!(
                    "a `fileSystem` mover mounts the node's kubelet pods directory (hostPath), \
                     which only Pod Security `privileged` allows: label the namespace `{movers}` \
                     `pod-security.kubernetes.io/enforce=privileged` (deploy/ component \
                     `filesystem-backup`), or protect the claim by `snapshotMove`"
                )
            } else {
                format!(
                    "movers need Pod Security `baseline` in the namespace `{movers}` \
                     (`pod-security.kubernetes.io/enforce=baseline`, as deploy/ sets it)"
                )
            };
            VolumeError::Admission {
                pod: format!("{movers}/{name}"),
                message: s.message.clone(),
                hint,
            }
        }
        _ => kube_err(format!("create pod {movers}/{name}"))(e),
    }
}

/// Whether a mover pod has started, or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StartState {
    /// Running or finished.
    Started,
    /// Pending, with the kubelet's or scheduler's reason.
    Pending(String),
}

fn start_state(pod: &Pod) -> StartState {
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default();
    if phase == "Pending" || phase.is_empty() {
        StartState::Pending(pending_reason(pod))
    } else {
        StartState::Started
    }
}

/// Why a pod has not started, from its conditions and container states.
fn pending_reason(pod: &Pod) -> String {
    let status = pod.status.as_ref();
    let waiting = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .find_map(|c| c.state.as_ref()?.waiting.as_ref())
        .map(|w| {
            format!(
                "{}{}",
                w.reason.clone().unwrap_or_default(),
                w.message
                    .as_ref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            )
        });
    let condition = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.status == "False" && c.message.is_some())
        .map(|c| {
            format!(
                "{}: {}",
                c.reason.as_deref().unwrap_or(&c.type_),
                c.message.clone().unwrap_or_default()
            )
        });
    waiting
        .or(condition)
        .unwrap_or_else(|| "Pending".to_string())
}

/// The container's exit code and termination message, once it ended.
fn terminated(pod: &Pod) -> Option<(i32, String)> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == "mover")?
        .state
        .as_ref()?
        .terminated
        .as_ref()
        .map(|t| (t.exit_code, t.message.clone().unwrap_or_default()))
}

/// A mover's JSON progress line.
fn progress_line(line: &str) -> Option<VolumeProgress> {
    let v: Value = serde_json::from_str(line.trim()).ok()?;
    if v["event"] != "progress" && v["event"] != "done" {
        return None;
    }
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    Some(VolumeProgress::Moving {
        bytes_done: n("bytesDone"),
        bytes_total: n("bytesTotal"),
        files_done: n("filesDone"),
        files_total: n("filesTotal"),
    })
}

/// What a restore fills: the claim the restore created, and where its
/// data comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimToFill {
    /// The target claim (after namespace mapping).
    pub namespace: String,
    pub pvc: String,
    /// The repository's namespace and claim (the source).
    pub source_namespace: String,
    pub source_pvc: String,
    /// The restic snapshot id (empty when the backup copied no data).
    pub snapshot: String,
    /// The CSI snapshot the backup kept in its cluster, if any.
    pub kept: Option<KeptSnapshot>,
    /// Fill the claim from `kept`, which is in this cluster (else from
    /// `snapshot`).
    pub local: bool,
    /// Where the restored workload mounting the claim may run, if it says.
    pub placement: Option<Placement>,
}

/// The scheduling constraints of a restored workload's pods that decide
/// which nodes they may run on. A WaitForFirstConsumer volume is
/// provisioned where its first consumer — the restore's mover — is
/// scheduled, and its workload can only ever run there: the mover gets
/// these constraints, so that place is one the workload accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// `spec.nodeSelector` (an object), when set.
    pub node_selector: Option<Value>,
    /// `spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution`.
    pub node_affinity: Option<Value>,
    /// `spec.tolerations` (an array), when set.
    pub tolerations: Option<Value>,
}

impl Placement {
    /// The constraints of a pod spec; `None` when it has none.
    pub fn of_pod_spec(spec: &Value) -> Option<Placement> {
        let set = |v: Option<&Value>| {
            v.filter(|v| {
                v.as_object().is_some_and(|o| !o.is_empty())
                    || v.as_array().is_some_and(|a| !a.is_empty())
            })
            .cloned()
        };
        let p = Placement {
            node_selector: set(spec.get("nodeSelector")),
            node_affinity: set(spec
                .pointer("/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution")),
            tolerations: set(spec.get("tolerations")),
        };
        (p.node_selector.is_some() || p.node_affinity.is_some() || p.tolerations.is_some())
            .then_some(p)
    }

    /// Gives a (mover) pod these constraints.
    fn apply(&self, pod: Pod) -> Result<Pod, VolumeError> {
        let mut v = serde_json::to_value(pod)
            .map_err(|e| VolumeError::Invalid(format!("internal object: {e}")))?;
        if let Some(s) = &self.node_selector {
            v["spec"]["nodeSelector"] = s.clone();
        }
        if let Some(a) = &self.node_affinity {
            v["spec"]["affinity"] =
                json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": a}});
        }
        if let Some(t) = &self.tolerations {
            v["spec"]["tolerations"] = t.clone();
        }
        typed(v)
    }
}

/// Whether the claim `ns/pvc` is of a WaitForFirstConsumer class.
pub async fn claim_waits_for_first_consumer(
    client: &kube::Client,
    ns: &str,
    pvc: &str,
) -> Result<bool, VolumeError> {
    let claim = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .get(pvc)
        .await
        .map_err(kube_err(format!("read PersistentVolumeClaim {ns}/{pvc}")))?;
    let class = claim.spec.and_then(|s| s.storage_class_name);
    waits_for_first_consumer(client, class.as_deref()).await
}

/// Whether claims of storage class `class` wait for their first consumer
/// before a volume is provisioned (`volumeBindingMode: WaitForFirstConsumer`).
async fn waits_for_first_consumer(
    client: &kube::Client,
    class: Option<&str>,
) -> Result<bool, VolumeError> {
    let Some(class) = class.filter(|c| !c.is_empty()) else {
        return Ok(false);
    };
    let sc = Api::<StorageClass>::all(client.clone())
        .get_opt(class)
        .await
        .map_err(kube_err(format!("read StorageClass {class}")))?;
    Ok(sc.and_then(|sc| sc.volume_binding_mode).as_deref() == Some("WaitForFirstConsumer"))
}

/// The claim selector a restore gives a claim it fills, so no provisioner
/// and no other volume takes it before its data is in.
pub fn restore_selector(restore: &str, namespace: &str, pvc: &str) -> Value {
    json!({"matchLabels": {RESTORE_VOLUME_LABEL: object_name("v", restore, namespace, pvc)}})
}

/// Fills a claim the restore created (carrying [`restore_selector`]) with
/// a snapshot's data: a mover writes into a new volume of the claim's class
/// and size in the movers' namespace, which is then handed to the claim.
pub async fn restore_claim(
    client: &kube::Client,
    claim: &ClaimToFill,
    restore: &str,
    access: &MoverAccess,
    key: &RepoKey,
    opts: &MoverOptions,
    progress: &(dyn Fn(VolumeProgress) + Send + Sync),
) -> Result<VolumeRestoreResult, VolumeError> {
    timed(client, opts, progress, async |created: &mut Created| {
        restore_steps(client, claim, restore, access, key, opts, progress, created).await
    })
    .await
}

/// The claim a restore created for `c`, which it may fill: unbound, with
/// the restore's selector. Any other claim's data is never overwritten.
async fn restore_target(
    client: &kube::Client,
    c: &ClaimToFill,
    restore: &str,
) -> Result<PersistentVolumeClaim, VolumeError> {
    let targets: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &c.namespace);
    let target = targets.get(&c.pvc).await.map_err(kube_err(format!(
        "read PersistentVolumeClaim {}/{}",
        c.namespace, c.pvc
    )))?;
    if !awaits_restore(&target, restore) {
        return Err(VolumeError::Invalid(format!(
            "the claim {}/{} was not created by this restore; its data is never overwritten",
            c.namespace, c.pvc
        )));
    }
    Ok(target)
}

/// Whether `claim` is one `restore` created and has not filled yet: no
/// volume, and the selector of this restore's fresh volume for it. No one
/// else's claim, and no filled one, is ever written into.
pub fn awaits_restore(claim: &PersistentVolumeClaim, restore: &str) -> bool {
    let (ns, name) = (
        claim.metadata.namespace.as_deref().unwrap_or_default(),
        claim.metadata.name.as_deref().unwrap_or_default(),
    );
    let spec = claim.spec.as_ref();
    spec.is_some_and(|s| s.volume_name.is_none())
        && spec
            .and_then(|s| s.selector.as_ref())
            .and_then(|s| serde_json::to_value(s).ok())
            == Some(restore_selector(restore, ns, name))
}

/// Hands the volume the movers' claim `name` was given (filled) to the
/// restore's `target` claim, as Velero's restore exposer does: the PV set
/// to Retain, the movers' pod and claim deleted, `claimRef` pointed at the
/// target, bound, its reclaim policy restored. Returns the PV's name.
#[allow(clippy::too_many_arguments)]
async fn hand_over(
    client: &kube::Client,
    c: &ClaimToFill,
    restore: &str,
    target: &PersistentVolumeClaim,
    name: &str,
    opts: &MoverOptions,
    progress: &(dyn Fn(VolumeProgress) + Send + Sync),
    created: &mut Created,
) -> Result<String, VolumeError> {
    let movers = opts.namespace.as_str();
    let targets: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &c.namespace);
    let movers_claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), movers);
    let expected = restore_selector(restore, &c.namespace, &c.pvc);
    // Hand the filled volume to the target claim.
    progress(VolumeProgress::Step { step: "rebind" });
    let pv_name = movers_claims
        .get(name)
        .await
        .map_err(kube_err(format!(
            "read PersistentVolumeClaim {movers}/{name}"
        )))?
        .spec
        .and_then(|s| s.volume_name)
        .ok_or_else(|| VolumeError::Invalid(format!("the claim {movers}/{name} has no volume")))?;
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let pv = pvs
        .get(&pv_name)
        .await
        .map_err(kube_err(format!("read PersistentVolume {pv_name}")))?;
    let policy = pv
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.clone())
        .unwrap_or_else(|| "Delete".into());
    pvs.patch(
        &pv_name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"persistentVolumeReclaimPolicy": "Retain"}})),
    )
    .await
    .map_err(kube_err(format!(
        "set PersistentVolume {pv_name} to Retain"
    )))?;
    // The pod first: its claim is released only once nothing mounts it.
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    if let Some(pod) = created.pod.take() {
        gone(
            Api::<Pod>::namespaced(client.clone(), movers)
                .delete(&pod, &now)
                .await,
        )
        .map_err(kube_err(format!("delete pod {movers}/{pod}")))?;
    }
    if let Some(p) = created.pvc.take() {
        gone(movers_claims.delete(&p, &DeleteParams::default()).await).map_err(kube_err(
            format!("delete PersistentVolumeClaim {movers}/{p}"),
        ))?;
    }
    let selector_value = expected["matchLabels"][RESTORE_VOLUME_LABEL].clone();
    let target_uid = target.uid().unwrap_or_default();
    let hand_over = json!({
        "metadata": {"labels": {RESTORE_VOLUME_LABEL: selector_value}},
        "spec": {"claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                              "namespace": c.namespace, "name": c.pvc, "uid": target_uid,
                              "resourceVersion": null}},
    });
    let rebound = async {
        until(
            &format!(
                "claim {}/{} binding to the filled volume {pv_name}",
                c.namespace, c.pvc
            ),
            opts.move_timeout.min(Duration::from_secs(300)),
            opts.poll,
            || async {
                let pvc = targets.get(&c.pvc).await.map_err(kube_err(format!(
                    "read PersistentVolumeClaim {}/{}",
                    c.namespace, c.pvc
                )))?;
                if pvc.spec.as_ref().and_then(|s| s.volume_name.as_deref())
                    == Some(pv_name.as_str())
                    && pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
                {
                    return Ok(Ok(()));
                }
                // Once the movers' claim is gone, point the volume at the target.
                let pv = pvs
                    .get(&pv_name)
                    .await
                    .map_err(kube_err(format!("read PersistentVolume {pv_name}")))?;
                let claim_ref = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
                let ours = claim_ref.and_then(|r| r.uid.as_deref()) == Some(target_uid.as_str());
                if !ours {
                    pvs.patch(&pv_name, &PatchParams::default(), &Patch::Merge(&hand_over))
                        .await
                        .map_err(kube_err(format!("hand PersistentVolume {pv_name} over")))?;
                }
                Ok(Err("not bound yet".to_string()))
            },
        )
        .await
    };
    let bound = rebound.await;
    // The reclaim policy the class gave the volume, whatever happened.
    let reset = pvs
        .patch(
            &pv_name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"persistentVolumeReclaimPolicy": policy}})),
        )
        .await;
    bound?;
    reset.map_err(kube_err(format!(
        "reset PersistentVolume {pv_name}'s reclaim policy"
    )))?;
    Ok(pv_name)
}

#[allow(clippy::too_many_arguments)]
async fn restore_steps(
    client: &kube::Client,
    c: &ClaimToFill,
    restore: &str,
    access: &MoverAccess,
    key: &RepoKey,
    opts: &MoverOptions,
    progress: &(dyn Fn(VolumeProgress) + Send + Sync),
    created: &mut Created,
) -> Result<VolumeRestoreResult, VolumeError> {
    let movers = opts.namespace.as_str();
    ensure_movers_namespace(client, movers).await?;
    let target = restore_target(client, c, restore).await?;
    let spec = target.spec.clone().unwrap_or_default();
    let lbl = labels(RESTORE_LABEL, restore, &[]);
    let name = object_name("lifeboat-r", restore, &c.namespace, &c.pvc);
    let block = spec.volume_mode.as_deref() == Some("Block");
    MoversClaim::like(&spec, &name, None, &lbl)
        .create(client, opts, created)
        .await?;

    let work = Work {
        location: access.location.clone(),
        location_name: access.location_name.clone(),
        cluster: access.cluster.clone(),
        namespace: c.source_namespace.clone(),
        pvc: c.source_pvc.clone(),
        pvc_uid: None,
        backup: None,
        path: if block { DATA_DEVICE } else { DATA_DIR }.into(),
        kind: if block {
            DataKind::Block
        } else {
            DataKind::Filesystem
        },
        snapshot: Some(c.snapshot.clone()),
        key_cache_dir: WORK_DIR.into(),
        pod_volume: None,
        maintenance: None,
        repository: key.foreign.as_ref().map(|path| ForeignRepository {
            path: path.clone(),
            key: key.cache_name.clone(),
        }),
    };
    let mover = Mover {
        name: name.clone(),
        action: "restore",
        claim: name.clone(),
        block,
        node_affinity: None,
        labels: lbl,
    };
    // The mover is a WaitForFirstConsumer volume's first consumer: it is
    // provisioned where the mover runs, so the mover runs where the
    // workload may.
    let mut pod = mover.pod(opts)?;
    if let Some(placement) = &c.placement
        && waits_for_first_consumer(client, spec.storage_class_name.as_deref()).await?
    {
        pod = placement.apply(pod)?;
    }
    progress(VolumeProgress::Step { step: "mover" });
    let (message, node) = mover
        .run_pod(client, pod, &work, key, opts, progress, created)
        .await?;
    let r: MoverRestore =
        serde_json::from_value(message.clone()).map_err(|e| VolumeError::Mover {
            pod: name.clone(),
            message: format!("its result is not understood ({e}): {message}"),
        })?;

    let pv_name = hand_over(client, c, restore, &target, &name, opts, progress, created).await?;
    Ok(VolumeRestoreResult {
        namespace: c.namespace.clone(),
        pvc: c.pvc.clone(),
        snapshot: r.snapshot,
        bytes: r.bytes,
        files: r.files,
        duration_seconds: 0.0,
        pv: pv_name,
        node,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_are_stable_dns_labels() {
        let a = object_name("lifeboat", "blog-20261201-020000", "shop", "Data_Vol.1");
        assert_eq!(
            a,
            object_name("lifeboat", "blog-20261201-020000", "shop", "Data_Vol.1")
        );
        assert_ne!(
            a,
            object_name("lifeboat", "blog-20261201-020000", "other", "Data_Vol.1")
        );
        assert!(a.len() <= 63, "{a}");
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{a}"
        );
    }

    #[test]
    fn movers_run_as_root_without_privilege_escalation_and_pinned_where_asked() {
        let mover = Mover {
            name: "m".into(),
            action: "restore",
            claim: "c".into(),
            block: false,
            node_affinity: Some(json!({"nodeSelectorTerms": []})),
            labels: labels(RESTORE_LABEL, "r1", &[]),
        };
        let p = serde_json::to_value(mover.pod(&MoverOptions::default()).unwrap()).unwrap();
        let c = &p["spec"]["containers"][0];
        assert_eq!(c["securityContext"]["runAsUser"], 0);
        assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(c["volumeMounts"][1]["mountPath"], DATA_DIR);
        assert!(p["spec"].get("serviceAccountName").is_none());
        assert!(p["spec"].get("priorityClassName").is_none());
        assert!(c.get("resources").is_none());
        assert!(p["spec"]["affinity"]["nodeAffinity"].is_object());
        // Restore movers take the configured resources and priority too.
        let opts = MoverOptions {
            priority_class: Some("backup-low".into()),
            resources: MoverResources {
                requests: [("memory".into(), "512Mi".into())].into(),
                limits: BTreeMap::new(),
            },
            ..MoverOptions::default()
        };
        let p = serde_json::to_value(mover.pod(&opts).unwrap()).unwrap();
        assert_eq!(p["spec"]["priorityClassName"], "backup-low");
        assert_eq!(
            p["spec"]["containers"][0]["resources"],
            json!({"requests": {"memory": "512Mi"}})
        );
    }

    #[test]
    fn a_restore_mover_gets_the_workloads_node_constraints_and_nothing_else() {
        let required = json!({"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "pool", "operator": "In", "values": ["db"]}]}]});
        let spec = json!({
            "nodeSelector": {"disktype": "ssd"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required},
                         "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": []}},
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
        });
        let placement = Placement::of_pod_spec(&spec).unwrap();
        let mover = Mover {
            name: "m".into(),
            action: "restore",
            claim: "c".into(),
            block: false,
            node_affinity: None,
            labels: labels(RESTORE_LABEL, "r1", &[]),
        };
        let pod = placement
            .apply(mover.pod(&MoverOptions::default()).unwrap())
            .unwrap();
        let p = serde_json::to_value(pod).unwrap();
        assert_eq!(p["spec"]["nodeSelector"], json!({"disktype": "ssd"}));
        assert_eq!(p["spec"]["tolerations"], spec["tolerations"]);
        assert_eq!(
            p["spec"]["affinity"],
            json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}})
        );
        assert_eq!(
            p["spec"]["volumes"][1]["persistentVolumeClaim"]["claimName"],
            "c"
        );
        // A pod spec without constraints (or with empty ones) gives none.
        let none = json!({"nodeSelector": {}, "tolerations": [], "volumes": []});
        assert_eq!(Placement::of_pod_spec(&none), None);
    }

    #[test]
    fn a_pending_pod_says_why_it_has_not_started() {
        let pod = |status: Value| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "m"}, "status": status})).unwrap()
        };
        let waiting = |reason: &str, message: &str| {
            pod(json!({"phase": "Pending", "containerStatuses": [{
                "name": "mover", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": reason, "message": message}}}]}))
        };
        assert_eq!(
            start_state(&waiting("ImagePullBackOff", "Back-off pulling image \"x\"")),
            StartState::Pending("ImagePullBackOff: Back-off pulling image \"x\"".into())
        );
        assert_eq!(
            start_state(&waiting(
                "CreateContainerConfigError",
                "secret \"s\" not found"
            )),
            StartState::Pending("CreateContainerConfigError: secret \"s\" not found".into())
        );
        let unschedulable = pod(json!({"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."}]}));
        assert_eq!(
            start_state(&unschedulable),
            StartState::Pending(
                "Unschedulable: 0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."
                    .into()
            )
        );
        assert_eq!(
            start_state(&pod(json!({}))),
            StartState::Pending("Pending".into())
        );
        assert_eq!(
            start_state(&pod(json!({"phase": "Running"}))),
            StartState::Started
        );
        assert_eq!(
            start_state(&pod(json!({"phase": "Failed"}))),
            StartState::Started
        );
    }

    #[test]
    fn progress_lines_are_parsed_and_other_lines_ignored() {
        let p = progress_line(
            r#"{"event":"progress","bytesDone":5,"bytesTotal":10,"filesDone":1,"filesTotal":2}"#,
        );
        assert_eq!(
            p,
            Some(VolumeProgress::Moving {
                bytes_done: 5,
                bytes_total: 10,
                files_done: 1,
                files_total: 2
            })
        );
        assert_eq!(progress_line("SIGTERM: stopping"), None);
    }
}
