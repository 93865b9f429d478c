//! The exec hooks of one group of a backup's claims (see
//! [`lifeboat_core::hooks`]): `freeze` runs the pods' pre hooks in order,
//! `thaw` the post hooks owed. Every run is recorded through the backup's
//! one writer — the pre hook *before* it runs, with the post hook it is
//! owed, so a restarted controller thaws what a crash left frozen
//! ([`owed_thaw`]) — by messages the volume step's loop answers.

use lifeboat_core::hooks::{ExecHook, HookPhase, PodHooks};
use lifeboat_core::model::HookOnError;
use lifeboat_store::{HookEntry, ThawCommand};
use tokio::sync::{mpsc, oneshot};

use super::VolumeEvent;

/// A hook run to record, answered by the writer's owner.
pub(super) enum Msg {
    /// About to run: its index in the record.
    Starting(HookEntry, oneshot::Sender<usize>),
    /// Ended; `thaws` is the pre hook it thawed.
    Ended {
        index: usize,
        entry: HookEntry,
        fails: bool,
        thaws: Option<usize>,
        ack: oneshot::Sender<()>,
    },
}

/// Sends hook runs to the writer's owner.
#[derive(Clone)]
pub(super) struct Recorder(pub(super) mpsc::Sender<Msg>);

impl Recorder {
    async fn starting(&self, e: HookEntry) -> Option<usize> {
        let (tx, rx) = oneshot::channel();
        self.0.send(Msg::Starting(e, tx)).await.ok()?;
        rx.await.ok()
    }

    async fn ended(&self, index: usize, entry: HookEntry, fails: bool, thaws: Option<usize>) {
        let (ack, rx) = oneshot::channel();
        if self
            .0
            .send(Msg::Ended {
                index,
                entry,
                fails,
                thaws,
                ack,
            })
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
    }
}

/// A hook that failed, and what that means.
#[derive(Debug, Clone)]
pub(super) struct Failure {
    pub on_error: HookOnError,
    pub reason: String,
}

/// A post hook to run.
#[derive(Debug, Clone)]
pub(super) struct Thaw {
    pub namespace: String,
    pub pod: String,
    pub hook: ExecHook,
    /// The pre hook record it thaws.
    pub pre: Option<usize>,
}

/// What the pre hooks of a group did.
pub(super) struct Frozen {
    /// Post hooks of the pre hooks that ran (thaw always).
    pub thaws: Vec<Thaw>,
    /// Post hooks without a pre hook: run once the snapshots were taken.
    pub post_only: Vec<Thaw>,
    /// The failure that stops the group (`failVolume`, `failBackup`).
    pub failure: Option<Failure>,
}

fn entry(namespace: &str, pod: &str, hook: &ExecHook) -> HookEntry {
    HookEntry::started(
        (namespace, pod, &hook.container),
        &hook.name,
        &hook.phase.to_string(),
        &hook.command,
        jiff::Timestamp::now(),
    )
}

/// Runs one hook, recorded before and after; its failure, if any.
#[allow(clippy::too_many_arguments)]
async fn run_one(
    client: &kube::Client,
    rec: &Recorder,
    events: &(dyn Fn(VolumeEvent<'_>) + Send + Sync),
    namespace: &str,
    pod: &str,
    hook: &ExecHook,
    thaw: Option<ThawCommand>,
    thaws: Option<usize>,
) -> (Option<usize>, Option<Failure>) {
    let mut e = entry(namespace, pod, hook);
    e.thaw = thaw;
    let index = rec.starting(e.clone()).await;
    let outcome = if hook.vmi.is_some() {
        lifeboat_kube::kubevirt::freeze_call(client, namespace, hook).await
    } else {
        lifeboat_kube::hooks::run(client, namespace, pod, hook).await
    };
    e.duration_ms = Some(outcome.duration.as_millis() as u64);
    e.exit_code = outcome.exit_code;
    e.stderr = outcome.stderr.clone();
    e.error = outcome.error.clone();
    let fails = hook.on_error != HookOnError::Continue;
    let message = match &outcome.error {
        None => format!(
            "{} hook {} ran in {}: exit code 0",
            hook.phase, hook.name, hook.container
        ),
        Some(why) => format!(
            "{} hook {} failed in {} (onError: {}): {why}",
            hook.phase, hook.name, hook.container, hook.on_error
        ),
    };
    events(VolumeEvent::Hook {
        namespace,
        pod,
        message: &message,
    });
    if let Some(i) = index {
        rec.ended(i, e, fails, thaws).await;
    }
    let failure = outcome.error.map(|why| Failure {
        on_error: hook.on_error,
        reason: format!(
            "{} hook {} in pod {namespace}/{pod} (container {}) failed: {why}",
            hook.phase, hook.name, hook.container
        ),
    });
    (index, failure)
}

/// Runs the pre hooks of `pods`, in order, each recorded before it runs
/// with the post hook it is owed; stops at the first failure that is not
/// `continue`.
pub(super) async fn freeze(
    client: &kube::Client,
    rec: &Recorder,
    events: &(dyn Fn(VolumeEvent<'_>) + Send + Sync),
    pods: &[&PodHooks],
) -> Frozen {
    let mut frozen = Frozen {
        thaws: Vec::new(),
        post_only: Vec::new(),
        failure: None,
    };
    for p in pods {
        if let Some(why) = p.invalid.first() {
            let reason = format!("hooks of pod {}/{}: {why}", p.namespace, p.pod);
            events(VolumeEvent::Hook {
                namespace: &p.namespace,
                pod: &p.pod,
                message: &reason,
            });
            frozen.failure = Some(Failure {
                on_error: HookOnError::FailVolume,
                reason,
            });
            return frozen;
        }
        for post in &p.post {
            if !p.pre.iter().any(|pre| pre.name == post.name) {
                frozen.post_only.push(Thaw {
                    namespace: p.namespace.clone(),
                    pod: p.pod.clone(),
                    hook: post.clone(),
                    pre: None,
                });
            }
        }
        for pre in &p.pre {
            let post = p.post.iter().find(|post| post.name == pre.name);
            let thaw = post.map(|h| ThawCommand {
                container: h.container.clone(),
                command: h.command.clone(),
                timeout_seconds: h.timeout.as_secs(),
                on_error: h.on_error.to_string(),
                vmi: h.vmi.clone(),
            });
            let (index, failure) =
                run_one(client, rec, events, &p.namespace, &p.pod, pre, thaw, None).await;
            if let Some(post) = post {
                frozen.thaws.push(Thaw {
                    namespace: p.namespace.clone(),
                    pod: p.pod.clone(),
                    hook: post.clone(),
                    pre: index,
                });
            }
            if let Some(f) = failure
                && f.on_error != HookOnError::Continue
            {
                frozen.failure = Some(f);
                return frozen;
            }
        }
    }
    frozen
}

/// Runs `thaws` (all of them, whatever fails); returns the failures that
/// are not `continue`.
pub(super) async fn thaw(
    client: &kube::Client,
    rec: &Recorder,
    events: &(dyn Fn(VolumeEvent<'_>) + Send + Sync),
    thaws: Vec<Thaw>,
) -> Vec<Failure> {
    let mut out = Vec::new();
    for t in thaws {
        let (_, failure) = run_one(
            client,
            rec,
            events,
            &t.namespace,
            &t.pod,
            &t.hook,
            None,
            t.pre,
        )
        .await;
        out.extend(failure.filter(|f| f.on_error != HookOnError::Continue));
    }
    out
}

/// The post hook an interrupted run owes to its pre hook record `pre`
/// (index `index`), as a [`Thaw`].
pub(super) fn owed_thaw(index: usize, pre: &HookEntry) -> Option<Thaw> {
    let t = pre.thaw.as_ref()?;
    let on_error = match t.on_error.as_str() {
        "continue" => HookOnError::Continue,
        "failBackup" => HookOnError::FailBackup,
        _ => HookOnError::FailVolume,
    };
    Some(Thaw {
        namespace: pre.namespace.clone(),
        pod: pre.pod.clone(),
        hook: ExecHook {
            name: pre.hook.clone(),
            phase: HookPhase::Post,
            container: t.container.clone(),
            command: t.command.clone(),
            timeout: lifeboat_core::Duration::from_secs(t.timeout_seconds),
            on_error,
            vmi: t.vmi.clone(),
        },
        pre: Some(index),
    })
}
