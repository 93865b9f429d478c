//! Restore engine tests against the in-process sandbox API server: backups
//! are made by listing a seeded sandbox and writing the objects with the
//! store's `BackupWriter` into a `file://` repository.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use age::secrecy::ExposeSecret;
use bytes::Bytes;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::discovery::{Discovery, Scope, verbs};
use lifeboat_core::{ExistingResources, Include, NamespacePattern};
use lifeboat_kube::restore::{RestoreError, RestoreOptions, RestoreOutcome, restore};
use lifeboat_kube::select::Selection;
use lifeboat_sandbox::{FaultRule, Sandbox};
use lifeboat_store::{
    BackupReader, BackupSpec, LocationConfig, ObjectEntry, Repository, RestoreAction,
};
use serde_json::{Value, json};

type R<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const APPS: &[&str] = &["wordpress", "widgets", "ledger"];

fn apps_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/apps")
}

async fn seeded() -> R<Sandbox> {
    Ok(Sandbox::builder().seed_dir(apps_dir()).start().await?)
}

struct Repo {
    dir: tempfile::TempDir,
    config: LocationConfig,
}

fn repo_config(dir: &Path, keys: Option<(&str, &str)>) -> LocationConfig {
    LocationConfig {
        url: format!("file://{}", dir.display()),
        recipients: keys.map(|k| vec![k.0.to_string()]).unwrap_or_default(),
        identities: keys.map(|k| vec![k.1.to_string()]).unwrap_or_default(),
        ..Default::default()
    }
}

fn new_repo(keys: Option<(&str, &str)>) -> R<Repo> {
    let dir = tempfile::tempdir()?;
    let config = repo_config(dir.path(), keys);
    Ok(Repo { dir, config })
}

/// Every listable object of the cluster, as (resource, group, ar, object).
async fn dump(client: &kube::Client) -> R<Vec<(String, String, Value)>> {
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut out = Vec::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if !caps.supports_operation(verbs::LIST) || ar.plural.contains('/') {
                continue;
            }
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
            for mut obj in api.list(&ListParams::default()).await? {
                obj.types = Some(kube::core::TypeMeta {
                    api_version: ar.api_version.clone(),
                    kind: ar.kind.clone(),
                });
                let namespaced = caps.scope == Scope::Namespaced;
                let mut v = serde_json::to_value(&obj)?;
                if !namespaced && let Some(m) = v["metadata"].as_object_mut() {
                    m.remove("namespace");
                }
                out.push((ar.plural.clone(), ar.group.clone(), v));
            }
        }
    }
    Ok(out)
}

/// Backs up the whole cluster; returns the backup name.
async fn backup(client: &kube::Client, repo: &Repo) -> R<String> {
    let store = Repository::open(&repo.config).await?;
    let now = Timestamp::now();
    let writer = store
        .begin_backup(BackupSpec {
            cluster: "src".into(),
            policy: "test".into(),
            policy_revision: None,
            schedule_slot: now,
            start_time: now,
            labels: BTreeMap::new(),
        })
        .await?;
    for (resource, group, v) in dump(client).await? {
        let s = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
        writer
            .add(ObjectEntry {
                resource,
                group,
                namespace: s("/metadata/namespace"),
                name: s("/metadata/name").unwrap_or_default(),
                api_version: s("/apiVersion").unwrap_or_default(),
                kind: s("/kind").unwrap_or_default(),
                json: Bytes::from(serde_json::to_vec(&v)?),
            })
            .await?;
    }
    let name = writer.name().to_string();
    writer.finish(Timestamp::now()).await?;
    Ok(name)
}

async fn open(config: &LocationConfig, backup: &str) -> R<BackupReader> {
    let store = Repository::open(config).await?;
    Ok(store.open_backup("src", backup).await?)
}

fn only(namespaces: &[&str]) -> Selection {
    Selection::new(
        &Include {
            namespaces: namespaces
                .iter()
                .map(|n| NamespacePattern(n.to_string()))
                .collect(),
            ..Default::default()
        },
        &Default::default(),
    )
    .unwrap_or_else(|_| Selection::all())
}

async fn run(
    client: &kube::Client,
    reader: &BackupReader,
    opts: &RestoreOptions,
) -> Result<RestoreOutcome, RestoreError> {
    restore(client, reader, opts, &|_| {}).await
}

/// Drops what the server sets, so objects compare across restores.
fn normalize(v: Value) -> Value {
    lifeboat_kube::transform::comparable(v)
}

/// Normalized objects in `namespaces`, keyed by resource/namespace/name.
/// Objects a controller made with a generated name (a ReplicaSet's pods)
/// are recreated under new names after a restore, as in a real cluster, so
/// they count per owner instead: `pods./ns/owned-by ReplicaSet web-1234`
/// maps to how many there are.
async fn snapshot(client: &kube::Client, namespaces: &[&str]) -> R<BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    for (resource, group, v) in dump(client).await? {
        let ns = v
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if !namespaces.contains(&ns.as_str()) || resource == "events" {
            continue;
        }
        let controller = v
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .and_then(|refs| {
                refs.iter()
                    .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
            });
        if let Some(owner) = controller
            && v.pointer("/metadata/generateName").is_some()
        {
            let key = format!(
                "{resource}.{group}/{ns}/owned-by {} {}",
                owner["kind"].as_str().unwrap_or_default(),
                owner["name"].as_str().unwrap_or_default()
            );
            let count = out.get(&key).and_then(Value::as_u64).unwrap_or(0);
            out.insert(key, json!(count + 1));
            continue;
        }
        let name = v.pointer("/metadata/name").and_then(Value::as_str);
        out.insert(
            format!("{resource}.{group}/{ns}/{}", name.unwrap_or_default()),
            normalize(v),
        );
    }
    Ok(out)
}

async fn delete_namespaces(client: &kube::Client, names: &[&str]) -> R {
    let api: Api<Namespace> = Api::all(client.clone());
    for n in names {
        api.delete(n, &DeleteParams::default()).await?;
    }
    for _ in 0..200 {
        let mut left = 0;
        for n in names {
            if api.get_opt(n).await?.is_some() {
                left += 1;
            }
        }
        if left == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("namespaces were not deleted".into())
}

fn find<'a>(
    o: &'a RestoreOutcome,
    resource: &str,
    ns: Option<&str>,
    name: &str,
) -> R<&'a lifeboat_store::RestoreItem> {
    o.items
        .iter()
        .find(|i| i.resource == resource && i.namespace.as_deref() == ns && i.name == name)
        .ok_or_else(|| format!("no line for {resource} {ns:?} {name}: {:#?}", o.items).into())
}

#[tokio::test]
async fn round_trip_restores_every_object() -> R {
    let sb = seeded().await?;
    let client = sb.client();
    let mut before = snapshot(&client, APPS).await?;
    assert!(before.len() > 20, "{before:#?}");
    let repo = new_repo(None)?;
    let name = backup(&client, &repo).await?;
    delete_namespaces(&client, APPS).await?;

    let reader = open(&repo.config, &name).await?;
    let out = run(&client, &reader, &RestoreOptions::default()).await?;
    assert_eq!(out.counts.failed, 0, "{:#?}", out.items);
    assert!(out.counts.created > 20);
    // Objects labelled lifeboat.dev/exclude=true are not restored.
    before
        .retain(|_, v| v.pointer("/metadata/labels/lifeboat.dev~1exclude") != Some(&json!("true")));
    // The ReplicaSet controller recreates the pods the restore skipped.
    let mut after = snapshot(&client, APPS).await?;
    for _ in 0..100 {
        if after == before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = snapshot(&client, APPS).await?;
    }
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    for (k, v) in &before {
        assert_eq!(Some(v), after.get(k), "{k}");
    }
    // The CRD existed: skipped as "exists"; service-account tokens and
    // kube-root-ca.crt are skipped with a reason.
    let crd = find(
        &out,
        "customresourcedefinitions.apiextensions.k8s.io",
        None,
        "widgets.example.com",
    )?;
    assert_eq!(crd.action, RestoreAction::Skipped);
    let root = find(&out, "configmaps", Some("wordpress"), "kube-root-ca.crt")?;
    assert_eq!(root.action, RestoreAction::Skipped);
    assert!(
        root.reason
            .as_deref()
            .unwrap_or_default()
            .contains("target cluster")
    );
    // Deterministic order: a second dry run of the same backup reports
    // the same lines in the same order.
    let again = run(&client, &reader, &RestoreOptions::default()).await?;
    let keys = |o: &RestoreOutcome| {
        o.items
            .iter()
            .map(|i| (i.resource.clone(), i.namespace.clone(), i.name.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&out), keys(&again));
    Ok(())
}

#[tokio::test]
async fn namespace_mapping_into_a_second_namespace() -> R {
    let sb = seeded().await?;
    let client = sb.client();
    let repo = new_repo(None)?;
    let name = backup(&client, &repo).await?;
    let reader = open(&repo.config, &name).await?;
    let mut opts = RestoreOptions {
        selection: only(&["widgets", "wordpress"]),
        ..Default::default()
    };
    opts.transform.namespace_mapping = BTreeMap::from([
        ("widgets".to_string(), "widgets-copy".to_string()),
        ("wordpress".to_string(), "wordpress-copy".to_string()),
    ]);
    let out = run(&client, &reader, &opts).await?;
    assert_eq!(out.counts.failed, 0, "{:#?}", out.items);
    let original = snapshot(&client, &["widgets"]).await?;
    let copy = snapshot(&client, &["widgets-copy"]).await?;
    assert_eq!(original.len(), copy.len());
    let rb: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "widgets-copy",
        &kube::core::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", "RoleBinding"),
            "rolebindings",
        ),
    );
    let binding = rb.get("widget-operator-editor").await?;
    assert_eq!(
        binding.data["subjects"][0]["namespace"],
        json!("widgets-copy")
    );
    let widgets: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "widgets-copy",
        &kube::core::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("example.com", "v1", "Widget"),
            "widgets",
        ),
    );
    assert_eq!(widgets.list(&ListParams::default()).await?.items.len(), 2);
    // PVs are cluster-scoped and selected only with all namespaces; the
    // claimRef mapping is covered in the second-cluster test.
    Ok(())
}

#[tokio::test]
async fn second_cluster_with_storage_class_mapping() -> R {
    let src = seeded().await?;
    let repo = new_repo(None)?;
    let name = backup(&src.client(), &repo).await?;
    let dst = Sandbox::start().await?;
    let client = dst.client();
    let reader = open(&repo.config, &name).await?;
    let mut opts = RestoreOptions::default();
    opts.transform.storage_class_mapping =
        BTreeMap::from([("standard".to_string(), "premium".to_string())]);
    opts.transform.namespace_mapping =
        BTreeMap::from([("wordpress".to_string(), "blog".to_string())]);
    let out = run(&client, &reader, &opts).await?;
    assert_eq!(out.counts.failed, 0, "{:#?}", out.items);
    // The CRD was created and Established before the Widgets.
    let crd = find(
        &out,
        "customresourcedefinitions.apiextensions.k8s.io",
        None,
        "widgets.example.com",
    )?;
    assert_eq!(crd.action, RestoreAction::Created);
    let w = out
        .items
        .iter()
        .find(|i| i.resource == "widgets.example.com")
        .ok_or("no widget lines")?;
    assert_eq!(w.action, RestoreAction::Created);
    let pvcs: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(client.clone(), "blog");
    let claim = pvcs.get("wp-pv-claim").await?;
    let spec = claim.spec.unwrap_or_default();
    assert_eq!(spec.storage_class_name.as_deref(), Some("premium"));
    // The PV bound to it follows the namespace mapping.
    if let Some(volume) = spec.volume_name {
        let pvs: Api<k8s_openapi::api::core::v1::PersistentVolume> = Api::all(client.clone());
        let pv = pvs.get(&volume).await?;
        let claim_ref = pv.spec.and_then(|s| s.claim_ref).unwrap_or_default();
        assert_eq!(claim_ref.namespace.as_deref(), Some("blog"));
    }
    Ok(())
}

async fn set_config(client: &kube::Client, value: &str) -> R {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "wordpress");
    let cm = api.get("wordpress-config").await?;
    let name = cm.metadata.name.clone().unwrap_or_default();
    let key = cm
        .data
        .as_ref()
        .and_then(|d| d.keys().next().cloned())
        .ok_or("wordpress-config has no data")?;
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {key: value}})),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn existing_resources_skip_update_fail() -> R {
    let sb = seeded().await?;
    let client = sb.client();
    let repo = new_repo(None)?;
    let name = backup(&client, &repo).await?;
    let original = snapshot(&client, &["wordpress"]).await?;
    set_config(&client, "changed").await?;
    let reader = open(&repo.config, &name).await?;
    let opts = |existing| RestoreOptions {
        selection: only(&["wordpress"]),
        existing,
        ..Default::default()
    };

    let skip = run(&client, &reader, &opts(ExistingResources::Skip)).await?;
    assert_eq!(
        skip.counts.failed + skip.counts.created + skip.counts.updated,
        0
    );
    assert!(
        skip.items
            .iter()
            .any(|i| i.reason.as_deref() == Some("exists"))
    );
    assert_ne!(original, snapshot(&client, &["wordpress"]).await?);

    let fail = run(&client, &reader, &opts(ExistingResources::Fail)).await?;
    assert!(fail.counts.failed > 0);
    assert!(fail.items.iter().any(|i| {
        i.action == RestoreAction::Failed
            && i.reason
                .as_deref()
                .unwrap_or_default()
                .contains("existingResources")
    }));

    let update = run(&client, &reader, &opts(ExistingResources::Update)).await?;
    assert_eq!(update.counts.failed, 0, "{:#?}", update.items);
    let cm = find(&update, "configmaps", Some("wordpress"), "wordpress-config")?;
    assert_eq!(cm.action, RestoreAction::Updated, "{:#?}", update.items);
    assert!(
        update
            .items
            .iter()
            .any(|i| i.reason.as_deref() == Some("unchanged"))
    );
    assert_eq!(original, snapshot(&client, &["wordpress"]).await?);
    Ok(())
}

#[tokio::test]
async fn dry_run_changes_nothing_and_marks_every_write() -> R {
    let sb = seeded().await?;
    let client = sb.client();
    let repo = new_repo(None)?;
    let name = backup(&client, &repo).await?;
    delete_namespaces(&client, &["ledger"]).await?;
    set_config(&client, "changed").await?;
    let reader = open(&repo.config, &name).await?;
    let (count, version) = (sb.object_count(), sb.resource_version());
    sb.clear_requests();
    let opts = RestoreOptions {
        dry_run: true,
        existing: ExistingResources::Update,
        ..Default::default()
    };
    let out = run(&client, &reader, &opts).await?;
    assert!(out.dry_run);
    assert_eq!(out.counts.failed, 0, "{:#?}", out.items);
    assert!(out.counts.created > 5);
    assert!(out.counts.updated >= 1);
    let secret = out
        .items
        .iter()
        .find(|i| i.resource == "services" && i.namespace.as_deref() == Some("ledger"))
        .ok_or("no service line")?;
    assert_eq!(secret.action, RestoreAction::Created);
    assert!(
        secret
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("dry run")
    );
    assert_eq!(sb.object_count(), count);
    assert_eq!(sb.resource_version(), version);
    let writes: Vec<_> = sb
        .requests()
        .into_iter()
        .filter(|r| matches!(r.verb.as_str(), "create" | "update" | "patch" | "delete"))
        .collect();
    assert!(!writes.is_empty());
    Ok(())
}

#[tokio::test]
async fn injected_server_errors_are_retried() -> R {
    let sb = seeded().await?;
    let client = sb.client();
    let repo = new_repo(None)?;
    let name = backup(&client, &repo).await?;
    delete_namespaces(&client, &["wordpress"]).await?;
    sb.add_fault(
        FaultRule::error(500)
            .verb("create")
            .resource("secrets")
            .times(3),
    );
    sb.add_fault(
        FaultRule::error(503)
            .verb("create")
            .resource("configmaps")
            .times(2),
    );
    let reader = open(&repo.config, &name).await?;
    let opts = RestoreOptions {
        selection: only(&["wordpress"]),
        ..Default::default()
    };
    let out = run(&client, &reader, &opts).await?;
    assert_eq!(out.counts.failed, 0, "{:#?}", out.items);
    let failed_then_ok = sb
        .requests()
        .iter()
        .filter(|r| r.verb == "create" && r.resource == "secrets" && r.status == 500)
        .count();
    assert_eq!(failed_then_ok, 3);
    let created = out
        .items
        .iter()
        .filter(|i| i.resource == "secrets" && i.action == RestoreAction::Created)
        .count();
    assert!(created >= 2, "{:#?}", out.items);
    Ok(())
}

fn archive_file(dir: &Path) -> R<PathBuf> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("resources.tar"))
            {
                return Ok(p);
            }
        }
    }
    Err("no resources archive".into())
}

#[tokio::test]
async fn corrupted_archive_or_wrong_identity_applies_nothing() -> R {
    let sb = seeded().await?;
    let client = sb.client();
    let a = age::x25519::Identity::generate();
    let b = age::x25519::Identity::generate();
    let (a_pub, a_sec) = (a.to_public().to_string(), a.to_string());
    let (b_pub, b_sec) = (b.to_public().to_string(), b.to_string());
    let repo = new_repo(Some((&a_pub, a_sec.expose_secret())))?;
    let name = backup(&client, &repo).await?;
    delete_namespaces(&client, &["wordpress"]).await?;
    let count = sb.object_count();

    // Wrong identity.
    let wrong = repo_config(repo.dir.path(), Some((&b_pub, b_sec.expose_secret())));
    let reader = open(&wrong, &name).await?;
    let err = run(&client, &reader, &RestoreOptions::default()).await;
    assert!(matches!(err, Err(RestoreError::Verify(_))), "{err:?}");
    assert_eq!(sb.object_count(), count);

    // A flipped byte in the archive.
    let file = archive_file(repo.dir.path())?;
    let mut bytes = std::fs::read(&file)?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&file, bytes)?;
    let reader = open(&repo.config, &name).await?;
    let err = run(&client, &reader, &RestoreOptions::default()).await;
    match err {
        Err(e @ RestoreError::Verify(_)) => {
            assert!(e.to_string().contains("nothing was restored"), "{e}");
        }
        other => return Err(format!("expected a verify error, got {other:?}").into()),
    }
    assert_eq!(sb.object_count(), count);
    Ok(())
}

#[tokio::test]
async fn denied_namespaces_are_skipped() -> R {
    let sb = seeded().await?;
    let client = sb.client();
    let repo = new_repo(None)?;
    let name = backup(&client, &repo).await?;
    delete_namespaces(&client, &["wordpress", "ledger"]).await?;
    let reader = open(&repo.config, &name).await?;
    let opts = RestoreOptions {
        selection: only(&["wordpress", "ledger"]),
        denied_namespaces: vec![NamespacePattern("word*".into())],
        ..Default::default()
    };
    let out = run(&client, &reader, &opts).await?;
    assert_eq!(out.counts.failed, 0, "{:#?}", out.items);
    let ns: Api<Namespace> = Api::all(client.clone());
    assert!(ns.get_opt("wordpress").await?.is_none());
    assert!(ns.get_opt("ledger").await?.is_some());
    let denied: Vec<_> = out
        .items
        .iter()
        .filter(|i| i.namespace.as_deref() == Some("wordpress"))
        .collect();
    assert!(!denied.is_empty());
    assert!(denied.iter().all(|i| i.action == RestoreAction::Skipped));
    assert!(denied.iter().any(|i| {
        i.reason
            .as_deref()
            .unwrap_or_default()
            .contains("deniedNamespaces")
    }));
    Ok(())
}

#[tokio::test]
async fn unknown_kind_fails_with_a_reason() -> R {
    let src = seeded().await?;
    let repo = new_repo(None)?;
    let name = backup(&src.client(), &repo).await?;
    let dst = Sandbox::start().await?;
    let reader = open(&repo.config, &name).await?;
    let mut opts = RestoreOptions {
        selection: only(&["widgets"]),
        ..Default::default()
    };
    // Namespace-only selection leaves the CRD out, so Widgets are unknown.
    opts.crd_timeout = Duration::from_secs(2);
    let out = run(&dst.client(), &reader, &opts).await?;
    let widget = out
        .items
        .iter()
        .find(|i| i.resource == "widgets.example.com")
        .ok_or("no widget line")?;
    assert_eq!(widget.action, RestoreAction::Failed);
    assert!(
        widget
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("does not serve")
    );
    Ok(())
}
