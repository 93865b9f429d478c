//! Creates 10 Deployments of 100 replicas through kube-rs on a sandbox of
//! 10 nodes and measures how long until all 1,000 pods are Running
//! (watched through the API), and until all 10 Deployments report 100
//! available replicas. The figure covers the Deployment and ReplicaSet
//! controllers, the scheduler, the kubelets (simulated containers), the API
//! writes they make and the watch that reports them. Ten nodes because a
//! node takes at most 110 pods (its allocatable `pods`), as a real one
//! does: one node would leave 890 pods Pending. Run with:
//!
//! ```text
//! cargo bench -p lifeboat-sandbox --bench controllers
//! ```

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::watcher;
use lifeboat_sandbox::Sandbox;
use serde_json::json;

// The allocator the lifeboat binary uses (src/main.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEPLOYMENTS: usize = 10;
const REPLICAS: usize = 100;
/// Enough nodes for the pods at 110 per node.
const NODES: usize = 10;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let sb = Sandbox::builder()
            .nodes(NODES)
            .start()
            .await
            .expect("sandbox");
        let c = sb.client();
        let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
        let deps: Api<Deployment> = Api::namespaced(c.clone(), "default");
        // Watch first, so no pod is missed.
        let mut stream = watcher(pods, watcher::Config::default()).boxed();
        let t = Instant::now();
        for i in 0..DEPLOYMENTS {
            let name = format!("web-{i}");
            let d: Deployment = serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {"replicas": REPLICAS, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}},
                        "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}},
            }))
            .expect("deployment");
            deps.create(&PostParams::default(), &d)
                .await
                .expect("create");
        }
        let created = t.elapsed();
        let mut running = HashSet::new();
        let want = DEPLOYMENTS * REPLICAS;
        while running.len() < want {
            let Ok(ev) = tokio::time::timeout(Duration::from_secs(60), stream.next()).await
            else {
                // Say where it stalled instead of only that it did.
                let all = Api::<Pod>::namespaced(c.clone(), "default")
                    .list(&ListParams::default())
                    .await
                    .expect("list pods");
                let mut phases = std::collections::BTreeMap::<String, usize>::new();
                for p in &all.items {
                    let ph = p.status.as_ref().and_then(|s| s.phase.clone());
                    *phases.entry(ph.unwrap_or_default()).or_default() += 1;
                }
                let stuck = all.items.iter().find(|p| {
                    p.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Running")
                });
                panic!(
                    "no pod event for 60 s with {} of {want} seen Running; pods by phase: {phases:?}; one not running: {:#?}",
                    running.len(),
                    stuck.map(|p| (&p.metadata.name, p.spec.as_ref().map(|s| &s.node_name), &p.status))
                );
            };
            let ev = ev.expect("watch ended").expect("watch error");
            let mut seen = |p: Pod| {
                if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
                    running.insert(p.name_any());
                }
            };
            match ev {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => seen(p),
                _ => {}
            }
        }
        let pods_running = t.elapsed();
        loop {
            let l = deps.list(&ListParams::default()).await.expect("list");
            let ready = l.items.iter().all(|d| {
                d.status.as_ref().and_then(|s| s.available_replicas) == Some(REPLICAS as i32)
            });
            if ready {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let available = t.elapsed();
        println!("deployments:        {DEPLOYMENTS} x {REPLICAS} replicas");
        println!("created (API):      {:.3} s", created.as_secs_f64());
        println!("{want} pods Running: {:.3} s", pods_running.as_secs_f64());
        println!("all Available:      {:.3} s", available.as_secs_f64());
        println!("objects stored:     {}", sb.object_count());
    });
}
