//! `pods/exec` over WebSocket, speaking the `v5.channel.k8s.io` and
//! `v4.channel.k8s.io` subprotocols as kubelet does: each binary message
//! starts with a channel byte (1 stdout, 2 stderr, 3 error/status); the
//! exit status is a `metav1.Status` on channel 3 (`Success`, or `Failure`
//! with reason `NonZeroExitCode` and the code in `details.causes`).
//!
//! Tests register an [`ExecHandler`] that maps (pod, container, command)
//! to stdout, stderr and an exit code. Without one, every command exits 0
//! with no output. Stdin and TTY resizing are accepted and ignored.

use std::sync::Arc;

use axum::extract::FromRequest;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::response::Response;
use serde_json::json;

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

/// What the command produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Bytes written to stdout.
    pub stdout: Vec<u8>,
    /// Bytes written to stderr.
    pub stderr: Vec<u8>,
    /// Exit code.
    pub exit_code: i32,
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
        }
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
    let ws = WebSocketUpgrade::from_request(req, &())
        .await
        .map_err(|_| ApiError::bad_request("Upgrade request required"))?;
    let request = ExecRequest {
        namespace,
        pod,
        container,
        command,
    };
    let handler = shared.exec.read().expect("exec lock").clone();
    Ok(ws
        .protocols(["v5.channel.k8s.io", "v4.channel.k8s.io"])
        .on_upgrade(move |mut socket| async move {
            let out = match handler {
                Some(h) => h(&request),
                None => ExecOutput::default(),
            };
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
            if !out.stderr.is_empty() {
                let _ = socket.send(frame(2, &out.stderr)).await;
            }
            let st = serde_json::to_vec(&status(&out, &request.command)).unwrap_or_default();
            let _ = socket.send(frame(3, &st)).await;
            // A normal closure (1000): kubectl reports a close without a
            // status code (1005) as an error.
            let _ = socket
                .send(Message::Close(Some(axum::extract::ws::CloseFrame {
                    code: 1000,
                    reason: "".into(),
                })))
                .await;
        }))
}
