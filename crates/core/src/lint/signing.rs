//! Backup signing that cannot work: a trusted key for a cluster that has no
//! signing key (LB118), and a signing key nobody trusts (LB119). A malformed
//! public key never gets here: the schema's pattern refuses it (LB007).

use super::at_key;
use crate::diagnostic::{Code, Diagnostic};
use crate::load::{Loaded, PolicySet};

/// LB118: a key is trusted for a cluster (its own `signing.publicKey`, or a
/// StorageLocation's `signing.trustedKeys`) whose Cluster document has no
/// `signing.keySecretRef`. Signing is then required for that cluster's
/// backups, but its controller writes them unsigned, so every one of them
/// is refused at restore and ignored by retention.
///
/// Clusters without a Cluster document here (their policies live in
/// another repository) are not checked.
///
/// LB119: a Cluster has a `signing.keySecretRef` but no key is trusted for
/// it anywhere, so nobody checks its signatures (a warning: signing is
/// then not required, and its backups restore with a warning).
pub fn signing_keys(set: &PolicySet) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let signs = |cluster: &str| {
        set.cluster(cluster).map(|c| {
            c.doc
                .spec
                .signing
                .as_ref()
                .is_some_and(|s| s.key_secret_ref.is_some())
        })
    };
    for Loaded { doc, source } in &set.clusters {
        let name = doc.metadata.name.as_str();
        let signing = doc.spec.signing.as_ref();
        if signing.is_some_and(|s| s.public_key.is_some()) && signs(name) == Some(false) {
            out.push(at_key(
                Code::TrustedKeyWithoutSigningKey,
                source,
                "/spec/signing/publicKey",
                format!(
                    "a public key is trusted for cluster `{name}`, but it has no `signing.keySecretRef`: its backups are written unsigned and every restore refuses them"
                ),
                "add `signing.keySecretRef` naming the Secret that holds the matching secret key (`lifeboat keys generate` writes both)",
            ));
        }
        let trusted_anywhere = signing.is_some_and(|s| s.public_key.is_some())
            || set.storage_locations.iter().any(|l| {
                l.doc
                    .spec
                    .signing
                    .as_ref()
                    .is_some_and(|s| s.trusted_keys.iter().any(|k| k.cluster == name))
            });
        if signing.is_some_and(|s| s.key_secret_ref.is_some()) && !trusted_anywhere {
            out.push(at_key(
                Code::SigningKeyNotTrusted,
                source,
                "/spec/signing/keySecretRef",
                format!(
                    "cluster `{name}` signs its backups, but no key is trusted for it: nobody checks the signatures, and forged backups naming `{name}` restore with only a warning"
                ),
                "add the matching public key as `signing.publicKey` (or to a StorageLocation's `signing.trustedKeys`)",
            ));
        }
    }
    for Loaded { doc, source } in &set.storage_locations {
        let Some(signing) = &doc.spec.signing else {
            continue;
        };
        for (i, key) in signing.trusted_keys.iter().enumerate() {
            if signs(&key.cluster) == Some(false) {
                out.push(at_key(
                    Code::TrustedKeyWithoutSigningKey,
                    source,
                    &format!("/spec/signing/trustedKeys/{i}/cluster"),
                    format!(
                        "a key is trusted for cluster `{}`, but that Cluster has no `signing.keySecretRef`: its backups are written unsigned and every restore refuses them",
                        key.cluster
                    ),
                    format!(
                        "add `signing.keySecretRef` to Cluster `{}`, or remove this trusted key",
                        key.cluster
                    ),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lint::testing::*;

    const KEY: &str = "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3";

    fn cluster(name: &str, signing: &str) -> String {
        format!("API\nkind: Cluster\nmetadata:\n  name: {name}\nspec:\n  role: primary\n{signing}")
    }

    const SECRET: &str = "    keySecretRef: {name: signing}\n";

    #[test]
    fn trusted_key_without_signing_key() {
        let docs = format!(
            "{}---\n{}---\nAPI\nkind: StorageLocation\nmetadata:\n  name: s\nspec:\n  url: s3://b/s\n  signing:\n    trustedKeys:\n      - {{cluster: b, key: {KEY}}}\n      - {{cluster: elsewhere, key: {KEY}}}\n",
            cluster("a", &format!("  signing:\n    publicKey: {KEY}\n")),
            cluster("b", ""),
        );
        let found = run(signing_keys, &docs);
        let codes: Vec<_> = found.iter().map(|f| (f.0, f.1)).collect();
        assert_eq!(
            codes,
            vec![
                (Code::TrustedKeyWithoutSigningKey, 8),
                (Code::TrustedKeyWithoutSigningKey, 25)
            ],
            "{found:#?}"
        );
        assert!(found[1].3.contains("`b`"));
    }

    #[test]
    fn signing_key_nobody_trusts() {
        let docs = format!(
            "{}---\n{}---\n{}",
            cluster("lonely", &format!("  signing:\n{SECRET}")),
            cluster(
                "trusted",
                &format!("  signing:\n{SECRET}    publicKey: {KEY}\n")
            ),
            cluster("ok", ""),
        );
        let found = run(signing_keys, &docs);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].0, Code::SigningKeyNotTrusted);
        assert!(found[0].3.contains("`lonely`"));
    }

    #[test]
    fn malformed_public_key_is_a_schema_error() {
        assert!(schema_violation(&cluster(
            "a",
            "  signing:\n    publicKey: RWnotakey\n"
        )));
    }
}
