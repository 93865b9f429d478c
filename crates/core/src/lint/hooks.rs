//! Exec hooks of a BackupPolicy that cannot work as written: a command
//! that is one shell-like string without `shell: true` (LB123), a hook
//! timeout longer than the whole backup may take (LB124), and a hook whose
//! namespaces include none the policy backs up (LB125); the same for dump
//! hooks, and a dump hook whose location has no encryption recipients
//! (LB133); backup-level hooks whose Job would run in lifeboat's namespaces
//! (LB135) or that have neither or both of `job` and `exec` (LB136).

use super::{at_key, at_value, glob_matches, is_glob};
use crate::diagnostic::{Code, Diagnostic};
use crate::hooks::level::LIFEBOAT_NAMESPACES;
use crate::hooks::looks_like_shell;
use crate::load::{Loaded, PolicySet};
use crate::model::{HookCommand, default_backup_timeout};
use crate::select::Selection;

/// LB123, LB124, LB125, LB133, LB135, LB136 over every BackupPolicy with `hooks`.
pub fn hook_settings(set: &PolicySet) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for Loaded { doc, source } in &set.policies {
        let Some(hooks) = &doc.spec.hooks else {
            continue;
        };
        let backup = doc
            .spec
            .volumes
            .as_ref()
            .map_or_else(default_backup_timeout, |v| v.timeouts.backup);
        // A malformed pattern is LB114's finding.
        let selection = Selection::new(&doc.spec.include, &doc.spec.exclude).ok();
        for (phase, list) in [("before", &hooks.before), ("after", &hooks.after)] {
            for (i, h) in list.iter().enumerate() {
                level_hook(
                    &mut out,
                    source,
                    &format!("/spec/hooks/{phase}/{i}"),
                    h,
                    backup,
                );
            }
        }
        for (i, h) in hooks.pods.iter().enumerate() {
            let base = format!("/spec/hooks/pods/{i}");
            let mut lint = HookLint {
                out: &mut out,
                source,
                base: &base,
                what: format!("hook `{}`", h.name),
            };
            for (field, command) in [("pre", &h.pre), ("post", &h.post)] {
                lint.shell_string(
                    field,
                    command.as_ref(),
                    h.shell,
                    "`[fsfreeze, --freeze, /data]`",
                );
            }
            lint.timeout(h.timeout, backup);
            lint.namespaces(&h.namespaces, selection.as_ref(), doc);
        }
        let storage = &doc.spec.storage;
        let unencrypted = set
            .storage_location(storage)
            .is_some_and(|l| l.doc.spec.encryption.is_none());
        for (i, h) in hooks.dumps.iter().enumerate() {
            let base = format!("/spec/hooks/dumps/{i}");
            if unencrypted {
                out.push(at_key(
                    Code::DumpHookUnencrypted,
                    source,
                    &base,
                    format!(
                        "dump hook `{}` writes its command's output (a database dump) into storage location `{storage}`, which has no encryption recipients: it would be stored in plain text",
                        h.name
                    ),
                    format!(
                        "add `encryption.recipients` (age public keys) to StorageLocation `{storage}`, or remove the dump hook"
                    ),
                ));
            }
            let mut lint = HookLint {
                out: &mut out,
                source,
                base: &base,
                what: format!("dump hook `{}`", h.name),
            };
            lint.shell_string(
                "command",
                Some(&h.command),
                h.shell,
                "`[mysqldump, --all-databases]`",
            );
            lint.timeout(h.timeout, backup);
            lint.namespaces(&h.namespaces, selection.as_ref(), doc);
        }
    }
    out
}

/// The findings of one backup-level hook at `base`.
fn level_hook(
    out: &mut Vec<Diagnostic>,
    source: &crate::load::Source,
    base: &str,
    h: &crate::model::BackupHook,
    backup: crate::Duration,
) {
    let (command, shell, field) = match (&h.job, &h.exec) {
        (Some(j), None) => {
            if LIFEBOAT_NAMESPACES.contains(&j.namespace.as_str()) {
                out.push(at_value(
                    Code::HookJobInLifeboatNamespace,
                    source,
                    &format!("{base}/job/namespace"),
                    format!(
                        "hook `{}` would run its Job in `{}`, lifeboat's own namespace, where its pod could reach the storage credentials and identities",
                        h.name, j.namespace
                    ),
                    "run it in the workload's namespace, under a ServiceAccount of that namespace (`serviceAccountName`)",
                ));
            }
            (&j.command, j.shell, "job/command")
        }
        (None, Some(e)) => (&e.command, e.shell, "exec/command"),
        (None, None) | (Some(_), Some(_)) => {
            out.push(at_key(
                Code::BackupHookWithoutAction,
                source,
                base,
                format!(
                    "backup hook `{}` has {} of `job` and `exec`",
                    h.name,
                    if h.job.is_none() { "neither" } else { "both" }
                ),
                "give exactly one: `job` (an image and a command, run as a Job) or `exec` (a command in a selected pod)",
            ));
            return;
        }
    };
    let mut lint = HookLint {
        out,
        source,
        base,
        what: format!("backup hook `{}`", h.name),
    };
    lint.shell_string(
        field,
        Some(command),
        shell,
        "`[/bin/shopctl, maintenance, on]`",
    );
    lint.timeout(h.timeout(), backup);
}

/// The findings of one hook (`what` names it in messages: "hook `freeze`",
/// "dump hook `mysql`") at JSON pointer `base`.
struct HookLint<'a> {
    out: &'a mut Vec<Diagnostic>,
    source: &'a crate::load::Source,
    base: &'a str,
    what: String,
}

impl HookLint<'_> {
    /// LB123: `command` at `field` is one shell-like string without
    /// `shell: true`; `example` shows it as a list.
    fn shell_string(
        &mut self,
        field: &str,
        command: Option<&HookCommand>,
        shell: bool,
        example: &str,
    ) {
        if let Some(HookCommand::Line(line)) = command
            && !shell
            && looks_like_shell(line)
        {
            self.out.push(at_value(
                Code::HookShellStringWithoutShell,
                self.source,
                &format!("{}/{field}", self.base),
                format!(
                    "{} {field} `{line}` is one string without `shell: true`: it runs as a single program of that name, not as a shell line",
                    self.what
                ),
                format!("write it as a list of arguments ({example}), or set `shell: true` to run it with /bin/sh -c"),
            ));
        }
    }

    /// LB124: the hook may take longer than the whole backup.
    fn timeout(&mut self, timeout: crate::Duration, backup: crate::Duration) {
        if timeout > backup {
            self.out.push(at_value(
                Code::HookTimeoutExceedsBackup,
                self.source,
                &format!("{}/timeout", self.base),
                format!(
                    "{} may take {timeout} but the whole backup may take only {backup} (`volumes.timeouts.backup`)",
                    self.what
                ),
                format!("lower the hook's timeout below {backup}, or raise `volumes.timeouts.backup`"),
            ));
        }
    }

    /// LB125: every namespace the hook names is one the policy does not
    /// back up.
    fn namespaces(
        &mut self,
        namespaces: &[crate::model::NamespacePattern],
        selection: Option<&Selection>,
        doc: &crate::model::BackupPolicy,
    ) {
        if let Some(selection) = selection
            && !namespaces.is_empty()
            && namespaces
                .iter()
                .all(|n| never_included(&n.0, selection, doc))
        {
            self.out.push(at_key(
                Code::HookSelectsNoNamespace,
                self.source,
                &format!("{}/namespaces", self.base),
                format!("{} runs in namespaces the policy does not back up, so it never runs", self.what),
                "name namespaces the policy's `include.namespaces` selects, or remove `namespaces` to run in all of them",
            ));
        }
    }
}

/// Restore hooks of every RestoreRequest: a shell-like string without
/// `shell: true` (LB123), namespaces the restore does not restore (LB131),
/// an unbounded wait or a hook that does nothing (LB132).
pub fn restore_hook_settings(set: &PolicySet) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for Loaded { doc, source } in &set.restores {
        let Some(hooks) = &doc.spec.hooks else {
            continue;
        };
        let selection = Selection::new(&doc.spec.include, &doc.spec.exclude).ok();
        for (i, h) in hooks.pods.iter().enumerate() {
            let base = format!("/spec/hooks/pods/{i}");
            let commands = [
                ("command", h.command.as_ref()),
                ("init/command", h.init.as_ref().map(|i| &i.command)),
            ];
            let mut lint = HookLint {
                out: &mut out,
                source,
                base: &base,
                what: format!("restore hook `{}`", h.name),
            };
            for (field, command) in commands {
                lint.shell_string(field, command, h.shell, "`[/bin/warm, --all]`");
            }
            if let Some(selection) = &selection
                && !h.namespaces.is_empty()
                && h.namespaces
                    .iter()
                    .all(|n| never_restored(&n.0, selection, &doc.spec.include.namespaces))
            {
                out.push(at_key(
                    Code::RestoreHookSelectsNothing,
                    source,
                    &format!("{base}/namespaces"),
                    format!(
                        "restore hook `{}` selects namespaces the restore does not restore, so it never runs",
                        h.name
                    ),
                    "name SOURCE namespaces the request's `include.namespaces` selects, or remove `namespaces`",
                ));
            }
            if h.wait_timeout.as_secs() == 0 {
                out.push(at_value(
                    Code::RestoreHookNeverEnds,
                    source,
                    &format!("{base}/waitTimeout"),
                    format!(
                        "restore hook `{}` has `waitTimeout: {}`; lifeboat never waits for pods without a bound",
                        h.name, h.wait_timeout
                    ),
                    "give a bound such as `10m` (the default), or leave `waitTimeout` out",
                ));
            }
            if h.command.is_none() && h.init.is_none() {
                out.push(at_key(
                    Code::RestoreHookNeverEnds,
                    source,
                    &base,
                    format!("restore hook `{}` has neither `command` nor `init`, so it does nothing", h.name),
                    "add the `command` to run in the new pods, or an `init` container, or remove the hook",
                ));
            }
        }
    }
    out
}

/// Whether restore hook namespace `pattern` surely names no namespace the
/// restore restores (a glob only when the request includes plain names).
fn never_restored(
    pattern: &str,
    selection: &Selection,
    include: &[crate::model::NamespacePattern],
) -> bool {
    if !is_glob(pattern) {
        return !selection.namespace(pattern);
    }
    !include.is_empty()
        && include.iter().all(|n| !is_glob(&n.0))
        && include
            .iter()
            .all(|n| !glob_matches(pattern, &n.0) || !selection.namespace(&n.0))
}

/// Whether hook namespace `pattern` surely names no namespace the policy
/// backs up (a glob only when the policy includes plain names alone).
fn never_included(pattern: &str, selection: &Selection, doc: &crate::model::BackupPolicy) -> bool {
    if !is_glob(pattern) {
        return !selection.namespace(pattern);
    }
    let include = &doc.spec.include.namespaces;
    !include.is_empty()
        && include.iter().all(|n| !is_glob(&n.0))
        && include
            .iter()
            .all(|n| !glob_matches(pattern, &n.0) || !selection.namespace(&n.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lint::testing::*;

    fn policy(hooks: &str) -> String {
        format!(
            "API\nkind: StorageLocation\nmetadata: {{name: s3}}\nspec: {{url: 's3://b/p'}}\n---\n\
             API\nkind: BackupPolicy\nmetadata: {{name: db}}\nspec:\n  clusters: {{names: [prod]}}\n  \
             include: {{namespaces: [shop, team-a]}}\n  schedule: '0 * * * *'\n  retention: {{keepLast: 3}}\n  \
             storage: s3\n  volumes: {{timeouts: {{backup: 1h}}}}\n  hooks:\n    pods:\n{hooks}"
        )
    }

    fn codes(hooks: &str) -> Vec<(Code, String)> {
        run(hook_settings, &policy(hooks))
            .into_iter()
            .map(|(c, _, _, m)| (c, m))
            .collect()
    }

    fn restore(hooks: &str) -> Vec<(Code, String)> {
        let text = format!(
            "API\nkind: RestoreRequest\nmetadata: {{name: r}}\nspec:\n  \
             source: {{cluster: prod, policy: db}}\n  target: {{cluster: prod}}\n  \
             include: {{namespaces: [shop]}}\n  hooks:\n    pods:\n{hooks}"
        );
        run(restore_hook_settings, &text)
            .into_iter()
            .map(|(c, _, _, m)| (c, m))
            .collect()
    }

    #[test]
    fn restore_hooks_that_cannot_work_are_flagged() {
        let got = restore("      - {name: w, command: 'warm --all'}\n");
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, Code::HookShellStringWithoutShell);
        assert!(restore("      - {name: w, command: 'warm --all', shell: true}\n").is_empty());
        let got = restore("      - {name: w, namespaces: [shpo], command: [warm]}\n");
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, Code::RestoreHookSelectsNothing);
        assert!(restore("      - {name: w, namespaces: [sh*], command: [warm]}\n").is_empty());
        let got = restore("      - {name: w, command: [warm], waitTimeout: 0s}\n");
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, Code::RestoreHookNeverEnds);
        let got = restore("      - {name: w, owner: Deployment/x}\n");
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, Code::RestoreHookNeverEnds);
        assert!(restore("      - {name: w, init: {image: busybox, command: [seed]}}\n").is_empty());
    }

    fn dumps(encrypted: bool, dumps: &str) -> Vec<(Code, String)> {
        let encryption = if encrypted {
            ", encryption: {recipients: [age1268crxs6ntgpzr3y2auy80yrejxsfmps549ul66ch93t0p5wr9aqyxanhq]}"
        } else {
            ""
        };
        let text = format!(
            "API\nkind: StorageLocation\nmetadata: {{name: s3}}\nspec: {{url: 's3://b/p'{encryption}}}\n---\n\
             API\nkind: BackupPolicy\nmetadata: {{name: db}}\nspec:\n  clusters: {{names: [prod]}}\n  \
             include: {{namespaces: [shop]}}\n  schedule: '0 * * * *'\n  retention: {{keepLast: 3}}\n  \
             storage: s3\n  volumes: {{timeouts: {{backup: 2h}}}}\n  hooks:\n    dumps:\n{dumps}"
        );
        run(hook_settings, &text)
            .into_iter()
            .map(|(c, _, _, m)| (c, m))
            .collect()
    }

    #[test]
    fn a_dump_to_an_unencrypted_location_is_an_error() {
        let hook = "      - {name: mysql, owner: Deployment/mysql, command: [mysqldump, --all-databases]}\n";
        let got = dumps(false, hook);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, Code::DumpHookUnencrypted);
        assert!(
            got[0].1.contains("no encryption recipients"),
            "{}",
            got[0].1
        );
        assert!(dumps(true, hook).is_empty());
        let got = dumps(
            true,
            "      - {name: m, command: 'mysqldump --all-databases', timeout: 3h, namespaces: [nope]}\n",
        );
        let codes: Vec<Code> = got.iter().map(|g| g.0).collect();
        assert_eq!(
            codes,
            [
                Code::HookShellStringWithoutShell,
                Code::HookTimeoutExceedsBackup,
                Code::HookSelectsNoNamespace
            ],
            "{got:?}"
        );
    }

    #[test]
    fn a_shell_line_without_shell_is_flagged() {
        let got = codes("      - {name: f, pre: 'fsfreeze --freeze /data'}\n");
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, Code::HookShellStringWithoutShell);
        assert!(
            codes("      - {name: f, pre: 'fsfreeze --freeze /data', shell: true}\n").is_empty()
        );
        assert!(codes("      - {name: f, pre: [fsfreeze, --freeze, /data]}\n").is_empty());
        assert!(codes("      - {name: f, pre: /freeze.sh}\n").is_empty());
    }

    #[test]
    fn a_timeout_longer_than_the_backup_is_an_error() {
        let got = codes("      - {name: f, pre: [sync], timeout: 2h}\n");
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, Code::HookTimeoutExceedsBackup);
        assert!(codes("      - {name: f, pre: [sync], timeout: 10m}\n").is_empty());
    }

    /// Findings for backup-level hooks (YAML under `hooks:`).
    fn level(hooks: &str) -> Vec<(Code, String)> {
        let text = policy("      - {name: f, pre: [sync]}\n")
            .replace("  hooks:\n", &format!("  hooks:\n{hooks}"));
        run(hook_settings, &text)
            .into_iter()
            .map(|(c, _, _, m)| (c, m))
            .collect()
    }

    #[test]
    fn backup_level_hooks_that_cannot_work_are_flagged() {
        let job = |ns: &str| {
            format!(
                "    before:\n      - {{name: q, job: {{namespace: {ns}, image: 'tools:1', command: [q]}}}}\n"
            )
        };
        assert!(level(&job("shop")).is_empty(), "{:?}", level(&job("shop")));
        for ns in ["lifeboat", "lifeboat-movers"] {
            let got = level(&job(ns));
            assert_eq!(got.len(), 1, "{got:?}");
            assert_eq!(got[0].0, Code::HookJobInLifeboatNamespace);
        }
        let got = level("    after:\n      - {name: n, timeout: 1m}\n");
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, Code::BackupHookWithoutAction);
        assert!(got[0].1.contains("neither"), "{got:?}");
        let got = level(
            "    after:\n      - {name: n, exec: {namespace: shop, command: [n]}, job: {namespace: shop, image: i, command: [n]}}\n",
        );
        assert_eq!(got[0].0, Code::BackupHookWithoutAction);
        assert!(got[0].1.contains("both"), "{got:?}");
        let got = level(
            "    after:\n      - {name: n, exec: {namespace: shop, command: 'curl -X POST x'}}\n",
        );
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, Code::HookShellStringWithoutShell);
        // A Job's default timeout (5m) fits the 1h backup; 2h does not.
        let got = level(&job("shop").replace("}}\n", "}, timeout: 2h}\n"));
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, Code::HookTimeoutExceedsBackup);
    }

    #[test]
    fn namespaces_the_policy_does_not_back_up_are_flagged() {
        let got = codes("      - {name: f, pre: [sync], namespaces: [other, team-z*]}\n");
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, Code::HookSelectsNoNamespace);
        assert!(codes("      - {name: f, pre: [sync], namespaces: [other, shop]}\n").is_empty());
        assert!(codes("      - {name: f, pre: [sync], namespaces: [team-*]}\n").is_empty());
    }
}
