//! Paths inside a pod. In a real pod they are used as they are; in the
//! lifeboat sandbox, where a container is a local process, the kubelet sets
//! `LIFEBOAT_SANDBOX_ROOT` to a directory in which every mount path is a
//! link to the volume, and in-pod paths resolve under it. This is the only
//! place product code looks at that variable.

use std::path::{Component, Path, PathBuf};

/// The environment variable the sandbox kubelet sets.
pub const SANDBOX_ROOT: &str = "LIFEBOAT_SANDBOX_ROOT";

/// Resolves an absolute in-pod path (a volume mount, a termination
/// message path) to where the process finds it.
pub fn pod_path(path: impl AsRef<Path>) -> PathBuf {
    resolve(
        std::env::var_os(SANDBOX_ROOT).map(PathBuf::from).as_deref(),
        path.as_ref(),
    )
}

fn resolve(root: Option<&Path>, path: &Path) -> PathBuf {
    let Some(root) = root.filter(|r| !r.as_os_str().is_empty()) else {
        return path.to_path_buf();
    };
    let mut out = root.to_path_buf();
    for c in path.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::ParentDir => {
                if out != root {
                    out.pop();
                }
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_kept_in_a_real_pod_and_rooted_in_the_sandbox() {
        assert_eq!(
            resolve(None, Path::new("/data/f")),
            PathBuf::from("/data/f")
        );
        let root = Path::new("/tmp/pods/u/rootfs/c");
        assert_eq!(
            resolve(Some(root), Path::new("/data/f")),
            root.join("data/f")
        );
        assert_eq!(
            resolve(Some(root), Path::new("/../../etc")),
            root.join("etc")
        );
    }
}
