//! Dump hooks: which pod runs each `spec.hooks.dumps[]` command and where
//! its stdout goes in the backup. Pure: the caller lists the pods and
//! streams what this decides.
//!
//! ```text
//! BackupPolicy.spec.hooks.dumps ─┐
//! Running pods (labels, owner, ──┴─▶ dump_runs ─▶ Vec<DumpRun>  (one pod per owner and hook)
//!   containers)
//! DumpRun ─▶ artifact_file ─▶ artifacts/<namespace>/<owner>/<hook>.zst[.age]
//! ```
//!
//! A dump runs in one pod per owner: the lowest ordinal of a StatefulSet
//! (its primary, by convention), the first pod by name otherwise; a pod
//! without a controller is its own owner (`pod-<name>`). The owner is
//! spelled `<kind>-<name>` in lower case (`deployment-mysql`) in the
//! artifact's path, so an artifact is found again at restore by its
//! namespace, owner and hook, whatever the pods are called then.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{argv, first_container, ordinal_key, selects_pod};
use crate::duration::Duration;
use crate::model::{BackupPolicy, HookOnError};
use crate::select::{PatternError, Selection};
use crate::volumes::PodInfo;

/// One dump to run: a command in one pod, its stdout the artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DumpRun {
    /// The dump hook's name (the artifact's file name).
    pub hook: String,
    pub namespace: String,
    pub pod: String,
    /// The owner as spelled in the artifact's path ([`owner_dir`]).
    pub owner: String,
    pub container: String,
    /// The argument list sent to the container runtime.
    pub command: Vec<String>,
    pub timeout: Duration,
    pub on_error: HookOnError,
    /// Why it cannot run as written (a container the pod does not have):
    /// the backup records it as a failed dump.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid: Option<String>,
}

/// The owner of a pod as spelled in artifact paths: `Deployment/mysql` →
/// `deployment-mysql`; a pod without a controller is `pod-<name>`.
pub fn owner_dir(owner: Option<&str>, pod: &str) -> String {
    match owner.and_then(|o| o.split_once('/')) {
        Some((kind, name)) => format!("{}-{name}", kind.to_ascii_lowercase()),
        None => format!("pod-{pod}"),
    }
}

/// The owner of a restored workload (`Deployment`, `mysql`) as spelled in
/// artifact paths.
pub fn workload_owner_dir(kind: &str, name: &str) -> String {
    format!("{}-{name}", kind.to_ascii_lowercase())
}

/// The artifact's path in the backup directory:
/// `artifacts/<namespace>/<owner>/<hook>.zst`, `.age` appended when the
/// backup is encrypted.
pub fn artifact_file(namespace: &str, owner: &str, hook: &str, encrypted: bool) -> String {
    format!(
        "artifacts/{namespace}/{owner}/{hook}.zst{}",
        if encrypted { ".age" } else { "" }
    )
}

/// The dumps a backup of `policy` runs over the Running pods of the
/// namespaces it backs up, in the policy's order, then by namespace and
/// owner.
pub fn dump_runs(policy: &BackupPolicy, pods: &[PodInfo]) -> Result<Vec<DumpRun>, PatternError> {
    let spec = &policy.spec;
    let Some(hooks) = &spec.hooks else {
        return Ok(Vec::new());
    };
    if hooks.dumps.is_empty() {
        return Ok(Vec::new());
    }
    let selection = Selection::new(&spec.include, &spec.exclude)?;
    let mut out = Vec::new();
    for h in &hooks.dumps {
        // One pod per (namespace, owner).
        let mut chosen: BTreeMap<(&str, String), &PodInfo> = BTreeMap::new();
        for p in pods.iter().filter(|p| {
            p.phase == "Running"
                && selection.namespace(&p.namespace)
                && selects_pod(
                    &h.namespaces,
                    h.label_selector.as_ref(),
                    h.owner.as_ref(),
                    p,
                )
        }) {
            let key = (p.namespace.as_str(), owner_dir(p.owner.as_deref(), &p.name));
            let e = chosen.entry(key).or_insert(p);
            if ordinal_key(&p.name) < ordinal_key(&e.name) {
                *e = p;
            }
        }
        for ((namespace, owner), p) in chosen {
            let (container, invalid) = match &h.container {
                Some(c) if p.containers.is_empty() || p.containers.contains(c) => (c.clone(), None),
                Some(c) => (
                    c.clone(),
                    Some(format!(
                        "dump hook {} names container {c:?}, which pod {namespace}/{} does not have (it has {})",
                        h.name,
                        p.name,
                        p.containers.join(", ")
                    )),
                ),
                None => match first_container(&p.containers) {
                    Ok(c) => (c, None),
                    Err(e) => (String::new(), Some(format!("dump hook {}: {e}", h.name))),
                },
            };
            out.push(DumpRun {
                hook: h.name.clone(),
                namespace: namespace.to_string(),
                pod: p.name.clone(),
                owner,
                container,
                command: argv(&h.command, h.shell),
                timeout: h.timeout,
                on_error: h.on_error,
                invalid,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DumpHook, HookCommand, Hooks};

    fn pod(ns: &str, name: &str, owner: Option<&str>) -> PodInfo {
        PodInfo {
            namespace: ns.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            node: None,
            phase: "Running".into(),
            annotations: BTreeMap::new(),
            volumes: Vec::new(),
            labels: BTreeMap::from([("app".to_string(), "db".to_string())]),
            owner: owner.map(Into::into),
            containers: vec!["mysql".into(), "sidecar".into()],
        }
    }

    fn policy(dumps: Vec<DumpHook>) -> BackupPolicy {
        let mut p: BackupPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "lifeboat.dev/v1alpha1",
            "kind": "BackupPolicy",
            "metadata": {"name": "db"},
            "spec": {
                "clusters": {"names": ["prod"]},
                "include": {"namespaces": ["shop", "team-*"]},
                "schedule": "0 * * * *",
                "retention": {"keepLast": 3},
                "storage": "s3",
            },
        }))
        .expect("policy");
        p.spec.hooks = Some(Hooks {
            dumps,
            ..Hooks::default()
        });
        p
    }

    fn dump(name: &str) -> DumpHook {
        DumpHook {
            name: name.into(),
            namespaces: Vec::new(),
            label_selector: None,
            owner: None,
            container: None,
            command: HookCommand::Argv(vec!["mysqldump".into(), "--all-databases".into()]),
            shell: false,
            timeout: crate::model::default_dump_timeout(),
            on_error: HookOnError::FailVolume,
        }
    }

    #[test]
    fn one_pod_per_owner_lowest_ordinal_first() {
        let pods = vec![
            pod("shop", "db-1", Some("StatefulSet/db")),
            pod("shop", "db-0", Some("StatefulSet/db")),
            pod("shop", "mysql-7d9f-abcde", Some("Deployment/mysql")),
            pod("shop", "debug", None),
            pod("other", "mysql-x", Some("Deployment/mysql")),
        ];
        let runs = dump_runs(&policy(vec![dump("all")]), &pods).expect("runs");
        let got: Vec<(&str, &str, &str)> = runs
            .iter()
            .map(|r| (r.namespace.as_str(), r.owner.as_str(), r.pod.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("shop", "deployment-mysql", "mysql-7d9f-abcde"),
                ("shop", "pod-debug", "debug"),
                ("shop", "statefulset-db", "db-0"),
            ]
        );
        assert_eq!(runs[0].container, "mysql");
        assert_eq!(runs[0].command, ["mysqldump", "--all-databases"]);
    }

    #[test]
    fn owner_and_container_are_checked() {
        let pods = vec![
            pod("shop", "mysql-a", Some("Deployment/mysql")),
            pod("shop", "db-0", Some("StatefulSet/db")),
        ];
        let mut h = dump("mysql");
        h.owner = Some(crate::model::OwnerName("Deployment/mysql".into()));
        h.container = Some("nope".into());
        let runs = dump_runs(&policy(vec![h]), &pods).expect("runs");
        assert_eq!(runs.len(), 1);
        assert!(
            runs[0]
                .invalid
                .as_deref()
                .is_some_and(|w| w.contains("\"nope\"") && w.contains("mysql, sidecar")),
            "{:?}",
            runs[0].invalid
        );
    }

    #[test]
    fn paths_name_namespace_owner_and_hook() {
        assert_eq!(
            owner_dir(Some("Deployment/mysql"), "mysql-abc"),
            "deployment-mysql"
        );
        assert_eq!(owner_dir(None, "debug"), "pod-debug");
        assert_eq!(
            artifact_file("shop", "deployment-mysql", "mysql", true),
            "artifacts/shop/deployment-mysql/mysql.zst.age"
        );
        assert_eq!(workload_owner_dir("StatefulSet", "db"), "statefulset-db");
    }
}
