//! Finding and reading policy files: every `*.yaml`/`*.yml` below the given
//! paths, recursively, minus what `.lifeboatignore` files list (gitignore
//! syntax), hidden entries and the status directory (`status/` at a root),
//! which holds lifeboat's own reports when status is written to the policy
//! branch.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// A policy file read from disk.
#[derive(Debug)]
pub struct PolicyFile {
    /// The path as shown in diagnostics.
    pub display: String,
    pub bytes: Vec<u8>,
}

/// The name of the directory of status reports, skipped when loading.
pub const STATUS_DIR: &str = "status";

fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

/// Collects the policy files below `roots`, sorted by path.
pub fn collect(roots: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for root in roots {
        let meta = std::fs::metadata(root)
            .with_context(|| format!("cannot read {}: check the path exists", root.display()))?;
        if meta.is_file() {
            out.push(root.clone());
            continue;
        }
        if !meta.is_dir() {
            bail!("{} is neither a file nor a directory", root.display());
        }
        let status = root.join(STATUS_DIR);
        let walker = ignore::WalkBuilder::new(root)
            .standard_filters(false)
            .hidden(true)
            .add_custom_ignore_filename(".lifeboatignore")
            .filter_entry(move |e| e.path() != status)
            .build();
        for entry in walker {
            let entry = entry.with_context(|| format!("cannot walk {}", root.display()))?;
            if entry.file_type().is_some_and(|t| t.is_file()) && is_yaml(entry.path()) {
                out.push(entry.into_path());
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// How a path is shown: relative to the current directory when below it.
pub fn display(path: &Path) -> String {
    let cwd = std::env::current_dir().ok();
    let shown = cwd
        .as_deref()
        .and_then(|c| path.strip_prefix(c).ok())
        .unwrap_or(path);
    let s = shown.to_string_lossy();
    s.strip_prefix("./").unwrap_or(&s).to_string()
}

/// Reads every policy file below `roots`; paths are shown relative to the
/// current directory.
pub fn read(roots: &[PathBuf]) -> anyhow::Result<Vec<PolicyFile>> {
    read_shown(roots, display)
}

/// Reads every policy file below `root`, a checkout; paths are shown
/// relative to it, as they are in the Git repository.
pub fn read_tree(root: &Path) -> anyhow::Result<Vec<PolicyFile>> {
    read_shown(&[root.to_path_buf()], |path| {
        path.strip_prefix(root)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned()
    })
}

fn read_shown(
    roots: &[PathBuf],
    show: impl Fn(&Path) -> String,
) -> anyhow::Result<Vec<PolicyFile>> {
    collect(roots)?
        .into_iter()
        .map(|path| {
            let bytes =
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            Ok(PolicyFile {
                display: show(&path),
                bytes,
            })
        })
        .collect()
}
