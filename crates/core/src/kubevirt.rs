//! KubeVirt virtual machines in a backup, decided on the observed
//! inventory (pure: the caller lists the VMs and VMIs).
//!
//! ```text
//! VmInfo (VM, its VMI, disk claims) ─┬─▶ freeze_hooks ─▶ the launcher pod's PodHooks:
//!                                    │     freeze (pre) / unfreeze (post) through virt-api
//!                                    └─▶ refusals ─▶ a running VM held without its disks,
//!                                          or disks without the VM (plan and backup refuse)
//! ```
//!
//! The freeze is one more pre hook of the group of claims the VM's
//! `virt-launcher` pod mounts, so it runs in the hook ordering (freeze →
//! snapshots → unfreeze once every handle exists, unfreeze always) and is
//! recorded before it runs like any pre hook. It replaces the
//! `virt-freezer` hook annotations KubeVirt puts on launcher pods, so a VM
//! is never frozen twice.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::hooks::{ExecHook, HookPhase, PodHooks};
use crate::model::{BackupPolicy, HookOnError};
use crate::select::{PatternError, Selection};
use crate::volumes::{PodInfo, VolumeDecision};

/// The API group of VirtualMachines and VirtualMachineInstances.
pub const GROUP: &str = "kubevirt.io";
/// The API group of DataVolumes.
pub const CDI_GROUP: &str = "cdi.kubevirt.io";
/// The API group of instance types and preferences.
pub const INSTANCETYPE_GROUP: &str = "instancetype.kubevirt.io";
/// virt-api's aggregated group (freeze, unfreeze).
pub const SUBRESOURCES_GROUP: &str = "subresources.kubevirt.io";
/// Annotation (on the VM, its VMI or the launcher pod) that turns the
/// freeze off for one VM.
pub const SKIP_BACKUP_HOOKS: &str = "kubevirt.io/skip-backup-hooks";
/// The name of the freeze hook in records and plans.
pub const FREEZE_HOOK: &str = "kubevirt-freeze";
/// The container KubeVirt runs the guest in (recorded with the hook).
pub const COMPUTE: &str = "compute";
/// How long the guest stays frozen if no unfreeze comes (KubeVirt thaws
/// by itself after this).
pub const UNFREEZE_TIMEOUT_SECS: u64 = 300;

/// A VirtualMachine as a backup sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmInfo {
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The claims of its disks (`persistentVolumeClaim.claimName`, a
    /// DataVolume's name), in its template's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<String>,
    /// Its VirtualMachineInstance, when one exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmi: Option<VmiInfo>,
}

/// A VirtualMachineInstance (same name and namespace as its VM).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmiInfo {
    /// `status.phase`.
    pub phase: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The `AgentConnected` condition is `True` (a guest agent answers).
    #[serde(default)]
    pub agent_connected: bool,
}

impl VmInfo {
    /// Whether the VM runs (its VMI is `Running`).
    pub fn running(&self) -> bool {
        self.vmi.as_ref().is_some_and(|i| i.phase == "Running")
    }

    fn skips_hooks(&self, pod: Option<&PodInfo>) -> bool {
        let set = |a: &BTreeMap<String, String>| {
            a.get(SKIP_BACKUP_HOOKS)
                .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        };
        set(&self.annotations)
            || self.vmi.as_ref().is_some_and(|i| set(&i.annotations))
            || pod.is_some_and(|p| set(&p.annotations))
    }
}

/// Whether a pod is the `virt-launcher` pod of VMI `name`.
pub fn is_launcher_of(pod: &PodInfo, name: &str) -> bool {
    pod.owner.as_deref() == Some(&format!("VirtualMachineInstance/{name}"))
        || (pod.labels.get("kubevirt.io").map(String::as_str) == Some("virt-launcher")
            && pod.labels.get("vm.kubevirt.io/name").map(String::as_str) == Some(name))
}

/// Whether a hook is one of the `virt-freezer` commands KubeVirt
/// annotates launcher pods with.
fn is_virt_freezer(h: &ExecHook) -> bool {
    h.command
        .first()
        .is_some_and(|c| c.rsplit('/').next() == Some("virt-freezer"))
}

/// The path of virt-api's freeze or unfreeze of a VMI.
pub fn subresource_path(namespace: &str, vmi: &str, phase: HookPhase) -> String {
    let sub = match phase {
        HookPhase::Pre => "freeze",
        HookPhase::Post => "unfreeze",
    };
    format!(
        "/apis/{SUBRESOURCES_GROUP}/v1/namespaces/{namespace}/virtualmachineinstances/{vmi}/{sub}"
    )
}

fn api_hook(namespace: &str, vmi: &str, phase: HookPhase) -> ExecHook {
    ExecHook {
        name: FREEZE_HOOK.into(),
        phase,
        container: COMPUTE.into(),
        command: vec![format!("PUT {}", subresource_path(namespace, vmi, phase))],
        timeout: crate::model::default_hook_timeout(),
        on_error: HookOnError::FailVolume,
        vmi: Some(vmi.into()),
    }
}

/// A warning about one VM's freeze.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmWarning {
    pub namespace: String,
    pub vm: String,
    /// Its launcher pod.
    pub pod: String,
    pub message: String,
}

/// Puts the freeze of each running VM the policy backs up on its launcher
/// pod's hooks (adding the pod to `hooked` when it had none), in place of
/// KubeVirt's `virt-freezer` annotations. Returns warnings per VM
/// (`(namespace, name)`): a VM without a guest agent is not frozen (its
/// snapshots are crash-consistent).
pub fn freeze_hooks(
    policy: &BackupPolicy,
    pods: &[PodInfo],
    vms: &[VmInfo],
    hooked: &mut Vec<PodHooks>,
) -> Result<Vec<VmWarning>, PatternError> {
    let selection = Selection::new(&policy.spec.include, &policy.spec.exclude)?;
    let mut warnings = Vec::new();
    for vm in vms
        .iter()
        .filter(|v| v.running() && selection.namespace(&v.namespace))
    {
        let Some(pod) = pods.iter().find(|p| {
            p.namespace == vm.namespace && p.phase == "Running" && is_launcher_of(p, &vm.name)
        }) else {
            continue;
        };
        let i = match hooked
            .iter()
            .position(|h| h.namespace == pod.namespace && h.pod == pod.name)
        {
            Some(i) => i,
            None => {
                hooked.push(PodHooks {
                    namespace: pod.namespace.clone(),
                    pod: pod.name.clone(),
                    claims: pod.volumes.iter().map(|v| v.claim.clone()).collect(),
                    pre: Vec::new(),
                    post: Vec::new(),
                    invalid: Vec::new(),
                });
                hooked.len() - 1
            }
        };
        let h = &mut hooked[i];
        // Never freeze twice: the API freeze replaces virt-freezer.
        h.pre.retain(|x| !is_virt_freezer(x));
        h.post.retain(|x| !is_virt_freezer(x));
        let agent = vm.vmi.as_ref().is_some_and(|i| i.agent_connected);
        if vm.skips_hooks(Some(pod)) {
            // Honoured as KubeVirt does: no freeze for this VM.
        } else if !agent {
            warnings.push(VmWarning {
                namespace: vm.namespace.clone(),
                vm: vm.name.clone(),
                pod: pod.name.clone(),
                message: format!(
                    "VM {}/{} has no guest agent connected: it is not frozen, its disks' \
                     snapshots are crash-consistent (install qemu-guest-agent in the guest \
                     for application-consistent ones)",
                    vm.namespace, vm.name
                ),
            });
        } else {
            h.pre
                .insert(0, api_hook(&vm.namespace, &vm.name, HookPhase::Pre));
            h.post
                .insert(0, api_hook(&vm.namespace, &vm.name, HookPhase::Post));
        }
    }
    hooked.retain(|h| !h.pre.is_empty() || !h.post.is_empty() || !h.invalid.is_empty());
    Ok(warnings)
}

/// The freeze request's body: how long KubeVirt keeps the guest frozen
/// without an unfreeze.
pub fn freeze_body(unfreeze_timeout: Duration) -> serde_json::Value {
    serde_json::json!({"unfreezeTimeout": unfreeze_timeout.to_string()})
}

/// Why a backup of `policy` is refused: a running VM it holds (its VM or
/// VMI object) without the data of all its disks, or disks it holds
/// without the VM — either restores a VM that does not match its disks.
/// `decisions` are the volume decisions of the same policy.
pub fn refusals(
    policy: &BackupPolicy,
    vms: &[VmInfo],
    decisions: &[VolumeDecision],
) -> Result<Vec<String>, PatternError> {
    let selection = Selection::new(&policy.spec.include, &policy.spec.exclude)?;
    let mut out = Vec::new();
    for vm in vms.iter().filter(|v| v.running()) {
        if !selection.namespace(&vm.namespace) || vm.claims.is_empty() {
            continue;
        }
        let vm_held = selection.resource("virtualmachines", GROUP) && selection.labels(&vm.labels);
        let vmi_held = vm.vmi.as_ref().is_some_and(|i| {
            selection.resource("virtualmachineinstances", GROUP) && selection.labels(&i.labels)
        });
        let (held, missing): (Vec<&String>, Vec<&String>) = vm.claims.iter().partition(|c| {
            decisions
                .iter()
                .any(|d| d.namespace == vm.namespace && &d.pvc == *c && d.is_protected())
        });
        let what = match (vm_held, vmi_held) {
            (true, true) => "its VirtualMachine and VirtualMachineInstance",
            (true, false) => "its VirtualMachine",
            (false, true) => "its VirtualMachineInstance",
            (false, false) => "",
        };
        let list = |v: &[&String]| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
        if (vm_held || vmi_held) && !missing.is_empty() {
            out.push(format!(
                "VM {}/{} is running and the backup holds {what} but not the data of its disks \
                 {}: a restore would start it on empty or missing disks; select its claims \
                 (include persistentvolumeclaims and their labels) or exclude the VM",
                vm.namespace,
                vm.name,
                list(&missing)
            ));
        } else if !vm_held && !vmi_held && !held.is_empty() {
            out.push(format!(
                "VM {}/{} is running and the backup holds its disks {} but neither its \
                 VirtualMachine nor its VirtualMachineInstance: the disks could not be \
                 restored as the VM's; include virtualmachines.kubevirt.io (and its labels) \
                 or exclude the disks",
                vm.namespace,
                vm.name,
                list(&held)
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volumes::PodClaimVolume;
    use serde_json::json;

    fn policy(namespaces: &[&str]) -> BackupPolicy {
        serde_json::from_value(json!({
            "apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupPolicy",
            "metadata": {"name": "p"},
            "spec": {"clusters": {"names": ["c"]}, "include": {"namespaces": namespaces},
                     "schedule": "0 0 * * *", "retention": {"keepDaily": 7}, "storage": "s3"},
        }))
        .unwrap()
    }

    fn launcher(annotations: &[(&str, &str)]) -> PodInfo {
        PodInfo {
            namespace: "vms".into(),
            name: "virt-launcher-fedora-x".into(),
            phase: "Running".into(),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            volumes: ["root", "data"]
                .iter()
                .map(|c| PodClaimVolume {
                    name: c.to_string(),
                    claim: format!("fedora-{c}"),
                })
                .collect(),
            owner: Some("VirtualMachineInstance/fedora".into()),
            containers: vec!["compute".into()],
            ..PodInfo::default()
        }
    }

    fn vm(agent: bool, annotations: &[(&str, &str)]) -> VmInfo {
        VmInfo {
            namespace: "vms".into(),
            name: "fedora".into(),
            claims: vec!["fedora-root".into(), "fedora-data".into()],
            vmi: Some(VmiInfo {
                phase: "Running".into(),
                agent_connected: agent,
                annotations: annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..VmiInfo::default()
            }),
            ..VmInfo::default()
        }
    }

    const FREEZER: &[(&str, &str)] = &[
        ("pre.hook.backup.velero.io/container", "compute"),
        (
            "pre.hook.backup.velero.io/command",
            r#"["/usr/bin/virt-freezer", "--freeze", "--name", "fedora", "--namespace", "vms"]"#,
        ),
        (
            "post.hook.backup.velero.io/command",
            r#"["/usr/bin/virt-freezer", "--unfreeze", "--name", "fedora", "--namespace", "vms"]"#,
        ),
    ];

    fn hooks_of(p: &BackupPolicy, pods: &[PodInfo], vms: &[VmInfo]) -> (Vec<PodHooks>, usize) {
        let mut hooked = crate::hooks::pod_hooks(p, pods).unwrap();
        let warnings = freeze_hooks(p, pods, vms, &mut hooked).unwrap();
        (hooked, warnings.len())
    }

    #[test]
    fn the_api_freeze_replaces_virt_freezer() {
        let pods = [launcher(FREEZER)];
        let (hooked, warnings) = hooks_of(&policy(&["vms"]), &pods, &[vm(true, &[])]);
        assert_eq!(warnings, 0);
        assert_eq!(hooked.len(), 1);
        let h = &hooked[0];
        assert_eq!(h.claims, ["fedora-root", "fedora-data"]);
        assert_eq!(h.pre.len(), 1, "{:?}", h.pre);
        assert_eq!(h.post.len(), 1, "{:?}", h.post);
        assert_eq!(h.pre[0].vmi.as_deref(), Some("fedora"));
        assert_eq!(
            h.pre[0].name, h.post[0].name,
            "the unfreeze thaws the freeze"
        );
        assert!(h.pre[0].command[0].ends_with("/virtualmachineinstances/fedora/freeze"));
        assert!(h.post[0].command[0].ends_with("/virtualmachineinstances/fedora/unfreeze"));
        // Without annotations the launcher pod gets the freeze as well.
        let (hooked, _) = hooks_of(&policy(&["vms"]), &[launcher(&[])], &[vm(true, &[])]);
        assert_eq!(hooked[0].pre[0].name, FREEZE_HOOK);
    }

    #[test]
    fn no_agent_warns_skip_annotation_and_other_namespaces_do_nothing() {
        let pods = [launcher(FREEZER)];
        let (hooked, warnings) = hooks_of(&policy(&["vms"]), &pods, &[vm(false, &[])]);
        assert_eq!(warnings, 1);
        assert!(hooked.is_empty(), "virt-freezer would fail too: {hooked:?}");
        let skip = [(SKIP_BACKUP_HOOKS, "true")];
        let (hooked, warnings) = hooks_of(&policy(&["vms"]), &pods, &[vm(true, &skip)]);
        assert_eq!((hooked.len(), warnings), (0, 0));
        let (hooked, _) = hooks_of(&policy(&["other"]), &pods, &[vm(true, &[])]);
        assert!(hooked.is_empty());
        // A stopped VM is not frozen.
        let mut stopped = vm(true, &[]);
        stopped.vmi = None;
        let (hooked, _) = hooks_of(&policy(&["vms"]), &[launcher(&[])], &[stopped]);
        assert!(hooked.is_empty());
    }
}
