//! Loading a policy repository: files in, typed documents with their source
//! locations and diagnostics out.
//!
//! The caller (the CLI, the controller) walks directories and reads bytes;
//! this module decodes, parses ([`crate::yaml`]), checks each document's
//! `apiVersion` and `kind`, validates it against its kind's schema
//! ([`crate::schema`]) and deserializes it. Problems become diagnostics with
//! file, line and column; a document with any problem is left out of the
//! [`PolicySet`], so later rules only ever see well-formed documents.

use std::sync::Arc;

use serde_json::Value;

use crate::diagnostic::{Code, Diagnostic, Span, did_you_mean};
use crate::model::{
    API_VERSION, BackupPolicy, Cluster, Document, Kind, RestoreRequest, StorageLocation, TrustedKey,
};
use crate::schema;
use crate::yaml::{self, MAX_FILE_BYTES, SpanIndex};

/// Where a document came from.
#[derive(Debug, Clone)]
pub struct Source {
    /// The file, as the caller named it.
    pub file: Arc<str>,
    /// Position of the document in its file, from 0.
    pub index: usize,
    /// Spans of every node of the document.
    pub spans: Arc<SpanIndex>,
}

impl Source {
    /// The span to point at for the field at `pointer` (its key where it has
    /// one, else its value, else the nearest enclosing node).
    pub fn key_span(&self, pointer: &str) -> Option<Span> {
        self.spans.key_or_value(pointer)
    }

    /// The span of the value at `pointer` (or the nearest enclosing node).
    pub fn value_span(&self, pointer: &str) -> Option<Span> {
        self.spans.value(pointer)
    }
}

/// A valid document and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    pub doc: T,
    pub source: Source,
}

/// Every valid document of a repository, by kind, in load order.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    pub storage_locations: Vec<Loaded<StorageLocation>>,
    pub clusters: Vec<Loaded<Cluster>>,
    pub policies: Vec<Loaded<BackupPolicy>>,
    pub restores: Vec<Loaded<RestoreRequest>>,
    /// The raw JSON of each valid document, for rules that look at what the
    /// user wrote rather than at the typed value.
    pub raw: Vec<(Kind, Value, Source)>,
    /// Documents that were found but failed validation, by kind and name.
    /// Rules use it to not report references to them as unresolved: the
    /// document's own errors already say what is wrong.
    pub invalid: Vec<(Kind, String)>,
}

impl PolicySet {
    pub fn storage_location(&self, name: &str) -> Option<&Loaded<StorageLocation>> {
        self.storage_locations
            .iter()
            .find(|d| d.doc.metadata.name == name)
    }

    pub fn cluster(&self, name: &str) -> Option<&Loaded<Cluster>> {
        self.clusters.iter().find(|d| d.doc.metadata.name == name)
    }

    pub fn policy(&self, name: &str) -> Option<&Loaded<BackupPolicy>> {
        self.policies.iter().find(|d| d.doc.metadata.name == name)
    }

    pub fn restore(&self, name: &str) -> Option<&Loaded<RestoreRequest>> {
        self.restores.iter().find(|d| d.doc.metadata.name == name)
    }

    /// Whether `policy` applies to the cluster named `cluster`: it names it,
    /// or its label selector matches that Cluster document's labels. The
    /// planner and the lint rules decide this the same way.
    pub fn applies(&self, policy: &BackupPolicy, cluster: &str) -> bool {
        let labels = self.cluster(cluster).map(|c| &c.doc.metadata.labels);
        policy.spec.clusters.selects(cluster, labels)
    }

    /// Every key trusted to sign backups read from the StorageLocation
    /// `location`: each Cluster's `signing.publicKey` (for that cluster) and
    /// the location's own `signing.trustedKeys`, in document order.
    pub fn trusted_keys(&self, location: &str) -> Vec<TrustedKey> {
        let mut keys: Vec<TrustedKey> = self
            .clusters
            .iter()
            .filter_map(|c| {
                let key = c.doc.spec.signing.as_ref()?.public_key.as_ref()?;
                Some(TrustedKey {
                    cluster: c.doc.metadata.name.clone(),
                    key: key.clone(),
                    trusted_until: None,
                })
            })
            .collect();
        if let Some(l) = self.storage_location(location)
            && let Some(signing) = &l.doc.spec.signing
        {
            keys.extend(signing.trusted_keys.iter().cloned());
        }
        keys
    }

    /// Whether backups of `cluster` read from `location` must be signed:
    /// some key (retired or not) is trusted for that cluster there.
    pub fn signing_required(&self, location: &str, cluster: &str) -> bool {
        self.trusted_keys(location)
            .iter()
            .any(|k| k.cluster == cluster)
    }

    /// Number of documents in the set.
    pub fn len(&self) -> usize {
        self.storage_locations.len()
            + self.clusters.len()
            + self.policies.len()
            + self.restores.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a document of `kind` named `name` exists but failed validation.
    pub fn is_invalid(&self, kind: Kind, name: &str) -> bool {
        self.invalid.iter().any(|(k, n)| *k == kind && n == name)
    }

    fn push(&mut self, doc: Document, source: Source) {
        match doc {
            Document::StorageLocation(doc) => self.storage_locations.push(Loaded { doc, source }),
            Document::Cluster(doc) => self.clusters.push(Loaded { doc, source }),
            Document::BackupPolicy(doc) => self.policies.push(Loaded { doc, source }),
            Document::RestoreRequest(doc) => self.restores.push(Loaded { doc, source }),
        }
    }
}

/// A file handed in by the caller.
#[derive(Debug, Clone, Copy)]
pub struct InputFile<'a> {
    /// How to name the file in diagnostics (usually a path relative to the
    /// repository root).
    pub path: &'a str,
    pub bytes: &'a [u8],
}

/// The result of loading: the valid documents and every problem found.
#[derive(Debug, Clone, Default)]
pub struct LoadOutcome {
    pub set: PolicySet,
    pub diagnostics: Vec<Diagnostic>,
    /// Documents seen, valid or not.
    pub documents: usize,
}

impl LoadOutcome {
    /// Appends the outcome of files that come after this one's, so that
    /// callers can load chunks of a repository in parallel and merge them in
    /// file order.
    pub fn merge(&mut self, other: LoadOutcome) {
        let LoadOutcome {
            set,
            diagnostics,
            documents,
        } = other;
        self.set.storage_locations.extend(set.storage_locations);
        self.set.clusters.extend(set.clusters);
        self.set.policies.extend(set.policies);
        self.set.restores.extend(set.restores);
        self.set.raw.extend(set.raw);
        self.set.invalid.extend(set.invalid);
        self.diagnostics.extend(diagnostics);
        self.documents += documents;
    }
}

/// Loads files into a [`PolicySet`].
pub fn load<'a>(files: impl IntoIterator<Item = InputFile<'a>>) -> LoadOutcome {
    let mut out = LoadOutcome::default();
    for file in files {
        load_file(file, &mut out);
    }
    out
}

/// Decodes a file's bytes as UTF-8 policy text, or explains why not.
pub fn decode(path: &str, bytes: &[u8]) -> Result<String, Box<Diagnostic>> {
    let unreadable = |message: String, help: &str| {
        Err(Box::new(
            Diagnostic::new(Code::UnreadableFile, message)
                .with_help(help)
                .at(path, None),
        ))
    };
    if bytes.len() > MAX_FILE_BYTES {
        return unreadable(
            format!(
                "the file is {} bytes; policy files are at most {} bytes",
                bytes.len(),
                MAX_FILE_BYTES
            ),
            "split it into smaller files, or list it in .lifeboatignore if it is not a policy file",
        );
    }
    if bytes.contains(&0) {
        return unreadable(
            "the file contains NUL bytes: it looks binary, not YAML".into(),
            "remove it from the policy directory or list it in .lifeboatignore",
        );
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let line = bytes[..e.valid_up_to()]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1;
            return unreadable(
                format!(
                    "the file is not UTF-8 text (invalid byte at offset {}, line {line})",
                    e.valid_up_to()
                ),
                "save the file as UTF-8",
            );
        }
    };
    Ok(text.strip_prefix('\u{feff}').unwrap_or(text).to_string())
}

fn load_file(file: InputFile<'_>, out: &mut LoadOutcome) {
    let text = match decode(file.path, file.bytes) {
        Ok(text) => text,
        Err(d) => {
            out.diagnostics.push(*d);
            return;
        }
    };
    let (docs, diags) = yaml::parse(file.path, &text);
    let parse_failed = !diags.is_empty();
    out.diagnostics.extend(diags);
    let path: Arc<str> = Arc::from(file.path);
    let mut seen = 0;
    for doc in docs {
        // A document with only comments (between `---` markers) is not a document.
        if doc.value.is_null() && !doc.failed {
            continue;
        }
        seen += 1;
        out.documents += 1;
        if doc.failed {
            continue;
        }
        let source = Source {
            file: path.clone(),
            index: doc.index,
            spans: Arc::new(doc.spans),
        };
        let named = named(&doc.value);
        match check_document(doc.value, &source, &mut out.diagnostics) {
            Some((kind, document, value)) => {
                out.set.raw.push((kind, value, source.clone()));
                out.set.push(document, source);
            }
            None => out.set.invalid.extend(named),
        }
    }
    if seen == 0 && !parse_failed {
        out.diagnostics.push(
            Diagnostic::new(Code::NotADocument, "the file holds no YAML documents")
                .with_help(
                    "add a lifeboat document, delete the file, or list it in .lifeboatignore",
                )
                .at(
                    file.path,
                    Some(Span {
                        line: 1,
                        column: 1,
                        end_line: 1,
                        end_column: 1,
                        ..Span::default()
                    }),
                ),
        );
    }
}

/// Checks `apiVersion`, `kind` and the schema; returns the typed document.
fn check_document(
    value: Value,
    source: &Source,
    diags: &mut Vec<Diagnostic>,
) -> Option<(Kind, Document, Value)> {
    let file = &*source.file;
    let Some(obj) = value.as_object() else {
        diags.push(
            Diagnostic::new(
                Code::NotADocument,
                "this YAML document is not a mapping, so it is not a lifeboat document",
            )
            .with_help(
                "a lifeboat document is a mapping with `apiVersion`, `kind`, `metadata` and `spec`",
            )
            .at(file, source.value_span("")),
        );
        return None;
    };
    let api_version = obj.get("apiVersion").and_then(Value::as_str);
    let kind_name = obj.get("kind").and_then(Value::as_str);
    let (Some(api_version), Some(kind_name)) = (api_version, kind_name) else {
        let missing: Vec<&str> = [("apiVersion", api_version), ("kind", kind_name)]
            .into_iter()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k)
            .collect();
        diags.push(
            Diagnostic::new(
                Code::NotADocument,
                format!("this YAML document has no `{}`, so lifeboat cannot tell what it is", missing.join("` or `")),
            )
            .with_help(format!(
                "start the document with `apiVersion: {API_VERSION}` and a `kind` (StorageLocation, Cluster, BackupPolicy or RestoreRequest), or list the file in .lifeboatignore"
            ))
            .at(file, source.value_span("")),
        );
        return None;
    };
    let Some(kind) = Kind::parse(kind_name) else {
        let suggestion = did_you_mean(kind_name, Kind::ALL.iter().map(|k| k.as_str()));
        let help = match suggestion {
            Some(s) => format!("did you mean `{s}`?"),
            None => "lifeboat knows StorageLocation, Cluster, BackupPolicy and RestoreRequest"
                .to_string(),
        };
        diags.push(
            Diagnostic::new(Code::NotADocument, format!("unknown kind `{kind_name}`"))
                .with_help(help)
                .at(file, source.value_span("/kind")),
        );
        return None;
    };
    if api_version != API_VERSION {
        diags.push(
            Diagnostic::new(
                Code::NotADocument,
                format!("unsupported apiVersion `{api_version}` for {kind}"),
            )
            .with_help(format!(
                "this version of lifeboat reads `apiVersion: {API_VERSION}`"
            ))
            .at(file, source.value_span("/apiVersion")),
        );
        return None;
    }
    let mut errors = schema::validate(kind, &value);
    let mut rejected = false;
    if kind == Kind::StorageLocation {
        rejected = inline_credentials(&value, &mut errors, source, diags);
    }
    if rejected && errors.is_empty() {
        return None;
    }
    if !errors.is_empty() {
        for e in errors {
            let span = if e.at_key {
                source.key_span(&e.pointer)
            } else {
                source.value_span(&e.pointer)
            };
            let mut d = Diagnostic::new(Code::SchemaViolation, e.message).at(file, span);
            d.help = e.help;
            diags.push(d);
        }
        return None;
    }
    match Document::from_value(kind, value.clone()) {
        Ok(doc) => Some((kind, doc, value)),
        Err(e) => {
            diags.push(
                Diagnostic::new(
                    Code::SchemaViolation,
                    format!("{kind} `{}` is invalid: {e}", name_of(&value)),
                )
                .at(file, source.value_span("")),
            );
            None
        }
    }
}

/// The kind and name of a document, when it has both.
fn named(value: &Value) -> Option<(Kind, String)> {
    let kind = Kind::parse(value.get("kind")?.as_str()?)?;
    let name = value.pointer("/metadata/name")?.as_str()?;
    Some((kind, name.to_string()))
}

/// Field names that hold credentials, compared lower-case without `-`/`_`.
const CREDENTIAL_KEYS: &[&str] = &[
    "accesskey",
    "accesskeyid",
    "secretaccesskey",
    "secretkey",
    "secret",
    "sessiontoken",
    "securitytoken",
    "accountkey",
    "storageaccountkey",
    "sastoken",
    "sas",
    "connectionstring",
    "serviceaccountkey",
    "serviceaccountjson",
    "credentialsjson",
    "privatekey",
    "clientsecret",
    "password",
    "passwd",
    "token",
    "apikey",
    "key",
    "sig",
    "signature",
    "xamzcredential",
    "xamzsignature",
    "xamzsecuritytoken",
];

fn is_credential_key(key: &str) -> bool {
    let normalized: String = key
        .chars()
        .filter(|c| !matches!(c, '-' | '_' | '.'))
        .flat_map(char::to_lowercase)
        .collect();
    CREDENTIAL_KEYS.contains(&normalized.as_str())
}

/// Whether a value holds a credential-like key anywhere inside it.
fn holds_credential_key(value: &Value) -> bool {
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(map) => {
                if map.keys().any(|k| is_credential_key(k)) {
                    return true;
                }
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    false
}

/// What in a URL holds credentials: user info (`s3://KEY:SECRET@bucket`) or
/// a credential query parameter (`?access_key=…`, an Azure SAS `sig=`).
fn url_credentials(url: &str) -> Option<&'static str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Some("user info before `@`");
    }
    let query = rest.split_once('?').map(|(_, q)| q)?;
    query
        .split('&')
        .any(|pair| is_credential_key(pair.split('=').next().unwrap_or("")))
        .then_some("a credential query parameter")
}

/// LB108: credentials written into a StorageLocation. Replaces the generic
/// unknown-field errors for credential-like keys (and any schema error about
/// a URL holding credentials, whose message would repeat the secret) with
/// one finding each that never shows the value. Returns whether it found any.
fn inline_credentials(
    value: &Value,
    errors: &mut Vec<schema::SchemaError>,
    source: &Source,
    diags: &mut Vec<Diagnostic>,
) -> bool {
    let file = &*source.file;
    let help = "move it into a Secret and reference it with `credentials.secretRef`, then rotate the credential: it is in the Git history now";
    let mut found = false;
    let mut credential_pointers: Vec<String> = Vec::new();
    errors.retain(|e| {
        let unknown_field = e.at_key && e.message.starts_with("unknown field");
        let key = e.pointer.rsplit('/').next().unwrap_or("");
        let key = key.replace("~1", "/").replace("~0", "~");
        let under_spec = e.pointer.starts_with("/spec/");
        if unknown_field && under_spec {
            let held = value.pointer(&e.pointer);
            if is_credential_key(&key) || held.is_some_and(holds_credential_key) {
                credential_pointers.push(e.pointer.clone());
                return false;
            }
        }
        true
    });
    for pointer in credential_pointers {
        found = true;
        diags.push(
            Diagnostic::new(
                Code::InlineCredentials,
                format!(
                    "`{}` holds credentials written into the policy file",
                    schema::field_name(&pointer)
                ),
            )
            .with_help(help)
            .at(file, source.key_span(&pointer)),
        );
    }
    for field in ["url", "endpoint"] {
        let pointer = format!("/spec/{field}");
        let Some(url) = value.pointer(&pointer).and_then(Value::as_str) else {
            continue;
        };
        if let Some(what) = url_credentials(url) {
            found = true;
            errors.retain(|e| e.pointer != pointer);
            diags.push(
                Diagnostic::new(
                    Code::InlineCredentials,
                    format!("`{field}` holds credentials ({what})"),
                )
                .with_help(format!("remove them from `{field}`; {help}"))
                .at(file, source.value_span(&pointer)),
            );
        }
    }
    found
}

fn name_of(value: &Value) -> &str {
    value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("?")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str) -> LoadOutcome {
        load([InputFile {
            path: "p.yaml",
            bytes: text.as_bytes(),
        }])
    }

    const LOCATION: &str = "apiVersion: lifeboat.dev/v1alpha1\nkind: StorageLocation\nmetadata:\n  name: local\nspec:\n  url: file:///var/backups\n";

    #[test]
    fn loads_a_valid_document() {
        let out = load_str(LOCATION);
        assert!(out.diagnostics.is_empty(), "{:?}", out.diagnostics);
        assert_eq!(out.set.storage_locations.len(), 1);
        assert_eq!(out.documents, 1);
        let span = out.set.storage_locations[0]
            .source
            .value_span("/spec/url")
            .unwrap();
        assert_eq!((span.line, span.column), (6, 8));
    }

    #[test]
    fn schema_errors_point_at_the_value() {
        let out = load_str(&LOCATION.replace("file:///var/backups", "ftp://x"));
        assert_eq!(out.diagnostics.len(), 1);
        let d = &out.diagnostics[0];
        assert_eq!(d.code, Code::SchemaViolation);
        assert_eq!((d.span.unwrap().line, d.span.unwrap().column), (6, 8));
        assert!(out.set.is_empty());
    }

    #[test]
    fn missing_kind_and_unknown_kind() {
        let out = load_str(
            "metadata:\n  name: x\n---\napiVersion: lifeboat.dev/v1alpha1\nkind: BackupPolcy\n",
        );
        let msgs: Vec<&str> = out.diagnostics.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(
            msgs[0],
            "this YAML document has no `apiVersion` or `kind`, so lifeboat cannot tell what it is"
        );
        assert_eq!(msgs[1], "unknown kind `BackupPolcy`");
        assert_eq!(
            out.diagnostics[1].help.as_deref(),
            Some("did you mean `BackupPolicy`?")
        );
        assert_eq!(out.diagnostics[1].span.unwrap().line, 5);
    }

    #[test]
    fn empty_binary_and_non_utf8_files() {
        for (bytes, code) in [
            (&b""[..], Code::NotADocument),
            (&b"# only a comment\n"[..], Code::NotADocument),
            (&b"\x00\x01\x02"[..], Code::UnreadableFile),
            (&b"a: \xff\xfe\n"[..], Code::UnreadableFile),
        ] {
            let out = load([InputFile {
                path: "f.yaml",
                bytes,
            }]);
            assert_eq!(out.diagnostics.len(), 1, "{bytes:?}");
            assert_eq!(out.diagnostics[0].code, code);
        }
        let big = vec![b'#'; MAX_FILE_BYTES + 1];
        let out = load([InputFile {
            path: "big.yaml",
            bytes: &big,
        }]);
        assert_eq!(out.diagnostics[0].code, Code::UnreadableFile);
    }

    #[rstest::rstest]
    #[case("  credentials:\n    accessKeyId: AKIAEXAMPLE\n    secretAccessKey: s3cr3tValue\n    secretRef:\n      name: x\n", &[(8, 5, "`accessKeyId` holds credentials"), (9, 5, "`secretAccessKey` holds credentials")])]
    #[case("  password: s3cr3tValue\n", &[(7, 3, "`password` holds credentials")])]
    #[case("  auth:\n    token: s3cr3tValue\n", &[(7, 3, "`auth` holds credentials")])]
    #[case("  endpoint: https://admin:s3cr3tValue@minio:9000\n", &[(7, 13, "`endpoint` holds credentials (user info before `@`)")])]
    fn inline_credentials_are_lb108_without_the_value(
        #[case] extra: &str,
        #[case] expect: &[(usize, usize, &str)],
    ) {
        let out = load_str(&format!("{LOCATION}{extra}"));
        let found: Vec<(usize, usize, &str)> = out
            .diagnostics
            .iter()
            .filter(|d| d.code == Code::InlineCredentials)
            .map(|d| {
                (
                    d.span.unwrap().line,
                    d.span.unwrap().column,
                    d.message.as_str(),
                )
            })
            .collect();
        let expect: Vec<(usize, usize, &str)> = expect.to_vec();
        assert_eq!(
            found.iter().map(|f| (f.0, f.1)).collect::<Vec<_>>(),
            expect.iter().map(|f| (f.0, f.1)).collect::<Vec<_>>()
        );
        for ((_, _, got), (_, _, want)) in found.iter().zip(&expect) {
            assert!(got.starts_with(want), "{got}");
        }
        for d in &out.diagnostics {
            let text = format!("{} {:?}", d.message, d.help);
            assert!(!text.contains("s3cr3tValue"), "{text}");
            assert!(!text.contains("AKIAEXAMPLE"), "{text}");
            assert!(!d.message.starts_with("unknown field `accessKeyId`"));
        }
        assert!(out.set.is_empty());
        assert!(out.set.is_invalid(Kind::StorageLocation, "local"));
    }

    #[rstest::rstest]
    #[case("s3://AKIAEXAMPLE:s3cr3tValue@bucket/prefix")]
    #[case("s3://bucket/prefix?access_key=AKIAEXAMPLE&secret_key=s3cr3tValue")]
    #[case("az://container/p?sv=2022&sig=s3cr3tValue")]
    fn credentials_in_the_url(#[case] url: &str) {
        let out = load_str(&LOCATION.replace("file:///var/backups", url));
        assert_eq!(out.diagnostics.len(), 1, "{:?}", out.diagnostics);
        let d = &out.diagnostics[0];
        assert_eq!(d.code, Code::InlineCredentials);
        assert_eq!((d.span.unwrap().line, d.span.unwrap().column), (6, 8));
        assert!(!format!("{} {:?}", d.message, d.help).contains("s3cr3tValue"));
        assert!(out.set.is_empty());
    }
}
