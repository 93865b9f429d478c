//! The controller's HTTP server: metrics, liveness, readiness and the Git
//! webhook that asks for an immediate reconcile.
//!
//! ```text
//! GET  /metrics  ──▶ Metrics::encode (OpenMetrics text)
//! GET  /healthz  ──▶ Health: has the loop beaten within `stall`?   200 / 503
//! GET  /readyz   ──▶ Health: is a valid policy revision loaded?    200 / 503
//! POST /webhook  ──verify signature──▶ Notify::notify_one          202 / 401
//! ```
//!
//! Webhook secrets follow the forges' own schemes: GitHub (and Gitea,
//! Forgejo) sign the body with HMAC-SHA256 under the secret, GitLab sends the
//! secret itself as a token. Every comparison is constant-time. The body is
//! never parsed: any push, to any branch, only wakes the loop, which fetches
//! and decides for itself.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tokio::sync::Notify;

use crate::metrics::{self, Metrics};

/// Largest webhook body accepted (GitHub caps payloads at 25 MB, but a
/// push event that only wakes the loop never needs more than this).
pub const WEBHOOK_BODY_LIMIT: usize = 1024 * 1024;

/// Default time without a loop iteration after which liveness fails.
pub const DEFAULT_STALL: Duration = Duration::from_secs(10 * 60);

/// Everything the handlers share.
#[derive(Debug, Clone)]
pub struct HttpState {
    /// Served on `/metrics`.
    pub metrics: Metrics,
    /// Answers `/healthz` and `/readyz`.
    pub health: Health,
    /// Notified (once per accepted webhook) to start a reconcile now.
    pub webhook: Arc<Notify>,
    /// When set, webhooks must prove they know it.
    pub webhook_secret: Option<String>,
}

/// Liveness and readiness, fed by the reconcile loop. Clones share state.
#[derive(Clone)]
pub struct Health {
    inner: Arc<Mutex<HealthState>>,
}

#[derive(Debug)]
struct HealthState {
    /// Last loop iteration, or when this `Health` was made.
    last_beat: Instant,
    stall: Duration,
    ready: bool,
}

impl fmt::Debug for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.lock();
        f.debug_struct("Health")
            .field("last_beat", &s.last_beat)
            .field("stall", &s.stall)
            .field("ready", &s.ready)
            .finish()
    }
}

impl Default for Health {
    fn default() -> Self {
        Health::new(DEFAULT_STALL)
    }
}

impl Health {
    /// Not ready; live until `stall` passes without a [`Health::beat`].
    pub fn new(stall: Duration) -> Health {
        Health {
            inner: Arc::new(Mutex::new(HealthState {
                last_beat: Instant::now(),
                stall,
                ready: false,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The loop calls this on every iteration.
    pub fn beat(&self, now: Instant) {
        let mut s = self.lock();
        if now > s.last_beat {
            s.last_beat = now;
        }
    }

    /// Ready once a valid policy revision is loaded.
    pub fn set_ready(&self, ready: bool) {
        self.lock().ready = ready;
    }

    /// Ok, or why the process should be restarted.
    pub fn live(&self, now: Instant) -> Result<(), String> {
        let s = self.lock();
        let since = now.saturating_duration_since(s.last_beat);
        if since > s.stall {
            Err(format!(
                "reconcile loop stalled: no iteration for {}s (limit {}s)",
                since.as_secs(),
                s.stall.as_secs()
            ))
        } else {
            Ok(())
        }
    }

    /// Ok, or why traffic (and the rollout) should wait.
    pub fn ready(&self) -> Result<(), String> {
        if self.lock().ready {
            Ok(())
        } else {
            Err("no valid policy revision loaded yet".to_string())
        }
    }
}

/// The routes, for serving or for embedding in another router.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route(
            "/webhook",
            post(webhook).layer(DefaultBodyLimit::max(WEBHOOK_BODY_LIMIT)),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(state)
}

/// Serves [`router`] on `listener` until `shutdown` resolves, then lets
/// requests in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics_handler(State(st): State<HttpState>) -> Response {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        st.metrics.encode(),
    )
        .into_response()
}

fn check(result: Result<(), String>) -> Response {
    match result {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn healthz(State(st): State<HttpState>) -> Response {
    check(st.health.live(Instant::now()))
}

async fn readyz(State(st): State<HttpState>) -> Response {
    check(st.health.ready())
}

async fn webhook(State(st): State<HttpState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(secret) = &st.webhook_secret
        && let Err(why) = verify(secret.as_bytes(), &headers, &body)
    {
        tracing::warn!(reason = %why, "webhook rejected");
        return (StatusCode::UNAUTHORIZED, format!("{why}\n")).into_response();
    }
    tracing::debug!(
        bytes = body.len(),
        "webhook accepted, waking the reconcile loop"
    );
    st.webhook.notify_one();
    (StatusCode::ACCEPTED, "accepted\n").into_response()
}

/// Checks the first authentication header the request carries against
/// `secret`.
fn verify(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    let text = |name: &str| {
        headers
            .get(name)
            .map(|v| v.to_str().map_err(|_| format!("{name} is not ASCII")))
    };
    if let Some(sig) = text("x-hub-signature-256") {
        let hex_sig = sig?
            .strip_prefix("sha256=")
            .ok_or("X-Hub-Signature-256 must start with sha256=")?;
        return verify_hmac(secret, body, hex_sig, "X-Hub-Signature-256");
    }
    for name in ["x-gitea-signature", "x-forgejo-signature"] {
        if let Some(sig) = text(name) {
            return verify_hmac(secret, body, sig?, name);
        }
    }
    if let Some(token) = text("x-gitlab-token") {
        let token = token?;
        // Compare digests so that neither content nor length leaks in time.
        let a = sha2_digest(token.as_bytes());
        let b = sha2_digest(secret);
        return if bool::from(a.ct_eq(&b)) {
            Ok(())
        } else {
            Err("X-Gitlab-Token does not match the webhook secret".into())
        };
    }
    Err("missing webhook signature: expected X-Hub-Signature-256, X-Gitea-Signature or X-Gitlab-Token".into())
}

fn verify_hmac(secret: &[u8], body: &[u8], hex_sig: &str, header: &str) -> Result<(), String> {
    let sig = hex::decode(hex_sig.trim()).map_err(|_| format!("{header} is not hex"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|e| e.to_string())?;
    mac.update(body);
    // verify_slice compares in constant time.
    mac.verify_slice(&sig)
        .map_err(|_| format!("{header} does not match the body signed with the webhook secret"))
}

fn sha2_digest(data: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    Sha256::digest(data).into()
}

/// `hex(HMAC-SHA256(secret, body))`, as GitHub and Gitea send it.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length; this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    struct Server {
        addr: std::net::SocketAddr,
        state: HttpState,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<std::io::Result<()>>,
    }

    async fn start(secret: Option<&str>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = HttpState {
            metrics: Metrics::new(),
            health: Health::default(),
            webhook: Arc::new(Notify::new()),
            webhook_secret: secret.map(str::to_string),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(serve(listener, state.clone(), async {
            let _ = rx.await;
        }));
        Server {
            addr,
            state,
            stop: Some(tx),
            task,
        }
    }

    struct Answer {
        status: u16,
        headers: String,
        body: String,
    }

    /// One HTTP/1.1 request over a fresh connection.
    async fn request(
        addr: std::net::SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Answer {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        // A rejected large body may close the connection before we finish.
        let _ = s.write_all(body).await;
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw).await;
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = raw.split_once("\r\n\r\n").expect("response head");
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        Answer {
            status,
            headers: head.to_ascii_lowercase(),
            body: body.to_string(),
        }
    }

    async fn webhook_wakes(st: &HttpState) -> bool {
        tokio::time::timeout(Duration::from_millis(200), st.webhook.notified())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn metrics_health_and_unknown_routes() {
        let srv = start(None).await;
        srv.state.metrics.set_revision("abc123", true);
        let m = request(srv.addr, "GET", "/metrics", &[], b"").await;
        assert_eq!(m.status, 200);
        assert!(
            m.headers
                .contains("content-type: application/openmetrics-text")
        );
        assert!(
            m.body
                .contains(r#"lifeboat_policy_revision_info{sha="abc123",valid="true"} 1"#)
        );

        let h = request(srv.addr, "GET", "/healthz", &[], b"").await;
        assert_eq!((h.status, h.body.as_str()), (200, "ok\n"));

        let r = request(srv.addr, "GET", "/readyz", &[], b"").await;
        assert_eq!(r.status, 503);
        assert!(r.body.contains("no valid policy revision"));
        srv.state.health.set_ready(true);
        assert_eq!(
            request(srv.addr, "GET", "/readyz", &[], b"").await.status,
            200
        );

        assert_eq!(
            request(srv.addr, "GET", "/nope", &[], b"").await.status,
            404
        );
        assert_eq!(
            request(srv.addr, "GET", "/webhook", &[], b"").await.status,
            405
        );
    }

    #[test]
    fn liveness_fails_after_a_stall() {
        let h = Health::new(Duration::from_secs(60));
        let t0 = Instant::now();
        h.beat(t0);
        assert!(h.live(t0 + Duration::from_secs(59)).is_ok());
        let why = h.live(t0 + Duration::from_secs(61)).unwrap_err();
        assert!(why.contains("stalled"), "{why}");
        h.beat(t0 + Duration::from_secs(61));
        assert!(h.live(t0 + Duration::from_secs(62)).is_ok());
        // A late beat with an older instant does not move time back.
        h.beat(t0);
        assert!(h.live(t0 + Duration::from_secs(100)).is_ok());
    }

    #[tokio::test]
    async fn healthz_reports_a_stalled_loop() {
        let srv = start(None).await;
        *srv.state.health.lock() = HealthState {
            last_beat: Instant::now() - Duration::from_secs(5),
            stall: Duration::from_secs(1),
            ready: true,
        };
        let h = request(srv.addr, "GET", "/healthz", &[], b"").await;
        assert_eq!(h.status, 503);
        assert!(h.body.contains("stalled"), "{}", h.body);
    }

    #[tokio::test]
    async fn webhook_without_secret_wakes_the_loop() {
        let srv = start(None).await;
        let a = request(srv.addr, "POST", "/webhook", &[], b"{}").await;
        assert_eq!(a.status, 202);
        assert!(webhook_wakes(&srv.state).await);
    }

    #[tokio::test]
    async fn webhook_signatures() {
        let srv = start(Some("s3cret")).await;
        let body = br#"{"ref":"refs/heads/main"}"#;
        let good = sign(b"s3cret", body);
        let bad = sign(b"other", body);
        let github = format!("sha256={good}");
        let github_bad = format!("sha256={bad}");
        for (headers, want) in [
            (vec![("X-Hub-Signature-256", github.as_str())], 202),
            (vec![("X-Gitea-Signature", good.as_str())], 202),
            (vec![("X-Gitlab-Token", "s3cret")], 202),
            (vec![("X-Hub-Signature-256", github_bad.as_str())], 401),
            (vec![("X-Hub-Signature-256", good.as_str())], 401),
            (vec![("X-Hub-Signature-256", "sha256=zz")], 401),
            (vec![("X-Gitea-Signature", bad.as_str())], 401),
            (vec![("X-Gitlab-Token", "s3cre")], 401),
            (vec![], 401),
        ] {
            let a = request(srv.addr, "POST", "/webhook", &headers, body).await;
            assert_eq!(a.status, want, "{headers:?}: {}", a.body);
            assert_eq!(webhook_wakes(&srv.state).await, want == 202, "{headers:?}");
            if want == 401 {
                assert!(!a.body.trim().is_empty());
            }
        }
        // The signature covers the exact body.
        let a = request(
            srv.addr,
            "POST",
            "/webhook",
            &[("X-Hub-Signature-256", &github)],
            b"{}",
        )
        .await;
        assert_eq!(a.status, 401);
    }

    #[tokio::test]
    async fn webhook_body_is_limited() {
        let srv = start(None).await;
        let big = vec![b'x'; WEBHOOK_BODY_LIMIT + 1];
        let a = request(srv.addr, "POST", "/webhook", &[], &big).await;
        assert_eq!(a.status, 413);
        assert!(!webhook_wakes(&srv.state).await);
        let fits = vec![b'x'; WEBHOOK_BODY_LIMIT];
        assert_eq!(
            request(srv.addr, "POST", "/webhook", &[], &fits)
                .await
                .status,
            202
        );
    }

    #[tokio::test]
    async fn serve_returns_on_shutdown() {
        let mut srv = start(None).await;
        srv.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), srv.task)
            .await
            .expect("server stops")
            .unwrap()
            .unwrap();
    }

    #[test]
    fn hmac_matches_a_known_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
