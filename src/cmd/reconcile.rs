//! `lifeboat reconcile`: one reconcile cycle now (`--once`), or a local
//! watch loop that re-plans whenever policy files change (`--watch DIR`).
//! The options shared with `lifeboat controller` live here too.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args as ClapArgs, ValueEnum};
use lifeboat_controller::executor::ExecOptions;
use lifeboat_controller::locations::Secrets;
use lifeboat_controller::reconcile::{CycleReport, Reconciler, Settings, Source};
use lifeboat_core::Duration;
use lifeboat_core::plan::PlanOptions;
use lifeboat_git::{Auth, Mirror, Published, StatusTarget};

use crate::kubeclient::KubeArgs;

/// Where the policy repository is and how to reach it.
#[derive(Debug, Clone, ClapArgs)]
pub struct GitArgs {
    /// The policy repository: a Git URL (`https://…`, `ssh://…`, `file://…`)
    /// or the path of a local Git repository.
    #[arg(long, value_name = "URL|PATH", env = "LIFEBOAT_REPO")]
    pub repo: Option<String>,
    /// The branch of policies to follow.
    #[arg(long, default_value = "main", env = "LIFEBOAT_BRANCH")]
    pub branch: String,
    /// Where the Git cache and checkout are kept (default: a directory per
    /// repository under the user's cache directory, or the system temporary
    /// directory).
    #[arg(long, value_name = "DIR", env = "LIFEBOAT_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// A file holding the HTTPS token (a mounted Secret).
    #[arg(long, value_name = "FILE", env = "LIFEBOAT_GIT_TOKEN_FILE")]
    pub git_token_file: Option<PathBuf>,
    /// The environment variable holding the HTTPS token, when no token file
    /// is given.
    #[arg(long, value_name = "VAR", default_value = "LIFEBOAT_GIT_TOKEN")]
    pub git_token_env: String,
    /// The user name sent with the token (default `x-access-token`).
    #[arg(long, value_name = "NAME", env = "LIFEBOAT_GIT_USERNAME")]
    pub git_username: Option<String>,
    /// The SSH private key for `ssh://` remotes.
    #[arg(long, value_name = "FILE", env = "LIFEBOAT_GIT_SSH_KEY")]
    pub git_ssh_key: Option<PathBuf>,
    /// A known_hosts file the SSH host key must be in.
    #[arg(long, value_name = "FILE", env = "LIFEBOAT_GIT_KNOWN_HOSTS")]
    pub git_known_hosts: Option<PathBuf>,
    /// PEM certificates trusted for the HTTPS remote (a private CA).
    #[arg(long, value_name = "FILE", env = "LIFEBOAT_GIT_CA_FILE")]
    pub git_ca_file: Option<PathBuf>,
}

impl GitArgs {
    pub fn auth(&self) -> anyhow::Result<Auth> {
        let mut auth = Auth::from_env_or_files(
            self.git_token_file.as_deref(),
            Some(&self.git_token_env),
            self.git_ssh_key.as_deref(),
            self.git_known_hosts.as_deref(),
        )?;
        if self.git_username.is_some() {
            auth.username = self.git_username.clone();
        }
        Ok(auth)
    }

    /// The cache directory of `repo`.
    pub fn cache_for(&self, repo: &str) -> PathBuf {
        if let Some(dir) = &self.cache_dir {
            return dir.clone();
        }
        use sha2::Digest;
        let key = hex::encode(&sha2::Sha256::digest(repo.as_bytes())[..8]);
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir);
        base.join("lifeboat").join(key)
    }

    /// Opens the mirror of the repository.
    pub fn mirror(&self) -> anyhow::Result<(Mirror, PathBuf)> {
        let Some(repo) = &self.repo else {
            bail!("pass --repo URL|PATH (or set LIFEBOAT_REPO)");
        };
        let cache = self.cache_for(repo);
        let mut mirror = Mirror::open(repo, &cache.join("git"), self.auth()?)?;
        if let Some(ca) = &self.git_ca_file {
            mirror = mirror.with_pinned_certificates(ca)?;
        }
        Ok((mirror, cache))
    }
}

/// What `reconcile` and `controller` share.
#[derive(Debug, Clone, ClapArgs)]
pub struct RunArgs {
    #[command(flatten)]
    pub git: GitArgs,
    /// The cluster this controller acts as (a Cluster of the repository).
    #[arg(long, value_name = "NAME", env = "LIFEBOAT_CLUSTER")]
    pub cluster: String,
    /// The branch status reports are committed to; may be the policy branch
    /// itself (then use a `--status-path` under `status/`).
    #[arg(
        long,
        value_name = "BRANCH",
        default_value = "lifeboat-status",
        env = "LIFEBOAT_STATUS_BRANCH"
    )]
    pub status_branch: String,
    /// The directory of this cluster's status files in that branch (default
    /// `clusters/<cluster>`).
    #[arg(long, value_name = "PATH", env = "LIFEBOAT_STATUS_PATH")]
    pub status_path: Option<String>,
    /// Write no status to Git.
    #[arg(long, env = "LIFEBOAT_NO_STATUS")]
    pub no_status: bool,
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Read storage credentials and age identities from the Secrets that
    /// StorageLocations name, in this namespace unless a reference names
    /// another (in a cluster: the controller's namespace). Without it, the
    /// provider's default credential chain and `--identity` files are used.
    #[arg(long, value_name = "NAMESPACE", env = "LIFEBOAT_SECRETS_NAMESPACE")]
    pub secrets_namespace: Option<String>,
    /// age identity files for restores from encrypted locations (when
    /// Secrets are not read from the cluster).
    #[arg(
        long = "identity",
        value_name = "FILE",
        env = "LIFEBOAT_AGE_IDENTITY_FILE"
    )]
    pub identities: Vec<PathBuf>,
    /// The minisign secret key to sign backups and restore records with
    /// (when Secrets are not read from the cluster; there, the Cluster's
    /// `signing.keySecretRef` is read).
    #[arg(long, value_name = "FILE", env = "LIFEBOAT_SIGNING_KEY_FILE")]
    pub signing_key: Option<PathBuf>,
    /// How long backups of a policy deleted from Git are kept.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "30d",
        env = "LIFEBOAT_ORPHAN_GRACE"
    )]
    pub orphan_grace: Duration,
    /// How old a backup without a manifest (an interrupted writer) must be
    /// before it is deleted.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "24h",
        env = "LIFEBOAT_INCOMPLETE_GRACE"
    )]
    pub incomplete_grace: Duration,
    /// Backups of different policies run at once.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 2,
        env = "LIFEBOAT_BACKUP_CONCURRENCY"
    )]
    pub backup_concurrency: usize,
    /// Back up and restore objects only, no volume data.
    #[arg(long, env = "LIFEBOAT_NO_VOLUME_DATA")]
    pub no_volume_data: bool,
    #[command(flatten)]
    pub movers: crate::cmd::volume_data::MoverPodArgs,
    /// How long a mover pod may stay Pending (unschedulable, its image not
    /// pulled) before its volume fails with the pod's reason.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "5m",
        env = "LIFEBOAT_MOVER_START_TIMEOUT"
    )]
    pub mover_start_timeout: Duration,
}

impl RunArgs {
    pub fn settings(&self) -> Settings {
        Settings {
            cluster: self.cluster.clone(),
            status: (!self.no_status).then(|| StatusTarget {
                branch: self.status_branch.clone(),
                path: self
                    .status_path
                    .clone()
                    .unwrap_or_else(|| format!("clusters/{}", self.cluster)),
            }),
            plan: PlanOptions {
                orphan_grace: self.orphan_grace.to_signed(),
                incomplete_grace: self.incomplete_grace.to_signed(),
                ..PlanOptions::default()
            },
            exec: ExecOptions {
                backup_concurrency: self.backup_concurrency.max(1),
                volume_data: !self.no_volume_data,
                movers: self.movers.apply(lifeboat_kube::volumes::MoverOptions {
                    start_timeout: std::time::Duration::from_secs(
                        self.mover_start_timeout.as_secs(),
                    ),
                    ..lifeboat_kube::volumes::MoverOptions::default()
                }),
                ..ExecOptions::default()
            },
        }
    }

    pub async fn secrets(&self, client: &kube::Client) -> anyhow::Result<Secrets> {
        Ok(match &self.secrets_namespace {
            Some(namespace) => Secrets::Cluster {
                client: client.clone(),
                namespace: namespace.clone(),
            },
            None => Secrets::Local {
                identities: crate::context::read_identities(&self.identities)?,
                signing_key: crate::context::read_signing_key(self.signing_key.as_deref())?,
            },
        })
    }

    /// A reconciler following the Git repository.
    pub async fn reconciler(&self) -> anyhow::Result<Reconciler> {
        let (mirror, cache) = self.git.mirror()?;
        let source = Source::Git {
            mirror,
            branch: self.git.branch.clone(),
            checkout: cache.join("checkout"),
        };
        let client = self.kube.client().await?;
        let secrets = self.secrets(&client).await?;
        Ok(Reconciler::new(self.settings(), source, client, secrets))
    }
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Run one reconcile cycle now, or re-plan on every change of a local
/// policy directory.
#[derive(Debug, ClapArgs)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["once", "watch"])))]
pub struct Args {
    /// One cycle: fetch, plan, execute, write status, then exit (0 when
    /// every action succeeded, 1 otherwise).
    #[arg(long)]
    pub once: bool,
    /// Watch a local policy directory and reconcile on every change (no
    /// Git, no status commits): for trying policies against a sandbox or a
    /// test cluster before committing.
    #[arg(long, value_name = "DIR")]
    pub watch: Option<PathBuf>,
    /// Only plan; execute nothing and write no status.
    #[arg(long)]
    pub plan_only: bool,
    /// Plan as if it were this time (RFC 3339), for drills and tests.
    #[arg(long, value_name = "TIME")]
    pub now: Option<jiff::Timestamp>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    #[command(flatten)]
    pub run: RunArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    crate::cmd::controller::init_logging(crate::cmd::controller::LogFormat::Text, "warn");
    crate::runtime()?.block_on(run_async(args))
}

async fn run_async(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(dir) = &args.watch {
        return watch(&args, dir).await;
    }
    let mut reconciler = args.run.reconciler().await?;
    let now = args.now.unwrap_or_else(jiff::Timestamp::now);
    let report = reconciler.cycle(now, !args.plan_only).await;
    print_report(&report, args.format)?;
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Prints what a cycle did.
pub fn print_report(report: &CycleReport, format: Format) -> anyhow::Result<()> {
    let text = match format {
        Format::Json => format!("{:#}\n", report_json(report)),
        Format::Text => {
            let mut t = String::new();
            let r = &report.revision;
            t.push_str(&format!(
                "revision {} {}{}\n",
                r.sha.as_deref().unwrap_or("(working tree)"),
                if r.valid { "valid" } else { "INVALID" },
                r.acting_on
                    .as_deref()
                    .filter(|a| Some(*a) != r.sha.as_deref())
                    .map(|a| format!(", acting on {a}"))
                    .unwrap_or_default()
            ));
            for d in &r.diagnostics {
                t.push_str(&format!("  {d}\n"));
            }
            if let Some(plan) = &report.plan
                && report.executed.is_empty()
            {
                t.push_str(&crate::render::plan::text(plan));
            }
            for e in &report.executed {
                t.push_str(&format!(
                    "{} {}\n",
                    if e.ok() { "ok  " } else { "FAIL" },
                    e.describe()
                ));
            }
            match &report.published {
                Some(Ok(Published::Committed { sha, attempts })) => t.push_str(&format!(
                    "status committed {sha}{}\n",
                    if *attempts > 1 {
                        format!(" after {attempts} push attempts")
                    } else {
                        String::new()
                    }
                )),
                Some(Ok(Published::Unchanged)) => t.push_str("status unchanged\n"),
                Some(Err(e)) => t.push_str(&format!("status not written: {e}\n")),
                None => {}
            }
            for (kind, e) in &report.errors {
                t.push_str(&format!("error ({kind}): {e}\n"));
            }
            t
        }
    };
    crate::output::print(&text)
}

fn report_json(report: &CycleReport) -> serde_json::Value {
    serde_json::json!({
        "revision": report.revision,
        "plan": report.plan,
        "executed": report.executed.iter().map(|e| serde_json::json!({
            "action": e.action,
            "ok": e.ok(),
            "result": e.describe(),
            "seconds": e.duration.as_secs_f64(),
        })).collect::<Vec<_>>(),
        "status": match &report.published {
            Some(Ok(Published::Committed { sha, attempts })) => serde_json::json!({"committed": sha, "attempts": attempts}),
            Some(Ok(Published::Unchanged)) => serde_json::json!("unchanged"),
            Some(Err(e)) => serde_json::json!({"error": e}),
            None => serde_json::Value::Null,
        },
        "errors": report.errors.iter().map(|(k, e)| serde_json::json!({"kind": k, "message": e})).collect::<Vec<_>>(),
    })
}

/// Reconciles `dir` now and after every change below it.
async fn watch(args: &Args, dir: &Path) -> anyhow::Result<ExitCode> {
    use notify::{RecursiveMode, Watcher};

    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot watch {}: check the path exists", dir.display()))?;
    let client = args.run.kube.client().await?;
    let secrets = args.run.secrets(&client).await?;
    let mut settings = args.run.settings();
    settings.status = None;
    let mut reconciler = Reconciler::new(settings, Source::Dir(dir.clone()), client, secrets);

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && (event.kind.is_modify() || event.kind.is_create() || event.kind.is_remove())
        {
            let _ = tx.send(());
        }
    })
    .context("cannot start watching files")?;
    watcher
        .watch(&dir, RecursiveMode::Recursive)
        .with_context(|| format!("cannot watch {}", dir.display()))?;
    eprintln!(
        "watching {} for changes (Ctrl-C to stop){}",
        dir.display(),
        if args.plan_only {
            "; planning only"
        } else {
            ""
        }
    );
    loop {
        let now = args.now.unwrap_or_else(jiff::Timestamp::now);
        let report = reconciler.cycle(now, !args.plan_only).await;
        print_report(&report, args.format)?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
            got = rx.recv() => {
                if got.is_none() {
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
        // Editors write in bursts: wait for quiet before re-planning.
        loop {
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(300)) => break,
                got = rx.recv() => if got.is_none() { break },
            }
        }
        eprintln!("--- change detected, reconciling");
    }
}
