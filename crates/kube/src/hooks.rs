//! Runs one exec hook in a pod's container through `pods/exec` (kube's
//! `ws` feature, as `kubectl exec` does): the command's argument list, no
//! TTY; the last lines of stderr are kept, the exit code comes from the
//! status channel. The whole run is bounded by the hook's timeout: a
//! command still running then has failed ("timed out after 30s") and its
//! stream is closed.
//!
//! [`run`] drains and drops stdout and sends no stdin. [`run_streaming`]
//! hands stdout to a channel as it arrives (a dump hook) and/or feeds stdin
//! from one, then closes it (`v5.channel.k8s.io` sends a close frame for
//! stdin, so the command sees end of file and still reports its exit
//! code). Both directions have backpressure: the WebSocket is read only as
//! fast as the channel is emptied.

use std::time::{Duration, Instant};

use bytes::Bytes;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams};
use lifeboat_core::hooks::ExecHook;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Lines of stderr kept for the record.
pub const STDERR_LINES: usize = 10;

/// How one hook command went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookOutcome {
    /// The exit code, when the command ended.
    pub exit_code: Option<i32>,
    /// The last [`STDERR_LINES`] lines of its stderr.
    pub stderr: Vec<String>,
    pub duration: Duration,
    /// Why it failed (non-zero exit, timeout, exec refused); `None`: it
    /// exited 0.
    pub error: Option<String>,
}

impl HookOutcome {
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

/// The last `n` non-empty lines of `text`.
fn tail(text: &str, n: usize) -> Vec<String> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

/// Runs `hook` in pod `namespace/pod`; never longer than its timeout.
pub async fn run(
    client: &kube::Client,
    namespace: &str,
    pod: &str,
    hook: &ExecHook,
) -> HookOutcome {
    run_streaming(client, namespace, pod, hook, Streams::default())
        .await
        .0
}

/// Where a streaming run's stdin comes from and its stdout goes.
#[derive(Debug, Default)]
pub struct Streams {
    /// Chunks to write to stdin, which is closed once the channel ends. An
    /// `Err` stops the run (the command fails with that reason) without
    /// closing stdin cleanly.
    pub stdin: Option<mpsc::Receiver<Result<Bytes, String>>>,
    /// Where stdout goes, chunk by chunk; a closed receiver stops the run.
    pub stdout: Option<mpsc::Sender<Bytes>>,
}

/// Bytes a streaming run moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Streamed {
    pub stdin_bytes: u64,
    pub stdout_bytes: u64,
}

/// WebSocket-side buffer of each stream.
const STREAM_BUF: usize = 64 * 1024;

/// Runs `hook` in pod `namespace/pod` with `streams`; never longer than
/// its timeout.
pub async fn run_streaming(
    client: &kube::Client,
    namespace: &str,
    pod: &str,
    hook: &ExecHook,
    streams: Streams,
) -> (HookOutcome, Streamed) {
    let started = Instant::now();
    let timeout = Duration::from_secs(hook.timeout.as_secs().max(1));
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let Streams {
        stdin: stdin_from,
        stdout: stdout_to,
    } = streams;
    let attach = AttachParams::default()
        .container(hook.container.clone())
        .stdin(stdin_from.is_some())
        .stdout(true)
        .stderr(true)
        .tty(false)
        .max_stdin_buf_size(STREAM_BUF)
        .max_stdout_buf_size(STREAM_BUF);
    let moved = std::sync::Mutex::new(Streamed::default());
    let work = async {
        let mut proc = pods
            .exec(pod, hook.command.clone(), &attach)
            .await
            .map_err(|e| {
                (
                    None,
                    format!("cannot exec in {namespace}/{pod}: {e}"),
                    String::new(),
                )
            })?;
        let status = proc.take_status();
        let mut stdout = proc.stdout();
        let mut stderr = proc.stderr();
        let stdin = proc.stdin();
        let (moved, proc_ref) = (&moved, &proc);
        let feed_in = async move {
            let (Some(mut from), Some(mut w)) = (stdin_from, stdin) else {
                return Ok(());
            };
            while let Some(chunk) = from.recv().await {
                let chunk = match chunk {
                    Ok(c) => c,
                    Err(why) => {
                        // Not an end of file: stop the connection before
                        // the writer goes, so stdin is never closed cleanly.
                        proc_ref.abort();
                        return Err(why);
                    }
                };
                if w.write_all(&chunk).await.is_err() {
                    // The command ended without reading everything; its
                    // status says how.
                    return Ok(());
                }
                if let Ok(mut m) = moved.lock() {
                    m.stdin_bytes += chunk.len() as u64;
                }
            }
            // End of input: closing the writer closes stdin (a v5 close
            // frame), and the command sees end of file.
            let _ = w.shutdown().await;
            Ok::<(), String>(())
        };
        let drain_out = async {
            if let Some(s) = stdout.as_mut() {
                let mut buf = vec![0u8; STREAM_BUF];
                loop {
                    let n = match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if let Ok(mut m) = moved.lock() {
                        m.stdout_bytes += n as u64;
                    }
                    if let Some(to) = &stdout_to
                        && to.send(Bytes::copy_from_slice(&buf[..n])).await.is_err()
                    {
                        return Err("the output could not be stored".to_string());
                    }
                    // Without a receiver: bounded memory, read and drop.
                }
            }
            Ok(())
        };
        let read_err = async {
            let mut text = Vec::new();
            if let Some(s) = stderr.as_mut() {
                let mut buf = [0u8; 8192];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    text.extend_from_slice(&buf[..n]);
                    // Keep the end only.
                    if text.len() > 64 * 1024 {
                        text.drain(..text.len() - 32 * 1024);
                    }
                }
            }
            String::from_utf8_lossy(&text).into_owned()
        };
        let (fed, drained, err_text) = tokio::join!(feed_in, drain_out, read_err);
        if let Err(why) = fed.and(drained) {
            proc.abort();
            return Err((None, why, err_text));
        }
        let status = match status {
            Some(s) => s.await,
            None => None,
        };
        let _ = proc.join().await;
        let code = match &status {
            Some(s) if s.status.as_deref() == Some("Success") => 0,
            Some(s) => s
                .details
                .as_ref()
                .and_then(|d| d.causes.as_ref())
                .and_then(|c| {
                    c.iter()
                        .find(|c| c.reason.as_deref() == Some("ExitCode"))
                        .and_then(|c| c.message.as_deref()?.parse().ok())
                })
                .unwrap_or(1),
            None => {
                return Err((
                    None,
                    "the exec stream ended without an exit status".to_string(),
                    err_text,
                ));
            }
        };
        Ok((code, err_text))
    };
    let (exit_code, stderr, error) = match tokio::time::timeout(timeout, work).await {
        Ok(Ok((0, err))) => (Some(0), err, None),
        Ok(Ok((code, err))) => (Some(code), err, Some(format!("exited with code {code}"))),
        Ok(Err((code, why, err))) => (code, err, Some(why)),
        Err(_) => (
            None,
            String::new(),
            Some(format!("timed out after {}", hook.timeout)),
        ),
    };
    let stderr = tail(&stderr, STDERR_LINES);
    let error = error.map(|e| match stderr.last() {
        Some(last) => format!("{e}: {last}"),
        None => e,
    });
    let moved = *moved.lock().unwrap_or_else(|e| e.into_inner());
    (
        HookOutcome {
            exit_code,
            stderr,
            duration: started.elapsed(),
            error,
        },
        moved,
    )
}
