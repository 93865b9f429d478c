//! Fetch, resolve, checkout and history against a file:// remote.

use lifeboat_git::{Auth, Error, Mirror};

use crate::support::{Fixture, git};

#[test]
fn fetch_checkout_resolve_and_changed_paths() {
    let fx = Fixture::new();
    let first = fx.rev("main");
    let mirror = Mirror::open(&fx.url(), &fx.cache("cache"), Auth::none()).unwrap();
    assert!(!mirror.was_recreated());

    let sha = mirror.fetch("main").unwrap();
    assert_eq!(sha, first);

    let out = fx.cache("out");
    std::fs::create_dir_all(out.join("stale/dir")).unwrap();
    std::fs::write(out.join("stale/dir/old.yaml"), "x").unwrap();
    mirror.checkout(&sha, &out).unwrap();
    assert_eq!(
        std::fs::read_to_string(out.join("policies/a.yaml")).unwrap(),
        "kind: BackupPolicy\nname: a\n"
    );
    assert!(out.join("README.md").is_file());
    assert!(!out.join("stale").exists(), "stale files are removed");

    // A new push is seen by the next fetch.
    let second = fx.commit(
        &[
            ("policies/b.yaml", "name: b\n"),
            ("README.md", "# changed\n"),
        ],
        "add b",
    );
    assert_eq!(mirror.fetch("main").unwrap(), second);
    assert_ne!(first, second);

    assert_eq!(mirror.resolve("HEAD~1").unwrap(), first);
    assert_eq!(mirror.resolve("main~1").unwrap(), first);
    assert_eq!(mirror.resolve("origin/main").unwrap(), second);
    assert_eq!(mirror.resolve(&second[..10]).unwrap(), second);
    let err = mirror.resolve("no-such-branch").unwrap_err();
    assert!(matches!(err, Error::UnknownRevision { .. }), "{err}");

    assert_eq!(
        mirror.changed_paths(&first, &second).unwrap(),
        vec!["README.md", "policies/b.yaml"]
    );

    let info = mirror.commit_info(&second).unwrap();
    assert_eq!(info.sha, second);
    assert_eq!(info.summary, "add b");
    assert_eq!(info.author, "Tester <tester@example.com>");
    assert!(second.starts_with(&info.short) && info.short.len() >= 7);
    assert!(info.time > 1_600_000_000);

    mirror.checkout("HEAD~1", &out).unwrap();
    assert!(!out.join("policies/b.yaml").exists());
}

#[test]
fn resolve_remote_fetches_branches_and_tags() {
    let fx = Fixture::new();
    git(&fx.work, &["tag", "v1"]);
    git(&fx.work, &["push", "-q", "origin", "v1"]);
    let mirror = Mirror::open(&fx.url(), &fx.cache("cache"), Auth::none()).unwrap();
    assert_eq!(mirror.resolve_remote("main").unwrap(), fx.rev("main"));
    assert_eq!(mirror.resolve_remote("v1").unwrap(), fx.rev("v1^{commit}"));
    assert!(matches!(
        mirror.resolve_remote("nope").unwrap_err(),
        Error::UnknownRevision { .. }
    ));
}

#[test]
fn missing_branch_says_so() {
    let fx = Fixture::new();
    let mirror = Mirror::open(&fx.url(), &fx.cache("cache"), Auth::none()).unwrap();
    let err = mirror.fetch("release").unwrap_err();
    assert!(matches!(err, Error::BranchNotFound { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("has no branch `release`; check --branch"),
        "{err}"
    );
}

#[test]
fn unreachable_remote_keeps_the_cache_working() {
    let fx = Fixture::new();
    let mirror = Mirror::open(&fx.url(), &fx.cache("cache"), Auth::none()).unwrap();
    let sha = mirror.fetch("main").unwrap();

    // The remote goes away.
    std::fs::rename(&fx.remote, fx.tmp.path().join("gone.git")).unwrap();
    let err = mirror.fetch("main").unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    assert!(err.is_remote());
    assert!(
        err.to_string().contains("cannot reach the Git remote"),
        "{err}"
    );

    // Everything fetched so far is still there.
    assert_eq!(mirror.resolve("main").unwrap(), sha);
    let out = fx.cache("out");
    mirror.checkout(&sha, &out).unwrap();
    assert!(out.join("policies/a.yaml").is_file());
}

#[test]
fn remote_that_never_existed() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("file://{}/nothing-here.git", tmp.path().display());
    let mirror = Mirror::open(&url, &tmp.path().join("cache"), Auth::none()).unwrap();
    let err = mirror.fetch("main").unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
}

#[test]
fn closed_port_is_unreachable_and_hides_credentials() {
    // Bind and drop to find a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("http://bob:s3cret-token@127.0.0.1:{port}/repo.git");
    let auth = Auth {
        token: Some("s3cret-token".into()),
        ..Auth::default()
    };
    let mirror = Mirror::open(&url, &tmp.path().join("cache"), auth).unwrap();
    let err = mirror.fetch("main").unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    assert!(
        text.contains(&format!("http://127.0.0.1:{port}/repo.git")),
        "{text}"
    );
    assert!(!text.contains("s3cret") && !text.contains("bob"), "{text}");
    assert!(!format!("{mirror:?}").contains("s3cret"));
}

#[test]
fn plain_path_remote_works() {
    let fx = Fixture::new();
    let mirror = Mirror::open(
        fx.remote.to_str().unwrap(),
        &fx.cache("cache"),
        Auth::none(),
    )
    .unwrap();
    assert_eq!(mirror.fetch("main").unwrap(), fx.rev("main"));
}

#[test]
fn damaged_or_foreign_cache_is_recreated() {
    let fx = Fixture::new();
    let cache = fx.cache("cache");
    Mirror::open(&fx.url(), &cache, Auth::none())
        .unwrap()
        .fetch("main")
        .unwrap();

    // Break the repository: HEAD and config gone.
    std::fs::remove_file(cache.join("HEAD")).unwrap();
    std::fs::write(cache.join("config"), "not a config [[[").unwrap();
    let mirror = Mirror::open(&fx.url(), &cache, Auth::none()).unwrap();
    assert!(mirror.was_recreated());
    assert_eq!(mirror.fetch("main").unwrap(), fx.rev("main"));

    // Same directory, another remote: re-created rather than mixed.
    let other = Fixture::new();
    let mirror = Mirror::open(&other.url(), &cache, Auth::none()).unwrap();
    assert!(mirror.was_recreated());
    assert_eq!(mirror.fetch("main").unwrap(), other.rev("main"));

    // A directory that is not ours is never deleted.
    let foreign = fx.cache("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "mine").unwrap();
    let err = Mirror::open(&fx.url(), &foreign, Auth::none()).unwrap_err();
    assert!(matches!(err, Error::CacheCorrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("delete the directory"), "{err}");
    assert!(foreign.join("notes.txt").is_file());
}

#[test]
fn invalid_branch_name_is_refused_before_the_network() {
    let fx = Fixture::new();
    let mirror = Mirror::open(&fx.url(), &fx.cache("cache"), Auth::none()).unwrap();
    let err = mirror.fetch("bad..name").unwrap_err();
    assert!(matches!(err, Error::InvalidBranch { .. }), "{err:?}");
    assert!(err.to_string().contains("check --branch"), "{err}");
}

#[test]
fn one_mirror_shared_by_threads() {
    let fx = Fixture::new();
    let mirror = Mirror::open(&fx.url(), &fx.cache("cache"), Auth::none()).unwrap();
    let want = fx.rev("main");
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| mirror.fetch("main").unwrap()))
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), want);
        }
    });
}

#[test]
fn lock_files_left_by_a_killed_process_are_cleared_on_open() {
    let fx = Fixture::new();
    let cache = fx.cache("cache");
    Mirror::open(&fx.url(), &cache, Auth::none())
        .unwrap()
        .fetch("main")
        .unwrap();
    let second = fx.commit(&[("policies/c.yaml", "name: c\n")], "add c");
    std::fs::write(cache.join("shallow.lock"), "").unwrap();
    std::fs::write(cache.join("refs/heads/main.lock"), "").unwrap();
    let mirror = Mirror::open(&fx.url(), &cache, Auth::none()).unwrap();
    assert!(!mirror.was_recreated());
    assert_eq!(mirror.fetch("main").unwrap(), second);
}
