//! `lifeboat backups list|show|verify|delete`: the catalog of a storage
//! location.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args as ClapArgs, Subcommand, ValueEnum};
use lifeboat_core::plan::InProgress;
use lifeboat_store::{BackupList, Finding, Manifest, SignatureCheck, StoreError, Verification};

/// The commit point of a backup, named in findings about it.
const MANIFEST: &str = "manifest.json";

use crate::context::{self, StoreArgs};
use crate::kubeclient::KubeArgs;

/// List, show or delete backups in a storage location.
#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, Subcommand)]
pub enum Action {
    /// List the committed backups of a cluster (newest last).
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// Only backups of this policy.
        #[arg(long)]
        policy: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Show one backup's manifest.
    Show {
        /// The backup name, e.g. `payments-20261120-140500`.
        backup: String,
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Check backups completely: every file present, of the recorded size and
    /// SHA-256, and (with --identity for encrypted backups) decrypted,
    /// decompressed and parsed. Exit 0 intact, 1 damaged, 2 usage or I/O.
    #[command(group = clap::ArgGroup::new("which").required(true).args(["backup", "all"]))]
    Verify {
        /// The backup name, e.g. `payments-20261120-140500`.
        backup: Option<String>,
        /// Every committed backup of the cluster.
        #[arg(long)]
        all: bool,
        /// With --all: only backups of this policy.
        #[arg(long, requires = "all")]
        policy: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Delete one backup and forget its volume snapshots (the snapshots
    /// first, then the manifest, so a half-deleted backup is never listed
    /// as complete and no snapshot is left unlisted).
    ///
    /// A backup that kept CSI snapshots in its cluster (method `snapshot`,
    /// `keepLocalSnapshots`) deletes them there first, storage snapshots
    /// included: that needs the cluster (--kubeconfig).
    Delete {
        backup: String,
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        kube: KubeArgs,
        /// Confirm the deletion.
        #[arg(long)]
        yes: bool,
    },
    /// Remove the image blobs (`images/`) no backup of the location
    /// references, once they are older than the grace: twice the longest
    /// backup timeout of the policies writing there, at least 24h. The
    /// controller does this after each cycle's prunes.
    SweepImages {
        #[command(flatten)]
        store: StoreArgs,
        /// Decide as if it were this time (RFC 3339), for drills and tests.
        #[arg(long, value_name = "TIME")]
        now: Option<jiff::Timestamp>,
        /// Say what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

/// Output formats for data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

pub(crate) use lifeboat_controller::status::size;

fn stored_bytes(m: &Manifest) -> u64 {
    m.files.bytes()
}

/// The `SIGNED` cell of a backup.
fn signed_label(check: Option<&SignatureCheck>) -> &'static str {
    check.map_or("unsigned", SignatureCheck::label)
}

/// The signature of a backup as JSON.
fn signature_json(check: &SignatureCheck) -> serde_json::Value {
    serde_json::json!({
        "state": check.label(),
        "keyId": check.key_id(),
        "required": check.required,
        "accepted": check.accepted(),
        "detail": check.describe(),
    })
}

/// Warnings for listed backups a restore would refuse, or accept only with
/// a warning.
fn signature_warnings(list: &BackupList) -> String {
    let mut out = String::new();
    for m in &list.backups {
        let Some(check) = list.signature(m) else {
            continue;
        };
        if let Some(refusal) = check.refusal() {
            out.push_str(&format!("warning: {refusal}; restores refuse it\n"));
        }
    }
    out
}

fn table(backups: &[Manifest], signed: impl Fn(&Manifest) -> &'static str) -> String {
    let mut rows = vec![[
        "NAME".to_string(),
        "POLICY".into(),
        "PHASE".into(),
        "STARTED".into(),
        "DURATION".into(),
        "ITEMS".into(),
        "ERRORS".into(),
        "SIZE".into(),
        "ENCRYPTED".into(),
        "SIGNED".into(),
    ]];
    for m in backups {
        let secs = m.end_time.duration_since(m.start_time).as_secs_f64();
        rows.push([
            m.backup_name.clone(),
            m.policy.clone(),
            format!("{:?}", m.phase),
            m.start_time.strftime("%Y-%m-%d %H:%M:%SZ").to_string(),
            format!("{secs:.1}s"),
            m.totals.items.to_string(),
            m.totals.errors.to_string(),
            size(stored_bytes(m)),
            if m.recipients.is_empty() { "no" } else { "yes" }.into(),
            signed(m).into(),
        ]);
    }
    columns(&rows)
}

/// Rows as left-aligned columns two spaces apart; the first row is the
/// header.
pub(crate) fn columns<const N: usize>(rows: &[[String; N]]) -> String {
    let widths: Vec<usize> = (0..N)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The unfinished backups that have an operation record (running, or
/// interrupted and resumed while their slot is due), newest last.
async fn in_progress(
    repository: &lifeboat_store::Repository,
    cluster: &str,
    policy: Option<&str>,
) -> anyhow::Result<Vec<InProgress>> {
    let incomplete = repository
        .incomplete_backups(cluster, jiff::Timestamp::now(), jiff::SignedDuration::ZERO)
        .await?;
    Ok(incomplete
        .into_iter()
        .filter(|i| policy.is_none_or(|p| lifeboat_core::plan::is_backup_of(&i.backup, p)))
        .filter_map(|i| {
            Some(InProgress {
                operation: lifeboat_controller::catalog::observed_operation(i.operation.as_ref()?),
                backup: i.backup,
            })
        })
        .collect())
}

fn in_progress_text(running: &[InProgress], now: jiff::Timestamp) -> String {
    let mut out = String::new();
    for p in running {
        let op = &p.operation;
        let state = if op.deadline <= now {
            "past its deadline: the next run of its slot commits it Failed".to_string()
        } else {
            match op.eta(now) {
                Some(eta) => format!("ETA {}", eta.strftime("%Y-%m-%d %H:%M:%SZ")),
                None => format!("deadline {}", op.deadline.strftime("%Y-%m-%d %H:%M:%SZ")),
            }
        };
        out.push_str(&format!(
            "in progress: {} ({}; {}/{} volumes, {}{}), started {} by {}; {state}\n",
            p.backup,
            op.step,
            op.volumes_done,
            op.volumes_planned,
            size(op.bytes_done),
            if op.moving.is_empty() {
                String::new()
            } else {
                format!(", moving {}", op.moving.join(", "))
            },
            op.started.strftime("%Y-%m-%d %H:%M:%SZ"),
            op.owner,
        ));
    }
    out
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    crate::runtime()?.block_on(run_async(args))
}

async fn run_async(args: Args) -> anyhow::Result<ExitCode> {
    let (Action::List { store, .. }
    | Action::Show { store, .. }
    | Action::Verify { store, .. }
    | Action::Delete { store, .. }
    | Action::SweepImages { store, .. }) = &args.action;
    if let Some((location, name)) = context::velero(store)? {
        return crate::cmd::velero_backups::run(&args.action, &location, &name).await;
    }
    match args.action {
        Action::SweepImages {
            store,
            now,
            dry_run,
            format,
        } => {
            let set = context::load_policies(&store.repo)?;
            let target = context::open(&store).await?;
            let report = lifeboat_controller::images::sweep(
                &target.repository,
                &set,
                &target.location,
                now.unwrap_or_else(jiff::Timestamp::now),
                dry_run,
            )
            .await?;
            let text = match format {
                Format::Json => format!(
                    "{:#}\n",
                    serde_json::json!({
                        "location": target.location,
                        "dryRun": dry_run,
                        "grace": report.grace.to_string(),
                        "manifests": report.manifests,
                        "referenced": report.plan.referenced,
                        "recent": report.plan.recent,
                        "delete": report.plan.delete,
                        "deleted": report.deleted,
                        "stalePending": report.plan.stale_pending,
                    })
                ),
                Format::Text => format!(
                    "{}{} unreferenced blobs older than {} {} from `{}`; {} referenced by {} \
                     backups, {} kept as recent\n",
                    if dry_run { "dry run: " } else { "" },
                    report.plan.delete.len(),
                    report.grace,
                    if dry_run {
                        "would be removed"
                    } else {
                        "removed"
                    },
                    target.location,
                    report.plan.referenced,
                    report.manifests,
                    report.plan.recent,
                ),
            };
            crate::output::print(&text)?;
            Ok(ExitCode::SUCCESS)
        }
        Action::List {
            store,
            policy,
            format,
        } => {
            let target = context::open(&store).await?;
            let list = target
                .repository
                .list_backups(&target.cluster, policy.as_deref())
                .await?;
            let running =
                in_progress(&target.repository, &target.cluster, policy.as_deref()).await?;
            let text = match format {
                Format::Json => format!(
                    "{:#}\n",
                    serde_json::json!({
                        "cluster": target.cluster,
                        "location": target.location,
                        "backups": list.backups,
                        "inProgress": running,
                        "signatures": list.signatures.iter().map(|(n, c)| (n.clone(), signature_json(c))).collect::<serde_json::Map<_, _>>(),
                        "unreadable": list.unreadable.iter().map(|(n, e)| serde_json::json!({"backup": n, "error": e})).collect::<Vec<_>>(),
                    })
                ),
                Format::Text => {
                    let mut t = if list.backups.is_empty() {
                        format!(
                            "no backups of cluster `{}` in `{}`\n",
                            target.cluster, target.location
                        )
                    } else {
                        table(&list.backups, |m| signed_label(list.signature(m)))
                    };
                    t.push_str(&signature_warnings(&list));
                    t.push_str(&in_progress_text(&running, jiff::Timestamp::now()));
                    for (name, err) in &list.unreadable {
                        t.push_str(&format!(
                            "warning: the manifest of {name} is unreadable: {err}\n"
                        ));
                    }
                    t
                }
            };
            crate::output::print(&text)?;
            Ok(ExitCode::SUCCESS)
        }
        Action::Show {
            backup,
            store,
            format,
        } => {
            let target = context::open(&store).await?;
            let reader = target
                .repository
                .open_backup(&target.cluster, &backup)
                .await?;
            let (m, check) = (reader.manifest().clone(), reader.signature());
            let text = match format {
                Format::Json => {
                    let mut v = serde_json::to_value(&m)?;
                    v["signature"] = signature_json(check);
                    format!("{v:#}\n")
                }
                Format::Text => {
                    let mut t = table(std::slice::from_ref(&m), |_| check.label());
                    t.push_str(&format!("\nsignature: {}\n", check.describe()));
                    if let Some(refusal) = check.refusal() {
                        t.push_str(&format!("warning: {refusal}; restores refuse it\n"));
                    }
                    t.push_str("\nRESOURCE  ITEMS\n");
                    for (resource, count) in &m.resources {
                        t.push_str(&format!("{resource}  {}\n", count.items));
                    }
                    if !m.volumes.is_empty() {
                        t.push_str("\nVOLUME  METHOD  PHASE  DATA\n");
                        for v in &m.volumes {
                            t.push_str(&format!(
                                "{}/{}  {}  {:?}  {}\n",
                                v.namespace,
                                v.pvc,
                                v.method,
                                v.phase,
                                volume_data(v)
                            ));
                        }
                    }
                    if !m.artifacts.is_empty() {
                        t.push_str("\nARTIFACT  POD  BYTES  STORED  SHA256  DURATION\n");
                        for a in &m.artifacts {
                            t.push_str(&format!(
                                "{}  {}/{} ({})  {}  {}  {}  {} ms\n",
                                a.file,
                                a.namespace,
                                a.pod,
                                a.container,
                                a.bytes,
                                a.stored_bytes,
                                a.raw_sha256,
                                a.duration_ms
                            ));
                        }
                    }
                    if !m.images.is_empty() {
                        t.push_str("\nIMAGE  DIGEST  PLATFORMS  BLOBS  BYTES\n");
                        for i in &m.images {
                            t.push_str(&format!(
                                "{}:{}  {}  {}  {}  {}\n",
                                i.repository,
                                i.tag,
                                i.digest,
                                i.manifests.len().max(1),
                                i.blobs.len(),
                                i.bytes
                            ));
                        }
                    }
                    t
                }
            };
            crate::output::print(&text)?;
            Ok(ExitCode::SUCCESS)
        }
        Action::Verify {
            backup,
            all: _,
            policy,
            store,
            format,
        } => verify(backup, policy, &store, format).await,
        Action::Delete {
            backup,
            store,
            kube,
            yes,
        } => {
            if !yes {
                bail!("deleting `{backup}` cannot be undone: pass --yes to confirm");
            }
            let target = context::open(&store).await?;
            let kept = delete_kept(&target, &backup, &kube).await?;
            let deleted = lifeboat_volume::forget::delete_backup(
                &target.repository,
                &target.cluster,
                &backup,
            )
            .await?;
            let mut text = format!("deleted {backup} ({} files", deleted.files);
            match deleted.snapshots.len() {
                0 => {}
                1 => text.push_str(", 1 volume snapshot forgotten"),
                n => text.push_str(&format!(", {n} volume snapshots forgotten")),
            }
            match kept.len() {
                0 => {}
                1 => text.push_str(", 1 kept snapshot deleted"),
                n => text.push_str(&format!(", {n} kept snapshots deleted")),
            }
            text.push_str(")\n");
            for c in &kept {
                text.push_str(&format!("  deleted VolumeSnapshotContent {c}\n"));
            }
            for kept in &deleted.kept {
                text.push_str(&format!("  kept {kept}\n"));
            }
            crate::output::print(&text)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Where a volume's data is, for `backups show`.
fn volume_data(v: &lifeboat_store::VolumeEntry) -> String {
    let mut parts = Vec::new();
    if let Some(id) = &v.snapshot {
        parts.push(format!("restic snapshot {}", id.get(..8).unwrap_or(id)));
    }
    if let Some(k) = &v.kept {
        parts.push(format!(
            "kept in the cluster as VolumeSnapshotContent {} (not disaster-proof)",
            k.content
        ));
    }
    if let Some(e) = &v.error {
        parts.push(e.clone());
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join("; ")
    }
}

/// Deletes the CSI snapshots `backup` kept in its cluster when its
/// manifest (or, unfinished, its operation record) lists any; the cluster
/// must then be reachable, else nothing is deleted. Returns the contents.
async fn delete_kept(
    target: &context::Target,
    backup: &str,
    kube: &KubeArgs,
) -> anyhow::Result<Vec<String>> {
    let volumes = match target.repository.open_backup(&target.cluster, backup).await {
        Ok(reader) => reader.volumes().to_vec(),
        Err(_) => target
            .repository
            .read_operation(&target.cluster, backup)
            .await
            .ok()
            .flatten()
            .map(|op| op.volumes)
            .unwrap_or_default(),
    };
    if !volumes.iter().any(|v| v.kept.is_some()) {
        return Ok(Vec::new());
    }
    let client = kube.client().await.with_context(|| {
        format!(
            "`{backup}` kept CSI snapshots in cluster `{}`; deleting it deletes them there, \
             so lifeboat needs that cluster: pass --kubeconfig FILE",
            target.cluster
        )
    })?;
    lifeboat_kube::volumes::delete_kept(&client, backup)
        .await
        .with_context(|| format!("cannot delete the snapshots `{backup}` kept in the cluster"))
}

/// `lifeboat backups verify`: one backup, or all of a cluster's.
async fn verify(
    backup: Option<String>,
    policy: Option<String>,
    store: &StoreArgs,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let target = context::open(store).await?;
    let repo = &target.repository;
    let mut reports = Vec::new();
    let names = match backup {
        Some(name) => vec![name],
        None => {
            let list = repo
                .list_backups(&target.cluster, policy.as_deref())
                .await?;
            // A manifest that cannot be read is damage too.
            for (name, error) in list.unreadable {
                let mut v = Verification::new(&target.cluster, &name, false);
                v.push(Finding::damaged(MANIFEST, "decode", error));
                reports.push(v);
            }
            list.backups.into_iter().map(|m| m.backup_name).collect()
        }
    };
    let has_identity = !store.identities.is_empty();
    let snapshots = lifeboat_volume::verify::SnapshotsCheck::new(repo.clone());
    for name in names {
        let reader = match repo.open_backup(&target.cluster, &name).await {
            Ok(reader) => reader,
            Err(StoreError::InvalidJson { source, .. }) => {
                let mut v = Verification::new(&target.cluster, &name, false);
                v.push(Finding::damaged(MANIFEST, "decode", source.to_string()));
                reports.push(v);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let report = reader
            .verify_all(&[&snapshots])
            .await
            .with_context(|| format!("cannot verify {name}"))?;
        reports.push(report);
    }
    reports.sort_by(|a, b| a.backup.cmp(&b.backup));
    let intact = reports.iter().filter(|r| r.is_intact()).count();
    let damaged = reports.len() - intact;
    let text = match format {
        Format::Json => format!(
            "{:#}\n",
            serde_json::json!({
                "cluster": target.cluster,
                "location": target.location,
                "intact": damaged == 0,
                "backups": reports,
            })
        ),
        Format::Text => verify_text(&reports, &target.cluster, &target.location, has_identity),
    };
    crate::output::print(&text)?;
    Ok(if damaged > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The verification of each backup: a line each, then each damaged file
/// and each check that could not be done.
fn verify_text(reports: &[Verification], cluster: &str, location: &str, identity: bool) -> String {
    let mut out = String::new();
    if reports.is_empty() {
        return format!("no backups of cluster `{cluster}` in `{location}` to verify\n");
    }
    for r in reports {
        if r.is_intact() {
            let objects = r
                .objects
                .map(|n| format!(", {n} objects"))
                .unwrap_or_default();
            let volumes = r
                .findings
                .iter()
                .filter(|f| f.check == lifeboat_volume::verify::CHECK)
                .count();
            let volumes = match volumes {
                0 => String::new(),
                1 => ", 1 volume snapshot".to_string(),
                n => format!(", {n} volume snapshots"),
            };
            let partial = if r.not_checked().next().is_some() {
                " (not decrypted)"
            } else {
                ""
            };
            out.push_str(&format!(
                "{}: intact{partial}: {} read{objects}{volumes}\n",
                r.backup,
                size(r.stored_bytes)
            ));
            for f in r
                .findings
                .iter()
                .filter(|f| f.check == lifeboat_volume::verify::KEPT_CHECK)
            {
                out.push_str(&format!(
                    "  kept snapshot of {}: {}\n",
                    f.subject.trim_start_matches("volumes/"),
                    f.detail.as_deref().unwrap_or_default()
                ));
            }
        } else {
            out.push_str(&format!(
                "{}: DAMAGED: {}\n",
                r.backup,
                r.damaged_subjects().join(", ")
            ));
            for f in r.damaged() {
                out.push_str(&format!(
                    "  {} ({}): {}\n",
                    f.subject,
                    f.check,
                    f.detail.as_deref().unwrap_or("damaged")
                ));
            }
        }
    }
    let skipped: Vec<&str> = reports
        .iter()
        .flat_map(|r| r.not_checked())
        .map(|f| f.subject.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if !skipped.is_empty() && !identity {
        out.push_str(&format!(
            "not checked without an identity: decrypting, decompressing and parsing {}; pass \
             --identity FILE (an age secret key of the location's recipients) to check them too\n",
            skipped.join(", ")
        ));
    }
    let damaged = reports.iter().filter(|r| !r.is_intact()).count();
    out.push_str(&format!(
        "{} backup{} of `{cluster}` in `{location}`: {} intact, {damaged} damaged\n",
        reports.len(),
        if reports.len() == 1 { "" } else { "s" },
        reports.len() - damaged,
    ));
    if damaged > 0 {
        out.push_str(
            "restore from an intact backup; a damaged one cannot be repaired, delete it with \
             `lifeboat backups delete NAME --yes` once it is no longer needed for inspection\n",
        );
    }
    out
}
