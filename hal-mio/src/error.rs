//! `errno` → portable [`ErrorKind`], keeping the code for [`IoError::raw_os_error`].

use seastar_hal::{ErrorKind, IoError};

use crate::sys::Errno;

/// The portable kind of a Linux `errno`. Mirrors what `std` does for `std::io::ErrorKind`,
/// restricted to the kinds the HAL has.
pub fn kind_of_errno(errno: i32) -> ErrorKind {
    match errno {
        libc::ENOENT => ErrorKind::NotFound,
        libc::EACCES | libc::EPERM => ErrorKind::PermissionDenied,
        libc::ECONNREFUSED => ErrorKind::ConnectionRefused,
        libc::ECONNRESET => ErrorKind::ConnectionReset,
        libc::ECONNABORTED => ErrorKind::ConnectionAborted,
        libc::ENOTCONN => ErrorKind::NotConnected,
        libc::EADDRINUSE => ErrorKind::AddrInUse,
        libc::EADDRNOTAVAIL => ErrorKind::AddrNotAvailable,
        libc::EPIPE => ErrorKind::BrokenPipe,
        libc::EEXIST => ErrorKind::AlreadyExists,
        // EWOULDBLOCK == EAGAIN on Linux.
        libc::EAGAIN | libc::EINPROGRESS | libc::EALREADY => ErrorKind::WouldBlock,
        libc::EINVAL
        | libc::EBADF
        | libc::ENOTSOCK
        | libc::EFAULT
        | libc::ESPIPE
        | libc::EISCONN
        | libc::EDESTADDRREQ => ErrorKind::InvalidInput,
        libc::ETIMEDOUT => ErrorKind::TimedOut,
        libc::EINTR => ErrorKind::Interrupted,
        libc::EOPNOTSUPP | libc::ENOSYS | libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT => {
            ErrorKind::Unsupported
        }
        libc::ENOMEM | libc::ENOBUFS => ErrorKind::OutOfMemory,
        libc::ECANCELED => ErrorKind::Canceled,
        _ => ErrorKind::Other,
    }
}

/// An [`IoError`] for `errno`, with the code attached.
pub fn io_error(errno: Errno) -> IoError {
    IoError::with_os_code(kind_of_errno(errno), errno)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_errnos_map_to_their_kinds() {
        for (errno, kind) in [
            (libc::ECONNREFUSED, ErrorKind::ConnectionRefused),
            (libc::ECONNRESET, ErrorKind::ConnectionReset),
            (libc::EPIPE, ErrorKind::BrokenPipe),
            (libc::ETIMEDOUT, ErrorKind::TimedOut),
            (libc::EADDRINUSE, ErrorKind::AddrInUse),
            (libc::ECANCELED, ErrorKind::Canceled),
            (libc::EBADF, ErrorKind::InvalidInput),
            (libc::EHOSTUNREACH, ErrorKind::Other),
        ] {
            let e = io_error(errno);
            assert_eq!((e.kind(), e.raw_os_error()), (kind, Some(errno)));
        }
    }
}
