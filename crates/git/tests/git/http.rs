//! Smart HTTP(S) with a token, through a tiny server that requires basic auth
//! and runs `git-http-backend` as CGI.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use base64::Engine as _;
use lifeboat_git::{Auth, Error, Mirror, Published, StatusCommit, StatusTarget};

use crate::support::{Fixture, files};

const BACKEND: &str = "/usr/lib/git-core/git-http-backend";
const TOKEN: &str = "tok-3f9a-secret";

/// Serves every repository under `root` on 127.0.0.1; returns the port.
fn serve(root: PathBuf, tls: Option<Arc<rustls::ServerConfig>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(tcp) = conn else { continue };
            let root = root.clone();
            let tls = tls.clone();
            std::thread::spawn(move || match tls {
                Some(cfg) => {
                    let conn = rustls::ServerConnection::new(cfg).unwrap();
                    let mut stream = rustls::StreamOwned::new(conn, tcp);
                    let _ = handle(&mut stream, &root);
                    stream.conn.send_close_notify();
                    let _ = stream.flush();
                }
                None => {
                    let mut tcp: TcpStream = tcp;
                    let _ = handle(&mut tcp, &root);
                }
            });
        }
    });
    port
}

fn read_line(s: &mut impl Read) -> std::io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if s.read(&mut byte)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&line)
        .trim_end_matches('\r')
        .to_owned())
}

/// Handles one request and closes (every response says `Connection: close`).
fn handle(s: &mut (impl Read + Write), root: &Path) -> std::io::Result<()> {
    let request = read_line(s)?;
    let mut parts = request.split(' ');
    let (method, target) = (
        parts.next().unwrap_or("").to_owned(),
        parts.next().unwrap_or("").to_owned(),
    );
    let mut headers = Vec::new();
    loop {
        let line = read_line(s)?;
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    if header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let mut body = Vec::new();
    if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            let size =
                usize::from_str_radix(read_line(s)?.split(';').next().unwrap().trim(), 16).unwrap();
            let mut chunk = vec![0; size];
            s.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk);
            read_line(s)?;
            if size == 0 {
                break;
            }
        }
    } else if let Some(len) = header("content-length") {
        body.resize(len.parse().unwrap(), 0);
        s.read_exact(&mut body)?;
    }

    // Basic auth: any user name, the token as password.
    let user = header("authorization")
        .and_then(|v| v.strip_prefix("Basic ").map(str::to_owned))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|pair| {
            pair.split_once(':')
                .filter(|(_, p)| *p == TOKEN)
                .map(|(u, _)| u.to_owned())
        });
    let Some(user) = user else {
        s.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return s.flush();
    };

    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut child = Command::new(BACKEND)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", root)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("REQUEST_METHOD", &method)
        .env("CONTENT_TYPE", header("content-type").unwrap_or_default())
        .env("CONTENT_LENGTH", body.len().to_string())
        .env(
            "HTTP_CONTENT_ENCODING",
            header("content-encoding").unwrap_or_default(),
        )
        .env("GIT_PROTOCOL", header("git-protocol").unwrap_or_default())
        .env("REMOTE_USER", user)
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let out = child.wait_with_output()?;
    writer.join().unwrap();

    // CGI response: headers (with an optional Status:), blank line, body.
    let raw = out.stdout;
    let (head_end, body_start) = match raw.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => (i, i + 4),
        None => {
            let i = raw
                .windows(2)
                .position(|w| w == b"\n\n")
                .unwrap_or(raw.len());
            (i, (i + 2).min(raw.len()))
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let mut status = "200 OK".to_owned();
    let mut response = Vec::new();
    let mut extra = String::new();
    for line in head.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        if k.eq_ignore_ascii_case("status") {
            status = v.trim().to_owned();
        } else {
            extra.push_str(&format!("{}: {}\r\n", k.trim(), v.trim()));
        }
    }
    let content = &raw[body_start..];
    response.extend_from_slice(
        format!(
            "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
            content.len()
        )
        .as_bytes(),
    );
    response.extend_from_slice(content);
    s.write_all(&response)?;
    s.flush()
}

fn token_auth(dir: &Path, token: &str) -> Auth {
    let file = dir.join("token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    Auth::from_env_or_files(Some(&file), None, None, None).unwrap()
}

fn fetch_and_publish(fx: &Fixture, url: &str, mirror: Mirror) {
    assert_eq!(mirror.fetch("main").unwrap(), fx.rev("main"));
    let out = fx.cache("out");
    mirror.checkout("main", &out).unwrap();
    assert!(out.join("policies/a.yaml").is_file());

    let target = StatusTarget::for_cluster("prod-east");
    let status = files(&[("nightly.yaml", "phase: Succeeded\n")]);
    let commit = StatusCommit {
        message: "status: prod-east".into(),
    };
    let Published::Committed { sha, attempts } = mirror
        .publish(&target, &status, &commit, &|_, _, _| false)
        .unwrap()
    else {
        panic!("expected a commit via {url}")
    };
    assert_eq!(attempts, 1);
    assert_eq!(fx.rev("lifeboat-status"), sha);
    assert_eq!(
        mirror
            .publish(&target, &status, &commit, &|_, _, _| false)
            .unwrap(),
        Published::Unchanged
    );

    // Pushed over the wire and then moved under us: retried through receive-pack.
    let other = fx.work.clone();
    let once = std::sync::atomic::AtomicBool::new(false);
    let interloper = |_: &str, _: &[u8], _: &[u8]| {
        if !once.swap(true, std::sync::atomic::Ordering::SeqCst) {
            crate::support::git(&other, &["fetch", "-q", "origin", "lifeboat-status"]);
            crate::support::git(&other, &["checkout", "-q", "-B", "status", "FETCH_HEAD"]);
            std::fs::create_dir_all(other.join("clusters/west")).unwrap();
            std::fs::write(other.join("clusters/west/p.yaml"), "west\n").unwrap();
            crate::support::git(&other, &["add", "clusters/west"]);
            crate::support::git(&other, &["commit", "-q", "-m", "west"]);
            crate::support::git(&other, &["push", "-q", "origin", "status:lifeboat-status"]);
        }
        false
    };
    let changed = files(&[("nightly.yaml", "phase: Failed\n")]);
    let Published::Committed { sha, attempts } = mirror
        .publish(&target, &changed, &commit, &interloper)
        .unwrap()
    else {
        panic!("expected a commit")
    };
    assert_eq!(attempts, 2);
    assert_eq!(fx.rev("lifeboat-status"), sha);
    assert_eq!(
        fx.files_at("lifeboat-status", "clusters/west")["p.yaml"],
        "west"
    );
}

#[test]
fn http_with_token_fetches_and_pushes() {
    let fx = Fixture::new();
    let port = serve(fx.tmp.path().to_owned(), None);
    let url = format!("http://127.0.0.1:{port}/remote.git");
    let mirror = Mirror::open(&url, &fx.cache("cache"), token_auth(fx.tmp.path(), TOKEN)).unwrap();
    fetch_and_publish(&fx, &url, mirror);
}

#[test]
fn wrong_or_missing_token_is_an_authentication_error() {
    let fx = Fixture::new();
    let port = serve(fx.tmp.path().to_owned(), None);
    let url = format!("http://127.0.0.1:{port}/remote.git");

    let auth = token_auth(fx.tmp.path(), "wrong-token-value");
    let mirror = Mirror::open(&url, &fx.cache("cache"), auth).unwrap();
    let err = mirror.fetch("main").unwrap_err();
    assert!(matches!(err, Error::AuthRejected { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("rejected authentication with a token from file"),
        "{text}"
    );
    assert!(
        text.contains(&fx.tmp.path().join("token").display().to_string()),
        "{text}"
    );
    assert!(!text.contains("wrong-token-value"), "{text}");

    let mirror = Mirror::open(&url, &fx.cache("cache2"), Auth::none()).unwrap();
    let err = mirror.fetch("main").unwrap_err();
    assert!(matches!(err, Error::AuthRejected { .. }), "{err:?}");
    assert!(err.to_string().contains("no credentials"), "{err}");
}

fn tls_server(fx: &Fixture) -> (u16, PathBuf) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![ck.cert.der().clone()], key)
    .unwrap();
    let pem = fx.tmp.path().join("server.pem");
    std::fs::write(&pem, ck.cert.pem()).unwrap();
    (serve(fx.tmp.path().to_owned(), Some(Arc::new(cfg))), pem)
}

#[test]
fn https_with_pinned_self_signed_certificate() {
    let fx = Fixture::new();
    let (port, pem) = tls_server(&fx);
    let url = format!("https://localhost:{port}/remote.git");
    let mirror = Mirror::open(&url, &fx.cache("cache"), token_auth(fx.tmp.path(), TOKEN))
        .unwrap()
        .with_pinned_certificates(&pem)
        .unwrap();
    fetch_and_publish(&fx, &url, mirror);
}

#[test]
fn https_with_unknown_certificate_is_refused() {
    let fx = Fixture::new();
    let (port, _pem) = tls_server(&fx);
    let url = format!("https://localhost:{port}/remote.git");
    let mirror = Mirror::open(&url, &fx.cache("cache"), token_auth(fx.tmp.path(), TOKEN)).unwrap();
    let err = mirror.fetch("main").unwrap_err();
    assert!(matches!(err, Error::UntrustedHost { .. }), "{err:?}");
    assert!(err.to_string().contains("pin it"), "{err}");
}

#[test]
fn a_push_refused_by_the_server_says_so() {
    let fx = Fixture::new();
    let hook = fx.remote.join("hooks/pre-receive");
    std::fs::write(
        &hook,
        "#!/bin/sh\necho 'status branch is protected' >&2\nexit 1\n",
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let port = serve(fx.tmp.path().to_owned(), None);
    let url = format!("http://127.0.0.1:{port}/remote.git");
    let mirror = Mirror::open(&url, &fx.cache("cache"), token_auth(fx.tmp.path(), TOKEN)).unwrap();
    let target = StatusTarget::for_cluster("prod-east");
    let commit = StatusCommit {
        message: "status".into(),
    };
    let err = mirror
        .publish(
            &target,
            &files(&[("a.yaml", "x\n")]),
            &commit,
            &|_, _, _| false,
        )
        .unwrap_err();
    assert!(matches!(err, Error::PushRefused { .. }), "{err:?}");
    assert!(err.to_string().contains("branch protection"), "{err}");
}

#[test]
fn a_server_that_never_answers_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accept connections and keep them open without ever replying.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{port}/remote.git");
    let mirror = Mirror::open(&url, &tmp.path().join("cache"), Auth::none())
        .unwrap()
        .with_timeout(std::time::Duration::from_secs(1));
    let started = std::time::Instant::now();
    let err = mirror.fetch("main").unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(err.to_string().contains("did not answer within"), "{err}");
}

#[test]
fn token_from_environment_names_the_variable() {
    // Setting variables is unsafe in edition 2024; PATH is always set.
    let auth = Auth::from_env_or_files(None, Some("PATH"), None, None).unwrap();
    assert!(auth.token.is_some());
    assert_eq!(
        auth.token_source.as_deref(),
        Some("environment variable PATH")
    );
    let none =
        Auth::from_env_or_files(None, Some("LIFEBOAT_SURELY_UNSET_VARIABLE"), None, None).unwrap();
    assert!(none.token.is_none());
}
