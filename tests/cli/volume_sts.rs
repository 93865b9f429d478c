//! A StatefulSet's claims with volume data: three replicas, one
//! `volumeClaimTemplates` entry, so three claims `data-db-0..2` made by the
//! StatefulSet controller, each seeded with different files. Backed up by
//! `snapshotMove` beside the mysql app, the namespace deleted, restored:
//! every claim comes back with its own files, and the restored
//! StatefulSet's pods mount the restored claims (the controller reuses a
//! claim of the template's name instead of creating an empty one). The set
//! deletes its claims with it (`whenDeleted: Delete`), so it is their
//! controller: such claims are restored all the same, and adopted.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::{Api, ResourceExt};

use crate::volume_data::{NS, World, assert_same_files};

const SET: &str = r#"apiVersion: v1
kind: Service
metadata: {name: db, namespace: mysql-persistent, labels: {app: db}}
spec:
  clusterIP: None
  ports: [{name: pg, port: 5432}]
  selector: {app: db}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: mysql-persistent, labels: {app: db}}
spec:
  serviceName: db
  replicas: 3
  persistentVolumeClaimRetentionPolicy: {whenDeleted: Delete, whenScaled: Retain}
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers:
        - name: pg
          image: docker.io/library/postgres:16
          volumeMounts: [{name: data, mountPath: /var/lib/postgresql/data}]
  volumeClaimTemplates:
    - metadata: {name: data}
      spec:
        accessModes: [ReadWriteOnce]
        storageClassName: standard
        resources: {requests: {storage: 1Gi}}
"#;

/// The claims of the set, ordinal by ordinal.
const CLAIMS: [&str; 3] = ["data-db-0", "data-db-1", "data-db-2"];

impl World {
    /// Waits until pod `name` of the app's namespace is Running; returns it.
    fn running_pod(&self, name: &str) -> Pod {
        let pods: Api<Pod> = Api::namespaced(self.sb.client(), NS);
        for _ in 0..800 {
            if let Some(p) = self.rt.block_on(pods.get_opt(name)).unwrap()
                && p.metadata.deletion_timestamp.is_none()
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            {
                return p;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("pod {NS}/{name} is not Running");
    }

    /// The claim `name` of the app's namespace as it is now.
    fn claim(&self, name: &str) -> PersistentVolumeClaim {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.sb.client(), NS);
        self.rt.block_on(api.get(name)).unwrap()
    }
}

/// The claim pod `pod` mounts as volume `volume`.
fn claim_of(pod: &Pod, volume: &str) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .find(|v| v.name == volume)
        .and_then(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.clone())
        .unwrap_or_else(|| panic!("pod {} mounts no claim as {volume}", pod.name_any()))
}

#[test]
fn a_statefulsets_three_claims_round_trip_with_their_own_data() {
    let seeded: Vec<(&str, u64)> = CLAIMS.iter().zip(1..).map(|(c, i)| (*c, i)).collect();
    let w = World::with_app(
        Path::new(env!("CARGO_BIN_EXE_lifeboat")),
        3,
        "standard",
        SET,
        &seeded,
        false,
    );
    for (i, claim) in CLAIMS.iter().enumerate() {
        let pod = w.running_pod(&format!("db-{i}"));
        assert_eq!(claim_of(&pod, "data"), *claim);
    }

    let (code, out, err) = w.lifeboat(&["backup", "--policy", "db"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("Completed") && out.contains("4 of 4 volumes"),
        "{out}"
    );
    let backup = out.split_whitespace().next().unwrap().to_string();
    let manifest = w.manifest(&backup);
    let volumes = manifest["volumes"].as_array().unwrap();
    let mut claims: Vec<&str> = volumes.iter().map(|v| v["pvc"].as_str().unwrap()).collect();
    claims.sort();
    assert_eq!(claims, ["data-db-0", "data-db-1", "data-db-2", "mysql"]);
    for v in volumes {
        assert_eq!(v["method"], "snapshotMove", "{v}");
        assert_eq!(v["phase"], "Completed", "{v}");
    }
    // Three snapshots of their own, one per claim (and mysql's).
    let mut ids: Vec<&str> = volumes
        .iter()
        .map(|v| v["snapshot"].as_str().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4, "{manifest}");
    w.nothing_left_behind();

    w.delete_namespace();
    let out = w.restore(&backup);
    for claim in CLAIMS {
        assert!(
            out.contains(&format!("filled   volume {NS}/{claim}: ")),
            "{out}"
        );
    }
    for (claim, files) in &w.claims {
        let volume = w.claim_bound(NS, claim);
        assert_same_files(&volume, files);
        for (other, others) in w.claims.iter().filter(|(c, _)| *c != claim) {
            let marker = others
                .keys()
                .find(|p| p.to_string_lossy().starts_with("ordinal-"))
                .unwrap();
            assert!(
                !volume.join(marker).exists(),
                "{claim} holds {other}'s {}",
                marker.display()
            );
        }
    }
    assert_same_files(&w.claim_bound(NS, "mysql"), &w.files);

    // The restored set's pods run on the restored claims: the claims the
    // restore created and filled (labelled by it), not new empty ones.
    let sets: Api<StatefulSet> = Api::namespaced(w.sb.client(), NS);
    assert!(w.rt.block_on(sets.get_opt("db")).unwrap().is_some());
    for (i, claim) in CLAIMS.iter().enumerate() {
        let pod = w.running_pod(&format!("db-{i}"));
        assert_eq!(claim_of(&pod, "data"), *claim);
        // The restore's claim selects the volume it filled by this label.
        let pvc = w.claim(claim);
        let selector = pvc.spec.as_ref().and_then(|s| s.selector.as_ref());
        assert!(
            selector
                .and_then(|s| s.match_labels.as_ref())
                .is_some_and(|l| l.contains_key("lifeboat.dev/restore-volume")),
            "{claim} was not made by the restore: {:?}",
            pvc.spec
        );
        assert_eq!(
            pvc.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Bound")
        );
        // `whenDeleted: Delete`: the restored set adopted the claim.
        let set = w.rt.block_on(sets.get("db")).unwrap();
        assert!(
            pvc.owner_references()
                .iter()
                .any(|o| o.kind == "StatefulSet" && Some(&o.uid) == set.metadata.uid.as_ref()),
            "{claim} is not owned by the restored set: {:?}",
            pvc.metadata.owner_references
        );
    }
    w.nothing_left_behind();
}

/// `restore --claim`: single claims of the set (and the mysql claim) come
/// back with their data beside the live app under a namespace mapping, and
/// nothing else; an unknown claim is refused with the backup's claims
/// listed; a dry run lists what would be restored and creates nothing.
#[test]
fn single_claims_are_restored_with_their_data_beside_the_live_app() {
    let seeded: Vec<(&str, u64)> = CLAIMS.iter().zip(1..).map(|(c, i)| (*c, i)).collect();
    let w = World::with_app(
        Path::new(env!("CARGO_BIN_EXE_lifeboat")),
        3,
        "standard",
        SET,
        &seeded,
        false,
    );
    let (code, out, err) = w.lifeboat(&["backup", "--policy", "db"]);
    assert_eq!(code, 0, "{out}{err}");
    let backup = out.split_whitespace().next().unwrap().to_string();
    let identity = w.path("identity.txt");
    let restore = |extra: &[&str]| {
        let mut args = vec!["restore", "--from", &backup, "--identity", &identity];
        args.extend_from_slice(extra);
        w.lifeboat(&args)
    };
    let mapping = format!("{NS}=copy");

    // A claim the backup does not have: refused, its claims listed.
    let (code, out, err) = restore(&["--claim", &format!("{NS}/data-db-7")]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!("the backup has no claim {NS}/data-db-7"))
            && err.contains(&format!(
                "Its claims: {NS}/data-db-0, {NS}/data-db-1, {NS}/data-db-2, {NS}/mysql"
            )),
        "{err}"
    );
    let (code, _, err) = restore(&["--claim", "no-slash"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("write NAMESPACE/NAME"), "{err}");

    // A dry run lists the claims and their namespace, and creates nothing.
    let claim_args = [
        "--claim",
        &format!("{NS}/data-db-1"),
        "--claim",
        &format!("{NS}/mysql"),
        "--namespace-mapping",
        &mapping,
    ];
    let (code, out, err) = restore(&[&claim_args[..], &["--dry-run"]].concat());
    assert_eq!(code, 0, "{out}{err}");
    let listed: Vec<&str> = out
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.contains(" Completed: "))
        .map(|l| l.split(':').next().unwrap())
        .collect();
    assert_eq!(
        listed,
        [
            "created  namespaces/copy",
            "created  persistentvolumeclaims/copy/data-db-1",
            "created  persistentvolumeclaims/copy/mysql",
        ],
        "{out}"
    );
    assert!(
        out.contains("~ a fresh volume, filled from volume snapshot"),
        "{out}"
    );
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(w.sb.client());
    assert!(w.rt.block_on(namespaces.get_opt("copy")).unwrap().is_none());

    // The restore: the two claims, filled, in `copy`; nothing else there.
    let (code, out, err) = restore(&claim_args);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("filled   volume copy/data-db-1: "), "{out}");
    assert!(out.contains("filled   volume copy/mysql: "), "{out}");
    assert_same_files(&w.claim_bound("copy", "data-db-1"), &w.claims["data-db-1"]);
    assert_same_files(&w.claim_bound("copy", "mysql"), &w.files);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(w.sb.client(), "copy");
    let mut names: Vec<String> =
        w.rt.block_on(claims.list(&Default::default()))
            .unwrap()
            .items
            .iter()
            .map(|c| c.name_any())
            .collect();
    names.sort();
    assert_eq!(names, ["data-db-1", "mysql"]);
    let sets: Api<StatefulSet> = Api::namespaced(w.sb.client(), "copy");
    assert!(
        w.rt.block_on(sets.list(&Default::default()))
            .unwrap()
            .items
            .is_empty()
    );
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(w.sb.client(), "copy");
    assert!(
        w.rt.block_on(deployments.list(&Default::default()))
            .unwrap()
            .items
            .is_empty()
    );
    // The live app kept running on its own claims.
    for (i, claim) in CLAIMS.iter().enumerate() {
        assert_eq!(claim_of(&w.running_pod(&format!("db-{i}")), "data"), *claim);
    }
    w.nothing_left_behind();
}
