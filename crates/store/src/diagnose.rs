//! Object storage failures in words.
//!
//! object_store reports a missing bucket as the provider's XML
//! (`<Error><Code>NoSuchBucket</Code>…`) and an unreachable endpoint as a
//! chain of nested "error sending request". [`Cause::of`] reads that chain
//! (the error codes S3 and Azure put in their bodies, object_store's
//! [`HttpErrorKind`], the I/O error kinds below it) and names the common
//! causes, so [`StoreError::Storage`](crate::StoreError::Storage) says in
//! one line what failed, where, and what to do. The provider's own detail
//! stays in the error's source chain, for `-v` and the log.

use std::error::Error as _;
use std::fmt;

use object_store::client::{HttpError, HttpErrorKind};

/// A common reason an object storage request fails.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cause {
    /// The bucket (S3, GCS) or container (Azure) does not exist.
    NoSuchBucket,
    /// The credentials are valid but may not do this.
    AccessDenied,
    /// The credentials were rejected: unknown key, wrong secret, expired
    /// token.
    BadCredentials,
    /// The bucket lives in another region than the one requests are signed
    /// for, or the endpoint redirects elsewhere.
    WrongRegion,
    /// The endpoint's host name does not resolve.
    UnknownHost,
    /// Nothing accepts connections at the endpoint.
    ConnectionRefused,
    /// The TLS handshake failed: a plain-HTTP endpoint, an untrusted or
    /// mismatched certificate.
    Tls,
    /// The endpoint did not answer in time.
    Timeout,
}

/// Error codes in provider responses, by cause. S3 (and S3-compatible
/// stores) and GCS's XML API put them in `<Code>`, Azure in `<Code>` and
/// the `x-ms-error-code` header.
const CODES: &[(&str, Cause)] = &[
    ("NoSuchBucket", Cause::NoSuchBucket),
    // Azure's (and Azurite's) message for a signature made with a wrong
    // key, whatever code accompanies it.
    (
        "Server failed to authenticate the request",
        Cause::BadCredentials,
    ),
    ("ContainerNotFound", Cause::NoSuchBucket),
    ("AccountIsDisabled", Cause::AccessDenied),
    ("AuthorizationPermissionMismatch", Cause::AccessDenied),
    ("AuthorizationFailure", Cause::AccessDenied),
    ("AccessDenied", Cause::AccessDenied),
    ("AllAccessDisabled", Cause::AccessDenied),
    ("InvalidAccessKeyId", Cause::BadCredentials),
    ("SignatureDoesNotMatch", Cause::BadCredentials),
    ("ExpiredToken", Cause::BadCredentials),
    ("InvalidToken", Cause::BadCredentials),
    ("TokenRefreshRequired", Cause::BadCredentials),
    ("AuthenticationFailed", Cause::BadCredentials),
    ("InvalidAuthenticationInfo", Cause::BadCredentials),
    ("NoAuthenticationInformation", Cause::BadCredentials),
    ("PermanentRedirect", Cause::WrongRegion),
    ("AuthorizationHeaderMalformed", Cause::WrongRegion),
    ("IllegalLocationConstraintException", Cause::WrongRegion),
    ("incorrectly configured region", Cause::WrongRegion),
];

impl Cause {
    /// The cause of `err`, when it is one of the common ones.
    pub fn of(err: &object_store::Error) -> Option<Cause> {
        let text = chain_text(err);
        if let Some((_, cause)) = CODES.iter().find(|(code, _)| text.contains(code)) {
            return Some(cause.clone());
        }
        let mut source: Option<&(dyn std::error::Error + 'static)> = err.source();
        let mut kind = None;
        while let Some(e) = source {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                match io.kind() {
                    std::io::ErrorKind::ConnectionRefused => return Some(Cause::ConnectionRefused),
                    std::io::ErrorKind::TimedOut => return Some(Cause::Timeout),
                    _ => {}
                }
            }
            if let Some(http) = e.downcast_ref::<HttpError>() {
                kind.get_or_insert(http.kind());
            }
            source = e.source();
        }
        let lower = text.to_ascii_lowercase();
        if lower.contains("connection refused") {
            return Some(Cause::ConnectionRefused);
        }
        if lower.contains("dns error") || lower.contains("failed to lookup address") {
            return Some(Cause::UnknownHost);
        }
        if [
            "certificate",
            "tls",
            "handshake",
            "invalidcontenttype",
            "corrupt message",
        ]
        .iter()
        .any(|w| lower.contains(w))
        {
            return Some(Cause::Tls);
        }
        if kind == Some(HttpErrorKind::Timeout)
            || lower.contains("timed out")
            || lower.contains("operation timed out")
        {
            return Some(Cause::Timeout);
        }
        // A 401 or 403 without a code object_store knows.
        match err {
            object_store::Error::PermissionDenied { .. } => Some(Cause::AccessDenied),
            object_store::Error::Unauthenticated { .. } => Some(Cause::BadCredentials),
            _ => None,
        }
    }
}

/// Every message of the chain, joined.
fn chain_text(err: &object_store::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// `scheme://host[:port]` of the request that failed, from object_store's
/// "Error performing GET http://… in 3ms" (none when it redacted the URL).
pub(crate) fn endpoint(err: &object_store::Error) -> Option<String> {
    let text = chain_text(err);
    // Wrappers say "Error performing list request: Error performing GET …".
    text.split("Error performing ").skip(1).find_map(|rest| {
        let uri = rest.split_whitespace().nth(1)?;
        let url = url::Url::parse(uri).ok()?;
        let host = url.host_str()?;
        Some(match url.port() {
            Some(port) => format!("{}://{host}:{port}", url.scheme()),
            None => format!("{}://{host}", url.scheme()),
        })
    })
}

/// The words of one failure: what failed, where, and what to do.
pub(crate) struct Explained<'a> {
    pub op: &'a str,
    /// The object or prefix, as `s3://bucket/prefix/file`.
    pub path: &'a str,
    pub cause: Option<&'a Cause>,
    pub endpoint: Option<&'a str>,
}

impl Explained<'_> {
    /// `s3`, `az`, `gs` or `file`, and the bucket or container, from the path.
    fn bucket(&self) -> (&str, &str) {
        let (scheme, rest) = self.path.split_once("://").unwrap_or(("", self.path));
        (scheme, rest.split('/').next().unwrap_or_default())
    }
}

impl fmt::Display for Explained<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (scheme, bucket) = self.bucket();
        let container = if scheme == "az" {
            "container"
        } else {
            "bucket"
        };
        let at = self
            .endpoint
            .map(|e| format!(" at {e}"))
            .unwrap_or_default();
        let endpoint = self.endpoint.unwrap_or("the storage endpoint");
        let (op, path) = (self.op, self.path);
        match self.cause {
            Some(Cause::NoSuchBucket) => write!(
                f,
                "{container} `{bucket}` does not exist{at} ({op} {path}); create it, or correct \
                 the {container} name in the StorageLocation's url"
            ),
            Some(Cause::AccessDenied) => write!(
                f,
                "access denied: the credentials may not {op} {path}{at}; grant them read, write, \
                 list and delete on the {container} (S3: s3:GetObject, s3:PutObject, \
                 s3:ListBucket, s3:DeleteObject; Azure: Storage Blob Data Contributor)"
            ),
            Some(Cause::BadCredentials) => write!(
                f,
                "the credentials were rejected{at} ({op} {path}); check the access key and secret \
                 (or token) of the StorageLocation's credentials, and that they have not expired"
            ),
            Some(Cause::WrongRegion) => write!(
                f,
                "{container} `{bucket}` is not in the region requests are signed for{at} ({op} \
                 {path}); set the StorageLocation's region to the {container}'s region, or its \
                 endpoint to the region's endpoint"
            ),
            Some(Cause::UnknownHost) => write!(
                f,
                "the host of {endpoint} does not resolve ({op} {path}); check the \
                 StorageLocation's endpoint (or region) and the cluster's DNS"
            ),
            Some(Cause::ConnectionRefused) => write!(
                f,
                "connection refused by {endpoint} ({op} {path}); nothing listens there: check \
                 the endpoint's host and port and that the storage service runs"
            ),
            Some(Cause::Tls) => write!(
                f,
                "the TLS handshake with {endpoint} failed ({op} {path}); check that the endpoint \
                 speaks HTTPS (a plain-HTTP endpoint needs an http:// URL) and that its \
                 certificate is valid for the host and trusted"
            ),
            Some(Cause::Timeout) => write!(
                f,
                "{endpoint} did not answer in time ({op} {path}); check the network path to it \
                 (firewall, proxy, network policy) and that the service is not overloaded"
            ),
            None => write!(
                f,
                "object storage request failed: {op} {path}{at}; check the endpoint, \
                 credentials, {container} and network"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An object_store error whose chain holds `body`, as a provider's
    /// response would.
    fn generic(body: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: body.to_string().into(),
        }
    }

    #[test]
    fn provider_codes_name_their_cause() {
        // Bodies as AWS documents them; s3s and Azurite cover the rest.
        let redirect = "Error performing GET https://s3.amazonaws.com/b?list-type=2 in 20ms - \
             Server returned non-2xx status code: 400 Bad Request: <?xml version=\"1.0\"?>\
             <Error><Code>AuthorizationHeaderMalformed</Code><Message>The authorization header \
             is malformed; the region 'us-east-1' is wrong; expecting 'eu-west-1'</Message></Error>";
        assert_eq!(Cause::of(&generic(redirect)), Some(Cause::WrongRegion));
        assert_eq!(
            endpoint(&generic(redirect)).as_deref(),
            Some("https://s3.amazonaws.com")
        );
        let bare = "Error performing GET REDACTED in 1ms - Received redirect without LOCATION, \
             this normally indicates an incorrectly configured region";
        assert_eq!(Cause::of(&generic(bare)), Some(Cause::WrongRegion));
        assert_eq!(endpoint(&generic(bare)), None);
        assert_eq!(
            Cause::of(&generic("<Error><Code>ExpiredToken</Code></Error>")),
            Some(Cause::BadCredentials)
        );
        assert_eq!(
            Cause::of(&generic(
                "<Error><Code>AuthorizationPermissionMismatch</Code></Error>"
            )),
            Some(Cause::AccessDenied)
        );
        assert_eq!(
            Cause::of(&generic(
                "error sending request: dns error: failed to lookup address"
            )),
            Some(Cause::UnknownHost)
        );
        assert_eq!(Cause::of(&generic("something else entirely")), None);
    }

    #[test]
    fn a_missing_bucket_is_named() {
        let text = Explained {
            op: "list",
            path: "s3://backups/lifeboat",
            cause: Some(&Cause::NoSuchBucket),
            endpoint: Some("http://127.0.0.1:9000"),
        }
        .to_string();
        assert!(
            text.starts_with("bucket `backups` does not exist at http://127.0.0.1:9000"),
            "{text}"
        );
        let text = Explained {
            op: "get",
            path: "az://lifeboat/prefix/lifeboat.json",
            cause: Some(&Cause::NoSuchBucket),
            endpoint: None,
        }
        .to_string();
        assert!(
            text.starts_with("container `lifeboat` does not exist ("),
            "{text}"
        );
    }
}
