//! Runs one backup-level hook ([`lifeboat_core::hooks::level`]): a Job of
//! one pod in a workload namespace, or a command in one pod through
//! `pods/exec` ([`crate::hooks::run`]).
//!
//! A Job hook's Job has a name fixed by backup, phase and hook
//! ([`job_name`]), so a resumed run adopts the Job its interrupted run
//! created instead of starting a second one. It has `backoffLimit: 0` (a
//! failed pod is the hook's failure, not retried), `activeDeadlineSeconds`
//! equal to the hook's timeout (the Job controller stops a pod still running
//! then, even with lifeboat gone) and `ttlSecondsAfterFinished` of a day
//! (a Job left by a crashed controller still goes away). The outcome is the
//! Job's `Complete`/`Failed` condition and the pod's exit code; the last
//! lines of the pod's log stand in for stderr. The Job is deleted, with its
//! pod, once it ended or timed out.

use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams, PropagationPolicy};
use lifeboat_core::hooks::level::{JOB_CONTAINER, LevelHook, LevelRun, job_name};
use lifeboat_core::hooks::{ExecHook, HookPhase};
use serde_json::json;

use crate::hooks::{HookOutcome, STDERR_LINES};
use crate::volumes::BACKUP_LABEL;

/// The label naming a backup-level hook on its Job and pod.
pub const HOOK_LABEL: &str = "lifeboat.dev/hook";

/// How long a finished Job hook's Job stays when lifeboat cannot delete it.
const TTL_AFTER_FINISHED: i64 = 24 * 60 * 60;

/// How often a Job's status is read while it runs.
const POLL: Duration = Duration::from_millis(500);

/// Runs backup-level hook `hook` of backup `backup`; never longer than its
/// timeout (plus the time to delete its Job).
pub async fn run(client: &kube::Client, backup: &str, hook: &LevelHook) -> HookOutcome {
    let started = Instant::now();
    if let Some(why) = &hook.invalid {
        return HookOutcome {
            exit_code: None,
            stderr: Vec::new(),
            duration: started.elapsed(),
            error: Some(why.clone()),
        };
    }
    match &hook.run {
        LevelRun::Exec {
            pod: Some(pod),
            container: Some(container),
            command,
        } => {
            let exec = ExecHook {
                name: hook.name.clone(),
                // Exec hooks know two phases; a backup-level one is recorded
                // with its own phase by the caller.
                phase: HookPhase::Pre,
                container: container.clone(),
                command: command.clone(),
                timeout: hook.timeout,
                on_error: hook.on_error,
                vmi: None,
            };
            crate::hooks::run(client, &hook.namespace, pod, &exec).await
        }
        LevelRun::Exec { .. } => HookOutcome {
            exit_code: None,
            stderr: Vec::new(),
            duration: started.elapsed(),
            error: Some("no pod to run in".into()),
        },
        LevelRun::Job { .. } => run_job(client, backup, hook, started).await,
    }
}

/// The Job of a Job hook.
pub fn job(backup: &str, hook: &LevelHook) -> Option<serde_json::Value> {
    let LevelRun::Job {
        image,
        command,
        service_account_name,
        env,
    } = &hook.run
    else {
        return None;
    };
    let name = job_name(backup, hook.phase, &hook.name);
    let labels = json!({
        "app.kubernetes.io/managed-by": "lifeboat",
        BACKUP_LABEL: backup,
        HOOK_LABEL: format!("{}-{}", hook.phase, hook.name),
    });
    let env: Vec<_> = env
        .iter()
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect();
    Some(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": hook.namespace, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": hook.timeout.as_secs().max(1),
            "ttlSecondsAfterFinished": TTL_AFTER_FINISHED,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": service_account_name,
                    "containers": [{
                        "name": JOB_CONTAINER,
                        "image": image,
                        "command": command,
                        "env": env,
                    }],
                },
            },
        },
    }))
}

async fn run_job(
    client: &kube::Client,
    backup: &str,
    hook: &LevelHook,
    started: Instant,
) -> HookOutcome {
    let fail = |error: String, exit_code: Option<i32>, stderr: Vec<String>| HookOutcome {
        exit_code,
        stderr,
        duration: started.elapsed(),
        error: Some(error),
    };
    let Some(body) = job(backup, hook) else {
        return fail("not a Job hook".into(), None, Vec::new());
    };
    let name = job_name(backup, hook.phase, &hook.name);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &hook.namespace);
    let job: Job = match serde_json::from_value(body) {
        Ok(j) => j,
        Err(e) => return fail(format!("cannot build the Job: {e}"), None, Vec::new()),
    };
    match jobs.create(&PostParams::default(), &job).await {
        Ok(_) => {}
        // The Job an interrupted run of this backup created: followed.
        Err(kube::Error::Api(s)) if s.code == 409 => {
            tracing::info!(job = %name, namespace = %hook.namespace, "adopting the hook Job an earlier run created");
        }
        Err(e) => {
            return fail(
                format!(
                    "cannot create Job {}/{name}: {e} (lifeboat needs `create` on jobs.batch there)",
                    hook.namespace
                ),
                None,
                Vec::new(),
            );
        }
    }
    let timeout = Duration::from_secs(hook.timeout.as_secs().max(1));
    // The Job controller enforces activeDeadlineSeconds from the Job's
    // start; a little more here lets its verdict arrive first.
    let bound = timeout + Duration::from_secs(5);
    let ended = loop {
        match jobs.get_opt(&name).await {
            Ok(Some(j)) => {
                if let Some(end) = job_end(&j) {
                    break Some(end);
                }
            }
            Ok(None) => break Some(("Failed", Some("the Job was deleted before it ended".into()))),
            Err(e) => tracing::warn!(job = %name, "cannot read the hook Job: {e}"),
        }
        if started.elapsed() >= bound {
            break None;
        }
        tokio::time::sleep(POLL).await;
    };
    let (exit_code, log) = pod_result(client, &hook.namespace, &name).await;
    delete(&jobs, &name).await;
    let outcome = |error: Option<String>| HookOutcome {
        exit_code,
        stderr: log.clone(),
        duration: started.elapsed(),
        error: error.map(|e| match log.last() {
            Some(last) => format!("{e}: {last}"),
            None => e,
        }),
    };
    match ended {
        None => outcome(Some(format!("timed out after {}", hook.timeout))),
        Some(("Complete", _)) => outcome(None),
        Some((_, Some(reason))) if reason == "DeadlineExceeded" => {
            outcome(Some(format!("timed out after {}", hook.timeout)))
        }
        Some((_, reason)) => outcome(Some(match (exit_code, reason) {
            (Some(c), _) => format!("exited with code {c}"),
            (None, Some(r)) => format!("the Job failed ({r})"),
            (None, None) => "the Job failed".to_string(),
        })),
    }
}

/// `Complete` or `Failed` (with the reason) once the Job ended.
fn job_end(job: &Job) -> Option<(&'static str, Option<String>)> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    for c in conditions {
        if c.status != "True" {
            continue;
        }
        match c.type_.as_str() {
            "Complete" => return Some(("Complete", None)),
            "Failed" => return Some(("Failed", c.reason.clone())),
            _ => {}
        }
    }
    None
}

/// The exit code and last log lines of the Job's pod (the newest, should
/// there be more than one).
async fn pod_result(
    client: &kube::Client,
    namespace: &str,
    job: &str,
) -> (Option<i32>, Vec<String>) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let lp = ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}"));
    let Ok(list) = pods.list(&lp).await else {
        return (None, Vec::new());
    };
    let Some(pod) = list
        .items
        .iter()
        .max_by_key(|p| p.metadata.creation_timestamp.clone())
    else {
        return (None, Vec::new());
    };
    let exit_code = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == JOB_CONTAINER))
        .and_then(|c| c.state.as_ref()?.terminated.as_ref())
        .map(|t| t.exit_code);
    let name = pod.metadata.name.clone().unwrap_or_default();
    let lp = LogParams {
        container: Some(JOB_CONTAINER.into()),
        tail_lines: Some(STDERR_LINES as i64),
        limit_bytes: Some(64 * 1024),
        ..LogParams::default()
    };
    let log = pods
        .logs(&name, &lp)
        .await
        .map(|text| {
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let keep = log.len().saturating_sub(STDERR_LINES);
    (exit_code, log[keep..].to_vec())
}

async fn delete(jobs: &Api<Job>, name: &str) {
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    match jobs.delete(name, &dp).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => {
            tracing::warn!(job = %name, "cannot delete the hook Job (its TTL removes it in a day): {e}")
        }
    }
}
