//! Subcommands. Each lives in its own module with an `Args` struct and a
//! `run` function returning the process exit code.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// GitOps disaster recovery for Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "lifeboat", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {}
}
