//! The `lifeboat` command-line interface: parses arguments, wires the crates
//! together, renders output and maps outcomes to exit codes (0 success,
//! 1 findings, 2 usage or I/O error).
//!
//! It is a library as well as a binary so that benchmarks and tests drive the
//! same code paths the binary runs.

use std::process::ExitCode;

use clap::Parser;

pub mod cmd;
mod context;
mod kubeclient;
mod output;
mod progress;
pub mod render;

/// The async runtime commands that talk to clusters and object storage use.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let args = match cmd::controller::expand_config(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(err) => {
            eprintln!("error: {err:#}");
            return ExitCode::from(2);
        }
    };
    let cli = cmd::Cli::parse_from(args);
    output::set_verbose(cli.verbose);
    match cmd::run(cli) {
        Ok(code) => code,
        Err(err) => {
            output::print_error(&err);
            ExitCode::from(2)
        }
    }
}
