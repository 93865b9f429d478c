//! `lifeboat plan`: what the controller of a cluster would do now, and, with
//! `--base`, what a change to the policy repository does: the documents it
//! changes field by field and its consequences (backups pruned at once,
//! restores started, RPOs made unmeetable). Pull-request checks run it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args as ClapArgs, ValueEnum};
use lifeboat_controller::catalog::{self, Locations};
use lifeboat_controller::locations::Secrets;
use lifeboat_controller::{files, policies};
use lifeboat_core::load::PolicySet;
use lifeboat_core::plan::{self, Observed, Plan, PlanOptions, Running};
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
    #[command(flatten)]
    pub git: GitArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let detailed = args.detailed_exitcode;
    match crate::runtime()?.block_on(run_async(args)) {
        Ok(changes) if detailed && changes => Ok(ExitCode::from(2)),
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(e) if detailed => {
            eprintln!("error: {e:#}");
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e),
    }
}

/// Where revisions come from.
enum Revisions<'a> {
    /// A local directory: its working tree, or commits of the Git
    /// repository it is in (resolved there: `HEAD~1`, `origin/main`).
    Local(&'a Path),
    /// A remote, mirrored into the cache.
    Remote(Mirror),
}

/// Loads one revision (`None`: the working tree of a local directory).
fn load_revision(
    source: &Revisions<'_>,
    rev: Option<&str>,
    scratch: &Path,
) -> anyhow::Result<(String, policies::Checked)> {
    let short = |sha: &str| sha[..sha.len().min(12)].to_string();
    let (label, root) = match (source, rev) {
        (Revisions::Local(dir), None) => (dir.display().to_string(), dir.to_path_buf()),
        (Revisions::Local(dir), Some(rev)) => {
            let out = scratch.join(format!("rev-{}", scratch_name(rev)));
            let sha = lifeboat_git::checkout_local(dir, rev, &out)?;
            (format!("{rev} ({})", short(&sha)), out)
        }
        (Revisions::Remote(m), rev) => {
            let rev = rev.unwrap_or("HEAD");
            let sha = m.resolve_remote(rev)?;
            let out = scratch.join(&sha);
            m.checkout(&sha, &out)?;
            (format!("{rev} ({})", short(&sha)), out)
        }
    };
    let read = files::read_tree(&root)?;
    Ok((label, policies::check_files(&read)))
}

fn scratch_name(rev: &str) -> String {
    rev.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn refuse_invalid(label: &str, checked: &policies::Checked) -> anyhow::Result<()> {
    if checked.is_valid() {
        return Ok(());
    }
    let report = crate::cmd::lint::report(checked);
    eprint!("{}", crate::render::human(&report, false));
    bail!(
        "the policies at {label} have {} error(s): a controller would keep acting on its last valid revision",
        checked.count(lifeboat_core::Severity::Error)
    )
}

async fn observe(
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
    let observation = catalog::observe(set, &locations, cluster, now, Running::default()).await;
    (observation.observed, Vec::new())
}

async fn run_async(args: Args) -> anyhow::Result<bool> {
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
    let (head_label, head) = load_revision(&source, head_rev.as_deref(), scratch.path())?;
    refuse_invalid(&head_label, &head)?;
    let cluster = crate::context::cluster_name(&head.set, args.cluster.as_deref())?;
    let now = args.now.unwrap_or_else(jiff::Timestamp::now);
    let (observed, offline_notes) = observe(&head.set, &cluster, now, args.offline).await;
    let options = PlanOptions::default();
    let mut head_plan = plan::plan(&head.set, &observed, &cluster, now, &options);
    head_plan.notes.extend(offline_notes.iter().cloned());

    let Some(base_rev) = &args.base else {
        let text = match args.format {
            Format::Text => crate::render::plan::text(&head_plan),
            Format::Markdown => crate::render::plan::markdown(&head_plan),
            Format::Json => format!(
                "{:#}\n",
                serde_json::json!({ "revision": head_label, "plan": head_plan })
            ),
        };
        crate::output::print(&text)?;
        return Ok(!head_plan.is_empty());
    };

    let (base_label, base) = load_revision(&source, Some(base_rev), scratch.path())?;
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
                "change": change,
                "plan": head_plan,
            })
        ),
    };
    crate::output::print(&text)?;
    Ok(!change.is_empty())
}
