//! CRUD with Kubernetes API semantics, on the locked [`State`].
//!
//! Every function here runs synchronously while the caller holds the state
//! lock, so a read-modify-write is atomic and resourceVersions follow commit
//! order. The flow of a write:
//!
//! ```text
//! body ─▶ decode ─▶ metadata checks (name, namespace, generateName)
//!      ─▶ behaviours::before_* (defaults, allocation, immutability)
//!      ─▶ server-set fields (uid, creationTimestamp, resourceVersion, generation)
//!      ─▶ dryRun? answer : Store::put ─▶ behaviours::after_* (dependent objects)
//! ```
//!
//! Semantics kept from the API conventions: `metav1.Status` errors with the
//! right reason and code, optimistic concurrency on update and patch,
//! status subresource split (spec changes bump `metadata.generation`,
//! status changes do not, writes to the main resource keep the old status),
//! finalizers (delete sets `deletionTimestamp`, the object goes when its
//! last finalizer is removed), `dryRun=All`, and lists with label/field
//! selectors and `limit`/`continue` paging over a pinned snapshot.

use std::ops::Bound;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::behaviours;
use crate::controllers::gc::{self, Propagation};
use crate::error::ApiError;
use crate::fields::FieldOwners;
use crate::meta::{self, meta_mut, meta_str};
use crate::patch::{self, PatchKind};
use crate::resources::{Registry, ResourceInfo};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::{Obj, Store, Table};

/// Work to do after the state lock is released.
#[derive(Debug)]
pub enum Deferred {
    /// Finalize a Terminating namespace.
    FinalizeNamespace(String),
    /// Copy volume or snapshot bytes for the CSI driver.
    Csi(crate::csi::Job),
}

/// Everything behind the state lock.
#[derive(Debug)]
pub struct State {
    /// Objects, history, resourceVersion.
    pub store: Store,
    /// Served resources.
    pub registry: Registry,
    /// Work for after the lock.
    pub deferred: Vec<Deferred>,
    /// PEM of the cluster CA (published in `kube-root-ca.crt`).
    pub ca_pem: String,
    /// Server-side apply field ownership.
    pub fields: FieldOwners,
    /// The CSI driver's storage (volumes, snapshots).
    pub csi: crate::csi::Driver,
    /// Warnings for the current request (`Warning` headers).
    pub warnings: Vec<String>,
    /// The event recorder's aggregation cache.
    pub recorder: crate::events::Recorder,
}

/// Query parameters (repeated keys allowed).
#[derive(Debug, Default, Clone)]
pub struct Query(pub Vec<(String, String)>);

impl Query {
    /// Parses a query string.
    pub fn parse(q: Option<&str>) -> Self {
        Query(
            form_urlencoded::parse(q.unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
        )
    }
    /// First value of a key.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
    /// All values of a key.
    pub fn all(&self, k: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .collect()
    }
    /// A boolean flag (`true`/`1`).
    pub fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }
}

/// The resource request being served.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// The resource.
    pub info: &'a ResourceInfo,
    /// The version in the path.
    pub version: &'a str,
    /// Namespace from the path.
    pub namespace: &'a str,
    /// Name from the path.
    pub name: &'a str,
    /// Subresource from the path.
    pub subresource: &'a str,
    /// Query parameters.
    pub query: &'a Query,
    /// Wants a meta.k8s.io Table.
    pub table: bool,
}

impl Ctx<'_> {
    fn dry_run(&self) -> bool {
        self.query.all("dryRun").iter().any(|d| d == "All")
    }
    fn api_version(&self) -> String {
        self.info.api_version(self.version)
    }
    /// Key of the addressed object in [`FieldOwners`].
    fn field_key(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.info.group, self.info.resource, self.namespace, self.name
        )
    }
    /// `fieldManager`, or the name the API server would derive when absent.
    fn field_manager(&self) -> &str {
        self.query
            .get("fieldManager")
            .filter(|m| !m.is_empty())
            .unwrap_or("unknown")
    }
    /// Records a non-apply write for server-side apply field ownership.
    fn record_update(&self, st: &mut State, old: &Obj) {
        if self.dry_run() {
            return;
        }
        let key = self.field_key();
        match st.store.get(&self.info.key(), self.namespace, self.name) {
            Some(new) => {
                st.fields
                    .record_update(&key, &old.value(), &new.value(), self.field_manager())
            }
            None => st.fields.forget(&key),
        }
    }
}

/// A successful answer: status code and JSON body.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub code: u16,
    /// JSON body.
    pub body: Bytes,
}

fn reply(code: u16, v: &Value) -> Reply {
    Reply {
        code,
        body: Bytes::from(serde_json::to_vec(v).unwrap_or_default()),
    }
}

/// Decodes a JSON or YAML request body into an object.
pub fn decode_body(body: &[u8], content_type: &str) -> Result<Value, ApiError> {
    let yaml = content_type.contains("yaml");
    let v: Value = if yaml {
        serde_yaml_ng::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })?
    };
    Ok(v)
}

fn object_body(v: Value) -> Result<Value, ApiError> {
    if v.is_object() {
        Ok(v)
    } else {
        Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ))
    }
}

/// Serves stored bytes as the requested apiVersion.
pub fn served_bytes(obj: &Obj, api_version: &str) -> Bytes {
    if obj.api_version == api_version {
        obj.bytes.clone()
    } else {
        let mut v = obj.value();
        v["apiVersion"] = json!(api_version);
        Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
    }
}

fn check_type(cx: &Ctx, v: &Value) -> Result<(), ApiError> {
    let kind = v["kind"].as_str().unwrap_or_default();
    if !kind.is_empty() && kind != cx.info.kind {
        return Err(ApiError::bad_request(format!(
            "the kind of the provided object ({kind}) does not match the resource ({})",
            cx.info.kind
        )));
    }
    let av = v["apiVersion"].as_str().unwrap_or_default();
    if !av.is_empty()
        && av != cx.api_version()
        && !cx
            .info
            .versions
            .iter()
            .any(|ver| cx.info.api_version(ver) == av)
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({})",
            cx.api_version()
        )));
    }
    Ok(())
}

fn rv_of(v: &Value) -> &str {
    meta_str(v, "resourceVersion")
}

/// GET one object.
pub fn get(st: &State, cx: &Ctx) -> Result<Reply, ApiError> {
    let key = cx.info.key();
    let obj = st
        .store
        .get(&key, cx.namespace, cx.name)
        .ok_or_else(|| ApiError::not_found(&cx.info.group, &cx.info.resource, cx.name))?;
    if cx.table {
        return Ok(reply(200, &table(cx, &[obj], st.store.rv(), None)));
    }
    Ok(Reply {
        code: 200,
        body: served_bytes(&obj, &cx.api_version()),
    })
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    ns: String,
    name: String,
}

fn decode_continue(s: &str) -> Result<ContinueToken, ApiError> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| {
            ApiError::bad_request(
                "continue key is not valid: incorrect encoded start resourceVersion",
            )
        })?;
    serde_json::from_slice(&raw).map_err(|_| ApiError::bad_request("continue key is not valid"))
}

fn encode_continue(t: &ContinueToken) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(t).unwrap_or_default())
}

/// Parsed list options shared by list, watch and deletecollection.
#[derive(Debug, Default)]
pub struct Filter {
    /// Label selector.
    pub labels: LabelSelector,
    /// Field selector.
    pub fields: FieldSelector,
    /// Namespace restriction (path or field selector).
    pub namespace: Option<String>,
}

impl Filter {
    /// From the query and path namespace.
    pub fn from_query(q: &Query, namespace: &str) -> Result<Filter, ApiError> {
        let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or_default())
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
        let fields = FieldSelector::parse(q.get("fieldSelector").unwrap_or_default())
            .map_err(|e| ApiError::bad_request(format!("invalid field selector: {e}")))?;
        let namespace = if namespace.is_empty() {
            fields.equals("metadata.namespace").map(str::to_string)
        } else {
            Some(namespace.to_string())
        };
        Ok(Filter {
            labels,
            fields,
            namespace,
        })
    }

    /// Whether an object passes.
    pub fn matches(&self, o: &Obj) -> bool {
        self.namespace.as_ref().is_none_or(|ns| &o.namespace == ns)
            && self.labels.matches(o)
            && self.fields.matches(o)
    }

    /// Matching objects of a table, in key order, starting after `after`.
    pub fn iter<'t>(
        &'t self,
        table: &'t Table,
        after: Option<(String, String)>,
    ) -> impl Iterator<Item = &'t Arc<Obj>> + 't {
        let lower = match (after, &self.namespace) {
            (Some(k), _) => Bound::Excluded(k),
            (None, Some(ns)) => Bound::Included((ns.clone(), String::new())),
            (None, None) => Bound::Unbounded,
        };
        let ns = self.namespace.clone();
        table
            .range((lower, Bound::Unbounded))
            .take_while(move |(k, _)| ns.as_ref().is_none_or(|ns| &k.0 == ns))
            .map(|(_, v)| v)
            .filter(|o| self.labels.matches(o) && self.fields.matches(o))
    }
}

/// LIST with selectors and paging.
pub fn list(st: &mut State, cx: &Ctx) -> Result<Reply, ApiError> {
    let filter = Filter::from_query(cx.query, cx.namespace)?;
    let limit: usize = match cx.query.get("limit") {
        None | Some("") => 0,
        Some(l) => l
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
    };
    let key = cx.info.key();
    let (table, rv, after) = match cx.query.get("continue").filter(|c| !c.is_empty()) {
        Some(c) => {
            let tok = decode_continue(c)?;
            match st.store.pinned(&key, tok.rv) {
                Some(t) => (t, tok.rv, Some((tok.ns, tok.name))),
                // Snapshot evicted: continue on the live table by key order,
                // so objects that exist throughout are neither skipped nor
                // repeated.
                None => (
                    st.store.table(&key),
                    st.store.rv(),
                    Some((tok.ns, tok.name)),
                ),
            }
        }
        None => (st.store.table(&key), st.store.rv(), None),
    };
    let mut items: Vec<Arc<Obj>> = Vec::new();
    let mut more = false;
    for o in filter.iter(&table, after) {
        if limit > 0 && items.len() == limit {
            more = true;
            break;
        }
        items.push(o.clone());
    }
    let cont = if more {
        let last = items.last().expect("a full page");
        let pinned = if cx.query.get("continue").is_some_and(|c| !c.is_empty()) {
            if st.store.pinned(&key, rv).is_none() {
                st.store.pin(&key)
            } else {
                rv
            }
        } else {
            // Pin the snapshot this page came from (the live table at `rv`).
            st.store.pin(&key)
        };
        Some(encode_continue(&ContinueToken {
            rv: pinned,
            ns: last.namespace.clone(),
            name: last.name.clone(),
        }))
    } else {
        None
    };
    if cx.table {
        return Ok(reply(200, &table_doc(cx, &items, rv, cont.as_deref())));
    }
    let av = cx.api_version();
    let mut meta = json!({ "resourceVersion": rv.to_string() });
    if let Some(c) = &cont {
        meta["continue"] = json!(c);
    }
    let head =
        json!({ "kind": format!("{}List", cx.info.kind), "apiVersion": av, "metadata": meta });
    let head = serde_json::to_vec(&head).unwrap_or_default();
    let size: usize = items.iter().map(|o| o.bytes.len() + 1).sum();
    let mut out = Vec::with_capacity(head.len() + size + 16);
    out.extend_from_slice(&head[..head.len() - 1]);
    out.extend_from_slice(b",\"items\":[");
    for (i, o) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&served_bytes(o, &av));
    }
    out.extend_from_slice(b"]}");
    Ok(Reply {
        code: 200,
        body: Bytes::from(out),
    })
}

fn table_doc(cx: &Ctx, items: &[Arc<Obj>], rv: u64, cont: Option<&str>) -> Value {
    let mut t = table(cx, items, rv, None);
    if let Some(c) = cont {
        t["metadata"]["continue"] = json!(c);
    }
    t
}

/// A meta.k8s.io/v1 Table (columns from [`crate::tables`]; rows carry
/// PartialObjectMetadata, or the object with `includeObject=Object`).
pub fn table(cx: &Ctx, items: &[Arc<Obj>], rv: u64, _cont: Option<&str>) -> Value {
    let full = cx.query.get("includeObject") == Some("Object");
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let v = o.value();
            let cells = crate::tables::cells(cx.info, &v);
            let object = if full {
                v
            } else {
                json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": v["metadata"]})
            };
            json!({ "cells": cells, "object": object })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": { "resourceVersion": rv.to_string() },
        "columnDefinitions": crate::tables::columns(cx.info),
        "rows": rows,
    })
}

/// Options for [`create_object`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CreateOpts {
    /// Validate and answer only.
    pub dry_run: bool,
    /// Keep `status` (seeding, server-created objects).
    pub keep_status: bool,
}

/// Creates an object (POST, apply-create, seeding and behaviours all come
/// here). Returns the stored object.
pub fn create_object(
    st: &mut State,
    info: &ResourceInfo,
    version: &str,
    path_ns: &str,
    mut v: Value,
    opts: CreateOpts,
) -> Result<Value, ApiError> {
    let group = info.group.clone();
    // Namespace.
    let body_ns = meta_str(&v, "namespace").to_string();
    let ns = if info.namespaced {
        match (path_ns.is_empty(), body_ns.is_empty()) {
            (false, false) if path_ns != body_ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            (false, _) => path_ns.to_string(),
            (true, false) => body_ns,
            (true, true) => {
                return Err(ApiError::bad_request(
                    "the server could not find the requested resource: namespace is required",
                ));
            }
        }
    } else {
        String::new()
    };
    // Name.
    let mut name = meta_str(&v, "name").to_string();
    if name.is_empty() {
        let prefix = meta_str(&v, "generateName").to_string();
        if prefix.is_empty() {
            return Err(ApiError::invalid_field(
                &group,
                &info.kind,
                "",
                "metadata.name",
                "Required value: name or generateName is required",
            ));
        }
        name = meta::generate_name(&prefix);
    }
    if let Err(msg) = meta::validate_name(info.name_rule, &name) {
        return Err(ApiError::invalid_field(
            &group,
            &info.kind,
            &name,
            "metadata.name",
            msg,
        ));
    }
    if info.namespaced {
        behaviours::check_namespace_open(st, &ns)?;
    }
    let key = info.key();
    if st.store.get(&key, &ns, &name).is_some() {
        return Err(ApiError::already_exists(&group, &info.resource, &name));
    }
    // Server-set fields.
    v["apiVersion"] = json!(info.api_version(version));
    v["kind"] = json!(info.kind);
    if info.has_status()
        && !opts.keep_status
        && let Some(o) = v.as_object_mut()
    {
        o.remove("status");
    }
    {
        let m = meta_mut(&mut v);
        m.insert("name".into(), json!(name));
        if info.namespaced {
            m.insert("namespace".into(), json!(ns));
        } else {
            m.remove("namespace");
        }
        m.insert("uid".into(), json!(meta::uid()));
        m.insert("creationTimestamp".into(), json!(meta::now()));
        m.remove("deletionTimestamp");
        m.remove("deletionGracePeriodSeconds");
        m.remove("selfLink");
    }
    if v.get("spec").is_some() || info.custom {
        meta_mut(&mut v).insert("generation".into(), json!(1));
    } else {
        meta_mut(&mut v).remove("generation");
    }
    crate::secrets::normalize(info, &mut v);
    behaviours::before_create(st, info, &mut v)?;
    crate::defaults::apply(info, &mut v, true);
    let ns_obj = (info.namespaced && crate::admission::applies(&info.group, &info.resource))
        .then(|| st.store.get(&(String::new(), "namespaces".into()), "", &ns))
        .flatten()
        .map(|o| o.value());
    let warnings =
        crate::admission::check(&info.group, &info.resource, &name, ns_obj.as_ref(), &v)?;
    st.warnings.extend(warnings);
    if opts.dry_run {
        meta_mut(&mut v).remove("resourceVersion");
        return Ok(v);
    }
    meta_mut(&mut v).insert(
        "resourceVersion".into(),
        json!(st.store.next_rv().to_string()),
    );
    let obj = Obj::from_value(&v);
    st.store.put(&key, obj);
    behaviours::after_create(st, info, &v)?;
    Ok(v)
}

/// POST.
pub fn create(st: &mut State, cx: &Ctx, body: Value) -> Result<Reply, ApiError> {
    let v = object_body(body)?;
    check_type(cx, &v)?;
    let opts = CreateOpts {
        dry_run: cx.dry_run(),
        keep_status: false,
    };
    let out = create_object(st, cx.info, cx.version, cx.namespace, v, opts)?;
    Ok(reply(201, &out))
}

fn strip(v: &Value, keys: &[&str]) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        for k in keys {
            o.remove(*k);
        }
    }
    v
}

/// Replaces an object after the main-resource/status split; the core of
/// PUT and PATCH.
fn replace(st: &mut State, cx: &Ctx, old_obj: &Obj, mut new: Value) -> Result<Reply, ApiError> {
    let info = cx.info;
    let group = &info.group;
    let old = old_obj.value();
    let name = cx.name;
    // Identity checks.
    let body_name = meta_str(&new, "name");
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    let body_ns = meta_str(&new, "namespace");
    if info.namespaced && !body_ns.is_empty() && body_ns != cx.namespace {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let rv = rv_of(&new);
    if !rv.is_empty() && rv != rv_of(&old) {
        if rv.parse::<u64>().is_err() {
            return Err(ApiError::bad_request(format!(
                "invalid resourceVersion {rv:?}"
            )));
        }
        return Err(ApiError::stale(group, &info.resource, name));
    }
    if cx.subresource == "status" {
        let mut merged = old.clone();
        match new.get("status") {
            Some(s) => merged["status"] = s.clone(),
            None => {
                if let Some(o) = merged.as_object_mut() {
                    o.remove("status");
                }
            }
        }
        new = merged;
    } else {
        if info.has_status() {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(o) = new.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
        }
        check_type(cx, &new)?;
    }
    // Server-owned metadata is kept.
    new["apiVersion"] = old["apiVersion"].clone();
    new["kind"] = json!(info.kind);
    {
        let om = old["metadata"].clone();
        let m = meta_mut(&mut new);
        m.insert("name".into(), json!(name));
        if info.namespaced {
            m.insert("namespace".into(), json!(cx.namespace));
        }
        for k in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match om.get(k) {
                Some(x) => m.insert(k.into(), x.clone()),
                None => m.remove(k),
            };
        }
        m.insert("resourceVersion".into(), om["resourceVersion"].clone());
        if m.get("deletionTimestamp").is_some() {
            // Finalizers may only be removed once deletion started.
            let added = m
                .get("finalizers")
                .and_then(Value::as_array)
                .is_some_and(|f| {
                    f.iter()
                        .any(|x| !om["finalizers"].as_array().is_some_and(|o| o.contains(x)))
                });
            if added {
                return Err(ApiError::forbidden(format!(
                    "{} \"{name}\" is forbidden: no new finalizers can be added if the object is being deleted",
                    crate::error::qualified(group, &info.resource)
                )));
            }
        }
    }
    if cx.subresource != "status" {
        crate::secrets::normalize(info, &mut new);
        behaviours::before_update(st, info, &old, &mut new)?;
        crate::defaults::apply(info, &mut new, false);
        crate::secrets::check_update(info, &old, &new)?;
    }
    // Spec changes (anything outside metadata and status) bump generation.
    let spec_changed = strip(&old, &["metadata", "status"]) != strip(&new, &["metadata", "status"]);
    if spec_changed && new["metadata"].get("generation").is_some() {
        let g = new["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
        meta_mut(&mut new).insert("generation".into(), json!(g));
    }
    if new == old {
        // A no-op write keeps the resourceVersion, as etcd-backed storage does.
        return Ok(Reply {
            code: 200,
            body: served_bytes(old_obj, &cx.api_version()),
        });
    }
    if cx.dry_run() {
        return Ok(reply(200, &new));
    }
    let key = info.key();
    let next = st.store.next_rv().to_string();
    meta_mut(&mut new).insert("resourceVersion".into(), json!(next));
    let finalized = new["metadata"].get("deletionTimestamp").is_some()
        && new["metadata"]["finalizers"]
            .as_array()
            .is_none_or(|f| f.is_empty());
    if finalized {
        let obj = Obj::from_value(&new);
        st.store.remove(&key, obj);
        behaviours::after_delete(st, info, &new);
        return Ok(reply(200, &new));
    }
    st.store.put(&key, Obj::from_value(&new));
    Ok(reply(200, &new))
}

fn existing(st: &State, cx: &Ctx) -> Result<Arc<Obj>, ApiError> {
    st.store
        .get(&cx.info.key(), cx.namespace, cx.name)
        .ok_or_else(|| ApiError::not_found(&cx.info.group, &cx.info.resource, cx.name))
}

/// PUT.
pub fn update(st: &mut State, cx: &Ctx, body: Value) -> Result<Reply, ApiError> {
    let v = object_body(body)?;
    let old = existing(st, cx)?;
    let out = replace(st, cx, &old, v)?;
    cx.record_update(st, &old);
    Ok(out)
}

/// PATCH.
pub fn patch(st: &mut State, cx: &Ctx, kind: PatchKind, body: Value) -> Result<Reply, ApiError> {
    let group = &cx.info.group;
    if kind == PatchKind::Apply {
        if cx.query.get("fieldManager").is_none_or(str::is_empty) {
            return Err(ApiError::bad_request(
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            ));
        }
        let mut body = object_body(body)?;
        check_type(cx, &body)?;
        // An apply configuration may leave the name out; the URL names the object.
        if meta_str(&body, "name").is_empty() {
            meta_mut(&mut body).insert("name".into(), json!(cx.name));
        }
        let body_name = meta_str(&body, "name");
        if body_name != cx.name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({})",
                cx.name
            )));
        }
        if st
            .store
            .get(&cx.info.key(), cx.namespace, cx.name)
            .is_none()
            && cx.subresource.is_empty()
        {
            let opts = CreateOpts {
                dry_run: cx.dry_run(),
                keep_status: false,
            };
            let out = create_object(st, cx.info, cx.version, cx.namespace, body.clone(), opts)?;
            if !cx.dry_run() {
                st.fields
                    .record_apply(&cx.field_key(), None, &out, &body, cx.field_manager());
            }
            return Ok(reply(201, &out));
        }
        let old = existing(st, cx)?;
        let mut doc = old.value();
        let key = cx.field_key();
        if cx.query.get("force") != Some("true") {
            let conflicts = st.fields.check_apply(&key, &doc, &body, cx.field_manager());
            if !conflicts.is_empty() {
                return Err(ApiError::apply_conflict(
                    group,
                    &cx.info.resource,
                    cx.name,
                    &cx.api_version(),
                    &conflicts,
                ));
            }
        }
        patch::apply(kind, &mut doc, &body)
            .map_err(|e| ApiError::invalid_field(group, &cx.info.kind, cx.name, "body", e))?;
        let out = replace(st, cx, &old, doc)?;
        if !cx.dry_run()
            && let Some(new) = st.store.get(&cx.info.key(), cx.namespace, cx.name)
        {
            st.fields.record_apply(
                &key,
                Some(&old.value()),
                &new.value(),
                &body,
                cx.field_manager(),
            );
        }
        return Ok(out);
    }
    let old = existing(st, cx)?;
    let mut doc = old.value();
    patch::apply(kind, &mut doc, &body).map_err(|e| match kind {
        PatchKind::Json => ApiError::invalid_field(group, &cx.info.kind, cx.name, "patch", e),
        _ => ApiError::bad_request(e),
    })?;
    if !doc.is_object() {
        return Err(ApiError::bad_request(
            "the patch turned the object into a non-object",
        ));
    }
    let out = replace(st, cx, &old, doc)?;
    cx.record_update(st, &old);
    Ok(out)
}

/// Marks an object deleted or removes it, with the resource's default
/// propagation policy. Returns the object as answered.
pub fn delete_object(
    st: &mut State,
    info: &ResourceInfo,
    obj: &Obj,
    dry_run: bool,
) -> Result<Value, ApiError> {
    delete_object_with(st, info, obj, dry_run, None, None)
}

/// [`delete_object`] with a propagation policy (Foreground and Orphan add
/// the garbage collector's finalizer, so the object is only marked) and the
/// `gracePeriodSeconds` of the DeleteOptions.
pub fn delete_object_with(
    st: &mut State,
    info: &ResourceInfo,
    obj: &Obj,
    dry_run: bool,
    policy: Option<Propagation>,
    grace: Option<i64>,
) -> Result<Value, ApiError> {
    let mut v = obj.value();
    let key = info.key();
    let policy = policy.unwrap_or_else(|| gc::default_policy(info, info.preferred()));
    let refinalized = gc::add_finalizer(&mut v, policy);
    let has_finalizers = v["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| !f.is_empty());
    let pod_grace = if info.group.is_empty() && info.resource == "pods" {
        crate::kubelet::grace_period(&v, grace)
    } else {
        0
    };
    let graceful = info.resource == "namespaces" || has_finalizers || pod_grace > 0;
    if graceful {
        if v["metadata"].get("deletionTimestamp").is_some() {
            if refinalized && !dry_run {
                // A second delete with another policy switches finalizers.
                meta_mut(&mut v).insert(
                    "resourceVersion".into(),
                    json!(st.store.next_rv().to_string()),
                );
                st.store.put(&key, Obj::from_value(&v));
                return Ok(v);
            }
            let current = v["metadata"]["deletionGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(0);
            if pod_grace == 0 || pod_grace >= current {
                return Ok(v);
            }
        }
        let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(pod_grace);
        meta_mut(&mut v).insert(
            "deletionTimestamp".into(),
            json!(at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
        );
        meta_mut(&mut v).insert("deletionGracePeriodSeconds".into(), json!(pod_grace));
        if info.resource == "namespaces" {
            v["status"]["phase"] = json!("Terminating");
        }
        if dry_run {
            return Ok(v);
        }
        meta_mut(&mut v).insert(
            "resourceVersion".into(),
            json!(st.store.next_rv().to_string()),
        );
        st.store.put(&key, Obj::from_value(&v));
        if info.resource == "namespaces" {
            st.deferred
                .push(Deferred::FinalizeNamespace(obj.name.clone()));
        }
        return Ok(v);
    }
    if dry_run {
        return Ok(v);
    }
    meta_mut(&mut v).insert(
        "resourceVersion".into(),
        json!(st.store.next_rv().to_string()),
    );
    st.store.remove(&key, Obj::from_value(&v));
    behaviours::after_delete(st, info, &v);
    Ok(v)
}

/// DELETE one object.
pub fn delete(st: &mut State, cx: &Ctx, body: Option<Value>) -> Result<Reply, ApiError> {
    let old = existing(st, cx)?;
    if let Some(pre) = body.as_ref().map(|b| &b["preconditions"]) {
        let v = old.value();
        if let Some(uid) = pre["uid"].as_str()
            && uid != meta_str(&v, "uid")
        {
            return Err(ApiError::conflict(
                &cx.info.group,
                &cx.info.resource,
                cx.name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&v, "uid")
                ),
            ));
        }
        if let Some(rv) = pre["resourceVersion"].as_str()
            && rv != meta_str(&v, "resourceVersion")
        {
            return Err(ApiError::conflict(
                &cx.info.group,
                &cx.info.resource,
                cx.name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    meta_str(&v, "resourceVersion")
                ),
            ));
        }
    }
    let dry = cx.dry_run()
        || body.as_ref().is_some_and(|b| {
            b["dryRun"]
                .as_array()
                .is_some_and(|d| d.iter().any(|x| x == "All"))
        });
    let policy = gc::policy(cx.info, cx.version, body.as_ref(), cx.query)?;
    let grace = body
        .as_ref()
        .and_then(|b| b["gracePeriodSeconds"].as_i64())
        .or_else(|| {
            cx.query
                .get("gracePeriodSeconds")
                .and_then(|g| g.parse().ok())
        });
    let out = delete_object_with(st, cx.info, &old, dry, Some(policy), grace)?;
    Ok(reply(200, &out))
}

/// DELETE a collection (selectors apply).
pub fn delete_collection(st: &mut State, cx: &Ctx) -> Result<Reply, ApiError> {
    let filter = Filter::from_query(cx.query, cx.namespace)?;
    let table = st.store.table(&cx.info.key());
    let victims: Vec<Arc<Obj>> = filter.iter(&table, None).cloned().collect();
    let mut items = Vec::new();
    let grace = cx
        .query
        .get("gracePeriodSeconds")
        .and_then(|g| g.parse().ok());
    for o in victims {
        items.push(delete_object_with(
            st,
            cx.info,
            &o,
            cx.dry_run(),
            None,
            grace,
        )?);
    }
    Ok(reply(
        200,
        &json!({"kind": format!("{}List", cx.info.kind), "apiVersion": cx.api_version(),
            "metadata": {"resourceVersion": st.store.rv().to_string()}, "items": items}),
    ))
}
