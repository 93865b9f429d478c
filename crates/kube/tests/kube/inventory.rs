//! The volume inventory read from the sandbox: claims with their bound
//! volumes' CSI drivers, classes and pods; a cluster without the snapshot
//! CRDs; a list the credentials may not make.

use lifeboat_kube::inventory::inventory;
use lifeboat_sandbox::{FaultRule, Sandbox};
use serde_json::json;

fn claim(name: &str, class: &str, size: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": "shop"},
                     "annotations": {"velero.io/csi-volumesnapshot-class": "x"}},
        "spec": {"storageClassName": class, "accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": size}}},
    })
}

async fn sandbox() -> Sandbox {
    Sandbox::builder()
        .seed_objects([
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
            claim("data", "standard", "2Gi"),
            claim("files", "nfs", "500Mi"),
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "web", "namespace": "shop",
                             "annotations": {"backup.velero.io/backup-volumes": "f"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}],
                         "volumes": [{"name": "f", "persistentVolumeClaim": {"claimName": "files"}},
                                     {"name": "tmp", "emptyDir": {}}]},
            }),
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "no-claims", "namespace": "shop"},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            }),
        ])
        .start()
        .await
        .unwrap()
}

#[tokio::test]
async fn lists_claims_volumes_classes_and_the_pods_that_mount_claims() {
    let sb = sandbox().await;
    let client = sb.client();
    // The provisioner binds the claims and the kubelet runs the pod.
    let mut inv = inventory(&client).await.unwrap();
    for _ in 0..200 {
        let ready = inv.claims.iter().all(|c| c.phase == "Bound")
            && inv.pods.iter().any(|p| p.phase == "Running");
        if ready {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        inv = inventory(&client).await.unwrap();
    }
    let data = inv.claims.iter().find(|c| c.name == "data").unwrap();
    assert_eq!(data.phase, "Bound");
    assert_eq!(data.capacity, Some(2 << 30));
    assert_eq!(data.csi_driver.as_deref(), Some("sandbox.csi.lifeboat.dev"));
    assert_eq!(data.storage_class.as_deref(), Some("standard"));
    assert_eq!(data.access_modes, ["ReadWriteOnce"]);
    assert_eq!(data.labels["app"], "shop");
    assert_eq!(data.annotations["velero.io/csi-volumesnapshot-class"], "x");
    assert!(!data.uid.is_empty() && data.volume_name.is_some());
    let files = inv.claims.iter().find(|c| c.name == "files").unwrap();
    assert_eq!(files.phase, "Bound");
    assert_eq!(files.csi_driver, None, "an nfs volume is not CSI");
    assert_eq!(files.capacity, Some(500 << 20));

    assert!(
        inv.storage_classes
            .iter()
            .any(|c| c.name == "nfs" && c.provisioner == "sandbox.lifeboat.dev/nfs")
    );
    let classes = inv.snapshot_classes.as_ref().unwrap();
    let snap = classes
        .iter()
        .find(|c| c.name == "sandbox-snapclass")
        .unwrap();
    assert_eq!(snap.driver, "sandbox.csi.lifeboat.dev");
    assert_eq!(
        snap.annotations["snapshot.storage.kubernetes.io/is-default-class"],
        "true"
    );

    assert_eq!(
        inv.pods.len(),
        1,
        "only pods that mount claims: {:?}",
        inv.pods
    );
    let web = &inv.pods[0];
    assert_eq!(web.name, "web");
    assert_eq!(web.phase, "Running");
    assert!(web.node.is_some());
    assert_eq!(web.volumes.len(), 1);
    assert_eq!(
        (web.volumes[0].name.as_str(), web.volumes[0].claim.as_str()),
        ("f", "files")
    );
    assert_eq!(web.annotations["backup.velero.io/backup-volumes"], "f");
}

#[tokio::test]
async fn tolerates_missing_snapshot_crds_but_not_other_failures() {
    let sb = sandbox().await;
    let client = sb.client();
    // What an API server without the CRDs answers for their resources.
    let mut missing = FaultRule::error(404);
    missing.group = Some("snapshot.storage.k8s.io".into());
    missing.resource = Some("volumesnapshotclasses".into());
    let id = sb.add_fault(missing);
    let inv = inventory(&client).await.unwrap();
    assert_eq!(inv.snapshot_classes, None);
    assert!(!inv.claims.is_empty());
    sb.remove_fault(id);

    let mut forbidden = FaultRule::error(403);
    forbidden.resource = Some("pods".into());
    sb.add_fault(forbidden);
    let err = inventory(&client).await.unwrap_err().to_string();
    assert!(err.starts_with("could not list pods:"), "{err}");
    assert!(err.contains("may list pods in every namespace"), "{err}");
}
