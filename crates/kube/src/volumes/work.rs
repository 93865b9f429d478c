//! The work file: what the orchestrator tells a mover pod to do.
//!
//! It reaches the pod through the per-operation Secret, mounted as files
//! (`/etc/lifeboat/work/work.json`, with the repository key beside it), so
//! neither credentials nor keys ever appear in the pod spec's arguments or
//! environment. `lifeboat mover backup|restore --work FILE` reads it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The work file (`work.json`); see docs/volumes.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Work {
    /// The storage location.
    pub location: WorkLocation,
    /// The StorageLocation's name (names the key in the cache).
    pub location_name: String,
    pub cluster: String,
    /// The namespace whose repository holds the data (the SOURCE
    /// namespace on restores).
    pub namespace: String,
    /// The claim whose snapshot this is (the SOURCE claim on restores;
    /// empty for maintenance).
    #[serde(default)]
    pub pvc: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// The mounted volume (a directory) or the block device, in the pod
    /// (empty for maintenance).
    #[serde(default)]
    pub path: PathBuf,
    #[serde(default)]
    pub kind: DataKind,
    /// Restore: the snapshot id (or `latest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// The directory of cached repository keys, in the pod.
    pub key_cache_dir: PathBuf,
    /// `fileSystem` backups: `path` is the node's kubelet pods directory
    /// (mounted read-only) and the volume to read is this pod's mount of
    /// this volume, found there as the kubelet lays it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_volume: Option<PodVolumeRef>,
    /// `lifeboat mover prune`: the repository generation to prune and how
    /// long marked packs are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<MaintenanceWork>,
    /// Restore: the snapshot is in a repository lifeboat did not write
    /// (Velero's restic repository of a namespace), not in lifeboat's of
    /// `cluster` and `namespace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<ForeignRepository>,
}

/// A restic repository another tool wrote below the location, and where
/// its password is: like lifeboat's keys, a file beside the work file
/// (from the per-operation Secret), never in the work file itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ForeignRepository {
    /// Its directory below the location, e.g. `restic/shop`.
    pub path: String,
    /// The password file's name in `keyCacheDir`, without `.key`.
    pub key: String,
}

/// What a maintenance mover does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MaintenanceWork {
    pub generation: u32,
    pub keep_delete_seconds: u64,
}

/// A volume as one pod mounts it: `<pods dir>/<podUid>/volumes/<plugin>/<volume>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodVolumeRef {
    /// The uid of the pod that mounts the volume.
    pub pod_uid: String,
    /// The kubelet's directory name of the volume: the PV's name for a
    /// claim (the pod's volume name for inline volumes).
    pub volume: String,
}

/// What a volume holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DataKind {
    /// A mounted file system.
    #[default]
    Filesystem,
    /// A raw block device.
    Block,
}

/// Where the repository is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkLocation {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub path_style: bool,
    #[serde(default)]
    pub allow_http: bool,
    #[serde(default)]
    pub recipients: Vec<String>,
    /// Explicit store credentials; absent: the provider's default chain
    /// in the pod (workload identity, instance metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<WorkCredentials>,
}

/// Store credentials, as the Secret carries them to the mover.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "camelCase")]
pub enum WorkCredentials {
    #[serde(rename_all = "camelCase")]
    S3 {
        access_key_id: String,
        secret_access_key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session_token: Option<String>,
    },
    #[serde(rename_all = "camelCase")]
    Azure { account: String, access_key: String },
    #[serde(rename_all = "camelCase")]
    Gcs { service_account_key: String },
}

impl std::fmt::Debug for WorkCredentials {
    // Hand-written so secrets never reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WorkCredentials::S3 { .. } => "S3(<redacted>)",
            WorkCredentials::Azure { .. } => "Azure(<redacted>)",
            WorkCredentials::Gcs { .. } => "Gcs(<redacted>)",
        })
    }
}

impl WorkLocation {
    /// The location a mover reaches: the store settings and recipients of
    /// `config`, and its explicit credentials.
    pub fn from_config(config: &lifeboat_store::LocationConfig) -> WorkLocation {
        use lifeboat_store::Credentials;
        let credentials = config.credentials.as_ref().and_then(|c| match c {
            Credentials::S3 {
                access_key_id,
                secret_access_key,
                session_token,
            } => Some(WorkCredentials::S3 {
                access_key_id: access_key_id.clone(),
                secret_access_key: secret_access_key.clone(),
                session_token: session_token.clone(),
            }),
            Credentials::Azure {
                account,
                access_key,
            } => Some(WorkCredentials::Azure {
                account: account.clone(),
                access_key: access_key.clone(),
            }),
            Credentials::Gcs {
                service_account_key,
            } => Some(WorkCredentials::Gcs {
                service_account_key: service_account_key.clone(),
            }),
            _ => None,
        });
        WorkLocation {
            url: config.url.clone(),
            region: config.region.clone(),
            endpoint: config.endpoint.clone(),
            path_style: config.path_style,
            allow_http: config.allow_http,
            recipients: config.recipients.clone(),
            credentials,
        }
    }

    /// The store configuration a mover opens.
    pub fn to_config(&self) -> lifeboat_store::LocationConfig {
        use lifeboat_store::Credentials;
        lifeboat_store::LocationConfig {
            url: self.url.clone(),
            region: self.region.clone(),
            endpoint: self.endpoint.clone(),
            path_style: self.path_style,
            allow_http: self.allow_http,
            recipients: self.recipients.clone(),
            credentials: self.credentials.as_ref().map(|c| match c {
                WorkCredentials::S3 {
                    access_key_id,
                    secret_access_key,
                    session_token,
                } => Credentials::S3 {
                    access_key_id: access_key_id.clone(),
                    secret_access_key: secret_access_key.clone(),
                    session_token: session_token.clone(),
                },
                WorkCredentials::Azure {
                    account,
                    access_key,
                } => Credentials::Azure {
                    account: account.clone(),
                    access_key: access_key.clone(),
                },
                WorkCredentials::Gcs {
                    service_account_key,
                } => Credentials::Gcs {
                    service_account_key: service_account_key.clone(),
                },
            }),
            ..lifeboat_store::LocationConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_work_file_parses_and_credentials_round_trip() {
        let work: Work = serde_json::from_value(serde_json::json!({
            "location": {"url": "s3://bucket/prefix", "region": "eu-west-1",
                         "endpoint": null, "pathStyle": false, "allowHttp": false,
                         "recipients": ["age1x"],
                         "credentials": {"provider": "s3", "accessKeyId": "AK", "secretAccessKey": "SK"}},
            "locationName": "primary", "cluster": "prod", "namespace": "shop",
            "pvc": "data", "pvcUid": "0b5e", "backup": "nightly-20261201-020000",
            "path": "/data", "kind": "filesystem", "snapshot": "latest",
            "keyCacheDir": "/etc/lifeboat/keys"
        }))
        .expect("valid");
        let config = work.location.to_config();
        assert_eq!(WorkLocation::from_config(&config), work.location);
        assert!(!format!("{work:?}").contains("SK"));
    }
}
