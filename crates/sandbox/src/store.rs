//! The object store: one ordered map per resource, a global
//! resourceVersion counter, a bounded event history and a broadcast channel
//! for watchers.
//!
//! ```text
//!  write ──▶ Store::put/remove ──▶ table (imbl::OrdMap, keyed (namespace, name))
//!                                ├─▶ history (VecDeque, bounded: watch resume / 410 Gone)
//!                                └─▶ broadcast ──▶ watch streams
//!  list  ──▶ table snapshot (O(1) clone) ──▶ pages pinned by continue tokens
//! ```
//!
//! Objects are kept as their serialized JSON bytes ([`Obj::bytes`]) plus the
//! few fields the server filters on, so lists and watches write stored bytes
//! straight into responses without re-serialising. The caller holds the
//! state lock for the whole read-modify-write, so resourceVersions are
//! assigned in commit order.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::broadcast;

use crate::resources::ResKey;

/// A stored object.
#[derive(Debug)]
pub struct Obj {
    /// The serialized object as served.
    pub bytes: Bytes,
    /// `metadata.namespace` (empty when cluster-scoped).
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.resourceVersion`.
    pub rv: u64,
    /// `metadata.labels`.
    pub labels: Vec<(String, String)>,
    /// `apiVersion` it was stored with.
    pub api_version: String,
    /// The controller reference (`ownerReferences` entry with
    /// `controller: true`), kept parsed as an informer's index would be:
    /// controllers match children to owners on every event and reconcile.
    pub controller: Option<ControllerRef>,
}

/// An object's controller reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerRef {
    /// `kind` of the owner.
    pub kind: String,
    /// `name` of the owner.
    pub name: String,
    /// `uid` of the owner.
    pub uid: String,
}

impl Obj {
    /// Builds a stored object from its final JSON form.
    pub fn from_value(v: &Value) -> Arc<Obj> {
        let meta = &v["metadata"];
        let s = |x: &Value| x.as_str().unwrap_or_default().to_string();
        let labels = meta["labels"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), s(v))).collect())
            .unwrap_or_default();
        Arc::new(Obj {
            bytes: Bytes::from(serde_json::to_vec(v).unwrap_or_default()),
            namespace: s(&meta["namespace"]),
            name: s(&meta["name"]),
            rv: meta["resourceVersion"]
                .as_str()
                .and_then(|r| r.parse().ok())
                .unwrap_or(0),
            labels,
            api_version: s(&v["apiVersion"]),
            controller: meta["ownerReferences"]
                .as_array()
                .and_then(|refs| refs.iter().find(|r| r["controller"] == true))
                .map(|r| ControllerRef {
                    kind: s(&r["kind"]),
                    name: s(&r["name"]),
                    uid: s(&r["uid"]),
                }),
        })
    }

    /// The object as JSON.
    pub fn value(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }

    /// A label's value.
    pub fn label(&self, k: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
}

/// One resource's objects keyed by (namespace, name).
pub type Table = imbl::OrdMap<(String, String), Arc<Obj>>;

/// Watch event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Removed.
    Deleted,
}

/// A change to one object.
#[derive(Debug)]
pub struct Event {
    /// Which resource.
    pub key: ResKey,
    /// What happened.
    pub kind: EventType,
    /// The object after the change (for deletes: its last state, with the
    /// deletion's resourceVersion).
    pub obj: Arc<Obj>,
    /// The object before the change (for modifications).
    pub prev: Option<Arc<Obj>>,
}

/// All objects, the resourceVersion counter and the event history.
#[derive(Debug)]
pub struct Store {
    tables: HashMap<ResKey, Table>,
    rv: u64,
    history: VecDeque<Arc<Event>>,
    history_cap: usize,
    /// Oldest resourceVersion a watch may start from.
    compacted: u64,
    tx: broadcast::Sender<Arc<Event>>,
    snapshots: VecDeque<(ResKey, u64, Table)>,
}

/// How many pinned list snapshots are kept for continue tokens.
const SNAPSHOTS: usize = 64;

impl Store {
    /// An empty store keeping `history_cap` events for watch resumption.
    pub fn new(history_cap: usize) -> Self {
        let (tx, _) = broadcast::channel(16_384);
        Store {
            tables: HashMap::new(),
            rv: 1,
            history: VecDeque::new(),
            history_cap: history_cap.max(1),
            compacted: 1,
            tx,
            snapshots: VecDeque::new(),
        }
    }

    /// The current (latest committed) resourceVersion.
    pub fn rv(&self) -> u64 {
        self.rv
    }

    /// The resourceVersion the next write gets.
    pub fn next_rv(&self) -> u64 {
        self.rv + 1
    }

    /// The oldest resourceVersion a watch can resume from.
    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    /// Subscribes to future events.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    /// Events after `rv` for a resource, from the history.
    pub fn events_since(&self, key: &ResKey, rv: u64) -> Vec<Arc<Event>> {
        let start = self.history.partition_point(|e| e.obj.rv <= rv);
        self.history
            .range(start..)
            .filter(|e| &e.key == key)
            .cloned()
            .collect()
    }

    /// One object.
    pub fn get(&self, key: &ResKey, ns: &str, name: &str) -> Option<Arc<Obj>> {
        self.tables
            .get(key)?
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    /// The live table of a resource (an O(1) snapshot).
    pub fn table(&self, key: &ResKey) -> Table {
        self.tables.get(key).cloned().unwrap_or_default()
    }

    /// Pins the table of a resource at the current resourceVersion for
    /// paging; returns that resourceVersion.
    pub fn pin(&mut self, key: &ResKey) -> u64 {
        let rv = self.rv;
        if !self.snapshots.iter().any(|(k, r, _)| k == key && *r == rv) {
            if self.snapshots.len() >= SNAPSHOTS {
                self.snapshots.pop_front();
            }
            self.snapshots.push_back((key.clone(), rv, self.table(key)));
        }
        rv
    }

    /// A pinned snapshot.
    pub fn pinned(&self, key: &ResKey, rv: u64) -> Option<Table> {
        self.snapshots
            .iter()
            .find(|(k, r, _)| k == key && *r == rv)
            .map(|(_, _, t)| t.clone())
    }

    /// Inserts or replaces an object; its resourceVersion must be `next_rv()`.
    pub fn put(&mut self, key: &ResKey, obj: Arc<Obj>) {
        let table = self.tables.entry(key.clone()).or_default();
        let prev = table.insert((obj.namespace.clone(), obj.name.clone()), obj.clone());
        let kind = if prev.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.commit(Event {
            key: key.clone(),
            kind,
            obj,
            prev,
        });
    }

    /// Removes an object; `last` is its final state carrying `next_rv()`.
    pub fn remove(&mut self, key: &ResKey, last: Arc<Obj>) {
        let prev = self
            .tables
            .get_mut(key)
            .and_then(|t| t.remove(&(last.namespace.clone(), last.name.clone())));
        self.commit(Event {
            key: key.clone(),
            kind: EventType::Deleted,
            obj: last,
            prev,
        });
    }

    /// Drops a whole resource's table (CRD deletion) without events.
    pub fn drop_table(&mut self, key: &ResKey) {
        self.tables.remove(key);
    }

    fn commit(&mut self, ev: Event) {
        self.rv = self.rv.max(ev.obj.rv);
        let ev = Arc::new(ev);
        if self.history.len() >= self.history_cap
            && let Some(old) = self.history.pop_front()
        {
            self.compacted = old.obj.rv;
        }
        self.history.push_back(ev.clone());
        let _ = self.tx.send(ev);
    }

    /// Number of objects of all resources.
    pub fn len(&self) -> usize {
        self.tables.values().map(imbl::OrdMap::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(ns: &str, name: &str, rv: u64) -> Arc<Obj> {
        Obj::from_value(&json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"namespace": ns, "name": name, "resourceVersion": rv.to_string(), "labels": {"a": "b"}}}))
    }

    #[test]
    fn the_controller_reference_is_kept_parsed() {
        let o = Obj::from_value(&json!({"metadata": {"name": "p", "ownerReferences": [
            {"kind": "Node", "name": "n", "uid": "u0"},
            {"kind": "ReplicaSet", "name": "rs", "uid": "u1", "controller": true}]}}));
        let c = o.controller.as_ref().expect("a controller");
        assert_eq!(
            (c.kind.as_str(), c.name.as_str(), c.uid.as_str()),
            ("ReplicaSet", "rs", "u1")
        );
        let o = Obj::from_value(&json!({"metadata": {"name": "p", "ownerReferences": [
            {"kind": "Node", "name": "n", "uid": "u0", "controller": false}]}}));
        assert!(o.controller.is_none());
    }

    #[test]
    fn history_is_bounded_and_compacts() {
        let mut s = Store::new(2);
        let key = (String::new(), "configmaps".to_string());
        for i in 0..3 {
            let rv = s.next_rv();
            s.put(&key, obj("ns", &format!("c{i}"), rv));
        }
        assert_eq!(s.rv(), 4);
        assert_eq!(s.compacted(), 2);
        assert_eq!(s.events_since(&key, 2).len(), 2);
        assert_eq!(s.get(&key, "ns", "c1").unwrap().label("a"), Some("b"));
        let pinned = s.pin(&key);
        let rv = s.next_rv();
        s.remove(&key, obj("ns", "c1", rv));
        assert_eq!(s.pinned(&key, pinned).unwrap().len(), 3);
        assert_eq!(s.table(&key).len(), 2);
    }
}
