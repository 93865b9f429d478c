//! `lifeboat plan`: what the controller of a cluster would do now, and, with
//! `--base`, what a change to the policy repository does: the documents it
//! changes field by field and its consequences (backups pruned at once,
//! restores started, RPOs made unmeetable). Pull-request checks run it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args as ClapArgs, ValueEnum};
use lifeboat_controller::catalog::{self, Locations};
use lifeboat_controller::locations::Secrets;
use lifeboat_controller::{files, policies};
use lifeboat_core::load::PolicySet;
use lifeboat_core::plan::{self, Observed, Plan, PlanOptions, Running};
use lifeboat_core::volumes::Inventory;
use lifeboat_git::Mirror;

use crate::cmd::reconcile::GitArgs;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    /// Ready to post as a pull-request comment.
    Markdown,
    Json,
}

/// Print the plan of a cluster, or what a change to the policies does.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The revision to plan (default: the working tree of a local `--repo`
    /// directory, else `--branch`).
    #[arg(long = "ref", value_name = "REV")]
    pub rev: Option<String>,
    /// Compare with this revision (the pull request's base, e.g.
    /// `origin/main`) and print what the change does.
    #[arg(long, value_name = "REV")]
    pub base: Option<String>,
    /// The cluster to plan for (default: the repository's only Cluster).
    #[arg(long, value_name = "NAME", env = "LIFEBOAT_CLUSTER")]
    pub cluster: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Exit 0 when nothing would change, 2 when something would, 1 on error.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Plan as if it were this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub now: Option<jiff::Timestamp>,
    /// Do not read the backup catalog from object storage; the plan then
    /// says what it could not know.
    #[arg(long)]
    pub offline: bool,
    /// Read the cluster's claims, storage and snapshot classes and pods
    /// through this kubeconfig, and list per policy which claims are
    /// protected and how, and which are not and why (without it: "volumes:
    /// not evaluated").
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, value_name = "NAME", requires = "kubeconfig")]
    pub context: Option<String>,
    #[command(flatten)]
    pub git: GitArgs,
}

/// What a plan found, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    NoChanges,
    Changes,
    /// The planned revision does not validate: a finding (exit 1), in every
    /// mode, after the report was printed.
    Invalid,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let detailed = args.detailed_exitcode;
    match crate::runtime()?.block_on(run_async(args)) {
        Ok(Outcome::Invalid) => Ok(ExitCode::from(1)),
        Ok(Outcome::Changes) if detailed => Ok(ExitCode::from(2)),
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(e) if detailed => {
            crate::output::print_error(&e);
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e),
    }
}

/// How many first-parent ancestors are searched for the last valid
/// revision when the planned one does not validate.
const HISTORY_DEPTH: usize = 50;

/// Where revisions come from.
enum Revisions<'a> {
    /// A local directory: its working tree, or commits of the Git
    /// repository it is in (resolved there: `HEAD~1`, `origin/main`).
    Local(&'a Path),
    /// A remote, mirrored into the cache.
    Remote(Mirror),
}

/// One loaded revision.
struct Revision {
    /// `main (0123456789ab)`, or the directory of a working tree.
    label: String,
    /// The commit's abbreviated SHA (none for a working tree).
    short: Option<String>,
    checked: policies::Checked,
}

impl Revision {
    /// The short SHA, else the label.
    fn name(&self) -> &str {
        self.short.as_deref().unwrap_or(&self.label)
    }
}

/// Loads one revision (`None`: the working tree of a local directory).
fn load_revision(
    source: &Revisions<'_>,
    rev: Option<&str>,
    scratch: &Path,
) -> anyhow::Result<Revision> {
    let short = |sha: &str| sha[..sha.len().min(12)].to_string();
    let (label, sha, root) = match (source, rev) {
        (Revisions::Local(dir), None) => (dir.display().to_string(), None, dir.to_path_buf()),
        (Revisions::Local(dir), Some(rev)) => {
            let out = scratch.join(format!("rev-{}", scratch_name(rev)));
            let sha = lifeboat_git::checkout_local(dir, rev, &out)?;
            (format!("{rev} ({})", short(&sha)), Some(short(&sha)), out)
        }
        (Revisions::Remote(m), rev) => {
            let rev = rev.unwrap_or("HEAD");
            let sha = m.resolve_remote(rev)?;
            let out = scratch.join(&sha);
            m.checkout(&sha, &out)?;
            (format!("{rev} ({})", short(&sha)), Some(short(&sha)), out)
        }
    };
    let read = files::read_tree(&root)?;
    Ok(Revision {
        label,
        short: sha,
        checked: policies::check_files(&read),
    })
}

/// The newest revision at or before `from` (first parents only, as a
/// controller following the branch saw them) that validates: what a
/// controller keeps acting on. `None` when none of the last
/// [`HISTORY_DEPTH`] does, or there is no history (a plain directory).
fn last_valid(
    source: &Revisions<'_>,
    from: &str,
    skip_first: bool,
    scratch: &Path,
) -> Option<Revision> {
    for depth in usize::from(skip_first)..HISTORY_DEPTH {
        let rev = if depth == 0 {
            from.to_string()
        } else {
            format!("{from}~{depth}")
        };
        // The end of the history, or no Git repository: stop looking.
        let revision = load_revision(source, Some(&rev), scratch).ok()?;
        if revision.checked.is_valid() {
            return Some(revision);
        }
    }
    None
}

fn scratch_name(rev: &str) -> String {
    rev.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The cluster inventory through `--kubeconfig`, when given, and the
/// client that read it.
async fn inventory(args: &Args) -> anyhow::Result<Option<(Inventory, kube::Client)>> {
    let Some(path) = &args.kubeconfig else {
        return Ok(None);
    };
    let kube = crate::kubeclient::KubeArgs {
        kubeconfig: Some(path.clone()),
        context: args.context.clone(),
    };
    let client = kube.client().await?;
    let inventory = lifeboat_kube::inventory::inventory(&client)
        .await
        .with_context(|| {
            format!(
                "cannot read the cluster's volumes through {} (drop --kubeconfig to plan without them)",
                path.display()
            )
        })?;
    Ok(Some((inventory, client)))
}

/// What the cluster provides of the prerequisites of the backups the
/// restores into it would use.
async fn provides(
    client: &kube::Client,
    set: &PolicySet,
    observed: &Observed,
    cluster: &str,
) -> anyhow::Result<lifeboat_core::prerequisites::Provided> {
    let asked = lifeboat_core::prerequisites::asked(set, observed, cluster);
    lifeboat_kube::inventory::provides(client, &asked)
        .await
        .context(
            "cannot read the cluster's CRDs and operators for the restores' prerequisites (drop \
             --kubeconfig to plan without them)",
        )
}

async fn observe(
    set: &PolicySet,
    cluster: &str,
    now: jiff::Timestamp,
    offline: bool,
    inventory: Option<(Inventory, kube::Client)>,
) -> anyhow::Result<(Observed, Vec<String>)> {
    let (mut observed, notes) = observe_catalog(set, cluster, now, offline).await;
    if let Some((mut inventory, client)) = inventory {
        inventory.provides = Some(provides(&client, set, &observed, cluster).await?);
        observed.inventory = Some(inventory);
    }
    Ok((observed, notes))
}

async fn observe_catalog(
    set: &PolicySet,
    cluster: &str,
    now: jiff::Timestamp,
    offline: bool,
) -> (Observed, Vec<String>) {
    if offline {
        return (
            Observed::default(),
            vec![
                "offline: the backup catalog was not read, so every policy looks as if it had no backup \
                 (backups show as due) and no prune can be known; run without --offline where the \
                 storage is reachable"
                    .into(),
            ],
        );
    }
    let secrets = Secrets::Local {
        identities: Vec::new(),
        signing_key: None,
    };
    let locations = Locations::open(set, &secrets, cluster).await;
    let observed = catalog::observe(set, &locations, cluster, now, Running::default())
        .await
        .observed;
    (observed, Vec::new())
}

async fn run_async(args: Args) -> anyhow::Result<Outcome> {
    let repo = args.git.repo.clone().unwrap_or_else(|| ".".into());
    let local_dir = PathBuf::from(&repo);
    let scratch = tempfile::tempdir().context("cannot create a temporary directory")?;
    let source = if local_dir.is_dir() {
        Revisions::Local(&local_dir)
    } else {
        let mut git = args.git.clone();
        git.repo = Some(repo.clone());
        Revisions::Remote(git.mirror()?.0)
    };
    // A remote is planned at its branch; a directory as it is, unless a
    // revision is named (with --base alone, the head is HEAD).
    let head_rev = match (&source, &args.rev) {
        (_, Some(rev)) => Some(rev.clone()),
        (Revisions::Remote(_), None) => Some(args.git.branch.clone()),
        (Revisions::Local(_), None) => None,
    };
    let head = load_revision(&source, head_rev.as_deref(), scratch.path())?;
    let now = args.now.unwrap_or_else(jiff::Timestamp::now);
    if !head.checked.is_valid() {
        return invalid(
            &args,
            &source,
            head_rev.as_deref(),
            head,
            now,
            scratch.path(),
        )
        .await;
    }
    let head_label = head.label.clone();
    let diagnostics = json_diagnostics(&head.checked);
    let head = head.checked;
    let cluster = crate::context::cluster_name(&head.set, args.cluster.as_deref())?;
    let inventory = inventory(&args).await?;
    let (observed, offline_notes) =
        observe(&head.set, &cluster, now, args.offline, inventory).await?;
    let options = PlanOptions::default();
    let mut head_plan = plan::plan(&head.set, &observed, &cluster, now, &options);
    head_plan.notes.extend(offline_notes.iter().cloned());

    let Some(base_rev) = &args.base else {
        let text = match args.format {
            Format::Text => crate::render::plan::text(&head_plan),
            Format::Markdown => crate::render::plan::markdown(&head_plan),
            Format::Json => format!(
                "{:#}\n",
                serde_json::json!({
                    "revision": head_label,
                    "valid": true,
                    "diagnostics": diagnostics,
                    "plan": head_plan,
                })
            ),
        };
        crate::output::print(&text)?;
        return Ok(changes(!head_plan.is_empty()));
    };

    let base = load_revision(&source, Some(base_rev), scratch.path())?;
    let base_label = base.label;
    let base = base.checked;
    if !base.is_valid() {
        eprintln!(
            "warning: the base {base_label} has {} error(s); comparing with its valid documents only",
            base.count(lifeboat_core::Severity::Error)
        );
    }
    let base_plan: Plan = plan::plan(&base.set, &observed, &cluster, now, &options);
    let change = plan::compare(&base.set, &head.set, &base_plan, &head_plan);
    let text = match args.format {
        Format::Text => crate::render::plan::change_text(&change, &head_plan),
        Format::Markdown => crate::render::plan::change_markdown(&change, &head_plan),
        Format::Json => format!(
            "{:#}\n",
            serde_json::json!({
                "base": base_label,
                "revision": head_label,
                "valid": true,
                "diagnostics": diagnostics,
                "change": change,
                "plan": head_plan,
            })
        ),
    };
    crate::output::print(&text)?;
    Ok(changes(!change.is_empty()))
}

fn changes(any: bool) -> Outcome {
    if any {
        Outcome::Changes
    } else {
        Outcome::NoChanges
    }
}

/// The diagnostics of a revision as `lifeboat lint --format json` writes them.
fn json_diagnostics(checked: &policies::Checked) -> serde_json::Value {
    crate::render::json(&crate::cmd::lint::report(checked))["diagnostics"].take()
}

/// Reports a revision that does not validate: its diagnostics, then the
/// plan of the revision a controller keeps acting on (the base when it
/// validates, else the newest valid ancestor), in the chosen format.
async fn invalid(
    args: &Args,
    source: &Revisions<'_>,
    head_rev: Option<&str>,
    head: Revision,
    now: jiff::Timestamp,
    scratch: &Path,
) -> anyhow::Result<Outcome> {
    let mut base_label = None;
    let acting = match (&args.base, head_rev) {
        (Some(base), _) => {
            let revision = load_revision(source, Some(base), scratch)?;
            base_label = Some(revision.label.clone());
            if revision.checked.is_valid() {
                Some(revision)
            } else {
                last_valid(source, base, true, scratch)
            }
        }
        // A working tree: its last commit may well validate.
        (None, None) => last_valid(source, "HEAD", false, scratch),
        (None, Some(rev)) => last_valid(source, rev, true, scratch),
    };
    let cluster = match (&args.cluster, &acting) {
        (Some(name), _) => Some(name.clone()),
        (None, Some(valid)) => Some(crate::context::cluster_name(&valid.checked.set, None)?),
        (None, None) => crate::context::cluster_name(&head.checked.set, None).ok(),
    };
    let plan = match (&acting, &cluster) {
        (Some(valid), Some(cluster)) => {
            let (observed, notes) = observe(
                &valid.checked.set,
                cluster,
                now,
                args.offline,
                inventory(args).await?,
            )
            .await?;
            let mut plan = plan::plan(
                &valid.checked.set,
                &observed,
                cluster,
                now,
                &PlanOptions::default(),
            );
            plan.notes.extend(notes);
            Some(plan)
        }
        _ => None,
    };
    let report = crate::cmd::lint::report(&head.checked);
    let view = crate::render::plan::Invalid {
        revision: &head.label,
        change: args.base.is_some(),
        report: &report,
        cluster: cluster.as_deref(),
        acting_on: acting.as_ref().map(|r| (r.name(), r.label.as_str())),
        plan: plan.as_ref(),
    };
    let text = match args.format {
        Format::Text => crate::render::plan::invalid_text(&view),
        Format::Markdown => crate::render::plan::invalid_markdown(&view),
        Format::Json => format!(
            "{:#}\n",
            serde_json::json!({
                "base": base_label,
                "revision": head.label,
                "valid": false,
                "diagnostics": json_diagnostics(&head.checked),
                "summary": crate::render::plan::invalid_summary(&view),
                "lastValidRevision": acting.as_ref().map(|r| r.label.clone()),
                "plan": plan,
            })
        ),
    };
    crate::output::print(&text)?;
    Ok(Outcome::Invalid)
}
