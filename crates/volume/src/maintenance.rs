//! The maintenance record of a volume repository and the listing of a
//! cluster's repositories, which the controller's planner observes to know
//! when each repository's next prune is due.
//!
//! ```text
//! volumes/<cluster>/<namespace>[.gN]/
//!   config                      restic's; its date is the repository's birth
//!   lifeboat-maintenance.json   the last prune: when, how it went, what it freed
//! ```
//!
//! The record is written by whoever ran the prune after it ended (the
//! controller, from the maintenance mover's result); it is plain JSON with
//! no secrets, counts and times only. A missing or unreadable record means
//! "never maintained".

use jiff::Timestamp;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, path::Path};
use serde::{Deserialize, Serialize};

use crate::error::{Result, VolumeError};
use crate::ops::PruneReport;
use crate::repo::RepoRef;

/// The record's file name in the repository.
pub const MAINTENANCE_FILE: &str = "lifeboat-maintenance.json";

/// The last maintenance of a repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceRecord {
    /// When the last prune was started.
    pub last_attempt: Timestamp,
    /// When a prune last succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<Timestamp>,
    /// Why the last attempt failed (absent when it succeeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the last successful prune did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<PruneReport>,
}

/// A repository of a cluster in a location, as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoSummary {
    pub namespace: String,
    /// Its newest generation (the one backups write).
    pub generation: u32,
    /// When its `config` was written.
    pub created: Timestamp,
    pub record: Option<MaintenanceRecord>,
}

/// The newest generation of every namespace's repository of `cluster` in
/// `location`, with its birth and its maintenance record. Directories
/// without a restic `config` (a creation that never finished) are left out.
pub async fn list_repositories(
    location: &lifeboat_store::Repository,
    cluster: &str,
) -> Result<Vec<RepoSummary>> {
    let store = location.object_store();
    // namespace ─▶ newest generation
    let mut newest: std::collections::BTreeMap<String, u32> = Default::default();
    for (ns, generation) in crate::repo::repository_dirs(location, cluster).await? {
        let g = newest.entry(ns).or_insert(generation);
        *g = (*g).max(generation);
    }
    let mut out = Vec::new();
    for (namespace, generation) in newest {
        let reference = RepoRef {
            location: String::new(),
            cluster: cluster.to_string(),
            namespace: namespace.clone(),
            generation,
        };
        let base = reference.base();
        let created = match store.head(&base.clone().join("config")).await {
            Ok(meta) => Timestamp::from_second(meta.last_modified.timestamp())
                .unwrap_or(Timestamp::UNIX_EPOCH),
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(VolumeError::Storage(format!("head {base}/config: {e}"))),
        };
        let record = read_record(store.as_ref(), &base).await?;
        out.push(RepoSummary {
            namespace,
            generation,
            created,
            record,
        });
    }
    Ok(out)
}

async fn read_record(store: &dyn ObjectStore, base: &Path) -> Result<Option<MaintenanceRecord>> {
    let path = base.clone().join(MAINTENANCE_FILE);
    let bytes = match store.get(&path).await {
        Ok(r) => r
            .bytes()
            .await
            .map_err(|e| VolumeError::Storage(format!("read {path}: {e}")))?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(VolumeError::Storage(format!("read {path}: {e}"))),
    };
    // A record that does not parse counts as none: the next prune rewrites it.
    Ok(serde_json::from_slice(&bytes).ok())
}

/// The maintenance record of the repository `reference`.
pub async fn maintenance_record(
    location: &lifeboat_store::Repository,
    reference: &RepoRef,
) -> Result<Option<MaintenanceRecord>> {
    read_record(location.object_store().as_ref(), &reference.base()).await
}

/// Writes the maintenance record of the repository `reference`.
pub async fn write_maintenance_record(
    location: &lifeboat_store::Repository,
    reference: &RepoRef,
    record: &MaintenanceRecord,
) -> Result<()> {
    let path = reference.base().join(MAINTENANCE_FILE);
    let body = serde_json::to_vec_pretty(record)
        .map_err(|e| VolumeError::Storage(format!("encode {path}: {e}")))?;
    location
        .object_store()
        .put(&path, PutPayload::from(body))
        .await
        .map_err(|e| VolumeError::Storage(format!("write {path}: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_the_report_is_kept() {
        let r = MaintenanceRecord {
            last_attempt: "2026-12-01T03:00:00Z".parse().unwrap(),
            last_success: Some("2026-12-01T03:00:00Z".parse().unwrap()),
            error: None,
            report: Some(PruneReport {
                packs_to_delete: 1,
                packs_marked: 2,
                packs_waiting: 0,
                packs_recovered: 0,
                bytes_to_delete: 10,
                bytes_marked: 20,
            }),
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains("\"lastAttempt\""), "{text}");
        assert_eq!(serde_json::from_str::<MaintenanceRecord>(&text).unwrap(), r);
    }
}
