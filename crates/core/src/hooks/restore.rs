//! Restore hooks: what runs in the pods of each restored workload, from a
//! RestoreRequest's `spec.hooks.pods` and from Velero's restore hook
//! annotations on the restored pod template. Pure: the engine describes
//! each restored Deployment, StatefulSet or bare Pod ([`Workload`]) and
//! runs what this decides.
//!
//! ```text
//! RestoreRequest.spec.hooks.pods ─┐
//! restored workload (source ns,   ├─▶ workload_hooks ─▶ WorkloadHooks
//!   kind/name, template labels,   │     init: containers added to the template
//!   annotations, containers) ─────┘     exec: commands run in each new pod
//! ```
//!
//! lifeboat restores a workload, not the pods its controller made, so the
//! annotations are read from the workload's pod template (which is where
//! the pods got them). A template with any of Velero's restore annotations
//! runs those and no request hook (annotations win, as in Velero):
//!
//! - `post.hook.restore.velero.io/{container,command,on-error,exec-timeout,
//!   wait-timeout,wait-for-ready}`: an exec hook; `on-error` `Continue`
//!   (the default) or `Fail`; `exec-timeout` default 30s; `wait-timeout`
//!   default 10m — Velero waits for ever without one, lifeboat never does,
//!   and `0` also means the default;
//! - `init.hook.restore.velero.io/{container-image,container-name,command}`:
//!   an init container (name default `restore-init`).

use std::collections::BTreeMap;

use crate::duration::Duration;
use crate::hooks::{ExecHook, HookPhase, argv, parse_command};
use crate::model::{
    HookOnError, OwnerName, RestoreHookOnError, RestorePodHook, default_hook_timeout,
    default_wait_timeout,
};

/// Prefix of Velero's exec restore hook annotations.
pub const VELERO_POST_RESTORE: &str = "post.hook.restore.velero.io/";
/// Prefix of Velero's init restore hook annotations.
pub const VELERO_INIT_RESTORE: &str = "init.hook.restore.velero.io/";
/// The hook name of hooks from annotations.
pub const ANNOTATION_HOOK: &str = super::ANNOTATION_HOOK;
/// The default name of an init container from annotations.
pub const ANNOTATION_INIT_NAME: &str = "restore-init";

/// A restored workload, as the hooks see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workload {
    /// The SOURCE namespace.
    pub namespace: String,
    /// `Deployment`, `StatefulSet` or `Pod`.
    pub kind: String,
    pub name: String,
    /// The pod template's labels and annotations.
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The template's containers, in order.
    pub containers: Vec<String>,
}

/// A command run in each new pod of a workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreExec {
    /// The request hook's name, or [`ANNOTATION_HOOK`].
    pub name: String,
    pub container: String,
    pub command: Vec<String>,
    pub exec_timeout: Duration,
    pub wait_timeout: Duration,
    pub wait_for_ready: bool,
    pub on_error: RestoreHookOnError,
    /// The dump hook whose artifact is streamed into the command's stdin.
    pub stdin_from: Option<String>,
}

impl RestoreExec {
    /// As the exec runner takes it.
    pub fn exec_hook(&self) -> ExecHook {
        ExecHook {
            name: self.name.clone(),
            phase: HookPhase::Post,
            container: self.container.clone(),
            command: self.command.clone(),
            timeout: self.exec_timeout,
            on_error: match self.on_error {
                RestoreHookOnError::Continue => HookOnError::Continue,
                RestoreHookOnError::Fail => HookOnError::FailVolume,
            },
            vmi: None,
        }
    }
}

/// An init container added to a workload's template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitContainer {
    /// The request hook's name, or [`ANNOTATION_HOOK`].
    pub hook: String,
    /// The container's name.
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    /// How long to wait for a pod to run it.
    pub wait_timeout: Duration,
    pub on_error: RestoreHookOnError,
}

/// The restore hooks of one workload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadHooks {
    pub init: Vec<InitContainer>,
    pub exec: Vec<RestoreExec>,
    /// Hooks that cannot run as written, and why (recorded as failed).
    pub invalid: Vec<String>,
}

impl WorkloadHooks {
    pub fn is_empty(&self) -> bool {
        self.init.is_empty() && self.exec.is_empty() && self.invalid.is_empty()
    }

    /// How long the engine may wait for the workload's pods: the longest
    /// `waitTimeout` of its hooks.
    pub fn wait_timeout(&self) -> Duration {
        self.init
            .iter()
            .map(|i| i.wait_timeout)
            .chain(self.exec.iter().map(|e| e.wait_timeout))
            .max_by_key(|d| d.as_secs())
            .unwrap_or_else(default_wait_timeout)
    }
}

/// Whether any of Velero's restore hook annotations is on the template.
pub fn has_restore_annotations(annotations: &BTreeMap<String, String>) -> bool {
    annotations
        .keys()
        .any(|k| k.starts_with(VELERO_POST_RESTORE) || k.starts_with(VELERO_INIT_RESTORE))
}

fn duration_annotation(
    annotations: &BTreeMap<String, String>,
    key: &str,
    default: Duration,
) -> Result<Duration, String> {
    match annotations
        .get(&format!("{VELERO_POST_RESTORE}{key}"))
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    {
        None => Ok(default),
        // Go's time.ParseDuration takes a bare 0; Velero's "no limit".
        Some("0") => Ok(default),
        Some(t) => {
            let d = t.parse::<Duration>().map_err(|e| {
                format!(
                    "annotation {VELERO_POST_RESTORE}{key} ({t:?}) is not a duration such as 30s or 10m: {e}"
                )
            })?;
            Ok(if d.as_secs() == 0 { default } else { d })
        }
    }
}

fn container_of(
    name: &str,
    wanted: Option<&String>,
    containers: &[String],
) -> Result<String, String> {
    match wanted.filter(|c| !c.is_empty()) {
        Some(c) if containers.is_empty() || containers.contains(c) => Ok(c.clone()),
        Some(c) => Err(format!(
            "{name} names container {c:?}, which the pod template does not have (it has {})",
            containers.join(", ")
        )),
        None => containers
            .first()
            .cloned()
            .ok_or_else(|| format!("{name}: the pod template has no containers")),
    }
}

/// The hooks of Velero's restore annotations.
fn annotation_hooks(w: &Workload) -> WorkloadHooks {
    let a = &w.annotations;
    let mut out = WorkloadHooks::default();
    let get = |prefix: &str, key: &str| a.get(&format!("{prefix}{key}"));
    if let Some(raw) = get(VELERO_POST_RESTORE, "command") {
        let exec = (|| {
            let command = parse_command(raw).map_err(|e| {
                format!("annotation {VELERO_POST_RESTORE}command ({raw:?}) is not a command: {e}")
            })?;
            let container = container_of(
                &format!("annotation {VELERO_POST_RESTORE}container"),
                get(VELERO_POST_RESTORE, "container"),
                &w.containers,
            )?;
            let on_error = match get(VELERO_POST_RESTORE, "on-error").map(|s| s.trim()) {
                None | Some("") | Some("Continue") => RestoreHookOnError::Continue,
                Some("Fail") => RestoreHookOnError::Fail,
                Some(other) => {
                    return Err(format!(
                        "annotation {VELERO_POST_RESTORE}on-error is {other:?}; Velero's values are Continue and Fail"
                    ));
                }
            };
            let wait_for_ready = match get(VELERO_POST_RESTORE, "wait-for-ready").map(|s| s.trim())
            {
                None | Some("") | Some("false") => false,
                Some("true") => true,
                Some(other) => {
                    return Err(format!(
                        "annotation {VELERO_POST_RESTORE}wait-for-ready is {other:?}; write true or false"
                    ));
                }
            };
            Ok(RestoreExec {
                name: ANNOTATION_HOOK.into(),
                container,
                command,
                exec_timeout: duration_annotation(a, "exec-timeout", default_hook_timeout())?,
                wait_timeout: duration_annotation(a, "wait-timeout", default_wait_timeout())?,
                wait_for_ready,
                on_error,
                stdin_from: None,
            })
        })();
        match exec {
            Ok(e) => out.exec.push(e),
            Err(e) => out.invalid.push(e),
        }
    }
    let image = get(VELERO_INIT_RESTORE, "container-image").filter(|s| !s.trim().is_empty());
    let command = get(VELERO_INIT_RESTORE, "command");
    match (image, command) {
        (Some(image), Some(raw)) => match parse_command(raw) {
            Ok(command) => out.init.push(InitContainer {
                hook: ANNOTATION_HOOK.into(),
                name: get(VELERO_INIT_RESTORE, "container-name")
                    .filter(|s| !s.trim().is_empty())
                    .cloned()
                    .unwrap_or_else(|| ANNOTATION_INIT_NAME.into()),
                image: image.trim().to_string(),
                command,
                wait_timeout: default_wait_timeout(),
                on_error: RestoreHookOnError::Continue,
            }),
            Err(e) => out.invalid.push(format!(
                "annotation {VELERO_INIT_RESTORE}command ({raw:?}) is not a command: {e}"
            )),
        },
        (None, None) => {}
        (None, Some(_)) => out.invalid.push(format!(
            "annotation {VELERO_INIT_RESTORE}command is set without {VELERO_INIT_RESTORE}container-image; \
             add the image the init container runs"
        )),
        (Some(_), None) => out.invalid.push(format!(
            "annotation {VELERO_INIT_RESTORE}container-image is set without {VELERO_INIT_RESTORE}command; \
             add the command the init container runs"
        )),
    }
    out
}

/// Whether request hook `h` selects workload `w`.
pub fn selects(h: &RestorePodHook, w: &Workload) -> bool {
    let ns_ok = h.namespaces.is_empty()
        || crate::lint::any_matches(h.namespaces.iter().map(|n| n.0.as_str()), &w.namespace);
    let labels_ok = h
        .label_selector
        .as_ref()
        .is_none_or(|s| s.matches(&w.labels));
    let owner_ok = h.owner.as_ref().is_none_or(|o: &OwnerName| {
        let (kind, name) = o.parts();
        kind == w.kind && name == w.name
    });
    ns_ok && labels_ok && owner_ok
}

/// The restore hooks of workload `w`: Velero's annotations where its
/// template carries them, else the request's hooks that select it, in
/// the request's order.
pub fn workload_hooks(hooks: &[RestorePodHook], w: &Workload) -> WorkloadHooks {
    if has_restore_annotations(&w.annotations) {
        return annotation_hooks(w);
    }
    let mut out = WorkloadHooks::default();
    for h in hooks.iter().filter(|h| selects(h, w)) {
        if let Some(init) = &h.init {
            out.init.push(InitContainer {
                hook: h.name.clone(),
                name: init
                    .container_name
                    .clone()
                    .unwrap_or_else(|| format!("restore-hook-{}", h.name)),
                image: init.image.clone(),
                command: argv(&init.command, h.shell),
                wait_timeout: h.wait_timeout,
                on_error: h.on_error,
            });
        }
        if let Some(command) = &h.command {
            match container_of(
                &format!("hook {}", h.name),
                h.container.as_ref(),
                &w.containers,
            ) {
                Ok(container) => out.exec.push(RestoreExec {
                    name: h.name.clone(),
                    container,
                    command: argv(command, h.shell),
                    exec_timeout: h.exec_timeout,
                    wait_timeout: h.wait_timeout,
                    wait_for_ready: h.wait_for_ready,
                    on_error: h.on_error,
                    stdin_from: h.stdin_from.as_ref().map(|s| s.artifact.clone()),
                }),
                Err(e) => out.invalid.push(e),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn workload(annotations: &[(&str, &str)]) -> Workload {
        Workload {
            namespace: "shop".into(),
            kind: "Deployment".into(),
            name: "mysql".into(),
            labels: [("app".to_string(), "mysql".to_string())].into(),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            containers: vec!["mysql".into(), "sidecar".into()],
        }
    }

    fn hooks(v: serde_json::Value) -> Vec<RestorePodHook> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn velero_annotations_give_an_exec_and_an_init_hook_with_bounded_defaults() {
        let w = workload(&[
            (
                "post.hook.restore.velero.io/command",
                r#"["/bin/warm","--all"]"#,
            ),
            ("post.hook.restore.velero.io/container", "sidecar"),
            ("post.hook.restore.velero.io/on-error", "Fail"),
            ("post.hook.restore.velero.io/wait-timeout", "0"),
            ("post.hook.restore.velero.io/wait-for-ready", "true"),
            ("init.hook.restore.velero.io/container-image", "busybox:1"),
            (
                "init.hook.restore.velero.io/command",
                r#"["chown","-R","27","/data"]"#,
            ),
        ]);
        // A request hook selecting it too is ignored: annotations win.
        let h = hooks(json!([{"name": "x", "command": ["true"]}]));
        let out = workload_hooks(&h, &w);
        assert_eq!(out.invalid, Vec::<String>::new());
        assert_eq!(
            out.exec,
            [RestoreExec {
                name: "annotations".into(),
                container: "sidecar".into(),
                command: vec!["/bin/warm".into(), "--all".into()],
                exec_timeout: Duration::from_secs(30),
                wait_timeout: Duration::from_secs(600),
                wait_for_ready: true,
                on_error: RestoreHookOnError::Fail,
                stdin_from: None,
            }]
        );
        assert_eq!(out.init.len(), 1);
        assert_eq!(out.init[0].name, "restore-init");
        assert_eq!(out.init[0].image, "busybox:1");
        assert_eq!(out.init[0].command, ["chown", "-R", "27", "/data"]);
    }

    #[test]
    fn bad_annotations_are_reported_not_run() {
        let w = workload(&[
            ("post.hook.restore.velero.io/command", "warm"),
            ("post.hook.restore.velero.io/container", "nope"),
            ("init.hook.restore.velero.io/command", "true"),
        ]);
        let out = workload_hooks(&[], &w);
        assert!(out.exec.is_empty() && out.init.is_empty());
        assert_eq!(out.invalid.len(), 2, "{:?}", out.invalid);
        assert!(
            out.invalid[0].contains("container \"nope\""),
            "{:?}",
            out.invalid
        );
        assert!(
            out.invalid[1].contains("container-image"),
            "{:?}",
            out.invalid
        );
    }

    #[test]
    fn request_hooks_select_by_owner_namespace_and_labels() {
        let h = hooks(json!([
            {"name": "other", "owner": "Deployment/web", "command": ["a"]},
            {"name": "ns", "namespaces": ["sho*"], "command": "warm up", "shell": true,
             "waitTimeout": "2s", "onError": "fail"},
            {"name": "labels", "labelSelector": {"matchLabels": {"app": "web"}}, "command": ["b"]},
            {"name": "seed", "owner": "Deployment/mysql", "container": "sidecar",
             "init": {"image": "busybox", "command": ["seed"]}},
        ]));
        let out = workload_hooks(&h, &workload(&[]));
        assert_eq!(
            out.exec.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            ["ns"]
        );
        assert_eq!(out.exec[0].command, ["/bin/sh", "-c", "warm up"]);
        assert_eq!(out.exec[0].container, "mysql");
        assert_eq!(out.exec[0].wait_timeout, Duration::from_secs(2));
        assert_eq!(out.exec[0].on_error, RestoreHookOnError::Fail);
        assert_eq!(out.init[0].name, "restore-hook-seed");
        assert_eq!(out.wait_timeout(), Duration::from_secs(600));
    }
}
