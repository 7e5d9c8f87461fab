//! Linux `errno` values (negated in a CQE's `res`) to the portable [`IoError`].

use seastar_hal::{ErrorKind, IoError};

/// The portable kind for a Linux `errno`.
pub fn kind_of(errno: i32) -> ErrorKind {
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
        libc::EAGAIN => ErrorKind::WouldBlock,
        libc::EINVAL | libc::EBADF | libc::ENOTSOCK | libc::EFAULT | libc::EMSGSIZE => {
            ErrorKind::InvalidInput
        }
        libc::ETIMEDOUT | libc::ETIME => ErrorKind::TimedOut,
        libc::EINTR => ErrorKind::Interrupted,
        // EOPNOTSUPP == ENOTSUP on Linux.
        libc::EOPNOTSUPP | libc::ENOSYS | libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT => {
            ErrorKind::Unsupported
        }
        libc::ENOMEM | libc::ENOBUFS => ErrorKind::OutOfMemory,
        libc::ECANCELED => ErrorKind::Canceled,
        libc::EILSEQ => ErrorKind::InvalidData,
        _ => ErrorKind::Other,
    }
}

/// An [`IoError`] carrying `errno` and its kind.
pub fn from_errno(errno: i32) -> IoError {
    IoError::with_os_code(kind_of(errno), errno)
}

/// An [`IoError`] from a `std::io::Error` (keeps the OS code when there is one).
pub fn from_std(e: &std::io::Error) -> IoError {
    match e.raw_os_error() {
        Some(code) => from_errno(code),
        None => IoError::new(ErrorKind::Other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_errnos_map_to_their_kinds() {
        let cases = [
            (libc::ECONNREFUSED, ErrorKind::ConnectionRefused),
            (libc::ECONNRESET, ErrorKind::ConnectionReset),
            (libc::EPIPE, ErrorKind::BrokenPipe),
            (libc::ETIMEDOUT, ErrorKind::TimedOut),
            (libc::ETIME, ErrorKind::TimedOut),
            (libc::EADDRINUSE, ErrorKind::AddrInUse),
            (libc::ECANCELED, ErrorKind::Canceled),
            (libc::EBADF, ErrorKind::InvalidInput),
            (libc::ENOENT, ErrorKind::NotFound),
            (libc::EAGAIN, ErrorKind::WouldBlock),
            (libc::ENOSPC, ErrorKind::Other),
        ];
        for (errno, kind) in cases {
            let e = from_errno(errno);
            assert_eq!(e.kind(), kind, "errno {errno}");
            assert_eq!(e.raw_os_error(), Some(errno));
        }
    }
}
