//! What a change to the policy set does, for pull-request review
//! (`lifeboat plan --base`): the documents that changed, field by field, and
//! how the plan of the head revision differs from the plan of the base, with
//! the destructive part (backups newly pruned) on its own.

use std::collections::{BTreeMap, HashMap, HashSet};

use jiff::SignedDuration;
use serde::Serialize;
use serde_json::Value;

use super::{Action, Plan};
use crate::duration::Duration;
use crate::lint::{GAP_WINDOW, GAP_WINDOW_START};
use crate::load::PolicySet;
use crate::model::{BackupPolicy, Kind};
use crate::schedule::Schedule;

/// The difference between two revisions of a policy set and their plans.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// Documents added, removed or modified, by kind and name.
    pub documents: Vec<DocumentChange>,
    /// Prune actions in head not in base: the destructive section.
    pub newly_pruned: Vec<Action>,
    /// Restore actions in head not in base.
    pub new_restores: Vec<Action>,
    /// Backup actions in head not in base.
    pub new_backups: Vec<Action>,
    /// Policies whose schedule cannot meet their RPO in head but could in base
    /// (or that are new with that problem).
    pub rpo_now_unmeetable: Vec<RpoChange>,
    /// Prune actions in base that head no longer has.
    pub no_longer_pruned: Vec<Action>,
    /// Keys newly trusted, retired or revoked for signing backups: a
    /// security-relevant change (who may write restorable backups).
    pub trust_changes: Vec<TrustChange>,
}

/// A change to who is trusted to sign a cluster's backups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrustChange {
    /// Where the key is written: `Cluster/<name>` or `StorageLocation/<name>`.
    pub source: String,
    /// The cluster whose backups the key signs.
    pub cluster: String,
    /// The public key (`RW…`).
    pub key: String,
    pub change: TrustChangeType,
}

/// How trust in a key changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all_fields = "camelCase")]
pub enum TrustChangeType {
    /// The key is trusted now and was not before.
    Trusted,
    /// The key was removed: revoked, even for backups it signed before.
    Revoked,
    /// `trustedUntil` changed (retired, un-retired or moved).
    TrustedUntil {
        before: Option<jiff::Timestamp>,
        after: Option<jiff::Timestamp>,
    },
}

impl std::fmt::Display for TrustChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = format!(
            "key `{}` for cluster `{}` ({})",
            self.key, self.cluster, self.source
        );
        match &self.change {
            TrustChangeType::Trusted => {
                write!(f, "newly trusted: {key}: backups it signs are restored")
            }
            TrustChangeType::Revoked => write!(
                f,
                "revoked: {key}: backups it signed are no longer restored"
            ),
            TrustChangeType::TrustedUntil { before, after } => {
                let show = |t: &Option<jiff::Timestamp>| {
                    t.map_or_else(|| "never".to_string(), |t| t.to_string())
                };
                write!(
                    f,
                    "retirement changed: {key}: trustedUntil {} → {}",
                    show(before),
                    show(after)
                )
            }
        }
    }
}

impl Change {
    /// Whether the change changes nothing.
    pub fn is_empty(&self) -> bool {
        self.documents.is_empty()
            && self.newly_pruned.is_empty()
            && self.new_restores.is_empty()
            && self.new_backups.is_empty()
            && self.rpo_now_unmeetable.is_empty()
            && self.no_longer_pruned.is_empty()
            && self.trust_changes.is_empty()
    }
}

/// One document that differs.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentChange {
    pub kind: String,
    pub name: String,
    pub change: ChangeType,
    /// The fields that differ (empty for added and removed documents).
    pub fields: Vec<FieldChange>,
}

/// How a document differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ChangeType {
    Added,
    Removed,
    Modified,
}

/// One field that differs. Lists are compared whole.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldChange {
    /// For example `spec.retention.keepDaily`.
    pub path: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// A policy whose schedule leaves a gap longer than its RPO.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RpoChange {
    pub policy: String,
    pub rpo: Duration,
    /// The largest gap between two slots over lint's reference year (DST
    /// changes included), as lint's LB105 measures it.
    pub largest_gap: SignedDuration,
}

/// Compares two revisions of a policy set and the plans made from them (for
/// the same cluster, observations and time).
pub fn compare(
    base_set: &PolicySet,
    head_set: &PolicySet,
    base_plan: &Plan,
    head_plan: &Plan,
) -> Change {
    let (new_pruned, no_longer_pruned) = differ(base_plan, head_plan, |a| match a {
        Action::Prune {
            location,
            cluster,
            backup,
            ..
        } => Some((location, cluster, backup)),
        _ => None,
    });
    let (new_restores, _) = differ(base_plan, head_plan, |a| match a {
        Action::Restore {
            request,
            location,
            backup,
            ..
        } => Some((request, location, backup)),
        _ => None,
    });
    let (new_backups, _) = differ(base_plan, head_plan, |a| match a {
        Action::Backup {
            policy,
            location,
            name,
            ..
        } => Some((policy, location, name)),
        _ => None,
    });
    Change {
        documents: documents(base_set, head_set),
        newly_pruned: new_pruned,
        new_restores,
        new_backups,
        rpo_now_unmeetable: rpo_changes(base_set, head_set),
        no_longer_pruned,
        trust_changes: trust_changes(base_set, head_set),
    }
}

/// Every trusted key of a set: (source, cluster, key) → trustedUntil.
fn trusted(set: &PolicySet) -> BTreeMap<(String, String, String), Option<jiff::Timestamp>> {
    let mut out = BTreeMap::new();
    for c in &set.clusters {
        if let Some(key) = c
            .doc
            .spec
            .signing
            .as_ref()
            .and_then(|s| s.public_key.as_ref())
        {
            let name = &c.doc.metadata.name;
            out.entry((format!("Cluster/{name}"), name.clone(), key.0.clone()))
                .or_insert(None);
        }
    }
    for l in &set.storage_locations {
        let Some(signing) = &l.doc.spec.signing else {
            continue;
        };
        for k in &signing.trusted_keys {
            out.entry((
                format!("StorageLocation/{}", l.doc.metadata.name),
                k.cluster.clone(),
                k.key.0.clone(),
            ))
            .or_insert(k.trusted_until);
        }
    }
    out
}

fn trust_changes(base: &PolicySet, head: &PolicySet) -> Vec<TrustChange> {
    let before = trusted(base);
    let mut after = trusted(head);
    let mut out = Vec::new();
    let change = |(source, cluster, key): (String, String, String), change| TrustChange {
        source,
        cluster,
        key,
        change,
    };
    for (k, until) in before {
        match after.remove(&k) {
            None => out.push(change(k, TrustChangeType::Revoked)),
            Some(now) if now != until => out.push(change(
                k,
                TrustChangeType::TrustedUntil {
                    before: until,
                    after: now,
                },
            )),
            Some(_) => {}
        }
    }
    out.extend(
        after
            .into_keys()
            .map(|k| change(k, TrustChangeType::Trusted)),
    );
    out.sort_by(|a, b| (&a.source, &a.cluster, &a.key).cmp(&(&b.source, &b.cluster, &b.key)));
    out
}

/// The actions `key` picks out that are only in head, and those only in
/// base, identified by `key` (so a prune whose reason changed is the same
/// prune).
fn differ<'p>(
    base: &'p Plan,
    head: &'p Plan,
    key: impl Fn(&'p Action) -> Option<(&'p String, &'p String, &'p String)>,
) -> (Vec<Action>, Vec<Action>) {
    let keys = |plan: &'p Plan| -> HashSet<_> { plan.actions.iter().filter_map(&key).collect() };
    let (in_base, in_head) = (keys(base), keys(head));
    let only = |plan: &'p Plan, other: &HashSet<_>| -> Vec<Action> {
        plan.actions
            .iter()
            .filter(|a| key(a).is_some_and(|k| !other.contains(&k)))
            .cloned()
            .collect()
    };
    (only(head, &in_base), only(base, &in_head))
}

/// Every valid document of a set as JSON, by (kind, name); the first of a
/// duplicated name.
fn documents_of(set: &PolicySet) -> BTreeMap<(Kind, &str), Value> {
    fn add<'s, T: Serialize>(
        out: &mut BTreeMap<(Kind, &'s str), Value>,
        kind: Kind,
        name: &'s str,
        doc: &T,
    ) {
        out.entry((kind, name))
            .or_insert_with(|| serde_json::to_value(doc).unwrap_or(Value::Null));
    }
    let mut out = BTreeMap::new();
    for d in &set.storage_locations {
        add(
            &mut out,
            Kind::StorageLocation,
            &d.doc.metadata.name,
            &d.doc,
        );
    }
    for d in &set.clusters {
        add(&mut out, Kind::Cluster, &d.doc.metadata.name, &d.doc);
    }
    for d in &set.policies {
        add(&mut out, Kind::BackupPolicy, &d.doc.metadata.name, &d.doc);
    }
    for d in &set.restores {
        add(&mut out, Kind::RestoreRequest, &d.doc.metadata.name, &d.doc);
    }
    out
}

/// The documents that differ, compared as their typed values serialize (so
/// spelling out a default is no change).
fn documents(base: &PolicySet, head: &PolicySet) -> Vec<DocumentChange> {
    let before = documents_of(base);
    let mut after = documents_of(head);
    let mut out = Vec::new();
    for ((kind, name), b) in &before {
        let change = match after.remove(&(*kind, *name)) {
            None => DocumentChange {
                kind: kind.to_string(),
                name: name.to_string(),
                change: ChangeType::Removed,
                fields: Vec::new(),
            },
            Some(a) => {
                let mut fields = Vec::new();
                diff("", Some(b), Some(&a), &mut fields);
                if fields.is_empty() {
                    continue;
                }
                DocumentChange {
                    kind: kind.to_string(),
                    name: name.to_string(),
                    change: ChangeType::Modified,
                    fields,
                }
            }
        };
        out.push(change);
    }
    out.extend(after.into_keys().map(|(kind, name)| DocumentChange {
        kind: kind.to_string(),
        name: name.to_string(),
        change: ChangeType::Added,
        fields: Vec::new(),
    }));
    out.sort_by(|a, b| (&a.kind, &a.name).cmp(&(&b.kind, &b.name)));
    out
}

/// Appends the fields under `path` that differ between `before` and `after`.
fn diff(path: &str, before: Option<&Value>, after: Option<&Value>, out: &mut Vec<FieldChange>) {
    if let (Some(Value::Object(b)), Some(Value::Object(a))) = (before, after) {
        let join = |k: &str| {
            if path.is_empty() {
                k.to_string()
            } else {
                format!("{path}.{k}")
            }
        };
        for (k, bv) in b {
            diff(&join(k), Some(bv), a.get(k), out);
        }
        for (k, av) in a.iter().filter(|(k, _)| !b.contains_key(*k)) {
            diff(&join(k), None, Some(av), out);
        }
    } else if before != after {
        out.push(FieldChange {
            path: path.to_string(),
            before: before.cloned(),
            after: after.cloned(),
        });
    }
}

/// The largest gap of a policy's schedule over lint's reference year, when
/// the schedule is valid and the policy sets an RPO it exceeds.
fn unmeetable<'p>(
    policy: &'p BackupPolicy,
    gaps: &mut HashMap<(&'p str, &'p str), Option<SignedDuration>>,
) -> Option<(Duration, SignedDuration)> {
    let rpo = policy.spec.objectives.rpo?;
    let key = (policy.spec.schedule.as_str(), policy.spec.timezone.as_str());
    let gap = (*gaps.entry(key).or_insert_with(|| {
        let s = Schedule::parse(key.0, key.1).ok()?;
        Some(s.max_gap(GAP_WINDOW_START, GAP_WINDOW))
    }))?;
    (gap > rpo.to_signed()).then_some((rpo, gap))
}

fn rpo_changes(base: &PolicySet, head: &PolicySet) -> Vec<RpoChange> {
    let mut gaps = HashMap::new();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for p in &head.policies {
        let name = p.doc.metadata.name.as_str();
        if !seen.insert(name) {
            continue;
        }
        let Some((rpo, largest_gap)) = unmeetable(&p.doc, &mut gaps) else {
            continue;
        };
        let before = base
            .policy(name)
            .and_then(|b| unmeetable(&b.doc, &mut gaps));
        if before.is_none() {
            out.push(RpoChange {
                policy: name.to_string(),
                rpo,
                largest_gap,
            });
        }
    }
    out.sort_by(|a, b| a.policy.cmp(&b.policy));
    out
}
