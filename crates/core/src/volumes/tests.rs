//! Volume decisions over small inventories: rules, Velero's annotations,
//! snapshot class selection and the automatic default.

use rstest::rstest;
use serde_json::{Value, json};

use super::*;

const HOSTPATH: &str = "hostpath.csi.k8s.io";

fn policy(extra: Value) -> BackupPolicy {
    let mut spec = json!({
        "clusters": {"names": ["c"]},
        "schedule": "0 0 * * *",
        "retention": {"keepDaily": 7},
        "storage": "s3",
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    serde_json::from_value(json!({
        "apiVersion": "lifeboat.dev/v1alpha1",
        "kind": "BackupPolicy",
        "metadata": {"name": "p"},
        "spec": spec,
    }))
    .unwrap()
}

fn volumes(v: Value) -> BackupPolicy {
    policy(json!({ "volumes": v }))
}

fn claim(ns: &str, name: &str, class: &str, driver: Option<&str>) -> ClaimInfo {
    ClaimInfo {
        namespace: ns.into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        storage_class: Some(class.into()),
        capacity: Some(1 << 30),
        access_modes: vec!["ReadWriteOnce".into()],
        phase: "Bound".into(),
        volume_name: Some(format!("pv-{name}")),
        csi_driver: driver.map(str::to_string),
        ..Default::default()
    }
}

fn class(name: &str, driver: &str) -> SnapshotClassInfo {
    SnapshotClassInfo {
        name: name.into(),
        driver: driver.into(),
        ..Default::default()
    }
}

fn pod(ns: &str, name: &str, mounts: &[(&str, &str)], annotations: &[(&str, &str)]) -> PodInfo {
    PodInfo {
        namespace: ns.into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        node: Some("node-2".into()),
        phase: "Running".into(),
        annotations: annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        volumes: mounts
            .iter()
            .map(|(v, c)| PodClaimVolume {
                name: v.to_string(),
                claim: c.to_string(),
            })
            .collect(),
        ..Default::default()
    }
}

/// An inventory with a hostpath claim `data`, an nfs claim `files`, one
/// snapshot class for the hostpath driver, and pod `web` mounting both.
fn cluster() -> Inventory {
    Inventory {
        claims: vec![
            claim("shop", "data", "csi-hostpath-sc", Some(HOSTPATH)),
            claim("shop", "files", "nfs", None),
        ],
        storage_classes: vec![
            StorageClassInfo {
                name: "csi-hostpath-sc".into(),
                provisioner: HOSTPATH.into(),
            },
            StorageClassInfo {
                name: "nfs".into(),
                provisioner: "nfs.sandbox.lifeboat.dev".into(),
            },
        ],
        snapshot_classes: Some(vec![class("csi-hostpath-snapclass", HOSTPATH)]),
        velero_schedules: Vec::new(),
        vms: Vec::new(),
        provides: None,
        pods: vec![pod(
            "shop",
            "web",
            &[("db", "data"), ("uploads", "files")],
            &[],
        )],
    }
}

fn decide_all(policy: &BackupPolicy, recipients: bool, inv: &Inventory) -> Vec<VolumeDecision> {
    decide(policy, recipients, inv).unwrap()
}

/// (pvc, method, decided by, warning starts with)
fn summary(ds: &[VolumeDecision]) -> Vec<(String, Option<VolumeMethod>, String, String)> {
    ds.iter()
        .map(|d| {
            (
                d.pvc.clone(),
                d.method,
                d.decided_by.to_string(),
                d.warning.clone().unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn default_moves_snapshots_and_reports_the_rest_unprotected() {
    let ds = decide_all(&policy(json!({})), true, &cluster());
    assert_eq!(ds.len(), 2);
    let data = &ds[0];
    assert_eq!(
        (data.pvc.as_str(), data.method, data.decided_by.clone()),
        ("data", Some(VolumeMethod::SnapshotMove), DecidedBy::Default)
    );
    assert_eq!(
        data.snapshot_class.as_deref(),
        Some("csi-hostpath-snapclass")
    );
    assert_eq!(data.warning, None);
    assert!(data.is_protected());
    let files = &ds[1];
    assert_eq!((files.method, files.wanted), (None, None));
    assert!(!files.is_protected());
    let w = files.warning.as_deref().unwrap();
    assert!(
        w.starts_with(
            "not protected: its volume `pv-files` is not a CSI volume (storage class `nfs`)"
        ),
        "{w}"
    );
}

#[test]
fn default_without_recipients_protects_nothing() {
    let ds = decide_all(&policy(json!({})), false, &cluster());
    assert_eq!(ds[0].method, None);
    assert!(
        ds[0]
            .warning
            .as_deref()
            .unwrap()
            .contains("storage location `s3` has no encryption recipients"),
        "{:?}",
        ds[0].warning
    );
}

#[test]
fn default_without_snapshot_crds_says_so() {
    let mut inv = cluster();
    inv.snapshot_classes = None;
    let ds = decide_all(&policy(json!({})), true, &inv);
    assert!(
        ds[0]
            .warning
            .as_deref()
            .unwrap()
            .contains("CSI snapshot CRDs are not installed")
    );
}

#[test]
fn nfs_falls_to_file_system_by_rule() {
    let p = volumes(json!({"rules": [
        {"match": {"storageClasses": ["nfs*"]}, "method": "fileSystem"}
    ]}));
    let ds = decide_all(&p, true, &cluster());
    assert_eq!(
        summary(&ds),
        [
            (
                "data".into(),
                Some(VolumeMethod::SnapshotMove),
                "default".into(),
                String::new()
            ),
            (
                "files".into(),
                Some(VolumeMethod::FileSystem),
                "rule 1".into(),
                String::new()
            ),
        ]
    );
    let files = &ds[1];
    assert_eq!(
        (
            files.pod.as_deref(),
            files.pod_uid.as_deref(),
            files.node.as_deref()
        ),
        (Some("web"), Some("uid-web"), Some("node-2"))
    );
}

#[test]
fn file_system_needs_a_running_pod_on_a_node() {
    let p = volumes(json!({"method": "fileSystem"}));
    let mut inv = cluster();
    inv.pods[0].phase = "Pending".into();
    inv.pods[0].node = None;
    inv.claims.push(claim("shop", "lonely", "nfs", None));
    let ds = decide_all(&p, true, &inv);
    let s = summary(&ds);
    assert_eq!(s[0].1, None);
    assert_eq!(
        s[0].3,
        "`fileSystem` cannot protect it: no running pod mounts it (`web` is not running on a node)"
    );
    assert_eq!(s[2].0, "lonely");
    assert_eq!(
        s[2].3,
        "`fileSystem` cannot protect it: no pod mounts it, so there is no mounted file system to read"
    );
    assert_eq!(ds[0].wanted, Some(VolumeMethod::FileSystem));
}

#[test]
fn file_system_refuses_block_volumes_and_missing_recipients() {
    let p = volumes(json!({"method": "fileSystem"}));
    let mut inv = cluster();
    inv.claims[0].volume_mode = VolumeMode::Block;
    let ds = decide_all(&p, true, &inv);
    assert!(ds[0].warning.as_deref().unwrap().contains("Block volume"));
    let ds = decide_all(&p, false, &inv);
    assert!(
        ds[1]
            .warning
            .as_deref()
            .unwrap()
            .contains("no encryption recipients")
    );
}

#[test]
fn snapshot_keeps_data_in_the_cluster_and_says_so() {
    let p = volumes(json!({"method": "snapshot"}));
    let ds = decide_all(&p, false, &cluster());
    assert_eq!(ds[0].method, Some(VolumeMethod::Snapshot));
    assert!(
        ds[0]
            .warning
            .as_deref()
            .unwrap()
            .contains("lost with the cluster")
    );
    assert_eq!(ds[1].method, None);
    assert!(
        ds[1]
            .warning
            .as_deref()
            .unwrap()
            .starts_with("`snapshot` cannot protect it: its volume `pv-files` is not a CSI volume")
    );
    // The status says so for the policy, naming the claims.
    assert_eq!(
        crate::volumes::not_disaster_proof(&ds).as_deref(),
        Some(
            "not disaster-proof: `snapshot` keeps the data of 1 claim only in the cluster's \
             storage system (shop/data); use `snapshotMove` for data that must survive losing \
             the cluster"
        )
    );
    assert_eq!(crate::volumes::not_disaster_proof(&ds[1..]), None);
}

#[rstest]
#[case::storage_class_glob(json!({"storageClasses": ["csi-*"]}), &["data"])]
#[case::storage_class_name(json!({"storageClasses": ["nfs"]}), &["files"])]
#[case::csi_driver(json!({"csiDrivers": [HOSTPATH]}), &["data"])]
#[case::driver_from_storage_class(json!({"csiDrivers": ["nfs.sandbox.lifeboat.dev"]}), &["files"])]
#[case::labels(json!({"labelSelector": {"matchLabels": {"tier": "db"}}}), &["data"])]
#[case::capacity_in(json!({"capacity": {"min": "1Gi", "max": "1Gi"}}), &["data", "files"])]
#[case::capacity_above(json!({"capacity": {"min": "2Gi"}}), &["big"])]
#[case::capacity_below(json!({"capacity": {"max": "1023Mi"}}), &[])]
#[case::access_modes(json!({"accessModes": ["ReadWriteMany", "ReadOnlyMany"]}), &["files"])]
#[case::all_conditions(json!({"storageClasses": ["*"], "accessModes": ["ReadWriteOnce"], "capacity": {"max": "1Gi"}}), &["data"])]
fn rule_conditions(#[case] m: Value, #[case] skipped: &[&str]) {
    let mut inv = cluster();
    inv.claims[0].labels.insert("tier".into(), "db".into());
    inv.claims[1].access_modes = vec!["ReadWriteMany".into()];
    let mut big = claim("shop", "big", "other", None);
    big.capacity = Some(5 << 30);
    big.access_modes.clear();
    inv.claims.push(big);
    let p = volumes(json!({"method": "snapshot", "rules": [{"match": m, "method": "skip"}]}));
    let ds = decide_all(&p, true, &inv);
    let got: Vec<&str> = ds
        .iter()
        .filter(|d| d.method == Some(VolumeMethod::Skip))
        .map(|d| d.pvc.as_str())
        .collect();
    let mut want = skipped.to_vec();
    want.sort_unstable();
    assert_eq!(got, want);
}

#[test]
fn first_matching_rule_wins() {
    let p = volumes(json!({"rules": [
        {"match": {"storageClasses": ["nfs"]}, "method": "skip"},
        {"match": {"storageClasses": ["*"]}, "method": "fileSystem"},
    ]}));
    let s = summary(&decide_all(&p, true, &cluster()));
    assert_eq!(
        (s[0].1, s[0].2.as_str()),
        (Some(VolumeMethod::FileSystem), "rule 2")
    );
    assert_eq!(
        (s[1].1, s[1].2.as_str()),
        (Some(VolumeMethod::Skip), "rule 1")
    );
}

#[test]
fn velero_opt_in_annotation_asks_for_file_system() {
    let mut inv = cluster();
    inv.pods[0]
        .annotations
        .insert(VELERO_BACKUP_VOLUMES.into(), "logs, db".into());
    let ds = decide_all(&policy(json!({})), true, &inv);
    assert_eq!(ds[0].method, Some(VolumeMethod::FileSystem));
    assert_eq!(
        ds[0].decided_by,
        DecidedBy::PodAnnotation {
            pod: "web".into(),
            annotation: VELERO_BACKUP_VOLUMES.into()
        }
    );
    assert_eq!(ds[0].node.as_deref(), Some("node-2"));
    // A rule still comes first.
    let p =
        volumes(json!({"rules": [{"match": {"csiDrivers": [HOSTPATH]}, "method": "snapshot"}]}));
    assert_eq!(
        decide_all(&p, true, &inv)[0].method,
        Some(VolumeMethod::Snapshot)
    );
}

#[test]
fn annotations_of_finished_pods_are_ignored() {
    let mut inv = cluster();
    inv.pods[0]
        .annotations
        .insert(VELERO_BACKUP_VOLUMES.into(), "db".into());
    inv.pods[0].phase = "Succeeded".into();
    let ds = decide_all(&policy(json!({})), true, &inv);
    assert_eq!(ds[0].method, Some(VolumeMethod::SnapshotMove));
}

#[test]
fn velero_opt_out_annotation_keeps_a_claim_out_of_file_system() {
    let mut inv = cluster();
    inv.pods[0]
        .annotations
        .insert(VELERO_BACKUP_VOLUMES_EXCLUDES.into(), "db,uploads".into());
    let p = volumes(json!({"method": "fileSystem"}));
    let s = summary(&decide_all(&p, true, &inv));
    let by = format!("annotation {VELERO_BACKUP_VOLUMES_EXCLUDES} on pod web");
    // Snapshotted where it can be, skipped where not.
    assert_eq!(
        (s[0].1, s[0].2.clone()),
        (Some(VolumeMethod::SnapshotMove), by.clone())
    );
    assert_eq!((s[1].1, s[1].2.clone()), (Some(VolumeMethod::Skip), by));
    // It says nothing about methods other than fileSystem.
    let p = volumes(json!({"method": "snapshot"}));
    assert_eq!(
        decide_all(&p, true, &inv)[0].method,
        Some(VolumeMethod::Snapshot)
    );
}

#[test]
fn selection_follows_the_policy_include_and_exclude() {
    let mut inv = cluster();
    inv.claims.push(claim("other", "x", "nfs", None));
    let mut pending = claim("shop", "new", "csi-hostpath-sc", Some(HOSTPATH));
    pending.phase = "Pending".into();
    pending.volume_name = None;
    inv.claims.push(pending);
    let mut excluded = claim("shop", "scratch", "nfs", None);
    excluded
        .labels
        .insert(crate::select::EXCLUDE_LABEL.into(), "true".into());
    inv.claims.push(excluded);
    let p = policy(json!({"include": {"namespaces": ["sh*"]}}));
    let names: Vec<String> = decide_all(&p, true, &inv)
        .into_iter()
        .map(|d| format!("{}/{}", d.namespace, d.pvc))
        .collect();
    assert_eq!(names, ["shop/data", "shop/files"]);
    let p = policy(json!({"exclude": {"resources": ["persistentvolumeclaims"]}}));
    assert!(decide_all(&p, true, &inv).is_empty());
}

fn labelled(name: &str, label: bool, default: bool) -> SnapshotClassInfo {
    let mut c = class(name, HOSTPATH);
    if label {
        c.labels.insert(SNAPSHOT_CLASS_LABEL.into(), "true".into());
    }
    if default {
        c.annotations
            .insert(DEFAULT_SNAPSHOT_CLASS_ANNOTATION.into(), "true".into());
    }
    c
}

#[rstest]
#[case::only_one(vec![labelled("a", false, false), class("z", "other")], None, Ok("a"))]
#[case::labelled_beats_default(vec![labelled("a", false, true), labelled("b", true, false)], None, Ok("b"))]
#[case::default(vec![labelled("a", false, false), labelled("b", false, true)], None, Ok("b"))]
#[case::annotation_first(vec![labelled("a", true, true), labelled("b", false, false)], Some("b"), Ok("b"))]
#[case::annotation_unknown(vec![labelled("a", false, false)], Some("nope"), Err("its annotation velero.io/csi-volumesnapshot-class names VolumeSnapshotClass `nope`, which does not exist"))]
#[case::annotation_other_driver(vec![class("z", "other")], Some("z"), Err("its annotation velero.io/csi-volumesnapshot-class names VolumeSnapshotClass `z` of driver `other`, but its volume is of driver `hostpath.csi.k8s.io`"))]
#[case::two_labelled(vec![labelled("a", true, false), labelled("b", true, false)], None, Err("2 VolumeSnapshotClasses of driver `hostpath.csi.k8s.io` are labelled lifeboat.dev/snapshot-class=true (`a`, `b`): keep it on one"))]
#[case::two_defaults(vec![labelled("a", false, true), labelled("b", false, true)], None, Err("2 VolumeSnapshotClasses of driver `hostpath.csi.k8s.io` are annotated snapshot.storage.kubernetes.io/is-default-class=true"))]
#[case::two_unmarked(vec![labelled("b", false, false), labelled("a", false, false)], None, Err("CSI driver `hostpath.csi.k8s.io` has 2 VolumeSnapshotClasses (`a`, `b`) and none is chosen"))]
#[case::none(vec![class("z", "other")], None, Err("CSI driver `hostpath.csi.k8s.io` has no VolumeSnapshotClass"))]
fn snapshot_class_in_veleros_order(
    #[case] classes: Vec<SnapshotClassInfo>,
    #[case] annotation: Option<&str>,
    #[case] expect: Result<&str, &str>,
) {
    let mut c = claim("shop", "data", "csi-hostpath-sc", Some(HOSTPATH));
    if let Some(a) = annotation {
        c.annotations.insert(VELERO_SNAPSHOT_CLASS.into(), a.into());
    }
    match (snapshot_class(&c, HOSTPATH, &classes), expect) {
        (Ok(got), Ok(want)) => assert_eq!(got.name, want),
        (Err(got), Err(want)) => assert!(got.starts_with(want), "{got}"),
        (got, want) => panic!("got {got:?}, want {want:?}"),
    }
}

#[test]
fn a_class_error_is_a_warning_on_that_volume_only() {
    let mut inv = cluster();
    inv.claims[0]
        .annotations
        .insert(VELERO_SNAPSHOT_CLASS.into(), "gone".into());
    inv.claims
        .push(claim("shop", "other", "csi-hostpath-sc", Some(HOSTPATH)));
    let ds = decide_all(&policy(json!({})), true, &inv);
    assert_eq!(ds[0].method, None);
    assert_eq!(ds[0].wanted, Some(VolumeMethod::SnapshotMove));
    assert!(
        ds[0]
            .warning
            .as_deref()
            .unwrap()
            .starts_with("`snapshotMove` cannot protect it: its annotation")
    );
    assert_eq!(ds[2].pvc, "other");
    assert_eq!(ds[2].method, Some(VolumeMethod::SnapshotMove));
}

#[test]
fn decisions_do_not_depend_on_inventory_order() {
    let mut inv = cluster();
    inv.claims.push(claim("a", "z", "nfs", None));
    inv.pods.push(pod("shop", "api", &[("u", "files")], &[]));
    let p = volumes(json!({"method": "fileSystem"}));
    let forward = decide_all(&p, true, &inv);
    inv.claims.reverse();
    inv.pods.reverse();
    assert_eq!(decide_all(&p, true, &inv), forward);
    assert_eq!(forward[0].namespace, "a");
    // Pods by name: `api` before `web`.
    assert_eq!(forward[2].pod.as_deref(), Some("api"));
}

#[test]
fn decisions_round_trip_through_json() {
    let ds = decide_all(&policy(json!({})), true, &cluster());
    let text = serde_json::to_string(&ds).unwrap();
    assert!(text.contains(r#""decidedBy":{"type":"Default"}"#), "{text}");
    assert!(text.contains(r#""method":"snapshotMove""#), "{text}");
    let back: Vec<VolumeDecision> = serde_json::from_str(&text).unwrap();
    assert_eq!(back, ds);
}
