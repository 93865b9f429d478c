//! Archive writer throughput: streams 100,000 ~1 KB JSON objects into a
//! backup on `file://`, without and with age encryption, and reports
//! objects/s, MB/s (of object JSON) and peak RSS (VmHWM).
//!
//! `cargo bench -p lifeboat-store --bench write` (release profile).

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;
use jiff::{SignedDuration, Timestamp};
use lifeboat_store::{BackupSpec, LocationConfig, ObjectEntry, Repository};

const OBJECTS: usize = 100_000;

fn object(i: usize) -> ObjectEntry {
    let name = format!("config-{i:06}");
    let ns = format!("team-{}", i % 50);
    // ~1 KB, realistic-ish: mostly repeated structure plus unique values.
    let json = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name, "namespace": ns, "uid": format!("{:032x}", (i as u128) * 0x9e37_79b9_7f4a_7c15),
            "labels": {"app": format!("svc-{}", i % 300), "team": ns, "tier": "backend"},
            "annotations": {"checksum": format!("{:064x}", (i as u128).wrapping_mul(0x2545_f491_4f6c_dd1d))},
        },
        "data": {"config.yaml": format!("replicas: {}\nimage: registry.example/app:{}\n{}", i % 7, i, "key: value\n".repeat(60))},
    });
    ObjectEntry {
        resource: "configmaps".into(),
        group: String::new(),
        namespace: Some(ns),
        name,
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        json: Bytes::from(serde_json::to_vec(&json).unwrap_or_default()),
    }
}

fn vm_hwm_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

async fn run(encrypted: bool) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let id = age::x25519::Identity::generate();
    let config = LocationConfig {
        url: format!("file://{}", dir.path().display()),
        recipients: if encrypted {
            vec![id.to_public().to_string()]
        } else {
            vec![]
        },
        ..Default::default()
    };
    let repo = Repository::open(&config).await?;
    let start = Timestamp::now();
    let spec = BackupSpec {
        cluster: "bench".into(),
        policy: "bench".into(),
        policy_revision: None,
        schedule_slot: start,
        start_time: start,
        labels: BTreeMap::new(),
    };
    let t = Instant::now();
    let writer = repo.begin_backup(spec).await?;
    // Four producers, as list tasks would be; objects are made on the fly so
    // peak RSS measures the writer, not the input.
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..4 {
        let h = writer.handle();
        tasks.spawn(async move {
            let mut bytes = 0usize;
            for i in (p..OBJECTS).step_by(4) {
                let o = object(i);
                bytes += o.json.len();
                h.add(o).await?;
            }
            Ok::<_, lifeboat_store::StoreError>(bytes)
        });
    }
    let mut json_bytes = 0usize;
    while let Some(r) = tasks.join_next().await {
        json_bytes += r??;
    }
    let m = writer.finish(start + SignedDuration::from_secs(1)).await?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{:<10} {OBJECTS} objects, {:.1} MB JSON -> {:.1} MB stored in {secs:.2}s: {:.0} objects/s, {:.1} MB/s, peak RSS {} MB",
        if encrypted { "age" } else { "plain" },
        json_bytes as f64 / 1e6,
        m.files.resources.bytes as f64 / 1e6,
        OBJECTS as f64 / secs,
        json_bytes as f64 / 1e6 / secs,
        vm_hwm_kb() / 1024,
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Each variant runs in its own process so VmHWM is its own.
    match std::env::args()
        .find(|a| a == "plain" || a == "age")
        .as_deref()
    {
        Some(mode) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(run(mode == "age"))
        }
        None => {
            for mode in ["plain", "age"] {
                let status = std::process::Command::new(std::env::current_exe()?)
                    .arg(mode)
                    .status()?;
                if !status.success() {
                    return Err(format!("{mode} run failed: {status}").into());
                }
            }
            Ok(())
        }
    }
}
