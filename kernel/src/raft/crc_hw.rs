//! Hardware CRC-32C on x86_64: the SSE4.2 `crc32` instruction folds 8 bytes per instruction
//! (3-cycle latency, one per cycle throughput), several times faster than slicing-by-8.
//!
//! This is the only place the Raft core uses `unsafe`: the intrinsics are only sound to run on
//! a CPU that has SSE4.2. The answer comes from the compile target when it enables
//! `target_feature = "sse4.2"`; otherwise, with `std`, from a run-time check done once and
//! cached; otherwise (bare-metal builds for a generic x86_64) the hardware path is never taken.
//! Both entry points return `None` when the hardware path is unavailable, and the caller falls
//! back to the portable tables in [`super::crc`]. The instruction implements the same reflected
//! Castagnoli polynomial on the same (pre-inverted) state, so results are bit-identical.
#![allow(unsafe_code)]

use core::arch::x86_64::{_mm_crc32_u64, _mm_crc32_u8};

/// Whether the CPU running this code has SSE4.2.
#[inline]
pub(super) fn available() -> bool {
    #[cfg(target_feature = "sse4.2")]
    {
        true
    }
    #[cfg(all(not(target_feature = "sse4.2"), any(feature = "std", test)))]
    {
        detected()
    }
    #[cfg(all(not(target_feature = "sse4.2"), not(any(feature = "std", test))))]
    {
        false
    }
}

/// Run-time detection, done once: `0` not yet probed, `1` absent, `2` present. Racing first
/// calls both probe and store the same answer.
#[cfg(all(not(target_feature = "sse4.2"), any(feature = "std", test)))]
fn detected() -> bool {
    use core::sync::atomic::{AtomicU8, Ordering};
    static STATE: AtomicU8 = AtomicU8::new(0);
    match STATE.load(Ordering::Relaxed) {
        0 => {
            let yes = std::is_x86_feature_detected!("sse4.2");
            STATE.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
            yes
        }
        s => s == 2,
    }
}

/// Folds `bytes` into the raw (pre-inverted) state `crc`, or `None` without SSE4.2.
#[inline]
pub(super) fn update(crc: u32, bytes: &[u8]) -> Option<u32> {
    if !available() {
        return None;
    }
    // SAFETY: `update_sse42` only requires SSE4.2, which `available()` just confirmed: it is
    // either enabled for the whole compile target or was detected on this CPU at run time.
    Some(unsafe { update_sse42(crc, bytes) })
}

/// Folds `x` into `a` and `y` into `b` with the two chains interleaved (each `crc32` waits on
/// its chain's previous result; two chains keep the unit busy), or `None` without SSE4.2.
#[inline]
pub(super) fn update_pair(a: u32, x: &[u8], b: u32, y: &[u8]) -> Option<(u32, u32)> {
    if !available() {
        return None;
    }
    // SAFETY: as in `update`: `available()` just confirmed SSE4.2 (compile target or run-time
    // detection), the only requirement of `update_pair_sse42`.
    Some(unsafe { update_pair_sse42(a, x, b, y) })
}

/// # Safety
/// The CPU must support SSE4.2.
#[target_feature(enable = "sse4.2")]
unsafe fn update_sse42(crc: u32, bytes: &[u8]) -> u32 {
    let mut crc = u64::from(crc);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        // SAFETY: this function's contract (SSE4.2 present) is all `step8` requires.
        crc = unsafe { step8(crc, c) };
    }
    // SAFETY: as above, SSE4.2 is present by this function's contract.
    unsafe { tail(crc as u32, chunks.remainder()) }
}

/// # Safety
/// The CPU must support SSE4.2.
#[target_feature(enable = "sse4.2")]
unsafe fn update_pair_sse42(a: u32, x: &[u8], b: u32, y: &[u8]) -> (u32, u32) {
    let n = x.len().min(y.len()) / 8 * 8;
    let (x0, x1) = x.split_at(n);
    let (y0, y1) = y.split_at(n);
    let (mut a, mut b) = (u64::from(a), u64::from(b));
    for (cx, cy) in x0.chunks_exact(8).zip(y0.chunks_exact(8)) {
        // SAFETY: this function's contract (SSE4.2 present) is all `step8` requires.
        unsafe {
            a = step8(a, cx);
            b = step8(b, cy);
        }
    }
    // SAFETY: this function's own contract (SSE4.2 present) is all `update_sse42` requires.
    unsafe { (update_sse42(a as u32, x1), update_sse42(b as u32, y1)) }
}

/// Folds 8 bytes (`c.len() == 8`: callers pass `chunks_exact(8)` items) into `crc`.
#[inline]
#[target_feature(enable = "sse4.2")]
unsafe fn step8(crc: u64, c: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(c);
    // SAFETY: `crc32` needs only SSE4.2, which this function's contract guarantees (every
    // caller is itself `#[target_feature(enable = "sse4.2")]` and reached only after
    // `available()`). Older compilers mark the intrinsic `unsafe`; newer ones do not.
    #[allow(unused_unsafe)]
    unsafe {
        _mm_crc32_u64(crc, u64::from_le_bytes(w))
    }
}

/// Folds the last `< 8` bytes into `crc`, one `crc32` byte instruction each.
#[inline]
#[target_feature(enable = "sse4.2")]
unsafe fn tail(mut crc: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        // SAFETY: as in `step8`: SSE4.2 is guaranteed by this function's contract.
        #[allow(unused_unsafe)]
        unsafe {
            crc = _mm_crc32_u8(crc, b);
        }
    }
    crc
}
