//! ImageStream images end to end, against real registries: Debian's
//! `docker-registry` (CNCF distribution) started twice by the test, images
//! written into the first with `skopeo copy` from OCI layouts the test
//! builds (a multi-arch index and a single manifest), `lifeboat backup`
//! copying them into a `file://` location, a second backup deduplicating,
//! `lifeboat restore` pushing them into the second registry under a
//! namespace mapping, and `lifeboat backups sweep-images` removing blobs
//! no backup references only after the grace.
//!
//! Skipped (with the reason printed) where `docker-registry` or `skopeo`
//! is not installed.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use lifeboat_sandbox::Sandbox;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::run;

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
const SKOPEO: &str = "skopeo";
const INTERNAL: &str = "image-registry.openshift-image-registry.svc:5000";
const RECIPIENT: &str = "age1268crxs6ntgpzr3y2auy80yrejxsfmps549ul66ch93t0p5wr9aqyxanhq";
const IDENTITY: &str = "AGE-SECRET-KEY-1NUHTD5JXP04HTK00P4CPJCXE9YWJ34TKAX3DSQG7YACT4JHKZZQS9PFD7G";

/// A `docker-registry serve` process on a free port, killed on drop.
struct Registry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
                 delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let registry = Registry {
            child,
            port,
            _dir: dir,
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return registry;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("docker-registry did not listen on {port}");
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn image(&self, repo_tag: &str) -> String {
        format!("docker://127.0.0.1:{}/{repo_tag}", self.port)
    }
}

fn tools_missing() -> Option<String> {
    if !Path::new(REGISTRY_BIN).exists() {
        return Some(format!(
            "{REGISTRY_BIN} is not installed (Debian package docker-registry)"
        ));
    }
    match Command::new(SKOPEO).arg("--version").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("skopeo is not installed".into()),
    }
}

fn skopeo(args: &[&str]) -> (bool, String) {
    let out = Command::new(SKOPEO).args(args).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// An OCI layout directory; `blob` writes content-addressed files.
struct Layout(PathBuf);

impl Layout {
    fn new(dir: &Path) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout(dir.to_path_buf())
    }

    fn blob(&self, bytes: &[u8]) -> (String, usize) {
        let d = digest(bytes);
        std::fs::write(self.0.join("blobs/sha256").join(&d[7..]), bytes).unwrap();
        (d, bytes.len())
    }

    /// A platform manifest with a config and one layer of `size` bytes.
    fn manifest(&self, arch: &str, seed: u8, size: usize) -> (String, usize) {
        // Not random, but not compressible into nothing either.
        let layer: Vec<u8> = (0..size)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[seed as usize % 4] ^ seed)
            .collect();
        let layer = self.blob(&layer);
        let config = self.blob(
            json!({"architecture": arch, "os": "linux",
                   "rootfs": {"type": "layers", "diff_ids": [layer.0]}})
            .to_string()
            .as_bytes(),
        );
        self.blob(
            json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                   "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                              "digest": config.0, "size": config.1},
                   "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                               "digest": layer.0, "size": layer.1}]})
            .to_string()
            .as_bytes(),
        )
    }

    /// `index.json` naming `top` as `tag`.
    fn tag(&self, top: &(String, usize), media_type: &str, tag: &str) {
        std::fs::write(
            self.0.join("index.json"),
            json!({"schemaVersion": 2, "manifests": [{"mediaType": media_type,
                   "digest": top.0, "size": top.1,
                   "annotations": {"org.opencontainers.image.ref.name": tag}}]})
            .to_string(),
        )
        .unwrap();
    }

    fn push(&self, registry: &Registry, tag: &str, dest: &str) {
        let src = format!("oci:{}:{tag}", self.0.display());
        let (ok, out) = skopeo(&[
            "copy",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
            &src,
            &registry.image(dest),
        ]);
        assert!(ok, "skopeo copy {src} failed: {out}");
    }
}

/// An ImageStream as OpenShift's image controllers leave it: tags whose
/// head (and history) point into the internal registry.
fn image_stream(ns: &str, name: &str, tags: &[(&str, &[&str])]) -> Value {
    json!({
        "apiVersion": "image.openshift.io/v1", "kind": "ImageStream",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"lookupPolicy": {"local": false}},
        "status": {
            "dockerImageRepository": format!("{INTERNAL}/{ns}/{name}"),
            "tags": tags.iter().map(|(tag, digests)| json!({
                "tag": tag,
                "items": digests.iter().map(|d| json!({
                    "created": "2026-11-30T10:00:00Z",
                    "dockerImageReference": format!("{INTERNAL}/{ns}/{name}@{d}"),
                    "image": d, "generation": 1
                })).collect::<Vec<_>>()
            })).collect::<Vec<_>>()
        }
    })
}

fn image_stream_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "imagestreams.image.openshift.io"},
        "spec": {"group": "image.openshift.io", "scope": "Namespaced",
            "names": {"kind": "ImageStream", "plural": "imagestreams", "singular": "imagestream",
                      "listKind": "ImageStreamList"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object",
                    "x-kubernetes-preserve-unknown-fields": true}}}]}
    })
}

fn write_repo(dir: &Path, storage: &Path, prod: &Registry, dr: &Registry) {
    std::fs::write(
        dir.join("lifeboat.yaml"),
        format!(
            "apiVersion: lifeboat.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: prod\nspec:\n  role: primary\n  \
             openshift:\n    registryEndpoint: {}\n---\n\
             apiVersion: lifeboat.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: dr\nspec:\n  role: standby\n  \
             openshift:\n    registryEndpoint: {}\n---\n\
             apiVersion: lifeboat.dev/v1alpha1\nkind: StorageLocation\nmetadata:\n  name: local\nspec:\n  url: file://{}\n  \
             encryption:\n    recipients: [{RECIPIENT}]\n---\n\
             apiVersion: lifeboat.dev/v1alpha1\nkind: BackupPolicy\nmetadata:\n  name: shop\nspec:\n  clusters: {{names: [prod]}}\n  \
             include: {{namespaces: [shop]}}\n  schedule: '0 * * * *'\n  retention: {{keepLast: 5}}\n  storage: local\n  \
             images: {{internalRegistry: copy}}\n",
            prod.url(),
            dr.url(),
            storage.display()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("identity.txt"), format!("{IDENTITY}\n")).unwrap();
}

/// Every blob object in the location, with its modification time.
fn blobs(storage: &Path) -> BTreeMap<String, SystemTime> {
    let dir = storage.join("images/blobs/sha256");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return BTreeMap::new();
    };
    entries
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().modified().unwrap(),
            )
        })
        .collect()
}

fn manifest(storage: &Path, backup: &str) -> Value {
    serde_json::from_slice(
        &std::fs::read(
            storage
                .join("clusters/prod/backups")
                .join(backup)
                .join("manifest.json"),
        )
        .unwrap(),
    )
    .unwrap()
}

#[test]
fn image_streams_copy_deduplicate_restore_and_sweep() {
    if let Some(reason) = tools_missing() {
        eprintln!("skipped: {reason}");
        return;
    }
    let prod_registry = Registry::start();
    let dr_registry = Registry::start();
    let work = tempfile::tempdir().unwrap();

    // A multi-arch web image (an OCI index of two platforms) and a
    // single-manifest api image, written into the source registry.
    let web = Layout::new(&work.path().join("web"));
    let amd64 = web.manifest("amd64", 1, 300_000);
    let arm64 = web.manifest("arm64", 2, 200_000);
    let index = web.blob(
        json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
               "manifests": [
                   {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd64.0,
                    "size": amd64.1, "platform": {"architecture": "amd64", "os": "linux"}},
                   {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm64.0,
                    "size": arm64.1, "platform": {"architecture": "arm64", "os": "linux"}}]})
        .to_string()
        .as_bytes(),
    );
    web.tag(&index, "application/vnd.oci.image.index.v1+json", "latest");
    web.push(&prod_registry, "latest", "shop/web:latest");
    let api = Layout::new(&work.path().join("api"));
    let api_manifest = api.manifest("amd64", 3, 100_000);
    api.tag(
        &api_manifest,
        "application/vnd.oci.image.manifest.v1+json",
        "v1",
    );
    api.push(&prod_registry, "v1", "shop/api:v1");

    let seed = work.path().join("seed");
    std::fs::create_dir_all(&seed).unwrap();
    let write_seed = |streams: Vec<Value>| {
        let mut docs = vec![
            image_stream_crd(),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
        ];
        docs.extend(streams);
        let text: Vec<String> = docs.iter().map(|d| d.to_string()).collect();
        std::fs::write(seed.join("shop.yaml"), text.join("\n---\n")).unwrap();
    };
    write_seed(vec![
        image_stream("shop", "web", &[("latest", &[index.0.as_str()])]),
        image_stream("shop", "api", &[("v1", &[api_manifest.0.as_str()])]),
    ]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let prod = rt
        .block_on(Sandbox::builder().seed_dir(seed.clone()).start())
        .unwrap();
    let dir = work.path().join("policies");
    let storage = work.path().join("storage");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&storage).unwrap();
    write_repo(&dir, &storage, &prod_registry, &dr_registry);
    let prod_kubeconfig = work.path().join("prod.kubeconfig");
    prod.write_kubeconfig(&prod_kubeconfig).unwrap();
    let r = dir.to_str().unwrap();
    let backup = |kubeconfig: &Path| {
        let (code, out, err) = run(
            &[
                "backup",
                "--repo",
                r,
                "--policy",
                "shop",
                "--cluster",
                "prod",
                "--kubeconfig",
                kubeconfig.to_str().unwrap(),
                "--no-volume-data",
            ],
            None,
        );
        assert_eq!(code, 0, "{out}{err}");
        let name = out.split_whitespace().next().unwrap().to_string();
        if !out.contains("2 images") {
            let log = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "age -d -i {id} {s}/clusters/prod/backups/{name}/log.jsonl.zst.age | zstd -d; \
                     age -d -i {id} {s}/clusters/prod/backups/{name}/resources.tar.zst.age | zstd -d | tar xO --wildcards '*imagestreams*'",
                    id = dir.join("identity.txt").display(),
                    s = storage.display()
                ))
                .output()
                .unwrap();
            panic!("{out}{err}\nlog:\n{}", String::from_utf8_lossy(&log.stdout));
        }
        assert!(out.contains("Completed"), "{out}{err}");
        name
    };

    // First backup: every manifest, config and layer of both images, once
    // each, encrypted.
    let first = backup(&prod_kubeconfig);
    let after_first = blobs(&storage);
    // index + 2 platform manifests + 2 configs + 2 layers, and the api
    // image's manifest, config and layer.
    assert_eq!(after_first.len(), 10, "{after_first:?}");
    assert!(
        after_first.keys().all(|k| k.ends_with(".age")),
        "{after_first:?}"
    );
    let m = manifest(&storage, &first);
    let images = m["images"].as_array().unwrap();
    let web_entry = images
        .iter()
        .find(|i| i["repository"] == "shop/web")
        .unwrap();
    assert_eq!(web_entry["tag"], "latest");
    assert_eq!(web_entry["digest"], index.0.as_str());
    assert_eq!(
        web_entry["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(web_entry["manifests"].as_array().unwrap().len(), 2);
    assert_eq!(web_entry["blobs"].as_array().unwrap().len(), 4);
    let (code, out, err) = run(
        &[
            "backups",
            "show",
            &first,
            "--repo",
            r,
            "--location",
            "local",
            "--cluster",
            "prod",
        ],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("shop/web:latest  {}  2  4", index.0)),
        "{out}"
    );
    // Nothing is left pending once the manifest lists the images.
    assert!(
        std::fs::read_dir(storage.join("images/pending/prod"))
            .map(|d| d.count() == 0)
            .unwrap_or(true)
    );
    // A blob is an age file; decrypted it is the registry's bytes.
    let layer_file = storage
        .join("images/blobs/sha256")
        .join(format!("{}.age", &api_manifest.0[7..]));
    let plain = Command::new("age")
        .args(["-d", "-i"])
        .arg(dir.join("identity.txt"))
        .arg(&layer_file)
        .output();
    if let Ok(plain) = plain {
        assert!(plain.status.success(), "{plain:?}");
        assert_eq!(digest(&plain.stdout), api_manifest.0);
    }

    // Second backup (another second, so another name): nothing new stored.
    std::thread::sleep(Duration::from_millis(1100));
    let second = backup(&prod_kubeconfig);
    assert_ne!(first, second);
    assert_eq!(
        blobs(&storage),
        after_first,
        "the second backup wrote blobs again"
    );

    // Restore into the DR cluster under a namespace mapping: the images
    // land in the DR registry as shop-dr/<stream>, same digests.
    let dr_seed = work.path().join("dr-seed");
    std::fs::create_dir_all(&dr_seed).unwrap();
    std::fs::write(dr_seed.join("crd.yaml"), image_stream_crd().to_string()).unwrap();
    let dr = rt
        .block_on(Sandbox::builder().seed_dir(dr_seed).start())
        .unwrap();
    let dr_kubeconfig = work.path().join("dr.kubeconfig");
    dr.write_kubeconfig(&dr_kubeconfig).unwrap();
    let identity = dir.join("identity.txt");
    let restore = |mapping: &str, extra: &[&str]| {
        let mut args = vec![
            "restore",
            "--repo",
            r,
            "--from",
            &second,
            "--source-cluster",
            "prod",
            "--cluster",
            "dr",
            "--kubeconfig",
            dr_kubeconfig.to_str().unwrap(),
            "--identity",
            identity.to_str().unwrap(),
            "--namespace-mapping",
            mapping,
            "--no-volume-data",
            "--format",
            "json",
        ];
        args.extend_from_slice(extra);
        let (code, out, err) = run(&args, None);
        assert_eq!(code, 0, "{out}{err}");
        serde_json::from_str::<Value>(&out).unwrap()
    };

    // A dry run says what it would push and pushes nothing.
    let record = restore("shop=shop-dry", &["--dry-run"]);
    let planned = record["images"].as_array().unwrap();
    assert_eq!(planned.len(), 2, "{record:#}");
    let web_plan = planned
        .iter()
        .find(|i| i["repository"] == "shop-dry/web")
        .unwrap();
    assert_eq!(web_plan["blobsPushed"], 4, "{web_plan}");
    assert_eq!(web_plan["manifestsPushed"], 3, "{web_plan}");
    let (found, _) = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &dr_registry.image("shop-dry/web:latest"),
    ]);
    assert!(!found, "a dry run must not push");

    let record = restore("shop=shop-dr", &[]);
    assert_eq!(record["phase"], "Completed", "{record:#}");
    let pushed = record["images"].as_array().unwrap();
    assert!(pushed.iter().all(|i| i["error"].is_null()), "{record:#}");
    let web_pushed = pushed
        .iter()
        .find(|i| i["repository"] == "shop-dr/web")
        .unwrap();
    assert_eq!(web_pushed["blobsPushed"], 4);
    let (ok, raw) = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &dr_registry.image("shop-dr/web:latest"),
    ]);
    assert!(ok, "{raw}");
    assert_eq!(digest(raw.as_bytes()), index.0, "the index digest changed");
    // Every platform manifest and blob is there: the whole index copies out.
    let copied = work.path().join("copied");
    let (ok, out) = skopeo(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        &dr_registry.image("shop-dr/web:latest"),
        &format!("oci:{}:latest", copied.display()),
    ]);
    assert!(ok, "{out}");
    let (ok, raw) = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &dr_registry.image("shop-dr/api:v1"),
    ]);
    assert!(ok && digest(raw.as_bytes()) == api_manifest.0, "{raw}");
    // Pushing again skips what the registry has.
    let record = restore("shop=shop-dr", &["--existing", "skip"]);
    let web_again = record["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["repository"] == "shop-dr/web")
        .unwrap()
        .clone();
    assert_eq!(web_again["blobsPushed"], 0, "{web_again}");
    assert_eq!(web_again["blobsPresent"], 4, "{web_again}");

    // The api ImageStream goes; a third backup references only web. Once
    // the first two backups are deleted, api's blobs are unreferenced.
    drop(prod);
    write_seed(vec![image_stream(
        "shop",
        "web",
        &[("latest", &[index.0.as_str()])],
    )]);
    let prod = rt
        .block_on(Sandbox::builder().seed_dir(seed.clone()).start())
        .unwrap();
    prod.write_kubeconfig(&prod_kubeconfig).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let (code, out, err) = run(
        &[
            "backup",
            "--repo",
            r,
            "--policy",
            "shop",
            "--cluster",
            "prod",
            "--kubeconfig",
            prod_kubeconfig.to_str().unwrap(),
            "--no-volume-data",
        ],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 images"), "{out}");
    for b in [&first, &second] {
        let (code, out, err) = run(
            &[
                "backups",
                "delete",
                b,
                "--repo",
                r,
                "--location",
                "local",
                "--cluster",
                "prod",
                "--yes",
            ],
            None,
        );
        assert_eq!(code, 0, "{out}{err}");
    }
    let sweep = |now: &str| {
        let (code, out, err) = run(
            &[
                "backups",
                "sweep-images",
                "--repo",
                r,
                "--location",
                "local",
                "--cluster",
                "prod",
                "--now",
                now,
                "--format",
                "json",
            ],
            None,
        );
        assert_eq!(code, 0, "{out}{err}");
        serde_json::from_str::<Value>(&out).unwrap()
    };
    // Now: api's blobs are unreferenced but younger than the grace (24h).
    let now = jiff::Timestamp::now();
    let report = sweep(&now.to_string());
    assert_eq!(report["grace"], "1d", "{report}");
    assert_eq!(report["deleted"], 0, "{report}");
    assert_eq!(report["recent"], 3, "{report}");
    assert_eq!(blobs(&storage).len(), 10);
    // Two days on: api's three blobs go, web's seven (referenced) stay.
    let later = now + jiff::SignedDuration::from_hours(48);
    let report = sweep(&later.to_string());
    assert_eq!(report["deleted"], 3, "{report}");
    assert_eq!(report["referenced"], 7, "{report}");
    let left = blobs(&storage);
    assert_eq!(left.len(), 7, "{left:?}");
    assert!(!left.contains_key(&format!("{}.age", &api_manifest.0[7..])));
    assert!(left.contains_key(&format!("{}.age", &index.0[7..])));
    drop(prod);
    drop(dr);
}

/// A layer the registry serves with other bytes than its digest (damaged
/// in the registry's storage) is never stored under that digest: the
/// backup says which image failed and is `PartiallyFailed`.
#[test]
fn a_layer_served_damaged_is_not_stored() {
    if let Some(reason) = tools_missing() {
        eprintln!("skipped: {reason}");
        return;
    }
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let api = Layout::new(&work.path().join("api"));
    let manifest_digest = api.manifest("amd64", 5, 50_000);
    api.tag(
        &manifest_digest,
        "application/vnd.oci.image.manifest.v1+json",
        "v1",
    );
    api.push(&registry, "v1", "shop/api:v1");
    let m: Value = serde_json::from_slice(
        &std::fs::read(api.0.join("blobs/sha256").join(&manifest_digest.0[7..])).unwrap(),
    )
    .unwrap();
    let layer = m["layers"][0]["digest"].as_str().unwrap().to_string();
    // distribution keeps a blob at blobs/sha256/<2 hex>/<hex>/data.
    let data = registry
        ._dir
        .path()
        .join("data/docker/registry/v2/blobs/sha256")
        .join(&layer[7..9])
        .join(&layer[7..])
        .join("data");
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();

    let seed = work.path().join("seed");
    std::fs::create_dir_all(&seed).unwrap();
    let docs = [
        image_stream_crd(),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
        image_stream("shop", "api", &[("v1", &[manifest_digest.0.as_str()])]),
    ];
    let text: Vec<String> = docs.iter().map(|d| d.to_string()).collect();
    std::fs::write(seed.join("shop.yaml"), text.join("\n---\n")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sb = rt
        .block_on(Sandbox::builder().seed_dir(seed).start())
        .unwrap();
    let dir = work.path().join("policies");
    let storage = work.path().join("storage");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&storage).unwrap();
    write_repo(&dir, &storage, &registry, &registry);
    let kubeconfig = work.path().join("kubeconfig");
    sb.write_kubeconfig(&kubeconfig).unwrap();
    let (code, out, err) = run(
        &[
            "backup",
            "--repo",
            dir.to_str().unwrap(),
            "--policy",
            "shop",
            "--cluster",
            "prod",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--no-volume-data",
        ],
        None,
    );
    assert_eq!(
        code, 1,
        "a damaged image makes the backup PartiallyFailed: {out}{err}"
    );
    assert!(out.contains("PartiallyFailed"), "{out}");
    let stored = blobs(&storage);
    assert!(
        !stored.keys().any(|k| k.starts_with(&layer[7..])),
        "the damaged layer was stored: {stored:?}"
    );
    let backup = out.split_whitespace().next().unwrap();
    assert!(manifest(&storage, backup)["images"].is_null());
    drop(sb);
}
