//! Servers and test data the test suites of several crates share. Nothing
//! here ships in the `lifeboat` binary: it is a dev-dependency only.

pub mod s3;

/// `n` bytes of xorshift64 output from `state` (non-zero), eight bytes per
/// step, little-endian: deterministic, and incompressible for zstd.
pub fn noise(state: u64, n: usize) -> Vec<u8> {
    Noise::new(state).bytes(n)
}

/// The stream [`noise`] draws from, for data too large to hold at once:
/// successive [`Noise::bytes`] calls continue it.
#[derive(Debug, Clone)]
pub struct Noise(u64);

impl Noise {
    /// A stream from `state`, which must not be zero.
    pub fn new(state: u64) -> Noise {
        Noise(state)
    }

    /// The next `n` bytes. A step's bytes past `n` are dropped, so calls
    /// with multiples of eight continue the stream without a seam.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            out.extend_from_slice(&self.0.to_le_bytes());
        }
        out.truncate(n);
        out
    }
}
