//! The request log file ([`crate::SandboxBuilder::request_log`],
//! `lifeboat sandbox serve --request-log FILE`): one JSON object per line,
//! appended and flushed as each request completes, so another process can
//! follow it and check the order of calls.
//!
//! ```text
//! {"time":"2026-01-02T03:04:05.123456Z","verb":"create","group":"apps","version":"v1",
//!  "resource":"deployments","subresource":"","namespace":"shop","name":"",
//!  "query":"fieldManager=kubectl-create","status":201}
//! ```
//!
//! `time` is when the request arrived (microseconds, UTC). An exec line is
//! written when the command ends and adds `endTime` and `exitCode`.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::faults::RequestRecord;

/// An open request log.
#[derive(Debug, Clone)]
pub struct RequestLog {
    file: Arc<Mutex<File>>,
}

/// The current time as the log writes it.
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

impl RequestLog {
    /// Opens (creates) the file for appending.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(RequestLog {
            file: Arc::new(Mutex::new(file)),
        })
    }

    /// The line of a request, without writing it.
    pub fn line(time: &str, rec: &RequestRecord, query: &str) -> Value {
        json!({
            "time": time,
            "verb": rec.verb,
            "group": rec.group,
            "version": rec.version,
            "resource": rec.resource,
            "subresource": rec.subresource,
            "namespace": rec.namespace,
            "name": rec.name,
            "query": query,
            "status": rec.status,
        })
    }

    /// Appends one line and flushes it. A failing write is reported once
    /// per request on stderr-equivalent tracing and otherwise ignored: the
    /// log must not change what the API answers.
    pub fn write(&self, line: &Value) {
        let mut text = serde_json::to_vec(line).unwrap_or_default();
        text.push(b'\n');
        let mut f = self.file.lock().expect("request log lock");
        if let Err(e) = f.write_all(&text).and_then(|()| f.flush()) {
            tracing::warn!(error = %e, "writing the request log failed");
        }
    }
}

/// An exec request whose line is written when the command ends.
#[derive(Debug)]
pub struct PendingExec {
    /// Where to write.
    pub log: RequestLog,
    /// The line so far.
    pub line: Value,
}

impl PendingExec {
    /// Writes the line with the end time and exit code.
    pub fn finish(mut self, exit_code: i32) {
        self.line["endTime"] = json!(now());
        self.line["exitCode"] = json!(exit_code);
        self.log.write(&self.line);
    }
}
