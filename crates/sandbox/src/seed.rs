//! Seeding from YAML/JSON manifests: every `*.yaml`, `*.yml` and `*.json`
//! file under a directory (recursively, in path order), each holding one or
//! more documents; `kind: List` documents are expanded. Objects are created
//! namespaces and CRDs first, then storage classes and volumes, then the
//! rest, so a directory needs no ordering. Missing namespaces are created;
//! namespaced objects without one go to `default`. Seeded objects keep
//! their `status`, as if they had been in the cluster already. A top-level
//! `volumes/<namespace>/<pvc>/` tree holds volume contents, copied into
//! each claim's volume once it is bound (see the `csi` module).

use std::path::Path;

use serde_json::Value;

/// Parses a multi-document YAML (or JSON) text into objects.
pub fn parse_manifests(text: &str, origin: &str) -> Result<Vec<Value>, String> {
    use serde::Deserialize as _;
    let mut out = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let v =
            Value::deserialize(doc).map_err(|e| format!("{origin}: document {}: {e}", i + 1))?;
        match v {
            Value::Null => {}
            Value::Object(ref m) if m.get("kind").and_then(Value::as_str) == Some("List") => {
                out.extend(
                    m.get("items")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default(),
                );
            }
            Value::Object(_) => out.push(v),
            _ => return Err(format!("{origin}: document {} is not a mapping", i + 1)),
        }
    }
    Ok(out)
}

/// Reads every manifest under a directory.
pub fn load_dir(dir: &Path) -> Result<Vec<Value>, String> {
    if !dir.is_dir() {
        return Err(format!("{}: not a directory", dir.display()));
    }
    // `volumes/` holds volume contents (see the csi module), not manifests.
    let volumes = dir.join("volumes");
    let mut files: Vec<_> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_entry(|e| e.path() != volumes)
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            )
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        out.extend(parse_manifests(&text, &f.display().to_string())?);
    }
    Ok(out)
}

/// Creation order: namespaces and CRDs, then classes and volumes, then the rest.
pub fn rank(v: &Value) -> u8 {
    match v["kind"].as_str().unwrap_or_default() {
        "Namespace" | "CustomResourceDefinition" => 0,
        "StorageClass" | "VolumeSnapshotClass" | "PersistentVolume" | "VolumeSnapshotContent" => 1,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_and_lists() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n---\nkind: List\nitems:\n- {apiVersion: v1, kind: Secret, metadata: {name: b}}\n";
        let v = parse_manifests(text, "t").unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[1]["kind"], "Secret");
        assert!(parse_manifests("- 1\n", "t").is_err());
        assert!(parse_manifests("a: [\n", "t").is_err());
    }
}
