//! The DaemonSet controller: one pod per Node that should run it (the
//! template's `nodeSelector` and required node affinity match the node's
//! labels, and every NoSchedule/NoExecute taint is tolerated), read from
//! the Node objects. As the real controller does since scheduling moved to
//! the scheduler, a pod is pinned to its node with a required node
//! affinity on `metadata.name` (the scheduler then sets `nodeName`), and
//! gets the controller's default tolerations (not-ready, unreachable,
//! disk/memory/pid pressure, unschedulable). Pods on nodes that no longer
//! qualify are deleted; template changes roll out under `RollingUpdate`
//! (at most `maxUnavailable` at a time, default 1) or wait for deletion
//! under `OnDelete`. Status: `desiredNumberScheduled`,
//! `currentNumberScheduled`, `numberMisscheduled`, `numberReady`,
//! `numberAvailable`, `numberUnavailable`, `updatedNumberScheduled`,
//! `observedGeneration`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::{
    Selector, claim_pods, create, delete_pod, deleting, get, int, objects, omit_zero, pod_active,
    pod_available, pod_from_template, pod_ready, update_status,
};
use crate::handlers::State;
use crate::meta::meta_str;
use crate::store::Event;

/// The DaemonSet controller.
pub const DAEMONSETS: super::Workload = super::Workload {
    primary: ("apps", "daemonsets"),
    child: ("", "pods"),
    kind: "DaemonSet",
    also: node_changed,
    sync: reconcile,
    missing: super::nothing,
};

/// A Node changed: every DaemonSet is reconciled.
fn node_changed(ev: &Event, out: &mut Vec<(String, String)>) {
    if ev.key.0.is_empty() && ev.key.1 == "nodes" {
        out.push(super::EVERY.clone());
    }
}

/// Whether a node may run the template's pods.
pub fn node_fits(spec: &Value, node: &Value) -> bool {
    // The node's own taints only: the controller adds tolerations for the
    // not-ready and unschedulable taints to daemon pods.
    crate::scheduler::selector_and_affinity_match(spec, node)
        && node["spec"]["taints"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|taint| {
                taint["effect"] == "PreferNoSchedule"
                    || crate::scheduler::tolerates(&spec["tolerations"], taint)
            })
}

/// The node a daemon pod is meant for: the affinity's `metadata.name`
/// target, else its `nodeName`.
fn target_node(pod: &Value) -> Option<String> {
    let terms = &pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"];
    terms
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|t| {
            t["matchFields"]
                .as_array()
                .into_iter()
                .flatten()
                .find_map(|f| {
                    (f["key"] == "metadata.name" && f["operator"] == "In")
                        .then(|| f["values"][0].as_str().map(str::to_string))
                        .flatten()
                })
        })
        .or_else(|| {
            pod["spec"]["nodeName"]
                .as_str()
                .filter(|n| !n.is_empty())
                .map(str::to_string)
        })
}

const DEFAULT_TOLERATIONS: &[(&str, &str)] = &[
    ("node.kubernetes.io/not-ready", "NoExecute"),
    ("node.kubernetes.io/unreachable", "NoExecute"),
    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
    ("node.kubernetes.io/unschedulable", "NoSchedule"),
];

fn new_pod(ds: &Value, node: &str, revision: &str) -> Value {
    let mut pod = pod_from_template(
        &ds["spec"]["template"],
        ds,
        None,
        &format!("{}-", meta_str(ds, "name")),
    );
    let labels = &mut pod["metadata"]["labels"];
    if !labels.is_object() {
        *labels = json!({});
    }
    labels["controller-revision-hash"] = json!(revision.rsplit('-').next().unwrap_or(revision));
    labels["pod-template-generation"] = json!(int(&ds["metadata"]["generation"], 1).to_string());
    let spec = &mut pod["spec"];
    spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] = json!({"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]});
    let mut tolerations: Vec<Value> = spec["tolerations"].as_array().cloned().unwrap_or_default();
    for (key, effect) in DEFAULT_TOLERATIONS {
        if !tolerations
            .iter()
            .any(|t| t["key"] == *key && t["effect"] == *effect)
        {
            tolerations.push(json!({"key": key, "operator": "Exists", "effect": effect}));
        }
    }
    spec["tolerations"] = json!(tolerations);
    pod
}

fn reconcile(st: &mut State, ds: &Value) -> Option<Duration> {
    let ns = meta_str(ds, "namespace").to_string();
    let selector = Selector::from_value(&ds["spec"]["selector"]);
    let pods: Vec<Value> = claim_pods(st, ds, &selector)
        .into_iter()
        .filter(pod_active)
        .collect();
    let revision = if deleting(ds) {
        None
    } else {
        super::statefulset::controller_revision(st, ds)
    };
    let hash = revision
        .as_deref()
        .map(|r| r.rsplit('-').next().unwrap_or(r).to_string());
    let nodes: Vec<Value> = objects(st, "", "nodes").iter().map(|o| o.value()).collect();
    let template_spec = &ds["spec"]["template"]["spec"];
    let wanted: Vec<String> = nodes
        .iter()
        .filter(|n| node_fits(template_spec, n))
        .map(|n| meta_str(n, "name").to_string())
        .collect();
    let mut by_node: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut misscheduled = 0;
    for p in pods {
        match target_node(&p) {
            Some(n) if wanted.contains(&n) => by_node.entry(n).or_default().push(p),
            _ => {
                misscheduled += 1;
                if revision.is_some() {
                    delete_pod(st, &p);
                }
            }
        }
    }
    let min_ready = int(&ds["spec"]["minReadySeconds"], 0);
    let now = jiff::Timestamp::now();
    if let (Some(rev), Some(hash)) = (&revision, &hash) {
        for node in &wanted {
            let list = by_node.entry(node.clone()).or_default();
            // Duplicates: keep the oldest.
            list.sort_by(|a, b| {
                meta_str(a, "creationTimestamp").cmp(meta_str(b, "creationTimestamp"))
            });
            let extras: Vec<Value> = list.drain(list.len().min(1)..).collect();
            for extra in &extras {
                delete_pod(st, extra);
            }
            if list.is_empty()
                && let Ok(p) = create(st, "", "pods", &ns, new_pod(ds, node, rev))
            {
                list.push(p);
            }
        }
        let strategy = &ds["spec"]["updateStrategy"];
        if strategy["type"] != "OnDelete" {
            let max_unavailable = match &strategy["rollingUpdate"]["maxUnavailable"] {
                Value::String(s) => s
                    .strip_suffix('%')
                    .and_then(|p| p.parse::<i64>().ok())
                    .map(|p| (p * wanted.len() as i64 / 100).max(1))
                    .unwrap_or(1),
                v => v.as_i64().unwrap_or(1).max(1),
            };
            let unavailable = wanted
                .iter()
                .filter(|n| {
                    by_node
                        .get(*n)
                        .and_then(|l| l.first())
                        .is_none_or(|p| !pod_available(p, min_ready, now))
                })
                .count() as i64;
            let mut budget = max_unavailable - unavailable;
            for node in &wanted {
                if budget <= 0 {
                    break;
                }
                if let Some(p) = by_node.get(node).and_then(|l| l.first())
                    && p["metadata"]["labels"]["controller-revision-hash"] != hash.as_str()
                    && pod_available(p, min_ready, now)
                {
                    delete_pod(st, p);
                    budget -= 1;
                }
            }
        }
    }
    let scheduled: Vec<&Value> = wanted
        .iter()
        .filter_map(|n| by_node.get(n).and_then(|l| l.first()))
        .collect();
    let ready = scheduled.iter().filter(|p| pod_ready(p)).count();
    let available = scheduled
        .iter()
        .filter(|p| pod_available(p, min_ready, now))
        .count();
    let updated = scheduled
        .iter()
        .filter(|p| {
            hash.as_ref()
                .is_some_and(|h| p["metadata"]["labels"]["controller-revision-hash"] == h.as_str())
        })
        .count();
    let mut status = json!({
        "currentNumberScheduled": scheduled.len(),
        "numberMisscheduled": misscheduled,
        "desiredNumberScheduled": wanted.len(),
        "numberReady": ready,
        "observedGeneration": ds["metadata"]["generation"],
        "updatedNumberScheduled": updated,
        "numberAvailable": available,
        "numberUnavailable": wanted.len().saturating_sub(available),
    });
    omit_zero(
        &mut status,
        &[
            "updatedNumberScheduled",
            "numberAvailable",
            "numberUnavailable",
        ],
    );
    if let Some(cur) = get(st, "apps", "daemonsets", &ns, meta_str(ds, "name")) {
        let _ = update_status(st, "apps", "daemonsets", &cur, status);
    }
    (ready > available).then(|| Duration::from_secs(min_ready.max(1) as u64))
}
