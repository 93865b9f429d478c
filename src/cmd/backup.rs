//! `lifeboat backup`: take one backup of a policy now.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{anyhow, bail};
use clap::Args as ClapArgs;
use lifeboat_controller::jobs::{BackupJob, run_backup_then};
use lifeboat_controller::volume_data;
use lifeboat_kube::backup::{BackupOptions, Progress};
use lifeboat_store::{BackupWriter, Phase, Repository};

use crate::cmd::backups::Format;
use crate::context;
use crate::kubeclient::KubeArgs;
use crate::progress::Reporter;

/// Take one backup of a BackupPolicy now.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The policy repository.
    #[arg(long, default_value = ".", value_name = "DIR", env = "LIFEBOAT_REPO")]
    pub repo: std::path::PathBuf,
    /// The BackupPolicy to run.
    #[arg(long, value_name = "NAME")]
    pub policy: String,
    /// The cluster to act as (default: the repository's only Cluster).
    #[arg(long, value_name = "NAME", env = "LIFEBOAT_CLUSTER")]
    pub cluster: Option<String>,
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Sign with this minisign secret key file instead of reading the
    /// Cluster's `signing.keySecretRef` through the kubeconfig.
    #[arg(long, value_name = "FILE", env = "LIFEBOAT_SIGNING_KEY_FILE")]
    pub signing_key: Option<std::path::PathBuf>,
    /// Namespace of the signing key Secret when its reference names none.
    #[arg(long, value_name = "NAMESPACE", default_value = "lifeboat")]
    pub secrets_namespace: String,
    /// Resource types listed at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Back up objects only, no volume data.
    #[arg(long)]
    pub no_volume_data: bool,
    #[command(flatten)]
    pub movers: crate::cmd::volume_data::MoverArgs,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    crate::runtime()?.block_on(run_async(args))
}

async fn run_async(args: Args) -> anyhow::Result<ExitCode> {
    let set = context::load_policies(&args.repo)?;
    let cluster = context::cluster_name(&set, args.cluster.as_deref())?;
    let policy = set
        .policy(&args.policy)
        .ok_or_else(|| {
            anyhow!(
                "no BackupPolicy named `{}` in {}",
                args.policy,
                args.repo.display()
            )
        })?
        .doc
        .clone();
    let location = set.storage_location(&policy.spec.storage).ok_or_else(|| {
        anyhow!(
            "the policy's StorageLocation `{}` does not exist",
            policy.spec.storage
        )
    })?;
    if location.doc.spec.access_mode == lifeboat_core::AccessMode::ReadOnly {
        bail!(
            "StorageLocation `{}` is ReadOnly: backups cannot be written to it",
            policy.spec.storage
        );
    }
    let client = args.kube.client().await?;
    let mut config = lifeboat_controller::locations::config(&set, &location.doc, Vec::new());
    config.signing_key = match context::read_signing_key(args.signing_key.as_deref())? {
        Some(key) => Some(key),
        None => {
            lifeboat_controller::locations::signing_key(
                &client,
                &args.secrets_namespace,
                &set,
                &cluster,
            )
            .await?
        }
    };
    let repository = Repository::open(&config).await?;

    let now = jiff::Timestamp::now();
    let mover_options = args.movers.for_policy(&policy);
    let job = BackupJob {
        cluster: &cluster,
        policy: &policy,
        slot: jiff::Timestamp::from_second(now.as_second())?,
        revision: None,
        trigger: "manual",
        owner: &lifeboat_controller::executor::instance_name("lifeboat backup"),
        movers_namespace: &mover_options.namespace,
        images: lifeboat_controller::images::copy_options(&set, &cluster, &policy)?,
    };
    let name = lifeboat_store::backup_name(&policy.metadata.name, job.slot);
    let reporter = Reporter::new(format!("backing up {name}"));
    let items = Arc::new(AtomicU64::new(0));
    let progress = {
        let reporter = reporter.clone();
        let items = items.clone();
        move |p: Progress| {
            if let Progress::ResourceDone {
                resource,
                namespace,
                items: n,
            } = &p
            {
                let total = items.fetch_add(*n, Ordering::Relaxed) + n;
                let scope = namespace
                    .as_deref()
                    .map(|ns| format!(" in {ns}"))
                    .unwrap_or_default();
                reporter.line(
                    &format!("{resource}{scope}: {n} objects ({total} in all)"),
                    total,
                );
            }
        }
    };
    let options = BackupOptions {
        concurrency: args.concurrency.max(1),
        ..BackupOptions::default()
    };
    let location_name = policy.spec.storage.clone();
    let show = crate::cmd::volume_data::show(&reporter);
    let volume_data = async |writer: &mut BackupWriter| {
        if args.no_volume_data {
            return Ok(());
        }
        let to = volume_data::Destination {
            repository: &repository,
            config: &config,
            location_name: &location_name,
            cluster: &cluster,
        };
        volume_data::back_up(&client, writer, &policy, to, &mover_options, &show).await
    };
    let backup = run_backup_then(
        &client,
        &repository,
        &job,
        &options,
        &progress,
        jiff::Timestamp::now,
        volume_data,
    );
    // Ctrl-C stops the backup and removes what it created: nothing of an
    // interrupted run by hand is left for someone to find.
    let manifest = tokio::select! {
        m = backup => Some(m),
        _ = tokio::signal::ctrl_c() => None,
    };
    reporter.finish();
    let Some(manifest) = manifest else {
        eprintln!("interrupted: removing what backup {name} created …");
        let (removed, deleted) = volume_data::discard_backup(
            &client,
            &mover_options.namespace,
            &repository,
            &cluster,
            &name,
        )
        .await?;
        eprintln!(
            "removed {} objects from the cluster, {} files and {} volume snapshots from `{}`; \
             nothing of backup {name} is left",
            removed.len(),
            deleted.files,
            deleted.snapshots.len(),
            policy.spec.storage
        );
        return Ok(ExitCode::from(130));
    };
    let manifest = manifest?;
    if manifest.phase == Phase::Failed {
        bail!(
            "backup {name} failed: {}",
            manifest.failure_reason.as_deref().unwrap_or("see its log")
        );
    }
    for v in &manifest.volumes {
        if let Some(e) = &v.error {
            eprintln!("volume {}/{} failed: {e}", v.namespace, v.pvc);
        }
    }
    let text = match args.format {
        Format::Json => format!("{:#}\n", serde_json::to_value(&manifest)?),
        Format::Text => format!(
            "{} {:?}: {} objects, {}{}{} errors, {} warnings, {} bytes stored in `{}`{}\n",
            manifest.backup_name,
            manifest.phase,
            manifest.totals.items,
            volumes_text(&manifest),
            if manifest.images.is_empty() {
                String::new()
            } else {
                format!("{} images, ", manifest.images.len())
            },
            manifest.totals.errors,
            manifest.totals.warnings,
            manifest.files.bytes(),
            policy.spec.storage,
            if manifest.recipients.is_empty() {
                " (not encrypted)"
            } else {
                " (encrypted)"
            },
        ),
    };
    crate::output::print(&text)?;
    Ok(if manifest.phase == Phase::Completed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `N volumes (B bytes), ` when the backup carries volume data.
fn volumes_text(m: &lifeboat_store::Manifest) -> String {
    if m.volumes.is_empty() {
        return String::new();
    }
    let done = m
        .volumes
        .iter()
        .filter(|v| v.phase == lifeboat_store::VolumePhase::Completed)
        .count();
    let bytes: u64 = m.volumes.iter().map(|v| v.bytes).sum();
    format!(
        "{done} of {} volumes ({bytes} bytes of data), ",
        m.volumes.len()
    )
}
