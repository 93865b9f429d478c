//! `lifeboat lint`: load and check policy files, report what is wrong.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args as ClapArgs, ValueEnum};
use lifeboat_core::load::{InputFile, LoadOutcome, load};
use lifeboat_core::{Severity, diagnostic};

use crate::files;
use crate::render::{self, LintReport};

/// Output formats of `lifeboat lint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Code frames and a summary, for people.
    Human,
    /// One JSON object with a `diagnostics` array.
    Json,
    /// SARIF 2.1.0, for code scanning.
    Sarif,
    /// GitHub Actions annotations.
    Github,
}

/// Check policy files: YAML, schema and lint rules.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Files or directories to check (directories recursively).
    #[arg(default_value = ".")]
    pub paths: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Exit 1 on warnings too.
    #[arg(long)]
    pub strict: bool,
    /// Color the human format: auto (when stdout is a terminal), always, never.
    #[arg(long, value_enum, default_value_t = Color::Auto)]
    pub color: Color,
}

/// When to use color.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
}

/// Loads files on every core: parsing and schema validation dominate, and
/// files are independent. Chunks are merged in file order, so the result is
/// the same as a sequential load.
pub fn load_parallel(files: &[files::PolicyFile]) -> LoadOutcome {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = files.len().div_ceil(threads).max(64);
    let load_chunk = |chunk: &[files::PolicyFile]| {
        load(chunk.iter().map(|f| InputFile {
            path: &f.display,
            bytes: &f.bytes,
        }))
    };
    if files.len() <= chunk {
        return load_chunk(files);
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|c| scope.spawn(move || load_chunk(c)))
            .collect();
        let mut outcome = LoadOutcome::default();
        for handle in handles {
            match handle.join() {
                Ok(part) => outcome.merge(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        outcome
    })
}

/// Loads and checks the files below `paths`.
pub fn check(paths: &[PathBuf]) -> anyhow::Result<LintReport> {
    check_set(paths).map(|(report, _)| report)
}

/// Loads and checks the files below `paths`; also returns the valid documents.
pub fn check_set(
    paths: &[PathBuf],
) -> anyhow::Result<(LintReport, lifeboat_core::load::PolicySet)> {
    let files = files::read(paths)?;
    let outcome = load_parallel(&files);
    let mut diagnostics = outcome.diagnostics;
    diagnostics.extend(lifeboat_core::lint::check(&outcome.set));
    diagnostic::sort(&mut diagnostics);
    let sources = files
        .iter()
        .filter(|f| {
            diagnostics
                .iter()
                .any(|d| d.file.as_deref() == Some(&f.display))
        })
        .map(|f| {
            (
                f.display.clone(),
                String::from_utf8_lossy(&f.bytes).into_owned(),
            )
        })
        .collect();
    Ok((
        LintReport {
            diagnostics,
            files: files.len(),
            sources,
        },
        outcome.set,
    ))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let report = check(&args.paths)?;
    let text = match args.format {
        Format::Human => {
            let color = match args.color {
                Color::Auto => std::io::stdout().is_terminal(),
                Color::Always => true,
                Color::Never => false,
            };
            render::human(&report, color)
        }
        Format::Json => format!("{:#}\n", render::json(&report)),
        Format::Sarif => format!("{:#}\n", render::sarif(&report)),
        Format::Github => render::github(&report),
    };
    crate::output::print(&text)?;
    let errors = report.count(Severity::Error);
    let warnings = report.count(Severity::Warning);
    Ok(if errors > 0 || (args.strict && warnings > 0) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
