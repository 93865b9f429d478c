//! API fidelity (issue 10, sandbox-api): Secret `stringData`, immutable
//! objects, protobuf bodies from kubectl's generators, defaulting, the
//! `scale` subresource, kubectl Tables and watches, the request log file
//! and Pod Security admission.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use kube::Client;
use kube::api::{Api, AttachParams, Patch, PatchParams, PostParams};
use lifeboat_sandbox::Sandbox;
use serde_json::{Value, json};

use super::{code, kubectl};

async fn namespace(client: &Client, name: &str, labels: Value) {
    let api: Api<Namespace> = Api::all(client.clone());
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap(),
    )
    .await
    .unwrap();
}

fn message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

#[tokio::test]
async fn secret_string_data_is_merged_into_data_and_never_returned() {
    let sb = Sandbox::start().await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(sb.client(), "default");
    let s: Secret = serde_json::from_value(json!({"metadata": {"name": "creds"},
        "data": {"keep": "a2VlcA=="}, "stringData": {"user": "admin", "keep": "over"}}))
    .unwrap();
    let created = secrets.create(&PostParams::default(), &s).await.unwrap();
    assert!(
        created.string_data.is_none(),
        "the create answer has no stringData"
    );
    let got = secrets.get("creds").await.unwrap();
    let data = got.data.clone().unwrap();
    assert_eq!(data["user"].0, b"admin");
    assert_eq!(data["keep"].0, b"over", "stringData wins over data");
    assert!(got.string_data.is_none());
    assert_eq!(got.type_.as_deref(), Some("Opaque"));
    // Merge patch and server-side apply merge it too.
    secrets
        .patch(
            "creds",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"pass": "s3cret"}})),
        )
        .await
        .unwrap();
    secrets
        .patch(
            "creds",
            &PatchParams::apply("test").force(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "creds"}, "stringData": {"token": "t0k"}})),
        )
        .await
        .unwrap();
    let got = secrets.get("creds").await.unwrap();
    let data = got.data.unwrap();
    assert_eq!(data["pass"].0, b"s3cret");
    assert_eq!(data["token"].0, b"t0k");
    assert!(got.string_data.is_none());
    // The raw stored JSON has no stringData either (lists and watches serve it).
    let raw: Value = sb
        .client()
        .request(
            http::Request::get("/api/v1/namespaces/default/secrets")
                .body(Vec::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(!raw.to_string().contains("stringData"), "{raw}");
}

#[tokio::test]
async fn immutable_secrets_and_config_maps_refuse_changes() {
    let sb = Sandbox::start().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(sb.client(), "default");
    let cm: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "frozen"}, "immutable": true, "data": {"a": "1"}}),
    )
    .unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let e = cms
        .patch(
            "frozen",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"a": "2"}})),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), 422);
    assert_eq!(
        message(&e),
        "ConfigMap \"frozen\" is invalid: data: Forbidden: field is immutable when `immutable` is set"
    );
    let e = cms
        .patch(
            "frozen",
            &PatchParams::default(),
            &Patch::Merge(json!({"immutable": false})),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), 422);
    assert!(
        message(&e).contains("immutable: Forbidden"),
        "{}",
        message(&e)
    );
    // Metadata may still change.
    cms.patch(
        "frozen",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
    )
    .await
    .unwrap();
    let secrets: Api<Secret> = Api::namespaced(sb.client(), "default");
    let s: Secret = serde_json::from_value(
        json!({"metadata": {"name": "frozen"}, "immutable": true, "stringData": {"k": "v"}}),
    )
    .unwrap();
    secrets.create(&PostParams::default(), &s).await.unwrap();
    let e = secrets
        .patch(
            "frozen",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"k": "changed"}})),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), 422);
    assert_eq!(
        message(&e),
        "Secret \"frozen\" is invalid: data: Forbidden: field is immutable when `immutable` is set"
    );
}

#[tokio::test]
async fn defaulted_fields_are_present() {
    let sb = Sandbox::start().await.unwrap();
    let client = sb.client();
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]}]}}}}))
    .unwrap();
    deps.create(&PostParams::default(), &d).await.unwrap();
    let v = serde_json::to_value(deps.get("web").await.unwrap()).unwrap();
    let spec = &v["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["revisionHistoryLimit"], 10);
    assert_eq!(spec["progressDeadlineSeconds"], 600);
    assert_eq!(spec["strategy"]["type"], "RollingUpdate");
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    let pod = &spec["template"]["spec"];
    for (k, want) in [
        ("restartPolicy", json!("Always")),
        ("dnsPolicy", json!("ClusterFirst")),
        ("schedulerName", json!("default-scheduler")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("securityContext", json!({})),
    ] {
        assert_eq!(pod[k], want, "{k}");
    }
    let c = &pod["containers"][0];
    assert_eq!(c["imagePullPolicy"], "Always", "no tag means latest");
    assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
    assert_eq!(c["terminationMessagePolicy"], "File");
    assert_eq!(c["ports"][0]["protocol"], "TCP");
    // An update that leaves a defaulted field out gets it back.
    deps.patch(
        "web",
        &PatchParams::default(),
        &Patch::Json::<()>(
            serde_json::from_value(json!([{"op": "remove", "path": "/spec/revisionHistoryLimit"}]))
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    let again = deps.get("web").await.unwrap();
    assert_eq!(again.spec.unwrap().revision_history_limit, Some(10));

    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let s: Service = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}))
    .unwrap();
    svcs.create(&PostParams::default(), &s).await.unwrap();
    let v = serde_json::to_value(svcs.get("web").await.unwrap()).unwrap();
    let spec = &v["spec"];
    assert_eq!(spec["type"], "ClusterIP");
    assert_eq!(spec["sessionAffinity"], "None");
    assert_eq!(spec["ipFamilies"], json!(["IPv4"]));
    assert_eq!(spec["ipFamilyPolicy"], "SingleStack");
    assert_eq!(spec["internalTrafficPolicy"], "Cluster");
    assert_eq!(spec["clusterIPs"], json!([spec["clusterIP"]]));
    assert_eq!(spec["ports"][0]["targetPort"], 80);

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let p: Pod = serde_json::from_value(json!({"metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}))
    .unwrap();
    pods.create(&PostParams::default(), &p).await.unwrap();
    let v = serde_json::to_value(pods.get("p").await.unwrap()).unwrap();
    assert_eq!(
        v["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );
    assert_eq!(v["spec"]["enableServiceLinks"], true);
    assert_eq!(v["spec"]["serviceAccountName"], "default");
}

#[tokio::test]
async fn scale_subresource_reads_and_writes_replicas() {
    let sb = Sandbox::start().await.unwrap();
    let deps: Api<Deployment> = Api::namespaced(sb.client(), "default");
    let d: Deployment = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1"}]}}}}))
    .unwrap();
    deps.create(&PostParams::default(), &d).await.unwrap();
    let s = deps.get_scale("web").await.unwrap();
    assert_eq!(s.spec.unwrap().replicas, Some(2));
    assert_eq!(s.status.unwrap().selector.as_deref(), Some("app=web"));
    deps.patch_scale(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 4}})),
    )
    .await
    .unwrap();
    assert_eq!(
        deps.get("web").await.unwrap().spec.unwrap().replicas,
        Some(4)
    );
    let mut s = deps.get_scale("web").await.unwrap();
    s.spec.as_mut().unwrap().replicas = Some(1);
    deps.replace_scale("web", &PostParams::default(), &s)
        .await
        .unwrap();
    assert_eq!(
        deps.get("web").await.unwrap().spec.unwrap().replicas,
        Some(1)
    );
    // The old resourceVersion is stale now.
    let e = deps
        .replace_scale("web", &PostParams::default(), &s)
        .await
        .unwrap_err();
    assert_eq!(code(&e), 409);
}

#[tokio::test]
async fn pod_security_admission_enforces_the_namespace_level() {
    let sb = Sandbox::start().await.unwrap();
    let client = sb.client();
    namespace(
        &client,
        "base",
        json!({"pod-security.kubernetes.io/enforce": "baseline"}),
    )
    .await;
    namespace(
        &client,
        "strict",
        json!({"pod-security.kubernetes.io/enforce": "restricted"}),
    )
    .await;
    let privileged: Pod = serde_json::from_value(json!({"metadata": {"name": "mover"},
        "spec": {"containers": [{"name": "mover", "image": "x:1", "securityContext": {"privileged": true}}]}}))
    .unwrap();
    let e = Api::<Pod>::namespaced(client.clone(), "base")
        .create(&PostParams::default(), &privileged)
        .await
        .unwrap_err();
    assert_eq!(code(&e), 403);
    assert_eq!(
        message(&e),
        "pods \"mover\" is forbidden: violates PodSecurity \"baseline:latest\": privileged (container \"mover\" must not set securityContext.privileged=true)"
    );
    // A pod that passes restricted except for running as root.
    let root: Pod = serde_json::from_value(json!({"metadata": {"name": "root"},
        "spec": {"securityContext": {"runAsUser": 0, "runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": "x:1", "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}}))
    .unwrap();
    let strict: Api<Pod> = Api::namespaced(client.clone(), "strict");
    let e = strict
        .create(&PostParams::default(), &root)
        .await
        .unwrap_err();
    assert_eq!(code(&e), 403);
    assert!(
        message(&e).ends_with(
            "violates PodSecurity \"restricted:latest\": runAsUser=0 (pod must not set runAsUser=0)"
        ),
        "{}",
        message(&e)
    );
    let mut fine = root.clone();
    fine.spec
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .run_as_user = Some(1000);
    strict.create(&PostParams::default(), &fine).await.unwrap();
    // Workloads are admitted (with a warning).
    let d: Deployment = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1", "securityContext": {"privileged": true}}]}}}}))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), "base")
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
}

#[tokio::test]
async fn request_log_file_has_one_line_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("requests.jsonl");
    let sb = Sandbox::builder()
        .request_log(&path)
        .exec_handler(|_| lifeboat_sandbox::ExecOutput::exit(3, "", "boom"))
        .start()
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(sb.client(), "default");
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "a"}, "data": {"k": "v"}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let _ = cms.get("missing").await.unwrap_err();
    let pods: Api<Pod> = Api::namespaced(sb.client(), "default");
    let p: Pod = serde_json::from_value(json!({"metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "x:1"}]}}))
    .unwrap();
    pods.create(&PostParams::default(), &p).await.unwrap();
    let mut proc = pods
        .exec("p", ["false"], &AttachParams::default().stderr(true))
        .await
        .unwrap();
    let status = proc.take_status().unwrap().await;
    assert!(status.is_some());
    let _ = proc.join().await;
    // The exec line is written when the command ended.
    let lines = wait_for_lines(&path, |l| l.iter().any(|x| x["subresource"] == "exec")).await;
    let create = lines
        .iter()
        .find(|l| l["verb"] == "create" && l["resource"] == "configmaps")
        .expect("the create is logged");
    assert_eq!(create["status"], 201);
    assert_eq!(create["namespace"], "default");
    assert_eq!(create["version"], "v1");
    assert!(create["time"].as_str().unwrap().ends_with('Z'));
    let get = lines
        .iter()
        .find(|l| l["verb"] == "get" && l["name"] == "missing")
        .expect("the failed get is logged");
    assert_eq!(get["status"], 404);
    let exec = lines
        .iter()
        .find(|l| l["subresource"] == "exec")
        .expect("exec is logged");
    assert_eq!(exec["exitCode"], 3);
    assert!(exec["endTime"].as_str().unwrap() >= exec["time"].as_str().unwrap());
    assert!(exec["query"].as_str().unwrap().contains("command=false"));
    let ci = lines.iter().position(|l| l == create).unwrap();
    let gi = lines.iter().position(|l| l == get).unwrap();
    assert!(ci < gi, "lines are in request order");
}

async fn wait_for_lines(path: &Path, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    for _ in 0..100 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect();
        if done(&lines) {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the request log never got the expected lines");
}

/// Collects lines until one starts with `want` (10 s at most).
async fn wait_for_line(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    seen: &mut Vec<String>,
    want: &str,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.iter().any(|l| l.starts_with(want)) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(l)) => seen.push(l),
            _ => panic!("kubectl get -w never printed {want:?}: {seen:?}"),
        }
    }
}

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    fn command(&self, args: &[&str]) -> std::process::Command {
        let home = self.kubeconfig.parent().unwrap();
        let mut c = std::process::Command::new(&self.bin);
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .env("HOME", home)
            .env("KUBECACHEDIR", home.join("cache"));
        c
    }
    async fn run(&self, args: &[&str]) -> String {
        let mut c = self.command(args);
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let out = c.output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.status.success(), "kubectl {args:?} failed:\n{text}");
            text
        })
        .await
        .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_generators_send_protobuf() {
    let Some(bin) = kubectl() else { return };
    let dir = tempfile::tempdir().unwrap();
    let sb = Sandbox::start().await.unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sb.write_kubeconfig(&kubeconfig).unwrap();
    let k = Kubectl { bin, kubeconfig };
    k.run(&["create", "namespace", "x"]).await;
    k.run(&[
        "create",
        "deployment",
        "web",
        "--image=nginx",
        "--replicas=3",
        "-n",
        "x",
    ])
    .await;
    k.run(&[
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=user=admin",
        "-n",
        "x",
    ])
    .await;
    k.run(&[
        "create",
        "configmap",
        "settings",
        "--from-literal=a=b",
        "-n",
        "x",
    ])
    .await;
    k.run(&["run", "one", "--image=busybox:1.36", "-n", "x"])
        .await;
    k.run(&["expose", "deployment", "web", "--port=80", "-n", "x"])
        .await;
    k.run(&["scale", "deployment", "web", "--replicas=5", "-n", "x"])
        .await;
    let log = sb.requests();
    assert!(
        log.iter()
            .any(|r| r.verb == "create" && r.resource == "deployments" && r.status == 201),
        "kubectl's create reached the server"
    );
    let client = sb.client();
    let d = Api::<Deployment>::namespaced(client.clone(), "x")
        .get("web")
        .await
        .unwrap();
    let spec = serde_json::to_value(d.spec.unwrap()).unwrap();
    assert_eq!(spec["replicas"], 5, "scaled through the scale subresource");
    assert_eq!(spec["selector"]["matchLabels"]["app"], "web");
    assert_eq!(spec["template"]["spec"]["containers"][0]["image"], "nginx");
    assert_eq!(spec["revisionHistoryLimit"], 10, "defaulted");
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxUnavailable"], "25%");
    assert_eq!(
        spec["template"]["spec"]["containers"][0]["terminationMessagePolicy"],
        "File"
    );
    let s = Api::<Secret>::namespaced(client.clone(), "x")
        .get("creds")
        .await
        .unwrap();
    assert_eq!(s.data.unwrap()["user"].0, b"admin");
    let c = Api::<ConfigMap>::namespaced(client.clone(), "x")
        .get("settings")
        .await
        .unwrap();
    assert_eq!(c.data.unwrap()["a"], "b");
    let p = Api::<Pod>::namespaced(client.clone(), "x")
        .get("one")
        .await
        .unwrap();
    assert_eq!(p.metadata.labels.unwrap()["run"], "one");
    let svc = Api::<Service>::namespaced(client.clone(), "x")
        .get("web")
        .await
        .unwrap();
    let port = &svc.spec.unwrap().ports.unwrap()[0];
    assert_eq!(port.port, 80);
    // Tables carry the columns a real cluster prints; once the rollout is
    // complete, all five replicas count as ready, updated and available.
    k.run(&[
        "rollout",
        "status",
        "deployment/web",
        "-n",
        "x",
        "--timeout=30s",
    ])
    .await;
    let out = k.run(&["get", "deployments", "-n", "x"]).await;
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "{out}"
    );
    assert_eq!(rows.len(), 2, "{out}");
    assert_eq!(rows[1][..4], ["web", "5/5", "5", "5"], "{out}");
    let out = k.run(&["get", "services", "-n", "x", "-o", "wide"]).await;
    assert!(
        out.contains("PORT(S)") && out.contains("80/TCP") && out.contains("app=web"),
        "{out}"
    );
    let out = k.run(&["get", "pods", "-n", "x"]).await;
    assert!(out.starts_with("NAME") && out.contains("RESTARTS"), "{out}");
    // `get -w` prints the initial rows and then every change.
    let mut watch = k
        .command(&["get", "configmaps", "-n", "x", "-w"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    wait_for_line(&mut rx, &mut seen, "settings").await;
    Api::<ConfigMap>::namespaced(client.clone(), "x")
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "later"}, "data": {"k": "v"}}))
                .unwrap(),
        )
        .await
        .unwrap();
    wait_for_line(&mut rx, &mut seen, "later").await;
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(seen[0].starts_with("NAME"), "{seen:?}");
    // Pod Security warnings reach kubectl.
    k.run(&[
        "label",
        "namespace",
        "x",
        "pod-security.kubernetes.io/enforce=restricted",
    ])
    .await;
    let out = k
        .run(&[
            "create",
            "deployment",
            "loose",
            "--image=nginx:1",
            "-n",
            "x",
        ])
        .await;
    assert!(
        out.contains("Warning: would violate PodSecurity \"restricted:latest\""),
        "{out}"
    );
}
