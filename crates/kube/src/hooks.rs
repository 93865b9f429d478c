//! Runs one exec hook in a pod's container through `pods/exec` (kube's
//! `ws` feature, as `kubectl exec` does): the command's argument list, no
//! stdin, no TTY; stdout is drained and dropped, the last lines of stderr
//! are kept, the exit code comes from the status channel. The whole run is
//! bounded by the hook's timeout: a command still running then has failed
//! ("timed out after 30s") and its stream is closed.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams};
use lifeboat_core::hooks::ExecHook;
use tokio::io::AsyncReadExt;

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
    let started = Instant::now();
    let timeout = Duration::from_secs(hook.timeout.as_secs().max(1));
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let attach = AttachParams::default()
        .container(hook.container.clone())
        .stdin(false)
        .stdout(true)
        .stderr(true)
        .tty(false);
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
        let drain_out = async {
            if let Some(s) = stdout.as_mut() {
                // Bounded memory: read and drop.
                let mut buf = [0u8; 8192];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            }
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
        let (_, err_text) = tokio::join!(drain_out, read_err);
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
    HookOutcome {
        exit_code,
        stderr,
        duration: started.elapsed(),
        error,
    }
}
