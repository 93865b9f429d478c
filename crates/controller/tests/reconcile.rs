//! End-to-end reconcile cycles against the sandbox API server, local bare
//! Git repositories and `file://` storage. Time is pinned per cycle.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Api;
use kube::api::DeleteParams;
use lifeboat_controller::locations::Secrets;
use lifeboat_controller::reconcile::{CycleReport, Reconciler, Settings, Source};
use lifeboat_core::plan::{Action, PlanOptions};
use lifeboat_git::{Auth, Mirror, Published, StatusTarget};
use lifeboat_sandbox::Sandbox;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

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

/// A bare "remote", a clone users commit to, storage and a sandbox.
struct World {
    dir: tempfile::TempDir,
    sandbox: Sandbox,
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/apps");
        let sandbox = Sandbox::builder().seed_dir(fixtures).start().await.unwrap();
        git(dir.path(), &["init", "--bare", "-b", "main", "remote.git"]);
        git(dir.path(), &["clone", "-q", "remote.git", "work"]);
        std::fs::create_dir_all(dir.path().join("storage")).unwrap();
        World { dir, sandbox }
    }

    fn remote(&self) -> String {
        format!("file://{}", self.dir.path().join("remote.git").display())
    }

    fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Writes `files` into the clone, commits and pushes to main.
    fn commit(&self, message: &str, files: &[(&str, Option<&str>)]) -> String {
        let work = self.work();
        for (path, content) in files {
            let p = work.join(path);
            match content {
                Some(c) => {
                    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                    std::fs::write(&p, c).unwrap();
                }
                None => {
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", message]);
        git(&work, &["push", "-q", "origin", "HEAD:main"]);
        git(&work, &["rev-parse", "HEAD"])
    }

    fn base_policies(&self, cluster: &str) -> String {
        format!(
            r#"apiVersion: lifeboat.dev/v1alpha1
kind: StorageLocation
metadata: {{name: local}}
spec:
  url: file://{storage}
---
apiVersion: lifeboat.dev/v1alpha1
kind: Cluster
metadata: {{name: {cluster}}}
spec: {{role: primary}}
"#,
            storage = self.storage().display()
        )
    }

    /// Commits cluster `prod`, the `local` location and the hourly `blog`
    /// policy.
    fn commit_hourly_blog(&self) -> String {
        self.commit(
            "policies",
            &[
                ("lifeboat.yaml", Some(&self.base_policies("prod"))),
                ("blog.yaml", Some(HOURLY)),
            ],
        )
    }

    fn reconciler(&self, cluster: &str, cache: &str) -> Reconciler {
        self.reconciler_signing(cluster, cache, None)
    }

    /// A reconciler that signs with `signing_key` (a minisign secret key file).
    fn reconciler_signing(
        &self,
        cluster: &str,
        cache: &str,
        signing_key: Option<String>,
    ) -> Reconciler {
        let mirror = Mirror::open(
            &self.remote(),
            &self.dir.path().join(cache).join("git"),
            Auth::none(),
        )
        .unwrap();
        let settings = Settings {
            cluster: cluster.into(),
            status: Some(StatusTarget::for_cluster(cluster)),
            plan: PlanOptions::default(),
            exec: Default::default(),
        };
        Reconciler::new(
            settings,
            Source::Git {
                mirror,
                branch: "main".into(),
                checkout: self.dir.path().join(cache).join("checkout"),
            },
            self.sandbox.client(),
            Secrets::Local {
                identities: Vec::new(),
                signing_key,
            },
        )
    }

    /// The backups of `cluster` in storage, by name.
    fn backups(&self, cluster: &str) -> Vec<String> {
        let dir = self
            .storage()
            .join("clusters")
            .join(cluster)
            .join("backups");
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| {
                    let e = e.ok()?;
                    e.path()
                        .join("manifest.json")
                        .exists()
                        .then(|| e.file_name().to_string_lossy().into_owned())
                })
                .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// A file of the status branch, if present.
    fn status_file(&self, path: &str) -> Option<String> {
        let out = Command::new("git")
            .args(["show", &format!("lifeboat-status:{path}")])
            .current_dir(self.dir.path().join("remote.git"))
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn status_commits(&self) -> usize {
        let out = Command::new("git")
            .args(["rev-list", "--count", "lifeboat-status"])
            .current_dir(self.dir.path().join("remote.git"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }
}

const HOURLY: &str = r#"apiVersion: lifeboat.dev/v1alpha1
kind: BackupPolicy
metadata: {name: blog}
spec:
  clusters: {names: [prod]}
  include: {namespaces: [wordpress]}
  schedule: "0 * * * *"
  timezone: UTC
  storage: local
  retention: {keepLast: 3}
  objectives: {rpo: 2h}
"#;

fn names(report: &CycleReport, kind: &str) -> Vec<String> {
    report
        .plan
        .as_ref()
        .map(|p| {
            p.actions
                .iter()
                .filter_map(|a| match (a, kind) {
                    (Action::Backup { name, .. }, "backup") => Some(name.clone()),
                    (Action::Prune { backup, .. }, "prune") => Some(backup.clone()),
                    (Action::Restore { request, .. }, "restore") => Some(request.clone()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

fn assert_ok(report: &CycleReport) {
    assert!(report.ok(), "cycle errors: {:?}", report.errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_status_and_retention_follow_the_clock() {
    let w = World::new().await;
    w.commit_hourly_blog();
    let mut r = w.reconciler("prod", "cache-a");

    // A new policy backs up at once.
    let report = r.cycle(ts("2026-03-01T10:30:00Z"), true).await;
    assert_ok(&report);
    assert_eq!(names(&report, "backup"), ["blog-20260301-100000"]);
    assert_eq!(w.backups("prod"), ["blog-20260301-100000"]);
    assert!(matches!(
        report.published,
        Some(Ok(Published::Committed { .. }))
    ));
    let status = w
        .status_file("clusters/prod/policies/blog.yaml")
        .expect("policy status");
    assert!(status.contains("blog-20260301-100000"), "{status}");
    assert!(status.contains("status: Met"), "{status}");
    let readme = w.status_file("clusters/prod/README.md").unwrap();
    assert!(readme.contains("| [blog](policies/blog.yaml)"), "{readme}");
    let commits = w.status_commits();

    // Same slot, later: nothing to do, and nothing but time changed.
    let report = r.cycle(ts("2026-03-01T10:50:00Z"), true).await;
    assert_ok(&report);
    assert!(report.plan.as_ref().unwrap().is_empty());
    assert!(
        matches!(report.published, Some(Ok(Published::Unchanged))),
        "{:?}",
        report.published
    );
    assert_eq!(w.status_commits(), commits);

    // Four more hours: one backup per cycle, keepLast 3 prunes the oldest.
    for hour in 11..=14 {
        let report = r
            .cycle(ts(&format!("2026-03-01T{hour}:05:00Z")), true)
            .await;
        assert_ok(&report);
    }
    assert_eq!(
        w.backups("prod"),
        [
            "blog-20260301-120000",
            "blog-20260301-130000",
            "blog-20260301-140000"
        ]
    );
    assert!(w.status_commits() > commits);
    let log = Command::new("git")
        .args(["log", "-1", "--format=%an <%ae>%n%B", "lifeboat-status"])
        .current_dir(w.dir.path().join("remote.git"))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&log.stdout);
    assert!(log.starts_with("lifeboat <lifeboat@localhost>"), "{log}");
    assert!(log.contains("[skip ci]"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_policy_keeps_its_backups_for_the_grace_period() {
    let w = World::new().await;
    w.commit_hourly_blog();
    let mut r = w.reconciler("prod", "cache-a");
    assert_ok(&r.cycle(ts("2026-03-01T10:30:00Z"), true).await);
    assert_ok(&r.cycle(ts("2026-03-01T11:30:00Z"), true).await);
    w.commit("drop the blog policy", &[("blog.yaml", None)]);

    let report = r.cycle(ts("2026-03-01T12:30:00Z"), true).await;
    assert_ok(&report);
    assert!(names(&report, "prune").is_empty());
    assert_eq!(w.backups("prod").len(), 2);
    let status = w.status_file("clusters/prod/policies/blog.yaml").unwrap();
    assert!(status.contains("state: Deleted"), "{status}");
    assert!(status.contains("pruneAt"), "{status}");

    // Still inside the 30-day grace period.
    let report = r.cycle(ts("2026-03-20T12:30:00Z"), true).await;
    assert!(names(&report, "prune").is_empty());
    assert_eq!(w.backups("prod").len(), 2);

    // After it, both go.
    let report = r.cycle(ts("2026-04-01T12:31:00Z"), true).await;
    assert_ok(&report);
    assert_eq!(names(&report, "prune").len(), 2);
    assert!(w.backups("prod").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_revision_keeps_the_last_valid_one_and_prunes_nothing() {
    let w = World::new().await;
    w.commit_hourly_blog();
    let mut r = w.reconciler("prod", "cache-a");
    for hour in 10..=13 {
        assert_ok(
            &r.cycle(ts(&format!("2026-03-01T{hour}:05:00Z")), true)
                .await,
        );
    }
    assert_eq!(w.backups("prod").len(), 3);
    let broken = HOURLY.replace("keepLast: 3", "keepLast: three");
    w.commit("break retention", &[("blog.yaml", Some(&broken))]);

    let report = r.cycle(ts("2026-03-01T14:05:00Z"), true).await;
    assert!(!report.revision.valid);
    assert!(report.errors.iter().any(|(k, _)| *k == "validate"));
    // Protection goes on under the last valid revision…
    assert_eq!(names(&report, "backup"), ["blog-20260301-140000"]);
    // …but nothing is pruned while the newest revision is invalid.
    assert!(names(&report, "prune").is_empty());
    assert_eq!(w.backups("prod").len(), 4);
    let revision = w.status_file("clusters/prod/revision.yaml").unwrap();
    assert!(revision.contains("valid: false"), "{revision}");
    assert!(revision.contains("blog.yaml:"), "{revision}");
    assert!(revision.contains("keepLast"), "{revision}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_request_runs_once_even_when_status_cannot_be_pushed() {
    let w = World::new().await;
    w.commit_hourly_blog();
    let mut r = w.reconciler("prod", "cache-a");
    assert_ok(&r.cycle(ts("2026-03-01T10:30:00Z"), true).await);
    let client = w.sandbox.client();
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "wordpress");
    let before = configmaps.get("wordpress-config").await.unwrap();

    // Disaster.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .delete("wordpress", &DeleteParams::default())
        .await
        .unwrap();
    // Namespace deletion finishes asynchronously, as in a real cluster.
    for _ in 0..100 {
        if namespaces.get_opt("wordpress").await.unwrap().is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        configmaps
            .get_opt("wordpress-config")
            .await
            .unwrap()
            .is_none()
    );

    // Status pushes fail from now on: a writer holds the branch's lock.
    std::fs::write(
        w.dir
            .path()
            .join("remote.git/refs/heads/lifeboat-status.lock"),
        "",
    )
    .unwrap();

    w.commit(
        "restore the blog",
        &[(
            "restore.yaml",
            Some(
                r#"apiVersion: lifeboat.dev/v1alpha1
kind: RestoreRequest
metadata: {name: blog-back}
spec:
  source: {cluster: prod, policy: blog, backup: latest}
  target: {cluster: prod}
"#,
            ),
        )],
    );
    let report = r.cycle(ts("2026-03-01T10:40:00Z"), true).await;
    assert_eq!(names(&report, "restore"), ["blog-back"]);
    assert!(
        report.executed.iter().all(|e| e.ok()),
        "{:?}",
        report.executed
    );
    assert!(
        matches!(report.published, Some(Err(_))),
        "{:?}",
        report.published
    );
    let after = configmaps.get("wordpress-config").await.unwrap();
    assert_eq!(after.data, before.data);

    // A fresh controller (a restart) does not run it again.
    let mut restarted = w.reconciler("prod", "cache-b");
    let report = restarted.cycle(ts("2026-03-01T10:50:00Z"), true).await;
    assert!(names(&report, "restore").is_empty(), "{:?}", report.plan);
    let record = w
        .storage()
        .join("clusters/prod/restores/blog-back/record.json");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(record).unwrap()).unwrap();
    assert_eq!(record["phase"], "Completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_write_status_to_one_branch_at_once() {
    let w = World::new().await;
    let two = format!(
        "{}---\napiVersion: lifeboat.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: dr}}\nspec: {{role: standby}}\n",
        w.base_policies("prod")
    );
    let policy = HOURLY.replace("names: [prod]", "names: [prod, dr]");
    w.commit(
        "policies",
        &[("lifeboat.yaml", Some(&two)), ("blog.yaml", Some(&policy))],
    );
    let mut prod = w.reconciler("prod", "cache-prod");
    let mut dr = w.reconciler("dr", "cache-dr");
    let now = ts("2026-03-01T10:30:00Z");
    let (a, b) = tokio::join!(prod.cycle(now, true), dr.cycle(now, true));
    assert_ok(&a);
    assert_ok(&b);
    assert!(w.status_file("clusters/prod/policies/blog.yaml").is_some());
    assert!(w.status_file("clusters/dr/policies/blog.yaml").is_some());
    assert_eq!(w.backups("prod").len(), 1);
    assert_eq!(w.backups("dr").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_replicas_only_the_leader_reconciles() {
    use lifeboat_controller::http::Health;
    use lifeboat_controller::leader::{LeaderConfig, Leadership};
    use lifeboat_controller::metrics::Metrics;
    use lifeboat_controller::run::{Loop, LoopConfig};
    use lifeboat_controller::shutdown::Shutdown;
    use std::time::Duration;

    let w = World::new().await;
    w.commit_hourly_blog();
    let stop = Shutdown::new();
    // The loop reads the wall clock, so a run across the top of an hour
    // has a second slot to back up.
    let began = Timestamp::now();
    let mut replicas = Vec::new();
    for (i, cache) in ["cache-a", "cache-b"].into_iter().enumerate() {
        let leader = Leadership::start(
            w.sandbox.client(),
            LeaderConfig {
                duration: Duration::from_secs(3),
                ..LeaderConfig::new("default", format!("replica-{i}"))
            },
        )
        .await
        .unwrap();
        let metrics = Metrics::new();
        let replica = Loop {
            reconciler: w.reconciler("prod", cache),
            config: LoopConfig {
                interval: Duration::from_millis(500),
                grace: Duration::from_secs(5),
            },
            metrics: metrics.clone(),
            health: Health::default(),
            webhook: Arc::new(tokio::sync::Notify::new()),
            leader: Some(leader),
            shutdown: stop.clone(),
        };
        replicas.push((metrics, tokio::spawn(replica.run())));
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.trigger();
    let ended = Timestamp::now();
    let mut cycles = Vec::new();
    for (metrics, task) in replicas {
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("a replica stops within the grace period")
            .unwrap();
        let text = metrics.encode();
        let ran = text
            .lines()
            .filter(|l| l.starts_with("lifeboat_reconcile_duration_seconds_count"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
        cycles.push(ran);
    }
    assert!(
        cycles.iter().filter(|&&n| n > 0.0).count() == 1,
        "exactly one replica reconciles: cycles per replica {cycles:?}"
    );
    // The leader backed up the slot current at the start once, and each
    // slot that began while it ran once.
    let hour = |t: Timestamp| t.as_second().div_euclid(3600);
    let slots = 1 + usize::try_from(hour(ended) - hour(began)).unwrap();
    assert_eq!(w.backups("prod").len(), slots, "{:?}", w.backups("prod"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_controller_cleans_up_what_a_killed_one_left() {
    let w = World::new().await;
    let restore = r#"apiVersion: lifeboat.dev/v1alpha1
kind: RestoreRequest
metadata: {name: blog-back}
spec:
  source: {cluster: prod, policy: blog, backup: latest}
  target: {cluster: prod}
  namespaceMapping: {wordpress: wordpress-copy}
"#;
    w.commit_hourly_blog();
    let mut r = w.reconciler("prod", "cache-a");
    assert_ok(&r.cycle(ts("2026-03-01T10:30:00Z"), true).await);

    // A controller killed mid-backup (files, no manifest) and mid-restore
    // (record still InProgress).
    let half = w
        .storage()
        .join("clusters/prod/backups/blog-20260301-110000");
    std::fs::create_dir_all(&half).unwrap();
    std::fs::write(half.join("resources.tar.zst.age"), b"partial").unwrap();
    let record_dir = w.storage().join("clusters/prod/restores/blog-back");
    std::fs::create_dir_all(&record_dir).unwrap();
    std::fs::write(
        record_dir.join("record.json"),
        serde_json::to_vec(&serde_json::json!({
            "request": "blog-back", "sourceCluster": "prod",
            "sourceBackup": "blog-20260301-100000", "targetCluster": "prod",
            "startTime": "2026-03-01T10:35:00Z", "phase": "InProgress", "dryRun": false,
            "counts": {"created": 3, "updated": 0, "skipped": 0, "failed": 0},
            "items": [], "lifeboatVersion": "0.1.0"
        }))
        .unwrap(),
    )
    .unwrap();
    w.commit("restore", &[("restore.yaml", Some(restore))]);

    // The restarted controller writes the interrupted slot again (the
    // leftovers do not count as a backup), marks the restore interrupted
    // and does not run it again.
    let mut restarted = w.reconciler("prod", "cache-b");
    let report = restarted.cycle(ts("2026-03-01T11:10:00Z"), true).await;
    assert_ok(&report);
    assert_eq!(names(&report, "backup"), ["blog-20260301-110000"]);
    assert!(names(&report, "restore").is_empty());
    assert_eq!(
        w.backups("prod"),
        ["blog-20260301-100000", "blog-20260301-110000"]
    );
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(record_dir.join("record.json")).unwrap()).unwrap();
    assert_eq!(record["phase"], "Failed");
    assert!(
        record["message"].as_str().unwrap().contains("interrupted"),
        "{record}"
    );
    let status = w
        .status_file("clusters/prod/restores/blog-back.yaml")
        .unwrap();
    assert!(status.contains("interrupted"), "{status}");

    // Leftovers of a slot that is not written again are deleted after the
    // incomplete grace period (24 h).
    let stale = w
        .storage()
        .join("clusters/prod/backups/blog-20260301-090000");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("resources.tar.zst.age"), b"partial").unwrap();
    let report = restarted.cycle(ts("2026-03-01T11:20:00Z"), true).await;
    assert!(stale.exists(), "within the grace period: {:?}", report.plan);
    let _ = restarted
        .cycle(
            Timestamp::now() + jiff::SignedDuration::from_hours(25),
            true,
        )
        .await;
    assert!(!stale.exists(), "cleaned after the grace period");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_that_goes_away_leaves_the_controller_acting_on_what_it_has() {
    let w = World::new().await;
    w.commit_hourly_blog();
    let mut r = w.reconciler("prod", "cache-a");
    assert_ok(&r.cycle(ts("2026-03-01T10:30:00Z"), true).await);
    let remote = w.dir.path().join("remote.git");
    let moved = w.dir.path().join("remote-gone.git");
    std::fs::rename(&remote, &moved).unwrap();

    let report = r.cycle(ts("2026-03-01T11:30:00Z"), true).await;
    let fetch = report
        .errors
        .iter()
        .find(|(k, _)| *k == "fetch")
        .map(|(_, e)| e.clone())
        .expect("the fetch error is reported");
    assert!(fetch.contains("remote.git"), "{fetch}");
    // Protection goes on with the revision already fetched.
    assert_eq!(names(&report, "backup"), ["blog-20260301-110000"]);
    assert_eq!(w.backups("prod").len(), 2);
    std::fs::rename(&moved, &remote).unwrap();
    assert_ok(&r.cycle(ts("2026-03-01T11:40:00Z"), true).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_on_the_policy_branch_under_status_is_not_loaded_as_policies() {
    let w = World::new().await;
    w.commit_hourly_blog();
    let mut r = w.reconciler("prod", "cache-a");
    r.settings.status = Some(StatusTarget {
        branch: "main".into(),
        path: "status/clusters/prod".into(),
    });
    assert_ok(&r.cycle(ts("2026-03-01T10:30:00Z"), true).await);
    let listing = git(
        &w.dir.path().join("remote.git"),
        &["ls-tree", "-r", "--name-only", "main"],
    );
    assert!(
        listing.contains("status/clusters/prod/policies/blog.yaml"),
        "{listing}"
    );
    assert!(listing.contains("blog.yaml\n"), "policies kept: {listing}");
    // The next cycle fetches its own status commit and still validates:
    // the status YAML files are not policies.
    let report = r.cycle(ts("2026-03-01T11:30:00Z"), true).await;
    assert_ok(&report);
    assert!(report.revision.valid, "{:?}", report.revision.diagnostics);
    assert_eq!(names(&report, "backup"), ["blog-20260301-110000"]);
    // Its own status commits are not new policy revisions: a quiet cycle
    // commits nothing, rather than reporting its last commit as a new one.
    let report = r.cycle(ts("2026-03-01T11:40:00Z"), true).await;
    assert_ok(&report);
    assert!(
        matches!(report.published, Some(Ok(Published::Unchanged))),
        "{:?}",
        report.published
    );
}

/// Someone who can write to the bucket but holds no trusted key writes a
/// backup of `prod` holding a ClusterRoleBinding to cluster-admin, with the
/// store's own writer: valid archive, consistent SHA-256 sums, signed by
/// `signer` (or unsigned).
async fn forge_admin_backup(storage: &Path, slot: &str, signer: Option<String>) -> String {
    let repo = lifeboat_store::Repository::open(&lifeboat_store::LocationConfig {
        url: format!("file://{}", storage.display()),
        signing_key: signer,
        ..Default::default()
    })
    .await
    .unwrap();
    let writer = repo
        .begin_backup(lifeboat_store::BackupSpec {
            cluster: "prod".into(),
            policy: "blog".into(),
            policy_revision: None,
            schedule_slot: ts(slot),
            start_time: ts(slot),
            labels: Default::default(),
        })
        .await
        .unwrap();
    let binding = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "totally-legit"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "miner", "namespace": "default"}],
    });
    writer
        .add(lifeboat_store::ObjectEntry {
            resource: "clusterrolebindings".into(),
            group: "rbac.authorization.k8s.io".into(),
            namespace: None,
            name: "totally-legit".into(),
            api_version: "rbac.authorization.k8s.io/v1".into(),
            kind: "ClusterRoleBinding".into(),
            json: serde_json::to_vec(&binding).unwrap().into(),
        })
        .await
        .unwrap();
    writer.finish(ts(slot)).await.unwrap().backup_name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_request_refuses_a_forged_backup_before_applying_anything() {
    let w = World::new().await;
    let ours = lifeboat_store::generate_key_pair("prod").unwrap();
    let theirs = lifeboat_store::generate_key_pair("attacker").unwrap();
    let policies = w.base_policies("prod").replace(
        "spec: {role: primary}",
        &format!(
            "spec:\n  role: primary\n  signing:\n    keySecretRef: {{name: signing}}\n    publicKey: {}",
            ours.public_key
        ),
    );
    w.commit(
        "signed policies",
        &[
            ("lifeboat.yaml", Some(&policies)),
            ("blog.yaml", Some(HOURLY)),
        ],
    );
    let mut r = w.reconciler_signing("prod", "cache-a", Some(ours.secret_key_file.clone()));
    assert_ok(&r.cycle(ts("2026-03-01T10:30:00Z"), true).await);
    assert_eq!(w.backups("prod"), ["blog-20260301-100000"]);
    let genuine = w
        .storage()
        .join("clusters/prod/backups/blog-20260301-100000/manifest.json.minisig");
    assert!(genuine.exists());

    // Forgeries at later slots: one unsigned, one signed by the attacker.
    let unsigned = forge_admin_backup(&w.storage(), "2026-03-01T11:00:00Z", None).await;
    let signed = forge_admin_backup(
        &w.storage(),
        "2026-03-01T12:00:00Z",
        Some(theirs.secret_key_file.clone()),
    )
    .await;

    w.commit(
        "restore the forgeries",
        &[(
            "restore.yaml",
            Some(&format!(
                "apiVersion: lifeboat.dev/v1alpha1\nkind: RestoreRequest\nmetadata: {{name: evil-unsigned}}\nspec:\n  source: {{cluster: prod, policy: blog, backup: {unsigned}}}\n  target: {{cluster: prod}}\n---\napiVersion: lifeboat.dev/v1alpha1\nkind: RestoreRequest\nmetadata: {{name: evil-signed}}\nspec:\n  source: {{cluster: prod, policy: blog, backup: {signed}}}\n  target: {{cluster: prod}}\n---\napiVersion: lifeboat.dev/v1alpha1\nkind: RestoreRequest\nmetadata: {{name: latest}}\nspec:\n  source: {{cluster: prod, policy: blog, backup: latest}}\n  target: {{cluster: prod}}\n  dryRun: true\n"
            )),
        )],
    );
    let report = r.cycle(ts("2026-03-01T12:30:00Z"), true).await;
    let plan = report.plan.as_ref().expect("a plan");
    // `latest` is the genuine backup, not the newer forgeries.
    assert!(
        plan.actions
            .iter()
            .any(|a| matches!(a, Action::Restore { request, backup, .. }
            if request == "latest" && backup == "blog-20260301-100000")),
        "{:#?}",
        plan.actions
    );
    // The forgeries are reported and do not count as the 12:00 slot.
    assert!(
        plan.notes
            .iter()
            .any(|n| n.contains(&signed) && n.contains(&theirs.key_id))
    );
    assert!(!names(&report, "backup").contains(&signed));

    // Nothing of either forgery was applied.
    let bindings: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> =
        Api::all(w.sandbox.client());
    assert!(bindings.get_opt("totally-legit").await.unwrap().is_none());

    // Each request ran once and was recorded Failed, naming the key.
    for (request, needle) in [
        ("evil-unsigned", "not signed".to_string()),
        ("evil-signed", format!("untrusted key {}", theirs.key_id)),
    ] {
        let record = w
            .storage()
            .join(format!("clusters/prod/restores/{request}/record.json"));
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(record).unwrap()).unwrap();
        assert_eq!(record["phase"], "Failed", "{request}: {record:#}");
        let message = record["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&needle) && message.contains("`prod`"),
            "{request}: {message}"
        );
    }
}

/// The `ledger` namespace's policy, beside `blog`.
const LEDGER: &str = r#"apiVersion: lifeboat.dev/v1alpha1
kind: BackupPolicy
metadata: {name: ledger}
spec:
  clusters: {names: [prod]}
  include: {namespaces: [ledger]}
  schedule: "0 * * * *"
  timezone: UTC
  storage: local
  retention: {keepLast: 3}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_backup_runs_beside_the_cycles_while_a_restore_of_another_policy_runs_and_status_is_published()
 {
    use lifeboat_sandbox::{FaultAction, FaultRule};
    let w = World::new().await;
    w.commit(
        "policies",
        &[
            ("lifeboat.yaml", Some(&w.base_policies("prod"))),
            ("blog.yaml", Some(HOURLY)),
            ("ledger.yaml", Some(LEDGER)),
        ],
    );
    let mut r = w.reconciler("prod", "cache");
    assert_ok(&r.cycle(ts("2026-03-01T10:30:00Z"), true).await);
    assert_eq!(w.backups("prod").len(), 2);

    // From now on the controller's loop runs cycles: they start work and
    // return. Every list of the ledger namespace takes 3 s: its next
    // backup is slow.
    let done = r.run_in_background();
    let slow = w.sandbox.add_fault(FaultRule {
        namespace: Some("ledger".into()),
        verb: Some("list".into()),
        ..FaultRule::new(FaultAction::Latency(std::time::Duration::from_secs(3)))
    });
    w.commit(
        "restore the blog beside it",
        &[(
            "restore.yaml",
            Some(
                r#"apiVersion: lifeboat.dev/v1alpha1
kind: RestoreRequest
metadata: {name: blog-copy}
spec:
  source: {cluster: prod, policy: blog, backup: latest}
  target: {cluster: prod}
  namespaceMapping: {wordpress: wordpress-copy}
"#,
            ),
        )],
    );
    let started = std::time::Instant::now();
    let report = r.cycle(ts("2026-03-01T11:00:30Z"), true).await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "the cycle waited for the work it started"
    );
    assert_eq!(names(&report, "backup").len(), 2, "{:?}", report.plan);
    assert_eq!(names(&report, "restore"), ["blog-copy"]);
    assert!(r.working());
    let after = report.after.as_ref().unwrap();
    let ledger = after
        .policies
        .iter()
        .find(|f| f.policy == "ledger")
        .unwrap();
    assert!(
        ledger.running,
        "the plan after the cycle sees the backup running"
    );
    assert!(
        matches!(report.published, Some(Ok(_))),
        "{:?}",
        report.published
    );
    let file = w.status_file("clusters/prod/policies/ledger.yaml").unwrap();
    assert!(file.contains("backupRunning: true"), "{file}");

    // Cycles reap what ends; the restore and the blog backup end while the
    // ledger backup still runs, and the status says so.
    let mut restored = false;
    let mut cycles = 0;
    while !restored {
        tokio::time::timeout(std::time::Duration::from_secs(60), done.notified())
            .await
            .expect("a task ends within a minute");
        let report = r.cycle(ts("2026-03-01T11:00:40Z"), true).await;
        cycles += 1;
        assert!(cycles < 10, "the restore never ended");
        assert!(
            report
                .plan
                .as_ref()
                .unwrap()
                .actions
                .iter()
                .all(|a| !matches!(a, Action::Backup { .. })),
            "a running policy was planned again: {:?}",
            report.plan
        );
        restored = report
            .executed
            .iter()
            .any(|e| e.ok() && matches!(e.action, Action::Restore { .. }));
    }
    assert!(
        r.working(),
        "the ledger backup ended before the restore (lists take 3 s each)"
    );
    let copy: Api<ConfigMap> = Api::namespaced(w.sandbox.client(), "wordpress-copy");
    assert!(copy.get_opt("wordpress-config").await.unwrap().is_some());
    let file = w
        .status_file("clusters/prod/restores/blog-copy.yaml")
        .unwrap();
    assert!(file.contains("Completed"), "{file}");
    let file = w.status_file("clusters/prod/policies/ledger.yaml").unwrap();
    assert!(file.contains("backupRunning: true"), "{file}");

    // The ledger backup lands and a later cycle reaps it.
    w.sandbox.remove_fault(slow);
    while r.working() {
        tokio::time::timeout(std::time::Duration::from_secs(120), done.notified())
            .await
            .expect("the ledger backup ends");
        let report = r.cycle(ts("2026-03-01T11:00:50Z"), true).await;
        assert!(
            report.executed.iter().all(|e| e.ok()),
            "{:?}",
            report.executed
        );
    }
    assert_eq!(w.backups("prod").len(), 4);
    let file = w.status_file("clusters/prod/policies/ledger.yaml").unwrap();
    assert!(!file.contains("backupRunning"), "{file}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspending_a_policy_cancels_its_running_backup_and_removes_what_it_wrote() {
    use lifeboat_sandbox::{FaultAction, FaultRule};
    let w = World::new().await;
    w.commit(
        "policies",
        &[
            ("lifeboat.yaml", Some(&w.base_policies("prod"))),
            ("ledger.yaml", Some(LEDGER)),
        ],
    );
    let mut r = w.reconciler("prod", "cache");
    r.run_in_background();
    // Lists of the ledger namespace hang for a minute: the backup runs on.
    let slow = w.sandbox.add_fault(FaultRule {
        namespace: Some("ledger".into()),
        verb: Some("list".into()),
        ..FaultRule::new(FaultAction::Latency(std::time::Duration::from_secs(60)))
    });
    let report = r.cycle(ts("2026-03-01T10:30:00Z"), true).await;
    assert_eq!(names(&report, "backup"), ["ledger-20260301-100000"]);
    assert!(r.working());
    let dir = w
        .storage()
        .join("clusters/prod/backups/ledger-20260301-100000");
    for _ in 0..100 {
        if dir.join("operation.json").exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(dir.join("operation.json").exists(), "no operation record");

    w.commit(
        "suspend the ledger",
        &[(
            "ledger.yaml",
            Some(&LEDGER.replace("storage: local", "storage: local\n  suspend: true")),
        )],
    );
    let report = r.cycle(ts("2026-03-01T10:31:00Z"), true).await;
    w.sandbox.remove_fault(slow);
    assert!(!r.working(), "the backup still runs");
    let cancelled: Vec<String> = report
        .executed
        .iter()
        .filter_map(|e| e.result.as_ref().err().cloned())
        .collect();
    assert_eq!(
        cancelled,
        ["cancelled: policy `ledger` was suspended"],
        "{:?}",
        report.executed
    );
    assert!(!dir.exists(), "the uncommitted backup is left in storage");
    assert!(w.backups("prod").is_empty());
}

/// A CRD serving `kind` (any content) in `group`/`version`.
fn crd(group: &str, version: &str, kind: &str, plural: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {
            "group": group, "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(),
                      "listKind": format!("{kind}List")},
            "versions": [{"name": version, "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object",
                    "x-kubernetes-preserve-unknown-fields": true}}}]
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_request_shows_the_prerequisites_its_target_lacks_in_plan_and_status() {
    let w = World::new().await;
    // OLM, and the operator the blog's namespace subscribed to.
    w.sandbox
        .seed(vec![
            crd(
                "operators.coreos.com",
                "v1alpha1",
                "Subscription",
                "subscriptions",
            ),
            crd(
                "operators.coreos.com",
                "v1",
                "OperatorGroup",
                "operatorgroups",
            ),
        ])
        .unwrap();
    w.sandbox
        .seed(vec![serde_json::json!({
            "apiVersion": "operators.coreos.com/v1alpha1", "kind": "Subscription",
            "metadata": {"name": "mariadb-operator", "namespace": "wordpress"},
            "spec": {"name": "mariadb-operator", "channel": "stable",
                     "source": "community-operators"}})])
        .unwrap();
    w.commit_hourly_blog();
    let mut r = w.reconciler("prod", "cache-a");
    assert_ok(&r.cycle(ts("2026-03-01T10:30:00Z"), true).await);

    // The operator is uninstalled; a dry-run restore of the blog is asked for.
    let subscriptions: Api<kube::core::DynamicObject> = Api::namespaced_with(
        w.sandbox.client(),
        "wordpress",
        &kube::core::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("operators.coreos.com", "v1alpha1", "Subscription"),
            "subscriptions",
        ),
    );
    subscriptions
        .delete("mariadb-operator", &DeleteParams::default())
        .await
        .unwrap();
    w.commit(
        "restore the blog",
        &[(
            "restore.yaml",
            Some(
                r#"apiVersion: lifeboat.dev/v1alpha1
kind: RestoreRequest
metadata: {name: blog-drill}
spec:
  source: {cluster: prod, policy: blog, backup: latest}
  target: {cluster: prod}
  dryRun: true
"#,
            ),
        )],
    );

    // The plan lists it under the restore before anything runs.
    let report = r.cycle(ts("2026-03-01T10:40:00Z"), false).await;
    let plan = report.plan.as_ref().unwrap();
    let facts = plan
        .restores
        .iter()
        .find(|f| f.request == "blog-drill")
        .unwrap();
    let missing = facts.missing_prerequisites.as_ref().expect("evaluated");
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert_eq!(missing[0].prerequisite.name, "mariadb-operator");
    assert!(
        missing[0].message.ends_with(
            "no Subscription to it on the target; install the operator through OLM first"
        ),
        "{}",
        missing[0].message
    );

    // The restore runs; its record and the status file say what was missing.
    let mut file = String::new();
    for i in 0..20 {
        let report = r.cycle(ts("2026-03-01T10:41:00Z"), true).await;
        assert!(
            report.executed.iter().all(|e| e.ok()),
            "{:?}",
            report.executed
        );
        file = w
            .status_file("clusters/prod/restores/blog-drill.yaml")
            .unwrap_or_default();
        if file.contains("result:") {
            break;
        }
        assert!(i < 19, "the restore never ended: {file}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            w.storage()
                .join("clusters/prod/restores/blog-drill/record.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        record["missingPrerequisites"].as_array().unwrap().len(),
        1,
        "{record}"
    );
    let status: serde_yaml_ng::Value = serde_yaml_ng::from_str(&file).unwrap();
    let listed = status["result"]["missingPrerequisites"][0]
        .as_str()
        .unwrap_or_default();
    assert!(
        listed.starts_with("operator mariadb-operator (Subscription in wordpress)")
            && listed.contains("install the operator through OLM first"),
        "{file}"
    );
}
