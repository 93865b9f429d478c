//! The human format: miette's graphical report with a code frame for each
//! diagnostic, then a summary line.

use std::fmt;

use lifeboat_core::{Diagnostic, Severity};
use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource};

use super::LintReport;

struct Report<'a> {
    diagnostic: &'a Diagnostic,
    source: Option<NamedSource<String>>,
}

impl fmt::Debug for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.diagnostic, f)
    }
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diagnostic.message)
    }
}

impl std::error::Error for Report<'_> {}

impl miette::Diagnostic for Report<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        let c = self.diagnostic.code;
        Some(Box::new(format!("{}({})", c.id(), c.name())))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.diagnostic.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
            Severity::Info => miette::Severity::Advice,
        })
    }

    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        let docs = super::docs_url(self.diagnostic.code);
        Some(Box::new(match &self.diagnostic.help {
            Some(h) => format!("{h}\nsee {docs}"),
            None => format!("see {docs}"),
        }))
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.source.as_ref().map(|s| s as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let span = self.diagnostic.span?;
        self.source.as_ref()?;
        Some(Box::new(std::iter::once(LabeledSpan::new(
            None,
            span.offset,
            span.len,
        ))))
    }
}

/// Renders the report for a person; `color` selects a colored theme.
pub fn human(report: &LintReport, color: bool) -> String {
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_width(100)
        .with_links(false);
    let mut out = String::new();
    for d in &report.diagnostics {
        let source = d.file.as_ref().and_then(|f| {
            d.span?;
            report
                .sources
                .get(f)
                .map(|text| NamedSource::new(f.clone(), text.clone()))
        });
        if source.is_none()
            && let Some(file) = &d.file
        {
            // No code frame (unreadable file): still say where.
            out.push_str(&format!("{file}:\n"));
        }
        let r = Report {
            diagnostic: d,
            source,
        };
        // Writing into a String cannot fail.
        let _ = handler.render_report(&mut out, &r);
        out.push('\n');
    }
    out.push_str(&report.summary());
    out.push('\n');
    out
}
