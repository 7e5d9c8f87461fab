//! Owned buffers with stable addresses.
//!
//! A completion-based platform (io_uring, DMA engines) reads or writes a buffer *after* the
//! call that submitted the operation has returned, so the buffer must not move or be freed
//! until the platform is done with it. These traits promise that the memory behind a value
//! stays at the same address while the value is alive, even when the value itself is moved.
//!
//! Ownership through an operation's life (see [`crate::io::Op`]):
//! 1. The caller moves the buffer into an `Op`; the `Op` owns it.
//! 2. While the operation is in flight the platform holds raw pointers into the buffer; the
//!    `Op` keeps the buffer alive and nobody else can reach it.
//! 3. On completion the `Op` hands the buffer back to the caller with the result.
//! 4. If the `Op` is dropped before completion, ownership of the buffer moves to the driver
//!    ([`crate::io::IoDriver::cancel`]), which frees it only after the platform reports the
//!    operation finished.
#![allow(unsafe_code)] // the unsafe traits and their impls for standard buffer types

use alloc::boxed::Box;
use alloc::vec::Vec;

/// A buffer the platform may read from while an operation is in flight.
///
/// # Safety
/// Implementors promise that `stable_ptr()` points to `bytes_total()` bytes of allocated memory,
/// of which the first `bytes_init()` are initialised, and that this memory stays valid and at
/// the same address for as long as the value lives, even when the value is moved. Immutable
/// access through `&self` must not reallocate.
pub unsafe trait IoBuf: 'static {
    /// Start of the buffer.
    fn stable_ptr(&self) -> *const u8;
    /// Number of initialised bytes: what a send or write transmits.
    fn bytes_init(&self) -> usize;
    /// Capacity: what a receive or read may fill.
    fn bytes_total(&self) -> usize;
}

/// A buffer the platform may write into while an operation is in flight.
///
/// # Safety
/// As for [`IoBuf`], and `stable_mut_ptr()` returns the same address as `stable_ptr()`, valid
/// for writes of `bytes_total()` bytes.
pub unsafe trait IoBufMut: IoBuf {
    /// Start of the buffer, for writing.
    fn stable_mut_ptr(&mut self) -> *mut u8;

    /// Record that the first `len` bytes are now initialised (after a receive filled them).
    ///
    /// # Safety
    /// The first `len` bytes must really be initialised, and `len <= bytes_total()`.
    unsafe fn set_init(&mut self, len: usize);
}

// SAFETY: a Vec's heap allocation does not move when the Vec value moves, and `&self` access
// cannot reallocate. `as_ptr` is valid for `capacity()` bytes, of which `len()` are initialised.
unsafe impl IoBuf for Vec<u8> {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.capacity()
    }
}

// SAFETY: `as_mut_ptr` is the same allocation as `as_ptr`, writable for `capacity()` bytes.
unsafe impl IoBufMut for Vec<u8> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
    unsafe fn set_init(&mut self, len: usize) {
        if self.len() < len {
            // SAFETY: the caller guarantees the first `len <= capacity` bytes are initialised.
            unsafe { self.set_len(len) };
        }
    }
}

// SAFETY: a boxed slice's allocation never moves; all of it is initialised.
unsafe impl IoBuf for Box<[u8]> {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.len()
    }
}

// SAFETY: same allocation as `stable_ptr`, writable for its whole length.
unsafe impl IoBufMut for Box<[u8]> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
    unsafe fn set_init(&mut self, _len: usize) {}
}

// SAFETY: static memory never moves or goes away.
unsafe impl IoBuf for &'static [u8] {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.len()
    }
}

// SAFETY: static memory never moves or goes away.
unsafe impl IoBuf for &'static str {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn vec_pointer_survives_a_move() {
        let v = vec![1u8, 2, 3];
        let before = v.stable_ptr();
        let moved = core::hint::black_box(v);
        assert_eq!(moved.stable_ptr(), before);
    }

    #[test]
    fn vec_set_init_grows_len_only() {
        let mut v: Vec<u8> = Vec::with_capacity(8);
        assert_eq!((v.bytes_init(), v.bytes_total() >= 8), (0, true));
        // SAFETY: write 4 bytes within capacity, then declare them initialised.
        unsafe {
            core::ptr::write_bytes(v.stable_mut_ptr(), 7, 4);
            v.set_init(4);
        }
        assert_eq!(v, [7, 7, 7, 7]);
        // SAFETY: 2 <= len; shrinking is a no-op.
        unsafe { v.set_init(2) };
        assert_eq!(v.len(), 4);
    }
}
