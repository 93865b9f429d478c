//! Restore throughput: a backup of 30,000 Secrets (~1 KB each) restored
//! into an empty namespace of an in-process sandbox API server.
//!
//! ```sh
//! cargo bench -p lifeboat-kube --bench restore
//! LIFEBOAT_BENCH_SECRETS=5000 LIFEBOAT_BENCH_PARALLELISM=32 cargo bench -p lifeboat-kube --bench restore
//! ```

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;
use jiff::Timestamp;
use lifeboat_kube::restore::{RestoreOptions, restore};
use lifeboat_sandbox::Sandbox;
use lifeboat_store::{BackupSpec, LocationConfig, ObjectEntry, Repository};
use serde_json::json;

type R<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn bench() -> R {
    let secrets = env_usize("LIFEBOAT_BENCH_SECRETS", 30_000);
    let parallelism = env_usize("LIFEBOAT_BENCH_PARALLELISM", 16);
    let dir = tempfile::tempdir()?;
    let config = LocationConfig {
        url: format!("file://{}", dir.path().display()),
        ..Default::default()
    };
    let repo = Repository::open(&config).await?;
    let now = Timestamp::now();
    let writer = repo
        .begin_backup(BackupSpec {
            cluster: "bench".into(),
            policy: "secrets".into(),
            policy_revision: None,
            schedule_slot: now,
            start_time: now,
            labels: BTreeMap::new(),
        })
        .await?;
    let payload = "x".repeat(700);
    let t = Instant::now();
    for i in 0..secrets {
        let name = format!("secret-{i:06}");
        let obj = json!({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": "bench",
                "uid": format!("00000000-0000-0000-0000-{i:012}"),
                "resourceVersion": format!("{}", i + 1000),
                "labels": {"app": "bench"}},
            "data": {"payload": payload},
        });
        writer
            .add(ObjectEntry {
                resource: "secrets".into(),
                group: String::new(),
                namespace: Some("bench".into()),
                name,
                api_version: "v1".into(),
                kind: "Secret".into(),
                json: Bytes::from(serde_json::to_vec(&obj)?),
            })
            .await?;
    }
    let backup = writer.name().to_string();
    writer.finish(Timestamp::now()).await?;
    eprintln!("wrote a backup of {secrets} Secrets in {:?}", t.elapsed());

    let sb = Sandbox::start().await?;
    let client = sb.client();
    let reader = repo.open_backup("bench", &backup).await?;
    let opts = RestoreOptions {
        parallelism,
        ..Default::default()
    };
    let t = Instant::now();
    let out = restore(&client, &reader, &opts, &|_| {}).await?;
    let secs = t.elapsed().as_secs_f64();
    let created = out.counts.created;
    println!(
        "restore: {created} objects created ({} failed) in {secs:.2}s = {:.0} objects/s, \
         parallelism {parallelism}",
        out.counts.failed,
        created as f64 / secs
    );
    if out.counts.failed > 0 {
        return Err(format!("{} objects failed", out.counts.failed).into());
    }
    Ok(())
}

fn main() -> R {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(bench())
}
