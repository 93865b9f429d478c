//! Planner speed on a large installation: 1,000 policies (four time zones,
//! hourly and daily schedules, every retention rule) planned against a
//! catalog of 100,000 backups (90 per policy, plus 10,000 of ten policies
//! deleted from Git) and 100 restore requests.
//!
//! Run: `cargo bench -p lifeboat-core --bench plan` (release build). Prints
//! the best and median wall time of `plan()` over several runs and the peak
//! RSS of the process (VmHWM), which includes the generated inputs.

#![allow(
    clippy::disallowed_methods,
    reason = "a benchmark reads the clock and /proc"
)]

use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use lifeboat_core::load::{InputFile, load};
use lifeboat_core::plan::{
    Action, BackupPhase, Observed, ObservedBackup, OrphanMark, PlanOptions, SignatureStatus,
    VolumeTotals, backup_name, plan,
};

const POLICIES: usize = 1_000;
const PER_POLICY: usize = 90;
const DELETED: usize = 10;
const PER_DELETED: usize = 1_000;
const LOCATIONS: usize = 10;
const RESTORES: usize = 100;
const RUNS: usize = 7;
const ZONES: [&str; 4] = ["Europe/Berlin", "America/New_York", "UTC", "Asia/Tokyo"];

fn policy_set() -> String {
    let mut docs = Vec::new();
    for l in 0..LOCATIONS {
        docs.push(format!(
            "apiVersion: lifeboat.dev/v1alpha1\nkind: StorageLocation\nmetadata:\n  name: loc-{l}\nspec:\n  url: s3://bucket/loc-{l}\n"
        ));
    }
    docs.push("apiVersion: lifeboat.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: prd\n  labels:\n    env: prod\nspec:\n  role: primary\n".to_string());
    for i in 0..POLICIES {
        let clusters = if i.is_multiple_of(2) {
            "names: [prd]"
        } else {
            "selector:\n      matchLabels:\n        env: prod"
        };
        let (schedule, retention) = if i.is_multiple_of(3) {
            (
                format!("{} 2 * * *", i % 60),
                "keepDaily: 30\n    keepWeekly: 8\n    keepMonthly: 12",
            )
        } else {
            (
                format!("{} * * * *", i % 60),
                "keepLast: 6\n    keepHourly: 24\n    keepDaily: 2\n    maxAge: 1d",
            )
        };
        docs.push(format!(
            "apiVersion: lifeboat.dev/v1alpha1\nkind: BackupPolicy\nmetadata:\n  name: policy-{i}\nspec:\n  clusters:\n    {clusters}\n  schedule: '{schedule}'\n  timezone: {}\n  retention:\n    {retention}\n    minKeep: 3\n  storage: loc-{}\n  objectives:\n    rpo: 26h\n",
            ZONES[i % ZONES.len()],
            i % LOCATIONS
        ));
    }
    for r in 0..RESTORES {
        docs.push(format!(
            "apiVersion: lifeboat.dev/v1alpha1\nkind: RestoreRequest\nmetadata:\n  name: restore-{r}\nspec:\n  source:\n    cluster: prd\n    policy: policy-{}\n    notAfter: 2026-06-01T00:00:00Z\n  target:\n    cluster: prd\n",
            r * 7
        ));
    }
    docs.join("---\n")
}

fn backup(location: String, policy: String, slot: Timestamp, i: usize) -> ObservedBackup {
    ObservedBackup {
        name: backup_name(&policy, slot),
        location,
        cluster: "prd".to_string(),
        policy,
        slot,
        start: slot,
        end: slot + SignedDuration::from_mins(5),
        phase: if i.is_multiple_of(31) {
            BackupPhase::Failed
        } else {
            BackupPhase::Completed
        },
        items: 1_000,
        bytes: 1 << 20,
        signature: SignatureStatus::Unsigned,
        signature_detail: None,
        volumes: VolumeTotals::default(),
        prerequisites: Vec::new(),
    }
}

fn observed(now: Timestamp) -> Observed {
    let mut backups = Vec::with_capacity(POLICIES * PER_POLICY + DELETED * PER_DELETED);
    for i in 0..POLICIES {
        let step = if i.is_multiple_of(3) { 24 } else { 1 };
        for k in 1..=PER_POLICY {
            let slot = now - SignedDuration::from_hours((k * step) as i64);
            backups.push(backup(
                format!("loc-{}", i % LOCATIONS),
                format!("policy-{i}"),
                slot,
                k,
            ));
        }
    }
    for d in 0..DELETED {
        for k in 1..=PER_DELETED {
            let slot = now - SignedDuration::from_hours(k as i64);
            backups.push(backup(
                format!("loc-{}", d % LOCATIONS),
                format!("deleted-{d}"),
                slot,
                k,
            ));
        }
    }
    let orphans = (0..DELETED / 2)
        .map(|d| OrphanMark {
            location: format!("loc-{}", d % LOCATIONS),
            policy: format!("deleted-{d}"),
            since: now - SignedDuration::from_hours(24 * 40),
        })
        .collect();
    Observed {
        backups,
        orphans,
        ..Default::default()
    }
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() {
    let text = policy_set();
    let loaded = load([InputFile {
        path: "policies.yaml",
        bytes: text.as_bytes(),
    }]);
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    let set = loaded.set;
    let now: Timestamp = "2026-07-01T12:30:00Z".parse().expect("timestamp");
    let observed = observed(now);
    let options = PlanOptions::default();

    let mut times: Vec<Duration> = Vec::new();
    let mut last = None;
    for _ in 0..RUNS {
        let start = Instant::now();
        let p = plan(&set, &observed, "prd", now, &options);
        times.push(start.elapsed());
        last = Some(p);
    }
    times.sort();
    let p = last.expect("at least one run");
    let count = |f: fn(&Action) -> bool| p.actions.iter().filter(|a| f(a)).count();
    println!(
        "plan: {} policies, {} backups in the catalog -> {} actions ({} backups, {} prunes, {} restores, {} orphan marks)",
        set.policies.len(),
        observed.backups.len(),
        p.actions.len(),
        count(|a| matches!(a, Action::Backup { .. })),
        count(|a| matches!(a, Action::Prune { .. })),
        count(|a| matches!(a, Action::Restore { .. })),
        count(|a| matches!(a, Action::MarkOrphaned { .. })),
    );
    println!(
        "wall time: best {:.1} ms, median {:.1} ms over {RUNS} runs",
        times[0].as_secs_f64() * 1e3,
        times[RUNS / 2].as_secs_f64() * 1e3
    );
    match peak_rss_mib() {
        Some(mib) => println!("peak RSS (VmHWM, whole process): {mib:.0} MiB"),
        None => println!("peak RSS: unknown (no /proc/self/status)"),
    }
}
