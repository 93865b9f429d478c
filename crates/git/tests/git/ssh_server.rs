//! SSH against a real OpenSSH server: a throw-away `sshd` on 127.0.0.1 that
//! only accepts one generated client key, serving the fixture's bare remote.
//!
//! Skips (passes, with a line on stderr) when `/usr/sbin/sshd` or `ssh-keygen`
//! is missing (install `openssh-server` / `openssh-client`), and, when not run
//! as root, when sshd does not start for the unprivileged user or refuses its
//! login (checked first with the `ssh` client: a locked account or one without
//! a shell). As root a server that does not come up is a failure.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lifeboat_git::{Auth, Error, Mirror, Published, StatusCommit, StatusTarget};

use crate::support::{Fixture, files, git};

const SSHD: &str = "/usr/sbin/sshd";

/// Output of a command, or None when it cannot be run at all.
fn run(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Makes an ed25519 key pair without passphrase at `path` (+ `.pub`); false
/// when ssh-keygen is not installed.
fn keygen(path: &Path) -> bool {
    run(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "lifeboat-test",
            "-f",
            path.to_str().unwrap(),
        ],
    )
    .is_some()
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The sshd process, killed on drop.
struct Sshd(Child);

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Sshd {
    /// True once `port` accepts connections; false when sshd exited or nothing
    /// listens after a while.
    fn wait_listening(&mut self, port: u16) -> bool {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return false;
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

/// A running sshd plus the fixture it serves.
struct Server {
    // Declared first so the server stops before the fixture's directory goes.
    _sshd: Sshd,
    fx: Fixture,
    port: u16,
    user: String,
    /// Client key listed in authorized_keys.
    client_key: PathBuf,
    /// The server's public host key line (`ssh-ed25519 AAAA… comment`).
    host_pub: String,
}

impl Server {
    /// Starts the server, or returns None (after saying why) when this machine
    /// cannot run one.
    fn start() -> Option<Server> {
        if !Path::new(SSHD).is_file() {
            eprintln!("skipping: {SSHD} not found; install openssh-server to run the SSH tests");
            return None;
        }
        let fx = Fixture::new();
        let dir = fx.tmp.path().join("ssh");
        std::fs::create_dir_all(&dir).unwrap();
        let host_key = dir.join("host_ed25519");
        let client_key = dir.join("client_ed25519");
        if !keygen(&host_key) || !keygen(&client_key) {
            eprintln!(
                "skipping: ssh-keygen not found; install openssh-client to run the SSH tests"
            );
            return None;
        }
        let host_pub = std::fs::read_to_string(host_key.with_extension("pub")).unwrap();
        let authorized = dir.join("authorized_keys");
        std::fs::copy(client_key.with_extension("pub"), &authorized).unwrap();
        let root = run("id", &["-u"]).expect("id runs") == "0";
        let user = run("id", &["-un"]).expect("id runs");
        if root {
            // The privilege separation directory sshd insists on when run as root.
            std::fs::create_dir_all("/run/sshd").unwrap();
        }

        // A port found by binding 0 may be taken again before sshd binds it: retry.
        let config = dir.join("sshd_config");
        let log = dir.join("sshd.log");
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut text = format!(
                "Port {port}\n\
                 ListenAddress 127.0.0.1\n\
                 HostKey \"{}\"\n\
                 AuthorizedKeysFile \"{}\"\n\
                 PidFile \"{}\"\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 PubkeyAuthentication yes\n\
                 StrictModes no\n\
                 UsePAM no\n",
                host_key.display(),
                authorized.display(),
                dir.join("sshd.pid").display(),
            );
            if root {
                text.push_str("PermitRootLogin prohibit-password\n");
            }
            std::fs::write(&config, text).unwrap();
            let mut sshd = Sshd(
                Command::new(SSHD)
                    .args(["-D", "-e", "-f", config.to_str().unwrap()])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(File::create(&log).unwrap())
                    .spawn()
                    .expect("sshd starts"),
            );
            if sshd.wait_listening(port) {
                let server = Server {
                    _sshd: sshd,
                    fx,
                    port,
                    user,
                    client_key,
                    host_pub,
                };
                // As root the login works (PermitRootLogin above); otherwise the
                // account may not be allowed to log in (no shell, locked): ask
                // the OpenSSH client first.
                if !root && let Err(why) = server.probe() {
                    let log = std::fs::read_to_string(&log).unwrap_or_default();
                    eprintln!(
                        "skipping: sshd refused a login by the unprivileged user {}: {why}\n{log}",
                        server.user
                    );
                    return None;
                }
                return Some(server);
            }
            drop(sshd);
            last_log = std::fs::read_to_string(&log).unwrap_or_default();
            if !last_log.contains("Address already in use") {
                break;
            }
        }
        assert!(!root, "sshd did not start:\n{last_log}");
        eprintln!("skipping: sshd refused to run as the unprivileged user {user}:\n{last_log}");
        None
    }

    /// Runs `true` over `ssh` with the client key; the client's stderr on failure.
    fn probe(&self) -> Result<(), String> {
        let known_hosts = self.known_hosts("known_hosts_probe", &self.host_pub);
        let out = Command::new("ssh")
            .args([
                "-F",
                "/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
            ])
            .args(["-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=10"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .arg("-i")
            .arg(&self.client_key)
            .args(["-p", &self.port.to_string()])
            .arg(format!("{}@127.0.0.1", self.user))
            .arg("true")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run ssh: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    fn url(&self) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            self.fx.remote.display()
        )
    }

    /// A known_hosts file with one `[127.0.0.1]:port` entry holding `key_line`.
    fn known_hosts(&self, name: &str, key_line: &str) -> PathBuf {
        let path = self.fx.tmp.path().join("ssh").join(name);
        std::fs::write(&path, format!("[127.0.0.1]:{} {key_line}", self.port)).unwrap();
        path
    }

    fn auth(&self, key: &Path, known_hosts: &Path) -> Auth {
        Auth::from_env_or_files(None, None, Some(key), Some(known_hosts)).unwrap()
    }
}

fn never_same(_: &str, _: &[u8], _: &[u8]) -> bool {
    false
}

#[test]
fn fetch_checkout_and_publish_over_ssh() {
    let Some(srv) = Server::start() else { return };
    let trusted = srv.known_hosts("known_hosts", &srv.host_pub);
    let auth = srv.auth(&srv.client_key, &trusted);
    let mirror = Mirror::open(&srv.url(), &srv.fx.cache("cache"), auth).unwrap();

    let sha = mirror.fetch("main").unwrap();
    assert_eq!(sha, srv.fx.rev("main"));
    let out = srv.fx.cache("out");
    mirror.checkout(&sha, &out).unwrap();
    assert_eq!(
        std::fs::read_to_string(out.join("policies/a.yaml")).unwrap(),
        "kind: BackupPolicy\nname: a\n"
    );

    // A later push is seen by the next fetch.
    let second = srv.fx.commit(&[("policies/b.yaml", "name: b\n")], "add b");
    assert_eq!(mirror.fetch("main").unwrap(), second);

    // Status write-back goes through a real push.
    let target = StatusTarget::for_cluster("ssh-east");
    let status = files(&[("nightly.yaml", "phase: Succeeded\n")]);
    let commit = StatusCommit {
        message: "status: ssh-east".into(),
    };
    let Published::Committed { sha: pushed, .. } = mirror
        .publish(&target, &status, &commit, &never_same)
        .unwrap()
    else {
        panic!("expected a commit")
    };
    assert_eq!(srv.fx.rev("lifeboat-status"), pushed);
    assert_eq!(
        git(
            &srv.fx.remote,
            &["show", "lifeboat-status:clusters/ssh-east/nightly.yaml"]
        ),
        "phase: Succeeded"
    );
    assert_eq!(
        mirror
            .publish(&target, &status, &commit, &never_same)
            .unwrap(),
        Published::Unchanged
    );
}

#[test]
fn changed_host_key_is_refused() {
    let Some(srv) = Server::start() else { return };
    let other = srv.fx.tmp.path().join("ssh/other_host");
    assert!(keygen(&other));
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let wrong = srv.known_hosts("known_hosts_wrong", &other_pub);
    let auth = srv.auth(&srv.client_key, &wrong);
    let mirror = Mirror::open(&srv.url(), &srv.fx.cache("cache"), auth).unwrap();

    let err = mirror.fetch("main").unwrap_err();
    assert!(matches!(err, Error::UntrustedHost { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("refusing to talk to")
            && text.contains("host key of 127.0.0.1 does not match")
            && text.contains("known_hosts_wrong"),
        "{text}"
    );
    // Nothing was fetched.
    assert!(mirror.resolve("main").is_err());
}

#[test]
fn unlisted_host_is_refused() {
    let Some(srv) = Server::start() else { return };
    let path = srv.fx.tmp.path().join("ssh/known_hosts_other");
    std::fs::write(&path, format!("git.example.com {}", srv.host_pub)).unwrap();
    let auth = srv.auth(&srv.client_key, &path);
    let mirror = Mirror::open(&srv.url(), &srv.fx.cache("cache"), auth).unwrap();

    let err = mirror.fetch("main").unwrap_err();
    assert!(matches!(err, Error::UntrustedHost { .. }), "{err:?}");
    assert!(err.to_string().contains("127.0.0.1 is not listed"), "{err}");
}

#[test]
fn key_the_server_does_not_know_is_rejected() {
    let Some(srv) = Server::start() else { return };
    let stranger = srv.fx.tmp.path().join("ssh/stranger_ed25519");
    assert!(keygen(&stranger));
    let trusted = srv.known_hosts("known_hosts", &srv.host_pub);
    let auth = srv.auth(&stranger, &trusted);
    let mirror = Mirror::open(&srv.url(), &srv.fx.cache("cache"), auth).unwrap();

    let err = mirror.fetch("main").unwrap_err();
    assert!(matches!(err, Error::AuthRejected { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("the ssh key {}", stranger.display())),
        "{text}"
    );
}
