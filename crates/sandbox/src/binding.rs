//! The PersistentVolume controller of kube-controller-manager (the binder):
//! claims bind to volumes, volumes are released and reclaimed.
//!
//! ```text
//! PVC/PV written ─▶ sync_claim / sync_volume (write path on create and
//!                   delete; the store-event loop [`run`] for every change)
//! sync_claim: spec.volumeName? ─▶ bind to that PV (static pre-binding)
//!             else a PV pre-bound to it (WaitForFirstConsumer or not),
//!             else WaitForFirstConsumer without a selected node ─▶ Pending,
//!             else the smallest Available PV of its class, mode, access
//!             modes, size (and the selected node) ─▶ bind
//!             else provisioner of ours ─▶ csi::provision ─▶ bind
//! sync_volume: claimRef none ─▶ Available; claim gone ─▶ Released,
//!              then Delete ─▶ PV (and its data) removed, Retain ─▶ kept
//! ```
//!
//! Annotations as the real binder sets them: `pv.kubernetes.io/bind-completed`
//! on bound claims, `pv.kubernetes.io/bound-by-controller` on the side the
//! controller filled in, `volume.kubernetes.io/storage-provisioner` (and its
//! beta twin) on claims left to a provisioner. Not modelled: the
//! `kubernetes.io/pvc-protection` and `kubernetes.io/pv-protection`
//! finalizers, Recycle, volume expansion.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::behaviours::{get, put};
use crate::csi::{self, Provisioned};
use crate::error::ApiError;
use crate::events::{self, EventType};
use crate::handlers::State;
use crate::meta::{meta_mut, meta_str};
use crate::server::Shared;

const COMPONENT: &str = "persistentvolume-controller";

/// Records an event unless the object already has the same one: the
/// controllers re-sync on every change, and a re-sync that changes nothing
/// must not write (the real recorder's aggregation, without the churn).
pub(crate) fn note(
    st: &mut State,
    obj: &Value,
    kind: EventType,
    reason: &str,
    message: &str,
    component: &str,
) {
    events::record_once(st, obj, kind, reason, message, component);
}

const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

/// Defaulting and validation of a new claim (as the API server does).
pub fn before_create_claim(st: &State, v: &mut Value) -> Result<(), ApiError> {
    if !v["spec"].is_object() {
        v["spec"] = json!({});
    }
    if v["spec"].get("storageClassName").is_none()
        && let Some(sc) = default_storage_class(st)
    {
        v["spec"]["storageClassName"] = json!(sc);
    }
    if v["spec"].get("volumeMode").is_none() {
        v["spec"]["volumeMode"] = json!("Filesystem");
    }
    // dataSource and dataSourceRef mirror each other (same namespace).
    let spec = &mut v["spec"];
    if spec["dataSource"].is_object() && spec.get("dataSourceRef").is_none() {
        spec["dataSourceRef"] = spec["dataSource"].clone();
    } else if spec["dataSourceRef"].is_object()
        && spec.get("dataSource").is_none()
        && spec["dataSourceRef"].get("namespace").is_none()
    {
        spec["dataSource"] = spec["dataSourceRef"].clone();
    }
    let name = meta_str(v, "name").to_string();
    let invalid = |field: &str, msg: &str| {
        ApiError::invalid_field("", "PersistentVolumeClaim", &name, field, msg)
    };
    if v["spec"]["accessModes"]
        .as_array()
        .is_none_or(|a| a.is_empty())
    {
        return Err(invalid(
            "spec.accessModes",
            "Required value: at least 1 access mode is required",
        ));
    }
    match v["spec"]["resources"]["requests"]["storage"].as_str() {
        None => return Err(invalid("spec.resources[storage]", "Required value")),
        Some(q) if csi::quantity::parse(q).is_none() => {
            return Err(invalid(
                "spec.resources.requests[storage]",
                &format!(
                    "Invalid value: \"{q}\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
                ),
            ));
        }
        Some(_) => {}
    }
    v["status"] = json!({"phase": "Pending"});
    Ok(())
}

fn default_storage_class(st: &State) -> Option<String> {
    st.store
        .table(&("storage.k8s.io".to_string(), "storageclasses".to_string()))
        .values()
        .map(|o| o.value())
        .find(|v| {
            v["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
        })
        .map(|v| meta_str(&v, "name").to_string())
}

fn claim_ref_matches(pv: &Value, claim: &Value) -> bool {
    let r = &pv["spec"]["claimRef"];
    r["name"] == claim["metadata"]["name"]
        && r["namespace"] == claim["metadata"]["namespace"]
        && r["uid"]
            .as_str()
            .is_none_or(|u| u.is_empty() || u == meta_str(claim, "uid"))
}

fn annotate(v: &mut Value, key: &str, value: &str) {
    let ann = meta_mut(v)
        .entry("annotations")
        .or_insert_with(|| json!({}));
    if !ann.is_object() {
        *ann = json!({});
    }
    ann[key] = json!(value);
}

fn set_phase(v: &mut Value, phase: &str) -> bool {
    if v["status"]["phase"] == phase {
        return false;
    }
    v["status"] = json!({"phase": phase, "lastPhaseTransitionTime": crate::meta::now()});
    true
}

/// Binds a claim and a volume to each other (both sides, idempotent).
fn bind(st: &mut State, pv: &Value, claim: &Value) {
    let mut pv = pv.clone();
    let before = pv.clone();
    if !claim_ref_matches(&pv, claim)
        || pv["spec"]["claimRef"]["uid"]
            .as_str()
            .is_none_or(str::is_empty)
    {
        if !claim_ref_matches(&pv, claim) {
            annotate(&mut pv, "pv.kubernetes.io/bound-by-controller", "yes");
        }
        pv["spec"]["claimRef"] = json!({"kind": "PersistentVolumeClaim", "apiVersion": "v1",
            "namespace": meta_str(claim, "namespace"), "name": meta_str(claim, "name"),
            "uid": meta_str(claim, "uid"), "resourceVersion": meta_str(claim, "resourceVersion")});
    }
    set_phase(&mut pv, "Bound");
    if pv != before {
        put(st, "", "persistentvolumes", pv.clone());
    }
    let mut c = claim.clone();
    let before = c.clone();
    if c["spec"]["volumeName"].as_str().is_none_or(str::is_empty) {
        c["spec"]["volumeName"] = json!(meta_str(&pv, "name"));
        annotate(&mut c, "pv.kubernetes.io/bound-by-controller", "yes");
    }
    annotate(&mut c, "pv.kubernetes.io/bind-completed", "yes");
    let status = json!({"phase": "Bound", "accessModes": pv["spec"]["accessModes"],
        "capacity": pv["spec"]["capacity"]});
    if c["status"]["phase"] != "Bound"
        || c["status"]["capacity"] != status["capacity"]
        || c["status"]["accessModes"] != status["accessModes"]
    {
        c["status"] = status;
    }
    if c != before {
        put(st, "", "persistentvolumeclaims", c.clone());
    }
    csi::ensure_volume(st, &pv);
    csi::seed_volume(st, &c, &pv);
}

fn satisfies(pv: &Value, claim: &Value, node: Option<&Value>) -> bool {
    let spec = &pv["spec"];
    let class = claim["spec"]["storageClassName"]
        .as_str()
        .unwrap_or_default();
    let modes_ok = claim["spec"]["accessModes"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|m| {
            spec["accessModes"]
                .as_array()
                .is_some_and(|a| a.contains(m))
        });
    let size_ok = csi::capacity(pv).unwrap_or(0) >= csi::requested(claim).unwrap_or(u64::MAX);
    let mode = |v: &Value| v.as_str().unwrap_or("Filesystem").to_string();
    spec["storageClassName"].as_str().unwrap_or_default() == class
        && mode(&spec["volumeMode"]) == mode(&claim["spec"]["volumeMode"])
        && modes_ok
        && size_ok
        && selector_matches(&claim["spec"]["selector"], &pv["metadata"]["labels"])
        && node.is_none_or(|n| node_affinity_allows(pv, n))
        && pv["metadata"].get("deletionTimestamp").is_none()
}

fn selector_matches(sel: &Value, labels: &Value) -> bool {
    if !sel.is_object() {
        return true;
    }
    let label = |k: &str| labels[k].as_str();
    let ml = sel["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| label(k) == v.as_str());
    let me = sel["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| {
            let key = e["key"].as_str().unwrap_or_default();
            let values: Vec<&str> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            match e["operator"].as_str().unwrap_or_default() {
                "In" => label(key).is_some_and(|v| values.contains(&v)),
                "NotIn" => label(key).is_none_or(|v| !values.contains(&v)),
                "Exists" => label(key).is_some(),
                "DoesNotExist" => label(key).is_none(),
                _ => false,
            }
        });
    ml && me
}

/// Whether a node satisfies a PV's required node affinity (In/NotIn/Exists
/// on node labels).
fn node_affinity_allows(pv: &Value, node: &Value) -> bool {
    let terms = &pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"];
    let Some(terms) = terms.as_array() else {
        return true;
    };
    terms.iter().any(|t| {
        selector_matches(
            &json!({"matchExpressions": t["matchExpressions"]}),
            &node["metadata"]["labels"],
        )
    })
}

/// Brings one claim forward (idempotent; records the binder's and the
/// provisioner's events).
pub fn sync_claim(st: &mut State, ns: &str, name: &str) {
    let Some(mut claim) = get(st, "", "persistentvolumeclaims", ns, name) else {
        return;
    };
    if claim["metadata"].get("deletionTimestamp").is_some() {
        return;
    }
    let wanted = claim["spec"]["volumeName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if !wanted.is_empty() {
        match get(st, "", "persistentvolumes", "", &wanted) {
            None => {
                if claim["status"]["phase"] == "Bound" {
                    claim["status"]["phase"] = json!("Lost");
                    put(st, "", "persistentvolumeclaims", claim.clone());
                    note(
                        st,
                        &claim,
                        EventType::Warning,
                        "ClaimLost",
                        "Bound claim has lost its PersistentVolume. Data on the volume is lost!",
                        COMPONENT,
                    );
                }
            }
            Some(pv) if pv["spec"]["claimRef"].is_null() || claim_ref_matches(&pv, &claim) => {
                bind(st, &pv, &claim);
            }
            Some(_) => {
                let msg = format!("volume \"{wanted}\" already bound to a different claim.");
                note(
                    st,
                    &claim,
                    EventType::Warning,
                    "FailedBinding",
                    &msg,
                    COMPONENT,
                );
            }
        }
        return;
    }
    let class_name = claim["spec"]["storageClassName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let class = (!class_name.is_empty())
        .then(|| get(st, "storage.k8s.io", "storageclasses", "", &class_name))
        .flatten();
    let wffc = class
        .as_ref()
        .is_some_and(|c| c["volumeBindingMode"] == "WaitForFirstConsumer");
    let selected = claim["metadata"]["annotations"][SELECTED_NODE]
        .as_str()
        .map(str::to_string);
    // As the real binder's FindMatchingVolume: a volume pre-bound to the
    // claim binds even while binding waits for a consumer; only the choice
    // among free volumes (and provisioning) waits for the selected node.
    let delayed = wffc && selected.is_none();
    let node = selected
        .as_deref()
        .and_then(|n| get(st, "", "nodes", "", n));
    let pvs = st
        .store
        .table(&(String::new(), "persistentvolumes".to_string()));
    let mut pre_bound = None;
    let mut best: Option<(u64, Value)> = None;
    for o in pvs.values() {
        let pv = o.value();
        if pv["spec"]["claimRef"].is_object() {
            if claim_ref_matches(&pv, &claim) && pv["metadata"].get("deletionTimestamp").is_none() {
                pre_bound = Some(pv);
                break;
            }
            continue;
        }
        if !delayed && satisfies(&pv, &claim, node.as_ref()) {
            let cap = csi::capacity(&pv).unwrap_or(0);
            if best.as_ref().is_none_or(|(b, _)| cap < *b) {
                best = Some((cap, pv));
            }
        }
    }
    // A claim with a data source gets a new volume filled from it.
    let best =
        if claim["spec"]["dataSourceRef"].is_object() || claim["spec"]["dataSource"].is_object() {
            None
        } else {
            best
        };
    if let Some(pv) = pre_bound.or(best.map(|(_, pv)| pv)) {
        bind(st, &pv, &claim);
        return;
    }
    if delayed {
        note(
            st,
            &claim,
            EventType::Normal,
            "WaitForFirstConsumer",
            "waiting for first consumer to be created before binding",
            COMPONENT,
        );
        return;
    }
    let Some(class) = class else {
        let (reason, msg) = if class_name.is_empty() {
            (
                "FailedBinding",
                "no persistent volumes available for this claim and no storage class is set"
                    .to_string(),
            )
        } else {
            (
                "ProvisioningFailed",
                format!("storageclass.storage.k8s.io \"{class_name}\" not found"),
            )
        };
        note(st, &claim, EventType::Warning, reason, &msg, COMPONENT);
        return;
    };
    let provisioner = class["provisioner"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if claim["metadata"]["annotations"]["volume.kubernetes.io/storage-provisioner"]
        != json!(provisioner)
    {
        annotate(
            &mut claim,
            "volume.kubernetes.io/storage-provisioner",
            &provisioner,
        );
        annotate(
            &mut claim,
            "volume.beta.kubernetes.io/storage-provisioner",
            &provisioner,
        );
        put(st, "", "persistentvolumeclaims", claim.clone());
        claim = get(st, "", "persistentvolumeclaims", ns, name).unwrap_or(claim);
    }
    if !csi::runs_provisioner(&provisioner) {
        let msg = format!(
            "Waiting for a volume to be created either by the external provisioner '{provisioner}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered."
        );
        note(
            st,
            &claim,
            EventType::Normal,
            "ExternalProvisioning",
            &msg,
            COMPONENT,
        );
        return;
    }
    let component = provisioner.as_str();
    match csi::provision(st, &claim, &class, selected.as_deref()) {
        Ok(Provisioned::Volume(pv_name)) => {
            let msg = format!("Successfully provisioned volume {pv_name}");
            note(
                st,
                &claim,
                EventType::Normal,
                "ProvisioningSucceeded",
                &msg,
                component,
            );
            if let Some(pv) = get(st, "", "persistentvolumes", "", &pv_name) {
                let claim = get(st, "", "persistentvolumeclaims", ns, name).unwrap_or(claim);
                bind(st, &pv, &claim);
            }
        }
        Ok(Provisioned::Filling) => {
            let msg =
                format!("External provisioner is provisioning volume for claim \"{ns}/{name}\"");
            note(
                st,
                &claim,
                EventType::Normal,
                "Provisioning",
                &msg,
                component,
            );
        }
        Err(e) => {
            let msg = format!("failed to provision volume with StorageClass \"{class_name}\": {e}");
            note(
                st,
                &claim,
                EventType::Warning,
                "ProvisioningFailed",
                &msg,
                component,
            );
        }
    }
}

/// Brings one volume forward: phase, release, reclaim (idempotent).
pub fn sync_volume(st: &mut State, name: &str) {
    let Some(mut pv) = get(st, "", "persistentvolumes", "", name) else {
        return;
    };
    if pv["metadata"].get("deletionTimestamp").is_some() {
        return;
    }
    let r = pv["spec"]["claimRef"].clone();
    if !r.is_object() {
        if set_phase(&mut pv, "Available") {
            put(st, "", "persistentvolumes", pv);
        }
        return;
    }
    let uid = r["uid"].as_str().unwrap_or_default();
    let claim = get(
        st,
        "",
        "persistentvolumeclaims",
        r["namespace"].as_str().unwrap_or_default(),
        r["name"].as_str().unwrap_or_default(),
    )
    .filter(|c| uid.is_empty() || meta_str(c, "uid") == uid);
    match claim {
        Some(c)
            if c["spec"]["volumeName"] == json!(name)
                || c["spec"]["volumeName"].as_str().is_none_or(str::is_empty) =>
        {
            if c["metadata"].get("deletionTimestamp").is_none() {
                bind(st, &pv, &c);
            }
        }
        Some(_) => {
            // The claim is bound to another volume.
            if pv["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"] == "yes" {
                if let Some(s) = pv["spec"].as_object_mut() {
                    s.remove("claimRef");
                }
                set_phase(&mut pv, "Available");
                put(st, "", "persistentvolumes", pv);
            } else if set_phase(&mut pv, "Available") {
                put(st, "", "persistentvolumes", pv);
            }
        }
        None if uid.is_empty() => {
            // Pre-bound to a claim that does not exist (yet).
            if set_phase(&mut pv, "Available") {
                put(st, "", "persistentvolumes", pv);
            }
        }
        None => {
            if set_phase(&mut pv, "Released") {
                put(st, "", "persistentvolumes", pv.clone());
            }
            reclaim(st, &pv);
        }
    }
}

/// Reclaims a Released volume: `Delete` removes what our provisioners made
/// (the PV and its data); `Retain` keeps both.
fn reclaim(st: &mut State, pv: &Value) {
    if pv["spec"]["persistentVolumeReclaimPolicy"] != "Delete" {
        return;
    }
    let by = pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"]
        .as_str()
        .unwrap_or_default();
    if !csi::runs_provisioner(by) {
        return;
    }
    let key = (String::new(), "persistentvolumes".to_string());
    if let (Some(o), Some(info)) = (
        st.store.get(&key, "", meta_str(pv, "name")),
        st.registry.by_key(&key),
    ) {
        let _ = crate::handlers::delete_object(st, &info, &o, false);
    }
}

/// A claim is gone: its volume is released (and reclaimed).
pub fn claim_deleted(st: &mut State, claim: &Value) {
    if let Some(pv) = claim["spec"]["volumeName"]
        .as_str()
        .filter(|n| !n.is_empty())
    {
        sync_volume(st, pv);
    }
}

/// A volume is gone: with `Delete` its data goes too; a claim bound to it
/// is Lost.
pub fn volume_deleted(st: &mut State, pv: &Value) {
    if pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete" {
        csi::delete_volume(st, pv);
    }
    let r = &pv["spec"]["claimRef"];
    if let (Some(ns), Some(name)) = (r["namespace"].as_str(), r["name"].as_str()) {
        sync_claim(st, ns, name);
    }
}

/// Retries every Pending claim (a volume or snapshot they wait for may have
/// changed).
pub fn resync_pending(st: &mut State) {
    let pending: Vec<(String, String)> = st
        .store
        .table(&(String::new(), "persistentvolumeclaims".to_string()))
        .values()
        .map(|o| o.value())
        .filter(|c| c["status"]["phase"] != "Bound")
        .map(|c| {
            (
                meta_str(&c, "namespace").to_string(),
                meta_str(&c, "name").to_string(),
            )
        })
        .collect();
    for (ns, name) in pending {
        sync_claim(st, &ns, &name);
    }
}

fn resync_all(st: &mut State) {
    let pvs: Vec<String> = st
        .store
        .table(&(String::new(), "persistentvolumes".to_string()))
        .values()
        .map(|o| o.name.clone())
        .collect();
    for pv in pvs {
        sync_volume(st, &pv);
    }
    resync_pending(st);
    let snaps: Vec<(String, String)> = st
        .store
        .table(&(
            "snapshot.storage.k8s.io".to_string(),
            "volumesnapshots".to_string(),
        ))
        .values()
        .filter(|o| o.value()["status"]["readyToUse"] != true)
        .map(|o| (o.namespace.clone(), o.name.clone()))
        .collect();
    for (ns, name) in snaps {
        csi::sync_snapshot(st, &ns, &name);
    }
}

/// How often everything is synced again whatever the events said, as
/// kube-controller-manager's PV binder does (`--pvclaimbinder-sync-period`,
/// 15s by default).
const SYNC_PERIOD: std::time::Duration = std::time::Duration::from_secs(15);

/// The controllers' loop: every change to a claim, volume, class,
/// snapshot or content is synced under the lock, as the real controllers'
/// informers would deliver it, and everything again every
/// [`SYNC_PERIOD`]. Stops with the sandbox.
pub async fn run(shared: Arc<Shared>) {
    let mut rx = shared.state.lock().expect("state lock").store.subscribe();
    let mut stop = shared.shutdown.subscribe();
    let mut period = tokio::time::interval(SYNC_PERIOD);
    period.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    period.tick().await;
    loop {
        let first = tokio::select! {
            r = rx.recv() => Some(r),
            _ = period.tick() => None,
            _ = stop.changed() => return,
        };
        let mut batch = Vec::new();
        let mut lagged = false;
        match first {
            Some(Ok(e)) => batch.push(e),
            Some(Err(RecvError::Lagged(_))) | None => lagged = true,
            Some(Err(RecvError::Closed)) => return,
        }
        loop {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => lagged = true,
                Err(_) => break,
            }
        }
        let more = {
            let mut st = shared.state.lock().expect("state lock");
            if lagged {
                resync_all(&mut st);
            }
            let mut pending = false;
            for e in &batch {
                if e.kind == crate::store::EventType::Deleted {
                    continue;
                }
                let (ns, name) = (e.obj.namespace.as_str(), e.obj.name.as_str());
                match (e.key.0.as_str(), e.key.1.as_str()) {
                    ("", "persistentvolumeclaims") => {
                        sync_claim(&mut st, ns, name);
                        pending = true;
                    }
                    ("", "persistentvolumes") => {
                        sync_volume(&mut st, name);
                        pending = true;
                    }
                    ("storage.k8s.io", "storageclasses") | ("", "nodes") => pending = true,
                    ("snapshot.storage.k8s.io", "volumesnapshots") => {
                        csi::sync_snapshot(&mut st, ns, name);
                        pending = true;
                    }
                    ("snapshot.storage.k8s.io", "volumesnapshotcontents") => {
                        csi::sync_content(&mut st, name);
                        pending = true;
                    }
                    _ => {}
                }
            }
            if pending {
                resync_pending(&mut st);
                let snaps: Vec<(String, String)> = st
                    .store
                    .table(&(
                        "snapshot.storage.k8s.io".to_string(),
                        "volumesnapshots".to_string(),
                    ))
                    .values()
                    .filter(|o| o.value()["status"]["readyToUse"] != true)
                    .map(|o| (o.namespace.clone(), o.name.clone()))
                    .collect();
                for (ns, name) in snaps {
                    csi::sync_snapshot(&mut st, &ns, &name);
                }
            }
            std::mem::take(&mut st.deferred)
        };
        crate::server::run_deferred(&shared, more);
    }
}
