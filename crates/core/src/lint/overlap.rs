//! Policies that back up the same thing twice (LB113).

use std::collections::{BTreeMap, BTreeSet};

use super::{at_value, glob_matches, is_glob, location, patterns_overlap};
use crate::diagnostic::{Code, Diagnostic};
use crate::load::{Loaded, PolicySet};
use crate::model::{BackupPolicy, NamespacePattern};

/// The clusters a policy applies to: its names and the Cluster documents its
/// selector matches.
fn clusters_of<'a>(set: &'a PolicySet, policy: &'a BackupPolicy) -> BTreeSet<&'a str> {
    let mut out: BTreeSet<&str> = policy
        .spec
        .clusters
        .names
        .iter()
        .map(String::as_str)
        .collect();
    out.extend(
        set.clusters
            .iter()
            .filter(|c| {
                let name = &c.doc.metadata.name;
                (policy.spec.clusters).selects(name, Some(&c.doc.metadata.labels))
            })
            .map(|c| c.doc.metadata.name.as_str()),
    );
    out
}

/// Whether an exclude list surely leaves out `pattern`: the same pattern, or
/// a plain name that an exclude glob matches.
fn excluded(exclude: &[NamespacePattern], pattern: &str) -> bool {
    exclude
        .iter()
        .any(|e| e.0 == pattern || (!is_glob(pattern) && glob_matches(&e.0, pattern)))
}

/// A namespace (or pattern) both policies back up, described for a message.
fn shared_namespace(a: &BackupPolicy, b: &BackupPolicy) -> Option<String> {
    let (ai, bi) = (&a.spec.include.namespaces, &b.spec.include.namespaces);
    let (ae, be) = (&a.spec.exclude.namespaces, &b.spec.exclude.namespaces);
    let kept = |p: &str| !excluded(ae, p) && !excluded(be, p);
    match (ai.is_empty(), bi.is_empty()) {
        (true, true) => Some("every namespace".to_string()),
        (true, false) => bi
            .iter()
            .find(|p| kept(&p.0))
            .map(|p| format!("namespace `{}`", p.0)),
        (false, true) => ai
            .iter()
            .find(|p| kept(&p.0))
            .map(|p| format!("namespace `{}`", p.0)),
        (false, false) => ai.iter().find_map(|pa| {
            bi.iter().find_map(|pb| {
                if !patterns_overlap(&pa.0, &pb.0) {
                    return None;
                }
                // The more specific of the two is what both back up.
                let shared = if is_glob(&pa.0) { &pb.0 } else { &pa.0 };
                kept(shared).then(|| format!("namespace `{shared}`"))
            })
        }),
    }
}

/// Whether both policies back up some common resource.
fn resources_overlap(a: &BackupPolicy, b: &BackupPolicy) -> bool {
    let all = |p: &BackupPolicy| {
        p.spec.include.resources.is_empty() || p.spec.include.resources.iter().any(|r| r.0 == "*")
    };
    all(a)
        || all(b)
        || a.spec
            .include
            .resources
            .iter()
            .any(|r| b.spec.include.resources.contains(r))
}

/// LB113: two policies back up the same namespace on the same cluster to the
/// same StorageLocation. Often a leftover (a team policy next to an
/// everything-policy), sometimes on purpose (hourly and monthly schedules
/// with different retention), so only a note.
///
/// Namespace patterns are compared without a cluster to look at: they
/// overlap when they are the same pattern, when one is a plain name the other
/// matches, or when both policies take every namespace. Two different globs
/// that could match a common name (`team-*`, `*-prod`) are not reported.
/// Label selectors are ignored: they narrow what a policy takes, so
/// overlapping policies may in fact take disjoint objects.
pub fn overlapping_policies(set: &PolicySet) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let policies = &set.policies;
    let clusters: Vec<BTreeSet<&str>> = policies.iter().map(|p| clusters_of(set, &p.doc)).collect();
    // Only policies writing to the same location can overlap: compare within
    // those groups, not every pair of a large repository.
    let mut by_storage: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, p) in policies.iter().enumerate() {
        if backs_up_namespaced_objects(&p.doc) {
            by_storage
                .entry(p.doc.spec.storage.as_str())
                .or_default()
                .push(i);
        }
    }
    for group in by_storage.values() {
        for (k, &j) in group.iter().enumerate() {
            let Loaded { doc: b, source } = &policies[j];
            for &i in &group[..k] {
                let Loaded {
                    doc: a,
                    source: a_source,
                } = &policies[i];
                if a.metadata.name == b.metadata.name {
                    continue;
                }
                let Some(cluster) = clusters[i].intersection(&clusters[j]).next() else {
                    continue;
                };
                if !resources_overlap(a, b) {
                    continue;
                }
                let Some(namespace) = shared_namespace(a, b) else {
                    continue;
                };
                out.push(at_value(
                    Code::OverlappingPolicies,
                    source,
                    "/metadata/name",
                    format!(
                        "policies `{}` (at {}) and `{}` both back up {namespace} on cluster `{cluster}` to `{}`",
                        a.metadata.name,
                        location(a_source),
                        b.metadata.name,
                        b.spec.storage
                    ),
                    "if that is not intended, narrow `include` or widen `exclude` of one of them; policies that differ on purpose (schedule, retention) can stay",
                ));
            }
        }
    }
    out
}

/// Cluster-scoped resources: a policy that includes only these backs up no
/// namespace's contents, so it cannot overlap another by namespace.
const CLUSTER_SCOPED: &[&str] = &[
    "namespaces",
    "nodes",
    "persistentvolumes",
    "customresourcedefinitions.apiextensions.k8s.io",
    "clusterroles.rbac.authorization.k8s.io",
    "clusterrolebindings.rbac.authorization.k8s.io",
    "storageclasses.storage.k8s.io",
    "csidrivers.storage.k8s.io",
    "volumesnapshotclasses.snapshot.storage.k8s.io",
    "volumesnapshotcontents.snapshot.storage.k8s.io",
    "priorityclasses.scheduling.k8s.io",
    "ingressclasses.networking.k8s.io",
    "runtimeclasses.node.k8s.io",
    "mutatingwebhookconfigurations.admissionregistration.k8s.io",
    "validatingwebhookconfigurations.admissionregistration.k8s.io",
    "apiservices.apiregistration.k8s.io",
];

/// Whether a policy can back up objects inside namespaces.
fn backs_up_namespaced_objects(p: &BackupPolicy) -> bool {
    let r = &p.spec.include.resources;
    r.is_empty() || r.iter().any(|r| !CLUSTER_SCOPED.contains(&r.0.as_str()))
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;
    use crate::lint::testing::*;

    fn policy(name: &str, storage: &str, clusters: &str, filters: &str) -> String {
        format!(
            "API\nkind: BackupPolicy\nmetadata:\n  name: {name}\nspec:\n  clusters: {clusters}\n  schedule: '0 0 * * *'\n  retention: {{keepDaily: 7}}\n  storage: {storage}\n{filters}"
        )
    }

    const ALL: &str = "";
    const TEAM_A: &str = "  include:\n    namespaces: [team-a]\n";
    const TEAMS: &str = "  include:\n    namespaces: [team-*]\n";
    const PRODS: &str = "  include:\n    namespaces: ['*-prod']\n";
    const NOT_TEAMS: &str = "  exclude:\n    namespaces: [team-*]\n";
    const SECRETS: &str = "  include:\n    resources: [secrets]\n";
    const CONFIGMAPS: &str = "  include:\n    resources: [configmaps]\n";

    #[rstest]
    #[case::both_all(
        "{names: [c1]}",
        ALL,
        "{names: [c1]}",
        ALL,
        Some(
            "policies `a` (at p.yaml:20) and `b` both back up every namespace on cluster `c1` to `s`"
        )
    )]
    #[case::literal_in_glob(
        "{names: [c1]}",
        TEAMS,
        "{names: [c1]}",
        TEAM_A,
        Some(
            "policies `a` (at p.yaml:20) and `b` both back up namespace `team-a` on cluster `c1` to `s`"
        )
    )]
    #[case::all_and_literal(
        "{names: [c1]}",
        ALL,
        "{names: [c1]}",
        TEAM_A,
        Some(
            "policies `a` (at p.yaml:20) and `b` both back up namespace `team-a` on cluster `c1` to `s`"
        )
    )]
    #[case::excluded("{names: [c1]}", NOT_TEAMS, "{names: [c1]}", TEAM_A, None)]
    #[case::different_globs("{names: [c1]}", TEAMS, "{names: [c1]}", PRODS, None)]
    #[case::other_cluster("{names: [c1]}", ALL, "{names: [c2]}", ALL, None)]
    #[case::by_selector(
        "{names: [c1]}",
        ALL,
        "{selector: {matchLabels: {env: prod}}}",
        ALL,
        Some(
            "policies `a` (at p.yaml:20) and `b` both back up every namespace on cluster `c1` to `s`"
        )
    )]
    #[case::other_resources("{names: [c1]}", SECRETS, "{names: [c1]}", CONFIGMAPS, None)]
    fn overlap(
        #[case] ca: &str,
        #[case] fa: &str,
        #[case] cb: &str,
        #[case] fb: &str,
        #[case] expect: Option<&str>,
    ) {
        let docs = format!(
            "{}---\n{}---\n{}---\n{}",
            cluster("c1", "env: prod"),
            cluster("c2", "env: dr"),
            policy("a", "s", ca, fa),
            policy("b", "s", cb, fb)
        );
        let found = run(overlapping_policies, &docs);
        let messages: Vec<&str> = found.iter().map(|f| f.3.as_str()).collect();
        assert_eq!(messages, expect.into_iter().collect::<Vec<_>>());
        if expect.is_some() {
            assert_eq!((found[0].0, found[0].2), (Code::OverlappingPolicies, 9));
        }
    }

    #[test]
    fn other_storage_does_not_overlap() {
        let docs = format!(
            "{}---\n{}",
            policy("a", "s1", "{names: [c1]}", ALL),
            policy("b", "s2", "{names: [c1]}", ALL)
        );
        assert!(run(overlapping_policies, &docs).is_empty());
    }
}
