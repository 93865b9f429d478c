//! The committed schemas in `schema/` match the types.

use crate::{root, run};

#[test]
fn committed_schemas_match_the_types() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run(&["schema", "--write", dir.path().to_str().unwrap()], None);
    assert_eq!(code, 0, "{err}");
    let update = std::env::var_os("LIFEBOAT_UPDATE_SCHEMA").is_some();
    let mut drifted = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let entry = entry.unwrap();
        let fresh = std::fs::read_to_string(entry.path()).unwrap();
        let committed_path = root().join("schema").join(entry.file_name());
        let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
        if fresh != committed {
            if update {
                std::fs::write(&committed_path, &fresh).unwrap();
            } else {
                drifted.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
    }
    assert!(
        drifted.is_empty(),
        "schema/ is out of date with the policy types ({}). Regenerate it with \
         `cargo run -- schema --write schema` (or `LIFEBOAT_UPDATE_SCHEMA=1 cargo test --test cli schema`) \
         and commit the result.",
        drifted.join(", ")
    );
}

#[test]
fn prints_one_kind_and_rejects_unknown_ones() {
    let (code, out, _) = run(&["schema", "backuppolicy"], None);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["title"], "BackupPolicy");
    let (code, _, err) = run(&["schema", "Backup"], None);
    assert_eq!(code, 2);
    assert!(err.contains("unknown kind `Backup`"), "{err}");
}

#[test]
fn policy_reference_field_tables_match_the_schema() {
    use lifeboat_core::Kind;
    let update = std::env::var_os("LIFEBOAT_UPDATE_SCHEMA").is_some();
    for kind in Kind::ALL {
        let path = root().join(format!(
            "docs/policy-reference/{}.md",
            kind.as_str().to_ascii_lowercase()
        ));
        let page =
            std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("{} exists", path.display()));
        let (begin, end) = ("<!-- fields:begin -->\n", "<!-- fields:end -->");
        let start = page.find(begin).expect("fields:begin marker") + begin.len();
        let stop = page.find(end).expect("fields:end marker");
        let table = lifeboat::cmd::schema::fields_markdown(kind);
        if page[start..stop] != table {
            if update {
                let fresh = format!("{}{}{}", &page[..start], table, &page[stop..]);
                std::fs::write(&path, fresh).unwrap();
            } else {
                panic!(
                    "the field table in {} is out of date; regenerate it with \
                     `LIFEBOAT_UPDATE_SCHEMA=1 cargo test --test cli schema` and commit the result",
                    path.display()
                );
            }
        }
    }
}
