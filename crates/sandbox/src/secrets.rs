//! Secret and ConfigMap semantics of kube-apiserver.
//!
//! - A Secret's `stringData` is write-only: on every create, update and patch
//!   (server-side apply included) its entries are merged into `data`
//!   (base64, `stringData` wins on a key in both) and `stringData` is
//!   dropped, so it is never stored, returned or watched. An empty `type`
//!   becomes `Opaque`.
//! - `immutable: true` Secrets and ConfigMaps refuse any change to `data`
//!   (and `binaryData`) and to `immutable` itself with 422 Invalid and the
//!   messages of the real validation; metadata may still change. A Secret's
//!   `type` never changes.

use base64::Engine as _;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::meta::meta_str;
use crate::resources::ResourceInfo;

/// Normalises a Secret before it is validated and stored (create and update).
pub fn normalize(info: &ResourceInfo, v: &mut Value) {
    if !(info.group.is_empty() && info.resource == "secrets") {
        return;
    }
    let Some(o) = v.as_object_mut() else { return };
    if let Some(Value::Object(sd)) = o.remove("stringData") {
        let data = o.entry("data").or_insert_with(|| json!({}));
        if !data.is_object() {
            *data = json!({});
        }
        if let Some(d) = data.as_object_mut() {
            for (k, val) in sd {
                let s = match val {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                d.insert(
                    k,
                    json!(base64::engine::general_purpose::STANDARD.encode(s)),
                );
            }
        }
    }
    if o.get("type")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        o.insert("type".into(), json!("Opaque"));
    }
}

/// Refuses changes the real validation forbids on update.
pub fn check_update(info: &ResourceInfo, old: &Value, new: &Value) -> Result<(), ApiError> {
    if !info.group.is_empty() {
        return Ok(());
    }
    let fields: &[&str] = match info.resource.as_str() {
        "secrets" => &["data"],
        "configmaps" => &["data", "binaryData"],
        _ => return Ok(()),
    };
    let mut causes: Vec<(String, String)> = Vec::new();
    let forbidden = "Forbidden: field is immutable when `immutable` is set";
    if info.resource == "secrets" && old["type"] != new["type"] {
        causes.push((
            "type".into(),
            format!("Invalid value: {}: field is immutable", new["type"]),
        ));
    }
    if old["immutable"] == json!(true) {
        if new["immutable"] != json!(true) {
            causes.push(("immutable".into(), forbidden.into()));
        }
        for f in fields {
            if empty_as_null(&old[*f]) != empty_as_null(&new[*f]) {
                causes.push(((*f).into(), forbidden.into()));
            }
        }
    }
    if causes.is_empty() {
        return Ok(());
    }
    let mut e = ApiError::invalid(&info.group, &info.kind, meta_str(old, "name"), &causes);
    if let Some(d) = e.details.as_mut()
        && let Some(cs) = d["causes"].as_array_mut()
    {
        for c in cs {
            if c["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("Forbidden"))
            {
                c["reason"] = json!("FieldValueForbidden");
            }
        }
    }
    Err(e)
}

fn empty_as_null(v: &Value) -> &Value {
    match v {
        Value::Object(o) if o.is_empty() => &Value::Null,
        v => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Registry;

    fn info(resource: &str) -> ResourceInfo {
        Registry::builtin()
            .get("", "v1", resource)
            .expect("built-in")
            .as_ref()
            .clone()
    }

    #[test]
    fn string_data_is_merged_into_data() {
        let mut v =
            json!({"data": {"a": "eA==", "b": "eA=="}, "stringData": {"b": "two", "c": "three"}});
        normalize(&info("secrets"), &mut v);
        assert_eq!(
            v,
            json!({"data": {"a": "eA==", "b": "dHdv", "c": "dGhyZWU="}, "type": "Opaque"})
        );
    }

    #[test]
    fn immutable_refuses_data_changes() {
        let i = info("configmaps");
        let old = json!({"metadata": {"name": "c"}, "immutable": true, "data": {"a": "1"}});
        let e = check_update(&i, &old, &json!({"immutable": true, "data": {"a": "2"}}))
            .expect_err("data is immutable");
        assert_eq!(e.code, 422);
        assert_eq!(
            e.message,
            "ConfigMap \"c\" is invalid: data: Forbidden: field is immutable when `immutable` is set"
        );
        assert!(check_update(&i, &old, &json!({"immutable": true, "data": {"a": "1"}})).is_ok());
        let e = check_update(&i, &old, &json!({"immutable": false, "data": {"a": "1"}}))
            .expect_err("immutable stays");
        assert!(e.message.contains("immutable: Forbidden"), "{}", e.message);
    }
}
