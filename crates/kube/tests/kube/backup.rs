//! Backup engine against the sandbox API server, seeded with the fixture
//! apps, writing to a `file://` repository in a temp dir.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::TryStreamExt;
use lifeboat_core::selector::LabelSelector;
use lifeboat_core::{ClusterResources, Exclude, Include, NamespacePattern, ResourcePattern};
use lifeboat_kube::backup::{
    BackupError, BackupOptions, BackupSummary, Progress, RetryPolicy, backup,
};
use lifeboat_kube::select::Selection;
use lifeboat_sandbox::{FaultRule, Sandbox};
use lifeboat_store::{
    ArchiveEntry, BackupSpec, LocationConfig, LogEntry, LogLevel, Manifest, Phase, Repository,
};
use serde_json::{Value, json};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/apps")
}

async fn sandbox() -> Sandbox {
    let sb = Sandbox::builder()
        .seed_dir(fixtures())
        .start()
        .await
        .expect("sandbox starts");
    // An object carrying managedFields, to check they are stripped.
    sb.seed([json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "managed", "namespace": "wordpress",
            "labels": {"app": "wordpress"},
            "managedFields": [{"manager": "kubectl", "operation": "Apply",
                "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": {}}]},
        "data": {"k": "v"}
    })])
    .expect("seed");
    sb
}

fn opts() -> BackupOptions {
    BackupOptions {
        page_size: 3,
        retry: RetryPolicy {
            attempts: 4,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
        },
        ..BackupOptions::default()
    }
}

fn selection(ns: &[&str], resources: &[&str], exclude_res: &[&str]) -> Selection {
    Selection::new(
        &Include {
            namespaces: ns.iter().map(|s| NamespacePattern(s.to_string())).collect(),
            resources: resources
                .iter()
                .map(|s| ResourcePattern(s.to_string()))
                .collect(),
            ..Include::default()
        },
        &Exclude {
            resources: exclude_res
                .iter()
                .map(|s| ResourcePattern(s.to_string()))
                .collect(),
            ..Exclude::default()
        },
    )
    .expect("valid selection")
}

struct Run {
    result: Result<BackupSummary, BackupError>,
    manifest: Manifest,
    entries: Vec<ArchiveEntry>,
    log: Vec<LogEntry>,
    _dir: tempfile::TempDir,
}

impl Run {
    /// `resource[.group]/namespace/name` of every stored object.
    fn keys(&self) -> BTreeSet<String> {
        self.entries
            .iter()
            .map(|e| {
                let rk = if e.group.is_empty() {
                    e.resource.clone()
                } else {
                    format!("{}.{}", e.resource, e.group)
                };
                format!("{rk}/{}/{}", e.namespace.as_deref().unwrap_or("-"), e.name)
            })
            .collect()
    }

    fn has(&self, key: &str) -> bool {
        self.keys().contains(key)
    }
}

async fn run_with(
    sb: &Sandbox,
    sel: &Selection,
    opts: &BackupOptions,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = Repository::open(&LocationConfig {
        url: format!("file://{}", dir.path().display()),
        ..LocationConfig::default()
    })
    .await
    .expect("repository opens");
    let slot: jiff::Timestamp = "2026-01-02T03:04:05Z".parse().expect("timestamp");
    let writer = repo
        .begin_backup(BackupSpec {
            cluster: "test".into(),
            policy: "nightly".into(),
            policy_revision: None,
            schedule_slot: slot,
            start_time: slot,
            labels: Default::default(),
        })
        .await
        .expect("backup begins");
    let name = writer.name().to_string();
    let handle = writer.handle();
    let result = backup(&sb.client(), sel, &handle, opts, progress).await;
    let manifest = match &result {
        Ok(_) => writer.finish(slot).await.expect("finish"),
        Err(e) => writer
            .finish_failed(slot, e.to_string())
            .await
            .expect("finish_failed"),
    };
    let reader = repo.open_backup("test", &name).await.expect("open backup");
    let entries: Vec<ArchiveEntry> = reader.entries().try_collect().await.expect("entries");
    let log = reader.log().await.expect("log");
    Run {
        result,
        manifest,
        entries,
        log,
        _dir: dir,
    }
}

async fn run(sb: &Sandbox, sel: &Selection) -> Run {
    run_with(sb, sel, &opts(), &|_| {}).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_selected_is_stored() {
    let sb = sandbox().await;
    let r = run(&sb, &Selection::all()).await;
    let summary = r.result.as_ref().expect("backup succeeds");
    assert_eq!(r.manifest.phase, Phase::Completed, "log: {:?}", r.log);
    assert_eq!(summary.errors, 0);
    assert_eq!(summary.items, r.entries.len() as u64);
    for key in [
        "namespaces/-/wordpress",
        "namespaces/-/widgets",
        "namespaces/-/ledger",
        "secrets/wordpress/mysql-pass",
        "configmaps/wordpress/wordpress-config",
        "configmaps/wordpress/managed",
        "persistentvolumeclaims/wordpress/mysql-pv-claim",
        "deployments.apps/wordpress/wordpress",
        "services/wordpress/mysql",
        "statefulsets.apps/ledger/ledger",
        "cronjobs.batch/ledger/ledger-compact",
        "poddisruptionbudgets.policy/ledger/ledger",
        "widgets.example.com/widgets/sprocket",
        "widgets.example.com/widgets/flywheel",
        "customresourcedefinitions.apiextensions.k8s.io/-/widgets.example.com",
        "clusterroles.rbac.authorization.k8s.io/-/widget-operator",
        "clusterrolebindings.rbac.authorization.k8s.io/-/widget-operator",
        "serviceaccounts/widgets/widget-operator",
        "roles.rbac.authorization.k8s.io/widgets/widget-editor",
    ] {
        assert!(r.has(key), "{key} missing from {:#?}", r.keys());
    }
    // Opted out, and never backed up.
    assert!(!r.has("configmaps/ledger/scratch"));
    assert!(!r.keys().iter().any(|k| k.starts_with("events")));
    // Every stored object has apiVersion and kind, and no managedFields.
    for e in &r.entries {
        let v: Value = serde_json::from_slice(&e.json).expect("json");
        assert!(v.get("apiVersion").and_then(Value::as_str).is_some(), "{v}");
        assert!(v.get("kind").and_then(Value::as_str).is_some(), "{v}");
        assert!(v.pointer("/metadata/managedFields").is_none(), "{v}");
    }
    let managed = r
        .entries
        .iter()
        .find(|e| e.name == "managed")
        .expect("managed stored");
    let v: Value = serde_json::from_slice(&managed.json).expect("json");
    assert_eq!(v["apiVersion"], "v1");
    assert_eq!(v["kind"], "ConfigMap");
    assert_eq!(v["data"]["k"], "v");
    // Paging: page size 3 means several list requests for configmaps.
    let cm_lists = sb
        .requests()
        .iter()
        .filter(|q| q.verb == "list" && q.resource == "configmaps")
        .count();
    assert!(cm_lists > 1, "configmaps listed in {cm_lists} pages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_globs_and_related_cluster_objects() {
    let sb = sandbox().await;
    let r = run(&sb, &selection(&["word*", "widg?ts"], &[], &[])).await;
    r.result.as_ref().expect("backup succeeds");
    assert_eq!(r.manifest.phase, Phase::Completed, "log: {:?}", r.log);
    assert!(r.has("secrets/wordpress/mysql-pass"));
    assert!(r.has("widgets.example.com/widgets/sprocket"));
    assert!(r.has("namespaces/-/wordpress"));
    assert!(!r.has("namespaces/-/ledger"));
    assert!(!r.keys().iter().any(|k| k.contains("/ledger/")));
    // Related cluster-scoped objects with clusterResources: auto.
    let pvc = r
        .entries
        .iter()
        .find(|e| e.name == "mysql-pv-claim")
        .expect("pvc");
    let pvc: Value = serde_json::from_slice(&pvc.json).expect("json");
    let pv = pvc["spec"]["volumeName"].as_str().expect("bound PVC");
    assert!(
        r.has(&format!("persistentvolumes/-/{pv}")),
        "{:#?}",
        r.keys()
    );
    assert!(r.has("customresourcedefinitions.apiextensions.k8s.io/-/widgets.example.com"));
    assert!(r.has("clusterrolebindings.rbac.authorization.k8s.io/-/widget-operator"));
    assert!(r.has("clusterroles.rbac.authorization.k8s.io/-/widget-operator"));
    // Only related cluster objects: no other cluster roles.
    let cluster_roles = r
        .keys()
        .iter()
        .filter(|k| k.starts_with("clusterroles."))
        .count();
    assert_eq!(cluster_roles, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_resources_never_pulls_nothing_related() {
    let sb = sandbox().await;
    let sel = Selection::new(
        &Include {
            namespaces: vec![NamespacePattern("widgets".into())],
            cluster_resources: ClusterResources::Never,
            ..Include::default()
        },
        &Exclude::default(),
    )
    .expect("selection");
    let r = run(&sb, &sel).await;
    r.result.as_ref().expect("backup succeeds");
    assert!(r.has("widgets.example.com/widgets/sprocket"));
    assert!(
        !r.keys()
            .iter()
            .any(|k| k.contains("/-/") && !k.starts_with("namespaces/"))
    );
    // The CRD is not stored, but the backup records that a restore target
    // needs it; built-in group resources are not CRDs.
    let crds: Vec<&str> = r
        .manifest
        .prerequisites
        .iter()
        .filter(|p| p.kind == lifeboat_store::PrerequisiteKind::CustomResourceDefinition)
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(
        crds,
        ["widgets.example.com"],
        "{:?}",
        r.manifest.prerequisites
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_include_exclude_and_labels() {
    let sb = sandbox().await;
    let r = run(
        &sb,
        &selection(&[], &["configmaps", "secrets"], &["secrets"]),
    )
    .await;
    r.result.as_ref().expect("backup succeeds");
    let keys = r.keys();
    assert!(keys.contains("configmaps/wordpress/wordpress-config"));
    assert!(
        keys.iter()
            .all(|k| k.starts_with("configmaps/") || k.starts_with("namespaces/")),
        "{keys:#?}"
    );

    let sel = Selection::new(
        &Include {
            label_selector: Some(LabelSelector {
                match_labels: [("app".to_string(), "wordpress".to_string())].into(),
                ..LabelSelector::default()
            }),
            ..Include::default()
        },
        &Exclude::default(),
    )
    .expect("selection");
    let r = run(&sb, &sel).await;
    r.result.as_ref().expect("backup succeeds");
    assert!(r.has("configmaps/wordpress/managed"));
    assert!(!r.has("widgets.example.com/widgets/sprocket"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_errors_are_retried() {
    let sb = sandbox().await;
    sb.add_fault(
        FaultRule::error(500)
            .resource("secrets")
            .verb("list")
            .times(2),
    );
    sb.add_fault(FaultRule::drop_connection().resource("configmaps").times(1));
    let r = run(&sb, &Selection::all()).await;
    let summary = r.result.as_ref().expect("backup succeeds");
    assert_eq!(summary.errors, 0, "log: {:?}", r.log);
    assert_eq!(r.manifest.phase, Phase::Completed);
    assert!(r.has("secrets/wordpress/mysql-pass"));
    assert!(r.has("configmaps/wordpress/wordpress-config"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_error_fails_one_resource() {
    let sb = sandbox().await;
    sb.add_fault(FaultRule::error(500).resource("secrets").verb("list"));
    let r = run(&sb, &Selection::all()).await;
    let summary = r.result.as_ref().expect("backup still succeeds");
    assert_eq!(summary.errors, 1);
    assert_eq!(r.manifest.phase, Phase::PartiallyFailed);
    assert!(!r.keys().iter().any(|k| k.starts_with("secrets/")));
    assert!(r.has("configmaps/wordpress/wordpress-config"));
    assert!(
        r.log
            .iter()
            .any(|l| l.level == LogLevel::Error && l.resource.as_deref() == Some("secrets")),
        "{:?}",
        r.log
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_continue_token_restarts_without_duplicates() {
    let sb = Arc::new(sandbox().await);
    sb.seed((0..10).map(|i| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("bulk-{i:02}"), "namespace": "ledger"}})
    }))
    .expect("seed");
    let armed = AtomicBool::new(false);
    let sb2 = Arc::clone(&sb);
    let progress = move |p: Progress| {
        if let Progress::Page { resource, .. } = p
            && resource == "configmaps"
            && !armed.swap(true, Ordering::SeqCst)
        {
            sb2.add_fault(FaultRule::error(410).resource("configmaps").times(1));
        }
    };
    let r = run_with(&sb, &Selection::all(), &opts(), &progress).await;
    let summary = r.result.as_ref().expect("backup succeeds");
    assert_eq!(summary.errors, 0, "log: {:?}", r.log);
    assert!(summary.warnings >= 1);
    let cms: Vec<_> = r
        .entries
        .iter()
        .filter(|e| e.resource == "configmaps")
        .map(|e| format!("{:?}/{}", e.namespace, e.name))
        .collect();
    let unique: BTreeSet<_> = cms.iter().collect();
    assert_eq!(cms.len(), unique.len(), "no duplicates: {cms:?}");
    for i in 0..10 {
        assert!(r.has(&format!("configmaps/ledger/bulk-{i:02}")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_api_server_fails_the_backup() {
    let sb = Arc::new(sandbox().await);
    let sb2 = Arc::clone(&sb);
    let progress = move |p: Progress| {
        if matches!(p, Progress::Page { .. }) {
            sb2.shutdown();
        }
    };
    let r = run_with(&sb, &Selection::all(), &opts(), &progress).await;
    let err = r.result.expect_err("backup fails");
    assert!(
        matches!(err, BackupError::ApiUnavailable { .. }),
        "unexpected error: {err}"
    );
    assert!(err.to_string().contains("run the backup again"));
    assert_eq!(r.manifest.phase, Phase::Failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_api_server_fails_discovery() {
    let sb = sandbox().await;
    sb.shutdown();
    let r = run(&sb, &Selection::all()).await;
    let err = r.result.expect_err("backup fails");
    assert!(matches!(err, BackupError::Discovery { .. }), "{err}");
    assert_eq!(r.manifest.phase, Phase::Failed);
    assert!(r.entries.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excluded_namespace_with_cluster_wide_lists() {
    // Most namespaces selected: namespaced resources are listed cluster-wide
    // and filtered client-side.
    let sb = sandbox().await;
    let sel = Selection::new(
        &Include::default(),
        &Exclude {
            namespaces: vec![NamespacePattern("led*".into())],
            ..Exclude::default()
        },
    )
    .expect("selection");
    let r = run(&sb, &sel).await;
    r.result.as_ref().expect("backup succeeds");
    assert!(r.has("secrets/wordpress/mysql-pass"));
    assert!(r.has("widgets.example.com/widgets/sprocket"));
    assert!(!r.keys().iter().any(|k| k.contains("/ledger/")));
    assert!(!r.has("namespaces/-/ledger"));
    let per_namespace_lists = sb
        .requests()
        .iter()
        .filter(|q| q.verb == "list" && q.resource == "secrets" && !q.namespace.is_empty())
        .count();
    assert_eq!(per_namespace_lists, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_api_group_is_a_warning() {
    let sb = sandbox().await;
    // Discovery of /apis/batch/v1 fails, as for an aggregated API whose
    // backing service is down.
    sb.add_fault(FaultRule::error(500).group("batch").verb("get"));
    let r = run(&sb, &Selection::all()).await;
    let summary = r.result.as_ref().expect("backup succeeds");
    assert_eq!(summary.errors, 0, "log: {:?}", r.log);
    assert!(summary.warnings >= 1);
    assert_eq!(r.manifest.phase, Phase::Completed);
    assert!(!r.keys().iter().any(|k| k.starts_with("cronjobs.batch/")));
    assert!(r.has("statefulsets.apps/ledger/ledger"));
    assert!(
        r.log
            .iter()
            .any(|l| l.level == LogLevel::Warning && l.message.contains("batch/v1")),
        "{:?}",
        r.log
    );
}
