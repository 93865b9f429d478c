//! The HTTP server: accept loop (plain or TLS), per-request routing,
//! authentication, fault injection and the request log.
//!
//! ```text
//! TCP ─▶ [TLS] ─▶ hyper http1 (with upgrades) ─▶ handle()
//!   handle: classify path ─▶ bearer token? ─▶ faults (latency / error / drop)
//!         ─▶ discovery | watch | exec | CRUD (handlers, under the state lock)
//!         ─▶ deferred behaviours spawned ─▶ request log
//! ```
//!
//! Dropping a connection is done by failing the hyper service, which makes
//! hyper close the connection without writing a response.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::behaviours;
use crate::discovery;
use crate::error::ApiError;
use crate::exec::ExecHandler;
use crate::faults::{FaultAction, Faults, RequestRecord};
use crate::handlers::{self, Ctx, Deferred, Query, State};
use crate::patch::PatchKind;

/// Server settings fixed at start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Required bearer token.
    pub token: Option<String>,
    /// Interval of watch bookmarks.
    pub bookmark_interval: Duration,
    /// Delay before a VolumeSnapshot becomes ready.
    pub snapshot_delay: Duration,
    /// Delay before a Terminating namespace is finalized.
    pub namespace_delay: Duration,
    /// Largest accepted request body.
    pub max_body: usize,
}

/// State shared by all connections.
pub struct Shared {
    /// Objects and registry.
    pub state: Mutex<State>,
    /// Settings.
    pub settings: Settings,
    /// Fault rules.
    pub faults: Mutex<Faults>,
    /// Request log.
    pub log: Mutex<Vec<RequestRecord>>,
    /// Exec handler.
    pub exec: RwLock<Option<ExecHandler>>,
    /// Flips to true on shutdown.
    pub shutdown: tokio::sync::watch::Sender<bool>,
    /// Base URL (for `/api`'s serverAddress).
    pub url: String,
    /// The nodes' kubelets (logs, processes).
    pub kubelet: Arc<crate::kubelet::Runtime>,
    /// The request log file, when configured.
    pub reqlog: Option<crate::reqlog::RequestLog>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("url", &self.url)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The error that makes hyper drop a connection.
#[derive(Debug)]
struct Dropped;
impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped (fault injection or shutdown)")
    }
}
impl std::error::Error for Dropped {}

/// Accepts connections until shutdown.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, tls: Option<TlsAcceptor>) {
    let mut stop = shared.shutdown.subscribe();
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        if *shared.shutdown.borrow() {
            return;
        }
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let mut stop = shared.shutdown.subscribe();
            let svc = hyper::service::service_fn(move |req| handle(shared.clone(), req));
            let http = hyper::server::conn::http1::Builder::new();
            match tls {
                Some(acceptor) => {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let conn = http
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades();
                    tokio::select! { _ = conn => {}, _ = stop.changed() => {} }
                }
                None => {
                    let conn = http
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades();
                    tokio::select! { _ = conn => {}, _ = stop.changed() => {} }
                }
            }
        });
    }
}

/// Where a path leads.
#[derive(Debug, Clone, PartialEq)]
enum Route {
    Version,
    Health,
    Api,
    Apis,
    Group(String),
    Resources(String, String),
    Resource,
    OpenApiV2,
    NotFound,
}

fn classify(method: &Method, path: &str, query: &Query) -> (Route, RequestRecord) {
    let mut rec = RequestRecord {
        path: path.to_string(),
        ..Default::default()
    };
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let nonresource = |rec: &mut RequestRecord| rec.verb = method.as_str().to_ascii_lowercase();
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["version"] => {
            nonresource(&mut rec);
            return (Route::Version, rec);
        }
        ["healthz" | "livez" | "readyz", ..] => {
            nonresource(&mut rec);
            return (Route::Health, rec);
        }
        ["openapi", "v2"] => {
            nonresource(&mut rec);
            return (Route::OpenApiV2, rec);
        }
        ["api"] => {
            nonresource(&mut rec);
            return (Route::Api, rec);
        }
        ["apis"] => {
            nonresource(&mut rec);
            return (Route::Apis, rec);
        }
        ["apis", g] => {
            nonresource(&mut rec);
            return (Route::Group((*g).to_string()), rec);
        }
        ["api", v] => {
            nonresource(&mut rec);
            rec.version = (*v).to_string();
            return (Route::Resources(String::new(), (*v).to_string()), rec);
        }
        ["apis", g, v] => {
            nonresource(&mut rec);
            rec.group = (*g).to_string();
            rec.version = (*v).to_string();
            return (Route::Resources((*g).to_string(), (*v).to_string()), rec);
        }
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => {
            nonresource(&mut rec);
            return (Route::NotFound, rec);
        }
    };
    rec.group = group.to_string();
    rec.version = version.to_string();
    let rest: &[&str] = if rest.len() >= 3
        && rest[0] == "namespaces"
        && !(rest.len() == 3 && matches!(rest[2], "status" | "finalize"))
    {
        rec.namespace = rest[1].to_string();
        &rest[2..]
    } else {
        rest
    };
    if rest.is_empty() || rest.len() > 3 {
        nonresource(&mut rec);
        return (Route::NotFound, rec);
    }
    rec.resource = rest[0].to_string();
    rec.name = rest.get(1).map(|s| (*s).to_string()).unwrap_or_default();
    rec.subresource = rest.get(2).map(|s| (*s).to_string()).unwrap_or_default();
    let watch = query.flag("watch");
    rec.verb = match *method {
        Method::GET if watch => "watch",
        Method::GET if rec.name.is_empty() => "list",
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if rec.name.is_empty() => "deletecollection",
        Method::DELETE => "delete",
        _ => "unknown",
    }
    .to_string();
    (Route::Resource, rec)
}

fn json_response(code: u16, body: Bytes) -> Response {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("valid response")
}

fn error_response(e: &ApiError) -> Response {
    let mut r = json_response(
        e.code,
        Bytes::from(serde_json::to_vec(&e.to_json()).unwrap_or_default()),
    );
    if let Some(s) = e.retry_after {
        r.headers_mut().insert("retry-after", s.into());
    }
    r
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response, Dropped> {
    // A stopped server answers nothing, even on a kept-alive connection
    // whose task has not yet seen the shutdown.
    if *shared.shutdown.borrow() {
        return Err(Dropped);
    }
    let req = req.map(Body::new);
    let start = crate::reqlog::now();
    let raw_query = req.uri().query().unwrap_or_default().to_string();
    let query = Query::parse(req.uri().query());
    let (route, mut rec) = classify(req.method(), req.uri().path(), &query);
    rec.user_agent = req
        .headers()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let result = async {
        if route != Route::Health
            && let Some(token) = &shared.settings.token
        {
            let got = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if got.strip_prefix("Bearer ").map(str::trim) != Some(token.as_str()) {
                return Ok(error_response(&ApiError::unauthorized()));
            }
        }
        let actions = shared.faults.lock().expect("faults lock").decide(&rec);
        for a in actions {
            match a {
                FaultAction::Latency(d) => tokio::time::sleep(d).await,
                FaultAction::Error { code, retry_after } => {
                    return Ok(error_response(&ApiError::injected(code, retry_after, None)));
                }
                FaultAction::Drop => return Err(Dropped),
            }
        }
        Ok(route_request(&shared, route, &rec, query, req, &start)
            .await
            .unwrap_or_else(|e| error_response(&e)))
    }
    .await;
    rec.status = result.as_ref().map(|r| r.status().as_u16()).unwrap_or(0);
    // A started exec writes its line when the command ends.
    if let Some(log) = &shared.reqlog
        && !(rec.subresource == "exec" && rec.status == 101)
    {
        log.write(&crate::reqlog::RequestLog::line(&start, &rec, &raw_query));
    }
    shared.log.lock().expect("log lock").push(rec);
    result
}

async fn route_request(
    shared: &Arc<Shared>,
    route: Route,
    rec: &RequestRecord,
    query: Query,
    req: axum::extract::Request,
    start: &str,
) -> Result<Response, ApiError> {
    let doc = |v: serde_json::Value| {
        json_response(200, Bytes::from(serde_json::to_vec(&v).unwrap_or_default()))
    };
    let get_only = || {
        if req.method() == Method::GET {
            Ok(())
        } else {
            Err(ApiError::method_not_allowed("only GET is allowed"))
        }
    };
    match route {
        Route::Health => Ok(Response::builder()
            .status(200)
            .body(Body::from("ok"))
            .expect("valid response")),
        Route::Version => get_only().map(|_| doc(discovery::version())),
        Route::Api => get_only().map(|_| doc(discovery::core_versions(&shared.url))),
        Route::Apis => {
            get_only()?;
            let st = shared.state.lock().expect("state lock");
            Ok(doc(discovery::groups(&st.registry)))
        }
        Route::Group(g) => {
            get_only()?;
            let st = shared.state.lock().expect("state lock");
            discovery::group(&st.registry, &g)
                .map(doc)
                .ok_or_else(ApiError::no_route)
        }
        Route::Resources(g, v) => {
            get_only()?;
            let st = shared.state.lock().expect("state lock");
            discovery::resources(&st.registry, &g, &v)
                .map(doc)
                .ok_or_else(ApiError::no_route)
        }
        // An empty protobuf `openapi_v2.Document` (zero bytes): kubectl's
        // client-side validation then finds no schema and skips validation,
        // and apply falls back to its compiled-in patch metadata.
        Route::OpenApiV2 => {
            get_only()?;
            Ok(Response::builder()
                .status(200)
                .header("content-type", "application/octet-stream")
                .body(Body::empty())
                .expect("valid response"))
        }
        Route::NotFound => Err(ApiError::no_route()),
        Route::Resource => resource_request(shared, rec, query, req, start).await,
    }
}

async fn resource_request(
    shared: &Arc<Shared>,
    rec: &RequestRecord,
    query: Query,
    req: axum::extract::Request,
    start: &str,
) -> Result<Response, ApiError> {
    if rec.group == crate::kubevirt::SUBRESOURCES_GROUP && rec.version == "v1" {
        let method = req.method().clone();
        let body = axum::body::to_bytes(req.into_body(), shared.settings.max_body)
            .await
            .map_err(|_| ApiError::too_large())?;
        let (out, deferred) = {
            let mut st = shared.state.lock().expect("state lock");
            let out = crate::kubevirt::subresource(
                &mut st,
                &method,
                &rec.namespace,
                &rec.resource,
                &rec.name,
                &rec.subresource,
                &body,
            );
            (out, std::mem::take(&mut st.deferred))
        };
        run_deferred(shared, deferred);
        let out = out?;
        return Ok(json_response(
            200,
            Bytes::from(serde_json::to_vec(&out).unwrap_or_default()),
        ));
    }
    let info = shared
        .state
        .lock()
        .expect("state lock")
        .registry
        .get(&rec.group, &rec.version, &rec.resource)
        .ok_or_else(ApiError::no_route)?;
    let sub = rec.subresource.as_str();
    if !sub.is_empty() && !info.subresources.iter().any(|s| s == sub) {
        return Err(ApiError::no_route());
    }
    if !info.namespaced && !rec.namespace.is_empty() {
        return Err(ApiError::no_route());
    }
    match sub {
        "exec" | "attach" => {
            if sub == "attach" {
                return Err(ApiError::bad_request(
                    "attach is not supported by the sandbox",
                ));
            }
            let pending = shared.reqlog.as_ref().map(|log| {
                let mut r = rec.clone();
                r.status = 101;
                let q = req.uri().query().unwrap_or_default();
                crate::reqlog::PendingExec {
                    log: log.clone(),
                    line: crate::reqlog::RequestLog::line(start, &r, q),
                }
            });
            return crate::exec::exec(
                shared.clone(),
                req,
                rec.namespace.clone(),
                rec.name.clone(),
                query,
                pending,
            )
            .await;
        }
        "log" => return crate::kubelet::logs::serve(shared, &rec.namespace, &rec.name, &query),
        "binding" if rec.verb == "create" => {
            let body = axum::body::to_bytes(req.into_body(), shared.settings.max_body)
                .await
                .map_err(|_| ApiError::too_large())?;
            let v = handlers::decode_body(&body, "application/json")?;
            let out = {
                let mut st = shared.state.lock().expect("state lock");
                crate::scheduler::binding_subresource(&mut st, &rec.namespace, &rec.name, &v)?
            };
            return Ok(json_response(
                201,
                Bytes::from(serde_json::to_vec(&out).unwrap_or_default()),
            ));
        }
        "" | "status" | "scale" => {}
        _ => {
            return Err(ApiError::method_not_allowed(format!(
                "the sandbox does not serve {}/{sub}",
                info.resource
            )));
        }
    }
    if rec.verb == "watch" {
        let table = req
            .headers()
            .get("accept")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("as=Table"));
        return crate::watch::watch(
            shared.clone(),
            &info,
            &rec.version,
            &rec.namespace,
            &rec.name,
            &query,
            table,
        );
    }
    if !sub.is_empty() && !matches!(rec.verb.as_str(), "get" | "update" | "patch") {
        return Err(ApiError::method_not_allowed(format!(
            "{} is not allowed on {}/{sub}",
            rec.verb, info.resource
        )));
    }
    if !info.verbs.iter().any(|v| v == &rec.verb) {
        return Err(ApiError::method_not_allowed(format!(
            "{} is not allowed on {}",
            rec.verb, info.resource
        )));
    }
    let accept = req
        .headers()
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = axum::body::to_bytes(req.into_body(), shared.settings.max_body)
        .await
        .map_err(|_| ApiError::too_large())?;
    let cx = Ctx {
        info: &info,
        version: &rec.version,
        namespace: &rec.namespace,
        name: &rec.name,
        subresource: sub,
        query: &query,
        table: accept.contains("as=Table"),
    };
    let decode = |ct: &str| -> Result<serde_json::Value, ApiError> {
        if crate::protobuf::is_protobuf(ct) {
            return crate::protobuf::decode(&body);
        }
        if ct.contains("protobuf") {
            return Err(ApiError::unsupported_media_type(ct));
        }
        handlers::decode_body(&body, ct)
    };
    let (reply, deferred) = {
        let mut st = shared.state.lock().expect("state lock");
        // Warnings left by background work or seeding are not this request's.
        st.warnings.clear();
        let r = match rec.verb.as_str() {
            "get" if sub == "scale" => crate::scale::get(&st, &cx),
            "update" if sub == "scale" => {
                decode(&content_type).and_then(|b| crate::scale::update(&mut st, &cx, b))
            }
            "patch" if sub == "scale" => PatchKind::from_content_type(&content_type)
                .ok_or_else(|| ApiError::unsupported_media_type(&content_type))
                .and_then(|k| {
                    let ct = if k == PatchKind::Apply {
                        "application/yaml"
                    } else {
                        "application/json"
                    };
                    decode(ct).and_then(|b| crate::scale::patch(&mut st, &cx, k, b))
                }),
            "get" => handlers::get(&st, &cx),
            "list" => handlers::list(&mut st, &cx),
            "create" => decode(&content_type).and_then(|b| handlers::create(&mut st, &cx, b)),
            "update" => decode(&content_type).and_then(|b| handlers::update(&mut st, &cx, b)),
            "patch" => {
                let kind = PatchKind::from_content_type(&content_type)
                    .ok_or_else(|| ApiError::unsupported_media_type(&content_type));
                kind.and_then(|k| {
                    let ct = if k == PatchKind::Apply {
                        "application/yaml"
                    } else {
                        "application/json"
                    };
                    decode(ct).map(|b| (k, b))
                })
                .and_then(|(k, b)| handlers::patch(&mut st, &cx, k, b))
            }
            "delete" => {
                let opts = if body.is_empty() {
                    Ok(None)
                } else if crate::protobuf::is_protobuf(&content_type) {
                    decode(&content_type).map(Some)
                } else {
                    decode("application/json").map(Some)
                };
                opts.and_then(|o| handlers::delete(&mut st, &cx, o))
            }
            "deletecollection" => handlers::delete_collection(&mut st, &cx),
            v => Err(ApiError::method_not_allowed(format!(
                "unsupported verb {v}"
            ))),
        };
        let warnings = std::mem::take(&mut st.warnings);
        (r.map(|r| (r, warnings)), std::mem::take(&mut st.deferred))
    };
    run_deferred(shared, deferred);
    let (reply, warnings) = reply?;
    let mut resp = json_response(reply.code, reply.body);
    for w in warnings {
        // RFC 7234 warn-code 299 with the text quoted, as kube-apiserver sends it.
        let quoted = format!("299 - \"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""));
        if let Ok(h) = http::HeaderValue::from_str(&quoted) {
            resp.headers_mut().append("warning", h);
        }
    }
    Ok(resp)
}

/// Spawns the delayed behaviours.
pub fn run_deferred(shared: &Arc<Shared>, items: Vec<Deferred>) {
    for d in items {
        let shared = shared.clone();
        match d {
            Deferred::FinalizeNamespace(ns) => {
                tokio::spawn(async move {
                    tokio::time::sleep(shared.settings.namespace_delay).await;
                    let more = {
                        let mut st = shared.state.lock().expect("state lock");
                        behaviours::finalize_namespace(&mut st, &ns);
                        std::mem::take(&mut st.deferred)
                    };
                    run_deferred(&shared, more);
                });
            }
            // The CSI driver's copies and readiness delays.
            Deferred::Csi(job) => {
                tokio::spawn(crate::csi::run(shared, job));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_classify_like_kube_apiserver() {
        let q = Query::default();
        let (r, rec) = classify(&Method::GET, "/api/v1/namespaces/ns1/pods/p/exec", &q);
        assert_eq!(r, Route::Resource);
        assert_eq!(
            (
                rec.namespace.as_str(),
                rec.resource.as_str(),
                rec.name.as_str(),
                rec.subresource.as_str()
            ),
            ("ns1", "pods", "p", "exec")
        );
        let (_, rec) = classify(&Method::PUT, "/api/v1/namespaces/ns1/status", &q);
        assert_eq!(
            (
                rec.resource.as_str(),
                rec.name.as_str(),
                rec.subresource.as_str(),
                rec.verb.as_str()
            ),
            ("namespaces", "ns1", "status", "update")
        );
        let (_, rec) = classify(
            &Method::DELETE,
            "/apis/apps/v1/namespaces/a/deployments",
            &q,
        );
        assert_eq!(
            (rec.group.as_str(), rec.verb.as_str()),
            ("apps", "deletecollection")
        );
        let (_, rec) = classify(
            &Method::GET,
            "/api/v1/namespaces",
            &Query::parse(Some("watch=true")),
        );
        assert_eq!(rec.verb, "watch");
        assert_eq!(classify(&Method::GET, "/openapi/v3", &q).0, Route::NotFound);
        assert_eq!(
            classify(&Method::GET, "/apis/g/v/a/b/c/d", &q).0,
            Route::NotFound
        );
    }
}
