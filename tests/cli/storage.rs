//! Storage errors in words: the binary against an in-process S3 server
//! (s3s) and, when installed, Azurite. Each common cause is one line that
//! names the location, its URL and what to do; `-v` adds the provider's
//! response.

use std::path::{Path, PathBuf};

use lifeboat_testkit::s3::{self, Grant, S3Server};

/// An S3 server with bucket `bucket`, the user `AKTEST` and `AKREADONLY`,
/// whose valid credentials have no permission; stops with the runtime.
fn start_s3(rt: &tokio::runtime::Runtime, root: &Path) -> S3Server {
    rt.block_on(S3Server::start_with_users(
        root,
        &[
            (s3::ACCESS_KEY, s3::SECRET_KEY, Grant::Full),
            ("AKREADONLY", "SECRETREADONLY", Grant::None),
        ],
    ))
    .unwrap()
}

/// A policy repository whose only StorageLocation is `backups` at `url`.
fn repo(dir: &Path, url: &str, endpoint: &str) -> PathBuf {
    let repo = dir.join("policies");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(
        repo.join("lifeboat.yaml"),
        format!(
            "apiVersion: lifeboat.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: prod\nspec:\n  role: primary\n---\n\
             apiVersion: lifeboat.dev/v1alpha1\nkind: StorageLocation\nmetadata:\n  name: backups\nspec:\n  \
             url: {url}\n  region: us-east-1\n  endpoint: {endpoint}\n  pathStyle: true\n"
        ),
    )
    .unwrap();
    repo
}

/// `lifeboat backups list` with these S3 keys; returns (code, stderr).
fn list_s3(repo: &Path, key: &str, secret: &str, extra: &[&str]) -> (i32, String) {
    let mut cmd = crate::lifeboat();
    cmd.args(["backups", "list", "--repo", repo.to_str().unwrap()])
        .args(extra)
        .env("AWS_ACCESS_KEY_ID", key)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE");
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One line, no provider XML, naming the location and its URL.
fn assert_one_line(err: &str, url: &str) {
    assert_eq!(err.trim_end().lines().count(), 1, "one line:\n{err}");
    assert!(!err.contains("<Error>") && !err.contains("<?xml"), "{err}");
    assert!(
        err.contains(&format!("StorageLocation `backups` ({url})")),
        "names the location and URL:\n{err}"
    );
}

#[test]
fn s3_errors_name_the_cause_location_and_remedy() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = start_s3(&rt, &dir.path().join("s3"));
    let endpoint = server.endpoint().to_string();

    // No such bucket.
    let url = "s3://missing/lifeboat";
    let policies = repo(dir.path(), url, &endpoint);
    let (code, err) = list_s3(&policies, "AKTEST", "SECRETTEST", &[]);
    assert_eq!(code, 2, "{err}");
    assert_one_line(&err, url);
    assert!(
        err.contains(&format!("bucket `missing` does not exist at {endpoint}")),
        "{err}"
    );
    assert!(
        err.contains("create it, or correct the bucket name"),
        "{err}"
    );
    assert!(err.contains("(-v shows the provider's response)"), "{err}");
    let (_, verbose) = list_s3(&policies, "AKTEST", "SECRETTEST", &["-v"]);
    assert!(
        verbose.contains("NoSuchBucket"),
        "-v shows the detail:\n{verbose}"
    );

    // Wrong secret, unknown key: the credentials are rejected.
    let url = "s3://bucket/lifeboat";
    let policies = repo(dir.path(), url, &endpoint);
    for (key, secret) in [("AKTEST", "WRONG"), ("AKNOBODY", "SECRETTEST")] {
        let (code, err) = list_s3(&policies, key, secret, &[]);
        assert_eq!(code, 2, "{err}");
        assert_one_line(&err, url);
        assert!(
            err.contains(&format!("the credentials were rejected at {endpoint}")),
            "{key}: {err}"
        );
    }

    // Valid credentials without permission.
    let (code, err) = list_s3(&policies, "AKREADONLY", "SECRETREADONLY", &[]);
    assert_eq!(code, 2, "{err}");
    assert_one_line(&err, url);
    assert!(
        err.contains("access denied: the credentials may not"),
        "{err}"
    );

    // And the happy path still works.
    let (code, err) = list_s3(&policies, "AKTEST", "SECRETTEST", &[]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn azure_errors_name_the_container_and_the_credentials() {
    let bin = crate::root().join("target/test-deps/azurite/node_modules/.bin/azurite-blob");
    if !bin.is_file() {
        eprintln!(
            "skipped: Azurite is not installed (.ci/run installs it into target/test-deps/azurite)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(&bin)
        .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
        .arg("--location")
        .arg(dir.path().join("data"))
        .args([
            "--silent",
            "--skipApiVersionCheck",
            "--loose",
            "--disableTelemetry",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _kill = Kill(&mut child);
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed().as_secs() < 60, "Azurite did not start");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let endpoint = format!("http://127.0.0.1:{port}/devstoreaccount1");
    let url = "az://missing/lifeboat";
    let policies = repo(dir.path(), url, &endpoint);
    let list = |key: &str| {
        let out = crate::lifeboat()
            .args(["backups", "list", "--repo", policies.to_str().unwrap()])
            .env("AZURE_STORAGE_ACCOUNT_NAME", "devstoreaccount1")
            .env("AZURE_STORAGE_ACCOUNT_KEY", key)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let key =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
    let (code, err) = list(key);
    assert_eq!(code, 2, "{err}");
    assert_one_line(&err, url);
    assert!(err.contains("container `missing` does not exist"), "{err}");

    let wrong =
        "AAAAvdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
    let (code, err) = list(wrong);
    assert_eq!(code, 2, "{err}");
    assert_one_line(&err, url);
    assert!(err.contains("the credentials were rejected"), "{err}");
}
