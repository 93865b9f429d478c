//! `lifeboat keys generate`: a minisign key pair for signing a cluster's
//! backups, as `minisign -G -W` writes it (the secret key unencrypted, since
//! the controller signs unattended).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args as ClapArgs, Subcommand};

/// Manage the keys that sign backups.
#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, Subcommand)]
pub enum Action {
    /// Write a new signing key pair: `<cluster>.key` (secret, for the
    /// cluster's Secret) and `<cluster>.pub` (public, for Git).
    Generate {
        /// The cluster the key signs for (names the files).
        #[arg(long, value_name = "NAME")]
        cluster: String,
        /// Directory to write the files into.
        #[arg(long, value_name = "DIR", default_value = ".")]
        out_dir: PathBuf,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.action {
        Action::Generate {
            cluster,
            out_dir,
            force,
        } => {
            lifeboat_store::validate_name("cluster", &cluster)?;
            let pair = lifeboat_store::generate_key_pair(&format!("lifeboat {cluster}"))?;
            let secret = out_dir.join(format!("{cluster}.key"));
            let public = out_dir.join(format!("{cluster}.pub"));
            for path in [&secret, &public] {
                if path.exists() && !force {
                    bail!(
                        "{} exists: pass --force to replace it (the old key then signs nothing new)",
                        path.display()
                    );
                }
            }
            write_file(&secret, &pair.secret_key_file, true)?;
            write_file(&public, &pair.public_key_file, false)?;
            crate::output::print(&format!(
                "key id {id}\n\
                 secret key: {secret} (keep it out of Git)\n\
                 public key: {public}\n\n\
                 Store the secret key in the cluster:\n  \
                 kubectl -n lifeboat create secret generic lifeboat-signing --from-file=minisign.key={secret}\n\n\
                 and trust the public key in Git (Cluster `{cluster}`):\n  \
                 signing:\n    \
                 keySecretRef: {{name: lifeboat-signing}}\n    \
                 publicKey: {key}\n\n\
                 Check a backup by hand: minisign -Vm manifest.json -P {key}\n",
                id = pair.key_id,
                secret = secret.display(),
                public = public.display(),
                key = pair.public_key,
            ))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Writes `text` to `path`; `secret` files are readable by the owner only.
fn write_file(path: &Path, text: &str, secret: bool) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let _ = secret;
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
