//! SARIF 2.1.0 output, for GitHub code scanning and other SARIF viewers.
//! Columns are counted in Unicode code points (`columnKind`), as lifeboat
//! counts them everywhere.

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

pub fn sarif(report: &LintReport) -> Value {
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
                    "artifactLocation": { "uri": file.replace('\\', "/"), "uriBaseId": "%SRCROOT%" },
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
            "columnKind": "unicodeCodePoints",
            "results": results,
        }]
    })
}
