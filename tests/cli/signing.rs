//! Signed backups through the binary: a forged backup (valid files and
//! sums, unsigned or signed by a key nobody trusts) is flagged by `backups
//! list` and `backups verify` and refused by `restore` before it touches a
//! cluster; `plan --base` shows a change of trust.

use std::path::Path;

use lifeboat_store::{GeneratedKeyPair, ObjectEntry};

use crate::run;

/// A Cluster `prod` trusting `trusted` (and signing with a Secret), and a
/// StorageLocation `local` on `storage`.
fn policies(storage: &Path, trusted: &str) -> String {
    format!(
        "apiVersion: lifeboat.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: prod\nspec:\n  role: primary\n  \
         signing:\n    keySecretRef: {{name: lifeboat-signing}}\n    publicKey: {trusted}\n---\n\
         apiVersion: lifeboat.dev/v1alpha1\nkind: StorageLocation\nmetadata:\n  name: local\nspec:\n  url: file://{}\n",
        storage.display()
    )
}

/// Writes a backup of `prod` at `slot` holding a ClusterRoleBinding to
/// `cluster-admin`, signed by `signer`.
async fn write_backup(storage: &Path, slot: &str, signer: Option<&GeneratedKeyPair>) -> String {
    let entry = ObjectEntry {
        resource: "clusterrolebindings".into(),
        group: "rbac.authorization.k8s.io".into(),
        namespace: None,
        name: "miner-admin".into(),
        api_version: "rbac.authorization.k8s.io/v1".into(),
        kind: "ClusterRoleBinding".into(),
        json: br#"{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRoleBinding","metadata":{"name":"miner-admin"},"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"cluster-admin"},"subjects":[{"kind":"ServiceAccount","name":"miner","namespace":"default"}]}"#
            .to_vec()
            .into(),
    };
    let key = signer.map(|k| k.secret_key_file.clone());
    crate::backups::write_one_object_backup(storage, slot, key, entry).await
}

/// The row of `name` in a `backups list` table.
fn row<'a>(table: &'a str, name: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no row for {name}:\n{table}"))
}

#[test]
fn forged_backups_are_flagged_by_list_and_verify_and_refused_by_restore() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, storage) = (dir.path().join("policies"), dir.path().join("storage"));
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::create_dir_all(&storage).unwrap();
    let ours = lifeboat_store::generate_key_pair("prod").unwrap();
    let theirs = lifeboat_store::generate_key_pair("attacker").unwrap();
    std::fs::write(
        repo.join("lifeboat.yaml"),
        policies(&storage, &ours.public_key),
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let genuine = rt.block_on(write_backup(&storage, "2026-11-20T10:00:00Z", Some(&ours)));
    let unsigned = rt.block_on(write_backup(&storage, "2026-11-20T11:00:00Z", None));
    let forged = rt.block_on(write_backup(
        &storage,
        "2026-11-20T12:00:00Z",
        Some(&theirs),
    ));
    let r = repo.to_str().unwrap();

    let (code, out, err) = run(&["backups", "list", "--repo", r], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("NAME") && out.contains("SIGNED"), "{out}");
    assert!(row(&out, &genuine).contains("valid"), "{out}");
    assert!(row(&out, &unsigned).contains("unsigned"), "{out}");
    assert!(row(&out, &forged).contains("untrusted"), "{out}");
    let warnings: Vec<&str> = out.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(
        warnings.len(),
        2,
        "a warning for each backup restores refuse:\n{out}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains(&forged) && w.contains(&theirs.key_id)),
        "{out}"
    );
    assert!(warnings.iter().any(|w| w.contains(&unsigned)), "{out}");

    let (code, out, err) = run(&["backups", "verify", "--repo", r, &genuine], None);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run(&["backups", "verify", "--repo", r, &forged], None);
    assert_eq!(code, 1, "a forged backup is damaged\n{out}{err}");
    assert!(format!("{out}{err}").contains(&theirs.key_id), "{out}{err}");

    let kubeconfig = crate::verify::dead_kubeconfig(dir.path());
    let k = kubeconfig.to_str().unwrap();
    for (name, says) in [
        (&forged, theirs.key_id.as_str()),
        (&unsigned, "is not signed"),
    ] {
        let (code, out, err) = run(
            &["restore", "--repo", r, "--from", name, "--kubeconfig", k],
            None,
        );
        assert_eq!(code, 1, "refused before any cluster call\n{out}{err}");
        assert!(err.contains(says) && err.contains("prod"), "{name}: {err}");
        assert!(
            !err.contains("127.0.0.1:9"),
            "no cluster was contacted: {err}"
        );
    }
}

#[test]
fn plan_base_shows_a_newly_trusted_key() {
    let dir = tempfile::tempdir().unwrap();
    let (work, storage) = (dir.path().join("work"), dir.path().join("storage"));
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(&storage).unwrap();
    let git = |args: &[&str]| crate::plan::git(&work, args);
    let old = lifeboat_store::generate_key_pair("old").unwrap();
    let new = lifeboat_store::generate_key_pair("new").unwrap();
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(
        work.join("lifeboat.yaml"),
        policies(&storage, &old.public_key),
    )
    .unwrap();
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "trust the old key"]);
    std::fs::write(
        work.join("lifeboat.yaml"),
        policies(&storage, &new.public_key),
    )
    .unwrap();
    git(&["commit", "-q", "-am", "rotate"]);
    let cache = dir.path().join("cache");
    let (code, out, err) = run(
        &[
            "plan",
            "--repo",
            work.to_str().unwrap(),
            "--base",
            "HEAD~1",
            "--ref",
            "HEAD",
            "--cluster",
            "prod",
            "--now",
            "2026-11-21T03:00:00Z",
            "--format",
            "markdown",
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("Security: who may sign restorable backups changes"),
        "{out}"
    );
    let newly = format!("newly trusted: key `{}` for cluster `prod`", new.public_key);
    let revoked = format!("revoked: key `{}` for cluster `prod`", old.public_key);
    assert!(out.contains(&newly) && out.contains(&revoked), "{out}");
}
