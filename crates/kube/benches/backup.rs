//! Backup throughput against an in-process sandbox holding 100,000
//! ConfigMaps and Secrets of ~1 KB across 200 namespaces. Times a plain
//! paged LIST of all of them with kube-rs (the floor), then `backup()` of all
//! namespaces into a `file://` repository including `finish()`, and prints
//! objects/s, the ratio to the floor and peak RSS. Run with:
//!
//! ```text
//! cargo bench -p lifeboat-kube --bench backup
//! ```
//!
//! The sandbox lives in the same process and holds every object, so the RSS
//! before the backup is printed too: the difference is the backup's share.

use std::time::Instant;

use kube::api::{Api, ListParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use lifeboat_kube::backup::{BackupOptions, backup};
use lifeboat_kube::select::Selection;
use lifeboat_sandbox::Sandbox;
use lifeboat_store::{BackupSpec, LocationConfig, Repository};
use serde_json::json;

const OBJECTS: usize = 100_000;
const NAMESPACES: usize = 200;

fn status_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with(field)).and_then(|l| {
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
            let data: serde_json::Map<String, serde_json::Value> = (0..8)
                .map(|k| (format!("key-{k}"), json!(filler)))
                .collect();
            let (kind, name) = if i.is_multiple_of(2) {
                ("ConfigMap", format!("cm-{i:06}"))
            } else {
                ("Secret", format!("secret-{i:06}"))
            };
            json!({"apiVersion": "v1", "kind": kind,
                "metadata": {"name": name, "namespace": format!("ns-{:03}", i % NAMESPACES),
                    "labels": {"app": "bench", "shard": (i % 10).to_string()}},
                "data": data})
        };
        let t = Instant::now();
        let sb = Sandbox::start().await.expect("sandbox");
        for batch in (0..OBJECTS).collect::<Vec<_>>().chunks(5_000) {
            sb.seed(batch.iter().map(|&i| make(i))).expect("seed");
        }
        let seed = t.elapsed();
        let client = sb.client();

        // The floor: list every ConfigMap and Secret, 500 per page.
        let t = Instant::now();
        let mut listed = 0usize;
        for kind in ["ConfigMap", "Secret"] {
            let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", kind));
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
            let mut lp = ListParams::default().limit(500);
            loop {
                let page = api.list(&lp).await.expect("list page");
                listed += page.items.len();
                match page.metadata.continue_ {
                    Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
                    _ => break,
                }
            }
        }
        let floor = t.elapsed();
        let rss_before = status_mb("VmRSS:");
        let hwm_before = status_mb("VmHWM:");

        let dir = tempfile::tempdir().expect("tempdir");
        let repo = Repository::open(&LocationConfig {
            url: format!("file://{}", dir.path().display()),
            ..LocationConfig::default()
        })
        .await
        .expect("repository");
        let slot = jiff::Timestamp::now();
        let t = Instant::now();
        let writer = repo
            .begin_backup(BackupSpec {
                cluster: "bench".into(),
                policy: "bench".into(),
                policy_revision: None,
                schedule_slot: slot,
                start_time: slot,
                labels: Default::default(),
            })
            .await
            .expect("begin backup");
        let summary = backup(
            &client,
            &Selection::all(),
            &writer.handle(),
            &BackupOptions::default(),
            &|_| {},
        )
        .await
        .expect("backup");
        let manifest = writer.finish(jiff::Timestamp::now()).await.expect("finish");
        let took = t.elapsed();
        let stored = manifest.files.resources.bytes;

        println!("objects seeded:        {OBJECTS} ConfigMaps+Secrets in {NAMESPACES} namespaces");
        println!("seeding:               {:.2} s", seed.as_secs_f64());
        println!(
            "floor (paged LIST):    {listed} objects in {:.2} s = {:.0} objects/s",
            floor.as_secs_f64(),
            listed as f64 / floor.as_secs_f64()
        );
        println!(
            "backup() + finish():   {} objects in {:.2} s = {:.0} objects/s ({:?}, {} errors)",
            summary.items,
            took.as_secs_f64(),
            summary.items as f64 / took.as_secs_f64(),
            manifest.phase,
            summary.errors
        );
        println!(
            "ratio to floor:        {:.2}x",
            took.as_secs_f64() / floor.as_secs_f64()
        );
        println!("archive:               {:.1} MB", stored as f64 / 1e6);
        println!("RSS before backup:     {rss_before:.0} MB (peak so far {hwm_before:.0} MB)");
        println!("peak RSS (VmHWM):      {:.0} MB", status_mb("VmHWM:"));
    });
}
