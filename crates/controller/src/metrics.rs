//! The controller's Prometheus metrics: one registry, typed handles for
//! each series, and the text exposition served on `/metrics`.
//!
//! ```text
//! reconcile loop ──backup_finished / reconcile_error / set_revision …──▶ Metrics
//! leader.rs ──set_leader──▶ Metrics
//! GET /metrics ──encode──▶ OpenMetrics text
//! ```
//!
//! Per-policy series are dropped with [`Metrics::forget_policy`] when a
//! policy leaves Git, so dashboards do not show stale policies forever.
//! `lifeboat_policy_revision_info` carries exactly one series: the revision
//! last loaded.

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What one finished backup reports.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupMetrics {
    /// Completed (true) or failed / partially failed (false).
    pub success: bool,
    /// When the backup ended.
    pub end_time: jiff::Timestamp,
    /// How long it ran.
    pub duration: Duration,
    /// Objects written.
    pub objects: u64,
    /// Bytes written (after compression and encryption).
    pub bytes: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabel {
    policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackupResult {
    policy: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Revision {
    sha: String,
    valid: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MaintenanceLabel {
    location: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OkLabel {
    result: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

fn duration_histogram() -> Histogram {
    // 1 s … ~4.5 h: backups of a few objects to whole clusters.
    Histogram::new(exponential_buckets(1.0, 2.0, 15))
}

fn reconcile_histogram() -> Histogram {
    // 10 ms … ~5.5 min.
    Histogram::new(exponential_buckets(0.01, 2.0, 16))
}

struct Inner {
    registry: Registry,
    last_success: Family<PolicyLabel, FloatGauge>,
    backup_duration: Family<PolicyLabel, Histogram, fn() -> Histogram>,
    backup_objects: Family<PolicyLabel, Gauge>,
    backup_bytes: Family<PolicyLabel, Gauge>,
    backups: Family<BackupResult, Counter>,
    rpo_violated: Family<PolicyLabel, Gauge>,
    reconcile_errors: Family<KindLabel, Counter>,
    revision: Family<Revision, Gauge>,
    /// The labels of the one revision series, to remove it on change.
    current_revision: Mutex<Option<Revision>>,
    restores: Family<PhaseLabel, Counter>,
    reconcile_duration: Family<OkLabel, Histogram, fn() -> Histogram>,
    leader: Gauge,
    volume_bytes: Family<PolicyLabel, Gauge>,
    volume_duration: Family<PolicyLabel, Histogram, fn() -> Histogram>,
    volume_failures: Family<PolicyLabel, Counter>,
    hook_failures: Family<PolicyLabel, Counter>,
    restore_hook_failures: Counter,
    movers_running: Gauge,
    maintenance: Family<MaintenanceLabel, Counter>,
}

/// The controller's metrics. Cheap to clone: clones share one registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every lifeboat metric registered and no series yet
    /// (except `lifeboat_leader`, which starts at 0).
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let last_success = Family::<PolicyLabel, FloatGauge>::default();
        registry.register(
            "lifeboat_backup_last_success_timestamp_seconds",
            "Unix time when the last successful backup of the policy ended",
            last_success.clone(),
        );
        let backup_duration =
            Family::<PolicyLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        registry.register(
            "lifeboat_backup_duration_seconds",
            "Duration of backups of the policy, successful or not",
            backup_duration.clone(),
        );
        let backup_objects = Family::<PolicyLabel, Gauge>::default();
        registry.register(
            "lifeboat_backup_objects",
            "Objects in the last backup of the policy",
            backup_objects.clone(),
        );
        let backup_bytes = Family::<PolicyLabel, Gauge>::default();
        registry.register(
            "lifeboat_backup_bytes",
            "Bytes written by the last backup of the policy",
            backup_bytes.clone(),
        );
        let backups = Family::<BackupResult, Counter>::default();
        // The text encoder appends `_total` to counters.
        registry.register(
            "lifeboat_backups",
            "Backups finished, by policy and result (success or failure)",
            backups.clone(),
        );
        let rpo_violated = Family::<PolicyLabel, Gauge>::default();
        registry.register(
            "lifeboat_rpo_violated",
            "1 when the policy's last successful backup is older than its RPO objective",
            rpo_violated.clone(),
        );
        let reconcile_errors = Family::<KindLabel, Counter>::default();
        registry.register(
            "lifeboat_reconcile_errors",
            "Reconcile errors by kind (fetch, validate, catalog, volumes, prerequisites, backup, prune, restore, status)",
            reconcile_errors.clone(),
        );
        let revision = Family::<Revision, Gauge>::default();
        registry.register(
            "lifeboat_policy_revision_info",
            "The Git revision of the policy repository last loaded, and whether it validated",
            revision.clone(),
        );
        let restores = Family::<PhaseLabel, Counter>::default();
        registry.register(
            "lifeboat_restores",
            "Restores finished, by final phase",
            restores.clone(),
        );
        let reconcile_duration =
            Family::<OkLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                reconcile_histogram,
            );
        registry.register(
            "lifeboat_reconcile_duration_seconds",
            "Duration of reconcile passes, by result (success or failure)",
            reconcile_duration.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "lifeboat_leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        let volume_bytes = Family::<PolicyLabel, Gauge>::default();
        registry.register(
            "lifeboat_volume_bytes",
            "Bytes of volume data in the last backup of the policy (every file of its snapshots)",
            volume_bytes.clone(),
        );
        let volume_duration =
            Family::<PolicyLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        registry.register(
            "lifeboat_volume_backup_duration_seconds",
            "Duration of each volume's backup (snapshot, move, clean-up) of the policy",
            volume_duration.clone(),
        );
        let volume_failures = Family::<PolicyLabel, Counter>::default();
        registry.register(
            "lifeboat_volume_failures",
            "Volumes whose data a backup of the policy could not carry",
            volume_failures.clone(),
        );
        let hook_failures = Family::<PolicyLabel, Counter>::default();
        registry.register(
            "lifeboat_hook_failures",
            "Exec hooks of the policy's backups that failed (non-zero exit, timeout, exec refused)",
            hook_failures.clone(),
        );
        let maintenance = Family::<MaintenanceLabel, Counter>::default();
        registry.register(
            "lifeboat_volume_maintenance",
            "Prunes of the location's volume repositories, by result (success, failure)",
            maintenance.clone(),
        );
        let restore_hook_failures = Counter::default();
        registry.register(
            "lifeboat_restore_hook_failures",
            "Restore hooks that failed (non-zero exit, timeout, a wait for their pods that timed out)",
            restore_hook_failures.clone(),
        );
        let movers_running = Gauge::default();
        registry.register(
            "lifeboat_movers_running",
            "Claims being moved now by this cluster's backups, per their operation records",
            movers_running.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                volume_bytes,
                volume_duration,
                volume_failures,
                hook_failures,
                maintenance,
                restore_hook_failures,
                movers_running,
                registry,
                last_success,
                backup_duration,
                backup_objects,
                backup_bytes,
                backups,
                rpo_violated,
                reconcile_errors,
                revision,
                current_revision: Mutex::new(None),
                restores,
                reconcile_duration,
                leader,
            }),
        }
    }

    /// Records one finished backup of `policy`.
    pub fn backup_finished(&self, policy: &str, outcome: &BackupMetrics) {
        let i = &self.inner;
        let p = policy_label(policy);
        if outcome.success {
            let end = outcome.end_time.as_millisecond() as f64 / 1000.0;
            i.last_success.get_or_create(&p).set(end);
        }
        i.backup_duration
            .get_or_create(&p)
            .observe(outcome.duration.as_secs_f64());
        i.backup_objects
            .get_or_create(&p)
            .set(saturate(outcome.objects));
        i.backup_bytes
            .get_or_create(&p)
            .set(saturate(outcome.bytes));
        let result = if outcome.success {
            "success"
        } else {
            "failure"
        };
        i.backups
            .get_or_create(&BackupResult {
                policy: policy.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// Records the volumes of a backup of `policy`: the bytes of its
    /// completed ones, each one's duration, and the failed ones.
    pub fn volumes_finished(&self, policy: &str, volumes: &[lifeboat_store::VolumeEntry]) {
        let i = &self.inner;
        let p = policy_label(policy);
        let mut bytes = 0;
        for v in volumes {
            match v.phase {
                lifeboat_store::VolumePhase::Completed => {
                    bytes += v.bytes;
                    i.volume_duration
                        .get_or_create(&p)
                        .observe(v.duration_ms as f64 / 1000.0);
                }
                _ => {
                    i.volume_failures.get_or_create(&p).inc();
                }
            }
        }
        i.volume_bytes.get_or_create(&p).set(saturate(bytes));
    }

    /// Counts the failed exec hooks of a backup of `policy`.
    pub fn hooks_finished(&self, policy: &str, hooks: &lifeboat_store::HookCounts) {
        self.inner
            .hook_failures
            .get_or_create(&policy_label(policy))
            .inc_by(u64::from(hooks.failed));
    }

    /// Sets `lifeboat_movers_running`.
    pub fn set_movers_running(&self, n: usize) {
        self.inner.movers_running.set(saturate(n as u64));
    }

    /// Sets `lifeboat_backup_last_success_timestamp_seconds{policy}` from the
    /// catalog, so the gauge is right after a restart, before this process
    /// has taken a backup itself.
    pub fn set_last_success(&self, policy: &str, end_time: jiff::Timestamp) {
        let end = end_time.as_millisecond() as f64 / 1000.0;
        self.inner
            .last_success
            .get_or_create(&policy_label(policy))
            .set(end);
    }

    /// Sets `lifeboat_rpo_violated{policy}` to 1 or 0.
    pub fn set_rpo_violated(&self, policy: &str, violated: bool) {
        self.inner
            .rpo_violated
            .get_or_create(&policy_label(policy))
            .set(i64::from(violated));
    }

    /// Drops every series of a policy that was removed from Git.
    pub fn forget_policy(&self, policy: &str) {
        let i = &self.inner;
        let p = policy_label(policy);
        i.volume_bytes.remove(&p);
        i.volume_duration.remove(&p);
        i.volume_failures.remove(&p);
        i.last_success.remove(&p);
        i.backup_duration.remove(&p);
        i.backup_objects.remove(&p);
        i.backup_bytes.remove(&p);
        i.rpo_violated.remove(&p);
        for result in ["success", "failure"] {
            i.backups.remove(&BackupResult {
                policy: policy.to_string(),
                result: result.to_string(),
            });
        }
    }

    /// Counts one reconcile error of `kind` (`fetch`, `validate`, `catalog`,
    /// `backup`, `prune`, `restore`, `status`).
    pub fn reconcile_error(&self, kind: &str) {
        self.inner
            .reconcile_errors
            .get_or_create(&KindLabel {
                kind: kind.to_string(),
            })
            .inc();
    }

    /// Publishes the policy revision last loaded; the previous revision's
    /// series is removed.
    pub fn set_revision(&self, sha: &str, valid: bool) {
        let i = &self.inner;
        let next = Revision {
            sha: sha.to_string(),
            valid: valid.to_string(),
        };
        let mut current = i.current_revision.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(previous) = current.take()
            && previous != next
        {
            i.revision.remove(&previous);
        }
        i.revision.get_or_create(&next).set(1);
        *current = Some(next);
    }

    /// Counts the failed hooks of a restore.
    pub fn restore_hooks_finished(&self, hooks: &lifeboat_store::HookCounts) {
        self.inner
            .restore_hook_failures
            .inc_by(u64::from(hooks.failed));
    }

    /// Counts one restore that ended in `phase`.
    /// Records one prune of a volume repository in `location`.
    pub fn maintenance_finished(&self, location: &str, ok: bool) {
        self.inner
            .maintenance
            .get_or_create(&MaintenanceLabel {
                location: location.to_string(),
                result: if ok { "success" } else { "failure" }.to_string(),
            })
            .inc();
    }

    pub fn restore_finished(&self, phase: &str) {
        self.inner
            .restores
            .get_or_create(&PhaseLabel {
                phase: phase.to_string(),
            })
            .inc();
    }

    /// Records one reconcile pass.
    pub fn reconcile_finished(&self, duration: Duration, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.inner
            .reconcile_duration
            .get_or_create(&OkLabel {
                result: result.to_string(),
            })
            .observe(duration.as_secs_f64());
    }

    /// Sets `lifeboat_leader` to 1 or 0.
    pub fn set_leader(&self, leader: bool) {
        self.inner.leader.set(i64::from(leader));
    }

    /// The exposition in OpenMetrics text format ([`CONTENT_TYPE`]), which
    /// Prometheus also parses as its text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry);
        out
    }
}

fn policy_label(policy: &str) -> PolicyLabel {
    PolicyLabel {
        policy: policy.to_string(),
    }
}

fn saturate(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(success: bool) -> BackupMetrics {
        BackupMetrics {
            success,
            end_time: "2026-03-01T02:00:30Z".parse().unwrap(),
            duration: Duration::from_secs(30),
            objects: 120,
            bytes: 4096,
        }
    }

    fn lines(m: &Metrics) -> Vec<String> {
        m.encode().lines().map(str::to_string).collect()
    }

    fn has(m: &Metrics, line: &str) -> bool {
        lines(m).iter().any(|l| l == line)
    }

    #[test]
    fn an_empty_registry_shows_only_the_unlabelled_series() {
        assert_eq!(
            Metrics::new().encode(),
            "# HELP lifeboat_leader 1 while this replica holds the leader lease.\n\
             # TYPE lifeboat_leader gauge\n\
             lifeboat_leader 0\n\
             # HELP lifeboat_restore_hook_failures Restore hooks that failed (non-zero exit, timeout, a wait for their pods that timed out).\n\
             # TYPE lifeboat_restore_hook_failures counter\n\
             lifeboat_restore_hook_failures_total 0\n\
             # HELP lifeboat_movers_running Claims being moved now by this cluster's backups, per their operation records.\n\
             # TYPE lifeboat_movers_running gauge\n\
             lifeboat_movers_running 0\n\
             # EOF\n"
        );
    }

    fn volume(phase: lifeboat_store::VolumePhase) -> lifeboat_store::VolumeEntry {
        lifeboat_store::VolumeEntry {
            namespace: "ns".into(),
            pvc: "data".into(),
            pvc_uid: String::new(),
            method: "snapshotMove".into(),
            phase,
            snapshot: None,
            bytes: 1024,
            new_bytes: 0,
            files: 1,
            duration_ms: 1500,
            node: None,
            file: None,
            error: None,
            kept: None,
        }
    }

    #[test]
    fn every_metric_has_help_and_type() {
        // Families without series are not printed: give each one a series.
        let m = Metrics::new();
        m.backup_finished("p", &backup(true));
        m.set_rpo_violated("p", false);
        m.reconcile_error("fetch");
        m.set_revision("abc", true);
        m.restore_finished("Completed");
        m.reconcile_finished(Duration::from_secs(1), true);
        m.volumes_finished(
            "p",
            &[
                volume(lifeboat_store::VolumePhase::Completed),
                volume(lifeboat_store::VolumePhase::Failed),
            ],
        );
        m.set_movers_running(2);
        m.hooks_finished("p", &lifeboat_store::HookCounts { ran: 4, failed: 2 });
        m.maintenance_finished("primary", true);
        let text = m.encode();
        assert!(
            text.contains(
                "lifeboat_volume_maintenance_total{location=\"primary\",result=\"success\"} 1\n"
            ),
            "{text}"
        );
        m.restore_hooks_finished(&lifeboat_store::HookCounts { ran: 3, failed: 1 });
        let text = m.encode();
        assert!(
            text.contains("lifeboat_restore_hook_failures_total 1\n"),
            "{text}"
        );
        assert!(
            text.contains("lifeboat_hook_failures_total{policy=\"p\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("lifeboat_volume_bytes{policy=\"p\"} 1024\n"),
            "{text}"
        );
        assert!(
            text.contains("lifeboat_volume_failures_total{policy=\"p\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("lifeboat_movers_running 2\n"), "{text}");
        for (name, kind) in [
            ("lifeboat_volume_bytes", "gauge"),
            ("lifeboat_volume_backup_duration_seconds", "histogram"),
            ("lifeboat_volume_failures", "counter"),
            ("lifeboat_hook_failures", "counter"),
            ("lifeboat_volume_maintenance", "counter"),
            ("lifeboat_movers_running", "gauge"),
            ("lifeboat_backup_last_success_timestamp_seconds", "gauge"),
            ("lifeboat_backup_duration_seconds", "histogram"),
            ("lifeboat_backup_objects", "gauge"),
            ("lifeboat_backup_bytes", "gauge"),
            ("lifeboat_backups", "counter"),
            ("lifeboat_rpo_violated", "gauge"),
            ("lifeboat_reconcile_errors", "counter"),
            ("lifeboat_policy_revision_info", "gauge"),
            ("lifeboat_restores", "counter"),
            ("lifeboat_reconcile_duration_seconds", "histogram"),
            ("lifeboat_leader", "gauge"),
        ] {
            assert!(text.contains(&format!("# HELP {name} ")), "{name} HELP");
            assert!(
                text.contains(&format!("# TYPE {name} {kind}\n")),
                "{name} TYPE"
            );
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn a_backup_sets_its_series() {
        let m = Metrics::new();
        m.backup_finished("daily", &backup(true));
        m.backup_finished("daily", &backup(false));
        assert!(has(
            &m,
            r#"lifeboat_backup_last_success_timestamp_seconds{policy="daily"} 1772330430.0"#
        ));
        assert!(has(&m, r#"lifeboat_backup_objects{policy="daily"} 120"#));
        assert!(has(&m, r#"lifeboat_backup_bytes{policy="daily"} 4096"#));
        assert!(has(
            &m,
            r#"lifeboat_backups_total{policy="daily",result="success"} 1"#
        ));
        assert!(has(
            &m,
            r#"lifeboat_backups_total{policy="daily",result="failure"} 1"#
        ));
        assert!(has(
            &m,
            r#"lifeboat_backup_duration_seconds_count{policy="daily"} 2"#
        ));
        assert!(has(
            &m,
            r#"lifeboat_backup_duration_seconds_sum{policy="daily"} 60.0"#
        ));
        assert!(has(
            &m,
            r#"lifeboat_backup_duration_seconds_bucket{le="32.0",policy="daily"} 2"#
        ));
    }

    #[test]
    fn a_failed_backup_leaves_the_last_success_alone() {
        let m = Metrics::new();
        m.backup_finished("p", &backup(false));
        assert!(
            !m.encode()
                .contains("lifeboat_backup_last_success_timestamp_seconds{")
        );
    }

    #[test]
    fn forgetting_a_policy_drops_only_its_series() {
        let m = Metrics::new();
        m.backup_finished("gone", &backup(true));
        m.backup_finished("kept", &backup(true));
        m.set_rpo_violated("gone", true);
        m.forget_policy("gone");
        let text = m.encode();
        assert!(!text.contains(r#"policy="gone""#), "{text}");
        assert!(text.contains(r#"policy="kept""#));
    }

    #[test]
    fn one_revision_series_at_a_time() {
        let m = Metrics::new();
        m.set_revision("aaa", true);
        m.set_revision("bbb", false);
        assert!(!m.encode().contains(r#"sha="aaa""#));
        assert!(has(
            &m,
            r#"lifeboat_policy_revision_info{sha="bbb",valid="false"} 1"#
        ));
        m.set_revision("bbb", true);
        assert!(!m.encode().contains(r#"valid="false""#));
    }

    #[test]
    fn counters_and_flags() {
        let m = Metrics::new();
        m.reconcile_error("fetch");
        m.reconcile_error("fetch");
        m.restore_finished("Completed");
        m.set_rpo_violated("p", true);
        m.set_leader(true);
        m.reconcile_finished(Duration::from_millis(250), true);
        assert!(has(
            &m,
            r#"lifeboat_reconcile_errors_total{kind="fetch"} 2"#
        ));
        assert!(has(&m, r#"lifeboat_restores_total{phase="Completed"} 1"#));
        assert!(has(&m, r#"lifeboat_rpo_violated{policy="p"} 1"#));
        assert!(has(&m, "lifeboat_leader 1"));
        assert!(has(
            &m,
            r#"lifeboat_reconcile_duration_seconds_count{result="success"} 1"#
        ));
        m.set_rpo_violated("p", false);
        assert!(has(&m, r#"lifeboat_rpo_violated{policy="p"} 0"#));
    }

    /// Every line is a comment (`# HELP|TYPE|UNIT|EOF`) or a sample
    /// `name{labels} value` with a valid name and a float value.
    #[test]
    fn exposition_parses() {
        let m = Metrics::new();
        m.backup_finished("a \"quoted\" policy", &backup(true));
        m.set_revision("abc", true);
        m.reconcile_error("status");
        let text = m.encode();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# ") {
                let word = rest.split(' ').next().unwrap_or_default();
                assert!(["HELP", "TYPE", "UNIT", "EOF"].contains(&word), "{line}");
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect(line);
            assert!(value.parse::<f64>().is_ok(), "{line}");
            let name = series.split('{').next().unwrap_or_default();
            assert!(
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "{line}"
            );
            if let Some(labels) = series.strip_prefix(name) {
                assert!(
                    labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                    "{line}"
                );
            }
        }
        assert!(text.contains(r#"policy="a \"quoted\" policy""#), "{text}");
    }
}
