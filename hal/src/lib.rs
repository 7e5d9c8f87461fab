//! # seastar-hal: the contract the Seastar-RS kernel runs on
//!
//! The kernel never touches the operating system. Everything it needs from a platform is
//! expressed here as traits, implemented by `seastar-hal-linux` (io_uring), `seastar-hal-mio`
//! (readiness), the simulated HAL behind the `sim` feature, or your own board:
//!
//! * [`Platform`]: one per core. A monotonic [`Instant`] clock, `park` until a deadline, an I/O
//!   completion or an unpark, and a [`Platform::unparker`] that other cores and threads use to
//!   wake it.
//! * [`io::IoDriver`]: completion-based I/O. Operations are plain values ([`io::RawOp`]) that
//!   point into *owned* buffers ([`buf::IoBuf`], [`buf::IoBufMut`]); the safe wrapper
//!   [`io::Op`] owns those buffers while the operation is in flight and hands them back with
//!   the result, or to the driver if the operation is cancelled.
//! * [`IoError`] with [`ErrorKind`], so generic code can react to an error without knowing the
//!   platform.
//!
//! The crate is `#![no_std]` and needs `alloc` only to take ownership of the buffers of
//! cancelled operations.
#![no_std]
#![deny(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod buf;
mod error;
pub mod io;
mod platform;
#[cfg(feature = "sim")]
pub mod sim;
mod time;

pub use error::{ErrorKind, IoError};
pub use platform::{Platform, PollInfo, StallWatch, Unpark};
pub use time::Instant;
