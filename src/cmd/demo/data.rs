//! The files `lifeboat demo` puts on the sample application's volumes, and
//! the byte-for-byte check of the restored volumes against them.
//!
//! ```text
//! volumes() ─▶ Volume::write(seed dir) ─▶ the sandbox copies them onto the
//!              claims' disks when they bind (then the seed is removed)
//! backup ─▶ delete the namespace ─▶ restore ─▶ Volume::compare(restored disk)
//! ```
//!
//! The contents are generated, not read back from anywhere: the expected
//! tree lives in memory, so a restore can only pass by bringing back every
//! byte the backup read.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// One entry of a volume's tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File(Vec<u8>),
    Symlink(PathBuf),
}

/// The seeded contents of one claim.
#[derive(Debug)]
pub struct Volume {
    pub namespace: &'static str,
    pub pvc: &'static str,
    /// What it holds, in words.
    pub about: &'static str,
    /// Every entry below the volume root, by relative path.
    pub tree: BTreeMap<PathBuf, Node>,
}

/// Deterministic bytes (xorshift64*), so every run seeds the same files.
struct Bytes(u64);

impl Bytes {
    fn for_path(path: &str) -> Bytes {
        // FNV-1a of the path: each file its own stream, never zero.
        let seed = path.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        Bytes(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Incompressible bytes, like images and database pages.
    fn binary(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }

    /// Lines of lowercase words, like source code and configuration.
    fn text(&mut self, len: usize) -> Vec<u8> {
        const WORDS: [&str; 16] = [
            "function", "return", "$post", "wp_", "echo", "array", "if", "else", "=>", "the",
            "option", "query", "null", "true", "esc_html", "get_",
        ];
        let mut out = String::with_capacity(len + 16);
        let mut line = 0;
        while out.len() < len {
            let n = self.next();
            out.push_str(WORDS[(n % 16) as usize]);
            line += 1;
            out.push(if n >> 60 == 0 || line % 9 == 0 {
                '\n'
            } else {
                ' '
            });
        }
        out.truncate(len);
        out.into_bytes()
    }
}

fn add_file(tree: &mut BTreeMap<PathBuf, Node>, path: &str, len: usize, text: bool) {
    let mut bytes = Bytes::for_path(path);
    let content = if text {
        bytes.text(len)
    } else {
        bytes.binary(len)
    };
    add_parents(tree, Path::new(path));
    tree.insert(PathBuf::from(path), Node::File(content));
}

fn add_files(tree: &mut BTreeMap<PathBuf, Node>, files: &[(&str, usize)], text: bool) {
    for (path, len) in files {
        add_file(tree, path, *len, text);
    }
}

fn add_parents(tree: &mut BTreeMap<PathBuf, Node>, path: &Path) {
    for dir in path.ancestors().skip(1) {
        if !dir.as_os_str().is_empty() {
            tree.insert(dir.to_path_buf(), Node::Dir);
        }
    }
}

/// The WordPress site's files (`/var/www/html`): many small PHP files, a
/// theme and a plugin in nested directories, a hidden file, a few large
/// uploads, a symlink to the latest upload and an empty directory.
fn wordpress() -> Volume {
    let mut tree = BTreeMap::new();
    add_files(
        &mut tree,
        &[
            ("index.php", 405),
            (".htaccess", 523),
            ("wp-config.php", 3_127),
            ("wp-login.php", 51_373),
            ("wp-content/themes/twentytwentyfour/style.css", 8_214),
            ("wp-content/themes/twentytwentyfour/functions.php", 6_102),
            ("wp-content/themes/twentytwentyfour/theme.json", 24_310),
            (
                "wp-content/themes/twentytwentyfour/templates/index.html",
                1_211,
            ),
            ("wp-content/themes/twentytwentyfour/parts/header.html", 702),
            (
                "wp-content/themes/twentytwentyfour/parts/footer.html",
                1_874,
            ),
            ("wp-content/plugins/akismet/akismet.php", 2_589),
            ("wp-content/plugins/akismet/class.akismet.php", 64_221),
            ("wp-content/plugins/akismet/readme.txt", 7_740),
        ],
        true,
    );
    let mut sizes = Bytes::for_path("wp-includes");
    for i in 1..=48 {
        let len = 1_024 + (sizes.next() % 30_000) as usize;
        add_file(
            &mut tree,
            &format!("wp-includes/module-{i:02}.php"),
            len,
            true,
        );
    }
    add_files(
        &mut tree,
        &[
            ("wp-content/uploads/2026/11/harbour.jpg", 412_907),
            ("wp-content/uploads/2026/11/lighthouse.jpg", 655_360),
            ("wp-content/uploads/2026/11/crew.png", 287_113),
            ("wp-content/uploads/2026/12/storm.jpg", 731_004),
            ("wp-content/uploads/2026/12/storm-150x150.jpg", 9_811),
        ],
        false,
    );
    tree.insert(
        PathBuf::from("wp-content/uploads/latest.jpg"),
        Node::Symlink(PathBuf::from("2026/12/storm.jpg")),
    );
    tree.insert(PathBuf::from("wp-content/upgrade"), Node::Dir);
    Volume {
        namespace: "wordpress",
        pvc: "wp-pv-claim",
        about: "the site: PHP files, a theme, uploads",
        tree,
    }
}

/// MySQL's data directory (`/var/lib/mysql`): large tablespaces, a
/// database directory of table files, small logs and settings.
fn mysql() -> Volume {
    let mut tree = BTreeMap::new();
    add_files(
        &mut tree,
        &[
            ("ibdata1", 1_310_720),
            ("undo_001", 393_216),
            ("mysql.ibd", 262_144),
            ("binlog.000001", 31_457),
            ("wordpress/wp_posts.ibd", 229_376),
            ("wordpress/wp_postmeta.ibd", 131_072),
            ("wordpress/wp_options.ibd", 114_688),
            ("wordpress/wp_users.ibd", 98_304),
            ("wordpress/wp_comments.ibd", 65_536),
            ("wordpress/wp_terms.ibd", 65_536),
        ],
        false,
    );
    add_files(
        &mut tree,
        &[
            ("auto.cnf", 56),
            ("binlog.index", 16),
            ("performance_schema/events_waits_current.sdi", 1_213),
            ("performance_schema/threads.sdi", 2_890),
        ],
        true,
    );
    Volume {
        namespace: "wordpress",
        pvc: "mysql-pv-claim",
        about: "the database: tablespaces and table files",
        tree,
    }
}

/// What the demo seeds: the sample WordPress site's two claims.
pub fn volumes() -> Vec<Volume> {
    vec![mysql(), wordpress()]
}

impl Volume {
    /// Regular files.
    pub fn files(&self) -> usize {
        self.tree
            .values()
            .filter(|n| matches!(n, Node::File(_)))
            .count()
    }

    /// Bytes of the regular files.
    pub fn bytes(&self) -> u64 {
        self.tree
            .values()
            .map(|n| match n {
                Node::File(c) => c.len() as u64,
                _ => 0,
            })
            .sum()
    }

    /// `namespace/pvc`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.namespace, self.pvc)
    }

    /// Writes the tree under `root`, as the sandbox expects seed contents
    /// (`<root>/volumes/<namespace>/<pvc>/`).
    pub fn write(&self, root: &Path) -> io::Result<()> {
        let dir = root.join("volumes").join(self.namespace).join(self.pvc);
        std::fs::create_dir_all(&dir)?;
        for (path, node) in &self.tree {
            let target = dir.join(path);
            match node {
                Node::Dir => std::fs::create_dir_all(&target)?,
                Node::File(content) => std::fs::write(&target, content)?,
                Node::Symlink(to) => std::os::unix::fs::symlink(to, &target)?,
            }
        }
        Ok(())
    }

    /// Every difference between `dir` (a restored disk) and the seeded
    /// tree, one line each naming the file; empty when identical.
    pub fn compare(&self, dir: &Path) -> io::Result<Vec<String>> {
        let found = read_tree(dir)?;
        let mut differences = Vec::new();
        for (path, want) in &self.tree {
            let p = path.display();
            match (want, found.get(path)) {
                (_, None) => differences.push(format!("{p}: missing")),
                (Node::File(want), Some(Node::File(got))) => {
                    if let Some(at) = first_difference(want, got) {
                        differences.push(format!(
                            "{p}: differs from the seeded file at byte {at} ({} bytes restored, {} seeded)",
                            got.len(),
                            want.len()
                        ));
                    }
                }
                (Node::Symlink(want), Some(Node::Symlink(got))) if want != got => {
                    differences.push(format!(
                        "{p}: a symlink to {} instead of {}",
                        got.display(),
                        want.display()
                    ))
                }
                (want, Some(got)) if kind(want) != kind(got) => {
                    differences.push(format!("{p}: a {} instead of a {}", kind(got), kind(want)));
                }
                _ => {}
            }
        }
        for path in found.keys().filter(|p| !self.tree.contains_key(*p)) {
            differences.push(format!("{}: not seeded, yet restored", path.display()));
        }
        Ok(differences)
    }
}

fn kind(node: &Node) -> &'static str {
    match node {
        Node::Dir => "directory",
        Node::File(_) => "file",
        Node::Symlink(_) => "symlink",
    }
}

/// The offset of the first byte that differs (or where one side ends).
fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(at) => Some(at),
        None if a.len() != b.len() => Some(a.len().min(b.len())),
        None => None,
    }
}

/// Every entry below `root` (symlinks not followed), by relative path.
fn read_tree(root: &Path) -> io::Result<BTreeMap<PathBuf, Node>> {
    let mut tree = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot read {}: {e}", dir.display())))?;
        for entry in entries {
            let path = entry?.path();
            let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            let meta = std::fs::symlink_metadata(&path)?;
            let node = if meta.is_symlink() {
                Node::Symlink(std::fs::read_link(&path)?)
            } else if meta.is_dir() {
                pending.push(path.clone());
                Node::Dir
            } else {
                Node::File(std::fs::read(&path)?)
            };
            tree.insert(rel, node);
        }
    }
    Ok(tree)
}

/// `12 files, 3.4 MiB` of the given volumes together.
pub fn totals(volumes: &[Volume]) -> String {
    let files: usize = volumes.iter().map(Volume::files).sum();
    let bytes: u64 = volumes.iter().map(Volume::bytes).sum();
    format!("{files} files, {}", crate::cmd::backups::size(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contents_are_deterministic_and_a_few_megabytes_of_mixed_sizes() {
        let (a, b) = (volumes(), volumes());
        assert_eq!(a.len(), 2);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.tree, y.tree);
        }
        let bytes: u64 = a.iter().map(Volume::bytes).sum();
        assert!((3_000_000..8_000_000).contains(&bytes), "{bytes}");
        let sizes: Vec<usize> = a
            .iter()
            .flat_map(|v| v.tree.values())
            .filter_map(|n| match n {
                Node::File(c) => Some(c.len()),
                _ => None,
            })
            .collect();
        assert!(sizes.iter().filter(|s| **s < 64 * 1024).count() >= 50);
        assert!(sizes.iter().filter(|s| **s >= 256 * 1024).count() >= 4);
        let all: Vec<&Node> = a.iter().flat_map(|v| v.tree.values()).collect();
        assert!(all.iter().any(|n| matches!(n, Node::Symlink(_))));
    }

    #[test]
    fn a_written_tree_compares_identical_and_every_change_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let volume = wordpress();
        volume.write(dir.path()).unwrap();
        let disk = dir.path().join("volumes/wordpress/wp-pv-claim");
        assert_eq!(volume.compare(&disk).unwrap(), Vec::<String>::new());

        // One byte flipped in a large file.
        let photo = disk.join("wp-content/uploads/2026/11/harbour.jpg");
        let mut bytes = std::fs::read(&photo).unwrap();
        bytes[300_001] ^= 0x20;
        std::fs::write(&photo, &bytes).unwrap();
        // A file cut short, a symlink retargeted, a file gone, one extra.
        let php = disk.join("wp-includes/module-07.php");
        let len = std::fs::read(&php).unwrap().len();
        std::fs::write(&php, &std::fs::read(&php).unwrap()[..len - 1]).unwrap();
        let link = disk.join("wp-content/uploads/latest.jpg");
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink("2026/11/crew.png", &link).unwrap();
        std::fs::remove_file(disk.join("index.php")).unwrap();
        std::fs::write(disk.join("wp-content/upgrade/stray"), b"x").unwrap();

        let differences = volume.compare(&disk).unwrap();
        assert_eq!(
            differences,
            [
                "index.php: missing".to_string(),
                "wp-content/uploads/2026/11/harbour.jpg: differs from the seeded file at byte 300001 (412907 bytes restored, 412907 seeded)".into(),
                "wp-content/uploads/latest.jpg: a symlink to 2026/11/crew.png instead of 2026/12/storm.jpg".into(),
                format!("wp-includes/module-07.php: differs from the seeded file at byte {} ({} bytes restored, {len} seeded)", len - 1, len - 1),
                "wp-content/upgrade/stray: not seeded, yet restored".into(),
            ]
        );
    }
}
