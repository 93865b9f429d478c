//! Renderers of plans and of pull-request changes: text for terminals,
//! Markdown for pull-request comments (summary first, details folded,
//! destructive actions never folded).

use std::fmt::Write as _;

use lifeboat_core::plan::{
    Action, Change, ChangeType, Plan, PolicyFacts, RestoreFactState, RpoStatus,
};

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
