//! Malformed namespace and storage-class globs and label selectors (LB114).

use super::{at_value, is_glob};
use crate::diagnostic::{Code, Diagnostic};
use crate::load::{Loaded, PolicySet, Source};
use crate::model::{Exclude, Include, NamespacePattern};
use crate::selector::{LabelSelector, SelectorOperator};

fn check_globs(
    source: &Source,
    base: &str,
    patterns: &[NamespacePattern],
    out: &mut Vec<Diagnostic>,
) {
    check_glob_list(
        source,
        base,
        "namespace",
        patterns.iter().map(|p| p.0.as_str()),
        out,
    );
}

fn check_glob_list<'a>(
    source: &Source,
    base: &str,
    what: &str,
    patterns: impl IntoIterator<Item = &'a str>,
    out: &mut Vec<Diagnostic>,
) {
    for (i, p) in patterns.into_iter().enumerate() {
        if !is_glob(p) && !p.contains('!') {
            continue;
        }
        if let Err(e) = globset::GlobBuilder::new(p)
            .literal_separator(false)
            .build()
        {
            out.push(at_value(
                Code::InvalidPattern,
                source,
                &format!("{base}/{i}"),
                format!("`{p}` is not a valid {what} glob: {}", e.kind()),
                "use `*` (any run of characters), `?` (one character) and closed classes such as `[a-c]` or `[!x]`",
            ));
        }
    }
}

fn check_selector(
    source: &Source,
    base: &str,
    selector: &LabelSelector,
    out: &mut Vec<Diagnostic>,
) {
    for (i, r) in selector.match_expressions.iter().enumerate() {
        let pointer = format!("{base}/matchExpressions/{i}");
        match r.operator {
            SelectorOperator::In | SelectorOperator::NotIn if r.values.is_empty() => {
                out.push(at_value(
                    Code::InvalidPattern,
                    source,
                    &format!("{pointer}/operator"),
                    format!("`{:?}` on `{}` needs at least one value", r.operator, r.key),
                    "add `values: [...]`, or use `Exists` / `DoesNotExist` to test only for the key",
                ));
            }
            SelectorOperator::Exists | SelectorOperator::DoesNotExist if !r.values.is_empty() => {
                out.push(at_value(
                    Code::InvalidPattern,
                    source,
                    &format!("{pointer}/values"),
                    format!("`{:?}` on `{}` takes no values", r.operator, r.key),
                    "remove `values`, or use `In` / `NotIn` to compare values",
                ));
            }
            _ => {}
        }
    }
}

fn check_filters(source: &Source, include: &Include, exclude: &Exclude, out: &mut Vec<Diagnostic>) {
    check_globs(source, "/spec/include/namespaces", &include.namespaces, out);
    check_globs(source, "/spec/exclude/namespaces", &exclude.namespaces, out);
    if let Some(s) = &include.label_selector {
        check_selector(source, "/spec/include/labelSelector", s, out);
    }
    if let Some(s) = &exclude.label_selector {
        check_selector(source, "/spec/exclude/labelSelector", s, out);
    }
}

/// LB114: namespace and storage-class globs that do not compile (an unclosed `[`, a misplaced
/// `**`), and label selector requirements with the wrong number of values
/// (`In`/`NotIn` need values; `Exists`/`DoesNotExist` take none). The API
/// server rejects such selectors, and a glob that does not compile matches
/// nothing.
pub fn invalid_patterns(set: &PolicySet) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for Loaded { doc, source } in &set.policies {
        check_filters(source, &doc.spec.include, &doc.spec.exclude, &mut out);
        if let Some(s) = &doc.spec.clusters.selector {
            check_selector(source, "/spec/clusters/selector", s, &mut out);
        }
        for (i, rule) in doc.spec.volumes.iter().flat_map(|v| &v.rules).enumerate() {
            let base = format!("/spec/volumes/rules/{i}/match");
            check_glob_list(
                source,
                &format!("{base}/storageClasses"),
                "storage class",
                rule.matches.storage_classes.iter().map(|p| p.0.as_str()),
                &mut out,
            );
            if let Some(s) = &rule.matches.label_selector {
                check_selector(source, &format!("{base}/labelSelector"), s, &mut out);
            }
        }
    }
    for Loaded { doc, source } in &set.restores {
        check_filters(source, &doc.spec.include, &doc.spec.exclude, &mut out);
    }
    for Loaded { doc, source } in &set.clusters {
        check_globs(
            source,
            "/spec/restore/deniedNamespaces",
            &doc.spec.restore.denied_namespaces,
            &mut out,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;
    use crate::lint::testing::*;

    fn policy(extra: &str) -> String {
        format!(
            "API\nkind: BackupPolicy\nmetadata:\n  name: p\nspec:\n  clusters:\n    names: [c]\n  schedule: '0 0 * * *'\n  retention: {{keepDaily: 7}}\n  storage: s\n{extra}"
        )
    }

    #[rstest]
    #[case::fine(policy("  include:\n    namespaces: [team-*, 'app-[a-c]', 'x[!y]']\n"), &[])]
    #[case::unclosed(policy("  include:\n    namespaces: [ok, 'team-[a']\n"), &[(Code::InvalidPattern, 12, 22, "`team-[a` is not a valid namespace glob: unclosed character class; missing ']'")])]
    #[case::exclude(policy("  exclude:\n    namespaces: ['team-[z-a]']\n"), &[(Code::InvalidPattern, 12, 18, "`team-[z-a]` is not a valid namespace glob")])]
    #[case::in_without_values(policy("  include:\n    labelSelector:\n      matchExpressions:\n        - {key: tier, operator: In}\n"), &[(Code::InvalidPattern, 14, 33, "`In` on `tier` needs at least one value")])]
    #[case::exists_with_values(policy("  include:\n    labelSelector:\n      matchExpressions:\n        - {key: tier, operator: Exists, values: [a]}\n"), &[(Code::InvalidPattern, 14, 49, "`Exists` on `tier` takes no values")])]
    #[case::cluster_selector(policy("").replace("names: [c]", "selector:\n      matchExpressions:\n        - {key: env, operator: NotIn}"), &[(Code::InvalidPattern, 9, 32, "`NotIn` on `env` needs at least one value")])]
    #[case::volume_rules(policy("  volumes:\n    rules:\n      - match: {storageClasses: [fast, 'nfs-[']}\n        method: fileSystem\n      - match: {labelSelector: {matchExpressions: [{key: a, operator: In}]}}\n        method: skip\n"), &[(Code::InvalidPattern, 13, 40, "`nfs-[` is not a valid storage class glob"), (Code::InvalidPattern, 15, 71, "`In` on `a` needs at least one value")])]
    #[case::denied(cluster("c", "").replace("role: primary", "role: standby\n  restore:\n    deniedNamespaces: ['kube-[']"), &[(Code::InvalidPattern, 9, 24, "`kube-[` is not a valid namespace glob")])]
    fn patterns(#[case] doc: String, #[case] expect: &[(Code, usize, usize, &str)]) {
        let found = run(invalid_patterns, &doc);
        assert_eq!(found.len(), expect.len(), "{found:#?}");
        for (f, e) in found.iter().zip(expect) {
            assert_eq!((f.0, f.1, f.2), (e.0, e.1, e.2), "{found:#?}");
            assert!(f.3.starts_with(e.3), "{}", f.3);
        }
    }
}
