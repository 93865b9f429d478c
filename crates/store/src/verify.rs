//! Verifying a committed backup completely, for `lifeboat backups verify`.
//!
//! ```text
//! manifest.json ─▶ for each file and dump artifact: GET ─(present? size?)─▶ SHA-256 ─▶ [age -d] ─▶ zstd -d ─▶ parse
//!               ─▶ counts: manifest = archive = index
//!               ─▶ each BackupCheck (volume snapshots, signatures, …)
//! ```
//!
//! Unlike [`BackupReader::verify`], which a restore runs and which stops at
//! the first problem, this reads every file once and records a
//! [`Finding`] per check, so one run names every damaged file. Without an
//! identity an encrypted backup is still checked for presence, size and
//! SHA-256; the checks that need the key are reported as not done.
//!
//! Damage is data ([`CheckStatus::Damaged`]); `Err` means the check could not
//! run (storage unreachable, a key that does not match).
//!
//! More checks plug in through [`BackupCheck`]: each gets the open backup
//! and appends its findings, e.g. that every volume snapshot the manifest
//! lists exists in its repository, or that `manifest.json.minisig` verifies.

use std::io::Read;

use futures::future::BoxFuture;
use serde::Serialize;

use crate::error::{Result, StoreError};
use crate::model::FileInfo;
use crate::reader::{ArchiveEntry, BackupReader, Stop, Streamed, count_log_lines};

/// The file a backup's signature is in, beside `manifest.json`.
const SIGNATURE_FILE: &str = "manifest.json.minisig";

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum CheckStatus {
    /// The subject is as the manifest says.
    Ok,
    /// The subject is missing, truncated, modified or undecodable.
    Damaged,
    /// The check could not be done (say, no identity for an encrypted file).
    NotChecked,
}

/// The result of one check of one part of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// What was checked: a file of the backup (`resources.tar.zst.age`) or
    /// another part of it (`volume shop/data`).
    pub subject: String,
    /// Which check: `present`, `size`, `sha256`, `decrypt`, `decode`,
    /// `counts`, or one an extension adds.
    pub check: String,
    pub status: CheckStatus,
    /// What was found or why it was not checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Finding {
    pub fn ok(subject: impl Into<String>, check: impl Into<String>) -> Finding {
        Finding {
            subject: subject.into(),
            check: check.into(),
            status: CheckStatus::Ok,
            detail: None,
        }
    }

    pub fn damaged(
        subject: impl Into<String>,
        check: impl Into<String>,
        detail: impl Into<String>,
    ) -> Finding {
        Finding {
            subject: subject.into(),
            check: check.into(),
            status: CheckStatus::Damaged,
            detail: Some(detail.into()),
        }
    }

    pub fn not_checked(
        subject: impl Into<String>,
        check: impl Into<String>,
        why: impl Into<String>,
    ) -> Finding {
        Finding {
            subject: subject.into(),
            check: check.into(),
            status: CheckStatus::NotChecked,
            detail: Some(why.into()),
        }
    }
}

/// Everything verification found about one backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    pub cluster: String,
    pub backup: String,
    pub encrypted: bool,
    /// Objects in the archive, when it could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub objects: Option<u64>,
    /// Bytes read from object storage.
    pub stored_bytes: u64,
    pub findings: Vec<Finding>,
}

impl Verification {
    /// An empty report, for checks to fill.
    pub fn new(cluster: &str, backup: &str, encrypted: bool) -> Verification {
        Verification {
            cluster: cluster.into(),
            backup: backup.into(),
            encrypted,
            objects: None,
            stored_bytes: 0,
            findings: Vec::new(),
        }
    }

    pub fn push(&mut self, finding: Finding) {
        self.findings.push(finding);
    }

    /// True when no check found damage.
    pub fn is_intact(&self) -> bool {
        self.damaged().next().is_none()
    }

    pub fn damaged(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.status == CheckStatus::Damaged)
    }

    pub fn not_checked(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.status == CheckStatus::NotChecked)
    }

    /// The subjects with damage, each once, in the order found.
    pub fn damaged_subjects(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for f in self.damaged() {
            if !out.contains(&f.subject.as_str()) {
                out.push(&f.subject);
            }
        }
        out
    }
}

/// A check of a committed backup beyond its files: volume snapshots in
/// their repositories, the manifest's signature… Implementations append
/// findings (damage is a finding) and return `Err` only when they cannot
/// run at all.
pub trait BackupCheck: Send + Sync {
    /// A short name for logs (`volume-snapshots`).
    fn name(&self) -> &str;

    fn check<'a>(
        &'a self,
        backup: &'a BackupReader,
        out: &'a mut Verification,
    ) -> BoxFuture<'a, Result<()>>;
}

/// What decoding the archive found.
struct ArchiveContent {
    objects: u64,
}

fn decode_archive(r: &mut dyn Read) -> Result<ArchiveContent, Stop> {
    let mut archive = tar::Archive::new(r);
    let mut objects = 0u64;
    let mut json = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if ArchiveEntry::parse_path(&path).is_none() {
            return Err(Stop::Invalid(format!("unexpected archive entry {path:?}")));
        }
        json.clear();
        entry.read_to_end(&mut json)?;
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&json) {
            return Err(Stop::Invalid(format!("{path} is not JSON: {e}")));
        }
        objects += 1;
    }
    Ok(ArchiveContent { objects })
}

impl BackupReader {
    /// Checks every file of the backup once, then runs `extra` checks.
    /// Returns `Err` only when verification could not run: a storage
    /// failure, or identities none of which can decrypt the backup.
    pub async fn verify_all(&self, extra: &[&dyn BackupCheck]) -> Result<Verification> {
        let manifest = self.manifest();
        let mut out = Verification::new(
            &manifest.cluster,
            &manifest.backup_name,
            manifest.encrypted(),
        );
        let files = manifest.files.clone();
        let archive = self
            .check_file(&files.resources, decode_archive, &mut out)
            .await?;
        let index = self
            .check_file(
                &files.index,
                |r| {
                    serde_json::from_reader::<_, crate::model::Index>(r)
                        .map_err(|e| Stop::Invalid(format!("index: {e}")))
                },
                &mut out,
            )
            .await?;
        self.check_file(&files.log, count_log_lines, &mut out)
            .await?;
        for file in &files.other {
            self.check_file(
                file,
                |r| {
                    serde_json::from_reader::<_, serde_json::Value>(r)
                        .map_err(|e| Stop::Invalid(format!("volume result: {e}")))
                },
                &mut out,
            )
            .await?;
        }
        for a in &manifest.artifacts {
            let file = FileInfo {
                name: a.file.clone(),
                bytes: a.stored_bytes,
                sha256: a.sha256.clone(),
            };
            let (bytes, raw) = (a.bytes, a.raw_sha256.clone());
            self.check_file(
                &file,
                move |r| {
                    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
                    let mut n = 0u64;
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let k = r.read(&mut buf)?;
                        if k == 0 {
                            break;
                        }
                        sha2::Digest::update(&mut hasher, &buf[..k]);
                        n += k as u64;
                    }
                    let got = hex::encode(sha2::Digest::finalize(hasher));
                    if n != bytes || got != raw {
                        return Err(Stop::Invalid(format!(
                            "the dump output is {n} bytes with SHA-256 {got}, the manifest records \
                             {bytes} bytes with SHA-256 {raw}"
                        )));
                    }
                    Ok(())
                },
                &mut out,
            )
            .await?;
        }
        if let Some(archive) = &archive {
            out.objects = Some(archive.objects);
        }
        if let (Some(archive), Some(index)) = (archive, index) {
            let expected = manifest.totals.items;
            let indexed = index.objects.len() as u64;
            out.push(if archive.objects == expected && indexed == expected {
                Finding::ok(&files.resources.name, "counts")
            } else {
                Finding::damaged(
                    &files.resources.name,
                    "counts",
                    format!(
                        "the manifest counts {expected} objects, the archive holds {} and the \
                         index {indexed}",
                        archive.objects
                    ),
                )
            });
        }
        // The signature, as a restore would judge it: a backup restores
        // refuse (unsigned or untrusted where a key is trusted for its
        // cluster, or a bad signature) is damaged. Where no key applies an
        // unsigned backup is not a finding; `backups list` shows it.
        let signature = self.signature();
        if let Some(refusal) = signature.refusal() {
            out.push(Finding::damaged(SIGNATURE_FILE, "signature", refusal));
        } else if matches!(signature.state, crate::SignatureState::Valid { .. }) {
            out.push(Finding::ok(SIGNATURE_FILE, "signature"));
        }
        for check in extra {
            check.check(self, &mut out).await?;
        }
        Ok(out)
    }

    /// Streams one file once and records what it found; the decoded value
    /// when every check passed.
    async fn check_file<T, F>(
        &self,
        file: &FileInfo,
        decode: F,
        out: &mut Verification,
    ) -> Result<Option<T>>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Read) -> Result<T, Stop> + Send + 'static,
    {
        let name = file.name.clone();
        let decrypt = self.can_decrypt();
        let streamed = self.stream_file(file, decrypt.then_some(decode)).await?;
        match streamed {
            Streamed::Missing(_) => {
                out.push(Finding::damaged(
                    &name,
                    "present",
                    format!("{} does not exist", self.display(file)),
                ));
                Ok(None)
            }
            Streamed::Size { actual } => {
                out.push(Finding::damaged(
                    &name,
                    "size",
                    format!(
                        "{actual} bytes stored, the manifest records {}: truncated or replaced",
                        file.bytes
                    ),
                ));
                Ok(None)
            }
            Streamed::Read { sha256, decoded } => {
                out.stored_bytes += file.bytes;
                out.push(Finding::ok(&name, "present"));
                out.push(Finding::ok(&name, "size"));
                if sha256 != file.sha256 {
                    out.push(Finding::damaged(
                        &name,
                        "sha256",
                        format!(
                            "the stored bytes hash to {sha256}, the manifest records {}: \
                             modified or damaged after the backup",
                            file.sha256
                        ),
                    ));
                    return Ok(None);
                }
                out.push(Finding::ok(&name, "sha256"));
                let Some(decoded) = decoded else {
                    out.push(Finding::not_checked(
                        &name,
                        "decode",
                        "encrypted and no identity given: pass --identity FILE to decrypt, \
                         decompress and parse it",
                    ));
                    return Ok(None);
                };
                match decoded {
                    Ok(v) => {
                        out.push(Finding::ok(&name, "decode"));
                        Ok(Some(v))
                    }
                    // A key that does not fit is not damage: say so and stop.
                    Err(
                        e @ (StoreError::WrongIdentity { .. } | StoreError::MissingIdentity { .. }),
                    ) => Err(e),
                    Err(StoreError::Corrupt { reason, .. }) => {
                        out.push(Finding::damaged(&name, "decode", reason));
                        Ok(None)
                    }
                    Err(e) => {
                        out.push(Finding::damaged(&name, "decode", e.to_string()));
                        Ok(None)
                    }
                }
            }
        }
    }
}
