//! Retention of the image blobs a location keeps under `images/`: which
//! blobs a sweep removes, decided without I/O.
//!
//! ```text
//! store: list images/blobs (digest, last modified), every manifest's
//!        images[].blobs, images/pending/* (running backups' references)
//!   ─▶ plan_sweep(blobs, referenced, pending, now, grace) ─▶ SweepPlan
//!   ─▶ store: delete SweepPlan::delete, then SweepPlan::stale_pending
//! ```
//!
//! Mark and sweep: a blob is marked by every committed backup whose
//! manifest lists it, and by every running backup's pending reference
//! file written within the grace. A blob written within the grace is never
//! swept either (its backup may not have recorded it yet). The grace
//! ([`sweep_grace`]) is longer than the longest backup may run, so a
//! backup that found a blob present and skipped its upload commits before
//! that blob can be swept.

use std::collections::BTreeSet;

use jiff::Timestamp;

use crate::Duration;
use crate::model::{BackupPolicy, default_backup_timeout};

/// The shortest grace of a sweep.
pub const MIN_SWEEP_GRACE: Duration = Duration::from_secs(24 * 3600);

/// One blob stored under `images/blobs/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlob {
    /// `sha256:<hex>`.
    pub digest: String,
    /// When the object was last written.
    pub modified: Timestamp,
}

/// The references a running (or dead) backup recorded before it looked
/// for its blobs in the location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRefs {
    /// The reference file, as the store names it.
    pub name: String,
    /// When it was last written.
    pub modified: Timestamp,
    pub digests: BTreeSet<String>,
}

/// What a sweep does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepPlan {
    /// Digests of the blobs to delete: unreferenced and older than the grace.
    pub delete: Vec<String>,
    /// Blobs a committed backup or a fresh pending file references.
    pub referenced: usize,
    /// Unreferenced blobs kept because they were written within the grace.
    pub recent: usize,
    /// Pending reference files older than the grace (their backup is long
    /// over): deleted after the blobs.
    pub stale_pending: Vec<String>,
}

/// Decides a sweep at `now`. `referenced` holds the digests every
/// committed manifest of the location lists (all clusters).
pub fn plan_sweep(
    blobs: &[StoredBlob],
    referenced: &BTreeSet<String>,
    pending: &[PendingRefs],
    now: Timestamp,
    grace: Duration,
) -> SweepPlan {
    let cutoff = now.checked_sub(grace.to_signed()).unwrap_or(Timestamp::MIN);
    let mut marked: BTreeSet<&str> = referenced.iter().map(String::as_str).collect();
    let mut plan = SweepPlan::default();
    for p in pending {
        if p.modified > cutoff {
            marked.extend(p.digests.iter().map(String::as_str));
        } else {
            plan.stale_pending.push(p.name.clone());
        }
    }
    for blob in blobs {
        if marked.contains(blob.digest.as_str()) {
            plan.referenced += 1;
        } else if blob.modified > cutoff {
            plan.recent += 1;
        } else {
            plan.delete.push(blob.digest.clone());
        }
    }
    plan.delete.sort();
    plan.stale_pending.sort();
    plan
}

/// The grace of a sweep of a location: twice the longest backup of the
/// policies that copy images into it (`volumes.timeouts.backup`, default
/// 12h) and at least [`MIN_SWEEP_GRACE`].
pub fn sweep_grace<'a>(policies: impl IntoIterator<Item = &'a BackupPolicy>) -> Duration {
    let longest = policies
        .into_iter()
        .filter(|p| p.spec.images.as_ref().is_some_and(|i| i.copies()))
        .map(|p| {
            p.spec
                .volumes
                .as_ref()
                .map_or_else(default_backup_timeout, |v| v.timeouts.backup)
        })
        .max()
        .unwrap_or_else(default_backup_timeout);
    Duration::from_secs(longest.as_secs().saturating_mul(2)).max(MIN_SWEEP_GRACE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn blob(d: &str, modified: &str) -> StoredBlob {
        StoredBlob {
            digest: d.into(),
            modified: at(modified),
        }
    }

    #[rstest::rstest]
    // Unreferenced and older than the grace: swept.
    #[case("sha256:old", "2026-11-01T00:00:00Z", &[], &[], true)]
    // Unreferenced but written within the grace: kept.
    #[case("sha256:new", "2026-11-30T12:00:00Z", &[], &[], false)]
    // Old but a committed backup lists it.
    #[case("sha256:old", "2026-11-01T00:00:00Z", &["sha256:old"], &[], false)]
    // Old, referenced by a running backup's fresh pending file.
    #[case("sha256:old", "2026-11-01T00:00:00Z", &[], &["2026-11-30T20:00:00Z"], false)]
    // Old, referenced only by a pending file older than the grace.
    #[case("sha256:old", "2026-11-01T00:00:00Z", &[], &["2026-11-20T00:00:00Z"], true)]
    fn sweep_decisions(
        #[case] digest: &str,
        #[case] modified: &str,
        #[case] referenced: &[&str],
        #[case] pending: &[&str],
        #[case] swept: bool,
    ) {
        let now = at("2026-12-01T00:00:00Z");
        let referenced = referenced.iter().map(|s| s.to_string()).collect();
        let pending: Vec<PendingRefs> = pending
            .iter()
            .enumerate()
            .map(|(i, m)| PendingRefs {
                name: format!("p{i}"),
                modified: at(m),
                digests: BTreeSet::from([digest.to_string()]),
            })
            .collect();
        let plan = plan_sweep(
            &[blob(digest, modified)],
            &referenced,
            &pending,
            now,
            MIN_SWEEP_GRACE,
        );
        assert_eq!(plan.delete == [digest.to_string()], swept, "{plan:?}");
    }

    #[test]
    fn stale_pending_files_are_removed_and_fresh_ones_kept() {
        let now = at("2026-12-01T00:00:00Z");
        let pending = [
            PendingRefs {
                name: "old".into(),
                modified: at("2026-11-01T00:00:00Z"),
                digests: BTreeSet::new(),
            },
            PendingRefs {
                name: "fresh".into(),
                modified: at("2026-11-30T23:00:00Z"),
                digests: BTreeSet::new(),
            },
        ];
        let plan = plan_sweep(&[], &BTreeSet::new(), &pending, now, MIN_SWEEP_GRACE);
        assert_eq!(plan.stale_pending, ["old"]);
    }

    #[test]
    fn the_grace_outlasts_the_longest_backup() {
        let policy = |timeout: &str, images: bool| -> BackupPolicy {
            let mut spec = serde_json::json!({
                "clusters": {"names": ["a"]}, "schedule": "0 * * * *",
                "retention": {"keepLast": 1}, "storage": "s",
                "volumes": {"timeouts": {"backup": timeout}},
            });
            if images {
                spec["images"] = serde_json::json!({"internalRegistry": "copy"});
            }
            serde_json::from_value(serde_json::json!({
                "apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupPolicy",
                "metadata": {"name": "p"}, "spec": spec,
            }))
            .unwrap()
        };
        let long = policy("36h", true);
        let short = policy("1h", true);
        let no_images = policy("100h", false);
        assert_eq!(sweep_grace([&short]), MIN_SWEEP_GRACE);
        assert_eq!(
            sweep_grace([&short, &long, &no_images]),
            Duration::from_secs(72 * 3600)
        );
        assert_eq!(sweep_grace([]), MIN_SWEEP_GRACE);
    }
}
