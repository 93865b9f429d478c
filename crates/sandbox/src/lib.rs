//! An in-memory Kubernetes API server for lifeboat's tests and demo.
//!
//! It speaks the Kubernetes REST API over HTTP(S) so the real kube-rs client
//! (and kubectl) can drive it: discovery, CRUD with API semantics for every
//! built-in or custom resource, watches, the status subresource, pods/exec
//! over WebSocket, fault injection and a request log.
//!
//! ```text
//! Sandbox::builder() ─▶ seed (dirs, objects) ─▶ bind 127.0.0.1:port ─▶ server::serve
//!                                                                       │
//!  kube::Client / kubectl ──HTTP──▶ server (auth, faults, log) ─▶ discovery
//!                                                             ├▶ handlers ─▶ store
//!                                                             ├▶ watch    ◀─ store events
//!                                                             └▶ exec     ─▶ test handler
//! ```
//!
//! Modules: [`store`] (objects, resourceVersions, history), [`resources`]
//! and [`discovery`] (what is served), [`handlers`] (CRUD semantics),
//! [`patch`], [`selectors`], [`watch`], [`exec`], [`faults`] (fault
//! injection, request log), [`behaviours`] (what cluster controllers would
//! do: namespaces, services, CRDs), [`tls`], [`seed`], [`server`];
//! [`controllers`] (kube-controller-manager: Deployment, ReplicaSet,
//! StatefulSet, DaemonSet, Job and CronJob controllers and ownerReference
//! garbage collection, as background tasks); [`nodes`], [`scheduler`] and
//! [`kubelet`] (nodes, kube-scheduler, the kubelet with real processes, logs
//! and host paths); [`csi`] (the CSI host-path driver with data: volumes and
//! snapshots under the data directory, provisioners, snapshotter) and
//! [`binding`] (the PV controller: binding, release, reclaim).
//! API fidelity: [`secrets`] (`stringData`, immutable), [`protobuf`]
//! (request bodies), [`defaults`], [`scale`], [`admission`] (Pod Security),
//! [`reqlog`] (request log file), [`tables`] (kubectl columns, Table watches).
//!
//! # Behaviours
//!
//! - New namespaces get a `default` ServiceAccount and a `kube-root-ca.crt`
//!   ConfigMap. Deleting a namespace sets phase `Terminating` (new objects
//!   in it get 403 Forbidden) and a background task, after
//!   [`SandboxBuilder::namespace_finalize_delay`] (default 0), deletes
//!   everything in it and then the namespace.
//! - Services get a clusterIP from 10.96.0.0/12 and, for NodePort and
//!   LoadBalancer, node ports from 30000-32767; headless (`None`) is kept;
//!   changing clusterIP is a 422.
//! - A PVC of the default class `standard` (filled in when none is given)
//!   is bound at once to a provisioned PV whose bytes are a directory under
//!   [`SandboxBuilder::data_dir`]; a VolumeSnapshot is a copy of them,
//!   `readyToUse` after [`SandboxBuilder::snapshot_delay`] (default 100 ms).
//!   See the [`csi`] and [`binding`] modules.
//! - Nodes `sandbox-node-1` … `sandbox-node-N` ([`SandboxBuilder::nodes`]);
//!   the scheduler binds pods to them (selectors, affinity, taints, volume
//!   topology, WaitForFirstConsumer claims) and their kubelets run the pods:
//!   simulated containers, or local processes for images mapped with
//!   [`SandboxBuilder::image_binary`], with volumes as real directories
//!   under [`SandboxBuilder::data_dir`], logs, exit codes and graceful
//!   deletion.
//! - Creating a CRD adds its resource to discovery and sets `Established`;
//!   deleting it removes the resource and all its objects.
//! - Objects with finalizers are only marked (`deletionTimestamp`) on
//!   delete and go when the last finalizer is removed.
//!
//! Not modelled: admission webhooks,
//! OpenAPI documents (404), protobuf responses, aggregated discovery (clients fall
//! back), `metadata.managedFields` (server-side apply merges, and tracks
//! field ownership only to answer 409 conflicts; see the `fields` module).

mod admission;
mod behaviours;
mod binding;
mod controllers;
mod csi;
mod defaults;
mod discovery;
mod error;
mod events;
mod exec;
mod faults;
mod fields;
mod handlers;
mod kubelet;
pub mod kubevirt;
mod meta;
mod nodes;
mod patch;
mod protobuf;
mod protobuf_schema;
mod reqlog;
mod resources;
mod scale;
mod scheduler;
mod secrets;
mod seed;
mod selectors;
mod server;
mod store;
mod tables;
mod tls;
mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

pub use error::ApiError;
pub use exec::{
    Chunks, ExecHandler, ExecOutput, ExecRequest, OutputStream, StdinEvent, StdinReader,
};
pub use faults::{FaultAction, FaultId, FaultRule, RequestRecord};
pub use seed::parse_manifests;

use handlers::{CreateOpts, State};
use server::{Settings, Shared};

/// Errors starting or seeding a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// A seed manifest could not be read or created.
    #[error("seeding failed: {0}")]
    Seed(String),
    /// Certificates could not be made.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// The kube client could not be built.
    #[error("building the kube client failed: {0}")]
    Client(String),
    /// Writing the kubeconfig failed.
    #[error("writing {path}: {source}")]
    Write {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// Configures and starts a [`Sandbox`].
#[derive(Clone)]
pub struct SandboxBuilder {
    seed_dirs: Vec<PathBuf>,
    seed_objects: Vec<Value>,
    token: Option<String>,
    tls: bool,
    port: u16,
    history: usize,
    bookmark_interval: Duration,
    snapshot_delay: Duration,
    namespace_delay: Duration,
    fault_seed: u64,
    exec: Option<ExecHandler>,
    nodes: usize,
    images: Vec<(String, PathBuf)>,
    missing_images: Vec<String>,
    data_dir: Option<PathBuf>,
    request_log: Option<PathBuf>,
}

impl std::fmt::Debug for SandboxBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxBuilder")
            .field("seed_dirs", &self.seed_dirs)
            .field("seed_objects", &self.seed_objects.len())
            .field("tls", &self.tls)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Default for SandboxBuilder {
    fn default() -> Self {
        SandboxBuilder {
            seed_dirs: Vec::new(),
            seed_objects: Vec::new(),
            token: None,
            tls: false,
            port: 0,
            history: 10_000,
            bookmark_interval: Duration::from_secs(1),
            snapshot_delay: Duration::from_millis(100),
            namespace_delay: Duration::ZERO,
            fault_seed: 0,
            exec: None,
            nodes: 1,
            images: Vec::new(),
            missing_images: Vec::new(),
            data_dir: None,
            request_log: None,
        }
    }
}

impl SandboxBuilder {
    /// Seeds every manifest under a directory.
    pub fn seed_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.seed_dirs.push(dir.into());
        self
    }
    /// Seeds objects (any kinds).
    pub fn seed_objects(mut self, objs: impl IntoIterator<Item = Value>) -> Self {
        self.seed_objects.extend(objs);
        self
    }
    /// Requires this bearer token (401 otherwise); the kubeconfig carries it.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }
    /// Serves HTTPS with a self-signed CA (in the kubeconfig).
    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }
    /// Listens on this port (0: any free port).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }
    /// Number of watch events kept for resuming watches (older: 410 Gone).
    pub fn watch_history(mut self, events: usize) -> Self {
        self.history = events;
        self
    }
    /// Interval of watch bookmarks.
    pub fn bookmark_interval(mut self, d: Duration) -> Self {
        self.bookmark_interval = d;
        self
    }
    /// Delay before VolumeSnapshots become ready.
    pub fn snapshot_delay(mut self, d: Duration) -> Self {
        self.snapshot_delay = d;
        self
    }
    /// Keeps volume and snapshot bytes and the kubelet's host paths
    /// (`var/lib/kubelet/pods/<uid>/…`) under this directory (created when
    /// missing, kept on shutdown). Without it a temporary directory is used
    /// and removed when the [`Sandbox`] is dropped.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }
    /// Delay before a Terminating namespace is finalized.
    pub fn namespace_finalize_delay(mut self, d: Duration) -> Self {
        self.namespace_delay = d;
        self
    }
    /// Seed of the fault-injection RNG.
    pub fn fault_seed(mut self, seed: u64) -> Self {
        self.fault_seed = seed;
        self
    }
    /// Appends one JSON line per served request to this file (created when
    /// missing), flushed per line; see the README's "Request log file".
    pub fn request_log(mut self, path: impl Into<PathBuf>) -> Self {
        self.request_log = Some(path.into());
        self
    }
    /// Registers the exec handler.
    pub fn exec_handler(
        mut self,
        h: impl Fn(&ExecRequest) -> ExecOutput + Send + Sync + 'static,
    ) -> Self {
        self.exec = Some(Arc::new(h));
        self
    }

    /// Number of nodes (`sandbox-node-1` … `sandbox-node-N`; default 1).
    pub fn nodes(mut self, n: usize) -> Self {
        self.nodes = n.max(1);
        self
    }
    /// Runs containers whose image starts with `prefix` as local processes
    /// of this executable (the longest matching prefix wins); other images
    /// run as simulated containers.
    pub fn image_binary(mut self, prefix: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        self.images.push((prefix.into(), path.into()));
        self
    }

    /// Images starting with `prefix` are not in the registry: a container
    /// of one waits in `ErrImagePull`, then `ImagePullBackOff`, and never
    /// starts (unless [`Self::image_binary`] maps it), as with a real
    /// kubelet. Other unmapped images pull and run simulated.
    pub fn missing_image(mut self, prefix: impl Into<String>) -> Self {
        self.missing_images.push(prefix.into());
        self
    }

    /// Seeds, binds 127.0.0.1 and starts serving on the current tokio runtime.
    pub async fn start(self) -> Result<Sandbox, Error> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| Error::Bind { addr, source })?;
        let pki = tls::generate(&["localhost".into(), "127.0.0.1".into()])
            .map_err(|e| Error::Tls(e.to_string()))?;
        let acceptor = if self.tls {
            let cfg = tls::server_config(&pki).map_err(|e| Error::Tls(e.to_string()))?;
            Some(tokio_rustls::TlsAcceptor::from(cfg))
        } else {
            None
        };
        let scheme = if self.tls { "https" } else { "http" };
        let url = format!("{scheme}://{addr}");
        let (data, temp_data) = match &self.data_dir {
            Some(d) => (d.clone(), None),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("lifeboat-sandbox-")
                    .tempdir()
                    .map_err(|source| Error::Write {
                        path: std::env::temp_dir(),
                        source,
                    })?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let driver = csi::Driver::new(data.clone(), self.seed_dirs.clone());
        driver.prepare().map_err(|source| Error::Write {
            path: data.clone(),
            source,
        })?;
        let mut state = State {
            store: store::Store::new(self.history),
            registry: resources::Registry::builtin(),
            deferred: Vec::new(),
            ca_pem: pki.ca_pem.clone(),
            fields: fields::FieldOwners::default(),
            csi: driver,
            warnings: Vec::new(),
            recorder: events::Recorder::default(),
        };
        behaviours::bootstrap(&mut state).map_err(|e| Error::Seed(e.to_string()))?;
        let node_names =
            nodes::register(&mut state, self.nodes).map_err(|e| Error::Seed(e.to_string()))?;
        let mut runtime = kubelet::Runtime::new(
            data.clone(),
            self.images.clone(),
            node_names.into_iter().collect(),
            (addr.ip().to_string(), addr.port()),
            self.token.clone().unwrap_or_else(|| "sandbox".into()),
        );
        runtime.missing_images = self.missing_images.clone();
        let runtime = Arc::new(runtime);
        let mut objs = Vec::new();
        for d in &self.seed_dirs {
            objs.extend(seed::load_dir(d).map_err(Error::Seed)?);
        }
        objs.extend(self.seed_objects);
        seed_into(&mut state, objs).map_err(Error::Seed)?;
        let reqlog = match &self.request_log {
            Some(path) => Some(
                reqlog::RequestLog::open(path).map_err(|source| Error::Write {
                    path: path.clone(),
                    source,
                })?,
            ),
            None => None,
        };
        let (shutdown, _) = tokio::sync::watch::channel(false);
        let deferred = std::mem::take(&mut state.deferred);
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            settings: Settings {
                token: self.token.clone(),
                bookmark_interval: self.bookmark_interval,
                snapshot_delay: self.snapshot_delay,
                namespace_delay: self.namespace_delay,
                max_body: 16 << 20,
            },
            faults: Mutex::new(faults::Faults::new(self.fault_seed)),
            log: Mutex::new(Vec::new()),
            exec: RwLock::new(self.exec),
            shutdown,
            url: url.clone(),
            kubelet: runtime,
            reqlog,
        });
        tokio::spawn(scheduler::run(shared.clone()));
        tokio::spawn(kubelet::run(shared.clone()));
        tokio::spawn(binding::run(shared.clone()));
        server::run_deferred(&shared, deferred);
        controllers::spawn_all(&shared);
        tokio::spawn(server::serve(listener, shared.clone(), acceptor));
        let kubeconfig = kubeconfig_yaml(
            &url,
            self.token.as_deref(),
            self.tls.then_some(pki.ca_pem.as_str()),
        );
        let kc = kube::config::Kubeconfig::from_yaml(&kubeconfig)
            .map_err(|e| Error::Client(e.to_string()))?;
        let config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Client(e.to_string()))?;
        let client = kube::Client::try_from(config).map_err(|e| Error::Client(e.to_string()))?;
        Ok(Sandbox {
            url,
            addr,
            client,
            kubeconfig,
            shared,
            data,
            _temp_data: temp_data,
        })
    }
}

fn seed_into(st: &mut State, mut objs: Vec<Value>) -> Result<usize, String> {
    objs.sort_by_key(seed::rank);
    let mut n = 0;
    for v in objs {
        let av = v["apiVersion"].as_str().unwrap_or_default().to_string();
        let kind = v["kind"].as_str().unwrap_or_default().to_string();
        let name = meta::meta_str(&v, "name").to_string();
        let (info, version) = st
            .registry
            .by_kind(&av, &kind)
            .ok_or_else(|| format!("{kind} {name:?}: no resource serves {av} {kind}"))?;
        let mut ns = String::new();
        if info.namespaced {
            ns = match meta::meta_str(&v, "namespace") {
                "" => "default".to_string(),
                s => s.to_string(),
            };
            if st
                .store
                .get(&(String::new(), "namespaces".into()), "", &ns)
                .is_none()
            {
                let nsinfo = st
                    .registry
                    .by_kind("v1", "Namespace")
                    .ok_or("namespaces are not served")?
                    .0;
                handlers::create_object(
                    st,
                    &nsinfo,
                    "v1",
                    "",
                    json!({"metadata": {"name": ns}}),
                    CreateOpts::default(),
                )
                .map_err(|e| e.message)?;
            }
        }
        let opts = CreateOpts {
            dry_run: false,
            keep_status: true,
        };
        match handlers::create_object(st, &info, &version, &ns, v, opts) {
            Ok(_) => n += 1,
            Err(e) if e.reason == "AlreadyExists" && kind == "Namespace" => {}
            Err(e) => return Err(format!("{kind} {ns}/{name}: {}", e.message)),
        }
    }
    Ok(n)
}

fn kubeconfig_yaml(url: &str, token: Option<&str>, ca_pem: Option<&str>) -> String {
    let mut cluster = json!({"server": url});
    if let Some(ca) = ca_pem {
        cluster["certificate-authority-data"] =
            json!(base64::engine::general_purpose::STANDARD.encode(ca));
    }
    let user = match token {
        Some(t) => json!({"token": t}),
        None => json!({}),
    };
    let kc = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "sandbox", "cluster": cluster}],
        "users": [{"name": "sandbox", "user": user}],
        "contexts": [{"name": "sandbox", "context": {"cluster": "sandbox", "user": "sandbox", "namespace": "default"}}],
        "current-context": "sandbox",
    });
    serde_yaml_ng::to_string(&kc).unwrap_or_default()
}

/// A running sandbox API server. Dropping it stops the server.
pub struct Sandbox {
    url: String,
    addr: SocketAddr,
    client: kube::Client,
    kubeconfig: String,
    shared: Arc<Shared>,
    data: PathBuf,
    // Removed on drop, after the server stopped.
    _temp_data: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Starts a sandbox with defaults (plain HTTP, no auth, no seed).
    pub async fn start() -> Result<Sandbox, Error> {
        Self::builder().start().await
    }

    /// A builder.
    pub fn builder() -> SandboxBuilder {
        SandboxBuilder::default()
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A ready client (built from the kubeconfig).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The kubeconfig YAML (server, CA data with TLS, token when set).
    pub fn kubeconfig(&self) -> &str {
        &self.kubeconfig
    }

    /// The data directory: `volumes/<pv-name>/` (Block: `<pv-name>.img`)
    /// and `snapshots/<handle>/` (or `.img`) hold the bytes, and
    /// `var/lib/kubelet/pods/` the kubelet's host paths.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Whether the data directory is a temporary one (removed on drop).
    pub fn data_dir_is_temporary(&self) -> bool {
        self._temp_data.is_some()
    }

    /// Writes the kubeconfig to a file.
    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), Error> {
        std::fs::write(path, &self.kubeconfig).map_err(|source| Error::Write {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Creates objects as seeding does (any kinds, status kept).
    pub fn seed(&self, objs: impl IntoIterator<Item = Value>) -> Result<usize, Error> {
        let (n, deferred) = {
            let mut st = self.shared.state.lock().expect("state lock");
            let n = seed_into(&mut st, objs.into_iter().collect()).map_err(Error::Seed)?;
            (n, std::mem::take(&mut st.deferred))
        };
        server::run_deferred(&self.shared, deferred);
        Ok(n)
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.state.lock().expect("state lock").store.rv()
    }

    /// Number of stored objects.
    pub fn object_count(&self) -> usize {
        self.shared.state.lock().expect("state lock").store.len()
    }

    /// Installs a fault rule.
    pub fn add_fault(&self, rule: FaultRule) -> FaultId {
        self.shared.faults.lock().expect("faults lock").add(rule)
    }

    /// Removes a fault rule.
    pub fn remove_fault(&self, id: FaultId) {
        self.shared.faults.lock().expect("faults lock").remove(id);
    }

    /// Removes all fault rules.
    pub fn clear_faults(&self) {
        self.shared.faults.lock().expect("faults lock").clear();
    }

    /// Every request served so far, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.log.lock().expect("log lock").clone()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        self.shared.log.lock().expect("log lock").clear();
    }

    /// Registers (replaces) the exec handler.
    pub fn on_exec(&self, h: impl Fn(&ExecRequest) -> ExecOutput + Send + Sync + 'static) {
        *self.shared.exec.write().expect("exec lock") = Some(Arc::new(h));
    }

    /// Stops serving (also done on drop).
    pub fn shutdown(&self) {
        let _ = self.shared.shutdown.send(true);
    }

    /// Waits until the process gets Ctrl-C or SIGTERM (for the command).
    pub async fn serve_until_signal(&self) {
        let _ = tokio::signal::ctrl_c().await;
        self.shutdown();
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.shutdown();
        // The kubelet task may not run again once the runtime shuts down.
        self.shared.kubelet.procs.terminate_all();
    }
}
