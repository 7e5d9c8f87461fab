//! The crate's errors: [`Error`] for the runtime (building it, starting cores, a core that
//! failed), and the one conversion from the HAL's [`IoError`] to `std::io::Error` that every
//! I/O path uses.

use std::io;

use seastar_hal::{ErrorKind, IoError};

use crate::runtime::Backend;

/// What can go wrong building a [`Runtime`](crate::Runtime) or running cores on it.
///
/// Converts into `std::io::Error` (with [`Error::kind`]), so `?` works in functions that return
/// `io::Result`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The builder's settings cannot work (zero cores, more cores than CPUs to pin to, a bad
    /// `SEASTAR_BACKEND`).
    #[error("invalid runtime configuration: {0}")]
    Config(String),
    /// The backend asked for explicitly cannot be used on this machine.
    #[error("the {backend} backend is unavailable: {source}")]
    BackendUnavailable {
        /// The backend asked for.
        backend: Backend,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A core's thread could not be pinned to its CPU.
    #[error("cannot pin core {core} to CPU {cpu}: {source}")]
    Pin {
        /// The core.
        core: usize,
        /// The CPU it was to run on.
        cpu: usize,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A core's thread could not be started.
    #[error("cannot start the thread of core {core}: {source}")]
    Thread {
        /// The core.
        core: usize,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A core's platform (its io_uring ring or epoll instance) could not be created.
    #[error("core {core}: cannot create its {backend} platform: {source}")]
    Platform {
        /// The core.
        core: usize,
        /// The backend.
        backend: Backend,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// SIGINT/SIGTERM handling (asked for with `Builder::handle_signals`) could not be set up.
    #[error("cannot install the SIGINT/SIGTERM handler: {0}")]
    Signals(#[source] io::Error),
    /// A core's future (or the code starting it) panicked. The other cores were stopped.
    #[error("core {core} panicked: {message}")]
    Panicked {
        /// The core.
        core: usize,
        /// The panic message.
        message: String,
    },
}

impl Error {
    /// The `std::io::ErrorKind` this error converts to.
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            Error::Config(_) => io::ErrorKind::InvalidInput,
            Error::BackendUnavailable { source, .. }
            | Error::Pin { source, .. }
            | Error::Thread { source, .. }
            | Error::Platform { source, .. }
            | Error::Signals(source) => source.kind(),
            Error::Panicked { .. } => io::ErrorKind::Other,
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        io::Error::new(e.kind(), e)
    }
}

/// The `std::io::ErrorKind` of a HAL error kind.
fn std_kind(kind: ErrorKind) -> io::ErrorKind {
    match kind {
        ErrorKind::NotFound => io::ErrorKind::NotFound,
        ErrorKind::PermissionDenied => io::ErrorKind::PermissionDenied,
        ErrorKind::ConnectionRefused => io::ErrorKind::ConnectionRefused,
        ErrorKind::ConnectionReset => io::ErrorKind::ConnectionReset,
        ErrorKind::ConnectionAborted => io::ErrorKind::ConnectionAborted,
        ErrorKind::NotConnected => io::ErrorKind::NotConnected,
        ErrorKind::AddrInUse => io::ErrorKind::AddrInUse,
        ErrorKind::AddrNotAvailable => io::ErrorKind::AddrNotAvailable,
        ErrorKind::BrokenPipe => io::ErrorKind::BrokenPipe,
        ErrorKind::AlreadyExists => io::ErrorKind::AlreadyExists,
        ErrorKind::WouldBlock => io::ErrorKind::WouldBlock,
        ErrorKind::InvalidInput => io::ErrorKind::InvalidInput,
        ErrorKind::InvalidData => io::ErrorKind::InvalidData,
        ErrorKind::TimedOut => io::ErrorKind::TimedOut,
        ErrorKind::Interrupted => io::ErrorKind::Interrupted,
        ErrorKind::Unsupported => io::ErrorKind::Unsupported,
        ErrorKind::UnexpectedEof => io::ErrorKind::UnexpectedEof,
        ErrorKind::OutOfMemory => io::ErrorKind::OutOfMemory,
        // A per-stream limit on held receive buffers: a quota, not memory exhaustion, and
        // not `WouldBlock` (waiting for readiness is exactly what would never end).
        ErrorKind::HoldLimit => io::ErrorKind::QuotaExceeded,
        // `std` has no "cancelled" kind; the message says it.
        _ => io::ErrorKind::Other,
    }
}

/// The one conversion from the HAL's error to `std::io::Error`: the OS code when there is
/// one (so `kind()` and the message are exactly what `std` gives for that `errno`), otherwise
/// the matching kind with the HAL's description.
pub(crate) fn to_io(e: IoError) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(std_kind(e.kind()), e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_codes_keep_their_std_kind() {
        for (code, kind) in [
            (libc::ECONNREFUSED, io::ErrorKind::ConnectionRefused),
            (libc::ECONNRESET, io::ErrorKind::ConnectionReset),
            (libc::ETIMEDOUT, io::ErrorKind::TimedOut),
            (libc::EADDRINUSE, io::ErrorKind::AddrInUse),
            (libc::EPIPE, io::ErrorKind::BrokenPipe),
        ] {
            let e = to_io(IoError::with_os_code(ErrorKind::Other, code));
            assert_eq!((e.kind(), e.raw_os_error()), (kind, Some(code)));
        }
    }

    #[test]
    fn kinds_without_code_map_one_to_one() {
        assert_eq!(
            to_io(IoError::new(ErrorKind::ConnectionReset)).kind(),
            io::ErrorKind::ConnectionReset
        );
        assert_eq!(
            to_io(IoError::new(ErrorKind::TimedOut)).kind(),
            io::ErrorKind::TimedOut
        );
        assert_eq!(
            to_io(IoError::new(ErrorKind::HoldLimit)).kind(),
            io::ErrorKind::QuotaExceeded
        );
        let e = to_io(IoError::new(ErrorKind::Canceled));
        assert_eq!(e.kind(), io::ErrorKind::Other);
        assert!(e.to_string().contains("canceled"));
    }

    #[test]
    fn runtime_error_converts_to_io_error() {
        let e: io::Error = Error::Config("zero cores".into()).into();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("zero cores"));
    }
}
