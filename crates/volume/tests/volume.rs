//! Volume repositories end to end: file:// and an in-process S3 server,
//! every file kind, incremental runs, block images, the real restic.

mod common;

use std::sync::Arc;

use common::*;
use lifeboat_store::Repository;
use lifeboat_volume::{
    BackupRequest, Control, Counters, KeyCache, MemoryKeyCache, VolumeError, VolumeKind, VolumeRepo,
};

fn request(source: &std::path::Path, pvc: &str, kind: VolumeKind) -> BackupRequest {
    BackupRequest {
        source: source.to_path_buf(),
        kind,
        pvc: pvc.into(),
        pvc_uid: Some("0b5e-uid".into()),
        backup: Some("nightly-20261201-020000".into()),
        force_read: false,
    }
}

async fn backup(v: &VolumeRepo, req: BackupRequest) -> TestResult<lifeboat_volume::BackupResult> {
    Ok(v.backup(req, Arc::new(Counters::default()), Control::new())
        .await?)
}

async fn restore(
    v: &VolumeRepo,
    spec: &str,
    dest: &std::path::Path,
) -> TestResult<lifeboat_volume::RestoreResult> {
    Ok(v.restore(
        spec,
        None,
        dest,
        Arc::new(Counters::default()),
        Control::new(),
    )
    .await?)
}

/// A claim with nothing in it yet (a fresh database volume) restores as an
/// empty directory with the root's mode, not as "no snapshot".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_volume_round_trips() -> TestResult {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch()?;
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src)?;
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o750))?;
    let k = keys();
    let location = Repository::open(&file_config(&dir.path().join("store"), &k, false)).await?;
    let cache = MemoryKeyCache::new();
    let v = VolumeRepo::open_or_create(&location, "local", "prod", "shop", &cache).await?;
    let first = backup(&v, request(&src, "data", VolumeKind::Filesystem)).await?;
    assert_eq!(first.files, 0, "{first:?}");
    let out = dir.path().join("restored");
    let r = restore(&v, &first.snapshot, &out).await?;
    assert_eq!((r.files, r.bytes), (0, 0), "{r:?}");
    assert!(out.is_dir() && std::fs::read_dir(&out)?.next().is_none());
    assert_eq!(
        std::fs::metadata(&out)?.permissions().mode() & 0o7777,
        0o750
    );
    // Given as a symlink to it, the same.
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&src, &link)?;
    let second = backup(&v, request(&link, "data", VolumeKind::Filesystem)).await?;
    let out2 = dir.path().join("restored2");
    restore(&v, &second.snapshot, &out2).await?;
    assert!(out2.is_dir() && std::fs::read_dir(&out2)?.next().is_none());
    // A path inside it is still not there.
    let e = restore(
        &v,
        &format!("{}:/sub", first.snapshot),
        &dir.path().join("x"),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("no snapshot"), "{e}");
    Ok(())
}

/// The big case: every file kind, 5,000 small files and a 256 MiB sparse
/// file on a file:// location; lifeboat restore, an incremental run after
/// changing 1% of the files, and restic 0.14 reading it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_file_kind_round_trips_incrementally_and_restic_reads_it() -> TestResult {
    let dir = scratch()?;
    let src = dir.path().join("src");
    let info = make_tree(&src, 5_000, 256 << 20)?;
    let k = keys();
    let store_dir = dir.path().join("store");
    let location = Repository::open(&file_config(&store_dir, &k, false)).await?;
    let cache = MemoryKeyCache::new();
    let v = VolumeRepo::open_or_create(&location, "local", "prod", "shop", &cache).await?;
    let config = v.config().await?;
    assert_eq!(config.version, 2, "repository format v2 (compression)");
    // The key file stretches a random 32-byte password with scrypt
    // N = 2^12, r = 8, p = 1 (vendor/rustic_core/LIFEBOAT-PATCH.md); restic
    // reads the parameters from the file (checked below).
    let keys_dir = store_dir.join("volumes/prod/shop/keys");
    let key_files: Vec<_> = std::fs::read_dir(&keys_dir)?.collect::<Result<_, _>>()?;
    assert_eq!(key_files.len(), 1);
    let key: serde_json::Value = serde_json::from_slice(&std::fs::read(key_files[0].path())?)?;
    assert_eq!(
        (
            key["kdf"].as_str(),
            key["N"].as_u64(),
            key["r"].as_u64(),
            key["p"].as_u64()
        ),
        (Some("scrypt"), Some(4096), Some(8), Some(1)),
        "{key}"
    );

    let first = backup(&v, request(&src, "data", VolumeKind::Filesystem)).await?;
    assert!(first.warnings.is_empty(), "{:?}", first.warnings);
    assert_eq!(first.parent, None);
    assert_eq!(first.path, "/shop/data");
    assert!(first.files >= 5_000 + 8, "{first:?}");

    let out = dir.path().join("restored");
    let r = restore(&v, &first.snapshot[..8], &out).await?;
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert_same_tree(&src, &out, &Options::all())?;
    // The volume root's mode comes back too.
    assert_eq!(
        std::os::unix::fs::MetadataExt::mode(&std::fs::metadata(&out)?) & 0o7777,
        std::os::unix::fs::MetadataExt::mode(&std::fs::metadata(&src)?) & 0o7777
    );
    // Hard links are links again, and the sparse file is sparse.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(out.join("links/a"))?.ino(),
        std::fs::metadata(out.join("links/b"))?.ino()
    );
    let sparse = out.join("sparse.img");
    assert!(info.sparse_file.is_some());
    assert!(
        allocated(&sparse)? < 16 << 20,
        "the 256 MiB sparse file restored with {} bytes allocated",
        allocated(&sparse)?
    );

    // One path of a volume is enough.
    let one = dir.path().join("one");
    restore(&v, &format!("{}:/links", first.snapshot), &one).await?;
    assert_eq!(std::fs::read(one.join("a"))?, b"shared content\n");

    // Change 1% of the files (mtime and content; a clone would also change
    // inodes and ctimes, which must not matter).
    for path in info.small_files.iter().step_by(100) {
        let mut content = std::fs::read(path)?;
        content[0] ^= 0xff;
        std::fs::write(path, content)?;
    }
    let counters = Arc::new(Counters::default());
    let second = v
        .backup(
            request(&src, "data", VolumeKind::Filesystem),
            counters.clone(),
            Control::new(),
        )
        .await?;
    assert_eq!(second.parent.as_deref(), Some(first.snapshot.as_str()));
    // An incremental run does not walk the volume twice: its progress
    // totals are the parent's.
    let progress = counters.sample();
    assert_eq!(
        (progress.files_total, progress.bytes_total),
        (first.files, first.total_bytes),
        "{progress:?}"
    );
    assert_eq!(second.files_changed, 50, "{second:?}");
    assert!(
        second.new_bytes < 1 << 20,
        "only the changed files are new: {} bytes",
        second.new_bytes
    );
    let out2 = dir.path().join("restored2");
    restore(&v, "latest", &out2).await?;
    assert_same_tree(&src, &out2, &Options::all())?;

    let snaps = v.snapshots(Some("data")).await?;
    assert_eq!(snaps.len(), 2);
    assert_eq!(snaps[1].host, "lifeboat-prod");
    assert_eq!(snaps[1].paths, vec!["/shop/data".to_string()]);
    assert_eq!(snaps[1].tag("backup"), Some("nightly-20261201-020000"));
    assert_eq!(snaps[1].tag("pvc-uid"), Some("0b5e-uid"));
    assert!(v.check(true).await?.is_empty());

    // restic 0.14 with the password from `age -d lifeboat-key.age`.
    let Some(_) = restic() else {
        eprintln!("SKIPPED the restic part: `restic` is not installed (Debian package restic)");
        return Ok(());
    };
    let repo_path = store_dir.join("volumes/prod/shop");
    let password = age_decrypt(&repo_path.join("lifeboat-key.age"), &k)?;
    if !password.is_empty() {
        assert_eq!(
            password,
            v.password(),
            "age -d of lifeboat-key.age gives the password"
        );
    }
    let password = v.password().to_string();
    let repo = repo_path.display().to_string();
    let listed = run_restic(&repo, &password, &[], &["snapshots", "--json"])?;
    assert!(
        listed.contains(&second.snapshot) && listed.contains("lifeboat-prod"),
        "{listed}"
    );
    run_restic(&repo, &password, &[], &["check", "--read-data"])?;
    let by_restic = dir.path().join("by-restic");
    run_restic(
        &repo,
        &password,
        &[],
        &[
            "restore",
            &second.snapshot,
            "--target",
            &by_restic.display().to_string(),
        ],
    )?;
    // restic restores sparse files fully allocated and the volume root's
    // directory without its recorded mode: compare by content below it.
    assert_same_tree(
        &src,
        &by_restic.join("shop/data"),
        &Options {
            owners: true,
            mtimes: true,
            xattrs: true,
            specials: true,
            dir_mtimes: false,
        },
    )?;
    Ok(())
}

/// `age -d -i identity lifeboat-key.age` with the age CLI.
fn age_decrypt(path: &std::path::Path, k: &Keys) -> TestResult<String> {
    let dir = scratch()?;
    let id = dir.path().join("id.txt");
    std::fs::write(&id, format!("{}\n", k.identity))?;
    let out = std::process::Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&id)
        .arg(path)
        .output();
    match out {
        Ok(o) if o.status.success() => Ok(String::from_utf8(o.stdout)?.trim().to_string()),
        Ok(o) => Err(format!("age -d failed: {}", String::from_utf8_lossy(&o.stderr)).into()),
        Err(e) => {
            eprintln!("SKIPPED the age check: the age CLI is not installed ({e})");
            Ok(String::new())
        }
    }
}

/// The same on S3 (in-process s3s-fs), smaller, with restic reading the
/// repository over S3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_round_trip_and_restic_over_s3() -> TestResult {
    let dir = scratch()?;
    let src = dir.path().join("src");
    make_tree(&src, 300, 8 << 20)?;
    let server = start_s3(&dir.path().join("s3")).await?;
    let k = keys();
    let location = Repository::open(&s3_config(&server, &k, false)).await?;
    let cache = MemoryKeyCache::new();
    let v = VolumeRepo::open_or_create(&location, "s3", "prod", "shop", &cache).await?;
    let first = backup(&v, request(&src, "data", VolumeKind::Filesystem)).await?;
    let out = dir.path().join("out");
    restore(&v, &first.snapshot, &out).await?;
    assert_same_tree(&src, &out, &Options::all())?;
    assert!(v.check(true).await?.is_empty());

    // A second cluster process without the cache but with an identity reads
    // the key from lifeboat-key.age.
    let reader = Repository::open(&s3_config(&server, &k, true)).await?;
    let v2 = VolumeRepo::open_existing(&reader, "s3", "prod", "shop", None, None).await?;
    assert_eq!(v2.password(), v.password());

    let Some(_) = restic() else {
        eprintln!("SKIPPED the restic part: `restic` is not installed");
        return Ok(());
    };
    let repo = format!("s3:{}/bucket/lifeboat/volumes/prod/shop", server.endpoint());
    let env = [
        ("AWS_ACCESS_KEY_ID", "AKTEST"),
        ("AWS_SECRET_ACCESS_KEY", "SECRETTEST"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ];
    let pw = v.password().to_string();
    let repo2 = repo.clone();
    let target = dir.path().join("by-restic");
    let t = target.display().to_string();
    let snap = first.snapshot.clone();
    // restic talks to the server this runtime serves: run it off the runtime.
    tokio::task::spawn_blocking(move || -> TestResult {
        let listed = run_restic(&repo2, &pw, &env, &["snapshots", "--json"])?;
        assert!(listed.contains(&snap), "{listed}");
        run_restic(&repo2, &pw, &env, &["check", "--read-data"])?;
        run_restic(&repo2, &pw, &env, &["restore", &snap, "--target", &t])?;
        Ok(())
    })
    .await
    .map_err(|e| e.to_string())??;
    assert_same_tree(
        &src,
        &target.join("shop/data"),
        &Options {
            owners: true,
            mtimes: true,
            xattrs: true,
            specials: true,
            dir_mtimes: false,
        },
    )?;
    Ok(())
}

/// A block image keeps its real size; lifeboat and restic 0.14 restore it
/// byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_image_round_trip_and_restic_restores_it_byte_identical() -> TestResult {
    let dir = scratch()?;
    let image = dir.path().join("disk.img");
    let size: u64 = 48 << 20;
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::File::create(&image)?;
        f.set_len(size)?;
        f.write_all(&bytes(7, 3 << 20))?;
        f.seek(SeekFrom::Start(30 << 20))?;
        f.write_all(&bytes(8, 1 << 20))?;
        f.seek(SeekFrom::Start(size - 4096))?;
        f.write_all(&bytes(9, 4096))?;
    }
    let k = keys();
    let store_dir = dir.path().join("store");
    let location = Repository::open(&file_config(&store_dir, &k, false)).await?;
    let cache = MemoryKeyCache::new();
    let v = VolumeRepo::open_or_create(&location, "local", "prod", "db", &cache).await?;
    let r = backup(&v, request(&image, "disk", VolumeKind::Block)).await?;
    assert_eq!(r.total_bytes, size, "{r:?}");
    let snaps = v.snapshots(None).await?;
    assert_eq!(snaps[0].kind, Some(VolumeKind::Block));

    let out = dir.path().join("restored.img");
    restore(&v, &r.snapshot, &out).await?;
    assert_eq!(std::fs::metadata(&out)?.len(), size);
    assert!(
        std::fs::read(&out)? == std::fs::read(&image)?,
        "lifeboat restore differs"
    );
    assert!(allocated(&out)? < 8 << 20, "restored image is sparse");

    let Some(_) = restic() else {
        eprintln!("SKIPPED the restic part: `restic` is not installed");
        return Ok(());
    };
    let repo = store_dir.join("volumes/prod/db").display().to_string();
    run_restic(&repo, v.password(), &[], &["check", "--read-data"])?;
    let target = dir.path().join("by-restic");
    run_restic(
        &repo,
        v.password(),
        &[],
        &[
            "restore",
            &r.snapshot,
            "--target",
            &target.display().to_string(),
        ],
    )?;
    let restored = target.join("db/disk");
    assert_eq!(
        std::fs::metadata(&restored)?.len(),
        size,
        "restic restored the real size"
    );
    assert!(
        std::fs::read(&restored)? == std::fs::read(&image)?,
        "restic restore differs"
    );
    Ok(())
}

/// A loop device as the source and as the restore target (root only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loop_device_round_trip() -> TestResult {
    if !is_root() {
        eprintln!("SKIPPED: loop devices need root");
        return Ok(());
    }
    let dir = scratch()?;
    let size: u64 = 16 << 20;
    let mk = |name: &str, seed: u64| -> TestResult<std::path::PathBuf> {
        let p = dir.path().join(name);
        let f = std::fs::File::create(&p)?;
        f.set_len(size)?;
        std::os::unix::fs::FileExt::write_all_at(&f, &bytes(seed, 2 << 20), 1 << 20)?;
        Ok(p)
    };
    let src_img = mk("src.img", 21)?;
    let dst_img = mk("dst.img", 22)?;
    let attach = |img: &std::path::Path| -> Option<String> {
        let out = std::process::Command::new("losetup")
            .args(["--find", "--show"])
            .arg(img)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let Some(src_dev) = attach(&src_img) else {
        eprintln!(
            "SKIPPED: losetup cannot attach a loop device here (no /dev/loop-control or not permitted)"
        );
        return Ok(());
    };
    let Some(dst_dev) = attach(&dst_img) else {
        let _ = std::process::Command::new("losetup")
            .args(["-d", &src_dev])
            .status();
        eprintln!("SKIPPED: losetup could attach only one loop device");
        return Ok(());
    };
    let result = async {
        let k = keys();
        let location = Repository::open(&file_config(&dir.path().join("store"), &k, false)).await?;
        let cache = MemoryKeyCache::new();
        let v = VolumeRepo::open_or_create(&location, "local", "prod", "db", &cache).await?;
        let r = backup(
            &v,
            request(std::path::Path::new(&src_dev), "disk", VolumeKind::Block),
        )
        .await?;
        assert_eq!(
            r.total_bytes, size,
            "the device's size, not its metadata's 0"
        );
        restore(&v, &r.snapshot, std::path::Path::new(&dst_dev)).await?;
        let a = std::fs::read(&src_dev)?;
        let b = std::fs::read(&dst_dev)?;
        assert!(a == b, "the restored device differs");
        TestResult::Ok(())
    }
    .await;
    let _ = std::process::Command::new("losetup")
        .args(["-d", &src_dev])
        .status();
    let _ = std::process::Command::new("losetup")
        .args(["-d", &dst_dev])
        .status();
    result
}

/// No recipients, no volume data.
#[tokio::test]
async fn a_location_without_recipients_cannot_hold_volume_data() -> TestResult {
    let dir = scratch()?;
    let config = lifeboat_store::LocationConfig {
        url: format!("file://{}", dir.path().display()),
        ..Default::default()
    };
    let location = Repository::open(&config).await?;
    let err = VolumeRepo::open_or_create(&location, "l", "prod", "shop", &MemoryKeyCache::new())
        .await
        .err()
        .ok_or("created a repository without recipients")?;
    assert!(matches!(err, VolumeError::NoRecipients { .. }), "{err}");
    assert!(
        err.to_string().contains("spec.encryption.recipients"),
        "{err}"
    );
    Ok(())
}

/// Key lifecycle: a lost cache needs an identity (and says so), a wrong
/// identity is named, re-sealing follows the recipients, a new generation
/// gets a new key while the old one stays readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_cache_identities_reseal_and_generations() -> TestResult {
    let dir = scratch()?;
    let src = dir.path().join("src");
    make_tree(&src, 20, 0)?;
    let k = keys();
    let store_dir = dir.path().join("store");
    let location = Repository::open(&file_config(&store_dir, &k, false)).await?;
    let cache = MemoryKeyCache::new();
    let v = VolumeRepo::open_or_create(&location, "local", "prod", "shop", &cache).await?;
    let first = backup(&v, request(&src, "data", VolumeKind::Filesystem)).await?;

    // The cache is lost and no identity is at hand.
    let err =
        VolumeRepo::open_or_create(&location, "local", "prod", "shop", &MemoryKeyCache::new())
            .await
            .err()
            .ok_or("opened without a key")?;
    assert!(matches!(err, VolumeError::KeyNotCached { .. }), "{err}");
    assert!(
        err.to_string().contains("lifeboat volumes key --identity"),
        "{err}"
    );

    // A wrong identity.
    let other = keys();
    let wrong = lifeboat_store::LocationConfig {
        identities: vec![other.identity.clone()],
        ..file_config(&store_dir, &k, false)
    };
    let wrong = Repository::open(&wrong).await?;
    let err = VolumeRepo::open_existing(&wrong, "local", "prod", "shop", None, None)
        .await
        .err()
        .ok_or("opened with a wrong identity")?;
    assert!(matches!(err, VolumeError::Unseal { .. }), "{err}");

    // The right identity re-seeds a fresh cache.
    let holder = Repository::open(&file_config(&store_dir, &k, true)).await?;
    let fresh = MemoryKeyCache::new();
    let v2 = VolumeRepo::open_or_create(&holder, "local", "prod", "shop", &fresh).await?;
    assert_eq!(v2.password(), v.password());
    assert_eq!(
        fresh.get(&v2.reference().cache_key()).await?.as_deref(),
        Some(v.password())
    );

    // New recipients: the next writer holding the key re-seals.
    let k2 = keys();
    let rotated_cfg = lifeboat_store::LocationConfig {
        recipients: vec![k2.recipient.clone()],
        identities: vec![k2.identity.clone()],
        ..file_config(&store_dir, &k, false)
    };
    let rotated = Repository::open(&rotated_cfg).await?;
    VolumeRepo::open_or_create(&rotated, "local", "prod", "shop", &cache).await?;
    let v3 = VolumeRepo::open_existing(&rotated, "local", "prod", "shop", None, None).await?;
    assert_eq!(
        v3.password(),
        v.password(),
        "re-sealed to the new recipient"
    );

    // After a compromise: a new generation with a new key and path.
    let g2 = VolumeRepo::new_generation(&rotated, "local", "prod", "shop", &cache).await?;
    assert_eq!(g2.reference().generation, 2);
    assert_ne!(g2.password(), v.password());
    assert!(g2.url().ends_with("volumes/prod/shop.g2"), "{}", g2.url());
    backup(&g2, request(&src, "data", VolumeKind::Filesystem)).await?;
    let current = VolumeRepo::open_or_create(&rotated, "local", "prod", "shop", &cache).await?;
    assert_eq!(
        current.reference().generation,
        2,
        "writers use the newest generation"
    );
    let old = VolumeRepo::open_existing(&rotated, "local", "prod", "shop", Some(1), None).await?;
    let snaps = old.snapshots(None).await?;
    assert_eq!(snaps[0].id, first.snapshot, "old snapshots stay readable");
    assert_eq!(
        first.snapshot.len(),
        64,
        "ids are whole: {}",
        first.snapshot
    );
    // A restore of an old backup finds the generation holding its snapshot.
    let holding =
        VolumeRepo::open_holding(&rotated, "local", "prod", "shop", &first.snapshot, None).await?;
    assert_eq!(holding.reference().generation, 1);
    let gone = "0".repeat(64);
    let err = VolumeRepo::open_holding(&rotated, "local", "prod", "shop", &gone, None)
        .await
        .expect_err("no generation holds it");
    assert!(err.to_string().contains("forgotten or deleted"), "{err}");
    Ok(())
}

/// Two first writers at once: one initialises, both end with one
/// repository and one key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_first_writers_share_one_repository() -> TestResult {
    let dir = scratch()?;
    let k = keys();
    let location = Repository::open(&file_config(&dir.path().join("store"), &k, true)).await?;
    let cache = Arc::new(MemoryKeyCache::new());
    let (a, b) = tokio::join!(
        VolumeRepo::open_or_create(&location, "l", "prod", "shop", cache.as_ref()),
        VolumeRepo::open_or_create(&location, "l", "prod", "shop", cache.as_ref()),
    );
    let (a, b) = (a?, b?);
    assert_eq!(a.password(), b.password());
    let keys_dir = dir.path().join("store/volumes/prod/shop/keys");
    assert_eq!(
        std::fs::read_dir(keys_dir)?.count(),
        1,
        "one restic key: initialised once"
    );
    Ok(())
}
