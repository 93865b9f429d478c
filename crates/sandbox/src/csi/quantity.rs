//! Storage sizes as `resource.Quantity` strings (`1Gi`, `500M`, `1e9`,
//! `1073741824`) and back, the subset a storage request uses.

/// Bytes of a quantity; `None` when it is not a valid non-negative size.
pub fn parse(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    if num.is_empty() {
        return None;
    }
    let mult: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse::<i32>().ok()?),
        _ => return None,
    };
    if let (Ok(n), true) = (num.parse::<u64>(), mult.fract() == 0.0) {
        return n.checked_mul(mult as u64);
    }
    let v = num.parse::<f64>().ok()? * mult;
    // A fractional byte rounds up, as Quantity.Value() does.
    (v.is_finite() && v >= 0.0 && v < u64::MAX as f64).then(|| v.ceil() as u64)
}

/// The canonical form of a byte count in the binary-SI format the CSI
/// sidecars use (`1Gi`, `1536Mi`), decimal suffixes when only those fit.
pub fn format(bytes: u64) -> String {
    if bytes == 0 {
        return "0".into();
    }
    for (suffix, unit) in [
        ("Ei", 1u64 << 60),
        ("Pi", 1 << 50),
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if bytes.is_multiple_of(unit) {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    for (suffix, unit) in [
        ("E", 1_000_000_000_000_000_000u64),
        ("P", 1_000_000_000_000_000),
        ("T", 1_000_000_000_000),
        ("G", 1_000_000_000),
        ("M", 1_000_000),
        ("k", 1_000),
    ] {
        if bytes.is_multiple_of(unit) {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_round_trip() {
        assert_eq!(parse("1Gi"), Some(1 << 30));
        assert_eq!(parse("1.5Gi"), Some(3 << 29));
        assert_eq!(parse("500M"), Some(500_000_000));
        assert_eq!(parse("1e3"), Some(1000));
        assert_eq!(parse("42"), Some(42));
        assert_eq!(parse("x"), None);
        assert_eq!(parse("1Zi"), None);
        assert_eq!(format(1 << 30), "1Gi");
        assert_eq!(format(3 << 29), "1536Mi");
        assert_eq!(format(1_000_000_000), "1G");
        assert_eq!(format(1001), "1001");
    }
}
