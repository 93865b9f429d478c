//! Planner tests. Every test pins `now`; policies default to a daily 02:30
//! schedule in Europe/Berlin, whose slot is 01:30Z in winter and 00:30Z in
//! summer, and moves at both DST changes.

use std::collections::BTreeSet;

use rstest::rstest;

use super::*;
use crate::load::{InputFile, load};

const API: &str = "apiVersion: lifeboat.dev/v1alpha1\n";
/// The planning cluster.
const C: &str = "prd";

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn location(name: &str, mode: &str) -> String {
    format!(
        "{API}kind: StorageLocation\nmetadata:\n  name: {name}\nspec:\n  url: s3://b/{name}\n  accessMode: {mode}\n"
    )
}

fn cluster(name: &str, labels: &str) -> String {
    format!(
        "{API}kind: Cluster\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\nspec:\n  role: primary\n"
    )
}

/// A BackupPolicy; fields are YAML flow values.
#[derive(Clone)]
struct Pol {
    name: &'static str,
    clusters: &'static str,
    schedule: &'static str,
    tz: &'static str,
    retention: &'static str,
    storage: &'static str,
    /// More lines under `spec`.
    extra: &'static str,
}

fn policy(name: &'static str) -> Pol {
    Pol {
        name,
        clusters: "{names: [prd]}",
        schedule: "30 2 * * *",
        tz: "Europe/Berlin",
        retention: "{keepLast: 3}",
        storage: "s3",
        extra: "",
    }
}

impl Pol {
    fn yaml(&self) -> String {
        format!(
            "{API}kind: BackupPolicy\nmetadata:\n  name: {}\nspec:\n  clusters: {}\n  schedule: '{}'\n  timezone: {}\n  retention: {}\n  storage: {}\n{}",
            self.name,
            self.clusters,
            self.schedule,
            self.tz,
            self.retention,
            self.storage,
            self.extra
        )
    }
}

fn restore(name: &str, source: &str, target: &str, dry_run: bool) -> String {
    format!(
        "{API}kind: RestoreRequest\nmetadata:\n  name: {name}\nspec:\n  source: {source}\n  target:\n    cluster: {target}\n  dryRun: {dry_run}\n"
    )
}

fn load_set(docs: &[String]) -> PolicySet {
    let text = docs.join("---\n");
    let out = load([InputFile {
        path: "policies.yaml",
        bytes: text.as_bytes(),
    }]);
    assert!(out.diagnostics.is_empty(), "{:#?}", out.diagnostics);
    out.set
}

/// Locations `s3` (read-write), `b2` (read-write) and `ro` (read-only);
/// clusters `prd` (env=prod), `dr` (env=dr) and `src`; then `extra`.
fn world(policies: &[Pol], extra: &[String]) -> PolicySet {
    let mut docs = vec![
        location("s3", "ReadWrite"),
        location("b2", "ReadWrite"),
        location("ro", "ReadOnly"),
        cluster("prd", "env: prod"),
        cluster("dr", "env: dr"),
        cluster("src", "env: prod"),
    ];
    docs.extend(policies.iter().map(Pol::yaml));
    docs.extend(extra.iter().cloned());
    load_set(&docs)
}

fn backup_in(
    location: &str,
    cluster: &str,
    policy: &str,
    slot: &str,
    phase: BackupPhase,
) -> ObservedBackup {
    let slot = ts(slot);
    ObservedBackup {
        location: location.into(),
        cluster: cluster.into(),
        name: backup_name(policy, slot),
        policy: policy.into(),
        slot,
        start: slot,
        end: slot + SignedDuration::from_mins(10),
        phase,
        items: 10,
        bytes: 1_000,
        signature: SignatureStatus::Unsigned,
        signature_detail: None,
        volumes: VolumeTotals::default(),
        prerequisites: Vec::new(),
    }
}

fn ok(policy: &str, slot: &str) -> ObservedBackup {
    backup_in("s3", C, policy, slot, BackupPhase::Completed)
}

fn failed(policy: &str, slot: &str) -> ObservedBackup {
    backup_in("s3", C, policy, slot, BackupPhase::Failed)
}

/// Backups of `policy` on January 1..=`days` 2026 at 01:30Z (02:30 in Berlin).
fn january(policy: &str, days: u32) -> Vec<ObservedBackup> {
    (1..=days)
        .map(|d| ok(policy, &format!("2026-01-{d:02}T01:30:00Z")))
        .collect()
}

fn observed(backups: Vec<ObservedBackup>) -> Observed {
    Observed {
        backups,
        ..Default::default()
    }
}

fn run(set: &PolicySet, observed: &Observed, now: &str) -> Plan {
    plan(set, observed, C, ts(now), &PlanOptions::default())
}

fn run_with(set: &PolicySet, observed: &Observed, now: &str, options: PlanOptions) -> Plan {
    plan(set, observed, C, ts(now), &options)
}

/// The planned backups, as (name, reason).
fn backups(plan: &Plan) -> Vec<(String, BackupReason)> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::Backup { name, reason, .. } => Some((name.clone(), reason.clone())),
            _ => None,
        })
        .collect()
}

/// The pruned backups' names, in plan order.
fn pruned(plan: &Plan) -> Vec<String> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::Prune { backup, .. } => Some(backup.clone()),
            _ => None,
        })
        .collect()
}

fn facts<'p>(plan: &'p Plan, policy: &str) -> &'p PolicyFacts {
    plan.policies
        .iter()
        .find(|f| f.policy == policy)
        .unwrap_or_else(|| panic!("no facts for {policy}: {plan:#?}"))
}

// ---------------------------------------------------------------- schedules

#[rstest]
#[case::first_backup(vec![], "2026-01-10T12:00:00Z", Some(("p-20260110-013000", BackupReason::FirstBackup)))]
#[case::due(january("p", 9), "2026-01-10T12:00:00Z", Some(("p-20260110-013000", BackupReason::Due { previous: ts("2026-01-09T01:30:00Z") })))]
#[case::taken(january("p", 10), "2026-01-10T12:00:00Z", None)]
#[case::taken_by_a_failed_backup(vec![failed("p", "2026-01-10T01:30:00Z")], "2026-01-10T12:00:00Z", None)]
#[case::before_todays_slot(january("p", 9), "2026-01-10T01:29:59Z", None)]
#[case::at_the_slot(january("p", 9), "2026-01-10T01:30:00Z", Some(("p-20260110-013000", BackupReason::Due { previous: ts("2026-01-09T01:30:00Z") })))]
#[case::missed_slots_are_not_back_filled(january("p", 2), "2026-01-10T12:00:00Z", Some(("p-20260110-013000", BackupReason::Due { previous: ts("2026-01-02T01:30:00Z") })))]
// 2026-03-29: 02:30 does not exist in Berlin; the slot moves to 03:00 CEST (01:00Z).
#[case::spring_forward(vec![ok("p", "2026-03-28T01:30:00Z")], "2026-03-29T06:00:00Z", Some(("p-20260329-010000", BackupReason::Due { previous: ts("2026-03-28T01:30:00Z") })))]
#[case::spring_forward_before_the_slot(vec![ok("p", "2026-03-28T01:30:00Z")], "2026-03-29T00:59:00Z", None)]
#[case::summer_slot(vec![ok("p", "2026-03-29T01:00:00Z")], "2026-03-30T06:00:00Z", Some(("p-20260330-003000", BackupReason::Due { previous: ts("2026-03-29T01:00:00Z") })))]
// 2026-10-25: 02:30 happens twice in Berlin; the slot is the first (CEST, 00:30Z), once.
#[case::fall_back(vec![ok("p", "2026-10-24T00:30:00Z")], "2026-10-25T00:45:00Z", Some(("p-20261025-003000", BackupReason::Due { previous: ts("2026-10-24T00:30:00Z") })))]
#[case::fall_back_runs_once(vec![ok("p", "2026-10-24T00:30:00Z"), ok("p", "2026-10-25T00:30:00Z")], "2026-10-25T01:45:00Z", None)]
#[case::winter_slot_after_fall_back(vec![ok("p", "2026-10-25T00:30:00Z")], "2026-10-26T06:00:00Z", Some(("p-20261026-013000", BackupReason::Due { previous: ts("2026-10-25T00:30:00Z") })))]
fn daily_berlin_schedule(
    #[case] existing: Vec<ObservedBackup>,
    #[case] now: &str,
    #[case] expect: Option<(&str, BackupReason)>,
) {
    let set = world(
        &[Pol {
            retention: "{keepLast: 30}",
            ..policy("p")
        }],
        &[],
    );
    let plan = run(&set, &observed(existing), now);
    let expect: Vec<(String, BackupReason)> = expect
        .into_iter()
        .map(|(n, r)| (n.to_string(), r))
        .collect();
    assert_eq!(backups(&plan), expect, "{plan:#?}");
    assert!(pruned(&plan).is_empty());
}

#[rstest]
#[case::hourly_utc("0 * * * *", "UTC", "2026-01-10T12:34:00Z", "p-20260110-120000")]
#[case::hourly_new_york(
    "15 * * * *",
    "America/New_York",
    "2026-03-08T07:20:00Z",
    "p-20260308-071500"
)]
#[case::weekly_monday_berlin(
    "0 4 * * 1",
    "Europe/Berlin",
    "2026-01-10T12:00:00Z",
    "p-20260105-030000"
)]
fn other_schedules(
    #[case] schedule: &'static str,
    #[case] tz: &'static str,
    #[case] now: &str,
    #[case] name: &str,
) {
    let set = world(
        &[Pol {
            schedule,
            tz,
            ..policy("p")
        }],
        &[],
    );
    let plan = run(&set, &Observed::default(), now);
    assert_eq!(
        backups(&plan),
        [(name.to_string(), BackupReason::FirstBackup)]
    );
    let f = facts(&plan, "p");
    assert!(f.next_slot.unwrap() > ts(now));
}

#[test]
fn a_running_backup_blocks_the_next_backup_and_pruning() {
    let set = world(
        &[Pol {
            retention: "{keepLast: 1}",
            ..policy("p")
        }],
        &[],
    );
    let mut obs = observed(january("p", 5));
    obs.running.backups = vec!["p".into()];
    let plan = run(&set, &obs, "2026-01-10T12:00:00Z");
    assert!(plan.is_empty(), "{plan:#?}");
    let f = facts(&plan, "p");
    assert!(f.running);
    assert_eq!((f.retained, f.pruned), (5, 0));
    assert_eq!(
        f.problems,
        ["retention would prune 4 backup(s), but not now: a backup of the policy is running"]
    );
}

#[test]
fn a_suspended_policy_takes_no_backup_but_retention_applies() {
    let set = world(
        &[Pol {
            retention: "{keepLast: 2}",
            extra: "  suspend: true\n",
            ..policy("p")
        }],
        &[],
    );
    let plan = run(&set, &observed(january("p", 5)), "2026-01-10T12:00:00Z");
    assert!(backups(&plan).is_empty());
    assert_eq!(
        pruned(&plan),
        [
            "p-20260101-013000",
            "p-20260102-013000",
            "p-20260103-013000"
        ]
    );
    let f = facts(&plan, "p");
    assert!(f.suspended);
    assert_eq!(f.next_slot, None);
    assert_eq!((f.retained, f.pruned), (2, 3));
    assert_eq!(
        f.problems,
        ["suspended: no new backups are taken; retention still applies"]
    );
}

// ---------------------------------------------------------------- retention

/// January 1..=20 daily, now January 20 12:00Z (the slot is taken): which
/// days are kept.
#[rstest]
#[case::keep_last("{keepLast: 3}", &[18, 19, 20], "not kept by keepLast 3")]
#[case::keep_daily("{keepDaily: 5}", &[16, 17, 18, 19, 20], "not kept by keepDaily 5")]
// 2026-01-20 is a Tuesday: the newest of this ISO week and of the last.
#[case::keep_weekly("{keepWeekly: 2}", &[18, 20], "not kept by keepWeekly 2")]
#[case::max_age("{maxAge: 7d}", &[14, 15, 16, 17, 18, 19, 20], "not kept by maxAge 7d")]
#[case::min_keep_tops_up("{maxAge: 1h, minKeep: 2}", &[19, 20], "not kept by maxAge 1h")]
#[case::union("{keepLast: 2, keepWeekly: 3, maxAge: 3d}", &[11, 18, 19, 20], "not kept by keepLast 2, keepWeekly 3, maxAge 3d")]
#[case::keeps_all("{keepDaily: 30}", &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20], "")]
fn retention_prunes_exactly(
    #[case] retention: &'static str,
    #[case] kept: &[u32],
    #[case] rules: &str,
) {
    let set = world(
        &[Pol {
            retention,
            ..policy("p")
        }],
        &[],
    );
    let plan = run(&set, &observed(january("p", 20)), "2026-01-20T12:00:00Z");
    let expect: Vec<String> = (1..=20)
        .filter(|d| !kept.contains(d))
        .map(|d| format!("p-202601{d:02}-013000"))
        .collect();
    assert_eq!(pruned(&plan), expect);
    assert!(backups(&plan).is_empty());
    for a in &plan.actions {
        let Action::Prune { reason, .. } = a else {
            panic!("{a:?}")
        };
        assert_eq!(reason.to_string(), rules);
        assert!(a.is_destructive());
    }
    let f = facts(&plan, "p");
    assert_eq!((f.retained, f.pruned), (kept.len(), expect.len()));
}

/// Daily buckets follow the policy's time zone: 23:30Z on January 10 is
/// already January 11 in Berlin.
#[rstest]
#[case::berlin("Europe/Berlin", &["p-20260110-233000"])]
#[case::utc("UTC", &["p-20260110-223000"])]
fn retention_buckets_in_the_policy_time_zone(#[case] tz: &'static str, #[case] expect: &[&str]) {
    let set = world(
        &[Pol {
            tz,
            schedule: "30 * * * *",
            retention: "{keepDaily: 2, minKeep: 0}",
            ..policy("p")
        }],
        &[],
    );
    let obs = observed(vec![
        ok("p", "2026-01-10T22:30:00Z"),
        ok("p", "2026-01-10T23:30:00Z"),
        ok("p", "2026-01-11T11:30:00Z"),
    ]);
    let plan = run(&set, &obs, "2026-01-11T11:40:00Z");
    assert_eq!(pruned(&plan), expect);
}

#[test]
fn failed_backups_keep_a_short_history() {
    let set = world(
        &[Pol {
            retention: "{keepLast: 2}",
            ..policy("p")
        }],
        &[],
    );
    let mut list = january("p", 2);
    list.extend((3..=8).map(|d| failed("p", &format!("2026-01-{d:02}T01:30:00Z"))));
    let plan = run(&set, &observed(list), "2026-01-08T12:00:00Z");
    // The three newest failures (6, 7, 8) stay; both successes stay (keepLast).
    assert_eq!(
        pruned(&plan),
        [
            "p-20260103-013000",
            "p-20260104-013000",
            "p-20260105-013000"
        ]
    );
    assert!(plan.actions.iter().all(|a| matches!(
        a,
        Action::Prune {
            reason: PruneReason::FailedHistory,
            ..
        }
    )));
    let f = facts(&plan, "p");
    assert_eq!(f.last_backup.as_ref().unwrap().name, "p-20260108-013000");
    assert_eq!(f.last_success.as_ref().unwrap().name, "p-20260102-013000");
}

#[test]
fn min_keep_counts_only_successful_backups() {
    let set = world(
        &[Pol {
            retention: "{maxAge: 1h, minKeep: 2}",
            ..policy("p")
        }],
        &[],
    );
    let list = vec![
        ok("p", "2026-01-01T01:30:00Z"),
        ok("p", "2026-01-02T01:30:00Z"),
        ok("p", "2026-01-03T01:30:00Z"),
        failed("p", "2026-01-04T01:30:00Z"),
        failed("p", "2026-01-05T01:30:00Z"),
    ];
    let plan = run(&set, &observed(list), "2026-01-05T12:00:00Z");
    assert_eq!(pruned(&plan), ["p-20260101-013000"]);
}

#[test]
fn prune_off_prunes_and_cleans_up_nothing_and_says_why() {
    let set = world(
        &[Pol {
            retention: "{keepLast: 1}",
            ..policy("p")
        }],
        &[],
    );
    let mut obs = observed(january("p", 5));
    obs.incomplete = vec![IncompleteBackup {
        location: "s3".into(),
        cluster: C.into(),
        name: "p-20260101-000000".into(),
        last_modified: ts("2026-01-01T00:00:00Z"),
        operation: None,
    }];
    let options = PlanOptions {
        prune: false,
        ..Default::default()
    };
    let plan = run_with(&set, &obs, "2026-01-10T12:00:00Z", options);
    // Protection goes on: the due backup is still taken.
    assert_eq!(
        plan.actions.iter().map(Action::summary).collect::<Vec<_>>(),
        [
            "back up `p` to `s3` as `p-20260110-013000` (slot due, the newest backup is of slot 2026-01-05T01:30:00Z)"
        ]
    );
    assert!(
        plan.notes[0].starts_with("pruning is off"),
        "{:?}",
        plan.notes
    );
    assert_eq!(
        facts(&plan, "p").problems,
        [
            "retention would prune 4 backup(s), but not now: pruning is off because the newest policy revision is invalid"
        ]
    );
}

#[test]
fn an_unreadable_location_is_left_alone() {
    let set = world(
        &[
            Pol {
                retention: "{keepLast: 1}",
                ..policy("p")
            },
            Pol {
                storage: "b2",
                ..policy("q")
            },
        ],
        &[],
    );
    let mut obs = observed(january("p", 3));
    obs.unavailable = vec![("s3".into(), "connection refused".into())];
    obs.incomplete = vec![IncompleteBackup {
        location: "s3".into(),
        cluster: C.into(),
        name: "p-20260101-000000".into(),
        last_modified: ts("2026-01-01T00:00:00Z"),
        operation: None,
    }];
    let plan = run(&set, &obs, "2026-01-10T12:00:00Z");
    assert_eq!(
        backups(&plan),
        [("q-20260110-013000".to_string(), BackupReason::FirstBackup)]
    );
    assert_eq!(plan.actions.len(), 1);
    assert_eq!(
        plan.notes,
        [
            "storage location `s3` could not be read (connection refused): nothing there is backed up, pruned or cleaned up"
        ]
    );
    assert_eq!(
        facts(&plan, "p").problems,
        [
            "storage location `s3` could not be read (connection refused): no backups are written and nothing is pruned"
        ]
    );
}

#[test]
fn a_read_only_location_is_never_written() {
    let set = world(
        &[Pol {
            storage: "ro",
            retention: "{keepLast: 1}",
            ..policy("p")
        }],
        &[],
    );
    let list: Vec<_> = january("p", 3)
        .into_iter()
        .map(|mut b| {
            b.location = "ro".into();
            b
        })
        .collect();
    let plan = run(&set, &observed(list), "2026-01-10T12:00:00Z");
    assert!(plan.is_empty(), "{plan:#?}");
    assert_eq!(
        facts(&plan, "p").problems,
        ["storage location `ro` is ReadOnly: no backups are written and nothing is pruned"]
    );
}

/// The newest successful backup (January 10, ended 01:40Z) is 34h20m old;
/// the failure of January 11 after it does not count.
#[rstest]
#[case::met("2d", RpoStatus::Met { age: SignedDuration::from_mins(34 * 60 + 20) })]
#[case::violated("25h", RpoStatus::Violated { age: SignedDuration::from_mins(34 * 60 + 20), by: SignedDuration::from_mins(9 * 60 + 20) })]
fn rpo_is_checked_against_the_last_successful_backup(#[case] rpo: &str, #[case] expect: RpoStatus) {
    let extra = format!("  objectives: {{rpo: {rpo}}}\n").leak();
    let set = world(
        &[Pol {
            extra,
            ..policy("p")
        }],
        &[],
    );
    let mut list = january("p", 10);
    list.push(failed("p", "2026-01-11T01:30:00Z"));
    let plan = run(&set, &observed(list), "2026-01-11T12:00:00Z");
    let f = facts(&plan, "p");
    assert_eq!(f.rpo_status, expect);
    assert_eq!(f.rpo, Some(rpo.parse().unwrap()));
}

#[test]
fn rpo_without_backups_or_objective() {
    let set = world(
        &[
            Pol {
                extra: "  objectives: {rpo: 1d}\n",
                ..policy("p")
            },
            policy("q"),
        ],
        &[],
    );
    let plan = run(&set, &Observed::default(), "2026-01-10T12:00:00Z");
    assert_eq!(facts(&plan, "p").rpo_status, RpoStatus::NoBackup);
    assert_eq!(facts(&plan, "q").rpo_status, RpoStatus::NotSet);
}

// ---------------------------------------------------------------- clusters

#[test]
fn policies_for_other_clusters_are_ignored() {
    let set = world(
        &[
            Pol {
                clusters: "{names: [dr]}",
                ..policy("dr-only")
            },
            Pol {
                clusters: "{selector: {matchLabels: {env: dr}}}",
                ..policy("dr-labels")
            },
            Pol {
                clusters: "{selector: {matchLabels: {env: prod}}}",
                ..policy("prod-labels")
            },
            Pol {
                clusters: "{names: [dr, prd]}",
                ..policy("both")
            },
        ],
        &[],
    );
    // Backups the dr cluster took are not this cluster's to prune or orphan.
    let obs = observed(vec![
        backup_in(
            "s3",
            "dr",
            "dr-only",
            "2026-01-01T01:30:00Z",
            BackupPhase::Completed,
        ),
        backup_in(
            "s3",
            "dr",
            "gone",
            "2026-01-01T01:30:00Z",
            BackupPhase::Completed,
        ),
    ]);
    let plan = run(&set, &obs, "2026-01-10T12:00:00Z");
    let names: Vec<&str> = plan.policies.iter().map(|f| f.policy.as_str()).collect();
    assert_eq!(names, ["both", "prod-labels"]);
    assert_eq!(
        backups(&plan),
        [
            (
                "both-20260110-013000".to_string(),
                BackupReason::FirstBackup
            ),
            (
                "prod-labels-20260110-013000".to_string(),
                BackupReason::FirstBackup
            ),
        ]
    );
    assert!(plan.orphans.is_empty());
}

// ---------------------------------------------------------------- orphans

fn gone_backups() -> Vec<ObservedBackup> {
    vec![
        ok("gone", "2026-01-01T01:30:00Z"),
        ok("gone", "2026-01-02T01:30:00Z"),
    ]
}

fn mark(policy: &str, since: &str) -> OrphanMark {
    OrphanMark {
        location: "s3".into(),
        policy: policy.into(),
        since: ts(since),
    }
}

#[test]
fn orphans_are_marked_first() {
    let set = world(&[], &[]);
    let plan = run(&set, &observed(gone_backups()), "2026-02-01T00:00:00Z");
    assert_eq!(
        plan.actions,
        [Action::MarkOrphaned {
            location: "s3".into(),
            policy: "gone".into(),
            since: ts("2026-02-01T00:00:00Z"),
        }]
    );
    assert!(!plan.actions[0].is_destructive());
    assert_eq!(
        plan.orphans,
        [OrphanFacts {
            policy: "gone".into(),
            location: "s3".into(),
            backups: 2,
            since: None,
            prune_at: Some(ts("2026-03-03T00:00:00Z")),
        }]
    );
}

#[rstest]
#[case::within_grace("2026-01-10T00:00:00Z", vec![])]
#[case::at_the_end_of_grace("2026-01-02T00:00:00Z", vec!["gone-20260101-013000", "gone-20260102-013000"])]
#[case::past_grace("2025-12-01T00:00:00Z", vec!["gone-20260101-013000", "gone-20260102-013000"])]
fn orphans_are_pruned_after_the_grace_period(#[case] since: &str, #[case] expect: Vec<&str>) {
    let set = world(&[], &[]);
    let mut obs = observed(gone_backups());
    obs.orphans = vec![mark("gone", since)];
    let plan = run(&set, &obs, "2026-02-01T00:00:00Z");
    assert_eq!(pruned(&plan), expect);
    assert_eq!(plan.actions.len(), expect.len());
    for a in &plan.actions {
        assert!(
            matches!(a, Action::Prune { reason: PruneReason::Orphaned { since: s }, .. } if *s == ts(since))
        );
    }
    assert_eq!(plan.orphans[0].since, Some(ts(since)));
    assert_eq!(
        plan.orphans[0].prune_at,
        Some(ts(since) + SignedDuration::from_hours(30 * 24))
    );
}

#[test]
fn orphans_past_grace_are_kept_when_pruning_is_off() {
    let set = world(&[], &[]);
    let mut obs = observed(gone_backups());
    obs.orphans = vec![mark("gone", "2025-12-01T00:00:00Z")];
    let options = PlanOptions {
        prune: false,
        ..Default::default()
    };
    let plan = run_with(&set, &obs, "2026-02-01T00:00:00Z", options);
    assert!(plan.is_empty());
    assert!(plan.notes[1].contains("past their grace period but not pruned now"));
}

#[test]
fn a_policy_moved_to_another_location_orphans_its_old_backups() {
    let set = world(
        &[Pol {
            storage: "b2",
            ..policy("p")
        }],
        &[],
    );
    let plan = run(&set, &observed(january("p", 2)), "2026-01-10T12:00:00Z");
    assert_eq!(
        plan.actions.iter().map(|a| a.order().0).collect::<Vec<_>>(),
        [2, 4],
        "{plan:#?}"
    );
    assert_eq!(plan.orphans[0].location, "s3");
    assert_eq!(facts(&plan, "p").last_backup, None);
}

#[test]
fn a_policy_that_no_longer_selects_this_cluster_orphans_its_backups() {
    let set = world(
        &[Pol {
            clusters: "{names: [dr]}",
            ..policy("p")
        }],
        &[],
    );
    let plan = run(&set, &observed(january("p", 2)), "2026-01-10T12:00:00Z");
    assert!(matches!(&plan.actions[..], [Action::MarkOrphaned { policy, .. }] if policy == "p"));
}

#[test]
fn marks_are_removed_when_the_policy_is_back_or_nothing_is_left() {
    let set = world(&[policy("p")], &[]);
    let mut obs = observed(january("p", 10));
    obs.orphans = vec![
        mark("p", "2026-01-01T00:00:00Z"),
        mark("emptied", "2025-01-01T00:00:00Z"),
    ];
    let plan = run(&set, &obs, "2026-01-10T12:00:00Z");
    let unmarked: Vec<&str> = plan
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::UnmarkOrphaned { policy, .. } => Some(policy.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(unmarked, ["emptied", "p"]);
    assert!(plan.orphans.is_empty());
}

// ---------------------------------------------------------------- incomplete

fn incomplete(cluster: &str, name: &str, last_modified: &str) -> IncompleteBackup {
    IncompleteBackup {
        location: "s3".into(),
        cluster: cluster.into(),
        name: name.into(),
        last_modified: ts(last_modified),
        operation: None,
    }
}

/// The facts of one RestoreRequest `r` in `state`, saying `message`
/// (no RTO, no prerequisites evaluated).
fn only_request_r(state: RestoreFactState, message: &str) -> [RestoreFacts; 1] {
    [RestoreFacts {
        request: "r".into(),
        state,
        message: message.into(),
        rto: None,
        missing_prerequisites: None,
    }]
}

#[rstest]
#[case::old(incomplete(C, "p-20260108-013000", "2026-01-08T01:31:00Z"), &[], true)]
#[case::young(incomplete(C, "p-20260109-013000", "2026-01-09T12:00:01Z"), &[], false)]
#[case::exactly_the_grace(incomplete(C, "p-20260109-013000", "2026-01-09T12:00:00Z"), &[], false)]
#[case::its_policy_is_running(incomplete(C, "p-20260108-013000", "2026-01-08T01:31:00Z"), &["p"], false)]
#[case::a_policy_with_a_longer_name_is_running(incomplete(C, "p-20260108-013000", "2026-01-08T01:31:00Z"), &["p-db"], true)]
#[case::another_cluster(incomplete("dr", "p-20260108-013000", "2026-01-08T01:31:00Z"), &[], false)]
fn incomplete_backups_are_cleaned_up_after_a_day(
    #[case] inc: IncompleteBackup,
    #[case] running: &[&str],
    #[case] cleaned: bool,
) {
    let keep_all = "{keepLast: 30}";
    let set = world(
        &[
            Pol {
                retention: keep_all,
                ..policy("p")
            },
            Pol {
                retention: keep_all,
                ..policy("p-db")
            },
        ],
        &[],
    );
    let mut obs = observed(vec![]);
    obs.backups = january("p", 10);
    obs.backups.extend(january("p-db", 10));
    obs.incomplete = vec![inc.clone()];
    obs.running.backups = running.iter().map(|s| s.to_string()).collect();
    let plan = run(&set, &obs, "2026-01-10T12:00:00Z");
    let expect = if cleaned {
        vec![Action::CleanupIncomplete {
            location: "s3".into(),
            cluster: inc.cluster.clone(),
            backup: inc.name.clone(),
            last_modified: inc.last_modified,
        }]
    } else {
        vec![]
    };
    assert_eq!(plan.actions, expect);
}

#[test]
fn an_incomplete_backup_of_the_due_slot_is_not_deleted_under_the_retry() {
    // A weekly slot whose first attempt died more than a day ago.
    let set = world(
        &[Pol {
            schedule: "0 4 * * 1",
            ..policy("p")
        }],
        &[],
    );
    let mut obs = observed(vec![]);
    obs.incomplete = vec![incomplete(C, "p-20260105-030000", "2026-01-05T03:05:00Z")];
    let plan = run(&set, &obs, "2026-01-10T12:00:00Z");
    assert_eq!(
        backups(&plan),
        [("p-20260105-030000".to_string(), BackupReason::FirstBackup)]
    );
    assert_eq!(plan.actions.len(), 1);
}

// ---------------------------------------------------------------- restores

/// Policy `web` of cluster `src` has Completed backups on January 1, 2 and 4,
/// a PartiallyFailed one on the 3rd and a Failed one on the 5th.
fn source_backups() -> Vec<ObservedBackup> {
    let b = |d: u32, phase| {
        backup_in(
            "s3",
            "src",
            "web",
            &format!("2026-01-{d:02}T01:30:00Z"),
            phase,
        )
    };
    vec![
        b(1, BackupPhase::Completed),
        b(2, BackupPhase::Completed),
        b(3, BackupPhase::PartiallyFailed),
        b(4, BackupPhase::Completed),
        b(5, BackupPhase::Failed),
    ]
}

fn with_deadline(mut r: ObservedRestore, deadline: &str) -> ObservedRestore {
    r.deadline = Some(ts(deadline));
    r
}

fn record(request: &str, phase: RestoreState) -> ObservedRestore {
    ObservedRestore {
        location: "s3".into(),
        request: request.into(),
        phase,
        source_backup: "web-20260104-013000".into(),
        start: ts("2026-01-09T00:00:00Z"),
        end: None,
        deadline: None,
    }
}

#[rstest]
#[case::latest("{cluster: src, policy: web}", vec![], vec![], Some("web-20260104-013000"), RestoreFactState::Pending, "restores `web-20260104-013000` (Completed, slot 2026-01-04T01:30:00Z) of policy `web` from cluster `src` in `s3`")]
#[case::latest_not_after("{cluster: src, policy: web, notAfter: '2026-01-03T12:00:00+01:00'}", vec![], vec![], Some("web-20260103-013000"), RestoreFactState::Pending, "restores `web-20260103-013000` (PartiallyFailed, slot 2026-01-03T01:30:00Z) of policy `web` from cluster `src` in `s3`")]
#[case::not_after_is_inclusive("{cluster: src, policy: web, notAfter: '2026-01-02T01:30:00Z'}", vec![], vec![], Some("web-20260102-013000"), RestoreFactState::Pending, "restores `web-20260102-013000` (Completed, slot 2026-01-02T01:30:00Z) of policy `web` from cluster `src` in `s3`")]
#[case::not_after_before_every_backup("{cluster: src, policy: web, notAfter: '2025-12-31T00:00:00Z'}", vec![], vec![], None, RestoreFactState::Waiting, "no successful backup of policy `web` from cluster `src` in `s3` taken at or before 2025-12-31T00:00:00Z")]
#[case::named("{cluster: src, policy: web, backup: web-20260101-013000}", vec![], vec![], Some("web-20260101-013000"), RestoreFactState::Pending, "restores `web-20260101-013000` (Completed, slot 2026-01-01T01:30:00Z) of policy `web` from cluster `src` in `s3`")]
#[case::named_failed("{cluster: src, policy: web, backup: web-20260105-013000}", vec![], vec![], None, RestoreFactState::Waiting, "backup `web-20260105-013000` of policy `web` from cluster `src` in `s3` failed and cannot be restored; name another backup or use `latest`")]
#[case::named_missing("{cluster: src, policy: web, backup: web-20260106-013000}", vec![], vec![], None, RestoreFactState::Waiting, "backup `web-20260106-013000` of policy `web` from cluster `src` in `s3` not found")]
#[case::no_backup_yet("{cluster: dr, policy: web}", vec![], vec![], None, RestoreFactState::Waiting, "no successful backup of policy `web` from cluster `dr` in `s3` yet")]
#[case::unknown_policy("{cluster: src, policy: nope}", vec![], vec![], None, RestoreFactState::Waiting, "source policy `nope` is not in the policy set, so the location of its backups is unknown")]
#[case::done("{cluster: src, policy: web}", vec![record("r", RestoreState::Completed)], vec![], None, RestoreFactState::Done, "finished Completed: restored `web-20260104-013000` (record in `s3`); a request runs once")]
#[case::done_failed("{cluster: src, policy: web}", vec![record("r", RestoreState::Failed)], vec![], None, RestoreFactState::Done, "finished Failed: restored `web-20260104-013000` (record in `s3`); a request runs once")]
#[case::running("{cluster: src, policy: web}", vec![record("r", RestoreState::InProgress)], vec!["r"], None, RestoreFactState::Running, "restoring now")]
#[case::running_before_its_record("{cluster: src, policy: web}", vec![], vec!["r"], None, RestoreFactState::Running, "restoring now")]
#[case::interrupted_within_its_deadline("{cluster: src, policy: web}", vec![with_deadline(record("r", RestoreState::InProgress), "2026-01-10T13:00:00Z")], vec![], Some("web-20260104-013000"), RestoreFactState::Pending, "interrupted while restoring `web-20260104-013000`: resumed (its deadline is 2026-01-10T13:00:00Z)")]
fn restores(
    #[case] source: &str,
    #[case] records: Vec<ObservedRestore>,
    #[case] running: Vec<&str>,
    #[case] expect_backup: Option<&str>,
    #[case] state: RestoreFactState,
    #[case] message: &str,
) {
    let set = world(
        &[Pol {
            clusters: "{names: [src]}",
            ..policy("web")
        }],
        &[restore("r", source, C, false)],
    );
    let mut obs = observed(source_backups());
    obs.restores = records;
    obs.running.restores = running.into_iter().map(String::from).collect();
    let plan = run(&set, &obs, "2026-01-10T12:00:00Z");
    let expect: Vec<Action> = expect_backup
        .into_iter()
        .map(|b| Action::Restore {
            request: "r".into(),
            location: "s3".into(),
            source_cluster: source.split(", ").next().unwrap()[10..].into(),
            backup: b.into(),
            dry_run: false,
            record_location: None,
        })
        .collect();
    assert_eq!(plan.actions, expect, "{plan:#?}");
    assert_eq!(plan.restores, only_request_r(state, message));
}

/// A restore that runs now lists the prerequisites of its backup the
/// planning cluster lacks (from the inventory), and only then.
#[test]
fn a_pending_restore_lists_the_prerequisites_its_target_lacks() {
    use crate::prerequisites::{MissingReason, Olm, Prerequisite, PrerequisiteKind, Provided};
    use crate::volumes::Inventory;
    let set = world(
        &[Pol {
            clusters: "{names: [src]}",
            ..policy("web")
        }],
        &[
            // A restore of some namespaces leaves the backup's CRDs out.
            format!(
                "{}  include: {{namespaces: [web]}}\n",
                restore("r", "{cluster: src, policy: web}", C, false)
            ),
            // A restore of everything creates them.
            restore("all", "{cluster: src, policy: web}", C, false),
            restore("elsewhere", "{cluster: src, policy: web}", "dr", false),
        ],
    );
    let crd = Prerequisite {
        kind: PrerequisiteKind::CustomResourceDefinition,
        name: "widgets.example.com".into(),
        namespace: None,
        detail: None,
    };
    let etcd = Prerequisite {
        kind: PrerequisiteKind::Operator,
        name: "etcd".into(),
        namespace: Some("web".into()),
        detail: Some("channel singlenamespace-alpha, catalog source community-operators".into()),
    };
    let mut backups = source_backups();
    for b in &mut backups {
        b.prerequisites = vec![crd.clone(), etcd.clone()];
    }
    let now = "2026-01-10T12:00:00Z";
    let missing = |plan: &Plan, request: &str| {
        plan.restores
            .iter()
            .find(|r| r.request == request)
            .unwrap()
            .missing_prerequisites
            .clone()
    };

    // No view of the cluster: not evaluated.
    let plan = run(&set, &observed(backups.clone()), now);
    assert_eq!(missing(&plan, "r"), None);

    // A cluster without the CRD nor OLM.
    let mut obs = observed(backups.clone());
    obs.inventory = Some(Inventory {
        provides: Some(Provided::default()),
        ..Default::default()
    });
    let plan = run(&set, &obs, now);
    let r = missing(&plan, "r").unwrap();
    let what: Vec<(&str, &MissingReason)> = r
        .iter()
        .map(|m| (m.prerequisite.name.as_str(), &m.reason))
        .collect();
    assert_eq!(
        what,
        [
            ("widgets.example.com", &MissingReason::NotServed),
            ("etcd", &MissingReason::NoOlm),
        ]
    );
    assert!(r[0].message.contains("install the CRD"), "{}", r[0].message);
    // The restore of everything brings the CRD, not the operator.
    let all = missing(&plan, "all").unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].prerequisite, etcd);
    // Not for this cluster: nothing said.
    assert_eq!(missing(&plan, "elsewhere"), None);
    // Prerequisites never change what is done.
    assert_eq!(
        plan.actions,
        run(&set, &observed(backups.clone()), now).actions
    );

    // With the CRD served and the operator subscribed: nothing missing.
    obs.inventory = Some(Inventory {
        provides: Some(Provided {
            resources: ["widgets.example.com".to_string()].into(),
            olm: Olm::Installed {
                packages: ["etcd".to_string()].into(),
            },
        }),
        ..Default::default()
    });
    let plan = run(&set, &obs, now);
    assert_eq!(missing(&plan, "r"), Some(vec![]));

    // A finished restore is not evaluated again.
    obs.restores = vec![record("r", RestoreState::Completed)];
    obs.inventory = Some(Inventory {
        provides: Some(Provided::default()),
        ..Default::default()
    });
    let plan = run(&set, &obs, now);
    assert_eq!(missing(&plan, "r"), None);
    // And what is asked for on the cluster covers the pending ones only.
    let asked = crate::prerequisites::asked(&set, &obs, C);
    assert_eq!(asked, [crd, etcd]);
}

fn velero_backup(name: &str, phase: &str, started: &str) -> ObservedVeleroBackup {
    ObservedVeleroBackup {
        location: "oadp".into(),
        name: name.into(),
        phase: phase.into(),
        started: Some(ts(started)),
    }
}

/// RestoreRequests of Velero backups (`source.location`): `latest` is the
/// newest backup Velero finished by start time; the record goes to the
/// first lifeboat location the planning cluster's policies write to (`b2`
/// before `s3`, though `s3` sorts later and other clusters' policies write
/// there), or waits with the reason.
#[rstest]
#[case::latest("{location: oadp}", vec![], Some("daily-3"), RestoreFactState::Pending, "restores Velero backup `daily-3` (PartiallyFailed, started 2026-01-03T02:00:00Z) in Velero location `oadp`, its record in `b2`")]
#[case::latest_not_after("{location: oadp, notAfter: '2026-01-02T02:00:00Z'}", vec![], Some("daily-2"), RestoreFactState::Pending, "restores Velero backup `daily-2` (Completed, started 2026-01-02T02:00:00Z) in Velero location `oadp`, its record in `b2`")]
#[case::named("{location: oadp, backup: daily-1}", vec![], Some("daily-1"), RestoreFactState::Pending, "restores Velero backup `daily-1` (Completed, started 2026-01-01T02:00:00Z) in Velero location `oadp`, its record in `b2`")]
#[case::named_unfinished("{location: oadp, backup: daily-4}", vec![], None, RestoreFactState::Waiting, "backup `daily-4` in Velero location `oadp` is InProgress, not Completed: it cannot be restored; name another backup or use `latest`")]
#[case::named_missing("{location: oadp, backup: daily-9}", vec![], None, RestoreFactState::Waiting, "backup `daily-9` in Velero location `oadp` not found")]
#[case::unknown_location("{location: nope}", vec![], None, RestoreFactState::Waiting, "source location `nope` is not in the policy set")]
#[case::lifeboat_location("{location: s3}", vec![], None, RestoreFactState::Waiting, "source location `s3` is a lifeboat location, not a Velero one (LB150)")]
#[case::done("{location: oadp}", vec![ObservedRestore { location: "b2".into(), ..record("r", RestoreState::Completed) }], None, RestoreFactState::Done, "finished Completed: restored `web-20260104-013000` (record in `b2`); a request runs once")]
#[case::resumed("{location: oadp}", vec![ObservedRestore { location: "b2".into(), source_backup: "daily-2".into(), ..with_deadline(record("r", RestoreState::InProgress), "2026-01-10T13:00:00Z") }], Some("daily-2"), RestoreFactState::Pending, "interrupted while restoring `daily-2`: resumed (its deadline is 2026-01-10T13:00:00Z)")]
fn velero_restores(
    #[case] source: &str,
    #[case] records: Vec<ObservedRestore>,
    #[case] expect_backup: Option<&str>,
    #[case] state: RestoreFactState,
    #[case] message: &str,
) {
    let velero = format!(
        "{API}kind: StorageLocation\nmetadata:\n  name: oadp\nspec:\n  url: s3://velero/prod\n  format: velero\n"
    );
    let set = world(
        &[
            Pol {
                storage: "b2",
                ..policy("mine")
            },
            Pol {
                clusters: "{names: [src]}",
                ..policy("theirs")
            },
        ],
        &[velero, restore("r", source, C, false)],
    );
    let mut obs = observed(vec![]);
    obs.velero_backups = vec![
        velero_backup("daily-1", "Completed", "2026-01-01T02:00:00Z"),
        velero_backup("daily-2", "Completed", "2026-01-02T02:00:00Z"),
        velero_backup("daily-3", "PartiallyFailed", "2026-01-03T02:00:00Z"),
        velero_backup("daily-4", "InProgress", "2026-01-04T02:00:00Z"),
    ];
    obs.restores = records;
    let plan = run(&set, &obs, "2026-01-10T12:00:00Z");
    let expect: Vec<Action> = expect_backup
        .into_iter()
        .map(|b| Action::Restore {
            request: "r".into(),
            location: "oadp".into(),
            source_cluster: "oadp".into(),
            backup: b.into(),
            dry_run: false,
            record_location: Some("b2".into()),
        })
        .collect();
    let restores: Vec<&Action> = plan
        .actions
        .iter()
        .filter(|a| matches!(a, Action::Restore { .. }))
        .collect();
    assert_eq!(restores, expect.iter().collect::<Vec<_>>(), "{plan:#?}");
    assert_eq!(plan.restores, only_request_r(state, message));
}

/// Without a writable lifeboat location, a Velero restore has nowhere to
/// keep its record: it waits, saying so.
#[test]
fn a_velero_restore_without_a_lifeboat_location_for_its_record_waits() {
    let docs = vec![
        location("ro", "ReadOnly"),
        format!(
            "{API}kind: StorageLocation\nmetadata:\n  name: oadp\nspec:\n  url: s3://velero/prod\n  format: velero\n"
        ),
        cluster("prd", ""),
        restore("r", "{location: oadp}", C, false),
    ];
    let set = load_set(&docs);
    let mut obs = observed(vec![]);
    obs.velero_backups = vec![velero_backup(
        "daily-1",
        "Completed",
        "2026-01-01T02:00:00Z",
    )];
    let plan = run(&set, &obs, "2026-01-10T12:00:00Z");
    assert!(plan.actions.is_empty(), "{plan:#?}");
    assert_eq!(plan.restores[0].state, RestoreFactState::Waiting);
    assert!(
        plan.restores[0]
            .message
            .contains("has no readable one with `accessMode: ReadWrite`"),
        "{}",
        plan.restores[0].message
    );
}

#[rstest]
#[case::without_a_deadline(None)]
#[case::past_its_deadline(Some("2026-01-10T11:59:59Z"))]
fn an_interrupted_restore_without_time_left_is_marked_failed_and_never_rerun(
    #[case] deadline: Option<&str>,
) {
    let set = world(
        &[],
        &[restore("r", "{cluster: src, policy: web}", C, false)],
    );
    let mut obs = observed(source_backups());
    let mut r = record("r", RestoreState::InProgress);
    r.deadline = deadline.map(ts);
    obs.restores = vec![r];
    let plan = run(&set, &obs, "2026-01-10T12:00:00Z");
    assert_eq!(
        plan.actions,
        [Action::FinishInterruptedRestore {
            location: "s3".into(),
            request: "r".into(),
        }]
    );
    assert_eq!(plan.restores[0].state, RestoreFactState::Done);
}

#[test]
fn restores_for_other_clusters_and_dry_runs() {
    let set = world(
        &[Pol {
            clusters: "{names: [src]}",
            ..policy("web")
        }],
        &[
            restore("elsewhere", "{cluster: src, policy: web}", "dr", false),
            restore("drill", "{cluster: src, policy: web}", C, true),
        ],
    );
    let plan = run(&set, &observed(source_backups()), "2026-01-10T12:00:00Z");
    assert_eq!(
        plan.actions.iter().map(Action::summary).collect::<Vec<_>>(),
        ["restore `web-20260104-013000` of cluster `src` from `s3` for request `drill` (dry run)"]
    );
    let states: Vec<(&str, RestoreFactState)> = plan
        .restores
        .iter()
        .map(|r| (r.request.as_str(), r.state))
        .collect();
    assert_eq!(
        states,
        [
            ("drill", RestoreFactState::Pending),
            ("elsewhere", RestoreFactState::NotForThisCluster)
        ]
    );
}

// ---------------------------------------------------------------- determinism

/// A set and observations that exercise every kind of action.
fn busy() -> (PolicySet, Observed) {
    let set = world(
        &[
            Pol {
                retention: "{keepDaily: 3, keepWeekly: 2}",
                ..policy("a")
            },
            Pol {
                schedule: "0 * * * *",
                retention: "{keepHourly: 5, maxAge: 2d}",
                storage: "b2",
                ..policy("b")
            },
            Pol {
                clusters: "{names: [src]}",
                ..policy("web")
            },
        ],
        &[
            restore("r1", "{cluster: src, policy: web}", C, false),
            restore(
                "r2",
                "{cluster: src, policy: web, notAfter: '2026-01-02T12:00:00Z'}",
                C,
                true,
            ),
            restore("r3", "{cluster: src, policy: web}", C, false),
        ],
    );
    let mut list = january("a", 19);
    list.push(failed("a", "2026-01-20T01:30:00Z"));
    list.extend((0..72).map(|h| {
        let t = ts("2026-01-17T00:00:00Z") + SignedDuration::from_hours(h);
        let mut b = ok("b", &t.to_string());
        b.location = "b2".into();
        b
    }));
    list.extend(gone_backups());
    list.extend(january("old", 3));
    list.extend(source_backups());
    let obs = Observed {
        backups: list,
        incomplete: vec![
            incomplete(C, "a-20260110-013000", "2026-01-10T01:40:00Z"),
            incomplete(C, "x-20260110-013000", "2026-01-10T01:40:00Z"),
            incomplete(C, "y-20260119-013000", "2026-01-20T01:40:00Z"),
        ],
        restores: vec![record("r3", RestoreState::InProgress)],
        orphans: vec![
            mark("gone", "2025-11-01T00:00:00Z"),
            mark("back", "2026-01-01T00:00:00Z"),
        ],
        unavailable: vec![],
        running: Running::default(),
        inventory: None,
        repositories: vec![],
        velero_backups: vec![],
    };
    (set, obs)
}

/// A reproducible shuffle (no randomness crate in core's dev-dependencies).
fn shuffle<T>(v: &mut [T], seed: u64) {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    for i in (1..v.len()).rev() {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let j = ((state >> 33) % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

#[test]
fn the_plan_does_not_depend_on_input_order_or_the_zone_of_now() {
    let (set, obs) = busy();
    let now = "2026-01-20T12:00:00Z";
    let reference = run(&set, &obs, now);
    let kinds: BTreeSet<u8> = reference.actions.iter().map(|a| a.order().0).collect();
    assert_eq!(kinds, (0..=6).collect(), "{reference:#?}");

    for seed in 0..20 {
        let mut o = obs.clone();
        shuffle(&mut o.backups, seed);
        shuffle(&mut o.incomplete, seed + 1);
        shuffle(&mut o.orphans, seed + 2);
        shuffle(&mut o.restores, seed + 3);
        // A backup listed twice (two listings overlapping) changes nothing.
        let again = o.backups[seed as usize].clone();
        o.backups.push(again);
        assert_eq!(run(&set, &o, now), reference, "seed {seed}");
    }

    for same_instant in [
        "2026-01-20T13:00:00+01:00",
        "2026-01-20T07:00:00-05:00",
        "2026-01-20T21:00:00+09:00[Asia/Tokyo]",
    ] {
        let t = match same_instant.parse::<Timestamp>() {
            Ok(t) => t,
            Err(_) => same_instant.parse::<jiff::Zoned>().unwrap().timestamp(),
        };
        assert_eq!(plan(&set, &obs, C, t, &PlanOptions::default()), reference);
    }
}

#[test]
fn actions_are_sorted_by_kind_then_name() {
    let (set, obs) = busy();
    let plan = run(&set, &obs, "2026-01-20T12:00:00Z");
    let order: Vec<_> = plan.actions.iter().map(Action::order).collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted);
    let summaries: Vec<String> = plan.actions.iter().map(Action::summary).collect();
    // `a` keeps January 17, 18, 19 (keepDaily) and 18 (keepWeekly, last
    // week), and the failed 20th (history): 1 to 16 go.
    let a: Vec<&String> = summaries
        .iter()
        .filter(|s| s.starts_with("prune `a-"))
        .collect();
    assert_eq!(a.len(), 16);
    assert!(
        a[0].starts_with("prune `a-20260101-013000`")
            && a[15].starts_with("prune `a-20260116-013000`")
    );
    assert_eq!(
        summaries
            .iter()
            .filter(|s| !s.starts_with("prune `b-") && !s.starts_with("prune `a-"))
            .cloned()
            .collect::<Vec<_>>(),
        [
            "mark restore `r3` in `s3` as Failed: it was interrupted and is not run again",
            "restore `web-20260104-013000` of cluster `src` from `s3` for request `r1`",
            "restore `web-20260102-013000` of cluster `src` from `s3` for request `r2` (dry run)",
            "back up `b` to `b2` as `b-20260120-120000` (slot due, the newest backup is of slot 2026-01-19T23:00:00Z)",
            "unmark backups of `back` in `s3`: no longer orphaned",
            "mark backups of `old` in `s3` as orphaned: no policy of this cluster writes them any more",
            "prune `gone-20260101-013000` of cluster `prd` from `s3`: its policy no longer applies here, orphaned since 2025-11-01T00:00:00Z and the grace period is over",
            "prune `gone-20260102-013000` of cluster `prd` from `s3`: its policy no longer applies here, orphaned since 2025-11-01T00:00:00Z and the grace period is over",
            "delete incomplete backup `a-20260110-013000` of cluster `prd` from `s3`: no manifest, last written 2026-01-10T01:40:00Z",
            "delete incomplete backup `x-20260110-013000` of cluster `prd` from `s3`: no manifest, last written 2026-01-10T01:40:00Z",
        ]
    );
}

#[test]
fn the_plan_serializes_for_the_cli() {
    let set = world(&[policy("p")], &[]);
    let plan = run(&set, &Observed::default(), "2026-01-10T12:00:00Z");
    let json = serde_json::to_value(&plan).unwrap();
    assert_eq!(
        json["actions"][0],
        serde_json::json!({
            "type": "Backup",
            "policy": "p",
            "location": "s3",
            "slot": "2026-01-10T01:30:00Z",
            "name": "p-20260110-013000",
            "reason": {"type": "FirstBackup"},
        })
    );
    assert_eq!(
        json["policies"][0]["rpoStatus"],
        serde_json::json!({"type": "NotSet"})
    );
    assert_eq!(json["policies"][0]["nextSlot"], "2026-01-11T01:30:00Z");
}

// ---------------------------------------------------------------- compare

fn kinds_and_names(change: &Change) -> Vec<(String, String, ChangeType)> {
    change
        .documents
        .iter()
        .map(|d| (d.kind.clone(), d.name.clone(), d.change))
        .collect()
}

#[test]
fn a_retention_cut_lists_exactly_the_backups_newly_pruned() {
    let base = world(
        &[Pol {
            retention: "{keepDaily: 14}",
            ..policy("p")
        }],
        &[],
    );
    let head = world(
        &[Pol {
            retention: "{keepDaily: 3}",
            ..policy("p")
        }],
        &[],
    );
    let obs = observed(january("p", 20));
    let now = "2026-01-20T12:00:00Z";
    let (base_plan, head_plan) = (run(&base, &obs, now), run(&head, &obs, now));
    let change = compare(&base, &head, &base_plan, &head_plan);
    let newly: Vec<String> = change
        .newly_pruned
        .iter()
        .map(|a| match a {
            Action::Prune { backup, .. } => backup.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    let expect: Vec<String> = (7..=17).map(|d| format!("p-202601{d:02}-013000")).collect();
    assert_eq!(newly, expect);
    assert!(change.newly_pruned.iter().all(Action::is_destructive));
    assert!(change.no_longer_pruned.is_empty());
    assert!(change.new_backups.is_empty() && change.new_restores.is_empty());
    assert_eq!(
        change.documents,
        [DocumentChange {
            kind: "BackupPolicy".into(),
            name: "p".into(),
            change: ChangeType::Modified,
            fields: vec![FieldChange {
                path: "spec.retention.keepDaily".into(),
                before: Some(14.into()),
                after: Some(3.into()),
            }],
        }]
    );

    // The other way round nothing is newly pruned and the cut is undone.
    let back = compare(&head, &base, &head_plan, &base_plan);
    assert!(back.newly_pruned.is_empty());
    assert_eq!(back.no_longer_pruned.len(), 11);
    assert!(!back.is_empty());
}

#[test]
fn unchanged_sets_compare_empty() {
    let (set, obs) = busy();
    let p = run(&set, &obs, "2026-01-20T12:00:00Z");
    assert!(compare(&set, &set, &p, &p).is_empty());
}

#[test]
fn field_paths_and_added_and_removed_documents() {
    let base = world(
        &[policy("a"), policy("keep")],
        &[restore("r", "{cluster: src, policy: web}", "dr", false)],
    );
    let head = world(
        &[
            Pol {
                schedule: "0 3 * * *",
                clusters: "{names: [prd, dr]}",
                extra: "  objectives: {rto: 1h}\n",
                ..policy("keep")
            },
            policy("b"),
        ],
        &[],
    );
    let obs = Observed::default();
    let now = "2026-01-10T12:00:00Z";
    let change = compare(&base, &head, &run(&base, &obs, now), &run(&head, &obs, now));
    assert_eq!(
        kinds_and_names(&change),
        [
            ("BackupPolicy".into(), "a".into(), ChangeType::Removed),
            ("BackupPolicy".into(), "b".into(), ChangeType::Added),
            ("BackupPolicy".into(), "keep".into(), ChangeType::Modified),
            ("RestoreRequest".into(), "r".into(), ChangeType::Removed),
        ]
    );
    let fields: Vec<(&str, Option<&serde_json::Value>, Option<&serde_json::Value>)> = change
        .documents[2]
        .fields
        .iter()
        .map(|f| (f.path.as_str(), f.before.as_ref(), f.after.as_ref()))
        .collect();
    assert_eq!(
        fields,
        [
            (
                "spec.clusters.names",
                Some(&serde_json::json!(["prd"])),
                Some(&serde_json::json!(["prd", "dr"]))
            ),
            (
                "spec.schedule",
                Some(&"30 2 * * *".into()),
                Some(&"0 3 * * *".into())
            ),
            (
                "spec.objectives",
                None,
                Some(&serde_json::json!({"rto": "1h"}))
            ),
        ]
    );
    // `b` is new, so its first backup is new.
    let new: Vec<String> = change.new_backups.iter().map(Action::summary).collect();
    assert_eq!(
        new,
        [
            "back up `b` to `s3` as `b-20260110-013000` (first backup of this policy)",
            // A new schedule has a new slot.
            "back up `keep` to `s3` as `keep-20260110-020000` (first backup of this policy)",
        ]
    );
}

#[test]
fn an_rpo_the_schedule_cannot_meet_is_reported_once() {
    let rpo = |name, rpo: &'static str| Pol {
        extra: rpo,
        ..policy(name)
    };
    let base = world(
        &[
            rpo("tightened", "  objectives: {rpo: 26h}\n"),
            rpo("already", "  objectives: {rpo: 24h}\n"),
        ],
        &[],
    );
    let head = world(
        &[
            rpo("tightened", "  objectives: {rpo: 24h}\n"),
            rpo("already", "  objectives: {rpo: 24h}\n"),
            rpo("new", "  objectives: {rpo: 12h}\n"),
            Pol {
                tz: "UTC",
                ..rpo("fine", "  objectives: {rpo: 24h}\n")
            },
        ],
        &[],
    );
    let obs = Observed::default();
    let now = "2026-01-10T12:00:00Z";
    let change = compare(&base, &head, &run(&base, &obs, now), &run(&head, &obs, now));
    assert_eq!(
        change.rpo_now_unmeetable,
        [
            RpoChange {
                policy: "new".into(),
                rpo: "12h".parse().unwrap(),
                largest_gap: SignedDuration::from_hours(25),
            },
            RpoChange {
                policy: "tightened".into(),
                rpo: "24h".parse().unwrap(),
                largest_gap: SignedDuration::from_hours(25),
            },
        ]
    );
}

#[test]
fn a_restore_waits_while_its_location_cannot_be_read() {
    let set = world(
        &[Pol {
            clusters: "{names: [src]}",
            ..policy("web")
        }],
        &[restore("r", "{cluster: src, policy: web}", C, false)],
    );
    // Its record could be in the unreadable location: never guess it away.
    let obs = Observed {
        unavailable: vec![("s3".into(), "403 Forbidden".into())],
        ..Default::default()
    };
    let plan = run(&set, &obs, "2026-01-10T12:00:00Z");
    assert!(plan.is_empty());
    assert_eq!(
        plan.restores[0].message,
        "storage location `s3` could not be read (403 Forbidden)"
    );
    assert_eq!(plan.restores[0].state, RestoreFactState::Waiting);
}

#[test]
fn an_unusable_schedule_or_time_zone_is_a_problem_not_a_crash() {
    let set = world(
        &[
            Pol {
                tz: "Mars/Olympus_Mons",
                ..policy("tz")
            },
            Pol {
                schedule: "0 0 30 2 *",
                retention: "{keepLast: 1}",
                ..policy("cron")
            },
        ],
        &[],
    );
    let mut list = january("tz", 3);
    list.extend(january("cron", 3));
    let plan = run(&set, &observed(list), "2026-01-10T12:00:00Z");
    // Retention still works for the bad cron (its time zone is fine).
    assert_eq!(
        pruned(&plan),
        ["cron-20260101-013000", "cron-20260102-013000"]
    );
    assert_eq!(facts(&plan, "tz").problems.len(), 1);
    assert!(facts(&plan, "tz").problems[0].ends_with("no backups are taken and nothing is pruned"));
    assert!(facts(&plan, "cron").problems[0].ends_with("no backups are taken"));
    assert_eq!(facts(&plan, "cron").next_slot, None);
}

// ---------------------------------------------------------------- signatures

const KEY: &str = "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3";
const KEY2: &str = "RWSSw1gnggDACqVmY3+tFg1AhOCZz7+JDDL0SHxDLeP26P40THVxaTJx";

/// `world`, but cluster `prd` signs its backups and its key is trusted.
fn signing_world(policies: &[Pol], extra: &[String]) -> PolicySet {
    let mut docs = vec![
        location("s3", "ReadWrite"),
        format!(
            "{API}kind: Cluster\nmetadata:\n  name: prd\nspec:\n  role: primary\n  signing:\n    keySecretRef: {{name: signing}}\n    publicKey: {KEY}\n"
        ),
    ];
    docs.extend(policies.iter().map(Pol::yaml));
    docs.extend(extra.iter().cloned());
    load_set(&docs)
}

fn signed(mut b: ObservedBackup, signature: SignatureStatus) -> ObservedBackup {
    b.signature = signature;
    if signature != SignatureStatus::Valid {
        b.signature_detail = Some("signed by untrusted key 0123456789ABCDEF".into());
    }
    b
}

#[test]
fn forged_backups_count_for_nothing_where_signing_applies() {
    let set = signing_world(
        &[policy("p")],
        &[restore("r", "{cluster: prd, policy: p}", "prd", true)],
    );
    // Three genuine backups, then six newer forged ones (unsigned,
    // untrusted, bad) that would push them out of keepLast 3.
    let mut list: Vec<ObservedBackup> = january("p", 3)
        .into_iter()
        .map(|b| signed(b, SignatureStatus::Valid))
        .collect();
    for (d, s) in (4..=9).zip(
        [
            SignatureStatus::Unsigned,
            SignatureStatus::Untrusted,
            SignatureStatus::Bad,
        ]
        .into_iter()
        .cycle(),
    ) {
        list.push(signed(ok("p", &format!("2026-01-{d:02}T01:30:00Z")), s));
    }
    let plan = run(&set, &observed(list.clone()), "2026-01-10T12:00:00Z");
    assert!(pruned(&plan).is_empty(), "{plan:#?}");
    // The slot is due: the newest counted backup is of January 3rd.
    assert_eq!(
        backups(&plan),
        [(
            "p-20260110-013000".to_string(),
            BackupReason::Due {
                previous: ts("2026-01-03T01:30:00Z")
            }
        )]
    );
    // `latest` is the newest genuine backup.
    let restores: Vec<&str> = plan
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Restore { backup, .. } => Some(backup.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(restores, ["p-20260103-013000"]);
    // Each forged backup is reported.
    let reported = plan
        .notes
        .iter()
        .filter(|n| n.contains("is ignored"))
        .count();
    assert_eq!(reported, 6, "{:#?}", plan.notes);
    assert!(plan.notes.iter().any(|n| n.contains("0123456789ABCDEF")));

    // A forged backup holding today's slot does not make it look done, and
    // the name it takes is not retried in a loop.
    list.push(signed(
        ok("p", "2026-01-10T01:30:00Z"),
        SignatureStatus::Untrusted,
    ));
    let named = signing_world(
        &[policy("p")],
        &[restore(
            "r",
            "{cluster: prd, policy: p, backup: p-20260110-013000}",
            "prd",
            false,
        )],
    );
    let plan = run(&named, &observed(list.clone()), "2026-01-10T12:00:00Z");
    // A request naming a forged backup is handed to the store, which
    // refuses it and records why.
    let fact = plan
        .restores
        .iter()
        .find(|r| r.request == "r")
        .expect("fact");
    assert!(fact.message.contains("refused"), "{fact:#?}");
    let plan = run(&set, &observed(list), "2026-01-10T12:00:00Z");
    assert!(backups(&plan).is_empty(), "{plan:#?}");
    let problems = &facts(&plan, "p").problems;
    assert!(
        problems.iter().any(|p| p.contains("p-20260110-013000")),
        "{problems:#?}"
    );
}

#[test]
fn unsigned_backups_count_where_no_key_is_trusted() {
    let set = world(&[policy("p")], &[]);
    let mut list = january("p", 9);
    list[8] = signed(list[8].clone(), SignatureStatus::Untrusted);
    list[7] = signed(list[7].clone(), SignatureStatus::Bad);
    let plan = run(&set, &observed(list), "2026-01-10T12:00:00Z");
    // Unsigned and untrusted count (nothing is required); bad never does.
    assert_eq!(
        backups(&plan)[0].1,
        BackupReason::Due {
            previous: ts("2026-01-09T01:30:00Z")
        }
    );
    assert!(!pruned(&plan).contains(&"p-20260108-013000".to_string()));
    assert_eq!(pruned(&plan).len(), 5, "{plan:#?}");
}

#[test]
fn trust_changes_are_security_relevant() {
    let base = signing_world(&[policy("p")], &[]);
    let head = load_set(&[
        format!(
            "{API}kind: StorageLocation\nmetadata:\n  name: s3\nspec:\n  url: s3://b/s3\n  signing:\n    trustedKeys:\n      - {{cluster: prd, key: {KEY}, trustedUntil: '2026-02-01T00:00:00Z'}}\n"
        ),
        format!(
            "{API}kind: Cluster\nmetadata:\n  name: prd\nspec:\n  role: primary\n  signing:\n    keySecretRef: {{name: signing}}\n    publicKey: {KEY2}\n"
        ),
        policy("p").yaml(),
    ]);
    let obs = Observed::default();
    let now = "2026-01-10T12:00:00Z";
    let change = compare(&base, &head, &run(&base, &obs, now), &run(&head, &obs, now));
    let got: Vec<(String, String, TrustChangeType)> = change
        .trust_changes
        .iter()
        .map(|t| (t.source.clone(), t.key.clone(), t.change.clone()))
        .collect();
    assert_eq!(
        got,
        [
            ("Cluster/prd".into(), KEY.into(), TrustChangeType::Revoked),
            ("Cluster/prd".into(), KEY2.into(), TrustChangeType::Trusted),
            (
                "StorageLocation/s3".into(),
                KEY.into(),
                TrustChangeType::Trusted
            ),
        ]
    );
    assert!(!change.is_empty());
    assert!(change.trust_changes[0].to_string().contains("revoked"));
    // Retiring a key is its own kind of change.
    let retired = compare(&head, &head, &run(&head, &obs, now), &run(&head, &obs, now));
    assert!(retired.trust_changes.is_empty());
}

#[test]
fn volumes_are_evaluated_only_with_a_cluster_inventory() {
    use crate::volumes::{ClaimInfo, Inventory};
    let mut nfs = policy("files");
    nfs.extra =
        "  volumes:\n    rules:\n      - match: {storageClasses: [nfs]}\n        method: skip\n";
    let set = world(&[policy("web"), nfs], &[]);
    let plan = run(&set, &observed(vec![]), "2026-01-10T12:00:00Z");
    assert_eq!(facts(&plan, "web").volumes, None);

    let claim = ClaimInfo {
        namespace: "shop".into(),
        name: "files".into(),
        uid: "u1".into(),
        storage_class: Some("nfs".into()),
        phase: "Bound".into(),
        volume_name: Some("pv-1".into()),
        ..Default::default()
    };
    let obs = Observed {
        inventory: Some(Inventory {
            claims: vec![claim],
            ..Default::default()
        }),
        ..Default::default()
    };
    let plan = run(&set, &obs, "2026-01-10T12:00:00Z");
    let web = facts(&plan, "web").volumes.as_ref().unwrap();
    assert_eq!(web.len(), 1);
    assert_eq!(web[0].method, None);
    assert!(
        web[0]
            .warning
            .as_deref()
            .unwrap()
            .starts_with("not protected")
    );
    let files = facts(&plan, "files").volumes.as_ref().unwrap();
    assert_eq!(files[0].method, Some(crate::model::VolumeMethod::Skip));
    // Volume facts never add actions.
    assert_eq!(
        plan.actions,
        run(&set, &observed(vec![]), "2026-01-10T12:00:00Z").actions
    );
}

#[test]
fn an_enabled_velero_schedule_over_a_protected_namespace_is_a_note() {
    use crate::volumes::{Inventory, VeleroSchedule};
    let mut shop = policy("shop");
    shop.extra = "  include: {namespaces: [shop]}\n";
    let set = world(&[shop], &[]);
    let schedule = |name: &str, namespaces: &[&str]| VeleroSchedule {
        namespace: "velero".into(),
        name: name.into(),
        included_namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
    };
    let obs = Observed {
        inventory: Some(Inventory {
            velero_schedules: vec![
                schedule("shop-daily", &["shop"]),
                schedule("everything", &[]),
                schedule("other", &["billing"]),
            ],
            ..Default::default()
        }),
        ..Default::default()
    };
    let plan = run(&set, &obs, "2026-01-10T12:00:00Z");
    let notes: Vec<&String> = plan.notes.iter().filter(|n| n.contains("Velero")).collect();
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(
        notes[0].starts_with("Velero Schedule `velero/shop-daily` is still enabled and backs up what policy `shop` protects")
            && notes[0].contains("velero schedule pause shop-daily -n velero"),
        "{}",
        notes[0]
    );
    assert!(notes[1].contains("`velero/everything`"), "{}", notes[1]);
}

fn repository(location: &str, namespace: &str, created: &str) -> ObservedRepository {
    ObservedRepository {
        location: location.into(),
        namespace: namespace.into(),
        generation: 1,
        created: ts(created),
        last_attempt: None,
        last_success: None,
        last_failed: false,
    }
}

fn maintained(plan: &Plan) -> Vec<(String, String)> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::MaintainRepository {
                location,
                namespace,
                ..
            } => Some((location.clone(), namespace.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_repository_is_pruned_a_week_after_its_last_prune_and_an_hour_after_a_failure() {
    // The policy's slots are taken, so only maintenance can be planned.
    let set = world(&[policy("p")], &[]);
    let mut obs = observed(vec![
        ok("p", "2026-01-10T01:30:00Z"),
        ok("p", "2026-01-11T01:30:00Z"),
    ]);
    let mut shop = repository("s3", "shop", "2026-01-01T00:00:00Z");
    shop.last_attempt = Some(ts("2026-01-05T00:00:00Z"));
    shop.last_success = Some(ts("2026-01-05T00:00:00Z"));
    obs.repositories = vec![
        shop.clone(),
        repository("s3", "new", "2026-01-09T00:00:00Z"),
    ];
    // 5 days after the last prune, 1 after the other's creation: nothing.
    assert!(maintained(&run(&set, &obs, "2026-01-10T12:00:00Z")).is_empty());
    // 7 days after: shop is due; `new` is not.
    let plan = run(&set, &obs, "2026-01-12T00:00:00Z");
    assert_eq!(maintained(&plan), [("s3".to_string(), "shop".to_string())]);
    assert!(
        plan.actions[0].summary().contains("last pruned 2026-01-05"),
        "{}",
        plan.actions[0].summary()
    );
    // A failed attempt is tried again an hour later, not a week later.
    shop.last_attempt = Some(ts("2026-01-12T00:00:00Z"));
    shop.last_failed = true;
    obs.repositories = vec![shop];
    assert!(maintained(&run(&set, &obs, "2026-01-12T00:30:00Z")).is_empty());
    assert_eq!(
        maintained(&run(&set, &obs, "2026-01-12T01:00:00Z")).len(),
        1
    );
}

#[test]
fn maintenance_never_overlaps_a_backup_of_its_location_and_runs_one_per_location() {
    let set = world(&[policy("p")], &[]);
    let mut obs = observed(vec![ok("p", "2026-01-10T01:30:00Z")]);
    obs.repositories = vec![
        repository("s3", "a", "2026-01-01T00:00:00Z"),
        repository("s3", "b", "2026-01-01T00:00:00Z"),
        repository("b2", "a", "2026-01-01T00:00:00Z"),
        repository("ro", "a", "2026-01-01T00:00:00Z"),
    ];
    let now = "2026-01-10T12:00:00Z";
    // One per writable location; the read-only one never.
    assert_eq!(
        maintained(&run(&set, &obs, now)),
        [
            ("b2".to_string(), "a".to_string()),
            ("s3".to_string(), "a".to_string())
        ]
    );
    // A running backup to s3 holds s3's maintenance back.
    obs.running.backups = vec!["p".into()];
    assert_eq!(
        maintained(&run(&set, &obs, now)),
        [("b2".to_string(), "a".to_string())]
    );
    // A backup planned in the same cycle does too.
    obs.running.backups.clear();
    let due = run(&set, &obs, "2026-01-11T12:00:00Z");
    assert_eq!(backups(&due).len(), 1);
    assert_eq!(maintained(&due), [("b2".to_string(), "a".to_string())]);
    // And a running prune of s3 holds s3's backups back, saying why.
    obs.running.maintenance = vec![("s3".into(), "a".into())];
    let waiting = run(&set, &obs, "2026-01-11T12:00:00Z");
    assert!(backups(&waiting).is_empty(), "{waiting:#?}");
    assert!(
        facts(&waiting, "p")
            .problems
            .iter()
            .any(|p| p.contains("a prune of a volume repository in `s3` is running")),
        "{:?}",
        facts(&waiting, "p").problems
    );
}

#[test]
fn suspended_maintenance_plans_nothing() {
    let set = world(
        &[policy("p")],
        &[format!(
            "{API}kind: StorageLocation\nmetadata:\n  name: quiet\nspec:\n  url: s3://b/quiet\n  maintenance: {{suspend: true}}\n"
        )],
    );
    let mut obs = observed(vec![ok("p", "2026-01-10T01:30:00Z")]);
    obs.repositories = vec![repository("quiet", "a", "2026-01-01T00:00:00Z")];
    assert!(maintained(&run(&set, &obs, "2026-01-10T12:00:00Z")).is_empty());
}
