//! Events, as the components of a real cluster record them (core/v1
//! `Event`): the scheduler, kubelet, controllers and the CSI driver call
//! [`record`] with the object the event is about. A repeat of the same
//! reason and message for the same object bumps `count` and
//! `lastTimestamp`, as the client-go event recorder's aggregation does.
//! `kubectl describe` finds them by the `involvedObject.*` field selector.

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
    let key: ResKey = (String::new(), "events".to_string());
    let obj_ns = meta_str(involved, "namespace");
    let ns = if obj_ns.is_empty() { "default" } else { obj_ns };
    let uid = meta_str(involved, "uid").to_string();
    let now = meta::now();
    let existing = st.store.table(&key).values().find_map(|o| {
        let v = o.value();
        (v["involvedObject"]["uid"] == json!(uid)
            && v["reason"] == json!(reason)
            && v["message"] == json!(message)
            && meta_str(&v, "namespace") == ns)
            .then_some(v)
    });
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
    st.store.put(&key, Obj::from_value(&ev));
}
