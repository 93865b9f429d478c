//! Names that must resolve (LB101, LB115), names that must be unique
//! (LB102), and policies that name a location lifeboat never writes (LB130).

use std::collections::HashMap;

use super::{at_value, location, suggest};
use crate::diagnostic::{Code, Diagnostic};
use crate::load::{Loaded, PolicySet, Source};
use crate::model::{AccessMode, Kind, LocationFormat};

/// LB101: a BackupPolicy's `storage` and `clusters.names`, and a
/// RestoreRequest's `source.cluster`, `source.policy`, `source.location`
/// and `target.cluster`, must name documents of the repository (a Velero
/// source's `cluster` need not: it only names the source in the record).
///
/// The source cluster of a restore must be a Cluster document too, even
/// though only the target's controller runs the restore: a DR repository
/// describes every cluster it protects, and the source's name is where its
/// backups are stored (`clusters/<name>/backups/`), so a typo there finds no
/// backup at all.
///
/// A name that belongs to a document which failed validation is not
/// reported: that document's own errors say what to fix.
///
/// LB115: a policy's `clusters.selector` that matches no Cluster document
/// selects nothing (a warning: a Cluster may not be written yet).
pub fn unresolved_references(set: &PolicySet) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let names = |kind: Kind| -> Vec<&str> {
        match kind {
            Kind::StorageLocation => set
                .storage_locations
                .iter()
                .map(|d| d.doc.metadata.name.as_str())
                .collect(),
            Kind::Cluster => set
                .clusters
                .iter()
                .map(|d| d.doc.metadata.name.as_str())
                .collect(),
            Kind::BackupPolicy => set
                .policies
                .iter()
                .map(|d| d.doc.metadata.name.as_str())
                .collect(),
            Kind::RestoreRequest => set
                .restores
                .iter()
                .map(|d| d.doc.metadata.name.as_str())
                .collect(),
        }
    };
    let mut check = |source: &Source, pointer: &str, what: &str, kind: Kind, name: &str| {
        let known = names(kind);
        if known.contains(&name) || set.is_invalid(kind, name) {
            return;
        }
        let otherwise = if known.is_empty() {
            format!("add a {kind} named `{name}`; the repository has none yet")
        } else {
            format!(
                "add a {kind} named `{name}`, or use one of: {}",
                known.join(", ")
            )
        };
        out.push(at_value(
            Code::UnresolvedReference,
            source,
            pointer,
            format!("{what} `{name}` does not exist: no {kind} has that name"),
            suggest(name, known.iter().copied(), otherwise),
        ));
    };
    for Loaded { doc, source } in &set.policies {
        let spec = &doc.spec;
        check(
            source,
            "/spec/storage",
            "storage location",
            Kind::StorageLocation,
            &spec.storage,
        );
        for (i, name) in spec.clusters.names.iter().enumerate() {
            check(
                source,
                &format!("/spec/clusters/names/{i}"),
                "cluster",
                Kind::Cluster,
                name,
            );
        }
    }
    for Loaded { doc, source } in &set.restores {
        let spec = &doc.spec;
        // A Velero backup's `cluster` only names it in the record: the
        // cluster Velero ran in need not be a Cluster document.
        if let (Some(cluster), None) = (&spec.source.cluster, &spec.source.location) {
            check(
                source,
                "/spec/source/cluster",
                "source cluster",
                Kind::Cluster,
                cluster,
            );
        }
        if let Some(policy) = &spec.source.policy {
            check(
                source,
                "/spec/source/policy",
                "backup policy",
                Kind::BackupPolicy,
                policy,
            );
        }
        if let Some(location) = &spec.source.location {
            check(
                source,
                "/spec/source/location",
                "storage location",
                Kind::StorageLocation,
                location,
            );
        }
        check(
            source,
            "/spec/target/cluster",
            "target cluster",
            Kind::Cluster,
            &spec.target.cluster,
        );
    }
    for Loaded { doc, source } in &set.policies {
        let Some(selector) = &doc.spec.clusters.selector else {
            continue;
        };
        if set
            .clusters
            .iter()
            .any(|c| selector.matches(&c.doc.metadata.labels))
        {
            continue;
        }
        let alone = doc.spec.clusters.names.is_empty();
        out.push(at_value(
            Code::SelectorMatchesNoCluster,
            source,
            "/spec/clusters/selector",
            format!(
                "`clusters.selector` matches no Cluster{}",
                if alone {
                    ", so this policy backs up nothing"
                } else {
                    ""
                }
            ),
            "check the selector against the Clusters' `metadata.labels`, or label the Clusters this policy is meant for",
        ));
    }
    out
}

/// LB102: two documents of the same kind with the same name. The second one
/// is reported, with where the first is.
pub fn duplicate_names(set: &PolicySet) -> Vec<Diagnostic> {
    fn dupes<T>(
        kind: Kind,
        docs: &[Loaded<T>],
        name: impl Fn(&T) -> &str,
        out: &mut Vec<Diagnostic>,
    ) {
        let mut first: HashMap<&str, &Source> = HashMap::new();
        for d in docs {
            let n = name(&d.doc);
            match first.get(n) {
                None => {
                    first.insert(n, &d.source);
                }
                Some(earlier) => out.push(at_value(
                    Code::DuplicateName,
                    &d.source,
                    "/metadata/name",
                    format!(
                        "another {kind} is named `{n}` (at {}); names are unique per kind",
                        location(earlier)
                    ),
                    "rename one of them, or delete the copy",
                )),
            }
        }
    }
    let mut out = Vec::new();
    dupes(
        Kind::StorageLocation,
        &set.storage_locations,
        |d| &d.metadata.name,
        &mut out,
    );
    dupes(Kind::Cluster, &set.clusters, |d| &d.metadata.name, &mut out);
    dupes(
        Kind::BackupPolicy,
        &set.policies,
        |d| &d.metadata.name,
        &mut out,
    );
    dupes(
        Kind::RestoreRequest,
        &set.restores,
        |d| &d.metadata.name,
        &mut out,
    );
    out
}

/// LB130: a BackupPolicy's `storage` names a location lifeboat only reads:
/// `accessMode: ReadOnly`, or `format: velero` (read-only by definition).
/// Its backups would fail every time, so it is an error here rather than a
/// surprise at the first slot.
pub fn backups_to_read_only_locations(set: &PolicySet) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for Loaded { doc, source } in &set.policies {
        let Some(location) = set.storage_location(&doc.spec.storage) else {
            continue;
        };
        let spec = &location.doc.spec;
        let why = match (spec.format, spec.access_mode) {
            (LocationFormat::Velero, _) => {
                "is a Velero location (`format: velero`), which lifeboat only reads"
            }
            (_, AccessMode::ReadOnly) => "is `accessMode: ReadOnly`",
            _ => continue,
        };
        out.push(at_value(
            Code::BackupToReadOnlyLocation,
            source,
            "/spec/storage",
            format!(
                "storage location `{}` {why}, so this policy's backups cannot be written",
                doc.spec.storage
            ),
            "store the backups in a lifeboat location with `accessMode: ReadWrite`; keep the read-only one for restores",
        ));
    }
    out
}

/// LB140: a location's `maintenance.keepDelete` is shorter than the whole
/// backup timeout of a policy that stores volume data there. A prune deletes
/// packs it marked `keepDelete` ago; a backup still running from before the
/// mark may have deduplicated against them and commit a snapshot that
/// points at deleted data.
pub fn keep_delete_shorter_than_backups(set: &PolicySet) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for Loaded { doc, source } in &set.storage_locations {
        let keep = doc.spec.maintenance.keep_delete;
        let longest = set
            .policies
            .iter()
            .filter(|p| p.doc.spec.storage == doc.metadata.name)
            .map(|p| {
                let backup = p
                    .doc
                    .spec
                    .volumes
                    .as_ref()
                    .map_or_else(crate::model::default_backup_timeout, |v| v.timeouts.backup);
                (backup, p.doc.metadata.name.as_str())
            })
            .max();
        let Some((backup, policy)) = longest else {
            continue;
        };
        if keep >= backup {
            continue;
        }
        out.push(at_value(
            Code::KeepDeleteShorterThanBackup,
            source,
            "/spec/maintenance/keepDelete",
            format!(
                "`keepDelete: {keep}` is shorter than the {backup} a backup of `{policy}` may take, so a prune could delete data such a backup still counts on"
            ),
            format!("set `keepDelete` to at least `{backup}` (the default, `23h`, covers the default 12h backup timeout)"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;
    use crate::lint::testing::*;

    fn policy(storage: &str, clusters: &str) -> String {
        format!(
            "API\nkind: BackupPolicy\nmetadata:\n  name: p\nspec:\n  clusters:\n{clusters}\n  schedule: '0 0 * * *'\n  retention:\n    keepDaily: 7\n  storage: {storage}\n"
        )
    }

    fn restore(source: &str, policy: &str, target: &str) -> String {
        format!(
            "API\nkind: RestoreRequest\nmetadata:\n  name: r\nspec:\n  source:\n    cluster: {source}\n    policy: {policy}\n  target:\n    cluster: {target}\n"
        )
    }

    fn preamble() -> String {
        [
            storage_location("s3-main", false),
            cluster("prod-eu", "env: prod"),
            cluster("dr-eu", "env: dr"),
        ]
        .join("---\n")
    }

    #[rstest]
    #[case::all_resolve(policy("s3-main", "    names: [prod-eu, dr-eu]"), &[])]
    #[case::storage_typo(policy("s3-mian", "    names: [prod-eu]"), &[(Code::UnresolvedReference, 34, 12, "storage location `s3-mian` does not exist: no StorageLocation has that name")])]
    #[case::second_cluster(policy("s3-main", "    names: [prod-eu, prod-us]"), &[(Code::UnresolvedReference, 30, 22, "cluster `prod-us` does not exist: no Cluster has that name")])]
    #[case::selector_matches(policy("s3-main", "    selector:\n      matchLabels: {env: prod}"), &[])]
    #[case::selector_matches_nothing(policy("s3-main", "    selector:\n      matchLabels: {env: staging}"), &[(Code::SelectorMatchesNoCluster, 31, 7, "`clusters.selector` matches no Cluster, so this policy backs up nothing")])]
    fn policy_references(#[case] doc: String, #[case] expect: &[(Code, usize, usize, &str)]) {
        let found = run(unresolved_references, &format!("{}---\n{doc}", preamble()));
        let expect: Vec<(Code, usize, usize, String)> = expect
            .iter()
            .map(|(c, l, col, m)| (*c, *l, *col, m.to_string()))
            .collect();
        assert_eq!(found, expect);
    }

    #[rstest]
    #[case::resolves(restore("prod-eu", "p", "dr-eu"), &[])]
    #[case::all_wrong(restore("prod-ue", "q", "dr"), &[(42, 14), (43, 13), (45, 14)])]
    fn restore_references(#[case] doc: String, #[case] expect: &[(usize, usize)]) {
        let docs = format!(
            "{}---\n{}---\n{doc}",
            preamble(),
            policy("s3-main", "    names: [prod-eu]")
        );
        let found = run(unresolved_references, &docs);
        let at: Vec<(usize, usize)> = found.iter().map(|f| (f.1, f.2)).collect();
        assert_eq!(at, expect);
    }

    #[test]
    fn suggests_close_names() {
        let docs = format!(
            "{}---\n{}",
            preamble(),
            policy("s3-mian", "    names: [prod-eu]")
        );
        let text = docs.replace("API", API);
        let out = crate::load::load([crate::load::InputFile {
            path: "p.yaml",
            bytes: text.as_bytes(),
        }]);
        let d = unresolved_references(&out.set);
        assert_eq!(d[0].help.as_deref(), Some("did you mean `s3-main`?"));
    }

    #[test]
    fn invalid_documents_are_not_unresolved() {
        let broken = storage_location("s3-main", false).replace("s3://b/s3-main", "ftp://nope");
        let docs = format!(
            "{broken}---\n{}",
            policy("s3-main", "    names: []\n    selector: {}")
        );
        let text = docs.replace("API", API);
        let out = crate::load::load([crate::load::InputFile {
            path: "p.yaml",
            bytes: text.as_bytes(),
        }]);
        let found = unresolved_references(&out.set);
        assert!(
            found
                .iter()
                .all(|d| !d.message.contains("storage location")),
            "{found:#?}"
        );
    }

    #[rstest]
    #[case::writable("", &[])]
    #[case::read_only("\n  accessMode: ReadOnly", &[(Code::BackupToReadOnlyLocation, 35, 12, "storage location `s3-main` is `accessMode: ReadOnly`, so this policy's backups cannot be written")])]
    #[case::velero("\n  format: velero", &[(Code::BackupToReadOnlyLocation, 35, 12, "storage location `s3-main` is a Velero location (`format: velero`), which lifeboat only reads, so this policy's backups cannot be written")])]
    fn policies_write_only_writable_locations(
        #[case] spec: &str,
        #[case] expect: &[(Code, usize, usize, &str)],
    ) {
        let location = storage_location("s3-main", false)
            .replace("b/s3-main\n", &format!("b/s3-main{spec}\n"));
        let docs = format!(
            "{location}---\n{}---\n{}---\n{}",
            cluster("prod-eu", "env: prod"),
            cluster("dr-eu", "env: dr"),
            policy("s3-main", "    names: [prod-eu]")
        );
        let found = run(backups_to_read_only_locations, &docs);
        let expect: Vec<(Code, usize, usize, String)> = expect
            .iter()
            .map(|(c, l, col, m)| (*c, *l, *col, m.to_string()))
            .collect();
        assert_eq!(found, expect);
    }

    #[rstest]
    #[case::default("", &[])]
    #[case::long_enough("\n  maintenance: {keepDelete: 12h}", &[])]
    #[case::too_short("\n  maintenance: {keepDelete: 1h}", &[(Code::KeepDeleteShorterThanBackup, 7, 29, "`keepDelete: 1h` is shorter than the 12h a backup of `p` may take, so a prune could delete data such a backup still counts on")])]
    fn marked_data_outlives_the_longest_backup(
        #[case] spec: &str,
        #[case] expect: &[(Code, usize, usize, &str)],
    ) {
        let location = storage_location("s3-main", false)
            .replace("b/s3-main\n", &format!("b/s3-main{spec}\n"));
        let docs = format!(
            "{location}---\n{}---\n{}",
            cluster("prod-eu", "env: prod"),
            policy("s3-main", "    names: [prod-eu]")
        );
        let found = run(keep_delete_shorter_than_backups, &docs);
        let expect: Vec<(Code, usize, usize, String)> = expect
            .iter()
            .map(|(c, l, col, m)| (*c, *l, *col, m.to_string()))
            .collect();
        assert_eq!(found, expect);
    }

    #[rstest]
    #[case::unique(format!("{}---\n{}", storage_location("a", false), storage_location("b", false)), &[])]
    #[case::same_kind(format!("{}---\n{}", storage_location("a", false), storage_location("a", false)), &[(Code::DuplicateName, 11, 9, "another StorageLocation is named `a` (at p.yaml:4); names are unique per kind")])]
    #[case::other_kind(format!("{}---\n{}", storage_location("a", false), cluster("a", "")), &[])]
    fn duplicates(#[case] docs: String, #[case] expect: &[(Code, usize, usize, &str)]) {
        let found = run(duplicate_names, &docs);
        let expect: Vec<(Code, usize, usize, String)> = expect
            .iter()
            .map(|(c, l, col, m)| (*c, *l, *col, m.to_string()))
            .collect();
        assert_eq!(found, expect);
    }
}
