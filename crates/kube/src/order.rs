//! The order objects are restored in, and what is never restored.
//!
//! Objects are applied tier by tier; within a tier, in parallel. Each tier
//! holds what later tiers depend on: CRDs before custom resources (and the
//! restore waits until they are Established), namespaces before their
//! contents, storage before claims, configuration before the workloads that
//! mount it, controllers before bare pods.

use serde_json::Value;

/// Restore tiers, in order. A resource is `resource` or `resource.group`.
pub const TIERS: &[&[&str]] = &[
    &["customresourcedefinitions.apiextensions.k8s.io"],
    &["namespaces"],
    &[
        "storageclasses.storage.k8s.io",
        "priorityclasses.scheduling.k8s.io",
        "ingressclasses.networking.k8s.io",
        "volumesnapshotclasses.snapshot.storage.k8s.io",
        // Before the ServiceAccounts they grant and the pods they admit.
        "securitycontextconstraints.security.openshift.io",
    ],
    &["persistentvolumes"],
    &["persistentvolumeclaims"],
    &[
        "secrets",
        "configmaps",
        "imagestreams.image.openshift.io",
        // A VM's instancetype and preference revisions, before the VM.
        "controllerrevisions.apps",
    ],
    &["serviceaccounts"],
    &[
        "clusterroles.rbac.authorization.k8s.io",
        "roles.rbac.authorization.k8s.io",
    ],
    &[
        "clusterrolebindings.rbac.authorization.k8s.io",
        "rolebindings.rbac.authorization.k8s.io",
    ],
    &["limitranges", "resourcequotas"],
    &[
        "deployments.apps",
        "statefulsets.apps",
        "daemonsets.apps",
        "replicasets.apps",
        "replicationcontrollers",
        "cronjobs.batch",
        "jobs.batch",
        "deploymentconfigs.apps.openshift.io",
        "buildconfigs.build.openshift.io",
    ],
    &["pods"],
];

/// The tier of a resource; everything not listed goes last.
pub fn tier(resource: &str, group: &str) -> usize {
    let qualified = if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    };
    TIERS
        .iter()
        .position(|t| t.contains(&qualified.as_str()))
        .unwrap_or(TIERS.len())
}

/// Resources never restored: they belong to the target cluster, are
/// recreated by it, or describe a moment that has passed.
pub const NEVER_RESTORED: &[&str] = &[
    "nodes",
    "events",
    "events.events.k8s.io",
    "endpoints",
    "endpointslices.discovery.k8s.io",
    "leases.coordination.k8s.io",
    "controllerrevisions.apps",
    "componentstatuses",
    "csinodes.storage.k8s.io",
    "volumeattachments.storage.k8s.io",
    "certificatesigningrequests.certificates.k8s.io",
    "apiservices.apiregistration.k8s.io",
    // OpenShift: the history of a BuildConfig, not configuration.
    "builds.build.openshift.io",
];

/// Workload kinds whose owned objects are recreated by their controllers.
const CONTROLLER_KINDS: &[&str] = &[
    "ReplicaSet",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "CronJob",
    "ReplicationController",
    "DeploymentConfig",
    "Build",
    // KubeVirt: a VM starts its own VMI, a VMI its virt-launcher pod.
    "VirtualMachine",
    "VirtualMachineInstance",
];

/// Why an object is not restored, or `None` when it is.
pub fn skip_reason(resource: &str, group: &str, obj: &Value) -> Option<String> {
    let qualified = if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    };
    // KubeVirt's instancetype and preference revisions are the VM's
    // configuration: the VM names them in `revisionName`.
    if NEVER_RESTORED.contains(&qualified.as_str()) && !crate::kubevirt::is_vm_revision(obj) {
        return Some(format!(
            "{qualified} are never restored: the target cluster owns them"
        ));
    }
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match (group, resource) {
        ("", "secrets")
            if obj.get("type").and_then(Value::as_str)
                == Some("kubernetes.io/service-account-token") =>
        {
            return Some("service-account token Secrets are issued by the target cluster".into());
        }
        ("", "configmaps") if name == "kube-root-ca.crt" => {
            return Some("kube-root-ca.crt is published by the target cluster".into());
        }
        ("", "pods")
            if obj
                .pointer("/metadata/labels/kubevirt.io")
                .and_then(Value::as_str)
                == Some("virt-launcher") =>
        {
            return Some("virt-launcher pods are started by KubeVirt for a running VMI".into());
        }
        ("", "pods") => {
            let phase = obj.pointer("/status/phase").and_then(Value::as_str);
            if matches!(phase, Some("Succeeded" | "Failed")) {
                return Some(format!(
                    "the pod had completed ({})",
                    phase.unwrap_or_default()
                ));
            }
        }
        // A StatefulSet whose `persistentVolumeClaimRetentionPolicy` says
        // `whenDeleted: Delete` is its claims' controller, but it reuses a
        // claim of the template's name rather than recreating it, and a
        // claim it would create comes back empty: the claim is restored
        // (its owner reference stripped) so its data can come back too.
        ("", "persistentvolumeclaims") => return None,
        _ => {}
    }
    let owner = obj
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .and_then(|refs| {
            refs.iter().find(|r| {
                r.get("controller").and_then(Value::as_bool) == Some(true)
                    && r.get("kind")
                        .and_then(Value::as_str)
                        .is_some_and(|k| CONTROLLER_KINDS.contains(&k))
            })
        });
    owner.map(|o| {
        format!(
            "owned by {} {}, whose controller recreates it",
            o.get("kind").and_then(Value::as_str).unwrap_or_default(),
            o.get("name").and_then(Value::as_str).unwrap_or_default()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    #[rstest]
    #[case("customresourcedefinitions", "apiextensions.k8s.io", 0)]
    #[case("namespaces", "", 1)]
    #[case("persistentvolumes", "", 3)]
    #[case("secrets", "", 5)]
    #[case("deployments", "apps", 10)]
    #[case("pods", "", 11)]
    #[case("services", "", 12)]
    #[case("widgets", "example.com", 12)]
    fn tiers(#[case] r: &str, #[case] g: &str, #[case] t: usize) {
        assert_eq!(tier(r, g), t);
    }

    #[test]
    fn skips() {
        assert!(skip_reason("events", "", &json!({})).is_some());
        assert!(
            skip_reason(
                "secrets",
                "",
                &json!({"type": "kubernetes.io/service-account-token"})
            )
            .is_some()
        );
        assert!(skip_reason("secrets", "", &json!({"type": "Opaque"})).is_none());
        assert!(
            skip_reason(
                "configmaps",
                "",
                &json!({"metadata": {"name": "kube-root-ca.crt"}})
            )
            .is_some()
        );
        assert!(skip_reason("pods", "", &json!({"status": {"phase": "Succeeded"}})).is_some());
        assert!(skip_reason("pods", "", &json!({"status": {"phase": "Running"}})).is_none());
        let owned = json!({"metadata": {"ownerReferences": [
            {"kind": "ReplicaSet", "name": "web-5d9f", "controller": true}
        ]}});
        assert_eq!(
            skip_reason("pods", "", &owned).unwrap(),
            "owned by ReplicaSet web-5d9f, whose controller recreates it"
        );
        // A StatefulSet's claim (`whenDeleted: Delete`) is restored.
        let claim = json!({"metadata": {"ownerReferences": [
            {"kind": "StatefulSet", "name": "db", "controller": true}
        ]}});
        assert!(skip_reason("persistentvolumeclaims", "", &claim).is_none());
        let cr_owned =
            json!({"metadata": {"ownerReferences": [{"kind": "Certificate", "controller": true}]}});
        assert!(skip_reason("secrets", "", &cr_owned).is_none());
    }
}
