//! `lifeboat sandbox serve`: runs the in-memory Kubernetes API server
//! standalone so a person or kubectl can use it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lifeboat_sandbox::SandboxBuilder;

/// Run the in-memory Kubernetes API server used by tests and the demo.
#[derive(Debug, Parser)]
pub struct Args {
    #[command(subcommand)]
    pub command: SandboxCommand,
}

#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Serve the sandbox API on 127.0.0.1 until interrupted.
    Serve(ServeArgs),
}

#[derive(Debug, Parser)]
pub struct ServeArgs {
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 6443)]
    pub port: u16,
    /// Directory of YAML/JSON manifests to seed (multi-document, any kinds).
    #[arg(long, value_name = "DIR")]
    pub seed: Vec<PathBuf>,
    /// Write a kubeconfig for the sandbox to this file once it listens.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Require this bearer token.
    #[arg(long)]
    pub token: Option<String>,
    /// Serve HTTPS with a self-signed CA (carried in the kubeconfig).
    #[arg(long)]
    pub tls: bool,
    /// Number of nodes (sandbox-node-1 … sandbox-node-N).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=250))]
    pub nodes: u16,
    /// Keep volume and snapshot bytes in this directory (default: a
    /// temporary directory, removed on shutdown).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Append one JSON line per request to this file (flushed per line).
    #[arg(long, value_name = "FILE")]
    pub request_log: Option<PathBuf>,
}

/// lifeboat's own image; its containers run this executable.
const LIFEBOAT_IMAGE: &str = "ghcr.io/lifeboat-dev/lifeboat";

/// Makes the sandbox's kubelet run pods of lifeboat's own image (mover
/// pods) as processes of `exe`: `<image>:<tag>` and `<image>@<digest>`,
/// not `<image>-other`.
pub(crate) fn run_own_image(b: SandboxBuilder, exe: &Path) -> SandboxBuilder {
    b.image_binary(format!("{LIFEBOAT_IMAGE}:"), exe)
        .image_binary(format!("{LIFEBOAT_IMAGE}@"), exe)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        SandboxCommand::Serve(a) => serve(a),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut b = lifeboat_sandbox::Sandbox::builder()
            .port(args.port)
            .tls(args.tls)
            .nodes(usize::from(args.nodes));
        match std::env::current_exe() {
            Ok(exe) => b = run_own_image(b, &exe),
            Err(e) => eprintln!(
                "warning: cannot find lifeboat's own executable ({e}); pods of {LIFEBOAT_IMAGE} will be simulated"
            ),
        }
        for d in &args.seed {
            b = b.seed_dir(d);
        }
        if let Some(t) = &args.token {
            b = b.token(t);
        }
        if let Some(d) = &args.data {
            b = b.data_dir(d);
        }
        if let Some(f) = &args.request_log {
            b = b.request_log(f);
        }
        let sandbox = b.start().await?;
        if let Some(path) = &args.kubeconfig {
            // Write then rename, so a watcher never reads half a file.
            let tmp = path.with_extension("tmp");
            sandbox.write_kubeconfig(&tmp)?;
            std::fs::rename(&tmp, path)?;
        }
        eprintln!(
            "sandbox API server listening on {} ({} objects, {} node(s), data in {}){}",
            sandbox.url(),
            sandbox.object_count(),
            args.nodes,
            sandbox.data_dir().display(),
            args.kubeconfig
                .as_ref()
                .map(|p| format!("; kubeconfig: {}", p.display()))
                .unwrap_or_default()
        );
        eprintln!(
            "volume data in {}{}",
            sandbox.data_dir().display(),
            if sandbox.data_dir_is_temporary() {
                " (temporary, removed on shutdown)"
            } else {
                ""
            }
        );
        sandbox.serve_until_signal().await;
        Ok(ExitCode::SUCCESS)
    })
}
