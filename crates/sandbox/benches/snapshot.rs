//! Snapshots a 1 GiB volume through the API: a 1 GiB claim, 1 GiB of
//! random bytes written into its volume directory (16 files of 64 MiB),
//! then a VolumeSnapshot; the time is from the create call until the
//! content has its snapshot handle (the copy is done) and the snapshot is
//! `readyToUse` (the readiness delay is 0). Prints each run, whether the
//! copy was a reflink, and the filesystem of the data directory. Run with:
//!
//! ```text
//! cargo bench -p lifeboat-sandbox --bench snapshot
//! ```
//!
//! The data directory is a temporary directory under `$LIFEBOAT_BENCH_DIR`
//! (default: the system temporary directory); about 4 GiB must be free.

use std::io::Write;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use kube::discovery::ApiResource;
use lifeboat_sandbox::Sandbox;
use serde_json::json;

const FILES: usize = 16;
const FILE_BYTES: usize = 64 << 20;
const RUNS: usize = 3;

fn filesystem(path: &std::path::Path) -> String {
    std::process::Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(path)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn main() {
    let base = std::env::var_os("LIFEBOAT_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let data = tempfile::Builder::new()
        .prefix("lifeboat-snapshot-bench-")
        .tempdir_in(&base)
        .expect("a temporary data directory");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let sb = Sandbox::builder()
            .data_dir(data.path())
            .snapshot_delay(Duration::ZERO)
            .start()
            .await
            .expect("sandbox");
        let c = sb.client();
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(c.clone(), "default");
        let pvc = serde_json::from_value(json!({"metadata": {"name": "big"}, "spec": {
            "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}))
        .expect("claim");
        pvcs.create(&PostParams::default(), &pvc).await.expect("create claim");
        let pv = pvcs
            .get("big")
            .await
            .expect("claim")
            .spec
            .and_then(|s| s.volume_name)
            .expect("bound at once");
        let dir = data.path().join("volumes").join(&pv);
        let mut rng = fastrand::Rng::with_seed(7);
        let mut buf = vec![0u8; FILE_BYTES];
        for i in 0..FILES {
            rng.fill(&mut buf);
            let mut f = std::fs::File::create(dir.join(format!("part-{i:02}.bin"))).expect("file");
            f.write_all(&buf).expect("write");
            f.sync_all().expect("sync");
        }
        let ar = ApiResource {
            group: "snapshot.storage.k8s.io".into(),
            version: "v1".into(),
            api_version: "snapshot.storage.k8s.io/v1".into(),
            kind: "VolumeSnapshot".into(),
            plural: "volumesnapshots".into(),
        };
        let vss: Api<DynamicObject> = Api::namespaced_with(c.clone(), "default", &ar);
        let mut times = Vec::new();
        let mut reflinked = 0;
        for run in 0..RUNS {
            let name = format!("snap-{run}");
            let vs: DynamicObject = serde_json::from_value(json!({"apiVersion": "snapshot.storage.k8s.io/v1",
                "kind": "VolumeSnapshot", "metadata": {"name": name},
                "spec": {"source": {"persistentVolumeClaimName": "big"}}}))
            .expect("snapshot");
            let start = Instant::now();
            vss.create(&PostParams::default(), &vs).await.expect("create snapshot");
            let ready = loop {
                let v = vss.get(&name).await.expect("snapshot");
                if v.data["status"]["readyToUse"] == true {
                    break v;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            let took = start.elapsed();
            times.push(took);
            assert!(ready.data["status"]["boundVolumeSnapshotContentName"].is_string());
            // What the driver recorded about the copy.
            let meta: serde_json::Value = std::fs::read_dir(data.path().join("snapshots"))
                .expect("snapshots")
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .filter_map(|e| std::fs::read(e.path()).ok())
                .filter_map(|b| serde_json::from_slice(&b).ok())
                .last()
                .expect("snapshot metadata");
            reflinked = meta["reflinkedFiles"].as_u64().unwrap_or(0);
            println!("run {run}: snapshot of 1 GiB ready in {:.3} s", took.as_secs_f64());
            vss.delete(&name, &DeleteParams::default()).await.expect("delete");
        }
        times.sort();
        println!(
            "snapshot of a 1 GiB volume ({FILES} files): median {:.3} s, min {:.3} s over {RUNS} runs",
            times[RUNS / 2].as_secs_f64(),
            times[0].as_secs_f64()
        );
        println!(
            "reflink used: {} ({reflinked} of {FILES} files); data directory filesystem: {}",
            if reflinked == FILES as u64 { "yes" } else { "no (full copy)" },
            filesystem(data.path())
        );
    });
}
