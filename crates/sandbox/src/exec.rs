//! `pods/exec` over WebSocket, speaking the `v5.channel.k8s.io` and
//! `v4.channel.k8s.io` subprotocols as kubelet does: each binary message
//! starts with a channel byte (1 stdout, 2 stderr, 3 error/status); the
//! exit status is a `metav1.Status` on channel 3 (`Success`, or `Failure`
//! with reason `NonZeroExitCode` and the code in `details.causes`).
//!
//! Tests register an [`ExecHandler`] that maps (pod, container, command)
//! to stdout, stderr and an exit code. Without one, every command exits 0
//! with no output. A handler's output may take time ([`ExecOutput::after`])
//! or never come ([`ExecOutput::hang`]), as a slow or stuck process in a
//! container: the stream stays open with nothing on it until then, or
//! until the client goes away (the request log then records exit code -1).
//!
//! Large output is streamed as a process writes it
//! ([`ExecOutput::streaming`]: chunks from a generator, each sent once
//! the client took the one before, so neither side holds it whole).
//!
//! Stdin follows kubelet: data arrives on channel 0; with `v5.channel.k8s.io`
//! the client ends it with a close frame for channel 0 (`[255, 0]`) and
//! the process sees end of file; with v4 only closing the whole connection
//! ends stdin, and then nothing of the output reaches the client. A
//! process that reads its stdin ([`ExecOutput::reading_stdin`]) writes its
//! output and exits only after that end of file. Other processes ignore
//! stdin, as do TTY resize messages (channel 4).
//!
//! The WebSocket handshake (RFC 6455) is answered here and the upgraded
//! connection driven by tokio-tungstenite, the same version kube's client
//! uses, so the build carries one tungstenite.

use std::sync::Arc;

use axum::response::Response;
use futures::{SinkExt, StreamExt};
use http::{HeaderValue, StatusCode, header};
use serde_json::json;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use crate::error::ApiError;
use crate::handlers::Query;
use crate::server::Shared;

/// What a test's exec handler is asked to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    /// Namespace of the pod.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Container (defaulted to the pod's first container).
    pub container: String,
    /// The command and its arguments.
    pub command: Vec<String>,
}

/// What a process reading its stdin is handed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdinEvent<'a> {
    /// Bytes written to its stdin.
    Data(&'a [u8]),
    /// End of file: the client closed stdin.
    Closed,
}

/// A process's reading of its stdin (see [`ExecOutput::reading_stdin`]).
#[derive(Clone)]
pub struct StdinReader(pub Arc<dyn Fn(StdinEvent<'_>) + Send + Sync>);

impl std::fmt::Debug for StdinReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StdinReader")
    }
}

impl PartialEq for StdinReader {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for StdinReader {}

/// The chunks of a large stdout, made as they are sent.
pub type Chunks = Box<dyn Iterator<Item = Vec<u8>> + Send>;

/// Output a process writes as it runs (see [`ExecOutput::streaming`]).
#[derive(Clone)]
pub struct OutputStream(pub Arc<dyn Fn() -> Chunks + Send + Sync>);

impl std::fmt::Debug for OutputStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OutputStream")
    }
}

impl PartialEq for OutputStream {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for OutputStream {}

/// What the command produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Bytes written to stdout.
    pub stdout: Vec<u8>,
    /// Bytes written to stderr.
    pub stderr: Vec<u8>,
    /// Exit code.
    pub exit_code: i32,
    /// How long the command runs before its output and status are sent
    /// (`None`: at once).
    pub takes: Option<std::time::Duration>,
    /// More stdout, written after `stdout` as the process runs.
    pub stream: Option<OutputStream>,
    /// The process reads its stdin to the end before it writes its output
    /// and exits.
    pub stdin: Option<StdinReader>,
}

impl ExecOutput {
    /// Exit 0 with this stdout.
    pub fn ok(stdout: impl Into<Vec<u8>>) -> Self {
        ExecOutput {
            stdout: stdout.into(),
            ..Default::default()
        }
    }
    /// Any outcome.
    pub fn exit(code: i32, stdout: impl Into<Vec<u8>>, stderr: impl Into<Vec<u8>>) -> Self {
        ExecOutput {
            stdout: stdout.into(),
            stderr: stderr.into(),
            exit_code: code,
            ..Default::default()
        }
    }
    /// This outcome, after the process wrote the chunks `chunks()` makes to
    /// its stdout (after `stdout`), each sent when the client took the one
    /// before.
    pub fn streaming(mut self, chunks: impl Fn() -> Chunks + Send + Sync + 'static) -> Self {
        self.stream = Some(OutputStream(Arc::new(chunks)));
        self
    }
    /// This outcome, after the process read its stdin to the end, handing
    /// each piece and the end of file to `read`. It waits for that end as
    /// long as the client stays.
    pub fn reading_stdin(mut self, read: impl Fn(StdinEvent<'_>) + Send + Sync + 'static) -> Self {
        self.stdin = Some(StdinReader(Arc::new(read)));
        self
    }
    /// This outcome, after the command ran for `d`.
    pub fn after(mut self, d: std::time::Duration) -> Self {
        self.takes = Some(d);
        self
    }
    /// A command that never ends (an hour: longer than any test waits).
    pub fn hang() -> Self {
        ExecOutput::default().after(std::time::Duration::from_secs(3600))
    }
}

/// A registered exec handler.
pub type ExecHandler = Arc<dyn Fn(&ExecRequest) -> ExecOutput + Send + Sync>;

fn status(out: &ExecOutput, cmd: &[String]) -> serde_json::Value {
    if out.exit_code == 0 {
        json!({"metadata": {}, "status": "Success"})
    } else {
        json!({"metadata": {}, "status": "Failure",
            "message": format!("command terminated with non-zero exit code: error executing command {cmd:?}, exit code {}", out.exit_code),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": out.exit_code.to_string()}]}})
    }
}

/// Serves `GET/POST …/pods/<name>/exec`.
pub async fn exec(
    shared: Arc<Shared>,
    req: axum::extract::Request,
    namespace: String,
    pod: String,
    query: Query,
    log: Option<crate::reqlog::PendingExec>,
) -> Result<Response, ApiError> {
    let command = query.all("command");
    if command.is_empty() {
        return Err(ApiError::bad_request("you must specify at least 1 command"));
    }
    let container = {
        let st = shared.state.lock().expect("state lock");
        let p = st
            .store
            .get(&(String::new(), "pods".into()), &namespace, &pod)
            .ok_or_else(|| ApiError::not_found("", "pods", &pod))?
            .value();
        let names: Vec<String> = p["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_string))
            .collect();
        match query.get("container").filter(|c| !c.is_empty()) {
            Some(c) if names.iter().any(|n| n == c) => c.to_string(),
            Some(c) => {
                return Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {pod}"
                )));
            }
            None => names
                .first()
                .cloned()
                .ok_or_else(|| ApiError::bad_request(format!("pod {pod} has no containers")))?,
        }
    };
    let (accept, protocol) = handshake(&req)?;
    let on_upgrade = hyper::upgrade::on(req);
    let request = ExecRequest {
        namespace,
        pod,
        container,
        command,
    };
    let handler = shared.exec.read().expect("exec lock").clone();
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let io = hyper_util::rt::TokioIo::new(upgraded);
        let mut socket = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        let out = match handler {
            Some(h) => h(&request),
            None => ExecOutput::default(),
        };
        if let Some(reader) = &out.stdin {
            // Read stdin until its end: a v5 close frame for channel 0, or
            // (v4) the connection closing, which leaves no one to answer.
            let closed = loop {
                match socket.next().await {
                    Some(Ok(Message::Binary(b))) if b.first() == Some(&0) => {
                        (reader.0)(StdinEvent::Data(&b[1..]));
                    }
                    Some(Ok(Message::Binary(b)))
                        if protocol == Some(PROTOCOLS[0]) && b.as_ref() == [255, 0] =>
                    {
                        (reader.0)(StdinEvent::Closed);
                        break true;
                    }
                    Some(Ok(m)) if m.is_close() => break false,
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break false,
                }
            };
            if !closed {
                (reader.0)(StdinEvent::Closed);
                if let Some(log) = log {
                    log.finish(-1);
                }
                return;
            }
        }
        if let Some(d) = out.takes {
            // The command runs; a client that goes away ends the wait.
            let closed = async {
                while let Some(Ok(m)) = socket.next().await {
                    if m.is_close() {
                        break;
                    }
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = closed => {
                    if let Some(log) = log {
                        log.finish(-1);
                    }
                    return;
                }
            }
        }
        if let Some(log) = log {
            log.finish(out.exit_code);
        }
        let frame = |ch: u8, data: &[u8]| {
            let mut v = Vec::with_capacity(data.len() + 1);
            v.push(ch);
            v.extend_from_slice(data);
            Message::Binary(v.into())
        };
        if !out.stdout.is_empty() {
            let _ = socket.send(frame(1, &out.stdout)).await;
        }
        if let Some(stream) = &out.stream {
            for chunk in (stream.0)() {
                if chunk.is_empty() {
                    continue;
                }
                if socket.send(frame(1, &chunk)).await.is_err() {
                    // The client went away: the process is killed.
                    return;
                }
            }
        }
        if !out.stderr.is_empty() {
            let _ = socket.send(frame(2, &out.stderr)).await;
        }
        let st = serde_json::to_vec(&status(&out, &request.command)).unwrap_or_default();
        let _ = socket.send(frame(3, &st)).await;
        // A normal closure (1000): kubectl reports a close without a
        // status code (1005) as an error.
        let _ = socket
            .close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }))
            .await;
    });
    let mut response = Response::new(axum::body::Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).map_err(|_| ApiError::bad_request("bad key"))?,
    );
    if let Some(p) = protocol {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p));
    }
    Ok(response)
}

/// The subprotocols served, preferred first (kubelet's order).
const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// Checks a WebSocket upgrade request; returns the `Sec-WebSocket-Accept`
/// value and the chosen subprotocol (none when the client offers none we
/// speak, as kubelet then falls back to its oldest protocol).
fn handshake(req: &axum::extract::Request) -> Result<(String, Option<&'static str>), ApiError> {
    let h = req.headers();
    let has = |name: header::HeaderName, token: &str| {
        h.get_all(name).iter().any(|v| {
            v.to_str()
                .unwrap_or_default()
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        })
    };
    if !has(header::CONNECTION, "upgrade")
        || !has(header::UPGRADE, "websocket")
        || h.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13")
    {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    let key = h
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| ApiError::bad_request("Upgrade request required"))?;
    let offered: Vec<String> = h
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or_default().split(','))
        .map(|t| t.trim().to_string())
        .collect();
    let protocol = PROTOCOLS
        .into_iter()
        .find(|p| offered.iter().any(|o| o == p));
    Ok((derive_accept_key(key.as_bytes()), protocol))
}
