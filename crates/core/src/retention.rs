//! Which backups a policy's retention keeps, decided at a given `now`.
//!
//! The keep rules follow restic's `forget` semantics: backups are walked
//! newest first; `keepLast` keeps the newest N; each `keep<Bucket>` rule
//! keeps the newest backup of each of the last N buckets (hours, days, ISO
//! weeks, months, years, in the policy's time zone) that have one; `maxAge`
//! keeps everything younger. A backup is kept when any rule keeps it. Then
//! `minKeep` tops up with the newest successful backups, so a policy whose
//! backups stopped is never emptied by time passing. Only successful
//! (`Completed` or `PartiallyFailed`) backups count for the rules; failed
//! ones keep a short history of their own.

use std::collections::BTreeSet;
use std::fmt;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::model::Retention;

/// How many failed backups are kept, for diagnosis.
pub const FAILED_HISTORY: usize = 3;

/// A backup as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    /// The schedule slot (or start time) the backup stands for.
    pub time: Timestamp,
    /// `Completed` or `PartiallyFailed`: restorable.
    pub successful: bool,
}

/// Why a backup is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeepReason {
    Last,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
    MaxAge,
    MinKeep,
    FailedHistory,
}

impl fmt::Display for KeepReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeepReason::Last => "keepLast",
            KeepReason::Hourly => "keepHourly",
            KeepReason::Daily => "keepDaily",
            KeepReason::Weekly => "keepWeekly",
            KeepReason::Monthly => "keepMonthly",
            KeepReason::Yearly => "keepYearly",
            KeepReason::MaxAge => "maxAge",
            KeepReason::MinKeep => "minKeep",
            KeepReason::FailedHistory => "failed-backup history",
        })
    }
}

/// The verdict on one backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub name: String,
    pub time: Timestamp,
    /// Empty when the backup is to be pruned.
    pub reasons: BTreeSet<KeepReason>,
}

impl Verdict {
    pub fn keep(&self) -> bool {
        !self.reasons.is_empty()
    }
}

type BucketKey = (i16, i16, i8, i8);

fn bucket(reason: KeepReason, t: Timestamp, tz: &TimeZone) -> BucketKey {
    let z = t.to_zoned(tz.clone());
    let d = z.datetime();
    match reason {
        KeepReason::Hourly => (d.year(), d.day_of_year(), d.hour(), 0),
        KeepReason::Daily => (d.year(), d.day_of_year(), 0, 0),
        KeepReason::Weekly => {
            let w = d.date().iso_week_date();
            (w.year(), w.week() as i16, 0, 0)
        }
        KeepReason::Monthly => (d.year(), d.month() as i16, 0, 0),
        _ => (d.year(), 0, 0, 0),
    }
}

/// Decides, for every backup of one policy, whether `retention` keeps it at
/// `now`. The result is ordered newest first and does not depend on the
/// order of `backups`.
pub fn apply(
    retention: &Retention,
    tz: &TimeZone,
    backups: &[Candidate],
    now: Timestamp,
) -> Vec<Verdict> {
    let mut sorted: Vec<&Candidate> = backups.iter().collect();
    sorted.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.name.cmp(&a.name)));
    let mut verdicts: Vec<Verdict> = sorted
        .iter()
        .map(|c| Verdict {
            name: c.name.clone(),
            time: c.time,
            reasons: BTreeSet::new(),
        })
        .collect();
    let successful: Vec<usize> = (0..sorted.len())
        .filter(|&i| sorted[i].successful)
        .collect();

    if let Some(n) = retention.keep_last {
        for &i in successful.iter().take(n as usize) {
            verdicts[i].reasons.insert(KeepReason::Last);
        }
    }
    let buckets = [
        (KeepReason::Hourly, retention.keep_hourly),
        (KeepReason::Daily, retention.keep_daily),
        (KeepReason::Weekly, retention.keep_weekly),
        (KeepReason::Monthly, retention.keep_monthly),
        (KeepReason::Yearly, retention.keep_yearly),
    ];
    for (reason, count) in buckets {
        let Some(count) = count else { continue };
        let mut seen: Option<BucketKey> = None;
        let mut kept = 0;
        for &i in &successful {
            if kept >= count {
                break;
            }
            let key = bucket(reason, sorted[i].time, tz);
            if seen != Some(key) {
                seen = Some(key);
                kept += 1;
                verdicts[i].reasons.insert(reason);
            }
        }
    }
    if let Some(max_age) = retention.max_age {
        let cutoff = now
            .checked_sub(max_age.to_signed())
            .unwrap_or(Timestamp::MIN);
        for &i in &successful {
            if sorted[i].time > cutoff {
                verdicts[i].reasons.insert(KeepReason::MaxAge);
            }
        }
    }
    let kept_successful = successful.iter().filter(|&&i| verdicts[i].keep()).count();
    let mut missing = (retention.min_keep as usize).saturating_sub(kept_successful);
    for &i in &successful {
        if missing == 0 {
            break;
        }
        if !verdicts[i].keep() {
            verdicts[i].reasons.insert(KeepReason::MinKeep);
            missing -= 1;
        }
    }
    for i in (0..sorted.len())
        .filter(|&i| !sorted[i].successful)
        .take(FAILED_HISTORY)
    {
        verdicts[i].reasons.insert(KeepReason::FailedHistory);
    }
    verdicts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duration::Duration;
    use rstest::rstest;

    fn retention(f: impl FnOnce(&mut Retention)) -> Retention {
        let mut r = Retention {
            keep_last: None,
            keep_hourly: None,
            keep_daily: None,
            keep_weekly: None,
            keep_monthly: None,
            keep_yearly: None,
            max_age: None,
            min_keep: 0,
        };
        f(&mut r);
        r
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// Backups every `step` hours from `start`, `n` of them, all successful.
    fn series(start: &str, step_hours: i64, n: usize) -> Vec<Candidate> {
        (0..n)
            .map(|i| {
                let t = ts(start) + jiff::SignedDuration::from_hours(step_hours * i as i64);
                Candidate {
                    name: format!("b-{}", t.strftime("%Y%m%d-%H%M%S")),
                    time: t,
                    successful: true,
                }
            })
            .collect()
    }

    fn kept(v: &[Verdict]) -> Vec<String> {
        let mut k: Vec<String> = v
            .iter()
            .filter(|v| v.keep())
            .map(|v| v.time.strftime("%m-%d %H:%M").to_string())
            .collect();
        k.reverse();
        k
    }

    #[rstest]
    #[case::keep_last(retention(|r| r.keep_last = Some(3)), vec!["01-05 00:00", "01-06 00:00", "01-07 00:00"])]
    #[case::keep_daily(retention(|r| r.keep_daily = Some(2)), vec!["01-06 00:00", "01-07 00:00"])]
    #[case::keep_weekly(retention(|r| r.keep_weekly = Some(2)), vec!["01-04 00:00", "01-07 00:00"])]
    #[case::max_age(retention(|r| r.max_age = Some(Duration::from_secs(3 * 86_400))), vec!["01-05 00:00", "01-06 00:00", "01-07 00:00"])]
    #[case::min_keep_tops_up(retention(|r| { r.max_age = Some(Duration::from_secs(3600)); r.min_keep = 2 }), vec!["01-06 00:00", "01-07 00:00"])]
    #[case::union(retention(|r| { r.keep_last = Some(1); r.keep_weekly = Some(2) }), vec!["01-04 00:00", "01-07 00:00"])]
    fn rules(#[case] r: Retention, #[case] expect: Vec<&str>) {
        // Daily backups 2026-01-01 (Thursday) .. 2026-01-07 at midnight UTC.
        let backups = series("2026-01-01T00:00:00Z", 24, 7);
        let v = apply(&r, &TimeZone::UTC, &backups, ts("2026-01-07T12:00:00Z"));
        assert_eq!(kept(&v), expect);
    }

    #[test]
    fn daily_buckets_follow_the_time_zone_across_dst() {
        // Backups every 6 hours around the end of DST in Berlin (2026-10-25).
        let backups = series("2026-10-24T00:00:00Z", 6, 12);
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        let v = apply(
            &retention(|r| r.keep_daily = Some(3)),
            &tz,
            &backups,
            ts("2026-10-27T00:00:00Z"),
        );
        // Newest per Berlin day: 10-26 20:00 CET is 10-26 19:00Z ... in UTC hours:
        assert_eq!(kept(&v), vec!["10-24 18:00", "10-25 18:00", "10-26 18:00"]);
        // The same backups bucketed in UTC keep the same instants here, but a
        // backup at 23:00Z belongs to the next Berlin day.
        let late = vec![
            Candidate {
                name: "a".into(),
                time: ts("2026-10-26T22:30:00Z"),
                successful: true,
            },
            Candidate {
                name: "b".into(),
                time: ts("2026-10-26T23:30:00Z"),
                successful: true,
            },
        ];
        let berlin = apply(
            &retention(|r| r.keep_daily = Some(2)),
            &tz,
            &late,
            ts("2026-10-27T00:00:00Z"),
        );
        let utc = apply(
            &retention(|r| r.keep_daily = Some(2)),
            &TimeZone::UTC,
            &late,
            ts("2026-10-27T00:00:00Z"),
        );
        assert_eq!(
            berlin.iter().filter(|v| v.keep()).count(),
            2,
            "two Berlin days"
        );
        assert_eq!(utc.iter().filter(|v| v.keep()).count(), 1, "one UTC day");
    }

    #[test]
    fn failed_backups_keep_a_short_history_and_do_not_count() {
        let mut backups = series("2026-01-01T00:00:00Z", 1, 10);
        for b in backups.iter_mut().skip(2) {
            b.successful = false;
        }
        let v = apply(
            &retention(|r| r.keep_last = Some(2)),
            &TimeZone::UTC,
            &backups,
            ts("2026-01-02T00:00:00Z"),
        );
        let reasons: Vec<Vec<KeepReason>> = v
            .iter()
            .map(|v| v.reasons.iter().copied().collect())
            .collect();
        // Newest first: 8 failed (3 kept as history), then the 2 successful.
        assert_eq!(reasons[..3], vec![vec![KeepReason::FailedHistory]; 3]);
        assert!(reasons[3..8].iter().all(Vec::is_empty));
        assert_eq!(
            reasons[8..],
            [vec![KeepReason::Last], vec![KeepReason::Last]]
        );
    }

    #[test]
    fn order_of_input_does_not_matter() {
        let backups = series("2026-03-01T00:00:00Z", 5, 200);
        let mut reversed = backups.clone();
        reversed.reverse();
        let r = retention(|r| {
            r.keep_hourly = Some(10);
            r.keep_daily = Some(7);
            r.keep_monthly = Some(2)
        });
        let now = ts("2026-04-15T00:00:00Z");
        assert_eq!(
            apply(&r, &TimeZone::UTC, &backups, now),
            apply(&r, &TimeZone::UTC, &reversed, now)
        );
    }
}
