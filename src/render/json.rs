//! The JSON format: `{"diagnostics": [...], "summary": {...}}`.

use lifeboat_core::Severity;
use serde_json::{Value, json};

use super::LintReport;

pub fn json(report: &LintReport) -> Value {
    let diagnostics: Vec<Value> = report
        .diagnostics
        .iter()
        .map(|d| {
            json!({
                "code": d.code.id(),
                "name": d.code.name(),
                "severity": d.severity.as_str(),
                "message": d.message,
                "file": d.file,
                "line": d.span.map(|s| s.line),
                "column": d.span.map(|s| s.column),
                "endLine": d.span.map(|s| s.end_line),
                "endColumn": d.span.map(|s| s.end_column),
                "help": d.help,
                "url": super::docs_url(d.code),
            })
        })
        .collect();
    json!({
        "diagnostics": diagnostics,
        "summary": {
            "files": report.files,
            "errors": report.count(Severity::Error),
            "warnings": report.count(Severity::Warning),
            "infos": report.count(Severity::Info),
        }
    })
}
