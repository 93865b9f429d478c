//! Cluster behaviours a backup/restore tool must cope with, run inside the
//! write path (synchronously, so tests see their effect as soon as the write
//! returns) or after it (deferred, for the delayed ones).
//!
//! - **Bootstrap**: namespaces `default`, `kube-system`, `kube-public`,
//!   `kube-node-lease` (nodes: see `nodes`); the `kubernetes` Service
//!   (10.96.0.1); default StorageClass `standard` and default
//!   VolumeSnapshotClass `sandbox-snapclass` (driver `sandbox.csi.lifeboat.dev`).
//! - **Namespaces** get phase `Active`, the `kubernetes.io/metadata.name`
//!   label, a `default` ServiceAccount and a `kube-root-ca.crt` ConfigMap.
//!   Deleting one sets phase `Terminating` (creates in it get 403) and a
//!   background finalizer then deletes everything in it and the namespace
//!   (finalizers on the contents are not waited for).
//! - **Services** get a clusterIP from 10.96.0.0/12 (headless `None` and
//!   ExternalName kept), node ports from 30000-32767 for NodePort and
//!   LoadBalancer; a requested IP or port must be free and in range (422);
//!   changing clusterIP is rejected (422); an update without clusterIP or
//!   nodePort keeps the allocated values.
//! - **PersistentVolumeClaims** without `storageClassName` get the default
//!   class; a claim whose class exists is bound at once to a generated PV
//!   `pvc-<uid>` (CSI source, `claimRef`, reclaim policy of the class); a
//!   claim naming `spec.volumeName` binds to that PV when it exists.
//!   Deleting a claim deletes its PV when the reclaim policy is `Delete`,
//!   else marks it `Released`.
//! - **VolumeSnapshots** become `readyToUse` with a VolumeSnapshotContent
//!   after a configurable delay.
//! - **Pods** are scheduled by `scheduler` and run by `kubelet`.
//! - **CustomResourceDefinitions** are validated, get `Established` and
//!   `NamesAccepted` conditions and add their resource to discovery;
//!   deleting one removes the resource and all its objects.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::handlers::{CreateOpts, Deferred, State, create_object, delete_object};
use crate::meta::{self, meta_mut, meta_str};
use crate::resources::{ResKey, ResourceInfo, crd_resource};
use crate::store::Obj;

/// The CSI driver name of the simulated provisioner and snapshotter.
pub const DRIVER: &str = "sandbox.csi.lifeboat.dev";

fn key(group: &str, resource: &str) -> ResKey {
    (group.to_string(), resource.to_string())
}

fn get(st: &State, group: &str, resource: &str, ns: &str, name: &str) -> Option<Value> {
    st.store
        .get(&key(group, resource), ns, name)
        .map(|o| o.value())
}

/// Stores a modified object with the next resourceVersion.
fn put(st: &mut State, group: &str, resource: &str, mut v: Value) {
    meta_mut(&mut v).insert(
        "resourceVersion".into(),
        json!(st.store.next_rv().to_string()),
    );
    st.store.put(&key(group, resource), Obj::from_value(&v));
}

fn create_builtin(
    st: &mut State,
    group: &str,
    resource: &str,
    ns: &str,
    v: Value,
) -> Result<Value, ApiError> {
    let info = st
        .registry
        .by_key(&key(group, resource))
        .ok_or_else(|| ApiError::bad_request(format!("{resource} is not served")))?;
    let version = info.preferred().to_string();
    create_object(
        st,
        &info,
        &version,
        ns,
        v,
        CreateOpts {
            dry_run: false,
            keep_status: true,
        },
    )
}

/// Creates the objects every cluster has.
pub fn bootstrap(st: &mut State) -> Result<(), ApiError> {
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        create_builtin(st, "", "namespaces", "", json!({"metadata": {"name": ns}}))?;
    }
    create_builtin(
        st,
        "",
        "services",
        "default",
        json!({"metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "targetPort": 6443}]}}),
    )?;
    create_builtin(
        st,
        "storage.k8s.io",
        "storageclasses",
        "",
        json!({"metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": DRIVER, "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate", "allowVolumeExpansion": true}),
    )?;
    create_builtin(
        st,
        "snapshot.storage.k8s.io",
        "volumesnapshotclasses",
        "",
        json!({"metadata": {"name": "sandbox-snapclass", "annotations": {"snapshot.storage.kubernetes.io/is-default-class": "true"}},
            "driver": DRIVER, "deletionPolicy": "Delete"}),
    )?;
    Ok(())
}

/// A namespaced create needs an existing, non-terminating namespace.
pub fn check_namespace_open(st: &State, ns: &str) -> Result<(), ApiError> {
    let Some(n) = get(st, "", "namespaces", "", ns) else {
        return Err(ApiError::not_found("", "namespaces", ns));
    };
    if n["metadata"].get("deletionTimestamp").is_some() || n["status"]["phase"] == "Terminating" {
        return Err(ApiError::forbidden(format!(
            "unable to create new content in namespace {ns} because it is being terminated"
        )));
    }
    Ok(())
}

/// Defaults and allocation before an object is first stored.
pub fn before_create(st: &mut State, info: &ResourceInfo, v: &mut Value) -> Result<(), ApiError> {
    match (info.group.as_str(), info.resource.as_str()) {
        ("", "namespaces") => {
            let name = meta_str(v, "name").to_string();
            let m = meta_mut(v);
            let labels = m.entry("labels").or_insert_with(|| json!({}));
            labels["kubernetes.io/metadata.name"] = json!(name);
            v["spec"] = json!({"finalizers": ["kubernetes"]});
            v["status"] = json!({"phase": "Active"});
        }
        ("", "services") => allocate_service(st, v, None)?,
        ("", "persistentvolumeclaims") => {
            if v["spec"].get("storageClassName").is_none()
                && let Some(sc) = default_storage_class(st)
            {
                v["spec"]["storageClassName"] = json!(sc);
            }
            if v["spec"].get("volumeMode").is_none() {
                v["spec"]["volumeMode"] = json!("Filesystem");
            }
            v["status"] = json!({"phase": "Pending"});
        }
        ("", "persistentvolumes") if v.get("status").is_none() => {
            let phase = if v["spec"]["claimRef"].is_object() {
                "Bound"
            } else {
                "Available"
            };
            v["status"] = json!({"phase": phase});
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            let name = meta_str(v, "name").to_string();
            let r = crd_resource(v)
                .map_err(|c| ApiError::invalid(&info.group, &info.kind, &name, &c))?;
            if st.registry.by_key(&r.key()).is_some_and(|e| !e.custom) {
                return Err(ApiError::invalid_field(
                    &info.group,
                    &info.kind,
                    &name,
                    "spec.group",
                    "Invalid value: built-in resource",
                ));
            }
            let storage: Vec<Value> = v["spec"]["versions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|x| x["storage"].as_bool().unwrap_or(false))
                .map(|x| x["name"].clone())
                .collect();
            let now = meta::now();
            v["status"] = json!({
                "acceptedNames": v["spec"]["names"],
                "storedVersions": storage,
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now},
                ],
            });
        }
        ("snapshot.storage.k8s.io", "volumesnapshots") => {
            if v["spec"].get("volumeSnapshotClassName").is_none()
                && v["spec"]["source"]
                    .get("persistentVolumeClaimName")
                    .is_some()
            {
                v["spec"]["volumeSnapshotClassName"] = json!("sandbox-snapclass");
            }
            v["status"] = json!({"readyToUse": false});
        }
        _ => {}
    }
    Ok(())
}

/// Dependent objects after a create was stored.
pub fn after_create(st: &mut State, info: &ResourceInfo, v: &Value) -> Result<(), ApiError> {
    match (info.group.as_str(), info.resource.as_str()) {
        ("", "namespaces") => {
            let ns = meta_str(v, "name").to_string();
            create_builtin(
                st,
                "",
                "serviceaccounts",
                &ns,
                json!({"metadata": {"name": "default"}}),
            )?;
            let ca = st.ca_pem.clone();
            create_builtin(
                st,
                "",
                "configmaps",
                &ns,
                json!({"metadata": {"name": "kube-root-ca.crt", "annotations": {"kubernetes.io/description":
                    "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
                    "data": {"ca.crt": ca}}),
            )?;
        }
        ("", "persistentvolumeclaims") => bind_claim(st, v)?,
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            let name = meta_str(v, "name").to_string();
            st.registry
                .add_crd(v)
                .map_err(|c| ApiError::invalid(&info.group, &info.kind, &name, &c))?;
        }
        ("snapshot.storage.k8s.io", "volumesnapshots") => {
            st.deferred.push(Deferred::SnapshotReady {
                namespace: meta_str(v, "namespace").to_string(),
                name: meta_str(v, "name").to_string(),
            });
        }
        _ => {}
    }
    Ok(())
}

/// Immutability and kept allocations on update.
pub fn before_update(
    st: &mut State,
    info: &ResourceInfo,
    old: &Value,
    new: &mut Value,
) -> Result<(), ApiError> {
    match (info.group.as_str(), info.resource.as_str()) {
        ("", "services") => allocate_service(st, new, Some(old)),
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            let name = meta_str(new, "name").to_string();
            let r = crd_resource(new)
                .map_err(|c| ApiError::invalid(&info.group, &info.kind, &name, &c))?;
            let before = crd_resource(old)
                .map_err(|c| ApiError::invalid(&info.group, &info.kind, &name, &c))?;
            if r.key() != before.key() {
                return Err(ApiError::invalid_field(
                    &info.group,
                    &info.kind,
                    &name,
                    "spec.names.plural",
                    "Invalid value: field is immutable",
                ));
            }
            st.registry
                .add_crd(new)
                .map_err(|c| ApiError::invalid(&info.group, &info.kind, &name, &c))?;
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Clean-up after an object is gone.
pub fn after_delete(st: &mut State, info: &ResourceInfo, v: &Value) {
    match (info.group.as_str(), info.resource.as_str()) {
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            let Ok(r) = crd_resource(v) else { return };
            let key = r.key();
            let objs: Vec<_> = st.store.table(&key).values().cloned().collect();
            for o in objs {
                let mut last = o.value();
                meta_mut(&mut last).insert(
                    "resourceVersion".into(),
                    json!(st.store.next_rv().to_string()),
                );
                st.store.remove(&key, Obj::from_value(&last));
            }
            st.store.drop_table(&key);
            st.registry.remove(&key);
        }
        ("", "persistentvolumeclaims") => {
            let pv_name = v["spec"]["volumeName"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let Some(pv) = st.store.get(&key("", "persistentvolumes"), "", &pv_name) else {
                return;
            };
            let mut pvv = pv.value();
            if pvv["spec"]["claimRef"]["uid"] != v["metadata"]["uid"] {
                return;
            }
            if pvv["spec"]["persistentVolumeReclaimPolicy"] == "Delete" {
                if let Some(info) = st.registry.by_key(&key("", "persistentvolumes")) {
                    let _ = delete_object(st, &info, &pv, false);
                }
            } else {
                pvv["status"] = json!({"phase": "Released"});
                put(st, "", "persistentvolumes", pvv);
            }
        }
        ("snapshot.storage.k8s.io", "volumesnapshots") => {
            let content = v["status"]["boundVolumeSnapshotContentName"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let ck = key("snapshot.storage.k8s.io", "volumesnapshotcontents");
            if let (Some(c), Some(info)) =
                (st.store.get(&ck, "", &content), st.registry.by_key(&ck))
                && c.value()["spec"]["deletionPolicy"] == "Delete"
            {
                let _ = delete_object(st, &info, &c, false);
            }
        }
        _ => {}
    }
}

/// Deletes everything in a Terminating namespace, then the namespace.
pub fn finalize_namespace(st: &mut State, ns: &str) {
    let infos: Vec<_> = st
        .registry
        .groups()
        .iter()
        .flat_map(|(g, vs)| {
            vs.iter()
                .flat_map(|v| st.registry.resources_in(g, v))
                .collect::<Vec<_>>()
        })
        .filter(|i| i.namespaced)
        .collect();
    let mut seen = HashSet::new();
    for info in infos {
        if !seen.insert(info.key()) {
            continue;
        }
        let key = info.key();
        let objs: Vec<_> = st
            .store
            .table(&key)
            .range((ns.to_string(), String::new())..)
            .take_while(|(k, _)| k.0 == ns)
            .map(|(_, o)| o.clone())
            .collect();
        for o in objs {
            let mut last = o.value();
            meta_mut(&mut last).insert(
                "resourceVersion".into(),
                json!(st.store.next_rv().to_string()),
            );
            st.store.remove(&key, Obj::from_value(&last));
            after_delete(st, &info, &last);
        }
    }
    let nk = key("", "namespaces");
    if let Some(n) = st.store.get(&nk, "", ns) {
        let mut last = n.value();
        meta_mut(&mut last).insert(
            "resourceVersion".into(),
            json!(st.store.next_rv().to_string()),
        );
        st.store.remove(&nk, Obj::from_value(&last));
    }
}

/// Makes a VolumeSnapshot ready with a VolumeSnapshotContent.
pub fn snapshot_ready(st: &mut State, ns: &str, name: &str) {
    const G: &str = "snapshot.storage.k8s.io";
    let Some(mut vs) = get(st, G, "volumesnapshots", ns, name) else {
        return;
    };
    if vs["status"]["readyToUse"] == true {
        return;
    }
    let uid = meta_str(&vs, "uid").to_string();
    let now = meta::now();
    let (content_name, size) = if let Some(pre) =
        vs["spec"]["source"]["volumeSnapshotContentName"].as_str()
    {
        let Some(c) = get(st, G, "volumesnapshotcontents", "", pre) else {
            return;
        };
        (pre.to_string(), c["status"]["restoreSize"].clone())
    } else {
        let pvc_name = vs["spec"]["source"]["persistentVolumeClaimName"]
            .as_str()
            .unwrap_or_default();
        let pvc = get(st, "", "persistentvolumeclaims", ns, pvc_name);
        let size = pvc
            .as_ref()
            .map(|p| p["status"]["capacity"]["storage"].clone())
            .unwrap_or(Value::Null);
        let handle = pvc
            .as_ref()
            .and_then(|p| p["spec"]["volumeName"].as_str().map(str::to_string))
            .unwrap_or_default();
        let class = vs["spec"]["volumeSnapshotClassName"]
            .as_str()
            .unwrap_or("sandbox-snapclass")
            .to_string();
        let policy = get(st, G, "volumesnapshotclasses", "", &class)
            .map(|c| c["deletionPolicy"].clone())
            .unwrap_or(json!("Delete"));
        let cname = format!("snapcontent-{uid}");
        let content = json!({
            "metadata": {"name": cname},
            "spec": {"driver": DRIVER, "deletionPolicy": policy, "volumeSnapshotClassName": class,
                "source": {"volumeHandle": handle},
                "volumeSnapshotRef": {"kind": "VolumeSnapshot", "apiVersion": "snapshot.storage.k8s.io/v1",
                    "namespace": ns, "name": name, "uid": uid}},
            "status": {"readyToUse": true, "snapshotHandle": format!("snap-{uid}"), "restoreSize": size,
                "creationTime": jiff::Timestamp::now().as_nanosecond() as i64},
        });
        if create_builtin(st, G, "volumesnapshotcontents", "", content).is_err() {
            return;
        }
        (cname, size)
    };
    vs["status"] = json!({"boundVolumeSnapshotContentName": content_name, "readyToUse": true,
        "creationTime": now, "restoreSize": size});
    put(st, G, "volumesnapshots", vs);
}

fn default_storage_class(st: &State) -> Option<String> {
    st.store
        .table(&key("storage.k8s.io", "storageclasses"))
        .values()
        .map(|o| o.value())
        .find(|v| {
            v["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
        })
        .map(|v| meta_str(&v, "name").to_string())
}

fn bind_claim(st: &mut State, pvc: &Value) -> Result<(), ApiError> {
    let ns = meta_str(pvc, "namespace").to_string();
    let name = meta_str(pvc, "name").to_string();
    let uid = meta_str(pvc, "uid").to_string();
    let wanted = pvc["spec"]["volumeName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let claim_ref = |pvc: &Value| {
        json!({"kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": ns, "name": name, "uid": uid,
            "resourceVersion": meta_str(pvc, "resourceVersion")})
    };
    let pv_name = if !wanted.is_empty() {
        // Static binding to a named volume.
        let Some(mut pv) = get(st, "", "persistentvolumes", "", &wanted) else {
            return Ok(());
        };
        if pv["spec"]["claimRef"]["uid"]
            .as_str()
            .is_some_and(|u| u != uid)
        {
            return Ok(());
        }
        pv["spec"]["claimRef"] = claim_ref(pvc);
        pv["status"] = json!({"phase": "Bound"});
        put(st, "", "persistentvolumes", pv);
        wanted
    } else {
        let class = pvc["spec"]["storageClassName"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let Some(sc) = (!class.is_empty())
            .then(|| get(st, "storage.k8s.io", "storageclasses", "", &class))
            .flatten()
        else {
            return Ok(());
        };
        let pv_name = format!("pvc-{uid}");
        let size = pvc["spec"]["resources"]["requests"]["storage"].clone();
        let pv = json!({
            "metadata": {"name": pv_name, "annotations": {"pv.kubernetes.io/provisioned-by": sc["provisioner"]}},
            "spec": {"capacity": {"storage": size}, "accessModes": pvc["spec"]["accessModes"],
                "persistentVolumeReclaimPolicy": sc.get("reclaimPolicy").cloned().unwrap_or(json!("Delete")),
                "storageClassName": class, "volumeMode": pvc["spec"]["volumeMode"],
                "claimRef": claim_ref(pvc),
                "csi": {"driver": sc["provisioner"], "volumeHandle": meta::uid(), "fsType": "ext4"}},
            "status": {"phase": "Bound"},
        });
        create_builtin(st, "", "persistentvolumes", "", pv)?;
        pv_name
    };
    let Some(mut pvc) = get(st, "", "persistentvolumeclaims", &ns, &name) else {
        return Ok(());
    };
    let cap = get(st, "", "persistentvolumes", "", &pv_name)
        .map(|p| p["spec"]["capacity"].clone())
        .unwrap_or(Value::Null);
    pvc["spec"]["volumeName"] = json!(pv_name);
    let ann = meta_mut(&mut pvc)
        .entry("annotations")
        .or_insert_with(|| json!({}));
    ann["pv.kubernetes.io/bind-completed"] = json!("yes");
    ann["pv.kubernetes.io/bound-by-controller"] = json!("yes");
    pvc["status"] =
        json!({"phase": "Bound", "accessModes": pvc["spec"]["accessModes"], "capacity": cap});
    put(st, "", "persistentvolumeclaims", pvc);
    Ok(())
}

fn parse_ipv4(s: &str) -> Option<u32> {
    s.parse::<std::net::Ipv4Addr>().ok().map(u32::from)
}

const SVC_BASE: u32 = 0x0A60_0000; // 10.96.0.0
const SVC_SIZE: u32 = 1 << 20; // /12

fn allocate_service(st: &State, v: &mut Value, old: Option<&Value>) -> Result<(), ApiError> {
    let name = meta_str(v, "name").to_string();
    let ns = meta_str(v, "namespace").to_string();
    let invalid =
        |field: &str, msg: String| ApiError::invalid_field("", "Service", &name, field, msg);
    let (mut ips, mut ports) = (HashSet::new(), HashSet::new());
    for o in st.store.table(&key("", "services")).values() {
        if o.namespace == ns && o.name == name {
            continue;
        }
        let s = o.value();
        if let Some(ip) = s["spec"]["clusterIP"].as_str() {
            ips.insert(ip.to_string());
        }
        for p in s["spec"]["ports"].as_array().into_iter().flatten() {
            if let Some(n) = p["nodePort"].as_i64() {
                ports.insert(n);
            }
        }
    }
    if !v["spec"].is_object() {
        v["spec"] = json!({});
    }
    let spec = &mut v["spec"];
    let ty = spec["type"].as_str().unwrap_or("ClusterIP").to_string();
    if !["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].contains(&ty.as_str()) {
        return Err(invalid(
            "spec.type",
            format!(
                "Unsupported value: \"{ty}\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""
            ),
        ));
    }
    spec["type"] = json!(ty);
    let old_ip = old
        .and_then(|o| o["spec"]["clusterIP"].as_str())
        .unwrap_or_default()
        .to_string();
    let mut ip = spec["clusterIP"].as_str().unwrap_or_default().to_string();
    if ip.is_empty() && !old_ip.is_empty() {
        ip = old_ip.clone();
    }
    if !old_ip.is_empty() && ip != old_ip && ty != "ExternalName" {
        return Err(invalid(
            "spec.clusterIPs[0]",
            format!("Invalid value: \"{ip}\": may not change once set"),
        ));
    }
    if ty == "ExternalName" {
        if spec["externalName"].as_str().is_none_or(str::is_empty) {
            return Err(invalid("spec.externalName", "Required value".into()));
        }
    } else if ip.is_empty() {
        let free = (10..SVC_SIZE - 1)
            .map(|i| std::net::Ipv4Addr::from(SVC_BASE + i).to_string())
            .find(|c| !ips.contains(c))
            .ok_or_else(|| {
                ApiError::injected(
                    500,
                    None,
                    Some("failed to allocate a serviceIP: range is full"),
                )
            })?;
        ip = free;
    } else if ip != "None" && old_ip != ip {
        match parse_ipv4(&ip) {
            Some(n) if n.wrapping_sub(SVC_BASE) < SVC_SIZE => {}
            Some(_) => {
                return Err(invalid(
                    "spec.clusterIPs",
                    format!(
                        "Invalid value: [\"{ip}\"]: failed to allocate IP {ip}: provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/12"
                    ),
                ));
            }
            None => {
                return Err(invalid(
                    "spec.clusterIPs[0]",
                    format!("Invalid value: \"{ip}\": must be a valid IP address"),
                ));
            }
        }
        if ips.contains(&ip) {
            return Err(invalid(
                "spec.clusterIPs",
                format!(
                    "Invalid value: [\"{ip}\"]: failed to allocate IP {ip}: provided IP is already allocated"
                ),
            ));
        }
    }
    if ty != "ExternalName" {
        spec["clusterIP"] = json!(ip);
        spec["clusterIPs"] = json!([ip]);
        if ip != "None" {
            spec["ipFamilies"] = json!(["IPv4"]);
            spec["ipFamilyPolicy"] = json!("SingleStack");
        }
        spec["internalTrafficPolicy"] = spec
            .get("internalTrafficPolicy")
            .cloned()
            .unwrap_or(json!("Cluster"));
    }
    if spec.get("sessionAffinity").is_none() {
        spec["sessionAffinity"] = json!("None");
    }
    let wants_node_ports = ty == "NodePort" || ty == "LoadBalancer";
    if wants_node_ports && spec.get("externalTrafficPolicy").is_none() {
        spec["externalTrafficPolicy"] = json!("Cluster");
    }
    let old_ports: Vec<Value> = old
        .and_then(|o| o["spec"]["ports"].as_array().cloned())
        .unwrap_or_default();
    let mut next = 30000i64;
    if let Some(list) = spec["ports"].as_array_mut() {
        for (i, p) in list.iter_mut().enumerate() {
            if p.get("protocol").is_none() {
                p["protocol"] = json!("TCP");
            }
            if p.get("targetPort").is_none() {
                p["targetPort"] = p["port"].clone();
            }
            if !wants_node_ports {
                if let Some(o) = p.as_object_mut() {
                    o.remove("nodePort");
                }
                continue;
            }
            match p["nodePort"].as_i64() {
                Some(n) => {
                    let was_ours = old_ports.iter().any(|o| o["nodePort"].as_i64() == Some(n));
                    if !(30000..=32767).contains(&n) {
                        return Err(invalid(
                            &format!("spec.ports[{i}].nodePort"),
                            format!(
                                "Invalid value: {n}: provided port is not in the valid range. The range of valid ports is 30000-32767"
                            ),
                        ));
                    }
                    if ports.contains(&n) && !was_ours {
                        return Err(invalid(
                            &format!("spec.ports[{i}].nodePort"),
                            format!("Invalid value: {n}: provided port is already allocated"),
                        ));
                    }
                    ports.insert(n);
                }
                None => {
                    let kept = old_ports
                        .iter()
                        .find(|o| o["port"] == p["port"] && o["protocol"] == p["protocol"])
                        .and_then(|o| o["nodePort"].as_i64());
                    let n = match kept {
                        Some(n) => n,
                        None => {
                            while ports.contains(&next) {
                                next += 1;
                            }
                            if next > 32767 {
                                return Err(ApiError::injected(
                                    500,
                                    None,
                                    Some("failed to allocate a nodePort: range is full"),
                                ));
                            }
                            next
                        }
                    };
                    ports.insert(n);
                    p["nodePort"] = json!(n);
                }
            }
        }
    }
    if ty == "LoadBalancer" && v.get("status").is_none() {
        v["status"] = json!({"loadBalancer": {}});
    }
    Ok(())
}
