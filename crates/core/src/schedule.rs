//! Backup schedules: a 5-field cron expression evaluated in an IANA time zone.
//!
//! A [`Schedule`] turns `(cron, time zone)` into *slots*: the instants at
//! which a backup is due. Slots are [`Timestamp`]s (UTC instants); the time
//! zone only decides which wall-clock times the expression names. Matching is
//! done by croner on jiff's zoned times; time zone data comes from the IANA
//! database bundled into the binary (never the host's `/usr/share/zoneinfo`),
//! so a policy means the same thing on every machine.
//!
//! ```text
//! ("30 2 * * *", "Europe/Berlin") ──parse──▶ Schedule ──latest_at_or_before(now)──▶ due slot
//!                                                      ├─next_after(t) / slots_between(a, b)
//!                                                      └─max_gap(from, span) ──▶ lint LB105 / LB107
//! ```
//!
//! # Daylight saving time
//!
//! lifeboat follows croner, which implements the OCPS rules:
//!
//! - A *fixed-time* job (one minute of one hour, such as `30 2 * * *`) whose
//!   wall-clock time does not exist that day (spring forward) runs at the first
//!   instant after the gap. In Europe/Berlin on 2026-03-29 the clocks jump from
//!   02:00 CET to 03:00 CEST, so the slot is 03:00 CEST (01:00 UTC).
//! - A fixed-time job whose wall-clock time happens twice (fall back) runs
//!   once, at the earlier instant. In Europe/Berlin on 2026-10-25, 02:30 happens
//!   at 00:30 UTC (CEST) and again at 01:30 UTC (CET); the slot is 00:30 UTC.
//! - An *interval* job (`*/15 * * * *`, `0 * * * *`, `30 2,14 * * *`) simply has
//!   no slots in a gap, and has slots at both instants of a repeated time.
//!
//! So a daily 02:30 Berlin backup has slots 23h30m apart around the spring
//! change (02:30 CET → 03:00 CEST → 02:30 CEST) and one gap of 25 hours after
//! the autumn change (02:30 CEST on the change day → 02:30 CET the next day):
//! an RPO of 24h cannot be met by a daily schedule in a zone with DST. The
//! same holds for `0 2 * * *` in America/New_York (02:00 EDT → 02:00 EST).
//!
//! # Largest gap
//!
//! [`Schedule::max_gap`] answers "how long can the newest backup get?" over a
//! window, usually a year so that monthly and yearly schedules and both DST
//! changes are included. Walking every slot with croner costs about a
//! microsecond per slot, too slow for `* * * * *` (525,600 slots a year), so it
//! works a day at a time instead. In a 5-field expression the minutes and
//! hours do not depend on the day, so every matching day has the same
//! wall-clock times of day; on a day without an offset change those map to
//! instants by one fixed offset. Such a day contributes its first slot, its
//! last slot and the largest gap between two of its times of day, computed
//! once. Only days that contain an offset change, and the days at the two ends
//! of the window, are walked slot by slot with croner. A year is then about
//! 366 day checks plus a few thousand croner steps.

use std::sync::OnceLock;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::civil::{Date, Time};
use jiff::tz::{TimeZone, TimeZoneDatabase};
use jiff::{SignedDuration, Timestamp, Zoned};

/// Why a schedule was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The cron expression has seconds or years.
    #[error(
        "`{expr}` has {fields} fields; lifeboat takes 5 (minute hour day-of-month month day-of-week), without seconds or years"
    )]
    FieldCount { expr: String, fields: usize },
    /// croner rejected the expression.
    #[error("`{expr}` is not a valid cron expression: {reason}")]
    InvalidCron { expr: String, reason: String },
    /// The expression is valid but names no time that ever exists.
    #[error("`{expr}` never runs: no date matches it")]
    NeverRuns { expr: String },
    /// The time zone is not in the IANA database.
    #[error("unknown time zone `{name}`")]
    UnknownTimeZone {
        name: String,
        /// The closest known zone name, for "did you mean".
        suggestion: Option<String>,
    },
}

/// The bundled IANA time zone database. Never the host's copy, so results do
/// not depend on the machine.
fn tzdb() -> &'static TimeZoneDatabase {
    static DB: OnceLock<TimeZoneDatabase> = OnceLock::new();
    DB.get_or_init(TimeZoneDatabase::bundled)
}

/// Looks up an IANA time zone name in the bundled database.
pub fn time_zone(name: &str) -> Result<TimeZone, ScheduleError> {
    tzdb().get(name).map_err(|_| {
        let names: Vec<String> = tzdb().available().map(|n| n.as_str().to_string()).collect();
        let suggestion = crate::diagnostic::did_you_mean(name, names.iter().map(String::as_str))
            .or_else(|| {
                // Case mistakes (`europe/berlin`) score low on Jaro-Winkler.
                names
                    .iter()
                    .map(String::as_str)
                    .find(|n| n.eq_ignore_ascii_case(name))
            })
            .map(str::to_string);
        ScheduleError::UnknownTimeZone {
            name: name.to_string(),
            suggestion,
        }
    })
}

/// A cron expression in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    expr: String,
    cron: Cron,
    tz: TimeZone,
    tz_name: String,
    /// Seconds after midnight of every wall-clock time the expression names,
    /// ascending (never empty).
    times_of_day: Vec<i64>,
    /// The largest gap between two consecutive `times_of_day`, in seconds
    /// (0 when there is one).
    intra_day_gap: i64,
}

/// The largest gap between two consecutive slots: the slot before it and the
/// slot that ends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub after: Timestamp,
    pub before: Timestamp,
}

impl Gap {
    pub fn duration(&self) -> SignedDuration {
        self.before.duration_since(self.after)
    }
}

impl Schedule {
    /// Parses a 5-field cron expression (or a nickname such as `@daily`) and
    /// an IANA time zone name.
    pub fn parse(cron: &str, tz: &str) -> Result<Schedule, ScheduleError> {
        let expr = cron.trim();
        let fields = expr.split_whitespace().count();
        if !expr.starts_with('@') && fields > 5 {
            return Err(ScheduleError::FieldCount {
                expr: expr.to_string(),
                fields,
            });
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build();
        let parsed = parser.parse(expr).map_err(|e| ScheduleError::InvalidCron {
            expr: expr.to_string(),
            reason: out_of_range(expr).unwrap_or_else(|| cron_reason(&e)),
        })?;
        let time_zone = time_zone(tz)?;
        let times_of_day: Vec<i64> = (0..24u32)
            .filter(|h| parsed.pattern.hour_match(*h).unwrap_or(false))
            .flat_map(|h| {
                (0..60u32)
                    .filter(|m| parsed.pattern.minute_match(*m).unwrap_or(false))
                    .map(move |m| i64::from(h * 3600 + m * 60))
            })
            .collect();
        if times_of_day.is_empty() {
            return Err(ScheduleError::NeverRuns {
                expr: expr.to_string(),
            });
        }
        let intra_day_gap = times_of_day
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(0);
        let schedule = Schedule {
            expr: expr.to_string(),
            cron: parsed,
            tz: time_zone,
            tz_name: tz.to_string(),
            times_of_day,
            intra_day_gap,
        };
        // `0 0 30 2 *` parses but never runs. Every valid day-of-month and
        // month combination recurs within 8 years (29 February skips 2100).
        let probe = Timestamp::from_second(946_684_800).unwrap_or(Timestamp::UNIX_EPOCH); // 2000-01-01
        let horizon = add(probe, SignedDuration::from_hours(24 * 366 * 9));
        match schedule.next_after(probe) {
            Some(t) if t <= horizon => Ok(schedule),
            _ => Err(ScheduleError::NeverRuns {
                expr: expr.to_string(),
            }),
        }
    }

    /// The cron expression as written (trimmed).
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The time zone name as written.
    pub fn time_zone_name(&self) -> &str {
        &self.tz_name
    }

    pub fn time_zone(&self) -> &TimeZone {
        &self.tz
    }

    fn zoned(&self, t: Timestamp) -> Zoned {
        t.to_zoned(self.tz.clone())
    }

    /// The slot due at `now`: the latest slot at or before it.
    pub fn latest_at_or_before(&self, now: Timestamp) -> Option<Timestamp> {
        self.cron
            .find_previous_occurrence(&self.zoned(now), true)
            .ok()
            .map(|z| z.timestamp())
    }

    /// The first slot strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        // croner works in whole seconds; a fractional `t` already lies past
        // the slot on its second.
        self.cron
            .find_next_occurrence(&self.zoned(t), false)
            .ok()
            .map(|z| z.timestamp())
    }

    /// The first slot at or after `t`.
    fn first_at_or_after(&self, t: Timestamp) -> Option<Timestamp> {
        self.cron
            .find_next_occurrence(&self.zoned(t), true)
            .ok()
            .map(|z| z.timestamp())
            .filter(|s| *s >= t)
            .or_else(|| self.next_after(t))
    }

    /// Every slot in `[from, to)`, ascending.
    pub fn slots_between(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> impl Iterator<Item = Timestamp> + '_ {
        std::iter::successors(self.first_at_or_after(from), |t| self.next_after(*t))
            .take_while(move |t| *t < to)
    }

    /// The largest time between two consecutive slots, over the slots in
    /// `(from, from + span]` and the last slot at or before `from`.
    ///
    /// When no slot falls in the window, the gap runs to its end (the schedule
    /// leaves at least that long without a backup).
    pub fn max_gap(&self, from: Timestamp, span: SignedDuration) -> SignedDuration {
        let to = add(from, span);
        match self.largest_gap(from, span) {
            Some(g) => g.duration(),
            None => {
                let start = self.latest_at_or_before(from).unwrap_or(from);
                to.duration_since(start)
            }
        }
    }

    /// Like [`Schedule::max_gap`], but says where the gap is; `None` when the
    /// window holds no slot.
    pub fn largest_gap(&self, from: Timestamp, span: SignedDuration) -> Option<Gap> {
        let to = add(from, span);
        let mut walk = GapWalk {
            from,
            to,
            prev: self.latest_at_or_before(from),
            best: None,
        };
        let first_day = self.zoned(from).date();
        let last_day = self.zoned(to).date();
        // Offset changes near the window, ascending.
        let transitions: Vec<Timestamp> = self
            .tz
            .following(add(from, -SignedDuration::from_hours(72)))
            .map(|t| t.timestamp())
            .take_while(|t| *t <= add(to, SignedDuration::from_hours(72)))
            .collect();
        let mut day = first_day;
        while day <= last_day {
            let next_day = day.tomorrow().unwrap_or(day);
            self.walk_day(day, &transitions, &mut walk);
            if next_day == day {
                break;
            }
            day = next_day;
        }
        walk.best
    }

    fn day_start(&self, day: Date) -> Timestamp {
        self.tz
            .to_ambiguous_timestamp(day.to_datetime(Time::midnight()))
            .compatible()
            .unwrap_or(Timestamp::MAX)
    }

    fn walk_day(&self, day: Date, transitions: &[Timestamp], walk: &mut GapWalk) {
        let first = self.times_of_day[0];
        let probe = day.to_datetime(time_of_day(first));
        if !self.cron.is_time_matching(&probe).unwrap_or(false) {
            return;
        }
        let start = self.day_start(day);
        let end = day
            .tomorrow()
            .map(|d| self.day_start(d))
            .unwrap_or(Timestamp::MAX);
        let has_transition = transitions.iter().any(|t| *t >= start && *t <= end);
        if has_transition {
            // croner decides what gaps and folds do to the slots of this day.
            // Start a little early: when midnight itself falls in a gap,
            // croner only sees the gap from a wall-clock time before it.
            for slot in self.slots_between(add(start, -SignedDuration::from_hours(3)), end) {
                walk.visit(slot);
            }
            return;
        }
        let offset = self.tz.to_offset(start);
        let at = |secs: i64| {
            offset
                .to_timestamp(day.to_datetime(time_of_day(secs)))
                .unwrap_or(Timestamp::MAX)
        };
        let last = *self.times_of_day.last().unwrap_or(&first);
        let (first_slot, last_slot) = (at(first), at(last));
        if first_slot > walk.from && last_slot <= walk.to {
            walk.visit(first_slot);
            if self.intra_day_gap > 0 {
                let g = SignedDuration::from_secs(self.intra_day_gap);
                if walk.best.is_none_or(|b| g > b.duration()) {
                    // Any pair with the largest gap will do to name it.
                    let i = self
                        .times_of_day
                        .windows(2)
                        .position(|w| w[1] - w[0] == self.intra_day_gap)
                        .unwrap_or(0);
                    walk.best = Some(Gap {
                        after: at(self.times_of_day[i]),
                        before: at(self.times_of_day[i + 1]),
                    });
                }
            }
            walk.prev = Some(last_slot);
        } else {
            for secs in &self.times_of_day {
                walk.visit(at(*secs));
            }
        }
    }
}

struct GapWalk {
    from: Timestamp,
    to: Timestamp,
    prev: Option<Timestamp>,
    best: Option<Gap>,
}

impl GapWalk {
    fn visit(&mut self, slot: Timestamp) {
        if slot <= self.from || slot > self.to || self.prev.is_some_and(|p| slot <= p) {
            return;
        }
        if let Some(prev) = self.prev {
            let gap = Gap {
                after: prev,
                before: slot,
            };
            if self.best.is_none_or(|b| gap.duration() > b.duration()) {
                self.best = Some(gap);
            }
        }
        self.prev = Some(slot);
    }
}

/// `t + d`, clamped to the representable range.
fn add(t: Timestamp, d: SignedDuration) -> Timestamp {
    t.checked_add(d).unwrap_or(if d.is_negative() {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

fn time_of_day(secs: i64) -> Time {
    Time::midnight()
        .checked_add(SignedDuration::from_secs(secs))
        .unwrap_or(Time::midnight())
}

/// The five fields of a cron expression: name and allowed range. Day of
/// week allows 7 for Sunday, as croner (and Vixie cron) do.
const FIELDS: [(&str, u32, u32); 5] = [
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
];

/// "minute 61 is out of range 0–59" for the first number outside its
/// field's range, so the message names the field, the value and the range
/// rather than croner's "Number out of bounds". Steps (`*/90`) and names
/// (`MON`, `JAN`) are left to croner; `None` when every number is in range.
fn out_of_range(expr: &str) -> Option<String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if fields.len() != FIELDS.len() {
        return None;
    }
    for (field, (name, lo, hi)) in fields.iter().zip(FIELDS) {
        for part in field.split(',') {
            let values = part.split('/').next().unwrap_or_default();
            // `5#2` (the second Friday) and `15W` carry a qualifier after the value.
            let values = values.split('#').next().unwrap_or_default();
            for value in values.split('-') {
                let digits = value.trim_end_matches(['W', 'w', 'L', 'l']);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    continue;
                }
                match digits.parse::<u32>() {
                    Ok(n) if (lo..=hi).contains(&n) => {}
                    _ => return Some(format!("{name} {digits} is out of range {lo}–{hi}")),
                }
            }
        }
    }
    None
}

/// croner's reason, without its type-name prefixes.
fn cron_reason(e: &croner::errors::CronError) -> String {
    use croner::errors::CronError as E;
    match e {
        E::EmptyPattern => "it is empty".to_string(),
        E::InvalidPattern(m) | E::IllegalCharacters(m) | E::ComponentError(m) => {
            m.trim_end_matches('.').to_string()
        }
        other => other.to_string(),
    }
}

/// Formats a slot in the schedule's time zone, for messages:
/// `2026-03-29 03:00 CEST`.
pub fn local(schedule: &Schedule, t: Timestamp) -> String {
    let z = t.to_zoned(schedule.tz.clone());
    format!(
        "{} {}",
        z.strftime("%Y-%m-%d %H:%M"),
        z.time_zone()
            .to_offset_info(t)
            .abbreviation()
            .to_string()
            .trim()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn hours(h: f64) -> SignedDuration {
        SignedDuration::from_secs_f64(h * 3600.0)
    }

    #[rstest]
    #[case("61 2 * * *", "minute 61 is out of range 0–59")]
    #[case("0 24 * * *", "hour 24 is out of range 0–23")]
    #[case("0 2 0 * *", "day of month 0 is out of range 1–31")]
    #[case("0 2 1-32 * *", "day of month 32 is out of range 1–31")]
    #[case("0 2 * 13 *", "month 13 is out of range 1–12")]
    #[case("0 2 * * 1,8", "day of week 8 is out of range 0–7")]
    #[case("5,70/5 2 * * *", "minute 70 is out of range 0–59")]
    fn an_out_of_range_field_is_named_with_its_range(#[case] cron: &str, #[case] reason: &str) {
        match Schedule::parse(cron, "UTC") {
            Err(ScheduleError::InvalidCron { reason: r, .. }) => assert_eq!(r, reason),
            other => panic!("{cron}: {other:?}"),
        }
    }

    #[rstest]
    #[case("0 2 * * 7")]
    #[case("59 23 31 12 0")]
    #[case("0 2 L * *")]
    #[case("0 2 * * 5#2")]
    #[case("0 2 15W * *")]
    #[case("*/20 0-23 1-31 JAN-DEC MON-SUN")]
    fn numbers_at_the_ends_of_their_ranges_are_accepted(#[case] cron: &str) {
        Schedule::parse(cron, "UTC").unwrap();
        assert_eq!(out_of_range(cron), None);
    }

    #[rstest]
    // Spring forward in Berlin: 02:00 CET → 03:00 CEST. 02:30 does not exist;
    // the fixed-time slot moves to the first instant after the gap.
    #[case(
        "30 2 * * *",
        "Europe/Berlin",
        "2026-03-29T12:00:00Z",
        "2026-03-29T01:00:00Z"
    )]
    #[case(
        "30 2 * * *",
        "Europe/Berlin",
        "2026-03-28T12:00:00Z",
        "2026-03-28T01:30:00Z"
    )]
    #[case(
        "30 2 * * *",
        "Europe/Berlin",
        "2026-03-30T12:00:00Z",
        "2026-03-30T00:30:00Z"
    )]
    // Fall back in Berlin: 02:30 happens twice; the slot is the earlier (CEST).
    #[case(
        "30 2 * * *",
        "Europe/Berlin",
        "2026-10-25T12:00:00Z",
        "2026-10-25T00:30:00Z"
    )]
    #[case(
        "30 2 * * *",
        "Europe/Berlin",
        "2026-10-25T01:45:00Z",
        "2026-10-25T00:30:00Z"
    )]
    // New York: 02:00 is in the spring gap and after the autumn fold.
    #[case(
        "0 2 * * *",
        "America/New_York",
        "2026-03-08T12:00:00Z",
        "2026-03-08T07:00:00Z"
    )]
    #[case(
        "0 2 * * *",
        "America/New_York",
        "2026-11-01T12:00:00Z",
        "2026-11-01T07:00:00Z"
    )]
    #[case(
        "30 1 * * *",
        "America/New_York",
        "2026-11-01T12:00:00Z",
        "2026-11-01T05:30:00Z"
    )]
    #[case("0 0 * * *", "UTC", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z")]
    #[case("0 0 * * *", "UTC", "2025-12-31T23:59:59.9Z", "2025-12-31T00:00:00Z")]
    #[case("*/15 * * * *", "UTC", "2026-05-05T10:14:59Z", "2026-05-05T10:00:00Z")]
    #[case("0 3 1 * *", "UTC", "2026-05-05T10:00:00Z", "2026-05-01T03:00:00Z")]
    #[case("@daily", "UTC", "2026-05-05T10:00:00Z", "2026-05-05T00:00:00Z")]
    fn latest_slot(#[case] cron: &str, #[case] tz: &str, #[case] now: &str, #[case] due: &str) {
        let s = Schedule::parse(cron, tz).unwrap();
        assert_eq!(s.latest_at_or_before(ts(now)), Some(ts(due)));
    }

    #[rstest]
    #[case(
        "30 2 * * *",
        "Europe/Berlin",
        "2026-03-28T01:30:00Z",
        "2026-03-29T01:00:00Z"
    )]
    #[case(
        "30 2 * * *",
        "Europe/Berlin",
        "2026-03-29T01:00:00Z",
        "2026-03-30T00:30:00Z"
    )]
    #[case(
        "30 2 * * *",
        "Europe/Berlin",
        "2026-10-25T00:30:00Z",
        "2026-10-26T01:30:00Z"
    )]
    #[case("0 * * * *", "UTC", "2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z")]
    #[case("0 * * * *", "UTC", "2026-01-01T00:00:00.5Z", "2026-01-01T01:00:00Z")]
    fn next_slot(#[case] cron: &str, #[case] tz: &str, #[case] t: &str, #[case] next: &str) {
        let s = Schedule::parse(cron, tz).unwrap();
        assert_eq!(s.next_after(ts(t)), Some(ts(next)));
    }

    #[test]
    fn interval_jobs_skip_the_gap_and_repeat_the_fold() {
        let s = Schedule::parse("30 * * * *", "Europe/Berlin").unwrap();
        let spring: Vec<Timestamp> = s
            .slots_between(ts("2026-03-28T23:00:00Z"), ts("2026-03-29T03:00:00Z"))
            .collect();
        // 00:30 CET, 01:30 CET, (02:30 missing), 03:30 CEST, 04:30 CEST.
        assert_eq!(
            spring,
            [
                "2026-03-28T23:30:00Z",
                "2026-03-29T00:30:00Z",
                "2026-03-29T01:30:00Z",
                "2026-03-29T02:30:00Z"
            ]
            .map(ts)
        );
        let autumn: Vec<Timestamp> = s
            .slots_between(ts("2026-10-24T23:00:00Z"), ts("2026-10-25T02:00:00Z"))
            .collect();
        // 01:30 CEST, 02:30 CEST, 02:30 CET, 03:30 CET.
        assert_eq!(
            autumn,
            [
                "2026-10-24T23:30:00Z",
                "2026-10-25T00:30:00Z",
                "2026-10-25T01:30:00Z"
            ]
            .map(ts)
        );
    }

    #[test]
    fn slots_between_is_half_open() {
        let s = Schedule::parse("0 */6 * * *", "UTC").unwrap();
        let got: Vec<Timestamp> = s
            .slots_between(ts("2026-01-01T00:00:00Z"), ts("2026-01-02T00:00:00Z"))
            .collect();
        assert_eq!(
            got,
            [
                "2026-01-01T00:00:00Z",
                "2026-01-01T06:00:00Z",
                "2026-01-01T12:00:00Z",
                "2026-01-01T18:00:00Z"
            ]
            .map(ts)
        );
    }

    #[rstest]
    #[case("* * * * *", "UTC", 1.0 / 60.0)]
    #[case("* * * * *", "Europe/Berlin", 1.0 / 60.0)]
    #[case("*/5 * * * *", "America/New_York", 5.0 / 60.0)]
    #[case("0 * * * *", "Europe/Berlin", 1.0)]
    #[case("30 2 * * *", "Europe/Berlin", 25.0)]
    #[case("0 2 * * *", "America/New_York", 25.0)]
    #[case("30 1 * * *", "America/New_York", 25.0)]
    #[case("0 2 * * *", "UTC", 24.0)]
    #[case("0 9-17 * * 1-5", "UTC", 64.0)]
    #[case("0 0 1 * *", "UTC", 31.0 * 24.0)]
    #[case("0 0 1 1 *", "UTC", 365.0 * 24.0)]
    #[case("0 0 29 2 *", "UTC", 4.0 * 365.25 * 24.0)]
    fn max_gap_over_a_year(#[case] cron: &str, #[case] tz: &str, #[case] expect_hours: f64) {
        let s = Schedule::parse(cron, tz).unwrap();
        let from = ts("2027-12-31T12:00:00Z");
        let year = SignedDuration::from_hours(366 * 24);
        assert_eq!(
            s.max_gap(from, year),
            hours(expect_hours),
            "{cron} {tz} {:?}",
            s.largest_gap(from, year)
        );
    }

    /// Every slot, one croner step at a time: the reference for `max_gap`.
    fn brute_force_gap(s: &Schedule, from: Timestamp, span: SignedDuration) -> SignedDuration {
        let to = add(from, span);
        let mut prev = s.latest_at_or_before(from);
        let mut best = SignedDuration::ZERO;
        let mut t = from;
        while let Some(slot) = s.next_after(t) {
            if slot > to {
                break;
            }
            if let Some(p) = prev {
                best = best.max(slot.duration_since(p));
            }
            prev = Some(slot);
            t = slot;
        }
        best
    }

    #[rstest]
    #[case("*/7 * * * *", "Europe/Berlin", "2026-03-27T00:00:00Z")]
    #[case("*/7 * * * *", "Europe/Berlin", "2026-10-23T00:00:00Z")]
    #[case("15 0-3 * * *", "Europe/Berlin", "2026-03-26T00:00:00Z")]
    #[case("15 0-3 * * *", "America/New_York", "2026-10-30T00:00:00Z")]
    #[case("0,30 1,2 * * *", "America/New_York", "2026-03-06T00:00:00Z")]
    #[case("0 0 * * 0", "Australia/Lord_Howe", "2026-03-20T00:00:00Z")]
    #[case("45 23 * * *", "Pacific/Apia", "2011-12-20T00:00:00Z")]
    #[case("0 0 * * *", "America/Havana", "2026-03-01T00:00:00Z")]
    fn max_gap_agrees_with_walking_every_slot(
        #[case] cron: &str,
        #[case] tz: &str,
        #[case] from: &str,
    ) {
        let s = Schedule::parse(cron, tz).unwrap();
        let span = SignedDuration::from_hours(24 * 20);
        assert_eq!(
            s.max_gap(ts(from), span),
            brute_force_gap(&s, ts(from), span)
        );
    }

    #[test]
    fn largest_gap_says_where() {
        let s = Schedule::parse("0 2 * * *", "America/New_York").unwrap();
        let g = s
            .largest_gap(
                ts("2026-01-01T00:00:00Z"),
                SignedDuration::from_hours(365 * 24),
            )
            .unwrap();
        assert_eq!(g.after, ts("2026-10-31T06:00:00Z"));
        assert_eq!(g.before, ts("2026-11-01T07:00:00Z"));
        assert_eq!(local(&s, g.before), "2026-11-01 02:00 EST");
    }

    #[rstest]
    #[case("0 0 * * * *", "6 fields; lifeboat takes 5")]
    #[case("0 0 0 * * * 2026", "7 fields; lifeboat takes 5")]
    #[case("61 * * * *", "not a valid cron expression")]
    #[case("* * *", "not a valid cron expression")]
    #[case("", "not a valid cron expression: it is empty")]
    #[case("0 0 30 2 *", "never runs")]
    fn rejects_bad_cron(#[case] cron: &str, #[case] expect: &str) {
        let err = Schedule::parse(cron, "UTC").unwrap_err().to_string();
        assert!(err.contains(expect), "{cron}: {err}");
    }

    #[rstest]
    #[case("Europe/Berln", Some("Europe/Berlin"))]
    #[case("Europe/Berlim", Some("Europe/Berlin"))]
    #[case("Mars/Olympus", None)]
    fn unknown_time_zones(#[case] tz: &str, #[case] suggestion: Option<&str>) {
        match Schedule::parse("0 0 * * *", tz).unwrap_err() {
            ScheduleError::UnknownTimeZone { suggestion: s, .. } => {
                assert_eq!(s.as_deref(), suggestion)
            }
            other => panic!("{other}"),
        }
    }
}
