//! How a backed-up object is rewritten before it is restored.
//!
//! Server-set fields go (`uid`, `resourceVersion`, `generation`, timestamps,
//! `ownerReferences`, `managedFields`, `status`); Services lose their cluster
//! IPs (unless headless) and node ports the user did not ask for; Pods lose
//! `nodeName` and the token volume the API server injects; namespaces are
//! remapped in the object and in the references that carry namespaces
//! (PersistentVolume `claimRef`, RoleBinding and ClusterRoleBinding
//! subjects); storage classes are remapped by the target Cluster's mapping.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::openshift;

/// Annotation kubectl writes with the user's last applied configuration.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// Legacy storage-class annotation on claims and volumes.
const STORAGE_CLASS_ANNOTATION: &str = "volume.beta.kubernetes.io/storage-class";

/// Restore-time rewrites for one restore.
#[derive(Debug, Clone, Default)]
pub struct Transform {
    /// Source namespace → target namespace.
    pub namespace_mapping: BTreeMap<String, String>,
    /// Source storage class → target storage class.
    pub storage_class_mapping: BTreeMap<String, String>,
    /// The OpenShift rules' settings (internal registries).
    pub openshift: crate::openshift::RestoreConfig,
    /// The KubeVirt restore options (applied by the restore, which knows
    /// which claims get their data back).
    pub kubevirt: crate::kubevirt::RestoreConfig,
}

impl Transform {
    /// The namespace `ns` is restored into.
    pub fn namespace<'a>(&'a self, ns: &'a str) -> &'a str {
        self.namespace_mapping
            .get(ns)
            .map(String::as_str)
            .unwrap_or(ns)
    }

    fn storage_class(&self, class: &str) -> Option<&str> {
        self.storage_class_mapping.get(class).map(String::as_str)
    }

    /// Rewrites `obj` (of the given resource and group) for restore.
    /// Returns what changed beyond the routine stripping and namespace
    /// mapping (the OpenShift rules), one line per change, for the
    /// restore record.
    pub fn apply(&self, resource: &str, group: &str, obj: &mut Value) -> Vec<String> {
        strip_server_fields(obj);
        if let Some(ns) = obj.pointer("/metadata/namespace").and_then(Value::as_str) {
            let mapped = self.namespace(ns).to_string();
            obj["metadata"]["namespace"] = Value::String(mapped);
        }
        match (group, resource) {
            ("", "namespaces") => {
                if let Some(name) = obj.pointer("/metadata/name").and_then(Value::as_str) {
                    let mapped = self.namespace(name).to_string();
                    obj["metadata"]["name"] = Value::String(mapped);
                }
                // The API server sets the finalizer of a namespace itself.
                if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.remove("finalizers");
                }
            }
            ("", "services") => service(obj),
            ("", "pods") => pod(obj),
            ("", "persistentvolumes") => {
                if let Some(claim) = obj
                    .pointer_mut("/spec/claimRef")
                    .and_then(Value::as_object_mut)
                {
                    for k in ["uid", "resourceVersion"] {
                        claim.remove(k);
                    }
                    if let Some(ns) = claim.get("namespace").and_then(Value::as_str) {
                        let mapped = self.namespace(ns).to_string();
                        claim.insert("namespace".into(), Value::String(mapped));
                    }
                }
                self.map_storage_class(obj);
            }
            ("", "persistentvolumeclaims") => {
                self.map_storage_class(obj);
                // Binding annotations belong to the source cluster's controller.
                if let Some(a) = annotations(obj) {
                    for k in [
                        "pv.kubernetes.io/bind-completed",
                        "pv.kubernetes.io/bound-by-controller",
                        "volume.kubernetes.io/selected-node",
                    ] {
                        a.remove(k);
                    }
                }
            }
            ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings") => {
                if let Some(subjects) = obj.get_mut("subjects").and_then(Value::as_array_mut) {
                    for s in subjects {
                        if let Some(ns) = s.get("namespace").and_then(Value::as_str) {
                            let mapped = self.namespace(ns).to_string();
                            s["namespace"] = Value::String(mapped);
                        }
                        // Users and groups that name ServiceAccounts by namespace.
                        let Some(name) = s.get("name").and_then(Value::as_str) else {
                            continue;
                        };
                        let mapped = if let Some((ns, sa)) = openshift::parse_sa_user(name) {
                            openshift::sa_user(self.namespace(ns), sa)
                        } else if let Some(ns) = openshift::parse_sa_group(name) {
                            openshift::sa_group(self.namespace(ns))
                        } else {
                            continue;
                        };
                        s["name"] = Value::String(mapped);
                    }
                }
            }
            _ => {}
        }
        let map_ns = |ns: &str| self.namespace(ns).to_string();
        openshift::restore_rules(&self.openshift, &map_ns, resource, group, obj)
    }

    fn map_storage_class(&self, obj: &mut Value) {
        if let Some(class) = obj
            .pointer("/spec/storageClassName")
            .and_then(Value::as_str)
            && let Some(mapped) = self.storage_class(class)
        {
            obj["spec"]["storageClassName"] = Value::String(mapped.to_string());
        }
        let mapped = annotations(obj)
            .and_then(|a| a.get(STORAGE_CLASS_ANNOTATION))
            .and_then(Value::as_str)
            .and_then(|c| self.storage_class(c))
            .map(str::to_string);
        if let (Some(mapped), Some(a)) = (mapped, annotations(obj)) {
            a.insert(STORAGE_CLASS_ANNOTATION.into(), Value::String(mapped));
        }
    }
}

fn annotations(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    obj.pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
}

/// Removes what the API server sets; also used when comparing objects.
pub fn strip_server_fields(obj: &mut Value) {
    if let Some(o) = obj.as_object_mut() {
        o.remove("status");
    }
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "ownerReferences",
            "managedFields",
            "selfLink",
        ] {
            meta.remove(k);
        }
    }
}

/// An object as a restore promises to bring it back: without what the API
/// server sets or assigns (status, uid, resourceVersion, timestamps, cluster
/// IPs, node ports, a claim's bound volume, provisioning annotations) and
/// the selector a restore gives a claim whose data it fills, which names
/// its fresh volume ([`crate::volumes::restore_selector`]). Two objects
/// equal after this are the same object as far as a user is concerned;
/// tests and `lifeboat demo` compare restores with it.
pub fn comparable(mut obj: Value) -> Value {
    strip_server_fields(&mut obj);
    if let Some(a) = annotations(&mut obj) {
        a.retain(|k, _| !k.starts_with("pv.kubernetes.io/") && !k.starts_with("volume."));
        if a.is_empty()
            && let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut)
        {
            meta.remove("annotations");
        }
    }
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        if spec.get("clusterIP").and_then(Value::as_str) != Some("None") {
            spec.remove("clusterIP");
            spec.remove("clusterIPs");
        }
        spec.remove("volumeName");
        let restore_volume = spec
            .get("selector")
            .and_then(|s| s.as_object())
            .is_some_and(|s| {
                s.len() == 1
                    && s.get("matchLabels")
                        .and_then(Value::as_object)
                        .is_some_and(|m| {
                            m.len() == 1 && m.contains_key(crate::volumes::RESTORE_VOLUME_LABEL)
                        })
            });
        if restore_volume {
            spec.remove("selector");
        }
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                p.remove("nodePort");
            }
        }
    }
    obj
}

/// The node ports the user wrote in the last applied configuration; the
/// others were assigned by the API server and are dropped so the target
/// cluster can assign free ones.
fn requested_node_ports(obj: &Value) -> Vec<i64> {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_APPLIED))
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str::<Value>(s).ok())
        .and_then(|applied| {
            applied
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map(|ports| {
                    ports
                        .iter()
                        .filter_map(|p| p.get("nodePort").and_then(Value::as_i64))
                        .collect()
                })
        })
        .unwrap_or_default()
}

fn service(obj: &mut Value) {
    let keep_ports = requested_node_ports(obj);
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
    if !headless {
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
    }
    spec.remove("healthCheckNodePort");
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for port in ports {
            let requested = port
                .get("nodePort")
                .and_then(Value::as_i64)
                .is_some_and(|p| keep_ports.contains(&p));
            if !requested && let Some(p) = port.as_object_mut() {
                p.remove("nodePort");
            }
        }
    }
}

fn pod(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    spec.remove("nodeName");
    // The service-account admission plugin injects `kube-api-access-*`
    // volumes; restoring them would point at the old token.
    let injected = |name: &str| name.starts_with("kube-api-access-");
    if let Some(volumes) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
        volumes.retain(|v| !v.get("name").and_then(Value::as_str).is_some_and(injected));
    }
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        if let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in containers {
                if let Some(mounts) = c.get_mut("volumeMounts").and_then(Value::as_array_mut) {
                    mounts.retain(|m| !m.get("name").and_then(Value::as_str).is_some_and(injected));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t() -> Transform {
        Transform {
            namespace_mapping: [("shop".to_string(), "shop-restored".to_string())].into(),
            storage_class_mapping: [("gp3".to_string(), "standard".to_string())].into(),
            ..Transform::default()
        }
    }

    #[test]
    fn strips_server_fields_and_maps_namespace() {
        let mut cm = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": "shop", "uid": "u", "resourceVersion": "5",
                         "creationTimestamp": "2026-01-01T00:00:00Z", "managedFields": [],
                         "ownerReferences": [{"kind": "X"}], "labels": {"a": "b"}},
            "data": {"k": "v"}, "status": {}
        });
        t().apply("configmaps", "", &mut cm);
        assert_eq!(
            cm,
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "c", "namespace": "shop-restored", "labels": {"a": "b"}},
                "data": {"k": "v"}
            })
        );
    }

    #[test]
    fn services_lose_assigned_ips_and_ports() {
        let applied = json!({"spec": {"ports": [{"port": 80, "nodePort": 30080}]}}).to_string();
        let mut svc = json!({
            "metadata": {"name": "web", "namespace": "shop", "annotations": {LAST_APPLIED: applied}},
            "spec": {"type": "NodePort", "clusterIP": "10.0.0.4", "clusterIPs": ["10.0.0.4"],
                     "ports": [{"port": 80, "nodePort": 30080}, {"port": 443, "nodePort": 31443}]}
        });
        t().apply("services", "", &mut svc);
        assert_eq!(
            svc["spec"],
            json!({"type": "NodePort",
            "ports": [{"port": 80, "nodePort": 30080}, {"port": 443}]})
        );
        let mut headless = json!({"metadata": {"name": "db"}, "spec": {"clusterIP": "None", "clusterIPs": ["None"]}});
        t().apply("services", "", &mut headless);
        assert_eq!(headless["spec"]["clusterIP"], "None");
    }

    #[test]
    fn pods_lose_node_and_injected_token_volume() {
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {
            "nodeName": "node-1",
            "volumes": [{"name": "data"}, {"name": "kube-api-access-x7k2p"}],
            "containers": [{"name": "c", "volumeMounts": [{"name": "data"}, {"name": "kube-api-access-x7k2p"}]}]
        }});
        t().apply("pods", "", &mut pod);
        assert_eq!(
            pod["spec"],
            json!({
                "volumes": [{"name": "data"}],
                "containers": [{"name": "c", "volumeMounts": [{"name": "data"}]}]
            })
        );
    }

    #[test]
    fn volumes_rebind_under_mapping_with_storage_class() {
        let mut pv = json!({"metadata": {"name": "pv-1"}, "spec": {
            "storageClassName": "gp3",
            "claimRef": {"kind": "PersistentVolumeClaim", "namespace": "shop", "name": "data", "uid": "u", "resourceVersion": "3"}
        }});
        t().apply("persistentvolumes", "", &mut pv);
        assert_eq!(
            pv["spec"],
            json!({"storageClassName": "standard",
            "claimRef": {"kind": "PersistentVolumeClaim", "namespace": "shop-restored", "name": "data"}})
        );
        let mut pvc = json!({"metadata": {"name": "data", "namespace": "shop",
            "annotations": {"pv.kubernetes.io/bind-completed": "yes", STORAGE_CLASS_ANNOTATION: "gp3"}},
            "spec": {"storageClassName": "gp3", "volumeName": "pv-1"}});
        t().apply("persistentvolumeclaims", "", &mut pvc);
        assert_eq!(pvc["metadata"]["namespace"], "shop-restored");
        assert_eq!(
            pvc["metadata"]["annotations"],
            json!({STORAGE_CLASS_ANNOTATION: "standard"})
        );
        assert_eq!(
            pvc["spec"],
            json!({"storageClassName": "standard", "volumeName": "pv-1"})
        );
    }

    #[test]
    fn binding_subjects_follow_the_mapping() {
        let mut crb = json!({"metadata": {"name": "b"}, "subjects": [
            {"kind": "ServiceAccount", "name": "app", "namespace": "shop"},
            {"kind": "User", "name": "alice"},
            {"kind": "Group", "name": "system:serviceaccounts:shop"},
            {"kind": "User", "name": "system:serviceaccount:shop:app"}
        ]});
        t().apply("clusterrolebindings", "rbac.authorization.k8s.io", &mut crb);
        assert_eq!(crb["subjects"][0]["namespace"], "shop-restored");
        assert!(crb["subjects"][1].get("namespace").is_none());
        assert_eq!(
            crb["subjects"][2]["name"],
            "system:serviceaccounts:shop-restored"
        );
        assert_eq!(
            crb["subjects"][3]["name"],
            "system:serviceaccount:shop-restored:app"
        );
        let mut ns = json!({"metadata": {"name": "shop"}, "spec": {"finalizers": ["kubernetes"]}});
        t().apply("namespaces", "", &mut ns);
        assert_eq!(
            ns,
            json!({"metadata": {"name": "shop-restored"}, "spec": {}})
        );
    }

    #[test]
    fn a_claim_filled_by_a_restore_compares_equal_to_its_backup_but_a_user_selector_counts() {
        let backed_up = json!({"kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "volumeName": "pvc-old"}});
        let mut restored = backed_up.clone();
        restored["spec"]["volumeName"] = json!("pvc-new");
        restored["spec"]["selector"] = crate::volumes::restore_selector("r", "shop", "data");
        assert_eq!(comparable(backed_up.clone()), comparable(restored));
        let mut chosen = backed_up.clone();
        chosen["spec"]["selector"] = json!({"matchLabels": {
            crate::volumes::RESTORE_VOLUME_LABEL: "v", "tier": "fast"}});
        assert_ne!(comparable(backed_up), comparable(chosen));
    }
}
