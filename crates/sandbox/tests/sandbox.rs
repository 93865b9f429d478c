//! Drives the sandbox with the real kube-rs client (and kubectl when
//! installed): typed and dynamic CRUD, discovery, paging, selectors,
//! conflicts, watch, CRD lifecycle, cluster behaviours, faults, exec, TLS
//! and tokens.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service,
    ServiceAccount,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, AttachParams, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
    WatchEvent, WatchParams,
};
use kube::discovery::{ApiResource, Discovery, Scope};
use kube::runtime::{WatchStreamExt, wait::await_condition, wait::conditions, watcher};
use kube::{Client, ResourceExt};
use lifeboat_sandbox::{ExecOutput, FaultRule, Sandbox};
use serde_json::{Value, json};

#[path = "v2/kubelet.rs"]
mod kubelet;

fn code(e: &kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        _ => 0,
    }
}

fn reason(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.reason.clone(),
        other => format!("not an API error: {other}"),
    }
}

fn cm(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>()},
        "data": {"k": "v"},
    }))
    .unwrap()
}

async fn ns(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn typed_crud_with_api_semantics() {
    let sb = Sandbox::start().await.unwrap();
    let c = sb.client();
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let pp = PostParams::default();

    let created = cms
        .create(&pp, &cm("one", &[("app", "web")]))
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    let rv1: u64 = created.resource_version().unwrap().parse().unwrap();
    assert!(rv1 > 0);
    assert_eq!(
        code(&cms.create(&pp, &cm("one", &[])).await.unwrap_err()),
        409
    );
    let e = cms.create(&pp, &cm("Bad_Name", &[])).await.unwrap_err();
    assert_eq!((code(&e), reason(&e).as_str()), (422, "Invalid"));
    let missing: Api<ConfigMap> = Api::namespaced(c.clone(), "nope");
    assert_eq!(
        code(&missing.create(&pp, &cm("x", &[])).await.unwrap_err()),
        404
    );
    let e = cms.get("absent").await.unwrap_err();
    assert_eq!((code(&e), reason(&e).as_str()), (404, "NotFound"));

    // generateName
    let mut g = cm("", &[]);
    g.metadata.name = None;
    g.metadata.generate_name = Some("gen-".into());
    let made = cms.create(&pp, &g).await.unwrap();
    assert!(made.name_any().starts_with("gen-") && made.name_any().len() == 9);

    // PUT with optimistic concurrency.
    let mut fresh = cms.get("one").await.unwrap();
    fresh.data.as_mut().unwrap().insert("k".into(), "v2".into());
    let stale = created.clone();
    let updated = cms.replace("one", &pp, &fresh).await.unwrap();
    assert!(updated.resource_version().unwrap().parse::<u64>().unwrap() > rv1);
    let e = cms.replace("one", &pp, &stale).await.unwrap_err();
    assert_eq!((code(&e), reason(&e).as_str()), (409, "Conflict"));

    // Patches: merge, JSON, strategic, apply.
    let pa = PatchParams::default();
    cms.patch("one", &pa, &Patch::Merge(json!({"data": {"m": "1"}})))
        .await
        .unwrap();
    let p: Patch<()> = Patch::Json(
        serde_json::from_value(json!([{"op": "add", "path": "/data/j", "value": "2"}])).unwrap(),
    );
    cms.patch("one", &pa, &p).await.unwrap();
    cms.patch(
        "one",
        &pa,
        &Patch::Strategic(json!({"metadata": {"labels": {"s": "3"}}})),
    )
    .await
    .unwrap();
    let ssa = PatchParams::apply("test").force();
    let applied = cms
        .patch("one", &ssa, &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "one"}, "data": {"a": "4"}})))
        .await
        .unwrap();
    let data = applied.data.unwrap();
    assert_eq!(
        (
            data["k"].as_str(),
            data["m"].as_str(),
            data["j"].as_str(),
            data["a"].as_str()
        ),
        ("v2", "1", "2", "4")
    );
    assert_eq!(applied.metadata.labels.unwrap()["s"], "3");
    let created_by_apply = cms
        .patch(
            "fresh",
            &ssa,
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "fresh"}}),
            ),
        )
        .await
        .unwrap();
    assert!(created_by_apply.metadata.uid.is_some());
    let stale_patch =
        Patch::Merge(json!({"metadata": {"resourceVersion": "1"}, "data": {"x": "y"}}));
    assert_eq!(
        code(&cms.patch("one", &pa, &stale_patch).await.unwrap_err()),
        409
    );
    let bad: Patch<()> =
        Patch::Json(serde_json::from_value(json!([{"op": "remove", "path": "/nope"}])).unwrap());
    assert_eq!(code(&cms.patch("one", &pa, &bad).await.unwrap_err()), 422);

    // dryRun=All stores nothing.
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let rv_before = sb.resource_version();
    cms.create(&dry, &cm("dry", &[])).await.unwrap();
    cms.patch(
        "one",
        &PatchParams {
            dry_run: true,
            ..Default::default()
        },
        &Patch::Merge(json!({"data": {"d": "1"}})),
    )
    .await
    .unwrap();
    cms.delete(
        "one",
        &DeleteParams {
            dry_run: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(sb.resource_version(), rv_before);
    assert_eq!(code(&cms.get("dry").await.unwrap_err()), 404);
    assert!(
        !cms.get("one")
            .await
            .unwrap()
            .data
            .unwrap()
            .contains_key("d")
    );

    // Other typed kinds round-trip.
    let secrets: Api<Secret> = Api::namespaced(c.clone(), "default");
    let s: Secret = serde_json::from_value(
        json!({"metadata": {"name": "s"}, "type": "Opaque", "data": {"p": "cGFzcw=="}}),
    )
    .unwrap();
    let s = secrets.create(&pp, &s).await.unwrap();
    assert_eq!(s.data.unwrap()["p"].0, b"pass");
    // A kind no sandbox controller writes the status of (the Deployment
    // controller would race the hand-written status below).
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(c.clone(), "default");
    let h: HorizontalPodAutoscaler = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"maxReplicas": 2, "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}}})).unwrap();
    let h = hpas.create(&pp, &h).await.unwrap();
    assert_eq!(h.metadata.generation, Some(1));
    let h = hpas
        .patch(
            "web",
            &pa,
            &Patch::Merge(json!({"spec": {"maxReplicas": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(h.metadata.generation, Some(2));
    let h = hpas
        .patch_status(
            "web",
            &pa,
            &Patch::Merge(json!({"status": {"currentReplicas": 3, "desiredReplicas": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(
        (
            h.metadata.generation,
            h.status.as_ref().unwrap().current_replicas
        ),
        (Some(2), Some(3))
    );
    let h = hpas
        .patch(
            "web",
            &pa,
            &Patch::Merge(json!({"status": {"currentReplicas": 0}})),
        )
        .await
        .unwrap();
    assert_eq!(
        h.status.unwrap().current_replicas,
        Some(3),
        "main resource writes ignore status"
    );

    // Finalizers hold deletion until removed.
    cms.patch(
        "one",
        &pa,
        &Patch::Merge(json!({"metadata": {"finalizers": ["lifeboat.dev/hold"]}})),
    )
    .await
    .unwrap();
    cms.delete("one", &DeleteParams::default()).await.unwrap();
    assert!(
        cms.get("one")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
    cms.patch(
        "one",
        &pa,
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(code(&cms.get("one").await.unwrap_err()), 404);

    // Delete collection with a selector.
    for i in 0..3 {
        cms.create(&pp, &cm(&format!("dc{i}"), &[("dc", "yes")]))
            .await
            .unwrap();
    }
    cms.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("dc=yes"),
    )
    .await
    .unwrap();
    assert!(
        cms.list(&ListParams::default().labels("dc"))
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

/// Server-side apply tracks field managers: an apply that would change a
/// field another manager set is a 409 Conflict naming the field, unless
/// forced; other writes take fields over. Leader election relies on it.
#[tokio::test]
async fn server_side_apply_conflicts_between_field_managers() {
    use k8s_openapi::api::coordination::v1::Lease;
    let sb = Sandbox::start().await.unwrap();
    let leases: Api<Lease> = Api::namespaced(sb.client(), "default");
    // No metadata.name: the URL names the object, as kube-lease-manager sends it.
    let take = |who: &str| {
        Patch::Apply(
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "spec": {"holderIdentity": who, "leaseDurationSeconds": 15}}),
        )
    };
    let (a, b) = (PatchParams::apply("mgr-a"), PatchParams::apply("mgr-b"));
    leases.patch("l", &a, &take("a")).await.unwrap();
    // Re-applying one's own fields, or the same values, never conflicts.
    leases.patch("l", &a, &take("a2")).await.unwrap();
    leases.patch("l", &b, &take("a2")).await.unwrap();
    let e = leases.patch("l", &b, &take("b")).await.unwrap_err();
    assert_eq!((code(&e), reason(&e).as_str()), (409, "Conflict"));
    let kube::Error::Api(status) = &e else {
        unreachable!()
    };
    assert!(
        status.message.contains(r#"conflict with "mgr-a""#)
            && status.message.contains(".spec.holderIdentity"),
        "{}",
        status.message
    );
    assert_eq!(
        leases
            .get("l")
            .await
            .unwrap()
            .spec
            .unwrap()
            .holder_identity
            .as_deref(),
        Some("a2")
    );
    // dryRun checks too, and stores nothing.
    let dry = PatchParams {
        dry_run: true,
        ..PatchParams::apply("mgr-b")
    };
    assert_eq!(
        code(&leases.patch("l", &dry, &take("b")).await.unwrap_err()),
        409
    );
    leases
        .patch("l", &b.clone().force(), &take("b"))
        .await
        .unwrap();
    // Now mgr-b alone owns the field.
    assert_eq!(
        code(&leases.patch("l", &a, &take("a")).await.unwrap_err()),
        409
    );

    // A strategic merge patch that clears the field frees it for anyone.
    let release = PatchParams {
        field_manager: Some("mgr-b".into()),
        ..Default::default()
    };
    leases
        .patch(
            "l",
            &release,
            &Patch::Strategic(json!({"spec": {"holderIdentity": null}})),
        )
        .await
        .unwrap();
    leases.patch("l", &a, &take("a")).await.unwrap();
    // An update that changes the field takes it over: mgr-a's apply now conflicts with it.
    leases
        .patch(
            "l",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"holderIdentity": "z"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        code(&leases.patch("l", &a, &take("a")).await.unwrap_err()),
        409
    );

    // A recreated object starts without owners.
    leases.delete("l", &DeleteParams::default()).await.unwrap();
    leases.patch("l", &a, &take("a")).await.unwrap();
    leases.delete("l", &DeleteParams::default()).await.unwrap();
    let mut fresh = Lease::default();
    fresh.metadata.name = Some("l".into());
    leases.create(&PostParams::default(), &fresh).await.unwrap();
    leases.patch("l", &b, &take("b")).await.unwrap();
}

#[tokio::test]
async fn discovery_dynamic_objects_and_crd_lifecycle() {
    let sb = Sandbox::start().await.unwrap();
    let c = sb.client();
    let d = Discovery::new(c.clone()).run().await.unwrap();
    for g in [
        "apps",
        "batch",
        "rbac.authorization.k8s.io",
        "networking.k8s.io",
        "policy",
        "storage.k8s.io",
        "coordination.k8s.io",
        "apiextensions.k8s.io",
        "autoscaling",
        "snapshot.storage.k8s.io",
    ] {
        assert!(d.has_group(g), "{g}");
    }
    assert_eq!(
        d.get("autoscaling").unwrap().preferred_version_or_latest(),
        "v2"
    );
    let core = d.get("").unwrap();
    let (pods, caps) = core
        .recommended_resources()
        .into_iter()
        .find(|(r, _)| r.plural == "pods")
        .unwrap();
    assert_eq!(pods.kind, "Pod");
    assert_eq!(caps.scope, Scope::Namespaced);
    assert!(caps.subresources.iter().any(|(r, _)| r.plural == "exec"));
    let raw: Value = c
        .request(http::Request::get("/api/v1").body(vec![]).unwrap())
        .await
        .unwrap();
    let cmr = raw["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "configmaps")
        .unwrap();
    assert_eq!(cmr["shortNames"], json!(["cm"]));
    assert_eq!(cmr["singularName"], "configmap");

    // Dynamic objects through discovery.
    let (ar, _) = d
        .resolve_gvk(&kube::api::GroupVersionKind::gvk("", "v1", "ConfigMap"))
        .unwrap();
    let dynapi: Api<DynamicObject> = Api::namespaced_with(c.clone(), "default", &ar);
    let obj: DynamicObject =
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "dyn"}, "data": {"a": "b"}}))
        .unwrap();
    dynapi.create(&PostParams::default(), &obj).await.unwrap();
    assert_eq!(dynapi.get("dyn").await.unwrap().data["data"]["a"], "b");

    // CRD lifecycle.
    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}})).unwrap();
    let bad = {
        let mut b = crd.clone();
        b.metadata.name = Some("wrong.example.com".into());
        b
    };
    assert_eq!(
        code(&crds.create(&PostParams::default(), &bad).await.unwrap_err()),
        422
    );
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let est = tokio::time::timeout(
        Duration::from_secs(5),
        await_condition(
            crds.clone(),
            "widgets.example.com",
            conditions::is_crd_established(),
        ),
    );
    est.await.unwrap().unwrap();
    let d = Discovery::new(c.clone()).run().await.unwrap();
    let (ar, caps) = d
        .resolve_gvk(&kube::api::GroupVersionKind::gvk(
            "example.com",
            "v1",
            "Widget",
        ))
        .unwrap();
    assert_eq!(ar.plural, "widgets");
    assert!(caps.subresources.iter().any(|(r, _)| r.plural == "status"));
    let widgets: Api<DynamicObject> = Api::namespaced_with(c.clone(), "default", &ar);
    let w: DynamicObject =
        serde_json::from_value(json!({"apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w1"}, "spec": {"size": 1}, "status": {"ok": true}}))
        .unwrap();
    let w = widgets.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(w.metadata.generation, Some(1));
    assert!(
        w.data.get("status").is_none(),
        "status is dropped on create"
    );
    let w = widgets
        .patch_status(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"ok": true}})),
        )
        .await
        .unwrap();
    assert_eq!(
        (w.metadata.generation, &w.data["status"]["ok"]),
        (Some(1), &json!(true))
    );
    let w = widgets
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 2}})),
        )
        .await
        .unwrap();
    assert_eq!(w.metadata.generation, Some(2));
    crds.delete("widgets.example.com", &DeleteParams::default())
        .await
        .unwrap();
    let d = Discovery::new(c.clone()).run().await.unwrap();
    assert!(!d.has_group("example.com"));
    assert_eq!(code(&widgets.get("w1").await.unwrap_err()), 404);
    assert!(
        sb.requests()
            .iter()
            .any(|r| r.resource == "customresourcedefinitions" && r.verb == "delete")
    );
}

#[tokio::test]
async fn paging_is_consistent_while_writing_and_selectors_filter() {
    let sb = Sandbox::start().await.unwrap();
    let c = sb.client();
    ns(&c, "pg").await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "pg");
    for i in 0..25 {
        let tier = if i % 2 == 0 { "even" } else { "odd" };
        cms.create(
            &PostParams::default(),
            &cm(
                &format!("c{i:02}"),
                &[("tier", tier), ("n", &i.to_string())],
            ),
        )
        .await
        .unwrap();
    }
    let mut names = Vec::new();
    let mut lp = ListParams::default().limit(10);
    let mut first_rv = None;
    loop {
        let page = cms.list(&lp).await.unwrap();
        first_rv.get_or_insert(page.metadata.resource_version.clone());
        assert_eq!(
            page.metadata.resource_version,
            *first_rv.as_ref().unwrap(),
            "pages share the snapshot rv"
        );
        names.extend(page.items.iter().map(|o| o.name_any()));
        // Writes between pages: a new object sorting early, a delete of an unseen one.
        cms.create(
            &PostParams::default(),
            &cm(&format!("a{}", names.len()), &[]),
        )
        .await
        .unwrap();
        match page.metadata.continue_ {
            Some(t) if !t.is_empty() => lp = lp.continue_token(&t),
            _ => break,
        }
    }
    let mut sorted = names.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len(), "no duplicates");
    assert_eq!(
        names.iter().filter(|n| n.starts_with('c')).count(),
        25,
        "nothing skipped"
    );
    // kube-root-ca.crt is in every namespace.
    assert!(names.contains(&"kube-root-ca.crt".to_string()));

    let count = |sel: &'static str| {
        let cms = cms.clone();
        async move {
            cms.list(&ListParams::default().labels(sel))
                .await
                .unwrap()
                .items
                .len()
        }
    };
    assert_eq!(count("tier=even").await, 13);
    assert_eq!(count("tier==odd").await, 12);
    let total = cms.list(&ListParams::default()).await.unwrap().items.len();
    assert_eq!(count("tier!=odd").await, total - 12);
    assert_eq!(count("tier in (even,odd)").await, 25);
    assert_eq!(count("n notin (0,1,2),tier").await, 22);
    assert_eq!(
        count("!tier").await,
        cms.list(&ListParams::default()).await.unwrap().items.len() - 25
    );
    let by_name = cms
        .list(&ListParams::default().fields("metadata.name=c03"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    let all: Api<ConfigMap> = Api::all(c.clone());
    let other_ns = all
        .list(&ListParams::default().fields("metadata.namespace!=pg"))
        .await
        .unwrap();
    assert!(
        other_ns
            .items
            .iter()
            .all(|o| o.namespace().as_deref() != Some("pg"))
            && !other_ns.items.is_empty()
    );
    let e = cms
        .list(&ListParams::default().labels("a in b"))
        .await
        .unwrap_err();
    assert_eq!(code(&e), 400);
    let e = cms
        .list(&ListParams::default().continue_token("%%%"))
        .await
        .unwrap_err();
    assert_eq!(code(&e), 400);
}

#[tokio::test]
async fn watch_streams_events_bookmarks_and_gone() {
    let sb = Sandbox::builder()
        .watch_history(50)
        .bookmark_interval(Duration::from_millis(100))
        .start()
        .await
        .unwrap();
    let c = sb.client();
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let start = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = cms
        .watch(&WatchParams::default().labels("w=1"), &start)
        .await
        .unwrap()
        .boxed();
    cms.create(&PostParams::default(), &cm("w", &[("w", "1")]))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &cm("other", &[]))
        .await
        .unwrap();
    cms.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"x": "1"}})),
    )
    .await
    .unwrap();
    cms.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"w": "2"}}})),
    )
    .await
    .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let ev = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push(match ev {
            WatchEvent::Added(o) => format!("ADDED {}", o.name_any()),
            WatchEvent::Modified(o) => format!("MODIFIED {}", o.name_any()),
            WatchEvent::Deleted(o) => format!("DELETED {}", o.name_any()),
            WatchEvent::Bookmark(b) => {
                assert!(!b.metadata.resource_version.is_empty());
                "BOOKMARK".into()
            }
            WatchEvent::Error(e) => panic!("{e:?}"),
        });
    }
    // Leaving the selection is a DELETED.
    assert_eq!(
        seen.iter().filter(|s| *s != "BOOKMARK").collect::<Vec<_>>(),
        ["ADDED w", "MODIFIED w", "DELETED w"]
    );
    assert!(seen.contains(&"BOOKMARK".to_string()));

    // A too-old resourceVersion is 410 Gone.
    for i in 0..60 {
        cms.create(&PostParams::default(), &cm(&format!("h{i}"), &[]))
            .await
            .unwrap();
    }
    let mut old = cms
        .watch(&WatchParams::default(), &start)
        .await
        .unwrap()
        .boxed();
    match old.try_next().await {
        Ok(Some(WatchEvent::Error(e))) => assert_eq!(e.code, 410),
        Err(e) => assert_eq!(code(&e), 410),
        other => panic!("expected 410, got {other:?}"),
    }

    // kube::runtime::watcher (list + watch) and await_condition.
    let mut events = watcher(cms.clone(), watcher::Config::default().labels("late=yes"))
        .applied_objects()
        .boxed();
    let cms2 = cms.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        cms2.create(&PostParams::default(), &cm("late", &[("late", "yes")]))
            .await
            .unwrap();
    });
    let got = tokio::time::timeout(Duration::from_secs(5), events.try_next()).await;
    assert_eq!(got.unwrap().unwrap().unwrap().name_any(), "late");
    let mut streaming = watcher(
        cms.clone(),
        watcher::Config::default()
            .streaming_lists()
            .labels("late=yes"),
    )
    .applied_objects()
    .boxed();
    let got = tokio::time::timeout(Duration::from_secs(5), streaming.try_next()).await;
    assert_eq!(got.unwrap().unwrap().unwrap().name_any(), "late");
    let uid = cms.get("late").await.unwrap().uid().unwrap();
    let cms3 = cms.clone();
    tokio::spawn(async move { cms3.delete("late", &DeleteParams::default()).await.unwrap() });
    tokio::time::timeout(
        Duration::from_secs(5),
        await_condition(cms.clone(), "late", conditions::is_deleted(&uid)),
    )
    .await
    .unwrap()
    .unwrap();
}

#[tokio::test]
async fn cluster_behaviours() {
    let sb = Sandbox::builder()
        .snapshot_delay(Duration::from_millis(50))
        .start()
        .await
        .unwrap();
    let c = sb.client();
    ns(&c, "app").await;
    let sa: Api<ServiceAccount> = Api::namespaced(c.clone(), "app");
    sa.get("default").await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "app");
    assert!(
        cms.get("kube-root-ca.crt").await.unwrap().data.unwrap()["ca.crt"]
            .contains("BEGIN CERTIFICATE")
    );

    // Services.
    let svcs: Api<Service> = Api::namespaced(c.clone(), "app");
    let svc = |name: &str, spec: Value| -> Service {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
    };
    let a = svcs
        .create(
            &PostParams::default(),
            &svc("a", json!({"ports": [{"port": 80}]})),
        )
        .await
        .unwrap();
    let ip = a.spec.as_ref().unwrap().cluster_ip.clone().unwrap();
    assert!(ip.starts_with("10.96."), "{ip}");
    let np = svcs
        .create(
            &PostParams::default(),
            &svc("np", json!({"type": "NodePort", "ports": [{"port": 80}]})),
        )
        .await
        .unwrap();
    let port = np.spec.unwrap().ports.unwrap()[0].node_port.unwrap();
    assert!((30000..=32767).contains(&port));
    let h = svcs
        .create(
            &PostParams::default(),
            &svc("h", json!({"clusterIP": "None"})),
        )
        .await
        .unwrap();
    assert_eq!(h.spec.unwrap().cluster_ip.as_deref(), Some("None"));
    let e = svcs
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"clusterIP": "10.96.9.9", "clusterIPs": ["10.96.9.9"]}})),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), 422);
    let dup = svcs
        .create(
            &PostParams::default(),
            &svc("dup", json!({"clusterIP": ip})),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&dup), 422);
    // An update without clusterIP keeps it.
    let mut again = svcs.get("a").await.unwrap();
    again.spec.as_mut().unwrap().cluster_ip = None;
    again.spec.as_mut().unwrap().cluster_ips = None;
    assert_eq!(
        svcs.replace("a", &PostParams::default(), &again)
            .await
            .unwrap()
            .spec
            .unwrap()
            .cluster_ip,
        Some(ip)
    );

    // PVC binding.
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(c.clone(), "app");
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({"metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}))
    .unwrap();
    pvcs.create(&PostParams::default(), &pvc).await.unwrap();
    let bound = pvcs.get("data").await.unwrap();
    assert_eq!(
        bound.status.as_ref().unwrap().phase.as_deref(),
        Some("Bound")
    );
    assert_eq!(
        bound.spec.as_ref().unwrap().storage_class_name.as_deref(),
        Some("standard")
    );
    let pv_name = bound.spec.unwrap().volume_name.unwrap();
    let pvs: Api<PersistentVolume> = Api::all(c.clone());
    let pv = pvs.get(&pv_name).await.unwrap();
    assert_eq!(
        pv.spec.unwrap().claim_ref.unwrap().name.as_deref(),
        Some("data")
    );

    // VolumeSnapshot readiness.
    let ar = ApiResource {
        group: "snapshot.storage.k8s.io".into(),
        version: "v1".into(),
        api_version: "snapshot.storage.k8s.io/v1".into(),
        kind: "VolumeSnapshot".into(),
        plural: "volumesnapshots".into(),
    };
    let vss: Api<DynamicObject> = Api::namespaced_with(c.clone(), "app", &ar);
    let vs: DynamicObject = serde_json::from_value(
        json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": {"name": "snap"}, "spec": {"source": {"persistentVolumeClaimName": "data"}}}),
    )
    .unwrap();
    vss.create(&PostParams::default(), &vs).await.unwrap();
    let ready = await_condition(vss.clone(), "snap", |o: Option<&DynamicObject>| {
        o.is_some_and(|o| o.data["status"]["readyToUse"] == true)
    });
    let snap = tokio::time::timeout(Duration::from_secs(5), ready)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(snap.data["status"]["restoreSize"], "1Gi");
    assert!(
        snap.data["status"]["boundVolumeSnapshotContentName"]
            .as_str()
            .unwrap()
            .starts_with("snapcontent-")
    );

    // Pods are scheduled to a node and run; a nodeName is kept, and a pod
    // bound to a node that does not exist stays Pending (no kubelet).
    let pods: Api<Pod> = Api::namespaced(c.clone(), "app");
    for (name, node) in [("p", Some("worker-7")), ("q", None)] {
        let mut v = json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
        if let Some(n) = node {
            v["spec"]["nodeName"] = json!(n);
        }
        let pod: Pod = serde_json::from_value(v).unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(c.clone());
    let node = nodes.list(&ListParams::default()).await.unwrap().items[0].name_any();
    let running = await_condition(pods.clone(), "q", |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref()?.phase.as_deref()) == Some("Running")
    });
    let q = tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(q.spec.unwrap().node_name, Some(node));
    let p = pods.get("p").await.unwrap();
    assert_eq!(p.spec.unwrap().node_name.as_deref(), Some("worker-7"));
    assert_ne!(p.status.and_then(|s| s.phase).as_deref(), Some("Running"));

    // Namespace deletion: Terminating, then everything goes.
    let nss: Api<Namespace> = Api::all(c.clone());
    let uid = nss.get("app").await.unwrap().uid().unwrap();
    let gone = nss.delete("app", &DeleteParams::default()).await.unwrap();
    let term = gone.left().unwrap();
    assert_eq!(term.status.unwrap().phase.as_deref(), Some("Terminating"));
    tokio::time::timeout(
        Duration::from_secs(5),
        await_condition(nss.clone(), "app", conditions::is_deleted(&uid)),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(code(&cms.get("kube-root-ca.crt").await.unwrap_err()), 404);
    assert_eq!(
        code(&pvs.get(&pv_name).await.unwrap_err()),
        404,
        "Delete reclaim policy removes the PV"
    );
}

#[tokio::test]
async fn faults_and_request_log() {
    let sb = Sandbox::builder().fault_seed(1).start().await.unwrap();
    let c = sb.client();
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    // kube 5 retries 429/503/504 itself: a transient 503 is absorbed.
    sb.add_fault(
        FaultRule::error(503)
            .verb("list")
            .resource("configmaps")
            .times(1),
    );
    cms.list(&ListParams::default()).await.unwrap();
    let id = sb.add_fault(FaultRule::error(500).verb("list"));
    let e = cms.list(&ListParams::default()).await.unwrap_err();
    assert_eq!((code(&e), reason(&e).as_str()), (500, "InternalError"));
    sb.remove_fault(id);
    sb.add_fault(
        FaultRule::too_many_requests(0)
            .verb("create")
            .namespace("default")
            .times(2),
    );
    sb.add_fault(FaultRule::drop_connection().verb("get").name("x").times(1));
    cms.create(&PostParams::default(), &cm("x", &[]))
        .await
        .unwrap();
    let e = cms.get("x").await.unwrap_err();
    assert_eq!(code(&e), 0, "dropped connection is a transport error: {e}");
    cms.get("x").await.unwrap();
    sb.add_fault(
        FaultRule::latency(Duration::from_millis(200))
            .verb("get")
            .times(1),
    );
    let t = std::time::Instant::now();
    cms.get("x").await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(200));
    sb.clear_faults();

    let log = sb.requests();
    let creates: Vec<_> = log
        .iter()
        .filter(|r| r.verb == "create")
        .map(|r| r.status)
        .collect();
    assert_eq!(creates, [429, 429, 201]);
    let lists: Vec<_> = log
        .iter()
        .filter(|r| r.verb == "list")
        .map(|r| r.status)
        .collect();
    assert_eq!(lists, [503, 200, 500]);
    let r = log
        .iter()
        .find(|r| r.verb == "get" && r.status == 200)
        .unwrap();
    assert_eq!(
        (
            r.group.as_str(),
            r.version.as_str(),
            r.resource.as_str(),
            r.namespace.as_str(),
            r.name.as_str()
        ),
        ("", "v1", "configmaps", "default", "x")
    );

    assert!(log.iter().any(|r| r.verb == "get" && r.status == 0));
    sb.clear_requests();
    assert!(sb.requests().is_empty());
}

#[tokio::test]
async fn exec_runs_the_registered_handler() {
    let sb = Sandbox::start().await.unwrap();
    sb.on_exec(|r| match r.command.first().map(String::as_str) {
        Some("echo") => ExecOutput::ok(format!(
            "{}/{}: {}\n",
            r.pod,
            r.container,
            r.command[1..].join(" ")
        )),
        _ => ExecOutput::exit(3, "", "boom\n"),
    });
    let c = sb.client();
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"},
        "spec": {"containers": [{"name": "main", "image": "x"}, {"name": "side", "image": "y"}]}}))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();

    let ap = AttachParams::default()
        .stdout(true)
        .stderr(true)
        .container("side");
    let mut proc = pods.exec("p", ["echo", "hi", "there"], &ap).await.unwrap();
    let status = proc.take_status().unwrap();
    let mut out = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut proc.stdout().unwrap(), &mut out)
        .await
        .unwrap();
    assert_eq!(out, "p/side: hi there\n");
    assert_eq!(status.await.unwrap().status.as_deref(), Some("Success"));
    proc.join().await.unwrap();

    let mut proc = pods
        .exec(
            "p",
            ["false"],
            &AttachParams::default().stderr(true).stdout(false),
        )
        .await
        .unwrap();
    let status = proc.take_status().unwrap();
    let mut err = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut proc.stderr().unwrap(), &mut err)
        .await
        .unwrap();
    let st = status.await.unwrap();
    assert_eq!(err, "boom\n");
    assert_eq!(st.reason.as_deref(), Some("NonZeroExitCode"));
    assert_eq!(
        st.details.unwrap().causes.unwrap()[0].message.as_deref(),
        Some("3")
    );
    let Err(e) = pods.exec("nope", ["ls"], &AttachParams::default()).await else {
        panic!("exec on a missing pod")
    };
    assert!(
        e.to_string().contains("404") || e.to_string().contains("not found"),
        "{e}"
    );
}

/// A command that takes time answers only then; one that hangs never
/// does, until the client gives up.
#[tokio::test]
async fn exec_output_can_take_time_or_hang() {
    let sb = Sandbox::start().await.unwrap();
    sb.on_exec(|r| match r.command[0].as_str() {
        "slow" => ExecOutput::ok("done\n").after(std::time::Duration::from_millis(300)),
        _ => ExecOutput::hang(),
    });
    let pods: Api<Pod> = Api::namespaced(sb.client(), "default");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"},
        "spec": {"containers": [{"name": "main", "image": "x"}]}}))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let ap = AttachParams::default().stdout(true).stderr(false);
    let started = std::time::Instant::now();
    let mut proc = pods.exec("p", ["slow"], &ap).await.unwrap();
    let status = proc.take_status().unwrap();
    let mut out = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut proc.stdout().unwrap(), &mut out)
        .await
        .unwrap();
    assert_eq!(out, "done\n");
    assert_eq!(status.await.unwrap().status.as_deref(), Some("Success"));
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));

    let mut proc = pods.exec("p", ["hang"], &ap).await.unwrap();
    let status = proc.take_status().unwrap();
    let waited = tokio::time::timeout(std::time::Duration::from_millis(500), status).await;
    assert!(waited.is_err(), "a hanging command has no status");
    proc.abort();
}

#[tokio::test]
async fn tls_and_token_auth() {
    let sb = Sandbox::builder()
        .tls(true)
        .token("s3cret")
        .start()
        .await
        .unwrap();
    assert!(sb.url().starts_with("https://127.0.0.1:"));
    assert!(
        sb.kubeconfig().contains("certificate-authority-data")
            && sb.kubeconfig().contains("s3cret")
    );
    let cms: Api<ConfigMap> = Api::namespaced(sb.client(), "default");
    cms.create(&PostParams::default(), &cm("t", &[]))
        .await
        .unwrap();
    // Same CA, wrong token.
    let kc = sb.kubeconfig().replace("s3cret", "wrong");
    let kc = kube::config::Kubeconfig::from_yaml(&kc).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let bad: Api<ConfigMap> = Api::namespaced(Client::try_from(cfg).unwrap(), "default");
    let e = bad.get("t").await.unwrap_err();
    assert_eq!((code(&e), reason(&e).as_str()), (401, "Unauthorized"));
    // The kubeconfig file works too.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    sb.write_kubeconfig(&path).unwrap();
    let kc = kube::config::Kubeconfig::read_from(&path).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let api: Api<ConfigMap> = Api::namespaced(Client::try_from(cfg).unwrap(), "default");
    api.get("t").await.unwrap();
}

#[tokio::test]
async fn seeding_from_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), SEED).unwrap();
    let sb = Sandbox::builder()
        .seed_dir(dir.path())
        .start()
        .await
        .unwrap();
    let c = sb.client();
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "shop");
    assert_eq!(
        cms.get("settings").await.unwrap().data.unwrap()["color"],
        "blue"
    );
    let ar = ApiResource {
        group: "example.com".into(),
        version: "v1".into(),
        api_version: "example.com/v1".into(),
        kind: "Gadget".into(),
        plural: "gadgets".into(),
    };
    let g: Api<DynamicObject> = Api::all_with(c.clone(), &ar);
    assert_eq!(g.get("g1").await.unwrap().data["spec"]["n"], 1);
    let e = Sandbox::builder()
        .seed_objects([json!({"apiVersion": "v9", "kind": "Nope", "metadata": {"name": "x"}})])
        .start()
        .await;
    assert!(
        e.unwrap_err()
            .to_string()
            .contains("no resource serves v9 Nope")
    );
    let labels: BTreeMap<String, String> = Api::<Namespace>::all(c)
        .get("shop")
        .await
        .unwrap()
        .labels()
        .clone();
    assert_eq!(labels["kubernetes.io/metadata.name"], "shop");
}

const SEED: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: shop}
data: {color: blue}
---
apiVersion: example.com/v1
kind: Gadget
metadata: {name: g1}
spec: {n: 1}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gadgets.example.com}
spec:
  group: example.com
  scope: Cluster
  names: {plural: gadgets, singular: gadget, kind: Gadget}
  versions: [{name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: nginx}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {selector: {app: web}, ports: [{port: 80}]}
"#;

fn kubectl() -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH")?
        .to_string_lossy()
        .split(':')
        .map(|d| std::path::Path::new(d).join("kubectl"))
        .find(|p| p.is_file());
    if found.is_none() {
        eprintln!("skipping: kubectl is not installed");
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_create_apply_delete() {
    let Some(kubectl) = kubectl() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("seed.yaml"), SEED).unwrap();
    let sb = Sandbox::builder()
        .seed_dir(dir.path())
        .start()
        .await
        .unwrap();
    let kc = dir.path().join("kubeconfig");
    sb.write_kubeconfig(&kc).unwrap();
    let run = |args: Vec<String>| {
        let kubectl = kubectl.clone();
        let kc = kc.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let home = kc.parent().unwrap().to_path_buf();
                let out = std::process::Command::new(kubectl)
                    .arg("--kubeconfig")
                    .arg(&kc)
                    .args(&args)
                    .env("HOME", home)
                    .env("KUBECACHEDIR", kc.parent().unwrap().join("cache"))
                    .output()
                    .unwrap();
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(out.status.success(), "kubectl {args:?} failed:\n{text}");
                text
            })
            .await
            .unwrap()
        }
    };
    let a = |s: &str| s.split(' ').map(str::to_string).collect::<Vec<_>>();
    let out = run(a("get all -A")).await;
    assert!(
        out.contains("service/web") && out.contains("deployment.apps/web") && out.contains("shop"),
        "{out}"
    );
    let out = run(a("get configmaps -n shop")).await;
    assert!(out.contains("settings"), "{out}");
    let manifest = dir.path().join("m.yaml");
    std::fs::write(&manifest, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: k1, namespace: default}\ndata: {a: '1'}\n").unwrap();
    let mf = manifest.display().to_string();
    run(vec!["create".into(), "-f".into(), mf.clone()]).await;
    std::fs::write(&manifest, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: k1, namespace: default}\ndata: {b: '2'}\n").unwrap();
    run(vec!["apply".into(), "-f".into(), mf.clone()]).await;
    run(vec!["apply".into(), "-f".into(), mf.clone()]).await;
    let cms: Api<ConfigMap> = Api::namespaced(sb.client(), "default");
    let k1 = cms.get("k1").await.unwrap();
    assert_eq!(k1.data.unwrap().get("b").map(String::as_str), Some("2"));
    assert!(
        k1.metadata
            .annotations
            .unwrap()
            .contains_key("kubectl.kubernetes.io/last-applied-configuration")
    );
    let dep = dir.path().join("d.yaml");
    std::fs::write(&dep, "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: nginx:2}, {name: side, image: busybox}]}\n").unwrap();
    run(vec!["apply".into(), "-f".into(), dep.display().to_string()]).await;
    let d: Api<Deployment> = Api::namespaced(sb.client(), "shop");
    let web = d.get("web").await.unwrap().spec.unwrap();
    assert_eq!(web.replicas, Some(2));
    let cs = web.template.spec.unwrap().containers;
    assert_eq!(
        cs.iter()
            .map(|c| c.image.clone().unwrap())
            .collect::<Vec<_>>(),
        ["nginx:2", "busybox"]
    );
    std::fs::write(&manifest, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa, namespace: default}\ndata: {s: '1'}\n").unwrap();
    run(vec![
        "apply".into(),
        "--server-side".into(),
        "-f".into(),
        mf.clone(),
    ])
    .await;
    assert_eq!(cms.get("ssa").await.unwrap().data.unwrap()["s"], "1");
    run(a("delete configmap k1 ssa -n default")).await;
    assert_eq!(code(&cms.get("k1").await.unwrap_err()), 404);
    let log = sb.requests();
    assert!(
        log.iter()
            .any(|r| r.verb == "patch" && r.name == "k1" && r.status == 200),
        "client-side apply patches"
    );
    assert!(log.iter().any(|r| r.user_agent.starts_with("kubectl")));
}

#[path = "v2/controllers.rs"]
mod controllers;

#[path = "v2/csi.rs"]
mod csi;

#[path = "v2/api.rs"]
mod api;

/// virt-api's freeze and unfreeze, as `subresources.kubevirt.io/v1` serves
/// them once the KubeVirt CRDs are installed.
#[tokio::test]
async fn kubevirt_freeze_and_unfreeze_subresources() {
    let sb = Sandbox::start().await.unwrap();
    let c = sb.client();
    let path = |vmi: &str, sub: &str| {
        format!(
            "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachineinstances/{vmi}/{sub}"
        )
    };
    let put = |p: String, body: Value| {
        let c = c.clone();
        async move {
            let req = http::Request::put(p)
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&body).unwrap())
                .unwrap();
            c.request_text(req).await
        }
    };
    // No KubeVirt: no such API.
    let e = put(path("vm", "freeze"), json!({"unfreezeTimeout": "5m"}))
        .await
        .unwrap_err();
    assert_eq!(code(&e), 404);
    let crds: Api<DynamicObject> = Api::all_with(
        c.clone(),
        &ApiResource::erase::<CustomResourceDefinition>(&()),
    );
    for crd in lifeboat_sandbox::kubevirt::crds() {
        crds.create(
            &PostParams::default(),
            &serde_json::from_value(crd).unwrap(),
        )
        .await
        .unwrap();
    }
    let gvk = kube::core::GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachineInstance");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "virtualmachineinstances");
    let vmis: Api<DynamicObject> = Api::namespaced_with(c.clone(), "default", &ar);
    for _ in 0..200 {
        if vmis.list(&ListParams::default()).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A missing VMI is 404.
    let e = put(path("vm", "freeze"), json!({"unfreezeTimeout": "5m"}))
        .await
        .unwrap_err();
    assert_eq!(code(&e), 404, "{e}");
    let vmi: DynamicObject = serde_json::from_value(json!({"apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance", "metadata": {"name": "vm"}, "spec": {}}))
    .unwrap();
    vmis.create(&PostParams::default(), &vmi).await.unwrap();
    // Not Running yet: refused.
    let e = put(path("vm", "freeze"), json!({"unfreezeTimeout": "5m"}))
        .await
        .unwrap_err();
    assert_eq!(code(&e), 409, "{e}");
    let mut live = vmis.get("vm").await.unwrap();
    live.data["status"] =
        json!({"phase": "Running", "conditions": [{"type": "AgentConnected", "status": "False"}]});
    vmis.replace_status("vm", &PostParams::default(), &live)
        .await
        .unwrap();
    // No guest agent: the freeze fails.
    let e = put(path("vm", "freeze"), json!({"unfreezeTimeout": "5m"}))
        .await
        .unwrap_err();
    assert_eq!(code(&e), 409, "{e}");
    let mut live = vmis.get("vm").await.unwrap();
    live.data["status"]["conditions"][0]["status"] = json!("True");
    vmis.replace_status("vm", &PostParams::default(), &live)
        .await
        .unwrap();
    // The unfreeze timeout is required.
    let e = put(path("vm", "freeze"), json!({})).await.unwrap_err();
    assert_eq!(code(&e), 400, "{e}");
    put(path("vm", "freeze"), json!({"unfreezeTimeout": "5m"}))
        .await
        .unwrap();
    assert_eq!(
        vmis.get("vm").await.unwrap().data["status"]["fsFreezeStatus"],
        "frozen"
    );
    put(path("vm", "unfreeze"), json!({})).await.unwrap();
    assert!(
        vmis.get("vm").await.unwrap().data["status"]
            .get("fsFreezeStatus")
            .is_none()
    );
    // The sandbox-only annotation makes both fail.
    vmis.patch(
        "vm",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {lifeboat_sandbox::kubevirt::FAIL_FREEZE: "guest agent timed out"}}})),
    )
    .await
    .unwrap();
    let e = put(path("vm", "freeze"), json!({"unfreezeTimeout": "5m"}))
        .await
        .unwrap_err();
    assert_eq!(code(&e), 500);
    assert!(e.to_string().contains("guest agent timed out"), "{e}");
    // Every call is in the request log.
    let logged = sb
        .requests()
        .iter()
        .filter(|r| r.group == "subresources.kubevirt.io")
        .count();
    assert_eq!(logged, 8);
}
