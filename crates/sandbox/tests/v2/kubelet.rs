//! Nodes, the scheduler and the kubelet: pods spread over nodes, selectors,
//! affinity and taints, WaitForFirstConsumer claims, the binding
//! subresource, containers that really run (/bin/sh mapped to an image)
//! with volumes, logs and termination messages, Multi-Attach, graceful
//! deletion, init containers, restartPolicy, and kubectl logs/exec/wait/
//! describe.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Node, PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, ResourceExt};
use lifeboat_sandbox::Sandbox;
use serde_json::{Value, json};

/// The image tests map to /bin/sh.
const SH: &str = "example.com/sh";

fn pod(v: Value) -> Pod {
    serde_json::from_value(v).unwrap()
}

async fn create(api: &Api<Pod>, v: Value) -> Pod {
    api.create(&PostParams::default(), &pod(v)).await.unwrap()
}

async fn wait_for(api: &Api<Pod>, name: &str, what: &str, f: impl Fn(&Pod) -> bool) -> Pod {
    let cond = await_condition(api.clone(), name, move |p: Option<&Pod>| p.is_some_and(&f));
    match tokio::time::timeout(Duration::from_secs(15), cond).await {
        Ok(p) => p.unwrap().unwrap(),
        Err(_) => panic!(
            "pod {name} never became {what}: {:#?}",
            api.get(name).await.map(|p| p.status)
        ),
    }
}

async fn gone(api: &Api<Pod>, p: &Pod) {
    let uid = p.uid().unwrap();
    let name = p.name_any();
    let cond = await_condition(api.clone(), &name, conditions::is_deleted(&uid));
    tokio::time::timeout(Duration::from_secs(10), cond)
        .await
        .unwrap_or_else(|_| panic!("pod {name} was not deleted"))
        .unwrap();
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

fn running(p: &Pod) -> bool {
    phase(p) == "Running"
}

fn condition(p: &Pod, ty: &str) -> Option<(String, Option<String>, Option<String>)> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == ty)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn node_of(p: &Pod) -> String {
    p.spec
        .as_ref()
        .unwrap()
        .node_name
        .clone()
        .unwrap_or_default()
}

async fn events_of(client: &Client, ns: &str, name: &str) -> Vec<Event> {
    let evs: Api<Event> = Api::namespaced(client.clone(), ns);
    evs.list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await
        .unwrap()
        .items
}

/// A one-node sandbox running [`SH`] images as /bin/sh.
async fn sh_sandbox() -> Sandbox {
    Sandbox::builder()
        .image_binary(SH, "/bin/sh")
        .start()
        .await
        .unwrap()
}

fn sh_pod(name: &str, script: &str, extra: Value) -> Value {
    let mut v = json!({"metadata": {"name": name}, "spec": {"restartPolicy": "Never",
        "containers": [{"name": "main", "image": format!("{SH}:1"), "command": ["sh", "-c", script]}]}});
    merge(&mut v, extra);
    v
}

fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

async fn claim(client: &Client, ns: &str, name: &str, extra: Value) -> PersistentVolumeClaim {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let mut v = json!({"metadata": {"name": name}, "spec": {"accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "1Gi"}}}});
    merge(&mut v, extra);
    api.create(&PostParams::default(), &serde_json::from_value(v).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn pods_spread_over_three_nodes_and_run() {
    let sb = Sandbox::builder().nodes(3).start().await.unwrap();
    let c = sb.client();
    let nodes: Api<Node> = Api::all(c.clone());
    let list = nodes.list(&ListParams::default()).await.unwrap().items;
    let names: Vec<String> = list.iter().map(|n| n.name_any()).collect();
    assert_eq!(
        names,
        ["sandbox-node-1", "sandbox-node-2", "sandbox-node-3"]
    );
    for (i, n) in list.iter().enumerate() {
        let labels = n.labels();
        assert_eq!(labels["kubernetes.io/hostname"], n.name_any());
        assert_eq!(
            labels["topology.kubernetes.io/zone"],
            format!("sandbox-zone-{}", i + 1)
        );
        let st = n.status.as_ref().unwrap();
        assert!(
            st.conditions
                .as_ref()
                .unwrap()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        );
        assert_eq!(st.allocatable.as_ref().unwrap()["pods"].0, "110");
    }
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    for i in 0..6 {
        create(
            &pods,
            json!({"metadata": {"name": format!("web-{i}")},
            "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}]}}),
        )
        .await;
    }
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    let mut ips = Vec::new();
    for i in 0..6 {
        let p = wait_for(&pods, &format!("web-{i}"), "Running", running).await;
        *per_node.entry(node_of(&p)).or_default() += 1;
        let st = p.status.clone().unwrap();
        ips.push(st.pod_ip.clone().unwrap());
        let node = list.iter().find(|n| n.name_any() == node_of(&p)).unwrap();
        let internal = node.status.as_ref().unwrap().addresses.as_ref().unwrap()[0]
            .address
            .clone();
        assert_eq!(st.host_ip.as_deref(), Some(internal.as_str()));
        assert!(st.start_time.is_some());
        let cs = &st.container_statuses.unwrap()[0];
        assert!(cs.ready && cs.restart_count == 0 && cs.started == Some(true));
        assert!(
            cs.state
                .as_ref()
                .unwrap()
                .running
                .as_ref()
                .unwrap()
                .started_at
                .is_some()
        );
        for ty in ["Ready", "ContainersReady", "Initialized", "PodScheduled"] {
            assert_eq!(condition(&p, ty).unwrap().0, "True", "{ty}");
        }
        let reasons: Vec<String> = events_of(&c, "default", &p.name_any())
            .await
            .into_iter()
            .filter_map(|e| e.reason)
            .collect();
        for r in ["Scheduled", "Pulled", "Created", "Started"] {
            assert!(reasons.iter().any(|x| x == r), "{r} in {reasons:?}");
        }
    }
    assert_eq!(
        per_node.values().copied().collect::<Vec<_>>(),
        [2, 2, 2],
        "{per_node:?}"
    );
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 6, "pod IPs are unique");
}

#[tokio::test]
async fn selectors_affinity_and_taints_steer_pods() {
    let sb = Sandbox::builder().nodes(3).start().await.unwrap();
    let c = sb.client();
    let nodes: Api<Node> = Api::all(c.clone());
    let pp = PatchParams::default();
    nodes
        .patch("sandbox-node-3", &pp, &Patch::Merge(json!({"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}})))
        .await
        .unwrap();
    nodes
        .patch(
            "sandbox-node-2",
            &pp,
            &Patch::Merge(json!({"metadata": {"labels": {"disk": "ssd"}}})),
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let ctr = json!([{"name": "c", "image": "busybox"}]);
    create(&pods, json!({"metadata": {"name": "ssd"}, "spec": {"nodeSelector": {"disk": "ssd"}, "containers": ctr}})).await;
    let zone3 = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["sandbox-zone-3"]}]}]}}});
    create(&pods, json!({"metadata": {"name": "gpu-untolerated"}, "spec": {"affinity": zone3, "containers": ctr}})).await;
    create(&pods, json!({"metadata": {"name": "gpu"}, "spec": {"affinity": zone3, "containers": ctr,
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]}}))
    .await;
    create(&pods, json!({"metadata": {"name": "nowhere"}, "spec": {"nodeSelector": {"disk": "nvme"}, "containers": ctr}})).await;
    // nodeName skips the scheduler, even onto a tainted node.
    create(&pods, json!({"metadata": {"name": "pinned"}, "spec": {"nodeName": "sandbox-node-3", "containers": ctr}})).await;

    assert_eq!(
        node_of(&wait_for(&pods, "ssd", "Running", running).await),
        "sandbox-node-2"
    );
    assert_eq!(
        node_of(&wait_for(&pods, "gpu", "Running", running).await),
        "sandbox-node-3"
    );
    assert_eq!(
        node_of(&wait_for(&pods, "pinned", "Running", running).await),
        "sandbox-node-3"
    );
    let p = wait_for(&pods, "gpu-untolerated", "unschedulable", |p| {
        condition(p, "PodScheduled").is_some()
    })
    .await;
    assert_eq!(phase(&p), "Pending");
    assert_eq!(node_of(&p), "");
    let (status, reason, message) = condition(&p, "PodScheduled").unwrap();
    assert_eq!(
        (status.as_str(), reason.as_deref()),
        ("False", Some("Unschedulable"))
    );
    let message = message.unwrap();
    assert!(
        message.starts_with("0/3 nodes are available:")
            && message.contains("1 node(s) had untolerated taint {dedicated: gpu}")
            && message.contains("2 node(s) didn't match Pod's node affinity/selector"),
        "{message}"
    );
    let evs = events_of(&c, "default", "gpu-untolerated").await;
    let failed = evs
        .iter()
        .find(|e| e.reason.as_deref() == Some("FailedScheduling"))
        .expect("FailedScheduling");
    assert_eq!(failed.type_.as_deref(), Some("Warning"));
    assert_eq!(failed.message.as_deref(), Some(message.as_str()));

    // A pending pod is retried when the nodes change.
    let p = wait_for(&pods, "nowhere", "unschedulable", |p| {
        condition(p, "PodScheduled").is_some()
    })
    .await;
    assert_eq!(phase(&p), "Pending");
    nodes
        .patch(
            "sandbox-node-1",
            &pp,
            &Patch::Merge(json!({"metadata": {"labels": {"disk": "nvme"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        node_of(&wait_for(&pods, "nowhere", "Running", running).await),
        "sandbox-node-1"
    );
}

#[tokio::test]
async fn the_binding_subresource_binds_once() {
    let sb = Sandbox::builder().nodes(2).start().await.unwrap();
    let c = sb.client();
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    // Another scheduler's pod is left alone by the default scheduler.
    create(
        &pods,
        json!({"metadata": {"name": "mine"}, "spec": {"schedulerName": "my-scheduler",
        "containers": [{"name": "c", "image": "busybox"}]}}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(node_of(&pods.get("mine").await.unwrap()), "");
    let bind = |node: &str| {
        let body = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "mine"},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
        http::Request::post("/api/v1/namespaces/default/pods/mine/binding")
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap())
            .unwrap()
    };
    let out: Value = c.request(bind("sandbox-node-2")).await.unwrap();
    assert_eq!(out["status"], "Success");
    let p = wait_for(&pods, "mine", "Running", running).await;
    assert_eq!(node_of(&p), "sandbox-node-2");
    let err = c
        .request::<Value>(bind("sandbox-node-1"))
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => assert_eq!(s.code, 409, "{s:?}"),
        other => panic!("expected 409, got {other}"),
    }
}

/// Waits until the claim carries the scheduler's selected node.
async fn selected_node(pvcs: &Api<PersistentVolumeClaim>, name: &str) -> String {
    let cond = await_condition(pvcs.clone(), name, |p: Option<&PersistentVolumeClaim>| {
        p.is_some_and(|p| {
            p.annotations()
                .contains_key("volume.kubernetes.io/selected-node")
        })
    });
    let claim = tokio::time::timeout(Duration::from_secs(10), cond)
        .await
        .unwrap_or_else(|_| panic!("claim {name} never got a selected node"))
        .unwrap()
        .unwrap();
    claim.annotations()["volume.kubernetes.io/selected-node"].clone()
}

/// Waits until the claim is Bound and returns its volume's name.
async fn bound_volume(pvcs: &Api<PersistentVolumeClaim>, name: &str) -> String {
    let cond = await_condition(pvcs.clone(), name, |p: Option<&PersistentVolumeClaim>| {
        p.and_then(|p| p.status.as_ref())
            .is_some_and(|s| s.phase.as_deref() == Some("Bound"))
    });
    let claim = tokio::time::timeout(Duration::from_secs(10), cond)
        .await
        .unwrap_or_else(|_| panic!("claim {name} never bound"))
        .unwrap()
        .unwrap();
    claim.spec.unwrap().volume_name.unwrap()
}

fn consumer(name: &str, claim: &str) -> Value {
    json!({"metadata": {"name": name}, "spec": {"nodeSelector": {"topology.kubernetes.io/zone": "sandbox-zone-2"},
        "containers": [{"name": "c", "image": "busybox", "volumeMounts": [{"name": "d", "mountPath": "/d"}]}],
        "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": claim}}]}})
}

#[tokio::test]
async fn wait_for_first_consumer_claims_get_a_selected_node() {
    let sb = Sandbox::builder().nodes(3).start().await.unwrap();
    let c = sb.client();
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(c.clone(), "default");

    // The sandbox's own CSI driver: the scheduler selects the node, the
    // external-provisioner provisions a volume reachable from that node,
    // the claim binds, and the pod runs there (that the pod waits for the
    // binding is shown below, with a provisioner that does not act).
    claim(
        &c,
        "default",
        "late",
        json!({"spec": {"storageClassName": "standard-wffc"}}),
    )
    .await;
    create(&pods, consumer("consumer", "late")).await;
    assert_eq!(selected_node(&pvcs, "late").await, "sandbox-node-2");
    let pv = bound_volume(&pvcs, "late").await;
    let pvs: Api<k8s_openapi::api::core::v1::PersistentVolume> = Api::all(c.clone());
    let affinity =
        serde_json::to_value(pvs.get(&pv).await.unwrap().spec.unwrap().node_affinity).unwrap();
    assert_eq!(
        affinity["required"]["nodeSelectorTerms"][0]["matchExpressions"][0],
        json!({"key": "kubernetes.io/hostname", "operator": "In", "values": ["sandbox-node-2"]})
    );
    let p = wait_for(&pods, "consumer", "Running", running).await;
    assert_eq!(node_of(&p), "sandbox-node-2");
    let mount = sb
        .data_dir()
        .join("var/lib/kubelet/pods")
        .join(p.uid().unwrap())
        .join("volumes/kubernetes.io~csi")
        .join(&pv)
        .join("mount");
    assert_eq!(
        std::fs::read_link(&mount).unwrap(),
        sb.data_dir().join("volumes").join(&pv)
    );

    // A provisioner the cluster does not run (here rancher's local-path
    // provisioner, which the test then plays): the claim gets its selected
    // node, and the pod waits unbound until the claim is bound.
    sb.seed([json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "local-path"},
        "provisioner": "rancher.io/local-path", "volumeBindingMode": "WaitForFirstConsumer"})])
        .unwrap();
    let ext = claim(
        &c,
        "default",
        "ext",
        json!({"spec": {"storageClassName": "local-path"}}),
    )
    .await;
    create(&pods, consumer("waiter", "ext")).await;
    assert_eq!(selected_node(&pvcs, "ext").await, "sandbox-node-2");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        node_of(&pods.get("waiter").await.unwrap()),
        "",
        "the pod waits for its claim"
    );
    let claim_now = pvcs.get("ext").await.unwrap();
    assert_eq!(claim_now.status.unwrap().phase.as_deref(), Some("Pending"));
    // Provision as local-path-provisioner does: a hostPath volume on the
    // selected node, pre-bound to the claim; the PV controller binds it.
    sb.seed([json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv-ext"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "local-path",
            "persistentVolumeReclaimPolicy": "Delete",
            "hostPath": {"path": "/opt/local-path-provisioner/pv-ext", "type": "DirectoryOrCreate"},
            "claimRef": {"kind": "PersistentVolumeClaim", "namespace": "default", "name": "ext", "uid": ext.uid().unwrap()},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["sandbox-node-2"]}]}]}}}})])
    .unwrap();
    assert_eq!(bound_volume(&pvcs, "ext").await, "pv-ext");
    let p = wait_for(&pods, "waiter", "Running", running).await;
    assert_eq!(node_of(&p), "sandbox-node-2");
    assert!(
        sb.data_dir()
            .join("opt/local-path-provisioner/pv-ext")
            .is_dir()
    );

    // A bound volume's node affinity keeps other pods to its node.
    create(
        &pods,
        json!({"metadata": {"name": "second"}, "spec": {
        "containers": [{"name": "c", "image": "busybox"}],
        "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "ext"}}]}}),
    )
    .await;
    assert_eq!(
        node_of(&wait_for(&pods, "second", "Running", running).await),
        "sandbox-node-2"
    );
}

#[tokio::test]
async fn a_process_writes_into_its_claim_and_the_next_pod_reads_it() {
    let sb = sh_sandbox().await;
    let c = sb.client();
    let pvc = claim(&c, "default", "data", json!({})).await;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(c.clone(), "default");
    let pv = pvcs
        .get("data")
        .await
        .unwrap()
        .spec
        .unwrap()
        .volume_name
        .unwrap();
    assert_eq!(pvc.name_any(), "data");
    sb.seed([
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": "default"}, "data": {"token": "czNjcjN0"}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "conf", "namespace": "default"}, "data": {"mode": "fast", "file.txt": "from a configmap"}}),
    ])
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let script = r#"echo hi > "$LIFEBOAT_SANDBOX_ROOT/data/f"
cat "$LIFEBOAT_SANDBOX_ROOT/etc/conf/file.txt" > "$LIFEBOAT_SANDBOX_ROOT/scratch/copy"
echo "token=$TOKEN mode=$MODE pod=$POD arg=$1"
echo "to stderr" >&2
printf done > "$LIFEBOAT_SANDBOX_ROOT/dev/termination-log""#;
    let mut v = sh_pod(
        "writer",
        script,
        json!({"spec": {"volumes": [
        {"name": "d", "persistentVolumeClaim": {"claimName": "data"}},
        {"name": "conf", "configMap": {"name": "conf"}},
        {"name": "scratch", "emptyDir": {}}]}}),
    );
    v["spec"]["containers"][0]["command"] = json!(["sh", "-c", script, "sh", "$(MODE)"]);
    v["spec"]["containers"][0]["env"] = json!([
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]);
    v["spec"]["containers"][0]["envFrom"] =
        json!([{"prefix": "", "configMapRef": {"name": "conf"}}]);
    v["spec"]["containers"][0]["env"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "MODE", "value": "fast"}));
    v["spec"]["containers"][0]["volumeMounts"] = json!([{"name": "d", "mountPath": "/data"},
        {"name": "conf", "mountPath": "/etc/conf"}, {"name": "scratch", "mountPath": "/scratch"}]);
    let created = create(&pods, v).await;
    let p = wait_for(&pods, "writer", "Succeeded", |p| phase(p) == "Succeeded").await;
    let cs = &p.status.clone().unwrap().container_statuses.unwrap()[0];
    let t = cs.state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(
        (t.exit_code, t.reason.as_deref(), t.message.as_deref()),
        (0, Some("Completed"), Some("done"))
    );
    assert!(!cs.ready);
    assert_eq!(
        condition(&p, "Ready").unwrap().1.as_deref(),
        Some("PodCompleted")
    );
    let logs = pods.logs("writer", &LogParams::default()).await.unwrap();
    assert!(
        logs.contains("token=s3cr3t mode=fast pod=writer arg=fast\n"),
        "{logs}"
    );
    assert!(logs.contains("to stderr"), "{logs}");
    let tail = pods
        .logs(
            "writer",
            &LogParams {
                tail_lines: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(tail.lines().count(), 1, "{tail}");
    // The bytes are in the volume, and the kubelet's host paths point at them.
    let data = sb.data_dir();
    assert_eq!(
        std::fs::read_to_string(data.join("volumes").join(&pv).join("f")).unwrap(),
        "hi\n"
    );
    let pod_dir = data
        .join("var/lib/kubelet/pods")
        .join(created.uid().unwrap());
    assert_eq!(
        std::fs::read_link(
            pod_dir
                .join("volumes/kubernetes.io~csi")
                .join(&pv)
                .join("mount")
        )
        .unwrap(),
        data.join("volumes").join(&pv)
    );
    assert_eq!(
        std::fs::read_to_string(pod_dir.join("volumes/kubernetes.io~empty-dir/scratch/copy"))
            .unwrap(),
        "from a configmap"
    );
    assert!(
        pod_dir
            .join("volumes/kubernetes.io~configmap/conf/mode")
            .is_file()
    );

    // A second pod mounting the claim sees the file.
    let reader = sh_pod(
        "reader",
        r#"cat "$LIFEBOAT_SANDBOX_ROOT/in/f""#,
        json!({"spec": {
        "containers": [{"name": "main", "image": format!("{SH}:2"), "command": ["sh", "-c", r#"cat "$LIFEBOAT_SANDBOX_ROOT/in/f""#],
            "volumeMounts": [{"name": "d", "mountPath": "/in", "readOnly": true}]}],
        "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]}}),
    );
    create(&pods, reader).await;
    wait_for(&pods, "reader", "Succeeded", |p| phase(p) == "Succeeded").await;
    assert_eq!(
        pods.logs("reader", &LogParams::default()).await.unwrap(),
        "hi\n"
    );

    // A failing process: Failed, its exit code, the log tail as message.
    let mut failing = sh_pod("failing", "echo broken; exit 3", json!({}));
    failing["spec"]["containers"][0]["terminationMessagePolicy"] = json!("FallbackToLogsOnError");
    create(&pods, failing).await;
    let p = wait_for(&pods, "failing", "Failed", |p| phase(p) == "Failed").await;
    let cs = &p.status.unwrap().container_statuses.unwrap()[0];
    let t = cs.state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(
        (t.exit_code, t.reason.as_deref(), t.message.as_deref()),
        (3, Some("Error"), Some("broken\n"))
    );

    // Deleting a pod removes its directory, not the volume's bytes.
    pods.delete("writer", &DeleteParams::default())
        .await
        .unwrap();
    gone(&pods, &created).await;
    assert!(!pod_dir.exists());
    assert!(data.join("volumes").join(&pv).join("f").is_file());
}

/// As the kubelet's plugins do: a `local` PV is bind-mounted into the pod's
/// directory (`volumes/kubernetes.io~local-volume/<pv>`), a `hostPath` PV is
/// the node's directory itself and leaves no entry there.
#[tokio::test]
async fn local_volumes_are_mounted_into_the_pod_directory_host_path_ones_are_not() {
    let sb = sh_sandbox().await;
    let c = sb.client();
    let pv = |name: &str, source: Value| {
        let mut v = json!({"apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": name},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                     "storageClassName": "", "persistentVolumeReclaimPolicy": "Retain",
                     "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                         {"key": "kubernetes.io/hostname", "operator": "In",
                          "values": ["sandbox-node-1"]}]}]}}}});
        merge(&mut v, json!({"spec": source}));
        v
    };
    sb.seed([
        pv("disk-a", json!({"local": {"path": "/mnt/disks/a"}})),
        pv("host-b", json!({"hostPath": {"path": "/srv/b"}})),
    ])
    .unwrap();
    for (name, volume) in [("a", "disk-a"), ("b", "host-b")] {
        claim(
            &c,
            "default",
            name,
            json!({"spec": {"storageClassName": "", "volumeName": volume}}),
        )
        .await;
    }
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(c.clone(), "default");
    bound_volume(&pvcs, "a").await;
    bound_volume(&pvcs, "b").await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let script =
        r#"echo a > "$LIFEBOAT_SANDBOX_ROOT/a/f"; echo b > "$LIFEBOAT_SANDBOX_ROOT/b/f"; sleep 30"#;
    let created = create(
        &pods,
        sh_pod(
            "both",
            script,
            json!({"spec": {
                "containers": [{"name": "main", "image": format!("{SH}:1"), "command": ["sh", "-c", script],
                    "volumeMounts": [{"name": "a", "mountPath": "/a"}, {"name": "b", "mountPath": "/b"}]}],
                "volumes": [{"name": "a", "persistentVolumeClaim": {"claimName": "a"}},
                            {"name": "b", "persistentVolumeClaim": {"claimName": "b"}}]}}),
        ),
    )
    .await;
    wait_for(&pods, "both", "Running", running).await;
    let data = sb.data_dir();
    for _ in 0..200 {
        // The shell creates each file before it writes the line: wait for
        // the line, not only the file.
        let written = |p: &str| std::fs::read(data.join(p)).is_ok_and(|b| b.ends_with(b"\n"));
        if written("srv/b/f") && written("mnt/disks/a/f") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(
        std::fs::read_to_string(data.join("mnt/disks/a/f")).unwrap(),
        "a\n"
    );
    assert_eq!(
        std::fs::read_to_string(data.join("srv/b/f")).unwrap(),
        "b\n"
    );
    let volumes = data
        .join("var/lib/kubelet/pods")
        .join(created.uid().unwrap())
        .join("volumes");
    assert_eq!(
        std::fs::read_to_string(volumes.join("kubernetes.io~local-volume/disk-a/f")).unwrap(),
        "a\n"
    );
    let plugins: Vec<String> = std::fs::read_dir(&volumes)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        plugins
            .iter()
            .all(|p| !volumes.join(p).join("host-b").exists()),
        "{plugins:?}"
    );
}

#[tokio::test]
async fn a_read_write_once_volume_attaches_to_one_node_at_a_time() {
    let sb = Sandbox::builder().nodes(2).start().await.unwrap();
    let c = sb.client();
    claim(&c, "default", "rwo", json!({})).await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let on = |name: &str, node: &str| {
        json!({"metadata": {"name": name}, "spec": {
        "nodeSelector": {"kubernetes.io/hostname": node},
        "containers": [{"name": "c", "image": "busybox", "volumeMounts": [{"name": "d", "mountPath": "/d"}]}],
        "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "rwo"}}]}})
    };
    let first = create(&pods, on("first", "sandbox-node-1")).await;
    wait_for(&pods, "first", "Running", running).await;
    create(&pods, on("second", "sandbox-node-2")).await;
    let waiting = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|cs| {
                cs[0]
                    .state
                    .as_ref()
                    .and_then(|s| s.waiting.as_ref())
                    .and_then(|w| w.reason.as_deref())
                    == Some("ContainerCreating")
            })
    };
    let p = wait_for(&pods, "second", "ContainerCreating", waiting).await;
    assert_eq!(
        (phase(&p), node_of(&p).as_str()),
        ("Pending", "sandbox-node-2")
    );
    let evs = events_of(&c, "default", "second").await;
    let e = evs
        .iter()
        .find(|e| e.reason.as_deref() == Some("FailedAttachVolume"))
        .expect("FailedAttachVolume");
    assert!(
        e.message
            .as_deref()
            .unwrap()
            .starts_with("Multi-Attach error for volume"),
        "{e:?}"
    );
    assert!(e.message.as_deref().unwrap().contains("first"));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        waiting(&pods.get("second").await.unwrap()),
        "still waiting while the first pod runs"
    );
    pods.delete("first", &DeleteParams::default())
        .await
        .unwrap();
    gone(&pods, &first).await;
    wait_for(&pods, "second", "Running", running).await;
}

#[tokio::test]
async fn deletion_honours_the_grace_period() {
    let sb = sh_sandbox().await;
    let c = sb.client();
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let out = sb.data_dir().join("host-out");
    std::fs::create_dir_all(&out).unwrap();
    let host = json!({"spec": {"terminationGracePeriodSeconds": 10,
        "volumes": [{"name": "out", "hostPath": {"path": "/host-out", "type": "Directory"}}]}});
    // Catches SIGTERM, says goodbye in a host path and exits at once.
    let mut polite = sh_pod(
        "polite",
        r#"trap 'echo bye > "$LIFEBOAT_SANDBOX_ROOT/out/polite"; exit 0' TERM; while :; do sleep 0.05; done"#,
        host.clone(),
    );
    polite["spec"]["containers"][0]["volumeMounts"] = json!([{"name": "out", "mountPath": "/out"}]);
    // Ignores SIGTERM: killed when its 1 s grace period ends.
    let mut stubborn = sh_pod(
        "stubborn",
        "trap '' TERM; while :; do sleep 0.05; done",
        host,
    );
    stubborn["spec"]["terminationGracePeriodSeconds"] = json!(1);
    let polite = create(&pods, polite).await;
    let stubborn = create(&pods, stubborn).await;
    let sim = create(&pods, json!({"metadata": {"name": "sim"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}})).await;
    for n in ["polite", "stubborn", "sim"] {
        wait_for(&pods, n, "Running", running).await;
    }
    let answered = pods
        .delete("polite", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert!(answered.metadata.deletion_timestamp.is_some());
    assert_eq!(answered.metadata.deletion_grace_period_seconds, Some(10));
    gone(&pods, &polite).await;
    assert_eq!(
        std::fs::read_to_string(out.join("polite")).unwrap(),
        "bye\n"
    );
    let t0 = std::time::Instant::now();
    pods.delete("stubborn", &DeleteParams::default())
        .await
        .unwrap();
    gone(&pods, &stubborn).await;
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "killed only after the grace period: {:?}",
        t0.elapsed()
    );
    let evs = events_of(&c, "default", "stubborn").await;
    assert!(evs.iter().any(|e| e.reason.as_deref() == Some("Killing")));
    // Grace 0 removes the object at once.
    let answered = pods
        .delete(
            "sim",
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(answered.is_left());
    assert_eq!(
        pods.get_opt("sim")
            .await
            .unwrap()
            .map(|p| p.uid() == sim.uid()),
        None
    );
}

#[tokio::test]
async fn init_containers_run_first_and_restart_policy_applies() {
    let sb = sh_sandbox().await;
    let c = sb.client();
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let work = json!([{"name": "w", "mountPath": "/work"}]);
    create(&pods, json!({"metadata": {"name": "staged"}, "spec": {"restartPolicy": "Never",
        "volumes": [{"name": "w", "emptyDir": {}}],
        "initContainers": [
            {"name": "one", "image": format!("{SH}:1"), "command": ["sh", "-c", r#"echo one >> "$LIFEBOAT_SANDBOX_ROOT/work/order""#], "volumeMounts": work},
            {"name": "sim", "image": "busybox"},
            {"name": "two", "image": format!("{SH}:1"), "command": ["sh", "-c", r#"echo two >> "$LIFEBOAT_SANDBOX_ROOT/work/order""#], "volumeMounts": work}],
        "containers": [{"name": "main", "image": format!("{SH}:1"), "command": ["sh", "-c", r#"cat "$LIFEBOAT_SANDBOX_ROOT/work/order""#], "volumeMounts": work}]}}))
    .await;
    let p = wait_for(&pods, "staged", "Succeeded", |p| phase(p) == "Succeeded").await;
    assert_eq!(
        pods.logs(
            "staged",
            &LogParams {
                container: Some("main".into()),
                ..Default::default()
            }
        )
        .await
        .unwrap(),
        "one\ntwo\n"
    );
    let st = p.status.unwrap();
    let init = st.init_container_statuses.unwrap();
    assert_eq!(
        init.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["one", "sim", "two"]
    );
    assert!(init.iter().all(|s| {
        s.state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap()
            .reason
            .as_deref()
            == Some("Completed")
    }));

    // OnFailure: the container is restarted until it succeeds.
    let flaky = r#"f="$LIFEBOAT_SANDBOX_ROOT/work/once"; if [ -f "$f" ]; then echo second; exit 0; fi; touch "$f"; echo first; exit 1"#;
    create(&pods, sh_pod("flaky", flaky, json!({"spec": {"restartPolicy": "OnFailure",
        "volumes": [{"name": "w", "emptyDir": {}}],
        "containers": [{"name": "main", "image": format!("{SH}:1"), "command": ["sh", "-c", flaky], "volumeMounts": work}]}})))
    .await;
    let p = wait_for(&pods, "flaky", "Succeeded", |p| phase(p) == "Succeeded").await;
    let cs = &p.status.unwrap().container_statuses.unwrap()[0];
    assert_eq!(cs.restart_count, 1);
    assert_eq!(
        cs.last_state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap()
            .exit_code,
        1
    );
    assert_eq!(
        pods.logs("flaky", &LogParams::default()).await.unwrap(),
        "second\n"
    );
    let evs = events_of(&c, "default", "flaky").await;
    assert!(evs.iter().any(|e| e.reason.as_deref() == Some("BackOff")));

    // A failing init container with restartPolicy Never fails the pod; the
    // containers never start.
    create(&pods, json!({"metadata": {"name": "bad-init"}, "spec": {"restartPolicy": "Never",
        "initContainers": [{"name": "i", "image": format!("{SH}:1"), "command": ["sh", "-c", "exit 2"]}],
        "containers": [{"name": "main", "image": "busybox"}]}}))
    .await;
    let p = wait_for(&pods, "bad-init", "Failed", |p| phase(p) == "Failed").await;
    let cs = &p.status.unwrap().container_statuses.unwrap()[0];
    assert!(cs.state.as_ref().unwrap().waiting.is_some(), "{cs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_exec_wait_and_describe() {
    let Some(kubectl) = super::kubectl() else {
        return;
    };
    let sb = Sandbox::builder()
        .nodes(2)
        .image_binary(SH, "/bin/sh")
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    sb.write_kubeconfig(&kc).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&kc)
            .arg("--request-timeout=20s")
            .args(args)
            .env("HOME", dir.path())
            .env("KUBECACHEDIR", dir.path().join("cache"))
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "kubectl {args:?} failed:\n{text}");
        text
    };
    let manifest = dir.path().join("pod.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: talker, namespace: default}}\nspec:\n  containers:\n  - name: main\n    image: {SH}:1\n    command: [sh, -c, 'echo hello from the pod; while :; do sleep 0.05; done']\n"
        ),
    )
    .unwrap();
    let kc_run = |args: &[&str]| tokio::task::block_in_place(|| run(args));
    kc_run(&["apply", "-f", &manifest.display().to_string()]);
    let out = kc_run(&[
        "wait",
        "--for=condition=Ready",
        "pod/talker",
        "--timeout=20s",
    ]);
    assert!(out.contains("condition met"), "{out}");
    let out = kc_run(&["logs", "talker"]);
    assert_eq!(out, "hello from the pod\n");
    let out = kc_run(&["exec", "talker", "--", "true"]);
    assert_eq!(out, "");
    let out = kc_run(&["describe", "pod", "talker"]);
    for want in [
        "Node:",
        "sandbox-node-",
        "Status:",
        "Running",
        "IP:",
        "Events:",
        "Scheduled",
        "Started",
        "default-scheduler",
    ] {
        assert!(out.contains(want), "{want} missing in:\n{out}");
    }
    let out = kc_run(&["delete", "pod", "talker", "--grace-period=1"]);
    assert!(out.contains("deleted"), "{out}");
}

#[tokio::test]
async fn a_terminal_phase_set_through_the_api_stops_the_pod_for_good() {
    let sb = sh_sandbox().await;
    let c = sb.client();
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    // Restarted forever by its policy, were it not for the phase.
    create(
        &pods,
        sh_pod(
            "ended",
            "echo up; exec sleep 600",
            json!({"spec": {"restartPolicy": "Always", "terminationGracePeriodSeconds": 1}}),
        ),
    )
    .await;
    wait_for(&pods, "ended", "Running", running).await;
    // Another component ends the pod (eviction does this).
    pods.patch_status(
        "ended",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Failed", "reason": "Evicted"}})),
    )
    .await
    .unwrap();
    let p = wait_for(&pods, "ended", "stopped", |p| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|cs| cs[0].state.as_ref().is_some_and(|s| s.terminated.is_some()))
    })
    .await;
    let st = p.status.unwrap();
    assert_eq!(st.phase.as_deref(), Some("Failed"), "the kubelet keeps it");
    assert_eq!(st.reason.as_deref(), Some("Evicted"));
    assert_eq!(
        condition(&pods.get("ended").await.unwrap(), "Ready").map(|c| c.0),
        Some("False".into())
    );
    let evs = events_of(&c, "default", "ended").await;
    assert!(evs.iter().any(|e| e.reason.as_deref() == Some("Killing")));
    // Nothing restarts it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let p = pods.get("ended").await.unwrap();
    let st = p.status.unwrap();
    assert_eq!(st.phase.as_deref(), Some("Failed"));
    let cs = &st.container_statuses.unwrap()[0];
    assert_eq!(cs.restart_count, 0);
    assert!(cs.state.as_ref().unwrap().terminated.is_some(), "{cs:?}");
}

fn waiting_reason(p: &Pod) -> Option<String> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()?
        .waiting
        .as_ref()?
        .reason
        .clone()
}

#[tokio::test]
async fn an_image_the_registry_lacks_keeps_its_pod_pending_in_image_pull_back_off() {
    let sb = Sandbox::builder()
        .image_binary(SH, "/bin/sh")
        .missing_image("registry.invalid/")
        .start()
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(sb.client(), "default");
    let mut v = sh_pod("pull", "true", json!({}));
    v["spec"]["containers"][0]["image"] = json!("registry.invalid/app:1");
    create(&pods, v).await;
    // The failed pull (ErrImagePull) is soon followed by the back-off.
    let p = wait_for(&pods, "pull", "ErrImagePull", |p| {
        matches!(
            waiting_reason(p).as_deref(),
            Some("ErrImagePull" | "ImagePullBackOff")
        )
    })
    .await;
    assert_eq!(phase(&p), "Pending");
    let p = wait_for(&pods, "pull", "ImagePullBackOff", |p| {
        waiting_reason(p).as_deref() == Some("ImagePullBackOff")
    })
    .await;
    assert_eq!(phase(&p), "Pending");
    let events = events_of(&sb.client(), "default", "pull").await;
    assert!(
        events.iter().any(|e| e.reason.as_deref() == Some("Failed")
            && e.message
                .as_deref()
                .is_some_and(|m| m.contains("Failed to pull image"))),
        "{events:?}"
    );
    // Other images still pull and run.
    let mut v = sh_pod("mapped", "true", json!({}));
    v["spec"]["containers"][0]["image"] = json!(format!("{SH}:2"));
    create(&pods, v).await;
    wait_for(&pods, "mapped", "Succeeded", |p| phase(p) == "Succeeded").await;
}
