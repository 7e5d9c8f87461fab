//! A small deterministic PRNG: SplitMix64 (Steele, Lea, Flood 2014).
//!
//! Not cryptographic; good enough to pick sizes and fill payloads, and every run with the same
//! seed produces the same numbers, so a failure replays.

/// SplitMix64 state.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator seeded with `seed` (any value, 0 included).
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A generator for stream `stream` of test `seed`: independent-looking sequences per
    /// connection from one test seed.
    pub fn for_stream(seed: u64, stream: u64) -> Self {
        let mut mixer = Self::new(seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F));
        let s = mixer.next_u64();
        Self::new(s)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi` (`lo <= hi`). The modulo bias is irrelevant for tests.
    pub fn range_inclusive(&mut self, lo: usize, hi: usize) -> usize {
        assert!(lo <= hi, "empty range {lo}..={hi}");
        let span = (hi - lo) as u64 + 1;
        lo + (self.next_u64() % span) as usize
    }

    /// A size in `lo..=hi` (`1 <= lo`), log-uniformly distributed: every power-of-two band is
    /// equally likely, so small messages (1 B, a few bytes) and large ones (tens of KiB) all
    /// occur often, and the mean stays far below `hi` (keeps debug-build tests fast).
    pub fn log_uniform(&mut self, lo: usize, hi: usize) -> usize {
        assert!(1 <= lo && lo <= hi, "bad range {lo}..={hi}");
        let lo_bits = usize::BITS - lo.leading_zeros(); // 1 for lo = 1
        let hi_bits = usize::BITS - hi.leading_zeros();
        let bits = self.range_inclusive(lo_bits as usize, hi_bits as usize);
        let band_lo = if bits == 1 { 1 } else { 1usize << (bits - 1) };
        let band_hi = (1usize << bits) - 1;
        self.range_inclusive(band_lo.max(lo), band_hi.min(hi))
    }

    /// Fills `out` with random bytes.
    pub fn fill(&mut self, out: &mut [u8]) {
        let mut chunks = out.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        let n = rest.len();
        rest.copy_from_slice(&last[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_stream_distinct() {
        let a: Vec<u64> = (0..4).map(|_| Rng::new(7).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        let mut s0 = Rng::for_stream(7, 0);
        let mut s1 = Rng::for_stream(7, 1);
        assert_ne!(s0.next_u64(), s1.next_u64());
    }

    #[test]
    fn log_uniform_covers_edges_and_stays_in_range() {
        let mut r = Rng::new(1);
        let (mut saw_min, mut saw_big) = (false, false);
        for _ in 0..20_000 {
            let n = r.log_uniform(1, 65_536);
            assert!((1..=65_536).contains(&n));
            saw_min |= n == 1;
            saw_big |= n > 60_000;
        }
        assert!(saw_min && saw_big);
    }
}
