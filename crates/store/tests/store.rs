//! Integration tests of lifeboat-store against `file://` (a temp dir), an
//! in-process S3 server (lifeboat-testkit: s3s-fs on 127.0.0.1:0) and, when
//! installed, an Azurite blob server (`az://`), driven through the real
//! object_store clients.

mod azurite;

use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use jiff::{SignedDuration, Timestamp};
use lifeboat_store::{
    BackupSpec, Credentials, LocationConfig, LogEntry, LogLevel, Manifest, ObjectEntry, Phase,
    Repository, RestoreAction, RestoreCounts, RestoreItem, RestorePhase, RestoreRecord,
    RetryOptions, StoreError,
};
use lifeboat_testkit::s3::S3Server;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use rstest::rstest;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use azurite::Azurite;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const CLUSTER: &str = "prod-eu";
const TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------- fixtures

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap_or(Timestamp::UNIX_EPOCH)
}

fn spec(policy: &str, slot: &str) -> BackupSpec {
    BackupSpec {
        cluster: CLUSTER.into(),
        policy: policy.into(),
        policy_revision: Some("0123abcd".into()),
        schedule_slot: ts(slot),
        start_time: ts(slot),
        labels: BTreeMap::from([("team".into(), "platform".into())]),
    }
}

fn object(i: usize) -> ObjectEntry {
    let (resource, group, kind, api_version, namespace) = match i % 4 {
        0 => (
            "configmaps",
            "",
            "ConfigMap",
            "v1",
            Some(format!("ns-{}", i % 7)),
        ),
        1 => (
            "deployments",
            "apps",
            "Deployment",
            "apps/v1",
            Some(format!("ns-{}", i % 7)),
        ),
        2 => ("namespaces", "", "Namespace", "v1", None),
        _ => (
            "clusterroles",
            "rbac.authorization.k8s.io",
            "ClusterRole",
            "rbac.authorization.k8s.io/v1",
            None,
        ),
    };
    let name = format!("obj-{i}");
    let json = serde_json::json!({
        "apiVersion": api_version, "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "data": {"payload": "x".repeat(200 + i % 50)},
    });
    ObjectEntry {
        resource: resource.into(),
        group: group.into(),
        namespace,
        name,
        api_version: api_version.into(),
        kind: kind.into(),
        json: Bytes::from(serde_json::to_vec(&json).unwrap_or_default()),
    }
}

struct Keys {
    recipient: String,
    identity: String,
}

fn keys() -> Keys {
    let id = age::x25519::Identity::generate();
    Keys {
        recipient: id.to_public().to_string(),
        identity: age::secrecy::ExposeSecret::expose_secret(&id.to_string()).to_string(),
    }
}

fn file_config(dir: &FsPath, keys: Option<&Keys>) -> LocationConfig {
    LocationConfig {
        url: format!("file://{}", dir.display()),
        recipients: keys.map(|k| vec![k.recipient.clone()]).unwrap_or_default(),
        identities: keys.map(|k| vec![k.identity.clone()]).unwrap_or_default(),
        ..Default::default()
    }
}

async fn start_s3(root: &FsPath) -> std::io::Result<S3Server> {
    S3Server::start(root).await
}

fn s3_config(server: &S3Server, keys: Option<&Keys>) -> LocationConfig {
    LocationConfig {
        url: "s3://bucket/lifeboat".into(),
        region: Some("us-east-1".into()),
        endpoint: Some(server.endpoint().to_string()),
        path_style: true,
        credentials: Some(Credentials::S3 {
            access_key_id: "AKTEST".into(),
            secret_access_key: "SECRETTEST".into(),
            session_token: None,
        }),
        recipients: keys.map(|k| vec![k.recipient.clone()]).unwrap_or_default(),
        identities: keys.map(|k| vec![k.identity.clone()]).unwrap_or_default(),
        retry: Some(RetryOptions {
            max_retries: 2,
            retry_timeout: Duration::from_secs(3),
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
        }),
        ..Default::default()
    }
}

/// `az://lifeboat/prefix` on `server`, with the emulator's account key. The
/// endpoint names the account (Azurite is path-style).
fn azure_config(server: &Azurite, keys: Option<&Keys>) -> LocationConfig {
    LocationConfig {
        url: "az://lifeboat/prefix".into(),
        endpoint: Some(server.endpoint.clone()),
        credentials: Some(Credentials::Azure {
            account: azurite::ACCOUNT.into(),
            access_key: azurite::KEY.into(),
        }),
        recipients: keys.map(|k| vec![k.recipient.clone()]).unwrap_or_default(),
        identities: keys.map(|k| vec![k.identity.clone()]).unwrap_or_default(),
        retry: Some(RetryOptions {
            max_retries: 2,
            retry_timeout: Duration::from_secs(3),
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(2),
        }),
        ..Default::default()
    }
}

async fn start_azurite() -> Result<Azurite, Box<dyn std::error::Error + Send + Sync>> {
    let server = Azurite::start().await?;
    server.create_container("lifeboat").await?;
    Ok(server)
}

#[derive(Clone, Copy, Debug)]
enum Backend {
    File,
    S3,
    Azure,
}

impl Backend {
    /// Whether the backend can run here (Azurite is an optional test need).
    fn available(self) -> bool {
        !matches!(self, Backend::Azure) || azurite::binary().is_some()
    }
}

/// Keeps the temp dir and (for S3 and Azure) the server alive for the test.
struct Env {
    _dir: TempDir,
    _server: Option<S3Server>,
    _azurite: Option<Azurite>,
    config: LocationConfig,
}

async fn env(
    backend: Backend,
    keys: Option<&Keys>,
) -> Result<Env, Box<dyn std::error::Error + Send + Sync>> {
    let dir = tempfile::tempdir()?;
    Ok(match backend {
        Backend::File => Env {
            config: file_config(dir.path(), keys),
            _dir: dir,
            _server: None,
            _azurite: None,
        },
        Backend::S3 => {
            let server = start_s3(dir.path()).await?;
            Env {
                config: s3_config(&server, keys),
                _dir: dir,
                _server: Some(server),
                _azurite: None,
            }
        }
        Backend::Azure => {
            let server = start_azurite().await?;
            Env {
                config: azure_config(&server, keys),
                _dir: dir,
                _server: None,
                _azurite: Some(server),
            }
        }
    })
}

async fn write_backup(
    repo: &Repository,
    policy: &str,
    slot: &str,
    n: usize,
) -> Result<Manifest, StoreError> {
    let writer = repo.begin_backup(spec(policy, slot)).await?;
    let handle = writer.handle();
    // Producers in several tasks, as the backup engine does.
    let mut tasks = JoinSet::new();
    for part in 0..3 {
        let handle = handle.clone();
        tasks.spawn(async move {
            for i in (part..n).step_by(3) {
                handle.add(object(i)).await?;
            }
            Ok::<_, StoreError>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.map_err(|e| StoreError::Task(e.to_string()))??;
    }
    writer
        .log(LogEntry {
            level: LogLevel::Warning,
            time: ts(slot),
            resource: Some("secrets".into()),
            namespace: Some("kube-system".into()),
            name: Some("token".into()),
            message: "skipped service-account token".into(),
        })
        .await?;
    writer
        .finish(ts(slot) + SignedDuration::from_secs(30))
        .await
}

fn backup_dir(root: &FsPath, name: &str) -> PathBuf {
    root.join("clusters")
        .join(CLUSTER)
        .join("backups")
        .join(name)
}

fn message(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(e) = src {
        s.push_str(": ");
        s.push_str(&e.to_string());
        src = e.source();
    }
    s
}

// ---------------------------------------------------------------- round trip

#[rstest]
#[case::file_plain(Backend::File, false)]
#[case::file_age(Backend::File, true)]
#[case::s3_plain(Backend::S3, false)]
#[case::s3_age(Backend::S3, true)]
#[case::azure_plain(Backend::Azure, false)]
#[case::azure_age(Backend::Azure, true)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip(#[case] backend: Backend, #[case] encrypted: bool) -> TestResult {
    if !backend.available() {
        return Ok(());
    }
    let keys = keys();
    let env = env(backend, encrypted.then_some(&keys)).await?;
    let repo = Repository::open(&env.config).await?;
    assert_eq!(repo.marker().await?, None, "opening writes nothing");

    let n = 2_000;
    let manifest = tokio::time::timeout(
        TIMEOUT,
        write_backup(&repo, "apps", "2025-06-01T02:00:00Z", n),
    )
    .await??;
    assert_eq!(manifest.backup_name, "apps-20250601-020000");
    assert_eq!(manifest.phase, Phase::Completed);
    assert_eq!(manifest.totals.items, n as u64);
    assert_eq!(manifest.totals.warnings, 1);
    assert_eq!(manifest.resources["deployments.apps"].items, (n / 4) as u64);
    assert_eq!(manifest.encrypted(), encrypted);
    assert_eq!(manifest.files.resources.name.ends_with(".age"), encrypted);
    assert!(repo.marker().await?.is_some_and(|m| m.format == 1));

    let list = repo.list_backups(CLUSTER, None).await?;
    assert_eq!(list.backups, vec![manifest.clone()]);

    let reader = repo.open_backup(CLUSTER, &manifest.backup_name).await?;
    let report = reader.verify().await?;
    assert_eq!(report.objects, n as u64);
    assert_eq!(report.log_lines, 1);

    let mut seen = BTreeMap::new();
    let mut entries = Box::pin(reader.entries());
    while let Some(entry) = entries.next().await {
        let entry = entry?;
        seen.insert(entry.name.clone(), entry);
    }
    assert_eq!(seen.len(), n);
    for i in [0, 1, 2, 3, n - 1] {
        let want = object(i);
        let got = &seen[&want.name];
        assert_eq!(got.json, want.json);
        assert_eq!(
            (&got.resource, &got.group, &got.namespace),
            (&want.resource, &want.group, &want.namespace)
        );
        assert_eq!(got.path, want.archive_path()?);
    }
    let index = reader.index().await?;
    assert_eq!(index.objects.len(), n);
    assert!(index.objects.iter().all(|o| o.sha256.len() == 64));
    let log = reader.log().await?;
    assert_eq!(log[0].message, "skipped service-account token");

    // A slot is backed up at most once.
    let again = repo
        .begin_backup(spec("apps", "2025-06-01T02:00:00Z"))
        .await;
    assert!(matches!(again, Err(StoreError::BackupExists { .. })));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_make_partially_failed_and_failed_is_explicit() -> TestResult {
    let dir = tempfile::tempdir()?;
    let repo = Repository::open(&file_config(dir.path(), None)).await?;
    let w = repo
        .begin_backup(spec("apps", "2025-06-01T02:00:00Z"))
        .await?;
    w.add(object(0)).await?;
    w.log(LogEntry {
        level: LogLevel::Error,
        time: ts("2025-06-01T02:00:01Z"),
        resource: Some("configmaps".into()),
        namespace: Some("ns-0".into()),
        name: Some("broken".into()),
        message: "forbidden".into(),
    })
    .await?;
    let m = w.finish(ts("2025-06-01T02:00:05Z")).await?;
    assert_eq!(m.phase, Phase::PartiallyFailed);
    assert_eq!(m.resources["configmaps"].errors, 1);

    let w = repo
        .begin_backup(spec("apps", "2025-06-01T03:00:00Z"))
        .await?;
    let m = w
        .finish_failed(ts("2025-06-01T03:00:05Z"), "API server unreachable")
        .await?;
    assert_eq!(m.phase, Phase::Failed);
    assert_eq!(m.failure_reason.as_deref(), Some("API server unreachable"));
    assert_eq!(
        repo.list_backups(CLUSTER, Some("apps"))
            .await?
            .backups
            .len(),
        2
    );

    // Unsafe names are refused before anything is written.
    let mut bad = object(1);
    bad.name = "../../etc".into();
    let w = repo
        .begin_backup(spec("apps", "2025-06-01T04:00:00Z"))
        .await?;
    let err = w
        .add(bad)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("cannot be a path segment"), "{err}");
    w.abort().await?;
    Ok(())
}

// ---------------------------------------------------------------- commit point

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_or_dropped_writers_commit_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let repo = Repository::open(&file_config(dir.path(), None)).await?;

    let w = repo
        .begin_backup(spec("apps", "2025-06-01T02:00:00Z"))
        .await?;
    for i in 0..500 {
        w.add(object(i)).await?;
    }
    let handle = w.handle();
    w.abort().await?;
    assert!(matches!(
        handle.add(object(1)).await,
        Err(StoreError::WriterStopped(_))
    ));

    let w = repo
        .begin_backup(spec("apps", "2025-06-01T03:00:00Z"))
        .await?;
    w.add(object(0)).await?;
    drop(w);

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(repo.list_backups(CLUSTER, None).await?.backups.is_empty());
    let far_future = ts("2100-01-01T00:00:00Z");
    assert!(
        repo.incomplete_backups(CLUSTER, far_future, SignedDuration::from_hours(1))
            .await?
            .is_empty(),
        "aborted uploads leave no objects behind"
    );
    assert!(
        !backup_dir(dir.path(), "apps-20250601-020000")
            .join("manifest.json")
            .exists()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incomplete_backups_respect_grace_period() -> TestResult {
    let dir = tempfile::tempdir()?;
    let repo = Repository::open(&file_config(dir.path(), None)).await?;
    write_backup(&repo, "apps", "2025-06-01T02:00:00Z", 10).await?;
    // A writer that died after uploading the archive, before the manifest.
    let half = backup_dir(dir.path(), "apps-20250601-030000");
    std::fs::create_dir_all(&half)?;
    std::fs::write(half.join("resources.tar.zst"), b"partial")?;

    let now = Timestamp::now();
    let found = repo
        .incomplete_backups(
            CLUSTER,
            now + SignedDuration::from_hours(2),
            SignedDuration::from_hours(1),
        )
        .await?;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].backup, "apps-20250601-030000");
    assert_eq!(found[0].objects, 1);
    let young = repo
        .incomplete_backups(CLUSTER, now, SignedDuration::from_hours(1))
        .await?;
    assert!(
        young.is_empty(),
        "within the grace period a writer may still be running"
    );

    let listed = repo.list_backups(CLUSTER, None).await?;
    assert_eq!(
        listed.backups.len(),
        1,
        "incomplete backups are never listed"
    );
    assert_eq!(
        repo.delete_backup(CLUSTER, "apps-20250601-030000").await?,
        1
    );
    assert!(!half.exists());
    Ok(())
}

// ---------------------------------------------------------------- S3 failure

/// Objects of ~4 KiB of pseudo-random hex, which zstd cannot shrink much.
fn big_object(i: usize, seed: &mut u64) -> ObjectEntry {
    let mut payload = String::with_capacity(4096);
    while payload.len() < 4096 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        payload.push_str(&format!("{:016x}", *seed));
    }
    let mut o = object(i);
    o.json = Bytes::from(format!("{{\"payload\":\"{payload}\"}}"));
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_server_stopped_mid_upload_fails_cleanly() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = start_s3(dir.path()).await?;
    let config = s3_config(&server, None);
    let repo = Repository::open(&config).await?;
    let writer = repo
        .begin_backup(spec("apps", "2025-06-01T02:00:00Z"))
        .await?;

    let outcome = tokio::time::timeout(TIMEOUT, async {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        // ~40 MiB of JSON: several 8 MiB parts. Stop the server after ~20 MiB.
        for i in 0..10_000 {
            if i == 5_000 {
                server.stop();
            }
            writer.add(big_object(i, &mut seed)).await?;
        }
        writer.finish(ts("2025-06-01T02:10:00Z")).await.map(|_| ())
    })
    .await;
    let err = match outcome {
        Err(_) => return Err("the writer hung after the S3 server stopped".into()),
        Ok(Ok(())) => return Err("the writer succeeded although the server was stopped".into()),
        Ok(Err(e)) => e,
    };
    let text = message(&err);
    assert!(
        text.contains("object storage request failed") || text.contains("upload"),
        "unclear error: {text}"
    );
    println!("error after server stop: {text}");

    // Same data directory, new server: nothing is listed, no manifest.
    let server2 = start_s3(dir.path()).await?;
    let repo2 = Repository::open(&s3_config(&server2, None)).await?;
    assert!(repo2.list_backups(CLUSTER, None).await?.backups.is_empty());
    assert!(
        !backup_dir(&dir.path().join("bucket/lifeboat"), "apps-20250601-020000")
            .join("manifest.json")
            .exists()
    );
    Ok(())
}

// ---------------------------------------------------------------- integrity

async fn committed(
    encrypted: bool,
) -> Result<(TempDir, Keys, Manifest), Box<dyn std::error::Error + Send + Sync>> {
    let dir = tempfile::tempdir()?;
    let keys = keys();
    let repo = Repository::open(&file_config(dir.path(), encrypted.then_some(&keys))).await?;
    let m = write_backup(&repo, "apps", "2025-06-01T02:00:00Z", 300).await?;
    Ok((dir, keys, m))
}

#[rstest]
#[case::plain(false)]
#[case::age(true)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_byte_is_a_checksum_error(#[case] encrypted: bool) -> TestResult {
    let (dir, keys, m) = committed(encrypted).await?;
    let file = backup_dir(dir.path(), &m.backup_name).join(&m.files.resources.name);
    let mut bytes = std::fs::read(&file)?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&file, bytes)?;

    let repo = Repository::open(&file_config(dir.path(), Some(&keys))).await?;
    let reader = repo.open_backup(CLUSTER, &m.backup_name).await?;
    let err = reader.verify().await.err();
    assert!(
        matches!(err, Some(StoreError::ChecksumMismatch { .. })),
        "{err:?}"
    );
    let text = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(text.contains("restore from another backup"), "{text}");
    // The streaming pass reports it too, as its last item.
    let items: Vec<_> = reader.entries().collect().await;
    assert!(matches!(
        items.last(),
        Some(Err(StoreError::ChecksumMismatch { .. }))
    ));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_archive_is_a_size_error() -> TestResult {
    let (dir, _keys, m) = committed(false).await?;
    let file = backup_dir(dir.path(), &m.backup_name).join(&m.files.resources.name);
    let bytes = std::fs::read(&file)?;
    std::fs::write(&file, &bytes[..bytes.len() - 100])?;
    let repo = Repository::open(&file_config(dir.path(), None)).await?;
    let err = repo
        .open_backup(CLUSTER, &m.backup_name)
        .await?
        .verify()
        .await
        .err();
    assert!(
        matches!(err, Some(StoreError::SizeMismatch { .. })),
        "{err:?}"
    );
    assert!(err.is_some_and(|e| e.is_integrity() && e.to_string().contains("truncated")));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_zstd_with_matching_manifest_is_corrupt() -> TestResult {
    // Someone re-wrote both file and manifest (e.g. a broken copy tool):
    // hashes match, but the zstd stream ends early.
    let (dir, _keys, mut m) = committed(false).await?;
    let bdir = backup_dir(dir.path(), &m.backup_name);
    let file = bdir.join(&m.files.resources.name);
    let bytes = std::fs::read(&file)?;
    let cut = &bytes[..bytes.len() / 2];
    std::fs::write(&file, cut)?;
    m.files.resources.bytes = cut.len() as u64;
    m.files.resources.sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(cut));
    std::fs::write(bdir.join("manifest.json"), serde_json::to_vec(&m)?)?;
    let repo = Repository::open(&file_config(dir.path(), None)).await?;
    let err = repo
        .open_backup(CLUSTER, &m.backup_name)
        .await?
        .verify()
        .await
        .err();
    assert!(matches!(err, Some(StoreError::Corrupt { .. })), "{err:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_identity_is_clear() -> TestResult {
    let (dir, keys, m) = committed(true).await?;
    let other = keys_other();
    let mut config = file_config(dir.path(), Some(&keys));
    config.identities = vec![other];
    let repo = Repository::open(&config).await?;
    let err = repo
        .open_backup(CLUSTER, &m.backup_name)
        .await?
        .verify()
        .await
        .err();
    let text = err.as_ref().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        matches!(err, Some(StoreError::WrongIdentity { .. })),
        "{err:?}"
    );
    assert!(
        text.contains(&keys.recipient),
        "names the recipient: {text}"
    );

    config.identities.clear();
    let repo = Repository::open(&config).await?;
    let err = repo
        .open_backup(CLUSTER, &m.backup_name)
        .await?
        .verify()
        .await
        .err();
    assert!(
        matches!(err, Some(StoreError::MissingIdentity { .. })),
        "{err:?}"
    );
    Ok(())
}

fn keys_other() -> String {
    keys().identity
}

// ---------------------------------------------------------------- marker

#[tokio::test]
async fn newer_format_and_foreign_data_are_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("lifeboat.json"),
        r#"{"format":2,"id":"x","createdBy":"lifeboat 9.0.0"}"#,
    )?;
    let err = Repository::open(&file_config(dir.path(), None)).await.err();
    assert!(
        matches!(err, Some(StoreError::NewerFormat { found: 2, .. })),
        "{err:?}"
    );
    assert!(err.is_some_and(|e| e.to_string().contains("upgrade lifeboat")));

    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("velero/backups"))?;
    std::fs::write(dir.path().join("velero/backups/x.tar.gz"), b"...")?;
    let err = Repository::open(&file_config(dir.path(), None)).await.err();
    assert!(
        matches!(err, Some(StoreError::ForeignData { .. })),
        "{err:?}"
    );
    let text = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        text.contains("velero/backups/x.tar.gz") && text.contains("empty prefix"),
        "{text}"
    );

    std::fs::write(dir.path().join("lifeboat.json"), b"not json")?;
    let err = Repository::open(&file_config(dir.path(), None)).await.err();
    assert!(
        matches!(err, Some(StoreError::InvalidMarker { .. })),
        "{err:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marker_on_s3_is_created_on_first_write_only() -> TestResult {
    let env = env(Backend::S3, None).await?;
    let repo = Repository::open(&env.config).await?;
    assert!(repo.list_backups(CLUSTER, None).await?.backups.is_empty());
    assert_eq!(repo.marker().await?, None);
    let record = restore_record(3);
    repo.write_restore_record(CLUSTER, "restore-1", &record)
        .await?;
    let marker = repo.marker().await?;
    assert!(
        marker
            .as_ref()
            .is_some_and(|m| m.format == 1 && m.id.len() == 32),
        "{marker:?}"
    );
    assert_eq!(
        repo.read_restore_record(CLUSTER, "restore-1").await?,
        Some(record)
    );
    assert_eq!(repo.read_restore_record(CLUSTER, "restore-2").await?, None);
    // Reopening keeps the same marker.
    let again = Repository::open(&env.config).await?;
    assert_eq!(again.marker().await?, marker);
    Ok(())
}

// ---------------------------------------------------------------- catalog

fn cheap_manifest(policy: &str, i: i64) -> Manifest {
    let slot = ts("2024-01-01T00:00:00Z") + SignedDuration::from_hours(i);
    let file = |name: &str| lifeboat_store::FileInfo {
        name: name.into(),
        bytes: 0,
        sha256: String::new(),
    };
    Manifest {
        prerequisites: Default::default(),
        format_version: 1,
        backup_name: lifeboat_store::backup_name(policy, slot),
        policy: policy.into(),
        policy_revision: None,
        cluster: CLUSTER.into(),
        schedule_slot: slot,
        start_time: slot,
        end_time: slot,
        phase: Phase::Completed,
        failure_reason: None,
        resources: BTreeMap::new(),
        totals: Default::default(),
        files: lifeboat_store::BackupFiles {
            resources: file("resources.tar.zst"),
            index: file("index.json.zst"),
            log: file("log.jsonl.zst"),
            other: Vec::new(),
        },
        recipients: vec![],
        lifeboat_version: "test".into(),
        labels: BTreeMap::new(),
        volumes: Vec::new(),
        hooks: Default::default(),
        artifacts: Vec::new(),
        images: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_more_than_a_thousand_backups_on_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    let repo = Repository::open(&file_config(dir.path(), None)).await?;
    write_backup(&repo, "db", "2023-01-01T00:00:00Z", 1).await?;
    for (policy, n) in [("apps", 1100), ("apps-extra", 5)] {
        for i in 0..n {
            let m = cheap_manifest(policy, i);
            let d = backup_dir(dir.path(), &m.backup_name);
            std::fs::create_dir_all(&d)?;
            std::fs::write(d.join("manifest.json"), serde_json::to_vec(&m)?)?;
        }
    }
    // One unreadable manifest does not hide the others.
    let bad = backup_dir(dir.path(), "apps-20200101-000000");
    std::fs::create_dir_all(&bad)?;
    std::fs::write(bad.join("manifest.json"), b"{")?;

    let all = repo.list_backups(CLUSTER, None).await?;
    assert_eq!(all.backups.len(), 1 + 1100 + 5);
    assert_eq!(all.unreadable.len(), 1);
    let apps = repo.list_backups(CLUSTER, Some("apps")).await?;
    assert_eq!(apps.backups.len(), 1100, "apps-extra is another policy");
    assert!(
        apps.backups
            .windows(2)
            .all(|w| w[0].schedule_slot < w[1].schedule_slot)
    );
    assert!(
        repo.list_backups("other-cluster", None)
            .await?
            .backups
            .is_empty()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_through_s3() -> TestResult {
    let env = env(Backend::S3, None).await?;
    let repo = Repository::open(&env.config).await?;
    let manifests: Vec<Manifest> = (0..1005).map(|i| cheap_manifest("apps", i)).collect();
    // Write the manifests directly through a second client.
    let (store, _) = raw_s3(&env.config)?;
    futures::stream::iter(manifests.iter())
        .map(|m| {
            let store = store.clone();
            async move {
                let path = Path::from(format!(
                    "lifeboat/clusters/{CLUSTER}/backups/{}/manifest.json",
                    m.backup_name
                ));
                object_store::ObjectStoreExt::put(
                    &*store,
                    &path,
                    PutPayload::from(serde_json::to_vec(m).unwrap_or_default()),
                )
                .await
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    let list = tokio::time::timeout(TIMEOUT, repo.list_backups(CLUSTER, Some("apps"))).await??;
    assert_eq!(list.backups.len(), 1005);
    Ok(())
}

fn raw_s3(config: &LocationConfig) -> Result<(Arc<dyn ObjectStore>, ()), object_store::Error> {
    let s3 = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name("bucket")
        .with_region("us-east-1")
        .with_endpoint(config.endpoint.clone().unwrap_or_default())
        .with_allow_http(true)
        .with_access_key_id("AKTEST")
        .with_secret_access_key("SECRETTEST")
        .build()?;
    Ok((Arc::new(s3), ()))
}

/// Delegates to an inner store, records deletes, and can fail deletes of
/// everything but manifests (a crash half-way through deleting).
#[derive(Debug)]
struct Recording {
    inner: Arc<dyn ObjectStore>,
    deletes: Arc<Mutex<Vec<String>>>,
    fail_non_manifest_deletes: bool,
}

impl std::fmt::Display for Recording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Recording({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Recording {
    async fn put_opts(
        &self,
        l: &Path,
        p: PutPayload,
        o: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(l, p, o).await
    }
    async fn put_multipart_opts(
        &self,
        l: &Path,
        o: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(l, o).await
    }
    async fn get_opts(&self, l: &Path, o: GetOptions) -> object_store::Result<GetResult> {
        self.inner.get_opts(l, o).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let deletes = self.deletes.clone();
        let fail = self.fail_non_manifest_deletes;
        let checked = locations
            .map(move |l| {
                let l = l?;
                if let Ok(mut d) = deletes.lock() {
                    d.push(l.to_string());
                }
                if fail && l.filename() != Some("manifest.json") {
                    return Err(object_store::Error::Generic {
                        store: "test",
                        source: "injected failure".into(),
                    });
                }
                Ok(l)
            })
            .boxed();
        self.inner.delete_stream(checked)
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(&self, from: &Path, to: &Path, o: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, o).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_the_manifest_first() -> TestResult {
    let dir = tempfile::tempdir()?;
    let repo = Repository::open(&file_config(dir.path(), None)).await?;
    let m = write_backup(&repo, "apps", "2025-06-01T02:00:00Z", 10).await?;
    write_backup(&repo, "apps", "2025-06-01T03:00:00Z", 10).await?;
    let local: Arc<dyn ObjectStore> = Arc::new(
        object_store::local::LocalFileSystem::new_with_prefix(dir.path())?
            .with_automatic_cleanup(true),
    );

    // A deletion that dies after the first object: the backup is no longer
    // listed as complete but shows up as incomplete.
    let deletes = Arc::new(Mutex::new(Vec::new()));
    let failing = Arc::new(Recording {
        inner: local.clone(),
        deletes: deletes.clone(),
        fail_non_manifest_deletes: true,
    });
    let repo = Repository::from_store(failing, "test://", &[], &[]).await?;
    assert!(repo.delete_backup(CLUSTER, &m.backup_name).await.is_err());
    let first = deletes
        .lock()
        .map(|d| d.first().cloned())
        .ok()
        .flatten()
        .unwrap_or_default();
    assert!(first.ends_with("/manifest.json"), "deleted {first} first");
    let names: Vec<String> = repo
        .list_backups(CLUSTER, None)
        .await?
        .backups
        .into_iter()
        .map(|b| b.backup_name)
        .collect();
    assert_eq!(names, vec!["apps-20250601-030000"]);
    let incomplete = repo
        .incomplete_backups(CLUSTER, ts("2100-01-01T00:00:00Z"), SignedDuration::ZERO)
        .await?;
    assert_eq!(
        incomplete
            .iter()
            .map(|i| i.backup.as_str())
            .collect::<Vec<_>>(),
        vec![m.backup_name.as_str()]
    );

    // A working deletion finishes the job.
    let repo = Repository::from_store(local, "test://", &[], &[]).await?;
    assert_eq!(repo.delete_backup(CLUSTER, &m.backup_name).await?, 3);
    assert!(!backup_dir(dir.path(), &m.backup_name).exists());
    assert!(matches!(
        repo.delete_backup(CLUSTER, &m.backup_name).await,
        Err(StoreError::BackupNotFound { .. })
    ));
    assert_eq!(
        repo.show_backup(CLUSTER, "apps-20250601-030000")
            .await?
            .totals
            .items,
        10
    );
    Ok(())
}

fn restore_record(n: usize) -> RestoreRecord {
    RestoreRecord {
        missing_prerequisites: Default::default(),
        volumes: Default::default(),
        images: Default::default(),
        request: "restore-1".into(),
        source_cluster: CLUSTER.into(),
        source_backup: "apps-20250601-020000".into(),
        target_cluster: "dr-us".into(),
        start_time: ts("2025-06-02T00:00:00Z"),
        end_time: Some(ts("2025-06-02T00:01:00Z")),
        phase: RestorePhase::Completed,
        owner: None,
        deadline: None,
        message: None,
        dry_run: false,
        counts: RestoreCounts {
            created: n as u64,
            ..Default::default()
        },
        items: (0..n)
            .map(|i| RestoreItem {
                changes: Default::default(),
                resource: "configmaps".into(),
                namespace: Some("web".into()),
                name: format!("cm-{i}"),
                action: RestoreAction::Created,
                reason: None,
            })
            .collect(),
        hooks: Vec::new(),
        hook_counts: Default::default(),
        lifeboat_version: "test".into(),
    }
}

#[tokio::test]
async fn restore_record_json_is_camel_case() -> TestResult {
    let dir = tempfile::tempdir()?;
    let repo = Repository::open(&file_config(dir.path(), None)).await?;
    repo.write_restore_record("dr-us", "restore-1", &restore_record(1))
        .await?;
    let text = std::fs::read_to_string(
        dir.path()
            .join("clusters/dr-us/restores/restore-1/record.json"),
    )?;
    for key in [
        "\"sourceBackup\"",
        "\"targetCluster\"",
        "\"dryRun\"",
        "\"startTime\"",
        "\"action\": \"Created\"",
    ] {
        assert!(text.contains(key), "{key} missing in {text}");
    }
    let err = repo
        .write_restore_record("dr-us", "../x", &restore_record(0))
        .await
        .err();
    assert!(matches!(err, Some(StoreError::InvalidName { .. })));
    Ok(())
}

// ---------------------------------------------------------------- recovery by hand

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[rstest]
#[case::plain(false)]
#[case::age(true)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_with_age_zstd_tar(#[case] encrypted: bool) -> TestResult {
    let missing: Vec<_> = ["age", "zstd", "tar"]
        .into_iter()
        .filter(|t| !have(t))
        .collect();
    if !missing.is_empty() {
        println!("skipped: {missing:?} not installed (apt-get install age zstd tar)");
        return Ok(());
    }
    let (dir, keys, m) = committed(encrypted).await?;
    let bdir = backup_dir(dir.path(), &m.backup_name);
    let out = tempfile::tempdir()?;
    std::fs::write(out.path().join("key.txt"), format!("{}\n", keys.identity))?;
    let (resources, index) = (
        bdir.join(&m.files.resources.name),
        bdir.join(&m.files.index.name),
    );
    let script = if encrypted {
        format!(
            "cd {out} && age -d -i key.txt {res} | zstd -d | tar x && age -d -i key.txt {idx} | zstd -d > index.json",
            out = out.path().display(),
            res = resources.display(),
            idx = index.display()
        )
    } else {
        format!(
            "cd {out} && zstd -d < {res} | tar x && zstd -d < {idx} > index.json",
            out = out.path().display(),
            res = resources.display(),
            idx = index.display()
        )
    };
    let status = Command::new("sh").args(["-c", &script]).output()?;
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );

    for i in [0, 1, 2, 3, 299] {
        let o = object(i);
        let extracted = std::fs::read(out.path().join(o.archive_path()?))?;
        assert_eq!(extracted, o.json.to_vec(), "{}", o.archive_path()?);
    }
    let index: lifeboat_store::Index =
        serde_json::from_slice(&std::fs::read(out.path().join("index.json"))?)?;
    assert_eq!(index.objects.len(), 300);
    let cm = out
        .path()
        .join("resources/configmaps/namespaces/ns-0/obj-0.json");
    assert!(cm.exists());
    let cr = out
        .path()
        .join("resources/clusterroles.rbac.authorization.k8s.io/cluster/obj-3.json");
    assert!(cr.exists());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_marks_keep_the_first_sighting() -> TestResult {
    let dir = tempfile::tempdir()?;
    let repo = Repository::open(&file_config(dir.path(), None)).await?;
    assert!(repo.orphan_marks(CLUSTER).await?.is_empty());
    let first = repo
        .mark_orphaned(CLUSTER, "apps", ts("2025-06-01T00:00:00Z"))
        .await?;
    // Marking again does not restart the grace period.
    let again = repo
        .mark_orphaned(CLUSTER, "apps", ts("2025-07-01T00:00:00Z"))
        .await?;
    assert_eq!(first, again);
    repo.mark_orphaned(CLUSTER, "db", ts("2025-06-02T00:00:00Z"))
        .await?;
    let marks = repo.orphan_marks(CLUSTER).await?;
    assert_eq!(
        marks.iter().map(|m| m.policy.as_str()).collect::<Vec<_>>(),
        ["apps", "db"]
    );
    assert_eq!(marks[0].since, ts("2025-06-01T00:00:00Z"));
    repo.unmark_orphaned(CLUSTER, "apps").await?;
    repo.unmark_orphaned(CLUSTER, "apps").await?;
    assert_eq!(repo.orphan_marks(CLUSTER).await?.len(), 1);
    Ok(())
}

// ---------------------------------------------------------------- Azure

/// What the round trip does not cover, on Azurite: an aborted writer
/// leaves nothing, an interrupted one is found and deleted, a committed
/// backup is deleted, and restore records come back as written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_delete_incomplete_and_restore_records() -> TestResult {
    if !Backend::Azure.available() {
        return Ok(());
    }
    let env = env(Backend::Azure, None).await?;
    // An account URL with a trailing slash is the same account.
    let config = LocationConfig {
        endpoint: env.config.endpoint.as_ref().map(|e| format!("{e}/")),
        ..env.config.clone()
    };
    let repo = Repository::open(&config).await?;
    let far_future = ts("2100-01-01T00:00:00Z");
    let hour = SignedDuration::from_hours(1);

    let w = repo
        .begin_backup(spec("apps", "2025-06-01T01:00:00Z"))
        .await?;
    for i in 0..200 {
        w.add(object(i)).await?;
    }
    w.abort().await?;
    assert!(
        repo.incomplete_backups(CLUSTER, far_future, hour)
            .await?
            .is_empty(),
        "an aborted upload leaves no blob behind"
    );

    let m = tokio::time::timeout(
        TIMEOUT,
        write_backup(&repo, "apps", "2025-06-01T02:00:00Z", 50),
    )
    .await??;
    // A writer that died after uploading the archive, before the manifest.
    let raw = object_store::azure::MicrosoftAzureBuilder::new()
        .with_endpoint(env.config.endpoint.clone().unwrap_or_default())
        .with_account(azurite::ACCOUNT)
        .with_access_key(azurite::KEY)
        .with_container_name("lifeboat")
        .with_allow_http(true)
        .build()?;
    object_store::ObjectStoreExt::put(
        &raw,
        &Path::from("prefix/clusters/prod-eu/backups/apps-20250601-030000/resources.tar.zst"),
        PutPayload::from_static(b"partial"),
    )
    .await?;

    let now = Timestamp::now();
    let found = repo
        .incomplete_backups(CLUSTER, now + SignedDuration::from_hours(2), hour)
        .await?;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].backup, "apps-20250601-030000");
    assert_eq!((found[0].objects, found[0].bytes), (1, 7));
    assert!(
        repo.incomplete_backups(CLUSTER, now, hour)
            .await?
            .is_empty()
    );
    assert_eq!(
        repo.list_backups(CLUSTER, None).await?.backups,
        vec![m.clone()]
    );
    assert_eq!(
        repo.delete_backup(CLUSTER, "apps-20250601-030000").await?,
        1
    );

    let deleted = repo.delete_backup(CLUSTER, &m.backup_name).await?;
    assert!(deleted >= 3, "manifest, archive, index…: {deleted}");
    assert!(repo.list_backups(CLUSTER, None).await?.backups.is_empty());
    let leftovers: Vec<ObjectMeta> = raw
        .list(Some(&Path::from("prefix/clusters/prod-eu/backups")))
        .try_collect()
        .await?;
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(matches!(
        repo.delete_backup(CLUSTER, &m.backup_name).await,
        Err(StoreError::BackupNotFound { .. })
    ));

    assert_eq!(repo.read_restore_record("dr-us", "restore-1").await?, None);
    let record = restore_record(300);
    repo.write_restore_record("dr-us", "restore-1", &record)
        .await?;
    assert_eq!(
        repo.read_restore_record("dr-us", "restore-1").await?,
        Some(record)
    );
    // The marker was written once, by the first backup, and is still there.
    assert!(repo.marker().await?.is_some_and(|m| m.format == 1));
    Ok(())
}

// ---------------------------------------------------------------- errors in words

/// The one-line message and cause of opening `config`, which must fail.
async fn open_error(config: &LocationConfig) -> (String, Option<lifeboat_store::StorageCause>) {
    match Repository::open(config).await {
        Ok(_) => panic!("opening {} succeeded", config.url),
        Err(e) => (e.to_string(), e.storage_cause().cloned()),
    }
}

fn quick(mut config: LocationConfig) -> LocationConfig {
    config.retry = Some(RetryOptions {
        max_retries: 0,
        retry_timeout: Duration::from_secs(2),
        init_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(10),
        request_timeout: Duration::from_millis(700),
        connect_timeout: Duration::from_millis(700),
    });
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_failures_are_named_in_words() -> TestResult {
    use lifeboat_store::StorageCause as C;
    let dir = tempfile::tempdir()?;
    let server = start_s3(dir.path()).await?;

    let mut missing = s3_config(&server, None);
    missing.url = "s3://missing/lifeboat".into();
    let (text, cause) = open_error(&quick(missing)).await;
    assert_eq!(cause, Some(C::NoSuchBucket), "{text}");
    assert!(
        text.starts_with(&format!(
            "bucket `missing` does not exist at {}",
            server.endpoint()
        )),
        "{text}"
    );
    assert!(!text.contains("<Code>"), "{text}");

    let mut wrong = s3_config(&server, None);
    wrong.credentials = Some(Credentials::S3 {
        access_key_id: "AKTEST".into(),
        secret_access_key: "WRONG".into(),
        session_token: None,
    });
    let (text, cause) = open_error(&quick(wrong)).await;
    assert_eq!(cause, Some(C::BadCredentials), "{text}");

    // Nothing listens on a port just closed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut refused = s3_config(&server, None);
    refused.endpoint = Some(format!("http://{closed}"));
    let (text, cause) = open_error(&quick(refused)).await;
    assert_eq!(cause, Some(C::ConnectionRefused), "{text}");
    assert!(
        text.starts_with(&format!("connection refused by http://{closed}")),
        "{text}"
    );

    // HTTPS to a plain-HTTP server: the handshake fails.
    let mut tls = s3_config(&server, None);
    tls.endpoint = Some(server.endpoint().replace("http://", "https://"));
    let (text, cause) = open_error(&quick(tls)).await;
    assert_eq!(cause, Some(C::Tls), "{text}");
    assert!(
        text.contains("the TLS handshake with https://127.0.0.1:"),
        "{text}"
    );

    // A server that accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await?;
    let silent_addr = silent.local_addr()?;
    let hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let mut slow = s3_config(&server, None);
    slow.endpoint = Some(format!("http://{silent_addr}"));
    let (text, cause) = open_error(&quick(slow)).await;
    hold.abort();
    assert_eq!(cause, Some(C::Timeout), "{text}");
    assert!(text.contains("did not answer in time"), "{text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_failures_are_named_in_words() -> TestResult {
    use lifeboat_store::StorageCause as C;
    if azurite::binary().is_none() {
        return Ok(());
    }
    let server = start_azurite().await?;
    let mut missing = azure_config(&server, None);
    missing.url = "az://missing/prefix".into();
    let (text, cause) = open_error(&quick(missing)).await;
    assert_eq!(cause, Some(C::NoSuchBucket), "{text}");
    assert!(
        text.starts_with("container `missing` does not exist"),
        "{text}"
    );

    let mut wrong = azure_config(&server, None);
    wrong.credentials = Some(Credentials::Azure {
        account: azurite::ACCOUNT.into(),
        // The emulator's key with its first bytes changed: valid base64
        // of the right length, so the server, not the client, rejects it.
        access_key: "AAAAAdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==".into(),
    });
    let (text, cause) = open_error(&quick(wrong)).await;
    assert_eq!(cause, Some(C::BadCredentials), "{text}");
    Ok(())
}

// ---------------------------------------------------------------- signatures

/// `file_config` that trusts `trusted` for `CLUSTER` and signs with `signer`.
fn signed_config(
    dir: &FsPath,
    keys: &Keys,
    trusted: &[&lifeboat_store::GeneratedKeyPair],
    signer: Option<&lifeboat_store::GeneratedKeyPair>,
) -> LocationConfig {
    LocationConfig {
        trusted_keys: trusted
            .iter()
            .map(|k| lifeboat_store::TrustedKey {
                cluster: CLUSTER.into(),
                public_key: k.public_key.clone(),
                trusted_until: None,
            })
            .collect(),
        signing_key: signer.map(|k| k.secret_key_file.clone()),
        ..file_config(dir, Some(keys))
    }
}

/// Copies a genuine backup to a new name with a manifest that matches its
/// files (valid age encryption, consistent SHA-256 sums): a forgery by
/// someone who can write to the bucket. Signed by `signer` if given.
fn forge(
    root: &FsPath,
    genuine: &Manifest,
    name: &str,
    signer: Option<&lifeboat_store::GeneratedKeyPair>,
) -> TestResult {
    let from = backup_dir(root, &genuine.backup_name);
    let to = backup_dir(root, name);
    std::fs::create_dir_all(&to)?;
    for f in [
        &genuine.files.resources,
        &genuine.files.index,
        &genuine.files.log,
    ] {
        std::fs::copy(from.join(&f.name), to.join(&f.name))?;
    }
    let mut forged = genuine.clone();
    forged.backup_name = name.into();
    let bytes = serde_json::to_vec_pretty(&forged)?;
    if let Some(key) = signer {
        let key = lifeboat_store::SigningKey::parse(&key.secret_key_file)?;
        let sig = key.sign(
            lifeboat_store::SignedKind::Backup,
            CLUSTER,
            name,
            genuine.end_time,
            &bytes,
        )?;
        std::fs::write(to.join("manifest.json.minisig"), sig)?;
    }
    std::fs::write(to.join("manifest.json"), bytes)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_backups_round_trip_and_forgeries_are_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let age = keys();
    let ours = lifeboat_store::generate_key_pair("test")?;
    let theirs = lifeboat_store::generate_key_pair("attacker")?;
    let repo = Repository::open(&signed_config(dir.path(), &age, &[&ours], Some(&ours))).await?;
    let genuine = write_backup(&repo, "apps", "2025-06-01T02:00:00Z", 40).await?;
    let gdir = backup_dir(dir.path(), &genuine.backup_name);
    assert!(gdir.join("manifest.json.minisig").exists());

    let reader = repo.open_backup(CLUSTER, &genuine.backup_name).await?;
    assert_eq!(
        reader.signature().label(),
        "valid",
        "{}",
        reader.signature().describe()
    );
    assert_eq!(reader.signature().key_id(), Some(ours.key_id.as_str()));
    assert_eq!(reader.verify().await?.objects, 40);

    // Forged: unsigned, and signed by a key nobody trusts.
    forge(dir.path(), &genuine, "apps-20250602-020000", None)?;
    forge(dir.path(), &genuine, "apps-20250603-020000", Some(&theirs))?;
    let unsigned = repo.open_backup(CLUSTER, "apps-20250602-020000").await?;
    let err = unsigned
        .verify()
        .await
        .expect_err("an unsigned forgery is refused");
    assert!(matches!(err, StoreError::SignatureRefused { .. }), "{err}");
    assert!(message(&err).contains("not signed"), "{}", message(&err));
    let untrusted = repo.open_backup(CLUSTER, "apps-20250603-020000").await?;
    let err = untrusted
        .verify()
        .await
        .expect_err("an untrusted signer is refused");
    let text = message(&err);
    assert!(
        text.contains(&theirs.key_id) && text.contains(&format!("`{CLUSTER}`")),
        "{text}"
    );
    // Nothing of a refused backup is streamed either.
    let first = Box::pin(untrusted.entries()).next().await;
    assert!(matches!(
        first,
        Some(Err(StoreError::SignatureRefused { .. }))
    ));

    // The catalog flags them.
    let list = repo.list_backups(CLUSTER, None).await?;
    let labels: Vec<(&str, &str)> = list
        .backups
        .iter()
        .map(|m| {
            (
                m.backup_name.as_str(),
                list.signature(m).map_or("-", |c| c.label()),
            )
        })
        .collect();
    assert_eq!(
        labels,
        [
            ("apps-20250601-020000", "valid"),
            ("apps-20250602-020000", "unsigned"),
            ("apps-20250603-020000", "untrusted"),
        ]
    );

    // Edited after signing.
    let manifest = gdir.join("manifest.json");
    let text = std::fs::read_to_string(&manifest)?;
    std::fs::write(&manifest, text.replace("\"platform\"", "\"attacker\""))?;
    let edited = repo.open_backup(CLUSTER, &genuine.backup_name).await?;
    assert_eq!(edited.signature().label(), "bad");
    assert!(edited.verify().await.is_err());
    std::fs::write(&manifest, text)?;

    // Rotation: trusting a second key keeps the first one's backups valid.
    let next = lifeboat_store::generate_key_pair("next")?;
    let rotated = Repository::open(&signed_config(
        dir.path(),
        &age,
        &[&ours, &next],
        Some(&next),
    ))
    .await?;
    let newer = write_backup(&rotated, "apps", "2025-06-05T02:00:00Z", 4).await?;
    for name in [&genuine.backup_name, &newer.backup_name] {
        let r = rotated.open_backup(CLUSTER, name).await?;
        assert_eq!(r.signature().label(), "valid", "{name}");
    }
    // Without any trusted key, an unsigned backup is read with a warning.
    let open = Repository::open(&file_config(dir.path(), Some(&age))).await?;
    let r = open.open_backup(CLUSTER, "apps-20250602-020000").await?;
    assert!(r.signature().warning().is_some());
    r.verify().await?;
    // A cluster that must sign cannot write unsigned backups.
    let unsigned_writer =
        Repository::open(&signed_config(dir.path(), &age, &[&ours], None)).await?;
    let err = write_backup(&unsigned_writer, "apps", "2025-06-06T02:00:00Z", 1)
        .await
        .expect_err("must sign");
    assert!(matches!(err, StoreError::SigningKeyMissing { .. }), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minisign_cli_verifies_a_manifest() -> TestResult {
    if !Command::new("minisign")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        eprintln!("skipped: the minisign CLI is not installed (Debian package `minisign`)");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let age = keys();
    let key = lifeboat_store::generate_key_pair("test")?;
    let repo = Repository::open(&signed_config(dir.path(), &age, &[&key], Some(&key))).await?;
    let m = write_backup(&repo, "apps", "2025-06-01T02:00:00Z", 5).await?;
    let bdir = backup_dir(dir.path(), &m.backup_name);
    let out = Command::new("minisign")
        .current_dir(&bdir)
        .args(["-Vm", "manifest.json", "-P", &key.public_key])
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "lifeboat backup cluster:{CLUSTER} name:{} time:",
            m.backup_name
        )),
        "{stdout}"
    );
    // Any change is caught by the CLI too.
    let manifest = bdir.join("manifest.json");
    let text = std::fs::read_to_string(&manifest)?;
    std::fs::write(&manifest, text.replacen("\"apps\"", "\"evil\"", 1))?;
    let out = Command::new("minisign")
        .current_dir(&bdir)
        .args(["-Vm", "manifest.json", "-P", &key.public_key])
        .output()?;
    assert!(!out.status.success());
    // A key minisign itself generated (`minisign -G -W`) signs for lifeboat.
    let keydir = tempfile::tempdir()?;
    let gen_out = Command::new("minisign")
        .current_dir(keydir.path())
        .args(["-G", "-W", "-p", "k.pub", "-s", "k.key"])
        .output()?;
    assert!(
        gen_out.status.success(),
        "{}",
        String::from_utf8_lossy(&gen_out.stderr)
    );
    let secret = std::fs::read_to_string(keydir.path().join("k.key"))?;
    let signer = lifeboat_store::SigningKey::parse(&secret)?;
    let public = std::fs::read_to_string(keydir.path().join("k.pub"))?;
    assert_eq!(
        lifeboat_store::parse_public_key(&public)?.0,
        signer.public_key()
    );
    Ok(())
}

// ---------------------------------------------------------------- volumes (format 2)

fn volume(ns: &str, pvc: &str, snapshot: Option<&str>) -> lifeboat_store::VolumeEntry {
    lifeboat_store::VolumeEntry {
        namespace: ns.into(),
        pvc: pvc.into(),
        pvc_uid: "uid-1".into(),
        method: "snapshotMove".into(),
        phase: if snapshot.is_some() {
            lifeboat_store::VolumePhase::Completed
        } else {
            lifeboat_store::VolumePhase::Failed
        },
        snapshot: snapshot.map(Into::into),
        bytes: 10,
        new_bytes: 10,
        files: 2,
        duration_ms: 5,
        node: Some("node-1".into()),
        file: None,
        error: snapshot.is_none().then(|| "the mover failed".to_string()),
        kept: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_results_are_files_of_a_signed_format_2_manifest() -> TestResult {
    let dir = tempfile::tempdir()?;
    let age = keys();
    let ours = lifeboat_store::generate_key_pair("test")?;
    let repo = Repository::open(&signed_config(dir.path(), &age, &[&ours], Some(&ours))).await?;
    let mut writer = repo
        .begin_backup(spec("apps", "2025-06-01T02:00:00Z"))
        .await?;
    writer.add(object(1)).await?;
    writer
        .add_volume(
            volume("shop", "data", Some("1a2b3c")),
            &serde_json::json!({"snapshot": "1a2b3c", "files": 2}),
        )
        .await?;
    writer
        .add_volume(
            volume("shop", "logs", None),
            &serde_json::json!({"error": "the mover failed"}),
        )
        .await?;
    // Written before the manifest.
    let bdir = backup_dir(dir.path(), "apps-20250601-020000");
    assert!(bdir.join("volumes/shop/data.json.zst.age").is_file());
    assert!(!bdir.join("manifest.json").exists());
    let m = writer.finish(ts("2025-06-01T02:01:00Z")).await?;
    assert_eq!(m.format_version, 2);
    assert_eq!(m.phase, Phase::PartiallyFailed, "a failed volume");
    let raw: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bdir.join("manifest.json"))?)?;
    let names: Vec<&str> = raw["files"]
        .as_array()
        .map(|a| a.iter().filter_map(|f| f["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        names,
        [
            "resources.tar.zst.age",
            "index.json.zst.age",
            "log.jsonl.zst.age",
            "volumes/shop/data.json.zst.age",
            "volumes/shop/logs.json.zst.age"
        ]
    );
    assert_eq!(raw["volumes"][0]["snapshot"], "1a2b3c");

    let reader = repo.open_backup(CLUSTER, &m.backup_name).await?;
    assert_eq!(reader.signature().label(), "valid");
    reader.verify().await?;
    assert_eq!(reader.volumes().len(), 2);
    let detail = reader.volume_detail(&reader.volumes()[0]).await?;
    assert_eq!(detail["snapshot"], "1a2b3c");
    let log = reader.log().await?;
    assert!(
        log.iter().any(|l| l.message.contains("the mover failed")),
        "{log:?}"
    );

    // A changed snapshot id breaks the signature.
    let mut text = std::fs::read_to_string(bdir.join("manifest.json"))?;
    text = text.replace("1a2b3c", "9f9f9f");
    std::fs::write(bdir.join("manifest.json"), text)?;
    let reader = repo.open_backup(CLUSTER, &m.backup_name).await?;
    assert!(reader.verify().await.is_err());

    // A damaged volume file is found by verify.
    let again = write_volume_backup(&repo, "2025-06-02T02:00:00Z").await?;
    let adir = backup_dir(dir.path(), &again.backup_name);
    let file = adir.join("volumes/shop/data.json.zst.age");
    let mut bytes = std::fs::read(&file)?;
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&file, bytes)?;
    let err = repo
        .open_backup(CLUSTER, &again.backup_name)
        .await?
        .verify()
        .await
        .expect_err("a flipped byte");
    assert!(matches!(err, StoreError::ChecksumMismatch { .. }), "{err}");
    Ok(())
}

async fn write_volume_backup(repo: &Repository, slot: &str) -> Result<Manifest, StoreError> {
    let mut writer = repo.begin_backup(spec("apps", slot)).await?;
    writer.add(object(1)).await?;
    writer
        .add_volume(
            volume("shop", "data", Some("1a2b3c")),
            &serde_json::json!({"snapshot": "1a2b3c"}),
        )
        .await?;
    writer.finish(ts(slot)).await
}

/// Movers run concurrently: the operation record lists every claim being
/// moved, each leaves the list when its volume is recorded, in whatever
/// order they finish, and the manifest lists the volumes by claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operation_record_lists_every_claim_being_moved() -> TestResult {
    let dir = tempfile::tempdir()?;
    let repo = Repository::open(&file_config(dir.path(), None)).await?;
    let slot = "2025-06-01T02:00:00Z";
    let mut writer = repo.begin_backup(spec("apps", slot)).await?;
    writer
        .track("test", ts(slot), ts("2025-06-01T06:00:00Z"), None)
        .await?;
    writer.add(object(1)).await?;
    writer.volumes_next(3).await?;
    for pvc in ["logs", "data", "cache"] {
        writer.moving("shop", pvc).await?;
    }
    writer.moving("shop", "data").await?;
    let op_path = backup_dir(dir.path(), "apps-20250601-020000").join("operation.json");
    let moving = || -> Result<serde_json::Value, Box<dyn std::error::Error + Send + Sync>> {
        let op: serde_json::Value = serde_json::from_slice(&std::fs::read(&op_path)?)?;
        Ok(op["moving"].clone())
    };
    assert_eq!(
        moving()?,
        serde_json::json!(["shop/logs", "shop/data", "shop/cache"])
    );
    writer
        .add_volume(
            volume("shop", "data", Some("2b")),
            &serde_json::json!({"snapshot": "2b"}),
        )
        .await?;
    assert_eq!(moving()?, serde_json::json!(["shop/logs", "shop/cache"]));
    for (pvc, id) in [("cache", "3c"), ("logs", "1a")] {
        writer
            .add_volume(
                volume("shop", pvc, Some(id)),
                &serde_json::json!({"snapshot": id}),
            )
            .await?;
    }
    assert_eq!(moving()?, serde_json::json!([]));
    let m = writer.finish(ts("2025-06-01T02:01:00Z")).await?;
    let claims: Vec<&str> = m.volumes.iter().map(|v| v.pvc.as_str()).collect();
    assert_eq!(claims, ["cache", "data", "logs"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_1_manifests_stay_readable() -> TestResult {
    let dir = tempfile::tempdir()?;
    let repo = Repository::open(&file_config(dir.path(), None)).await?;
    let m = write_backup(&repo, "apps", "2025-06-01T02:00:00Z", 5).await?;
    // Rewrite the manifest as format 1 wrote it: files as an object.
    let path = backup_dir(dir.path(), &m.backup_name).join("manifest.json");
    let mut raw: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    let files = raw["files"].as_array().cloned().unwrap_or_default();
    raw["formatVersion"] = 1.into();
    raw["files"] = serde_json::json!({"resources": files[0], "index": files[1], "log": files[2]});
    raw.as_object_mut().map(|o| o.remove("volumes"));
    std::fs::write(&path, serde_json::to_vec_pretty(&raw)?)?;
    let reader = repo.open_backup(CLUSTER, &m.backup_name).await?;
    assert_eq!(reader.manifest().format_version, 1);
    assert!(reader.volumes().is_empty());
    assert_eq!(reader.verify().await?.objects, 5);
    assert_eq!(reader.manifest().files, m.files);
    Ok(())
}
