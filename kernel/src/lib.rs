//! # seastar-kernel
//!
//! The `no_std + alloc` core of Seastar-RS. It runs on any [`seastar_hal::Platform`] and never
//! touches an operating system: tasks and the per-core executor, timers, core-local sync
//! primitives and a sans-IO Raft.
#![no_std]
#![deny(unsafe_code)]

extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

#[macro_use]
mod log;

pub mod executor;
pub mod future;
pub mod raft;
pub mod sched;
pub mod shutdown;
pub mod smp;
pub mod sync;
pub mod task;
pub mod time;

pub use seastar_hal as hal;
