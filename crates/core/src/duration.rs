//! Durations written as strings: `90s`, `15m`, `6h`, `30d`, `2w`, `1y`, and
//! sums of them such as `1h30m`. A day is 24 hours, a week 7 days and a year
//! 365 days: these are spans of elapsed time, not calendar arithmetic.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A span of time, held in whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration {
    secs: u64,
}

const UNITS: [(char, u64); 6] = [
    ('y', 365 * 86_400),
    ('w', 7 * 86_400),
    ('d', 86_400),
    ('h', 3_600),
    ('m', 60),
    ('s', 1),
];

/// The pattern a duration string must match (also used in the JSON Schema).
pub const DURATION_PATTERN: &str = r"^([0-9]+[smhdwy])+$";

impl Duration {
    pub const fn from_secs(secs: u64) -> Duration {
        Duration { secs }
    }

    pub const fn as_secs(self) -> u64 {
        self.secs
    }

    /// The span as a jiff `SignedDuration`, for arithmetic on timestamps.
    pub fn to_signed(self) -> jiff::SignedDuration {
        jiff::SignedDuration::from_secs(i64::try_from(self.secs).unwrap_or(i64::MAX))
    }
}

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{input}` is not a duration: {reason}; write a number and a unit (s, m, h, d, w, y), for example `90s`, `6h`, `30d` or `1h30m`"
)]
pub struct ParseDurationError {
    input: String,
    reason: &'static str,
}

impl FromStr for Duration {
    type Err = ParseDurationError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason| ParseDurationError {
            input: input.to_string(),
            reason,
        };
        if input.is_empty() {
            return Err(err("it is empty"));
        }
        let mut secs: u64 = 0;
        let mut digits = String::new();
        for c in input.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let Some(&(_, unit)) = UNITS.iter().find(|(u, _)| *u == c) else {
                return Err(err("it has an unknown unit"));
            };
            if digits.is_empty() {
                return Err(err("a unit has no number before it"));
            }
            let n: u64 = digits.parse().map_err(|_| err("a number is too large"))?;
            secs = n
                .checked_mul(unit)
                .and_then(|s| secs.checked_add(s))
                .ok_or_else(|| err("it is too long"))?;
            digits.clear();
        }
        if !digits.is_empty() {
            return Err(err("the last number has no unit"));
        }
        Ok(Duration { secs })
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.secs == 0 {
            return f.write_str("0s");
        }
        let mut rest = self.secs;
        // Weeks and years read badly in sums ("1y2w3d"); show days and below.
        for (unit, size) in UNITS.iter().skip(2) {
            if rest >= *size {
                write!(f, "{}{}", rest / size, unit)?;
                rest %= size;
            }
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A duration: a number and a unit (s, m, h, d, w, y), or a sum such as `1h30m`.",
            "type": "string",
            "pattern": DURATION_PATTERN,
            "examples": ["90s", "6h", "30d"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("90s", 90)]
    #[case("15m", 900)]
    #[case("6h", 21_600)]
    #[case("30d", 2_592_000)]
    #[case("2w", 1_209_600)]
    #[case("1y", 31_536_000)]
    #[case("1h30m", 5_400)]
    #[case("0s", 0)]
    fn parses(#[case] input: &str, #[case] secs: u64) {
        assert_eq!(input.parse::<Duration>().unwrap().as_secs(), secs);
    }

    #[rstest]
    #[case("")]
    #[case("h")]
    #[case("10")]
    #[case("10x")]
    #[case("-5m")]
    #[case("1.5h")]
    #[case("99999999999999999999s")]
    #[case("9999999999999y")]
    fn rejects(#[case] input: &str) {
        let err = input.parse::<Duration>().unwrap_err().to_string();
        assert!(err.contains("for example"), "{err}");
    }

    #[rstest]
    #[case(5_400, "1h30m")]
    #[case(86_400 * 30, "30d")]
    #[case(0, "0s")]
    fn displays(#[case] secs: u64, #[case] shown: &str) {
        assert_eq!(Duration::from_secs(secs).to_string(), shown);
    }
}
