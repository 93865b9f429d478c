//! Repository maintenance in the controller: a backup whose data no later
//! backup shares is pruned by retention (its snapshot forgotten), and the
//! controller's maintenance pass then prunes the repository in two phases,
//! each as a mover pod (`lifeboat mover prune`): the first marks the packs
//! no snapshot needs, a later one deletes them once `keepDelete` is over.
//! It never runs in a cycle that backs up to the same location, the
//! repository's record says when it ran and what it freed, the kept
//! backup's data stays readable (`restic check --read-data`), and nothing
//! is left in the cluster.

use std::path::Path;

use crate::volume_data::{NS, World};
use crate::volume_outage::noise;

fn record(w: &World) -> serde_json::Value {
    let path = w
        .dir
        .path()
        .join("storage/volumes/prod")
        .join(NS)
        .join("lifeboat-maintenance.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Pods created in the movers' namespace so far (the request log).
fn mover_pods_created(w: &World) -> usize {
    std::fs::read_to_string(w.dir.path().join("requests.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| {
            l["verb"] == "create" && l["resource"] == "pods" && l["namespace"] == "lifeboat-movers"
        })
        .count()
}

#[test]
fn the_controller_prunes_a_repository_in_two_phases_by_mover_pods_between_backups() {
    let w = World::build(
        Path::new(env!("CARGO_BIN_EXE_lifeboat")),
        1,
        "standard",
        true,
    );
    let policy = w.dir.path().join("repo/lifeboat.yaml");
    let text = std::fs::read_to_string(&policy).unwrap();
    let text = text.replace("keepLast: 5", "keepLast: 1").replace(
        "  encryption:\n",
        "  maintenance: {every: 1s, keepDelete: 0s}\n  encryption:\n",
    );
    std::fs::write(&policy, text).unwrap();
    let remote = w.controller_remote();

    // The first backup holds 4 MiB that the second one does not.
    let volume = w.claim_bound(NS, "mysql");
    std::fs::write(volume.join("only-in-the-first.bin"), noise(4 << 20)).unwrap();
    let (code, out, err) = w.reconcile(&remote, &["--now", "2027-01-01T10:30:00Z"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !out.contains("prune the volume repository"),
        "no prune in a cycle that backs up to the location\n{out}"
    );
    // The second backup shares no data with the first.
    for entry in std::fs::read_dir(&volume).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
    }
    std::fs::write(
        volume.join("only-in-the-second.txt"),
        "new data\n".repeat(8 << 10),
    )
    .unwrap();
    // The second backup; retention (keepLast 1) forgets the first one's
    // snapshot. Its packs are unused now, but still there.
    let (code, out, err) = w.reconcile(&remote, &["--now", "2027-01-01T11:30:00Z"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("prune the volume repository"), "{out}");
    let movers_before = mover_pods_created(&w);

    // A cycle with the slot backed up: the repository is due (every 1s).
    let (code, out, err) = w.reconcile(&remote, &["--now", "2027-01-01T11:40:00Z"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("prune the volume repository of `mysql-persistent` in `local`"),
        "{out}{err}"
    );
    let first = record(&w);
    assert!(first["error"].is_null(), "{first}");
    let report = &first["report"];
    assert!(report["packsMarked"].as_u64().unwrap() > 0, "{first}");
    assert!(
        report["bytesMarked"].as_u64().unwrap() >= 4 << 20,
        "{first}"
    );
    assert_eq!(report["packsToDelete"], 0, "phase one only marks: {first}");

    // The next cycle deletes what the first marked (keepDelete 0s).
    let (code, out, err) = w.reconcile(&remote, &["--now", "2027-01-01T11:50:00Z"]);
    assert_eq!(code, 0, "{out}{err}");
    let second = record(&w);
    assert!(second["error"].is_null(), "{second}");
    assert!(
        second["report"]["packsToDelete"].as_u64().unwrap() > 0,
        "{second}"
    );
    assert!(
        second["lastSuccess"].as_str() > first["lastSuccess"].as_str(),
        "{first}\n{second}"
    );

    // Each prune ran as a mover pod in lifeboat-movers, which is gone.
    assert_eq!(mover_pods_created(&w) - movers_before, 2);
    w.nothing_left_behind();

    // The kept backup's data is whole.
    let out = w.volumes_key(&[]);
    std::fs::write(w.dir.path().join("pw"), out.lines().last().unwrap()).unwrap();
    match std::process::Command::new("restic")
        .arg("-r")
        .arg(w.dir.path().join("storage/volumes/prod").join(NS))
        .arg("--password-file")
        .arg(w.dir.path().join("pw"))
        .args(["--no-cache", "check", "--read-data"])
        .output()
    {
        Ok(o) => assert!(
            o.status.success(),
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => eprintln!("SKIPPED the restic part: restic cannot run: {e}"),
    }
}
