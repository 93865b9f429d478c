//! `lifeboat backups verify` on intact, bit-flipped, truncated and
//! incomplete backups, encrypted and not, and `lifeboat restore` refusing a
//! damaged backup with exit 1.

use std::path::{Path, PathBuf};

use lifeboat_store::{BackupSpec, LocationConfig, ObjectEntry, Repository};
use serde_json::Value;

use crate::run;

/// An age key pair for the encrypted location.
const RECIPIENT: &str = "age1268crxs6ntgpzr3y2auy80yrejxsfmps549ul66ch93t0p5wr9aqyxanhq";
const IDENTITY: &str = "AGE-SECRET-KEY-1NUHTD5JXP04HTK00P4CPJCXE9YWJ34TKAX3DSQG7YACT4JHKZZQS9PFD7G";
/// Another identity, which cannot decrypt backups for RECIPIENT.
const OTHER_IDENTITY: &str =
    "AGE-SECRET-KEY-1WZX9DAAL0N4PZ3LSQJYKT34SEPRTC6XUN50YZAWCJD0Y05E9QFQQPRQ48T";

/// A policy repository with one Cluster `prod` and a StorageLocation
/// `local` on `storage`, encrypted or not, and an identity file.
struct Setup {
    _dir: tempfile::TempDir,
    repo: PathBuf,
    storage: PathBuf,
    identity: PathBuf,
    other_identity: PathBuf,
    encrypted: bool,
}

impl Setup {
    fn new(encrypted: bool) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("policies");
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&repo).unwrap();
        std::fs::create_dir_all(&storage).unwrap();
        let encryption = if encrypted {
            format!("\n  encryption:\n    recipients: [{RECIPIENT}]")
        } else {
            String::new()
        };
        std::fs::write(
            repo.join("lifeboat.yaml"),
            format!(
                "apiVersion: lifeboat.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: prod\nspec:\n  role: primary\n---\n\
                 apiVersion: lifeboat.dev/v1alpha1\nkind: StorageLocation\nmetadata:\n  name: local\nspec:\n  url: file://{}{encryption}\n",
                storage.display()
            ),
        )
        .unwrap();
        let identity = dir.path().join("identity.txt");
        std::fs::write(&identity, format!("{IDENTITY}\n")).unwrap();
        let other_identity = dir.path().join("other.txt");
        std::fs::write(&other_identity, format!("{OTHER_IDENTITY}\n")).unwrap();
        Setup {
            _dir: dir,
            repo,
            storage,
            identity,
            other_identity,
            encrypted,
        }
    }

    /// Writes a committed backup of policy `policy` with three objects.
    fn backup(&self, policy: &str, slot: &str) -> String {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let repo = Repository::open(&LocationConfig {
                url: format!("file://{}", self.storage.display()),
                recipients: if self.encrypted {
                    vec![RECIPIENT.into()]
                } else {
                    Vec::new()
                },
                ..LocationConfig::default()
            })
            .await
            .unwrap();
            let slot: jiff::Timestamp = slot.parse().unwrap();
            let writer = repo
                .begin_backup(BackupSpec {
                    cluster: "prod".into(),
                    policy: policy.into(),
                    policy_revision: None,
                    schedule_slot: slot,
                    start_time: slot,
                    labels: Default::default(),
                })
                .await
                .unwrap();
            let name = writer.name().to_string();
            for n in 0..3 {
                writer
                    .add(ObjectEntry {
                        resource: "configmaps".into(),
                        group: String::new(),
                        namespace: Some("shop".into()),
                        name: format!("settings-{n}"),
                        api_version: "v1".into(),
                        kind: "ConfigMap".into(),
                        json: format!(
                            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"settings-{n}","namespace":"shop"}},"data":{{"k":"{}"}}}}"#,
                            "v".repeat(200)
                        )
                        .into_bytes()
                        .into(),
                    })
                    .await
                    .unwrap();
            }
            writer.finish(slot).await.unwrap();
            name
        })
    }

    /// The stored file of `backup` whose name starts with `stem`.
    fn file(&self, backup: &str, stem: &str) -> PathBuf {
        let dir = self.storage.join("clusters/prod/backups").join(backup);
        std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(stem))
            .unwrap_or_else(|| panic!("no {stem}* in {}", dir.display()))
    }

    fn verify(&self, extra: &[&str]) -> (i32, String, String) {
        let mut args = vec!["backups", "verify", "--repo", self.repo.to_str().unwrap()];
        args.extend_from_slice(extra);
        run(&args, None)
    }
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// Flips one bit in the middle of a file.
fn flip_a_bit(p: &Path) {
    let mut bytes = std::fs::read(p).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x10;
    std::fs::write(p, bytes).unwrap();
}

/// Cuts a file to half its size.
fn truncate(p: &Path) {
    let bytes = std::fs::read(p).unwrap();
    std::fs::write(p, &bytes[..bytes.len() / 2]).unwrap();
}

/// Four backups: intact, bit-flipped archive, truncated index, missing log.
fn damaged_set(s: &Setup) -> [(String, Option<String>); 4] {
    let intact = s.backup("apps", "2026-11-20T10:00:00Z");
    let flipped = s.backup("apps", "2026-11-20T11:00:00Z");
    let truncated = s.backup("apps", "2026-11-20T12:00:00Z");
    let missing = s.backup("other", "2026-11-20T13:00:00Z");
    let archive = s.file(&flipped, "resources");
    flip_a_bit(&archive);
    let index = s.file(&truncated, "index");
    truncate(&index);
    let log = s.file(&missing, "log");
    std::fs::remove_file(&log).unwrap();
    [
        (intact, None),
        (flipped, Some(file_name(&archive))),
        (truncated, Some(file_name(&index))),
        (missing, Some(file_name(&log))),
    ]
}

fn check_damage_is_found(encrypted: bool) {
    let s = Setup::new(encrypted);
    let set = damaged_set(&s);
    let id = s.identity.to_str().unwrap();
    for with_identity in [false, true] {
        let identity: &[&str] = if with_identity {
            &["--identity", id]
        } else {
            &[]
        };
        for (backup, damaged) in &set {
            let (code, out, err) = s.verify(&[&[backup.as_str()][..], identity].concat());
            match damaged {
                None => {
                    assert_eq!(code, 0, "{backup} is intact\n{out}{err}");
                    assert!(out.starts_with(&format!("{backup}: intact")), "{out}");
                    let partial = encrypted && !with_identity;
                    assert_eq!(
                        out.contains("not checked without an identity"),
                        partial,
                        "{out}"
                    );
                }
                Some(file) => {
                    assert_eq!(code, 1, "{backup} is damaged\n{out}{err}");
                    assert!(
                        out.starts_with(&format!("{backup}: DAMAGED: {file}\n")),
                        "{out}"
                    );
                }
            }
        }
    }
    let (code, out, err) = s.verify(&["NAME-IGNORED", "--all"]);
    assert_eq!(code, 2, "a name and --all is a usage error\n{out}{err}");

    // --all names every damaged file and counts.
    let (code, out, err) = s.verify(&["--all", "--identity", id]);
    assert_eq!(code, 1, "{out}{err}");
    for (backup, damaged) in &set {
        if let Some(file) = damaged {
            assert!(out.contains(&format!("{backup}: DAMAGED: {file}")), "{out}");
        }
    }
    assert!(
        out.contains("4 backups of `prod` in `local`: 1 intact, 3 damaged"),
        "{out}"
    );
    let (code, out, _) = s.verify(&["--all", "--policy", "other", "--identity", id]);
    assert_eq!(code, 1);
    assert!(
        out.contains("1 backup of `prod` in `local`: 0 intact, 1 damaged"),
        "{out}"
    );

    // JSON: each check, by file.
    let (code, out, _) = s.verify(&["--all", "--format", "json", "--identity", id]);
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["intact"], false);
    let backups = v["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 4);
    let checks = |i: usize, status: &str| -> Vec<(String, String)> {
        backups[i]["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["status"] == status)
            .map(|f| {
                (
                    f["subject"].as_str().unwrap().to_string(),
                    f["check"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    assert!(checks(0, "damaged").is_empty());
    assert_eq!(backups[0]["objects"], 3);
    assert_eq!(
        checks(1, "damaged"),
        vec![(set[1].1.clone().unwrap(), "sha256".into())]
    );
    assert_eq!(
        checks(2, "damaged"),
        vec![(set[2].1.clone().unwrap(), "size".into())]
    );
    assert_eq!(
        checks(3, "damaged"),
        vec![(set[3].1.clone().unwrap(), "present".into())]
    );
}

#[test]
fn verify_finds_flipped_truncated_and_missing_files_unencrypted() {
    check_damage_is_found(false);
}

#[test]
fn verify_finds_flipped_truncated_and_missing_files_encrypted() {
    check_damage_is_found(true);
}

#[test]
fn verify_without_an_identity_says_what_it_could_not_check() {
    let s = Setup::new(true);
    let backup = s.backup("apps", "2026-11-20T10:00:00Z");
    let (code, out, err) = s.verify(&[&backup]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("intact (not decrypted)"), "{out}");
    assert!(
        out.contains(
            "not checked without an identity: decrypting, decompressing and parsing \
             index.json.zst.age, log.jsonl.zst.age, resources.tar.zst.age"
        ),
        "{out}"
    );
    let (code, out, _) = s.verify(&[&backup, "--format", "json"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    let not_checked: Vec<&str> = v["backups"][0]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["status"] == "notChecked")
        .map(|f| f["check"].as_str().unwrap())
        .collect();
    assert_eq!(not_checked, ["decode", "decode", "decode"]);

    // An identity that does not fit is a usage error, not damage.
    let (code, out, err) = s.verify(&[&backup, "--identity", s.other_identity.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("none of the configured age identities can decrypt"),
        "{err}"
    );
}

#[test]
fn verify_usage_and_unknown_backups_exit_2() {
    let s = Setup::new(false);
    let (code, _, err) = s.verify(&[]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = s.verify(&["apps-20200101-000000"]);
    assert_eq!(code, 2);
    assert!(err.contains("not found"), "{err}");
    let (code, out, _) = s.verify(&["--all"]);
    assert_eq!(code, 0, "nothing to verify is not damage");
    assert!(out.contains("no backups of cluster `prod`"), "{out}");
}

/// A kubeconfig for a cluster that does not exist: the restore must be
/// refused before it talks to one.
pub(crate) fn dead_kubeconfig(dir: &Path) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: none\n  cluster: {server: 'http://127.0.0.1:9'}\n\
         contexts:\n- name: none\n  context: {cluster: none, user: none}\ncurrent-context: none\n\
         users:\n- name: none\n  user: {token: x}\n",
    )
    .unwrap();
    path
}

#[test]
fn a_restore_of_a_damaged_backup_is_refused_with_exit_1_and_one_message() {
    let s = Setup::new(false);
    let backup = s.backup("apps", "2026-11-20T10:00:00Z");
    flip_a_bit(&s.file(&backup, "resources"));
    let kubeconfig = dead_kubeconfig(&s.storage);
    let (code, out, err) = run(
        &[
            "restore",
            "--repo",
            s.repo.to_str().unwrap(),
            "--from",
            &backup,
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 1, "a refused restore is a finding\n{out}{err}");
    assert!(err.contains("lifeboat backups verify"), "{err}");
    assert_eq!(
        err.matches("checksum mismatch").count(),
        1,
        "the cause is printed once:\n{err}"
    );
    assert_eq!(err.matches("failed verification").count(), 1, "{err}");
}
