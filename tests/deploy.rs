//! The manifests under deploy/ against the code they deploy:
//!
//! 1. every Kubernetes document parses as its k8s-openapi type with no field
//!    the type does not know, custom resources are well-formed, and every
//!    kustomization names files that exist;
//! 2. the RBAC grants every API request a backup, a restore (dry run and
//!    real) and a leader-elected controller really make against the sandbox
//!    API server, and the restore and Lease roles grant nothing unused;
//! 3. the Deployment passes only flags and environment variables that
//!    `lifeboat controller --help` documents.
//!
//! Overlays and components are rendered by a small kustomize subset
//! (resources, components, patch files, inline `$patch: delete`, JSON 6902
//! patches with a target, images) that fails on any key it does not know.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use lifeboat_sandbox::{RequestRecord, Sandbox};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

const NAMESPACE: &str = "lifeboat";
const SERVICE_ACCOUNT: &str = "lifeboat";
/// Where mover pods run (volume data).
const MOVERS_NAMESPACE: &str = "lifeboat-movers";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy() -> PathBuf {
    root().join("deploy")
}

/// Every `*.yaml`/`*.yml` file below `dir`, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn rel(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The documents of a YAML file (empty documents dropped).
fn documents(path: &Path) -> Vec<serde_yaml_ng::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    documents_of(&text, &rel(path))
}

fn documents_of(text: &str, what: &str) -> Vec<serde_yaml_ng::Value> {
    use serde::Deserialize as _;
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| {
            serde_yaml_ng::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{what}: not YAML: {e}"))
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn to_json(v: &serde_yaml_ng::Value) -> Value {
    serde_json::to_value(v).unwrap()
}

/// What a kustomization file is: kustomize's own configuration (as opposed
/// to Flux's `Kustomization` custom resource, which shares the file name).
fn is_kustomize_config(doc: &Value) -> bool {
    doc["apiVersion"]
        .as_str()
        .is_some_and(|v| v.starts_with("kustomize.config.k8s.io/"))
}

/// Fields of `original` that the typed re-serialization lost: fields the
/// type does not know (k8s-openapi ignores them when deserializing) or
/// values it changed.
fn lost_fields(original: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (original, typed) {
        (Value::Object(o), Value::Object(t)) => {
            for (k, v) in o {
                match t.get(k) {
                    Some(tv) => lost_fields(v, tv, &format!("{path}.{k}"), out),
                    None if v.is_null() => {}
                    None => out.push(format!("{path}.{k}: unknown field")),
                }
            }
        }
        (Value::Array(o), Value::Array(t)) if o.len() == t.len() => {
            for (i, (ov, tv)) in o.iter().zip(t).enumerate() {
                lost_fields(ov, tv, &format!("{path}[{i}]"), out);
            }
        }
        (o, t) if o == t => {}
        (o, t) => out.push(format!("{path}: {o} became {t}")),
    }
}

/// Parses `doc` as `T` and checks that nothing was dropped on the way.
fn typed<T: DeserializeOwned + Serialize>(doc: &serde_yaml_ng::Value, what: &str) -> T {
    let value: T = serde_yaml_ng::from_value(doc.clone()).unwrap_or_else(|e| {
        panic!(
            "{what}: does not parse as {}: {e}",
            std::any::type_name::<T>()
        )
    });
    let mut lost = Vec::new();
    lost_fields(
        &to_json(doc),
        &serde_json::to_value(&value).unwrap(),
        "",
        &mut lost,
    );
    assert!(
        lost.is_empty(),
        "{what}: fields {} does not know or changed:\n  {}",
        std::any::type_name::<T>(),
        lost.join("\n  ")
    );
    value
}

/// Checks one Kubernetes document by its apiVersion and kind.
fn check_object(doc: &serde_yaml_ng::Value, what: &str) {
    let json = to_json(doc);
    let api_version = json["apiVersion"].as_str().unwrap_or_default();
    let kind = json["kind"].as_str().unwrap_or_default();
    let name = json["metadata"]["name"].as_str().unwrap_or_default();
    assert!(
        !name.is_empty(),
        "{what}: {api_version} {kind} has no metadata.name"
    );
    let what = format!("{what}: {kind} {name}");
    match (api_version, kind) {
        ("v1", "Namespace") => {
            typed::<Namespace>(doc, &what);
        }
        ("v1", "ServiceAccount") => {
            typed::<ServiceAccount>(doc, &what);
        }
        ("v1", "ConfigMap") => {
            typed::<ConfigMap>(doc, &what);
        }
        ("v1", "Service") => {
            typed::<Service>(doc, &what);
        }
        ("apps/v1", "Deployment") => {
            typed::<Deployment>(doc, &what);
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
            typed::<ClusterRole>(doc, &what);
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            typed::<ClusterRoleBinding>(doc, &what);
        }
        ("rbac.authorization.k8s.io/v1", "Role") => {
            typed::<Role>(doc, &what);
        }
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
            typed::<RoleBinding>(doc, &what);
        }
        ("networking.k8s.io/v1", "NetworkPolicy") => {
            typed::<NetworkPolicy>(doc, &what);
        }
        ("policy/v1", "PodDisruptionBudget") => {
            typed::<PodDisruptionBudget>(doc, &what);
        }
        ("security.openshift.io/v1", "SecurityContextConstraints") => check_scc(&json, &what),
        ("monitoring.coreos.com/v1", "PrometheusRule") => check_prometheus_rule(&json, &what),
        ("argoproj.io/v1alpha1", "Application") => check_argo_application(&json, &what),
        ("source.toolkit.fluxcd.io/v1", "GitRepository") => {
            assert_namespaced(&json, &what);
            let url = json["spec"]["url"].as_str().unwrap_or_default();
            assert!(url.starts_with("https://"), "{what}: spec.url {url:?}");
            assert!(json["spec"]["ref"].is_object(), "{what}: spec.ref");
        }
        ("kustomize.toolkit.fluxcd.io/v1", "Kustomization") => {
            assert_namespaced(&json, &what);
            assert_eq!(json["spec"]["sourceRef"]["kind"], "GitRepository", "{what}");
            let path = json["spec"]["path"].as_str().unwrap_or_default();
            assert!(
                root().join(path).join("kustomization.yaml").is_file(),
                "{what}: spec.path {path} is not a kustomization in this repository"
            );
        }
        _ => panic!("{what}: no check for {api_version} {kind}; add one to tests/deploy.rs"),
    }
}

/// The fields of `security.openshift.io/v1` SecurityContextConstraints
/// (openshift/api), so a typo is caught as the API server would.
const SCC_FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "priority",
    "allowPrivilegedContainer",
    "defaultAddCapabilities",
    "requiredDropCapabilities",
    "allowedCapabilities",
    "allowHostDirVolumePlugin",
    "volumes",
    "allowedHostPaths",
    "allowedFlexVolumes",
    "allowHostNetwork",
    "allowHostPorts",
    "allowHostPID",
    "allowHostIPC",
    "defaultAllowPrivilegeEscalation",
    "allowPrivilegeEscalation",
    "seLinuxContext",
    "runAsUser",
    "supplementalGroups",
    "fsGroup",
    "readOnlyRootFilesystem",
    "users",
    "groups",
    "seccompProfiles",
    "allowedUnsafeSysctls",
    "forbiddenSysctls",
    "userNamespaceLevel",
];

/// A SecurityContextConstraints: known fields, cluster-scoped, granted to
/// the movers' ServiceAccount only, and no privileged or host-namespace
/// access (the SCCs of deploy/ are lifeboat's movers').
fn check_scc(json: &Value, what: &str) {
    for key in json.as_object().unwrap().keys() {
        assert!(
            SCC_FIELDS.contains(&key.as_str()),
            "{what}: unknown field `{key}`"
        );
    }
    assert!(
        json["metadata"]["namespace"].is_null(),
        "{what}: SCCs are cluster-scoped"
    );
    assert_eq!(
        json["users"],
        json!([format!(
            "system:serviceaccount:{MOVERS_NAMESPACE}:lifeboat-mover"
        )]),
        "{what}: granted to the movers' ServiceAccount alone"
    );
    assert!(
        json["groups"].as_array().is_none_or(Vec::is_empty),
        "{what}: groups"
    );
    for no in [
        "allowPrivilegedContainer",
        "allowPrivilegeEscalation",
        "allowHostIPC",
        "allowHostNetwork",
        "allowHostPID",
        "allowHostPorts",
    ] {
        assert_eq!(json[no], false, "{what}: {no}");
    }
    for caps in ["allowedCapabilities", "defaultAddCapabilities"] {
        assert_eq!(json[caps], json!([]), "{what}: {caps}");
    }
    for strategy in [
        "runAsUser",
        "seLinuxContext",
        "fsGroup",
        "supplementalGroups",
    ] {
        let t = json[strategy]["type"].as_str().unwrap_or_default();
        assert!(
            [
                "RunAsAny",
                "MustRunAs",
                "MustRunAsRange",
                "MustRunAsNonRoot"
            ]
            .contains(&t),
            "{what}: {strategy}.type {t:?}"
        );
    }
}

/// (method, volume kinds, host path, SELinux type) of a mover pod.
type MoverPodNeeds = (
    &'static str,
    &'static [&'static str],
    Option<&'static str>,
    Option<&'static str>,
);

/// What a mover pod asks for of its SCC (crates/kube/src/volumes: the
/// snapshotMove mover of `Mover::pod`, the fileSystem mover of
/// `filesystem::mover_pod`): (method, volume kinds, host path, SELinux type).
const MOVER_PODS: &[MoverPodNeeds] = &[
    (
        "snapshotMove",
        &["secret", "persistentVolumeClaim"],
        None,
        None,
    ),
    (
        "fileSystem",
        &["secret", "hostPath"],
        Some("/var/lib/kubelet/pods"),
        Some("spc_t"),
    ),
];

/// Whether `scc` admits a mover pod as OpenShift's admission would judge
/// the fields movers set: UID 0 (`runAsUser` of the container), no
/// privilege escalation, a read-only root, its volume kinds and host path,
/// and an explicit SELinux type (only `RunAsAny` takes one).
fn scc_admits(
    scc: &Value,
    volumes: &[&str],
    host_path: Option<&str>,
    selinux: Option<&str>,
) -> bool {
    let allowed: Vec<&str> = scc["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let uid0 = match scc["runAsUser"]["type"].as_str() {
        Some("RunAsAny") => true,
        Some("MustRunAs") => scc["runAsUser"]["uid"] == 0,
        _ => false,
    };
    let host_ok = host_path.is_none_or(|p| {
        scc["allowHostDirVolumePlugin"] == true
            && scc["allowedHostPaths"].as_array().is_none_or(|a| {
                a.is_empty()
                    || a.iter().any(|h| {
                        h["pathPrefix"]
                            .as_str()
                            .is_some_and(|pre| p.starts_with(pre))
                    })
            })
    });
    uid0 && host_ok
        && volumes
            .iter()
            .all(|v| allowed.contains(v) || allowed.contains(&"*"))
        && (selinux.is_none() || scc["seLinuxContext"]["type"] == "RunAsAny")
}

#[test]
fn the_openshift_components_admit_the_mover_pods_and_nothing_more() {
    let sccs: Vec<(String, Value)> = renderings()
        .into_iter()
        .flat_map(|(name, objects)| {
            objects
                .into_iter()
                .filter(|o| o["kind"] == "SecurityContextConstraints")
                .map(move |o| (name.clone(), o))
        })
        .collect();
    let find = |component: &str| -> Value {
        sccs.iter()
            .find(|(n, _)| n.ends_with(component))
            .map(|(_, o)| o.clone())
            .unwrap_or_else(|| panic!("no SCC rendered from {component}"))
    };
    // The snapshotMove SCC admits snapshotMove movers, not fileSystem ones.
    let movers = find("components/openshift-movers");
    let filesystem = find("components/openshift-filesystem-movers");
    for (method, volumes, host, selinux) in MOVER_PODS {
        let by_movers = scc_admits(&movers, volumes, *host, *selinux);
        let by_filesystem = scc_admits(&filesystem, volumes, *host, *selinux);
        match *method {
            "snapshotMove" => {
                assert!(by_movers, "lifeboat-mover refuses {method} movers");
                assert!(
                    !by_filesystem,
                    "lifeboat-mover-filesystem admits {method} movers"
                );
            }
            _ => {
                assert!(!by_movers, "lifeboat-mover admits {method} movers");
                assert!(
                    by_filesystem,
                    "lifeboat-mover-filesystem refuses {method} movers"
                );
            }
        }
    }
    // restricted-v2 (OpenShift 4.11+) refuses both: a UID from the
    // namespace's range, every capability dropped, no hostPath.
    let restricted_v2 = json!({
        "runAsUser": {"type": "MustRunAsRange"}, "seLinuxContext": {"type": "MustRunAs"},
        "allowHostDirVolumePlugin": false,
        "volumes": ["configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                    "persistentVolumeClaim", "projected", "secret"],
    });
    for (method, volumes, host, selinux) in MOVER_PODS {
        assert!(
            !scc_admits(&restricted_v2, volumes, *host, *selinux),
            "restricted-v2 would admit {method} movers: the components would be needless"
        );
    }
    // Only hostPath reads of the kubelet's pods directory.
    assert_eq!(
        filesystem["allowedHostPaths"],
        json!([{"pathPrefix": "/var/lib/kubelet/pods", "readOnly": true}])
    );
}

fn assert_namespaced(json: &Value, what: &str) {
    assert!(
        json["metadata"]["namespace"]
            .as_str()
            .is_some_and(|n| !n.is_empty()),
        "{what}: metadata.namespace"
    );
}

/// The metric names documented in docs/reconcile.md.
fn documented_metrics() -> BTreeSet<String> {
    let text = std::fs::read_to_string(root().join("docs/reconcile.md")).unwrap();
    metric_names(&text)
}

fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("lifeboat_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

fn check_prometheus_rule(json: &Value, what: &str) {
    assert_namespaced(json, what);
    let known = documented_metrics();
    let groups = json["spec"]["groups"].as_array().expect("spec.groups");
    assert!(!groups.is_empty(), "{what}: no groups");
    let mut alerts = BTreeSet::new();
    for g in groups {
        assert!(
            g["name"].as_str().is_some_and(|n| !n.is_empty()),
            "{what}: group name"
        );
        for r in g["rules"].as_array().expect("rules") {
            let alert = r["alert"].as_str().expect("every rule is an alert");
            let expr = r["expr"].as_str().unwrap_or_default().trim();
            assert!(!expr.is_empty(), "{what}: {alert} has an empty expr");
            let balanced = |open: char, close: char| {
                expr.chars().try_fold(0i32, |depth, c| {
                    let d = depth + i32::from(c == open) - i32::from(c == close);
                    (d >= 0).then_some(d)
                }) == Some(0)
            };
            assert!(
                balanced('(', ')') && balanced('{', '}') && balanced('[', ']'),
                "{what}: {alert}: unbalanced brackets in {expr}"
            );
            for m in metric_names(expr) {
                assert!(
                    known.contains(&m),
                    "{what}: {alert} uses {m}, which the controller does not export \
                     (docs/reconcile.md lists {known:?})"
                );
            }
            if let Some(f) = r.get("for") {
                let f = f.as_str().unwrap_or_default();
                assert!(
                    f.len() > 1 && f.ends_with(['s', 'm', 'h']),
                    "{what}: {alert}: for {f:?}"
                );
            }
            assert!(alerts.insert(alert.to_string()), "{what}: {alert} twice");
        }
    }
    for expr in [
        "lifeboat_rpo_violated == 1",
        "increase(lifeboat_backups_total{result=\"failure\"}[6h]) > 0",
        "lifeboat_policy_revision_info{valid=\"false\"} == 1",
        "absent(up{job=~\".*lifeboat.*\"} == 1)",
        "max(lifeboat_leader) < 1",
        "lifeboat_reconcile_errors_total",
    ] {
        assert!(
            groups
                .iter()
                .flat_map(|g| g["rules"].as_array().unwrap())
                .any(|r| r["expr"].as_str().unwrap_or_default().contains(expr)),
            "{what}: no alert on {expr}"
        );
    }
}

fn check_argo_application(json: &Value, what: &str) {
    assert_namespaced(json, what);
    let source = &json["spec"]["source"];
    let path = source["path"].as_str().unwrap_or_default();
    assert!(
        root().join(path).join("kustomization.yaml").is_file(),
        "{what}: spec.source.path {path} is not a kustomization in this repository"
    );
    assert!(
        source["repoURL"].as_str().is_some_and(|u| !u.is_empty()),
        "{what}: repoURL"
    );
    assert_ne!(
        source["targetRevision"], "lifeboat-status",
        "{what}: no Application may track the status branch"
    );
    assert_eq!(
        json["spec"]["destination"]["namespace"], NAMESPACE,
        "{what}"
    );
}

// ---------------------------------------------------------------------------
// The kustomize subset.

/// A kustomization directory rendered to its objects.
fn render(dir: &Path) -> Vec<Value> {
    let file = dir.join("kustomization.yaml");
    let docs = documents(&file);
    assert_eq!(docs.len(), 1, "{}", rel(&file));
    let k = to_json(&docs[0]);
    let what = rel(&file);
    let known = [
        "apiVersion",
        "kind",
        "resources",
        "components",
        "patches",
        "images",
    ];
    for key in k.as_object().unwrap().keys() {
        assert!(
            known.contains(&key.as_str()),
            "{what}: key `{key}` is outside the kustomize subset tests/deploy.rs renders"
        );
    }
    let list = |key: &str| -> Vec<Value> { k[key].as_array().cloned().unwrap_or_default() };
    let mut objects = Vec::new();
    for r in list("resources") {
        let p = dir.join(r.as_str().unwrap());
        assert!(
            p.exists(),
            "{what}: resource {} does not exist",
            p.display()
        );
        if p.is_dir() {
            assert!(
                p.join("kustomization.yaml").is_file(),
                "{what}: resource {} has no kustomization.yaml",
                p.display()
            );
            objects.extend(render(&p));
        } else {
            objects.extend(documents(&p).iter().map(to_json));
        }
    }
    for c in list("components") {
        let p = dir.join(c.as_str().unwrap());
        let component = p.join("kustomization.yaml");
        assert!(
            component.is_file(),
            "{what}: component {} does not exist",
            p.display()
        );
        let ck = to_json(&documents(&component)[0]);
        assert_eq!(ck["kind"], "Component", "{}", rel(&component));
        apply_component(&p, &ck, &mut objects);
    }
    apply_patches(dir, &k, &mut objects);
    for image in list("images") {
        let name = image["name"].as_str().unwrap();
        let tag = image["newTag"].as_str().unwrap();
        let mut used = false;
        for o in objects.iter_mut() {
            // pointer_mut, not IndexMut: indexing inserts missing keys.
            for c in o
                .pointer_mut("/spec/template/spec/containers")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                let current = c["image"].as_str().unwrap_or_default();
                if current.split(':').next() == Some(name) {
                    c["image"] = json!(format!("{name}:{tag}"));
                    used = true;
                }
            }
        }
        assert!(used, "{what}: image {name} is used by no container");
    }
    objects
}

/// A component's `resources` (files only), then its patches.
fn apply_component(dir: &Path, k: &Value, objects: &mut Vec<Value>) {
    let what = rel(&dir.join("kustomization.yaml"));
    for key in k.as_object().unwrap().keys() {
        assert!(
            ["apiVersion", "kind", "resources", "patches"].contains(&key.as_str()),
            "{what}: key `{key}` is outside the kustomize subset tests/deploy.rs renders"
        );
    }
    for r in k["resources"].as_array().into_iter().flatten() {
        let p = dir.join(r.as_str().unwrap());
        assert!(
            p.is_file(),
            "{what}: resource {} is not a file",
            p.display()
        );
        objects.extend(documents(&p).iter().map(to_json));
    }
    apply_patches(dir, k, objects);
}

fn same_object(a: &Value, b: &Value) -> bool {
    a["kind"] == b["kind"] && a["metadata"]["name"] == b["metadata"]["name"]
}

fn apply_patches(dir: &Path, k: &Value, objects: &mut Vec<Value>) {
    let what = rel(&dir.join("kustomization.yaml"));
    for p in k["patches"].as_array().into_iter().flatten() {
        let (docs, source) = match (p["path"].as_str(), p["patch"].as_str()) {
            (Some(path), None) => {
                let file = dir.join(path);
                assert!(
                    file.is_file(),
                    "{what}: patch {} does not exist",
                    file.display()
                );
                (documents(&file), rel(&file))
            }
            (None, Some(text)) => (documents_of(text, &what), format!("{what} (inline)")),
            _ => panic!("{what}: a patch needs exactly one of path and patch"),
        };
        assert_eq!(docs.len(), 1, "{source}: one patch per entry");
        let patch = to_json(&docs[0]);
        if patch.is_array() {
            // JSON 6902: needs a target.
            let t = &p["target"];
            let target = objects
                .iter_mut()
                .find(|o| {
                    o["kind"] == t["kind"]
                        && o["metadata"]["name"] == t["name"]
                        && o["apiVersion"]
                            == json!(format!(
                                "{}/{}",
                                t["group"].as_str().unwrap(),
                                t["version"].as_str().unwrap()
                            ))
                })
                .unwrap_or_else(|| panic!("{source}: target {t} is not in the resources"));
            let ops: json_patch::Patch = serde_json::from_value(patch)
                .unwrap_or_else(|e| panic!("{source}: not a JSON patch: {e}"));
            json_patch::patch(target, &ops).unwrap_or_else(|e| panic!("{source}: {e}"));
        } else if patch["$patch"] == "delete" {
            let before = objects.len();
            objects.retain(|o| !same_object(o, &patch));
            assert_eq!(
                before - 1,
                objects.len(),
                "{source}: deletes {} {}, which is not in the resources",
                patch["kind"],
                patch["metadata"]["name"]
            );
        } else {
            // A strategic merge patch; ours only merge maps (ConfigMap data).
            let target = objects
                .iter_mut()
                .find(|o| same_object(o, &patch))
                .unwrap_or_else(|| panic!("{source}: patches an object not in the resources"));
            merge_maps(target, &patch, &source);
        }
    }
}

fn merge_maps(target: &mut Value, patch: &Value, source: &str) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                match t.get_mut(k) {
                    Some(tv) if tv.is_object() => merge_maps(tv, v, source),
                    Some(tv) => {
                        assert!(
                            !v.is_array(),
                            "{source}: list patches are outside the subset"
                        );
                        *tv = v.clone();
                    }
                    None => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        _ => panic!("{source}: patch shape differs from its target"),
    }
}

/// The kustomizations to render: every kustomize configuration that is not
/// a component, and each component applied over the base.
fn renderings() -> Vec<(String, Vec<Value>)> {
    let mut out = Vec::new();
    for file in yaml_files(&deploy()) {
        if file.file_name().unwrap() != "kustomization.yaml" {
            continue;
        }
        let doc = to_json(&documents(&file)[0]);
        if !is_kustomize_config(&doc) {
            continue;
        }
        let dir = file.parent().unwrap();
        if doc["kind"] == "Component" {
            let mut objects = render(&deploy().join("base"));
            apply_component(dir, &doc, &mut objects);
            out.push((format!("base + {}", rel(dir)), objects));
        } else {
            out.push((rel(dir), render(dir)));
        }
    }
    out
}

// ---------------------------------------------------------------------------
// 1. Documents

#[test]
fn every_manifest_parses_as_its_kubernetes_type_and_kustomizations_name_existing_files() {
    let files = yaml_files(&deploy());
    assert!(files.len() >= 10, "{files:?}");
    let mut kinds = BTreeSet::new();
    for file in &files {
        let what = rel(file);
        let docs = documents(file);
        assert!(!docs.is_empty(), "{what}: no documents");
        let first = to_json(&docs[0]);
        if file.file_name().unwrap() == "kustomization.yaml" && is_kustomize_config(&first) {
            // Checked by rendering below (every file it names must exist).
            continue;
        }
        if first.is_array() {
            // A JSON 6902 patch: must be named by a kustomization with a
            // target (applied when rendering below).
            let name = file.file_name().unwrap().to_str().unwrap();
            let k = file.parent().unwrap().join("kustomization.yaml");
            let text = std::fs::read_to_string(&k).unwrap_or_default();
            assert!(
                text.contains(&format!("path: {name}")) && text.contains("target:"),
                "{what}: a JSON patch no kustomization applies"
            );
            for op in first.as_array().unwrap() {
                let o = op["op"].as_str().unwrap_or_default();
                assert!(
                    ["add", "remove", "replace", "move", "copy", "test"].contains(&o),
                    "{what}: op {o:?}"
                );
                assert!(
                    op["path"].as_str().is_some_and(|p| p.starts_with('/')),
                    "{what}"
                );
            }
            continue;
        }
        for doc in &docs {
            check_object(doc, &what);
            let json = to_json(doc);
            kinds.insert(format!("{} {}", json["apiVersion"], json["kind"]));
        }
    }
    println!("checked kinds: {kinds:?}");

    // Overlays and components render, and what they render parses too.
    let renderings = renderings();
    let names: Vec<&str> = renderings.iter().map(|(n, _)| n.as_str()).collect();
    for expected in [
        "deploy/base",
        "deploy/overlays/production",
        "deploy/overlays/backup-only",
        "base + deploy/components/git-ssh",
        "base + deploy/components/filesystem-backup",
        "base + deploy/components/openshift-movers",
        "base + deploy/components/openshift-filesystem-movers",
        "base + deploy/components/openshift-images",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} not rendered: {names:?}"
        );
    }
    for (name, objects) in &renderings {
        for o in objects {
            let yaml: serde_yaml_ng::Value = serde_yaml_ng::to_value(o).unwrap();
            check_object(&yaml, name);
        }
        check_wiring(name, objects);
    }
}

/// Names inside the rendered objects that must agree with each other.
fn check_wiring(name: &str, objects: &[Value]) {
    let find = |kind: &str, n: &str| {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == n)
            .unwrap_or_else(|| panic!("{name}: no {kind} {n}"))
    };
    let deployment = find("Deployment", "lifeboat-controller");
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (kind, selector) in [
        ("Deployment", &deployment["spec"]["selector"]["matchLabels"]),
        (
            "Service",
            &find("Service", "lifeboat-controller")["spec"]["selector"],
        ),
        (
            "PodDisruptionBudget",
            &find("PodDisruptionBudget", "lifeboat-controller")["spec"]["selector"]["matchLabels"],
        ),
        (
            "NetworkPolicy",
            &find("NetworkPolicy", "lifeboat-controller")["spec"]["podSelector"]["matchLabels"],
        ),
    ] {
        for (k, v) in selector.as_object().unwrap() {
            assert_eq!(
                &pod_labels[k], v,
                "{name}: the {kind} selector misses the pods"
            );
        }
    }
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], SERVICE_ACCOUNT, "{name}");
    find("ServiceAccount", SERVICE_ACCOUNT);
    let config = find("ConfigMap", "lifeboat-config");
    let container = &pod["containers"][0];
    let mounts: Vec<&str> = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    for env in container["env"].as_array().unwrap() {
        if let Some(r) = env["valueFrom"]["configMapKeyRef"].as_object() {
            assert_eq!(r["name"], "lifeboat-config", "{name}");
            let key = r["key"].as_str().unwrap();
            assert!(
                config["data"][key].is_string(),
                "{name}: ConfigMap lifeboat-config has no {key}"
            );
        }
        let (n, v) = (env["name"].as_str().unwrap(), env["value"].as_str());
        if n.ends_with("_FILE")
            || n.ends_with("_KEY")
            || n.ends_with("_HOSTS")
            || n.ends_with("_DIR")
        {
            let v = v.unwrap_or_else(|| panic!("{name}: {n} has no value"));
            assert!(
                mounts.iter().any(|m| v.starts_with(m)),
                "{name}: {n}={v} is on no mounted volume ({mounts:?})"
            );
        }
    }
    assert_eq!(container["ports"][0]["name"], "http", "{name}");
    assert_eq!(container["ports"][0]["containerPort"], 8080, "{name}");
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"], "/healthz",
        "{name}"
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"], "/readyz",
        "{name}"
    );
    let sc = &container["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
    assert_eq!(sc["runAsNonRoot"], true, "{name}");
    assert_eq!(sc["runAsUser"], 65532, "{name}");
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{name}");
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{name}");
    // Bindings name roles that exist and this ServiceAccount.
    for o in objects {
        let kind = o["kind"].as_str().unwrap();
        if kind == "RoleBinding" || kind == "ClusterRoleBinding" {
            let role = &o["roleRef"];
            find(
                role["kind"].as_str().unwrap(),
                role["name"].as_str().unwrap(),
            );
            assert_eq!(
                o["subjects"],
                json!([{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}]),
                "{name}: {kind} {}",
                o["metadata"]["name"]
            );
        }
        if let Some(ns) = o["metadata"]["namespace"].as_str() {
            assert!(
                ns == NAMESPACE || ns == MOVERS_NAMESPACE,
                "{name}: {kind} {} in namespace {ns}",
                o["metadata"]["name"]
            );
        }
    }
    // Movers: their namespace admits them (baseline, or privileged for
    // fileSystem movers' hostPath), their ServiceAccount has no token.
    let movers = find("Namespace", MOVERS_NAMESPACE);
    let level = &movers["metadata"]["labels"]["pod-security.kubernetes.io/enforce"];
    let expected = if name.ends_with("components/filesystem-backup") {
        "privileged"
    } else {
        "baseline"
    };
    assert_eq!(
        level, expected,
        "{name}: Pod Security of {MOVERS_NAMESPACE}"
    );
    let mover = find("ServiceAccount", "lifeboat-mover");
    assert_eq!(mover["metadata"]["namespace"], MOVERS_NAMESPACE, "{name}");
    assert_eq!(mover["automountServiceAccountToken"], false, "{name}");
}

// ---------------------------------------------------------------------------
// 2. RBAC

/// One rule, from the role it came from; `namespace` is `None` for a
/// ClusterRole bound cluster-wide.
#[derive(Debug, Clone)]
struct Grant {
    role: String,
    namespace: Option<String>,
    rule: PolicyRule,
}

/// The rules the rendered objects grant the controller's ServiceAccount.
fn grants(objects: &[Value]) -> Vec<Grant> {
    let subject_is_us = |b: &Value| {
        b["subjects"].as_array().into_iter().flatten().any(|s| {
            s["kind"] == "ServiceAccount"
                && s["name"] == SERVICE_ACCOUNT
                && s["namespace"] == NAMESPACE
        })
    };
    let rules_of = |kind: &str, name: &str, namespace: Option<&str>| -> Vec<PolicyRule> {
        objects
            .iter()
            .find(|o| {
                o["kind"] == kind
                    && o["metadata"]["name"] == name
                    && o["metadata"]["namespace"].as_str() == namespace
            })
            .map(|o| serde_json::from_value::<Vec<PolicyRule>>(o["rules"].clone()).unwrap())
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for b in objects.iter().filter(|b| subject_is_us(b)) {
        let role = b["roleRef"]["name"].as_str().unwrap();
        let role_kind = b["roleRef"]["kind"].as_str().unwrap();
        match b["kind"].as_str().unwrap() {
            "ClusterRoleBinding" => {
                for rule in rules_of("ClusterRole", role, None) {
                    out.push(Grant {
                        role: role.into(),
                        namespace: None,
                        rule,
                    });
                }
            }
            "RoleBinding" => {
                let ns = b["metadata"]["namespace"].as_str().unwrap();
                let rules = if role_kind == "Role" {
                    rules_of("Role", role, Some(ns))
                } else {
                    rules_of("ClusterRole", role, None)
                };
                for rule in rules {
                    out.push(Grant {
                        role: role.into(),
                        namespace: Some(ns.into()),
                        rule,
                    });
                }
            }
            _ => {}
        }
    }
    out
}

/// A request as the authorizer sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Attrs {
    verb: String,
    group: String,
    /// `resource` or `resource/subresource`; empty for non-resource URLs.
    resource: String,
    namespace: String,
    name: String,
    path: String,
}

impl Attrs {
    fn from(r: &RequestRecord) -> Attrs {
        let resource = if r.subresource.is_empty() {
            r.resource.clone()
        } else {
            format!("{}/{}", r.resource, r.subresource)
        };
        Attrs {
            verb: r.verb.clone(),
            group: r.group.clone(),
            resource,
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            path: r.path.clone(),
        }
    }

    /// Discovery: `get` on /api, /apis and their group/version documents and
    /// /version, which the `system:discovery` ClusterRole grants every
    /// authenticated user.
    fn is_discovery(&self) -> bool {
        let segs: Vec<&str> = self.path.trim_matches('/').split('/').collect();
        self.resource.is_empty()
            && self.verb == "get"
            && matches!(
                segs.as_slice(),
                ["version"] | ["api"] | ["api", _] | ["apis"] | ["apis", _] | ["apis", _, _]
            )
    }

    fn key(&self) -> String {
        if self.resource.is_empty() {
            return format!("({}, nonResourceURL {})", self.verb, self.path);
        }
        let scope = if self.namespace.is_empty() {
            "cluster".to_string()
        } else {
            format!("ns {}", self.namespace)
        };
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        format!("({}, {}, {}) {scope}", self.verb, group, self.resource)
    }
}

fn matches(rule: &PolicyRule, a: &Attrs) -> bool {
    let has = |list: &Option<Vec<String>>, v: &str| {
        list.as_ref()
            .is_some_and(|l| l.iter().any(|x| x == "*" || x == v))
    };
    if a.resource.is_empty() {
        return false; // our roles grant no non-resource URLs
    }
    has(&Some(rule.verbs.clone()), &a.verb)
        && has(&rule.api_groups, &a.group)
        && has(&rule.resources, &a.resource)
        && match &rule.resource_names {
            Some(names) if !names.is_empty() => !a.name.is_empty() && names.contains(&a.name),
            _ => true,
        }
}

fn granted_by<'g>(grants: &'g [Grant], a: &Attrs) -> Vec<&'g Grant> {
    grants
        .iter()
        .filter(|g| match &g.namespace {
            None => true,
            Some(ns) => *ns == a.namespace,
        })
        .filter(|g| matches(&g.rule, a))
        .collect()
}

/// Requests no grant in `grants` allows (discovery aside).
fn denied(grants: &[Grant], requests: &[Attrs]) -> BTreeSet<String> {
    requests
        .iter()
        .filter(|a| !a.is_discovery() && granted_by(grants, a).is_empty())
        .map(Attrs::key)
        .collect()
}

fn observed(requests: &[Attrs]) -> BTreeSet<String> {
    requests.iter().map(Attrs::key).collect()
}

fn lifeboat(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .args(args)
        .current_dir(root())
        .env("NO_COLOR", "1")
        .output()
        .expect("lifeboat runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const RECIPIENT: &str = "age1268crxs6ntgpzr3y2auy80yrejxsfmps549ul66ch93t0p5wr9aqyxanhq";
const IDENTITY: &str = "AGE-SECRET-KEY-1NUHTD5JXP04HTK00P4CPJCXE9YWJ34TKAX3DSQG7YACT4JHKZZQS9PFD7G";

/// A policy repository backing up every namespace of tests/fixtures/apps
/// (and the cluster objects they use), encrypted, with the identity in a
/// Secret the controller reads.
fn policies(storage: &Path) -> String {
    format!(
        "apiVersion: lifeboat.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: prod}}\nspec: {{role: primary}}\n---\n\
         apiVersion: lifeboat.dev/v1alpha1\nkind: StorageLocation\nmetadata: {{name: local}}\nspec:\n  url: file://{}\n  \
         encryption:\n    recipients: [{RECIPIENT}]\n    identitySecretRef: {{name: lifeboat-age, key: identity.txt}}\n---\n\
         apiVersion: lifeboat.dev/v1alpha1\nkind: BackupPolicy\nmetadata: {{name: apps}}\nspec:\n  clusters: {{names: [prod]}}\n  \
         include: {{namespaces: [wordpress, ledger, widgets]}}\n  schedule: '0 * * * *'\n  timezone: UTC\n  \
         retention: {{keepLast: 5}}\n  storage: local\n",
        storage.display()
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    Some((
        status,
        out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string(),
    ))
}

/// Takes the request log since the last call (and clears it).
fn take(sb: &Sandbox) -> Vec<Attrs> {
    let log = sb.requests();
    sb.clear_requests();
    log.iter().map(Attrs::from).collect()
}

#[test]
fn rbac_grants_what_backup_restore_and_the_controller_use_and_no_more() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sb = rt
        .block_on(
            Sandbox::builder()
                .nodes(2)
                .image_binary(
                    "ghcr.io/lifeboat-dev/lifeboat",
                    env!("CARGO_BIN_EXE_lifeboat"),
                )
                .snapshot_delay(Duration::from_millis(20))
                .seed_dir(root().join("tests/fixtures/apps"))
                .seed_objects([
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
                    // As deploy/ creates it (Pod Security baseline).
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": MOVERS_NAMESPACE,
                           "labels": {"pod-security.kubernetes.io/enforce": "baseline"}}}),
                    json!({"apiVersion": "v1", "kind": "Secret",
                           "metadata": {"name": "lifeboat-age", "namespace": NAMESPACE},
                           "stringData": {"identity.txt": IDENTITY}}),
                ])
                .start(),
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (repo, storage) = (dir.path().join("policies"), dir.path().join("storage"));
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::create_dir_all(&storage).unwrap();
    std::fs::write(repo.join("lifeboat.yaml"), policies(&storage)).unwrap();
    let identity = dir.path().join("identity.txt");
    std::fs::write(&identity, format!("{IDENTITY}\n")).unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sb.write_kubeconfig(&kubeconfig).unwrap();
    let (r, k, id) = (
        repo.to_str().unwrap(),
        kubeconfig.to_str().unwrap(),
        identity.to_str().unwrap(),
    );
    sb.clear_requests();

    // Backup of the fixtures' objects and their claims' data
    // (snapshotMove: VolumeSnapshots, their contents, claims, Secrets and
    // mover pods in lifeboat-movers).
    let (code, out, err) =
        lifeboat(&["backup", "--repo", r, "--policy", "apps", "--kubeconfig", k]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("Completed") && !out.contains(" 0 of "),
        "the backup moved no volume data: {out}{err}"
    );
    let backup = out.split_whitespace().next().unwrap().to_string();
    let backup_requests = take(&sb);

    // Change a cluster object the backup holds, so that restoring with
    // `--existing update` patches it (and reads it first).
    rt.block_on(async {
        use kube::api::{Patch, PatchParams};
        let api: kube::Api<k8s_openapi::api::rbac::v1::ClusterRole> = kube::Api::all(sb.client());
        api.patch(
            "widget-operator",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}),
            ),
        )
        .await
        .unwrap();
    });
    sb.clear_requests();

    // A dry run, then the restore into fresh namespaces.
    let restore = |extra: &[&str]| {
        let mut args = vec![
            "restore",
            "--repo",
            r,
            "--from",
            &backup,
            "--kubeconfig",
            k,
            "--identity",
            id,
            "--namespace-mapping",
            "wordpress=wordpress-copy",
            "--namespace-mapping",
            "ledger=ledger-copy",
            "--namespace-mapping",
            "widgets=widgets-copy",
            "--existing",
            "update",
            "--format",
            "json",
        ];
        args.extend_from_slice(extra);
        let (code, out, err) = lifeboat(&args);
        assert_eq!(code, 0, "restore {extra:?}: {out}{err}");
        let record: Value = serde_json::from_str(&out).unwrap();
        assert!(record["counts"]["created"].as_u64().unwrap() >= 10, "{out}");
        record
    };
    restore(&["--dry-run"]);
    let record = restore(&[]);
    assert!(
        record["counts"]["updated"].as_u64().unwrap() >= 1,
        "{record}"
    );
    let restore_requests = take(&sb);

    // The controller: leader election, reading the identity Secret named by
    // the StorageLocation, a cycle, and the Lease released on SIGTERM.
    git(
        dir.path(),
        &["init", "-q", "--bare", "-b", "main", "remote.git"],
    );
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "policies"]);
    let remote = format!("file://{}", dir.path().join("remote.git").display());
    git(&repo, &["push", "-q", &remote, "main"]);
    sb.clear_requests();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let cache = dir.path().join("cache");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .args([
            "controller",
            "--leader-election",
            "--lease-namespace",
            NAMESPACE,
            "--pod-name",
            "lifeboat-controller-0",
            "--secrets-namespace",
            NAMESPACE,
            "--repo",
            &remote,
            "--cluster",
            "prod",
            "--kubeconfig",
            k,
            "--cache-dir",
            cache.to_str().unwrap(),
            "--listen",
            &listen,
            "--interval",
            "1h",
            // As for the backup above: volume data needs grants deploy/
            // does not give yet.
            "--no-volume-data",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut metrics = String::new();
    while started.elapsed() < Duration::from_secs(60) {
        if let Some((200, body)) = http_get(port, "/metrics")
            && body.contains("lifeboat_leader 1")
            && body.lines().any(|l| {
                l.strip_prefix("lifeboat_reconcile_duration_seconds_count{result=\"success\"} ")
                    .and_then(|n| n.trim().parse::<f64>().ok())
                    .is_some_and(|n| n >= 1.0)
            })
        {
            metrics = body;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut logs).unwrap();
    assert!(
        !metrics.is_empty(),
        "the controller never led and finished a cycle:\n{logs}"
    );
    assert!(status.success(), "{status:?}\n{logs}");
    let controller_requests = take(&sb);

    let all: Vec<Attrs> = [&backup_requests, &restore_requests, &controller_requests]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    let report = format!(
        "observed (verb, group, resource):\n  backup:     {:?}\n  restore:    {:?}\n  controller: {:?}",
        observed(&backup_requests),
        observed(&restore_requests),
        observed(&controller_requests)
    );
    println!("{report}");

    // The controller did what this test is about.
    let lease = |verb: &str| {
        controller_requests
            .iter()
            .any(|a| a.verb == verb && a.resource == "leases" && a.namespace == NAMESPACE)
    };
    assert!(
        lease("create") && lease("get") && lease("patch"),
        "{report}"
    );
    assert!(
        controller_requests.iter().any(|a| a.verb == "get"
            && a.resource == "secrets"
            && a.namespace == NAMESPACE
            && a.name == "lifeboat-age"),
        "the controller did not read the identity Secret: {report}"
    );

    let base = render(&deploy().join("base"));
    let all_grants = grants(&base);
    let of = |role: &str| -> Vec<Grant> {
        all_grants
            .iter()
            .filter(|g| g.role == role)
            .cloned()
            .collect()
    };
    let (backup_role, restore_role) = (of("lifeboat-backup"), of("lifeboat-restore"));
    let (lease_role, secrets_role) = (of("lifeboat-leader-election"), of("lifeboat-secrets"));
    let (movers_role, snapshots_role) = (of("lifeboat-movers"), of("lifeboat-volume-snapshots"));
    let volume_roles = [movers_role.clone(), snapshots_role.clone()].concat();
    assert!(
        !backup_role.is_empty()
            && !restore_role.is_empty()
            && !lease_role.is_empty()
            && !secrets_role.is_empty()
            && !movers_role.is_empty()
            && !snapshots_role.is_empty(),
        "a role is missing or unbound: {all_grants:#?}"
    );
    assert!(
        movers_role
            .iter()
            .all(|g| g.namespace.as_deref() == Some(MOVERS_NAMESPACE)),
        "lifeboat-movers grants outside {MOVERS_NAMESPACE}: {movers_role:#?}"
    );
    // Volume data was moved both ways, so the volume roles were exercised.
    for (verb, resource, requests) in [
        ("create", "volumesnapshots", &backup_requests),
        ("create", "pods", &backup_requests),
        ("create", "pods", &restore_requests),
    ] {
        assert!(
            requests
                .iter()
                .any(|a| a.verb == verb && a.resource == resource),
            "no {verb} {resource}: {}",
            observed(requests)
                .into_iter()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let volume_request = |a: &Attrs| !granted_by(&volume_roles, a).is_empty();

    // Everything is granted by the union, and each job by its own roles.
    let denied_all = denied(&all_grants, &all);
    assert!(
        denied_all.is_empty(),
        "not granted: {denied_all:?}\n{report}"
    );
    let d = denied(
        &[backup_role.clone(), volume_roles.clone()].concat(),
        &backup_requests,
    );
    assert!(
        d.is_empty(),
        "backup needs more than lifeboat-backup + the volume roles: {d:?}\n{report}"
    );
    let d = denied(
        &[
            backup_role.clone(),
            restore_role.clone(),
            volume_roles.clone(),
        ]
        .concat(),
        &restore_requests,
    );
    assert!(
        d.is_empty(),
        "restore needs more than backup + restore + volume roles: {d:?}\n{report}"
    );
    let d = denied(
        &[
            backup_role.clone(),
            lease_role.clone(),
            secrets_role.clone(),
        ]
        .concat(),
        &controller_requests,
    );
    assert!(
        d.is_empty(),
        "the controller needs more than its roles: {d:?}\n{report}"
    );

    // The backup-only overlay still lets backups and the controller work
    // and denies every restore write.
    let backup_only = grants(&render(&deploy().join("overlays/backup-only")));
    let d = denied(
        &backup_only,
        &[backup_requests.clone(), controller_requests.clone()].concat(),
    );
    assert!(d.is_empty(), "backup-only denies {d:?}\n{report}");
    // (Movers' objects aside: backups create the same ones.)
    let writes: Vec<Attrs> = restore_requests
        .iter()
        .filter(|a| (a.verb == "create" || a.verb == "patch") && !volume_request(a))
        .cloned()
        .collect();
    assert!(!writes.is_empty());
    assert_eq!(
        denied(&backup_only, &writes).len(),
        observed(&writes).len(),
        "backup-only still allows restore writes\n{report}"
    );

    // No rule of the restore and Lease roles goes unused. `bind` and
    // `escalate` are not request verbs: the API server checks them when a
    // restored Role/ClusterRole(Binding) grants more than lifeboat holds.
    let unused = |role: &[Grant], requests: &[Attrs]| -> Vec<String> {
        let mut out = Vec::new();
        for g in role {
            for verb in &g.rule.verbs {
                if ["bind", "escalate"].contains(&verb.as_str())
                    && g.rule.api_groups == Some(vec!["rbac.authorization.k8s.io".into()])
                {
                    continue;
                }
                let mut rule = g.rule.clone();
                rule.verbs = vec![verb.clone()];
                let used = requests.iter().any(|a| {
                    matches(&rule, a) && g.namespace.as_ref().is_none_or(|ns| *ns == a.namespace)
                });
                if !used {
                    out.push(format!(
                        "{}: {verb} {:?} {:?}",
                        g.role, rule.api_groups, rule.resources
                    ));
                }
            }
        }
        out
    };
    let u = unused(&restore_role, &restore_requests);
    assert!(u.is_empty(), "unused restore rules: {u:?}\n{report}");
    let u = unused(&lease_role, &controller_requests);
    assert!(u.is_empty(), "unused Lease rules: {u:?}\n{report}");
    let u = unused(&secrets_role, &controller_requests);
    assert!(u.is_empty(), "unused Secret rules: {u:?}\n{report}");
    let volume_requests = [backup_requests.clone(), restore_requests.clone()].concat();
    let u = unused(&volume_roles, &volume_requests);
    assert!(u.is_empty(), "unused volume rules: {u:?}\n{report}");
    // The backup role's wildcard rule: exactly the verbs backups use
    // (volume data's writes are the volume roles').
    let backup_verbs: BTreeSet<&str> = backup_requests
        .iter()
        .filter(|a| !a.is_discovery() && !volume_request(a))
        .map(|a| a.verb.as_str())
        .collect();
    for g in &backup_role {
        let verbs: BTreeSet<&str> = g.rule.verbs.iter().map(String::as_str).collect();
        if g.rule.resources == Some(vec!["pods/exec".to_string()]) {
            // Hooks (tests/cli/hooks.rs): kube opens exec over a WebSocket,
            // a `get` that API servers since 1.30 also authorize as `create`.
            assert_eq!(
                verbs,
                BTreeSet::from(["create", "get"]),
                "pods/exec\n{report}"
            );
            continue;
        }
        if g.rule.resources == Some(vec!["jobs".to_string()]) {
            // Backup-level Job hooks (tests/cli/backup_hooks.rs): created,
            // read (the wildcard rule) and deleted once they ended.
            assert_eq!(
                verbs,
                BTreeSet::from(["create", "delete"]),
                "jobs\n{report}"
            );
            continue;
        }
        assert_eq!(verbs, backup_verbs, "lifeboat-backup verbs\n{report}");
    }
    drop(sb);
}

// ---------------------------------------------------------------------------
// 3. Flags and environment

#[test]
fn the_deployment_passes_only_documented_controller_options() {
    let (code, help, err) = lifeboat(&["controller", "--help"]);
    assert_eq!(code, 0, "{err}");
    // Wrapped help: one space for every run of whitespace.
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    let words: BTreeSet<&str> = help
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .filter(|w| !w.is_empty())
        .collect();
    let env_vars: BTreeSet<String> = help
        .match_indices("[env: ")
        .map(|(i, m)| {
            help[i + m.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect();
    for (name, objects) in renderings() {
        for d in objects.iter().filter(|o| o["kind"] == "Deployment") {
            for c in d["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
            {
                let args: Vec<&str> = c["args"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap())
                    .collect();
                assert_eq!(args.first(), Some(&"controller"), "{name}: {args:?}");
                assert!(args.contains(&"--leader-election"), "{name}: {args:?}");
                for a in args.iter().filter(|a| a.starts_with("--")) {
                    let flag = a.split('=').next().unwrap();
                    assert!(
                        words.contains(flag),
                        "{name}: {flag} is not an option of `lifeboat controller`:\n{help}"
                    );
                }
                let envs: Vec<&str> = c["env"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["name"].as_str().unwrap())
                    .collect();
                for e in envs
                    .iter()
                    .filter(|e| e.starts_with("LIFEBOAT_") || e.starts_with("POD_"))
                {
                    assert!(
                        env_vars.contains(*e),
                        "{name}: {e} is read by no option of `lifeboat controller` \
                         (it reads {env_vars:?})"
                    );
                }
                for required in [
                    "LIFEBOAT_REPO",
                    "LIFEBOAT_CLUSTER",
                    "LIFEBOAT_BRANCH",
                    "LIFEBOAT_INTERVAL",
                    "LIFEBOAT_SECRETS_NAMESPACE",
                    "POD_NAME",
                    "POD_NAMESPACE",
                    "LIFEBOAT_LOG_FORMAT",
                    "LIFEBOAT_CACHE_DIR",
                    "LIFEBOAT_WEBHOOK_SECRET_FILE",
                ] {
                    assert!(envs.contains(&required), "{name}: {required} not set");
                }
                assert!(
                    envs.contains(&"LIFEBOAT_GIT_TOKEN_FILE")
                        || envs.contains(&"LIFEBOAT_GIT_SSH_KEY"),
                    "{name}: no Git credentials"
                );
            }
        }
    }
}
