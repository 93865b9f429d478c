//! `?watch=true`: a chunked stream of `{"type": …, "object": …}` lines.
//!
//! ```text
//!  lock ─▶ initial events (state as ADDED, or history after resourceVersion)
//!       ─▶ subscribe to the broadcast  (same lock: no gap, no duplicate)
//!  task ─▶ filter (namespace, label/field selectors; a MODIFIED that leaves
//!          or enters the selection becomes DELETED / ADDED) ─▶ client
//!       ─▶ BOOKMARK every bookmark interval when allowWatchBookmarks
//!       ─▶ ends at timeoutSeconds, on shutdown, or with 410 Expired when the
//!          watcher fell too far behind
//! ```
//!
//! Without a resourceVersion (or with "0") the current objects are sent as
//! ADDED first; with `sendInitialEvents=true` (streaming lists) they are
//! followed by a BOOKMARK annotated `k8s.io/initial-events-end`. A
//! resourceVersion older than the kept history answers an ERROR event with
//! a 410 Expired Status, as kube-apiserver does after compaction.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use serde_json::json;
use tokio::sync::{broadcast, mpsc};

use crate::error::ApiError;
use crate::handlers::{Filter, Query, served_bytes};
use crate::resources::ResourceInfo;
use crate::server::Shared;
use crate::store::{Event, EventType, Obj};

struct Watch {
    filter: Filter,
    key: (String, String),
    api_version: String,
    kind: String,
    /// Events carry one-row Tables (`kubectl get -w`).
    table: Option<(ResourceInfo, bool)>,
}

impl Watch {
    fn line(&self, ty: &str, obj: &Obj) -> Bytes {
        let body = match &self.table {
            Some((info, full)) => Bytes::from(
                serde_json::to_vec(&crate::tables::watch_table(info, obj, *full))
                    .unwrap_or_default(),
            ),
            None => served_bytes(obj, &self.api_version),
        };
        let mut out = Vec::with_capacity(body.len() + 32);
        out.extend_from_slice(b"{\"type\":\"");
        out.extend_from_slice(ty.as_bytes());
        out.extend_from_slice(b"\",\"object\":");
        out.extend_from_slice(&body);
        out.extend_from_slice(b"}\n");
        Bytes::from(out)
    }

    fn event(&self, ev: &Event) -> Option<Bytes> {
        if ev.key != self.key {
            return None;
        }
        let now = self.filter.matches(&ev.obj);
        let ty = match ev.kind {
            EventType::Added => now.then_some("ADDED"),
            EventType::Deleted => now.then_some("DELETED"),
            EventType::Modified => {
                let before = ev.prev.as_ref().is_some_and(|p| self.filter.matches(p));
                match (before, now) {
                    (true, true) => Some("MODIFIED"),
                    (false, true) => Some("ADDED"),
                    (true, false) => Some("DELETED"),
                    (false, false) => None,
                }
            }
        }?;
        Some(self.line(ty, &ev.obj))
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = json!({"kind": self.kind, "apiVersion": self.api_version, "metadata": meta});
        let mut v =
            serde_json::to_vec(&json!({"type": "BOOKMARK", "object": obj})).unwrap_or_default();
        v.push(b'\n');
        Bytes::from(v)
    }
}

fn error_line(e: &ApiError) -> Bytes {
    let mut v =
        serde_json::to_vec(&json!({"type": "ERROR", "object": e.to_json()})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// Serves a watch request.
pub fn watch(
    shared: Arc<Shared>,
    info: &ResourceInfo,
    version: &str,
    namespace: &str,
    name: &str,
    query: &Query,
    table: bool,
) -> Result<Response, ApiError> {
    let mut filter = Filter::from_query(query, namespace)?;
    if !name.is_empty() {
        let sel = format!("metadata.name={name}");
        filter.fields =
            crate::selectors::FieldSelector::parse(&sel).map_err(ApiError::bad_request)?;
    }
    let w = Watch {
        filter,
        key: info.key(),
        api_version: info.api_version(version),
        kind: info.kind.clone(),
        table: table.then(|| (info.clone(), query.get("includeObject") == Some("Object"))),
    };
    let rv_param = query.get("resourceVersion").unwrap_or_default().to_string();
    let send_initial = query.flag("sendInitialEvents");
    let bookmarks = query.flag("allowWatchBookmarks");
    let timeout = match query.get("timeoutSeconds") {
        Some(t) => Duration::from_secs(
            t.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {t:?}")))?,
        ),
        None => Duration::from_secs(1800),
    };
    let mut initial: Vec<Bytes> = Vec::new();
    let (rx, mut last_rv) = {
        let st = shared.state.lock().expect("state lock");
        let cur = st.store.rv();
        if send_initial || rv_param.is_empty() || rv_param == "0" {
            let table = st.store.table(&w.key);
            for o in w.filter.iter(&table, None) {
                initial.push(w.line("ADDED", o));
            }
            if send_initial {
                initial.push(w.bookmark(cur, true));
            }
            (st.store.subscribe(), cur)
        } else {
            let rv: u64 = rv_param.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid resource version: {rv_param:?}"))
            })?;
            if rv < st.store.compacted() {
                let e = ApiError::expired(format!(
                    "too old resource version: {rv} ({})",
                    st.store.compacted()
                ));
                return Ok(stream_response(vec![error_line(&e)], None));
            }
            for ev in st.store.events_since(&w.key, rv) {
                if let Some(line) = w.event(&ev) {
                    initial.push(line);
                }
            }
            (st.store.subscribe(), cur.max(rv))
        }
    };
    let (tx, out) = mpsc::channel::<Bytes>(256);
    let mut shutdown = shared.shutdown.subscribe();
    let interval = shared.settings.bookmark_interval;
    tokio::spawn(async move {
        let mut rx = rx;
        for line in initial {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(interval);
        tick.tick().await;
        loop {
            let line = tokio::select! {
                ev = rx.recv() => match ev {
                    Ok(ev) => {
                        last_rv = last_rv.max(ev.obj.rv);
                        match w.event(&ev) { Some(l) => l, None => continue }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let _ = tx.send(error_line(&ApiError::expired("watch fell behind; too old resource version"))).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tick.tick(), if bookmarks => w.bookmark(last_rv, false),
                _ = &mut deadline => return,
                _ = shutdown.changed() => return,
                _ = tx.closed() => return,
            };
            if tx.send(line).await.is_err() {
                return;
            }
        }
    });
    Ok(stream_response(Vec::new(), Some(out)))
}

fn stream_response(first: Vec<Bytes>, rest: Option<mpsc::Receiver<Bytes>>) -> Response {
    let head = futures::stream::iter(first.into_iter().map(Ok::<_, Infallible>));
    let tail = futures::stream::unfold(rest, |rx| async move {
        let mut rx = rx?;
        let b = rx.recv().await?;
        Some((Ok::<_, Infallible>(b), Some(rx)))
    });
    use futures::StreamExt as _;
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Body::from_stream(head.chain(tail)))
        .expect("valid response")
}
