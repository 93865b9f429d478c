//! `lifeboat sandbox serve` end to end: seeds a directory, writes the
//! kubeconfig once it listens, and answers `kubectl get all -A`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::root;

struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_answers_kubectl_get_all() {
    let kubectl = ["/usr/bin/kubectl", "/usr/local/bin/kubectl"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file());
    let Some(kubectl) = kubectl else {
        eprintln!("skipping: kubectl is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let seed = root().join("tests/fixtures/apps");
    let kc = dir.path().join("kubeconfig");
    let child = Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .args(["sandbox", "serve", "--port", "0", "--seed"])
        .arg(&seed)
        .arg("--kubeconfig")
        .arg(&kc)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = Kill(child);
    let start = Instant::now();
    while !kc.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "kubeconfig was not written"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(&kc)
        .args(["get", "all", "-A"])
        .env("HOME", dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("deployment.apps/wordpress")
            && text.contains("statefulset.apps/ledger")
            && text.contains("service/kubernetes"),
        "{text}"
    );
}
