//! Prerequisites of a backup: what the target cluster must provide before
//! the backup's objects can be restored there (the CRDs of its custom
//! resources, the operators that were installed through OLM), and which
//! of them a target lacks. A pure decision over observed state, shared by
//! `lifeboat plan` (before anything is applied, from the planning
//! cluster's inventory) and the restore itself (dry run or not, from the
//! target it is about to write to), so both say the same thing.
//!
//! ```text
//! manifest.prerequisites ─┐
//! Provided (target) ──────┼─▶ missing ─▶ Vec<Missing>  (in the backup's order)
//! CRDs the restore makes ─┘
//! ```
//!
//! - A **CRD** (`<plural>.<group>`) is missing when the target does not
//!   serve it and the restore does not create it (the backup holds the
//!   CRD, but a restore of some namespaces leaves cluster objects out).
//! - An **operator** (an OLM package) is missing when no Subscription of
//!   the target subscribes to its package, or the target has no OLM at all
//!   (`operators.coreos.com` not served). A Subscription in another
//!   namespace counts: the package is installed, whichever namespace its
//!   OperatorGroup watches.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The API group of OLM (Subscriptions, ClusterServiceVersions, …).
pub const OLM_GROUP: &str = "operators.coreos.com";

/// Something a backup's objects need on the target that the backup itself
/// does not restore (the manifest's `prerequisites`, as planning sees it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Prerequisite {
    pub kind: PrerequisiteKind,
    /// A CRD's name (`<plural>.<group>`) or an operator's package name.
    pub name: String,
    /// Where the operator's Subscription was (operators only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// For people: channel, catalog source and installed CSV of an operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The kind of a [`Prerequisite`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PrerequisiteKind {
    /// A CustomResourceDefinition the target must serve.
    CustomResourceDefinition,
    /// An operator installed through OLM (a Subscription to a package).
    Operator,
}

impl Prerequisite {
    /// The API group of a CRD prerequisite (`None` for operators and
    /// names without a group).
    pub fn crd_group(&self) -> Option<&str> {
        match self.kind {
            PrerequisiteKind::CustomResourceDefinition => self.name.split_once('.').map(|(_, g)| g),
            PrerequisiteKind::Operator => None,
        }
    }
}

impl fmt::Display for Prerequisite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            PrerequisiteKind::CustomResourceDefinition => {
                write!(f, "CustomResourceDefinition {}", self.name)
            }
            PrerequisiteKind::Operator => {
                write!(f, "operator {}", self.name)?;
                if let Some(ns) = &self.namespace {
                    write!(f, " (Subscription in {ns})")?;
                }
                Ok(())
            }
        }?;
        if let Some(d) = &self.detail {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

/// What a target cluster provides, as far as some prerequisites ask
/// (observed state: the caller looked at the API groups of the CRDs it was
/// asked about, and at OLM).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Provided {
    /// The resources the target serves among the groups looked at,
    /// `<plural>.<group>`.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub resources: BTreeSet<String>,
    /// OLM on the target.
    pub olm: Olm,
}

/// OLM on a target cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "state",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Olm {
    /// `operators.coreos.com` is not served (or was not looked at: no
    /// operator was asked about).
    #[default]
    NotInstalled,
    /// The packages some Subscription of the target subscribes to.
    Installed { packages: BTreeSet<String> },
    /// The Subscriptions could not be listed (the error).
    Unreadable { error: String },
}

/// Why a prerequisite is missing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all_fields = "camelCase")]
pub enum MissingReason {
    /// The target does not serve the CRD and the restore does not create it.
    NotServed,
    /// The target has no OLM.
    NoOlm,
    /// No Subscription of the target subscribes to the package.
    NotSubscribed,
    /// The target's Subscriptions could not be listed.
    Unknown { error: String },
}

/// A prerequisite the target lacks, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Missing {
    #[serde(flatten)]
    pub prerequisite: Prerequisite,
    pub reason: MissingReason,
    /// [`Missing`]'s text: what is missing and what to install.
    pub message: String,
}

impl Missing {
    fn new(prerequisite: &Prerequisite, reason: MissingReason) -> Missing {
        let advice = match &reason {
            MissingReason::NotServed => "the target does not serve it and this restore does not \
                 create it; install the CRD (or the operator that owns it) first"
                .to_string(),
            MissingReason::NoOlm => format!(
                "OLM ({OLM_GROUP}) is not installed on the target; install OLM and the operator \
                 first"
            ),
            MissingReason::NotSubscribed => {
                "no Subscription to it on the target; install the operator through OLM first"
                    .to_string()
            }
            MissingReason::Unknown { error } => format!(
                "could not list the target's Subscriptions ({error}); check that the operator is \
                 installed"
            ),
        };
        Missing {
            message: format!("{prerequisite}: {advice}"),
            prerequisite: prerequisite.clone(),
            reason,
        }
    }
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The API groups to look at on a target to decide about `prerequisites`
/// (their CRDs' groups, and OLM's when an operator is asked about).
pub fn groups<'a>(prerequisites: impl IntoIterator<Item = &'a Prerequisite>) -> BTreeSet<String> {
    let mut groups = BTreeSet::new();
    for p in prerequisites {
        match p.kind {
            PrerequisiteKind::CustomResourceDefinition => {
                if let Some(g) = p.crd_group() {
                    groups.insert(g.to_string());
                }
            }
            PrerequisiteKind::Operator => {
                groups.insert(OLM_GROUP.to_string());
            }
        }
    }
    groups
}

/// The CRD resource, `customresourcedefinitions` of this group.
pub const CRD_GROUP: &str = "apiextensions.k8s.io";

/// Whether a RestoreRequest restores the CRDs its backup holds: when it
/// restores cluster-scoped `customresourcedefinitions` wholesale (a restore
/// of some namespaces leaves them out, see [`crate::select::Selection::cluster_scoped`]),
/// not only single claims, and without an include label selector (the
/// plan does not see the CRDs' labels; a CRD is then counted as not
/// restored, so the plan warns rather than promises).
pub fn restores_crds(spec: &crate::model::RestoreRequestSpec) -> bool {
    let claims_only = !spec.claims.is_empty() && spec.include == crate::model::Include::default();
    !claims_only
        && spec.include.label_selector.is_none()
        && crate::select::Selection::new(&spec.include, &spec.exclude)
            .is_ok_and(|s| s.cluster_scoped("customresourcedefinitions", CRD_GROUP))
}

/// The prerequisites to look at on `cluster` before planning: those of
/// every backup a RestoreRequest into it may restore (the backups of its
/// source policy and cluster in the policy's location) that has no
/// finished record yet, each once.
pub fn asked(
    set: &crate::load::PolicySet,
    observed: &crate::plan::Observed,
    cluster: &str,
) -> Vec<Prerequisite> {
    let done: BTreeSet<&str> = observed
        .restores
        .iter()
        .filter(|r| r.phase != crate::plan::RestoreState::InProgress)
        .map(|r| r.request.as_str())
        .collect();
    let sources: BTreeSet<(&str, &str, &str)> = set
        .restores
        .iter()
        .map(|r| &r.doc)
        .filter(|r| r.spec.target.cluster == cluster && !done.contains(r.metadata.name.as_str()))
        .filter_map(|r| {
            // A Velero source (`source.location`) records no prerequisites.
            let name = r.spec.source.policy.as_deref()?;
            let policy = set.policy(name)?;
            Some((
                policy.doc.spec.storage.as_str(),
                r.spec.source.cluster.as_deref()?,
                name,
            ))
        })
        .collect();
    let asked: BTreeSet<&Prerequisite> = observed
        .backups
        .iter()
        .filter(|b| sources.contains(&(b.location.as_str(), b.cluster.as_str(), b.policy.as_str())))
        .flat_map(|b| &b.prerequisites)
        .collect();
    asked.into_iter().cloned().collect()
}

/// The prerequisites the target does not provide, in their order:
/// CRDs it does not serve unless `restored` says the restore creates them
/// (by CRD name), operators without a Subscription to their package.
pub fn missing(
    prerequisites: &[Prerequisite],
    provided: &Provided,
    restored: impl Fn(&str) -> bool,
) -> Vec<Missing> {
    let mut out = Vec::new();
    for p in prerequisites {
        let reason = match p.kind {
            PrerequisiteKind::CustomResourceDefinition => {
                // A name without a group is no CRD; nothing to check.
                if p.crd_group().is_none()
                    || provided.resources.contains(&p.name)
                    || restored(&p.name)
                {
                    continue;
                }
                MissingReason::NotServed
            }
            PrerequisiteKind::Operator => match &provided.olm {
                Olm::Installed { packages } if packages.contains(&p.name) => continue,
                Olm::Installed { .. } => MissingReason::NotSubscribed,
                Olm::NotInstalled => MissingReason::NoOlm,
                Olm::Unreadable { error } => MissingReason::Unknown {
                    error: error.clone(),
                },
            },
        };
        out.push(Missing::new(p, reason));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd(name: &str) -> Prerequisite {
        Prerequisite {
            kind: PrerequisiteKind::CustomResourceDefinition,
            name: name.into(),
            namespace: None,
            detail: None,
        }
    }

    fn operator(name: &str) -> Prerequisite {
        Prerequisite {
            kind: PrerequisiteKind::Operator,
            name: name.into(),
            namespace: Some("shop".into()),
            detail: Some("channel stable".into()),
        }
    }

    fn installed(packages: &[&str]) -> Olm {
        Olm::Installed {
            packages: packages.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn served_or_restored_crds_are_not_missing() {
        let provided = Provided {
            resources: ["widgets.example.com".to_string()].into(),
            olm: Olm::NotInstalled,
        };
        let prereqs = [
            crd("widgets.example.com"),
            crd("gadgets.example.com"),
            crd("sprockets.example.com"),
        ];
        let missing = missing(&prereqs, &provided, |n| n == "sprockets.example.com");
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].prerequisite.name, "gadgets.example.com");
        assert_eq!(missing[0].reason, MissingReason::NotServed);
        assert!(
            missing[0].message.starts_with(
                "CustomResourceDefinition gadgets.example.com: the target does not serve it"
            ),
            "{}",
            missing[0].message
        );
        assert!(missing[0].message.contains("install the CRD"));
        assert!(!missing[0].message.contains("  "), "{}", missing[0].message);
    }

    #[test]
    fn operators_need_a_subscription_to_their_package() {
        let p = [operator("etcd")];
        let none = |_: &str| false;
        let of = |olm: Olm| {
            missing(
                &p,
                &Provided {
                    resources: BTreeSet::new(),
                    olm,
                },
                none,
            )
        };
        assert!(of(installed(&["etcd"])).is_empty());
        assert_eq!(
            of(installed(&["redis"]))[0].reason,
            MissingReason::NotSubscribed
        );
        assert_eq!(of(Olm::NotInstalled)[0].reason, MissingReason::NoOlm);
        let unknown = of(Olm::Unreadable {
            error: "forbidden".into(),
        });
        assert_eq!(
            unknown[0].reason,
            MissingReason::Unknown {
                error: "forbidden".into()
            }
        );
        assert_eq!(
            of(installed(&[]))[0].message,
            "operator etcd (Subscription in shop): channel stable: no Subscription to it on the \
             target; install the operator through OLM first"
        );
    }

    #[test]
    fn groups_are_the_crds_groups_and_olm_for_operators() {
        assert_eq!(
            groups(&[crd("widgets.example.com"), crd("nogroup")]),
            ["example.com".to_string()].into()
        );
        assert_eq!(
            groups(&[operator("etcd"), crd("a.b.io")]),
            ["b.io".to_string(), OLM_GROUP.to_string()].into()
        );
    }
}
