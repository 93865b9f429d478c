//! Cluster behaviours a backup/restore tool must cope with, run inside the
//! write path (synchronously, so tests see their effect as soon as the write
//! returns) or after it (deferred, for the delayed ones).
//!
//! - **Bootstrap**: namespaces `default`, `kube-system`, `kube-public`,
//!   `kube-node-lease` (nodes: see `nodes`); the `kubernetes` Service
//!   (10.96.0.1); the storage and snapshot classes of [`crate::csi::bootstrap`].
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
//! - **Volumes and snapshots**: the PV controller lives in [`crate::binding`],
//!   the CSI driver, provisioners and snapshotter in [`crate::csi`]; the
//!   hooks here only call them.
//! - **Pods** are scheduled by `scheduler` and run by `kubelet`.
//! - **CustomResourceDefinitions** are validated, get `Established` and
//!   `NamesAccepted` conditions and add their resource to discovery;
//!   deleting one removes the resource and all its objects.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::handlers::{CreateOpts, State, create_object};
use crate::meta::{self, meta_mut, meta_str};
use crate::resources::{ResKey, ResourceInfo, crd_resource};
use crate::store::Obj;
use crate::{binding, csi};

fn key(group: &str, resource: &str) -> ResKey {
    (group.to_string(), resource.to_string())
}

pub(crate) fn get(st: &State, group: &str, resource: &str, ns: &str, name: &str) -> Option<Value> {
    st.store
        .get(&key(group, resource), ns, name)
        .map(|o| o.value())
}

/// Stores a modified object with the next resourceVersion.
pub(crate) fn put(st: &mut State, group: &str, resource: &str, mut v: Value) {
    meta_mut(&mut v).insert(
        "resourceVersion".into(),
        json!(st.store.next_rv().to_string()),
    );
    st.store.put(&key(group, resource), Obj::from_value(&v));
}

pub(crate) fn create_builtin(
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
    csi::bootstrap(st)?;
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
        ("", "persistentvolumeclaims") => binding::before_create_claim(st, v)?,
        ("", "persistentvolumes") if v.get("status").is_none() => {
            v["status"] = json!({"phase": "Pending"});
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
        ("", "persistentvolumeclaims") => {
            binding::sync_claim(st, meta_str(v, "namespace"), meta_str(v, "name"));
        }
        ("", "persistentvolumes") => {
            binding::sync_volume(st, meta_str(v, "name"));
            binding::resync_pending(st);
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            let name = meta_str(v, "name").to_string();
            st.registry
                .add_crd(v)
                .map_err(|c| ApiError::invalid(&info.group, &info.kind, &name, &c))?;
        }
        ("snapshot.storage.k8s.io", "volumesnapshots") => {
            csi::sync_snapshot(st, meta_str(v, "namespace"), meta_str(v, "name"));
        }
        ("snapshot.storage.k8s.io", "volumesnapshotcontents") => {
            csi::sync_content(st, meta_str(v, "name"));
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
        ("", "persistentvolumeclaims") => binding::claim_deleted(st, v),
        ("", "persistentvolumes") => binding::volume_deleted(st, v),
        ("snapshot.storage.k8s.io", "volumesnapshots") => csi::snapshot_deleted(st, v),
        ("snapshot.storage.k8s.io", "volumesnapshotcontents") => csi::content_deleted(st, v),
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
