//! Secrets and images written to unencrypted storage (LB109, LB134).

use super::at_value;
use crate::diagnostic::{Code, Diagnostic};
use crate::load::{Loaded, PolicySet};
use crate::model::{BackupPolicySpec, ResourcePattern};

/// Whether a resource pattern names core Secrets (or everything).
fn names_secrets(p: &ResourcePattern) -> bool {
    matches!(p.split(), ("*", None) | ("secrets", None))
}

/// Whether a policy can back up Secrets: it includes all resources, `*` or
/// `secrets`, and does not exclude them.
pub(super) fn backs_up_secrets(spec: &BackupPolicySpec) -> bool {
    let included =
        spec.include.resources.is_empty() || spec.include.resources.iter().any(names_secrets);
    included && !spec.exclude.resources.iter().any(names_secrets)
}

/// LB109: a policy that can back up Secrets writes to a StorageLocation
/// without `encryption.recipients`, so Secrets sit in the bucket in plain
/// text (base64 is not encryption).
pub fn unencrypted_secrets(set: &PolicySet) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for Loaded { doc, source } in &set.policies {
        if !backs_up_secrets(&doc.spec) {
            continue;
        }
        let Some(location) = set.storage_location(&doc.spec.storage) else {
            continue;
        };
        if location.doc.spec.encryption.is_some() {
            continue;
        }
        out.push(at_value(
            Code::UnencryptedSecrets,
            source,
            "/spec/storage",
            format!(
                "this policy backs up Secrets to `{}`, which has no `encryption`: anyone who can read the bucket can read them",
                doc.spec.storage
            ),
            "add `encryption.recipients` (age public keys) to the StorageLocation, or add `secrets` to `exclude.resources`",
        ));
    }
    out
}

/// LB134: a policy copies ImageStream images (`images.internalRegistry:
/// copy`) to a StorageLocation without `encryption.recipients`: image
/// layers often hold application code and baked-in configuration.
pub fn unencrypted_images(set: &PolicySet) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for Loaded { doc, source } in &set.policies {
        if !doc.spec.images.as_ref().is_some_and(|i| i.copies()) {
            continue;
        }
        let Some(location) = set.storage_location(&doc.spec.storage) else {
            continue;
        };
        if location.doc.spec.encryption.is_some() {
            continue;
        }
        out.push(at_value(
            Code::UnencryptedImages,
            source,
            "/spec/images/internalRegistry",
            format!(
                "this policy copies container images to `{}`, which has no `encryption`: their layers are stored in plain text",
                doc.spec.storage
            ),
            "add `encryption.recipients` (age public keys) to the StorageLocation, or set `images.internalRegistry: skip`",
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;
    use crate::lint::testing::*;

    fn policy(storage: &str, filters: &str) -> String {
        format!(
            "API\nkind: BackupPolicy\nmetadata:\n  name: p\nspec:\n  clusters:\n    names: [c]\n  schedule: '0 0 * * *'\n  retention: {{keepDaily: 7}}\n  storage: {storage}\n{filters}"
        )
    }

    #[rstest]
    #[case::encrypted("enc", true, false)]
    #[case::plain("plain", true, true)]
    #[case::not_copied("plain", false, false)]
    fn images(#[case] storage: &str, #[case] copy: bool, #[case] flagged: bool) {
        let images = if copy {
            "  images:\n    internalRegistry: copy\n"
        } else {
            "  images:\n    internalRegistry: skip\n"
        };
        let docs = format!(
            "{}---\n{}---\n{}",
            storage_location("enc", true),
            storage_location("plain", false),
            policy(
                storage,
                &format!("  exclude:\n    resources: [secrets]\n{images}")
            )
        );
        let found = run(unencrypted_images, &docs);
        assert_eq!(found.len(), usize::from(flagged), "{found:?}");
        assert!(found.iter().all(|f| f.0 == Code::UnencryptedImages));
    }

    #[rstest]
    #[case::encrypted("enc", "", false)]
    #[case::everything("plain", "", true)]
    #[case::star("plain", "  include:\n    resources: ['*']\n", true)]
    #[case::secrets("plain", "  include:\n    resources: [secrets, configmaps]\n", true)]
    #[case::no_secrets(
        "plain",
        "  include:\n    resources: [configmaps, deployments.apps]\n",
        false
    )]
    #[case::excluded("plain", "  exclude:\n    resources: [secrets]\n", false)]
    #[case::other_group("plain", "  include:\n    resources: [secrets.example.com]\n", false)]
    fn unencrypted(#[case] storage: &str, #[case] filters: &str, #[case] flagged: bool) {
        let docs = format!(
            "{}---\n{}---\n{}",
            storage_location("enc", true),
            storage_location("plain", false),
            policy(storage, filters)
        );
        let found = run(unencrypted_secrets, &docs);
        let expect: Vec<(Code, usize, usize)> = if flagged {
            vec![(Code::UnencryptedSecrets, 27, 12)]
        } else {
            vec![]
        };
        assert_eq!(
            found.iter().map(|f| (f.0, f.1, f.2)).collect::<Vec<_>>(),
            expect
        );
    }
}
