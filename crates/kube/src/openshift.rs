//! OpenShift object rules: what OADP's openshift-velero-plugin does, on raw
//! JSON and with every change logged per object.
//!
//! ```text
//! backup:  discovery ─▶ Platform ─▶ backup_skip (builds, build pods and
//!          their ConfigMaps, DeploymentConfig RCs, generated Secrets, OLM)
//!          related objects ─▶ SCCs granting a stored ServiceAccount or a
//!          selected namespace's SA group
//! restore: restore_rules (Route host, dockercfg pull secrets, internal
//!          registry, SCC users) ─▶ changes ─▶ RestoreItem::changes
//!          built-in SCC ─▶ scc_grant_bindings (RoleBinding to
//!          system:openshift:scc:<name>), user SCC ─▶ created or merged
//! ```
//!
//! Rules are keyed on what exists: backup rules on the API groups the
//! source cluster serves ([`Platform`]), restore rules on the objects'
//! kinds and content (a Route only exists in a backup of OpenShift). Each
//! rule edits only the JSON paths it means to change; nothing is decoded
//! into typed structs, so fields unknown to lifeboat survive.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

/// The API group of SecurityContextConstraints.
pub const SCC_GROUP: &str = "security.openshift.io";
/// The resource of SecurityContextConstraints.
pub const SCC_RESOURCE: &str = "securitycontextconstraints";
/// The internal registry's service address on OpenShift 4.
pub const DEFAULT_INTERNAL_REGISTRY: &str =
    lifeboat_core::model::ClusterOpenShift::DEFAULT_INTERNAL_REGISTRY;
/// The group of OLM's kinds.
pub use lifeboat_core::prerequisites::OLM_GROUP;
/// OLM resources excluded from backups by default (recorded as
/// prerequisites instead: the target installs operators through OLM).
pub const OLM_RESOURCES: &[&str] = &[
    "subscriptions",
    "clusterserviceversions",
    "installplans",
    "operatorgroups",
];

/// SCCs the OpenShift installer creates. They are never edited by a
/// restore: a grant of one is restored as a RoleBinding to the ClusterRole
/// `system:openshift:scc:<name>` that OpenShift ships for each of them.
pub const BUILTIN_SCCS: &[&str] = &[
    "anyuid",
    "hostaccess",
    "hostmount-anyuid",
    "hostnetwork",
    "hostnetwork-v2",
    "machine-api-termination-handler",
    "nonroot",
    "nonroot-v2",
    "privileged",
    "restricted",
    "restricted-v2",
];

/// RoleBindings OpenShift's controller manager creates in every namespace.
pub const SYSTEM_ROLE_BINDINGS: &[&str] = &[
    "system:image-pullers",
    "system:image-builders",
    "system:deployers",
];

/// Annotation OpenShift's router admission sets on Routes whose host it
/// generated.
pub const HOST_GENERATED: &str = "openshift.io/host.generated";
/// Label and annotation naming a pod's or ConfigMap's Build.
const BUILD_NAME: &str = "openshift.io/build.name";
/// Annotation naming a ReplicationController's DeploymentConfig.
const DC_NAME: &str = "openshift.io/deployment-config.name";

/// The OpenShift API groups a cluster serves, from discovery.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Platform {
    /// `security.openshift.io` (SCCs).
    pub security: bool,
    /// `build.openshift.io`.
    pub builds: bool,
    /// `apps.openshift.io` (DeploymentConfigs).
    pub apps: bool,
    /// `operators.coreos.com` (OLM).
    pub olm: bool,
}

impl Platform {
    /// From the API group names discovery found.
    pub fn from_groups<'a>(groups: impl IntoIterator<Item = &'a str>) -> Platform {
        let mut p = Platform::default();
        for g in groups {
            match g {
                SCC_GROUP => p.security = true,
                "build.openshift.io" => p.builds = true,
                "apps.openshift.io" => p.apps = true,
                OLM_GROUP => p.olm = true,
                _ => {}
            }
        }
        p
    }

    /// Whether any OpenShift group is served (the Secret rules apply).
    pub fn openshift(&self) -> bool {
        self.security || self.builds || self.apps
    }

    /// Whether objects of this resource need [`backup_skip`] checks.
    pub fn checks(&self, resource: &str, group: &str) -> bool {
        match (group, resource) {
            ("", "pods" | "configmaps") => self.builds,
            ("", "replicationcontrollers") => self.apps,
            ("", "secrets") => self.openshift(),
            ("build.openshift.io", "builds") => self.builds,
            _ => false,
        }
    }
}

/// Whether a resource is one of OLM's.
pub fn is_olm(resource: &str, group: &str) -> bool {
    group == OLM_GROUP && OLM_RESOURCES.contains(&resource)
}

fn str_at<'v>(v: &'v Value, ptr: &str) -> Option<&'v str> {
    v.pointer(ptr).and_then(Value::as_str)
}

fn controller_owner<'v>(meta: &'v Value, kind: &str) -> Option<&'v str> {
    meta.get("ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|r| str_at(r, "/kind") == Some(kind))
        .and_then(|r| str_at(r, "/name"))
}

/// Why an object of an OpenShift cluster is not backed up, or `None`.
/// `meta` is the object's `metadata`, `secret_type` a Secret's `type`.
pub fn backup_skip(
    platform: &Platform,
    resource: &str,
    group: &str,
    meta: &Value,
    secret_type: Option<&str>,
) -> Option<String> {
    if !platform.checks(resource, group) {
        return None;
    }
    let annotation = |k: &str| str_at(meta, &format!("/annotations/{}", k.replace('/', "~1")));
    let label = |k: &str| str_at(meta, &format!("/labels/{}", k.replace('/', "~1")));
    match (group, resource) {
        ("build.openshift.io", "builds") => Some(
            "Builds are the history of a BuildConfig; the restored BuildConfig starts new ones"
                .into(),
        ),
        ("", "pods") => label(BUILD_NAME)
            .or_else(|| annotation(BUILD_NAME))
            .map(|b| format!("build pod of Build {b}; builds are not backed up")),
        ("", "configmaps") => controller_owner(meta, "Build")
            .map(|b| format!("generated for Build {b}; builds are not backed up")),
        ("", "replicationcontrollers") => controller_owner(meta, "DeploymentConfig")
            .or_else(|| annotation(DC_NAME))
            .map(|dc| format!("created by DeploymentConfig {dc}, which recreates it")),
        ("", "secrets") => {
            let sa = annotation("kubernetes.io/service-account.name");
            match (secret_type, sa) {
                (Some("kubernetes.io/service-account-token"), Some(sa)) => Some(format!(
                    "token of ServiceAccount {sa}, issued again by the target cluster"
                )),
                (Some("kubernetes.io/dockercfg"), Some(sa)) => Some(format!(
                    "image pull secret generated for ServiceAccount {sa}; the target \
                     regenerates it"
                )),
                _ => annotation("service.beta.openshift.io/originating-service-name")
                    .or_else(|| annotation("service.alpha.openshift.io/originating-service-name"))
                    .map(|svc| {
                        format!(
                            "serving certificate of Service {svc}, issued again by the target's \
                             service CA"
                        )
                    }),
            }
        }
        _ => None,
    }
}

/// The `users` entry of a ServiceAccount.
pub fn sa_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// The group of every ServiceAccount of a namespace.
pub fn sa_group(namespace: &str) -> String {
    format!("system:serviceaccounts:{namespace}")
}

/// `(namespace, name)` of a `system:serviceaccount:<ns>:<name>` user.
pub fn parse_sa_user(user: &str) -> Option<(&str, &str)> {
    let rest = user.strip_prefix("system:serviceaccount:")?;
    let (ns, name) = rest.split_once(':')?;
    (!ns.is_empty() && !name.is_empty() && !name.contains(':')).then_some((ns, name))
}

/// The namespace of a `system:serviceaccounts:<ns>` group.
pub fn parse_sa_group(group: &str) -> Option<&str> {
    group
        .strip_prefix("system:serviceaccounts:")
        .filter(|ns| !ns.is_empty() && !ns.contains(':'))
}

fn strings(obj: &Value, key: &str) -> Vec<String> {
    obj.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Whether an SCC (as JSON) grants one of these ServiceAccounts through
/// `users`, or one of these namespaces' SA groups through `groups`.
pub fn scc_grants(
    scc: &Value,
    service_accounts: &BTreeSet<(String, String)>,
    namespaces: &BTreeSet<String>,
) -> bool {
    strings(scc, "users").iter().any(|u| {
        parse_sa_user(u)
            .is_some_and(|(ns, n)| service_accounts.contains(&(ns.to_string(), n.to_string())))
    }) || strings(scc, "groups")
        .iter()
        .any(|g| parse_sa_group(g).is_some_and(|ns| namespaces.contains(ns)))
}

/// One image an ImageStream tag points at (`status.tags[].items[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamImage {
    pub namespace: String,
    pub stream: String,
    pub tag: String,
    /// `dockerImageReference`: `<registry>/<namespace>/<stream>@sha256:…`
    /// for an image in the internal registry.
    pub reference: String,
    /// `image`: the manifest digest.
    pub digest: String,
    /// The tag's current image (`items[0]`).
    pub head: bool,
}

impl StreamImage {
    /// The repository in `registry` (`host[:port]`) when the image is
    /// stored there (`<registry>/<repository>@<digest>`).
    pub fn repository_in(&self, registry: &str) -> Option<&str> {
        let rest = self.reference.strip_prefix(registry)?.strip_prefix('/')?;
        let (repo, digest) = rest.split_once('@')?;
        (digest == self.digest).then_some(repo)
    }
}

/// The images an ImageStream's `status` lists: each tag's head, or every
/// image of each tag's history with `all`. Entries without a digest are
/// left out (a tag whose import has not finished).
pub fn stream_images(namespace: &str, stream: &str, status: &Value, all: bool) -> Vec<StreamImage> {
    let mut out = Vec::new();
    let Some(tags) = status.get("tags").and_then(Value::as_array) else {
        return out;
    };
    for tag in tags {
        let Some(name) = tag.get("tag").and_then(Value::as_str) else {
            continue;
        };
        let items = tag.get("items").and_then(Value::as_array);
        for (i, item) in items.into_iter().flatten().enumerate() {
            if i > 0 && !all {
                break;
            }
            let (Some(reference), Some(digest)) = (
                item.get("dockerImageReference").and_then(Value::as_str),
                item.get("image").and_then(Value::as_str),
            ) else {
                continue;
            };
            out.push(StreamImage {
                namespace: namespace.to_string(),
                stream: stream.to_string(),
                tag: name.to_string(),
                reference: reference.to_string(),
                digest: digest.to_string(),
                head: i == 0,
            });
        }
    }
    out
}

/// Whether an SCC name is one the installer creates.
pub fn builtin_scc(name: &str) -> bool {
    BUILTIN_SCCS.contains(&name)
}

/// Restore-time settings of the OpenShift rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreConfig {
    /// The source cluster's internal registry (`host[:port]`).
    pub source_registry: String,
    /// The target cluster's internal registry.
    pub target_registry: String,
}

impl Default for RestoreConfig {
    fn default() -> Self {
        RestoreConfig {
            source_registry: DEFAULT_INTERNAL_REGISTRY.into(),
            target_registry: DEFAULT_INTERNAL_REGISTRY.into(),
        }
    }
}

impl RestoreConfig {
    /// From the source and target Cluster documents (the default registry
    /// for a cluster without a document or setting).
    pub fn for_clusters(
        source: Option<&lifeboat_core::model::ClusterSpec>,
        target: Option<&lifeboat_core::model::ClusterSpec>,
    ) -> RestoreConfig {
        let registry = |c: Option<&lifeboat_core::model::ClusterSpec>| {
            c.map_or(DEFAULT_INTERNAL_REGISTRY, |c| {
                c.openshift.internal_registry()
            })
            .to_string()
        };
        RestoreConfig {
            source_registry: registry(source),
            target_registry: registry(target),
        }
    }
}

/// Where a kind keeps its pod spec.
fn pod_spec_path(resource: &str, group: &str) -> Option<&'static str> {
    match (group, resource) {
        ("", "pods") => Some("/spec"),
        ("batch", "cronjobs") => Some("/spec/jobTemplate/spec/template/spec"),
        ("apps", "deployments" | "statefulsets" | "daemonsets" | "replicasets")
        | ("", "replicationcontrollers")
        | ("batch", "jobs")
        | ("apps.openshift.io", "deploymentconfigs") => Some("/spec/template/spec"),
        _ => None,
    }
}

/// Applies the OpenShift restore rules to an object whose namespaces were
/// already mapped (`map_ns` maps a SOURCE namespace). Returns one line per
/// change made.
pub fn restore_rules(
    cfg: &RestoreConfig,
    map_ns: &dyn Fn(&str) -> String,
    resource: &str,
    group: &str,
    obj: &mut Value,
) -> Vec<String> {
    let mut changes = Vec::new();
    match (group, resource) {
        ("route.openshift.io", "routes") => {
            let generated = obj
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(HOST_GENERATED))
                .and_then(Value::as_str)
                .map(|v| v.eq_ignore_ascii_case("true"))
                .unwrap_or(false);
            if generated
                && let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut)
                && let Some(host) = spec.remove("host")
            {
                changes.push(format!(
                    "removed spec.host {host} (generated by the source router; the target \
                     assigns one)"
                ));
            }
        }
        ("", "serviceaccounts") => {
            let sa = str_at(obj, "/metadata/name")
                .unwrap_or_default()
                .to_string();
            for list in ["imagePullSecrets", "secrets"] {
                if let Some(a) = obj.get_mut(list).and_then(Value::as_array_mut) {
                    for removed in remove_dockercfg(a, &sa) {
                        changes.push(format!(
                            "removed {list} {removed} (generated for the ServiceAccount; the \
                             target regenerates it)"
                        ));
                    }
                }
            }
        }
        (SCC_GROUP, SCC_RESOURCE) => {
            changes.extend(remap_subjects(obj, "users", map_ns));
            changes.extend(remap_subjects(obj, "groups", map_ns));
        }
        _ => {}
    }
    if let Some(path) = pod_spec_path(resource, group)
        && let Some(spec) = obj.pointer_mut(path)
    {
        let sa = spec
            .get("serviceAccountName")
            .or_else(|| spec.get("serviceAccount"))
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string();
        if let Some(a) = spec
            .get_mut("imagePullSecrets")
            .and_then(Value::as_array_mut)
        {
            for removed in remove_dockercfg(a, &sa) {
                changes.push(format!(
                    "removed imagePullSecrets {removed} (generated for ServiceAccount {sa}; the \
                     target regenerates it)"
                ));
            }
            if a.is_empty()
                && let Some(s) = spec.as_object_mut()
            {
                s.remove("imagePullSecrets");
            }
        }
        for list in ["initContainers", "containers", "ephemeralContainers"] {
            let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) else {
                continue;
            };
            for c in cs {
                let Some(image) = c.get("image").and_then(Value::as_str) else {
                    continue;
                };
                if let Some(new) = rewrite_image(cfg, map_ns, image) {
                    changes.push(format!("image {image} → {new}"));
                    c["image"] = Value::String(new);
                }
            }
        }
    }
    changes
}

/// Removes `<sa>-dockercfg-*` references (`{"name": …}` entries) and
/// returns their names.
fn remove_dockercfg(refs: &mut Vec<Value>, sa: &str) -> Vec<String> {
    let prefix = format!("{sa}-dockercfg-");
    let mut removed = Vec::new();
    refs.retain(|r| match str_at(r, "/name") {
        Some(n) if n.starts_with(&prefix) => {
            removed.push(n.to_string());
            false
        }
        _ => true,
    });
    removed
}

/// An image of the source's internal registry, moved to the target's
/// registry and (under namespace mapping) its namespace's repository.
fn rewrite_image(
    cfg: &RestoreConfig,
    map_ns: &dyn Fn(&str) -> String,
    image: &str,
) -> Option<String> {
    let rest = image
        .strip_prefix(cfg.source_registry.as_str())?
        .strip_prefix('/')?;
    let (ns, repo) = rest.split_once('/')?;
    let new = format!("{}/{}/{repo}", cfg.target_registry, map_ns(ns));
    (new != image).then_some(new)
}

/// Maps `system:serviceaccount(s):<ns>…` entries of an SCC list.
fn remap_subjects(obj: &mut Value, key: &str, map_ns: &dyn Fn(&str) -> String) -> Vec<String> {
    let mut changes = Vec::new();
    let Some(list) = obj.get_mut(key).and_then(Value::as_array_mut) else {
        return changes;
    };
    for v in list {
        let Some(s) = v.as_str() else { continue };
        let mapped = if let Some((ns, name)) = parse_sa_user(s) {
            sa_user(&map_ns(ns), name)
        } else if let Some(ns) = parse_sa_group(s) {
            sa_group(&map_ns(ns))
        } else {
            continue;
        };
        if mapped != s {
            changes.push(format!("{key}: {s} → {mapped}"));
            *v = Value::String(mapped);
        }
    }
    changes
}

/// The RoleBindings that restore a built-in SCC's grants, one per TARGET
/// namespace: `system:openshift:scc:<scc>` bound to the granted
/// ServiceAccounts (and SA groups). `users` and `groups` are already
/// mapped to target namespaces; `namespaces` are the target namespaces
/// the restore writes (grants of other namespaces are left alone).
pub fn scc_grant_bindings(scc: &Value, namespaces: &BTreeSet<String>) -> Vec<Value> {
    let name = str_at(scc, "/metadata/name").unwrap_or_default();
    let mut per_ns: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for u in strings(scc, "users") {
        if let Some((ns, sa)) = parse_sa_user(&u)
            && namespaces.contains(ns)
        {
            per_ns.entry(ns.to_string()).or_default().push(json!({
                "kind": "ServiceAccount", "name": sa, "namespace": ns
            }));
        }
    }
    for g in strings(scc, "groups") {
        if let Some(ns) = parse_sa_group(&g)
            && namespaces.contains(ns)
        {
            per_ns.entry(ns.to_string()).or_default().push(json!({
                "kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": g
            }));
        }
    }
    let role = format!("system:openshift:scc:{name}");
    per_ns
        .into_iter()
        .map(|(ns, subjects)| {
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {
                    "name": role, "namespace": ns,
                    "labels": {"lifeboat.dev/scc-grant": name},
                },
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": subjects,
            })
        })
        .collect()
}

/// The merge of a backed-up user-created SCC's grants into the live one:
/// `Some(patch)` adding the missing `users`/`groups` (and the lines saying
/// so), `None` when the live SCC already grants all of them.
pub fn scc_merge(live: &Value, backed_up: &Value) -> Option<(Value, Vec<String>)> {
    let mut patch = Map::new();
    let mut changes = Vec::new();
    for key in ["users", "groups"] {
        let mut have = strings(live, key);
        let mut added = Vec::new();
        for s in strings(backed_up, key) {
            if !have.contains(&s) {
                have.push(s.clone());
                added.push(s);
            }
        }
        if !added.is_empty() {
            changes.push(format!(
                "merged {key} {} into the existing SCC",
                added.join(", ")
            ));
            patch.insert(key.into(), json!(have));
        }
    }
    (!patch.is_empty()).then(|| (Value::Object(patch), changes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_streams_name_their_heads_and_history() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let status = json!({"tags": [
            {"tag": "latest", "items": [
                {"dockerImageReference": format!("{REG}/shop/web@{}", d('a')), "image": d('a')},
                {"dockerImageReference": format!("{REG}/shop/web@{}", d('b')), "image": d('b')},
            ]},
            {"tag": "ext", "items": [
                {"dockerImageReference": format!("quay.io/x/y@{}", d('c')), "image": d('c')},
            ]},
            {"tag": "importing"},
        ]});
        const REG: &str = DEFAULT_INTERNAL_REGISTRY;
        let heads = stream_images("shop", "web", &status, false);
        assert_eq!(heads.len(), 2);
        assert_eq!(heads[0].repository_in(REG), Some("shop/web"));
        assert!(heads[0].head);
        // An image of another registry is not the internal registry's.
        assert_eq!(heads[1].repository_in(REG), None);
        let all = stream_images("shop", "web", &status, true);
        assert_eq!(all.len(), 3);
        assert!(!all[1].head && all[1].digest == d('b'));
    }
    use rstest::rstest;

    fn map(ns: &str) -> String {
        if ns == "shop" {
            "shop-dr".into()
        } else {
            ns.into()
        }
    }

    fn os() -> Platform {
        Platform::from_groups([
            "security.openshift.io",
            "build.openshift.io",
            "apps.openshift.io",
        ])
    }

    #[rstest]
    #[case("builds", "build.openshift.io", json!({"name": "web-1"}), None, true)]
    #[case("pods", "", json!({"labels": {"openshift.io/build.name": "web-1"}}), None, true)]
    #[case("pods", "", json!({"labels": {"app": "web"}}), None, false)]
    #[case("configmaps", "", json!({"ownerReferences": [{"kind": "Build", "name": "web-1"}]}), None, true)]
    #[case("configmaps", "", json!({"name": "settings"}), None, false)]
    #[case("replicationcontrollers", "", json!({"ownerReferences": [{"kind": "DeploymentConfig", "name": "web", "controller": true}]}), None, true)]
    #[case("replicationcontrollers", "", json!({"annotations": {"openshift.io/deployment-config.name": "web"}}), None, true)]
    #[case("replicationcontrollers", "", json!({}), None, false)]
    #[case("secrets", "", json!({"annotations": {"kubernetes.io/service-account.name": "app"}}), Some("kubernetes.io/dockercfg"), true)]
    #[case("secrets", "", json!({"annotations": {"kubernetes.io/service-account.name": "app"}}), Some("kubernetes.io/service-account-token"), true)]
    #[case("secrets", "", json!({"annotations": {"service.beta.openshift.io/originating-service-name": "web"}}), Some("kubernetes.io/tls"), true)]
    #[case("secrets", "", json!({}), Some("kubernetes.io/dockercfg"), false)]
    #[case("secrets", "", json!({}), Some("Opaque"), false)]
    fn backup_skips(
        #[case] r: &str,
        #[case] g: &str,
        #[case] meta: Value,
        #[case] ty: Option<&str>,
        #[case] skipped: bool,
    ) {
        assert_eq!(backup_skip(&os(), r, g, &meta, ty).is_some(), skipped);
        // A vanilla cluster keeps everything.
        assert!(backup_skip(&Platform::default(), r, g, &meta, ty).is_none());
    }

    #[test]
    fn sa_names_parse() {
        assert_eq!(parse_sa_user("system:serviceaccount:a:b"), Some(("a", "b")));
        assert_eq!(parse_sa_user("system:serviceaccount:a"), None);
        assert_eq!(parse_sa_user("system:admin"), None);
        assert_eq!(parse_sa_group("system:serviceaccounts:a"), Some("a"));
        assert_eq!(parse_sa_group("system:serviceaccounts"), None);
        let scc =
            json!({"users": ["system:admin", "system:serviceaccount:shop:app"], "groups": []});
        let sas = [("shop".to_string(), "app".to_string())].into();
        assert!(scc_grants(&scc, &sas, &BTreeSet::new()));
        assert!(!scc_grants(
            &scc,
            &BTreeSet::new(),
            &["shop".to_string()].into()
        ));
        let by_group = json!({"groups": ["system:serviceaccounts:shop"]});
        assert!(scc_grants(
            &by_group,
            &BTreeSet::new(),
            &["shop".to_string()].into()
        ));
    }

    #[test]
    fn generated_route_host_goes_custom_stays() {
        let cfg = RestoreConfig::default();
        let mut generated = json!({"metadata": {"name": "r", "annotations": {HOST_GENERATED: "true"}},
            "spec": {"host": "r-shop.apps.src.example.com", "to": {"kind": "Service", "name": "web"}}});
        let changes = restore_rules(&cfg, &map, "routes", "route.openshift.io", &mut generated);
        assert_eq!(
            generated["spec"],
            json!({"to": {"kind": "Service", "name": "web"}})
        );
        assert_eq!(changes.len(), 1, "{changes:?}");
        let mut custom = json!({"metadata": {"name": "r"}, "spec": {"host": "shop.example.com"}});
        assert!(restore_rules(&cfg, &map, "routes", "route.openshift.io", &mut custom).is_empty());
        assert_eq!(custom["spec"]["host"], "shop.example.com");
    }

    #[test]
    fn dockercfg_references_go() {
        let cfg = RestoreConfig::default();
        let mut sa = json!({"metadata": {"name": "app"},
            "secrets": [{"name": "app-dockercfg-x1"}, {"name": "app-token-x2"}, {"name": "mine"}],
            "imagePullSecrets": [{"name": "app-dockercfg-x1"}, {"name": "quay"}]});
        let changes = restore_rules(&cfg, &map, "serviceaccounts", "", &mut sa);
        assert_eq!(
            sa["secrets"],
            json!([{"name": "app-token-x2"}, {"name": "mine"}])
        );
        assert_eq!(sa["imagePullSecrets"], json!([{"name": "quay"}]));
        assert_eq!(changes.len(), 2);
        let mut deploy = json!({"spec": {"template": {"spec": {
            "serviceAccountName": "app",
            "imagePullSecrets": [{"name": "app-dockercfg-x1"}],
            "containers": [{"name": "c", "image": "quay.io/x/y:1"}]}}}});
        restore_rules(&cfg, &map, "deployments", "apps", &mut deploy);
        assert_eq!(
            deploy["spec"]["template"]["spec"],
            json!({"serviceAccountName": "app", "containers": [{"name": "c", "image": "quay.io/x/y:1"}]})
        );
        // The default ServiceAccount's secret, on a bare pod.
        let mut pod = json!({"spec": {"imagePullSecrets": [{"name": "default-dockercfg-q"}, {"name": "app-dockercfg-z"}]}});
        restore_rules(&cfg, &map, "pods", "", &mut pod);
        assert_eq!(
            pod["spec"]["imagePullSecrets"],
            json!([{"name": "app-dockercfg-z"}])
        );
    }

    #[test]
    fn internal_registry_images_follow_target_and_mapping() {
        let cfg = RestoreConfig {
            source_registry: DEFAULT_INTERNAL_REGISTRY.into(),
            target_registry: "registry.dr.example.com:5000".into(),
        };
        let mut dc = json!({"spec": {"template": {"spec": {
            "initContainers": [{"name": "i", "image": "docker.io/curl:8"}],
            "containers": [{"name": "c", "image": format!("{DEFAULT_INTERNAL_REGISTRY}/shop/web@sha256:ab")}]}}}});
        let changes = restore_rules(
            &cfg,
            &map,
            "deploymentconfigs",
            "apps.openshift.io",
            &mut dc,
        );
        assert_eq!(
            dc["spec"]["template"]["spec"]["containers"][0]["image"],
            "registry.dr.example.com:5000/shop-dr/web@sha256:ab"
        );
        assert_eq!(
            dc["spec"]["template"]["spec"]["initContainers"][0]["image"],
            "docker.io/curl:8"
        );
        assert_eq!(changes.len(), 1);
        // Same registry, unmapped namespace: nothing to change.
        let mut cj = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {
            "containers": [{"name": "c", "image": format!("{DEFAULT_INTERNAL_REGISTRY}/other/web:1")}]}}}}}});
        assert!(
            restore_rules(
                &RestoreConfig::default(),
                &map,
                "cronjobs",
                "batch",
                &mut cj
            )
            .is_empty()
        );
    }

    #[test]
    fn scc_users_remap_and_builtin_grants_become_bindings() {
        let cfg = RestoreConfig::default();
        let mut scc = json!({"metadata": {"name": "anyuid"},
            "users": ["system:admin", "system:serviceaccount:shop:app", "system:serviceaccount:other:x"],
            "groups": ["system:serviceaccounts:shop", "system:cluster-admins"]});
        let changes = restore_rules(&cfg, &map, SCC_RESOURCE, SCC_GROUP, &mut scc);
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert_eq!(scc["users"][1], "system:serviceaccount:shop-dr:app");
        assert_eq!(scc["groups"][0], "system:serviceaccounts:shop-dr");
        let bindings = scc_grant_bindings(&scc, &["shop-dr".to_string()].into());
        assert_eq!(bindings.len(), 1);
        let b = &bindings[0];
        assert_eq!(b["metadata"]["name"], "system:openshift:scc:anyuid");
        assert_eq!(b["metadata"]["namespace"], "shop-dr");
        assert_eq!(b["roleRef"]["name"], "system:openshift:scc:anyuid");
        assert_eq!(
            b["subjects"],
            json!([{"kind": "ServiceAccount", "name": "app", "namespace": "shop-dr"},
                   {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "system:serviceaccounts:shop-dr"}])
        );
        assert!(builtin_scc("restricted-v2") && !builtin_scc("mysql-persistent-scc"));
    }

    #[test]
    fn scc_merge_adds_only_missing_grants() {
        let live = json!({"users": ["system:admin"], "groups": ["g"]});
        let backed =
            json!({"users": ["system:admin", "system:serviceaccount:a:b"], "groups": ["g"]});
        let (patch, changes) = scc_merge(&live, &backed).expect("something to merge");
        assert_eq!(
            patch,
            json!({"users": ["system:admin", "system:serviceaccount:a:b"]})
        );
        assert_eq!(changes.len(), 1);
        assert!(scc_merge(&backed, &backed).is_none());
    }
}
