//! Renderers of plans and of pull-request changes: text for terminals,
//! Markdown for pull-request comments (summary first, details folded,
//! destructive actions never folded).

use std::fmt::Write as _;

use lifeboat_core::Severity;
use lifeboat_core::VolumeMethod;
use lifeboat_core::plan::{
    Action, Change, ChangeType, Plan, PolicyFacts, RestoreFactState, RestoreFacts, RpoStatus,
};
use lifeboat_core::volumes::VolumeDecision;

use super::LintReport;

/// Counts of a plan's actions, as a phrase: "2 backups, 3 prunes".
pub fn counts(actions: &[Action]) -> String {
    let mut backups = 0;
    let mut restores = 0;
    let mut prunes = 0;
    let mut other = 0;
    for a in actions {
        match a {
            Action::Backup { .. } => backups += 1,
            Action::Restore { .. } => restores += 1,
            Action::Prune { .. } | Action::CleanupIncomplete { .. } => prunes += 1,
            _ => other += 1,
        }
    }
    let mut parts = Vec::new();
    let mut push = |n: usize, one: &str, many: &str| {
        if n > 0 {
            parts.push(format!("{n} {}", if n == 1 { one } else { many }));
        }
    };
    push(backups, "backup", "backups");
    push(restores, "restore", "restores");
    push(prunes, "deletion", "deletions");
    push(other, "bookkeeping action", "bookkeeping actions");
    if parts.is_empty() {
        "nothing to do".into()
    } else {
        parts.join(", ")
    }
}

fn marker(a: &Action) -> &'static str {
    match a {
        Action::Backup { .. } => "+",
        Action::Restore { .. } => "↺",
        a if a.is_destructive() => "-",
        _ => "~",
    }
}

fn rpo(f: &PolicyFacts) -> String {
    let objective = f.rpo.map(|r| r.to_string()).unwrap_or_default();
    match &f.rpo_status {
        RpoStatus::NotSet => "no RPO".into(),
        RpoStatus::NoBackup => format!("RPO {objective}: no successful backup yet"),
        RpoStatus::Met { age } => format!(
            "RPO {objective} met (last success {} ago)",
            lifeboat_controller::status::human(*age)
        ),
        RpoStatus::Violated { age, by } => format!(
            "RPO {objective} VIOLATED by {} (last success {} ago)",
            lifeboat_controller::status::human(*by),
            lifeboat_controller::status::human(*age)
        ),
    }
}

fn policy_line(f: &PolicyFacts) -> String {
    let mut s = format!(
        "{}: {}, {} retained{}{}",
        f.policy,
        rpo(f),
        f.retained,
        f.next_slot
            .map(|t| format!(", next slot {t}"))
            .unwrap_or_default(),
        if f.suspended { ", SUSPENDED" } else { "" },
    );
    for p in &f.problems {
        let _ = write!(s, "; {p}");
    }
    s
}

/// "2 protected, 1 skipped, 1 NOT protected".
fn volume_counts(decisions: &[VolumeDecision]) -> String {
    let protected = decisions.iter().filter(|d| d.is_protected()).count();
    let skipped = decisions
        .iter()
        .filter(|d| d.method == Some(VolumeMethod::Skip))
        .count();
    let unprotected = decisions.iter().filter(|d| d.method.is_none()).count();
    if decisions.is_empty() {
        return "no bound claims selected".into();
    }
    let mut parts = vec![format!("{protected} protected")];
    if skipped > 0 {
        parts.push(format!("{skipped} skipped"));
    }
    if unprotected > 0 {
        parts.push(format!("{unprotected} NOT protected"));
    }
    parts.join(", ")
}

/// How one claim is protected: "snapshotMove, class `x`" or "NOT PROTECTED".
fn volume_how(d: &VolumeDecision) -> String {
    match d.method {
        None => "NOT PROTECTED".into(),
        Some(m @ (VolumeMethod::SnapshotMove | VolumeMethod::Snapshot)) => format!(
            "{m}, class `{}`",
            d.snapshot_class.as_deref().unwrap_or("?")
        ),
        Some(m @ VolumeMethod::FileSystem) => format!(
            "{m} through pod `{}` on node `{}`",
            d.pod.as_deref().unwrap_or("?"),
            d.node.as_deref().unwrap_or("?")
        ),
        Some(m @ VolumeMethod::Skip) => m.to_string(),
    }
}

fn volume_line(d: &VolumeDecision) -> String {
    format!(
        "{}/{}: {} ({}){}",
        d.namespace,
        d.pvc,
        volume_how(d),
        d.decided_by,
        d.warning
            .as_deref()
            .map(|w| format!(": {w}"))
            .unwrap_or_default()
    )
}

/// The plan for a terminal.
pub fn text(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "plan for cluster `{}` at {}: {}",
        plan.cluster,
        lifeboat_controller::status::secs(plan.now),
        counts(&plan.actions)
    );
    for a in &plan.actions {
        let _ = writeln!(out, "  {} {}", marker(a), a.summary());
    }
    if !plan.policies.is_empty() {
        let _ = writeln!(out, "policies:");
        for f in &plan.policies {
            let _ = writeln!(out, "  {}", policy_line(f));
        }
        for f in &plan.policies {
            for h in &f.backup_hooks {
                let _ = writeln!(out, "  {}", backup_hook_line(&f.policy, h));
            }
        }
        let mut evaluated = false;
        for f in &plan.policies {
            let Some(decisions) = &f.volumes else {
                continue;
            };
            evaluated = true;
            let _ = writeln!(
                out,
                "volumes of `{}`: {}",
                f.policy,
                volume_counts(decisions)
            );
            for d in decisions {
                let _ = writeln!(out, "  {}", volume_line(d));
            }
            for h in f.hooks.iter().flatten() {
                for line in hook_lines(h, decisions) {
                    let _ = writeln!(out, "  {line}");
                }
            }
        }
        if !evaluated {
            let _ = writeln!(
                out,
                "volumes: not evaluated (no view of the cluster; pass --kubeconfig FILE to see which claims are protected)"
            );
        }
    }
    let restores: Vec<_> = plan
        .restores
        .iter()
        .filter(|r| r.state != RestoreFactState::NotForThisCluster)
        .collect();
    if !restores.is_empty() {
        let _ = writeln!(out, "restores:");
        for r in restores {
            let _ = writeln!(out, "  {}: {:?}: {}", r.request, r.state, r.message);
            for line in prerequisite_lines(r) {
                let _ = writeln!(out, "    {line}");
            }
        }
    }
    for o in &plan.orphans {
        let _ = writeln!(
            out,
            "orphaned: {} backup(s) of deleted policy `{}` in `{}`{}",
            o.backups,
            o.policy,
            o.location,
            o.prune_at
                .map(|t| format!(", pruned after {t}"))
                .unwrap_or_default()
        );
    }
    for n in &plan.notes {
        let _ = writeln!(out, "note: {n}");
    }
    out
}

/// What a restore that runs now lacks on the target, one line each (none
/// for a restore that does not run now).
fn prerequisite_lines(r: &RestoreFacts) -> Vec<String> {
    if r.state != RestoreFactState::Pending {
        return Vec::new();
    }
    match &r.missing_prerequisites {
        None => vec![
            "prerequisites: not evaluated (no view of the cluster; pass --kubeconfig FILE to check the CRDs and operators the backup needs)"
                .into(),
        ],
        Some(missing) => missing
            .iter()
            .map(|m| format!("warning: missing prerequisite {}", m.message))
            .collect(),
    }
}

/// A backup-level hook of `policy`, in one line.
fn backup_hook_line(policy: &str, h: &lifeboat_core::hooks::level::LevelHook) -> String {
    use lifeboat_core::hooks::level::{LevelPhase, LevelRun};
    let when = match h.phase {
        LevelPhase::Before => "before anything is read",
        LevelPhase::After => "after the volume data, also when the backup failed",
    };
    let how = match &h.run {
        LevelRun::Job {
            image,
            service_account_name,
            ..
        } => format!(
            "a Job in {} from {image} as ServiceAccount {service_account_name}",
            h.namespace
        ),
        LevelRun::Exec {
            pod: Some(pod),
            container,
            ..
        } => format!(
            "in pod {}/{pod} container {}",
            h.namespace,
            container.as_deref().unwrap_or("?")
        ),
        LevelRun::Exec { pod: None, .. } => {
            format!("in a pod of {} chosen when the backup runs", h.namespace)
        }
    };
    let mut line = format!(
        "`{policy}` {} hook {}: {:?}, {how}, {when} (timeout {}, onError {})",
        h.phase,
        h.name,
        h.command(),
        h.timeout,
        h.on_error
    );
    if let Some(why) = &h.invalid {
        line.push_str(&format!("; cannot run: {why}"));
    }
    line
}

/// The hooks a backup runs in one pod, one line each.
fn hook_lines(
    h: &lifeboat_core::hooks::PodHooks,
    decisions: &[lifeboat_core::volumes::VolumeDecision],
) -> Vec<String> {
    let pod = format!("{}/{}", h.namespace, h.pod);
    let file_system = h.claims.iter().any(|c| {
        decisions.iter().any(|d| {
            d.namespace == h.namespace
                && &d.pvc == c
                && d.method == Some(lifeboat_core::model::VolumeMethod::FileSystem)
        })
    });
    let mut lines: Vec<String> = h
        .pre
        .iter()
        .chain(&h.post)
        .map(|x| {
            let when = match (x.phase, file_system) {
                (lifeboat_core::hooks::HookPhase::Pre, _) => "before its claims' snapshots",
                (_, false) => "once every snapshot has its handle",
                (_, true) => "after the file-system copy (fileSystem: the application stays frozen while it is copied)",
            };
            format!(
                "hook {} {} in pod {pod} container {}: {:?}, {when} (timeout {}, onError {})",
                x.name, x.phase, x.container, x.command, x.timeout, x.on_error
            )
        })
        .collect();
    for why in &h.invalid {
        lines.push(format!(
            "hook in pod {pod} cannot run: {why} (its claims would not be snapshotted)"
        ));
    }
    lines
}

fn value(v: &Option<serde_json::Value>) -> String {
    match v {
        None => "—".into(),
        Some(serde_json::Value::String(s)) => format!("`{s}`"),
        Some(v) => format!("`{v}`"),
    }
}

/// The change from `--base` to `--ref`, for a terminal.
pub fn change_text(change: &Change, head: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", summary(change));
    if !change.newly_pruned.is_empty() {
        let _ = writeln!(out, "DESTRUCTIVE: backups this change prunes now:");
        for a in &change.newly_pruned {
            let _ = writeln!(out, "  - {}", a.summary());
        }
    }
    if !change.trust_changes.is_empty() {
        let _ = writeln!(out, "SECURITY: who may sign restorable backups changes:");
        for t in &change.trust_changes {
            let _ = writeln!(out, "  - {t}");
        }
    }
    for d in &change.documents {
        let _ = writeln!(out, "{:?} {} `{}`", d.change, d.kind, d.name);
        for f in &d.fields {
            let _ = writeln!(
                out,
                "    {}: {} → {}",
                f.path,
                value(&f.before),
                value(&f.after)
            );
        }
    }
    for a in &change.new_restores {
        let _ = writeln!(out, "starts: {}", a.summary());
    }
    for a in &change.new_backups {
        let _ = writeln!(out, "starts: {}", a.summary());
    }
    for r in &change.rpo_now_unmeetable {
        let _ = writeln!(
            out,
            "RPO unmeetable: `{}` has a gap of {} between slots, more than its RPO {}",
            r.policy,
            lifeboat_controller::status::human(r.largest_gap),
            r.rpo
        );
    }
    for a in &change.no_longer_pruned {
        let _ = writeln!(out, "no longer pruned: {}", a.summary());
    }
    let _ = writeln!(out, "\nthe plan at the new revision:");
    out.push_str(&text(head));
    out
}

/// One line: what a change does.
pub fn summary(change: &Change) -> String {
    if change.is_empty() {
        return "no DR changes".into();
    }
    let mut parts = Vec::new();
    let docs = change.documents.len();
    if docs > 0 {
        parts.push(format!(
            "{docs} document{} changed",
            if docs == 1 { "" } else { "s" }
        ));
    }
    if !change.newly_pruned.is_empty() {
        parts.push(format!("⚠️ {} backup(s) pruned", change.newly_pruned.len()));
    }
    if !change.new_restores.is_empty() {
        parts.push(format!("{} restore(s) start", change.new_restores.len()));
    }
    if !change.new_backups.is_empty() {
        parts.push(format!("{} backup(s) start", change.new_backups.len()));
    }
    if !change.rpo_now_unmeetable.is_empty() {
        parts.push(format!(
            "❌ {} RPO(s) unmeetable",
            change.rpo_now_unmeetable.len()
        ));
    }
    if !change.trust_changes.is_empty() {
        parts.push(format!(
            "🔑 {} signing trust change(s)",
            change.trust_changes.len()
        ));
    }
    parts.join(", ")
}

fn details(out: &mut String, title: &str, body: &str) {
    let _ = writeln!(
        out,
        "<details><summary>{title}</summary>\n\n{body}\n</details>\n"
    );
}

fn plan_markdown_body(plan: &Plan) -> String {
    let mut body = String::new();
    if plan.actions.is_empty() {
        body.push_str("Nothing to do.\n");
    } else {
        for a in &plan.actions {
            let _ = writeln!(body, "- {} {}", marker(a), a.summary());
        }
    }
    if !plan.policies.is_empty() {
        let _ = writeln!(body, "\n| Policy | RPO | Retained | Next slot | Problems |");
        let _ = writeln!(body, "|---|---|---|---|---|");
        for f in &plan.policies {
            let _ = writeln!(
                body,
                "| `{}` | {} | {} | {} | {} |",
                f.policy,
                rpo(f),
                f.retained,
                f.next_slot
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "—".into()),
                f.problems.join("; ").replace('|', "\\|")
            );
        }
    }
    let volumes: Vec<_> = plan
        .policies
        .iter()
        .filter_map(|f| f.volumes.as_ref().map(|v| (f, v)))
        .collect();
    if !volumes.is_empty() {
        let _ = writeln!(
            body,
            "\n| Policy | Claim | Volume data | Decided by | Why |"
        );
        let _ = writeln!(body, "|---|---|---|---|---|");
        for (f, decisions) in volumes {
            for d in decisions {
                let _ = writeln!(
                    body,
                    "| `{}` | `{}/{}` | {} | {} | {} |",
                    f.policy,
                    d.namespace,
                    d.pvc,
                    volume_how(d),
                    d.decided_by,
                    d.warning.as_deref().unwrap_or("").replace('|', "\\|")
                );
            }
        }
    }
    let missing: Vec<_> = plan
        .restores
        .iter()
        .filter(|r| r.state == RestoreFactState::Pending)
        .flat_map(|r| {
            r.missing_prerequisites
                .iter()
                .flatten()
                .map(move |m| (r, m))
        })
        .collect();
    if !missing.is_empty() {
        let _ = writeln!(body, "\n**Prerequisites missing on the target:**\n");
        for (r, m) in missing {
            let _ = writeln!(body, "- ⚠️ restore `{}`: {}", r.request, m.message);
        }
    }
    for n in &plan.notes {
        let _ = writeln!(body, "\n> {n}");
    }
    body
}

/// The plan as a pull-request comment.
pub fn markdown(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "**lifeboat plan for `{}`: {}**\n",
        plan.cluster,
        counts(&plan.actions)
    );
    let destructive: Vec<_> = plan.actions.iter().filter(|a| a.is_destructive()).collect();
    if !destructive.is_empty() {
        let _ = writeln!(out, "### ⚠️ Destructive\n");
        for a in destructive {
            let _ = writeln!(out, "- {}", a.summary());
        }
        out.push('\n');
    }
    details(&mut out, "Plan details", &plan_markdown_body(plan));
    out
}

/// The change as a pull-request comment.
pub fn change_markdown(change: &Change, head: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "**lifeboat: {} on `{}`**\n",
        summary(change),
        head.cluster
    );
    if !change.newly_pruned.is_empty() {
        let _ = writeln!(
            out,
            "### ⚠️ Destructive: {} backup(s) this change prunes now\n",
            change.newly_pruned.len()
        );
        for a in &change.newly_pruned {
            let _ = writeln!(out, "- {}", a.summary());
        }
        out.push('\n');
    }
    if !change.trust_changes.is_empty() {
        let _ = writeln!(
            out,
            "### 🔑 Security: who may sign restorable backups changes\n"
        );
        for t in &change.trust_changes {
            let _ = writeln!(out, "- {t}");
        }
        out.push('\n');
    }
    if !change.rpo_now_unmeetable.is_empty() {
        let _ = writeln!(out, "### ❌ RPOs this change makes unmeetable\n");
        for r in &change.rpo_now_unmeetable {
            let _ = writeln!(
                out,
                "- `{}`: slots up to {} apart, RPO {}",
                r.policy,
                lifeboat_controller::status::human(r.largest_gap),
                r.rpo
            );
        }
        out.push('\n');
    }
    if !change.new_restores.is_empty() {
        let _ = writeln!(out, "### Restores this change starts\n");
        for a in &change.new_restores {
            let _ = writeln!(out, "- {}", a.summary());
        }
        out.push('\n');
    }
    if !change.documents.is_empty() {
        let mut body = String::new();
        for d in &change.documents {
            let verb = match d.change {
                ChangeType::Added => "added",
                ChangeType::Removed => "removed",
                ChangeType::Modified => "modified",
            };
            let _ = writeln!(body, "**{} `{}`** {verb}\n", d.kind, d.name);
            if !d.fields.is_empty() {
                let _ = writeln!(body, "| Field | Before | After |\n|---|---|---|");
                for f in &d.fields {
                    let _ = writeln!(
                        body,
                        "| `{}` | {} | {} |",
                        f.path,
                        value(&f.before).replace('|', "\\|"),
                        value(&f.after).replace('|', "\\|")
                    );
                }
                body.push('\n');
            }
        }
        details(
            &mut out,
            &format!("{} document(s) changed", change.documents.len()),
            &body,
        );
    }
    if !change.new_backups.is_empty() || !change.no_longer_pruned.is_empty() {
        let mut body = String::new();
        for a in &change.new_backups {
            let _ = writeln!(body, "- starts: {}", a.summary());
        }
        for a in &change.no_longer_pruned {
            let _ = writeln!(body, "- no longer pruned: {}", a.summary());
        }
        details(&mut out, "Other consequences", &body);
    }
    details(
        &mut out,
        &format!("Plan at the new revision: {}", counts(&head.actions)),
        &plan_markdown_body(head),
    );
    out
}

/// A revision that does not validate, and what a controller does instead.
#[derive(Debug)]
pub struct Invalid<'a> {
    /// The revision planned.
    pub revision: &'a str,
    /// True for a change (`--base`), false for a revision on its own.
    pub change: bool,
    pub report: &'a LintReport,
    pub cluster: Option<&'a str>,
    /// The revision a controller keeps acting on: (short SHA, label).
    pub acting_on: Option<(&'a str, &'a str)>,
    /// The plan of that revision.
    pub plan: Option<&'a Plan>,
}

/// "❌ this change does not validate: 2 errors; a controller keeps acting on
/// 0123456789ab".
pub fn invalid_summary(v: &Invalid<'_>) -> String {
    let errors = v.report.count(Severity::Error);
    let what = if v.change { "change" } else { "revision" };
    let fallback = match v.acting_on {
        Some((sha, _)) => format!("a controller keeps acting on {sha}"),
        None => "no earlier revision validates, so a controller has nothing to act on".into(),
    };
    format!(
        "❌ this {what} does not validate: {errors} error{}; {fallback}",
        if errors == 1 { "" } else { "s" }
    )
}

/// `file:line:column` of a diagnostic, as far as it is known.
fn location(d: &lifeboat_core::Diagnostic) -> String {
    match (&d.file, d.span) {
        (Some(f), Some(s)) => format!("{f}:{}:{}", s.line, s.column),
        (Some(f), None) => f.clone(),
        (None, _) => "(no file)".into(),
    }
}

/// An invalid revision for a terminal: the diagnostics with code frames,
/// the summary, then the plan a controller keeps acting on.
pub fn invalid_text(v: &Invalid<'_>) -> String {
    let mut out = super::human(v.report, false);
    let _ = writeln!(out, "\n{}", invalid_summary(v));
    if let (Some((_, label)), Some(plan)) = (v.acting_on, v.plan) {
        let _ = writeln!(out, "\nthe plan at the last valid revision {label}:");
        out.push_str(&text(plan));
    }
    out
}

/// An invalid revision as a pull-request comment: the summary, every
/// diagnostic with its place and rule, then the plan a controller keeps
/// acting on (folded).
pub fn invalid_markdown(v: &Invalid<'_>) -> String {
    let mut out = String::new();
    let on = v.cluster.map(|c| format!(" on `{c}`")).unwrap_or_default();
    let _ = writeln!(out, "**lifeboat{on}: {}**\n", invalid_summary(v));
    let _ = writeln!(
        out,
        "### ❌ Diagnostics at {}: {}\n",
        v.revision,
        v.report.summary()
    );
    for d in &v.report.diagnostics {
        let icon = match d.severity {
            Severity::Error => "❌",
            Severity::Warning => "⚠️",
            Severity::Info => "ℹ️",
        };
        let _ = writeln!(
            out,
            "- {icon} `{}` [{} {}]({}): {}",
            location(d),
            d.code.id(),
            d.code.name(),
            super::docs_url(d.code),
            d.message
        );
        if let Some(help) = &d.help {
            let _ = writeln!(out, "  help: {help}");
        }
    }
    out.push('\n');
    details(
        &mut out,
        "Code frames",
        &format!("```text\n{}```", super::human(v.report, false)),
    );
    match (v.acting_on, v.plan) {
        (Some((_, label)), Some(plan)) => details(
            &mut out,
            &format!(
                "Plan at the last valid revision {label}: {}",
                counts(&plan.actions)
            ),
            &plan_markdown_body(plan),
        ),
        (Some((_, label)), None) => {
            let _ = writeln!(
                out,
                "> The last valid revision is {label}; name the cluster (`--cluster`) to see its plan."
            );
        }
        (None, _) => {}
    }
    out
}
