//! The `lifeboat` binary: parses arguments, wires the crates together,
//! renders output and maps outcomes to exit codes (0 ok, 1 findings, 2 usage
//! or I/O error).

use std::process::ExitCode;

use clap::Parser;

mod cmd;
mod files;
mod output;
mod render;

fn main() -> ExitCode {
    let cli = cmd::Cli::parse();
    match cmd::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
