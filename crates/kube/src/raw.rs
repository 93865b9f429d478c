//! Listed objects kept as the API server's JSON text.
//!
//! The backup stores each object as the API returned it, minus
//! `metadata.managedFields` and with `apiVersion` and `kind` first. Parsing
//! every object into a [`serde_json::Value`] and serialising it again cost
//! more CPU than the rest of the backup path together, so a list page is
//! read once into borrowed [`RawValue`] slices: only the top-level keys and
//! those of `metadata` are split, and every other value is copied through
//! byte for byte. The result is the same JSON document (the same members in
//! the same order) as the parse → edit → serialise path produced, except
//! that numbers and string escapes keep the server's spelling.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// A JSON object key, borrowed from the input unless it had escapes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Key<'a>(pub Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(s.to_string())))
            }
            fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// The members of one JSON object, in document order, values unparsed.
#[derive(Debug)]
pub(crate) struct Members<'a>(pub Vec<(Key<'a>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(entry) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    members.push(entry);
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(V)
    }
}

impl<'a> Members<'a> {
    /// Splits `raw` when it is an object.
    pub fn of(raw: &'a RawValue) -> Option<Members<'a>> {
        serde_json::from_str(raw.get()).ok()
    }

    /// The last member named `key` (as a parser building a map would keep).
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k.0 == key)
            .map(|(_, v)| *v)
    }

    /// A string member; `None` when absent or not a string.
    pub fn str(&self, key: &str) -> Option<String> {
        self.get(key)
            .and_then(|v| serde_json::from_str::<String>(v.get()).ok())
    }
}

/// One listed object: its members and the parts of `metadata` the backup
/// decides on.
#[derive(Debug)]
pub(crate) struct Object<'a> {
    pub members: Members<'a>,
    pub metadata: Option<Members<'a>>,
    pub name: Option<String>,
    pub namespace: Option<String>,
}

impl<'a> Object<'a> {
    /// `None` when `raw` is not a JSON object.
    pub fn parse(raw: &'a RawValue) -> Option<Object<'a>> {
        let members = Members::of(raw)?;
        let metadata = members.get("metadata").and_then(Members::of);
        let (name, namespace) = match &metadata {
            Some(m) => (m.str("name"), m.str("namespace")),
            None => (None, None),
        };
        Some(Object {
            members,
            metadata,
            name,
            namespace,
        })
    }

    /// `metadata.labels` with string values, as `select::labels_of` reads
    /// them from a parsed object.
    pub fn labels(&self) -> BTreeMap<String, String> {
        self.metadata
            .as_ref()
            .and_then(|m| m.get("labels"))
            .and_then(|l| serde_json::from_str::<Map<String, Value>>(l.get()).ok())
            .map(|m| {
                m.into_iter()
                    .filter_map(|(k, v)| match v {
                        Value::String(s) => Some((k, s)),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A top-level member parsed, for the few resources whose content the
    /// backup inspects (PVCs, ClusterRoleBindings).
    pub fn value(&self, key: &str) -> Option<Value> {
        self.members
            .get(key)
            .and_then(|v| serde_json::from_str(v.get()).ok())
    }

    /// The JSON to store: `apiVersion` and `kind` first, then every other
    /// member in the server's order, `metadata` without `managedFields`.
    pub fn stored_json(&self, api_version: &str, kind: &str) -> Vec<u8> {
        let size: usize = self
            .members
            .0
            .iter()
            .map(|(k, v)| k.0.len() + v.get().len() + 4)
            .sum();
        let mut out = Vec::with_capacity(size + api_version.len() + kind.len() + 32);
        out.extend_from_slice(b"{\"apiVersion\":");
        push_string(&mut out, api_version);
        out.extend_from_slice(b",\"kind\":");
        push_string(&mut out, kind);
        for (k, v) in &self.members.0 {
            if k.0 == "apiVersion" || k.0 == "kind" {
                continue;
            }
            out.push(b',');
            push_string(&mut out, &k.0);
            out.push(b':');
            match (&self.metadata, k.0 == "metadata") {
                (Some(meta), true) => {
                    out.push(b'{');
                    let mut first = true;
                    for (mk, mv) in &meta.0 {
                        if mk.0 == "managedFields" {
                            continue;
                        }
                        if !first {
                            out.push(b',');
                        }
                        first = false;
                        push_string(&mut out, &mk.0);
                        out.push(b':');
                        out.extend_from_slice(mv.get().as_bytes());
                    }
                    out.push(b'}');
                }
                _ => out.extend_from_slice(v.get().as_bytes()),
            }
        }
        out.push(b'}');
        out
    }
}

/// Appends `s` as a JSON string.
fn push_string(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing a &str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The previous path: parse, drop managedFields, apiVersion and kind
    /// first, serialise.
    fn via_value(raw: &str, api_version: &str, kind: &str) -> Value {
        let Value::Object(mut obj) = serde_json::from_str::<Value>(raw).unwrap_or(Value::Null)
        else {
            return Value::Null;
        };
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("managedFields");
        }
        let mut typed = Map::new();
        typed.insert("apiVersion".into(), json!(api_version));
        typed.insert("kind".into(), json!(kind));
        for (k, v) in obj {
            if k != "apiVersion" && k != "kind" {
                typed.insert(k, v);
            }
        }
        Value::Object(typed)
    }

    fn stored(raw: &str, api_version: &str, kind: &str) -> String {
        let raw: &RawValue = serde_json::from_str(raw).unwrap_or_else(|e| panic!("{e}"));
        let obj = Object::parse(raw).unwrap_or_else(|| panic!("not an object"));
        String::from_utf8(obj.stored_json(api_version, kind)).unwrap_or_default()
    }

    #[rstest::rstest]
    #[case::list_item_without_type(
        r#"{"metadata":{"name":"a","namespace":"ns","managedFields":[{"manager":"kubectl"}],"labels":{"x":"1"}},"data":{"k":"v"}}"#
    )]
    #[case::typed_and_reordered(
        r#"{"kind":"Old","data":{"n":1.50,"big":12345678901234567890},"apiVersion":"v0","metadata":{"managedFields":[],"name":"a"}}"#
    )]
    #[case::escapes_and_whitespace(
        "{ \"metadata\" : { \"name\" : \"a\\u003cb\", \"annotations\":{\"q\\\"k\":\"\\n\"} } , \"spec\" : [ 1 , 2 ] }"
    )]
    #[case::metadata_not_an_object(r#"{"metadata":null,"spec":{}}"#)]
    #[case::no_metadata(r#"{"spec":{"x":[true,false,null]}}"#)]
    fn stored_json_equals_the_parsed_path(#[case] raw: &str) {
        let got = stored(raw, "apps/v1", "Thing");
        let parsed: Value = serde_json::from_str(&got).unwrap_or_else(|e| panic!("{e}: {got}"));
        assert_eq!(parsed, via_value(raw, "apps/v1", "Thing"), "{got}");
        // Same member order as the old path.
        let old = serde_json::to_string(&via_value(raw, "apps/v1", "Thing")).unwrap_or_default();
        let new = serde_json::to_string(&parsed).unwrap_or_default();
        assert_eq!(new, old);
    }

    #[test]
    fn compact_input_is_copied_byte_for_byte() {
        let got = stored(
            r#"{"metadata":{"name":"a","managedFields":[{"m":1}],"uid":"u"},"data":{"k":"v\u003c"}}"#,
            "v1",
            "ConfigMap",
        );
        assert_eq!(
            got,
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","uid":"u"},"data":{"k":"v\u003c"}}"#
        );
    }

    #[test]
    fn names_and_labels() {
        let raw: &RawValue = serde_json::from_str(
            r#"{"metadata":{"name":"a\u002fb","namespace":"","labels":{"s":"x","n":1}}}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let obj = Object::parse(raw).unwrap_or_else(|| panic!("not an object"));
        assert_eq!(obj.name.as_deref(), Some("a/b"));
        assert_eq!(obj.namespace.as_deref(), Some(""));
        assert_eq!(
            obj.labels(),
            BTreeMap::from([("s".to_string(), "x".to_string())])
        );
        let not_object: &RawValue = serde_json::from_str("[1]").unwrap_or_else(|e| panic!("{e}"));
        assert!(Object::parse(not_object).is_none());
    }
}
