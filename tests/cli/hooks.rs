//! Backup exec hooks end to end: `lifeboat backup` against the sandbox,
//! whose exec handler plays the containers (it records every command and
//! can fail or hang), with Velero's hook annotations on the app's pod and
//! policy hooks (`spec.hooks.pods`).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use lifeboat_sandbox::{ExecOutput, ExecRequest};
use serde_json::{Value, json};

use crate::volume_data::{NS, World};

/// The commands the containers were asked to run: (pod, container, argv).
pub(crate) type Calls = Arc<Mutex<Vec<(String, String, Vec<String>)>>>;

/// Registers a handler that records each command and answers with
/// `answer(argv)`.
pub(crate) fn record_exec(
    w: &World,
    answer: impl Fn(&[String]) -> ExecOutput + Send + Sync + 'static,
) -> Calls {
    let calls: Calls = Arc::default();
    let c = calls.clone();
    w.sb.on_exec(move |r: &ExecRequest| {
        c.lock()
            .unwrap()
            .push((r.pod.clone(), r.container.clone(), r.command.clone()));
        answer(&r.command)
    });
    calls
}

/// The app's one Running pod.
fn app_pod(w: &World) -> String {
    let pods: Api<Pod> = Api::namespaced(w.sb.client(), NS);
    for _ in 0..400 {
        let list =
            w.rt.block_on(pods.list(&ListParams::default().labels("app=mysql")))
                .unwrap();
        if let Some(p) = list
            .items
            .iter()
            .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        {
            return kube::ResourceExt::name_any(p);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("the app's pod is not Running");
}

/// Annotates the app's pod (as `kubectl annotate pod` does).
fn annotate(w: &World, pod: &str, annotations: Value) {
    let pods: Api<Pod> = Api::namespaced(w.sb.client(), NS);
    w.rt.block_on(pods.patch(
        pod,
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"annotations": annotations}})),
    ))
    .unwrap();
}

fn backup(w: &World) -> (i32, String, String, String) {
    let (code, out, err) = w.lifeboat(&["backup", "--policy", "db"]);
    let name = out
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    (code, out, err, name)
}

fn argv(calls: &Calls) -> Vec<Vec<String>> {
    calls.lock().unwrap().iter().map(|c| c.2.clone()).collect()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The request log's lines.
pub(crate) fn requests(w: &World) -> Vec<Value> {
    std::fs::read_to_string(w.dir.path().join("requests.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn velero_annotations_freeze_before_the_snapshot_and_thaw_before_the_mover() {
    let w = World::build(
        Path::new(env!("CARGO_BIN_EXE_lifeboat")),
        2,
        "standard",
        true,
    );
    let calls = record_exec(&w, |_| ExecOutput::ok(""));
    let pod = app_pod(&w);
    annotate(
        &w,
        &pod,
        json!({
            "pre.hook.backup.velero.io/command": r#"["/sbin/fsfreeze","--freeze","/var/lib/mysql"]"#,
            "pre.hook.backup.velero.io/container": "mysql",
            "post.hook.backup.velero.io/command": r#"["/sbin/fsfreeze","--unfreeze","/var/lib/mysql"]"#,
        }),
    );
    // The plan lists what a backup would run, and where.
    let (code, out, err) = w.lifeboat(&["plan", "--cluster", "prod", "--offline"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!(
            "hook annotations pre in pod {NS}/{pod} container mysql: [\"/sbin/fsfreeze\", \"--freeze\", \"/var/lib/mysql\"], before its claims' snapshots"
        )) && out.contains("once every snapshot has its handle"),
        "{out}"
    );
    let (code, out, err, name) = backup(&w);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        argv(&calls),
        [
            strings(&["/sbin/fsfreeze", "--freeze", "/var/lib/mysql"]),
            strings(&["/sbin/fsfreeze", "--unfreeze", "/var/lib/mysql"]),
        ]
    );
    assert!(
        calls
            .lock()
            .unwrap()
            .iter()
            .all(|c| c.0 == pod && c.1 == "mysql")
    );
    let manifest = w.manifest(&name);
    assert_eq!(manifest["phase"], "Completed", "{manifest}");
    assert_eq!(manifest["hooks"], json!({"ran": 2, "failed": 0}));
    assert_eq!(manifest["volumes"][0]["phase"], "Completed");
    // The request log, in the order requests ended (an exec line when its
    // command ended): freeze → the claim's VolumeSnapshot → thaw → mover.
    let lines = requests(&w);
    let position = |what: &str, f: &dyn Fn(&Value) -> bool| {
        lines
            .iter()
            .position(f)
            .unwrap_or_else(|| panic!("no {what} in the request log"))
    };
    let execs: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l["subresource"] == "exec")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(execs.len(), 2, "{execs:?}");
    let snapshot = position("VolumeSnapshot create in the app's namespace", &|l| {
        l["verb"] == "create" && l["resource"] == "volumesnapshots" && l["namespace"] == NS
    });
    let mover = position("mover pod create", &|l| {
        l["verb"] == "create" && l["resource"] == "pods" && l["namespace"] == "lifeboat-movers"
    });
    let handle = position("the snapshot content's handle", &|l| {
        l["resource"] == "volumesnapshotcontents" && l["verb"] == "get"
    });
    assert!(
        execs[0] < snapshot,
        "freeze {} before the snapshot {snapshot}",
        execs[0]
    );
    assert!(
        handle < execs[1],
        "the handle was read ({handle}) before the thaw {}",
        execs[1]
    );
    assert!(
        execs[1] < mover,
        "thaw {} before the mover {mover}",
        execs[1]
    );
    assert!(
        err.contains(&format!("pod {NS}/{pod}: pre hook annotations ran")),
        "{err}"
    );
    w.nothing_left_behind();
}

/// The policy repository's BackupPolicy with `spec.volumes` (kept
/// snapshots: no mover, fast) and `spec.hooks` as given (YAML under
/// `hooks:`).
fn set_hooks(w: &World, hooks: &str) {
    w.set_volumes(&format!("    method: snapshot\n  hooks:\n{hooks}"));
}

fn freeze_hook(on_error: &str, timeout: &str) -> String {
    format!(
        "    pods:\n      - name: freeze\n        owner: Deployment/mysql\n        pre: [fsfreeze, --freeze, /var/lib/mysql]\n        \
         post: [fsfreeze, --unfreeze, /var/lib/mysql]\n        onError: {on_error}\n        timeout: {timeout}\n"
    )
}

fn snapshots_created(w: &World) -> usize {
    w.sb.requests()
        .iter()
        .filter(|r| r.verb == "create" && r.resource == "volumesnapshots" && r.namespace == NS)
        .count()
}

#[test]
fn a_failing_freeze_does_what_its_on_error_says_and_the_thaw_still_runs() {
    let w = World::new(Path::new(env!("CARGO_BIN_EXE_lifeboat")));
    let calls = record_exec(&w, |argv| {
        if argv.iter().any(|a| a == "--freeze") {
            ExecOutput::exit(1, "", "fsfreeze: cannot freeze /var/lib/mysql\n")
        } else {
            ExecOutput::ok("")
        }
    });
    app_pod(&w);

    // continue: a warning, the volume is snapshotted.
    set_hooks(&w, &freeze_hook("continue", "30s"));
    let (code, out, err, name) = backup(&w);
    assert_eq!(code, 0, "{out}{err}");
    let m = w.manifest(&name);
    assert_eq!(m["phase"], "Completed", "{m}");
    assert_eq!(m["hooks"], json!({"ran": 2, "failed": 1}));
    assert_eq!(m["volumes"][0]["phase"], "Completed", "{m}");
    assert_eq!(snapshots_created(&w), 1);
    assert_eq!(argv(&calls).len(), 2, "freeze and thaw");

    // failVolume: the claim is not snapshotted, the backup says why.
    std::thread::sleep(Duration::from_millis(1100));
    set_hooks(&w, &freeze_hook("failVolume", "30s"));
    let (code, out, err, name) = backup(&w);
    assert_eq!(code, 1, "{out}{err}");
    let m = w.manifest(&name);
    assert_eq!(m["phase"], "PartiallyFailed", "{m}");
    let error = m["volumes"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("not snapshotted") && error.contains("cannot freeze"),
        "{error}"
    );
    assert_eq!(snapshots_created(&w), 1, "no new snapshot");
    assert_eq!(argv(&calls).len(), 4, "freeze and thaw again");
    assert_eq!(
        argv(&calls)[3],
        strings(&["fsfreeze", "--unfreeze", "/var/lib/mysql"])
    );

    // failBackup: the backup fails (a Failed backup by hand exits 2), the
    // thaw still runs.
    std::thread::sleep(Duration::from_millis(1100));
    set_hooks(&w, &freeze_hook("failBackup", "30s"));
    let (code, out, err, _) = backup(&w);
    assert_eq!(code, 2, "{out}{err}");
    let name = err
        .split("error: backup ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap();
    let m = w.manifest(name);
    assert_eq!(m["phase"], "Failed", "{m}");
    assert!(
        m["failureReason"].as_str().unwrap().contains("failBackup"),
        "{m}"
    );
    assert_eq!(snapshots_created(&w), 1, "no new snapshot");
    assert_eq!(argv(&calls).len(), 6);
    assert_eq!(argv(&calls)[5][1], "--unfreeze");
    w.nothing_left_behind();
}

#[test]
fn a_hanging_freeze_times_out_and_is_thawed() {
    let w = World::new(Path::new(env!("CARGO_BIN_EXE_lifeboat")));
    let calls = record_exec(&w, |argv| {
        if argv.iter().any(|a| a == "--freeze") {
            ExecOutput::hang()
        } else {
            ExecOutput::ok("")
        }
    });
    app_pod(&w);
    set_hooks(&w, &freeze_hook("failVolume", "2s"));
    let started = std::time::Instant::now();
    let (code, out, err, name) = backup(&w);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "bounded by the timeout"
    );
    let m = w.manifest(&name);
    assert_eq!(m["phase"], "PartiallyFailed", "{m}");
    let error = m["volumes"][0]["error"].as_str().unwrap();
    assert!(error.contains("timed out after 2s"), "{error}");
    assert_eq!(m["hooks"], json!({"ran": 2, "failed": 1}));
    assert_eq!(argv(&calls)[1][1], "--unfreeze", "the thaw ran");
    assert_eq!(snapshots_created(&w), 0);
}

#[test]
fn one_pod_per_statefulset_runs_the_hook() {
    let w = World::new(Path::new(env!("CARGO_BIN_EXE_lifeboat")));
    let calls = record_exec(&w, |_| ExecOutput::ok(""));
    let sts: k8s_openapi::api::apps::v1::StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "pg", "namespace": NS, "labels": {"app": "pg"}},
        "spec": {
            "serviceName": "pg", "replicas": 3,
            "selector": {"matchLabels": {"app": "pg"}},
            "template": {"metadata": {"labels": {"app": "pg"}},
                "spec": {"containers": [{"name": "postgres", "image": "postgres:16",
                    "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql"}]}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "standard",
                         "resources": {"requests": {"storage": "1Gi"}}}}],
        },
    }))
    .unwrap();
    let api: Api<k8s_openapi::api::apps::v1::StatefulSet> = Api::namespaced(w.sb.client(), NS);
    w.rt.block_on(api.create(&PostParams::default(), &sts))
        .unwrap();
    for i in 0..3 {
        w.claim_bound(NS, &format!("data-pg-{i}"));
    }
    let pods: Api<Pod> = Api::namespaced(w.sb.client(), NS);
    for _ in 0..400 {
        let running =
            w.rt.block_on(pods.list(&ListParams::default().labels("app=pg")))
                .unwrap()
                .items
                .iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .count();
        if running == 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    set_hooks(
        &w,
        "    pods:\n      - name: checkpoint\n        owner: StatefulSet/pg\n        onePerOwner: true\n        \
         pre: [psql, -c, CHECKPOINT]\n",
    );
    let (code, out, err, name) = backup(&w);
    assert_eq!(code, 0, "{out}{err}");
    let got = calls.lock().unwrap().clone();
    assert_eq!(
        got,
        [(
            "pg-0".to_string(),
            "postgres".to_string(),
            strings(&["psql", "-c", "CHECKPOINT"])
        )]
    );
    let m = w.manifest(&name);
    assert_eq!(m["hooks"], json!({"ran": 1, "failed": 0}));
    assert_eq!(m["volumes"].as_array().unwrap().len(), 4, "{m}");
}

#[test]
fn velero_annotations_win_over_policy_hooks_on_their_pod() {
    let w = World::new(Path::new(env!("CARGO_BIN_EXE_lifeboat")));
    let calls = record_exec(&w, |_| ExecOutput::ok(""));
    let pod = app_pod(&w);
    annotate(
        &w,
        &pod,
        json!({"pre.hook.backup.velero.io/command": "/velero-freeze.sh"}),
    );
    set_hooks(
        &w,
        "    pods:\n      - name: policy\n        namespaces: [mysql-persistent]\n        \
         pre: [policy-freeze]\n        post: [policy-thaw]\n",
    );
    let (code, out, err, _) = backup(&w);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(argv(&calls), [strings(&["/velero-freeze.sh"])]);
}

/// A controller killed (SIGKILL) while a freeze runs: the restarted
/// controller resumes the backup and first runs the thaw the record says
/// is owed, then freezes and thaws again around the claim's snapshot.
#[test]
fn a_controller_killed_between_freeze_and_thaw_thaws_when_it_resumes() {
    let w = World::new(Path::new(env!("CARGO_BIN_EXE_lifeboat")));
    let calls = record_exec(&w, |argv| {
        if argv.iter().any(|a| a == "--freeze") {
            ExecOutput::ok("").after(Duration::from_secs(60))
        } else {
            ExecOutput::ok("")
        }
    });
    app_pod(&w);
    set_hooks(&w, &freeze_hook("failVolume", "90s"));
    let remote = w.controller_remote();
    let now = ["--now", "2026-12-01T10:30:00Z"];
    let reconcile = || w.reconcile_command("prod", "kubeconfig", &remote, &now);
    let mut child = reconcile()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while calls.lock().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no freeze started");
        assert!(child.try_wait().unwrap().is_none(), "the run ended first");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let dir = w
        .dir
        .path()
        .join("storage/clusters/prod/backups/db-20261201-100000");
    let op: Value =
        serde_json::from_slice(&std::fs::read(dir.join("operation.json")).unwrap()).unwrap();
    let pre = &op["hooks"][0];
    assert_eq!(pre["phase"], "pre", "{op}");
    assert_eq!(pre["thaw"]["command"][1], "--unfreeze", "{op}");
    assert!(pre.get("durationMs").is_none(), "{op}");

    // The restarted controller: the owed thaw first, then the claim anew.
    let calls = record_exec(&w, |_| ExecOutput::ok(""));
    let done = reconcile().env("RUST_LOG", "info").output().unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&done.stdout),
        String::from_utf8_lossy(&done.stderr),
    );
    assert!(done.status.success(), "{out}{err}");
    assert!(err.contains("post hooks an interrupted run owes"), "{err}");
    let flags: Vec<String> = argv(&calls).iter().map(|a| a[1].clone()).collect();
    assert_eq!(flags, ["--unfreeze", "--freeze", "--unfreeze"]);
    let m = w.manifest("db-20261201-100000");
    assert_eq!(m["phase"], "Completed", "{m}");
    assert_eq!(m["volumes"][0]["phase"], "Completed", "{m}");
    // The interrupted freeze never ended: it counts as failed.
    assert_eq!(m["hooks"], json!({"ran": 4, "failed": 1}));
}

/// A snapshot that cannot be created: the volume fails, the thaw runs.
#[test]
fn a_failing_snapshot_is_still_thawed() {
    let w = World::new(Path::new(env!("CARGO_BIN_EXE_lifeboat")));
    let calls = record_exec(&w, |_| ExecOutput::ok(""));
    app_pod(&w);
    set_hooks(&w, &freeze_hook("failVolume", "30s"));
    w.sb.add_fault(
        lifeboat_sandbox::FaultRule::error(500)
            .verb("create")
            .resource("volumesnapshots")
            .namespace(NS),
    );
    let (code, out, err, name) = backup(&w);
    assert_eq!(code, 1, "{out}{err}");
    let m = w.manifest(&name);
    assert_eq!(m["phase"], "PartiallyFailed", "{m}");
    assert_eq!(m["volumes"][0]["phase"], "Failed", "{m}");
    let flags: Vec<String> = argv(&calls).iter().map(|a| a[1].clone()).collect();
    assert_eq!(flags, ["--freeze", "--unfreeze"]);
    assert_eq!(m["hooks"], json!({"ran": 2, "failed": 0}));
    w.nothing_left_behind();
}

/// A `fileSystem` claim has no snapshot: the thaw runs after its copy
/// (the mover pod is gone before the post hook starts).
#[test]
fn a_file_system_claim_is_thawed_after_its_copy() {
    let w = World::build(
        Path::new(env!("CARGO_BIN_EXE_lifeboat")),
        2,
        "standard",
        true,
    );
    let calls = record_exec(&w, |_| ExecOutput::ok(""));
    app_pod(&w);
    let ns: k8s_openapi::api::core::v1::Namespace = serde_json::from_value(json!({
        "metadata": {"name": "lifeboat-movers",
                     "labels": {"pod-security.kubernetes.io/enforce": "privileged"}}}))
    .unwrap();
    w.rt.block_on(
        Api::<k8s_openapi::api::core::v1::Namespace>::all(w.sb.client())
            .create(&PostParams::default(), &ns),
    )
    .unwrap();
    w.set_volumes(&format!(
        "    method: fileSystem\n  hooks:\n{}",
        freeze_hook("failVolume", "30s")
    ));
    let (code, out, err, name) = backup(&w);
    assert_eq!(code, 0, "{out}{err}");
    let m = w.manifest(&name);
    assert_eq!(m["volumes"][0]["method"], "fileSystem", "{m}");
    assert_eq!(m["volumes"][0]["phase"], "Completed", "{m}");
    assert_eq!(argv(&calls).len(), 2);
    let lines = requests(&w);
    let execs: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l["subresource"] == "exec")
        .map(|(i, _)| i)
        .collect();
    let in_movers = |verb: &str| {
        lines
            .iter()
            .position(|l| {
                l["verb"] == verb && l["resource"] == "pods" && l["namespace"] == "lifeboat-movers"
            })
            .unwrap_or_else(|| panic!("no {verb} of a mover pod"))
    };
    assert!(execs[0] < in_movers("create"), "freeze before the copy");
    assert!(in_movers("delete") < execs[1], "thaw after the copy");
}
