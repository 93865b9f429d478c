//! A throw-away Azurite blob server (Microsoft's Azure Storage emulator, an
//! npm package) for the `az://` tests. `.ci/run` installs it into
//! `target/test-deps/azurite`; without it the Azure tests skip and say so.
//!
//! Azurite serves the well-known development account path-style:
//! `http://127.0.0.1:PORT/devstoreaccount1/<container>/<blob>`.

use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Azurite's built-in development account and its published key.
pub const ACCOUNT: &str = "devstoreaccount1";
pub const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

const STARTUP: Duration = Duration::from_secs(60);

/// `target/test-deps/azurite/node_modules/.bin/azurite-blob` under the
/// workspace root, if installed; otherwise prints why the caller skips.
pub fn binary() -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let bin = root.join("target/test-deps/azurite/node_modules/.bin/azurite-blob");
    if bin.is_file() {
        Some(bin)
    } else {
        eprintln!("skipping: run .ci/run or npm install azurite into target/test-deps/azurite");
        None
    }
}

/// A running Azurite blob service; the process is killed on drop.
pub struct Azurite {
    child: Child,
    dir: TempDir,
    /// The account URL: `http://127.0.0.1:PORT/devstoreaccount1`.
    pub endpoint: String,
    addr: SocketAddr,
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Azurite {
    /// Starts Azurite on a free loopback port with its data in a temp dir
    /// and waits until it accepts connections.
    pub async fn start() -> Result<Azurite, BoxError> {
        let bin = binary().ok_or("azurite-blob is not installed")?;
        let dir = tempfile::tempdir()?;
        let port = StdListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let log = std::fs::File::create(dir.path().join("azurite.log"))?;
        let child = Command::new(&bin)
            .args(["--blobHost", "127.0.0.1", "--blobPort"])
            .arg(port.to_string())
            .arg("--location")
            .arg(dir.path().join("data"))
            .args([
                "--silent",
                "--skipApiVersionCheck",
                "--loose",
                "--disableTelemetry",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut azurite = Azurite {
            child,
            dir,
            endpoint: format!("http://{addr}/{ACCOUNT}"),
            addr,
        };
        let started = Instant::now();
        loop {
            if TcpStream::connect(addr).await.is_ok() {
                return Ok(azurite);
            }
            let exited = azurite.child.try_wait()?;
            if exited.is_some() || started.elapsed() > STARTUP {
                let log = std::fs::read_to_string(azurite.dir.path().join("azurite.log"))
                    .unwrap_or_default();
                return Err(format!(
                    "azurite-blob did not listen on {addr} (exit: {exited:?}); its output:\n{log}"
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Creates a container with a Shared Key signed `PUT ?restype=container`.
    /// object_store has no call for this, so it is one raw HTTP/1.1 request.
    pub async fn create_container(&self, name: &str) -> Result<(), BoxError> {
        let date = Timestamp::now()
            .strftime("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let version = "2021-08-06";
        // Verb, eleven empty standard headers (Content-Length 0 is signed
        // as empty), the x-ms-* headers sorted, then the resource: account
        // name followed by the request path, which here starts with it too.
        let to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n\
             /{ACCOUNT}/{ACCOUNT}/{name}\nrestype:container"
        );
        let key = base64_decode(KEY).ok_or("bad account key")?;
        let signature = base64_encode(&hmac_sha256(&key, to_sign.as_bytes()));
        let request = format!(
            "PUT /{ACCOUNT}/{name}?restype=container HTTP/1.1\r\nHost: {}\r\n\
             x-ms-date: {date}\r\nx-ms-version: {version}\r\n\
             Authorization: SharedKey {ACCOUNT}:{signature}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n",
            self.addr
        );
        let mut stream = TcpStream::connect(self.addr).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        let response = String::from_utf8_lossy(&response);
        let status = response.split(' ').nth(1).unwrap_or_default();
        if status == "201" {
            Ok(())
        } else {
            Err(format!("creating container {name} failed:\n{response}").into())
        }
    }
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().take_while(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[test]
fn base64_and_hmac_match_known_values() {
    assert_eq!(base64_encode(b"lifeboat"), "bGlmZWJvYXQ=");
    assert_eq!(base64_decode("bGlmZWJvYXQ="), Some(b"lifeboat".to_vec()));
    assert_eq!(base64_decode(KEY).map(|k| k.len()), Some(64));
    // RFC 4231, test case 2.
    let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
    assert_eq!(
        hex::encode(mac),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}
