//! Movers of one backup run concurrently within the policy's
//! `volumes.concurrency`: on three nodes with `moversPerNode: 1` several
//! run at once but never two on one node; `moversPerBackup: 1` runs them
//! one after another.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};

use crate::volume_data::{NS, World};

/// Four more claims of the app's namespace, each mounted by a pod pinned
/// to node `1 + i % 3` (WaitForFirstConsumer: the volume is made there).
fn more_claims(w: &World) {
    let client = w.sb.client();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client, NS);
    w.rt.block_on(async {
        for i in 0..4 {
            let pvc = serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("data-{i}"), "namespace": NS},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "standard-wffc",
                         "resources": {"requests": {"storage": "1Gi"}}},
            }))
            .unwrap();
            pvcs.create(&PostParams::default(), &pvc).await.unwrap();
            let pod = serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("app-{i}"), "namespace": NS},
                "spec": {
                    "nodeSelector": {"kubernetes.io/hostname": format!("sandbox-node-{}", 1 + i % 3)},
                    "containers": [{"name": "app", "image": "busybox",
                                    "volumeMounts": [{"name": "d", "mountPath": "/d"}]}],
                    "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": format!("data-{i}")}}],
                },
            }))
            .unwrap();
            pods.create(&PostParams::default(), &pod).await.unwrap();
        }
    });
    for i in 0..4 {
        let dir = w.claim_bound(NS, &format!("data-{i}"));
        std::fs::write(dir.join("file"), vec![b'x'; 256 * 1024 + i]).unwrap();
    }
}

/// Runs a backup of the policy while watching the movers' namespace;
/// returns the most movers seen at once in all and on any one node.
fn back_up_watching(w: &World) -> (usize, usize, serde_json::Value) {
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (done, client) = (done.clone(), w.sb.client());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            let pods: Api<Pod> = Api::namespaced(client, "lifeboat-movers");
            let (mut most, mut most_on_a_node) = (0, 0);
            while !done.load(Ordering::Relaxed) {
                let Ok(list) = rt.block_on(pods.list(&ListParams::default())) else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let live: Vec<&Pod> = list
                    .items
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .filter(|p| p.labels().contains_key("lifeboat.dev/backup"))
                    .collect();
                let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
                for p in &live {
                    if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
                        *per_node.entry(n).or_default() += 1;
                    }
                }
                most = most.max(live.len());
                most_on_a_node = most_on_a_node.max(per_node.values().copied().max().unwrap_or(0));
                std::thread::sleep(Duration::from_millis(5));
            }
            (most, most_on_a_node)
        })
    };
    let (code, out, err) = w.lifeboat(&["backup", "--policy", "db"]);
    done.store(true, Ordering::Relaxed);
    let (most, most_on_a_node) = watcher.join().unwrap();
    assert_eq!(code, 0, "{out}{err}");
    let backup = out.split_whitespace().next().unwrap().to_string();
    (most, most_on_a_node, w.manifest(&backup))
}

#[test]
fn movers_run_concurrently_within_the_policys_limits() {
    let w = World::with(
        Path::new(env!("CARGO_BIN_EXE_lifeboat")),
        3,
        "standard-wffc",
    );
    more_claims(&w);

    w.set_volumes("    concurrency: {moversPerNode: 1}\n");
    let (most, most_on_a_node, manifest) = back_up_watching(&w);
    let volumes = manifest["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 5, "{manifest}");
    assert!(
        volumes.iter().all(|v| v["phase"] == "Completed"),
        "{manifest}"
    );
    // In the manifest's order, whatever order the movers ended in.
    let claims: Vec<&str> = volumes.iter().map(|v| v["pvc"].as_str().unwrap()).collect();
    assert_eq!(claims, ["data-0", "data-1", "data-2", "data-3", "mysql"]);
    // Each mover ran where its volume is.
    for v in volumes.iter().filter(|v| v["pvc"] != "mysql") {
        let i: usize = v["pvc"].as_str().unwrap()[5..].parse().unwrap();
        assert_eq!(v["node"], format!("sandbox-node-{}", 1 + i % 3), "{v}");
    }
    assert_eq!(most_on_a_node, 1, "two movers ran on one node");
    assert!(most >= 2, "the movers never overlapped ({most} at most)");
    w.nothing_left_behind();

    std::thread::sleep(Duration::from_millis(1100)); // a new backup slot
    w.set_volumes("    concurrency: {moversPerNode: 4, moversPerBackup: 1}\n");
    let (most, _, manifest) = back_up_watching(&w);
    assert_eq!(manifest["phase"], "Completed", "{manifest}");
    assert_eq!(most, 1, "moversPerBackup: 1 ran movers at once");
    w.nothing_left_behind();
}
