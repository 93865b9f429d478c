//! Field defaulting as kube-apiserver does it (the `SetDefaults_*`
//! functions of the v1 API groups, plus the few admission plugins every
//! cluster runs that fill pod fields), for what backups and restores see.
//! It runs on every create and update of the main resource, so a defaulted
//! field that a write leaves out comes back, as on a real server. The list
//! is documented in the crate README ("Field defaulting").

use serde_json::{Map, Value, json};

use crate::meta::meta_str;
use crate::resources::ResourceInfo;

/// Fills defaults into an object about to be stored (create or update).
pub fn apply(info: &ResourceInfo, v: &mut Value, create: bool) {
    match (info.group.as_str(), info.resource.as_str()) {
        ("apps", "deployments") => {
            let spec = obj(v, "spec");
            set(spec, "replicas", json!(1));
            let strategy = obj(spec, "strategy");
            set(strategy, "type", json!("RollingUpdate"));
            if strategy["type"] == "RollingUpdate" {
                let ru = obj(strategy, "rollingUpdate");
                set(ru, "maxUnavailable", json!("25%"));
                set(ru, "maxSurge", json!("25%"));
            }
            set(spec, "revisionHistoryLimit", json!(10));
            set(spec, "progressDeadlineSeconds", json!(600));
            pod_template(spec);
        }
        ("apps", "replicasets") | ("", "replicationcontrollers") => {
            let spec = obj(v, "spec");
            set(spec, "replicas", json!(1));
            pod_template(spec);
        }
        ("apps", "statefulsets") => {
            let spec = obj(v, "spec");
            set(spec, "replicas", json!(1));
            set(spec, "podManagementPolicy", json!("OrderedReady"));
            let us = obj(spec, "updateStrategy");
            if us.get("type").is_none_or(|t| t == "") {
                us["type"] = json!("RollingUpdate");
                obj(us, "rollingUpdate");
            }
            if us["type"] == "RollingUpdate" && us["rollingUpdate"].is_object() {
                set(&mut us["rollingUpdate"], "partition", json!(0));
            }
            set(spec, "revisionHistoryLimit", json!(10));
            let retention = obj(spec, "persistentVolumeClaimRetentionPolicy");
            set(retention, "whenDeleted", json!("Retain"));
            set(retention, "whenScaled", json!("Retain"));
            for t in items(spec, "volumeClaimTemplates") {
                claim_spec(obj(t, "spec"));
                set(obj(t, "status"), "phase", json!("Pending"));
            }
            pod_template(spec);
        }
        ("apps", "daemonsets") => {
            let spec = obj(v, "spec");
            let us = obj(spec, "updateStrategy");
            set(us, "type", json!("RollingUpdate"));
            if us["type"] == "RollingUpdate" {
                let ru = obj(us, "rollingUpdate");
                set(ru, "maxUnavailable", json!(1));
                set(ru, "maxSurge", json!(0));
            }
            set(spec, "revisionHistoryLimit", json!(10));
            pod_template(spec);
        }
        ("batch", "jobs") => {
            if create {
                job_selector(v);
            }
            let template_labels = v["spec"]["template"]["metadata"]["labels"].clone();
            if template_labels.is_object()
                && v["metadata"]["labels"]
                    .as_object()
                    .is_none_or(Map::is_empty)
            {
                v["metadata"]["labels"] = template_labels;
            }
            let spec = obj(v, "spec");
            job_spec(spec);
            pod_template(spec);
        }
        ("batch", "cronjobs") => {
            let spec = obj(v, "spec");
            set(spec, "concurrencyPolicy", json!("Allow"));
            set(spec, "suspend", json!(false));
            set(spec, "successfulJobsHistoryLimit", json!(3));
            set(spec, "failedJobsHistoryLimit", json!(1));
            pod_template(obj(obj(spec, "jobTemplate"), "spec"));
        }
        ("", "podtemplates") => pod_template(v),
        ("", "pods") => {
            let spec = obj(v, "spec");
            pod_spec(spec);
            if create {
                pod_admission(spec);
            }
            for list in ["containers", "initContainers", "ephemeralContainers"] {
                items(spec, list).for_each(requests_from_limits);
            }
        }
        ("", "services") => service(v),
        ("", "persistentvolumeclaims") => {
            claim_spec(obj(v, "spec"));
        }
        ("", "persistentvolumes") => {
            let spec = obj(v, "spec");
            set(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
            set(spec, "volumeMode", json!("Filesystem"));
        }
        _ => {}
    }
}

/// `v[key]` as an object, created (or replaced when not an object).
fn obj<'a>(v: &'a mut Value, key: &str) -> &'a mut Value {
    if !v[key].is_object() {
        v[key] = json!({});
    }
    &mut v[key]
}

/// Sets `v[key]` when it is absent or null.
fn set(v: &mut Value, key: &str, default: Value) {
    if v.get(key).is_none_or(Value::is_null) {
        v[key] = default;
    }
}

/// The objects of the array `v[key]` (none when absent).
fn items<'a>(v: &'a mut Value, key: &str) -> impl Iterator<Item = &'a mut Value> {
    v.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter(|x| x.is_object())
}

fn pod_template(spec: &mut Value) {
    let t = obj(spec, "template");
    obj(t, "metadata");
    pod_spec(obj(t, "spec"));
}

fn claim_spec(spec: &mut Value) {
    set(spec, "volumeMode", json!("Filesystem"));
}

fn job_spec(spec: &mut Value) {
    if spec.get("completions").is_none_or(Value::is_null)
        && spec.get("parallelism").is_none_or(Value::is_null)
    {
        spec["completions"] = json!(1);
    }
    set(spec, "parallelism", json!(1));
    let per_index = spec
        .get("backoffLimitPerIndex")
        .is_some_and(|x| !x.is_null());
    set(
        spec,
        "backoffLimit",
        json!(if per_index { i32::MAX } else { 6 }),
    );
    set(spec, "completionMode", json!("NonIndexed"));
    set(spec, "suspend", json!(false));
    let policy = if spec.get("podFailurePolicy").is_some_and(Value::is_object) {
        "Failed"
    } else {
        "TerminatingOrFailed"
    };
    set(spec, "podReplacementPolicy", json!(policy));
}

/// The Job strategy's generated selector: unless `manualSelector`, the pod
/// template and the selector get the controller-uid and job-name labels.
fn job_selector(v: &mut Value) {
    if v["spec"]["manualSelector"] == json!(true) {
        return;
    }
    let uid = meta_str(v, "uid").to_string();
    let name = meta_str(v, "name").to_string();
    if uid.is_empty() {
        return;
    }
    let spec = obj(v, "spec");
    let labels = obj(obj(obj(spec, "template"), "metadata"), "labels");
    for (k, val) in [
        ("batch.kubernetes.io/controller-uid", &uid),
        ("batch.kubernetes.io/job-name", &name),
        ("controller-uid", &uid),
        ("job-name", &name),
    ] {
        set(labels, k, json!(val));
    }
    if spec["selector"].is_null() {
        spec["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
    }
}

/// `SetDefaults_PodSpec` and what it reaches (containers, volumes, probes).
fn pod_spec(spec: &mut Value) {
    set(spec, "dnsPolicy", json!("ClusterFirst"));
    set(spec, "restartPolicy", json!("Always"));
    set(spec, "terminationGracePeriodSeconds", json!(30));
    set(spec, "securityContext", json!({}));
    set(spec, "schedulerName", json!("default-scheduler"));
    set(spec, "enableServiceLinks", json!(true));
    let host_network = spec["hostNetwork"] == json!(true);
    for list in ["containers", "initContainers"] {
        items(spec, list).for_each(|c| container(c, host_network));
    }
    for c in items(spec, "ephemeralContainers") {
        container(c, false);
    }
    for vol in items(spec, "volumes") {
        volume(vol);
    }
}

fn container(c: &mut Value, host_network: bool) {
    let image = c["image"].as_str().unwrap_or_default();
    let policy = if image_tag(image) == Some("latest") {
        "Always"
    } else {
        "IfNotPresent"
    };
    set(c, "imagePullPolicy", json!(policy));
    set(c, "terminationMessagePath", json!("/dev/termination-log"));
    set(c, "terminationMessagePolicy", json!("File"));
    set(c, "resources", json!({}));
    for p in items(c, "ports") {
        set(p, "protocol", json!("TCP"));
        if host_network && p.get("hostPort").is_none_or(|h| h.is_null() || h == 0) {
            p["hostPort"] = p["containerPort"].clone();
        }
    }
    for e in items(c, "env") {
        if e["valueFrom"]["fieldRef"].is_object() {
            set(&mut e["valueFrom"]["fieldRef"], "apiVersion", json!("v1"));
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if c[probe].is_object() {
            let p = &mut c[probe];
            set(p, "timeoutSeconds", json!(1));
            set(p, "periodSeconds", json!(10));
            set(p, "successThreshold", json!(1));
            set(p, "failureThreshold", json!(3));
            if p["httpGet"].is_object() {
                set(&mut p["httpGet"], "path", json!("/"));
                set(&mut p["httpGet"], "scheme", json!("HTTP"));
            }
        }
    }
}

/// The tag `ParseImageName` finds: `latest` when there is neither a tag nor
/// a digest, `None` for digest references.
fn image_tag(image: &str) -> Option<&str> {
    if image.contains('@') {
        return None;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    Some(last.split_once(':').map_or("latest", |(_, t)| t))
}

fn volume(v: &mut Value) {
    const SOURCES: &[&str] = &[
        "hostPath",
        "emptyDir",
        "gcePersistentDisk",
        "awsElasticBlockStore",
        "gitRepo",
        "secret",
        "nfs",
        "iscsi",
        "glusterfs",
        "persistentVolumeClaim",
        "rbd",
        "flexVolume",
        "cinder",
        "cephfs",
        "flocker",
        "downwardAPI",
        "fc",
        "azureFile",
        "configMap",
        "vsphereVolume",
        "quobyte",
        "azureDisk",
        "photonPersistentDisk",
        "projected",
        "portworxVolume",
        "scaleIO",
        "storageos",
        "csi",
        "ephemeral",
        "image",
    ];
    if !SOURCES
        .iter()
        .any(|s| v.get(*s).is_some_and(|x| !x.is_null()))
    {
        v["emptyDir"] = json!({});
    }
    for src in ["secret", "configMap", "downwardAPI", "projected"] {
        if v[src].is_object() {
            set(&mut v[src], "defaultMode", json!(420));
        }
    }
    if v["hostPath"].is_object() {
        set(&mut v["hostPath"], "type", json!(""));
    }
    if v["ephemeral"]["volumeClaimTemplate"]["spec"].is_object() {
        claim_spec(&mut v["ephemeral"]["volumeClaimTemplate"]["spec"]);
    }
}

/// The admission plugins of every cluster that fill in pods:
/// ServiceAccount (the account name), Priority and DefaultTolerationSeconds.
fn pod_admission(spec: &mut Value) {
    set(spec, "serviceAccountName", json!("default"));
    let sa = spec["serviceAccountName"].clone();
    set(spec, "serviceAccount", sa);
    if spec.get("priorityClassName").is_none_or(Value::is_null) {
        set(spec, "priority", json!(0));
    }
    set(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    let tolerations = spec
        .get_mut("tolerations")
        .filter(|t| t.is_array())
        .map(Value::take)
        .unwrap_or_else(|| json!([]));
    let mut list = tolerations.as_array().cloned().unwrap_or_default();
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let tolerated = list.iter().any(|t| {
            (t["key"] == key || (t["key"].is_null() && t["operator"] == "Exists"))
                && t["effect"]
                    .as_str()
                    .is_none_or(|e| e.is_empty() || e == "NoExecute")
        });
        if !tolerated {
            list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
        }
    }
    spec["tolerations"] = Value::Array(list);
}

/// `SetDefaults_Pod`: a resource with a limit and no request requests the limit.
fn requests_from_limits(c: &mut Value) {
    let Some(limits) = c["resources"]["limits"].as_object().cloned() else {
        return;
    };
    let requests = obj(obj(c, "resources"), "requests");
    for (k, q) in limits {
        set(requests, &k, q);
    }
}

fn service(v: &mut Value) {
    let spec = obj(v, "spec");
    set(spec, "type", json!("ClusterIP"));
    let ty = spec["type"].as_str().unwrap_or_default().to_string();
    if ty == "ExternalName" {
        return;
    }
    set(spec, "sessionAffinity", json!("None"));
    if spec["sessionAffinity"] == "ClientIP" {
        let cfg = obj(obj(spec, "sessionAffinityConfig"), "clientIP");
        set(cfg, "timeoutSeconds", json!(10800));
    }
    for p in items(spec, "ports") {
        set(p, "protocol", json!("TCP"));
        if p.get("targetPort")
            .is_none_or(|t| t.is_null() || t == 0 || t == "")
        {
            p["targetPort"] = p["port"].clone();
        }
    }
    set(spec, "internalTrafficPolicy", json!("Cluster"));
    if matches!(ty.as_str(), "NodePort" | "LoadBalancer") {
        set(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        set(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if let Some(ip) = spec["clusterIP"].as_str().map(str::to_string)
        && !ip.is_empty()
    {
        set(spec, "clusterIPs", json!([ip]));
        let headless_without_selector =
            ip == "None" && spec["selector"].as_object().is_none_or(Map::is_empty);
        if !headless_without_selector {
            set(spec, "ipFamilies", json!(["IPv4"]));
            set(spec, "ipFamilyPolicy", json!("SingleStack"));
        } else {
            // The cluster is single-stack IPv4.
            set(spec, "ipFamilyPolicy", json!("RequireDualStack"));
            set(spec, "ipFamilies", json!(["IPv4"]));
        }
    }
    if v.get("status").is_none_or(Value::is_null) {
        v["status"] = json!({"loadBalancer": {}});
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Registry;

    fn run(group: &str, resource: &str, mut v: Value) -> Value {
        let r = Registry::builtin();
        let info = r.by_key(&(group.into(), resource.into())).expect("served");
        apply(&info, &mut v, true);
        v
    }

    #[test]
    fn deployments_get_strategy_limits_and_pod_defaults() {
        let v = run(
            "apps",
            "deployments",
            json!({"metadata": {"name": "web"}, "spec": {"template": {"spec": {"containers": [
                {"name": "a", "image": "nginx"}, {"name": "b", "image": "reg:5000/x/busybox:1.36"},
                {"name": "c", "image": "nginx@sha256:abc"}]}}}}),
        );
        let spec = &v["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(
            spec["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(spec["revisionHistoryLimit"], 10);
        assert_eq!(spec["progressDeadlineSeconds"], 600);
        let pod = &spec["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Always");
        assert_eq!(pod["dnsPolicy"], "ClusterFirst");
        assert_eq!(pod["schedulerName"], "default-scheduler");
        assert_eq!(pod["terminationGracePeriodSeconds"], 30);
        assert_eq!(pod["securityContext"], json!({}));
        let pulls: Vec<&Value> = pod["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| &c["imagePullPolicy"])
            .collect();
        assert_eq!(pulls, ["Always", "IfNotPresent", "IfNotPresent"]);
        assert_eq!(
            pod["containers"][0]["terminationMessagePath"],
            "/dev/termination-log"
        );
        // Templates are not admitted pods: no service account or tolerations.
        assert!(pod.get("serviceAccountName").is_none());
    }

    #[test]
    fn explicit_values_are_kept() {
        let v = run(
            "apps",
            "deployments",
            json!({"spec": {"replicas": 0, "strategy": {"type": "Recreate"}}}),
        );
        assert_eq!(v["spec"]["replicas"], 0);
        assert_eq!(v["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn services_jobs_and_claims() {
        let v = run(
            "",
            "services",
            json!({"spec": {"clusterIP": "10.96.0.12", "ports": [{"port": 80}]}}),
        );
        assert_eq!(v["spec"]["sessionAffinity"], "None");
        assert_eq!(v["spec"]["ipFamilies"], json!(["IPv4"]));
        assert_eq!(v["spec"]["ipFamilyPolicy"], "SingleStack");
        assert_eq!(v["spec"]["internalTrafficPolicy"], "Cluster");
        assert_eq!(v["spec"]["clusterIPs"], json!(["10.96.0.12"]));
        assert_eq!(
            v["spec"]["ports"][0],
            json!({"port": 80, "protocol": "TCP", "targetPort": 80})
        );
        let j = run(
            "batch",
            "jobs",
            json!({"metadata": {"name": "j", "uid": "u1"}, "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x:1"}]}}}}),
        );
        assert_eq!(j["spec"]["completions"], 1);
        assert_eq!(j["spec"]["backoffLimit"], 6);
        assert_eq!(
            j["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
            "u1"
        );
        assert_eq!(j["metadata"]["labels"]["job-name"], "j");
        let c = run("", "persistentvolumeclaims", json!({"spec": {}}));
        assert_eq!(c["spec"]["volumeMode"], "Filesystem");
        let p = run(
            "",
            "pods",
            json!({"spec": {"containers": [{"name": "c", "image": "x", "resources": {"limits": {"cpu": "1"}}}]}}),
        );
        assert_eq!(p["spec"]["serviceAccountName"], "default");
        assert_eq!(p["spec"]["tolerations"].as_array().unwrap().len(), 2);
        assert_eq!(
            p["spec"]["containers"][0]["resources"]["requests"]["cpu"],
            "1"
        );
    }
}
