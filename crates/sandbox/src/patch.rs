//! PATCH bodies: JSON patch (RFC 6902) and JSON merge patch (RFC 7386) via
//! the `json-patch` crate, server-side apply as create-or-merge, and
//! strategic merge patch.
//!
//! Strategic merge patch is hand-written because no maintained Rust crate
//! implements it, and the real algorithm needs Go struct tags (patch merge
//! keys) this server does not have. It is a JSON merge patch that also
//! understands the directives kubectl sends: `$setElementOrder/<field>`
//! (lists merged by the key the order entries carry, e.g. `name`),
//! `$patch: delete|replace|merge`, `$deleteFromPrimitiveList/<field>` and
//! `$retainKeys`. Lists without directives are replaced, as in a merge patch.

use serde_json::{Map, Value};

/// The patch flavours of the Kubernetes API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// application/json-patch+json
    Json,
    /// application/merge-patch+json
    Merge,
    /// application/strategic-merge-patch+json
    Strategic,
    /// application/apply-patch+yaml
    Apply,
}

impl PatchKind {
    /// From a Content-Type.
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct.split(';').next().unwrap_or_default().trim();
        match base {
            "application/json-patch+json" => Some(PatchKind::Json),
            "application/merge-patch+json" => Some(PatchKind::Merge),
            "application/strategic-merge-patch+json" => Some(PatchKind::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => {
                Some(PatchKind::Apply)
            }
            _ => None,
        }
    }
}

/// Applies a parsed patch body to a document.
pub fn apply(kind: PatchKind, doc: &mut Value, patch: &Value) -> Result<(), String> {
    match kind {
        PatchKind::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| format!("invalid JSON patch: {e}"))?;
            json_patch::patch(doc, &ops).map_err(|e| e.to_string())
        }
        PatchKind::Merge | PatchKind::Apply => {
            if !patch.is_object() {
                return Err("a merge patch must be a JSON object".into());
            }
            json_patch::merge(doc, patch);
            Ok(())
        }
        PatchKind::Strategic => {
            if !patch.is_object() {
                return Err("a strategic merge patch must be a JSON object".into());
            }
            strategic(doc, patch);
            Ok(())
        }
    }
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

/// Strategic merge of `patch` into `doc` (see the module docs).
pub fn strategic(doc: &mut Value, patch: &Value) {
    let Some(p) = patch.as_object() else {
        *doc = strip_directives(patch);
        return;
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            *doc = strip_directives(patch);
            return;
        }
        Some("delete") => {
            *doc = Value::Null;
            return;
        }
        _ => {}
    }
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    let d = doc.as_object_mut().expect("object");
    if let Some(keep) = p.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        d.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (k, v) in p {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(list), Some(del)) =
                (d.get_mut(field).and_then(Value::as_array_mut), v.as_array())
            {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() {
            d.remove(k);
            continue;
        }
        let order = p
            .get(&format!("$setElementOrder/{k}"))
            .and_then(Value::as_array);
        match v {
            Value::Object(_) => {
                let slot = d.entry(k.clone()).or_insert(Value::Null);
                strategic(slot, v);
                if slot.is_null() {
                    d.remove(k);
                }
            }
            Value::Array(items) => {
                let existing = d
                    .get(k)
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let merged = merge_list(&existing, items, order);
                d.insert(k.clone(), Value::Array(merged));
            }
            _ => {
                d.insert(k.clone(), v.clone());
            }
        }
    }
    for (field, order) in p
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("$setElementOrder/")?, v)))
    {
        if p.contains_key(field) {
            continue;
        }
        // Only the order changed: reorder existing elements.
        if let (Some(list), Some(order)) =
            (d.get(field).and_then(Value::as_array), order.as_array())
        {
            let merged = merge_list(list, &[], Some(order));
            d.insert(field.to_string(), Value::Array(merged));
        }
    }
}

fn merge_key(order: Option<&Vec<Value>>, items: &[Value]) -> Option<String> {
    if let Some(first) = order.and_then(|o| o.first()).and_then(Value::as_object) {
        return first.keys().find(|k| !k.starts_with('$')).cloned();
    }
    let directive = items.iter().any(|i| i.get("$patch").is_some());
    (directive && items.iter().all(|i| i.get("name").is_some())).then(|| "name".to_string())
}

fn merge_list(existing: &[Value], items: &[Value], order: Option<&Vec<Value>>) -> Vec<Value> {
    let scalars = items
        .iter()
        .chain(order.into_iter().flatten())
        .all(|v| !v.is_object());
    if scalars {
        // A merged primitive list: union in the given order.
        let mut out: Vec<Value> = match order {
            Some(o) => o.clone(),
            None if items.is_empty() => existing.to_vec(),
            None => return items.to_vec(),
        };
        for x in existing.iter().chain(items) {
            if !out.contains(x) && order.is_none() {
                out.push(x.clone());
            }
        }
        return out;
    }
    let Some(key) = merge_key(order, items) else {
        return items.iter().map(strip_directives).collect();
    };
    let key_of = |v: &Value| v.get(&key).cloned();
    let mut out: Vec<Value> = Vec::new();
    let deleted: Vec<Value> = items
        .iter()
        .filter(|i| i.get("$patch").and_then(Value::as_str) == Some("delete"))
        .filter_map(key_of)
        .collect();
    let mut seen: Vec<Value> = Vec::new();
    let wanted: Vec<Value> = match order {
        Some(o) => o.iter().filter_map(key_of).collect(),
        None => existing.iter().chain(items).filter_map(key_of).collect(),
    };
    for kv in wanted {
        if seen.contains(&kv) || deleted.contains(&kv) {
            continue;
        }
        seen.push(kv.clone());
        let base = existing
            .iter()
            .find(|e| key_of(e).as_ref() == Some(&kv))
            .cloned();
        let upd = items.iter().find(|e| key_of(e).as_ref() == Some(&kv));
        match (base, upd) {
            (Some(mut b), Some(u)) => {
                strategic(&mut b, u);
                out.push(b);
            }
            (Some(b), None) => out.push(b),
            (None, Some(u)) => out.push(strip_directives(u)),
            (None, None) => {}
        }
    }
    // Elements neither listed nor deleted are kept (someone else added them).
    for e in existing.iter().chain(items) {
        if let Some(kv) = key_of(e)
            && !seen.contains(&kv)
            && !deleted.contains(&kv)
        {
            seen.push(kv);
            out.push(strip_directives(e));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merges_lists_by_key() {
        let mut doc = json!({"spec": {"containers": [
            {"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}, "metadata": {"labels": {"x": "1"}}});
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "a"}, {"name": "c"}],
            "containers": [{"name": "a", "image": "a:2"}, {"name": "c", "image": "c:1"}, {"name": "b", "$patch": "delete"}]},
            "metadata": {"labels": {"x": null, "y": "2"}}});
        strategic(&mut doc, &patch);
        assert_eq!(
            doc,
            json!({"spec": {"containers": [
            {"name": "a", "image": "a:2"}, {"name": "c", "image": "c:1"}]}, "metadata": {"labels": {"y": "2"}}})
        );
    }

    #[test]
    fn strategic_replaces_plain_lists_and_handles_primitives() {
        let mut doc = json!({"args": ["a"], "finalizers": ["x", "y"]});
        strategic(
            &mut doc,
            &json!({"args": ["b"], "$deleteFromPrimitiveList/finalizers": ["x"]}),
        );
        assert_eq!(doc, json!({"args": ["b"], "finalizers": ["y"]}));
    }

    #[test]
    fn json_and_merge_patches() {
        let mut doc = json!({"a": 1, "b": {"c": 2}});
        apply(
            PatchKind::Json,
            &mut doc,
            &json!([{"op": "replace", "path": "/a", "value": 3}]),
        )
        .unwrap();
        apply(
            PatchKind::Merge,
            &mut doc,
            &json!({"b": {"c": null, "d": 4}}),
        )
        .unwrap();
        assert_eq!(doc, json!({"a": 3, "b": {"d": 4}}));
        assert!(
            apply(
                PatchKind::Json,
                &mut doc,
                &json!([{"op": "remove", "path": "/zz"}])
            )
            .is_err()
        );
        assert!(apply(PatchKind::Json, &mut doc, &json!({"op": 1})).is_err());
    }
}
