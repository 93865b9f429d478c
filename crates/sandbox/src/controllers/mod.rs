//! kube-controller-manager for the simulated cluster: the workload
//! controllers and the garbage collector, each a background task fed by the
//! store's event stream.
//!
//! ```text
//!  Store::put/remove ──broadcast──▶ runner (one task per controller)
//!                                    │ keys_for(event) ─▶ work queue (deduplicated)
//!                                    │ resync on start and after falling behind
//!                                    ▼
//!              lock State ─▶ reconcile(key) ─▶ writes through handlers (create,
//!                                              update, status, delete) ─▶ new events
//! ```
//!
//! Controllers are level-triggered as the real ones are: a reconcile reads
//! the current objects under the state lock and writes only what differs, so
//! a reconcile of an object already in its desired state writes nothing and
//! the loop comes to rest. A runner sleeps until an event or a requested
//! requeue time arrives and stops when the sandbox shuts down. Controllers
//! never write pod `status`: the kubelet owns it.
//!
//! Writes go through the same handler functions as API requests (validation,
//! behaviours, resourceVersions, generation, finalizers) with field manager
//! `kube-controller-manager`; they are not in the request log, which records
//! what clients asked for.

pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod gc;
pub mod job;
pub mod replicaset;
pub mod statefulset;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::error::ApiError;
use crate::handlers::{self, CreateOpts, Ctx, Query, State};
use crate::meta::meta_str;
use crate::resources::{ResKey, ResourceInfo};
use crate::server::{self, Shared};
use crate::store::{Event, Obj};

/// The field manager and event source of every controller write.
pub const MANAGER: &str = "kube-controller-manager";

/// How many keys one lock hold reconciles before the lock is released.
const BATCH: usize = 128;

/// A controller: maps store events to the keys it reconciles and brings
/// one key at a time to its desired state.
pub trait Controller: Send + 'static {
    /// What the controller reconciles (usually namespace and name).
    type Key: Clone + Eq + Hash + Ord + Send + std::fmt::Debug;

    /// Keys that need reconciling because of this change.
    fn keys_for(&mut self, ev: &Event, out: &mut Vec<Self::Key>);

    /// Every key (resync on start and after the event stream lagged).
    fn all_keys(&mut self, st: &State, out: &mut Vec<Self::Key>);

    /// Reconciles one key; may queue more keys; `Some(d)` requeues the key
    /// after `d` (timers: schedules, progress deadlines).
    fn reconcile(
        &mut self,
        st: &mut State,
        key: &Self::Key,
        more: &mut Vec<Self::Key>,
    ) -> Option<Duration>;
}

/// Starts every controller on the current runtime.
pub fn spawn_all(shared: &Arc<Shared>) {
    spawn(shared, replicaset::REPLICASETS);
    spawn(shared, deployment::DEPLOYMENTS);
    spawn(shared, statefulset::STATEFULSETS);
    spawn(shared, daemonset::DAEMONSETS);
    spawn(shared, job::JOBS);
    spawn(shared, cronjob::CRONJOBS);
    spawn(shared, gc::GarbageCollector::default());
}

/// A deduplicated FIFO of keys.
struct Queue<K> {
    order: VecDeque<K>,
    set: HashSet<K>,
}

impl<K: Clone + Eq + Hash> Queue<K> {
    fn new() -> Self {
        Queue {
            order: VecDeque::new(),
            set: HashSet::new(),
        }
    }
    fn push(&mut self, k: K) {
        if self.set.insert(k.clone()) {
            self.order.push_back(k);
        }
    }
    fn pop(&mut self) -> Option<K> {
        let k = self.order.pop_front()?;
        self.set.remove(&k);
        Some(k)
    }
    fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

fn spawn<C: Controller>(shared: &Arc<Shared>, mut ctrl: C) {
    let shared = shared.clone();
    // Subscribing and listing under one lock hold: no event is missed.
    let (mut rx, first) = {
        let st = shared.state.lock().expect("state lock");
        let mut keys = Vec::new();
        ctrl.all_keys(&st, &mut keys);
        (st.store.subscribe(), keys)
    };
    let mut stop = shared.shutdown.subscribe();
    tokio::spawn(async move {
        let mut queue = Queue::new();
        let mut timers: BTreeMap<C::Key, Instant> = BTreeMap::new();
        for k in first {
            queue.push(k);
        }
        let mut keys = Vec::new();
        loop {
            if *stop.borrow() {
                return;
            }
            if queue.is_empty() {
                let next = timers.values().min().copied();
                let sleep = async {
                    match next {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    ev = rx.recv() => match ev {
                        Ok(ev) => ctrl.keys_for(&ev, &mut keys),
                        Err(broadcast::error::RecvError::Lagged(_)) => resync(&shared, &mut ctrl, &mut keys),
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    () = sleep => {}
                    _ = stop.changed() => return,
                }
            }
            // Take whatever else has arrived without waiting.
            loop {
                match rx.try_recv() {
                    Ok(ev) => ctrl.keys_for(&ev, &mut keys),
                    Err(broadcast::error::TryRecvError::Lagged(_)) => {
                        resync(&shared, &mut ctrl, &mut keys);
                    }
                    Err(broadcast::error::TryRecvError::Empty) => break,
                    Err(broadcast::error::TryRecvError::Closed) => return,
                }
            }
            let now = Instant::now();
            let due: Vec<C::Key> = timers
                .iter()
                .filter(|(_, t)| **t <= now)
                .map(|(k, _)| k.clone())
                .collect();
            for k in due {
                timers.remove(&k);
                queue.push(k);
            }
            for k in keys.drain(..) {
                queue.push(k);
            }
            if queue.is_empty() {
                continue;
            }
            let deferred = {
                let mut st = shared.state.lock().expect("state lock");
                let mut more = Vec::new();
                for _ in 0..BATCH {
                    let Some(k) = queue.pop() else { break };
                    if let Some(after) = ctrl.reconcile(&mut st, &k, &mut more) {
                        let at = Instant::now() + after;
                        let e = timers.entry(k).or_insert(at);
                        *e = (*e).min(at);
                    }
                }
                for k in more {
                    queue.push(k);
                }
                std::mem::take(&mut st.deferred)
            };
            server::run_deferred(&shared, deferred);
            tokio::task::yield_now().await;
        }
    });
}

fn resync<C: Controller>(shared: &Arc<Shared>, ctrl: &mut C, keys: &mut Vec<C::Key>) {
    let st = shared.state.lock().expect("state lock");
    ctrl.all_keys(&st, keys);
}

// ---------------------------------------------------------------------------
// Object access for controllers.

/// Store key of a resource.
pub fn rkey(group: &str, resource: &str) -> ResKey {
    (group.to_string(), resource.to_string())
}

fn info(st: &State, group: &str, resource: &str) -> Result<Arc<ResourceInfo>, ApiError> {
    st.registry
        .by_key(&rkey(group, resource))
        .ok_or_else(|| ApiError::bad_request(format!("{resource} is not served")))
}

/// One object as JSON.
pub fn get(st: &State, group: &str, resource: &str, ns: &str, name: &str) -> Option<Value> {
    st.store
        .get(&rkey(group, resource), ns, name)
        .map(|o| o.value())
}

/// The stored objects of a resource in a namespace.
pub fn objects_in(st: &State, group: &str, resource: &str, ns: &str) -> Vec<Arc<Obj>> {
    st.store
        .table(&rkey(group, resource))
        .range((ns.to_string(), String::new())..)
        .take_while(|(k, _)| k.0 == ns)
        .map(|(_, o)| o.clone())
        .collect()
}

/// Every stored object of a resource.
pub fn objects(st: &State, group: &str, resource: &str) -> Vec<Arc<Obj>> {
    st.store
        .table(&rkey(group, resource))
        .values()
        .cloned()
        .collect()
}

/// Creates an object as a client would (status is dropped, defaults and
/// behaviours apply).
pub fn create(
    st: &mut State,
    group: &str,
    resource: &str,
    ns: &str,
    v: Value,
) -> Result<Value, ApiError> {
    let info = info(st, group, resource)?;
    let version = info.preferred().to_string();
    handlers::create_object(st, &info, &version, ns, v, CreateOpts::default())
}

fn write(
    st: &mut State,
    group: &str,
    resource: &str,
    v: &Value,
    sub: &str,
) -> Result<(), ApiError> {
    let info = info(st, group, resource)?;
    let version = info.preferred().to_string();
    let query = Query(vec![("fieldManager".into(), MANAGER.into())]);
    let cx = Ctx {
        info: &info,
        version: &version,
        namespace: meta_str(v, "namespace"),
        name: meta_str(v, "name"),
        subresource: sub,
        query: &query,
        table: false,
    };
    handlers::update(st, &cx, v.clone()).map(|_| ())
}

/// Updates an object (its `resourceVersion` makes the write conditional).
pub fn update(st: &mut State, group: &str, resource: &str, v: &Value) -> Result<(), ApiError> {
    write(st, group, resource, v, "")
}

/// Writes `status` when it differs from the stored one.
pub fn update_status(
    st: &mut State,
    group: &str,
    resource: &str,
    v: &Value,
    status: Value,
) -> Result<(), ApiError> {
    if v["status"] == status {
        return Ok(());
    }
    let mut new = v.clone();
    new["status"] = status;
    write(st, group, resource, &new, "status")
}

/// Deletes an object with a propagation policy, as a DELETE request with
/// `DeleteOptions.propagationPolicy` does.
pub fn delete(
    st: &mut State,
    group: &str,
    resource: &str,
    ns: &str,
    name: &str,
    policy: gc::Propagation,
) -> Result<(), ApiError> {
    let info = info(st, group, resource)?;
    let Some(obj) = st.store.get(&info.key(), ns, name) else {
        return Ok(());
    };
    handlers::delete_object_with(st, &info, &obj, false, Some(policy), None).map(|_| ())
}

// ---------------------------------------------------------------------------
// Ownership.

/// The controller reference of an object (`ownerReferences` entry with
/// `controller: true`), if any.
pub fn controller_of(v: &Value) -> Option<&Value> {
    v["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)
}

/// Whether an object is controlled by the owner with this uid.
pub fn controlled_by(v: &Value, uid: &str) -> bool {
    controller_of(v).is_some_and(|r| r["uid"] == uid)
}

/// The name of the controller of the given kind, for event mapping.
pub fn controller_name(v: &Value, kind: &str) -> Option<String> {
    controller_of(v)
        .filter(|r| r["kind"] == kind)
        .and_then(|r| r["name"].as_str())
        .map(str::to_string)
}

/// An ownerReference to `owner` as the workload controllers set it.
pub fn owner_ref(owner: &Value) -> Value {
    json!({
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": meta_str(owner, "name"),
        "uid": meta_str(owner, "uid"),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// Whether an object is being deleted.
pub fn deleting(v: &Value) -> bool {
    v["metadata"].get("deletionTimestamp").is_some()
}

/// Adopts an orphan (matching, no controller) by adding a controller
/// reference; returns whether it was adopted.
pub fn adopt(st: &mut State, group: &str, resource: &str, owner: &Value, obj: &Value) -> bool {
    if controller_of(obj).is_some() || deleting(obj) || deleting(owner) {
        return false;
    }
    let mut new = obj.clone();
    let refs = new["metadata"]
        .as_object_mut()
        .map(|m| m.entry("ownerReferences").or_insert_with(|| json!([])));
    if let Some(Value::Array(refs)) = refs {
        refs.push(owner_ref(owner));
    }
    update(st, group, resource, &new).is_ok()
}

/// A parsed `metav1.LabelSelector` (matchLabels and matchExpressions).
#[derive(Debug, Clone, Default)]
pub struct Selector {
    reqs: Vec<(String, String, Vec<String>)>,
    /// No requirements: `{}` matches everything, a missing selector nothing.
    empty_matches: bool,
}

impl Selector {
    /// From a `selector` field (null matches nothing, `{}` everything).
    pub fn from_value(sel: &Value) -> Selector {
        let mut reqs = Vec::new();
        for (k, v) in sel["matchLabels"].as_object().into_iter().flatten() {
            reqs.push((
                k.clone(),
                "In".to_string(),
                vec![v.as_str().unwrap_or_default().to_string()],
            ));
        }
        for e in sel["matchExpressions"].as_array().into_iter().flatten() {
            let vals = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect();
            reqs.push((
                e["key"].as_str().unwrap_or_default().to_string(),
                e["operator"].as_str().unwrap_or_default().to_string(),
                vals,
            ));
        }
        Selector {
            reqs,
            empty_matches: sel.is_object(),
        }
    }

    fn check(&self, label: impl Fn(&str) -> Option<String>) -> bool {
        if self.reqs.is_empty() {
            return self.empty_matches;
        }
        self.reqs.iter().all(|(k, op, vals)| {
            let v = label(k);
            match op.as_str() {
                "In" => v.is_some_and(|v| vals.contains(&v)),
                "NotIn" => v.is_none_or(|v| !vals.contains(&v)),
                "Exists" => v.is_some(),
                "DoesNotExist" => v.is_none(),
                _ => false,
            }
        })
    }

    /// Whether a stored object's labels match.
    pub fn matches(&self, o: &Obj) -> bool {
        self.check(|k| o.label(k).map(str::to_string))
    }
}

// ---------------------------------------------------------------------------
// Pods.

/// The pods of a namespace matching a selector that this owner controls or
/// may adopt (not controlled by someone else), adopting the orphans.
pub fn claim_pods(st: &mut State, owner: &Value, selector: &Selector) -> Vec<Value> {
    let ns = meta_str(owner, "namespace").to_string();
    let uid = meta_str(owner, "uid").to_string();
    let mut out = Vec::new();
    // Only this owner's pods and matching orphans are parsed: the stored
    // controller reference and labels decide without reading the JSON.
    for o in objects_in(st, "", "pods", &ns) {
        match &o.controller {
            Some(c) if c.uid == uid => out.push(o.value()),
            Some(_) => {}
            None => {
                if selector.matches(&o)
                    && adopt(st, "", "pods", owner, &o.value())
                    && let Some(v) = get(st, "", "pods", &ns, &o.name)
                {
                    out.push(v);
                }
            }
        }
    }
    out
}

/// `Ready` condition true.
pub fn pod_ready(p: &Value) -> bool {
    condition_true(&p["status"], "Ready")
}

/// Whether a status has a condition of this type with status True.
pub fn condition_true(status: &Value, ty: &str) -> bool {
    status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == ty && c["status"] == "True")
}

/// Pod phase.
pub fn phase(p: &Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or("Pending")
}

/// Not Succeeded or Failed and not being deleted.
pub fn pod_active(p: &Value) -> bool {
    !matches!(phase(p), "Succeeded" | "Failed") && !deleting(p)
}

/// Ready for at least `min_ready` seconds (available), at `now`.
pub fn pod_available(p: &Value, min_ready: i64, now: jiff::Timestamp) -> bool {
    if !pod_ready(p) {
        return false;
    }
    if min_ready <= 0 {
        return true;
    }
    let since = p["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["lastTransitionTime"].as_str())
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    since.is_none_or(|t| now.as_second() - t.as_second() >= min_ready)
}

/// A pod from a template: labels, annotations, spec, owner reference.
pub fn pod_from_template(
    template: &Value,
    owner: &Value,
    name: Option<&str>,
    generate: &str,
) -> Value {
    let mut meta = Map::new();
    match name {
        Some(n) => meta.insert("name".into(), json!(n)),
        None => meta.insert("generateName".into(), json!(generate)),
    };
    for k in ["labels", "annotations", "finalizers"] {
        if let Some(x) = template["metadata"].get(k).filter(|x| !x.is_null()) {
            meta.insert(k.into(), x.clone());
        }
    }
    meta.insert("ownerReferences".into(), json!([owner_ref(owner)]));
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"]})
}

/// A condition in the form workload statuses carry, keeping
/// `lastTransitionTime` (and `lastUpdateTime`) when nothing changed.
pub fn set_condition(
    conditions: &mut Vec<Value>,
    ty: &str,
    status: &str,
    reason: &str,
    message: &str,
    with_update_time: bool,
) {
    let now = crate::meta::now();
    if let Some(c) = conditions.iter_mut().find(|c| c["type"] == ty) {
        let same = c["status"] == status && c["reason"] == reason && c["message"] == message;
        if same {
            return;
        }
        if c["status"] != status {
            c["lastTransitionTime"] = json!(now);
        }
        c["status"] = json!(status);
        c["reason"] = json!(reason);
        c["message"] = json!(message);
        if with_update_time {
            c["lastUpdateTime"] = json!(now);
        }
        return;
    }
    let mut c = json!({"type": ty, "status": status, "reason": reason, "message": message,
        "lastTransitionTime": now});
    if with_update_time {
        c["lastUpdateTime"] = json!(now);
    }
    conditions.push(c);
}

/// Namespace and name of an event's object.
pub fn nn(o: &Obj) -> (String, String) {
    (o.namespace.clone(), o.name.clone())
}

/// An integer field, defaulting when absent.
pub fn int(v: &Value, default: i64) -> i64 {
    v.as_i64().unwrap_or(default)
}

/// Drops zero-valued fields the API types mark `omitempty`.
pub fn omit_zero(status: &mut Value, fields: &[&str]) {
    if let Some(o) = status.as_object_mut() {
        for f in fields {
            if o.get(*f).is_some_and(|v| v == 0 || v.is_null()) {
                o.remove(*f);
            }
        }
    }
}

/// Keys of a workload controller for a change: the changed `primary`
/// object itself, or the owner of kind `kind` that a changed `child` names
/// in its controller reference (before and after the change).
pub fn owner_keys(
    ev: &Event,
    primary: (&str, &str),
    child: (&str, &str),
    kind: &str,
    out: &mut Vec<(String, String)>,
) {
    let key = (ev.key.0.as_str(), ev.key.1.as_str());
    if key == primary {
        out.push(nn(&ev.obj));
    } else if key == child {
        for o in std::iter::once(&ev.obj).chain(ev.prev.iter()) {
            if let Some(c) = o.controller.as_ref().filter(|c| c.kind == kind) {
                out.push((o.namespace.clone(), c.name.clone()));
            }
        }
    }
}

/// The keys (namespace, name) of every object of a resource.
pub fn all_of(st: &State, group: &str, resource: &str, out: &mut Vec<(String, String)>) {
    out.extend(objects(st, group, resource).iter().map(|o| nn(o)));
}

/// A workload controller: reconciles the objects of `primary` (by
/// namespace and name) when they or the `child` objects they control
/// change.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// The resource it reconciles.
    pub primary: (&'static str, &'static str),
    /// The resource whose objects it controls.
    pub child: (&'static str, &'static str),
    /// The kind children name in their controller reference.
    pub kind: &'static str,
    /// More keys for an event.
    pub also: fn(&Event, &mut Vec<(String, String)>),
    /// Reconciles one object.
    pub sync: fn(&mut State, &Value) -> Option<Duration>,
    /// Cleans up after an object that is gone (namespace, name).
    pub missing: fn(&mut State, &str, &str),
}

/// The key that stands for every object of a workload controller.
pub static EVERY: (String, String) = (String::new(), String::new());

/// No further keys.
pub fn ignore_event(_: &Event, _: &mut Vec<(String, String)>) {}

/// Nothing to clean up.
pub fn nothing(_: &mut State, _: &str, _: &str) {}

impl Controller for Workload {
    type Key = (String, String);

    fn keys_for(&mut self, ev: &Event, out: &mut Vec<Self::Key>) {
        owner_keys(ev, self.primary, self.child, self.kind, out);
        (self.also)(ev, out);
    }

    fn all_keys(&mut self, st: &State, out: &mut Vec<Self::Key>) {
        all_of(st, self.primary.0, self.primary.1, out);
    }

    fn reconcile(
        &mut self,
        st: &mut State,
        key: &Self::Key,
        more: &mut Vec<Self::Key>,
    ) -> Option<Duration> {
        if key == &EVERY {
            self.all_keys(st, more);
            return None;
        }
        let (ns, name) = key;
        match get(st, self.primary.0, self.primary.1, ns, name) {
            Some(v) => (self.sync)(st, &v),
            None => {
                (self.missing)(st, ns, name);
                None
            }
        }
    }
}

/// Deletes a pod (background propagation: pods have no dependents).
pub fn delete_pod(st: &mut State, pod: &Value) {
    let _ = delete(
        st,
        "",
        "pods",
        meta_str(pod, "namespace"),
        meta_str(pod, "name"),
        gc::Propagation::Background,
    );
}
