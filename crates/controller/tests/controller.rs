//! Leader election against the sandbox API server through the real
//! kube-rs client and kube-lease-manager.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use lifeboat_controller::leader::{LeaderConfig, Leadership};
use lifeboat_controller::metrics::Metrics;
use lifeboat_sandbox::Sandbox;
use tokio::time::Instant;

const LEASE: Duration = Duration::from_secs(2);

fn config(identity: &str) -> LeaderConfig {
    LeaderConfig {
        duration: LEASE,
        ..LeaderConfig::new("default", identity)
    }
}

/// Polls the candidates until exactly one leads, asserting on every poll
/// that never more than one does. Returns the leader's index.
async fn one_leader(candidates: &[&Leadership], within: Duration) -> usize {
    let until = Instant::now() + within;
    loop {
        let leading: Vec<usize> = (0..candidates.len())
            .filter(|&i| candidates[i].is_leader())
            .collect();
        assert!(leading.len() <= 1, "two leaders at once: {leading:?}");
        if let [one] = leading[..] {
            return one;
        }
        assert!(Instant::now() < until, "no leader within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts for `how_long` that at most one candidate leads and the leader
/// does not change.
async fn stays(candidates: &[&Leadership], leader: usize, how_long: Duration) {
    let until = Instant::now() + how_long;
    while Instant::now() < until {
        for (i, c) in candidates.iter().enumerate() {
            assert_eq!(c.is_leader(), i == leader, "candidate {i}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn holder(sb: &Sandbox) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(sb.client(), "default");
    leases
        .get("lifeboat-controller")
        .await
        .unwrap()
        .spec
        .and_then(|s| s.holder_identity)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_and_a_quick_handover_on_release() {
    let sb = Sandbox::start().await.unwrap();
    let names = ["pod-a", "pod-b", "pod-c"];
    let mut all = Vec::new();
    for n in names {
        all.push(Leadership::start(sb.client(), config(n)).await.unwrap());
    }
    let metrics = Metrics::new();
    let refs: Vec<&Leadership> = all.iter().collect();
    let first = one_leader(&refs, 3 * LEASE).await;
    all[first].report_to(metrics.clone());
    assert_eq!(holder(&sb).await.as_deref(), Some(names[first]));
    // Renewals keep the same leader across several lease durations.
    stays(&refs, first, 2 * LEASE + Duration::from_millis(500)).await;
    assert!(metrics.encode().contains("\nlifeboat_leader 1\n"));

    let mut watch = all[first].watch();
    let leader = all.remove(first);
    let released_at = Instant::now();
    let wait_false = tokio::spawn(async move { watch.wait_for(|l| !*l).await.is_ok() });
    leader.release().await;
    assert!(wait_false.await.unwrap(), "watchers see the step-down");
    assert!(metrics.encode().contains("\nlifeboat_leader 0\n"));

    let refs: Vec<&Leadership> = all.iter().collect();
    let next = one_leader(&refs, LEASE + Duration::from_secs(2)).await;
    assert!(released_at.elapsed() <= LEASE + Duration::from_secs(2));
    assert_eq!(holder(&sb).await.as_deref(), Some(all[next].identity()));
    stays(&refs, next, LEASE).await;
    for l in all {
        l.release().await;
    }
    assert_eq!(holder(&sb).await, None);

    // The calls leader election makes, for the RBAC in deploy/.
    let used: BTreeSet<(String, String, String)> = sb
        .requests()
        .into_iter()
        .filter(|r| r.resource == "leases")
        .map(|r| (r.verb, r.group, r.resource))
        .collect();
    let allowed: BTreeSet<(String, String, String)> = ["create", "get", "patch"]
        .into_iter()
        .map(|v| (v.into(), "coordination.k8s.io".into(), "leases".into()))
        .collect();
    assert_eq!(used, allowed);
    assert!(sb.requests().iter().all(|r| r.resource == "leases"));
}

/// A replica that dies without releasing (its runtime is torn down) loses
/// the lease once it expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_leader_is_replaced_after_the_lease_expires() {
    let sb = Sandbox::start().await.unwrap();
    let kubeconfig = sb.kubeconfig().to_string();
    let (led_tx, led_rx) = tokio::sync::oneshot::channel();
    let (kill_tx, kill_rx) = std::sync::mpsc::channel::<()>();
    let crashed = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let leadership = rt.block_on(async {
            let kc = kube::config::Kubeconfig::from_yaml(&kubeconfig).unwrap();
            let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .unwrap();
            let client = kube::Client::try_from(cfg).unwrap();
            let l = Leadership::start(client, config("pod-crash"))
                .await
                .unwrap();
            let mut w = l.watch();
            w.wait_for(|x| *x).await.unwrap();
            l
        });
        led_tx.send(()).unwrap();
        kill_rx.recv().unwrap();
        // Kill every task of this "process" without running any cleanup.
        rt.shutdown_background();
        drop(leadership);
    });
    led_rx.await.unwrap();
    let standby = Leadership::start(sb.client(), config("pod-standby"))
        .await
        .unwrap();
    stays(&[&standby], usize::MAX, LEASE).await;
    assert_eq!(holder(&sb).await.as_deref(), Some("pod-crash"));

    kill_tx.send(()).unwrap();
    crashed.join().unwrap();
    let died = Instant::now();
    one_leader(&[&standby], 2 * LEASE + Duration::from_secs(2)).await;
    assert!(
        died.elapsed() >= Duration::from_millis(500),
        "took over a live lease"
    );
    assert_eq!(holder(&sb).await.as_deref(), Some("pod-standby"));
    standby.release().await;
}

#[tokio::test]
async fn start_rejects_bad_config() {
    let sb = Sandbox::start().await.unwrap();
    let short = LeaderConfig {
        duration: Duration::from_secs(1),
        ..LeaderConfig::new("default", "p")
    };
    assert!(Leadership::start(sb.client(), short).await.is_err());
    let nobody = LeaderConfig::new("default", "");
    assert!(Leadership::start(sb.client(), nobody).await.is_err());
    let missing_ns = LeaderConfig::new("no-such-namespace", "p");
    let err = Leadership::start(sb.client(), missing_ns)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("no-such-namespace"), "{err:#}");
}
