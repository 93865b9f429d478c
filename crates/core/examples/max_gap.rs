//! Times `Schedule::max_gap` over a year, against walking every slot.
//!
//! `cargo run --release -p lifeboat-core --example max_gap`

#![allow(clippy::disallowed_methods, reason = "a benchmark reads the clock")]

use std::time::Instant;

use jiff::{SignedDuration, Timestamp};
use lifeboat_core::schedule::Schedule;

fn main() {
    let from: Timestamp = "2028-01-01T00:00:00Z".parse().expect("timestamp");
    let year = SignedDuration::from_hours(366 * 24);
    for (cron, tz) in [
        ("* * * * *", "UTC"),
        ("* * * * *", "Europe/Berlin"),
        ("*/5 * * * *", "America/New_York"),
        ("30 2 * * *", "Europe/Berlin"),
        ("0 0 29 2 *", "UTC"),
    ] {
        let s = Schedule::parse(cron, tz).expect("schedule");
        let start = Instant::now();
        let gap = s.max_gap(from, year);
        let smart = start.elapsed();
        let start = Instant::now();
        let slots = s
            .slots_between(from, from.checked_add(year).expect("in range"))
            .count();
        let walk = start.elapsed();
        println!(
            "{cron:<12} {tz:<17} max_gap {gap:>10} in {smart:>10.2?}; walking all {slots:>6} slots with croner takes {walk:>9.2?}"
        );
    }
}
