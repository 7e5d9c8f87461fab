//! # seastar-hal-mio: the portable, readiness-based platform
//!
//! Implements the completion-based contract of [`seastar_hal`] on top of epoll (through
//! [mio](https://docs.rs/mio)), for kernels without io_uring or where it is disabled. A program
//! sees the same semantics as on the io_uring HAL: operations are submitted, their results are
//! reported only through [`IoDriver::poll_op`](seastar_hal::io::IoDriver::poll_op) (never inline
//! from `submit`), buffers stay owned by the operation until it is finished, and
//! [`Instant`](seastar_hal::Instant)s are `CLOCK_MONOTONIC` nanoseconds on both.
//!
//! * [`MioPlatform`]: one per core thread (not `Send`). `park` runs deferred work, sleeps in
//!   `epoll_wait` until readiness, a timeout or an unpark, then performs the system calls that
//!   became possible and wakes the tasks whose operations completed.
//! * [`MioDriver`]: the [`IoDriver`](seastar_hal::io::IoDriver). How each operation maps to
//!   system calls, and the rules for file descriptors (the driver makes sockets non-blocking;
//!   close fds it has seen through a `Close` operation or [`MioDriver::release_fd`]), are in
//!   the [`driver`] module docs.
//! * [`MioUnparker`]: an eventfd behind a "parked" flag; unparking a running core makes no
//!   system call.
//! * [`MioStats`]: system calls, parks, submissions, completions, for tests and metrics.
//!
//! Layout: `sys` is the only module with `unsafe` (libc calls, each with its `SAFETY:`
//! argument); everything else is safe code. The crate root denies `unsafe_code`.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod driver;
mod error;
mod platform;
mod sys;
mod unpark;

pub use driver::{MioDriver, MioStats};
pub use error::{io_error, kind_of_errno};
pub use platform::{tcp_socket, MioPlatform};
pub use sys::sockaddr_of;
pub use unpark::MioUnparker;
