//! `lifeboat schema`: print or write the JSON Schemas of the policy kinds.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args as ClapArgs;
use lifeboat_core::Kind;
use lifeboat_core::schema::{DOCUMENT_FILE, document_schema, file_name, kind_schema};

/// Print the JSON Schema of a kind, or of any lifeboat document.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// StorageLocation, Cluster, BackupPolicy or RestoreRequest; without it,
    /// the schema of any lifeboat document.
    pub kind: Option<String>,
    /// Write every schema into this directory instead of printing one.
    #[arg(long, value_name = "DIR", conflicts_with = "kind")]
    pub write: Option<PathBuf>,
}

/// Every schema file and its contents, as committed in `schema/`.
pub fn files() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Kind::ALL
        .iter()
        .map(|k| (file_name(*k), pretty(&kind_schema(*k).to_value())))
        .collect();
    out.push((DOCUMENT_FILE.to_string(), pretty(&document_schema())));
    out
}

fn pretty(v: &serde_json::Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(dir) = args.write {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        for (name, text) in files() {
            let path = dir.join(&name);
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let text = match args.kind.as_deref() {
        None => pretty(&document_schema()),
        Some(name) => match Kind::ALL
            .iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(name))
        {
            Some(kind) => pretty(&kind_schema(*kind).to_value()),
            None => bail!(
                "unknown kind `{name}`: choose StorageLocation, Cluster, BackupPolicy or RestoreRequest"
            ),
        },
    };
    crate::output::print(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// The Markdown field table of a kind, embedded in
/// `docs/policy-reference/<kind>.md` between `<!-- fields:begin -->` and
/// `<!-- fields:end -->` (a test keeps it current).
pub fn fields_markdown(kind: Kind) -> String {
    let mut out = String::from(
        "| Field | Takes | Required | Default | Description |\n|---|---|---|---|---|\n",
    );
    for f in lifeboat_core::schema::fields(kind) {
        let cell = |s: &str| s.replace('|', "\\|");
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            f.path,
            cell(&f.takes),
            if f.required { "yes" } else { "" },
            f.default
                .map(|d| format!("`{}`", cell(&d)))
                .unwrap_or_default(),
            cell(&f.description),
        ));
    }
    out
}
