//! Field ownership for server-side apply: which field manager set which
//! field, and the 409 Conflict an apply gets when it would change a field
//! that another manager owns.
//!
//! Leader election depends on this: two candidates that both see a free
//! Lease apply `holderIdentity` at the same time, and the real API server
//! lets exactly one of them win; the other gets a conflict and backs off.
//!
//! ```text
//! apply (manager M, body B) ──check──▶ conflict? ──yes, no force──▶ 409
//!                                         │ no
//!                                         ▼
//!             store write ──record──▶ leaves of B owned by (M, Apply)
//! other writes (manager U) ──record──▶ changed leaves owned by (U, Update),
//!                                      removed leaves forgotten
//! ```
//!
//! Simplifications, kept on purpose: ownership is tracked from an object's
//! first server-side apply on (objects only ever written by create/update
//! have no owners, so an apply never conflicts with them); leaves are
//! scalar values and lists (atomic), never maps;
//! ownership is held here rather than in `metadata.managedFields`, so no
//! client sees a new field in objects; an apply does not remove fields the
//! same manager applied before and has now left out.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;

/// Whether a manager wrote with server-side apply or with any other write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Apply,
    Update,
}

/// One field manager and how it wrote.
pub type Manager = (String, Operation);

/// A path of map keys from the object root to a leaf.
pub type FieldPath = Vec<String>;

/// Owners of one object's fields.
#[derive(Debug, Default, Clone)]
pub struct Owners {
    /// The object's uid: a recreated object starts without owners.
    uid: String,
    fields: BTreeMap<FieldPath, BTreeSet<Manager>>,
}

/// Owners of every object that was ever server-side applied, keyed by
/// `group/resource/namespace/name`.
#[derive(Debug, Default)]
pub struct FieldOwners {
    objects: HashMap<String, Owners>,
}

/// Fields an apply would take from other managers: `(path, manager)`.
pub type Conflicts = Vec<(String, String)>;

impl FieldOwners {
    fn current(&self, key: &str, uid: &str) -> Option<&Owners> {
        self.objects.get(key).filter(|o| o.uid == uid)
    }

    /// Fields of `applied` whose value differs in `live` and that a manager
    /// other than (`manager`, Apply) owns.
    pub fn check_apply(
        &self,
        key: &str,
        live: &Value,
        applied: &Value,
        manager: &str,
    ) -> Conflicts {
        let Some(owners) = self.current(key, uid_of(live)) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (path, value) in leaves(applied) {
            if lookup(live, &path) == Some(&value) {
                continue;
            }
            for (path_owned, managers) in &owners.fields {
                if !overlaps(path_owned, &path) {
                    continue;
                }
                for (name, op) in managers {
                    if !(name == manager && *op == Operation::Apply) {
                        out.push((dotted(path_owned), name.clone()));
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Records a successful apply: `manager` owns every leaf of `applied`,
    /// alone where the value changed, shared where it already was the same.
    pub fn record_apply(
        &mut self,
        key: &str,
        old: Option<&Value>,
        new: &Value,
        applied: &Value,
        manager: &str,
    ) {
        let uid = uid_of(new).to_string();
        let owners = self.objects.entry(key.to_string()).or_default();
        if owners.uid != uid {
            *owners = Owners {
                uid,
                fields: BTreeMap::new(),
            };
        }
        let me: Manager = (manager.to_string(), Operation::Apply);
        for (path, value) in leaves(applied) {
            let unchanged = old.and_then(|o| lookup(o, &path)) == Some(&value);
            if !unchanged {
                owners.fields.retain(|p, _| !overlaps(p, &path));
            }
            owners.fields.entry(path).or_default().insert(me.clone());
        }
        owners.forget_missing(new);
    }

    /// Records any other successful write on an object that has owners:
    /// changed leaves move to (`manager`, Update), removed ones are dropped.
    pub fn record_update(&mut self, key: &str, old: &Value, new: &Value, manager: &str) {
        let Some(owners) = self.objects.get_mut(key) else {
            return;
        };
        if owners.uid != uid_of(new) {
            self.objects.remove(key);
            return;
        }
        let me: Manager = (manager.to_string(), Operation::Update);
        for (path, value) in leaves(new) {
            if lookup(old, &path) != Some(&value) {
                owners.fields.retain(|p, _| !overlaps(p, &path));
                owners.fields.entry(path).or_default().insert(me.clone());
            }
        }
        owners.forget_missing(new);
    }

    /// Drops the owners of a deleted object.
    pub fn forget(&mut self, key: &str) {
        self.objects.remove(key);
    }
}

impl Owners {
    /// Forgets paths that no longer exist or are no longer leaves.
    fn forget_missing(&mut self, obj: &Value) {
        self.fields
            .retain(|p, _| lookup(obj, p).is_some_and(|v| !v.is_object()));
    }
}

/// Server-managed and identifying fields nobody owns.
fn unowned(path: &[String]) -> bool {
    match path {
        [one] => one == "apiVersion" || one == "kind" || one == "status",
        [m, field] if m == "metadata" => matches!(
            field.as_str(),
            "name"
                | "namespace"
                | "uid"
                | "resourceVersion"
                | "generation"
                | "creationTimestamp"
                | "deletionTimestamp"
                | "deletionGracePeriodSeconds"
                | "managedFields"
        ),
        _ => false,
    }
}

/// Every leaf of a document with its path; maps are walked (an empty map
/// has no leaves), anything else, lists included, is a leaf.
pub fn leaves(v: &Value) -> Vec<(FieldPath, Value)> {
    fn walk(v: &Value, path: &mut FieldPath, out: &mut Vec<(FieldPath, Value)>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    path.push(k.clone());
                    if !unowned(path) {
                        walk(x, path, out);
                    }
                    path.pop();
                }
            }
            _ => out.push((path.clone(), v.clone())),
        }
    }
    let mut out = Vec::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

fn lookup<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.as_object()?.get(k))
}

/// One path is a prefix of the other (or they are equal).
fn overlaps(a: &[String], b: &[String]) -> bool {
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

fn uid_of(v: &Value) -> &str {
    v["metadata"]["uid"].as_str().unwrap_or_default()
}

/// `.spec.holderIdentity`, as the API server prints field paths.
pub fn dotted(path: &[String]) -> String {
    path.iter().map(|p| format!(".{p}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lease(holder: Option<&str>) -> Value {
        let mut v = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "l", "namespace": "d", "uid": "u1", "resourceVersion": "3"},
            "spec": {}});
        if let Some(h) = holder {
            v["spec"]["holderIdentity"] = json!(h);
        }
        v
    }

    fn apply_body(holder: &str) -> Value {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "l"}, "spec": {"holderIdentity": holder}})
    }

    #[test]
    fn a_second_manager_conflicts_on_a_changed_field_only() {
        let mut f = FieldOwners::default();
        let before = lease(None);
        assert!(
            f.check_apply("k", &before, &apply_body("a"), "ma")
                .is_empty()
        );
        let after = lease(Some("a"));
        f.record_apply("k", Some(&before), &after, &apply_body("a"), "ma");
        assert_eq!(
            f.check_apply("k", &after, &apply_body("b"), "mb"),
            vec![(".spec.holderIdentity".to_string(), "ma".to_string())]
        );
        // Same value: shared ownership, no conflict; the owner itself never conflicts.
        assert!(
            f.check_apply("k", &after, &apply_body("a"), "mb")
                .is_empty()
        );
        assert!(
            f.check_apply("k", &after, &apply_body("z"), "ma")
                .is_empty()
        );
    }

    #[test]
    fn an_update_takes_or_drops_ownership() {
        let mut f = FieldOwners::default();
        let before = lease(None);
        let after = lease(Some("a"));
        f.record_apply("k", Some(&before), &after, &apply_body("a"), "ma");
        // Removing the field (a release) leaves nothing to conflict with.
        f.record_update("k", &after, &before, "ma");
        assert!(
            f.check_apply("k", &before, &apply_body("b"), "mb")
                .is_empty()
        );
        // A changed value now belongs to the updater, and an apply conflicts with it.
        f.record_apply("k", Some(&before), &after, &apply_body("a"), "ma");
        let taken = lease(Some("c"));
        f.record_update("k", &after, &taken, "mc");
        assert_eq!(
            f.check_apply("k", &taken, &apply_body("a"), "ma"),
            vec![(".spec.holderIdentity".to_string(), "mc".to_string())]
        );
    }

    #[test]
    fn a_recreated_object_has_no_owners() {
        let mut f = FieldOwners::default();
        let after = lease(Some("a"));
        f.record_apply("k", None, &after, &apply_body("a"), "ma");
        let mut again = lease(Some("a"));
        again["metadata"]["uid"] = json!("u2");
        assert!(
            f.check_apply("k", &again, &apply_body("b"), "mb")
                .is_empty()
        );
    }

    #[test]
    fn identity_and_server_fields_are_not_leaves() {
        let paths: Vec<String> = leaves(&lease(Some("a")))
            .into_iter()
            .map(|(p, _)| dotted(&p))
            .collect();
        assert_eq!(paths, vec![".spec.holderIdentity"]);
    }
}
