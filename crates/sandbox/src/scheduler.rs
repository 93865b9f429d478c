//! The scheduler, modelled on kube-scheduler's default profile: it binds
//! every pod that has no `spec.nodeName` (and no other `schedulerName`)
//! to a node through the `pods/binding` subresource.
//!
//! ```text
//! store events ─▶ queue (unscheduled pods; all of them again when nodes,
//!                 claims, volumes or classes change, or a pod goes away)
//!   ─▶ claims: missing ─▶ unschedulable; unbound Immediate ─▶ unschedulable;
//!              unbound WaitForFirstConsumer ─▶ delayed
//!   ─▶ filter nodes: Ready, not cordoned, nodeSelector, required node
//!      affinity, taints (NoSchedule/NoExecute) vs tolerations, pod count
//!      vs allocatable, PV node affinity of bound claims, selected node of
//!      delayed claims
//!   ─▶ score: fewest pods (ties: node name)
//!   ─▶ delayed claims? annotate `volume.kubernetes.io/selected-node` and
//!      wait for them to bind : bind (spec.nodeName, PodScheduled=True,
//!      event Scheduled)
//! ```
//!
//! A pod no node fits stays Pending with `PodScheduled=False`
//! (`Unschedulable`) and a `FailedScheduling` event whose message counts
//! the reasons per node, as kube-scheduler words them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::error::ApiError;
use crate::events::{self, EventType};
use crate::handlers::State;
use crate::meta::{self, meta_mut, meta_str};
use crate::resources::ResKey;
use crate::server::Shared;
use crate::store::{Event, Obj};

/// The scheduler's name (`spec.schedulerName`, event source).
pub const NAME: &str = "default-scheduler";
/// The annotation the scheduler sets on a WaitForFirstConsumer claim.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

type Key = (String, String);

fn res(resource: &str) -> ResKey {
    (String::new(), resource.to_string())
}

fn get(st: &State, group: &str, resource: &str, ns: &str, name: &str) -> Option<Value> {
    st.store
        .get(&(group.to_string(), resource.to_string()), ns, name)
        .map(|o| o.value())
}

fn put(st: &mut State, resource: &str, mut v: Value) {
    meta_mut(&mut v).insert(
        "resourceVersion".into(),
        json!(st.store.next_rv().to_string()),
    );
    st.store.put(&res(resource), Obj::from_value(&v));
}

/// Sets a condition, keeping `lastTransitionTime` when the status is unchanged.
pub fn set_condition(status: &mut Value, ty: &str, value: &str, reason: &str, message: &str) {
    if !status["conditions"].is_array() {
        status["conditions"] = json!([]);
    }
    let list = status["conditions"].as_array_mut().expect("an array");
    let now = meta::now();
    let mut c =
        json!({"type": ty, "status": value, "lastProbeTime": null, "lastTransitionTime": now});
    if !reason.is_empty() {
        c["reason"] = json!(reason);
    }
    if !message.is_empty() {
        c["message"] = json!(message);
    }
    match list.iter_mut().find(|c| c["type"] == ty) {
        Some(old) => {
            if old["status"] == value {
                c["lastTransitionTime"] = old["lastTransitionTime"].clone();
            }
            *old = c;
        }
        None => list.push(c),
    }
}

/// Binds a pod to a node, as `POST pods/<name>/binding` does: sets
/// `spec.nodeName` and `PodScheduled=True`; 409 when already bound.
pub fn bind(st: &mut State, ns: &str, name: &str, node: &str) -> Result<Value, ApiError> {
    let mut pod =
        get(st, "", "pods", ns, name).ok_or_else(|| ApiError::not_found("", "pods", name))?;
    if pod["metadata"].get("deletionTimestamp").is_some() {
        return Err(ApiError::conflict(
            "",
            "pods",
            name,
            "the pod is being deleted",
        ));
    }
    if let Some(current) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
        return Err(ApiError::conflict(
            "",
            "pods",
            name,
            &format!("pod {name} is already assigned to node \"{current}\""),
        ));
    }
    if node.is_empty() {
        return Err(ApiError::invalid_field(
            "",
            "Binding",
            name,
            "target.name",
            "Required value",
        ));
    }
    pod["spec"]["nodeName"] = json!(node);
    if !pod["status"].is_object() {
        pod["status"] = json!({"phase": "Pending"});
    }
    set_condition(&mut pod["status"], "PodScheduled", "True", "", "");
    put(st, "pods", pod.clone());
    Ok(pod)
}

/// Serves `POST pods/<name>/binding` (body: a `v1.Binding`).
pub fn binding_subresource(
    st: &mut State,
    ns: &str,
    name: &str,
    body: &Value,
) -> Result<Value, ApiError> {
    if body["target"]["kind"]
        .as_str()
        .is_some_and(|k| !k.is_empty() && k != "Node")
    {
        return Err(ApiError::invalid_field(
            "",
            "Binding",
            name,
            "target.kind",
            "Unsupported value: must be Node",
        ));
    }
    let node = body["target"]["name"].as_str().unwrap_or_default();
    bind(st, ns, name, node)?;
    Ok(
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    )
}

/// Whether a node selector term (`matchExpressions`, `matchFields`) matches.
fn term_matches(term: &Value, node: &Value) -> bool {
    let labels = &node["metadata"]["labels"];
    let exprs = term["matchExpressions"].as_array();
    let fields = term["matchFields"].as_array();
    if exprs.is_none_or(Vec::is_empty) && fields.is_none_or(Vec::is_empty) {
        // An empty term matches nothing.
        return false;
    }
    let check = |e: &Value, got: Option<&str>| {
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let num = |s: &str| s.parse::<i64>().ok();
        match e["operator"].as_str().unwrap_or_default() {
            "In" => got.is_some_and(|g| values.contains(&g)),
            "NotIn" => got.is_none_or(|g| !values.contains(&g)),
            "Exists" => got.is_some(),
            "DoesNotExist" => got.is_none(),
            "Gt" => {
                matches!((got.and_then(num), values.first().and_then(|v| num(v))), (Some(a), Some(b)) if a > b)
            }
            "Lt" => {
                matches!((got.and_then(num), values.first().and_then(|v| num(v))), (Some(a), Some(b)) if a < b)
            }
            _ => false,
        }
    };
    exprs.into_iter().flatten().all(|e| {
        let k = e["key"].as_str().unwrap_or_default();
        check(e, labels[k].as_str())
    }) && fields.into_iter().flatten().all(|e| {
        let got = (e["key"] == "metadata.name").then(|| meta_str(node, "name"));
        check(e, got)
    })
}

/// Whether a `nodeSelectorTerms` list (ORed) matches; an absent list matches.
fn terms_match(terms: &Value, node: &Value) -> bool {
    match terms.as_array() {
        None => true,
        Some(t) => t.iter().any(|term| term_matches(term, node)),
    }
}

/// Whether a pod spec's `nodeSelector` and required node affinity admit
/// the node (the DaemonSet controller asks the same, as upstream's shares
/// the scheduler's node-affinity helper).
pub(crate) fn selector_and_affinity_match(spec: &Value, node: &Value) -> bool {
    let labels = &node["metadata"]["labels"];
    let selector_ok = spec["nodeSelector"]
        .as_object()
        .is_none_or(|m| m.iter().all(|(k, v)| labels[k] == *v));
    selector_ok
        && terms_match(
            &spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"],
            node,
        )
}

/// Whether `tolerations` (a pod spec's list) tolerate `taint`.
pub(crate) fn tolerates(tolerations: &Value, taint: &Value) -> bool {
    tolerations.as_array().into_iter().flatten().any(|t| {
        let key_ok = match t["key"].as_str().unwrap_or_default() {
            "" => t["operator"] == "Exists",
            k => k == taint["key"].as_str().unwrap_or_default(),
        };
        let value_ok = t["operator"] == "Exists"
            || t["value"].as_str().unwrap_or_default()
                == taint["value"].as_str().unwrap_or_default();
        let effect_ok = match t["effect"].as_str().unwrap_or_default() {
            "" => true,
            e => e == taint["effect"].as_str().unwrap_or_default(),
        };
        key_ok && value_ok && effect_ok
    })
}

/// The first taint of the node the pod does not tolerate (NoSchedule and
/// NoExecute; PreferNoSchedule only scores).
fn untolerated_taint(pod: &Value, node: &Value) -> Option<Value> {
    let mut taints: Vec<Value> = node["spec"]["taints"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if node["spec"]["unschedulable"] == true {
        taints.push(json!({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}));
    }
    if !crate::nodes::is_ready(node) {
        taints.push(json!({"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}));
    }
    taints
        .into_iter()
        .filter(|t| matches!(t["effect"].as_str(), Some("NoSchedule" | "NoExecute")))
        .find(|t| !tolerates(&pod["spec"]["tolerations"], t))
}

/// A claim the pod uses and what it asks of the node.
enum ClaimNeed {
    /// Bound: the volume's node affinity (`nodeSelectorTerms`, Null when none).
    Bound(Value),
    /// WaitForFirstConsumer, not bound yet; the node selected so far.
    Delayed {
        claim: Value,
        selected: Option<String>,
    },
}

fn pod_claims(st: &State, pod: &Value) -> Result<Vec<ClaimNeed>, String> {
    let ns = meta_str(pod, "namespace");
    let mut out = Vec::new();
    for vol in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let Some(claim_name) = vol["persistentVolumeClaim"]["claimName"].as_str() else {
            continue;
        };
        let Some(claim) = get(st, "", "persistentvolumeclaims", ns, claim_name) else {
            return Err(format!("persistentvolumeclaim \"{claim_name}\" not found"));
        };
        if claim["metadata"].get("deletionTimestamp").is_some() {
            return Err(format!(
                "persistentvolumeclaim \"{claim_name}\" is being deleted"
            ));
        }
        let volume = claim["spec"]["volumeName"].as_str().unwrap_or_default();
        if claim["status"]["phase"] == "Bound" && !volume.is_empty() {
            let affinity = get(st, "", "persistentvolumes", "", volume)
                .map(|pv| pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"].clone())
                .unwrap_or(Value::Null);
            out.push(ClaimNeed::Bound(affinity));
            continue;
        }
        let class = claim["spec"]["storageClassName"]
            .as_str()
            .unwrap_or_default();
        let mode = get(st, "storage.k8s.io", "storageclasses", "", class)
            .and_then(|c| c["volumeBindingMode"].as_str().map(str::to_string));
        if mode.as_deref() == Some("WaitForFirstConsumer") {
            let selected = claim["metadata"]["annotations"][SELECTED_NODE]
                .as_str()
                .map(str::to_string);
            out.push(ClaimNeed::Delayed { claim, selected });
        } else {
            return Err("pod has unbound immediate PersistentVolumeClaims".to_string());
        }
    }
    Ok(out)
}

/// Why a node does not fit, as kube-scheduler words it (`None`: it fits).
fn filter(pod: &Value, node: &Value, claims: &[ClaimNeed], pods_on_node: usize) -> Option<String> {
    if let Some(t) = untolerated_taint(pod, node) {
        let key = t["key"].as_str().unwrap_or_default();
        return Some(if key == "node.kubernetes.io/unschedulable" {
            "node(s) were unschedulable".to_string()
        } else {
            format!(
                "node(s) had untolerated taint {{{key}: {}}}",
                t["value"].as_str().unwrap_or_default()
            )
        });
    }
    if !selector_and_affinity_match(&pod["spec"], node) {
        return Some("node(s) didn't match Pod's node affinity/selector".to_string());
    }
    let max_pods = node["status"]["allocatable"]["pods"]
        .as_str()
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(110);
    if pods_on_node >= max_pods {
        return Some("Too many pods".to_string());
    }
    for c in claims {
        match c {
            ClaimNeed::Bound(terms) if !terms_match(terms, node) => {
                return Some("node(s) had volume node affinity conflict".to_string());
            }
            ClaimNeed::Delayed {
                selected: Some(s), ..
            } if s != meta_str(node, "name") => {
                return Some(
                    "node(s) did not match the node selected for the pod's claims".to_string(),
                );
            }
            _ => {}
        }
    }
    None
}

/// The outcome of one scheduling attempt.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Bound to the node.
    Bound(String),
    /// Waiting for WaitForFirstConsumer claims to bind.
    WaitingForClaims,
    /// No node fits.
    Unschedulable,
    /// Gone, scheduled already, or not ours.
    Skip,
}

fn wants_scheduling(pod: &Value) -> bool {
    pod["spec"]["nodeName"].as_str().is_none_or(str::is_empty)
        && pod["metadata"].get("deletionTimestamp").is_none()
        && pod["spec"]["schedulerName"]
            .as_str()
            .is_none_or(|s| s.is_empty() || s == NAME)
        && !matches!(
            pod["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        )
}

fn unschedulable(st: &mut State, pod: &Value, message: &str) {
    let unchanged = pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "PodScheduled" && c["status"] == "False" && c["message"] == message);
    if unchanged {
        return;
    }
    let mut p = pod.clone();
    if !p["status"].is_object() {
        p["status"] = json!({});
    }
    p["status"]["phase"] = json!("Pending");
    set_condition(
        &mut p["status"],
        "PodScheduled",
        "False",
        "Unschedulable",
        message,
    );
    put(st, "pods", p);
    events::record(
        st,
        pod,
        EventType::Warning,
        "FailedScheduling",
        message,
        NAME,
    );
}

fn schedule_one(st: &mut State, key: &Key, counts: &HashMap<String, BTreeSet<Key>>) -> Outcome {
    let Some(pod) = get(st, "", "pods", &key.0, &key.1) else {
        return Outcome::Skip;
    };
    if !wants_scheduling(&pod) {
        return Outcome::Skip;
    }
    let nodes: Vec<Value> = st
        .store
        .table(&res("nodes"))
        .values()
        .map(|o| o.value())
        .collect();
    let claims = match pod_claims(st, &pod) {
        Ok(c) => c,
        Err(why) => {
            let msg = format!(
                "0/{n} nodes are available: {why}. preemption: 0/{n} nodes are available: {n} Preemption is not helpful for scheduling.",
                n = nodes.len()
            );
            unschedulable(st, &pod, &msg);
            return Outcome::Unschedulable;
        }
    };
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut best: Option<(usize, String)> = None;
    for node in &nodes {
        let name = meta_str(node, "name").to_string();
        let on_node = counts.get(&name).map_or(0, BTreeSet::len);
        match filter(&pod, node, &claims, on_node) {
            Some(why) => *reasons.entry(why).or_default() += 1,
            None => {
                if best
                    .as_ref()
                    .is_none_or(|(n, b)| (on_node, &name) < (*n, b))
                {
                    best = Some((on_node, name));
                }
            }
        }
    }
    let Some((_, node)) = best else {
        let n = nodes.len();
        let detail: Vec<String> = reasons
            .iter()
            .map(|(why, c)| format!("{c} {why}"))
            .collect();
        let detail = if detail.is_empty() {
            "no nodes available to schedule pods".to_string()
        } else {
            detail.join(", ")
        };
        let msg = format!(
            "0/{n} nodes are available: {detail}. preemption: 0/{n} nodes are available: {n} Preemption is not helpful for scheduling."
        );
        unschedulable(st, &pod, &msg);
        return Outcome::Unschedulable;
    };
    let mut waiting = false;
    for c in claims {
        if let ClaimNeed::Delayed {
            mut claim,
            selected,
        } = c
        {
            waiting = true;
            if selected.is_none() {
                let ann = meta_mut(&mut claim)
                    .entry("annotations")
                    .or_insert_with(|| json!({}));
                ann[SELECTED_NODE] = json!(node);
                put(st, "persistentvolumeclaims", claim);
            }
        }
    }
    if waiting {
        return Outcome::WaitingForClaims;
    }
    if bind(st, &key.0, &key.1, &node).is_err() {
        return Outcome::Skip;
    }
    events::record(
        st,
        &pod,
        EventType::Normal,
        "Scheduled",
        &format!("Successfully assigned {}/{} to {node}", key.0, key.1),
        NAME,
    );
    Outcome::Bound(node)
}

/// What the scheduler keeps between attempts.
#[derive(Default)]
struct Queue {
    /// Pods with no node yet.
    pending: BTreeSet<Key>,
    /// Pods to try now.
    dirty: BTreeSet<Key>,
    /// Pods per node (for spreading and the pod limit).
    counts: HashMap<String, BTreeSet<Key>>,
    /// Node of each counted pod.
    placed: HashMap<Key, String>,
}

impl Queue {
    fn observe(&mut self, ev: &Event) {
        let pods = res("pods");
        if ev.key != pods {
            let relevant = matches!(
                (ev.key.0.as_str(), ev.key.1.as_str()),
                ("", "nodes" | "persistentvolumeclaims" | "persistentvolumes")
                    | ("storage.k8s.io", "storageclasses")
            );
            if relevant {
                self.dirty.extend(self.pending.iter().cloned());
            }
            return;
        }
        let key = (ev.obj.namespace.clone(), ev.obj.name.clone());
        if ev.kind == crate::store::EventType::Deleted {
            self.forget(&key);
            self.pending.remove(&key);
            self.dirty.remove(&key);
            // Room freed on a node.
            self.dirty.extend(self.pending.iter().cloned());
            return;
        }
        self.track(key, &ev.obj.value());
    }

    fn track(&mut self, key: Key, pod: &Value) {
        let node = pod["spec"]["nodeName"].as_str().unwrap_or_default();
        let terminal = matches!(
            pod["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        );
        if node.is_empty() {
            self.forget(&key);
            if wants_scheduling(pod) {
                if self.pending.insert(key.clone()) {
                    self.dirty.insert(key);
                }
            } else {
                self.pending.remove(&key);
            }
        } else {
            self.pending.remove(&key);
            self.dirty.remove(&key);
            if terminal {
                self.forget(&key);
            } else {
                self.place(key, node);
            }
        }
    }

    fn place(&mut self, key: Key, node: &str) {
        if self.placed.get(&key).is_some_and(|n| n == node) {
            return;
        }
        self.forget(&key);
        self.counts
            .entry(node.to_string())
            .or_default()
            .insert(key.clone());
        self.placed.insert(key, node.to_string());
    }

    fn forget(&mut self, key: &Key) {
        if let Some(n) = self.placed.remove(key)
            && let Some(set) = self.counts.get_mut(&n)
        {
            set.remove(key);
        }
    }
}

/// How many pods one hold of the state lock schedules.
const BATCH: usize = 64;

/// Runs the scheduler until the sandbox shuts down.
pub async fn run(shared: Arc<Shared>) {
    let mut stop = shared.shutdown.subscribe();
    let mut q = Queue::default();
    let mut rx = {
        let st = shared.state.lock().expect("state lock");
        for (k, o) in st.store.table(&res("pods")).iter() {
            q.track(k.clone(), &o.value());
        }
        st.store.subscribe()
    };
    loop {
        if !q.dirty.is_empty() {
            let mut st = shared.state.lock().expect("state lock");
            // A bounded batch per lock hold, so API requests and the other
            // components are not held up behind a thousand pending pods.
            for _ in 0..BATCH {
                let Some(key) = q.dirty.pop_first() else {
                    break;
                };
                if let Outcome::Bound(node) = schedule_one(&mut st, &key, &q.counts) {
                    q.pending.remove(&key);
                    q.place(key, &node);
                }
            }
        }
        let more = !q.dirty.is_empty();
        let first = tokio::select! {
            r = rx.recv() => r,
            // More to schedule: go round again once other tasks had a turn.
            () = tokio::task::yield_now(), if more => continue,
            _ = stop.changed() => return,
        };
        let mut next = Some(first);
        while let Some(r) = next.take() {
            match r {
                Ok(ev) => q.observe(&ev),
                Err(RecvError::Lagged(_)) => {
                    // Missed events: start over from the store.
                    q = Queue::default();
                    let st = shared.state.lock().expect("state lock");
                    for (k, o) in st.store.table(&res("pods")).iter() {
                        q.track(k.clone(), &o.value());
                    }
                }
                Err(RecvError::Closed) => return,
            }
            next = match rx.try_recv() {
                Ok(ev) => Some(Ok(ev)),
                Err(TryRecvError::Lagged(n)) => Some(Err(RecvError::Lagged(n))),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Closed) => Some(Err(RecvError::Closed)),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, labels: Value, taints: Value) -> Value {
        let mut n = crate::nodes::node(1);
        n["metadata"]["name"] = json!(name);
        n["metadata"]["labels"] = labels;
        n["spec"]["taints"] = taints;
        n
    }

    #[test]
    fn affinity_terms_are_ored_and_expressions_anded() {
        let n = node("a", json!({"zone": "z1", "size": "8"}), json!(null));
        let terms = json!([
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z2"]}]},
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z1"]},
                                  {"key": "size", "operator": "Gt", "values": ["4"]}]},
        ]);
        assert!(terms_match(&terms, &n));
        let terms =
            json!([{"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["z1"]}]}]);
        assert!(!terms_match(&terms, &n));
        let terms =
            json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["a"]}]}]);
        assert!(terms_match(&terms, &n));
        assert!(
            !terms_match(&json!([{}]), &n),
            "an empty term matches nothing"
        );
    }

    #[test]
    fn taints_need_matching_tolerations() {
        let n = node(
            "a",
            json!({}),
            json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
            {"key": "soft", "effect": "PreferNoSchedule"}]),
        );
        let pod = json!({"spec": {}});
        assert_eq!(untolerated_taint(&pod, &n).unwrap()["key"], "dedicated");
        let pod = json!({"spec": {"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu"}]}});
        assert!(untolerated_taint(&pod, &n).is_none());
        let pod = json!({"spec": {"tolerations": [{"key": "dedicated", "value": "cpu"}]}});
        assert!(untolerated_taint(&pod, &n).is_some());
        let pod = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        assert!(untolerated_taint(&pod, &n).is_none());
    }
}
