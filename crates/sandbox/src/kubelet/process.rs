//! Containers of mapped images run as local processes.
//!
//! How a process finds its volumes: the kubelet builds a root for each
//! container (`<pod-dir>/rootfs/<container>/`) in which every `mountPath`,
//! `devicePath` and the `terminationMessagePath` is a symlink to the
//! volume's directory (or file) on the node, and starts the process with
//! `LIFEBOAT_SANDBOX_ROOT` set to that root and its working directory in
//! it. A program reads an in-container path `/data/f` as
//! `$LIFEBOAT_SANDBOX_ROOT/data/f`. This is the one hook product code sees
//! (`lifeboat_kube::pod_path`, `crates/kube/src/paths.rs`); without the variable, paths are used as
//! they are, as in a real container. (A private mount namespace would hide
//! even that, but needs unprivileged user namespaces, which CI containers
//! often lack.)
//!
//! The process gets `command[1..]` + `args` (`command[0]`, the program's
//! name inside the image, becomes `argv[0]`; with no command, just `args`),
//! the container's environment (`env`, `envFrom`, `$(VAR)` expansion) plus
//! `PATH` from the sandbox, `HOME` (the root), `HOSTNAME` (the pod) and
//! `KUBERNETES_SERVICE_HOST`/`_PORT` (the sandbox). It runs in its own
//! process group, which SIGTERM and SIGKILL are sent to.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;

use super::logs::LogBuf;

/// A process to start.
#[derive(Debug)]
pub struct Spawn {
    /// The executable.
    pub exe: PathBuf,
    /// `argv[0]`.
    pub arg0: String,
    /// Arguments.
    pub args: Vec<String>,
    /// The whole environment.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: PathBuf,
    /// Where stdout and stderr go.
    pub log: Arc<LogBuf>,
}

/// Live process groups (leader pid) of all containers.
#[derive(Debug, Default)]
pub struct Processes {
    live: Mutex<HashMap<u32, u64>>,
}

impl Processes {
    /// Sends a signal to a process group (gone groups are ignored).
    pub fn signal(pgid: u32, sig: Signal) {
        if let Ok(pid) = i32::try_from(pgid) {
            let _ = killpg(Pid::from_raw(pid), sig);
        }
    }

    /// SIGTERM to every live group, then SIGKILL to those still there after
    /// their grace period (from a thread, so this also works while the
    /// runtime shuts down).
    pub fn terminate_all(&self) {
        let live: Vec<(u32, u64)> = self
            .live
            .lock()
            .expect("process lock")
            .iter()
            .map(|(p, g)| (*p, *g))
            .collect();
        if live.is_empty() {
            return;
        }
        for (p, _) in &live {
            Self::signal(*p, Signal::SIGTERM);
        }
        let grace = live.iter().map(|(_, g)| *g).max().unwrap_or(0).min(30);
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(grace);
            // Signal "none" only checks that the group exists.
            let alive =
                |p: u32| i32::try_from(p).is_ok_and(|p| killpg(Pid::from_raw(p), None).is_ok());
            while std::time::Instant::now() < deadline && live.iter().any(|(p, _)| alive(*p)) {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            for (p, _) in live {
                Self::signal(p, Signal::SIGKILL);
            }
        });
    }
}

async fn pump(mut r: impl tokio::io::AsyncRead + Unpin, log: Arc<LogBuf>) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => log.append(&buf[..n]),
        }
    }
}

/// Starts the process; `on_exit` gets its exit code (128 + signal when
/// killed) once it ended and its output was read.
pub fn start(
    procs: &Arc<Processes>,
    s: Spawn,
    grace: u64,
    on_exit: impl FnOnce(i32) + Send + 'static,
) -> std::io::Result<u32> {
    let mut cmd = tokio::process::Command::new(&s.exe);
    cmd.arg0(&s.arg0)
        .args(&s.args)
        .env_clear()
        .envs(s.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&s.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let pid = child.id().unwrap_or_default();
    procs.live.lock().expect("process lock").insert(pid, grace);
    let out = child.stdout.take();
    let err = child.stderr.take();
    let procs = procs.clone();
    tokio::spawn(async move {
        let log = s.log.clone();
        let o = async {
            if let Some(o) = out {
                pump(o, log.clone()).await;
            }
        };
        let e = async {
            if let Some(e) = err {
                pump(e, log.clone()).await;
            }
        };
        let (status, _, _) = tokio::join!(child.wait(), o, e);
        procs.live.lock().expect("process lock").remove(&pid);
        use std::os::unix::process::ExitStatusExt as _;
        let code = match status {
            Ok(st) => st
                .code()
                .or_else(|| st.signal().map(|s| 128 + s))
                .unwrap_or(-1),
            Err(_) => -1,
        };
        on_exit(code);
    });
    Ok(pid)
}
