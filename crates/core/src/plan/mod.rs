//! The planner: what a cluster's controller should do now, computed from the
//! policy set in Git, what it observed in object storage and the time.
//!
//! `lifeboat plan` prints a [`Plan`] and `lifeboat reconcile` applies the same
//! one, so both come from [`plan`], a pure function: no I/O, `now` passed in,
//! and an output that depends neither on the order of the observed inputs nor
//! on the time zone `now` was written in.
//!
//! ```text
//! PolicySet (Git) ─┐
//! Observed (store) ┼─▶ plan(cluster, now, options) ─▶ Plan { actions, facts, notes }
//! now, options ────┘                                     │
//!                     compare(base, head) ◀── two plans ─┘ (`lifeboat plan --base`)
//! ```
//!
//! How it decides (DESIGN.md, "Reconcile semantics"):
//!
//! - **Which policies.** A policy applies to the planning cluster when its
//!   `clusters` names it or its label selector matches that Cluster
//!   document's labels ([`PolicySet::applies`], shared with lint).
//! - **Backups.** The latest schedule slot at or before `now` is due when no
//!   backup of that slot (any phase: a failed backup still takes the name)
//!   exists in the policy's location for this cluster. A new policy therefore
//!   backs up at once; older missed slots are not back-filled. Nothing is
//!   started for a suspended policy, a policy with a backup running, or a
//!   location that is read-only, unknown or could not be read.
//! - **Retention.** [`crate::retention::apply`] over the policy's backups in
//!   its location, in the policy's time zone. Nothing is pruned while a
//!   backup of the policy runs, in a read-only or unreadable location, or
//!   when [`PlanOptions::prune`] is off (the newest revision was invalid).
//! - **Orphans.** Backups of this cluster whose (location, policy) is no
//!   longer an applicable policy writing there are marked first
//!   ([`Action::MarkOrphaned`]), pruned once the mark is older than
//!   [`PlanOptions::orphan_grace`], and unmarked when the policy comes back.
//! - **Incomplete backups** (no manifest) older than
//!   [`PlanOptions::incomplete_grace`] are deleted, unless a backup of their
//!   policy is running.
//! - **Restores.** A RestoreRequest targeting this cluster runs once: any
//!   record but `InProgress` means done; an `InProgress` record that no
//!   running restore explains was interrupted and is marked failed, never
//!   re-run. Otherwise its source backup is resolved (`latest`, with
//!   `notAfter`, or by name) and restored, or the request waits.
//! - **Prerequisites.** For a restore that runs now, with what the cluster
//!   provides in [`Inventory::provides`], the CRDs and operators its
//!   backup needs that the cluster lacks ([`crate::prerequisites`]); they
//!   are warnings on the restore, never a reason not to run it.
//! - **Volumes.** With a cluster inventory in [`Observed::inventory`], each
//!   policy's facts say how each selected bound claim is protected, or why
//!   it is not ([`crate::volumes::decide`]); without one, "not evaluated".
//!
//! Actions come out sorted: interrupted restores, restores, backups,
//! orphan marks, prunes, then clean-ups, each by name. Every decision not to
//! act that a person should know about is in the facts or the notes.

mod compare;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::load::PolicySet;
use crate::model::{AccessMode, BackupPolicy, RestoreRequest, Retention, StorageLocation};
use crate::prerequisites::{Missing, Prerequisite};
use crate::retention::{self, Candidate, FAILED_HISTORY};
use crate::schedule::{self, Schedule};
use crate::volumes::{Inventory, VolumeDecision};

pub use compare::{
    Change, ChangeType, DocumentChange, FieldChange, RpoChange, TrustChange, TrustChangeType,
    compare,
};

/// The name of the backup of `policy` for a schedule slot:
/// `<policy>-<YYYYMMDD>-<HHMMSS>` of the slot in UTC. The store names backup
/// directories the same way (it should call this one).
pub fn backup_name(policy: &str, slot: Timestamp) -> String {
    format!("{policy}-{}", slot.strftime("%Y%m%d-%H%M%S"))
}

/// Whether `name` is a backup name of `policy` ([`backup_name`]): the
/// policy, then `-YYYYMMDD-HHMMSS` (so `blog-x-…` is no backup of `blog`).
pub fn is_backup_of(name: &str, policy: &str) -> bool {
    name.strip_prefix(policy)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|rest| {
            rest.len() == 15
                && rest.bytes().enumerate().all(|(i, b)| {
                    if i == 8 {
                        b == b'-'
                    } else {
                        b.is_ascii_digit()
                    }
                })
        })
}

// ---------------------------------------------------------------- input

/// What the controller observed in object storage, and what it is doing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Observed {
    /// Committed backups (manifests) the controller read: every backup of the planning cluster
    /// in every StorageLocation of the set, plus backups of other clusters that RestoreRequests
    /// targeting this cluster name as their source.
    pub backups: Vec<ObservedBackup>,
    /// Backup directories without a manifest.
    pub incomplete: Vec<IncompleteBackup>,
    /// Restore records found for the planning cluster (target).
    pub restores: Vec<ObservedRestore>,
    /// Orphan marks: when the controller first saw backups of a policy that is no longer in Git.
    pub orphans: Vec<OrphanMark>,
    /// Locations whose catalog could not be read (name, error): nothing there is pruned or cleaned up.
    pub unavailable: Vec<(String, String)>,
    /// Work in progress in this controller right now.
    pub running: Running,
    /// The planning cluster's claims, storage and snapshot classes and
    /// pods; `None` without a view of the cluster (volumes are then "not
    /// evaluated").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<Inventory>,
    /// The planning cluster's volume repositories, with their last
    /// maintenance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repositories: Vec<ObservedRepository>,
    /// Backups in the Velero locations (`format: velero`) that
    /// RestoreRequests targeting this cluster restore from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub velero_backups: Vec<ObservedVeleroBackup>,
}

/// A Velero backup, from its `velero-backup.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedVeleroBackup {
    /// The Velero location holding it.
    pub location: String,
    pub name: String,
    /// As Velero wrote it: `Completed`, `PartiallyFailed`, `InProgress`,
    /// `Failed`, … (empty when it wrote none).
    pub phase: String,
    pub started: Option<Timestamp>,
}

impl ObservedVeleroBackup {
    /// Whether it can be restored: Velero finished it (`Completed` or
    /// `PartiallyFailed`, which restores what it holds, as in Velero).
    pub fn restorable(&self) -> bool {
        matches!(self.phase.as_str(), "Completed" | "PartiallyFailed")
    }
}

/// A volume repository of the planning cluster (its newest generation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedRepository {
    pub location: String,
    pub namespace: String,
    pub generation: u32,
    /// When it was created.
    pub created: Timestamp,
    /// When a prune was last started, and whether it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<Timestamp>,
    #[serde(default)]
    pub last_failed: bool,
}

impl ObservedRepository {
    /// When its next prune is due: `every` after the last success (or its
    /// creation), an hour after a failed attempt.
    pub fn due(&self, m: &crate::model::Maintenance) -> Timestamp {
        match self.last_attempt {
            Some(t) if self.last_failed => later(t, crate::model::MAINTENANCE_RETRY.to_signed()),
            _ => later(
                self.last_success.unwrap_or(self.created),
                m.every.to_signed(),
            ),
        }
    }
}

/// Work in progress in the controller.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Running {
    /// Policies with a backup running.
    pub backups: Vec<String>,
    /// RestoreRequests being restored.
    pub restores: Vec<String>,
    /// Volume repositories being maintained: (location, namespace).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub maintenance: Vec<(String, String)>,
}

/// A committed backup: its manifest, as far as planning needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedBackup {
    pub location: String,
    pub cluster: String,
    pub name: String,
    pub policy: String,
    /// The schedule slot the backup stands for.
    pub slot: Timestamp,
    pub start: Timestamp,
    pub end: Timestamp,
    pub phase: BackupPhase,
    pub items: u64,
    pub bytes: u64,
    /// The state of the manifest's signature.
    #[serde(default)]
    pub signature: SignatureStatus,
    /// Why the signature is not valid (key id, reason), for reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_detail: Option<String>,
    /// Its volume data, for reports.
    #[serde(default, skip_serializing_if = "VolumeTotals::is_empty")]
    pub volumes: VolumeTotals,
    /// What a target must provide to restore it (the manifest's
    /// `prerequisites`: CRDs, operators).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prerequisites: Vec<Prerequisite>,
}

/// A backup's volume data: claims carried, claims failed, bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeTotals {
    pub completed: u32,
    pub failed: u32,
    /// Bytes of every file of the completed volumes' snapshots.
    pub bytes: u64,
}

impl VolumeTotals {
    pub fn is_empty(&self) -> bool {
        self.completed == 0 && self.failed == 0
    }
}

/// The signature of a backup's manifest, as the store checked it against
/// the keys trusted in Git.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureStatus {
    /// Signed by a key trusted for the backup's cluster.
    Valid,
    /// No signature.
    #[default]
    Unsigned,
    /// Signed by a key not trusted for the backup's cluster.
    Untrusted,
    /// The signature does not verify, or the manifest disagrees with its
    /// path or signature.
    Bad,
}

impl fmt::Display for SignatureStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SignatureStatus::Valid => "valid",
            SignatureStatus::Unsigned => "unsigned",
            SignatureStatus::Untrusted => "untrusted",
            SignatureStatus::Bad => "bad",
        })
    }
}

impl ObservedBackup {
    /// Whether the backup counts (for retention, `latest` and "this slot is
    /// done") given whether signing is required for it: only valid
    /// signatures where it is, anything but a bad one where it is not. The
    /// store refuses to restore exactly the backups that do not count.
    pub fn counts(&self, signing_required: bool) -> bool {
        match self.signature {
            SignatureStatus::Valid => true,
            SignatureStatus::Unsigned | SignatureStatus::Untrusted => !signing_required,
            SignatureStatus::Bad => false,
        }
    }
}

/// The outcome of a backup, from its manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BackupPhase {
    Completed,
    PartiallyFailed,
    Failed,
}

impl BackupPhase {
    /// `Completed` or `PartiallyFailed`: the backup can be restored.
    pub fn is_successful(self) -> bool {
        self != BackupPhase::Failed
    }
}

impl fmt::Display for BackupPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackupPhase::Completed => "Completed",
            BackupPhase::PartiallyFailed => "PartiallyFailed",
            BackupPhase::Failed => "Failed",
        })
    }
}

/// A backup directory without a manifest: a backup that never committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IncompleteBackup {
    pub location: String,
    pub cluster: String,
    pub name: String,
    /// When anything in the directory was last written.
    pub last_modified: Timestamp,
    /// Its operation record: the backup is being written, or was
    /// interrupted and is resumed while its slot is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<ObservedOperation>,
}

/// A backup's operation record (`operation.json`), as far as planning and
/// reports need it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedOperation {
    /// The controller instance that writes (or wrote) it.
    pub owner: String,
    pub started: Timestamp,
    pub updated: Timestamp,
    /// After this the backup is given up.
    pub deadline: Timestamp,
    /// `objects` or `volumes`.
    pub step: String,
    pub volumes_done: u32,
    pub volumes_planned: u32,
    pub bytes_done: u64,
    /// Claims being moved, `namespace/pvc`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moving: Vec<String>,
}

impl ObservedOperation {
    /// When the backup should end, at the pace of its finished volumes
    /// (none before the first one).
    pub fn eta(&self, now: Timestamp) -> Option<Timestamp> {
        if self.volumes_done == 0 || self.volumes_done >= self.volumes_planned {
            return None;
        }
        let per = now.duration_since(self.started) / i32::try_from(self.volumes_done).ok()?;
        let left = i32::try_from(self.volumes_planned - self.volumes_done).ok()?;
        now.checked_add(per.checked_mul(left)?).ok()
    }
}

/// A restore record in object storage: the source of truth of a restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedRestore {
    pub location: String,
    pub request: String,
    pub phase: RestoreState,
    pub source_backup: String,
    pub start: Timestamp,
    pub end: Option<Timestamp>,
    /// Until when an interrupted `InProgress` restore is resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
}

/// The phase of a restore record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RestoreState {
    InProgress,
    Completed,
    PartiallyFailed,
    Failed,
}

/// When the controller first saw backups of a policy that is no longer in Git
/// (for this cluster, in this location).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrphanMark {
    pub location: String,
    pub policy: String,
    pub since: Timestamp,
}

/// Knobs of the planner.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanOptions {
    /// How long backups of a policy deleted from Git are kept after the controller first saw them orphaned. Default 30d.
    pub orphan_grace: SignedDuration,
    /// Age after which a backup directory without a manifest is deleted. Default 24h.
    pub incomplete_grace: SignedDuration,
    /// False when the newest policy revision failed to validate (the set passed in is then the last valid one):
    /// nothing is pruned or cleaned up, and the plan says why.
    pub prune: bool,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            orphan_grace: SignedDuration::from_hours(30 * 24),
            incomplete_grace: SignedDuration::from_hours(24),
            prune: true,
        }
    }
}

// ---------------------------------------------------------------- output

/// What to do now, and the facts behind it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub cluster: String,
    pub now: Timestamp,
    /// In the order to apply them.
    pub actions: Vec<Action>,
    /// The policies that apply to the cluster, by name.
    pub policies: Vec<PolicyFacts>,
    /// Every RestoreRequest of the set, by name.
    pub restores: Vec<RestoreFacts>,
    /// Orphaned backups, by location and policy.
    pub orphans: Vec<OrphanFacts>,
    /// Why things that would otherwise happen do not.
    pub notes: Vec<String>,
}

impl Plan {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all_fields = "camelCase")]
pub enum Action {
    /// Take the backup `name` of `policy` for `slot`.
    Backup {
        policy: String,
        location: String,
        slot: Timestamp,
        name: String,
        reason: BackupReason,
    },
    /// Delete a committed backup.
    Prune {
        location: String,
        cluster: String,
        policy: String,
        backup: String,
        slot: Timestamp,
        reason: PruneReason,
    },
    /// Run a RestoreRequest from a backup.
    Restore {
        request: String,
        /// Where the backup is (a lifeboat or a Velero location).
        location: String,
        source_cluster: String,
        backup: String,
        dry_run: bool,
        /// For a backup in a Velero location: the lifeboat location that
        /// keeps the restore record (Velero's bucket is never written).
        /// `None`: the record goes beside the backup.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        record_location: Option<String>,
    },
    /// Delete a backup directory that never got a manifest.
    CleanupIncomplete {
        location: String,
        cluster: String,
        backup: String,
        last_modified: Timestamp,
    },
    /// Record that backups of `policy` in `location` are orphaned as of
    /// `since` (the plan's `now`): the grace period starts.
    MarkOrphaned {
        location: String,
        policy: String,
        since: Timestamp,
    },
    /// Remove an orphan mark: the policy is back, or nothing of it is left.
    UnmarkOrphaned { location: String, policy: String },
    /// An InProgress record with no running restore: the controller died mid-restore. Mark it Failed; never re-run.
    FinishInterruptedRestore { location: String, request: String },
    /// Prune the volume repository of `namespace` in `location` (two-phase).
    MaintainRepository {
        location: String,
        namespace: String,
        generation: u32,
        /// How long marked packs are kept.
        keep_delete: crate::duration::Duration,
        /// The last successful prune (`None`: never).
        last_success: Option<Timestamp>,
    },
}

impl Action {
    /// Whether the action deletes data.
    pub fn is_destructive(&self) -> bool {
        matches!(
            self,
            Action::Prune { .. } | Action::CleanupIncomplete { .. }
        )
    }

    /// One line for humans.
    pub fn summary(&self) -> String {
        match self {
            Action::Backup {
                policy,
                location,
                name,
                reason,
                ..
            } => format!("back up `{policy}` to `{location}` as `{name}` ({reason})"),
            Action::Prune {
                location,
                cluster,
                backup,
                reason,
                ..
            } => format!("prune `{backup}` of cluster `{cluster}` from `{location}`: {reason}"),
            Action::Restore {
                request,
                location,
                source_cluster,
                backup,
                dry_run,
                record_location: None,
            } => format!(
                "restore `{backup}` of cluster `{source_cluster}` from `{location}` for request `{request}`{}",
                if *dry_run { " (dry run)" } else { "" }
            ),
            Action::Restore {
                request,
                location,
                backup,
                dry_run,
                record_location: Some(record),
                ..
            } => format!(
                "restore Velero backup `{backup}` from `{location}` for request `{request}`{}, its record in `{record}`",
                if *dry_run { " (dry run)" } else { "" }
            ),
            Action::CleanupIncomplete {
                location,
                cluster,
                backup,
                last_modified,
            } => format!(
                "delete incomplete backup `{backup}` of cluster `{cluster}` from `{location}`: no manifest, last written {last_modified}"
            ),
            Action::MarkOrphaned {
                location, policy, ..
            } => format!(
                "mark backups of `{policy}` in `{location}` as orphaned: no policy of this cluster writes them any more"
            ),
            Action::UnmarkOrphaned { location, policy } => {
                format!("unmark backups of `{policy}` in `{location}`: no longer orphaned")
            }
            Action::FinishInterruptedRestore { location, request } => format!(
                "mark restore `{request}` in `{location}` as Failed: it was interrupted and is not run again"
            ),
            Action::MaintainRepository {
                location,
                namespace,
                last_success,
                ..
            } => format!(
                "prune the volume repository of `{namespace}` in `{location}` ({})",
                match last_success {
                    Some(t) => format!("last pruned {t}"),
                    None => "never pruned".to_string(),
                }
            ),
        }
    }

    /// Where the action sorts: by kind, then by names.
    fn order(&self) -> (u8, &str, &str, &str) {
        match self {
            Action::FinishInterruptedRestore { location, request } => (0, request, location, ""),
            Action::Restore {
                request,
                location,
                backup,
                ..
            } => (1, request, location, backup),
            Action::Backup {
                policy,
                location,
                name,
                ..
            } => (2, policy, location, name),
            Action::UnmarkOrphaned { location, policy } => (3, location, policy, ""),
            Action::MarkOrphaned {
                location, policy, ..
            } => (4, location, policy, ""),
            Action::Prune {
                location,
                policy,
                backup,
                ..
            } => (5, location, policy, backup),
            Action::CleanupIncomplete {
                location, backup, ..
            } => (6, location, backup, ""),
            Action::MaintainRepository {
                location,
                namespace,
                ..
            } => (7, location, namespace, ""),
        }
    }
}

/// Why a backup is taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all_fields = "camelCase")]
pub enum BackupReason {
    /// The policy has no backup in its location yet.
    FirstBackup,
    /// The latest slot has no backup; `previous` is the slot of the newest one.
    Due { previous: Timestamp },
}

impl fmt::Display for BackupReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackupReason::FirstBackup => f.write_str("first backup of this policy"),
            BackupReason::Due { previous } => {
                write!(f, "slot due, the newest backup is of slot {previous}")
            }
        }
    }
}

/// Why a backup is pruned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all_fields = "camelCase")]
pub enum PruneReason {
    /// No retention rule keeps it, for example "not kept by keepLast 3, keepDaily 7, maxAge 30d".
    Retention { rules: String },
    /// Its policy is orphaned since `since` and the grace period is over.
    Orphaned { since: Timestamp },
    /// A failed backup older than the newest few kept for diagnosis.
    FailedHistory,
}

impl fmt::Display for PruneReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PruneReason::Retention { rules } => f.write_str(rules),
            PruneReason::Orphaned { since } => write!(
                f,
                "its policy no longer applies here, orphaned since {since} and the grace period is over"
            ),
            PruneReason::FailedHistory => write!(
                f,
                "failed backup older than the newest {FAILED_HISTORY} failed ones kept for diagnosis"
            ),
        }
    }
}

/// What the planner knows about one policy of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyFacts {
    pub policy: String,
    pub location: String,
    pub suspended: bool,
    /// The newest restorable backup (by slot).
    pub last_success: Option<BackupRef>,
    /// The newest backup of any phase (by slot).
    pub last_backup: Option<BackupRef>,
    /// The next slot after `now` (none when suspended).
    pub next_slot: Option<Timestamp>,
    pub rpo: Option<Duration>,
    pub rpo_status: RpoStatus,
    /// Backups left after this plan's prunes.
    pub retained: usize,
    /// Backups this plan prunes.
    pub pruned: usize,
    /// A backup of the policy is running.
    pub running: bool,
    /// The operation record of the policy's newest unfinished backup in
    /// its location: its progress while it runs, or what a resumed run
    /// takes over after an interruption.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_progress: Option<InProgress>,
    /// What stops the policy from working as written, in words.
    pub problems: Vec<String>,
    /// How each selected bound claim's data is protected, or why it is not
    /// ([`crate::volumes::decide`]); `None`: not evaluated (no view of the
    /// cluster; absent from JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<VolumeDecision>>,
    /// The exec hooks a backup would run, per pod ([`crate::hooks::pod_hooks`]);
    /// `None`: none, or not evaluated (no view of the cluster).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hooks: Option<Vec<crate::hooks::PodHooks>>,
    /// The backup-level hooks a backup would run (`spec.hooks.before`,
    /// then `after`); an `exec` hook's pod is chosen from the cluster's
    /// pods when the plan has a view of them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub backup_hooks: Vec<crate::hooks::level::LevelHook>,
}

/// An unfinished backup of a policy and its operation record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InProgress {
    pub backup: String,
    #[serde(flatten)]
    pub operation: ObservedOperation,
}

/// A backup, briefly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupRef {
    pub name: String,
    pub slot: Timestamp,
    pub end: Timestamp,
    pub phase: BackupPhase,
    #[serde(skip_serializing_if = "VolumeTotals::is_empty")]
    pub volumes: VolumeTotals,
}

impl From<&ObservedBackup> for BackupRef {
    fn from(b: &ObservedBackup) -> Self {
        BackupRef {
            name: b.name.clone(),
            slot: b.slot,
            end: b.end,
            phase: b.phase,
            volumes: b.volumes,
        }
    }
}

/// The recovery point objective, checked at `now`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all_fields = "camelCase")]
pub enum RpoStatus {
    /// The policy sets no RPO.
    NotSet,
    /// The newest successful backup ended `age` ago, within the RPO.
    Met { age: SignedDuration },
    /// The newest successful backup ended `age` ago, `by` more than the RPO.
    Violated {
        age: SignedDuration,
        by: SignedDuration,
    },
    /// There is no successful backup.
    NoBackup,
}

/// What the planner decided about one RestoreRequest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreFacts {
    pub request: String,
    pub state: RestoreFactState,
    pub message: String,
    /// The recovery time objective of the source policy
    /// (`objectives.rto`), which the restore's duration is reported
    /// against.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rto: Option<Duration>,
    /// For a restore that runs now: the prerequisites of its backup (CRDs,
    /// operators) that the target (this cluster) lacks and the restore does
    /// not create, each saying what to install ([`crate::prerequisites`]).
    /// `None`: not evaluated (no view of the cluster, or no restore runs;
    /// absent from JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing_prerequisites: Option<Vec<Missing>>,
}

/// Where a RestoreRequest stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RestoreFactState {
    /// It runs now (a Restore action is planned).
    Pending,
    /// Its source backup is not found yet (the message says what is missing).
    Waiting,
    /// It is running in this controller.
    Running,
    /// Its record says it finished (or it was interrupted and is marked failed).
    Done,
    /// It targets another cluster.
    NotForThisCluster,
}

/// Backups of a policy that no longer writes to their location from this cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrphanFacts {
    pub policy: String,
    pub location: String,
    pub backups: usize,
    /// When they were first seen orphaned (none before the mark is written).
    pub since: Option<Timestamp>,
    /// When they are pruned (none where lifeboat never prunes).
    pub prune_at: Option<Timestamp>,
}

// ---------------------------------------------------------------- planning

/// Plans what the controller of `cluster` does at `now`. See the module
/// documentation for the rules.
pub fn plan(
    set: &PolicySet,
    observed: &Observed,
    cluster: &str,
    now: Timestamp,
    options: &PlanOptions,
) -> Plan {
    let mut planner = Planner::new(set, observed, cluster, now, options);
    planner.restores();
    planner.policies();
    planner.orphans();
    planner.incomplete();
    planner.velero_schedules();
    planner.maintenance();
    planner.finish()
}

type GroupKey<'a> = (&'a str, &'a str, &'a str);

/// A schedule evaluated at `now`, shared by every policy with the same cron
/// and time zone.
#[derive(Clone)]
struct SlotInfo {
    slot: Option<Timestamp>,
    next: Option<Timestamp>,
    tz: TimeZone,
    /// Why the cron expression is unusable, if it is.
    error: Option<String>,
}

struct Planner<'a> {
    set: &'a PolicySet,
    observed: &'a Observed,
    cluster: &'a str,
    now: Timestamp,
    options: &'a PlanOptions,
    locations: HashMap<&'a str, &'a StorageLocation>,
    unavailable: BTreeMap<&'a str, &'a str>,
    running_backups: HashSet<&'a str>,
    running_restores: HashSet<&'a str>,
    /// Backups by (location, cluster, policy), ascending by (slot, name),
    /// one per name.
    groups: HashMap<GroupKey<'a>, Vec<&'a ObservedBackup>>,
    /// Backups that failed signature verification, by (location, cluster,
    /// name): never counted, never pruned, but their names are taken.
    rejected: BTreeMap<(&'a str, &'a str, &'a str), &'a ObservedBackup>,
    /// The applicable policies, by name (the first of a duplicated name).
    applicable: BTreeMap<&'a str, &'a BackupPolicy>,
    schedules: HashMap<(&'a str, &'a str), Result<SlotInfo, String>>,
    actions: Vec<Action>,
    policies: Vec<PolicyFacts>,
    restores: Vec<RestoreFacts>,
    orphans: Vec<OrphanFacts>,
    notes: Vec<String>,
}

impl<'a> Planner<'a> {
    fn new(
        set: &'a PolicySet,
        observed: &'a Observed,
        cluster: &'a str,
        now: Timestamp,
        options: &'a PlanOptions,
    ) -> Self {
        let mut locations = HashMap::new();
        for l in &set.storage_locations {
            locations
                .entry(l.doc.metadata.name.as_str())
                .or_insert(&l.doc);
        }
        let mut unavailable = BTreeMap::new();
        for (name, error) in &observed.unavailable {
            // The smallest message of a location reported twice, whatever the order.
            let e = unavailable.entry(name.as_str()).or_insert(error.as_str());
            if error.as_str() < *e {
                *e = error.as_str();
            }
        }
        let mut groups: HashMap<GroupKey<'a>, Vec<&'a ObservedBackup>> = HashMap::new();
        let mut rejected = BTreeMap::new();
        let mut required: HashMap<(&str, &str), bool> = HashMap::new();
        for b in &observed.backups {
            let required = *required
                .entry((b.location.as_str(), b.cluster.as_str()))
                .or_insert_with(|| set.signing_required(&b.location, &b.cluster));
            if !b.counts(required) {
                rejected.insert(
                    (b.location.as_str(), b.cluster.as_str(), b.name.as_str()),
                    b,
                );
                continue;
            }
            groups
                .entry((b.location.as_str(), b.cluster.as_str(), b.policy.as_str()))
                .or_default()
                .push(b);
        }
        for list in groups.values_mut() {
            list.sort_unstable_by(|a, b| {
                (a.slot, &a.name, a.end, a.phase as u8).cmp(&(
                    b.slot,
                    &b.name,
                    b.end,
                    b.phase as u8,
                ))
            });
            list.dedup_by(|a, b| a.name == b.name);
        }
        let mut applicable = BTreeMap::new();
        for p in &set.policies {
            if set.applies(&p.doc, cluster) {
                applicable
                    .entry(p.doc.metadata.name.as_str())
                    .or_insert(&p.doc);
            }
        }
        let mut notes = Vec::new();
        if !options.prune {
            notes.push(
                "pruning is off: the newest policy revision failed to validate, so this plan follows the last valid one and prunes or cleans up nothing"
                    .to_string(),
            );
        }
        for (name, error) in &unavailable {
            notes.push(format!(
                "storage location `{name}` could not be read ({error}): nothing there is backed up, pruned or cleaned up"
            ));
        }
        for ((location, cluster, name), b) in &rejected {
            notes.push(format!(
                "backup `{name}` of cluster `{cluster}` in `{location}` is ignored: its signature is {}{} (forged, or written with a key Git does not trust); it is not restored, counted by retention or pruned, delete it by hand after investigating",
                b.signature,
                b.signature_detail
                    .as_deref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            ));
        }
        Planner {
            set,
            observed,
            cluster,
            now,
            options,
            locations,
            unavailable,
            running_backups: observed
                .running
                .backups
                .iter()
                .map(String::as_str)
                .collect(),
            running_restores: observed
                .running
                .restores
                .iter()
                .map(String::as_str)
                .collect(),
            groups,
            rejected,
            applicable,
            schedules: HashMap::new(),
            actions: Vec::new(),
            policies: Vec::new(),
            restores: Vec::new(),
            orphans: Vec::new(),
            notes,
        }
    }

    fn group(&self, location: &'a str, cluster: &'a str, policy: &'a str) -> &[&'a ObservedBackup] {
        self.groups
            .get(&(location, cluster, policy))
            .map_or(&[], Vec::as_slice)
    }

    /// Why nothing may be written to `location`, if so.
    fn unwritable(&self, location: &str) -> Option<String> {
        match self.locations.get(location) {
            None => Some(format!(
                "storage location `{location}` is not in the policy set"
            )),
            Some(l) if l.spec.access_mode == AccessMode::ReadOnly => {
                Some(format!("storage location `{location}` is ReadOnly"))
            }
            Some(_) => self
                .unavailable
                .get(location)
                .map(|e| format!("storage location `{location}` could not be read ({e})")),
        }
    }

    /// Why nothing may be deleted from `location`, if so.
    fn undeletable(&self, location: &str) -> Option<String> {
        if !self.options.prune {
            return Some("pruning is off because the newest policy revision is invalid".into());
        }
        self.unwritable(location)
    }

    fn slot_info(&mut self, policy: &'a BackupPolicy) -> Result<SlotInfo, String> {
        let key = (policy.spec.schedule.as_str(), policy.spec.timezone.as_str());
        let now = self.now;
        self.schedules
            .entry(key)
            .or_insert_with(|| {
                let tz = schedule::time_zone(key.1).map_err(|e| e.to_string())?;
                match Schedule::parse(key.0, key.1) {
                    Ok(s) => Ok(SlotInfo {
                        slot: s.latest_at_or_before(now),
                        next: s.next_after(now),
                        tz,
                        error: None,
                    }),
                    // Retention still works without a schedule.
                    Err(e) => Ok(SlotInfo {
                        slot: None,
                        next: None,
                        tz,
                        error: Some(e.to_string()),
                    }),
                }
            })
            .clone()
    }

    fn policies(&mut self) {
        let applicable: Vec<(&'a str, &'a BackupPolicy)> =
            self.applicable.iter().map(|(k, v)| (*k, *v)).collect();
        for (name, policy) in applicable {
            let facts = self.policy(name, policy);
            self.policies.push(facts);
        }
    }

    fn policy(&mut self, name: &'a str, policy: &'a BackupPolicy) -> PolicyFacts {
        let spec = &policy.spec;
        let location = spec.storage.as_str();
        let backups: Vec<&'a ObservedBackup> = self.group(location, self.cluster, name).to_vec();
        let running = self.running_backups.contains(name);
        let mut problems = Vec::new();
        let info = match self.slot_info(policy) {
            Ok(info) => Some(info),
            Err(e) => {
                problems.push(format!("{e}: no backups are taken and nothing is pruned"));
                None
            }
        };
        if let Some(e) = info.as_ref().and_then(|i| i.error.as_ref()) {
            problems.push(format!("{e}: no backups are taken"));
        }
        let unwritable = self.unwritable(location);
        if let Some(why) = &unwritable {
            problems.push(format!(
                "{why}: no backups are written and nothing is pruned"
            ));
        }
        if spec.suspend {
            problems.push("suspended: no new backups are taken; retention still applies".into());
        }

        // Backup of the latest slot.
        let slot = info.as_ref().and_then(|i| i.slot);
        if !spec.suspend
            && !running
            && unwritable.is_none()
            && let Some(slot) = slot
        {
            let name_of_slot = backup_name(name, slot);
            let taken = backups
                .iter()
                .any(|b| b.slot == slot || b.name == name_of_slot);
            let forged =
                self.rejected
                    .contains_key(&(location, self.cluster, name_of_slot.as_str()));
            if forged {
                problems.push(format!(
                    "the latest slot is not backed up: `{name_of_slot}` holds a backup whose signature failed verification, so the name is taken; delete it after investigating"
                ));
            } else if !taken
                && self
                    .observed
                    .running
                    .maintenance
                    .iter()
                    .any(|(l, _)| l == location)
            {
                problems.push(format!(
                    "the latest slot waits: a prune of a volume repository in `{location}` is running, and backups write there once it ends"
                ));
            } else if !taken {
                let reason = match backups.last() {
                    None => BackupReason::FirstBackup,
                    Some(b) => BackupReason::Due { previous: b.slot },
                };
                self.actions.push(Action::Backup {
                    policy: name.to_string(),
                    location: location.to_string(),
                    slot,
                    name: name_of_slot,
                    reason,
                });
            }
        }

        // Retention.
        let mut pruned = 0;
        if let Some(info) = &info
            && !backups.is_empty()
        {
            let candidates: Vec<Candidate> = backups
                .iter()
                .map(|b| Candidate {
                    name: b.name.clone(),
                    time: b.slot,
                    successful: b.phase.is_successful(),
                })
                .collect();
            let verdicts = retention::apply(&spec.retention, &info.tz, &candidates, self.now);
            let doomed = verdicts.iter().filter(|v| !v.keep()).count();
            let blocked = if running {
                Some("a backup of the policy is running".to_string())
            } else {
                self.undeletable(location)
            };
            match blocked {
                // An unwritable location is already a problem of the policy.
                Some(_) if doomed == 0 || (unwritable.is_some() && !running) => {}
                Some(why) => problems.push(format!(
                    "retention would prune {doomed} backup(s), but not now: {why}"
                )),
                None => {
                    let rules = retention_rules(&spec.retention);
                    // Verdicts are newest first: the backups reversed.
                    for (v, b) in verdicts.iter().zip(backups.iter().rev()) {
                        debug_assert_eq!(v.name, b.name);
                        if v.keep() {
                            continue;
                        }
                        let reason = if b.phase.is_successful() {
                            PruneReason::Retention {
                                rules: rules.clone(),
                            }
                        } else {
                            PruneReason::FailedHistory
                        };
                        self.actions.push(prune(b, reason));
                        pruned += 1;
                    }
                }
            }
        }

        let last_success = backups.iter().rev().find(|b| b.phase.is_successful());
        let volumes = self.observed.inventory.as_ref().and_then(|inventory| {
            let recipients = self
                .locations
                .get(location)
                .is_some_and(|l| l.spec.encryption.is_some());
            match crate::volumes::decide(policy, recipients, inventory) {
                Ok(decisions) => Some(decisions),
                Err(e) => {
                    problems.push(format!("volumes are not evaluated: {e}"));
                    None
                }
            }
        });
        if let Some(line) = volumes
            .as_deref()
            .and_then(crate::volumes::not_disaster_proof)
        {
            problems.push(line);
        }
        // KubeVirt: a running VM held without its disks, or the reverse,
        // is refused (the backup refuses it too).
        if let (Some(inventory), Some(decisions)) = (&self.observed.inventory, &volumes)
            && let Ok(refused) = crate::kubevirt::refusals(policy, &inventory.vms, decisions)
        {
            problems.extend(
                refused
                    .into_iter()
                    .map(|r| format!("backups are refused: {r}")),
            );
        }
        let hooks = self
            .observed
            .inventory
            .as_ref()
            .and_then(|inventory| {
                let mut hooks = crate::hooks::pod_hooks(policy, &inventory.pods).ok()?;
                crate::kubevirt::freeze_hooks(policy, &inventory.pods, &inventory.vms, &mut hooks)
                    .ok()?;
                Some(hooks)
            })
            .filter(|h| !h.is_empty());
        let pods = self
            .observed
            .inventory
            .as_ref()
            .map_or(&[][..], |i| &i.pods[..]);
        let backup_hooks = [
            crate::hooks::level::LevelPhase::Before,
            crate::hooks::level::LevelPhase::After,
        ]
        .into_iter()
        .flat_map(|phase| {
            crate::hooks::level::level_hooks(
                policy,
                phase,
                pods,
                crate::hooks::level::LIFEBOAT_NAMESPACES[1],
            )
        })
        .map(|mut h| {
            // Without a view of the cluster, the pod is not known yet.
            if self.observed.inventory.is_none()
                && matches!(h.run, crate::hooks::level::LevelRun::Exec { pod: None, .. })
                && h.invalid
                    .as_deref()
                    .is_some_and(|w| w.starts_with("no Running pod"))
            {
                h.invalid = None;
            }
            h
        })
        .collect();
        let rpo = spec.objectives.rpo;
        let rpo_status = match (rpo, last_success) {
            (None, _) => RpoStatus::NotSet,
            (Some(_), None) => RpoStatus::NoBackup,
            (Some(rpo), Some(b)) => {
                let age = self.now.duration_since(b.end);
                let by = age - rpo.to_signed();
                if by > SignedDuration::ZERO {
                    RpoStatus::Violated { age, by }
                } else {
                    RpoStatus::Met { age }
                }
            }
        };
        PolicyFacts {
            policy: name.to_string(),
            location: location.to_string(),
            suspended: spec.suspend,
            last_success: last_success.map(|b| BackupRef::from(*b)),
            last_backup: backups.last().map(|b| BackupRef::from(*b)),
            next_slot: if spec.suspend {
                None
            } else {
                info.and_then(|i| i.next)
            },
            rpo,
            rpo_status,
            retained: backups.len() - pruned,
            pruned,
            running,
            in_progress: self.in_progress(location, name),
            problems,
            volumes,
            hooks,
            backup_hooks,
        }
    }

    /// The newest unfinished backup of `policy` in `location` that has an
    /// operation record.
    fn in_progress(&self, location: &str, policy: &str) -> Option<InProgress> {
        self.observed
            .incomplete
            .iter()
            .filter(|i| i.location == location && i.cluster == self.cluster)
            .filter(|i| is_backup_of(&i.name, policy))
            .filter_map(|i| Some((i, i.operation.as_ref()?)))
            .max_by(|a, b| a.0.name.cmp(&b.0.name))
            .map(|(i, op)| InProgress {
                backup: i.name.clone(),
                operation: op.clone(),
            })
    }

    fn orphans(&mut self) {
        let cluster = self.cluster;
        let wanted: HashSet<(&str, &str)> = self
            .applicable
            .iter()
            .map(|(name, p)| (p.spec.storage.as_str(), *name))
            .collect();
        // Orphaned groups of this cluster's backups, by (location, policy).
        let mut groups: BTreeMap<(&'a str, &'a str), &[&'a ObservedBackup]> = BTreeMap::new();
        for ((location, c, policy), list) in &self.groups {
            if *c == cluster
                && self.locations.contains_key(location)
                && !wanted.contains(&(*location, *policy))
            {
                groups.insert((*location, *policy), list.as_slice());
            }
        }
        let mut marks: BTreeMap<(&'a str, &'a str), Timestamp> = BTreeMap::new();
        for m in &self.observed.orphans {
            let since = marks
                .entry((m.location.as_str(), m.policy.as_str()))
                .or_insert(m.since);
            *since = (*since).min(m.since);
        }

        for (&(location, policy), &backups) in &groups {
            let since = marks.get(&(location, policy)).copied();
            let mut facts = OrphanFacts {
                policy: policy.to_string(),
                location: location.to_string(),
                backups: backups.len(),
                since,
                prune_at: None,
            };
            if let Some(why) = self.unwritable(location) {
                self.notes.push(format!(
                    "{} backup(s) of `{policy}` in `{location}` are orphaned but left alone: {why}",
                    backups.len()
                ));
                self.orphans.push(facts);
                continue;
            }
            let Some(since) = since else {
                facts.prune_at = Some(later(self.now, self.options.orphan_grace));
                self.actions.push(Action::MarkOrphaned {
                    location: location.to_string(),
                    policy: policy.to_string(),
                    since: self.now,
                });
                self.orphans.push(facts);
                continue;
            };
            let prune_at = later(since, self.options.orphan_grace);
            facts.prune_at = Some(prune_at);
            if self.now >= prune_at {
                let blocked = if self.running_backups.contains(policy) {
                    Some("a backup of the policy is running".to_string())
                } else {
                    self.undeletable(location)
                };
                match blocked {
                    Some(why) => self.notes.push(format!(
                        "{} orphaned backup(s) of `{policy}` in `{location}` are past their grace period but not pruned now: {why}",
                        backups.len()
                    )),
                    None => {
                        for b in backups {
                            self.actions
                                .push(prune(b, PruneReason::Orphaned { since }));
                        }
                    }
                }
            }
            self.orphans.push(facts);
        }

        for &(location, policy) in marks.keys() {
            if groups.contains_key(&(location, policy)) || self.unwritable(location).is_some() {
                continue;
            }
            // The policy is back, or nothing of it is left to guard.
            self.actions.push(Action::UnmarkOrphaned {
                location: location.to_string(),
                policy: policy.to_string(),
            });
        }
    }

    /// A note per enabled Velero Schedule that backs up what a policy
    /// protects: after migrating, both tools would snapshot the same
    /// volumes (and Velero's snapshots count against storage quotas).
    fn velero_schedules(&mut self) {
        let Some(inventory) = &self.observed.inventory else {
            return;
        };
        for s in &inventory.velero_schedules {
            let all =
                s.included_namespaces.is_empty() || s.included_namespaces.iter().any(|n| n == "*");
            let overlapping: Vec<&str> = self
                .applicable
                .iter()
                .filter(|(_, p)| {
                    crate::select::Selection::new(&p.spec.include, &p.spec.exclude).is_ok_and(
                        |sel| all || s.included_namespaces.iter().any(|n| sel.namespace(n)),
                    )
                })
                .map(|(name, _)| *name)
                .collect();
            if overlapping.is_empty() {
                continue;
            }
            self.notes.push(format!(
                "Velero Schedule `{}/{}` is still enabled and backs up what {} `{}` protects: \
                 once lifeboat's backups are verified, pause it (`velero schedule pause {} -n {}`) \
                 so both tools do not snapshot the same volumes",
                s.namespace,
                s.name,
                if overlapping.len() == 1 {
                    "policy"
                } else {
                    "policies"
                },
                overlapping.join("`, `"),
                s.name,
                s.namespace
            ));
        }
    }

    fn incomplete(&mut self) {
        let planned: HashSet<(&str, &str)> = self
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Backup { location, name, .. } => Some((location.as_str(), name.as_str())),
                _ => None,
            })
            .collect();
        let mut cleanups = Vec::new();
        for inc in &self.observed.incomplete {
            if inc.cluster != self.cluster
                || self.now.duration_since(inc.last_modified) <= self.options.incomplete_grace
                || self.undeletable(&inc.location).is_some()
                || planned.contains(&(inc.location.as_str(), inc.name.as_str()))
            {
                continue;
            }
            let running = self
                .running_backups
                .iter()
                .any(|p| is_backup_of(&inc.name, p));
            if running {
                continue;
            }
            cleanups.push(Action::CleanupIncomplete {
                location: inc.location.clone(),
                cluster: inc.cluster.clone(),
                backup: inc.name.clone(),
                last_modified: inc.last_modified,
            });
        }
        self.actions.append(&mut cleanups);
    }

    fn restores(&mut self) {
        let mut records: HashMap<&str, Vec<&'a ObservedRestore>> = HashMap::new();
        for r in &self.observed.restores {
            records.entry(r.request.as_str()).or_default().push(r);
        }
        let mut requests: BTreeMap<&'a str, &'a RestoreRequest> = BTreeMap::new();
        for r in &self.set.restores {
            requests
                .entry(r.doc.metadata.name.as_str())
                .or_insert(&r.doc);
        }
        for (name, request) in requests {
            let mut list = records.remove(name).unwrap_or_default();
            list.sort_by(|a, b| (&a.location, a.start).cmp(&(&b.location, b.start)));
            let (state, message) = self.restore(name, request, &list);
            let rto = request
                .spec
                .source
                .policy
                .as_deref()
                .and_then(|p| self.set.policy(p))
                .and_then(|p| p.doc.spec.objectives.rto);
            let missing_prerequisites = if state == RestoreFactState::Pending {
                self.missing_prerequisites(name, request)
            } else {
                None
            };
            self.restores.push(RestoreFacts {
                request: name.to_string(),
                state,
                message,
                rto,
                missing_prerequisites,
            });
        }
    }

    /// The prerequisites the backup that request `name` restores now needs
    /// and this cluster lacks; `None` without a view of the cluster (or
    /// of the backup).
    fn missing_prerequisites(&self, name: &str, request: &RestoreRequest) -> Option<Vec<Missing>> {
        let provided = self.observed.inventory.as_ref()?.provides.as_ref()?;
        let (location, backup) = self.actions.iter().rev().find_map(|a| match a {
            Action::Restore {
                request: r,
                location,
                backup,
                ..
            } if r == name => Some((location.as_str(), backup.as_str())),
            _ => None,
        })?;
        let source = &request.spec.source;
        let found = self.observed.backups.iter().find(|b| {
            b.location == location
                && source.cluster.as_deref() == Some(b.cluster.as_str())
                && b.name == backup
        })?;
        let restores_crds = crate::prerequisites::restores_crds(&request.spec);
        Some(crate::prerequisites::missing(
            &found.prerequisites,
            provided,
            |_| restores_crds,
        ))
    }

    fn restore(
        &mut self,
        name: &str,
        request: &'a RestoreRequest,
        records: &[&ObservedRestore],
    ) -> (RestoreFactState, String) {
        let target = &request.spec.target.cluster;
        if target != self.cluster {
            return (
                RestoreFactState::NotForThisCluster,
                format!("targets cluster `{target}`"),
            );
        }
        if let Some(r) = records.iter().find(|r| r.phase != RestoreState::InProgress) {
            return (
                RestoreFactState::Done,
                format!(
                    "finished {:?}: restored `{}` (record in `{}`); a request runs once",
                    r.phase, r.source_backup, r.location
                ),
            );
        }
        let running = self.running_restores.contains(name);
        if running {
            return (RestoreFactState::Running, "restoring now".to_string());
        }
        // Interrupted within its deadline: run again. Objects the first run
        // applied are found existing; claims it created and had not filled
        // yet are filled (see lifeboat_kube::restore).
        if let Some(r) = records
            .iter()
            .find(|r| r.deadline.is_some_and(|d| d > self.now))
        {
            // A Velero backup's record is in a lifeboat location, the
            // backup where `source.location` says.
            let (location, record_location) = match &request.spec.source.location {
                Some(v) => (v.clone(), Some(r.location.clone())),
                None => (r.location.clone(), None),
            };
            self.actions.push(Action::Restore {
                request: name.to_string(),
                location,
                source_cluster: request.spec.source.cluster_name().to_string(),
                backup: r.source_backup.clone(),
                dry_run: request.spec.dry_run,
                record_location,
            });
            return (
                RestoreFactState::Pending,
                format!(
                    "interrupted while restoring `{}`: resumed (its deadline is {})",
                    r.source_backup,
                    r.deadline.map(|d| d.to_string()).unwrap_or_default()
                ),
            );
        }
        if !records.is_empty() {
            for r in records {
                self.actions.push(Action::FinishInterruptedRestore {
                    location: r.location.clone(),
                    request: name.to_string(),
                });
            }
            return (
                RestoreFactState::Done,
                format!(
                    "interrupted while restoring `{}`: marked Failed, not run again; create a new request to retry",
                    records[0].source_backup
                ),
            );
        }
        let source = &request.spec.source;
        if let Some(location) = &source.location {
            return self.velero_restore(name, request, location);
        }
        let Some(policy) = source.policy.as_deref().and_then(|p| self.set.policy(p)) else {
            return (
                RestoreFactState::Waiting,
                format!(
                    "source policy `{}` is not in the policy set, so the location of its backups is unknown",
                    source.policy_name()
                ),
            );
        };
        let (source_cluster, source_policy) = (source.cluster_name(), source.policy_name());
        let location = policy.doc.spec.storage.as_str();
        if !self.locations.contains_key(location) {
            return (
                RestoreFactState::Waiting,
                format!(
                    "storage location `{location}` of policy `{}` is not in the policy set",
                    source_policy
                ),
            );
        }
        if let Some(e) = self.unavailable.get(location) {
            return (
                RestoreFactState::Waiting,
                format!("storage location `{location}` could not be read ({e})"),
            );
        }
        let backups = self.group(location, source_cluster, source_policy);
        let what = format!(
            "of policy `{}` from cluster `{}` in `{location}`",
            source_policy, source_cluster
        );
        let found = if source.backup == "latest" {
            let found =
                backups.iter().rev().copied().find(|b| {
                    b.phase.is_successful() && source.not_after.is_none_or(|t| b.slot <= t)
                });
            match (found, source.not_after) {
                (Some(b), _) => b,
                (None, None) => {
                    return (
                        RestoreFactState::Waiting,
                        format!("no successful backup {what} yet"),
                    );
                }
                (None, Some(t)) => {
                    return (
                        RestoreFactState::Waiting,
                        format!("no successful backup {what} taken at or before {t}"),
                    );
                }
            }
        } else {
            match backups.iter().copied().find(|b| b.name == source.backup) {
                Some(b) if b.phase.is_successful() => b,
                Some(_) => {
                    return (
                        RestoreFactState::Waiting,
                        format!(
                            "backup `{}` {what} failed and cannot be restored; name another backup or use `latest`",
                            source.backup
                        ),
                    );
                }
                None => {
                    let key = (location, source_cluster, source.backup.as_str());
                    if let Some(b) = self.rejected.get(&key) {
                        // Run it so the store refuses it before applying
                        // anything and the refusal is recorded: a request
                        // runs once, and this one cannot ever succeed.
                        self.actions.push(Action::Restore {
                            request: name.to_string(),
                            location: location.to_string(),
                            source_cluster: source_cluster.to_string(),
                            backup: b.name.clone(),
                            dry_run: request.spec.dry_run,
                            record_location: None,
                        });
                        return (
                            RestoreFactState::Pending,
                            format!(
                                "backup `{}` {what} has a signature that is {}{}: the restore is refused and recorded Failed",
                                b.name,
                                b.signature,
                                b.signature_detail
                                    .as_deref()
                                    .map(|d| format!(" ({d})"))
                                    .unwrap_or_default()
                            ),
                        );
                    }
                    return (
                        RestoreFactState::Waiting,
                        format!("backup `{}` {what} not found", source.backup),
                    );
                }
            }
        };
        self.actions.push(Action::Restore {
            request: name.to_string(),
            location: location.to_string(),
            source_cluster: source_cluster.to_string(),
            backup: found.name.clone(),
            dry_run: request.spec.dry_run,
            record_location: None,
        });
        (
            RestoreFactState::Pending,
            format!(
                "restores `{}` ({}, slot {}) {what}{}",
                found.name,
                found.phase,
                found.slot,
                if request.spec.dry_run {
                    ", dry run"
                } else {
                    ""
                }
            ),
        )
    }

    /// A RestoreRequest of a Velero backup (`source.location`): the backup
    /// is resolved among the observed Velero backups of that location
    /// (`latest`: the newest Velero finished, by start time, at or before
    /// `notAfter`), and the record goes to [`Self::record_location`].
    fn velero_restore(
        &mut self,
        name: &str,
        request: &'a RestoreRequest,
        location: &str,
    ) -> (RestoreFactState, String) {
        let source = &request.spec.source;
        match self.locations.get(location) {
            None => {
                return (
                    RestoreFactState::Waiting,
                    format!("source location `{location}` is not in the policy set"),
                );
            }
            Some(l) if l.spec.format.is_lifeboat() => {
                return (
                    RestoreFactState::Waiting,
                    format!(
                        "source location `{location}` is a lifeboat location, not a Velero one (LB150)"
                    ),
                );
            }
            Some(_) => {}
        }
        if let Some(e) = self.unavailable.get(location) {
            return (
                RestoreFactState::Waiting,
                format!("Velero location `{location}` could not be read ({e})"),
            );
        }
        let Some(record) = self.record_location() else {
            return (
                RestoreFactState::Waiting,
                "a restore of a Velero backup keeps its record in a lifeboat location, and the set has no readable one with `accessMode: ReadWrite`: add one (the location this cluster's policies back up to)".to_string(),
            );
        };
        let mut backups: Vec<&ObservedVeleroBackup> = self
            .observed
            .velero_backups
            .iter()
            .filter(|b| b.location == location)
            .collect();
        // Newest first; the name decides between equal start times.
        backups.sort_by(|a, b| b.started.cmp(&a.started).then_with(|| b.name.cmp(&a.name)));
        let what = format!("in Velero location `{location}`");
        let found = if source.backup == "latest" {
            let found = backups.iter().copied().find(|b| {
                b.restorable()
                    && source
                        .not_after
                        .is_none_or(|t| b.started.is_some_and(|s| s <= t))
            });
            match (found, source.not_after) {
                (Some(b), _) => b,
                (None, None) => {
                    return (
                        RestoreFactState::Waiting,
                        format!("no backup {what} that Velero finished"),
                    );
                }
                (None, Some(t)) => {
                    return (
                        RestoreFactState::Waiting,
                        format!("no backup {what} that Velero finished, started at or before {t}"),
                    );
                }
            }
        } else {
            match backups.iter().copied().find(|b| b.name == source.backup) {
                Some(b) if b.restorable() => b,
                Some(b) => {
                    return (
                        RestoreFactState::Waiting,
                        format!(
                            "backup `{}` {what} is {}, not Completed: it cannot be restored; name another backup or use `latest`",
                            b.name,
                            if b.phase.is_empty() {
                                "without a phase"
                            } else {
                                b.phase.as_str()
                            }
                        ),
                    );
                }
                None => {
                    return (
                        RestoreFactState::Waiting,
                        format!("backup `{}` {what} not found", source.backup),
                    );
                }
            }
        };
        self.actions.push(Action::Restore {
            request: name.to_string(),
            location: location.to_string(),
            source_cluster: source.cluster_name().to_string(),
            backup: found.name.clone(),
            dry_run: request.spec.dry_run,
            record_location: Some(record.to_string()),
        });
        (
            RestoreFactState::Pending,
            format!(
                "restores Velero backup `{}` ({}, started {}) {what}, its record in `{record}`{}",
                found.name,
                found.phase,
                found
                    .started
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "at an unknown time".into()),
                if request.spec.dry_run {
                    ", dry run"
                } else {
                    ""
                }
            ),
        )
    }

    /// The lifeboat location that keeps the records of this cluster's
    /// restores of Velero backups: the first by name of the readable
    /// `ReadWrite` lifeboat locations this cluster's policies back up to,
    /// else of all such locations of the set. Any later choice still finds
    /// a finished record: records are read from every location.
    fn record_location(&self) -> Option<&'a str> {
        let usable = |name: &str| {
            self.locations.get(name).is_some_and(|l| {
                l.spec.format.is_lifeboat() && l.spec.access_mode == AccessMode::ReadWrite
            }) && !self.unavailable.contains_key(name)
        };
        let own: BTreeSet<&'a str> = self
            .applicable
            .values()
            .map(|p| p.spec.storage.as_str())
            .filter(|l| usable(l))
            .collect();
        own.first().copied().or_else(|| {
            let all: BTreeSet<&'a str> = self
                .locations
                .keys()
                .copied()
                .filter(|l| usable(l))
                .collect();
            all.first().copied()
        })
    }

    /// Prunes of volume repositories that are due. A location's
    /// repositories are left alone while a backup of this controller writes
    /// there (the repository's lock would refuse the prune anyway; waiting
    /// saves a failed attempt) and one prune runs per location at a time.
    fn maintenance(&mut self) {
        let mut busy: BTreeSet<String> = self
            .observed
            .running
            .maintenance
            .iter()
            .map(|(l, _)| l.clone())
            .collect();
        for p in &self.running_backups {
            if let Some(policy) = self.applicable.get(p) {
                busy.insert(policy.spec.storage.clone());
            }
        }
        // Backups planned now start in this cycle too.
        for a in &self.actions {
            if let Action::Backup { location, .. } = a {
                busy.insert(location.clone());
            }
        }
        let mut repos: Vec<&ObservedRepository> = self.observed.repositories.iter().collect();
        repos.sort_by_key(|r| (r.location.as_str(), r.namespace.as_str()));
        for r in repos {
            let Some(location) = self.locations.get(r.location.as_str()) else {
                continue;
            };
            let m = &location.spec.maintenance;
            if m.suspend || self.undeletable(&r.location).is_some() {
                continue;
            }
            if r.due(m) > self.now || busy.contains(&r.location) {
                continue;
            }
            busy.insert(r.location.clone());
            self.actions.push(Action::MaintainRepository {
                location: r.location.clone(),
                namespace: r.namespace.clone(),
                generation: r.generation,
                keep_delete: m.keep_delete,
                last_success: r.last_success,
            });
        }
    }

    fn finish(mut self) -> Plan {
        self.actions.sort_by(|a, b| a.order().cmp(&b.order()));
        self.actions.dedup();
        Plan {
            cluster: self.cluster.to_string(),
            now: self.now,
            actions: self.actions,
            policies: self.policies,
            restores: self.restores,
            orphans: self.orphans,
            notes: self.notes,
        }
    }
}

/// `t + d`, saturating at the end of time.
fn later(t: Timestamp, d: SignedDuration) -> Timestamp {
    t.checked_add(d).unwrap_or(Timestamp::MAX)
}

fn prune(b: &ObservedBackup, reason: PruneReason) -> Action {
    Action::Prune {
        location: b.location.clone(),
        cluster: b.cluster.clone(),
        policy: b.policy.clone(),
        backup: b.name.clone(),
        slot: b.slot,
        reason,
    }
}

/// "not kept by keepLast 3, keepDaily 7, maxAge 30d": the keep rules a
/// pruned backup escaped (`minKeep` is a floor, not a rule).
fn retention_rules(r: &Retention) -> String {
    let mut rules = Vec::new();
    for (name, n) in [
        ("keepLast", r.keep_last),
        ("keepHourly", r.keep_hourly),
        ("keepDaily", r.keep_daily),
        ("keepWeekly", r.keep_weekly),
        ("keepMonthly", r.keep_monthly),
        ("keepYearly", r.keep_yearly),
    ] {
        if let Some(n) = n {
            rules.push(format!("{name} {n}"));
        }
    }
    if let Some(age) = r.max_age {
        rules.push(format!("maxAge {age}"));
    }
    if rules.is_empty() {
        "no keep rule is set".to_string()
    } else {
        format!("not kept by {}", rules.join(", "))
    }
}
