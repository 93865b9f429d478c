//! End-to-end tests of the `lifeboat` binary: one test binary, one module
//! per command.

mod backup_hooks;
mod backup_restore;
mod backups;
mod dumps;
mod hooks;
mod images;
mod import;
mod kubevirt;
mod lint;
mod plan;
mod prerequisites;
mod restore_hooks;
mod sandbox;
mod schema;
mod signing;
mod storage;
mod velero;
mod verify;
mod volume_data;
mod volume_fs;
mod volume_maintenance;
mod volume_outage;
mod volume_parallel;
mod volume_snapshot;
mod volume_sts;
mod volume_xcluster;
mod volumes;

use std::path::{Path, PathBuf};

use assert_cmd::Command;

/// The repository root (tests run with it as the working directory).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `lifeboat` binary, run from the repository root.
pub fn lifeboat() -> Command {
    let mut cmd = Command::cargo_bin("lifeboat").expect("the lifeboat binary is built");
    cmd.current_dir(root()).env("NO_COLOR", "1");
    cmd
}

/// Runs lifeboat and returns (exit code, stdout, stderr).
pub fn run(args: &[&str], dir: Option<&Path>) -> (i32, String, String) {
    let mut cmd = lifeboat();
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    let out = cmd.args(args).output().expect("lifeboat runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
