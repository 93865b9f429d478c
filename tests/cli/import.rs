//! `lifeboat import velero`: Velero/OADP Schedules, BackupStorageLocations
//! and a DataProtectionApplication become policy files that lint clean and
//! plan, with a report of every field that did not translate.

use std::path::Path;

use crate::run;

const RECIPIENT: &str = "age1268crxs6ntgpzr3y2auy80yrejxsfmps549ul66ch93t0p5wr9aqyxanhq";

fn import(out: &Path, extra: &[&str]) -> (i32, String, String) {
    let out = out.to_str().unwrap();
    let mut args = vec![
        "import",
        "velero",
        "-f",
        "tests/fixtures/velero/schedules.yaml",
        "-f",
        "tests/fixtures/velero/dpa.yaml",
        "--cluster",
        "prod",
        "--output",
        out,
    ];
    args.extend_from_slice(extra);
    run(&args, None)
}

fn yaml(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

#[test]
fn velero_configuration_imports_into_policies_that_lint_clean_and_plan() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("policies");
    let (code, stdout, err) = import(&out, &["--recipient", RECIPIENT]);
    assert_eq!(code, 0, "{stdout}{err}");

    // Schedule → BackupPolicy: CRON_TZ, template selection, ttl, volumes.
    let daily = yaml(&out.join("policies/daily-apps.yaml"));
    let spec = &daily["spec"];
    assert_eq!(spec["schedule"], "0 1 * * *");
    assert_eq!(spec["timezone"], "Europe/Berlin");
    assert_eq!(spec["clusters"]["names"][0], "prod");
    assert_eq!(spec["include"]["namespaces"][1], "team-*");
    assert_eq!(spec["include"]["clusterResources"], "always");
    assert_eq!(
        spec["include"]["labelSelector"]["matchLabels"]["backup"],
        "true"
    );
    assert_eq!(
        spec["include"]["labelSelector"]["matchExpressions"][0]["operator"],
        "NotIn"
    );
    assert_eq!(spec["exclude"]["namespaces"][0], "team-scratch");
    assert_eq!(spec["exclude"]["resources"][0], "events");
    assert_eq!(spec["retention"]["maxAge"], "14d");
    assert_eq!(spec["storage"], "default");
    assert_eq!(spec["volumes"]["method"], "snapshotMove");
    assert_eq!(spec["volumes"]["timeouts"]["snapshotReady"], "10m");
    assert_eq!(spec["volumes"]["timeouts"]["move"], "4h");
    assert_eq!(
        spec["hooks"]["pods"],
        serde_json::json!([{
            "name": "mysql-freeze", "namespaces": ["shop"],
            "labelSelector": {"matchLabels": {"app": "mysql"}}, "container": "mysql",
            "pre": ["/bin/sh", "-c", "mysql -e 'FLUSH TABLES WITH READ LOCK'"],
            "timeout": "30s", "onError": "failVolume",
        }])
    );
    // Template hooks → spec.hooks.pods: a freeze and its thaw become one
    // hook; commands that differ in onError or timeout hooks of their own,
    // in Velero's order.
    let databases = yaml(&out.join("policies/databases.yaml"));
    let spec = &databases["spec"];
    assert_eq!(spec["volumes"]["method"], "fileSystem");
    assert_eq!(
        spec["include"]["resources"],
        serde_json::json!([
            "configmaps",
            "deployments",
            "persistentvolumeclaims",
            "persistentvolumes",
            "pods",
            "secrets",
            "statefulsets"
        ])
    );
    assert_eq!(
        spec["exclude"]["resources"],
        serde_json::json!(["events", "storageclasses"])
    );
    assert_eq!(
        spec["hooks"]["pods"],
        serde_json::json!([
            {
                "name": "postgres-freeze", "namespaces": ["db-*"],
                "labelSelector": {"matchLabels": {"app": "postgres"}}, "container": "postgres",
                "pre": ["/sbin/fsfreeze", "--freeze", "/var/lib/postgresql"],
                "post": ["/sbin/fsfreeze", "--unfreeze", "/var/lib/postgresql"],
                "timeout": "1m30s", "onError": "failVolume",
            },
            {
                "name": "redis-1",
                "labelSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["redis"]}]},
                "pre": ["redis-cli", "BGSAVE"], "post": ["/bin/true"],
                "timeout": "30s", "onError": "continue",
            },
            {
                "name": "redis-2",
                "labelSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["redis"]}]},
                "container": "redis",
                "pre": ["/bin/sh", "-c", "until redis-cli INFO persistence | grep -q 'bgsave_in_progress:0'; do sleep 1; done"],
                "timeout": "1h", "onError": "failVolume",
            },
        ])
    );
    let six = yaml(&out.join("policies/every-6h.yaml"));
    assert_eq!(six["spec"]["schedule"], "0 */6 * * *");
    assert_eq!(six["spec"]["suspend"], true);
    assert_eq!(six["spec"]["volumes"]["method"], "fileSystem");
    assert_eq!(
        six["spec"]["retention"]["maxAge"], "30d",
        "Velero's default ttl"
    );
    assert!(!out.join("policies/odd-interval.yaml").exists());
    // A Schedule of the OADP install uses that install's default location.
    let nightly = yaml(&out.join("policies/nightly.yaml"));
    assert_eq!(nightly["spec"]["storage"], "main");

    // BSL → StorageLocation beside Velero's data, with a Secret to fill.
    let minio = yaml(&out.join("storage/default.yaml"));
    assert_eq!(minio["spec"]["url"], "s3://velero-backups/prod/lifeboat");
    assert_eq!(minio["spec"]["endpoint"], "http://minio.velero.svc:9000");
    assert_eq!(minio["spec"]["pathStyle"], true);
    assert_eq!(
        minio["spec"]["credentials"]["secretRef"]["name"],
        "lifeboat-default-credentials"
    );
    assert_eq!(minio["spec"]["encryption"]["recipients"][0], RECIPIENT);
    // The DPA's two locations: one named, one named as OADP names it.
    assert_eq!(
        yaml(&out.join("storage/main.yaml"))["spec"]["url"],
        "s3://oadp-main/velero/lifeboat"
    );
    assert_eq!(
        yaml(&out.join("storage/velero-sample-2.yaml"))["spec"]["url"],
        "az://oadp-dr/lifeboat"
    );
    assert_eq!(yaml(&out.join("clusters/prod.yaml"))["kind"], "Cluster");

    // The report names what did not translate, on stdout and in IMPORT.md.
    for text in [
        stdout.clone(),
        std::fs::read_to_string(out.join("IMPORT.md")).unwrap(),
    ] {
        // Hooks: what had no equivalent, and what was chosen.
        for want in [
            "hook `postgres freeze`: a lifeboat hook names the namespaces it runs in but excludes none, so it also runs in `db-legacy`",
            "hook `postgres freeze`: resources other than pods (deployments) are dropped",
            "hook `configmaps-only` selects no pods",
            "it became the hooks `redis-1`, `redis-2`",
            "spec.template.orLabelSelectors",
            "spec.template.orderedResources",
            "spec.template.resourcePolicy",
            "spec.template.uploaderConfig",
            "spec.template.datamover",
        ] {
            assert!(text.contains(want), "{want} in {text}");
        }
        assert!(
            !text.contains("`db-scratch`"),
            "the policy excludes db-scratch already: {text}"
        );
        assert!(
            text.contains("`@every 7h` counts from when Velero started"),
            "{text}"
        );
        assert!(text.contains("AZURE_STORAGE_ACCOUNT_NAME"), "{text}");
        assert!(text.contains("spec.snapshotLocations"), "{text}");
    }

    // Lints clean (an info on the deliberately overlapping fixtures only).
    let (code, lint, err) = run(&["lint", out.to_str().unwrap(), "--format", "json"], None);
    assert_eq!(code, 0, "{lint}{err}");
    let lint: serde_json::Value = serde_json::from_str(&lint).unwrap();
    let serious: Vec<_> = lint["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["severity"] != "info")
        .collect();
    assert!(serious.is_empty(), "{serious:#?}");

    // And plans: every policy's first backup.
    let (code, plan, err) = run(
        &[
            "plan",
            "--repo",
            out.to_str().unwrap(),
            "--offline",
            "--now",
            "2026-12-01T00:00:00Z",
        ],
        None,
    );
    assert_eq!(code, 0, "{plan}{err}");
    assert!(
        plan.contains("back up `daily-apps` to `default`")
            && plan.contains("back up `nightly` to `main`")
            && plan.contains("back up `databases` to `default`"),
        "{plan}"
    );

    // A second import into the same directory refuses to overwrite.
    let (code, _, err) = import(&out, &["--recipient", RECIPIENT]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("pass --force"), "{err}");
}

#[test]
fn without_recipients_the_report_and_lint_say_what_is_unencrypted() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p");
    let (code, stdout, err) = import(&out, &["--format", "json"]);
    assert_eq!(code, 0, "{stdout}{err}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        report["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["field"] == "encryption" && n["kind"] == "untranslated"),
        "{report:#}"
    );
    // Secrets unencrypted is a warning; moving volume data into an
    // unencrypted location, which the Schedules asked for, is an error.
    let (code, lint, err) = run(&["lint", out.to_str().unwrap()], None);
    assert_eq!(code, 1, "{lint}{err}");
    assert!(lint.contains("LB109") && lint.contains("LB117"), "{lint}");
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "kind: [unclosed\n").unwrap();
    let out = dir.path().join("o");
    let (code, _, err) = run(
        &[
            "import",
            "velero",
            "-f",
            bad.to_str().unwrap(),
            "--cluster",
            "prod",
            "-o",
            out.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is not YAML"), "{err}");
    // Nothing Velero in it: nothing written, and it says so.
    let (code, _, err) = run(
        &[
            "import",
            "velero",
            "-f",
            "policies-example/clusters/prod-east.yaml",
            "--cluster",
            "prod",
            "-o",
            out.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("could be imported"), "{err}");
    assert!(err.contains("ignored 1 Cluster"), "{err}");
    assert!(!out.exists());
}

/// The same import, read from a cluster that runs Velero (its CRDs and
/// objects in the simulated cluster).
#[test]
fn import_reads_velero_resources_from_a_cluster() {
    const VELERO: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: schedules.velero.io}
spec:
  group: velero.io
  scope: Namespaced
  names: {plural: schedules, singular: schedule, kind: Schedule}
  versions: [{name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}]
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: backupstoragelocations.velero.io}
spec:
  group: velero.io
  scope: Namespaced
  names: {plural: backupstoragelocations, singular: backupstoragelocation, kind: BackupStorageLocation, shortNames: [bsl]}
  versions: [{name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}]
---
apiVersion: v1
kind: Namespace
metadata: {name: velero}
---
apiVersion: velero.io/v1
kind: BackupStorageLocation
metadata: {name: default, namespace: velero}
spec:
  provider: aws
  default: true
  objectStorage: {bucket: velero-backups}
  config: {region: us-east-1}
---
apiVersion: velero.io/v1
kind: Schedule
metadata: {name: hourly, namespace: velero}
spec:
  schedule: "@hourly"
  template: {includedNamespaces: [shop], ttl: 72h0m0s}
"#;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed");
    std::fs::create_dir_all(&seed).unwrap();
    std::fs::write(seed.join("velero.yaml"), VELERO).unwrap();
    let sb = rt
        .block_on(lifeboat_sandbox::Sandbox::builder().seed_dir(&seed).start())
        .unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sb.write_kubeconfig(&kubeconfig).unwrap();
    let out = dir.path().join("out");
    let (code, stdout, err) = run(
        &[
            "import",
            "velero",
            "--from-cluster",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--cluster",
            "prod",
            "-o",
            out.to_str().unwrap(),
            "--recipient",
            RECIPIENT,
        ],
        None,
    );
    assert_eq!(code, 0, "{stdout}{err}");
    let hourly = yaml(&out.join("policies/hourly.yaml"));
    assert_eq!(hourly["spec"]["schedule"], "0 * * * *");
    assert_eq!(hourly["spec"]["retention"]["maxAge"], "3d");
    assert_eq!(hourly["spec"]["storage"], "default");
    assert_eq!(
        yaml(&out.join("storage/default.yaml"))["spec"]["url"],
        "s3://velero-backups/lifeboat"
    );
    let (code, lint, err) = run(&["lint", out.to_str().unwrap()], None);
    assert_eq!(code, 0, "{lint}{err}");
    drop(sb);
}
