//! The StatefulSet controller: pods `<set>-<ordinal>` (from
//! `spec.ordinals.start`) with stable hostnames (`hostname`, `subdomain` =
//! `serviceName`), the `statefulset.kubernetes.io/pod-name`,
//! `apps.kubernetes.io/pod-index` and `controller-revision-hash` labels; a
//! PersistentVolumeClaim `<template>-<set>-<ordinal>` per
//! `volumeClaimTemplates` entry, created before the pod and mounted in
//! place of the template's volume. `OrderedReady` (the default) creates one
//! pod at a time once every lower ordinal is Running and Ready and removes
//! the highest ordinal first; `Parallel` does both at once. Templates are
//! versioned as ControllerRevisions; `RollingUpdate` replaces pods from the
//! highest ordinal down to `partition`, `OnDelete` only when a pod is
//! deleted. Claims follow `persistentVolumeClaimRetentionPolicy`: kept on
//! scale-down and delete by default (`Retain`); `whenDeleted: Delete` makes
//! the set their owner (garbage collected with it), `whenScaled: Delete`
//! deletes a condemned ordinal's claims with its pod. A claim that exists
//! already (restored, or made by hand) is reused, never recreated, and
//! adopted when `whenDeleted: Delete` asks for ownership.

use std::time::Duration;

use serde_json::{Value, json};

use super::{
    Selector, adopt, claim_pods, controlled_by, create, delete, delete_pod, deleting, get, int,
    objects_in, omit_zero, owner_ref, phase, pod_available, pod_from_template, pod_ready,
    update_status,
};
use crate::handlers::State;
use crate::meta::meta_str;

use super::deployment::template_hash;
use super::gc::Propagation;

/// The StatefulSet controller.
pub const STATEFULSETS: super::Workload = super::Workload {
    primary: ("apps", "statefulsets"),
    child: ("", "pods"),
    kind: "StatefulSet",
    also: super::ignore_event,
    sync: reconcile,
    missing: super::nothing,
};

fn ordinal(set_name: &str, pod: &Value) -> Option<i64> {
    meta_str(pod, "name")
        .strip_prefix(set_name)?
        .strip_prefix('-')?
        .parse()
        .ok()
}

/// The ControllerRevision of an owner's current template (created when
/// missing, revision = highest + 1); returns its name `<owner>-<hash>`.
pub(super) fn controller_revision(st: &mut State, set: &Value) -> Option<String> {
    let ns = meta_str(set, "namespace");
    let uid = meta_str(set, "uid");
    let template = &set["spec"]["template"];
    let mut max = 0;
    for o in objects_in(st, "apps", "controllerrevisions", ns) {
        let v = o.value();
        if !controlled_by(&v, uid) {
            continue;
        }
        if v["data"]["spec"]["template"] == *template {
            return Some(o.name.clone());
        }
        max = max.max(int(&v["revision"], 0));
    }
    let hash = template_hash(
        template,
        set["status"]["collisionCount"].as_u64().map(|c| c as u32),
    );
    let name = format!("{}-{hash}", meta_str(set, "name"));
    let mut labels = template["metadata"]["labels"].clone();
    if !labels.is_object() {
        labels = json!({});
    }
    labels["controller.kubernetes.io/hash"] = json!(hash);
    let rev = json!({
        "apiVersion": "apps/v1", "kind": "ControllerRevision",
        "metadata": {"name": name, "labels": labels, "ownerReferences": [owner_ref(set)]},
        "data": {"spec": {"template": template, "$patch": "replace"}},
        "revision": max + 1,
    });
    create(st, "apps", "controllerrevisions", ns, rev).ok()?;
    Some(name)
}

fn claim_name(template: &Value, set: &str, i: i64) -> String {
    format!("{}-{set}-{i}", meta_str(template, "name"))
}

fn retention(set: &Value, when: &str) -> bool {
    set["spec"]["persistentVolumeClaimRetentionPolicy"][when] == "Delete"
}

fn ensure_claims(st: &mut State, set: &Value, i: i64) -> Result<(), String> {
    let ns = meta_str(set, "namespace").to_string();
    let name = meta_str(set, "name");
    for t in set["spec"]["volumeClaimTemplates"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let claim = claim_name(t, name, i);
        if let Some(existing) = get(st, "", "persistentvolumeclaims", &ns, &claim) {
            // An existing claim of the name is reused, never recreated; with
            // `whenDeleted: Delete` the set becomes its controller (as
            // kube-controller-manager's `updateClaimOwnerRefForSetAndPod`
            // does for a claim restored or made by hand).
            if retention(set, "whenDeleted") {
                adopt(st, "", "persistentvolumeclaims", set, &existing);
            }
            continue;
        }
        let mut labels = t["metadata"]["labels"].clone();
        if !labels.is_object() {
            labels = json!({});
        }
        for (k, v) in set["spec"]["selector"]["matchLabels"]
            .as_object()
            .into_iter()
            .flatten()
        {
            labels[k] = v.clone();
        }
        let mut meta = json!({"name": claim, "labels": labels});
        if let Some(a) = t["metadata"].get("annotations") {
            meta["annotations"] = a.clone();
        }
        if retention(set, "whenDeleted") {
            meta["ownerReferences"] = json!([owner_ref(set)]);
        }
        let pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": meta, "spec": t["spec"]});
        create(st, "", "persistentvolumeclaims", &ns, pvc).map_err(|e| e.message)?;
    }
    Ok(())
}

fn new_pod(set: &Value, i: i64, revision: &str) -> Value {
    let name = format!("{}-{i}", meta_str(set, "name"));
    let mut pod = pod_from_template(&set["spec"]["template"], set, Some(&name), "");
    let labels = &mut pod["metadata"]["labels"];
    if !labels.is_object() {
        *labels = json!({});
    }
    labels["statefulset.kubernetes.io/pod-name"] = json!(name);
    labels["apps.kubernetes.io/pod-index"] = json!(i.to_string());
    labels["controller-revision-hash"] = json!(revision);
    pod["spec"]["hostname"] = json!(name);
    if let Some(svc) = set["spec"]["serviceName"]
        .as_str()
        .filter(|s| !s.is_empty())
    {
        pod["spec"]["subdomain"] = json!(svc);
    }
    let templates: Vec<&Value> = set["spec"]["volumeClaimTemplates"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    if !templates.is_empty() {
        let mut volumes: Vec<Value> = pod["spec"]["volumes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for t in templates {
            let vname = meta_str(t, "name");
            volumes.retain(|v| v["name"] != vname);
            volumes.push(json!({"name": vname, "persistentVolumeClaim":
                {"claimName": claim_name(t, meta_str(set, "name"), i)}}));
        }
        pod["spec"]["volumes"] = json!(volumes);
    }
    pod
}

fn reconcile(st: &mut State, set: &Value) -> Option<Duration> {
    let ns = meta_str(set, "namespace").to_string();
    let name = meta_str(set, "name").to_string();
    let selector = Selector::from_value(&set["spec"]["selector"]);
    let pods = claim_pods(st, set, &selector);
    let revision = if deleting(set) {
        None
    } else {
        controller_revision(st, set)
    };
    let start = int(&set["spec"]["ordinals"]["start"], 0).max(0);
    let n = int(&set["spec"]["replicas"], 1).max(0);
    let parallel = set["spec"]["podManagementPolicy"] == "Parallel";
    let min_ready = int(&set["spec"]["minReadySeconds"], 0);
    let mut slots: Vec<Option<Value>> = vec![None; n as usize];
    let mut condemned: Vec<Value> = Vec::new();
    for p in pods {
        match ordinal(&name, &p) {
            Some(i) if i >= start && i < start + n => slots[(i - start) as usize] = Some(p),
            _ => condemned.push(p),
        }
    }
    let mut failure = None;
    if let Some(rev) = &revision {
        // Failed pods are replaced.
        for p in slots.iter_mut() {
            if let Some(pod) = p
                && phase(pod) == "Failed"
                && !deleting(pod)
            {
                delete_pod(st, pod);
                *p = None;
            }
        }
        // Create the missing ordinals.
        for (i, slot) in slots.iter_mut().enumerate() {
            if let Some(p) = slot {
                if !parallel && (!pod_ready(p) || deleting(p)) {
                    break;
                }
                continue;
            }
            let ord = start + i as i64;
            if let Err(e) = ensure_claims(st, set, ord) {
                failure = Some(e);
                break;
            }
            match create(st, "", "pods", &ns, new_pod(set, ord, rev)) {
                Ok(p) => *slot = Some(p),
                Err(e) => {
                    failure = Some(e.message);
                    break;
                }
            }
            if !parallel {
                break;
            }
        }
        // Remove the ordinals beyond replicas, highest first.
        let all_healthy = slots
            .iter()
            .all(|p| p.as_ref().is_some_and(|p| pod_ready(p) && !deleting(p)));
        condemned.sort_by_key(|p| std::cmp::Reverse(ordinal(&name, p).unwrap_or(i64::MAX)));
        for p in &condemned {
            if deleting(p) {
                if !parallel {
                    break;
                }
                continue;
            }
            if !parallel && !all_healthy {
                break;
            }
            delete_pod(st, p);
            if retention(set, "whenScaled")
                && let Some(i) = ordinal(&name, p)
            {
                for t in set["spec"]["volumeClaimTemplates"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    let _ = delete(
                        st,
                        "",
                        "persistentvolumeclaims",
                        &ns,
                        &claim_name(t, &name, i),
                        Propagation::Background,
                    );
                }
            }
            if !parallel {
                break;
            }
        }
        // Rolling update from the highest ordinal down to the partition.
        let strategy = &set["spec"]["updateStrategy"];
        if strategy["type"] != "OnDelete" && condemned.is_empty() {
            let partition = int(&strategy["rollingUpdate"]["partition"], 0);
            let healthy = slots
                .iter()
                .all(|p| p.as_ref().is_some_and(|p| pod_ready(p) && !deleting(p)));
            if healthy {
                for (i, p) in slots.iter().enumerate().rev() {
                    let ord = start + i as i64;
                    if ord < partition {
                        break;
                    }
                    if let Some(p) = p
                        && p["metadata"]["labels"]["controller-revision-hash"] != rev.as_str()
                    {
                        delete_pod(st, p);
                        break;
                    }
                }
            }
        }
    }
    let live: Vec<&Value> = slots.iter().flatten().chain(condemned.iter()).collect();
    let now = jiff::Timestamp::now();
    let rev = revision.clone().unwrap_or_else(|| {
        set["status"]["updateRevision"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    });
    let updated = live
        .iter()
        .filter(|p| p["metadata"]["labels"]["controller-revision-hash"] == rev.as_str())
        .count();
    let ready = live.iter().filter(|p| pod_ready(p)).count();
    let available = live
        .iter()
        .filter(|p| pod_available(p, min_ready, now))
        .count();
    let current_rev = if updated == live.len() {
        rev.clone()
    } else {
        set["status"]["currentRevision"]
            .as_str()
            .unwrap_or(&rev)
            .to_string()
    };
    let current = live
        .iter()
        .filter(|p| p["metadata"]["labels"]["controller-revision-hash"] == current_rev.as_str())
        .count();
    let mut status = json!({
        "observedGeneration": set["metadata"]["generation"],
        "replicas": live.len(),
        "readyReplicas": ready,
        "currentReplicas": current,
        "updatedReplicas": updated,
        "availableReplicas": available,
        "currentRevision": current_rev,
        "updateRevision": rev,
        "collisionCount": set["status"]["collisionCount"].as_u64().unwrap_or(0),
    });
    omit_zero(
        &mut status,
        &["readyReplicas", "currentReplicas", "updatedReplicas"],
    );
    if let Some(cur) = get(st, "apps", "statefulsets", &ns, &name) {
        let _ = update_status(st, "apps", "statefulsets", &cur, status);
    }
    if let Some(msg) = failure {
        crate::events::record(
            st,
            set,
            crate::events::EventType::Warning,
            "FailedCreate",
            &msg,
            "statefulset-controller",
        );
        return Some(Duration::from_secs(1));
    }
    (ready > available).then(|| Duration::from_secs(min_ready.max(1) as u64))
}
