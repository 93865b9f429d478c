//! The restore engine: applies a verified backup to a cluster.
//!
//! ```text
//! verify (nothing applied on failure)
//!   ─▶ entries ─▶ Selection (source namespace, resource, labels)
//!   ─▶ skip_reason / denied target namespaces (skipped lines)
//!   ─▶ Transform ─▶ tiers (order::tier)
//!   ─▶ tier 0: CRDs, wait until Established, refresh discovery
//!   ─▶ tier 1: namespaces (+ every target namespace the objects need)
//!   ─▶ other tiers: create with bounded parallelism (buffer_unordered)
//! ```
//!
//! Per object the engine POSTs the transformed object. On 409
//! AlreadyExists, [`ExistingResources`] decides: `Skip` reports it skipped
//! ("exists"), `Fail` reports it failed, `Update` GETs the live object and,
//! unless a JSON merge patch of the backed-up object would change nothing
//! (reported skipped, "unchanged"), merge-patches it. A merge patch sets
//! every field the backup has; fields added to the live object since the
//! backup are kept.
//!
//! Transient failures (429, 500, 502, 503, 504, connection errors) are
//! retried with exponential backoff, [`MAX_ATTEMPTS`] attempts in all.
//!
//! Dry run sends every write with `dryRun=All`, so the API server validates
//! each object and changes nothing. Namespaces (and CRDs) that would be
//! created do not exist afterwards, so the server answers 404 for objects
//! inside them (and discovery does not know the custom kinds): such objects
//! are reported `Created` with a reason saying they were not validated by
//! the server because their namespace (or CRD) would be created first.
//!
//! The outcome holds counts and one line per object, sorted by tier,
//! resource, namespace and name, and converts into the store's
//! [`RestoreRecord`].

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use globset::{Glob, GlobSet, GlobSetBuilder};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::{Discovery, Scope};
use lifeboat_core::{ExistingResources, NamespacePattern};
use lifeboat_store::{
    LIFEBOAT_VERSION, Prerequisite, RestoreAction, RestoreCounts, RestoreItem, RestorePhase,
    RestoreRecord, RestoreSource, RestoredVolume, StoreError, VolumePhase,
};
use serde_json::Value;

use crate::openshift;
use crate::order;
use crate::select::Selection;
use crate::transform::Transform;
use crate::volumes::{
    self, ClaimToFill, KeptSnapshot, MoverAccess, MoverOptions, RepoKey, VolumeProgress,
};

/// Attempts per write (the first try included) on transient failures.
pub const MAX_ATTEMPTS: u32 = 6;

/// Default parallelism within a tier.
pub const DEFAULT_PARALLELISM: usize = 16;

/// What to restore and how.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Which objects of the backup to restore (namespaces are the SOURCE
    /// namespaces).
    pub selection: Selection,
    /// Namespace and storage class mappings.
    pub transform: Transform,
    /// What to do when an object already exists.
    pub existing: ExistingResources,
    /// Send every write with `dryRun=All`.
    pub dry_run: bool,
    /// Concurrent writes within a tier (0 is treated as 1).
    pub parallelism: usize,
    /// The target Cluster's guard rail: objects whose TARGET namespace
    /// matches are skipped and reported.
    pub denied_namespaces: Vec<NamespacePattern>,
    /// How long to wait for restored CRDs to become Established and served.
    pub crd_timeout: Duration,
    /// Restore the data of the claims whose data the backup carries
    /// (`None`: objects only; such claims come back as they were backed up).
    pub volume_data: Option<VolumeData>,
    /// Restore only these claims, with their data (`None`: the selection
    /// alone decides).
    pub claims: Option<ClaimSelection>,
    /// The request's restore hooks (RestoreRequest `spec.hooks.pods`,
    /// `restore --hooks`); Velero's restore hook annotations on restored
    /// pod templates run with or without them.
    pub hooks: Vec<lifeboat_core::model::RestorePodHook>,
}

/// A restore of single claims (`--claim`, RestoreRequest `spec.claims`).
///
/// Each listed claim (SOURCE namespace and name) is restored whatever the
/// selection says: its object, mapped like any other, and a fresh volume
/// filled with its data (its PV is never restored). Other objects are
/// restored only when `with_selection` is set (the request gave an
/// `include`) and [`RestoreOptions::selection`] picks them. Every listed
/// claim must be in the backup and carry data there, or the restore fails
/// before anything is applied ([`RestoreError::UnknownClaims`],
/// [`RestoreError::ClaimsWithoutData`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimSelection {
    pub claims: BTreeSet<(String, String)>,
    pub with_selection: bool,
}

impl ClaimSelection {
    /// `claims` alone, or with the selection's objects too; `None` when no
    /// claim is listed.
    pub fn of(claims: &[lifeboat_core::ClaimRef], with_selection: bool) -> Option<ClaimSelection> {
        (!claims.is_empty()).then(|| ClaimSelection {
            claims: claims
                .iter()
                .map(|c| (c.namespace().to_string(), c.name().to_string()))
                .collect(),
            with_selection,
        })
    }

    fn lists(&self, resource: &str, group: &str, ns: Option<&str>, name: &str) -> bool {
        group.is_empty()
            && resource == "persistentvolumeclaims"
            && ns.is_some_and(|ns| self.claims.contains(&(ns.to_string(), name.to_string())))
    }
}

/// How a restore fills claims with the backup's volume data.
#[derive(Debug, Clone)]
pub struct VolumeData {
    /// The restore's name (labels what it creates in the cluster).
    pub restore: String,
    pub access: MoverAccess,
    /// The repository key of each SOURCE namespace (none in a dry run).
    pub keys: BTreeMap<String, RepoKey>,
    pub movers: MoverOptions,
}

/// Annotations of a claim that belong to the volume it was bound to.
const PROVISIONING_ANNOTATIONS: &[&str] = &[
    "pv.kubernetes.io/bind-completed",
    "pv.kubernetes.io/bound-by-controller",
    "volume.kubernetes.io/selected-node",
    "volume.beta.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/storage-provisioner",
];

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            selection: Selection::all(),
            transform: Transform::default(),
            existing: ExistingResources::Skip,
            dry_run: false,
            parallelism: DEFAULT_PARALLELISM,
            denied_namespaces: Vec::new(),
            crd_timeout: Duration::from_secs(60),
            volume_data: None,
            claims: None,
            hooks: Vec::new(),
        }
    }
}

/// Reported while a restore runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The archive was verified; `objects` objects are in it.
    Verified { objects: u64 },
    /// Objects were read and planned; `to_apply` will be written.
    Planned { to_apply: usize, skipped: usize },
    /// One object finished (`done` of `total` to apply).
    Applied {
        done: usize,
        total: usize,
        action: RestoreAction,
    },
    /// The restore hooks of `workloads` restored workloads are running
    /// (waiting for their pods first).
    Hooks { workloads: usize },
    /// A claim's data is being restored.
    Volume {
        namespace: String,
        pvc: String,
        progress: VolumeProgress,
    },
}

/// The result of a restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreOutcome {
    pub dry_run: bool,
    /// Prerequisites of the backup (CRDs, operators) the target lacked
    /// before anything was applied, each with what to do.
    pub missing_prerequisites: Vec<String>,
    pub counts: RestoreCounts,
    /// One line per object, in tier, resource, namespace, name order.
    pub items: Vec<RestoreItem>,
    /// The claims filled with the backup's data.
    pub volumes: Vec<RestoredVolume>,
    /// What the restore hooks did.
    pub hooks: crate::restore_hooks::HookRuns,
}

impl RestoreOutcome {
    /// `Completed` when nothing failed, `Failed` when something failed
    /// and nothing was created or updated, else `PartiallyFailed` (a
    /// volume whose data did not come back is a failure too).
    pub fn phase(&self) -> RestorePhase {
        let c = &self.counts;
        let volume_failed = self.volumes.iter().any(|v| v.phase == VolumePhase::Failed);
        if c.failed == 0 && !self.hooks.failed_restore && !volume_failed {
            RestorePhase::Completed
        } else if c.failed == 0 {
            RestorePhase::PartiallyFailed
        } else if c.created + c.updated == 0 {
            RestorePhase::Failed
        } else {
            RestorePhase::PartiallyFailed
        }
    }

    /// The record written with `Repository::write_restore_record`.
    pub fn into_record(
        self,
        request: &str,
        source_cluster: &str,
        source_backup: &str,
        target_cluster: &str,
        start_time: Timestamp,
        end_time: Timestamp,
    ) -> RestoreRecord {
        RestoreRecord {
            request: request.into(),
            source_cluster: source_cluster.into(),
            source_backup: source_backup.into(),
            target_cluster: target_cluster.into(),
            start_time,
            end_time: Some(end_time),
            phase: self.phase(),
            owner: None,
            deadline: None,
            message: None,
            dry_run: self.dry_run,
            counts: self.counts,
            items: self.items,
            missing_prerequisites: self.missing_prerequisites,
            volumes: self.volumes,
            hooks: self.hooks.entries,
            hook_counts: self.hooks.counts,
            images: Vec::new(),
            lifeboat_version: LIFEBOAT_VERSION.into(),
        }
    }
}

/// Why a restore did not run (per-object failures are lines, not errors).
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The archive failed verification before anything was applied. The
    /// message holds no copy of the cause: callers print the source chain.
    #[error(
        "the backup failed verification, so nothing was restored; run `lifeboat backups \
         verify <backup>` to see every damaged file, or restore from another backup"
    )]
    Verify(#[source] StoreError),
    #[error("reading the backup archive failed, nothing more was applied")]
    Read(#[source] StoreError),
    #[error(
        "the archive entry {path} is not a Kubernetes object ({reason}); the backup is \
         damaged, restore from another backup"
    )]
    InvalidObject { path: String, reason: String },
    #[error(
        "invalid deniedNamespaces pattern `{pattern}`: {reason}; fix the target Cluster's \
         deniedNamespaces"
    )]
    DeniedPattern { pattern: String, reason: String },
    #[error(
        "API discovery on the target cluster failed: {0}; check that the cluster is reachable \
         and the credentials may list API groups"
    )]
    Discovery(#[source] kube::Error),
    #[error("cannot find the backup's kept snapshots in the target cluster: {0}")]
    KeptSnapshots(#[source] volumes::VolumeError),
    #[error(
        "the backup has no claim {unknown}; nothing was restored. Its claims: {known} \
         (name claims as SOURCE-NAMESPACE/NAME)"
    )]
    UnknownClaims { unknown: String, known: String },
    #[error(
        "the backup holds no data for {claims}; nothing was restored. A claim restore brings \
         a claim back with its data: restore from a backup whose volume completed, or restore \
         the namespace without claims to get the claim object alone"
    )]
    ClaimsWithoutData { claims: String },
}

/// One object to write.
#[derive(Debug, Clone)]
struct Planned {
    tier: usize,
    /// `<resource>[.<group>]`.
    key: String,
    resource: String,
    group: String,
    api_version: String,
    kind: String,
    /// Target namespace.
    namespace: Option<String>,
    name: String,
    obj: Value,
    /// Made up by the engine (a namespace the backup did not contain).
    synthesized: bool,
    /// What the transforms changed, for the record.
    changes: Vec<String>,
    /// What an existing object of the same name means.
    on_exists: OnExists,
}

/// How a create answered AlreadyExists is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnExists {
    /// As [`RestoreOptions::existing`] says.
    Options,
    /// A user-created OpenShift SCC: the backed-up `users`/`groups` are
    /// merged into the live one (grants are only ever added).
    MergeScc,
    /// Made by the target's own controllers (OpenShift's per-namespace
    /// RoleBindings): kept as they are.
    KeepTargets,
}

type Line = (usize, RestoreItem);

fn line(p: &Planned, action: RestoreAction, reason: Option<String>) -> Line {
    (
        p.tier,
        RestoreItem {
            resource: p.key.clone(),
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            action,
            reason,
            changes: p.changes.clone(),
        },
    )
}

fn denied_set(patterns: &[NamespacePattern]) -> Result<Option<GlobSet>, RestoreError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let g = Glob::new(&p.0).map_err(|e| RestoreError::DeniedPattern {
            pattern: p.0.clone(),
            reason: e.kind().to_string(),
        })?;
        b.add(g);
    }
    b.build()
        .map(Some)
        .map_err(|e| RestoreError::DeniedPattern {
            pattern: String::new(),
            reason: e.to_string(),
        })
}

fn selected(sel: &Selection, resource: &str, group: &str, ns: Option<&str>, name: &str) -> bool {
    match (group, resource, ns) {
        ("", "namespaces", _) => sel.namespace(name) && sel.resource(resource, group),
        // Kept when they grant a restored ServiceAccount (decided later).
        (openshift::SCC_GROUP, openshift::SCC_RESOURCE, None) => {
            sel.related_cluster_objects() && sel.resource(resource, group)
        }
        (_, _, Some(ns)) => sel.namespace(ns) && sel.resource(resource, group),
        (_, _, None) => sel.cluster_scoped(resource, group),
    }
}

/// Restores `reader`'s backup (lifeboat's or Velero's) into the cluster behind `client`.
///
/// Verifies the whole archive first; on a verification error nothing is
/// applied. Per-object problems become `Failed` lines; the function only
/// errors when the restore could not run at all.
pub async fn restore(
    client: &kube::Client,
    reader: &impl RestoreSource,
    opts: &RestoreOptions,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<RestoreOutcome, RestoreError> {
    let report = reader.verify().await.map_err(RestoreError::Verify)?;
    progress(Progress::Verified {
        objects: report.objects,
    });
    let denied = denied_set(&opts.denied_namespaces)?;
    // Claims whose data the backup carries: (source namespace, claim) →
    // where it is (see `data_source`).
    let mut with_data: BTreeMap<(String, String), DataSource> = BTreeMap::new();
    if opts.volume_data.is_some() {
        for v in reader.volumes() {
            if v.phase != VolumePhase::Completed || (v.snapshot.is_none() && v.kept.is_none()) {
                continue;
            }
            let local = match &v.kept {
                Some(k) => volumes::kept_available(client, k)
                    .await
                    .map_err(RestoreError::KeptSnapshots)?,
                None => false,
            };
            with_data.insert(
                (v.namespace.clone(), v.pvc.clone()),
                DataSource {
                    snapshot: v.snapshot.clone().unwrap_or_default(),
                    kept: v.kept.clone(),
                    local,
                    velero: v.method == lifeboat_store::VELERO_RESTIC,
                },
            );
        }
    }
    // Claims whose data the backup holds in a form this restore cannot
    // read (Velero's Kopia): restored as backed up, each reported.
    let unreadable: BTreeMap<(String, String), &lifeboat_store::VolumeEntry> =
        if opts.volume_data.is_some() {
            reader
                .unreadable_volumes()
                .iter()
                .map(|v| ((v.namespace.clone(), v.pvc.clone()), v))
                .collect()
        } else {
            BTreeMap::new()
        };
    let mut without_data: Vec<RestoredVolume> = Vec::new();
    if let Some(c) = &opts.claims {
        check_claims(reader, c, &with_data, opts.volume_data.is_some()).await?;
    }
    let mut to_fill: Vec<ClaimToFill> = Vec::new();
    let mut hook_targets: Vec<crate::restore_hooks::Target> = Vec::new();

    // Read, select, skip, transform.
    let mut lines: Vec<Line> = Vec::new();
    let mut planned: Vec<Planned> = Vec::new();
    let mut entries = std::pin::pin!(reader.entries());
    while let Some(entry) = entries.try_next().await.map_err(RestoreError::Read)? {
        let mut obj: Value =
            serde_json::from_slice(&entry.json).map_err(|e| RestoreError::InvalidObject {
                path: entry.path.clone(),
                reason: e.to_string(),
            })?;
        let listed_claim = opts.claims.as_ref().is_some_and(|c| {
            c.lists(
                &entry.resource,
                &entry.group,
                entry.namespace.as_deref(),
                &entry.name,
            )
        });
        let by_selection = opts.claims.as_ref().is_none_or(|c| c.with_selection)
            && selected(
                &opts.selection,
                &entry.resource,
                &entry.group,
                entry.namespace.as_deref(),
                &entry.name,
            )
            && opts.selection.labels(&crate::select::labels_of(&obj));
        if !listed_claim && !by_selection {
            continue;
        }
        let text = |p: &str| {
            obj.pointer(p)
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_default()
        };
        let (api_version, kind) = (text("/apiVersion"), text("/kind"));
        if api_version.is_empty() || kind.is_empty() {
            return Err(RestoreError::InvalidObject {
                path: entry.path,
                reason: "apiVersion or kind missing".into(),
            });
        }
        let mut skip = order::skip_reason(&entry.resource, &entry.group, &obj);
        // A claim whose data is restored gets a fresh volume: its old PV
        // would bind it to the source's disk (or leave it Pending).
        let claim_of_pv = (entry.group.is_empty() && entry.resource == "persistentvolumes")
            .then(|| {
                let r = |k: &str| {
                    obj.pointer(&format!("/spec/claimRef/{k}"))
                        .and_then(Value::as_str)
                };
                Some((r("namespace")?.to_string(), r("name")?.to_string()))
            })
            .flatten();
        if skip.is_none()
            && let Some(claim) = claim_of_pv.filter(|c| with_data.contains_key(c))
        {
            skip = Some(format!(
                "the claim {}/{} gets a fresh volume, filled from the backup's volume data",
                claim.0, claim.1
            ));
        }
        // KubeVirt: a claim (or a DataVolume's claim, of its name) whose
        // data comes back, and the DataVolume a claim belonged to (its
        // owner reference goes with the transform).
        let data_volume = crate::kubevirt::data_volume_of(&obj);
        let mut changes = opts
            .transform
            .apply(&entry.resource, &entry.group, &mut obj);
        if let Some((kind, w)) = hooked_workload(
            &entry.resource,
            &entry.group,
            &entry.name,
            entry.namespace.as_deref(),
            &obj,
        ) {
            let hooks = lifeboat_core::hooks::restore::workload_hooks(&opts.hooks, &w);
            if !hooks.is_empty() {
                let spec = if kind == "Pod" {
                    obj.pointer_mut("/spec")
                } else {
                    obj.pointer_mut("/spec/template/spec")
                };
                if let Some(spec) = spec
                    && let Some(c) = crate::restore_hooks::add_init_containers(spec, &hooks.init)
                {
                    changes.push(c);
                }
                hook_targets.push(crate::restore_hooks::Target {
                    namespace: opts.transform.namespace(&w.namespace).to_string(),
                    source_namespace: w.namespace.clone(),
                    kind: kind.to_string(),
                    name: entry.name.clone(),
                    hooks,
                });
            }
        }
        let restores_data = opts.volume_data.is_some()
            && entry
                .namespace
                .as_deref()
                .is_some_and(|ns| with_data.contains_key(&(ns.to_string(), entry.name.clone())));
        changes.extend(crate::kubevirt::restore_rules(
            &opts.transform.kubevirt,
            &entry.resource,
            &entry.group,
            &mut obj,
            restores_data,
            data_volume.as_deref(),
        ));
        if entry.group.is_empty()
            && entry.resource == "persistentvolumeclaims"
            && let (Some(ns), Some(data)) = (entry.namespace.as_deref(), &opts.volume_data)
            && let Some(source) = with_data.get(&(ns.to_string(), entry.name.clone()))
        {
            let target = opts.transform.namespace(ns).to_string();
            fresh_claim(&mut obj, &data.restore, &target, &entry.name);
            changes.push(source.describe());
            to_fill.push(ClaimToFill {
                namespace: target,
                pvc: entry.name.clone(),
                source_namespace: ns.to_string(),
                source_pvc: entry.name.clone(),
                snapshot: source.snapshot.clone(),
                kept: source.kept.clone(),
                local: source.local,
                placement: None,
            });
        }
        if entry.group.is_empty()
            && entry.resource == "persistentvolumeclaims"
            && let Some(ns) = entry.namespace.as_deref()
            && let Some(v) = unreadable.get(&(ns.to_string(), entry.name.clone()))
        {
            let why = v.error.clone().unwrap_or_default();
            changes.push(format!(
                "its data is NOT restored (it comes back as it was backed up): {why}"
            ));
            without_data.push(RestoredVolume {
                namespace: opts.transform.namespace(ns).to_string(),
                pvc: entry.name.clone(),
                source_namespace: ns.to_string(),
                snapshot: v.snapshot.clone().unwrap_or_default(),
                from_kept: false,
                phase: VolumePhase::Failed,
                bytes: 0,
                files: 0,
                duration_ms: 0,
                node: None,
                error: Some(format!("not restored: {why}")),
            });
        }
        let on_exists = match (entry.group.as_str(), entry.resource.as_str()) {
            ("rbac.authorization.k8s.io", "rolebindings")
                if openshift::SYSTEM_ROLE_BINDINGS.contains(&entry.name.as_str()) =>
            {
                OnExists::KeepTargets
            }
            (openshift::SCC_GROUP, openshift::SCC_RESOURCE) => OnExists::MergeScc,
            _ => OnExists::Options,
        };
        let is_ns = entry.group.is_empty() && entry.resource == "namespaces";
        let namespace = entry
            .namespace
            .as_deref()
            .map(|ns| opts.transform.namespace(ns).to_string());
        let name = if is_ns {
            opts.transform.namespace(&entry.name).to_string()
        } else {
            entry.name.clone()
        };
        let key = if entry.group.is_empty() {
            entry.resource.clone()
        } else {
            format!("{}.{}", entry.resource, entry.group)
        };
        let p = Planned {
            tier: order::tier(&entry.resource, &entry.group),
            key,
            resource: entry.resource,
            group: entry.group,
            api_version,
            kind,
            namespace,
            name,
            obj,
            synthesized: false,
            changes,
            on_exists,
        };
        if let Some(reason) = skip {
            lines.push(line(&p, RestoreAction::Skipped, Some(reason)));
            continue;
        }
        let target_ns = if is_ns {
            Some(p.name.as_str())
        } else {
            p.namespace.as_deref()
        };
        if let (Some(ns), Some(d)) = (target_ns, &denied)
            && d.is_match(ns)
        {
            let reason = format!(
                "the target namespace {ns} is denied by the target Cluster's deniedNamespaces"
            );
            lines.push(line(&p, RestoreAction::Skipped, Some(reason)));
            continue;
        }
        planned.push(p);
    }

    // A filled claim's mover may run only where the restored workload
    // mounting it may (it decides a WaitForFirstConsumer volume's node).
    for claim in &mut to_fill {
        claim.placement = planned
            .iter()
            .filter(|p| p.namespace.as_deref() == Some(claim.namespace.as_str()))
            .filter(|p| mounted_claims(p).contains(&claim.pvc))
            .find_map(|p| {
                // A StatefulSet's template need not list the claims it gets.
                let spec = pod_spec(p).or_else(|| p.obj.pointer("/spec/template/spec"))?;
                volumes::Placement::of_pod_spec(spec)
            });
    }

    // OpenShift SCCs: kept when they grant what is restored (or when
    // cluster-scoped objects are restored wholesale); built-in ones become
    // RoleBindings in the target namespaces.
    let (sccs, rest): (Vec<Planned>, Vec<Planned>) = planned
        .into_iter()
        .partition(|p| p.group == openshift::SCC_GROUP && p.resource == openshift::SCC_RESOURCE);
    planned = rest;
    let restored_ns: BTreeSet<String> = planned
        .iter()
        .filter_map(|p| match (p.group.as_str(), p.resource.as_str()) {
            ("", "namespaces") => Some(p.name.clone()),
            _ => p.namespace.clone(),
        })
        .collect();
    let restored_sas: BTreeSet<(String, String)> = planned
        .iter()
        .filter(|p| p.group.is_empty() && p.resource == "serviceaccounts")
        .filter_map(|p| Some((p.namespace.clone()?, p.name.clone())))
        .collect();
    let wholesale_sccs = opts
        .selection
        .cluster_scoped(openshift::SCC_RESOURCE, openshift::SCC_GROUP);
    for p in sccs {
        let grants = openshift::scc_grants(&p.obj, &restored_sas, &restored_ns);
        if !grants && !wholesale_sccs {
            continue;
        }
        if !openshift::builtin_scc(&p.name) {
            planned.push(p);
            continue;
        }
        let bindings = openshift::scc_grant_bindings(&p.obj, &restored_ns);
        let reason = format!(
            "built-in SCC {} is never edited; {}",
            p.name,
            if bindings.is_empty() {
                "it grants nothing restored".to_string()
            } else {
                format!(
                    "its grants are restored as RoleBindings to system:openshift:scc:{}",
                    p.name
                )
            }
        );
        lines.push(line(&p, RestoreAction::Skipped, Some(reason)));
        for b in bindings {
            let text = |ptr: &str| b.pointer(ptr).and_then(Value::as_str).unwrap_or_default();
            let subjects: Vec<String> = b["subjects"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.get("name").and_then(Value::as_str).map(str::to_string))
                .collect();
            planned.push(Planned {
                tier: order::tier("rolebindings", "rbac.authorization.k8s.io"),
                key: "rolebindings.rbac.authorization.k8s.io".into(),
                resource: "rolebindings".into(),
                group: "rbac.authorization.k8s.io".into(),
                api_version: "rbac.authorization.k8s.io/v1".into(),
                kind: "RoleBinding".into(),
                namespace: Some(text("/metadata/namespace").to_string()),
                name: text("/metadata/name").to_string(),
                changes: vec![format!(
                    "grants built-in SCC {} to {} (from the SCC's users and groups in the                      backup)",
                    p.name,
                    subjects.join(", ")
                )],
                obj: b,
                synthesized: false,
                on_exists: OnExists::Options,
            });
        }
    }

    // Prerequisites the target lacks, reported before anything is applied.
    let missing_prerequisites =
        missing_prerequisites(client, reader.prerequisites(), &planned).await?;
    for m in &missing_prerequisites {
        tracing::warn!("missing prerequisite: {m}");
    }

    // Every target namespace the objects need gets a Namespace object.
    let have: HashSet<String> = planned
        .iter()
        .filter(|p| p.group.is_empty() && p.resource == "namespaces")
        .map(|p| p.name.clone())
        .collect();
    let needed: BTreeSet<String> = planned
        .iter()
        .filter_map(|p| p.namespace.clone())
        .filter(|ns| !have.contains(ns))
        .collect();
    for ns in needed {
        planned.push(Planned {
            tier: order::tier("namespaces", ""),
            key: "namespaces".into(),
            resource: "namespaces".into(),
            group: String::new(),
            api_version: "v1".into(),
            kind: "Namespace".into(),
            namespace: None,
            obj: serde_json::json!({
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}
            }),
            name: ns,
            synthesized: true,
            changes: Vec::new(),
            on_exists: OnExists::Options,
        });
    }
    progress(Progress::Planned {
        to_apply: planned.len(),
        skipped: lines.len(),
    });

    let mut tiers: BTreeMap<usize, Vec<Planned>> = BTreeMap::new();
    for p in planned {
        tiers.entry(p.tier).or_default().push(p);
    }
    let total: usize = tiers.values().map(Vec::len).sum();

    let mut engine = Engine {
        client: client.clone(),
        opts,
        discovery: None,
        pending_crd_kinds: HashSet::new(),
        pending_namespaces: HashSet::new(),
        done: 0,
        total,
        progress,
    };
    let crd_tier = order::tier("customresourcedefinitions", "apiextensions.k8s.io");
    let ns_tier = order::tier("namespaces", "");
    let pvc_tier = order::tier("persistentvolumeclaims", "");
    let mut restored_volumes: Vec<RestoredVolume> = Vec::new();
    // Claims whose data did not come back: what mounts them is not applied.
    let mut empty_claims: BTreeSet<(String, String)> = BTreeSet::new();
    let groups: BTreeSet<String> = tiers.values().flatten().map(|p| p.group.clone()).collect();
    for (tier, items) in tiers {
        if engine.discovery.is_none() {
            engine.discover(&groups).await?;
        }
        let (items, held): (Vec<Planned>, Vec<Planned>) = items.into_iter().partition(|p| {
            mounted_claims(p).iter().all(|c| {
                !empty_claims.contains(&(p.namespace.clone().unwrap_or_default(), c.clone()))
            })
        });
        for p in held {
            let reason = format!(
                "not applied: it mounts a claim whose data could not be restored ({})",
                mounted_claims(&p)
                    .into_iter()
                    .filter(|c| empty_claims
                        .contains(&(p.namespace.clone().unwrap_or_default(), c.clone())))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            lines.push(line(&p, RestoreAction::Skipped, Some(reason)));
        }
        let mut results = engine.apply_tier(items).await;
        if tier == pvc_tier
            && !opts.dry_run
            && let Some(data) = &opts.volume_data
        {
            fill_claims(
                client,
                data,
                &to_fill,
                &mut results,
                &mut restored_volumes,
                &mut empty_claims,
                progress,
            )
            .await;
        }
        if tier == crd_tier {
            let crds: Vec<(String, Option<String>)> = results
                .iter()
                .filter(|(_, l)| l.action != RestoreAction::Failed)
                .map(|(p, _)| (p.name.clone(), None))
                .collect();
            let mut results = results;
            if !opts.dry_run {
                let failures = wait_established(client, &crds, opts.crd_timeout).await;
                for (p, l) in &mut results {
                    if let Some(reason) = failures.get(&p.name) {
                        l.action = RestoreAction::Failed;
                        l.reason = Some(reason.clone());
                    }
                }
            }
            let mut wanted = Vec::new();
            for (p, l) in &results {
                if l.action == RestoreAction::Failed {
                    continue;
                }
                let Some(gk) = crd_group_kind(&p.obj) else {
                    continue;
                };
                if opts.dry_run && l.action == RestoreAction::Created {
                    engine.pending_crd_kinds.insert(gk);
                } else if groups.contains(&gk.0) {
                    wanted.push(gk);
                }
            }
            lines.extend(results.into_iter().map(|(p, l)| (p.tier, l)));
            engine.discover_until_served(&groups, &wanted).await?;
            continue;
        }
        if tier == ns_tier && opts.dry_run {
            for (p, l) in &results {
                if l.action == RestoreAction::Created {
                    engine.pending_namespaces.insert(p.name.clone());
                }
            }
        }
        lines.extend(
            results
                .into_iter()
                .filter(|(p, l)| !(p.synthesized && l.action == RestoreAction::Skipped))
                .map(|(p, l)| (p.tier, l)),
        );
    }

    // The claims restored without the data the backup holds: listed with
    // the volumes (a dry run lists them on the claims' lines).
    if !opts.dry_run {
        restored_volumes.extend(without_data.into_iter().filter(|v| {
            lines.iter().any(|(_, l)| {
                l.resource == "persistentvolumeclaims"
                    && l.namespace.as_deref() == Some(v.namespace.as_str())
                    && l.name == v.pvc
                    && l.action == RestoreAction::Created
            })
        }));
    }

    // Restore hooks run in the pods of the workloads this restore wrote.
    let mut hooks = crate::restore_hooks::HookRuns::default();
    if !opts.dry_run {
        let written: Vec<crate::restore_hooks::Target> = hook_targets
            .into_iter()
            .filter(|t| {
                let resource = match t.kind.as_str() {
                    "Deployment" => "deployments.apps",
                    "StatefulSet" => "statefulsets.apps",
                    _ => "pods",
                };
                lines.iter().any(|(_, l)| {
                    l.resource == resource
                        && l.namespace.as_deref() == Some(t.namespace.as_str())
                        && l.name == t.name
                        && matches!(l.action, RestoreAction::Created | RestoreAction::Updated)
                })
            })
            .collect();
        if !written.is_empty() {
            progress(Progress::Hooks {
                workloads: written.len(),
            });
            hooks = crate::restore_hooks::run(client, &written, reader).await;
        }
    }

    lines.sort_by(|(ta, a), (tb, b)| {
        (ta, &a.resource, &a.namespace, &a.name).cmp(&(tb, &b.resource, &b.namespace, &b.name))
    });
    let mut counts = RestoreCounts::default();
    for (_, l) in &lines {
        match l.action {
            RestoreAction::Created => counts.created += 1,
            RestoreAction::Updated => counts.updated += 1,
            RestoreAction::Skipped => counts.skipped += 1,
            RestoreAction::Failed => counts.failed += 1,
        }
    }
    Ok(RestoreOutcome {
        dry_run: opts.dry_run,
        missing_prerequisites,
        counts,
        items: lines.into_iter().map(|(_, l)| l).collect(),
        volumes: restored_volumes,
        hooks,
    })
}

/// A restored object that restore hooks may target: its kind and what
/// the hooks see of it (SOURCE namespace, pod template).
fn hooked_workload(
    resource: &str,
    group: &str,
    name: &str,
    namespace: Option<&str>,
    obj: &Value,
) -> Option<(&'static str, lifeboat_core::hooks::restore::Workload)> {
    let (kind, meta, spec) = match (group, resource) {
        ("apps", "deployments") => (
            "Deployment",
            "/spec/template/metadata",
            "/spec/template/spec",
        ),
        ("apps", "statefulsets") => (
            "StatefulSet",
            "/spec/template/metadata",
            "/spec/template/spec",
        ),
        ("", "pods") => ("Pod", "/metadata", "/spec"),
        _ => return None,
    };
    let map = |p: &str| -> BTreeMap<String, String> {
        obj.pointer(p)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect()
    };
    let containers = obj
        .pointer(&format!("{spec}/containers"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name")?.as_str().map(str::to_string))
        .collect();
    Some((
        kind,
        lifeboat_core::hooks::restore::Workload {
            namespace: namespace?.to_string(),
            kind: kind.to_string(),
            name: name.to_string(),
            labels: map(&format!("{meta}/labels")),
            annotations: map(&format!("{meta}/annotations")),
            containers,
        },
    ))
}

/// Where the data of a claim of the backup is.
#[derive(Debug, Clone)]
struct DataSource {
    /// The restic snapshot id (empty: the backup copied no data).
    snapshot: String,
    /// The CSI snapshot the backup kept in its cluster.
    kept: Option<KeptSnapshot>,
    /// `kept` is in this cluster: the claim is filled from it (faster than
    /// a mover reading the repository), else from `snapshot`.
    local: bool,
    /// `snapshot` is in Velero's restic repository of the namespace.
    velero: bool,
}

impl DataSource {
    /// What the restore does for the claim, as its plan line says.
    fn describe(&self) -> String {
        match (&self.kept, self.local) {
            (Some(k), true) => format!(
                "a fresh volume, from the kept CSI snapshot (VolumeSnapshotContent {})",
                k.content
            ),
            _ if !self.snapshot.is_empty() && self.velero => format!(
                "a fresh volume, filled from Velero's restic snapshot {}",
                self.snapshot.get(..8).unwrap_or(&self.snapshot)
            ),
            _ if !self.snapshot.is_empty() => format!(
                "a fresh volume, filled from volume snapshot {}",
                self.snapshot.get(..8).unwrap_or(&self.snapshot)
            ),
            (kept, _) => format!(
                "NOT restorable here: {}",
                not_here(kept.as_ref().map_or("", |k| k.content.as_str()))
            ),
        }
    }
}

/// Why a `snapshot` volume cannot be restored in this cluster.
fn not_here(content: &str) -> String {
    format!(
        "its data is a `snapshot` (method snapshot): a CSI snapshot kept in the storage system \
         of the cluster it was backed up in (VolumeSnapshotContent {content}), which this cluster \
         does not have; a `snapshot` backup restores only into that cluster and its storage — \
         protect the claim by `snapshotMove` to restore it anywhere"
    )
}

/// Makes a restored claim ask for a fresh volume that only the restore's
/// filled volume matches: no `volumeName`, no provisioning annotations, no
/// data source, and a selector no other volume carries (provisioners
/// leave claims with selectors alone).
fn fresh_claim(obj: &mut Value, restore: &str, namespace: &str, pvc: &str) {
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        for k in ["volumeName", "dataSource", "dataSourceRef"] {
            spec.remove(k);
        }
        spec.insert(
            "selector".into(),
            volumes::restore_selector(restore, namespace, pvc),
        );
    }
    if let Some(a) = obj
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        for k in PROVISIONING_ANNOTATIONS {
            a.remove(*k);
        }
    }
}

/// Checks a claim restore before anything is applied: every listed claim
/// is a claim of the backup (else the error lists the backup's claims) and
/// its data is restorable (`with_data`; none without volume data).
async fn check_claims(
    reader: &impl RestoreSource,
    c: &ClaimSelection,
    with_data: &BTreeMap<(String, String), DataSource>,
    volume_data: bool,
) -> Result<(), RestoreError> {
    let known = reader.claims().await.map_err(RestoreError::Read)?;
    let join = |set: &mut dyn Iterator<Item = &(String, String)>| {
        set.map(|(ns, n)| format!("{ns}/{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let unknown: Vec<&(String, String)> = c.claims.difference(&known).collect();
    if !unknown.is_empty() {
        return Err(RestoreError::UnknownClaims {
            unknown: join(&mut unknown.into_iter()),
            known: if known.is_empty() {
                "none".into()
            } else {
                join(&mut known.iter())
            },
        });
    }
    let without: Vec<String> = c
        .claims
        .iter()
        .filter(|k| !volume_data || !with_data.contains_key(*k))
        .map(|(ns, n)| {
            let why = match reader
                .volumes()
                .iter()
                .find(|v| &v.namespace == ns && &v.pvc == n)
            {
                _ if !volume_data => "volume data is not restored".to_string(),
                Some(v) => match &v.error {
                    Some(e) => format!("its volume {:?}: {e}", v.phase),
                    None => format!("its volume is {:?}", v.phase),
                },
                None => "the backup has its object only (no volume method protected it)".into(),
            };
            format!("{ns}/{n} ({why})")
        })
        .collect();
    if !without.is_empty() {
        return Err(RestoreError::ClaimsWithoutData {
            claims: without.join("; "),
        });
    }
    Ok(())
}

/// The pod spec of a workload (its template's) or pod that has volumes.
fn pod_spec(p: &Planned) -> Option<&Value> {
    [
        "/spec/template/spec",
        "/spec/jobTemplate/spec/template/spec",
        "/spec",
    ]
    .iter()
    .find_map(|ptr| p.obj.pointer(ptr).filter(|s| s.get("volumes").is_some()))
}

/// The claims a workload or pod mounts (`persistentVolumeClaim.claimName`
/// in its pod spec), and a StatefulSet's claims from its
/// `volumeClaimTemplates`: `<template>-<set>-<ordinal>` for each ordinal
/// it runs (from `spec.ordinals.start`, `spec.replicas` of them, default 1).
fn mounted_claims(p: &Planned) -> Vec<String> {
    let mut claims: Vec<String> = pod_spec(p)
        .and_then(|s| s["volumes"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|v| {
            v.pointer("/persistentVolumeClaim/claimName")
                .and_then(Value::as_str)
        })
        .map(str::to_string)
        .collect();
    if p.kind == "StatefulSet" {
        let spec = &p.obj["spec"];
        let start = spec["ordinals"]["start"].as_i64().unwrap_or(0).max(0);
        let replicas = spec["replicas"].as_i64().unwrap_or(1).max(0);
        for t in spec["volumeClaimTemplates"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let Some(template) = t.pointer("/metadata/name").and_then(Value::as_str) else {
                continue;
            };
            claims.extend((start..start + replicas).map(|i| format!("{template}-{}-{i}", p.name)));
        }
    }
    claims
}

/// Whether the live claim is one an interrupted run of `restore` created
/// and had not filled ([`volumes::awaits_restore`]).
async fn unfilled_claim_of(client: &kube::Client, restore: &str, claim: &ClaimToFill) -> bool {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &claim.namespace);
    matches!(api.get_opt(&claim.pvc).await, Ok(Some(live)) if volumes::awaits_restore(&live, restore))
}

/// Fills the claims this restore created with their data, one after the
/// other; a claim that existed already is never written to, unless an
/// interrupted run of this restore created it and had not filled it.
async fn fill_claims(
    client: &kube::Client,
    data: &VolumeData,
    to_fill: &[ClaimToFill],
    results: &mut [(Planned, RestoreItem)],
    restored: &mut Vec<RestoredVolume>,
    empty: &mut BTreeSet<(String, String)>,
    progress: &(dyn Fn(Progress) + Send + Sync),
) {
    for claim in to_fill {
        let Some((_, item)) = results.iter_mut().find(|(p, _)| {
            p.namespace.as_deref() == Some(claim.namespace.as_str()) && p.name == claim.pvc
        }) else {
            continue;
        };
        let ours = match item.action {
            RestoreAction::Created => true,
            // It existed: its data is never overwritten — unless it is the
            // claim an interrupted run of this very restore created and had
            // not filled yet (it still waits, Pending, on this restore's
            // selector, so nothing can have written to it).
            RestoreAction::Skipped | RestoreAction::Updated => {
                unfilled_claim_of(client, &data.restore, claim).await
            }
            _ => false,
        };
        if !ours {
            continue;
        }
        let report = |p: VolumeProgress| {
            progress(Progress::Volume {
                namespace: claim.namespace.clone(),
                pvc: claim.pvc.clone(),
                progress: p,
            })
        };
        // A kept snapshot cannot fill a WaitForFirstConsumer claim yet:
        // such a claim with moved data too is filled by a mover instead.
        let local = claim.local
            && (claim.snapshot.is_empty()
                || !volumes::claim_waits_for_first_consumer(client, &claim.namespace, &claim.pvc)
                    .await
                    .unwrap_or(true));
        let result = match (&claim.kept, data.keys.get(&claim.source_namespace)) {
            (Some(kept), _) if local => {
                volumes::restore_claim_from_kept(
                    client,
                    claim,
                    kept,
                    &data.restore,
                    &data.movers,
                    &report,
                )
                .await
            }
            _ if claim.snapshot.is_empty() => Err(volumes::VolumeError::Invalid(not_here(
                claim.kept.as_ref().map_or("", |k| k.content.as_str()),
            ))),
            (_, Some(key)) => {
                volumes::restore_claim(
                    client,
                    claim,
                    &data.restore,
                    &data.access,
                    key,
                    &data.movers,
                    &report,
                )
                .await
            }
            (_, None) => Err(volumes::VolumeError::Invalid(format!(
                "no key for the volume repository of namespace {}",
                claim.source_namespace
            ))),
        };
        let mut entry = RestoredVolume {
            namespace: claim.namespace.clone(),
            pvc: claim.pvc.clone(),
            source_namespace: claim.source_namespace.clone(),
            snapshot: match (&claim.kept, local) {
                (Some(k), true) => k.content.clone(),
                _ => claim.snapshot.clone(),
            },
            from_kept: local && claim.kept.is_some(),
            phase: VolumePhase::Completed,
            bytes: 0,
            files: 0,
            duration_ms: 0,
            node: None,
            error: None,
        };
        match result {
            Ok(r) => {
                entry.bytes = r.bytes;
                entry.files = r.files;
                entry.duration_ms = (r.duration_seconds * 1000.0) as u64;
                entry.node = r.node;
            }
            Err(e) => {
                let reason = format!("created, but its data could not be restored: {e}");
                entry.phase = VolumePhase::Failed;
                entry.error = Some(e.to_string());
                item.action = RestoreAction::Failed;
                item.reason = Some(reason);
                empty.insert((claim.namespace.clone(), claim.pvc.clone()));
            }
        }
        restored.push(entry);
    }
}

/// The backup's prerequisites the target does not provide: CRDs it does
/// not serve (unless this restore creates them) and operators without a
/// Subscription (or without OLM at all), decided as `lifeboat plan`
/// decides them ([`lifeboat_core::prerequisites::missing`]).
async fn missing_prerequisites(
    client: &kube::Client,
    prerequisites: &[Prerequisite],
    planned: &[Planned],
) -> Result<Vec<String>, RestoreError> {
    if prerequisites.is_empty() {
        return Ok(Vec::new());
    }
    let restored_crds: HashSet<&str> = planned
        .iter()
        .filter(|p| p.key == "customresourcedefinitions.apiextensions.k8s.io")
        .map(|p| p.name.as_str())
        .collect();
    let prerequisites: Vec<_> = prerequisites
        .iter()
        .map(crate::inventory::prerequisite)
        .collect();
    let groups = lifeboat_core::prerequisites::groups(&prerequisites);
    let allow: Vec<&str> = groups.iter().map(String::as_str).collect();
    let discovery = retry_discovery(client, &allow).await?;
    let provided = crate::inventory::provided_by(client, &discovery, &groups).await;
    Ok(
        lifeboat_core::prerequisites::missing(&prerequisites, &provided, |n| {
            restored_crds.contains(n)
        })
        .into_iter()
        .map(|m| m.message)
        .collect(),
    )
}

/// `(group, kind)` a CRD object defines.
fn crd_group_kind(obj: &Value) -> Option<(String, String)> {
    let g = obj.pointer("/spec/group")?.as_str()?;
    let k = obj.pointer("/spec/names/kind")?.as_str()?;
    Some((g.to_string(), k.to_string()))
}

struct Engine<'a> {
    client: kube::Client,
    opts: &'a RestoreOptions,
    discovery: Option<Discovery>,
    /// Dry run: kinds of CRDs that would be created.
    pending_crd_kinds: HashSet<(String, String)>,
    /// Dry run: namespaces that would be created.
    pending_namespaces: HashSet<String>,
    done: usize,
    total: usize,
    progress: &'a (dyn Fn(Progress) + Send + Sync),
}

impl Engine<'_> {
    async fn discover(&mut self, groups: &BTreeSet<String>) -> Result<(), RestoreError> {
        let allow: Vec<&str> = groups.iter().map(String::as_str).collect();
        let d = retry_discovery(&self.client, &allow).await?;
        self.discovery = Some(d);
        Ok(())
    }

    /// After CRDs: refresh discovery until every restored CRD's kind is
    /// served (or the CRD timeout passes; unresolved kinds then fail).
    async fn discover_until_served(
        &mut self,
        groups: &BTreeSet<String>,
        wanted: &[(String, String)],
    ) -> Result<(), RestoreError> {
        let deadline = tokio::time::Instant::now() + self.opts.crd_timeout;
        loop {
            self.discover(groups).await?;
            let served = |d: &Discovery| {
                wanted.iter().all(|(g, k)| {
                    d.get(g)
                        .is_some_and(|api| api.recommended_kind(k).is_some())
                })
            };
            if self.discovery.as_ref().is_none_or(served) || tokio::time::Instant::now() >= deadline
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn resolve(&self, p: &Planned) -> Result<(ApiResource, bool), String> {
        let (group, version) = match p.api_version.split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), p.api_version.clone()),
        };
        let gvk = GroupVersionKind::gvk(&group, &version, &p.kind);
        match self.discovery.as_ref().and_then(|d| d.resolve_gvk(&gvk)) {
            Some((ar, caps)) => Ok((ar, caps.scope == Scope::Namespaced)),
            None => Err(format!(
                "the target cluster does not serve {} {}; install its CustomResourceDefinition \
                 or operator first, or exclude {} from the restore",
                p.api_version, p.kind, p.key
            )),
        }
    }

    async fn apply_tier(&mut self, items: Vec<Planned>) -> Vec<(Planned, RestoreItem)> {
        let parallelism = self.opts.parallelism.max(1);
        let this = &*self;
        let mut stream = futures::stream::iter(items.into_iter().map(|p| async move {
            let l = this.apply_one(&p).await;
            (p, l.1)
        }))
        .buffer_unordered(parallelism);
        let mut out = Vec::new();
        let mut done = self.done;
        while let Some((p, l)) = stream.next().await {
            done += 1;
            (self.progress)(Progress::Applied {
                done,
                total: self.total,
                action: l.action,
            });
            out.push((p, l));
        }
        drop(stream);
        self.done = done;
        out
    }

    async fn apply_one(&self, p: &Planned) -> Line {
        let (ar, namespaced) = match self.resolve(p) {
            Ok(r) => r,
            Err(reason) => {
                let pending = self.opts.dry_run
                    && p.api_version.split_once('/').is_some_and(|(g, _)| {
                        self.pending_crd_kinds
                            .contains(&(g.to_string(), p.kind.clone()))
                    });
                if pending {
                    return line(
                        p,
                        RestoreAction::Created,
                        Some(
                            "dry run: its CustomResourceDefinition would be created first, so \
                             the server could not validate it"
                                .into(),
                        ),
                    );
                }
                return line(p, RestoreAction::Failed, Some(reason));
            }
        };
        let api: Api<DynamicObject> = match (&p.namespace, namespaced) {
            (Some(ns), true) => Api::namespaced_with(self.client.clone(), ns, &ar),
            (None, false) => Api::all_with(self.client.clone(), &ar),
            (Some(_), false) | (None, true) => {
                let reason = format!(
                    "{} {} is {} in the target cluster but was {} in the backup",
                    p.api_version,
                    p.kind,
                    if namespaced {
                        "namespaced"
                    } else {
                        "cluster-scoped"
                    },
                    if namespaced {
                        "cluster-scoped"
                    } else {
                        "namespaced"
                    },
                );
                return line(p, RestoreAction::Failed, Some(reason));
            }
        };
        let obj: DynamicObject = match serde_json::from_value(p.obj.clone()) {
            Ok(o) => o,
            Err(e) => {
                return line(
                    p,
                    RestoreAction::Failed,
                    Some(format!("the backed-up object is malformed: {e}")),
                );
            }
        };
        let pp = PostParams {
            dry_run: self.opts.dry_run,
            field_manager: Some("lifeboat".into()),
        };
        match with_retry(|| api.create(&pp, &obj)).await {
            Ok(_) => {
                let reason = p
                    .synthesized
                    .then(|| "created because restored objects live in it".to_string());
                line(p, RestoreAction::Created, reason)
            }
            Err(kube::Error::Api(s)) if s.code == 409 || s.is_already_exists() => {
                if p.synthesized {
                    return line(p, RestoreAction::Skipped, Some("exists".into()));
                }
                match p.on_exists {
                    OnExists::Options => self.existing(p, &api).await,
                    OnExists::MergeScc => self.merge_scc(p, &api).await,
                    OnExists::KeepTargets => line(
                        p,
                        RestoreAction::Skipped,
                        Some(
                            "the target's OpenShift controller manager already created it for                              the namespace"
                                .into(),
                        ),
                    ),
                }
            }
            Err(kube::Error::Api(s))
                if s.code == 404
                    && self.opts.dry_run
                    && p.namespace
                        .as_ref()
                        .is_some_and(|ns| self.pending_namespaces.contains(ns)) =>
            {
                line(
                    p,
                    RestoreAction::Created,
                    Some(format!(
                        "dry run: namespace {} would be created first, so the server could not \
                         validate this object",
                        p.namespace.as_deref().unwrap_or_default()
                    )),
                )
            }
            Err(e) => line(p, RestoreAction::Failed, Some(describe(&e, "create"))),
        }
    }

    /// A user-created SCC that exists: adds the backed-up grants to it.
    async fn merge_scc(&self, p: &Planned, api: &Api<DynamicObject>) -> Line {
        let live = match with_retry(|| api.get(&p.name)).await {
            Ok(l) => l,
            Err(e) => return line(p, RestoreAction::Failed, Some(describe(&e, "get"))),
        };
        let live = match serde_json::to_value(&live) {
            Ok(v) => v,
            Err(e) => {
                return line(
                    p,
                    RestoreAction::Failed,
                    Some(format!("the live object is malformed: {e}")),
                );
            }
        };
        let Some((patch, changes)) = openshift::scc_merge(&live, &p.obj) else {
            return line(
                p,
                RestoreAction::Skipped,
                Some("exists and already grants every backed-up user and group".into()),
            );
        };
        let pp = PatchParams {
            dry_run: self.opts.dry_run,
            field_manager: Some("lifeboat".into()),
            ..PatchParams::default()
        };
        let patch = Patch::Merge(&patch);
        match with_retry(|| api.patch(&p.name, &pp, &patch)).await {
            Ok(_) => {
                let mut l = line(
                    p,
                    RestoreAction::Updated,
                    Some("exists; the backed-up grants were merged into it".into()),
                );
                l.1.changes.extend(changes);
                l
            }
            Err(e) => line(p, RestoreAction::Failed, Some(describe(&e, "patch"))),
        }
    }

    async fn existing(&self, p: &Planned, api: &Api<DynamicObject>) -> Line {
        match self.opts.existing {
            ExistingResources::Skip => line(p, RestoreAction::Skipped, Some("exists".into())),
            ExistingResources::Fail => line(
                p,
                RestoreAction::Failed,
                Some(
                    "already exists in the target cluster (existingResources: Fail); delete it \
                     or restore with existingResources Skip or Update"
                        .into(),
                ),
            ),
            ExistingResources::Update => {
                let live = match with_retry(|| api.get(&p.name)).await {
                    Ok(l) => l,
                    Err(e) => {
                        return line(p, RestoreAction::Failed, Some(describe(&e, "get")));
                    }
                };
                let mut live = match serde_json::to_value(&live) {
                    Ok(v) => v,
                    Err(e) => {
                        return line(
                            p,
                            RestoreAction::Failed,
                            Some(format!("the live object is malformed: {e}")),
                        );
                    }
                };
                crate::transform::strip_server_fields(&mut live);
                let mut merged = live.clone();
                merge_patch(&mut merged, &p.obj);
                if merged == live {
                    return line(p, RestoreAction::Skipped, Some("unchanged".into()));
                }
                let pp = PatchParams {
                    dry_run: self.opts.dry_run,
                    field_manager: Some("lifeboat".into()),
                    ..PatchParams::default()
                };
                let patch = Patch::Merge(&p.obj);
                match with_retry(|| api.patch(&p.name, &pp, &patch)).await {
                    Ok(_) => line(
                        p,
                        RestoreAction::Updated,
                        Some("patched to the backed-up object".into()),
                    ),
                    Err(e) => line(p, RestoreAction::Failed, Some(describe(&e, "patch"))),
                }
            }
        }
    }
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in patch {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => matches!(s.code, 429 | 500 | 502 | 503 | 504),
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

fn describe(e: &kube::Error, verb: &str) -> String {
    match e {
        kube::Error::Api(s) => format!(
            "{verb} rejected by the API server ({} {}): {}",
            s.code, s.reason, s.message
        ),
        other => format!("{verb} failed after {MAX_ATTEMPTS} attempts: {other}"),
    }
}

async fn with_retry<T, F, Fut>(mut f: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut delay = Duration::from_millis(50);
    let mut attempt = 1;
    loop {
        match f().await {
            Err(e) if attempt < MAX_ATTEMPTS && transient(&e) => {
                tracing::debug!(attempt, error = %e, "transient error, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                attempt += 1;
            }
            r => return r,
        }
    }
}

async fn retry_discovery(client: &kube::Client, allow: &[&str]) -> Result<Discovery, RestoreError> {
    let mut delay = Duration::from_millis(50);
    let mut attempt = 1;
    loop {
        match Discovery::new(client.clone()).filter(allow).run().await {
            Ok(d) => return Ok(d),
            Err(e) if attempt < MAX_ATTEMPTS && transient(&e) => {
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            Err(e) => return Err(RestoreError::Discovery(e)),
        }
    }
}

/// Waits until each CRD is Established; returns failure reasons by name.
async fn wait_established(
    client: &kube::Client,
    crds: &[(String, Option<String>)],
    timeout: Duration,
) -> BTreeMap<String, String> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pending: BTreeSet<String> = crds.iter().map(|(n, _)| n.clone()).collect();
    let mut last_error: BTreeMap<String, String> = BTreeMap::new();
    while !pending.is_empty() {
        let mut still = BTreeSet::new();
        for name in &pending {
            match api.get(name).await {
                Ok(crd) => {
                    let established = crd
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| {
                            c.iter()
                                .any(|c| c.type_ == "Established" && c.status == "True")
                        });
                    if !established {
                        still.insert(name.clone());
                    }
                }
                Err(e) => {
                    last_error.insert(name.clone(), e.to_string());
                    still.insert(name.clone());
                }
            }
        }
        pending = still;
        if pending.is_empty() || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pending
        .into_iter()
        .map(|n| {
            let extra = last_error
                .get(&n)
                .map(|e| format!(" (last error: {e})"))
                .unwrap_or_default();
            let reason = format!(
                "the CustomResourceDefinition was not Established within {}s{extra}; check its \
                 conditions with `kubectl describe crd {n}` or raise the CRD timeout",
                timeout.as_secs()
            );
            (n, reason)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_claim_with_data_asks_for_a_fresh_volume_only_the_restore_provides() {
        let mut pvc = json!({"metadata": {"name": "data", "annotations": {
                "pv.kubernetes.io/bind-completed": "yes",
                "volume.kubernetes.io/storage-provisioner": "csi.example",
                "team": "shop"}},
            "spec": {"volumeName": "pvc-1", "storageClassName": "gp3",
                     "dataSource": {"kind": "VolumeSnapshot", "name": "old"}}});
        fresh_claim(&mut pvc, "r1", "shop", "data");
        assert_eq!(pvc["metadata"]["annotations"], json!({"team": "shop"}));
        assert_eq!(
            pvc["spec"],
            json!({"storageClassName": "gp3",
                   "selector": volumes::restore_selector("r1", "shop", "data")})
        );
    }

    #[test]
    fn mounted_claims_are_found_in_workloads_and_pods() {
        let planned = |obj: Value| Planned {
            tier: 0,
            key: String::new(),
            resource: String::new(),
            group: String::new(),
            api_version: String::new(),
            kind: String::new(),
            namespace: Some("shop".into()),
            name: "x".into(),
            obj,
            synthesized: false,
            changes: Vec::new(),
            on_exists: OnExists::Options,
        };
        let vols = json!({"volumes": [{"name": "a", "persistentVolumeClaim": {"claimName": "data"}},
                                      {"name": "b", "emptyDir": {}}]});
        assert_eq!(
            mounted_claims(&planned(json!({"spec": {"template": {"spec": vols}}}))),
            ["data"]
        );
        assert_eq!(
            mounted_claims(&planned(
                json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": vols}}}}})
            )),
            ["data"]
        );
        assert_eq!(mounted_claims(&planned(json!({"spec": vols}))), ["data"]);
        let mut set = planned(json!({"spec": {"replicas": 2, "ordinals": {"start": 1},
            "volumeClaimTemplates": [{"metadata": {"name": "pg"}}]}}));
        set.kind = "StatefulSet".into();
        set.name = "db".into();
        assert_eq!(mounted_claims(&set), ["pg-db-1", "pg-db-2"]);
        assert!(mounted_claims(&planned(json!({"data": {}}))).is_empty());
    }

    #[test]
    fn merge_patch_rfc7386() {
        let mut t = json!({"a": 1, "b": {"c": 2, "d": 3}});
        merge_patch(&mut t, &json!({"b": {"c": null, "e": 4}, "f": [1]}));
        assert_eq!(t, json!({"a": 1, "b": {"d": 3, "e": 4}, "f": [1]}));
    }

    #[test]
    fn phase_from_counts() {
        let mut o = RestoreOutcome {
            dry_run: false,
            missing_prerequisites: vec![],
            counts: RestoreCounts::default(),
            items: vec![],
            volumes: vec![],
            hooks: Default::default(),
        };
        assert_eq!(o.phase(), RestorePhase::Completed);
        // A hook with `onError: fail` that failed: PartiallyFailed.
        o.hooks.failed_restore = true;
        assert_eq!(o.phase(), RestorePhase::PartiallyFailed);
        o.hooks.failed_restore = false;
        o.counts.failed = 1;
        assert_eq!(o.phase(), RestorePhase::Failed);
        o.counts.created = 1;
        assert_eq!(o.phase(), RestorePhase::PartiallyFailed);
        // A claim whose data did not come back: PartiallyFailed.
        o.counts.failed = 0;
        o.volumes.push(RestoredVolume {
            namespace: "shop".into(),
            pvc: "data".into(),
            source_namespace: "shop".into(),
            snapshot: String::new(),
            from_kept: false,
            phase: VolumePhase::Failed,
            bytes: 0,
            files: 0,
            duration_ms: 0,
            node: None,
            error: Some("not restored: Kopia".into()),
        });
        assert_eq!(o.phase(), RestorePhase::PartiallyFailed);
    }
}
