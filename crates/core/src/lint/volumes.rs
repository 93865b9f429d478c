//! Volume settings of a BackupPolicy that cannot work as written: volume
//! data asked for where the location cannot hold it (LB117), capacity
//! ranges no claim fits (LB120), step timeouts the whole-backup timeout
//! cuts short (LB121), and rules an earlier rule shadows (LB122).
//!
//! A policy without `volumes` is never flagged: its claims are protected
//! where that is possible and the plan reports the rest.

use super::{at_key, at_value};
use crate::diagnostic::{Code, Diagnostic};
use crate::load::{Loaded, PolicySet};
use crate::model::{VolumeMethod, default_move, default_snapshot_ready};

/// LB117, LB120, LB121, LB122 over every BackupPolicy with `volumes`.
pub fn volume_settings(set: &PolicySet) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for Loaded { doc, source } in &set.policies {
        let Some(volumes) = &doc.spec.volumes else {
            continue;
        };
        let storage = doc.spec.storage.as_str();
        // An unknown location is LB101's finding.
        let unencrypted = set
            .storage_location(storage)
            .is_some_and(|l| l.doc.spec.encryption.is_none());
        let no_recipients = |pointer: &str, method: VolumeMethod, out: &mut Vec<Diagnostic>| {
            if unencrypted && method.writes_repository() {
                out.push(at_value(
                    Code::VolumeDataWithoutRecipients,
                    source,
                    pointer,
                    format!(
                        "`{method}` writes volume data into storage location `{storage}`, which has no encryption recipients: no volume data can be stored there"
                    ),
                    format!(
                        "add `encryption.recipients` (age public keys) to StorageLocation `{storage}`, or use `snapshot` or `skip` for these claims"
                    ),
                ));
            }
        };
        if let Some(method) = volumes.method {
            no_recipients("/spec/volumes/method", method, &mut out);
        }
        for (i, rule) in volumes.rules.iter().enumerate() {
            let base = format!("/spec/volumes/rules/{i}");
            no_recipients(&format!("{base}/method"), rule.method, &mut out);
            if let Some(range) = &rule.matches.capacity
                && let (Some(min), Some(max)) = (&range.min, &range.max)
                && min.bytes() > max.bytes()
            {
                out.push(at_key(
                    Code::EmptyCapacityRange,
                    source,
                    &format!("{base}/match/capacity"),
                    format!(
                        "capacity range `{min}`..`{max}` is empty: its minimum is larger than its maximum, so rule {} matches no claim",
                        i + 1
                    ),
                    "swap `min` and `max`, or correct the one that is wrong",
                ));
            }
            if let Some(first) = volumes.rules[..i]
                .iter()
                .position(|r| r.matches == rule.matches)
            {
                out.push(at_key(
                    Code::ShadowedVolumeRule,
                    source,
                    &format!("{base}/match"),
                    format!(
                        "rule {} matches exactly the claims rule {} matches, and the first matching rule wins: it never applies",
                        i + 1,
                        first + 1
                    ),
                    "remove this rule, or narrow the earlier one",
                ));
            }
        }
        let timeouts = &volumes.timeouts;
        for (field, value, default) in [
            (
                "snapshotReady",
                timeouts.snapshot_ready,
                default_snapshot_ready(),
            ),
            ("move", timeouts.move_data, default_move()),
        ] {
            if value <= timeouts.backup {
                continue;
            }
            // At the step where it was raised, else at the lowered `backup`.
            let pointer = if value == default {
                "/spec/volumes/timeouts/backup".to_string()
            } else {
                format!("/spec/volumes/timeouts/{field}")
            };
            out.push(at_key(
                Code::VolumeTimeoutExceedsBackup,
                source,
                &pointer,
                format!(
                    "`timeouts.{field}` ({value}) is longer than the whole backup may take (`timeouts.backup`, {}): the backup times out first",
                    timeouts.backup
                ),
                format!("raise `timeouts.backup` to at least {value}, or lower `timeouts.{field}`"),
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

    fn docs(encrypted: bool, volumes: &str) -> String {
        format!(
            "{}---\nAPI\nkind: BackupPolicy\nmetadata:\n  name: p\nspec:\n  clusters:\n    names: [c]\n  schedule: '0 0 * * *'\n  retention: {{keepDaily: 7}}\n  storage: s\n{volumes}",
            storage_location("s", encrypted)
        )
    }

    #[rstest]
    #[case::no_volumes_unencrypted(docs(false, ""), &[])]
    #[case::default_method_unencrypted(docs(false, "  volumes:\n    keepLocalSnapshots: 2\n"), &[])]
    #[case::snapshot_unencrypted(docs(false, "  volumes:\n    method: snapshot\n    rules:\n      - {match: {storageClasses: [x]}, method: skip}\n"), &[])]
    #[case::move_unencrypted(docs(false, "  volumes:\n    method: snapshotMove\n"), &[(Code::VolumeDataWithoutRecipients, 19, 13, "`snapshotMove` writes volume data into storage location `s`, which has no encryption recipients")])]
    #[case::rule_unencrypted(docs(false, "  volumes:\n    rules:\n      - match: {storageClasses: ['nfs*']}\n        method: fileSystem\n"), &[(Code::VolumeDataWithoutRecipients, 21, 17, "`fileSystem` writes volume data")])]
    #[case::move_encrypted(docs(true, "  volumes:\n    method: snapshotMove\n    rules:\n      - {match: {csiDrivers: [d]}, method: fileSystem}\n"), &[])]
    #[case::empty_range(docs(true, "  volumes:\n    rules:\n      - match: {capacity: {min: 2Gi, max: 1500Mi}}\n        method: skip\n      - match: {capacity: {min: 1Gi, max: 1Gi}}\n        method: skip\n"), &[(Code::EmptyCapacityRange, 23, 17, "capacity range `2Gi`..`1500Mi` is empty")])]
    #[case::shadowed(docs(true, "  volumes:\n    rules:\n      - match: {accessModes: [ReadWriteMany]}\n        method: fileSystem\n      - match: {accessModes: [ReadWriteMany]}\n        method: skip\n"), &[(Code::ShadowedVolumeRule, 25, 9, "rule 2 matches exactly the claims rule 1 matches")])]
    #[case::move_timeout(docs(true, "  volumes:\n    timeouts:\n      move: 20h\n"), &[(Code::VolumeTimeoutExceedsBackup, 23, 7, "`timeouts.move` (20h) is longer than the whole backup may take (`timeouts.backup`, 12h)")])]
    #[case::short_backup(docs(true, "  volumes:\n    timeouts:\n      backup: 5m\n"), &[(Code::VolumeTimeoutExceedsBackup, 23, 7, "`timeouts.move` (4h) is longer"), (Code::VolumeTimeoutExceedsBackup, 23, 7, "`timeouts.snapshotReady` (10m) is longer")])]
    fn volume_findings(#[case] doc: String, #[case] expect: &[(Code, usize, usize, &str)]) {
        let found = run(volume_settings, &doc);
        assert_eq!(found.len(), expect.len(), "{found:#?}");
        for (f, e) in found.iter().zip(expect) {
            assert_eq!((f.0, f.1, f.2), (e.0, e.1, e.2), "{found:#?}");
            assert!(f.3.starts_with(e.3), "{}", f.3);
        }
    }

    #[test]
    fn schema_refuses_bad_volume_settings() {
        for bad in [
            "  volumes:\n    method: restic\n",
            "  volumes:\n    rules:\n      - match: {}\n        method: skip\n",
            "  volumes:\n    rules:\n      - match: {capacity: {min: 10GB}}\n        method: skip\n",
            "  volumes:\n    rules:\n      - match: {accessModes: [RWO]}\n        method: skip\n",
            "  volumes:\n    concurrency: {moversPerNode: 0}\n",
            "  volumes:\n    timeouts: {move: 4 hours}\n",
        ] {
            assert!(schema_violation(&docs(true, bad)), "{bad}");
        }
    }
}
