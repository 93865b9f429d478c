//! Signed manifests: minisign (Ed25519) signatures over `manifest.json`
//! and restore records, and their verification against the keys Git trusts.
//!
//! ```text
//! writer:  manifest bytes ──sign(cluster key)──▶ manifest.json.minisig  (1st)
//!                         └──────────────────▶ manifest.json          (2nd: commit)
//! reader:  manifest.json + .minisig + trusted keys ──check()──▶ SignatureCheck
//!            valid / unsigned / untrusted / bad, and whether it is refused
//! ```
//!
//! The signature is an ordinary minisign signature (prehashed, with a
//! trusted comment), so `minisign -Vm manifest.json -P <public key>` checks
//! it by hand. The trusted comment binds the signature to where the manifest
//! belongs: `lifeboat backup cluster:<cluster> name:<backup> time:<RFC 3339>`
//! (`lifeboat restore …` for restore records, `name` being the request).
//! The manifest holds the SHA-256 of every other file, so one signature
//! covers the whole backup.
//!
//! Trust: every trusted key is bound to one cluster and may be retired
//! (`trusted_until`: signatures dated after it are untrusted, older ones
//! stay valid). Signing is *required* for a cluster as soon as any trusted
//! key names it; then only `Valid` backups are accepted. Otherwise an
//! unsigned backup (or one signed by a key nobody trusts) is accepted with a
//! warning. A signature that does not verify, or a manifest that disagrees
//! with its path or its trusted comment, is always refused.

use std::fmt;
use std::io::Cursor;

use jiff::Timestamp;

use crate::error::{Result, StoreError};

/// File name suffix of a signature, as minisign writes it.
pub const SIGNATURE_SUFFIX: &str = ".minisig";

/// What a signature is over: a backup manifest or a restore record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignedKind {
    Backup,
    Restore,
}

impl SignedKind {
    fn word(self) -> &'static str {
        match self {
            SignedKind::Backup => "backup",
            SignedKind::Restore => "restore",
        }
    }
}

/// A cluster's signing key: an unencrypted minisign secret key.
#[derive(Clone)]
pub struct SigningKey {
    secret: minisign::SecretKey,
    public: minisign::PublicKey,
    key_id: String,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Parses a minisign secret key file as `minisign -G -W` (or
    /// `lifeboat keys generate`) writes it: an `untrusted comment:` line and
    /// a base64 line. Password-protected keys are refused.
    pub fn parse(text: &str) -> Result<SigningKey> {
        let bad = |reason: String| StoreError::InvalidSigningKey { reason };
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let boxed = match lines.as_slice() {
            [comment, key] if comment.starts_with("untrusted comment:") => {
                format!("{comment}\n{key}\n")
            }
            [key] => format!("untrusted comment: lifeboat signing key\n{key}\n"),
            _ => {
                return Err(bad(
                    "expected an `untrusted comment:` line and a base64 line".into(),
                ));
            }
        };
        let sk_box = minisign::SecretKeyBox::from_string(&boxed).map_err(|e| bad(e.to_string()))?;
        let secret = match sk_box.into_unencrypted_secret_key() {
            Ok(secret) => secret,
            Err(e) => unchecksummed_key(&boxed).ok_or_else(|| {
                bad(format!(
                    "{e} (is it password-protected? use `minisign -G -W`)"
                ))
            })?,
        };
        if secret.is_encrypted() {
            return Err(bad(
                "the key is password-protected; lifeboat needs an unencrypted key (`minisign -G -W`)"
                    .into(),
            ));
        }
        let public =
            minisign::PublicKey::from_secret_key(&secret).map_err(|e| bad(e.to_string()))?;
        let key_id = key_id(public.keynum());
        Ok(SigningKey {
            secret,
            public,
            key_id,
        })
    }

    /// The key id, as minisign prints it (16 upper-case hex digits).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public key, base64 (`RW…`): what goes into Git.
    pub fn public_key(&self) -> String {
        self.public.to_base64()
    }

    /// Signs `data` (a manifest or record, byte for byte as stored) for
    /// `cluster`/`name`, returning the `.minisig` file.
    pub fn sign(
        &self,
        kind: SignedKind,
        cluster: &str,
        name: &str,
        time: Timestamp,
        data: &[u8],
    ) -> Result<String> {
        let trusted = trusted_comment(kind, cluster, name, time);
        let untrusted = format!("lifeboat signature, key id {}", self.key_id);
        let sig = minisign::sign(
            Some(&self.public),
            &self.secret,
            Cursor::new(data),
            Some(&trusted),
            Some(&untrusted),
        )
        .map_err(|e| StoreError::Sign(e.to_string()))?;
        Ok(sig.into_string())
    }
}

/// minisign 0.11 (the C tool; Debian bookworm and trixie ship it) writes
/// the keys of `minisign -G -W` with an all-zero checksum, which the
/// minisign crate refuses as corrupted. Such a key is accepted when it is
/// unencrypted, its checksum is all zeros, and it signs a probe that its
/// own public key verifies: a key damaged any other way still fails.
fn unchecksummed_key(boxed: &str) -> Option<minisign::SecretKey> {
    use base64::Engine as _;
    const KDF_NONE: [u8; 2] = [0, 0];
    // sig_alg(2) kdf_alg(2) chk_alg(2) salt(32) opslimit(8) memlimit(8)
    // keynum(8) sk(64) chk(32).
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(boxed.lines().nth(1)?.trim())
        .ok()?;
    if bytes.len() != 158 || bytes[2..4] != KDF_NONE || bytes[126..].iter().any(|b| *b != 0) {
        return None;
    }
    let secret = minisign::SecretKey::from_bytes(&bytes).ok()?;
    let public = minisign::PublicKey::from_secret_key(&secret).ok()?;
    let probe = b"lifeboat signing key probe";
    let sig = minisign::sign(None, &secret, Cursor::new(probe), None, None).ok()?;
    minisign::verify(&public, &sig, Cursor::new(probe), true, false, false).ok()?;
    Some(secret)
}

/// A freshly generated signing key pair, as files.
#[derive(Clone)]
pub struct GeneratedKeyPair {
    /// The secret key file (unencrypted), for the Cluster's Secret.
    pub secret_key_file: String,
    /// The public key file (`minisign -P` reads its second line).
    pub public_key_file: String,
    /// The public key, base64: `Cluster.spec.signing.publicKey`.
    pub public_key: String,
    pub key_id: String,
}

impl fmt::Debug for GeneratedKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedKeyPair")
            .field("public_key", &self.public_key)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Generates an unencrypted minisign key pair, as `minisign -G -W` would.
pub fn generate_key_pair(comment: &str) -> Result<GeneratedKeyPair> {
    let pair = minisign::KeyPair::generate_unencrypted_keypair()
        .map_err(|e| StoreError::Sign(format!("cannot generate a key pair: {e}")))?;
    let key_id = key_id(pair.pk.keynum());
    let secret_key_file = pair
        .sk
        .to_box(Some(&format!("{comment} secret key {key_id}")))
        .map_err(|e| StoreError::Sign(e.to_string()))?
        .into_string();
    let public_key = pair.pk.to_base64();
    let public_key_file =
        format!("untrusted comment: {comment} public key {key_id}\n{public_key}\n");
    Ok(GeneratedKeyPair {
        secret_key_file,
        public_key_file,
        public_key,
        key_id,
    })
}

/// A public key trusted for the backups of one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    /// The cluster whose backups this key may sign.
    pub cluster: String,
    /// The public key, base64 (`RW…`), or a whole `.pub` file.
    pub public_key: String,
    /// Retired: signatures dated after this are not trusted.
    pub trusted_until: Option<Timestamp>,
}

#[derive(Clone)]
struct ParsedKey {
    cluster: String,
    key: minisign::PublicKey,
    key_id: String,
    trusted_until: Option<Timestamp>,
}

/// The keys a location trusts, parsed.
#[derive(Clone, Default)]
pub struct Trust {
    keys: Vec<ParsedKey>,
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                self.keys
                    .iter()
                    .map(|k| format!("{}:{}", k.cluster, k.key_id)),
            )
            .finish()
    }
}

/// The last non-empty line of a key given as a bare line or a whole file.
fn last_line(text: &str) -> &str {
    text.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or_default()
}

/// Parses a base64 public key (`RW…`) or a `.pub` file (its last line).
pub fn parse_public_key(text: &str) -> std::result::Result<(String, String), String> {
    let key = minisign::PublicKey::from_base64(last_line(text)).map_err(|e| e.to_string())?;
    Ok((key.to_base64(), key_id(key.keynum())))
}

impl Trust {
    /// Parses trusted keys; a malformed key is an error naming its cluster.
    pub fn new(keys: &[TrustedKey]) -> Result<Trust> {
        let mut parsed = Vec::with_capacity(keys.len());
        for k in keys {
            let key = minisign::PublicKey::from_base64(last_line(&k.public_key)).map_err(|e| {
                StoreError::InvalidPublicKey {
                    cluster: k.cluster.clone(),
                    reason: e.to_string(),
                }
            })?;
            parsed.push(ParsedKey {
                cluster: k.cluster.clone(),
                key_id: key_id(key.keynum()),
                key,
                trusted_until: k.trusted_until,
            });
        }
        Ok(Trust { keys: parsed })
    }

    /// True when no key is trusted at all.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// True when some trusted key (retired or not) names `cluster`: its
    /// backups must then be signed.
    pub fn required_for(&self, cluster: &str) -> bool {
        self.keys.iter().any(|k| k.cluster == cluster)
    }

    /// Checks a signature over `data`, which claims to be the manifest (or
    /// record) `claimed_name` of `claimed_cluster` and is stored under
    /// `path_cluster`/`path_name`.
    pub fn check(
        &self,
        subject: &Subject<'_>,
        data: &[u8],
        signature: Option<&str>,
    ) -> SignatureCheck {
        let required = self.required_for(subject.claimed_cluster);
        let state = self.state(subject, data, signature);
        SignatureCheck {
            kind: subject.kind,
            cluster: subject.claimed_cluster.to_string(),
            name: subject.claimed_name.to_string(),
            required,
            state,
        }
    }

    fn state(&self, s: &Subject<'_>, data: &[u8], signature: Option<&str>) -> SignatureState {
        let what = s.kind.word();
        if s.claimed_cluster != s.path_cluster || s.claimed_name != s.path_name {
            return SignatureState::Bad {
                key_id: None,
                reason: format!(
                    "the {what} names cluster `{}` and {what} `{}` but is stored under \
                     clusters/{}/…/{}: it was copied or forged",
                    s.claimed_cluster, s.claimed_name, s.path_cluster, s.path_name
                ),
            };
        }
        let Some(signature) = signature else {
            return SignatureState::Unsigned;
        };
        let sig = match minisign::SignatureBox::from_string(signature) {
            Ok(sig) => sig,
            Err(e) => {
                return SignatureState::Bad {
                    key_id: None,
                    reason: format!("the signature file is not a minisign signature: {e}"),
                };
            }
        };
        let id = key_id(sig.keynum());
        let candidates: Vec<&ParsedKey> = self
            .keys
            .iter()
            .filter(|k| k.key.keynum() == sig.keynum())
            .collect();
        if candidates.is_empty() {
            return SignatureState::Untrusted {
                key_id: id,
                reason: "no key trusted in Git has this id".into(),
            };
        }
        // Keys with this id that really verify the signature (an id alone
        // proves nothing).
        let verified: Vec<&ParsedKey> = candidates
            .into_iter()
            .filter(|k| {
                minisign::verify(&k.key, &sig, Cursor::new(data), true, false, false).is_ok()
            })
            .collect();
        if verified.is_empty() {
            return SignatureState::Bad {
                key_id: Some(id),
                reason: format!(
                    "the signature does not match the {what}: it was modified after signing"
                ),
            };
        }
        let comment = match sig.trusted_comment() {
            Ok(c) => c,
            Err(e) => {
                return SignatureState::Bad {
                    key_id: Some(id),
                    reason: format!("the trusted comment cannot be read: {e}"),
                };
            }
        };
        let parsed = match parse_trusted_comment(&comment) {
            Some(p) => p,
            None => {
                return SignatureState::Bad {
                    key_id: Some(id),
                    reason: format!("the trusted comment {comment:?} is not lifeboat's"),
                };
            }
        };
        if parsed.kind != what
            || parsed.cluster != s.claimed_cluster
            || parsed.name != s.claimed_name
        {
            return SignatureState::Bad {
                key_id: Some(id),
                reason: format!(
                    "the signature is for {} `{}` of cluster `{}`, not this {what}: a genuine \
                     signature was copied",
                    parsed.kind, parsed.name, parsed.cluster
                ),
            };
        }
        let Some(key) = verified.iter().find(|k| k.cluster == s.claimed_cluster) else {
            let clusters: Vec<&str> = verified.iter().map(|k| k.cluster.as_str()).collect();
            return SignatureState::Untrusted {
                key_id: id,
                reason: format!(
                    "the key is trusted for cluster `{}`, not for `{}`",
                    clusters.join("`, `"),
                    s.claimed_cluster
                ),
            };
        };
        if let Some(until) = key.trusted_until
            && parsed.time > until
        {
            return SignatureState::Untrusted {
                key_id: id,
                reason: format!(
                    "the key was retired at {until} (trustedUntil) and the signature is dated {}",
                    parsed.time
                ),
            };
        }
        SignatureState::Valid {
            key_id: id,
            signed_at: parsed.time,
        }
    }
}

/// What a signature is checked for.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub kind: SignedKind,
    /// Cluster and name from the object's path.
    pub path_cluster: &'a str,
    pub path_name: &'a str,
    /// Cluster and name the manifest or record itself states.
    pub claimed_cluster: &'a str,
    pub claimed_name: &'a str,
}

/// The state of a signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureState {
    /// Signed by a key trusted for the backup's cluster, in its time.
    Valid {
        key_id: String,
        signed_at: Timestamp,
    },
    /// No `manifest.json.minisig`.
    Unsigned,
    /// Signed by a key Git does not trust for this cluster (unknown,
    /// another cluster's, or retired before the signature's time).
    Untrusted { key_id: String, reason: String },
    /// The signature does not verify, or the manifest disagrees with its
    /// path or its signature.
    Bad {
        key_id: Option<String>,
        reason: String,
    },
}

/// The outcome of checking one signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureCheck {
    pub kind: SignedKind,
    /// The cluster the manifest claims.
    pub cluster: String,
    /// The backup (or restore request) name the manifest claims.
    pub name: String,
    /// Whether a trusted key names the cluster (then only `Valid` passes).
    pub required: bool,
    pub state: SignatureState,
}

impl SignatureCheck {
    /// `valid`, `unsigned`, `untrusted` or `bad` (the `SIGNED` column).
    pub fn label(&self) -> &'static str {
        match self.state {
            SignatureState::Valid { .. } => "valid",
            SignatureState::Unsigned => "unsigned",
            SignatureState::Untrusted { .. } => "untrusted",
            SignatureState::Bad { .. } => "bad",
        }
    }

    /// The signer's key id, when there is a signature.
    pub fn key_id(&self) -> Option<&str> {
        match &self.state {
            SignatureState::Valid { key_id, .. } | SignatureState::Untrusted { key_id, .. } => {
                Some(key_id)
            }
            SignatureState::Bad { key_id, .. } => key_id.as_deref(),
            SignatureState::Unsigned => None,
        }
    }

    /// True when the backup may be read (restored, counted by the planner).
    pub fn accepted(&self) -> bool {
        match self.state {
            SignatureState::Valid { .. } => true,
            SignatureState::Unsigned | SignatureState::Untrusted { .. } => !self.required,
            SignatureState::Bad { .. } => false,
        }
    }

    /// Why the backup must not be read, or `None`.
    pub fn refusal(&self) -> Option<String> {
        if self.accepted() {
            return None;
        }
        Some(self.describe())
    }

    /// A warning for an accepted backup whose signature is not valid.
    pub fn warning(&self) -> Option<String> {
        match self.state {
            SignatureState::Valid { .. } | SignatureState::Bad { .. } => None,
            _ if self.required => None,
            _ => Some(format!(
                "{} (accepted: no key in Git is trusted for cluster `{}`, so signing is not \
                 required for it)",
                self.describe(),
                self.cluster
            )),
        }
    }

    /// One sentence about the signature, naming the key id and the claimed
    /// cluster.
    pub fn describe(&self) -> String {
        let what = self.kind.word();
        let subject = format!("{what} `{}` (claims cluster `{}`)", self.name, self.cluster);
        match &self.state {
            SignatureState::Valid { key_id, signed_at } => {
                format!("{subject} is signed by trusted key {key_id} at {signed_at}")
            }
            SignatureState::Unsigned => format!(
                "{subject} is not signed{}",
                if self.required {
                    " although keys are trusted for that cluster: it may be forged, or was \
                     written before signing was set up"
                } else {
                    ""
                }
            ),
            SignatureState::Untrusted { key_id, reason } => {
                format!("{subject} is signed by untrusted key {key_id}: {reason}")
            }
            SignatureState::Bad { key_id, reason } => format!(
                "{subject} has a bad signature{}: {reason}",
                key_id
                    .as_deref()
                    .map(|k| format!(" (key {k})"))
                    .unwrap_or_default()
            ),
        }
    }
}

/// A minisign key id as the minisign CLI prints it.
fn key_id(keynum: &[u8]) -> String {
    let mut le = [0u8; 8];
    let n = keynum.len().min(8);
    le[..n].copy_from_slice(&keynum[..n]);
    format!("{:016X}", u64::from_le_bytes(le))
}

fn trusted_comment(kind: SignedKind, cluster: &str, name: &str, time: Timestamp) -> String {
    format!(
        "lifeboat {} cluster:{cluster} name:{name} time:{}",
        kind.word(),
        Timestamp::from_second(time.as_second()).unwrap_or(time)
    )
}

struct Comment {
    kind: String,
    cluster: String,
    name: String,
    time: Timestamp,
}

fn parse_trusted_comment(comment: &str) -> Option<Comment> {
    let mut words = comment.split_whitespace();
    if words.next()? != "lifeboat" {
        return None;
    }
    let kind = words.next()?.to_string();
    let (mut cluster, mut name, mut time) = (None, None, None);
    for word in words {
        let (key, value) = word.split_once(':')?;
        match key {
            "cluster" => cluster = Some(value.to_string()),
            "name" => name = Some(value.to_string()),
            "time" => time = Some(value.parse().ok()?),
            _ => {}
        }
    }
    Some(Comment {
        kind,
        cluster: cluster?,
        name: name?,
        time: time?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `key` re-encoded with its checksum zeroed (as minisign 0.11 writes
    /// `-W` keys) and, optionally, one secret byte flipped.
    fn zero_checksum(key: &str, flip: Option<usize>) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut lines = key.lines();
        let comment = lines.next().unwrap();
        let mut bytes = b64.decode(lines.next().unwrap()).unwrap();
        bytes[126..].fill(0);
        if let Some(i) = flip {
            bytes[i] ^= 1;
        }
        format!("{comment}\n{}\n", b64.encode(bytes))
    }

    #[test]
    fn keys_without_a_checksum_are_accepted_only_when_whole() {
        let pair = generate_key_pair("t").unwrap();
        let parsed = SigningKey::parse(&zero_checksum(&pair.secret_key_file, None)).unwrap();
        assert_eq!(parsed.public_key(), pair.public_key);
        // A flipped bit in the seed: the probe signature fails.
        let err = SigningKey::parse(&zero_checksum(&pair.secret_key_file, Some(70))).unwrap_err();
        assert!(err.to_string().contains("Corrupted key"), "{err}");
    }

    fn subject<'a>(cluster: &'a str, name: &'a str) -> Subject<'a> {
        Subject {
            kind: SignedKind::Backup,
            path_cluster: cluster,
            path_name: name,
            claimed_cluster: cluster,
            claimed_name: name,
        }
    }

    fn trust(keys: &[(&str, &str, Option<&str>)]) -> Trust {
        let keys: Vec<TrustedKey> = keys
            .iter()
            .map(|(c, k, u)| TrustedKey {
                cluster: c.to_string(),
                public_key: k.to_string(),
                trusted_until: u.map(|u| u.parse().expect("time")),
            })
            .collect();
        Trust::new(&keys).expect("trust")
    }

    fn pair() -> (GeneratedKeyPair, SigningKey) {
        let pair = generate_key_pair("test").expect("generate");
        let key = SigningKey::parse(&pair.secret_key_file).expect("parse");
        (pair, key)
    }

    const T: &str = "2026-01-02T03:04:05Z";

    #[test]
    fn round_trip_and_states() {
        let (a, ka) = pair();
        let (b, kb) = pair();
        assert_eq!(ka.public_key(), a.public_key);
        assert_eq!(ka.key_id(), a.key_id);
        let t: Timestamp = T.parse().expect("t");
        let data = b"{\"backupName\":\"p-1\"}\n";
        let sig = ka
            .sign(SignedKind::Backup, "prod", "p-1", t, data)
            .expect("sign");
        let trusted = trust(&[("prod", &a.public_key, None), ("dr", &b.public_key, None)]);

        let ok = trusted.check(&subject("prod", "p-1"), data, Some(&sig));
        assert_eq!(ok.label(), "valid", "{}", ok.describe());
        assert!(ok.accepted());

        // Edited after signing.
        let bad = trusted.check(
            &subject("prod", "p-1"),
            b"{\"backupName\":\"p-2\"}\n",
            Some(&sig),
        );
        assert_eq!(bad.label(), "bad");
        assert!(bad.refusal().expect("refused").contains(&a.key_id));

        // Cluster `prod` claimed, signed by dr's key.
        let sig_b = kb
            .sign(SignedKind::Backup, "prod", "p-1", t, data)
            .expect("sign");
        let wrong = trusted.check(&subject("prod", "p-1"), data, Some(&sig_b));
        assert_eq!(wrong.label(), "untrusted");
        let why = wrong.refusal().expect("refused");
        assert!(why.contains(&b.key_id) && why.contains("`prod`"), "{why}");

        // Unsigned where signing is required, and where it is not.
        let unsigned = trusted.check(&subject("prod", "p-1"), data, None);
        assert!(!unsigned.accepted());
        let elsewhere = trusted.check(&subject("test", "p-1"), data, None);
        assert!(elsewhere.accepted() && elsewhere.warning().is_some());

        // A genuine signature copied to another backup name.
        let copied = trusted.check(&subject("prod", "p-2"), data, Some(&sig));
        assert_eq!(copied.label(), "bad");
        // A manifest that names another path.
        let moved = Subject {
            path_name: "p-9",
            ..subject("prod", "p-1")
        };
        assert_eq!(trusted.check(&moved, data, Some(&sig)).label(), "bad");
    }

    #[test]
    fn retired_and_rotated_keys() {
        let (old, kold) = pair();
        let (new, knew) = pair();
        let data = b"manifest";
        let sign_at = |key: &SigningKey, time: &str| {
            key.sign(
                SignedKind::Backup,
                "prod",
                "p-1",
                time.parse().expect("t"),
                data,
            )
            .expect("sign")
        };
        let before = sign_at(&kold, "2026-01-01T00:00:00Z");
        let after = sign_at(&kold, "2026-03-01T00:00:00Z");
        let by_new = sign_at(&knew, "2026-03-01T00:00:00Z");
        let trusted = trust(&[
            ("prod", &old.public_key, Some("2026-02-01T00:00:00Z")),
            ("prod", &new.public_key, None),
        ]);
        let s = subject("prod", "p-1");
        assert_eq!(trusted.check(&s, data, Some(&before)).label(), "valid");
        assert_eq!(trusted.check(&s, data, Some(&after)).label(), "untrusted");
        assert_eq!(trusted.check(&s, data, Some(&by_new)).label(), "valid");
        // Removing the old key revokes it entirely.
        let revoked = trust(&[("prod", &new.public_key, None)]);
        assert_eq!(revoked.check(&s, data, Some(&before)).label(), "untrusted");
    }

    #[test]
    fn malformed_keys_are_refused() {
        assert!(SigningKey::parse("not a key").is_err());
        assert!(
            Trust::new(&[TrustedKey {
                cluster: "prod".into(),
                public_key: "RWxyz".into(),
                trusted_until: None,
            }])
            .is_err()
        );
        let (pair, _) = pair();
        assert_eq!(
            parse_public_key(&pair.public_key_file).expect("pub file").1,
            pair.key_id
        );
    }
}
