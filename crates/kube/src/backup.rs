//! The backup engine: discovers every listable resource of a cluster, lists
//! the selected ones page by page (several resource types at once) and
//! streams each object into a [`WriterHandle`] as it arrives.
//!
//! ```text
//! discovery ─▶ namespaces ─▶ list units (buffer_unordered) ─▶ Selection ─▶ writer
//!                                   └─▶ related cluster objects (PV, CRD, RBAC) ─▶ writer
//! ```
//!
//! - **Discovery** uses the legacy discovery endpoints group by group and
//!   version; each resource is stored at the most preferred version that
//!   serves it (the group's preferred version first). Subresources and resources without the `list` verb
//!   are skipped. A group whose discovery fails with an API error (typically
//!   an aggregated API whose backing service is down, answering 503) is
//!   logged as a warning and skipped; failing to reach the API server at all
//!   is an error.
//! - **Events** (`events`, `events.events.k8s.io`) are never backed up by
//!   default ([`BackupOptions::skip_resources`]): they are high-volume noise
//!   that restore would not apply anyway. Other resources that restore skips
//!   (`order::NEVER_RESTORED`, e.g. endpoints, leases) are still backed up,
//!   so an archive is a complete record for inspection.
//! - **Namespaces**: the namespace list is read first. The `Namespace`
//!   objects of the selected namespaces are stored (when the `namespaces`
//!   resource is selected) without applying the label selector: they are the
//!   containers of the selected objects. Namespaced resources are listed
//!   cluster-wide when every namespace is selected, or when more than
//!   [`PER_NAMESPACE_LIMIT`] namespaces (or more than half of them) are
//!   selected, filtering client-side; otherwise per namespace. Per-namespace
//!   listing costs one request per resource type per namespace but transfers
//!   only selected objects; with many namespaces selected the request count
//!   dominates and one cluster-wide list is cheaper.
//! - **Labels**: the include selector is sent to the server (`labelSelector`)
//!   and checked again client-side together with the exclude selector and
//!   the `lifeboat.dev/exclude=true` opt-out label.
//! - **Cluster-scoped resources** are listed wholesale when
//!   [`Selection::cluster_scoped`] says so. Otherwise, when
//!   [`Selection::related_cluster_objects`], the objects related to stored
//!   ones are fetched afterwards: a PVC's PersistentVolume
//!   (`spec.volumeName`), a custom resource's CustomResourceDefinition
//!   (`<plural>.<group>`), and the ClusterRoleBindings whose subjects name a
//!   stored ServiceAccount together with their ClusterRoles. Related objects
//!   skip the label selector (they are dependencies) but honour resource
//!   excludes and the opt-out label.
//! - **Objects are stored as the API returned them** minus
//!   `metadata.managedFields`, with `apiVersion` and `kind` first. A page
//!   is kept as the response text and each object's members are copied
//!   through without building a `serde_json::Value` (see `raw`); only
//!   `metadata` (name, namespace, labels) is read, plus `spec` of PVCs and
//!   `subjects`/`roleRef` of ClusterRoleBindings. A page's objects go to
//!   the writer together ([`WriterHandle::add_all`]).
//! - **Memory**: objects are written as each page arrives, so memory is
//!   bounded by `concurrency × page_size` objects, not by cluster size. The
//!   only per-object state kept is the set of PV names, ServiceAccounts and
//!   CRD names needed for related objects.
//! - **Errors**: API 429/500/502/503/504 and connection errors are retried
//!   per page request with exponential backoff ([`RetryPolicy`]). An API
//!   error that persists fails that resource only: it is logged as an error
//!   (the backup finishes `PartiallyFailed`) and counted. Losing the API
//!   server (connection errors after all retries, or 401) returns
//!   [`BackupError`]; the caller must then `finish_failed` or `abort` the
//!   writer so nothing is committed as `Completed`.
//! - **Expired continue tokens** (410 Gone mid-list) restart that resource's
//!   list from the beginning (up to 3 times), skipping the objects already
//!   stored. To know which, each list unit remembers a 128-bit hash of the
//!   `namespace/name` of every object it has seen (16 bytes per object of
//!   that unit, freed when the unit ends) — list order differs between etcd
//!   (`ns/name` bytes) and other servers, so order cannot be relied on.
//!
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use kube::api::{GetParams, ListParams};
use kube::core::{ApiResource, DynamicObject, Request, Resource};
use lifeboat_store::{LogEntry, LogLevel, ObjectEntry, StoreError, WriterHandle};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::openshift::{self, Platform};
use crate::raw::Object;
use crate::select::{EXCLUDE_LABEL, Selection};
use lifeboat_store::{Prerequisite, PrerequisiteKind};

/// At most this many selected namespaces are listed one by one; above it
/// namespaced resources are listed cluster-wide and filtered client-side.
pub const PER_NAMESPACE_LIMIT: usize = 8;

/// How API requests are retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts per request, including the first (at least 1).
    pub attempts: u32,
    /// Delay before the second attempt; doubled for each further one.
    pub base_delay: Duration,
    /// Upper bound of a single delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.base_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }
}

/// Tuning of [`backup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupOptions {
    /// Resource types (or resource × namespace units) listed at once.
    pub concurrency: usize,
    /// Objects per list page (`limit`).
    pub page_size: u32,
    /// Retries of each API request.
    pub retry: RetryPolicy,
    /// Resources never backed up, as `<resource>[.<group>]`. Defaults to
    /// `events` and `events.events.k8s.io`.
    pub skip_resources: Vec<String>,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            concurrency: 8,
            page_size: 500,
            retry: RetryPolicy::default(),
            skip_resources: vec!["events".into(), "events.events.k8s.io".into()],
        }
    }
}

/// What [`backup`] stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupSummary {
    /// Objects stored.
    pub items: u64,
    /// Objects stored per `<resource>[.<group>]`.
    pub per_resource: BTreeMap<String, u64>,
    /// Error lines logged (the backup is `PartiallyFailed` when non-zero).
    pub errors: u64,
    /// Warning lines logged.
    pub warnings: u64,
    /// The stored OpenShift ImageStreams, with their `status` (the images
    /// their tags point at), sorted by namespace and name.
    pub image_streams: Vec<StoredImageStream>,
}

/// A stored ImageStream and its `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredImageStream {
    pub namespace: String,
    pub name: String,
    pub status: Value,
}

/// Progress reports, for logs and status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Discovery finished: this many resource types will be considered.
    Discovered { resources: usize },
    /// One list page was stored.
    Page {
        resource: String,
        namespace: Option<String>,
        items: u64,
    },
    /// A resource (or one namespace of it) was listed completely.
    ResourceDone {
        resource: String,
        namespace: Option<String>,
        items: u64,
    },
    /// A related cluster-scoped object was stored.
    Related { resource: String, name: String },
}

/// Why a backup could not be taken. The archive must not be committed as
/// `Completed`: call `finish_failed` (or `abort`) on the writer.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Discovery of the API server's resources failed.
    #[error(
        "could not discover the API server's resources: {source}; check that the API server is \
         reachable and that the credentials may read /api and /apis"
    )]
    Discovery {
        #[source]
        source: kube::Error,
    },
    /// The API server stopped answering, or rejected the credentials.
    #[error(
        "lost the API server while {doing}: {source}; check connectivity and credentials, then \
         run the backup again (nothing was committed)"
    )]
    ApiUnavailable {
        doing: String,
        #[source]
        source: kube::Error,
    },
    /// Writing to the archive failed.
    #[error(
        "writing the backup archive failed: {0}; check the object store location and its \
         credentials, then run the backup again"
    )]
    Store(#[from] StoreError),
}

/// Backs up the objects `selection` selects from the cluster behind `client`
/// into `sink` (a handle of a [`lifeboat_store::BackupWriter`]).
///
/// Returns what was stored. Per-object and per-resource failures are logged
/// into the backup and counted in [`BackupSummary::errors`]; the caller then
/// calls `finish`, which yields `PartiallyFailed` when any error was logged.
/// On `Err` the caller calls `finish_failed` or `abort` instead.
pub async fn backup(
    client: &kube::Client,
    selection: &Selection,
    sink: &WriterHandle,
    opts: &BackupOptions,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<BackupSummary, BackupError> {
    let ctx = Ctx {
        client,
        selection,
        sink,
        opts,
        progress,
        label_query: selection.label_query(),
        items: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        warnings: AtomicU64::new(0),
        per_resource: Mutex::new(BTreeMap::new()),
        related: Mutex::new(Related::default()),
        platform: std::sync::OnceLock::new(),
    };
    let targets = ctx.discover().await?;
    let platform = Platform::from_groups(targets.iter().map(|t| t.ar.group.as_str()));
    let _ = ctx.platform.set(platform);
    progress(Progress::Discovered {
        resources: targets.len(),
    });

    // Namespaces first: which exist and are selected, storing their objects.
    let ns_target = targets
        .iter()
        .find(|t| t.ar.plural == "namespaces" && t.ar.group.is_empty());
    let (selected_ns, total_ns) = match ns_target {
        Some(t) => {
            let out = ctx.list_unit(t, None, Mode::Namespaces).await?;
            (out.names, out.seen)
        }
        None => (Vec::new(), 0),
    };

    // Decide how namespaced resources are listed.
    let all_ns = selection.all_namespaces();
    let per_namespace =
        !all_ns && selected_ns.len() <= PER_NAMESPACE_LIMIT && selected_ns.len() * 2 <= total_ns;
    let mut units: Vec<(&Target, Option<String>)> = Vec::new();
    let mut olm: Vec<&Target> = Vec::new();
    let mut wholesale: HashSet<String> = HashSet::new();
    for t in &targets {
        let (r, g) = (t.ar.plural.as_str(), t.ar.group.as_str());
        if ns_target.is_some_and(|n| std::ptr::eq(n, t)) {
            continue;
        }
        if t.namespaced {
            if !selection.resource(r, g) || (!all_ns && selected_ns.is_empty()) {
                continue;
            }
            // OLM's objects are excluded unless named: listed only to
            // record the operators as prerequisites.
            if openshift::is_olm(r, g) && !selection.names_resource(r, g) {
                olm.push(t);
                continue;
            }
            if per_namespace {
                units.extend(selected_ns.iter().map(|ns| (t, Some(ns.clone()))));
            } else {
                units.push((t, None));
            }
        } else if selection.cluster_scoped(r, g) {
            wholesale.insert(t.key.clone());
            units.push((t, None));
        }
    }

    let concurrency = opts.concurrency.max(1);
    // The futures are built before they enter the stream, not by a closure
    // of the stream, so `backup()` stays `Send` for callers that spawn it.
    let ctx_ref = &ctx;
    let olm_units = olm.into_iter().flat_map(|t| {
        let per_ns: Vec<Option<String>> = if per_namespace {
            selected_ns.iter().cloned().map(Some).collect()
        } else {
            vec![None]
        };
        per_ns.into_iter().map(move |ns| (t, ns, Mode::Olm))
    });
    let unit_futures: Vec<_> = units
        .into_iter()
        .map(|(t, ns)| (t, ns, Mode::Selected))
        .chain(olm_units)
        .map(|(t, ns, mode)| async move { ctx_ref.list_unit(t, ns.as_deref(), mode).await })
        .collect();
    let mut results = stream::iter(unit_futures).buffer_unordered(concurrency);
    while let Some(out) = results.try_next().await? {
        if out.written > 0 && !out.group.is_empty() {
            ctx.related_mut()
                .crds
                .insert(format!("{}.{}", out.plural, out.group));
        }
    }
    drop(results);

    let needed_crds = ctx.related_mut().crds.clone();
    // Taken before `related_objects`, which consumes the rest.
    let mut image_streams = std::mem::take(&mut ctx.related_mut().image_streams);
    if selection.related_cluster_objects() {
        let namespaces: BTreeSet<String> = selected_ns.iter().cloned().collect();
        ctx.related_objects(&targets, &wholesale, &namespaces)
            .await?;
    }
    // The CRDs the stored custom resources need are prerequisites of the
    // backup (the backup holds them too, but a restore may leave them out).
    let stored_crds = std::mem::take(&mut ctx.related_mut().stored_crds);
    let mut prerequisite_crds: Vec<String> =
        needed_crds.intersection(&stored_crds).cloned().collect();
    // CRDs the selection leaves out (`clusterResources: never`, or
    // excluded) are not stored, yet a restore target still needs them: a
    // read of each tells a CRD from a built-in group resource.
    const CRDS: &str = "customresourcedefinitions.apiextensions.k8s.io";
    let crds_read = wholesale.contains(CRDS)
        || (selection.related_cluster_objects()
            && selection.resource("customresourcedefinitions", "apiextensions.k8s.io"));
    if let Some(t) = targets.iter().find(|t| t.key == CRDS && !crds_read) {
        for crd in needed_crds.difference(&stored_crds) {
            if ctx.exists(t, crd).await? {
                prerequisite_crds.push(crd.clone());
            }
        }
    }
    for crd in prerequisite_crds {
        sink.prerequisite(Prerequisite {
            kind: PrerequisiteKind::CustomResourceDefinition,
            name: crd,
            namespace: None,
            detail: None,
        });
    }

    let per_resource = ctx
        .per_resource
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    image_streams.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    image_streams.dedup_by(|a, b| a.namespace == b.namespace && a.name == b.name);
    Ok(BackupSummary {
        items: ctx.items.load(Ordering::Relaxed),
        per_resource,
        errors: ctx.errors.load(Ordering::Relaxed),
        warnings: ctx.warnings.load(Ordering::Relaxed),
        image_streams,
    })
}

/// One discovered, listable resource.
#[derive(Debug)]
struct Target {
    ar: ApiResource,
    key: String,
    namespaced: bool,
}

/// Cluster-scoped objects related to stored ones.
#[derive(Default)]
struct Related {
    pvs: BTreeSet<String>,
    crds: BTreeSet<String>,
    service_accounts: HashSet<(String, String)>,
    /// Names of the CRDs stored (wholesale or as related objects).
    stored_crds: BTreeSet<String>,
    /// What stored KubeVirt VMs name in their namespace: `(resource key,
    /// namespace, name)` of Secrets, ConfigMaps and instancetype
    /// ControllerRevisions.
    vm_refs: BTreeSet<(String, String, String)>,
    /// Stored ImageStreams (namespace, name, status).
    image_streams: Vec<StoredImageStream>,
}

/// How a list unit filters and what it collects.
#[derive(Clone, Copy)]
enum Mode<'a> {
    /// The selection: namespaces, labels.
    Selected,
    /// Namespace objects: by name, the opt-out label only; names collected.
    Namespaces,
    /// ClusterRoleBindings naming one of these ServiceAccounts; their
    /// ClusterRole names are collected.
    Bindings(&'a HashSet<(String, String)>),
    /// OpenShift SecurityContextConstraints granting one of these
    /// ServiceAccounts or these namespaces' ServiceAccount groups.
    Sccs(&'a BTreeSet<(String, String)>, &'a BTreeSet<String>),
    /// OLM objects: not stored; Subscriptions recorded as prerequisites.
    Olm,
}

#[derive(Default)]
struct UnitOutcome {
    plural: String,
    group: String,
    written: u64,
    /// Objects the API returned (before filtering).
    seen: usize,
    /// Namespace names or ClusterRole names, depending on the mode.
    names: Vec<String>,
}

/// A list response; the items stay JSON text borrowed from the body.
#[derive(Deserialize)]
struct Page<'a> {
    #[serde(default)]
    metadata: PageMeta,
    #[serde(default, borrow)]
    items: Option<Vec<&'a RawValue>>,
}

#[derive(Deserialize, Default)]
struct PageMeta {
    #[serde(default, rename = "continue")]
    continue_: Option<String>,
}

struct Ctx<'a> {
    client: &'a kube::Client,
    selection: &'a Selection,
    sink: &'a WriterHandle,
    opts: &'a BackupOptions,
    progress: &'a (dyn Fn(Progress) + Send + Sync),
    label_query: Option<String>,
    items: AtomicU64,
    errors: AtomicU64,
    warnings: AtomicU64,
    per_resource: Mutex<BTreeMap<String, u64>>,
    related: Mutex<Related>,
    /// The OpenShift groups discovery found.
    platform: std::sync::OnceLock<Platform>,
}

/// Whether a request error is worth retrying.
fn retriable(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => matches!(s.code, 429 | 500 | 502 | 503 | 504),
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// Whether a request error means the API server is gone for all resources.
fn fatal(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 401,
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::Auth(_) => true,
        _ => false,
    }
}

fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

fn resource_key(resource: &str, group: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

/// A 128-bit hash of an object's namespace and name (two SipHash runs).
fn key_hash(namespace: &str, name: &str) -> u128 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut a = DefaultHasher::new();
    (namespace, name).hash(&mut a);
    let mut b = DefaultHasher::new();
    (name, 0x5au8, namespace).hash(&mut b);
    (u128::from(a.finish()) << 64) | u128::from(b.finish())
}

/// Some top-level members of an object as a JSON object.
fn json_members(obj: Option<&Object<'_>>, keys: &[&str]) -> Value {
    let mut m = serde_json::Map::new();
    for k in keys {
        if let Some(v) = obj.and_then(|o| o.value(k)) {
            m.insert((*k).to_string(), v);
        }
    }
    Value::Object(m)
}

fn str_at<'v>(v: &'v Value, ptr: &str) -> Option<&'v str> {
    v.pointer(ptr).and_then(Value::as_str)
}

fn opted_out(labels: &BTreeMap<String, String>) -> bool {
    labels.get(EXCLUDE_LABEL).map(String::as_str) == Some("true")
}

fn list_failed(key: &str, e: &kube::Error) -> String {
    format!(
        "listing {key} failed and it was not backed up: {e}; check the API server's health and \
         lifeboat's RBAC permissions for it"
    )
}

impl Ctx<'_> {
    fn related_mut(&self) -> std::sync::MutexGuard<'_, Related> {
        self.related.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn retry<T, F, Fut>(&self, mut f: F) -> Result<T, kube::Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        let policy = &self.opts.retry;
        let mut attempt = 1;
        loop {
            match f().await {
                Err(e) if attempt < policy.attempts && retriable(&e) => {
                    tracing::debug!(error = %e, attempt, "retrying API request");
                    tokio::time::sleep(policy.delay(attempt)).await;
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    async fn log(
        &self,
        level: LogLevel,
        resource: Option<String>,
        namespace: Option<String>,
        name: Option<String>,
        message: String,
    ) -> Result<(), BackupError> {
        match level {
            LogLevel::Error => {
                tracing::warn!(?resource, ?namespace, ?name, "{message}");
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
            LogLevel::Warning => {
                tracing::info!(?resource, ?namespace, ?name, "{message}");
                self.warnings.fetch_add(1, Ordering::Relaxed);
            }
            LogLevel::Info => {}
        }
        self.sink
            .log(LogEntry {
                level,
                time: jiff::Timestamp::now(),
                resource,
                namespace,
                name,
                message,
            })
            .await?;
        Ok(())
    }

    async fn discover(&self) -> Result<Vec<Target>, BackupError> {
        let client = self.client;
        let discovery = |source| BackupError::Discovery { source };
        let core = self
            .retry(move || client.list_core_api_versions())
            .await
            .map_err(discovery)?;
        let mut lists = Vec::new();
        if let Some(v) = core.versions.first() {
            let res = self
                .retry(move || client.list_core_api_resources(v))
                .await
                .map_err(discovery)?;
            lists.push((String::new(), v.clone(), res));
        }
        let groups = self
            .retry(move || client.list_api_groups())
            .await
            .map_err(discovery)?;
        for g in groups.groups {
            // Every served version, the preferred one first: a resource
            // only some versions serve (OLM's v1alpha1 Subscriptions beside
            // its v1 OperatorGroups) is stored at the most preferred
            // version that has it, as `kubectl api-resources` lists it.
            let mut versions = g.versions.clone();
            if let Some(p) = &g.preferred_version
                && let Some(i) = versions.iter().position(|v| v.version == p.version)
            {
                let preferred = versions.remove(i);
                versions.insert(0, preferred);
            }
            for gv in versions {
                let gvs = gv.group_version.as_str();
                match self
                    .retry(move || client.list_api_group_resources(gvs))
                    .await
                {
                    Ok(res) => lists.push((g.name.clone(), gv.version.clone(), res)),
                    Err(e) if fatal(&e) => return Err(discovery(e)),
                    Err(e) => {
                        self.log(
                            LogLevel::Warning,
                            None,
                            None,
                            None,
                            format!(
                                "API group version {} is unavailable and was not backed up: {e}",
                                gv.group_version
                            ),
                        )
                        .await?;
                    }
                }
            }
        }
        let mut targets = Vec::new();
        let mut seen = HashSet::new();
        for (group, version, list) in lists {
            for r in list.resources {
                if r.name.contains('/') || !r.verbs.iter().any(|v| v == "list") {
                    continue;
                }
                let key = resource_key(&r.name, &group);
                if self.opts.skip_resources.contains(&key) || !seen.insert(key.clone()) {
                    continue;
                }
                let api_version = if group.is_empty() {
                    version.clone()
                } else {
                    format!("{group}/{version}")
                };
                targets.push(Target {
                    ar: ApiResource {
                        group: group.clone(),
                        version: version.clone(),
                        api_version,
                        kind: r.kind.clone(),
                        plural: r.name.clone(),
                    },
                    key,
                    namespaced: r.namespaced,
                });
            }
        }
        Ok(targets)
    }

    /// Lists one resource (in one namespace or all), page by page, storing
    /// what the mode selects.
    async fn list_unit(
        &self,
        t: &Target,
        namespace: Option<&str>,
        mode: Mode<'_>,
    ) -> Result<UnitOutcome, BackupError> {
        let url = DynamicObject::url_path(&t.ar, namespace);
        let label_selector = match mode {
            Mode::Selected => self.label_query.clone(),
            Mode::Namespaces | Mode::Bindings(_) | Mode::Sccs(..) => None,
            Mode::Olm => self.label_query.clone(),
        };
        let mut out = UnitOutcome {
            plural: t.ar.plural.clone(),
            group: t.ar.group.clone(),
            ..UnitOutcome::default()
        };
        let mut cont: Option<String> = None;
        // Objects seen so far, to skip them after a restart (410 Gone).
        let mut seen: HashSet<u128> = HashSet::new();
        let mut restarting = false;
        let mut restarts = 0u32;
        loop {
            let lp = ListParams {
                label_selector: label_selector.clone(),
                limit: Some(self.opts.page_size.max(1)),
                continue_token: cont.clone(),
                ..ListParams::default()
            };
            let (url, lp) = (&url, &lp);
            let body = self
                .retry(move || async move {
                    let req = Request::new(url)
                        .list(lp)
                        .map_err(kube::Error::BuildRequest)?;
                    self.client.request_text(req).await
                })
                .await;
            let body = match body {
                Ok(b) => b,
                Err(e) if fatal(&e) => {
                    return Err(BackupError::ApiUnavailable {
                        doing: format!("listing {}", t.key),
                        source: e,
                    });
                }
                Err(e) if api_code(&e) == Some(410) && cont.is_some() => {
                    if restarts < 3 {
                        restarts += 1;
                        cont = None;
                        restarting = true;
                        self.log(
                            LogLevel::Warning,
                            Some(t.key.clone()),
                            namespace.map(str::to_string),
                            None,
                            format!(
                                "the list continue token expired ({e}); listing {} again from \
                                 the start, skipping objects already stored",
                                t.key
                            ),
                        )
                        .await?;
                        continue;
                    }
                    self.log(
                        LogLevel::Error,
                        Some(t.key.clone()),
                        namespace.map(str::to_string),
                        None,
                        format!(
                            "the list continue token expired ({e}) {restarts} times; {} is \
                             incomplete — use a smaller page size or back up when the API \
                             server is less busy",
                            t.key
                        ),
                    )
                    .await?;
                    break;
                }
                Err(e) => {
                    self.log(
                        LogLevel::Error,
                        Some(t.key.clone()),
                        namespace.map(str::to_string),
                        None,
                        list_failed(&t.key, &e),
                    )
                    .await?;
                    break;
                }
            };
            let page = match serde_json::from_str::<Page<'_>>(&body) {
                Ok(p) => p,
                Err(e) => {
                    self.log(
                        LogLevel::Error,
                        Some(t.key.clone()),
                        namespace.map(str::to_string),
                        None,
                        list_failed(&t.key, &kube::Error::SerdeError(e)),
                    )
                    .await?;
                    break;
                }
            };
            let items = page.items.unwrap_or_default();
            out.seen += items.len();
            // The page's objects go to the writer together.
            let mut batch = Vec::with_capacity(items.len());
            for raw in items {
                let obj = Object::parse(raw);
                let (ns, name) = obj.as_ref().map_or((None, None), |o| {
                    (o.namespace.as_deref(), o.name.as_deref())
                });
                let hash = key_hash(ns.unwrap_or_default(), name.unwrap_or_default());
                if !seen.insert(hash) && restarting {
                    continue;
                }
                if let Some(entry) = self.item(t, obj.as_ref(), mode, &mut out).await? {
                    batch.push(entry);
                }
            }
            let page_written = self.add(t, batch).await?;
            out.written += page_written;
            (self.progress)(Progress::Page {
                resource: t.key.clone(),
                namespace: namespace.map(str::to_string),
                items: page_written,
            });
            cont = page.metadata.continue_.filter(|c| !c.is_empty());
            if cont.is_none() {
                break;
            }
        }
        (self.progress)(Progress::ResourceDone {
            resource: t.key.clone(),
            namespace: namespace.map(str::to_string),
            items: out.written,
        });
        Ok(out)
    }

    /// Filters one listed object (`None`: not a JSON object) by mode and
    /// prepares it for storing. Returns the entry to store, if any.
    async fn item(
        &self,
        t: &Target,
        obj: Option<&Object<'_>>,
        mode: Mode<'_>,
        out: &mut UnitOutcome,
    ) -> Result<Option<ObjectEntry>, BackupError> {
        let labels = obj.map(Object::labels).unwrap_or_default();
        match mode {
            Mode::Selected => {
                if t.namespaced {
                    let ns = obj.and_then(|o| o.namespace.as_deref());
                    if !self.selection.namespace(ns.unwrap_or_default()) {
                        return Ok(None);
                    }
                }
                if !self.selection.labels(&labels) {
                    return Ok(None);
                }
                if let Some(o) = obj
                    && let Some(reason) = self.openshift_skip(t, o)
                {
                    self.log(
                        LogLevel::Info,
                        Some(t.key.clone()),
                        o.namespace.clone(),
                        o.name.clone(),
                        format!("skipped: {reason}"),
                    )
                    .await?;
                    return Ok(None);
                }
            }
            Mode::Olm => {
                let ns = obj.and_then(|o| o.namespace.clone());
                if !self.selection.namespace(ns.as_deref().unwrap_or_default())
                    || !self.selection.labels(&labels)
                {
                    return Ok(None);
                }
                let name = obj.and_then(|o| o.name.clone());
                let mut message = format!(
                    "skipped: {} are excluded by default (OLM installs operators on the \
                     target); include {} by name to back them up",
                    t.key, t.key
                );
                if t.ar.plural == "subscriptions" {
                    let spec = obj.and_then(|o| o.value("spec")).unwrap_or_default();
                    let status = obj.and_then(|o| o.value("status")).unwrap_or_default();
                    if let Some(package) = str_at(&spec, "/name") {
                        let mut detail = Vec::new();
                        if let Some(c) = str_at(&spec, "/channel") {
                            detail.push(format!("channel {c}"));
                        }
                        if let Some(src) = str_at(&spec, "/source") {
                            detail.push(format!("catalog source {src}"));
                        }
                        if let Some(csv) = str_at(&status, "/installedCSV") {
                            detail.push(format!("installed {csv}"));
                        }
                        self.sink.prerequisite(Prerequisite {
                            kind: PrerequisiteKind::Operator,
                            name: package.to_string(),
                            namespace: ns.clone(),
                            detail: (!detail.is_empty()).then(|| detail.join(", ")),
                        });
                        message
                            .push_str(&format!("; operator {package} recorded as a prerequisite"));
                    }
                }
                self.log(LogLevel::Info, Some(t.key.clone()), ns, name, message)
                    .await?;
                return Ok(None);
            }
            Mode::Sccs(sas, namespaces) => {
                let grants = json_members(obj, &["users", "groups"]);
                if !openshift::scc_grants(&grants, sas, namespaces) || opted_out(&labels) {
                    return Ok(None);
                }
            }
            Mode::Namespaces => {
                let name = obj.and_then(|o| o.name.as_deref()).unwrap_or_default();
                if !self.selection.namespace(name) || opted_out(&labels) {
                    return Ok(None);
                }
                out.names.push(name.to_string());
                if !self.selection.resource("namespaces", "") {
                    return Ok(None);
                }
            }
            Mode::Bindings(sas) => {
                let names_sa = obj
                    .and_then(|o| o.value("subjects"))
                    .as_ref()
                    .and_then(Value::as_array)
                    .is_some_and(|subjects| {
                        subjects.iter().any(|s| {
                            str_at(s, "/kind") == Some("ServiceAccount")
                                && sas.contains(&(
                                    str_at(s, "/namespace").unwrap_or_default().to_string(),
                                    str_at(s, "/name").unwrap_or_default().to_string(),
                                ))
                        })
                    });
                if !names_sa || opted_out(&labels) {
                    return Ok(None);
                }
                let role_ref = obj.and_then(|o| o.value("roleRef")).unwrap_or_default();
                if str_at(&role_ref, "/kind") == Some("ClusterRole")
                    && let Some(role) = str_at(&role_ref, "/name")
                {
                    out.names.push(role.to_string());
                }
            }
        }
        self.prepare(t, obj).await
    }

    /// Why an OpenShift rule keeps this object out of the backup.
    fn openshift_skip(&self, t: &Target, obj: &Object<'_>) -> Option<String> {
        let platform = self.platform.get().copied().unwrap_or_default();
        let (r, g) = (t.ar.plural.as_str(), t.ar.group.as_str());
        if !platform.checks(r, g) {
            return None;
        }
        let meta = obj.value("metadata").unwrap_or_default();
        let ty = obj.value("type");
        openshift::backup_skip(&platform, r, g, &meta, ty.as_ref().and_then(Value::as_str))
    }

    /// Sends prepared objects to the writer and counts them.
    async fn add(&self, t: &Target, entries: Vec<ObjectEntry>) -> Result<u64, BackupError> {
        let n = entries.len() as u64;
        if n == 0 {
            return Ok(0);
        }
        self.sink.add_all(entries).await?;
        self.items.fetch_add(n, Ordering::Relaxed);
        *self
            .per_resource
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(t.key.clone())
            .or_default() += n;
        Ok(n)
    }

    /// Prepares one object for storing (`None`: the API returned something
    /// that is not a JSON object): its JSON without managedFields and with
    /// apiVersion and kind, and what related objects it needs. Unstorable
    /// objects are logged as errors and yield `None`.
    async fn prepare(
        &self,
        t: &Target,
        obj: Option<&Object<'_>>,
    ) -> Result<Option<ObjectEntry>, BackupError> {
        let Some(obj) = obj else {
            self.log(
                LogLevel::Error,
                Some(t.key.clone()),
                None,
                None,
                format!("the API returned a {} item that is not an object", t.key),
            )
            .await?;
            return Ok(None);
        };
        let namespace = if t.namespaced {
            obj.namespace.clone().filter(|ns| !ns.is_empty())
        } else {
            None
        };
        let Some(name) = obj.name.clone().filter(|n| !n.is_empty()) else {
            self.log(
                LogLevel::Error,
                Some(t.key.clone()),
                namespace,
                None,
                format!("the API returned a {} object without a name", t.key),
            )
            .await?;
            return Ok(None);
        };
        if t.ar.group.is_empty() {
            match t.ar.plural.as_str() {
                "persistentvolumeclaims" => {
                    if let Some(pv) = obj
                        .value("spec")
                        .as_ref()
                        .and_then(|s| s.get("volumeName"))
                        .and_then(Value::as_str)
                        .filter(|pv| !pv.is_empty())
                    {
                        self.related_mut().pvs.insert(pv.to_string());
                    }
                }
                "serviceaccounts" => {
                    if let Some(ns) = &namespace {
                        self.related_mut()
                            .service_accounts
                            .insert((ns.clone(), name.clone()));
                    }
                }
                _ => {}
            }
        }
        if t.key == "customresourcedefinitions.apiextensions.k8s.io" {
            self.related_mut().stored_crds.insert(name.clone());
        }
        if t.key == "virtualmachines.kubevirt.io"
            && let (Some(ns), Some(spec)) = (&namespace, obj.value("spec"))
        {
            let vm = serde_json::json!({ "spec": spec });
            let mut related = self.related_mut();
            for (resource, n) in crate::kubevirt::referenced_config(&vm) {
                related
                    .vm_refs
                    .insert((resource.to_string(), ns.clone(), n));
            }
            for n in crate::kubevirt::revisions(&vm) {
                related
                    .vm_refs
                    .insert(("controllerrevisions.apps".into(), ns.clone(), n));
            }
        }
        if t.key == "imagestreams.image.openshift.io"
            && let (Some(ns), Some(status)) = (&namespace, obj.value("status"))
        {
            self.related_mut().image_streams.push(StoredImageStream {
                namespace: ns.clone(),
                name: name.clone(),
                status,
            });
        }
        let json = Bytes::from(obj.stored_json(&t.ar.api_version, &t.ar.kind));
        let entry = ObjectEntry {
            resource: t.ar.plural.clone(),
            group: t.ar.group.clone(),
            namespace,
            name,
            api_version: t.ar.api_version.clone(),
            kind: t.ar.kind.clone(),
            json,
        };
        if let Err(e) = entry.archive_path() {
            self.log(
                LogLevel::Error,
                Some(t.key.clone()),
                entry.namespace.clone(),
                Some(entry.name.clone()),
                format!("the object cannot be stored: {e}"),
            )
            .await?;
            return Ok(None);
        }
        Ok(Some(entry))
    }

    /// Whether the cluster-scoped object `name` of `t` exists, without
    /// storing it. A read that fails for another reason than 404 is logged
    /// and counts as absent.
    async fn exists(&self, t: &Target, name: &str) -> Result<bool, BackupError> {
        match self.get_raw(t, None, name).await {
            Ok(_) => Ok(true),
            Err(e) => {
                self.read_failed(t, name, e, LogLevel::Warning, |e| {
                    format!(
                        "reading {} {name} failed, so the backup does not record it as a \
                         prerequisite: {e}",
                        t.key
                    )
                })
                .await
            }
        }
    }

    /// One object of `t` as the API server sends it, read with retries.
    async fn get_raw(
        &self,
        t: &Target,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<String, kube::Error> {
        let url = DynamicObject::url_path(&t.ar, namespace);
        let url = &url;
        self.retry(move || async move {
            let req = Request::new(url)
                .get(name, &GetParams::default())
                .map_err(kube::Error::BuildRequest)?;
            let body = self.client.request_text(req).await?;
            // Checked here so that a bad body is reported like any other
            // failed read.
            serde_json::from_str::<&RawValue>(&body).map_err(kube::Error::SerdeError)?;
            Ok(body)
        })
        .await
    }

    /// A failed read of a related object: absent when the server says 404
    /// or when `message` is logged at `level`; an error when the API server
    /// is gone.
    async fn read_failed(
        &self,
        t: &Target,
        name: &str,
        e: kube::Error,
        level: LogLevel,
        message: impl FnOnce(&kube::Error) -> String,
    ) -> Result<bool, BackupError> {
        if api_code(&e) == Some(404) {
            return Ok(false);
        }
        if fatal(&e) {
            return Err(BackupError::ApiUnavailable {
                doing: format!("reading {} {name}", t.key),
                source: e,
            });
        }
        self.log(
            level,
            Some(t.key.clone()),
            None,
            Some(name.to_string()),
            message(&e),
        )
        .await?;
        Ok(false)
    }

    /// Fetches one cluster-scoped object by name and stores it unless it
    /// opted out. A missing object is not an error (404 → `Ok(false)`).
    async fn fetch_related(&self, t: &Target, name: &str) -> Result<bool, BackupError> {
        self.fetch_related_in(t, None, name).await
    }

    /// As [`Self::fetch_related`], for an object of `namespace` (`None`:
    /// cluster-scoped). A namespaced object the selection already stored
    /// (its namespace, resource and labels selected) is not stored again.
    async fn fetch_related_in(
        &self,
        t: &Target,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<bool, BackupError> {
        let got = self.get_raw(t, namespace, name).await;
        match got {
            Ok(body) => {
                let obj = serde_json::from_str::<&RawValue>(&body)
                    .ok()
                    .and_then(Object::parse);
                if obj.as_ref().is_some_and(|o| opted_out(&o.labels())) {
                    return Ok(false);
                }
                if let Some(ns) = namespace
                    && self.selection.namespace(ns)
                    && self.selection.resource(&t.ar.plural, &t.ar.group)
                    && obj
                        .as_ref()
                        .is_some_and(|o| self.selection.labels(&o.labels()))
                {
                    return Ok(false);
                }
                let stored = match self.prepare(t, obj.as_ref()).await? {
                    Some(entry) => self.add(t, vec![entry]).await? > 0,
                    None => false,
                };
                if stored {
                    (self.progress)(Progress::Related {
                        resource: t.key.clone(),
                        name: name.to_string(),
                    });
                }
                Ok(stored)
            }
            Err(e) => {
                self.read_failed(t, name, e, LogLevel::Error, |e| {
                    format!(
                        "reading related {} {name} failed and it was not backed up: {e}",
                        t.key
                    )
                })
                .await
            }
        }
    }

    /// PVs of stored PVCs, CRDs of stored custom resources, and the
    /// ClusterRoleBindings (and ClusterRoles) naming stored ServiceAccounts.
    async fn related_objects(
        &self,
        targets: &[Target],
        wholesale: &HashSet<String>,
        namespaces: &BTreeSet<String>,
    ) -> Result<(), BackupError> {
        let find = |key: &str| {
            targets.iter().find(|t| {
                t.key == key
                    && !wholesale.contains(key)
                    && self.selection.resource(&t.ar.plural, &t.ar.group)
            })
        };
        let related = std::mem::take(&mut *self.related_mut());
        if let Some(t) = find("persistentvolumes") {
            for pv in &related.pvs {
                self.fetch_related(t, pv).await?;
            }
        }
        if let Some(t) = find("customresourcedefinitions.apiextensions.k8s.io") {
            for crd in &related.crds {
                self.fetch_related(t, crd).await?;
            }
        }
        // KubeVirt: what a stored VM names in its namespace.
        for (key, ns, name) in &related.vm_refs {
            if let Some(t) = targets
                .iter()
                .find(|t| &t.key == key && self.selection.resource(&t.ar.plural, &t.ar.group))
            {
                self.fetch_related_in(t, Some(ns), name).await?;
            }
        }
        if let Some(t) = find("securitycontextconstraints.security.openshift.io") {
            let sas: BTreeSet<(String, String)> =
                related.service_accounts.iter().cloned().collect();
            self.list_unit(t, None, Mode::Sccs(&sas, namespaces))
                .await?;
        }
        if related.service_accounts.is_empty() {
            return Ok(());
        }
        let mut roles = BTreeSet::new();
        if let Some(t) = find("clusterrolebindings.rbac.authorization.k8s.io") {
            let out = self
                .list_unit(t, None, Mode::Bindings(&related.service_accounts))
                .await?;
            roles.extend(out.names);
        }
        if let Some(t) = find("clusterroles.rbac.authorization.k8s.io") {
            for role in &roles {
                self.fetch_related(t, role).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_and_caps() {
        let p = RetryPolicy {
            attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        assert_eq!(p.delay(1), Duration::from_millis(100));
        assert_eq!(p.delay(2), Duration::from_millis(200));
        assert_eq!(p.delay(5), Duration::from_secs(1));
        assert_eq!(p.delay(100), Duration::from_secs(1));
    }

    #[test]
    fn events_skipped_by_default() {
        let o = BackupOptions::default();
        assert!(o.skip_resources.contains(&"events".to_string()));
        assert!(
            o.skip_resources
                .contains(&"events.events.k8s.io".to_string())
        );
    }
}
