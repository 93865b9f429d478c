//! `lifeboat plan`, `reconcile` and `controller` end to end: the binary
//! against local Git repositories, `file://` storage and the sandbox.

use std::path::Path;
use std::process::Command;

use jiff::Timestamp;
use lifeboat_sandbox::Sandbox;
use lifeboat_store::{BackupSpec, LocationConfig, ObjectEntry, Repository};

use crate::{root, run};

pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
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

/// Commits everything in `work` to a new repository there and pushes it as
/// `main` to a new bare `remote.git` in `root`; returns the remote's URL.
pub(crate) fn push_to_new_remote(root: &Path, work: &Path, message: &str) -> String {
    git(root, &["init", "-q", "--bare", "-b", "main", "remote.git"]);
    git(work, &["init", "-q", "-b", "main"]);
    git(work, &["add", "-A"]);
    git(work, &["commit", "-q", "-m", message]);
    let remote = format!("file://{}", root.join("remote.git").display());
    git(work, &["push", "-q", &remote, "main"]);
    remote
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

/// The sandbox with the sample apps, a bare Git remote holding a daily
/// policy for `wordpress`, `file://` storage and a kubeconfig.
struct GitWorld {
    sb: Sandbox,
    dir: tempfile::TempDir,
    storage: std::path::PathBuf,
    kubeconfig: std::path::PathBuf,
    /// Serves the sandbox; dropped last.
    _rt: tokio::runtime::Runtime,
}

impl GitWorld {
    fn new() -> GitWorld {
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
        GitWorld {
            sb,
            dir,
            storage,
            kubeconfig,
            _rt: rt,
        }
    }
}

#[test]
fn reconcile_once_backs_up_and_commits_status() {
    let GitWorld {
        sb,
        dir,
        storage,
        kubeconfig,
        _rt,
    } = GitWorld::new();
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

/// A free local port (bound, then released for the controller to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP/1.1 request; returns (status, body).
fn http(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    Some((status, body))
}

#[test]
fn the_controller_serves_metrics_takes_webhooks_and_stops_on_sigterm() {
    let GitWorld {
        sb,
        dir,
        storage: _,
        kubeconfig,
        _rt,
    } = GitWorld::new();
    let config = dir.path().join("controller.yaml");
    let port = free_port();
    // Options from a config file; the command line adds the rest.
    std::fs::write(
        &config,
        format!(
            "interval: 1h\nlisten: 127.0.0.1:{port}\nleader-election: true\nlease-namespace: default\npod-name: test-0\n"
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .args([
            "controller",
            "--config",
            config.to_str().unwrap(),
            "--repo",
            &format!("file://{}", dir.path().join("remote.git").display()),
            "--cluster",
            "prod",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--cache-dir",
            dir.path().join("cache").to_str().unwrap(),
            "--log-format",
            "json",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    // Ready once a valid revision is loaded; the first cycle backs up.
    let started = std::time::Instant::now();
    let mut metrics = String::new();
    while started.elapsed() < std::time::Duration::from_secs(60) {
        if let Some((200, body)) = http(port, "GET", "/metrics")
            && body.contains("lifeboat_backup_last_success_timestamp_seconds{policy=\"apps\"}")
        {
            metrics = body;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(
        metrics.contains("lifeboat_policy_revision_info"),
        "metrics never showed the first backup:\n{metrics}"
    );
    assert!(metrics.contains("lifeboat_leader 1"), "{metrics}");
    assert_eq!(http(port, "GET", "/healthz").map(|r| r.0), Some(200));
    assert_eq!(http(port, "GET", "/readyz").map(|r| r.0), Some(200));
    assert_eq!(http(port, "POST", "/webhook").map(|r| r.0), Some(202));

    // SIGTERM: the controller stops within the 30 s budget, exit code 0.
    let stopped = std::time::Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopped.elapsed() < std::time::Duration::from_secs(30),
            "the controller did not stop within 30 s of SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut logs = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    assert!(status.success(), "{status:?}\n{logs}");
    // Structured logs: one JSON object per line, with the reconcile span.
    let first = logs
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("JSON log lines");
    let line: serde_json::Value = serde_json::from_str(first).unwrap();
    assert!(line.get("level").is_some(), "{first}");
    assert!(logs.contains("\"reconcile\""), "{logs}");
    drop(sb);
}

#[test]
fn reconcile_watch_replans_when_a_policy_file_changes() {
    use std::io::BufRead;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sb = rt.block_on(Sandbox::start()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (policies_dir, storage) = (dir.path().join("policies"), dir.path().join("storage"));
    std::fs::create_dir_all(&policies_dir).unwrap();
    std::fs::create_dir_all(&storage).unwrap();
    std::fs::write(policies_dir.join("lifeboat.yaml"), policies(&storage, 7)).unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sb.write_kubeconfig(&kubeconfig).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .args([
            "reconcile",
            "--watch",
            policies_dir.to_str().unwrap(),
            "--plan-only",
            "--cluster",
            "prod",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--now",
            "2026-03-14T03:00:00Z",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let wait_for = |needle: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return true,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
        false
    };
    assert!(wait_for("back up `apps`"), "the first plan backs up `apps`");
    std::fs::write(
        policies_dir.join("more.yaml"),
        "apiVersion: lifeboat.dev/v1alpha1\nkind: BackupPolicy\nmetadata: {name: more}\nspec:\n  clusters: {names: [prod]}\n  \
         schedule: '0 * * * *'\n  storage: local\n  retention: {keepLast: 2}\n",
    )
    .unwrap();
    let replanned = wait_for("back up `more`");
    let _ = child.kill();
    let _ = child.wait();
    assert!(replanned, "a new policy file is planned without restarting");
    drop(sb);
}

#[test]
fn the_demo_backs_up_loses_a_namespace_restores_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let (code, out, err) = run(&["demo", "--dir", demo.to_str().unwrap()], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("SIMULATED"),
        "the demo says the cluster is simulated"
    );
    assert!(out.contains("Completed, 13 created"), "{out}");
    assert!(out.contains("13 objects identical to the backup"), "{out}");
    assert!(!out.contains('✘'), "{out}");
    // Volume data: both claims moved and filled, and the demo's own check
    // of every restored file (which fails the demo, exit 1, naming the
    // file) says they are identical. Its figures are the backup's.
    for pvc in ["mysql-pv-claim", "wp-pv-claim"] {
        assert!(
            out.contains(&format!("volume wordpress/{pvc}: snapshotMove → snapshot ")),
            "{out}"
        );
        assert!(
            out.contains(&format!("filled volume wordpress/{pvc} from snapshot ")),
            "{out}"
        );
    }
    let line = out
        .lines()
        .find(|l| l.contains(" identical to what was written before the backup"))
        .unwrap_or_else(|| panic!("no volume data line:\n{out}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[..2], ["2", "volumes,"], "{line}");
    let files: u64 = words[2].parse().unwrap();
    let backups = demo.join("storage/clusters/demo/backups");
    let backup = std::fs::read_dir(&backups)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let json = |path: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let manifest = json(&backup.path().join("manifest.json"));
    let volumes = manifest["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 2, "{manifest}");
    assert!(volumes.iter().all(|v| v["method"] == "snapshotMove"));
    let record = json(&demo.join("storage/clusters/demo/restores/restore-wordpress/record.json"));
    let filled = record["volumes"].as_array().unwrap();
    assert_eq!(
        files,
        filled
            .iter()
            .map(|v| v["files"].as_u64().unwrap())
            .sum::<u64>(),
        "the demo counts the files the restore wrote: {line}"
    );
    // The key is the run's own, not one published in the source.
    let identity = std::fs::read_to_string(demo.join("identity.txt")).unwrap();
    let recipient = identity
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap();
    let storage = std::fs::read_to_string(demo.join("policies/policies/storage.yaml")).unwrap();
    assert!(storage.contains(recipient), "{storage}");
    assert!(!storage.contains("age1268crx"), "{storage}");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(demo.join("identity.txt"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o077,
        0,
        "the identity is readable by its owner only"
    );
    assert!(
        out.contains("plan: nothing to do"),
        "the restore runs once:\n{out}"
    );
    let log = git(
        &demo.join("remote.git"),
        &["log", "--format=%s", "lifeboat-status"],
    );
    assert_eq!(
        log.lines().count(),
        2,
        "a backup and a restore commit:\n{log}"
    );
    // A non-empty directory is refused rather than mixed into.
    let (code, _, err) = run(&["demo", "--dir", demo.to_str().unwrap()], None);
    assert_eq!(code, 2);
    assert!(err.contains("not empty"), "{err}");
}

/// A repository whose `main` validates and whose branch `change` (HEAD,
/// one commit on top) breaks the schedule: a pull request.
fn invalid_change(dir: &Path) -> (std::path::PathBuf, String) {
    let (work, storage) = (dir.join("work"), dir.join("storage"));
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(&storage).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    std::fs::write(work.join("lifeboat.yaml"), policies(&storage, 7)).unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "nightly backups"]);
    let base = git(&work, &["rev-parse", "--short=12", "HEAD"]);
    git(&work, &["checkout", "-q", "-b", "change"]);
    let broken = policies(&storage, 7).replace("'0 2 * * *'", "'61 2 * * *'");
    std::fs::write(work.join("lifeboat.yaml"), broken).unwrap();
    git(&work, &["commit", "-q", "-am", "back up at 02:61"]);
    (work, base)
}

#[test]
fn an_invalid_change_renders_its_diagnostics_and_the_plan_it_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let (work, base) = invalid_change(dir.path());
    let head = git(&work, &["rev-parse", "--short=12", "HEAD"]);
    let w = work.to_str().unwrap();
    let args = |format: &'static str, extra: &[&'static str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "plan",
            "--repo",
            w,
            "--base",
            "main",
            "--ref",
            "HEAD",
            "--offline",
            "--now",
            "2026-03-14T03:00:00Z",
            "--format",
            format,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run_owned = |v: Vec<String>| run(&v.iter().map(String::as_str).collect::<Vec<_>>(), None);
    let redact = |s: &str| {
        s.replace(&base, "[BASE]")
            .replace(&head, "[HEAD]")
            .replace(dir.path().to_str().unwrap(), "[TMP]")
    };

    let (code, md, err) = run_owned(args("markdown", &[]));
    assert_eq!(code, 1, "an invalid change is a finding\n{md}{err}");
    assert!(
        md.starts_with(&format!(
            "**lifeboat on `prod`: ❌ this change does not validate: 1 error; a controller keeps acting on {base}**"
        )),
        "{md}"
    );
    assert!(
        md.contains("`lifeboat.yaml:18:13` [LB103 invalid-schedule]"),
        "{md}"
    );
    assert!(md.contains("minute 61 is out of range 0–59"), "{md}");
    assert!(
        md.contains("Plan at the last valid revision main"),
        "the base's plan follows:\n{md}"
    );
    insta::assert_snapshot!("invalid_change_markdown", redact(&md));

    // --detailed-exitcode keeps terraform's convention: 1 is an error.
    let (code, _, _) = run_owned(args("markdown", &["--detailed-exitcode"]));
    assert_eq!(code, 1);

    let (code, json, err) = run_owned(args("json", &["--detailed-exitcode"]));
    assert_eq!(code, 1, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["diagnostics"][0]["code"], "LB103");
    assert_eq!(v["diagnostics"][0]["line"], 18);
    assert_eq!(v["plan"]["cluster"], "prod");
    insta::assert_snapshot!("invalid_change_json", redact(&json));

    let (code, text, _) = run_owned(args("text", &[]));
    assert_eq!(code, 1);
    assert!(text.contains("LB103(invalid-schedule)"), "{text}");
    assert!(
        text.contains("the plan at the last valid revision main"),
        "{text}"
    );
}

#[test]
fn an_invalid_revision_without_base_falls_back_to_its_newest_valid_ancestor() {
    let dir = tempfile::tempdir().unwrap();
    let (work, base) = invalid_change(dir.path());
    let w = work.to_str().unwrap();
    let common = [
        "plan",
        "--repo",
        w,
        "--offline",
        "--now",
        "2026-03-14T03:00:00Z",
    ];
    // The committed HEAD, and the working tree (which is HEAD here).
    for extra in [&["--ref", "HEAD"][..], &[][..]] {
        let (code, out, err) = run(&[&common[..], extra, &["--format", "json"]].concat(), None);
        assert_eq!(code, 1, "{out}{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["valid"], false, "{out}");
        assert!(
            v["lastValidRevision"].as_str().unwrap().contains(&base),
            "{out}"
        );
        assert!(
            v["summary"].as_str().unwrap().starts_with(
                "❌ this revision does not validate: 1 error; a controller keeps acting on"
            ),
            "{out}"
        );
        assert_eq!(v["plan"]["actions"][0]["type"], "Backup", "{out}");
    }
    // A directory without history has nothing to fall back on.
    let plain = dir.path().join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    std::fs::copy(work.join("lifeboat.yaml"), plain.join("lifeboat.yaml")).unwrap();
    let (code, out, err) = run(
        &[
            "plan",
            "--repo",
            plain.to_str().unwrap(),
            "--offline",
            "--format",
            "markdown",
        ],
        None,
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("no earlier revision validates"), "{out}");
    assert!(out.contains("LB103"), "{out}");
}

/// Policies for `lifeboat plan --kubeconfig`: cluster `prod`, an encrypted
/// `file://` location and policy `blog` over namespace `wordpress`, with
/// `volumes` (YAML lines under `spec`) when given.
fn volume_policies(storage: &Path, volumes: &str) -> String {
    format!(
        "apiVersion: lifeboat.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: prod}}\nspec: {{role: primary}}\n---\n\
         apiVersion: lifeboat.dev/v1alpha1\nkind: StorageLocation\nmetadata: {{name: local}}\nspec:\n  url: file://{}\n  \
         encryption:\n    recipients: [age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p]\n---\n\
         apiVersion: lifeboat.dev/v1alpha1\nkind: BackupPolicy\nmetadata: {{name: blog}}\nspec:\n  clusters: {{names: [prod]}}\n  \
         include: {{namespaces: [wordpress]}}\n  schedule: '0 2 * * *'\n  retention: {{keepDaily: 7}}\n  storage: local\n{volumes}",
        storage.display()
    )
}

#[test]
fn plan_with_a_cluster_lists_which_claims_are_protected_and_how() {
    use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let nfs_claim = serde_json::json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "uploads", "namespace": "wordpress"},
        "spec": {"storageClassName": "nfs", "accessModes": ["ReadWriteMany"],
                 "resources": {"requests": {"storage": "1Gi"}}},
    });
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "uploader", "namespace": "wordpress"},
        "spec": {"containers": [{"name": "c", "image": "busybox",
                                 "volumeMounts": [{"name": "files", "mountPath": "/files"}]}],
                 "volumes": [{"name": "files", "persistentVolumeClaim": {"claimName": "uploads"}}]},
    });
    let sb = rt
        .block_on(
            Sandbox::builder()
                .seed_dir(root().join("tests/fixtures/apps"))
                .seed_objects([nfs_claim, pod])
                .start(),
        )
        .unwrap();
    // Wait for the claims to bind and the pod to run, as on a real cluster.
    let node = rt.block_on(async {
        let claims: kube::Api<PersistentVolumeClaim> =
            kube::Api::namespaced(sb.client(), "wordpress");
        let pods: kube::Api<Pod> = kube::Api::namespaced(sb.client(), "wordpress");
        for _ in 0..200 {
            let bound = claims
                .list(&Default::default())
                .await
                .unwrap()
                .items
                .iter()
                .all(|c| c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"));
            let p = pods.get("uploader").await.unwrap();
            let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            if bound && running {
                return p.spec.unwrap().node_name.unwrap();
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("claims did not bind or the pod did not run");
    });
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sb.write_kubeconfig(&kubeconfig).unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let plan = |volumes: &str, cluster: bool| {
        std::fs::write(
            repo.join("lifeboat.yaml"),
            volume_policies(&dir.path().join("storage"), volumes),
        )
        .unwrap();
        let mut args = vec!["plan", "--repo", repo.to_str().unwrap(), "--offline"];
        if cluster {
            args.extend(["--kubeconfig", kubeconfig.to_str().unwrap()]);
        }
        let (code, out, err) = run(&args, None);
        assert_eq!(code, 0, "{out}{err}");
        out
    };

    let out = plan("", false);
    assert!(out.contains("volumes: not evaluated"), "{out}");

    // No `volumes`: snapshotMove where a snapshot class exists, the nfs
    // claim reported unprotected.
    let out = plan("", true);
    assert!(!out.contains("not evaluated"), "{out}");
    assert!(
        out.contains("volumes of `blog`: 2 protected, 1 NOT protected"),
        "{out}"
    );
    assert!(
        out.contains(
            "wordpress/mysql-pv-claim: snapshotMove, class `sandbox-snapclass` (default)\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("wordpress/uploads: NOT PROTECTED (default): not protected: its volume `"),
        "{out}"
    );
    assert!(
        out.contains("is not a CSI volume (storage class `nfs`)"),
        "{out}"
    );

    // A rule sends it to fileSystem through the pod that mounts it.
    let out = plan(
        "  volumes:\n    rules:\n      - match: {storageClasses: ['nfs*']}\n        method: fileSystem\n",
        true,
    );
    assert!(out.contains("volumes of `blog`: 3 protected\n"), "{out}");
    assert!(
        out.contains(&format!(
            "wordpress/uploads: fileSystem through pod `uploader` on node `{node}` (rule 1)\n"
        )),
        "{out}"
    );

    // JSON carries the decisions for the backup flow and other tools.
    let (code, json, err) = run(
        &[
            "plan",
            "--repo",
            repo.to_str().unwrap(),
            "--offline",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--format",
            "json",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let volumes = v["plan"]["policies"][0]["volumes"].as_array().unwrap();
    let uploads = volumes.iter().find(|d| d["pvc"] == "uploads").unwrap();
    assert_eq!(uploads["method"], "fileSystem");
    assert_eq!(uploads["node"], node.as_str());
    assert_eq!(uploads["decidedBy"]["type"], "Rule");
    drop(sb);
}
