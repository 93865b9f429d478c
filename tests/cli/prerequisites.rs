//! `lifeboat plan --kubeconfig` reports, for a restore it would run, the
//! backup's prerequisites (CRDs, OLM operators) that the target cluster
//! lacks, before anything is applied: a backup of a namespace holding a
//! custom resource and an OLM Subscription, taken from one sandbox, and a
//! RestoreRequest of that namespace into a second sandbox, first without
//! the CRD and OLM, then with both installed.

use std::path::Path;

use lifeboat_sandbox::Sandbox;
use serde_json::{Value, json};

use crate::run;

/// A CRD serving `kind` with any content, as an operator's bundle would
/// install it.
fn crd(group: &str, version: &str, kind: &str, plural: &str) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {
            "group": group, "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(),
                      "listKind": format!("{kind}List")},
            "versions": [{"name": version, "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object",
                    "x-kubernetes-preserve-unknown-fields": true}}}]
        }
    })
}

/// OLM's kinds, as a cluster with OLM serves them.
fn olm_crds() -> Vec<Value> {
    vec![
        crd(
            "operators.coreos.com",
            "v1alpha1",
            "Subscription",
            "subscriptions",
        ),
        crd(
            "operators.coreos.com",
            "v1alpha1",
            "ClusterServiceVersion",
            "clusterserviceversions",
        ),
        crd(
            "operators.coreos.com",
            "v1alpha1",
            "InstallPlan",
            "installplans",
        ),
        crd(
            "operators.coreos.com",
            "v1",
            "OperatorGroup",
            "operatorgroups",
        ),
    ]
}

fn widget_crd() -> Value {
    crd("example.com", "v1", "Widget", "widgets")
}

fn subscription(ns: &str) -> Value {
    json!({"apiVersion": "operators.coreos.com/v1alpha1", "kind": "Subscription",
        "metadata": {"name": "widget-operator", "namespace": ns},
        "spec": {"name": "widget-operator", "channel": "stable", "source": "community-operators",
                 "sourceNamespace": "olm"},
        "status": {"installedCSV": "widget-operator.v2.1.0"}})
}

fn write_repo(dir: &Path) {
    let storage = dir.join("storage");
    std::fs::create_dir_all(&storage).unwrap();
    std::fs::create_dir_all(dir.join("repo")).unwrap();
    std::fs::write(
        dir.join("repo/lifeboat.yaml"),
        format!(
            "apiVersion: lifeboat.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: prod\nspec:\n  role: primary\n---\n\
             apiVersion: lifeboat.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: dr\nspec:\n  role: standby\n---\n\
             apiVersion: lifeboat.dev/v1alpha1\nkind: StorageLocation\nmetadata:\n  name: local\nspec:\n  url: file://{}\n  \
             encryption:\n    recipients: [age1268crxs6ntgpzr3y2auy80yrejxsfmps549ul66ch93t0p5wr9aqyxanhq]\n---\n\
             apiVersion: lifeboat.dev/v1alpha1\nkind: BackupPolicy\nmetadata:\n  name: shop\nspec:\n  clusters: {{names: [prod]}}\n  \
             include: {{namespaces: [shop]}}\n  schedule: '0 * * * *'\n  retention: {{keepLast: 5}}\n  storage: local\n---\n\
             apiVersion: lifeboat.dev/v1alpha1\nkind: RestoreRequest\nmetadata:\n  name: shop-to-dr\nspec:\n  \
             source: {{cluster: prod, policy: shop}}\n  target: {{cluster: dr}}\n  include: {{namespaces: [shop]}}\n",
            storage.display()
        ),
    )
    .unwrap();
}

fn plan(dir: &Path, kubeconfig: Option<&Path>, format: &str) -> String {
    let repo = dir.join("repo");
    let mut args = vec![
        "plan",
        "--repo",
        repo.to_str().unwrap(),
        "--cluster",
        "dr",
        "--format",
        format,
    ];
    if let Some(kc) = kubeconfig {
        args.extend(["--kubeconfig", kc.to_str().unwrap()]);
    }
    let (code, out, err) = run(&args, None);
    assert_eq!(code, 0, "{out}{err}");
    out
}

#[test]
fn plan_lists_the_prerequisites_a_restore_target_lacks() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_repo(dir.path());

    // The source: the operator's CRD and OLM, a Widget and the Subscription
    // that installed the operator in `shop`.
    let mut crds = olm_crds();
    crds.push(widget_crd());
    let prod = rt
        .block_on(Sandbox::builder().seed_objects(crds).start())
        .unwrap();
    prod.seed(vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "settings", "namespace": "shop"}, "data": {"a": "b"}}),
        json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "front", "namespace": "shop"}, "spec": {"size": 3}}),
        json!({"apiVersion": "operators.coreos.com/v1", "kind": "OperatorGroup",
            "metadata": {"name": "shop", "namespace": "shop"}, "spec": {}}),
        subscription("shop"),
    ])
    .unwrap();
    let prod_kc = dir.path().join("prod.kubeconfig");
    prod.write_kubeconfig(&prod_kc).unwrap();
    let repo = dir.path().join("repo");
    let (code, out, err) = run(
        &[
            "backup",
            "--repo",
            repo.to_str().unwrap(),
            "--policy",
            "shop",
            "--cluster",
            "prod",
            "--kubeconfig",
            prod_kc.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    let backup = out.split_whitespace().next().unwrap();
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join(format!(
            "storage/clusters/prod/backups/{backup}/manifest.json"
        )))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        manifest["prerequisites"],
        json!([
            {"kind": "CustomResourceDefinition", "name": "widgets.example.com"},
            {"kind": "Operator", "name": "widget-operator", "namespace": "shop",
             "detail": "channel stable, catalog source community-operators, installed widget-operator.v2.1.0"},
        ]),
        "{manifest:#}"
    );

    // The target: a plain cluster, no Widget CRD, no OLM.
    let dr = rt.block_on(Sandbox::start()).unwrap();
    let dr_kc = dir.path().join("dr.kubeconfig");
    dr.write_kubeconfig(&dr_kc).unwrap();

    // Without a view of the target: not evaluated.
    let out = plan(dir.path(), None, "text");
    assert!(
        out.contains("shop-to-dr: Pending: restores `shop-"),
        "{out}"
    );
    assert!(out.contains("    prerequisites: not evaluated"), "{out}");
    assert!(!out.contains("missing prerequisite"), "{out}");

    // With it: the CRD (the restore of `shop` leaves cluster objects out)
    // and the operator are listed under the restore, saying what to do.
    let out = plan(dir.path(), Some(&dr_kc), "text");
    assert!(
        out.contains(
            "    warning: missing prerequisite CustomResourceDefinition widgets.example.com: the \
             target does not serve it and this restore does not create it; install the CRD (or \
             the operator that owns it) first"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "    warning: missing prerequisite operator widget-operator (Subscription in shop): \
             channel stable, catalog source community-operators, installed \
             widget-operator.v2.1.0: OLM (operators.coreos.com) is not installed on the target"
        ),
        "{out}"
    );
    // Nothing was applied to the target.
    assert!(
        !dr.requests()
            .iter()
            .any(|r| !matches!(r.verb.as_str(), "get" | "list" | "watch")),
        "the plan wrote to the target: {:#?}",
        dr.requests()
    );
    let json: Value = serde_json::from_str(&plan(dir.path(), Some(&dr_kc), "json")).unwrap();
    let restore = json["plan"]["restores"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["request"] == "shop-to-dr")
        .unwrap();
    let missing: Vec<(&str, &str, &str)> = restore["missingPrerequisites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["kind"].as_str().unwrap(),
                m["name"].as_str().unwrap(),
                m["reason"]["type"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        missing,
        [
            (
                "CustomResourceDefinition",
                "widgets.example.com",
                "NotServed"
            ),
            ("Operator", "widget-operator", "NoOlm"),
        ]
    );

    // OLM installed (its preferred version, v1, serves no Subscriptions),
    // the operator not yet subscribed: only it is missing.
    let mut crds = olm_crds();
    crds.push(widget_crd());
    dr.seed(crds).unwrap();
    let out = plan(dir.path(), Some(&dr_kc), "text");
    assert!(!out.contains("widgets.example.com"), "{out}");
    assert!(
        out.contains(
            "installed widget-operator.v2.1.0: no Subscription to it on the target; install the \
             operator through OLM first"
        ),
        "{out}"
    );

    // Subscribed (in another namespace, as a cluster-wide install is):
    // nothing is missing.
    dr.seed(vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "operators"}}),
        subscription("operators"),
    ])
    .unwrap();
    let out = plan(dir.path(), Some(&dr_kc), "text");
    assert!(out.contains("shop-to-dr: Pending"), "{out}");
    assert!(!out.contains("missing prerequisite"), "{out}");
    assert!(!out.contains("prerequisites: not evaluated"), "{out}");
    let json: Value = serde_json::from_str(&plan(dir.path(), Some(&dr_kc), "json")).unwrap();
    let restore = json["plan"]["restores"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["request"] == "shop-to-dr")
        .unwrap();
    assert_eq!(restore["missingPrerequisites"], json!([]), "{restore}");
    drop(prod);
    drop(dr);
}
