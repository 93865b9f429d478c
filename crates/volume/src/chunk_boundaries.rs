//! The chunk boundaries of a backup are those of rustic_core 0.13.0's Rabin
//! chunker, which lifeboat patches for speed (vendor/rustic_core,
//! LIFEBOAT-PATCH.md). Files are backed up through the real path (a
//! `file://` location, the repository's own random polynomial) and each
//! file's blob ids are compared with the SHA-256 of the chunks that a
//! plain reference implementation, written here over `rustic_cdc`'s
//! `Rabin64` one byte at a time, cuts from the same bytes.

use std::sync::Arc;

use rustic_cdc::{Rabin64, RollingHash64};
use sha2::{Digest, Sha256};

use crate::{BackupRequest, Control, Counters, MemoryKeyCache, VolumeKind, VolumeRepo};

/// Chunk lengths of `data` as rustic_core 0.13.0 cuts them: the first
/// `min` bytes always belong to the chunk; the hash is then primed with 63
/// of the 64 bytes before `min` (`reset_and_prefill_window` stops one
/// short) and checked before each further byte; a chunk ends where
/// `hash & (avg - 1) == 0`, at `max` bytes or at the end of the data.
fn reference_chunks(data: &[u8], poly: u64, avg: usize, min: usize, max: usize) -> Vec<usize> {
    let mask = (avg - 1) as u64;
    let mut lens = Vec::new();
    let mut start = 0;
    while start < data.len() {
        let rest = &data[start..];
        if rest.len() <= min {
            lens.push(rest.len());
            break;
        }
        let mut rabin = Rabin64::new_with_polynom(6, &poly);
        rabin.reset_and_prefill_window(&mut rest[min - 64..min].iter().copied());
        let mut len = min;
        while len < max && rabin.hash & mask != 0 && len < rest.len() {
            rabin.slide(rest[len]);
            len += 1;
        }
        lens.push(len);
        start += len;
    }
    lens
}

fn random(seed: u64, len: usize) -> Vec<u8> {
    lifeboat_testkit::noise(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1, len)
}

fn mask_bits(avg: usize) -> u32 {
    avg.trailing_zeros()
}

/// Data whose first chunk rustic 0.13 cuts at exactly `min` bytes because
/// the 63 bytes it primes the hash with (`min - 64 .. min - 1`) hash to a
/// boundary; restic, whose window there also holds byte `min - 1` (here
/// non-zero, so the low 8 bits of its hash are not 0), would not cut.
/// The hash is linear: the last three primed bytes are chosen to cancel the
/// low bits of the others' hash (three bytes hash to themselves).
fn prefill_cut(poly: u64, min: usize, bits: u32) -> Vec<u8> {
    let mut data = random(11, min + (2 << 20));
    let primed = min - 64..min - 1;
    data[primed.end - 3..primed.end].fill(0);
    let mut rabin = Rabin64::new_with_polynom(6, &poly);
    for &b in &data[primed.clone()] {
        rabin.slide(b);
    }
    let fix = rabin.hash & ((1 << bits) - 1);
    data[primed.end - 3..primed.end].copy_from_slice(&fix.to_be_bytes()[5..]);
    data[min - 1] = 0x5a;
    data
}

fn ids(data: &[u8], lens: &[usize]) -> Vec<String> {
    let mut at = 0;
    lens.iter()
        .map(|len| {
            let id = hex::encode(Sha256::digest(&data[at..at + len]));
            at += len;
            id
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_cuts_chunks_where_rustic_0_13_does() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let id = age::x25519::Identity::generate();
    let location = lifeboat_store::Repository::open(&lifeboat_store::LocationConfig {
        url: format!("file://{}", dir.path().join("store").display()),
        recipients: vec![id.to_public().to_string()],
        ..Default::default()
    })
    .await?;
    let v =
        VolumeRepo::open_or_create(&location, "local", "c1", "ns", &MemoryKeyCache::new()).await?;
    let config = v.config().await?;
    let poly = config.poly()?;
    let (avg, min, max) = (
        config.chunk_size(),
        config.chunk_min_size(),
        config.chunk_max_size(),
    );
    assert_eq!(
        (avg, min, max),
        (1 << 20, 512 << 10, 8 << 20),
        "restic's defaults"
    );
    let chunks = |data: &[u8]| reference_chunks(data, poly, avg, min, max);

    // A 64-byte pattern repeated never cuts when none of its windows (and
    // none of the windows right after a prefill) hashes to a boundary; the
    // reference says which seed gives one.
    let periodic = (1..)
        .map(|seed| random(seed, 64).repeat((17 << 20) / 64))
        .find(|data| chunks(data) == [max, max, (1 << 20)])
        .ok_or("no pattern without boundaries")?;
    let random_data = random(7, 24 << 20);
    let lens = chunks(&random_data);
    // The repository's polynomial is random: 24 MiB cut at 1.5 MiB on
    // average gives about 16 chunks, and at least 4 are needed below (one
    // file ends at the third boundary). Fewer than 4 would need chunks
    // averaging over 6 MiB.
    assert!(lens.len() >= 4, "{lens:?}");
    let (_, cut) = lens.split_last().ok_or("no chunks")?;
    assert!(cut.iter().all(|&l| l >= min && l < max), "{lens:?}");
    // Ends right at the third chunk's boundary.
    let at_boundary = random_data[..lens[..3].iter().sum::<usize>()].to_vec();
    assert_eq!(chunks(&at_boundary), lens[..3]);
    let mixed = [random(9, 3 << 20), vec![0; 3 << 20], random(10, 5 << 20)].concat();
    let prefill = prefill_cut(poly, min, mask_bits(avg));
    assert_eq!(
        chunks(&prefill)[0],
        min,
        "the 63 primed bytes alone make the cut"
    );

    let files: Vec<(&str, Vec<u8>)> = vec![
        ("random.bin", random_data),
        ("eof-at-boundary.bin", at_boundary),
        ("short.bin", random(3, 100 << 10)),
        ("min.bin", random(4, min)),
        ("min-plus-one.bin", random(5, min + 1)),
        ("min-plus-window.bin", random(6, min + 64)),
        // All zeros hash to 0: a cut at every minimum size.
        ("zeros.bin", vec![0; 3 << 20]),
        ("periodic.bin", periodic),
        ("mixed.bin", mixed),
        ("prefill-cut.bin", prefill),
        ("empty.bin", Vec::new()),
    ];
    let src = dir.path().join("src");
    std::fs::create_dir(&src)?;
    for (name, data) in &files {
        std::fs::write(src.join(name), data)?;
    }
    let result = v
        .backup(
            BackupRequest {
                source: src.clone(),
                kind: VolumeKind::Filesystem,
                pvc: "data".into(),
                pvc_uid: None,
                backup: None,
                force_read: false,
            },
            Arc::new(Counters::default()),
            Control::new(),
        )
        .await?;

    let root = v.snapshot_path("data");
    let names: Vec<String> = files.iter().map(|(n, _)| n.to_string()).collect();
    let repo = v.clone();
    let stored = tokio::task::spawn_blocking(move || -> crate::Result<Vec<Vec<String>>> {
        let rustic = repo
            .rustic(Control::new())?
            .to_indexed()
            .map_err(|e| crate::VolumeError::rustic("index", &e))?;
        let snaps = rustic
            .get_all_snapshots()
            .map_err(|e| crate::VolumeError::rustic("snapshots", &e))?;
        let snap = snaps
            .iter()
            .find(|s| s.id.to_hex().as_str() == result.snapshot)
            .expect("the backup's snapshot is listed");
        names
            .iter()
            .map(|name| {
                let node = rustic
                    .node_from_snapshot_and_path(snap, &format!("{root}/{name}"))
                    .map_err(|e| crate::VolumeError::rustic("node", &e))?;
                Ok(node
                    .content
                    .unwrap_or_default()
                    .iter()
                    .map(|id| id.to_hex().as_str().to_string())
                    .collect())
            })
            .collect()
    })
    .await??;

    for ((name, data), stored) in files.iter().zip(stored) {
        let lens = chunks(data);
        assert_eq!(stored, ids(data, &lens), "{name}: chunks {lens:?}");
        match *name {
            "short.bin" | "min.bin" => assert_eq!(lens, [data.len()]),
            "min-plus-one.bin" | "min-plus-window.bin" => assert_eq!(lens.len(), 1, "{lens:?}"),
            "zeros.bin" => assert_eq!(lens, [min; 6]),
            "prefill-cut.bin" => assert_eq!(lens[0], min),
            "periodic.bin" => assert_eq!(lens, [max, max, 1 << 20]),
            "empty.bin" => assert!(lens.is_empty()),
            _ => {}
        }
    }
    Ok(())
}

#[test]
fn reference_matches_rustic_cdc_hash_of_the_window() {
    // The reference's rolling hash after a prefill and 64 slides is the hash
    // of the last 64 bytes alone, as restic's is.
    let poly = 0x003D_A335_8B4D_C173;
    let data = random(1, 256);
    let mut a = Rabin64::new_with_polynom(6, &poly);
    a.reset_and_prefill_window(&mut data[..64].iter().copied());
    for &b in &data[63..191] {
        a.slide(b);
    }
    let mut b = Rabin64::new_with_polynom(6, &poly);
    for &x in &data[191 - 64..191] {
        b.slide(x);
    }
    assert_eq!(a.hash, b.hash);
}
