//! Schedules and the time zone they run in (LB103, LB104), and what their
//! largest gap means for the RPO (LB105) and for `maxAge` (LB107).

use std::collections::HashMap;

use super::{GAP_WINDOW, GAP_WINDOW_START, at_value};
use crate::diagnostic::{Code, Diagnostic};
use crate::duration::Duration;
use crate::load::{Loaded, PolicySet};
use crate::model::BackupPolicy;
use crate::schedule::{self, Gap, Schedule, ScheduleError};

/// The schedule of a policy, when both its cron and its time zone are valid.
pub(super) fn schedule_of(policy: &BackupPolicy) -> Option<Schedule> {
    Schedule::parse(&policy.spec.schedule, &policy.spec.timezone).ok()
}

/// LB103: `schedule` is not a 5-field cron expression (or never runs).
/// LB104: `timezone` is not an IANA time zone name.
pub fn invalid_schedules(set: &PolicySet) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for Loaded { doc, source } in &set.policies {
        // The cron is checked in UTC so that a bad zone does not hide it.
        match Schedule::parse(&doc.spec.schedule, "UTC") {
            Err(e @ ScheduleError::FieldCount { .. }) => out.push(at_value(
                Code::InvalidSchedule,
                source,
                "/spec/schedule",
                e.to_string(),
                "drop the seconds (and year) field: backups run at most once a minute, for example `0 2 * * *`",
            )),
            Err(e) => out.push(at_value(
                Code::InvalidSchedule,
                source,
                "/spec/schedule",
                e.to_string(),
                "write minute hour day-of-month month day-of-week, for example `0 2 * * *` (02:00 every day) or `*/30 * * * *`",
            )),
            Ok(_) => {}
        }
        if let Err(ScheduleError::UnknownTimeZone { name, suggestion }) =
            schedule::time_zone(&doc.spec.timezone)
        {
            let help = match suggestion {
                Some(s) => format!("did you mean `{s}`?"),
                None => "use an IANA time zone name such as `UTC`, `Europe/Berlin` or `America/New_York`".to_string(),
            };
            out.push(at_value(
                Code::UnknownTimeZone,
                source,
                "/spec/timezone",
                format!("unknown time zone `{name}`: it is not in the IANA time zone database"),
                help,
            ));
        }
    }
    out
}

/// The largest gap of a schedule over the reference year.
fn largest_gap(schedule: &Schedule) -> Option<Gap> {
    schedule.largest_gap(GAP_WINDOW_START, GAP_WINDOW)
}

/// Each policy with a valid schedule, its schedule and largest gap; the gap
/// of a (cron, time zone) pair is computed once, since large repositories
/// repeat a handful of schedules across many policies.
fn policy_gaps(
    set: &PolicySet,
    wanted: impl Fn(&BackupPolicy) -> bool,
) -> Vec<(&Loaded<BackupPolicy>, Schedule, Gap)> {
    let mut memo: HashMap<(&str, &str), Option<(Schedule, Gap)>> = HashMap::new();
    set.policies
        .iter()
        .filter(|p| wanted(&p.doc))
        .filter_map(|p| {
            let key = (p.doc.spec.schedule.as_str(), p.doc.spec.timezone.as_str());
            let entry = memo.entry(key).or_insert_with(|| {
                let schedule = schedule_of(&p.doc)?;
                let gap = largest_gap(&schedule)?;
                Some((schedule, gap))
            });
            entry.clone().map(|(s, g)| (p, s, g))
        })
        .collect()
}

/// "from 2028-10-29 02:30 CEST to 2028-10-30 02:30 CET".
fn describe(schedule: &Schedule, gap: &Gap) -> String {
    format!(
        "from {} to {}",
        schedule::local(schedule, gap.after),
        schedule::local(schedule, gap.before)
    )
}

/// A span as people compare it with a schedule: whole hours up to three
/// days (`25h`, not `1d1h`), else the usual form.
fn human(secs: u64) -> String {
    if secs.is_multiple_of(3600) && secs < 72 * 3600 {
        format!("{}h", secs / 3600)
    } else {
        Duration::from_secs(secs).to_string()
    }
}

/// LB105: `objectives.rpo` is shorter than the largest gap between two
/// slots of the schedule over a year, DST changes included: at the end of
/// that gap the newest backup is older than the RPO even when every backup
/// succeeds.
pub fn unmeetable_rpo(set: &PolicySet) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (Loaded { doc, source }, schedule, gap) in
        policy_gaps(set, |p| p.spec.objectives.rpo.is_some())
    {
        let Some(rpo) = doc.spec.objectives.rpo else {
            continue;
        };
        if rpo.to_signed() >= gap.duration() {
            continue;
        }
        let needed = human(gap.duration().as_secs().unsigned_abs());
        out.push(at_value(
            Code::UnmeetableRpo,
            source,
            "/spec/objectives/rpo",
            format!(
                "RPO {} cannot be met: schedule `{}` ({}) leaves {needed} without a new backup, {}",
                human(rpo.as_secs()),
                schedule.expr(),
                schedule.time_zone_name(),
                describe(&schedule, &gap)
            ),
            format!(
                "back up more often, or raise `objectives.rpo` to at least {needed}; in a time zone with daylight saving time a daily schedule has a 25h gap once a year, so `timezone: UTC` avoids that"
            ),
        ));
    }
    out
}

/// LB107: `retention.maxAge` is shorter than the largest gap between two
/// slots: before the next backup runs, no backup is younger than `maxAge`, so
/// that rule keeps nothing and only the other rules (or `minKeep`) keep one.
pub fn max_age_below_interval(set: &PolicySet) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    // LB106 and LB116 speak about a zero maxAge.
    let wanted = |p: &BackupPolicy| p.spec.retention.max_age.is_some_and(|m| m.as_secs() > 0);
    for (Loaded { doc, source }, schedule, gap) in policy_gaps(set, wanted) {
        let Some(max_age) = doc.spec.retention.max_age else {
            continue;
        };
        if max_age.to_signed() >= gap.duration() {
            continue;
        }
        let needed = human(gap.duration().as_secs().unsigned_abs());
        out.push(at_value(
            Code::MaxAgeBelowInterval,
            source,
            "/spec/retention/maxAge",
            format!(
                "`maxAge: {}` is shorter than the largest gap between two backups of `{}` ({needed}, {}): at times it keeps no backup, and only `minKeep` ({}) or the keep rules save one",
                human(max_age.as_secs()),
                schedule.expr(),
                describe(&schedule, &gap),
                doc.spec.retention.min_keep
            ),
            format!("raise `maxAge` to more than {needed} (a few intervals, so a failed backup does not empty it), or remove it and use the keep rules"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;
    use crate::lint::Rule;
    use crate::lint::testing::*;

    fn policy(schedule: &str, timezone: &str, extra: &str) -> String {
        format!(
            "API\nkind: BackupPolicy\nmetadata:\n  name: p\nspec:\n  clusters:\n    names: [c]\n  schedule: '{schedule}'\n  timezone: {timezone}\n  retention:\n    keepDaily: 7\n{extra}  storage: s\n"
        )
    }

    #[rstest]
    #[case::fine(invalid_schedules, policy("30 2 * * *", "Europe/Berlin", ""), &[])]
    #[case::seconds(invalid_schedules, policy("0 30 2 * * *", "UTC", ""), &[(Code::InvalidSchedule, 8, 13, "`0 30 2 * * *` has 6 fields; lifeboat takes 5 (minute hour day-of-month month day-of-week), without seconds or years")])]
    #[case::bad_minute(invalid_schedules, policy("61 2 * * *", "UTC", ""), &[(Code::InvalidSchedule, 8, 13, "`61 2 * * *` is not a valid cron expression")])]
    #[case::never(invalid_schedules, policy("0 0 31 2 *", "UTC", ""), &[(Code::InvalidSchedule, 8, 13, "`0 0 31 2 *` never runs: no date matches it")])]
    #[case::zone(invalid_schedules, policy("0 2 * * *", "Europe/Berln", ""), &[(Code::UnknownTimeZone, 9, 13, "unknown time zone `Europe/Berln`: it is not in the IANA time zone database")])]
    #[case::both(invalid_schedules, policy("0 2 * *", "Mars/Base", ""), &[(Code::InvalidSchedule, 8, 13, "`0 2 * *` is not a valid cron expression"), (Code::UnknownTimeZone, 9, 13, "unknown time zone `Mars/Base`")])]
    // Daily in UTC: the gap is always 24h.
    #[case::rpo_met_utc(unmeetable_rpo, policy("0 2 * * *", "UTC", "  objectives:\n    rpo: 24h\n"), &[])]
    // Daily in Berlin: 25h after the autumn change.
    #[case::rpo_dst(unmeetable_rpo, policy("30 2 * * *", "Europe/Berlin", "  objectives:\n    rpo: 24h\n"), &[(Code::UnmeetableRpo, 13, 10, "RPO 24h cannot be met: schedule `30 2 * * *` (Europe/Berlin) leaves 25h without a new backup, from 2028-10-29 02:30 CEST to 2028-10-30 02:30 CET")])]
    #[case::rpo_dst_ny(unmeetable_rpo, policy("0 2 * * *", "America/New_York", "  objectives:\n    rpo: 24h\n"), &[(Code::UnmeetableRpo, 13, 10, "RPO 24h cannot be met: schedule `0 2 * * *` (America/New_York) leaves 25h without a new backup, from 2028-11-04 02:00 EDT to 2028-11-05 02:00 EST")])]
    #[case::rpo_weekdays(unmeetable_rpo, policy("0 * * * 1-5", "UTC", "  objectives:\n    rpo: 2h\n"), &[(Code::UnmeetableRpo, 13, 10, "RPO 2h cannot be met: schedule `0 * * * 1-5` (UTC) leaves 49h without a new backup, from 2027-12-31 23:00 UTC to 2028-01-03 00:00 UTC")])]
    #[case::rpo_generous(unmeetable_rpo, policy("0 0 1 * *", "UTC", "  objectives:\n    rpo: 31d\n"), &[])]
    #[case::max_age_ok(max_age_below_interval, policy("0 */6 * * *", "UTC", "").replace("keepDaily: 7", "maxAge: 7d"), &[])]
    #[case::max_age_short(max_age_below_interval, policy("0 0 * * 0", "UTC", "").replace("keepDaily: 7", "maxAge: 3d"), &[(Code::MaxAgeBelowInterval, 11, 13, "`maxAge: 3d` is shorter than the largest gap between two backups of `0 0 * * 0` (7d, from 2027-12-26 00:00 UTC to 2028-01-02 00:00 UTC): at times it keeps no backup, and only `minKeep` (1) or the keep rules save one")])]
    fn schedule_rules(
        #[case] rule: Rule,
        #[case] doc: String,
        #[case] expect: &[(Code, usize, usize, &str)],
    ) {
        let found = run(rule, &doc);
        assert_eq!(found.len(), expect.len(), "{found:#?}");
        for (f, e) in found.iter().zip(expect) {
            assert_eq!((f.0, f.1, f.2), (e.0, e.1, e.2), "{found:#?}");
            assert!(
                f.3.starts_with(e.3),
                "{}\n  does not start with\n{}",
                f.3,
                e.3
            );
        }
    }
}
