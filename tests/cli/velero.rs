//! Velero's backups restored without Velero: a `format: velero`
//! StorageLocation over a bucket laid out as Velero writes it (the layout of
//! its docs, "Output file format", with API group versions), written here
//! with the system `tar`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::Api;
use lifeboat_sandbox::Sandbox;
use serde_json::{Value, json};

use crate::run;

const BACKUP: &str = "daily-20261130020000";

/// An object as Velero stores it: with the server's fields.
fn served(mut obj: Value, uid: &str) -> Value {
    let meta = obj["metadata"].as_object_mut().unwrap();
    meta.insert("uid".into(), json!(uid));
    meta.insert("resourceVersion".into(), json!("4711"));
    meta.insert("creationTimestamp".into(), json!("2026-11-01T08:00:00Z"));
    meta.insert(
        "managedFields".into(),
        json!([{"manager": "kubectl", "operation": "Apply"}]),
    );
    obj["status"] = json!({"observedGeneration": 3});
    obj
}

fn deployment(copy: &str, api: &str) -> Value {
    served(
        json!({
            "apiVersion": api, "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "labels": {"copy": copy}},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}
                }
            }
        }),
        "d-1",
    )
}

/// Writes `backups/<name>/` as Velero 1.4+ does: each object in its
/// preferred version and unversioned; the Deployment also in an older API
/// version; the Secret only unversioned, as Velero before 1.4 wrote all.
/// The unversioned Deployment differs from the preferred one (Velero's do
/// not), so the test sees which copy was restored.
fn write_velero_backup(bucket: &Path, name: &str, phase: &str) {
    let work = tempfile::tempdir().unwrap();
    let put = |rel: &str, v: &Value| {
        let p = work.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, serde_json::to_vec(v).unwrap()).unwrap();
    };
    let both = |gr: &str, scope: &str, v: &Value| {
        put(&format!("resources/{gr}/{scope}"), v);
        put(&format!("resources/{gr}/v1-preferredversion/{scope}"), v);
    };
    both(
        "namespaces",
        "cluster/shop.json",
        &served(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"team": "shop"}}}),
            "n-1",
        ),
    );
    both(
        "configmaps",
        "namespaces/shop/settings.json",
        &served(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": "shop"},
                   "data": {"currency": "EUR", "greeting": "grüezi"}}),
            "c-1",
        ),
    );
    put(
        "resources/deployments.apps/namespaces/shop/web.json",
        &deployment("unversioned", "apps/v1"),
    );
    put(
        "resources/deployments.apps/v1-preferredversion/namespaces/shop/web.json",
        &deployment("preferred", "apps/v1"),
    );
    put(
        "resources/deployments.apps/v1beta2/namespaces/shop/web.json",
        &deployment("v1beta2", "apps/v1beta2"),
    );
    put(
        "resources/secrets/namespaces/shop/db.json",
        &served(
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "shop"},
                   "type": "Opaque", "data": {"password": "aHVudGVyMg=="}}),
            "s-1",
        ),
    );
    both(
        "pods",
        "namespaces/shop/web-6d4cf56db6-x2x4k.json",
        &served(
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "web-6d4cf56db6-x2x4k", "namespace": "shop",
                                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-6d4cf56db6", "uid": "r-1", "controller": true}]},
                   "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}),
            "p-1",
        ),
    );
    std::fs::create_dir_all(work.path().join("metadata")).unwrap();
    std::fs::write(work.path().join("metadata/version"), "1.1.0").unwrap();
    let dir = bucket.join("backups").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let status = Command::new("tar")
        .arg("czf")
        .arg(dir.join(format!("{name}.tar.gz")))
        .arg("-C")
        .arg(work.path())
        .args(["metadata", "resources"])
        .status()
        .expect("tar runs");
    assert!(status.success());
    let backup = json!({
        "kind": "Backup", "apiVersion": "velero.io/v1",
        "metadata": {"name": name, "namespace": "openshift-adp",
                     "labels": {"velero.io/schedule-name": "daily", "velero.io/storage-location": "default"}},
        "spec": {"includedNamespaces": ["shop"], "ttl": "720h0m0s"},
        "status": {"version": 1, "formatVersion": "1.1.0", "phase": phase,
                   "startTimestamp": "2026-11-30T02:00:00Z", "completionTimestamp": "2026-11-30T02:00:09Z",
                   "expiration": "2026-12-30T02:00:00Z",
                   "progress": {"totalItems": 6, "itemsBackedUp": 6}}
    });
    std::fs::write(
        dir.join("velero-backup.json"),
        serde_json::to_vec_pretty(&backup).unwrap(),
    )
    .unwrap();
}

/// A sandbox and a policy repository with a lifeboat location `local` and a
/// Velero location `oadp` (both `file://`).
struct World {
    rt: tokio::runtime::Runtime,
    sandbox: Sandbox,
    dir: tempfile::TempDir,
    storage: PathBuf,
    bucket: PathBuf,
}

impl World {
    fn new() -> World {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let sandbox = rt.block_on(Sandbox::builder().start()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (storage, bucket) = (dir.path().join("storage"), dir.path().join("velero"));
        std::fs::create_dir_all(&storage).unwrap();
        std::fs::write(
            dir.path().join("lifeboat.yaml"),
            format!(
                "apiVersion: lifeboat.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: prod\nspec:\n  role: primary\n---\n\
                 apiVersion: lifeboat.dev/v1alpha1\nkind: StorageLocation\nmetadata:\n  name: local\nspec:\n  url: file://{}\n---\n\
                 apiVersion: lifeboat.dev/v1alpha1\nkind: StorageLocation\nmetadata:\n  name: oadp\nspec:\n  url: file://{}\n  format: velero\n",
                storage.display(),
                bucket.display()
            ),
        )
        .unwrap();
        sandbox
            .write_kubeconfig(&dir.path().join("kubeconfig"))
            .unwrap();
        World {
            rt,
            sandbox,
            dir,
            storage,
            bucket,
        }
    }

    /// Runs lifeboat with `args` on the Velero location.
    fn on_velero(&self, args: &[&str]) -> (i32, String, String) {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--repo", self.repo(), "--location", "oadp"]);
        run(&all, None)
    }

    fn repo(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }

    fn kubeconfig(&self) -> String {
        self.dir.path().join("kubeconfig").display().to_string()
    }
}

fn files(dir: &Path) -> BTreeSet<String> {
    fn walk(dir: &Path, base: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, base, out);
            } else {
                out.insert(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

#[test]
fn a_velero_backup_restores_without_velero_and_its_bucket_is_never_written() {
    let w = World::new();
    write_velero_backup(&w.bucket, BACKUP, "Completed");
    write_velero_backup(&w.bucket, "daily-20261201020000", "InProgress");
    let (rt, sb, storage, bucket) = (&w.rt, &w.sandbox, &w.storage, &w.bucket);
    let kubeconfig = w.kubeconfig();
    let (r, k) = (w.repo(), kubeconfig.as_str());

    let before = files(bucket);

    let (code, out, err) = run(&["lint", r], None);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run(
        &["backups", "list", "--repo", r, "--location", "oadp"],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let line = out.lines().find(|l| l.starts_with(BACKUP)).expect(&out);
    for want in [
        "daily",
        "Completed",
        "2026-11-30 02:00:00Z",
        "2026-12-30 02:00:00Z",
        "6",
    ] {
        assert!(line.contains(want), "{want} in {line}");
    }
    assert!(out.contains("InProgress"), "{out}");
    let (code, out, err) = w.on_velero(&["backups", "verify", BACKUP]);
    assert_eq!(code, 0, "{out}{err}");
    // Namespace, ConfigMap, Deployment, Secret, Pod: each object once.
    assert!(out.contains("5 objects"), "{out}");

    let restore = |extra: &[&str]| {
        let mut args = vec![
            "restore",
            "--repo",
            r,
            "--from",
            BACKUP,
            "--location",
            "oadp",
            "--kubeconfig",
            k,
            "--namespace-mapping",
            "shop=shop-copy",
        ];
        args.extend_from_slice(extra);
        run(&args, None)
    };
    let (code, out, err) = restore(&["--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    let namespaces: Api<Namespace> = Api::all(sb.client());
    assert!(
        rt.block_on(namespaces.get_opt("shop-copy"))
            .unwrap()
            .is_none(),
        "a dry run creates nothing"
    );

    let (code, out, err) = restore(&[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("not yet their volume data"), "{err}");
    assert!(
        out.contains("record `manual-") && out.contains("in `local`"),
        "{out}"
    );
    let ns = rt.block_on(namespaces.get("shop-copy")).unwrap();
    assert_eq!(ns.metadata.labels.unwrap()["team"], "shop");
    let cm = rt
        .block_on(Api::<ConfigMap>::namespaced(sb.client(), "shop-copy").get("settings"))
        .unwrap();
    assert_eq!(cm.data.unwrap()["greeting"], "grüezi");
    assert_ne!(
        cm.metadata.uid.as_deref(),
        Some("c-1"),
        "server fields were not restored"
    );
    let web = rt
        .block_on(Api::<Deployment>::namespaced(sb.client(), "shop-copy").get("web"))
        .unwrap();
    assert_eq!(
        web.metadata.labels.unwrap()["copy"],
        "preferred",
        "the preferred-version copy is restored"
    );
    let secret = rt
        .block_on(Api::<Secret>::namespaced(sb.client(), "shop-copy").get("db"))
        .unwrap();
    assert_eq!(secret.data.unwrap()["password"].0, b"hunter2");
    // The pod belongs to a ReplicaSet: its Deployment brings it back.
    assert!(
        out.lines()
            .any(|l| l.starts_with("skipped") && l.contains("web-6d4cf56db6-x2x4k")),
        "{out}"
    );
    // The record went to lifeboat's location; Velero's bucket is as it was.
    assert!(
        files(storage)
            .iter()
            .any(|f| f.contains("restores/manual-")),
        "{:?}",
        files(storage)
    );
    assert_eq!(
        files(bucket),
        before,
        "nothing was written to Velero's bucket"
    );

    // What Velero did not finish is refused, and so is deleting.
    let (code, _, err) = run(
        &[
            "restore",
            "--repo",
            r,
            "--from",
            "daily-20261201020000",
            "--location",
            "oadp",
            "--kubeconfig",
            k,
        ],
        None,
    );
    assert_ne!(code, 0);
    assert!(err.contains("InProgress, not Completed"), "{err}");
    let (code, _, err) = run(
        &[
            "backups",
            "delete",
            BACKUP,
            "--repo",
            r,
            "--location",
            "oadp",
            "--yes",
        ],
        None,
    );
    assert_ne!(code, 0);
    assert!(err.contains("never writes"), "{err}");
}

#[test]
fn a_truncated_velero_tarball_is_refused_before_anything_is_applied() {
    let w = World::new();
    write_velero_backup(&w.bucket, BACKUP, "Completed");
    let (rt, sb) = (&w.rt, &w.sandbox);
    let kubeconfig = w.kubeconfig();
    let (r, k) = (w.repo(), kubeconfig.as_str());
    let tarball = w.bucket.join(format!("backups/{BACKUP}/{BACKUP}.tar.gz"));
    let bytes = std::fs::read(&tarball).unwrap();
    std::fs::write(&tarball, &bytes[..bytes.len() - 40]).unwrap();

    let (code, out, err) = w.on_velero(&["backups", "verify", BACKUP]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("damaged"), "{out}");
    let (code, out, err) = run(
        &[
            "restore",
            "--repo",
            r,
            "--from",
            BACKUP,
            "--location",
            "oadp",
            "--kubeconfig",
            k,
        ],
        None,
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("cannot be decoded"), "{err}");
    let namespaces: Api<Namespace> = Api::all(sb.client());
    assert!(
        rt.block_on(namespaces.get_opt("shop")).unwrap().is_none(),
        "nothing is applied from a damaged backup"
    );
}
