//! `lifeboat import velero`: Velero/OADP configuration → lifeboat policy
//! documents, with a note for every field that did not translate as is.
//!
//! ```text
//! BackupStorageLocation ──▶ StorageLocation   (a `lifeboat/` prefix beside Velero's data)
//! DataProtectionApplication.spec.backupLocations ──▶ StorageLocation each
//! Schedule ──▶ BackupPolicy                   (cron + CRON_TZ, template, ttl, volumes, paused)
//! --cluster ──▶ Cluster                        (the one the policies select)
//! ```
//!
//! Pure: documents come in as JSON values (the caller parsed the YAML or
//! read the cluster), documents and notes go out. No secret value is ever
//! read: credentials become references to a Secret the user fills in.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value, json};

/// What the import should produce.
#[derive(Debug, Clone)]
pub struct Options {
    /// The Cluster the policies select (its document is written too).
    pub cluster: String,
    /// age recipients for the locations' encryption (none: unencrypted,
    /// which lint flags for policies that back up Secrets).
    pub recipients: Vec<String>,
}

/// One policy file to write.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct File {
    /// Relative path in the output directory (`policies/daily.yaml`).
    pub path: String,
    /// Comment lines written above the document (without `# `).
    pub comments: Vec<String>,
    pub document: Value,
}

/// How a field was handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum NoteKind {
    /// Translated, but with a choice to review.
    Chosen,
    /// No equivalent: left out; check by hand.
    Untranslated,
    /// The whole object could not be imported.
    Refused,
}

/// What happened to one field of one source object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Note {
    /// `Schedule velero/daily`.
    pub source: String,
    /// `spec.template.ttl`.
    pub field: String,
    pub kind: NoteKind,
    pub message: String,
}

/// The result of an import.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Import {
    pub files: Vec<File>,
    pub notes: Vec<Note>,
    /// Source objects that were not Velero/OADP configuration, by kind.
    pub ignored: BTreeMap<String, u32>,
}

const API: &str = "lifeboat.dev/v1alpha1";
/// Velero's default backup TTL.
const DEFAULT_TTL_SECS: u64 = 720 * 3600;

/// Translates Velero/OADP documents (Lists are flattened).
pub fn velero(docs: &[Value], opts: &Options) -> Import {
    let mut out = Import::default();
    let mut objects = Vec::new();
    for d in docs {
        flatten(d, &mut objects);
    }
    // (name, default, namespace of the Velero install)
    let mut locations: Vec<(String, bool, String)> = Vec::new();
    let mut schedules = Vec::new();
    for o in &objects {
        let kind = o["kind"].as_str().unwrap_or_default();
        let group = o["apiVersion"]
            .as_str()
            .and_then(|a| a.split_once('/'))
            .map(|(g, _)| g)
            .unwrap_or_default();
        match (group, kind) {
            ("velero.io", "BackupStorageLocation") => {
                let name = o["metadata"]["name"].as_str().unwrap_or("default");
                let src = source("BackupStorageLocation", o);
                if let Some(file) = location(name, &o["spec"], &src, opts, &mut out.notes) {
                    locations.push((name.to_string(), o["spec"]["default"] == true, ns(o)));
                    out.files.push(file);
                }
            }
            ("oadp.openshift.io", "DataProtectionApplication") => {
                let dpa = o["metadata"]["name"].as_str().unwrap_or("dpa");
                let src = source("DataProtectionApplication", o);
                dpa_notes(o, &src, &mut out.notes);
                let bsls = o["spec"]["backupLocations"].as_array().cloned();
                for (i, bl) in bsls.unwrap_or_default().iter().enumerate() {
                    let field = format!("spec.backupLocations[{i}]");
                    if bl["velero"].is_null() {
                        out.notes.push(note(
                            &src,
                            &field,
                            NoteKind::Refused,
                            "a `bucket` (CloudStorage) location is not imported: create the \
                             StorageLocation by hand from the CloudStorage's bucket",
                        ));
                        continue;
                    }
                    // OADP names unnamed locations `<dpa>-<n>`, from 1.
                    let name = bl["name"]
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("{dpa}-{}", i + 1));
                    let src = format!("{src} {field}");
                    if let Some(file) = location(&name, &bl["velero"], &src, opts, &mut out.notes) {
                        locations.push((name, bl["velero"]["default"] == true, ns(o)));
                        out.files.push(file);
                    }
                }
            }
            ("velero.io", "Schedule") => schedules.push(o),
            _ => {
                let key = if kind.is_empty() {
                    "(no kind)".to_string()
                } else {
                    kind.to_string()
                };
                *out.ignored.entry(key).or_default() += 1;
            }
        }
    }
    let mut names = BTreeMap::new();
    for o in schedules {
        let src = source("Schedule", o);
        // Velero's default location: the one marked default in the
        // Schedule's own install (namespace), else any marked default.
        let here = ns(o);
        let default_location = locations
            .iter()
            .find(|(_, d, n)| *d && *n == here)
            .or_else(|| locations.iter().find(|(_, d, _)| *d))
            .or(locations.first())
            .map(|(n, _, _)| dns_name(n));
        if let Some(file) = policy(o, &src, opts, default_location.as_deref(), &mut out.notes) {
            // Two Schedules of one name in different namespaces.
            let name = file.document["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let n = names.entry(name.clone()).or_insert(0u32);
            *n += 1;
            let mut file = file;
            if *n > 1 {
                let renamed = format!("{name}-{n}");
                file.document["metadata"]["name"] = json!(renamed);
                file.path = format!("policies/{renamed}.yaml");
                out.notes.push(note(
                    &src,
                    "metadata.name",
                    NoteKind::Chosen,
                    &format!("renamed to `{renamed}`: another Schedule is named `{name}`"),
                ));
            }
            out.files.push(file);
        }
    }
    out.files.push(File {
        path: format!("clusters/{}.yaml", opts.cluster),
        comments: vec![
            "The cluster the imported policies back up, named by --cluster.".into(),
            "Its controller needs the Secrets the StorageLocations name.".into(),
        ],
        document: json!({
            "apiVersion": API,
            "kind": "Cluster",
            "metadata": {"name": opts.cluster},
            "spec": {"role": "primary"},
        }),
    });
    out.notes.sort();
    out
}

fn flatten(v: &Value, out: &mut Vec<Value>) {
    // `List`, and typed lists such as `ScheduleList`.
    if v["kind"].as_str().is_some_and(|k| k.ends_with("List")) {
        for item in v["items"].as_array().into_iter().flatten() {
            flatten(item, out);
        }
    } else if v.is_object() {
        out.push(v.clone());
    }
}

fn ns(o: &Value) -> String {
    o["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn source(kind: &str, o: &Value) -> String {
    match (
        o["metadata"]["namespace"].as_str(),
        o["metadata"]["name"].as_str(),
    ) {
        (Some(ns), Some(n)) => format!("{kind} {ns}/{n}"),
        (None, Some(n)) => format!("{kind} {n}"),
        _ => kind.to_string(),
    }
}

fn note(source: &str, field: &str, kind: NoteKind, message: &str) -> Note {
    Note {
        source: source.into(),
        field: field.into(),
        kind,
        message: message.into(),
    }
}

/// A Kubernetes name usable as a document name (lowercase DNS label).
fn dns_name(s: &str) -> String {
    let mut n: String = s
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    n = n.trim_matches('-').to_string();
    if n.is_empty() { "imported".into() } else { n }
}

/// A BackupStorageLocation spec (or a DPA's `velero` block) → a
/// StorageLocation file.
fn location(
    name: &str,
    spec: &Value,
    src: &str,
    opts: &Options,
    notes: &mut Vec<Note>,
) -> Option<File> {
    let name = dns_name(name);
    let provider = spec["provider"].as_str().unwrap_or_default();
    let provider = provider.strip_prefix("velero.io/").unwrap_or(provider);
    let bucket = spec["objectStorage"]["bucket"].as_str().unwrap_or_default();
    if bucket.is_empty() {
        notes.push(note(
            src,
            "spec.objectStorage.bucket",
            NoteKind::Refused,
            "no bucket: nothing to import",
        ));
        return None;
    }
    let prefix = spec["objectStorage"]["prefix"]
        .as_str()
        .unwrap_or_default()
        .trim_matches('/');
    // Velero's backups, restic/ and kopia/ stay where they are; lifeboat
    // refuses to write into a prefix holding another tool's data.
    let own = if prefix.is_empty() {
        "lifeboat".to_string()
    } else {
        format!("{prefix}/lifeboat")
    };
    let config = &spec["config"];
    let mut out = Map::new();
    let keys: &[&str] = match provider {
        "aws" => {
            out.insert("url".into(), json!(format!("s3://{bucket}/{own}")));
            if let Some(r) = config["region"].as_str() {
                out.insert("region".into(), json!(r));
            }
            if let Some(u) = config["s3Url"].as_str() {
                out.insert("endpoint".into(), json!(u));
            }
            if config["s3ForcePathStyle"].as_str() == Some("true")
                || config["s3ForcePathStyle"] == true
            {
                out.insert("pathStyle".into(), json!(true));
            }
            &["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
        }
        "gcp" => {
            out.insert("url".into(), json!(format!("gs://{bucket}/{own}")));
            &["GOOGLE_SERVICE_ACCOUNT_KEY"]
        }
        "azure" => {
            out.insert("url".into(), json!(format!("az://{bucket}/{own}")));
            if let Some(acct) = config["storageAccount"].as_str() {
                notes.push(note(
                    src,
                    "spec.config.storageAccount",
                    NoteKind::Chosen,
                    &format!(
                        "the storage account `{acct}` goes into the Secret as \
                         AZURE_STORAGE_ACCOUNT_NAME"
                    ),
                ));
            }
            &["AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY"]
        }
        other => {
            notes.push(note(
                src,
                "spec.provider",
                NoteKind::Refused,
                &format!(
                    "provider `{other}` is not one lifeboat writes to (aws and S3-compatible \
                     stores, gcp, azure); write the StorageLocation by hand"
                ),
            ));
            return None;
        }
    };
    notes.push(note(
        src,
        "spec.objectStorage.prefix",
        NoteKind::Chosen,
        &format!(
            "lifeboat writes below `{own}/`, beside Velero's data, which it would otherwise take \
             for foreign data and refuse; Velero's existing backups stay where they are"
        ),
    ));
    let secret = format!("lifeboat-{name}-credentials");
    let velero_secret = match (
        spec["credential"]["name"].as_str(),
        spec["credential"]["key"].as_str(),
    ) {
        (Some(n), Some(k)) => format!("key `{k}` of Secret `{n}`"),
        (Some(n), None) => format!("Secret `{n}`"),
        _ => "Velero's default Secret `cloud-credentials` (key `cloud`)".to_string(),
    };
    notes.push(note(
        src,
        "spec.credential",
        NoteKind::Chosen,
        &format!(
            "create Secret `{secret}` in lifeboat's namespace with the keys {}, taking the values \
             from {velero_secret} (Velero keeps a credentials file, lifeboat one value per key); \
             no secret value was read",
            keys.join(", ")
        ),
    ));
    out.insert("credentials".into(), json!({"secretRef": {"name": secret}}));
    if opts.recipients.is_empty() {
        notes.push(note(
            src,
            "encryption",
            NoteKind::Untranslated,
            "Velero does not encrypt backups; pass --recipient age1… (lifeboat keys generate \
             makes a key pair) so Secrets are not stored readable by anyone with the bucket",
        ));
    } else {
        out.insert(
            "encryption".into(),
            json!({
                "recipients": opts.recipients,
                "identitySecretRef": {"name": "lifeboat-age-identity", "key": "identity.txt"},
            }),
        );
    }
    if spec["accessMode"] == "ReadOnly" {
        out.insert("accessMode".into(), json!("ReadOnly"));
    }
    for (field, why) in [
        (
            "caCert",
            "a custom CA is not supported yet; the system roots are used",
        ),
        (
            "insecureSkipTLSVerify",
            "lifeboat always verifies TLS certificates",
        ),
        (
            "profile",
            "AWS profiles are not read; the Secret's keys are",
        ),
        (
            "resourceGroup",
            "not needed: lifeboat authenticates with the account key",
        ),
        (
            "subscriptionId",
            "not needed: lifeboat authenticates with the account key",
        ),
        (
            "kmsKeyId",
            "server-side KMS encryption is not set by lifeboat; age encrypts client-side",
        ),
        (
            "serverSideEncryption",
            "server-side encryption is the bucket's default",
        ),
    ] {
        if !config[field].is_null() || !spec["objectStorage"][field].is_null() {
            notes.push(note(
                src,
                &format!("spec.config.{field}"),
                NoteKind::Untranslated,
                why,
            ));
        }
    }
    for field in ["backupSyncPeriod", "validationFrequency"] {
        if !spec[field].is_null() {
            notes.push(note(
                src,
                &format!("spec.{field}"),
                NoteKind::Untranslated,
                "lifeboat reads the catalog on each reconcile; there is nothing to set",
            ));
        }
    }
    Some(File {
        path: format!("storage/{name}.yaml"),
        comments: vec![
            format!("Imported from {src}."),
            format!("Fill Secret `{secret}` before the controller uses this location."),
        ],
        document: json!({
            "apiVersion": API,
            "kind": "StorageLocation",
            "metadata": {"name": name},
            "spec": Value::Object(out),
        }),
    })
}

fn dpa_notes(o: &Value, src: &str, notes: &mut Vec<Note>) {
    let spec = &o["spec"];
    if spec["snapshotLocations"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
    {
        notes.push(note(
            src,
            "spec.snapshotLocations",
            NoteKind::Untranslated,
            "provider-native snapshot locations have no equivalent: lifeboat uses CSI snapshots",
        ));
    }
    if let Some(uploader) = spec["configuration"]["nodeAgent"]["uploaderType"].as_str() {
        notes.push(note(
            src,
            "spec.configuration.nodeAgent.uploaderType",
            NoteKind::Chosen,
            &format!(
                "`{uploader}` is replaced by lifeboat's restic-format repositories, one per \
                 namespace, with a random key sealed to the location's recipients"
            ),
        ));
    }
    if !spec["configuration"]["velero"]["defaultPlugins"].is_null() {
        notes.push(note(
            src,
            "spec.configuration.velero.defaultPlugins",
            NoteKind::Chosen,
            "no plugins: the OpenShift, CSI and KubeVirt rules are built in",
        ));
    }
}

/// Velero's schedule → (5-field cron, time zone).
pub fn cron(schedule: &str) -> Result<(String, Option<String>), String> {
    let s = schedule.trim();
    let (tz, rest) = match s.strip_prefix("CRON_TZ=").or_else(|| s.strip_prefix("TZ=")) {
        Some(r) => match r.split_once(char::is_whitespace) {
            Some((tz, rest)) => (Some(tz.to_string()), rest.trim()),
            None => return Err(format!("`{schedule}` has a time zone but no schedule")),
        },
        None => (None, s),
    };
    let expr = match rest {
        "@yearly" | "@annually" => "0 0 1 1 *".to_string(),
        "@monthly" => "0 0 1 * *".to_string(),
        "@weekly" => "0 0 * * 0".to_string(),
        "@daily" | "@midnight" => "0 0 * * *".to_string(),
        "@hourly" => "0 * * * *".to_string(),
        r if r.starts_with("@every") => every(r.trim_start_matches("@every").trim())?,
        r if r.starts_with('@') => return Err(format!("`{r}` is not a descriptor Velero accepts")),
        r => {
            let fields = r.split_whitespace().count();
            if fields != 5 {
                return Err(format!(
                    "`{r}` has {fields} fields; a schedule has 5 (minute hour day-of-month month \
                     day-of-week)"
                ));
            }
            r.split_whitespace().collect::<Vec<_>>().join(" ")
        }
    };
    Ok((expr, tz))
}

/// `@every D` as a cron expression, where D divides an hour or a day.
fn every(d: &str) -> Result<String, String> {
    let secs = go_duration(d).ok_or_else(|| format!("`@every {d}`: `{d}` is not a duration"))?;
    let refuse = || {
        format!(
            "`@every {d}` counts from when Velero started, which no cron expression can say; \
             only intervals that divide an hour or a day translate (e.g. 15m, 6h): write a cron \
             schedule"
        )
    };
    if secs == 0 || secs % 60 != 0 {
        return Err(refuse());
    }
    let mins = secs / 60;
    match mins {
        m if m < 60 && 60 % m == 0 => Ok(if m == 1 {
            "* * * * *".into()
        } else {
            format!("*/{m} * * * *")
        }),
        m if m % 60 == 0 && m / 60 < 24 && 24 % (m / 60) == 0 => {
            let h = m / 60;
            Ok(if h == 1 {
                "0 * * * *".into()
            } else {
                format!("0 */{h} * * *")
            })
        }
        1440 => Ok("0 0 * * *".into()),
        _ => Err(refuse()),
    }
}

/// A Go `time.Duration` string (`720h0m0s`, `1h30m`, `90m`, `1.5h`) in
/// seconds.
pub fn go_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if s == "0" {
        return Some(0);
    }
    let mut total = 0f64;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if (c == 'm' && chars.peek() == Some(&'s')) || c == 'u' || c == 'µ' || c == 'n' {
            unit.push(chars.next()?);
        }
        let n: f64 = num.parse().ok()?;
        num.clear();
        let factor = match unit.as_str() {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return None,
        };
        total += n * factor;
        any = true;
    }
    if !num.is_empty() || !any {
        return None;
    }
    Some(total.round() as u64)
}

/// Seconds as a lifeboat duration (`30d`, `1h30m`).
fn duration(secs: u64) -> String {
    crate::Duration::from_secs(secs).to_string()
}

/// A Velero label selector (same shape as lifeboat's), checked.
fn selector(v: &Value) -> Option<Value> {
    let mut out = Map::new();
    if let Some(m) = v["matchLabels"].as_object().filter(|m| !m.is_empty()) {
        out.insert("matchLabels".into(), Value::Object(m.clone()));
    }
    if let Some(e) = v["matchExpressions"].as_array().filter(|e| !e.is_empty()) {
        let exprs: Vec<Value> = e
            .iter()
            .map(|r| {
                let mut x = json!({"key": r["key"], "operator": r["operator"]});
                if let Some(vals) = r["values"].as_array().filter(|v| !v.is_empty()) {
                    x["values"] = Value::Array(vals.clone());
                }
                x
            })
            .collect();
        out.insert("matchExpressions".into(), Value::Array(exprs));
    }
    (!out.is_empty()).then_some(Value::Object(out))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// A template's resource list for `side` (`include` or `exclude`):
/// Velero's `<side>dResources` plus its namespaced and cluster-scoped
/// variants, which lifeboat does not tell apart (noted).
fn merged_resources(t: &Value, side: &str, src: &str, notes: &mut Vec<Note>) -> Vec<String> {
    let velero = if side == "include" {
        "included"
    } else {
        "excluded"
    };
    let mut out: Vec<String> = strings(&t[format!("{velero}Resources").as_str()]);
    for scope in ["NamespaceScoped", "ClusterScoped"] {
        let field = format!("{velero}{scope}Resources");
        let more = strings(&t[field.as_str()]);
        if !more.is_empty() {
            notes.push(note(
                src,
                &format!("spec.template.{field}"),
                NoteKind::Chosen,
                &format!(
                    "merged into {side}.resources, which applies to namespaced and \
                     cluster-scoped resources alike"
                ),
            ));
            out.extend(more);
        }
    }
    // Including `*` is including every resource: the same as listing none.
    if side == "include" {
        out.retain(|r| r != "*");
    }
    out.sort();
    out.dedup();
    out
}

/// One of Velero's exec hooks, as lifeboat will run it.
#[derive(Debug, Clone, PartialEq)]
struct Exec {
    container: Option<String>,
    command: Vec<String>,
    /// `continue` or `failVolume` (Velero's `Fail`, its default).
    on_error: &'static str,
    /// Seconds (Velero's default 30).
    timeout: u64,
}

/// Velero's default hook timeout, lifeboat's too.
const DEFAULT_HOOK_TIMEOUT_SECS: u64 = 30;

/// Velero's exec hook `v` (`{exec: {container, command, onError,
/// timeout}}`), or why it cannot run.
fn exec_hook(v: &Value) -> Result<Exec, String> {
    let e = &v["exec"];
    if e.is_null() {
        return Err("has no `exec`, the only kind of backup hook Velero runs".into());
    }
    let command = strings(&e["command"]);
    if command.is_empty()
        || command[0].is_empty()
        || e["command"].as_array().map(Vec::len) != Some(command.len())
    {
        return Err("has no command (a list of strings)".into());
    }
    let on_error = match e["onError"].as_str().map(str::trim) {
        None | Some("") | Some("Fail") => "failVolume",
        Some("Continue") => "continue",
        Some(other) => {
            return Err(format!(
                "has onError `{other}`; Velero's values are Fail and Continue"
            ));
        }
    };
    let timeout = match &e["timeout"] {
        Value::Null => DEFAULT_HOOK_TIMEOUT_SECS,
        Value::String(t) if t.trim().is_empty() => DEFAULT_HOOK_TIMEOUT_SECS,
        Value::String(t) => match go_duration(t) {
            // Velero runs a zero timeout with its default.
            Some(0) => DEFAULT_HOOK_TIMEOUT_SECS,
            Some(secs) => secs,
            None => return Err(format!("has timeout `{t}`, which is not a duration")),
        },
        other => return Err(format!("has timeout `{other}`, which is not a duration")),
    };
    Ok(Exec {
        container: e["container"]
            .as_str()
            .filter(|c| !c.is_empty())
            .map(str::to_string),
        command,
        on_error,
        timeout,
    })
}

/// Whether a hook's resource list names pods (Velero runs hooks in pods
/// only).
fn names_pods(resources: &[String]) -> bool {
    resources.iter().any(|r| {
        matches!(
            r.as_str(),
            "*" | "pods" | "pod" | "po" | "pods." | "pods.v1"
        )
    })
}

/// A template's `hooks.resources` → the policy's `spec.hooks.pods`.
///
/// Each Velero resource hook runs its `pre` commands in order, then the
/// pod's backup, then its `post` commands; every command has its own
/// container, `onError` and timeout. A lifeboat pod hook has one of each
/// and one `pre` and one `post` command, so the i-th `pre` and the i-th
/// `post` become one hook when they agree on those (its thaw then runs
/// exactly when its freeze ran), and hooks of their own otherwise; the
/// order of the `pre` commands, and of the `post` ones, is kept.
fn pod_hooks(
    t: &Value,
    src: &str,
    policy_excluded: &[String],
    notes: &mut Vec<Note>,
) -> Option<Vec<Value>> {
    let resources = t["hooks"]["resources"].as_array()?;
    let mut out: Vec<Value> = Vec::new();
    let mut used = std::collections::BTreeSet::new();
    for (i, r) in resources.iter().enumerate() {
        let field = format!("spec.template.hooks.resources[{i}]");
        let velero_name = r["name"].as_str().unwrap_or_default();
        let label = if velero_name.is_empty() {
            format!("hook {}", i + 1)
        } else {
            format!("hook `{velero_name}`")
        };
        // Where it runs.
        let included = strings(&r["includedResources"]);
        let excluded = strings(&r["excludedResources"]);
        if (!included.is_empty() && !names_pods(&included)) || names_pods(&excluded) {
            notes.push(note(
                src,
                &format!("{field}.includedResources"),
                NoteKind::Untranslated,
                &format!(
                    "{label} selects no pods (Velero runs hooks in pods only), so it never ran: \
                     left out"
                ),
            ));
            continue;
        }
        let other: Vec<&String> = included
            .iter()
            .chain(&excluded)
            .filter(|r| !names_pods(std::slice::from_ref(*r)))
            .collect();
        if !other.is_empty() {
            notes.push(note(
                src,
                &format!("{field}.includedResources"),
                NoteKind::Chosen,
                &format!(
                    "{label}: resources other than pods ({}) are dropped; Velero runs hooks in \
                     pods only, and so does lifeboat",
                    other
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let namespaces: Vec<String> = strings(&r["includedNamespaces"])
            .into_iter()
            .filter(|n| n != "*")
            .collect();
        let hook_excluded: Vec<String> = strings(&r["excludedNamespaces"])
            .into_iter()
            .filter(|n| !policy_excluded.contains(n))
            .collect();
        if !hook_excluded.is_empty() {
            notes.push(note(
                src,
                &format!("{field}.excludedNamespaces"),
                NoteKind::Untranslated,
                &format!(
                    "{label}: a lifeboat hook names the namespaces it runs in but excludes \
                     none, so it also runs in {} if the policy backs them up and their pods \
                     match; check that, or list the namespaces it should run in as \
                     `namespaces`",
                    hook_excluded
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let label_selector = selector(&r["labelSelector"]);
        // What runs.
        let mut phases: [Vec<Exec>; 2] = [Vec::new(), Vec::new()];
        for (p, phase) in ["pre", "post"].iter().enumerate() {
            for (j, h) in r[*phase].as_array().into_iter().flatten().enumerate() {
                match exec_hook(h) {
                    Ok(e) => phases[p].push(e),
                    Err(why) => notes.push(note(
                        src,
                        &format!("{field}.{phase}[{j}]"),
                        NoteKind::Untranslated,
                        &format!("{label}: the {phase} hook {why}: left out"),
                    )),
                }
            }
        }
        let [pre, post] = phases;
        if pre.is_empty() && post.is_empty() {
            continue;
        }
        // (pre, post) pairs, in order.
        let mut pairs: Vec<(Option<Exec>, Option<Exec>)> = Vec::new();
        for k in 0..pre.len().max(post.len()) {
            match (pre.get(k), post.get(k)) {
                (Some(a), Some(b))
                    if a.container == b.container
                        && a.on_error == b.on_error
                        && a.timeout == b.timeout =>
                {
                    pairs.push((Some(a.clone()), Some(b.clone())))
                }
                (a, b) => {
                    if let Some(a) = a {
                        pairs.push((Some(a.clone()), None));
                    }
                    if let Some(b) = b {
                        pairs.push((None, Some(b.clone())));
                    }
                }
            }
        }
        let base = if velero_name.is_empty() {
            format!("hook-{}", i + 1)
        } else {
            // Leaves room for a `-N` suffix within 63 characters.
            let mut n = dns_name(velero_name);
            n.truncate(56);
            n.trim_end_matches('-').to_string()
        };
        let several = pairs.len() > 1;
        let mut names = Vec::new();
        for (k, (a, b)) in pairs.into_iter().enumerate() {
            let mut name = if several {
                format!("{base}-{}", k + 1)
            } else {
                base.clone()
            };
            let mut n = 2;
            while !used.insert(name.clone()) {
                name = format!("{base}-{}-{n}", k + 1);
                n += 1;
            }
            let first = a
                .as_ref()
                .or(b.as_ref())
                .expect("one of pre and post")
                .clone();
            let mut h = Map::new();
            h.insert("name".into(), json!(name));
            if !namespaces.is_empty() {
                h.insert("namespaces".into(), json!(namespaces));
            }
            if let Some(sel) = &label_selector {
                h.insert("labelSelector".into(), sel.clone());
            }
            if let Some(c) = &first.container {
                h.insert("container".into(), json!(c));
            }
            if let Some(a) = &a {
                h.insert("pre".into(), json!(a.command));
            }
            if let Some(b) = &b {
                h.insert("post".into(), json!(b.command));
            }
            h.insert("timeout".into(), json!(duration(first.timeout)));
            h.insert("onError".into(), json!(first.on_error));
            names.push(name);
            out.push(Value::Object(h));
        }
        if several {
            notes.push(note(
                src,
                &field,
                NoteKind::Chosen,
                &format!(
                    "{label} has several commands, or pre and post commands that differ in \
                     container, onError or timeout: it became the hooks {}, run in that order \
                     (a lifeboat hook has one pre and one post command, and its post command \
                     runs exactly when its pre command ran)",
                    names
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    if !out.is_empty() {
        notes.push(note(
            src,
            "spec.template.hooks",
            NoteKind::Chosen,
            "the hooks run around volume data, in pods that mount claims the backup copies: \
             pre commands before the snapshots of the claims the pods share, post commands as \
             soon as every one of those snapshots has its handle (Velero ran them around each \
             pod's backup, claims or not). A hook of a pod without claims does not run: make it \
             a backup-level `exec` hook (spec.hooks.before/after). A pod with Velero's hook \
             annotations runs those instead, as in Velero",
        ));
    }
    (!out.is_empty()).then_some(out)
}

/// A Schedule → a BackupPolicy file.
fn policy(
    o: &Value,
    src: &str,
    opts: &Options,
    default_location: Option<&str>,
    notes: &mut Vec<Note>,
) -> Option<File> {
    let name = dns_name(o["metadata"]["name"].as_str().unwrap_or("imported"));
    let spec = &o["spec"];
    let t = &spec["template"];
    let (schedule, tz) = match cron(spec["schedule"].as_str().unwrap_or_default()) {
        Ok(x) => x,
        Err(why) => {
            notes.push(note(src, "spec.schedule", NoteKind::Refused, &why));
            return None;
        }
    };
    let mut comments = vec![format!("Imported from {src}.")];
    let mut p = Map::new();
    p.insert("clusters".into(), json!({"names": [opts.cluster]}));

    // What to back up.
    let mut include = Map::new();
    let namespaces: Vec<String> = strings(&t["includedNamespaces"])
        .into_iter()
        .filter(|n| n != "*")
        .collect();
    if !namespaces.is_empty() {
        include.insert("namespaces".into(), json!(namespaces));
    }
    let resources = merged_resources(t, "include", src, notes);
    if !resources.is_empty() {
        include.insert("resources".into(), json!(resources));
    }
    let or_selectors = t["orLabelSelectors"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if let Some(sel) = selector(&t["labelSelector"]) {
        include.insert("labelSelector".into(), sel);
    } else if let [only] = or_selectors.as_slice()
        && let Some(sel) = selector(only)
    {
        include.insert("labelSelector".into(), sel);
    }
    if or_selectors.len() > 1 {
        notes.push(note(
            src,
            "spec.template.orLabelSelectors",
            NoteKind::Untranslated,
            "lifeboat selects by one label selector: split this Schedule into one policy per \
             selector, or use one label all the objects carry",
        ));
    }
    match t["includeClusterResources"].as_bool() {
        Some(true) => {
            include.insert("clusterResources".into(), json!("always"));
        }
        Some(false) => {
            include.insert("clusterResources".into(), json!("never"));
        }
        None => {}
    }
    if !include.is_empty() {
        p.insert("include".into(), Value::Object(include));
    }
    let mut exclude = Map::new();
    let ex_ns = strings(&t["excludedNamespaces"]);
    if !ex_ns.is_empty() {
        exclude.insert("namespaces".into(), json!(ex_ns));
    }
    let ex_res = merged_resources(t, "exclude", src, notes);
    if !ex_res.is_empty() {
        exclude.insert("resources".into(), json!(ex_res));
    }
    if !exclude.is_empty() {
        p.insert("exclude".into(), Value::Object(exclude));
    }

    p.insert("schedule".into(), json!(schedule));
    if let Some(tz) = tz {
        p.insert("timezone".into(), json!(tz));
    }

    // Retention: Velero keeps each backup for its TTL.
    let ttl = match t["ttl"].as_str() {
        Some(s) => match go_duration(s) {
            Some(secs) => secs,
            None => {
                notes.push(note(
                    src,
                    "spec.template.ttl",
                    NoteKind::Refused,
                    &format!("`{s}` is not a duration"),
                ));
                return None;
            }
        },
        None => {
            notes.push(note(
                src,
                "spec.template.ttl",
                NoteKind::Chosen,
                "no ttl: Velero's default of 720h (30 days) is kept",
            ));
            DEFAULT_TTL_SECS
        }
    };
    let max_age = duration(ttl);
    p.insert("retention".into(), json!({"maxAge": max_age}));
    comments.push(format!(
        "retention.maxAge keeps Velero's ttl ({max_age}). lifeboat can also keep by count and"
    ));
    comments.push(
        "calendar (keepLast, keepDaily, keepWeekly, keepMonthly), e.g. keepDaily: 7 with".into(),
    );
    comments.push("keepWeekly: 4 in place of one long maxAge.".into());

    // Where to.
    let storage = t["storageLocation"]
        .as_str()
        .map(dns_name)
        .or_else(|| default_location.map(str::to_string));
    let storage = match storage {
        Some(s) => s,
        None => {
            notes.push(note(
                src,
                "spec.template.storageLocation",
                NoteKind::Chosen,
                "no storage location and no default BackupStorageLocation among the inputs: \
                 `default` is assumed (Velero's default name); import its BSL too",
            ));
            "default".into()
        }
    };
    p.insert("storage".into(), json!(storage));
    if spec["paused"] == true {
        p.insert("suspend".into(), json!(true));
    }

    // Volumes.
    let method = if t["snapshotMoveData"] == true {
        Some("snapshotMove")
    } else if t["defaultVolumesToFsBackup"] == true || t["defaultVolumesToRestic"] == true {
        Some("fileSystem")
    } else if t["snapshotVolumes"] == false {
        Some("skip")
    } else {
        // lifeboat's default (no method): snapshotMove where the claim's
        // driver has a snapshot class and the location has recipients.
        notes.push(note(
            src,
            "spec.template.snapshotVolumes",
            NoteKind::Chosen,
            "Velero kept volume snapshots in the storage system only; lifeboat's default moves \
             their data into the location (snapshotMove, disaster-proof) when it is encrypted. \
             Set volumes.method: snapshot to keep Velero's behaviour",
        ));
        None
    };
    let mut volumes = Map::new();
    if let Some(m) = method {
        volumes.insert("method".into(), json!(m));
    }
    let mut timeouts = Map::new();
    for (field, ours) in [
        ("csiSnapshotTimeout", "snapshotReady"),
        ("itemOperationTimeout", "move"),
    ] {
        if let Some(s) = t[field].as_str() {
            match go_duration(s) {
                Some(secs) if secs > 0 => {
                    timeouts.insert(ours.into(), json!(duration(secs)));
                }
                _ => notes.push(note(
                    src,
                    &format!("spec.template.{field}"),
                    NoteKind::Untranslated,
                    &format!("`{s}` is not a duration; lifeboat's default applies"),
                )),
            }
        }
    }
    if !timeouts.is_empty() {
        volumes.insert("timeouts".into(), Value::Object(timeouts));
    }
    if !volumes.is_empty() {
        p.insert("volumes".into(), Value::Object(volumes));
    }

    // Hooks.
    if let Some(pods) = pod_hooks(t, src, &ex_ns, notes) {
        p.insert("hooks".into(), json!({"pods": pods}));
    }

    // What has no equivalent.
    for (field, why) in [
        (
            "volumeSnapshotLocations",
            "provider-native snapshot locations have no equivalent: lifeboat uses CSI snapshots",
        ),
        (
            "orderedResources",
            "lifeboat orders a restore by kind and dependencies itself",
        ),
        (
            "resourcePolicy",
            "resource policies have no equivalent: write volumes.rules (storage class, driver, \
             labels, capacity) instead",
        ),
        (
            "uploaderConfig",
            "lifeboat's movers take no uploader settings",
        ),
        ("datamover", "lifeboat's own mover moves the data"),
        (
            "metadata",
            "labels on backups have no equivalent: lifeboat names backups by policy and time",
        ),
    ] {
        if !t[field].is_null() {
            notes.push(note(
                src,
                &format!("spec.template.{field}"),
                NoteKind::Untranslated,
                why,
            ));
        }
    }
    if spec["useOwnerReferencesInBackup"] == true {
        notes.push(note(
            src,
            "spec.useOwnerReferencesInBackup",
            NoteKind::Untranslated,
            "backups are not Kubernetes objects in lifeboat; deleting the policy keeps its \
             backups for a grace period",
        ));
    }
    if spec["skipImmediately"] == false {
        notes.push(note(
            src,
            "spec.skipImmediately",
            NoteKind::Chosen,
            "a new policy's first backup is taken at its first due slot",
        ));
    }
    Some(File {
        path: format!("policies/{name}.yaml"),
        comments,
        document: json!({
            "apiVersion": API,
            "kind": "BackupPolicy",
            "metadata": {"name": name},
            "spec": Value::Object(p),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_translate_to_cron_or_are_refused_with_a_reason() {
        assert_eq!(
            cron("CRON_TZ=Europe/Berlin 0 1 * * *").unwrap(),
            ("0 1 * * *".into(), Some("Europe/Berlin".into()))
        );
        assert_eq!(cron("@every 6h").unwrap().0, "0 */6 * * *");
        assert_eq!(cron("@every 15m").unwrap().0, "*/15 * * * *");
        assert_eq!(cron("@every 24h").unwrap().0, "0 0 * * *");
        assert_eq!(cron("@daily").unwrap().0, "0 0 * * *");
        assert!(
            cron("@every 7h")
                .unwrap_err()
                .contains("divide an hour or a day")
        );
        assert!(cron("0 0 1 * * *").unwrap_err().contains("6 fields"));
    }

    #[test]
    fn velero_exec_hooks_translate_or_say_why_not() {
        let ok =
            exec_hook(&json!({"exec": {"command": ["/bin/true"], "timeout": "1m30s"}})).unwrap();
        assert_eq!(ok.on_error, "failVolume", "Velero's default is Fail");
        assert_eq!(duration(ok.timeout), "1m30s");
        assert_eq!(ok.container, None);
        let default =
            exec_hook(&json!({"exec": {"command": ["x"], "onError": "Continue", "timeout": "0s"}}))
                .unwrap();
        assert_eq!((default.on_error, default.timeout), ("continue", 30));
        assert!(
            exec_hook(&json!({"exec": {"command": []}}))
                .unwrap_err()
                .contains("no command")
        );
        assert!(
            exec_hook(&json!({"exec": {"command": ["a", 1]}}))
                .unwrap_err()
                .contains("no command")
        );
        assert!(
            exec_hook(&json!({"exec": {"command": ["a"], "onError": "Retry"}}))
                .unwrap_err()
                .contains("Fail and Continue")
        );
        assert!(
            exec_hook(&json!({"exec": {"command": ["a"], "timeout": "soon"}}))
                .unwrap_err()
                .contains("not a duration")
        );
        assert!(
            exec_hook(&json!({"http": {}}))
                .unwrap_err()
                .contains("no `exec`")
        );
        assert!(names_pods(&["pods".into()]) && !names_pods(&["configmaps".into()]));
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration("720h0m0s"), Some(720 * 3600));
        assert_eq!(go_duration("1h30m"), Some(5400));
        assert_eq!(go_duration("1.5h"), Some(5400));
        assert_eq!(go_duration("10m0s"), Some(600));
        assert_eq!(go_duration("300ms"), Some(0));
        assert_eq!(go_duration("5x"), None);
        assert_eq!(duration(720 * 3600), "30d");
        assert_eq!(duration(5400), "1h30m");
    }
}
