//! Retention that keeps nothing (LB106) or only `minKeep` (LB116).

use super::at_key;
use crate::diagnostic::{Code, Diagnostic};
use crate::load::{Loaded, PolicySet};
use crate::model::Retention;

/// Whether any keep rule or `maxAge` keeps a backup.
fn has_rule(r: &Retention) -> bool {
    [
        r.keep_last,
        r.keep_hourly,
        r.keep_daily,
        r.keep_weekly,
        r.keep_monthly,
        r.keep_yearly,
    ]
    .into_iter()
    .any(|n| n.unwrap_or(0) > 0)
        || r.max_age.is_some_and(|d| d.as_secs() > 0)
}

/// LB106: no keep rule above 0, no `maxAge` and `minKeep: 0`: every backup is
/// pruned as soon as the next reconcile runs. An error.
///
/// LB116: no keep rule and no `maxAge`, but `minKeep` ≥ 1 (it defaults to
/// 1): lifeboat keeps only the `minKeep` newest backups. That works, but it
/// is almost never meant: with the default a single backup survives, so one
/// bad backup (taken after data was already corrupted or deleted) replaces
/// the last good one. A warning: write `keepLast: N` if that is what you
/// want, which says it in the policy's own words.
pub fn retention_keeps_nothing(set: &PolicySet) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for Loaded { doc, source } in &set.policies {
        let r = &doc.spec.retention;
        if has_rule(r) {
            continue;
        }
        if r.min_keep == 0 {
            out.push(at_key(
                Code::RetentionKeepsNothing,
                source,
                "/spec/retention",
                "this retention keeps no backup: no keep rule is above 0, there is no `maxAge`, and `minKeep` is 0, so every backup is deleted as soon as it is taken",
                "add a rule, for example `keepDaily: 7` and `keepWeekly: 4`, or `maxAge: 30d`",
            ));
        } else {
            let n = r.min_keep;
            out.push(at_key(
                Code::RetentionOnlyMinKeep,
                source,
                "/spec/retention",
                format!(
                    "this retention has no keep rule and no `maxAge`, so only `minKeep` keeps backups: the {} newest survive{}",
                    if n == 1 { "single".to_string() } else { n.to_string() },
                    if n == 1 { ", and one bad backup replaces the last good one" } else { "" }
                ),
                format!("add keep rules, for example `keepDaily: 7` and `keepWeekly: 4`; if {n} newest is really what you want, write `keepLast: {n}`"),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;
    use crate::lint::testing::*;

    fn policy(retention: &str) -> String {
        format!(
            "API\nkind: BackupPolicy\nmetadata:\n  name: p\nspec:\n  clusters:\n    names: [c]\n  schedule: '0 0 * * *'\n  retention: {retention}\n  storage: s\n"
        )
    }

    #[rstest]
    #[case("{keepDaily: 7}", &[])]
    #[case("{maxAge: 30d, minKeep: 0}", &[])]
    #[case("{keepLast: 1, minKeep: 0}", &[])]
    #[case("{keepDaily: 0, minKeep: 0}", &[(Code::RetentionKeepsNothing, 9, 3)])]
    #[case("{maxAge: 0s, minKeep: 0}", &[(Code::RetentionKeepsNothing, 9, 3)])]
    #[case("{}", &[(Code::RetentionOnlyMinKeep, 9, 3)])]
    #[case("{minKeep: 3, keepWeekly: 0}", &[(Code::RetentionOnlyMinKeep, 9, 3)])]
    fn rules(#[case] retention: &str, #[case] expect: &[(Code, usize, usize)]) {
        let found = run(retention_keeps_nothing, &policy(retention));
        let at: Vec<(Code, usize, usize)> = found.iter().map(|f| (f.0, f.1, f.2)).collect();
        assert_eq!(at, expect, "{found:#?}");
    }
}
