//! `lifeboat backups list|show|delete` against a `file://` location.

use lifeboat_store::{BackupSpec, LocationConfig, ObjectEntry, Repository};

use crate::run;

fn policy_repo(dir: &std::path::Path, storage: &std::path::Path) {
    std::fs::write(
        dir.join("lifeboat.yaml"),
        format!(
            "apiVersion: lifeboat.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: prod\nspec:\n  role: primary\n---\n\
             apiVersion: lifeboat.dev/v1alpha1\nkind: StorageLocation\nmetadata:\n  name: local\nspec:\n  url: file://{}\n",
            storage.display()
        ),
    )
    .unwrap();
}

/// Writes a one-object backup of cluster `prod`, policy `apps`, at `slot`
/// into `storage`, signed with `signing_key` (a minisign secret key file)
/// when given; returns its name.
pub(crate) async fn write_one_object_backup(
    storage: &std::path::Path,
    slot: &str,
    signing_key: Option<String>,
    entry: ObjectEntry,
) -> String {
    let repo = Repository::open(&LocationConfig {
        url: format!("file://{}", storage.display()),
        signing_key,
        ..LocationConfig::default()
    })
    .await
    .unwrap();
    let slot: jiff::Timestamp = slot.parse().unwrap();
    let writer = repo
        .begin_backup(BackupSpec {
            cluster: "prod".into(),
            policy: "apps".into(),
            policy_revision: None,
            schedule_slot: slot,
            start_time: slot,
            labels: Default::default(),
        })
        .await
        .unwrap();
    let name = writer.name().to_string();
    writer.add(entry).await.unwrap();
    writer.finish(slot).await.unwrap();
    name
}

async fn write_backup(storage: &std::path::Path, slot: &str) -> String {
    let entry = ObjectEntry {
        resource: "configmaps".into(),
        group: String::new(),
        namespace: Some("shop".into()),
        name: "settings".into(),
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        json: br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"settings","namespace":"shop"}}"#
            .to_vec()
            .into(),
    };
    write_one_object_backup(storage, slot, None, entry).await
}

#[test]
fn list_show_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("storage");
    std::fs::create_dir_all(&storage).unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    policy_repo(&policies, &storage);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let first = rt.block_on(write_backup(&storage, "2026-11-20T14:00:00Z"));
    let second = rt.block_on(write_backup(&storage, "2026-11-20T15:00:00Z"));
    assert_eq!(first, "apps-20261120-140000");

    let repo = policies.to_str().unwrap();
    let (code, out, err) = run(&["backups", "list", "--repo", repo], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("NAME"), "{out}");
    assert!(out.contains(&first) && out.contains(&second), "{out}");
    assert!(out.contains("Completed"), "{out}");

    let (code, out, _) = run(
        &["backups", "list", "--repo", repo, "--format", "json"],
        None,
    );
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["backups"].as_array().unwrap().len(), 2);
    assert_eq!(v["backups"][0]["totals"]["items"], 1);

    let (code, out, _) = run(&["backups", "show", &second, "--repo", repo], None);
    assert_eq!(code, 0);
    assert!(out.contains("configmaps  1"), "{out}");

    let (code, _, err) = run(&["backups", "delete", &first, "--repo", repo], None);
    assert_eq!(code, 2);
    assert!(err.contains("--yes"), "{err}");
    let (code, out, err) = run(
        &["backups", "delete", &first, "--repo", repo, "--yes"],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with(&format!("deleted {first}")), "{out}");

    // --storage works without a policy repository.
    let url = format!("file://{}", storage.display());
    let (code, out, _) = run(
        &["backups", "list", "--storage", &url, "--cluster", "prod"],
        None,
    );
    assert_eq!(code, 0);
    assert!(!out.contains(&first) && out.contains(&second), "{out}");

    let (code, _, err) = run(
        &["backups", "show", "apps-20200101-000000", "--repo", repo],
        None,
    );
    assert_eq!(code, 2);
    assert!(!err.is_empty());
}

#[test]
fn a_repository_with_errors_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "apiVersion: lifeboat.dev/v1alpha1\nkind: Cluster\n",
    )
    .unwrap();
    let (code, _, err) = run(
        &["backups", "list", "--repo", dir.path().to_str().unwrap()],
        None,
    );
    assert_eq!(code, 2);
    assert!(err.contains("run `lifeboat lint"), "{err}");
}
