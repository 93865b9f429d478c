//! Restore hooks end to end: the app's Deployment is backed up, its
//! namespace lost, and restored with hooks (by hand with `--hooks`, and by
//! a RestoreRequest's `spec.hooks` through the controller). The hooks run
//! in the pods the restored Deployments create, as the sandbox's
//! controllers and kubelets make them; its exec handler plays the
//! containers.

use std::path::Path;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use lifeboat_sandbox::ExecOutput;
use serde_json::Value;

use crate::hooks::record_exec;
use crate::volume_data::{NS, World};

/// A second Deployment whose image cannot be pulled: its pod never runs,
/// so the wait of its (annotation) restore hook times out.
const STUCK: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: stuck, namespace: mysql-persistent, labels: {app: stuck}}
spec:
  selector: {matchLabels: {app: stuck}}
  template:
    metadata:
      labels: {app: stuck}
      annotations:
        post.hook.restore.velero.io/command: '["/bin/report","--restored"]'
        post.hook.restore.velero.io/wait-timeout: 2s
    spec:
      containers:
        - {name: app, image: "registry.invalid/stuck:1"}
"#;

/// The one restore record of the world (a manual restore's name is made up).
fn record(w: &World) -> Value {
    let dir = w.dir.path().join("storage/clusters/prod/restores");
    let entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    serde_json::from_slice(&std::fs::read(entries[0].join("record.json")).unwrap()).unwrap()
}

fn hooks_of<'a>(record: &'a Value, hook: &str) -> Vec<&'a Value> {
    record["hooks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|h| h["hook"] == hook)
        .collect()
}

#[test]
fn restore_hooks_run_in_the_new_pods_of_a_restored_deployment_and_a_wait_times_out() {
    let w = World::with_app(
        Path::new(env!("CARGO_BIN_EXE_lifeboat")),
        2,
        "standard",
        STUCK,
        &[],
        false,
    );
    let calls = record_exec(&w, |_| ExecOutput::ok("warm\n"));
    let (code, out, err) = w.lifeboat(&["backup", "--policy", "db"]);
    assert_eq!(code, 0, "{out}{err}");
    let backup = out.split_whitespace().next().unwrap().to_string();
    assert!(calls.lock().unwrap().is_empty(), "no backup hooks here");
    w.delete_namespace();

    std::fs::write(
        w.dir.path().join("hooks.yaml"),
        "pods:\n  - name: seed\n    owner: Deployment/mysql\n    \
         init: {image: 'busybox:1.36', command: [chown, -R, '27', /var/lib/mysql]}\n  \
         - name: warm\n    owner: Deployment/mysql\n    container: mysql\n    \
         command: [/usr/bin/warm-cache, --all]\n    execTimeout: 5s\n",
    )
    .unwrap();
    let (code, out, err) = w.lifeboat(&[
        "restore",
        "--from",
        &backup,
        "--identity",
        &w.path("identity.txt"),
        "--hooks",
        &w.path("hooks.yaml"),
    ]);
    // onError is `continue` by default: the timed-out wait is a warning.
    assert_eq!(code, 0, "{out}{err}");

    // The init container was added to the restored template, ran in a pod,
    // and was patched away again.
    let deployments: Api<Deployment> = Api::namespaced(w.sb.client(), NS);
    let mysql = w.rt.block_on(deployments.get("mysql")).unwrap();
    let spec = mysql.spec.unwrap().template.spec.unwrap();
    assert!(
        spec.init_containers.as_ref().is_none_or(|c| c.is_empty()),
        "{:?}",
        spec.init_containers
    );

    let record = record(&w);
    assert_eq!(record["phase"], "Completed", "{record:#}");
    let seed = hooks_of(&record, "seed");
    assert_eq!(seed.len(), 1, "{record:#}");
    assert_eq!(seed[0]["phase"], "init");
    assert_eq!(seed[0]["container"], "restore-hook-seed");
    assert_eq!(seed[0]["exitCode"], 0, "{record:#}");
    assert!(seed[0].get("error").is_none(), "{record:#}");

    // The exec hook ran once, in the pod of the template without the init
    // container, in the named container.
    let warm = hooks_of(&record, "warm");
    assert_eq!(warm.len(), 1, "{record:#}");
    assert_eq!(warm[0]["phase"], "post");
    assert_eq!(warm[0]["exitCode"], 0, "{record:#}");
    let pod = warm[0]["pod"].as_str().unwrap().to_string();
    assert_ne!(pod, seed[0]["pod"].as_str().unwrap(), "{record:#}");
    let calls = calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        [(
            pod.clone(),
            "mysql".to_string(),
            vec!["/usr/bin/warm-cache".to_string(), "--all".to_string()]
        )]
    );
    let pods: Api<Pod> = Api::namespaced(w.sb.client(), NS);
    let p = w.rt.block_on(pods.get(&pod)).unwrap();
    assert!(
        p.spec.unwrap().init_containers.is_none_or(|c| c.is_empty()),
        "the hook ran in a pod of the patched template"
    );

    // Velero's annotation on the stuck Deployment: the bounded wait ended.
    let stuck = hooks_of(&record, "annotations");
    assert_eq!(stuck.len(), 1, "{record:#}");
    let error = stuck[0]["error"].as_str().unwrap();
    assert!(
        error.contains("waited 2s") && error.contains("was not Running"),
        "{error}"
    );
    assert_eq!(
        stuck[0]["command"],
        serde_json::json!(["/bin/report", "--restored"])
    );
    assert_eq!(
        record["hookCounts"],
        serde_json::json!({"ran": 3, "failed": 1})
    );
}

/// A RestoreRequest's hooks run in the controller's restore, as by hand;
/// a failing hook with `onError: fail` makes the restore PartiallyFailed,
/// with its exit code and last stderr line in the record.
#[test]
fn a_restore_requests_failing_hook_with_on_error_fail_partially_fails_the_restore() {
    use crate::plan::git;
    let w = World::new(Path::new(env!("CARGO_BIN_EXE_lifeboat")));
    let calls = record_exec(&w, |argv| {
        if argv[0] == "/usr/bin/migrate" {
            ExecOutput::exit(3, "", "step 1\nschema mismatch\n")
        } else {
            ExecOutput::ok("")
        }
    });
    let remote = w.controller_remote();
    let (code, out, err) = w.reconcile(&remote, &["--now", "2026-12-01T10:30:00Z"]);
    assert_eq!(code, 0, "{out}{err}");
    w.delete_namespace();
    let work = w.dir.path().join("repo");
    std::fs::write(
        work.join("restore.yaml"),
        "apiVersion: lifeboat.dev/v1alpha1\nkind: RestoreRequest\nmetadata: {name: bring-back}\n\
         spec:\n  source: {cluster: prod, policy: db, backup: latest}\n  target: {cluster: prod}\n  \
         hooks:\n    pods:\n      - name: migrate\n        namespaces: [mysql-persistent]\n        \
         labelSelector: {matchLabels: {app: mysql}}\n        command: [/usr/bin/migrate]\n        \
         onError: fail\n      - name: after\n        owner: Deployment/mysql\n        command: [/usr/bin/after]\n",
    )
    .unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "restore"]);
    git(&work, &["push", "-q", &remote, "main"]);
    let (code, out, err) = w.reconcile(&remote, &["--now", "2026-12-01T10:40:00Z"]);
    assert_eq!(code, 0, "{out}{err}");
    let record: Value = serde_json::from_slice(
        &std::fs::read(
            w.dir
                .path()
                .join("storage/clusters/prod/restores/bring-back/record.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(record["phase"], "PartiallyFailed", "{record:#}");
    let migrate = hooks_of(&record, "migrate");
    assert_eq!(migrate.len(), 1, "{record:#}");
    assert_eq!(migrate[0]["exitCode"], 3);
    assert_eq!(
        migrate[0]["stderr"],
        serde_json::json!(["step 1", "schema mismatch"])
    );
    assert!(
        migrate[0]["error"]
            .as_str()
            .unwrap()
            .contains("exited with code 3: schema mismatch"),
        "{record:#}"
    );
    // `fail` stops the pod's later hooks.
    assert!(hooks_of(&record, "after").is_empty(), "{record:#}");
    assert_eq!(
        calls
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.2[0].clone())
            .collect::<Vec<_>>(),
        ["/usr/bin/migrate"]
    );
    assert_eq!(
        record["hookCounts"],
        serde_json::json!({"ran": 1, "failed": 1})
    );
}
