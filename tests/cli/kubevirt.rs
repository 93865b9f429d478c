//! KubeVirt VMs end to end: the KubeVirt and CDI CRDs installed in the
//! sandbox (as a cluster running KubeVirt serves them), a running VM with
//! two DataVolume disks, its VMI and its `virt-launcher` pod created as a
//! started VM would have them (no virt-controller runs in the sandbox),
//! and `lifeboat backup` freezing the guest through virt-api's
//! `subresources.kubevirt.io` endpoints around the disks' snapshots.

use std::path::Path;

use serde_json::{Value, json};

use crate::volume_data::World;

const VMS: &str = "vms";

/// The VM's objects as YAML documents (JSON is YAML): the CRDs, the VM,
/// its DataVolumes and their claims, its VMI (Running, with the guest
/// agent connected when `agent`) and its launcher pod mounting both disks.
fn vm_objects(agent: bool, launcher_annotations: Value) -> String {
    let mut docs: Vec<Value> = lifeboat_sandbox::kubevirt::crds();
    docs.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": VMS}}));
    for disk in ["fedora-root", "fedora-data"] {
        docs.push(json!({
            "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
            "metadata": {"name": disk, "namespace": VMS},
            "spec": {"source": {"http": {"url": format!("https://images.example.com/{disk}.qcow2")}},
                     "storage": {"resources": {"requests": {"storage": "1Gi"}}}},
            "status": {"phase": "Succeeded"}
        }));
        docs.push(json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": disk, "namespace": VMS, "labels": {"app": "fedora"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "standard",
                     "resources": {"requests": {"storage": "1Gi"}}}
        }));
    }
    docs.push(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "fedora", "namespace": VMS, "labels": {"app": "fedora"}},
        "spec": {"runStrategy": "Always", "template": {"spec": {
            "domain": {"devices": {"interfaces": [{"name": "default", "masquerade": {},
                                                   "macAddress": "02:00:00:aa:bb:cc"}]},
                       "firmware": {"uuid": "5d307ca9-b3ef-428c-8861-06e72d69f223"}},
            "networks": [{"name": "default", "pod": {}}],
            "volumes": [{"name": "root", "dataVolume": {"name": "fedora-root"}},
                        {"name": "data", "dataVolume": {"name": "fedora-data"}}]}}},
        "status": {"printableStatus": "Running", "ready": true}
    }));
    docs.push(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": "fedora", "namespace": VMS, "labels": {"app": "fedora"}},
        "spec": {"domain": {"devices": {}}},
        "status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True"},
            {"type": "AgentConnected", "status": if agent { "True" } else { "False" }}]}
    }));
    docs.push(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "virt-launcher-fedora-x7k2p", "namespace": VMS,
                     "labels": {"kubevirt.io": "virt-launcher", "vm.kubevirt.io/name": "fedora", "app": "fedora"},
                     "annotations": launcher_annotations},
        "spec": {"containers": [{"name": "compute", "image": "quay.io/kubevirt/virt-launcher:v1.4.0"}],
                 "volumes": [{"name": "root", "persistentVolumeClaim": {"claimName": "fedora-root"}},
                             {"name": "data", "persistentVolumeClaim": {"claimName": "fedora-data"}}]}
    }));
    docs.iter()
        .map(|d| serde_json::to_string(d).unwrap())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// KubeVirt's own hook annotations on launcher pods.
fn virt_freezer() -> Value {
    json!({
        "pre.hook.backup.velero.io/container": "compute",
        "pre.hook.backup.velero.io/command": r#"["/usr/bin/virt-freezer", "--freeze", "--name", "fedora", "--namespace", "vms"]"#,
        "post.hook.backup.velero.io/container": "compute",
        "post.hook.backup.velero.io/command": r#"["/usr/bin/virt-freezer", "--unfreeze", "--name", "fedora", "--namespace", "vms"]"#,
    })
}

fn world(agent: bool) -> World {
    let w = World::with_app(
        Path::new(env!("CARGO_BIN_EXE_lifeboat")),
        1,
        "standard",
        &vm_objects(agent, virt_freezer()),
        &[],
        true,
    );
    let path = w.dir.path().join("repo/lifeboat.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace(
            "include: {namespaces: [mysql-persistent]}",
            "include: {namespaces: [mysql-persistent, vms]}",
        ),
    )
    .unwrap();
    w.set_volumes("    method: snapshot\n");
    w.claim_bound(VMS, "fedora-root");
    w.claim_bound(VMS, "fedora-data");
    wait_running(&w, "virt-launcher-fedora-x7k2p");
    w
}

fn wait_running(w: &World, pod: &str) {
    use k8s_openapi::api::core::v1::Pod;
    let pods: kube::Api<Pod> = kube::Api::namespaced(w.sb.client(), VMS);
    for _ in 0..800 {
        let p = w.rt.block_on(pods.get(pod)).unwrap();
        if p.status.and_then(|s| s.phase).as_deref() == Some("Running") {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!("{pod} is not Running");
}

fn requests(w: &World) -> Vec<Value> {
    std::fs::read_to_string(w.dir.path().join("requests.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn vmi_status(w: &World) -> Value {
    let ar = kube::core::ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachineInstance"),
        "virtualmachineinstances",
    );
    let api: kube::Api<kube::core::DynamicObject> =
        kube::Api::namespaced_with(w.sb.client(), VMS, &ar);
    w.rt.block_on(api.get("fedora")).unwrap().data["status"].clone()
}

#[test]
fn a_vm_is_frozen_through_virt_api_around_its_disks_snapshots() {
    let w = world(true);
    let (code, out, err) = w.lifeboat(&["backup", "--policy", "db"]);
    assert_eq!(code, 0, "{out}{err}");
    let name = out.split_whitespace().next().unwrap().to_string();
    let manifest = w.manifest(&name);
    assert_eq!(manifest["phase"], "Completed", "{manifest}");
    let lines = requests(&w);
    let at = |f: &dyn Fn(&Value) -> bool| -> Vec<usize> {
        lines
            .iter()
            .enumerate()
            .filter(|(_, l)| f(l))
            .map(|(i, _)| i)
            .collect()
    };
    let freeze = at(&|l| {
        l["group"] == "subresources.kubevirt.io" && l["subresource"] == "freeze" && l["name"] == "fedora"
    });
    let unfreeze = at(&|l| {
        l["group"] == "subresources.kubevirt.io" && l["subresource"] == "unfreeze" && l["name"] == "fedora"
    });
    let snapshots = at(&|l| {
        l["verb"] == "create" && l["resource"] == "volumesnapshots" && l["namespace"] == VMS
    });
    // Frozen once, through the API (the virt-freezer annotations are not
    // run as well), around both disks' snapshots.
    assert_eq!(freeze.len(), 1, "{freeze:?}");
    assert_eq!(unfreeze.len(), 1, "{unfreeze:?}");
    assert_eq!(lines[freeze[0]]["status"], 200);
    assert_eq!(lines[unfreeze[0]]["status"], 200);
    assert_eq!(snapshots.len(), 2, "{snapshots:?}");
    assert!(
        freeze[0] < snapshots[0] && snapshots[1] < unfreeze[0],
        "freeze {freeze:?} → snapshots {snapshots:?} → unfreeze {unfreeze:?}"
    );
    assert!(
        !lines.iter().any(|l| l["subresource"] == "exec" && l["namespace"] == VMS),
        "virt-freezer was run by exec as well"
    );
    assert!(vmi_status(&w).get("fsFreezeStatus").is_none());
    assert_eq!(manifest["hooks"], json!({"ran": 2, "failed": 0}));
}

#[test]
fn a_vm_without_a_guest_agent_is_snapshotted_crash_consistent_with_a_warning() {
    let w = world(false);
    let (code, out, err) = w.lifeboat(&["backup", "--policy", "db"]);
    assert_eq!(code, 0, "{out}{err}");
    let name = out.split_whitespace().next().unwrap().to_string();
    let lines = requests(&w);
    assert!(!lines.iter().any(|l| l["group"] == "subresources.kubevirt.io"));
    assert!(
        err.contains("VM vms/fedora has no guest agent connected"),
        "{err}"
    );
    let manifest = w.manifest(&name);
    assert_eq!(
        manifest["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["namespace"] == VMS && v["phase"] == "Completed")
            .count(),
        2,
        "{manifest}"
    );
}
