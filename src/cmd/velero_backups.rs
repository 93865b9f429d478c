//! `lifeboat backups` on a `format: velero` StorageLocation: Velero's
//! backups, read where Velero left them (`lifeboat_store::VeleroLocation`).
//! `list`, `show` and `verify` read; `delete` is refused, since lifeboat
//! never writes to Velero's bucket (Velero's own retention or `velero
//! backup delete` remove its backups).

use std::process::ExitCode;

use anyhow::bail;
use std::collections::BTreeMap;

use lifeboat_store::{PodVolumeBackup, RestoreSource, Uploader, VeleroBackup, VeleroLocation};

use crate::cmd::backups::{Action, Format, columns};

fn time(t: Option<jiff::Timestamp>) -> String {
    t.map(|t| t.strftime("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| "-".into())
}

/// A backup's pod volume backups counted per uploader (`Err`: why its
/// list could not be read).
type Counts = Result<BTreeMap<String, usize>, String>;

fn counts(pvbs: &[PodVolumeBackup]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for p in pvbs {
        *out.entry(p.uploader.to_string()).or_insert(0) += 1;
    }
    out
}

/// `2 restic, 1 kopia`; `-` for none.
fn counts_text(c: &Counts) -> String {
    match c {
        Err(_) => "?".into(),
        Ok(c) if c.is_empty() => "-".into(),
        Ok(c) => c
            .iter()
            .map(|(u, n)| format!("{n} {u}"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn table(backups: &[(VeleroBackup, Counts)]) -> String {
    let mut rows = vec![[
        "NAME".to_string(),
        "SCHEDULE".into(),
        "PHASE".into(),
        "STARTED".into(),
        "EXPIRES".into(),
        "ITEMS".into(),
        "ERRORS".into(),
        "WARNINGS".into(),
        "POD VOLUMES".into(),
    ]];
    for (b, c) in backups {
        rows.push([
            b.name.clone(),
            b.schedule.clone().unwrap_or_else(|| "-".into()),
            if b.phase.is_empty() {
                "-".into()
            } else {
                b.phase.clone()
            },
            time(b.started),
            time(b.expires),
            b.items.map_or_else(|| "-".into(), |n| n.to_string()),
            b.errors.to_string(),
            b.warnings.to_string(),
            counts_text(c),
        ]);
    }
    columns(&rows)
}

fn json(b: &VeleroBackup, c: &Counts) -> serde_json::Value {
    serde_json::json!({
        "podVolumes": match c {
            Ok(c) => serde_json::json!(c),
            Err(e) => serde_json::json!({"error": e}),
        },
        "name": b.name,
        "schedule": b.schedule,
        "phase": b.phase,
        "started": b.started,
        "completed": b.completed,
        "expires": b.expires,
        "items": b.items,
        "formatVersion": b.format_version,
        "errors": b.errors,
        "warnings": b.warnings,
        "restorable": b.restorable(),
    })
}

pub async fn run(action: &Action, velero: &VeleroLocation, name: &str) -> anyhow::Result<ExitCode> {
    match action {
        Action::List { policy, format, .. } => {
            let mut found = velero.list().await?;
            if let Some(schedule) = policy {
                found.retain(|b| b.schedule.as_deref() == Some(schedule.as_str()));
            }
            // One small read per backup: its pod volume backups.
            let mut list = Vec::new();
            for b in found {
                let c = velero
                    .pod_volume_backups(&b.name)
                    .await
                    .map(|p| counts(&p))
                    .map_err(|e| e.to_string());
                list.push((b, c));
            }
            let text = match format {
                Format::Json => format!(
                    "{:#}\n",
                    serde_json::json!({
                        "location": name,
                        "format": "velero",
                        "backups": list.iter().map(|(b, c)| json(b, c)).collect::<Vec<_>>(),
                    })
                ),
                Format::Text if list.is_empty() => {
                    format!(
                        "no Velero backups in `{name}` ({}/backups/)\n",
                        velero.url()
                    )
                }
                Format::Text => table(&list),
            };
            crate::output::print(&text)?;
            Ok(ExitCode::SUCCESS)
        }
        Action::Show { backup, format, .. } => {
            let b = velero.describe(backup).await?;
            let pvbs = velero.pod_volume_backups(backup).await?;
            let c: Counts = Ok(counts(&pvbs));
            let text = match format {
                Format::Json => {
                    let mut v = json(&b, &c);
                    v["podVolumeBackups"] = pvbs
                        .iter()
                        .map(|p| {
                            serde_json::json!({
                                "namespace": p.namespace, "pod": p.pod, "volume": p.volume,
                                "uploader": p.uploader.to_string(), "phase": p.phase,
                                "snapshot": p.snapshot, "bytes": p.bytes,
                                "readable": p.uploader == Uploader::Restic,
                            })
                        })
                        .collect();
                    format!("{v:#}\n")
                }
                Format::Text => {
                    let mut t = table(&[(b.clone(), c)]);
                    if !pvbs.is_empty() {
                        let mut rows = vec![[
                            "POD".to_string(),
                            "VOLUME".into(),
                            "UPLOADER".into(),
                            "PHASE".into(),
                            "SNAPSHOT".into(),
                            "BYTES".into(),
                            "LIFEBOAT".into(),
                        ]];
                        for p in &pvbs {
                            rows.push([
                                format!("{}/{}", p.namespace, p.pod),
                                p.volume.clone(),
                                p.uploader.to_string(),
                                p.phase.clone(),
                                p.snapshot.get(..8).unwrap_or(&p.snapshot).to_string(),
                                p.bytes.to_string(),
                                match p.uploader {
                                    Uploader::Restic => "restores its data".into(),
                                    _ => "cannot read its data".to_string(),
                                },
                            ]);
                        }
                        t.push('\n');
                        t.push_str(&columns(&rows));
                    }
                    t.push_str(&format!(
                        "\nVelero backup (format {}) in `{name}`; {}\n",
                        b.format_version.as_deref().unwrap_or("unknown"),
                        if b.restorable() {
                            "`lifeboat restore` restores its objects and the data of its restic \
                             pod volume backups of claims"
                        } else {
                            "not restorable: Velero did not finish it"
                        }
                    ));
                    t
                }
            };
            crate::output::print(&text)?;
            Ok(ExitCode::SUCCESS)
        }
        Action::Verify {
            backup,
            all,
            policy,
            format,
            ..
        } => {
            let names: Vec<String> = if *all {
                velero
                    .list()
                    .await?
                    .into_iter()
                    .filter(|b| policy.is_none() || b.schedule == *policy)
                    .filter(VeleroBackup::restorable)
                    .map(|b| b.name)
                    .collect()
            } else {
                backup.iter().cloned().collect()
            };
            let mut damaged = false;
            let mut results = Vec::new();
            for backup in &names {
                let checked = match velero.open_backup(backup).await {
                    Ok(reader) => reader.verify().await,
                    Err(e) => Err(e),
                };
                damaged |= checked.is_err();
                results.push((backup.clone(), checked));
            }
            let text = match format {
                Format::Json => format!(
                    "{:#}\n",
                    serde_json::Value::Array(
                        results
                            .iter()
                            .map(|(b, r)| match r {
                                Ok(v) => serde_json::json!({"backup": b, "ok": true, "objects": v.objects}),
                                Err(e) => serde_json::json!({"backup": b, "ok": false, "error": e.to_string()}),
                            })
                            .collect()
                    )
                ),
                Format::Text => results
                    .iter()
                    .map(|(b, r)| match r {
                        Ok(v) => format!(
                            "ok       {b}: {} objects, gzip and tar intact, every object JSON \
                             (Velero records no checksums)\n",
                            v.objects
                        ),
                        Err(e) => format!("damaged  {b}: {e}\n"),
                    })
                    .collect(),
            };
            crate::output::print(&text)?;
            Ok(if damaged {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Action::Delete { .. } | Action::SweepImages { .. } => bail!(
            "`{name}` is a Velero location, which lifeboat never writes: delete Velero's backups \
             with Velero (`velero backup delete`) or let its ttl expire them"
        ),
    }
}
