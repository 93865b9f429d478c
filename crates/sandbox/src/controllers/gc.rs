//! Garbage collection through `ownerReferences`, after
//! kube-controller-manager's garbage collector, and the API server's side
//! of `DeleteOptions.propagationPolicy`.
//!
//! - **Background** (the default for most resources): the owner goes at
//!   once; the collector then deletes every dependent whose owners are all
//!   gone (a dependent with another live owner only loses the reference).
//! - **Foreground**: the API server marks the owner (`deletionTimestamp`,
//!   finalizer `foregroundDeletion`); the collector deletes its dependents
//!   (in the foreground too when they have dependents of their own) and
//!   removes the finalizer once no dependent with `blockOwnerDeletion`
//!   remains, which deletes the owner.
//! - **Orphan** (`--cascade=orphan`, `orphanDependents: true`, and the
//!   default for core/v1 ReplicationControllers and batch/v1 Jobs, as in
//!   kube-apiserver): finalizer `orphan`; the collector removes the owner's
//!   references from its dependents, then the finalizer.
//!
//! The collector keeps an index owner uid → dependents, built from the
//! event stream (objects without `ownerReferences` are skipped with a byte
//! search, so unrelated writes cost little) and rebuilt on resync.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::{Value, json};

use super::{delete, get, update};
use crate::error::ApiError;
use crate::handlers::State;
use crate::meta::meta_str;
use crate::resources::{ResKey, ResourceInfo};
use crate::store::{Event, EventType, Obj};

/// Finalizer of a foreground deletion.
pub const FOREGROUND: &str = "foregroundDeletion";
/// Finalizer of an orphaning deletion.
pub const ORPHAN: &str = "orphan";

/// `DeleteOptions.propagationPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Delete the object now, its dependents afterwards.
    Background,
    /// Delete the dependents first, then the object.
    Foreground,
    /// Keep the dependents, without the reference to the object.
    Orphan,
}

/// The policy of a DELETE: `propagationPolicy` or the deprecated
/// `orphanDependents` from the body or query, else the resource's default.
pub fn policy(
    info: &ResourceInfo,
    version: &str,
    body: Option<&Value>,
    query: &crate::handlers::Query,
) -> Result<Propagation, ApiError> {
    let from_body = body.and_then(|b| b["propagationPolicy"].as_str().map(str::to_string));
    let named = from_body.or_else(|| query.get("propagationPolicy").map(str::to_string));
    let orphan = body
        .and_then(|b| b["orphanDependents"].as_bool())
        .or_else(|| query.get("orphanDependents").map(|v| v == "true"));
    let invalid =
        |msg: String| ApiError::invalid_field("", "DeleteOptions", "", "propagationPolicy", msg);
    match (named.as_deref(), orphan) {
        (Some(_), Some(_)) => Err(invalid(
            "Invalid value: \"orphanDependents\": orphanDependents and deletionPropagation cannot be both set"
                .into(),
        )),
        (Some("Background"), None) => Ok(Propagation::Background),
        (Some("Foreground"), None) => Ok(Propagation::Foreground),
        (Some("Orphan"), None) => Ok(Propagation::Orphan),
        (Some(other), None) => Err(invalid(format!(
            "Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
        ))),
        (None, Some(true)) => Ok(Propagation::Orphan),
        (None, Some(false)) => Ok(Propagation::Background),
        (None, None) => Ok(default_policy(info, version)),
    }
}

/// The resource's default: kube-apiserver orphans for core/v1
/// ReplicationControllers and batch/v1 Jobs (for backwards compatibility).
pub fn default_policy(info: &ResourceInfo, version: &str) -> Propagation {
    match (info.group.as_str(), info.resource.as_str(), version) {
        ("", "replicationcontrollers", "v1") | ("batch", "jobs", "v1") => Propagation::Orphan,
        _ => Propagation::Background,
    }
}

/// Adds the finalizer a Foreground or Orphan deletion needs (the other
/// one is replaced). Returns whether the object changed.
pub fn add_finalizer(v: &mut Value, policy: Propagation) -> bool {
    let (want, other) = match policy {
        Propagation::Background => return false,
        Propagation::Foreground => (FOREGROUND, ORPHAN),
        Propagation::Orphan => (ORPHAN, FOREGROUND),
    };
    let m = crate::meta::meta_mut(v);
    let fins = m.entry("finalizers").or_insert_with(|| json!([]));
    let Some(list) = fins.as_array_mut() else {
        return false;
    };
    let before = list.len();
    list.retain(|f| f != other);
    let had = list.iter().any(|f| f == want);
    if !had {
        list.push(json!(want));
    }
    !had || list.len() != before
}

/// An object in the store: resource, namespace, name.
pub type Ref = (ResKey, String, String);

/// An owner reference as indexed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owner {
    api_version: String,
    kind: String,
    name: String,
    uid: String,
    block: bool,
}

/// Work of the collector.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Item {
    /// Check a dependent's owners: delete it when none is left.
    Dependent(Ref),
    /// An owner being deleted with a collector finalizer, by apiVersion,
    /// kind, namespace and name.
    Owner(String, String, String, String),
}

/// The garbage collector.
#[derive(Debug, Default)]
pub struct GarbageCollector {
    /// owner uid → dependents.
    dependents: HashMap<String, HashSet<Ref>>,
    /// dependent → its owner references.
    owners: HashMap<Ref, Vec<Owner>>,
}

fn has_owner_refs(o: &Obj) -> bool {
    memchr::memmem::find(&o.bytes, b"\"ownerReferences\"").is_some()
}

fn has_gc_finalizer(o: &Obj) -> bool {
    memchr::memmem::find(&o.bytes, b"\"deletionTimestamp\"").is_some()
        && (memchr::memmem::find(&o.bytes, b"\"foregroundDeletion\"").is_some()
            || memchr::memmem::find(&o.bytes, b"\"orphan\"").is_some())
}

fn owners_of(v: &Value) -> Vec<Owner> {
    v["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| Owner {
            api_version: r["apiVersion"].as_str().unwrap_or_default().to_string(),
            kind: r["kind"].as_str().unwrap_or_default().to_string(),
            name: r["name"].as_str().unwrap_or_default().to_string(),
            uid: r["uid"].as_str().unwrap_or_default().to_string(),
            block: r["blockOwnerDeletion"] == true,
        })
        .collect()
}

fn finalizers(v: &Value) -> Vec<&str> {
    v["metadata"]["finalizers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

impl GarbageCollector {
    fn index(&mut self, r: Ref, owners: Vec<Owner>) {
        self.unindex(&r);
        if owners.is_empty() {
            return;
        }
        for o in &owners {
            self.dependents
                .entry(o.uid.clone())
                .or_default()
                .insert(r.clone());
        }
        self.owners.insert(r, owners);
    }

    fn unindex(&mut self, r: &Ref) -> Vec<Owner> {
        let old = self.owners.remove(r).unwrap_or_default();
        for o in &old {
            if let Some(set) = self.dependents.get_mut(&o.uid) {
                set.remove(r);
                if set.is_empty() {
                    self.dependents.remove(&o.uid);
                }
            }
        }
        old
    }

    fn owner_item(v: &Value, ns: &str) -> Item {
        Item::Owner(
            v["apiVersion"].as_str().unwrap_or_default().to_string(),
            v["kind"].as_str().unwrap_or_default().to_string(),
            ns.to_string(),
            meta_str(v, "name").to_string(),
        )
    }

    fn queue_dependents(&self, uid: &str, out: &mut Vec<Item>) {
        for d in self.dependents.get(uid).into_iter().flatten() {
            out.push(Item::Dependent(d.clone()));
        }
    }
}

impl super::Controller for GarbageCollector {
    type Key = Item;

    fn keys_for(&mut self, ev: &Event, out: &mut Vec<Item>) {
        let o = &ev.obj;
        let r: Ref = (ev.key.clone(), o.namespace.clone(), o.name.clone());
        match ev.kind {
            EventType::Deleted => {
                let v = o.value();
                for owner in self.unindex(&r) {
                    // An owner waiting for its dependents re-checks.
                    out.push(Item::Owner(
                        owner.api_version,
                        owner.kind,
                        o.namespace.clone(),
                        owner.name,
                    ));
                }
                self.queue_dependents(meta_str(&v, "uid"), out);
            }
            EventType::Added | EventType::Modified => {
                let had = ev.prev.as_ref().is_some_and(|p| has_owner_refs(p));
                if has_owner_refs(o) {
                    let v = o.value();
                    let owners = owners_of(&v);
                    let changed = self.owners.get(&r) != Some(&owners);
                    self.index(r.clone(), owners);
                    if changed {
                        out.push(Item::Dependent(r.clone()));
                    }
                } else if had {
                    self.unindex(&r);
                }
                if has_gc_finalizer(o) {
                    let v = o.value();
                    if super::deleting(&v) {
                        out.push(Self::owner_item(&v, &o.namespace));
                    }
                }
            }
        }
    }

    fn all_keys(&mut self, st: &State, out: &mut Vec<Item>) {
        self.dependents.clear();
        self.owners.clear();
        for (g, versions) in st.registry.groups() {
            let mut seen = HashSet::new();
            for v in versions {
                for info in st.registry.resources_in(&g, &v) {
                    if !seen.insert(info.key()) {
                        continue;
                    }
                    for o in st.store.table(&info.key()).values() {
                        let r: Ref = (info.key(), o.namespace.clone(), o.name.clone());
                        if has_owner_refs(o) {
                            let v = o.value();
                            self.index(r.clone(), owners_of(&v));
                            out.push(Item::Dependent(r));
                        }
                        if has_gc_finalizer(o) {
                            let v = o.value();
                            if super::deleting(&v) {
                                out.push(Self::owner_item(&v, &o.namespace));
                            }
                        }
                    }
                }
            }
        }
    }

    fn reconcile(&mut self, st: &mut State, item: &Item, more: &mut Vec<Item>) -> Option<Duration> {
        match item {
            Item::Dependent(r) => self.attempt_delete(st, r),
            Item::Owner(av, kind, ns, name) => {
                let (info, _) = st.registry.by_kind(av, kind)?;
                let ns = if info.namespaced { ns.as_str() } else { "" };
                let v = get(st, &info.group, &info.resource, ns, name)?;
                self.process_deleting(st, &info, &v, more)
            }
        }
    }
}

/// How an owner reference stands.
enum Standing {
    /// Exists and is not waiting for its dependents.
    Solid,
    /// Gone (or replaced by an object with another uid).
    Dangling,
    /// Being deleted in the foreground.
    Waiting,
}

fn standing(st: &State, dependent_ns: &str, o: &Owner) -> Standing {
    let Some((info, _)) = st.registry.by_kind(&o.api_version, &o.kind) else {
        // An owner of a kind nobody serves cannot be checked: keep.
        return Standing::Solid;
    };
    let ns = if info.namespaced { dependent_ns } else { "" };
    let Some(owner) = st.store.get(&info.key(), ns, &o.name) else {
        return Standing::Dangling;
    };
    let v = owner.value();
    if meta_str(&v, "uid") != o.uid {
        return Standing::Dangling;
    }
    if super::deleting(&v) && finalizers(&v).contains(&FOREGROUND) {
        Standing::Waiting
    } else {
        Standing::Solid
    }
}

impl GarbageCollector {
    fn attempt_delete(&mut self, st: &mut State, r: &Ref) -> Option<Duration> {
        let (key, ns, name) = r;
        let v = get(st, &key.0, &key.1, ns, name)?;
        let owners = owners_of(&v);
        if owners.is_empty() {
            return None;
        }
        let (mut solid, mut gone) = (0, Vec::new());
        let mut waiting = 0;
        for o in &owners {
            match standing(st, ns, o) {
                Standing::Solid => solid += 1,
                Standing::Dangling => gone.push(o.uid.clone()),
                Standing::Waiting => {
                    waiting += 1;
                    gone.push(o.uid.clone());
                }
            }
        }
        if solid > 0 {
            if !gone.is_empty() {
                // Keep the object, drop the references that no longer hold.
                let mut new = v.clone();
                if let Some(refs) = new["metadata"]["ownerReferences"].as_array_mut() {
                    refs.retain(|x| !gone.iter().any(|g| x["uid"] == g.as_str()));
                }
                let _ = update(st, &key.0, &key.1, &new);
            }
            return None;
        }
        if super::deleting(&v) {
            return None;
        }
        let uid = meta_str(&v, "uid");
        let has_dependents = self.dependents.get(uid).is_some_and(|s| !s.is_empty());
        let fins = finalizers(&v);
        let policy = if waiting > 0 && has_dependents {
            Propagation::Foreground
        } else if fins.contains(&ORPHAN) {
            Propagation::Orphan
        } else if fins.contains(&FOREGROUND) {
            Propagation::Foreground
        } else {
            Propagation::Background
        };
        let _ = delete(st, &key.0, &key.1, ns, name, policy);
        None
    }

    fn process_deleting(
        &mut self,
        st: &mut State,
        info: &ResourceInfo,
        v: &Value,
        more: &mut Vec<Item>,
    ) -> Option<Duration> {
        if !super::deleting(v) {
            return None;
        }
        let fins = finalizers(v);
        let uid = meta_str(v, "uid").to_string();
        let deps: Vec<Ref> = self
            .dependents
            .get(&uid)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        let finalizer = if fins.contains(&ORPHAN) {
            for (key, ns, name) in &deps {
                let Some(mut d) = get(st, &key.0, &key.1, ns, name) else {
                    continue;
                };
                if let Some(refs) = d["metadata"]["ownerReferences"].as_array_mut() {
                    refs.retain(|x| x["uid"] != uid.as_str());
                }
                if update(st, &key.0, &key.1, &d).is_err() {
                    return Some(Duration::from_millis(100));
                }
            }
            ORPHAN
        } else if fins.contains(&FOREGROUND) {
            let mut blocking = false;
            for r in &deps {
                let (key, ns, name) = r;
                let Some(d) = get(st, &key.0, &key.1, ns, name) else {
                    continue;
                };
                let blocks = owners_of(&d).iter().any(|o| o.uid == uid && o.block);
                blocking |= blocks;
                if !super::deleting(&d) || blocks {
                    more.push(Item::Dependent(r.clone()));
                }
            }
            if blocking {
                return None;
            }
            FOREGROUND
        } else {
            return None;
        };
        let mut cur = get(
            st,
            &info.group,
            &info.resource,
            meta_str(v, "namespace"),
            meta_str(v, "name"),
        )?;
        if let Some(list) = cur["metadata"]["finalizers"].as_array_mut() {
            list.retain(|f| f != finalizer);
        }
        if update(st, &info.group, &info.resource, &cur).is_err() {
            return Some(Duration::from_millis(100));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finalizers_follow_the_policy() {
        let mut v = json!({"metadata": {"name": "a", "finalizers": ["orphan"]}});
        assert!(!add_finalizer(&mut v, Propagation::Background));
        assert!(add_finalizer(&mut v, Propagation::Foreground));
        assert_eq!(v["metadata"]["finalizers"], json!(["foregroundDeletion"]));
        assert!(!add_finalizer(&mut v, Propagation::Foreground));
    }
}
