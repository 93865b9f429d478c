//! Velero's backups restored without Velero: a `format: velero`
//! StorageLocation over a bucket laid out as Velero writes it (the layout of
//! its docs, "Output file format", with API group versions), written here
//! with the system `tar`.

use std::collections::{BTreeMap, BTreeSet};
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
        World::with(rt, sandbox)
    }

    /// A world whose sandbox runs movers (pods of lifeboat's image run
    /// this lifeboat binary).
    fn with_movers() -> World {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let sandbox = crate::volume_data::mover_sandbox(
            &rt,
            Path::new(env!("CARGO_BIN_EXE_lifeboat")),
            1,
            None,
        );
        World::with(rt, sandbox)
    }

    fn with(rt: tokio::runtime::Runtime, sandbox: Sandbox) -> World {
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

    /// Commits the world's `lifeboat.yaml` and `restore` (a RestoreRequest)
    /// to a Git remote, from the work tree `repo/`: the remote's URL.
    fn commit_restore_request(&self, restore: &str) -> String {
        let root = self.dir.path();
        let work = root.join("repo");
        std::fs::create_dir_all(&work).unwrap();
        std::fs::copy(root.join("lifeboat.yaml"), work.join("lifeboat.yaml")).unwrap();
        std::fs::write(work.join("restore.yaml"), restore).unwrap();
        crate::plan::push_to_new_remote(root, &work, "restore Velero's backup")
    }

    /// The record of RestoreRequest `name` in lifeboat's location.
    fn restore_record(&self, name: &str) -> Value {
        let path = self
            .storage
            .join(format!("clusters/prod/restores/{name}/record.json"));
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
    }

    /// One controller cycle of `prod` against `remote` at `now`.
    fn reconcile(&self, remote: &str, now: &str) -> (i32, String, String) {
        let cache = self.dir.path().join("cache");
        run(
            &[
                "reconcile",
                "--once",
                "--repo",
                remote,
                "--cluster",
                "prod",
                "--kubeconfig",
                &self.kubeconfig(),
                "--cache-dir",
                cache.to_str().unwrap(),
                "--now",
                now,
            ],
            None,
        )
    }

    /// A restic repository at `restic/shop` of the bucket, with Velero's
    /// static password, holding one snapshot of generated files: the
    /// files, the repository and the snapshot id. `None` (printed) when the
    /// restic CLI is not installed.
    fn seeded_restic(&self) -> Option<(BTreeMap<PathBuf, Vec<u8>>, PathBuf, String)> {
        let seed = self.dir.path().join("seed-data");
        let files = crate::volume_data::seed_files(&seed);
        let repo = restic_init(&self.bucket, "shop", "static-passw0rd")?;
        let snapshot = restic_backup(&repo, "static-passw0rd", &seed);
        Some((files, repo, snapshot))
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

/// A RestoreRequest with `source.location` committed to Git: the
/// controller's cycle (`reconcile --once`) restores the newest Velero
/// backup Velero finished, with its namespace mapping, writes the record to
/// lifeboat's location and the status to the status branch, never writes
/// Velero's bucket, and runs a request once.
#[test]
fn a_restore_request_from_a_velero_location_runs_in_the_controller() {
    use crate::plan::git;
    let w = World::new();
    write_velero_backup(&w.bucket, "daily-20261129020000", "Completed");
    write_velero_backup(&w.bucket, BACKUP, "Completed");
    write_velero_backup(&w.bucket, "daily-20261201020000", "InProgress");
    // Start times as the names say (the fixture writes one for all).
    for (name, start) in [
        ("daily-20261129020000", "2026-11-29T02:00:00Z"),
        ("daily-20261201020000", "2026-12-01T02:00:00Z"),
    ] {
        let path = w.bucket.join(format!("backups/{name}/velero-backup.json"));
        let mut doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        doc["status"]["startTimestamp"] = json!(start);
        std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    }
    let before = files(&w.bucket);
    let root = w.dir.path();
    let work = root.join("repo");
    let remote = w.commit_restore_request(
        "apiVersion: lifeboat.dev/v1alpha1\nkind: RestoreRequest\nmetadata: {name: from-velero}\n\
         spec:\n  source: {location: oadp, backup: latest}\n  target: {cluster: prod}\n  \
         namespaceMapping: {shop: shop-copy}\n",
    );
    let (code, out, err) = run(&["lint", work.to_str().unwrap()], None);
    assert_eq!(code, 0, "{out}{err}");

    // The plan says what will run, and where the record goes.
    let (code, out, err) = run(
        &[
            "plan",
            "--repo",
            work.to_str().unwrap(),
            "--cluster",
            "prod",
        ],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!(
            "restore Velero backup `{BACKUP}` from `oadp` for request `from-velero`, its record in `local`"
        )),
        "the newest finished backup, not the InProgress one: {out}"
    );

    let cycle = |now: &str| w.reconcile(&remote, now);
    let (code, out, err) = cycle("2026-12-02T08:00:00Z");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("from-velero"), "{out}");
    let (rt, sb) = (&w.rt, &w.sandbox);
    let cm = rt
        .block_on(Api::<ConfigMap>::namespaced(sb.client(), "shop-copy").get("settings"))
        .unwrap();
    assert_eq!(cm.data.unwrap()["greeting"], "grüezi");
    assert_ne!(cm.metadata.uid.as_deref(), Some("c-1"));
    let web = rt
        .block_on(Api::<Deployment>::namespaced(sb.client(), "shop-copy").get("web"))
        .unwrap();
    // Identical to Velero's preferred-version copy but for the server's
    // fields and the mapped namespace.
    let backed_up = deployment("preferred", "apps/v1");
    let live = serde_json::to_value(&web).unwrap();
    assert_eq!(live["metadata"]["labels"], backed_up["metadata"]["labels"]);
    assert_eq!(live["metadata"]["namespace"], "shop-copy");
    assert_eq!(
        live["spec"]["template"]["spec"]["containers"][0]["image"],
        backed_up["spec"]["template"]["spec"]["containers"][0]["image"]
    );
    assert_eq!(live["spec"]["selector"], backed_up["spec"]["selector"]);
    assert_ne!(live["metadata"]["uid"], backed_up["metadata"]["uid"]);
    assert_ne!(
        live["metadata"]["resourceVersion"],
        backed_up["metadata"]["resourceVersion"]
    );
    assert!(
        rt.block_on(Api::<Namespace>::all(sb.client()).get_opt("shop"))
            .unwrap()
            .is_none(),
        "mapped: nothing lands in the source namespace"
    );

    // The record is in lifeboat's location, under the target cluster.
    let record = w.restore_record("from-velero");
    assert_eq!(record["phase"], "Completed", "{record:#}");
    assert_eq!(record["sourceBackup"], BACKUP);
    assert_eq!(record["sourceCluster"], "oadp");
    assert_eq!(
        files(&w.bucket),
        before,
        "nothing was written to Velero's bucket"
    );

    // The status branch shows it.
    let status = git(
        &root.join("remote.git"),
        &[
            "show",
            "lifeboat-status:clusters/prod/restores/from-velero.yaml",
        ],
    );
    assert!(
        status.contains("Completed") && status.contains(BACKUP),
        "{status}"
    );

    // A request runs once: the next cycle leaves it alone.
    let (code, out, err) = cycle("2026-12-02T08:10:00Z");
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("restore Velero backup"), "{out}");
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

/// Velero's restic repository of `namespace` in `bucket`, made with the
/// restic CLI under `password`; `None` (with the reason printed) when
/// restic is not installed.
fn restic_init(bucket: &Path, namespace: &str, password: &str) -> Option<PathBuf> {
    if Command::new("restic").arg("version").output().is_err() {
        eprintln!("skipped: the restic CLI is not installed, and the fixture needs it");
        return None;
    }
    let repo = bucket.join("restic").join(namespace);
    let out = Command::new("restic")
        .args(["--no-cache", "-r"])
        .arg(&repo)
        .arg("init")
        .env("RESTIC_PASSWORD", password)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(repo)
}

/// `restic backup` of `dir` into `repo`: the snapshot id.
fn restic_backup(repo: &Path, password: &str, dir: &Path) -> String {
    let out = Command::new("restic")
        .args(["--no-cache", "--json", "-r"])
        .arg(repo)
        .arg("backup")
        .arg(dir)
        .env("RESTIC_PASSWORD", password)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message_type"] == "summary")
        .and_then(|v| v["snapshot_id"].as_str().map(str::to_string))
        .expect("restic printed its summary")
}

/// A PodVolumeBackup as Velero writes it into
/// `<backup>-podvolumebackups.json.gz`.
fn pvb(ns: &str, pod: &str, volume: &str, uploader: &str, phase: &str, snapshot: &str) -> Value {
    json!({
        "kind": "PodVolumeBackup", "apiVersion": "velero.io/v1",
        "metadata": {"name": format!("{BACKUP}-{volume}"), "namespace": "openshift-adp",
                     "labels": {"velero.io/backup-name": BACKUP}},
        "spec": {
            "node": "node-1",
            "pod": {"kind": "Pod", "namespace": ns, "name": pod, "uid": format!("uid-{pod}")},
            "volume": volume,
            "backupStorageLocation": "default",
            "repoIdentifier": format!("s3:s3.amazonaws.com/velero-backups/restic/{ns}"),
            "uploaderType": uploader,
            "tags": {"backup": BACKUP, "ns": ns, "pod": pod, "volume": volume}
        },
        "status": {
            "phase": phase,
            "path": format!("/host_pods/uid-{pod}/volumes/kubernetes.io~csi/pvc-{volume}/mount"),
            "snapshotID": snapshot,
            "startTimestamp": "2026-11-30T02:00:01Z",
            "completionTimestamp": "2026-11-30T02:00:04Z",
            "progress": {"totalBytes": 765_563, "bytesDone": 765_563}
        }
    })
}

fn claim(ns: &str, name: &str) -> Value {
    served(
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
               "metadata": {"name": name, "namespace": ns,
                            "annotations": {"pv.kubernetes.io/bind-completed": "yes"}},
               "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "standard",
                        "volumeName": format!("pvc-{ns}-{name}"),
                        "resources": {"requests": {"storage": "1Gi"}}}}),
        &format!("pvc-uid-{name}"),
    )
}

/// A pod of `ns` mounting `claims` as volumes of the same names (and an
/// emptyDir `scratch`), owned by a ReplicaSet when `owned`.
fn pod(ns: &str, name: &str, claims: &[&str], owned: bool) -> Value {
    let mut volumes: Vec<Value> = claims
        .iter()
        .map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}}))
        .collect();
    volumes.push(json!({"name": "scratch", "emptyDir": {}}));
    let mut meta = json!({"name": name, "namespace": ns});
    if owned {
        meta["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                          "name": "db-6d4cf56db6", "uid": "r-1", "controller": true}]);
    }
    served(
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta,
               "spec": {"containers": [{"name": "db", "image": "mariadb:10.5"}], "volumes": volumes}}),
        &format!("uid-{name}"),
    )
}

/// Writes a Completed Velero backup of `objects` ((group-resource, object))
/// — each in its preferred version and unversioned — with `pvbs` as its
/// PodVolumeBackups.
fn write_fs_backup(bucket: &Path, objects: &[(&str, Value)], pvbs: &[Value]) {
    let work = tempfile::tempdir().unwrap();
    for (gr, obj) in objects {
        let name = obj["metadata"]["name"].as_str().unwrap();
        let scope = match obj["metadata"]["namespace"].as_str() {
            Some(ns) => format!("namespaces/{ns}/{name}.json"),
            None => format!("cluster/{name}.json"),
        };
        for dir in [
            format!("resources/{gr}"),
            format!("resources/{gr}/v1-preferredversion"),
        ] {
            let p = work.path().join(dir).join(&scope);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, serde_json::to_vec(obj).unwrap()).unwrap();
        }
    }
    std::fs::create_dir_all(work.path().join("metadata")).unwrap();
    std::fs::write(work.path().join("metadata/version"), "1.1.0").unwrap();
    let dir = bucket.join("backups").join(BACKUP);
    std::fs::create_dir_all(&dir).unwrap();
    let status = Command::new("tar")
        .arg("czf")
        .arg(dir.join(format!("{BACKUP}.tar.gz")))
        .arg("-C")
        .arg(work.path())
        .args(["metadata", "resources"])
        .status()
        .expect("tar runs");
    assert!(status.success());
    // Gzipped with the system gzip, as Velero's own writer would.
    let list = dir.join(format!("{BACKUP}-podvolumebackups.json"));
    std::fs::write(&list, serde_json::to_vec(pvbs).unwrap()).unwrap();
    let status = Command::new("gzip")
        .arg("-n")
        .arg(&list)
        .status()
        .expect("gzip runs");
    assert!(status.success());
    let backup = json!({
        "kind": "Backup", "apiVersion": "velero.io/v1",
        "metadata": {"name": BACKUP, "namespace": "openshift-adp",
                     "labels": {"velero.io/schedule-name": "daily"}},
        "spec": {"defaultVolumesToFsBackup": true, "ttl": "720h0m0s"},
        "status": {"phase": "Completed", "formatVersion": "1.1.0",
                   "startTimestamp": "2026-11-30T02:00:00Z", "expiration": "2026-12-30T02:00:00Z",
                   "progress": {"totalItems": objects.len(), "itemsBackedUp": objects.len()}}
    });
    std::fs::write(
        dir.join("velero-backup.json"),
        serde_json::to_vec_pretty(&backup).unwrap(),
    )
    .unwrap();
}

fn namespace(name: &str) -> (&'static str, Value) {
    (
        "namespaces",
        served(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
            &format!("ns-{name}"),
        ),
    )
}

#[test]
fn velero_restic_volumes_restore_byte_for_byte_and_kopia_ones_are_reported() {
    let w = World::with_movers();
    let Some((files, repo, snapshot)) = w.seeded_restic() else {
        return;
    };
    let scratch = restic_backup(
        &repo,
        "static-passw0rd",
        &w.dir.path().join("seed-data/todolist"),
    );
    let web = "db-6d4cf56db6-x2x4k";
    write_fs_backup(
        &w.bucket,
        &[
            namespace("shop"),
            ("persistentvolumeclaims", claim("shop", "data")),
            ("persistentvolumeclaims", claim("shop", "cache")),
            (
                "persistentvolumes",
                served(
                    json!({"apiVersion": "v1", "kind": "PersistentVolume",
                           "metadata": {"name": "pvc-shop-data"},
                           "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                                    "storageClassName": "standard",
                                    "csi": {"driver": "hostpath.csi.k8s.io", "volumeHandle": "v-1"},
                                    "claimRef": {"namespace": "shop", "name": "data"}}}),
                    "pv-1",
                ),
            ),
            ("pods", pod("shop", web, &["data"], true)),
            ("pods", pod("shop", "tools", &["cache"], false)),
            (
                "deployments.apps",
                served(
                    json!({"apiVersion": "apps/v1", "kind": "Deployment",
                           "metadata": {"name": "db", "namespace": "shop"},
                           "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "db"}},
                                    "template": {"metadata": {"labels": {"app": "db"}},
                                                 "spec": {"containers": [{"name": "db", "image": "mariadb:10.5"}],
                                                          "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}}}}),
                    "d-1",
                ),
            ),
        ],
        &[
            pvb("shop", web, "data", "restic", "Completed", &snapshot),
            // An emptyDir: no claim, so nothing of lifeboat's to fill.
            pvb("shop", web, "scratch", "restic", "Completed", &scratch),
            pvb(
                "shop",
                "tools",
                "cache",
                "kopia",
                "Completed",
                "5d4e1b2c9a0f",
            ),
        ],
    );
    let before = files_in(&w.bucket);
    let kubeconfig = w.kubeconfig();
    let (r, k) = (w.repo(), kubeconfig.as_str());

    let (code, out, err) = run(
        &["backups", "list", "--repo", r, "--location", "oadp"],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("POD VOLUMES") && out.contains("1 kopia, 2 restic"),
        "{out}"
    );
    let (code, out, err) = w.on_velero(&["backups", "show", BACKUP]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("cannot read its data") && out.contains(&snapshot[..8]),
        "{out}"
    );

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
    // The dry run says how each claim would come back.
    let (code, out, err) = restore(&["--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!(
            "filled from Velero's restic snapshot {}",
            &snapshot[..8]
        )),
        "{out}"
    );
    assert!(
        out.contains("its data is NOT restored") && out.contains("Kopia"),
        "{out}"
    );

    let (code, out, err) = restore(&["--format", "json"]);
    assert_eq!(
        code, 1,
        "the kopia claim's data did not come back: {out}{err}"
    );
    let record: Value = serde_json::from_str(&out).expect(&out);
    assert_eq!(record["phase"], "PartiallyFailed", "{record:#}");
    let volumes = record["volumes"].as_array().unwrap();
    let data = volumes.iter().find(|v| v["pvc"] == "data").expect(&out);
    assert_eq!(data["phase"], "Completed", "{data}");
    assert_eq!(data["namespace"], "shop-copy");
    assert_eq!(data["snapshot"].as_str().unwrap(), snapshot);
    let total: u64 = files.values().map(|f| f.len() as u64).sum();
    assert!(data["bytes"].as_u64().unwrap() >= total, "{data}");
    assert!(data.get("durationMs").is_some(), "{data}");
    let cache = volumes.iter().find(|v| v["pvc"] == "cache").expect(&out);
    assert_eq!(cache["phase"], "Failed");
    assert!(
        cache["error"].as_str().unwrap().contains("Kopia"),
        "{cache}"
    );
    // The restic claim holds exactly what restic backed up.
    let dir = claim_volume(&w, "shop-copy", "data");
    crate::volume_data::assert_same_files(&dir, &files);
    // Its old volume is not restored; the workload and the kopia claim are.
    let items = record["items"].as_array().unwrap();
    let action = |resource: &str, name: &str| {
        items
            .iter()
            .find(|i| i["resource"] == resource && i["name"] == name)
            .map(|i| i["action"].as_str().unwrap().to_string())
            .unwrap_or_default()
    };
    assert_eq!(action("persistentvolumes", "pvc-shop-data"), "Skipped");
    assert_eq!(action("pods", "tools"), "Created");
    assert_eq!(action("deployments.apps", "db"), "Created", "{items:#?}");
    assert_eq!(action("persistentvolumeclaims", "cache"), "Created");
    // Velero's bucket, restic repository included, is as it was.
    assert_eq!(
        files_in(&w.bucket),
        before,
        "nothing was written to Velero's bucket"
    );
}

/// The controller runs a committed RestoreRequest from a Velero location
/// with restic volume data: the claim comes back filled byte for byte, the
/// record (in lifeboat's location) names the snapshot, and Velero's bucket
/// is not written.
#[test]
fn a_restore_request_from_a_velero_location_fills_restic_claims_in_the_controller() {
    let w = World::with_movers();
    let Some((files, _, snapshot)) = w.seeded_restic() else {
        return;
    };
    let web = "db-6d4cf56db6-x2x4k";
    write_fs_backup(
        &w.bucket,
        &[
            namespace("shop"),
            ("persistentvolumeclaims", claim("shop", "data")),
            ("pods", pod("shop", web, &["data"], true)),
        ],
        &[pvb("shop", web, "data", "restic", "Completed", &snapshot)],
    );
    let before = files_in(&w.bucket);
    let remote = w.commit_restore_request(&format!(
        "apiVersion: lifeboat.dev/v1alpha1\nkind: RestoreRequest\nmetadata: {{name: from-velero}}\n\
         spec:\n  source: {{location: oadp, backup: {BACKUP}}}\n  target: {{cluster: prod}}\n  \
         namespaceMapping: {{shop: shop-copy}}\n"
    ));
    let (code, out, err) = w.reconcile(&remote, "2026-12-02T08:00:00Z");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("from-velero"), "{out}");

    let record = w.restore_record("from-velero");
    assert_eq!(record["phase"], "Completed", "{record:#}");
    let volumes = record["volumes"].as_array().expect("volume results");
    assert_eq!(volumes.len(), 1, "{record:#}");
    assert_eq!(volumes[0]["pvc"], "data");
    assert_eq!(volumes[0]["namespace"], "shop-copy");
    assert_eq!(volumes[0]["phase"], "Completed", "{record:#}");
    assert_eq!(volumes[0]["snapshot"].as_str(), Some(snapshot.as_str()));
    let dir = claim_volume(&w, "shop-copy", "data");
    crate::volume_data::assert_same_files(&dir, &files);
    assert_eq!(
        files_in(&w.bucket),
        before,
        "nothing was written to Velero's bucket"
    );
}

#[test]
fn a_missing_velero_snapshot_or_a_wrong_password_fails_that_volume_only() {
    let w = World::with_movers();
    let seed = w.dir.path().join("seed-data");
    crate::volume_data::seed_files(&seed);
    let Some(shop) = restic_init(&w.bucket, "shop", "static-passw0rd") else {
        return;
    };
    let good = restic_backup(&shop, "static-passw0rd", &seed);
    // An installation that set its own repository password.
    let other = restic_init(&w.bucket, "other", "not-the-static-one").unwrap();
    let elsewhere = restic_backup(&other, "not-the-static-one", &seed);
    let missing = "0badc0de".repeat(8);
    write_fs_backup(
        &w.bucket,
        &[
            namespace("shop"),
            namespace("other"),
            ("persistentvolumeclaims", claim("shop", "data")),
            ("persistentvolumeclaims", claim("shop", "lost")),
            ("persistentvolumeclaims", claim("other", "files")),
            ("pods", pod("shop", "a", &["data"], false)),
            ("pods", pod("shop", "b", &["lost"], false)),
            ("pods", pod("other", "c", &["files"], false)),
        ],
        &[
            pvb("shop", "a", "data", "restic", "Completed", &good),
            pvb("shop", "b", "lost", "restic", "Completed", &missing),
            pvb("other", "c", "files", "", "Completed", &elsewhere),
        ],
    );
    let kubeconfig = w.kubeconfig();
    let (code, out, err) = run(
        &[
            "restore",
            "--repo",
            w.repo(),
            "--from",
            BACKUP,
            "--location",
            "oadp",
            "--kubeconfig",
            &kubeconfig,
            "--format",
            "json",
        ],
        None,
    );
    assert_eq!(code, 1, "{out}{err}");
    let record: Value = serde_json::from_str(&out).expect(&out);
    assert_eq!(record["phase"], "PartiallyFailed", "{record:#}");
    let volume = |pvc: &str| {
        record["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["pvc"] == pvc)
            .cloned()
            .unwrap_or_else(|| panic!("{pvc} in {record:#}"))
    };
    assert_eq!(volume("data")["phase"], "Completed");
    let lost = volume("lost");
    assert_eq!(lost["phase"], "Failed");
    assert!(
        lost["error"]
            .as_str()
            .unwrap()
            .contains("no snapshot 0badc0de"),
        "{lost}"
    );
    let files = volume("files");
    assert_eq!(files["phase"], "Failed");
    assert!(
        files["error"]
            .as_str()
            .unwrap()
            .contains("password does not open"),
        "{files}"
    );
    // What mounts a claim left empty is held back; the rest is restored.
    let items = record["items"].as_array().unwrap();
    let action = |name: &str| {
        items
            .iter()
            .find(|i| i["resource"] == "pods" && i["name"] == name)
            .map(|i| i["action"].as_str().unwrap().to_string())
            .unwrap_or_default()
    };
    assert_eq!(action("a"), "Created");
    assert_eq!(action("b"), "Skipped");
    assert_eq!(action("c"), "Skipped");
}

/// Waits until the claim is Bound; its volume's directory.
fn claim_volume(w: &World, ns: &str, name: &str) -> PathBuf {
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    let api: Api<PersistentVolumeClaim> = Api::namespaced(w.sandbox.client(), ns);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let pvc = w.rt.block_on(api.get(name)).unwrap();
        if pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound") {
            let pv = pvc.spec.unwrap().volume_name.unwrap();
            return w.sandbox.data_dir().join("volumes").join(pv);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} was not bound: {pvc:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Every file below `dir` with its bytes.
fn files_in(dir: &Path) -> Vec<(String, Vec<u8>)> {
    files(dir)
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(dir.join(&f)).unwrap();
            (f, bytes)
        })
        .collect()
}
