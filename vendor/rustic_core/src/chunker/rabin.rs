use std::{
    io::{self, Read},
    sync::{Arc, Mutex},
};

use rand::{RngExt, rng};
use rustic_cdc::{Polynom, Polynom64, Rabin64};

use crate::error::{ErrorKind, RusticError, RusticResult};

pub(super) mod constants {
    /// The size of a kilobyte.
    pub(super) const KB: usize = 1024;
    /// Buffer size used for reading past a chunk's minimum size (lifeboat
    /// patch: was 4 KiB). Allocated only for files that get that far.
    pub(super) const BUF_SIZE: usize = 256 * KB;
    /// Size of the rolling hash's window (restic: 64 bytes).
    pub(super) const WINDOW_SIZE: usize = 64;
    /// Random polynomial maximum tries.
    pub(super) const RAND_POLY_MAX_TRIES: i32 = 1_000_000;
}

pub(crate) fn check_rabin_params(
    chunk_size: usize,
    chunk_min_size: usize,
    chunk_max_size: usize,
) -> RusticResult<()> {
    if (chunk_size & (chunk_size - 1)) != 0 {
        return Err(RusticError::new(
            ErrorKind::Unsupported,
            "Chunk size must be a power of 2 for the rabin chunker. chunk size = {chunk_size}.",
        )
        .attach_context("chunk_size", chunk_size.to_string()));
    }
    if chunk_min_size > chunk_size {
        return Err(RusticError::new(
            ErrorKind::Unsupported,
            "Chunk min size must be smaller or equal than the chunk size.",
        ));
    }
    if chunk_max_size < chunk_size {
        return Err(RusticError::new(
            ErrorKind::Unsupported,
            "Chunk max size must be larger or equal than the chunk size.",
        ));
    }
    Ok(())
}

/// The precalculated tables of [`Rabin64`] for one polynomial, computed with
/// `rustic_cdc`'s own functions so the hash is the same (lifeboat patch).
#[derive(Debug)]
pub(crate) struct RabinTables {
    /// Removes the byte that slides out of the window.
    out_table: [Polynom64; 256],
    /// Reduces the hash modulo the polynomial.
    mod_table: [Polynom64; 256],
    /// The polynomial's degree minus 8.
    polynom_shift: i32,
}

impl RabinTables {
    /// Returns the tables for `poly`, computed once per process for the last
    /// polynomial asked for (a repository has one; computing them costs
    /// about as much as hashing 100 KiB, which is paid for every file
    /// otherwise).
    pub(crate) fn for_polynom(poly: Polynom64) -> Arc<Self> {
        static LAST: Mutex<Option<(Polynom64, Arc<RabinTables>)>> = Mutex::new(None);
        let mut last = LAST.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((p, tables)) = last.as_ref()
            && *p == poly
        {
            return Arc::clone(tables);
        }
        let tables = Arc::new(Self {
            out_table: Rabin64::calculate_out_table(constants::WINDOW_SIZE, &poly),
            mod_table: Rabin64::calculate_mod_table(&poly),
            polynom_shift: poly.degree() - 8,
        });
        *last = Some((poly, Arc::clone(&tables)));
        tables
    }
}

/// `ChunkIter` is an iterator that chunks data.
pub(crate) struct ChunkIter<R: Read + Send> {
    /// The buffer used for reading.
    buf: Vec<u8>,

    /// The position in the buffer.
    pos: usize,

    /// The reader.
    reader: R,

    /// The split mask used to determine if a chunk is a chunk boundary.
    split_mask: u64,

    /// The rolling hash's tables (built when a file first reaches a chunk's
    /// minimum size; smaller files never need them).
    tables: Option<Arc<RabinTables>>,

    /// The polynomial of the rolling hash.
    poly: Polynom64,

    /// The size hint is used to optimize memory allocation; this should be an upper bound on the size.
    size_hint: usize,

    /// The minimum size of a chunk.
    min_size: usize,

    /// The maximum size of a chunk.
    max_size: usize,

    /// If the iterator is finished.
    finished: bool,
}

impl<R: Read + Send> ChunkIter<R> {
    /// Creates a new `ChunkIter`.
    ///
    /// # Arguments
    ///
    /// * `reader` - The reader to read from.
    /// * `size_hint` - The size hint is used to optimize memory allocation; this should be an upper bound on the size.
    /// * `poly` - The polynomial of the rolling hash (window of 64 bytes).
    pub(crate) fn new(
        poly: Polynom64,
        chunk_size: usize,
        chunk_min_size: usize,
        chunk_max_size: usize,
        reader: R,
        size_hint: usize,
    ) -> RusticResult<Self> {
        check_rabin_params(chunk_size, chunk_min_size, chunk_max_size)?;
        let chunk_size: u64 = chunk_size.try_into().unwrap();
        let split_mask: u64 = chunk_size - 1;
        Ok(Self {
            buf: Vec::new(),
            pos: 0,
            reader,
            split_mask,
            tables: None,
            poly,
            size_hint, // size hint is used to optimize memory allocation; this should be an upper bound on the size
            min_size: chunk_min_size,
            max_size: chunk_max_size,
            finished: false,
        })
    }
}

impl<R: Read + Send> Iterator for ChunkIter<R> {
    type Item = RusticResult<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }

        // Lifeboat patch: the bytes past the minimum size are scanned as a
        // slice with the hash state in locals, and appended run by run,
        // instead of being pushed and slid one at a time through `Rabin64`.
        // The boundaries are those of the loop this replaces (see
        // LIFEBOAT-PATCH.md), including its prefill of 63 window bytes.
        let min_size = self.min_size;
        // Room for a chunk of average size without growing (the original
        // reserved only the minimum size).
        let mut vec = Vec::with_capacity(
            self.size_hint
                .min(self.min_size.saturating_add(self.split_mask as usize + 1)),
        );

        // check if some bytes exist in the buffer and if yes, use them
        let from_buf = (self.buf.len() - self.pos).min(min_size);
        vec.extend_from_slice(&self.buf[self.pos..self.pos + from_buf]);
        self.pos += from_buf;
        let missing = min_size - from_buf;

        if missing > 0 {
            let size = match (&mut self.reader)
                .take(missing as u64)
                .read_to_end(&mut vec)
            {
                Ok(size) => size,
                Err(err) => {
                    return Some(Err(RusticError::with_source(
                        ErrorKind::InputOutput,
                        "Failed to read from reader in iterator",
                        err,
                    )));
                }
            };

            // If self.min_size is not reached, we are done.
            if size < missing {
                self.finished = true;
                return if vec.is_empty() { None } else { Some(Ok(vec)) };
            }
        }

        let tables = Arc::clone(
            self.tables
                .get_or_insert_with(|| RabinTables::for_polynom(self.poly)),
        );
        let (out_table, mod_table) = (&tables.out_table, &tables.mod_table);
        let shift = tables.polynom_shift;
        let split_mask = self.split_mask;

        // As `Rabin64::reset_and_prefill_window` with the 64 last bytes:
        // it slides in the first 63 of them, leaving the last window slot 0.
        let mut window = [0u8; constants::WINDOW_SIZE];
        let mut hash: Polynom64 = 0;
        let prefill = &vec[vec.len() - constants::WINDOW_SIZE..vec.len() - 1];
        for (slot, &byte) in window.iter_mut().zip(prefill) {
            *slot = byte;
            let mod_index = (hash >> shift) & 255;
            hash <<= 8;
            hash |= Polynom64::from(byte);
            hash ^= mod_table[mod_index as usize];
        }
        let mut window_index = constants::WINDOW_SIZE - 1;

        loop {
            if vec.len() >= self.max_size {
                break;
            }

            if (hash & split_mask) == 0 {
                break;
            }

            if self.buf.len() == self.pos {
                self.buf.resize(constants::BUF_SIZE, 0);
                match self.reader.read(&mut self.buf[..]) {
                    Ok(0) => {
                        self.buf.clear();
                        self.pos = 0;
                        self.finished = true;
                        break;
                    }
                    Ok(size) => {
                        self.pos = 0;
                        self.buf.truncate(size);
                    }

                    Err(ref e) if e.kind() == io::ErrorKind::Interrupted => {
                        self.buf.clear();
                        self.pos = 0;
                        continue;
                    }
                    Err(err) => {
                        self.buf.clear();
                        self.pos = 0;
                        return Some(Err(RusticError::with_source(
                            ErrorKind::InputOutput,
                            "Failed to read from reader in iterator",
                            err,
                        )));
                    }
                }
            }

            // Scan at most up to the maximum chunk size; stop after the
            // first byte whose hash is a boundary.
            let take = (self.buf.len() - self.pos).min(self.max_size - vec.len());
            let run = &self.buf[self.pos..self.pos + take];
            let mut used = run.len();
            for (i, &byte) in run.iter().enumerate() {
                let out_value = window[window_index];
                hash ^= out_table[out_value as usize];
                window[window_index] = byte;
                let mod_index = (hash >> shift) & 255;
                hash <<= 8;
                hash |= Polynom64::from(byte);
                hash ^= mod_table[mod_index as usize];
                window_index = (window_index + 1) & (constants::WINDOW_SIZE - 1);
                if (hash & split_mask) == 0 {
                    used = i + 1;
                    break;
                }
            }
            vec.extend_from_slice(&run[..used]);
            self.pos += used;
        }
        self.size_hint = self.size_hint.saturating_sub(vec.len()); // size_hint can be too small!
        Some(Ok(vec))
    }
}

/// [`random_poly`] returns an random irreducible polynomial of degree 53
/// (largest prime number below 64-8)
/// There are (2^53-2/53) irreducible polynomials of degree 53 in
/// `F_2[X]`, c.f. Michael O. Rabin (1981): "Fingerprinting by Random
/// Polynomials", page 4.
///
/// # Errors
///
/// * If no polynomial could be found in one million tries.
pub fn random_poly() -> RusticResult<u64> {
    for _ in 0..constants::RAND_POLY_MAX_TRIES {
        let mut poly: u64 = rng().random();

        // mask away bits above bit 53
        poly &= (1 << 54) - 1;

        // set highest and lowest bit so that the degree is 53 and the
        // polynomial is not trivially reducible
        poly |= (1 << 53) | 1;

        if poly.irreducible() {
            return Ok(poly);
        }
    }

    Err(RusticError::new(
        ErrorKind::Internal,
        "No suitable polynomial found, this should essentially never happen. Please try again.",
    )
    .ask_report())
}

/// A trait for extending polynomials.
pub(crate) trait PolynomExtend {
    /// Returns true IFF x is irreducible over `F_2`.
    fn irreducible(&self) -> bool;

    /// Returns the degree of the polynomial.
    fn gcd(self, other: Self) -> Self;

    /// Adds two polynomials.
    fn add(self, other: Self) -> Self;

    /// Multiplies two polynomials modulo another polynomial.
    fn mulmod(self, other: Self, modulo: Self) -> Self;
}

// implementation goes along the lines of
// https://github.com/restic/chunker/blob/master/polynomials.go
impl PolynomExtend for Polynom64 {
    // Irreducible returns true IFF x is irreducible over F_2. This function
    // uses Ben Or's reducibility test.
    //
    // For details see "Tests and Constructions of Irreducible Polynomials over
    // Finite Fields".
    fn irreducible(&self) -> bool {
        for i in 1..=self.degree() / 2 {
            if self.gcd(qp(i, *self)) != 1 {
                return false;
            }
        }
        true
    }

    fn gcd(self, other: Self) -> Self {
        if other == 0 {
            return self;
        }

        if self == 0 {
            return other;
        }

        if self.degree() < other.degree() {
            self.gcd(other.modulo(&self))
        } else {
            other.gcd(self.modulo(&other))
        }
    }

    fn add(self, other: Self) -> Self {
        self ^ other
    }

    fn mulmod(self, other: Self, modulo: Self) -> Self {
        if self == 0 || other == 0 {
            return 0;
        }

        let mut res: Self = 0;
        let mut a = self;
        let mut b = other;

        if b & 1 > 0 {
            res = res.add(a).modulo(&modulo);
        }

        while b != 0 {
            a = (a << 1).modulo(&modulo);
            b >>= 1;
            if b & 1 > 0 {
                res = res.add(a).modulo(&modulo);
            }
        }

        res
    }
}

// qp computes the polynomial (x^(2^p)-x) mod g. This is needed for the
// reducibility test.
fn qp(p: i32, g: Polynom64) -> Polynom64 {
    // start with x
    let mut res: Polynom64 = 2;

    for _ in 0..p {
        // repeatedly square res
        res = res.mulmod(res, g);
    }

    // add x
    res.add(2).modulo(&g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::hasher::hash;
    use insta::assert_ron_snapshot;
    use rand::prelude::*;
    use std::io::{Cursor, repeat};

    /// The Splitmask is used to determine if a chunk is a chunk boundary.
    const SIZE: usize = 1 << 20;
    /// The size of a megabyte.
    const MB: usize = 1024 * constants::KB;
    /// The minimum size of a chunk.
    const MIN_SIZE: usize = 512 * constants::KB;
    /// The maximum size of a chunk.
    const MAX_SIZE: usize = 8 * MB;

    fn chunker<R: Read + Send>(reader: R, size_hint: usize) -> ChunkIter<R> {
        let poly = 0x003D_A335_8B4D_C173;
        ChunkIter::new(poly, SIZE, MIN_SIZE, MAX_SIZE, reader, size_hint).unwrap()
    }

    #[test]
    fn chunk_random() {
        const RANDOM_DATA_SIZE: usize = 32 * 1024 * 1024;
        const SEED: u64 = 23;
        let mut rng = StdRng::seed_from_u64(SEED);
        let mut data = vec![0u8; RANDOM_DATA_SIZE];
        rng.fill_bytes(&mut data);
        let mut reader = Cursor::new(data);
        let chunker = chunker(&mut reader, 0);
        let chunks: Vec<_> = chunker
            .map(|chunk| {
                let chunk = chunk.unwrap();
                (chunk.len(), hash(&chunk))
            })
            .collect();

        assert_ron_snapshot!(chunks);
    }

    #[test]
    fn chunk_empty() {
        let empty: Vec<u8> = vec![];
        let mut reader = Cursor::new(empty);
        let chunker = chunker(&mut reader, 0);

        assert_eq!(0, chunker.into_iter().count());
    }

    #[test]
    fn chunk_empty_wrong_hint() {
        let empty: Vec<u8> = vec![];
        let mut reader = Cursor::new(empty);
        let chunker = chunker(&mut reader, 100);

        assert_eq!(0, chunker.into_iter().count());
    }

    #[test]
    fn chunk_zeros() {
        let mut reader = repeat(0u8);
        let mut chunker = chunker(&mut reader, usize::MAX);

        let chunk = chunker.next().unwrap().unwrap();
        assert_eq!(MIN_SIZE, chunk.len());
    }
}
