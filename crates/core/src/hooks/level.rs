//! Backup-level hooks: `spec.hooks.before` and `spec.hooks.after` of a
//! policy, each run once per backup as a Job in a workload namespace or as
//! a command in one selected pod. Pure: the caller lists the pods
//! ([`PodInfo`]) and runs what [`level_hooks`] decides.
//!
//! ```text
//! before hooks ─▶ objects ─▶ volumes (pod pre hooks ─▶ snapshots ─▶ post hooks ─▶ movers) ─▶ after hooks ─▶ manifest
//!      └──────────────── after hooks run whenever a before hook ran ────────────────────────┘
//! ```

use serde::{Deserialize, Serialize};

use super::{argv, ordinal_key};
use crate::duration::Duration;
use crate::model::{BackupHook, BackupPolicy, HookOnError};
use crate::volumes::PodInfo;

/// The namespaces a Job hook may never run in by default: lifeboat's own
/// (the controller's Secrets: storage credentials, identities) and the
/// movers' (per-operation Secrets with repository keys).
pub const LIFEBOAT_NAMESPACES: [&str; 2] = ["lifeboat", "lifeboat-movers"];

/// When a backup-level hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LevelPhase {
    /// Before anything is read from the cluster.
    Before,
    /// After the volume data, before the manifest.
    After,
}

impl std::fmt::Display for LevelPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LevelPhase::Before => "before",
            LevelPhase::After => "after",
        })
    }
}

/// How a backup-level hook runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum LevelRun {
    /// A Job of one pod, no retries.
    Job {
        image: String,
        command: Vec<String>,
        service_account_name: String,
        env: Vec<(String, String)>,
    },
    /// A command in a container of one pod.
    Exec {
        /// The pod, `None` when no Running pod matches (the hook fails).
        pod: Option<String>,
        /// The container, `None` with no pod.
        container: Option<String>,
        command: Vec<String>,
    },
}

/// One backup-level hook as it will run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LevelHook {
    pub name: String,
    pub phase: LevelPhase,
    pub namespace: String,
    pub run: LevelRun,
    pub timeout: Duration,
    pub on_error: HookOnError,
    /// Why it cannot run as written (no `job`/`exec`, both, a lifeboat
    /// namespace, no pod selected): the hook fails with this reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid: Option<String>,
}

impl LevelHook {
    /// Where it runs, for records: the Job's or the pod's name.
    pub fn pod_or_job(&self, backup: &str) -> String {
        match &self.run {
            LevelRun::Job { .. } => job_name(backup, self.phase, &self.name),
            LevelRun::Exec { pod, .. } => pod.clone().unwrap_or_default(),
        }
    }

    /// The container it runs in, for records.
    pub fn container(&self) -> &str {
        match &self.run {
            LevelRun::Job { .. } => JOB_CONTAINER,
            LevelRun::Exec { container, .. } => container.as_deref().unwrap_or_default(),
        }
    }

    /// The argument list it runs.
    pub fn command(&self) -> &[String] {
        match &self.run {
            LevelRun::Job { command, .. } | LevelRun::Exec { command, .. } => command,
        }
    }
}

/// The name of a Job hook's one container.
pub const JOB_CONTAINER: &str = "hook";

/// The name of the Job of hook `hook` of `phase` of backup `backup`:
/// the same for a resumed run (which adopts a Job its earlier run left),
/// at most 63 characters (a Job's name is a label value of its pods).
pub fn job_name(backup: &str, phase: LevelPhase, hook: &str) -> String {
    let full = format!("lifeboat-{phase}-{hook}-{backup}");
    if full.len() <= 63 {
        return full;
    }
    // FNV-1a of the whole name keeps distinct backups' Jobs apart.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in full.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let suffix = format!("-{:010x}", h & 0xff_ffff_ffff);
    let mut head = full[..63 - suffix.len()].to_string();
    while head.ends_with('-') {
        head.pop();
    }
    head + &suffix
}

/// Whether `namespace` is one of lifeboat's own, where no Job hook runs.
pub fn is_lifeboat_namespace(namespace: &str, movers_namespace: &str) -> bool {
    LIFEBOAT_NAMESPACES.contains(&namespace) || namespace == movers_namespace
}

/// The backup-level hooks of `policy` of `phase`, in the policy's order,
/// with the pod each `exec` hook runs in chosen from `pods`.
pub fn level_hooks(
    policy: &BackupPolicy,
    phase: LevelPhase,
    pods: &[PodInfo],
    movers_namespace: &str,
) -> Vec<LevelHook> {
    let Some(hooks) = &policy.spec.hooks else {
        return Vec::new();
    };
    let list = match phase {
        LevelPhase::Before => &hooks.before,
        LevelPhase::After => &hooks.after,
    };
    list.iter()
        .map(|h| level_hook(h, phase, pods, movers_namespace))
        .collect()
}

fn level_hook(h: &BackupHook, phase: LevelPhase, pods: &[PodInfo], movers: &str) -> LevelHook {
    let mut out = LevelHook {
        name: h.name.clone(),
        phase,
        namespace: String::new(),
        run: LevelRun::Exec {
            pod: None,
            container: None,
            command: Vec::new(),
        },
        timeout: h.timeout(),
        on_error: h.on_error,
        invalid: None,
    };
    match (&h.job, &h.exec) {
        (Some(job), None) => {
            out.namespace = job.namespace.clone();
            out.run = LevelRun::Job {
                image: job.image.clone(),
                command: argv(&job.command, job.shell),
                service_account_name: job.service_account_name.clone(),
                env: job
                    .env
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            };
            if is_lifeboat_namespace(&job.namespace, movers) {
                out.invalid = Some(format!(
                    "its Job would run in lifeboat's namespace {}, whose Secrets hold storage credentials and keys",
                    job.namespace
                ));
            }
        }
        (None, Some(exec)) => {
            out.namespace = exec.namespace.clone();
            let mut candidates: Vec<&PodInfo> = pods
                .iter()
                .filter(|p| {
                    p.phase == "Running"
                        && p.namespace == exec.namespace
                        && exec
                            .label_selector
                            .as_ref()
                            .is_none_or(|s| s.matches(&p.labels))
                        && exec
                            .owner
                            .as_ref()
                            .is_none_or(|o| p.owner.as_deref() == Some(o.0.as_str()))
                })
                .collect();
            candidates.sort_by(|a, b| ordinal_key(&a.name).cmp(&ordinal_key(&b.name)));
            let command = argv(&exec.command, exec.shell);
            match candidates.first() {
                None => {
                    out.invalid = Some(format!(
                        "no Running pod in namespace {} matches its selection",
                        exec.namespace
                    ));
                    out.run = LevelRun::Exec {
                        pod: None,
                        container: None,
                        command,
                    };
                }
                Some(p) => {
                    let container = match &exec.container {
                        Some(c) if p.containers.is_empty() || p.containers.contains(c) => {
                            Some(c.clone())
                        }
                        Some(c) => {
                            out.invalid = Some(format!(
                                "pod {} has no container {c:?} (it has {})",
                                p.name,
                                p.containers.join(", ")
                            ));
                            None
                        }
                        None => {
                            let first = p.containers.first().cloned();
                            if first.is_none() {
                                out.invalid = Some(format!("pod {} has no containers", p.name));
                            }
                            first
                        }
                    };
                    out.run = LevelRun::Exec {
                        pod: Some(p.name.clone()),
                        container,
                        command,
                    };
                }
            }
        }
        (None, None) => {
            out.invalid = Some("it has neither `job` nor `exec`".into());
        }
        (Some(_), Some(_)) => {
            out.invalid = Some("it has both `job` and `exec`; give one".into());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::{Value, json};

    use super::*;

    fn policy(hooks: Value) -> BackupPolicy {
        serde_json::from_value(json!({
            "apiVersion": "lifeboat.dev/v1alpha1",
            "kind": "BackupPolicy",
            "metadata": {"name": "p"},
            "spec": {
                "clusters": {"names": ["c"]},
                "include": {"namespaces": ["shop"]},
                "schedule": "0 0 * * *",
                "retention": {"keepDaily": 7},
                "storage": "s3",
                "hooks": hooks,
            },
        }))
        .unwrap()
    }

    fn pod(name: &str, owner: &str) -> PodInfo {
        PodInfo {
            namespace: "shop".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            node: Some("node-1".into()),
            phase: "Running".into(),
            annotations: BTreeMap::new(),
            volumes: Vec::new(),
            labels: BTreeMap::from([("app".to_string(), "db".to_string())]),
            owner: Some(owner.into()),
            containers: vec!["db".into(), "sidecar".into()],
        }
    }

    #[test]
    fn a_job_hook_runs_its_argv_under_the_default_service_account() {
        let p = policy(json!({"before": [{
            "name": "quiesce",
            "job": {"namespace": "shop", "image": "tools:1", "command": ["/bin/quiesce", "--on"]},
        }]}));
        let hooks = level_hooks(&p, LevelPhase::Before, &[], "lifeboat-movers");
        assert_eq!(hooks.len(), 1);
        let h = &hooks[0];
        assert_eq!(h.invalid, None);
        assert_eq!(h.timeout, Duration::from_secs(300));
        assert_eq!(h.on_error, HookOnError::FailVolume);
        assert_eq!(
            h.run,
            LevelRun::Job {
                image: "tools:1".into(),
                command: vec!["/bin/quiesce".into(), "--on".into()],
                service_account_name: "default".into(),
                env: Vec::new(),
            }
        );
        assert!(level_hooks(&p, LevelPhase::After, &[], "lifeboat-movers").is_empty());
    }

    #[test]
    fn a_job_hook_in_a_lifeboat_namespace_is_refused() {
        for ns in ["lifeboat", "lifeboat-movers", "dr-movers"] {
            let p = policy(json!({"after": [{
                "name": "notify",
                "job": {"namespace": ns, "image": "tools:1", "command": "curl x", "shell": true},
            }]}));
            let h = &level_hooks(&p, LevelPhase::After, &[], "dr-movers")[0];
            let why = h.invalid.as_deref().expect("refused");
            assert!(why.contains("lifeboat's namespace"), "{why}");
            assert_eq!(h.command(), ["/bin/sh", "-c", "curl x"]);
        }
    }

    #[test]
    fn an_exec_hook_runs_in_the_lowest_ordinal_matching_pod() {
        let p = policy(json!({"before": [{
            "name": "checkpoint",
            "exec": {"namespace": "shop", "owner": "StatefulSet/db", "command": ["checkpoint"]},
            "timeout": "1m",
        }]}));
        let pods = [
            pod("db-10", "StatefulSet/db"),
            pod("db-2", "StatefulSet/db"),
            pod("web-0", "Deployment/web"),
        ];
        let h = &level_hooks(&p, LevelPhase::Before, &pods, "lifeboat-movers")[0];
        assert_eq!(h.invalid, None);
        assert_eq!(h.pod_or_job("b"), "db-2");
        assert_eq!(h.container(), "db");
        assert_eq!(h.timeout, Duration::from_secs(60));
        let none = level_hooks(&p, LevelPhase::Before, &pods[2..], "lifeboat-movers");
        assert!(
            none[0]
                .invalid
                .as_deref()
                .unwrap()
                .contains("no Running pod")
        );
    }

    #[test]
    fn a_hook_needs_exactly_one_of_job_and_exec() {
        let p = policy(json!({"before": [{"name": "nothing"}]}));
        let h = &level_hooks(&p, LevelPhase::Before, &[], "lifeboat-movers")[0];
        assert!(h.invalid.as_deref().unwrap().contains("neither"));
    }

    #[test]
    fn job_names_are_stable_and_fit_a_label_value() {
        let short = job_name("p-20261201-0000", LevelPhase::Before, "quiesce");
        assert_eq!(short, "lifeboat-before-quiesce-p-20261201-0000");
        let long = "a-very-long-policy-name-that-goes-on-and-on-20261201-0000";
        let a = job_name(long, LevelPhase::After, "notify-the-team");
        assert!(a.len() <= 63, "{a}");
        assert_eq!(a, job_name(long, LevelPhase::After, "notify-the-team"));
        assert_ne!(
            a,
            job_name(&format!("{long}x"), LevelPhase::After, "notify-the-team")
        );
        assert!(!a.contains("--"));
    }
}
