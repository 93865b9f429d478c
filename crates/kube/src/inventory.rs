//! The cluster inventory volume planning needs: claims with their bound
//! volumes, storage classes, VolumeSnapshotClasses and the pods that mount
//! claims, listed through the API server and turned into
//! [`lifeboat_core::volumes::Inventory`] (observed state; the planner stays
//! pure).
//!
//! ```text
//! PVCs, PVs, StorageClasses, VolumeSnapshotClasses (optional), Pods ─▶ Inventory
//! ```
//!
//! [`provides`] looks, for the prerequisites of backups about to be
//! restored (the manifests' CRDs and OLM operators), at what the cluster
//! serves: discovery of those CRDs' API groups and its OLM Subscriptions.
//! `lifeboat plan` and the restore share it, and the decision
//! ([`lifeboat_core::prerequisites::missing`]).
//!
//! A cluster without the CSI snapshot CRDs (the VolumeSnapshotClass API
//! answers 404) gives `snapshot_classes: None`; every other failure is an
//! error, so a plan never reports claims as unprotected because a list
//! failed.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::core::GroupVersionKind;
use kube::discovery::Discovery;
use lifeboat_core::prerequisites::{self, OLM_GROUP, Olm, Prerequisite, Provided};
use lifeboat_core::quantity;
use lifeboat_core::volumes::{
    ClaimInfo, Inventory, PodClaimVolume, PodInfo, SnapshotClassInfo, StorageClassInfo,
    VeleroSchedule, VolumeMode,
};
use serde::de::DeserializeOwned;

/// Why the inventory could not be collected.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error(
        "could not list {what}: {source}; check that the API server is reachable and that the \
         credentials may list {what} in every namespace"
    )]
    List {
        what: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error(
        "could not discover the API groups {groups}: {source}; check that the API server is \
         reachable"
    )]
    Discovery {
        groups: String,
        #[source]
        source: kube::Error,
    },
}

/// Objects listed per request.
const PAGE: u32 = 500;

pub(crate) async fn list_all<K>(api: Api<K>, what: &'static str) -> Result<Vec<K>, InventoryError>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(PAGE);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api
            .list(&lp)
            .await
            .map_err(|source| InventoryError::List { what, source })?;
        out.extend(page.items);
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            return Ok(out);
        }
    }
}

fn map(m: Option<BTreeMap<String, String>>) -> BTreeMap<String, String> {
    m.unwrap_or_default()
}

/// Every pod of the cluster behind `client`, with or without claims
/// (dump hooks run in any pod), its owner resolved as in [`inventory`].
pub async fn all_pods(client: &kube::Client) -> Result<Vec<PodInfo>, InventoryError> {
    let (pods, replica_sets) = tokio::try_join!(
        list_all(Api::<Pod>::all(client.clone()), "pods"),
        list_all(Api::<ReplicaSet>::all(client.clone()), "replicasets.apps"),
    )?;
    let deployments = deployments_of(replica_sets);
    Ok(pods
        .into_iter()
        .filter_map(|p| pod_info(p, &deployments))
        .collect())
}

/// A ReplicaSet's controller (its Deployment), by namespace and name.
fn deployments_of(replica_sets: Vec<ReplicaSet>) -> HashMap<(String, String), String> {
    replica_sets
        .into_iter()
        .filter_map(|rs| {
            let owner = controller_of(&rs.metadata)?;
            Some(((rs.metadata.namespace?, rs.metadata.name?), owner))
        })
        .collect()
}

/// Lists what volume planning needs from the cluster behind `client`
/// (its pods: those that mount claims).
pub async fn inventory(client: &kube::Client) -> Result<Inventory, InventoryError> {
    let (claims, volumes, classes, pods, replica_sets, snapshot_classes, velero_schedules, vms) = tokio::try_join!(
        list_all(
            Api::<PersistentVolumeClaim>::all(client.clone()),
            "persistentvolumeclaims"
        ),
        list_all(
            Api::<PersistentVolume>::all(client.clone()),
            "persistentvolumes"
        ),
        list_all(
            Api::<StorageClass>::all(client.clone()),
            "storageclasses.storage.k8s.io"
        ),
        list_all(Api::<Pod>::all(client.clone()), "pods"),
        list_all(Api::<ReplicaSet>::all(client.clone()), "replicasets.apps"),
        snapshot_classes(client),
        velero_schedules(client),
        crate::kubevirt::vms(client),
    )?;
    let drivers: HashMap<String, Option<String>> = volumes
        .into_iter()
        .filter_map(|pv| {
            let name = pv.metadata.name?;
            let driver = pv.spec.and_then(|s| s.csi).map(|c| c.driver);
            Some((name, driver))
        })
        .collect();
    let deployments = deployments_of(replica_sets);
    Ok(Inventory {
        claims: claims.into_iter().map(|c| claim(c, &drivers)).collect(),
        storage_classes: classes
            .into_iter()
            .filter_map(|c| {
                Some(StorageClassInfo {
                    name: c.metadata.name?,
                    provisioner: c.provisioner,
                })
            })
            .collect(),
        snapshot_classes,
        pods: pods
            .into_iter()
            .filter_map(|p| pod_info(p, &deployments))
            .filter(|p| !p.volumes.is_empty())
            .collect(),
        velero_schedules,
        vms,
        provides: None,
    })
}

/// Velero Schedules that are not paused. No Velero (404) or no right to
/// read its Schedules (403: deploy/ does not grant it) is none: the plan's
/// note about them is advice, not something protection depends on.
async fn velero_schedules(client: &kube::Client) -> Result<Vec<VeleroSchedule>, InventoryError> {
    let gvk = GroupVersionKind::gvk("velero.io", "v1", "Schedule");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "schedules");
    let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
    match list_all(api, "schedules.velero.io").await {
        Ok(list) => Ok(list
            .into_iter()
            .filter(|o| o.data["spec"]["paused"] != serde_json::Value::Bool(true))
            .map(|o| VeleroSchedule {
                namespace: o.metadata.namespace.clone().unwrap_or_default(),
                included_namespaces: o.data["spec"]["template"]["includedNamespaces"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|n| n.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
                name: o.metadata.name.unwrap_or_default(),
            })
            .collect()),
        Err(InventoryError::List {
            source: kube::Error::Api(s),
            ..
        }) if s.code == 404 || s.code == 403 => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

fn claim(c: PersistentVolumeClaim, drivers: &HashMap<String, Option<String>>) -> ClaimInfo {
    let spec = c.spec.unwrap_or_default();
    let status = c.status.unwrap_or_default();
    let storage =
        |m: Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>| {
            m.and_then(|m| m.get("storage").and_then(|q| quantity::parse_bytes(&q.0)))
                .and_then(|b| u64::try_from(b).ok())
        };
    let capacity =
        storage(status.capacity).or_else(|| storage(spec.resources.and_then(|r| r.requests)));
    let volume_name = spec.volume_name.filter(|v| !v.is_empty());
    ClaimInfo {
        namespace: c.metadata.namespace.unwrap_or_default(),
        name: c.metadata.name.unwrap_or_default(),
        uid: c.metadata.uid.unwrap_or_default(),
        labels: map(c.metadata.labels),
        annotations: map(c.metadata.annotations),
        storage_class: spec.storage_class_name.filter(|s| !s.is_empty()),
        capacity,
        access_modes: spec.access_modes.unwrap_or_default(),
        volume_mode: match spec.volume_mode.as_deref() {
            Some("Block") => VolumeMode::Block,
            _ => VolumeMode::Filesystem,
        },
        phase: status.phase.unwrap_or_else(|| "Pending".into()),
        csi_driver: volume_name
            .as_ref()
            .and_then(|v| drivers.get(v).cloned().flatten()),
        volume_name,
    }
}

/// `Kind/name` of an object's controller.
fn controller_of(m: &kube::api::ObjectMeta) -> Option<String> {
    m.owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| format!("{}/{}", o.kind, o.name))
}

/// The Running and other pods of `namespace` (whether they mount claims
/// or not), owners resolved as [`inventory`] does: what a backup-level
/// exec hook chooses its pod from.
pub async fn pods_in(
    client: &kube::Client,
    namespace: &str,
) -> Result<Vec<PodInfo>, InventoryError> {
    let (pods, replica_sets) = tokio::try_join!(
        list_all(Api::<Pod>::namespaced(client.clone(), namespace), "pods"),
        list_all(
            Api::<ReplicaSet>::namespaced(client.clone(), namespace),
            "replicasets.apps"
        ),
    )?;
    let deployments = deployments_of(replica_sets);
    Ok(pods
        .into_iter()
        .filter_map(|p| pod_info(p, &deployments))
        .collect())
}

/// A pod as volume planning and hooks see it, its owner a ReplicaSet's
/// Deployment where `deployments` knows it.
fn pod_info(p: Pod, deployments: &HashMap<(String, String), String>) -> Option<PodInfo> {
    let namespace = p.metadata.namespace.clone().unwrap_or_default();
    let owner = controller_of(&p.metadata).map(|o| match o.strip_prefix("ReplicaSet/") {
        Some(rs) => deployments
            .get(&(namespace.clone(), rs.to_string()))
            .cloned()
            .unwrap_or(o),
        None => o,
    });
    let spec = p.spec?;
    let containers = spec.containers.iter().map(|c| c.name.clone()).collect();
    let volumes: Vec<PodClaimVolume> = spec
        .volumes
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| {
            Some(PodClaimVolume {
                claim: v.persistent_volume_claim?.claim_name,
                name: v.name,
            })
        })
        .collect();
    Some(PodInfo {
        namespace,
        name: p.metadata.name.unwrap_or_default(),
        uid: p.metadata.uid.unwrap_or_default(),
        node: spec.node_name.filter(|n| !n.is_empty()),
        phase: p
            .status
            .and_then(|s| s.phase)
            .unwrap_or_else(|| "Pending".into()),
        annotations: map(p.metadata.annotations),
        volumes,
        labels: map(p.metadata.labels),
        owner,
        containers,
    })
}

/// The VolumeSnapshotClasses, or `None` when the API is not served.
async fn snapshot_classes(
    client: &kube::Client,
) -> Result<Option<Vec<SnapshotClassInfo>>, InventoryError> {
    let gvk = GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshotClass");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "volumesnapshotclasses");
    let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
    match list_all(api, "volumesnapshotclasses.snapshot.storage.k8s.io").await {
        Ok(list) => Ok(Some(
            list.into_iter()
                .filter_map(|o| {
                    Some(SnapshotClassInfo {
                        driver: o.data.get("driver")?.as_str()?.to_string(),
                        name: o.metadata.name?,
                        labels: map(o.metadata.labels),
                        annotations: map(o.metadata.annotations),
                    })
                })
                .collect(),
        )),
        Err(InventoryError::List {
            source: kube::Error::Api(s),
            ..
        }) if s.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// A manifest's prerequisite as planning sees it.
pub fn prerequisite(p: &lifeboat_store::Prerequisite) -> Prerequisite {
    Prerequisite {
        kind: match p.kind {
            lifeboat_store::PrerequisiteKind::CustomResourceDefinition => {
                prerequisites::PrerequisiteKind::CustomResourceDefinition
            }
            lifeboat_store::PrerequisiteKind::Operator => prerequisites::PrerequisiteKind::Operator,
        },
        name: p.name.clone(),
        namespace: p.namespace.clone(),
        detail: p.detail.clone(),
    }
}

/// What the cluster behind `client` provides of `prerequisites`: the
/// resources it serves in their CRDs' API groups, and the packages its
/// OLM Subscriptions subscribe to (when an operator is asked about).
pub async fn provides(
    client: &kube::Client,
    prerequisites: &[Prerequisite],
) -> Result<Provided, InventoryError> {
    let groups = prerequisites::groups(prerequisites);
    if groups.is_empty() {
        return Ok(Provided::default());
    }
    let allow: Vec<&str> = groups.iter().map(String::as_str).collect();
    let discovery = Discovery::new(client.clone())
        .filter(&allow)
        .run()
        .await
        .map_err(|source| InventoryError::Discovery {
            groups: allow.join(", "),
            source,
        })?;
    Ok(provided_by(client, &discovery, &groups).await)
}

/// [`provides`] with a discovery of (at least) `groups` already run.
pub(crate) async fn provided_by(
    client: &kube::Client,
    discovery: &Discovery,
    groups: &std::collections::BTreeSet<String>,
) -> Provided {
    // Every resource at its most stable version: a group's preferred
    // version need not serve them all (OLM's preferred version has no
    // Subscriptions, which are v1alpha1).
    let resources: Vec<_> = groups
        .iter()
        .filter_map(|g| discovery.get(g))
        .flat_map(|g| g.resources_by_stability())
        .collect();
    let subscriptions = groups
        .contains(OLM_GROUP)
        .then(|| {
            resources
                .iter()
                .find(|(ar, _)| ar.group == OLM_GROUP && ar.kind == "Subscription")
        })
        .flatten()
        .map(|(ar, _)| ar.clone());
    let resources = resources
        .iter()
        .map(|(ar, _)| format!("{}.{}", ar.plural, ar.group))
        .collect();
    let olm = match subscriptions {
        None => Olm::NotInstalled,
        Some(ar) => {
            let api = Api::<DynamicObject>::all_with(client.clone(), &ar);
            match list_all(api, "subscriptions.operators.coreos.com").await {
                Ok(list) => Olm::Installed {
                    packages: list
                        .iter()
                        .filter_map(|s| s.data.pointer("/spec/name")?.as_str())
                        .map(str::to_string)
                        .collect(),
                },
                Err(e) => Olm::Unreadable {
                    error: std::error::Error::source(&e)
                        .map_or_else(|| e.to_string(), ToString::to_string),
                },
            }
        }
    };
    Provided { resources, olm }
}
