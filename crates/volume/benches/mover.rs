//! lifeboat's volume backup and restore against `restic` and, as the limit,
//! `tar -c | zstd -T0 -1 > /dev/null`, on two generated datasets:
//!
//! (a) ~1 GiB in ~50,000 files of 1–64 KiB in nested directories,
//! (b) 4 GiB in 4 files, 30% of the content duplicated.
//!
//! For each: a full backup, an incremental one after changing 1% of the
//! files (dataset b: 1% of one file's bytes), and a full restore — each in
//! its own process under `/usr/bin/time` for wall time and peak RSS.
//! lifeboat runs as a child of this harness (`child …`), through the same
//! library calls `lifeboat mover` makes, on a file:// location.
//!
//! Run: `cargo bench -p lifeboat-volume --bench mover` (LIFEBOAT_BENCH_DIR
//! picks the scratch directory; it needs ~15 GiB; LIFEBOAT_BENCH_SCALE=0.1
//! shrinks the datasets for a quick look).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

type R<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

// The allocator the lifeboat binary (and so `lifeboat mover`) uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PASSWORD: &str = "bench-password-for-restic";

fn main() -> R {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        return child(&args[2..]);
    }
    if args.iter().any(|a| a == "--list") {
        return Ok(());
    }
    let scale: f64 = std::env::var("LIFEBOAT_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let root = std::env::var("LIFEBOAT_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("volume-bench"));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)?;
    let restic_version = output("restic", &["version"]).unwrap_or_else(|_| "absent".into());
    println!("restic: {}", restic_version.trim());
    println!(
        "machine: {} cores, shared with other builds",
        std::thread::available_parallelism()?.get()
    );
    println!("scale: {scale}\n");

    let a = root.join("a-small-files");
    let files_a = gen_small(&a, (50_000.0 * scale) as usize)?;
    let b = root.join("b-large-files");
    let files_b = gen_large(&b, (4.0 * 1024.0 * 1024.0 * 1024.0 * scale) as u64)?;

    println!("| dataset | tool | step | seconds | MB/s | files/s | peak RSS MB | repo MB |");
    println!("|---|---|---|---|---|---|---|---|");
    // (dataset, step, lifeboat seconds, restic seconds)
    let mut pairs: Vec<(&str, &str, f64, f64)> = Vec::new();
    for (name, src, files) in [("a", &a, files_a), ("b", &b, files_b)] {
        let bytes = du(src)?;
        let mb = bytes as f64 / 1e6;
        // tar | zstd, the limit.
        let (t, rss) = timed(
            "bash",
            &[
                "-c",
                &format!(
                    "tar -cf - -C {} . | zstd -q -T0 -1 > /dev/null",
                    src.display()
                ),
            ],
            &[],
        )?;
        row(name, "tar|zstd", "full", t, mb, files, rss, None);

        let lrepo = root.join(format!("lifeboat-{name}"));
        let rrepo = root.join(format!("restic-{name}"));
        let cache = root.join(format!("restic-cache-{name}"));
        let exe = std::env::current_exe()?;
        let exe = exe.to_str().ok_or("exe path")?;
        let (t, rss) = timed(exe, &["child", "backup", p(&lrepo), p(src)], &[])?;
        row(
            name,
            "lifeboat",
            "full",
            t,
            mb,
            files,
            rss,
            Some(du(&lrepo)?),
        );
        let lifeboat_full = t;
        let env = [
            ("RESTIC_PASSWORD", PASSWORD),
            ("RESTIC_CACHE_DIR", p(&cache)),
        ];
        timed("restic", &["-q", "-r", p(&rrepo), "init"], &env)?;
        let (t, rss) = timed("restic", &["-q", "-r", p(&rrepo), "backup", p(src)], &env)?;
        row(name, "restic", "full", t, mb, files, rss, Some(du(&rrepo)?));
        pairs.push((name, "full backup", lifeboat_full, t));

        let changed = change_one_percent(src, name == "b")?;
        let (t, rss) = timed(exe, &["child", "backup", p(&lrepo), p(src)], &[])?;
        row(
            name,
            "lifeboat",
            &format!("incremental ({changed} changed)"),
            t,
            mb,
            files,
            rss,
            Some(du(&lrepo)?),
        );
        let lifeboat_incr = t;
        let (t, rss) = timed("restic", &["-q", "-r", p(&rrepo), "backup", p(src)], &env)?;
        row(
            name,
            "restic",
            &format!("incremental ({changed} changed)"),
            t,
            mb,
            files,
            rss,
            Some(du(&rrepo)?),
        );
        pairs.push((name, "incremental backup", lifeboat_incr, t));

        let lout = root.join(format!("lifeboat-out-{name}"));
        let rout = root.join(format!("restic-out-{name}"));
        let (t, rss) = timed(exe, &["child", "restore", p(&lrepo), p(&lout)], &[])?;
        row(name, "lifeboat", "restore", t, mb, files, rss, None);
        let lifeboat_restore = t;
        let (t, rss) = timed(
            "restic",
            &[
                "-q",
                "-r",
                p(&rrepo),
                "restore",
                "latest",
                "--target",
                p(&rout),
            ],
            &env,
        )?;
        row(name, "restic", "restore", t, mb, files, rss, None);
        pairs.push((name, "restore", lifeboat_restore, t));
        for d in [&lout, &rout, &cache] {
            let _ = std::fs::remove_dir_all(d);
        }
    }
    // The same data in the same run: restic's time over lifeboat's is
    // lifeboat's throughput as a multiple of restic's.
    println!("\n| dataset | step | lifeboat s | restic s | lifeboat speed / restic speed |");
    println!("|---|---|---|---|---|");
    for (set, step, l, r) in pairs {
        println!(
            "| {set} | {step} | {l:.1} | {r:.1} | {:.2}x |",
            r / l.max(0.01)
        );
    }
    Ok(())
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap_or_default()
}

#[allow(clippy::too_many_arguments)]
fn row(
    set: &str,
    tool: &str,
    step: &str,
    secs: f64,
    mb: f64,
    files: usize,
    rss_kb: u64,
    repo: Option<u64>,
) {
    println!(
        "| {set} | {tool} | {step} | {secs:.1} | {:.0} | {:.0} | {:.0} | {} |",
        mb / secs,
        files as f64 / secs,
        rss_kb as f64 / 1024.0,
        repo.map(|b| format!("{:.0}", b as f64 / 1e6))
            .unwrap_or_default()
    );
}

/// Runs a command under /usr/bin/time: (seconds, peak RSS in KiB).
fn timed(cmd: &str, args: &[&str], env: &[(&str, &str)]) -> R<(f64, u64)> {
    let stats = tempfile::NamedTempFile::new()?;
    let status = Command::new("/usr/bin/time")
        .arg("-o")
        .arg(stats.path())
        .arg("-f")
        .arg("%e %M")
        .arg(cmd)
        .args(args)
        .envs(env.iter().copied())
        .status()?;
    if !status.success() {
        return Err(format!("{cmd} {args:?} failed: {status}").into());
    }
    let text = std::fs::read_to_string(stats.path())?;
    let last = text.lines().last().unwrap_or_default();
    let mut it = last.split_whitespace();
    let secs: f64 = it.next().ok_or("time output")?.parse()?;
    let rss: u64 = it.next().ok_or("time output")?.parse()?;
    Ok((secs, rss))
}

fn output(cmd: &str, args: &[&str]) -> R<String> {
    Ok(String::from_utf8(
        Command::new(cmd).args(args).output()?.stdout,
    )?)
}

fn du(path: &Path) -> R<u64> {
    let out = output("du", &["-sb", p(path)])?;
    Ok(out.split_whitespace().next().unwrap_or("0").parse()?)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Half random, half repetitive text: compressible like real data.
fn content(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let half = len / 2;
    rng.fill(&mut buf[..half]);
    let line = format!(
        "log line {} with some repeated words and numbers\n",
        rng.next() % 1000
    );
    for (i, b) in buf[half..].iter_mut().enumerate() {
        *b = line.as_bytes()[i % line.len()];
    }
    buf
}

fn gen_small(root: &Path, n: usize) -> R<usize> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..n {
        let dir = root.join(format!(
            "d{:02}/e{:02}/f{:02}",
            i % 20,
            (i / 20) % 25,
            (i / 500) % 100
        ));
        std::fs::create_dir_all(&dir)?;
        let r = (rng.next() % 1000) as f64 / 1000.0;
        let len = 1024 + (r * r * 63.0 * 1024.0) as usize;
        std::fs::write(dir.join(format!("file{i:06}.dat")), content(&mut rng, len))?;
    }
    Ok(n)
}

/// 4 files; 30% of the bytes repeat earlier content.
fn gen_large(root: &Path, total: u64) -> R<usize> {
    use std::io::Write;
    std::fs::create_dir_all(root)?;
    let mut rng = Rng(0x51_7cc1_b727_220a);
    let block = 4 << 20;
    let per_file = total / 4;
    let mut seen: Vec<Vec<u8>> = Vec::new();
    for f in 0..4 {
        let mut out =
            std::io::BufWriter::new(std::fs::File::create(root.join(format!("big{f}.img")))?);
        let mut written = 0u64;
        while written < per_file {
            let dup = !seen.is_empty() && rng.next() % 10 < 3;
            let data = if dup {
                seen[(rng.next() as usize) % seen.len()].clone()
            } else {
                let d = content(&mut rng, block);
                if seen.len() < 64 {
                    seen.push(d.clone());
                }
                d
            };
            out.write_all(&data)?;
            written += data.len() as u64;
        }
        out.flush()?;
    }
    Ok(4)
}

/// Rewrites 1% of the files (or, for `large`, 1% of one file's bytes).
fn change_one_percent(root: &Path, large: bool) -> R<String> {
    use std::os::unix::fs::FileExt;
    let mut rng = Rng(42);
    if large {
        let path = root.join("big0.img");
        let f = std::fs::OpenOptions::new().write(true).open(&path)?;
        let len = f.metadata()?.len();
        let n = (len / 100) as usize;
        f.write_all_at(&content(&mut rng, n), len / 3)?;
        return Ok(format!("{} MB of big0.img", n / 1_000_000));
    }
    let mut files = Vec::new();
    for e in walkdir::WalkDir::new(root) {
        let e = e?;
        if e.file_type().is_file() {
            files.push(e.into_path());
        }
    }
    files.sort();
    let mut changed = 0;
    for path in files.iter().step_by(100) {
        let len = std::fs::metadata(path)?.len() as usize;
        std::fs::write(path, content(&mut rng, len))?;
        changed += 1;
    }
    Ok(format!("{changed} files"))
}

/// The lifeboat side, in its own process: `child backup REPO SRC` or
/// `child restore REPO DEST`.
fn child(args: &[String]) -> R {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (op, repo, path) = (
            args[0].as_str(),
            PathBuf::from(&args[1]),
            PathBuf::from(&args[2]),
        );
        let id_file = repo.with_extension("identity");
        let (recipient, identity) = if let Ok(s) = std::fs::read_to_string(&id_file) {
            let mut l = s.lines();
            (
                l.next().unwrap_or_default().to_string(),
                l.next().unwrap_or_default().to_string(),
            )
        } else {
            let id = age::x25519::Identity::generate();
            let r = id.to_public().to_string();
            let i = age::secrecy::ExposeSecret::expose_secret(&id.to_string()).to_string();
            std::fs::write(&id_file, format!("{r}\n{i}\n"))?;
            (r, i)
        };
        let config = lifeboat_store::LocationConfig {
            url: format!("file://{}", repo.display()),
            recipients: vec![recipient],
            identities: vec![identity],
            ..Default::default()
        };
        let location = lifeboat_store::Repository::open(&config).await?;
        let cache = lifeboat_volume::MemoryKeyCache::new();
        let counters = Arc::new(lifeboat_volume::Counters::default());
        match op {
            "backup" => {
                let v = lifeboat_volume::VolumeRepo::open_or_create(
                    &location, "bench", "bench", "bench", &cache,
                )
                .await?;
                v.backup(
                    lifeboat_volume::BackupRequest {
                        source: path,
                        kind: lifeboat_volume::VolumeKind::Filesystem,
                        pvc: "data".into(),
                        pvc_uid: None,
                        backup: None,
                        force_read: false,
                    },
                    counters,
                    lifeboat_volume::Control::new(),
                )
                .await?;
            }
            _ => {
                let v = lifeboat_volume::VolumeRepo::open_existing(
                    &location, "bench", "bench", "bench", None, None,
                )
                .await?;
                v.restore(
                    "latest",
                    None,
                    &path,
                    counters,
                    lifeboat_volume::Control::new(),
                )
                .await?;
            }
        }
        R::Ok(())
    })
}
