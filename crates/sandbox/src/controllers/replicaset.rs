//! The ReplicaSet controller: keeps `spec.replicas` active pods matching
//! the selector (creating `<rs>-<5 random chars>` pods from the template,
//! deleting the least useful surplus first), adopts matching orphans, and
//! reports `replicas`, `fullyLabeledReplicas`, `readyReplicas`,
//! `availableReplicas` (ready for `minReadySeconds`), `observedGeneration`
//! and a `ReplicaFailure` condition when pods cannot be created.

use std::time::Duration;

use serde_json::{Value, json};

use super::{
    Selector, claim_pods, create, delete_pod, deleting, get, int, omit_zero, pod_active,
    pod_available, pod_from_template, pod_ready, set_condition, update_status,
};
use crate::events::{self, EventType};
use crate::handlers::State;
use crate::meta::meta_str;

/// The ReplicaSet controller.
pub const REPLICASETS: super::Workload = super::Workload {
    primary: ("apps", "replicasets"),
    child: ("", "pods"),
    kind: "ReplicaSet",
    also: super::ignore_event,
    sync: reconcile,
    missing: super::nothing,
};

/// Ranks pods for deletion: unscheduled, then pending, then not ready,
/// then the most recently created go first (as the real controller's
/// `ActivePods` ordering).
fn deletion_rank(p: &Value) -> (u8, u8, u8, std::cmp::Reverse<String>) {
    let scheduled = p["spec"]["nodeName"]
        .as_str()
        .is_some_and(|n| !n.is_empty());
    let phase = match super::phase(p) {
        "Pending" => 0,
        "Unknown" => 1,
        _ => 2,
    };
    (
        u8::from(scheduled),
        phase,
        u8::from(pod_ready(p)),
        std::cmp::Reverse(meta_str(p, "creationTimestamp").to_string()),
    )
}

fn reconcile(st: &mut State, rs: &Value) -> Option<Duration> {
    let ns = meta_str(rs, "namespace").to_string();
    let selector = Selector::from_value(&rs["spec"]["selector"]);
    let mut pods: Vec<Value> = claim_pods(st, rs, &selector)
        .into_iter()
        .filter(pod_active)
        .collect();
    let want = int(&rs["spec"]["replicas"], 1).max(0) as usize;
    let mut failure: Option<String> = None;
    if !deleting(rs) {
        if pods.len() < want {
            let template = &rs["spec"]["template"];
            for _ in pods.len()..want {
                let pod =
                    pod_from_template(template, rs, None, &format!("{}-", meta_str(rs, "name")));
                match create(st, "", "pods", &ns, pod) {
                    Ok(p) => pods.push(p),
                    Err(e) => {
                        events::record(
                            st,
                            rs,
                            EventType::Warning,
                            "FailedCreate",
                            &format!("Error creating: {}", e.message),
                            "replicaset-controller",
                        );
                        failure = Some(e.message);
                        break;
                    }
                }
            }
        } else if pods.len() > want {
            pods.sort_by_key(deletion_rank);
            let surplus: Vec<Value> = pods.drain(..pods.len() - want).collect();
            for p in surplus {
                delete_pod(st, &p);
            }
        }
    }
    let now = jiff::Timestamp::now();
    let min_ready = int(&rs["spec"]["minReadySeconds"], 0);
    let labels = &rs["spec"]["template"]["metadata"]["labels"];
    let fully = pods
        .iter()
        .filter(|p| {
            labels
                .as_object()
                .into_iter()
                .flatten()
                .all(|(k, v)| p["metadata"]["labels"][k] == *v)
        })
        .count();
    let ready = pods.iter().filter(|p| pod_ready(p)).count();
    let available = pods
        .iter()
        .filter(|p| pod_available(p, min_ready, now))
        .count();
    let mut conditions: Vec<Value> = rs["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    match &failure {
        Some(msg) => set_condition(
            &mut conditions,
            "ReplicaFailure",
            "True",
            "FailedCreate",
            msg,
            false,
        ),
        None => conditions.retain(|c| c["type"] != "ReplicaFailure"),
    }
    let mut status = json!({
        "replicas": pods.len(),
        "fullyLabeledReplicas": fully,
        "readyReplicas": ready,
        "availableReplicas": available,
        "observedGeneration": rs["metadata"]["generation"],
    });
    if !conditions.is_empty() {
        status["conditions"] = json!(conditions);
    }
    omit_zero(
        &mut status,
        &["fullyLabeledReplicas", "readyReplicas", "availableReplicas"],
    );
    if let Some(cur) = get(st, "apps", "replicasets", &ns, meta_str(rs, "name")) {
        let _ = update_status(st, "apps", "replicasets", &cur, status);
    }
    if failure.is_some() {
        return Some(Duration::from_secs(1));
    }
    (ready > available).then(|| Duration::from_secs(min_ready.max(1) as u64))
}
