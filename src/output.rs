//! Writing to stdout: a closed pipe (`lifeboat lint | head`) is not an error.
//! Writing errors to stderr: the cause chain in one line, with the
//! provider's detail below an explained storage error only under `-v`.

use std::io::{ErrorKind, Write};
use std::sync::atomic::{AtomicBool, Ordering};

static VERBOSE: AtomicBool = AtomicBool::new(false);

/// `-v`: print every cause of an error, the provider's responses included.
pub fn set_verbose(verbose: bool) {
    VERBOSE.store(verbose, Ordering::Relaxed);
}

/// An error and its causes, joined by `: `. The causes below a storage
/// error that already names its cause in words (a missing bucket, refused
/// credentials…) are the provider's raw response: shown with `-v` only.
pub fn describe(err: &anyhow::Error) -> String {
    let verbose = VERBOSE.load(Ordering::Relaxed);
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        parts.push(cause.to_string());
        let explained = cause
            .downcast_ref::<lifeboat_store::StoreError>()
            .is_some_and(lifeboat_store::StoreError::is_explained);
        if explained && !verbose {
            if cause.source().is_some() {
                parts.push("(-v shows the provider's response)".into());
            }
            break;
        }
    }
    let mut out = parts.join(": ");
    // "...: (-v shows…)" reads better as "... (-v shows…)".
    out = out.replace(": (-v shows", " (-v shows");
    out
}

/// Prints `error: <describe(err)>` to stderr.
pub fn print_error(err: &anyhow::Error) {
    eprintln!("error: {}", describe(err));
}

pub fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
