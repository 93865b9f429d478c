//! Kubernetes resource quantities (`10Gi`, `500M`, `1.5Ti`, `1e9`) as byte
//! counts: what a claim's capacity is compared in.
//!
//! Policies write quantities as [`Quantity`] (a number and an optional
//! binary or decimal suffix); [`parse_bytes`] also reads the forms the API
//! server returns (exponents, `m`), for the cluster inventory.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The pattern a quantity in a policy must match (also in the JSON Schema).
pub const QUANTITY_PATTERN: &str = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$";

/// A storage quantity written in a policy, for example `100Gi`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Quantity {
    text: String,
    bytes: u128,
}

impl Quantity {
    /// The quantity in bytes (a fraction of a byte rounds up).
    pub fn bytes(&self) -> u128 {
        self.bytes
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl std::str::FromStr for Quantity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (number, suffix) = split(s);
        let policy_form = !number.starts_with(['+', '.'])
            && !number.ends_with('.')
            && POLICY_SUFFIXES.contains(&suffix);
        match parse_bytes(s) {
            Some(bytes) if policy_form => Ok(Quantity {
                text: s.to_string(),
                bytes,
            }),
            _ => Err(format!(
                "`{s}` is not a storage quantity: write a number and an optional suffix (Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P, E), for example `10Gi`"
            )),
        }
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Quantity {
    fn schema_name() -> Cow<'static, str> {
        "Quantity".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": QUANTITY_PATTERN,
            "description": "A Kubernetes storage quantity: a number and an optional suffix (Ki, Mi, Gi, Ti, Pi, Ei binary; k, M, G, T, P, E decimal), for example `10Gi`."
        })
    }
}

/// The suffixes a policy may write.
const POLICY_SUFFIXES: [&str; 13] = [
    "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "k", "M", "G", "T", "P", "E",
];

/// Splits `1.5Gi` into (`1.5`, `Gi`).
fn split(s: &str) -> (&str, &str) {
    let at = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(s.len());
    s.split_at(at)
}

/// A Kubernetes quantity as whole bytes, rounded up; `None` for anything
/// that is not a non-negative quantity (or does not fit in 128 bits).
///
/// Accepts `123`, `1.5`, binary suffixes `Ki`…`Ei`, decimal suffixes
/// `k`, `M`, `G`, `T`, `P`, `E`, milli `m`, and exponents `1e3`, `2E6`.
pub fn parse_bytes(s: &str) -> Option<u128> {
    let (number, suffix) = split(s.trim());
    let number = number.strip_prefix('+').unwrap_or(number);
    let (int, frac) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 30
    {
        return None;
    }
    // value = digits / 10^frac.len() * 2^bin * 10^dec
    let (bin, dec): (u32, i32) = match suffix {
        "" => (0, 0),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        exp if exp.starts_with(['e', 'E']) => {
            let e: i32 = exp[1..].parse().ok()?;
            if !(-40..=38).contains(&e) {
                return None;
            }
            (0, e)
        }
        _ => return None,
    };
    let digits: u128 = format!("{int}{frac}")
        .trim_start_matches('0')
        .parse()
        .or_else(|e: std::num::ParseIntError| match e.kind() {
            std::num::IntErrorKind::Empty => Ok(0),
            _ => Err(()),
        })
        .ok()?;
    let scaled = digits.checked_mul(1u128.checked_shl(bin)?)?;
    let exp = dec - i32::try_from(frac.len()).ok()?;
    if exp >= 0 {
        scaled.checked_mul(10u128.checked_pow(exp.unsigned_abs())?)
    } else {
        let div = 10u128.checked_pow(exp.unsigned_abs())?;
        Some(scaled.div_ceil(div))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("0", Some(0))]
    #[case("1", Some(1))]
    #[case("1Ki", Some(1024))]
    #[case("10Gi", Some(10 << 30))]
    #[case("1.5Gi", Some(3 << 29))]
    #[case("500M", Some(500_000_000))]
    #[case("1k", Some(1000))]
    #[case("1e3", Some(1000))]
    #[case("2E6", Some(2_000_000))]
    #[case("1500m", Some(2))]
    #[case("0.1", Some(1))]
    #[case("8Ei", Some(8 << 60))]
    #[case("", None)]
    #[case("Gi", None)]
    #[case("-1Gi", None)]
    #[case("10GB", None)]
    #[case("1.2.3", None)]
    fn parses(#[case] s: &str, #[case] expect: Option<u128>) {
        assert_eq!(parse_bytes(s), expect);
    }

    #[test]
    fn policy_quantities_refuse_api_only_forms() {
        assert_eq!("10Gi".parse::<Quantity>().unwrap().bytes(), 10 << 30);
        assert_eq!("1E".parse::<Quantity>().unwrap().bytes(), 10u128.pow(18));
        assert!("1e3".parse::<Quantity>().is_err());
        assert!("500m".parse::<Quantity>().is_err());
        assert_eq!("8Ei".parse::<Quantity>().unwrap().bytes(), 8 << 60);
        assert!("ten".parse::<Quantity>().unwrap_err().contains("`10Gi`"));
    }
}
