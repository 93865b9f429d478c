//! One diagnostic type for everything lifeboat reports about policy files:
//! YAML problems, schema violations and lint findings. Renderers (human,
//! JSON, SARIF, GitHub) live in the CLI; they all read this type.

use std::fmt;

use serde::Serialize;

/// How serious a finding is. Errors fail `lifeboat lint`; warnings fail it
/// only with `--strict`; infos never do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! codes {
    ($($variant:ident = $id:literal, $name:literal, $severity:ident, $summary:literal;)*) => {
        /// Stable diagnostic codes. Each has a page `docs/lint/<id>.md`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Code {
            $($variant,)*
        }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The stable identifier, `LB` and three digits.
            pub fn id(self) -> &'static str {
                match self { $(Code::$variant => $id,)* }
            }

            /// A kebab-case name describing the pattern the code flags.
            pub fn name(self) -> &'static str {
                match self { $(Code::$variant => $name,)* }
            }

            /// The severity findings of this code have.
            pub fn severity(self) -> Severity {
                match self { $(Code::$variant => Severity::$severity,)* }
            }

            /// One line saying what the code flags.
            pub fn summary(self) -> &'static str {
                match self { $(Code::$variant => $summary,)* }
            }
        }
    };
}

codes! {
    InvalidYaml = "LB001", "invalid-yaml", Error, "The file is not valid YAML.";
    UnsupportedYaml = "LB002", "unsupported-yaml-feature", Error, "Anchors, aliases, merge keys and custom tags are not allowed in policy files.";
    DuplicateKey = "LB003", "duplicate-key", Error, "A mapping has the same key twice.";
    UnreadableFile = "LB004", "unreadable-file", Error, "The file is not UTF-8 text, is binary, or is too large to be a policy file.";
    TooDeep = "LB005", "nesting-too-deep", Error, "The YAML nests deeper than any policy document can.";
    NotADocument = "LB006", "not-a-lifeboat-document", Error, "A YAML document lacks `apiVersion`/`kind`, has an unknown kind, or the file has no documents.";
    SchemaViolation = "LB007", "schema-violation", Error, "A field has the wrong type or value, is missing, or is unknown.";
    UnresolvedReference = "LB101", "unresolved-reference", Error, "A name refers to a document that does not exist.";
    DuplicateName = "LB102", "duplicate-name", Error, "Two documents of the same kind have the same name.";
    InvalidSchedule = "LB103", "invalid-schedule", Error, "A schedule is not a valid 5-field cron expression.";
    UnknownTimeZone = "LB104", "unknown-time-zone", Error, "A time zone is not a known IANA time zone.";
    UnmeetableRpo = "LB105", "unmeetable-rpo", Error, "The RPO objective is shorter than the longest gap between two scheduled backups.";
    RetentionKeepsNothing = "LB106", "retention-keeps-nothing", Error, "The retention rules keep no backup.";
    MaxAgeBelowInterval = "LB107", "max-age-below-interval", Warning, "`maxAge` is shorter than the time between two scheduled backups.";
    InlineCredentials = "LB108", "inline-credentials", Error, "Credentials are written into a policy file instead of a Secret.";
    UnencryptedSecrets = "LB109", "unencrypted-secrets", Warning, "A policy can back up Secrets to a location without encryption.";
    NamespaceMappingCollision = "LB110", "namespace-mapping-collision", Error, "A restore maps two source namespaces to one target namespace.";
    DeniedNamespace = "LB111", "restore-into-denied-namespace", Error, "A restore writes into a namespace its target Cluster denies.";
    RestoreOverwritesSource = "LB112", "restore-overwrites-live-objects", Warning, "A restore into its own source cluster with `existingResources: update` and no namespace mapping overwrites live objects.";
    OverlappingPolicies = "LB113", "overlapping-policies", Info, "Two policies back up the same namespace on the same cluster to the same location.";
    InvalidPattern = "LB114", "invalid-pattern", Error, "A namespace or storage-class glob, or a label selector, is malformed.";
    SelectorMatchesNoCluster = "LB115", "selector-matches-no-cluster", Warning, "A BackupPolicy's `clusters.selector` matches no Cluster document.";
    RetentionOnlyMinKeep = "LB116", "retention-only-min-keep", Warning, "The retention rules keep nothing, so only the `minKeep` newest backups survive.";
    VolumeDataWithoutRecipients = "LB117", "volume-data-without-recipients", Error, "A policy asks for `snapshotMove` or `fileSystem`, but its storage location has no encryption recipients, so it cannot hold volume data.";
    TrustedKeyWithoutSigningKey = "LB118", "trusted-key-without-signing-key", Error, "A key is trusted for a cluster whose Cluster document has no signing key, so its backups are unsigned and refused.";
    SigningKeyNotTrusted = "LB119", "signing-key-not-trusted", Warning, "A Cluster signs its backups but no key is trusted for it, so nobody checks the signatures.";
    EmptyCapacityRange = "LB120", "empty-capacity-range", Error, "A volume rule's capacity range has a minimum above its maximum, so it matches no claim.";
    VolumeTimeoutExceedsBackup = "LB121", "volume-timeout-exceeds-backup", Warning, "A volume step may take longer than the whole backup, so the backup times out first.";
    ShadowedVolumeRule = "LB122", "shadowed-volume-rule", Warning, "A volume rule matches exactly what an earlier rule matches, so it never applies.";
    HookShellStringWithoutShell = "LB123", "hook-shell-string-without-shell", Warning, "A hook command is one string that looks like a shell line, but `shell: true` is not set, so it runs as a single program name.";
    HookTimeoutExceedsBackup = "LB124", "hook-timeout-exceeds-backup", Error, "A hook's timeout is longer than the whole backup may take.";
    HookSelectsNoNamespace = "LB125", "hook-selects-no-namespace", Warning, "A hook's namespaces include none that the policy backs up, so it never runs.";
    ClaimOntoLiveClaim = "LB126", "claim-restored-onto-live-claim", Warning, "A restore of single claims puts a claim back into its own namespace on its source cluster, where the live claim is skipped.";
    BackupToReadOnlyLocation = "LB130", "backup-to-read-only-location", Error, "A BackupPolicy stores its backups in a location lifeboat never writes (accessMode ReadOnly, or a Velero location).";
    RestoreHookSelectsNothing = "LB131", "restore-hook-selects-nothing", Warning, "A restore hook's namespaces include none that the restore restores, so it never runs.";
    UnencryptedImages = "LB134", "unencrypted-images", Warning, "A policy copies container images into a location without encryption, so their layers sit in the bucket in plain text.";
    RestoreHookNeverEnds = "LB132", "restore-hook-unbounded-or-empty", Error, "A restore hook waits without a bound (`waitTimeout: 0s`) or has neither `command` nor `init`.";
    DumpHookUnencrypted = "LB133", "dump-hook-unencrypted", Error, "A dump hook writes into a storage location without encryption recipients, so its artifact (a database dump) would be stored in plain text.";
    HookJobInLifeboatNamespace = "LB135", "hook-job-in-lifeboat-namespace", Error, "A backup-level Job hook runs in lifeboat's own namespace or the movers' namespace, whose Secrets hold storage credentials and keys.";
    BackupHookWithoutAction = "LB136", "backup-hook-without-action", Error, "A backup-level hook has neither `job` nor `exec`, or both.";
    RestoreFromLifeboatLocation = "LB150", "restore-location-not-velero", Error, "A RestoreRequest's `source.location` names a lifeboat location; `source.location` is for Velero locations, lifeboat backups are found by `cluster` and `policy`.";
    RestoreSourceIncomplete = "LB151", "restore-source-incomplete", Error, "A RestoreRequest without `source.location` lacks `source.cluster` or `source.policy`, so its backup cannot be found.";
    RestoreSourceAmbiguous = "LB152", "restore-source-ambiguous", Error, "A RestoreRequest names both a Velero `source.location` and a lifeboat `source.policy`.";
    KeepDeleteShorterThanBackup = "LB140", "keep-delete-shorter-than-backup", Warning, "A location's maintenance deletes marked data sooner than a backup writing there may take, so a long backup can lose data it deduplicated against.";
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// A range in a source file. Offsets are bytes into the UTF-8 text; lines and
/// columns are 1-based, columns counted in Unicode scalar values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Span {
    pub offset: usize,
    pub len: usize,
    pub line: usize,
    pub column: usize,
    pub end_line: usize,
    pub end_column: usize,
}

/// A finding about a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub code: Code,
    pub severity: Severity,
    /// What is wrong, in one line.
    pub message: String,
    /// What to do about it.
    pub help: Option<String>,
    /// The file, as the caller named it.
    pub file: Option<String>,
    /// Where in the file.
    pub span: Option<Span>,
}

impl Diagnostic {
    /// A diagnostic with the code's default severity.
    pub fn new(code: Code, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            code,
            severity: code.severity(),
            message: message.into(),
            help: None,
            file: None,
            span: None,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    pub fn at(mut self, file: &str, span: Option<Span>) -> Diagnostic {
        self.file = Some(file.to_string());
        self.span = span;
        self
    }

    /// The order diagnostics are reported in: by file, line, column, code.
    pub fn sort_key(&self) -> impl Ord + '_ {
        (
            self.file.as_deref(),
            self.span.map(|s| (s.line, s.column)),
            self.code,
            &self.message,
        )
    }
}

/// Sorts diagnostics into report order and removes exact duplicates.
pub fn sort(diagnostics: &mut Vec<Diagnostic>) {
    diagnostics.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    diagnostics.dedup();
}

/// The closest candidate to `name`, for "did you mean" hints.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(name, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}
