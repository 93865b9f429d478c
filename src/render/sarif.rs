//! SARIF 2.1.0 output, for GitHub code scanning and other SARIF viewers.
//! Columns are counted in Unicode code points (`columnKind`), as lifeboat
//! counts them everywhere.
//!
//! Every `artifactLocation.uri` is relative to `%SRCROOT%` (the repository
//! root, or `--sarif-root`), whether the paths were given relative or
//! absolute: code scanning places a result only by a path inside the
//! repository. A file outside the root keeps an absolute `file://` URI and no
//! base.

use std::path::{Component, Path, PathBuf};

use lifeboat_core::{Code, Diagnostic, Severity};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::LintReport;

fn level(severity: Severity) -> &'static str {
    match severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Info => "note",
    }
}

/// A fingerprint that survives unrelated edits: code, file and message, not
/// the line number.
fn fingerprint(d: &Diagnostic) -> String {
    let mut h = Sha256::new();
    h.update(d.code.id());
    h.update([0]);
    h.update(d.file.as_deref().unwrap_or_default());
    h.update([0]);
    h.update(&d.message);
    hex::encode(&h.finalize()[..16])
}

/// `path` without `.` and with `..` applied, lexically (the file may be gone).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// An absolute, symlink-free form of `path` as seen from `cwd`.
fn absolute(cwd: &Path, path: &Path) -> PathBuf {
    let joined = normalize(&cwd.join(path));
    joined.canonicalize().unwrap_or(joined)
}

/// Where a diagnostic's file is: relative to `root` (with `/`), or an
/// absolute `file://` URI when it lies outside.
fn artifact_location(file: &str, root: &Path, cwd: &Path) -> Value {
    let path = absolute(cwd, Path::new(file));
    match path.strip_prefix(root) {
        Ok(relative) => {
            let parts: Vec<String> = relative
                .components()
                .map(|c| percent_encode(&c.as_os_str().to_string_lossy()))
                .collect();
            json!({ "uri": parts.join("/"), "uriBaseId": "%SRCROOT%" })
        }
        Err(_) => json!({ "uri": file_uri(&path) }),
    }
}

/// `file:///abs/path` for an absolute directory.
fn file_uri(dir: &Path) -> String {
    let parts: Vec<String> = dir
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .map(|c| percent_encode(&c.as_os_str().to_string_lossy()))
        .collect();
    format!("file:///{}", parts.join("/"))
}

/// Escapes what a URI path segment cannot hold as it is (RFC 3986).
fn percent_encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The SARIF log of `report`; `root` is `%SRCROOT%` and `cwd` the directory
/// relative file names are relative to.
pub fn sarif(report: &LintReport, root: &Path, cwd: &Path) -> Value {
    let root = absolute(cwd, root);
    let rules: Vec<Value> = Code::ALL
        .iter()
        .map(|c| {
            json!({
                "id": c.id(),
                "name": c.name(),
                "shortDescription": { "text": c.summary() },
                "helpUri": super::docs_url(*c),
                "defaultConfiguration": { "level": level(c.severity()) },
            })
        })
        .collect();
    let results: Vec<Value> = report
        .diagnostics
        .iter()
        .map(|d| {
            let mut text = d.message.clone();
            if let Some(help) = &d.help {
                text.push_str(&format!(" (help: {help})"));
            }
            let mut result = json!({
                "ruleId": d.code.id(),
                "ruleIndex": Code::ALL.iter().position(|c| *c == d.code).unwrap_or(0),
                "level": level(d.severity),
                "message": { "text": text },
                "partialFingerprints": { "lifeboatDiagnostic/v1": fingerprint(d) },
            });
            if let Some(file) = &d.file {
                let mut physical = json!({
                    "artifactLocation": artifact_location(file, &root, cwd),
                });
                if let Some(s) = d.span {
                    physical["region"] = json!({
                        "startLine": s.line,
                        "startColumn": s.column,
                        "endLine": s.end_line,
                        "endColumn": s.end_column.max(if s.end_line == s.line { s.column } else { 1 }),
                    });
                }
                result["locations"] = json!([{ "physicalLocation": physical }]);
            }
            result
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {
                "driver": {
                    "name": "lifeboat",
                    "version": env!("CARGO_PKG_VERSION"),
                    "informationUri": env!("CARGO_PKG_REPOSITORY"),
                    "rules": rules,
                }
            },
            "originalUriBaseIds": {
                "%SRCROOT%": { "uri": format!("{}/", file_uri(&root)) },
            },
            "columnKind": "unicodeCodePoints",
            "results": results,
        }]
    })
}
