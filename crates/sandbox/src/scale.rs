//! The `scale` subresource of Deployments, ReplicaSets, StatefulSets (and
//! ReplicationControllers): an `autoscaling/v1` Scale whose `spec.replicas`
//! reads and writes the object's `spec.replicas`, with `status.replicas`
//! and the label selector as a string (`status.selector`). GET, PUT (a
//! Scale, with optimistic concurrency on its resourceVersion) and PATCH (any
//! patch type, applied to the Scale) are served; writes go through the
//! object's normal update path.

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::handlers::{self, Ctx, Reply, State};
use crate::patch::{self, PatchKind};

fn scale_of(v: &Value) -> Value {
    let m = &v["metadata"];
    let mut meta = json!({});
    for k in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(x) = m.get(k) {
            meta[k] = x.clone();
        }
    }
    let mut status = json!({"replicas": v["status"]["replicas"].as_i64().unwrap_or(0)});
    let selector = selector_string(&v["spec"]["selector"]);
    if !selector.is_empty() {
        status["selector"] = json!(selector);
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": meta,
        "spec": {"replicas": v["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": status,
    })
}

fn current(st: &State, cx: &Ctx) -> Result<Value, ApiError> {
    st.store
        .get(&cx.info.key(), cx.namespace, cx.name)
        .map(|o| o.value())
        .ok_or_else(|| ApiError::not_found(&cx.info.group, &cx.info.resource, cx.name))
}

/// GET `…/scale`.
pub fn get(st: &State, cx: &Ctx) -> Result<Reply, ApiError> {
    let v = current(st, cx)?;
    Ok(reply(200, &scale_of(&v)))
}

fn reply(code: u16, v: &Value) -> Reply {
    Reply {
        code,
        body: bytes::Bytes::from(serde_json::to_vec(v).unwrap_or_default()),
    }
}

/// PUT `…/scale` with a Scale.
pub fn update(st: &mut State, cx: &Ctx, body: Value) -> Result<Reply, ApiError> {
    let kind = body["kind"].as_str().unwrap_or("Scale");
    if kind != "Scale" {
        return Err(ApiError::bad_request(format!(
            "the kind of the provided object ({kind}) does not match the resource (Scale)"
        )));
    }
    let replicas = body["spec"]["replicas"].as_i64().unwrap_or(0);
    if replicas < 0 {
        return Err(ApiError::invalid_field(
            "autoscaling",
            "Scale",
            cx.name,
            "spec.replicas",
            format!("Invalid value: {replicas}: must be greater than or equal to 0"),
        ));
    }
    let mut obj = current(st, cx)?;
    obj["spec"]["replicas"] = json!(replicas);
    match body["metadata"]["resourceVersion"].as_str() {
        Some(rv) if !rv.is_empty() => obj["metadata"]["resourceVersion"] = json!(rv),
        _ => {
            if let Some(m) = obj["metadata"].as_object_mut() {
                m.remove("resourceVersion");
            }
        }
    }
    let main = Ctx {
        info: cx.info,
        version: cx.version,
        namespace: cx.namespace,
        name: cx.name,
        subresource: "",
        query: cx.query,
        table: false,
    };
    handlers::update(st, &main, obj)?;
    get(st, cx).map(|r| Reply { code: 200, ..r })
}

/// PATCH `…/scale`: the patch applies to the Scale document.
pub fn patch(st: &mut State, cx: &Ctx, kind: PatchKind, body: Value) -> Result<Reply, ApiError> {
    let mut doc = scale_of(&current(st, cx)?);
    patch::apply(kind, &mut doc, &body).map_err(ApiError::bad_request)?;
    // A patch is not conditional unless it names a resourceVersion.
    if body["metadata"]["resourceVersion"].is_null()
        && let Some(m) = doc["metadata"].as_object_mut()
    {
        m.remove("resourceVersion");
    }
    update(st, cx, doc)
}

/// A `metav1.LabelSelector` in its string form (`app=web,tier in (a,b)`),
/// as `metav1.FormatLabelSelector` prints it.
pub fn selector_string(sel: &Value) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(m) = sel["matchLabels"].as_object() {
        let mut kv: Vec<_> = m.iter().collect();
        kv.sort_by(|a, b| a.0.cmp(b.0));
        parts.extend(
            kv.into_iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())),
        );
    }
    for e in sel["matchExpressions"].as_array().into_iter().flatten() {
        let key = e["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        parts.push(match e["operator"].as_str().unwrap_or_default() {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            op => format!("{key} {op} ({})", values.join(",")),
        });
    }
    parts.join(",")
}
