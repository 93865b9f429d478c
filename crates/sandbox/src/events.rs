//! Events, as the components of a real cluster record them (core/v1
//! `Event`): the scheduler, kubelet, controllers and the CSI driver call
//! [`record`] with the object the event is about. A repeat of the same
//! reason and message for the same object bumps `count` and
//! `lastTimestamp`, as the client-go event recorder's aggregation does.
//! `kubectl describe` finds them by the `involvedObject.*` field selector.
//!
//! Like client-go's `EventCorrelator`, the recorder remembers the events it
//! wrote in a bounded cache keyed by what makes two events the same
//! (component, involved object, type, reason, message), so a repeat finds
//! its event in O(1) instead of scanning every stored event: the scan made
//! each record cost O(events), and a thousand pods starting (four events
//! each) quadratic under the state lock. Events written by API clients are
//! not aggregated, as a real recorder only aggregates its own.

use std::collections::{HashMap, VecDeque};

use serde_json::{Value, json};

use crate::handlers::State;
use crate::meta::{self, meta_str};
use crate::resources::ResKey;
use crate::store::Obj;

/// `Normal` or `Warning`, the two event types Kubernetes defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Expected progress (Scheduled, Pulled, Started, ProvisioningSucceeded).
    Normal,
    /// Something a person may need to look at (FailedAttachVolume, BackOff).
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// How many aggregation keys the recorder remembers (client-go's
/// `maxLruCacheEntries`).
const CACHE: usize = 4096;

/// What makes two recorded events the same.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct AggKey {
    component: String,
    namespace: String,
    uid: String,
    kind: &'static str,
    reason: String,
    message: String,
}

/// The recorder's memory of the events it wrote: aggregation key → event
/// name, oldest forgotten first when full.
#[derive(Debug, Default)]
pub struct Recorder {
    names: HashMap<AggKey, String>,
    order: VecDeque<AggKey>,
}

impl Recorder {
    fn remember(&mut self, key: AggKey, name: String) {
        if self.names.insert(key.clone(), name).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > CACHE {
            if let Some(old) = self.order.pop_front() {
                self.names.remove(&old);
            }
        }
    }
}

impl AggKey {
    fn new(
        involved: &Value,
        kind: EventType,
        reason: &str,
        message: &str,
        component: &str,
    ) -> Self {
        let ns = match meta_str(involved, "namespace") {
            "" => "default",
            n => n,
        };
        AggKey {
            component: component.to_string(),
            namespace: ns.to_string(),
            uid: meta_str(involved, "uid").to_string(),
            kind: kind.as_str(),
            reason: reason.to_string(),
            message: message.to_string(),
        }
    }
}

fn events_key() -> ResKey {
    (String::new(), "events".to_string())
}

/// The stored event the recorder wrote for this key, unless a client
/// deleted it meanwhile.
fn remembered(st: &State, agg: &AggKey) -> Option<std::sync::Arc<Obj>> {
    let name = st.recorder.names.get(agg)?;
    st.store.get(&events_key(), &agg.namespace, name)
}

/// Records an event unless this recorder's event for the same object,
/// reason and message is still stored: for components that re-sync on
/// every change, where a re-sync that changes nothing must not write.
pub fn record_once(
    st: &mut State,
    involved: &Value,
    kind: EventType,
    reason: &str,
    message: &str,
    component: &str,
) {
    let agg = AggKey::new(involved, kind, reason, message, component);
    if remembered(st, &agg).is_none() {
        record(st, involved, kind, reason, message, component);
    }
}

/// Records an event about `involved` (any stored object) from `component`
/// (e.g. `default-scheduler`, `kubelet`, `persistentvolume-controller`).
pub fn record(
    st: &mut State,
    involved: &Value,
    kind: EventType,
    reason: &str,
    message: &str,
    component: &str,
) {
    let key = events_key();
    let obj_ns = meta_str(involved, "namespace");
    let ns = if obj_ns.is_empty() { "default" } else { obj_ns };
    let uid = meta_str(involved, "uid").to_string();
    let now = meta::now();
    let agg = AggKey::new(involved, kind, reason, message, component);
    let existing = remembered(st, &agg).map(|o| o.value());
    let mut ev = match existing {
        Some(mut v) => {
            let count = v["count"].as_u64().unwrap_or(1) + 1;
            v["count"] = json!(count);
            v["lastTimestamp"] = json!(now);
            v
        }
        None => {
            let name = format!("{}.{:016x}", meta_str(involved, "name"), fastrand::u64(..));
            json!({
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": name, "namespace": ns, "uid": meta::uid(),
                    "creationTimestamp": now},
                "involvedObject": {
                    "apiVersion": involved["apiVersion"],
                    "kind": involved["kind"],
                    "namespace": obj_ns,
                    "name": meta_str(involved, "name"),
                    "uid": uid,
                    "resourceVersion": meta_str(involved, "resourceVersion"),
                },
                "reason": reason,
                "message": message,
                "type": kind.as_str(),
                "source": {"component": component},
                "reportingComponent": component,
                "reportingInstance": "",
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
            })
        }
    };
    meta::meta_mut(&mut ev).insert(
        "resourceVersion".into(),
        json!(st.store.next_rv().to_string()),
    );
    st.recorder.remember(agg, meta_str(&ev, "name").to_string());
    st.store.put(&key, Obj::from_value(&ev));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(dir: &std::path::Path) -> State {
        State {
            store: crate::store::Store::new(1000),
            registry: crate::resources::Registry::builtin(),
            deferred: Vec::new(),
            ca_pem: String::new(),
            fields: crate::fields::FieldOwners::default(),
            csi: crate::csi::Driver::new(dir.to_path_buf(), Vec::new()),
            warnings: Vec::new(),
            recorder: Recorder::default(),
        }
    }

    fn events(st: &State) -> Vec<Value> {
        st.store
            .table(&events_key())
            .values()
            .map(|o| o.value())
            .collect()
    }

    fn backoff(st: &mut State, pod: &Value) {
        record(st, pod, EventType::Warning, "BackOff", "again", "kubelet");
    }

    fn find_backoff(st: &State) -> Value {
        events(st)
            .into_iter()
            .find(|e| e["reason"] == "BackOff")
            .expect("BackOff")
    }

    #[test]
    fn repeats_aggregate_and_a_deleted_event_starts_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut st = state(dir.path());
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"namespace": "ns", "name": "p", "uid": "u1", "resourceVersion": "5"}});
        for _ in 0..3 {
            backoff(&mut st, &pod);
        }
        let pulled = |st: &mut State, once: bool| {
            let f = if once { record_once } else { record };
            f(st, &pod, EventType::Normal, "Pulled", "pulled", "kubelet");
        };
        pulled(&mut st, false);
        let evs = events(&st);
        assert_eq!(evs.len(), 2, "{evs:#?}");
        let first = find_backoff(&st);
        assert_eq!(first["count"], 3);
        assert_eq!(first["involvedObject"]["uid"], "u1");
        // Already recorded: record_once writes nothing.
        pulled(&mut st, true);
        assert_eq!(events(&st).len(), 2);
        // A client deleted the event: the next repeat is a new event.
        let rv = st.store.next_rv();
        let mut last = first.clone();
        last["metadata"]["resourceVersion"] = json!(rv.to_string());
        st.store.remove(&events_key(), Obj::from_value(&last));
        backoff(&mut st, &pod);
        assert_eq!(find_backoff(&st)["count"], 1);
        assert_eq!(events(&st).len(), 2);
    }
}
