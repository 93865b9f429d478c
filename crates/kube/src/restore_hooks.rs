//! Runs the restore hooks of the workloads a restore applied (see
//! [`lifeboat_core::hooks::restore`]), once every object is in.
//!
//! ```text
//! per restored workload (Deployment, StatefulSet, Pod), concurrently,
//! every wait bounded by the longest waitTimeout of its hooks:
//!   init containers (added to the template before it was applied)
//!     ─▶ observe: a pod of the workload ran them (initContainerStatuses)
//!     ─▶ record each, patch them out of the template (a new rollout)
//!   exec hooks
//!     ─▶ observe the workload's current pods (owner: the workload, or a
//!        ReplicaSet it owns; not deleting; without the added init
//!        containers) until `replicas` of them had their hooks run
//!     ─▶ per pod: container Running (Ready with waitForReady) ─▶ exec
//!        (`stdinFrom`: the backup's dump artifact streamed into stdin,
//!        decrypted and checked as it streams, stdin closed at its end)
//!     ─▶ waitTimeout passed: each hook not run is recorded failed
//! ```
//!
//! The state is observed by polling the API server (every
//! [`POLL`]), so a restore waits for pods, never a controller cycle: the
//! controller runs restores as tasks beside its cycle.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use lifeboat_core::hooks::dump::workload_owner_dir;
use lifeboat_core::hooks::restore::{InitContainer, RestoreExec, WorkloadHooks};
use lifeboat_core::model::RestoreHookOnError;
use lifeboat_store::{ArtifactEntry, HookCounts, HookEntry, RestoreSource};
use serde_json::{Value, json};

use crate::hooks as exec;

/// How often the pods are observed while waiting.
pub const POLL: Duration = Duration::from_millis(250);

/// A restored workload with hooks.
#[derive(Debug, Clone)]
pub struct Target {
    /// The TARGET namespace.
    pub namespace: String,
    /// The SOURCE namespace (dump artifacts are found by it).
    pub source_namespace: String,
    /// `Deployment`, `StatefulSet` or `Pod`.
    pub kind: String,
    pub name: String,
    pub hooks: WorkloadHooks,
}

/// What the hooks of a restore did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookRuns {
    pub entries: Vec<HookEntry>,
    pub counts: HookCounts,
    /// A hook with `onError: fail` failed: the restore is PartiallyFailed.
    pub failed_restore: bool,
}

/// Adds `init` before the pod spec's own init containers (as Velero
/// does); returns the record's change line.
pub fn add_init_containers(pod_spec: &mut Value, init: &[InitContainer]) -> Option<String> {
    if init.is_empty() {
        return None;
    }
    let mut list: Vec<Value> = init
        .iter()
        .map(|i| json!({"name": i.name, "image": i.image, "command": i.command}))
        .collect();
    if let Some(own) = pod_spec.get("initContainers").and_then(Value::as_array) {
        list.extend(
            own.iter()
                .filter(|c| {
                    let n = c.get("name").and_then(Value::as_str).unwrap_or_default();
                    !init.iter().any(|i| i.name == n)
                })
                .cloned(),
        );
    }
    pod_spec["initContainers"] = Value::Array(list);
    Some(format!(
        "restore hook init container{} {} added; removed again once a pod ran {}",
        if init.len() == 1 { "" } else { "s" },
        init.iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        if init.len() == 1 { "it" } else { "them" },
    ))
}

/// Runs the hooks of every target, concurrently; `source` streams the
/// dump artifacts that `stdinFrom` names.
pub async fn run(
    client: &kube::Client,
    targets: &[Target],
    source: &impl RestoreSource,
) -> HookRuns {
    let runs =
        futures::future::join_all(targets.iter().map(|t| run_target(client, t, source))).await;
    let mut out = HookRuns::default();
    for (entries, fatal) in runs {
        out.failed_restore |= fatal;
        for e in entries {
            out.counts.ran += 1;
            if e.failed() {
                out.counts.failed += 1;
            }
            out.entries.push(e);
        }
    }
    out
}

fn api_resource(kind: &str) -> Option<ApiResource> {
    let (group, plural) = match kind {
        "Deployment" => ("apps", "deployments"),
        "StatefulSet" => ("apps", "statefulsets"),
        "Pod" => ("", "pods"),
        _ => return None,
    };
    Some(ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, "v1", kind),
        plural,
    ))
}

fn entry(
    t: &Target,
    pod: &str,
    container: &str,
    hook: &str,
    phase: &str,
    command: &[String],
) -> HookEntry {
    HookEntry::started(
        (&t.namespace, pod, container),
        hook,
        phase,
        command,
        Timestamp::now(),
    )
}

fn failed(mut e: HookEntry, why: String) -> HookEntry {
    e.duration_ms = Some(0);
    e.error = Some(why);
    e
}

/// The workload as JSON, or `None` when it is gone.
async fn workload(client: &kube::Client, t: &Target) -> Option<Value> {
    let ar = api_resource(&t.kind)?;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &t.namespace, &ar);
    let obj = api.get_opt(&t.name).await.ok()??;
    serde_json::to_value(obj).ok()
}

fn uid(v: &Value) -> String {
    v.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn owned_by(v: &Value, owners: &BTreeSet<String>) -> bool {
    v.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|r| {
            r.get("controller").and_then(Value::as_bool) == Some(true)
                && r.get("uid")
                    .and_then(Value::as_str)
                    .is_some_and(|u| owners.contains(u))
        })
}

/// The workload's pods (not deleting), and how many it wants.
async fn pods_of(client: &kube::Client, t: &Target, w: &Value) -> (Vec<Value>, usize) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &t.namespace);
    if t.kind == "Pod" {
        return (vec![w.clone()], 1);
    }
    let desired = w
        .pointer("/spec/replicas")
        .and_then(Value::as_u64)
        .unwrap_or(1) as usize;
    let mut owners: BTreeSet<String> = [uid(w)].into();
    if t.kind == "Deployment" {
        let rs: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            &t.namespace,
            &ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("apps", "v1", "ReplicaSet"),
                "replicasets",
            ),
        );
        if let Ok(list) = rs.list(&ListParams::default()).await {
            for r in list.items {
                let r = serde_json::to_value(r).unwrap_or_default();
                if owned_by(&r, &owners) {
                    owners.insert(uid(&r));
                }
            }
        }
    }
    let list = match pods.list(&ListParams::default()).await {
        Ok(l) => l.items,
        Err(_) => Vec::new(),
    };
    let pods = list
        .into_iter()
        .filter_map(|p| serde_json::to_value(p).ok())
        .filter(|p| owned_by(p, &owners) && p.pointer("/metadata/deletionTimestamp").is_none())
        .collect();
    (pods, desired)
}

fn pod_name(p: &Value) -> String {
    p.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn status_of<'a>(p: &'a Value, field: &str, container: &str) -> Option<&'a Value> {
    p.pointer(&format!("/status/{field}"))?
        .as_array()?
        .iter()
        .find(|s| s.get("name").and_then(Value::as_str) == Some(container))
}

fn has_init(p: &Value, names: &[String]) -> bool {
    p.pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| {
            c.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| names.iter().any(|x| x == n))
        })
}

fn ts(v: Option<&Value>) -> Option<Timestamp> {
    v?.as_str()?.parse().ok()
}

/// The artifact of dump hook `hook` for workload `t`: the one of its
/// source namespace, or, when that namespace has several, its owner's.
pub fn pick_artifact<'a>(
    artifacts: &'a [ArtifactEntry],
    hook: &str,
    t: &Target,
) -> Result<&'a ArtifactEntry, String> {
    let of_ns: Vec<&ArtifactEntry> = artifacts
        .iter()
        .filter(|a| a.hook == hook && a.namespace == t.source_namespace)
        .collect();
    let owner = workload_owner_dir(&t.kind, &t.name);
    match of_ns.as_slice() {
        [one] => Ok(one),
        [] => Err(format!(
            "the backup holds no artifact of dump hook {hook} in namespace {}{}; the hook did not run",
            t.source_namespace,
            if artifacts.is_empty() {
                String::new()
            } else {
                format!(
                    " (it holds {})",
                    artifacts
                        .iter()
                        .map(|a| a.file.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        )),
        many => many.iter().find(|a| a.owner == owner).copied().ok_or_else(|| {
            format!(
                "namespace {} has artifacts of dump hook {hook} from {}, none from {owner};                  select the workload whose dump it is with the hook's `owner`",
                t.source_namespace,
                many.iter()
                    .map(|a| a.owner.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }),
    }
}

/// Runs exec hook `h` in pod `pod`, its stdin streamed from the artifact
/// `stdinFrom` names, when it names one.
async fn exec_one(
    client: &kube::Client,
    t: &Target,
    pod: &str,
    h: &RestoreExec,
    source: &impl RestoreSource,
) -> HookEntry {
    let mut e = entry(t, pod, &h.container, &h.name, "post", &h.command);
    let Some(artifact) = &h.stdin_from else {
        let o = exec::run(client, &t.namespace, pod, &h.exec_hook()).await;
        return ended(e, &o);
    };
    let found = match pick_artifact(source.artifacts(), artifact, t) {
        Ok(a) => a.clone(),
        Err(why) => return failed(e, why),
    };
    e.stdin_from = Some(found.file.clone());
    let mut chunks = match source.open_artifact(&found).await {
        Ok(c) => c,
        Err(err) => return failed(e, format!("cannot read {}: {err}", found.file)),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let forward = async move {
        while let Some(c) = chunks.recv().await {
            let c = c.map_err(|err| format!("{} is damaged: {err}", found.file));
            let stop = c.is_err();
            if tx.send(c).await.is_err() || stop {
                break;
            }
        }
    };
    let hook = h.exec_hook();
    let run = exec::run_streaming(
        client,
        &t.namespace,
        pod,
        &hook,
        exec::Streams {
            stdin: Some(rx),
            stdout: None,
        },
    );
    let ((o, moved), ()) = tokio::join!(run, forward);
    e.stdin_bytes = Some(moved.stdin_bytes);
    ended(e, &o)
}

fn ended(mut e: HookEntry, o: &exec::HookOutcome) -> HookEntry {
    e.duration_ms = Some(o.duration.as_millis() as u64);
    e.exit_code = o.exit_code;
    e.stderr = o.stderr.clone();
    e.error = o.error.clone();
    e
}

async fn run_target(
    client: &kube::Client,
    t: &Target,
    source: &impl RestoreSource,
) -> (Vec<HookEntry>, bool) {
    let wait = t.hooks.wait_timeout();
    let deadline = Instant::now() + Duration::from_secs(wait.as_secs().max(1));
    let mut out: Vec<HookEntry> = Vec::new();
    let mut fatal = false;
    let owner = format!("{}/{}", t.kind, t.name);
    for why in &t.hooks.invalid {
        out.push(failed(
            entry(t, "", "", "?", "post", &[]),
            format!("{owner}: {why}"),
        ));
    }
    let init_names: Vec<String> = t.hooks.init.iter().map(|i| i.name.clone()).collect();
    let mut init_removed = init_names.is_empty();
    if !init_names.is_empty() {
        let mut ran = false;
        while !ran && Instant::now() < deadline {
            if let Some(w) = workload(client, t).await {
                let (pods, _) = pods_of(client, t, &w).await;
                for p in pods.iter().filter(|p| has_init(p, &init_names)) {
                    let states: Vec<Option<&Value>> = init_names
                        .iter()
                        .map(|n| {
                            status_of(p, "initContainerStatuses", n)
                                .and_then(|s| s.pointer("/state/terminated"))
                        })
                        .collect();
                    let any_failed = states
                        .iter()
                        .flatten()
                        .any(|s| s.get("exitCode").and_then(Value::as_i64).unwrap_or(0) != 0);
                    if !any_failed && states.iter().any(Option::is_none) {
                        continue;
                    }
                    for (i, s) in t.hooks.init.iter().zip(&states) {
                        let mut e = entry(t, &pod_name(p), &i.name, &i.hook, "init", &i.command);
                        match s {
                            Some(s) => {
                                let code =
                                    s.get("exitCode").and_then(Value::as_i64).unwrap_or(0) as i32;
                                let (start, end) =
                                    (ts(s.get("startedAt")), ts(s.get("finishedAt")));
                                if let Some(st) = start {
                                    e.start = st;
                                }
                                e.duration_ms = Some(match (start, end) {
                                    (Some(a), Some(b)) => {
                                        b.duration_since(a).as_millis().max(0) as u64
                                    }
                                    _ => 0,
                                });
                                e.exit_code = Some(code);
                                if code != 0 {
                                    let reason =
                                        s.get("reason").and_then(Value::as_str).unwrap_or("Error");
                                    e.error = Some(format!(
                                        "init container exited with code {code} ({reason}); the pod stays in Init:Error until it succeeds"
                                    ));
                                    fatal |= i.on_error == RestoreHookOnError::Fail;
                                }
                            }
                            None => {
                                e = failed(
                                    e,
                                    "did not run: an earlier init container failed".into(),
                                );
                            }
                        }
                        out.push(e);
                    }
                    ran = true;
                    if !any_failed {
                        init_removed = remove_init(client, t, &w, &init_names).await.map_or_else(
                            |why| {
                                out.push(failed(entry(t, "", "", "init", "init", &[]), why));
                                false
                            },
                            |_| true,
                        );
                    }
                    break;
                }
            }
            if !ran {
                tokio::time::sleep(POLL).await;
            }
        }
        if !ran {
            for i in &t.hooks.init {
                out.push(failed(
                    entry(t, "", &i.name, &i.hook, "init", &i.command),
                    format!("waited {wait} for a pod of {owner} to run init container {}; none did (see `kubectl describe pod` for why it is not running)", i.name),
                ));
                fatal |= i.on_error == RestoreHookOnError::Fail;
            }
        }
    }
    if t.hooks.exec.is_empty() {
        return (out, fatal);
    }
    // Each pod's hooks run once, in order.
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut waiting: Vec<String> = Vec::new();
    loop {
        let mut desired = 1;
        if let Some(w) = workload(client, t).await {
            let (pods, want) = pods_of(client, t, &w).await;
            desired = want;
            waiting.clear();
            for p in pods {
                let name = pod_name(&p);
                if done.contains(&name) {
                    continue;
                }
                if t.kind != "Pod" && init_removed && has_init(&p, &init_names) {
                    // A pod of the template before the init containers were patched away.
                    continue;
                }
                if !t.hooks.exec.iter().all(|h| container_ready(&p, h)) {
                    waiting.push(name);
                    continue;
                }
                for h in &t.hooks.exec {
                    let e = exec_one(client, t, &name, h, source).await;
                    let error = e.error.clone();
                    out.push(e);
                    if let Some(why) = error {
                        tracing::warn!(pod = %name, hook = %h.name, "restore hook failed: {why}");
                        if h.on_error == RestoreHookOnError::Fail {
                            fatal = true;
                            break;
                        }
                    }
                }
                done.insert(name);
            }
        } else if done.is_empty() {
            for h in &t.hooks.exec {
                out.push(failed(
                    entry(t, "", &h.container, &h.name, "post", &h.command),
                    format!("{owner} is gone; its hook did not run"),
                ));
            }
            return (
                out,
                fatal
                    || t.hooks
                        .exec
                        .iter()
                        .any(|h| h.on_error == RestoreHookOnError::Fail),
            );
        }
        if done.len() >= desired {
            break;
        }
        if Instant::now() >= deadline {
            let missing = desired - done.len();
            let pods: Vec<String> = if waiting.is_empty() {
                vec![String::new(); missing]
            } else {
                waiting.clone()
            };
            for pod in pods.iter().take(missing.max(1)) {
                for h in &t.hooks.exec {
                    let state = if h.wait_for_ready { "Ready" } else { "Running" };
                    let what = if pod.is_empty() {
                        format!("no pod of {owner} had container {} {state}", h.container)
                    } else {
                        format!("container {} of pod {pod} was not {state}", h.container)
                    };
                    out.push(failed(
                        entry(t, pod, &h.container, &h.name, "post", &h.command),
                        format!("waited {wait} (waitTimeout) and {what}; the hook did not run"),
                    ));
                    fatal |= h.on_error == RestoreHookOnError::Fail;
                }
            }
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    (out, fatal)
}

fn container_ready(p: &Value, h: &RestoreExec) -> bool {
    if p.pointer("/status/phase").and_then(Value::as_str) != Some("Running") {
        return false;
    }
    status_of(p, "containerStatuses", &h.container).is_some_and(|s| {
        s.pointer("/state/running").is_some()
            && (!h.wait_for_ready || s.get("ready").and_then(Value::as_bool) == Some(true))
    })
}

/// Patches the added init containers out of the workload's template.
async fn remove_init(
    client: &kube::Client,
    t: &Target,
    w: &Value,
    names: &[String],
) -> Result<(), String> {
    if t.kind == "Pod" {
        // A pod's init containers cannot change; it ran them, it keeps them.
        return Ok(());
    }
    let rest: Vec<Value> = w
        .pointer("/spec/template/spec/initContainers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| {
            !c.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| names.iter().any(|x| x == n))
        })
        .cloned()
        .collect();
    let value = if rest.is_empty() {
        Value::Null
    } else {
        Value::Array(rest)
    };
    let ar = api_resource(&t.kind).expect("a hooked kind");
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &t.namespace, &ar);
    api.patch(
        &t.name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"template": {"spec": {"initContainers": value}}}})),
    )
    .await
    .map(|_| ())
    .map_err(|e| {
        format!(
            "cannot remove the restore hook init containers from {}/{}: {e}; remove them by hand (kubectl edit)",
            t.kind, t.name
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(ns: &str, owner: &str, hook: &str) -> ArtifactEntry {
        ArtifactEntry {
            namespace: ns.into(),
            owner: owner.into(),
            hook: hook.into(),
            pod: format!("{owner}-0"),
            container: "db".into(),
            command: vec!["dump".into()],
            file: format!("artifacts/{ns}/{owner}/{hook}.zst.age"),
            bytes: 1,
            raw_sha256: String::new(),
            stored_bytes: 1,
            sha256: String::new(),
            start: Timestamp::UNIX_EPOCH,
            duration_ms: 1,
        }
    }

    fn target(kind: &str, name: &str) -> Target {
        Target {
            namespace: "shop-copy".into(),
            source_namespace: "shop".into(),
            kind: kind.into(),
            name: name.into(),
            hooks: WorkloadHooks::default(),
        }
    }

    #[test]
    fn artifacts_are_found_by_source_namespace_hook_and_then_owner() {
        let all = [
            artifact("shop", "deployment-mysql", "sql"),
            artifact("other", "deployment-mysql", "sql"),
        ];
        // One in the source namespace: it, whatever the workload.
        let got = pick_artifact(&all, "sql", &target("Deployment", "anything"));
        assert_eq!(got.map(|a| a.namespace.as_str()), Ok("shop"));
        // None of that hook: a reason naming what there is.
        let err = pick_artifact(&all, "pg", &target("Deployment", "mysql")).unwrap_err();
        assert!(
            err.contains("no artifact of dump hook pg in namespace shop"),
            "{err}"
        );
        // Several in the namespace: the workload's own, else a reason.
        let many = [
            artifact("shop", "deployment-mysql", "sql"),
            artifact("shop", "statefulset-db", "sql"),
        ];
        let got = pick_artifact(&many, "sql", &target("StatefulSet", "db"));
        assert_eq!(got.map(|a| a.owner.as_str()), Ok("statefulset-db"));
        let err = pick_artifact(&many, "sql", &target("Deployment", "web")).unwrap_err();
        assert!(err.contains("none from deployment-web"), "{err}");
    }
}
