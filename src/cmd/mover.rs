//! `lifeboat mover backup|restore|prune --work FILE`: what a mover pod runs.
//!
//! The work file (JSON, mounted from the per-operation Secret) says what to
//! do. Progress goes to stdout as JSON lines; the result (or the failure)
//! goes to the termination-message file, so the orchestrator reads it from
//! the pod's status. SIGTERM stops the mover without writing a snapshot.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args as ClapArgs, Subcommand};
use lifeboat_kube::pod_path;
use lifeboat_kube::volumes::filesystem::find_pod_volume;
use lifeboat_kube::volumes::{DataKind, ForeignRepository, Work};
use lifeboat_store::Repository;
use lifeboat_volume::{
    BackupRequest, Control, Counters, FileKeyCache, KeyCache, VolumeKind, VolumeRepo,
};
use serde_json::json;

/// Run one volume data operation (inside a mover pod).
#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, Subcommand)]
pub enum Action {
    /// Back up the volume the work file names.
    Backup(Common),
    /// Restore a snapshot into the volume the work file names.
    Restore(Common),
    /// Prune the repository the work file names (two-phase; maintenance).
    Prune(Common),
}

/// What the mover does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Job {
    Backup,
    Restore,
    Prune,
}

#[derive(Debug, Clone, ClapArgs)]
pub struct Common {
    /// The work file (JSON; see docs/volumes.md).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/etc/lifeboat/work/work.json"
    )]
    pub work: PathBuf,
    /// Where the result goes (Kubernetes reads it as the termination message).
    #[arg(long, value_name = "FILE", default_value = "/dev/termination-log")]
    pub termination_log: PathBuf,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 1.0)]
    pub progress_interval: f64,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (job, common) = match args.action {
        Action::Backup(c) => (Job::Backup, c),
        Action::Restore(c) => (Job::Restore, c),
        Action::Prune(c) => (Job::Prune, c),
    };
    let runtime = crate::runtime()?;
    let started = Instant::now();
    let outcome = runtime.block_on(run_async(job, &common));
    let (code, message) = match outcome {
        Ok(result) => (ExitCode::SUCCESS, result),
        Err(err) => (
            ExitCode::from(1),
            json!({
                "phase": "Failed",
                "error": format!("{err:#}"),
                "durationSeconds": started.elapsed().as_secs_f64(),
            }),
        ),
    };
    write_termination(&pod_path(&common.termination_log), &message)?;
    if code != ExitCode::SUCCESS {
        eprintln!("error: {}", message["error"].as_str().unwrap_or_default());
    }
    Ok(code)
}

/// Kubernetes keeps at most 4096 bytes of a termination message: long
/// warning lists are cut, with a count of what was left off.
fn write_termination(path: &Path, message: &serde_json::Value) -> anyhow::Result<()> {
    let mut message = message.clone();
    let mut text = message.to_string();
    while text.len() > 4000 {
        let Some(list) = message.get_mut("warnings").and_then(|w| w.as_array_mut()) else {
            break;
        };
        if list.is_empty() {
            break;
        }
        list.pop();
        let left = message["warningsLeftOff"].as_u64().unwrap_or(0) + 1;
        message["warningsLeftOff"] = json!(left);
        text = message.to_string();
    }
    std::fs::write(path, text + "\n")
        .with_context(|| format!("cannot write the result to {}", path.display()))
}

async fn run_async(job: Job, common: &Common) -> anyhow::Result<serde_json::Value> {
    // In a pod paths are used as they are; in the sandbox they resolve
    // under the container's root.
    let work_file = pod_path(&common.work);
    let text = std::fs::read_to_string(&work_file)
        .with_context(|| format!("cannot read the work file {}", common.work.display()))?;
    let mut work: Work = serde_json::from_str(&text)
        .with_context(|| format!("the work file {} is not valid", common.work.display()))?;
    work.path = pod_path(&work.path);
    if let Some(volume) = &work.pod_volume {
        // fileSystem: `path` is the node's kubelet pods directory.
        anyhow::ensure!(
            job == Job::Backup,
            "the work file names a pod volume, which only backups read"
        );
        work.path = find_pod_volume(&work.path, volume)?;
    }
    let config = work.location.to_config();
    let cache = FileKeyCache::new(pod_path(&work.key_cache_dir));
    if let Some(foreign) = &work.repository {
        anyhow::ensure!(
            job == Job::Restore,
            "the work file names a repository lifeboat did not write, which only restores read"
        );
        return restore_foreign(&work, foreign, &config, &cache, common).await;
    }
    let location = Repository::open(&config)
        .await
        .with_context(|| format!("cannot open the storage location {}", config.url))?;
    if job == Job::Prune {
        let m = work.maintenance.with_context(
            || "the work file has no `maintenance` section, which `mover prune` needs",
        )?;
        let started = Instant::now();
        let v = VolumeRepo::open_existing(
            &location,
            &work.location_name,
            &work.cluster,
            &work.namespace,
            Some(m.generation),
            Some(&cache),
        )
        .await?;
        let report = v
            .prune(Some(Duration::from_secs(m.keep_delete_seconds)))
            .await?;
        let mut value = serde_json::to_value(report)?;
        value["phase"] = json!("Succeeded");
        value["durationSeconds"] = json!(started.elapsed().as_secs_f64());
        println!("{}", json!({"event": "done"}));
        return Ok(value);
    }

    let (control, counters, reporter) = watch(common);

    let result = if job == Job::Restore {
        let snapshot = work.snapshot.clone().unwrap_or_else(|| "latest".into());
        // A backup's snapshot stays in the generation that was newest when
        // it was written, after a key rotation too; the orchestrator hands
        // over that generation's key. Short ids and `latest`: the newest.
        let full_id = snapshot.len() == 64 && snapshot.chars().all(|c| c.is_ascii_hexdigit());
        let v = if full_id {
            VolumeRepo::open_holding(
                &location,
                &work.location_name,
                &work.cluster,
                &work.namespace,
                &snapshot,
                Some(&cache),
            )
            .await?
        } else {
            VolumeRepo::open_existing(
                &location,
                &work.location_name,
                &work.cluster,
                &work.namespace,
                None,
                Some(&cache),
            )
            .await?
        };
        let r = v
            .restore(
                &snapshot,
                Some(&work.pvc),
                &work.path,
                counters.clone(),
                control.clone(),
            )
            .await;
        reporter.abort();
        let mut value = serde_json::to_value(r?)?;
        value["phase"] = json!("Succeeded");
        value
    } else {
        let v = VolumeRepo::open_or_create(
            &location,
            &work.location_name,
            &work.cluster,
            &work.namespace,
            &cache,
        )
        .await?;
        let r = v
            .backup(
                BackupRequest {
                    source: work.path.clone(),
                    kind: match work.kind {
                        DataKind::Filesystem => VolumeKind::Filesystem,
                        DataKind::Block => VolumeKind::Block,
                    },
                    pvc: work.pvc.clone(),
                    pvc_uid: work.pvc_uid.clone(),
                    backup: work.backup.clone(),
                    force_read: false,
                },
                counters.clone(),
                control.clone(),
            )
            .await;
        reporter.abort();
        let mut value = serde_json::to_value(r?)?;
        value["phase"] = json!("Succeeded");
        value
    };
    let s = counters.sample();
    println!(
        "{}",
        json!({"event": "done", "bytesDone": s.bytes_done, "bytesTotal": s.bytes_total,
               "filesDone": s.files_done, "filesTotal": s.files_total})
    );
    Ok(result)
}

/// The mover's cancellation (SIGTERM) and its progress lines.
fn watch(common: &Common) -> (Arc<Control>, Arc<Counters>, tokio::task::JoinHandle<()>) {
    let control = Control::new();
    let c = control.clone();
    tokio::spawn(async move {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            term.recv().await;
            eprintln!("SIGTERM: stopping; no snapshot is written");
            c.cancel();
        }
    });
    let counters = Arc::new(Counters::default());
    let reporter = tokio::spawn(report(
        counters.clone(),
        Duration::from_secs_f64(common.progress_interval.max(0.05)),
    ));
    (control, counters, reporter)
}

/// Restores a snapshot of a repository lifeboat did not write (Velero's
/// restic repository of a namespace): the location is read through a
/// view that never writes, the password is the file the work names, and
/// the snapshot's single root path is what goes into the volume.
async fn restore_foreign(
    work: &Work,
    foreign: &ForeignRepository,
    config: &lifeboat_store::LocationConfig,
    cache: &FileKeyCache,
    common: &Common,
) -> anyhow::Result<serde_json::Value> {
    let snapshot = work
        .snapshot
        .clone()
        .filter(|s| !s.is_empty())
        .context("the work file names no snapshot, which a restore needs")?;
    let location = lifeboat_store::VeleroLocation::open(config)
        .with_context(|| format!("cannot open the storage location {}", config.url))?
        .data_view();
    let password = cache.get(&foreign.key).await?.with_context(|| {
        format!(
            "the password of the repository {} ({}.key) is not beside the work file",
            foreign.path, foreign.key
        )
    })?;
    let repo = VolumeRepo::open_foreign(&location, &foreign.path, password).await?;
    let (control, counters, reporter) = watch(common);
    let r = repo
        .restore(&snapshot, None, &work.path, counters.clone(), control)
        .await;
    reporter.abort();
    let r = r.map_err(|e| match e {
        lifeboat_volume::VolumeError::WrongKey { repo } => anyhow::anyhow!(
            "the password does not open the restic repository {repo}: Velero's restic \
             repositories open with its static password unless the installation set its own \
             (Secret velero-repo-credentials, key repository-password); this volume cannot be \
             restored with the static password"
        ),
        e => anyhow::Error::from(e),
    })?;
    let mut value = serde_json::to_value(r)?;
    value["phase"] = json!("Succeeded");
    let s = counters.sample();
    println!(
        "{}",
        json!({"event": "done", "bytesDone": s.bytes_done, "bytesTotal": s.bytes_total,
               "filesDone": s.files_done, "filesTotal": s.files_total})
    );
    Ok(value)
}

/// Prints a JSON line of progress every `every`.
async fn report(counters: Arc<Counters>, every: Duration) {
    let started = Instant::now();
    let mut last = (Instant::now(), 0u64);
    loop {
        tokio::time::sleep(every).await;
        let s = counters.sample();
        let now = Instant::now();
        let secs = now.duration_since(last.0).as_secs_f64().max(1e-3);
        let rate = (s.bytes_done.saturating_sub(last.1)) as f64 / secs;
        last = (now, s.bytes_done);
        println!(
            "{}",
            json!({
                "event": "progress",
                "bytesDone": s.bytes_done,
                "bytesTotal": s.bytes_total,
                "filesDone": s.files_done,
                "filesTotal": s.files_total,
                "bytesPerSecond": rate.round(),
                "elapsedSeconds": started.elapsed().as_secs_f64(),
            })
        );
    }
}
