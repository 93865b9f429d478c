//! `lifeboat backup` and `lifeboat restore` with the `fileSystem` method: an
//! `nfs`-class claim (no snapshots) mounted by a running pod is read on that
//! pod's node from the kubelet's pods directory, beside a `snapshotMove`
//! claim of the same namespace; a claim no pod mounts is reported.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod};
use kube::Api;
use kube::api::{ListParams, PostParams};

use crate::volume_data::{NS, World, assert_same_files, seed_files};

const EXTRA: &str = r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: uploads, namespace: mysql-persistent, labels: {app: web}}
spec:
  accessModes: [ReadWriteMany]
  storageClassName: nfs
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: scratch, namespace: mysql-persistent, labels: {app: web}}
spec:
  accessModes: [ReadWriteMany]
  storageClassName: nfs
  resources: {requests: {storage: 1Gi}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: mysql-persistent, labels: {app: web}}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      tolerations: [{key: dedicated, operator: Equal, value: web, effect: NoSchedule}]
      containers:
        - name: web
          image: example.com/web:1
          volumeMounts: [{name: uploads, mountPath: /srv/uploads}]
      volumes:
        - name: uploads
          persistentVolumeClaim: {claimName: uploads}
"#;

/// The mysql world of `volume_data`, plus an `nfs` claim a running pod
/// mounts (seeded with files) and one no pod mounts; the policy backs up
/// `nfs` claims by `fileSystem`. `movers`: the Pod Security level the
/// movers' namespace is created with (None: lifeboat creates it, baseline).
fn world(movers: Option<&str>) -> (World, String, PathBuf) {
    let w = World::new(Path::new(env!("CARGO_BIN_EXE_lifeboat")));
    let policy = w.dir.path().join("repo/lifeboat.yaml");
    let text = std::fs::read_to_string(&policy).unwrap();
    std::fs::write(
        &policy,
        format!(
            "{text}  volumes:\n    rules:\n      - match: {{storageClasses: [nfs]}}\n        method: fileSystem\n"
        ),
    )
    .unwrap();
    let client = w.sb.client();
    w.rt.block_on(async {
        if let Some(level) = movers {
            let ns: Namespace = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "lifeboat-movers",
                             "labels": {"pod-security.kubernetes.io/enforce": level}}}))
            .unwrap();
            Api::<Namespace>::all(client.clone())
                .create(&PostParams::default(), &ns)
                .await
                .unwrap();
        }
        for doc in serde_yaml_ng::Deserializer::from_str(EXTRA) {
            let v: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
            let pp = PostParams::default();
            match v["kind"].as_str().unwrap() {
                "PersistentVolumeClaim" => {
                    let c: PersistentVolumeClaim = serde_json::from_value(v).unwrap();
                    Api::namespaced(client.clone(), NS)
                        .create(&pp, &c)
                        .await
                        .unwrap();
                }
                _ => {
                    let d: Deployment = serde_json::from_value(v).unwrap();
                    Api::namespaced(client.clone(), NS)
                        .create(&pp, &d)
                        .await
                        .unwrap();
                }
            }
        }
    });
    let volume = w.claim_bound(NS, "uploads");
    w.claim_bound(NS, "scratch");
    let node = running_pod_node(&w, "app=web");
    (w, node, volume)
}

/// Waits until a pod with `labels` runs; returns its node.
fn running_pod_node(w: &World, labels: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(w.sb.client(), NS);
    for _ in 0..400 {
        let list =
            w.rt.block_on(pods.list(&ListParams::default().labels(labels)))
                .unwrap();
        if let Some(p) = list
            .items
            .iter()
            .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        {
            return p.spec.as_ref().unwrap().node_name.clone().unwrap();
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("no pod {labels} runs");
}

#[test]
fn an_nfs_claim_round_trips_by_file_system_beside_a_snapshot_move_claim() {
    let (w, node, volume) = world(Some("privileged"));
    let files = seed_files(&volume);
    let (code, out, err) = w.lifeboat(&["backup", "--policy", "db"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("Completed") && out.contains("2 of 2 volumes"),
        "{out}"
    );
    assert!(
        err.contains("volume mysql-persistent/scratch: not protected: `fileSystem` cannot protect it: no pod mounts it"),
        "{err}"
    );
    assert!(
        err.contains("volume mysql-persistent/uploads: snapshot "),
        "{err}"
    );
    let backup = out.split_whitespace().next().unwrap().to_string();
    let manifest = w.manifest(&backup);
    let volumes = manifest["volumes"].as_array().unwrap();
    let entry = |pvc: &str| {
        volumes
            .iter()
            .find(|v| v["pvc"] == pvc)
            .unwrap_or_else(|| panic!("{pvc} in {manifest}"))
    };
    let uploads = entry("uploads");
    assert_eq!(uploads["method"], "fileSystem", "{uploads}");
    assert_eq!(uploads["phase"], "Completed", "{uploads}");
    // The mover ran where the workload pod mounts the claim.
    assert_eq!(uploads["node"], node.as_str(), "{uploads}");
    assert!(uploads["files"].as_u64().unwrap() >= 4, "{uploads}");
    assert_eq!(entry("mysql")["method"], "snapshotMove");
    assert!(!volumes.iter().any(|v| v["pvc"] == "scratch"), "{manifest}");
    let snapshot = uploads["snapshot"].as_str().unwrap().to_string();
    w.nothing_left_behind();

    w.restic_lists(&snapshot, "uploads", &backup);
    w.delete_namespace();
    let out = w.restore(&backup);
    assert!(
        out.contains("filled   volume mysql-persistent/uploads: ")
            && out.contains("filled   volume mysql-persistent/mysql: "),
        "{out}"
    );
    assert_same_files(&w.claim_bound(NS, "uploads"), &files);
    assert_same_files(&w.claim_bound(NS, "mysql"), &w.files);
    running_pod_node(&w, "app=web");
    w.nothing_left_behind();
}

#[test]
fn a_baseline_movers_namespace_refuses_the_file_system_mover_and_says_what_to_do() {
    let (w, _, volume) = world(None);
    seed_files(&volume);
    let (code, out, err) = w.lifeboat(&["backup", "--policy", "db"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("PartiallyFailed"), "{out}");
    assert!(
        err.contains("volume mysql-persistent/uploads failed: the mover pod lifeboat-movers/")
            && err.contains("violates PodSecurity \"baseline:latest\"")
            && err.contains("pod-security.kubernetes.io/enforce=privileged")
            && err.contains("filesystem-backup"),
        "{err}"
    );
    // The snapshotMove claim is not held up by it.
    let backup = out.split_whitespace().next().unwrap().to_string();
    let manifest = w.manifest(&backup);
    let phases: Vec<(String, String)> = manifest["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["pvc"].to_string(), v["phase"].to_string()))
        .collect();
    assert!(
        phases.contains(&("\"mysql\"".into(), "\"Completed\"".into()))
            && phases.contains(&("\"uploads\"".into(), "\"Failed\"".into())),
        "{phases:?}"
    );
    w.nothing_left_behind();
}
