//! SSH: what can be checked without an sshd.

use lifeboat_git::{Auth, Error, Mirror};

#[test]
fn missing_key_file_is_reported_up_front() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("id_ed25519");
    let err = Auth::from_env_or_files(None, None, Some(&key), None).unwrap_err();
    assert!(matches!(err, Error::SshKey { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("id_ed25519") && text.contains("--ssh-key"),
        "{text}"
    );
}

#[test]
fn missing_known_hosts_file_is_reported_up_front() {
    let tmp = tempfile::tempdir().unwrap();
    let err = Auth::from_env_or_files(None, None, None, Some(&tmp.path().join("known_hosts")))
        .unwrap_err();
    assert!(err.to_string().contains("known_hosts"), "{err}");
}

#[test]
fn ssh_remote_that_is_down_is_unreachable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("id");
    std::fs::write(&key, "not really a key").unwrap();
    let auth = Auth {
        ssh_key: Some(key),
        ..Auth::default()
    };
    let url = format!("ssh://git@127.0.0.1:{port}/repo.git");
    let mirror = Mirror::open(&url, &tmp.path().join("cache"), auth).unwrap();
    let err = mirror.fetch("main").unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
}
