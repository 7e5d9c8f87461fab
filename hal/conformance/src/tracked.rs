//! A buffer that counts its drops, to check that a driver frees every buffer exactly once.
//! Unsafe only because the buffer traits are unsafe to implement.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::rc::Rc;

use seastar_hal::buf::{IoBuf, IoBufMut};

/// A `Vec<u8>` that records its drop in a shared table, at its own index.
#[derive(Debug)]
pub struct Tracked {
    /// The bytes.
    pub v: Vec<u8>,
    id: usize,
    drops: Rc<RefCell<Vec<u32>>>,
}

impl Tracked {
    /// Wrap `v`, adding a zero drop count for it to `drops`.
    pub fn new(drops: &Rc<RefCell<Vec<u32>>>, v: Vec<u8>) -> Self {
        let mut d = drops.borrow_mut();
        d.push(0);
        Tracked {
            v,
            id: d.len() - 1,
            drops: drops.clone(),
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.drops.borrow_mut()[self.id] += 1;
    }
}

// SAFETY: delegates to the inner Vec, whose heap allocation does not move when `Tracked`
// moves and is not reallocated through `&self`.
unsafe impl IoBuf for Tracked {
    fn stable_ptr(&self) -> *const u8 {
        self.v.stable_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.v.bytes_init()
    }
    fn bytes_total(&self) -> usize {
        self.v.bytes_total()
    }
}

// SAFETY: delegates to the inner Vec (same allocation as `stable_ptr`).
unsafe impl IoBufMut for Tracked {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.v.stable_mut_ptr()
    }
    unsafe fn set_init(&mut self, len: usize) {
        // SAFETY: forwarded with the caller's guarantee.
        unsafe { self.v.set_init(len) }
    }
}
