//! `lifeboat lint`: the example repository lints clean, and every invalid
//! fixture under tests/fixtures/lint reports its code at the right line and
//! column in every output format.
//!
//! A fixture states what it expects in header comments:
//! `# expect: LB007 12:16` (code, line, column) or `# expect: LB005 2`
//! (code, line). Files that cannot hold a comment (empty, binary) are listed
//! in `UNCOMMENTABLE`.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::{root, run};

/// (file name, code, line and column).
type Uncommentable = (&'static str, &'static str, Option<(usize, usize)>);

const UNCOMMENTABLE: &[Uncommentable] = &[
    ("file-binary.yaml", "LB004", None),
    ("file-empty.yaml", "LB006", Some((1, 1))),
];

#[derive(Debug, Clone, PartialEq)]
struct Expect {
    code: String,
    line: Option<usize>,
    column: Option<usize>,
}

fn fixtures() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("tests/fixtures/lint"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn expectations(path: &Path) -> Vec<Expect> {
    let name = path.file_name().unwrap().to_string_lossy();
    if let Some((_, code, pos)) = UNCOMMENTABLE.iter().find(|(n, _, _)| *n == name) {
        return vec![Expect {
            code: code.to_string(),
            line: pos.map(|p| p.0),
            column: pos.map(|p| p.1),
        }];
    }
    let text = String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned();
    let found: Vec<Expect> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# expect: "))
        .map(|rest| {
            let mut parts = rest.split_whitespace();
            let code = parts.next().unwrap().to_string();
            let (line, column) = match parts.next() {
                Some(pos) => {
                    let mut lc = pos.split(':').map(|n| n.parse::<usize>().unwrap());
                    (lc.next(), lc.next())
                }
                None => (None, None),
            };
            Expect { code, line, column }
        })
        .collect();
    assert!(
        !found.is_empty(),
        "{} has no `# expect:` line",
        path.display()
    );
    found
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn matches(e: &Expect, code: &str, line: Option<usize>, column: Option<usize>) -> bool {
    e.code == code
        && (e.line.is_none() || e.line == line)
        && (e.column.is_none() || e.column == column)
}

#[test]
fn policies_example_lints_clean() {
    let (code, out, err) = run(&["lint", "policies-example"], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.ends_with("0 errors, 0 warnings\n"), "{out}");
    let (code, out, _) = run(&["lint", "policies-example", "--format", "json"], None);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["diagnostics"], serde_json::json!([]), "{out}");
}

#[test]
fn every_example_file_loads_on_its_own_with_a_schema_modeline() {
    let files = walk(&root().join("policies-example"));
    assert!(files.len() >= 10);
    for path in files {
        let bytes = std::fs::read(&path).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.starts_with("# yaml-language-server: $schema=../../schema/lifeboat.json\n"),
            "{} lacks the schema modeline",
            path.display()
        );
        let outcome = lifeboat_core::load::load([lifeboat_core::load::InputFile {
            path: &relative(&path),
            bytes: &bytes,
        }]);
        assert!(
            outcome.diagnostics.is_empty(),
            "{}: {:?}",
            path.display(),
            outcome.diagnostics
        );
        assert_eq!(outcome.set.len(), outcome.documents);
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|e| e == "yaml") {
            out.push(p);
        }
    }
    out
}

#[test]
fn there_are_enough_fixtures() {
    assert!(
        fixtures().len() >= 30,
        "issue #2 asks for at least 30 invalid fixtures"
    );
}

#[test]
fn each_fixture_reports_its_code_at_its_position_in_every_format() {
    for path in fixtures() {
        let file = relative(&path);
        let expect = expectations(&path);

        // JSON
        let (code, out, err) = run(&["lint", &file, "--format", "json"], None);
        let v: Value = serde_json::from_str(&out).unwrap();
        let diags = v["diagnostics"].as_array().unwrap();
        let has_errors = diags.iter().any(|d| d["severity"] == "error");
        assert_eq!(
            code,
            if has_errors { 1 } else { 0 },
            "{file}: exit code\n{out}{err}"
        );
        let (strict, _, _) = run(&["lint", &file, "--strict"], None);
        assert_eq!(strict, 1, "{file}: --strict fails on warnings");
        for e in &expect {
            assert!(
                diags.iter().any(|d| matches(
                    e,
                    d["code"].as_str().unwrap(),
                    d["line"].as_u64().map(|n| n as usize),
                    d["column"].as_u64().map(|n| n as usize)
                ) && d["file"] == file.as_str()),
                "{file}: JSON lacks {e:?}\n{out}"
            );
        }

        // GitHub annotations
        let (_, out, _) = run(&["lint", &file, "--format", "github"], None);
        for e in &expect {
            let severity = diags
                .iter()
                .find(|d| d["code"] == e.code.as_str())
                .and_then(|d| d["severity"].as_str())
                .unwrap();
            let command = match severity {
                "error" => "::error ",
                "warning" => "::warning ",
                _ => "::notice ",
            };
            let hit = out.lines().any(|l| {
                let prop = |k: &str| {
                    l.split([' ', ','])
                        .find_map(|p| p.strip_prefix(&format!("{k}=")))
                        .and_then(|n| n.parse::<usize>().ok())
                };
                l.starts_with(command)
                    && l.contains(&format!("file={file},"))
                    && l.contains(&format!("title={} ", e.code))
                    && (e.line.is_none() || prop("line") == e.line)
                    && (e.column.is_none() || prop("col") == e.column)
            });
            assert!(hit, "{file}: GitHub output lacks {e:?}\n{out}");
        }

        // SARIF
        let (_, out, _) = run(&["lint", &file, "--format", "sarif"], None);
        let v: Value = serde_json::from_str(&out).unwrap();
        let results = v["runs"][0]["results"].as_array().unwrap();
        for e in &expect {
            let hit = results.iter().any(|r| {
                let loc = &r["locations"][0]["physicalLocation"];
                loc["artifactLocation"]["uri"] == file.as_str()
                    && matches(
                        e,
                        r["ruleId"].as_str().unwrap(),
                        loc["region"]["startLine"].as_u64().map(|n| n as usize),
                        loc["region"]["startColumn"].as_u64().map(|n| n as usize),
                    )
            });
            assert!(hit, "{file}: SARIF lacks {e:?}\n{out}");
        }

        // Human and JSON output are what users read: snapshot them.
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let (_, human, _) = run(&["lint", &file], None);
        let (_, json, _) = run(&["lint", &file, "--format", "json"], None);
        insta::with_settings!({ snapshot_suffix => name, prepend_module_to_snapshot => false }, {
            insta::assert_snapshot!("human", human);
            insta::assert_snapshot!("json", json);
        });
    }
}

/// The SARIF 2.1.0 schema, from `@microsoft/jest-sarif` on npm (.ci/run
/// fetches it into target/test-deps), or `LIFEBOAT_SARIF_SCHEMA`.
fn sarif_schema() -> Option<Value> {
    let path = std::env::var_os("LIFEBOAT_SARIF_SCHEMA")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/test-deps/sarif-2.1.0.json"));
    let text = std::fs::read_to_string(&path).ok()?;
    let mut schema: Value = serde_json::from_str(&text).ok()?;
    // The published schema's patterns for `language` have a stray `]` that
    // strict regex engines reject; they constrain nothing lifeboat writes.
    for def in ["run", "toolComponent"] {
        if let Some(o) = schema
            .pointer_mut(&format!("/definitions/{def}/properties/language"))
            .and_then(Value::as_object_mut)
        {
            o.remove("pattern");
        }
    }
    Some(schema)
}

#[test]
fn sarif_output_validates_against_the_sarif_2_1_0_schema() {
    let Some(schema) = sarif_schema() else {
        eprintln!(
            "skipped: no SARIF schema at target/test-deps/sarif-2.1.0.json; .ci/run downloads it \
             (npm pack @microsoft/jest-sarif), or set LIFEBOAT_SARIF_SCHEMA"
        );
        return;
    };
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap();
    for args in [
        vec!["lint", "tests/fixtures/lint", "--format", "sarif"],
        vec!["lint", "policies-example", "--format", "sarif"],
    ] {
        let (_, out, _) = run(&args, None);
        let v: Value = serde_json::from_str(&out).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&v)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{args:?}: {errors:#?}");
    }
}

#[test]
fn a_10_mb_file_is_refused_not_parsed() {
    let dir = tempfile::tempdir().unwrap();
    let big = "# padding\n".repeat(1_000_000);
    std::fs::write(dir.path().join("big.yaml"), big).unwrap();
    let (code, out, _) = run(&["lint", ".", "--format", "json"], Some(dir.path()));
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["diagnostics"][0]["code"], "LB004");
    assert_eq!(v["diagnostics"][0]["file"], "big.yaml");
}

#[test]
fn missing_paths_and_bad_flags_are_usage_errors() {
    let (code, _, err) = run(&["lint", "no/such/dir"], None);
    assert_eq!(code, 2);
    assert!(err.contains("no/such/dir"), "{err}");
    let (code, _, _) = run(&["lint", "--format", "xml"], None);
    assert_eq!(code, 2);
}

#[test]
fn lifeboatignore_and_the_status_directory_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("status/clusters/prod")).unwrap();
    std::fs::create_dir_all(d.join("apps")).unwrap();
    std::fs::write(d.join("status/clusters/prod/p.yaml"), "not: a policy\n").unwrap();
    std::fs::write(d.join("apps/kustomization.yaml"), "resources: []\n").unwrap();
    std::fs::write(d.join(".lifeboatignore"), "apps/\n").unwrap();
    std::fs::write(
        d.join("local.yaml"),
        "apiVersion: lifeboat.dev/v1alpha1\nkind: StorageLocation\nmetadata:\n  name: local\nspec:\n  url: file:///tmp/b\n",
    )
    .unwrap();
    let (code, out, _) = run(&["lint", "."], Some(d));
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, "1 file, 0 errors, 0 warnings\n");
    // Without the ignore file, the kustomization is reported.
    std::fs::remove_file(d.join(".lifeboatignore")).unwrap();
    let (code, out, _) = run(&["lint", "."], Some(d));
    assert_eq!(code, 1);
    assert!(out.contains("apps/kustomization.yaml"), "{out}");
}

#[test]
fn every_code_has_a_documentation_page_and_an_index_entry() {
    let index = std::fs::read_to_string(root().join("docs/lint/README.md")).unwrap();
    for code in lifeboat_core::Code::ALL {
        let page = root().join(format!("docs/lint/{}.md", code.id()));
        let text = std::fs::read_to_string(&page)
            .unwrap_or_else(|_| panic!("{} has no page at {}", code.id(), page.display()));
        for section in ["## What it flags", "## Why", "## Example", "## How to fix"] {
            assert!(
                text.contains(section),
                "{} lacks `{section}`",
                page.display()
            );
        }
        assert!(
            index.contains(code.id()),
            "docs/lint/README.md does not list {}",
            code.id()
        );
    }
}

/// The URIs of a SARIF log's results.
fn sarif_uris(out: &str) -> Vec<(String, Option<String>)> {
    let v: Value = serde_json::from_str(out).unwrap();
    v["runs"][0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let loc = &r["locations"][0]["physicalLocation"]["artifactLocation"];
            (
                loc["uri"].as_str().unwrap().to_string(),
                loc["uriBaseId"].as_str().map(str::to_string),
            )
        })
        .collect()
}

#[test]
fn sarif_uris_are_relative_to_the_repository_root_also_for_absolute_paths() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(repo.join(".git")).unwrap();
    std::fs::create_dir_all(repo.join("policies/team a")).unwrap();
    std::fs::copy(
        root().join("tests/fixtures/lint/rule-invalid-schedule.yaml"),
        repo.join("policies/team a/bad.yaml"),
    )
    .unwrap();
    let expected = vec![(
        "policies/team%20a/bad.yaml".to_string(),
        Some("%SRCROOT%".to_string()),
    )];
    let absolute = repo.join("policies");
    let absolute = absolute.to_str().unwrap();

    // Absolute paths, run inside the repository: the root is found by `.git`.
    let (code, out, err) = run(
        &["lint", absolute, "--format", "sarif"],
        Some(&repo.join("policies")),
    );
    assert_eq!(code, 1, "{err}");
    assert_eq!(sarif_uris(&out), expected, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let base = v["runs"][0]["originalUriBaseIds"]["%SRCROOT%"]["uri"]
        .as_str()
        .unwrap();
    assert!(
        base.starts_with("file:///") && base.ends_with("/repo/"),
        "{base}"
    );

    // Relative paths from a subdirectory mean the same files.
    let (_, out, _) = run(
        &["lint", "team a", "--format", "sarif"],
        Some(&repo.join("policies")),
    );
    assert_eq!(sarif_uris(&out), expected, "{out}");

    // From elsewhere, --sarif-root names the root.
    let (_, out, _) = run(
        &[
            "lint",
            absolute,
            "--format",
            "sarif",
            "--sarif-root",
            repo.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(sarif_uris(&out), expected, "{out}");
    let (_, out, _) = run(
        &[
            "lint",
            absolute,
            "--format",
            "sarif",
            "--sarif-root",
            repo.join("policies").to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(
        sarif_uris(&out),
        vec![(
            "team%20a/bad.yaml".to_string(),
            Some("%SRCROOT%".to_string())
        )],
        "{out}"
    );
}
