//! The Job controller: runs pods (`<job>-<5 random chars>`, labelled
//! `batch.kubernetes.io/job-name` and `batch.kubernetes.io/controller-uid`
//! and their legacy forms) until `completions` succeed (any one success
//! when `completions` is unset), at most `parallelism` at a time. Pods
//! carry the `batch.kubernetes.io/job-tracking` finalizer, as with the real
//! controller's tracking: a pod's end is counted into `succeeded` or
//! `failed` and the finalizer removed in one step, so counts survive pod
//! deletion and a pod deleted while running counts as failed. More than
//! `backoffLimit` failures, or `activeDeadlineSeconds` exceeded, fail the
//! Job (`FailureTarget`, then `Failed` with reason `BackoffLimitExceeded`
//! or `DeadlineExceeded`); success sets `SuccessCriteriaMet` and
//! `Complete` with `completionTime`. Remaining pods of a finished Job are
//! deleted; `suspend` deletes active pods and sets `Suspended`;
//! `ttlSecondsAfterFinished` deletes a finished Job (the TTL-after-finished
//! controller). Not modelled: the `Indexed` completion mode, pod failure
//! policies, success policies, and the exponential back-off between
//! retries (failed pods are replaced at once).

use std::time::Duration;

use serde_json::{Value, json};

use super::gc::Propagation;
use super::{
    Selector, claim_pods, condition_true, controller_name, create, delete, delete_pod, deleting,
    get, int, phase, pod_from_template, pod_ready, set_condition, update, update_status,
};
use crate::handlers::State;
use crate::meta::meta_str;
use crate::store::Event;

/// The finalizer the Job controller tracks its pods with.
pub const TRACKING: &str = "batch.kubernetes.io/job-tracking";

/// The Job controller.
pub const JOBS: super::Workload = super::Workload {
    primary: ("batch", "jobs"),
    child: ("", "pods"),
    kind: "Job",
    also: orphan_pod,
    sync: reconcile,
    missing: release_pods,
};

/// Whether a Job has finished (Complete or Failed true).
pub fn finished(job: &Value) -> Option<&'static str> {
    if condition_true(&job["status"], "Complete") {
        Some("Complete")
    } else if condition_true(&job["status"], "Failed") {
        Some("Failed")
    } else {
        None
    }
}

fn has_tracking(p: &Value) -> bool {
    p["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == TRACKING))
}

fn untrack(st: &mut State, p: &Value) {
    let mut new = p.clone();
    if let Some(f) = new["metadata"]["finalizers"].as_array_mut() {
        f.retain(|x| x != TRACKING);
    }
    let _ = update(st, "", "pods", &new);
}

/// Pods a gone Job orphaned still carry its tracking finalizer.
fn orphan_pod(ev: &Event, out: &mut Vec<(String, String)>) {
    if ev.key.0.is_empty() && ev.key.1 == "pods" {
        for o in std::iter::once(&ev.obj).chain(ev.prev.iter()) {
            if let Some(name) = o.label("batch.kubernetes.io/job-name") {
                out.push((o.namespace.clone(), name.to_string()));
            }
        }
    }
}

/// Removes the tracking finalizer from the pods of a Job that is gone (or
/// that orphaned them), so they can be deleted.
fn release_pods(st: &mut State, ns: &str, job: &str) {
    for o in super::objects_in(st, "", "pods", ns) {
        let v = o.value();
        let ours = controller_name(&v, "Job").as_deref() == Some(job)
            || (super::controller_of(&v).is_none()
                && o.label("batch.kubernetes.io/job-name") == Some(job));
        if ours && has_tracking(&v) {
            untrack(st, &v);
        }
    }
}

fn reconcile(st: &mut State, job: &Value) -> Option<Duration> {
    let ns = meta_str(job, "namespace").to_string();
    let name = meta_str(job, "name").to_string();
    let uid = meta_str(job, "uid").to_string();
    let selector = if job["spec"]["selector"].is_object() {
        Selector::from_value(&job["spec"]["selector"])
    } else {
        Selector::from_value(&json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}))
    };
    let pods = claim_pods(st, job, &selector);
    let mut status = job["status"].clone();
    if !status.is_object() {
        status = json!({});
    }
    let mut succeeded = int(&status["succeeded"], 0);
    let mut failed = int(&status["failed"], 0);
    let mut active = Vec::new();
    // Count finished pods once (and pods deleted while running as failed).
    for p in &pods {
        let terminal = matches!(phase(p), "Succeeded" | "Failed");
        if has_tracking(p) && (terminal || deleting(p)) {
            if phase(p) == "Succeeded" {
                succeeded += 1;
            } else {
                failed += 1;
            }
            untrack(st, p);
        } else if !terminal && !deleting(p) {
            active.push(p.clone());
        }
    }
    let now = jiff::Timestamp::now();
    let now_s = crate::meta::now();
    let mut conditions: Vec<Value> = status["conditions"].as_array().cloned().unwrap_or_default();
    let done = finished(job);
    let suspended = job["spec"]["suspend"] == true;
    if done.is_none() && !suspended && status.get("startTime").is_none() {
        status["startTime"] = json!(now_s);
    }
    let completions = job["spec"]["completions"].as_i64();
    let parallelism = int(&job["spec"]["parallelism"], 1).max(0);
    let backoff = int(&job["spec"]["backoffLimit"], 6);
    let deadline = job["spec"]["activeDeadlineSeconds"].as_i64();
    let started = status["startTime"]
        .as_str()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    let mut requeue = None;
    let mut outcome = done;
    if outcome.is_none() {
        let complete = match completions {
            Some(c) => succeeded >= c,
            None => succeeded > 0 && active.is_empty(),
        };
        let over_deadline = deadline
            .zip(started)
            .is_some_and(|(d, s)| now.as_second() - s.as_second() >= d);
        if complete {
            set_condition(
                &mut conditions,
                "SuccessCriteriaMet",
                "True",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                false,
            );
            set_condition(
                &mut conditions,
                "Complete",
                "True",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                false,
            );
            status["completionTime"] = json!(now_s);
            outcome = Some("Complete");
        } else if failed > backoff || over_deadline {
            let (reason, msg) = if over_deadline {
                (
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline",
                )
            } else {
                (
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                )
            };
            set_condition(&mut conditions, "FailureTarget", "True", reason, msg, false);
            set_condition(&mut conditions, "Failed", "True", reason, msg, false);
            outcome = Some("Failed");
        } else if let (Some(d), Some(s)) = (deadline, started) {
            requeue = Some(Duration::from_secs(
                (s.as_second() + d - now.as_second()).max(1) as u64,
            ));
        }
    }
    if outcome.is_some() || suspended {
        for p in &active {
            delete_pod(st, p);
        }
        active.clear();
    }
    if suspended && outcome.is_none() {
        set_condition(
            &mut conditions,
            "Suspended",
            "True",
            "JobSuspended",
            "Job suspended",
            false,
        );
    } else if conditions
        .iter()
        .any(|c| c["type"] == "Suspended" && c["status"] == "True")
    {
        set_condition(
            &mut conditions,
            "Suspended",
            "False",
            "JobResumed",
            "Job resumed",
            false,
        );
    }
    if outcome.is_none() && !suspended && !deleting(job) {
        let want = match completions {
            Some(c) => (c - succeeded).min(parallelism),
            None if succeeded > 0 => 0,
            None => parallelism,
        }
        .max(0) as usize;
        for _ in active.len()..want {
            let mut pod =
                pod_from_template(&job["spec"]["template"], job, None, &format!("{name}-"));
            let labels = &mut pod["metadata"]["labels"];
            if !labels.is_object() {
                *labels = json!({});
            }
            for (k, v) in [
                ("batch.kubernetes.io/controller-uid", uid.as_str()),
                ("batch.kubernetes.io/job-name", name.as_str()),
                ("controller-uid", uid.as_str()),
                ("job-name", name.as_str()),
            ] {
                labels[k] = json!(v);
            }
            let fins = pod["metadata"]["finalizers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut fins: Vec<Value> = fins.into_iter().filter(|f| f != TRACKING).collect();
            fins.push(json!(TRACKING));
            pod["metadata"]["finalizers"] = json!(fins);
            match create(st, "", "pods", &ns, pod) {
                Ok(p) => active.push(p),
                Err(e) => {
                    crate::events::record(
                        st,
                        job,
                        crate::events::EventType::Warning,
                        "FailedCreate",
                        &format!("Error creating: {}", e.message),
                        "job-controller",
                    );
                    requeue = Some(Duration::from_secs(1));
                    break;
                }
            }
        }
    }
    status["active"] = json!(active.len());
    status["ready"] = json!(active.iter().filter(|p| pod_ready(p)).count());
    status["succeeded"] = json!(succeeded);
    status["failed"] = json!(failed);
    status["terminating"] = json!(pods.iter().filter(|p| deleting(p)).count());
    status["uncountedTerminatedPods"] = json!({});
    if !conditions.is_empty() {
        status["conditions"] = json!(conditions);
    }
    super::omit_zero(
        &mut status,
        &["active", "succeeded", "failed", "terminating"],
    );
    if let Some(cur) = get(st, "batch", "jobs", &ns, &name) {
        let _ = update_status(st, "batch", "jobs", &cur, status.clone());
    }
    // ttlSecondsAfterFinished.
    if let (Some(_), Some(ttl)) = (outcome, job["spec"]["ttlSecondsAfterFinished"].as_i64()) {
        let at = status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| matches!(c["type"].as_str(), Some("Complete" | "Failed")))
            .filter_map(|c| c["lastTransitionTime"].as_str())
            .filter_map(|t| t.parse::<jiff::Timestamp>().ok())
            .next()
            .map(|t| t.as_second() + ttl);
        if let Some(at) = at {
            if now.as_second() >= at {
                let _ = delete(st, "batch", "jobs", &ns, &name, Propagation::Background);
                return None;
            }
            return Some(Duration::from_secs((at - now.as_second()).max(1) as u64));
        }
    }
    requeue
}
