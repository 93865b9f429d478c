//! Where a restore writes: namespace mapping collisions (LB110), denied
//! namespaces (LB111), overwriting the live source (LB112) and single
//! claims restored onto their live selves (LB126); and where a restore reads
//! from: a lifeboat backup by `cluster` and `policy`, or a Velero backup by
//! `location` (LB150, LB151, LB152).

use std::collections::BTreeMap;

use super::{any_matches, at_key, at_value, is_glob};
use crate::diagnostic::{Code, Diagnostic};
use crate::load::{Loaded, PolicySet, Source};
use crate::model::{ExistingResources, LocationFormat, RestoreRequestSpec};
use crate::yaml::escape_pointer;

fn mapping_pointer(source_ns: &str) -> String {
    format!("/spec/namespaceMapping/{}", escape_pointer(source_ns))
}

/// Mapping entries in the order they are written.
fn mapping_in_file_order<'a>(
    spec: &'a RestoreRequestSpec,
    source: &Source,
) -> Vec<(&'a str, &'a str)> {
    let mut entries: Vec<(&str, &str)> = spec
        .namespace_mapping
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    entries.sort_by_key(|(k, _)| source.key_span(&mapping_pointer(k)).map(|s| s.offset));
    entries
}

/// Whether the restore also restores namespace `ns` into itself: it names it
/// (or a glob matching it) in `include.namespaces`, does not exclude it and
/// does not map it elsewhere. With an empty `include.namespaces` lint cannot
/// know which namespaces the backup holds, so it assumes none.
fn restored_unmapped(spec: &RestoreRequestSpec, ns: &str) -> bool {
    !spec.namespace_mapping.contains_key(ns)
        && any_matches(spec.include.namespaces.iter().map(|p| p.0.as_str()), ns)
        && !any_matches(spec.exclude.namespaces.iter().map(|p| p.0.as_str()), ns)
}

/// LB110: two source namespaces land in one target namespace, either because
/// `namespaceMapping` maps both to it, or because one is mapped onto a
/// namespace that the restore also restores unmapped. Objects with the same
/// kind and name then overwrite each other, in an order nobody chose.
pub fn namespace_mapping_collisions(set: &PolicySet) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for Loaded { doc, source } in &set.restores {
        let spec = &doc.spec;
        let mut first_into: BTreeMap<&str, &str> = BTreeMap::new();
        for (from, to) in mapping_in_file_order(spec, source) {
            if let Some(earlier) = first_into.get(to) {
                out.push(at_value(
                    Code::NamespaceMappingCollision,
                    source,
                    &mapping_pointer(from),
                    format!("namespaces `{earlier}` and `{from}` are both restored into `{to}`"),
                    "map each source namespace to its own target namespace: objects with the same name would overwrite each other",
                ));
                continue;
            }
            first_into.insert(to, from);
            if from != to && restored_unmapped(spec, to) {
                out.push(at_value(
                    Code::NamespaceMappingCollision,
                    source,
                    &mapping_pointer(from),
                    format!("`{from}` is restored into `{to}`, but `{to}` is itself restored unmapped, into `{to}`"),
                    format!("map `{to}` to another namespace too, or add it to `exclude.namespaces`"),
                ));
            }
        }
    }
    out
}

/// LB111: the restore writes into a namespace that its target Cluster's
/// `restore.deniedNamespaces` forbids: a mapping target, or a namespace named
/// in `include.namespaces` and not mapped. An include glob is reported only
/// when a denied pattern is the same glob: `*` would match `kube-system`, but
/// the controller skips denied namespaces at restore time, so only a request
/// that names one is a mistake worth failing on.
pub fn denied_namespaces(set: &PolicySet) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for Loaded { doc, source } in &set.restores {
        let spec = &doc.spec;
        let Some(cluster) = set.cluster(&spec.target.cluster) else {
            continue;
        };
        let denied: Vec<&str> = cluster
            .doc
            .spec
            .restore
            .denied_namespaces
            .iter()
            .map(|p| p.0.as_str())
            .collect();
        let denying = |ns: &str| -> Option<&str> {
            denied
                .iter()
                .copied()
                .find(|d| any_matches([*d], ns) || *d == ns)
        };
        let help = format!(
            "restore into another namespace with `namespaceMapping`; if Cluster `{}` should allow it, remove the pattern from its `restore.deniedNamespaces`",
            cluster.doc.metadata.name
        );
        let message = |ns: &str, pattern: &str| {
            let why = if pattern == ns {
                String::new()
            } else {
                format!(" (pattern `{pattern}`)")
            };
            format!(
                "namespace `{ns}` is denied for restores by Cluster `{}`{why}",
                cluster.doc.metadata.name
            )
        };
        for (from, to) in mapping_in_file_order(spec, source) {
            if let Some(pattern) = denying(to) {
                out.push(at_value(
                    Code::DeniedNamespace,
                    source,
                    &mapping_pointer(from),
                    message(to, pattern),
                    help.clone(),
                ));
            }
        }
        for (i, p) in spec.include.namespaces.iter().enumerate() {
            let p = p.0.as_str();
            if spec.namespace_mapping.contains_key(p) {
                continue;
            }
            let hit = if is_glob(p) {
                denied.iter().copied().find(|d| *d == p)
            } else {
                denying(p)
            };
            if let Some(pattern) = hit {
                out.push(at_value(
                    Code::DeniedNamespace,
                    source,
                    &format!("/spec/include/namespaces/{i}"),
                    message(p, pattern),
                    help.clone(),
                ));
            }
        }
    }
    out
}

/// LB112: a restore into the cluster its backup came from, without a
/// namespace mapping and with `existingResources: update`, patches the live
/// objects back to the backup: fine to undo a bad change, a surprise
/// otherwise. Dry runs change nothing and are not reported.
pub fn restore_overwrites_source(set: &PolicySet) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for Loaded { doc, source } in &set.restores {
        let spec = &doc.spec;
        if spec.source.cluster_name() == spec.target.cluster
            && spec.namespace_mapping.is_empty()
            && spec.existing_resources == ExistingResources::Update
            && !spec.dry_run
        {
            out.push(at_value(
                Code::RestoreOverwritesSource,
                source,
                "/spec/existingResources",
                format!(
                    "this restore overwrites live objects in `{}`, the cluster the backup came from",
                    spec.target.cluster
                ),
                "if rolling back is the intent, try it first with `dryRun: true`; otherwise use `existingResources: skip` or restore into other namespaces with `namespaceMapping`",
            ));
        }
    }
    out
}

/// LB126: a claim listed in `claims` is restored into its own namespace on
/// the cluster it was backed up from. If the claim still exists there it
/// is skipped (a restore never writes into a claim it did not create), so
/// the request restores nothing; a copy wants a `namespaceMapping`.
pub fn claims_onto_live_claims(set: &PolicySet) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for Loaded { doc, source } in &set.restores {
        let spec = &doc.spec;
        if spec.source.cluster_name() != spec.target.cluster {
            continue;
        }
        for (i, claim) in spec.claims.iter().enumerate() {
            let ns = claim.namespace();
            if spec.namespace_mapping.get(ns).is_some_and(|to| to != ns) {
                continue;
            }
            out.push(at_value(
                Code::ClaimOntoLiveClaim,
                source,
                &format!("/spec/claims/{i}"),
                format!(
                    "claim `{claim}` is restored into its own namespace on `{}`, where it was backed up: if it still exists there, it is skipped and nothing is restored",
                    spec.target.cluster
                ),
                format!(
                    "to restore a copy beside the live claim, map `{ns}` to another namespace with `namespaceMapping`; if the claim was deleted, this is what you want"
                ),
            ));
        }
    }
    out
}

/// LB150, LB151, LB152: a restore's source names a lifeboat backup
/// (`cluster` and `policy`, whose `storage` holds it) or a Velero backup
/// (`location`, a `format: velero` StorageLocation), never both and never
/// half of one. An unknown `location` is LB101's finding.
pub fn restore_sources(set: &PolicySet) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for Loaded { doc, source } in &set.restores {
        let src = &doc.spec.source;
        match &src.location {
            Some(location) => {
                if let Some(l) = set.storage_location(location)
                    && l.doc.spec.format == LocationFormat::Lifeboat
                {
                    out.push(at_value(
                        Code::RestoreFromLifeboatLocation,
                        source,
                        "/spec/source/location",
                        format!(
                            "`source.location` names `{location}`, a lifeboat location: only Velero locations (`format: velero`) are named here"
                        ),
                        "for a lifeboat backup, remove `location` and name the `cluster` and `policy` that took it (the policy's `storage` says where it is); for a Velero backup, name the StorageLocation with `format: velero`",
                    ));
                }
                if src.policy.is_some() {
                    out.push(at_key(
                        Code::RestoreSourceAmbiguous,
                        source,
                        "/spec/source/policy",
                        format!(
                            "the source names both the Velero location `{location}` and a BackupPolicy: a Velero backup was taken by no lifeboat policy"
                        ),
                        "remove `policy` to restore the Velero backup, or remove `location` to restore a backup of the policy",
                    ));
                }
            }
            None => {
                let missing: Vec<&str> = [
                    ("cluster", src.cluster.is_none()),
                    ("policy", src.policy.is_none()),
                ]
                .into_iter()
                .filter_map(|(f, m)| m.then_some(f))
                .collect();
                if !missing.is_empty() {
                    out.push(at_key(
                        Code::RestoreSourceIncomplete,
                        source,
                        "/spec/source",
                        format!(
                            "the source has no {}, so the backup cannot be found: a lifeboat backup is found by the cluster it was taken from and the policy that took it",
                            missing
                                .iter()
                                .map(|f| format!("`{f}`"))
                                .collect::<Vec<_>>()
                                .join(" and ")
                        ),
                        "add `cluster` and `policy`; to restore a Velero backup, name its `format: velero` StorageLocation as `location` instead",
                    ));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;
    use crate::lint::Rule;
    use crate::lint::testing::*;

    fn restore(source: &str, target: &str, extra: &str) -> String {
        format!(
            "API\nkind: RestoreRequest\nmetadata:\n  name: r\nspec:\n  source:\n    cluster: {source}\n    policy: p\n  target:\n    cluster: {target}\n{extra}"
        )
    }

    /// A RestoreRequest whose source is `source` (indented lines), beside
    /// a lifeboat location `local` and a Velero location `oadp`.
    fn velero(source: &str) -> String {
        format!(
            "API\nkind: StorageLocation\nmetadata:\n  name: local\nspec:\n  url: file:///tmp/l\n---\n\
             API\nkind: StorageLocation\nmetadata:\n  name: oadp\nspec:\n  url: file:///tmp/v\n  format: velero\n---\n\
             API\nkind: RestoreRequest\nmetadata:\n  name: r\nspec:\n  source:\n    {source}\n  target:\n    cluster: dr\n"
        )
    }

    fn docs(restore: String) -> String {
        format!(
            "{}---\n{}---\n{restore}",
            cluster("prod", ""),
            cluster("dr", "").replace(
                "role: primary",
                "role: standby\n  restore:\n    deniedNamespaces: [kube-*, lifeboat, vault]"
            )
        )
    }

    #[rstest]
    #[case::distinct(namespace_mapping_collisions, restore("prod", "dr", "  namespaceMapping:\n    a: x\n    b: y\n"), &[])]
    #[case::two_into_one(namespace_mapping_collisions, restore("prod", "dr", "  namespaceMapping:\n    zeta: shop\n    alpha: shop\n"), &[(Code::NamespaceMappingCollision, 31, 12, "namespaces `zeta` and `alpha` are both restored into `shop`")])]
    #[case::onto_unmapped(namespace_mapping_collisions, restore("prod", "dr", "  include:\n    namespaces: [shop, shop-*]\n  namespaceMapping:\n    shop-old: shop\n"), &[(Code::NamespaceMappingCollision, 32, 15, "`shop-old` is restored into `shop`, but `shop` is itself restored unmapped, into `shop`")])]
    #[case::onto_mapped_away(namespace_mapping_collisions, restore("prod", "dr", "  include:\n    namespaces: [a, b]\n  namespaceMapping:\n    a: b\n    b: c\n"), &[])]
    #[case::onto_excluded(namespace_mapping_collisions, restore("prod", "dr", "  include:\n    namespaces: ['*']\n  exclude:\n    namespaces: [b]\n  namespaceMapping:\n    a: b\n"), &[])]
    #[case::allowed(denied_namespaces, restore("prod", "dr", "  include:\n    namespaces: [shop, team-*]\n"), &[])]
    #[case::mapped_into_denied(denied_namespaces, restore("prod", "dr", "  namespaceMapping:\n    shop: kube-shop\n"), &[(Code::DeniedNamespace, 30, 11, "namespace `kube-shop` is denied for restores by Cluster `dr` (pattern `kube-*`)")])]
    #[case::included_denied(denied_namespaces, restore("prod", "dr", "  include:\n    namespaces: [shop, vault]\n"), &[(Code::DeniedNamespace, 30, 24, "namespace `vault` is denied for restores by Cluster `dr`")])]
    #[case::included_but_mapped(denied_namespaces, restore("prod", "dr", "  include:\n    namespaces: [vault]\n  namespaceMapping:\n    vault: vault-dr\n"), &[])]
    #[case::default_denied(denied_namespaces, restore("dr", "prod", "  include:\n    namespaces: [kube-system]\n"), &[(Code::DeniedNamespace, 30, 18, "namespace `kube-system` is denied for restores by Cluster `prod`")])]
    #[case::glob_not_guessed(denied_namespaces, restore("prod", "dr", "  include:\n    namespaces: ['*']\n"), &[])]
    #[case::overwrite(restore_overwrites_source, restore("prod", "prod", "  existingResources: update\n"), &[(Code::RestoreOverwritesSource, 29, 22, "this restore overwrites live objects in `prod`, the cluster the backup came from")])]
    #[case::overwrite_dry_run(restore_overwrites_source, restore("prod", "prod", "  existingResources: update\n  dryRun: true\n"), &[])]
    #[case::overwrite_mapped(restore_overwrites_source, restore("prod", "prod", "  existingResources: update\n  namespaceMapping: {a: a-copy}\n"), &[])]
    #[case::other_cluster(restore_overwrites_source, restore("prod", "dr", "  existingResources: update\n"), &[])]
    #[case::claim_onto_live(claims_onto_live_claims, restore("prod", "prod", "  claims: [shop/data-0]\n"), &[(Code::ClaimOntoLiveClaim, 29, 12, "claim `shop/data-0` is restored into its own namespace on `prod`, where it was backed up: if it still exists there, it is skipped and nothing is restored")])]
    #[case::claim_mapped(claims_onto_live_claims, restore("prod", "prod", "  claims: [shop/data-0]\n  namespaceMapping: {shop: shop-copy}\n"), &[])]
    #[case::claim_other_cluster(claims_onto_live_claims, restore("prod", "dr", "  claims: [shop/data-0]\n"), &[])]
    #[case::velero_source(restore_sources, velero("location: oadp"), &[])]
    #[case::velero_source_named(restore_sources, velero("location: oadp\n    cluster: old-prod\n    backup: daily-20261130020000"), &[])]
    #[case::lifeboat_location(restore_sources, velero("location: local"), &[(Code::RestoreFromLifeboatLocation, 40, 15, "`source.location` names `local`, a lifeboat location: only Velero locations (`format: velero`) are named here")])]
    #[case::both(restore_sources, velero("location: oadp\n    policy: p"), &[(Code::RestoreSourceAmbiguous, 41, 5, "the source names both the Velero location `oadp` and a BackupPolicy: a Velero backup was taken by no lifeboat policy")])]
    #[case::no_policy(restore_sources, velero("cluster: prod"), &[(Code::RestoreSourceIncomplete, 39, 3, "the source has no `policy`, so the backup cannot be found: a lifeboat backup is found by the cluster it was taken from and the policy that took it")])]
    #[case::nothing(restore_sources, velero("backup: latest"), &[(Code::RestoreSourceIncomplete, 39, 3, "the source has no `cluster` and `policy`, so the backup cannot be found: a lifeboat backup is found by the cluster it was taken from and the policy that took it")])]
    #[case::lifeboat_source(restore_sources, restore("prod", "dr", ""), &[])]
    fn restore_rules(
        #[case] rule: Rule,
        #[case] doc: String,
        #[case] expect: &[(Code, usize, usize, &str)],
    ) {
        let found = run(rule, &docs(doc));
        let expect: Vec<(Code, usize, usize, String)> = expect
            .iter()
            .map(|(c, l, col, m)| (*c, *l, *col, m.to_string()))
            .collect();
        assert_eq!(found, expect);
    }
}
