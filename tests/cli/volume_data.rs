//! `lifeboat backup` and `lifeboat restore` with volume data (`snapshotMove`):
//! a Deployment + PVC + Secret + Service like OADP's `mysql-persistent`,
//! its claim seeded with files, against the sandbox whose pods of
//! lifeboat's image run this lifeboat binary as the mover.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod, Secret};
use kube::Api;
use kube::api::{DeleteParams, DynamicObject, ListParams};
use kube::core::ApiResource;
use lifeboat_sandbox::Sandbox;

use crate::run;

pub(crate) const NS: &str = "mysql-persistent";
const RECIPIENT: &str = "age1268crxs6ntgpzr3y2auy80yrejxsfmps549ul66ch93t0p5wr9aqyxanhq";
pub(crate) const IDENTITY: &str =
    "AGE-SECRET-KEY-1NUHTD5JXP04HTK00P4CPJCXE9YWJ34TKAX3DSQG7YACT4JHKZZQS9PFD7G";

const APP: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: mysql-persistent
  labels: {app: mysql}
---
apiVersion: v1
kind: Secret
metadata: {name: mysql, namespace: mysql-persistent, labels: {app: mysql}}
type: Opaque
data: {database-password: cGFzc3dvcmQ=, database-user: Y2hhbmdlbWU=}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: mysql, namespace: mysql-persistent, labels: {app: mysql}}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: standard
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Service
metadata: {name: mysql, namespace: mysql-persistent, labels: {app: mysql}}
spec:
  ports: [{name: mysql, port: 3306}]
  selector: {app: mysql}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: mysql, namespace: mysql-persistent, labels: {app: mysql}}
spec:
  selector: {matchLabels: {app: mysql}}
  strategy: {type: Recreate}
  template:
    metadata: {labels: {app: mysql}}
    spec:
      containers:
        - name: mysql
          image: registry.redhat.io/rhel8/mariadb-105:latest
          env:
            - name: MYSQL_PASSWORD
              valueFrom: {secretKeyRef: {name: mysql, key: database-password}}
          volumeMounts: [{name: mysql-data, mountPath: /var/lib/mysql}]
      volumes:
        - name: mysql-data
          persistentVolumeClaim: {claimName: mysql}
"#;

/// The claim's seeded files: a mix of sizes, a nested tree, an empty
/// directory and a symlink.
pub(crate) fn seed_files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    seed_distinct_files(dir, 0)
}

/// As [`seed_files`], with contents drawn from `salt`: claims seeded with
/// different salts hold the same tree with different bytes (and one file
/// named after the salt), so a restore that mixed them up is caught.
pub(crate) fn seed_distinct_files(dir: &Path, salt: u64) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ salt.wrapping_mul(0x2545_f491_4f6c_dd1d);
    let mut bytes = |n: usize| {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect::<Vec<u8>>()
    };
    files.insert(PathBuf::from("ibdata1"), bytes(700_000));
    files.insert(PathBuf::from("todolist/items.ibd"), bytes(65_536));
    files.insert(
        PathBuf::from("todolist/db.opt"),
        b"default-character-set=utf8\n".to_vec(),
    );
    files.insert(PathBuf::from("mysql.sock.lock"), Vec::new());
    if salt != 0 {
        files.insert(
            PathBuf::from(format!("ordinal-{salt}.txt")),
            format!("claim seeded with salt {salt}\n").into_bytes(),
        );
    }
    for (path, content) in &files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    std::os::unix::fs::symlink("ibdata1", dir.join("ibdata1.link")).unwrap();
    files
}

pub(crate) struct World {
    pub(crate) rt: tokio::runtime::Runtime,
    pub(crate) sb: Sandbox,
    pub(crate) dir: tempfile::TempDir,
    /// The files of the app's claim `mysql`.
    pub(crate) files: BTreeMap<PathBuf, Vec<u8>>,
    /// The files of each further claim seeded by [`World::with_app`].
    pub(crate) claims: BTreeMap<String, BTreeMap<PathBuf, Vec<u8>>>,
}

/// A sandbox of `nodes` nodes whose pods of lifeboat's image run `mover`,
/// seeded from `seed` (if any).
pub(crate) fn mover_sandbox(
    rt: &tokio::runtime::Runtime,
    mover: &Path,
    nodes: usize,
    seed: Option<&Path>,
) -> Sandbox {
    mover_sandbox_logged(rt, mover, nodes, seed, None)
}

/// As [`mover_sandbox`], writing the request log to `log` (if any).
pub(crate) fn mover_sandbox_logged(
    rt: &tokio::runtime::Runtime,
    mover: &Path,
    nodes: usize,
    seed: Option<&Path>,
    log: Option<&Path>,
) -> Sandbox {
    let mut builder = Sandbox::builder()
        .nodes(nodes)
        .image_binary("ghcr.io/lifeboat-dev/lifeboat", mover)
        // Hook Jobs of the tests run a shell.
        .image_binary("hooks.test/sh", "/bin/sh")
        .missing_image("registry.invalid/")
        .snapshot_delay(Duration::from_millis(20));
    if let Some(seed) = seed {
        builder = builder.seed_dir(seed);
    }
    if let Some(log) = log {
        builder = builder.request_log(log);
    }
    rt.block_on(builder.start()).unwrap()
}

impl World {
    /// A sandbox (2 nodes) with the app and its seeded claim; a policy
    /// repository backing up its namespace to an encrypted file:// location.
    pub(crate) fn new(mover: &Path) -> World {
        World::with(mover, 2, "standard")
    }

    /// As [`World::new`], with `nodes` nodes and the app's claim of
    /// storage class `class`.
    pub(crate) fn with(mover: &Path, nodes: usize, class: &str) -> World {
        World::with_app(mover, nodes, class, "", &[], false)
    }

    /// As [`World::with`]; with `request_log` the sandbox writes its
    /// request log to `requests.jsonl` in the world's directory.
    pub(crate) fn build(mover: &Path, nodes: usize, class: &str, request_log: bool) -> World {
        World::with_app(mover, nodes, class, "", &[], request_log)
    }

    /// As [`World::build`], with `extra` objects (YAML documents) seeded
    /// beside the app, and the claims `seeded` (name, salt) of the app's
    /// namespace given distinct files ([`seed_distinct_files`]) once they
    /// are bound, whoever creates them (a StatefulSet's controller, say).
    pub(crate) fn with_app(
        mover: &Path,
        nodes: usize,
        class: &str,
        extra: &str,
        seeded: &[(&str, u64)],
        request_log: bool,
    ) -> World {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let seed = dir.path().join("seed");
        std::fs::create_dir_all(&seed).unwrap();
        std::fs::write(
            seed.join("app.yaml"),
            APP.replace(
                "storageClassName: standard\n",
                &format!("storageClassName: {class}\n"),
            ),
        )
        .unwrap();
        if !extra.is_empty() {
            std::fs::write(seed.join("extra.yaml"), extra).unwrap();
        }
        let files = seed_files(&seed.join("volumes").join(NS).join("mysql"));
        let claims = seeded
            .iter()
            .map(|(claim, salt)| {
                let dir = seed.join("volumes").join(NS).join(claim);
                (claim.to_string(), seed_distinct_files(&dir, *salt))
            })
            .collect();
        let log = request_log.then(|| dir.path().join("requests.jsonl"));
        let sb = mover_sandbox_logged(&rt, mover, nodes, Some(&seed), log.as_deref());
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).unwrap();
        std::fs::create_dir_all(dir.path().join("repo")).unwrap();
        std::fs::write(
            dir.path().join("repo/lifeboat.yaml"),
            format!(
                "apiVersion: lifeboat.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: prod\nspec:\n  role: primary\n---\n\
                 apiVersion: lifeboat.dev/v1alpha1\nkind: StorageLocation\nmetadata:\n  name: local\nspec:\n  url: file://{}\n  \
                 encryption:\n    recipients: [{RECIPIENT}]\n    identitySecretRef: {{name: lifeboat-age, key: identity.txt}}\n---\n\
                 apiVersion: lifeboat.dev/v1alpha1\nkind: BackupPolicy\nmetadata:\n  name: db\nspec:\n  clusters: {{names: [prod]}}\n  \
                 include: {{namespaces: [{NS}]}}\n  schedule: '0 * * * *'\n  retention: {{keepLast: 5}}\n  storage: local\n",
                storage.display()
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("identity.txt"), format!("{IDENTITY}\n")).unwrap();
        sb.write_kubeconfig(&dir.path().join("kubeconfig")).unwrap();
        let world = World {
            rt,
            sb,
            dir,
            files,
            claims,
        };
        world.claim_bound(NS, "mysql");
        for (claim, _) in seeded {
            world.claim_bound(NS, claim);
        }
        world
    }

    pub(crate) fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    pub(crate) fn lifeboat(&self, args: &[&str]) -> (i32, String, String) {
        let (repo, kc) = (self.path("repo"), self.path("kubeconfig"));
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--repo", &repo, "--kubeconfig", &kc]);
        run(&all, None)
    }

    /// Waits until the claim is Bound; returns its volume's directory.
    pub(crate) fn claim_bound(&self, ns: &str, name: &str) -> PathBuf {
        self.claim_bound_in(&self.sb, ns, name)
    }

    /// Waits until the claim is Bound in `sb`; returns its volume's directory.
    pub(crate) fn claim_bound_in(&self, sb: &Sandbox, ns: &str, name: &str) -> PathBuf {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(sb.client(), ns);
        // A minute: with the whole suite on two cores, a restore's movers
        // can take a while to fill a claim (10 s was seen to fall short).
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            if let Some(pvc) = self.rt.block_on(api.get_opt(name)).unwrap()
                && pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
            {
                let pv = pvc.spec.unwrap().volume_name.unwrap();
                return sb.data_dir().join("volumes").join(pv);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let pvc = self.rt.block_on(api.get_opt(name)).unwrap();
        let events: Api<k8s_openapi::api::core::v1::Event> = Api::all(sb.client());
        let events: Vec<String> = self
            .rt
            .block_on(events.list(&Default::default()))
            .map(|l| {
                l.items
                    .into_iter()
                    .map(|e| {
                        format!(
                            "{:?} {:?}: {:?}",
                            e.involved_object.name, e.reason, e.message
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(sb.client(), ns);
        let pods: Vec<String> = self
            .rt
            .block_on(pods.list(&Default::default()))
            .map(|l| {
                l.items
                    .into_iter()
                    .map(|p| {
                        format!(
                            "{:?} node {:?} {:?}",
                            p.metadata.name,
                            p.spec.and_then(|s| s.node_name),
                            p.status.and_then(|s| s.phase)
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let sets: Api<k8s_openapi::api::apps::v1::ReplicaSet> = Api::namespaced(sb.client(), ns);
        let sets: Vec<String> = self
            .rt
            .block_on(sets.list(&Default::default()))
            .map(|l| {
                l.items
                    .into_iter()
                    .map(|r| format!("{:?} {:?}", r.metadata.name, r.status))
                    .collect()
            })
            .unwrap_or_default();
        panic!(
            "claim {ns}/{name} was not bound: {:?}\nevents: {events:#?}\npods: {pods:#?}\nreplica sets: {sets:#?}",
            pvc.map(|p| (p.metadata.annotations, p.status))
        );
    }

    /// Everything in the cluster labelled as made by a backup or restore.
    pub(crate) fn labelled_leftovers(&self) -> Vec<String> {
        self.labelled_leftovers_in(&self.sb)
    }

    /// Everything in `sb` labelled as made by a backup or restore.
    pub(crate) fn labelled_leftovers_in(&self, sb: &Sandbox) -> Vec<String> {
        let c = sb.client();
        let lp = ListParams::default().labels("app.kubernetes.io/managed-by=lifeboat");
        self.rt.block_on(async {
            let mut out = Vec::new();
            let with_op = |labels: &BTreeMap<String, String>| {
                labels.contains_key("lifeboat.dev/backup")
                    || labels.contains_key("lifeboat.dev/restore")
            };
            for p in Api::<Pod>::all(c.clone()).list(&lp).await.unwrap() {
                if with_op(kube::ResourceExt::labels(&p)) {
                    out.push(format!("pod {}", kube::ResourceExt::name_any(&p)));
                }
            }
            for s in Api::<Secret>::all(c.clone()).list(&lp).await.unwrap() {
                if with_op(kube::ResourceExt::labels(&s)) {
                    out.push(format!("secret {}", kube::ResourceExt::name_any(&s)));
                }
            }
            for j in Api::<k8s_openapi::api::batch::v1::Job>::all(c.clone())
                .list(&lp)
                .await
                .unwrap()
            {
                if with_op(kube::ResourceExt::labels(&j)) {
                    out.push(format!("job {}", kube::ResourceExt::name_any(&j)));
                }
            }
            for p in Api::<PersistentVolumeClaim>::all(c.clone())
                .list(&lp)
                .await
                .unwrap()
            {
                out.push(format!("pvc {}", kube::ResourceExt::name_any(&p)));
            }
            for (kind, namespaced) in [("VolumeSnapshot", true), ("VolumeSnapshotContent", false)] {
                let api: Api<DynamicObject> = Api::all_with(c.clone(), &snapshot_api(namespaced));
                for o in api.list(&ListParams::default()).await.unwrap() {
                    // A snapshot a backup keeps (`snapshot`,
                    // `keepLocalSnapshots`) is expected, not a leftover.
                    if is_kept(&o) {
                        continue;
                    }
                    out.push(format!("{kind} {}", kube::ResourceExt::name_any(&o)));
                }
            }
            out
        })
    }

    /// The VolumeSnapshotContents backups keep in `sb`.
    pub(crate) fn kept_contents_in(&self, sb: &Sandbox) -> Vec<DynamicObject> {
        let api: Api<DynamicObject> = Api::all_with(sb.client(), &snapshot_api(false));
        self.rt
            .block_on(api.list(&ListParams::default()))
            .unwrap()
            .items
            .into_iter()
            .filter(is_kept)
            .collect()
    }

    /// Every VolumeSnapshot in `sb`, any namespace.
    pub(crate) fn volume_snapshots_in(&self, sb: &Sandbox) -> Vec<String> {
        let api: Api<DynamicObject> = Api::all_with(sb.client(), &snapshot_api(true));
        self.rt
            .block_on(api.list(&ListParams::default()))
            .unwrap()
            .items
            .iter()
            .map(|o| {
                format!(
                    "{}/{}",
                    kube::ResourceExt::namespace(o).unwrap_or_default(),
                    kube::ResourceExt::name_any(o)
                )
            })
            .collect()
    }

    /// Waits until nothing labelled is left (pods may take a moment).
    pub(crate) fn nothing_left_behind(&self) {
        self.nothing_left_behind_in(&self.sb)
    }

    /// Waits until nothing labelled is left in `sb`.
    pub(crate) fn nothing_left_behind_in(&self, sb: &Sandbox) {
        let mut left = Vec::new();
        for _ in 0..200 {
            left = self.labelled_leftovers_in(sb);
            if left.is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("left behind: {left:?}");
    }

    pub(crate) fn delete_namespace(&self) {
        let ns: Api<Namespace> = Api::all(self.sb.client());
        self.rt.block_on(async {
            ns.delete(NS, &DeleteParams::default()).await.unwrap();
            for _ in 0..200 {
                if ns.get_opt(NS).await.unwrap().is_none() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            panic!("the namespace was not deleted");
        });
    }

    /// Asserts that restic lists `snapshot` of the claim, tagged with the
    /// backup (skipped, with a printed reason, without restic).
    pub(crate) fn restic_lists(&self, snapshot: &str, pvc: &str, backup: &str) {
        if let Some(text) = self.restic_snapshots() {
            assert!(
                text.contains(snapshot) && text.contains(&format!("/{NS}/{pvc}")),
                "{text}"
            );
            assert!(text.contains(&format!("backup={backup}")), "{text}");
        }
    }

    /// `lifeboat restore --from BACKUP --identity …`, which must succeed;
    /// returns its output.
    pub(crate) fn restore(&self, backup: &str) -> String {
        let (code, out, err) = self.lifeboat(&[
            "restore",
            "--from",
            backup,
            "--identity",
            &self.path("identity.txt"),
        ]);
        assert_eq!(code, 0, "{out}{err}");
        out
    }

    /// `restic snapshots --json` of the namespace's repository, opened with
    /// the password `lifeboat volumes key` prints; `None` (with a printed
    /// reason) when restic is not installed.
    pub(crate) fn restic_snapshots(&self) -> Option<String> {
        let out = self.volumes_key(&[]);
        std::fs::write(self.dir.path().join("pw"), out.lines().last().unwrap()).unwrap();
        match StdCommand::new("restic")
            .arg("-r")
            .arg(self.dir.path().join("storage/volumes/prod").join(NS))
            .arg("--password-file")
            .arg(self.dir.path().join("pw"))
            .args(["--no-cache", "snapshots", "--json"])
            .output()
        {
            Ok(o) => {
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
                Some(String::from_utf8_lossy(&o.stdout).into_owned())
            }
            Err(e) => {
                eprintln!("SKIPPED the restic part: restic cannot run: {e}");
                None
            }
        }
    }

    /// `lifeboat volumes key EXTRA…` for `prod`'s repository of the
    /// namespace, with the identity; must succeed; returns its output.
    pub(crate) fn volumes_key(&self, extra: &[&str]) -> String {
        let (repo, identity) = (self.path("repo"), self.path("identity.txt"));
        let mut args = vec!["volumes", "key", "--repo", &repo, "--cluster", "prod"];
        args.extend(["--namespace", NS, "--identity", &identity]);
        args.extend_from_slice(extra);
        let (code, out, err) = run(&args, None);
        assert_eq!(code, 0, "{out}{err}");
        out
    }

    pub(crate) fn manifest(&self, backup: &str) -> serde_json::Value {
        let path = self
            .dir
            .path()
            .join("storage/clusters/prod/backups")
            .join(backup)
            .join("manifest.json");
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }
}

/// The API of VolumeSnapshots (`true`) or VolumeSnapshotContents.
pub(crate) fn snapshot_api(namespaced: bool) -> ApiResource {
    let (kind, plural) = if namespaced {
        ("VolumeSnapshot", "volumesnapshots")
    } else {
        ("VolumeSnapshotContent", "volumesnapshotcontents")
    };
    ApiResource {
        group: "snapshot.storage.k8s.io".into(),
        version: "v1".into(),
        api_version: "snapshot.storage.k8s.io/v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// A VolumeSnapshotContent a backup keeps: labelled by lifeboat as kept,
/// on Retain.
pub(crate) fn is_kept(o: &DynamicObject) -> bool {
    let labels = kube::ResourceExt::labels(o);
    labels
        .get("app.kubernetes.io/managed-by")
        .map(String::as_str)
        == Some("lifeboat")
        && labels.contains_key("lifeboat.dev/kept")
        && o.data["spec"]["deletionPolicy"] == "Retain"
}

pub(crate) fn assert_same_files(dir: &Path, files: &BTreeMap<PathBuf, Vec<u8>>) {
    for (path, content) in files {
        let got = std::fs::read(dir.join(path))
            .unwrap_or_else(|e| panic!("{} in the restored volume: {e}", path.display()));
        assert!(
            &got == content,
            "{} differs after the restore",
            path.display()
        );
    }
    assert!(dir.join("empty").is_dir());
    assert_eq!(
        std::fs::read_link(dir.join("ibdata1.link")).unwrap(),
        Path::new("ibdata1")
    );
}

#[test]
fn snapshot_move_round_trip_restores_every_file_byte_for_byte() {
    let w = World::new(Path::new(env!("CARGO_BIN_EXE_lifeboat")));
    let (code, out, err) = w.lifeboat(&["backup", "--policy", "db"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("Completed") && out.contains("1 of 1 volumes"),
        "{out}"
    );
    assert!(
        err.contains("volume mysql-persistent/mysql: snapshot "),
        "{err}"
    );
    let backup = out.split_whitespace().next().unwrap().to_string();
    let manifest = w.manifest(&backup);
    assert_eq!(manifest["formatVersion"], 2);
    let volume = &manifest["volumes"][0];
    assert_eq!(volume["pvc"], "mysql");
    assert_eq!(volume["method"], "snapshotMove");
    assert!(volume["files"].as_u64().unwrap() >= 4, "{volume}");
    assert!(
        volume["node"]
            .as_str()
            .unwrap()
            .starts_with("sandbox-node-")
    );
    let snapshot = volume["snapshot"].as_str().unwrap().to_string();
    assert!(
        manifest["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "volumes/mysql-persistent/mysql.json.zst.age"),
        "{manifest}"
    );
    w.nothing_left_behind();

    // restic reads the repository with its password.
    w.restic_lists(&snapshot, "mysql", &backup);

    // `backups verify` finds the snapshot in its repository, without a key.
    let verify = |w: &World| {
        run(
            &["backups", "verify", &backup, "--repo", &w.path("repo")],
            None,
        )
    };
    let (code, out, err) = verify(&w);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(", 1 volume snapshot"), "{out}");

    w.delete_namespace();
    let out = w.restore(&backup);
    assert!(
        out.contains("filled   volume mysql-persistent/mysql: "),
        "{out}"
    );
    assert!(
        out.contains("skipped  persistentvolumes/pvc-") && out.contains("gets a fresh volume"),
        "{out}"
    );
    let volume = w.claim_bound(NS, "mysql");
    assert_same_files(&volume, &w.files);
    let deployment: Api<Deployment> = Api::namespaced(w.sb.client(), NS);
    assert!(
        w.rt.block_on(deployment.get_opt("mysql"))
            .unwrap()
            .is_some()
    );
    w.nothing_left_behind();

    // A snapshot file replaced by another is damage, and so is a missing one.
    let file = w
        .dir
        .path()
        .join("storage/volumes/prod")
        .join(NS)
        .join("snapshots")
        .join(&snapshot);
    let genuine = std::fs::read(&file).unwrap();
    let mut swapped = genuine.clone();
    swapped[0] ^= 1;
    std::fs::write(&file, &swapped).unwrap();
    let (code, out, err) = verify(&w);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("DAMAGED: volumes/mysql-persistent/mysql") && out.contains("not to its name"),
        "{out}"
    );
    std::fs::remove_file(&file).unwrap();
    let (code, out, err) = verify(&w);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("forgotten or deleted"), "{out}");

    // Deleting the backup forgets its snapshot too.
    std::fs::write(&file, &genuine).unwrap();
    let (code, out, err) = run(
        &[
            "backups",
            "delete",
            &backup,
            "--yes",
            "--repo",
            &w.path("repo"),
        ],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 volume snapshot forgotten"), "{out}");
    assert!(!file.exists(), "the snapshot file is gone");
    assert!(
        !w.dir
            .path()
            .join("storage/clusters/prod/backups")
            .join(&backup)
            .exists(),
        "the backup is gone"
    );
}

/// A second backup of the claim is incremental: files whose size and mtime
/// did not change are taken from the first backup's snapshot (its parent),
/// so only the changed file's bytes are uploaded.
#[test]
fn a_second_backup_uploads_only_what_changed_in_the_claim() {
    let w = World::new(Path::new(env!("CARGO_BIN_EXE_lifeboat")));
    let back_up = |w: &World| {
        let (code, out, err) = w.lifeboat(&["backup", "--policy", "db"]);
        assert_eq!(code, 0, "{out}{err}");
        let backup = out.split_whitespace().next().unwrap().to_string();
        w.manifest(&backup)["volumes"][0].clone()
    };
    let first = back_up(&w);
    let first_new = first["newBytes"].as_u64().unwrap();
    assert!(first_new >= 700_000, "{first}");

    // Rewrite the 64 KiB table file; the 700 KB ibdata1 is left alone.
    let volume = w.claim_bound(NS, "mysql");
    let table = volume.join("todolist/items.ibd");
    let mut changed = std::fs::read(&table).unwrap();
    changed.iter_mut().for_each(|b| *b = b.wrapping_add(1));
    std::fs::write(&table, &changed).unwrap();

    // Backups are named by the second they start in; a fast machine could
    // otherwise start both in one second, and a slot is backed up once.
    std::thread::sleep(Duration::from_millis(1100)); // a new backup slot
    let second = back_up(&w);
    assert_ne!(second["snapshot"], first["snapshot"], "{second}");
    assert_eq!(second["bytes"], first["bytes"], "same size: {second}");
    let second_new = second["newBytes"].as_u64().unwrap();
    assert!(
        (65_536..200_000).contains(&second_new),
        "only the changed 64 KiB (plus trees) is new, not {second_new} of {first_new}: {second}"
    );
    w.nothing_left_behind();
}

/// After a key rotation (`volumes key --new-generation`) a backup written
/// before it restores from the generation that holds its snapshot, with
/// that generation's key.
#[test]
fn a_backup_from_before_a_key_rotation_restores_from_its_own_generation() {
    let w = World::new(Path::new(env!("CARGO_BIN_EXE_lifeboat")));
    let (code, out, err) = w.lifeboat(&["backup", "--policy", "db"]);
    assert_eq!(code, 0, "{out}{err}");
    let backup = out.split_whitespace().next().unwrap().to_string();
    w.volumes_key(&["--new-generation"]);
    assert!(
        w.dir
            .path()
            .join("storage/volumes/prod")
            .join(format!("{NS}.g2/config"))
            .exists()
    );
    w.delete_namespace();
    let out = w.restore(&backup);
    assert!(
        out.contains("filled   volume mysql-persistent/mysql: "),
        "{out}"
    );
    assert_same_files(&w.claim_bound(NS, "mysql"), &w.files);
    w.nothing_left_behind();
}

#[test]
fn a_failing_mover_makes_the_backup_partially_failed_and_leaves_nothing() {
    let w = World::new(Path::new("/bin/false"));
    let (code, out, err) = w.lifeboat(&["backup", "--policy", "db"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("PartiallyFailed"), "{out}");
    assert!(
        err.contains("volume mysql-persistent/mysql failed: the mover pod")
            && err.contains("exited with code 1"),
        "{err}"
    );
    let backup = out.split_whitespace().next().unwrap().to_string();
    let manifest = w.manifest(&backup);
    assert_eq!(manifest["phase"], "PartiallyFailed");
    assert_eq!(manifest["volumes"][0]["phase"], "Failed");
    w.nothing_left_behind();
}

impl World {
    /// Gives the policy `spec.volumes` (YAML indented for `spec:`).
    pub(crate) fn set_volumes(&self, volumes: &str) {
        let path = self.dir.path().join("repo/lifeboat.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let base = text.split("  volumes:").next().unwrap().to_string();
        std::fs::write(&path, format!("{base}  volumes:\n{volumes}")).unwrap();
    }
}

#[test]
fn a_rule_that_skips_the_claim_backs_up_its_objects_only() {
    let w = World::new(Path::new("/bin/false"));
    // A rule that skips the claim: objects only, said so, nothing created.
    w.set_volumes(
        "    rules:\n      - match: {labelSelector: {matchLabels: {app: mysql}}}\n        method: skip\n",
    );
    let (code, out, err) = w.lifeboat(&["backup", "--policy", "db"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("volume mysql-persistent/mysql: skipped (rule 1)"),
        "{err}"
    );
    let backup = out.split_whitespace().next().unwrap().to_string();
    let manifest = w.manifest(&backup);
    assert_eq!(manifest["phase"], "Completed", "{manifest}");
    assert_eq!(manifest["volumes"].as_array().map_or(0, Vec::len), 0);
    w.nothing_left_behind();
}

impl World {
    /// Prepares a controller run: the location's identity in a Secret of
    /// `lifeboat`, the policy repository pushed to a bare remote. Returns
    /// the remote's URL.
    pub(crate) fn controller_remote(&self) -> String {
        self.identity_secret(&self.sb);
        let root = self.dir.path();
        crate::plan::push_to_new_remote(root, &root.join("repo"), "policies")
    }

    /// The location's identity as the Secret `lifeboat/lifeboat-age` the
    /// StorageLocation's `identitySecretRef` names, in `sb`.
    pub(crate) fn identity_secret(&self, sb: &Sandbox) {
        self.rt.block_on(async {
            let c = sb.client();
            let ns: Namespace =
                serde_json::from_value(serde_json::json!({"metadata": {"name": "lifeboat"}}))
                    .unwrap();
            Api::<Namespace>::all(c.clone())
                .create(&Default::default(), &ns)
                .await
                .unwrap();
            let secret: Secret = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "lifeboat-age", "namespace": "lifeboat"},
                "stringData": {"identity.txt": IDENTITY},
            }))
            .unwrap();
            Api::<Secret>::namespaced(c, "lifeboat")
                .create(&Default::default(), &secret)
                .await
                .unwrap();
        });
    }

    /// One controller cycle (`reconcile --once`) of `prod` against `remote`.
    pub(crate) fn reconcile(&self, remote: &str, extra: &[&str]) -> (i32, String, String) {
        self.reconcile_as("prod", "kubeconfig", remote, extra)
    }

    /// One controller cycle of `cluster`, through the kubeconfig file
    /// `kubeconfig` of the world's directory (its cache beside it).
    pub(crate) fn reconcile_as(
        &self,
        cluster: &str,
        kubeconfig: &str,
        remote: &str,
        extra: &[&str],
    ) -> (i32, String, String) {
        let out = self
            .reconcile_command(cluster, kubeconfig, remote, extra)
            .output()
            .expect("lifeboat runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The command of one controller cycle (see [`World::reconcile_as`]),
    /// to spawn or to run with more environment.
    pub(crate) fn reconcile_command(
        &self,
        cluster: &str,
        kubeconfig: &str,
        remote: &str,
        extra: &[&str],
    ) -> StdCommand {
        let mut cmd = StdCommand::new(env!("CARGO_BIN_EXE_lifeboat"));
        cmd.args([
            "reconcile",
            "--once",
            "--repo",
            remote,
            "--cluster",
            cluster,
        ])
        .arg("--kubeconfig")
        .arg(self.path(kubeconfig))
        .arg("--cache-dir")
        .arg(self.path(&format!("cache-{cluster}")))
        .args(["--secrets-namespace", "lifeboat", "--no-status"])
        .args(extra);
        cmd
    }

    /// Starts `lifeboat ARGS --repo … --kubeconfig …` (output piped).
    fn spawn(&self, args: &[&str]) -> std::process::Child {
        StdCommand::new(env!("CARGO_BIN_EXE_lifeboat"))
            .args(args)
            .arg("--repo")
            .arg(self.path("repo"))
            .arg("--kubeconfig")
            .arg(self.path("kubeconfig"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Waits until a mover pod exists, while `child` still runs.
    fn wait_for_a_mover(&self, child: &mut std::process::Child) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !self
            .labelled_leftovers()
            .iter()
            .any(|l| l.starts_with("pod "))
        {
            assert!(
                std::time::Instant::now() < deadline,
                "no mover pod appeared"
            );
            assert!(child.try_wait().unwrap().is_none(), "the run ended first");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Sends SIGINT (Ctrl-C) to `child` and waits for it.
fn interrupt(child: std::process::Child) -> std::process::Output {
    let status = StdCommand::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    child.wait_with_output().unwrap()
}

#[test]
fn the_controller_backs_up_volume_data_and_a_committed_restore_request_fills_the_claim() {
    use crate::plan::git;
    let w = World::new(Path::new(env!("CARGO_BIN_EXE_lifeboat")));
    let remote = w.controller_remote();
    let root = w.dir.path();
    let work = root.join("repo");
    let reconcile = || w.reconcile(&remote, &[]);

    // The scheduled backup carries the claim's data.
    let (code, out, err) = reconcile();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok   back up `db`"), "{out}");
    let backups = root.join("storage/clusters/prod/backups");
    let backup = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.starts_with("db-"))
        .expect("a backup");
    let manifest = w.manifest(&backup);
    assert_eq!(manifest["phase"], "Completed", "{manifest}");
    assert_eq!(manifest["volumes"][0]["method"], "snapshotMove");
    assert_eq!(manifest["volumes"][0]["phase"], "Completed");
    w.nothing_left_behind();

    // The namespace is lost; a RestoreRequest is committed.
    w.delete_namespace();
    std::fs::write(
        work.join("restore.yaml"),
        format!(
            "apiVersion: lifeboat.dev/v1alpha1\nkind: RestoreRequest\nmetadata: {{name: bring-back}}\n\
             spec:\n  source: {{cluster: prod, policy: db, backup: {backup}}}\n  target: {{cluster: prod}}\n"
        ),
    )
    .unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "restore"]);
    git(&work, &["push", "-q", &remote, "main"]);
    let (code, out, err) = reconcile();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok   restore"), "{out}");
    let volume = w.claim_bound(NS, "mysql");
    assert_same_files(&volume, &w.files);
    w.nothing_left_behind();
}

/// Retention in the controller forgets a pruned backup's volume snapshots
/// (as `backups delete` does); the kept backup's snapshot stays.
#[test]
fn the_controllers_retention_prune_forgets_the_pruned_backups_volume_snapshots() {
    let w = World::new(Path::new(env!("CARGO_BIN_EXE_lifeboat")));
    let policy = w.dir.path().join("repo/lifeboat.yaml");
    let text = std::fs::read_to_string(&policy).unwrap();
    std::fs::write(&policy, text.replace("keepLast: 5", "keepLast: 1")).unwrap();
    let remote = w.controller_remote();
    let snapshot_of = |backup: &str| {
        w.manifest(backup)["volumes"][0]["snapshot"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let snapshots = w
        .dir
        .path()
        .join("storage/volumes/prod")
        .join(NS)
        .join("snapshots");

    let (code, out, err) = w.reconcile(&remote, &["--now", "2026-12-01T10:30:00Z"]);
    assert_eq!(code, 0, "{out}{err}");
    let first = snapshot_of("db-20261201-100000");
    assert!(snapshots.join(&first).exists());

    let (code, out, err) = w.reconcile(&remote, &["--now", "2026-12-01T11:30:00Z"]);
    assert_eq!(code, 0, "{out}{err}");
    let second = snapshot_of("db-20261201-110000");
    assert!(
        !w.dir
            .path()
            .join("storage/clusters/prod/backups/db-20261201-100000")
            .exists(),
        "keepLast 1 prunes the first backup\n{out}"
    );
    assert!(
        !snapshots.join(&first).exists(),
        "its snapshot is forgotten"
    );
    assert!(snapshots.join(&second).exists(), "the kept backup's stays");
    w.nothing_left_behind();
}

#[test]
fn a_mover_whose_image_cannot_be_pulled_fails_its_volume_after_the_start_timeout() {
    let w = World::new(Path::new(env!("CARGO_BIN_EXE_lifeboat")));
    let started = std::time::Instant::now();
    let (code, out, err) = w.lifeboat(&[
        "backup",
        "--policy",
        "db",
        "--mover-image",
        "registry.invalid/lifeboat:0",
        "--mover-start-timeout",
        "2",
        "--move-timeout",
        "20",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let backup = out.split_whitespace().next().unwrap().to_string();
    let manifest = w.manifest(&backup);
    assert_eq!(manifest["phase"], "PartiallyFailed", "{manifest}");
    let error = manifest["volumes"][0]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.contains("did not start within 2s")
            && (error.contains("ImagePullBackOff") || error.contains("ErrImagePull"))
            && error.contains("registry.invalid/lifeboat:0"),
        "{error}"
    );
    w.nothing_left_behind();
}

#[test]
fn a_backup_killed_mid_move_leaves_objects_that_the_next_backup_removes() {
    let w = World::new(Path::new(env!("CARGO_BIN_EXE_lifeboat")));
    let mut child = w.spawn(&["backup", "--policy", "db"]);
    // Killed (SIGKILL: no cleanup) as soon as its mover pod exists.
    w.wait_for_a_mover(&mut child);
    child.kill().unwrap();
    child.wait().unwrap();
    let left = w.labelled_leftovers();
    assert!(
        left.iter().any(|l| l.starts_with("pod "))
            && left.iter().any(|l| l.starts_with("secret "))
            && left.iter().any(|l| l.starts_with("VolumeSnapshotContent ")),
        "{left:?}"
    );

    std::thread::sleep(Duration::from_millis(1100)); // a new backup slot
    let (code, out, err) = w.lifeboat(&["backup", "--policy", "db"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Completed"), "{out}");
    w.nothing_left_behind();
    // The storage snapshots went with their contents.
    let dir = w.sb.data_dir().join("snapshots");
    let count = || std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
    for _ in 0..200 {
        if count() == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert_eq!(count(), 0, "storage snapshots left in the CSI driver");
}

/// A controller killed (SIGKILL) while its mover copies: the next
/// controller resumes the same backup from its operation record, adopts the
/// mover that kept running instead of moving the data again, commits the
/// backup, and leaves nothing behind; the data restores byte for byte.
#[test]
fn a_controller_killed_mid_move_resumes_the_backup_and_adopts_its_mover() {
    let w = World::new(Path::new(env!("CARGO_BIN_EXE_lifeboat")));
    let remote = w.controller_remote();
    let now = ["--now", "2026-12-01T10:30:00Z"];
    let reconcile = || w.reconcile_command("prod", "kubeconfig", &remote, &now);
    let mut child = reconcile()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    w.wait_for_a_mover(&mut child);
    child.kill().unwrap();
    child.wait().unwrap();
    let dir = w
        .dir
        .path()
        .join("storage/clusters/prod/backups/db-20261201-100000");
    assert!(!dir.join("manifest.json").exists());
    let op: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("operation.json")).unwrap()).unwrap();
    assert_eq!(op["step"], "volumes", "{op}");
    assert_eq!(op["moving"][0], format!("{NS}/mysql"), "{op}");
    assert!(op["owner"].as_str().unwrap().contains("controller"), "{op}");
    let (code, out, err) = run(&["backups", "list", "--repo", &w.path("repo")], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!(
            "in progress: db-20261201-100000 (volumes; 0/1 volumes, 0 B, moving {NS}/mysql)"
        )),
        "{out}"
    );

    // The restarted controller plans the same slot and resumes it.
    let done = reconcile().env("RUST_LOG", "info").output().unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&done.stdout),
        String::from_utf8_lossy(&done.stderr),
    );
    assert!(done.status.success(), "{out}{err}");
    assert!(out.contains("ok   back up `db`"), "{out}");
    assert!(
        err.contains("adopting the mover of an interrupted run"),
        "{err}"
    );
    let manifest = w.manifest("db-20261201-100000");
    assert_eq!(manifest["phase"], "Completed", "{manifest}");
    assert_eq!(manifest["volumes"][0]["phase"], "Completed", "{manifest}");
    assert!(
        !dir.join("operation.json").exists(),
        "the record outlived the commit"
    );
    w.nothing_left_behind();
    // One snapshot: the adopted mover's; the data was not moved twice.
    if let Some(text) = w.restic_snapshots() {
        let listed: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        assert_eq!(listed.len(), 1, "{text}");
        assert_eq!(
            listed[0]["id"], manifest["volumes"][0]["snapshot"],
            "{text}"
        );
    }
    w.delete_namespace();
    w.restore("db-20261201-100000");
    let volume = w.claim_bound(NS, "mysql");
    assert_same_files(&volume, &w.files);
    w.nothing_left_behind();
}

/// A controller killed (SIGKILL) while a RestoreRequest's mover fills a
/// claim: the next controller resumes the restore within its deadline
/// (instead of marking it failed), fills the claim the first run created,
/// applies the workload, and leaves nothing behind.
#[test]
fn a_controller_killed_mid_restore_resumes_it_and_fills_the_claim() {
    use crate::plan::git;
    let w = World::new(Path::new(env!("CARGO_BIN_EXE_lifeboat")));
    let remote = w.controller_remote();
    let (code, out, err) = w.reconcile(&remote, &["--now", "2026-12-01T10:30:00Z"]);
    assert_eq!(code, 0, "{out}{err}");
    w.delete_namespace();
    let work = w.dir.path().join("repo");
    std::fs::write(
        work.join("restore.yaml"),
        "apiVersion: lifeboat.dev/v1alpha1\nkind: RestoreRequest\nmetadata: {name: bring-back}\n\
         spec:\n  source: {cluster: prod, policy: db, backup: latest}\n  target: {cluster: prod}\n",
    )
    .unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "restore"]);
    git(&work, &["push", "-q", &remote, "main"]);

    let mut child = w
        .reconcile_command(
            "prod",
            "kubeconfig",
            &remote,
            &["--now", "2026-12-01T10:40:00Z"],
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    w.wait_for_a_mover(&mut child);
    child.kill().unwrap();
    child.wait().unwrap();
    let record_path = w
        .dir
        .path()
        .join("storage/clusters/prod/restores/bring-back/record.json");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record_path).unwrap()).unwrap();
    assert_eq!(record["phase"], "InProgress", "{record}");
    assert!(record["deadline"].is_string(), "{record}");

    let (code, out, err) = w.reconcile(&remote, &["--now", "2026-12-01T10:50:00Z"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok   restore"), "{out}");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record_path).unwrap()).unwrap();
    assert_eq!(record["phase"], "Completed", "{record}");
    assert_eq!(record["volumes"][0]["phase"], "Completed", "{record}");
    let volume = w.claim_bound(NS, "mysql");
    assert_same_files(&volume, &w.files);
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(w.sb.client(), NS);
    assert!(
        w.rt.block_on(deployments.list(&Default::default()))
            .unwrap()
            .items
            .len()
            == 1,
        "the workload was not applied"
    );
    w.nothing_left_behind();
}

/// Ctrl-C (SIGINT) on `lifeboat backup` mid-move removes what it created:
/// the mover, snapshots and claims in the cluster, and the uncommitted
/// backup in storage.
#[test]
fn ctrl_c_on_a_backup_by_hand_removes_what_it_created() {
    let w = World::new(Path::new(env!("CARGO_BIN_EXE_lifeboat")));
    let mut child = w.spawn(&["backup", "--policy", "db"]);
    w.wait_for_a_mover(&mut child);
    let out = interrupt(child);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        err.contains("interrupted: removing what backup db-"),
        "{err}"
    );
    assert!(err.contains("is left"), "{err}");
    w.nothing_left_behind();
    let backups = w.dir.path().join("storage/clusters/prod/backups");
    let left: Vec<_> = std::fs::read_dir(&backups)
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

/// Ctrl-C on `lifeboat restore` mid-fill removes its movers and their
/// claims, and records the restore as interrupted.
#[test]
fn ctrl_c_on_a_restore_by_hand_removes_its_movers_and_records_it() {
    let w = World::new(Path::new(env!("CARGO_BIN_EXE_lifeboat")));
    let (code, out, err) = w.lifeboat(&["backup", "--policy", "db"]);
    assert_eq!(code, 0, "{out}{err}");
    let backup = out.split_whitespace().next().unwrap().to_string();
    w.delete_namespace();
    let id = w.path("identity.txt");
    let mut child = w.spawn(&["restore", "--from", &backup, "--identity", &id]);
    w.wait_for_a_mover(&mut child);
    let out = interrupt(child);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    w.nothing_left_behind();
    let restores = w.dir.path().join("storage/clusters/prod/restores");
    let records: Vec<serde_json::Value> = std::fs::read_dir(&restores)
        .unwrap()
        .map(|e| {
            serde_json::from_slice(&std::fs::read(e.unwrap().path().join("record.json")).unwrap())
                .unwrap()
        })
        .collect();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["phase"], "Failed", "{}", records[0]);
    assert!(
        records[0]["message"]
            .as_str()
            .unwrap()
            .contains("interrupted by Ctrl-C"),
        "{}",
        records[0]
    );
}
