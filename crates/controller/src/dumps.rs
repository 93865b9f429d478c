//! Dump hooks of one backup, for `lifeboat backup` by hand and for the
//! controller alike (both go through [`crate::jobs::run_backup_then`]):
//! each command's stdout streamed into the backup as an artifact.
//!
//! ```text
//! Running pods ─▶ core::hooks::dump::dump_runs ─▶ per run, one after another:
//!   HookEntry (phase dump) recorded before it runs
//!   kube::hooks::run_streaming ──stdout chunks (bounded channel)──▶ ArtifactWriter
//!   exit 0 ─▶ finish (last part uploaded) ─▶ BackupWriter::add_artifact (manifest)
//!   else   ─▶ abort (no object, nothing listed) ─▶ onError: continue (warning),
//!             failVolume (error: PartiallyFailed), failBackup (the backup fails)
//! ```
//!
//! Dumps run one at a time, so the databases of a backup are not all
//! loaded at once; each is bounded by its hook's `timeout`.

use anyhow::Context;
use jiff::Timestamp;
use lifeboat_core::BackupPolicy;
use lifeboat_core::hooks::dump::DumpRun;
use lifeboat_core::hooks::{ExecHook, HookPhase};
use lifeboat_core::model::HookOnError;
use lifeboat_kube::hooks::{HookOutcome, Streams};
use lifeboat_store::{ArtifactEntry, BackupWriter, HookEntry, LogEntry, LogLevel};

/// Stdout chunks waiting between the exec stream and the artifact writer.
const CHUNKS: usize = 8;

/// Runs the policy's dump hooks and stores their artifacts in `writer`.
/// An error is a `failBackup` dump (or a backup that could not be
/// written); other failures are recorded and the backup goes on.
pub async fn back_up(
    client: &kube::Client,
    writer: &mut BackupWriter,
    policy: &BackupPolicy,
) -> anyhow::Result<()> {
    let has_dumps = policy
        .spec
        .hooks
        .as_ref()
        .is_some_and(|h| !h.dumps.is_empty());
    if !has_dumps {
        return Ok(());
    }
    let pods = lifeboat_kube::inventory::all_pods(client)
        .await
        .context("cannot list the pods to run dump hooks in")?;
    let runs = lifeboat_core::hooks::dump::dump_runs(policy, &pods)
        .with_context(|| format!("policy `{}` has an invalid selection", policy.metadata.name))?;
    for hook in policy.spec.hooks.iter().flat_map(|h| &h.dumps) {
        if !runs.iter().any(|r| r.hook == hook.name) {
            writer
                .log(LogEntry {
                    level: LogLevel::Warning,
                    time: Timestamp::now(),
                    resource: Some("pods".into()),
                    namespace: None,
                    name: None,
                    message: format!(
                        "dump hook {} selects no Running pod: no artifact was written",
                        hook.name
                    ),
                })
                .await?;
        }
    }
    for run in &runs {
        if let Some(reason) = dump_one(client, writer, run).await?
            && run.on_error == HookOnError::FailBackup
        {
            anyhow::bail!("{reason} (onError: failBackup)");
        }
    }
    Ok(())
}

/// Runs one dump; returns why it failed, if it did.
async fn dump_one(
    client: &kube::Client,
    writer: &mut BackupWriter,
    run: &DumpRun,
) -> anyhow::Result<Option<String>> {
    let start = Timestamp::now();
    let mut entry = HookEntry::started(
        (&run.namespace, &run.pod, &run.container),
        &run.hook,
        "dump",
        &run.command,
        start,
    );
    let index = writer.hook_starting(entry.clone()).await?;
    let fails = run.on_error != HookOnError::Continue;
    let outcome = match &run.invalid {
        Some(why) => Err(why.clone()),
        None => stream(client, writer, run, start).await?,
    };
    let (outcome, error) = match outcome {
        Ok((o, artifact)) => {
            entry.stdout_bytes = Some(artifact.bytes);
            writer
                .log(LogEntry {
                    level: LogLevel::Info,
                    time: Timestamp::now(),
                    resource: Some("pods".into()),
                    namespace: Some(run.namespace.clone()),
                    name: Some(run.pod.clone()),
                    message: format!(
                        "dump hook {} wrote {} bytes ({} stored) to {}",
                        run.hook, artifact.bytes, artifact.stored_bytes, artifact.file
                    ),
                })
                .await?;
            writer.add_artifact(artifact).await?;
            (Some(o), None)
        }
        Err(why) => (None, Some(why)),
    };
    if let Some(o) = &outcome {
        entry.duration_ms = Some(o.duration.as_millis() as u64);
        entry.exit_code = o.exit_code;
        entry.stderr = o.stderr.clone();
    }
    let reason = match (&outcome, error) {
        (_, Some(why)) => {
            entry.duration_ms.get_or_insert(0);
            entry.error = Some(why.clone());
            Some(format!(
                "dump hook {} in pod {}/{} (container {}) failed: {why}; no artifact was kept",
                run.hook, run.namespace, run.pod, run.container
            ))
        }
        _ => None,
    };
    match &reason {
        Some(r) => tracing::warn!(backup = %writer.name(), "{r}"),
        None => tracing::info!(
            backup = %writer.name(),
            hook = %run.hook,
            pod = %format!("{}/{}", run.namespace, run.pod),
            "dump hook stored its artifact"
        ),
    }
    writer.hook_ended(index, entry, fails, None).await?;
    Ok(reason)
}

/// Streams the command's stdout into a new artifact; `Ok(Err(why))` when
/// the command failed (its partial artifact is abandoned).
async fn stream(
    client: &kube::Client,
    writer: &BackupWriter,
    run: &DumpRun,
    start: Timestamp,
) -> anyhow::Result<Result<(HookOutcome, ArtifactEntry), String>> {
    let mut artifact = writer.begin_artifact(&run.namespace, &run.owner, &run.hook)?;
    let hook = ExecHook {
        name: run.hook.clone(),
        phase: HookPhase::Pre,
        container: run.container.clone(),
        command: run.command.clone(),
        timeout: run.timeout,
        on_error: run.on_error,
        vmi: None,
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(CHUNKS);
    let exec = lifeboat_kube::hooks::run_streaming(
        client,
        &run.namespace,
        &run.pod,
        &hook,
        Streams {
            stdin: None,
            stdout: Some(tx),
        },
    );
    let store = async {
        while let Some(chunk) = rx.recv().await {
            artifact.write(chunk).await?;
        }
        Ok::<(), lifeboat_store::StoreError>(())
    };
    // A store failure closes the channel: the exec then stops too.
    let ((outcome, _), stored) = tokio::join!(exec, store);
    let why = match (&outcome.error, stored) {
        (_, Err(e)) => Some(format!("the artifact could not be stored: {e}")),
        (Some(e), Ok(())) => Some(e.clone()),
        (None, Ok(())) => None,
    };
    if let Some(why) = why {
        artifact.abort().await;
        return Ok(Err(why));
    }
    let file = match artifact.finish().await {
        Ok(f) => f,
        Err(e) => return Ok(Err(format!("the artifact could not be stored: {e}"))),
    };
    let duration_ms = outcome.duration.as_millis() as u64;
    let entry = ArtifactEntry::new(
        (&run.namespace, &run.owner, &run.pod, &run.container),
        &run.hook,
        &run.command,
        file,
        start,
        duration_ms,
    );
    Ok(Ok((outcome, entry)))
}
