//! `lifeboat import velero`: Velero/OADP configuration (YAML files or a
//! cluster) → lifeboat policy files and a report of what did not translate
//! (`lifeboat_core::import`).

use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args as ClapArgs, Subcommand, ValueEnum};
use lifeboat_core::import::{self, Import, NoteKind};
use serde_json::Value;

use crate::kubeclient::KubeArgs;

/// Import another tool's configuration as lifeboat policy files.
#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(subcommand)]
    pub source: Source,
}

#[derive(Debug, Subcommand)]
pub enum Source {
    /// Velero or OADP: Schedules, BackupStorageLocations and
    /// DataProtectionApplications, from YAML files (`-f`, `kubectl get -o
    /// yaml` output and Lists included) or from a cluster (`--kubeconfig`).
    /// No secret value is read.
    Velero(VeleroArgs),
}

#[derive(Debug, ClapArgs)]
pub struct VeleroArgs {
    /// YAML files to read (`-` for standard input); repeatable.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Read the Velero/OADP resources from this cluster instead.
    #[arg(long = "from-cluster")]
    pub from_cluster: bool,
    #[command(flatten)]
    pub kube: KubeArgs,
    /// The Cluster the policies back up (its document is written too).
    #[arg(long, value_name = "NAME")]
    pub cluster: String,
    /// Directory to write the policy files and IMPORT.md into.
    #[arg(long, short = 'o', value_name = "DIR")]
    pub output: PathBuf,
    /// age recipient to encrypt the imported locations to; repeatable.
    /// Velero does not encrypt: without one, Secrets would be stored readable.
    #[arg(long = "recipient", value_name = "AGE1…")]
    pub recipients: Vec<String>,
    /// Replace files that already exist in the output directory.
    #[arg(long)]
    pub force: bool,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.source {
        Source::Velero(a) => velero(a),
    }
}

fn velero(args: VeleroArgs) -> anyhow::Result<ExitCode> {
    lifeboat_store::validate_name("cluster", &args.cluster)?;
    let docs = match (args.files.is_empty(), args.from_cluster) {
        (false, false) => read_files(&args.files)?,
        (true, true) => crate::runtime()?.block_on(read_cluster(&args.kube))?,
        (true, false) => bail!("nothing to import: pass -f FILE (repeatable) or --from-cluster"),
        (false, true) => bail!("pass either -f FILE or --from-cluster, not both"),
    };
    let result = import::velero(
        &docs,
        &import::Options {
            cluster: args.cluster.clone(),
            recipients: args.recipients.clone(),
        },
    );
    let written = result
        .files
        .iter()
        .filter(|f| f.document["kind"] != "Cluster")
        .count();
    if written == 0 {
        let text = report(&result, &args.output);
        eprint!("{text}");
        bail!(
            "no Schedule, BackupStorageLocation or DataProtectionApplication could be imported \
             from the input"
        );
    }
    write(&result, &args.output, args.force)?;
    let text = match args.format {
        Format::Text => report(&result, &args.output),
        Format::Json => format!("{:#}\n", serde_json::to_value(&result)?),
    };
    crate::output::print(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn read_files(files: &[PathBuf]) -> anyhow::Result<Vec<Value>> {
    let mut docs = Vec::new();
    for f in files {
        let text = if f.as_os_str() == "-" {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("cannot read standard input")?;
            s
        } else {
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?
        };
        let parsed: Vec<Value> = serde_saphyr::from_str_multiple(&text).with_context(|| {
            format!(
                "{} is not YAML that lifeboat can read (as `kubectl get … -o yaml` writes it)",
                f.display()
            )
        })?;
        docs.extend(parsed.into_iter().filter(|v| !v.is_null()));
    }
    Ok(docs)
}

/// Velero's and OADP's configuration kinds, read from every namespace. A
/// kind whose CRD is not installed is skipped.
async fn read_cluster(kube: &KubeArgs) -> anyhow::Result<Vec<Value>> {
    use kube::api::{Api, ApiResource, DynamicObject, ListParams};
    let client = kube.client().await?;
    let mut docs = Vec::new();
    for (group, version, kind, plural) in [
        (
            "velero.io",
            "v1",
            "BackupStorageLocation",
            "backupstoragelocations",
        ),
        ("velero.io", "v1", "Schedule", "schedules"),
        (
            "oadp.openshift.io",
            "v1alpha1",
            "DataProtectionApplication",
            "dataprotectionapplications",
        ),
    ] {
        let ar = ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: format!("{group}/{version}"),
            kind: kind.into(),
            plural: plural.into(),
        };
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        match api.list(&ListParams::default()).await {
            Ok(list) => {
                for mut o in list.items {
                    o.types = Some(kube::api::TypeMeta {
                        api_version: ar.api_version.clone(),
                        kind: kind.into(),
                    });
                    docs.push(serde_json::to_value(o)?);
                }
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                return Err(e).with_context(|| format!("cannot list {plural}.{group}"));
            }
        }
    }
    Ok(docs)
}

/// Writes the files (refusing to replace any without `force`) and
/// IMPORT.md.
fn write(result: &Import, dir: &Path, force: bool) -> anyhow::Result<()> {
    let mut planned: Vec<(PathBuf, String)> = Vec::new();
    for f in &result.files {
        let mut text = String::new();
        for c in &f.comments {
            let _ = writeln!(text, "# {c}");
        }
        text.push_str(
            &serde_saphyr::to_string(&f.document)
                .with_context(|| format!("cannot write {} as YAML", f.path))?,
        );
        if !text.ends_with('\n') {
            text.push('\n');
        }
        planned.push((dir.join(&f.path), text));
    }
    planned.push((dir.join("IMPORT.md"), markdown(result)));
    if !force && let Some((p, _)) = planned.iter().find(|(p, _)| p.exists()) {
        bail!(
            "{} exists: pass --force to replace the files of an earlier import, or choose \
             another --output",
            p.display()
        );
    }
    for (path, text) in planned {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn kind_word(k: NoteKind) -> &'static str {
    match k {
        NoteKind::Chosen => "chosen",
        NoteKind::Untranslated => "not translated",
        NoteKind::Refused => "refused",
    }
}

/// The terminal report.
fn report(result: &Import, dir: &Path) -> String {
    let mut out = String::new();
    for f in &result.files {
        let _ = writeln!(out, "wrote {}", dir.join(&f.path).display());
    }
    if !result.notes.is_empty() {
        out.push('\n');
    }
    for n in &result.notes {
        let _ = writeln!(
            out,
            "{} {} ({}): {}",
            n.source,
            n.field,
            kind_word(n.kind),
            n.message
        );
    }
    for (kind, n) in &result.ignored {
        let _ = writeln!(out, "ignored {n} {kind} (not Velero/OADP configuration)");
    }
    let _ = writeln!(
        out,
        "\nnext: review {}, `lifeboat lint {}`, then open a pull request",
        dir.join("IMPORT.md").display(),
        dir.display()
    );
    out
}

/// IMPORT.md: what to check before merging.
fn markdown(result: &Import) -> String {
    let mut out = String::from(
        "# Imported from Velero/OADP\n\n\
         Written by `lifeboat import velero`. Review every line below before merging: each is a\n\
         field that had no exact equivalent, and what was chosen instead.\n\n",
    );
    out.push_str("## Files\n\n");
    for f in &result.files {
        let _ = writeln!(
            out,
            "- `{}` ({} `{}`)",
            f.path,
            f.document["kind"].as_str().unwrap_or_default(),
            f.document["metadata"]["name"].as_str().unwrap_or_default()
        );
    }
    for (title, kind) in [
        ("Refused (not imported)", NoteKind::Refused),
        ("Not translated (check by hand)", NoteKind::Untranslated),
        ("Choices to review", NoteKind::Chosen),
    ] {
        let notes: Vec<_> = result.notes.iter().filter(|n| n.kind == kind).collect();
        if notes.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n## {title}\n");
        for n in notes {
            let _ = writeln!(out, "- **{}** `{}`: {}", n.source, n.field, n.message);
        }
    }
    out.push_str(
        "\n## Before the first backup\n\n\
         1. Create the Secrets the StorageLocations name (see above), in lifeboat's namespace.\n\
         2. `lifeboat lint` this directory, and `lifeboat plan --kubeconfig …` to see which\n\
            claims each policy protects and how.\n\
         3. Pause the Velero Schedules these policies replace, or both tools back up everything.\n",
    );
    out
}
