//! `lifeboat restore`: restore a backup into a cluster now, and record what
//! the restore did next to the backup.

use std::process::ExitCode;

use anyhow::{anyhow, bail};
use clap::{Args as ClapArgs, ValueEnum};
use lifeboat_controller::jobs::{RestoreJob, run_restore};
use lifeboat_core::load::PolicySet;
use lifeboat_core::model::LocationFormat;
use lifeboat_core::{AccessMode, ClaimRef, Exclude, ExistingResources, Include, NamespacePattern};
use lifeboat_kube::restore::{ClaimSelection, Progress, RestoreError, RestoreOptions};
use lifeboat_kube::select::Selection;
use lifeboat_kube::transform::Transform;
use lifeboat_store::{Repository, RestoreAction, RestorePhase, StoreError, VeleroLocation};

use crate::cmd::backups::Format;
use crate::context;
use crate::kubeclient::KubeArgs;
use crate::progress::Reporter;

/// What to do with objects that already exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Existing {
    Skip,
    Update,
    Fail,
}

/// Restore a backup into a cluster.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The policy repository.
    #[arg(long, default_value = ".", value_name = "DIR", env = "LIFEBOAT_REPO")]
    pub repo: std::path::PathBuf,
    /// The backup to restore, e.g. `payments-20261120-140500`.
    #[arg(long = "from", value_name = "BACKUP")]
    pub backup: String,
    /// The StorageLocation holding the backup (default: search them all).
    #[arg(long, value_name = "NAME")]
    pub location: Option<String>,
    /// Where the restore record goes when the backup is Velero's (default:
    /// the repository's only writable lifeboat location).
    #[arg(long, value_name = "NAME")]
    pub record_location: Option<String>,
    /// The cluster the backup was taken from (default: search every Cluster).
    #[arg(long, value_name = "NAME")]
    pub source_cluster: Option<String>,
    /// The cluster to restore into (default: the repository's only Cluster).
    #[arg(long, value_name = "NAME", env = "LIFEBOAT_CLUSTER")]
    pub cluster: Option<String>,
    /// Restore namespace SOURCE as TARGET (repeatable).
    #[arg(long = "namespace-mapping", value_name = "SOURCE=TARGET", value_parser = parse_mapping)]
    pub namespace_mapping: Vec<(String, String)>,
    /// Restore only these (source) namespaces; globs allowed (repeatable).
    #[arg(long = "namespace", value_name = "NS")]
    pub namespaces: Vec<String>,
    /// Restore only this claim (SOURCE-NAMESPACE/NAME), with its data, into
    /// a fresh volume (repeatable); with --namespace, that namespace's
    /// objects too. Combine with --namespace-mapping for a copy beside the
    /// live app.
    #[arg(long = "claim", value_name = "NS/PVC", value_parser = parse_claim)]
    pub claims: Vec<ClaimRef>,
    /// Restore hooks to run in the restored workloads' new pods: a YAML
    /// file written as a RestoreRequest's `spec.hooks` (`pods: [...]`).
    /// Velero's restore hook annotations run with or without it.
    #[arg(long, value_name = "FILE")]
    pub hooks: Option<std::path::PathBuf>,
    /// What to do when an object already exists.
    #[arg(long, value_enum, default_value_t = Existing::Skip)]
    pub existing: Existing,
    /// Send every write with dryRun=All: validated by the API server, nothing changes.
    #[arg(long)]
    pub dry_run: bool,
    /// KubeVirt: remove the VMs' interface MAC addresses (the target assigns new ones).
    #[arg(long)]
    pub clear_mac_addresses: bool,
    /// KubeVirt: give every VM a new firmware UUID.
    #[arg(long = "new-firmware-uuid")]
    pub new_firmware_uuid: bool,
    /// KubeVirt: set every VM's spec.runStrategy (Halted restores them stopped).
    #[arg(long, value_enum, value_name = "STRATEGY")]
    pub run_strategy: Option<RunStrategyArg>,
    /// Concurrent writes within a restore tier.
    #[arg(long, default_value_t = lifeboat_kube::restore::DEFAULT_PARALLELISM)]
    pub parallelism: usize,
    /// age identity files for encrypted backups.
    #[arg(
        long = "identity",
        value_name = "FILE",
        env = "LIFEBOAT_AGE_IDENTITY_FILE"
    )]
    pub identities: Vec<std::path::PathBuf>,
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Restore objects only: claims come back as they were backed up,
    /// without the backup's volume data.
    #[arg(long)]
    pub no_volume_data: bool,
    /// Do not push the backup's ImageStream images to the target
    /// cluster's registry (`spec.openshift.registryEndpoint`).
    #[arg(long)]
    pub no_images: bool,
    #[command(flatten)]
    pub movers: crate::cmd::volume_data::MoverArgs,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// The restore hooks of `--hooks FILE`.
fn read_hooks(path: &std::path::Path) -> anyhow::Result<Vec<lifeboat_core::model::RestorePodHook>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow!("cannot read the hooks file {}: {e}", path.display()))?;
    let hooks: lifeboat_core::model::RestoreHooks =
        serde_yaml_ng::from_str(&text).map_err(|e| {
            anyhow!(
                "{} is not a RestoreRequest's spec.hooks (`pods:` with name, command or init, …; \
             see docs/policy-reference/restorerequest.md): {e}",
                path.display()
            )
        })?;
    Ok(hooks.pods)
}

/// `--run-strategy` values (KubeVirt's `spec.runStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "PascalCase")]
pub enum RunStrategyArg {
    Always,
    RerunOnFailure,
    Manual,
    Halted,
    Once,
}

impl From<RunStrategyArg> for lifeboat_core::model::RunStrategy {
    fn from(a: RunStrategyArg) -> Self {
        use lifeboat_core::model::RunStrategy as R;
        match a {
            RunStrategyArg::Always => R::Always,
            RunStrategyArg::RerunOnFailure => R::RerunOnFailure,
            RunStrategyArg::Manual => R::Manual,
            RunStrategyArg::Halted => R::Halted,
            RunStrategyArg::Once => R::Once,
        }
    }
}

fn parse_claim(s: &str) -> Result<ClaimRef, String> {
    ClaimRef::parse(s)
}

fn parse_mapping(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a.to_string(), b.to_string())),
        _ => Err(format!(
            "`{s}` is not SOURCE=TARGET, for example `shop=shop-restored`"
        )),
    }
}

/// Where the backup to restore is, and where its record goes.
struct Found {
    /// The repository the record is written to; for a lifeboat backup, the
    /// one holding it.
    repository: Repository,
    /// The StorageLocation holding the backup.
    location: String,
    /// The StorageLocation keeping the record.
    record_location: String,
    /// The cluster the backup was taken from (for a Velero backup, the
    /// Velero location's name: Velero keeps no cluster name).
    source_cluster: String,
    /// Access mode of the record's location.
    access: AccessMode,
    /// Set when the backup is Velero's.
    velero: Option<VeleroLocation>,
}

/// Finds the location and source cluster holding `backup`.
async fn find_backup(set: &PolicySet, args: &Args, identities: &[String]) -> anyhow::Result<Found> {
    let locations: Vec<_> = match &args.location {
        Some(name) => vec![
            set.storage_location(name)
                .ok_or_else(|| anyhow!("no StorageLocation named `{name}`"))?,
        ],
        None => set.storage_locations.iter().collect(),
    };
    let clusters: Vec<String> = match &args.source_cluster {
        Some(c) => vec![c.clone()],
        None => set
            .clusters
            .iter()
            .map(|c| c.doc.metadata.name.clone())
            .collect(),
    };
    let mut found = Vec::new();
    let mut problems = Vec::new();
    for location in locations {
        let name = &location.doc.metadata.name;
        let config =
            lifeboat_controller::locations::config(set, &location.doc, identities.to_vec());
        if location.doc.spec.format == LocationFormat::Velero {
            let velero = match VeleroLocation::open(&config) {
                Ok(v) => v,
                Err(e) => {
                    problems.push(format!("{name}: {e}"));
                    continue;
                }
            };
            match velero.describe(&args.backup).await {
                Ok(_) => {
                    let (repository, record_location, access) =
                        record_repository(set, args, identities).await?;
                    found.push(Found {
                        repository,
                        location: name.clone(),
                        record_location,
                        source_cluster: name.clone(),
                        access,
                        velero: Some(velero),
                    });
                }
                Err(StoreError::VeleroBackupNotFound { .. }) => {}
                Err(e) => problems.push(format!("{name}: {e}")),
            }
            continue;
        }
        let repository = match Repository::open(&config).await {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("{name}: {e}"));
                continue;
            }
        };
        for cluster in &clusters {
            if repository.show_backup(cluster, &args.backup).await.is_ok() {
                found.push(Found {
                    repository: repository.clone(),
                    location: name.clone(),
                    record_location: name.clone(),
                    source_cluster: cluster.clone(),
                    access: location.doc.spec.access_mode,
                    velero: None,
                });
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => {
            let mut msg = format!(
                "no backup named `{}` in the repository's locations",
                args.backup
            );
            if !problems.is_empty() {
                msg.push_str(&format!(" (could not search: {})", problems.join("; ")));
            }
            bail!("{msg}; list backups with `lifeboat backups list`")
        }
        _ => bail!(
            "`{}` exists in several places ({}): pass --location and --source-cluster",
            args.backup,
            found
                .iter()
                .map(|f| format!("{}/{}", f.location, f.source_cluster))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The lifeboat location that keeps the record of a restore from a Velero
/// backup (Velero's bucket is never written): `--record-location`, else
/// the repository's only writable lifeboat location.
async fn record_repository(
    set: &PolicySet,
    args: &Args,
    identities: &[String],
) -> anyhow::Result<(Repository, String, AccessMode)> {
    let writable: Vec<_> = set
        .storage_locations
        .iter()
        .filter(|l| {
            l.doc.spec.format == LocationFormat::Lifeboat
                && l.doc.spec.access_mode == AccessMode::ReadWrite
        })
        .collect();
    let location = match &args.record_location {
        Some(name) => {
            let l = set
                .storage_location(name)
                .ok_or_else(|| anyhow!("no StorageLocation named `{name}` (--record-location)"))?;
            if l.doc.spec.format == LocationFormat::Velero {
                bail!(
                    "--record-location `{name}` is a Velero location, which lifeboat never \
                     writes; name a lifeboat location"
                );
            }
            l
        }
        None => match writable.as_slice() {
            [only] => only,
            [] => bail!(
                "restoring a Velero backup writes its record to a lifeboat location, and the \
                 repository has no StorageLocation of lifeboat's format with accessMode \
                 ReadWrite: add one (the location your policies will back up to)"
            ),
            several => bail!(
                "restoring a Velero backup writes its record to a lifeboat location: pass \
                 --record-location, one of {}",
                several
                    .iter()
                    .map(|l| l.doc.metadata.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    };
    let config = lifeboat_controller::locations::config(set, &location.doc, identities.to_vec());
    Ok((
        Repository::open(&config).await?,
        location.doc.metadata.name.clone(),
        location.doc.spec.access_mode,
    ))
}

/// True when `e` says the restore itself failed or was refused (exit 1),
/// as opposed to an unreachable cluster or store (exit 2).
fn is_restore_failure(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<RestoreError>(),
            Some(
                RestoreError::Verify(_)
                    | RestoreError::Read(_)
                    | RestoreError::InvalidObject { .. }
                    | RestoreError::UnknownClaims { .. }
                    | RestoreError::ClaimsWithoutData { .. }
            )
        ) || cause
            .downcast_ref::<lifeboat_store::StoreError>()
            .is_some_and(lifeboat_store::StoreError::is_integrity)
    })
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    crate::runtime()?.block_on(run_async(args))
}

async fn run_async(args: Args) -> anyhow::Result<ExitCode> {
    if !args.claims.is_empty() && args.no_volume_data {
        bail!(
            "--claim restores claims with their data, which --no-volume-data turns off; drop \
             one of them (--namespace NS --no-volume-data restores claim objects alone)"
        );
    }
    let set = context::load_policies(&args.repo)?;
    let target = context::cluster_name(&set, args.cluster.as_deref())?;
    let identities = context::read_identities(&args.identities)?;
    let Found {
        repository,
        location,
        record_location,
        source_cluster,
        access,
        velero,
    } = find_backup(&set, &args, &identities).await?;
    let target_doc = set.cluster(&target).map(|c| c.doc.clone());
    let mut options = RestoreOptions {
        selection: Selection::new(
            &Include {
                namespaces: args
                    .namespaces
                    .iter()
                    .map(|n| NamespacePattern(n.clone()))
                    .collect(),
                ..Include::default()
            },
            &Exclude::default(),
        )?,
        transform: Transform {
            namespace_mapping: args.namespace_mapping.iter().cloned().collect(),
            storage_class_mapping: target_doc
                .as_ref()
                .map(|c| c.spec.storage_class_mapping.clone())
                .unwrap_or_default(),
            openshift: lifeboat_kube::openshift::RestoreConfig::for_clusters(
                set.cluster(&source_cluster).map(|c| &c.doc.spec),
                target_doc.as_ref().map(|c| &c.spec),
            ),
            kubevirt: lifeboat_kube::kubevirt::RestoreConfig::from_request(
                &lifeboat_core::model::KubeVirtRestore {
                    clear_mac_addresses: args.clear_mac_addresses,
                    new_firmware_uuid: args.new_firmware_uuid,
                    run_strategy: args.run_strategy.map(Into::into),
                },
                &args.backup,
            ),
        },
        existing: match args.existing {
            Existing::Skip => ExistingResources::Skip,
            Existing::Update => ExistingResources::Update,
            Existing::Fail => ExistingResources::Fail,
        },
        dry_run: args.dry_run,
        parallelism: args.parallelism.max(1),
        denied_namespaces: target_doc
            .map(|c| c.spec.restore.denied_namespaces)
            .unwrap_or_else(lifeboat_core::model::default_denied_namespaces),
        claims: ClaimSelection::of(&args.claims, !args.namespaces.is_empty()),
        hooks: match &args.hooks {
            Some(path) => read_hooks(path)?,
            None => Vec::new(),
        },
        ..RestoreOptions::default()
    };
    let client = args.kube.client().await?;
    let start = jiff::Timestamp::now();
    let what = if args.dry_run {
        "dry-run restore of"
    } else {
        "restoring"
    };
    let reporter = Reporter::new(format!(
        "{what} {} from {location} into {target}",
        args.backup
    ));
    let progress = {
        let reporter = reporter.clone();
        move |p: Progress| match p {
            Progress::Verified { objects } => {
                reporter.line(&format!("verified {objects} objects"), 0)
            }
            Progress::Planned { to_apply, skipped } => reporter.line(
                &format!("{to_apply} objects to apply, {skipped} skipped"),
                0,
            ),
            Progress::Hooks { workloads } => reporter.line(
                &format!(
                    "running the restore hooks of {workloads} workloads (waiting for their pods)"
                ),
                0,
            ),
            Progress::Applied { done, total, .. } => {
                if done == total || done % 1000 == 0 {
                    reporter.line(&format!("{done}/{total} applied"), done as u64);
                }
            }
            Progress::Volume {
                namespace,
                pvc,
                progress,
            } => crate::cmd::volume_data::show_progress(
                &reporter,
                &format!("{namespace}/{pvc}"),
                &progress,
            ),
        }
    };
    // Unique per run: two restores in one second must not share a record.
    let request = format!(
        "manual-{}-{:03}{}",
        start.strftime("%Y%m%d-%H%M%S"),
        start.subsec_millisecond(),
        if args.dry_run { "-dry-run" } else { "" }
    );
    if let Some(velero) = &velero
        && !args.no_volume_data
    {
        let location_doc = set
            .storage_location(&location)
            .ok_or_else(|| anyhow!("no StorageLocation named `{location}`"))?;
        let config =
            lifeboat_controller::locations::config(&set, &location_doc.doc, identities.clone());
        options.volume_data = lifeboat_controller::volume_data::for_velero_restore(
            velero,
            &config,
            &location,
            &args.backup,
            &request,
            args.movers.options(),
        )
        .await?;
    }
    if !args.no_volume_data && velero.is_none() {
        let location_doc = set
            .storage_location(&location)
            .ok_or_else(|| anyhow!("no StorageLocation named `{location}`"))?;
        let config =
            lifeboat_controller::locations::config(&set, &location_doc.doc, identities.clone());
        let from = lifeboat_controller::volume_data::Destination {
            repository: &repository,
            config: &config,
            location_name: &location,
            cluster: &source_cluster,
        };
        options.volume_data = lifeboat_controller::volume_data::for_restore(
            from,
            &args.backup,
            &request,
            args.dry_run,
            args.movers.options(),
        )
        .await?;
    }
    let job = RestoreJob {
        request: &request,
        source_cluster: &source_cluster,
        backup: &args.backup,
        target_cluster: &target,
        options,
        record: access != AccessMode::ReadOnly,
        owner: None,
        velero: velero.as_ref(),
        images: if args.no_images {
            None
        } else {
            Some(lifeboat_controller::images::push_options(&set, &target)?)
        },
    };
    let running = run_restore(&client, &repository, &job, &progress, jiff::Timestamp::now);
    // Ctrl-C stops the restore, removes its movers and their claims, and
    // records it Failed; what it applied so far stays (and says so).
    let record = tokio::select! {
        r = running => Some(r),
        _ = tokio::signal::ctrl_c() => None,
    };
    reporter.finish();
    let Some(record) = record else {
        eprintln!("interrupted: removing the movers of restore {request} …");
        let removed = lifeboat_controller::volume_data::discard_restore(
            &client,
            &args.movers.options().namespace,
            (access != AccessMode::ReadOnly).then_some(&repository),
            &target,
            &request,
            "interrupted by Ctrl-C",
        )
        .await?;
        eprintln!(
            "removed {} objects from the cluster; what the restore applied so far stays, \
             and its record says it was interrupted",
            removed.len()
        );
        return Ok(ExitCode::from(130));
    };
    let record = match record {
        Ok(record) => record,
        // A restore that was refused (the backup failed verification) or
        // that failed part-way is a finding (exit 1), not a usage or I/O
        // error; so is an integrity failure found while opening it.
        Err(e) if is_restore_failure(&e) => {
            crate::output::print_error(&e);
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e),
    };
    if let Some(message) = &record.message {
        eprintln!("note: {message}");
    }
    if access == AccessMode::ReadOnly {
        eprintln!("note: `{record_location}` is ReadOnly, so the restore record was not written");
    }
    let text = match args.format {
        Format::Json => format!("{:#}\n", serde_json::to_value(&record)?),
        Format::Text => {
            let mut t = String::new();
            for m in &record.missing_prerequisites {
                t.push_str(&format!("missing  prerequisite {m}\n"));
            }
            for item in &record.items {
                if item.action == RestoreAction::Created && record.items.len() > 200 {
                    continue;
                }
                t.push_str(&format!(
                    "{:<8} {}/{}{}{}\n",
                    format!("{:?}", item.action).to_lowercase(),
                    item.resource,
                    item.namespace
                        .as_deref()
                        .map(|n| format!("{n}/"))
                        .unwrap_or_default(),
                    item.name,
                    item.reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default(),
                ));
                for change in &item.changes {
                    t.push_str(&format!("         ~ {change}\n"));
                }
            }
            for i in &record.images {
                let verb = match (&i.error, record.dry_run) {
                    (Some(_), _) => "failed",
                    (None, true) => "to push",
                    (None, false) => "pushed",
                };
                t.push_str(&format!(
                    "{verb:<8} image {}:{}@{}: {}\n",
                    i.repository,
                    i.tag,
                    i.digest.get(..19).unwrap_or(&i.digest),
                    match &i.error {
                        Some(e) => e.clone(),
                        None => format!(
                            "{} blobs ({} bytes) and {} manifests, {} blobs already there",
                            i.blobs_pushed, i.bytes_pushed, i.manifests_pushed, i.blobs_present
                        ),
                    }
                ));
            }
            for v in &record.volumes {
                t.push_str(&format!(
                    "{:<8} volume {}/{}: {}\n",
                    if v.error.is_some() {
                        "failed"
                    } else {
                        "filled"
                    },
                    v.namespace,
                    v.pvc,
                    match &v.error {
                        Some(e) => e.clone(),
                        None if v.from_kept => format!(
                            "from the kept CSI snapshot (VolumeSnapshotContent {})",
                            v.snapshot
                        ),
                        None => format!(
                            "{} files, {} bytes from snapshot {}{}",
                            v.files,
                            v.bytes,
                            v.snapshot.get(..8).unwrap_or(&v.snapshot),
                            v.node
                                .as_ref()
                                .map(|n| format!(" on node {n}"))
                                .unwrap_or_default()
                        ),
                    }
                ));
            }
            let c = &record.counts;
            t.push_str(&format!(
                "{}{} {:?}: {} created, {} updated, {} skipped, {} failed; record `{request}` in `{record_location}`\n",
                if record.dry_run { "dry run: " } else { "" },
                args.backup,
                record.phase,
                c.created,
                c.updated,
                c.skipped,
                c.failed
            ));
            t
        }
    };
    crate::output::print(&text)?;
    Ok(if record.phase == RestorePhase::Completed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
