//! The kubelet of every sandbox node (and the attach/detach controller's
//! Multi-Attach check), modelled on the real one: it runs the pods bound to
//! its nodes and is the only writer of their `status`.
//!
//! ```text
//! store events ─▶ dirty pods (ours: spec.nodeName is a sandbox node)
//!   new pod ─▶ volumes: claims bound? ReadWriteOnce volume attached on
//!              another node? ─▶ no: Pending, ContainerCreating, event
//!              FailedMount / FailedAttachVolume, retried
//!           ─▶ host paths (kubelet::volumes), pod IP
//!           ─▶ init containers one by one ─▶ containers
//!              (mapped image: a local process, kubelet::process;
//!               other images: simulated, running until stopped)
//!   exits ─▶ terminated state, termination message, restartPolicy
//!            (Always/OnFailure restart with back-off), phase
//!   deletionTimestamp ─▶ SIGTERM, SIGKILL after the grace period
//!            ─▶ pod directory removed ─▶ pod deleted (grace 0)
//! ```
//!
//! Events: Pulled, Created, Started, Killing, BackOff, FailedMount (kubelet)
//! and FailedAttachVolume (attachdetach-controller).

pub mod logs;
pub mod process;
pub mod volumes;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::mpsc;

use crate::events::{self, EventType};
use crate::handlers::{State, delete_object_with};
use crate::meta::{self, meta_mut, meta_str};
use crate::scheduler::set_condition;
use crate::server::Shared;
use crate::store::{Event, Obj};
use logs::LogBuf;
use process::{Processes, Spawn};
use volumes::Volume;

const KUBELET: &str = "kubelet";
const ATTACHER: &str = "attachdetach-controller";
/// The environment variable that points a real-process container at its
/// root (see [`process`]).
pub const SANDBOX_ROOT: &str = "LIFEBOAT_SANDBOX_ROOT";

type Key = (String, String);

/// What the kubelets share with the server (logs) and the [`crate::Sandbox`]
/// (shutdown).
#[derive(Debug)]
pub struct Runtime {
    /// The data directory (the nodes' `/`).
    pub data: PathBuf,
    /// Image prefix ─▶ executable.
    pub images: Vec<(String, PathBuf)>,
    /// Image prefixes the registry does not have: pulls fail
    /// (`ErrImagePull`, then `ImagePullBackOff`), as a kubelet reports a
    /// registry's "not found".
    pub missing_images: Vec<String>,
    /// The nodes this kubelet runs.
    pub nodes: BTreeSet<String>,
    /// `host:port` of the API server, for `KUBERNETES_SERVICE_*`.
    pub api: (String, u16),
    /// The token pods get in projected service account tokens.
    pub token: String,
    logs: Mutex<HashMap<(String, String), Arc<LogBuf>>>,
    /// Live processes.
    pub procs: Arc<Processes>,
}

impl Runtime {
    /// A runtime for these nodes.
    pub fn new(
        data: PathBuf,
        images: Vec<(String, PathBuf)>,
        nodes: BTreeSet<String>,
        api: (String, u16),
        token: String,
    ) -> Self {
        Runtime {
            data,
            images,
            missing_images: Vec::new(),
            nodes,
            api,
            token,
            logs: Mutex::new(HashMap::new()),
            procs: Arc::new(Processes::default()),
        }
    }

    /// The log of a container of the pod with this uid.
    pub fn log(&self, uid: &str, container: &str) -> Option<Arc<LogBuf>> {
        self.logs
            .lock()
            .expect("logs lock")
            .get(&(uid.to_string(), container.to_string()))
            .cloned()
    }

    fn new_log(&self, uid: &str, container: &str) -> Arc<LogBuf> {
        let b = Arc::new(LogBuf::default());
        if let Some(old) = self
            .logs
            .lock()
            .expect("logs lock")
            .insert((uid.to_string(), container.to_string()), b.clone())
        {
            old.close();
        }
        b
    }

    fn drop_logs(&self, uid: &str) {
        let mut logs = self.logs.lock().expect("logs lock");
        logs.retain(|(u, _), b| {
            if u == uid {
                b.close();
            }
            u != uid
        });
    }

    /// Whether the registry lacks `image` (and it was never pulled: no
    /// mapped executable).
    pub fn image_missing(&self, image: &str) -> bool {
        self.executable(image).is_none()
            && self
                .missing_images
                .iter()
                .any(|p| image.starts_with(p.as_str()))
    }

    /// The executable a container image maps to (longest prefix wins).
    pub fn executable(&self, image: &str) -> Option<PathBuf> {
        self.images
            .iter()
            .filter(|(prefix, _)| image.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, p)| p.clone())
    }
}

/// The grace period a pod delete gets (0: remove at once): the request's,
/// else `spec.terminationGracePeriodSeconds` (default 30); 0 for pods not
/// on a node or already finished, as kube-apiserver decides.
pub fn grace_period(pod: &Value, requested: Option<i64>) -> i64 {
    let unscheduled = pod["spec"]["nodeName"].as_str().is_none_or(str::is_empty);
    if unscheduled || api_terminal(pod) {
        return 0;
    }
    requested
        .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30)
        .max(0)
}

/// Bytes of a resource quantity (`1Gi`, `500M`, `1024`); 0 when unparsable.
pub fn quantity_bytes(q: &str) -> u64 {
    let q = q.trim();
    let split = q.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(q.len());
    let (num, unit) = q.split_at(split);
    let n: f64 = num.parse().unwrap_or(0.0);
    let mult: f64 = match unit {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        _ => 0.0,
    };
    (n * mult) as u64
}

/// A downward API field of the pod.
pub fn field_ref(pod: &Value, path: &str) -> Option<String> {
    let s = |v: &Value| v.as_str().map(str::to_string);
    let quoted = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_prefix("['").and_then(|r| r.strip_suffix("']")))
            .map(str::to_string)
    };
    match path {
        "metadata.name" => s(&pod["metadata"]["name"]),
        "metadata.namespace" => s(&pod["metadata"]["namespace"]),
        "metadata.uid" => s(&pod["metadata"]["uid"]),
        "spec.nodeName" => s(&pod["spec"]["nodeName"]),
        "spec.serviceAccountName" => {
            s(&pod["spec"]["serviceAccountName"]).or(Some("default".into()))
        }
        "status.podIP" => s(&pod["status"]["podIP"]),
        "status.hostIP" => s(&pod["status"]["hostIP"]),
        _ => {
            if let Some(k) = quoted("metadata.labels") {
                return s(&pod["metadata"]["labels"][k.as_str()]);
            }
            quoted("metadata.annotations")
                .and_then(|k| s(&pod["metadata"]["annotations"][k.as_str()]))
        }
    }
}

/// `$(VAR)` expansion as in container env, command and args (`$$` escapes).
fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(a) = after.strip_prefix('$') {
            out.push('$');
            rest = a;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// A container's environment, or why it cannot be built
/// (`CreateContainerConfigError`).
fn container_env(st: &State, pod: &Value, c: &Value) -> Result<Vec<(String, String)>, String> {
    let ns = meta_str(pod, "namespace");
    let mut env: Vec<(String, String)> = Vec::new();
    let lookup =
        |resource: &str, name: &str, key: &str, optional: bool| -> Result<Option<String>, String> {
            let what = if resource == "secrets" {
                "secret"
            } else {
                "configmap"
            };
            match volumes::object_data(st, resource, ns, name) {
                Some(d) => match d.get(key) {
                    Some(b) => Ok(Some(String::from_utf8_lossy(b).into_owned())),
                    None if optional => Ok(None),
                    None => Err(format!(
                        "couldn't find key {key} in {} {ns}/{name}",
                        if what == "secret" {
                            "Secret"
                        } else {
                            "ConfigMap"
                        }
                    )),
                },
                None if optional => Ok(None),
                None => Err(format!("{what} \"{name}\" not found")),
            }
        };
    for from in c["envFrom"].as_array().into_iter().flatten() {
        let prefix = from["prefix"].as_str().unwrap_or_default();
        let (resource, src) = if from["secretRef"].is_object() {
            ("secrets", &from["secretRef"])
        } else {
            ("configmaps", &from["configMapRef"])
        };
        let name = src["name"].as_str().unwrap_or_default();
        match volumes::object_data(st, resource, ns, name) {
            Some(d) => env.extend(d.into_iter().map(|(k, v)| {
                (
                    format!("{prefix}{k}"),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })),
            None if src["optional"] == true => {}
            None => {
                let what = if resource == "secrets" {
                    "secret"
                } else {
                    "configmap"
                };
                return Err(format!("{what} \"{name}\" not found"));
            }
        }
    }
    for e in c["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap_or_default().to_string();
        let vf = &e["valueFrom"];
        let value = if let Some(v) = e["value"].as_str() {
            Some(expand(v, &env))
        } else if let Some(p) = vf["fieldRef"]["fieldPath"].as_str() {
            field_ref(pod, p)
        } else if vf["secretKeyRef"].is_object() {
            let r = &vf["secretKeyRef"];
            lookup(
                "secrets",
                r["name"].as_str().unwrap_or_default(),
                r["key"].as_str().unwrap_or_default(),
                r["optional"] == true,
            )?
        } else if vf["configMapKeyRef"].is_object() {
            let r = &vf["configMapKeyRef"];
            lookup(
                "configmaps",
                r["name"].as_str().unwrap_or_default(),
                r["key"].as_str().unwrap_or_default(),
                r["optional"] == true,
            )?
        } else if vf["resourceFieldRef"].is_object() {
            Some("0".to_string())
        } else {
            Some(String::new())
        };
        if let Some(v) = value {
            env.push((name, v));
        }
    }
    Ok(env)
}

/// Where a container is.
#[derive(Debug, Clone, PartialEq)]
enum CState {
    Waiting {
        reason: String,
        message: String,
    },
    Running {
        started: String,
    },
    Terminated {
        code: i32,
        reason: String,
        message: String,
        started: String,
        finished: String,
    },
}

impl CState {
    fn json(&self) -> Value {
        match self {
            CState::Waiting { reason, message } => {
                let mut w = json!({"reason": reason});
                if !message.is_empty() {
                    w["message"] = json!(message);
                }
                json!({"waiting": w})
            }
            CState::Running { started } => json!({"running": {"startedAt": started}}),
            CState::Terminated {
                code,
                reason,
                message,
                started,
                finished,
            } => {
                let mut t = json!({"exitCode": code, "reason": reason, "startedAt": started, "finishedAt": finished, "containerID": Value::Null});
                if !message.is_empty() {
                    t["message"] = json!(message);
                }
                json!({"terminated": t})
            }
        }
    }
}

/// One container of a running pod.
#[derive(Debug)]
struct Ctr {
    spec: Value,
    name: String,
    init: bool,
    exe: Option<PathBuf>,
    state: CState,
    last: Option<CState>,
    restarts: u32,
    id: String,
    pid: Option<u32>,
    term_log: Option<PathBuf>,
    /// Bumps per run, so a late exit of an old run is ignored.
    run: u64,
}

impl Ctr {
    fn status(&self, image: &Value) -> Value {
        let mut state = self.state.json();
        if let Some(t) = state.get_mut("terminated") {
            t["containerID"] = json!(self.id);
        }
        let mut s = json!({
            "name": self.name,
            "image": image,
            "imageID": format!("{}@sha256:{}", image.as_str().unwrap_or_default(), digest(image.as_str().unwrap_or_default())),
            "ready": matches!(self.state, CState::Running { .. }),
            "restartCount": self.restarts,
            "started": matches!(self.state, CState::Running { .. }),
            "state": state,
            "lastState": self.last.as_ref().map_or(json!({}), CState::json),
        });
        if !self.id.is_empty() {
            s["containerID"] = json!(self.id);
        }
        s
    }

    fn finished(&self) -> bool {
        matches!(self.state, CState::Terminated { .. })
    }
}

fn digest(s: &str) -> String {
    // A stable fake digest (FNV-1a, repeated to 64 hex digits).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}").repeat(4)
}

/// A pod the kubelet runs.
#[derive(Debug)]
struct PodRun {
    uid: String,
    node: String,
    ip: String,
    host_ip: String,
    started: String,
    ctrs: Vec<Ctr>,
    volumes: Vec<Volume>,
    attached: Vec<String>,
    /// Stopping (deleted, or terminal in the API): nothing starts again.
    terminating: bool,
    deleted: bool,
    /// When the containers still running get SIGKILL.
    kill_at: Option<Instant>,
}

impl PodRun {
    fn inits_done(&self) -> bool {
        self.ctrs
            .iter()
            .filter(|c| c.init)
            .all(|c| matches!(&c.state, CState::Terminated { code: 0, .. }))
    }
}

/// Messages from container processes and timers to the kubelet loop.
#[derive(Debug)]
enum Msg {
    Exited {
        key: Key,
        uid: String,
        name: String,
        run: u64,
        code: i32,
    },
    Restart {
        key: Key,
        uid: String,
        name: String,
    },
    Deadline {
        key: Key,
        uid: String,
    },
}

struct Kubelet {
    shared: Arc<Shared>,
    rt: Arc<Runtime>,
    pods: HashMap<Key, PodRun>,
    dirty: BTreeSet<Key>,
    /// Pods waiting for volumes or config, retried on a timer.
    blocked: BTreeSet<Key>,
    tx: mpsc::UnboundedSender<Msg>,
    ips: HashMap<String, BTreeSet<u8>>,
    /// PV ─▶ (node, pods using it there).
    attached: HashMap<String, (String, BTreeSet<Key>)>,
    runs: u64,
}

fn pods_key() -> crate::resources::ResKey {
    (String::new(), "pods".to_string())
}

fn now() -> String {
    meta::now()
}

impl Kubelet {
    fn ours(&self, pod: &Value) -> bool {
        pod["spec"]["nodeName"]
            .as_str()
            .is_some_and(|n| self.rt.nodes.contains(n))
    }

    fn observe(&mut self, ev: &Event) {
        match (ev.key.0.as_str(), ev.key.1.as_str()) {
            ("", "pods") => {
                let key = (ev.obj.namespace.clone(), ev.obj.name.clone());
                if self.pods.contains_key(&key) || self.ours(&ev.obj.value()) {
                    self.dirty.insert(key);
                }
                if ev.kind == crate::store::EventType::Deleted {
                    self.dirty.extend(self.blocked.iter().cloned());
                }
            }
            ("", "persistentvolumeclaims" | "persistentvolumes" | "secrets" | "configmaps") => {
                self.dirty.extend(self.blocked.iter().cloned());
            }
            _ => {}
        }
    }

    fn alloc_ip(&mut self, st: &State, node: &str) -> (String, String) {
        let n = st
            .store
            .get(&(String::new(), "nodes".into()), "", node)
            .map(|o| o.value());
        let host = n
            .as_ref()
            .and_then(|n| crate::nodes::internal_ip(n).map(str::to_string))
            .unwrap_or_default();
        let cidr = n
            .as_ref()
            .and_then(|n| n["spec"]["podCIDR"].as_str().map(str::to_string))
            .unwrap_or_else(|| "10.244.0.0/24".into());
        let prefix = cidr
            .split('/')
            .next()
            .unwrap_or_default()
            .rsplit_once('.')
            .map(|(p, _)| p.to_string())
            .unwrap_or_default();
        let used = self.ips.entry(node.to_string()).or_default();
        let host_part = (2u8..255).find(|h| !used.contains(h)).unwrap_or(254);
        used.insert(host_part);
        (format!("{prefix}.{host_part}"), host)
    }

    fn free_ip(&mut self, node: &str, ip: &str) {
        if let Some(h) = ip.rsplit('.').next().and_then(|h| h.parse::<u8>().ok())
            && let Some(set) = self.ips.get_mut(node)
        {
            set.remove(&h);
        }
    }

    fn release_volumes(&mut self, key: &Key, run: &mut PodRun) {
        for pv in std::mem::take(&mut run.attached) {
            if let Some((_, users)) = self.attached.get_mut(&pv) {
                users.remove(key);
                if users.is_empty() {
                    self.attached.remove(&pv);
                }
            }
        }
        self.dirty.extend(self.blocked.iter().cloned());
    }

    /// Forgets a pod: processes killed, volumes detached, directory removed.
    fn teardown(&mut self, key: &Key) {
        let Some(mut run) = self.pods.remove(key) else {
            return;
        };
        for c in &run.ctrs {
            if let Some(pid) = c.pid {
                Processes::signal(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
        self.release_volumes(key, &mut run);
        let (node, ip) = (run.node.clone(), run.ip.clone());
        self.free_ip(&node, &ip);
        self.rt.drop_logs(&run.uid);
        volumes::teardown(&self.rt.data, &run.uid);
    }

    fn sync(&mut self, st: &mut State, key: &Key) {
        let pod = st.store.get(&pods_key(), &key.0, &key.1).map(|o| o.value());
        let Some(pod) = pod else {
            self.blocked.remove(key);
            self.teardown(key);
            return;
        };
        let uid = meta_str(&pod, "uid").to_string();
        if self.pods.get(key).is_some_and(|r| r.uid != uid) {
            self.teardown(key);
        }
        if !self.ours(&pod) {
            self.blocked.remove(key);
            self.teardown(key);
            return;
        }
        if pod["metadata"].get("deletionTimestamp").is_some() {
            self.blocked.remove(key);
            self.terminate(st, key, &pod);
            return;
        }
        if !self.pods.contains_key(key) {
            if api_terminal(&pod) {
                return;
            }
            if !self.admit(st, key, &pod) {
                return;
            }
            self.blocked.remove(key);
        }
        if api_terminal(&pod) {
            // Someone else ended the pod (the kubelet's status was
            // overridden, or another component failed it): it never runs
            // again, so its containers stop, as kubelet's pod workers do.
            let grace = pod["spec"]["terminationGracePeriodSeconds"]
                .as_u64()
                .unwrap_or(30);
            self.stop(st, key, &pod, grace);
        }
        self.progress(st, key, &pod);
        self.write_status(st, key, &pod);
    }

    /// Volumes and IP for a new pod; false (and a waiting status) when it
    /// cannot start yet.
    fn admit(&mut self, st: &mut State, key: &Key, pod: &Value) -> bool {
        let node = pod["spec"]["nodeName"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let waiting = |st: &mut State, reason: &str, message: &str| {
            let mut p = pod.clone();
            let mut status = if p["status"].is_object() {
                p["status"].clone()
            } else {
                json!({})
            };
            status["phase"] = json!("Pending");
            set_condition(&mut status, "PodScheduled", "True", "", "");
            set_condition(
                &mut status,
                "Initialized",
                if pod["spec"]["initContainers"]
                    .as_array()
                    .is_some_and(|v| !v.is_empty())
                {
                    "False"
                } else {
                    "True"
                },
                "",
                "",
            );
            set_condition(&mut status, "Ready", "False", "ContainersNotReady", "");
            set_condition(
                &mut status,
                "ContainersReady",
                "False",
                "ContainersNotReady",
                "",
            );
            let list = |field: &str| -> Vec<Value> {
                pod["spec"][field].as_array().into_iter().flatten().map(|c| json!({
                    "name": c["name"], "image": c["image"], "imageID": "", "ready": false, "restartCount": 0, "started": false,
                    "state": {"waiting": {"reason": if field == "initContainers" { "PodInitializing" } else { reason }}}, "lastState": {}})).collect()
            };
            status["containerStatuses"] = json!(list("containers"));
            if pod["spec"]["initContainers"].is_array() {
                status["initContainerStatuses"] = json!(list("initContainers"));
            }
            status["qosClass"] = json!(qos_class(pod));
            if let Some(o) = status.as_object_mut()
                && (o.get("hostIP").is_none())
                && let Some(n) = st.store.get(&(String::new(), "nodes".into()), "", &node)
                && let Some(ip) = crate::nodes::internal_ip(&n.value())
            {
                o.insert("hostIP".into(), json!(ip));
                o.insert("hostIPs".into(), json!([{"ip": ip}]));
            }
            let _ = message;
            if status != p["status"] {
                p["status"] = status;
                put_pod(st, p);
            }
        };
        // Attach: a ReadWriteOnce volume in use on another node blocks the pod.
        let mut claims = Vec::new();
        for vol in pod["spec"]["volumes"].as_array().into_iter().flatten() {
            if let Some(c) = vol["persistentVolumeClaim"]["claimName"].as_str()
                && let Some(pvc) =
                    st.store
                        .get(&(String::new(), "persistentvolumeclaims".into()), &key.0, c)
            {
                let pvc = pvc.value();
                if let Some(pv) = pvc["spec"]["volumeName"].as_str().filter(|p| !p.is_empty()) {
                    let modes = pvc["status"]["accessModes"]
                        .as_array()
                        .or(pvc["spec"]["accessModes"].as_array())
                        .cloned()
                        .unwrap_or_default();
                    let exclusive = !modes
                        .iter()
                        .any(|m| m == "ReadWriteMany" || m == "ReadOnlyMany");
                    claims.push((pv.to_string(), exclusive));
                }
            }
        }
        for (pv, exclusive) in &claims {
            if let Some((on, users)) = self.attached.get(pv)
                && *exclusive
                && on != &node
                && !users.is_empty()
            {
                let names: Vec<&str> = users.iter().map(|k| k.1.as_str()).collect();
                let msg = format!(
                    "Multi-Attach error for volume \"{pv}\" Volume is already used by pod(s) {}",
                    names.join(", ")
                );
                if self.blocked.insert(key.clone()) {
                    events::record(
                        st,
                        pod,
                        EventType::Warning,
                        "FailedAttachVolume",
                        &msg,
                        ATTACHER,
                    );
                }
                waiting(st, "ContainerCreating", &msg);
                return false;
            }
        }
        let vols = match volumes::setup(st, &self.rt.data, pod, &self.rt.token) {
            Ok(v) => v,
            Err(e) => {
                if self.blocked.insert(key.clone()) {
                    events::record(st, pod, EventType::Warning, e.reason, &e.message, KUBELET);
                }
                waiting(st, "ContainerCreating", &e.message);
                return false;
            }
        };
        let mut attached = Vec::new();
        for (pv, _) in claims {
            let entry = self
                .attached
                .entry(pv.clone())
                .or_insert_with(|| (node.clone(), BTreeSet::new()));
            if entry.1.is_empty() {
                entry.0 = node.clone();
            }
            entry.1.insert(key.clone());
            attached.push(pv);
        }
        let (ip, host_ip) = self.alloc_ip(st, &node);
        let ctr = |c: &Value, init: bool| Ctr {
            spec: c.clone(),
            name: c["name"].as_str().unwrap_or_default().to_string(),
            init,
            exe: self.rt.executable(c["image"].as_str().unwrap_or_default()),
            state: CState::Waiting {
                reason: if init {
                    "PodInitializing".into()
                } else {
                    "ContainerCreating".into()
                },
                message: String::new(),
            },
            last: None,
            restarts: 0,
            id: String::new(),
            pid: None,
            term_log: None,
            run: 0,
        };
        let mut ctrs: Vec<Ctr> = pod["spec"]["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| ctr(c, true))
            .collect();
        ctrs.extend(
            pod["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| ctr(c, false)),
        );
        self.pods.insert(
            key.clone(),
            PodRun {
                uid: meta_str(pod, "uid").to_string(),
                node,
                ip,
                host_ip,
                started: now(),
                ctrs,
                volumes: vols,
                attached,
                terminating: false,
                deleted: false,
                kill_at: None,
            },
        );
        true
    }

    /// Starts what should run next.
    fn progress(&mut self, st: &mut State, key: &Key, pod: &Value) {
        let Some(run) = self.pods.get(key) else {
            return;
        };
        if run.terminating {
            return;
        }
        let inits_done = run.inits_done();
        let to_start: Vec<usize> = if !inits_done {
            // The first init container that has not completed, if it is waiting to start.
            run.ctrs
                .iter()
                .position(|c| c.init && !matches!(&c.state, CState::Terminated { code: 0, .. }))
                .filter(|&i| matches!(&run.ctrs[i].state, CState::Waiting { reason, .. } if startable(reason)))
                .into_iter()
                .collect()
        } else {
            run.ctrs
                .iter()
                .enumerate()
                .filter(|(_, c)| {
                    !c.init
                        && matches!(&c.state, CState::Waiting { reason, .. } if startable(reason))
                })
                .map(|(i, _)| i)
                .collect()
        };
        for i in to_start {
            self.start_container(st, key, pod, i);
        }
        // Simulated init containers complete at once; go on.
        let again = self
            .pods
            .get(key)
            .is_some_and(|r| !r.terminating && r.inits_done() != inits_done);
        if again {
            self.progress(st, key, pod);
        }
    }

    fn start_container(&mut self, st: &mut State, key: &Key, pod: &Value, i: usize) {
        self.runs += 1;
        let run_id = self.runs;
        let rt = self.rt.clone();
        let Some(run) = self.pods.get(key) else {
            return;
        };
        let uid = run.uid.clone();
        let c = &run.ctrs[i];
        let (spec, init, exe, cname) = (c.spec.clone(), c.init, c.exe.clone(), c.name.clone());
        let vols = run.volumes.clone();
        let image = spec["image"].as_str().unwrap_or_default().to_string();
        if self.rt.image_missing(&image) {
            // The pull fails; the kubelet retries with a back-off, and the
            // container waits in ImagePullBackOff between attempts.
            let first = self.blocked.insert(key.clone());
            let (reason, message) = if first {
                let msg = format!(
                    "failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": not found"
                );
                events::record(
                    st,
                    pod,
                    EventType::Normal,
                    "Pulling",
                    &format!("Pulling image \"{image}\""),
                    KUBELET,
                );
                events::record(
                    st,
                    pod,
                    EventType::Warning,
                    "Failed",
                    &format!("Failed to pull image \"{image}\": {msg}"),
                    KUBELET,
                );
                ("ErrImagePull", msg)
            } else {
                (
                    "ImagePullBackOff",
                    format!("Back-off pulling image \"{image}\""),
                )
            };
            self.set_state(
                key,
                i,
                CState::Waiting {
                    reason: reason.into(),
                    message,
                },
            );
            return;
        }
        let env = match container_env(st, pod, &spec) {
            Ok(e) => e,
            Err(msg) => {
                if self.blocked.insert(key.clone()) {
                    events::record(
                        st,
                        pod,
                        EventType::Warning,
                        "Failed",
                        &format!("Error: {msg}"),
                        KUBELET,
                    );
                }
                self.set_state(
                    key,
                    i,
                    CState::Waiting {
                        reason: "CreateContainerConfigError".into(),
                        message: msg,
                    },
                );
                return;
            }
        };
        self.blocked.remove(key);
        events::record(
            st,
            pod,
            EventType::Normal,
            "Pulled",
            &format!("Container image \"{image}\" already present on machine"),
            KUBELET,
        );
        let id = format!(
            "containerd://{}",
            &digest(&format!("{uid}/{cname}/{run_id}"))[..64]
        );
        let started = now();
        let created = |st: &mut State| {
            events::record(
                st,
                pod,
                EventType::Normal,
                "Created",
                &format!("Created container: {cname}"),
                KUBELET,
            );
            events::record(
                st,
                pod,
                EventType::Normal,
                "Started",
                &format!("Started container {cname}"),
                KUBELET,
            );
        };
        let (state, pid, term) = match exe {
            None => {
                created(st);
                rt.new_log(&uid, &cname);
                let state = if init {
                    CState::Terminated {
                        code: 0,
                        reason: "Completed".into(),
                        message: String::new(),
                        started,
                        finished: now(),
                    }
                } else {
                    CState::Running { started }
                };
                (state, None, None)
            }
            Some(exe) => {
                let pod_dir = volumes::pod_dir(&rt.data, &uid);
                let (root, term) = match volumes::container_root(&pod_dir, &spec, &vols) {
                    Ok(x) => x,
                    Err(e) => {
                        events::record(
                            st,
                            pod,
                            EventType::Warning,
                            "Failed",
                            &format!("Error: {e}"),
                            KUBELET,
                        );
                        self.set_state(
                            key,
                            i,
                            CState::Waiting {
                                reason: "CreateContainerError".into(),
                                message: e.to_string(),
                            },
                        );
                        return;
                    }
                };
                let mut full: Vec<(String, String)> = vec![
                    (
                        "PATH".into(),
                        std::env::var("PATH")
                            .unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
                    ),
                    ("HOME".into(), root.display().to_string()),
                    ("HOSTNAME".into(), key.1.clone()),
                    ("KUBERNETES_SERVICE_HOST".into(), rt.api.0.clone()),
                    ("KUBERNETES_SERVICE_PORT".into(), rt.api.1.to_string()),
                    (SANDBOX_ROOT.into(), root.display().to_string()),
                ];
                for (k, v) in env {
                    full.retain(|(x, _)| x != &k);
                    full.push((k, v));
                }
                let strings = |f: &str| -> Vec<String> {
                    spec[f]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|s| s.as_str().map(|s| expand(s, &full)))
                        .collect()
                };
                let command = strings("command");
                let mut args: Vec<String> = command.iter().skip(1).cloned().collect();
                args.extend(strings("args"));
                let arg0 = command
                    .first()
                    .cloned()
                    .unwrap_or_else(|| exe.display().to_string());
                let cwd = spec["workingDir"]
                    .as_str()
                    .and_then(|w| volumes::node_path(&root, w))
                    .filter(|p| p.is_dir())
                    .unwrap_or_else(|| root.clone());
                let log = rt.new_log(&uid, &cname);
                let grace = pod["spec"]["terminationGracePeriodSeconds"]
                    .as_u64()
                    .unwrap_or(30);
                let spawn = Spawn {
                    exe: exe.clone(),
                    arg0,
                    args,
                    env: full,
                    cwd,
                    log,
                };
                let tx = self.tx.clone();
                let (k2, u2, n2) = (key.clone(), uid.clone(), cname.clone());
                let res = process::start(&rt.procs, spawn, grace, move |code| {
                    let _ = tx.send(Msg::Exited {
                        key: k2,
                        uid: u2,
                        name: n2,
                        run: run_id,
                        code,
                    });
                });
                match res {
                    Ok(pid) => {
                        created(st);
                        (CState::Running { started }, Some(pid), Some(term))
                    }
                    Err(e) => {
                        let msg = format!("failed to start {}: {e}", exe.display());
                        events::record(
                            st,
                            pod,
                            EventType::Warning,
                            "Failed",
                            &format!("Error: {msg}"),
                            KUBELET,
                        );
                        (
                            CState::Terminated {
                                code: 128,
                                reason: "StartError".into(),
                                message: msg,
                                started,
                                finished: now(),
                            },
                            None,
                            Some(term),
                        )
                    }
                }
            }
        };
        let failed_start =
            matches!(state, CState::Terminated { .. }) && exe_mapped(&self.pods, key, i);
        if let Some(run) = self.pods.get_mut(key) {
            let c = &mut run.ctrs[i];
            c.id = id;
            c.run = run_id;
            c.state = state;
            c.pid = pid;
            c.term_log = term;
        }
        if failed_start {
            self.after_exit(st, key, pod, i);
        }
    }

    fn set_state(&mut self, key: &Key, i: usize, state: CState) {
        if let Some(run) = self.pods.get_mut(key) {
            run.ctrs[i].state = state;
        }
    }

    /// A container stopped: restart it per restartPolicy, or move on.
    fn after_exit(&mut self, st: &mut State, key: &Key, pod: &Value, i: usize) {
        let policy = pod["spec"]["restartPolicy"]
            .as_str()
            .unwrap_or("Always")
            .to_string();
        let tx = self.tx.clone();
        let Some(run) = self.pods.get_mut(key) else {
            return;
        };
        if run.terminating {
            return;
        }
        let c = &mut run.ctrs[i];
        let CState::Terminated { code, .. } = c.state else {
            return;
        };
        let restart = match policy.as_str() {
            "Never" => false,
            "OnFailure" => code != 0,
            // Init containers of Always pods restart only on failure.
            _ => !c.init || code != 0,
        };
        if !restart {
            return;
        }
        let delay = Duration::from_secs(1u64 << c.restarts.min(8)).min(Duration::from_secs(300));
        let name = c.name.clone();
        c.last = Some(c.state.clone());
        c.state = CState::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: format!(
                "back-off {}s restarting failed container={name} pod={}_{}({})",
                delay.as_secs(),
                key.1,
                key.0,
                run.uid
            ),
        };
        events::record(
            st,
            pod,
            EventType::Warning,
            "BackOff",
            "Back-off restarting failed container",
            KUBELET,
        );
        let msg = Msg::Restart {
            key: key.clone(),
            uid: run.uid.clone(),
            name,
        };
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(msg);
        });
    }

    fn on_msg(&mut self, st: &mut State, msg: Msg) {
        let pod =
            |st: &State, key: &Key| st.store.get(&pods_key(), &key.0, &key.1).map(|o| o.value());
        match msg {
            Msg::Exited {
                key,
                uid,
                name,
                run: run_id,
                code,
            } => {
                let Some(run) = self.pods.get_mut(&key).filter(|r| r.uid == uid) else {
                    return;
                };
                let Some(i) = run
                    .ctrs
                    .iter()
                    .position(|c| c.name == name && c.run == run_id)
                else {
                    return;
                };
                let c = &mut run.ctrs[i];
                c.pid = None;
                let started = match &c.state {
                    CState::Running { started } => started.clone(),
                    _ => now(),
                };
                let mut message = c
                    .term_log
                    .as_ref()
                    .and_then(|p| std::fs::read(p).ok())
                    .map(|b| String::from_utf8_lossy(&b[..b.len().min(4096)]).into_owned())
                    .unwrap_or_default();
                if message.is_empty()
                    && code != 0
                    && c.spec["terminationMessagePolicy"] == "FallbackToLogsOnError"
                    && let Some(log) = self.rt.log(&uid, &name)
                {
                    let (all, _) = log.snapshot();
                    let start = all.len().saturating_sub(2048);
                    message = String::from_utf8_lossy(&all[start..]).into_owned();
                }
                let reason = if code == 0 { "Completed" } else { "Error" };
                c.state = CState::Terminated {
                    code,
                    reason: reason.into(),
                    message,
                    started,
                    finished: now(),
                };
                if let Some(log) = self.rt.log(&uid, &name) {
                    log.close();
                }
                let Some(p) = pod(st, &key) else {
                    self.dirty.insert(key);
                    return;
                };
                self.after_exit(st, &key, &p, i);
                self.dirty.insert(key);
            }
            Msg::Restart { key, uid, name } => {
                let Some(run) = self
                    .pods
                    .get_mut(&key)
                    .filter(|r| r.uid == uid && !r.terminating)
                else {
                    return;
                };
                let Some(i) = run.ctrs.iter().position(|c| c.name == name) else {
                    return;
                };
                run.ctrs[i].restarts += 1;
                let Some(p) = pod(st, &key) else { return };
                self.start_container(st, &key, &p, i);
                self.dirty.insert(key);
            }
            Msg::Deadline { key, uid } => {
                if let Some(run) = self.pods.get_mut(&key).filter(|r| r.uid == uid) {
                    for c in &run.ctrs {
                        if let Some(pid) = c.pid {
                            Processes::signal(pid, nix::sys::signal::Signal::SIGKILL);
                        }
                    }
                }
                self.dirty.insert(key);
            }
        }
    }

    /// Stops a pod's containers: SIGTERM to its processes (simulated
    /// containers stop at once) and SIGKILL once `grace` seconds have
    /// passed. Called again with a shorter grace, the SIGKILL comes sooner.
    fn stop(&mut self, st: &mut State, key: &Key, pod: &Value, grace: u64) {
        let Some(run) = self.pods.get_mut(key) else {
            return;
        };
        if !run.terminating {
            run.terminating = true;
            for c in run.ctrs.iter_mut() {
                if !matches!(c.state, CState::Running { .. }) {
                    continue;
                }
                events::record(
                    st,
                    pod,
                    EventType::Normal,
                    "Killing",
                    &format!("Stopping container {}", c.name),
                    KUBELET,
                );
                match c.pid {
                    Some(pid) => Processes::signal(pid, nix::sys::signal::Signal::SIGTERM),
                    None => {
                        let CState::Running { started } = &c.state else {
                            continue;
                        };
                        c.state = CState::Terminated {
                            code: 0,
                            reason: "Completed".into(),
                            message: String::new(),
                            started: started.clone(),
                            finished: now(),
                        };
                    }
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(grace);
        if run.kill_at.is_some_and(|at| at <= deadline) {
            return;
        }
        run.kill_at = Some(deadline);
        let (tx, msg) = (
            self.tx.clone(),
            Msg::Deadline {
                key: key.clone(),
                uid: run.uid.clone(),
            },
        );
        tokio::spawn(async move {
            tokio::time::sleep_until(deadline.into()).await;
            let _ = tx.send(msg);
        });
    }

    /// Stops a pod being deleted, then removes it.
    fn terminate(&mut self, st: &mut State, key: &Key, pod: &Value) {
        if !self.pods.contains_key(key) {
            // Never started here: nothing to stop.
            finish_delete(st, key);
            return;
        }
        let grace = pod["metadata"]["deletionGracePeriodSeconds"]
            .as_u64()
            .unwrap_or(0);
        self.stop(st, key, pod, grace);
        let Some(run) = self.pods.get_mut(key) else {
            return;
        };
        if run.ctrs.iter().any(|c| c.pid.is_some()) || run.deleted {
            return;
        }
        run.deleted = true;
        self.teardown(key);
        finish_delete(st, key);
    }

    fn write_status(&mut self, st: &mut State, key: &Key, pod: &Value) {
        let Some(run) = self.pods.get(key) else {
            return;
        };
        let policy = pod["spec"]["restartPolicy"].as_str().unwrap_or("Always");
        let images: HashMap<&str, &Value> = pod["spec"]["initContainers"]
            .as_array()
            .into_iter()
            .chain(pod["spec"]["containers"].as_array())
            .flatten()
            .map(|c| (c["name"].as_str().unwrap_or_default(), &c["image"]))
            .collect();
        let main: Vec<&Ctr> = run.ctrs.iter().filter(|c| !c.init).collect();
        let init_failed = run.ctrs.iter().any(|c| {
            c.init
                && policy == "Never"
                && matches!(&c.state, CState::Terminated { code, .. } if *code != 0)
        });
        let inits_done = run.inits_done();
        let all_done = main.iter().all(|c| c.finished());
        // As the kubelet's getPhase: a container waiting that never ran
        // (image not pulled, config error, still being created) keeps the
        // pod Pending; one waiting to restart counts as stopped.
        let never_started = main
            .iter()
            .any(|c| matches!(c.state, CState::Waiting { .. }) && c.last.is_none());
        let phase = if init_failed {
            "Failed"
        } else if !inits_done || never_started {
            "Pending"
        } else if all_done && !main.is_empty() {
            if main
                .iter()
                .all(|c| matches!(&c.state, CState::Terminated { code: 0, .. }))
            {
                "Succeeded"
            } else {
                "Failed"
            }
        } else {
            "Running"
        };
        // Pods never leave a terminal phase the API shows, whoever set it
        // (kubelet's generateAPIPodStatus forces it back the same way).
        let phase = if api_terminal(pod) {
            pod["status"]["phase"].as_str().unwrap_or(phase)
        } else {
            phase
        };
        let mut status = if pod["status"].is_object() {
            pod["status"].clone()
        } else {
            json!({})
        };
        status["phase"] = json!(phase);
        let unready: Vec<&str> = main
            .iter()
            .filter(|c| !matches!(c.state, CState::Running { .. }))
            .map(|c| c.name.as_str())
            .collect();
        set_condition(&mut status, "PodReadyToStartContainers", "True", "", "");
        if inits_done {
            set_condition(&mut status, "Initialized", "True", "", "");
        } else {
            let pending: Vec<&str> = run
                .ctrs
                .iter()
                .filter(|c| c.init && !c.finished())
                .map(|c| c.name.as_str())
                .collect();
            set_condition(
                &mut status,
                "Initialized",
                "False",
                "ContainersNotInitialized",
                &format!("containers with incomplete status: [{}]", pending.join(" ")),
            );
        }
        let terminal = matches!(phase, "Succeeded" | "Failed");
        let gates = unready_gates(pod, &status);
        for ty in ["Ready", "ContainersReady"] {
            if terminal {
                set_condition(&mut status, ty, "False", "PodCompleted", "");
            } else if !unready.is_empty() {
                set_condition(
                    &mut status,
                    ty,
                    "False",
                    "ContainersNotReady",
                    &format!("containers with unready status: [{}]", unready.join(" ")),
                );
            } else if ty == "Ready" && !gates.is_empty() {
                // Readiness gates: conditions other components set on the
                // pod (a load balancer's, say) hold back Ready, not
                // ContainersReady.
                set_condition(
                    &mut status,
                    ty,
                    "False",
                    "ReadinessGatesNotReady",
                    &gates.join(", "),
                );
            } else {
                set_condition(&mut status, ty, "True", "", "");
            }
        }
        set_condition(&mut status, "PodScheduled", "True", "", "");
        // Keep kube's condition order: readiness gates first as the kubelet does.
        if let Some(list) = status["conditions"].as_array_mut() {
            let rank = |c: &Value| {
                [
                    "PodReadyToStartContainers",
                    "Initialized",
                    "Ready",
                    "ContainersReady",
                    "PodScheduled",
                ]
                .iter()
                .position(|t| c["type"] == *t)
                .unwrap_or(9)
            };
            list.sort_by_key(rank);
        }
        status["hostIP"] = json!(run.host_ip);
        status["hostIPs"] = json!([{"ip": run.host_ip}]);
        status["podIP"] = json!(run.ip);
        status["podIPs"] = json!([{"ip": run.ip}]);
        status["startTime"] = json!(run.started);
        status["qosClass"] = json!(qos_class(pod));
        let statuses = |init: bool| -> Vec<Value> {
            run.ctrs
                .iter()
                .filter(|c| c.init == init)
                .map(|c| c.status(images.get(c.name.as_str()).copied().unwrap_or(&Value::Null)))
                .collect()
        };
        status["containerStatuses"] = json!(statuses(false));
        if run.ctrs.iter().any(|c| c.init) {
            status["initContainerStatuses"] = json!(statuses(true));
        }
        if terminal && !run.attached.is_empty() {
            // A finished pod's volumes are unmounted and detached.
            let mut run = self.pods.remove(key).expect("present");
            self.release_volumes(key, &mut run);
            self.pods.insert(key.clone(), run);
        }
        if status != pod["status"] {
            let mut p = pod.clone();
            p["status"] = status;
            put_pod(st, p);
        }
    }

    /// Stops everything (the sandbox shuts down).
    fn shutdown(&mut self) {
        self.rt.procs.terminate_all();
    }
}

/// Whether the pod's phase in the API is terminal (`Succeeded`, `Failed`).
fn api_terminal(pod: &Value) -> bool {
    matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    )
}

/// Why each of the pod's readiness gates is not satisfied by the
/// conditions in `status`, as the kubelet words it (empty: all are).
fn unready_gates(pod: &Value, status: &Value) -> Vec<String> {
    let conditions = status["conditions"].as_array();
    pod["spec"]["readinessGates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| {
            let ty = g["conditionType"].as_str().unwrap_or_default();
            let c = conditions.into_iter().flatten().find(|c| c["type"] == ty);
            match c {
                None => Some(format!(
                    "corresponding condition of pod readiness gate \"{ty}\" does not exist."
                )),
                Some(c) if c["status"] != "True" => Some(format!(
                    "the status of pod readiness gate \"{ty}\" is not \"True\", but {}",
                    c["status"].as_str().unwrap_or_default()
                )),
                Some(_) => None,
            }
        })
        .collect()
}

/// Waiting reasons after which the kubelet (re)tries to start a container.
fn startable(reason: &str) -> bool {
    matches!(
        reason,
        "ContainerCreating"
            | "PodInitializing"
            | "CreateContainerConfigError"
            | "ErrImagePull"
            | "ImagePullBackOff"
    )
}

fn exe_mapped(pods: &HashMap<Key, PodRun>, key: &Key, i: usize) -> bool {
    pods.get(key).is_some_and(|r| r.ctrs[i].exe.is_some())
}

fn qos_class(pod: &Value) -> &'static str {
    let ctrs: Vec<&Value> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let any = ctrs.iter().any(|c| {
        c["resources"]["requests"]
            .as_object()
            .is_some_and(|m| !m.is_empty())
            || c["resources"]["limits"]
                .as_object()
                .is_some_and(|m| !m.is_empty())
    });
    if !any {
        return "BestEffort";
    }
    let guaranteed = ctrs.iter().all(|c| {
        let l = &c["resources"]["limits"];
        let r = &c["resources"]["requests"];
        ["cpu", "memory"]
            .iter()
            .all(|k| l[*k].is_string() && (r[*k].is_null() || r[*k] == l[*k]))
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn put_pod(st: &mut State, mut v: Value) {
    meta_mut(&mut v).insert(
        "resourceVersion".into(),
        json!(st.store.next_rv().to_string()),
    );
    st.store.put(&pods_key(), Obj::from_value(&v));
}

/// The kubelet's final delete (grace 0) once the containers stopped.
fn finish_delete(st: &mut State, key: &Key) {
    let Some(info) = st.registry.by_key(&pods_key()) else {
        return;
    };
    if let Some(obj) = st.store.get(&pods_key(), &key.0, &key.1) {
        let _ = delete_object_with(st, &info, &obj, false, None, Some(0));
    }
}

/// How many pods one hold of the state lock syncs.
const SYNC_BATCH: usize = 64;

/// Runs the kubelets until the sandbox shuts down.
pub async fn run(shared: Arc<Shared>) {
    let rt = shared.kubelet.clone();
    let mut stop = shared.shutdown.subscribe();
    let (tx, mut msgs) = mpsc::unbounded_channel();
    let mut k = Kubelet {
        shared: shared.clone(),
        rt,
        pods: HashMap::new(),
        dirty: BTreeSet::new(),
        blocked: BTreeSet::new(),
        tx,
        ips: HashMap::new(),
        attached: HashMap::new(),
        runs: 0,
    };
    let mut rx = {
        let st = shared.state.lock().expect("state lock");
        for (key, o) in st.store.table(&pods_key()).iter() {
            if k.ours(&o.value()) {
                k.dirty.insert(key.clone());
            }
        }
        st.store.subscribe()
    };
    let mut retry = tokio::time::interval(Duration::from_millis(500));
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if !k.dirty.is_empty() {
            let shared = k.shared.clone();
            let mut st = shared.state.lock().expect("state lock");
            // A bounded batch per lock hold, as the controllers do: API
            // requests and the other components get the lock in between,
            // so a thousand new pods do not freeze the server.
            for _ in 0..SYNC_BATCH {
                let Some(key) = k.dirty.pop_first() else {
                    break;
                };
                k.sync(&mut st, &key);
            }
        }
        let more = !k.dirty.is_empty();
        let first = tokio::select! {
            // More dirty pods: go round again once other tasks had a turn.
            () = tokio::task::yield_now(), if more => None,
            r = rx.recv() => Some(r),
            m = msgs.recv() => {
                if let Some(m) = m {
                    let shared = k.shared.clone();
                    let mut st = shared.state.lock().expect("state lock");
                    k.on_msg(&mut st, m);
                }
                None
            }
            _ = retry.tick() => {
                k.dirty.extend(k.blocked.iter().cloned());
                None
            }
            _ = stop.changed() => {
                k.shutdown();
                return;
            }
        };
        let mut next = first;
        while let Some(r) = next.take() {
            match r {
                Ok(ev) => k.observe(&ev),
                Err(RecvError::Lagged(_)) => {
                    let st = shared.state.lock().expect("state lock");
                    let keys: Vec<Key> = st.store.table(&pods_key()).keys().cloned().collect();
                    k.dirty.extend(keys);
                    k.dirty.extend(k.pods.keys().cloned());
                }
                Err(RecvError::Closed) => return,
            }
            next = match rx.try_recv() {
                Ok(ev) => Some(Ok(ev)),
                Err(TryRecvError::Lagged(n)) => Some(Err(RecvError::Lagged(n))),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Closed) => Some(Err(RecvError::Closed)),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_follows_kube_apiserver() {
        let pod = json!({"spec": {"nodeName": "n", "terminationGracePeriodSeconds": 5}, "status": {"phase": "Running"}});
        assert_eq!(grace_period(&pod, None), 5);
        assert_eq!(grace_period(&pod, Some(0)), 0);
        assert_eq!(grace_period(&pod, Some(2)), 2);
        assert_eq!(
            grace_period(&json!({"spec": {}}), Some(10)),
            0,
            "unscheduled: at once"
        );
        let done = json!({"spec": {"nodeName": "n"}, "status": {"phase": "Succeeded"}});
        assert_eq!(grace_period(&done, None), 0);
        assert_eq!(grace_period(&json!({"spec": {"nodeName": "n"}}), None), 30);
    }

    #[test]
    fn env_references_expand() {
        let env = vec![("A".to_string(), "x".to_string())];
        assert_eq!(expand("$(A)/$(B)/$$(A)", &env), "x/$(B)/$(A)");
        assert_eq!(expand("cost $5", &env), "cost $5");
    }

    #[test]
    fn quantities() {
        assert_eq!(quantity_bytes("1Gi"), 1 << 30);
        assert_eq!(quantity_bytes("10M"), 10_000_000);
        assert_eq!(quantity_bytes("512"), 512);
        assert_eq!(quantity_bytes("junk"), 0);
    }
}
