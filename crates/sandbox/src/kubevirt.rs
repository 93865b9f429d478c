//! KubeVirt and CDI, as far as a backup tool meets them: the CRDs a test
//! installs (`kubevirt.io/v1` VirtualMachine and VirtualMachineInstance,
//! `cdi.kubevirt.io/v1beta1` DataVolume, the `instancetype.kubevirt.io`
//! kinds) and virt-api's `subresources.kubevirt.io/v1` freeze and
//! unfreeze endpoints on VMIs.
//!
//! ```text
//! PUT /apis/subresources.kubevirt.io/v1/namespaces/<ns>/virtualmachineinstances/<vmi>/freeze
//!     body {"unfreezeTimeout": "5m"}   ─▶ 404 no such VMI
//!                                      ─▶ 409 not Running / no guest agent
//!                                      ─▶ 200, status.fsFreezeStatus "frozen"
//! PUT …/unfreeze                       ─▶ 200, status.fsFreezeStatus removed
//! ```
//!
//! As on a real cluster the group is an aggregated API (virt-api behind an
//! APIService), not a CRD subresource: it is served while the
//! VirtualMachineInstance CRD is installed. The guest agent is modelled
//! by the VMI's `AgentConnected` condition, as virt-handler reports it.
//! No virt-controller runs: a test creates the VMI and its `virt-launcher`
//! pod itself, as a started VM would have them.
//!
//! Sandbox only: the VMI annotation [`FAIL_FREEZE`] makes freeze and
//! unfreeze fail with its value as the message (500), so tests can see a
//! failed freeze.

use serde_json::{Value, json};

use crate::controllers;
use crate::error::ApiError;
use crate::handlers::State;

/// The aggregated API group of virt-api's subresources.
pub const SUBRESOURCES_GROUP: &str = "subresources.kubevirt.io";
/// Sandbox-only VMI annotation: freeze and unfreeze fail with its value.
pub const FAIL_FREEZE: &str = "sandbox.lifeboat.dev/fail-freeze";

fn crd(group: &str, version: &str, kind: &str, plural: &str, scope: &str) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {
            "group": group, "scope": scope,
            "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(),
                      "listKind": format!("{kind}List")},
            "versions": [{"name": version, "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object",
                    "x-kubernetes-preserve-unknown-fields": true}}}]
        }
    })
}

/// The CRDs KubeVirt and CDI install (the kinds a backup meets), with
/// open schemas.
pub fn crds() -> Vec<Value> {
    vec![
        crd(
            "kubevirt.io",
            "v1",
            "VirtualMachine",
            "virtualmachines",
            "Namespaced",
        ),
        crd(
            "kubevirt.io",
            "v1",
            "VirtualMachineInstance",
            "virtualmachineinstances",
            "Namespaced",
        ),
        crd(
            "cdi.kubevirt.io",
            "v1beta1",
            "DataVolume",
            "datavolumes",
            "Namespaced",
        ),
        crd(
            "instancetype.kubevirt.io",
            "v1beta1",
            "VirtualMachineInstancetype",
            "virtualmachineinstancetypes",
            "Namespaced",
        ),
        crd(
            "instancetype.kubevirt.io",
            "v1beta1",
            "VirtualMachinePreference",
            "virtualmachinepreferences",
            "Namespaced",
        ),
    ]
}

/// Whether `s` is a Go duration (`30s`, `5m`, `1h30m`, `1.5h`).
fn go_duration(s: &str) -> Option<()> {
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|n| *n > 0)?;
        rest[..n].parse::<f64>().ok()?;
        rest = &rest[n..];
        let unit = ["ns", "us", "µs", "ms", "s", "m", "h"]
            .into_iter()
            .filter(|u| rest.starts_with(u))
            .max_by_key(|u| u.len())?;
        rest = &rest[unit.len()..];
    }
    Some(())
}

fn condition_true(vmi: &Value, ty: &str) -> bool {
    vmi.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == ty && c["status"].as_str() == Some("True"))
        })
}

/// `PUT …/virtualmachineinstances/<name>/{freeze,unfreeze}`.
pub fn subresource(
    st: &mut State,
    method: &http::Method,
    namespace: &str,
    resource: &str,
    name: &str,
    sub: &str,
    body: &[u8],
) -> Result<Value, ApiError> {
    if resource != "virtualmachineinstances" || name.is_empty() || namespace.is_empty() {
        return Err(ApiError::no_route());
    }
    if !matches!(sub, "freeze" | "unfreeze") {
        return Err(ApiError::no_route());
    }
    if *method != http::Method::PUT {
        return Err(ApiError::method_not_allowed(format!(
            "{sub} takes PUT, not {method}"
        )));
    }
    if st
        .registry
        .get("kubevirt.io", "v1", "virtualmachineinstances")
        .is_none()
    {
        return Err(ApiError::no_route());
    }
    let Some(obj) =
        controllers::objects_in(st, "kubevirt.io", "virtualmachineinstances", namespace)
            .into_iter()
            .find(|o| o.name == name)
    else {
        return Err(ApiError::not_found(
            "kubevirt.io",
            "virtualmachineinstances",
            name,
        ));
    };
    let vmi = obj.value();
    if sub == "freeze" {
        let opts: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("cannot decode the body: {e}")))?
        };
        let timeout = opts.get("unfreezeTimeout").and_then(Value::as_str);
        match timeout.map(go_duration) {
            None => {
                return Err(ApiError::bad_request(
                    "unfreezeTimeout is required (a duration such as 5m)",
                ));
            }
            Some(None) => {
                return Err(ApiError::bad_request(format!(
                    "unfreezeTimeout {:?} is not a duration",
                    timeout.unwrap_or_default()
                )));
            }
            Some(Some(_)) => {}
        }
    }
    if let Some(why) = vmi
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(FAIL_FREEZE))
        .and_then(Value::as_str)
    {
        return Err(ApiError::injected(500, None, Some(why)));
    }
    if vmi.pointer("/status/phase").and_then(Value::as_str) != Some("Running") {
        return Err(ApiError::conflict(
            "kubevirt.io",
            "virtualmachineinstances",
            name,
            "VMI is not running",
        ));
    }
    if sub == "freeze" && !condition_true(&vmi, "AgentConnected") {
        return Err(ApiError::conflict(
            "kubevirt.io",
            "virtualmachineinstances",
            name,
            "the guest agent is not connected",
        ));
    }
    let mut status = vmi.get("status").cloned().unwrap_or_else(|| json!({}));
    if sub == "freeze" {
        status["fsFreezeStatus"] = json!("frozen");
    } else if let Some(s) = status.as_object_mut() {
        s.remove("fsFreezeStatus");
    }
    controllers::update_status(st, "kubevirt.io", "virtualmachineinstances", &vmi, status)?;
    Ok(json!({}))
}
