//! Where movers run, for the per-node mover limits of a backup
//! (`volumes.concurrency.moversPerNode`):
//!
//! ```text
//! Nodes + PersistentVolumes ─▶ placements(): the node a volume's required
//!                              node affinity allows (when exactly one), and
//!                              how many nodes a mover the scheduler places
//!                              may land on
//! mover pods of an operation ─▶ mover_nodes(): claim id ─▶ the node each
//!                              was bound to
//! ```
//!
//! Node affinity is evaluated as the scheduler does: terms ORed,
//! expressions of a term ANDed, `matchFields` on `metadata.name`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, Pod};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde_json::Value;

use super::{CLAIM_LABEL, VolumeError, kube_err};

/// Where the movers of a backup will run, as far as it is known before
/// they start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placements {
    /// PersistentVolume ─▶ the one node its required node affinity allows.
    pub pinned: BTreeMap<String, String>,
    /// Nodes a mover without node constraints may be scheduled to: not
    /// cordoned, no `NoSchedule`/`NoExecute` taint (such movers carry no
    /// tolerations).
    pub open_nodes: usize,
}

/// The nodes and volumes of the cluster as they are now.
pub async fn placements(client: &kube::Client) -> Result<Placements, VolumeError> {
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(kube_err("list nodes"))?
        .items;
    let nodes: Vec<Value> = nodes
        .iter()
        .filter_map(|n| serde_json::to_value(n).ok())
        .collect();
    let pvs = Api::<PersistentVolume>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(kube_err("list PersistentVolumes"))?
        .items;
    let mut pinned = BTreeMap::new();
    for pv in &pvs {
        let Some(required) = pv
            .spec
            .as_ref()
            .and_then(|s| s.node_affinity.as_ref())
            .and_then(|a| a.required.as_ref())
            .and_then(|r| serde_json::to_value(r).ok())
        else {
            continue;
        };
        if let Some(node) = only_node(&required, &nodes) {
            pinned.insert(pv.name_any(), node);
        }
    }
    Ok(Placements {
        pinned,
        open_nodes: nodes.iter().filter(|n| is_open(n)).count(),
    })
}

/// The node of each mover pod of operation `op` (`label=op`) that the
/// scheduler has bound, by the claim id of its claim ([`super::claim_id`]).
pub async fn mover_nodes(
    client: &kube::Client,
    movers: &str,
    label: &str,
    op: &str,
) -> Result<BTreeMap<String, String>, VolumeError> {
    let pods = match Api::<Pod>::namespaced(client.clone(), movers)
        .list(&ListParams::default().labels(&format!("{label}={op}")))
        .await
    {
        Ok(l) => l.items,
        Err(kube::Error::Api(s)) if s.code == 404 => Vec::new(),
        Err(e) => return Err(kube_err(format!("list mover pods in {movers}"))(e)),
    };
    Ok(pods
        .iter()
        .filter_map(|p| {
            let claim = p.labels().get(CLAIM_LABEL)?.clone();
            let node = p.spec.as_ref()?.node_name.clone()?;
            Some((claim, node))
        })
        .collect())
}

/// The name of the only node of `nodes` that the NodeSelector `required`
/// allows.
fn only_node(required: &Value, nodes: &[Value]) -> Option<String> {
    let mut allowed = nodes.iter().filter(|n| selector_allows(required, n));
    let node = allowed.next()?;
    if allowed.next().is_some() {
        return None;
    }
    node.pointer("/metadata/name")?.as_str().map(str::to_string)
}

/// Whether a NodeSelector (`nodeSelectorTerms`, ORed) allows `node`.
fn selector_allows(selector: &Value, node: &Value) -> bool {
    selector["nodeSelectorTerms"]
        .as_array()
        .is_some_and(|terms| terms.iter().any(|t| term_allows(t, node)))
}

/// Whether one NodeSelectorTerm allows `node`; an empty term allows none.
fn term_allows(term: &Value, node: &Value) -> bool {
    let exprs = term["matchExpressions"].as_array().map_or(&[][..], |a| a);
    let fields = term["matchFields"].as_array().map_or(&[][..], |a| a);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let labels = &node["metadata"]["labels"];
    exprs
        .iter()
        .all(|e| requirement_holds(e, labels[e["key"].as_str().unwrap_or_default()].as_str()))
        && fields.iter().all(|e| {
            let value = match e["key"].as_str() {
                Some("metadata.name") => node["metadata"]["name"].as_str(),
                _ => None,
            };
            requirement_holds(e, value)
        })
}

/// A NodeSelectorRequirement against the value of its key (`None`: absent).
fn requirement_holds(req: &Value, value: Option<&str>) -> bool {
    let values: Vec<&str> = req["values"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let number = |s: &str| s.parse::<i64>().ok();
    match req["operator"].as_str() {
        Some("In") => value.is_some_and(|v| values.contains(&v)),
        Some("NotIn") => value.is_none_or(|v| !values.contains(&v)),
        Some("Exists") => value.is_some(),
        Some("DoesNotExist") => value.is_none(),
        Some(op @ ("Gt" | "Lt")) => {
            match (
                value.and_then(number),
                values.first().and_then(|v| number(v)),
            ) {
                (Some(v), Some(bound)) if op == "Gt" => v > bound,
                (Some(v), Some(bound)) => v < bound,
                _ => false,
            }
        }
        _ => false,
    }
}

/// Whether a mover without node constraints or tolerations may be
/// scheduled to `node`.
fn is_open(node: &Value) -> bool {
    node["spec"]["unschedulable"].as_bool() != Some(true)
        && !node["spec"]["taints"].as_array().is_some_and(|taints| {
            taints
                .iter()
                .any(|t| matches!(t["effect"].as_str(), Some("NoSchedule" | "NoExecute")))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, zone: &str) -> Value {
        json!({"metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "topology.kubernetes.io/zone": zone}}})
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> Value {
        json!({"nodeSelectorTerms": [{"matchExpressions": [
            {"key": key, "operator": op, "values": values}]}]})
    }

    #[test]
    fn a_volume_is_pinned_only_when_its_affinity_allows_one_node() {
        let nodes = [node("a", "z1"), node("b", "z1"), node("c", "z2")];
        let host = expr("kubernetes.io/hostname", "In", &["b"]);
        assert_eq!(only_node(&host, &nodes).as_deref(), Some("b"));
        let zone = expr("topology.kubernetes.io/zone", "In", &["z1"]);
        assert_eq!(only_node(&zone, &nodes), None, "two nodes in z1");
        let z2 = expr("topology.kubernetes.io/zone", "In", &["z2"]);
        assert_eq!(only_node(&z2, &nodes).as_deref(), Some("c"));
        let field = json!({"nodeSelectorTerms": [{"matchFields": [
            {"key": "metadata.name", "operator": "In", "values": ["a"]}]}]});
        assert_eq!(only_node(&field, &nodes).as_deref(), Some("a"));
        let gone = expr("kubernetes.io/hostname", "In", &["x"]);
        assert_eq!(only_node(&gone, &nodes), None);
        // Terms are ORed, expressions of a term ANDed.
        let or = json!({"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["a"]}]},
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["c"]}]}]});
        assert_eq!(only_node(&or, &nodes), None);
        let and = json!({"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["z1"]},
            {"key": "kubernetes.io/hostname", "operator": "NotIn", "values": ["a"]}]}]});
        assert_eq!(only_node(&and, &nodes).as_deref(), Some("b"));
        assert_eq!(
            only_node(&json!({"nodeSelectorTerms": [{}]}), &nodes),
            None,
            "an empty term allows no node"
        );
    }

    #[test]
    fn requirements_follow_the_scheduler() {
        assert!(requirement_holds(&json!({"operator": "Exists"}), Some("")));
        assert!(!requirement_holds(&json!({"operator": "Exists"}), None));
        assert!(requirement_holds(
            &json!({"operator": "DoesNotExist"}),
            None
        ));
        assert!(requirement_holds(
            &json!({"operator": "NotIn", "values": ["a"]}),
            None
        ));
        assert!(requirement_holds(
            &json!({"operator": "Gt", "values": ["3"]}),
            Some("4")
        ));
        assert!(!requirement_holds(
            &json!({"operator": "Lt", "values": ["3"]}),
            Some("x")
        ));
        assert!(!requirement_holds(&json!({"operator": "Near"}), Some("a")));
    }

    #[test]
    fn cordoned_and_tainted_nodes_take_no_unconstrained_mover() {
        assert!(is_open(&node("a", "z")));
        assert!(!is_open(&json!({"spec": {"unschedulable": true}})));
        assert!(!is_open(
            &json!({"spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}})
        ));
        assert!(is_open(
            &json!({"spec": {"taints": [{"key": "k", "effect": "PreferNoSchedule"}]}})
        ));
    }
}
