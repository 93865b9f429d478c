//! Loading a policy directory from disk: read the files (see [`crate::files`]),
//! parse and validate them on every core, and run the lint rules. Shared by
//! `lifeboat lint`, the commands that act on backups and the reconciler.

use std::path::PathBuf;

use lifeboat_core::load::{InputFile, LoadOutcome, PolicySet, load};
use lifeboat_core::{Diagnostic, Severity, diagnostic};

use crate::files::{self, PolicyFile};

/// A loaded policy directory.
#[derive(Debug)]
pub struct Checked {
    /// Every finding, sorted by file, line and column.
    pub diagnostics: Vec<Diagnostic>,
    /// How many files were read.
    pub files: usize,
    /// The text of every file that has a finding, for code frames.
    pub sources: Vec<(String, String)>,
    /// The valid documents.
    pub set: PolicySet,
}

impl Checked {
    pub fn count(&self, severity: Severity) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == severity)
            .count()
    }

    /// True when nothing is an error: the set may be acted on.
    pub fn is_valid(&self) -> bool {
        self.count(Severity::Error) == 0
    }
}

/// Loads files on every core: parsing and schema validation dominate, and
/// files are independent. Chunks are merged in file order, so the result is
/// the same as a sequential load.
pub fn load_parallel(files: &[PolicyFile]) -> LoadOutcome {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = files.len().div_ceil(threads).max(64);
    let load_chunk = |chunk: &[PolicyFile]| {
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
pub fn check(paths: &[PathBuf]) -> anyhow::Result<Checked> {
    let files = files::read(paths)?;
    Ok(check_files(&files))
}

/// Loads and checks files already read.
pub fn check_files(files: &[PolicyFile]) -> Checked {
    let outcome = load_parallel(files);
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
    Checked {
        diagnostics,
        files: files.len(),
        sources,
        set: outcome.set,
    }
}
