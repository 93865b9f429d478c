//! Lint throughput on a generated repository: 2,000 policy files of about 40
//! lines (a mix of all kinds, 1% invalid), linted the way `lifeboat lint`
//! does it (walk, read, parse, validate, lint rules, render JSON).
//!
//! Run: `cargo bench --bench lint` (release build). Prints files/s and peak
//! RSS (VmHWM), and times the release binary end to end as a second figure.

mod common;
use common::peak_rss_mib;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const FILES: usize = 2_000;
const CLUSTERS: usize = 20;
const LOCATIONS: usize = 20;

fn write(dir: &Path, name: &str, text: String) {
    std::fs::write(dir.join(name), text).expect("write fixture");
}

/// A ~40-line document of the kind chosen by `i`; every 100th file is invalid.
fn document(i: usize) -> (String, String) {
    let header = "# yaml-language-server: $schema=../schema/lifeboat.json\n# Generated for the lint benchmark. Each document carries comments like a\n# real repository does, so the parser sees realistic input.\n#\n# Owner: platform team. Reviewed in pull requests next to the\n# Argo CD applications it protects; see the runbook for restores.\n# Changes to retention are destructive: the plan of the pull\n# request lists the backups a change would prune.\n#\n";
    let invalid = i % 100 == 99;
    let c = i % CLUSTERS;
    let l = i % LOCATIONS;
    match i % 10 {
        0 => (
            format!("clusters/cluster-{c}-{i}.yaml"),
            format!(
                "{header}apiVersion: lifeboat.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: cluster-{i}\n  labels:\n    environment: production\n    region: region-{c}\n    team: team-{}\n  annotations:\n    owner: platform@example.com\nspec:\n  # Primary clusters run production.\n  role: {}\n  storageClassMapping:\n    gp3: standard-rwo\n    io2: premium-rwo\n    sc-{i}: fast-{i}\n  restore:\n    deniedNamespaces:\n      - kube-system\n      - kube-public\n      - kube-node-lease\n      - lifeboat\n      - monitoring\n      - \"sys-*\"\n",
                i % 7,
                if invalid { "leader" } else { "primary" }
            ),
        ),
        1 => (
            format!("storage/location-{i}.yaml"),
            format!(
                "{header}apiVersion: lifeboat.dev/v1alpha1\nkind: StorageLocation\nmetadata:\n  name: location-{i}\n  labels:\n    tier: hot\nspec:\n  # An S3-compatible store.\n  url: s3://bucket-{l}/prefix-{i}\n  region: us-east-1\n  endpoint: https://minio-{l}.example.com:9000\n  pathStyle: true\n  credentials:\n    secretRef:\n      name: minio-{l}\n      namespace: lifeboat\n  encryption:\n    recipients:\n      - age1268crxs6ntgpzr3y2auy80yrejxsfmps549ul66ch93t0p5wr9aqyxanhq\n      - age1z6nepkgj2dgmfrha4yv69nvrua5t2r55nsjrvv52jesvh6qx6cusf3zgn7\n    identitySecretRef:\n      name: age-identity\n      key: identity.txt\n  accessMode: {}\n",
                if invalid { "WriteOnly" } else { "ReadWrite" }
            ),
        ),
        2..=6 => (
            format!("policies/team-{}/policy-{i}.yaml", i % 13),
            format!(
                "{header}apiVersion: lifeboat.dev/v1alpha1\nkind: BackupPolicy\nmetadata:\n  name: policy-{i}\n  labels:\n    team: team-{}\nspec:\n  clusters:\n    names: [cluster-{}]\n  include:\n    namespaces: [app-{i}, \"svc-{i}-*\"]\n    labelSelector:\n      matchLabels:\n        app.kubernetes.io/part-of: app-{i}\n      matchExpressions:\n        - key: tier\n          operator: In\n          values: [web, db]\n  exclude:\n    resources: [events, events.events.k8s.io]\n  # Hourly, at a minute spread over the hour.\n  schedule: \"{} * * * *\"\n  timezone: {}\n  retention:\n    keepHourly: {}\n    keepDaily: 14\n    keepWeekly: 8\n    keepMonthly: 12\n    minKeep: 3\n  storage: location-{}\n  objectives:\n    rpo: 2h\n    rto: 30m\n",
                i % 13,
                (i / 10) * 10 % (CLUSTERS * 10),
                i % 60,
                ["Europe/Berlin", "America/New_York", "UTC", "Asia/Tokyo"][i % 4],
                if invalid {
                    "\"twenty\"".to_string()
                } else {
                    "24".to_string()
                },
                (i / 10) * 10 % (LOCATIONS * 10) + 1
            ),
        ),
        _ => (
            format!("restores/restore-{i}.yaml"),
            format!(
                "{header}apiVersion: lifeboat.dev/v1alpha1\nkind: RestoreRequest\nmetadata:\n  name: restore-{i}\n  labels:\n    drill: quarterly\nspec:\n  source:\n    cluster: cluster-{}\n    policy: policy-{}\n    backup: latest\n    notAfter: 2026-10-01T00:00:00Z\n  target:\n    cluster: cluster-{}\n  include:\n    namespaces: [app-{}]\n    resources: [deployments.apps, services, configmaps, secrets]\n  exclude:\n    labelSelector:\n      matchLabels:\n        lifeboat.dev/skip: \"true\"\n  namespaceMapping:\n    app-{}: app-{}-drill\n  existingResources: {}\n  dryRun: true\n",
                (i / 10) * 10 % (CLUSTERS * 10),
                i - i % 10 + 2,
                ((i / 10) * 10 + 10) % (CLUSTERS * 10),
                i - i % 10 + 2,
                i - i % 10 + 2,
                i - i % 10 + 2,
                if invalid { "merge" } else { "skip" }
            ),
        ),
    }
}

fn generate(root: &Path) -> usize {
    let mut lines = 0;
    for i in 0..FILES {
        let (name, text) = document(i);
        let path = root.join(&name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        lines += text.lines().count();
        write(root, &name, text);
    }
    lines
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let lines = generate(dir.path());
    if let Some(keep) = std::env::var_os("LIFEBOAT_BENCH_KEEP") {
        // Leave a copy of the generated repository for profiling.
        let keep = PathBuf::from(keep);
        for i in 0..FILES {
            let (name, text) = document(i);
            std::fs::create_dir_all(keep.join(&name).parent().unwrap()).unwrap();
            write(&keep, &name, text);
        }
    }
    let paths = vec![PathBuf::from(dir.path())];

    // In-process: the code path of `lifeboat lint`, rendered as JSON.
    let runs = 5;
    let mut best = Duration::MAX;
    let mut errors = 0;
    for _ in 0..runs {
        let start = Instant::now();
        let report = lifeboat::cmd::lint::check(&paths).expect("lint runs");
        let rendered = lifeboat::render::json(&report).to_string();
        best = best.min(start.elapsed());
        errors = report.count(lifeboat_core::Severity::Error);
        assert!(rendered.len() > 10);
        assert_eq!(report.files, FILES);
    }
    println!(
        "lint (in-process): {FILES} files, {lines} lines, {errors} errors: best of {runs} {:.1} ms = {:.0} files/s; peak RSS {:.1} MiB",
        best.as_secs_f64() * 1e3,
        FILES as f64 / best.as_secs_f64(),
        peak_rss_mib()
    );

    // End to end: the release binary, process start to exit.
    let exe = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/lifeboat");
    if exe.exists() {
        let mut best = Duration::MAX;
        for _ in 0..runs {
            let start = Instant::now();
            let out = std::process::Command::new(&exe)
                .args(["lint", "--format", "json"])
                .arg(dir.path())
                .output()
                .expect("run lifeboat");
            best = best.min(start.elapsed());
            assert_eq!(out.status.code(), Some(1), "1% of the files are invalid");
        }
        println!(
            "lint (release binary, end to end): best of {runs} {:.1} ms = {:.0} files/s",
            best.as_secs_f64() * 1e3,
            FILES as f64 / best.as_secs_f64()
        );
    } else {
        println!("(build the release binary with `cargo build --release` to time it end to end)");
    }
}
