//! The workload controllers and the garbage collector, through kube-rs
//! (and kubectl's `rollout status` when installed).

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::{Client, ResourceExt};
use lifeboat_sandbox::Sandbox;
use serde_json::json;

/// Polls `check` until it returns `Some` (10 s at most).
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn deployment(name: &str, replicas: i32, image: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": image}]}}},
    }))
    .unwrap()
}

async fn pods_of(c: &Client, ns: &str, app: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(c.clone(), ns)
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
}

async fn replicasets_of(c: &Client, ns: &str, app: &str) -> Vec<ReplicaSet> {
    Api::<ReplicaSet>::namespaced(c.clone(), ns)
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
}

/// Waits until the Deployment's rollout is complete, as `kubectl rollout
/// status` judges it, and returns it.
async fn rolled_out(c: &Client, ns: &str, name: &str) -> Deployment {
    let api: Api<Deployment> = Api::namespaced(c.clone(), ns);
    eventually(&format!("deployment {name} rolled out"), || {
        let api = api.clone();
        async move {
            let d = api.get(name).await.ok()?;
            let want = d.spec.as_ref()?.replicas.unwrap_or(1);
            let s = d.status.clone()?;
            let done = s.observed_generation >= d.metadata.generation
                && s.updated_replicas.unwrap_or(0) == want
                && s.replicas.unwrap_or(0) == want
                && s.available_replicas.unwrap_or(0) == want;
            done.then_some(d)
        }
    })
    .await
}

fn condition(d: &Deployment, ty: &str) -> (String, String) {
    let c = d
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == ty))
        .unwrap_or_else(|| panic!("no {ty} condition"));
    (c.status.clone(), c.reason.clone().unwrap_or_default())
}

fn controller_ref(o: &impl ResourceExt) -> (String, String, bool, bool) {
    let r = o
        .owner_references()
        .iter()
        .find(|r| r.controller == Some(true))
        .expect("a controller reference");
    (
        r.kind.clone(),
        r.name.clone(),
        r.controller == Some(true),
        r.block_owner_deletion == Some(true),
    )
}

#[tokio::test]
async fn deployment_creates_a_replicaset_and_pods_and_becomes_available() {
    let sb = Sandbox::start().await.unwrap();
    let c = sb.client();
    let deps: Api<Deployment> = Api::namespaced(c.clone(), "default");
    deps.create(&PostParams::default(), &deployment("web", 3, "nginx:1"))
        .await
        .unwrap();
    let d = rolled_out(&c, "default", "web").await;
    assert_eq!(
        condition(&d, "Available"),
        ("True".into(), "MinimumReplicasAvailable".into())
    );
    let d = eventually("Progressing NewReplicaSetAvailable", || {
        let deps = deps.clone();
        async move {
            let d = deps.get("web").await.ok()?;
            (condition(&d, "Progressing").1 == "NewReplicaSetAvailable").then_some(d)
        }
    })
    .await;
    let s = d.status.clone().unwrap();
    assert_eq!((s.ready_replicas, s.unavailable_replicas), (Some(3), None));
    assert_eq!(d.annotations()["deployment.kubernetes.io/revision"], "1");

    let rss = replicasets_of(&c, "default", "web").await;
    assert_eq!(rss.len(), 1);
    let rs = &rss[0];
    let hash = rs.labels()["pod-template-hash"].clone();
    assert_eq!(rs.name_any(), format!("web-{hash}"));
    assert_eq!(
        controller_ref(rs),
        ("Deployment".into(), "web".into(), true, true)
    );
    assert_eq!(rs.annotations()["deployment.kubernetes.io/revision"], "1");
    assert_eq!(
        rs.spec
            .as_ref()
            .unwrap()
            .selector
            .match_labels
            .as_ref()
            .unwrap()["pod-template-hash"],
        hash
    );
    let pods = pods_of(&c, "default", "web").await;
    assert_eq!(pods.len(), 3);
    for p in &pods {
        let name = p.name_any();
        let suffix = name.strip_prefix(&format!("{}-", rs.name_any())).unwrap();
        assert_eq!(suffix.len(), 5, "{name}");
        assert_eq!(p.labels()["pod-template-hash"], hash);
        assert_eq!(
            controller_ref(p),
            ("ReplicaSet".into(), rs.name_any(), true, true)
        );
    }

    // The same template in another Deployment gets the same hash: it is
    // computed from the template, not drawn at random.
    deps.create(&PostParams::default(), &{
        let mut d = deployment("web", 1, "nginx:1");
        d.metadata.name = Some("twin".into());
        d
    })
    .await
    .unwrap();
    let twin = eventually("twin's replicaset", || {
        let c = c.clone();
        async move {
            let rss: Api<ReplicaSet> = Api::namespaced(c, "default");
            let l = rss.list(&ListParams::default()).await.ok()?;
            l.items
                .into_iter()
                .find(|r| r.name_any().starts_with("twin-"))
        }
    })
    .await;
    assert_eq!(twin.labels()["pod-template-hash"], hash);

    if let Some(kubectl) = super::kubectl() {
        let dir = tempfile::tempdir().unwrap();
        let kc = dir.path().join("kubeconfig");
        sb.write_kubeconfig(&kc).unwrap();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(kubectl)
                .arg("--kubeconfig")
                .arg(&kc)
                .args(["rollout", "status", "deployment/web", "--timeout=20s"])
                .env("HOME", dir.path())
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "rollout status failed:\n{text}");
        assert!(text.contains("successfully rolled out"), "{text}");
    }
}

#[tokio::test]
async fn a_template_change_rolls_pods_over_to_a_new_replicaset_and_scaling_follows_replicas() {
    let sb = Sandbox::start().await.unwrap();
    let c = sb.client();
    let deps: Api<Deployment> = Api::namespaced(c.clone(), "default");
    deps.create(&PostParams::default(), &deployment("web", 4, "nginx:1"))
        .await
        .unwrap();
    rolled_out(&c, "default", "web").await;
    let first = replicasets_of(&c, "default", "web").await[0].name_any();
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:2"}]}}}});
    deps.patch("web", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .unwrap();
    let d = rolled_out(&c, "default", "web").await;
    assert_eq!(d.annotations()["deployment.kubernetes.io/revision"], "2");
    let rss = replicasets_of(&c, "default", "web").await;
    assert_eq!(rss.len(), 2, "the old ReplicaSet is kept as history");
    let old = rss.iter().find(|r| r.name_any() == first).unwrap();
    let new = rss.iter().find(|r| r.name_any() != first).unwrap();
    assert_eq!(old.spec.as_ref().unwrap().replicas, Some(0));
    assert_eq!(new.spec.as_ref().unwrap().replicas, Some(4));
    assert_eq!(new.annotations()["deployment.kubernetes.io/revision"], "2");
    let pods = eventually("old pods gone", || {
        let c = c.clone();
        async move {
            let pods = pods_of(&c, "default", "web").await;
            (pods.len() == 4).then_some(pods)
        }
    })
    .await;
    for p in &pods {
        assert_eq!(controller_ref(p).1, new.name_any());
        assert_eq!(
            p.spec.as_ref().unwrap().containers[0].image.as_deref(),
            Some("nginx:2")
        );
    }
    // The rollout went through the surge: the controller scaled the new
    // ReplicaSet up in steps (25% of 4 = 1 extra pod at a time).
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(c.clone(), "default");
    let scaled: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("ScalingReplicaSet"))
        .filter_map(|e| e.message)
        .collect();
    assert!(
        scaled
            .iter()
            .any(|m| m == &format!("Scaled up replica set {} from 0 to 1", new.name_any())),
        "{scaled:?}"
    );

    // Scale up and down through spec.replicas.
    for n in [6, 2] {
        deps.patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": n}})),
        )
        .await
        .unwrap();
        rolled_out(&c, "default", "web").await;
        eventually(&format!("{n} pods"), || {
            let c = c.clone();
            async move { (pods_of(&c, "default", "web").await.len() == n).then_some(()) }
        })
        .await;
    }

    // Recreate: every old pod goes before a new one is made.
    deps.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"spec": {"strategy": {"type": "Recreate", "rollingUpdate": null},
            "template": {"spec": {"containers": [{"name": "c", "image": "nginx:3"}]}}}}),
        ),
    )
    .await
    .unwrap();
    let d = rolled_out(&c, "default", "web").await;
    assert_eq!(d.annotations()["deployment.kubernetes.io/revision"], "3");
    let pods = pods_of(&c, "default", "web").await;
    assert_eq!(pods.len(), 2);
    assert!(
        pods.iter()
            .all(|p| p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("nginx:3"))
    );
}

#[tokio::test]
async fn revision_history_limit_deletes_the_oldest_replicasets() {
    let sb = Sandbox::start().await.unwrap();
    let c = sb.client();
    let deps: Api<Deployment> = Api::namespaced(c.clone(), "default");
    let mut d = deployment("web", 1, "nginx:0");
    d.spec.as_mut().unwrap().revision_history_limit = Some(1);
    deps.create(&PostParams::default(), &d).await.unwrap();
    for i in 1..=3 {
        rolled_out(&c, "default", "web").await;
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": format!("nginx:{i}")}]}}}});
        deps.patch("web", &PatchParams::default(), &Patch::Strategic(patch))
            .await
            .unwrap();
    }
    rolled_out(&c, "default", "web").await;
    let rss = eventually("one old ReplicaSet kept", || {
        let c = c.clone();
        async move {
            let rss = replicasets_of(&c, "default", "web").await;
            (rss.len() == 2).then_some(rss)
        }
    })
    .await;
    let mut revs: Vec<String> = rss
        .iter()
        .map(|r| r.annotations()["deployment.kubernetes.io/revision"].clone())
        .collect();
    revs.sort();
    assert_eq!(revs, ["3", "4"]);
}

async fn gone<K>(api: &Api<K>, name: &str) -> bool
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    matches!(api.get(name).await, Err(kube::Error::Api(s)) if s.code == 404)
}

#[tokio::test]
async fn deleting_a_deployment_collects_its_replicasets_and_pods() {
    let sb = Sandbox::start().await.unwrap();
    let c = sb.client();
    let deps: Api<Deployment> = Api::namespaced(c.clone(), "default");
    deps.create(&PostParams::default(), &deployment("web", 3, "nginx"))
        .await
        .unwrap();
    rolled_out(&c, "default", "web").await;
    deps.delete("web", &DeleteParams::background())
        .await
        .unwrap();
    eventually("replicasets and pods collected", || {
        let c = c.clone();
        async move {
            (replicasets_of(&c, "default", "web").await.is_empty()
                && pods_of(&c, "default", "web").await.is_empty())
            .then_some(())
        }
    })
    .await;
    assert!(gone(&deps, "web").await);
}

#[tokio::test]
async fn orphan_propagation_keeps_the_dependents_without_the_reference() {
    let sb = Sandbox::start().await.unwrap();
    let c = sb.client();
    let deps: Api<Deployment> = Api::namespaced(c.clone(), "default");
    deps.create(&PostParams::default(), &deployment("web", 2, "nginx"))
        .await
        .unwrap();
    rolled_out(&c, "default", "web").await;
    deps.delete("web", &DeleteParams::orphan()).await.unwrap();
    eventually("deployment gone", || {
        let deps = deps.clone();
        async move { gone(&deps, "web").await.then_some(()) }
    })
    .await;
    let rss = eventually("replicaset orphaned", || {
        let c = c.clone();
        async move {
            let rss = replicasets_of(&c, "default", "web").await;
            (rss.len() == 1 && rss[0].owner_references().is_empty()).then_some(rss)
        }
    })
    .await;
    // The pods still belong to the ReplicaSet, which keeps them.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pods = pods_of(&c, "default", "web").await;
    assert_eq!(pods.len(), 2);
    assert!(
        pods.iter()
            .all(|p| controller_ref(p).1 == rss[0].name_any())
    );
    assert!(!rss[0].finalizers().iter().any(|f| f == "orphan"));
}

#[tokio::test]
async fn foreground_deletion_waits_for_blocking_dependents() {
    let sb = Sandbox::start().await.unwrap();
    let c = sb.client();
    let deps: Api<Deployment> = Api::namespaced(c.clone(), "default");
    let pods_api: Api<Pod> = Api::namespaced(c.clone(), "default");
    deps.create(&PostParams::default(), &deployment("web", 2, "nginx"))
        .await
        .unwrap();
    rolled_out(&c, "default", "web").await;
    // A finalizer on one pod holds it, and through blockOwnerDeletion its
    // ReplicaSet and the Deployment.
    let held = pods_of(&c, "default", "web").await[0].name_any();
    pods_api
        .patch(
            &held,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["example.com/hold"]}})),
        )
        .await
        .unwrap();
    deps.delete("web", &DeleteParams::foreground())
        .await
        .unwrap();
    let d = deps.get("web").await.unwrap();
    assert!(d.metadata.deletion_timestamp.is_some());
    assert!(d.finalizers().iter().any(|f| f == "foregroundDeletion"));
    eventually("the other pod deleted, the held one marked", || {
        let c = c.clone();
        let held = held.clone();
        async move {
            let pods = pods_of(&c, "default", "web").await;
            (pods.len() == 1
                && pods[0].name_any() == held
                && pods[0].metadata.deletion_timestamp.is_some())
            .then_some(())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !gone(&deps, "web").await,
        "the Deployment waits for its dependents"
    );
    let rss = replicasets_of(&c, "default", "web").await;
    assert_eq!(rss.len(), 1);
    assert!(
        rss[0]
            .finalizers()
            .iter()
            .any(|f| f == "foregroundDeletion")
    );
    pods_api
        .patch(
            &held,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    eventually("everything gone", || {
        let c = c.clone();
        let deps = deps.clone();
        async move {
            (gone(&deps, "web").await
                && replicasets_of(&c, "default", "web").await.is_empty()
                && pods_of(&c, "default", "web").await.is_empty())
            .then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn delete_options_are_validated() {
    let sb = Sandbox::start().await.unwrap();
    let c = sb.client();
    let deps: Api<Deployment> = Api::namespaced(c.clone(), "default");
    deps.create(&PostParams::default(), &deployment("web", 1, "nginx"))
        .await
        .unwrap();
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Orphan),
        ..DeleteParams::default()
    };
    let body =
        json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Sideways"});
    let req = http::Request::delete("/apis/apps/v1/namespaces/default/deployments/web")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .unwrap();
    let e = c.request::<serde_json::Value>(req).await.unwrap_err();
    assert!(matches!(e, kube::Error::Api(s) if s.code == 422));
    deps.delete("web", &dp).await.unwrap();
}

#[tokio::test]
async fn statefulset_pods_come_in_order_with_claims_that_survive_scale_down_and_delete() {
    let sb = Sandbox::start().await.unwrap();
    let c = sb.client();
    let sets: Api<StatefulSet> = Api::namespaced(c.clone(), "default");
    let set: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "spec": {"replicas": 3, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}},
                "spec": {"containers": [{"name": "c", "image": "postgres",
                    "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql"}]}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]},
    }))
    .unwrap();
    sets.create(&PostParams::default(), &set).await.unwrap();
    let s = eventually("3 ready replicas", || {
        let sets = sets.clone();
        async move {
            let s = sets.get("db").await.ok()?;
            (s.status.as_ref()?.ready_replicas == Some(3)).then_some(s)
        }
    })
    .await;
    let st = s.status.unwrap();
    assert_eq!(
        (st.replicas, st.current_replicas, st.updated_replicas),
        (3, Some(3), Some(3))
    );
    assert_eq!(st.current_revision, st.update_revision);
    let pods = pods_of(&c, "default", "db").await;
    let mut names: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
    names.sort();
    assert_eq!(names, ["db-0", "db-1", "db-2"]);
    for p in &pods {
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some(p.name_any().as_str()));
        assert_eq!(spec.subdomain.as_deref(), Some("db"));
        let claim = spec
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "data")
            .unwrap();
        assert_eq!(
            claim.persistent_volume_claim.as_ref().unwrap().claim_name,
            format!("data-{}", p.name_any())
        );
        assert_eq!(
            controller_ref(p),
            ("StatefulSet".into(), "db".into(), true, true)
        );
    }
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(c.clone(), "default");
    for i in 0..3 {
        let pvc = pvcs.get(&format!("data-db-{i}")).await.unwrap();
        assert_eq!(pvc.labels()["app"], "db");
        assert!(
            pvc.owner_references().is_empty(),
            "Retain: the claims are not owned"
        );
        assert_eq!(pvc.status.unwrap().phase.as_deref(), Some("Bound"));
    }
    sets.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await
    .unwrap();
    eventually("scaled down to db-0", || {
        let c = c.clone();
        async move {
            let pods = pods_of(&c, "default", "db").await;
            (pods.len() == 1 && pods[0].name_any() == "db-0").then_some(())
        }
    })
    .await;
    for i in 0..3 {
        pvcs.get(&format!("data-db-{i}")).await.unwrap();
    }
    sets.delete("db", &DeleteParams::background())
        .await
        .unwrap();
    eventually("pods collected", || {
        let c = c.clone();
        async move { pods_of(&c, "default", "db").await.is_empty().then_some(()) }
    })
    .await;
    for i in 0..3 {
        pvcs.get(&format!("data-db-{i}")).await.unwrap();
    }
}

#[tokio::test]
async fn ordered_ready_waits_for_each_pod_to_be_ready() {
    let sb = Sandbox::start().await.unwrap();
    let c = sb.client();
    let sets: Api<StatefulSet> = Api::namespaced(c.clone(), "default");
    let pods_api: Api<Pod> = Api::namespaced(c.clone(), "default");
    // A readiness gate: the pod is Ready only once another component (a
    // load balancer controller, say) sets its condition to True, whatever
    // its containers do.
    const GATE: &str = "example.com/serving";
    let set: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "q"},
        "spec": {"replicas": 2, "serviceName": "q", "selector": {"matchLabels": {"app": "q"}},
            "template": {"metadata": {"labels": {"app": "q"}},
                "spec": {"readinessGates": [{"conditionType": GATE}],
                    "containers": [{"name": "c", "image": "busybox"}]}}},
    }))
    .unwrap();
    sets.create(&PostParams::default(), &set).await.unwrap();
    let gate = |name: &'static str, value: &'static str| {
        let pods_api = pods_api.clone();
        async move {
            pods_api
                .patch_status(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(
                        json!({"status": {"conditions": [{"type": GATE, "status": value}]}}),
                    ),
                )
                .await
                .unwrap();
        }
    };
    let ready = |p: &Pod| -> Option<(String, Option<String>)> {
        p.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    // q-0 runs, but its gate holds back Ready, and with it q-1.
    let q0 = eventually("q-0 running", || {
        let pods_api = pods_api.clone();
        async move {
            let p = pods_api.get("q-0").await.ok()?;
            (p.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(p)
        }
    })
    .await;
    assert_eq!(
        ready(&q0),
        Some(("False".into(), Some("ReadinessGatesNotReady".into())))
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(pods_api.get("q-1").await.is_err(), "q-1 waits for q-0");
    gate("q-0", "True").await;
    eventually("q-1 after q-0 is Ready", || {
        let pods_api = pods_api.clone();
        async move { pods_api.get("q-1").await.ok() }
    })
    .await;
    // The gate's condition False (not just missing) holds back q-2 as well.
    gate("q-1", "False").await;
    sets.patch(
        "q",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 3}})),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        pods_api.get("q-2").await.is_err(),
        "q-2 waits for q-1 to be Ready"
    );
    let q1 = pods_api.get("q-1").await.unwrap();
    assert_eq!(
        ready(&q1),
        Some(("False".into(), Some("ReadinessGatesNotReady".into())))
    );
    gate("q-1", "True").await;
    eventually("q-2 after q-1 is Ready", || {
        let pods_api = pods_api.clone();
        async move { pods_api.get("q-2").await.ok() }
    })
    .await;
    let q1 = pods_api.get("q-1").await.unwrap();
    assert_eq!(ready(&q1), Some(("True".into(), None)));
}

#[tokio::test]
async fn a_daemonset_runs_a_pod_per_matching_node() {
    // Nodes with kubelets: a Node object nobody runs would never run (nor
    // ready) the pods bound to it, as on a real cluster.
    let sb = Sandbox::builder().nodes(3).start().await.unwrap();
    let c = sb.client();
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(c.clone());
    for (name, disk) in [
        ("sandbox-node-1", "ssd"),
        ("sandbox-node-2", "ssd"),
        ("sandbox-node-3", "hdd"),
    ] {
        nodes
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"disk": disk}}})),
            )
            .await
            .unwrap();
    }
    let all_nodes = nodes
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .len();
    let dss: Api<DaemonSet> = Api::namespaced(c.clone(), "default");
    let ds = |name: &str, selector: serde_json::Value| -> DaemonSet {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}},
                    "spec": {"nodeSelector": selector, "containers": [{"name": "c", "image": "agent"}]}}},
        }))
        .unwrap()
    };
    dss.create(&PostParams::default(), &ds("agent", json!({})))
        .await
        .unwrap();
    dss.create(&PostParams::default(), &ds("fast", json!({"disk": "ssd"})))
        .await
        .unwrap();
    let target = |p: &Pod| -> String {
        let a = p.spec.as_ref().unwrap().affinity.as_ref().unwrap();
        let terms = &a
            .node_affinity
            .as_ref()
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap()
            .node_selector_terms;
        terms[0].match_fields.as_ref().unwrap()[0]
            .values
            .as_ref()
            .unwrap()[0]
            .clone()
    };
    for (app, want) in [("agent", all_nodes), ("fast", 2)] {
        let d = eventually(&format!("{app}: {want} pods"), || {
            let dss = dss.clone();
            async move {
                let d = dss.get(app).await.ok()?;
                let s = d.status.clone()?;
                (s.desired_number_scheduled == want as i32 && s.number_ready == want as i32)
                    .then_some(d)
            }
        })
        .await;
        assert_eq!(d.status.unwrap().current_number_scheduled, want as i32);
        let pods = pods_of(&c, "default", app).await;
        let mut on: Vec<String> = pods.iter().map(target).collect();
        on.sort();
        on.dedup();
        assert_eq!(on.len(), want, "one pod per node: {on:?}");
        if app == "fast" {
            assert_eq!(on, ["sandbox-node-1", "sandbox-node-2"]);
        }
        assert!(pods.iter().all(|p| controller_ref(p).0 == "DaemonSet"));
    }
    // A node that stops matching loses its pod.
    nodes
        .patch(
            "sandbox-node-2",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"disk": "hdd"}}})),
        )
        .await
        .unwrap();
    eventually("fast leaves sandbox-node-2", || {
        let c = c.clone();
        async move {
            let pods = pods_of(&c, "default", "fast").await;
            (pods.len() == 1 && target(&pods[0]) == "sandbox-node-1").then_some(())
        }
    })
    .await;
}

fn job(name: &str, spec: serde_json::Value) -> Job {
    let mut spec = spec;
    spec["template"] = json!({"metadata": {"labels": {"app": name}},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}});
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

/// Ends a running pod in `phase` through the status subresource, as a
/// component other than the kubelet may (eviction, the pod GC): the kubelet
/// keeps a terminal phase the API shows and stops the containers, so the
/// Job controller sees what a container's exit would have given it.
async fn finish_pod(pods: &Api<Pod>, name: &str, phase: &str) {
    pods.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": phase,
        "conditions": [{"type": "Ready", "status": "False"}]}})),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_job_completes_when_its_pods_succeed_and_fails_past_its_backoff_limit() {
    let sb = Sandbox::start().await.unwrap();
    let c = sb.client();
    let jobs: Api<Job> = Api::namespaced(c.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    jobs.create(
        &PostParams::default(),
        &job("once", json!({"completions": 2, "parallelism": 1})),
    )
    .await
    .unwrap();
    for round in 1..=2 {
        let p = eventually("an active pod", || {
            let c = c.clone();
            async move {
                pods_of(&c, "default", "once")
                    .await
                    .into_iter()
                    .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            }
        })
        .await;
        assert_eq!(p.labels()["batch.kubernetes.io/job-name"], "once");
        assert!(
            p.finalizers()
                .iter()
                .any(|f| f == "batch.kubernetes.io/job-tracking")
        );
        assert_eq!(
            controller_ref(&p),
            ("Job".into(), "once".into(), true, true)
        );
        // The pod's work is done: it ends Succeeded.
        finish_pod(&pods, &p.name_any(), "Succeeded").await;
        eventually("succeeded counted", || {
            let jobs = jobs.clone();
            async move {
                let j = jobs.get("once").await.ok()?;
                (j.status.as_ref()?.succeeded == Some(round)).then_some(())
            }
        })
        .await;
    }
    let j = eventually("Complete", || {
        let jobs = jobs.clone();
        async move {
            let j = jobs.get("once").await.ok()?;
            let cs = j.status.as_ref()?.conditions.clone()?;
            cs.iter()
                .any(|c| c.type_ == "Complete" && c.status == "True")
                .then_some(j)
        }
    })
    .await;
    let s = j.status.unwrap();
    assert!(s.completion_time.is_some() && s.start_time.is_some());
    assert_eq!((s.active, s.failed), (None, None));
    // Counted pods lose the tracking finalizer and stay (for logs).
    let left = pods_of(&c, "default", "once").await;
    assert_eq!(left.len(), 2);
    assert!(left.iter().all(|p| p.finalizers().is_empty()));

    jobs.create(
        &PostParams::default(),
        &job("flaky", json!({"backoffLimit": 1})),
    )
    .await
    .unwrap();
    for _ in 0..2 {
        let p = eventually("a running pod", || {
            let c = c.clone();
            async move {
                pods_of(&c, "default", "flaky")
                    .await
                    .into_iter()
                    .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            }
        })
        .await;
        finish_pod(&pods, &p.name_any(), "Failed").await;
    }
    let j = eventually("Failed", || {
        let jobs = jobs.clone();
        async move {
            let j = jobs.get("flaky").await.ok()?;
            let cs = j.status.as_ref()?.conditions.clone()?;
            cs.iter()
                .find(|c| c.type_ == "Failed" && c.status == "True")
                .map(|c| (j.clone(), c.reason.clone()))
        }
    })
    .await;
    assert_eq!(j.1.as_deref(), Some("BackoffLimitExceeded"));
    assert_eq!(j.0.status.unwrap().failed, Some(2));
    // kubectl delete sends Background; the API default for batch/v1 Jobs
    // orphans the pods, as kube-apiserver does.
    jobs.delete("once", &DeleteParams::default()).await.unwrap();
    eventually("once gone", || {
        let jobs = jobs.clone();
        async move { gone(&jobs, "once").await.then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let orphans = pods_of(&c, "default", "once").await;
    assert_eq!(orphans.len(), 2);
    assert!(orphans.iter().all(|p| p.owner_references().is_empty()));
    jobs.delete("flaky", &DeleteParams::background())
        .await
        .unwrap();
    eventually("flaky's pods collected", || {
        let c = c.clone();
        async move {
            pods_of(&c, "default", "flaky")
                .await
                .is_empty()
                .then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn a_cronjob_creates_a_job_for_a_missed_slot() {
    let sb = Sandbox::start().await.unwrap();
    let c = sb.client();
    let cjs: Api<CronJob> = Api::namespaced(c.clone(), "default");
    let cj: CronJob = serde_json::from_value(json!({
        "metadata": {"name": "tick"},
        "spec": {"schedule": "* * * * *", "concurrencyPolicy": "Forbid",
            "jobTemplate": {"metadata": {"labels": {"app": "tick"}},
                "spec": {"template": {"spec": {"restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "busybox"}]}}}}},
    }))
    .unwrap();
    cjs.create(&PostParams::default(), &cj).await.unwrap();
    // Pretend the last run was two minutes ago: the slot of the current
    // minute is then due at once (the next one would be up to 60 s away).
    let earlier = jiff::Timestamp::now()
        .checked_sub(jiff::SignedDuration::from_secs(120))
        .unwrap()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    cjs.patch_status(
        "tick",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"lastScheduleTime": earlier}})),
    )
    .await
    .unwrap();
    let jobs: Api<Job> = Api::namespaced(c.clone(), "default");
    let j = eventually("a job", || {
        let jobs = jobs.clone();
        async move {
            jobs.list(&ListParams::default().labels("app=tick"))
                .await
                .ok()?
                .items
                .into_iter()
                .next()
        }
    })
    .await;
    let minutes: i64 = j.name_any().strip_prefix("tick-").unwrap().parse().unwrap();
    let now_minutes = jiff::Timestamp::now().as_second() / 60;
    assert!(
        (now_minutes - 1..=now_minutes).contains(&minutes),
        "{minutes} vs {now_minutes}"
    );
    assert_eq!(
        controller_ref(&j),
        ("CronJob".into(), "tick".into(), true, true)
    );
    assert!(
        j.annotations()
            .contains_key("batch.kubernetes.io/cronjob-scheduled-timestamp")
    );
    let cj = eventually("status.active", || {
        let cjs = cjs.clone();
        async move {
            let cj = cjs.get("tick").await.ok()?;
            let s = cj.status.clone()?;
            (s.active.as_ref().is_some_and(|a| a.len() == 1)).then_some(cj)
        }
    })
    .await;
    assert!(cj.status.unwrap().last_schedule_time.is_some());
    // The job runs a pod from the template.
    eventually("the job's pod", || {
        let c = c.clone();
        let name = j.name_any();
        async move {
            let pods: Api<Pod> = Api::namespaced(c, "default");
            let l = pods
                .list(
                    &ListParams::default().labels(&format!("batch.kubernetes.io/job-name={name}")),
                )
                .await
                .ok()?;
            (!l.items.is_empty()).then_some(())
        }
    })
    .await;
}
