//! Renderers of lint results: one [`LintReport`], four formats (human, JSON,
//! SARIF 2.1.0, GitHub Actions workflow commands).

use std::collections::HashMap;

use lifeboat_core::{Diagnostic, Severity};

mod github;
mod human;
mod json;
pub mod plan;
mod sarif;

pub use github::github;
pub use human::human;
pub use json::json;
pub use sarif::sarif;

/// What `lifeboat lint` found.
#[derive(Debug, Default)]
pub struct LintReport {
    /// Sorted diagnostics.
    pub diagnostics: Vec<Diagnostic>,
    /// Number of files read.
    pub files: usize,
    /// File contents by displayed path, for code frames.
    pub sources: HashMap<String, String>,
}

impl LintReport {
    pub fn count(&self, severity: Severity) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == severity)
            .count()
    }

    /// `N files, E errors, W warnings` (and infos when there are any).
    pub fn summary(&self) -> String {
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        let mut s = format!(
            "{}, {}, {}",
            plural(self.files, "file"),
            plural(self.count(Severity::Error), "error"),
            plural(self.count(Severity::Warning), "warning"),
        );
        let infos = self.count(Severity::Info);
        if infos > 0 {
            s.push_str(&format!(", {}", plural(infos, "info")));
        }
        s
    }
}

/// The documentation page of a code.
pub fn docs_url(code: lifeboat_core::Code) -> String {
    format!(
        "{}/blob/main/docs/lint/{}.md",
        env!("CARGO_PKG_REPOSITORY"),
        code.id()
    )
}
