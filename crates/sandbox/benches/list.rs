//! Seeds 100,000 ConfigMaps of ~1 KB across 200 namespaces, then lists them
//! all through kube-rs with limit=500 paging, and prints seeding time, list
//! throughput and peak RSS. Run with:
//!
//! ```text
//! cargo bench -p lifeboat-sandbox --bench list
//! ```

use std::time::Instant;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams};
use lifeboat_sandbox::Sandbox;
use serde_json::json;

// The allocator the lifeboat binary uses (src/main.rs), so the figure is
// the one `lifeboat sandbox serve` and its in-process clients see.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const OBJECTS: usize = 100_000;
const NAMESPACES: usize = 200;

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let filler = "x".repeat(100);
        let make = |i: usize| {
                let data: serde_json::Map<String, serde_json::Value> =
                    (0..8).map(|k| (format!("key-{k}"), json!(filler))).collect();
                json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": format!("cm-{i:06}"), "namespace": format!("ns-{:03}", i % NAMESPACES),
                        "labels": {"app": "bench", "shard": (i % 10).to_string()}},
                    "data": data})
        };
        // Seeded in batches, as generated, so the input does not count
        // towards the peak RSS measured for the server.
        let t = Instant::now();
        let sb = Sandbox::start().await.expect("sandbox");
        for batch in (0..OBJECTS).collect::<Vec<_>>().chunks(5_000) {
            sb.seed(batch.iter().map(|&i| make(i))).expect("seed");
        }
        let seed = t.elapsed();
        let api: Api<ConfigMap> = Api::all(sb.client());
        let one = api.list(&ListParams::default().limit(1)).await.expect("list");
        let size = serde_json::to_vec(&one.items[0]).map(|v| v.len()).unwrap_or(0);
        // LIFEBOAT_BENCH_LIST_ROUNDS lists everything that many times (for a
        // profile of the list path alone); the figure is the best round.
        let rounds: usize = std::env::var("LIFEBOAT_BENCH_LIST_ROUNDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        let mut list = std::time::Duration::MAX;
        let mut n = 0usize;
        for _ in 0..rounds.max(1) {
            let t = Instant::now();
            let mut lp = ListParams::default().limit(500);
            n = 0;
            loop {
                let page = api.list(&lp).await.expect("list page");
                n += page.items.len();
                match page.metadata.continue_ {
                    Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
                    _ => break,
                }
            }
            list = list.min(t.elapsed());
        }
        println!("objects seeded:   {} (+ namespaces etc.), ~{size} bytes each", OBJECTS);
        println!("seeding:          {:.2} s", seed.as_secs_f64());
        println!("listed:           {n} objects in {:.2} s", list.as_secs_f64());
        println!("throughput:       {:.0} objects/s", n as f64 / list.as_secs_f64());
        println!("peak RSS (VmHWM): {:.0} MB", peak_rss_mb());
    });
}
