//! # seastar-hal-linux: the io_uring per-core platform
//!
//! One [`UringPlatform`] per core thread: a private io_uring, a monotonic clock
//! (`CLOCK_MONOTONIC`, so [`seastar_hal::Instant`] values and io_uring's absolute timeouts agree)
//! and an eventfd through which other threads wake the core.
//!
//! ```text
//!   task polls Op ──submit──> UringDriver ──push SQE──> SQ (batched, no syscall)
//!                                                        │
//!   kernel loop: park(deadline) ── ONE io_uring_enter: submit every queued SQE, then wait for
//!                                  a CQE, the deadline or an unpark (EXT_ARG timeout)
//!                                                        │
//!              reap: every CQE ──> its slot (by user_data, generation-checked) ──> wake waker
//! ```
//!
//! Code map:
//! * [`config`]: [`UringConfig`] (ring size, SQPOLL) and [`Features`] (what the kernel accepted).
//! * `driver`: [`UringDriver`], the op slab, CQE processing, park/flush, cancellation, and
//!   buffer pools: each pool is a provided-buffer ring (`IORING_REGISTER_PBUF_RING`, buffer
//!   group = pool index) read by multishot receives (`RawOp::RecvPool`); the driver tracks
//!   which op holds each buffer, re-arms a receive the kernel ended with `ENOBUFS` once
//!   buffers are back, and stops (cancels, then re-arms) one whose owner holds 32 buffers.
//! * `slab`: op slots indexed by the low half of `user_data`, with a generation in the high half.
//! * `unpark`: [`UringUnparker`] and the parked/notified state word.
//! * [`errno`]: negative CQE results to [`seastar_hal::IoError`].
//! * `raw`: **unsafe** — the [`seastar_hal::io::IoDriver`] impl (its `submit` is an unsafe
//!   trait method) and the translation of a `RawOp`'s raw pointers into SQEs.
//! * `sys`: **unsafe** — libc calls (clock, eventfd, close), the ring's SQ push / raw enter,
//!   and `BufRing` (the provided-buffer ring memory: freed at drop only after it was
//!   unregistered with no receive in flight, leaked otherwise).
//!
//! Architecture invariant: a slot (and with it any memory an SQE points into: sockaddr,
//! timespec, msghdr, a cancelled op's keep-alive) is released only after the CQE without
//! `IORING_CQE_F_MORE` for its `user_data` has been reaped. Nothing else frees kernel-visible
//! memory, and if the platform is dropped while the kernel still owns some, it is leaked, not
//! freed.
//!
//! The platform must be created on the thread that uses it (`IORING_SETUP_SINGLE_ISSUER` binds
//! the ring to its creator); it is `!Send` so the type system enforces this.

// Unsafe code is confined to the `raw` and `sys` modules; every block carries a `// SAFETY:`.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
mod driver;
pub mod errno;
mod platform;
#[allow(unsafe_code)] // the IoDriver impl (unsafe `submit`) and RawOp -> SQE translation
mod raw;
mod slab;
mod stats;
#[allow(unsafe_code)] // libc calls and the io_uring SQ push / raw enter
mod sys;
mod unpark;

pub use config::{probe, Features, SetupFlags, UringConfig};
pub use driver::UringDriver;
pub use platform::UringPlatform;
pub use stats::UringStats;
pub use unpark::UringUnparker;
