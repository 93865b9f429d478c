//! `lifeboat controller`: the long-running reconciler of one cluster, with
//! leader election, a webhook, Prometheus metrics and health endpoints.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args as ClapArgs, ValueEnum};
use lifeboat_controller::http::{Health, HttpState};
use lifeboat_controller::leader::{LeaderConfig, Leadership};
use lifeboat_controller::metrics::Metrics;
use lifeboat_controller::run::{Loop, LoopConfig};
use lifeboat_controller::shutdown::{self, Shutdown};
use lifeboat_core::Duration;
use tracing::info;

use crate::cmd::reconcile::RunArgs;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Run the controller of one cluster: poll the policy repository, back up,
/// prune and restore as planned, and report status to Git.
///
/// Every option can also be set in the environment (shown as [env: …]) or
/// in a YAML file given with --config, whose keys are the long option names
/// without dashes (`interval: 5m`, `leader-election: true`). Command-line
/// options win over the file, which wins over the environment.
#[derive(Debug, ClapArgs)]
#[command(args_override_self = true)]
pub struct Args {
    /// A YAML file of options (see above).
    #[arg(long, value_name = "FILE", env = "LIFEBOAT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Fetch the remote at least this often.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "60s",
        env = "LIFEBOAT_INTERVAL"
    )]
    pub interval: Duration,
    /// Address of the HTTP server (/metrics, /healthz, /readyz, POST /webhook).
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "0.0.0.0:8080",
        env = "LIFEBOAT_LISTEN"
    )]
    pub listen: SocketAddr,
    /// A file holding the webhook secret: GitHub and Gitea signatures and the
    /// GitLab token are checked against it. Without it, any POST /webhook
    /// triggers a fetch (which is harmless: it only fetches sooner).
    #[arg(long, value_name = "FILE", env = "LIFEBOAT_WEBHOOK_SECRET_FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// Elect a leader among replicas with a coordination.k8s.io Lease; only
    /// the leader acts.
    #[arg(long, env = "LIFEBOAT_LEADER_ELECTION")]
    pub leader_election: bool,
    /// Namespace of the Lease (in a cluster: the controller's namespace).
    #[arg(
        long,
        value_name = "NAMESPACE",
        default_value = "lifeboat",
        env = "POD_NAMESPACE"
    )]
    pub lease_namespace: String,
    /// Name of the Lease.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "lifeboat-controller",
        env = "LIFEBOAT_LEASE_NAME"
    )]
    pub lease_name: String,
    /// How long a leader holds the Lease without renewing it.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "15s",
        env = "LIFEBOAT_LEASE_DURATION"
    )]
    pub lease_duration: Duration,
    /// This replica's identity in the Lease (in a cluster: the pod name).
    #[arg(long, value_name = "NAME", env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// How long a running cycle may go on after SIGTERM before it is
    /// abandoned (safely: nothing half-written is committed).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "25s",
        env = "LIFEBOAT_SHUTDOWN_GRACE"
    )]
    pub shutdown_grace: Duration,
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "LIFEBOAT_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Starts logging: `RUST_LOG` filters (default `info`).
pub fn init_logging(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    init_logging(args.log_format, "info");
    crate::runtime()?.block_on(run_async(args))
}

async fn run_async(args: Args) -> anyhow::Result<ExitCode> {
    let reconciler = args.run.reconciler().await?;
    let metrics = Metrics::new();
    let health = Health::default();
    let webhook = Arc::new(tokio::sync::Notify::new());
    let webhook_secret = match &args.webhook_secret_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("cannot read the webhook secret {}", f.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let stop = Shutdown::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown::signal().await;
            info!("stop requested");
            stop.trigger();
        });
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    info!(addr = %args.listen, "serving /metrics, /healthz, /readyz and /webhook");
    let server = {
        let stop = stop.clone();
        tokio::spawn(lifeboat_controller::http::serve(
            listener,
            HttpState {
                metrics: metrics.clone(),
                health: health.clone(),
                webhook: webhook.clone(),
                webhook_secret,
            },
            async move { stop.cancelled().await },
        ))
    };
    let leader = if args.leader_election {
        let identity = args
            .pod_name
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| format!("lifeboat-{}", std::process::id()));
        Some(
            Leadership::start(
                reconciler.client.clone(),
                LeaderConfig {
                    namespace: args.lease_namespace.clone(),
                    lease_name: args.lease_name.clone(),
                    identity,
                    duration: std::time::Duration::from_secs(args.lease_duration.as_secs()),
                },
            )
            .await?,
        )
    } else {
        None
    };
    Loop {
        reconciler,
        config: LoopConfig {
            interval: std::time::Duration::from_secs(args.interval.as_secs().max(1)),
            grace: std::time::Duration::from_secs(args.shutdown_grace.as_secs()),
        },
        metrics,
        health,
        webhook,
        leader,
        shutdown: stop.clone(),
    }
    .run()
    .await;
    stop.trigger();
    let _ = server.await;
    Ok(ExitCode::SUCCESS)
}

/// Expands `--config FILE` (or `LIFEBOAT_CONFIG`) of the `controller`
/// subcommand into options placed before the command line's own, so the
/// command line wins.
pub fn expand_config(args: Vec<std::ffi::OsString>) -> anyhow::Result<Vec<std::ffi::OsString>> {
    let Some(sub) = args.iter().position(|a| a == "controller") else {
        return Ok(args);
    };
    let mut file: Option<PathBuf> = None;
    for (i, a) in args.iter().enumerate().skip(sub + 1) {
        let a = a.to_string_lossy();
        if a == "--config" {
            file = args.get(i + 1).map(PathBuf::from);
        } else if let Some(v) = a.strip_prefix("--config=") {
            file = Some(PathBuf::from(v));
        }
    }
    let file = file.or_else(|| std::env::var_os("LIFEBOAT_CONFIG").map(PathBuf::from));
    let Some(file) = file else {
        return Ok(args);
    };
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read the config file {}", file.display()))?;
    let map: serde_json::Map<String, serde_json::Value> = serde_yaml_ng::from_str(&text)
        .with_context(|| format!("{} is not a YAML mapping of option: value", file.display()))?;
    let mut extra = Vec::new();
    for (key, value) in map {
        let flag = format!("--{key}");
        match value {
            serde_json::Value::Bool(true) => extra.push(flag.into()),
            serde_json::Value::Bool(false) | serde_json::Value::Null => {}
            serde_json::Value::Array(items) => {
                for item in items {
                    extra.push(format!("{flag}={}", scalar(&item)).into());
                }
            }
            other => extra.push(format!("{flag}={}", scalar(&other)).into()),
        }
    }
    let mut out = args[..=sub].to_vec();
    out.extend(extra);
    out.extend(args[sub + 1..].iter().cloned());
    Ok(out)
}

fn scalar(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
