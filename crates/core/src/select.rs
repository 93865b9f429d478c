//! Which objects a BackupPolicy or RestoreRequest selects: namespaces by
//! name or glob, resources by plural name or `resource.group`, label
//! selectors, and the `lifeboat.dev/exclude=true` opt-out label.

use std::collections::BTreeMap;

use crate::model::{ClusterResources, Exclude, Include, NamespacePattern, ResourcePattern};
use crate::selector::LabelSelector;
use globset::{Glob, GlobSet, GlobSetBuilder};

/// Objects carrying this label with value `true` are never backed up.
pub const EXCLUDE_LABEL: &str = "lifeboat.dev/exclude";

/// The labels of an object as the API returned it (non-string values, which
/// a valid object never has, are ignored).
pub fn labels_of(obj: &serde_json::Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(serde_json::Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// A selection compiled from `include` and `exclude`.
#[derive(Debug, Clone)]
pub struct Selection {
    include_ns: Option<GlobSet>,
    exclude_ns: Option<GlobSet>,
    include_resources: Vec<ResourcePattern>,
    exclude_resources: Vec<ResourcePattern>,
    include_labels: Option<LabelSelector>,
    exclude_labels: Option<LabelSelector>,
    cluster_resources: ClusterResources,
}

/// A namespace pattern that does not compile.
#[derive(Debug, thiserror::Error)]
#[error("invalid namespace pattern `{pattern}`: {reason}")]
pub struct PatternError {
    pattern: String,
    reason: String,
}

fn globs(patterns: &[NamespacePattern]) -> Result<Option<GlobSet>, PatternError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let glob = Glob::new(&p.0).map_err(|e| PatternError {
            pattern: p.0.clone(),
            reason: e.kind().to_string(),
        })?;
        b.add(glob);
    }
    b.build().map(Some).map_err(|e| PatternError {
        pattern: String::new(),
        reason: e.to_string(),
    })
}

fn resource_matches(patterns: &[ResourcePattern], resource: &str, group: &str) -> bool {
    patterns.iter().any(|p| {
        if p.0 == "*" {
            return true;
        }
        match p.split() {
            (r, None) => r == resource,
            (r, Some(g)) => r == resource && g == group,
        }
    })
}

impl Selection {
    pub fn new(include: &Include, exclude: &Exclude) -> Result<Selection, PatternError> {
        Ok(Selection {
            include_ns: globs(&include.namespaces)?,
            exclude_ns: globs(&exclude.namespaces)?,
            include_resources: include.resources.clone(),
            exclude_resources: exclude.resources.clone(),
            include_labels: include.label_selector.clone(),
            exclude_labels: exclude.label_selector.clone(),
            cluster_resources: include.cluster_resources,
        })
    }

    /// Selects everything.
    pub fn all() -> Selection {
        Selection::new(&Include::default(), &Exclude::default()).unwrap_or_else(|_| unreachable!())
    }

    /// Whether every namespace is included (none listed in `include`).
    pub fn all_namespaces(&self) -> bool {
        self.include_ns.is_none() && self.exclude_ns.is_none()
    }

    pub fn namespace(&self, ns: &str) -> bool {
        self.include_ns.as_ref().is_none_or(|g| g.is_match(ns))
            && !self.exclude_ns.as_ref().is_some_and(|g| g.is_match(ns))
    }

    /// Whether a resource (plural name and API group, `""` for core) is
    /// selected by the include/exclude resource lists.
    pub fn resource(&self, resource: &str, group: &str) -> bool {
        (self.include_resources.is_empty()
            || resource_matches(&self.include_resources, resource, group))
            && !resource_matches(&self.exclude_resources, resource, group)
    }

    /// Whether a resource was named explicitly in `include.resources`.
    pub fn names_resource(&self, resource: &str, group: &str) -> bool {
        self.include_resources
            .iter()
            .any(|p| p.0 != "*" && resource_matches(std::slice::from_ref(p), resource, group))
    }

    /// Whether cluster-scoped objects of a resource are backed up wholesale
    /// (not only as objects related to selected ones).
    pub fn cluster_scoped(&self, resource: &str, group: &str) -> bool {
        match self.cluster_resources {
            ClusterResources::Never => false,
            ClusterResources::Always => self.resource(resource, group),
            ClusterResources::Auto => {
                self.resource(resource, group)
                    && (self.all_namespaces() || self.names_resource(resource, group))
            }
        }
    }

    /// Whether related cluster-scoped objects (a PVC's PV, a CR's CRD, RBAC
    /// naming a ServiceAccount) are pulled in.
    pub fn related_cluster_objects(&self) -> bool {
        self.cluster_resources != ClusterResources::Never
    }

    /// Whether an object with these labels is selected.
    pub fn labels(&self, labels: &BTreeMap<String, String>) -> bool {
        labels.get(EXCLUDE_LABEL).map(String::as_str) != Some("true")
            && self
                .include_labels
                .as_ref()
                .is_none_or(|s| s.matches(labels))
            && !self
                .exclude_labels
                .as_ref()
                .is_some_and(|s| s.matches(labels))
    }

    /// The include label selector in API query syntax, to filter server-side.
    pub fn label_query(&self) -> Option<String> {
        self.include_labels
            .as_ref()
            .map(LabelSelector::to_query)
            .filter(|q| !q.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn sel(
        include_ns: &[&str],
        exclude_ns: &[&str],
        include_res: &[&str],
        exclude_res: &[&str],
    ) -> Selection {
        let ns = |v: &[&str]| v.iter().map(|s| NamespacePattern(s.to_string())).collect();
        let res = |v: &[&str]| v.iter().map(|s| ResourcePattern(s.to_string())).collect();
        Selection::new(
            &Include {
                namespaces: ns(include_ns),
                resources: res(include_res),
                ..Default::default()
            },
            &Exclude {
                namespaces: ns(exclude_ns),
                resources: res(exclude_res),
                label_selector: None,
            },
        )
        .unwrap()
    }

    #[rstest]
    #[case(&[], &[], "anything", true)]
    #[case(&["team-*"], &[], "team-a", true)]
    #[case(&["team-*"], &[], "other", false)]
    #[case(&["team-*"], &["team-scratch"], "team-scratch", false)]
    #[case(&[], &["kube-*"], "kube-system", false)]
    #[case(&["app-?"], &[], "app-1", true)]
    #[case(&["app-?"], &[], "app-10", false)]
    fn namespaces(
        #[case] inc: &[&str],
        #[case] exc: &[&str],
        #[case] ns: &str,
        #[case] expect: bool,
    ) {
        assert_eq!(sel(inc, exc, &[], &[]).namespace(ns), expect);
    }

    #[rstest]
    #[case(&[], &[], "secrets", "", true)]
    #[case(&["secrets"], &[], "configmaps", "", false)]
    #[case(&["deployments.apps"], &[], "deployments", "apps", true)]
    #[case(&["deployments.apps"], &[], "deployments", "extensions", false)]
    #[case(&["deployments"], &[], "deployments", "apps", true)]
    #[case(&[], &["events", "events.events.k8s.io"], "events", "events.k8s.io", false)]
    #[case(&["*"], &["secrets"], "secrets", "", false)]
    fn resources(
        #[case] inc: &[&str],
        #[case] exc: &[&str],
        #[case] r: &str,
        #[case] g: &str,
        #[case] expect: bool,
    ) {
        assert_eq!(sel(&[], &[], inc, exc).resource(r, g), expect);
    }

    #[test]
    fn cluster_resources_auto() {
        assert!(
            sel(&[], &[], &[], &[]).cluster_scoped("clusterroles", "rbac.authorization.k8s.io")
        );
        assert!(
            !sel(&["app"], &[], &[], &[])
                .cluster_scoped("clusterroles", "rbac.authorization.k8s.io")
        );
        assert!(
            sel(&["app"], &[], &["storageclasses.storage.k8s.io"], &[])
                .cluster_scoped("storageclasses", "storage.k8s.io")
        );
    }

    #[test]
    fn exclude_label_and_selectors() {
        let s = Selection::all();
        let mut labels = BTreeMap::new();
        assert!(s.labels(&labels));
        labels.insert(EXCLUDE_LABEL.to_string(), "true".to_string());
        assert!(!s.labels(&labels));
    }
}
