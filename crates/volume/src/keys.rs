//! Repository passwords and where they are kept.
//!
//! ```text
//! random 32 bytes ──hex──▶ password ──age (location recipients)──▶ <repo>/lifeboat-key.age
//!                              │
//!                              └──▶ KeyCache (a managed Secret where backups run,
//!                                   a directory or memory by hand and in tests)
//! ```
//!
//! A backup cluster holds only the location's public keys, so after the
//! first backup of a namespace it reads the password from its cache; anyone
//! holding an identity can open `lifeboat-key.age` with `age -d`.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::error::{Result, VolumeError};

/// Bytes of randomness in a repository password.
pub const PASSWORD_BYTES: usize = 32;

/// A new random repository password (64 lowercase hex digits).
pub fn new_password() -> Result<String> {
    let mut bytes = [0u8; PASSWORD_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| VolumeError::Random(e.to_string()))?;
    Ok(hex::encode(bytes))
}

/// Where a cluster keeps the passwords of the repositories it writes.
/// `name` is [`crate::RepoRef::cache_key`]: letters, digits, `-`, `_`, `.`.
#[async_trait]
pub trait KeyCache: Send + Sync + Debug {
    /// The cached password, if any.
    async fn get(&self, name: &str) -> Result<Option<String>>;
    /// Stores `password` unless one is stored already; returns the stored
    /// one (so two first writers agree on one password).
    async fn insert_if_absent(&self, name: &str, password: &str) -> Result<String>;
    /// Stores `password`, replacing any (re-seeding from an identity).
    async fn put(&self, name: &str, password: &str) -> Result<()>;
}

/// A cache in memory (tests, one-off commands).
#[derive(Debug, Default)]
pub struct MemoryKeyCache {
    keys: Mutex<BTreeMap<String, String>>,
}

impl MemoryKeyCache {
    pub fn new() -> MemoryKeyCache {
        MemoryKeyCache::default()
    }
}

#[async_trait]
impl KeyCache for MemoryKeyCache {
    async fn get(&self, name: &str) -> Result<Option<String>> {
        Ok(self.lock().get(name).cloned())
    }

    async fn insert_if_absent(&self, name: &str, password: &str) -> Result<String> {
        Ok(self
            .lock()
            .entry(name.to_string())
            .or_insert_with(|| password.to_string())
            .clone())
    }

    async fn put(&self, name: &str, password: &str) -> Result<()> {
        self.lock().insert(name.to_string(), password.to_string());
        Ok(())
    }
}

impl MemoryKeyCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A cache in a local directory, one file (mode 0600) per repository, for
/// `lifeboat volumes` run by hand.
#[derive(Debug, Clone)]
pub struct FileKeyCache {
    dir: PathBuf,
}

impl FileKeyCache {
    pub fn new(dir: impl Into<PathBuf>) -> FileKeyCache {
        FileKeyCache { dir: dir.into() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }

    fn io(&self, what: &str, e: std::io::Error) -> VolumeError {
        VolumeError::KeyCache(format!("{what} in {}: {e}", self.dir.display()))
    }
}

#[async_trait]
impl KeyCache for FileKeyCache {
    async fn get(&self, name: &str) -> Result<Option<String>> {
        match std::fs::read_to_string(self.path(name)) {
            Ok(s) => Ok(Some(s.trim().to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io("cannot read a cached key", e)),
        }
    }

    async fn insert_if_absent(&self, name: &str, password: &str) -> Result<String> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| self.io("cannot create the key cache", e))?;
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(self.path(name))
        {
            Ok(mut f) => {
                f.write_all(password.as_bytes())
                    .and_then(|()| f.sync_all())
                    .map_err(|e| self.io("cannot write a cached key", e))?;
                Ok(password.to_string())
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => self
                .get(name)
                .await?
                .ok_or_else(|| VolumeError::KeyCache("a cached key vanished".into())),
            Err(e) => Err(self.io("cannot write a cached key", e)),
        }
    }

    async fn put(&self, name: &str, password: &str) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| self.io("cannot create the key cache", e))?;
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| self.io("cannot write a cached key", e))?;
        f.write_all(password.as_bytes())
            .and_then(|()| f.sync_all())
            .and_then(|()| std::fs::rename(&tmp, self.path(name)))
            .map_err(|e| self.io("cannot write a cached key", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_random_hex() {
        let a = new_password().unwrap_or_default();
        let b = new_password().unwrap_or_default();
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn first_insert_wins() -> Result<()> {
        for cache in [
            Box::new(MemoryKeyCache::new()) as Box<dyn KeyCache>,
            Box::new(FileKeyCache::new(
                tempfile::tempdir()
                    .map_err(|e| VolumeError::KeyCache(e.to_string()))?
                    .keep(),
            )),
        ] {
            assert_eq!(cache.get("a").await?, None);
            assert_eq!(cache.insert_if_absent("a", "one").await?, "one");
            assert_eq!(cache.insert_if_absent("a", "two").await?, "one");
            cache.put("a", "three").await?;
            assert_eq!(cache.get("a").await?.as_deref(), Some("three"));
        }
        Ok(())
    }
}
