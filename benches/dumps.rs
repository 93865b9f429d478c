//! Memory of a dump hook: a 1 GiB dump streamed from a container's stdout
//! into an encrypted artifact, then back into a restore hook's stdin, with
//! the peak RSS of each phase. The sandbox runs in this process and plays
//! `mysqldump` (SQL text made as it is sent) and `mysql` (hashes what it
//! reads until stdin's close frame), so the figure covers both ends of the
//! exec stream, the zstd/age/multipart writer and the reader.
//!
//! 1. backup: `lifeboat_controller::dumps::back_up` (what `lifeboat backup`
//!    and the controller run) into a `file://` location with recipients;
//! 2. restore: `lifeboat_kube::restore_hooks::run` with a `stdinFrom` hook
//!    (what `lifeboat restore` and RestoreRequests run).
//!
//! Peak RSS is `VmHWM`, reset before each phase (`/proc/self/clear_refs`),
//! so each figure is that phase's high-water mark; the target is < 200 MB.
//!
//! Run: `cargo bench --bench dumps` (release build).
//! Knobs: `LIFEBOAT_BENCH_DUMP_MIB` (1024), `LIFEBOAT_BENCH_DIR` (a
//! temporary directory; needs about a third of the dump free: SQL text
//! compresses).

mod common;
use common::peak_rss_mib;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use lifeboat_core::hooks::restore::{RestoreExec, WorkloadHooks};
use lifeboat_core::model::RestoreHookOnError;
use lifeboat_kube::restore_hooks::Target;
use lifeboat_sandbox::{ExecOutput, ExecRequest, Sandbox, StdinEvent};
use lifeboat_store::{BackupSpec, LocationConfig, Repository};
use serde_json::json;
use sha2::{Digest, Sha256};

const RECIPIENT: &str = "age1268crxs6ntgpzr3y2auy80yrejxsfmps549ul66ch93t0p5wr9aqyxanhq";
const IDENTITY: &str = "AGE-SECRET-KEY-1NUHTD5JXP04HTK00P4CPJCXE9YWJ34TKAX3DSQG7YACT4JHKZZQS9PFD7G";
const NS: &str = "shop";
const CHUNK: usize = 256 * 1024;

/// `total` bytes of `INSERT` lines with pseudo-random values, in chunks
/// of [`CHUNK`]: compresses like a real dump (about 4:1 with zstd -3).
fn sql(total: u64) -> impl Iterator<Item = Vec<u8>> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut left = total;
    let mut row = 0u64;
    std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let want = (CHUNK as u64).min(left) as usize;
        let mut v = Vec::with_capacity(want + 256);
        while v.len() < want {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            row += 1;
            v.extend_from_slice(
                format!(
                    "INSERT INTO `orders` VALUES ({row},{},'{:016x}','2025-06-01 02:{:02}:{:02}',{}.{:02});\n",
                    x % 100_000,
                    x,
                    (x >> 8) % 60,
                    (x >> 16) % 60,
                    (x >> 24) % 10_000,
                    (x >> 40) % 100
                )
                .as_bytes(),
            );
        }
        v.truncate(want);
        left -= want as u64;
        Some(v)
    })
}

/// Resets `VmHWM` to the current RSS (Linux: `echo 5 > clear_refs`).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

type Stdin = Arc<Mutex<(u64, Sha256, bool)>>;

fn main() {
    let mib: u64 = std::env::var("LIFEBOAT_BENCH_DUMP_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let total = mib << 20;
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = std::env::var_os("LIFEBOAT_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let expected = {
        let mut h = Sha256::new();
        for c in sql(total) {
            h.update(&c);
        }
        hex::encode(h.finalize())
    };
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    rt.block_on(async {
        let read: Stdin = Arc::new(Mutex::new((0, Sha256::new(), false)));
        let r = read.clone();
        let sb = Sandbox::builder()
            .nodes(1)
            .data_dir(dir.join("cluster"))
            .seed_objects([
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
                json!({"apiVersion": "apps/v1", "kind": "Deployment",
                       "metadata": {"name": "mysql", "namespace": NS},
                       "spec": {"selector": {"matchLabels": {"app": "mysql"}},
                                "template": {"metadata": {"labels": {"app": "mysql"}},
                                             "spec": {"containers": [{"name": "mysql", "image": "mysql:8.0"}]}}}}),
            ])
            .exec_handler(move |req: &ExecRequest| match req.command[0].as_str() {
                "mysqldump" => ExecOutput::ok("").streaming(move || Box::new(sql(total))),
                _ => {
                    let r = r.clone();
                    ExecOutput::ok("").reading_stdin(move |e| {
                        let mut st = r.lock().expect("stdin state");
                        match e {
                            StdinEvent::Data(d) => {
                                st.0 += d.len() as u64;
                                st.1.update(d);
                            }
                            StdinEvent::Closed => st.2 = true,
                        }
                    })
                }
            })
            .start()
            .await
            .expect("start the sandbox");
        let client = sb.client();
        let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
        let pod = loop {
            let list = pods.list(&ListParams::default()).await.expect("pods");
            if let Some(p) = list.items.iter().find(|p| {
                p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            }) {
                break kube::ResourceExt::name_any(p);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let config = LocationConfig {
            url: format!("file://{}", dir.join("storage").display()),
            recipients: vec![RECIPIENT.into()],
            identities: vec![IDENTITY.into()],
            ..Default::default()
        };
        let repository = Repository::open(&config).await.expect("open the location");
        let policy: lifeboat_core::BackupPolicy = serde_json::from_value(json!({
            "apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupPolicy",
            "metadata": {"name": "db"},
            "spec": {"clusters": {"names": ["bench"]}, "include": {"namespaces": [NS]},
                     "schedule": "0 * * * *", "retention": {"keepLast": 5}, "storage": "local",
                     "hooks": {"dumps": [{"name": "mysql", "owner": "Deployment/mysql",
                                          "command": ["mysqldump", "--all-databases"]}]}},
        }))
        .expect("a valid policy");
        println!("dump of {mib} MiB of SQL text from pod {NS}/{pod}; before: RSS {:.0} MiB", common::status_mib("VmRSS"));

        // 1. Backup.
        let now = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).expect("a time");
        let mut writer = repository
            .begin_backup(BackupSpec {
                cluster: "bench".into(),
                policy: "db".into(),
                policy_revision: None,
                schedule_slot: now,
                start_time: now,
                labels: Default::default(),
            })
            .await
            .expect("begin the backup");
        reset_peak();
        let started = Instant::now();
        lifeboat_controller::dumps::back_up(&client, &mut writer, &policy)
            .await
            .expect("the dump hook runs");
        let took = started.elapsed();
        let backup_peak = peak_rss_mib();
        if writer.artifacts().is_empty() {
            panic!("the dump failed: {:?}", writer.hook(0));
        }
        let manifest = writer.finish(jiff::Timestamp::now()).await.expect("commit");
        let a = manifest.artifacts.first().expect("the artifact is listed");
        assert_eq!(a.bytes, total);
        assert_eq!(a.raw_sha256, expected);
        println!(
            "backup: {} MiB in {:.1} s = {:.0} MiB/s, stored {:.0} MiB ({}); peak RSS {backup_peak:.0} MiB",
            a.bytes >> 20,
            took.as_secs_f64(),
            (a.bytes >> 20) as f64 / took.as_secs_f64(),
            a.stored_bytes as f64 / (1 << 20) as f64,
            a.file
        );

        // 2. Restore: the artifact into `mysql`'s stdin.
        let reader = repository
            .open_backup("bench", &manifest.backup_name)
            .await
            .expect("open the backup");
        let target = Target {
            namespace: NS.into(),
            source_namespace: NS.into(),
            kind: "Deployment".into(),
            name: "mysql".into(),
            hooks: WorkloadHooks {
                exec: vec![RestoreExec {
                    name: "load".into(),
                    container: "mysql".into(),
                    command: vec!["mysql".into()],
                    exec_timeout: lifeboat_core::Duration::from_secs(3600),
                    wait_timeout: lifeboat_core::Duration::from_secs(60),
                    wait_for_ready: false,
                    on_error: RestoreHookOnError::Fail,
                    stdin_from: Some("mysql".into()),
                }],
                ..Default::default()
            },
        };
        reset_peak();
        let started = Instant::now();
        let runs = lifeboat_kube::restore_hooks::run(&client, &[target], &reader).await;
        let took = started.elapsed();
        let restore_peak = peak_rss_mib();
        let e = runs.entries.first().expect("the hook ran");
        assert!(e.error.is_none(), "{e:?}");
        let (bytes, sha, closed) = {
            let st = read.lock().expect("stdin state");
            (st.0, hex::encode(st.1.clone().finalize()), st.2)
        };
        assert!(closed, "stdin was closed");
        assert_eq!(bytes, total);
        assert_eq!(sha, expected, "byte-identical");
        println!(
            "restore: {} MiB into stdin in {:.1} s = {:.0} MiB/s, byte-identical (SHA-256 {}…); peak RSS {restore_peak:.0} MiB",
            bytes >> 20,
            took.as_secs_f64(),
            (bytes >> 20) as f64 / took.as_secs_f64(),
            &sha[..12]
        );
        let worst = backup_peak.max(restore_peak);
        println!(
            "peak RSS {worst:.0} MiB for a {mib} MiB dump: {}",
            if worst < 200.0 { "bounded (< 200 MB)" } else { "ABOVE the 200 MB target" }
        );
    });
}
