//! KubeVirt VMs end to end: the KubeVirt and CDI CRDs installed in the
//! sandbox (as a cluster running KubeVirt serves them), a running VM with
//! two DataVolume disks, its VMI and its `virt-launcher` pod created as a
//! started VM would have them (no virt-controller runs in the sandbox),
//! and `lifeboat backup` freezing the guest through virt-api's
//! `subresources.kubevirt.io` endpoints around the disks' snapshots.

use std::path::Path;

use serde_json::{Value, json};

use crate::hooks::requests;
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
                        {"name": "data", "dataVolume": {"name": "fedora-data"}},
                        {"name": "ci", "cloudInitNoCloud": {"userDataSecretRef": {"name": "fedora-ci"}}}]}},
                 "instancetype": {"kind": "VirtualMachineInstancetype", "name": "u1.small",
                                  "revisionName": "fedora-u1.small-v1beta1-1"}},
        "status": {"printableStatus": "Running", "ready": true}
    }));
    // What the VM names but carries none of its labels: its cloud-init
    // Secret and the ControllerRevision virt-controller keeps its
    // instancetype in.
    docs.push(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "fedora-ci", "namespace": VMS},
        "stringData": {"userdata": "#cloud-config\npassword: fedora\n"}
    }));
    docs.push(json!({
        "apiVersion": "apps/v1", "kind": "ControllerRevision",
        "metadata": {"name": "fedora-u1.small-v1beta1-1", "namespace": VMS,
                     "labels": {"instancetype.kubevirt.io/object-kind": "VirtualMachineInstancetype"}},
        "revision": 1,
        "data": {"apiVersion": "instancetype.kubevirt.io/v1beta1", "kind": "VirtualMachineInstancetype",
                 "spec": {"cpu": {"guest": 1}, "memory": {"guest": "2Gi"}}}
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
    // virt-controller owns the VM's VMI, CDI each DataVolume's claim.
    let vm =
        w.rt.block_on(
            api(
                &w,
                VMS,
                "kubevirt.io",
                "v1",
                "VirtualMachine",
                "virtualmachines",
            )
            .get("fedora"),
        )
        .unwrap();
    let owner = json!({"metadata": {"ownerReferences": [{
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": "fedora",
        "uid": vm.metadata.uid.unwrap(), "controller": true, "blockOwnerDeletion": true}]}});
    w.rt.block_on(vmis(&w, VMS).patch(
        "fedora",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&owner),
    ))
    .unwrap();
    let dvs = api(
        &w,
        VMS,
        "cdi.kubevirt.io",
        "v1beta1",
        "DataVolume",
        "datavolumes",
    );
    let claims: kube::Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        kube::Api::namespaced(w.sb.client(), VMS);
    for disk in ["fedora-root", "fedora-data"] {
        let dv = w.rt.block_on(dvs.get(disk)).unwrap();
        let owner = json!({"metadata": {"ownerReferences": [{
            "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume", "name": disk,
            "uid": dv.metadata.uid.unwrap(), "controller": true, "blockOwnerDeletion": true}]}});
        w.rt.block_on(claims.patch(
            disk,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&owner),
        ))
        .unwrap();
    }
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

fn api(
    w: &World,
    ns: &str,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
) -> kube::Api<kube::core::DynamicObject> {
    let ar = kube::core::ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk(group, version, kind),
        plural,
    );
    kube::Api::namespaced_with(w.sb.client(), ns, &ar)
}

fn vmis(w: &World, ns: &str) -> kube::Api<kube::core::DynamicObject> {
    api(
        w,
        ns,
        "kubevirt.io",
        "v1",
        "VirtualMachineInstance",
        "virtualmachineinstances",
    )
}

fn vmi_status(w: &World) -> Value {
    w.rt.block_on(vmis(w, VMS).get("fedora")).unwrap().data["status"].clone()
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
        l["group"] == "subresources.kubevirt.io"
            && l["subresource"] == "freeze"
            && l["name"] == "fedora"
    });
    let unfreeze = at(&|l| {
        l["group"] == "subresources.kubevirt.io"
            && l["subresource"] == "unfreeze"
            && l["name"] == "fedora"
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
        !lines
            .iter()
            .any(|l| l["subresource"] == "exec" && l["namespace"] == VMS),
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
    assert!(
        !lines
            .iter()
            .any(|l| l["group"] == "subresources.kubevirt.io")
    );
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

#[test]
fn a_restored_vm_keeps_its_disks_data_without_a_vmi_or_launcher_and_with_its_options() {
    let w = world(true);
    let (code, out, err) = w.lifeboat(&["backup", "--policy", "db"]);
    assert_eq!(code, 0, "{out}{err}");
    let name = out.split_whitespace().next().unwrap().to_string();
    let (code, out, err) = w.lifeboat(&[
        "restore",
        "--from",
        &name,
        "--identity",
        &w.path("identity.txt"),
        "--namespace",
        VMS,
        "--namespace-mapping",
        "vms=vms-copy",
        "--clear-mac-addresses",
        "--new-firmware-uuid",
        "--run-strategy",
        "Halted",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let copy = "vms-copy";
    let vm =
        w.rt.block_on(
            api(
                &w,
                copy,
                "kubevirt.io",
                "v1",
                "VirtualMachine",
                "virtualmachines",
            )
            .get("fedora"),
        )
        .unwrap();
    let spec = &vm.data["spec"];
    assert_eq!(spec["runStrategy"], "Halted", "{spec}");
    let domain = &spec["template"]["spec"]["domain"];
    assert!(
        domain["devices"]["interfaces"][0]
            .get("macAddress")
            .is_none(),
        "{domain}"
    );
    let uuid = domain["firmware"]["uuid"].as_str().unwrap();
    assert_ne!(uuid, "5d307ca9-b3ef-428c-8861-06e72d69f223");
    // CDI is told the disks are filled, so it does not import over them.
    let dvs = api(
        &w,
        copy,
        "cdi.kubevirt.io",
        "v1beta1",
        "DataVolume",
        "datavolumes",
    );
    let claims: kube::Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        kube::Api::namespaced(w.sb.client(), copy);
    for disk in ["fedora-root", "fedora-data"] {
        let dv = w.rt.block_on(dvs.get(disk)).unwrap();
        assert_eq!(
            dv.metadata.annotations.unwrap_or_default()["cdi.kubevirt.io/storage.prePopulated"],
            disk
        );
        let claim = w.rt.block_on(claims.get(disk)).unwrap();
        assert_eq!(
            claim.metadata.annotations.unwrap_or_default()["cdi.kubevirt.io/storage.populatedFor"],
            disk
        );
    }
    // Neither the VMI nor the launcher pod is created: KubeVirt starts them.
    let list = kube::api::ListParams::default();
    assert!(
        w.rt.block_on(vmis(&w, copy).list(&list))
            .unwrap()
            .items
            .is_empty()
    );
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(w.sb.client(), copy);
    assert!(
        w.rt.block_on(pods.list(&list))
            .unwrap()
            .items
            .iter()
            .all(|p| {
                p.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("kubevirt.io"))
                    .map(String::as_str)
                    != Some("virt-launcher")
            })
    );
}

#[test]
fn plan_and_backup_refuse_a_running_vm_held_without_its_vm_object() {
    let w = world(true);
    // The plan shows the freeze where the policy holds the whole VM.
    let (code, out, err) = w.lifeboat(&["plan", "--cluster", "prod", "--offline"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("kubevirt-freeze pre in pod vms/virt-launcher-fedora-x7k2p"),
        "{out}"
    );
    assert!(!out.contains("backups are refused"), "{out}");
    let path = w.dir.path().join("repo/lifeboat.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace(
            "include: {namespaces: [mysql-persistent, vms]}",
            "include: {namespaces: [mysql-persistent, vms]}\n  exclude: {resources: [virtualmachines.kubevirt.io, virtualmachineinstances.kubevirt.io]}",
        ),
    )
    .unwrap();
    let (code, out, err) = w.lifeboat(&["plan", "--cluster", "prod", "--offline"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("backups are refused: VM vms/fedora is running and the backup holds its disks fedora-root, fedora-data but neither its VirtualMachine nor its VirtualMachineInstance"),
        "{out}"
    );
    let (code, out, err) = w.lifeboat(&["backup", "--policy", "db"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains("cannot back up its VMs consistently: VM vms/fedora is running"),
        "{err}"
    );
    assert!(
        !requests(&w)
            .iter()
            .any(|l| l["resource"] == "volumesnapshots"
                && l["verb"] == "create"
                && l["namespace"] == VMS),
        "no disk of the refused VM was snapshotted"
    );
}

#[test]
fn a_vm_selected_by_label_brings_what_it_names() {
    let w = world(true);
    let path = w.dir.path().join("repo/lifeboat.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace(
            "include: {namespaces: [mysql-persistent, vms]}",
            "include: {namespaces: [vms], labelSelector: {matchLabels: {app: fedora}}}",
        ),
    )
    .unwrap();
    let (code, out, err) = w.lifeboat(&["backup", "--policy", "db"]);
    assert_eq!(code, 0, "{out}{err}");
    let name = out.split_whitespace().next().unwrap().to_string();
    let (code, out, err) = w.lifeboat(&[
        "restore",
        "--from",
        &name,
        "--identity",
        &w.path("identity.txt"),
        "--namespace-mapping",
        "vms=vms-copy",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(w.sb.client(), "vms-copy");
    w.rt.block_on(secrets.get("fedora-ci"))
        .expect("the VM's cloud-init Secret");
    let revisions: kube::Api<k8s_openapi::api::apps::v1::ControllerRevision> =
        kube::Api::namespaced(w.sb.client(), "vms-copy");
    let rev =
        w.rt.block_on(revisions.get("fedora-u1.small-v1beta1-1"))
            .expect("the VM's instancetype revision is restored");
    assert_eq!(rev.data.unwrap().0["spec"]["memory"]["guest"], "2Gi");
    let vm =
        w.rt.block_on(
            api(
                &w,
                "vms-copy",
                "kubevirt.io",
                "v1",
                "VirtualMachine",
                "virtualmachines",
            )
            .get("fedora"),
        )
        .unwrap();
    assert_eq!(
        vm.data["spec"]["instancetype"]["revisionName"],
        "fedora-u1.small-v1beta1-1"
    );
}

#[test]
fn a_failed_freeze_fails_the_vms_disks_and_is_still_unfrozen() {
    let w = world(true);
    w.rt.block_on(vmis(&w, VMS).patch(
        "fedora",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&json!({"metadata": {"annotations": {
            lifeboat_sandbox::kubevirt::FAIL_FREEZE: "the guest agent did not answer"}}})),
    ))
    .unwrap();
    let (_, out, err) = w.lifeboat(&["backup", "--policy", "db"]);
    let name = out
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    let manifest = w.manifest(&name);
    assert_eq!(manifest["phase"], "PartiallyFailed", "{manifest}{err}");
    let lines = requests(&w);
    let sub = |s: &str| {
        lines
            .iter()
            .filter(|l| l["group"] == "subresources.kubevirt.io" && l["subresource"] == s)
            .map(|l| l["status"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(sub("freeze"), [500]);
    // Thaw always: the unfreeze owed to an attempted freeze is sent.
    assert_eq!(sub("unfreeze"), [500]);
    assert!(
        !lines.iter().any(|l| l["resource"] == "volumesnapshots"
            && l["verb"] == "create"
            && l["namespace"] == VMS),
        "a disk of a VM whose freeze failed was snapshotted"
    );
    let vms: Vec<&Value> = manifest["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["namespace"] == VMS)
        .collect();
    assert_eq!(vms.len(), 2, "{manifest}");
    assert!(vms.iter().all(|v| v["phase"] == "Failed"), "{manifest}");
    assert!(err.contains("the guest agent did not answer"), "{err}");
}
