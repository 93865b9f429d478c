//! Backup-level hooks (`spec.hooks.before` / `after`) end to end:
//! `lifeboat backup` against the sandbox, whose Job controller runs the
//! hook Jobs' pods (image `hooks.test/sh` is a real `/bin/sh`).

use std::path::Path;

use k8s_openapi::api::batch::v1::Job;
use kube::Api;
use kube::api::ListParams;
use serde_json::json;

use crate::hooks::record_exec;
use crate::volume_data::{NS, World};
use lifeboat_sandbox::ExecOutput;

/// The policy's hooks (YAML under `hooks:`), volume data by snapshotMove.
fn set_hooks(w: &World, hooks: &str) {
    w.set_volumes(&format!("    method: snapshotMove\n  hooks:\n{hooks}"));
}

/// A Job hook of `phase` named `name` running `script` in the app's
/// namespace.
fn job_hook(phase: &str, name: &str, script: &str, on_error: &str) -> String {
    format!(
        "    {phase}:\n      - name: {name}\n        job:\n          namespace: {NS}\n          image: hooks.test/sh:1\n          \
         command: [sh, -c, '{script}']\n        timeout: 1m\n        onError: {on_error}\n"
    )
}

/// Indexes in the request log of requests matching `f`.
fn indexes(w: &World, f: impl Fn(&lifeboat_sandbox::RequestRecord) -> bool) -> Vec<usize> {
    w.sb.requests()
        .iter()
        .enumerate()
        .filter(|(_, r)| f(r))
        .map(|(i, _)| i)
        .collect()
}

/// Indexes of the Job creations in the app's namespace (a create names
/// its object in the body, not the path).
fn jobs_created(w: &World) -> Vec<usize> {
    indexes(w, |r| {
        r.verb == "create" && r.resource == "jobs" && r.namespace == NS
    })
}

/// Indexes of the reads of the Job `prefix…` (the hook's polls).
fn job_polls(w: &World, prefix: &str) -> Vec<usize> {
    indexes(w, |r| {
        r.verb == "get" && r.resource == "jobs" && r.name.starts_with(prefix)
    })
}

fn jobs_left(w: &World) -> Vec<String> {
    let jobs: Api<Job> = Api::namespaced(w.sb.client(), NS);
    w.rt.block_on(jobs.list(&ListParams::default()))
        .unwrap()
        .items
        .iter()
        .filter(|j| j.metadata.deletion_timestamp.is_none())
        .map(kube::ResourceExt::name_any)
        .collect()
}

#[test]
fn job_hooks_run_before_anything_is_read_and_after_the_data_is_moved() {
    let w = World::new(Path::new(env!("CARGO_BIN_EXE_lifeboat")));
    let marks = w.dir.path().join("marks");
    set_hooks(
        &w,
        &format!(
            "{}{}",
            job_hook(
                "before",
                "quiesce",
                &format!("echo quiescing; echo before >> {}", marks.display()),
                "failBackup"
            ),
            job_hook(
                "after",
                "resume",
                &format!("echo after >> {}", marks.display()),
                "failVolume"
            )
        ),
    );
    // The plan lists them.
    let (code, out, err) = w.lifeboat(&["plan", "--cluster", "prod", "--offline"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!(
            "`db` before hook quiesce: [\"sh\", \"-c\", \"echo quiescing; echo before >> {}\"], a Job in {NS} from hooks.test/sh:1 as ServiceAccount default, before anything is read (timeout 1m, onError failBackup)",
            marks.display()
        )) && out.contains("`db` after hook resume:"),
        "{out}"
    );
    w.sb.clear_requests();
    let (code, out, err) = w.lifeboat(&["backup", "--policy", "db"]);
    assert_eq!(code, 0, "{out}{err}");
    let name = out.split_whitespace().next().unwrap().to_string();
    assert_eq!(std::fs::read_to_string(&marks).unwrap(), "before\nafter\n");

    // Order in the request log: the before Job, then the first read of the
    // objects, then the mover; the after Job once the mover is gone.
    let created = jobs_created(&w);
    assert_eq!(created.len(), 2, "one Job each");
    let (before, after) = (
        job_polls(&w, "lifeboat-before-quiesce-"),
        job_polls(&w, "lifeboat-after-resume-"),
    );
    assert!(!before.is_empty() && !after.is_empty());
    assert!(created[0] < before[0] && before.last() < Some(&created[1]) && created[1] < after[0]);
    let first_read = indexes(&w, |r| r.verb == "list" && r.resource == "deployments");
    let movers = indexes(&w, |r| {
        r.resource == "pods" && r.namespace == "lifeboat-movers" && r.verb == "create"
    });
    let mover_gone = indexes(&w, |r| {
        r.resource == "pods" && r.namespace == "lifeboat-movers" && r.verb == "delete"
    });
    assert!(!first_read.is_empty() && !movers.is_empty() && !mover_gone.is_empty());
    assert!(
        *before.last().unwrap() < first_read[0],
        "the before hook ended first"
    );
    assert!(
        created[1] > *movers.last().unwrap(),
        "after hook after the mover"
    );
    assert!(
        created[1] > *mover_gone.last().unwrap(),
        "after hook after the mover ended"
    );

    let m = w.manifest(&name);
    assert_eq!(m["phase"], "Completed", "{m}");
    assert_eq!(m["hooks"], json!({"ran": 2, "failed": 0}));
    assert_eq!(m["volumes"][0]["phase"], "Completed", "{m}");
    // The Jobs and their pods are gone.
    assert!(jobs_left(&w).is_empty(), "{:?}", jobs_left(&w));
    w.nothing_left_behind();
}

#[test]
fn a_failing_before_hook_fails_the_backup_and_the_after_hook_still_runs() {
    let w = World::new(Path::new(env!("CARGO_BIN_EXE_lifeboat")));
    let marks = w.dir.path().join("marks");
    let exec = record_exec(&w, |_| ExecOutput::ok(""));
    set_hooks(
        &w,
        &format!(
            "{}\n{}    pods:\n      - name: freeze\n        owner: Deployment/mysql\n        pre: [fsfreeze, --freeze, /var/lib/mysql]\n        post: [fsfreeze, --unfreeze, /var/lib/mysql]\n",
            job_hook(
                "before",
                "quiesce",
                "echo cannot quiesce >&2; exit 3",
                "failBackup"
            )
            .trim_end_matches('\n'),
            job_hook(
                "after",
                "resume",
                &format!("echo after >> {}", marks.display()),
                "continue"
            ),
        ),
    );
    w.sb.clear_requests();
    let (code, out, err) = w.lifeboat(&["backup", "--policy", "db"]);
    assert_eq!(code, 2, "a Failed backup: {out}{err}");
    let name = err
        .split("error: backup ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap();
    let m = w.manifest(name);
    assert_eq!(m["phase"], "Failed", "{m}");
    let reason = m["failureReason"].as_str().unwrap();
    assert!(
        reason.contains("before hook quiesce failed (onError: failBackup): exited with code 3")
            && reason.contains("cannot quiesce"),
        "{reason}"
    );
    // Nothing else ran: no objects read, no pod hook, no snapshot; the
    // after hook did run.
    assert!(indexes(&w, |r| r.verb == "list" && r.resource == "deployments").is_empty());
    assert!(
        indexes(&w, |r| r.verb == "create"
            && r.resource == "volumesnapshots")
        .is_empty()
    );
    assert!(exec.lock().unwrap().is_empty(), "no pod hook ran");
    assert_eq!(std::fs::read_to_string(&marks).unwrap(), "after\n");
    assert_eq!(m["hooks"], json!({"ran": 2, "failed": 1}));
    assert!(jobs_left(&w).is_empty(), "{:?}", jobs_left(&w));
    w.nothing_left_behind();
}

#[test]
fn a_hanging_job_hook_times_out_and_an_exec_hook_runs_in_the_apps_pod() {
    let w = World::new(Path::new(env!("CARGO_BIN_EXE_lifeboat")));
    let exec = record_exec(&w, |_| ExecOutput::ok(""));
    set_hooks(
        &w,
        &format!(
            "    before:\n      - name: stuck\n        job:\n          namespace: {NS}\n          image: hooks.test/sh:1\n          \
             command: [sh, -c, 'sleep 600']\n        timeout: 2s\n      - name: checkpoint\n        exec:\n          namespace: {NS}\n          \
             owner: Deployment/mysql\n          command: [mysqladmin, flush-tables]\n"
        ),
    );
    w.sb.clear_requests();
    let started = std::time::Instant::now();
    let (code, out, err) = w.lifeboat(&["backup", "--policy", "db"]);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "bounded"
    );
    // failVolume (the default): an error, the backup goes on.
    assert_eq!(code, 1, "PartiallyFailed: {out}{err}");
    let name = out.split_whitespace().next().unwrap().to_string();
    let m = w.manifest(&name);
    assert_eq!(m["phase"], "PartiallyFailed", "{m}");
    assert_eq!(m["volumes"][0]["phase"], "Completed", "{m}");
    assert_eq!(m["hooks"], json!({"ran": 2, "failed": 1}));
    let calls = exec.lock().unwrap().clone();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(
        calls[0].0.starts_with("mysql-"),
        "in the app's pod: {calls:?}"
    );
    assert_eq!(calls[0].2, ["mysqladmin", "flush-tables"]);
    // The stuck Job was stopped at its deadline, not left running.
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));
    assert!(
        !indexes(&w, |r| r.verb == "delete"
            && r.resource == "jobs"
            && r.name.starts_with("lifeboat-before-stuck-"))
        .is_empty(),
        "the timed-out Job is deleted"
    );
    assert!(jobs_left(&w).is_empty(), "{:?}", jobs_left(&w));
    w.nothing_left_behind();
}
