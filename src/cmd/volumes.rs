//! `lifeboat volumes …`: volume data repositories by hand (back up a
//! directory, list snapshots, restore, print the key, check, maintain).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::{Args as ClapArgs, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use lifeboat_store::{LocationConfig, Repository};
use lifeboat_volume::{
    BackupRequest, Control, Counters, FileKeyCache, KeyCache, MemoryKeyCache, VolumeKind,
    VolumeRepo,
};

use crate::context::{self, StoreArgs};

/// Back up, list, restore and check volume data (restic-format repositories).
#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

/// Which volume repository: a StorageLocation (or URL), cluster, namespace.
#[derive(Debug, Clone, ClapArgs)]
pub struct RepoArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The namespace whose repository to use.
    #[arg(long, value_name = "NS")]
    pub namespace: String,
    /// With --storage: the age public keys the repository key is sealed to
    /// (a StorageLocation names them in spec.encryption.recipients).
    #[arg(long = "recipient", value_name = "AGE1…")]
    pub recipients: Vec<String>,
    /// A directory caching repository keys (one 0600 file each), so backups
    /// need no identity after the first. Without it the key is not kept.
    #[arg(long, value_name = "DIR", env = "LIFEBOAT_VOLUME_KEY_CACHE")]
    pub key_cache: Option<PathBuf>,
    /// The repository generation (default: the newest).
    #[arg(long, value_name = "N")]
    pub generation: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum Action {
    /// Back up a directory (or, with --block, a device or image file) as a
    /// snapshot of one claim.
    Backup {
        source: PathBuf,
        /// The claim's name (the snapshot path is /<namespace>/<pvc>).
        #[arg(long)]
        pvc: String,
        #[arg(long)]
        pvc_uid: Option<String>,
        /// The lifeboat backup the snapshot belongs to (tag backup=…).
        #[arg(long)]
        backup: Option<String>,
        /// SOURCE is a block device or image file.
        #[arg(long)]
        block: bool,
        /// Read every file even when size and mtime match the parent.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        repo: RepoArgs,
    },
    /// List snapshots.
    Snapshots {
        #[arg(long)]
        pvc: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        #[command(flatten)]
        repo: RepoArgs,
    },
    /// Restore SNAPSHOT[:/path] (an id prefix or `latest`) into DIR (a file
    /// or device for a block snapshot).
    Restore {
        snapshot: String,
        dest: PathBuf,
        /// With `latest`: the claim.
        #[arg(long)]
        pvc: Option<String>,
        #[command(flatten)]
        repo: RepoArgs,
    },
    /// Print the `restic -r …` repository and, as the last line, its password.
    Key {
        /// Also store the key in --key-cache (re-seed a lost cache).
        #[arg(long)]
        seed_cache: bool,
        /// Re-seal lifeboat-key.age to the location's current recipients.
        #[arg(long)]
        reseal: bool,
        /// Start a new generation (new path, new master key) after a compromise.
        #[arg(long)]
        new_generation: bool,
        #[command(flatten)]
        repo: RepoArgs,
    },
    /// Check the repository (with --read-data, every pack's content).
    Check {
        #[arg(long)]
        read_data: bool,
        #[command(flatten)]
        repo: RepoArgs,
    },
    /// Forget the snapshots of a deleted backup.
    Forget {
        #[arg(long)]
        backup: String,
        #[command(flatten)]
        repo: RepoArgs,
    },
    /// Prune unreferenced data (two-phase: marked now, deleted by a later
    /// prune after the grace period).
    Prune {
        /// Grace period in hours before marked packs are deleted.
        #[arg(long, default_value_t = 23)]
        keep_delete_hours: u64,
        #[command(flatten)]
        repo: RepoArgs,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    crate::runtime()?.block_on(run_async(args))
}

struct Opened {
    location: Repository,
    name: String,
    cluster: String,
    namespace: String,
    cache: Arc<dyn KeyCache>,
    generation: Option<u32>,
}

impl Opened {
    async fn existing(&self) -> anyhow::Result<VolumeRepo> {
        Ok(VolumeRepo::open_existing(
            &self.location,
            &self.name,
            &self.cluster,
            &self.namespace,
            self.generation,
            Some(self.cache.as_ref()),
        )
        .await?)
    }
}

/// Opens the location the arguments name (as `lifeboat backups` does).
async fn open(args: &RepoArgs) -> anyhow::Result<Opened> {
    let (location, name, cluster) = if let Some(url) = &args.store.storage {
        let cluster = args
            .store
            .cluster
            .clone()
            .ok_or_else(|| anyhow!("with --storage, pass --cluster NAME"))?;
        let config = LocationConfig {
            url: url.clone(),
            recipients: args.recipients.clone(),
            identities: context::read_identities(&args.store.identities)?,
            ..LocationConfig::default()
        };
        let repo = Repository::open(&config)
            .await
            .with_context(|| format!("cannot open the storage location {url}"))?;
        (repo, url.clone(), cluster)
    } else {
        if !args.recipients.is_empty() {
            bail!("--recipient is for --storage; a StorageLocation names its recipients");
        }
        let t = context::open(&args.store).await?;
        (t.repository, t.location, t.cluster)
    };
    let cache: Arc<dyn KeyCache> = match &args.key_cache {
        Some(dir) => Arc::new(FileKeyCache::new(dir)),
        None => Arc::new(MemoryKeyCache::new()),
    };
    Ok(Opened {
        location,
        name,
        cluster,
        namespace: args.namespace.clone(),
        cache,
        generation: args.generation,
    })
}

/// A progress bar on a terminal while `counters` move.
fn bar(counters: &Arc<Counters>, what: &str) -> Option<(ProgressBar, tokio::task::JoinHandle<()>)> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{elapsed}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_string());
    let (b, c) = (bar.clone(), counters.clone());
    let task = tokio::spawn(async move {
        loop {
            let s = c.sample();
            b.set_length(s.bytes_total.max(s.bytes_done));
            b.set_position(s.bytes_done);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    Some((bar, task))
}

fn end_bar(b: Option<(ProgressBar, tokio::task::JoinHandle<()>)>) {
    if let Some((bar, task)) = b {
        task.abort();
        bar.finish_and_clear();
    }
}

async fn run_async(args: Args) -> anyhow::Result<ExitCode> {
    match args.action {
        Action::Backup {
            source,
            pvc,
            pvc_uid,
            backup,
            block,
            force,
            repo,
        } => {
            let o = open(&repo).await?;
            let v = VolumeRepo::open_or_create(
                &o.location,
                &o.name,
                &o.cluster,
                &o.namespace,
                o.cache.as_ref(),
            )
            .await?;
            let counters = Arc::new(Counters::default());
            let control = Control::new();
            let c = control.clone();
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    c.cancel();
                }
            });
            let b = bar(&counters, "backing up");
            let r = v
                .backup(
                    BackupRequest {
                        source,
                        kind: if block {
                            VolumeKind::Block
                        } else {
                            VolumeKind::Filesystem
                        },
                        pvc,
                        pvc_uid,
                        backup,
                        force_read: force,
                    },
                    counters,
                    control,
                )
                .await;
            end_bar(b);
            let r = r?;
            for w in &r.warnings {
                eprintln!("warning: {w}");
            }
            crate::output::print(&format!(
                "snapshot {} of {} saved ({} files, {} bytes, {} new, {} uploaded{})\n",
                &r.snapshot[..8.min(r.snapshot.len())],
                r.path,
                r.files,
                r.total_bytes,
                r.new_bytes,
                r.uploaded_bytes,
                r.parent
                    .as_ref()
                    .map(|p| format!(", parent {}", &p[..8.min(p.len())]))
                    .unwrap_or_default()
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Action::Snapshots { pvc, format, repo } => {
            let o = open(&repo).await?;
            let v = o.existing().await?;
            let snaps = v.snapshots(pvc.as_deref()).await?;
            let text = match format {
                Format::Json => format!("{:#}\n", serde_json::to_value(&snaps)?),
                Format::Text => {
                    let mut t = format!("repository {}\n", v.url());
                    if snaps.is_empty() {
                        t.push_str("no snapshots\n");
                    }
                    for s in &snaps {
                        t.push_str(&format!(
                            "{}  {}  {}  {}  {}\n",
                            s.short_id,
                            s.time,
                            s.paths.join(","),
                            s.tags.join(","),
                            s.bytes.map(|b| format!("{b} bytes")).unwrap_or_default()
                        ));
                    }
                    t
                }
            };
            crate::output::print(&text)?;
            Ok(ExitCode::SUCCESS)
        }
        Action::Restore {
            snapshot,
            dest,
            pvc,
            repo,
        } => {
            let o = open(&repo).await?;
            let v = o.existing().await?;
            let counters = Arc::new(Counters::default());
            let b = bar(&counters, "restoring");
            let r = v
                .restore(&snapshot, pvc.as_deref(), &dest, counters, Control::new())
                .await;
            end_bar(b);
            let r = r?;
            for w in &r.warnings {
                eprintln!("warning: {w}");
            }
            crate::output::print(&format!(
                "restored {} of snapshot {} to {} ({} files, {} bytes)\n",
                r.path,
                &r.snapshot[..8.min(r.snapshot.len())],
                r.destination,
                r.files,
                r.bytes
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Action::Key {
            seed_cache,
            reseal,
            new_generation,
            repo,
        } => {
            let o = open(&repo).await?;
            if seed_cache && repo.key_cache.is_none() {
                bail!("--seed-cache needs --key-cache DIR");
            }
            let v = if new_generation {
                VolumeRepo::new_generation(
                    &o.location,
                    &o.name,
                    &o.cluster,
                    &o.namespace,
                    o.cache.as_ref(),
                )
                .await?
            } else {
                o.existing().await?
            };
            if seed_cache {
                o.cache
                    .put(&v.reference().cache_key(), v.password())
                    .await?;
            }
            if reseal {
                v.reseal().await?;
                eprintln!("re-sealed {}/{}", v.url(), lifeboat_volume::KEY_FILE);
            }
            crate::output::print(&format!(
                "restic -r {} --password-file FILE   # FILE holds the line below\n{}\n",
                v.restic_url(),
                v.password()
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Action::Check { read_data, repo } => {
            let o = open(&repo).await?;
            let v = o.existing().await?;
            let problems = v.check(read_data).await?;
            if problems.is_empty() {
                crate::output::print(&format!("{}: no problems found\n", v.url()))?;
                Ok(ExitCode::SUCCESS)
            } else {
                for p in &problems {
                    eprintln!("{p}");
                }
                eprintln!("{} problem(s) in {}", problems.len(), v.url());
                Ok(ExitCode::from(1))
            }
        }
        Action::Forget { backup, repo } => {
            let o = open(&repo).await?;
            let v = o.existing().await?;
            let ids = v.forget_backup(&backup).await?;
            crate::output::print(&format!(
                "forgot {} snapshot(s) of backup {backup}; run `lifeboat volumes prune` to free their data\n",
                ids.len()
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Action::Prune {
            keep_delete_hours,
            repo,
        } => {
            let o = open(&repo).await?;
            let v = o.existing().await?;
            let r = v
                .prune(Some(Duration::from_secs(keep_delete_hours * 3600)))
                .await?;
            crate::output::print(&format!(
                "deleted {} pack(s) ({} bytes) marked earlier; marked {} pack(s) ({} bytes) for a later prune; {} marked pack(s) wait for their grace period\n",
                r.packs_to_delete,
                r.bytes_to_delete,
                r.packs_marked,
                r.bytes_marked,
                r.packs_waiting
            ))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
