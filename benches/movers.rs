//! Orchestration of volume data backups: how much of a `snapshotMove`
//! backup is the movers' own work, and what running movers in parallel
//! gains. A 3-node sandbox whose mover pods run the release `lifeboat`
//! binary; 12 claims of 256 MiB (incompressible data) in 3 namespaces, each
//! claim's WaitForFirstConsumer volume on node `i % 3` (its pod pins it);
//! backups through `lifeboat_controller::volume_data::back_up`, the code
//! `lifeboat backup` and the controller run, each into its own repositories
//! (a cluster name per run), so every run is a full backup:
//!
//! 1. one claim alone: total time vs that mover's duration;
//! 2. every claim with `moversPerBackup: 1` (serial): orchestration
//!    overhead = (total − Σ mover durations) / total, target ≤ 10 %;
//! 3. every claim with `moversPerNode: 1` on 3 nodes: speed-up over (2),
//!    with each mover's start time.
//!
//! Run: `cargo bench --bench movers` (release build).
//! Knobs: `LIFEBOAT_BENCH_CLAIMS` (12), `LIFEBOAT_BENCH_MIB` (256),
//! `LIFEBOAT_BENCH_DIR` (a temporary directory; needs ~6× the data free,
//! 20 GiB checked at the default size).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, ListParams};
use lifeboat_controller::volume_data::{self, Destination, VolumeEvent};
use lifeboat_kube::volumes::MoverOptions;
use lifeboat_sandbox::Sandbox;
use lifeboat_store::{BackupSpec, LocationConfig, Repository, VolumeEntry, VolumePhase};
use serde_json::json;

const NODES: usize = 3;
const NAMESPACES: usize = 3;
const RECIPIENT: &str = "age1268crxs6ntgpzr3y2auy80yrejxsfmps549ul66ch93t0p5wr9aqyxanhq";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Free bytes of the file system holding `dir` (`df -Pk`).
fn free_bytes(dir: &Path) -> Option<u64> {
    let out = std::process::Command::new("df")
        .arg("-Pk")
        .arg(dir)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let kib: u64 = text
        .lines()
        .nth(1)?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// `bytes` of xorshift output seeded by `seed`: deterministic and, for
/// zstd and restic's deduplication, incompressible.
fn write_data(path: &Path, seed: u64, bytes: usize) {
    let mut f = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(path).expect("create data file"),
    );
    let mut noise = lifeboat_testkit::Noise::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut left = bytes;
    while left > 0 {
        let n = left.min(1 << 20);
        f.write_all(&noise.bytes(n)).expect("write data");
        left -= n;
    }
    f.flush().expect("flush data");
}

fn ns(k: usize) -> String {
    format!("bench-{k}")
}

/// Claim `i`: its namespace and name.
fn claim(i: usize) -> (String, String) {
    (ns(i % NAMESPACES), format!("data-{i}"))
}

/// The namespaces, claims and pods (claim `i`'s pod on node `i % 3`).
fn app_objects(claims: usize, mib: usize) -> Vec<serde_json::Value> {
    let mut objs = Vec::new();
    for k in 0..NAMESPACES {
        objs.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns(k)}}));
    }
    for i in 0..claims {
        let (namespace, name) = claim(i);
        let solo = if i == 0 { "yes" } else { "no" };
        objs.push(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": namespace, "labels": {"solo": solo}},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "standard-wffc",
                     "resources": {"requests": {"storage": format!("{}Mi", mib + 16)}}}}));
        objs.push(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("app-{i}"), "namespace": namespace},
            "spec": {"nodeSelector": {"kubernetes.io/hostname": format!("sandbox-node-{}", i % NODES + 1)},
                     "containers": [{"name": "app", "image": "busybox",
                                     "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                     "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": name}}]}}));
    }
    objs
}

fn policy(
    name: &str,
    namespaces: &[String],
    concurrency: serde_json::Value,
    solo: bool,
) -> lifeboat_core::BackupPolicy {
    let mut volumes = json!({"method": "snapshotMove", "concurrency": concurrency});
    if solo {
        volumes["rules"] = json!([{"match": {"labelSelector": {"matchLabels": {"solo": "no"}}}, "method": "skip"}]);
    }
    serde_json::from_value(json!({
        "apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupPolicy",
        "metadata": {"name": name},
        "spec": {"clusters": {"names": ["bench"]}, "include": {"namespaces": namespaces},
                 "schedule": "0 * * * *", "retention": {"keepLast": 5}, "storage": "local",
                 "volumes": volumes},
    }))
    .expect("a valid policy")
}

/// When each claim's work started (its first step), its mover pod was
/// created, and its result came.
#[derive(Debug, Default, Clone)]
struct Times {
    start: Option<Instant>,
    mover: Option<Instant>,
    done: Option<Instant>,
}

struct Run {
    label: &'static str,
    total: Duration,
    volumes: Vec<VolumeEntry>,
    times: BTreeMap<String, Times>,
    t0: Instant,
}

impl Run {
    fn mover_sum(&self) -> f64 {
        self.volumes
            .iter()
            .map(|v| v.duration_ms as f64 / 1000.0)
            .sum()
    }

    /// The longest chain of movers that ran one after another on one node
    /// (with `moversPerNode: 1`, a node's movers are serial).
    fn busiest_node(&self) -> f64 {
        let mut per: BTreeMap<&str, f64> = BTreeMap::new();
        for v in &self.volumes {
            *per.entry(v.node.as_deref().unwrap_or("?")).or_default() +=
                v.duration_ms as f64 / 1000.0;
        }
        per.values().copied().fold(0.0, f64::max)
    }

    fn print(&self) {
        let total = self.total.as_secs_f64();
        println!(
            "\n{}: {} volumes, total {:.2} s, sum of mover durations {:.2} s, busiest node {:.2} s",
            self.label,
            self.volumes.len(),
            total,
            self.mover_sum(),
            self.busiest_node()
        );
        println!(
            "  claim                 node            start s  mover s  end s  duration s  MiB/s"
        );
        let mut rows: Vec<(&String, &Times)> = self.times.iter().collect();
        rows.sort_by_key(|(_, t)| t.start);
        let at =
            |i: Option<Instant>| i.map_or(f64::NAN, |i| i.duration_since(self.t0).as_secs_f64());
        for (key, t) in rows {
            let v = self
                .volumes
                .iter()
                .find(|v| &format!("{}/{}", v.namespace, v.pvc) == key);
            let (node, dur, bytes) = v.map_or(("?", 0.0, 0), |v| {
                (
                    v.node.as_deref().unwrap_or("?"),
                    v.duration_ms as f64 / 1000.0,
                    v.bytes,
                )
            });
            println!(
                "  {key:<21} {node:<15} {:>7.2}  {:>7.2}  {:>5.2}  {dur:>10.2}  {:>5.0}",
                at(t.start),
                at(t.mover),
                at(t.done),
                bytes as f64 / (1 << 20) as f64 / dur.max(1e-9)
            );
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn back_up(
    client: &kube::Client,
    dir: &Path,
    label: &'static str,
    policy: &lifeboat_core::BackupPolicy,
    expected: usize,
) -> Run {
    let config = LocationConfig {
        url: format!("file://{}", dir.join("storage").display()),
        recipients: vec![RECIPIENT.into()],
        ..Default::default()
    };
    let repository = Repository::open(&config).await.expect("open the location");
    let now = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).expect("a time");
    let mut writer = repository
        .begin_backup(BackupSpec {
            cluster: label.into(),
            policy: policy.metadata.name.clone(),
            policy_revision: None,
            schedule_slot: now,
            start_time: now,
            labels: BTreeMap::new(),
        })
        .await
        .expect("begin the backup");
    let times: Mutex<BTreeMap<String, Times>> = Mutex::default();
    let events = |e: VolumeEvent<'_>| {
        let now = Instant::now();
        let mut t = times.lock().unwrap_or_else(|e| e.into_inner());
        match e {
            VolumeEvent::Progress {
                namespace,
                pvc,
                progress,
            } => {
                let entry = t.entry(format!("{namespace}/{pvc}")).or_default();
                entry.start.get_or_insert(now);
                if matches!(
                    progress,
                    lifeboat_kube::volumes::VolumeProgress::Step { step: "mover" }
                ) {
                    entry.mover = Some(now);
                }
            }
            VolumeEvent::Done { namespace, pvc, .. } => {
                t.entry(format!("{namespace}/{pvc}")).or_default().done = Some(now);
            }
            VolumeEvent::Failed {
                namespace,
                pvc,
                reason,
            } => {
                eprintln!("volume {namespace}/{pvc} failed: {reason}");
            }
            _ => {}
        }
    };
    let to = Destination {
        repository: &repository,
        config: &config,
        location_name: "local",
        cluster: label,
    };
    let opts = volume_data::policy_movers(&MoverOptions::default(), policy);
    let t0 = Instant::now();
    volume_data::back_up(client, &mut writer, policy, to, &opts, &events)
        .await
        .expect("the volume data backup");
    let total = t0.elapsed();
    let manifest = writer
        .finish(jiff::Timestamp::now())
        .await
        .expect("commit the backup");
    let completed = manifest
        .volumes
        .iter()
        .filter(|v| v.phase == VolumePhase::Completed)
        .count();
    assert_eq!(
        completed, expected,
        "volumes completed in {label}: {:?}",
        manifest.volumes
    );
    Run {
        label,
        total,
        volumes: manifest.volumes,
        times: times.into_inner().unwrap_or_else(|e| e.into_inner()),
        t0,
    }
}

fn main() {
    let claims = env_usize("LIFEBOAT_BENCH_CLAIMS", 12);
    let mib = env_usize("LIFEBOAT_BENCH_MIB", 256);
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_lifeboat"));
    let base = std::env::var_os("LIFEBOAT_BENCH_DIR").map(PathBuf::from);
    let tmp = match &base {
        Some(b) => {
            std::fs::create_dir_all(b).expect("create LIFEBOAT_BENCH_DIR");
            tempfile::tempdir_in(b)
        }
        None => tempfile::tempdir(),
    }
    .expect("a temporary directory");
    let dir = tmp.path();
    // Seed data + the volumes + a snapshot and a clone per running mover +
    // the repositories of three runs: ~6× the data; 20 GiB at full size.
    let data = (claims * mib) as u64 * (1 << 20);
    let need = (data * 6).max(if claims * mib >= 12 * 256 {
        20 << 30
    } else {
        0
    });
    match free_bytes(dir) {
        Some(free) if free < need => {
            println!(
                "skipped: {} GiB free in {}, the benchmark needs {} GiB (LIFEBOAT_BENCH_DIR, or a \
                 smaller LIFEBOAT_BENCH_CLAIMS / LIFEBOAT_BENCH_MIB)",
                free >> 30,
                dir.display(),
                need.div_ceil(1 << 30)
            );
            return;
        }
        Some(_) => {}
        None => println!(
            "(cannot tell the free space of {}; going on)",
            dir.display()
        ),
    }
    println!(
        "{claims} claims of {mib} MiB in {NAMESPACES} namespaces on {NODES} nodes; mover: {}",
        bin.display()
    );

    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    rt.block_on(async {
        let started = Instant::now();
        let sb = Sandbox::builder()
            .nodes(NODES)
            .image_binary("ghcr.io/lifeboat-dev/lifeboat", &bin)
            .data_dir(dir.join("cluster"))
            .start()
            .await
            .expect("start the sandbox");
        let client = sb.client();
        for obj in app_objects(claims, mib) {
            let ar = kube::core::ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
                "",
                "v1",
                obj["kind"].as_str().unwrap_or_default(),
            ));
            let api: Api<kube::api::DynamicObject> = match obj["metadata"]["namespace"].as_str() {
                Some(n) => Api::namespaced_with(client.clone(), n, &ar),
                None => Api::all_with(client.clone(), &ar),
            };
            let o: kube::api::DynamicObject = serde_json::from_value(obj).expect("an object");
            api.create(&kube::api::PostParams::default(), &o)
                .await
                .expect("create an object of the app");
        }
        let pvcs: Api<PersistentVolumeClaim> = Api::all(client.clone());
        loop {
            let list = pvcs.list(&ListParams::default()).await.expect("list claims");
            let bound: Vec<&PersistentVolumeClaim> = list
                .items
                .iter()
                .filter(|c| c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
                .collect();
            if bound.len() >= claims {
                let generating = Instant::now();
                for c in &bound {
                    let i: usize = c.metadata.name.as_deref().unwrap_or_default()[5..].parse().unwrap_or(0);
                    let pv = c.spec.as_ref().and_then(|s| s.volume_name.clone()).expect("a bound volume");
                    write_data(&sb.data_dir().join("volumes").join(pv).join("data.bin"), i as u64 + 1, mib << 20);
                }
                println!("generated {} MiB in {:.1} s", claims * mib, generating.elapsed().as_secs_f64());
                break;
            }
            let bound = bound.len();
            assert!(started.elapsed() < Duration::from_secs(600), "claims not bound: {bound}/{claims}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!("sandbox up, {claims} claims bound and filled in {:.1} s", started.elapsed().as_secs_f64());

        let all: Vec<String> = (0..NAMESPACES.min(claims)).map(ns).collect();
        let one = back_up(&client, dir, "one", &policy("one", &all[..1], json!({}), true), 1).await;
        one.print();
        let serial = back_up(
            &client,
            dir,
            "serial",
            &policy("serial", &all, json!({"moversPerBackup": 1}), false),
            claims,
        )
        .await;
        serial.print();
        let parallel = back_up(
            &client,
            dir,
            "parallel",
            &policy("parallel", &all, json!({"moversPerNode": 1}), false),
            claims,
        )
        .await;
        parallel.print();

        let t = |r: &Run| r.total.as_secs_f64();
        println!("\nsummary ({claims} × {mib} MiB, {NODES} nodes sharing this machine's cores)");
        println!(
            "  one claim alone:      total {:.2} s, its mover {:.2} s, overhead {:.1} %",
            t(&one),
            one.mover_sum(),
            100.0 * (t(&one) - one.mover_sum()) / t(&one)
        );
        println!(
            "  serial (1 at a time): total {:.2} s, sum of movers {:.2} s, orchestration overhead {:.1} % (target <= 10 %)",
            t(&serial),
            serial.mover_sum(),
            100.0 * (t(&serial) - serial.mover_sum()) / t(&serial)
        );
        println!(
            "  parallel (1 per node): total {:.2} s, sum of movers {:.2} s, busiest node {:.2} s, overhead vs busiest node {:.1} %",
            t(&parallel),
            parallel.mover_sum(),
            parallel.busiest_node(),
            100.0 * (t(&parallel) - parallel.busiest_node()) / t(&parallel)
        );
        println!(
            "  speed-up parallel over serial: {:.2}x; mean mover {:.2} s serial, {:.2} s parallel",
            t(&serial) / t(&parallel),
            serial.mover_sum() / claims as f64,
            parallel.mover_sum() / claims as f64
        );
        sb.shutdown();
    });
}
