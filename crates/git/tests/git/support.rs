//! Fixtures: a bare "remote" with a working clone, driven by the git CLI.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs git in `dir` and returns trimmed stdout; panics with stderr on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=Tester",
            "-c",
            "user.email=tester@example.com",
        ])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "protocol.file.allow=always",
        ])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A bare remote plus a working clone that pushes to it.
pub struct Fixture {
    pub tmp: tempfile::TempDir,
    pub remote: PathBuf,
    pub work: PathBuf,
}

impl Fixture {
    /// A remote whose `main` has one commit with a couple of policy files.
    pub fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let remote = tmp.path().join("remote.git");
        let work = tmp.path().join("work");
        git(
            tmp.path(),
            &["init", "--bare", "-q", remote.to_str().unwrap()],
        );
        git(tmp.path(), &["init", "-q", work.to_str().unwrap()]);
        let fx = Fixture { tmp, remote, work };
        git(
            &fx.work,
            &["remote", "add", "origin", fx.remote.to_str().unwrap()],
        );
        fx.commit(
            &[
                ("policies/a.yaml", "kind: BackupPolicy\nname: a\n"),
                ("README.md", "# policies\n"),
            ],
            "initial policies",
        );
        fx
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.remote.display())
    }

    pub fn cache(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Writes files in the clone, commits and pushes `main`; returns the new SHA.
    pub fn commit(&self, files: &[(&str, &str)], message: &str) -> String {
        for (path, content) in files {
            let p = self.work.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "-m", message]);
        git(&self.work, &["push", "-q", "origin", "HEAD:main"]);
        self.rev("main")
    }

    /// `git rev-parse` in the remote.
    pub fn rev(&self, rev: &str) -> String {
        git(&self.remote, &["rev-parse", rev])
    }

    /// Files of `rev:dir` in the remote, relative to `dir`.
    pub fn files_at(&self, rev: &str, dir: &str) -> BTreeMap<String, String> {
        let list = git(
            &self.remote,
            &["ls-tree", "-r", "--name-only", rev, "--", dir],
        );
        list.lines()
            .map(|p| {
                let rel = p
                    .strip_prefix(dir)
                    .unwrap()
                    .trim_start_matches('/')
                    .to_owned();
                (rel, git(&self.remote, &["show", &format!("{rev}:{p}")]))
            })
            .collect()
    }
}

pub fn files(entries: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
        .collect()
}
