//! lifeboat-store: everything lifeboat keeps in object storage.
//!
//! ```text
//! LocationConfig ─▶ Repository::open (marker check)
//!                     ├─ begin_backup ─▶ BackupWriter ─add…─▶ finish ─▶ manifest.json
//!                     │                    └ begin_artifact ─▶ ArtifactWriter (dump hooks' stdout)
//!                     ├─ open_backup  ─▶ BackupReader ─▶ verify, then entries()
//!                     │                                └▶ verify_all (every check, for `backups verify`)
//!                     ├─ list_backups / show_backup / delete_backup / incomplete_backups
//!                     ├─ write_restore_record / read_restore_record
//!                     └─ copy_image / push_image / image_inventory (images/, see `images`)
//! LocationConfig ─▶ VeleroLocation::open (a Velero bucket, read-only)
//!                     ├─ list / describe (velero-backup.json)
//!                     └─ open_backup ─▶ VeleroReader ─▶ verify, then entries()
//! ```
//!
//! Modules: `config` (URLs, credentials, retries → an `ObjectStore`),
//! `repo` (marker, layout, names), `writer` / `upload` (streaming archive
//! writer and multipart uploads), `artifact` (dump hook outputs streamed in
//! and out), `reader` (verified streaming reads), `verify` (complete
//! verification with a finding per check, and the `BackupCheck` extension point),
//! `velero` (Velero's backups, read in place), `images` (container
//! images by digest) and `registry` (an OCI distribution client), `crypto` (age), `signing` (minisign signatures of manifests and
//! records, and trust), `catalog` (listing, deletion, restore records) and
//! `model` (the JSON types). The on-storage format is documented in
//! `docs/format.md`. This crate does not depend on `lifeboat-core`.

mod artifact;
mod catalog;
mod config;
mod crypto;
mod diagnose;
mod error;
mod images;
mod model;
mod reader;
pub mod registry;
mod repo;
mod signing;
mod upload;
mod velero;
mod verify;
mod writer;

pub use artifact::{ArtifactChunks, ArtifactFile, ArtifactWriter};
pub use catalog::{BackupList, IncompleteBackup};
pub use config::{Credentials, LocationConfig, RetryOptions};
pub use diagnose::Cause as StorageCause;
pub use error::{Result, StoreError};
pub use images::{CopyStats, ImageInventory, ImageSource, PendingRefs, StoredBlob};
pub use model::{
    ArtifactEntry, BackupFiles, FORMAT_VERSION, FileInfo, HookCounts, HookEntry, ImageEntry,
    ImageManifest, Index, IndexEntry, KeptSnapshot, LIFEBOAT_VERSION, LogEntry, LogLevel,
    MANIFEST_FORMAT_VERSION, Manifest, OPERATION_FORMAT_VERSION, Operation, OrphanMark, Phase,
    Prerequisite, PrerequisiteKind, RepositoryMarker, ResourceCount, RestoreAction, RestoreCounts,
    RestoreItem, RestorePhase, RestoreRecord, RestoredImage, RestoredVolume, ThawCommand, Totals,
    VolumeEntry, VolumePhase,
};
pub use reader::{ArchiveEntry, BackupReader, RestoreSource, VerifyReport};
pub use repo::{Repository, backup_name, parse_backup_name, validate_name};
pub use signing::{
    GeneratedKeyPair, SIGNATURE_SUFFIX, SignatureCheck, SignatureState, SignedKind, SigningKey,
    Subject, Trust, TrustedKey, generate_key_pair, parse_public_key,
};
pub use velero::{
    PodVolumeBackup, Uploader, VELERO_KOPIA, VELERO_RESTIC, VELERO_RESTIC_PASSWORD, VeleroBackup,
    VeleroLocation, VeleroReader, VolumeInfo, velero_restic_repository,
};
pub use verify::{BackupCheck, CheckStatus, Finding, Verification};
pub use writer::{BackupSpec, BackupWriter, ObjectEntry, WriterHandle};
