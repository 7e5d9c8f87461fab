//! TCP on the current core: [`TcpListener`] (with `SO_REUSEPORT`, so every core binds the
//! same port and accepts its own connections) and [`TcpStream`] with an owned-buffer API.
//!
//! Sockets are created with `std`-like synchronous calls (socket, bind, listen, options are
//! control-plane system calls) and do their data-plane I/O through the core's platform
//! (io_uring or mio). Errors are `std::io::Error`s with the kinds `std` gives for the same
//! `errno` (`ConnectionRefused`, `ConnectionReset`, `TimedOut`, `AddrInUse`, ...).
//!
//! Two ways to receive: [`TcpStream::read`] into a buffer of yours, or
//! [`TcpStream::recv`] into a buffer the platform picks from the core's receive pool
//! (io_uring: a provided-buffer ring and one multishot receive kept armed across calls; mio:
//! an emulated pool), returned as a [`RecvBuf`](crate::buf::RecvBuf) that can be sent back
//! without a copy. `recv` is the cheaper one on io_uring (no submission per receive, no
//! buffer pinned by an idle connection); do not mix the two on one stream.
//!
//! Everything here must be created on a runtime core (inside
//! [`Runtime::run_on_all`](crate::Runtime::run_on_all) or
//! [`run_on_one`](crate::Runtime::run_on_one)) and is `!Send`.

mod listener;
mod socket;
mod stream;

pub use self::listener::{Accept, ListenOptions, TcpListener, DEFAULT_BACKLOG};
pub use self::stream::{OwnedReadHalf, OwnedWriteHalf, ReuniteError, TcpStream};

#[cfg(test)]
mod tests;
