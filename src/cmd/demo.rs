//! `lifeboat demo`: the whole job on a simulated cluster, in one directory,
//! with no cluster, cloud account or network.
//!
//! It starts the in-process sandbox API server seeded with the sample
//! applications, makes a Git "remote" and a clone from `demo/policies`,
//! runs the real reconcile path (the same code `lifeboat controller` runs)
//! against `file://` storage, deletes a namespace, commits a RestoreRequest
//! as a user would, reconciles again, and checks every restored object
//! against the backup.
//!
//! Volume data too: the WordPress and MySQL claims start with files
//! ([`data`]), the backup moves them (`snapshotMove`: a CSI snapshot read by
//! a mover pod, which the sandbox's kubelet runs as a process of this very
//! executable) into a restic-format repository sealed to an age key the
//! demo generates, and after the restore every file is compared byte for
//! byte with what was written; any difference fails the demo.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args as ClapArgs;
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim};
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind};
use kube::{Api, Client};
use lifeboat_controller::executor::{Done, ExecOptions, Executed};
use lifeboat_controller::locations::Secrets;
use lifeboat_controller::reconcile::{CycleReport, Reconciler, Settings, Source};
use lifeboat_core::plan::PlanOptions;
use lifeboat_git::{Auth, Mirror, Published, StatusTarget};
use lifeboat_kube::volumes::MoverOptions;
use lifeboat_sandbox::Sandbox;
use lifeboat_store::{RestoreAction, RestoreRecord, VolumePhase};
use serde_json::Value;

mod data;

const APPS: [(&str, &str); 3] = [
    (
        "wordpress.yaml",
        include_str!("../../tests/fixtures/apps/wordpress.yaml"),
    ),
    (
        "widgets.yaml",
        include_str!("../../tests/fixtures/apps/widgets.yaml"),
    ),
    (
        "ledger.yaml",
        include_str!("../../tests/fixtures/apps/ledger.yaml"),
    ),
];
const POLICIES: [(&str, &str); 3] = [
    (
        "policies/cluster.yaml",
        include_str!("../../demo/policies/cluster.yaml"),
    ),
    (
        "policies/storage.yaml",
        include_str!("../../demo/policies/storage.yaml"),
    ),
    (
        "policies/apps.yaml",
        include_str!("../../demo/policies/apps.yaml"),
    ),
];
const RESTORE: &str = include_str!("../../demo/restore.yaml");
const CLUSTER: &str = "demo";
const LOST: &str = "wordpress";

/// Show lifeboat's whole job on a simulated cluster: back up objects and
/// volume data, lose a namespace, restore it through Git, verify every
/// object and every file (exit 1 when one differs).
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Where to keep everything (default: a new directory under the system
    /// temporary directory).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Leave the sandbox and the controller running and print a kubeconfig
    /// to explore with kubectl (Ctrl-C stops them).
    #[arg(long)]
    pub keep_running: bool,
    /// Port of the controller's HTTP server with --keep-running.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    crate::runtime()?.block_on(run_async(args))
}

/// Narration: a numbered step, then indented lines.
struct Story {
    started: Instant,
    step: usize,
}

impl Story {
    fn step(&mut self, title: &str) {
        self.step += 1;
        println!(
            "\n[{:>5.1}s] {}. {title}",
            self.started.elapsed().as_secs_f64(),
            self.step
        );
    }

    fn say(&self, line: impl AsRef<str>) {
        println!("         {}", line.as_ref());
    }

    fn failed_volume(&self, namespace: &str, pvc: &str, error: &Option<String>) {
        self.say(format!(
            "  ✘ volume {namespace}/{pvc}: {}",
            error.as_deref().unwrap_or("failed")
        ));
    }
}

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Demo User")
        .env("GIT_AUTHOR_EMAIL", "demo@example.com")
        .env("GIT_COMMITTER_NAME", "Demo User")
        .env("GIT_COMMITTER_EMAIL", "demo@example.com")
        .output()
        .context("cannot run `git`: the demo plays the user with the git command; install git")?;
    if !out.status.success() {
        bail!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn demo_dir(chosen: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let dir = chosen.unwrap_or_else(|| {
        std::env::temp_dir().join(format!(
            "lifeboat-demo-{}",
            Timestamp::now().strftime("%Y%m%d-%H%M%S")
        ))
    });
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        bail!(
            "{} is not empty: pass --dir with a new or empty directory",
            dir.display()
        );
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir.canonicalize()?)
}

/// The sample applications plus the demo's own namespace and age identity.
fn seed_objects(identity: &str) -> anyhow::Result<Vec<Value>> {
    let mut objects = Vec::new();
    for (name, text) in APPS {
        for doc in serde_yaml_ng::Deserializer::from_str(text) {
            let value: Value = serde::Deserialize::deserialize(doc)
                .with_context(|| format!("the embedded sample {name} is not valid YAML"))?;
            if !value.is_null() {
                objects.push(value);
            }
        }
    }
    objects.push(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "lifeboat"}
    }));
    objects.push(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "lifeboat-age-identity", "namespace": "lifeboat"},
        "type": "Opaque",
        "stringData": {"identity.txt": format!("{identity}\n")}
    }));
    Ok(objects)
}

fn print_cycle(story: &Story, report: &CycleReport) {
    if let Some(plan) = &report.plan {
        story.say(format!(
            "plan: {}",
            crate::render::plan::counts(&plan.actions)
        ));
        for a in &plan.actions {
            story.say(format!("  · {}", a.summary()));
        }
    }
    for e in &report.executed {
        story.say(format!(
            "{} {}",
            if e.ok() { "✔" } else { "✘" },
            e.describe()
        ));
        match &e.result {
            Ok(Done::Backup(m)) => m.volumes.iter().for_each(|v| match v.phase {
                VolumePhase::Completed => story.say(format!(
                    "    volume {}/{}: {} → snapshot {}, {} files, {} (mover pod on {}, {:.1}s)",
                    v.namespace,
                    v.pvc,
                    v.method,
                    short(v.snapshot.as_deref().unwrap_or("-")),
                    v.files,
                    crate::cmd::backups::size(v.bytes),
                    v.node.as_deref().unwrap_or("?"),
                    v.duration_ms as f64 / 1000.0
                )),
                VolumePhase::Failed => story.failed_volume(&v.namespace, &v.pvc, &v.error),
            }),
            Ok(Done::Restored(r)) => r.volumes.iter().for_each(|v| match v.phase {
                VolumePhase::Completed => story.say(format!(
                    "    filled volume {}/{} from snapshot {}: {} files, {} in {:.1}s",
                    v.namespace,
                    v.pvc,
                    short(&v.snapshot),
                    v.files,
                    crate::cmd::backups::size(v.bytes),
                    v.duration_ms as f64 / 1000.0
                )),
                VolumePhase::Failed => story.failed_volume(&v.namespace, &v.pvc, &v.error),
            }),
            _ => {}
        }
    }
    match &report.published {
        Some(Ok(Published::Committed { sha, .. })) => story.say(format!(
            "status committed to branch lifeboat-status: {}",
            &sha[..12]
        )),
        Some(Ok(Published::Unchanged)) => story.say("status unchanged"),
        Some(Err(e)) => story.say(format!("status not written: {e}")),
        None => {}
    }
    for (kind, e) in &report.errors {
        story.say(format!("error ({kind}): {e}"));
    }
}

fn api_for(entry_json: &Value, plural: &str, group: &str) -> Option<ApiResource> {
    let api_version = entry_json.get("apiVersion")?.as_str()?;
    let kind = entry_json.get("kind")?.as_str()?;
    let version = api_version.rsplit('/').next()?;
    Some(ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, kind),
        plural,
    ))
}

/// Compares every object the restore created with its backed-up original.
/// Returns (identical, differences).
async fn verify(
    client: &Client,
    storage: &Path,
    record: &RestoreRecord,
    identity: &str,
) -> anyhow::Result<(usize, Vec<String>)> {
    let repository = lifeboat_store::Repository::open(&lifeboat_store::LocationConfig {
        url: format!("file://{}", storage.display()),
        identities: vec![identity.to_string()],
        ..Default::default()
    })
    .await?;
    let reader = repository
        .open_backup(&record.source_cluster, &record.source_backup)
        .await?;
    let created: BTreeMap<(String, Option<String>, String), ()> = record
        .items
        .iter()
        .filter(|i| i.action == RestoreAction::Created)
        .map(|i| {
            (
                (i.resource.clone(), i.namespace.clone(), i.name.clone()),
                (),
            )
        })
        .collect();
    let mut entries = std::pin::pin!(reader.entries());
    let mut same = 0;
    let mut differences = Vec::new();
    while let Some(entry) = entries.next().await {
        let entry = entry?;
        let resource = if entry.group.is_empty() {
            entry.resource.clone()
        } else {
            format!("{}.{}", entry.resource, entry.group)
        };
        if !created.contains_key(&(
            resource.clone(),
            entry.namespace.clone(),
            entry.name.clone(),
        )) {
            continue;
        }
        let original: Value = serde_json::from_slice(&entry.json)?;
        let Some(ar) = api_for(&original, &entry.resource, &entry.group) else {
            differences.push(format!("{resource} {}: no apiVersion/kind", entry.name));
            continue;
        };
        let api: Api<DynamicObject> = match &entry.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
            None => Api::all_with(client.clone(), &ar),
        };
        let live = match api.get_opt(&entry.name).await? {
            Some(o) => serde_json::to_value(o)?,
            None => {
                differences.push(format!("{resource} {}: missing", entry.name));
                continue;
            }
        };
        let (a, b) = (
            lifeboat_kube::transform::comparable(original),
            lifeboat_kube::transform::comparable(live),
        );
        if a == b {
            same += 1;
        } else {
            differences.push(format!(
                "{resource} {}/{}: differs",
                entry.namespace.as_deref().unwrap_or("-"),
                entry.name
            ));
        }
    }
    Ok((same, differences))
}

/// What the first action of the cycle that `pick` takes did.
fn first_done<'a, T>(
    report: &'a CycleReport,
    pick: impl Fn(&'a Done) -> Option<&'a T>,
) -> Option<&'a T> {
    report
        .executed
        .iter()
        .find_map(|e: &Executed| e.result.as_ref().ok().and_then(&pick))
}

/// A new age key pair for the demo's StorageLocation: the recipient goes
/// into Git, the identity into a file of the demo directory and into the
/// Secret the StorageLocation's `identitySecretRef` names.
struct AgeKey {
    identity: String,
    recipient: String,
}

impl AgeKey {
    fn generate() -> AgeKey {
        let id = age::x25519::Identity::generate();
        AgeKey {
            identity: age::secrecy::ExposeSecret::expose_secret(&id.to_string()).to_string(),
            recipient: id.to_public().to_string(),
        }
    }

    /// Writes the identity as `age-keygen` does (readable by its owner only).
    fn write(&self, path: &Path) -> anyhow::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        writeln!(
            file,
            "# created: {}\n# public key: {}\n{}",
            Timestamp::now(),
            self.recipient,
            self.identity
        )
        .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }
}

/// Waits until the claim is Bound; returns the directory of its volume's
/// bytes in the sandbox's CSI driver.
async fn claim_disk(client: &Client, data: &Path, ns: &str, pvc: &str) -> anyhow::Result<PathBuf> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(claim) = api.get_opt(pvc).await?
            && claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
            && let Some(pv) = claim.spec.and_then(|s| s.volume_name)
        {
            return Ok(data.join("volumes").join(pv));
        }
        if Instant::now() > deadline {
            bail!("the claim {ns}/{pvc} was not bound within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn short(snapshot: &str) -> &str {
    snapshot.get(..8).unwrap_or(snapshot)
}

async fn run_async(args: Args) -> anyhow::Result<ExitCode> {
    let mut story = Story {
        started: Instant::now(),
        step: 0,
    };
    let dir = demo_dir(args.dir.clone())?;
    let (remote, work, storage, cache, seed, disks) = (
        dir.join("remote.git"),
        dir.join("policies"),
        dir.join("storage"),
        dir.join("cache"),
        dir.join("seed"),
        dir.join("cluster"),
    );
    std::fs::create_dir_all(&storage)?;
    println!("lifeboat demo: everything lives in {}", dir.display());
    println!(
        "The cluster is SIMULATED: an in-memory Kubernetes API server inside this process, \
         with a node whose kubelet runs lifeboat's mover pods as processes of this binary. \
         Git, the backups, the volume data and the restore are real."
    );

    story.step("Start a simulated cluster with sample applications");
    let key = AgeKey::generate();
    let identity_file = dir.join("identity.txt");
    key.write(&identity_file)?;
    let volumes = data::volumes();
    for v in &volumes {
        v.write(&seed).with_context(|| {
            format!(
                "cannot write the files of {} under {}",
                v.name(),
                seed.display()
            )
        })?;
    }
    let exe = std::env::current_exe()
        .context("cannot find lifeboat's own executable, which the demo's mover pods run")?;
    let sandbox = crate::cmd::sandbox::run_own_image(Sandbox::builder(), &exe)
        .seed_objects(seed_objects(&key.identity)?)
        .seed_dir(&seed)
        .data_dir(&disks)
        .snapshot_delay(Duration::from_millis(20))
        .start()
        .await
        .context("cannot start the sandbox API server")?;
    let kubeconfig = dir.join("kubeconfig");
    sandbox.write_kubeconfig(&kubeconfig)?;
    let client = sandbox.client();
    for v in &volumes {
        claim_disk(&client, sandbox.data_dir(), v.namespace, v.pvc).await?;
    }
    // The disks hold the files now. Without the seed, nothing but the
    // backup can put them back.
    std::fs::remove_dir_all(&seed).with_context(|| format!("cannot remove {}", seed.display()))?;
    story.say(format!(
        "{} objects: a WordPress site with MySQL (Secrets, ConfigMap, PVCs, Services), \
         an app with a CustomResourceDefinition and custom resources, a ledger StatefulSet",
        sandbox.object_count()
    ));
    for v in &volumes {
        story.say(format!(
            "volume {}: {} ({})",
            v.name(),
            data::totals(std::slice::from_ref(v)),
            v.about
        ));
    }
    story.say(format!("kubeconfig: {}", kubeconfig.display()));

    story.step("Commit DR policies to a Git repository, as a platform team would");
    std::fs::create_dir_all(&dir)?;
    git(&dir, &["init", "-q", "--bare", "-b", "main", "remote.git"])?;
    git(&dir, &["clone", "-q", "remote.git", "policies"])?;
    for (path, text) in POLICIES {
        let file = work.join(path);
        std::fs::create_dir_all(file.parent().unwrap_or(&work))?;
        std::fs::write(
            &file,
            text.replace("@STORAGE@", &storage.display().to_string())
                .replace("@RECIPIENT@", &key.recipient),
        )?;
    }
    git(&work, &["add", "-A"])?;
    git(
        &work,
        &["commit", "-q", "-m", "Back up the apps every hour"],
    )?;
    git(&work, &["push", "-q", "origin", "main"])?;
    story.say(format!(
        "policies/: a Cluster, an encrypted StorageLocation (file://{}), a BackupPolicy",
        storage.display()
    ));
    story.say(format!(
        "age recipient {} (its identity: {}, and the Secret lifeboat/lifeboat-age-identity)",
        key.recipient,
        identity_file.display()
    ));
    story.say(format!("remote: {}", remote.display()));

    let mirror = Mirror::open(
        &format!("file://{}", remote.display()),
        &cache.join("git"),
        Auth::none(),
    )?;
    let mut reconciler = Reconciler::new(
        Settings {
            cluster: CLUSTER.into(),
            status: Some(StatusTarget::for_cluster(CLUSTER)),
            plan: PlanOptions::default(),
            // Volume data as the controller carries it, with waits sized
            // for a local simulated cluster: a mover that cannot start or
            // finish fails the demo in seconds, not hours.
            exec: ExecOptions {
                movers: MoverOptions {
                    start_timeout: Duration::from_secs(30),
                    move_timeout: Duration::from_secs(120),
                    snapshot_timeout: Duration::from_secs(30),
                    poll: Duration::from_millis(50),
                    ..MoverOptions::default()
                },
                ..ExecOptions::default()
            },
        },
        Source::Git {
            mirror,
            branch: "main".into(),
            checkout: cache.join("checkout"),
        },
        client.clone(),
        Secrets::Cluster {
            client: client.clone(),
            namespace: "lifeboat".into(),
        },
    );

    story.step("Reconcile: the controller fetches, plans and backs up");
    let t = Instant::now();
    let first = reconciler.cycle(Timestamp::now(), true).await;
    print_cycle(&story, &first);
    let manifest = first_done(&first, |d| match d {
        Done::Backup(m) => Some(m.as_ref()),
        _ => None,
    });
    let Some(manifest) = manifest.filter(|_| first.ok()) else {
        bail!("the first reconcile did not back up; see the errors above");
    };
    story.say(format!("took {:.1}s", t.elapsed().as_secs_f64()));
    let moved: Vec<String> = manifest
        .volumes
        .iter()
        .filter(|v| v.phase == VolumePhase::Completed)
        .map(|v| format!("{}/{}", v.namespace, v.pvc))
        .collect();
    if let Some(v) = volumes.iter().find(|v| !moved.contains(&v.name())) {
        bail!(
            "the backup {} does not hold the data of {}; see the lines above",
            manifest.backup_name,
            v.name()
        );
    }
    story.say(format!(
        "backups: {}",
        storage.join("clusters/demo/backups").display()
    ));
    story.say(format!(
        "volume data: {} (restic format, its key sealed to the age recipient)",
        storage.join("volumes/demo/wordpress").display()
    ));
    story.say(
        "the archive is encrypted with age; the controller read its identity from the Secret \
         lifeboat/lifeboat-age-identity in the cluster",
    );

    story.step(&format!("Disaster: delete the `{LOST}` namespace"));
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces.delete(LOST, &DeleteParams::default()).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while namespaces.get_opt(LOST).await?.is_some() {
        if Instant::now() > deadline {
            bail!("the sandbox did not finish deleting `{LOST}` within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    story.say(format!(
        "`{LOST}` and everything in it is gone, its volumes' data with it"
    ));

    story.step("Commit a RestoreRequest, as a user would");
    std::fs::create_dir_all(work.join("restores"))?;
    std::fs::write(work.join("restores/restore-wordpress.yaml"), RESTORE)?;
    git(&work, &["add", "-A"])?;
    git(
        &work,
        &[
            "commit",
            "-q",
            "-m",
            "Restore wordpress from the latest backup",
        ],
    )?;
    git(&work, &["push", "-q", "origin", "main"])?;
    story.say("restores/restore-wordpress.yaml: source demo/apps latest, target demo");

    story.step("Reconcile: the controller sees the request and restores");
    let t = Instant::now();
    let second = reconciler.cycle(Timestamp::now(), true).await;
    print_cycle(&story, &second);
    let record = first_done(&second, |d| match d {
        Done::Restored(r) => Some(r.as_ref()),
        _ => None,
    });
    let Some(record) = record else {
        bail!("the second reconcile did not restore; see the plan above");
    };
    story.say(format!("took {:.1}s", t.elapsed().as_secs_f64()));

    story.step("Verify every restored object and file against the backup");
    let (same, differences) = verify(&client, &storage, record, &key.identity).await?;
    story.say(format!(
        "{same} objects identical to the backup (after removing what the API server sets: \
         uid, resourceVersion, timestamps, cluster IPs, node ports, a claim's bound volume)"
    ));
    for item in record
        .items
        .iter()
        .filter(|i| i.action == RestoreAction::Skipped)
    {
        story.say(format!(
            "skipped {} {}/{}: {}",
            item.resource,
            item.namespace.as_deref().unwrap_or("-"),
            item.name,
            item.reason.as_deref().unwrap_or("no reason given")
        ));
    }
    for d in &differences {
        story.say(format!("✘ {d}"));
    }
    let mut file_differences = Vec::new();
    for v in &volumes {
        let disk = claim_disk(&client, sandbox.data_dir(), v.namespace, v.pvc).await?;
        let found = v
            .compare(&disk)
            .with_context(|| format!("cannot read the restored volume of {}", v.name()))?;
        file_differences.extend(found.into_iter().map(|d| format!("{}: {d}", v.name())));
    }
    if file_differences.is_empty() {
        story.say(format!(
            "{} volumes, {}, identical to what was written before the backup \
             (every byte, directory and symlink compared)",
            volumes.len(),
            data::totals(&volumes)
        ));
    }
    for d in &file_differences {
        story.say(format!("✘ {d}"));
    }

    story.step("Reconcile once more: nothing to do, the restore does not run twice");
    let third = reconciler.cycle(Timestamp::now(), true).await;
    print_cycle(&story, &third);

    println!(
        "\nDone in {:.1}s. Look around:",
        story.started.elapsed().as_secs_f64()
    );
    println!(
        "  git -C {} log --stat lifeboat-status     # status commits",
        remote.display()
    );
    println!(
        "  git -C {} show lifeboat-status:clusters/demo/README.md",
        remote.display()
    );
    println!(
        "  lifeboat backups list --storage file://{} --cluster demo",
        storage.display()
    );
    println!(
        "  {}/clusters/demo/restores/restore-wordpress/record.json   # what the restore did, per object",
        storage.display()
    );
    println!(
        "  lifeboat volumes snapshots --repo {} --cluster demo --namespace wordpress --identity {}",
        work.display(),
        identity_file.display()
    );
    println!(
        "  {}/volumes/   # the simulated cluster's disks",
        sandbox.data_dir().display()
    );
    println!(
        "  lifeboat plan --repo {} --cluster demo --offline",
        work.display()
    );
    if !differences.is_empty() || !file_differences.is_empty() {
        let mut problems = Vec::new();
        if !differences.is_empty() {
            problems.push(format!(
                "{} restored object(s) differ from the backup",
                differences.len()
            ));
        }
        if let Some(first) = file_differences.first() {
            problems.push(format!(
                "{} restored file(s) differ from what was written before the backup, first {first}",
                file_differences.len()
            ));
        }
        // A restore that did not bring back what was backed up is a
        // finding (exit 1), as for `lifeboat restore`.
        crate::output::print_error(&anyhow::anyhow!(
            "the restore is not identical to the backup: {}",
            problems.join("; ")
        ));
        return Ok(ExitCode::from(1));
    }
    if args.keep_running {
        keep_running(args.port, &kubeconfig, reconciler).await?;
    }
    drop(sandbox);
    Ok(ExitCode::SUCCESS)
}

/// Serves the sandbox and runs the controller loop until Ctrl-C.
async fn keep_running(port: u16, kubeconfig: &Path, reconciler: Reconciler) -> anyhow::Result<()> {
    use lifeboat_controller::http::{Health, HttpState};
    use lifeboat_controller::metrics::Metrics;
    use lifeboat_controller::run::{Loop, LoopConfig};
    use lifeboat_controller::shutdown::{self, Shutdown};

    let stop = Shutdown::new();
    let metrics = Metrics::new();
    let health = Health::default();
    let webhook = Arc::new(tokio::sync::Notify::new());
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}: pass --port"))?;
    let server = tokio::spawn(lifeboat_controller::http::serve(
        listener,
        HttpState {
            metrics: metrics.clone(),
            health: health.clone(),
            webhook: webhook.clone(),
            webhook_secret: None,
        },
        stop.cancelled(),
    ));
    println!("\nStill running (Ctrl-C to stop):");
    println!("  kubectl --kubeconfig {} get all -A", kubeconfig.display());
    println!("  curl http://{addr}/metrics");
    println!("  curl -X POST http://{addr}/webhook   # reconcile now");
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown::signal().await;
            stop.trigger();
        });
    }
    Loop {
        reconciler,
        config: LoopConfig {
            interval: Duration::from_secs(30),
            grace: Duration::from_secs(10),
        },
        metrics,
        health,
        webhook,
        leader: None,
        shutdown: stop.clone(),
    }
    .run()
    .await;
    let _ = server.await;
    Ok(())
}
