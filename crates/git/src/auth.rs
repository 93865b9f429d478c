//! Credentials, host verification and the libgit2 callbacks that use them.
//!
//! * HTTPS/HTTP: the token is sent as the password of HTTP basic auth; the user
//!   name is [`Auth::username`] or `x-access-token` (what GitHub, GitLab and
//!   Gitea accept for tokens). It is offered once: when the server answers 401
//!   again the operation fails with [`Error::AuthRejected`] instead of looping.
//! * SSH: the private key file [`Auth::ssh_key`] (no passphrase), user name from
//!   the URL, else [`Auth::username`], else `git`.
//! * SSH host keys: when [`Auth::ssh_known_hosts`] is set, the server's key must
//!   appear in that file (OpenSSH format, plain host names, `[host]:port` for
//!   non-default ports; hashed `|1|` entries are not understood) or the
//!   connection is refused. Entries match on the host name only: the port of
//!   a `[host]:port` entry is not compared, so `host` and `[host]:2222` both
//!   cover every port of `host`. When it is not set, libgit2's own check
//!   applies: the key must be in `$HOME/.ssh/known_hosts`, otherwise the
//!   connection is refused. Nothing is ever accepted blindly.
//! * TLS: the system trust store (found by openssl-probe), plus any
//!   certificates pinned with [`crate::Mirror::with_pinned_certificates`].

use std::cell::{Cell, RefCell};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use base64::Engine as _;
use git2::{CertificateCheckStatus, Cred, CredentialType, RemoteCallbacks};

use crate::error::{Error, Result};

/// How to authenticate to the remote. `Debug` never prints the token.
#[derive(Clone, Default)]
pub struct Auth {
    /// HTTPS: sent as password (basic auth).
    pub token: Option<String>,
    /// HTTPS user name for the token (default `x-access-token`); SSH user name
    /// when the URL has none (default `git`).
    pub username: Option<String>,
    /// ssh:// private key file (OpenSSH or PEM format, no passphrase).
    pub ssh_key: Option<PathBuf>,
    /// When set, SSH host keys are checked against this known_hosts file only;
    /// otherwise against `$HOME/.ssh/known_hosts` (see the module docs).
    pub ssh_known_hosts: Option<PathBuf>,
    /// Where the token came from, for error messages ("file /x", "env GIT_TOKEN").
    /// [`Auth::from_env_or_files`] fills it in; never contains the token.
    pub token_source: Option<String>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("username", &self.username)
            .field("ssh_key", &self.ssh_key)
            .field("ssh_known_hosts", &self.ssh_known_hosts)
            .field("token_source", &self.token_source)
            .finish()
    }
}

impl Auth {
    /// No credentials: public repositories and local paths.
    pub fn none() -> Auth {
        Auth::default()
    }

    /// Builds credentials from the places a deployment keeps them. A token file
    /// wins over the environment variable; surrounding whitespace (the trailing
    /// newline of a mounted secret) is trimmed. A named file that cannot be read
    /// is an error; an unset or empty variable just means "no token". Key and
    /// known_hosts files must exist when given.
    pub fn from_env_or_files(
        token_file: Option<&Path>,
        token_env: Option<&str>,
        ssh_key: Option<&Path>,
        known_hosts: Option<&Path>,
    ) -> Result<Auth> {
        let mut auth = Auth::default();
        if let Some(path) = token_file {
            let text = std::fs::read_to_string(path).map_err(|e| Error::CredentialFile {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
            let token = text.trim();
            if token.is_empty() {
                return Err(Error::CredentialFile {
                    path: path.to_owned(),
                    reason: "the file is empty".into(),
                });
            }
            auth.token = Some(token.to_owned());
            auth.token_source = Some(format!("file {}", path.display()));
        } else if let Some(var) = token_env
            && let Ok(value) = std::env::var(var)
            && !value.trim().is_empty()
        {
            auth.token = Some(value.trim().to_owned());
            auth.token_source = Some(format!("environment variable {var}"));
        }
        for (path, what) in [(ssh_key, "ssh key"), (known_hosts, "known_hosts")] {
            if let Some(path) = path
                && let Err(e) = std::fs::metadata(path)
            {
                return Err(if what == "ssh key" {
                    Error::SshKey {
                        path: path.to_owned(),
                        reason: e.to_string(),
                    }
                } else {
                    Error::CredentialFile {
                        path: path.to_owned(),
                        reason: e.to_string(),
                    }
                });
            }
        }
        auth.ssh_key = ssh_key.map(Path::to_owned);
        auth.ssh_known_hosts = known_hosts.map(Path::to_owned);
        Ok(auth)
    }

    /// Words for error messages: which credential was (or would have been) tried.
    pub(crate) fn describe(&self, ssh: bool) -> String {
        if ssh {
            return match &self.ssh_key {
                Some(p) => format!("the ssh key {}", p.display()),
                None => "no ssh key (none configured; set --ssh-key)".into(),
            };
        }
        match (&self.token, &self.token_source) {
            (Some(_), Some(src)) => format!("a token from {src}"),
            (Some(_), None) => "a token".into(),
            (None, _) => "no credentials (none configured; set a token file or variable)".into(),
        }
    }
}

/// Removes `user:password@` from a URL so it can be shown or logged. Plain
/// paths and scp-like `git@host:path` addresses are returned unchanged (the
/// latter carry a user name, never a secret).
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.has_host() && (!u.username().is_empty() || u.password().is_some()) => {
            let _ = u.set_password(None);
            if u.scheme() != "ssh" {
                let _ = u.set_username("");
            }
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Per-operation state shared between the callbacks and the code that maps
/// libgit2's error afterwards.
#[derive(Debug, Default)]
pub(crate) struct CallState {
    /// Times the credentials callback ran.
    pub cred_calls: Cell<u32>,
    /// Set once a secret (token or key) was handed to libgit2.
    pub offered: Cell<bool>,
    /// Set when we refused to offer (more) credentials: the server rejected ours or we have none.
    pub auth_failed: Cell<bool>,
    /// Set when the ssh key file could not be used.
    pub ssh_key_error: RefCell<Option<(PathBuf, String)>>,
    /// Set when our host verification refused the server.
    pub untrusted: RefCell<Option<String>>,
    /// Per-ref rejections reported by the server during a push.
    pub push_rejections: RefCell<Vec<String>>,
}

/// Pinned TLS certificates (DER), accepted in addition to the system store.
#[derive(Debug, Clone, Default)]
pub(crate) struct Pins(pub Vec<Vec<u8>>);

impl Pins {
    pub fn load(path: &Path) -> Result<Pins> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::CredentialFile {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let mut out = Vec::new();
        let mut b64: Option<String> = None;
        for line in text.lines() {
            let line = line.trim();
            if line == "-----BEGIN CERTIFICATE-----" {
                b64 = Some(String::new());
            } else if line == "-----END CERTIFICATE-----" {
                let data = b64.take().unwrap_or_default();
                let der = base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .map_err(|e| Error::CredentialFile {
                        path: path.to_owned(),
                        reason: format!("bad PEM: {e}"),
                    })?;
                out.push(der);
            } else if let Some(buf) = b64.as_mut() {
                buf.push_str(line);
            }
        }
        if out.is_empty() {
            return Err(Error::CredentialFile {
                path: path.to_owned(),
                reason: "no PEM certificate found".into(),
            });
        }
        Ok(Pins(out))
    }
}

/// Progress clock of one network operation: every callback records the time,
/// and answers "stop" once the waiting side gave up.
#[derive(Debug)]
pub(crate) struct Watch {
    pub abort: AtomicBool,
    pub started: Instant,
    pub last_ms: AtomicU64,
}

impl Watch {
    pub fn new() -> Watch {
        Watch {
            abort: AtomicBool::new(false),
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    /// Records progress; false when the operation should abort.
    pub fn tick(&self) -> bool {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
        !self.abort.load(Ordering::Relaxed)
    }
}

/// Builds the callbacks for one network operation.
pub(crate) fn callbacks<'a>(
    auth: &'a Auth,
    pins: &'a Pins,
    state: &'a CallState,
    watch: &'a Watch,
) -> RemoteCallbacks<'a> {
    let mut cb = RemoteCallbacks::new();
    cb.credentials(move |_url, user_from_url, allowed| {
        watch.tick();
        // libgit2 calls again after the server rejected what we sent; offer
        // each credential once so a bad token fails fast instead of looping.
        // For ssh it first asks for the user name only, then for the key.
        let n = state.cred_calls.get() + 1;
        state.cred_calls.set(n);
        if n > 4 {
            state.auth_failed.set(true);
            return Err(git2::Error::from_str("too many credential requests"));
        }
        if !allowed.contains(CredentialType::USERNAME) {
            if state.offered.get() {
                state.auth_failed.set(true);
                return Err(git2::Error::from_str("credentials rejected by the remote"));
            }
            state.offered.set(true);
        }
        if allowed.contains(CredentialType::USERNAME) {
            let user = user_from_url.or(auth.username.as_deref()).unwrap_or("git");
            return Cred::username(user);
        }
        if allowed.contains(CredentialType::SSH_KEY) {
            let Some(key) = &auth.ssh_key else {
                state.auth_failed.set(true);
                return Err(git2::Error::from_str("no ssh key configured"));
            };
            if let Err(e) = std::fs::metadata(key) {
                *state.ssh_key_error.borrow_mut() = Some((key.clone(), e.to_string()));
                return Err(git2::Error::from_str("ssh key file unreadable"));
            }
            let user = user_from_url.or(auth.username.as_deref()).unwrap_or("git");
            return Cred::ssh_key(user, None, key, None);
        }
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT)
            && let Some(token) = &auth.token
        {
            let user = auth
                .username
                .as_deref()
                .or(user_from_url)
                .unwrap_or("x-access-token");
            return Cred::userpass_plaintext(user, token);
        }
        state.auth_failed.set(true);
        Err(git2::Error::from_str("no usable credentials configured"))
    });
    cb.certificate_check(move |cert, host| {
        watch.tick();
        if let Some(x509) = cert.as_x509() {
            if pins.0.iter().any(|p| p.as_slice() == x509.data()) {
                return Ok(CertificateCheckStatus::CertificateOk);
            }
            return Ok(CertificateCheckStatus::CertificatePassthrough);
        }
        if let Some(hostkey) = cert.as_hostkey()
            && let Some(path) = &auth.ssh_known_hosts
        {
            let (Some(key), Some(kind)) = (hostkey.hostkey(), hostkey.hostkey_type()) else {
                *state.untrusted.borrow_mut() = Some("the server sent no usable host key".into());
                return Err(git2::Error::from_str("no host key"));
            };
            return match known_hosts_check(path, host, kind.name(), key) {
                Ok(()) => Ok(CertificateCheckStatus::CertificateOk),
                Err(reason) => {
                    *state.untrusted.borrow_mut() = Some(reason);
                    Err(git2::Error::from_str("host key not trusted"))
                }
            };
        }
        Ok(CertificateCheckStatus::CertificatePassthrough)
    });
    cb.transfer_progress(move |_| watch.tick());
    cb.sideband_progress(move |_| watch.tick());
    cb.pack_progress(move |_, _, _| {
        watch.tick();
    });
    cb.push_transfer_progress(move |_, _, _| {
        watch.tick();
    });
    cb.push_update_reference(move |refname, status| {
        if let Some(msg) = status {
            state
                .push_rejections
                .borrow_mut()
                .push(format!("{refname}: {msg}"));
        }
        Ok(())
    });
    cb
}

/// Checks a server host key against an OpenSSH known_hosts file. `host` is
/// what libgit2 reports (the host name from the URL).
pub(crate) fn known_hosts_check(
    path: &Path,
    host: &str,
    kind: &str,
    key: &[u8],
) -> std::result::Result<(), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read known_hosts file {}: {e}", path.display()))?;
    let mut host_seen = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('@') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(hosts), Some(line_kind), Some(b64)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let matches = hosts.split(',').any(|h| {
            let bare = h
                .strip_prefix('[')
                .and_then(|r| r.split_once("]:"))
                .map_or(h, |(n, _)| n);
            bare.eq_ignore_ascii_case(host)
        });
        if !matches {
            continue;
        }
        host_seen = true;
        if line_kind == kind
            && base64::engine::general_purpose::STANDARD
                .decode(b64)
                .is_ok_and(|k| k == key)
        {
            return Ok(());
        }
    }
    Err(if host_seen {
        format!(
            "the {kind} host key of {host} does not match {}; the server key changed or someone is in between — \
             verify the new key and update the file",
            path.display()
        )
    } else {
        format!(
            "{host} is not listed in {}; add its key (ssh-keyscan {host}) after verifying it",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_credentials() {
        assert_eq!(
            redact_url("https://user:secret@example.com/a.git"),
            "https://example.com/a.git"
        );
        assert_eq!(
            redact_url("https://tok@example.com/a.git"),
            "https://example.com/a.git"
        );
        assert_eq!(
            redact_url("ssh://git:pw@example.com/a.git"),
            "ssh://git@example.com/a.git"
        );
        assert_eq!(redact_url("git@example.com:a.git"), "git@example.com:a.git");
        assert_eq!(redact_url("/srv/repo.git"), "/srv/repo.git");
    }

    #[test]
    fn debug_hides_token() {
        let auth = Auth {
            token: Some("hunter2".into()),
            ..Auth::default()
        };
        let text = format!("{auth:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("<redacted>"));
    }

    #[test]
    fn known_hosts_matching() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        let key = b"keybytes";
        let b64 = base64::engine::general_purpose::STANDARD.encode(key);
        std::fs::write(&path, format!("# c\nother.example ssh-rsa AAAA\n[git.example]:2222,git2.example ssh-ed25519 {b64}\n"))
            .unwrap();
        assert!(known_hosts_check(&path, "git.example", "ssh-ed25519", key).is_ok());
        assert!(known_hosts_check(&path, "git2.example", "ssh-ed25519", key).is_ok());
        let err = known_hosts_check(&path, "git.example", "ssh-ed25519", b"other").unwrap_err();
        assert!(err.contains("does not match"), "{err}");
        let err = known_hosts_check(&path, "unknown.example", "ssh-ed25519", key).unwrap_err();
        assert!(err.contains("not listed"), "{err}");
    }

    #[test]
    fn token_file_wins_and_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "abc\n").unwrap();
        let auth =
            Auth::from_env_or_files(Some(&path), Some("LIFEBOAT_GIT_TEST_UNSET_VAR"), None, None)
                .unwrap();
        assert_eq!(auth.token.as_deref(), Some("abc"));
        assert!(auth.describe(false).contains("file"));
        let missing = dir.path().join("nope");
        let err = Auth::from_env_or_files(Some(&missing), None, None, None).unwrap_err();
        assert!(err.to_string().contains("nope"));
        let err = Auth::from_env_or_files(None, None, Some(&missing), None).unwrap_err();
        assert!(matches!(err, Error::SshKey { .. }), "{err}");
    }
}
