//! Opening the object-storage repository of a StorageLocation.
//!
//! Outside a cluster (the CLI) credentials come from the provider's default
//! chain and age identities from files. The controller reads the Secrets a
//! StorageLocation names (`credentials.secretRef`,
//! `encryption.identitySecretRef`) from the cluster, in its own namespace
//! unless the reference names another.

use std::collections::BTreeMap;

use anyhow::{Context, anyhow, bail};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use lifeboat_core::load::PolicySet;
use lifeboat_core::{SIGNING_SECRET_KEY, SecretRef, StorageLocation};
use lifeboat_store::{Credentials, LocationConfig, Repository, TrustedKey};

/// Where a StorageLocation's secrets come from.
#[derive(Clone)]
pub enum Secrets {
    /// The provider's default credential chain; these age identities and
    /// this signing key (a minisign secret key file).
    Local {
        identities: Vec<String>,
        signing_key: Option<String>,
    },
    /// Kubernetes Secrets read through `client`, by default in `namespace`.
    Cluster {
        client: kube::Client,
        namespace: String,
    },
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secrets::Local {
                identities,
                signing_key,
            } => f
                .debug_struct("Local")
                .field(
                    "identities",
                    &format_args!("<{} redacted>", identities.len()),
                )
                .field("signing_key", &signing_key.as_ref().map(|_| "<redacted>"))
                .finish(),
            Secrets::Cluster { namespace, .. } => f
                .debug_struct("Cluster")
                .field("namespace", namespace)
                .finish_non_exhaustive(),
        }
    }
}

/// The object-storage configuration of a StorageLocation, without
/// credentials (the provider's default chain) or signing key, trusting the
/// keys `set` trusts for it.
pub fn config(
    set: &PolicySet,
    location: &StorageLocation,
    identities: Vec<String>,
) -> LocationConfig {
    let spec = &location.spec;
    let trusted_keys = set
        .trusted_keys(&location.metadata.name)
        .into_iter()
        .map(|k| TrustedKey {
            cluster: k.cluster,
            public_key: k.key.0,
            trusted_until: k.trusted_until,
        })
        .collect();
    LocationConfig {
        url: spec.url.clone(),
        region: spec.region.clone(),
        endpoint: spec.endpoint.clone(),
        path_style: spec.path_style,
        recipients: spec
            .encryption
            .as_ref()
            .map(|e| e.recipients.iter().map(|r| r.0.clone()).collect())
            .unwrap_or_default(),
        identities,
        trusted_keys,
        ..LocationConfig::default()
    }
}

/// Opens a StorageLocation's repository with the credentials and identities
/// `secrets` provides.
pub async fn open(
    set: &PolicySet,
    location: &StorageLocation,
    secrets: &Secrets,
    cluster: &str,
) -> anyhow::Result<Repository> {
    Ok(open_with_config(set, location, secrets, cluster).await?.0)
}

/// [`open`], also returning the full configuration it opened with (what
/// mover pods need to reach the location).
pub async fn open_with_config(
    set: &PolicySet,
    location: &StorageLocation,
    secrets: &Secrets,
    cluster: &str,
) -> anyhow::Result<(Repository, LocationConfig)> {
    let name = &location.metadata.name;
    let config = resolve(set, location, secrets, cluster).await?;
    let repository = Repository::open(&config)
        .await
        .with_context(|| format!("cannot open StorageLocation `{name}`"))?;
    Ok((repository, config))
}

/// The full configuration of a location: credentials, identities and the
/// signing key of `cluster` read.
pub async fn resolve(
    set: &PolicySet,
    location: &StorageLocation,
    secrets: &Secrets,
    cluster: &str,
) -> anyhow::Result<LocationConfig> {
    let name = &location.metadata.name;
    match secrets {
        Secrets::Local {
            identities,
            signing_key,
        } => Ok(LocationConfig {
            signing_key: signing_key.clone(),
            ..config(set, location, identities.clone())
        }),
        Secrets::Cluster { client, namespace } => {
            let mut identities = Vec::new();
            if let Some(reference) = location
                .spec
                .encryption
                .as_ref()
                .and_then(|e| e.identity_secret_ref.as_ref())
            {
                // The identity is needed only to read archives (restores).
                // A cluster that only backs up may lack the Secret: open the
                // location without it; a restore from it then fails saying
                // the identity is missing.
                let read = read_secret(client, namespace, reference)
                    .await
                    .and_then(|data| {
                        age_identities(&data, reference.key.as_deref()).with_context(|| {
                            format!("Secret `{}` holds no age identity", reference.name)
                        })
                    });
                match read {
                    Ok(keys) => identities = keys,
                    Err(e) => tracing::warn!(
                        location = %name,
                        error = %format!("{e:#}"),
                        "no age identity: backups to this location work, restores from it cannot decrypt"
                    ),
                }
            }
            let mut config = config(set, location, identities);
            config.signing_key = signing_key(client, namespace, set, cluster).await?;
            if let Some(credentials) = &location.spec.credentials {
                let data = read_secret(client, namespace, &credentials.secret_ref)
                    .await
                    .with_context(|| format!("StorageLocation `{name}`: credentials.secretRef"))?;
                config.credentials =
                    Some(credentials_for(&location.spec.url, &data).with_context(|| {
                        format!(
                            "StorageLocation `{name}`: Secret `{}`",
                            credentials.secret_ref.name
                        )
                    })?);
            }
            Ok(config)
        }
    }
}

/// The signing key of `cluster` from its `signing.keySecretRef` (namespace
/// `default_namespace` unless named, key `minisign.key` unless named), or
/// `None` when it has none.
pub async fn signing_key(
    client: &kube::Client,
    default_namespace: &str,
    set: &PolicySet,
    cluster: &str,
) -> anyhow::Result<Option<String>> {
    let Some(reference) = set
        .cluster(cluster)
        .and_then(|c| c.doc.spec.signing.as_ref())
        .and_then(|s| s.key_secret_ref.as_ref())
    else {
        return Ok(None);
    };
    let data = read_secret(client, default_namespace, reference)
        .await
        .with_context(|| format!("Cluster `{cluster}`: signing.keySecretRef"))?;
    let key = reference.key.as_deref().unwrap_or(SIGNING_SECRET_KEY);
    let text = data.get(key).ok_or_else(|| {
        anyhow!(
            "Cluster `{cluster}`: Secret `{}` has no key `{key}` holding the minisign secret key",
            reference.name
        )
    })?;
    Ok(Some(text.clone()))
}

async fn read_secret(
    client: &kube::Client,
    default_namespace: &str,
    reference: &SecretRef,
) -> anyhow::Result<BTreeMap<String, String>> {
    let namespace = reference.namespace.as_deref().unwrap_or(default_namespace);
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api.get(&reference.name).await.map_err(|e| match e {
        kube::Error::Api(s) if s.code == 404 => anyhow!(
            "Secret `{namespace}/{}` does not exist: create it (see the StorageLocation reference for its keys)",
            reference.name
        ),
        kube::Error::Api(s) if s.code == 403 => anyhow!(
            "the controller may not read Secret `{namespace}/{}`: grant `get` on secrets in `{namespace}`",
            reference.name
        ),
        other => anyhow!("cannot read Secret `{namespace}/{}`: {other}", reference.name),
    })?;
    let mut out = BTreeMap::new();
    for (key, value) in secret.data.unwrap_or_default() {
        let text = String::from_utf8(value.0).map_err(|_| {
            anyhow!(
                "key `{key}` of Secret `{}` is not UTF-8 text",
                reference.name
            )
        })?;
        out.insert(key, text);
    }
    // Only `data`: it is all an API server returns of a Secret's contents.
    Ok(out)
}

/// Every `AGE-SECRET-KEY-` line of `key`, or of every value when no key is
/// named.
fn age_identities(
    data: &BTreeMap<String, String>,
    key: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    let values: Vec<&String> = match key {
        Some(k) => vec![data.get(k).ok_or_else(|| anyhow!("it has no key `{k}`"))?],
        None => data.values().collect(),
    };
    let keys: Vec<String> = values
        .iter()
        .flat_map(|v| v.lines())
        .map(str::trim)
        .filter(|l| l.starts_with("AGE-SECRET-KEY-"))
        .map(str::to_string)
        .collect();
    if keys.is_empty() {
        bail!("no line starts with AGE-SECRET-KEY-");
    }
    Ok(keys)
}

/// The provider credentials of a Secret, by the key names the
/// StorageLocation reference documents.
fn credentials_for(url: &str, data: &BTreeMap<String, String>) -> anyhow::Result<Credentials> {
    let get = |key: &str| {
        data.get(key)
            .map(|v| v.trim().to_string())
            .ok_or_else(|| anyhow!("it has no key `{key}`"))
    };
    let scheme = url.split("://").next().unwrap_or_default();
    Ok(match scheme {
        "s3" => Credentials::S3 {
            access_key_id: get("AWS_ACCESS_KEY_ID")?,
            secret_access_key: get("AWS_SECRET_ACCESS_KEY")?,
            session_token: data.get("AWS_SESSION_TOKEN").map(|v| v.trim().to_string()),
        },
        "az" => Credentials::Azure {
            account: get("AZURE_STORAGE_ACCOUNT_NAME")?,
            access_key: get("AZURE_STORAGE_ACCOUNT_KEY")?,
        },
        "gs" => Credentials::Gcs {
            service_account_key: get("GOOGLE_SERVICE_ACCOUNT_KEY")?,
        },
        other => bail!("`{other}://` locations take no credentials; remove `credentials`"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn s3_keys_are_read_and_trimmed() {
        let c = credentials_for(
            "s3://bucket/p",
            &data(&[
                ("AWS_ACCESS_KEY_ID", "AK\n"),
                ("AWS_SECRET_ACCESS_KEY", "SK"),
            ]),
        )
        .unwrap();
        assert_eq!(
            c,
            Credentials::S3 {
                access_key_id: "AK".into(),
                secret_access_key: "SK".into(),
                session_token: None
            }
        );
    }

    #[test]
    fn a_missing_key_is_named() {
        let err =
            credentials_for("az://c/p", &data(&[("AZURE_STORAGE_ACCOUNT_NAME", "a")])).unwrap_err();
        assert!(
            err.to_string().contains("AZURE_STORAGE_ACCOUNT_KEY"),
            "{err}"
        );
    }

    #[test]
    fn identities_come_from_the_named_key_or_any() {
        let d = data(&[
            ("identity", "# comment\nAGE-SECRET-KEY-1ABC\n"),
            ("other", "x"),
        ]);
        assert_eq!(
            age_identities(&d, Some("identity")).unwrap(),
            vec!["AGE-SECRET-KEY-1ABC"]
        );
        assert_eq!(
            age_identities(&d, None).unwrap(),
            vec!["AGE-SECRET-KEY-1ABC"]
        );
        assert!(age_identities(&d, Some("other")).is_err());
    }
}
