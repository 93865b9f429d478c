//! What commands that act on backups share: loading the policy repository,
//! choosing the cluster a command acts as, and opening a StorageLocation's
//! object-storage repository.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use clap::Args;
use lifeboat_core::Severity;
use lifeboat_core::load::PolicySet;
use lifeboat_core::model::LocationFormat;
use lifeboat_store::{LocationConfig, Repository, VeleroLocation};

/// Where backups are: a StorageLocation of the policy repository, or a URL.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// The policy repository (a directory of lifeboat YAML).
    #[arg(long, default_value = ".", value_name = "DIR", env = "LIFEBOAT_REPO")]
    pub repo: PathBuf,
    /// A StorageLocation of the repository.
    #[arg(long, value_name = "NAME", conflicts_with = "storage")]
    pub location: Option<String>,
    /// A storage URL (`file:///…`, `s3://…`, `az://…`, `gs://…`) instead of a
    /// StorageLocation; credentials come from the provider's default chain.
    #[arg(long, value_name = "URL")]
    pub storage: Option<String>,
    /// The cluster to act as (a Cluster of the repository). Without it, the
    /// repository's only Cluster.
    #[arg(long, value_name = "NAME", env = "LIFEBOAT_CLUSTER")]
    pub cluster: Option<String>,
    /// age identity files (`AGE-SECRET-KEY-1…` lines) to read encrypted backups.
    #[arg(
        long = "identity",
        value_name = "FILE",
        env = "LIFEBOAT_AGE_IDENTITY_FILE"
    )]
    pub identities: Vec<PathBuf>,
}

/// Loads the policy repository; refuses one with errors.
pub fn load_policies(dir: &Path) -> anyhow::Result<PolicySet> {
    let report_and_set = crate::cmd::lint::check_set(std::slice::from_ref(&dir.to_path_buf()))?;
    let (report, set) = report_and_set;
    let errors = report.count(Severity::Error);
    if errors > 0 {
        bail!(
            "the policy repository {} has {errors} error(s); run `lifeboat lint {}` and fix them first",
            dir.display(),
            dir.display()
        );
    }
    Ok(set)
}

/// The cluster a command acts as.
pub fn cluster_name(set: &PolicySet, chosen: Option<&str>) -> anyhow::Result<String> {
    if let Some(name) = chosen {
        if set.cluster(name).is_none() && !set.clusters.is_empty() {
            let known: Vec<&str> = set
                .clusters
                .iter()
                .map(|c| c.doc.metadata.name.as_str())
                .collect();
            bail!(
                "no Cluster named `{name}` in the repository (it has: {})",
                known.join(", ")
            );
        }
        return Ok(name.to_string());
    }
    match set.clusters.as_slice() {
        [only] => Ok(only.doc.metadata.name.clone()),
        [] => bail!("the repository defines no Cluster: pass --cluster NAME"),
        many => bail!(
            "the repository defines {} Clusters ({}): pass --cluster NAME",
            many.len(),
            many.iter()
                .map(|c| c.doc.metadata.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Reads age identities from files (lines starting `AGE-SECRET-KEY-`).
pub fn read_identities(files: &[PathBuf]) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the age identity file {}", f.display()))?;
        let keys: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("AGE-SECRET-KEY-"))
            .map(str::to_string)
            .collect();
        if keys.is_empty() {
            bail!(
                "{} holds no age identity (a line starting with AGE-SECRET-KEY-)",
                f.display()
            );
        }
        out.extend(keys);
    }
    Ok(out)
}

/// The minisign secret key file at `file`, checked, if one is named.
pub fn read_signing_key(file: Option<&std::path::Path>) -> anyhow::Result<Option<String>> {
    let Some(file) = file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the signing key file {}", file.display()))?;
    lifeboat_store::SigningKey::parse(&text)
        .with_context(|| format!("{} is not a usable signing key", file.display()))?;
    Ok(Some(text))
}

/// The repository, the cluster and the location name a store command uses.
pub struct Target {
    pub repository: Repository,
    pub cluster: String,
    /// The StorageLocation's name, or the URL.
    pub location: String,
}

/// The Velero location the arguments name, if `--location` names a
/// StorageLocation with `format: velero` (read in place, never written).
pub fn velero(args: &StoreArgs) -> anyhow::Result<Option<(VeleroLocation, String)>> {
    let Some(name) = &args.location else {
        return Ok(None);
    };
    let set = load_policies(&args.repo)?;
    let Some(location) = set
        .storage_location(name)
        .filter(|l| l.doc.spec.format == LocationFormat::Velero)
    else {
        return Ok(None);
    };
    let config = lifeboat_controller::locations::config(&set, &location.doc, Vec::new());
    let velero = VeleroLocation::open(&config)
        .with_context(|| format!("cannot open Velero location `{name}` ({})", config.url))?;
    Ok(Some((velero, name.clone())))
}

/// Opens the object-storage repository the arguments name.
pub async fn open(args: &StoreArgs) -> anyhow::Result<Target> {
    let identities = read_identities(&args.identities)?;
    if let Some(url) = &args.storage {
        let cluster = args
            .cluster
            .clone()
            .ok_or_else(|| anyhow!("with --storage, pass --cluster NAME"))?;
        let config = LocationConfig {
            url: url.clone(),
            identities,
            ..LocationConfig::default()
        };
        let repository = Repository::open(&config)
            .await
            .with_context(|| format!("cannot open the backup repository at {url}"))?;
        return Ok(Target {
            repository,
            cluster,
            location: url.clone(),
        });
    }
    let set = load_policies(&args.repo)?;
    let cluster = cluster_name(&set, args.cluster.as_deref())?;
    let name = match &args.location {
        Some(n) => n.clone(),
        None => match set.storage_locations.as_slice() {
            [only] => only.doc.metadata.name.clone(),
            _ => bail!(
                "pass --location NAME (the repository defines {} StorageLocations)",
                set.storage_locations.len()
            ),
        },
    };
    let location = set.storage_location(&name).ok_or_else(|| {
        anyhow!(
            "no StorageLocation named `{name}` in {}",
            args.repo.display()
        )
    })?;
    let config = lifeboat_controller::locations::config(&set, &location.doc, identities);
    let repository = Repository::open(&config)
        .await
        .with_context(|| format!("cannot open StorageLocation `{name}` ({})", config.url))?;
    Ok(Target {
        repository,
        cluster,
        location: name,
    })
}
