//! Progress of long commands: a spinner with a count on a terminal, plain
//! lines on stderr otherwise (logs, CI).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// Reports progress on stderr.
#[derive(Debug, Clone)]
pub struct Reporter {
    bar: Option<ProgressBar>,
}

impl Reporter {
    pub fn new(message: String) -> Reporter {
        if !std::io::stderr().is_terminal() {
            eprintln!("{message}");
            return Reporter { bar: None };
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} [{elapsed}] {pos} objects ({per_sec})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(message);
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        Reporter { bar: Some(bar) }
    }

    /// One step: a line without a terminal, a new position with one.
    pub fn line(&self, text: &str, position: u64) {
        match &self.bar {
            Some(bar) => bar.set_position(position),
            None => eprintln!("{text}"),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
