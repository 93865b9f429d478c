//! Backups and restores running beside the reconcile cycle.
//!
//! A backup with volume data can take hours. The cycle therefore starts
//! backups and restores as tasks and returns; later cycles see them as
//! running (the planner's [`Running`]), so they plan nothing that would
//! race them, and reap them when they are done. Other policies, restores,
//! webhooks and status keep moving meanwhile.
//!
//! ```text
//! cycle n:    plan ─▶ start Backup(p) ─▶ publish "p: backing up"
//! cycle n+1:  running: p ─▶ plan (no second backup of p) ─▶ publish
//! task done:  ─▶ wakes the loop ─▶ cycle n+2 reaps it ─▶ retention ─▶ publish
//! ```
//!
//! A task dropped with its controller (killed, leadership lost) leaves an
//! uncommitted backup or an `InProgress` restore record, which the next
//! leader observes in object storage like any other interrupted work.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use lifeboat_core::load::PolicySet;
use lifeboat_core::plan::{Action, Running};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::executor::{Executed, Executor};

/// What a task is, so one policy or request never runs twice.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Backup(String),
    Restore(String),
    /// A volume repository's prune: (location, namespace).
    Maintain(String, String),
}

impl Key {
    fn of(action: &Action) -> Option<Key> {
        match action {
            Action::Backup { policy, .. } => Some(Key::Backup(policy.clone())),
            Action::Restore { request, .. } => Some(Key::Restore(request.clone())),
            Action::MaintainRepository {
                location,
                namespace,
                ..
            } => Some(Key::Maintain(location.clone(), namespace.clone())),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct Task {
    action: Action,
    started: Instant,
    handle: JoinHandle<()>,
}

/// The backups and restores this controller is running.
#[derive(Debug)]
pub struct Work {
    tasks: BTreeMap<Key, Task>,
    /// Each task sends its result here before it ends …
    send: mpsc::UnboundedSender<(Key, Executed)>,
    /// … and reaping takes it.
    results: mpsc::UnboundedReceiver<(Key, Executed)>,
    /// Notified whenever a task ends (after it sent its result), so the
    /// loop reaps it at once.
    done: Arc<Notify>,
}

impl Default for Work {
    fn default() -> Self {
        let (send, results) = mpsc::unbounded_channel();
        Work {
            tasks: BTreeMap::new(),
            send,
            results,
            done: Arc::default(),
        }
    }
}

/// Whether an action is long work, run as a task, rather than bookkeeping
/// done within the cycle.
pub fn is_task(action: &Action) -> bool {
    Key::of(action).is_some()
}

impl Work {
    /// Notified whenever a task ends.
    pub fn done(&self) -> Arc<Notify> {
        self.done.clone()
    }

    /// What the planner must see as running.
    pub fn running(&self) -> Running {
        let mut running = Running::default();
        for key in self.tasks.keys() {
            match key {
                Key::Backup(p) => running.backups.push(p.clone()),
                Key::Restore(r) => running.restores.push(r.clone()),
                Key::Maintain(l, n) => running.maintenance.push((l.clone(), n.clone())),
            }
        }
        running
    }

    /// Whether anything runs.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    fn count(&self, like: &Key) -> usize {
        self.tasks
            .keys()
            .filter(|k| std::mem::discriminant(*k) == std::mem::discriminant(like))
            .count()
    }

    /// Starts the backups and restores among `actions`, as many as the
    /// executor's concurrency allows beside what already runs; returns how
    /// many started and the ones left for later (they stay due, so the
    /// next plan has them again).
    pub fn start(
        &mut self,
        executor: &Executor,
        set: &Arc<PolicySet>,
        actions: &[Action],
    ) -> (usize, Vec<Action>) {
        let (mut started, mut deferred) = (0, Vec::new());
        for action in actions {
            let Some(key) = Key::of(action) else {
                continue;
            };
            if self.tasks.contains_key(&key) {
                continue;
            }
            let limit = match key {
                Key::Backup(_) => executor.options.backup_concurrency,
                Key::Restore(_) => executor.options.restore_concurrency,
                // One prune at a time: it reads every index of a repository.
                Key::Maintain(..) => 1,
            };
            if self.count(&key) >= limit.max(1) {
                deferred.push(action.clone());
                continue;
            }
            let (executor, set, owned) = (executor.clone(), set.clone(), action.clone());
            let (results, done, k) = (self.send.clone(), self.done.clone(), key.clone());
            let handle = tokio::spawn(async move {
                let executed = executor.run(&set, &owned).await;
                // The receiver lives as long as the task can (see Drop).
                let _ = results.send((k, executed));
                done.notify_one();
            });
            info!(action = %action.summary(), "started");
            started += 1;
            self.tasks.insert(
                key,
                Task {
                    action: action.clone(),
                    started: Instant::now(),
                    handle,
                },
            );
        }
        if !deferred.is_empty() {
            info!(
                deferred = deferred.len(),
                "at the concurrency limit: the rest start when running work ends"
            );
        }
        (started, deferred)
    }

    /// Takes the results of the tasks that have ended.
    pub async fn reap(&mut self) -> Vec<Executed> {
        let mut out = self.received();
        // A task that ended without a result panicked.
        let ended: Vec<Key> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.handle.is_finished())
            .map(|(k, _)| k.clone())
            .collect();
        for key in ended {
            if let Some(task) = self.tasks.remove(&key) {
                let ended = task.handle.await;
                out.extend(self.received());
                if let Err(e) = ended {
                    out.push(lost(task.action, task.started, &e));
                }
            }
        }
        out
    }

    /// Waits for every task and takes the results.
    pub async fn wait(&mut self) -> Vec<Executed> {
        let mut out = Vec::new();
        for (_, task) in std::mem::take(&mut self.tasks) {
            if let Err(e) = task.handle.await {
                out.push(lost(task.action, task.started, &e));
            }
        }
        out.extend(self.received());
        out
    }

    /// The results sent so far; their tasks are done.
    fn received(&mut self) -> Vec<Executed> {
        let mut out = Vec::new();
        while let Ok((key, executed)) = self.results.try_recv() {
            self.tasks.remove(&key);
            out.push(executed);
        }
        out
    }

    /// Stops the tasks whose action `unwanted` gives a reason for (their
    /// policy was suspended or deleted, their RestoreRequest deleted) and
    /// returns them with it; what they leave is for the caller to remove.
    pub fn cancel(
        &mut self,
        unwanted: impl Fn(&Action) -> Option<String>,
    ) -> Vec<(Action, String)> {
        let doomed: Vec<(Key, String)> = self
            .tasks
            .iter()
            .filter(|(_, t)| !t.handle.is_finished())
            .filter_map(|(k, t)| Some((k.clone(), unwanted(&t.action)?)))
            .collect();
        let mut out = Vec::new();
        for (key, why) in doomed {
            if let Some(task) = self.tasks.remove(&key) {
                warn!(action = %task.action.summary(), "cancelled: {why}");
                task.handle.abort();
                out.push((task.action, why));
            }
        }
        out
    }

    /// Stops every task where it is (leadership lost, or the stop grace
    /// period is over). What they leave is interrupted work for the next
    /// leader; nothing half-written is committed.
    pub fn abort(&mut self) {
        for (_, task) in std::mem::take(&mut self.tasks) {
            warn!(action = %task.action.summary(), "abandoned");
            task.handle.abort();
        }
    }
}

/// The result of a task that ended without sending one.
fn lost(action: Action, started: Instant, e: &tokio::task::JoinError) -> Executed {
    let why = if e.is_panic() {
        "it panicked (a bug: please report it with the controller's log)"
    } else {
        "it was cancelled"
    };
    warn!(action = %action.summary(), "{why}");
    Executed {
        action,
        result: Err(why.to_string()),
        duration: started.elapsed(),
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        // Tasks do not outlive their controller: a dropped reconciler is a
        // stopped one.
        for task in self.tasks.values() {
            task.handle.abort();
        }
    }
}
