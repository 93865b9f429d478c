//! OpenShift rules end to end: OADP's own e2e app `mysql-persistent`
//! (with its SecurityContextConstraints, Route and DeploymentConfig),
//! applied to a sandbox with the OpenShift CRDs registered, backed up with
//! the backup engine and restored into a second sandbox under a namespace
//! mapping.
//!
//! The sandbox is a vanilla API server: the OpenShift kinds come from CRDs
//! registered here (as a real cluster's API server would serve them), and
//! what OpenShift's controllers would have added to the app (generated
//! Route host, dockercfg Secrets, Builds, DeploymentConfig
//! ReplicationControllers, per-namespace RoleBindings, SCC annotations on
//! the namespace) is created by the test, as those controllers would.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use jiff::Timestamp;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use lifeboat_core::{ExistingResources, Include, NamespacePattern};
use lifeboat_kube::backup::{BackupOptions, backup};
use lifeboat_kube::restore::{RestoreOptions, RestoreOutcome, restore};
use lifeboat_kube::select::Selection;
use lifeboat_kube::transform::Transform;
use lifeboat_sandbox::Sandbox;
use lifeboat_store::{
    ArchiveEntry, BackupSpec, LocationConfig, LogEntry, Manifest, PrerequisiteKind, Repository,
    RestoreAction, RestoreItem,
};
use serde_json::{Value, json};

type R<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const NS: &str = "mysql-persistent";
const SA: &str = "mysql-persistent-sa";
const DOCKERCFG: &str = "mysql-persistent-sa-dockercfg-x7k2p";
const REGISTRY: &str = "image-registry.openshift-image-registry.svc:5000";

/// OADP's sample applications, provided next to the repository.
fn oadp_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/oadp")
}

/// A CRD serving `kind` with any content (the OpenShift and OLM kinds'
/// real schemas are not needed to store and serve them).
fn crd(group: &str, version: &str, kind: &str, plural: &str, scope: &str) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {
            "group": group, "scope": scope,
            "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(),
                      "listKind": format!("{kind}List")},
            "versions": [{"name": version, "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object",
                    "x-kubernetes-preserve-unknown-fields": true}}}]
        }
    })
}

/// The OpenShift kinds OADP's apps use, and OLM's, as CRDs: what an
/// OpenShift cluster's API server serves and a vanilla one does not.
pub fn openshift_crds() -> Vec<Value> {
    vec![
        crd(
            "security.openshift.io",
            "v1",
            "SecurityContextConstraints",
            "securitycontextconstraints",
            "Cluster",
        ),
        crd("route.openshift.io", "v1", "Route", "routes", "Namespaced"),
        crd(
            "image.openshift.io",
            "v1",
            "ImageStream",
            "imagestreams",
            "Namespaced",
        ),
        crd(
            "apps.openshift.io",
            "v1",
            "DeploymentConfig",
            "deploymentconfigs",
            "Namespaced",
        ),
        crd(
            "build.openshift.io",
            "v1",
            "BuildConfig",
            "buildconfigs",
            "Namespaced",
        ),
        crd("build.openshift.io", "v1", "Build", "builds", "Namespaced"),
        crd(
            "operators.coreos.com",
            "v1alpha1",
            "Subscription",
            "subscriptions",
            "Namespaced",
        ),
        crd(
            "operators.coreos.com",
            "v1alpha1",
            "ClusterServiceVersion",
            "clusterserviceversions",
            "Namespaced",
        ),
        crd(
            "operators.coreos.com",
            "v1",
            "OperatorGroup",
            "operatorgroups",
            "Namespaced",
        ),
    ]
}

/// Built-in SCCs as a fresh OpenShift cluster has them.
fn builtin_sccs(anyuid_users: &[&str]) -> Vec<Value> {
    let scc = |name: &str, users: &[&str], groups: &[&str]| {
        json!({"apiVersion": "security.openshift.io/v1", "kind": "SecurityContextConstraints",
            "metadata": {"name": name}, "runAsUser": {"type": "MustRunAsRange"},
            "users": users, "groups": groups})
    };
    vec![
        scc("anyuid", anyuid_users, &["system:cluster-admins"]),
        scc("restricted-v2", &[], &["system:authenticated"]),
        scc("privileged", &["system:admin"], &[]),
    ]
}

fn owner(kind: &str, name: &str) -> Value {
    json!([{"apiVersion": "v1", "kind": kind, "name": name,
        "uid": "00000000-0000-0000-0000-000000000001", "controller": true}])
}

/// What OpenShift's controllers and an `oc adm policy add-scc-to-user
/// anyuid -z mysql-persistent-sa` add to the app.
fn openshift_extras() -> Vec<Value> {
    let mut v = builtin_sccs(&[&format!("system:serviceaccount:{NS}:{SA}")]);
    v.extend([
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockercfg",
            "metadata": {"name": DOCKERCFG, "namespace": NS,
                "annotations": {"kubernetes.io/service-account.name": SA}},
            "data": {".dockercfg": "e30="}}),
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": "todolist-tls", "namespace": NS,
                "annotations": {"service.beta.openshift.io/originating-service-name": "todolist"}},
            "data": {"tls.crt": "", "tls.key": ""}}),
        json!({"apiVersion": "build.openshift.io/v1", "kind": "BuildConfig",
            "metadata": {"name": "todolist", "namespace": NS},
            "spec": {"output": {"to": {"kind": "ImageStreamTag", "name": "todolist:latest"}}}}),
        json!({"apiVersion": "image.openshift.io/v1", "kind": "ImageStream",
            "metadata": {"name": "todolist", "namespace": NS}}),
        json!({"apiVersion": "build.openshift.io/v1", "kind": "Build",
            "metadata": {"name": "todolist-1", "namespace": NS,
                "labels": {"openshift.io/build-config.name": "todolist"}}}),
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "todolist-1-build", "namespace": NS,
                "labels": {"openshift.io/build.name": "todolist-1"},
                "ownerReferences": owner("Build", "todolist-1")},
            "spec": {"containers": [{"name": "sti-build", "image": "builder"}]}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "todolist-1-ca", "namespace": NS,
                "ownerReferences": owner("Build", "todolist-1")}}),
        json!({"apiVersion": "v1", "kind": "ReplicationController",
            "metadata": {"name": "todolist-1", "namespace": NS,
                "annotations": {"openshift.io/deployment-config.name": "todolist"},
                "ownerReferences": owner("DeploymentConfig", "todolist")},
            "spec": {"replicas": 1, "selector": {"app": "todolist"},
                "template": {"metadata": {"labels": {"app": "todolist"}},
                    "spec": {"containers": [{"name": "todolist", "image": "x"}]}}}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "system:image-pullers", "namespace": NS},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                "name": "system:image-puller"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                "name": format!("system:serviceaccounts:{NS}")}]}),
        json!({"apiVersion": "route.openshift.io/v1", "kind": "Route",
            "metadata": {"name": "todolist-custom", "namespace": NS},
            "spec": {"host": "todo.example.com", "to": {"kind": "Service", "name": "todolist"}}}),
        json!({"apiVersion": "operators.coreos.com/v1", "kind": "OperatorGroup",
            "metadata": {"name": "mysql", "namespace": NS}, "spec": {}}),
        json!({"apiVersion": "operators.coreos.com/v1alpha1", "kind": "Subscription",
            "metadata": {"name": "mysql-operator", "namespace": NS},
            "spec": {"name": "mysql-operator", "channel": "stable", "source": "community-operators"},
            "status": {"installedCSV": "mysql-operator.v1.2.0"}}),
        json!({"apiVersion": "operators.coreos.com/v1alpha1", "kind": "ClusterServiceVersion",
            "metadata": {"name": "mysql-operator.v1.2.0", "namespace": NS}, "spec": {}}),
    ]);
    v
}

fn api(
    client: &kube::Client,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    ns: Option<&str>,
) -> Api<DynamicObject> {
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

async fn merge(a: &Api<DynamicObject>, name: &str, patch: Value) -> R {
    a.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// The source cluster: CRDs, OADP's two files, then OpenShift's additions.
async fn source() -> R<Option<Sandbox>> {
    let dir = oadp_dir();
    let csi = dir.join("mysql-persistent-csi.yaml");
    let pvc = dir.join("mysql-persistent-pvc-default_sc.yaml");
    if !csi.exists() || !pvc.exists() {
        eprintln!(
            "skipped: OADP's mysql-persistent fixtures are not in {} (../shared/fixtures/oadp \
             relative to the repository)",
            dir.display()
        );
        return Ok(None);
    }
    let sb = Sandbox::builder()
        .seed_objects(openshift_crds())
        .start()
        .await?;
    for f in [&csi, &pvc] {
        let text = std::fs::read_to_string(f)?;
        let objs = lifeboat_sandbox::parse_manifests(&text, &f.display().to_string())?;
        sb.seed(objs)?;
    }
    sb.seed(openshift_extras())?;
    let c = sb.client();
    // The namespace's SCC annotations (OpenShift's cluster-policy-controller).
    merge(
        &api(&c, "", "v1", "Namespace", "namespaces", None),
        NS,
        json!({"metadata": {"annotations": {
            "openshift.io/sa.scc.uid-range": "1000650000/10000",
            "openshift.io/sa.scc.supplemental-groups": "1000650000/10000",
            "openshift.io/sa.scc.mcs": "s0:c26,c5"}}}),
    )
    .await?;
    // The ServiceAccount's generated pull secret (OpenShift's SA controller).
    merge(
        &api(&c, "", "v1", "ServiceAccount", "serviceaccounts", Some(NS)),
        SA,
        json!({"secrets": [{"name": DOCKERCFG}], "imagePullSecrets": [{"name": DOCKERCFG}]}),
    )
    .await?;
    // The pod template carries it as the admission plugin added it, and the
    // DeploymentConfig runs the image its BuildConfig pushed.
    merge(
        &api(&c, "apps", "v1", "Deployment", "deployments", Some(NS)),
        "mysql",
        json!({"spec": {"template": {"spec": {"imagePullSecrets": [{"name": DOCKERCFG}]}}}}),
    )
    .await?;
    let dcs = api(
        &c,
        "apps.openshift.io",
        "v1",
        "DeploymentConfig",
        "deploymentconfigs",
        Some(NS),
    );
    let mut dc = serde_json::to_value(dcs.get("todolist").await?)?;
    dc["spec"]["template"]["spec"]["containers"][0]["image"] =
        json!(format!("{REGISTRY}/{NS}/todolist@sha256:0123"));
    merge(&dcs, "todolist", json!({"spec": dc["spec"]})).await?;
    // The router's generated host.
    merge(
        &api(&c, "route.openshift.io", "v1", "Route", "routes", Some(NS)),
        "todolist-route",
        json!({"metadata": {"annotations": {"openshift.io/host.generated": "true"}},
               "spec": {"host": format!("todolist-route-{NS}.apps.src.example.com")}}),
    )
    .await?;
    Ok(Some(sb))
}

struct Backup {
    _dir: tempfile::TempDir,
    config: LocationConfig,
    name: String,
    manifest: Manifest,
    entries: Vec<ArchiveEntry>,
    log: Vec<LogEntry>,
}

fn key(e: &ArchiveEntry) -> String {
    if e.group.is_empty() {
        e.resource.clone()
    } else {
        format!("{}.{}", e.resource, e.group)
    }
}

impl Backup {
    fn has(&self, resource: &str, ns: Option<&str>, name: &str) -> bool {
        self.entries
            .iter()
            .any(|e| key(e) == resource && e.namespace.as_deref() == ns && e.name == name)
    }

    fn object(&self, resource: &str, ns: Option<&str>, name: &str) -> Value {
        let e = self
            .entries
            .iter()
            .find(|e| key(e) == resource && e.namespace.as_deref() == ns && e.name == name)
            .unwrap_or_else(|| panic!("{resource} {name} is not in the backup"));
        serde_json::from_slice(&e.json).expect("stored JSON")
    }

    fn skipped(&self, name: &str) -> bool {
        self.log
            .iter()
            .any(|l| l.name.as_deref() == Some(name) && l.message.starts_with("skipped: "))
    }
}

async fn take_backup(sb: &Sandbox) -> R<Backup> {
    let dir = tempfile::tempdir()?;
    let config = LocationConfig {
        url: format!("file://{}", dir.path().display()),
        ..LocationConfig::default()
    };
    let repo = Repository::open(&config).await?;
    let now = Timestamp::now();
    let writer = repo
        .begin_backup(BackupSpec {
            cluster: "src".into(),
            policy: "mysql".into(),
            policy_revision: None,
            schedule_slot: now,
            start_time: now,
            labels: Default::default(),
        })
        .await?;
    let name = writer.name().to_string();
    backup(
        &sb.client(),
        &namespaces(&[NS]),
        &writer.handle(),
        &BackupOptions::default(),
        &|_| {},
    )
    .await?;
    let manifest = writer.finish(Timestamp::now()).await?;
    let reader = repo.open_backup("src", &name).await?;
    let entries: Vec<ArchiveEntry> = reader.entries().try_collect().await?;
    let log = reader.log().await?;
    Ok(Backup {
        _dir: dir,
        config,
        name,
        manifest,
        entries,
        log,
    })
}

fn namespaces(ns: &[&str]) -> Selection {
    Selection::new(
        &Include {
            namespaces: ns.iter().map(|n| NamespacePattern(n.to_string())).collect(),
            ..Include::default()
        },
        &Default::default(),
    )
    .expect("valid selection")
}

async fn restore_into(target: &Sandbox, b: &Backup, to: &str, dry_run: bool) -> R<RestoreOutcome> {
    let repo = Repository::open(&b.config).await?;
    let reader = repo.open_backup("src", &b.name).await?;
    let opts = RestoreOptions {
        selection: namespaces(&[NS]),
        transform: Transform {
            namespace_mapping: [(NS.to_string(), to.to_string())].into(),
            ..Transform::default()
        },
        existing: ExistingResources::Update,
        dry_run,
        ..RestoreOptions::default()
    };
    Ok(restore(&target.client(), &reader, &opts, &|_| {}).await?)
}

fn item<'a>(
    o: &'a RestoreOutcome,
    resource: &str,
    ns: Option<&str>,
    name: &str,
) -> &'a RestoreItem {
    o.items
        .iter()
        .find(|i| i.resource == resource && i.namespace.as_deref() == ns && i.name == name)
        .unwrap_or_else(|| panic!("no line for {resource} {name} in {:#?}", o.items))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oadp_mysql_persistent_round_trips_with_its_scc() -> R {
    let Some(src) = source().await? else {
        return Ok(());
    };
    let b = take_backup(&src).await?;
    const SCC: &str = "securitycontextconstraints.security.openshift.io";

    // Backup: the SCCs granting the app's ServiceAccount, and only those.
    assert!(b.has(SCC, None, "mysql-persistent-scc"), "{:#?}", b.entries);
    assert!(b.has(SCC, None, "anyuid"));
    assert!(!b.has(SCC, None, "restricted-v2") && !b.has(SCC, None, "privileged"));
    // Build objects, DeploymentConfig RCs and generated Secrets are skipped,
    // and the log says so.
    for (resource, name) in [
        ("builds.build.openshift.io", "todolist-1"),
        ("pods", "todolist-1-build"),
        ("configmaps", "todolist-1-ca"),
        ("replicationcontrollers", "todolist-1"),
        ("secrets", DOCKERCFG),
        ("secrets", "todolist-tls"),
    ] {
        assert!(
            !b.has(resource, Some(NS), name),
            "{resource} {name} was backed up"
        );
        assert!(b.skipped(name), "no skip line for {name}: {:#?}", b.log);
    }
    for (resource, name) in [
        ("buildconfigs.build.openshift.io", "todolist"),
        ("imagestreams.image.openshift.io", "todolist"),
        ("deploymentconfigs.apps.openshift.io", "todolist"),
        ("routes.route.openshift.io", "todolist-route"),
        ("serviceaccounts", SA),
    ] {
        assert!(b.has(resource, Some(NS), name), "{resource} {name} missing");
    }
    let ns = b.object("namespaces", None, NS);
    assert_eq!(
        ns["metadata"]["annotations"]["openshift.io/sa.scc.mcs"],
        "s0:c26,c5"
    );
    // OLM objects are not backed up; the operator is a prerequisite.
    assert!(
        !b.entries.iter().any(|e| e.group == "operators.coreos.com"),
        "OLM objects were backed up"
    );
    assert!(b.skipped("mysql-operator"), "{:#?}", b.log);
    let operator = b
        .manifest
        .prerequisites
        .iter()
        .find(|p| p.kind == PrerequisiteKind::Operator)
        .expect("operator prerequisite");
    assert_eq!(operator.name, "mysql-operator");
    assert_eq!(operator.namespace.as_deref(), Some(NS));
    assert!(
        b.manifest
            .prerequisites
            .iter()
            .any(|p| p.kind == PrerequisiteKind::CustomResourceDefinition
                && p.name == "routes.route.openshift.io"),
        "{:?}",
        b.manifest.prerequisites
    );

    // The target: an OpenShift cluster with its built-in SCCs (anyuid not
    // granting anyone of the app) and no operator installed.
    let target = Sandbox::builder()
        .seed_objects(openshift_crds())
        .seed_objects(builtin_sccs(&[]))
        .seed_objects([
            json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "mysql-restored"}}),
            // What OpenShift's controller manager creates in a new namespace.
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "system:image-pullers", "namespace": "mysql-restored",
                "labels": {"made-by": "target"}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                "name": "system:image-puller"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                "name": "system:serviceaccounts:mysql-restored"}]}),
        ])
        .start()
        .await?;
    let c = target.client();
    let sccs = api(
        &c,
        "security.openshift.io",
        "v1",
        "SecurityContextConstraints",
        "securitycontextconstraints",
        None,
    );

    // Dry run: the missing operator is reported, nothing is written.
    let dry = restore_into(&target, &b, "mysql-restored", true).await?;
    assert!(
        dry.missing_prerequisites
            .iter()
            .any(|m| m.contains("operator mysql-operator")),
        "{:?}",
        dry.missing_prerequisites
    );
    assert!(
        !dry.missing_prerequisites
            .iter()
            .any(|m| m.contains("routes.route.openshift.io")),
        "the target serves Routes: {:?}",
        dry.missing_prerequisites
    );
    assert!(sccs.get_opt("mysql-persistent-scc").await?.is_none());
    assert!(
        !item(
            &dry,
            "routes.route.openshift.io",
            Some("mysql-restored"),
            "todolist-route"
        )
        .changes
        .is_empty()
    );

    target.clear_requests();
    let out = restore_into(&target, &b, "mysql-restored", false).await?;
    assert_eq!(out.counts.failed, 0, "{:#?}", out.items);

    // The user-created SCC is created, granting the MAPPED ServiceAccount.
    let scc = serde_json::to_value(sccs.get("mysql-persistent-scc").await?)?;
    assert_eq!(
        scc["users"],
        json!([
            "system:admin",
            "system:serviceaccount:mysql-restored:mysql-persistent-sa"
        ])
    );
    assert_eq!(scc["allowPrivilegedContainer"], true);
    let line = item(&out, SCC, None, "mysql-persistent-scc");
    assert_eq!(line.action, RestoreAction::Created);
    assert!(
        line.changes.iter().any(|c| c.contains("mysql-restored")),
        "{line:?}"
    );

    // The built-in SCC is untouched; its grant is a RoleBinding.
    let anyuid = serde_json::to_value(sccs.get("anyuid").await?)?;
    assert_eq!(anyuid["users"], json!([]));
    assert_eq!(
        item(&out, SCC, None, "anyuid").action,
        RestoreAction::Skipped
    );
    let rbs = api(
        &c,
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        Some("mysql-restored"),
    );
    let grant = serde_json::to_value(rbs.get("system:openshift:scc:anyuid").await?)?;
    assert_eq!(grant["roleRef"]["name"], "system:openshift:scc:anyuid");
    assert_eq!(
        grant["subjects"],
        json!([{"kind": "ServiceAccount", "name": SA, "namespace": "mysql-restored"}])
    );

    // Order: the SCC and its grant before the pods' owners.
    let reqs = target.requests();
    let first = |resource: &str| {
        reqs.iter()
            .position(|r| r.verb == "create" && r.resource == resource)
            .unwrap_or_else(|| panic!("no create of {resource}"))
    };
    let owners = first("deployments").min(first("deploymentconfigs"));
    assert!(first("securitycontextconstraints") < first("serviceaccounts"));
    assert!(first("securitycontextconstraints") < owners);
    assert!(first("rolebindings") < owners);

    // The generated Route host is gone, the custom one kept.
    let routes = api(
        &c,
        "route.openshift.io",
        "v1",
        "Route",
        "routes",
        Some("mysql-restored"),
    );
    let generated = serde_json::to_value(routes.get("todolist-route").await?)?;
    assert!(generated.pointer("/spec/host").is_none(), "{generated}");
    let custom = serde_json::to_value(routes.get("todolist-custom").await?)?;
    assert_eq!(custom["spec"]["host"], "todo.example.com");

    // dockercfg references are gone from the ServiceAccount and the template.
    let sa = serde_json::to_value(
        api(
            &c,
            "",
            "v1",
            "ServiceAccount",
            "serviceaccounts",
            Some("mysql-restored"),
        )
        .get(SA)
        .await?,
    )?;
    assert!(!sa.to_string().contains("dockercfg"), "{sa}");
    let deploy = serde_json::to_value(
        api(
            &c,
            "apps",
            "v1",
            "Deployment",
            "deployments",
            Some("mysql-restored"),
        )
        .get("mysql")
        .await?,
    )?;
    assert!(!deploy.to_string().contains("dockercfg"), "{deploy}");
    // The internal-registry image follows the namespace mapping.
    let dc = serde_json::to_value(
        api(
            &c,
            "apps.openshift.io",
            "v1",
            "DeploymentConfig",
            "deploymentconfigs",
            Some("mysql-restored"),
        )
        .get("todolist")
        .await?,
    )?;
    assert_eq!(
        dc["spec"]["template"]["spec"]["containers"][0]["image"],
        format!("{REGISTRY}/mysql-restored/todolist@sha256:0123")
    );

    // The namespace keeps its SCC annotations.
    let ns = serde_json::to_value(
        api(&c, "", "v1", "Namespace", "namespaces", None)
            .get("mysql-restored")
            .await?,
    )?;
    assert_eq!(
        ns["metadata"]["annotations"]["openshift.io/sa.scc.uid-range"],
        "1000650000/10000"
    );

    // The target's own system:image-pullers is kept although existing
    // objects are updated.
    let pullers = item(
        &out,
        "rolebindings.rbac.authorization.k8s.io",
        Some("mysql-restored"),
        "system:image-pullers",
    );
    assert_eq!(pullers.action, RestoreAction::Skipped, "{pullers:?}");
    let live = serde_json::to_value(rbs.get("system:image-pullers").await?)?;
    assert_eq!(live["metadata"]["labels"]["made-by"], "target");

    // A second restore under another mapping merges into the SCC.
    let again = restore_into(&target, &b, "mysql-second", false).await?;
    assert_eq!(
        item(&again, SCC, None, "mysql-persistent-scc").action,
        RestoreAction::Updated
    );
    let scc = serde_json::to_value(sccs.get("mysql-persistent-scc").await?)?;
    let users: BTreeSet<&str> = scc["users"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        users,
        BTreeSet::from([
            "system:admin",
            "system:serviceaccount:mysql-restored:mysql-persistent-sa",
            "system:serviceaccount:mysql-second:mysql-persistent-sa",
        ])
    );
    Ok(())
}
