//! The sandbox's nodes: `sandbox-node-1` … `sandbox-node-N`, each with the
//! labels a kubelet registers (`kubernetes.io/hostname`, `kubernetes.io/os`,
//! `kubernetes.io/arch`, `topology.kubernetes.io/zone=sandbox-zone-<i>`),
//! a `Ready` condition, capacity and allocatable, a pod CIDR
//! (`10.244.<i-1>.0/24`) and an InternalIP (`172.18.0.<i+1>`).
//!
//! This is the only place that knows node names; the scheduler and the
//! kubelet read Node objects.

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::handlers::{CreateOpts, State, create_object};

/// The name of the `i`-th node (1-based).
pub fn name(i: usize) -> String {
    format!("sandbox-node-{i}")
}

/// The Node object of the `i`-th node (1-based), as its kubelet registers it.
pub fn node(i: usize) -> Value {
    let name = name(i);
    let now = crate::meta::now();
    let resources =
        json!({"cpu": "4", "memory": "16Gi", "pods": "110", "ephemeral-storage": "100Gi"});
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "topology.kubernetes.io/zone": format!("sandbox-zone-{i}"),
        }},
        "spec": {"podCIDR": format!("10.244.{}.0/24", i - 1), "podCIDRs": [format!("10.244.{}.0/24", i - 1)]},
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory", "message": "kubelet has sufficient memory available", "lastHeartbeatTime": now, "lastTransitionTime": now},
                {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure", "message": "kubelet has no disk pressure", "lastHeartbeatTime": now, "lastTransitionTime": now},
                {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID", "message": "kubelet has sufficient PID available", "lastHeartbeatTime": now, "lastTransitionTime": now},
                {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status", "lastHeartbeatTime": now, "lastTransitionTime": now},
            ],
            "addresses": [{"type": "InternalIP", "address": format!("172.18.0.{}", i + 1)}, {"type": "Hostname", "address": name}],
            "nodeInfo": {"kubeletVersion": "v1.33.0", "kubeProxyVersion": "v1.33.0", "operatingSystem": "linux",
                "architecture": "amd64", "containerRuntimeVersion": "containerd://2.0.0", "osImage": "lifeboat sandbox",
                "kernelVersion": "6.0.0", "machineID": "", "systemUUID": "", "bootID": ""},
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        },
    })
}

/// Registers `n` nodes (at least one); returns their names.
pub fn register(st: &mut State, n: usize) -> Result<Vec<String>, ApiError> {
    let info = st
        .registry
        .by_kind("v1", "Node")
        .ok_or_else(|| ApiError::bad_request("nodes are not served"))?
        .0;
    let mut names = Vec::new();
    for i in 1..=n.max(1) {
        let opts = CreateOpts {
            dry_run: false,
            keep_status: true,
        };
        create_object(st, &info, "v1", "", node(i), opts)?;
        names.push(name(i));
    }
    Ok(names)
}

/// The node's InternalIP.
pub fn internal_ip(node: &Value) -> Option<&str> {
    node["status"]["addresses"]
        .as_array()?
        .iter()
        .find(|a| a["type"] == "InternalIP")?["address"]
        .as_str()
}

/// Whether the node reports `Ready=True`.
pub fn is_ready(node: &Value) -> bool {
    node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}
