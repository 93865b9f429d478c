//! Semantic lint rules: what the schema cannot say about a policy set.
//!
//! The loader ([`crate::load`]) has already checked every document against
//! its schema, so rules only see well-formed documents. Each rule is a plain
//! function from the whole [`PolicySet`] to the findings of one code (or a
//! few related ones), pointing at the exact key or value with a message that
//! says what to do. [`check`] runs them all and returns the findings in
//! report order.
//!
//! ```text
//! PolicySet ──┬─ references::unresolved_references   LB101, LB115
//!             ├─ references::duplicate_names         LB102
//!             ├─ references::backups_to_read_only_locations LB130
//!             ├─ references::keep_delete_shorter_than_backups LB140
//!             ├─ schedules::invalid_schedules        LB103, LB104
//!             ├─ schedules::unmeetable_rpo           LB105
//!             ├─ schedules::max_age_below_interval   LB107
//!             ├─ retention::retention_keeps_nothing  LB106, LB116
//!             ├─ secrets::unencrypted_secrets        LB109
//!             ├─ secrets::unencrypted_images         LB134
//!             ├─ restores::namespace_mapping_collisions LB110
//!             ├─ restores::denied_namespaces         LB111
//!             ├─ restores::restore_overwrites_source LB112
//!             ├─ restores::claims_onto_live_claims   LB126
//!             ├─ restores::restore_sources           LB150, LB151, LB152
//!             ├─ overlap::overlapping_policies       LB113
//!             ├─ patterns::invalid_patterns          LB114
//!             ├─ signing::signing_keys               LB118, LB119
//!             ├─ volumes::volume_settings            LB117, LB120, LB121, LB122
//!             ├─ hooks::hook_settings                LB123, LB124, LB125, LB133
//!             └─ hooks::restore_hook_settings        LB123, LB131, LB132 ──▶ sort ──▶ Vec<Diagnostic>
//! ```
//!
//! LB108 (inline credentials) is found while loading: a StorageLocation with
//! credentials in it never passes the schema, so no rule here could see it.
//!
//! Rules that look at schedule gaps (LB105, LB107) take no `now`: they look at
//! a fixed reference window, [`GAP_WINDOW_START`] plus [`GAP_WINDOW`], so that
//! `lifeboat lint` gives the same answer every day. The window is a leap year
//! and holds both DST changes of every zone that has them.

mod hooks;
mod overlap;
mod patterns;
mod references;
mod restores;
mod retention;
mod schedules;
mod secrets;
mod signing;
mod volumes;

use globset::{GlobBuilder, GlobMatcher};
use jiff::{SignedDuration, Timestamp};

use crate::diagnostic::{self, Code, Diagnostic};
use crate::load::{PolicySet, Source};

/// Start of the window schedule gaps are measured over: 2028-01-01T00:00Z.
pub const GAP_WINDOW_START: Timestamp = Timestamp::constant(1_830_297_600, 0);
/// Length of that window: the leap year 2028.
pub const GAP_WINDOW: SignedDuration = SignedDuration::from_hours(366 * 24);

/// A lint rule.
pub type Rule = fn(&PolicySet) -> Vec<Diagnostic>;

/// Every rule, in the order they run (the output is sorted anyway).
pub const RULES: &[Rule] = &[
    references::unresolved_references,
    references::duplicate_names,
    references::backups_to_read_only_locations,
    references::keep_delete_shorter_than_backups,
    schedules::invalid_schedules,
    schedules::unmeetable_rpo,
    schedules::max_age_below_interval,
    retention::retention_keeps_nothing,
    secrets::unencrypted_secrets,
    secrets::unencrypted_images,
    restores::namespace_mapping_collisions,
    restores::denied_namespaces,
    restores::restore_overwrites_source,
    restores::claims_onto_live_claims,
    restores::restore_sources,
    overlap::overlapping_policies,
    patterns::invalid_patterns,
    signing::signing_keys,
    volumes::volume_settings,
    hooks::hook_settings,
    hooks::restore_hook_settings,
];

/// Runs every rule over `set` and returns the findings in report order.
pub fn check(set: &PolicySet) -> Vec<Diagnostic> {
    let mut out: Vec<Diagnostic> = RULES.iter().flat_map(|rule| rule(set)).collect();
    diagnostic::sort(&mut out);
    out
}

/// A finding at the value at `pointer` of a document.
fn at_value(
    code: Code,
    source: &Source,
    pointer: &str,
    message: impl Into<String>,
    help: impl Into<String>,
) -> Diagnostic {
    Diagnostic::new(code, message)
        .with_help(help)
        .at(&source.file, source.value_span(pointer))
}

/// A finding at the key at `pointer` of a document.
fn at_key(
    code: Code,
    source: &Source,
    pointer: &str,
    message: impl Into<String>,
    help: impl Into<String>,
) -> Diagnostic {
    Diagnostic::new(code, message)
        .with_help(help)
        .at(&source.file, source.key_span(pointer))
}

/// `file:line` of a document's name, for "the first is at …".
fn location(source: &Source) -> String {
    match source.value_span("/metadata/name") {
        Some(span) => format!("{}:{}", source.file, span.line),
        None => source.file.to_string(),
    }
}

/// Whether a namespace pattern has glob syntax.
fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

/// Whether namespace glob `pattern` matches `name`; a malformed glob (LB114
/// reports it) matches nothing.
///
/// Compiling a glob builds a regex, which costs far more than matching it,
/// and the pairwise rules ask for the same few patterns many times: the
/// compiled matchers are cached per thread.
fn glob_matches(pattern: &str, name: &str) -> bool {
    thread_local! {
        static CACHE: std::cell::RefCell<std::collections::HashMap<String, Option<GlobMatcher>>> =
            std::cell::RefCell::default();
    }
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(m) = cache.get(pattern) {
            return m.as_ref().is_some_and(|g| g.is_match(name));
        }
        if cache.len() > 4096 {
            cache.clear();
        }
        let m = GlobBuilder::new(pattern)
            .literal_separator(false)
            .build()
            .ok()
            .map(|g| g.compile_matcher());
        let hit = m.as_ref().is_some_and(|g| g.is_match(name));
        cache.insert(pattern.to_string(), m);
        hit
    })
}

/// Whether namespace patterns `a` and `b` can name the same namespace, as far
/// as lint can tell without a cluster: the same pattern, or a plain name that
/// the other pattern matches. Two different globs (`team-*`, `*-prod`) are
/// not compared: that would need glob intersection, and a finding on a guess
/// is worse than none.
fn patterns_overlap(a: &str, b: &str) -> bool {
    a == b || (!is_glob(a) && glob_matches(b, a)) || (!is_glob(b) && glob_matches(a, b))
}

/// Whether any of `patterns` matches the plain namespace `name`.
pub(crate) fn any_matches<'a>(patterns: impl IntoIterator<Item = &'a str>, name: &str) -> bool {
    patterns
        .into_iter()
        .any(|p| p == name || (is_glob(p) && glob_matches(p, name)))
}

/// `did you mean` help for a name, or `otherwise`.
fn suggest<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
    otherwise: String,
) -> String {
    match diagnostic::did_you_mean(name, candidates) {
        Some(s) => format!("did you mean `{s}`?"),
        None => otherwise,
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Loads YAML snippets and runs one rule over them.

    use super::*;
    use crate::load::{InputFile, load};

    /// `apiVersion` line shared by the snippets.
    pub const API: &str = "apiVersion: lifeboat.dev/v1alpha1";

    /// Loads `docs` as one file `p.yaml`, requires it to load cleanly, and
    /// returns `(code, line, column, message)` of what `rule` finds.
    pub fn run(rule: Rule, docs: &str) -> Vec<(Code, usize, usize, String)> {
        let text = docs.replace("API", API);
        let out = load([InputFile {
            path: "p.yaml",
            bytes: text.as_bytes(),
        }]);
        assert!(out.diagnostics.is_empty(), "{:#?}", out.diagnostics);
        let mut found = rule(&out.set);
        diagnostic::sort(&mut found);
        for d in &found {
            assert!(d.help.is_some(), "{d:?} has no help");
            assert_eq!(d.file.as_deref(), Some("p.yaml"));
        }
        found
            .into_iter()
            .map(|d| {
                let span = d.span.expect("a span");
                (d.code, span.line, span.column, d.message)
            })
            .collect()
    }

    /// Whether loading `docs` (with `API` expanded) reports a schema violation.
    pub fn schema_violation(docs: &str) -> bool {
        let text = docs.replace("API", API);
        load([InputFile {
            path: "p.yaml",
            bytes: text.as_bytes(),
        }])
        .diagnostics
        .iter()
        .any(|d| d.code == Code::SchemaViolation)
    }

    /// A StorageLocation.
    pub fn storage_location(name: &str, encrypted: bool) -> String {
        let encryption = if encrypted {
            "\n  encryption:\n    recipients:\n      - age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
        } else {
            ""
        };
        format!(
            "API\nkind: StorageLocation\nmetadata:\n  name: {name}\nspec:\n  url: s3://b/{name}{encryption}\n"
        )
    }

    /// A Cluster with labels.
    pub fn cluster(name: &str, labels: &str) -> String {
        format!(
            "API\nkind: Cluster\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\nspec:\n  role: primary\n"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn window_is_2028() {
        assert_eq!(
            GAP_WINDOW_START,
            "2028-01-01T00:00:00Z".parse::<Timestamp>().unwrap()
        );
    }

    #[test]
    fn check_runs_every_rule_and_sorts() {
        let docs = format!(
            "{}---\nAPI\nkind: BackupPolicy\nmetadata:\n  name: p\nspec:\n  clusters:\n    names: [prd]\n  schedule: '0 0 * * *'\n  retention:\n    minKeep: 0\n  storage: s3\n",
            storage_location("s3", true)
        );
        let text = docs.replace("API", API);
        let out = crate::load::load([crate::load::InputFile {
            path: "p.yaml",
            bytes: text.as_bytes(),
        }]);
        let found: Vec<(Code, usize)> = check(&out.set)
            .iter()
            .map(|d| (d.code, d.span.unwrap().line))
            .collect();
        assert_eq!(
            found,
            [
                (Code::UnresolvedReference, 17),
                (Code::RetentionKeepsNothing, 19)
            ]
        );
    }

    #[test]
    fn pattern_overlap() {
        assert!(patterns_overlap("team-a", "team-*"));
        assert!(patterns_overlap("team-*", "team-*"));
        assert!(!patterns_overlap("team-*", "*-prod"));
        assert!(!patterns_overlap("a", "b"));
    }
}
