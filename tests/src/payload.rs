//! Payloads whose every byte the receiver can check.
//!
//! - [`Pool`]: a block of seeded random bytes. A message is a slice `pool[offset..offset + len]`
//!   at a random offset; the receiver compares what it got with the same slice (a `memcmp`, fast
//!   even in debug builds). Messages at different offsets have different contents, so a byte
//!   that lands in the wrong message, or shifted, is caught.
//! - [`PatternStream`]: an endless stream for bulk transfers, a function of the absolute stream
//!   offset only, so the receiver checks each byte without storing what was sent. Block `b` of
//!   the stream (blocks of [`PatternStream::PERIOD`] bytes, not a power of two) is the pool
//!   rotated by `b * 7919`, so a repeated, lost or swapped block is caught too.

use std::sync::Arc;

use crate::rng::Rng;

/// Largest message of the round-trip tests: 64 KiB.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// A shared block of seeded random bytes.
#[derive(Clone, Debug)]
pub struct Pool {
    bytes: Arc<[u8]>,
    span: usize,
}

impl Pool {
    /// `span + MAX_MESSAGE` random bytes: any message of up to [`MAX_MESSAGE`] bytes may start at
    /// any offset below `span`.
    pub fn new(seed: u64, span: usize) -> Self {
        let mut v = vec![0u8; span + MAX_MESSAGE];
        Rng::new(seed).fill(&mut v);
        Self {
            bytes: v.into(),
            span,
        }
    }

    /// The default pool of the tests: 1 MiB of start offsets.
    pub fn standard(seed: u64) -> Self {
        Self::new(seed, 1 << 20)
    }

    /// Picks a message of `len` bytes at a random offset: `(offset, len)`.
    pub fn pick(&self, rng: &mut Rng, len: usize) -> (usize, usize) {
        assert!(len <= MAX_MESSAGE);
        (rng.range_inclusive(0, self.span - 1), len)
    }

    /// The bytes of message `(offset, len)`.
    pub fn slice(&self, (offset, len): (usize, usize)) -> &[u8] {
        &self.bytes[offset..offset + len]
    }

    /// Compares `got` with message `what`; on mismatch, describes the first differing byte.
    pub fn check(&self, what: (usize, usize), got: &[u8]) -> Result<(), String> {
        check_eq(self.slice(what), got, 0)
    }
}

/// `Ok` when `got == want`; otherwise a description of the first difference. `base` is added
/// to the reported offsets (the stream offset of `want[0]`).
pub fn check_eq(want: &[u8], got: &[u8], base: u64) -> Result<(), String> {
    if want == got {
        return Ok(());
    }
    if want.len() != got.len() {
        return Err(format!(
            "length mismatch at offset {base}: want {} bytes, got {}",
            want.len(),
            got.len()
        ));
    }
    let i = want
        .iter()
        .zip(got)
        .position(|(a, b)| a != b)
        .expect("slices differ");
    Err(format!(
        "byte mismatch at offset {}: want {:#04x}, got {:#04x} ({} of {} bytes differ in this chunk)",
        base + i as u64,
        want[i],
        got[i],
        want.iter().zip(got).filter(|(a, b)| a != b).count(),
        want.len()
    ))
}

/// An endless checkable byte stream (see the module docs). One instance generates (sender) or
/// checks (receiver); both start at offset 0.
#[derive(Clone, Debug)]
pub struct PatternStream {
    /// The base block twice, so a rotated block is one contiguous slice.
    doubled: Arc<[u8]>,
    pos: u64,
}

impl PatternStream {
    /// Bytes per block; deliberately not a power of two.
    pub const PERIOD: usize = 1_048_573;
    const ROTATE: u64 = 7919;

    /// A stream derived from `seed`.
    pub fn new(seed: u64) -> Self {
        let mut base = vec![0u8; Self::PERIOD];
        Rng::new(seed).fill(&mut base);
        let mut doubled = Vec::with_capacity(2 * Self::PERIOD);
        doubled.extend_from_slice(&base);
        doubled.extend_from_slice(&base);
        Self {
            doubled: doubled.into(),
            pos: 0,
        }
    }

    /// Current stream offset: bytes generated or checked so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The contiguous pattern bytes starting at stream offset `pos`, up to the end of the block.
    fn run_at(&self, pos: u64) -> &[u8] {
        let period = Self::PERIOD as u64;
        let block = pos / period;
        let idx = (pos % period) as usize;
        let start = ((block.wrapping_mul(Self::ROTATE)) % period) as usize;
        &self.doubled[start + idx..start + Self::PERIOD]
    }

    /// Appends the next `n` bytes of the stream to `out`.
    pub fn fill(&mut self, out: &mut Vec<u8>, mut n: usize) {
        out.reserve(n);
        while n > 0 {
            let run = self.run_at(self.pos);
            let k = run.len().min(n);
            out.extend_from_slice(&run[..k]);
            self.pos += k as u64;
            n -= k;
        }
    }

    /// The next `n` bytes of the stream, as a new vector.
    pub fn next_chunk(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n);
        self.fill(&mut v, n);
        v
    }

    /// Checks that `got` are the next bytes of the stream and advances past them.
    pub fn check(&mut self, mut got: &[u8]) -> Result<(), String> {
        while !got.is_empty() {
            let run = self.run_at(self.pos);
            let k = run.len().min(got.len());
            check_eq(&run[..k], &got[..k], self.pos)?;
            self.pos += k as u64;
            got = &got[k..];
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_round_trips_in_any_chunking() {
        let mut tx = PatternStream::new(3);
        let mut rx = PatternStream::new(3);
        let total = 3 * PatternStream::PERIOD + 12_345;
        let data = tx.next_chunk(total);
        let mut r = Rng::new(9);
        let mut off = 0;
        while off < total {
            let n = r.range_inclusive(1, 300_000).min(total - off);
            rx.check(&data[off..off + n]).expect("own data must check");
            off += n;
        }
        assert_eq!(rx.position(), total as u64);
    }

    #[test]
    fn stream_detects_corruption_and_block_swaps() {
        let mut tx = PatternStream::new(3);
        let p = PatternStream::PERIOD;
        let data = tx.next_chunk(2 * p);
        let mut bad = data.clone();
        bad[p + 17] ^= 1;
        let err = PatternStream::new(3).check(&bad).expect_err("flip caught");
        assert!(err.contains(&format!("offset {}", p + 17)), "{err}");
        // Second block first: the rotation makes blocks differ.
        let mut swapped = data[p..].to_vec();
        swapped.extend_from_slice(&data[..p]);
        assert!(PatternStream::new(3).check(&swapped).is_err());
    }

    #[test]
    fn pool_messages_check() {
        let pool = Pool::standard(1);
        let mut r = Rng::new(2);
        let m = pool.pick(&mut r, 1000);
        assert!(pool.check(m, pool.slice(m)).is_ok());
        let other = (m.0 + 1, 1000);
        assert!(pool.check(m, pool.slice(other)).is_err());
    }
}
