//! `lifeboat volumes …` and `lifeboat mover …` end to end, with restic and
//! age reading what they wrote.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command as StdCommand, Stdio};

use super::{lifeboat, run};

struct Identity {
    file: std::path::PathBuf,
    recipient: String,
}

/// An age identity from `age-keygen`, or None (the test then skips).
fn identity(dir: &Path) -> Option<Identity> {
    let file = dir.join("id.txt");
    let ok = StdCommand::new("age-keygen")
        .arg("-o")
        .arg(&file)
        .stderr(Stdio::null())
        .status()
        .ok()?
        .success();
    if !ok {
        return None;
    }
    let text = std::fs::read_to_string(&file).ok()?;
    let recipient = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))?
        .to_string();
    Some(Identity { file, recipient })
}

fn tree(root: &Path) {
    std::fs::create_dir_all(root.join("sub/empty")).unwrap();
    std::fs::write(root.join("a.txt"), "alpha\n").unwrap();
    std::fs::write(root.join("sub/b.bin"), vec![7u8; 200_000]).unwrap();
    std::os::unix::fs::symlink("a.txt", root.join("link")).unwrap();
}

fn repo_args<'a>(storage: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "--storage",
        storage,
        "--cluster",
        "prod",
        "--namespace",
        "shop",
    ];
    v.extend_from_slice(extra);
    v
}

#[test]
fn volumes_backup_snapshots_restore_key_check_and_restic_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let Some(id) = identity(dir.path()) else {
        eprintln!("SKIPPED: age-keygen is not installed");
        return;
    };
    let src = dir.path().join("src");
    tree(&src);
    let storage = format!("file://{}", dir.path().join("store").display());
    let cache = dir.path().join("cache");
    let src_s = src.display().to_string();
    let cache_s = cache.display().to_string();
    let id_s = id.file.display().to_string();

    let mut args = vec!["volumes", "backup", src_s.as_str(), "--pvc", "data"];
    args.extend(repo_args(
        &storage,
        &["--recipient", &id.recipient, "--key-cache", &cache_s],
    ));
    let (code, out, err) = run(&args, None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("snapshot ") && out.contains("/shop/data"),
        "{out}"
    );

    // The second backup finds the key in the cache and the parent.
    let (code, out, err) = run(&args, None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("parent "), "{out}");

    let mut args = vec!["volumes", "snapshots", "--format", "json"];
    args.extend(repo_args(&storage, &["--identity", &id_s]));
    let (code, out, err) = run(&args, None);
    assert_eq!(code, 0, "{err}");
    let snaps: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(snaps.as_array().map(Vec::len), Some(2), "{out}");
    assert_eq!(snaps[1]["host"], "lifeboat-prod");

    let dest = dir.path().join("out");
    let dest_s = dest.display().to_string();
    let mut args = vec![
        "volumes",
        "restore",
        "latest",
        dest_s.as_str(),
        "--pvc",
        "data",
    ];
    args.extend(repo_args(&storage, &["--identity", &id_s]));
    let (code, out, err) = run(&args, None);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        std::fs::read(dest.join("sub/b.bin")).unwrap(),
        vec![7u8; 200_000]
    );
    assert!(dest.join("sub/empty").is_dir());
    assert_eq!(
        std::fs::read_link(dest.join("link")).unwrap(),
        Path::new("a.txt")
    );

    // Without an identity and without the cache: the error names the fix.
    let mut args = vec!["volumes", "snapshots"];
    args.extend(repo_args(&storage, &[]));
    let (code, _, err) = run(&args, None);
    assert_eq!(code, 2);
    assert!(err.contains("lifeboat volumes key --identity"), "{err}");

    let mut args = vec!["volumes", "key"];
    args.extend(repo_args(&storage, &["--identity", &id_s]));
    let (code, out, err) = run(&args, None);
    assert_eq!(code, 0, "{err}");
    let password = out.lines().last().unwrap().to_string();
    assert!(out.starts_with("restic -r "), "{out}");
    assert_eq!(password.len(), 64);

    let mut args = vec!["volumes", "check", "--read-data"];
    args.extend(repo_args(&storage, &["--identity", &id_s]));
    let (code, out, err) = run(&args, None);
    assert_eq!(code, 0, "{out}{err}");

    // By hand: age -d of lifeboat-key.age, then restic.
    let key = dir.path().join("store/volumes/prod/shop/lifeboat-key.age");
    let age = StdCommand::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&id.file)
        .arg(&key)
        .output();
    if let Ok(age) = age {
        assert!(age.status.success());
        assert_eq!(String::from_utf8_lossy(&age.stdout).trim(), password);
    }
    let pw = dir.path().join("pw");
    std::fs::write(&pw, &password).unwrap();
    let restic = StdCommand::new("restic")
        .arg("-r")
        .arg(dir.path().join("store/volumes/prod/shop"))
        .arg("--password-file")
        .arg(&pw)
        .args(["--no-cache", "restore", "latest", "--target"])
        .arg(dir.path().join("by-restic"))
        .output();
    match restic {
        Ok(o) if o.status.success() => {
            let back = std::fs::read(dir.path().join("by-restic/shop/data/a.txt")).unwrap();
            assert_eq!(back, b"alpha\n");
        }
        Ok(o) => panic!(
            "restic restore failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => eprintln!("SKIPPED the restic part: {e}"),
    }
}

fn work_file(
    dir: &Path,
    recipient: &str,
    path: &Path,
    snapshot: Option<&str>,
) -> std::path::PathBuf {
    let work = serde_json::json!({
        "location": {"url": format!("file://{}", dir.join("store").display()), "recipients": [recipient]},
        "locationName": "primary",
        "cluster": "prod",
        "namespace": "shop",
        "pvc": "data",
        "pvcUid": "uid-1",
        "backup": "nightly-20261201-020000",
        "path": path,
        "snapshot": snapshot,
        "keyCacheDir": dir.join("keys"),
    });
    let file = dir.join(format!("work-{}.json", snapshot.unwrap_or("backup")));
    std::fs::write(&file, work.to_string()).unwrap();
    file
}

#[test]
fn mover_reports_progress_lines_and_a_termination_message() {
    let dir = tempfile::tempdir().unwrap();
    let Some(id) = identity(dir.path()) else {
        eprintln!("SKIPPED: age-keygen is not installed");
        return;
    };
    let src = dir.path().join("src");
    tree(&src);
    let work = work_file(dir.path(), &id.recipient, &src, None);
    let term = dir.path().join("termination-log");
    let out = lifeboat()
        .args(["mover", "backup", "--progress-interval", "0.05", "--work"])
        .arg(&work)
        .arg("--termination-log")
        .arg(&term)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    let last = lines.last().unwrap();
    assert_eq!(last["event"], "done");
    assert_eq!(last["filesTotal"], 2);
    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&term).unwrap()).unwrap();
    assert_eq!(result["phase"], "Succeeded");
    assert_eq!(result["path"], "/shop/data");
    let snapshot = result["snapshot"].as_str().unwrap().to_string();

    let dest = dir.path().join("restored");
    let work = work_file(dir.path(), &id.recipient, &dest, Some(&snapshot));
    let out = lifeboat()
        .args(["mover", "restore", "--work"])
        .arg(&work)
        .arg("--termination-log")
        .arg(&term)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(dest.join("a.txt")).unwrap(), b"alpha\n");

    // A failure: exit 1 and the reason in the termination message.
    let work = work_file(dir.path(), &id.recipient, &dir.path().join("nope"), None);
    let out = lifeboat()
        .args(["mover", "backup", "--work"])
        .arg(&work)
        .arg("--termination-log")
        .arg(&term)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&term).unwrap()).unwrap();
    assert_eq!(result["phase"], "Failed");
    assert!(
        result["error"].as_str().unwrap().contains("nope"),
        "{result}"
    );
}

#[test]
fn sigterm_stops_the_mover_without_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let Some(id) = identity(dir.path()) else {
        eprintln!("SKIPPED: age-keygen is not installed");
        return;
    };
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    // Incompressible data, large enough to be mid-upload when TERM arrives.
    let mut x: u64 = 0x1234_5678_9abc_def1;
    for i in 0..48 {
        let data: Vec<u8> = (0..(2 << 20))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(src.join(format!("f{i}")), data).unwrap();
    }
    let work = work_file(dir.path(), &id.recipient, &src, None);
    let term = dir.path().join("termination-log");
    let bin = assert_cmd::cargo::cargo_bin("lifeboat");
    let mut child = StdCommand::new(bin)
        .args(["mover", "backup", "--progress-interval", "0.05", "--work"])
        .arg(&work)
        .arg("--termination-log")
        .arg(&term)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    for line in BufReader::new(stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        if v["bytesDone"].as_u64().unwrap_or(0) > 0 || v["event"] == "done" {
            break;
        }
    }
    let _ = StdCommand::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&term).unwrap()).unwrap();
    if result["phase"] == "Succeeded" {
        eprintln!("the backup finished before SIGTERM arrived; nothing to check");
        return;
    }
    assert_eq!(status.code(), Some(1));
    assert!(
        result["error"].as_str().unwrap().contains("cancelled"),
        "{result}"
    );
    let snaps = dir.path().join("store/volumes/prod/shop/snapshots");
    let count = std::fs::read_dir(&snaps).map(|d| d.count()).unwrap_or(0);
    assert_eq!(count, 0, "no snapshot after SIGTERM");
}
