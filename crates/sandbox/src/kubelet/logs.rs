//! Container logs and `GET pods/<name>/log` (`container`, `follow`,
//! `tailLines`, `limitBytes`; `previous` answers the current run).
//!
//! Each container run keeps its interleaved stdout and stderr in memory
//! (the newest 10 MiB, as the kubelet rotates at 10 MiB); followers wake on
//! every write and end when the container stops or the pod goes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;

use crate::error::ApiError;
use crate::handlers::Query;
use crate::server::Shared;

const MAX: usize = 10 << 20;

/// One container's log.
#[derive(Debug)]
pub struct LogBuf {
    /// (offset of the first kept byte, kept bytes).
    data: Mutex<(u64, VecDeque<u8>)>,
    closed: AtomicBool,
    tx: tokio::sync::watch::Sender<()>,
}

impl Default for LogBuf {
    fn default() -> Self {
        LogBuf {
            data: Mutex::new((0, VecDeque::new())),
            closed: AtomicBool::new(false),
            tx: tokio::sync::watch::channel(()).0,
        }
    }
}

impl LogBuf {
    /// Appends output.
    pub fn append(&self, bytes: &[u8]) {
        {
            let mut d = self.data.lock().expect("log lock");
            d.1.extend(bytes);
            let over = d.1.len().saturating_sub(MAX);
            if over > 0 {
                d.1.drain(..over);
                d.0 += over as u64;
            }
        }
        self.tx.send_modify(|_| ());
    }

    /// No more output will come (the container stopped or went).
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.tx.send_modify(|_| ());
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Everything kept, and the offset after it.
    pub fn snapshot(&self) -> (Vec<u8>, u64) {
        let d = self.data.lock().expect("log lock");
        let end = d.0 + d.1.len() as u64;
        (d.1.iter().copied().collect(), end)
    }

    fn since(&self, offset: u64) -> (Vec<u8>, u64) {
        let d = self.data.lock().expect("log lock");
        let end = d.0 + d.1.len() as u64;
        let skip = offset.saturating_sub(d.0) as usize;
        (d.1.iter().skip(skip).copied().collect(), end)
    }
}

fn tail(bytes: &[u8], lines: usize) -> &[u8] {
    if lines == 0 {
        return &bytes[bytes.len()..];
    }
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let mut seen = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == lines {
                return &bytes[i + 1..];
            }
        }
    }
    bytes
}

/// Serves `GET pods/<name>/log`.
pub fn serve(
    shared: &Arc<Shared>,
    ns: &str,
    pod: &str,
    query: &Query,
) -> Result<Response, ApiError> {
    let (uid, container) = {
        let st = shared.state.lock().expect("state lock");
        let p = st
            .store
            .get(&(String::new(), "pods".into()), ns, pod)
            .ok_or_else(|| ApiError::not_found("", "pods", pod))?
            .value();
        let names = |field: &str| -> Vec<String> {
            p["spec"][field]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["name"].as_str().map(str::to_string))
                .collect()
        };
        let main = names("containers");
        let init = names("initContainers");
        let container = match query.get("container").filter(|c| !c.is_empty()) {
            Some(c) if main.iter().chain(&init).any(|n| n == c) => c.to_string(),
            Some(c) => {
                return Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {pod}"
                )));
            }
            None if main.len() == 1 => main[0].clone(),
            None => {
                return Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {pod}, choose one of: [{}]",
                    main.join(" ")
                )));
            }
        };
        (crate::meta::meta_str(&p, "uid").to_string(), container)
    };
    let Some(buf) = shared.kubelet.log(&uid, &container) else {
        return Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{pod}\" is waiting to start: ContainerCreating"
        )));
    };
    let (all, end) = buf.snapshot();
    let mut first: &[u8] = &all;
    if let Some(n) = query.get("tailLines").and_then(|n| n.parse::<usize>().ok()) {
        first = tail(first, n);
    }
    let limit = query
        .get("limitBytes")
        .and_then(|n| n.parse::<usize>().ok());
    if let Some(l) = limit {
        first = &first[..first.len().min(l)];
    }
    let first = Bytes::copy_from_slice(first);
    let follow = query.flag("follow") && limit.is_none();
    let resp = Response::builder()
        .status(200)
        .header("content-type", "text/plain");
    if !follow {
        return Ok(resp.body(Body::from(first)).expect("valid response"));
    }
    let stop = shared.shutdown.subscribe();
    let rx = buf.tx.subscribe();
    let stream = futures::stream::unfold(
        (Some(first), end, buf, rx, stop),
        |(pending, offset, buf, mut rx, mut stop)| async move {
            if let Some(b) = pending {
                return Some((
                    Ok::<_, std::convert::Infallible>(b),
                    (None, offset, buf, rx, stop),
                ));
            }
            loop {
                rx.borrow_and_update();
                let (more, end) = buf.since(offset);
                if !more.is_empty() {
                    return Some((Ok(Bytes::from(more)), (None, end, buf, rx, stop)));
                }
                if buf.is_closed() || *stop.borrow() {
                    return None;
                }
                tokio::select! {
                    r = rx.changed() => if r.is_err() { return None },
                    _ = stop.changed() => return None,
                }
            }
        },
    );
    Ok(resp
        .body(Body::from_stream(stream))
        .expect("valid response"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_counts_lines_from_the_end() {
        assert_eq!(tail(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail(b"a\nb\nc", 1), b"c");
        assert_eq!(tail(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(tail(b"a\n", 0), b"");
    }

    #[test]
    fn the_newest_bytes_are_kept() {
        let b = LogBuf::default();
        b.append(&vec![b'x'; MAX]);
        b.append(b"end");
        let (data, end) = b.snapshot();
        assert_eq!(data.len(), MAX);
        assert!(data.ends_with(b"end"));
        assert_eq!(end, MAX as u64 + 3);
        assert_eq!(b.since(end - 3).0, b"end");
    }
}
