//! `lifeboat backup` and `lifeboat restore` end to end: the binary against
//! the sandbox API server and a `file://` location.

use std::path::Path;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::Api;
use kube::api::DeleteParams;
use lifeboat_sandbox::Sandbox;

use crate::{root, run};

fn repo(dir: &Path, storage: &Path) {
    std::fs::write(
        dir.join("lifeboat.yaml"),
        format!(
            "apiVersion: lifeboat.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: prod\nspec:\n  role: primary\n---\n\
             apiVersion: lifeboat.dev/v1alpha1\nkind: StorageLocation\nmetadata:\n  name: local\nspec:\n  url: file://{}\n  \
             encryption:\n    recipients: [age1268crxs6ntgpzr3y2auy80yrejxsfmps549ul66ch93t0p5wr9aqyxanhq]\n---\n\
             apiVersion: lifeboat.dev/v1alpha1\nkind: BackupPolicy\nmetadata:\n  name: blog\nspec:\n  clusters: {{names: [prod]}}\n  \
             include: {{namespaces: [wordpress]}}\n  schedule: '0 * * * *'\n  retention: {{keepLast: 5}}\n  storage: local\n",
            storage.display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("identity.txt"),
        "AGE-SECRET-KEY-1NUHTD5JXP04HTK00P4CPJCXE9YWJ34TKAX3DSQG7YACT4JHKZZQS9PFD7G\n",
    )
    .unwrap();
}

#[test]
fn back_up_delete_the_namespace_and_restore_it() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sb = rt
        .block_on(
            Sandbox::builder()
                .seed_dir(root().join("tests/fixtures/apps"))
                .start(),
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("storage");
    std::fs::create_dir_all(&storage).unwrap();
    repo(dir.path(), &storage);
    let kubeconfig = dir.path().join("kubeconfig");
    sb.write_kubeconfig(&kubeconfig).unwrap();
    let (r, k, id) = (
        dir.path().to_str().unwrap(),
        kubeconfig.to_str().unwrap(),
        dir.path().join("identity.txt"),
    );

    // Objects only: this is also the test that a format-1 backup (written
    // before volume data) still restores.
    let (code, out, err) = run(
        &[
            "backup",
            "--repo",
            r,
            "--policy",
            "blog",
            "--kubeconfig",
            k,
            "--no-volume-data",
        ],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("Completed") && out.contains("(encrypted)"),
        "{out}"
    );
    let backup = out.split_whitespace().next().unwrap().to_string();
    assert!(backup.starts_with("blog-"), "{out}");

    as_format_1(&storage.join("clusters/prod/backups").join(&backup));

    let client = sb.client();
    let (before_cm, before_secret) = rt.block_on(async {
        let cm: Api<ConfigMap> = Api::namespaced(client.clone(), "wordpress");
        let s: Api<Secret> = Api::namespaced(client.clone(), "wordpress");
        (
            cm.get("wordpress-config").await.unwrap(),
            s.get("mysql-pass").await.unwrap(),
        )
    });
    rt.block_on(async {
        let ns: Api<Namespace> = Api::all(client.clone());
        ns.delete("wordpress", &DeleteParams::default())
            .await
            .unwrap();
        for _ in 0..100 {
            if ns.get_opt("wordpress").await.unwrap().is_none() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the namespace was not deleted");
    });

    // Without the identity the encrypted backup cannot be read: nothing applied.
    let (code, _, err) = run(
        &["restore", "--repo", r, "--from", &backup, "--kubeconfig", k],
        None,
    );
    assert_ne!(code, 0);
    assert!(err.contains("identit"), "{err}");

    // A dry run changes nothing.
    let restore_with_identity = |extra: &[&str]| {
        let id = id.to_str().unwrap();
        let mut args = vec![
            "restore",
            "--repo",
            r,
            "--from",
            &backup,
            "--kubeconfig",
            k,
            "--identity",
            id,
        ];
        args.extend_from_slice(extra);
        run(&args, None)
    };
    let (code, out, err) = restore_with_identity(&["--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("dry run:"), "{out}");
    let gone = rt.block_on(async {
        Api::<Namespace>::all(client.clone())
            .get_opt("wordpress")
            .await
            .unwrap()
            .is_none()
    });
    assert!(gone, "a dry run must not create the namespace");

    let (code, out, err) = restore_with_identity(&["--format", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let record: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(record["phase"], "Completed", "{out}");
    assert!(record["counts"]["created"].as_u64().unwrap() >= 10, "{out}");

    rt.block_on(async {
        let cm: Api<ConfigMap> = Api::namespaced(client.clone(), "wordpress");
        let s: Api<Secret> = Api::namespaced(client.clone(), "wordpress");
        assert_eq!(
            cm.get("wordpress-config").await.unwrap().data,
            before_cm.data
        );
        assert_eq!(s.get("mysql-pass").await.unwrap().data, before_secret.data);
    });

    // The record of what each restore did is kept next to the backup,
    // including the attempt without the identity, recorded as Failed.
    let records = storage.join("clusters/prod/restores");
    let mut phases: Vec<String> = std::fs::read_dir(records)
        .unwrap()
        .map(|e| {
            let record: serde_json::Value = serde_json::from_slice(
                &std::fs::read(e.unwrap().path().join("record.json")).unwrap(),
            )
            .unwrap();
            record["phase"].as_str().unwrap().to_string()
        })
        .collect();
    phases.sort();
    assert_eq!(
        phases,
        ["Completed", "Completed", "Failed"],
        "failed attempt, dry run and real restore"
    );
    drop(sb);
}

/// Rewrites a backup's manifest as format 1 wrote it (`files` an object of
/// the three archive files, no `volumes`).
fn as_format_1(backup: &Path) {
    let path = backup.join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let files = m["files"].as_array().unwrap().clone();
    assert_eq!(files.len(), 3, "objects only: {m}");
    m["formatVersion"] = 1.into();
    m["files"] = serde_json::json!({"resources": files[0], "index": files[1], "log": files[2]});
    m.as_object_mut().unwrap().remove("volumes");
    std::fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
}
