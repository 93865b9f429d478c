//! Volume data across clusters and topology: cluster `prod` (one sandbox)
//! backs up the mysql app with `snapshotMove`; cluster `dr` (a second
//! sandbox, other storage classes) runs a committed RestoreRequest from
//! `prod`'s backup with its Cluster's `storageClassMapping`, reading `prod`'s
//! repository with the location's identity and writing nothing there but
//! its restore record. WaitForFirstConsumer classes: the restore mover is
//! the volume's first consumer, and the workload follows the volume to its
//! node; a backup mover runs on the node the source volume is pinned to.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    Node, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service,
};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use lifeboat_sandbox::Sandbox;

use crate::plan::git;
use crate::volume_data::{NS, World, assert_same_files, mover_sandbox};

/// Every file of the location (path → bytes), but those under `except`.
fn storage_files(root: &Path, except: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(dir: &Path, except: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.starts_with(except) {
                continue;
            }
            if p.is_dir() {
                walk(&p, except, out);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, except, &mut out);
    out
}

/// The number of snapshots restic (or, without restic, the repository's
/// `snapshots/` directory) lists in `prod`'s repository of the namespace.
fn snapshot_count(w: &World) -> usize {
    match w.restic_snapshots() {
        Some(json) => serde_json::from_str::<Vec<serde_json::Value>>(&json)
            .unwrap()
            .len(),
        None => std::fs::read_dir(
            w.dir
                .path()
                .join("storage/volumes/prod")
                .join(NS)
                .join("snapshots"),
        )
        .unwrap()
        .count(),
    }
}

/// The node a PV is pinned to (`kubernetes.io/hostname` of its required
/// node affinity).
fn pinned_node(pv: &PersistentVolume) -> Option<String> {
    let v = serde_json::to_value(pv.spec.as_ref()?.node_affinity.as_ref()?).ok()?;
    v.pointer("/required/nodeSelectorTerms/0/matchExpressions/0/values/0")?
        .as_str()
        .map(str::to_string)
}

impl World {
    /// The claim of `sb` once Bound, and its PV.
    fn claim_and_volume(
        &self,
        sb: &Sandbox,
        pvc: &str,
    ) -> (PersistentVolumeClaim, PersistentVolume) {
        self.claim_bound_in(sb, NS, pvc);
        self.rt.block_on(async {
            let claim = Api::<PersistentVolumeClaim>::namespaced(sb.client(), NS)
                .get(pvc)
                .await
                .unwrap();
            let pv = claim.spec.as_ref().unwrap().volume_name.clone().unwrap();
            let pv = Api::<PersistentVolume>::all(sb.client())
                .get(&pv)
                .await
                .unwrap();
            (claim, pv)
        })
    }

    /// The name and node of the Running pod of the app's Deployment in `sb`,
    /// other than `not`.
    fn app_pod(&self, sb: &Sandbox, not: Option<&str>) -> (String, String) {
        let pods: Api<Pod> = Api::namespaced(sb.client(), NS);
        for _ in 0..400 {
            let list = self
                .rt
                .block_on(pods.list(&ListParams::default().labels("app=mysql")))
                .unwrap();
            let running = list.items.into_iter().find(|p| {
                Some(p.name_any().as_str()) != not
                    && p.metadata.deletion_timestamp.is_none()
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            });
            if let Some(p) = running {
                let node = p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap();
                return (p.name_any(), node);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("no Running pod of the app's Deployment");
    }

    /// Commits and pushes the policy repository as it is now.
    fn push(&self, remote: &str, message: &str) {
        let work = self.dir.path().join("repo");
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", message]);
        git(&work, &["push", "-q", remote, "main"]);
    }

    /// Adds `text` (YAML documents) to the policy repository's file.
    fn add_policies(&self, text: &str) {
        let path = self.dir.path().join("repo/lifeboat.yaml");
        let old = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{old}---\n{text}")).unwrap();
    }
}

/// Cluster `dr`: a second sandbox of `nodes` nodes with the location's
/// identity Secret, its kubeconfig `kubeconfig-dr` in the world's directory.
fn dr_cluster(w: &World, nodes: usize) -> Sandbox {
    let sb = mover_sandbox(
        &w.rt,
        Path::new(env!("CARGO_BIN_EXE_lifeboat")),
        nodes,
        None,
    );
    sb.write_kubeconfig(&w.dir.path().join("kubeconfig-dr"))
        .unwrap();
    w.identity_secret(&sb);
    sb
}

/// `prod`'s controller backs up the app; `dr`'s runs the RestoreRequest
/// `to-dr` from that backup, `dr`'s Cluster mapping `standard` to
/// `mapped`. Asserts that `dr` wrote nothing into the location but its
/// restore record and that the data is byte-identical; returns the record.
fn back_up_in_prod_restore_in_dr(w: &World, dr: &Sandbox, mapped: &str) -> serde_json::Value {
    w.add_policies(&format!(
        "apiVersion: lifeboat.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: dr\nspec:\n  role: standby\n  \
         storageClassMapping: {{standard: {mapped}}}\n"
    ));
    let remote = w.controller_remote();
    let (code, out, err) = w.reconcile(&remote, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok   back up `db`"), "{out}");
    let backups = w.dir.path().join("storage/clusters/prod/backups");
    let backup = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.starts_with("db-"))
        .expect("a backup");
    assert_eq!(w.manifest(&backup)["volumes"][0]["phase"], "Completed");
    w.nothing_left_behind();

    // What `prod` wrote, before `dr` acts.
    let storage = w.dir.path().join("storage");
    let dr_dir = storage.join("clusters/dr");
    let before = storage_files(&storage, &dr_dir);
    let snapshots = snapshot_count(w);
    assert_eq!(snapshots, 1);

    std::fs::write(
        w.dir.path().join("repo/restore.yaml"),
        format!(
            "apiVersion: lifeboat.dev/v1alpha1\nkind: RestoreRequest\nmetadata: {{name: to-dr}}\n\
             spec:\n  source: {{cluster: prod, policy: db, backup: {backup}}}\n  target: {{cluster: dr}}\n"
        ),
    )
    .unwrap();
    w.push(&remote, "restore prod's database into dr");
    let (code, out, err) = w.reconcile_as("dr", "kubeconfig-dr", &remote, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok   restore"), "{out}");
    assert!(!out.contains("back up"), "dr backs nothing up: {out}");

    // The data, byte for byte, in a claim of the mapped class.
    let volume = w.claim_bound_in(dr, NS, "mysql");
    assert_same_files(&volume, &w.files);
    let (claim, pv) = w.claim_and_volume(dr, "mysql");
    let class = |s: Option<&String>| s.cloned().unwrap_or_default();
    assert_eq!(
        class(claim.spec.as_ref().unwrap().storage_class_name.as_ref()),
        mapped
    );
    assert_eq!(
        class(pv.spec.as_ref().unwrap().storage_class_name.as_ref()),
        mapped
    );
    // The rest of the app came along.
    w.rt.block_on(async {
        let c = dr.client();
        let (secret, service, deployment) = (
            Api::<Secret>::namespaced(c.clone(), NS),
            Api::<Service>::namespaced(c.clone(), NS),
            Api::<Deployment>::namespaced(c, NS),
        );
        let (a, b, d) = tokio::join!(
            secret.get_opt("mysql"),
            service.get_opt("mysql"),
            deployment.get_opt("mysql")
        );
        assert!(a.unwrap().is_some() && b.unwrap().is_some() && d.unwrap().is_some());
    });
    w.nothing_left_behind_in(dr);

    // `dr` read `prod`'s repository and wrote nothing into the location
    // but its own restore record.
    assert_eq!(
        storage_files(&storage, &dr_dir),
        before,
        "prod's files are untouched"
    );
    assert_eq!(snapshot_count(w), snapshots);
    let written: Vec<PathBuf> = storage_files(&dr_dir, Path::new("/nonexistent"))
        .into_keys()
        .map(|p| p.strip_prefix(&dr_dir).unwrap().to_path_buf())
        .collect();
    assert_eq!(written, [PathBuf::from("restores/to-dr/record.json")]);

    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dr_dir.join("restores/to-dr/record.json")).unwrap())
            .unwrap();
    assert_eq!(record["phase"], "Completed", "{record:#}");
    assert_eq!(record["sourceCluster"], "prod");
    assert_eq!(record["targetCluster"], "dr");
    let v = &record["volumes"][0];
    assert_eq!(v["pvc"], "mysql", "{record:#}");
    assert_eq!(v["phase"], "Completed", "{record:#}");
    let seeded: u64 = w.files.values().map(|f| f.len() as u64).sum();
    assert!(v["bytes"].as_u64().unwrap() >= seeded, "{v}");
    assert!(v["files"].as_u64().unwrap() >= w.files.len() as u64, "{v}");
    assert!(v["durationMs"].as_u64().unwrap() > 0, "{v}");
    record
}

#[test]
fn a_restore_request_in_another_cluster_maps_the_storage_class_and_restores_every_byte() {
    let w = World::new(Path::new(env!("CARGO_BIN_EXE_lifeboat")));
    // `dr`'s storage differs: no `standard` class, a `fast` one instead.
    let dr = dr_cluster(&w, 2);
    w.rt.block_on(async {
        let classes: Api<k8s_openapi::api::storage::v1::StorageClass> = Api::all(dr.client());
        classes
            .delete("standard", &DeleteParams::default())
            .await
            .unwrap();
        let fast = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "fast"}, "provisioner": "sandbox.csi.lifeboat.dev",
            "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate"}))
        .unwrap();
        classes.create(&PostParams::default(), &fast).await.unwrap();
    });
    let record = back_up_in_prod_restore_in_dr(&w, &dr, "fast");
    assert!(
        record["volumes"][0]["node"].as_str().is_some(),
        "{record:#}"
    );
}

/// Labels nodes of `sb` with `POOL=db`.
fn label_nodes(w: &World, sb: &Sandbox, nodes: &[&str]) {
    let api: Api<Node> = Api::all(sb.client());
    for n in nodes {
        let patch = serde_json::json!({"metadata": {"labels": {POOL: "db"}}});
        w.rt.block_on(api.patch(n, &PatchParams::default(), &Patch::Merge(&patch)))
            .unwrap();
    }
}

const POOL: &str = "lifeboat.dev/pool";

#[test]
fn a_wait_for_first_consumer_restore_fills_the_volume_where_the_workload_then_runs() {
    let w = World::new(Path::new(env!("CARGO_BIN_EXE_lifeboat")));
    // The database runs only on nodes of its pool, in both clusters.
    label_nodes(&w, &w.sb, &["sandbox-node-1"]);
    let patch = serde_json::json!({"spec": {"template": {"spec": {"nodeSelector": {POOL: "db"}}}}});
    w.rt.block_on(Api::<Deployment>::namespaced(w.sb.client(), NS).patch(
        "mysql",
        &PatchParams::default(),
        &Patch::Merge(&patch),
    ))
    .unwrap();
    let dr = dr_cluster(&w, 3);
    label_nodes(&w, &dr, &["sandbox-node-2", "sandbox-node-3"]);
    let record = back_up_in_prod_restore_in_dr(&w, &dr, "standard-wffc");
    // The mover was the first consumer: the volume was provisioned on its
    // node and pinned there, a node of the pool (spreading alone would
    // have chosen sandbox-node-1, where the database cannot run).
    let filled_on = record["volumes"][0]["node"].as_str().unwrap().to_string();
    assert_ne!(filled_on, "sandbox-node-1");
    let (_, pv) = w.claim_and_volume(&dr, "mysql");
    assert_eq!(
        pinned_node(&pv).as_deref(),
        Some(filled_on.as_str()),
        "{pv:?}"
    );
    let (pod, node) = w.app_pod(&dr, None);
    assert_eq!(node, filled_on);

    // The volume, not the scheduler's spreading, decides: with that node
    // the busiest of the pool, a new pod of the Deployment still lands there.
    w.rt.block_on(async {
        let pods: Api<Pod> = Api::namespaced(dr.client(), "default");
        for i in 0..3 {
            let busy = serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("busy-{i}")},
                "spec": {"nodeName": filled_on, "containers": [{"name": "c", "image": "example.com/busy:1"}]}}))
            .unwrap();
            pods.create(&PostParams::default(), &busy).await.unwrap();
        }
        Api::<Pod>::namespaced(dr.client(), NS)
            .delete(&pod, &DeleteParams::default())
            .await
            .unwrap();
    });
    let (_, node) = w.app_pod(&dr, Some(&pod));
    assert_eq!(node, filled_on);
}

#[test]
fn on_three_nodes_movers_run_where_wait_for_first_consumer_volumes_are() {
    let w = World::with(
        Path::new(env!("CARGO_BIN_EXE_lifeboat")),
        3,
        "standard-wffc",
    );
    let (_, source) = w.claim_and_volume(&w.sb, "mysql");
    let source_node = pinned_node(&source).expect("a WaitForFirstConsumer volume is pinned");
    let (_, app_node) = w.app_pod(&w.sb, None);
    assert_eq!(app_node, source_node);

    // The mover is pinned by the source PV's node affinity (spreading alone
    // would put it on a node without the app's pod).
    let (code, out, err) = w.lifeboat(&["backup", "--policy", "db"]);
    assert_eq!(code, 0, "{out}{err}");
    let backup = out.split_whitespace().next().unwrap().to_string();
    let manifest = w.manifest(&backup);
    assert_eq!(manifest["volumes"][0]["phase"], "Completed", "{manifest}");
    assert_eq!(
        manifest["volumes"][0]["node"],
        source_node.as_str(),
        "{manifest}"
    );
    w.nothing_left_behind();

    // Restored in place: filled by a mover, the workload where the volume is.
    w.delete_namespace();
    let out = w.restore(&backup);
    assert!(
        out.contains("filled   volume mysql-persistent/mysql: "),
        "{out}"
    );
    let volume = w.claim_bound(NS, "mysql");
    assert_same_files(&volume, &w.files);
    let (claim, pv) = w.claim_and_volume(&w.sb, "mysql");
    assert_eq!(
        claim.spec.unwrap().storage_class_name.as_deref(),
        Some("standard-wffc")
    );
    let filled_on = pinned_node(&pv).expect("the filled volume is pinned");
    assert!(out.contains(&format!(" on node {filled_on}")), "{out}");
    let (_, node) = w.app_pod(&w.sb, None);
    assert_eq!(node, filled_on);
    w.nothing_left_behind();
}
