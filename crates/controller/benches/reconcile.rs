//! One reconcile cycle with nothing to do, on 200 policies: fetch from a
//! local bare Git remote, load and validate, read the catalog from `file://`
//! storage (one committed backup per policy, of the current slot), plan,
//! render status and find it unchanged. No commit, no API request.
//!
//! Run: `cargo bench -p lifeboat-controller --bench reconcile` (release
//! build). Prints the first cycle (checkout and load of a new revision
//! included) and the best and median of the steady cycles (revision
//! unchanged), plus peak RSS (VmHWM) of the process.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use lifeboat_controller::locations::Secrets;
use lifeboat_controller::reconcile::{Reconciler, Settings, Source};
use lifeboat_core::plan::PlanOptions;
use lifeboat_git::{Auth, Mirror, Published, StatusTarget};
use lifeboat_sandbox::Sandbox;
use lifeboat_store::{BackupSpec, LocationConfig, ObjectEntry, Repository};

const POLICIES: usize = 200;
const RUNS: usize = 9;

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "Bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com")
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?}");
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
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
        format!(
            "apiVersion: lifeboat.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: prod}}\nspec: {{role: primary}}\n---\n\
             apiVersion: lifeboat.dev/v1alpha1\nkind: StorageLocation\nmetadata: {{name: local}}\nspec:\n  url: file://{}\n",
            storage.display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(work.join("policies")).unwrap();
    for i in 0..POLICIES {
        std::fs::write(
            work.join(format!("policies/p{i:03}.yaml")),
            format!(
                "apiVersion: lifeboat.dev/v1alpha1\nkind: BackupPolicy\nmetadata: {{name: p{i:03}}}\nspec:\n  \
                 clusters: {{names: [prod]}}\n  include: {{namespaces: [team-{i}], resources: [configmaps, deployments.apps]}}\n  \
                 schedule: '0 2 * * *'\n  timezone: Europe/Berlin\n  storage: local\n  \
                 retention: {{keepDaily: 7, keepWeekly: 4}}\n  objectives: {{rpo: 26h}}\n"
            ),
        )
        .unwrap();
    }
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "200 policies"]);
    git(&work, &["push", "-q", "origin", "main"]);

    // One committed backup of the current slot per policy: nothing is due.
    let now: Timestamp = "2026-03-14T12:00:00Z".parse().unwrap();
    let slot: Timestamp = "2026-03-14T01:00:00Z".parse().unwrap(); // 02:00 in Berlin
    rt.block_on(async {
        let repo = Repository::open(&LocationConfig {
            url: format!("file://{}", storage.display()),
            ..LocationConfig::default()
        })
        .await
        .unwrap();
        for i in 0..POLICIES {
            let w = repo
                .begin_backup(BackupSpec {
                    cluster: "prod".into(),
                    policy: format!("p{i:03}"),
                    policy_revision: None,
                    schedule_slot: slot,
                    start_time: slot,
                    labels: Default::default(),
                })
                .await
                .unwrap();
            w.add(ObjectEntry {
                resource: "configmaps".into(),
                group: String::new(),
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                namespace: Some(format!("team-{i}")),
                name: "settings".into(),
                json: br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"settings"}}"#
                    .to_vec()
                    .into(),
            })
            .await
            .unwrap();
            w.finish(slot + jiff::SignedDuration::from_secs(20))
                .await
                .unwrap();
        }
    });

    let sandbox = rt.block_on(Sandbox::start()).unwrap();
    let mirror = Mirror::open(
        &format!("file://{}", dir.path().join("remote.git").display()),
        &dir.path().join("cache/git"),
        Auth::none(),
    )
    .unwrap();
    let mut reconciler = Reconciler::new(
        Settings {
            cluster: "prod".into(),
            status: Some(StatusTarget::for_cluster("prod")),
            plan: PlanOptions::default(),
            exec: Default::default(),
        },
        Source::Git {
            mirror,
            branch: "main".into(),
            checkout: dir.path().join("cache/checkout"),
        },
        sandbox.client(),
        Secrets::Local {
            identities: Vec::new(),
            signing_key: None,
        },
    );

    // The first cycle checks the revision out and loads it, and writes the
    // first status commit; it is reported but is not the steady state.
    let started = Instant::now();
    let first = rt.block_on(reconciler.cycle(now, true));
    let first_time = started.elapsed();
    assert!(first.ok(), "{:?}", first.errors);
    assert!(
        first.plan.as_ref().unwrap().is_empty(),
        "nothing must be due"
    );

    let mut times: Vec<Duration> = Vec::new();
    let mut loaded: Vec<Duration> = Vec::new();
    for run in 0..2 * RUNS {
        let at = now + jiff::SignedDuration::from_secs(60 * (run as i64 + 1));
        // Every other cycle checks the revision out and loads it again, as a
        // cycle after a new commit does.
        let reload = run % 2 == 1;
        if reload {
            reconciler.reload();
        }
        let started = Instant::now();
        let report = rt.block_on(reconciler.cycle(at, true));
        if reload {
            loaded.push(started.elapsed());
        } else {
            times.push(started.elapsed());
        }
        assert!(report.ok(), "{:?}", report.errors);
        assert!(report.plan.as_ref().unwrap().is_empty());
        assert!(
            matches!(report.published, Some(Ok(Published::Unchanged))),
            "{:?}",
            report.published
        );
    }
    times.sort();
    loaded.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "reconcile, {POLICIES} policies, {POLICIES} backups, nothing to do, {RUNS} runs each:"
    );
    println!(
        "  first cycle (checkout, load, first status commit): {:.0} ms",
        ms(first_time)
    );
    println!(
        "  fetch + checkout + load + catalog + plan + status unchanged: best {:.0} ms, median {:.0} ms",
        ms(loaded[0]),
        ms(loaded[RUNS / 2])
    );
    println!(
        "  fetch (revision unchanged) + catalog + plan + status unchanged: best {:.0} ms, median {:.0} ms",
        ms(times[0]),
        ms(times[RUNS / 2])
    );
    println!("  peak RSS {:.0} MiB", peak_rss_mib());
    drop(sandbox);
}
