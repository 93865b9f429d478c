//! The key cache where backups run: one Kubernetes Secret lifeboat manages,
//! one `data` entry per repository.
//!
//! Only `data` is read: it is all an API server returns of a Secret's
//! contents. Writes use the Secret's resourceVersion, so two movers
//! adding keys at once do not lose one: the loser re-reads and retries.

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::error::{Result, VolumeError};
use crate::keys::KeyCache;

/// Label on the Secret.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "lifeboat");

/// A [`KeyCache`] in the Secret `name` of `namespace`.
#[derive(Clone)]
pub struct SecretKeyCache {
    api: Api<Secret>,
    name: String,
}

impl std::fmt::Debug for SecretKeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretKeyCache")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SecretKeyCache {
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> SecretKeyCache {
        SecretKeyCache {
            api: Api::namespaced(client, namespace),
            name: name.into(),
        }
    }

    fn error(&self, what: &str, e: kube::Error) -> VolumeError {
        VolumeError::KeyCache(format!("{what} the Secret {}: {e}", self.name))
    }

    /// Writes `name = password` when `replace` or when absent; returns the
    /// stored value.
    async fn upsert(&self, name: &str, password: &str, replace: bool) -> Result<String> {
        for _ in 0..10 {
            match self
                .api
                .get_opt(&self.name)
                .await
                .map_err(|e| self.error("cannot read", e))?
            {
                None => {
                    let secret = Secret {
                        metadata: ObjectMeta {
                            name: Some(self.name.clone()),
                            labels: Some(BTreeMap::from([(
                                MANAGED_BY.0.to_string(),
                                MANAGED_BY.1.to_string(),
                            )])),
                            ..ObjectMeta::default()
                        },
                        data: Some(BTreeMap::from([(
                            name.to_string(),
                            ByteString(password.as_bytes().to_vec()),
                        )])),
                        type_: Some("Opaque".into()),
                        ..Secret::default()
                    };
                    match self.api.create(&PostParams::default(), &secret).await {
                        Ok(_) => return Ok(password.to_string()),
                        Err(kube::Error::Api(s)) if s.code == 409 => continue,
                        Err(e) => return Err(self.error("cannot create", e)),
                    }
                }
                Some(mut secret) => {
                    if !replace && let Some(existing) = value(&secret, name) {
                        return Ok(existing);
                    }
                    secret
                        .data
                        .get_or_insert_with(BTreeMap::new)
                        .insert(name.to_string(), ByteString(password.as_bytes().to_vec()));
                    // resourceVersion stays set: a concurrent change is a 409.
                    match self
                        .api
                        .replace(&self.name, &PostParams::default(), &secret)
                        .await
                    {
                        Ok(_) => return Ok(password.to_string()),
                        Err(kube::Error::Api(s)) if s.code == 409 => continue,
                        Err(e) => return Err(self.error("cannot update", e)),
                    }
                }
            }
        }
        Err(VolumeError::KeyCache(format!(
            "the Secret {} kept changing while a key was added; retry",
            self.name
        )))
    }
}

fn value(secret: &Secret, name: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(name)
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
        .map(|s| s.trim().to_string())
}

#[async_trait]
impl KeyCache for SecretKeyCache {
    async fn get(&self, name: &str) -> Result<Option<String>> {
        let secret = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.error("cannot read", e))?;
        Ok(secret.as_ref().and_then(|s| value(s, name)))
    }

    async fn insert_if_absent(&self, name: &str, password: &str) -> Result<String> {
        self.upsert(name, password, false).await
    }

    async fn put(&self, name: &str, password: &str) -> Result<()> {
        self.upsert(name, password, true).await.map(|_| ())
    }
}
