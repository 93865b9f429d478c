//! The Deployment controller, after kube-controller-manager's: a
//! ReplicaSet per pod template named `<deployment>-<pod-template-hash>`
//! (the hash is FNV-32a over the template, plus `status.collisionCount`,
//! encoded as the real controller encodes it), labelled and selected by
//! `pod-template-hash`; rolling updates honouring `maxSurge` and
//! `maxUnavailable` (old ReplicaSets scaled down as new pods become
//! available); the Recreate strategy (old pods gone before the new
//! ReplicaSet scales up); `deployment.kubernetes.io/revision`,
//! `desired-replicas` and `max-replicas` annotations; cleanup of old
//! ReplicaSets beyond `revisionHistoryLimit`; `paused`; and status with the
//! `Available` and `Progressing` conditions and their real reasons, so
//! `kubectl rollout status` completes.
//!
//! Scaling changes only the active ReplicaSet when one is active; during a
//! rollout the rolling-update arithmetic absorbs the change (the real
//! controller's proportional scaling across several active ReplicaSets is
//! not modelled).

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::{
    Selector, adopt, controlled_by, create, delete, deleting, get, int, objects_in, omit_zero,
    owner_ref, update, update_status,
};
use crate::events::{self, EventType};
use crate::handlers::State;
use crate::meta::{meta_mut, meta_str};

/// The label that ties a ReplicaSet and its pods to one template.
pub const HASH_LABEL: &str = "pod-template-hash";
const REVISION: &str = "deployment.kubernetes.io/revision";
const DESIRED: &str = "deployment.kubernetes.io/desired-replicas";
const MAX: &str = "deployment.kubernetes.io/max-replicas";
const SOURCE: &str = "deployment-controller";

/// The Deployment controller.
pub const DEPLOYMENTS: super::Workload = super::Workload {
    primary: ("apps", "deployments"),
    child: ("apps", "replicasets"),
    kind: "Deployment",
    also: super::ignore_event,
    sync,
    missing: super::nothing,
};

/// `controller.ComputeHash`: FNV-32a over the template (here its canonical
/// JSON, keys sorted) and the collision count, as a safe-encoded decimal.
pub fn template_hash(template: &Value, collisions: Option<u32>) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    canonical(template, &mut feed);
    if let Some(c) = collisions {
        feed(&c.to_le_bytes());
    }
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

fn canonical(v: &Value, feed: &mut impl FnMut(&[u8])) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            feed(b"{");
            for k in keys {
                feed(k.as_bytes());
                feed(b":");
                canonical(&m[k], feed);
                feed(b",");
            }
            feed(b"}");
        }
        Value::Array(a) => {
            feed(b"[");
            for x in a {
                canonical(x, feed);
                feed(b",");
            }
            feed(b"]");
        }
        other => feed(other.to_string().as_bytes()),
    }
}

fn without_hash(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(l) = t["metadata"]["labels"].as_object_mut() {
        l.remove(HASH_LABEL);
        if l.is_empty() {
            t["metadata"].as_object_mut().map(|m| m.remove("labels"));
        }
    }
    t
}

fn revision(rs: &Value) -> i64 {
    rs["metadata"]["annotations"][REVISION]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn replicas(v: &Value) -> i64 {
    int(&v["spec"]["replicas"], 1).max(0)
}

fn status_int(v: &Value, f: &str) -> i64 {
    int(&v["status"][f], 0)
}

/// Resolves an IntOrString against `total` (percentages round up for
/// surge, down for unavailable).
fn resolve(v: &Value, default_pct: i64, total: i64, round_up: bool) -> i64 {
    let pct = |p: i64| {
        if round_up {
            (p * total + 99) / 100
        } else {
            p * total / 100
        }
    };
    match v {
        Value::Number(n) => n.as_i64().unwrap_or(0).max(0),
        Value::String(s) => s
            .strip_suffix('%')
            .and_then(|p| p.parse::<i64>().ok())
            .map(pct)
            .unwrap_or(0),
        _ => pct(default_pct),
    }
}

fn recreate(d: &Value) -> bool {
    d["spec"]["strategy"]["type"] == "Recreate"
}

/// (maxSurge, maxUnavailable) as the real `ResolveFenceposts`.
fn fenceposts(d: &Value) -> (i64, i64) {
    if recreate(d) {
        return (0, 0);
    }
    let ru = &d["spec"]["strategy"]["rollingUpdate"];
    let n = replicas(d);
    let surge = resolve(&ru["maxSurge"], 25, n, true);
    let mut unavailable = resolve(&ru["maxUnavailable"], 25, n, false);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable.min(n))
}

fn sum(rss: &[Value], f: impl Fn(&Value) -> i64) -> i64 {
    rss.iter().map(f).sum()
}

struct Rollout<'a> {
    d: &'a Value,
    ns: String,
    n: i64,
    surge: i64,
    unavailable: i64,
}

impl Rollout<'_> {
    /// Scales a ReplicaSet, recording the event the real controller records.
    fn scale(&self, st: &mut State, rs: &mut Value, to: i64) -> bool {
        let from = replicas(rs);
        let ann = &rs["metadata"]["annotations"];
        let desired = self.n.to_string();
        let max = (self.n + self.surge).to_string();
        if from == to && ann[DESIRED] == desired.as_str() && ann[MAX] == max.as_str() {
            return false;
        }
        let mut new = rs.clone();
        new["spec"]["replicas"] = json!(to);
        let a = meta_mut(&mut new)
            .entry("annotations")
            .or_insert_with(|| json!({}));
        a[DESIRED] = json!(desired);
        a[MAX] = json!(max);
        if update(st, "apps", "replicasets", &new).is_err() {
            return false;
        }
        if let Some(cur) = get(st, "apps", "replicasets", &self.ns, meta_str(rs, "name")) {
            *rs = cur;
        }
        if from != to {
            let dir = if to > from { "up" } else { "down" };
            events::record(
                st,
                self.d,
                EventType::Normal,
                "ScalingReplicaSet",
                &format!(
                    "Scaled {dir} replica set {} from {from} to {to}",
                    meta_str(rs, "name")
                ),
                SOURCE,
            );
        }
        from != to
    }
}

fn sync(st: &mut State, d: &Value) -> Option<Duration> {
    let ns = meta_str(d, "namespace").to_string();
    let uid = meta_str(d, "uid").to_string();
    let selector = Selector::from_value(&d["spec"]["selector"]);
    // Claim ReplicaSets: ours, plus matching orphans.
    let mut rss: Vec<Value> = Vec::new();
    for o in objects_in(st, "apps", "replicasets", &ns) {
        let v = o.value();
        if (controlled_by(&v, &uid)
            || (super::controller_of(&v).is_none()
                && selector.matches(&o)
                && adopt(st, "apps", "replicasets", d, &v)))
            && let Some(v) = get(st, "apps", "replicasets", &ns, &o.name)
        {
            rss.push(v);
        }
    }
    let template = &d["spec"]["template"];
    let new_idx = rss
        .iter()
        .position(|rs| without_hash(&rs["spec"]["template"]) == without_hash(template));
    let mut new_rs = new_idx.map(|i| rss.remove(i));
    let mut old: Vec<Value> = rss;
    old.sort_by(|a, b| {
        meta_str(a, "creationTimestamp")
            .cmp(meta_str(b, "creationTimestamp"))
            .then(meta_str(a, "name").cmp(meta_str(b, "name")))
    });
    let (surge, unavailable) = fenceposts(d);
    let r = Rollout {
        d,
        ns: ns.clone(),
        n: replicas(d),
        surge,
        unavailable,
    };
    let mut created: Option<String> = None;
    let paused = d["spec"]["paused"] == true;
    if deleting(d) {
        // Only the status is kept up to date while a Deployment goes.
    } else if paused {
        // A paused Deployment scales but does not roll out.
        let active: Vec<usize> = (0..old.len()).filter(|i| replicas(&old[*i]) > 0).collect();
        match (&mut new_rs, active.as_slice()) {
            (Some(rs), []) => {
                r.scale(st, rs, r.n);
            }
            (None, [i]) => {
                let mut rs = old[*i].clone();
                r.scale(st, &mut rs, r.n);
                old[*i] = rs;
            }
            _ => {}
        }
    } else {
        let max_old_rev = old.iter().map(revision).max().unwrap_or(0);
        // The new ReplicaSet is created at once for rolling updates and
        // once the old pods are gone for Recreate.
        let old_running = old.iter().any(|rs| status_int(rs, "replicas") > 0);
        if new_rs.is_none()
            && (!recreate(d) || (!old_running && old.iter().all(|rs| replicas(rs) == 0)))
        {
            match create_new_rs(st, d, &r, &old, max_old_rev + 1) {
                Ok(rs) => {
                    created = Some(meta_str(&rs, "name").to_string());
                    new_rs = Some(rs);
                }
                Err(retry) => return retry,
            }
        }
        if let Some(rs) = &mut new_rs
            && revision(rs) <= max_old_rev
        {
            // A rollback to an older template takes the next revision.
            let mut new = rs.clone();
            meta_mut(&mut new)
                .entry("annotations")
                .or_insert_with(|| json!({}))[REVISION] = json!((max_old_rev + 1).to_string());
            if update(st, "apps", "replicasets", &new).is_ok()
                && let Some(cur) = get(st, "apps", "replicasets", &ns, meta_str(rs, "name"))
            {
                *rs = cur;
            }
        }
        if recreate(d) {
            rollout_recreate(st, &r, &mut old, new_rs.as_mut());
        } else if let Some(new) = &mut new_rs {
            rollout_rolling(st, &r, &mut old, new);
        }
        if let Some(rev) = new_rs.as_ref().map(revision)
            && d["metadata"]["annotations"][REVISION] != rev.to_string().as_str()
        {
            let mut new = d.clone();
            meta_mut(&mut new)
                .entry("annotations")
                .or_insert_with(|| json!({}))[REVISION] = json!(rev.to_string());
            let _ = update(st, "apps", "deployments", &new);
        }
    }
    let cur = get(st, "apps", "deployments", &ns, meta_str(d, "name"))?;
    let status = status(st, &cur, &r, &old, new_rs.as_ref(), created.as_deref());
    let complete = complete(&cur, &status);
    if complete && !deleting(&cur) {
        cleanup(st, &cur, &old);
    }
    let _ = update_status(st, "apps", "deployments", &cur, status.clone());
    if complete || paused {
        return None;
    }
    // Re-check for the progress deadline.
    let deadline = int(&cur["spec"]["progressDeadlineSeconds"], 600);
    let last = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Progressing" && c["reason"] != "ProgressDeadlineExceeded")
        .and_then(|c| c["lastUpdateTime"].as_str())
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())?;
    let left = last.as_second() + deadline - jiff::Timestamp::now().as_second();
    Some(Duration::from_secs(left.max(1) as u64))
}

/// Creates the ReplicaSet of the current template. `Err(Some(d))` retries.
fn create_new_rs(
    st: &mut State,
    d: &Value,
    r: &Rollout,
    old: &[Value],
    rev: i64,
) -> Result<Value, Option<Duration>> {
    let collisions = d["status"]["collisionCount"].as_u64().map(|c| c as u32);
    let hash = template_hash(&d["spec"]["template"], collisions);
    let name = format!("{}-{hash}", meta_str(d, "name"));
    let mut template = d["spec"]["template"].clone();
    template["metadata"]["labels"][HASH_LABEL] = json!(hash);
    let mut selector = d["spec"]["selector"].clone();
    selector["matchLabels"][HASH_LABEL] = json!(hash);
    let want = if recreate(d) {
        r.n
    } else {
        // NewRSNewReplicas for a ReplicaSet at 0.
        let current = sum(old, replicas);
        (r.n + r.surge - current).clamp(0, r.n)
    };
    let mut annotations: Map<String, Value> = d["metadata"]["annotations"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for k in [
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION,
        "deployment.kubernetes.io/revision-history",
        DESIRED,
        MAX,
        "deprecated.deployment.rollback.to",
    ] {
        annotations.remove(k);
    }
    annotations.insert(REVISION.into(), json!(rev.to_string()));
    annotations.insert(DESIRED.into(), json!(r.n.to_string()));
    annotations.insert(MAX.into(), json!((r.n + r.surge).to_string()));
    let mut spec = json!({"replicas": want, "selector": selector, "template": template});
    if let Some(m) = d["spec"].get("minReadySeconds") {
        spec["minReadySeconds"] = m.clone();
    }
    let rs = json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name, "labels": template["metadata"]["labels"],
            "annotations": annotations, "ownerReferences": [owner_ref(d)]},
        "spec": spec,
    });
    match create(st, "apps", "replicasets", &r.ns, rs) {
        Ok(rs) => {
            events::record(
                st,
                d,
                EventType::Normal,
                "ScalingReplicaSet",
                &format!("Scaled up replica set {name} from 0 to {want}"),
                SOURCE,
            );
            Ok(rs)
        }
        Err(e) if e.reason == "AlreadyExists" => {
            // Someone else's ReplicaSet has the name: bump collisionCount so
            // the next hash differs (a matching one of ours would have been
            // found as the new ReplicaSet).
            let mut status = d["status"].clone();
            if !status.is_object() {
                status = json!({});
            }
            status["collisionCount"] = json!(collisions.unwrap_or(0) + 1);
            let _ = update_status(st, "apps", "deployments", d, status);
            Err(None)
        }
        Err(e) => {
            events::record(
                st,
                d,
                EventType::Warning,
                "FailedCreate",
                &format!("Failed to create new replica set {name:?}: {}", e.message),
                SOURCE,
            );
            Err(Some(Duration::from_secs(1)))
        }
    }
}

fn rollout_rolling(st: &mut State, r: &Rollout, old: &mut [Value], new: &mut Value) {
    let all_replicas = |old: &[Value], new: &Value| sum(old, replicas) + replicas(new);
    // reconcileNewReplicaSet.
    let cur = replicas(new);
    if cur > r.n {
        r.scale(st, new, r.n);
        return;
    }
    if cur < r.n {
        let total = all_replicas(old, new);
        let max_total = r.n + r.surge;
        if total < max_total {
            let up = (max_total - total).min(r.n - cur);
            if r.scale(st, new, cur + up) {
                return;
            }
        }
    } else {
        r.scale(st, new, cur);
    }
    // reconcileOldReplicaSets.
    let old_count = sum(old, replicas);
    if old_count == 0 {
        return;
    }
    let min_available = r.n - r.unavailable;
    let new_unavailable = replicas(new) - status_int(new, "availableReplicas");
    let max_scaled_down = all_replicas(old, new) - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return;
    }
    // Unhealthy old replicas go first.
    let mut cleaned = 0;
    for rs in old.iter_mut() {
        if cleaned >= max_scaled_down {
            break;
        }
        let (want, avail) = (replicas(rs), status_int(rs, "availableReplicas"));
        if want == 0 || want <= avail {
            continue;
        }
        let down = (max_scaled_down - cleaned).min(want - avail);
        r.scale(st, rs, want - down);
        cleaned += down;
    }
    // Then healthy ones, as far as availability allows.
    let available =
        sum(old, |rs| status_int(rs, "availableReplicas")) + status_int(new, "availableReplicas");
    if available <= min_available {
        return;
    }
    let total_down = available - min_available;
    let mut done = 0;
    for rs in old.iter_mut() {
        if done >= total_down {
            break;
        }
        let want = replicas(rs);
        if want == 0 {
            continue;
        }
        let down = want.min(total_down - done);
        r.scale(st, rs, want - down);
        done += down;
    }
}

fn rollout_recreate(st: &mut State, r: &Rollout, old: &mut [Value], new: Option<&mut Value>) {
    for rs in old.iter_mut() {
        if replicas(rs) > 0 {
            r.scale(st, rs, 0);
        }
    }
    if old.iter().any(|rs| status_int(rs, "replicas") > 0) {
        return;
    }
    if let Some(new) = new {
        r.scale(st, new, r.n);
    }
}

fn complete(d: &Value, status: &Value) -> bool {
    let n = replicas(d);
    status_int(&json!({"status": status}), "updatedReplicas") == n
        && int(&status["replicas"], 0) == n
        && int(&status["availableReplicas"], 0) == n
        && int(&status["observedGeneration"], 0) >= int(&d["metadata"]["generation"], 0)
}

fn status(
    _st: &State,
    d: &Value,
    r: &Rollout,
    old: &[Value],
    new: Option<&Value>,
    created: Option<&str>,
) -> Value {
    let all: Vec<&Value> = old.iter().chain(new).collect();
    let s = |f: &str| all.iter().map(|rs| status_int(rs, f)).sum::<i64>();
    let available = s("availableReplicas");
    let total_spec: i64 = all.iter().map(|rs| replicas(rs)).sum();
    let mut status = json!({
        "observedGeneration": d["metadata"]["generation"],
        "replicas": s("replicas"),
        "updatedReplicas": new.map(|rs| status_int(rs, "replicas")).unwrap_or(0),
        "readyReplicas": s("readyReplicas"),
        "availableReplicas": available,
        "unavailableReplicas": (total_spec - available).max(0),
    });
    if let Some(c) = d["status"].get("collisionCount") {
        status["collisionCount"] = c.clone();
    }
    let mut conditions: Vec<Value> = d["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if available >= r.n - r.unavailable {
        super::set_condition(
            &mut conditions,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            true,
        );
    } else {
        super::set_condition(
            &mut conditions,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            true,
        );
    }
    let now = crate::meta::now();
    let progressing = |conditions: &mut Vec<Value>, status: &str, reason: &str, msg: String| {
        let keep = conditions
            .iter()
            .find(|c| c["type"] == "Progressing")
            .filter(|c| c["status"] == status)
            .map(|c| c["lastTransitionTime"].clone());
        conditions.retain(|c| c["type"] != "Progressing");
        conditions.push(
            json!({"type": "Progressing", "status": status, "reason": reason,
            "message": msg, "lastUpdateTime": now,
            "lastTransitionTime": keep.unwrap_or(json!(now))}),
        );
    };
    let cur = conditions
        .iter()
        .find(|c| c["type"] == "Progressing")
        .cloned();
    let new_name = new.map(|rs| meta_str(rs, "name").to_string());
    if let Some(name) = created {
        progressing(
            &mut conditions,
            "True",
            "NewReplicaSetCreated",
            format!("Created new replica set {name:?}"),
        );
    } else if cur.is_none()
        && let Some(name) = &new_name
    {
        progressing(
            &mut conditions,
            "True",
            "FoundNewReplicaSet",
            format!("Found new replica set {name:?}"),
        );
    }
    let cur = conditions
        .iter()
        .find(|c| c["type"] == "Progressing")
        .cloned();
    let settled = int(&status["replicas"], 0) == int(&status["updatedReplicas"], 0)
        && cur
            .as_ref()
            .is_some_and(|c| c["reason"] == "NewReplicaSetAvailable");
    if !settled && d["spec"]["paused"] != true {
        let old_status = &d["status"];
        let was = |f: &str| int(&old_status[f], 0);
        let st_int = |f: &str| int(&status[f], 0);
        let made_progress = st_int("updatedReplicas") > was("updatedReplicas")
            || st_int("readyReplicas") > was("readyReplicas")
            || st_int("availableReplicas") > was("availableReplicas")
            || (st_int("replicas") - st_int("updatedReplicas"))
                < (was("replicas") - was("updatedReplicas"));
        let label = new_name
            .as_ref()
            .map(|n| format!("ReplicaSet {n:?}"))
            .unwrap_or_else(|| format!("Deployment {:?}", meta_str(d, "name")));
        if complete(d, &status) {
            progressing(
                &mut conditions,
                "True",
                "NewReplicaSetAvailable",
                format!("{label} has successfully progressed."),
            );
        } else if made_progress {
            progressing(
                &mut conditions,
                "True",
                "ReplicaSetUpdated",
                format!("{label} is progressing."),
            );
        } else if let Some(c) = &cur
            && c["reason"] != "ProgressDeadlineExceeded"
        {
            let deadline = int(&d["spec"]["progressDeadlineSeconds"], 600);
            let last = c["lastUpdateTime"]
                .as_str()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok());
            if last.is_some_and(|t| t.as_second() + deadline < jiff::Timestamp::now().as_second()) {
                progressing(
                    &mut conditions,
                    "False",
                    "ProgressDeadlineExceeded",
                    format!("{label} has timed out progressing."),
                );
            }
        }
    }
    // Condition order as the real controller keeps it: Available first.
    conditions.sort_by_key(|c| if c["type"] == "Available" { 0 } else { 1 });
    status["conditions"] = json!(conditions);
    omit_zero(
        &mut status,
        &[
            "replicas",
            "updatedReplicas",
            "readyReplicas",
            "availableReplicas",
            "unavailableReplicas",
        ],
    );
    status
}

/// Deletes the oldest scaled-down ReplicaSets beyond `revisionHistoryLimit`.
fn cleanup(st: &mut State, d: &Value, old: &[Value]) {
    let limit = int(&d["spec"]["revisionHistoryLimit"], 10).max(0) as usize;
    let mut alive: Vec<&Value> = old.iter().filter(|rs| !deleting(rs)).collect();
    if alive.len() <= limit {
        return;
    }
    alive.sort_by_key(|rs| revision(rs));
    let n = alive.len() - limit;
    for rs in alive.into_iter().take(n) {
        if status_int(rs, "replicas") != 0
            || replicas(rs) != 0
            || int(&rs["metadata"]["generation"], 0) > status_int(rs, "observedGeneration")
        {
            continue;
        }
        let _ = delete(
            st,
            "apps",
            "replicasets",
            meta_str(rs, "namespace"),
            meta_str(rs, "name"),
            super::gc::Propagation::Background,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_hash_is_stable_and_safe() {
        let t = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
        let reordered = json!({"spec": {"containers": [{"image": "nginx", "name": "c"}]}, "metadata": {"labels": {"app": "web"}}});
        let h = template_hash(&t, None);
        assert_eq!(h, template_hash(&reordered, None));
        assert_ne!(h, template_hash(&t, Some(1)));
        assert!(!h.is_empty() && h.len() <= 10);
        assert!(
            h.bytes()
                .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b))
        );
        let other = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx:2"}]}});
        assert_ne!(h, template_hash(&other, None));
    }

    #[test]
    fn fenceposts_resolve_like_the_real_controller() {
        let d = |s: Value, n: i64| json!({"spec": {"replicas": n, "strategy": s}});
        assert_eq!(fenceposts(&d(json!({}), 4)), (1, 1));
        assert_eq!(fenceposts(&d(json!({}), 10)), (3, 2));
        assert_eq!(
            fenceposts(&d(
                json!({"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}),
                3
            )),
            (0, 1)
        );
        assert_eq!(
            fenceposts(&d(
                json!({"rollingUpdate": {"maxSurge": "50%", "maxUnavailable": 5}}),
                3
            )),
            (2, 3)
        );
        assert_eq!(fenceposts(&d(json!({"type": "Recreate"}), 3)), (0, 0));
    }
}
