//! Pod Security admission, as the built-in `PodSecurity` plugin of
//! kube-apiserver enforces the Pod Security Standards.
//!
//! A namespace's `pod-security.kubernetes.io/enforce` label (`privileged`,
//! `baseline`, `restricted`; version from `…/enforce-version`, default
//! `latest`) is enforced on every pod create, whoever creates the pod
//! (kubectl, a controller, seeding): a violating pod gets 403 Forbidden
//! with the real message, `pods "x" is forbidden: violates PodSecurity
//! "restricted:latest": <check> (<detail>), …`. Workload objects with a pod
//! template (Deployments, ReplicaSets, StatefulSets, DaemonSets, Jobs,
//! CronJobs, ReplicationControllers, PodTemplates) are admitted with a
//! warning (`would violate PodSecurity …`), as the real plugin does; the
//! `warn` label adds warnings at its own level.
//!
//! Checks (latest): baseline — host namespaces, privileged, capabilities
//! beyond the default set, hostPath volumes, host ports, procMount,
//! seccomp `Unconfined`; restricted adds — volume types, allowPrivilegeEscalation,
//! runAsNonRoot, runAsUser=0, seccomp profile required, capabilities
//! (drop ALL, add only NET_BIND_SERVICE). Not modelled: AppArmor, SELinux
//! options, sysctls, Windows hostProcess, and checks on pod updates.

use serde_json::Value;

use crate::error::ApiError;

/// A Pod Security level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Privileged,
    Baseline,
    Restricted,
}

impl Level {
    fn parse(s: &str) -> Option<Level> {
        match s {
            "privileged" => Some(Level::Privileged),
            "baseline" => Some(Level::Baseline),
            "restricted" => Some(Level::Restricted),
            _ => None,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

const BASELINE_CAPS: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

const RESTRICTED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// Whether objects of a resource carry a pod spec Pod Security checks.
pub fn applies(group: &str, resource: &str) -> bool {
    matches!(
        (group, resource),
        ("", "pods" | "podtemplates" | "replicationcontrollers")
            | ("batch", "cronjobs" | "jobs")
            | (
                "apps",
                "deployments" | "replicasets" | "statefulsets" | "daemonsets"
            )
    )
}

/// The pod templates of workload kinds, by (group, resource).
fn pod_spec_of<'a>(group: &str, resource: &str, v: &'a Value) -> Option<&'a Value> {
    let spec = match (group, resource) {
        ("", "pods") => &v["spec"],
        ("", "podtemplates") => &v["template"]["spec"],
        ("batch", "cronjobs") => &v["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        ("apps", "deployments" | "replicasets" | "statefulsets" | "daemonsets")
        | ("batch", "jobs")
        | ("", "replicationcontrollers") => &v["spec"]["template"]["spec"],
        _ => return None,
    };
    spec.is_object().then_some(spec)
}

/// A namespace's (level, version) for a mode label (`enforce`, `warn`).
fn policy(ns: &Value, mode: &str) -> Option<(Level, String)> {
    let labels = &ns["metadata"]["labels"];
    let level = Level::parse(labels[format!("pod-security.kubernetes.io/{mode}")].as_str()?)?;
    let version = labels[format!("pod-security.kubernetes.io/{mode}-version")]
        .as_str()
        .filter(|v| !v.is_empty())
        .unwrap_or("latest")
        .to_string();
    Some((level, version))
}

/// Checks an object about to be created. Returns the warnings to send, or
/// 403 Forbidden for a pod the enforced level refuses.
pub fn check(
    group: &str,
    resource: &str,
    name: &str,
    namespace: Option<&Value>,
    v: &Value,
) -> Result<Vec<String>, ApiError> {
    let (Some(ns), Some(spec)) = (namespace, pod_spec_of(group, resource, v)) else {
        return Ok(Vec::new());
    };
    let mut warnings = Vec::new();
    let enforce = policy(ns, "enforce");
    if let Some((level, version)) = &enforce {
        let problems = evaluate(*level, spec);
        if !problems.is_empty() {
            let text = format!(
                "PodSecurity \"{}:{version}\": {}",
                level.name(),
                problems.join(", ")
            );
            if resource == "pods" {
                return Err(ApiError::forbidden(format!(
                    "pods \"{name}\" is forbidden: violates {text}"
                )));
            }
            warnings.push(format!("would violate {text}"));
        }
    }
    if let Some((level, version)) = policy(ns, "warn")
        && enforce.as_ref() != Some(&(level, version.clone()))
    {
        let problems = evaluate(level, spec);
        if !problems.is_empty() {
            warnings.push(format!(
                "would violate PodSecurity \"{}:{version}\": {}",
                level.name(),
                problems.join(", ")
            ));
        }
    }
    Ok(warnings)
}

/// `"a"` or `"a", "b"` after a singular or plural noun.
fn named(singular: &str, plural: &str, names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    let noun = if names.len() == 1 { singular } else { plural };
    format!("{noun} {}", quoted.join(", "))
}

fn containers(spec: &Value) -> impl Iterator<Item = &Value> {
    ["initContainers", "containers", "ephemeralContainers"]
        .into_iter()
        .flat_map(move |k| spec[k].as_array().into_iter().flatten())
}

fn cname(c: &Value) -> String {
    c["name"].as_str().unwrap_or_default().to_string()
}

/// The violated checks of a level, in the order the real evaluator lists them.
fn evaluate(level: Level, spec: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if level == Level::Privileged {
        return out;
    }
    let psc = &spec["securityContext"];
    // Baseline.
    let hosts: Vec<String> = ["hostNetwork", "hostPID", "hostIPC"]
        .into_iter()
        .filter(|k| spec[*k] == Value::Bool(true))
        .map(|k| format!("{k}=true"))
        .collect();
    if !hosts.is_empty() {
        out.push(format!("host namespaces ({})", hosts.join(", ")));
    }
    let privileged: Vec<String> = containers(spec)
        .filter(|c| c["securityContext"]["privileged"] == Value::Bool(true))
        .map(cname)
        .collect();
    if !privileged.is_empty() {
        out.push(format!(
            "privileged ({} must not set securityContext.privileged=true)",
            named("container", "containers", &privileged)
        ));
    }
    let mut bad_caps: Vec<(String, Vec<String>)> = Vec::new();
    for c in containers(spec) {
        let caps: Vec<String> = c["securityContext"]["capabilities"]["add"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|cap| !BASELINE_CAPS.contains(cap))
            .map(|cap| format!("{cap:?}"))
            .collect();
        if !caps.is_empty() {
            bad_caps.push((cname(c), caps));
        }
    }
    if !bad_caps.is_empty() {
        let names: Vec<String> = bad_caps.iter().map(|(n, _)| n.clone()).collect();
        let mut caps: Vec<String> = bad_caps.into_iter().flat_map(|(_, c)| c).collect();
        caps.dedup();
        out.push(format!(
            "non-default capabilities ({} must not include {} in securityContext.capabilities.add)",
            named("container", "containers", &names),
            caps.join(", ")
        ));
    }
    let host_paths: Vec<String> = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["hostPath"].is_object())
        .map(|v| v["name"].as_str().unwrap_or_default().to_string())
        .collect();
    if !host_paths.is_empty() {
        out.push(format!(
            "hostPath volumes ({})",
            named("volume", "volumes", &host_paths)
        ));
    }
    let mut host_ports: Vec<String> = Vec::new();
    let mut port_numbers: Vec<String> = Vec::new();
    for c in containers(spec) {
        let ports: Vec<String> = c["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["hostPort"].as_i64().filter(|h| *h != 0))
            .map(|h| h.to_string())
            .collect();
        if !ports.is_empty() {
            host_ports.push(cname(c));
            port_numbers.extend(ports);
        }
    }
    if !host_ports.is_empty() {
        let noun = if port_numbers.len() == 1 {
            "hostPort"
        } else {
            "hostPorts"
        };
        out.push(format!(
            "hostPort ({} {} {noun} {})",
            named("container", "containers", &host_ports),
            if host_ports.len() == 1 { "uses" } else { "use" },
            port_numbers.join(", ")
        ));
    }
    let unmasked: Vec<String> = containers(spec)
        .filter(|c| {
            c["securityContext"]["procMount"]
                .as_str()
                .is_some_and(|p| p != "Default")
        })
        .map(cname)
        .collect();
    if !unmasked.is_empty() {
        out.push(format!(
            "procMount ({} must not set securityContext.procMount to \"Unmasked\")",
            named("container", "containers", &unmasked)
        ));
    }
    let seccomp = |sc: &Value| sc["seccompProfile"]["type"].as_str().map(str::to_string);
    if level == Level::Baseline {
        let mut who: Vec<String> = Vec::new();
        if seccomp(psc).as_deref() == Some("Unconfined") {
            who.push("pod".into());
        }
        let cs: Vec<String> = containers(spec)
            .filter(|c| seccomp(&c["securityContext"]).as_deref() == Some("Unconfined"))
            .map(cname)
            .collect();
        if !cs.is_empty() {
            who.push(named("container", "containers", &cs));
        }
        if !who.is_empty() {
            out.push(format!(
                "seccompProfile ({} must not set securityContext.seccompProfile.type to \"Unconfined\")",
                who.join(" and ")
            ));
        }
        return out;
    }
    // Restricted.
    let mut restricted_vols: Vec<(String, String)> = Vec::new();
    for v in spec["volumes"].as_array().into_iter().flatten() {
        if let Some(o) = v.as_object()
            && let Some(kind) = o
                .keys()
                .find(|k| k.as_str() != "name" && !RESTRICTED_VOLUMES.contains(&k.as_str()))
        {
            restricted_vols.push((
                v["name"].as_str().unwrap_or_default().to_string(),
                kind.clone(),
            ));
        }
    }
    if !restricted_vols.is_empty() {
        let names: Vec<String> = restricted_vols.iter().map(|(n, _)| n.clone()).collect();
        let mut kinds: Vec<String> = restricted_vols
            .iter()
            .map(|(_, k)| format!("{k:?}"))
            .collect();
        kinds.dedup();
        let types = if kinds.len() == 1 { "type" } else { "types" };
        out.push(format!(
            "restricted volume types ({} {} restricted volume {types} {})",
            named("volume", "volumes", &names),
            if names.len() == 1 { "uses" } else { "use" },
            kinds.join(", ")
        ));
    }
    let escalating: Vec<String> = containers(spec)
        .filter(|c| c["securityContext"]["allowPrivilegeEscalation"] != Value::Bool(false))
        .map(cname)
        .collect();
    if !escalating.is_empty() {
        out.push(format!(
            "allowPrivilegeEscalation != false ({} must set securityContext.allowPrivilegeEscalation=false)",
            named("container", "containers", &escalating)
        ));
    }
    let mut caps_drop: Vec<String> = Vec::new();
    let mut caps_add: Vec<String> = Vec::new();
    let mut added: Vec<String> = Vec::new();
    for c in containers(spec) {
        let caps = &c["securityContext"]["capabilities"];
        let drops_all = caps["drop"]
            .as_array()
            .is_some_and(|d| d.iter().any(|x| x == "ALL"));
        if !drops_all {
            caps_drop.push(cname(c));
        }
        let extra: Vec<String> = caps["add"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|cap| *cap != "NET_BIND_SERVICE")
            .map(|cap| format!("{cap:?}"))
            .collect();
        if !extra.is_empty() {
            caps_add.push(cname(c));
            added.extend(extra);
        }
    }
    if !caps_drop.is_empty() || !caps_add.is_empty() {
        let mut parts = Vec::new();
        if !caps_drop.is_empty() {
            parts.push(format!(
                "{} must set securityContext.capabilities.drop=[\"ALL\"]",
                named("container", "containers", &caps_drop)
            ));
        }
        if !caps_add.is_empty() {
            added.dedup();
            parts.push(format!(
                "{} must not include {} in securityContext.capabilities.add",
                named("container", "containers", &caps_add),
                added.join(", ")
            ));
        }
        out.push(format!("unrestricted capabilities ({})", parts.join("; ")));
    }
    // runAsNonRoot: the pod level counts for containers that do not set it.
    let pod_non_root = psc["runAsNonRoot"].as_bool();
    let mut root_containers: Vec<String> = Vec::new();
    let mut explicit_root: Vec<String> = Vec::new();
    for c in containers(spec) {
        match c["securityContext"]["runAsNonRoot"].as_bool() {
            Some(false) => explicit_root.push(cname(c)),
            Some(true) => {}
            None if pod_non_root == Some(true) => {}
            None => root_containers.push(cname(c)),
        }
    }
    if pod_non_root == Some(false) || !explicit_root.is_empty() || !root_containers.is_empty() {
        let mut parts = Vec::new();
        if pod_non_root == Some(false) {
            parts.push("pod must not set securityContext.runAsNonRoot=false".to_string());
        }
        if !explicit_root.is_empty() {
            parts.push(format!(
                "{} must not set securityContext.runAsNonRoot=false",
                named("container", "containers", &explicit_root)
            ));
        }
        if !root_containers.is_empty() && pod_non_root != Some(false) {
            parts.push(format!(
                "pod or {} must set securityContext.runAsNonRoot=true",
                named("container", "containers", &root_containers)
            ));
        }
        out.push(format!("runAsNonRoot != true ({})", parts.join("; ")));
    }
    let mut root_user: Vec<String> = Vec::new();
    if psc["runAsUser"].as_i64() == Some(0) {
        root_user.push("pod must not set runAsUser=0".into());
    }
    let cs: Vec<String> = containers(spec)
        .filter(|c| c["securityContext"]["runAsUser"].as_i64() == Some(0))
        .map(cname)
        .collect();
    if !cs.is_empty() {
        root_user.push(format!(
            "{} must not set runAsUser=0",
            named("container", "containers", &cs)
        ));
    }
    if !root_user.is_empty() {
        out.push(format!("runAsUser=0 ({})", root_user.join("; ")));
    }
    let ok = |t: Option<String>| matches!(t.as_deref(), Some("RuntimeDefault" | "Localhost"));
    let pod_ok = ok(seccomp(psc));
    let pod_unconfined = seccomp(psc).as_deref() == Some("Unconfined");
    let mut unset: Vec<String> = Vec::new();
    let mut bad: Vec<String> = Vec::new();
    for c in containers(spec) {
        match seccomp(&c["securityContext"]) {
            None if pod_ok => {}
            None => unset.push(cname(c)),
            t if ok(t.clone()) => {}
            _ => bad.push(cname(c)),
        }
    }
    if pod_unconfined || !unset.is_empty() || !bad.is_empty() {
        let mut parts = Vec::new();
        if pod_unconfined {
            parts.push(
                "pod must not set securityContext.seccompProfile.type to \"Unconfined\""
                    .to_string(),
            );
        }
        if !bad.is_empty() {
            parts.push(format!(
                "{} must not set securityContext.seccompProfile.type to \"Unconfined\"",
                named("container", "containers", &bad)
            ));
        }
        if !unset.is_empty() && !pod_unconfined {
            parts.push(format!(
                "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
                named("container", "containers", &unset)
            ));
        }
        out.push(format!("seccompProfile ({})", parts.join("; ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ns(level: &str) -> Value {
        json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": level}}})
    }

    #[test]
    fn baseline_refuses_privileged_and_host_paths() {
        let pod = json!({"spec": {"containers": [{"name": "mover", "image": "x",
            "securityContext": {"privileged": true}}],
            "volumes": [{"name": "host", "hostPath": {"path": "/var/lib/kubelet"}}]}});
        let e = check("", "pods", "p", Some(&ns("baseline")), &pod).expect_err("refused");
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "pods \"p\" is forbidden: violates PodSecurity \"baseline:latest\": privileged (container \"mover\" must not set securityContext.privileged=true), hostPath volumes (volume \"host\")"
        );
        assert!(check("", "pods", "p", Some(&ns("privileged")), &pod).is_ok());
    }

    #[test]
    fn restricted_lists_every_missing_setting() {
        let pod = json!({"spec": {"containers": [{"name": "c", "image": "x"}]}});
        let e = check("", "pods", "p", Some(&ns("restricted")), &pod).expect_err("refused");
        assert_eq!(
            e.message,
            "pods \"p\" is forbidden: violates PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container \"c\" must set securityContext.capabilities.drop=[\"ALL\"]), runAsNonRoot != true (pod or container \"c\" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container \"c\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
        );
        let good = json!({"spec": {"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": "x", "securityContext": {"allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"]}}}]}});
        assert!(check("", "pods", "p", Some(&ns("restricted")), &good).is_ok());
        let mut root = good.clone();
        root["spec"]["securityContext"]["runAsUser"] = json!(0);
        let e = check("", "pods", "p", Some(&ns("restricted")), &root).expect_err("root");
        assert!(
            e.message
                .ends_with("runAsUser=0 (pod must not set runAsUser=0)"),
            "{}",
            e.message
        );
    }

    #[test]
    fn workloads_get_warnings() {
        let d = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x",
            "securityContext": {"privileged": true}}]}}}});
        let w = check("apps", "deployments", "d", Some(&ns("baseline")), &d).expect("admitted");
        assert_eq!(
            w,
            [
                "would violate PodSecurity \"baseline:latest\": privileged (container \"c\" must not set securityContext.privileged=true)"
            ]
        );
    }
}
