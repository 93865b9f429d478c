//! The resource registry: every group/version/resource the sandbox serves,
//! built-in or defined by a CustomResourceDefinition.
//!
//! Discovery documents are rendered from it, request paths are resolved
//! against it, and seeding maps `apiVersion`/`kind` to a resource through it.
//! Built-in resources come from one table ([`BUILTIN`]); a CRD adds an entry
//! when it is created and removes it when it is deleted.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

/// How `metadata.name` is validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// RFC 1123 subdomain (most resources).
    Subdomain,
    /// RFC 1123 label (namespaces, services).
    Label,
    /// Any path segment (RBAC roles and bindings).
    PathSegment,
}

/// One served resource.
#[derive(Debug, Clone)]
pub struct ResourceInfo {
    /// API group, empty for core.
    pub group: String,
    /// Served versions, preferred first.
    pub versions: Vec<String>,
    /// Plural name used in paths.
    pub resource: String,
    /// Singular name.
    pub singular: String,
    /// Kind.
    pub kind: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Short names (`cm`, `deploy`).
    pub short_names: Vec<String>,
    /// Verbs on the main resource.
    pub verbs: Vec<String>,
    /// Subresources (`status`, `exec`, `scale` …).
    pub subresources: Vec<String>,
    /// Categories (`all`).
    pub categories: Vec<String>,
    /// Name validation.
    pub name_rule: NameRule,
    /// Defined by a CRD.
    pub custom: bool,
}

/// Store key of a resource: (group, plural). Objects are stored once,
/// whatever version they are read through.
pub type ResKey = (String, String);

impl ResourceInfo {
    /// The store key.
    pub fn key(&self) -> ResKey {
        (self.group.clone(), self.resource.clone())
    }

    /// Has a `status` subresource.
    pub fn has_status(&self) -> bool {
        self.subresources.iter().any(|s| s == "status")
    }

    /// `apiVersion` for a version.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// The preferred version.
    pub fn preferred(&self) -> &str {
        &self.versions[0]
    }

    /// The `APIResource` entries (main resource then subresources) for discovery.
    pub fn discovery_entries(&self) -> Vec<Value> {
        let mut out = vec![json!({
            "name": self.resource,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": self.verbs,
            "shortNames": self.short_names,
            "categories": self.categories,
            "storageVersionHash": format!("{:x}", fxhash(&format!("{}/{}", self.group, self.kind))),
        })];
        if self.short_names.is_empty() {
            out[0].as_object_mut().map(|o| o.remove("shortNames"));
        }
        if self.categories.is_empty() {
            out[0].as_object_mut().map(|o| o.remove("categories"));
        }
        for sub in &self.subresources {
            let (kind, verbs, group, version): (&str, &[&str], Option<&str>, Option<&str>) =
                match sub.as_str() {
                    "status" => (&self.kind, &["get", "patch", "update"], None, None),
                    "scale" => (
                        "Scale",
                        &["get", "patch", "update"],
                        Some("autoscaling"),
                        Some("v1"),
                    ),
                    "exec" => ("PodExecOptions", &["create", "get"], None, None),
                    "attach" => ("PodAttachOptions", &["create", "get"], None, None),
                    "portforward" => ("PodPortForwardOptions", &["create", "get"], None, None),
                    "log" => ("Pod", &["get"], None, None),
                    "eviction" => ("Eviction", &["create"], Some("policy"), Some("v1")),
                    "binding" => ("Binding", &["create"], None, None),
                    "ephemeralcontainers" => ("Pod", &["get", "patch", "update"], None, None),
                    "token" => (
                        "TokenRequest",
                        &["create"],
                        Some("authentication.k8s.io"),
                        Some("v1"),
                    ),
                    "finalize" => ("Namespace", &["update"], None, None),
                    "proxy" => (
                        "NodeProxyOptions",
                        &["create", "delete", "get", "patch", "update"],
                        None,
                        None,
                    ),
                    _ => (&self.kind, &["get"], None, None),
                };
            let mut e = json!({
                "name": format!("{}/{sub}", self.resource),
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": kind,
                "verbs": verbs,
            });
            if let (Some(g), Some(v)) = (group, version) {
                e["group"] = json!(g);
                e["version"] = json!(v);
            }
            out.push(e);
        }
        out
    }
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

const ALL: &str = "create,delete,deletecollection,get,list,patch,update,watch";

/// Built-in resources: `group/version|plural|Kind|scope|shortNames|verbs|subresources|categories`.
/// `scope` is `n` (namespaced) or `c`; `verbs` empty means all eight.
pub const BUILTIN: &[&str] = &[
    "v1|configmaps|ConfigMap|n|cm|||",
    "v1|endpoints|Endpoints|n|ep|||",
    "v1|events|Event|n|ev|||",
    "v1|limitranges|LimitRange|n|limits|||",
    "v1|namespaces|Namespace|c|ns|create,delete,get,list,patch,update,watch|status,finalize|",
    "v1|nodes|Node|c|no||status,proxy|",
    "v1|persistentvolumeclaims|PersistentVolumeClaim|n|pvc||status|",
    "v1|persistentvolumes|PersistentVolume|c|pv||status|",
    "v1|pods|Pod|n|po||status,exec,log,attach,portforward,eviction,binding,ephemeralcontainers|all",
    "v1|podtemplates|PodTemplate|n||||",
    "v1|replicationcontrollers|ReplicationController|n|rc||status,scale|all",
    "v1|resourcequotas|ResourceQuota|n|quota||status|",
    "v1|secrets|Secret|n||||",
    "v1|serviceaccounts|ServiceAccount|n|sa||token|",
    "v1|services|Service|n|svc||status|all",
    "apps/v1|controllerrevisions|ControllerRevision|n||||",
    "apps/v1|daemonsets|DaemonSet|n|ds||status|all",
    "apps/v1|deployments|Deployment|n|deploy||status,scale|all",
    "apps/v1|replicasets|ReplicaSet|n|rs||status,scale|all",
    "apps/v1|statefulsets|StatefulSet|n|sts||status,scale|all",
    "batch/v1|cronjobs|CronJob|n|cj||status|all",
    "batch/v1|jobs|Job|n|||status|all",
    "rbac.authorization.k8s.io/v1|clusterrolebindings|ClusterRoleBinding|c||||",
    "rbac.authorization.k8s.io/v1|clusterroles|ClusterRole|c||||",
    "rbac.authorization.k8s.io/v1|rolebindings|RoleBinding|n||||",
    "rbac.authorization.k8s.io/v1|roles|Role|n||||",
    "networking.k8s.io/v1|ingressclasses|IngressClass|c||||",
    "networking.k8s.io/v1|ingresses|Ingress|n|ing||status|",
    "networking.k8s.io/v1|networkpolicies|NetworkPolicy|n|netpol|||",
    "policy/v1|poddisruptionbudgets|PodDisruptionBudget|n|pdb||status|",
    "storage.k8s.io/v1|csidrivers|CSIDriver|c||||",
    "storage.k8s.io/v1|csinodes|CSINode|c||||",
    "storage.k8s.io/v1|storageclasses|StorageClass|c|sc|||",
    "storage.k8s.io/v1|volumeattachments|VolumeAttachment|c|||status|",
    "coordination.k8s.io/v1|leases|Lease|n||||",
    "apiextensions.k8s.io/v1|customresourcedefinitions|CustomResourceDefinition|c|crd,crds||status|",
    "autoscaling/v2,v1|horizontalpodautoscalers|HorizontalPodAutoscaler|n|hpa||status|all",
    "snapshot.storage.k8s.io/v1|volumesnapshots|VolumeSnapshot|n|vs||status|",
    "snapshot.storage.k8s.io/v1|volumesnapshotcontents|VolumeSnapshotContent|c|vsc,vscs||status|",
    "snapshot.storage.k8s.io/v1|volumesnapshotclasses|VolumeSnapshotClass|c|vsclass,vsclasses|||",
];

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

fn parse_builtin(line: &str) -> ResourceInfo {
    let f: Vec<&str> = line.split('|').collect();
    let (group, versions) = match f[0].split_once('/') {
        Some((g, v)) => (g.to_string(), split_list(v)),
        None => (String::new(), split_list(f[0])),
    };
    let resource = f[1].to_string();
    let name_rule = match resource.as_str() {
        "namespaces" | "services" => NameRule::Label,
        _ if group == "rbac.authorization.k8s.io" => NameRule::PathSegment,
        _ => NameRule::Subdomain,
    };
    ResourceInfo {
        group,
        versions,
        singular: f[2].to_ascii_lowercase(),
        kind: f[2].to_string(),
        resource,
        namespaced: f[3] == "n",
        short_names: split_list(f[4]),
        verbs: split_list(if f[5].is_empty() { ALL } else { f[5] }),
        subresources: split_list(f[6]),
        categories: split_list(f[7]),
        name_rule,
        custom: false,
    }
}

/// Orders Kubernetes versions as discovery does: GA before beta before
/// alpha, higher numbers first, non-Kubernetes versions last by name.
pub fn version_priority(v: &str) -> (u8, i64, i64, String) {
    let parse = || -> Option<(u8, i64, i64)> {
        let rest = v.strip_prefix('v')?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let major: i64 = digits.parse().ok()?;
        let tail = &rest[digits.len()..];
        if tail.is_empty() {
            return Some((0, -major, 0));
        }
        for (prefix, class) in [("beta", 1u8), ("alpha", 2u8)] {
            if let Some(n) = tail.strip_prefix(prefix) {
                let minor: i64 = n.parse().ok()?;
                return Some((class, -major, -minor));
            }
        }
        None
    };
    match parse() {
        Some((c, a, b)) => (c, a, b, String::new()),
        None => (3, 0, 0, v.to_string()),
    }
}

/// All served resources.
#[derive(Debug, Clone)]
pub struct Registry {
    resources: BTreeMap<ResKey, Arc<ResourceInfo>>,
    /// Groups in discovery order (built-ins first, then CRD groups as added).
    groups: Vec<String>,
}

impl Registry {
    /// The built-in resources.
    pub fn builtin() -> Self {
        let mut r = Registry {
            resources: BTreeMap::new(),
            groups: Vec::new(),
        };
        for line in BUILTIN {
            r.insert(parse_builtin(line));
        }
        r
    }

    fn insert(&mut self, info: ResourceInfo) {
        if !self.groups.contains(&info.group) {
            self.groups.push(info.group.clone());
        }
        self.resources.insert(info.key(), Arc::new(info));
    }

    /// Resolves a request path's group/version/resource.
    pub fn get(&self, group: &str, version: &str, resource: &str) -> Option<Arc<ResourceInfo>> {
        let info = self
            .resources
            .get(&(group.to_string(), resource.to_string()))?;
        info.versions
            .iter()
            .any(|v| v == version)
            .then(|| info.clone())
    }

    /// By store key.
    pub fn by_key(&self, key: &ResKey) -> Option<Arc<ResourceInfo>> {
        self.resources.get(key).cloned()
    }

    /// Resolves `apiVersion` + `kind` (as in a manifest).
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<(Arc<ResourceInfo>, String)> {
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        self.resources
            .values()
            .find(|i| i.group == group && i.kind == kind && i.versions.iter().any(|v| v == version))
            .map(|i| (i.clone(), version.to_string()))
    }

    /// Groups with their versions (preferred first), in discovery order.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        self.groups
            .iter()
            .filter_map(|g| {
                let mut versions: Vec<String> = Vec::new();
                for i in self.resources.values().filter(|i| &i.group == g) {
                    for v in &i.versions {
                        if !versions.contains(v) {
                            versions.push(v.clone());
                        }
                    }
                }
                if versions.is_empty() {
                    return None;
                }
                versions.sort_by_key(|v| version_priority(v));
                Some((g.clone(), versions))
            })
            .collect()
    }

    /// Resources served in a group version.
    pub fn resources_in(&self, group: &str, version: &str) -> Vec<Arc<ResourceInfo>> {
        self.resources
            .values()
            .filter(|i| i.group == group && i.versions.iter().any(|v| v == version))
            .cloned()
            .collect()
    }

    /// Registers (or re-registers) the resource a CRD defines.
    pub fn add_crd(&mut self, crd: &Value) -> Result<Arc<ResourceInfo>, Vec<(String, String)>> {
        let info = crd_resource(crd)?;
        let arc = Arc::new(info.clone());
        self.insert(info);
        Ok(arc)
    }

    /// Unregisters a CRD's resource.
    pub fn remove(&mut self, key: &ResKey) -> Option<Arc<ResourceInfo>> {
        let removed = self.resources.remove(key);
        if let Some(r) = &removed
            && !self.resources.values().any(|i| i.group == r.group)
        {
            self.groups.retain(|g| g != &r.group);
        }
        removed
    }
}

/// Validates a CRD and derives the resource it defines.
pub fn crd_resource(crd: &Value) -> Result<ResourceInfo, Vec<(String, String)>> {
    let mut errs = Vec::new();
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default().to_string();
    let names = &spec["names"];
    let plural = names["plural"].as_str().unwrap_or_default().to_string();
    let kind = names["kind"].as_str().unwrap_or_default().to_string();
    let name = crd["metadata"]["name"].as_str().unwrap_or_default();
    if group.is_empty() {
        errs.push(("spec.group".into(), "Required value".into()));
    }
    if plural.is_empty() {
        errs.push(("spec.names.plural".into(), "Required value".into()));
    }
    if kind.is_empty() {
        errs.push(("spec.names.kind".into(), "Required value".into()));
    }
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        errs.push((
            "metadata.name".into(),
            format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let scope = spec["scope"].as_str().unwrap_or_default();
    if scope != "Namespaced" && scope != "Cluster" {
        errs.push((
            "spec.scope".into(),
            format!(
                "Unsupported value: \"{scope}\": supported values: \"Cluster\", \"Namespaced\""
            ),
        ));
    }
    let mut versions: Vec<String> = Vec::new();
    let mut status = false;
    let mut scale = false;
    for v in spec["versions"].as_array().into_iter().flatten() {
        if v["served"].as_bool().unwrap_or(false)
            && let Some(n) = v["name"].as_str()
        {
            versions.push(n.to_string());
        }
        status |= v["subresources"]["status"].is_object();
        scale |= v["subresources"]["scale"].is_object();
    }
    if spec["versions"].as_array().is_none_or(|v| v.is_empty()) {
        errs.push((
            "spec.versions".into(),
            "Required value: must have exactly one version marked as storage version".into(),
        ));
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    versions.sort_by_key(|v| version_priority(v));
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    let mut subresources = Vec::new();
    if status {
        subresources.push("status".to_string());
    }
    if scale {
        subresources.push("scale".to_string());
    }
    Ok(ResourceInfo {
        group,
        versions,
        singular: names["singular"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| kind.to_ascii_lowercase()),
        resource: plural,
        kind,
        namespaced: scope == "Namespaced",
        short_names: strings(&names["shortNames"]),
        verbs: split_list(ALL),
        subresources,
        categories: strings(&names["categories"]),
        name_rule: NameRule::Subdomain,
        custom: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_like_kubernetes() {
        let mut v = vec!["v1alpha1", "v2", "v1beta2", "v1", "foo", "v1beta1"];
        v.sort_by_key(|s| version_priority(s));
        assert_eq!(v, ["v2", "v1", "v1beta2", "v1beta1", "v1alpha1", "foo"]);
    }

    #[test]
    fn builtins_resolve() {
        let r = Registry::builtin();
        assert!(r.get("apps", "v1", "deployments").is_some());
        assert!(
            r.get("autoscaling", "v1", "horizontalpodautoscalers")
                .is_some()
        );
        assert!(r.get("", "v1", "nope").is_none());
        assert_eq!(r.by_kind("v1", "Secret").unwrap().0.resource, "secrets");
        let groups = r.groups();
        assert_eq!(groups[0].0, "");
        assert!(
            groups
                .iter()
                .any(|(g, v)| g == "autoscaling" && v[0] == "v2")
        );
    }
}
