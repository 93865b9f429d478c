//! `lifeboat plan`, `reconcile` and `controller` end to end: the binary
//! against local Git repositories, `file://` storage and the sandbox.

use std::path::Path;
use std::process::Command;

use jiff::Timestamp;
use lifeboat_sandbox::Sandbox;
use lifeboat_store::{BackupSpec, LocationConfig, ObjectEntry, Repository};

use crate::{root, run};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn policies(storage: &Path, keep_daily: u32) -> String {
    format!(
        "apiVersion: lifeboat.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: prod}}\nspec: {{role: primary}}\n---\n\
         apiVersion: lifeboat.dev/v1alpha1\nkind: StorageLocation\nmetadata: {{name: local}}\nspec:\n  url: file://{}\n---\n\
         apiVersion: lifeboat.dev/v1alpha1\nkind: BackupPolicy\nmetadata: {{name: apps}}\nspec:\n  clusters: {{names: [prod]}}\n  \
         include: {{namespaces: [shop], resources: [configmaps]}}\n  schedule: '0 2 * * *'\n  timezone: UTC\n  \
         retention: {{keepDaily: {keep_daily}}}\n  storage: local\n",
        storage.display()
    )
}

/// Writes one committed daily backup per day of March 2026, days 1..=n.
fn daily_backups(storage: &Path, n: u32) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let repo = Repository::open(&LocationConfig {
            url: format!("file://{}", storage.display()),
            ..LocationConfig::default()
        })
        .await
        .unwrap();
        for day in 1..=n {
            let slot: Timestamp = format!("2026-03-{day:02}T02:00:00Z").parse().unwrap();
            let writer = repo
                .begin_backup(BackupSpec {
                    cluster: "prod".into(),
                    policy: "apps".into(),
                    policy_revision: None,
                    schedule_slot: slot,
                    start_time: slot,
                    labels: Default::default(),
                })
                .await
                .unwrap();
            writer
                .add(ObjectEntry {
                    resource: "configmaps".into(),
                    group: String::new(),
                    api_version: "v1".into(),
                    kind: "ConfigMap".into(),
                    namespace: Some("shop".into()),
                    name: "settings".into(),
                    json: br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"settings","namespace":"shop"}}"#.to_vec().into(),
                })
                .await
                .unwrap();
            writer.finish(slot + jiff::SignedDuration::from_secs(30)).await.unwrap();
        }
    });
}

#[test]
fn plan_base_on_a_retention_cut_lists_exactly_the_backups_it_prunes() {
    let dir = tempfile::tempdir().unwrap();
    let (work, storage) = (dir.path().join("work"), dir.path().join("storage"));
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(&storage).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    std::fs::write(work.join("lifeboat.yaml"), policies(&storage, 14)).unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "keep two weeks"]);
    std::fs::write(work.join("lifeboat.yaml"), policies(&storage, 3)).unwrap();
    git(&work, &["commit", "-q", "-am", "keep three days"]);
    daily_backups(&storage, 14);

    let w = work.to_str().unwrap();
    let cache = dir.path().join("cache");
    let base = [
        "plan",
        "--repo",
        w,
        "--base",
        "HEAD~1",
        "--ref",
        "HEAD",
        "--cluster",
        "prod",
        "--now",
        "2026-03-14T03:00:00Z",
        "--detailed-exitcode",
        "--cache-dir",
        cache.to_str().unwrap(),
    ];
    let (code, out, err) = run(&[&base[..], &["--format", "json"]].concat(), None);
    assert_eq!(code, 2, "changes → exit 2\n{out}{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut pruned: Vec<&str> = json["change"]["newlyPruned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["backup"].as_str().unwrap())
        .collect();
    pruned.sort();
    let expected: Vec<String> = (1..=11)
        .map(|d| format!("apps-202603{d:02}-020000"))
        .collect();
    assert_eq!(pruned, expected);
    let fields = &json["change"]["documents"][0]["fields"][0];
    assert_eq!(fields["path"], "spec.retention.keepDaily");
    assert_eq!(fields["before"], 14);
    assert_eq!(fields["after"], 3);

    let (code, out, err) = run(&[&base[..], &["--format", "markdown"]].concat(), None);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.starts_with("**lifeboat:"), "summary line first:\n{out}");
    let destructive = out
        .split("### ⚠️ Destructive")
        .nth(1)
        .expect("a destructive section");
    let destructive = destructive.split("\n\n").nth(1).unwrap();
    for name in &expected {
        assert!(
            destructive.contains(name.as_str()),
            "{name} missing:\n{out}"
        );
    }
    for kept in [
        "apps-20260312-020000",
        "apps-20260313-020000",
        "apps-20260314-020000",
    ] {
        assert!(!destructive.contains(kept), "{kept} must be kept:\n{out}");
    }
    assert!(out.contains("<details>"), "details are folded:\n{out}");

    // The same revision against itself: nothing changes.
    let (code, out, err) = run(
        &[
            "plan",
            "--repo",
            w,
            "--base",
            "HEAD",
            "--ref",
            "HEAD",
            "--cluster",
            "prod",
            "--now",
            "2026-03-14T03:00:00Z",
            "--detailed-exitcode",
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("no DR changes"), "{out}");
}

#[test]
fn plan_offline_says_what_it_cannot_know() {
    let (code, out, err) = run(
        &[
            "plan",
            "--repo",
            "policies-example",
            "--cluster",
            "prod-east",
            "--offline",
            "--now",
            "2026-03-14T03:00:00Z",
        ],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("plan for cluster `prod-east`"), "{out}");
    assert!(
        out.contains("offline: the backup catalog was not read"),
        "{out}"
    );
}

#[test]
fn reconcile_once_backs_up_and_commits_status() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sb = rt
        .block_on(
            Sandbox::builder()
                .seed_dir(root().join("tests/fixtures/apps"))
                .start(),
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (work, storage) = (dir.path().join("work"), dir.path().join("storage"));
    std::fs::create_dir_all(&storage).unwrap();
    git(
        dir.path(),
        &["init", "-q", "--bare", "-b", "main", "remote.git"],
    );
    git(dir.path(), &["clone", "-q", "remote.git", "work"]);
    std::fs::write(
        work.join("lifeboat.yaml"),
        policies(&storage, 7).replace("[shop]", "[wordpress]"),
    )
    .unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "policies"]);
    git(&work, &["push", "-q", "origin", "main"]);
    let kubeconfig = dir.path().join("kubeconfig");
    sb.write_kubeconfig(&kubeconfig).unwrap();
    let remote = format!("file://{}", dir.path().join("remote.git").display());
    let cache = dir.path().join("cache");
    let args = [
        "reconcile",
        "--once",
        "--repo",
        &remote,
        "--cluster",
        "prod",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
        "--now",
        "2026-03-14T03:00:00Z",
    ];
    let (code, out, err) = run(&args, None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok   back up `apps`"), "{out}");
    assert!(out.contains("status committed"), "{out}");
    assert!(
        storage
            .join("clusters/prod/backups/apps-20260314-020000/manifest.json")
            .exists()
    );
    let readme = git(
        &dir.path().join("remote.git"),
        &["show", "lifeboat-status:clusters/prod/README.md"],
    );
    assert!(readme.contains("apps-20260314-020000"), "{readme}");

    // Again: nothing to do, nothing to commit.
    let (code, out, err) = run(&args, None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("nothing to do"), "{out}");
    assert!(out.contains("status unchanged"), "{out}");
    drop(sb);
}

#[test]
fn controller_help_documents_every_option_with_its_environment_variable() {
    let (code, out, _) = run(&["controller", "--help"], None);
    assert_eq!(code, 0);
    for flag in [
        "--repo",
        "--branch",
        "--cluster",
        "--interval",
        "--listen",
        "--webhook-secret-file",
        "--leader-election",
        "--lease-namespace",
        "--pod-name",
        "--status-branch",
        "--status-path",
        "--secrets-namespace",
        "--log-format",
        "--config",
        "--git-token-file",
        "--git-ssh-key",
    ] {
        assert!(out.contains(flag), "{flag} missing from --help:\n{out}");
    }
    for env in [
        "LIFEBOAT_REPO",
        "LIFEBOAT_CLUSTER",
        "LIFEBOAT_INTERVAL",
        "POD_NAME",
    ] {
        assert!(out.contains(env), "{env} missing from --help");
    }
}
