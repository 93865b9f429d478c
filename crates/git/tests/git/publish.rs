//! Status write-back against a file:// remote.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use lifeboat_git::{Auth, Mirror, Published, StatusCommit, StatusTarget};

use crate::support::{Fixture, files, git};

fn msg(m: &str) -> StatusCommit {
    StatusCommit {
        message: m.to_owned(),
    }
}

fn never_same(_: &str, _: &[u8], _: &[u8]) -> bool {
    false
}

#[test]
fn first_publish_creates_orphan_status_branch_then_skips_identical() {
    let fx = Fixture::new();
    let mirror = Mirror::open(&fx.url(), &fx.cache("cache"), Auth::none()).unwrap();
    let target = StatusTarget::for_cluster("prod-east");
    assert_eq!(target.branch, "lifeboat-status");
    let status = files(&[
        ("nightly.yaml", "phase: Succeeded\nat: 1\n"),
        ("README.md", "| policy |\n"),
    ]);

    let Published::Committed { sha, attempts } = mirror
        .publish(&target, &status, &msg("status: prod-east"), &never_same)
        .unwrap()
    else {
        panic!("expected a commit")
    };
    assert_eq!(attempts, 1);
    assert_eq!(fx.rev("lifeboat-status"), sha);
    // Orphan: no parent, only the status files.
    assert_eq!(
        git(&fx.remote, &["rev-list", "--count", "lifeboat-status"]),
        "1"
    );
    assert_eq!(
        git(
            &fx.remote,
            &["ls-tree", "-r", "--name-only", "lifeboat-status"]
        ),
        "clusters/prod-east/README.md\nclusters/prod-east/nightly.yaml"
    );
    assert_eq!(
        git(
            &fx.remote,
            &[
                "log",
                "-1",
                "--format=%an <%ae>|%cn <%ce>",
                "lifeboat-status"
            ]
        ),
        "lifeboat <lifeboat@localhost>|lifeboat <lifeboat@localhost>"
    );
    let message = git(&fx.remote, &["log", "-1", "--format=%B", "lifeboat-status"]);
    assert!(
        message.starts_with("status: prod-east") && message.contains("[skip ci]"),
        "{message}"
    );

    // Same files again: nothing to do.
    assert_eq!(
        mirror
            .publish(&target, &status, &msg("status"), &never_same)
            .unwrap(),
        Published::Unchanged
    );
    assert_eq!(fx.rev("lifeboat-status"), sha);

    // Only a timestamp moved and the caller says that does not matter.
    let later = files(&[
        ("nightly.yaml", "phase: Succeeded\nat: 2\n"),
        ("README.md", "| policy |\n"),
    ]);
    let ignore_at = |_: &str, old: &[u8], new: &[u8]| {
        let strip = |b: &[u8]| {
            String::from_utf8_lossy(b)
                .lines()
                .filter(|l| !l.starts_with("at:"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        strip(old) == strip(new)
    };
    assert_eq!(
        mirror
            .publish(&target, &later, &msg("status"), &ignore_at)
            .unwrap(),
        Published::Unchanged
    );
    assert_eq!(fx.rev("lifeboat-status"), sha);

    // A real change is committed, on top of the previous status commit.
    let failed = files(&[
        ("nightly.yaml", "phase: Failed\nat: 3\n"),
        ("README.md", "| policy |\n"),
    ]);
    let Published::Committed { sha: sha2, .. } = mirror
        .publish(&target, &failed, &msg("status"), &ignore_at)
        .unwrap()
    else {
        panic!("expected a commit")
    };
    assert_eq!(fx.rev(&format!("{sha2}^")), sha);

    // A removed file is a change even when everything left is "the same".
    let fewer = files(&[("nightly.yaml", "phase: Failed\nat: 4\n")]);
    let Published::Committed { sha: sha3, .. } = mirror
        .publish(&target, &fewer, &msg("status"), &ignore_at)
        .unwrap()
    else {
        panic!("expected a commit for a removed file")
    };
    assert_eq!(fx.rev("lifeboat-status"), sha3);
    let now = fx.files_at("lifeboat-status", "clusters/prod-east");
    assert_eq!(now.keys().collect::<Vec<_>>(), vec!["nightly.yaml"]);
    assert_eq!(now["nightly.yaml"], "phase: Failed\nat: 4");
}

#[test]
fn publishing_to_the_policy_branch_keeps_policies() {
    let fx = Fixture::new();
    let policies_before = fx.files_at("main", "policies");
    let tip = fx.rev("main");
    let mirror = Mirror::open(&fx.url(), &fx.cache("cache"), Auth::none()).unwrap();
    let target = StatusTarget {
        branch: "main".into(),
        path: "status/clusters/prod-east".into(),
    };
    let status = files(&[
        ("nightly.yaml", "phase: Succeeded\n"),
        ("restores/r1.yaml", "phase: Done\n"),
    ]);
    let Published::Committed { sha, .. } = mirror
        .publish(&target, &status, &msg("status [skip ci]"), &never_same)
        .unwrap()
    else {
        panic!("expected a commit")
    };
    assert_eq!(fx.rev("main"), sha);
    assert_eq!(fx.rev("main^"), tip, "goes on top of the policy branch");
    assert_eq!(fx.files_at("main", "policies"), policies_before);
    assert_eq!(git(&fx.remote, &["show", "main:README.md"]), "# policies");
    assert_eq!(fx.files_at("main", "status/clusters/prod-east").len(), 2);
    let message = git(&fx.remote, &["log", "-1", "--format=%B", "main"]);
    assert_eq!(message.matches("[skip ci]").count(), 1, "{message}");
    // The policy checkout now includes the status directory but nothing was lost.
    mirror.fetch("main").unwrap();
    let out = fx.cache("out");
    mirror.checkout("main", &out).unwrap();
    assert!(out.join("policies/a.yaml").is_file());
    assert!(
        out.join("status/clusters/prod-east/restores/r1.yaml")
            .is_file()
    );
}

#[test]
fn concurrent_clusters_both_land() {
    let fx = Fixture::new();
    let url = fx.url();
    let rounds = 4;
    let handles: Vec<_> = ["east", "west"]
        .into_iter()
        .map(|cluster| {
            let url = url.clone();
            let cache = fx.cache(&format!("cache-{cluster}"));
            std::thread::spawn(move || {
                let mirror = Mirror::open(&url, &cache, Auth::none())
                    .unwrap()
                    .with_publish_attempts(20)
                    .with_publish_backoff(std::time::Duration::from_millis(5));
                let target = StatusTarget::for_cluster(cluster);
                let mut max_attempts = 0;
                for round in 0..rounds {
                    let status = files(&[(
                        "policy.yaml",
                        &format!("cluster: {cluster}\nround: {round}\n"),
                    )]);
                    match mirror
                        .publish(
                            &target,
                            &status,
                            &StatusCommit {
                                message: format!("{cluster} {round}"),
                            },
                            &never_same,
                        )
                        .unwrap()
                    {
                        Published::Committed { attempts, .. } => {
                            max_attempts = max_attempts.max(attempts)
                        }
                        Published::Unchanged => panic!("every round changes something"),
                    }
                }
                max_attempts
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    for cluster in ["east", "west"] {
        let got = fx.files_at("lifeboat-status", &format!("clusters/{cluster}"));
        assert_eq!(
            got["policy.yaml"],
            format!("cluster: {cluster}\nround: {}", rounds - 1)
        );
    }
    assert_eq!(
        git(&fx.remote, &["rev-list", "--count", "lifeboat-status"]),
        (2 * rounds).to_string()
    );
}

#[test]
fn a_push_that_loses_the_race_is_retried_on_the_new_tip() {
    let fx = Fixture::new();
    let mirror = Mirror::open(&fx.url(), &fx.cache("cache"), Auth::none()).unwrap();
    let target = StatusTarget::for_cluster("east");
    mirror
        .publish(
            &target,
            &files(&[("p.yaml", "v: 1\n")]),
            &msg("east"),
            &never_same,
        )
        .unwrap();

    // Between our fetch and our push, another cluster commits to the branch.
    let other = fx.work.clone();
    let moved = Arc::new(AtomicBool::new(false));
    let moved2 = Arc::clone(&moved);
    let interloper = move |_: &str, _: &[u8], _: &[u8]| {
        if !moved2.swap(true, Ordering::SeqCst) {
            git(&other, &["fetch", "-q", "origin", "lifeboat-status"]);
            git(&other, &["checkout", "-q", "-B", "status", "FETCH_HEAD"]);
            std::fs::create_dir_all(other.join("clusters/west")).unwrap();
            std::fs::write(other.join("clusters/west/p.yaml"), "v: west\n").unwrap();
            git(&other, &["add", "clusters/west"]);
            git(&other, &["commit", "-q", "-m", "west"]);
            git(&other, &["push", "-q", "origin", "status:lifeboat-status"]);
        }
        false
    };
    let result = mirror
        .publish(
            &target,
            &files(&[("p.yaml", "v: 2\n")]),
            &msg("east"),
            &interloper,
        )
        .unwrap();
    let Published::Committed { sha, attempts } = result else {
        panic!("expected a commit")
    };
    assert!(moved.load(Ordering::SeqCst));
    assert_eq!(attempts, 2);
    assert_eq!(fx.rev("lifeboat-status"), sha);
    assert_eq!(
        fx.files_at("lifeboat-status", "clusters/west")["p.yaml"],
        "v: west"
    );
    assert_eq!(
        fx.files_at("lifeboat-status", "clusters/east")["p.yaml"],
        "v: 2"
    );
}

#[test]
fn gives_up_after_max_attempts() {
    let fx = Fixture::new();
    let mirror = Mirror::open(&fx.url(), &fx.cache("cache"), Auth::none())
        .unwrap()
        .with_publish_attempts(2)
        .with_publish_backoff(std::time::Duration::from_millis(1));
    let target = StatusTarget::for_cluster("east");
    mirror
        .publish(
            &target,
            &files(&[("p.yaml", "v: 1\n")]),
            &msg("east"),
            &never_same,
        )
        .unwrap();
    let other = fx.work.clone();
    let counter = std::sync::atomic::AtomicU32::new(0);
    // Someone else writes every single time.
    let always_moves = |_: &str, _: &[u8], _: &[u8]| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        git(&other, &["fetch", "-q", "origin", "lifeboat-status"]);
        git(&other, &["checkout", "-q", "-B", "status", "FETCH_HEAD"]);
        std::fs::create_dir_all(other.join("clusters/west")).unwrap();
        std::fs::write(other.join("clusters/west/p.yaml"), format!("n: {n}\n")).unwrap();
        git(&other, &["add", "clusters/west"]);
        git(&other, &["commit", "-q", "-m", "west"]);
        git(&other, &["push", "-q", "origin", "status:lifeboat-status"]);
        false
    };
    let err = mirror
        .publish(
            &target,
            &files(&[("p.yaml", "v: 2\n")]),
            &msg("east"),
            &always_moves,
        )
        .unwrap_err();
    assert!(
        matches!(err, lifeboat_git::Error::PushRejected { attempts: 2, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("rejected 2 times"), "{err}");
}

#[test]
fn invalid_paths_are_refused() {
    let fx = Fixture::new();
    let mirror = Mirror::open(&fx.url(), &fx.cache("cache"), Auth::none()).unwrap();
    let root = StatusTarget {
        branch: "lifeboat-status".into(),
        path: "/".into(),
    };
    assert!(
        mirror
            .publish(&root, &files(&[("a", "b")]), &msg("x"), &never_same)
            .is_err()
    );
    let target = StatusTarget::for_cluster("east");
    assert!(
        mirror
            .publish(
                &target,
                &files(&[("../escape", "b")]),
                &msg("x"),
                &never_same
            )
            .is_err()
    );
}
