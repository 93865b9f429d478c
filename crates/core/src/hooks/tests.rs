//! Hook annotations and pod matching over small pod lists.

use rstest::rstest;
use serde_json::{Value, json};

use super::*;
use crate::volumes::PodClaimVolume;

fn policy(hooks: Value) -> BackupPolicy {
    serde_json::from_value(json!({
        "apiVersion": "lifeboat.dev/v1alpha1",
        "kind": "BackupPolicy",
        "metadata": {"name": "p"},
        "spec": {
            "clusters": {"names": ["c"]},
            "include": {"namespaces": ["db", "web"]},
            "schedule": "0 0 * * *",
            "retention": {"keepDaily": 7},
            "storage": "s3",
            "hooks": {"pods": hooks},
        },
    }))
    .unwrap()
}

fn pod(ns: &str, name: &str, owner: Option<&str>, annotations: &[(&str, &str)]) -> PodInfo {
    PodInfo {
        namespace: ns.into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        node: Some("n1".into()),
        phase: "Running".into(),
        annotations: annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        volumes: vec![PodClaimVolume {
            name: "data".into(),
            claim: format!("data-{name}"),
        }],
        labels: [("app".to_string(), "db".to_string())].into(),
        owner: owner.map(str::to_string),
        containers: vec!["main".into(), "side".into()],
    }
}

fn map(a: &[(&str, &str)]) -> BTreeMap<String, String> {
    a.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn containers() -> Vec<String> {
    vec!["main".into(), "side".into()]
}

#[rstest]
#[case::json_array(
    &[("pre.hook.backup.velero.io/command", r#"["/sbin/fsfreeze","--freeze","/data"]"#)],
    Some(("main", vec!["/sbin/fsfreeze", "--freeze", "/data"], 30, HookOnError::FailVolume)),
    None
)]
#[case::plain_string_is_one_argument(
    &[("pre.hook.backup.velero.io/command", "/freeze.sh"),
      ("pre.hook.backup.velero.io/container", "side"),
      ("pre.hook.backup.velero.io/on-error", "Continue"),
      ("pre.hook.backup.velero.io/timeout", "2m")],
    Some(("side", vec!["/freeze.sh"], 120, HookOnError::Continue)),
    None
)]
#[case::legacy_keys_are_pre(
    &[("hook.backup.velero.io/command", r#"["sync"]"#),
      ("hook.backup.velero.io/on-error", "Fail")],
    Some(("main", vec!["sync"], 30, HookOnError::FailVolume)),
    None
)]
#[case::prefixed_pre_wins_over_legacy(
    &[("hook.backup.velero.io/command", r#"["legacy"]"#),
      ("pre.hook.backup.velero.io/command", r#"["new"]"#)],
    Some(("main", vec!["new"], 30, HookOnError::FailVolume)),
    None
)]
#[case::post_only(
    &[("post.hook.backup.velero.io/command", r#"["/sbin/fsfreeze","--unfreeze","/data"]"#),
      ("post.hook.backup.velero.io/timeout", "1m30s")],
    None,
    Some(("main", vec!["/sbin/fsfreeze", "--unfreeze", "/data"], 90, HookOnError::FailVolume))
)]
fn velero_annotations_give_hooks(
    #[case] annotations: &[(&str, &str)],
    #[case] pre: Option<(&str, Vec<&str>, u64, HookOnError)>,
    #[case] post: Option<(&str, Vec<&str>, u64, HookOnError)>,
) {
    let (got_pre, got_post, invalid) = annotation_hooks(&map(annotations), &containers());
    assert!(invalid.is_empty(), "{invalid:?}");
    let simple =
        |h: Option<ExecHook>| h.map(|h| (h.container, h.command, h.timeout.as_secs(), h.on_error));
    let want = |w: Option<(&str, Vec<&str>, u64, HookOnError)>| {
        w.map(|(c, cmd, t, e)| {
            (
                c.to_string(),
                cmd.into_iter().map(str::to_string).collect::<Vec<_>>(),
                t,
                e,
            )
        })
    };
    assert_eq!(simple(got_pre), want(pre));
    assert_eq!(simple(got_post), want(post));
}

#[rstest]
#[case::bad_json(&[("pre.hook.backup.velero.io/command", "[\"a\",")], "invalid JSON array")]
#[case::unknown_container(
    &[("pre.hook.backup.velero.io/command", "x"), ("pre.hook.backup.velero.io/container", "nope")],
    "does not have"
)]
#[case::bad_on_error(
    &[("post.hook.backup.velero.io/command", "x"), ("post.hook.backup.velero.io/on-error", "Ignore")],
    "Fail and Continue"
)]
#[case::bad_timeout(
    &[("pre.hook.backup.velero.io/command", "x"), ("pre.hook.backup.velero.io/timeout", "soon")],
    "not a duration"
)]
fn malformed_annotations_say_why(#[case] annotations: &[(&str, &str)], #[case] why: &str) {
    let (_, _, invalid) = annotation_hooks(&map(annotations), &containers());
    assert_eq!(invalid.len(), 1, "{invalid:?}");
    assert!(invalid[0].contains(why), "{invalid:?}");
}

#[test]
fn policy_hooks_select_by_namespace_labels_and_owner() {
    let p = policy(json!([{
        "name": "freeze",
        "namespaces": ["db"],
        "labelSelector": {"matchLabels": {"app": "db"}},
        "owner": "Deployment/mysql",
        "pre": ["fsfreeze", "--freeze", "/data"],
        "post": "fsfreeze --unfreeze /data",
        "shell": false,
        "timeout": "10s",
        "onError": "failBackup",
    }]));
    let pods = vec![
        pod("db", "mysql-1", Some("Deployment/mysql"), &[]),
        pod("db", "other-1", Some("Deployment/other"), &[]),
        pod("web", "mysql-2", Some("Deployment/mysql"), &[]),
        pod("elsewhere", "mysql-3", Some("Deployment/mysql"), &[]),
    ];
    let got = pod_hooks(&p, &pods).unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    let h = &got[0];
    assert_eq!((h.namespace.as_str(), h.pod.as_str()), ("db", "mysql-1"));
    assert_eq!(h.pre[0].command, ["fsfreeze", "--freeze", "/data"]);
    assert_eq!(h.pre[0].container, "main");
    assert_eq!(h.pre[0].timeout.as_secs(), 10);
    assert_eq!(h.pre[0].on_error, HookOnError::FailBackup);
    // A string without `shell` is one argument.
    assert_eq!(h.post[0].command, ["fsfreeze --unfreeze /data"]);
    assert_eq!(h.claims, ["data-mysql-1"]);
}

#[test]
fn shell_runs_the_command_through_sh() {
    let p = policy(json!([{"name": "s", "pre": "sync; sleep 1", "shell": true}]));
    let got = pod_hooks(&p, &[pod("db", "a", None, &[])]).unwrap();
    assert_eq!(got[0].pre[0].command, ["/bin/sh", "-c", "sync; sleep 1"]);
    assert_eq!(got[0].pre[0].timeout.as_secs(), 30);
    assert_eq!(got[0].pre[0].on_error, HookOnError::FailVolume);
}

#[test]
fn one_per_owner_picks_the_lowest_ordinal() {
    let p = policy(json!([{
        "name": "primary", "owner": "StatefulSet/pg", "onePerOwner": true, "pre": ["checkpoint"],
    }]));
    let pods = vec![
        pod("db", "pg-10", Some("StatefulSet/pg"), &[]),
        pod("db", "pg-2", Some("StatefulSet/pg"), &[]),
        pod("db", "pg-1", Some("StatefulSet/pg"), &[]),
    ];
    let got = pod_hooks(&p, &pods).unwrap();
    let names: Vec<&str> = got.iter().map(|h| h.pod.as_str()).collect();
    assert_eq!(names, ["pg-1"]);
}

#[test]
fn annotations_win_over_policy_hooks_on_their_pod() {
    let p = policy(json!([{"name": "policy", "pre": ["policy-freeze"], "post": ["policy-thaw"]}]));
    let pods = vec![
        pod(
            "db",
            "annotated",
            None,
            &[("pre.hook.backup.velero.io/command", r#"["velero-freeze"]"#)],
        ),
        pod("db", "plain", None, &[]),
    ];
    let got = pod_hooks(&p, &pods).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].pod, "annotated");
    assert_eq!(got[0].pre[0].command, ["velero-freeze"]);
    assert_eq!(got[0].pre[0].name, ANNOTATION_HOOK);
    assert!(got[0].post.is_empty(), "{:?}", got[0].post);
    assert_eq!(got[1].pre[0].command, ["policy-freeze"]);
    assert_eq!(got[1].post[0].command, ["policy-thaw"]);
}

#[test]
fn pods_not_running_or_outside_the_policy_get_no_hooks() {
    let p = policy(json!([{"name": "h", "pre": ["x"]}]));
    let mut pending = pod("db", "pending", None, &[]);
    pending.phase = "Pending".into();
    let outside = pod("kube-system", "x", None, &[]);
    assert!(pod_hooks(&p, &[pending, outside]).unwrap().is_empty());
}

#[test]
fn claims_shared_by_pods_form_one_group() {
    let mut a = pod("db", "a", None, &[]);
    a.volumes.push(PodClaimVolume {
        name: "shared".into(),
        claim: "shared".into(),
    });
    let mut b = pod("db", "b", None, &[]);
    b.volumes.push(PodClaimVolume {
        name: "shared".into(),
        claim: "shared".into(),
    });
    let c = pod("db", "c", None, &[]);
    let p = policy(json!([{"name": "h", "pre": ["x"]}]));
    let hooked = pod_hooks(&p, &[a.clone(), b.clone(), c.clone()]).unwrap();
    let claims = [
        ("db", "data-a"),
        ("db", "data-b"),
        ("db", "shared"),
        ("db", "data-c"),
        ("db", "lonely"),
    ];
    let got = groups(&claims, &[a, b, c], &hooked, GroupBy::Claims);
    let simple: Vec<(Vec<usize>, Vec<&str>)> = got
        .iter()
        .map(|g| {
            (
                g.claims.clone(),
                g.pods.iter().map(|i| hooked[*i].pod.as_str()).collect(),
            )
        })
        .collect();
    assert_eq!(
        simple,
        [
            (vec![0, 1, 2], vec!["a", "b"]),
            (vec![3], vec!["c"]),
            (vec![4], vec![]),
        ]
    );
}

#[test]
fn groups_widen_to_an_owner_or_a_namespace() {
    let sts = |name: &str| pod("db", name, Some("StatefulSet/pg"), &[]);
    let (a, b) = (sts("pg-0"), sts("pg-1"));
    let web = pod("db", "web", Some("Deployment/web"), &[]);
    let p = policy(json!([{"name": "h", "owner": "StatefulSet/pg", "pre": ["x"]}]));
    let all = [a, b, web];
    let hooked = pod_hooks(&p, &all).unwrap();
    let claims = [("db", "data-pg-0"), ("db", "data-pg-1"), ("db", "data-web")];
    let shape = |by| -> Vec<Vec<usize>> {
        groups(&claims, &all, &hooked, by)
            .into_iter()
            .map(|g| g.claims)
            .collect()
    };
    assert_eq!(shape(GroupBy::Claims), [vec![0], vec![1], vec![2]]);
    // The StatefulSet's claims are snapshotted together, between one
    // round of its pods' pre and post hooks.
    assert_eq!(shape(GroupBy::Owner), [vec![0, 1], vec![2]]);
    let owner = groups(&claims, &all, &hooked, GroupBy::Owner);
    assert_eq!(owner[0].pods.len(), 2, "both pods' hooks in the group");
    assert_eq!(shape(GroupBy::Namespace), [vec![0, 1, 2]]);
}
