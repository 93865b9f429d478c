//! Servers and test data the test suites of several crates share. Nothing
//! here ships in the `lifeboat` binary: it is a dev-dependency only.

pub mod s3;

/// `n` bytes of xorshift64 output from `state` (non-zero), eight bytes per
/// step, little-endian: deterministic, and incompressible for zstd.
pub fn noise(state: u64, n: usize) -> Vec<u8> {
    let mut x = state;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}
