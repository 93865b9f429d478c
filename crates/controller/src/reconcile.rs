//! One reconcile cycle: fetch → load and validate → read the catalog → plan
//! → execute → write status → commit and push.
//!
//! - The newest revision that validates is the one acted on. A revision
//!   with errors is reported (in `revision.yaml`) and never acted on; the
//!   previous valid one keeps protecting the cluster, and nothing is pruned
//!   until a valid revision is back.
//! - A remote that cannot be fetched is reported and the cycle goes on with
//!   the revision already fetched.
//! - After executing, the catalog is read again and the plan recomputed, so
//!   the status reports the state after this cycle's backups and prunes.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use jiff::Timestamp;
use lifeboat_core::load::PolicySet;
use lifeboat_core::plan::{self, Action, Plan, PlanOptions};
use lifeboat_core::{Diagnostic, Severity};
use lifeboat_git::{Mirror, Published, StatusCommit, StatusTarget};
use tracing::{Instrument, info, info_span, warn};

use crate::catalog::{self, Locations, Observation};
use crate::executor::{ExecOptions, Executed, Executor};
use crate::files;
use crate::locations::Secrets;
use crate::policies;
use crate::status::{self, RevisionStatus, StatusInput};
use crate::work::{self, Work};

/// Where policies come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A Git remote, mirrored into a cache (a `Mirror` is cheap to clone and
    /// serialises its own writers); `branch` is followed and its
    /// tree written to `checkout`.
    Git {
        mirror: Mirror,
        branch: String,
        checkout: PathBuf,
    },
    /// A local directory, read as it is (watch mode, tests).
    Dir(PathBuf),
}

/// What a reconciler is configured with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub cluster: String,
    /// Where to write status; `None` writes none.
    pub status: Option<StatusTarget>,
    pub plan: PlanOptions,
    pub exec: ExecOptions,
}

/// The valid policy set acted on.
#[derive(Debug, Clone)]
pub struct Valid {
    pub sha: Option<String>,
    pub set: Arc<PolicySet>,
}

/// What one cycle did.
#[derive(Debug)]
pub struct CycleReport {
    pub revision: RevisionStatus,
    /// The plan that was executed (none when no valid revision exists).
    pub plan: Option<Plan>,
    /// The plan recomputed after execution: the state the status reports.
    pub after: Option<Plan>,
    pub executed: Vec<Executed>,
    /// The status commit, or why there was none.
    pub published: Option<Result<Published, String>>,
    /// Failures by kind (`fetch`, `validate`, `catalog`, `backup`, `prune`,
    /// `restore`, `status`), for metrics and logs.
    pub errors: Vec<(&'static str, String)>,
}

impl CycleReport {
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }

    /// A cycle given up before it finished.
    pub fn abandoned(why: &str) -> CycleReport {
        CycleReport {
            revision: RevisionStatus::default(),
            plan: None,
            after: None,
            executed: Vec::new(),
            published: None,
            errors: vec![("abandoned", why.to_string())],
        }
    }
}

/// Reconciles one cluster, cycle after cycle.
pub struct Reconciler {
    pub settings: Settings,
    pub source: Source,
    pub client: kube::Client,
    pub secrets: Secrets,
    valid: Option<Valid>,
    /// The newest revision loaded and whether it validated, with its
    /// findings, so an unchanged revision is not loaded again.
    checked: Option<(String, RevisionStatus)>,
    /// Backups and restores running beside the cycle.
    work: Work,
    /// Whether a cycle returns while the work it started runs (the
    /// controller loop) or waits for it (`lifeboat reconcile`, tests).
    background: bool,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler")
            .field("settings", &self.settings)
            .field("source", &self.source)
            .field("secrets", &self.secrets)
            .finish_non_exhaustive()
    }
}

fn line(d: &Diagnostic) -> String {
    let place = match (&d.file, &d.span) {
        (Some(f), Some(s)) => format!("{f}:{}:{}: ", s.line, s.column),
        (Some(f), None) => format!("{f}: "),
        _ => String::new(),
    };
    format!("{place}{} {}", d.code, d.message)
}

impl Reconciler {
    pub fn new(settings: Settings, source: Source, client: kube::Client, secrets: Secrets) -> Self {
        Reconciler {
            settings,
            source,
            client,
            secrets,
            valid: None,
            checked: None,
            work: Work::default(),
            background: false,
        }
    }

    /// From now on, cycles return while the backups and restores they
    /// started run; the returned handle is notified whenever one ends, so
    /// the caller runs a cycle that reaps it.
    pub fn run_in_background(&mut self) -> Arc<tokio::sync::Notify> {
        self.background = true;
        self.work.done()
    }

    /// Whether backups or restores are running.
    pub fn working(&self) -> bool {
        !self.work.is_empty()
    }

    /// Waits up to `grace` for the running work, then abandons what is
    /// left (see [`Work::abort`]).
    pub async fn finish_work(&mut self, grace: std::time::Duration) {
        if self.work.is_empty() {
            return;
        }
        info!(
            grace_seconds = grace.as_secs(),
            "waiting for running backups and restores"
        );
        let waited = tokio::time::timeout(grace, self.work.wait()).await;
        if waited.is_err() {
            self.work.abort();
        }
    }

    /// Abandons the running work at once (leadership lost).
    pub fn abort_work(&mut self) {
        self.work.abort();
    }

    /// Forgets which revision was loaded, so the next cycle checks it out
    /// and validates it again even when the remote has not moved.
    pub fn reload(&mut self) {
        self.checked = None;
    }

    /// The valid revision acted on, if any.
    pub fn valid(&self) -> Option<&Valid> {
        self.valid.as_ref()
    }

    /// Fetches and loads the newest revision; keeps the last valid one when
    /// it does not validate.
    async fn refresh(&mut self, errors: &mut Vec<(&'static str, String)>) -> RevisionStatus {
        let (sha, dir) = match &self.source {
            Source::Dir(dir) => (None, dir.clone()),
            Source::Git {
                mirror,
                branch,
                checkout,
            } => {
                let mirror = mirror.clone();
                let branch = branch.clone();
                let fetched = tokio::task::spawn_blocking(move || {
                    mirror.fetch(&branch).map_err(anyhow::Error::from)
                })
                .await
                .map_err(anyhow::Error::from)
                .and_then(|r| r);
                match fetched {
                    Ok(sha) => (Some(sha), checkout.clone()),
                    Err(e) => {
                        let message = format!("{e:#}");
                        warn!(error = %message, "fetch failed; acting on the revision already fetched");
                        errors.push(("fetch", message.clone()));
                        let mut revision = self
                            .checked
                            .as_ref()
                            .map(|(_, r)| r.clone())
                            .unwrap_or_default();
                        revision.fetch_error = Some(message);
                        return revision;
                    }
                }
            }
        };
        if let (Some(sha), Some((checked, revision))) = (&sha, &self.checked)
            && (sha == checked || self.only_status_changed(checked, sha).await)
        {
            return revision.clone();
        }
        let loaded = self.load(sha.clone(), dir).await;
        let revision = match loaded {
            Ok((revision, set)) => {
                if let Some(set) = set {
                    self.valid = Some(Valid {
                        sha: sha.clone(),
                        set: Arc::new(set),
                    });
                }
                revision
            }
            Err(e) => RevisionStatus {
                sha: sha.clone(),
                valid: false,
                acting_on: None,
                diagnostics: vec![format!("{e:#}")],
                fetch_error: None,
            },
        };
        let mut revision = revision;
        revision.acting_on = self.valid.as_ref().and_then(|v| v.sha.clone());
        if !revision.valid {
            errors.push((
                "validate",
                format!(
                    "revision {} has {} error(s)",
                    sha.as_deref().unwrap_or("(working tree)"),
                    revision.diagnostics.len()
                ),
            ));
        }
        if let Some(sha) = sha {
            self.checked = Some((sha, revision.clone()));
        }
        revision
    }

    /// True when every path that changed from `from` to `to` is under the
    /// top-level status directory, which the loader ignores: status commits
    /// on the policy branch itself are not new policy revisions (otherwise
    /// each status commit would report a new revision and commit again).
    async fn only_status_changed(&self, from: &str, to: &str) -> bool {
        let Source::Git { mirror, .. } = &self.source else {
            return false;
        };
        let (mirror, from, to) = (mirror.clone(), from.to_string(), to.to_string());
        let changed = tokio::task::spawn_blocking(move || mirror.changed_paths(&from, &to).ok())
            .await
            .ok()
            .flatten();
        let prefix = format!("{}/", files::STATUS_DIR);
        changed
            .is_some_and(|paths| !paths.is_empty() && paths.iter().all(|p| p.starts_with(&prefix)))
    }

    async fn load(
        &self,
        sha: Option<String>,
        dir: PathBuf,
    ) -> anyhow::Result<(RevisionStatus, Option<PolicySet>)> {
        let source = self.source.clone();
        tokio::task::spawn_blocking(move || {
            if let (Some(sha), Source::Git { mirror, .. }) = (&sha, &source) {
                mirror
                    .checkout(sha, &dir)
                    .with_context(|| format!("cannot check out {sha}"))?;
            }
            let read = files::read_tree(&dir)?;
            let checked = policies::check_files(&read);
            let errors: Vec<String> = checked
                .diagnostics
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .map(line)
                .collect();
            let valid = errors.is_empty();
            Ok((
                RevisionStatus {
                    sha,
                    valid,
                    acting_on: None,
                    diagnostics: errors,
                    fetch_error: None,
                },
                valid.then_some(checked.set),
            ))
        })
        .await?
    }

    /// Runs one cycle at `now`. With `execute` false it stops after
    /// planning (and writes no status).
    ///
    /// The future is boxed and `Send` so callers can spawn it.
    pub fn cycle(
        &mut self,
        now: Timestamp,
        execute: bool,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = CycleReport> + Send + '_>> {
        let span = info_span!("reconcile", cluster = %self.settings.cluster);
        Box::pin(self.cycle_inner(now, execute).instrument(span))
    }

    async fn cycle_inner(&mut self, now: Timestamp, execute: bool) -> CycleReport {
        let mut errors = Vec::new();
        let revision = self.refresh(&mut errors).await;
        let cluster = self.settings.cluster.clone();
        let Some(valid) = self.valid.clone() else {
            let published = if execute {
                self.publish_revision_only(&revision, now).await
            } else {
                None
            };
            push_publish_error(&published, &mut errors);
            return CycleReport {
                revision,
                plan: None,
                after: None,
                executed: Vec::new(),
                published,
                errors,
            };
        };
        let set = valid.set.clone();
        let options = PlanOptions {
            prune: self.settings.plan.prune && revision.valid,
            ..self.settings.plan.clone()
        };
        let locations = Arc::new(Locations::open(&set, &self.secrets, &cluster).await);
        let executor = Executor {
            client: self.client.clone(),
            locations: locations.clone(),
            cluster: cluster.clone(),
            revision: valid.sha.clone(),
            options: self.settings.exec.clone(),
        };
        // Work that ended since the last cycle, taken before observing so
        // its backups count as landed and its policies as idle; then the
        // work Git no longer wants is cancelled and cleaned up.
        let mut executed = Vec::new();
        if execute {
            executed = self.work.reap().await;
            for (action, why) in self.work.cancel(|a| unwanted(&set, &cluster, a)) {
                executed.push(executor.clean_up_cancelled(&action, &why).await);
            }
        }
        let mut observation =
            catalog::observe(&set, &locations, &cluster, now, self.work.running()).await;
        for (location, error) in &observation.observed.unavailable {
            errors.push(("catalog", format!("StorageLocation `{location}`: {error}")));
        }
        // The claims, classes and pods volume planning looks at; without
        // them the plan says "volumes: not evaluated". With them, what the
        // cluster provides of the prerequisites of the backups restores
        // into it would use.
        let inventory = match lifeboat_kube::inventory::inventory(&self.client).await {
            Ok(mut inventory) => {
                let asked =
                    lifeboat_core::prerequisites::asked(&set, &observation.observed, &cluster);
                match lifeboat_kube::inventory::provides(&self.client, &asked).await {
                    Ok(p) => inventory.provides = Some(p),
                    Err(e) => errors.push(("prerequisites", e.to_string())),
                }
                Some(inventory)
            }
            Err(e) => {
                errors.push(("volumes", e.to_string()));
                None
            }
        };
        observation.observed.inventory = inventory.clone();
        let planned = plan::plan(&set, &observation.observed, &cluster, now, &options);
        info!(actions = planned.actions.len(), "planned");
        if !execute {
            return CycleReport {
                revision,
                plan: Some(planned),
                after: None,
                executed: Vec::new(),
                published: None,
                errors,
            };
        }
        // Backups and restores start as tasks; the bookkeeping is planned
        // again with them running (no prune of a policy whose backup just
        // started), and done now.
        let (started, mut deferred) = self.work.start(&executor, &set, &planned.actions);
        let bookkeeping: Vec<Action> = if started > 0 || !deferred.is_empty() {
            // What waits for the concurrency limit counts as running too:
            // its policy's prunes come after it.
            let mut observed = observation.observed.clone();
            observed.running = self.work.running();
            for a in &deferred {
                if let Action::Backup { policy, .. } = a {
                    observed.running.backups.push(policy.clone());
                }
            }
            plan::plan(&set, &observed, &cluster, now, &options).actions
        } else {
            planned.actions.clone()
        };
        let bookkeeping: Vec<Action> = bookkeeping
            .into_iter()
            .filter(|a| !work::is_task(a))
            .collect();
        executed.extend(executor.execute(&set, &bookkeeping).await);
        // `lifeboat reconcile` and tests: the cycle waits for its work, and
        // starts what the concurrency limit deferred as earlier work ends.
        while !self.background && !self.work.is_empty() {
            executed.extend(self.work.wait().await);
            deferred = self.work.start(&executor, &set, &deferred).1;
        }
        // The state after this cycle, for the report. Retention was planned
        // before this cycle's backups existed: once a backup has landed, the
        // plan of that state also says what retention allows now, which is
        // applied at once, so a cycle ends with exactly what the rules keep
        // (a failed backup changes nothing: only successful ones count).
        let observe_after = async |inventory: &Option<_>| {
            let mut after =
                catalog::observe(&set, &locations, &cluster, now, self.work.running()).await;
            after.observed.inventory = inventory.clone();
            let after_plan = plan::plan(&set, &after.observed, &cluster, now, &options);
            (after, after_plan)
        };
        let (mut after, mut after_plan) = if executed.is_empty() && self.work.is_empty() {
            (observation, planned.clone())
        } else {
            observe_after(&inventory).await
        };
        let backed_up = executed
            .iter()
            .any(|e| e.ok() && matches!(e.action, Action::Backup { .. }));
        if backed_up {
            let retention: Vec<Action> = after_plan
                .actions
                .iter()
                .filter(|a| !work::is_task(a))
                .cloned()
                .collect();
            if !retention.is_empty() {
                info!(
                    actions = retention.len(),
                    "retention after this cycle's backups"
                );
                executed.extend(executor.execute(&set, &retention).await);
                (after, after_plan) = observe_after(&inventory).await;
            }
        }
        for e in executed.iter().filter(|e| !e.ok()) {
            errors.push((e.action_kind(), e.describe()));
        }
        let published = self
            .publish(&revision, &after_plan, &after, &executed, now)
            .await;
        push_publish_error(&published, &mut errors);
        CycleReport {
            revision,
            plan: Some(planned),
            after: Some(after_plan),
            executed,
            published,
            errors,
        }
    }

    async fn publish_revision_only(
        &self,
        revision: &RevisionStatus,
        now: Timestamp,
    ) -> Option<Result<Published, String>> {
        let empty = Plan {
            cluster: self.settings.cluster.clone(),
            now,
            actions: Vec::new(),
            policies: Vec::new(),
            restores: Vec::new(),
            orphans: Vec::new(),
            notes: vec!["no policy revision has validated yet, so nothing is protected".into()],
        };
        let observation = Observation {
            observed: plan::Observed::default(),
            records: Default::default(),
        };
        self.publish(revision, &empty, &observation, &[], now).await
    }

    async fn publish(
        &self,
        revision: &RevisionStatus,
        plan: &Plan,
        observation: &Observation,
        executed: &[Executed],
        now: Timestamp,
    ) -> Option<Result<Published, String>> {
        let target = self.settings.status.clone()?;
        let Source::Git { mirror, .. } = &self.source else {
            return None;
        };
        let files = status::render(&StatusInput {
            cluster: &self.settings.cluster,
            now,
            revision,
            plan,
            observed: &observation.observed,
            records: &observation.records,
        });
        let commit = StatusCommit {
            message: commit_message(&self.settings.cluster, revision, executed),
        };
        let mirror = mirror.clone();
        let result = tokio::task::spawn_blocking(move || {
            mirror
                .publish(&target, &files, &commit, &status::same)
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        match &result {
            Ok(Published::Committed { sha, attempts }) => {
                info!(%sha, attempts, "status committed")
            }
            Ok(Published::Unchanged) => info!("status unchanged"),
            Err(e) => warn!(error = %e, "status not written"),
        }
        Some(result)
    }
}

/// Why running work is no longer wanted by the valid revision, if it is
/// not: its policy was deleted, suspended or no longer applies here, its
/// RestoreRequest was deleted.
fn unwanted(set: &PolicySet, cluster: &str, action: &Action) -> Option<String> {
    match action {
        Action::Backup { policy, .. } => match set.policy(policy) {
            None => Some(format!("policy `{policy}` was deleted from Git")),
            Some(p) if p.doc.spec.suspend => Some(format!("policy `{policy}` was suspended")),
            Some(p) if !set.applies(&p.doc, cluster) => Some(format!(
                "policy `{policy}` no longer applies to cluster `{cluster}`"
            )),
            Some(_) => None,
        },
        Action::Restore { request, .. } => {
            (!set.restores.iter().any(|r| &r.doc.metadata.name == request))
                .then(|| format!("RestoreRequest `{request}` was deleted from Git"))
        }
        _ => None,
    }
}

fn push_publish_error(
    published: &Option<Result<Published, String>>,
    errors: &mut Vec<(&'static str, String)>,
) {
    if let Some(Err(e)) = published {
        errors.push(("status", e.clone()));
    }
}

/// `status(<cluster>): …` with one line per action in the body.
fn commit_message(cluster: &str, revision: &RevisionStatus, executed: &[Executed]) -> String {
    let count = |kind: &str| executed.iter().filter(|e| e.action_kind() == kind).count();
    let mut parts = Vec::new();
    for (kind, word) in [
        ("backup", "backup"),
        ("restore", "restore"),
        ("prune", "pruned"),
    ] {
        let n = count(kind);
        if n > 0 {
            parts.push(format!(
                "{n} {word}{}",
                if n > 1 && kind != "prune" { "s" } else { "" }
            ));
        }
    }
    let failed = executed.iter().filter(|e| !e.ok()).count();
    if failed > 0 {
        parts.push(format!("{failed} failed"));
    }
    if !revision.valid {
        parts.push("policy revision invalid".into());
    }
    let summary = if parts.is_empty() {
        "status update".to_string()
    } else {
        parts.join(", ")
    };
    let mut message = format!("status({cluster}): {summary} [skip ci]\n");
    if let Some(sha) = &revision.acting_on {
        message.push_str(&format!("\nPolicy revision: {sha}\n"));
    }
    if !executed.is_empty() {
        message.push('\n');
        for e in executed {
            message.push_str(&format!("- {}\n", e.describe()));
        }
    }
    message
}
