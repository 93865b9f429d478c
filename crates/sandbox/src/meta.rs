//! Object metadata helpers: name validation (RFC 1123 label / subdomain,
//! path segment), generated names, timestamps and uids.

use serde_json::Value;

use crate::resources::NameRule;

/// Validates a name; returns the message Kubernetes gives when invalid.
pub fn validate_name(rule: NameRule, name: &str) -> Result<(), String> {
    let label_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    };
    match rule {
        NameRule::Label => {
            if label_ok(name) {
                Ok(())
            } else {
                Err(format!(
                    "Invalid value: \"{name}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
                ))
            }
        }
        NameRule::Subdomain => {
            if name.len() <= 253 && name.split('.').all(label_ok) {
                Ok(())
            } else {
                Err(format!(
                    "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
                ))
            }
        }
        NameRule::PathSegment => {
            if name.is_empty()
                || name == "."
                || name == ".."
                || name.contains('/')
                || name.contains('%')
            {
                Err(format!(
                    "Invalid value: \"{name}\": may not be '.' or '..' and may not contain '/' or '%'"
                ))
            } else {
                Ok(())
            }
        }
    }
}

/// `generateName` + 5 random characters from Kubernetes' alphabet.
pub fn generate_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let prefix = if prefix.len() > 58 {
        &prefix[..58]
    } else {
        prefix
    };
    let suffix: String = (0..5)
        .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}{suffix}")
}

/// Now, as RFC 3339 with second precision (metav1.Time).
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A new uid.
pub fn uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Short age as kubectl prints it (`5s`, `3m`, `2h`, `4d`).
pub fn age(created: &str) -> String {
    let Ok(t) = created.parse::<jiff::Timestamp>() else {
        return "<unknown>".into();
    };
    let secs = (jiff::Timestamp::now().as_second() - t.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// `metadata` as a mutable map, created when missing.
pub fn meta_mut(v: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !v["metadata"].is_object() {
        v["metadata"] = Value::Object(Default::default());
    }
    v["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

/// A string field of `metadata`.
pub fn meta_str<'a>(v: &'a Value, field: &str) -> &'a str {
    v["metadata"][field].as_str().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name(NameRule::Subdomain, "a.b-c").is_ok());
        assert!(validate_name(NameRule::Subdomain, "A").is_err());
        assert!(validate_name(NameRule::Subdomain, "a_b").is_err());
        assert!(validate_name(NameRule::Label, "a.b").is_err());
        assert!(validate_name(NameRule::Label, &"a".repeat(64)).is_err());
        assert!(validate_name(NameRule::PathSegment, "system:controller").is_ok());
        assert!(validate_name(NameRule::PathSegment, "a/b").is_err());
        let g = generate_name("web-");
        assert!(g.starts_with("web-") && g.len() == 9);
    }
}
