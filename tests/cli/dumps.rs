//! Dump hooks end to end: `lifeboat backup` runs the policy's dump hook in
//! the app Deployment's pod, whose stdout (played by the sandbox's exec
//! handler, streamed in chunks) becomes an encrypted artifact of the
//! backup; `lifeboat restore --hooks` streams it back into a restore
//! hook's stdin (the handler reads it to the end of file the v5 protocol's
//! close frame gives), byte-identical.

use std::path::Path;
use std::sync::{Arc, Mutex};

use lifeboat_sandbox::{ExecOutput, ExecRequest, StdinEvent};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::volume_data::{NS, World};

/// Size of the dump: more than one 8 MiB multipart part once stored
/// (the bytes are incompressible).
const DUMP_BYTES: usize = 10 * 1024 * 1024 + 12_345;

/// `n` bytes of xorshift output from `seed`, in chunks of at most 256 KiB.
fn dump_chunks(seed: u64, n: usize) -> impl Iterator<Item = Vec<u8>> {
    let mut noise = lifeboat_testkit::Noise::new(seed | 1);
    let mut left = n;
    std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let len = left.min(256 * 1024);
        left -= len;
        Some(noise.bytes(len))
    })
}

fn dump_sha(seed: u64, n: usize) -> String {
    let mut h = Sha256::new();
    for c in dump_chunks(seed, n) {
        h.update(&c);
    }
    hex::encode(h.finalize())
}

/// What a `mysql` process read from its stdin: bytes, SHA-256, whether
/// it saw the end of file.
#[derive(Default)]
struct Read {
    bytes: u64,
    hasher: Sha256,
    closed: bool,
}

type Loaded = Arc<Mutex<Vec<(String, u64, String, bool)>>>;

/// Plays the containers: `mysqldump` writes the dump (or fails after part
/// of it with `fail`), `mysql` reads its stdin to the end.
fn containers(w: &World, fail: Arc<Mutex<Option<i32>>>) -> Loaded {
    let loaded: Loaded = Arc::default();
    let l = loaded.clone();
    w.sb.on_exec(move |r: &ExecRequest| match r.command[0].as_str() {
        "mysqldump" => match *fail.lock().unwrap() {
            None => ExecOutput::ok("").streaming(|| Box::new(dump_chunks(7, DUMP_BYTES))),
            Some(code) => {
                ExecOutput::exit(code, "", "mysqldump: Got error: 2013: Lost connection\n")
                    .streaming(|| Box::new(dump_chunks(7, 300_000)))
            }
        },
        "mysql" => {
            let read = Arc::new(Mutex::new(Read::default()));
            let (l, pod) = (l.clone(), r.pod.clone());
            ExecOutput::ok("").reading_stdin(move |e| {
                let mut st = read.lock().unwrap();
                match e {
                    StdinEvent::Data(d) => {
                        st.bytes += d.len() as u64;
                        st.hasher.update(d);
                    }
                    StdinEvent::Closed => {
                        st.closed = true;
                        let sha = hex::encode(std::mem::take(&mut st.hasher).finalize());
                        l.lock().unwrap().push((pod.clone(), st.bytes, sha, true));
                    }
                }
            })
        }
        _ => ExecOutput::ok(""),
    });
    loaded
}

fn dump_hook(on_error: &str) -> String {
    format!(
        "    method: snapshot\n  hooks:\n    dumps:\n      - name: mysql\n        owner: Deployment/mysql\n        \
         container: mysql\n        command: [mysqldump, --single-transaction, --all-databases]\n        \
         onError: {on_error}\n"
    )
}

fn backup(w: &World) -> (i32, String, String, String) {
    let (code, out, err) = w.lifeboat(&["backup", "--policy", "db"]);
    let name = out
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    (code, out, err, name)
}

fn artifacts_dir(w: &World, backup: &str) -> std::path::PathBuf {
    w.dir
        .path()
        .join("storage/clusters/prod/backups")
        .join(backup)
        .join("artifacts")
}

#[test]
fn a_dump_artifact_is_stored_encrypted_and_streams_back_into_a_restore_hook_byte_identical() {
    let w = World::new(Path::new(env!("CARGO_BIN_EXE_lifeboat")));
    let loaded = containers(&w, Arc::default());
    w.set_volumes(&dump_hook("failVolume"));
    let (code, out, err, name) = backup(&w);
    assert_eq!(code, 0, "{out}{err}");
    let manifest = w.manifest(&name);
    assert_eq!(manifest["phase"], "Completed", "{manifest:#}");
    let artifacts = manifest["artifacts"].as_array().expect("artifacts");
    assert_eq!(artifacts.len(), 1, "{manifest:#}");
    let a = &artifacts[0];
    let file = "artifacts/mysql-persistent/deployment-mysql/mysql.zst.age";
    assert_eq!(a["file"], file);
    assert_eq!(a["namespace"], NS);
    assert_eq!(a["owner"], "deployment-mysql");
    assert_eq!(a["hook"], "mysql");
    assert_eq!(a["container"], "mysql");
    assert!(a["pod"].as_str().unwrap().starts_with("mysql-"), "{a}");
    assert_eq!(a["bytes"], DUMP_BYTES as u64);
    let raw = dump_sha(7, DUMP_BYTES);
    assert_eq!(a["rawSha256"], raw.as_str());
    // The stored object is what the manifest says, and it is not in the
    // archive: its own file, decryptable by hand.
    let stored = std::fs::read(
        w.dir
            .path()
            .join("storage/clusters/prod/backups")
            .join(&name)
            .join(file),
    )
    .unwrap();
    assert_eq!(a["storedBytes"], stored.len() as u64);
    assert_eq!(a["sha256"], hex::encode(Sha256::digest(&stored)).as_str());
    assert!(stored.starts_with(b"age-encryption.org/v1"));
    match age_zstd_decode(&w, &stored) {
        Some(plain) => assert_eq!(hex::encode(Sha256::digest(&plain)), raw),
        None => eprintln!("skipped the by-hand decode: the age CLI is not installed"),
    }
    assert_eq!(manifest["hooks"]["ran"], 1, "{manifest:#}");
    assert_eq!(manifest["hooks"]["failed"], 0, "{manifest:#}");

    // `backups show` lists it; `backups verify` checks its hashes.
    let repo = w.path("repo");
    let (code, out, err) = crate::run(&["backups", "show", &name, "--repo", &repo], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(file) && out.contains(&raw), "{out}");
    let identity = w.path("identity.txt");
    let (code, out, err) = crate::run(
        &[
            "backups",
            "verify",
            &name,
            "--repo",
            &repo,
            "--identity",
            &identity,
            "--format",
            "json",
        ],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let findings = if v["findings"].is_array() {
        &v["findings"]
    } else {
        &v["backups"][0]["findings"]
    };
    let checked: Vec<&Value> = findings
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["subject"] == file)
        .collect();
    assert!(
        checked
            .iter()
            .any(|f| f["check"] == "decode" && f["status"] == "ok"),
        "{out}"
    );

    // The namespace is lost; the restore streams the dump into `mysql` in
    // the new pod of the restored Deployment.
    w.delete_namespace();
    std::fs::write(
        w.dir.path().join("hooks.yaml"),
        "pods:\n  - name: load\n    owner: Deployment/mysql\n    container: mysql\n    \
         command: [mysql, --user=root]\n    stdinFrom: {artifact: mysql}\n    execTimeout: 2m\n    \
         onError: fail\n",
    )
    .unwrap();
    let (code, out, err) = w.lifeboat(&[
        "restore",
        "--from",
        &name,
        "--identity",
        &w.path("identity.txt"),
        "--hooks",
        &w.path("hooks.yaml"),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let got = loaded.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    let (pod, bytes, sha, closed) = &got[0];
    assert!(closed, "stdin was closed");
    assert_eq!(*bytes, DUMP_BYTES as u64);
    assert_eq!(sha, &raw, "the restored stdin is the dump, byte for byte");
    let record = restore_record(&w);
    let load: Vec<&Value> = record["hooks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|h| h["hook"] == "load")
        .collect();
    assert_eq!(load.len(), 1, "{record:#}");
    assert_eq!(load[0]["pod"], pod.as_str());
    assert_eq!(load[0]["exitCode"], 0, "{record:#}");
    assert_eq!(load[0]["stdinFrom"], file);
    assert_eq!(load[0]["stdinBytes"], DUMP_BYTES as u64);
    assert_eq!(record["phase"], "Completed", "{record:#}");
}

#[test]
fn a_failing_dump_is_not_listed_and_leaves_no_object() {
    let w = World::new(Path::new(env!("CARGO_BIN_EXE_lifeboat")));
    let fail = Arc::new(Mutex::new(Some(2)));
    let _ = containers(&w, fail.clone());
    // failVolume (the default): an error of the backup, no artifact.
    w.set_volumes(&dump_hook("failVolume"));
    let (code, out, err, name) = backup(&w);
    assert_eq!(code, 1, "PartiallyFailed: {out}{err}");
    let manifest = w.manifest(&name);
    assert_eq!(manifest["phase"], "PartiallyFailed", "{manifest:#}");
    assert!(manifest.get("artifacts").is_none(), "{manifest:#}");
    assert_eq!(manifest["hooks"]["failed"], 1, "{manifest:#}");
    assert!(
        !artifacts_dir(&w, &name).exists() || walk(&artifacts_dir(&w, &name)).is_empty(),
        "{:?}",
        walk(&artifacts_dir(&w, &name))
    );
    let repo = w.path("repo");
    let (code, out, err) = crate::run(&["backups", "show", &name, "--repo", &repo], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("ARTIFACT"), "{out}");

    // continue: a warning only; still no artifact.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    w.set_volumes(&dump_hook("continue"));
    let (code, out, err, name) = backup(&w);
    assert_eq!(code, 0, "{out}{err}");
    let manifest = w.manifest(&name);
    assert_eq!(manifest["phase"], "Completed", "{manifest:#}");
    assert!(manifest.get("artifacts").is_none(), "{manifest:#}");
    assert!(walk(&artifacts_dir(&w, &name)).is_empty());

    // failBackup: the backup fails.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    w.set_volumes(&dump_hook("failBackup"));
    let (code, out, err, _) = backup(&w);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains("dump hook mysql") && err.contains("exited with code 2"),
        "{err}"
    );
}

/// Files below `dir` (none when it does not exist).
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// `age -d -i identity.txt | zstd -d`, as a person restoring by hand would;
/// `None` when the `age` CLI is not installed.
fn age_zstd_decode(w: &World, stored: &[u8]) -> Option<Vec<u8>> {
    if std::process::Command::new("age")
        .arg("--version")
        .output()
        .is_err()
    {
        return None;
    }
    let enc = w.dir.path().join("artifact.zst.age");
    std::fs::write(&enc, stored).unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "age -d -i {} {} | zstd -d -c",
            w.path("identity.txt"),
            enc.display()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(out.stdout)
}

/// The one restore record of the world.
fn restore_record(w: &World) -> Value {
    let dir = w.dir.path().join("storage/clusters/prod/restores");
    let entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    serde_json::from_slice(&std::fs::read(entries[0].join("record.json")).unwrap()).unwrap()
}
