//! JSON Schemas generated from the policy types, and validation of loaded
//! documents against them with errors phrased for people.
//!
//! The committed files in `schema/` are `kind_schema` for each kind plus
//! `document_schema` for any lifeboat document; a test fails when they drift.

use std::sync::OnceLock;

use jsonschema::error::ValidationErrorKind;
use schemars::generate::SchemaSettings;
use schemars::transform::{Transform, transform_subschemas};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{Value, json};

use crate::diagnostic::did_you_mean;
use crate::duration::DURATION_PATTERN;
use crate::model::{BackupPolicy, Cluster, Kind, RestoreRequest, StorageLocation};

/// Where the published schemas live; `$id`s are built from it.
pub const SCHEMA_BASE: &str = "https://lifeboat.dev/schema/v1alpha1";

fn settings() -> SchemaSettings {
    SchemaSettings::draft2020_12().with_transform(NotNullable)
}

/// Makes `Option<T>` fields simply optional: `keepDaily: null` is an error
/// rather than a silent "unset", and errors inside optional objects are
/// reported precisely instead of as "matches none of anyOf".
#[derive(Debug, Clone)]
struct NotNullable;

impl Transform for NotNullable {
    fn transform(&mut self, schema: &mut Schema) {
        if let Some(Value::Array(types)) = schema.get_mut("type") {
            types.retain(|t| t != "null");
            if types.len() == 1 {
                let only = types[0].clone();
                schema.insert("type".into(), only);
            }
        }
        let non_null = schema
            .get("anyOf")
            .and_then(Value::as_array)
            .and_then(|any| {
                let rest: Vec<&Value> = any
                    .iter()
                    .filter(|b| b.get("type") != Some(&json!("null")))
                    .collect();
                (rest.len() == 1 && any.len() == 2).then(|| rest[0].clone())
            });
        if let Some(Value::Object(inner)) = non_null {
            schema.remove("anyOf");
            for (k, v) in inner {
                schema.insert(k, v);
            }
        }
        if schema.get("default") == Some(&Value::Null) {
            schema.remove("default");
        }
        transform_subschemas(self, schema);
    }
}

/// The file name of a kind's schema in `schema/`.
pub fn file_name(kind: Kind) -> String {
    format!("{}.json", kind.as_str().to_ascii_lowercase())
}

/// The file name of the schema for any lifeboat document.
pub const DOCUMENT_FILE: &str = "lifeboat.json";

fn generate<T: JsonSchema>(kind: Kind) -> Schema {
    let mut schema = settings().into_generator().into_root_schema_for::<T>();
    schema.insert(
        "$id".into(),
        json!(format!("{SCHEMA_BASE}/{}", file_name(kind))),
    );
    schema
}

/// The JSON Schema of one kind.
pub fn kind_schema(kind: Kind) -> Schema {
    match kind {
        Kind::StorageLocation => generate::<StorageLocation>(kind),
        Kind::Cluster => generate::<Cluster>(kind),
        Kind::BackupPolicy => generate::<BackupPolicy>(kind),
        Kind::RestoreRequest => generate::<RestoreRequest>(kind),
    }
}

/// The JSON Schema of any lifeboat document: dispatches on `kind`.
pub fn document_schema() -> Value {
    let mut generator: SchemaGenerator = settings().into_generator();
    let mut branches = Vec::new();
    for kind in Kind::ALL {
        let reference = match kind {
            Kind::StorageLocation => generator.subschema_for::<StorageLocation>(),
            Kind::Cluster => generator.subschema_for::<Cluster>(),
            Kind::BackupPolicy => generator.subschema_for::<BackupPolicy>(),
            Kind::RestoreRequest => generator.subschema_for::<RestoreRequest>(),
        };
        branches.push(json!({
            "if": { "properties": { "kind": { "const": kind.as_str() } }, "required": ["kind"] },
            "then": reference,
        }));
    }
    let defs: serde_json::Map<String, Value> = generator.take_definitions(true);
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": format!("{SCHEMA_BASE}/{DOCUMENT_FILE}"),
        "title": "lifeboat document",
        "description": "Any lifeboat.dev/v1alpha1 document: StorageLocation, Cluster, BackupPolicy or RestoreRequest.",
        "type": "object",
        "required": ["apiVersion", "kind"],
        "properties": {
            "apiVersion": { "const": crate::model::API_VERSION },
            "kind": { "enum": Kind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>() },
        },
        "allOf": branches,
        "$defs": defs,
    })
}

/// A schema violation, phrased for people, at a JSON pointer of the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaError {
    /// Where the offending value is.
    pub pointer: String,
    /// Whether the pointer names a key that should not be there or is missing
    /// (point at the key) rather than a bad value (point at the value).
    pub at_key: bool,
    pub message: String,
    pub help: Option<String>,
}

struct Compiled {
    schema: Value,
    validator: jsonschema::Validator,
}

fn compiled(kind: Kind) -> &'static Compiled {
    static CELLS: [OnceLock<Compiled>; 4] = [const { OnceLock::new() }; 4];
    let index = Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
    CELLS[index].get_or_init(|| {
        let schema = kind_schema(kind).to_value();
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap_or_else(|e| panic!("the generated {kind} schema does not compile: {e}"));
        Compiled { schema, validator }
    })
}

/// Validates a document of `kind`, returning every violation.
pub fn validate(kind: Kind, value: &Value) -> Vec<SchemaError> {
    let c = compiled(kind);
    if c.validator.is_valid(value) {
        return Vec::new();
    }
    let mut out: Vec<SchemaError> = c
        .validator
        .iter_errors(value)
        .flat_map(|e| describe_error(&c.schema, value, e.instance_path().as_str(), e.kind()))
        .collect();
    out.sort_by(|a, b| a.pointer.cmp(&b.pointer).then(a.message.cmp(&b.message)));
    out.dedup();
    out
}

/// The name shown for the field at `pointer`: its last segment (`keepDaily`),
/// or `parent[3]` for list items.
pub fn field_name(pointer: &str) -> String {
    let mut segments = pointer
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"));
    let mut name = String::from("document");
    let mut parent: Option<String> = None;
    for segment in segments.by_ref() {
        if segment.parse::<usize>().is_ok() {
            name = format!("{}[{segment}]", parent.clone().unwrap_or_default());
        } else {
            name = segment.clone();
        }
        parent = Some(name.clone());
    }
    name
}

fn describe_error(
    schema: &Value,
    doc: &Value,
    pointer: &str,
    kind: &ValidationErrorKind,
) -> Vec<SchemaError> {
    let field = field_name(pointer);
    let instance = doc.pointer(pointer).unwrap_or(&Value::Null);
    let expected = subschema_at(schema, pointer).map(|s| expectation(schema, s));
    let value_error = |message: String| SchemaError {
        pointer: pointer.to_string(),
        at_key: false,
        message,
        help: None,
    };
    match kind {
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
            let allowed = subschema_at(schema, pointer)
                .map(|s| property_names(schema, s))
                .unwrap_or_default();
            unexpected
                .iter()
                .map(|key| {
                    let suggestion = did_you_mean(key, allowed.iter().map(String::as_str));
                    let help = match suggestion {
                        Some(s) => format!("did you mean `{s}`?"),
                        None if allowed.is_empty() => "remove it".to_string(),
                        None => format!("remove it; `{field}` takes: {}", allowed.join(", ")),
                    };
                    SchemaError {
                        pointer: format!("{pointer}/{}", crate::yaml::escape_pointer(key)),
                        at_key: true,
                        message: format!("unknown field `{key}` in `{field}`"),
                        help: Some(help),
                    }
                })
                .collect()
        }
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            vec![SchemaError {
                pointer: pointer.to_string(),
                at_key: true,
                message: format!("`{field}` is missing the required field `{name}`"),
                help: Some(format!("add `{name}`")),
            }]
        }
        ValidationErrorKind::Type { .. }
        | ValidationErrorKind::Enum { .. }
        | ValidationErrorKind::Constant { .. }
        | ValidationErrorKind::Pattern { .. }
        | ValidationErrorKind::Format { .. }
        | ValidationErrorKind::Minimum { .. }
        | ValidationErrorKind::Maximum { .. }
        | ValidationErrorKind::ExclusiveMinimum { .. }
        | ValidationErrorKind::MinLength { .. }
        | ValidationErrorKind::MaxLength { .. } => {
            let expected = expected.unwrap_or_else(|| "something else".to_string());
            let mut e = value_error(format!(
                "`{field}` must be {expected}, found {}",
                found(instance)
            ));
            if let (ValidationErrorKind::Enum { options }, Some(s)) = (kind, instance.as_str()) {
                let options: Vec<&str> = options
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                if let Some(m) = did_you_mean(s, options) {
                    e.help = Some(format!("did you mean `{m}`?"));
                }
            }
            vec![e]
        }
        ValidationErrorKind::MinItems { limit } => vec![value_error(format!(
            "`{field}` must have at least {limit} item{}",
            if *limit == 1 { "" } else { "s" }
        ))],
        ValidationErrorKind::MinProperties { limit } => {
            let names = subschema_at(schema, pointer)
                .map(|s| property_names(schema, s))
                .unwrap_or_default();
            vec![value_error(format!(
                "`{field}` must set at least {limit} of: {}",
                names.join(", ")
            ))]
        }
        other => vec![value_error(format!(
            "`{field}` is invalid: {}",
            kind_text(other)
        ))],
    }
}

fn kind_text(kind: &ValidationErrorKind) -> String {
    match kind {
        ValidationErrorKind::MaxItems { limit } => format!("it may have at most {limit} items"),
        ValidationErrorKind::UniqueItems => "its items must be unique".into(),
        ValidationErrorKind::AnyOf { .. } | ValidationErrorKind::OneOfNotValid { .. } => {
            "it matches none of the allowed forms".into()
        }
        _ => "it does not match the schema".into(),
    }
}

/// A short rendering of a found value: `"seven"`, `7`, `a mapping`.
fn found(v: &Value) -> String {
    match v {
        Value::Null => "nothing (null)".into(),
        Value::Bool(b) => format!("`{b}`"),
        Value::Number(n) => format!("`{n}`"),
        Value::String(s) => {
            let short: String = s.chars().take(60).collect();
            let ellipsis = if short.len() < s.len() { "…" } else { "" };
            format!("`{:?}`", format!("{short}{ellipsis}"))
        }
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

fn resolve<'a>(root: &'a Value, mut s: &'a Value) -> &'a Value {
    for _ in 0..16 {
        match s.get("$ref").and_then(Value::as_str) {
            Some(r) => match r.strip_prefix('#').and_then(|p| root.pointer(p)) {
                Some(target) => s = target,
                None => return s,
            },
            None => {
                // `allOf: [{$ref}]` wrappers that schemars emits for documented refs.
                match s.get("allOf").and_then(Value::as_array) {
                    Some(all) if all.len() == 1 => s = &all[0],
                    _ => return s,
                }
            }
        }
    }
    s
}

/// The subschema describing the value at `pointer`.
pub fn subschema_at<'a>(root: &'a Value, pointer: &str) -> Option<&'a Value> {
    let mut s = resolve(root, root);
    for segment in pointer.split('/').skip(1) {
        let key = segment.replace("~1", "/").replace("~0", "~");
        let next = s
            .get("properties")
            .and_then(|p| p.get(&key))
            .or_else(|| {
                if key.parse::<usize>().is_ok() {
                    s.get("items")
                } else {
                    None
                }
            })
            .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))?;
        s = resolve(root, next);
    }
    Some(s)
}

fn property_names(root: &Value, s: &Value) -> Vec<String> {
    resolve(root, s)
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

/// What a schema wants, in words: "an integer ≥ 0", "one of `skip`, `update`".
fn expectation(root: &Value, s: &Value) -> String {
    let s = resolve(root, s);
    if let Some(options) = s.get("enum").and_then(Value::as_array) {
        let list: Vec<String> = options
            .iter()
            .map(|o| format!("`{}`", o.as_str().unwrap_or(&o.to_string())))
            .collect();
        return if list.len() == 1 {
            list[0].clone()
        } else {
            format!("one of {}", list.join(", "))
        };
    }
    if let Some(c) = s.get("const") {
        return format!("`{}`", c.as_str().unwrap_or(&c.to_string()));
    }
    if let Some(one) = s
        .get("oneOf")
        .or_else(|| s.get("anyOf"))
        .and_then(Value::as_array)
    {
        let parts: Vec<String> = one.iter().map(|o| expectation(root, o)).collect();
        return parts.join(" or ");
    }
    match s.get("type").and_then(Value::as_str) {
        Some("integer") => match s.get("minimum").and_then(Value::as_i64) {
            Some(min) => format!("an integer ≥ {min}"),
            None => "an integer".into(),
        },
        Some("number") => "a number".into(),
        Some("boolean") => "`true` or `false`".into(),
        Some("array") => "a list".into(),
        Some("object") => "a mapping".into(),
        Some("string") => {
            if s.get("format").and_then(Value::as_str) == Some("date-time") {
                return "an RFC 3339 time such as `2026-01-31T18:00:00Z`".into();
            }
            match s.get("pattern").and_then(Value::as_str) {
                Some(p) => pattern_words(p),
                None => match (
                    s.get("minLength").and_then(Value::as_u64),
                    s.get("maxLength").and_then(Value::as_u64),
                ) {
                    (Some(min), Some(max)) => format!("a string of {min} to {max} characters"),
                    (Some(min), None) if min > 0 => "a non-empty string".into(),
                    _ => "a string".into(),
                },
            }
        }
        _ => "a valid value".into(),
    }
}

fn pattern_words(pattern: &str) -> String {
    if pattern == DURATION_PATTERN {
        return "a duration such as `90s`, `6h` or `30d`".into();
    }
    if pattern.starts_with("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$") {
        return "a DNS-1123 name: lower-case letters, digits and `-`, starting and ending with a letter or digit".into();
    }
    if pattern.starts_with("^(s3|az|gs)://") {
        return "a URL such as `s3://bucket/prefix`, `az://container/prefix`, `gs://bucket/prefix` or `file:///path`".into();
    }
    if pattern.starts_with("^age1") {
        return "an age X25519 public key (`age1` followed by 58 characters)".into();
    }
    if pattern.starts_with("^https?://") {
        return "an http:// or https:// URL".into();
    }
    if pattern.starts_with("^[a-z0-9*?") {
        return "a namespace name or glob such as `team-*`".into();
    }
    if pattern.starts_with("^(\\*|[a-z0-9]") {
        return "a resource such as `secrets` or `deployments.apps`".into();
    }
    format!("a string matching `{pattern}`")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(retention: Value) -> Value {
        json!({
            "apiVersion": "lifeboat.dev/v1alpha1",
            "kind": "BackupPolicy",
            "metadata": {"name": "apps"},
            "spec": {
                "clusters": {"names": ["prod"]},
                "schedule": "0 * * * *",
                "retention": retention,
                "storage": "s3",
            }
        })
    }

    #[test]
    fn valid_policy_has_no_errors() {
        assert_eq!(
            validate(Kind::BackupPolicy, &policy(json!({"keepDaily": 7}))),
            vec![]
        );
    }

    #[test]
    fn type_error_in_words() {
        let errs = validate(Kind::BackupPolicy, &policy(json!({"keepDaily": "seven"})));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].pointer, "/spec/retention/keepDaily");
        assert_eq!(
            errs[0].message,
            "`keepDaily` must be an integer ≥ 0, found `\"seven\"`"
        );
    }

    #[test]
    fn unknown_field_suggests() {
        let errs = validate(Kind::BackupPolicy, &policy(json!({"keepDialy": 7})));
        assert_eq!(errs[0].pointer, "/spec/retention/keepDialy");
        assert!(errs[0].at_key);
        assert_eq!(errs[0].help.as_deref(), Some("did you mean `keepDaily`?"));
    }

    #[test]
    fn missing_and_enum() {
        let mut p = policy(json!({"keepLast": 3}));
        p["spec"].as_object_mut().unwrap().remove("storage");
        p["kind"] = json!("BackupPolicy");
        let errs = validate(Kind::BackupPolicy, &p);
        assert_eq!(
            errs[0].message,
            "`spec` is missing the required field `storage`"
        );
        let mut p = policy(json!({"maxAge": "30 days"}));
        p["apiVersion"] = json!("v1");
        let msgs: Vec<String> = validate(Kind::BackupPolicy, &p)
            .into_iter()
            .map(|e| e.message)
            .collect();
        assert!(
            msgs.contains(
                &"`apiVersion` must be `lifeboat.dev/v1alpha1`, found `\"v1\"`".to_string()
            ),
            "{msgs:?}"
        );
        assert!(
            msgs.contains(
                &"`maxAge` must be a duration such as `90s`, `6h` or `30d`, found `\"30 days\"`"
                    .to_string()
            ),
            "{msgs:?}"
        );
    }

    #[test]
    fn document_schema_compiles_and_dispatches() {
        let schema = document_schema();
        let v = jsonschema::validator_for(&schema).unwrap();
        assert!(v.is_valid(&policy(json!({"keepLast": 3}))));
        assert!(!v.is_valid(&policy(json!({"keepLast": -1}))));
    }

    #[test]
    fn field_names() {
        assert_eq!(field_name("/spec/retention/keepDaily"), "keepDaily");
        assert_eq!(field_name("/spec/include/namespaces/2"), "namespaces[2]");
        assert_eq!(field_name(""), "document");
    }
}

/// One row of a kind's field reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDoc {
    /// Dotted path, `spec.retention.keepDaily`; list items as `[]`.
    pub path: String,
    /// What the field takes, in words.
    pub takes: String,
    pub required: bool,
    pub default: Option<String>,
    pub description: String,
}

/// Every field of a kind, depth first, from the generated schema: the
/// source of the field tables in docs/policy-reference.
pub fn fields(kind: Kind) -> Vec<FieldDoc> {
    let root = kind_schema(kind).to_value();
    let mut out = Vec::new();
    walk_fields(&root, &root, "", &mut out, 0);
    out
}

fn walk_fields(root: &Value, s: &Value, prefix: &str, out: &mut Vec<FieldDoc>, depth: usize) {
    let s = resolve(root, s);
    if depth > 12 {
        return;
    }
    let required: Vec<&str> = s
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(props) = s.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (name, sub) in props {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let described = resolve(root, sub);
        let description = sub
            .get("description")
            .or_else(|| described.get("description"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .replace('\n', " ");
        let items = described.get("items").map(|i| resolve(root, i));
        let takes = match items {
            Some(item) if described.get("type") == Some(&json!("array")) => {
                format!(
                    "list of {}",
                    expectation(root, item)
                        .trim_start_matches("a ")
                        .trim_start_matches("an ")
                )
            }
            _ if described
                .get("additionalProperties")
                .is_some_and(Value::is_object) =>
            {
                "map of string to string".to_string()
            }
            _ => expectation(root, described),
        };
        out.push(FieldDoc {
            path: path.clone(),
            takes,
            required: required.contains(&name.as_str()),
            default: sub
                .get("default")
                .or_else(|| described.get("default"))
                .filter(|d| !d.is_null())
                .map(|d| d.to_string()),
            description,
        });
        walk_fields(root, described, &path, out, depth + 1);
        if let Some(item) = items {
            walk_fields(root, item, &format!("{path}[]"), out, depth + 1);
        }
    }
}
