//! KubeVirt rules: what kubevirt-velero-plugin does for virtual machines,
//! on raw JSON and with every change logged per object.
//!
//! ```text
//! plan/backup: VirtualMachines + VMIs ─▶ core::kubevirt::VmInfo (inventory)
//!              ─▶ freeze hooks on launcher pods, refusals
//!              hook step ─▶ freeze / unfreeze (virt-api, subresources.kubevirt.io)
//!              related objects ─▶ a VM's instancetype/preference ControllerRevisions,
//!              the Secrets and ConfigMaps its volumes and access credentials name
//! restore:     restore_rules (DataVolume prePopulated, its claim populatedFor,
//!              MAC addresses, firmware UUID, runStrategy, revision owners)
//!              ─▶ changes ─▶ RestoreItem::changes
//!              order: a VMI owned by a VM and virt-launcher pods are never
//!              created; instancetype revisions are restored before the VM
//! ```
//!
//! Rules are keyed on the objects' kinds: a DataVolume or VirtualMachine
//! only exists in a backup of a cluster that runs KubeVirt.

use std::collections::BTreeSet;

use kube::api::{Api, ApiResource, DynamicObject};
use kube::core::GroupVersionKind;
use lifeboat_core::hooks::{ExecHook, HookPhase};
use lifeboat_core::kubevirt::{self as core, VmInfo, VmiInfo};
use serde_json::{Value, json};
use sha2::Digest;

use crate::hooks::HookOutcome;
use crate::inventory::{InventoryError, list_all};

pub use lifeboat_core::kubevirt::{CDI_GROUP, GROUP, INSTANCETYPE_GROUP};

/// The annotation that tells CDI a DataVolume's claim is already filled.
pub const PRE_POPULATED: &str = "cdi.kubevirt.io/storage.prePopulated";
/// The annotation that tells CDI which DataVolume a claim was filled for.
pub const POPULATED_FOR: &str = "cdi.kubevirt.io/storage.populatedFor";

fn dynamic(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

/// The claims a VM's disks use: `persistentVolumeClaim.claimName` and
/// `dataVolume.name` (a DataVolume's claim has its name).
pub fn disk_claims(vm: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for v in vm
        .pointer("/spec/template/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = v
            .pointer("/persistentVolumeClaim/claimName")
            .or_else(|| v.pointer("/dataVolume/name"))
            .and_then(Value::as_str);
        if let Some(n) = name
            && !out.iter().any(|o| o == n)
        {
            out.push(n.to_string());
        }
    }
    out
}

/// The Secrets and ConfigMaps a VM names (volumes, cloud-init, access
/// credentials): `(resource, name)`.
pub fn referenced_config(vm: &Value) -> BTreeSet<(&'static str, String)> {
    let mut out = BTreeSet::new();
    let spec = vm.pointer("/spec/template/spec");
    let s = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
    for v in spec
        .and_then(|s| s.get("volumes"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out.extend(s(v, "/secret/secretName").map(|n| ("secrets", n)));
        out.extend(s(v, "/configMap/name").map(|n| ("configmaps", n)));
        for ci in ["cloudInitNoCloud", "cloudInitConfigDrive"] {
            for r in ["userDataSecretRef", "networkDataSecretRef"] {
                out.extend(s(v, &format!("/{ci}/{r}/name")).map(|n| ("secrets", n)));
            }
        }
    }
    for c in spec
        .and_then(|s| s.get("accessCredentials"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for kind in ["sshPublicKey", "userPassword"] {
            out.extend(s(c, &format!("/{kind}/source/secret/secretName")).map(|n| ("secrets", n)));
        }
    }
    out
}

/// The ControllerRevisions holding a VM's instancetype and preference.
pub fn revisions(vm: &Value) -> Vec<String> {
    [
        "/spec/instancetype/revisionName",
        "/spec/preference/revisionName",
    ]
    .iter()
    .filter_map(|p| vm.pointer(p).and_then(Value::as_str))
    .filter(|n| !n.is_empty())
    .map(str::to_string)
    .collect()
}

/// The VirtualMachines of the cluster with their VMIs; none where KubeVirt
/// is not installed (404).
pub async fn vms(client: &kube::Client) -> Result<Vec<VmInfo>, InventoryError> {
    let vm_api = dynamic(GROUP, "v1", "VirtualMachine", "virtualmachines");
    let vmi_api = dynamic(
        GROUP,
        "v1",
        "VirtualMachineInstance",
        "virtualmachineinstances",
    );
    let absent = |r: Result<Vec<DynamicObject>, InventoryError>| match r {
        Err(InventoryError::List {
            source: kube::Error::Api(s),
            ..
        }) if s.code == 404 => Ok(Vec::new()),
        r => r,
    };
    let (vms, vmis) = tokio::join!(
        list_all(
            Api::<DynamicObject>::all_with(client.clone(), &vm_api),
            "virtualmachines.kubevirt.io"
        ),
        list_all(
            Api::<DynamicObject>::all_with(client.clone(), &vmi_api),
            "virtualmachineinstances.kubevirt.io"
        ),
    );
    let (vms, vmis) = (absent(vms)?, absent(vmis)?);
    Ok(vms
        .into_iter()
        .map(|vm| {
            let namespace = vm.metadata.namespace.clone().unwrap_or_default();
            let name = vm.metadata.name.clone().unwrap_or_default();
            let vmi = vmis
                .iter()
                .find(|i| {
                    i.metadata.namespace.as_deref() == Some(&namespace)
                        && i.metadata.name.as_deref() == Some(&name)
                })
                .map(|i| VmiInfo {
                    phase: i.data["status"]["phase"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    labels: i.metadata.labels.clone().unwrap_or_default(),
                    annotations: i.metadata.annotations.clone().unwrap_or_default(),
                    agent_connected: i.data["status"]["conditions"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "AgentConnected" && c["status"] == "True")
                    }),
                });
            let value = json!({"spec": vm.data.get("spec").cloned().unwrap_or(Value::Null)});
            VmInfo {
                claims: disk_claims(&value),
                labels: vm.metadata.labels.clone().unwrap_or_default(),
                annotations: vm.metadata.annotations.clone().unwrap_or_default(),
                namespace,
                name,
                vmi,
            }
        })
        .collect())
}

/// Runs a freeze (pre) or unfreeze (post) hook of VMI `hook.vmi` through
/// virt-api, bounded by the hook's timeout.
pub async fn freeze_call(client: &kube::Client, namespace: &str, hook: &ExecHook) -> HookOutcome {
    let started = std::time::Instant::now();
    let vmi = hook.vmi.as_deref().unwrap_or_default();
    let path = core::subresource_path(namespace, vmi, hook.phase);
    let body = match hook.phase {
        HookPhase::Pre => core::freeze_body(lifeboat_core::Duration::from_secs(
            core::UNFREEZE_TIMEOUT_SECS,
        )),
        HookPhase::Post => json!({}),
    };
    let req = http::Request::put(&path)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap_or_default());
    let timeout = std::time::Duration::from_secs(hook.timeout.as_secs().max(1));
    let error = match req {
        Err(e) => Some(format!("cannot build the request {path}: {e}")),
        Ok(req) => match tokio::time::timeout(timeout, client.request_text(req)).await {
            Err(_) => Some(format!("timed out after {}", hook.timeout)),
            Ok(Ok(_)) => None,
            Ok(Err(kube::Error::Api(s))) => Some(format!(
                "virt-api refused the {} of VMI {namespace}/{vmi} ({}): {}",
                if hook.phase == HookPhase::Pre {
                    "freeze"
                } else {
                    "unfreeze"
                },
                s.code,
                s.message
            )),
            Ok(Err(e)) => Some(format!("cannot reach virt-api at {path}: {e}")),
        },
    };
    HookOutcome {
        exit_code: error.is_none().then_some(0),
        stderr: Vec::new(),
        duration: started.elapsed(),
        error,
    }
}

/// Restore-time options of the KubeVirt rules (RestoreRequest
/// `spec.kubevirt`, `lifeboat restore` flags).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreConfig {
    /// Remove the interfaces' `macAddress` (the target assigns new ones).
    pub clear_mac_addresses: bool,
    /// Give each VM a new `firmware.uuid`, derived from `restore_id`.
    pub new_firmware_uuid: bool,
    /// Set each VM's `spec.runStrategy` (replacing `spec.running`).
    pub run_strategy: Option<String>,
    /// The restore's name (the seed of new firmware UUIDs).
    pub restore_id: String,
}

impl RestoreConfig {
    /// From a RestoreRequest's `spec.kubevirt`, for restore `restore_id`.
    pub fn from_request(
        r: &lifeboat_core::model::KubeVirtRestore,
        restore_id: &str,
    ) -> RestoreConfig {
        RestoreConfig {
            clear_mac_addresses: r.clear_mac_addresses,
            new_firmware_uuid: r.new_firmware_uuid,
            run_strategy: r.run_strategy.map(|s| s.to_string()),
            restore_id: restore_id.to_string(),
        }
    }
}

fn owned_by(obj: &Value, kind: &str) -> Option<String> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|r| r["kind"] == kind)
        .and_then(|r| r["name"].as_str())
        .map(str::to_string)
}

fn annotate(obj: &mut Value, key: &str, value: &str) -> bool {
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return false;
    };
    let a = meta.entry("annotations").or_insert_with(|| json!({}));
    if !a.is_object() {
        *a = json!({});
    }
    if a.get(key).and_then(Value::as_str) == Some(value) {
        return false;
    }
    a[key] = json!(value);
    true
}

/// A UUID (version 4 layout) derived from `seed`.
fn derived_uuid(seed: &str) -> String {
    let d = sha2::Sha256::digest(seed.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// The DataVolume that owns a claim, from its owner references.
pub fn data_volume_of(obj: &Value) -> Option<String> {
    owned_by(obj, "DataVolume")
}

/// Applies the KubeVirt restore rules to an object whose server fields
/// were stripped. `with_data`: the claim of this name (the object's, or
/// a DataVolume's) is restored with the backup's data; `data_volume`: the
/// DataVolume that owned a claim in the source. Returns one line per
/// change made.
pub fn restore_rules(
    cfg: &RestoreConfig,
    resource: &str,
    group: &str,
    obj: &mut Value,
    with_data: bool,
    data_volume: Option<&str>,
) -> Vec<String> {
    let mut changes = Vec::new();
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let namespace = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    match (group, resource) {
        (CDI_GROUP, "datavolumes") if with_data && annotate(obj, PRE_POPULATED, &name) => {
            changes.push(format!(
                "annotated {PRE_POPULATED}={name} (its claim is restored with the backup's \
                 data; CDI must not import over it)"
            ));
        }
        ("", "persistentvolumeclaims") if with_data => {
            if let Some(dv) = data_volume
                && annotate(obj, POPULATED_FOR, dv)
            {
                changes.push(format!(
                    "annotated {POPULATED_FOR}={dv} (filled from the backup for DataVolume {dv})"
                ));
            }
        }
        (GROUP, "virtualmachines") => {
            if cfg.clear_mac_addresses
                && let Some(ifaces) = obj
                    .pointer_mut("/spec/template/spec/domain/devices/interfaces")
                    .and_then(Value::as_array_mut)
            {
                for i in ifaces {
                    let iface = i["name"].as_str().unwrap_or_default().to_string();
                    if let Some(m) = i.as_object_mut().and_then(|m| m.remove("macAddress")) {
                        changes.push(format!(
                            "removed macAddress {} of interface {iface} (clearMacAddresses)",
                            m.as_str().unwrap_or_default()
                        ));
                    }
                }
            }
            if cfg.new_firmware_uuid
                && let Some(domain) = obj
                    .pointer_mut("/spec/template/spec/domain")
                    .and_then(Value::as_object_mut)
            {
                let fw = domain.entry("firmware").or_insert_with(|| json!({}));
                let old = fw["uuid"].as_str().unwrap_or_default().to_string();
                let new = derived_uuid(&format!("{}/{namespace}/{name}/{old}", cfg.restore_id));
                fw["uuid"] = json!(new);
                changes.push(if old.is_empty() {
                    format!("set firmware.uuid {new} (newFirmwareUUID)")
                } else {
                    format!("firmware.uuid {old} → {new} (newFirmwareUUID)")
                });
            }
            if let Some(strategy) = &cfg.run_strategy
                && let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut)
            {
                if let Some(r) = spec.remove("running") {
                    changes.push(format!("removed spec.running {r} (runStrategy is set)"));
                }
                let old = spec
                    .get("runStrategy")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                if old.as_deref() != Some(strategy.as_str()) {
                    spec.insert("runStrategy".into(), json!(strategy));
                    changes.push(format!(
                        "spec.runStrategy {} → {strategy}",
                        old.as_deref().unwrap_or("unset")
                    ));
                }
            }
        }
        _ => {}
    }
    changes
}

/// Whether a ControllerRevision holds a VM's instancetype or preference
/// (restored, unlike other ControllerRevisions).
pub fn is_vm_revision(obj: &Value) -> bool {
    owned_by(obj, "VirtualMachine").is_some()
        || obj
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .is_some_and(|l| l.keys().any(|k| k.starts_with("instancetype.kubevirt.io/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rules_edit_only_what_is_asked() {
        let vm = json!({"metadata": {"name": "fedora"}, "spec": {"running": true, "template": {"spec": {
            "domain": {"devices": {"interfaces": [{"name": "default", "masquerade": {}, "macAddress": "02:00:00:aa:bb:cc"}]},
                       "firmware": {"uuid": "5d307ca9-b3ef-428c-8861-06e72d69f223"}},
            "volumes": [{"name": "root", "dataVolume": {"name": "fedora-root"}},
                        {"name": "data", "persistentVolumeClaim": {"claimName": "fedora-data"}},
                        {"name": "ci", "cloudInitNoCloud": {"userDataSecretRef": {"name": "fedora-ci"}}}]}}}});
        let mut plain = vm.clone();
        assert!(
            restore_rules(
                &RestoreConfig::default(),
                "virtualmachines",
                GROUP,
                &mut plain,
                false,
                None
            )
            .is_empty()
        );
        assert_eq!(plain, vm);
        let cfg = RestoreConfig {
            clear_mac_addresses: true,
            new_firmware_uuid: true,
            run_strategy: Some("Halted".into()),
            restore_id: "r1".into(),
        };
        let mut edited = vm.clone();
        let changes = restore_rules(&cfg, "virtualmachines", GROUP, &mut edited, false, None);
        assert_eq!(changes.len(), 4, "{changes:?}");
        let domain = &edited["spec"]["template"]["spec"]["domain"];
        assert!(
            domain["devices"]["interfaces"][0]
                .get("macAddress")
                .is_none()
        );
        assert_eq!(domain["devices"]["interfaces"][0]["masquerade"], json!({}));
        let uuid = domain["firmware"]["uuid"].as_str().unwrap();
        assert_ne!(uuid, "5d307ca9-b3ef-428c-8861-06e72d69f223");
        assert_eq!(uuid.len(), 36);
        assert_eq!(edited["spec"]["runStrategy"], "Halted");
        assert!(edited["spec"].get("running").is_none());
        assert_eq!(disk_claims(&vm), ["fedora-root", "fedora-data"]);
        assert_eq!(
            referenced_config(&vm),
            [("secrets", "fedora-ci".to_string())].into()
        );
    }

    #[test]
    fn cdi_annotations_keep_cdi_from_importing() {
        let cfg = RestoreConfig::default();
        let dv = json!({"metadata": {"name": "fedora-root"}, "spec": {"source": {"http": {"url": "https://x"}}}});
        let mut filled = dv.clone();
        assert_eq!(
            restore_rules(&cfg, "datavolumes", CDI_GROUP, &mut filled, true, None).len(),
            1
        );
        assert_eq!(
            filled["metadata"]["annotations"][PRE_POPULATED],
            "fedora-root"
        );
        // Objects only: CDI imports the disk again.
        let mut empty = dv.clone();
        assert!(restore_rules(&cfg, "datavolumes", CDI_GROUP, &mut empty, false, None).is_empty());
        assert_eq!(empty, dv);
        let claim = json!({"metadata": {"name": "fedora-root",
            "ownerReferences": [{"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume", "name": "fedora-root"}]}});
        let owner = data_volume_of(&claim);
        assert_eq!(owner.as_deref(), Some("fedora-root"));
        let mut with = claim.clone();
        assert_eq!(
            restore_rules(
                &cfg,
                "persistentvolumeclaims",
                "",
                &mut with,
                true,
                owner.as_deref()
            )
            .len(),
            1
        );
        assert_eq!(
            with["metadata"]["annotations"][POPULATED_FOR],
            "fedora-root"
        );
        let mut without = claim.clone();
        assert!(
            restore_rules(
                &cfg,
                "persistentvolumeclaims",
                "",
                &mut without,
                false,
                owner.as_deref()
            )
            .is_empty()
        );
    }
}
