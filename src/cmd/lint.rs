//! `lifeboat lint`: load and check policy files, report what is wrong.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args as ClapArgs, ValueEnum};
use lifeboat_core::Severity;

use crate::render::{self, LintReport};
use lifeboat_controller::policies;

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
    /// `%SRCROOT%` of the SARIF format: result URIs are relative to it
    /// (default: the Git repository around the current directory, else the
    /// current directory).
    #[arg(long, value_name = "DIR")]
    pub sarif_root: Option<PathBuf>,
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

/// Loads and checks the files below `paths`.
pub fn check(paths: &[PathBuf]) -> anyhow::Result<LintReport> {
    check_set(paths).map(|(report, _)| report)
}

/// Loads and checks the files below `paths`; also returns the valid documents.
pub fn check_set(
    paths: &[PathBuf],
) -> anyhow::Result<(LintReport, lifeboat_core::load::PolicySet)> {
    let checked = policies::check(paths)?;
    Ok((report(&checked), checked.set))
}

/// The lint report of a checked directory.
pub fn report(checked: &policies::Checked) -> LintReport {
    LintReport {
        diagnostics: checked.diagnostics.clone(),
        files: checked.files,
        sources: checked.sources.iter().cloned().collect(),
    }
}

/// The root of the Git repository (work tree) holding `dir`, else `dir`.
fn repository_root(dir: &std::path::Path) -> PathBuf {
    dir.ancestors()
        .find(|d| d.join(".git").exists())
        .unwrap_or(dir)
        .to_path_buf()
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
        Format::Sarif => {
            let cwd = std::env::current_dir()
                .context("cannot read the current directory (for SARIF's %SRCROOT%)")?;
            let root = args
                .sarif_root
                .clone()
                .unwrap_or_else(|| repository_root(&cwd));
            format!("{:#}\n", render::sarif(&report, &root, &cwd))
        }
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
