//! The status files a controller writes to Git (see docs/status.md): one
//! YAML file per policy and per restore, `revision.yaml` for the policy
//! revision, and a README.md table, all below the cluster's status path.
//!
//! Rendering is pure: it reads the plan computed after execution (so the
//! facts include this cycle's backups), the catalog and this cycle's
//! results. [`same`] tells the publisher which differences are only the
//! passing of time, so a cycle that changed nothing commits nothing.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use jiff::{SignedDuration, Timestamp};
use lifeboat_core::plan::{
    BackupRef, InProgress, Observed, Plan, PolicyFacts, RestoreFactState, RestoreFacts, RpoStatus,
};
use serde::Serialize;

/// Keys whose values change with the clock alone.
const VOLATILE: &[&str] = &["observedAt", "age", "eta"];

/// Backups listed per policy file.
const LISTED_BACKUPS: usize = 50;
/// Failed objects listed per restore file.
pub(crate) const LISTED_FAILURES: usize = 50;

/// The policy revision the controller acts on.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionStatus {
    /// The newest revision fetched.
    pub sha: Option<String>,
    /// Whether it validated.
    pub valid: bool,
    /// The revision acted on: the newest valid one.
    pub acting_on: Option<String>,
    /// `file:line:column: code: message`, when not valid.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<String>,
    /// The remote could not be fetched this cycle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fetch_error: Option<String>,
}

/// What a restore record says, for the report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordSummary {
    pub phase: String,
    pub source_cluster: String,
    pub source_backup: String,
    pub dry_run: bool,
    pub start: Option<Timestamp>,
    pub end: Option<Timestamp>,
    pub created: u64,
    pub updated: u64,
    pub skipped: u64,
    pub failed: u64,
    pub message: Option<String>,
    /// `resource namespace/name: reason` of failed objects.
    pub failures: Vec<String>,
    /// Claims filled with their data (and their bytes), claims that failed.
    pub volumes: lifeboat_core::plan::VolumeTotals,
    /// The backup's prerequisites (CRDs, operators) the target lacked when
    /// the restore started, each saying what to install.
    pub missing_prerequisites: Vec<String>,
    /// Where the full record is: `<location>: clusters/<c>/restores/<r>/record.json`.
    pub record: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl RecordSummary {
    /// How long the restore took, once it ended (to the second).
    pub fn took(&self) -> Option<lifeboat_core::duration::Duration> {
        let (start, end) = (self.start?, self.end?);
        let secs = end.duration_since(start).as_secs().max(0);
        Some(lifeboat_core::duration::Duration::from_secs(
            secs.unsigned_abs(),
        ))
    }

    /// Whether a finished restore took no longer than `rto`; `None` while
    /// it runs, for dry runs (which write nothing) and without an RTO.
    pub fn rto_met(&self, rto: Option<lifeboat_core::duration::Duration>) -> Option<bool> {
        if self.dry_run {
            return None;
        }
        Some(self.took()? <= rto?)
    }
}

/// Everything a status rendering needs.
#[derive(Debug)]
pub struct StatusInput<'a> {
    pub cluster: &'a str,
    pub now: Timestamp,
    pub revision: &'a RevisionStatus,
    pub plan: &'a Plan,
    pub observed: &'a Observed,
    pub records: &'a BTreeMap<String, RecordSummary>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PolicyFile<'a> {
    policy: &'a str,
    cluster: &'a str,
    state: &'static str,
    storage: &'a str,
    observed_at: Timestamp,
    /// A backup of the policy is running now.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    backup_running: bool,
    /// The newest unfinished backup's progress (running, or interrupted
    /// and resumed while its slot is due).
    #[serde(skip_serializing_if = "Option::is_none")]
    in_progress: Option<ProgressLine>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_success: Option<BackupLine>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_backup: Option<BackupLine>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_slot: Option<Timestamp>,
    rpo: RpoLine,
    retained: usize,
    backups: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    orphaned_since: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prune_at: Option<Timestamp>,
    problems: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ProgressLine {
    backup: String,
    owner: String,
    started: Timestamp,
    step: String,
    /// `done/planned` claims.
    volumes: String,
    bytes_done: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    moving: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    eta: Option<Timestamp>,
    deadline: Timestamp,
}

fn progress_line(p: &InProgress, now: Timestamp) -> ProgressLine {
    let op = &p.operation;
    ProgressLine {
        backup: p.backup.clone(),
        owner: op.owner.clone(),
        started: secs(op.started),
        step: op.step.clone(),
        volumes: format!("{}/{}", op.volumes_done, op.volumes_planned),
        bytes_done: op.bytes_done,
        moving: op.moving.clone(),
        eta: op.eta(now).map(secs),
        deadline: secs(op.deadline),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BackupLine {
    backup: String,
    phase: String,
    slot: Timestamp,
    finished: Timestamp,
    /// `2 volumes, 5.4 MiB`, when it carries volume data.
    #[serde(skip_serializing_if = "Option::is_none")]
    volumes: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    volume_bytes: Option<u64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RpoLine {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    objective: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    age: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    violated_by: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RestoreFile<'a> {
    request: &'a str,
    cluster: &'a str,
    state: String,
    message: &'a str,
    observed_at: Timestamp,
    /// Before a restore runs: the prerequisites the plan found missing on
    /// this cluster.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    missing_prerequisites: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<RestoreResult<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RestoreResult<'a> {
    phase: &'a str,
    source: String,
    dry_run: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    started: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished: Option<Timestamp>,
    /// From start to end: the recovery time this restore took.
    #[serde(skip_serializing_if = "Option::is_none")]
    duration: Option<String>,
    /// The source policy's recovery time objective, and whether the
    /// restore took no longer.
    #[serde(skip_serializing_if = "Option::is_none")]
    rto: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rto_met: Option<bool>,
    #[serde(skip_serializing_if = "is_zero")]
    volumes: u64,
    #[serde(skip_serializing_if = "is_zero")]
    volume_bytes: u64,
    created: u64,
    updated: u64,
    skipped: u64,
    failed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    failures: &'a [String],
    /// What the target lacked when the restore started (from its record).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    missing_prerequisites: &'a [String],
    record: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RevisionFile<'a> {
    cluster: &'a str,
    observed_at: Timestamp,
    #[serde(flatten)]
    revision: &'a RevisionStatus,
}

const HEADER: &str = "# Written by lifeboat (https://lifeboat.dev); edits are overwritten.\n";

fn yaml<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = HEADER.as_bytes().to_vec();
    // Serializing plain structs of strings, numbers and lists cannot fail.
    out.extend(
        serde_yaml_ng::to_string(value)
            .unwrap_or_default()
            .into_bytes(),
    );
    out
}

/// A time to the second: status files are read by people, and sub-second
/// digits only make diffs noisier.
pub fn secs(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// Bytes in binary units: `512 B`, `5.4 MiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `2 volumes, 5.4 MiB[, 1 failed]` for a backup with volume data.
fn volumes_cell(v: &lifeboat_core::plan::VolumeTotals) -> Option<String> {
    if v.is_empty() {
        return None;
    }
    let n = v.completed;
    Some(format!(
        "{n} volume{}, {}{}",
        if n == 1 { "" } else { "s" },
        size(v.bytes),
        if v.failed > 0 {
            format!(", {} failed", v.failed)
        } else {
            String::new()
        }
    ))
}

/// A duration in the largest units that matter: `3d4h`, `2h5m`, `42s`.
pub fn human(d: SignedDuration) -> String {
    let mut secs = d.as_secs().unsigned_abs();
    let sign = if d.is_negative() { "-" } else { "" };
    if secs == 0 {
        return "0s".into();
    }
    let units = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)];
    let mut out = String::from(sign);
    let mut shown = 0;
    for (unit, size) in units {
        if secs >= size && shown < 2 {
            let _ = write!(out, "{}{unit}", secs / size);
            secs %= size;
            shown += 1;
        } else if shown > 0 {
            shown += 1;
        }
    }
    out
}

fn line(b: &BackupRef) -> BackupLine {
    BackupLine {
        backup: b.name.clone(),
        phase: format!("{:?}", b.phase),
        slot: b.slot,
        finished: secs(b.end),
        volumes: volumes_cell(&b.volumes),
        volume_bytes: (!b.volumes.is_empty()).then_some(b.volumes.bytes),
    }
}

fn rpo_line(f: &PolicyFacts) -> RpoLine {
    let objective = f.rpo.map(|r| r.to_string());
    match &f.rpo_status {
        RpoStatus::NotSet => RpoLine {
            status: "NotSet",
            objective,
            age: None,
            violated_by: None,
        },
        RpoStatus::NoBackup => RpoLine {
            status: "NoBackup",
            objective,
            age: None,
            violated_by: None,
        },
        RpoStatus::Met { age } => RpoLine {
            status: "Met",
            objective,
            age: Some(human(*age)),
            violated_by: None,
        },
        RpoStatus::Violated { age, by } => RpoLine {
            status: "Violated",
            objective,
            age: Some(human(*age)),
            violated_by: Some(human(*by)),
        },
    }
}

fn backups_of(observed: &Observed, cluster: &str, location: &str, policy: &str) -> Vec<String> {
    let mut list: Vec<_> = observed
        .backups
        .iter()
        .filter(|b| b.cluster == cluster && b.location == location && b.policy == policy)
        .collect();
    list.sort_by_key(|b| std::cmp::Reverse(b.slot));
    list.iter()
        .take(LISTED_BACKUPS)
        .map(|b| format!("{} ({:?})", b.name, b.phase))
        .collect()
}

fn restore_state(s: &RestoreFactState) -> String {
    format!("{s:?}")
}

/// Renders every status file, by path relative to the cluster's status
/// directory.
pub fn render(input: &StatusInput<'_>) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let cluster = input.cluster;
    for f in &input.plan.policies {
        let file = PolicyFile {
            policy: &f.policy,
            cluster,
            state: if f.suspended { "Suspended" } else { "Active" },
            backup_running: f.running,
            in_progress: f.in_progress.as_ref().map(|p| progress_line(p, input.now)),
            storage: &f.location,
            observed_at: secs(input.now),
            last_success: f.last_success.as_ref().map(line),
            last_backup: f.last_backup.as_ref().map(line),
            next_slot: f.next_slot,
            rpo: rpo_line(f),
            retained: f.retained,
            backups: backups_of(input.observed, cluster, &f.location, &f.policy),
            orphaned_since: None,
            prune_at: None,
            problems: f.problems.clone(),
        };
        files.insert(format!("policies/{}.yaml", f.policy), yaml(&file));
    }
    for o in &input.plan.orphans {
        let file = PolicyFile {
            policy: &o.policy,
            cluster,
            state: "Deleted",
            backup_running: false,
            in_progress: None,
            storage: &o.location,
            observed_at: secs(input.now),
            last_success: None,
            last_backup: None,
            next_slot: None,
            rpo: RpoLine {
                status: "NotSet",
                objective: None,
                age: None,
                violated_by: None,
            },
            retained: o.backups,
            backups: backups_of(input.observed, cluster, &o.location, &o.policy),
            orphaned_since: o.since,
            prune_at: o.prune_at,
            problems: vec![format!(
                "the policy is no longer in Git; its {} backup(s) are kept until {}",
                o.backups,
                o.prune_at
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "the grace period has started".into())
            )],
        };
        // A policy that exists and also has orphaned backups elsewhere keeps
        // its own file; the orphans are listed in the README.
        files
            .entry(format!("policies/{}.yaml", o.policy))
            .or_insert_with(|| yaml(&file));
    }
    for r in &input.plan.restores {
        if matches!(r.state, RestoreFactState::NotForThisCluster) {
            continue;
        }
        let record = input.records.get(&r.request);
        let file = RestoreFile {
            request: &r.request,
            cluster,
            state: restore_state(&r.state),
            message: &r.message,
            observed_at: secs(input.now),
            missing_prerequisites: r
                .missing_prerequisites
                .iter()
                .flatten()
                .map(|m| m.message.as_str())
                .collect(),
            result: record.map(|s| RestoreResult {
                phase: &s.phase,
                source: format!("{}/{}", s.source_cluster, s.source_backup),
                dry_run: s.dry_run,
                started: s.start.map(secs),
                finished: s.end.map(secs),
                duration: s.took().map(|d| d.to_string()),
                rto: r.rto.map(|d| d.to_string()),
                rto_met: s.rto_met(r.rto),
                volumes: u64::from(s.volumes.completed),
                volume_bytes: s.volumes.bytes,
                created: s.created,
                updated: s.updated,
                skipped: s.skipped,
                failed: s.failed,
                message: s.message.as_deref(),
                failures: &s.failures,
                missing_prerequisites: &s.missing_prerequisites,
                record: &s.record,
            }),
        };
        files.insert(format!("restores/{}.yaml", r.request), yaml(&file));
    }
    files.insert(
        "revision.yaml".into(),
        yaml(&RevisionFile {
            cluster,
            observed_at: secs(input.now),
            revision: input.revision,
        }),
    );
    files.insert("README.md".into(), readme(input).into_bytes());
    files
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn readme(input: &StatusInput<'_>) -> String {
    let plan = input.plan;
    let mut out = String::new();
    let _ = writeln!(out, "# lifeboat status: cluster `{}`\n", input.cluster);
    let _ = writeln!(
        out,
        "Updated {} from policy revision {}{}.\n",
        secs(input.now),
        input
            .revision
            .acting_on
            .as_deref()
            .map(|s| format!("`{}`", &s[..s.len().min(12)]))
            .unwrap_or_else(|| "(none valid yet)".into()),
        if input.revision.valid {
            String::new()
        } else {
            format!(
                "; the newest revision {} is INVALID ({} finding(s), see revision.yaml) and pruning is paused",
                input
                    .revision
                    .sha
                    .as_deref()
                    .map(|s| format!("`{}`", &s[..s.len().min(12)]))
                    .unwrap_or_default(),
                input.revision.diagnostics.len()
            )
        }
    );
    let _ = writeln!(
        out,
        "| Policy | Last success | Age / RPO | Retained | Next slot | Problems |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for f in &plan.policies {
        let age = match &f.rpo_status {
            RpoStatus::NotSet => f
                .last_success
                .as_ref()
                .map(|b| human(input.now.duration_since(b.end)))
                .unwrap_or_else(|| "—".into()),
            RpoStatus::NoBackup => format!(
                "no backup / {}",
                f.rpo.map(|r| r.to_string()).unwrap_or_default()
            ),
            RpoStatus::Met { age } => format!(
                "{} / {} ✅",
                human(*age),
                f.rpo.map(|r| r.to_string()).unwrap_or_default()
            ),
            RpoStatus::Violated { age, by } => format!(
                "{} / {} ❌ (over by {})",
                human(*age),
                f.rpo.map(|r| r.to_string()).unwrap_or_default(),
                human(*by)
            ),
        };
        let mut problems = f.problems.clone();
        if f.suspended {
            problems.insert(0, "suspended".into());
        }
        let _ = writeln!(
            out,
            "| [{p}](policies/{p}.yaml) | {} | {} | {} | {} | {} |",
            f.last_success
                .as_ref()
                .map(|b| format!(
                    "`{}` at {}{}",
                    b.name,
                    secs(b.end),
                    volumes_cell(&b.volumes)
                        .map(|v| format!(" ({v})"))
                        .unwrap_or_default()
                ))
                .unwrap_or_else(|| "never".into()),
            cell(&age),
            f.retained,
            match f.next_slot {
                _ if f.running => match &f.in_progress {
                    Some(p) if p.operation.volumes_planned > 0 => format!(
                        "backing up now ({}/{} volumes)",
                        p.operation.volumes_done, p.operation.volumes_planned
                    ),
                    _ => "backing up now".to_string(),
                },
                Some(t) => t.to_string(),
                None => "—".into(),
            },
            cell(&problems.join("; ")),
            p = f.policy,
        );
    }
    if !plan.orphans.is_empty() {
        let _ = writeln!(out, "\n## Backups of deleted policies\n");
        let _ = writeln!(
            out,
            "| Policy | Location | Backups | Orphaned since | Pruned after |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|");
        for o in &plan.orphans {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                o.policy,
                o.location,
                o.backups,
                o.since
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "now".into()),
                o.prune_at
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "grace period".into())
            );
        }
    }
    let restores: Vec<&RestoreFacts> = plan
        .restores
        .iter()
        .filter(|r| !matches!(r.state, RestoreFactState::NotForThisCluster))
        .collect();
    if !restores.is_empty() {
        let _ = writeln!(out, "\n## Restores\n");
        let _ = writeln!(out, "| Request | State | Result |");
        let _ = writeln!(out, "|---|---|---|");
        for r in restores {
            let result = input
                .records
                .get(&r.request)
                .map(|s| {
                    let mut cell = format!(
                        "{}{}: {} created, {} updated, {} skipped, {} failed",
                        s.phase,
                        if s.dry_run { " (dry run)" } else { "" },
                        s.created,
                        s.updated,
                        s.skipped,
                        s.failed
                    );
                    if let Some(volumes) = volumes_cell(&s.volumes) {
                        let _ = write!(cell, ", {volumes}");
                    }
                    if let Some(took) = s.took() {
                        let _ = write!(cell, ", in {}", human(took.to_signed()));
                    }
                    match (r.rto, s.rto_met(r.rto)) {
                        (Some(rto), Some(true)) => {
                            let _ = write!(cell, " (RTO {rto}: met)");
                        }
                        (Some(rto), Some(false)) => {
                            let _ = write!(cell, " (RTO {rto}: **missed**)");
                        }
                        _ => {}
                    }
                    cell
                })
                .unwrap_or_else(|| cell(&r.message));
            let _ = writeln!(
                out,
                "| [{n}](restores/{n}.yaml) | {:?} | {} |",
                r.state,
                result,
                n = r.request
            );
        }
    }
    if !plan.notes.is_empty() {
        let _ = writeln!(out, "\n## Notes\n");
        for n in &plan.notes {
            let _ = writeln!(out, "- {n}");
        }
    }
    out
}

fn strip_volatile(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for key in VOLATILE {
                map.remove(*key);
            }
            map.values_mut().for_each(strip_volatile);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_volatile),
        _ => {}
    }
}

/// True when `old` and `new` differ only by the passing of time: the
/// `observedAt` and `age` values of YAML files, and anything in README.md,
/// which is derived from the YAML files beside it.
pub fn same(path: &str, old: &[u8], new: &[u8]) -> bool {
    if old == new {
        return true;
    }
    if path.ends_with("README.md") {
        return true;
    }
    if !(path.ends_with(".yaml") || path.ends_with(".yml")) {
        return false;
    }
    let parse = |b: &[u8]| serde_yaml_ng::from_slice::<serde_json::Value>(b).ok();
    match (parse(old), parse(new)) {
        (Some(mut a), Some(mut b)) => {
            strip_volatile(&mut a);
            strip_volatile(&mut b);
            a == b
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backups_volume_data_is_summed_up_in_one_cell() {
        use lifeboat_core::plan::VolumeTotals;
        assert_eq!(volumes_cell(&VolumeTotals::default()), None);
        let one = VolumeTotals {
            completed: 1,
            failed: 0,
            bytes: 512,
        };
        assert_eq!(volumes_cell(&one).as_deref(), Some("1 volume, 512 B"));
        let two = VolumeTotals {
            completed: 2,
            failed: 1,
            bytes: 5_662_310,
        };
        assert_eq!(
            volumes_cell(&two).as_deref(),
            Some("2 volumes, 5.4 MiB, 1 failed")
        );
    }

    #[test]
    fn a_finished_restore_is_reported_against_the_rto() {
        use lifeboat_core::duration::Duration;
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        let mut r = RecordSummary {
            start: Some(at("2026-01-01T00:00:00Z")),
            ..RecordSummary::default()
        };
        assert_eq!(r.took(), None, "still running");
        assert_eq!(r.rto_met(Some(Duration::from_secs(60))), None);
        r.end = Some(at("2026-01-01T00:02:05Z"));
        assert_eq!(r.took(), Some(Duration::from_secs(125)));
        assert_eq!(r.rto_met(None), None, "no objective");
        assert_eq!(r.rto_met(Some(Duration::from_secs(3_600))), Some(true));
        assert_eq!(r.rto_met(Some(Duration::from_secs(125))), Some(true));
        assert_eq!(r.rto_met(Some(Duration::from_secs(120))), Some(false));
        r.dry_run = true;
        assert_eq!(
            r.rto_met(Some(Duration::from_secs(120))),
            None,
            "a dry run restores nothing"
        );
    }

    #[test]
    fn human_durations_use_two_units() {
        assert_eq!(human(SignedDuration::from_secs(0)), "0s");
        assert_eq!(human(SignedDuration::from_secs(42)), "42s");
        assert_eq!(
            human(SignedDuration::from_secs(3_600 * 27 + 60 * 5)),
            "1d3h"
        );
        assert_eq!(human(SignedDuration::from_secs(3_600 * 2 + 65)), "2h1m");
        assert_eq!(human(SignedDuration::from_secs(86_400 + 5)), "1d");
    }

    #[test]
    fn only_time_is_noise() {
        let a = b"policy: a\nobservedAt: 2026-01-01T00:00:00Z\nrpo:\n  status: Met\n  age: 1h\n";
        let b = b"policy: a\nobservedAt: 2026-01-01T01:00:00Z\nrpo:\n  status: Met\n  age: 2h\n";
        let c =
            b"policy: a\nobservedAt: 2026-01-01T01:00:00Z\nrpo:\n  status: Violated\n  age: 2h\n";
        assert!(same("policies/a.yaml", a, b));
        assert!(!same("policies/a.yaml", a, c));
        assert!(same("README.md", b"x", b"y"));
        assert!(!same("other.txt", b"x", b"y"));
    }
}
