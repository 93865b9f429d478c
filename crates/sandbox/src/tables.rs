//! kubectl Tables (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`)
//! with the columns kube-apiserver's printers give the kinds lifeboat and
//! its users look at (pods, deployments, replicasets, statefulsets,
//! daemonsets, jobs, cronjobs, services, claims, volumes, nodes, volume
//! snapshots); other resources get NAME and AGE. Priority-1 columns are
//! what `-o wide` adds. Watches asked for Tables get one Table per event.

use serde_json::{Value, json};

use crate::meta::{age, meta_str};
use crate::resources::ResourceInfo;
use crate::scale::selector_string;

/// (name, type, priority) of each column after Name.
type Cols = &'static [(&'static str, &'static str, u8)];

fn columns_of(group: &str, resource: &str) -> Cols {
    match (group, resource) {
        ("", "pods") => &[
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            ("Age", "string", 0),
            ("IP", "string", 1),
            ("Node", "string", 1),
            ("Nominated Node", "string", 1),
            ("Readiness Gates", "string", 1),
        ],
        ("apps", "deployments") => &[
            ("Ready", "string", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        ("apps", "replicasets") | ("", "replicationcontrollers") => &[
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        ("apps", "statefulsets") => &[
            ("Ready", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
        ],
        ("apps", "daemonsets") => &[
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Node Selector", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        ("batch", "jobs") => &[
            ("Status", "string", 0),
            ("Completions", "string", 0),
            ("Duration", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        ("batch", "cronjobs") => &[
            ("Schedule", "string", 0),
            ("Timezone", "string", 0),
            ("Suspend", "boolean", 0),
            ("Active", "integer", 0),
            ("Last Schedule", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        ("", "services") => &[
            ("Type", "string", 0),
            ("Cluster-IP", "string", 0),
            ("External-IP", "string", 0),
            ("Port(s)", "string", 0),
            ("Age", "string", 0),
            ("Selector", "string", 1),
        ],
        ("", "persistentvolumeclaims") => &[
            ("Status", "string", 0),
            ("Volume", "string", 0),
            ("Capacity", "string", 0),
            ("Access Modes", "string", 0),
            ("StorageClass", "string", 0),
            ("VolumeAttributesClass", "string", 0),
            ("Age", "string", 0),
            ("VolumeMode", "string", 1),
        ],
        ("", "persistentvolumes") => &[
            ("Capacity", "string", 0),
            ("Access Modes", "string", 0),
            ("Reclaim Policy", "string", 0),
            ("Status", "string", 0),
            ("Claim", "string", 0),
            ("StorageClass", "string", 0),
            ("VolumeAttributesClass", "string", 0),
            ("Reason", "string", 0),
            ("Age", "string", 0),
            ("VolumeMode", "string", 1),
        ],
        ("", "nodes") => &[
            ("Status", "string", 0),
            ("Roles", "string", 0),
            ("Age", "string", 0),
            ("Version", "string", 0),
            ("Internal-IP", "string", 1),
            ("External-IP", "string", 1),
            ("OS-Image", "string", 1),
            ("Kernel-Version", "string", 1),
            ("Container-Runtime", "string", 1),
        ],
        ("snapshot.storage.k8s.io", "volumesnapshots") => &[
            ("ReadyToUse", "boolean", 0),
            ("SourcePVC", "string", 0),
            ("SourceSnapshotContent", "string", 0),
            ("RestoreSize", "string", 0),
            ("SnapshotClass", "string", 0),
            ("SnapshotContent", "string", 0),
            ("CreationTime", "date", 0),
            ("Age", "date", 0),
        ],
        _ => &[("Age", "string", 0)],
    }
}

/// The column definitions of a resource's Table.
pub fn columns(info: &ResourceInfo) -> Vec<Value> {
    let mut out = vec![json!({"name": "Name", "type": "string", "format": "name",
        "description": "Name must be unique within a namespace.", "priority": 0})];
    for (name, ty, priority) in columns_of(&info.group, &info.resource) {
        out.push(json!({"name": name, "type": ty, "format": "", "description": name, "priority": priority}));
    }
    out
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        v => v.to_string(),
    }
}

fn n(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn or_none(x: String) -> String {
    if x.is_empty() { "<none>".into() } else { x }
}

/// `CONTAINERS` and `IMAGES` of a pod template.
fn containers_images(template: &Value) -> (String, String) {
    let cs = template["spec"]["containers"].as_array();
    let names: Vec<String> = cs.into_iter().flatten().map(|c| s(&c["name"])).collect();
    let images: Vec<String> = cs.into_iter().flatten().map(|c| s(&c["image"])).collect();
    (names.join(","), images.join(","))
}

fn duration(secs: i64) -> String {
    match secs.max(0) {
        s if s < 120 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn seconds_between(from: &str, to: Option<&str>) -> Option<i64> {
    let a = from.parse::<jiff::Timestamp>().ok()?;
    let b = match to {
        Some(t) => t.parse::<jiff::Timestamp>().ok()?,
        None => jiff::Timestamp::now(),
    };
    Some(b.as_second() - a.as_second())
}

fn pod_status(v: &Value) -> String {
    if v["metadata"].get("deletionTimestamp").is_some() {
        return "Terminating".into();
    }
    let statuses = v["status"]["containerStatuses"].as_array();
    for c in statuses.into_iter().flatten() {
        if let Some(r) = c["state"]["waiting"]["reason"].as_str() {
            return r.into();
        }
        if let Some(r) = c["state"]["terminated"]["reason"].as_str()
            && v["status"]["phase"] != "Succeeded"
            && v["status"]["phase"] != "Failed"
        {
            return r.into();
        }
    }
    let reason = s(&v["status"]["reason"]);
    if !reason.is_empty() {
        return reason;
    }
    match v["status"]["phase"].as_str().unwrap_or_default() {
        "" => "Pending".into(),
        "Succeeded" => "Completed".into(),
        "Failed" => "Error".into(),
        p => p.into(),
    }
}

fn service_ports(spec: &Value) -> String {
    let ports: Vec<String> = spec["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let proto = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_i64() {
                Some(np) => format!("{}:{np}/{proto}", n(&p["port"])),
                None => format!("{}/{proto}", n(&p["port"])),
            }
        })
        .collect();
    or_none(ports.join(","))
}

fn access_modes(modes: &Value) -> String {
    modes
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|m| match m {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn map_string(m: &Value) -> String {
    let mut kv: Vec<String> = m
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", s(v)))
        .collect();
    kv.sort();
    or_none(kv.join(","))
}

/// The Table of one watched object.
pub fn watch_table(info: &ResourceInfo, obj: &crate::store::Obj, full: bool) -> Value {
    let v = obj.value();
    let cells = cells(info, &v);
    let object = if full {
        v
    } else {
        json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": v["metadata"]})
    };
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": meta_str(&object, "resourceVersion")},
        "columnDefinitions": columns(info),
        "rows": [{"cells": cells, "object": object}],
    })
}

/// The cells of one row.
pub fn cells(info: &ResourceInfo, v: &Value) -> Vec<Value> {
    let name = meta_str(v, "name").to_string();
    let created = meta_str(v, "creationTimestamp").to_string();
    let a = age(&created);
    let spec = &v["spec"];
    let st = &v["status"];
    let sel = || or_none(selector_string(&spec["selector"]));
    let row: Vec<Value> = match (info.group.as_str(), info.resource.as_str()) {
        ("", "pods") => {
            let total = spec["containers"].as_array().map_or(0, Vec::len);
            let cs = st["containerStatuses"].as_array();
            let ready = cs
                .into_iter()
                .flatten()
                .filter(|c| c["ready"] == true)
                .count();
            let restarts: i64 = cs
                .into_iter()
                .flatten()
                .map(|c| n(&c["restartCount"]))
                .sum();
            let gates = spec["readinessGates"]
                .as_array()
                .map_or_else(|| "<none>".to_string(), |g| format!("0/{}", g.len()));
            vec![
                json!(format!("{ready}/{total}")),
                json!(pod_status(v)),
                json!(restarts.to_string()),
                json!(a),
                json!(or_none(s(&st["podIP"]))),
                json!(or_none(s(&spec["nodeName"]))),
                json!(or_none(s(&st["nominatedNodeName"]))),
                json!(gates),
            ]
        }
        ("apps", "deployments") => {
            let (c, i) = containers_images(&spec["template"]);
            vec![
                json!(format!(
                    "{}/{}",
                    n(&st["readyReplicas"]),
                    n(&spec["replicas"])
                )),
                json!(n(&st["updatedReplicas"])),
                json!(n(&st["availableReplicas"])),
                json!(a),
                json!(c),
                json!(i),
                json!(sel()),
            ]
        }
        ("apps", "replicasets") | ("", "replicationcontrollers") => {
            let (c, i) = containers_images(&spec["template"]);
            vec![
                json!(n(&spec["replicas"])),
                json!(n(&st["replicas"])),
                json!(n(&st["readyReplicas"])),
                json!(a),
                json!(c),
                json!(i),
                json!(sel()),
            ]
        }
        ("apps", "statefulsets") => {
            let (c, i) = containers_images(&spec["template"]);
            vec![
                json!(format!(
                    "{}/{}",
                    n(&st["readyReplicas"]),
                    n(&spec["replicas"])
                )),
                json!(a),
                json!(c),
                json!(i),
            ]
        }
        ("apps", "daemonsets") => {
            let (c, i) = containers_images(&spec["template"]);
            vec![
                json!(n(&st["desiredNumberScheduled"])),
                json!(n(&st["currentNumberScheduled"])),
                json!(n(&st["numberReady"])),
                json!(n(&st["updatedNumberScheduled"])),
                json!(n(&st["numberAvailable"])),
                json!(map_string(&spec["template"]["spec"]["nodeSelector"])),
                json!(a),
                json!(c),
                json!(i),
                json!(sel()),
            ]
        }
        ("batch", "jobs") => {
            let (c, i) = containers_images(&spec["template"]);
            let conds = st["conditions"].as_array();
            let has = |t: &str| {
                conds
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == t && c["status"] == "True")
            };
            let status = if has("Complete") {
                "Complete"
            } else if has("Failed") {
                "Failed"
            } else if has("FailureTarget") {
                "FailureTarget"
            } else if has("Suspended") {
                "Suspended"
            } else {
                "Running"
            };
            let completions = match spec["completions"].as_i64() {
                Some(c) => format!("{}/{c}", n(&st["succeeded"])),
                None => format!("{}/1 of {}", n(&st["succeeded"]), n(&spec["parallelism"])),
            };
            let start = s(&st["startTime"]);
            let end = st["completionTime"].as_str();
            let dur = if start.is_empty() {
                String::new()
            } else {
                seconds_between(&start, end)
                    .map(duration)
                    .unwrap_or_default()
            };
            vec![
                json!(status),
                json!(completions),
                json!(dur),
                json!(a),
                json!(c),
                json!(i),
                json!(sel()),
            ]
        }
        ("batch", "cronjobs") => {
            let (c, i) = containers_images(&spec["jobTemplate"]["spec"]["template"]);
            let last = st["lastScheduleTime"]
                .as_str()
                .map_or_else(|| "<none>".to_string(), age);
            vec![
                json!(s(&spec["schedule"])),
                json!(or_none(s(&spec["timeZone"]))),
                json!(spec["suspend"] == true),
                json!(st["active"].as_array().map_or(0, Vec::len)),
                json!(last),
                json!(a),
                json!(c),
                json!(i),
                json!(or_none(selector_string(
                    &spec["jobTemplate"]["spec"]["selector"]
                ))),
            ]
        }
        ("", "services") => {
            let ty = s(&spec["type"]);
            let mut ext: Vec<String> = spec["externalIPs"]
                .as_array()
                .into_iter()
                .flatten()
                .map(s)
                .collect();
            let external = match ty.as_str() {
                "ExternalName" => s(&spec["externalName"]),
                "LoadBalancer" => {
                    ext.extend(
                        st["loadBalancer"]["ingress"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|i| s(&i["ip"])),
                    );
                    if ext.is_empty() {
                        "<pending>".into()
                    } else {
                        ext.join(",")
                    }
                }
                _ => or_none(ext.join(",")),
            };
            vec![
                json!(ty),
                json!(or_none(s(&spec["clusterIP"]))),
                json!(external),
                json!(service_ports(spec)),
                json!(a),
                json!(map_string(&spec["selector"])),
            ]
        }
        ("", "persistentvolumeclaims") => vec![
            json!(s(&st["phase"])),
            json!(s(&spec["volumeName"])),
            json!(s(&st["capacity"]["storage"])),
            json!(access_modes(&st["accessModes"])),
            json!(s(&spec["storageClassName"])),
            json!(or_none(s(&spec["volumeAttributesClassName"]))),
            json!(a),
            json!(s(&spec["volumeMode"])),
        ],
        ("", "persistentvolumes") => {
            let claim = &spec["claimRef"];
            let claim = if claim.is_object() {
                format!("{}/{}", s(&claim["namespace"]), s(&claim["name"]))
            } else {
                String::new()
            };
            vec![
                json!(s(&spec["capacity"]["storage"])),
                json!(access_modes(&spec["accessModes"])),
                json!(s(&spec["persistentVolumeReclaimPolicy"])),
                json!(s(&st["phase"])),
                json!(claim),
                json!(s(&spec["storageClassName"])),
                json!(or_none(s(&spec["volumeAttributesClassName"]))),
                json!(s(&st["reason"])),
                json!(a),
                json!(s(&spec["volumeMode"])),
            ]
        }
        ("", "nodes") => {
            let ready = st["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Ready");
            let mut status = match ready {
                Some(c) if c["status"] == "True" => "Ready".to_string(),
                _ => "NotReady".to_string(),
            };
            if spec["unschedulable"] == true {
                status.push_str(",SchedulingDisabled");
            }
            let roles: Vec<String> = v["metadata"]["labels"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/"))
                .map(str::to_string)
                .collect();
            let addr = |t: &str| {
                st["addresses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|a| a["type"] == t)
                    .map_or_else(|| "<none>".to_string(), |a| s(&a["address"]))
            };
            let info = &st["nodeInfo"];
            vec![
                json!(status),
                json!(or_none(roles.join(","))),
                json!(a),
                json!(s(&info["kubeletVersion"])),
                json!(addr("InternalIP")),
                json!(addr("ExternalIP")),
                json!(or_none(s(&info["osImage"]))),
                json!(or_none(s(&info["kernelVersion"]))),
                json!(or_none(s(&info["containerRuntimeVersion"]))),
            ]
        }
        ("snapshot.storage.k8s.io", "volumesnapshots") => vec![
            st.get("readyToUse").cloned().unwrap_or(Value::Null),
            json!(s(&spec["source"]["persistentVolumeClaimName"])),
            json!(s(&spec["source"]["volumeSnapshotContentName"])),
            json!(s(&st["restoreSize"])),
            json!(s(&spec["volumeSnapshotClassName"])),
            json!(s(&st["boundVolumeSnapshotContentName"])),
            json!(st["creationTime"].as_str().map_or_else(String::new, age)),
            json!(a),
        ],
        _ => vec![json!(a)],
    };
    let mut out = vec![json!(name)];
    out.extend(row);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Registry;

    #[test]
    fn every_row_matches_its_columns() {
        let r = Registry::builtin();
        for (g, res) in [
            ("", "pods"),
            ("apps", "deployments"),
            ("apps", "replicasets"),
            ("apps", "statefulsets"),
            ("apps", "daemonsets"),
            ("batch", "jobs"),
            ("batch", "cronjobs"),
            ("", "services"),
            ("", "persistentvolumeclaims"),
            ("", "persistentvolumes"),
            ("", "nodes"),
            ("snapshot.storage.k8s.io", "volumesnapshots"),
            ("", "configmaps"),
        ] {
            let info = r.by_key(&(g.into(), res.into())).expect("served");
            let row = cells(&info, &json!({"metadata": {"name": "x"}}));
            assert_eq!(row.len(), columns(&info).len(), "{res}");
        }
        let info = r.by_key(&("".into(), "services".into())).unwrap();
        let row = cells(
            &info,
            &json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "clusterIP": "10.96.0.9",
                "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}], "selector": {"app": "web"}}}),
        );
        assert_eq!(
            row[..5],
            [
                json!("web"),
                json!("NodePort"),
                json!("10.96.0.9"),
                json!("<none>"),
                json!("80:30080/TCP")
            ]
        );
    }
}
