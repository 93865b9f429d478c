//! Volumes as a kubelet lays them out on the node, under the data
//! directory (`<data>` stands for the node's `/`):
//!
//! ```text
//! <data>/var/lib/kubelet/pods/<pod-uid>/
//!   volumes/kubernetes.io~csi/<pv>/mount      ─▶ <data>/volumes/<pv>/   (CSI PVs)
//!   volumes/kubernetes.io~csi/<pv>/vol_data.json
//!   volumes/kubernetes.io~nfs/<pv>            ─▶ <data>/volumes/<pv>/   (nfs PVs)
//!   volumes/kubernetes.io~local-volume/<pv>   ─▶ <data>/<path>          (local PVs)
//!   volumes/kubernetes.io~empty-dir/<volume>/                           (a directory)
//!   volumes/kubernetes.io~secret/<volume>/<key>         (also ~configmap,
//!   volumes/kubernetes.io~projected/<volume>/<path>      ~downward-api)
//!   volumeDevices/kubernetes.io~csi/<pv>      ─▶ <data>/volumes/<pv>.img (Block)
//!   containers/<container>/termination-log
//!   rootfs/<container>/<mountPath>            ─▶ the volume (sandbox only: see kubelet::process)
//! ```
//!
//! hostPath volumes (and hostPath/local PVs) are `<data>/<path>` (a local PV
//! linked from `volumes/kubernetes.io~local-volume/<pv>`), so a pod
//! that mounts the node's `/var/lib/kubelet` finds the layout above.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::handlers::State;
use crate::meta::meta_str;

/// A pod volume made available on the node.
#[derive(Debug, Clone)]
pub struct Volume {
    /// The pod's volume name.
    pub name: String,
    /// The directory (or, for Block, the file) a container sees.
    pub path: PathBuf,
}

/// Why a volume cannot be set up (the pod waits in `ContainerCreating`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountError {
    /// Event reason (`FailedMount`).
    pub reason: &'static str,
    /// Event message.
    pub message: String,
}

fn failed(volume: &str, why: impl std::fmt::Display) -> MountError {
    MountError {
        reason: "FailedMount",
        message: format!("MountVolume.SetUp failed for volume \"{volume}\" : {why}"),
    }
}

/// `<data>` joined with an absolute in-node path (`..` is refused).
pub fn node_path(data: &Path, p: &str) -> Option<PathBuf> {
    let mut out = data.to_path_buf();
    for c in Path::new(p).components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// `<data>/var/lib/kubelet/pods/<uid>`.
pub fn pod_dir(data: &Path, uid: &str) -> PathBuf {
    data.join("var/lib/kubelet/pods").join(uid)
}

/// Files of a Secret or ConfigMap volume source (keys or `items`).
fn key_files(
    source: &Value,
    data: &BTreeMap<String, Vec<u8>>,
    what: &str,
    name: &str,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut out = BTreeMap::new();
    match source["items"].as_array() {
        Some(items) if !items.is_empty() => {
            for it in items {
                let key = it["key"].as_str().unwrap_or_default();
                let path = it["path"].as_str().unwrap_or(key);
                match data.get(key) {
                    Some(b) => {
                        out.insert(path.to_string(), b.clone());
                    }
                    None if source["optional"] == true => {}
                    None => {
                        return Err(format!(
                            "{what} \"{name}\" references non-existent key: {key}"
                        ));
                    }
                }
            }
        }
        _ => out.extend(data.iter().map(|(k, v)| (k.clone(), v.clone()))),
    }
    Ok(out)
}

/// A Secret's decoded data, or a ConfigMap's data and binaryData.
pub fn object_data(
    st: &State,
    resource: &str,
    ns: &str,
    name: &str,
) -> Option<BTreeMap<String, Vec<u8>>> {
    let v = st
        .store
        .get(&(String::new(), resource.to_string()), ns, name)?
        .value();
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = BTreeMap::new();
    let decoded = |m: &Value| -> Vec<(String, Vec<u8>)> {
        m.as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, x)| Some((k.clone(), b64.decode(x.as_str()?).ok()?)))
            .collect()
    };
    if resource == "secrets" {
        out.extend(decoded(&v["data"]));
        // A server that has not merged stringData yet still means it.
        for (k, x) in v["stringData"].as_object().into_iter().flatten() {
            out.insert(
                k.clone(),
                x.as_str().unwrap_or_default().as_bytes().to_vec(),
            );
        }
    } else {
        for (k, x) in v["data"].as_object().into_iter().flatten() {
            out.insert(
                k.clone(),
                x.as_str().unwrap_or_default().as_bytes().to_vec(),
            );
        }
        out.extend(decoded(&v["binaryData"]));
    }
    Some(out)
}

fn downward_files(pod: &Value, items: &Value) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for it in items.as_array().into_iter().flatten() {
        let path = it["path"].as_str().unwrap_or_default().to_string();
        let field = it["fieldRef"]["fieldPath"].as_str().unwrap_or_default();
        let value = match field {
            "metadata.labels" | "metadata.annotations" => {
                let m = &pod["metadata"][field.trim_start_matches("metadata.")];
                m.as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| format!("{k}=\"{}\"\n", v.as_str().unwrap_or_default()))
                    .collect::<String>()
            }
            f => super::field_ref(pod, f).unwrap_or_default(),
        };
        out.insert(path, value.into_bytes());
    }
    out
}

/// What each volume will hold, read from the store (under the lock).
enum Plan {
    /// A link to the volume's bytes (`link` ─▶ `target`), plus files next to it.
    Link {
        link: PathBuf,
        target: PathBuf,
        dir: bool,
        size: u64,
        extra: Vec<(PathBuf, Vec<u8>)>,
    },
    /// A directory of its own.
    Dir(PathBuf),
    /// A directory of files.
    Files(PathBuf, BTreeMap<String, Vec<u8>>),
    /// A host path (`dir`: create it as a directory when missing).
    Host(PathBuf, Option<bool>),
}

/// Resolves and creates the pod's volumes.
pub fn setup(st: &State, data: &Path, pod: &Value, token: &str) -> Result<Vec<Volume>, MountError> {
    let ns = meta_str(pod, "namespace");
    let uid = meta_str(pod, "uid");
    let dir = pod_dir(data, uid);
    let block_volumes: Vec<&str> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .chain(pod["spec"]["initContainers"].as_array())
        .flatten()
        .flat_map(|c| c["volumeDevices"].as_array().into_iter().flatten())
        .filter_map(|d| d["name"].as_str())
        .collect();
    let mut plans = Vec::new();
    for vol in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let name = vol["name"].as_str().unwrap_or_default().to_string();
        let vols = dir.join("volumes");
        let plan = if let Some(claim) = vol["persistentVolumeClaim"]["claimName"].as_str() {
            let pvc = st
                .store
                .get(&(String::new(), "persistentvolumeclaims".into()), ns, claim)
                .map(|o| o.value())
                .ok_or_else(|| {
                    failed(
                        &name,
                        format!("persistentvolumeclaim \"{claim}\" not found"),
                    )
                })?;
            let pv = pvc["spec"]["volumeName"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if pvc["status"]["phase"] != "Bound" || pv.is_empty() {
                return Err(failed(&name, format!("PVC {ns}/{claim} is not bound")));
            }
            let pvv = st
                .store
                .get(&(String::new(), "persistentvolumes".into()), "", &pv)
                .map(|o| o.value())
                .ok_or_else(|| failed(&name, format!("persistentvolume \"{pv}\" not found")))?;
            let size = crate::kubelet::quantity_bytes(
                pvv["spec"]["capacity"]["storage"]
                    .as_str()
                    .unwrap_or_default(),
            );
            if block_volumes.contains(&name.as_str()) || pvc["spec"]["volumeMode"] == "Block" {
                Plan::Link {
                    link: dir.join("volumeDevices/kubernetes.io~csi").join(&pv),
                    target: data.join("volumes").join(format!("{pv}.img")),
                    dir: false,
                    size,
                    extra: Vec::new(),
                }
            } else if let Some(p) = pvv["spec"]["hostPath"]["path"].as_str() {
                // The host-path plugin mounts nothing: the container gets
                // the node's directory itself.
                Plan::Host(
                    node_path(data, p).ok_or_else(|| failed(&name, "invalid path"))?,
                    Some(true),
                )
            } else if let Some(p) = pvv["spec"]["local"]["path"].as_str() {
                // The local-volume plugin bind-mounts the node's directory
                // into the pod's directory, like any other mounted volume.
                Plan::Link {
                    link: vols.join("kubernetes.io~local-volume").join(&pv),
                    target: node_path(data, p).ok_or_else(|| failed(&name, "invalid path"))?,
                    dir: true,
                    size,
                    extra: Vec::new(),
                }
            } else if pvv["spec"]["nfs"].is_object() {
                Plan::Link {
                    link: vols.join("kubernetes.io~nfs").join(&pv),
                    target: data.join("volumes").join(&pv),
                    dir: true,
                    size,
                    extra: Vec::new(),
                }
            } else {
                let base = vols.join("kubernetes.io~csi").join(&pv);
                let vol_data = json!({"driverName": pvv["spec"]["csi"]["driver"], "volumeHandle": pvv["spec"]["csi"]["volumeHandle"],
                    "specVolID": pv, "volumeLifecycleMode": "Persistent", "attachmentID": ""});
                Plan::Link {
                    link: base.join("mount"),
                    target: data.join("volumes").join(&pv),
                    dir: true,
                    size,
                    extra: vec![(
                        base.join("vol_data.json"),
                        serde_json::to_vec(&vol_data).unwrap_or_default(),
                    )],
                }
            }
        } else if vol.get("emptyDir").is_some() {
            Plan::Dir(vols.join("kubernetes.io~empty-dir").join(&name))
        } else if let Some(p) = vol["hostPath"]["path"].as_str() {
            let path = node_path(data, p).ok_or_else(|| failed(&name, "invalid path"))?;
            let create = match vol["hostPath"]["type"].as_str().unwrap_or_default() {
                "" | "DirectoryOrCreate" => Some(true),
                "FileOrCreate" => Some(false),
                "Directory" if !path.is_dir() => {
                    return Err(failed(
                        &name,
                        format!("hostPath type check failed: {p} is not a directory"),
                    ));
                }
                "File" if !path.is_file() => {
                    return Err(failed(
                        &name,
                        format!("hostPath type check failed: {p} is not a file"),
                    ));
                }
                _ => None,
            };
            Plan::Host(path, create)
        } else if let Some(secret) = vol["secret"]["secretName"].as_str() {
            let files = match object_data(st, "secrets", ns, secret) {
                Some(d) => {
                    key_files(&vol["secret"], &d, "secret", secret).map_err(|e| failed(&name, e))?
                }
                None if vol["secret"]["optional"] == true => BTreeMap::new(),
                None => return Err(failed(&name, format!("secret \"{secret}\" not found"))),
            };
            Plan::Files(vols.join("kubernetes.io~secret").join(&name), files)
        } else if let Some(cm) = vol["configMap"]["name"].as_str() {
            let files = match object_data(st, "configmaps", ns, cm) {
                Some(d) => key_files(&vol["configMap"], &d, "configmap", cm)
                    .map_err(|e| failed(&name, e))?,
                None if vol["configMap"]["optional"] == true => BTreeMap::new(),
                None => return Err(failed(&name, format!("configmap \"{cm}\" not found"))),
            };
            Plan::Files(vols.join("kubernetes.io~configmap").join(&name), files)
        } else if vol["downwardAPI"].is_object() {
            Plan::Files(
                vols.join("kubernetes.io~downward-api").join(&name),
                downward_files(pod, &vol["downwardAPI"]["items"]),
            )
        } else if vol["projected"].is_object() {
            let mut files = BTreeMap::new();
            for src in vol["projected"]["sources"].as_array().into_iter().flatten() {
                if let Some(s) = src["secret"]["name"].as_str() {
                    match object_data(st, "secrets", ns, s) {
                        Some(d) => files.extend(
                            key_files(&src["secret"], &d, "secret", s)
                                .map_err(|e| failed(&name, e))?,
                        ),
                        None if src["secret"]["optional"] == true => {}
                        None => return Err(failed(&name, format!("secret \"{s}\" not found"))),
                    }
                } else if let Some(c) = src["configMap"]["name"].as_str() {
                    match object_data(st, "configmaps", ns, c) {
                        Some(d) => files.extend(
                            key_files(&src["configMap"], &d, "configmap", c)
                                .map_err(|e| failed(&name, e))?,
                        ),
                        None if src["configMap"]["optional"] == true => {}
                        None => return Err(failed(&name, format!("configmap \"{c}\" not found"))),
                    }
                } else if src["downwardAPI"].is_object() {
                    files.extend(downward_files(pod, &src["downwardAPI"]["items"]));
                } else if src["serviceAccountToken"].is_object() {
                    let path = src["serviceAccountToken"]["path"]
                        .as_str()
                        .unwrap_or("token");
                    files.insert(path.to_string(), token.as_bytes().to_vec());
                }
            }
            Plan::Files(vols.join("kubernetes.io~projected").join(&name), files)
        } else {
            // Other volume types get a directory of their own under their plugin's name.
            let kind = vol
                .as_object()
                .and_then(|o| o.keys().find(|k| *k != "name").cloned())
                .unwrap_or_else(|| "unknown".into());
            Plan::Dir(vols.join(format!("kubernetes.io~{kind}")).join(&name))
        };
        plans.push((name, plan));
    }
    let mut out = Vec::new();
    for (name, plan) in plans {
        let io = |e: std::io::Error| failed(&name, e);
        let path = match plan {
            Plan::Link {
                link,
                target,
                dir,
                size,
                extra,
            } => {
                if dir {
                    std::fs::create_dir_all(&target).map_err(io)?;
                } else if !target.exists() {
                    if let Some(p) = target.parent() {
                        std::fs::create_dir_all(p).map_err(io)?;
                    }
                    std::fs::File::create(&target)
                        .and_then(|f| f.set_len(size))
                        .map_err(io)?;
                }
                if let Some(p) = link.parent() {
                    std::fs::create_dir_all(p).map_err(io)?;
                }
                if std::fs::symlink_metadata(&link).is_err() {
                    std::os::unix::fs::symlink(&target, &link).map_err(io)?;
                }
                for (p, bytes) in extra {
                    std::fs::write(p, bytes).map_err(io)?;
                }
                target
            }
            Plan::Dir(d) => {
                std::fs::create_dir_all(&d).map_err(io)?;
                d
            }
            Plan::Files(d, files) => {
                std::fs::create_dir_all(&d).map_err(io)?;
                for (rel, bytes) in files {
                    let p = node_path(&d, &rel)
                        .ok_or_else(|| failed(&name, format!("invalid path {rel:?}")))?;
                    if let Some(parent) = p.parent() {
                        std::fs::create_dir_all(parent).map_err(io)?;
                    }
                    std::fs::write(&p, bytes).map_err(io)?;
                }
                d
            }
            Plan::Host(p, create) => {
                match create {
                    Some(true) => std::fs::create_dir_all(&p).map_err(io)?,
                    Some(false) if !p.exists() => {
                        if let Some(parent) = p.parent() {
                            std::fs::create_dir_all(parent).map_err(io)?;
                        }
                        std::fs::File::create(&p).map_err(io)?;
                    }
                    _ => {}
                }
                p
            }
        };
        out.push(Volume { name, path });
    }
    Ok(out)
}

/// Builds a container's root (`rootfs/<container>/`): each volume mount and
/// device path a link to the volume (with `subPath`), the termination
/// message path a link to `containers/<container>/termination-log`.
/// Returns the root and the termination log file.
pub fn container_root(
    pod_dir: &Path,
    container: &Value,
    volumes: &[Volume],
) -> std::io::Result<(PathBuf, PathBuf)> {
    let cname = container["name"].as_str().unwrap_or_default();
    let root = pod_dir.join("rootfs").join(cname);
    std::fs::create_dir_all(root.join("tmp"))?;
    let logs = pod_dir.join("containers").join(cname);
    std::fs::create_dir_all(&logs)?;
    let term = logs.join("termination-log");
    std::fs::write(&term, b"")?;
    let mut links: Vec<(String, PathBuf)> = Vec::new();
    for m in container["volumeMounts"].as_array().into_iter().flatten() {
        let Some(v) = volumes.iter().find(|v| m["name"] == v.name.as_str()) else {
            continue;
        };
        let mut target = v.path.clone();
        if let Some(sub) = m["subPath"].as_str().filter(|s| !s.is_empty()) {
            target = node_path(&target, sub).unwrap_or(target);
            if !target.exists() {
                std::fs::create_dir_all(&target)?;
            }
        }
        links.push((
            m["mountPath"].as_str().unwrap_or_default().to_string(),
            target,
        ));
    }
    for d in container["volumeDevices"].as_array().into_iter().flatten() {
        if let Some(v) = volumes.iter().find(|v| d["name"] == v.name.as_str()) {
            links.push((
                d["devicePath"].as_str().unwrap_or_default().to_string(),
                v.path.clone(),
            ));
        }
    }
    let tpath = container["terminationMessagePath"]
        .as_str()
        .unwrap_or("/dev/termination-log")
        .to_string();
    links.push((tpath, term.clone()));
    // Outer paths first; a mount inside another mount would land in that
    // volume's data, so it is left out.
    links.sort_by_key(|(p, _)| p.len());
    let mut placed: Vec<String> = Vec::new();
    for (path, target) in links {
        let trimmed = path.trim_end_matches('/').to_string();
        if placed.iter().any(|p| trimmed.starts_with(&format!("{p}/"))) {
            tracing::warn!(
                path,
                "nested mount paths are not supported by the sandbox kubelet"
            );
            continue;
        }
        let Some(link) = node_path(&root, &trimmed).filter(|l| l != &root) else {
            continue;
        };
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)?;
        }
        // A mount hides what the image has at its path (`/tmp` here).
        match std::fs::symlink_metadata(&link) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&link)?,
            Ok(_) => std::fs::remove_file(&link)?,
            Err(_) => {}
        }
        std::os::unix::fs::symlink(&target, &link)?;
        placed.push(trimmed);
    }
    Ok((root, term))
}

/// Removes the pod's directory (links, not what they point to).
pub fn teardown(data: &Path, uid: &str) {
    let dir = pod_dir(data, uid);
    if let Err(e) = std::fs::remove_dir_all(&dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "removing the pod directory failed");
    }
}
