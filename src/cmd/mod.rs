//! Subcommands. Each lives in its own module with an `Args` struct and a
//! `run` function returning the process exit code.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod backup;
pub mod backups;
pub mod controller;
pub mod demo;
pub mod import;
pub mod keys;
pub mod lint;
pub mod mover;
pub mod plan;
pub mod reconcile;
pub mod restore;
pub mod sandbox;
pub mod schema;
pub mod velero_backups;
pub mod volume_data;
pub mod volumes;

/// GitOps disaster recovery for Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "lifeboat", version, about, propagate_version = true)]
pub struct Cli {
    /// Print every cause of an error, object storage providers' responses
    /// included.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Lint(lint::Args),
    Plan(plan::Args),
    Reconcile(reconcile::Args),
    Backup(backup::Args),
    Backups(backups::Args),
    Controller(controller::Args),
    Demo(demo::Args),
    Restore(restore::Args),
    Keys(keys::Args),
    Import(import::Args),
    Schema(schema::Args),
    Volumes(volumes::Args),
    Mover(mover::Args),
    /// In-memory Kubernetes API server for tests and demos.
    Sandbox(sandbox::Args),
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Lint(args) => lint::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Reconcile(args) => reconcile::run(args),
        Command::Backup(args) => backup::run(args),
        Command::Backups(args) => backups::run(args),
        Command::Controller(args) => controller::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Restore(args) => restore::run(args),
        Command::Keys(args) => keys::run(args),
        Command::Import(args) => import::run(args),
        Command::Schema(args) => schema::run(args),
        Command::Volumes(args) => volumes::run(args),
        Command::Mover(args) => mover::run(args),
        Command::Sandbox(args) => sandbox::run(args),
    }
}
