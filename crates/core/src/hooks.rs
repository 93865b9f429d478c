//! Backup exec hooks: which commands run in which containers around the
//! snapshots of a backup, from a policy's `spec.hooks.pods` and from
//! Velero's backup hook annotations on pods. Pure: the caller collects the
//! pods ([`PodInfo`], observed state) and runs what this decides.
//!
//! ```text
//! BackupPolicy.spec.hooks.pods ─┐
//! Running pods (labels, owner,  ├─▶ pod_hooks ─▶ Vec<PodHooks>  (pre and post commands per pod)
//!   containers, annotations) ───┘
//! claims of the backup, pods ──▶ groups ─▶ Vec<Group>  (claims that share pods, snapshotted together)
//! ```
//!
//! A pod that carries Velero's annotations runs those and no policy hook
//! (annotations win for that pod, as in Velero):
//!
//! - `pre.hook.backup.velero.io/{container,command,on-error,timeout}` and
//!   `post.hook.backup.velero.io/…`; the legacy unprefixed
//!   `hook.backup.velero.io/…` keys are a pre hook when no `pre.` command
//!   is given;
//! - `command` is a JSON array (`["/sbin/fsfreeze","--freeze","/data"]`)
//!   or a plain string, which is one program name (no shell);
//! - `on-error`: `Fail` (the default) is `failVolume`, `Continue` is
//!   `continue`; `timeout` a duration (`30s`, `1m30s`; default 30s).
//!
//! A post hook with a pre hook of the same name runs exactly when that pre
//! hook ran (thaw what was frozen); one without runs when the group's
//! snapshots were taken.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::model::{
    BackupPolicy, GroupBy, HookCommand, HookOnError, PodHook, default_hook_timeout,
};
use crate::select::{PatternError, Selection};
use crate::volumes::PodInfo;

/// Prefix of Velero's pre backup hook annotations.
pub const VELERO_PRE: &str = "pre.hook.backup.velero.io/";
/// Prefix of Velero's post backup hook annotations.
pub const VELERO_POST: &str = "post.hook.backup.velero.io/";
/// Prefix of Velero's legacy (pre) backup hook annotations.
pub const VELERO_LEGACY: &str = "hook.backup.velero.io/";
/// The hook name of commands from annotations.
pub const ANNOTATION_HOOK: &str = "annotations";

/// When a hook command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HookPhase {
    /// Before the group's snapshots.
    Pre,
    /// After every snapshot of the group has its handle.
    Post,
}

impl std::fmt::Display for HookPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HookPhase::Pre => "pre",
            HookPhase::Post => "post",
        })
    }
}

/// One command to run in one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecHook {
    /// The policy hook's name, or [`ANNOTATION_HOOK`].
    pub name: String,
    pub phase: HookPhase,
    pub container: String,
    /// The argument list sent to the container runtime.
    pub command: Vec<String>,
    pub timeout: Duration,
    pub on_error: HookOnError,
    /// A KubeVirt VMI to freeze (pre) or unfreeze (post) through virt-api
    /// instead of running `command` ([`crate::kubevirt`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmi: Option<String>,
}

/// The hooks of one pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodHooks {
    pub namespace: String,
    pub pod: String,
    /// The claims the pod mounts.
    pub claims: Vec<String>,
    pub pre: Vec<ExecHook>,
    pub post: Vec<ExecHook>,
    /// Why the pod's hook annotations cannot be run as written: the
    /// backup treats each as a failed pre hook (`failVolume`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub invalid: Vec<String>,
}

/// The argument list of a policy command.
pub fn argv(command: &HookCommand, shell: bool) -> Vec<String> {
    match (command, shell) {
        (HookCommand::Argv(a), false) => a.clone(),
        (HookCommand::Argv(a), true) => vec!["/bin/sh".into(), "-c".into(), a.join(" ")],
        (HookCommand::Line(l), false) => vec![l.clone()],
        (HookCommand::Line(l), true) => vec!["/bin/sh".into(), "-c".into(), l.clone()],
    }
}

/// Whether `s` looks like a shell line rather than one program name (it
/// has blanks or shell syntax), for lint.
pub fn looks_like_shell(s: &str) -> bool {
    s.trim()
        .contains([' ', '\t', '|', ';', '&', '>', '<', '$', '`'])
}

/// Velero's hook annotations of one phase: `Ok(None)` without a command.
fn annotation_hook(
    annotations: &BTreeMap<String, String>,
    prefix: &str,
    phase: HookPhase,
    containers: &[String],
) -> Result<Option<ExecHook>, String> {
    let get = |key: &str| annotations.get(&format!("{prefix}{key}"));
    let Some(raw) = get("command") else {
        return Ok(None);
    };
    let command = parse_command(raw)
        .map_err(|e| format!("annotation {prefix}command ({raw:?}) is not a command: {e}"))?;
    let container = match get("container").filter(|c| !c.is_empty()) {
        Some(c) if containers.is_empty() || containers.contains(c) => c.clone(),
        Some(c) => {
            return Err(format!(
                "annotation {prefix}container names container {c:?}, which the pod does not have (it has {})",
                containers.join(", ")
            ));
        }
        None => first_container(containers)?,
    };
    let on_error = match get("on-error").map(|s| s.trim()) {
        None | Some("") | Some("Fail") => HookOnError::FailVolume,
        Some("Continue") => HookOnError::Continue,
        Some(other) => {
            return Err(format!(
                "annotation {prefix}on-error is {other:?}; Velero's values are Fail and Continue"
            ));
        }
    };
    let timeout = match get("timeout").map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => default_hook_timeout(),
        Some(t) => t.parse::<Duration>().map_err(|e| {
            format!("annotation {prefix}timeout ({t:?}) is not a duration such as 30s or 2m: {e}")
        })?,
    };
    Ok(Some(ExecHook {
        name: ANNOTATION_HOOK.into(),
        phase,
        container,
        command,
        timeout,
        on_error,
        vmi: None,
    }))
}

/// A command annotation: a JSON array of strings, or a plain string (one
/// argument, as Velero reads it).
pub fn parse_command(raw: &str) -> Result<Vec<String>, String> {
    let t = raw.trim();
    let command = if t.starts_with('[') {
        serde_json::from_str::<Vec<String>>(t).map_err(|e| format!("invalid JSON array: {e}"))?
    } else {
        vec![t.to_string()]
    };
    if command.is_empty() || command[0].is_empty() {
        return Err("it is empty".into());
    }
    Ok(command)
}

pub(crate) fn first_container(containers: &[String]) -> Result<String, String> {
    containers
        .first()
        .cloned()
        .ok_or_else(|| "the pod has no containers".to_string())
}

/// Whether any of Velero's backup hook annotations is on the pod.
pub fn has_hook_annotations(annotations: &BTreeMap<String, String>) -> bool {
    annotations.keys().any(|k| {
        k.starts_with(VELERO_PRE) || k.starts_with(VELERO_POST) || k.starts_with(VELERO_LEGACY)
    })
}

/// Velero's hook annotations of a pod with `containers`: its pre and post
/// hook, or why they cannot run.
pub fn annotation_hooks(
    annotations: &BTreeMap<String, String>,
    containers: &[String],
) -> (Option<ExecHook>, Option<ExecHook>, Vec<String>) {
    let mut invalid = Vec::new();
    let mut take = |r: Result<Option<ExecHook>, String>| {
        r.unwrap_or_else(|e| {
            invalid.push(e);
            None
        })
    };
    let mut pre = take(annotation_hook(
        annotations,
        VELERO_PRE,
        HookPhase::Pre,
        containers,
    ));
    if pre.is_none() && !annotations.contains_key(&format!("{VELERO_PRE}command")) {
        pre = take(annotation_hook(
            annotations,
            VELERO_LEGACY,
            HookPhase::Pre,
            containers,
        ));
    }
    let post = take(annotation_hook(
        annotations,
        VELERO_POST,
        HookPhase::Post,
        containers,
    ));
    (pre, post, invalid)
}

/// Whether policy hook `h` selects pod `p` (before `onePerOwner`).
fn selects(h: &PodHook, p: &PodInfo) -> bool {
    selects_pod(
        &h.namespaces,
        h.label_selector.as_ref(),
        h.owner.as_ref(),
        p,
    )
}

/// Whether a hook's namespaces, label selector and owner all select `p`.
pub(crate) fn selects_pod(
    namespaces: &[crate::model::NamespacePattern],
    label_selector: Option<&crate::selector::LabelSelector>,
    owner: Option<&crate::model::OwnerName>,
    p: &PodInfo,
) -> bool {
    let ns_ok = namespaces.is_empty()
        || crate::lint::any_matches(namespaces.iter().map(|n| n.0.as_str()), &p.namespace);
    let labels_ok = label_selector.is_none_or(|s| s.matches(&p.labels));
    let owner_ok = owner.is_none_or(|o| p.owner.as_deref() == Some(o.0.as_str()));
    ns_ok && labels_ok && owner_ok
}

/// The ordinal of a pod name ending in `-N`, for the lowest-ordinal pick.
pub(crate) fn ordinal_key(name: &str) -> (u64, &str) {
    let n = name
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    (n, name)
}

/// The hooks of every Running pod the policy backs up (its namespaces)
/// that has any: Velero's annotations where a pod carries them, else the
/// policy hooks that select it, in the policy's order.
pub fn pod_hooks(policy: &BackupPolicy, pods: &[PodInfo]) -> Result<Vec<PodHooks>, PatternError> {
    let spec = &policy.spec;
    let selection = Selection::new(&spec.include, &spec.exclude)?;
    let running: Vec<&PodInfo> = pods
        .iter()
        .filter(|p| p.phase == "Running" && selection.namespace(&p.namespace))
        .collect();
    let policy_hooks: &[PodHook] = spec.hooks.as_ref().map_or(&[], |h| &h.pods);
    // Per policy hook, the pods it runs in (onePerOwner applied over the
    // pods it selects).
    let chosen: Vec<BTreeSet<(&str, &str)>> = policy_hooks
        .iter()
        .map(|h| {
            let selected = running.iter().filter(|p| selects(h, p));
            if !h.one_per_owner {
                return selected
                    .map(|p| (p.namespace.as_str(), p.name.as_str()))
                    .collect();
            }
            let mut first: BTreeMap<(&str, &str), &PodInfo> = BTreeMap::new();
            let mut out = BTreeSet::new();
            for p in selected {
                match p.owner.as_deref() {
                    None => {
                        out.insert((p.namespace.as_str(), p.name.as_str()));
                    }
                    Some(o) => {
                        let e = first.entry((p.namespace.as_str(), o)).or_insert(p);
                        if ordinal_key(&p.name) < ordinal_key(&e.name) {
                            *e = p;
                        }
                    }
                }
            }
            out.extend(
                first
                    .values()
                    .map(|p| (p.namespace.as_str(), p.name.as_str())),
            );
            out
        })
        .collect();
    let mut out = Vec::new();
    for p in running {
        let mut hooks = PodHooks {
            namespace: p.namespace.clone(),
            pod: p.name.clone(),
            claims: p.volumes.iter().map(|v| v.claim.clone()).collect(),
            pre: Vec::new(),
            post: Vec::new(),
            invalid: Vec::new(),
        };
        if has_hook_annotations(&p.annotations) {
            let (pre, post, invalid) = annotation_hooks(&p.annotations, &p.containers);
            hooks.pre.extend(pre);
            hooks.post.extend(post);
            hooks.invalid = invalid;
        } else {
            for (h, pods) in policy_hooks.iter().zip(&chosen) {
                if !pods.contains(&(p.namespace.as_str(), p.name.as_str())) {
                    continue;
                }
                let container = match &h.container {
                    Some(c) if p.containers.is_empty() || p.containers.contains(c) => c.clone(),
                    Some(c) => {
                        hooks.invalid.push(format!(
                            "hook {} names container {c:?}, which the pod does not have (it has {})",
                            h.name,
                            p.containers.join(", ")
                        ));
                        continue;
                    }
                    None => match first_container(&p.containers) {
                        Ok(c) => c,
                        Err(e) => {
                            hooks.invalid.push(format!("hook {}: {e}", h.name));
                            continue;
                        }
                    },
                };
                let hook = |phase, command: &HookCommand| ExecHook {
                    name: h.name.clone(),
                    phase,
                    container: container.clone(),
                    command: argv(command, h.shell),
                    timeout: h.timeout,
                    on_error: h.on_error,
                    vmi: None,
                };
                hooks
                    .pre
                    .extend(h.pre.as_ref().map(|c| hook(HookPhase::Pre, c)));
                hooks
                    .post
                    .extend(h.post.as_ref().map(|c| hook(HookPhase::Post, c)));
            }
        }
        if !hooks.pre.is_empty() || !hooks.post.is_empty() || !hooks.invalid.is_empty() {
            out.push(hooks);
        }
    }
    Ok(out)
}

/// Claims snapshotted together: the pre hooks of `pods` run before any of
/// `claims` is snapshotted, the post hooks once all of them are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    /// Indexes into the claims given to [`groups`].
    pub claims: Vec<usize>,
    /// Indexes into the hooked pods given to [`groups`].
    pub pods: Vec<usize>,
}

/// The groups of a backup's `claims` (`(namespace, pvc)`): claims that any
/// pod of `all_pods` mounts together are in one group, with the pods of
/// `hooked` that mount any of them; `by` widens a group to the claims of
/// all pods of one owner or one namespace. A claim no pod shares is a
/// group of its own; a hooked pod that mounts none of the claims is in no
/// group.
pub fn groups(
    claims: &[(&str, &str)],
    all_pods: &[PodInfo],
    hooked: &[PodHooks],
    by: GroupBy,
) -> Vec<Group> {
    let index: BTreeMap<(&str, &str), usize> =
        claims.iter().enumerate().map(|(i, c)| (*c, i)).collect();
    let mut parent: Vec<usize> = (0..claims.len()).collect();
    fn find(parent: &mut [usize], i: usize) -> usize {
        let mut r = i;
        while parent[r] != r {
            r = parent[r];
        }
        parent[i] = r;
        r
    }
    let mut union = |mounted: Vec<usize>| {
        for w in mounted.windows(2) {
            let (a, b) = (find(&mut parent, w[0]), find(&mut parent, w[1]));
            if a != b {
                parent[a.max(b)] = a.min(b);
            }
        }
    };
    for p in all_pods {
        union(
            p.volumes
                .iter()
                .filter_map(|v| {
                    index
                        .get(&(p.namespace.as_str(), v.claim.as_str()))
                        .copied()
                })
                .collect(),
        );
    }
    // Widening: the claims of all pods of one owner (or namespace).
    let mut wide: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
    for p in all_pods {
        let key = match by {
            GroupBy::Claims => continue,
            GroupBy::Owner => match &p.owner {
                Some(o) => (p.namespace.as_str(), o.as_str()),
                None => continue,
            },
            GroupBy::Namespace => (p.namespace.as_str(), ""),
        };
        wide.entry(key)
            .or_default()
            .extend(p.volumes.iter().filter_map(|v| {
                index
                    .get(&(p.namespace.as_str(), v.claim.as_str()))
                    .copied()
            }));
    }
    for mounted in wide.into_values() {
        union(mounted);
    }
    for h in hooked {
        union(
            h.claims
                .iter()
                .filter_map(|c| index.get(&(h.namespace.as_str(), c.as_str())).copied())
                .collect(),
        );
    }
    let mut by_root: BTreeMap<usize, Group> = BTreeMap::new();
    for i in 0..claims.len() {
        let r = find(&mut parent, i);
        by_root.entry(r).or_default().claims.push(i);
    }
    for (pi, h) in hooked.iter().enumerate() {
        if let Some(i) = h
            .claims
            .iter()
            .find_map(|c| index.get(&(h.namespace.as_str(), c.as_str())))
        {
            let r = find(&mut parent, *i);
            by_root.entry(r).or_default().pods.push(pi);
        }
    }
    by_root.into_values().collect()
}

pub mod dump;
pub mod level;
pub mod restore;

#[cfg(test)]
mod tests;
